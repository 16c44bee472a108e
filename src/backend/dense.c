/* Dense (fully connected) forward/backward with oneDNN matmul on plain
 * row-major data; weights stay in torch.nn.Linear's (out, in) layout.
 *
 * bf16 (as PyTorch's autocast runs nn.Linear): the matmuls take x, dy and the
 * weights' bf16 copy (the caller keeps it: lp_dense_weights_bf16) and run on AMX;
 * y, dx, dw, the bias and its gradient stay fp32. x and dy are converted into
 * scratch, after the primitives' own scratchpad. bf16 runs oneDNN's matmuls at every
 * batch size (our small-batch loops are fp32). */
#include "backend.h"
#include <string.h>

/* small batches' backward (lp_dense_backward_small): */
#define DX_CHUNKS 16 /* at most */
#define DX_ROWS 4    /* rows per pass over a chunk's partial dx */
#define PIECE 2048   /* floats of a row per piece handed to the fused update: 8 KB;
                      * DX_ROWS rows of it, 32 KB, stay in L1 for the update */

bool lp_dense_small_batch(const lp_dense *d) { return !d->bf16 && d->n <= LP_DENSE_SMALL_BATCH; }

static lp_md md_strided(int64_t d0, int64_t d1, int64_t s0, int64_t s1, dnnl_data_type_t dt) {
    lp_md md;
    dnnl_dims_t d = {d0, d1}, s = {s0, s1};
    dnnl_memory_desc_init_by_strides(&md, 2, d, dt, s);
    return md;
}

static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

/* The data type of the products' operands. */
static dnnl_data_type_t op_type(const lp_dense *d) { return d->bf16 ? dnnl_bf16 : dnnl_f32; }

static lp_status matmul_prim(lp_prim *pr, const lp_md *a, const lp_md *b, const lp_md *bias, const lp_md *c, bool relu, bool sum) {
    dnnl_matmul_desc_t desc;
    lp_status st = lp_dnnl_check(dnnl_matmul_desc_init(&desc, a, b, bias, c), "matmul desc");
    if (st) return st;
    dnnl_primitive_attr_t attr;
    if ((st = lp_attr_create(&attr, relu, sum))) return st;
    dnnl_primitive_desc_t pd;
    st = lp_dnnl_check(dnnl_primitive_desc_create(&pd, &desc, attr, lp_dnnl_engine(), NULL), "dense (matmul)");
    dnnl_primitive_attr_destroy(attr);
    if (st) return st;
    static const int with_bias[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    static const int no_bias[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    st = bias ? lp_prim_create(pr, pd, with_bias, 4) : lp_prim_create(pr, pd, no_bias, 3);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

lp_status lp_dense_init(lp_dense *d, int n, int in, int out, bool relu, bool bf16) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->in = in;
    d->out = out;
    d->relu = relu;
    d->bf16 = bf16;
    const dnnl_data_type_t t = op_type(d);
    lp_md x = md_strided(n, in, in, 1, t), w = md_strided(in, out, 1, in, t), b = md_strided(1, out, out, 1, dnnl_f32),
          y = md_strided(n, out, out, 1, dnnl_f32);
    lp_status st = matmul_prim(&d->fwd, &x, &w, &b, &y, relu, false);
    if (st || !bf16) return st;
    lp_md xf = md_strided(n, in, in, 1, dnnl_f32), wf = md_strided(out, in, in, 1, dnnl_f32),
          wb = md_strided(out, in, in, 1, dnnl_bf16), dyf = md_strided(n, out, out, 1, dnnl_f32),
          dyb = md_strided(n, out, out, 1, dnnl_bf16);
    if ((st = lp_reorder_init(&d->x_to_bf16, &xf, &x, false))) return st;
    if ((st = lp_reorder_init(&d->dy_to_bf16, &dyf, &dyb, false))) return st;
    return lp_reorder_init(&d->w_to_bf16, &wf, &wb, false);
}

lp_status lp_dense_init_backward(lp_dense *d, bool data, bool weights) {
    lp_status st;
    const dnnl_data_type_t t = op_type(d);
    if (data && !d->has_bwd_data) {
        lp_md dy = md_strided(d->n, d->out, d->out, 1, t), w = md_strided(d->out, d->in, d->in, 1, t),
              dx = md_strided(d->n, d->in, d->in, 1, dnnl_f32);
        if ((st = matmul_prim(&d->bwd_data, &dy, &w, NULL, &dx, false, false))) return st;
        d->has_bwd_data = true;
    }
    if (weights && !d->has_bwd_w) {
        lp_md dyt = md_strided(d->out, d->n, 1, d->out, t), x = md_strided(d->n, d->in, d->in, 1, t),
              dw = md_strided(d->out, d->in, d->in, 1, dnnl_f32);
        if ((st = matmul_prim(&d->bwd_w, &dyt, &x, NULL, &dw, false, true))) return st;
        if ((st = matmul_prim(&d->bwd_w_set, &dyt, &x, NULL, &dw, false, false))) return st;
        d->has_bwd_w = true;
    }
    return LP_OK;
}

/* The primitives' scratchpad (or the small batches' partial dx), before the bf16 x
 * and dy. */
static size_t prim_scratch(const lp_dense *d) {
    size_t s = d->fwd.scratch_size;
    if (d->has_bwd_data && d->bwd_data.scratch_size > s) s = d->bwd_data.scratch_size;
    const size_t parts = sizeof(float) * DX_CHUNKS * (size_t)d->n * d->in;
    if (d->has_bwd_data && lp_dense_small_batch(d) && parts > s) s = parts;
    if (d->has_bwd_w && d->bwd_w.scratch_size > s) s = d->bwd_w.scratch_size;
    if (d->has_bwd_w && d->bwd_w_set.scratch_size > s) s = d->bwd_w_set.scratch_size;
    if (d->bf16) {
        const size_t r[3] = {d->x_to_bf16.prim.scratch_size, d->dy_to_bf16.prim.scratch_size, d->w_to_bf16.prim.scratch_size};
        for (int i = 0; i < 3; i++)
            if (r[i] > s) s = r[i];
    }
    return align64(s);
}

/* bf16: x (n, in) and dy (n, out) converted into scratch after the primitives' part. */
static void *x_bf16(const lp_dense *d, void *scratch) { return (char *)scratch + prim_scratch(d); }
static void *dy_bf16(const lp_dense *d, void *scratch) {
    return (char *)x_bf16(d, scratch) + align64(sizeof(uint16_t) * (size_t)d->n * d->in);
}

size_t lp_dense_scratch_size(const lp_dense *d) {
    size_t s = prim_scratch(d);
    if (d->bf16) s += align64(sizeof(uint16_t) * (size_t)d->n * d->in) + align64(sizeof(uint16_t) * (size_t)d->n * d->out);
    return s;
}

lp_status lp_dense_weights_bf16(lp_dense *d, dnnl_stream_t s, const float *w, uint16_t *wbf, void *scratch) {
    if (!d->bf16) return lp_fail(LP_ERR_BACKEND, "internal: bf16 copy for an fp32 dense layer");
    return lp_reorder_exec(&d->w_to_bf16, s, w, wbf, scratch);
}

lp_status lp_dense_forward(lp_dense *d, dnnl_stream_t s, const float *x, const void *w, const float *b, float *y, void *scratch) {
    const void *src = x;
    if (d->bf16) {
        lp_status st = lp_reorder_exec(&d->x_to_bf16, s, x, x_bf16(d, scratch), scratch);
        if (st) return st;
        src = x_bf16(d, scratch);
    }
    void *p[4] = {(void *)src, (void *)w, (void *)b, y};
    return lp_prim_exec(&d->fwd, s, p, scratch);
}

/* Small batches: dx = dy w is, like backward-weights, a pass over w with little
 * arithmetic per weight. The rows go in out / 256 chunks (1 to DX_CHUNKS,
 * set by the layer's size alone), each summing its rows in order with fused
 * multiply-adds into its own partial dx (in scratch), as a matrix product's inner
 * loop does; the partials are then added in chunk order. The same sums for any
 * thread count, and the same sums when the fused update (layers.c) makes them row
 * piece by row piece between its updates, reading each weight once for both.
 * Layers under 512 outputs get one chunk, one FMA chain per element: oneDNN's sums
 * there matched PyTorch's more closely than pairwise-added partials, and Adam with a
 * small eps turns a last-bit difference in a tiny gradient into a different step
 * (parity.py's adam_eps6). Chunks, not threads, cap the parallelism: 2 to 16 for
 * VGG's 4096-wide layers, which suits this 2-core machine. (Columns split among
 * threads, each walking all rows, needed no partials but ran 10 ms slower per step at
 * VGG's top: a thread's rows were no longer contiguous in memory.) */
static int dx_chunks(const lp_dense *d) {
    const int c = d->out / 256;
    return c < 1 ? 1 : c > DX_CHUNKS ? DX_CHUNKS : c;
}

/* Rows [o, o + nr) (nr <= DX_ROWS), each element's chain in row order: up to
 * four rows per pass over the partial dx, which lives in L2 (200 KB at VGG's top), so
 * that pass is not paid per row. FMA instructions in the AVX-512 and AVX2 variants; the
 * baseline one calls fmaf (same results). */
LP_ISA_BODY void dx_add_rows_body(const lp_dense *d, const float *dy, const float *w, int o, int nr, int lo, int hi, float *part) {
    const float *w0 = w + (size_t)o * d->in;
    const size_t in = (size_t)d->in;
    for (int i = 0; i < d->n; i++) {
        float *pi = part + (size_t)i * d->in;
        const float *ci = dy + (size_t)i * d->out + o;
        if (nr == 4) {
            for (int j = lo; j < hi; j++) {
                float a = pi[j];
                a = __builtin_fmaf(ci[0], w0[j], a);
                a = __builtin_fmaf(ci[1], w0[in + j], a);
                a = __builtin_fmaf(ci[2], w0[2 * in + j], a);
                pi[j] = __builtin_fmaf(ci[3], w0[3 * in + j], a);
            }
        } else {
            for (int r = 0; r < nr; r++)
                for (int j = lo; j < hi; j++) pi[j] = __builtin_fmaf(ci[r], w0[r * in + j], pi[j]);
        }
    }
}

LP_ISA_VARIANTS_VOID(dx_add_rows,
                     (const lp_dense *d, const float *dy, const float *w, int o, int nr, int lo, int hi, float *part),
                     (d, dy, w, o, nr, lo, hi, part))

static void dx_sum(const lp_dense *d, const float *parts, float *dx) {
    const size_t len = (size_t)d->n * d->in;
    const int nc = dx_chunks(d);
LP_OMP(parallel for if (len >= 16384))
    for (size_t j = 0; j < len; j++) {
        float s = parts[j];
        for (int c = 1; c < nc; c++) s += parts[(size_t)c * len + j];
        dx[j] = s;
    }
}

/* dw (out, in) at small batch is a rank-n outer product: matmul kernels with K = n
 * this small run far below memory speed, a streaming loop does not. One row's
 * columns [lo, hi), in a fixed order (the fused update relies on the same sums). */
LP_ISA_BODY void outer_row_body(const lp_dense *d, const float *x, const float *dy, int o, int lo, int hi, float *row, bool accumulate) {
    const int n = d->n, out = d->out, in = d->in;
    if (!accumulate)
        for (int j = 0; j < hi - lo; j++) row[j] = 0.0f;
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * in + lo;
        const float ci = dy[(size_t)i * out + o];
        for (int j = 0; j < hi - lo; j++) row[j] += ci * xi[j];
    }
}
LP_ISA_VARIANTS_VOID(outer_row,
                     (const lp_dense *d, const float *x, const float *dy, int o, int lo, int hi, float *row, bool accumulate),
                     (d, x, dy, o, lo, hi, row, accumulate))

/* Small batches: backward data (into dx, when not NULL) and, with fn, each piece of
 * the weight gradient handed to fn as it is made. The rows go in chunks (one thread
 * each), DX_ROWS rows at a time, a piece of columns at a time: backward data reads
 * those rows' weights, then each row's gradient piece is made in L1 and fn (the
 * optimizer's update, which rewrites those weights) applied to it. */
uint32_t lp_dense_backward_small(const lp_dense *d, const float *x, const float *dy, const float *w, float *dx, void *scratch,
                                 lp_dense_piece_fn fn, void *ctx) {
    float *parts = scratch;
    const size_t len = (size_t)d->n * d->in;
    const int nc = dx_chunks(d), piece = fn ? PIECE : d->in;
    uint32_t bad = 0;
LP_OMP(parallel for schedule(static) reduction(| : bad))
    for (int c = 0; c < nc; c++) {
        const int r0 = (int)((long long)d->out * c / nc), r1 = (int)((long long)d->out * (c + 1) / nc);
        float *part = dx ? parts + (size_t)c * len : NULL;
        if (part) memset(part, 0, len * sizeof(float));
        for (int r = r0; r < r1; r += DX_ROWS) {
            const int nr = r1 - r < DX_ROWS ? r1 - r : DX_ROWS;
            for (int lo = 0; lo < d->in; lo += piece) {
                const int hi = lo + piece < d->in ? lo + piece : d->in;
                if (part) dx_add_rows(d, dy, w, r, nr, lo, hi, part);
                if (!fn) continue;
                float g[PIECE] __attribute__((aligned(64)));
                for (int q = r; q < r + nr; q++) {
                    outer_row(d, x, dy, q, lo, hi, g, false);
                    bad |= fn(ctx, g, (long long)q * d->in + lo, (long long)q * d->in + hi);
                }
            }
        }
    }
    if (dx) dx_sum(d, parts, dx);
    return bad;
}

lp_status lp_dense_backward_data(lp_dense *d, dnnl_stream_t s, const float *dy, const void *w, float *dx, void *scratch) {
    if (lp_dense_small_batch(d)) {
        dnnl_stream_wait(s);
        lp_dense_backward_small(d, NULL, dy, w, dx, scratch, NULL, NULL);
        return LP_OK;
    }
    const void *src = dy;
    if (d->bf16) {
        lp_status st = lp_reorder_exec(&d->dy_to_bf16, s, dy, dy_bf16(d, scratch), scratch);
        if (st) return st;
        src = dy_bf16(d, scratch);
    }
    void *p[3] = {(void *)src, (void *)w, dx};
    return lp_prim_exec(&d->bwd_data, s, p, scratch);
}

void lp_dense_backward_bias(const lp_dense *d, const float *dy, float *db, bool accumulate) {
    const int n = d->n, out = d->out;
LP_OMP(parallel for if (out >= 1024))
    for (int j = 0; j < out; j++) {
        float acc = 0.0f;
        for (int i = 0; i < n; i++) acc += dy[(size_t)i * out + j];
        db[j] = accumulate ? db[j] + acc : acc;
    }
}

lp_status lp_dense_backward_weights(lp_dense *d, dnnl_stream_t s, const float *x, const float *dy, float *dw, float *db,
                                   bool accumulate, void *scratch) {
    if (lp_dense_small_batch(d)) {
        dnnl_stream_wait(s);
LP_OMP(parallel for schedule(static))
        for (int o = 0; o < d->out; o++) outer_row(d, x, dy, o, 0, d->in, dw + (size_t)o * d->in, accumulate);
    } else {
        const void *a = dy, *b = x;
        lp_status st;
        if (d->bf16) {
            if ((st = lp_reorder_exec(&d->dy_to_bf16, s, dy, dy_bf16(d, scratch), scratch)) ||
                (st = lp_reorder_exec(&d->x_to_bf16, s, x, x_bf16(d, scratch), scratch)))
                return st;
            a = dy_bf16(d, scratch), b = x_bf16(d, scratch);
        }
        void *p[3] = {(void *)a, (void *)b, dw};
        if ((st = lp_prim_exec(accumulate ? &d->bwd_w : &d->bwd_w_set, s, p, scratch))) return st;
    }
    lp_dense_backward_bias(d, dy, db, accumulate);
    return LP_OK;
}

void lp_dense_free(lp_dense *d) {
    if (!d) return;
    lp_prim_free(&d->fwd);
    lp_prim_free(&d->bwd_data);
    lp_prim_free(&d->bwd_w);
    lp_prim_free(&d->bwd_w_set);
    lp_reorder_free(&d->x_to_bf16);
    lp_reorder_free(&d->dy_to_bf16);
    lp_reorder_free(&d->w_to_bf16);
    memset(d, 0, sizeof *d);
}
