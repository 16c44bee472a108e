/* Backward weights of a depthwise convolution (groups = channels, EfficientNet's 5x5
 * layers), x and dy fp32 (or bf16 on AVX-512: bf16 nets) in pixel-vector layouts (nChw16c,
 * nChw8c, nhwc), any kernel up to 7x7, any stride and padding; dw fp32 in PyTorch's
 * (c, 1, kh, kw) order, db (c), summed in fp32 (bf16 inputs are exact in fp32).
 *
 * Hand-written because oneDNN 2.6's depthwise kernel (jit_dw) takes 3x3 backward weights
 * only; a 5x5 one falls to its generic grouped kernel (jit:avx512_core), which ran
 * EfficientNet-B0's 5x5 layers at 3-7 GB/s where they have 10-30 MB to read (224x224
 * batch 16, AMD EPYC: 3.4-5.9 ms a layer, 60 ms of the 257 ms backward;
 * bench/depthwise_roofline.sh). In bf16 it runs its generic bf16 kernel (jit_bf16) at
 * 13-55 ms a layer (the same layers, 2026-12-07).
 *
 * A block of blk channels (16 on AVX-512F, 8 on AVX2) is one vector: each tap's gradient
 * is a vector accumulated over the batch's positions in a fixed order (image, row,
 * column), so results do not depend on the threads, which take blocks of channels. A row
 * of taps at a time keeps its sums in registers; the block's planes of x and dy (25 KB for
 * 672 channels at 14x14) stay in the caches over the rows. */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>

#define MAXK 7

/* One block of channels: a row i of taps at a time, its kw sums in registers, over the
 * batch (image, row, column); x's and dy's rows addressed from each image's plane. */
#define DW_BODY(T, VEC, ZERO, LOAD, FMA, ADD, STORE)                                                                        \
    const int kh = p->kh, kw = p->kw, taps = kh * kw;                                                                    \
    float lanes[16];                                                                                                     \
    VEC sb = ZERO();                                                                                                     \
    for (int i = 0; i < kh; i++) {                                                                                       \
        VEC acc[MAXK];                                                                                                   \
        for (int j = 0; j < kw; j++) acc[j] = ZERO();                                                                    \
        for (int n = 0; n < p->n; n++) {                                                                                 \
            /* pixel (y, x) of this block: plane + (y * w + x) * vec (lp_pv_offset with c0 fixed) */                    \
            const T *xpl = xp + lp_pv_offset(n, c0, 0, 0, p->c, p->h, p->w, vec_x);                                      \
            const T *ypl = dyp + lp_pv_offset(n, c0, 0, 0, p->k, oh, ow, vec_y);                                         \
            for (int oy = 0; oy < oh; oy++) {                                                                            \
                const int yy = oy * p->sh - p->ph + i;                                                                   \
                if (yy < 0 || yy >= p->h) {                                                                              \
                    if (i == 0)                                                                                          \
                        for (int ox = 0; ox < ow; ox++) sb = ADD(sb, LOAD(ypl + ((size_t)oy * ow + ox) * vec_y));        \
                    continue;                                                                                            \
                }                                                                                                        \
                const T *xrow = xpl + (size_t)yy * p->w * vec_x, *grow = ypl + (size_t)oy * ow * vec_y;                  \
                for (int ox = 0; ox < ow; ox++) {                                                                        \
                    const VEC g = LOAD(grow + (size_t)ox * vec_y);                                                       \
                    if (i == 0) sb = ADD(sb, g);                                                                         \
                    const int x0 = ox * p->sw - p->pw;                                                                   \
                    for (int j = 0; j < kw; j++)                                                                         \
                        if ((unsigned)(x0 + j) < (unsigned)p->w) acc[j] = FMA(g, LOAD(xrow + (size_t)(x0 + j) * vec_x), acc[j]); \
                }                                                                                                        \
            }                                                                                                            \
        }                                                                                                                \
        for (int j = 0; j < kw; j++) {                                                                                   \
            STORE(lanes, acc[j]);                                                                                        \
            for (int l = 0; l < blk; l++) dw[(size_t)(c0 + l) * taps + i * kw + j] = lanes[l];                           \
        }                                                                                                                \
    }                                                                                                                    \
    if (db) {                                                                                                            \
        STORE(lanes, sb);                                                                                                \
        for (int l = 0; l < blk; l++) db[c0 + l] = lanes[l];                                                             \
    }

__attribute__((target("avx512f"))) static void block16(const lp_conv2d_params *p, int oh, int ow, int vec_x, int vec_y,
                                                       const float *xp, const float *dyp, float *dw, float *db, int c0) {
    const int blk = 16;
    DW_BODY(float, __m512, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps)
}

/* 16 bf16 values as fp32 lanes: exact (a shift) */
__attribute__((target("avx512f"))) static inline __m512 load_bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
__attribute__((target("avx512f"))) static void block16_bf16(const lp_conv2d_params *p, int oh, int ow, int vec_x, int vec_y,
                                                            const uint16_t *xp, const uint16_t *dyp, float *dw, float *db, int c0) {
    const int blk = 16;
    DW_BODY(uint16_t, __m512, _mm512_setzero_ps, load_bf16x16, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps)
}

__attribute__((target("avx2,fma"))) static void block8(const lp_conv2d_params *p, int oh, int ow, int vec_x, int vec_y,
                                                       const float *xp, const float *dyp, float *dw, float *db, int c0) {
    const int blk = 8;
    DW_BODY(float, __m256, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps)
}

bool lp_conv_bwd_w_dw_fits(const lp_conv2d_params *p) { return p->kh <= MAXK && p->kw <= MAXK; }

void lp_conv_bwd_w_dw(const lp_conv2d_params *p, int oh, int ow, int blk, int vec_x, int vec_y, const void *x, const void *dy,
                      float *dw, float *db) {
    const int nb = p->c / blk;
LP_OMP(parallel for schedule(static))
    for (int b = 0; b < nb; b++) {
        if (p->bf16) block16_bf16(p, oh, ow, vec_x, vec_y, x, dy, dw, db, b * blk);
        else if (blk == 16) block16(p, oh, ow, vec_x, vec_y, x, dy, dw, db, b * blk);
        else block8(p, oh, ow, vec_x, vec_y, x, dy, dw, db, b * blk);
    }
}
#endif
