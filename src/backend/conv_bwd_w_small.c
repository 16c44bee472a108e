/* Backward weights of a 3x3, stride 1, pad 1 convolution on small maps (h*w <= 16),
 * on AVX-512F: activations fp32 or bf16 in a pixel-vector layout (nhwc, nChw16c),
 * gradient fp32 in OIhw16i16o (oneDNN's ABcd16b16a: [o/16][i/16][kh][kw][16i][16o]).
 *
 * Hand-written because oneDNN 2.6's backward-weights kernels (jit:avx512_core and
 * jit:avx512_core_amx_bf16) take 0.8-1.2 ms for each 512x512 layer of VGG16 on the
 * 4x4 and 2x2 maps of 32x32 images at batch 2 (the seed's batch size): six such
 * layers were a quarter of the training step. The work is small: per kernel tap, a
 * sum over the batch's M = n*h*w <= 32 positions of outer products dy[m] x x[m],
 * then writing the 9.4 MB gradient.
 *
 * Each 16x16 (i, o) block of one tap sits in 16 registers, one per input channel
 * with 16 output channels as lanes, so a block's lanes are exactly the gradient's
 * memory rows. bf16 inputs are widened to fp32 first (exact), and their products
 * are exact in fp32; sums run in fp32 in a fixed order (by image, row, column), so
 * results do not depend on the threads. (AVX512-BF16's vdpbf16ps, two positions
 * per instruction, measured no faster here: 0.67 vs 0.49 ms at 4x4.)
 *
 * On AVX2 (fp32 only: bf16 training needs AVX512-BF16) the same with 8x8 blocks,
 * gradient OIhw8i8o (ABcd8b8a, the layout oneDNN's AVX2 forward reads): there
 * oneDNN 2.6 has only its reference kernel for maps of 2x2 and less (187 ms for one
 * 512x512 layer at batch 2, two thirds of a 32x32 step). The block is blk = 16 or 8
 * values, the caller's choice by ISA (conv2d.c). */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))

TARGET static inline __m512 load16(const void *base, size_t i, bool bf16) {
    if (!bf16) return _mm512_loadu_ps((const float *)base + i);
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* xp: x as fp32 with a zero border, [n][h+2][w+2][c]; dyf: dy as fp32, [n*h*w][k];
 * db[k] = sum over positions of dy. */
TARGET static void prepare16(const lp_conv2d_params *p, int vec_x, int vec_y, const void *x, const void *dy, float *xp,
                           float *dyf, float *db) {
    const int h = p->h, w = p->w, hp = h + 2, wp = w + 2;
    memset(xp, 0, sizeof(float) * (size_t)p->n * hp * wp * p->c);
    for (int n = 0; n < p->n; n++)
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                float *d = xp + (((size_t)n * hp + y + 1) * wp + xx + 1) * p->c;
                for (int c = 0; c < p->c; c += 16)
                    _mm512_storeu_ps(d + c, load16(x, lp_pv_offset(n, c, y, xx, p->c, h, w, vec_x), p->bf16));
            }
    for (int k = 0; k < p->k; k += 16) {
        __m512 s = _mm512_setzero_ps();
        for (int n = 0; n < p->n; n++)
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++) {
                    __m512 v = load16(dy, lp_pv_offset(n, k, y, xx, p->k, h, w, vec_y), p->bf16);
                    _mm512_storeu_ps(dyf + (((size_t)n * h + y) * w + xx) * p->k + k, v);
                    s = _mm512_add_ps(s, v);
                }
        _mm512_storeu_ps(db + k, s);
    }
}

/* The 9 taps of one (output block ob, input block ib) pair: 9 x 256 floats at dw. */
TARGET static void pair16(const lp_conv2d_params *p, const float *xp, const float *dyf, int ob, int ib, float *dw) {
    const int h = p->h, w = p->w, wp = w + 2;
    for (int kh = 0; kh < 3; kh++)
        for (int kw = 0; kw < 3; kw++) {
            __m512 acc[16];
            for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
            /* output rows/columns whose input (y + kh - 1, x + kw - 1) is inside */
            const int y0 = kh == 0 ? 1 : 0, y1 = kh == 2 ? h - 1 : h, x0 = kw == 0 ? 1 : 0, x1 = kw == 2 ? w - 1 : w;
            for (int n = 0; n < p->n; n++)
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) {
                        const __m512 g = _mm512_loadu_ps(dyf + (((size_t)n * h + y) * w + x) * p->k + (size_t)ob * 16);
                        const float *xi = xp + (((size_t)n * (h + 2) + y + kh) * wp + x + kw) * p->c + (size_t)ib * 16;
                        for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(xi[i]), g, acc[i]);
                    }
            float *blk = dw + (size_t)(kh * 3 + kw) * 256;
            for (int i = 0; i < 16; i++) _mm512_storeu_ps(blk + i * 16, acc[i]);
        }
}

/* The same two on AVX2, fp32, 8 values a vector. */
AVX2 static void prepare8(const lp_conv2d_params *p, int vec_x, int vec_y, const float *x, const float *dy, float *xp,
                          float *dyf, float *db) {
    const int h = p->h, w = p->w, hp = h + 2, wp = w + 2;
    memset(xp, 0, sizeof(float) * (size_t)p->n * hp * wp * p->c);
    for (int n = 0; n < p->n; n++)
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                float *d = xp + (((size_t)n * hp + y + 1) * wp + xx + 1) * p->c;
                for (int c = 0; c < p->c; c += 8)
                    _mm256_storeu_ps(d + c, _mm256_loadu_ps(x + lp_pv_offset(n, c, y, xx, p->c, h, w, vec_x)));
            }
    for (int k = 0; k < p->k; k += 8) {
        __m256 s = _mm256_setzero_ps();
        for (int n = 0; n < p->n; n++)
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++) {
                    __m256 v = _mm256_loadu_ps(dy + lp_pv_offset(n, k, y, xx, p->k, h, w, vec_y));
                    _mm256_storeu_ps(dyf + (((size_t)n * h + y) * w + xx) * p->k + k, v);
                    s = _mm256_add_ps(s, v);
                }
        _mm256_storeu_ps(db + k, s);
    }
}

AVX2 static void pair8(const lp_conv2d_params *p, const float *xp, const float *dyf, int ob, int ib, float *dw) {
    const int h = p->h, w = p->w, wp = w + 2;
    for (int kh = 0; kh < 3; kh++)
        for (int kw = 0; kw < 3; kw++) {
            __m256 acc[8];
            for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
            const int y0 = kh == 0 ? 1 : 0, y1 = kh == 2 ? h - 1 : h, x0 = kw == 0 ? 1 : 0, x1 = kw == 2 ? w - 1 : w;
            for (int n = 0; n < p->n; n++)
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) {
                        const __m256 g = _mm256_loadu_ps(dyf + (((size_t)n * h + y) * w + x) * p->k + (size_t)ob * 8);
                        const float *xi = xp + (((size_t)n * (h + 2) + y + kh) * wp + x + kw) * p->c + (size_t)ib * 8;
                        for (int i = 0; i < 8; i++) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(xi + i), g, acc[i]);
                    }
            float *blk = dw + (size_t)(kh * 3 + kw) * 64;
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(blk + i * 8, acc[i]);
        }
}

size_t lp_conv_bwd_w_small_scratch(const lp_conv2d_params *p) {
    return sizeof(float) * ((size_t)p->n * (p->h + 2) * (p->w + 2) * p->c + (size_t)p->n * p->h * p->w * p->k) + 64;
}

void lp_conv_bwd_w_small_prepare(const lp_conv2d_params *p, int blk, int vec_x, int vec_y, const void *x, const void *dy,
                                 float *db, void *scratch) {
    float *xp = scratch, *dyf = xp + (size_t)p->n * (p->h + 2) * (p->w + 2) * p->c;
    if (blk == 16) prepare16(p, vec_x, vec_y, x, dy, xp, dyf, db);
    else prepare8(p, vec_x, vec_y, x, dy, xp, dyf, db);
}

void lp_conv_bwd_w_small_pair(const lp_conv2d_params *p, int blk, const void *scratch, long long q, float *dw) {
    const float *xp = scratch, *dyf = xp + (size_t)p->n * (p->h + 2) * (p->w + 2) * p->c;
    const int ib_n = p->c / blk;
    if (blk == 16) pair16(p, xp, dyf, (int)(q / ib_n), (int)(q % ib_n), dw);
    else pair8(p, xp, dyf, (int)(q / ib_n), (int)(q % ib_n), dw);
}

/* The parallel loop holds no vector types: an OpenMP body is a function of its own,
 * which (in clang) does not inherit the target attribute. */
void lp_conv_bwd_w_small(const lp_conv2d_params *p, int blk, int vec_x, int vec_y, const void *x, const void *dy, float *dw,
                         float *db, void *scratch) {
    lp_conv_bwd_w_small_prepare(p, blk, vec_x, vec_y, x, dy, db, scratch);
    const long long pairs = lp_conv_bwd_w_small_pairs(p, blk);
    const size_t size = lp_conv_bwd_w_small_pair_size(blk);
LP_OMP(parallel for)
    for (long long q = 0; q < pairs; q++) lp_conv_bwd_w_small_pair(p, blk, scratch, q, dw + (size_t)q * size);
}

#endif /* LP_X86_KERNELS */
