/* State dict in/out (torchvision names) and the Keras-like summary. */
#include "nn_impl.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lp_status lp_net_state_dict(lp_net *net, lp_tensor_list *out) {
    lp_status sp = lp_net_store_plain(net);
    if (sp) return sp;
    for (int i = 0; i < net->nparams; i++) {
        lp_param *p = &net->params[i];
        lp_tensor t;
        lp_status st = lp_tensor_alloc(&t, p->int64 ? LP_I64 : LP_F32, p->ndim, p->shape);
        if (st) return st;
        if (p->int64) /* a count kept as a float (exact to 2^24) */
            for (size_t j = 0; j < p->numel; j++) ((int64_t *)t.data)[j] = (int64_t)net->weights[p->offset + j];
        else memcpy(t.data, net->weights + p->offset, p->numel * sizeof(float));
        if ((st = lp_tensor_list_add(out, p->name, &t))) {
            lp_tensor_free(&t);
            return st;
        }
    }
    return LP_OK;
}

static int find_param(const lp_net *net, const char *name) {
    for (int i = 0; i < net->nparams; i++)
        if (!strcmp(net->params[i].name, name)) return i;
    return -1;
}

static void shape_of(const lp_param *p, char *buf, size_t n) {
    lp_tensor t = {.ndim = p->ndim};
    for (int i = 0; i < p->ndim; i++) t.shape[i] = p->shape[i];
    lp_shape_str(&t, buf, n);
}

lp_status lp_net_load_state_dict(lp_net *net, const lp_tensor_list *in, bool strict, char **missing) {
    if (missing) *missing = NULL;
    lp_status sp = lp_net_store_plain(net);
    if (sp) return sp;
    char a[96], b[96];
    /* Check everything first, so a bad file leaves the weights untouched. */
    for (int k = 0; k < in->count; k++) {
        const lp_named_tensor *nt = &in->items[k];
        int i = find_param(net, nt->name);
        lp_shape_str(&nt->t, a, sizeof a);
        if (i < 0)
            return lp_fail(LP_ERR_SHAPE, "unknown tensor '%s' %s: the %s model (top=%s) has no such parameter", nt->name, a,
                           net->cfg.arch, net->cfg.top);
        const lp_param *p = &net->params[i];
        bool same = nt->t.ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = nt->t.shape[d] == p->shape[d];
        if (!same) {
            shape_of(p, b, sizeof b);
            return lp_fail(LP_ERR_SHAPE, "tensor '%s': shape %s in the weights, %s in the model", nt->name, a, b);
        }
        if (p->int64) {
            if (nt->t.dtype != LP_I64 && nt->t.dtype != LP_F32)
                return lp_fail(LP_ERR_FORMAT, "tensor '%s': dtype %s, expected I64 (a count)", nt->name, lp_dtype_name(nt->t.dtype));
            for (size_t j = 0; j < p->numel; j++) {
                const double v = nt->t.dtype == LP_I64 ? (double)((const int64_t *)nt->t.data)[j] : ((const float *)nt->t.data)[j];
                if (!(v >= 0 && v <= 16777216.0 && v == (double)(int64_t)v))
                    return lp_fail(LP_ERR_FORMAT, "tensor '%s': %g is not a count from 0 to 2^24", nt->name, v);
            }
        } else if (nt->t.dtype != LP_F32 && nt->t.dtype != LP_BF16 && nt->t.dtype != LP_F16)
            return lp_fail(LP_ERR_FORMAT, "tensor '%s': dtype %s, expected F32, BF16 or F16", nt->name, lp_dtype_name(nt->t.dtype));
    }
    size_t miss_len = 0;
    int nmiss = 0;
    for (int i = 0; i < net->nparams; i++)
        if (!lp_tensor_list_find(in, net->params[i].name)) {
            nmiss++;
            miss_len += strlen(net->params[i].name) + 1;
        }
    if (nmiss && strict) {
        for (int i = 0; i < net->nparams; i++)
            if (!lp_tensor_list_find(in, net->params[i].name)) {
                shape_of(&net->params[i], b, sizeof b);
                return lp_fail(LP_ERR_SHAPE, "missing tensor '%s' %s (and %d more missing)", net->params[i].name, b, nmiss - 1);
            }
    }
    for (int k = 0; k < in->count; k++) {
        const lp_named_tensor *nt = &in->items[k];
        const lp_param *p = &net->params[find_param(net, nt->name)];
        float *w = net->weights + p->offset;
        if (p->int64 && nt->t.dtype == LP_I64)
            for (size_t j = 0; j < p->numel; j++) w[j] = (float)((const int64_t *)nt->t.data)[j];
        else if (nt->t.dtype == LP_F32) memcpy(w, nt->t.data, p->numel * sizeof(float));
        else {
            const uint16_t *h = nt->t.data;
            for (size_t j = 0; j < p->numel; j++) w[j] = nt->t.dtype == LP_BF16 ? lp_bf16_to_f32(h[j]) : lp_f16_to_f32(h[j]);
        }
    }
    lp_net_invalidate_weights(net, false);
    if (nmiss && missing) {
        char *s = malloc(miss_len + 1);
        if (!s) return lp_fail(LP_ERR_NOMEM, "out of memory");
        s[0] = 0;
        for (int i = 0; i < net->nparams; i++)
            if (!lp_tensor_list_find(in, net->params[i].name)) {
                if (s[0]) strcat(s, ",");
                strcat(s, net->params[i].name);
            }
        *missing = s;
    }
    return LP_OK;
}

/* ---- summary ------------------------------------------------------------------ */
typedef struct strbuf {
    char *s;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
}

static const char *commas(long long v, char *buf) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v), o = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static void row(strbuf *b, const char *name, const char *type, const lp_layer *l, long long params) {
    char shape[48], label[112], num[32];
    if (l->kind == LP_LAYER_FLATTEN || l->kind == LP_LAYER_DENSE || l->kind == LP_LAYER_DROPOUT || (l->kind == LP_LAYER_ACT && l->out_h == 1 && l->out_w == 1) ||
        (l->kind == LP_LAYER_APOOL && l->out_h == 1 && l->out_w == 1 && !strncmp(name, "head.", 5)))
        snprintf(shape, sizeof shape, "(%d)", l->out_c * l->out_h * l->out_w);
    else snprintf(shape, sizeof shape, "(%d, %d, %d)", l->out_c, l->out_h, l->out_w);
    snprintf(label, sizeof label, "%s (%s)", name, type);
    sb_printf(b, "%-36s %-20s %15s\n", label, shape, commas(params, num));
}

void lp_net_param_totals(const lp_net *net, long long *total, long long *trainable) {
    *total = *trainable = 0;
    for (int i = 0; i < net->nparams; i++) {
        if (net->params[i].int64) continue; /* a count (num_batches_tracked), as Keras has none */
        *total += (long long)net->params[i].numel;
        if (net->params[i].trainable) *trainable += (long long)net->params[i].numel;
    }
}

lp_status lp_net_summary(lp_net *net, char **text) {
    *text = NULL;
    strbuf b = {0};
    const lp_net_config *c = &net->cfg;
    sb_printf(&b, "Model: %s, top=%s%s%s, input %dx%dx%d (CxHxW), %d classes\n", c->arch, c->top,
              strcmp(c->top, "none") ? "" : ", head=", strcmp(c->top, "none") ? "" : (c->head[0] ? c->head : "flatten,dense"),
              c->in_c, c->in_h, c->in_w, c->num_classes);
    sb_printf(&b, "%-36s %-20s %15s\n", "Layer (type)", "Output shape", "Param #");
    sb_printf(&b, "==========================================================================\n");
    long long total, trainable;
    lp_net_param_totals(net, &total, &trainable);
    for (int i = 0; i < net->nlayers; i++) {
        const lp_layer *l = &net->layers[i];
        long long np = 0;
        bool frozen = false;
        if (l->pw >= 0) np += (long long)net->params[l->pw].numel, frozen |= !net->params[l->pw].trainable;
        if (l->pb >= 0) np += (long long)net->params[l->pb].numel;
        char type[48];
        switch (l->kind) {
        case LP_LAYER_TOPLAIN: continue;
        case LP_LAYER_CONV: {
            /* padding per side where it is not the same on all (TensorFlow's "same"): top, bottom, left, right */
            char pad[32] = "";
            if (l->pad_bottom != l->pad || l->pad_left != l->pad || l->pad_right != l->pad)
                snprintf(pad, sizeof pad, " pad %d,%d,%d,%d", l->pad, l->pad_bottom, l->pad_left, l->pad_right);
            snprintf(type, sizeof type, "Conv2d %dx%d%s%s", l->k, l->k, pad, frozen ? ", frozen" : "");
            break;
        }
        case LP_LAYER_MAXPOOL: snprintf(type, sizeof type, "MaxPool2d %dx%d", l->k, l->k); break;
        case LP_LAYER_APOOL:
            if (l->out_h == 1 && l->out_w == 1 && !strncmp(l->name, "head.", 5)) snprintf(type, sizeof type, "GlobalAvgPool");
            else snprintf(type, sizeof type, "AdaptiveAvgPool2d %dx%d", l->out_h, l->out_w);
            break;
        case LP_LAYER_FLATTEN: snprintf(type, sizeof type, "Flatten"); break;
        case LP_LAYER_DENSE:
            snprintf(type, sizeof type, "Linear%s%s", l->relu && !l->relu_name[0] ? " + ReLU" : "", frozen ? ", frozen" : "");
            break;
        case LP_LAYER_DROPOUT: snprintf(type, sizeof type, "Dropout %.2g", l->p); break;
        case LP_LAYER_ADD:
            if (l->p > 0.0f) snprintf(type, sizeof type, "Add, stochastic depth %.3g", l->p);
            else snprintf(type, sizeof type, "Add");
            break;
        case LP_LAYER_ACT: snprintf(type, sizeof type, "%s", l->act == LP_ACT_SIGMOID ? "Sigmoid" : "SiLU"); break;
        case LP_LAYER_SCALE: snprintf(type, sizeof type, "SqueezeExcitation x*gate"); break;
        case LP_LAYER_GAP: snprintf(type, sizeof type, "AdaptiveAvgPool2d 1x1"); break;
        case LP_LAYER_BN: snprintf(type, sizeof type, "BatchNorm2d%s", frozen ? ", frozen" : ""); break;
        default: snprintf(type, sizeof type, "?");
        }
        row(&b, l->name, type, l, np);
        if (l->relu_name[0]) row(&b, l->relu_name, lp_layer_act_name(l), l, 0);
    }
    char n1[32], n2[32], n3[32];
    sb_printf(&b, "==========================================================================\n");
    sb_printf(&b, "Total params: %s\nTrainable params: %s\nNon-trainable params: %s\n", commas(total, n1), commas(trainable, n2),
              commas(total - trainable, n3));
    if (b.oom) {
        free(b.s);
        return lp_fail(LP_ERR_NOMEM, "out of memory");
    }
    *text = b.s;
    return LP_OK;
}
