/* oneDNN plumbing: engine, streams, error mapping, memory descriptors, the
 * generic primitive wrapper and reorders. */
#include "backend.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static dnnl_engine_t g_engine;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;
static void engine_init(void) {
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) g_engine = NULL;
}

dnnl_engine_t lp_dnnl_engine(void) {
    pthread_once(&g_engine_once, engine_init);
    return g_engine;
}

static const char *dnnl_status_str(dnnl_status_t s) {
    switch (s) {
    case dnnl_success: return "success";
    case dnnl_out_of_memory: return "out of memory";
    case dnnl_invalid_arguments: return "invalid arguments";
    case dnnl_unimplemented: return "unimplemented (no kernel for this shape/layout)";
    case dnnl_iterator_ends: return "iterator ends";
    case dnnl_runtime_error: return "runtime error";
    case dnnl_not_required: return "not required";
    default: return "unknown status";
    }
}

lp_status lp_dnnl_check(dnnl_status_t s, const char *what) {
    if (s == dnnl_success) return LP_OK;
    if (s == dnnl_out_of_memory) return lp_fail(LP_ERR_NOMEM, "oneDNN: %s: out of memory", what);
    return lp_fail(LP_ERR_BACKEND, "oneDNN: %s: %s", what, dnnl_status_str(s));
}

lp_status lp_dnnl_stream_create(dnnl_stream_t *out) {
    dnnl_engine_t e = lp_dnnl_engine();
    if (!e) return lp_fail(LP_ERR_BACKEND, "oneDNN: cannot create the CPU engine");
    return lp_dnnl_check(dnnl_stream_create(out, e, dnnl_stream_default_flags), "stream create");
}

size_t lp_md_size(const lp_md *md) { return dnnl_memory_desc_get_size(md); }
bool lp_md_equal(const lp_md *a, const lp_md *b) { return dnnl_memory_desc_equal(a, b) != 0; }

lp_md lp_md_plain(int ndims, const int64_t *dims) {
    lp_md md;
    dnnl_dims_t d;
    static const dnnl_format_tag_t tags[] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde};
    for (int i = 0; i < ndims; i++) d[i] = dims[i];
    dnnl_memory_desc_init_by_tag(&md, ndims, d, dnnl_f32, tags[ndims]);
    return md;
}

lp_md lp_md_any(int ndims, const int64_t *dims) { return lp_md_any_dt(ndims, dims, dnnl_f32); }

lp_md lp_md_any_dt(int ndims, const int64_t *dims, dnnl_data_type_t dt) {
    lp_md md;
    dnnl_dims_t d;
    for (int i = 0; i < ndims; i++) d[i] = dims[i];
    dnnl_memory_desc_init_by_tag(&md, ndims, d, dt, dnnl_format_tag_any);
    return md;
}

const char *lp_md_layout(const lp_md *md, char *buf, size_t n) {
    if (md->format_kind != dnnl_blocked) {
        snprintf(buf, n, "%s", md->format_kind == dnnl_format_kind_any ? "any" : "opaque");
        return buf;
    }
    /* Order dims by stride (outermost first), letters a.. for dims, then inner blocks. */
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    int order[DNNL_MAX_NDIMS];
    for (int i = 0; i < md->ndims; i++) order[i] = i;
    for (int i = 0; i < md->ndims; i++)
        for (int j = i + 1; j < md->ndims; j++)
            if (b->strides[order[j]] > b->strides[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    size_t off = 0;
    for (int i = 0; i < md->ndims && off + 1 < n; i++) buf[off++] = (char)('a' + order[i]);
    for (int i = 0; i < b->inner_nblks && off + 8 < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%d%c", (int)b->inner_blks[i], 'a' + (int)b->inner_idxs[i]);
    buf[off < n ? off : n - 1] = 0;
    return buf;
}

lp_status lp_attr_create(dnnl_primitive_attr_t *attr, bool relu, bool sum) {
    lp_status st = lp_dnnl_check(dnnl_primitive_attr_create(attr), "attr create");
    if (st) return st;
    dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
    if (relu || sum) {
        dnnl_post_ops_t po;
        if ((st = lp_dnnl_check(dnnl_post_ops_create(&po), "post-ops create"))) {
            dnnl_primitive_attr_destroy(*attr);
            return st;
        }
        if (sum) dnnl_post_ops_append_sum(po, 1.0f);
        if (relu) dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
        st = lp_dnnl_check(dnnl_primitive_attr_set_post_ops(*attr, po), "set post-ops");
        dnnl_post_ops_destroy(po);
        if (st) {
            dnnl_primitive_attr_destroy(*attr);
            return st;
        }
    }
    return LP_OK;
}

lp_status lp_prim_create(lp_prim *pr, const_dnnl_primitive_desc_t pd, const int *arg_kinds, int nargs) {
    memset(pr, 0, sizeof *pr);
    dnnl_engine_t e = lp_dnnl_engine();
    lp_status st = lp_dnnl_check(dnnl_primitive_create(&pr->p, pd), "primitive create");
    if (st) return st;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(pr->impl, sizeof pr->impl, "%s", impl);
    for (int i = 0; i < nargs; i++) {
        const lp_md *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg_kinds[i]);
        if (!md) {
            lp_prim_free(pr);
            return lp_fail(LP_ERR_BACKEND, "oneDNN: primitive has no argument %d", arg_kinds[i]);
        }
        if ((st = lp_dnnl_check(dnnl_memory_create(&pr->mem[i], md, e, DNNL_MEMORY_NONE), "memory create"))) {
            lp_prim_free(pr);
            return st;
        }
        pr->arg_kind[i] = arg_kinds[i];
        pr->args[i] = (dnnl_exec_arg_t){arg_kinds[i], pr->mem[i]};
        pr->nargs = i + 1;
    }
    const lp_md *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    pr->scratch_size = smd ? lp_md_size(smd) : 0;
    if (pr->scratch_size) {
        if ((st = lp_dnnl_check(dnnl_memory_create(&pr->mem[nargs], smd, e, DNNL_MEMORY_NONE), "memory create"))) {
            lp_prim_free(pr);
            return st;
        }
        pr->args[nargs] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, pr->mem[nargs]};
    }
    return LP_OK;
}

lp_status lp_prim_exec(lp_prim *pr, dnnl_stream_t s, void *const *ptrs, void *scratch) {
    for (int i = 0; i < pr->nargs; i++) dnnl_memory_set_data_handle(pr->mem[i], ptrs[i]);
    int n = pr->nargs;
    if (pr->scratch_size) {
        dnnl_memory_set_data_handle(pr->mem[n], scratch);
        n++;
    }
    return lp_dnnl_check(dnnl_primitive_execute(pr->p, s, n, pr->args), pr->impl[0] ? pr->impl : "execute");
}

void lp_prim_free(lp_prim *pr) {
    if (!pr) return;
    for (int i = 0; i <= LP_PRIM_MAX_ARGS; i++)
        if (pr->mem[i]) dnnl_memory_destroy(pr->mem[i]);
    if (pr->p) dnnl_primitive_destroy(pr->p);
    memset(pr, 0, sizeof *pr);
}

lp_status lp_reorder_init(lp_reorder *r, const lp_md *src, const lp_md *dst, bool accumulate) {
    memset(r, 0, sizeof *r);
    r->src_md = *src;
    r->dst_md = *dst;
    dnnl_primitive_attr_t attr;
    lp_status st = lp_attr_create(&attr, false, accumulate);
    if (st) return st;
    dnnl_engine_t e = lp_dnnl_engine();
    dnnl_primitive_desc_t pd;
    st = lp_dnnl_check(dnnl_reorder_primitive_desc_create(&pd, src, e, dst, e, attr), "reorder");
    dnnl_primitive_attr_destroy(attr);
    if (st) return st;
    static const int kinds[] = {DNNL_ARG_FROM, DNNL_ARG_TO};
    st = lp_prim_create(&r->prim, pd, kinds, 2);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

lp_status lp_reorder_exec(lp_reorder *r, dnnl_stream_t s, const void *src, void *dst, void *scratch) {
    void *p[2] = {(void *)src, dst};
    return lp_prim_exec(&r->prim, s, p, scratch);
}

void lp_reorder_free(lp_reorder *r) {
    if (r) lp_prim_free(&r->prim);
}

/* Pixel-vector layouts: nhwc (one vector of C per pixel, planes = N) or nChw16c / nChw8c
 * (planes = N*C/16, vectors of 16, or of 8: AVX2's). *vec = values per pixel vector. */
bool lp_md_pixel_vectors(const lp_md *md, int *vec) {
    if (md->format_kind != dnnl_blocked || md->ndims != 4 || md->offset0 != 0) return false;
    for (int i = 0; i < 4; i++)
        if (md->padded_dims[i] != md->dims[i]) return false;
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    const int64_t n = md->dims[0], c = md->dims[1], h = md->dims[2], w = md->dims[3];
    if (b->inner_nblks == 0 && b->strides[1] == 1 && b->strides[3] == c && b->strides[2] == w * c && b->strides[0] == h * w * c) {
        *vec = (int)c;
        return n > 0;
    }
    const int64_t v = b->inner_nblks == 1 ? b->inner_blks[0] : 0;
    if ((v == 16 || v == 8) && b->inner_idxs[0] == 1 && c % v == 0 && b->strides[3] == v && b->strides[2] == w * v &&
        b->strides[1] == h * w * v && b->strides[0] == c * h * w) {
        *vec = (int)v;
        return n > 0;
    }
    return false;
}

lp_status lp_pd_create(dnnl_primitive_desc_t *pd, const_dnnl_op_desc_t desc, const_dnnl_primitive_desc_t hint,
                       const char *what) {
    dnnl_primitive_attr_t attr;
    lp_status st = lp_attr_create(&attr, false, false);
    if (st) return st;
    st = lp_dnnl_check(dnnl_primitive_desc_create(pd, desc, attr, lp_dnnl_engine(), hint), what);
    dnnl_primitive_attr_destroy(attr);
    return st;
}
