/* What the op harnesses (bn_harness, conv_harness) share: one stream and a growing
 * scratchpad, reorders between layouts, and raw float32 files DIR/NAME.f32 through
 * which they exchange tensors with their Python tests. HARNESS_NAME names the program
 * in errors. */
#ifndef OP_HARNESS_H
#define OP_HARNESS_H
#include "backend/backend.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static dnnl_stream_t S;
static void *scratch;
static size_t scratch_cap;

static int die(const char *what) {
    fprintf(stderr, "%s: %s: %s\n", HARNESS_NAME, what, lp_errmsg());
    return 1;
}

static float *alloc_f32(size_t n) { return lp_aligned_alloc((n ? n : 1) * sizeof(float)); }

static bool ensure_scratch(size_t n) {
    if (n <= scratch_cap) return true;
    free(scratch);
    scratch = lp_aligned_alloc(n ? n : 64);
    scratch_cap = scratch ? n : 0;
    return scratch != NULL;
}

/* dst (layout to) = src (layout from), converting data types. */
static lp_status reorder(const lp_md *from, const void *src, const lp_md *to, void *dst) {
    lp_reorder r;
    lp_status st = lp_reorder_init(&r, from, to, false);
    if (st) return st;
    if (!ensure_scratch(r.prim.scratch_size)) st = LP_ERR_NOMEM;
    if (!st) st = lp_reorder_exec(&r, S, src, dst, scratch);
    if (!st) st = lp_dnnl_check(dnnl_stream_wait(S), "wait");
    lp_reorder_free(&r);
    return st;
}

static bool write_f32(const char *dir, const char *name, const float *a, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(a, sizeof(float), n, f) == n;
    if (f && fclose(f)) ok = false;
    if (!ok) fprintf(stderr, "%s: cannot write %s\n", HARNESS_NAME, path);
    return ok;
}

/* The file must hold exactly n values. */
static bool read_f32(const char *dir, const char *name, float *a, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    FILE *f = fopen(path, "rb");
    bool ok = f && fread(a, sizeof(float), n, f) == n && fgetc(f) == EOF;
    if (f) fclose(f);
    if (!ok) fprintf(stderr, "%s: %s: missing, or not %zu float32 values\n", HARNESS_NAME, path, n);
    return ok;
}
#endif
