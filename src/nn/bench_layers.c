/* Per-layer roofline for `loupe bench --per-layer`: each layer's time inside
 * a training step (measured by the net's profiling hooks) next to the time
 * of its compute kernels (oneDNN primitives; our max pooling) run alone, on
 * the same buffers, back to back.
 * The optimizer's update is a kernel too (ours: memory-bound loops over w, its
 * state and copies), timed alone over all trainable weights. The gap is framework
 * overhead: reorders of weights and inputs, ReLU masks, stream waits, copies, and
 * caches gone cold between layers. */
#include "nn_impl.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Seconds of one call, added to out. */
#define TIME_CALL(call, out)                                                                                             \
    do {                                                                                                                 \
        dnnl_stream_wait(net->stream);                                                                                   \
        double t0_ = lp_now();                                                                                           \
        lp_status st_ = (call);                                                                                          \
        if (st_) return st_;                                                                                             \
        dnnl_stream_wait(net->stream);                                                                                   \
        (out) += lp_now() - t0_;                                                                                         \
    } while (0)

/* Runs layer l's primitives once each; adds their seconds to t[0] (forward)
 * and t[1] (backward) and their GFLOP to gf[0], gf[1]. */
static lp_status time_layer(lp_net *net, lp_plan *p, int l, double *t, double *gf) {
    lp_layer *L = &net->layers[l];
    lp_plan_layer *pl = &p->layers[l];
    void *x = net->act[pl->in_slot].p, *y = net->act[pl->out_slot].p, *scr = net->scratch.p;
    void *dy = net->diff[0].p, *dx = net->diff[1].p;
    gf[0] = gf[1] = 0;
    switch (L->kind) {
    case LP_LAYER_CONV: {
        lp_conv2d *c = &pl->u.conv.op;
        const void *src = pl->u.conv.in_re ? L->aux.p : x;
        const float *param = net->weights + net->params[L->pw].offset,
                    *bias = L->pb >= 0 ? net->weights + net->params[L->pb].offset : NULL; /* ResNet's have none */
        /* the weights the step's forward reads: the storage itself where it is in the forward's
         * layout (fp32 stored blocked: wf's pages are released then), else the copy in wf */
        const void *wf = (L->st_blocked && !c->p.bf16) || !pl->u.conv.has_re_wf ? (const void *)param : L->wf.p;
        /* each output channel sums over in_c / groups inputs (depthwise: one) */
        double f = 2.0 * p->n * c->p.k * c->p.c / (c->p.groups > 1 ? c->p.groups : 1) * c->p.kh * c->p.kw * (double)c->oh * c->ow / 1e9;
        TIME_CALL(lp_conv2d_forward(c, net->stream, src, wf, bias, y, scr), t[0]);
        gf[0] = f;
        if (c->has_bwd_data) {
            const void *wb = pl->u.conv.has_re_wb && L->wb.p ? L->wb.p : wf;
            void *target = pl->u.conv.in_re ? net->tmp_dx.p : dx;
            TIME_CALL(lp_conv2d_backward_data(c, net->stream, dy, wb, target, scr), t[1]);
            gf[1] += f;
        }
        if (c->has_bwd_w) {
            TIME_CALL(lp_conv2d_backward_weights(c, net->stream, src, dy, net->tmp_dw.p, net->tmp_db.p, scr), t[1]);
            gf[1] += f;
        }
        break;
    }
    case LP_LAYER_MAXPOOL:
        TIME_CALL(lp_maxpool_forward(&pl->u.pool, net->stream, x, y, L->aux.p, scr), t[0]);
        if (pl->u.pool.has_bwd) TIME_CALL(lp_maxpool_backward(&pl->u.pool, net->stream, dy, L->aux.p, dx, scr), t[1]);
        break;
    case LP_LAYER_DENSE: {
        lp_dense *d = &pl->u.dense;
        const float *w = net->weights + net->params[L->pw].offset, *b = net->weights + net->params[L->pb].offset;
        float *gw = net->grads + net->params[L->pw].offset, *gb = net->grads + net->params[L->pb].offset;
        double f = 2.0 * p->n * d->in * (double)d->out / 1e9;
        if (d->bf16 && !L->wf_valid) return lp_fail(LP_ERR_ARG, "bench: %s has no current bf16 weight copy", L->name);
        const void *wf = d->bf16 ? L->wf.p : w; /* bf16: its copy, made by the training step */
        TIME_CALL(lp_dense_forward(d, net->stream, x, wf, b, y, scr), t[0]);
        gf[0] = f;
        if (d->has_bwd_data) {
            TIME_CALL(lp_dense_backward_data(d, net->stream, dy, wf, dx, scr), t[1]);
            gf[1] += f;
        }
        if (d->has_bwd_w) {
            TIME_CALL(lp_dense_backward_weights(d, net->stream, x, dy, gw, gb, false, scr), t[1]);
            gf[1] += f;
        }
        break;
    }
    case LP_LAYER_BN: {
        /* in the mode of the last training forward; the running statistics are not touched */
        const bool train = pl->u.bn.last_train;
        lp_batchnorm *b = train ? &pl->u.bn.train : &pl->u.bn.frozen;
        if (!(train ? pl->u.bn.has_train : pl->u.bn.has_frozen)) break;
        const float *g = net->weights + net->params[L->pw].offset, *be = net->weights + net->params[L->pb].offset;
        float *stats = L->aux.p, *mean = train ? stats : net->weights + net->params[L->prm].offset,
              *var = train ? stats + L->in_c : net->weights + net->params[L->prv].offset;
        TIME_CALL(lp_batchnorm_forward(b, net->stream, x, g, be, mean, var, y, L->relu_bits.p, scr), t[0]);
        if (b->has_bwd) {
            float *dgb = net->tmp_db.cap >= 2 * sizeof(float) * (size_t)L->in_c ? net->tmp_db.p : NULL;
            TIME_CALL(lp_batchnorm_backward(b, net->stream, x, y, dy, g, be, mean, var, L->relu_bits.p, dx, dgb, dgb ? dgb + L->in_c : NULL,
                                            scr),
                      t[1]);
        }
        break;
    }
    case LP_LAYER_ADD: {
        /* the add itself, on the second input's own slot: its reorder (a different layout)
         * is overhead like the others */
        TIME_CALL(lp_residual_add_forward(&pl->u.add.op, net->stream, x, net->act[pl->in2_slot].p, y, scr), t[0]);
        if (pl->u.add.op.has_bwd) TIME_CALL(lp_residual_add_backward(&pl->u.add.op, net->stream, dy, y, dx, scr), t[1]);
        break;
    }
    case LP_LAYER_GAP:
        TIME_CALL(lp_global_avgpool_forward(&pl->u.gap, net->stream, x, y, scr), t[0]);
        if (pl->u.gap.has_bwd) TIME_CALL(lp_global_avgpool_backward(&pl->u.gap, net->stream, dy, dx, scr), t[1]);
        break;
    case LP_LAYER_ACT:
        TIME_CALL(lp_act_forward(&pl->u.act, net->stream, x, y, scr), t[0]);
        if (pl->u.act.has_bwd) TIME_CALL(lp_act_backward(&pl->u.act, net->stream, dy, x, y, dx, scr), t[1]);
        break;
    case LP_LAYER_SCALE: {
        /* the gate's gradient into the layer's own buffer, as the step does */
        const float *gate = net->act[pl->in2_slot].p;
        TIME_CALL((lp_channel_scale_forward(&pl->u.scale, x, gate, y), LP_OK), t[0]);
        TIME_CALL((lp_channel_scale_backward(&pl->u.scale, x, gate, dy, L->aux.p), LP_OK), t[1]);
        break;
    }
    default: break; /* reorders, views and C ops: all overhead */
    }
    return LP_OK;
}

lp_status lp_bench_time_primitives(lp_net *net, double *t, double *gflop) {
    if (!net->cur) return lp_fail(LP_ERR_ARG, "bench: timing primitives needs a training step first");
    /* Each layer's dy and dx in the two diff buffers: a training step sizes them for
     * its own needs only (net.c backward_targets), so grow them to the largest. */
    size_t big = 64;
    for (int l = 0; l < net->nlayers; l++) {
        const lp_plan_layer *pl = &net->cur->layers[l];
        if (lp_md_size(&pl->in_md) > big) big = lp_md_size(&pl->in_md);
        if (lp_md_size(&pl->out_md) > big) big = lp_md_size(&pl->out_md);
    }
    lp_status st = lp_buf_reserve(&net->diff[0], big, NULL);
    if (!st) st = lp_buf_reserve(&net->diff[1], big, NULL);
    if (st) return st;
    /* The step left other layers' gradients there, in other dtypes and layouts: read
     * as this layer's, some are denormal floats, on which the CPU's arithmetic runs
     * many times slower (the dense layers' backward-weights ran 3x slower alone than
     * in the step). Zeros are normal in every dtype. */
    memset(net->diff[0].p, 0, big);
    memset(net->diff[1].p, 0, big);
    for (int l = 0; l < net->nlayers; l++) {
        st = time_layer(net, net->cur, l, t + 2 * l, gflop + 2 * l);
        if (st) return lp_fail_context(st, "bench: timing layer %s alone", net->layers[l].name[0] ? net->layers[l].name : "reorder");
    }
    return LP_OK;
}

__attribute__((format(printf, 4, 5)))
static void appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (*buf && *len + (size_t)n < *cap) {
            *len += (size_t)n;
            return;
        }
        size_t nc = (*cap ? *cap * 2 : 4096) + (size_t)n;
        char *nb = realloc(*buf, nc);
        if (!nb) return;
        *buf = nb;
        *cap = nc;
    }
}

static double gfs(double gflop, double s) { return s > 0 ? gflop / s : 0; }

lp_status lp_bench_layer_table(const lp_net *net, const double *prim, const double *gflop, int steps, double step_s,
                               double update_s, char **text, double *primitive_s) {
    *text = NULL;
    *primitive_s = 0;
    if (!net->prof || !net->cur || steps < 1) return lp_fail(LP_ERR_ARG, "bench: per-layer table needs profiled training steps first");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    appendf(&buf, &len, &cap, "%-21s %-18s %-14s %9s %9s %9s %9s %8s %8s %8s  %s\n", "layer", "kind", "output", "step fwd",
            "step bwd", "prim fwd", "prim bwd", "GFLOP/s", "GFLOP/s", "overhead", "kernel (forward)");
    appendf(&buf, &len, &cap, "%-21s %-18s %-14s %9s %9s %9s %9s %8s %8s %8s\n", "", "", "", "ms", "ms", "ms", "ms", "fwd",
            "bwd", "ms");
    double in_step = 0, sum_prim = 0;
    int nfused = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const lp_layer *L = &net->layers[l];
        double sf = net->prof[2 * l] / steps, sb = net->prof[2 * l + 1] / steps;
        double pf = prim[2 * l] / steps, pb = prim[2 * l + 1] / steps;
        in_step += sf + sb;
        sum_prim += pf + pb;
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%dx%d", L->out_c, L->out_h, L->out_w);
        const lp_plan_layer *pl = &net->cur->layers[l];
        const char *impl = L->kind == LP_LAYER_CONV    ? pl->u.conv.op.fwd.impl
                           : L->kind == LP_LAYER_MAXPOOL ? pl->u.pool.fwd.impl
                           : L->kind == LP_LAYER_DENSE   ? pl->u.dense.fwd.impl
                           : L->kind == LP_LAYER_BN      ? (pl->u.bn.last_train ? pl->u.bn.train.fwd.impl : pl->u.bn.frozen.fwd.impl)
                           : L->kind == LP_LAYER_ADD     ? pl->u.add.op.fwd.impl
                           : L->kind == LP_LAYER_GAP     ? pl->u.gap.fwd.impl
                           : L->kind == LP_LAYER_ACT     ? pl->u.act.fwd.impl
                           : L->kind == LP_LAYER_SCALE   ? "loupe:openmp"
                                                         : "";
        /* the kind, with the activation a batch norm runs inside it, and sigmoid by its name */
        char kind[32];
        if (L->kind == LP_LAYER_BN && L->relu_name[0]) snprintf(kind, sizeof kind, "BatchNorm2d+%s", lp_layer_act_name(L));
        else snprintf(kind, sizeof kind, "%s", L->kind == LP_LAYER_ACT && L->act == LP_ACT_SIGMOID ? "Sigmoid" : lp_layer_kinds[L->kind].type);
        /* after a fused step (bench.c), the layers that updated their weights in backward */
        const bool fused = (L->kind == LP_LAYER_CONV || L->kind == LP_LAYER_DENSE) && net->params[L->pw].trainable &&
                           net->params[L->pw].grad_state == LP_GRAD_STALE;
        nfused += fused;
        appendf(&buf, &len, &cap, "%-21s %-18s %-14s %9.2f %8.2f%s %9.2f %9.2f %8.0f %8.0f %8.2f  %s\n",
                L->name[0] ? L->name : "(reorder)", kind, shape, sf * 1e3, sb * 1e3, fused ? "*" : " ",
                pf * 1e3, pb * 1e3, gfs(gflop[2 * l], pf), gfs(gflop[2 * l + 1], pb), (sf + sb - pf - pb) * 1e3, impl);
    }
    appendf(&buf, &len, &cap, "%-55s %19.2f %19.2f %26.2f\n", "sum over layers (ms)", in_step * 1e3, sum_prim * 1e3,
            (in_step - sum_prim) * 1e3);
    if (nfused)
        appendf(&buf, &len, &cap, "* the layer's weights were updated inside its backward (fused update; see the update below)\n");
    const double kernels = sum_prim + update_s;
    appendf(&buf, &len, &cap,
            "optimizer update alone (all trainable weights, their state and copies): %.2f ms\n"
            "step %.2f ms (unprofiled, interleaved with the rest); kernels alone %.2f ms (layers %.2f + update %.2f); "
            "framework overhead (step - kernels) %.2f ms = %.1f%% (%.1f%% with the update counted as overhead)\n",
            update_s * 1e3, step_s * 1e3, kernels * 1e3, sum_prim * 1e3, update_s * 1e3, (step_s - kernels) * 1e3,
            step_s > 0 ? 100.0 * (step_s - kernels) / step_s : 0, step_s > 0 ? 100.0 * (step_s - sum_prim) / step_s : 0);
    *text = buf;
    *primitive_s = sum_prim;
    return buf ? LP_OK : LP_ERR_NOMEM;
}
