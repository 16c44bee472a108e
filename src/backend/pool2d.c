/* Max pooling forward/backward, floor output size like PyTorch's MaxPool2d, with its
 * symmetric padding (padded positions never win: PyTorch's -inf). The output keeps the
 * input's layout family. 2x2 stride 2 without padding on a layout with 16k channels per
 * pixel runs our AVX-512 kernel (maxpool2x2.c); everything else runs oneDNN's (always
 * where that kernel is not built: backend.h's LP_X86_KERNELS). */
#include "backend.h"
#include <stdio.h>
#include <string.h>

#if LP_X86_KERNELS
static lp_status own_init(lp_maxpool *m, const lp_md *src) {
    m->own = true;
    m->src_md = *src;
    dnnl_dims_t dd = {m->n, m->c, m->oh, m->ow};
    dnnl_format_tag_t tag = src->format_desc.blocking.inner_nblks ? dnnl_aBcd16b : dnnl_acdb;
    if (dnnl_memory_desc_init_by_tag(&m->dst_md, 4, dd, src->data_type, tag) != dnnl_success)
        return lp_fail(LP_ERR_BACKEND, "maxpool: cannot describe the output layout");
    m->ws_size = (size_t)m->n * m->c * m->oh * m->ow;
    snprintf(m->fwd.impl, sizeof m->fwd.impl, "loupe:avx512_2x2");
    snprintf(m->bwd.impl, sizeof m->bwd.impl, "loupe:avx512_2x2");
    return LP_OK;
}
#endif

bool lp_maxpool_own_allowed = true;

lp_status lp_maxpool_init(lp_maxpool *m, int n, int c, int h, int w, int kh, int kw, int sh, int sw, const lp_md *src) {
    return lp_maxpool_init_padded(m, n, c, h, w, kh, kw, sh, sw, 0, 0, src);
}

lp_status lp_maxpool_init_padded(lp_maxpool *m, int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                                 const lp_md *src) {
    memset(m, 0, sizeof *m);
    *m = (lp_maxpool){.n = n, .c = c, .h = h, .w = w, .kh = kh, .kw = kw, .sh = sh, .sw = sw};
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1) return lp_fail(LP_ERR_SHAPE, "maxpool: window %dx%d, stride %dx%d", kh, kw, sh, sw);
    /* PyTorch's limit too: a wider pad would make windows of padding alone */
    if (ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw)
        return lp_fail(LP_ERR_SHAPE, "maxpool: padding %dx%d must be at most half the %dx%d window", ph, pw, kh, kw);
    if (h + 2 * ph < kh || w + 2 * pw < kw)
        return lp_fail(LP_ERR_SHAPE, "maxpool: input %dx%d (padded by %dx%d) smaller than the %dx%d window", h, w, ph, pw, kh,
                       kw);
    m->oh = (h + 2 * ph - kh) / sh + 1;
    m->ow = (w + 2 * pw - kw) / sw + 1;
#if LP_X86_KERNELS
    int vec;
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && lp_maxpool_own_allowed &&
        lp_cpu_isa() >= LP_ISA_AVX512 && (src->data_type == dnnl_f32 || src->data_type == dnnl_bf16) &&
        lp_md_pixel_vectors(src, &vec) && vec % 16 == 0) {
        m->vec = vec;
        m->planes = n * c / vec; /* unpadded (lp_md_pixel_vectors) */
        return own_init(m, src);
    }
#endif
    int64_t dd[4] = {n, c, m->oh, m->ow};
    lp_md dst_any = lp_md_any_dt(4, dd, src->data_type);
    dnnl_dims_t strides = {sh, sw}, kernel = {kh, kw}, dil = {0, 0}, pad_l = {ph, pw};
    /* Right padding that makes oneDNN's size check hold with floor semantics
     * (negative = rows/columns PyTorch drops). */
    dnnl_dims_t pad_r = {(m->oh - 1) * sh + kh - h - ph, (m->ow - 1) * sw + kw - w - pw};
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
    m->ws_size = lp_md_size(dnnl_primitive_desc_query_md(m->fwd_pd, dnnl_query_workspace_md, 0));
    static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_WORKSPACE};
    if ((st = lp_prim_create(&m->fwd, m->fwd_pd, kinds, 3))) {
        lp_maxpool_free(m);
        return st;
    }
    return LP_OK;
}

lp_status lp_maxpool_init_backward(lp_maxpool *m) {
    if (m->has_bwd) return LP_OK;
    if (m->own) {
        m->has_bwd = true;
        return LP_OK;
    }
    /* the forward's window and padding, as oneDNN holds them (lp_maxpool keeps no padding) */
    const dnnl_pooling_v2_desc_t *f = NULL;
    if (dnnl_primitive_desc_query(m->fwd_pd, dnnl_query_pooling_v2_d, 0, &f) != dnnl_success || !f)
        return lp_fail(LP_ERR_BACKEND, "oneDNN: maxpool forward has no pooling descriptor");
    dnnl_dims_t strides, kernel, dil, pad_l, pad_r;
    for (int i = 0; i < 2; i++) {
        strides[i] = f->strides[i];
        kernel[i] = f->kernel[i];
        dil[i] = f->dilation[i];
        pad_l[i] = f->padding[0][i];
        pad_r[i] = f->padding[1][i];
    }
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
#if LP_X86_KERNELS
    if (m->own) {
        lp_maxpool2x2_forward(x, y, ws, m->planes, m->h, m->w, m->vec, m->src_md.data_type == dnnl_bf16);
        return LP_OK;
    }
#endif
    void *p[3] = {(void *)x, y, ws};
    return lp_prim_exec(&m->fwd, s, p, scratch);
}

lp_status lp_maxpool_backward(lp_maxpool *m, dnnl_stream_t s, const void *dy, const void *ws, void *dx, void *scratch) {
#if LP_X86_KERNELS
    if (m->own) {
        lp_maxpool2x2_backward(dy, ws, dx, m->planes, m->h, m->w, m->vec, m->src_md.data_type == dnnl_bf16, m->relu_backward);
        return LP_OK;
    }
#endif
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
