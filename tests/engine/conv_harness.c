/* Runs one convolution through lp_conv2d (forward, backward data, backward weights and
 * bias) on inputs made from a seed or read from files, and writes every tensor, inputs
 * included, as raw little-endian float32 in plain layouts, for test_conv_shapes.py to
 * compare with PyTorch.
 *
 *   conv_harness OUTDIR n c h w k kh kw sh sw pt pb pl pr groups bias relu
 *                [--seed S | --in DIR] [--src any|nchw|nhwc] [--bf16]
 *
 * Files in OUTDIR: x (n, c, h, w), w (k, c/groups, kh, kw), b (k), dy (n, k, oh, ow), y,
 * mask (y > 0 as 0/1 with relu, else 1; dy is multiplied by it before backward, as nn
 * does), dx, dw, db, all .f32; the inputs as the op saw them (rounded to bf16 with --bf16).
 * info.txt: oh, ow and the kernel of each pass (oneDNN's name or loupe's). --in DIR
 * reads x.f32, w.f32, b.f32 and dy.f32 from DIR instead of drawing them uniform in [-1, 1).
 * conv_harness --cpu-level prints whether bf16 is native at the CPU level as capped.
 * Exits 0 on success, 1 when the op fails, 2 on bad usage. */
#include "backend/backend.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HARNESS_NAME "conv_harness"
#include "op_harness.h"

static lp_md plain(int nd, const int64_t *d, dnnl_data_type_t dt, dnnl_format_tag_t tag) {
    lp_md md;
    dnnl_dims_t dims = {0};
    memcpy(dims, d, nd * sizeof(int64_t));
    dnnl_memory_desc_init_by_tag(&md, nd, dims, dt, tag);
    return md;
}

static void draw(float *a, size_t n, uint64_t seed, uint64_t stream) {
    for (size_t i = 0; i < n; i++) a[i] = 2.0f * lp_rng_uniform(seed, stream, i) - 1.0f;
}

/* a (plain f32 with layout pl) into the op's layout md (buffer out), then back to a, so
 * that a holds what the op sees (bf16-rounded where md is bf16). */
static lp_status to_op(float *a, const lp_md *pl, const lp_md *md, void **out) {
    *out = lp_aligned_alloc(lp_md_size(md) + 64);
    if (!*out) return LP_ERR_NOMEM;
    lp_status st = reorder(pl, a, md, *out);
    return st ? st : reorder(md, *out, pl, a);
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--cpu-level")) { /* for the test: bf16 cases run only where it is native */
        printf("bf16_native %d\n", lp_bf16_native());
        return 0;
    }
    if (argc < 18) {
        fprintf(stderr, "usage: conv_harness OUTDIR n c h w k kh kw sh sw pt pb pl pr groups bias relu "
                        "[--seed S | --in DIR] [--src any|nchw|nhwc] [--bf16] [--winograd]\n");
        return 2;
    }
    const char *out = argv[1];
    int v[16];
    for (int i = 0; i < 16; i++) {
        char *end;
        long x = strtol(argv[2 + i], &end, 10);
        if (*end || x < 0 || x > 1 << 20) {
            fprintf(stderr, "conv_harness: bad number '%s'\n", argv[2 + i]);
            return 2;
        }
        v[i] = (int)x;
    }
    uint64_t seed = 1;
    const char *in = NULL, *src = "any";
    bool bf16 = false, winograd = false;
    for (int i = 18; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--in") && i + 1 < argc) in = argv[++i];
        else if (!strcmp(argv[i], "--src") && i + 1 < argc) src = argv[++i];
        else if (!strcmp(argv[i], "--bf16")) bf16 = true;
        else if (!strcmp(argv[i], "--winograd")) winograd = true;
        else {
            fprintf(stderr, "conv_harness: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    lp_conv2d_params p = {.n = v[0], .c = v[1], .h = v[2], .w = v[3], .k = v[4], .kh = v[5], .kw = v[6], .sh = v[7],
                          .sw = v[8], .ph = v[9], .ph_extra = v[10] - v[9], .pw = v[11], .pw_extra = v[12] - v[11],
                          .groups = v[13], .no_bias = !v[14], .relu = v[15], .bf16 = bf16,
                          .winograd = winograd};
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    if (lp_dnnl_stream_create(&S)) return die("stream");

    int64_t sd[4] = {p.n, p.c, p.h, p.w};
    lp_md src_md, *src_p = NULL;
    if (!strcmp(src, "nchw") || !strcmp(src, "nhwc")) {
        src_md = plain(4, sd, dt, !strcmp(src, "nchw") ? dnnl_nchw : dnnl_nhwc);
        src_p = &src_md;
    } else if (strcmp(src, "any")) {
        fprintf(stderr, "conv_harness: --src takes any, nchw or nhwc\n");
        return 2;
    }
    lp_conv2d c;
    if (lp_conv2d_init(&c, &p, src_p)) return die("init");
    if (lp_conv2d_init_backward(&c, true, true)) return die("init backward");
    const int g = lp_conv2d_groups(&p);
    int64_t dd[4] = {p.n, p.k, c.oh, c.ow};
    const size_t nx = (size_t)p.n * p.c * p.h * p.w, ny = (size_t)p.n * p.k * c.oh * c.ow,
                 nw = (size_t)p.k * (p.c / g) * p.kh * p.kw, nb = (size_t)p.k;
    const lp_md x_pl = plain(4, sd, dnnl_f32, dnnl_nchw), y_pl = plain(4, dd, dnnl_f32, dnnl_nchw),
                w_pl = lp_conv2d_weights_plain_md(&p, dnnl_f32);
    float *x = alloc_f32(nx), *w = alloc_f32(nw), *b = alloc_f32(nb), *dy = alloc_f32(ny), *y = alloc_f32(ny),
          *mask = alloc_f32(ny), *dx = alloc_f32(nx), *dw = alloc_f32(nw), *db = alloc_f32(nb);
    if (!x || !w || !b || !dy || !y || !mask || !dx || !dw || !db) return die("alloc");
    if (in) {
        if (!read_f32(in, "x", x, nx) || !read_f32(in, "w", w, nw) || !read_f32(in, "b", b, nb) || !read_f32(in, "dy", dy, ny))
            return 2;
    } else {
        draw(x, nx, seed, 1), draw(w, nw, seed, 2), draw(b, nb, seed, 3), draw(dy, ny, seed, 4);
    }
    if (p.no_bias) memset(b, 0, nb * sizeof(float));

    void *xo, *wf, *wb, *yo, *dyo, *dxo, *dwo;
    if (to_op(x, &x_pl, &c.src_md, &xo) || to_op(w, &w_pl, &c.w_md, &wf)) return die("inputs");
    float *w_seen = alloc_f32(nw); /* the backward-data copy must round as the forward's */
    if (!w_seen) return die("alloc");
    memcpy(w_seen, w, nw * sizeof(float));
    if (to_op(w_seen, &w_pl, &c.bd_w_md, &wb)) return die("inputs");
    if (memcmp(w_seen, w, nw * sizeof(float))) {
        fprintf(stderr, "conv_harness: the two weights copies differ\n");
        return 1;
    }
    yo = lp_aligned_alloc(lp_md_size(&c.dst_md) + 64);
    dxo = lp_aligned_alloc(lp_md_size(&c.src_md) + 64);
    dwo = lp_aligned_alloc(lp_md_size(&c.bw_dw_md) + 64);
    if (!yo || !dxo || !dwo || !ensure_scratch(lp_conv2d_scratch_size(&c) + 64)) return die("alloc");
    void *cs = lp_aligned_alloc(lp_conv2d_scratch_size(&c) + 64);
    if (!cs) return die("alloc");

    if (lp_conv2d_forward(&c, S, xo, wf, p.no_bias ? NULL : b, yo, cs) || dnnl_stream_wait(S) != dnnl_success)
        return die("forward");
    if (reorder(&c.dst_md, yo, &y_pl, y)) return die("y");
    for (size_t i = 0; i < ny; i++) mask[i] = !p.relu || y[i] > 0 ? 1.0f : 0.0f;
    for (size_t i = 0; i < ny; i++) dy[i] *= mask[i];
    if (to_op(dy, &y_pl, &c.dst_md, &dyo)) return die("dy");
    if (lp_conv2d_backward_data(&c, S, dyo, wb, dxo, cs) || dnnl_stream_wait(S) != dnnl_success)
        return die("backward data");
    if (lp_conv2d_backward_weights(&c, S, xo, dyo, dwo, p.no_bias ? NULL : db, cs) || dnnl_stream_wait(S) != dnnl_success)
        return die("backward weights");
    if (p.no_bias) memset(db, 0, nb * sizeof(float));
    const lp_md dw_pl = lp_conv2d_weights_plain_md(&p, dnnl_f32);
    if (reorder(&c.src_md, dxo, &x_pl, dx) || reorder(&c.bw_dw_md, dwo, &dw_pl, dw)) return die("outputs");

    bool ok = write_f32(out, "x", x, nx) && write_f32(out, "w", w, nw) && write_f32(out, "b", b, nb) &&
              write_f32(out, "dy", dy, ny) && write_f32(out, "y", y, ny) && write_f32(out, "mask", mask, ny) &&
              write_f32(out, "dx", dx, nx) && write_f32(out, "dw", dw, nw) && write_f32(out, "db", db, nb);
    char path[4096];
    snprintf(path, sizeof path, "%s/info.txt", out);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "oh %d\now %d\nfwd %s\nbwd_data %s\nbwd_weights %s\n", c.oh, c.ow, c.fwd.impl, c.bwd_data.impl,
                      c.bwd_w.impl) < 0)
        ok = false;
    if (f && fclose(f)) ok = false;
    lp_conv2d_free(&c);
    free(x), free(w), free(b), free(dy), free(y), free(mask), free(dx), free(dw), free(db), free(w_seen);
    free(xo), free(wf), free(wb), free(yo), free(dyo), free(dxo), free(dwo), free(cs), free(scratch);
    dnnl_stream_destroy(S);
    return ok ? 0 : 1;
}
