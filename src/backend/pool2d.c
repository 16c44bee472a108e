/* Max pooling forward/backward on oneDNN, floor output size like PyTorch's
 * MaxPool2d (no padding). The output keeps the input's layout family. */
#include "backend.h"
#include <string.h>

lp_status lp_maxpool_init(lp_maxpool *m, int n, int c, int h, int w, int kh, int kw, int sh, int sw, const lp_md *src) {
    memset(m, 0, sizeof *m);
    *m = (lp_maxpool){.n = n, .c = c, .h = h, .w = w, .kh = kh, .kw = kw, .sh = sh, .sw = sw};
    m->oh = (h - kh) / sh + 1;
    m->ow = (w - kw) / sw + 1;
    if (h < kh || w < kw) return lp_fail(LP_ERR_SHAPE, "maxpool: input %dx%d smaller than the %dx%d window", h, w, kh, kw);
    int64_t dd[4] = {n, c, m->oh, m->ow};
    lp_md dst_any = lp_md_any_dt(4, dd, src->data_type);
    dnnl_dims_t strides = {sh, sw}, kernel = {kh, kw}, dil = {0, 0}, pad_l = {0, 0};
    /* Right padding that makes oneDNN's size check hold with floor semantics
     * (negative = rows/columns PyTorch drops). */
    dnnl_dims_t pad_r = {(m->oh - 1) * sh + kh - h, (m->ow - 1) * sw + kw - w};
    dnnl_pooling_v2_desc_t desc;
    lp_status st = lp_dnnl_check(dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_training, dnnl_pooling_max, src, &dst_any,
                                                                   strides, kernel, dil, pad_l, pad_r),
                                 "maxpool forward desc");
    if (st) return st;
    dnnl_primitive_attr_t attr;
    if ((st = lp_attr_create(&attr, false, false))) return st;
    st = lp_dnnl_check(dnnl_primitive_desc_create(&m->fwd_pd, &desc, attr, lp_dnnl_engine(), NULL), "maxpool forward");
    dnnl_primitive_attr_destroy(attr);
    if (st) return st;
    m->src_md = *dnnl_primitive_desc_query_md(m->fwd_pd, dnnl_query_src_md, 0);
    m->dst_md = *dnnl_primitive_desc_query_md(m->fwd_pd, dnnl_query_dst_md, 0);
    m->ws_md = *dnnl_primitive_desc_query_md(m->fwd_pd, dnnl_query_workspace_md, 0);
    static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_WORKSPACE};
    if ((st = lp_prim_create(&m->fwd, m->fwd_pd, kinds, 3))) {
        lp_maxpool_free(m);
        return st;
    }
    return LP_OK;
}

lp_status lp_maxpool_init_backward(lp_maxpool *m) {
    if (m->has_bwd) return LP_OK;
    dnnl_dims_t strides = {m->sh, m->sw}, kernel = {m->kh, m->kw}, dil = {0, 0}, pad_l = {0, 0};
    dnnl_dims_t pad_r = {(m->oh - 1) * m->sh + m->kh - m->h, (m->ow - 1) * m->sw + m->kw - m->w};
    dnnl_pooling_v2_desc_t desc;
    lp_status st = lp_dnnl_check(dnnl_pooling_v2_backward_desc_init(&desc, dnnl_pooling_max, &m->src_md, &m->dst_md, strides,
                                                                    kernel, dil, pad_l, pad_r),
                                 "maxpool backward desc");
    if (st) return st;
    dnnl_primitive_attr_t attr;
    if ((st = lp_attr_create(&attr, false, false))) return st;
    dnnl_primitive_desc_t pd;
    st = lp_dnnl_check(dnnl_primitive_desc_create(&pd, &desc, attr, lp_dnnl_engine(), m->fwd_pd), "maxpool backward");
    dnnl_primitive_attr_destroy(attr);
    if (st) return st;
    static const int kinds[] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WORKSPACE, DNNL_ARG_DIFF_SRC};
    st = lp_prim_create(&m->bwd, pd, kinds, 3);
    dnnl_primitive_desc_destroy(pd);
    if (st) return st;
    m->has_bwd = true;
    return LP_OK;
}

size_t lp_maxpool_scratch_size(const lp_maxpool *m) {
    size_t s = m->fwd.scratch_size;
    if (m->has_bwd && m->bwd.scratch_size > s) s = m->bwd.scratch_size;
    return s;
}

lp_status lp_maxpool_forward(lp_maxpool *m, dnnl_stream_t s, const void *x, void *y, void *ws, void *scratch) {
    void *p[3] = {(void *)x, y, ws};
    return lp_prim_exec(&m->fwd, s, p, scratch);
}

lp_status lp_maxpool_backward(lp_maxpool *m, dnnl_stream_t s, const void *dy, const void *ws, void *dx, void *scratch) {
    void *p[3] = {(void *)dy, (void *)ws, dx};
    return lp_prim_exec(&m->bwd, s, p, scratch);
}

void lp_maxpool_free(lp_maxpool *m) {
    if (!m) return;
    lp_prim_free(&m->fwd);
    lp_prim_free(&m->bwd);
    if (m->fwd_pd) dnnl_primitive_desc_destroy(m->fwd_pd);
    memset(m, 0, sizeof *m);
}
