/* Runs one of ResNet's graph ops forward and backward on inputs read from float32 files
 * and writes the results in plain layouts, for test_graph_ops.py to compare with PyTorch:
 *
 *   graph_ops_harness maxpool OUTDIR INDIR n c h w LAYOUT --kernel K --stride S --pad P
 *       lp_maxpool_init_padded, K x K window. In: x (n,c,h,w), dy (n,c,oh,ow). Out: y, dx.
 *   graph_ops_harness add OUTDIR INDIR n c h w LAYOUT [--relu] [--inplace | --inplace-b]
 *       lp_residual_add. In: a, b, dy (n,c,h,w). Out: y, dx. --inplace: y written over a,
 *       dx over dy; --inplace-b: y over b, dx over dy.
 *   graph_ops_harness gap OUTDIR INDIR n c h w LAYOUT
 *       lp_global_avgpool. In: x (n,c,h,w), dy (n,c). Out: y (n,c), dx (n,c,h,w).
 *   graph_ops_harness --impls OP n c h w LAYOUT [options]
 *       builds the op and prints its kernels, nothing run.
 *
 * LAYOUT: nchw, nhwc, nChw8c or nChw16c, the layout the op's input comes in (files are
 * NCHW row-major; the harness reorders). OUTDIR/info.txt: the op's layout and kernels,
 * and loupe's CPU level.
 * Exits 0 on success, 1 when the op fails, 2 on bad usage. */
#include "backend/graph_ops.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HARNESS_NAME "graph_ops_harness"
#include "op_harness.h"

typedef struct opts {
    const char *op, *out, *in, *layout;
    int n, c, h, w, kernel, stride, pad;
    bool relu, inplace, inplace_b;
} opts;

/* What the op built: its descriptors and kernels, for the reorders and info.txt. */
typedef struct built {
    lp_maxpool m;
    lp_residual_add r;
    lp_global_avgpool g;
    lp_md src_md, dst_md; /* of x / a, b and of y (gap: (n, c) plain) */
    int oh, ow;
    const char *fwd, *bwd;
} built;

static bool layout_md(const char *name, int n, int c, int h, int w, lp_md *md) {
    static const struct { const char *name; dnnl_format_tag_t tag; } tags[] = {
        {"nchw", dnnl_nchw}, {"nhwc", dnnl_nhwc}, {"nChw8c", dnnl_nChw8c}, {"nChw16c", dnnl_nChw16c}};
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        if (!strcmp(name, tags[i].name)) {
            dnnl_dims_t d = {n, c, h, w};
            return dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, tags[i].tag) == dnnl_success;
        }
    fprintf(stderr, "graph_ops_harness: unknown layout '%s'\n", name);
    return false;
}

static bool parse_int(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || end == s || v < 0 || v > 1 << 20) {
        fprintf(stderr, "graph_ops_harness: bad number '%s'\n", s);
        return false;
    }
    *out = (int)v;
    return true;
}

/* argv from the dims on: n c h w LAYOUT [options] */
static bool parse_shape_and_options(int argc, char **argv, opts *o) {
    if (argc < 5) return false;
    if (!parse_int(argv[0], &o->n) || !parse_int(argv[1], &o->c) || !parse_int(argv[2], &o->h) || !parse_int(argv[3], &o->w))
        return false;
    o->layout = argv[4];
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--kernel") && i + 1 < argc) {
            if (!parse_int(argv[++i], &o->kernel)) return false;
        } else if (!strcmp(argv[i], "--stride") && i + 1 < argc) {
            if (!parse_int(argv[++i], &o->stride)) return false;
        } else if (!strcmp(argv[i], "--pad") && i + 1 < argc) {
            if (!parse_int(argv[++i], &o->pad)) return false;
        } else if (!strcmp(argv[i], "--relu")) {
            o->relu = true;
        } else if (!strcmp(argv[i], "--inplace")) {
            o->inplace = true;
        } else if (!strcmp(argv[i], "--inplace-b")) {
            o->inplace = o->inplace_b = true;
        } else {
            fprintf(stderr, "graph_ops_harness: unknown option '%s'\n", argv[i]);
            return false;
        }
    }
    return true;
}

/* Builds the op of o->op, forward and backward. */
static lp_status build(const opts *o, built *b) {
    memset(b, 0, sizeof *b);
    if (!layout_md(o->layout, o->n, o->c, o->h, o->w, &b->src_md)) return lp_fail(LP_ERR_ARG, "bad layout");
    lp_status st;
    if (!strcmp(o->op, "maxpool")) {
        const int k = o->kernel, s = o->stride ? o->stride : k;
        if ((st = lp_maxpool_init_padded(&b->m, o->n, o->c, o->h, o->w, k, k, s, s, o->pad, o->pad, &b->src_md))) return st;
        if ((st = lp_maxpool_init_backward(&b->m))) return st;
        b->src_md = b->m.src_md, b->dst_md = b->m.dst_md;
        b->oh = b->m.oh, b->ow = b->m.ow;
        b->fwd = b->m.fwd.impl, b->bwd = b->m.bwd.impl;
    } else if (!strcmp(o->op, "add")) {
        if ((st = lp_residual_add_init(&b->r, &b->src_md, o->relu))) return st;
        if ((st = lp_residual_add_init_backward(&b->r))) return st;
        b->dst_md = b->r.data_md;
        b->oh = o->h, b->ow = o->w;
        b->fwd = b->r.fwd.impl, b->bwd = b->r.bwd.impl;
    } else if (!strcmp(o->op, "gap")) {
        if ((st = lp_global_avgpool_init(&b->g, &b->src_md))) return st;
        if ((st = lp_global_avgpool_init_backward(&b->g))) return st;
        int64_t d[2] = {o->n, o->c};
        b->dst_md = lp_md_plain(2, d);
        b->oh = b->ow = 1;
        b->fwd = b->g.fwd.impl, b->bwd = b->g.bwd.impl;
    } else {
        return lp_fail(LP_ERR_ARG, "unknown op '%s' (maxpool, add, gap)", o->op);
    }
    return LP_OK;
}

static void unbuild(built *b) {
    lp_maxpool_free(&b->m);
    lp_residual_add_free(&b->r);
    lp_global_avgpool_free(&b->g);
}

static size_t op_scratch(const opts *o, const built *b) {
    if (!strcmp(o->op, "maxpool")) return lp_maxpool_scratch_size(&b->m);
    if (!strcmp(o->op, "add")) return lp_residual_add_scratch_size(&b->r);
    return lp_global_avgpool_scratch_size(&b->g);
}

/* Reads INDIR/name (plain NCHW, count values) into a buffer in layout md. */
static void *load(const opts *o, const char *name, size_t count, const lp_md *plain, const lp_md *md) {
    float *p = alloc_f32(count);
    void *q = lp_aligned_alloc(lp_md_size(md));
    bool ok = p && q && read_f32(o->in, name, p, count) && !reorder(plain, p, md, q);
    free(p);
    if (!ok) {
        free(q);
        return NULL;
    }
    return q;
}

/* Writes a buffer in layout md to OUTDIR/name as plain NCHW. */
static bool store(const opts *o, const char *name, const void *q, size_t count, const lp_md *md, const lp_md *plain) {
    float *p = alloc_f32(count);
    bool ok = p && !reorder(md, q, plain, p) && write_f32(o->out, name, p, count);
    free(p);
    return ok;
}

static int run(const opts *o) {
    built b;
    if (build(o, &b)) return die("init");
    if (!ensure_scratch(op_scratch(o, &b))) return die("scratch");
    const size_t in_count = (size_t)o->n * o->c * o->h * o->w, out_count = (size_t)o->n * o->c * b.oh * b.ow;
    int64_t din[4] = {o->n, o->c, o->h, o->w}, dout[4] = {o->n, o->c, b.oh, b.ow};
    lp_md plain_in = lp_md_plain(4, din), plain_out = !strcmp(o->op, "gap") ? b.dst_md : lp_md_plain(4, dout);
    void *y = NULL, *dx = NULL;
    lp_status st = LP_OK;
    void *x = NULL, *a = NULL, *bb = NULL, *dy = NULL, *ws = NULL;
    if (!strcmp(o->op, "add")) {
        a = load(o, "a", in_count, &plain_in, &b.src_md);
        bb = load(o, "b", in_count, &plain_in, &b.src_md);
        dy = load(o, "dy", in_count, &plain_in, &b.src_md);
        if (!a || !bb || !dy) return 1;
        y = o->inplace_b ? bb : o->inplace ? a : lp_aligned_alloc(lp_md_size(&b.dst_md));
        dx = o->inplace ? dy : lp_aligned_alloc(lp_md_size(&b.src_md));
        if (!y || !dx) return die("alloc");
        st = lp_residual_add_forward(&b.r, S, a, bb, y, scratch);
        if (!st) st = lp_residual_add_backward(&b.r, S, dy, y, dx, scratch);
    } else {
        x = load(o, "x", in_count, &plain_in, &b.src_md);
        dy = load(o, "dy", out_count, &plain_out, &b.dst_md);
        y = lp_aligned_alloc(lp_md_size(&b.dst_md));
        dx = lp_aligned_alloc(lp_md_size(&b.src_md));
        ws = lp_aligned_alloc(b.m.ws_size ? b.m.ws_size : 64);
        if (!x || !dy) return 1;
        if (!y || !dx || !ws) return die("alloc");
        if (!strcmp(o->op, "maxpool")) {
            st = lp_maxpool_forward(&b.m, S, x, y, ws, scratch);
            if (!st) st = lp_maxpool_backward(&b.m, S, dy, ws, dx, scratch);
        } else {
            st = lp_global_avgpool_forward(&b.g, S, x, y, scratch);
            if (!st) st = lp_global_avgpool_backward(&b.g, S, dy, dx, scratch);
        }
    }
    if (!st) st = lp_dnnl_check(dnnl_stream_wait(S), "wait");
    if (st) return die("run");
    if (!store(o, "y", y, out_count, &b.dst_md, &plain_out) || !store(o, "dx", dx, in_count, &b.src_md, &plain_in)) return 1;
    char path[4096], buf[64];
    snprintf(path, sizeof path, "%s/info.txt", o->out);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    /* level: loupe's (lp_cpu_isa), which decides where its own kernels run */
    fprintf(f, "layout %s\nfwd %s\nbwd %s\nlevel %s\n", lp_md_layout(&b.src_md, buf, sizeof buf), b.fwd, b.bwd,
            lp_isa_name(lp_cpu_isa()));
    if (fclose(f)) return 1;
    if (!o->inplace) free(y), free(dx);
    free(x), free(a), free(bb), free(dy), free(ws);
    unbuild(&b);
    return 0;
}

int main(int argc, char **argv) {
    opts o = {0};
    const bool impls = argc > 1 && !strcmp(argv[1], "--impls");
    const int first = impls ? 3 : 4; /* where n c h w start */
    if (argc < first + 5) {
        fprintf(stderr, "usage: graph_ops_harness maxpool|add|gap OUTDIR INDIR n c h w LAYOUT [--kernel K] [--stride S] "
                        "[--pad P] [--relu] [--inplace | --inplace-b]\n"
                        "       graph_ops_harness --impls maxpool|add|gap n c h w LAYOUT [options]\n");
        return 2;
    }
    o.op = argv[impls ? 2 : 1];
    if (!impls) o.out = argv[2], o.in = argv[3];
    if (!parse_shape_and_options(argc - first, argv + first, &o)) return 2;
    if (!strcmp(o.op, "maxpool") && o.kernel < 1) {
        fprintf(stderr, "graph_ops_harness: maxpool needs --kernel\n");
        return 2;
    }
    if (lp_dnnl_stream_create(&S)) return die("stream");
    int rc;
    if (impls) {
        built b;
        if (build(&o, &b)) {
            printf("FAILED %s\n", lp_errmsg());
            return 1;
        }
        char buf[64];
        printf("layout=%s fwd=%s bwd=%s\n", lp_md_layout(&b.src_md, buf, sizeof buf), b.fwd, b.bwd);
        unbuild(&b);
        rc = 0;
    } else {
        rc = run(&o);
    }
    free(scratch);
    dnnl_stream_destroy(S);
    return rc;
}
