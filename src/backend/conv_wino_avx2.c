/* Winograd F(2x2,3x3) for fp32 3x3, stride 1, pad 1 convolutions on AVX2:
 * forward (+ bias,
 * + ReLU), backward data and backward weights (+ bias gradient).
 *
 * Hand-written because oneDNN 2.6 has Winograd kernels for AVX-512 only: on an
 * AVX2 CPU its direct kernels already run VGG16's layers at 160-200 GFLOP/s on
 * 2 cores, the machine's peak, so training at 32x32 batch 32 cannot go faster
 * by a better direct kernel, only by fewer multiplications. F(2x2,3x3) computes
 * each 2x2 output tile from a 4x4 input tile with 16 products per (input,
 * output) channel pair instead of 36 (2.25x fewer); its transforms have
 * coefficients 0, +-1 and 1/2 only, so it loses almost nothing to rounding
 * (F(4x4,3x3), oneDNN's, saves 4x but rounds more and wastes most of a 6x6 tile
 * on VGG's 2x2 and 4x4 maps).
 *
 * The products are 16 matrix products, one per tile position e (Lavin & Gray
 * 2016): forward         M_e (T x K) = V_e (T x C) . U_e (C x K) backward data
 * the forward of dy with the weights turned 180 degrees and transposed, whose
 * transform is U_{P(e)}^T (P swaps rows and columns 0 and 3 of the 4x4 position
 * grid, since G.flip(g) = P.G.g for this G) backward w      dU_e (C x K) =
 * V_e^T . dM_e, dM = A.dy.A^T per tile, dw = G^T.dU.G with T = n * ceil(h/2) *
 * ceil(w/2) tiles, V = B^T.x.B per tile, U = G.w.G^T per channel pair; oneDNN's
 * sgemm does them (its jit kernels, capped by ONEDNN_MAX_CPU_ISA as ours are).
 * The transforms are ours: each moves every value once, in vectors of 8
 * channels. The backward weights is the exact gradient of the forward as
 * computed (the same linear map), so forward and backward agree whatever the
 * rounding.
 *
 * Activations in a pixel-vector layout with a multiple of 8 values per vector
 * (nChw8c, nChw16c, nhwc); weights and their gradient OIhw8i8o (oneDNN's
 * ABcd8b8a: [o/8][i/8][kh][kw][8i][8o], the layout its AVX2 forward reads, so
 * nn keeps weights, gradient and optimizer state in it); c and k multiples
 * of 8. Scratch: U (or dU) and one chunk of tiles' V and M
 * (lp_conv_wino_avx2_scratch: at most ~20 MB for 512x512 layers). */
#include "conv_wino.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

static long long tiles(const lp_conv2d_params *p) { return (long long)p->n * ((p->h + 1) / 2) * ((p->w + 1) / 2); }
/* V and M hold either side's channels: the input's in one pass, the output's in another */
static int wider(const lp_conv2d_params *p) { return p->c > p->k ? p->c : p->k; }

/* Tiles are transformed, multiplied and transformed back a chunk at a time, so
 * that V and M (4x the activations: 16 values a tile for 4 pixels) stay in the
 * cache rather than going to memory and back: a chunk holds 4 MB of them, or as
 * much as U when U is larger (deep layers: U is read again for every chunk).
 * Returns the tiles a chunk has. */
static size_t tile_bytes(const lp_conv2d_params *p) { /* V and M of one tile, either pass */
    return 16 * sizeof(float) * 2 * (size_t)wider(p);
}
static size_t u_bytes(const lp_conv2d_params *p) { return (16 * sizeof(float) * (size_t)p->c * p->k + 63) / 64 * 64; }
static long long chunk_tiles(const lp_conv2d_params *p) {
    const size_t budget = u_bytes(p) > ((size_t)4 << 20) ? u_bytes(p) : (size_t)4 << 20;
    long long tb = (long long)(budget / tile_bytes(p));
    if (tb < 1) tb = 1;
    return tb < tiles(p) ? tb : tiles(p);
}

size_t lp_conv_wino_avx2_scratch(const lp_conv2d_params *p) {
    return u_bytes(p) + (size_t)chunk_tiles(p) * tile_bytes(p) + 2 * 64;
}

/* U, and a chunk's V and M, in scratch, 64-byte aligned. */
typedef struct mats {
    float *u, *v, *m;
} mats;
static mats carve(const lp_conv2d_params *p, void *scratch) {
    char *s = (char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    mats r;
    r.u = (float *)s;
    r.v = (float *)(s + u_bytes(p));
    r.m = r.v + (size_t)chunk_tiles(p) * 16 * wider(p);
    return r;
}

/* ---- tile transforms (one tile, 8 channels) ---- */

/* d (4x4 vectors, row-major) to B^T.d.B. B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0
 * 1 0 -1]. */
AVX2 static inline void input_tile(__m256 d[16]) {
    __m256 r[16];
    for (int j = 0; j < 4; j++) { /* columns: rows combined */
        r[0 * 4 + j] = _mm256_sub_ps(d[0 * 4 + j], d[2 * 4 + j]);
        r[1 * 4 + j] = _mm256_add_ps(d[1 * 4 + j], d[2 * 4 + j]);
        r[2 * 4 + j] = _mm256_sub_ps(d[2 * 4 + j], d[1 * 4 + j]);
        r[3 * 4 + j] = _mm256_sub_ps(d[1 * 4 + j], d[3 * 4 + j]);
    }
    for (int i = 0; i < 4; i++) {
        const __m256 *q = r + i * 4;
        d[i * 4 + 0] = _mm256_sub_ps(q[0], q[2]);
        d[i * 4 + 1] = _mm256_add_ps(q[1], q[2]);
        d[i * 4 + 2] = _mm256_sub_ps(q[2], q[1]);
        d[i * 4 + 3] = _mm256_sub_ps(q[1], q[3]);
    }
}

/* m (4x4) to A^T.m.A (2x2 in o[0..3], row-major). A^T = [1 1 1 0; 0 1 -1 -1].
 */
AVX2 static inline void output_tile(const __m256 m[16], __m256 o[4]) {
    __m256 r[8];
    for (int j = 0; j < 4; j++) {
        r[0 * 4 + j] = _mm256_add_ps(_mm256_add_ps(m[0 * 4 + j], m[1 * 4 + j]), m[2 * 4 + j]);
        r[1 * 4 + j] = _mm256_sub_ps(_mm256_sub_ps(m[1 * 4 + j], m[2 * 4 + j]), m[3 * 4 + j]);
    }
    for (int i = 0; i < 2; i++) {
        const __m256 *q = r + i * 4;
        o[i * 2 + 0] = _mm256_add_ps(_mm256_add_ps(q[0], q[1]), q[2]);
        o[i * 2 + 1] = _mm256_sub_ps(_mm256_sub_ps(q[1], q[2]), q[3]);
    }
}

/* dy (2x2) to A.dy.A^T (4x4), the gradient of output_tile. A = [1 0; 1 1; 1 -1;
 * 0 -1]. */
AVX2 static inline void grad_tile(const __m256 g[4], __m256 d[16]) {
    __m256 r[8]; /* 4 rows x 2 columns */
    for (int j = 0; j < 2; j++) {
        r[0 * 2 + j] = g[0 * 2 + j];
        r[1 * 2 + j] = _mm256_add_ps(g[0 * 2 + j], g[1 * 2 + j]);
        r[2 * 2 + j] = _mm256_sub_ps(g[0 * 2 + j], g[1 * 2 + j]);
        r[3 * 2 + j] = _mm256_sub_ps(_mm256_setzero_ps(), g[1 * 2 + j]);
    }
    for (int i = 0; i < 4; i++) {
        const __m256 *q = r + i * 2;
        d[i * 4 + 0] = q[0];
        d[i * 4 + 1] = _mm256_add_ps(q[0], q[1]);
        d[i * 4 + 2] = _mm256_sub_ps(q[0], q[1]);
        d[i * 4 + 3] = _mm256_sub_ps(_mm256_setzero_ps(), q[1]);
    }
}

/* ---- whole-tensor transforms, for tiles [t0, t0 + nt) of the n * ceil(h/2) * ceil(w/2)
 * (by image, row, column), work item u = (tile - t0) * ch/8 + 8-channel block ---- */

/* Where work item u is. */
typedef struct tile_item {
    long long tl;           /* the tile's place in the chunk */
    int c8, img, ty, tx;    /* first channel, image, tile row and column */
} tile_item;
static inline tile_item tile_at(long long u, int cb, long long t0, int th, int tw) {
    const long long tl = u / cb, t = t0 + tl;
    return (tile_item){tl, (int)(u % cb) * 8, (int)(t / ((long long)th * tw)), (int)(t / tw % th), (int)(t % tw)};
}

/* src (n, ch, h, w; pixel vectors of vec) to V[16][nt][ch]: every 4x4 input
 * tile around a 2x2 output tile, zero outside the map (the padding). */
AVX2 static void inputs_to_tiles_range(const float *src, int ch, int h, int w, int vec, long long t0, long long nt,
                                       float *v, long long u0, long long u1) {
    const int th = (h + 1) / 2, tw = (w + 1) / 2, cb = ch / 8;
    for (long long u = u0; u < u1; u++) {
        const tile_item it = tile_at(u, cb, t0, th, tw);
        const long long tl = it.tl;
        const int c8 = it.c8, img = it.img, ty = it.ty, tx = it.tx;
        const float *base = src + lp_pv_offset(img, c8, 0, 0, ch, h, w, vec); /* pixel (y, x) at + (y * w + x) * vec */
        __m256 d[16];
        for (int i = 0; i < 4; i++) {
            const int y = 2 * ty - 1 + i;
            for (int j = 0; j < 4; j++) {
                const int x = 2 * tx - 1 + j;
                d[i * 4 + j] = y >= 0 && y < h && x >= 0 && x < w ? _mm256_loadu_ps(base + ((size_t)y * w + x) * vec)
                                                                  : _mm256_setzero_ps();
            }
        }
        input_tile(d);
        for (int e = 0; e < 16; e++) _mm256_storeu_ps(v + ((size_t)e * nt + tl) * ch + c8, d[e]);
    }
}

/* M[16][nt][ch] to dst (n, ch, h, w; pixel vectors of vec), + bias, ReLU. */
AVX2 static void tiles_to_outputs_range(const float *m, int ch, int h, int w, int vec, long long t0, long long nt,
                                        const float *bias, bool relu, float *dst, long long u0, long long u1) {
    const int th = (h + 1) / 2, tw = (w + 1) / 2, cb = ch / 8;
    for (long long u = u0; u < u1; u++) {
        const tile_item it = tile_at(u, cb, t0, th, tw);
        const long long tl = it.tl;
        const int c8 = it.c8, img = it.img, ty = it.ty, tx = it.tx;
        __m256 mv[16], o[4];
        for (int e = 0; e < 16; e++) mv[e] = _mm256_loadu_ps(m + ((size_t)e * nt + tl) * ch + c8);
        output_tile(mv, o);
        const __m256 b = bias ? _mm256_loadu_ps(bias + c8) : _mm256_setzero_ps(), z = _mm256_setzero_ps();
        float *base = dst + lp_pv_offset(img, c8, 0, 0, ch, h, w, vec);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                const int y = 2 * ty + i, x = 2 * tx + j;
                if (y >= h || x >= w) continue;
                __m256 r = _mm256_add_ps(o[i * 2 + j], b);
                if (relu) r = _mm256_max_ps(r, z);
                _mm256_storeu_ps(base + ((size_t)y * w + x) * vec, r);
            }
    }
}

/* dy (n, ch, h, w) to dM[16][nt][ch] = A.dy.A^T per 2x2 tile (zero past the
 * map's edge). */
AVX2 static void grads_to_tiles_range(const float *dy, int ch, int h, int w, int vec, long long t0, long long nt,
                                      float *dm, long long u0, long long u1) {
    const int th = (h + 1) / 2, tw = (w + 1) / 2, cb = ch / 8;
    for (long long u = u0; u < u1; u++) {
        const tile_item it = tile_at(u, cb, t0, th, tw);
        const long long tl = it.tl;
        const int c8 = it.c8, img = it.img, ty = it.ty, tx = it.tx;
        const float *base = dy + lp_pv_offset(img, c8, 0, 0, ch, h, w, vec);
        __m256 g[4], d[16];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                const int y = 2 * ty + i, x = 2 * tx + j;
                g[i * 2 + j] = y < h && x < w ? _mm256_loadu_ps(base + ((size_t)y * w + x) * vec) : _mm256_setzero_ps();
            }
        grad_tile(g, d);
        for (int e = 0; e < 16; e++) _mm256_storeu_ps(dm + ((size_t)e * nt + tl) * ch + c8, d[e]);
    }
}

/* Weights OIhw8i8o (k, c, 3, 3) to U[16][c][k] = G.g.G^T per (o, i) pair,
 * G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]. Vectors of 8 output channels.
 */
AVX2 static void weights_to_tiles_range(const float *wt, int c, int k, float *u, long long u0, long long u1) {
    const int ib = c / 8, ob = k / 8;
    const __m256 half = _mm256_set1_ps(0.5f);
    for (long long q = u0; q < u1; q++) { /* output blocks fastest: U's rows are written in order */
        const int o8 = (int)(q % ob) * 8, i = (int)(q / ob);
        const float *g = wt + (((size_t)(o8 / 8) * ib + i / 8) * 9) * 64 + (i % 8) * 8; /* tap t at g + t * 64 */
        __m256 r[12];                                                                   /* G.g: 4 rows x 3 columns */
        for (int j = 0; j < 3; j++) {
            const __m256 g0 = _mm256_loadu_ps(g + (0 * 3 + j) * 64), g1 = _mm256_loadu_ps(g + (1 * 3 + j) * 64),
                         g2 = _mm256_loadu_ps(g + (2 * 3 + j) * 64);
            const __m256 s = _mm256_mul_ps(_mm256_add_ps(g0, g2), half), h1 = _mm256_mul_ps(g1, half);
            r[0 * 3 + j] = g0;
            r[1 * 3 + j] = _mm256_add_ps(s, h1);
            r[2 * 3 + j] = _mm256_sub_ps(s, h1);
            r[3 * 3 + j] = g2;
        }
        for (int a = 0; a < 4; a++) {
            const __m256 *x = r + a * 3;
            const __m256 s = _mm256_mul_ps(_mm256_add_ps(x[0], x[2]), half), h1 = _mm256_mul_ps(x[1], half);
            const __m256 t[4] = {x[0], _mm256_add_ps(s, h1), _mm256_sub_ps(s, h1), x[2]};
            for (int b = 0; b < 4; b++) _mm256_storeu_ps(u + ((size_t)(a * 4 + b) * c + i) * k + o8, t[b]);
        }
    }
}

/* dU[16][c][k] to the weights' gradient OIhw8i8o: dg = G^T.dU.G per (o, i)
 * pair. */
AVX2 static void tiles_to_weight_grads_range(const float *du, int c, int k, float *dw, long long u0, long long u1) {
    const int ib = c / 8, ob = k / 8;
    const __m256 half = _mm256_set1_ps(0.5f);
    for (long long q = u0; q < u1; q++) { /* output blocks fastest: dU's rows are read in order */
        const int o8 = (int)(q % ob) * 8, i = (int)(q / ob);
        float *g = dw + (((size_t)(o8 / 8) * ib + i / 8) * 9) * 64 + (i % 8) * 8;
        __m256 r[12]; /* G^T.dU: 3 rows x 4 columns */
        for (int b = 0; b < 4; b++) {
            __m256 d[4];
            for (int a = 0; a < 4; a++) d[a] = _mm256_loadu_ps(du + ((size_t)(a * 4 + b) * c + i) * k + o8);
            const __m256 s = _mm256_mul_ps(_mm256_add_ps(d[1], d[2]), half);
            r[0 * 4 + b] = _mm256_add_ps(d[0], s);
            r[1 * 4 + b] = _mm256_mul_ps(_mm256_sub_ps(d[1], d[2]), half);
            r[2 * 4 + b] = _mm256_add_ps(s, d[3]);
        }
        for (int a = 0; a < 3; a++) {
            const __m256 *x = r + a * 4;
            const __m256 s = _mm256_mul_ps(_mm256_add_ps(x[1], x[2]), half);
            _mm256_storeu_ps(g + (a * 3 + 0) * 64, _mm256_add_ps(x[0], s));
            _mm256_storeu_ps(g + (a * 3 + 1) * 64, _mm256_mul_ps(_mm256_sub_ps(x[1], x[2]), half));
            _mm256_storeu_ps(g + (a * 3 + 2) * 64, _mm256_add_ps(s, x[3]));
        }
    }
}

/* db[o] = sum of dy over every pixel, in a fixed order (the same whatever the
 * threads). */
AVX2 static void bias_grad_range(const float *dy, int n, int ch, int h, int w, int vec, float *db, long long u0,
                                 long long u1) {
    for (long long c8 = u0 * 8; c8 < u1 * 8; c8 += 8) {
        __m256 s = _mm256_setzero_ps();
        for (int img = 0; img < n; img++) {
            const float *base = dy + lp_pv_offset(img, c8, 0, 0, ch, h, w, vec);
            for (int q = 0; q < h * w; q++) s = _mm256_add_ps(s, _mm256_loadu_ps(base + (size_t)q * vec));
        }
        _mm256_storeu_ps(db + c8, s);
    }
}

/* The parallel loops: plain C handing runs of STEP work items to the AVX2
 * functions (OpenMP's outlined loop bodies do not take the enclosing function's
 * target attribute under every compiler, so the vector code stays out of them).
 */
#define STEP 16
#define IN_RUNS(work, call)                                                                                            \
    do {                                                                                                               \
        const long long w_ = (work), runs_ = (w_ + STEP - 1) / STEP;                                                   \
        LP_OMP(parallel for schedule(static))                                                                          \
        for (long long r_ = 0; r_ < runs_; r_++) {                                                                     \
            const long long lo = r_ * STEP, hi = lo + STEP < w_ ? lo + STEP : w_;                                      \
            call;                                                                                                      \
        }                                                                                                              \
    } while (0)

static void inputs_to_tiles(const float *src, int ch, int h, int w, int vec, long long t0, long long nt, float *v) {
    IN_RUNS(nt * (ch / 8), inputs_to_tiles_range(src, ch, h, w, vec, t0, nt, v, lo, hi));
}
static void tiles_to_outputs(const float *m, int ch, int h, int w, int vec, long long t0, long long nt,
                             const float *bias, bool relu, float *dst) {
    IN_RUNS(nt * (ch / 8), tiles_to_outputs_range(m, ch, h, w, vec, t0, nt, bias, relu, dst, lo, hi));
}
static void grads_to_tiles(const float *dy, int ch, int h, int w, int vec, long long t0, long long nt, float *dm) {
    IN_RUNS(nt * (ch / 8), grads_to_tiles_range(dy, ch, h, w, vec, t0, nt, dm, lo, hi));
}
static void weights_to_tiles(const float *wt, int c, int k, float *u) {
    IN_RUNS((long long)c * (k / 8), weights_to_tiles_range(wt, c, k, u, lo, hi));
}
static void tiles_to_weight_grads(const float *du, int c, int k, float *dw) {
    IN_RUNS((long long)c * (k / 8), tiles_to_weight_grads_range(du, c, k, dw, lo, hi));
}
static void bias_grad(const float *dy, int n, int ch, int h, int w, int vec, float *db) {
    IN_RUNS(ch / 8, bias_grad_range(dy, n, ch, h, w, vec, db, lo, hi));
}

/* The 16 products C_e = op(A_e) . op(B_e); flip_b: B_{P(e)} for position e (P mirrors
 * rows and columns 0 and 3 of the 4x4 grid: backward data). */
static lp_status products(char ta, char tb, long long m, long long nn, long long kk, const float *a, long long lda,
                          size_t a_step, const float *b, long long ldb, size_t b_step, float beta, float *c,
                          long long ldc, size_t c_step, bool flip_b) {
    static const int flip[4] = {3, 1, 2, 0};
    dnnl_status_t worst = dnnl_success;
    /* the 16 products spread over the threads, each on one (oneDNN's sgemm runs on the
     * calling thread inside a parallel region): no thread waits on another within one */
LP_OMP(parallel for schedule(static))
    for (int e = 0; e < 16; e++) {
        const int eb = flip_b ? flip[e / 4] * 4 + flip[e % 4] : e;
        dnnl_status_t s =
            dnnl_sgemm(ta, tb, m, nn, kk, 1.0f, a + e * a_step, lda, b + eb * b_step, ldb, beta, c + e * c_step, ldc);
        if (s != dnnl_success) {
LP_OMP(critical)
            worst = s;
        }
    }
    return worst == dnnl_success ? LP_OK : lp_dnnl_check(worst, "conv2d Winograd F(2x2,3x3): sgemm");
}

/* The forward of `in` (ci channels, pixel vectors of vec_in) to `out` (co channels): U as
 * stored ('N', the forward), or transposed with its positions mirrored ('T', backward
 * data: the weights turned and transposed), chunk by chunk of tiles. */
static lp_status forward_pass(const lp_conv2d_params *p, const mats *s, const float *in, int ci, int vec_in, float *out,
                              int co, int vec_out, const float *bias, bool relu, bool transposed) {
    const long long t_all = tiles(p), tb = chunk_tiles(p), c = p->c, k = p->k;
    for (long long t0 = 0; t0 < t_all; t0 += tb) {
        const long long nt = t_all - t0 < tb ? t_all - t0 : tb;
        inputs_to_tiles(in, ci, p->h, p->w, vec_in, t0, nt, s->v);
        /* M_e (nt x co) = V_e (nt x ci) . U_e, or V'_e . U_{P(e)}^T; U stored (c x k) */
        lp_status st = products('N', transposed ? 'T' : 'N', nt, co, ci, s->v, ci, nt * ci, s->u, k, c * k, 0.0f, s->m,
                                co, nt * co, transposed);
        if (st) return st;
        tiles_to_outputs(s->m, co, p->h, p->w, vec_out, t0, nt, bias, relu, out);
    }
    return LP_OK;
}

lp_status lp_conv_wino_avx2_fwd(const lp_conv2d_params *p, int vec_x, int vec_y, const float *x, const float *w,
                                const float *b, float *y, void *scratch) {
    const mats s = carve(p, scratch);
    weights_to_tiles(w, p->c, p->k, s.u);
    return forward_pass(p, &s, x, p->c, vec_x, y, p->k, vec_y, p->no_bias ? NULL : b, p->relu, false);
}

lp_status lp_conv_wino_avx2_bwd_data(const lp_conv2d_params *p, int vec_x, int vec_y, const float *dy, const float *w,
                                     float *dx, void *scratch) {
    const mats s = carve(p, scratch);
    weights_to_tiles(w, p->c, p->k, s.u);
    return forward_pass(p, &s, dy, p->k, vec_y, dx, p->c, vec_x, NULL, false, true);
}

lp_status lp_conv_wino_avx2_bwd_w(const lp_conv2d_params *p, int vec_x, int vec_y, const float *x, const float *dy,
                                  float *dw, float *db, void *scratch) {
    const mats s = carve(p, scratch);
    const long long t_all = tiles(p), tb = chunk_tiles(p), c = p->c, k = p->k;
    for (long long t0 = 0; t0 < t_all; t0 += tb) {
        const long long nt = t_all - t0 < tb ? t_all - t0 : tb;
        inputs_to_tiles(x, p->c, p->h, p->w, vec_x, t0, nt, s.v);
        grads_to_tiles(dy, p->k, p->h, p->w, vec_y, t0, nt, s.m);
        /* dU_e (c x k) += V_e^T (c x nt) . dM_e (nt x k), in chunk order: the same
         * sums whatever the threads */
        lp_status st =
            products('T', 'N', c, k, nt, s.v, c, nt * c, s.m, k, nt * k, t0 ? 1.0f : 0.0f, s.u, k, c * k, false);
        if (st) return st;
    }
    tiles_to_weight_grads(s.u, p->c, p->k, dw);
    if (db && !p->no_bias) bias_grad(dy, p->n, p->k, p->h, p->w, vec_y, db);
    return LP_OK;
}
#endif
