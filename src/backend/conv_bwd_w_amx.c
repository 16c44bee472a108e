/* Backward weights of a 3x3, stride 1, pad 1 bf16 convolution on AMX: x and dy bf16
 * nhwc, 32k channels in and out, the gradient fp32 in oneDNN's ABcd16b16a
 * ([o/16][i/16][kh][kw][16 i][16 o]), the bias gradient fp32; both overwritten.
 *
 * Hand-written because oneDNN 2.6's only AMX kernel for it (jit:avx512_core_amx_bf16,
 * which transposes its inputs inside) runs VGG's layers at 0.85-1.2 TFLOP/s, against
 * 2.3-3.5 for the same layers' forward: 369 of a 746 ms bf16 step at 224x224 batch 16.
 * (oneDNN 3.x has a brgemm one; Debian 12 ships 2.6.) Alone, at batch 16, 2 cores:
 * 224x224 64->64 33-35 ms against oneDNN's 70; 112x112 128->128 28-29 vs 49; 56x56
 * 256->256 28-30 vs 36-38; 28x28 512->512 27-28 vs 36-38; 14x14 6.9-7.1 vs 13.
 *
 * The sum dw[o][i][kh][kw] = sum over images and pixels of dy[o] x[i] at the shifted
 * pixel is, per tap, a matrix product with the pixels as depth. Both inputs are first
 * put in the layouts the tiles read, over a flat grid of rows (see grid below):
 *   xt:  x transposed, row i holding channel i of the zero-bordered rows, so that tap
 *        (kh, kw) is a flat shift of the same rows;
 *   dyv: dy over the same grid (border columns zero), pixels in pairs per 16 output
 *        channels, as the second tile of TDPBF16PS reads them, twice: pairs from an
 *        even pixel and pairs from an odd one.
 * A tile product then takes 32 pixels x 16 input channels of xt and 32 pixels x 16
 * output channels of dyv, for 16 x 16 weights of a tap. Four such weight tiles (two
 * input x two output blocks) are summed in registers over a block of pixels, then
 * stored and loaded again for the next block.
 *
 * Every tile load is line-aligned (one 2 bytes off ran at a third of the speed in a
 * test loop: 0.97 vs 3.15 TFLOP/s, one core): a tap's shift s = 32a + b is split, xt
 * read 32a on (whole lines) and dyv b pixels back, which is whole 64-byte rows of
 * pairs in the pairing of b's parity. So x is transposed once, into one copy, and the
 * rows need no padding.
 *
 * Maps of up to 1024 pixels (32x32; whole_batch) put all of xt and dyv in memory
 * first; larger ones (in_bands) fill them a band of rows at a time in L2 and sum each
 * band at once. Each
 * weight's sum has one order, set by the shape, whatever the thread count.
 *
 * The border columns, and the up to 31 pixels a tap's window runs past the grid, cost
 * some work (wp/W, and at most a chunk per tap and grid: a tap skips the chunks with no
 * real pixel); their dy is zero, so they add nothing,
 * unless the x they meet is infinite or NaN: then 0 x inf makes a NaN the true sum may
 * not have (x is not finite only once training has diverged). Products of bf16 are
 * exact in fp32; sums in fp32 (AMX flushes denormals). */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define AMX __attribute__((target("avx512f,avx512bw,avx512vl,amx-tile,amx-bf16")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define BLOCK 8 /* 32-pixel chunks summed in registers between loads and stores of the weight tiles */
#define BANDED_FROM (32 * 32) /* maps larger than this go in bands (in_bands says why) */
#define BAND_BYTES (1 << 20) /* a band's xt and dyv, about: they stay in L2 with the sums */

/* The flat grid of rows (an image, or a band of one) as xt and dyv hold it. Grid row j
 * of xt (x row j - 1 of the image or band) starts at flat index MARGIN + j * wp: its W
 * pixels, then one zero, the right border of the row and the left of the next (x
 * column -1 of a row is the flat index before it: a second zero was 3-7% more work at
 * 28x28 and 14x14). Output
 * pixel q (row q / wp) of tap (kh, kw) then reads xt at q + s, s = MARGIN - 1 + kh * wp
 * + kw. With s = 32a + b, the tap's sum over q is the sum over r = q + b of xt[r + 32a]
 * dy[r - b]: r runs over whole chunks from 0, b more pixels than q (dy is zero
 * outside the grid), and xt is read on whole lines.
 *
 * dyv holds pixel f = q + DY_FRONT at pair f / 2 of the even pairing (pairs (2j,
 * 2j + 1)) and at pair (f - 1) / 2 of the odd one ((2j + 1, 2j + 2)); per 16 output
 * channels: even pairs, then odd pairs, each `pairs` rows of 64 bytes. */
#define MARGIN 32
#define DY_FRONT 32
typedef struct grid {
    int wp;     /* padded row: W + 1 */
    int q;      /* flat output pixels: rows * wp */
    int chunks; /* 32-pixel chunks r a tap sums: q + 31 pixels, rounded up */
    int pairs;  /* pairs of each pairing per 16 output channels */
    int lx;     /* xt row length per channel: an odd number of 64-byte lines */
    int xoff[9], boff[9]; /* per tap: where chunk 0 reads xt (32a) and dyv (b back) */
    size_t xt_size, dyv_size; /* elements of one grid's xt and dyv (all output channels) */
} grid;

static grid grid_of(const lp_conv2d_params *p, int rows) {
    grid g;
    memset(&g, 0, sizeof g);
    g.wp = p->w + 1;
    g.q = rows * g.wp;
    g.chunks = (g.q + 31 + 31) / 32;
    /* the last chunk of the tap with b = 0 reads pairs up to chunks * 16 + 15 */
    g.pairs = g.chunks * 16 + 16;
    /* the last chunk of the last tap (s = MARGIN + 2 wp + 1) ends before this */
    g.lx = (MARGIN + 2 * g.wp + 1 + g.chunks * 32 + 31) / 32 * 32;
    /* an odd number of lines between rows: the 16 rows of a tile fall in 16 L1 sets */
    if ((g.lx / 32) % 2 == 0) g.lx += 32;
    for (int t = 0; t < 9; t++) {
        const int s = MARGIN - 1 + (t / 3) * g.wp + t % 3, b = s % 32;
        g.xoff[t] = s - b;
        /* chunk r's first pixel r - b is f = r + DY_FRONT - b: pair (f - (b & 1)) / 2 */
        g.boff[t] = (b & 1) * g.pairs * 32 + (DY_FRONT - b - (b & 1)) / 2 * 32;
    }
    g.xt_size = (size_t)p->c * g.lx;
    g.dyv_size = (size_t)p->k / 16 * 2 * g.pairs * 32;
    return g;
}

static bool banded(const lp_conv2d_params *p) { return p->h * p->w > BANDED_FROM; }

/* Small maps: the whole batch is one grid, the images one below the other with a zero
 * row between them (the bottom border of one and the top of the next): per image, one
 * row of junk work instead of a grid's rounding up to whole chunks and its extra chunk
 * (23 -> 15% more work than the real pixels at 14x14). Grid row r is then row r % (h + 1)
 * of image r / (h + 1), a junk row where that is h. */
static int batch_rows(const lp_conv2d_params *p) { return p->n * (p->h + 1) - 1; }

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Band slots: one per processor (the most threads that run at once), counted once per
 * process: a count that grew between sizing the scratch and running would place the
 * slots past its end. lp_cpu_count, not omp_get_num_procs: that follows the calling
 * thread's affinity, one CPU once the compute threads are pinned. */
int lp_amx_slots(void) {
#ifdef _OPENMP
    static int procs;
    if (!procs) procs = lp_cpu_count();
    return procs;
#else
    return 1;
#endif
}

int lp_omp_thread(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int lp_amx_slot_threads(void) {
    const int t = max_threads();
    return t < lp_amx_slots() ? t : lp_amx_slots();
}

/* Large maps: the work in units of (a part of the images) x (a group of output block
 * pairs). A unit goes over its images in bands of rows, filling its thread's band of xt
 * (all input channels) and dyv (its output channels), which stay in L2, and summing
 * them at once: written to memory and read back, xt and dyv cost more than the sums
 * at 224x224 (two passes over 200 MB). A group's sums (up to GROUP_BYTES) stay in L2
 * too; where one group holds them all, the images are split in two parts summed
 * apart and added after (else each thread would transpose all of x). Parts and
 * groups are set by the shape alone, so each weight's sum has one order (bands in
 * order within a part, parts in order) whatever the thread count. */
#define GROUP_BYTES (1536 << 10)
typedef struct units {
    int parts, groups, ops_per_group;
} units;

static units units_of(const lp_conv2d_params *p) {
    units u;
    const int ops = p->k / 32;
    const size_t pair = (size_t)9 * p->c * 32 * sizeof(float); /* sums of one output block pair */
    int per = (int)(GROUP_BYTES / pair);
    if (per < 1) per = 1;
    u.groups = (ops + per - 1) / per;
    u.ops_per_group = (ops + u.groups - 1) / u.groups;
    u.groups = (ops + u.ops_per_group - 1) / u.ops_per_group;
    u.parts = u.groups == 1 && p->n >= 2 ? 2 : 1;
    return u;
}

/* Rows of a band: its xt (all input channels) and dyv (a unit's output channels, two
 * pairings) in about BAND_BYTES. */
static int band_rows(const lp_conv2d_params *p) {
    const units u = units_of(p);
    const size_t row = (size_t)(p->c + 2 * u.ops_per_group * 32) * (p->w + 1) * 2;
    const int r = (int)(BAND_BYTES / row) - 2;
    return r < 1 ? 1 : r > p->h ? p->h : r;
}

static size_t slot_size(const lp_conv2d_params *p) {
    const grid g = grid_of(p, band_rows(p));
    return (2 * (g.xt_size + g.dyv_size) + 63) / 64 * 64;
}

static size_t weights_size(const lp_conv2d_params *p) { return (size_t)9 * p->c * p->k; }

size_t lp_conv_bwd_w_amx_scratch(const lp_conv2d_params *p) {
    if (banded(p)) {
        const units u = units_of(p);
        return slot_size(p) * lp_amx_slots() + sizeof(float) * ((size_t)(u.parts - 1) * weights_size(p) + (size_t)u.parts * p->k) + 64;
    }
    const grid g = grid_of(p, batch_rows(p));
    return 2 * (g.xt_size + g.dyv_size) + sizeof(float) * (size_t)p->n * p->h * p->k + 64;
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

/* 32 pixels (m of them from src, pixel stride c; zeros after) of 32 channels to 32
 * rows of `keep` pixels at dst (row stride ds), whole lines where keep is 32: each
 * half transposed as channel pairs, each pair split in two rows, the halves joined. */
AVX512 static void transpose_block(const uint16_t *src, int c, int m, int keep, uint16_t *dst, size_t ds) {
    const __m512i split = _mm512_set_epi16(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1, 30, 28, 26, 24, 22,
                                           20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __mmask32 kept = keep >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << keep) - 1);
    __m512i lo[16], hi[16];
    for (int i = 0; i < 16; i++) {
        lo[i] = i < m ? _mm512_loadu_si512(src + (size_t)i * c) : _mm512_setzero_si512();
        hi[i] = i + 16 < m ? _mm512_loadu_si512(src + (size_t)(i + 16) * c) : _mm512_setzero_si512();
    }
    transpose16(lo);
    transpose16(hi);
    for (int j = 0; j < 16; j++) {
        const __m512i a = _mm512_permutexvar_epi16(split, lo[j]), b = _mm512_permutexvar_epi16(split, hi[j]);
        _mm512_mask_storeu_epi16(dst + 2 * j * ds, kept, _mm512_shuffle_i64x2(a, b, 0x44));
        _mm512_mask_storeu_epi16(dst + (2 * j + 1) * ds, kept, _mm512_shuffle_i64x2(a, b, 0xee));
    }
}

/* Flat elements [from, to) of every channel row of grid g's xt set to zero (clipped
 * to the row). */
static void zero_x(const lp_conv2d_params *p, const grid *g, uint16_t *xt, size_t from, size_t to) {
    if (to > (size_t)g->lx) to = g->lx;
    if (from >= to) return;
    for (int i = 0; i < p->c; i++) memset(xt + (size_t)i * g->lx + from, 0, sizeof(uint16_t) * (to - from));
}

/* Grid row j of g's xt from row y of image n of x: W pixels then zeros to the next
 * row. The next 32 pixels of x are fetched ahead while a block is transposed: without,
 * the transposes waited on memory (3-5 GB/s from one core, against 15 streamed). */
AVX512 static void fill_x_row(const lp_conv2d_params *p, const grid *g, const uint16_t *x, uint16_t *xt, int n, int y, int j) {
    const int w = p->w, c = p->c, wp = g->wp;
    const size_t at = MARGIN + (size_t)j * wp;
    const uint16_t *row = x + ((size_t)n * p->h + y) * w * c;
    /* blocks that end on whole lines of xt after the first (split stores were slower) */
    const int lead = (int)((32 - at % 32) % 32);
    int x0 = 0;
    for (int m; x0 < w; x0 += m) {
        m = x0 == 0 && lead ? lead : 32;
        for (int c0 = 0; c0 < c; c0 += 32) {
            /* this block's 64-byte slice of the next 32 pixels: all of them over the c0 loop */
            const char *ahead = (const char *)(row + (size_t)(x0 + m) * c) + (size_t)c0 * 64;
            for (int l = 0; l < 32; l++) _mm_prefetch(ahead + (size_t)l * 64, _MM_HINT_T0);
            transpose_block(row + (size_t)x0 * c + c0, c, w - x0 < m ? w - x0 : m, wp - x0 < m ? wp - x0 : m,
                            xt + (size_t)c0 * g->lx + at + x0, g->lx);
        }
    }
    if (x0 < wp)
        for (int i = 0; i < c; i++) memset(xt + (size_t)i * g->lx + at + x0, 0, sizeof(uint16_t) * (wp - x0));
}

/* Pairs [j0, j1) of both pairings of grid g's dyv (base: output channel o0), output
 * channels [o0, o1), from image n of dy, the grid's row 0 at row y0 and valid rows <
 * rows; per 16 channels, the even pairs' dy summed in pixel order and added to sum[o -
 * o0] (a part of the bias gradient). The sum takes a pair per VDPBF16PS against ones,
 * as the pair is stored (the pair's second pixel added first, then its first; products
 * by 1 are exact): one instruction where widening and adding each pixel took six. It
 * flushes denormals, in dy and in the sum, as the tiles do for the weight gradient.
 *
 * A strip of pairs at a time, all its channels, so the pixels stream from memory once
 * in order, and the running sums of up to 8 blocks of 16 channels side by side (a
 * pass per block waited on its own adds, 8 cycles a pair, and read each line of dy
 * several times). Each block's sum still adds its pairs in pixel order, as one
 * running sum, whatever the strips. */
#define STRIP 16
#define ACC_MAX 512 /* channels whose running sums one call holds */
typedef struct strip {
    const uint16_t *px[2 * STRIP + 1]; /* pixel f of the strip's first pair, and on */
    __mmask16 valid[2 * STRIP + 1];    /* all ones, or none: outside the image (px: any pixel) */
} strip;

AVX512BF16 static inline void dy_blocks(const strip *sp, int pairs, int o, int m, uint16_t *d, size_t block, size_t odd, size_t j,
                                    float *acc) {
    /* lanes 2o, 2o+1: dy[f][o], dy[f+1][o] */
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                           20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512bh ones = (__m512bh)_mm512_set1_epi16(0x3f80);
    __m512 s[8];
    for (int b = 0; b < m; b++) s[b] = _mm512_loadu_ps(acc + b * 16);
    for (int i = 0; i < pairs; i++)
        for (int b = 0; b < m; b++) {
            const size_t at = (size_t)o + b * 16;
            const __m256i e0 = _mm256_maskz_loadu_epi16(sp->valid[2 * i], sp->px[2 * i] + at);
            const __m256i e1 = _mm256_maskz_loadu_epi16(sp->valid[2 * i + 1], sp->px[2 * i + 1] + at);
            const __m256i e2 = _mm256_maskz_loadu_epi16(sp->valid[2 * i + 2], sp->px[2 * i + 2] + at);
            const __m512i even = _mm512_permutexvar_epi16(inter, _mm512_inserti64x4(_mm512_castsi256_si512(e0), e1, 1));
            s[b] = _mm512_dpbf16_ps(s[b], (__m512bh)even, ones);
            uint16_t *row = d + b * block + (j + i) * 32;
            _mm512_storeu_si512(row, even);
            _mm512_storeu_si512(row + odd, _mm512_permutexvar_epi16(inter, _mm512_inserti64x4(_mm512_castsi256_si512(e1), e2, 1)));
        }
    for (int b = 0; b < m; b++) _mm512_storeu_ps(acc + b * 16, s[b]);
}

AVX512BF16 static void fill_dy_pairs(const lp_conv2d_params *p, const grid *g, const uint16_t *dy, uint16_t *dyv, float *sum, int n,
                                 int y0, int rows, int period, int j0, int j1, int o0, int o1) {
    const size_t block = (size_t)2 * g->pairs * 32, odd = (size_t)g->pairs * 32; /* per 16 channels; odd pairing */
    for (; o1 - o0 > ACC_MAX; o0 += ACC_MAX, dyv += ACC_MAX / 16 * block, sum += ACC_MAX)
        fill_dy_pairs(p, g, dy, dyv, sum, n, y0, rows, period, j0, j1, o0, o0 + ACC_MAX);
    const int w = p->w, wp = g->wp, k = p->k, nb = (o1 - o0) / 16, h = p->h;
    const uint16_t *image = dy + ((size_t)n * p->h + y0) * w * k;
    float acc[ACC_MAX] __attribute__((aligned(64)));
    memset(acc, 0, sizeof(float) * (o1 - o0));
    strip sp;
    for (int j = j0; j < j1; j += STRIP) {
        const int pairs = j1 - j < STRIP ? j1 - j : STRIP;
        for (int i = 0; i <= 2 * pairs; i++) {
            const int q = 2 * j + i - DY_FRONT, yy = q >= 0 ? q / wp : -1, xx = q >= 0 ? q % wp : 0;
            const int im = yy / period, y = yy % period; /* grid row yy: row y of image n + im */
            const bool in = q >= 0 && yy < rows && y < h && xx < w;
            sp.px[i] = in ? image + (((size_t)im * h + y) * w + xx) * k : image;
            sp.valid[i] = in ? 0xffff : 0;
        }
        int b = 0;
        for (; nb - b >= 8; b += 8) dy_blocks(&sp, pairs, o0 + b * 16, 8, dyv + b * block, block, odd, j, acc + b * 16);
        for (; nb - b >= 4; b += 4) dy_blocks(&sp, pairs, o0 + b * 16, 4, dyv + b * block, block, odd, j, acc + b * 16);
        for (; b < nb; b += 2) dy_blocks(&sp, pairs, o0 + b * 16, 2, dyv + b * block, block, odd, j, acc + b * 16);
    }
    for (int o = 0; o < o1 - o0; o += 16)
        _mm512_storeu_ps(sum + o, _mm512_add_ps(_mm512_loadu_ps(sum + o), _mm512_loadu_ps(acc + o)));
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

/* What the tiles read: a grid's xt and dyv (dyv's from output block ob0 on), its first
 * `chunks` 32-pixel chunks. */
typedef struct view {
    const grid *g;
    const uint16_t *xt, *dyv;
    int chunks, ob0;
    int q; /* flat output pixels of the grid */
} view;

/* Weight tiles of input block pair ip x output block pair op, tap `tap`, summed over
 * chunks [k0, k1) of the view onto dw (or from zero, fresh): tiles 0-3 the sums (two
 * input x two output blocks), 4-5 xt, 6-7 dyv. */
AMX static inline void tap_sums(const lp_conv2d_params *p, const view *v, float *dw, int ip, int op, int tap, size_t k0, size_t k1,
                                bool fresh) {
    const grid *g = v->g;
    const int ibs = p->c / 16, ib = 2 * ip, ob = 2 * op;
    const size_t xs = (size_t)g->lx * 2, ob_stride = (size_t)2 * g->pairs * 32;
    float *t[4];
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) t[a * 2 + b] = dw + ((((size_t)(ob + b) * ibs + ib + a) * 9) + tap) * 256;
    if (fresh) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    } else {
        /* in the order the chunks' products use them, and the stores below in the
         * order the last products finish (2-4% faster) */
        _tile_loadd(0, t[0], 64);
        _tile_loadd(2, t[2], 64);
        _tile_loadd(1, t[1], 64);
        _tile_loadd(3, t[3], 64);
    }
    const uint16_t *xa = v->xt + (size_t)ib * 16 * g->lx + g->xoff[tap];
    const uint16_t *yb = v->dyv + (size_t)(ob - v->ob0) * ob_stride + g->boff[tap];
    /* chunks from here on hold only junk pixels for this tap (r - b past the grid's
     * last real pixel, q - 2): a small grid's last chunk, for most taps */
    const size_t end = (size_t)v->q - 1 + (MARGIN - 1 + (tap / 3) * g->wp + tap % 3 - g->xoff[tap]);
    for (size_t r0 = k0 * 32; r0 < k1 * 32 && r0 < end; r0 += 32) {
        const uint16_t *a0 = xa + r0, *b0 = yb + r0 * 16;
        _tile_loadd(4, a0, xs);
        _tile_loadd(6, b0, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(5, a0 + (size_t)16 * g->lx, xs);
        _tile_dpbf16ps(2, 5, 6);
        _tile_loadd(7, b0 + ob_stride, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, t[0], 64);
    _tile_stored(2, t[2], 64);
    _tile_stored(1, t[1], 64);
    _tile_stored(3, t[3], 64);
}

/* All 9 taps of input block pairs [ip0, ip1) x output block pairs [op0, op1) over the
 * view's pixels. Two orders, each sum's order of pixels the same in both:
 *   blocks outside (whole_batch, whose view is in memory): the pairs go over each
 *   block of pixels together, so that the block's xt and dyv come from memory once
 *   per group (one pair at a time, each read them from memory: L3 bandwidth was the
 *   limit);
 *   taps outside (in_bands, whose view is in L2): a row of 3 taps goes over all the
 *   blocks, its 12 KB of sums staying in L1 where the 9 taps' 36 KB did not: the
 *   band's sums 2-4% faster at 224x224 to 56x56. */
AMX static void group(const lp_conv2d_params *p, const view *v, float *dw, int ip0, int ip1, int op0, int op1, bool fresh,
                      bool taps_outside) {
    const size_t total = (size_t)v->chunks;
    if (taps_outside) {
        for (int ip = ip0; ip < ip1; ip++)
            for (int op = op0; op < op1; op++)
                for (int kh = 0; kh < 3; kh++)
                    for (size_t k0 = 0; k0 < total; k0 += BLOCK)
                        for (int tap = kh * 3; tap < kh * 3 + 3; tap++)
                            tap_sums(p, v, dw, ip, op, tap, k0, k0 + BLOCK < total ? k0 + BLOCK : total, fresh && k0 == 0);
        return;
    }
    for (size_t k0 = 0; k0 < total; k0 += BLOCK)
        for (int ip = ip0; ip < ip1; ip++)
            for (int op = op0; op < op1; op++)
                for (int tap = 0; tap < 9; tap++)
                    tap_sums(p, v, dw, ip, op, tap, k0, k0 + BLOCK < total ? k0 + BLOCK : total, fresh && k0 == 0);
}

/* Tiles 0-7 of 16 rows x 64 bytes. In static data: built on the stack, gcc 12 at -O2
 * dropped the stores of the row sizes (it does not see LDTILECFG read them), and the
 * load faulted. */
static const tile_config tiles_config = {
    .palette = 1,
    .bytes_per_row = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

/* Outside the OpenMP regions that call them: clang 14 gives the outlined regions no
 * target attributes, and failed to compile AMX intrinsics there. */
AMX void lp_amx_tiles_on(void) { _tile_loadconfig(&tiles_config); }
AMX void lp_amx_tiles_off(void) { _tile_release(); }

/* Small maps: xt and dyv of the whole batch first (parallel over rows), then the sums
 * in groups of at most GROUP_I x GROUP_O block pairs (their sums, 36 KB a pair, stay in
 * L2), at least one group per thread where the layer has that many pairs. The grouping
 * changes no sum: each weight's order is the pixels' whatever the group. */
#define GROUP_I 4
#define GROUP_O 4
static void whole_batch(const lp_conv2d_params *p, const uint16_t *x, const uint16_t *dy, float *dw, float *db, void *scratch) {
    const grid g = grid_of(p, batch_rows(p));
    const int h = p->h, rows = p->n * h;
    uint16_t *xt = scratch, *dyv = xt + g.xt_size;
    float *part = (float *)(dyv + g.dyv_size);
LP_OMP(parallel for schedule(static))
    for (int r = 0; r < rows; r++) {
        const int n = r / h, y = r % h, j = n * (h + 1) + y + 1; /* grid row of x row y of image n */
        /* the zero row above each image (also the one below the image before it) */
        if (y == 0) zero_x(p, &g, xt, r == 0 ? 0 : MARGIN + (size_t)(j - 1) * g.wp, MARGIN + (size_t)j * g.wp);
        if (r == rows - 1) zero_x(p, &g, xt, MARGIN + (size_t)(j + 1) * g.wp, g.lx);
        fill_x_row(p, &g, x, xt, n, y, j);
        float *sum = part + (size_t)r * p->k;
        memset(sum, 0, sizeof(float) * p->k);
        /* the pairs in n * h pieces, one a row */
        fill_dy_pairs(p, &g, dy, dyv, sum, 0, 0, batch_rows(p), h + 1, (int)((long long)g.pairs * r / rows),
                      (int)((long long)g.pairs * (r + 1) / rows), 0, p->k);
    }
    const int ips = p->c / 32, ops = p->k / 32, threads = max_threads();
    int gi = ips < GROUP_I ? ips : GROUP_I, go = ops < GROUP_O ? ops : GROUP_O;
    while (((ips + gi - 1) / gi) * ((ops + go - 1) / go) < threads && (gi > 1 || go > 1)) {
        if (gi >= go) gi = (gi + 1) / 2;
        else go = (go + 1) / 2;
    }
    const int ngi = (ips + gi - 1) / gi, ngo = (ops + go - 1) / go;
    const view v = {&g, xt, dyv, g.chunks, 0, g.q};
LP_OMP(parallel)
    {
        lp_amx_tiles_on();
LP_OMP(for schedule(dynamic))
        for (int u = 0; u < ngi * ngo; u++) {
            const int ip0 = (u % ngi) * gi, op0 = (u / ngi) * go;
            group(p, &v, dw, ip0, ip0 + gi < ips ? ip0 + gi : ips, op0, op0 + go < ops ? op0 + go : ops, true, false);
        }
        lp_amx_tiles_off();
    }
    /* the rows' parts in order */
    for (int o = 0; o < p->k; o++) {
        float s = 0;
        for (int r = 0; r < rows; r++) s += part[(size_t)r * p->k + o];
        db[o] = s;
    }
}

static void in_bands(const lp_conv2d_params *p, const uint16_t *x, const uint16_t *dy, float *dw, float *db, void *scratch) {
    const int rmax = band_rows(p), ips = p->c / 32, ops = p->k / 32, h = p->h;
    const grid g = grid_of(p, rmax);
    const units u = units_of(p);
    const size_t slot = slot_size(p);
    float *acc = (float *)((char *)scratch + slot * lp_amx_slots()), *sums = acc + (size_t)(u.parts - 1) * weights_size(p);
LP_OMP(parallel num_threads(lp_amx_slot_threads()))
    {
        const int t = lp_omp_thread();
        uint16_t *xt = (uint16_t *)((char *)scratch + slot * t), *dyv = xt + g.xt_size;
        lp_amx_tiles_on();
LP_OMP(for schedule(dynamic))
        for (int unit = 0; unit < u.parts * u.groups; unit++) {
            const int part = unit / u.groups, grp = unit % u.groups;
            const int op0 = grp * u.ops_per_group, op1 = op0 + u.ops_per_group < ops ? op0 + u.ops_per_group : ops;
            const int n0 = (int)((long long)p->n * part / u.parts), n1 = (int)((long long)p->n * (part + 1) / u.parts);
            float *w = part ? acc + (size_t)(part - 1) * weights_size(p) : dw, *sum = sums + (size_t)part * p->k + op0 * 32;
            memset(sum, 0, sizeof(float) * (op1 - op0) * 32);
            bool fresh = true;
            for (int n = n0; n < n1; n++)
                for (int y0 = 0; y0 < h; y0 += rmax) {
                    const int rows = h - y0 < rmax ? h - y0 : rmax;
                    /* grid row j holds x row y0 - 1 + j */
                    int j0 = 0, j1 = rows + 2; /* the grid rows that hold image rows */
                    /* each unit starts at y0 0: the margin, zeroed here, nothing else writes */
                    if (y0 == 0) zero_x(p, &g, xt, 0, MARGIN + (size_t)g.wp), j0 = 1;
                    if (y0 + rows == h) zero_x(p, &g, xt, MARGIN + (size_t)(rows + 1) * g.wp, MARGIN + (size_t)(rows + 2) * g.wp), j1 = rows + 1;
                    for (int j = j0; j < j1; j++) fill_x_row(p, &g, x, xt, n, y0 - 1 + j, j);
                    zero_x(p, &g, xt, MARGIN + (size_t)(rows + 2) * g.wp, g.lx);
                    /* this band's grid: its chunks read pairs up to chunks * 16 + 15 */
                    const grid b = grid_of(p, rows);
                    fill_dy_pairs(p, &g, dy, dyv, sum, n, y0, rows, rows + 1, 0, b.chunks * 16 + 16, op0 * 32, op1 * 32);
                    const view v = {&g, xt, dyv, b.chunks, op0 * 2, b.q};
                    group(p, &v, w, 0, ips, op0, op1, fresh, true);
                    fresh = false;
                }
        }
        lp_amx_tiles_off();
    }
    /* the parts in order */
    const size_t nw = weights_size(p);
    for (int part = 1; part < u.parts; part++) {
        const float *a = acc + (size_t)(part - 1) * nw;
LP_OMP(parallel for schedule(static))
        for (size_t i = 0; i < nw; i++) dw[i] += a[i];
    }
    for (int o = 0; o < p->k; o++) {
        float s = sums[o];
        for (int part = 1; part < u.parts; part++) s += sums[(size_t)part * p->k + o];
        db[o] = s;
    }
}

bool lp_conv_bwd_w_amx_ready(void) {
    static int ready = -1;
    if (ready < 0) ready = lp_amx_available() && tiles_permitted();
    return ready;
}

void lp_conv_bwd_w_amx(const lp_conv2d_params *p, const void *x, const void *dy, float *dw, float *db, void *scratch) {
    scratch = (void *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63); /* whole lines for the tiles */
    if (banded(p))
        in_bands(p, x, dy, dw, db, scratch);
    else
        whole_batch(p, x, dy, dw, db, scratch);
}

#endif /* LP_X86_KERNELS */
