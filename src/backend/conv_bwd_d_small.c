/* Backward data of a bf16 3x3, stride 1, pad 1 convolution on small maps (h*w <= 16;
 * conv2d.c runs it on 2x2 and smaller),
 * on AVX512-BF16: dy and dx bf16 in a pixel-vector layout (nhwc, nChw16c), weights in
 * backward-data's bf16 layout ABcd16a16b2a ([o/32][i/16][kh][kw][16 o pairs][16 i][2 o]),
 * which the optimizer writes (optim.c).
 *
 * Hand-written because oneDNN 2.6's jit:avx512_core_amx_bf16 takes 0.44-0.50 ms for a
 * 512x512 layer of VGG16 at 2x2 batch 2 inside a training step (0.05 ms run alone,
 * when the weights are in cache), where the work is reading the layer's 4.7 MB of
 * bf16 weights once: each weight vector (16 input channels x an output-channel pair)
 * serves every position of the batch from registers, one vdpbf16ps each. In the
 * step, at 32x32 batch 2: 17.4 -> 16.9 ms (A/B, three rounds).
 *
 * Sums run in fp32 (pairs of products per instruction, denormals flushed, as AMX does)
 * in a fixed order, then round to bf16 as oneDNN does (RNE). */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f,avx512bf16")))
#define TILE 8 /* positions per register tile */

size_t lp_conv_bwd_d_small_scratch(const lp_conv2d_params *p) {
    /* zeros standing for the dy pixels of taps that fall in the padding, as large as the
     * offsets of one pixel's channels reach (a whole map in nChw16c) */
    return sizeof(uint16_t) * (size_t)p->k * p->h * p->w + 64;
}

/* dx for input channels ib*16.. and positions [p0, p0 + TILE) (of n*h*w, by image, row,
 * column): per tap, dyo[t][j] is the offset of the dy pixel that reaches position p0 + j
 * through tap t, or of the zero pixel. */
TARGET static void tile(const lp_conv2d_params *p, const uint16_t *dy, const uint16_t *zero, const uint16_t *w, uint16_t *dx,
                        int vec_x, int vec_y, int ib, int p0) {
    const int h = p->h, wd = p->w, positions = p->n * h * wd, ib16 = p->c / 16, a32 = p->k / 32;
    const uint16_t *src[9][TILE];
    for (int t = 0; t < 9; t++)
        for (int j = 0; j < TILE; j++) {
            const int q = p0 + j, n = q / (h * wd), iy = q / wd % h, ix = q % wd;
            const int oy = iy - t / 3 + 1, ox = ix - t % 3 + 1;
            src[t][j] = q < positions && oy >= 0 && oy < h && ox >= 0 && ox < wd
                            ? dy + lp_pv_offset(n, 0, oy, ox, p->k, h, wd, vec_y)
                            : zero;
        }
    __m512 acc[TILE];
    for (int j = 0; j < TILE; j++) acc[j] = _mm512_setzero_ps();
    for (int a = 0; a < a32; a++)
        for (int t = 0; t < 9; t++) {
            const uint16_t *wb = w + (((size_t)a * ib16 + ib) * 9 + t) * 512;
            /* the same tap's weights of the next output block (or the next job's first):
             * the blocks lie ib16 * 9 KB apart, and alone the thread waited on memory at
             * 6 GB/s (2x2 512->512 with cold weights: 0.55-0.67 -> 0.37 ms) */
            const uint16_t *next = a + 1 < a32 ? wb + (size_t)ib16 * 9 * 512 : ib + 1 < ib16 ? w + ((size_t)(ib + 1) * 9 + t) * 512 : wb;
            for (int s = 0; s < 16; s++) {
                _mm_prefetch((const char *)(next + s * 32), _MM_HINT_T0);
                const __m512bh wv = (__m512bh)_mm512_loadu_si512(wb + s * 32);
                /* the pair dy[o], dy[o + 1] of a pixel; nChw16c keeps a pair in one 16-block */
                const int o = a * 32 + 2 * s;
                const size_t off = (size_t)(o / vec_y) * h * wd * vec_y + o % vec_y;
                for (int j = 0; j < TILE; j++) {
                    uint32_t pair;
                    memcpy(&pair, src[t][j] + off, 4);
                    acc[j] = _mm512_dpbf16_ps(acc[j], wv, (__m512bh)_mm512_set1_epi32((int)pair));
                }
            }
        }
    for (int j = 0; j < TILE && p0 + j < positions; j++) {
        const int q = p0 + j, n = q / (h * wd), iy = q / wd % h, ix = q % wd;
        _mm256_storeu_si256((__m256i *)(dx + lp_pv_offset(n, ib * 16, iy, ix, p->c, h, wd, vec_x)),
                            (__m256i)_mm512_cvtneps_pbh(acc[j]));
    }
}

/* The parallel loop holds no vector types: an OpenMP body is a function of its own,
 * which (in clang) does not inherit the target attribute. */
void lp_conv_bwd_d_small(const lp_conv2d_params *p, int vec_x, int vec_y, const void *dy, const void *w, void *dx,
                         void *scratch) {
    uint16_t *zero = scratch;
    memset(zero, 0, sizeof(uint16_t) * (size_t)p->k * p->h * p->w);
    const int tiles = (p->n * p->h * p->w + TILE - 1) / TILE, ib16 = p->c / 16;
    const long long jobs = (long long)ib16 * tiles;
LP_OMP(parallel for)
    for (long long q = 0; q < jobs; q++)
        tile(p, dy, zero, w, dx, vec_x, vec_y, (int)(q % ib16), (int)(q / ib16) * TILE);
}

#endif /* LP_X86_KERNELS */
