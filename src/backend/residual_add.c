/* Residual add forward/backward, fp32 or bf16 (bf16 nets): oneDNN's binary add with the
 * ReLU as a post-op (one pass over a, b and y), and the ReLU's backward as oneDNN's eltwise backward from its
 * output y (relu_use_dst_for_bwd: the mask comes from y, so nothing is kept for it). */
#include "graph_ops.h"
#include <string.h>

lp_status lp_residual_add_init(lp_residual_add *r, const lp_md *data_md, bool relu) {
    memset(r, 0, sizeof *r);
    r->data_md = *data_md;
    r->relu = relu;
    if (data_md->ndims != 4 || (data_md->data_type != dnnl_f32 && data_md->data_type != dnnl_bf16) || data_md->format_kind != dnnl_blocked)
        return lp_fail(LP_ERR_SHAPE, "residual add: the inputs must be fp32 or bf16 (n, c, h, w) in a concrete layout");
    dnnl_binary_desc_t desc;
    lp_status st =
        lp_dnnl_check(dnnl_binary_desc_init(&desc, dnnl_binary_add, data_md, data_md, data_md), "residual add desc");
    if (st) return st;
    dnnl_primitive_attr_t attr;
    if ((st = lp_attr_create(&attr, relu, false))) return st;
    dnnl_primitive_desc_t pd;
    st = lp_dnnl_check(dnnl_primitive_desc_create(&pd, &desc, attr, lp_dnnl_engine(), NULL), "residual add");
    dnnl_primitive_attr_destroy(attr);
    if (st) return st;
    static const int kinds[] = {DNNL_ARG_SRC_0, DNNL_ARG_SRC_1, DNNL_ARG_DST};
    st = lp_prim_create(&r->fwd, pd, kinds, 3);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* With relu: eltwise backward, which needs its forward's descriptor as a hint. */
static lp_status relu_backward_init(lp_residual_add *r) {
    dnnl_eltwise_desc_t fdesc, bdesc;
    lp_status st = lp_dnnl_check(dnnl_eltwise_forward_desc_init(&fdesc, dnnl_forward_training, dnnl_eltwise_relu_use_dst_for_bwd,
                                                                &r->data_md, 0.0f, 0.0f),
                                 "residual add relu forward desc");
    if (st) return st;
    if ((st = lp_dnnl_check(dnnl_eltwise_backward_desc_init(&bdesc, dnnl_eltwise_relu_use_dst_for_bwd, &r->data_md, &r->data_md,
                                                            0.0f, 0.0f),
                            "residual add relu backward desc")))
        return st;
    dnnl_primitive_attr_t attr;
    if ((st = lp_attr_create(&attr, false, false))) return st;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    st = lp_dnnl_check(dnnl_primitive_desc_create(&fpd, &fdesc, attr, lp_dnnl_engine(), NULL), "residual add relu forward");
    if (!st)
        st = lp_dnnl_check(dnnl_primitive_desc_create(&bpd, &bdesc, attr, lp_dnnl_engine(), fpd), "residual add relu backward");
    dnnl_primitive_attr_destroy(attr);
    if (!st) {
        static const int kinds[] = {DNNL_ARG_DIFF_DST, DNNL_ARG_DST, DNNL_ARG_DIFF_SRC};
        st = lp_prim_create(&r->bwd, bpd, kinds, 3);
    }
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    return st;
}

lp_status lp_residual_add_init_backward(lp_residual_add *r) {
    if (r->has_bwd) return LP_OK;
    lp_status st;
    if (r->relu) {
        st = relu_backward_init(r);
    } else {
        /* dx = dy: a reorder into the same layout copies with oneDNN's threads */
        lp_reorder copy;
        st = lp_reorder_init(&copy, &r->data_md, &r->data_md, false);
        if (!st) r->bwd = copy.prim;
    }
    if (st) return st;
    r->has_bwd = true;
    return LP_OK;
}

size_t lp_residual_add_scratch_size(const lp_residual_add *r) {
    size_t s = r->fwd.scratch_size;
    if (r->has_bwd && r->bwd.scratch_size > s) s = r->bwd.scratch_size;
    return s;
}

lp_status lp_residual_add_forward(lp_residual_add *r, dnnl_stream_t s, const float *a, const float *b, float *y, void *scratch) {
    /* oneDNN's binary works in place on its first input only */
    if (y == b) {
        const float *t = a;
        a = b;
        b = t;
    }
    void *p[3] = {(void *)a, (void *)b, y};
    return lp_prim_exec(&r->fwd, s, p, scratch);
}

lp_status lp_residual_add_backward(lp_residual_add *r, dnnl_stream_t s, const float *dy, const float *y, float *dx,
                                   void *scratch) {
    if (!r->has_bwd) return lp_fail(LP_ERR_ARG, "residual add: backward not built (lp_residual_add_init_backward)");
    if (r->relu) {
        void *p[3] = {(void *)dy, (void *)y, dx};
        return lp_prim_exec(&r->bwd, s, p, scratch);
    }
    if (dx == dy) return LP_OK;
    void *p[2] = {(void *)dy, dx};
    return lp_prim_exec(&r->bwd, s, p, scratch);
}

void lp_residual_add_free(lp_residual_add *r) {
    if (!r) return;
    lp_prim_free(&r->fwd);
    lp_prim_free(&r->bwd);
    memset(r, 0, sizeof *r);
}
