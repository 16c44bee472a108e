/* Runs STEPS steps of lp_batchnorm (forward, backward, and in train mode the running
 * statistics update) on inputs made from a seed or read from files, and writes every
 * tensor as raw little-endian float32 in plain layouts (NCHW, (c)), for
 * test_batchnorm.py to compare with torch.nn.BatchNorm2d.
 *
 *   bn_harness OUTDIR n c h w train|frozen act steps [--seed S | --in DIR]
 *              [--layout default|nchw|nhwc|nChw8c|nChw16c] [--eps E] [--forward-only] [--fused] [--bf16]
 *   bn_harness --impls n c h w LAYOUT    prints the kernel of each mode's passes
 *
 * act: 0 none, 1 ReLU, 6 ReLU6, silu SiLU after the normalization. --fused: loupe's fused kernel
 * wherever it takes the layout (lp_batchnorm_params.fused), not only with ReLU6. --bf16: x, y,
 * dy and dx in bf16 (as in a bf16 net; the default layout then nChw16c, the bf16
 * convolutions'), converted from and to the float32 files by oneDNN's reorder (x and dy
 * should be bf16 values already, so that the op sees exactly them).
 * Inputs (--in DIR reads them, else drawn: x normal with a per-channel offset and scale,
 * dy normal, gamma and beta uniform, running_var uniform in [0.5, 1.5)): x0..x{steps-1}
 * and dy0.. (n, c, h, w), gamma, beta, running_mean, running_var (c). Outputs in OUTDIR,
 * inputs included: for step k, yk, dxk, dgammak, dbetak, and in train mode meank, vark
 * (the batch's, var biased); running_mean_out, running_var_out after the last step;
 * info.txt: layout, the kernels, num_batches_tracked. Gamma and beta stay fixed over the
 * steps (no optimizer here). Exits 0 on success, 1 when the op fails, 2 on bad usage. */
#include "backend/batchnorm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HARNESS_NAME "bn_harness"
#include "op_harness.h"

/* Layout by name; "default" leaves the choice to lp_batchnorm_init (*use = false), in
 * fp32; in bf16 it is nChw16c. */
static bool layout(const char *name, int n, int c, int h, int w, bool bf16, lp_md *md, bool *use) {
    static const struct { const char *name; dnnl_format_tag_t tag; } tags[] = {
        {"nchw", dnnl_nchw}, {"nhwc", dnnl_nhwc}, {"nChw8c", dnnl_nChw8c}, {"nChw16c", dnnl_nChw16c}};
    *use = false;
    if (!strcmp(name, "default") && !bf16) return true;
    if (!strcmp(name, "default")) name = "nChw16c";
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        if (!strcmp(name, tags[i].name)) {
            dnnl_dims_t d = {n, c, h, w};
            *use = true;
            return dnnl_memory_desc_init_by_tag(md, 4, d, bf16 ? dnnl_bf16 : dnnl_f32, tags[i].tag) == dnnl_success;
        }
    fprintf(stderr, "bn_harness: unknown layout '%s'\n", name);
    return false;
}

static bool parse_ints(char **argv, int count, int *out) {
    for (int i = 0; i < count; i++) {
        char *end;
        long v = strtol(argv[i], &end, 10);
        if (*end || v < 0 || v > 1 << 20) {
            fprintf(stderr, "bn_harness: bad number '%s'\n", argv[i]);
            return false;
        }
        out[i] = (int)v;
    }
    return true;
}

/* The kernels picked for every mode and activation, nothing run. */
static int print_impls(int n, int c, int h, int w, const char *lay) {
    lp_md md;
    bool use;
    if (!layout(lay, n, c, h, w, false, &md, &use)) return 2;
    static const char *const acts[] = {"none", "relu", "relu6", "silu"};
    for (int mode = 0; mode < 2; mode++)
        for (int relu = 0; relu < 4; relu++)
            for (int bwd = 0; bwd < 2; bwd++) {
                if (mode == LP_BN_TRAIN && !bwd) continue;
                lp_batchnorm_params p = {.n = n, .c = c, .h = h, .w = w, .mode = mode, .relu = relu == 1, .relu6 = relu == 2,
                                         .silu = relu == 3, .backward = bwd};
                lp_batchnorm b;
                if (lp_batchnorm_init(&b, &p, use ? &md : NULL) || (bwd && lp_batchnorm_init_backward(&b))) {
                    printf("%s act=%s %s: FAILED %s\n", mode ? "frozen" : "train", acts[relu], bwd ? "fwd+bwd" : "fwd", lp_errmsg());
                    continue;
                }
                char buf[64];
                printf("%s act=%s %s layout=%s fwd=%s bwd=%s\n", mode ? "frozen" : "train", acts[relu], bwd ? "fwd+bwd" : "fwd",
                       lp_md_layout(&b.data_md, buf, sizeof buf), b.fwd.impl, bwd ? b.bwd.impl : "-");
                lp_batchnorm_free(&b);
            }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 7 && !strcmp(argv[1], "--impls")) {
        int d[4];
        if (!parse_ints(argv + 2, 4, d)) return 2;
        return print_impls(d[0], d[1], d[2], d[3], argv[6]);
    }
    if (argc < 9) {
        fprintf(stderr, "usage: bn_harness OUTDIR n c h w train|frozen 0|1|6|silu steps [--seed S | --in DIR] "
                        "[--layout default|nchw|nhwc|nChw8c|nChw16c] [--eps E] [--forward-only] [--fused] [--bf16]\n"
                        "       bn_harness --impls n c h w LAYOUT\n");
        return 2;
    }
    const char *out = argv[1];
    int d[4], relu = -1, steps;
    const bool silu = !strcmp(argv[7], "silu");
    if (!parse_ints(argv + 2, 4, d) || (!silu && !parse_ints(argv + 7, 1, &relu)) || !parse_ints(argv + 8, 1, &steps)) return 2;
    if (!silu && relu != 0 && relu != 1 && relu != 6) {
        fprintf(stderr, "bn_harness: the activation is 0 (none), 1 (ReLU), 6 (ReLU6) or silu, not %d\n", relu);
        return 2;
    }
    const int n = d[0], c = d[1], h = d[2], w = d[3];
    lp_bn_mode mode;
    if (!strcmp(argv[6], "train")) mode = LP_BN_TRAIN;
    else if (!strcmp(argv[6], "frozen")) mode = LP_BN_FROZEN;
    else {
        fprintf(stderr, "bn_harness: mode must be train or frozen, not '%s'\n", argv[6]);
        return 2;
    }
    uint64_t seed = 1;
    const char *in = NULL, *lay = "default";
    float eps = 0;
    bool backward = true, fused = false, bf16 = false;
    for (int i = 9; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--in") && i + 1 < argc) in = argv[++i];
        else if (!strcmp(argv[i], "--layout") && i + 1 < argc) lay = argv[++i];
        else if (!strcmp(argv[i], "--eps") && i + 1 < argc) eps = strtof(argv[++i], NULL);
        else if (!strcmp(argv[i], "--forward-only")) backward = false;
        else if (!strcmp(argv[i], "--fused")) fused = true;
        else if (!strcmp(argv[i], "--bf16")) bf16 = true;
        else {
            fprintf(stderr, "bn_harness: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    lp_md src_md;
    bool use_src;
    if (!layout(lay, n, c, h, w, bf16, &src_md, &use_src)) return 2;
    if (lp_dnnl_stream_create(&S)) return die("stream");

    lp_batchnorm_params p = {.n = n, .c = c, .h = h, .w = w, .eps = eps, .mode = mode, .relu = relu == 1, .relu6 = relu == 6,
                             .silu = silu, .fused = fused, .backward = backward};
    lp_batchnorm b;
    if (lp_batchnorm_init(&b, &p, use_src ? &src_md : NULL)) return die("init");
    if (backward && lp_batchnorm_init_backward(&b)) return die("init backward");
    if (!ensure_scratch(lp_batchnorm_scratch_size(&b))) return die("scratch");

    const size_t count = (size_t)n * c * h * w, bytes = lp_md_size(&b.data_md);
    int64_t dims[4] = {n, c, h, w};
    lp_md plain = lp_md_plain(4, dims);
    float *x = alloc_f32(count), *dy = alloc_f32(count), *y = alloc_f32(count), *dx = alloc_f32(count);
    float *xo = lp_aligned_alloc(bytes), *dyo = lp_aligned_alloc(bytes), *yo = lp_aligned_alloc(bytes),
          *dxo = lp_aligned_alloc(bytes);
    void *ws = lp_aligned_alloc(b.ws_size ? b.ws_size : 64);
    float *gamma = alloc_f32(c), *beta = alloc_f32(c), *rm = alloc_f32(c), *rv = alloc_f32(c);
    float *mean = alloc_f32(c), *var = alloc_f32(c), *dgamma = alloc_f32(c), *dbeta = alloc_f32(c);
    if (!x || !dy || !y || !dx || !xo || !dyo || !yo || !dxo || !ws || !gamma || !beta || !rm || !rv || !mean || !var ||
        !dgamma || !dbeta)
        return die("alloc");

    if (in) {
        if (!read_f32(in, "gamma", gamma, c) || !read_f32(in, "beta", beta, c) || !read_f32(in, "running_mean", rm, c) ||
            !read_f32(in, "running_var", rv, c))
            return 1;
    } else {
        for (int i = 0; i < c; i++) {
            gamma[i] = 0.5f + lp_rng_uniform(seed, 1, i);
            beta[i] = lp_rng_uniform(seed, 2, i) - 0.5f;
            rm[i] = lp_rng_uniform(seed, 3, i) - 0.5f;
            rv[i] = 0.5f + lp_rng_uniform(seed, 4, i);
        }
        if (!write_f32(out, "gamma", gamma, c) || !write_f32(out, "beta", beta, c) || !write_f32(out, "running_mean", rm, c) ||
            !write_f32(out, "running_var", rv, c))
            return 1;
    }
    int64_t tracked = 0;
    char name[64];
    for (int k = 0; k < steps; k++) {
        if (in) {
            snprintf(name, sizeof name, "x%d", k);
            if (!read_f32(in, name, x, count)) return 1;
            snprintf(name, sizeof name, "dy%d", k);
            if (!read_f32(in, name, dy, count)) return 1;
        } else {
            for (size_t i = 0; i < count; i++) {
                const int ch = (int)(i / ((size_t)h * w) % c);
                x[i] = lp_rng_uniform(seed, 5, ch) - 0.5f + (0.2f + lp_rng_uniform(seed, 6, ch)) * lp_rng_normal(seed, 10 + k, i);
                dy[i] = lp_rng_normal(seed, 100 + k, i);
            }
            snprintf(name, sizeof name, "x%d", k);
            if (!write_f32(out, name, x, count)) return 1;
            snprintf(name, sizeof name, "dy%d", k);
            if (!write_f32(out, name, dy, count)) return 1;
        }
        if (reorder(&plain, x, &b.data_md, xo)) return die("reorder x");
        /* frozen: the running statistics are the op's input (copies: the op only reads) */
        if (mode == LP_BN_FROZEN) {
            memcpy(mean, rm, c * sizeof(float));
            memcpy(var, rv, c * sizeof(float));
        }
        if (!ensure_scratch(lp_batchnorm_scratch_size(&b))) return die("scratch");
        if (lp_batchnorm_forward(&b, S, xo, gamma, beta, mean, var, yo, b.ws_size ? ws : NULL, scratch)) return die("forward");
        if (lp_dnnl_check(dnnl_stream_wait(S), "wait")) return die("forward");
        if (reorder(&b.data_md, yo, &plain, y)) return die("reorder y");
        snprintf(name, sizeof name, "y%d", k);
        if (!write_f32(out, name, y, count)) return 1;
        if (mode == LP_BN_TRAIN) {
            snprintf(name, sizeof name, "mean%d", k);
            if (!write_f32(out, name, mean, c)) return 1;
            snprintf(name, sizeof name, "var%d", k);
            if (!write_f32(out, name, var, c)) return 1;
            lp_batchnorm_update_running(rm, rv, &tracked, mean, var, c, (int64_t)n * h * w, LP_BN_MOMENTUM);
        }
        if (!backward) continue;
        if (reorder(&plain, dy, &b.data_md, dyo)) return die("reorder dy");
        if (!ensure_scratch(lp_batchnorm_scratch_size(&b))) return die("scratch");
        if (lp_batchnorm_backward(&b, S, xo, yo, dyo, gamma, beta, mean, var, b.ws_size ? ws : NULL, dxo, dgamma, dbeta, scratch))
            return die("backward");
        if (lp_dnnl_check(dnnl_stream_wait(S), "wait")) return die("backward");
        if (reorder(&b.data_md, dxo, &plain, dx)) return die("reorder dx");
        snprintf(name, sizeof name, "dx%d", k);
        if (!write_f32(out, name, dx, count)) return 1;
        snprintf(name, sizeof name, "dgamma%d", k);
        if (!write_f32(out, name, dgamma, c)) return 1;
        snprintf(name, sizeof name, "dbeta%d", k);
        if (!write_f32(out, name, dbeta, c)) return 1;
    }
    if (!write_f32(out, "running_mean_out", rm, c) || !write_f32(out, "running_var_out", rv, c)) return 1;
    char path[4096], buf[64];
    snprintf(path, sizeof path, "%s/info.txt", out);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "layout %s\nfwd %s\nbwd %s\nws_size %zu\nnum_batches_tracked %lld\n", lp_md_layout(&b.data_md, buf, sizeof buf),
            b.fwd.impl, backward ? b.bwd.impl : "-", b.ws_size, (long long)tracked);
    if (fclose(f)) return 1;
    lp_batchnorm_free(&b);
    free(x), free(dy), free(y), free(dx), free(xo), free(dyo), free(yo), free(dxo), free(ws);
    free(gamma), free(beta), free(rm), free(rv), free(mean), free(var), free(dgamma), free(dbeta), free(scratch);
    dnnl_stream_destroy(S);
    return 0;
}
