/* Forward of a bf16 3x3, stride 1, pad 1 convolution (+ bias, + ReLU) on small maps, on
 * AVX512-BF16: x and y bf16 nhwc, weights in the forward's bf16 layout AcdB16b32a2b
 * ([o/32][kh][kw][i/32][16 i pairs][32 o][2 i]), which the optimizer writes (optim.c),
 * bias fp32.
 *
 * Hand-written for the reason conv_bwd_d_small.c is: on VGG16's 2x2 maps at batch 2 the
 * work is one pass over the layer's 4.7 MB of bf16 weights. Each weight vector
 * (32 output channels x an input-channel pair) serves every position of the batch from
 * registers, one vdpbf16ps per 16 outputs. Per layer, ours and oneDNN 2.6's brgconv take
 * the same time (0.35-0.40 ms, alone or in the step; the per-layer table once showed
 * oneDNN's in-step forward at twice that, but it counted each forward twice), yet the
 * step is faster with ours, at 32x32 batch 2: 17.4 -> 16.8 ms (A/B, three rounds),
 * 17.9 -> 17.4 ms (four rounds, later): the time moves out of backward, which runs
 * after it faster.
 *
 * Sums run in fp32 (pairs of products per instruction, denormals flushed, as AMX does)
 * in a fixed order; bias and ReLU are applied in fp32, then the result rounds to bf16
 * (RNE) as oneDNN's does. */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f,avx512bf16")))
#define TILE 8 /* positions per register tile */
/* How far ahead the weights are fetched: on this 2-core VM a thread waited on memory at
 * 6 GB/s with only the hardware prefetcher (its reads too slow to keep enough lines in
 * flight), and a 2x2 512->512 layer with cold weights took 0.39-0.40 ms; 4 KB ahead
 * (and no products for taps in the padding, below) 0.24-0.27 ms. */
#define AHEAD 4096

size_t lp_conv_fwd_small_scratch(const lp_conv2d_params *p) {
    return sizeof(uint16_t) * (size_t)p->c + 64; /* a zero x pixel for taps in the padding */
}

/* y for output channels a*32.. and positions [p0, p0 + TILE) (of n*h*w, by image, row,
 * column). */
TARGET static void tile(const lp_conv2d_params *p, const uint16_t *x, const uint16_t *zero, const uint16_t *w,
                        const float *bias, uint16_t *y, int a, int p0) {
    const int h = p->h, wd = p->w, positions = p->n * h * wd, b32 = p->c / 32;
    const uint16_t *src[9][TILE];
    for (int t = 0; t < 9; t++)
        for (int j = 0; j < TILE; j++) {
            const int q = p0 + j, n = q / (h * wd), oy = q / wd % h, ox = q % wd;
            const int iy = oy + t / 3 - 1, ix = ox + t % 3 - 1;
            src[t][j] = q < positions && iy >= 0 && iy < h && ix >= 0 && ix < wd
                            ? x + (((size_t)n * h + iy) * wd + ix) * p->c
                            : zero;
        }
    /* the positions each tap reaches inside the map: on a 2x2 map 4 of 9 taps a position */
    unsigned inside[9];
    for (int t = 0; t < 9; t++) {
        inside[t] = 0;
        for (int j = 0; j < TILE; j++) inside[t] |= (unsigned)(src[t][j] != zero) << j;
    }
    __m512 lo[TILE], hi[TILE];
    for (int j = 0; j < TILE; j++) lo[j] = hi[j] = _mm512_setzero_ps();
    for (int t = 0; t < 9; t++)
        for (int b = 0; b < b32; b++) {
            const uint16_t *wb = w + (((size_t)a * 9 + t) * b32 + b) * 1024;
            for (int s = 0; s < 16; s++) {
                _mm_prefetch((const char *)(wb + s * 64) + AHEAD, _MM_HINT_T0);
                _mm_prefetch((const char *)(wb + s * 64) + AHEAD + 64, _MM_HINT_T0);
                const __m512bh w0 = (__m512bh)_mm512_loadu_si512(wb + s * 64);
                const __m512bh w1 = (__m512bh)_mm512_loadu_si512(wb + s * 64 + 32);
                const int i = b * 32 + 2 * s;
                for (int j = 0; j < TILE; j++) {
                    if (!(inside[t] >> j & 1)) continue; /* x is zero there: the product adds +-0 */
                    uint32_t pair;
                    memcpy(&pair, src[t][j] + i, 4);
                    const __m512bh xv = (__m512bh)_mm512_set1_epi32((int)pair);
                    lo[j] = _mm512_dpbf16_ps(lo[j], w0, xv);
                    hi[j] = _mm512_dpbf16_ps(hi[j], w1, xv);
                }
            }
        }
    const __m512 b0 = _mm512_loadu_ps(bias + a * 32), b1 = _mm512_loadu_ps(bias + a * 32 + 16), z = _mm512_setzero_ps();
    for (int j = 0; j < TILE && p0 + j < positions; j++) {
        __m512 v0 = _mm512_add_ps(lo[j], b0), v1 = _mm512_add_ps(hi[j], b1);
        if (p->relu) v0 = _mm512_max_ps(v0, z), v1 = _mm512_max_ps(v1, z);
        uint16_t *out = y + (size_t)(p0 + j) * p->k + a * 32;
        _mm256_storeu_si256((__m256i *)out, (__m256i)_mm512_cvtneps_pbh(v0));
        _mm256_storeu_si256((__m256i *)(out + 16), (__m256i)_mm512_cvtneps_pbh(v1));
    }
}

/* The parallel loop holds no vector types: an OpenMP body is a function of its own,
 * which (in clang) does not inherit the target attribute. */
void lp_conv_fwd_small(const lp_conv2d_params *p, const void *x, const void *w, const float *bias, void *y, void *scratch) {
    uint16_t *zero = scratch;
    memset(zero, 0, sizeof(uint16_t) * (size_t)p->c);
    const int tiles = (p->n * p->h * p->w + TILE - 1) / TILE, a32 = p->k / 32;
    const long long jobs = (long long)a32 * tiles;
LP_OMP(parallel for)
    for (long long q = 0; q < jobs; q++) tile(p, x, zero, w, bias, y, (int)(q % a32), (int)(q / a32) * TILE);
}

#endif /* LP_X86_KERNELS */
