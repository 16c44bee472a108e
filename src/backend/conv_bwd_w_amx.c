/* Backward weights of a 3x3, stride 1, pad 1 bf16 convolution on AMX: x and dy bf16
 * nhwc, the gradient fp32 in oneDNN's ABcd16b16a ([o/16][i/16][kh][kw][16 i][16 o]),
 * the bias gradient fp32.
 *
 * Hand-written because oneDNN 2.6's only AMX kernel for it (jit:avx512_core_amx_bf16,
 * which transposes its inputs inside) runs VGG's layers at 0.4-1.2 TFLOP/s, against
 * 2.3-3.5 for the same layers' forward: 369 of a 746 ms bf16 step at 224x224 batch 16.
 * (oneDNN 3.x has a brgemm one; Debian 12 ships 2.6.)
 *
 * The sum dw[o][i][kh][kw] = sum over images and pixels of dy[o] x[i] at the shifted
 * pixel is, per tap, a matrix product with the pixels as depth. Both inputs are first
 * put in the layouts the tiles read, per image:
 *   xt:  x with its zero border, transposed: row i holds channel i of the padded image
 *        (H+2) x (W+2), flattened, so that tap (kh, kw) is the flat shift
 *        kh * (W+2) + kw of the same rows;
 *   dyv: dy over the same flat grid ((H) x (W+2), the two extra columns zero), pixels
 *        in pairs per 16 output channels, as the second tile of TDPBF16PS reads them.
 * A tile product then takes 32 pixels x 16 input channels of xt (at the tap's shift)
 * and 32 pixels x 16 output channels of dyv, for 16 x 16 weights of that tap. Four
 * such weight tiles (two input x two output blocks) are summed in registers over a
 * block of pixels, then stored; each output block pair x input block pair is one
 * thread's, all taps, so each weight has one fixed order of sums whatever the thread
 * count: the images in order, pixels in order within one.
 *
 * The extra columns cost (W+2)/W of the work (14% at 14x14); their dy is zero, so they
 * add nothing (unless x there is infinite, where the true sum is not finite either).
 * Products of bf16 are exact in fp32; sums in fp32 (AMX flushes denormals). */
#include "backend.h"
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define AMX __attribute__((target("avx512f,avx512bw,avx512vl,amx-tile,amx-bf16")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define SEGMENT 256 /* pixels of a row transposed at a time */
#ifndef BLOCK
#define BLOCK 8
#endif /* 32-pixel chunks summed in registers between stores of the weight tiles */

typedef struct geom {
    int wp;     /* padded row: W + 2 */
    int q;      /* flat output pixels per image, H * (W+2), rounded up to 32 */
    int lx;     /* xt row length per channel: covers q + the largest shift, odd in 64-byte lines */
    size_t xt_image, dyv_image; /* elements per image */
} geom;

static geom geometry(const lp_conv2d_params *p) {
    geom g;
    g.wp = p->w + 2;
    g.q = (p->h * g.wp + 31) / 32 * 32;
    g.lx = (g.q + 2 * g.wp + 2 + 31) / 32 * 32;
    /* an odd number of lines between rows: the 16 rows of a tile fall in 16 L1 sets */
    if ((g.lx / 32) % 2 == 0) g.lx += 32;
    g.xt_image = (size_t)p->c * g.lx;
    g.dyv_image = (size_t)p->k * g.q;
    return g;
}

bool lp_conv_bwd_w_amx_usable(const lp_conv2d_params *p) {
    return p->c % 32 == 0 && p->k % 32 == 0 && p->kh == 3 && p->kw == 3 && p->sh == 1 && p->sw == 1 && p->ph == 1 &&
           p->pw == 1;
}

size_t lp_conv_bwd_w_amx_scratch(const lp_conv2d_params *p) {
    const geom g = geometry(p);
    return 2 * (size_t)p->n * (g.xt_image + g.dyv_image) + sizeof(float) * (size_t)p->n * p->h * p->k + 64;
}

/* 16 x 16 32-bit transpose in registers: r[i] element j -> r[j] element i. */
AVX512 static void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]), t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    /* u[4g + j], 128-bit lane l: element 4l + j of rows 4g .. 4g+3 */
    for (int g = 0; g < 16; g += 4) {
        u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]), u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
        u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]), u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
    }
    for (int j = 0; j < 4; j++) {
        const __m512i a = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88), b = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xdd),
                      c = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88), d = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xdd);
        r[j] = _mm512_shuffle_i32x4(a, c, 0x88), r[8 + j] = _mm512_shuffle_i32x4(a, c, 0xdd);
        r[4 + j] = _mm512_shuffle_i32x4(b, d, 0x88), r[12 + j] = _mm512_shuffle_i32x4(b, d, 0xdd);
    }
}

/* m (<= 16) pixels of 32 channels from src (pixel stride c) to 32 rows of m pixels at
 * dst (row stride ds): transposed as channel pairs, then each pair split in two rows. */
AVX512 static void transpose_block(const uint16_t *src, int c, int m, uint16_t *dst, size_t ds) {
    const __m512i split = _mm512_set_epi16(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1, 30, 28, 26, 24, 22,
                                           20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __mmask16 valid = (__mmask16)((1u << m) - 1);
    __m512i v[16];
    for (int i = 0; i < 16; i++) v[i] = i < m ? _mm512_loadu_si512(src + (size_t)i * c) : _mm512_setzero_si512();
    transpose16(v);
    for (int j = 0; j < 16; j++) {
        const __m512i t = _mm512_permutexvar_epi16(split, v[j]);
        _mm256_mask_storeu_epi16(dst + 2 * j * ds, valid, _mm512_castsi512_si256(t));
        _mm256_mask_storeu_epi16(dst + (2 * j + 1) * ds, valid, _mm512_extracti64x4_epi64(t, 1));
    }
}

/* xt of image n, row y of x and the border around it. */
AVX512 static void transpose_row(const lp_conv2d_params *p, const geom *g, const uint16_t *x, uint16_t *xt, int n, int y) {
    const int h = p->h, w = p->w, wp = g->wp, c = p->c;
    uint16_t *img = xt + (size_t)n * g->xt_image;
    for (int i = 0; i < c; i++) {
        uint16_t *r = img + (size_t)i * g->lx;
        if (y == 0) memset(r, 0, sizeof(uint16_t) * (wp + 1));
        r[(size_t)(y + 1) * wp + w + 1] = 0;
        if (y == h - 1) memset(r + (size_t)(h + 1) * wp, 0, sizeof(uint16_t) * (g->lx - (size_t)(h + 1) * wp));
        else r[(size_t)(y + 2) * wp] = 0;
    }
    const uint16_t *row = x + ((size_t)n * h + y) * w * c;
    uint16_t *at = img + (size_t)(y + 1) * wp + 1;
    if (w < SEGMENT) {
        for (int c0 = 0; c0 < c; c0 += 32)
            for (int x0 = 0; x0 < w; x0 += 16)
                transpose_block(row + (size_t)x0 * c + c0, c, w - x0 < 16 ? w - x0 : 16, at + (size_t)c0 * g->lx + x0, g->lx);
        return;
    }
    /* wide rows through a buffer in L1, SEGMENT pixels x 32 channels: written straight
     * to xt, the rows' lines were each read from memory before the write, 64 misses at
     * a time (47 ms at 224x224 batch 16, 22 this way) */
    uint16_t buf[32 * SEGMENT];
    for (int s0 = 0; s0 < w; s0 += SEGMENT) {
        const int sw = w - s0 < SEGMENT ? w - s0 : SEGMENT;
        for (int c0 = 0; c0 < c; c0 += 32) {
            for (int x0 = 0; x0 < sw; x0 += 16)
                transpose_block(row + (size_t)(s0 + x0) * c + c0, c, sw - x0 < 16 ? sw - x0 : 16, buf + x0, SEGMENT);
            for (int i = 0; i < 32; i++)
                memcpy(at + (size_t)(c0 + i) * g->lx + s0, buf + (size_t)i * SEGMENT, sizeof(uint16_t) * sw);
        }
    }
}

/* dyv of image n, the pixel pairs of flat row y (the last row: to the end of the
 * grid), all output channels; their sums (a part of the bias gradient) to part. */
AVX512 static void pair_row(const lp_conv2d_params *p, const geom *g, const uint16_t *dy, uint16_t *dyv, float *part, int n,
                            int y) {
    const int h = p->h, w = p->w, wp = g->wp, k = p->k;
    /* lanes 2o, 2o+1: dy[q][o], dy[q+1][o] */
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                           20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    uint16_t *d = dyv + (size_t)n * g->dyv_image;
    memset(part, 0, sizeof(float) * k);
    const int j0 = (y * wp + 1) / 2, j1 = y == h - 1 ? g->q / 2 : ((y + 1) * wp + 1) / 2;
    for (int j = j0; j < j1; j++) {
        const uint16_t *px[2];
        for (int t = 0; t < 2; t++) {
            const int q = 2 * j + t, yy = q / wp, xx = q % wp;
            px[t] = yy < h && xx < w ? dy + (((size_t)n * h + yy) * w + xx) * k : NULL;
        }
        for (int o0 = 0; o0 < k; o0 += 16) {
            const __m256i a = px[0] ? _mm256_loadu_si256((const __m256i *)(px[0] + o0)) : _mm256_setzero_si256();
            const __m256i b = px[1] ? _mm256_loadu_si256((const __m256i *)(px[1] + o0)) : _mm256_setzero_si256();
            const __m512 fa = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(a), 16));
            const __m512 fb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
            _mm512_storeu_ps(part + o0, _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(part + o0), fa), fb));
            _mm512_storeu_si512(d + (size_t)o0 * g->q + (size_t)j * 32,
                                _mm512_permutexvar_epi16(inter, _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1)));
        }
    }
}

typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_config;

/* Linux gives a process the AMX tile state only on request (oneDNN makes the same one). */
static bool tiles_permitted(void) {
#ifdef __linux__
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return false;
#endif
}

/* Weight tiles of input block pairs [ip0, ip1) x output block pairs [op0, op1), all 9
 * taps, summed over every image's pixels: tiles 0-3 the sums (two input x two output
 * blocks), 4-5 xt, 6-7 dyv. The pairs go over each block of pixels together, so that
 * the block's xt and dyv come from memory once per group (one pair at a time, each
 * read them from memory: L3 bandwidth was the limit). */
AMX static void group(const lp_conv2d_params *p, const geom *g, const uint16_t *xt, const uint16_t *dyv, float *dw, int ip0,
                      int ip1, int op0, int op1) {
    const int ibs = p->c / 16, chunks = g->q / 32;
    const size_t xs = (size_t)g->lx * 2, total = (size_t)p->n * chunks;
    float *t[4];
    for (size_t k0 = 0; k0 < total; k0 += BLOCK) {
        const size_t k1 = k0 + BLOCK < total ? k0 + BLOCK : total;
        for (int ip = ip0; ip < ip1; ip++)
            for (int op = op0; op < op1; op++)
                for (int kh = 0; kh < 3; kh++)
                    for (int kw = 0; kw < 3; kw++) {
                        const int tap = kh * 3 + kw, shift = kh * g->wp + kw, ib = 2 * ip, ob = 2 * op;
                        for (int a = 0; a < 2; a++)
                            for (int b = 0; b < 2; b++)
                                t[a * 2 + b] = dw + ((((size_t)(ob + b) * ibs + ib + a) * 9) + tap) * 256;
                        if (k0 == 0) {
                            _tile_zero(0);
                            _tile_zero(1);
                            _tile_zero(2);
                            _tile_zero(3);
                        } else {
                            _tile_loadd(0, t[0], 64);
                            _tile_loadd(1, t[1], 64);
                            _tile_loadd(2, t[2], 64);
                            _tile_loadd(3, t[3], 64);
                        }
                        for (size_t k = k0; k < k1; k++) {
                            const size_t n = k / chunks, q0 = (k % chunks) * 32;
                            const uint16_t *a0 = xt + n * g->xt_image + (size_t)ib * 16 * g->lx + q0 + shift;
                            const uint16_t *b0 = dyv + n * g->dyv_image + (size_t)ob * 16 * g->q + q0 * 16;
                            _tile_loadd(4, a0, xs);
                            _tile_loadd(6, b0, 64);
                            _tile_dpbf16ps(0, 4, 6);
                            _tile_loadd(5, a0 + (size_t)16 * g->lx, xs);
                            _tile_dpbf16ps(2, 5, 6);
                            _tile_loadd(7, b0 + (size_t)16 * g->q, 64);
                            _tile_dpbf16ps(1, 4, 7);
                            _tile_dpbf16ps(3, 5, 7);
                        }
                        _tile_stored(0, t[0], 64);
                        _tile_stored(1, t[1], 64);
                        _tile_stored(2, t[2], 64);
                        _tile_stored(3, t[3], 64);
                    }
    }
}

/* Groups of at most GROUP_I x GROUP_O block pairs (their sums, 36 KB a pair, stay in
 * L2), at least one per thread where the layer has that many pairs. The grouping
 * changes no sum: each weight's order is the pixels' whatever the group. */
#define GROUP_I 4
static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
#define GROUP_O 4
AMX static void sums(const lp_conv2d_params *p, const geom *g, const uint16_t *xt, const uint16_t *dyv, float *dw) {
    const int ips = p->c / 32, ops = p->k / 32, threads = max_threads();
    int gi = ips < GROUP_I ? ips : GROUP_I, go = ops < GROUP_O ? ops : GROUP_O;
    while (((ips + gi - 1) / gi) * ((ops + go - 1) / go) < threads && (gi > 1 || go > 1)) {
        if (gi >= go) gi = (gi + 1) / 2;
        else go = (go + 1) / 2;
    }
    const int ngi = (ips + gi - 1) / gi, ngo = (ops + go - 1) / go;
LP_OMP(parallel)
    {
        tile_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.palette = 1;
        for (int i = 0; i < 8; i++) cfg.bytes_per_row[i] = 64, cfg.rows[i] = 16;
        _tile_loadconfig(&cfg);
LP_OMP(for schedule(dynamic))
        for (int u = 0; u < ngi * ngo; u++) {
            const int ip0 = (u % ngi) * gi, op0 = (u / ngi) * go;
            group(p, g, xt, dyv, dw, ip0, ip0 + gi < ips ? ip0 + gi : ips, op0, op0 + go < ops ? op0 + go : ops);
        }
        _tile_release();
    }
}

bool lp_conv_bwd_w_amx_ready(void) {
    static int ready = -1;
    if (ready < 0) ready = lp_amx_available() && tiles_permitted();
    return ready;
}

void lp_conv_bwd_w_amx(const lp_conv2d_params *p, const void *x, const void *dy, float *dw, float *db, void *scratch) {
    const geom g = geometry(p);
    uint16_t *xt = scratch, *dyv = xt + (size_t)p->n * g.xt_image;
    float *part = (float *)(dyv + (size_t)p->n * g.dyv_image);
    const int rows = p->n * p->h;
LP_OMP(parallel for schedule(static))
    for (int r = 0; r < rows; r++) transpose_row(p, &g, x, xt, r / p->h, r % p->h);
LP_OMP(parallel for schedule(static))
    for (int r = 0; r < rows; r++) pair_row(p, &g, dy, dyv, part + (size_t)r * p->k, r / p->h, r % p->h);
    sums(p, &g, xt, dyv, dw);
    /* the rows' parts in order */
    for (int o = 0; o < p->k; o++) {
        float s = 0;
        for (int r = 0; r < rows; r++) s += part[(size_t)r * p->k + o];
        db[o] = s;
    }
}
