/* Squeeze-and-excitation's channel scale and stochastic depth's per-sample scale: loops
 * of our own (graph_ops.h says why), over the layouts the convolutions hand over. */
#include "graph_ops.h"
#include <string.h>

lp_status lp_channel_scale_init(lp_channel_scale *cs, const lp_md *x_md) {
    memset(cs, 0, sizeof *cs);
    if (x_md->ndims != 4 || x_md->data_type != dnnl_f32)
        return lp_fail(LP_ERR_SHAPE, "channel scale: x must be fp32 (n, c, h, w)");
    cs->n = (int)x_md->dims[0], cs->c = (int)x_md->dims[1], cs->hw = (int)(x_md->dims[2] * x_md->dims[3]);
    int vec = 0;
    if (lp_md_pixel_vectors(x_md, &vec)) {
        cs->vec = vec;
        return LP_OK;
    }
    int64_t d[4] = {x_md->dims[0], x_md->dims[1], x_md->dims[2], x_md->dims[3]};
    const lp_md plain = lp_md_plain(4, d);
    if (lp_md_equal(x_md, &plain)) return LP_OK;
    char buf[32];
    return lp_fail(LP_ERR_SHAPE, "channel scale: layout %s is none of nchw, nhwc, nChw8c, nChw16c", lp_md_layout(x_md, buf, sizeof buf));
}

/* Pixel vectors: sample i's values are hw x c in blocks of vec channels, block b of
 * hw x vec values at (i * c / vec + b) * hw * vec; nhwc is one block of vec = c. */
void lp_channel_scale_forward(const lp_channel_scale *cs, const float *x, const float *gate, float *y) {
    const int n = cs->n, c = cs->c, hw = cs->hw, v = cs->vec ? cs->vec : 1, nb = c / v;
LP_OMP(parallel for collapse(2) if ((long long)n * c * hw > 65536))
    for (int i = 0; i < n; i++)
        for (int b = 0; b < nb; b++) {
            const size_t o = ((size_t)i * nb + b) * hw * v;
            const float *g = gate + (size_t)i * c + (size_t)b * v;
            for (int p = 0; p < hw; p++)
                for (int k = 0; k < v; k++) y[o + (size_t)p * v + k] = x[o + (size_t)p * v + k] * g[k];
        }
}

void lp_channel_scale_backward(const lp_channel_scale *cs, const float *x, const float *gate, float *dy_dx, float *dgate) {
    const int n = cs->n, c = cs->c, hw = cs->hw, v = cs->vec ? cs->vec : 1, nb = c / v;
LP_OMP(parallel for collapse(2) if ((long long)n * c * hw > 65536))
    for (int i = 0; i < n; i++)
        for (int b = 0; b < nb; b++) {
            const size_t o = ((size_t)i * nb + b) * hw * v;
            const float *g = gate + (size_t)i * c + (size_t)b * v;
            float *dg = dgate + (size_t)i * c + (size_t)b * v;
            for (int k = 0; k < v; k++) dg[k] = 0.0f;
            for (int p = 0; p < hw; p++)
                for (int k = 0; k < v; k++) {
                    const size_t e = o + (size_t)p * v + k;
                    dg[k] += dy_dx[e] * x[e];
                    dy_dx[e] *= g[k];
                }
        }
}

void lp_scale_samples(const float *x, const float *m, float *y, int n, size_t per) {
    for (int i = 0; i < n; i++) {
        const long long cnt = (long long)per;
        const float *xi = x + (size_t)i * per;
        float *yi = y + (size_t)i * per;
        const float s = m[i];
LP_OMP(parallel for if (cnt > 65536))
        for (long long j = 0; j < cnt; j++) yi[j] = xi[j] * s;
    }
}
