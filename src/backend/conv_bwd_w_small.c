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
 * values, the caller's choice by ISA (conv2d.c).
 *
 * Backward data in fp32 with 16-blocks comes in the same pieces (below), so that the
 * fused step makes dx from each pair's weights just before it updates them. */
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

/* dyf: dy as fp32, [n*h*w][k]; db[k] (unless NULL) = sum over positions of dy. */
TARGET static void dy_rows16(const lp_conv2d_params *p, int vec_y, const void *dy, float *dyf, float *db) {
    const int h = p->h, w = p->w;
    for (int k = 0; k < p->k; k += 16) {
        __m512 s = _mm512_setzero_ps();
        for (int n = 0; n < p->n; n++)
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++) {
                    __m512 v = load16(dy, lp_pv_offset(n, k, y, xx, p->k, h, w, vec_y), p->bf16);
                    _mm512_storeu_ps(dyf + (((size_t)n * h + y) * w + xx) * p->k + k, v);
                    s = _mm512_add_ps(s, v);
                }
        if (db) _mm512_storeu_ps(db + k, s);
    }
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
    dy_rows16(p, vec_y, dy, dyf, db);
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

/* Backward data for the fused step (nn's lp_net_backward_step), fp32, 16-blocks: the
 * old weights of one (output block ob, input block ib) pair are in L1 just before the
 * update rewrites them, so their share of dx costs no memory traffic, where oneDNN's
 * backward data would read the layer's weights again (or a transposed twin the update
 * writes for it: 2 x 9.4 MB a 512x512 layer). Each 16x16 tap block is transposed in
 * registers (rows: output channels, lanes: input channels), and each dy value of the
 * pair's output channels is broadcast against its row. acc[position][16] sums over the
 * pairs of one ib in the caller's order (ob ascending), then the taps, then the channels
 * in two interleaved halves: a fixed order, whatever the threads. */
TARGET static void transpose16(const float *b, __m512 t[16]) {
    __m512 r[16], s[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(b + 16 * i);
    for (int i = 0; i < 16; i += 2) {
        s[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        s[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* per group g of 4 rows: r[4g + c], 128-bit lane k = rows 4g..4g+3 of column 4k + c */
    for (int g = 0; g < 16; g += 4) {
        r[g] = _mm512_shuffle_ps(s[g], s[g + 2], 0x44);
        r[g + 1] = _mm512_shuffle_ps(s[g], s[g + 2], 0xEE);
        r[g + 2] = _mm512_shuffle_ps(s[g + 1], s[g + 3], 0x44);
        r[g + 3] = _mm512_shuffle_ps(s[g + 1], s[g + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        const __m512 lo01 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), hi01 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
        const __m512 lo23 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44), hi23 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
        t[c] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(lo01, lo23, 0xDD);
        t[8 + c] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(hi01, hi23, 0xDD);
    }
}

TARGET static void pair_dx16(const lp_conv2d_params *p, const float *dyf, int ob, const float *w, float *acc) {
    const int h = p->h, wd = p->w;
    for (int kh = 0; kh < 3; kh++)
        for (int kw = 0; kw < 3; kw++) {
            __m512 wt[16];
            transpose16(w + (size_t)(kh * 3 + kw) * 256, wt);
            const int y0 = kh == 0 ? 1 : 0, y1 = kh == 2 ? h - 1 : h, x0 = kw == 0 ? 1 : 0, x1 = kw == 2 ? wd - 1 : wd;
            for (int n = 0; n < p->n; n++)
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) {
                        const float *g = dyf + (((size_t)n * h + y) * wd + x) * p->k + (size_t)ob * 16;
                        float *a = acc + (((size_t)n * h + y + kh - 1) * wd + x + kw - 1) * 16;
                        __m512 s0 = _mm512_loadu_ps(a), s1 = _mm512_setzero_ps();
                        for (int o = 0; o < 16; o += 2) {
                            s0 = _mm512_fmadd_ps(wt[o], _mm512_set1_ps(g[o]), s0);
                            s1 = _mm512_fmadd_ps(wt[o + 1], _mm512_set1_ps(g[o + 1]), s1);
                        }
                        _mm512_storeu_ps(a, _mm512_add_ps(s0, s1));
                    }
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
        if (db) _mm256_storeu_ps(db + k, s); /* NULL: no bias */
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

bool lp_conv_bwd_d_small_pair_fits(const lp_conv2d_params *p, int blk) {
    return blk == 16 && !p->bf16 && (long long)p->n * p->h * p->w * blk <= LP_BWD_D_ACC;
}

void lp_conv_bwd_d_small_pair(const lp_conv2d_params *p, const void *scratch, long long q, const float *w, float *acc) {
    const float *dyf = (const float *)scratch + (size_t)p->n * (p->h + 2) * (p->w + 2) * p->c;
    pair_dx16(p, dyf, (int)(q / (p->c / 16)), w, acc);
}

void lp_conv_bwd_d_small_store(const lp_conv2d_params *p, int vec_x, int ib, const float *acc, float *dx) {
    for (int n = 0; n < p->n; n++)
        for (int y = 0; y < p->h; y++)
            for (int x = 0; x < p->w; x++)
                memcpy(dx + lp_pv_offset(n, ib * 16, y, x, p->c, p->h, p->w, vec_x),
                       acc + (((size_t)n * p->h + y) * p->w + x) * 16, 16 * sizeof(float));
}

/* Backward data alone: the same pieces in the same order as the fused step's, so that
 * both give the same dx bit for bit, from the weights in the forward's layout (the one
 * nn stores them in: no transposed copy to write or read). */
void lp_conv_bwd_d_small_fp32(const lp_conv2d_params *p, int vec_x, int vec_y, const float *dy, const float *w, float *dx,
                              void *scratch) {
    float *dyf = (float *)scratch + (size_t)p->n * (p->h + 2) * (p->w + 2) * p->c;
    dy_rows16(p, vec_y, dy, dyf, NULL);
    const int ib_n = p->c / 16, ob_n = p->k / 16;
    const size_t size = lp_conv_bwd_w_small_pair_size(16), acc_n = (size_t)p->n * p->h * p->w * 16;
LP_OMP(parallel for)
    for (int ib = 0; ib < ib_n; ib++) {
        float acc[LP_BWD_D_ACC] __attribute__((aligned(64)));
        memset(acc, 0, acc_n * sizeof(float));
        for (int ob = 0; ob < ob_n; ob++) {
            const long long q = (long long)ob * ib_n + ib;
            if (ob + 1 < ob_n) lp_prefetch_floats(w + (q + ib_n) * size, size);
            lp_conv_bwd_d_small_pair(p, scratch, q, w + q * size, acc);
        }
        lp_conv_bwd_d_small_store(p, vec_x, ib, acc, dx);
    }
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

#else
bool lp_conv_bwd_d_small_pair_fits(const lp_conv2d_params *p, int blk) { return false; } /* no pieces elsewhere */
#endif /* LP_X86_KERNELS */
