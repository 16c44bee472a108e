/* Global average pooling forward/backward (fp32, or bf16 in and out) on oneDNN's average
 * pooling with one h x w window (no padding, so including or excluding it is the same). oneDNN's jit pooling
 * wants the output in the input's layout; at 1x1 pixel each of the layouts taken here is
 * (n, c) row-major, so the caller gets a plain matrix without a reorder. */
#include "graph_ops.h"
#include <string.h>

/* The layout tag src has, among those whose (n, c, 1, 1) form is (n, c) row-major. */
static bool plain_at_1x1_tag(const lp_md *src, dnnl_format_tag_t *tag) {
    static const dnnl_format_tag_t tags[] = {dnnl_nchw, dnnl_nhwc, dnnl_nChw8c, dnnl_nChw16c};
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        lp_md md;
        if (dnnl_memory_desc_init_by_tag(&md, 4, src->dims, src->data_type, tags[i]) != dnnl_success) continue;
        /* blocked by 8 or 16 with padded channels would leave gaps between the rows */
        if (lp_md_equal(&md, src) && md.padded_dims[1] == md.dims[1]) {
            *tag = tags[i];
            return true;
        }
    }
    return false;
}

lp_status lp_global_avgpool_init(lp_global_avgpool *g, const lp_md *src) {
    memset(g, 0, sizeof *g);
    if (src->ndims != 4 || (src->data_type != dnnl_f32 && src->data_type != dnnl_bf16))
        return lp_fail(LP_ERR_SHAPE, "global avgpool: the input must be fp32 or bf16 (n, c, h, w)");
    g->n = (int)src->dims[0], g->c = (int)src->dims[1], g->h = (int)src->dims[2], g->w = (int)src->dims[3];
    dnnl_format_tag_t tag;
    char buf[64];
    if (!plain_at_1x1_tag(src, &tag))
        return lp_fail(LP_ERR_SHAPE,
                       "global avgpool: layout %s of (%d, %d, %d, %d) not taken; give nchw, nhwc, or nChw8c / nChw16c "
                       "without padded channels",
                       lp_md_layout(src, buf, sizeof buf), g->n, g->c, g->h, g->w);
    g->src_md = *src;
    dnnl_dims_t dd = {g->n, g->c, 1, 1};
    if (dnnl_memory_desc_init_by_tag(&g->dst_md, 4, dd, src->data_type, tag) != dnnl_success)
        return lp_fail(LP_ERR_BACKEND, "global avgpool: cannot describe the output");
    dnnl_dims_t strides = {1, 1}, kernel = {g->h, g->w}, dil = {0, 0}, pad = {0, 0};
    dnnl_pooling_v2_desc_t desc;
    lp_status st = lp_dnnl_check(dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_training, dnnl_pooling_avg_exclude_padding,
                                                                   &g->src_md, &g->dst_md, strides, kernel, dil, pad, pad),
                                 "global avgpool forward desc");
    if (st) return st;
    if ((st = lp_pd_create(&g->fwd_pd, &desc, NULL, "global avgpool forward"))) return st;
    static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST};
    if ((st = lp_prim_create(&g->fwd, g->fwd_pd, kinds, 2))) {
        lp_global_avgpool_free(g);
        return st;
    }
    return LP_OK;
}

lp_status lp_global_avgpool_init_backward(lp_global_avgpool *g) {
    if (g->has_bwd) return LP_OK;
    dnnl_dims_t strides = {1, 1}, kernel = {g->h, g->w}, dil = {0, 0}, pad = {0, 0};
    dnnl_pooling_v2_desc_t desc;
    lp_status st = lp_dnnl_check(dnnl_pooling_v2_backward_desc_init(&desc, dnnl_pooling_avg_exclude_padding, &g->src_md,
                                                                    &g->dst_md, strides, kernel, dil, pad, pad),
                                 "global avgpool backward desc");
    if (st) return st;
    dnnl_primitive_desc_t pd;
    if ((st = lp_pd_create(&pd, &desc, g->fwd_pd, "global avgpool backward"))) return st;
    static const int kinds[] = {DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC};
    st = lp_prim_create(&g->bwd, pd, kinds, 2);
    dnnl_primitive_desc_destroy(pd);
    if (st) return st;
    g->has_bwd = true;
    return LP_OK;
}

size_t lp_global_avgpool_scratch_size(const lp_global_avgpool *g) {
    size_t s = g->fwd.scratch_size;
    if (g->has_bwd && g->bwd.scratch_size > s) s = g->bwd.scratch_size;
    return s;
}

lp_status lp_global_avgpool_forward(lp_global_avgpool *g, dnnl_stream_t s, const float *x, float *y, void *scratch) {
    void *p[2] = {(void *)x, y};
    return lp_prim_exec(&g->fwd, s, p, scratch);
}

lp_status lp_global_avgpool_backward(lp_global_avgpool *g, dnnl_stream_t s, const float *dy, float *dx, void *scratch) {
    if (!g->has_bwd) return lp_fail(LP_ERR_ARG, "global avgpool: backward not built (lp_global_avgpool_init_backward)");
    void *p[2] = {(void *)dy, dx};
    return lp_prim_exec(&g->bwd, s, p, scratch);
}

bool lp_global_avgpool_backward_add(const lp_global_avgpool *g, const float *dy, float *dx) {
    int vec;
    if (g->src_md.data_type != dnnl_f32 || !lp_md_pixel_vectors(&g->src_md, &vec)) return false;
    const int n = g->n, c = g->c, hw = g->h * g->w, nb = c / vec;
LP_OMP(parallel for collapse(2) if ((long long)n * c * hw > 65536))
    for (int i = 0; i < n; i++)
        for (int b = 0; b < nb; b++) {
            const float *d = dy + (size_t)i * c + (size_t)b * vec;
            float *o = dx + ((size_t)i * nb + b) * hw * vec;
            for (int p = 0; p < hw; p++)
                for (int k = 0; k < vec; k++) o[(size_t)p * vec + k] += d[k] / (float)hw; /* PyTorch divides */
        }
    return true;
}

void lp_global_avgpool_free(lp_global_avgpool *g) {
    if (!g) return;
    lp_prim_free(&g->fwd);
    lp_prim_free(&g->bwd);
    if (g->fwd_pd) dnnl_primitive_desc_destroy(g->fwd_pd);
    memset(g, 0, sizeof *g);
}
