/* Squeeze-and-excitation's channel scale and stochastic depth's per-sample scale: loops
 * of our own (graph_ops.h says why), over the layouts the convolutions hand over. */
#include "backend.h"
#include "graph_ops.h"
#include <string.h>

lp_status lp_channel_scale_init(lp_channel_scale *cs, const lp_md *x_md, bool gate_bf16) {
    memset(cs, 0, sizeof *cs);
    if (x_md->ndims != 4 || (x_md->data_type != dnnl_f32 && x_md->data_type != dnnl_bf16))
        return lp_fail(LP_ERR_SHAPE, "channel scale: x must be fp32 or bf16 (n, c, h, w)");
    cs->x_bf16 = x_md->data_type == dnnl_bf16, cs->gate_bf16 = gate_bf16;
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
/* bf16 nets: x, y, dy, dx in bf16, the gate in bf16 or fp32 (the dense layers before it run
 * in bf16 only at batches over 4); each product is made in fp32 and rounded once, dgate's
 * sum kept in fp32 and rounded at the end, as PyTorch's bf16 multiply and reduction do. */
static inline float ld(const void *p, size_t i, bool bf16) {
    return bf16 ? lp_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
static inline void st(void *p, size_t i, float v, bool bf16) {
    if (bf16) ((uint16_t *)p)[i] = lp_f32_to_bf16(v);
    else ((float *)p)[i] = v;
}

/* One (sample i, block b of channels) each: y = x * gate (dgate NULL), or the backward on
 * dy in place; a parallel loop over the blocks runs them (each_block). */
typedef void (*block_fn)(const lp_channel_scale *cs, const void *x, const void *gate, void *y_or_dy, void *dgate, int i, int b);

static void each_block(const lp_channel_scale *cs, block_fn f, const void *x, const void *gate, void *y_or_dy, void *dgate) {
    const int n = cs->n, nb = cs->c / (cs->vec ? cs->vec : 1);
LP_OMP(parallel for collapse(2) if ((long long)n * cs->c * cs->hw > 65536))
    for (int i = 0; i < n; i++)
        for (int b = 0; b < nb; b++) f(cs, x, gate, y_or_dy, dgate, i, b);
}

static void forward_block_bf16(const lp_channel_scale *cs, const void *x, const void *gate, void *y, void *unused, int i, int b) {
    const int c = cs->c, hw = cs->hw, v = cs->vec ? cs->vec : 1, nb = c / v;
    const bool xb = cs->x_bf16, gb = cs->gate_bf16;
    const size_t o = ((size_t)i * nb + b) * hw * v, go = (size_t)i * c + (size_t)b * v;
    for (int p = 0; p < hw; p++)
        for (int k = 0; k < v; k++) {
            const size_t e = o + (size_t)p * v + k;
            st(y, e, ld(x, e, xb) * ld(gate, go + k, gb), xb);
        }
}

static void backward_block_bf16(const lp_channel_scale *cs, const void *x, const void *gate, void *dy_dx, void *dgate, int i, int b) {
    const int c = cs->c, hw = cs->hw, v = cs->vec ? cs->vec : 1, nb = c / v;
    const bool xb = cs->x_bf16, gb = cs->gate_bf16;
    const size_t o = ((size_t)i * nb + b) * hw * v, go = (size_t)i * c + (size_t)b * v;
    float dg[64];
    for (int k0 = 0; k0 < v; k0 += 64) {
        const int kn = v - k0 < 64 ? v - k0 : 64;
        for (int k = 0; k < kn; k++) dg[k] = 0.0f;
        for (int p = 0; p < hw; p++)
            for (int k = 0; k < kn; k++) {
                const size_t e = o + (size_t)p * v + k0 + k;
                const float d = ld(dy_dx, e, xb);
                dg[k] += d * ld(x, e, xb);
                st(dy_dx, e, d * ld(gate, go + k0 + k, gb), xb);
            }
        for (int k = 0; k < kn; k++) st(dgate, go + k0 + k, dg[k], gb);
    }
}

#if LP_X86_KERNELS /* x86-64 code (backend.h) */
#include <immintrin.h>
/* bf16 runs only where the CPU has AVX512-BF16 (lp_bf16_native): 16 channels a vector, where
 * a pixel's channels come in multiples of 16 (nChw16c, nhwc); bf16 -> fp32 is a shift,
 * fp32 -> bf16 vcvtneps2bf16 (round to nearest even, as lp_f32_to_bf16 and oneDNN). The
 * parallel loop stays outside (an OpenMP region's outlined body would not inherit the
 * target attribute). */
#define TARGET __attribute__((target("avx512f,avx512bf16")))
#define VEC_MAX 2048 /* channels a pixel vector may have for dgate's sums on the stack */
TARGET static inline __m512 load16(const void *p, size_t i, bool bf16) {
    if (!bf16) return _mm512_loadu_ps((const float *)p + i);
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
TARGET static inline void store16(void *p, size_t i, __m512 v, bool bf16) {
    if (bf16) _mm256_storeu_si256((__m256i *)((uint16_t *)p + i), (__m256i)_mm512_cvtneps_pbh(v));
    else _mm512_storeu_ps((float *)p + i, v);
}

TARGET static void forward_block_avx512(const lp_channel_scale *cs, const void *x, const void *gate, void *y, void *unused, int i, int b) {
    const int c = cs->c, hw = cs->hw, v = cs->vec, nb = c / v;
    const bool xb = cs->x_bf16, gb = cs->gate_bf16;
    const size_t o = ((size_t)i * nb + b) * hw * v, go = (size_t)i * c + (size_t)b * v;
    for (int p = 0; p < hw; p++)
        for (int k = 0; k < v; k += 16) {
            const size_t e = o + (size_t)p * v + k;
            store16(y, e, _mm512_mul_ps(load16(x, e, xb), load16(gate, go + k, gb)), xb);
        }
}

TARGET static void backward_block_avx512(const lp_channel_scale *cs, const void *x, const void *gate, void *dy_dx, void *dgate, int i,
                                         int b) {
    const int c = cs->c, hw = cs->hw, v = cs->vec, nb = c / v;
    const bool xb = cs->x_bf16, gb = cs->gate_bf16;
    const size_t o = ((size_t)i * nb + b) * hw * v, go = (size_t)i * c + (size_t)b * v;
    float dg[VEC_MAX] __attribute__((aligned(64)));
    for (int k = 0; k < v; k += 16) _mm512_store_ps(dg + k, _mm512_setzero_ps());
    for (int p = 0; p < hw; p++)
        for (int k = 0; k < v; k += 16) {
            const size_t e = o + (size_t)p * v + k;
            const __m512 d = load16(dy_dx, e, xb);
            _mm512_store_ps(dg + k, _mm512_fmadd_ps(d, load16(x, e, xb), _mm512_load_ps(dg + k)));
            store16(dy_dx, e, _mm512_mul_ps(d, load16(gate, go + k, gb)), xb);
        }
    for (int k = 0; k < v; k += 16) store16(dgate, go + k, _mm512_load_ps(dg + k), gb);
}

static bool vector_bf16(const lp_channel_scale *cs) { return lp_bf16_native() && cs->vec && cs->vec % 16 == 0 && cs->vec <= VEC_MAX; }
#define FORWARD_BF16(cs) (vector_bf16(cs) ? forward_block_avx512 : forward_block_bf16)
#define BACKWARD_BF16(cs) (vector_bf16(cs) ? backward_block_avx512 : backward_block_bf16)
#else
#define FORWARD_BF16(cs) forward_block_bf16
#define BACKWARD_BF16(cs) backward_block_bf16
#endif

void lp_channel_scale_forward(const lp_channel_scale *cs, const void *xv, const void *gatev, void *yv) {
    if (cs->x_bf16 || cs->gate_bf16) {
        each_block(cs, FORWARD_BF16(cs), xv, gatev, yv, NULL);
        return;
    }
    const float *x = xv, *gate = gatev;
    float *y = yv;
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

/* fp32: dx = dy * gate, dx may be dy */
static void backward_f32(const lp_channel_scale *cs, const float *x, const float *gate, const float *dy, float *dx, float *dgate) {
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
                    dg[k] += dy[e] * x[e];
                    dx[e] = dy[e] * g[k];
                }
        }
}

void lp_channel_scale_backward(const lp_channel_scale *cs, const void *xv, const void *gatev, void *dy_dxv, void *dgatev) {
    if (cs->x_bf16 || cs->gate_bf16) each_block(cs, BACKWARD_BF16(cs), xv, gatev, dy_dxv, dgatev);
    else backward_f32(cs, xv, gatev, dy_dxv, dy_dxv, dgatev);
}

bool lp_channel_scale_backward_into(const lp_channel_scale *cs, const void *x, const void *gate, const float *dy, float *dx, void *dgate) {
    if (cs->x_bf16 || cs->gate_bf16) return false;
    backward_f32(cs, x, gate, dy, dx, dgate);
    return true;
}

void lp_scale_samples(const void *xv, const float *m, void *yv, int n, size_t per, bool bf16) {
    if (bf16) {
        for (int i = 0; i < n; i++) lp_bf16_scale((const uint16_t *)xv + (size_t)i * per, m[i], (uint16_t *)yv + (size_t)i * per, per);
        return;
    }
    const float *x = xv;
    float *y = yv;
    for (int i = 0; i < n; i++) {
        const long long cnt = (long long)per;
        const float *xi = x + (size_t)i * per;
        float *yi = y + (size_t)i * per;
        const float s = m[i];
LP_OMP(parallel for if (cnt > 65536))
        for (long long j = 0; j < cnt; j++) yi[j] = xi[j] * s;
    }
}
