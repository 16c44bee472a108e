/* Backward weights of a depthwise convolution (groups = channels, EfficientNet's 5x5
 * layers), fp32, x and dy in pixel-vector layouts (nChw16c, nChw8c, nhwc), any kernel up
 * to 7x7, any stride and padding; dw fp32 in PyTorch's (c, 1, kh, kw) order, db (c).
 *
 * Hand-written because oneDNN 2.6's depthwise kernel (jit_dw) takes 3x3 backward weights
 * only; a 5x5 one falls to its generic grouped kernel (jit:avx512_core), which ran
 * EfficientNet-B0's 5x5 layers at 3-7 GB/s where they have 10-30 MB to read (224x224
 * batch 16, AMD EPYC: 3.4-5.9 ms a layer, 60 ms of the 257 ms backward;
 * bench/depthwise_roofline.sh).
 *
 * A block of blk channels (16 on AVX-512F, 8 on AVX2) is one vector: each tap's gradient
 * is a vector accumulated over the batch's positions in a fixed order (image, row,
 * column), so results do not depend on the threads, which take blocks of channels. */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>

#define MAXK 7

#define DW_BODY(VEC, ZERO, LOAD, FMA, ADD, STORE)                                                                          \
    const int kh = p->kh, kw = p->kw, taps = kh * kw;                                                                    \
    VEC acc[MAXK * MAXK], sb = ZERO();                                                                                   \
    for (int t = 0; t < taps; t++) acc[t] = ZERO();                                                                      \
    for (int n = 0; n < p->n; n++)                                                                                       \
        for (int oy = 0; oy < oh; oy++) {                                                                                \
            const int y0 = oy * p->sh - p->ph;                                                                           \
            for (int ox = 0; ox < ow; ox++) {                                                                            \
                const VEC g = LOAD(dyp + lp_pv_offset(n, c0, oy, ox, p->k, oh, ow, vec_y));                              \
                sb = ADD(sb, g);                                                                                         \
                const int x0 = ox * p->sw - p->pw;                                                                       \
                for (int i = 0; i < kh; i++) {                                                                           \
                    const int yy = y0 + i;                                                                               \
                    if (yy < 0 || yy >= p->h) continue;                                                                  \
                    for (int j = 0; j < kw; j++) {                                                                       \
                        const int xx = x0 + j;                                                                           \
                        if (xx < 0 || xx >= p->w) continue;                                                              \
                        acc[i * kw + j] = FMA(g, LOAD(xp + lp_pv_offset(n, c0, yy, xx, p->c, p->h, p->w, vec_x)), acc[i * kw + j]); \
                    }                                                                                                    \
                }                                                                                                        \
            }                                                                                                            \
        }                                                                                                                \
    float lanes[16];                                                                                                     \
    for (int t = 0; t < taps; t++) {                                                                                     \
        STORE(lanes, acc[t]);                                                                                            \
        for (int l = 0; l < blk; l++) dw[(size_t)(c0 + l) * taps + t] = lanes[l];                                        \
    }                                                                                                                    \
    if (db) {                                                                                                            \
        STORE(lanes, sb);                                                                                                \
        for (int l = 0; l < blk; l++) db[c0 + l] = lanes[l];                                                             \
    }

__attribute__((target("avx512f"))) static void block16(const lp_conv2d_params *p, int oh, int ow, int vec_x, int vec_y,
                                                       const float *xp, const float *dyp, float *dw, float *db, int c0) {
    const int blk = 16;
    DW_BODY(__m512, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps)
}

__attribute__((target("avx2,fma"))) static void block8(const lp_conv2d_params *p, int oh, int ow, int vec_x, int vec_y,
                                                       const float *xp, const float *dyp, float *dw, float *db, int c0) {
    const int blk = 8;
    DW_BODY(__m256, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps)
}

bool lp_conv_bwd_w_dw_fits(const lp_conv2d_params *p) { return p->kh <= MAXK && p->kw <= MAXK; }

void lp_conv_bwd_w_dw(const lp_conv2d_params *p, int blk, int vec_x, int vec_y, const float *x, const float *dy, float *dw,
                      float *db) {
    const int oh = (p->h + 2 * p->ph - p->kh) / p->sh + 1, ow = (p->w + 2 * p->pw - p->kw) / p->sw + 1, nb = p->c / blk;
LP_OMP(parallel for schedule(static))
    for (int b = 0; b < nb; b++) {
        if (blk == 16) block16(p, oh, ow, vec_x, vec_y, x, dy, dw, db, b * blk);
        else block8(p, oh, ow, vec_x, vec_y, x, dy, dw, db, b * blk);
    }
}
#endif
