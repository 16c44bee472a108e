/* io/weights: format detection, name mapping to torchvision's VGG names,
 * validation (architecture, shapes, NaN/Inf), conversion to a loupe checkpoint
 * and the preprocessing warning. Format readers: keras_h5.c, onnx.c; the
 * safetensors reader is src/io/safetensors.c. */
#include "weights.h"
#include "nn/nn.h"
#include "safetensors.h"
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
static lp_status check_finite(const char *path, const char *ours, const char *src, const lp_tensor *t) {
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

static lp_status zero_bias(lp_tensor *b, int64_t n) {
    lp_status st = lp_tensor_alloc(b, LP_F32, 1, &n);
    if (!st) memset(b->data, 0, (size_t)n * sizeof(float));
    return st;
}

lp_status lp_weights_assemble(const char *path, lp_wlayers *L, const char *arch_hint, const char *source, const char *preprocess,
                              lp_tensor_list *out) {
    char s1[64], s2[64];
    int nc = 0, nd = 0, first_dense = -1;
    const char *first_conv = NULL, *last_conv = NULL;
    for (int i = 0; i < L->count; i++) {
        if (L->items[i].kind == LP_WLAYER_CONV) {
            if (first_dense >= 0)
                return lp_fail(LP_ERR_FORMAT, "%s: conv layer %s comes after dense layer %s: not a VGG", path, L->items[i].src,
                               L->items[first_dense].src);
            if (!first_conv) first_conv = L->items[i].src;
            last_conv = L->items[i].src;
            nc++;
        } else {
            if (first_dense < 0) first_dense = i;
            nd++;
        }
    }
    const char *want = arch_hint && *arch_hint ? arch_hint : NULL;
    if (want && strcmp(want, "vgg16") && strcmp(want, "vgg19"))
        return lp_fail(LP_ERR_ARG, "unknown architecture '%s' (expected vgg16 or vgg19)", want);
    const char *what = !want ? "VGG16 (13 conv layers) or VGG19 (16)" : !strcmp(want, "vgg16") ? "VGG16 (13 conv layers)" : "VGG19 (16 conv layers)";

    /* not a VGG at all: ResNet, Inception, batch-norm VGG, ... */
    if (L->foreign_count > 0) {
        int convs = nc + L->foreign_conv_count;
        for (int i = 0; i < L->count; i++)
            if (L->items[i].kind == LP_WLAYER_CONV) add_example(L->conv_examples, &L->n_conv_examples, L->items[i].src);
        char ce[320], oe[320];
        examples_str(L->conv_examples, L->n_conv_examples, ce, sizeof ce);
        examples_str(L->examples, L->n_examples, oe, sizeof oe);
        if (L->foreign_bn && (convs == 13 || convs == 16 || convs == 8 || convs == 10))
            return lp_fail(LP_ERR_FORMAT, "%s: file has batch-norm tensors (names like %s): a batch-norm VGG (vgg16_bn) is not supported; use plain %s weights",
                           path, oe, want ? want : "vgg16/vgg19");
        return lp_fail(LP_ERR_FORMAT, "%s: file has %d conv layers%s%s%s and %d other weights%s%s%s: not a %s", path, convs, convs ? " (names like " : "", ce,
                       convs ? ")" : "", L->foreign_count - L->foreign_conv_count, L->n_examples ? " (names like " : "", oe, L->n_examples ? ")" : "", what);
    }
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
        return lp_fail(LP_ERR_FORMAT, "%s: file has %d conv layers: a %s, not a %s; use --arch %s", path, nc, nc == 13 ? "VGG16" : "VGG19",
                       !strcmp(want, "vgg16") ? "VGG16" : "VGG19", found);
    vgg_arch A;
    arch_get(found, &A);

    /* top: none, or fc1 (25088 -> H1), fc2 (H1 -> H2), predictions (H2 -> K) */
    if (nd != 0 && nd != 3)
        return lp_fail(LP_ERR_FORMAT, "%s: file has %d dense layer%s (first %s): VGG's top has 3 (fc1, fc2, predictions); "
                       "a custom head cannot be imported, save the convolutional base only (include_top=False)",
                       path, nd, nd == 1 ? "" : "s", L->items[first_dense].src);

    lp_status st = LP_OK;
    int k = 0, d = 0;
    int64_t prev_out = FLAT_IN, num_classes = 0;
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
            int idx = classifier_index[d];
            if (y->index >= 0 && y->index != idx)
                return lp_fail(LP_ERR_FORMAT, "%s: dense %s is classifier.%d but VGG's dense #%d is classifier.%d", path, y->src, y->index, d + 1, idx);
            snprintf(ours, sizeof ours, "classifier.%d.weight", idx);
            if (y->w.ndim != 2 || y->w.shape[1] != prev_out)
                return lp_fail(LP_ERR_SHAPE, "%s: %s has shape %s, expected (out, %lld) [out, in] for %s (%s)", path, y->src,
                               y->src_shape[0] ? y->src_shape : lp_shape_str(&y->w, s1, sizeof s1), (long long)prev_out, ours,
                               d == 0 ? "fc1 takes the 512x7x7 feature map, flattened" : d == 1 ? "fc2" : "predictions");
            prev_out = y->w.shape[0];
            if (d == 2) num_classes = prev_out;
            d++;
        }
        int64_t nout = y->w.shape[0];
        if (!y->b.data) st = zero_bias(&y->b, nout);
        else if (y->b.ndim != 1 || y->b.shape[0] != nout)
            return lp_fail(LP_ERR_SHAPE, "%s: bias of %s has shape %s, expected (%lld)", path, y->src, lp_shape_str(&y->b, s1, sizeof s1),
                           (long long)nout);
        if (!st) st = check_finite(path, ours, y->src, &y->w);
        if (!st) {
            char bn[200];
            if (y->bsrc[0]) snprintf(bn, sizeof bn, "%s", y->bsrc);
            else snprintf(bn, sizeof bn, "bias of %s", y->src);
            ours[strlen(ours) - strlen("weight")] = 0;
            strcat(ours, "bias");
            st = check_finite(path, ours, bn, &y->b);
        }
    }
    if (st) return st;
    /* move into out with our names */
    k = d = 0;
    for (int i = 0; i < L->count && !st; i++) {
        lp_wlayer *y = &L->items[i];
        const char *fmt = y->kind == LP_WLAYER_CONV ? "features.%d.%s" : "classifier.%d.%s";
        int idx = y->kind == LP_WLAYER_CONV ? A.index[k++] : classifier_index[d++];
        st = add_named(out, fmt, idx, "weight", &y->w);
        if (!st) st = add_named(out, fmt, idx, "bias", &y->b);
    }
    if (!st) st = lp_tensor_list_set_meta(out, "source", source);
    if (!st && preprocess) st = lp_tensor_list_set_meta(out, "preprocess", preprocess);
    if (!st) st = lp_tensor_list_set_meta(out, "arch", found);
    if (!st) st = lp_tensor_list_set_meta(out, "top", nd ? "keep" : "none");
    if (!st && num_classes) {
        char nb[32];
        snprintf(nb, sizeof nb, "%lld", (long long)num_classes);
        st = lp_tensor_list_set_meta(out, "num_classes", nb);
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

static lp_status safetensors_map(const char *path, const char *arch_hint, lp_tensor_list *in, lp_tensor_list *out) {
    const char *fmt = lp_tensor_list_get_meta(in, "format");
    bool loupe = fmt && strncmp(fmt, "loupe-checkpoint", 16) == 0;
    bool timm = false;
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
        } else if (!strncmp(name, "pre_logits.fc1.", 15) || !strncmp(name, "pre_logits.fc2.", 15) || !strncmp(name, "head.fc.", 8)) {
            kind = LP_WLAYER_DENSE;
            timm = true;
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
    /* sort: convs by features index, denses by classifier index */
    for (int p = 0; p < np && !st; p++) {
        if (!pend[p].w && L.foreign_count > 0) {
            lp_wlayers_note_foreign(&L, pend[p].b->name, false); /* bias of a batch norm: reported with it */
            continue;
        }
        if (!pend[p].w) {
            st = lp_fail(LP_ERR_FORMAT, "%s: %s has a bias (%s) but no weight; the file is incomplete", path,
                         pend[p].kind == LP_WLAYER_CONV ? "features" : "classifier", pend[p].b->name);
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
        if (!st) st = lp_wlayers_push(&L, pend[p].kind, src, sshape, pend[p].kind == LP_WLAYER_CONV || !timm ? pend[p].index : -1, &w,
                                      pend[p].b || b.data ? &b : NULL, pend[p].b ? pend[p].b->name : NULL);
        lp_tensor_free(&w);
        lp_tensor_free(&b);
    }
    if (!st && L.count) qsort(L.items, (size_t)L.count, sizeof *L.items, cmp_layer_index);
    const char *pre = loupe ? lp_tensor_list_get_meta(in, "preprocess") : "torch";
    if (!st) st = lp_weights_assemble(path, &L, arch_hint, loupe ? "loupe" : timm ? "timm" : "torchvision", pre, out);
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
            if (!st) st = lp_tensor_list_add(out, keep[i], &t);
            lp_tensor_free(&t);
        }
    }
    lp_wlayers_free(&L);
    free(pend);
    free(keep);
    return st;
}

/* ---- entry point ----------------------------------------------------------- */
lp_status lp_weights_read(const char *path, const char *arch_hint, lp_tensor_list *out) {
    lp_tensor_list_init(out);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lp_fail(LP_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    uint8_t head[16] = {0};
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lp_fail(LP_ERR_IO, "%s: not a regular file", path);
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
    if (hdf5) {
        st = lp_keras_h5_read_layers(path, &L);
        if (!st) st = lp_weights_assemble(path, &L, arch_hint, "keras-h5", "caffe", out);
    } else if (lp_weights_is_safetensors(head, (size_t)n, (uint64_t)sb.st_size)) {
        lp_tensor_list raw;
        lp_tensor_list_init(&raw);
        st = lp_safetensors_read(path, &raw);
        if (!st) st = safetensors_map(path, arch_hint, &raw, out);
        lp_tensor_list_free(&raw);
    } else if (n >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) {
        st = lp_fail(LP_ERR_FORMAT, "%s: a PyTorch .pth/.pt (zip) checkpoint: loupe reads safetensors, not pickles; in Python save the state dict as "
                     "safetensors (safetensors.torch.save_file(torch.load(F), 'out.safetensors')) or export the model to ONNX", path);
    } else if (n >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) {
        st = lp_fail(LP_ERR_FORMAT, "%s: a Python pickle (old PyTorch .pth): loupe reads safetensors, not pickles; save the state dict as safetensors "
                     "or export the model to ONNX", path);
    } else {
        st = lp_onnx_read_layers(path, &L);
        if (st == LP_ERR_FORMAT && strstr(lp_errmsg(), "not an ONNX model"))
            st = lp_fail(LP_ERR_FORMAT, "%s: unknown weights format: not HDF5 (Keras .h5), not safetensors and not an ONNX model", path);
        if (!st) st = lp_weights_assemble(path, &L, arch_hint, "onnx", "torch", out);
    }
    lp_wlayers_free(&L);
    if (st) lp_tensor_list_free(out);
    return st;
}

const char *lp_weights_preprocess(const lp_tensor_list *w) { return w ? lp_tensor_list_get_meta(w, "preprocess") : NULL; }

/* ---- loading into a net ------------------------------------------------- */
lp_status lp_weights_load_into(lp_net *net, const lp_tensor_list *w, char **skipped) {
    if (skipped) *skipped = NULL;
    lp_tensor_list sel;
    lp_tensor_list_init(&sel);
    size_t cap = 256, len = 0;
    char *sk = lp_malloc(cap);
    if (!sk) return LP_ERR_NOMEM;
    sk[0] = 0;
    lp_status st = LP_OK;
    int np = lp_net_param_count(net);
    for (int i = 0; i < w->count && !st; i++) {
        const char *name = w->items[i].name;
        int p;
        for (p = 0; p < np; p++)
            if (!strcmp(lp_net_param_name(net, p), name)) break;
        bool backbone = !strncmp(name, "features.", 9);
        const lp_tensor *t = &w->items[i].t;
        bool match = p < np;
        if (match) {
            int64_t sh[4];
            int nd = lp_net_param_shape(net, p, sh);
            match = nd == t->ndim;
            for (int j = 0; match && j < nd; j++) match = sh[j] == t->shape[j];
            if (!match && backbone) {
                char s1[64], s2[64];
                lp_tensor e = {.ndim = nd};
                memcpy(e.shape, sh, sizeof(int64_t) * (size_t)nd);
                st = lp_fail(LP_ERR_SHAPE, "weights tensor %s has shape %s but the model's is %s", name, lp_shape_str(t, s1, sizeof s1),
                             lp_shape_str(&e, s2, sizeof s2));
                break;
            }
        } else if (backbone) {
            st = lp_fail(LP_ERR_SHAPE, "weights tensor %s has no place in the model (%s)", name, lp_net_get_config(net)->arch);
            break;
        }
        if (!match) {
            size_t need = len + strlen(name) + 3;
            if (need > cap) {
                char *q = realloc(sk, cap = need * 2);
                if (!q) {
                    st = lp_fail(LP_ERR_NOMEM, "out of memory");
                    break;
                }
                sk = q;
            }
            len += (size_t)sprintf(sk + len, "%s%s", len ? "," : "", name);
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
        sel.items[sel.count].name = (char *)name;
        sel.items[sel.count].t = *t;
        sel.count++;
    }
    if (!st) {
        char *missing = NULL;
        st = lp_net_load_state_dict(net, &sel, false, &missing);
        free(missing);
    }
    free(sel.items); /* views only */
    if (!st && skipped && len) *skipped = sk;
    else free(sk);
    return st;
}

/* ---- convert ------------------------------------------------------------- */
lp_status lp_weights_convert(const char *in, const char *out, const char *arch_hint, lp_weights_info *info) {
    lp_tensor_list w;
    lp_status st = lp_weights_read(in, arch_hint, &w);
    if (st) return st;
    st = lp_tensor_list_set_meta(&w, "format", "loupe-checkpoint-1");
    if (!st) st = lp_tensor_list_set_meta(&w, "loupe_version", LOUPE_VERSION);
    const char *slash = strrchr(in, '/');
    if (!st) st = lp_tensor_list_set_meta(&w, "converted_file", slash ? slash + 1 : in);
    if (!st && !lp_tensor_list_get_meta(&w, "in_channels")) st = lp_tensor_list_set_meta(&w, "in_channels", "3");
    if (!st) st = lp_safetensors_write(out, &w);
    if (!st && info) {
        memset(info, 0, sizeof *info);
        const char *v;
        if ((v = lp_tensor_list_get_meta(&w, "source"))) snprintf(info->source, sizeof info->source, "%s", v);
        if ((v = lp_tensor_list_get_meta(&w, "arch"))) snprintf(info->arch, sizeof info->arch, "%s", v);
        if ((v = lp_tensor_list_get_meta(&w, "top"))) snprintf(info->top, sizeof info->top, "%s", v);
        if ((v = lp_tensor_list_get_meta(&w, "preprocess"))) snprintf(info->preprocess, sizeof info->preprocess, "%s", v);
        if ((v = lp_tensor_list_get_meta(&w, "num_classes"))) info->num_classes = atoi(v);
        info->num_tensors = w.count;
        for (int i = 0; i < w.count; i++) info->num_params += lp_tensor_numel(&w.items[i].t);
    }
    lp_tensor_list_free(&w);
    return st;
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
