/* loupe checkpoints (safetensors + metadata that rebuilds the net) and the
 * public lp_model handle over them. */
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LP_CHECKPOINT_FORMAT "loupe-checkpoint-1"

static lp_status set_meta_int(lp_tensor_list *l, const char *key, long long v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    return lp_tensor_list_set_meta(l, key, buf);
}

lp_status lp_checkpoint_save(const char *path, lp_net *net, const lp_tensor_list *extra_tensors, const lp_tensor_list *extra_meta_holder) {
    const lp_net_config *c = lp_net_get_config(net);
    lp_tensor_list meta;
    lp_tensor_list_init(&meta);
    char buf[64];
    lp_status st = lp_tensor_list_set_meta(&meta, "format", LP_CHECKPOINT_FORMAT);
    if (!st) st = lp_tensor_list_set_meta(&meta, "arch", c->arch);
    if (!st) st = lp_tensor_list_set_meta(&meta, "top", c->top);
    if (!st && !strcmp(c->top, "none")) st = lp_tensor_list_set_meta(&meta, "head", c->head[0] ? c->head : "flatten,dense");
    if (!st) st = set_meta_int(&meta, "num_classes", c->num_classes);
    snprintf(buf, sizeof buf, "%dx%d", c->in_h, c->in_w);
    if (!st) st = lp_tensor_list_set_meta(&meta, "input_size", buf);
    if (!st) st = set_meta_int(&meta, "in_channels", c->in_c);
    if (!st && c->resnet_v1) st = lp_tensor_list_set_meta(&meta, "resnet_version", "v1");
    if (!st && c->tf_padding) st = lp_tensor_list_set_meta(&meta, "padding", "tf");
    if (!st) st = lp_tensor_list_set_meta(&meta, "loupe_version", LOUPE_VERSION);
    if (extra_meta_holder)
        for (int i = 0; i < extra_meta_holder->meta_count && !st; i++)
            st = lp_tensor_list_set_meta(&meta, extra_meta_holder->meta[i].key, extra_meta_holder->meta[i].value);
    int np = lp_net_param_count(net), ne = extra_tensors ? extra_tensors->count : 0;
    const char **names = malloc(sizeof(char *) * (size_t)(np + ne + 1));
    lp_tensor *ts = calloc((size_t)(np + ne + 1), sizeof(lp_tensor));
    int64_t *counts = calloc((size_t)np + 1, sizeof *counts); /* batch norm's step counts, I64 as PyTorch's */
    if (!st && (!names || !ts || !counts)) st = lp_fail(LP_ERR_NOMEM, "out of memory");
    if (!st) {
        for (int i = 0; i < np; i++) {
            names[i] = lp_net_param_name(net, i);
            ts[i].dtype = LP_F32;
            ts[i].ndim = lp_net_param_shape(net, i, ts[i].shape);
            ts[i].data = (void *)lp_net_param_data(net, i);
            if (lp_net_param_is_count(net, i)) {
                counts[i] = (int64_t)*lp_net_param_data(net, i);
                ts[i].dtype = LP_I64;
                ts[i].data = &counts[i];
            }
        }
        for (int i = 0; i < ne; i++) {
            names[np + i] = extra_tensors->items[i].name;
            ts[np + i] = extra_tensors->items[i].t;
        }
        st = lp_safetensors_write_views(path, np + ne, names, ts, &meta);
    }
    free(names);
    free(ts);
    free(counts);
    lp_tensor_list_free(&meta);
    return st;
}

static lp_status meta_int(const lp_tensor_list *m, const char *key, const char *path, int lo, int hi, int def, int *out) {
    const char *v = lp_tensor_list_get_meta(m, key);
    if (!v) {
        if (def < 0) return lp_fail(LP_ERR_FORMAT, "%s: checkpoint metadata has no '%s'", path, key);
        *out = def;
        return LP_OK;
    }
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || end == v || x < lo || x > hi) return lp_fail(LP_ERR_FORMAT, "%s: checkpoint metadata '%s' = '%s' is not valid: the file is damaged or was not written by loupe; use another checkpoint", path, key, v);
    *out = (int)x;
    return LP_OK;
}

static int count_classes(const char *json) {
    cJSON *a = cJSON_Parse(json);
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
    cJSON_Delete(a);
    return n;
}

lp_status lp_checkpoint_config_from_meta(const lp_tensor_list *m, const char *path, lp_net_config *cfg) {
    *cfg = lp_net_default_config();
    cfg->max_batch = 1;
    const char *fmt = lp_tensor_list_get_meta(m, "format");
    if (!fmt || strcmp(fmt, LP_CHECKPOINT_FORMAT))
        return lp_fail(LP_ERR_FORMAT, "%s: not a loupe checkpoint (metadata format is '%s', expected '%s'); convert other weights with 'loupe convert'",
                       path, fmt ? fmt : "missing", LP_CHECKPOINT_FORMAT);
    const char *arch = lp_tensor_list_get_meta(m, "arch"), *top = lp_tensor_list_get_meta(m, "top"),
               *head = lp_tensor_list_get_meta(m, "head"), *size = lp_tensor_list_get_meta(m, "input_size"),
               *classes = lp_tensor_list_get_meta(m, "classes");
    if (top && !strcmp(top, "none") && !head && !lp_tensor_list_get_meta(m, "num_classes"))
        return lp_fail(LP_ERR_FORMAT, "%s: a convolutional base alone (no head, no classes): it cannot predict; train a head on it with "
                       "'loupe train DATA --weights %s', or convert the whole model", path, path);
    if (!arch || strlen(arch) >= sizeof cfg->arch) return lp_fail(LP_ERR_FORMAT, "%s: checkpoint metadata has no valid 'arch': the file is damaged or was not written by loupe; use another checkpoint", path);
    if (!top || strlen(top) >= sizeof cfg->top) return lp_fail(LP_ERR_FORMAT, "%s: checkpoint metadata has no valid 'top': the file is damaged or was not written by loupe; use another checkpoint", path);
    if (head && strlen(head) >= sizeof cfg->head) return lp_fail(LP_ERR_FORMAT, "%s: checkpoint 'head' is too long", path);
    strcpy(cfg->arch, arch);
    strcpy(cfg->top, top);
    cfg->head[0] = 0;
    if (head) strcpy(cfg->head, head);
    int h = 0, w = 0;
    char tail;
    if (!size || sscanf(size, "%dx%d%c", &h, &w, &tail) != 2 || h < 1 || w < 1 || h > 65536 || w > 65536)
        return lp_fail(LP_ERR_FORMAT, "%s: checkpoint metadata 'input_size' = '%s' (expected HxW)", path, size ? size : "missing");
    cfg->in_h = h;
    cfg->in_w = w;
    const char *version = lp_tensor_list_get_meta(m, "resnet_version");
    if (version && strcmp(version, "v1") && strcmp(version, "v1.5"))
        return lp_fail(LP_ERR_FORMAT, "%s: checkpoint metadata 'resnet_version' = '%s' (expected v1 or v1.5)", path, version);
    cfg->resnet_v1 = version && !strcmp(version, "v1");
    const char *padding = lp_tensor_list_get_meta(m, "padding");
    if (padding && strcmp(padding, "tf") && strcmp(padding, "torch"))
        return lp_fail(LP_ERR_FORMAT, "%s: checkpoint metadata 'padding' = '%s' (expected tf or torch)", path, padding);
    cfg->tf_padding = padding && !strcmp(padding, "tf");
    lp_status st = meta_int(m, "in_channels", path, 1, 4096, 3, &cfg->in_c);
    if (st) return st;
    int nc_default = classes ? count_classes(classes) : -1;
    if (classes && nc_default < 1) return lp_fail(LP_ERR_FORMAT, "%s: checkpoint metadata 'classes' is not a JSON array of names", path);
    if ((st = meta_int(m, "num_classes", path, 1, 1000000, nc_default, &cfg->num_classes))) return st;
    if (classes && nc_default != cfg->num_classes)
        return lp_fail(LP_ERR_FORMAT, "%s: checkpoint lists %d class names but num_classes is %d", path, nc_default, cfg->num_classes);
    return LP_OK;
}

bool lp_checkpoint_is_state_tensor(const char *name) { return !strncmp(name, "optim.", 6) || !strncmp(name, "train.", 6); }

lp_status lp_checkpoint_load_ex(const char *path, int max_batch, lp_net **net_out, lp_tensor_list *all_out) {
    *net_out = NULL;
    lp_tensor_list l;
    lp_tensor_list_init(&l);
    lp_status st = lp_safetensors_read(path, &l);
    lp_net *net = NULL;
    lp_net_config cfg;
    if (!st) st = lp_checkpoint_config_from_meta(&l, path, &cfg);
    if (!st) {
        cfg.max_batch = max_batch > 0 ? max_batch : 1;
        st = lp_net_create_ex(&cfg, false, &net);
        if (st) lp_fail_context(st, "%s", path);
    }
    if (!st) {
        /* a shallow view without optimizer/train state */
        lp_tensor_list view = l;
        view.items = malloc(sizeof(lp_named_tensor) * (size_t)(l.count + 1));
        if (!view.items) st = lp_fail(LP_ERR_NOMEM, "out of memory");
        else {
            view.count = 0;
            for (int i = 0; i < l.count; i++)
                if (!lp_checkpoint_is_state_tensor(l.items[i].name)) view.items[view.count++] = l.items[i];
            st = lp_net_load_state_dict(net, &view, true, NULL);
            if (st) lp_fail_context(st, "%s", path);
            free(view.items);
        }
    }
    if (st) {
        lp_net_free(net);
        lp_tensor_list_free(&l);
        return st;
    }
    *net_out = net;
    if (all_out) *all_out = l;
    else lp_tensor_list_free(&l);
    return LP_OK;
}

lp_status lp_checkpoint_load(const char *path, lp_net **net_out, lp_tensor_list *all_out) {
    return lp_checkpoint_load_ex(path, 1, net_out, all_out);
}

bool lp_checkpoint_temperature(const char *value, double *t) {
    char *end;
    *t = strtod(value, &end);
    return end != value && !*end && *t >= 1e-3 && *t <= 1e3;
}

lp_status lp_checkpoint_set_meta(const char *path, const char *key, const char *value) {
    lp_clear_error();
    if (!path) return lp_fail(LP_ERR_ARG, "lp_checkpoint_set_meta: path is required (NULL given)");
    if (!key || !*key || !value) return lp_fail(LP_ERR_ARG, "checkpoint set meta: empty key or value");
    /* what describes the network: its tensors would no longer fit (the checksum and format are the writer's) */
    static const char *const fixed[] = {"arch", "top", "head", "num_classes", "input_size", "in_channels",
                                        "padding", "resnet_version", "format", "checksum"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!strcmp(key, fixed[i]))
            return lp_fail(LP_ERR_ARG, "%s: metadata '%s' describes the network its tensors fit, and is not set on its own; "
                           "convert or train a model of the other shape instead", path, key);
    double t;
    if (!strcmp(key, "temperature") && !lp_checkpoint_temperature(value, &t))
        return lp_fail(LP_ERR_ARG, "temperature '%s' is not a number in 0.001..1000", value);
    lp_tensor_list l;
    lp_tensor_list_init(&l);
    lp_status st = lp_safetensors_read(path, &l);
    if (!st) st = lp_tensor_list_set_meta(&l, key, value);
    lp_net_config cfg; /* classes: still as many names as outputs */
    if (!st && !strcmp(key, "classes")) st = lp_checkpoint_config_from_meta(&l, path, &cfg);
    if (!st) st = lp_safetensors_write(path, &l);
    lp_tensor_list_free(&l);
    return st;
}

/* ---- lp_model ------------------------------------------------------------------ */
struct lp_model {
    lp_net *net;
    lp_tensor_list meta; /* metadata only */
    int nclasses;
    char **classes;
};

lp_status lp_model_wrap(lp_net *net, const lp_tensor_list *meta, lp_model **out) {
    *out = NULL;
    lp_model *m = lp_calloc(1, sizeof *m);
    if (!m) return LP_ERR_NOMEM;
    lp_tensor_list_init(&m->meta);
    lp_status st = LP_OK;
    for (int i = 0; meta && i < meta->meta_count && !st; i++) st = lp_tensor_list_set_meta(&m->meta, meta->meta[i].key, meta->meta[i].value);
    m->nclasses = lp_net_get_config(net)->num_classes;
    m->classes = calloc((size_t)m->nclasses, sizeof(char *));
    if (!st && !m->classes) st = lp_fail(LP_ERR_NOMEM, "out of memory");
    const char *cj = lp_tensor_list_get_meta(&m->meta, "classes");
    cJSON *a = cj ? cJSON_Parse(cj) : NULL;
    for (int i = 0; !st && i < m->nclasses; i++) {
        cJSON *e = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, i) : NULL;
        char buf[32];
        snprintf(buf, sizeof buf, "class_%d", i);
        m->classes[i] = lp_strdup(cJSON_IsString(e) ? e->valuestring : buf);
        if (!m->classes[i]) st = LP_ERR_NOMEM;
    }
    cJSON_Delete(a);
    if (st) {
        m->net = NULL;
        lp_model_free(m);
        return st;
    }
    m->net = net;
    *out = m;
    return LP_OK;
}

lp_status lp_model_load(const char *path, lp_model **out) {
    lp_clear_error();
    if (!path || !out) return lp_fail(LP_ERR_ARG, "lp_model_load: path and out are required (NULL given)");
    *out = NULL;
    lp_net *net;
    lp_tensor_list all;
    /* max_batch is only a hint (larger batches work); 16 gives evaluation and
     * prediction code that chunks by it reasonable batches. */
    lp_status st = lp_checkpoint_load_ex(path, 16, &net, &all);
    if (st) return st;
    for (int i = 0; i < all.count; i++) lp_tensor_free(&all.items[i].t); /* keep only the metadata */
    /* the frozen part it was trained with (metadata "freeze"): a summary's trainable counts; a
     * spec this net cannot take (a damaged file) leaves everything trainable, as before it */
    const char *frozen = lp_tensor_list_get_meta(&all, "freeze");
    if (frozen && strcmp(frozen, "none") && lp_net_freeze(net, frozen) != LP_OK) lp_clear_error();
    st = lp_model_wrap(net, &all, out);
    if (st) lp_net_free(net);
    lp_tensor_list_free(&all);
    return st;
}

void lp_model_free(lp_model *m) {
    if (!m) return;
    lp_net_free(m->net);
    for (int i = 0; m->classes && i < m->nclasses; i++) free(m->classes[i]);
    free(m->classes);
    lp_tensor_list_free(&m->meta);
    free(m);
}

lp_model_params lp_model_default_params(void) {
    lp_model_params p = {.arch = "vgg16", .top = "keep", .head = NULL, .num_classes = 2, .in_channels = 3, .in_height = 224,
                         .in_width = 224, .freeze = NULL, .seed = 0};
    return p;
}

lp_status lp_model_create(const lp_model_params *p, lp_model **out) {
    lp_clear_error();
    if (!p || !out) return lp_fail(LP_ERR_ARG, "lp_model_create: params and out are required (NULL given)");
    *out = NULL;
    lp_net_config c;
    lp_status st = lp_net_config_from_model_params(p, &c);
    if (st) return st;
    lp_net *net;
    if ((st = lp_net_create(&c, &net))) return st;
    if (p->freeze && (st = lp_net_freeze(net, p->freeze))) {
        lp_net_free(net);
        return st;
    }
    if ((st = lp_model_wrap(net, NULL, out))) lp_net_free(net);
    return st;
}

lp_status lp_model_save(lp_model *m, const char *path) {
    lp_clear_error();
    if (!m || !path) return lp_fail(LP_ERR_ARG, "lp_model_save: model and path are required (NULL given)");
    lp_tensor_list meta;
    lp_tensor_list_init(&meta);
    lp_status st = LP_OK;
    for (int i = 0; i < m->meta.meta_count && !st; i++) st = lp_tensor_list_set_meta(&meta, m->meta.meta[i].key, m->meta.meta[i].value);
    if (!st && !lp_tensor_list_get_meta(&meta, "classes")) {
        cJSON *a = cJSON_CreateArray();
        bool all = a != NULL; /* a class left out would shift every name after it */
        for (int i = 0; all && i < m->nclasses; i++) all = cJSON_AddItemToArray(a, cJSON_CreateString(m->classes[i]));
        char *js = all ? cJSON_PrintUnformatted(a) : NULL;
        st = js ? lp_tensor_list_set_meta(&meta, "classes", js) : lp_fail(LP_ERR_NOMEM, "out of memory");
        cJSON_free(js);
        cJSON_Delete(a);
    }
    if (!st) st = lp_checkpoint_save(path, m->net, NULL, &meta);
    lp_tensor_list_free(&meta);
    return st;
}

lp_net *lp_model_net(lp_model *m) { return m->net; }
const lp_tensor_list *lp_model_meta_list(const lp_model *m) { return &m->meta; }
lp_status lp_model_summary(lp_model *m, char **text) {
    lp_clear_error();
    if (!m || !text) return lp_fail(LP_ERR_ARG, "lp_model_summary: model and text are required (NULL given)");
    return lp_net_summary(m->net, text);
}
int lp_model_num_classes(const lp_model *m) { return m->nclasses; }
const char *lp_model_class_name(const lp_model *m, int i) { return i >= 0 && i < m->nclasses ? m->classes[i] : NULL; }
void lp_model_input_size(const lp_model *m, int *c, int *h, int *w) {
    const lp_net_config *cfg = lp_net_get_config(m->net);
    if (c) *c = cfg->in_c;
    if (h) *h = cfg->in_h;
    if (w) *w = cfg->in_w;
}
const char *lp_model_arch(const lp_model *m) { return lp_net_get_config(m->net)->arch; }
const char *lp_model_meta(const lp_model *m, const char *key) { return lp_tensor_list_get_meta(&m->meta, key); }
