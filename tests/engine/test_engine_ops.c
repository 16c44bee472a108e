/* Per-op gradient checks against central finite differences (in double on
 * the scalar L = sum(y * r) for a fixed random r), through the backend's
 * oneDNN layouts: conv2d (3x3 pad 1 and 3x3 stride 2 pad 0), max pool 2x2
 * (even and odd sizes; plain, nhwc and nChw16c; our kernel and oneDNN's; bf16
 * ties and NaN against aten's rule), dense, softmax cross-entropy, adaptive average pool
 * (shrinking and 1x1 -> 7x7), dropout; backward weights on small maps (ours and
 * oneDNN's) against sums in double. Exits non-zero on failure.
 * Fused ReLU is not finite-differenced here (kinks); the PyTorch parity
 * test covers it through whole networks. */
#include "backend/backend.h"
#include "backend/graph_ops.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static dnnl_stream_t S;

static void fill(float *a, size_t n, uint64_t stream, float scale) {
    for (size_t i = 0; i < n; i++) a[i] = scale * (2.0f * lp_rng_uniform(42, stream, i) - 1.0f);
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* The larger error, NaN the largest (fmax would drop it: a kernel's NaN must fail). */
static double worse(double worst, double e) { return worst != worst || e <= worst ? worst : e; }

/* Compares analytic gradient g with finite differences of f over up to `probes` entries of v. */
typedef double (*loss_fn)(void *ctx);
static void check(const char *what, void *ctx, loss_fn f, float *v, size_t n, const float *g, int probes, float eps, double tol) {
    double worst = 0, gmax = 1e-3;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(g[i]));
    for (int p = 0; p < probes && p < (int)n; p++) {
        size_t i = probes >= (int)n ? (size_t)p : (size_t)(lp_rng_u64(7, 7, (uint64_t)p) % n);
        float save = v[i];
        v[i] = save + eps;
        double lp = f(ctx);
        v[i] = save - eps;
        double lm = f(ctx);
        v[i] = save;
        double fd = (lp - lm) / (2.0 * eps);
        worst = worse(worst, fabs(fd - g[i]) / gmax);
    }
    bool ok = worst <= tol;
    printf("%-44s worst rel err %.2e %s\n", what, worst, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

#define CHECK(x)                                                                 \
    do {                                                                         \
        lp_status st_ = (x);                                                     \
        if (st_) {                                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, lp_errmsg()); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

/* ---- conv ------------------------------------------------------------------ */
typedef struct conv_ctx {
    lp_conv2d c;
    lp_reorder w_in, y_out, dy_in, dw_out, wb_in;
    float *x, *w, *b, *r, *wblk, *y, *yplain, *scratch;
    size_t ny;
} conv_ctx;

static double conv_loss(void *p) {
    conv_ctx *k = p;
    CHECK(lp_reorder_exec(&k->w_in, S, k->w, k->wblk, k->scratch));
    CHECK(lp_conv2d_forward(&k->c, S, k->x, k->wblk, k->b, k->y, k->scratch));
    CHECK(lp_reorder_exec(&k->y_out, S, k->y, k->yplain, k->scratch));
    dnnl_stream_wait(S);
    return dot(k->yplain, k->r, k->ny);
}

static void test_conv(const char *name, lp_conv2d_params p, bool blocked_input) {
    conv_ctx k;
    memset(&k, 0, sizeof k);
    int64_t xd[4] = {p.n, p.c, p.h, p.w}, wd[4] = {p.k, p.c, p.kh, p.kw};
    lp_md xplain = lp_md_plain(4, xd), wplain = lp_md_plain(4, wd);
    lp_md xmd = xplain;
    dnnl_dims_t xdd = {p.n, p.c, p.h, p.w};
    if (blocked_input) dnnl_memory_desc_init_by_tag(&xmd, 4, xdd, dnnl_f32, dnnl_aBcd16b);
    CHECK(lp_conv2d_init(&k.c, &p, &xmd));
    if (p.winograd && k.c.alg != dnnl_convolution_winograd) {
        /* Winograd runs from AVX2 up: oneDNN 2.6's at AVX-512, loupe's F(2x2,3x3) below */
        bool expected = lp_winograd_available();
        printf("%s: direct, not Winograd %s\n", name, expected ? "FAIL" : "(no AVX2 here)");
        if (expected) failures++;
    }
    CHECK(lp_conv2d_init_backward(&k.c, true, true));
    int64_t yd[4] = {p.n, p.k, k.c.oh, k.c.ow};
    lp_md yplain = lp_md_plain(4, yd);
    CHECK(lp_reorder_init(&k.w_in, &wplain, &k.c.w_md, false));
    CHECK(lp_reorder_init(&k.wb_in, &wplain, &k.c.bd_w_md, false));
    CHECK(lp_reorder_init(&k.y_out, &k.c.dst_md, &yplain, false));
    CHECK(lp_reorder_init(&k.dy_in, &yplain, &k.c.dst_md, false));
    CHECK(lp_reorder_init(&k.dw_out, &k.c.bw_dw_md, &wplain, false));
    lp_reorder x_in, dx_out;
    CHECK(lp_reorder_init(&x_in, &xplain, &xmd, false));
    CHECK(lp_reorder_init(&dx_out, &xmd, &xplain, false));
    size_t nx = (size_t)p.n * p.c * p.h * p.w, nw = (size_t)p.k * p.c * p.kh * p.kw;
    k.ny = (size_t)p.n * p.k * k.c.oh * k.c.ow;
    size_t big = lp_md_size(&k.c.dst_md) + lp_md_size(&xmd) + lp_md_size(&k.c.w_md) + lp_md_size(&k.c.bd_w_md) +
                 lp_md_size(&k.c.bw_dw_md) + 4096;
    float *xp = lp_aligned_alloc(nx * 4), *dxp = lp_aligned_alloc(nx * 4), *dxb = lp_aligned_alloc(big);
    k.x = lp_aligned_alloc(big);
    k.w = lp_aligned_alloc(nw * 4);
    k.b = lp_aligned_alloc((size_t)p.k * 4);
    k.r = lp_aligned_alloc(k.ny * 4);
    k.wblk = lp_aligned_alloc(big);
    k.y = lp_aligned_alloc(big);
    k.yplain = lp_aligned_alloc(k.ny * 4);
    k.scratch = lp_aligned_alloc(lp_conv2d_scratch_size(&k.c) + (1 << 20));
    float *dy = lp_aligned_alloc(big), *dwb = lp_aligned_alloc(big), *dw = lp_aligned_alloc(nw * 4),
          *db = lp_aligned_alloc((size_t)p.k * 4), *wb = lp_aligned_alloc(big);
    fill(xp, nx, 1, 1.0f);
    fill(k.w, nw, 2, 0.5f);
    fill(k.b, (size_t)p.k, 3, 0.5f);
    fill(k.r, k.ny, 4, 1.0f);
    CHECK(lp_reorder_exec(&x_in, S, xp, k.x, k.scratch));
    conv_loss(&k);
    /* analytic */
    CHECK(lp_reorder_exec(&k.dy_in, S, k.r, dy, k.scratch));
    if (p.relu) lp_relu_backward_inplace(dy, k.y, lp_md_size(&k.c.dst_md) / 4);
    CHECK(lp_conv2d_backward_weights(&k.c, S, k.x, dy, dwb, db, k.scratch));
    CHECK(lp_reorder_exec(&k.dw_out, S, dwb, dw, k.scratch));
    CHECK(lp_reorder_exec(&k.wb_in, S, k.w, wb, k.scratch));
    CHECK(lp_conv2d_backward_data(&k.c, S, dy, wb, dxb, k.scratch));
    CHECK(lp_reorder_exec(&dx_out, S, dxb, dxp, k.scratch));
    dnnl_stream_wait(S);
    char what[96];
    snprintf(what, sizeof what, "%s dw", name);
    check(what, &k, conv_loss, k.w, nw, dw, 60, 1e-2f, 2e-3);
    snprintf(what, sizeof what, "%s db", name);
    check(what, &k, conv_loss, k.b, (size_t)p.k, db, 60, 1e-2f, 2e-3);
    /* dx: perturb the plain input and re-reorder it each time */
    double worst = 0, gmax = 1e-3;
    for (size_t i = 0; i < nx; i++) gmax = fmax(gmax, fabs(dxp[i]));
    for (int q = 0; q < 60; q++) {
        size_t i = (size_t)(lp_rng_u64(9, 9, (uint64_t)q) % nx);
        float save = xp[i];
        xp[i] = save + 1e-2f;
        CHECK(lp_reorder_exec(&x_in, S, xp, k.x, k.scratch));
        double lp = conv_loss(&k);
        xp[i] = save - 1e-2f;
        CHECK(lp_reorder_exec(&x_in, S, xp, k.x, k.scratch));
        double lm = conv_loss(&k);
        xp[i] = save;
        worst = worse(worst, fabs((lp - lm) / 2e-2 - dxp[i]) / gmax);
    }
    CHECK(lp_reorder_exec(&x_in, S, xp, k.x, k.scratch));
    snprintf(what, sizeof what, "%s dx", name);
    printf("%-44s worst rel err %.2e %s\n", what, worst, worst <= 2e-3 ? "ok" : "FAIL");
    if (!(worst <= 2e-3)) failures++;
    char l1[32], l2[32], l3[32];
    printf("  layouts: x %s, w %s, y %s, impl %s\n", lp_md_layout(&k.c.src_md, l1, 32), lp_md_layout(&k.c.w_md, l2, 32),
           lp_md_layout(&k.c.dst_md, l3, 32), k.c.fwd.impl);
    lp_conv2d_free(&k.c);
    lp_reorder_free(&k.w_in), lp_reorder_free(&k.wb_in), lp_reorder_free(&k.y_out), lp_reorder_free(&k.dy_in);
    lp_reorder_free(&k.dw_out), lp_reorder_free(&x_in), lp_reorder_free(&dx_out);
    free(xp), free(dxp), free(dxb), free(k.x), free(k.w), free(k.b), free(k.r), free(k.wblk), free(k.y), free(k.yplain);
    free(k.scratch), free(dy), free(dwb), free(dw), free(db), free(wb);
}

/* ---- max pool ------------------------------------------------------------------ */
typedef struct pool_ctx {
    lp_maxpool m;
    float *x, *y, *ws, *r, *scratch;
    size_t ny;
} pool_ctx;

static double pool_loss(void *p) {
    pool_ctx *k = p;
    CHECK(lp_maxpool_forward(&k->m, S, k->x, k->y, k->ws, k->scratch));
    dnnl_stream_wait(S);
    return dot(k->y, k->r, k->ny);
}

/* tag: the input's layout (abcd plain, acdb nhwc, aBcd16b nChw16c); own: our
 * AVX-512 kernel may run (2x2 on nhwc / nChw16c with 16k channels), else oneDNN's. */
static void test_pool(int n, int c, int h, int w, dnnl_format_tag_t tag, bool own) {
    pool_ctx k;
    memset(&k, 0, sizeof k);
    dnnl_dims_t xd = {n, c, h, w};
    lp_md x;
    dnnl_memory_desc_init_by_tag(&x, 4, xd, dnnl_f32, tag);
    lp_maxpool_own_allowed = own;
    CHECK(lp_maxpool_init(&k.m, n, c, h, w, 2, 2, 2, 2, &x));
    lp_maxpool_own_allowed = true;
    CHECK(lp_maxpool_init_backward(&k.m));
    size_t nx = (size_t)n * c * h * w;
    k.ny = (size_t)n * c * k.m.oh * k.m.ow;
    char l1[32], l2[32];
    if (lp_md_size(&k.m.dst_md) != k.ny * 4 || strcmp(lp_md_layout(&x, l1, 32), lp_md_layout(&k.m.dst_md, l2, 32))) {
        printf("maxpool: output layout %s for input %s (not the same family)\n", l2, l1);
        failures++;
        return;
    }
    bool want_own = own && tag != dnnl_abcd && c % 16 == 0 && LP_X86_KERNELS && lp_cpu_isa() >= LP_ISA_AVX512;
    if (k.m.own != want_own) {
        printf("maxpool %s: %s kernel, expected %s\n", l1, k.m.fwd.impl, want_own ? "ours" : "oneDNN's");
        failures++;
    }
    k.x = lp_aligned_alloc(nx * 4);
    k.y = lp_aligned_alloc(k.ny * 4);
    k.ws = lp_aligned_alloc(k.m.ws_size + 64);
    k.r = lp_aligned_alloc(k.ny * 4);
    k.scratch = lp_aligned_alloc(lp_maxpool_scratch_size(&k.m) + 4096);
    float *dx = lp_aligned_alloc(nx * 4);
    /* distinct values spaced 0.1 apart, shuffled: no ties within eps */
    int *perm = malloc(sizeof(int) * nx);
    lp_rng_permutation(5, 5, perm, (int)nx);
    for (size_t i = 0; i < nx; i++) k.x[i] = 0.1f * (float)perm[i] - 0.05f * (float)nx;
    fill(k.r, k.ny, 6, 1.0f);
    pool_loss(&k);
    memset(dx, 0x7f, nx * 4); /* garbage: every value must be written */
    CHECK(lp_maxpool_backward(&k.m, S, k.r, k.ws, dx, k.scratch));
    dnnl_stream_wait(S);
    char what[64];
    snprintf(what, sizeof what, "maxpool 2x2 %s %dx%dx%d -> %dx%d dx (%s)", l1, c, h, w, k.m.oh, k.m.ow, k.m.own ? "ours" : "oneDNN");
    check(what, &k, pool_loss, k.x, nx, dx, (int)(nx < 4000 ? nx : 4000), 1e-2f, 1e-3);
    lp_maxpool_free(&k.m);
    free(k.x), free(k.y), free(k.ws), free(k.r), free(k.scratch), free(dx), free(perm);
}

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16); /* the values below are exact in bf16 */
}
static float f32_of(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* bf16 nhwc, windows built with ties, NaNs, zeros and negatives, against a scalar
 * PyTorch MaxPool2d (aten's rule: take v when v > max or v is NaN, scanning rows then
 * columns; the gradient goes to the position taken). relu: the backward also applies
 * the backward of a ReLU before the pool (no gradient where the maximum is not > 0). */
static void test_pool_ties_bf16(bool own, bool relu) {
    if (!lp_bf16_native()) {
        printf("maxpool bf16 ties: skipped (no native bf16 here)\n");
        return;
    }
    const int n = 2, c = 32, h = 6, w = 5, oh = 3, ow = 2;
    static const float menu[] = {0.0f, 0.0f, 1.0f, 1.0f, -2.0f, 0.5f, -0.0f, NAN};
    dnnl_dims_t dims = {n, c, h, w};
    lp_md x;
    dnnl_memory_desc_init_by_tag(&x, 4, dims, dnnl_bf16, dnnl_acdb);
    lp_maxpool m;
    lp_maxpool_own_allowed = own;
    CHECK(lp_maxpool_init(&m, n, c, h, w, 2, 2, 2, 2, &x));
    lp_maxpool_own_allowed = true;
    CHECK(lp_maxpool_init_backward(&m));
    m.relu_backward = relu;
    size_t nx = (size_t)n * c * h * w, ny = (size_t)n * c * oh * ow;
    uint16_t *xb = lp_aligned_alloc(nx * 2), *yb = lp_aligned_alloc(ny * 2), *gb = lp_aligned_alloc(ny * 2);
    uint16_t *dxb = lp_aligned_alloc(nx * 2);
    void *ws = lp_aligned_alloc(m.ws_size + 64), *scratch = lp_aligned_alloc(lp_maxpool_scratch_size(&m) + 4096);
    /* nhwc index of (b, ch, i, j) */
#define NHWC(b, ch, i, j) ((((size_t)(b) * h + (i)) * w + (j)) * c + (ch))
    /* oneDNN 2.6's pooling drops NaN (a known difference): its run gets none */
    for (size_t e = 0; e < nx; e++) xb[e] = bf16_of(menu[lp_rng_u64(9, 9, e) % (own ? 8 : 6)]);
    for (size_t e = 0; e < ny; e++) gb[e] = bf16_of((float)(1 + e % 7));
    CHECK(lp_maxpool_forward(&m, S, xb, yb, ws, scratch));
    memset(dxb, 0x7f, nx * 2);
    CHECK(lp_maxpool_backward(&m, S, gb, ws, dxb, scratch));
    dnnl_stream_wait(S);
    int bad_y = 0, bad_dx = 0;
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++) {
            float want_dx[6][5] = {{0}};
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++) {
                    float best = f32_of(xb[NHWC(b, ch, 2 * i, 2 * j)]);
                    int bi = 2 * i, bj = 2 * j;
                    for (int a = 0; a < 2; a++)
                        for (int d = 0; d < 2; d++) {
                            float v = f32_of(xb[NHWC(b, ch, 2 * i + a, 2 * j + d)]);
                            if (v > best || isnan(v)) best = v, bi = 2 * i + a, bj = 2 * j + d;
                        }
                    size_t o = (((size_t)b * oh + i) * ow + j) * c + ch;
                    float got = f32_of(yb[o]);
                    if (!(got == best || (isnan(got) && isnan(best)))) bad_y++;
                    if (!relu || best > 0) want_dx[bi][bj] = f32_of(gb[o]);
                }
            for (int i = 0; i < h; i++)
                for (int j = 0; j < w; j++)
                    if (f32_of(dxb[NHWC(b, ch, i, j)]) != want_dx[i][j]) bad_dx++;
        }
#undef NHWC
    /* oneDNN's tie rule is its own; only its values are held to PyTorch's */
    bool ok = bad_y == 0 && (!m.own || bad_dx == 0);
    printf("%-44s %d wrong values, %d wrong gradients %s\n",
           own ? (relu ? "maxpool bf16 ties/NaN vs aten, + ReLU (ours)" : "maxpool bf16 ties/NaN vs aten (ours)")
               : "maxpool bf16 ties vs aten (oneDNN)",
           bad_y, bad_dx, ok ? "ok" : "FAIL");
    if (!ok) failures++;
    if (own && LP_X86_KERNELS && lp_cpu_isa() >= LP_ISA_AVX512 && !m.own) {
        printf("maxpool bf16 nhwc: expected our kernel, got %s\n", m.fwd.impl);
        failures++;
    }
    lp_maxpool_free(&m);
    free(xb), free(yb), free(gb), free(dxb), free(ws), free(scratch);
}

/* ---- dense -------------------------------------------------------------------------- */
typedef struct dense_ctx {
    lp_dense d;
    float *x, *w, *b, *y, *r, *scratch;
} dense_ctx;

static double dense_loss(void *p) {
    dense_ctx *k = p;
    CHECK(lp_dense_forward(&k->d, S, k->x, k->w, k->b, k->y, k->scratch));
    dnnl_stream_wait(S);
    return dot(k->y, k->r, (size_t)k->d.n * k->d.out);
}

static void test_dense(int n, int in, int out) {
    dense_ctx k;
    memset(&k, 0, sizeof k);
    CHECK(lp_dense_init(&k.d, n, in, out, false, false));
    CHECK(lp_dense_init_backward(&k.d, true, true));
    k.x = lp_aligned_alloc((size_t)n * in * 4);
    k.w = lp_aligned_alloc((size_t)out * in * 4);
    k.b = lp_aligned_alloc((size_t)out * 4);
    k.y = lp_aligned_alloc((size_t)n * out * 4);
    k.r = lp_aligned_alloc((size_t)n * out * 4);
    k.scratch = lp_aligned_alloc(lp_dense_scratch_size(&k.d) + 4096);
    float *dx = lp_aligned_alloc((size_t)n * in * 4), *dw = lp_aligned_alloc((size_t)out * in * 4),
          *db = lp_aligned_alloc((size_t)out * 4);
    fill(k.x, (size_t)n * in, 11, 1.0f);
    fill(k.w, (size_t)out * in, 12, 0.3f);
    fill(k.b, (size_t)out, 13, 0.3f);
    fill(k.r, (size_t)n * out, 14, 1.0f);
    /* backward weights accumulates: start from a known value and subtract it */
    for (int i = 0; i < out * in; i++) dw[i] = 1.0f;
    for (int i = 0; i < out; i++) db[i] = 1.0f;
    CHECK(lp_dense_backward_weights(&k.d, S, k.x, k.r, dw, db, true, k.scratch));
    CHECK(lp_dense_backward_data(&k.d, S, k.r, k.w, dx, k.scratch));
    dnnl_stream_wait(S);
    for (int i = 0; i < out * in; i++) dw[i] -= 1.0f;
    for (int i = 0; i < out; i++) db[i] -= 1.0f;
    /* overwrite mode gives the same on a garbage buffer */
    float *dw2 = lp_aligned_alloc((size_t)out * in * 4), *db2 = lp_aligned_alloc((size_t)out * 4);
    for (int i = 0; i < out * in; i++) dw2[i] = 123.0f;
    for (int i = 0; i < out; i++) db2[i] = 123.0f;
    CHECK(lp_dense_backward_weights(&k.d, S, k.x, k.r, dw2, db2, false, k.scratch));
    dnnl_stream_wait(S);
    double ow = 0;
    for (int i = 0; i < out * in; i++) ow = fmax(ow, fabs(dw2[i] - dw[i]));
    for (int i = 0; i < out; i++) ow = fmax(ow, fabs(db2[i] - db[i]));
    printf("%-44s max diff %.2e %s\n", "dense dw/db overwrite vs accumulate", ow, ow < 1e-5 ? "ok" : "FAIL");
    if (ow >= 1e-5) failures++;
    free(dw2), free(db2);
    check("dense dw (accumulated)", &k, dense_loss, k.w, (size_t)out * in, dw, 80, 1e-2f, 2e-3);
    check("dense db (accumulated)", &k, dense_loss, k.b, (size_t)out, db, out, 1e-2f, 2e-3);
    check("dense dx", &k, dense_loss, k.x, (size_t)n * in, dx, 80, 1e-2f, 2e-3);
    lp_dense_free(&k.d);
    free(k.x), free(k.w), free(k.b), free(k.y), free(k.r), free(k.scratch), free(dx), free(dw), free(db);
}

/* x to the nearer of the two bf16 values around it, ties to the even one: the choice
 * made by comparing distances, not by the carry trick dense.c and core use. */
static float bf16_nearest(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t a = u & 0xffff0000u, b = a + 0x10000u;
    float fa, fb;
    memcpy(&fa, &a, 4);
    memcpy(&fb, &b, 4);
    const double da = fabs((double)x - fa), db = fabs((double)fb - x);
    return da < db || (da == db && !(a & 0x10000u)) ? fa : fb;
}

/* bf16 dense (the products of x, dy and w rounded to bf16, fp32 sums and results)
 * against double sums of the rounded operands, per output within 1e-5 of the sum of
 * the terms' magnitudes; and at least 20x that off from the unrounded operands' sums
 * (it really ran in bf16). db: from the unrounded dy. oneDNN's bf16 matmuls at every
 * batch size (the fp32 small-batch loops are not used in bf16). */
static void test_dense_bf16(int n, int in, int out, bool relu) {
    if (!lp_bf16_native()) {
        printf("dense bf16: skipped (no native bf16 here)\n");
        return;
    }
    lp_dense d;
    CHECK(lp_dense_init(&d, n, in, out, relu, true));
    CHECK(lp_dense_init_backward(&d, true, true));
    const size_t nx = (size_t)n * in, nw = (size_t)out * in, ny = (size_t)n * out;
    float *x = lp_aligned_alloc(nx * 4), *w = lp_aligned_alloc(nw * 4), *b = lp_aligned_alloc(out * 4),
          *y = lp_aligned_alloc(ny * 4), *dy = lp_aligned_alloc(ny * 4), *dx = lp_aligned_alloc(nx * 4),
          *dw = lp_aligned_alloc(nw * 4), *db = lp_aligned_alloc(out * 4);
    uint16_t *wbf = lp_aligned_alloc(nw * 2);
    float *dw2 = lp_aligned_alloc(nw * 4), *db2 = lp_aligned_alloc(out * 4);
    /* a guard after the scratch the layer asks for: it must stay untouched */
    const size_t ss = lp_dense_scratch_size(&d);
    unsigned char *scratch = lp_aligned_alloc(ss + 4096);
    memset(scratch + ss, 0x5a, 4096);
    fill(x, nx, 31, 1.0f), fill(w, nw, 32, 0.3f), fill(b, out, 33, 0.3f), fill(dy, ny, 34, 1.0f);
    CHECK(lp_dense_weights_bf16(&d, S, w, wbf, scratch));
    CHECK(lp_dense_forward(&d, S, x, wbf, b, y, scratch));
    CHECK(lp_dense_backward_data(&d, S, dy, wbf, dx, scratch));
    CHECK(lp_dense_backward_weights(&d, S, x, dy, dw, db, false, scratch));
    /* accumulating (oneDNN's sum post-op): the same sums added to what is there */
    memcpy(dw2, dw, nw * 4), memcpy(db2, db, out * 4);
    CHECK(lp_dense_backward_weights(&d, S, x, dy, dw2, db2, true, scratch));
    dnnl_stream_wait(S);
    size_t wrong_copy = 0, not_double = 0, guard = 0;
    for (size_t j = 0; j < nw; j++) not_double += dw2[j] != 2.0f * dw[j];
    for (int o = 0; o < out; o++) not_double += db2[o] != 2.0f * db[o];
    for (size_t j = 0; j < 4096; j++) guard += scratch[ss + j] != 0x5a;
    for (size_t j = 0; j < nw; j++) {
        float c;
        uint32_t u = (uint32_t)wbf[j] << 16;
        memcpy(&c, &u, 4);
        wrong_copy += c != bf16_nearest(w[j]);
    }
    double err[4] = {0}, off[4] = {0}; /* y, dx, dw, db: worst |ours - rounded ref| / scale, |ours - fp32 ref| / scale */
#define TALLY(k, got, ref_r, ref_f, scale)                                                                                        \
    do {                                                                                                                       \
        const double sc = (scale) > 1e-30 ? (scale) : 1e-30;                                                                   \
        err[k] = fmax(err[k], fabs((got) - (ref_r)) / sc), off[k] = fmax(off[k], fabs((got) - (ref_f)) / sc);                  \
    } while (0)
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double r = b[o], f = b[o], m = fabs(b[o]);
            for (int j = 0; j < in; j++) {
                const double t = (double)bf16_nearest(x[(size_t)i * in + j]) * bf16_nearest(w[(size_t)o * in + j]);
                r += t, m += fabs(t), f += (double)x[(size_t)i * in + j] * w[(size_t)o * in + j];
            }
            if (relu) r = fmax(r, 0.0), f = fmax(f, 0.0);
            TALLY(0, y[(size_t)i * out + o], r, f, m);
        }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < in; j++) {
            double r = 0, f = 0, m = 0;
            for (int o = 0; o < out; o++) {
                const double t = (double)bf16_nearest(dy[(size_t)i * out + o]) * bf16_nearest(w[(size_t)o * in + j]);
                r += t, m += fabs(t), f += (double)dy[(size_t)i * out + o] * w[(size_t)o * in + j];
            }
            TALLY(1, dx[(size_t)i * in + j], r, f, m);
        }
    for (int o = 0; o < out; o++) {
        for (int j = 0; j < in; j++) {
            double r = 0, f = 0, m = 0;
            for (int i = 0; i < n; i++) {
                const double t = (double)bf16_nearest(dy[(size_t)i * out + o]) * bf16_nearest(x[(size_t)i * in + j]);
                r += t, m += fabs(t), f += (double)dy[(size_t)i * out + o] * x[(size_t)i * in + j];
            }
            TALLY(2, dw[(size_t)o * in + j], r, f, m);
        }
        double r = 0, m = 0;
        for (int i = 0; i < n; i++) r += dy[(size_t)i * out + o], m += fabs(dy[(size_t)i * out + o]);
        TALLY(3, db[o], r, r, m);
    }
#undef TALLY
    bool ok = wrong_copy == 0 && err[3] <= 1e-5 && !lp_dense_small_batch(&d) && not_double == 0 && guard == 0;
    for (int k = 0; k < 3; k++) ok = ok && err[k] <= 1e-5 && off[k] >= 2e-4;
    printf("dense bf16 n=%d %dx%d%s (%s): err vs rounded operands y %.1e dx %.1e dw %.1e db %.1e; vs fp32 operands y %.1e "
           "dx %.1e dw %.1e; copy %zu of %zu not rounded; accumulated %zu not twice; scratch guard %zu bytes hit %s\n",
           n, in, out, relu ? " relu" : "", lp_dense_small_batch(&d) ? "our fp32 loops" : "oneDNN", err[0], err[1], err[2],
           err[3], off[0], off[1], off[2], wrong_copy, nw, not_double, guard, ok ? "ok" : "FAIL");
    if (!ok) failures++;
    lp_dense_free(&d);
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db), free(wbf), free(scratch), free(dw2), free(db2);
}

/* Small-batch backward data (ours, dense.c): against sums in double; the same bits with
 * 1 and 2 threads; and with one chunk of rows (out < 512), exactly one fmaf chain per
 * element in row order, as written out here. */
static void test_dense_dx_small(int n, int in, int out) {
    lp_dense d;
    CHECK(lp_dense_init(&d, n, in, out, false, false));
    CHECK(lp_dense_init_backward(&d, true, false));
    float *dy = lp_aligned_alloc((size_t)n * out * 4), *w = lp_aligned_alloc((size_t)out * in * 4);
    float *dx1 = lp_aligned_alloc((size_t)n * in * 4), *dx2 = lp_aligned_alloc((size_t)n * in * 4);
    void *scratch = lp_aligned_alloc(lp_dense_scratch_size(&d) + 64);
    fill(dy, (size_t)n * out, 21, 1.0f);
    fill(w, (size_t)out * in, 22, 0.3f);
    const int threads = lp_get_threads();
    lp_set_threads(1);
    CHECK(lp_dense_backward_data(&d, S, dy, w, dx1, scratch));
    lp_set_threads(2);
    CHECK(lp_dense_backward_data(&d, S, dy, w, dx2, scratch));
    lp_set_threads(threads);
    double err = 0, top = 0;
    size_t chain_diff = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < in; j++) {
            double ref = 0;
            float chain = 0.0f;
            for (int o = 0; o < out; o++) {
                ref += (double)dy[(size_t)i * out + o] * w[(size_t)o * in + j];
                chain = fmaf(dy[(size_t)i * out + o], w[(size_t)o * in + j], chain);
            }
            err = fmax(err, fabs(dx1[(size_t)i * in + j] - ref));
            top = fmax(top, fabs(ref));
            chain_diff += memcmp(&chain, &dx1[(size_t)i * in + j], 4) != 0;
        }
    const bool same = !memcmp(dx1, dx2, (size_t)n * in * 4), one_chunk = out < 512;
    const bool ok = same && err <= 1e-5 * top && (!one_chunk || chain_diff == 0);
    printf("dense dx small batch n=%d %dx%d: rel err %.2e vs double, 1 vs 2 threads %s, %zu of %d differ from one fmaf "
           "chain%s %s\n", n, in, out, err / top, same ? "identical" : "DIFFER", chain_diff, n * in,
           one_chunk ? "" : " (several chunks: not expected to match)", ok ? "ok" : "FAIL");
    if (!ok) failures++;
    lp_dense_free(&d);
    free(dy), free(w), free(dx1), free(dx2), free(scratch);
}

/* ---- softmax cross-entropy ------------------------------------------------------------- */
typedef struct xent_ctx {
    float *z;
    int *labels, n, k;
} xent_ctx;

static double xent_loss(void *p) {
    xent_ctx *c = p;
    return lp_softmax_xent(c->z, c->labels, c->n, c->k, NULL, NULL, NULL);
}

static void test_xent(void) {
    int n = 4, k = 5;
    float z[20], dz[20], probs[20], loss[4];
    int labels[4] = {0, 3, 4, 1};
    fill(z, 20, 21, 3.0f);
    z[5] = 80.0f; /* large logit: stable path */
    xent_ctx c = {z, labels, n, k};
    double m = lp_softmax_xent(z, labels, n, k, loss, probs, dz);
    check("softmax-xent dz", &c, xent_loss, z, 20, dz, 20, 1e-3f, 1e-3);
    double mean = 0;
    for (int i = 0; i < n; i++) mean += loss[i] / n;
    if (fabs(mean - m) > 1e-5 || !isfinite(m)) {
        printf("softmax-xent mean loss mismatch %g vs %g FAIL\n", mean, m);
        failures++;
    }
    float big[2] = {1000.0f, -1000.0f};
    int lab = 1;
    double l = lp_softmax_xent(big, &lab, 1, 2, NULL, NULL, NULL);
    if (fabs(l - 2000.0) > 1e-3) {
        printf("softmax-xent not stable for logits +-1000: %g FAIL\n", l);
        failures++;
    } else printf("softmax-xent logits +-1000: loss %.1f ok\n", l);
}

/* ---- adaptive average pool ------------------------------------------------------------ */
typedef struct ap_ctx {
    float *x, *y, *r;
    int nc, h, w, oh, ow;
} ap_ctx;

static double ap_loss(void *p) {
    ap_ctx *c = p;
    lp_adaptive_avgpool_forward(c->x, c->y, c->nc, c->h, c->w, c->oh, c->ow);
    return dot(c->y, c->r, (size_t)c->nc * c->oh * c->ow);
}

static void test_apool(int h, int w, int oh, int ow) {
    ap_ctx c = {.nc = 3, .h = h, .w = w, .oh = oh, .ow = ow};
    size_t nx = (size_t)c.nc * h * w, ny = (size_t)c.nc * oh * ow;
    c.x = malloc(nx * 4);
    c.y = malloc(ny * 4);
    c.r = malloc(ny * 4);
    float *dx = malloc(nx * 4);
    fill(c.x, nx, 31, 1.0f);
    fill(c.r, ny, 32, 1.0f);
    lp_adaptive_avgpool_backward(c.r, dx, c.nc, h, w, oh, ow);
    char what[64];
    snprintf(what, sizeof what, "adaptive avgpool %dx%d -> %dx%d dx", h, w, oh, ow);
    check(what, &c, ap_loss, c.x, nx, dx, (int)nx, 1e-2f, 1e-3);
    free(c.x), free(c.y), free(c.r), free(dx);
}

/* ---- dropout ---------------------------------------------------------------------------- */
static void test_dropout(void) {
    size_t n = 100000;
    float *x = malloc(n * 4), *y = malloc(n * 4), *m = malloc(n * 4), *dx = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    lp_dropout_forward(x, y, m, n, 0.5f, 99, 3);
    lp_dropout_backward(x, m, dx, n);
    size_t kept = 0;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        if (m[i] != 0.0f) kept++;
        ok &= (m[i] == 0.0f || m[i] == 2.0f) && y[i] == m[i] && dx[i] == m[i];
    }
    double frac = (double)kept / n;
    ok &= fabs(frac - 0.5) < 0.01;
    printf("dropout p=0.5: kept %.4f, scale 2, backward = mask %s\n", frac, ok ? "ok" : "FAIL");
    if (!ok) failures++;
    free(x), free(y), free(m), free(dx);
}

/* ---- our backward weights (conv_bwd_w_small.c, _rgb.c, _amx.c) vs a double reference ---
 * x and dy hold random values (bf16: values exact in bf16) in the layout the conv
 * has; dw and db from our kernel and from oneDNN's must both match the sums done in
 * double. Taps whose input lies in the padding must get no contribution: a 1-pixel
 * map has only its centre tap. */
static float bf16_round(float f) { return f32_of(bf16_of(f)); }


/* A 3x3, stride 1, pad 1 convolution's sums in double, on plain NCHW / OIHW arrays:
 * each non-NULL output (zeroed by the caller) gets y = conv(x, wt) + b, dx = the
 * transposed conv of dy, dw = sum of dy x x products and db = sum of dy. Taps whose
 * input lies in the padding contribute nothing. */
static void conv3x3_ref(int n, int c, int k, int h, int w, const float *x, const float *wt, const float *b, const float *dy,
                        double *y, double *dx, double *dw, double *db) {
    for (int bi = 0; bi < n; bi++)
        for (int o = 0; o < k; o++)
            for (int oy = 0; oy < h; oy++)
                for (int ox = 0; ox < w; ox++) {
                    const size_t at = (((size_t)bi * k + o) * h + oy) * w + ox;
                    const double g = dy ? dy[at] : 0;
                    double s = b ? b[o] : 0;
                    if (db) db[o] += g;
                    for (int i = 0; i < c; i++)
                        for (int t = 0; t < 9; t++) {
                            const int iy = oy + t / 3 - 1, ix = ox + t % 3 - 1;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                            const size_t xi = (((size_t)bi * c + i) * h + iy) * w + ix, wi = ((size_t)o * c + i) * 9 + t;
                            if (y) s += (double)x[xi] * wt[wi];
                            if (dx) dx[xi] += g * wt[wi];
                            if (dw) dw[wi] += g * x[xi];
                        }
                    if (y) y[at] = s;
                }
}

/* relu (the RGB kernel's fused mask; ours only): dy is given unmasked with the layer's
 * output y (random signs, zeros, -0 and a NaN), against the double sums of dy masked
 * where y > 0 (as lp_relu_backward_inplace_bf16: bits in [0x0001, 0x7fff]); dy itself
 * must be left unchanged. */
/* Which backward-weights kernel each ISA level is meant to run (conv2d.c's table): 1
 * ours, 0 oneDNN's, -1 either. fp32 on small maps: ours from AVX2 up (blocks of 8 on
 * AVX2, 16 on AVX-512). bf16 (only where it is native): the small-map kernel from
 * AVX512-BF16 up; 3 input channels on larger maps: ours on AMX, and on AVX512-BF16
 * where oneDNN's gradient layout is the one the kernel writes (ABcd16b16a: CPU-dependent);
 * 32k channels on larger maps: ours on AMX only. */
static int bwd_w_expected(int n, int c, int k, int h, int w, bool bf16) {
    const lp_isa isa = lp_cpu_isa();
    const int blk = isa >= LP_ISA_AVX512 ? 16 : 8;
    const bool small = h * w <= 16 && (long long)n * (3 * h - 2) * (3 * w - 2) <= 256;
    if (!bf16) return isa >= LP_ISA_AVX2 && small && c % blk == 0 && k % blk == 0;
    if (small) return isa >= LP_ISA_AVX512_BF16;
    if (c == 3) return isa >= LP_ISA_AMX ? (lp_conv_bwd_w_rgb_amx_allowed || k % 32 ? -1 : 1) : isa >= LP_ISA_AVX512_BF16 ? -1 : 0;
    return isa >= LP_ISA_AMX && c % 32 == 0 && k % 32 == 0;
}

static void test_bwd_w_small(int n, int c, int k, int h, int w, bool bf16, dnnl_format_tag_t tag, bool relu) {
    if (bf16 && !lp_bf16_native()) { /* loupe runs no bf16 there */
        printf("bwd_w (%d,%d,%d,%d)->%d bf16: skipped (no native bf16 at %s)\n", n, c, h, w, k, lp_isa_name(lp_cpu_isa()));
        return;
    }
    const int expected = bwd_w_expected(n, c, k, h, w, bf16);
    if (relu && !lp_bf16_native()) {
        printf("bwd_w + relu mask: skipped (no native bf16 here)\n");
        return;
    }
    lp_conv2d_params p = {.n = n, .c = c, .h = h, .w = w, .k = k, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .relu = true, .bf16 = bf16, .winograd = false};
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * k * h * w, nw = (size_t)k * c * 9;
    const uint64_t seed = relu ? 7 : 5;
    float *xp = lp_aligned_alloc(nx * 4), *yp = lp_aligned_alloc(ny * 4), *act = NULL, *masked = NULL;
    for (size_t i = 0; i < nx; i++) xp[i] = bf16_round(2.0f * lp_rng_uniform(seed, 1, i) - 1.0f);
    for (size_t i = 0; i < ny; i++) yp[i] = bf16_round(2.0f * lp_rng_uniform(seed, 2, i) - 1.0f);
    if (relu) {
        act = lp_aligned_alloc(ny * 4), masked = lp_aligned_alloc(ny * 4);
        for (size_t i = 0; i < ny; i++) {
            const float u = lp_rng_uniform(seed, 3, i);
            act[i] = u < 0.1f ? 0.0f : u < 0.12f ? -0.0f : bf16_round(2.0f * u - 1.0f);
        }
        act[5] = NAN; /* positive NaN: bits 0x7fc0, kept as lp_relu_backward_inplace_bf16 keeps it */
        for (size_t i = 0; i < ny; i++) masked[i] = (uint16_t)(bf16_of(act[i]) - 1u) < 0x7fffu ? yp[i] : 0.0f;
    }
    double *ref = calloc(nw, sizeof(double)), *rb = calloc((size_t)k, sizeof(double));
    conv3x3_ref(n, c, k, h, w, xp, NULL, NULL, relu ? masked : yp, NULL, NULL, ref, rb);
    for (int own = 1; own >= (relu && expected ? 1 : 0); own--) {
        lp_conv_bwd_w_own_allowed = own;
        lp_conv2d cv;
        dnnl_dims_t sd = {n, c, h, w};
        lp_md src;
        dnnl_memory_desc_init_by_tag(&src, 4, sd, dt, tag);
        CHECK(lp_conv2d_init(&cv, &p, &src));
        CHECK(lp_conv2d_init_backward(&cv, false, true));
        lp_conv_bwd_w_own_allowed = true;
        const bool ours = strncmp(cv.bwd_w.impl, "loupe:", 6) == 0, want = own && expected == 1;
        if (ours != want && !(own && expected < 0)) {
            printf("bwd_w %s at %s: kernel %s, expected %s FAIL\n", bf16 ? "bf16" : "fp32", lp_isa_name(lp_cpu_isa()),
                   cv.bwd_w.impl, want ? "ours" : "oneDNN's");
            failures++;
        }
        /* a kernel that does not mask gets dy masked, as the caller (nn) does then */
        const bool masks = relu && lp_conv2d_bwd_w_masks_relu(&cv);
        int64_t xd[4] = {n, c, h, w}, yd[4] = {n, k, h, w}, wd[4] = {k, c, 3, 3};
        lp_md xpl = lp_md_plain(4, xd), ypl = lp_md_plain(4, yd), wpl = lp_md_plain(4, wd);
        lp_reorder rx, ry, rw;
        CHECK(lp_reorder_init(&rx, &xpl, &cv.src_md, false));
        CHECK(lp_reorder_init(&ry, &ypl, &cv.dst_md, false));
        CHECK(lp_reorder_init(&rw, &cv.bw_dw_md, &wpl, false));
        const size_t ysize = lp_md_size(&cv.dst_md);
        void *x = lp_aligned_alloc(lp_md_size(&cv.src_md)), *dy = lp_aligned_alloc(ysize),
             *dwb = lp_aligned_alloc(lp_md_size(&cv.bw_dw_md)), *scr = lp_aligned_alloc(lp_conv2d_scratch_size(&cv) + 4096);
        void *y = relu ? lp_aligned_alloc(ysize) : NULL, *dy0 = relu ? lp_aligned_alloc(ysize) : NULL;
        float *dw = lp_aligned_alloc(nw * 4), *db = lp_aligned_alloc((size_t)k * 4);
        /* NaN everywhere in scratch: a kernel that reads scratch it did not write shows */
        memset(scr, 0xff, lp_conv2d_scratch_size(&cv) + 4096);
        CHECK(lp_reorder_exec(&rx, S, xp, x, scr));
        CHECK(lp_reorder_exec(&ry, S, relu && !masks ? masked : yp, dy, scr));
        if (masks) {
            CHECK(lp_reorder_exec(&ry, S, act, y, scr));
            dnnl_stream_wait(S);
            memcpy(dy0, dy, ysize);
            CHECK(lp_conv2d_backward_weights_relu(&cv, S, x, dy, y, NULL, dwb, db, scr));
            if (!strcmp(cv.bwd_w.impl, "loupe:amx_bf16_3x3_rgb")) {
                /* the same mask as bits (as our RGB forward writes them): the same dw and db */
                const size_t nv = ysize / 2, dwbytes = lp_md_size(&cv.bw_dw_md);
                uint16_t *bits = calloc(nv / 16 + 1, 2);
                void *dwb2 = lp_aligned_alloc(dwbytes);
                float *db2 = lp_aligned_alloc((size_t)k * 4);
                for (size_t i = 0; i < nv; i++) {
                    const uint16_t v = ((const uint16_t *)y)[i];
                    if (v >= 1 && v <= 0x7fff) bits[i / 16] |= (uint16_t)(1u << (i % 16));
                }
                CHECK(lp_conv2d_backward_weights_relu(&cv, S, x, dy0, y, bits, dwb2, db2, scr));
                const bool same = !memcmp(dwb2, dwb, dwbytes) && !memcmp(db2, db, (size_t)k * 4);
                printf("bwd_w (%d,%d,%d,%d)->%d ReLU mask from bits: %s\n", n, c, h, w, k, same ? "the same dw, db ok" : "differ FAIL");
                if (!same) failures++;
                free(bits), free(dwb2), free(db2);
            }
        } else {
            CHECK(lp_conv2d_backward_weights(&cv, S, x, dy, dwb, db, scr));
        }
        CHECK(lp_reorder_exec(&rw, S, dwb, dw, scr));
        dnnl_stream_wait(S);
        double worst = 0, scale = 1e-3;
        for (size_t i = 0; i < nw; i++) scale = fmax(scale, fabs(ref[i]));
        for (size_t i = 0; i < nw; i++) worst = worse(worst, fabs(dw[i] - ref[i]) / scale);
        for (int o = 0; o < k; o++) worst = worse(worst, fabs(db[o] - rb[o]) / scale);
        const bool kept = !masks || !memcmp(dy0, dy, ysize), ok = worst <= 1e-5 && kept;
        char l1[32], l2[32];
        printf("bwd_w (%d,%d,%d,%d)->%d %s x %s dy %s %-24s%s worst rel err %.2e%s %s\n", n, c, h, w, k, bf16 ? "bf16" : "fp32",
               lp_md_layout(&cv.src_md, l1, 32), lp_md_layout(&cv.dst_md, l2, 32), cv.bwd_w.impl,
               relu ? (masks ? " + relu mask" : " + relu (dy masked before)") : "", worst,
               masks ? (kept ? ", dy unchanged" : ", dy CHANGED") : "", ok ? "ok" : "FAIL");
        if (!ok) failures++;
        lp_reorder_free(&rx), lp_reorder_free(&ry), lp_reorder_free(&rw);
        lp_conv2d_free(&cv);
        free(x), free(dy), free(dwb), free(scr), free(dw), free(db), free(y), free(dy0);
    }
    free(xp), free(yp), free(act), free(masked), free(ref), free(rb);
}

/* ---- depthwise backward weights (conv_bwd_w_dw.c) vs a double reference ----------------
 * groups = channels, kernel k x k, stride st, padding pad, x in layout tag: dw and db from
 * the kernel the table picks (ours where oneDNN has no depthwise kernel: k != 3, from AVX2
 * up, channels a multiple of the block; a 3x3 is given the ISA's own block, where oneDNN's
 * jit_dw runs) and from oneDNN's must match the sums in double. */
static void test_bwd_w_dw(int n, int c, int h, int w, int k, int st, int pad, dnnl_format_tag_t tag) {
    lp_conv2d_params p = {.n = n, .c = c, .h = h, .w = w, .k = c, .kh = k, .kw = k, .sh = st, .sw = st, .ph = pad, .pw = pad,
                          .groups = c, .relu = false, .bf16 = false, .winograd = false};
    const int oh = (h + 2 * pad - k) / st + 1, ow = (w + 2 * pad - k) / st + 1;
    const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * c * oh * ow, nw = (size_t)c * k * k;
    float *xp = lp_aligned_alloc(nx * 4), *yp = lp_aligned_alloc(ny * 4);
    for (size_t i = 0; i < nx; i++) xp[i] = 2.0f * lp_rng_uniform(11, 1, i) - 1.0f;
    for (size_t i = 0; i < ny; i++) yp[i] = 2.0f * lp_rng_uniform(11, 2, i) - 1.0f;
    double *ref = calloc(nw, sizeof(double)), *rb = calloc((size_t)c, sizeof(double));
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    const double g = yp[(((size_t)b * c + ch) * oh + oy) * ow + ox];
                    rb[ch] += g;
                    for (int t = 0; t < k * k; t++) {
                        const int iy = oy * st - pad + t / k, ix = ox * st - pad + t % k;
                        if (iy >= 0 && iy < h && ix >= 0 && ix < w) ref[(size_t)ch * k * k + t] += g * xp[(((size_t)b * c + ch) * h + iy) * w + ix];
                    }
                }
    const lp_isa isa = lp_cpu_isa();
    const int blk = isa >= LP_ISA_AVX512 ? 16 : 8;
    const bool expect_ours = LP_X86_KERNELS && isa >= LP_ISA_AVX2 && k != 3 && c % blk == 0;
    for (int own = 1; own >= 0; own--) {
        lp_conv_bwd_w_own_allowed = own;
        lp_conv2d cv;
        dnnl_dims_t sd = {n, c, h, w};
        lp_md src;
        dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_f32, tag);
        CHECK(lp_conv2d_init(&cv, &p, &src));
        CHECK(lp_conv2d_init_backward(&cv, false, true));
        lp_conv_bwd_w_own_allowed = true;
        const bool ours = !strncmp(cv.bwd_w.impl, "loupe:", 6);
        int64_t xd[4] = {n, c, h, w}, yd[4] = {n, c, oh, ow};
        lp_md xpl = lp_md_plain(4, xd), ypl = lp_md_plain(4, yd), wpl = lp_conv2d_weights_plain_md(&p, dnnl_f32);
        lp_reorder rx, ry, rw;
        CHECK(lp_reorder_init(&rx, &xpl, &cv.src_md, false));
        CHECK(lp_reorder_init(&ry, &ypl, &cv.dst_md, false));
        CHECK(lp_reorder_init(&rw, &cv.bw_dw_md, &wpl, false));
        void *x = lp_aligned_alloc(lp_md_size(&cv.src_md)), *dy = lp_aligned_alloc(lp_md_size(&cv.dst_md)),
             *dwb = lp_aligned_alloc(lp_md_size(&cv.bw_dw_md)), *scr = lp_aligned_alloc(lp_conv2d_scratch_size(&cv) + 4096);
        float *dw = lp_aligned_alloc(nw * 4), *db = lp_aligned_alloc((size_t)c * 4);
        CHECK(lp_reorder_exec(&rx, S, xp, x, scr));
        CHECK(lp_reorder_exec(&ry, S, yp, dy, scr));
        CHECK(lp_conv2d_backward_weights(&cv, S, x, dy, dwb, db, scr));
        CHECK(lp_reorder_exec(&rw, S, dwb, dw, scr));
        dnnl_stream_wait(S);
        double worst = 0, scale = 1e-3;
        for (size_t i = 0; i < nw; i++) scale = fmax(scale, fabs(ref[i]));
        for (size_t i = 0; i < nw; i++) worst = worse(worst, fabs(dw[i] - ref[i]) / scale);
        for (int o = 0; o < c; o++) worst = worse(worst, fabs(db[o] - rb[o]) / scale);
        const bool kernel_ok = own ? ours == expect_ours : !ours, ok = worst <= 1e-5 && kernel_ok;
        char l1[32];
        printf("bwd_w depthwise %dx%d stride %d pad %d (%d,%d,%d,%d) x %s: %-22s (want %s) worst rel err %.2e %s\n", k, k, st, pad,
               n, c, h, w, lp_md_layout(&cv.src_md, l1, 32), cv.bwd_w.impl, own && expect_ours ? "ours" : "oneDNN's", worst,
               ok ? "ok" : "FAIL");
        if (!ok) failures++;
        lp_reorder_free(&rx), lp_reorder_free(&ry), lp_reorder_free(&rw);
        lp_conv2d_free(&cv);
        free(x), free(dy), free(dwb), free(scr), free(dw), free(db);
    }
    free(xp), free(yp), free(ref), free(rb);
}

/* ---- squeeze-and-excitation's channel scale (channel_scale.c) in each layout ------------
 * y = x * gate and dx = dy * gate are one rounded product each: bit-equal to the product
 * taken on the plain arrays. dgate = sum over h, w of dy * x: within (h w + 1) u sum |dy x|
 * of the double sum (u = 2^-24). */
/* ---- bf16 element-wise (bf16_ops.c) ---------------------------------------------
 * Against the scalar definition: fp32 arithmetic on the bf16 values, rounded to nearest
 * even by lp_f32_to_bf16 (core, checked against known patterns in test_core); lengths with
 * tails of 1 and 15 values and over several parallel chunks; values spread over 2^-20 to
 * 2^20 of both signs, so that sums cancel and round both ways. */
static uint16_t random_bf16(uint64_t stream, uint64_t i) {
    const float mag = ldexpf(1.0f + lp_rng_uniform(51, stream, i), (int)(lp_rng_u64(52, stream, i) % 41) - 20);
    return lp_f32_to_bf16(lp_rng_uniform(53, stream, i) < 0.5f ? -mag : mag);
}
static void test_bf16_elementwise(void) {
    static const size_t lens[] = {1, 15, 16, 17, 16384 * 5 + 7};
    for (size_t t = 0; t < sizeof lens / sizeof lens[0]; t++) {
        const size_t n = lens[t];
        uint16_t *g = malloc(n * 2), *d = malloc(n * 2), *y = malloc(n * 2), *want = malloc(n * 2);
        if (!g || !d || !y || !want) exit(1);
        for (size_t i = 0; i < n; i++) g[i] = random_bf16(1, i), d[i] = random_bf16(2, i);
        /* a sum with itself negated is 0; equal magnitudes double: both exact cases included */
        if (n > 2) d[1] = g[1] ^ 0x8000, d[2] = g[2];
        for (size_t i = 0; i < n; i++) want[i] = lp_f32_to_bf16(lp_bf16_to_f32(g[i]) + lp_bf16_to_f32(d[i]));
        lp_bf16_add(g, d, n);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += g[i] != want[i];
        const float s = 1.0f / (1.0f - 0.0125f); /* a stochastic-depth factor */
        for (size_t i = 0; i < n; i++) want[i] = lp_f32_to_bf16(lp_bf16_to_f32(d[i]) * s);
        lp_bf16_scale(d, s, y, n);
        for (size_t i = 0; i < n; i++) bad += y[i] != want[i];
        lp_bf16_scale(d, s, d, n); /* in place */
        for (size_t i = 0; i < n; i++) bad += d[i] != want[i];
        printf("%-44s %zu values, %zu differ %s\n", "bf16 add and scale", n, bad, bad ? "FAIL" : "ok");
        if (bad) failures++;
        free(g), free(d), free(y), free(want);
    }
}

static void test_channel_scale(int n, int c, int h, int w, dnnl_format_tag_t tag) {
    const size_t nx = (size_t)n * c * h * w, ng = (size_t)n * c;
    float *xp = malloc(nx * 4), *dyp = malloc(nx * 4), *gate = malloc(ng * 4), *dg = malloc(ng * 4), *y = malloc(nx * 4),
          *dx = malloc(nx * 4);
    for (size_t i = 0; i < nx; i++) xp[i] = 2.0f * lp_rng_uniform(13, 1, i) - 1.0f, dyp[i] = 2.0f * lp_rng_uniform(13, 2, i) - 1.0f;
    for (size_t i = 0; i < ng; i++) gate[i] = lp_rng_uniform(13, 3, i);
    int64_t d[4] = {n, c, h, w};
    const lp_md plain = lp_md_plain(4, d);
    lp_md md;
    dnnl_dims_t dd = {n, c, h, w};
    dnnl_memory_desc_init_by_tag(&md, 4, dd, dnnl_f32, tag);
    lp_channel_scale cs;
    CHECK(lp_channel_scale_init(&cs, &md, false));
    lp_reorder to, back;
    CHECK(lp_reorder_init(&to, &plain, &md, false));
    CHECK(lp_reorder_init(&back, &md, &plain, false));
    void *xb = lp_aligned_alloc(lp_md_size(&md)), *yb = lp_aligned_alloc(lp_md_size(&md)), *db = lp_aligned_alloc(lp_md_size(&md));
    void *scr = lp_aligned_alloc(to.prim.scratch_size + back.prim.scratch_size + 64);
    CHECK(lp_reorder_exec(&to, S, xp, xb, scr));
    CHECK(lp_reorder_exec(&to, S, dyp, db, scr));
    dnnl_stream_wait(S);
    lp_channel_scale_forward(&cs, xb, gate, yb);
    lp_channel_scale_backward(&cs, xb, gate, db, dg);
    CHECK(lp_reorder_exec(&back, S, yb, y, scr));
    CHECK(lp_reorder_exec(&back, S, db, dx, scr));
    dnnl_stream_wait(S);
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < nx; i++) {
        const size_t g = i / ((size_t)h * w);
        bad += y[i] != xp[i] * gate[g] || dx[i] != dyp[i] * gate[g];
    }
    for (size_t g = 0; g < ng; g++) {
        double ref = 0, mag = 0;
        for (int k = 0; k < h * w; k++) ref += (double)dyp[g * h * w + k] * xp[g * h * w + k], mag += fabs((double)dyp[g * h * w + k] * xp[g * h * w + k]);
        const double e = fabs(dg[g] - ref) / ((h * w + 1) * 0x1p-24 * mag + 1e-30);
        worst = worse(worst, e);
    }
    char l[32];
    const bool ok = !bad && worst <= 1.0;
    printf("channel scale (%d,%d,%d,%d) %s: y and dx %s, dgate within %.2f of its bound %s\n", n, c, h, w, lp_md_layout(&md, l, 32),
           bad ? "DIFFER" : "exact", worst, ok ? "ok" : "FAIL");
    if (!ok) failures++;
    lp_reorder_free(&to), lp_reorder_free(&back);
    free(xp), free(dyp), free(gate), free(dg), free(y), free(dx), free(xb), free(yb), free(db), free(scr);
}

/* ---- the AMX backward weights: the same bits whatever the thread count ----------------
 * (conv_bwd_w_amx.c: each weight's sum has one order). 2 threads, then 1. */
static void test_bwd_w_amx_threads(int n, int c, int k, int h, int w) {
#if !LP_X86_KERNELS
    printf("bwd_w AMX threads: skipped (no x86-64 kernels in this build)\n");
#else
    lp_conv2d_params p = {.n = n, .c = c, .h = h, .w = w, .k = k, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .relu = true, .bf16 = true, .winograd = false};
    if (!lp_conv_bwd_w_amx_ready()) { /* (the shapes below are the kernel's: 32k channels) */
        printf("bwd_w AMX threads: skipped (no AMX here)\n");
        return;
    }
    const size_t nx = (size_t)n * h * w * c, ny = (size_t)n * h * w * k, nw = (size_t)9 * c * k;
    uint16_t *x = lp_aligned_alloc(nx * 2), *dy = lp_aligned_alloc(ny * 2);
    for (size_t i = 0; i < nx; i++) x[i] = bf16_of(2.0f * lp_rng_uniform(9, 1, i) - 1.0f);
    for (size_t i = 0; i < ny; i++) dy[i] = bf16_of(2.0f * lp_rng_uniform(9, 2, i) - 1.0f);
    void *scr = lp_aligned_alloc(lp_conv_bwd_w_amx_scratch(&p));
    float *dw[2], *db[2];
    const int before = lp_get_threads();
    for (int r = 0; r < 2; r++) {
        lp_set_threads(r ? 1 : 2);
        dw[r] = lp_aligned_alloc(nw * 4), db[r] = lp_aligned_alloc((size_t)k * 4);
        lp_conv_bwd_w_amx(&p, x, dy, dw[r], db[r], scr);
    }
    lp_set_threads(before);
    const bool ok = !memcmp(dw[0], dw[1], nw * 4) && !memcmp(db[0], db[1], (size_t)k * 4);
    printf("bwd_w AMX (%d,%d,%d,%d)->%d: 2 threads vs 1 %s\n", n, c, h, w, k, ok ? "bit-identical ok" : "differ FAIL");
    if (!ok) failures++;
    free(x), free(dy), free(scr), free(dw[0]), free(dw[1]), free(db[0]), free(db[1]);
#endif
}

/* Backward data of p (input in layout tag), loupe's kernel allowed or not (own), from plain
 * dy and weights (yp, wp) to plain dx (dxp). Scratch and dx start as NaN, so that a kernel
 * that reads scratch it did not write, or leaves part of dx unwritten, shows. *cv: the op,
 * for the caller to look at and free. same_1t (or NULL), where loupe's kernel ran: whether
 * a run on 1 thread gives the same bits (its sums have one order; oneDNN's need not). */
static void bwd_data_plain(const lp_conv2d_params *p, dnnl_format_tag_t tag, bool own, const float *yp, const float *wp,
                           float *dxp, lp_conv2d *cv, bool *same_1t) {
    lp_conv_bwd_d_own_allowed = own;
    dnnl_dims_t sd = {p->n, p->c, p->h, p->w};
    lp_md src;
    dnnl_memory_desc_init_by_tag(&src, 4, sd, p->bf16 ? dnnl_bf16 : dnnl_f32, tag);
    CHECK(lp_conv2d_init(cv, p, &src));
    CHECK(lp_conv2d_init_backward(cv, true, false));
    lp_conv_bwd_d_own_allowed = true;
    int64_t xd[4] = {p->n, p->c, p->h, p->w}, yd[4] = {p->n, p->k, p->h, p->w}, wd[4] = {p->k, p->c, 3, 3};
    lp_md xpl = lp_md_plain(4, xd), ypl = lp_md_plain(4, yd), wpl = lp_md_plain(4, wd);
    lp_reorder rdx, ry, rw;
    CHECK(lp_reorder_init(&rdx, &cv->src_md, &xpl, false));
    CHECK(lp_reorder_init(&ry, &ypl, &cv->dst_md, false));
    CHECK(lp_reorder_init(&rw, &wpl, &cv->bd_w_md, false));
    const size_t xsize = lp_md_size(&cv->src_md), ssize = lp_conv2d_scratch_size(cv) + 4096;
    void *dy = lp_aligned_alloc(lp_md_size(&cv->dst_md)), *wb = lp_aligned_alloc(lp_md_size(&cv->bd_w_md)),
         *dx = lp_aligned_alloc(xsize), *dx1 = lp_aligned_alloc(xsize), *scr = lp_aligned_alloc(ssize);
    memset(scr, 0xff, ssize);
    memset(dx, 0xff, xsize);
    CHECK(lp_reorder_exec(&ry, S, yp, dy, scr));
    CHECK(lp_reorder_exec(&rw, S, wp, wb, scr));
    CHECK(lp_conv2d_backward_data(cv, S, dy, wb, dx, scr));
    dnnl_stream_wait(S);
    if (same_1t && !strncmp(cv->bwd_data.impl, "loupe:", 6)) {
        const int before = lp_get_threads();
        lp_set_threads(1);
        CHECK(lp_conv2d_backward_data(cv, S, dy, wb, dx1, scr));
        lp_set_threads(before);
        *same_1t = !memcmp(dx, dx1, xsize);
    }
    CHECK(lp_reorder_exec(&rdx, S, dx, dxp, scr));
    dnnl_stream_wait(S);
    lp_reorder_free(&rdx), lp_reorder_free(&ry), lp_reorder_free(&rw);
    free(dy), free(wb), free(dx), free(dx1), free(scr);
}

/* ---- backward data on small maps, bf16 (conv_bwd_d_small.c) vs a double reference ---
 * dy and w hold bf16 values; dx from our kernel and from oneDNN's must both be the sum
 * in double rounded to bf16 (within two bf16 ulps of it: fp32 sums in other orders). */
static void test_bwd_d_small(int n, int c, int k, int h, int w, dnnl_format_tag_t tag) {
    if (!lp_bf16_native()) {
        printf("bwd_data small: skipped (no native bf16 here)\n");
        return;
    }
    lp_conv2d_params p = {.n = n, .c = c, .h = h, .w = w, .k = k, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .relu = true, .bf16 = true, .winograd = false};
    const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * k * h * w, nw = (size_t)k * c * 9;
    float *yp = lp_aligned_alloc(ny * 4), *wp = lp_aligned_alloc(nw * 4), *dxp = lp_aligned_alloc(nx * 4);
    for (size_t i = 0; i < ny; i++) yp[i] = bf16_round(2.0f * lp_rng_uniform(6, 1, i) - 1.0f);
    for (size_t i = 0; i < nw; i++) wp[i] = bf16_round(2.0f * lp_rng_uniform(6, 2, i) - 1.0f);
    double *ref = calloc(nx, sizeof(double));
    conv3x3_ref(n, c, k, h, w, NULL, wp, NULL, yp, NULL, ref, NULL, NULL);
    for (int own = 1; own >= 0; own--) {
        lp_conv2d cv;
        bwd_data_plain(&p, tag, own, yp, wp, dxp, &cv, NULL);
        /* ours where AMX is (its layouts are the ones oneDNN picks for AMX); on AVX512-BF16
         * alone, where oneDNN's weights layout happens to be the kernel's */
        const bool ours = strncmp(cv.bwd_data.impl, "loupe:", 6) == 0;
        if (ours != (own == 1) && !(own && !lp_amx_available())) {
            printf("bwd_data small: kernel %s, expected %s FAIL\n", cv.bwd_data.impl, own ? "ours" : "oneDNN's");
            failures++;
        }
        double worst = 0; /* in bf16 ulps of the reference */
        for (size_t i = 0; i < nx; i++) {
            const double r = ref[i], ulp = fmax(fabs(r), 1e-30) / 128.0;
            worst = worse(worst, fabs(dxp[i] - r) / ulp);
        }
        char l1[32], l2[32];
        printf("bwd_data small (%d,%d,%d,%d)->%d bf16 dx %s dy %s %-28s worst err %.2f bf16 ulp %s\n", n, c, h, w, k,
               lp_md_layout(&cv.src_md, l1, 32), lp_md_layout(&cv.dst_md, l2, 32), cv.bwd_data.impl, worst,
               worst <= 2.0 ? "ok" : "FAIL");
        if (!(worst <= 2.0)) failures++;
        lp_conv2d_free(&cv);
    }
    free(yp), free(wp), free(dxp), free(ref);
}

/* ---- backward data on small maps, fp32 (conv_bwd_w_small.c's pieces, AVX-512) vs a
 * double reference: within (9k + 2) fp32 roundings of the sum of |products| (a sum of 9k
 * terms in any order), which also bounds oneDNN's. Ours where the small-map backward
 * weights runs with 16-blocks (fp32, AVX-512, c and k multiples of 16) and the forward's
 * weights are OIhw16i16o, oneDNN's elsewhere; ours gives the same bits on 1 thread as on
 * 2 (one order of sums). */
static void test_bwd_d_small_fp32(int n, int c, int k, int h, int w, dnnl_format_tag_t tag) {
    lp_conv2d_params p = {.n = n, .c = c, .h = h, .w = w, .k = k, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .relu = true};
    const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * k * h * w, nw = (size_t)k * c * 9;
    float *yp = lp_aligned_alloc(ny * 4), *wp = lp_aligned_alloc(nw * 4), *dxp = lp_aligned_alloc(nx * 4);
    float *ya = lp_aligned_alloc(ny * 4), *wa = lp_aligned_alloc(nw * 4);
    for (size_t i = 0; i < ny; i++) yp[i] = 2.0f * lp_rng_uniform(12, 1, i) - 1.0f, ya[i] = fabsf(yp[i]);
    for (size_t i = 0; i < nw; i++) wp[i] = 2.0f * lp_rng_uniform(12, 2, i) - 1.0f, wa[i] = fabsf(wp[i]);
    double *ref = calloc(nx, sizeof(double)), *mag = calloc(nx, sizeof(double));
    conv3x3_ref(n, c, k, h, w, NULL, wp, NULL, yp, NULL, ref, NULL, NULL);
    conv3x3_ref(n, c, k, h, w, NULL, wa, NULL, ya, NULL, mag, NULL, NULL);
    const bool expected = lp_cpu_isa() >= LP_ISA_AVX512 && c % 16 == 0 && k % 16 == 0 && h * w <= 16 &&
                          (long long)n * (3 * h - 2) * (3 * w - 2) <= 256;
    const double unit = ldexp(9.0 * k + 2.0, -24);
    for (int own = 1; own >= 0; own--) {
        lp_conv2d cv;
        bool same_1t = true;
        bwd_data_plain(&p, tag, own, yp, wp, dxp, &cv, &same_1t);
        /* ... and where oneDNN's forward keeps the weights OIhw16i16o (the kernel reads that
         * layout; oneDNN picks others for nhwc, CPU-dependent) */
        lp_md blocked;
        dnnl_dims_t bdims = {k, c, 3, 3};
        dnnl_memory_desc_init_by_tag(&blocked, 4, bdims, dnnl_f32, dnnl_ABcd16b16a);
        const bool ours = strncmp(cv.bwd_data.impl, "loupe:", 6) == 0, fits = expected && lp_md_equal(&blocked, &cv.w_md);
        if (ours != (own && fits)) {
            printf("bwd_data fp32 small at %s: kernel %s, expected %s FAIL\n", lp_isa_name(lp_cpu_isa()), cv.bwd_data.impl,
                   own && fits ? "ours" : "oneDNN's");
            failures++;
        }
        if (ours != lp_conv2d_bwd_d_in_pieces(&cv)) {
            printf("bwd_data fp32 small: kernel %s, in pieces %d FAIL\n", cv.bwd_data.impl, lp_conv2d_bwd_d_in_pieces(&cv));
            failures++;
        }
        double worst = 0; /* in units of the bound */
        for (size_t i = 0; i < nx; i++) worst = worse(worst, fabs(dxp[i] - ref[i]) / (unit * fmax(mag[i], 1e-30)));
        char l1[32], l2[32];
        printf("bwd_data small (%d,%d,%d,%d)->%d fp32 dx %s dy %s %-24s worst err %.3f of bound%s %s\n", n, c, h, w, k,
               lp_md_layout(&cv.src_md, l1, 32), lp_md_layout(&cv.dst_md, l2, 32), cv.bwd_data.impl, worst,
               ours ? same_1t ? ", 1 thread = 2 threads" : ", 1 thread differs" : "", worst <= 1.0 && same_1t ? "ok" : "FAIL");
        if (!(worst <= 1.0) || !same_1t) failures++;
        lp_conv2d_free(&cv);
    }
    free(yp), free(wp), free(dxp), free(ya), free(wa), free(ref), free(mag);
}

/* ---- max pool 2x2 in bf16 nhwc on a map over 8 MB (maxpool2x2.c streams y, idx
 * and dx around the caches there) vs a scalar reference: y, and dx with the ReLU
 * folded in, exact. Values from 64 levels, so windows hold ties and zeros. */
static void test_maxpool_bf16_large(int n, int c, int h, int w) {
#if !LP_X86_KERNELS
    printf("maxpool bf16 large: skipped (no x86-64 kernels in this build)\n");
#else
    if (lp_cpu_isa() < LP_ISA_AVX512) { /* the kernel itself, AVX-512 code */
        printf("maxpool bf16 large: skipped (our 2x2 pooling kernel is AVX-512; oneDNN's runs at %s)\n",
               lp_isa_name(lp_cpu_isa()));
        return;
    }
    const int oh = h / 2, ow = w / 2;
    const size_t nx = (size_t)n * h * w * c, ny = (size_t)n * oh * ow * c;
    uint16_t *x = lp_aligned_alloc(nx * 2), *y = lp_aligned_alloc(ny * 2), *dy = lp_aligned_alloc(ny * 2),
             *dx = lp_aligned_alloc(nx * 2);
    uint8_t *idx = lp_aligned_alloc(ny);
    for (size_t i = 0; i < nx; i++) x[i] = bf16_of((float)((int)(lp_rng_uniform(11, 1, i) * 64) - 16) / 8.0f);
    for (size_t i = 0; i < ny; i++) dy[i] = bf16_of((float)((int)(lp_rng_uniform(11, 2, i) * 64) + 1) / 16.0f);
    memset(dx, 0xff, nx * 2); /* NaN: every value must be written */
    lp_maxpool2x2_forward(x, y, idx, n, h, w, c, true);
    lp_maxpool2x2_backward(dy, idx, dx, n, h, w, c, true, true);
    size_t bad_y = 0, bad_dx = 0;
    for (int im = 0; im < n; im++)
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++)
                for (int ch = 0; ch < c; ch++) {
                    size_t at[4];
                    int best = 0;
                    for (int q = 0; q < 4; q++) {
                        at[q] = (((size_t)im * h + 2 * i + q / 2) * w + 2 * j + q % 2) * c + ch;
                        if (f32_of(x[at[q]]) > f32_of(x[at[best]])) best = q; /* first maximum wins */
                    }
                    const size_t o = (((size_t)im * oh + i) * ow + j) * c + ch;
                    if (y[o] != x[at[best]]) bad_y++;
                    for (int q = 0; q < 4; q++) {
                        const float want = q == best && f32_of(x[at[best]]) > 0 ? f32_of(dy[o]) : 0.0f;
                        if (f32_of(dx[at[q]]) != want) bad_dx++;
                    }
                }
    /* an odd last row or column: dropped, zero gradient */
    for (int im = 0; im < n; im++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++)
                if (i >= 2 * oh || j >= 2 * ow)
                    for (int ch = 0; ch < c; ch++)
                        if (dx[(((size_t)im * h + i) * w + j) * c + ch] != 0) bad_dx++;
    printf("maxpool 2x2 bf16 nhwc %dx%dx%dx%d (streamed): %zu wrong y, %zu wrong dx %s\n", n, c, h, w, bad_y, bad_dx,
           bad_y || bad_dx ? "FAIL" : "ok");
    if (bad_y || bad_dx) failures++;
    free(x), free(y), free(dy), free(dx), free(idx);
#endif
}

/* ---- forward on small maps, bf16 (conv_fwd_small.c) vs a double reference -------
 * x, w bf16 values, bias fp32, ReLU: y from our kernel and from oneDNN's must both be
 * the double result rounded to bf16, within two bf16 ulps (of the larger of |y| and a
 * hundredth of the largest |y|: near zero, fp32 sums in other orders differ more). */
static void test_fwd_small(int n, int c, int k, int h, int w, bool relu) {
    if (!lp_bf16_native()) {
        printf("forward small: skipped (no native bf16 here)\n");
        return;
    }
    lp_conv2d_params p = {.n = n, .c = c, .h = h, .w = w, .k = k, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .relu = relu, .bf16 = true, .winograd = false};
    const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * k * h * w, nw = (size_t)k * c * 9;
    float *xp = lp_aligned_alloc(nx * 4), *wp = lp_aligned_alloc(nw * 4), *bp = lp_aligned_alloc((size_t)k * 4),
          *yp = lp_aligned_alloc(ny * 4);
    for (size_t i = 0; i < nx; i++) xp[i] = bf16_round(2.0f * lp_rng_uniform(7, 1, i) - 1.0f);
    for (size_t i = 0; i < nw; i++) wp[i] = bf16_round(2.0f * lp_rng_uniform(7, 2, i) - 1.0f);
    for (int i = 0; i < k; i++) bp[i] = 2.0f * lp_rng_uniform(7, 3, (uint64_t)i) - 1.0f;
    double *ref = calloc(ny, sizeof(double)), big = 0;
    conv3x3_ref(n, c, k, h, w, xp, wp, bp, NULL, ref, NULL, NULL, NULL);
    for (size_t i = 0; i < ny; i++) {
        if (relu && ref[i] < 0) ref[i] = 0;
        big = fmax(big, fabs(ref[i]));
    }
    for (int own = 1; own >= 0; own--) {
        lp_conv_fwd_own_allowed = own;
        lp_conv2d cv;
        dnnl_dims_t sd = {n, c, h, w};
        lp_md src;
        dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_bf16, dnnl_acdb);
        CHECK(lp_conv2d_init(&cv, &p, &src));
        lp_conv_fwd_own_allowed = true;
        const bool ours = strncmp(cv.fwd.impl, "loupe:", 6) == 0;
        /* 3 input channels: ours on AMX only; the others ours on AMX and, on AVX512-BF16
         * alone, where oneDNN's weights layout happens to be the kernel's */
        if (ours != (own == 1 && (c != 3 || lp_conv_bwd_w_amx_ready())) && !(own && c != 3 && !lp_amx_available())) {
            printf("forward small: kernel %s, expected %s FAIL\n", cv.fwd.impl, own ? "ours" : "oneDNN's");
            failures++;
        }
        int64_t xd[4] = {n, c, h, w}, yd[4] = {n, k, h, w}, wd[4] = {k, c, 3, 3};
        lp_md xpl = lp_md_plain(4, xd), ypl = lp_md_plain(4, yd), wpl = lp_md_plain(4, wd);
        lp_reorder rx, ry, rw;
        CHECK(lp_reorder_init(&rx, &xpl, &cv.src_md, false));
        CHECK(lp_reorder_init(&ry, &cv.dst_md, &ypl, false));
        CHECK(lp_reorder_init(&rw, &wpl, &cv.w_md, false));
        void *x = lp_aligned_alloc(lp_md_size(&cv.src_md)), *wb = lp_aligned_alloc(lp_md_size(&cv.w_md)),
             *y = lp_aligned_alloc(lp_md_size(&cv.dst_md)), *scr = lp_aligned_alloc(lp_conv2d_scratch_size(&cv) + 4096);
        CHECK(lp_reorder_exec(&rx, S, xp, x, scr));
        CHECK(lp_reorder_exec(&rw, S, wp, wb, scr));
        CHECK(lp_conv2d_forward(&cv, S, x, wb, bp, y, scr));
        const size_t nbits = lp_conv2d_relu_bits_size(&cv);
        if (nbits) {
            /* the forward that also writes the ReLU mask as bits: the same y, and bit i of
             * word j set exactly where value 16 j + i of y (nhwc) is > 0 */
            const size_t ybytes = lp_md_size(&cv.dst_md);
            uint16_t *bits = lp_aligned_alloc(nbits), *y2 = lp_aligned_alloc(ybytes);
            memset(bits, 0xa5, nbits);
            CHECK(lp_conv2d_forward_relu_bits(&cv, S, x, wb, bp, y2, bits, scr));
            size_t wrong = memcmp(y, y2, ybytes) != 0;
            for (size_t i = 0; i < ybytes / 2; i++) {
                const float v = f32_of(((const uint16_t *)y2)[i]);
                if (((bits[i / 16] >> (i % 16)) & 1) != (v > 0)) wrong++;
            }
            printf("forward (%d,%d,%d,%d)->%d ReLU bits: %zu wrong %s\n", n, c, h, w, k, wrong, wrong ? "FAIL" : "ok");
            if (wrong) failures++;
            free(bits), free(y2);
        }
        CHECK(lp_reorder_exec(&ry, S, y, yp, scr));
        dnnl_stream_wait(S);
        double worst = 0; /* in bf16 ulps */
        for (size_t i = 0; i < ny; i++) worst = worse(worst, fabs(yp[i] - ref[i]) / (fmax(fabs(ref[i]), 1e-2 * big) / 128.0));
        printf("forward small (%d,%d,%d,%d)->%d bf16%s %-28s worst err %.2f bf16 ulp %s\n", n, c, h, w, k, relu ? " relu" : "",
               cv.fwd.impl, worst, worst <= 2.0 ? "ok" : "FAIL");
        if (!(worst <= 2.0)) failures++;
        lp_reorder_free(&rx), lp_reorder_free(&ry), lp_reorder_free(&rw);
        lp_conv2d_free(&cv);
        free(x), free(wb), free(y), free(scr);
    }
    free(xp), free(wp), free(bp), free(yp), free(ref);
}

/* ---- the CPU level: generic where our x86-64 code is not built (backend.h), whatever
 * oneDNN runs at; and then no kernel of ours in the conv table for any layer below
 * (each test names the kernel that ran, and expects oneDNN's at the generic level). */
static void test_cpu_level(void) {
    const lp_isa isa = lp_cpu_isa();
    const bool ok = LP_X86_KERNELS || isa == LP_ISA_GENERIC;
    printf("CPU level %s, %s: %s\n", lp_isa_name(isa), LP_X86_KERNELS ? "x86-64 kernels built" : "portable build",
           ok ? "ok" : "FAIL (want generic)");
    if (!ok) failures++;
}

int main(void) {
    CHECK(lp_dnnl_stream_create(&S));
    test_cpu_level();
    test_conv("conv 3x3 pad1 (2,3,6,6)->16", (lp_conv2d_params){.n = 2, .c = 3, .h = 6, .w = 6, .k = 16, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .relu = false, .bf16 = false, .winograd = false}, false);
    test_conv("conv 3x3 pad1 blocked (2,16,5,7)->32", (lp_conv2d_params){.n = 2, .c = 16, .h = 5, .w = 7, .k = 32, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .relu = false, .bf16 = false, .winograd = false}, true);
    test_conv("conv 3x3 stride2 pad0 (1,4,7,7)->8", (lp_conv2d_params){.n = 1, .c = 4, .h = 7, .w = 7, .k = 8, .kh = 3, .kw = 3, .sh = 2, .sw = 2, .ph = 0, .pw = 0, .relu = false, .bf16 = false, .winograd = false}, false);
    /* Winograd F(4x4,3x3): a 12x10 output is 3x3 tiles of 4x4, the last column partial */
    test_conv("conv 3x3 pad1 winograd (2,16,12,10)->32",
              (lp_conv2d_params){.n = 2, .c = 16, .h = 12, .w = 10, .k = 32, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .relu = false, .bf16 = false, .winograd = true}, true);
    test_bf16_elementwise();
    test_channel_scale(2, 32, 7, 5, dnnl_nchw);
    test_channel_scale(2, 48, 6, 6, dnnl_nhwc);
    test_channel_scale(3, 32, 14, 14, dnnl_aBcd16b);
    test_channel_scale(2, 24, 3, 9, dnnl_aBcd8b);
    /* depthwise backward weights: EfficientNet's 5x5 at strides 1 and 2, 7x7 with odd maps,
     * nhwc, and 3x3 (oneDNN's jit_dw) */
    test_bwd_w_dw(2, 32, 14, 14, 5, 1, 2, dnnl_aBcd16b);
    test_bwd_w_dw(3, 48, 15, 13, 5, 2, 2, dnnl_aBcd8b);
    test_bwd_w_dw(1, 16, 9, 11, 7, 1, 3, dnnl_acdb);
    test_bwd_w_dw(2, 32, 8, 8, 3, 1, 1, lp_cpu_isa() >= LP_ISA_AVX512 ? dnnl_aBcd16b : dnnl_aBcd8b);
    /* backward weights on maps of <= 16 pixels: ours (AVX-512) and oneDNN's */
    test_bwd_w_small(2, 32, 48, 2, 2, true, dnnl_acdb, false);
    test_bwd_w_small(2, 64, 32, 4, 4, true, dnnl_acdb, false);
    test_bwd_w_small(1, 32, 16, 3, 5, true, dnnl_aBcd16b, false);
    test_bwd_w_small(2, 32, 48, 1, 1, false, dnnl_aBcd16b, false);
    test_bwd_w_small(2, 48, 32, 2, 3, false, dnnl_acdb, false);
    test_bwd_w_small(1, 16, 32, 4, 4, false, dnnl_aBcd16b, false);
    /* 3 input channels on larger maps: conv_bwd_w_rgb_amx.c where AMX is (borders, odd
     * sizes, 2 and 4 output blocks, images in halves, bands of rows), and
     * conv_bwd_w_rgb.c (AVX512-BF16) */
    for (int amx = 1; amx >= 0; amx--) {
        lp_conv_bwd_w_rgb_amx_allowed = amx;
        test_bwd_w_small(2, 3, 64, 9, 7, true, dnnl_acdb, false);
        test_bwd_w_small(3, 3, 32, 20, 17, true, dnnl_acdb, false);
        test_bwd_w_small(2, 3, 64, 11, 9, true, dnnl_acdb, true); /* and its ReLU mask */
        test_bwd_w_small(4, 3, 32, 6, 50, true, dnnl_acdb, false);
        test_bwd_w_small(1, 3, 64, 60, 224, true, dnnl_acdb, true);
        test_bwd_w_small(1, 3, 32, 1, 17, true, dnnl_acdb, false); /* one row: not split in halves */
    }
    lp_conv_bwd_w_rgb_amx_allowed = true;
    /* 32k channels on larger maps: conv_bwd_w_amx.c, where AMX is. The whole batch at once
     * (odd sizes, 1 to 3 images, and over 512 output channels: their dy in two calls),
     * then in bands: one band an image with the images in two parts, several bands of 5
     * rows, two groups of output blocks, and wide rows. */
    test_bwd_w_small(2, 32, 64, 5, 7, true, dnnl_acdb, false);
    test_bwd_w_small(3, 64, 32, 9, 11, true, dnnl_acdb, false);
    test_bwd_w_small(1, 32, 544, 5, 7, true, dnnl_acdb, false);
    test_bwd_w_small(7, 32, 32, 5, 5, true, dnnl_acdb, false); /* 7 images in one grid */
    test_bwd_w_small(1, 96, 64, 20, 33, true, dnnl_acdb, false);
    test_bwd_w_small(3, 64, 64, 36, 30, true, dnnl_acdb, false);
    test_bwd_w_small(1, 256, 32, 33, 35, true, dnnl_acdb, false);
    test_bwd_w_small(1, 256, 192, 32, 33, true, dnnl_acdb, false);
    test_bwd_w_small(1, 32, 32, 5, 224, true, dnnl_acdb, false); /* wide rows */
    test_bwd_w_amx_threads(3, 64, 64, 36, 30);
    test_bwd_w_amx_threads(2, 64, 96, 12, 9);
    /* fp32: VGG's 4x4 and 2x2 maps, c != k, odd sizes, 1x1, nhwc and nChw16c, the most
     * positions the kernel takes (2x2 batch 16, 1x1 batch 256) */
    test_bwd_d_small_fp32(2, 64, 32, 4, 4, dnnl_aBcd16b);
    test_bwd_d_small_fp32(2, 32, 48, 2, 2, dnnl_acdb);
    test_bwd_d_small_fp32(1, 16, 32, 3, 5, dnnl_aBcd16b);
    test_bwd_d_small_fp32(3, 48, 16, 1, 3, dnnl_acdb);
    test_bwd_d_small_fp32(16, 32, 32, 2, 2, dnnl_aBcd16b);
    test_bwd_d_small_fp32(256, 16, 16, 1, 1, dnnl_aBcd16b);
    test_bwd_d_small_fp32(2, 24, 32, 2, 2, dnnl_acdb); /* 24 channels: oneDNN's */
    test_bwd_d_small(2, 48, 64, 2, 2, dnnl_acdb);
    test_bwd_d_small(2, 16, 32, 1, 3, dnnl_acdb);
    test_bwd_d_small(1, 64, 32, 2, 1, dnnl_acdb);
    test_bwd_d_small(2, 32, 32, 1, 1, dnnl_acdb);
    /* larger maps, 32k channels: the forward convolution with flipped weights (conv2d.c) */
    test_bwd_d_small(2, 32, 64, 9, 11, dnnl_acdb);
    test_bwd_d_small(1, 96, 64, 14, 14, dnnl_acdb);
    test_bwd_d_small(2, 64, 64, 20, 17, dnnl_acdb);
    test_fwd_small(2, 64, 64, 2, 2, true);
    test_fwd_small(3, 64, 64, 1, 2, false);
    test_fwd_small(2, 64, 32, 2, 1, true);
    test_fwd_small(2, 128, 32, 2, 2, false);
    /* 3 input channels (conv_fwd_rgb_amx.c where AMX is): borders, rows of under 32,
     * 32 and over 32 pixels, one row, 1 to 3 blocks of 32 output channels */
    test_fwd_small(2, 3, 64, 9, 7, true);
    test_fwd_small(1, 3, 32, 5, 70, false);
    test_fwd_small(3, 3, 96, 4, 32, true);
    test_fwd_small(2, 3, 64, 1, 33, true);
    test_fwd_small(1, 3, 64, 40, 224, false);
    test_fwd_small(1, 3, 64, 300, 224, true); /* over 8 MB of y: streamed stores */
    test_pool(2, 3, 6, 6, dnnl_abcd, true);
    test_pool(1, 2, 7, 5, dnnl_abcd, true);
    test_pool(2, 32, 7, 9, dnnl_acdb, true);    /* nhwc, odd sizes: ours */
    test_pool(2, 32, 6, 5, dnnl_aBcd16b, true); /* nChw16c: ours */
    test_pool(2, 32, 7, 9, dnnl_acdb, false);   /* the same through oneDNN */
    test_pool(1, 24, 4, 4, dnnl_acdb, true);    /* 24 channels: oneDNN's */
    test_maxpool_bf16_large(2, 64, 182, 184);
    test_maxpool_bf16_large(2, 96, 151, 149); /* odd last row and column */
    test_pool_ties_bf16(true, false);
    test_pool_ties_bf16(true, true);
    test_pool_ties_bf16(false, false);
    test_dense(3, 17, 5); /* small-batch outer-product path */
    test_dense(7, 19, 6); /* matmul path */
    test_dense_dx_small(2, 300, 300);   /* one chunk of rows */
    test_dense_dx_small(2, 1000, 1300); /* five chunks, uneven */
    test_dense_dx_small(4, 77, 4100);   /* sixteen chunks */
    test_dense_bf16(2, 300, 70, false);
    test_dense_bf16(3, 100, 600, true);
    test_dense_bf16(8, 256, 96, true);
    test_dense_bf16(16, 1000, 40, false);
    test_xent();
    test_apool(5, 5, 3, 3);
    test_apool(1, 1, 7, 7);
    test_apool(2, 3, 7, 7);
    test_apool(11, 9, 7, 7);
    test_dropout();
    dnnl_stream_destroy(S);
    if (failures) printf("%d check(s) FAILED\n", failures);
    else printf("all op gradient checks passed\n");
    return failures ? 1 : 0;
}
