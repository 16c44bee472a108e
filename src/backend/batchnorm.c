/* Batch normalization forward/backward: our fused kernel (batchnorm_fused.c) where the
 * layout allows, else oneDNN's batch_normalization primitive, with separate scale and
 * shift (PyTorch's weight and bias: no packing into oneDNN's scaleshift pair), the ReLU
 * fused by dnnl_fuse_norm_relu (its mask kept in oneDNN's workspace for backward), ReLU6
 * or SiLU as an eltwise pass after it (SiLU's input z kept in ws for its backward); and
 * PyTorch's running-statistics update. */
#include "batchnorm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where the caller does not say, the blocked layout oneDNN's convolutions pick at this
 * level, on which oneDNN's batch normalization has jit kernels too. */
static lp_md default_layout(const lp_batchnorm_params *p) {
    const lp_isa isa = lp_cpu_isa();
    dnnl_format_tag_t tag = dnnl_nchw;
    if (isa >= LP_ISA_AVX512 && p->c % 16 == 0) tag = dnnl_nChw16c;
    else if (isa >= LP_ISA_AVX2 && p->c % 8 == 0) tag = dnnl_nChw8c;
    lp_md md;
    dnnl_dims_t d = {p->n, p->c, p->h, p->w};
    dnnl_memory_desc_init_by_tag(&md, 4, d, dnnl_f32, tag);
    return md;
}

static unsigned bn_flags(const lp_batchnorm_params *p) {
    unsigned f = dnnl_use_scale | dnnl_use_shift;
    if (p->mode == LP_BN_FROZEN) f |= dnnl_use_global_stats;
    if (p->relu && !p->relu6 && !p->silu) f |= dnnl_fuse_norm_relu;
    return f;
}

/* LOUPE_BATCHNORM=onednn keeps oneDNN's kernels everywhere: the comparison behind the
 * choice below (docs/engine.md), rerun on a new CPU with the bench command. */
static bool onednn_forced(void) {
    const char *e = getenv("LOUPE_BATCHNORM");
    return e && !strcmp(e, "onednn");
}

static int activation(const lp_batchnorm_params *p) {
    return p->silu ? LP_BN_ACT_SILU : p->relu6 ? LP_BN_ACT_RELU6 : p->relu ? LP_BN_ACT_RELU : LP_BN_ACT_NONE;
}

/* A frozen op with no backward is pure inference; everything else keeps what backward
 * needs (oneDNN writes the ReLU workspace in forward_training only). */
static dnnl_prop_kind_t fwd_prop(const lp_batchnorm_params *p) {
    return p->mode == LP_BN_FROZEN && !p->backward ? dnnl_forward_inference : dnnl_forward_training;
}

lp_status lp_batchnorm_init(lp_batchnorm *b, const lp_batchnorm_params *p, const lp_md *src) {
    memset(b, 0, sizeof *b);
    b->p = *p;
    if (b->p.eps == 0) b->p.eps = LP_BN_EPS;
    if (p->n < 1 || p->c < 1 || p->h < 1 || p->w < 1)
        return lp_fail(LP_ERR_SHAPE, "batchnorm: bad shape (%d, %d, %d, %d)", p->n, p->c, p->h, p->w);
    if (!(b->p.eps > 0)) return lp_fail(LP_ERR_SHAPE, "batchnorm: eps must be positive, got %g", (double)p->eps);
    if (p->mode == LP_BN_TRAIN && (int64_t)p->n * p->h * p->w < 2)
        return lp_fail(LP_ERR_SHAPE,
                       "batchnorm: one value per channel in training mode (batch 1, 1x1 map) has no variance; "
                       "use a larger batch or frozen statistics");
    b->data_md = src ? *src : default_layout(p);
    const int64_t want[4] = {p->n, p->c, p->h, p->w};
    if (b->data_md.ndims != 4 || (b->data_md.data_type != dnnl_f32 && b->data_md.data_type != dnnl_bf16) ||
        memcmp(b->data_md.dims, want, sizeof(int64_t) * 4))
        return lp_fail(LP_ERR_SHAPE, "batchnorm: the input layout is not fp32 or bf16 (%d, %d, %d, %d)", p->n, p->c, p->h, p->w);
    /* ours with ReLU6 or SiLU, where oneDNN's costs an eltwise pass more each way; without
     * them oneDNN's streams large maps up to 20% faster (docs/engine.md), so ours there only
     * where the caller asks (a net with ReLU6 runs all its batch norms on one kernel) */
    int vec;
    if ((p->relu6 || p->silu || p->fused) && !onednn_forced() && lp_bn_fused_layout(&b->data_md, &vec)) {
        lp_bn_fused_plan(&b->fused, p->n, p->c, p->h * p->w, vec);
        b->own = true;
        snprintf(b->fwd.impl, sizeof b->fwd.impl, "loupe:fused_%s", lp_isa_name(lp_cpu_isa()));
        return LP_OK;
    }

    dnnl_batch_normalization_desc_t desc;
    lp_status st = lp_dnnl_check(
        dnnl_batch_normalization_forward_desc_init(&desc, fwd_prop(&b->p), &b->data_md, b->p.eps, bn_flags(&b->p)),
        "batchnorm forward desc");
    if (st) return st;
    if ((st = lp_pd_create(&b->fwd_pd, &desc, NULL, "batchnorm forward"))) return st;
    const lp_md *ws = dnnl_primitive_desc_query_md(b->fwd_pd, dnnl_query_workspace_md, 0);
    b->ws_size = ws ? lp_md_size(ws) : 0;
    if (p->silu && p->backward) b->ws_size = lp_md_size(&b->data_md); /* z, which SiLU's backward reads */
    static const int kinds[] = {DNNL_ARG_SRC,      DNNL_ARG_SCALE, DNNL_ARG_SHIFT,    DNNL_ARG_MEAN,
                                DNNL_ARG_VARIANCE, DNNL_ARG_DST,   DNNL_ARG_WORKSPACE};
    if ((st = lp_prim_create(&b->fwd, b->fwd_pd, kinds, b->ws_size && !p->silu ? 7 : 6)) ||
        (p->relu6 && (st = lp_relu6_init(&b->relu6, &b->data_md))) || (p->silu && (st = lp_act_init(&b->silu, LP_ACT_SILU, &b->data_md)))) {
        lp_batchnorm_free(b);
        return st;
    }
    return LP_OK;
}

lp_status lp_batchnorm_init_backward(lp_batchnorm *b) {
    if (b->has_bwd) return LP_OK;
    if (!b->p.backward)
        return lp_fail(LP_ERR_ARG, "batchnorm: built for forward only (set backward in its parameters)");
    if (b->own) {
        memcpy(b->bwd.impl, b->fwd.impl, sizeof b->bwd.impl);
        b->has_bwd = true;
        return LP_OK;
    }
    lp_status st = b->p.relu6 ? lp_relu6_init_backward(&b->relu6) : b->p.silu ? lp_act_init_backward(&b->silu) : LP_OK;
    if (st) return st;
    dnnl_batch_normalization_desc_t desc;
    st = lp_dnnl_check(dnnl_batch_normalization_backward_desc_init(&desc, dnnl_backward, &b->data_md, &b->data_md, b->p.eps,
                                                                   bn_flags(&b->p)),
                       "batchnorm backward desc");
    if (st) return st;
    dnnl_primitive_desc_t pd;
    if ((st = lp_pd_create(&pd, &desc, b->fwd_pd, "batchnorm backward"))) return st;
    static const int kinds[] = {DNNL_ARG_SRC,   DNNL_ARG_MEAN,     DNNL_ARG_VARIANCE,   DNNL_ARG_DIFF_DST,
                                DNNL_ARG_SCALE, DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_SCALE, DNNL_ARG_DIFF_SHIFT};
    st = lp_prim_create(&b->bwd, pd, kinds, 8);
    /* oneDNN 2.6 asks for the shift (beta) in backward too, although no result depends on
     * it; it and the workspace go in as extra arguments (lp_prim holds eight). */
    if (!st)
        st = lp_dnnl_check(dnnl_memory_create(&b->bwd_shift, dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, DNNL_ARG_SHIFT),
                                              lp_dnnl_engine(), DNNL_MEMORY_NONE),
                           "memory create");
    if (!st && b->ws_size && !b->p.silu) {
        const lp_md *ws = dnnl_primitive_desc_query_md(pd, dnnl_query_workspace_md, 0);
        if (!ws || lp_md_size(ws) != b->ws_size)
            st = lp_fail(LP_ERR_BACKEND, "oneDNN: batchnorm backward takes no ReLU workspace from the forward");
        else
            st = lp_dnnl_check(dnnl_memory_create(&b->bwd_ws, ws, lp_dnnl_engine(), DNNL_MEMORY_NONE), "memory create");
    }
    dnnl_primitive_desc_destroy(pd);
    if (st) {
        lp_prim_free(&b->bwd);
        if (b->bwd_shift) dnnl_memory_destroy(b->bwd_shift);
        if (b->bwd_ws) dnnl_memory_destroy(b->bwd_ws);
        b->bwd_shift = b->bwd_ws = NULL;
        return st;
    }
    b->has_bwd = true;
    return LP_OK;
}

/* Backward writes dgamma or dbeta that the caller does not want here, after oneDNN's
 * own scratchpad. */
static size_t unwanted_offset(const lp_batchnorm *b) { return (b->bwd.scratch_size + 63) / 64 * 64; }

size_t lp_batchnorm_scratch_size(const lp_batchnorm *b) {
    if (b->own) return lp_bn_fused_scratch_size(&b->fused);
    size_t s = b->fwd.scratch_size;
    if (b->p.relu6 && lp_relu6_scratch_size(&b->relu6) > s) s = lp_relu6_scratch_size(&b->relu6);
    if (b->p.silu && lp_act_scratch_size(&b->silu) > s) s = lp_act_scratch_size(&b->silu);
    if (b->has_bwd) {
        size_t sb = unwanted_offset(b) + 2 * (size_t)b->p.c * sizeof(float);
        if (sb > s) s = sb;
    }
    return s;
}

lp_status lp_batchnorm_forward(lp_batchnorm *b, dnnl_stream_t s, const float *x, const float *gamma, const float *beta,
                               float *mean, float *var, float *y, void *ws, void *scratch) {
    if (b->own) {
        dnnl_stream_wait(s); /* x may come from a oneDNN primitive still running */
        lp_bn_fused_forward(&b->fused, b->p.mode == LP_BN_TRAIN, x, gamma, beta, mean, var, b->p.eps, activation(&b->p), y, scratch);
        return LP_OK;
    }
    if (b->ws_size && !ws) return lp_fail(LP_ERR_ARG, "batchnorm: forward needs its workspace");
    if (b->p.silu) { /* z into ws where backward will read it, else into y */
        float *z = b->ws_size ? ws : y;
        void *p[6] = {(void *)x, (void *)gamma, (void *)beta, mean, var, z};
        lp_status st = lp_prim_exec(&b->fwd, s, p, scratch);
        return st ? st : lp_act_forward(&b->silu, s, z, y, scratch);
    }
    void *p[7] = {(void *)x, (void *)gamma, (void *)beta, mean, var, y, ws};
    lp_status st = lp_prim_exec(&b->fwd, s, p, scratch);
    return !st && b->p.relu6 ? lp_relu6_forward(&b->relu6, s, y, scratch) : st;
}

lp_status lp_batchnorm_backward(lp_batchnorm *b, dnnl_stream_t s, const float *x, const float *y, float *dy, const float *gamma,
                                const float *beta, const float *mean, const float *var, const void *ws, float *dx, float *dgamma,
                                float *dbeta, void *scratch) {
    if (!b->has_bwd) return lp_fail(LP_ERR_ARG, "batchnorm: backward not built (lp_batchnorm_init_backward)");
    if (b->own) {
        dnnl_stream_wait(s);
        lp_bn_fused_backward(&b->fused, b->p.mode == LP_BN_TRAIN, x, y, dy, gamma, beta, mean, var, b->p.eps, activation(&b->p), dx,
                             dgamma, dbeta, scratch);
        return LP_OK;
    }
    if (b->ws_size && !ws) return lp_fail(LP_ERR_ARG, "batchnorm: backward needs the forward's workspace");
    if (!dx) dx = dy;
    lp_status st = b->p.relu6  ? lp_relu6_backward(&b->relu6, s, dy, y, scratch)
                   : b->p.silu ? lp_act_backward(&b->silu, s, dy, ws, y, dy, scratch)
                               : LP_OK;
    if (st) return st;
    float *unwanted = (float *)((char *)scratch + unwanted_offset(b));
    void *p[8] = {(void *)x, (void *)mean, (void *)var, (void *)dy, (void *)gamma, dx,
                  dgamma ? (void *)dgamma : unwanted, dbeta ? (void *)dbeta : unwanted + b->p.c};
    lp_prim *pr = &b->bwd;
    dnnl_exec_arg_t args[LP_PRIM_MAX_ARGS + 3];
    int n = 0;
    for (int i = 0; i < pr->nargs; i++) {
        dnnl_memory_set_data_handle(pr->mem[i], p[i]);
        args[n++] = pr->args[i];
    }
    dnnl_memory_set_data_handle(b->bwd_shift, (void *)beta);
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, b->bwd_shift};
    if (b->bwd_ws) {
        dnnl_memory_set_data_handle(b->bwd_ws, (void *)ws);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, b->bwd_ws};
    }
    if (pr->scratch_size) {
        dnnl_memory_set_data_handle(pr->mem[pr->nargs], scratch);
        args[n++] = pr->args[pr->nargs];
    }
    return lp_dnnl_check(dnnl_primitive_execute(pr->p, s, n, args), pr->impl[0] ? pr->impl : "batchnorm backward");
}

void lp_batchnorm_free(lp_batchnorm *b) {
    if (!b) return;
    lp_prim_free(&b->fwd);
    lp_prim_free(&b->bwd);
    lp_relu6_free(&b->relu6);
    lp_act_free(&b->silu);
    if (b->bwd_shift) dnnl_memory_destroy(b->bwd_shift);
    if (b->bwd_ws) dnnl_memory_destroy(b->bwd_ws);
    if (b->fwd_pd) dnnl_primitive_desc_destroy(b->fwd_pd);
    memset(b, 0, sizeof *b);
}

void lp_batchnorm_update_running(float *running_mean, float *running_var, int64_t *num_batches_tracked, const float *mean,
                                 const float *var, int c, int64_t count, float momentum) {
    /* Bessel's correction: PyTorch normalizes with the biased variance but tracks the
     * unbiased one. */
    const double m = momentum, unbias = (double)count / (double)(count - 1);
    for (int i = 0; i < c; i++) {
        running_mean[i] = (float)(m * mean[i] + (1 - m) * running_mean[i]);
        running_var[i] = (float)(m * (var[i] * unbias) + (1 - m) * running_var[i]);
    }
    if (num_batches_tracked) ++*num_batches_tracked;
}
