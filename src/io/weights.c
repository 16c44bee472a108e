/* io/weights: format detection, name mapping to torchvision's VGG names,
 * validation (architecture, shapes, NaN/Inf), conversion to a loupe checkpoint
 * and the preprocessing warning. Format readers: keras_h5.c, onnx.c; the
 * safetensors reader is src/io/safetensors.c. */
#include "weights.h"
#include "checkpoint.h"
#include "nn/nn.h"
#include "safetensors.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- VGG configurations (torchvision's cfgs "D" and "E") --------------- */
#define M_POOL 0
static const int cfg_vgg16[] = {64, 64, M_POOL, 128, 128, M_POOL, 256, 256, 256, M_POOL, 512, 512, 512, M_POOL, 512, 512, 512, M_POOL};
static const int cfg_vgg19[] = {64, 64, M_POOL, 128, 128, M_POOL, 256, 256, 256, 256, M_POOL, 512, 512, 512, 512, M_POOL,
                                512, 512, 512, 512, M_POOL};

typedef struct vgg_arch {
    const char *name, *pretty;
    int nconv;
    int index[16], cin[16], cout[16]; /* features index and channels of each conv */
} vgg_arch;

static void arch_fill(vgg_arch *a, const char *name, const char *pretty, const int *cfg, int n) {
    memset(a, 0, sizeof *a);
    a->name = name;
    a->pretty = pretty;
    int idx = 0, cin = 3;
    for (int i = 0; i < n; i++) {
        if (cfg[i] == M_POOL) {
            idx += 1;
            continue;
        }
        a->index[a->nconv] = idx;
        a->cin[a->nconv] = cin;
        a->cout[a->nconv] = cfg[i];
        a->nconv++;
        cin = cfg[i];
        idx += 2; /* conv, relu */
    }
}

static void arch_get(const char *name, vgg_arch *a) {
    if (strcmp(name, "vgg19") == 0) arch_fill(a, "vgg19", "VGG19", cfg_vgg19, (int)(sizeof cfg_vgg19 / sizeof cfg_vgg19[0]));
    else arch_fill(a, "vgg16", "VGG16", cfg_vgg16, (int)(sizeof cfg_vgg16 / sizeof cfg_vgg16[0]));
}

static const int classifier_index[3] = {0, 3, 6};
#define FLAT_IN (512 * 7 * 7)

/* ---- layer list --------------------------------------------------------- */
void lp_wlayers_free(lp_wlayers *l) {
    for (int i = 0; i < l->count; i++) {
        lp_tensor_free(&l->items[i].w);
        lp_tensor_free(&l->items[i].b);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

lp_status lp_wlayers_push(lp_wlayers *l, lp_wlayer_kind kind, const char *src, const char *src_shape, int index, lp_tensor *w,
                          lp_tensor *b, const char *bsrc) {
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        lp_wlayer *p = realloc(l->items, (size_t)cap * sizeof *p);
        if (!p) return lp_fail(LP_ERR_NOMEM, "out of memory");
        l->items = p;
        l->cap = cap;
    }
    lp_wlayer *y = &l->items[l->count++];
    memset(y, 0, sizeof *y);
    y->kind = kind;
    y->index = index;
    y->relu = -1;
    y->dropout = -1.0f;
    snprintf(y->src, sizeof y->src, "%s", src);
    snprintf(y->src_shape, sizeof y->src_shape, "%s", src_shape ? src_shape : "");
    snprintf(y->bsrc, sizeof y->bsrc, "%s", bsrc ? bsrc : "");
    y->w = *w;
    memset(w, 0, sizeof *w);
    if (b) {
        y->b = *b;
        memset(b, 0, sizeof *b);
    }
    return LP_OK;
}

/* Keeps up to 3 example names whose first components ("layer1" of
 * "layer1.0.conv1.weight", "conv1_bn" of "conv1_bn/gamma:0") differ. */
static void add_example(char ex[3][96], int *n, const char *name) {
    size_t k = strcspn(name, "./");
    for (int i = 0; i < *n; i++)
        if (strncmp(ex[i], name, k) == 0 && strcspn(ex[i], "./") == k) return;
    if (*n < 3) snprintf(ex[(*n)++], 96, "%s", name);
}

static void examples_str(char ex[3][96], int n, char *buf, size_t cap) {
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < n && off < cap; i++) off += (size_t)snprintf(buf + off, cap - off, "%s'%s'", i ? ", " : "", ex[i]);
}

void lp_wlayers_note_foreign(lp_wlayers *l, const char *name, bool conv_like) {
    l->foreign_count++;
    if (strstr(name, "running_mean") || strstr(name, "running_var") || strstr(name, "moving_mean") || strstr(name, "moving_variance"))
        l->foreign_bn = true;
    if (conv_like) {
        l->foreign_conv_count++;
        add_example(l->conv_examples, &l->n_conv_examples, name);
    } else {
        add_example(l->examples, &l->n_examples, name);
    }
}

/* ---- checks ------------------------------------------------------------- */
lp_status lp_weights_check_finite(const char *path, const char *ours, const char *src, const lp_tensor *t) {
    const float *p = t->data;
    int64_t n = lp_tensor_numel(t), bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(p[i])) {
            if (first < 0) first = i;
            bad++;
        }
    if (!bad) return LP_OK;
    if (!strcmp(ours, src))
        return lp_fail(LP_ERR_NUMERIC, "%s: tensor %s has %lld NaN/Inf value%s (first: %g at flat index %lld); the file is corrupt", path, src,
                       (long long)bad, bad == 1 ? "" : "s", (double)p[first], (long long)first);
    return lp_fail(LP_ERR_NUMERIC, "%s: tensor %s (%s) has %lld NaN/Inf value%s (first: %g at flat index %lld of %s); the file is corrupt", path, src,
                   ours, (long long)bad, bad == 1 ? "" : "s", (double)p[first], (long long)first, ours);
}

static bool shape_is(const lp_tensor *t, int ndim, const int64_t *s) {
    if (t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != s[i]) return false;
    return true;
}

static lp_status add_named(lp_tensor_list *out, const char *fmt, int idx, const char *suffix, lp_tensor *t) {
    char name[64];
    snprintf(name, sizeof name, fmt, idx, suffix);
    return lp_tensor_list_add(out, name, t);
}

lp_status lp_weights_zero_bias(lp_tensor *b, int64_t n) {
    lp_status st = lp_tensor_alloc(b, LP_F32, 1, &n);
    if (!st) memset(b->data, 0, (size_t)n * sizeof(float));
    return st;
}

/* ---- the head ----------------------------------------------------------------
 * What follows the convolutional base: nothing (a base alone), torchvision's
 * classifier (top=keep: avgpool 7x7 or a flatten of the 7x7 map, fc 4096 +
 * ReLU, fc 4096 + ReLU, predictions), or any other stack of dense layers after
 * a flatten or a global average pooling, written as a loupe head spec. */
#define MAX_DENSE 64

typedef struct head_plan {
    bool keep;           /* torchvision's classifier: top=keep, classifier.0/3/6 */
    bool classifier_names; /* !known: the file's classifier.N names kept */
    bool known;          /* how the layers are joined is known (spec, or keep) */
    char spec[256];      /* top=none: the head spec */
    char unknown[512];   /* !known: what the file does not tell, and the spec as far as it does */
    int index[MAX_DENSE];
    int in_h, in_w;      /* input size (0: not fixed) */
} head_plan;

typedef struct spec_tok {
    char kind[16]; /* flatten, gap, dense, dropout */
    long units;    /* dense: 0 when not given */
    int relu;      /* dense: 0 or 1 */
} spec_tok;

static const char *wlabel(const lp_wlayer *y) { return y->node[0] ? y->node : y->src; }

/* Splits a head spec into its layers (the net builder checks the details). */
static lp_status spec_parse(const char *spec, spec_tok *t, int max, int *n) {
    *n = 0;
    char buf[256];
    if (strlen(spec) >= sizeof buf) return lp_fail(LP_ERR_ARG, "--head '%s' is too long", spec);
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == max) return lp_fail(LP_ERR_ARG, "--head '%s' has more than %d layers", spec, max);
        spec_tok *k = &t[(*n)++];
        memset(k, 0, sizeof *k);
        char *save2 = NULL;
        int part = 0;
        for (char *p = strtok_r(tok, ":", &save2); p; p = strtok_r(NULL, ":", &save2), part++) {
            while (*p == ' ') p++;
            size_t e = strlen(p);
            while (e && p[e - 1] == ' ') p[--e] = 0;
            if (part == 0) {
                snprintf(k->kind, sizeof k->kind, "%s", !strcmp(p, "globalavgpool") ? "gap" : p);
                if (strcmp(k->kind, "flatten") && strcmp(k->kind, "gap") && strcmp(k->kind, "dense") && strcmp(k->kind, "dropout"))
                    return lp_fail(LP_ERR_ARG, "--head '%s': unknown layer '%s' (known: flatten, gap, dense[:units][:relu], dropout[:p])", spec, p);
            } else if (!strcmp(k->kind, "dense")) {
                if (!strcmp(p, "relu")) k->relu = 1;
                else if (strcmp(p, "linear") && strcmp(p, "none") && strcmp(p, "softmax")) k->units = strtol(p, NULL, 10);
            }
        }
        if (part == 0) return lp_fail(LP_ERR_ARG, "--head '%s': empty layer in the list", spec);
    }
    return LP_OK;
}

static const char *pool_name(lp_wpool p) {
    return p == LP_WPOOL_GAP ? "a global average pooling" : p == LP_WPOOL_AVG7 ? "torchvision's 7x7 average pooling and a flatten" : "a flatten";
}

/* The head of L: kept as torchvision's classifier, as a spec (from the file or
 * o->head), or unknown (the file's head.N names kept); and the input size. */
static lp_status plan_head(const char *path, const lp_wlayers *L, const lp_weights_opts *o, head_plan *P) {
    memset(P, 0, sizeof *P);
    const lp_wlayer *D[MAX_DENSE];
    int nd = 0;
    for (int i = 0; i < L->count; i++)
        if (L->items[i].kind == LP_WLAYER_DENSE) {
            if (nd == MAX_DENSE) return lp_fail(LP_ERR_FORMAT, "%s: more than %d dense layers", path, MAX_DENSE);
            D[nd++] = &L->items[i];
        }
    int h = o && o->in_h > 0 ? o->in_h : L->in_h, w = o && o->in_h > 0 ? o->in_w : L->in_w; /* messages give sizes as WxH, like --size */
    const char *size_from = o && o->in_h > 0 ? "--size" : "the graph's input";
    P->known = true;
    if (nd == 0) {
        P->in_h = h;
        P->in_w = w;
        return LP_OK;
    }
    for (int i = 1; i < nd; i++)
        if (D[i]->w.shape[1] != D[i - 1]->w.shape[0])
            return lp_fail(LP_ERR_SHAPE, "%s: %s takes %lld inputs but %s before it gives %lld", path, wlabel(D[i]), (long long)D[i]->w.shape[1],
                           wlabel(D[i - 1]), (long long)D[i - 1]->w.shape[0]);
    int64_t fin = D[0]->w.shape[1];
    lp_wpool pool = L->pool;
    int relu[MAX_DENSE];
    for (int i = 0; i < nd; i++) relu[i] = D[i]->relu;
    if (relu[nd - 1] < 0) relu[nd - 1] = 0; /* the output layer: its scores go to the softmax */
    if (o && o->head && *o->head) {
        spec_tok t[MAX_DENSE * 3];
        int nt, k = 0;
        lp_status st = spec_parse(o->head, t, MAX_DENSE * 3, &nt);
        if (st) return st;
        int ndt = 0;
        for (int i = 0; i < nt; i++) ndt += !strcmp(t[i].kind, "dense");
        if (strcmp(t[0].kind, "flatten") && strcmp(t[0].kind, "gap"))
            return lp_fail(LP_ERR_ARG, "--head '%s' starts with '%s': a head starts with flatten or gap", o->head, t[0].kind);
        if (ndt != nd)
            return lp_fail(LP_ERR_ARG, "--head '%s' has %d dense layer%s but %s has %d (first %s, last %s)", o->head, ndt, ndt == 1 ? "" : "s", path, nd,
                           wlabel(D[0]), wlabel(D[nd - 1]));
        lp_wpool up = !strcmp(t[0].kind, "gap") ? LP_WPOOL_GAP : LP_WPOOL_FLATTEN;
        if (pool != LP_WPOOL_UNKNOWN && (pool == LP_WPOOL_GAP) != (up == LP_WPOOL_GAP))
            return lp_fail(LP_ERR_ARG, "--head '%s' starts with %s but %s has %s (%s)", o->head, t[0].kind, path, pool_name(pool), L->pool_src);
        if (pool == LP_WPOOL_UNKNOWN) pool = up;
        for (int i = 0; i < nt; i++) {
            if (strcmp(t[i].kind, "dense")) continue;
            if (t[i].units && t[i].units != D[k]->w.shape[0])
                return lp_fail(LP_ERR_ARG, "--head '%s': dense layer %d has %ld units but %s gives %lld", o->head, k + 1, t[i].units, wlabel(D[k]),
                               (long long)D[k]->w.shape[0]);
            if (relu[k] >= 0 && relu[k] != t[i].relu && D[k]->relu >= 0)
                return lp_fail(LP_ERR_ARG, "--head '%s': dense layer %d %s a ReLU but in %s, %s is %sfollowed by one", o->head, k + 1,
                               t[i].relu ? "has" : "has no", path, wlabel(D[k]), relu[k] ? "" : "not ");
            P->index[k++] = i;
        }
        snprintf(P->spec, sizeof P->spec, "%s", o->head);
    } else {
        char why[256] = "";
        /* 512 inputs: a flatten gives that only at 32x32 (a 1x1 map); at another size, the pooling */
        if (pool == LP_WPOOL_UNKNOWN && fin == 512 && h && (h / 32) * (w / 32) != 1) pool = LP_WPOOL_GAP;
        if (pool == LP_WPOOL_UNKNOWN)
            snprintf(why, sizeof why, "whether a flatten or a global average pooling comes before %s (it takes %lld inputs: both give 512 at 32x32)",
                     wlabel(D[0]), (long long)fin);
        else if (L->pre_dropout < 0)
            snprintf(why, sizeof why, "what comes between %s and %s", L->pool_src, wlabel(D[0]));
        for (int i = 0; i + 1 < nd && !why[0]; i++)
            if (relu[i] < 0 || D[i]->dropout < 0)
                snprintf(why, sizeof why, "what follows %s (a ReLU, a dropout, both?)", wlabel(D[i]));
        if (why[0]) {
            /* kept under the file's names (train matches them by shape); convert asks for --head */
            P->known = false;
            /* the spec as far as the file tells it: the pooling where known, the dense layers' units */
            char ex[160];
            size_t off = (size_t)snprintf(ex, sizeof ex, "%s", pool == LP_WPOOL_GAP ? "gap" : pool == LP_WPOOL_UNKNOWN ? "flatten|gap" : "flatten");
            for (int k = 0; k < nd && off < sizeof ex; k++) {
                off += (size_t)snprintf(ex + off, sizeof ex - off, ",dense:%lld%s", (long long)D[k]->w.shape[0], relu[k] == 1 ? ":relu" : "");
                if (D[k]->dropout > 0 && off < sizeof ex) off += (size_t)snprintf(ex + off, sizeof ex - off, ",dropout:%g", D[k]->dropout);
            }
            snprintf(P->unknown, sizeof P->unknown, "the file does not tell %s; its head as far as it tells: --head %s; add :relu to a "
                     "dense layer's units where a ReLU follows it, and dropout:P where the model has one", why, ex);
            P->classifier_names = !L->head_names && D[0]->index >= 0;
            for (int k = 0; k < nd; k++) P->index[k] = D[k]->index >= 0 ? D[k]->index : k + 1;
            P->in_h = h;
            P->in_w = w;
            return LP_OK;
        }
        P->keep = (pool == LP_WPOOL_FLATTEN || pool == LP_WPOOL_AVG7) && fin == FLAT_IN && nd == 3 && D[0]->w.shape[0] == 4096 &&
                  D[1]->w.shape[0] == 4096 && relu[0] == 1 && relu[1] == 1 && relu[2] == 0 && L->pre_dropout == 0;
        if (P->keep) {
            for (int k = 0; k < 3; k++) P->index[k] = classifier_index[k];
        } else {
            size_t off = 0;
            int tok = 0;
            off += (size_t)snprintf(P->spec + off, sizeof P->spec - off, "%s", pool == LP_WPOOL_GAP ? "gap" : "flatten");
            tok++;
            if (L->pre_dropout > 0) off += (size_t)snprintf(P->spec + off, sizeof P->spec - off, ",dropout:%g", L->pre_dropout), tok++;
            for (int k = 0; k < nd && off < sizeof P->spec; k++) {
                P->index[k] = tok++;
                off += (size_t)snprintf(P->spec + off, sizeof P->spec - off, ",dense:%lld%s", (long long)D[k]->w.shape[0], relu[k] ? ":relu" : "");
                if (D[k]->dropout > 0) off += (size_t)snprintf(P->spec + off, sizeof P->spec - off, ",dropout:%g", D[k]->dropout), tok++;
            }
            if (off >= sizeof P->spec) return lp_fail(LP_ERR_FORMAT, "%s: the head has too many layers for a loupe head spec", path);
        }
    }
    /* the input size: what the first dense layer's inputs fix */
    if (pool == LP_WPOOL_GAP) {
        if (fin != 512)
            return lp_fail(LP_ERR_SHAPE, "%s: %s takes %lld inputs but the global average pooling (%s) gives 512 (the channels of VGG's last conv)", path,
                           wlabel(D[0]), (long long)fin, L->pool_src[0] ? L->pool_src : "gap");
    } else if (pool == LP_WPOOL_AVG7 && P->keep) {
        /* loupe's top=keep has the same adaptive pooling: any size */
    } else if (pool == LP_WPOOL_AVG7 || P->keep) {
        /* the flatten of a 7x7 map: only at 224 (up to 255) is loupe's flatten torchvision's avgpool */
        if (fin != FLAT_IN)
            return lp_fail(LP_ERR_SHAPE, "%s: %s takes %lld inputs but %s gives 25088 (512x7x7)", path, wlabel(D[0]), (long long)fin, pool_name(pool));
        if (h && (h / 32 != 7 || w / 32 != 7))
            return lp_fail(LP_ERR_ARG, "%s: the head follows %s (a 7x7 map), which the input size %dx%d (%s) does not give: use 224x224", path,
                           pool_name(pool), w, h, size_from);
    } else if (h) {
        int64_t need = 512LL * (h / 32) * (w / 32);
        if (fin != need)
            return lp_fail(LP_ERR_SHAPE, "%s: %s takes %lld inputs but at %dx%d (%s) the flatten%s%s%s gives %lld (512x%dx%d)", path, wlabel(D[0]),
                           (long long)fin, w, h, size_from, L->pool_src[0] ? " (" : "", L->pool_src, L->pool_src[0] ? ")" : "", (long long)need, h / 32, w / 32);
    } else {
        int64_t s = 1;
        while ((s + 1) * (s + 1) * 512 <= fin) s++;
        if (s * s * 512 != fin)
            return lp_fail(LP_ERR_SHAPE, "%s: %s takes %lld inputs after the flatten%s%s%s: not 512 x a square feature map; give the input size with --size HxW",
                           path, wlabel(D[0]), (long long)fin, L->pool_src[0] ? " (" : "", L->pool_src, L->pool_src[0] ? ")" : "");
        h = w = (int)(32 * s);
    }
    if (!h) h = w = 224; /* VGG's own size: the size-free heads (gap, torchvision's classifier) */
    P->in_h = h;
    P->in_w = w;
    return LP_OK;
}

/* The message for tensors that have no place in a VGG: what was found and
 * what was expected, without contradicting itself. */
static lp_status foreign_message(const char *path, lp_wlayers *L, int nc, const char *want, const char *what) {
    int convs = nc + L->foreign_conv_count;
    for (int i = 0; i < L->count; i++)
        if (L->items[i].kind == LP_WLAYER_CONV) add_example(L->conv_examples, &L->n_conv_examples, L->items[i].src);
    char ce[320], oe[320];
    examples_str(L->conv_examples, L->n_conv_examples, ce, sizeof ce);
    examples_str(L->examples, L->n_examples, oe, sizeof oe);
    int others = L->foreign_count - L->foreign_conv_count;
    bool vgg_count = want ? convs == (!strcmp(want, "vgg16") ? 13 : 16) : (convs == 13 || convs == 16);
    const char *pretty = convs == 13 ? "VGG16" : "VGG19";
    if (L->foreign_bn && (convs == 13 || convs == 16 || convs == 8 || convs == 10))
        return lp_fail(LP_ERR_FORMAT, "%s: file has batch-norm tensors (names like %s): a batch-norm VGG (vgg16_bn) is not supported; use plain %s weights",
                       path, oe, want ? want : "vgg16/vgg19");
    if (vgg_count && L->foreign_conv_count)
        return lp_fail(LP_ERR_FORMAT, "%s: file has the %d conv layers of a %s but not under torchvision's names (names like %s): expected features.N.weight "
                       "and .bias; rename the tensors, or export the model to ONNX", path, convs, pretty, ce);
    if (vgg_count)
        return lp_fail(LP_ERR_FORMAT, "%s: file has the %d conv layers of a %s and %d tensor%s loupe cannot place (names like %s): expected classifier.N.* "
                       "(torchvision), head.N.* (loupe, a Sequential named head) or pre_logits.* / head.fc.* (timm); rename them, or export the model to ONNX",
                       path, convs, pretty, others, others == 1 ? "" : "s", oe);
    return lp_fail(LP_ERR_FORMAT, "%s: file has %d conv layers%s%s%s and %d other tensor%s%s%s%s: not a %s", path, convs, convs ? " (names like " : "", ce,
                   convs ? ")" : "", others, others == 1 ? "" : "s", L->n_examples ? " (names like " : "", oe, L->n_examples ? ")" : "", what);
}

lp_status lp_weights_assemble(const char *path, lp_wlayers *L, const lp_weights_opts *o, const char *source, const char *preprocess,
                              lp_tensor_list *out) {
    char s1[64], s2[64];
    int nc = 0, nd = 0, first_dense = -1;
    const char *first_conv = NULL, *last_conv = NULL;
    for (int i = 0; i < L->count; i++) {
        if (L->items[i].kind == LP_WLAYER_CONV) {
            if (first_dense >= 0)
                return lp_fail(LP_ERR_FORMAT, "%s: conv layer %s comes after dense layer %s: not a VGG", path, wlabel(&L->items[i]),
                               wlabel(&L->items[first_dense]));
            if (!first_conv) first_conv = L->items[i].src;
            last_conv = L->items[i].src;
            nc++;
        } else {
            if (first_dense < 0) first_dense = i;
            nd++;
        }
    }
    const char *want = o && o->arch && *o->arch ? o->arch : NULL;
    if (want && strcmp(want, "vgg16") && strcmp(want, "vgg19"))
        return lp_fail(LP_ERR_ARG, "unknown architecture '%s' (expected vgg16 or vgg19)", want);
    const char *what = !want ? "VGG16 (13 conv layers) or VGG19 (16)" : !strcmp(want, "vgg16") ? "VGG16 (13 conv layers)" : "VGG19 (16 conv layers)";

    /* not a VGG at all (ResNet, Inception, batch-norm VGG), or names loupe cannot place */
    if (L->foreign_count > 0) return foreign_message(path, L, nc, want, what);
    if (nc == 0)
        return lp_fail(LP_ERR_FORMAT, "%s: no conv layers found: not a %s", path, what);
    if (nc != 13 && nc != 16) {
        if (nc < 16 && nc > 10)
            return lp_fail(LP_ERR_FORMAT, "%s: file has %d conv layers (first %s, last %s): a %s has %d; layers are missing, the file is incomplete",
                           path, nc, first_conv, last_conv, want && !strcmp(want, "vgg19") ? "VGG19" : nc > 13 ? "VGG19" : "VGG16",
                           want && !strcmp(want, "vgg19") ? 16 : nc > 13 ? 16 : 13);
        return lp_fail(LP_ERR_FORMAT, "%s: file has %d conv layers (names like '%s'): not a %s", path, nc, first_conv, what);
    }
    const char *found = nc == 13 ? "vgg16" : "vgg19";
    if (want && strcmp(want, found))
        return lp_fail(LP_ERR_FORMAT, "%s: file has %d conv layers: a %s, not a %s; use --arch %s (convert) or --model %s (train)", path, nc,
                       nc == 13 ? "VGG16" : "VGG19", !strcmp(want, "vgg16") ? "VGG16" : "VGG19", found, found);
    vgg_arch A;
    arch_get(found, &A);

    lp_status st = LP_OK;
    int k = 0;
    int64_t num_classes = 0;
    for (int i = 0; i < L->count && !st; i++) {
        lp_wlayer *y = &L->items[i];
        char ours[64];
        if (y->kind == LP_WLAYER_CONV) {
            int idx = A.index[k];
            if (y->index >= 0 && y->index != idx)
                return lp_fail(LP_ERR_FORMAT, "%s: conv %s is at features.%d but %s has its conv #%d at features.%d (the pooling layers are not where %s has them)",
                               path, y->src, y->index, A.pretty, k + 1, idx, A.pretty);
            int64_t ws[4] = {A.cout[k], A.cin[k], 3, 3};
            snprintf(ours, sizeof ours, "features.%d.weight", idx);
            if (!shape_is(&y->w, 4, ws)) {
                lp_tensor e = {.ndim = 4};
                memcpy(e.shape, ws, sizeof ws);
                char s3[64];
                lp_shape_str(&y->w, s1, sizeof s1);
                snprintf(s3, sizeof s3, "%s", y->src_shape);
                bool same = !strcmp(y->src, ours);
                return lp_fail(LP_ERR_SHAPE, "%s: %s has shape %s%s%s%s, expected %s%s%s (%s conv %d)", path, y->src, s3[0] ? s3 : s1,
                               s3[0] && strcmp(s3, s1) ? " (OIHW " : "", s3[0] && strcmp(s3, s1) ? s1 : "", s3[0] && strcmp(s3, s1) ? ")" : "",
                               lp_shape_str(&e, s2, sizeof s2), same ? "" : " for ", same ? "" : ours, A.pretty, k + 1);
            }
            k++;
        } else {
            snprintf(ours, sizeof ours, "%s", y->src);
            if (y->w.ndim != 2)
                return lp_fail(LP_ERR_SHAPE, "%s: %s has shape %s, expected a matrix [out, in]", path, wlabel(y), lp_shape_str(&y->w, s1, sizeof s1));
            num_classes = y->w.shape[0];
        }
        int64_t nout = y->w.shape[0];
        if (!y->b.data) st = lp_weights_zero_bias(&y->b, nout);
        else if (y->b.ndim != 1 || y->b.shape[0] != nout)
            return lp_fail(LP_ERR_SHAPE, "%s: bias of %s has shape %s, expected (%lld)", path, wlabel(y), lp_shape_str(&y->b, s1, sizeof s1),
                           (long long)nout);
        if (!st) st = lp_weights_check_finite(path, ours, y->src, &y->w);
        if (!st) {
            char bn[200];
            if (y->bsrc[0]) snprintf(bn, sizeof bn, "%s", y->bsrc);
            else snprintf(bn, sizeof bn, "bias of %s", y->src);
            if (y->kind == LP_WLAYER_CONV) {
                ours[strlen(ours) - strlen("weight")] = 0;
                strcat(ours, "bias");
            } else snprintf(ours, sizeof ours, "%s", bn);
            st = lp_weights_check_finite(path, ours, bn, &y->b);
        }
    }
    if (st) return st;
    head_plan P;
    if ((st = plan_head(path, L, o, &P))) return st;
    /* move into out with our names */
    k = 0;
    int d = 0;
    for (int i = 0; i < L->count && !st; i++) {
        lp_wlayer *y = &L->items[i];
        const char *fmt = y->kind == LP_WLAYER_CONV ? "features.%d.%s" : P.keep || P.classifier_names ? "classifier.%d.%s" : "head.%d.%s";
        int idx = y->kind == LP_WLAYER_CONV ? A.index[k++] : P.index[d++];
        st = add_named(out, fmt, idx, "weight", &y->w);
        if (!st) st = add_named(out, fmt, idx, "bias", &y->b);
    }
    if (!st) st = lp_tensor_list_set_meta(out, "source", source);
    if (!st && preprocess) st = lp_tensor_list_set_meta(out, "preprocess", preprocess);
    if (!st) st = lp_tensor_list_set_meta(out, "arch", found);
    if (!st) st = lp_tensor_list_set_meta(out, "top", P.keep ? "keep" : "none");
    if (!st && nd && P.known && !P.keep) st = lp_tensor_list_set_meta(out, "head", P.spec);
    if (!st && !P.known) st = lp_tensor_list_set_meta(out, "head_unknown", P.unknown);
    char nb[32];
    if (!st && num_classes) {
        snprintf(nb, sizeof nb, "%lld", (long long)num_classes);
        st = lp_tensor_list_set_meta(out, "num_classes", nb);
    }
    if (!st && P.in_h) {
        snprintf(nb, sizeof nb, "%dx%d", P.in_h, P.in_w);
        st = lp_tensor_list_set_meta(out, "input_size", nb);
    }
    return st;
}

/* ---- format detection --------------------------------------------------- */
bool lp_weights_is_hdf5(const uint8_t *head, size_t n) {
    static const uint8_t sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    return n >= 8 && memcmp(head, sig, 8) == 0;
}

bool lp_weights_is_safetensors(const uint8_t *head, size_t n, uint64_t file_size) {
    if (n < 9) return false;
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--) len = (len << 8) | head[i];
    return len >= 2 && len <= file_size - 8 && head[8] == '{';
}

/* ---- torchvision / timm / loupe safetensors ------------------------------ */
static int cmp_layer_index(const void *a, const void *b) {
    const lp_wlayer *x = a, *y = b;
    if (x->kind != y->kind) return (int)x->kind - (int)y->kind;
    return x->index - y->index;
}

static bool parse_index(const char *s, const char *prefix, int *idx, const char **rest) {
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) != 0) return false;
    char *end;
    long v = strtol(s + n, &end, 10);
    if (end == s + n || *end != '.' || v < 0 || v > 1000) return false;
    *idx = (int)v;
    *rest = end + 1;
    return true;
}

/* Moves a tensor out of the list as F32 (converting F16/BF16). */
static lp_status take_f32(const char *path, lp_named_tensor *nt, lp_tensor *out) {
    if (nt->t.dtype == LP_F32) {
        *out = nt->t;
        memset(&nt->t, 0, sizeof nt->t);
        return LP_OK;
    }
    if (nt->t.dtype != LP_F16 && nt->t.dtype != LP_BF16)
        return lp_fail(LP_ERR_FORMAT, "%s: tensor %s has dtype %s (expected F32, F16 or BF16)", path, nt->name, lp_dtype_name(nt->t.dtype));
    lp_status st = lp_tensor_to_f32(&nt->t, out);
    lp_tensor_free(&nt->t);
    return st;
}

typedef struct st_pending {
    lp_wlayer_kind kind;
    int index;
    lp_named_tensor *w, *b;
    bool timm_reshape;
} st_pending;

/* How a state dict's dense layers are joined, from their indices alone. In
 * torchvision's classifier (Linear, ReLU, Dropout, Linear, ...) and in a
 * PyTorch Sequential head (Flatten, Linear, ReLU, Dropout, ...), three steps
 * between two Linears are a ReLU and a Dropout, one step is nothing; two steps
 * are a ReLU, a Dropout or (loupe's own numbering) "dense:relu,dropout": not
 * told. Nothing follows the last one. */
static void head_from_indices(lp_wlayers *L) {
    lp_wlayer *prev = NULL;
    for (int i = 0; i < L->count; i++) {
        lp_wlayer *y = &L->items[i];
        if (y->kind != LP_WLAYER_DENSE) continue;
        if (prev) {
            int gap = y->index - prev->index;
            prev->relu = gap == 1 ? 0 : gap == 3 ? 1 : -1;
            prev->dropout = gap == 1 ? 0.0f : gap == 3 ? 0.5f : -1.0f;
        } else if (L->head_names) {
            /* head.0 is the flatten or pooling; a global average pooling gives 512 features */
            L->pool = y->w.ndim == 2 && y->w.shape[1] != 512 ? LP_WPOOL_FLATTEN : LP_WPOOL_UNKNOWN;
            snprintf(L->pool_src, sizeof L->pool_src, "head.0");
            L->pre_dropout = y->index == 1 ? 0.0f : -1.0f;
        } else {
            L->pool = LP_WPOOL_AVG7; /* torchvision's VGG: avgpool, flatten, classifier */
            snprintf(L->pool_src, sizeof L->pool_src, "torchvision's avgpool");
            L->pre_dropout = y->index == 0 ? 0.0f : -1.0f;
        }
        prev = y;
    }
    if (prev) {
        prev->relu = 0;
        prev->dropout = 0.0f;
    }
}

static lp_status safetensors_map(const char *path, const lp_weights_opts *o, lp_tensor_list *in, lp_tensor_list *out) {
    const char *fmt = lp_tensor_list_get_meta(in, "format");
    bool loupe = fmt && strncmp(fmt, "loupe-checkpoint", 16) == 0;
    bool timm = false, classifier = false;
    lp_wlayers L = {0};
    st_pending *pend = lp_calloc((size_t)in->count + 1, sizeof *pend);
    if (!pend) return LP_ERR_NOMEM;
    int np = 0;
    lp_status st = LP_OK;
    char **keep = lp_calloc((size_t)in->count + 1, sizeof *keep); /* loupe: other tensors passed through */
    if (!keep) {
        free(pend);
        return LP_ERR_NOMEM;
    }
    for (int i = 0; i < in->count; i++) {
        lp_named_tensor *nt = &in->items[i];
        const char *name = nt->name, *rest;
        if (strncmp(name, "module.", 7) == 0) name += 7; /* nn.DataParallel */
        int idx;
        lp_wlayer_kind kind;
        bool is_w, timm_reshape = false;
        if (parse_index(name, "features.", &idx, &rest) && (!strcmp(rest, "weight") || !strcmp(rest, "bias"))) {
            kind = LP_WLAYER_CONV;
            is_w = !strcmp(rest, "weight");
            if (is_w && nt->t.ndim != 4) {
                lp_wlayers_note_foreign(&L, nt->name, false); /* features.N.weight of a batch norm */
                continue;
            }
        } else if (parse_index(name, "classifier.", &idx, &rest) && (!strcmp(rest, "weight") || !strcmp(rest, "bias"))) {
            kind = LP_WLAYER_DENSE;
            is_w = !strcmp(rest, "weight");
            classifier = true;
        } else if (!strncmp(name, "pre_logits.fc1.", 15) || !strncmp(name, "pre_logits.fc2.", 15) || !strncmp(name, "head.fc.", 8)) {
            kind = LP_WLAYER_DENSE;
            timm = classifier = true;
            rest = name + (name[0] == 'h' ? 8 : 15);
            idx = name[0] == 'h' ? 6 : name[13] == '1' ? 0 : 3;
            is_w = !strcmp(rest, "weight");
            if (!is_w && strcmp(rest, "bias")) {
                lp_wlayers_note_foreign(&L, nt->name, false);
                continue;
            }
            timm_reshape = name[0] == 'p';
        } else if (loupe && (!strncmp(name, "head.", 5) || !strncmp(name, "optim.", 6) || !strncmp(name, "train.", 6))) {
            if (strncmp(name, "head.", 5) == 0) keep[i] = nt->name;
            continue;
        } else if (parse_index(name, "head.", &idx, &rest) && (!strcmp(rest, "weight") || !strcmp(rest, "bias"))) {
            /* loupe's names without loupe's metadata: a PyTorch Sequential named head */
            kind = LP_WLAYER_DENSE;
            is_w = !strcmp(rest, "weight");
            L.head_names = true;
        } else {
            lp_wlayers_note_foreign(&L, nt->name, nt->t.ndim == 4);
            continue;
        }
        int p;
        for (p = 0; p < np; p++)
            if (pend[p].kind == kind && pend[p].index == idx) break;
        if (p == np) {
            pend[np] = (st_pending){.kind = kind, .index = idx};
            np++;
        }
        if (is_w) pend[p].w = nt;
        else pend[p].b = nt;
        pend[p].timm_reshape |= timm_reshape;
    }
    if (classifier && L.head_names)
        st = lp_fail(LP_ERR_FORMAT, "%s: file has both classifier.N and head.N tensors: expected one head (torchvision's classifier or a head)", path);
    for (int p = 0; p < np && !st; p++) {
        if (!pend[p].w && L.foreign_count > 0) {
            lp_wlayers_note_foreign(&L, pend[p].b->name, false); /* bias of a batch norm: reported with it */
            continue;
        }
        if (!pend[p].w) {
            st = lp_fail(LP_ERR_FORMAT, "%s: %s has a bias (%s) but no weight; the file is incomplete", path,
                         pend[p].kind == LP_WLAYER_CONV ? "features" : L.head_names ? "head" : "classifier", pend[p].b->name);
            break;
        }
        lp_tensor w = {0}, b = {0};
        char src[160], sshape[64];
        snprintf(src, sizeof src, "%s", pend[p].w->name);
        lp_shape_str(&pend[p].w->t, sshape, sizeof sshape);
        st = take_f32(path, pend[p].w, &w);
        if (!st && pend[p].b) st = take_f32(path, pend[p].b, &b);
        if (!st && pend[p].timm_reshape) {
            /* timm ConvMlp: fc1 is Conv2d(512, 4096, 7) = Linear over the C,H,W
             * flatten; fc2 is a 1x1 conv. Same memory, 2-D view. */
            if (w.ndim == 4) {
                w.shape[1] = w.shape[1] * w.shape[2] * w.shape[3];
                w.ndim = 2;
            }
        }
        if (!st && pend[p].kind == LP_WLAYER_DENSE && w.ndim != 2)
            st = lp_fail(LP_ERR_SHAPE, "%s: %s has shape %s, expected a matrix [out, in]", path, src, sshape);
        if (!st) st = lp_wlayers_push(&L, pend[p].kind, src, sshape, pend[p].index, &w, pend[p].b || b.data ? &b : NULL,
                                      pend[p].b ? pend[p].b->name : NULL);
        lp_tensor_free(&w);
        lp_tensor_free(&b);
    }
    /* convs by features index, denses by classifier / head index */
    if (!st && L.count) qsort(L.items, (size_t)L.count, sizeof *L.items, cmp_layer_index);
    if (!st) head_from_indices(&L);
    const char *pre = loupe ? lp_tensor_list_get_meta(in, "preprocess") : "torch";
    if (!st) st = lp_weights_assemble(path, &L, o, loupe ? "loupe" : timm ? "timm" : L.head_names ? "pytorch" : "torchvision", pre, out);
    if (!st && loupe) {
        /* keep the checkpoint's metadata and its head */
        for (int i = 0; i < in->meta_count && !st; i++) {
            const char *key = in->meta[i].key;
            if (!strcmp(key, "source")) st = lp_tensor_list_set_meta(out, "converted_from", in->meta[i].value);
            else if (strcmp(key, "arch") && strcmp(key, "top")) st = lp_tensor_list_set_meta(out, key, in->meta[i].value);
            else if (!strcmp(key, "top") && strcmp(in->meta[i].value, lp_tensor_list_get_meta(out, "top")))
                st = lp_tensor_list_set_meta(out, "top", in->meta[i].value); /* top=none checkpoint with head.* */
        }
        for (int i = 0; i < in->count && !st; i++) {
            if (!keep[i]) continue;
            lp_tensor t = {0};
            st = take_f32(path, &in->items[i], &t);
            if (!st) st = lp_weights_check_finite(path, keep[i], keep[i], &t);
            if (!st) st = lp_tensor_list_add(out, keep[i], &t);
            if (st) lp_tensor_free(&t);
        }
    }
    lp_wlayers_free(&L);
    free(pend);
    free(keep);
    return st;
}

/* A ResNet's safetensors state dict (torchvision's names, which timm's resnets share: conv1,
 * bn1, layerN.M.convK, ...downsample.0/1, fc), or a loupe checkpoint of one: taken as it
 * is, floats as F32 (finite) and batch norm's step counts as I64; what the model has no
 * place for is reported by lp_weights_load_into. torchvision's weights expect its
 * normalization ("torch"). */
static void timm_efficientnet_name(const char *name, char *buf, size_t n);
/* timm: names in timm's efficientnet_b0 scheme, renamed to torchvision's */
static lp_status resnet_state_dict(const char *path, lp_tensor_list *in, lp_tensor_list *out, bool timm) {
    const char *fmt = lp_tensor_list_get_meta(in, "format");
    const bool loupe = fmt && !strncmp(fmt, "loupe-checkpoint", 16);
    lp_status st = LP_OK;
    for (int i = 0; i < in->count && !st; i++) {
        const lp_named_tensor *nt = &in->items[i];
        const char *name = strncmp(nt->name, "module.", 7) ? nt->name : nt->name + 7; /* nn.DataParallel */
        char renamed[96];
        if (timm) timm_efficientnet_name(name, renamed, sizeof renamed), name = renamed;
        const size_t len = strlen(name);
        const bool count = len >= 19 && !strcmp(name + len - 19, "num_batches_tracked");
        lp_tensor t;
        if (count || nt->t.dtype == LP_I64 || nt->t.dtype == LP_U8) {
            if (!(st = lp_tensor_alloc(&t, nt->t.dtype, nt->t.ndim, nt->t.shape)))
                memcpy(t.data, nt->t.data, (size_t)lp_tensor_numel(&t) * lp_dtype_size(t.dtype));
        } else if (!(st = lp_tensor_alloc(&t, LP_F32, nt->t.ndim, nt->t.shape))) {
            float *d = t.data;
            const int64_t n = lp_tensor_numel(&t);
            for (int64_t j = 0; j < n; j++)
                d[j] = nt->t.dtype == LP_F32    ? ((const float *)nt->t.data)[j]
                       : nt->t.dtype == LP_BF16 ? lp_bf16_to_f32(((const uint16_t *)nt->t.data)[j])
                                                : lp_f16_to_f32(((const uint16_t *)nt->t.data)[j]);
            st = lp_weights_check_finite(path, name, name, &t);
            if (st) lp_tensor_free(&t);
        }
        if (!st && (st = lp_tensor_list_add(out, name, &t))) lp_tensor_free(&t);
    }
    /* state dicts saved before PyTorch 0.4.1 have no num_batches_tracked: a count of 0, as
     * PyTorch's load_state_dict fills it in */
    for (int i = 0; i < out->count && !st; i++) {
        const char *name = out->items[i].name;
        const size_t len = strlen(name);
        char counter[128];
        if (len < 13 || strcmp(name + len - 13, ".running_mean") || len - 13 + 21 >= sizeof counter) continue;
        snprintf(counter, sizeof counter, "%.*s.num_batches_tracked", (int)(len - 13), name);
        if (lp_tensor_list_find(out, counter)) continue;
        lp_tensor t;
        if (!(st = lp_tensor_alloc(&t, LP_I64, 0, NULL))) {
            memset(t.data, 0, sizeof(int64_t));
            if ((st = lp_tensor_list_add(out, counter, &t))) lp_tensor_free(&t);
        }
    }
    for (int i = 0; loupe && i < in->meta_count && !st; i++) /* the checkpoint's arch, top, head, classes... */
        st = lp_tensor_list_set_meta(out, in->meta[i].key, in->meta[i].value);
    if (!st && !loupe) st = lp_tensor_list_set_meta(out, "source", "safetensors");
    if (!st && !lp_tensor_list_get_meta(out, "preprocess")) st = lp_tensor_list_set_meta(out, "preprocess", "torch");
    return st;
}

/* Which ResNet a state dict holds (the metadata's arch, else the blocks of layer3 and
 * whether a block has a conv3), and its top: torchvision's fc (keep) or none. */
static lp_status resnet_meta(const char *path, const lp_weights_opts *o, lp_tensor_list *out) {
    const char *arch = lp_tensor_list_get_meta(out, "arch");
    if (!arch) {
        int n3 = 0;
        char name[64];
        for (;; n3++) {
            snprintf(name, sizeof name, "layer3.%d.conv1.weight", n3);
            if (!lp_tensor_list_find(out, name)) break;
        }
        const bool bottleneck = lp_tensor_list_find(out, "layer1.0.conv3.weight") != NULL;
        arch = n3 == 2 && !bottleneck ? "resnet18" : n3 == 6 && !bottleneck ? "resnet34" : n3 == 6 ? "resnet50" : NULL;
        if (!arch)
            return lp_fail(LP_ERR_FORMAT, "%s: a ResNet with %d %s blocks in layer3: loupe builds resnet18 (2 basic), resnet34 (6 basic) and "
                           "resnet50 (6 bottleneck)", path, n3, bottleneck ? "bottleneck" : "basic");
        lp_status st = lp_tensor_list_set_meta(out, "arch", arch);
        if (st) return st;
        arch = lp_tensor_list_get_meta(out, "arch");
    }
    if (o->arch && strcmp(o->arch, arch)) return lp_fail(LP_ERR_FORMAT, "%s: the weights are a %s, not the %s asked for", path, arch, o->arch);
    if (lp_tensor_list_get_meta(out, "top")) return LP_OK;
    const lp_named_tensor *fc = lp_tensor_list_find(out, "fc.weight");
    lp_status st = lp_tensor_list_set_meta(out, "top", fc ? "keep" : "none");
    if (!st && fc && fc->t.ndim == 2) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)fc->t.shape[0]);
        st = lp_tensor_list_set_meta(out, "num_classes", buf);
    }
    return st;
}

/* A state dict with torchvision's ResNet names (any layerS.B.* tensor: one missing is then
 * named by the ResNet reader, not taken for another model), or a loupe checkpoint of a ResNet. */
static bool resnet_names(const lp_tensor_list *in) {
    const char *a = lp_tensor_list_get_meta(in, "arch");
    if (a) return !strncmp(a, "resnet", 6);
    for (int i = 0; i < in->count; i++) {
        const char *n = in->items[i].name;
        if (!strncmp(n, "module.", 7)) n += 7;
        if (!strncmp(n, "layer", 5) && n[5] >= '1' && n[5] <= '4' && n[6] == '.' && n[7] >= '0' && n[7] <= '9') return true;
    }
    return false;
}

static bool has_name(const lp_tensor_list *in, const char *name) {
    char m[96];
    snprintf(m, sizeof m, "module.%s", name);
    return lp_tensor_list_find(in, name) || lp_tensor_list_find(in, m);
}

/* Which of torchvision's features/classifier models a state dict holds by its names:
 * mobilenet_v2 (features.N.conv...), efficientnet_b0 (features.S.I.block..., or timm's
 * conv_stem, blocks.S.I.se...); NULL for none. *timm: in timm's names. */
static const char *features_model(const lp_tensor_list *in, bool *timm) {
    const char *a = lp_tensor_list_get_meta(in, "arch");
    *timm = false;
    if (a) return !strcmp(a, "mobilenet_v2") || !strcmp(a, "efficientnet_b0") ? a : NULL;
    if (has_name(in, "features.1.conv.0.0.weight")) return "mobilenet_v2";
    if (has_name(in, "features.1.0.block.0.0.weight")) return "efficientnet_b0";
    if (has_name(in, "conv_stem.weight") && has_name(in, "blocks.0.0.se.conv_reduce.weight")) return *timm = true, "efficientnet_b0";
    return NULL;
}

/* timm's efficientnet_b0 name -> torchvision's (the same tensors and function): conv_stem,
 * bn1 -> features.0; blocks.S.I -> features.S+1.I.block with conv_pw, bn1 (expansion),
 * conv_dw, bn2, se.conv_reduce/expand, conv_pwl, bn3 (projection) in order, or in block 0
 * (no expansion) conv_dw, bn1, se, conv_pw, bn2; conv_head, bn2 -> features.8;
 * classifier -> classifier.1. Names it does not know stay (the strict load names them). */
static void timm_efficientnet_name(const char *name, char *buf, size_t n) {
    static const char *const top[][2] = {{"conv_stem.", "features.0.0."}, {"bn1.", "features.0.1."}, {"conv_head.", "features.8.0."},
                                         {"bn2.", "features.8.1."}, {"classifier.", "classifier.1."}};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
        const size_t l = strlen(top[i][0]);
        if (!strncmp(name, top[i][0], l)) {
            snprintf(buf, n, "%s%s", top[i][1], name + l);
            return;
        }
    }
    int s, b, used = 0;
    if (sscanf(name, "blocks.%d.%d.%n", &s, &b, &used) == 2 && used > 0) {
        static const char *const ds[][2] = {{"conv_dw.", "0.0."}, {"bn1.", "0.1."}, {"se.conv_reduce.", "1.fc1."},
                                            {"se.conv_expand.", "1.fc2."}, {"conv_pw.", "2.0."}, {"bn2.", "2.1."}};
        static const char *const ir[][2] = {{"conv_pw.", "0.0."}, {"bn1.", "0.1."}, {"conv_dw.", "1.0."}, {"bn2.", "1.1."},
                                            {"se.conv_reduce.", "2.fc1."}, {"se.conv_expand.", "2.fc2."}, {"conv_pwl.", "3.0."},
                                            {"bn3.", "3.1."}};
        const char *rest = name + used;
        const char *const(*map)[2] = s == 0 ? ds : ir;
        const size_t count = s == 0 ? sizeof ds / sizeof ds[0] : sizeof ir / sizeof ir[0];
        for (size_t i = 0; i < count; i++) {
            const size_t l = strlen(map[i][0]);
            if (!strncmp(rest, map[i][0], l)) {
                snprintf(buf, n, "features.%d.%d.block.%s%s", s + 1, b, map[i][1], rest + l);
                return;
            }
        }
    }
    snprintf(buf, n, "%s", name);
}

/* mobilenet_v2's or efficientnet_b0's metadata: top keep when classifier.1 is there. */
lp_status lp_weights_features_meta(const char *path, const lp_weights_opts *o, const char *model, lp_tensor_list *out) {
    const char *arch = lp_tensor_list_get_meta(out, "arch");
    if (arch && strcmp(arch, model)) return lp_fail(LP_ERR_FORMAT, "%s: the weights are %s's, not %s's", path, arch, model);
    if (o->arch && strcmp(o->arch, model)) return lp_fail(LP_ERR_FORMAT, "%s: the weights are %s's, not %s's as asked for", path, model, o->arch);
    lp_status st = arch ? LP_OK : lp_tensor_list_set_meta(out, "arch", model);
    if (st || lp_tensor_list_get_meta(out, "top")) return st;
    const lp_named_tensor *fc = lp_tensor_list_find(out, "classifier.1.weight");
    st = lp_tensor_list_set_meta(out, "top", fc ? "keep" : "none");
    if (!st && fc && fc->t.ndim == 2) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)fc->t.shape[0]);
        st = lp_tensor_list_set_meta(out, "num_classes", buf);
    }
    return st;
}

/* Keras' ResNet50 (keras.applications, ResNet v1) from a Keras HDF5 file: conv1_conv +
 * conv1_bn, conv{S}_block{B}_{K}_conv + _bn (K = 0: the shortcut), predictions. Each conv
 * has a bias, which moves into its batch norm's running mean; Keras' batch norm epsilon
 * (1.001e-5, fixed in keras.applications.resnet, not in the weights) moves into the running
 * variance, so that torchvision's batch norm (1e-5) computes the same function. The net is
 * then built with v1 strides (resnet_version = v1). Preprocessing caffe, as Keras'. */
#define KERAS_RESNET_BN_EPS 1.001e-5f

lp_status lp_weights_reference_net(const char *arch, lp_net **net) {
    lp_net_config c = lp_net_default_config();
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    snprintf(c.top, sizeof c.top, "keep");
    c.num_classes = 2, c.in_c = 3, c.in_h = c.in_w = 224;
    return lp_net_create_ex(&c, false, net);
}

lp_status lp_keras_bn_to_torch(const char *path, const lp_wlayer *y, const lp_wlayer *conv, float keras_eps, const char *ours,
                               lp_tensor_list *out) {
    const int64_t n = y->w.shape[1];
    char name[128];
    if (conv && conv->b.data && lp_tensor_numel(&conv->b) != n)
        return lp_fail(LP_ERR_SHAPE, "%s: %s has %lld outputs but its batch norm %s %lld", path, conv->src, (long long)lp_tensor_numel(&conv->b),
                       y->src, (long long)n);
    static const char *const suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    lp_status st = LP_OK;
    for (int r = 0; r < 4 && !st; r++) {
        lp_tensor t;
        if ((st = lp_tensor_alloc(&t, LP_F32, 1, &n))) break;
        float *d = t.data;
        memcpy(d, (const float *)y->w.data + r * n, (size_t)n * sizeof(float));
        for (int64_t c = 0; c < n; c++) {
            if (r == 2 && conv && conv->b.data) d[c] -= ((const float *)conv->b.data)[c]; /* BN(conv + b) = BN'(conv), mean' = mean - b */
            if (r == 3) d[c] += keras_eps - 1e-5f;
        }
        snprintf(name, sizeof name, "%s.%s", ours, suffix[r]);
        if (!(st = lp_weights_check_finite(path, name, y->src, &t)) && r == 3)
            for (int64_t c = 0; c < n && !st; c++)
                if (d[c] < 0) st = lp_fail(LP_ERR_FORMAT, "%s: batch norm %s has a negative moving variance (%g)", path, y->src, (double)d[c]);
        if (st || (st = lp_tensor_list_add(out, name, &t))) lp_tensor_free(&t);
    }
    lp_tensor steps;
    if (!st && !(st = lp_tensor_alloc(&steps, LP_I64, 0, NULL))) {
        *(int64_t *)steps.data = 0;
        snprintf(name, sizeof name, "%s.num_batches_tracked", ours);
        if ((st = lp_tensor_list_add(out, name, &steps))) lp_tensor_free(&steps);
    }
    return st;
}

lp_status lp_weights_add_linear(const char *path, lp_wlayer *y, const char *ours, lp_tensor_list *out) {
    char name[128];
    snprintf(name, sizeof name, "%s.weight", ours);
    lp_status st = lp_weights_check_finite(path, name, y->src, &y->w);
    lp_tensor b = y->b;
    if (!st && !b.data) st = lp_weights_zero_bias(&b, y->w.shape[0]);
    if (st) return st;
    memset(&y->b, 0, sizeof y->b);
    if ((st = lp_tensor_list_add(out, name, &y->w))) {
        lp_tensor_free(&b);
        return st;
    }
    snprintf(name, sizeof name, "%s.bias", ours);
    if ((st = lp_tensor_list_add(out, name, &b))) lp_tensor_free(&b);
    return st;
}

lp_status lp_keras_top_dense(const char *path, const lp_wlayers *L, lp_wlayer *y, const char *ours, const char *model,
                             lp_tensor_list *out) {
    char ln[160];
    int dense = 0;
    for (int i = 0; i < L->count; i++) dense += L->items[i].kind == LP_WLAYER_DENSE;
    lp_keras_layer_name(y, ln, sizeof ln);
    if (dense > 1)
        return lp_fail(LP_ERR_FORMAT, "%s: %d dense layers after %s: loupe reads one (Keras' predictions, or GlobalAveragePooling2D "
                       "then one Dense); save the base alone (include_top=False) and train a head on it", path, dense, model);
    if (strcmp(ln, "predictions") && L->pool != LP_WPOOL_GAP)
        return lp_fail(LP_ERR_FORMAT, "%s: dense layer '%s' after %s without GlobalAveragePooling2D before it (%s): loupe's top pools "
                       "globally; save the base alone (include_top=False) and train a head on it", path, ln, model,
                       L->pool == LP_WPOOL_FLATTEN ? "a Flatten" : "the file does not say");
    if (y->w.shape[0] == 1) {
        /* one logit z (a sigmoid's): two classes with logits 0 and z, whose softmax gives the
         * second sigmoid(z), the first 1 - sigmoid(z) */
        const int64_t in = y->w.shape[1], two = 2;
        lp_tensor w2, b2;
        lp_status st = lp_tensor_alloc(&w2, LP_F32, 2, (int64_t[]){2, in});
        if (st) return st;
        if ((st = lp_tensor_alloc(&b2, LP_F32, 1, &two))) {
            lp_tensor_free(&w2);
            return st;
        }
        memset(w2.data, 0, (size_t)in * sizeof(float));
        memcpy((float *)w2.data + in, y->w.data, (size_t)in * sizeof(float));
        ((float *)b2.data)[0] = 0.0f;
        ((float *)b2.data)[1] = y->b.data ? *(const float *)y->b.data : 0.0f;
        lp_tensor_free(&y->w);
        lp_tensor_free(&y->b);
        y->w = w2, y->b = b2;
    }
    return lp_weights_add_linear(path, y, ours, out);
}

static bool keras_resnet_layers(const lp_wlayers *L) {
    for (int i = 0; i < L->count; i++)
        if (!strncmp(L->items[i].src, "conv1_conv", 10) || !strncmp(L->items[i].src, "conv2_block1_", 13)) return true;
    return false;
}

void lp_keras_layer_name(const lp_wlayer *y, char *buf, size_t n) {
    snprintf(buf, n, "%s", y->src);
    char *slash = strchr(buf, '/');
    if (slash) *slash = 0;
}

/* Our name for a Keras ResNet layer (conv or bn); false when it has none. */
static bool keras_resnet_name(const char *ln, char *out, size_t n) {
    int s, b, k, end = 0;
    char kind[8];
    if (!strcmp(ln, "conv1_conv")) return snprintf(out, n, "conv1"), true;
    if (!strcmp(ln, "conv1_bn")) return snprintf(out, n, "bn1"), true;
    if (sscanf(ln, "conv%d_block%d_%d_%4[a-z]%n", &s, &b, &k, kind, &end) != 4 || ln[end] || s < 2 || s > 5 || b < 1 || b > 99 || k < 0 || k > 3)
        return false;
    const bool conv = !strcmp(kind, "conv");
    if (!conv && strcmp(kind, "bn")) return false;
    if (k == 0) snprintf(out, n, "layer%d.%d.downsample.%d", s - 1, b - 1, conv ? 0 : 1);
    else snprintf(out, n, "layer%d.%d.%s%d", s - 1, b - 1, conv ? "conv" : "bn", k);
    return true;
}

static lp_status keras_resnet_map(const char *path, const lp_weights_opts *o, lp_wlayers *L, lp_tensor_list *out) {
    char ln[160], ours[96], name[128];
    lp_status st = LP_OK;
    for (int i = 0; i < L->count && !st; i++) {
        lp_wlayer *y = &L->items[i];
        lp_keras_layer_name(y, ln, sizeof ln);
        if (y->kind == LP_WLAYER_DENSE) {
            if ((st = lp_keras_top_dense(path, L, y, "fc", "Keras' ResNet50", out))) return st;
            continue;
        }
        if (!keras_resnet_name(ln, ours, sizeof ours))
            return lp_fail(LP_ERR_FORMAT, "%s: layer '%s' is not part of Keras' ResNet50 (conv1_conv, conv1_bn, convS_blockB_K_conv/_bn, "
                           "predictions); ResNet50V2 and the other Keras ResNets are not read", path, ln);
        if (y->kind == LP_WLAYER_CONV) {
            snprintf(name, sizeof name, "%s.weight", ours);
            if ((st = lp_weights_check_finite(path, name, y->src, &y->w)) || (st = lp_tensor_list_add(out, name, &y->w))) return st;
            continue;
        }
        /* a batch norm, with its conv's bias */
        char conv_ln[160];
        snprintf(conv_ln, sizeof conv_ln, "%.*s_conv", (int)strlen(ln) - 3, ln);
        const lp_wlayer *cv = NULL;
        for (int j = 0; j < L->count && !cv; j++) {
            char lj[160];
            lp_keras_layer_name(&L->items[j], lj, sizeof lj);
            if (L->items[j].kind == LP_WLAYER_CONV && !strcmp(lj, conv_ln)) cv = &L->items[j];
        }
        if (!cv) return lp_fail(LP_ERR_FORMAT, "%s: batch norm '%s' has no conv '%s' before it: not Keras' ResNet50", path, ln, conv_ln);
        st = lp_keras_bn_to_torch(path, y, cv, KERAS_RESNET_BN_EPS, ours, out);
    }
    if (!st && !lp_tensor_list_find(out, "conv1.weight")) st = lp_fail(LP_ERR_FORMAT, "%s: no layer conv1_conv: not Keras' ResNet50", path);
    if (!st) st = lp_tensor_list_set_meta(out, "source", "keras-h5");
    if (!st) st = lp_tensor_list_set_meta(out, "preprocess", "caffe");
    if (!st) st = resnet_meta(path, o, out);
    if (!st && strcmp(lp_tensor_list_get_meta(out, "arch"), "resnet50"))
        st = lp_fail(LP_ERR_FORMAT, "%s: a Keras ResNet with the blocks of a %s: loupe reads Keras' ResNet50", path, lp_tensor_list_get_meta(out, "arch"));
    if (!st) st = lp_tensor_list_set_meta(out, "resnet_version", "v1");
    return st;
}

/* The VGG reader does not take batch norm or normalization layers (batch norms are named
 * in its messages). */
static void drop_bn_layers(lp_wlayers *L) {
    int k = 0;
    for (int i = 0; i < L->count; i++) {
        if (L->items[i].kind == LP_WLAYER_BN || L->items[i].kind == LP_WLAYER_NORM) lp_tensor_free(&L->items[i].w);
        else L->items[k++] = L->items[i];
    }
    L->count = k;
}

/* ---- entry point ----------------------------------------------------------- */
lp_status lp_weights_read(const char *path, const char *arch_hint, lp_tensor_list *out) {
    lp_weights_opts o = {.arch = arch_hint};
    return lp_weights_read_ex(path, &o, out);
}

lp_status lp_weights_read_ex(const char *path, const lp_weights_opts *o, lp_tensor_list *out) {
    lp_tensor_list_init(out);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lp_fail(LP_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    uint8_t head[16] = {0};
    const bool stat_ok = fstat(fd, &sb) == 0;
    if (!stat_ok || !S_ISREG(sb.st_mode)) {
        close(fd);
        return stat_ok && S_ISDIR(sb.st_mode) ? lp_fail_folder_given(path) : lp_fail(LP_ERR_IO, "%s: not a regular file", path);
    }
    ssize_t n = pread(fd, head, sizeof head, 0);
    bool hdf5 = n > 0 && lp_weights_is_hdf5(head, (size_t)n);
    /* HDF5 files with a user block have the signature at 512, 1024, 2048, ... */
    for (off_t off = 512; !hdf5 && off <= 65536 && off + 8 <= sb.st_size; off *= 2) {
        uint8_t h2[8];
        if (pread(fd, h2, 8, off) == 8 && lp_weights_is_hdf5(h2, 8)) hdf5 = true;
    }
    close(fd);
    if (n < 0) return lp_fail(LP_ERR_IO, "%s: read failed (%s)", path, strerror(errno));
    if (sb.st_size == 0) return lp_fail(LP_ERR_FORMAT, "%s: empty file", path);

    lp_status st;
    lp_wlayers L = {0};
    /* ResNets: safetensors state dicts, ONNX graphs, Keras' ResNet50 */
    bool resnet = o->arch && !strncmp(o->arch, "resnet", 6);
    if (hdf5) {
        st = lp_keras_h5_read_layers(path, &L);
        const bool vgg_asked = o->arch && !strncmp(o->arch, "vgg", 3);
        const bool mobile_asked = o->arch && (!strcmp(o->arch, "mobilenet_v2") || !strcmp(o->arch, "efficientnet_b0"));
        const char *mobile = st || vgg_asked || resnet ? NULL : lp_keras_mobile_arch(&L);
        if (!st && (resnet || (!vgg_asked && !mobile_asked && !mobile && keras_resnet_layers(&L)))) {
            st = keras_resnet_map(path, o, &L, out);
        } else if (!st && (mobile || mobile_asked)) {
            st = lp_keras_mobile_map(path, o, mobile ? mobile : o->arch, &L, out);
        } else if (!st) {
            drop_bn_layers(&L);
            st = lp_weights_assemble(path, &L, o, "keras-h5", "caffe", out);
        }
    } else if (lp_weights_is_safetensors(head, (size_t)n, (uint64_t)sb.st_size)) {
        lp_tensor_list raw;
        lp_tensor_list_init(&raw);
        st = lp_safetensors_read(path, &raw);
        bool timm = false;
        const char *fm = st ? NULL : features_model(&raw, &timm);
        if (!st && !o->arch) resnet = resnet_names(&raw);
        else if (!st && resnet && !resnet_names(&raw))
            st = lp_fail(LP_ERR_FORMAT, "%s: not a ResNet state dict: no layerN.* tensors (the file's first tensor: %s); pass the --arch "
                         "the weights were saved from", path, raw.count ? raw.items[0].name : "none");
        if (o->arch && strcmp(o->arch, "mobilenet_v2") && strcmp(o->arch, "efficientnet_b0") && !timm) fm = NULL;
        if (!st && o->arch && (!strcmp(o->arch, "mobilenet_v2") || !strcmp(o->arch, "efficientnet_b0")) && !fm) {
            /* not recognised by its names: a part of one (kept as it is), or another model's */
            fm = o->arch;
            if (resnet_names(&raw))
                st = lp_fail(LP_ERR_FORMAT, "%s: the weights are a ResNet's (layerN.* names), not %s's as asked for", path, o->arch);
            else if (!has_name(&raw, "features.0.0.weight"))
                st = lp_fail(LP_ERR_FORMAT, "%s: not %s's state dict: no tensor features.0.0.weight, torchvision's first convolution "
                             "(the file's first tensor: %s); pass the --arch the weights were saved from", path, o->arch,
                             raw.count ? raw.items[0].name : "none");
        }
        /* torchvision's graphs (ResNets, MobileNetV2, EfficientNet-B0) keep their state dict's names */
        /* loupe's own test model (a tiny checkpoint): already loupe's names, as they are */
        const char *own = st ? NULL : lp_tensor_list_get_meta(&raw, "arch");
        if (own && !strcmp(own, "tiny") && (!o->arch || !strcmp(o->arch, "tiny"))) {
            *out = raw;
            return LP_OK;
        }
        if (!st) st = resnet || fm ? resnet_state_dict(path, &raw, out, timm) : safetensors_map(path, o, &raw, out);
        if (!st && resnet) st = resnet_meta(path, o, out);
        if (!st && fm && !resnet) st = lp_weights_features_meta(path, o, fm, out);
        lp_tensor_list_free(&raw);
    } else if (n >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) {
        st = lp_fail(LP_ERR_FORMAT, "%s: a PyTorch .pth/.pt (zip) checkpoint: loupe reads safetensors, not pickles; in Python save the state dict as "
                     "safetensors (safetensors.torch.save_file(torch.load(F), 'out.safetensors')) or export the model to ONNX", path);
    } else if (n >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) {
        st = lp_fail(LP_ERR_FORMAT, "%s: a Python pickle (old PyTorch .pth): loupe reads safetensors, not pickles; save the state dict as safetensors "
                     "or export the model to ONNX", path);
    } else {
        st = lp_onnx_read(path, o, &L, out, &resnet);
        if (st == LP_ERR_FORMAT && strstr(lp_errmsg(), "not an ONNX model"))
            st = lp_fail(LP_ERR_FORMAT, "%s: unknown weights format: not HDF5 (Keras .h5), not safetensors and not an ONNX model", path);
        bool t;
        const char *fm = st || !resnet ? NULL : features_model(out, &t); /* the ONNX walkers set the arch of theirs */
        if (!st && fm) st = lp_weights_features_meta(path, o, fm, out);
        else if (!st && resnet) st = resnet_meta(path, o, out);
        else if (!st) st = lp_weights_assemble(path, &L, o, "onnx", "torch", out);
    }
    lp_wlayers_free(&L);
    if (st) lp_tensor_list_free(out);
    return st;
}

const char *lp_weights_preprocess(const lp_tensor_list *w) { return w ? lp_tensor_list_get_meta(w, "preprocess") : NULL; }

/* ---- loading into a net ------------------------------------------------- */
static lp_status names_add(char **s, size_t *len, size_t *cap, const char *name) {
    size_t need = *len + strlen(name) + 2;
    if (need > *cap) {
        size_t c = need * 2;
        char *q = realloc(*s, c);
        if (!q) return lp_fail(LP_ERR_NOMEM, "out of memory");
        *s = q;
        *cap = c;
    }
    *len += (size_t)sprintf(*s + *len, "%s%s", *len ? "," : "", name);
    return LP_OK;
}

/* head.N.weight indices (rank 2) of a list, ascending; returns the count. */
static int file_head_indices(const lp_tensor_list *w, int *idx, int max) {
    int n = 0;
    for (int i = 0; i < w->count; i++) {
        const char *rest;
        int k;
        if (!parse_index(w->items[i].name, "head.", &k, &rest) || strcmp(rest, "weight") || w->items[i].t.ndim != 2 || n == max) continue;
        int j = n++;
        for (; j > 0 && idx[j - 1] > k; j--) idx[j] = idx[j - 1];
        idx[j] = k;
    }
    return n;
}

lp_status lp_weights_load_into(lp_net *net, const lp_tensor_list *w, int *loaded, char **skipped, char **missing) {
    if (loaded) *loaded = 0;
    if (skipped) *skipped = NULL;
    if (missing) *missing = NULL;
    const lp_net_config *cfg = lp_net_get_config(net);
    const char *warch = lp_tensor_list_get_meta(w, "arch");
    if (warch && strcmp(warch, cfg->arch))
        return lp_fail(LP_ERR_SHAPE, "the weights are for %s but the model is %s; use the weights' architecture (--model %s)", warch, cfg->arch, warch);
    int np = lp_net_param_count(net);
    /* head layers numbered otherwise than the net's: matched by order */
    int fidx[MAX_DENSE], nidx[MAX_DENSE], nf = file_head_indices(w, fidx, MAX_DENSE), nn = 0;
    for (int p = 0; p < np && nn < MAX_DENSE; p++) {
        const char *rest;
        int k;
        if (parse_index(lp_net_param_name(net, p), "head.", &k, &rest) && !strcmp(rest, "weight")) nidx[nn++] = k;
    }
    bool renumber = nf == nn && nf > 0 && memcmp(fidx, nidx, sizeof(int) * (size_t)nf) != 0;

    lp_tensor_list sel;
    lp_tensor_list_init(&sel);
    char *sk = NULL, *names = NULL;
    size_t sk_len = 0, sk_cap = 0;
    lp_status st = LP_OK;
    char(*target)[64] = lp_calloc((size_t)w->count + 1, sizeof *target);
    bool *match = lp_calloc((size_t)w->count + 1, sizeof *match);
    if (!target || !match) {
        free(target);
        free(match);
        return LP_ERR_NOMEM;
    }
    for (int i = 0; i < w->count && !st; i++) {
        const char *name = w->items[i].name, *rest;
        int k;
        snprintf(target[i], sizeof target[i], "%s", name);
        if (renumber && parse_index(name, "head.", &k, &rest))
            for (int j = 0; j < nf; j++)
                if (fidx[j] == k) snprintf(target[i], sizeof target[i], "head.%d.%s", nidx[j], rest);
        int p;
        for (p = 0; p < np; p++)
            if (!strcmp(lp_net_param_name(net, p), target[i])) break;
        /* the backbone's tensors must all fit (a head's may be left out) */
        bool backbone = !strncmp(name, "features.", 9) ||
                        (!strncmp(cfg->arch, "resnet", 6) && strncmp(name, "fc.", 3) && strncmp(name, "head.", 5) &&
                         !lp_checkpoint_is_state_tensor(name));
        const lp_tensor *t = &w->items[i].t;
        match[i] = p < np;
        if (match[i]) {
            int64_t sh[4];
            int nd = lp_net_param_shape(net, p, sh);
            match[i] = nd == t->ndim;
            for (int j = 0; match[i] && j < nd; j++) match[i] = sh[j] == t->shape[j];
            if (!match[i] && backbone) {
                char s1[64], s2[64];
                lp_tensor e = {.ndim = nd};
                memcpy(e.shape, sh, sizeof(int64_t) * (size_t)nd);
                st = lp_fail(LP_ERR_SHAPE, "weights tensor %s has shape %s but the model's is %s", name, lp_shape_str(t, s1, sizeof s1),
                             lp_shape_str(&e, s2, sizeof s2));
            }
        } else if (backbone) {
            st = lp_fail(LP_ERR_SHAPE, "weights tensor %s has no place in the model (%s): pass the --model (and --top, --head) the weights were made for", name, cfg->arch);
        }
    }
    /* a layer is kept whole: a bias that fits is no use without its weight */
    for (int i = 0; i < w->count && !st; i++) {
        const char *dot = strrchr(target[i], '.');
        if (match[i] || !dot) continue;
        size_t n = (size_t)(dot - target[i]) + 1;
        for (int j = 0; j < w->count; j++)
            if (j != i && !strncmp(target[j], target[i], n) && !strchr(target[j] + n, '.')) match[j] = false;
    }
    for (int i = 0; i < w->count && !st; i++) {
        const char *name = w->items[i].name;
        if (!match[i]) {
            if (!lp_checkpoint_is_state_tensor(name)) st = names_add(&sk, &sk_len, &sk_cap, name);
            continue;
        }
        /* shallow view: sel does not own the data */
        if (sel.count == sel.cap) {
            int c2 = sel.cap ? sel.cap * 2 : 64;
            lp_named_tensor *q = realloc(sel.items, (size_t)c2 * sizeof *q);
            if (!q) {
                st = lp_fail(LP_ERR_NOMEM, "out of memory");
                break;
            }
            sel.items = q;
            sel.cap = c2;
        }
        sel.items[sel.count].name = target[i];
        sel.items[sel.count].t = w->items[i].t;
        sel.count++;
    }
    if (!st) st = lp_net_load_state_dict(net, &sel, false, &names);
    if (!st && loaded) *loaded = sel.count;
    free(sel.items); /* views only */
    free(target);
    free(match);
    if (!st && skipped) *skipped = sk;
    else free(sk);
    if (!st && missing) *missing = names;
    else free(names);
    return st;
}

/* ---- convert ------------------------------------------------------------- */
lp_weights_convert_params lp_weights_convert_default_params(void) {
    lp_weights_convert_params p;
    memset(&p, 0, sizeof p);
    return p;
}

/* "a,b,c" as a JSON array of names. */
static lp_status classes_json(const char *list, int want, const char *path, char **out) {
    *out = NULL;
    cJSON *a = cJSON_CreateArray();
    if (!a) return lp_fail(LP_ERR_NOMEM, "out of memory");
    int n = 0;
    lp_status st = LP_OK;
    for (const char *s = list; !st;) {
        size_t k = strcspn(s, ",");
        char name[256];
        if (k == 0 || k >= sizeof name) st = lp_fail(LP_ERR_ARG, "--classes '%s': class %d is %s", list, n + 1, k ? "too long" : "empty");
        else {
            memcpy(name, s, k);
            name[k] = 0;
            bool twice = false; /* as train refuses it: two outputs of one name cannot be told apart */
            for (const cJSON *e = a->child; e && !twice; e = e->next) twice = !strcmp(e->valuestring, name);
            if (twice) st = lp_fail(LP_ERR_ARG, "--classes '%s': class '%s' given twice", list, name);
            else if (!cJSON_AddItemToArray(a, cJSON_CreateString(name))) st = lp_fail(LP_ERR_NOMEM, "out of memory");
            n++;
        }
        if (!s[k]) break;
        s += k + 1;
    }
    if (!st && n != want)
        st = lp_fail(LP_ERR_ARG, "--classes names %d class%s but %s has %d output%s", n, n == 1 ? "" : "es", path, want, want == 1 ? "" : "s");
    if (!st && !(*out = cJSON_PrintUnformatted(a))) st = lp_fail(LP_ERR_NOMEM, "out of memory");
    cJSON_Delete(a);
    return st;
}

/* Builds the net the metadata describes (its weights stay untouched, so no
 * memory) and checks that the tensors are exactly its parameters: the
 * checkpoint then loads for predict and evaluate. */
static lp_status check_loadable(const char *path, const lp_tensor_list *w) {
    lp_net_config cfg;
    lp_status st = lp_checkpoint_config_from_meta(w, path, &cfg);
    if (st) return st;
    char what[400];
    snprintf(what, sizeof what, "%s, %s%s, input %dx%d, %d classes", cfg.arch, !strcmp(cfg.top, "keep") ? "torchvision's classifier" : "head ",
             !strcmp(cfg.top, "keep") ? "" : cfg.head, cfg.in_h, cfg.in_w, cfg.num_classes);
    lp_net *net = NULL;
    if ((st = lp_net_create_ex(&cfg, false, &net))) return lp_fail_context(st, "%s: the model it describes (%s) cannot be built", path, what);
    char s1[64], s2[64];
    for (int p = 0; p < lp_net_param_count(net) && !st; p++) {
        const char *name = lp_net_param_name(net, p);
        lp_named_tensor *t = lp_tensor_list_find(w, name);
        int64_t sh[4];
        lp_tensor e = {.ndim = lp_net_param_shape(net, p, sh)};
        memcpy(e.shape, sh, sizeof sh);
        bool same = t && t->t.ndim == e.ndim;
        for (int j = 0; same && j < e.ndim; j++) same = t->t.shape[j] == e.shape[j];
        if (!t)
            st = lp_fail(LP_ERR_SHAPE, "%s: the model (%s) has a layer %s %s that the file does not have", path, what, name, lp_shape_str(&e, s1, sizeof s1));
        else if (!same)
            st = lp_fail(LP_ERR_SHAPE, "%s: %s has shape %s but the model (%s) needs %s", path, name, lp_shape_str(&t->t, s1, sizeof s1), what,
                         lp_shape_str(&e, s2, sizeof s2));
    }
    for (int i = 0; i < w->count && !st; i++) {
        const char *name = w->items[i].name;
        bool found = false;
        for (int p = 0; p < lp_net_param_count(net) && !found; p++) found = !strcmp(lp_net_param_name(net, p), name);
        if (!found && !lp_checkpoint_is_state_tensor(name))
            st = lp_fail(LP_ERR_SHAPE, "%s: tensor %s has no place in the model (%s)", path, name, what);
    }
    lp_net_free(net);
    return st;
}

lp_status lp_weights_convert_ex(const lp_weights_convert_params *p, lp_weights_info *info) {
    lp_clear_error();
    if (!p || !p->in || !p->out) return lp_fail(LP_ERR_ARG, "convert: an input and an output file are needed");
    if (p->in_height < 0 || p->in_width < 0 || (p->in_height > 0) != (p->in_width > 0) || p->in_height > 65536 || p->in_width > 65536)
        return lp_fail(LP_ERR_ARG, "convert: bad input size %dx%d (WxH)", p->in_width, p->in_height);
    lp_weights_opts o = {.arch = p->arch, .head = p->head, .in_h = p->in_height, .in_w = p->in_width};
    lp_tensor_list w;
    lp_status st = lp_weights_read_ex(p->in, &o, &w);
    if (st) return st;
    const char *v, *in = p->in;
    const char *nc_s = lp_tensor_list_get_meta(&w, "num_classes");
    int nc = nc_s ? atoi(nc_s) : 0;
    if ((v = lp_tensor_list_get_meta(&w, "head_unknown")))
        st = lp_fail(LP_ERR_FORMAT, "%s: %s", in, v);
    const char *head = lp_tensor_list_get_meta(&w, "head"), *top = lp_tensor_list_get_meta(&w, "top");
    if (!st && p->head && *p->head && head && strcmp(head, p->head))
        st = lp_fail(LP_ERR_ARG, "--head '%s' differs from the head '%s' that %s has", p->head, head, in);
    /* a model whose classifier is its own (a ResNet's fc, MobileNetV2's or EfficientNet's classifier.1) has no head to name */
    if (!st && p->head && *p->head && !head && top && !strcmp(top, "keep"))
        st = lp_fail(LP_ERR_ARG, "--head '%s': %s keeps its own classifier (top keep), which --head does not describe; leave --head out",
                     p->head, in);
    /* a base alone: --head describes a file's own head, and a new one is train's to add */
    else if (!st && p->head && *p->head && !head)
        st = lp_fail(LP_ERR_ARG, "--head '%s': %s is a convolutional base without a head, which --head would describe; leave --head "
                     "out (train --weights %s --head %s adds that head, initialised new)", p->head, in, in, p->head);
    char buf[64];
    if (!st && p->in_height) {
        snprintf(buf, sizeof buf, "%dx%d", p->in_height, p->in_width);
        st = lp_tensor_list_set_meta(&w, "input_size", buf);
    }
    if (!st && nc && !lp_tensor_list_get_meta(&w, "input_size") && (v = lp_tensor_list_get_meta(&w, "top")) && !strcmp(v, "keep"))
        st = lp_tensor_list_set_meta(&w, "input_size", "224x224"); /* checkpoints converted before the size was recorded */
    if (!st && p->classes) {
        char *js = NULL;
        if (!nc) st = lp_fail(LP_ERR_ARG, "--classes given but %s has no classifier (a convolutional base alone)", in);
        else st = classes_json(p->classes, nc, in, &js);
        if (!st) st = lp_tensor_list_set_meta(&w, "classes", js);
        free(js);
    } else if (!st && nc == 1000 && !lp_tensor_list_get_meta(&w, "classes")) {
        char *js = NULL;
        st = lp_imagenet_classes_json(&js);
        if (!st) st = lp_tensor_list_set_meta(&w, "classes", js);
        free(js);
    }
    if (!st) st = lp_tensor_list_set_meta(&w, "format", "loupe-checkpoint-1");
    if (!st) st = lp_tensor_list_set_meta(&w, "loupe_version", LOUPE_VERSION);
    const char *slash = strrchr(in, '/');
    if (!st) st = lp_tensor_list_set_meta(&w, "converted_file", slash ? slash + 1 : in);
    if (!st && !lp_tensor_list_get_meta(&w, "in_channels")) st = lp_tensor_list_set_meta(&w, "in_channels", "3");
    if (!st && nc) st = check_loadable(in, &w);
    if (!st) st = lp_safetensors_write(p->out, &w);
    if (!st && info) {
        memset(info, 0, sizeof *info);
        /* every reader of another format records its own; a loupe checkpoint has none */
        snprintf(info->source, sizeof info->source, "%s", (v = lp_tensor_list_get_meta(&w, "source")) ? v : "loupe");
        if ((v = lp_tensor_list_get_meta(&w, "arch"))) snprintf(info->arch, sizeof info->arch, "%s", v);
        if ((v = lp_tensor_list_get_meta(&w, "top"))) snprintf(info->top, sizeof info->top, "%s", v);
        if ((v = lp_tensor_list_get_meta(&w, "preprocess"))) snprintf(info->preprocess, sizeof info->preprocess, "%s", v);
        if ((v = lp_tensor_list_get_meta(&w, "head"))) snprintf(info->head, sizeof info->head, "%s", v);
        if ((v = lp_tensor_list_get_meta(&w, "input_size"))) sscanf(v, "%dx%d", &info->in_height, &info->in_width);
        info->num_classes = nc;
        info->num_tensors = w.count;
        for (int i = 0; i < w.count; i++) /* as summary counts: batch norm's step counters are not parameters */
            if (w.items[i].t.dtype != LP_I64 && w.items[i].t.dtype != LP_U8) info->num_params += lp_tensor_numel(&w.items[i].t);
    }
    lp_tensor_list_free(&w);
    return st;
}

lp_status lp_weights_convert(const char *in, const char *out, const char *arch_hint, lp_weights_info *info) {
    lp_clear_error();
    lp_weights_convert_params p = lp_weights_convert_default_params();
    p.in = in;
    p.out = out;
    p.arch = arch_hint;
    return lp_weights_convert_ex(&p, info);
}

/* ---- preprocessing mismatch warning ------------------------------------------
 * Each mode maps a pixel p (0..255, RGB) to a*(p - m_c) in channel order bgr?
 * The input scale is measured as the RMS of the preprocessed value over an
 * ImageNet-like pixel distribution (per-channel mean 255*[0.485,0.456,0.406],
 * std 255*[0.229,0.224,0.225]): caffe ~57.5, torch ~1.0, rescale ~0.50,
 * tf ~0.78, none ~127. */
typedef struct pre_mode {
    const char *name, *desc;
    double a, m[3];
    bool bgr;
} pre_mode;

static const pre_mode pre_modes[] = {
    {"caffe", "BGR, 0..255 minus the ImageNet mean", 1.0, {123.68, 116.779, 103.939}, true},
    {"torch", "RGB, x/255 minus mean [0.485,0.456,0.406] divided by std [0.229,0.224,0.225]", 1.0 / (255.0 * 0.226), {123.675, 116.28, 103.53}, false},
    {"rescale", "RGB, x/255 in 0..1", 1.0 / 255.0, {0, 0, 0}, false},
    {"tf", "RGB, x/127.5 - 1 in -1..1", 1.0 / 127.5, {127.5, 127.5, 127.5}, false},
    {"none", "RGB, raw 0..255", 1.0, {0, 0, 0}, false},
};

static const pre_mode *pre_find(const char *name) {
    for (size_t i = 0; name && i < sizeof pre_modes / sizeof pre_modes[0]; i++)
        if (!strcmp(pre_modes[i].name, name)) return &pre_modes[i];
    return NULL;
}

static double pre_rms(const pre_mode *p) {
    static const double mean[3] = {0.485 * 255, 0.456 * 255, 0.406 * 255}, sd[3] = {0.229 * 255, 0.224 * 255, 0.225 * 255};
    double s = 0;
    for (int c = 0; c < 3; c++) {
        double dm = mean[c] - p->m[c];
        s += p->a * p->a * (dm * dm + sd[c] * sd[c]);
    }
    return sqrt(s / 3);
}

int lp_weights_preprocess_warning(const char *expected, const char *chosen, char *buf, size_t n) {
    if (n) buf[0] = 0;
    if (!expected || !chosen || !strcmp(expected, chosen)) return 0;
    const pre_mode *e = pre_find(expected), *c = pre_find(chosen);
    if (!e || !c) return snprintf(buf, n, "the weights expect preprocess '%s' but '%s' was chosen", expected, chosen);
    double re = pre_rms(e), rc = pre_rms(c), ratio = re > rc ? re / rc : rc / re;
    char scale[160] = "", order[160] = "", centre[96] = "";
    if (ratio >= 1.5)
        snprintf(scale, sizeof scale, "; inputs are ~%.0fx too %s (typical magnitude %.2g vs the %.2g the weights were trained on)", ratio,
                 rc < re ? "small" : "large", rc, re);
    else if (ratio > 1.05)
        snprintf(scale, sizeof scale, "; input scale differs by %.2fx", ratio);
    if (e->bgr != c->bgr) snprintf(order, sizeof order, "; channels are in the wrong order (%s given, %s expected)", c->bgr ? "BGR" : "RGB", e->bgr ? "BGR" : "RGB");
    bool ec = e->m[0] != 0, cc = c->m[0] != 0;
    if (ec && !cc) snprintf(centre, sizeof centre, "; inputs are not mean-centred");
    return snprintf(buf, n, "the weights expect preprocess '%s' (%s) but '%s' (%s) was chosen%s%s%s; use --preprocess %s (or auto)", e->name, e->desc,
                    c->name, c->desc, scale, order, centre, e->name);
}
