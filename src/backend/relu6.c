/* ReLU6 forward/backward on oneDNN's eltwise clip_v2 (alpha 0, beta 6): forward in place on
 * the batch norm's output, backward from that output (clip_v2_use_dst_for_bwd: dy where
 * 0 < y < 6), so nothing is kept for it. */
#include "graph_ops.h"
#include <string.h>

lp_status lp_relu6_init(lp_relu6 *r, const lp_md *data_md) {
    memset(r, 0, sizeof *r);
    r->data_md = *data_md;
    if (data_md->format_kind != dnnl_blocked) return lp_fail(LP_ERR_SHAPE, "relu6: the data needs a concrete layout");
    dnnl_eltwise_desc_t desc;
    lp_status st = lp_dnnl_check(dnnl_eltwise_forward_desc_init(&desc, dnnl_forward_training, dnnl_eltwise_clip_v2_use_dst_for_bwd,
                                                               &r->data_md, 0.0f, 6.0f),
                                 "relu6 forward desc");
    if (st) return st;
    if ((st = lp_pd_create(&r->fwd_pd, &desc, NULL, "relu6 forward"))) return st;
    static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST};
    if ((st = lp_prim_create(&r->fwd, r->fwd_pd, kinds, 2))) lp_relu6_free(r);
    return st;
}

lp_status lp_relu6_init_backward(lp_relu6 *r) {
    if (r->has_bwd) return LP_OK;
    dnnl_eltwise_desc_t desc;
    lp_status st = lp_dnnl_check(dnnl_eltwise_backward_desc_init(&desc, dnnl_eltwise_clip_v2_use_dst_for_bwd, &r->data_md, &r->data_md,
                                                                0.0f, 6.0f),
                                 "relu6 backward desc");
    if (st) return st;
    dnnl_primitive_desc_t pd;
    if ((st = lp_pd_create(&pd, &desc, r->fwd_pd, "relu6 backward"))) return st;
    static const int kinds[] = {DNNL_ARG_DIFF_DST, DNNL_ARG_DST, DNNL_ARG_DIFF_SRC};
    st = lp_prim_create(&r->bwd, pd, kinds, 3);
    dnnl_primitive_desc_destroy(pd);
    if (!st) r->has_bwd = true;
    return st;
}

size_t lp_relu6_scratch_size(const lp_relu6 *r) {
    size_t s = r->fwd.scratch_size;
    if (r->has_bwd && r->bwd.scratch_size > s) s = r->bwd.scratch_size;
    return s;
}

lp_status lp_relu6_forward(lp_relu6 *r, dnnl_stream_t s, float *y, void *scratch) {
    void *p[2] = {y, y};
    return lp_prim_exec(&r->fwd, s, p, scratch);
}

lp_status lp_relu6_backward(lp_relu6 *r, dnnl_stream_t s, float *dy, const float *y, void *scratch) {
    if (!r->has_bwd) return lp_fail(LP_ERR_ARG, "relu6: backward not built (lp_relu6_init_backward)");
    void *p[3] = {dy, (void *)y, dy};
    return lp_prim_exec(&r->bwd, s, p, scratch);
}

void lp_relu6_free(lp_relu6 *r) {
    if (!r) return;
    lp_prim_free(&r->fwd);
    lp_prim_free(&r->bwd);
    if (r->fwd_pd) dnnl_primitive_desc_destroy(r->fwd_pd);
    memset(r, 0, sizeof *r);
}
