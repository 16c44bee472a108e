/* Batch normalization alone, ours (src/backend/batchnorm_fused.c) against oneDNN's
 * (LOUPE_BATCHNORM=onednn: its primitive, ReLU6 or SiLU as an eltwise pass after it), on the layout
 * the convolutions hand over at this CPU level, dx written over dy as in a training step.
 * Prints the best of ITERS forward and backward times of each, run alternately.
 *
 *   batchnorm_op N C H W none|relu|relu6|silu train|frozen [ITERS]
 *
 * (ONEDNN_MAX_CPU_ISA caps both as usual.) */
#include "backend/batchnorm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct op {
    lp_batchnorm b;
    void *scratch, *ws;
    double fwd, bwd; /* best seconds */
} op;

static int build(op *o, lp_batchnorm_params p, bool onednn) {
    if (onednn) setenv("LOUPE_BATCHNORM", "onednn", 1);
    else unsetenv("LOUPE_BATCHNORM");
    p.fused = !onednn;
    if (lp_batchnorm_init(&o->b, &p, NULL) || lp_batchnorm_init_backward(&o->b)) {
        fprintf(stderr, "batchnorm_op: %s\n", lp_errmsg());
        return 1;
    }
    o->scratch = lp_aligned_alloc(lp_batchnorm_scratch_size(&o->b) + 64);
    o->ws = lp_aligned_alloc(o->b.ws_size + 64);
    o->fwd = o->bwd = 1e30;
    return !o->scratch || !o->ws;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: batchnorm_op N C H W none|relu|relu6|silu train|frozen [ITERS]\n");
        return 2;
    }
    const int n = atoi(argv[1]), c = atoi(argv[2]), h = atoi(argv[3]), w = atoi(argv[4]);
    const int iters = argc > 7 ? atoi(argv[7]) : 40;
    lp_batchnorm_params p = {.n = n, .c = c, .h = h, .w = w, .relu = !strcmp(argv[5], "relu"), .relu6 = !strcmp(argv[5], "relu6"),
                             .silu = !strcmp(argv[5], "silu"),
                             .mode = strcmp(argv[6], "frozen") ? LP_BN_TRAIN : LP_BN_FROZEN, .backward = true};
    if (n < 1 || c < 1 || h < 1 || w < 1 || iters < 1) return 2;
    dnnl_stream_t s;
    op ops[2];
    if (lp_dnnl_stream_create(&s) || build(&ops[0], p, false) || build(&ops[1], p, true)) return 1;
    const size_t bytes = lp_md_size(&ops[0].b.data_md);
    float *x = lp_aligned_alloc(bytes), *y = lp_aligned_alloc(bytes), *dy = lp_aligned_alloc(bytes);
    float *g = calloc(c, 4), *beta = calloc(c, 4), *mean = calloc(c, 4), *var = calloc(c, 4), *dg = calloc(c, 4), *db = calloc(c, 4);
    if (!x || !y || !dy || !g || !beta || !mean || !var || !dg || !db) return 1;
    for (size_t i = 0; i < bytes / 4; i++) x[i] = (float)(i * 7919 % 1000) / 300.0f - 1.0f;
    for (int i = 0; i < c; i++) g[i] = 1.0f, beta[i] = 0.5f, var[i] = 1.0f;
    for (int it = 0; it < iters; it++)
        for (int k = 0; k < 2; k++) {
            op *o = &ops[k];
            for (size_t i = 0; i < bytes / 4; i++) dy[i] = (float)(i * 104729 % 1000) / 500.0f - 1.0f;
            const double t0 = now();
            if (lp_batchnorm_forward(&o->b, s, x, g, beta, mean, var, y, o->ws, o->scratch)) return 1;
            dnnl_stream_wait(s);
            const double t1 = now();
            if (lp_batchnorm_backward(&o->b, s, x, y, dy, g, beta, mean, var, o->ws, dy, dg, db, o->scratch)) return 1;
            dnnl_stream_wait(s);
            const double t2 = now();
            if (t1 - t0 < o->fwd) o->fwd = t1 - t0;
            if (t2 - t1 < o->bwd) o->bwd = t2 - t1;
        }
    char buf[64];
    printf("batch norm %dx%dx%dx%d %s %s, layout %s, best of %d (ms):\n", n, c, h, w, argv[5], argv[6],
           lp_md_layout(&ops[0].b.data_md, buf, sizeof buf), iters);
    for (int k = 0; k < 2; k++)
        printf("  %-28s forward %7.3f  backward %7.3f\n", ops[k].b.fwd.impl, ops[k].fwd * 1e3, ops[k].bwd * 1e3);
    return 0;
}
