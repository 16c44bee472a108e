/* SiLU and sigmoid forward/backward on oneDNN's eltwise (swish with alpha 1, and
 * logistic_use_dst_for_bwd, whose backward reads the output), fp32 or bf16 (bf16 nets: the
 * data in bf16, computed in fp32 inside oneDNN's kernel, as PyTorch's bf16 SiLU). */
#include "graph_ops.h"
#include <string.h>

static dnnl_alg_kind_t act_alg(lp_act_kind k) { return k == LP_ACT_SILU ? dnnl_eltwise_swish : dnnl_eltwise_logistic_use_dst_for_bwd; }
static const char *act_name(lp_act_kind k) { return k == LP_ACT_SILU ? "silu" : "sigmoid"; }

lp_status lp_act_init(lp_act *a, lp_act_kind kind, const lp_md *data_md) {
    memset(a, 0, sizeof *a);
    a->data_md = *data_md;
    a->kind = kind;
    if (data_md->format_kind != dnnl_blocked || (data_md->data_type != dnnl_f32 && data_md->data_type != dnnl_bf16))
        return lp_fail(LP_ERR_SHAPE, "%s: the data must be fp32 or bf16 in a concrete layout", act_name(kind));
    dnnl_eltwise_desc_t desc;
    lp_status st = lp_dnnl_check(dnnl_eltwise_forward_desc_init(&desc, dnnl_forward_training, act_alg(kind), &a->data_md, 1.0f, 0.0f),
                                 "activation forward desc");
    if (st) return st;
    if ((st = lp_pd_create(&a->fwd_pd, &desc, NULL, act_name(kind)))) return st;
    static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST};
    if ((st = lp_prim_create(&a->fwd, a->fwd_pd, kinds, 2))) lp_act_free(a);
    return st;
}

lp_status lp_act_init_backward(lp_act *a) {
    if (a->has_bwd) return LP_OK;
    dnnl_eltwise_desc_t desc;
    lp_status st = lp_dnnl_check(dnnl_eltwise_backward_desc_init(&desc, act_alg(a->kind), &a->data_md, &a->data_md, 1.0f, 0.0f),
                                 "activation backward desc");
    if (st) return st;
    dnnl_primitive_desc_t pd;
    if ((st = lp_pd_create(&pd, &desc, a->fwd_pd, act_name(a->kind)))) return st;
    const int kinds[] = {DNNL_ARG_DIFF_DST, a->kind == LP_ACT_SILU ? DNNL_ARG_SRC : DNNL_ARG_DST, DNNL_ARG_DIFF_SRC};
    st = lp_prim_create(&a->bwd, pd, kinds, 3);
    dnnl_primitive_desc_destroy(pd);
    if (!st) a->has_bwd = true;
    return st;
}

size_t lp_act_scratch_size(const lp_act *a) {
    size_t s = a->fwd.scratch_size;
    if (a->has_bwd && a->bwd.scratch_size > s) s = a->bwd.scratch_size;
    return s;
}

lp_status lp_act_forward(lp_act *a, dnnl_stream_t s, const float *x, float *y, void *scratch) {
    void *p[2] = {(void *)x, y};
    return lp_prim_exec(&a->fwd, s, p, scratch);
}

lp_status lp_act_backward(lp_act *a, dnnl_stream_t s, const float *dy, const float *x, const float *y, float *dx, void *scratch) {
    if (!a->has_bwd) return lp_fail(LP_ERR_ARG, "%s: backward not built (lp_act_init_backward)", act_name(a->kind));
    void *p[3] = {(void *)dy, (void *)(a->kind == LP_ACT_SILU ? x : y), dx};
    return lp_prim_exec(&a->bwd, s, p, scratch);
}

void lp_act_free(lp_act *a) {
    if (!a) return;
    lp_prim_free(&a->fwd);
    lp_prim_free(&a->bwd);
    if (a->fwd_pd) dnnl_primitive_desc_destroy(a->fwd_pd);
    memset(a, 0, sizeof *a);
}
