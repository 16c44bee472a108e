/* Backward weights of a 3x3, stride 1, pad 1 convolution with 3 input channels (the
 * first layer of VGG on RGB images), on AVX512-BF16: x and dy bf16 nhwc, gradient fp32
 * in oneDNN's ABcd16b16a ([o/16][i/16][kh][kw][16 i][16 o], the 3 input channels
 * padded to 16 with zeros), the layout oneDNN's own kernel writes there.
 *
 * Hand-written because oneDNN 2.6's jit:avx512_core_amx_bf16 runs this layer at about
 * 100 GFLOP/s (25.7 ms of a 780 ms bf16 step at 224x224 batch 16): AMX tiles need 32
 * input channels' worth of depth, and 3 fill a tenth of one. The work is 27 weights
 * per output channel: for each 16 output channels, 27 fp32 accumulators (one per
 * input channel and tap) and one for the bias sit in registers, and each pair of
 * pixels adds its two dy x input products with one vdpbf16ps per weight (an fp32 FMA
 * per pixel ran no faster than oneDNN's: the FMA unit is the limit).
 *
 * With relu_y, dy is masked by the ReLU of the layer's output y here, as it is read:
 * the first layer has no backward data, so nothing else needs the masked dy, and the
 * separate pass over it (7 ms at 224x224 batch 16) is saved.
 *
 * Products of bf16 values are exact in fp32; sums run in fp32 (denormals flushed, as
 * AMX does) in a fixed order: per image row in column pairs, the rows in fixed chunks
 * (set by the shape, not the threads), the chunks added in order. */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define TAPS 27  /* 3 input channels x 3 x 3 */
#define ACCS 28  /* and the bias */
#define CHUNKS 64

static int chunks(const lp_conv2d_params *p) { return p->n * p->h < CHUNKS ? p->n * p->h : CHUNKS; }

/* xq: x with a zero border, as pairs of horizontal neighbours: [n][h+2][w+3][4] 32-bit
 * words, word c of column j = (x[j][c], x[j+1][c]) in padded columns (channel 3
 * unused); then per chunk, per 16 output channels, ACCS x 16 partial sums. */
static size_t pairs_size(const lp_conv2d_params *p) { return (size_t)p->n * (p->h + 2) * (p->w + 3) * 4; }

size_t lp_conv_bwd_w_rgb_scratch(const lp_conv2d_params *p) {
    return sizeof(float) * (pairs_size(p) + (size_t)chunks(p) * p->k * ACCS) + 64;
}

static void pair_up(const lp_conv2d_params *p, const uint16_t *x, uint32_t *xq) {
    const int h = p->h, w = p->w, hp = h + 2, wq = w + 3;
LP_OMP(parallel for)
    for (int r = 0; r < p->n * hp; r++) {
        const int n = r / hp, y = r % hp - 1;
        uint32_t *d = xq + (size_t)r * wq * 4;
        memset(d, 0, sizeof(uint32_t) * 4 * (size_t)wq);
        if (y < 0 || y >= h) continue;
        const uint16_t *s = x + ((size_t)n * h + y) * w * 3;
        /* padded column j holds x column j - 1: it is the low half of word j and the
         * high half of word j - 1 */
        for (int j = 1; j <= w; j++)
            for (int c = 0; c < 3; c++) {
                const uint32_t v = s[(size_t)(j - 1) * 3 + c];
                d[(size_t)j * 4 + c] |= v;
                d[(size_t)(j - 1) * 4 + c] |= v << 16;
            }
    }
}

/* Row r of the batch (r = n * h + y), 16 output channels from ob: its sums added to
 * acc (ACCS x 16). (Two passes of 18 and 10 accumulators, which spill none, ran no
 * faster than one of 28, which spills a few.) */
TARGET static void row(const lp_conv2d_params *p, const uint32_t *xq, const uint16_t *dy, const uint16_t *relu_y, int ob,
                       int r, float *acc) {
    const int h = p->h, w = p->w, wq = w + 3, n = r / h, y = r % h;
    /* lanes 2o, 2o+1 of a pair: dy[x][o], dy[x+1][o] */
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                           20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512bh ones = (__m512bh)_mm512_set1_epi16(0x3f80); /* bf16 1.0: the bias sums dy */
    __m512 a[ACCS];
    for (int t = 0; t < ACCS; t++) a[t] = _mm512_loadu_ps(acc + t * 16);
    const uint16_t *g = dy + ((size_t)r * w) * p->k + ob;
    /* padded row y (tap kh = 0) of image n; output column x is padded column x + kw */
    const uint32_t *top = xq + ((size_t)n * (h + 2) + y) * wq * 4;
    /* the next row's dy comes in meanwhile, one 64-byte line per column pair of each
     * pass (2w lines of 64-channel rows over k/16 passes of w/2 pairs): without it the
     * loads waited on memory (22 -> 16.5 ms at 224x224 batch 16) */
    const char *next = (const char *)(dy + ((size_t)r + 1) * w * p->k) + (size_t)(ob / 16) * ((w + 1) / 2) * 64;
    for (int x = 0; x < w; x += 2) {
        _mm_prefetch(next + (size_t)(x / 2) * 64, _MM_HINT_T0);
        __m256i g0 = _mm256_loadu_si256((const __m256i *)(g + (size_t)x * p->k));
        __m256i g1 = x + 1 < w ? _mm256_loadu_si256((const __m256i *)(g + (size_t)(x + 1) * p->k)) : _mm256_setzero_si256();
        if (relu_y) { /* y > 0: its bits in [0x0001, 0x7fff], as lp_relu_backward_inplace_bf16 */
            const uint16_t *yr = relu_y + ((size_t)r * w + x) * p->k + ob;
            const __m256i one = _mm256_set1_epi16(1), top = _mm256_set1_epi16(0x7fff);
            g0 = _mm256_maskz_mov_epi16(_mm256_cmplt_epu16_mask(_mm256_sub_epi16(_mm256_loadu_si256((const __m256i *)yr), one), top), g0);
            if (x + 1 < w)
                g1 = _mm256_maskz_mov_epi16(
                    _mm256_cmplt_epu16_mask(_mm256_sub_epi16(_mm256_loadu_si256((const __m256i *)(yr + p->k)), one), top), g1);
        }
        const __m512bh d = (__m512bh)_mm512_permutexvar_epi16(inter, _mm512_inserti64x4(_mm512_castsi256_si512(g0), g1, 1));
        const uint32_t *px = top + (size_t)x * 4;
#pragma GCC unroll 3
        for (int kh = 0; kh < 3; kh++)
#pragma GCC unroll 3
            for (int kw = 0; kw < 3; kw++)
#pragma GCC unroll 3
                for (int c = 0; c < 3; c++) {
                    const int t = (c * 3 + kh) * 3 + kw;
                    const __m512bh xv = (__m512bh)_mm512_set1_epi32((int)px[((size_t)kh * wq + kw) * 4 + c]);
                    a[t] = _mm512_dpbf16_ps(a[t], d, xv);
                }
        a[TAPS] = _mm512_dpbf16_ps(a[TAPS], d, ones);
    }
    for (int t = 0; t < ACCS; t++) _mm512_storeu_ps(acc + t * 16, a[t]);
}

TARGET void lp_conv_bwd_w_rgb(const lp_conv2d_params *p, const void *x, const void *dy, const void *relu_y, float *dw, float *db,
                              void *scratch) {
    uint32_t *xq = scratch;
    float *part = (float *)(xq + pairs_size(p));
    pair_up(p, x, xq);
    const int nc = chunks(p), nrows = p->n * p->h, obs = p->k / 16;
    /* each row once from memory: all output blocks go over it while it is in L1 */
LP_OMP(parallel for schedule(dynamic))
    for (int c = 0; c < nc; c++) {
        float *pc = part + (size_t)c * obs * ACCS * 16;
        memset(pc, 0, sizeof(float) * (size_t)obs * ACCS * 16);
        const int r0 = (int)((long long)nrows * c / nc), r1 = (int)((long long)nrows * (c + 1) / nc);
        for (int r = r0; r < r1; r++)
            for (int ob = 0; ob < obs; ob++) row(p, xq, dy, relu_y, ob * 16, r, pc + (size_t)ob * ACCS * 16);
    }
    /* the chunks in order; then into ABcd16b16a: tap (i, kh, kw) of output block ob at
     * [ob][0][kh][kw][i][16 o], input channels 3..15 zero */
    memset(dw, 0, sizeof(float) * (size_t)obs * 9 * 256);
    for (int ob = 0; ob < obs; ob++) {
        __m512 s[ACCS];
        for (int t = 0; t < ACCS; t++) s[t] = _mm512_loadu_ps(part + (size_t)ob * ACCS * 16 + t * 16);
        for (int c = 1; c < nc; c++)
            for (int t = 0; t < ACCS; t++)
                s[t] = _mm512_add_ps(s[t], _mm512_loadu_ps(part + ((size_t)c * obs + ob) * ACCS * 16 + t * 16));
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < 9; k++) _mm512_storeu_ps(dw + ((size_t)ob * 9 + k) * 256 + i * 16, s[i * 9 + k]);
        _mm512_storeu_ps(db + ob * 16, s[TAPS]);
    }
}

#endif /* LP_X86_KERNELS */
