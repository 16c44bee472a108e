/* Backward weights of a 3x3, stride 1, pad 1 convolution with 3 input channels (VGG's
 * first layer on RGB images) on AMX: x and dy bf16 nhwc, k % 32 == 0, the gradient
 * fp32 in oneDNN's ABcd16b16a ([o/16][0][kh][kw][16 i][16 o], input channels 3..15
 * zero), the bias gradient fp32; both overwritten. With relu_y, dy is masked by the
 * ReLU of the layer's output y as it is read (conv_bwd_w_rgb.c says why).
 *
 * Hand-written because the AVX512-BF16 kernel (conv_bwd_w_rgb.c) is bound by its dot
 * products, 28 a pixel pair per 16 output channels (22 ms at 224x224 batch 16, 2
 * cores), and oneDNN's AMX kernel runs this layer at about 100 GFLOP/s. Here the 27
 * weights of an output channel are the rows of a tile pair, the pixels the depth:
 *   xi:  32 rows over the flat grid of a band's output pixels (rows of W + 2, the
 *        last two columns junk): row t = (i, kh, kw) holds, at pixel q, the x that
 *        tap reads for q (zero in the padding); row 27 ones (its sums are the bias
 *        gradient); rows 28-31 zero;
 *   dyv: dy over the same grid (junk columns zero), pixels in pairs per 16 output
 *        channels, as the second tile of TDPBF16PS reads them.
 * Each 32 pixels then add two xi tiles (rows 0-15, 16-31) by two dyv tiles (32 output
 * channels) into four sum tiles, which stay in registers over the band: the work is
 * reading dy (and y) once.
 *
 * Sums: per unit of rows (an image, or half of one where the batch has under 4), in
 * pixel order within each 32-pixel product; the units added in order. The order is
 * set by the shape, whatever the thread count. Products of bf16 are exact in fp32;
 * sums in fp32 (AMX flushes denormals). The junk columns and the last chunk's tail
 * hold real x times zero dy, which adds nothing unless that x is infinite or NaN (0 x
 * inf is NaN; x is not finite only once training has diverged). */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>

#define AMX __attribute__((target("avx512f,avx512bw,avx512vl,amx-tile,amx-bf16")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define BAND_BYTES (768 << 10) /* a band's xi and dyv, about: they stay in L2 */
#define MARGIN 32              /* zeros before grid row 0 of xt */
#define XI_ROWS 32
#define ONES_ROW 27

/* A band of `rows` output rows: xt holds the 3 input channels over rows + 2 grid rows
 * (x rows y0 - 1 ..), grid row j at MARGIN + j * wp, each row's W pixels then two
 * zeros (its right border and the next row's left); output pixel q of tap (kh, kw)
 * reads xt at q + MARGIN - 1 + kh * wp + kw. */
typedef struct band {
    int wp, chunks;     /* row of the grid (W + 2); 32-pixel chunks covering rows * wp */
    int lt, lx;         /* row lengths of xt and xi (xi: an odd number of 64-byte lines) */
    size_t xt, xi, dyv; /* elements of each */
} band;

static band band_of(const lp_conv2d_params *p, int rows) {
    band b;
    b.wp = p->w + 2;
    b.chunks = (rows * b.wp + 31) / 32;
    b.lt = MARGIN + 2 * b.wp + 2 + b.chunks * 32;
    b.lx = b.chunks * 32;
    if ((b.lx / 32) % 2 == 0) b.lx += 32; /* the 16 rows of a tile in 16 L1 sets */
    b.xt = ((size_t)3 * b.lt + 31) / 32 * 32; /* xi and dyv after it on whole lines */
    b.xi = (size_t)XI_ROWS * b.lx;
    b.dyv = (size_t)p->k * b.chunks * 32;
    return b;
}

static int band_rows(const lp_conv2d_params *p) {
    const int r = (int)(BAND_BYTES / ((size_t)(XI_ROWS + p->k) * (p->w + 2) * 2));
    return r < 1 ? 1 : r > p->h ? p->h : r;
}

/* Units of rows: images, split in two where the batch has under 4 (two threads then
 * still share the work) and an image has two rows to split (a unit of none would add
 * sums it never wrote). */
static int parts(const lp_conv2d_params *p) { return p->n < 4 && p->h >= 2 ? 2 : 1; }

static size_t slot_bytes(const lp_conv2d_params *p) {
    const band b = band_of(p, band_rows(p));
    return (2 * (b.xt + b.xi + b.dyv) + 63) / 64 * 64;
}

/* per unit, per output block pair: 4 tiles of 16 x 16 sums */
static size_t part_floats(const lp_conv2d_params *p) { return (size_t)(p->k / 32) * 4 * 256; }

size_t lp_conv_bwd_w_rgb_amx_scratch(const lp_conv2d_params *p) {
    return slot_bytes(p) * lp_amx_slots() + sizeof(float) * part_floats(p) * p->n * parts(p) + 64;
}

/* xt of the band from output row y0 (rows of them) of image n, and xi from it. */
static void fill_x(const lp_conv2d_params *p, const band *b, const uint16_t *x, uint16_t *xt, uint16_t *xi, int n, int y0,
                   int rows) {
    const int w = p->w, wp = b->wp;
    memset(xt, 0, sizeof(uint16_t) * b->xt);
    for (int j = 0; j < rows + 2; j++) {
        const int y = y0 - 1 + j;
        if (y < 0 || y >= p->h) continue;
        const uint16_t *s = x + ((size_t)n * p->h + y) * w * 3;
        uint16_t *d = xt + MARGIN + (size_t)j * wp;
        for (int i = 0; i < w; i++) {
            d[i] = s[3 * i];
            d[b->lt + i] = s[3 * i + 1];
            d[2 * b->lt + i] = s[3 * i + 2];
        }
    }
    const size_t len = (size_t)b->chunks * 32;
    for (int t = 0; t < 27; t++) {
        const int c = t / 9, kh = t / 3 % 3, kw = t % 3;
        memcpy(xi + (size_t)t * b->lx, xt + (size_t)c * b->lt + MARGIN - 1 + kh * wp + kw, sizeof(uint16_t) * len);
    }
    uint16_t *ones = xi + (size_t)ONES_ROW * b->lx;
    for (size_t i = 0; i < len; i++) ones[i] = 0x3f80; /* bf16 1.0 */
    for (int t = ONES_ROW + 1; t < XI_ROWS; t++) memset(xi + (size_t)t * b->lx, 0, sizeof(uint16_t) * len);
}

/* dyv of the band: pair j of block o/16 holds pixels 2j, 2j + 1 of the grid, masked by
 * y > 0 (bits in [0x0001, 0x7fff], as lp_relu_backward_inplace_bf16) with relu_y, or by
 * relu_bits (16 a word: one load where y took 32 bytes). */
AVX512 static void fill_dy(const lp_conv2d_params *p, const band *b, const uint16_t *dy, const uint16_t *relu_y,
                           const uint16_t *relu_bits, uint16_t *dyv, int n, int y0, int rows) {
    const int w = p->w, wp = b->wp, k = p->k, pairs = b->chunks * 16;
    /* lanes 2o, 2o+1: dy[q][o], dy[q+1][o] */
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                           20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m256i one = _mm256_set1_epi16(1), top = _mm256_set1_epi16(0x7fff);
    const size_t base = ((size_t)n * p->h + y0) * w * k;
    for (int j = 0; j < pairs; j++) {
        size_t at[2];
        __mmask16 in[2];
        for (int e = 0; e < 2; e++) {
            const int q = 2 * j + e, yy = q / wp, xx = q % wp;
            const bool v = yy < rows && xx < w;
            at[e] = v ? base + ((size_t)yy * w + xx) * k : base;
            in[e] = v ? 0xffff : 0;
        }
        for (int o = 0; o < k; o += 16) {
            __m256i g[2];
            for (int e = 0; e < 2; e++) {
                const __mmask16 keep = relu_bits ? (__mmask16)(in[e] & relu_bits[(at[e] + o) / 16]) : in[e];
                g[e] = _mm256_maskz_loadu_epi16(keep, dy + at[e] + o);
                if (relu_y) {
                    const __m256i yv = _mm256_maskz_loadu_epi16(in[e], relu_y + at[e] + o);
                    g[e] = _mm256_maskz_mov_epi16(_mm256_cmplt_epu16_mask(_mm256_sub_epi16(yv, one), top), g[e]);
                }
            }
            _mm512_storeu_si512(dyv + ((size_t)(o / 16) * pairs + j) * 32,
                                _mm512_permutexvar_epi16(inter, _mm512_inserti64x4(_mm512_castsi256_si512(g[0]), g[1], 1)));
        }
    }
}

/* The band's sums added onto sum (per output block pair, 4 tiles: xi rows 0-15 x
 * blocks 2op, 2op+1, then rows 16-31 x the same), or from zero (fresh). */
AMX static void sums(const lp_conv2d_params *p, const band *b, const uint16_t *xi, const uint16_t *dyv, float *sum, bool fresh) {
    const size_t xs = (size_t)b->lx * 2, block = (size_t)b->chunks * 512;
    for (int op = 0; op < p->k / 32; op++) {
        float *t = sum + (size_t)op * 4 * 256;
        if (fresh) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
        } else {
            _tile_loadd(0, t, 64);
            _tile_loadd(1, t + 256, 64);
            _tile_loadd(2, t + 512, 64);
            _tile_loadd(3, t + 768, 64);
        }
        const uint16_t *d = dyv + (size_t)2 * op * block;
        for (int r = 0; r < b->chunks; r++) {
            _tile_loadd(4, xi + (size_t)r * 32, xs);
            _tile_loadd(6, d + (size_t)r * 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(5, xi + (size_t)16 * b->lx + (size_t)r * 32, xs);
            _tile_dpbf16ps(2, 5, 6);
            _tile_loadd(7, d + block + (size_t)r * 512, 64);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, t, 64);
        _tile_stored(1, t + 256, 64);
        _tile_stored(2, t + 512, 64);
        _tile_stored(3, t + 768, 64);
    }
}

AVX512 void lp_conv_bwd_w_rgb_amx(const lp_conv2d_params *p, const void *x, const void *dy, const void *relu_y,
                                  const uint16_t *relu_bits, float *dw, float *db,
                           void *scratch) {
    scratch = (void *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63); /* whole lines for the tiles */
    const int rmax = band_rows(p), np = parts(p), units = p->n * np;
    const band full = band_of(p, rmax);
    const size_t slot = slot_bytes(p), pf = part_floats(p);
    float *part = (float *)((char *)scratch + slot * lp_amx_slots());
LP_OMP(parallel num_threads(lp_amx_slot_threads()))
    {
        const int th = lp_omp_thread();
        uint16_t *xt = (uint16_t *)((char *)scratch + slot * th), *xi = xt + full.xt, *dyv = xi + full.xi;
        lp_amx_tiles_on();
LP_OMP(for schedule(dynamic))
        for (int u = 0; u < units; u++) {
            const int n = u / np, pt = u % np;
            const int ya = (int)((long long)p->h * pt / np), yb = (int)((long long)p->h * (pt + 1) / np);
            for (int y0 = ya; y0 < yb; y0 += rmax) {
                const int rows = yb - y0 < rmax ? yb - y0 : rmax;
                /* the band's own chunks, in the full band's row lengths */
                band b = full;
                b.chunks = band_of(p, rows).chunks;
                fill_x(p, &b, x, xt, xi, n, y0, rows);
                fill_dy(p, &b, dy, relu_y, relu_bits, dyv, n, y0, rows);
                sums(p, &b, xi, dyv, part + (size_t)u * pf, y0 == ya);
            }
        }
        lp_amx_tiles_off();
    }
    /* the units in order; then tap (i, kh, kw) = xi row t = i * 9 + kh * 3 + kw of output
     * block ob to [ob][0][kh][kw][i][16 o], input channels 3..15 zero */
    const int obs = p->k / 16;
    memset(dw, 0, sizeof(float) * (size_t)obs * 9 * 256);
    for (int ob = 0; ob < obs; ob++) {
        const int op = ob / 2, half = ob % 2;
        for (int t = 0; t <= ONES_ROW; t++) {
            /* tile (t / 16) * 2 + half of the pair, row t % 16 */
            const size_t at = (size_t)op * 4 * 256 + (size_t)((t / 16) * 2 + half) * 256 + (size_t)(t % 16) * 16;
            __m512 s = _mm512_loadu_ps(part + at);
            for (int u = 1; u < units; u++) s = _mm512_add_ps(s, _mm512_loadu_ps(part + (size_t)u * pf + at));
            if (t == ONES_ROW)
                _mm512_storeu_ps(db + ob * 16, s);
            else
                _mm512_storeu_ps(dw + ((size_t)ob * 9 + t % 9) * 256 + (t / 9) * 16, s);
        }
    }
}

#endif /* LP_X86_KERNELS */
