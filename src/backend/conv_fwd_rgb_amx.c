/* Forward of a 3x3, stride 1, pad 1 convolution with 3 input channels (VGG's first
 * layer on RGB images) on AMX: x and y bf16 nhwc, k % 32 == 0, weights bf16 in the
 * layout oneDNN's forward picks for them, Adcb16a ([o/16][kw][kh][i][16 o]), bias fp32,
 * ReLU optional.
 *
 * Hand-written because oneDNN 2.6's kernel for it (jit:avx512_core_amx_bf16) pads the
 * 3 input channels of each tap to a full tile depth: 9.3 ms at 224x224 batch 16 (2.8
 * GFLOP, 300 GFLOP/s), the slowest layer of the forward for its work. Here the 27
 * (tap, channel) inputs of a pixel are one 64-byte row of a tile (im2col, 5 zeros
 * after), so a product covers 16 pixels x 32 deep x 16 output channels of real work
 * but for those 5: the layer is then writing its output.
 *
 * Per row of output, 32 pixels at a time: their rows gathered from a zero-bordered
 * copy of the 3 input rows (a pixel's 9 values of each input row are adjacent in
 * nhwc), two tiles; per 32 output channels, two weight tiles and four sum tiles;
 * the sums get the bias and ReLU in fp32 and round to bf16 (RNE), as oneDNN's do.
 * At 224x224 batch 16: 5.4-5.7 ms alone, 6.2 in the training step (oneDNN's 9.3-10.3).
 * Products of bf16 are exact in fp32, sums in fp32 in the tile's order (AMX flushes
 * denormals). */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>

#define AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))
#define DEPTH 32 /* bf16 a pixel's row: 27 inputs, then zeros */

/* A padded input row: pixel -1 (zero), the W pixels, zeros past pixel W for the
 * 32-element loads of the last pixels. */
static size_t padded_row(const lp_conv2d_params *p) { return ((size_t)(p->w + 2) * 3 + 64 + 31) / 32 * 32; }

/* Per thread: 3 padded rows, 32 gathered pixel rows (2 KB), four sum tiles (4 KB). */
static size_t thread_bytes(const lp_conv2d_params *p) { return 3 * padded_row(p) * 2 + 32 * DEPTH * 2 + 4 * 1024; }

/* The weight tiles: per 16 output channels, 16 rows of input pairs x 16 outputs x 2. */
static size_t weight_bytes(const lp_conv2d_params *p) { return (size_t)p->k / 16 * 1024; }

size_t lp_conv_fwd_rgb_amx_scratch(const lp_conv2d_params *p) {
    return weight_bytes(p) + (size_t)lp_amx_slots() * thread_bytes(p) + 64;
}

/* Input t = kh * 9 + kw * 3 + i of the gathered row (t < 27) for output channel o. */
static void weight_tiles(const lp_conv2d_params *p, const uint16_t *w, uint16_t *tiles) {
    memset(tiles, 0, weight_bytes(p));
    for (int o = 0; o < p->k; o++)
        for (int t = 0; t < 27; t++) {
            const int kh = t / 9, kw = t / 3 % 3, i = t % 3;
            tiles[(size_t)(o / 16) * 512 + (t / 2) * 32 + (o % 16) * 2 + t % 2] =
                w[((((size_t)(o / 16) * 3 + kw) * 3 + kh) * 3 + i) * 16 + o % 16];
        }
}

/* Output row r (image r / h, row r % h) of all k channels. */
AMX static void forward_row(const lp_conv2d_params *p, const uint16_t *x, const uint16_t *wt, const float *bias, uint16_t *y,
                            uint16_t *bits, int r, uint16_t *mine, bool stream) {
    const int h = p->h, w = p->w, k = p->k, n = r / h, oy = r % h;
    const size_t lr = padded_row(p);
    uint16_t *rows = mine, *a = rows + 3 * lr;
    float *sums = (float *)(a + 32 * DEPTH);
    for (int kh = 0; kh < 3; kh++) {
        uint16_t *pr = rows + kh * lr;
        const int iy = oy + kh - 1;
        memset(pr, 0, lr * 2);
        if (iy >= 0 && iy < h) memcpy(pr + 3, x + ((size_t)n * h + iy) * w * 3, (size_t)w * 3 * 2);
    }
    /* lanes 0-8 from the first row, 9-17 the second, 18-26 the third, 27-31 zero */
    uint16_t i01[32], i2[32];
    for (int l = 0; l < 32; l++) i01[l] = (uint16_t)(l < 9 ? l : l < 18 ? 32 + l - 9 : 0), i2[l] = (uint16_t)(l >= 18 ? l - 18 : 0);
    const __m512i idx01 = _mm512_loadu_si512(i01), idx2 = _mm512_loadu_si512(i2);
    const __mmask32 third = 0x07fc0000, used = 0x07ffffff;
    const __m256i one = _mm256_set1_epi16(1), top = _mm256_set1_epi16(0x7fff);
    uint16_t *out = y + ((size_t)n * h + oy) * w * k;
    for (int x0 = 0; x0 < w; x0 += 32) {
        const int m = w - x0 < 32 ? w - x0 : 32;
        for (int j = 0; j < 32; j++) {
            /* pixel x0 + j reads padded pixels x0 + j .. + 2 (x0 + j - 1 .. + 1 of x) */
            const size_t at = (size_t)(j < m ? x0 + j : x0) * 3;
            const __m512i v0 = _mm512_loadu_si512(rows + at), v1 = _mm512_loadu_si512(rows + lr + at),
                          v2 = _mm512_loadu_si512(rows + 2 * lr + at);
            __m512i v = _mm512_permutex2var_epi16(v0, idx01, v1);
            v = _mm512_mask_permutexvar_epi16(v, third, idx2, v2);
            _mm512_store_si512(a + j * DEPTH, _mm512_maskz_mov_epi16(used, v));
        }
        _tile_loadd(4, a, 64);
        _tile_loadd(5, a + 16 * DEPTH, 64);
        for (int o0 = 0; o0 < k; o0 += 32) {
            _tile_loadd(6, wt + (size_t)(o0 / 16) * 512, 64);
            _tile_loadd(7, wt + (size_t)(o0 / 16 + 1) * 512, 64);
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
            _tile_stored(0, sums, 64);
            _tile_stored(1, sums + 256, 64);
            _tile_stored(2, sums + 512, 64);
            _tile_stored(3, sums + 768, 64);
            const __m512 b0 = _mm512_loadu_ps(bias + o0), b1 = _mm512_loadu_ps(bias + o0 + 16), z = _mm512_setzero_ps();
            for (int j = 0; j < m; j++) {
                const float *s = sums + (j / 16) * 512 + (j % 16) * 16;
                __m512 lo = _mm512_add_ps(_mm512_load_ps(s), b0), hi = _mm512_add_ps(_mm512_load_ps(s + 256), b1);
                if (p->relu) lo = _mm512_max_ps(lo, z), hi = _mm512_max_ps(hi, z);
                const __m256i l16 = (__m256i)_mm512_cvtneps_pbh(lo), h16 = (__m256i)_mm512_cvtneps_pbh(hi);
                if (bits) { /* y > 0: its bits in [0x0001, 0x7fff], as the backward's test of y */
                    uint16_t *bw = bits + (((size_t)n * h + oy) * w + x0 + j) * k / 16 + o0 / 16;
                    bw[0] = (uint16_t)_mm256_cmplt_epu16_mask(_mm256_sub_epi16(l16, one), top);
                    bw[1] = (uint16_t)_mm256_cmplt_epu16_mask(_mm256_sub_epi16(h16, one), top);
                }
                const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(l16), h16, 1);
                uint16_t *at = out + (size_t)(x0 + j) * k + o0;
                if (stream)
                    _mm512_stream_si512((__m512i *)at, v);
                else
                    _mm512_storeu_si512(at, v);
            }
        }
    }
    if (stream) _mm_sfence(); /* the streamed stores land before other threads read y */
}

/* The parallel region holds no vector types (clang's outlined regions do not inherit
 * target attributes); the tiles are configured per thread. */
void lp_conv_fwd_rgb_amx(const lp_conv2d_params *p, const void *x, const void *w, const float *bias, void *y, uint16_t *relu_bits,
                         void *scratch) {
    char *base = (char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    uint16_t *wt = (uint16_t *)base;
    weight_tiles(p, w, wt);
    const int rows = p->n * p->h;
    /* a y larger than the L2s written around the caches (4.2 ms less at 224x224 batch
     * 16: no line is read to be overwritten, and the next layer's forward reading it
     * took no longer), where every 32 channels of a pixel are a whole line */
    const bool stream = ((uintptr_t)y & 63) == 0 && (size_t)rows * p->w * p->k * 2 > LP_STREAM_FROM;
LP_OMP(parallel num_threads(lp_amx_slot_threads()))
    {
        const int t = lp_omp_thread();
        uint16_t *mine = (uint16_t *)(base + weight_bytes(p) + (size_t)t * thread_bytes(p));
        lp_amx_tiles_on();
LP_OMP(for schedule(static))
        for (int r = 0; r < rows; r++) forward_row(p, (const uint16_t *)x, wt, bias, (uint16_t *)y, relu_bits, r, mine, stream);
        lp_amx_tiles_off();
    }
}

#endif /* LP_X86_KERNELS */
