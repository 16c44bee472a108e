/* ONNX import of a VGG graph.
 *
 * Why a small protobuf wire-format reader and not protobuf-c: we need five
 * messages (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto)
 * and a handful of their fields; the reader works zero-copy on an mmap of the
 * file, so a 528 MB VGG16 costs its output tensors and nothing more (protobuf-c
 * would copy every raw_data blob into its own allocation: ~2x the file), and
 * the build does not depend on onnx.proto (which Debian ships only inside
 * python3-onnx) or on a code generator. Every length and offset is checked
 * against the enclosing message; malformed input is an LP_ERR_FORMAT.
 *
 * Field numbers (onnx.proto, IR version 3..9):
 *   ModelProto:  1 ir_version, 7 graph
 *   GraphProto:  1 node, 5 initializer, 11 input, 12 output (ValueInfoProto: 1 name)
 *   NodeProto:   1 input, 2 output, 3 name, 4 op_type, 5 attribute
 *   AttributeProto: 1 name, 2 f, 3 i, 5 t, 8 ints
 *   TensorProto: 1 dims, 2 data_type, 4 float_data, 5 int32_data, 8 name,
 *                9 raw_data, 10 double_data, 13 external_data, 14 data_location
 *
 * Layers are found by walking the graph from its data input along the single
 * chain of consumers, never by initializer names: the base (Conv, Relu,
 * MaxPool), then the head: AveragePool 1x1 (torchvision's avgpool at 224),
 * GlobalAveragePool or ReduceMean over H, W, Flatten/Reshape/Squeeze, dense
 * layers (Gemm, MatMul+Add) each with its Relu and Dropout, Identity, Softmax.
 * A tensor feeding two compute nodes (a residual connection, a second output)
 * is an error, as is a spatial node after the flatten. Each conv's torchvision
 * features index comes from the convs and pools before it; the input size from
 * the data input's shape when it is fixed.
 * Assumes a little-endian host (raw_data is little-endian). */
#include "weights.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct slice {
    const uint8_t *p;
    size_t n;
} slice;

typedef struct pb {
    const uint8_t *p, *end;
} pb;

static bool pb_varint(pb *b, uint64_t *v) {
    uint64_t r = 0;
    for (int s = 0; s < 64; s += 7) {
        if (b->p >= b->end) return false;
        uint8_t c = *b->p++;
        r |= (uint64_t)(c & 0x7f) << s;
        if (!(c & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

/* Next field: number, wire type, and for length-delimited its payload. */
static bool pb_next(pb *b, uint32_t *field, int *wt, uint64_t *val, slice *bytes) {
    uint64_t key;
    *val = 0;
    bytes->p = NULL;
    bytes->n = 0;
    if (!pb_varint(b, &key)) return false;
    *field = (uint32_t)(key >> 3);
    *wt = (int)(key & 7);
    if (*field == 0) return false;
    switch (*wt) {
    case 0: return pb_varint(b, val);
    case 1:
        if (b->end - b->p < 8) return false;
        memcpy(val, b->p, 8);
        b->p += 8;
        return true;
    case 5: {
        if (b->end - b->p < 4) return false;
        uint32_t u;
        memcpy(&u, b->p, 4);
        *val = u;
        b->p += 4;
        return true;
    }
    case 2: {
        uint64_t len;
        if (!pb_varint(b, &len) || len > (uint64_t)(b->end - b->p)) return false;
        bytes->p = b->p;
        bytes->n = (size_t)len;
        b->p += len;
        return true;
    }
    default: return false; /* groups (3, 4) are not used by ONNX */
    }
}

/* An absent field is {NULL, 0}: NULL + 0 is undefined in C (UBSan: pointer-overflow), so no arithmetic then. */
static pb pb_of(slice s) { return (pb){s.p, s.n ? s.p + s.n : s.p}; }
static bool slice_eq(slice a, const char *s) { return a.n == strlen(s) && (a.n == 0 || memcmp(a.p, s, a.n) == 0); }
static bool slice_same(slice a, slice b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }
/* Copies a name for messages; bytes outside printable ASCII become '?'. */
static void slice_str(slice a, char *buf, size_t n) {
    size_t k = 0;
    for (; k + 1 < n && k < a.n && k < 200; k++) buf[k] = a.p[k] >= 0x20 && a.p[k] < 0x7f ? (char)a.p[k] : '?';
    if (n) buf[k] = 0;
}

/* ---- parsed graph ---------------------------------------------------------- */
#define MAX_IO 8
typedef struct onode {
    slice msg, op, name;
    int nin, nout;
    slice in[MAX_IO], out[MAX_IO];
} onode;

typedef struct otensor {
    slice msg, name;
} otensor;

typedef struct ograph {
    const char *path;
    onode *nodes;
    int nnodes, capnodes;
    otensor *inits;
    int ninits, capinits;
    slice inputs[64], input_info[64], outputs[16];
    int ninputs, noutputs;
} ograph;

static lp_status bad(const ograph *g, const char *what) {
    return lp_fail(LP_ERR_FORMAT, "%s: malformed ONNX protobuf (%s); the file is truncated or corrupt", g->path, what);
}

static void *grow(void *p, int *cap, size_t elem) {
    int c = *cap ? *cap * 2 : 64;
    void *q = realloc(p, (size_t)c * elem);
    if (q) *cap = c;
    return q;
}

static lp_status parse_node(ograph *g, slice m) {
    if (g->nnodes == g->capnodes) {
        onode *q = grow(g->nodes, &g->capnodes, sizeof *q);
        if (!q) return lp_fail(LP_ERR_NOMEM, "out of memory");
        g->nodes = q;
    }
    onode *n = &g->nodes[g->nnodes];
    memset(n, 0, sizeof *n);
    n->msg = m;
    pb b = pb_of(m);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end) {
        if (!pb_next(&b, &f, &wt, &v, &s)) return bad(g, "node");
        if (wt != 2) continue;
        if (f == 1) {
            if (n->nin == MAX_IO) return lp_fail(LP_ERR_FORMAT, "%s: node with more than %d inputs: not a VGG graph", g->path, MAX_IO);
            n->in[n->nin++] = s;
        } else if (f == 2) {
            if (n->nout == MAX_IO) return lp_fail(LP_ERR_FORMAT, "%s: node with more than %d outputs: not a VGG graph", g->path, MAX_IO);
            n->out[n->nout++] = s;
        } else if (f == 3) n->name = s;
        else if (f == 4) n->op = s;
    }
    g->nnodes++;
    return LP_OK;
}

static lp_status parse_tensor_name(ograph *g, slice m, slice *name) {
    pb b = pb_of(m);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    name->p = m.p;
    name->n = 0;
    while (b.p < b.end) {
        if (!pb_next(&b, &f, &wt, &v, &s)) return bad(g, "tensor");
        if (f == 8 && wt == 2) *name = s;
    }
    return LP_OK;
}

static lp_status parse_graph(ograph *g, slice m) {
    pb b = pb_of(m);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    lp_status st = LP_OK;
    while (b.p < b.end && !st) {
        if (!pb_next(&b, &f, &wt, &v, &s)) return bad(g, "graph");
        if (wt != 2) continue;
        if (f == 1) st = parse_node(g, s);
        else if (f == 5) {
            if (g->ninits == g->capinits) {
                otensor *q = grow(g->inits, &g->capinits, sizeof *q);
                if (!q) return lp_fail(LP_ERR_NOMEM, "out of memory");
                g->inits = q;
            }
            g->inits[g->ninits].msg = s;
            st = parse_tensor_name(g, s, &g->inits[g->ninits].name);
            g->ninits++;
        } else if (f == 11 || f == 12) {
            pb vb = pb_of(s);
            slice nm = {0};
            uint32_t f2;
            int wt2;
            uint64_t v2;
            slice s2;
            while (vb.p < vb.end) {
                if (!pb_next(&vb, &f2, &wt2, &v2, &s2)) return bad(g, "value info");
                if (f2 == 1 && wt2 == 2) nm = s2;
            }
            if (f == 11 && g->ninputs < 64) {
                g->input_info[g->ninputs] = s;
                g->inputs[g->ninputs++] = nm;
            }
            if (f == 12 && g->noutputs < 16) g->outputs[g->noutputs++] = nm;
        }
    }
    return st;
}

/* ---- attributes -------------------------------------------------------------- */
/* Finds attribute `name`; returns its message. */
static bool node_attr(const onode *n, const char *name, slice *attr) {
    pb b = pb_of(n->msg);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end) {
        if (!pb_next(&b, &f, &wt, &v, &s)) return false;
        if (f != 5 || wt != 2) continue;
        pb a = pb_of(s);
        uint32_t f2;
        int wt2;
        uint64_t v2;
        slice s2;
        while (a.p < a.end) {
            if (!pb_next(&a, &f2, &wt2, &v2, &s2)) break;
            if (f2 == 1 && wt2 == 2 && slice_eq(s2, name)) {
                *attr = s;
                return true;
            }
        }
    }
    return false;
}

static int64_t attr_int(const onode *n, const char *name, int64_t dflt) {
    slice a;
    if (!node_attr(n, name, &a)) return dflt;
    pb b = pb_of(a);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end && pb_next(&b, &f, &wt, &v, &s))
        if (f == 3 && wt == 0) return (int64_t)v;
    return dflt;
}

static float attr_float(const onode *n, const char *name, float dflt) {
    slice a;
    if (!node_attr(n, name, &a)) return dflt;
    pb b = pb_of(a);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end && pb_next(&b, &f, &wt, &v, &s))
        if (f == 2 && wt == 5) {
            uint32_t u = (uint32_t)v;
            float x;
            memcpy(&x, &u, 4);
            return x;
        }
    return dflt;
}

/* ints (field 8), packed or not; returns the count (-1: absent). */
static int attr_ints(const onode *n, const char *name, int64_t *out, int max) {
    slice a;
    if (!node_attr(n, name, &a)) return -1;
    pb b = pb_of(a);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    int k = 0;
    while (b.p < b.end && pb_next(&b, &f, &wt, &v, &s)) {
        if (f != 8) continue;
        if (wt == 0) {
            if (k < max) out[k] = (int64_t)v;
            k++;
        } else if (wt == 2) {
            pb p = pb_of(s);
            uint64_t x;
            while (p.p < p.end && pb_varint(&p, &x)) {
                if (k < max) out[k] = (int64_t)x;
                k++;
            }
        }
    }
    return k;
}

static bool attr_tensor(const onode *n, const char *name, slice *t) {
    slice a;
    if (!node_attr(n, name, &a)) return false;
    pb b = pb_of(a);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end && pb_next(&b, &f, &wt, &v, &s))
        if (f == 5 && wt == 2) {
            *t = s;
            return true;
        }
    return false;
}

/* ---- tensors -------------------------------------------------------------- */
enum { ONNX_FLOAT = 1, ONNX_FLOAT16 = 10, ONNX_DOUBLE = 11, ONNX_BFLOAT16 = 16 };

/* Decodes a TensorProto into a new F32 tensor; name is for messages. Pages of
 * raw_data are dropped from the mapping once copied. */
static lp_status tensor_to_f32(const ograph *g, slice m, const char *name, lp_tensor *out) {
    pb b = pb_of(m);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s, raw = {0};
    int64_t dims[LP_MAX_DIMS];
    int nd = 0;
    int64_t dtype = 0, location = 0;
    bool has_raw = false, external = false;
    char ext_loc[128] = "";
    size_t nfloat = 0, nint32 = 0, ndouble = 0;
    while (b.p < b.end) {
        if (!pb_next(&b, &f, &wt, &v, &s)) return bad(g, "tensor");
        switch (f) {
        case 1:
            if (wt == 0) {
                if (nd == LP_MAX_DIMS) return lp_fail(LP_ERR_FORMAT, "%s: tensor %s has more than %d dims", g->path, name, LP_MAX_DIMS);
                dims[nd++] = (int64_t)v;
            } else if (wt == 2) {
                pb p = pb_of(s);
                uint64_t x;
                while (p.p < p.end) {
                    if (!pb_varint(&p, &x)) return bad(g, "dims");
                    if (nd == LP_MAX_DIMS) return lp_fail(LP_ERR_FORMAT, "%s: tensor %s has more than %d dims", g->path, name, LP_MAX_DIMS);
                    dims[nd++] = (int64_t)x;
                }
            }
            break;
        case 2: dtype = (int64_t)v; break;
        case 4: nfloat += wt == 2 ? s.n / 4 : 1; break;
        case 5:
            if (wt == 0) nint32++;
            else if (wt == 2) {
                pb p = pb_of(s);
                uint64_t x;
                while (p.p < p.end && pb_varint(&p, &x)) nint32++;
            }
            break;
        case 9:
            raw = s;
            has_raw = true;
            break;
        case 10: ndouble += wt == 2 ? s.n / 8 : 1; break;
        case 13: {
            external = true;
            pb e = pb_of(s);
            slice k = {0}, val = {0};
            uint32_t f2;
            int wt2;
            uint64_t v2;
            slice s2;
            while (e.p < e.end && pb_next(&e, &f2, &wt2, &v2, &s2)) {
                if (f2 == 1) k = s2;
                if (f2 == 2) val = s2;
            }
            if (slice_eq(k, "location")) slice_str(val, ext_loc, sizeof ext_loc);
            break;
        }
        case 14: location = (int64_t)v; break;
        default: break;
        }
    }
    if (external || location == 1)
        return lp_fail(LP_ERR_FORMAT, "%s: tensor %s keeps its data in an external file%s%s%s: not supported; re-save with all tensors inside the model "
                       "(python3: m = onnx.load(F); onnx.save_model(m, 'single.onnx', save_as_external_data=False))",
                       g->path, name, ext_loc[0] ? " ('" : "", ext_loc, ext_loc[0] ? "')" : "");
    int64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        if (dims[i] < 0 || dims[i] > ((int64_t)1 << 40)) return lp_fail(LP_ERR_FORMAT, "%s: tensor %s has a bad dimension %lld", g->path, name, (long long)dims[i]);
        numel *= dims[i];
        if (numel > ((int64_t)1 << 40)) return lp_fail(LP_ERR_FORMAT, "%s: tensor %s is too large", g->path, name);
    }
    size_t esz = dtype == ONNX_FLOAT ? 4 : dtype == ONNX_DOUBLE ? 8 : (dtype == ONNX_FLOAT16 || dtype == ONNX_BFLOAT16) ? 2 : 0;
    if (!esz) return lp_fail(LP_ERR_FORMAT, "%s: tensor %s has ONNX data type %lld (expected float, float16, bfloat16 or double)", g->path, name, (long long)dtype);
    size_t have = has_raw ? raw.n / esz : dtype == ONNX_FLOAT ? nfloat : dtype == ONNX_DOUBLE ? ndouble : nint32;
    if ((has_raw && raw.n % esz) || have != (size_t)numel)
        return lp_fail(LP_ERR_FORMAT, "%s: tensor %s has %zu values for %lld elements of its shape; the file is truncated or corrupt", g->path, name,
                       have, (long long)numel);
    lp_status st = lp_tensor_alloc(out, LP_F32, nd, dims);
    if (st) return st;
    float *o = out->data;
    if (has_raw) {
        /* the mapping is read-only and private: dropping pages once copied only
         * frees memory (every 16 MB, so a 411 MB fc1 never sits twice in RAM) */
        long pg = sysconf(_SC_PAGESIZE);
        uintptr_t done = ((uintptr_t)raw.p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
        const uint8_t *p = raw.p;
        for (int64_t i = 0; i < numel; i++, p += esz) {
            if ((i & ((1 << 22) - 1)) == 0 && i) {
                uintptr_t upto = (uintptr_t)p & ~((uintptr_t)pg - 1);
                if (upto > done) madvise((void *)done, upto - done, MADV_DONTNEED);
                if (upto > done) done = upto;
            }
            if (esz == 4) memcpy(&o[i], p, 4);
            else if (esz == 8) {
                double d;
                memcpy(&d, p, 8);
                o[i] = (float)d;
            } else {
                uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
                o[i] = dtype == ONNX_FLOAT16 ? lp_f16_to_f32(h) : lp_bf16_to_f32(h);
            }
        }
        uintptr_t a1 = ((uintptr_t)raw.p + raw.n) & ~((uintptr_t)pg - 1);
        if (a1 > done) madvise((void *)done, a1 - done, MADV_DONTNEED);
    } else {
        int64_t k = 0;
        b = pb_of(m);
        uint32_t want = dtype == ONNX_FLOAT ? 4 : dtype == ONNX_DOUBLE ? 10 : 5;
        while (b.p < b.end && pb_next(&b, &f, &wt, &v, &s)) {
            if (f != want) continue;
            if (wt == 2) {
                pb p = pb_of(s);
                while (p.p < p.end && k < numel) {
                    if (want == 4) {
                        memcpy(&o[k++], p.p, 4);
                        p.p += 4;
                    } else if (want == 10) {
                        double d;
                        memcpy(&d, p.p, 8);
                        o[k++] = (float)d;
                        p.p += 8;
                    } else {
                        uint64_t x;
                        if (!pb_varint(&p, &x)) break;
                        o[k++] = dtype == ONNX_FLOAT16 ? lp_f16_to_f32((uint16_t)x) : lp_bf16_to_f32((uint16_t)x);
                    }
                }
            } else if (k < numel) {
                if (want == 4) {
                    uint32_t u = (uint32_t)v;
                    memcpy(&o[k++], &u, 4);
                } else if (want == 10) {
                    double d;
                    memcpy(&d, &v, 8);
                    o[k++] = (float)d;
                } else {
                    o[k++] = dtype == ONNX_FLOAT16 ? lp_f16_to_f32((uint16_t)v) : lp_bf16_to_f32((uint16_t)v);
                }
            }
        }
        if (k != numel) {
            lp_tensor_free(out);
            return lp_fail(LP_ERR_FORMAT, "%s: tensor %s: could not decode its %lld values", g->path, name, (long long)numel);
        }
    }
    return LP_OK;
}

static const otensor *find_init(const ograph *g, slice name) {
    for (int i = 0; i < g->ninits; i++)
        if (slice_same(g->inits[i].name, name)) return &g->inits[i];
    return NULL;
}

static const onode *producer(const ograph *g, slice name) {
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].nout; j++)
            if (slice_same(g->nodes[i].out[j], name)) return &g->nodes[i];
    return NULL;
}

/* A weight operand: an initializer, or a Constant / Identity of one. */
static bool resolve_weight(const ograph *g, slice name, slice *msg, int depth) {
    const otensor *t = find_init(g, name);
    if (t) {
        *msg = t->msg;
        return true;
    }
    if (depth > 8) return false;
    const onode *p = producer(g, name);
    if (!p) return false;
    if (slice_eq(p->op, "Constant")) return attr_tensor(p, "value", msg);
    if (slice_eq(p->op, "Identity") && p->nin == 1) return resolve_weight(g, p->in[0], msg, depth + 1);
    return false;
}

static bool is_weight(const ograph *g, slice name) {
    slice m;
    return resolve_weight(g, name, &m, 0);
}

static lp_status load_weight(const ograph *g, const onode *n, int k, lp_tensor *out, char *nm, size_t nmn) {
    slice m;
    slice_str(n->in[k], nm, nmn);
    if (k >= n->nin || !resolve_weight(g, n->in[k], &m, 0)) {
        char nn[128];
        slice_str(n->name, nn, sizeof nn);
        return lp_fail(LP_ERR_FORMAT, "%s: input %d ('%s') of node '%s' is not a constant weight: not a plain VGG graph", g->path, k, nm, nn);
    }
    return tensor_to_f32(g, m, nm, out);
}

/* Compute nodes that consume `name` (Shape nodes and weight-only users are side branches). */
static int consumers(const ograph *g, slice name, const onode **first, const onode **second) {
    int c = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const onode *n = &g->nodes[i];
        if (slice_eq(n->op, "Shape")) continue;
        for (int j = 0; j < n->nin; j++)
            if (slice_same(n->in[j], name)) {
                if (c == 0) *first = n;
                else if (c == 1) *second = n;
                c++;
                break;
            }
    }
    return c;
}

static bool is_output(const ograph *g, slice name) {
    for (int i = 0; i < g->noutputs; i++)
        if (slice_same(g->outputs[i], name)) return true;
    return false;
}

static void transpose2(const lp_tensor *src, lp_tensor *dst) {
    /* [r, c] -> [c, r] */
    int64_t r = src->shape[0], c = src->shape[1];
    const float *s = src->data;
    float *d = dst->data;
    for (int64_t i0 = 0; i0 < r; i0 += 64)
        for (int64_t j0 = 0; j0 < c; j0 += 64)
            for (int64_t i = i0; i < r && i < i0 + 64; i++)
                for (int64_t j = j0; j < c && j < j0 + 64; j++) d[j * r + i] = s[i * c + j];
}

/* Bias operand: rank 1 [out] or [1, out]. */
static lp_status bias_vector(const ograph *g, lp_tensor *b, int64_t nout, const char *nm) {
    if (b->ndim == 2 && b->shape[0] == 1) {
        b->shape[0] = b->shape[1];
        b->ndim = 1;
    }
    if (b->ndim != 1 || b->shape[0] != nout) {
        char s[64];
        return lp_fail(LP_ERR_SHAPE, "%s: bias %s has shape %s, expected (%lld)", g->path, nm, lp_shape_str(b, s, sizeof s), (long long)nout);
    }
    return LP_OK;
}

/* "Op 'name'" of a node, for messages. */
static void node_label(const onode *n, char *buf, size_t cap) {
    char op[64], nn[128];
    slice_str(n->op, op, sizeof op);
    slice_str(n->name, nn, sizeof nn);
    snprintf(buf, cap, "%s '%s'", op, nn);
}

/* H and W of the data input when the graph fixes them (NCHW dims > 0). */
static void input_hw(slice vi, int *h, int *w) {
    int64_t dims[8];
    int nd = 0;
    pb b = pb_of(vi);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    *h = *w = 0;
    /* ValueInfoProto.type (2) -> TypeProto.tensor_type (1) -> .shape (2) -> .dim (1): dim_value (1) */
    slice type = {0}, tensor = {0}, shape = {0};
    while (b.p < b.end && pb_next(&b, &f, &wt, &v, &s))
        if (f == 2 && wt == 2) type = s;
    for (pb t = pb_of(type); t.p < t.end && pb_next(&t, &f, &wt, &v, &s);)
        if (f == 1 && wt == 2) tensor = s;
    for (pb t = pb_of(tensor); t.p < t.end && pb_next(&t, &f, &wt, &v, &s);)
        if (f == 2 && wt == 2) shape = s;
    for (pb t = pb_of(shape); t.p < t.end && pb_next(&t, &f, &wt, &v, &s);) {
        if (f != 1 || wt != 2 || nd == 8) continue;
        int64_t val = 0;
        for (pb d = pb_of(s); d.p < d.end;) {
            uint32_t f2;
            int wt2;
            uint64_t v2;
            slice s2;
            if (!pb_next(&d, &f2, &wt2, &v2, &s2)) break;
            if (f2 == 1 && wt2 == 0) val = (int64_t)v2;
        }
        dims[nd++] = val;
    }
    if (nd == 4 && dims[2] > 0 && dims[3] > 0 && dims[2] <= 65536 && dims[3] <= 65536) {
        *h = (int)dims[2];
        *w = (int)dims[3];
    }
}

typedef struct walker {
    ograph *g;
    lp_wlayers *L;
    int convs, pools, denses, pools_at_first_dense, nconv_nodes;
    bool flat;          /* past the Flatten or the global pooling: the head */
    bool after_dense;   /* the last layer with weights is a dense one: a Relu or Dropout now belongs to it */
    char flat_node[200];
} walker;

static lp_wlayer *last_layer(walker *W) { return &W->L->items[W->L->count - 1]; }

/* A dense layer: the weight (input 1 of n) is [in, out], or [out, in] with
 * trans_b, times alpha; the bias is input bk of node bn (none: bn NULL), times beta. */
static lp_status push_dense(walker *W, const onode *n, bool trans_b, float alpha, const onode *bn, int bk, float beta) {
    ograph *g = W->g;
    char label[200], wn[256], bname[256] = "", sshape[64] = "";
    node_label(n, label, sizeof label);
    if (!W->flat)
        return lp_fail(LP_ERR_FORMAT, "%s: %s is a dense layer on the feature map (no Flatten or GlobalAveragePool before it): not a VGG head", g->path, label);
    lp_tensor B = {0}, C = {0}, w = {0};
    lp_status st = load_weight(g, n, 1, &B, wn, sizeof wn);
    if (!st && B.ndim != 2) st = lp_fail(LP_ERR_SHAPE, "%s: the weight %s of %s is not a matrix", g->path, wn, label);
    if (!st) lp_shape_str(&B, sshape, sizeof sshape);
    if (!st && trans_b) {
        w = B;
        memset(&B, 0, sizeof B);
    } else if (!st) {
        st = lp_tensor_alloc(&w, LP_F32, 2, (int64_t[]){B.shape[1], B.shape[0]}); /* ours is [out, in] */
        if (!st) transpose2(&B, &w);
    }
    lp_tensor_free(&B);
    if (!st && alpha != 1.0f)
        for (int64_t i = 0; i < lp_tensor_numel(&w); i++) ((float *)w.data)[i] *= alpha;
    if (!st && bn) {
        st = load_weight(g, bn, bk, &C, bname, sizeof bname);
        if (!st) st = bias_vector(g, &C, w.shape[0], bname);
        if (!st && beta != 1.0f)
            for (int64_t i = 0; i < lp_tensor_numel(&C); i++) ((float *)C.data)[i] *= beta;
    }
    if (!st) {
        if (W->pools_at_first_dense < 0) W->pools_at_first_dense = W->pools;
        st = lp_wlayers_push(W->L, LP_WLAYER_DENSE, wn, sshape, -1, &w, C.data ? &C : NULL, bname);
    }
    if (!st) {
        lp_wlayer *y = last_layer(W);
        y->relu = 0;
        y->dropout = 0.0f;
        snprintf(y->node, sizeof y->node, "%s", label);
    }
    lp_tensor_free(&C);
    lp_tensor_free(&w);
    W->denses++;
    W->after_dense = true;
    return st;
}

static lp_status push_conv(walker *W, const onode *n, const char *label) {
    ograph *g = W->g;
    int64_t v[8];
    int k;
    if (attr_int(n, "group", 1) != 1) return lp_fail(LP_ERR_FORMAT, "%s: %s is grouped: not a VGG conv", g->path, label);
    if ((k = attr_ints(n, "strides", v, 8)) > 0 && (v[0] != 1 || (k > 1 && v[1] != 1)))
        return lp_fail(LP_ERR_FORMAT, "%s: %s has stride %lld: VGG convs have stride 1", g->path, label, (long long)v[0]);
    if ((k = attr_ints(n, "dilations", v, 8)) > 0 && (v[0] != 1 || (k > 1 && v[1] != 1)))
        return lp_fail(LP_ERR_FORMAT, "%s: %s is dilated: not a VGG conv", g->path, label);
    k = attr_ints(n, "pads", v, 8);
    for (int i = 0; i < k && i < 8; i++)
        if (v[i] != 1) return lp_fail(LP_ERR_FORMAT, "%s: %s has padding %lld: VGG convs pad by 1", g->path, label, (long long)v[i]);
    slice ap;
    if (k < 0 && !node_attr(n, "auto_pad", &ap)) /* SAME_UPPER/SAME_LOWER is padding 1 for 3x3, stride 1 */
        return lp_fail(LP_ERR_FORMAT, "%s: %s has no padding: VGG convs pad by 1", g->path, label);
    lp_tensor w = {0}, b = {0};
    char wn[256], bn[256] = "", sshape[64];
    lp_status st = load_weight(g, n, 1, &w, wn, sizeof wn);
    if (!st && n->nin > 2 && n->in[2].n) st = load_weight(g, n, 2, &b, bn, sizeof bn);
    if (!st && w.ndim != 4) st = lp_fail(LP_ERR_SHAPE, "%s: the weight %s of %s is not 4-D", g->path, wn, label);
    if (!st && b.data) st = bias_vector(g, &b, w.shape[0], bn);
    if (!st) {
        lp_shape_str(&w, sshape, sizeof sshape);
        st = lp_wlayers_push(W->L, LP_WLAYER_CONV, wn, sshape, 2 * W->convs + W->pools, &w, b.data ? &b : NULL, bn);
    }
    lp_tensor_free(&w);
    lp_tensor_free(&b);
    W->convs++;
    W->after_dense = false;
    return st;
}

/* A Dropout's probability: the ratio attribute (opset < 12) or its constant
 * second input; 0.5 (the default) when neither says. */
static float dropout_ratio(const ograph *g, const onode *n) {
    float r = attr_float(n, "ratio", -1.0f);
    slice m;
    if (r < 0 && n->nin > 1 && n->in[1].n && resolve_weight(g, n->in[1], &m, 0)) {
        lp_tensor t = {0};
        if (!tensor_to_f32(g, m, "ratio", &t) && lp_tensor_numel(&t) == 1) r = ((float *)t.data)[0];
        lp_tensor_free(&t);
    }
    return r >= 0.0f && r < 1.0f ? r : 0.5f;
}

/* ReduceMean over H and W (axes 2, 3), as some exporters write a global average pooling. */
static bool is_spatial_mean(const ograph *g, const onode *n) {
    if (!slice_eq(n->op, "ReduceMean")) return false;
    int64_t ax[8];
    int k = attr_ints(n, "axes", ax, 8);
    slice m;
    if (k < 0 && n->nin > 1 && resolve_weight(g, n->in[1], &m, 0)) {
        /* opset 18: axes as an int64 input; read its raw_data */
        pb b = pb_of(m);
        uint32_t f;
        int wt;
        uint64_t v;
        slice s;
        k = 0;
        while (b.p < b.end && pb_next(&b, &f, &wt, &v, &s))
            if (f == 9 && wt == 2)
                for (size_t i = 0; i + 8 <= s.n && k < 8; i += 8) memcpy(&ax[k++], s.p + i, 8);
    }
    if (k != 2) return false;
    for (int i = 0; i < 2; i++)
        if (ax[i] < 0) ax[i] += 4;
    return (ax[0] == 2 && ax[1] == 3) || (ax[0] == 3 && ax[1] == 2);
}

static lp_status walk(ograph *g, lp_wlayers *L) {
    /* the data input: a graph input that is not an initializer */
    slice cur = {0};
    int ndata = 0;
    for (int i = 0; i < g->ninputs; i++)
        if (!find_init(g, g->inputs[i])) {
            cur = g->inputs[i];
            input_hw(g->input_info[i], &L->in_h, &L->in_w);
            ndata++;
        }
    if (ndata != 1)
        return lp_fail(LP_ERR_FORMAT, "%s: ONNX graph has %d data inputs (expected 1 image input): not a VGG classifier", g->path, ndata);
    if (g->noutputs != 1) {
        char names[600] = "", nm[128], from[200];
        for (int i = 0, off = 0; i < g->noutputs && i < 4 && off < (int)sizeof names; i++) {
            const onode *pn = producer(g, g->outputs[i]);
            slice_str(g->outputs[i], nm, sizeof nm);
            if (pn) node_label(pn, from, sizeof from);
            off += snprintf(names + off, sizeof names - (size_t)off, "%s'%s'%s%s", i ? ", " : "", nm, pn ? " from " : "", pn ? from : "");
        }
        return lp_fail(LP_ERR_FORMAT, "%s: ONNX graph has %d outputs (%s): loupe imports a classifier with one output, its class scores", g->path,
                       g->noutputs, names);
    }
    walker W = {.g = g, .L = L, .pools_at_first_dense = -1};
    /* what kind of network: residual Add of two activations, conv count */
    int nmerge = 0;
    const onode *merge = NULL;
    for (int i = 0; i < g->nnodes; i++) {
        const onode *n = &g->nodes[i];
        W.nconv_nodes += slice_eq(n->op, "Conv");
        if (slice_eq(n->op, "Add") || slice_eq(n->op, "Sum")) {
            int act = 0;
            for (int j = 0; j < n->nin; j++) act += !is_weight(g, n->in[j]) && producer(g, n->in[j]) && !slice_eq(producer(g, n->in[j])->op, "Constant");
            if (act >= 2) {
                nmerge++;
                if (!merge) merge = n;
            }
        }
    }
    if (nmerge) {
        char op[32], nn[128];
        slice_str(merge->op, op, sizeof op);
        slice_str(merge->name, nn, sizeof nn);
        return lp_fail(LP_ERR_FORMAT, "%s: graph has %d Conv nodes and %d %s nodes joining two branches (e.g. '%s'): a ResNet-like network, "
                       "not a sequential VGG16/VGG19", g->path, W.nconv_nodes, nmerge, op, nn);
    }
    char nm[256], label[200], op[64];
    lp_status st = LP_OK;
    for (int step = 0; step <= g->nnodes && !st; step++) {
        const onode *n = NULL, *n2 = NULL;
        int c = consumers(g, cur, &n, &n2);
        if (c == 0) {
            if (is_output(g, cur)) break;
            slice_str(cur, nm, sizeof nm);
            return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' is used by no node and is not a graph output: malformed graph", g->path, nm);
        }
        if (c > 1) {
            char a[200], b2[200];
            slice_str(cur, nm, sizeof nm);
            node_label(n, a, sizeof a);
            node_label(n2, b2, sizeof b2);
            return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' feeds %d nodes (%s, %s): a branching graph, not a sequential VGG16/VGG19 with one output "
                           "(graph has %d Conv nodes)", g->path, nm, c, a, b2, W.nconv_nodes);
        }
        slice_str(n->op, op, sizeof op);
        node_label(n, label, sizeof label);
        if ((n->nin < 1 || !slice_same(n->in[0], cur)) && !(slice_eq(n->op, "Add") || slice_eq(n->op, "Mul")))
            return lp_fail(LP_ERR_FORMAT, "%s: %s takes the activation as a non-first input: not a VGG graph", g->path, label);
        if (n->nout < 1) return lp_fail(LP_ERR_FORMAT, "%s: %s has no output", g->path, label);
        slice next = n->out[0];
        bool spatial = !strcmp(op, "Conv") || !strcmp(op, "MaxPool") || !strcmp(op, "AveragePool") || !strcmp(op, "GlobalAveragePool") ||
                       is_spatial_mean(g, n);
        if (spatial && W.flat)
            return lp_fail(LP_ERR_FORMAT, "%s: %s comes after %s: a head is a Flatten or a GlobalAveragePool, then dense layers (Gemm or MatMul, "
                           "with Relu and Dropout); no %s after it", g->path, label, W.flat_node, op);
        if (!strcmp(op, "Conv")) {
            st = push_conv(&W, n, label);
        } else if (!strcmp(op, "MaxPool")) {
            int64_t k[4], s[4];
            int nk = attr_ints(n, "kernel_shape", k, 4), ns = attr_ints(n, "strides", s, 4);
            if (nk < 2 || k[0] != 2 || k[1] != 2 || ns < 2 || s[0] != 2 || s[1] != 2)
                return lp_fail(LP_ERR_FORMAT, "%s: %s is not 2x2 with stride 2: not a VGG pooling layer", g->path, label);
            W.pools++;
        } else if (!strcmp(op, "AveragePool")) {
            /* torchvision's avgpool to 7x7: a 1x1 kernel (the identity) when exported at 224x224 */
            int64_t k[4];
            int nk = attr_ints(n, "kernel_shape", k, 4);
            if (nk < 2 || k[0] != 1 || k[1] != 1)
                return lp_fail(LP_ERR_FORMAT, "%s: %s with a %lldx%lld kernel: VGG's adaptive pooling to 7x7 is the identity at 224x224; export at 224x224",
                               g->path, label, nk > 0 ? (long long)k[0] : 0LL, nk > 1 ? (long long)k[1] : 0LL);
            L->pool = LP_WPOOL_AVG7;
            snprintf(L->pool_src, sizeof L->pool_src, "%s", label);
        } else if (!strcmp(op, "GlobalAveragePool") || spatial) {
            L->pool = LP_WPOOL_GAP;
            snprintf(L->pool_src, sizeof L->pool_src, "%s", label);
            snprintf(W.flat_node, sizeof W.flat_node, "%s", label);
            W.flat = true;
        } else if (!strcmp(op, "Flatten") || !strcmp(op, "Reshape") || !strcmp(op, "Squeeze")) {
            if (!strcmp(op, "Flatten") && attr_int(n, "axis", 1) != 1)
                return lp_fail(LP_ERR_FORMAT, "%s: %s with axis %lld: expected 1", g->path, label, (long long)attr_int(n, "axis", 1));
            if (L->pool == LP_WPOOL_UNKNOWN) {
                L->pool = LP_WPOOL_FLATTEN;
                snprintf(L->pool_src, sizeof L->pool_src, "%s", label);
            }
            if (!W.flat) snprintf(W.flat_node, sizeof W.flat_node, "%s", label);
            W.flat = true;
        } else if (!strcmp(op, "Relu")) {
            if (W.after_dense) last_layer(&W)->relu = 1;
            else if (W.flat)
                return lp_fail(LP_ERR_FORMAT, "%s: %s comes after %s, before any dense layer: a head's ReLUs follow its dense layers", g->path, label,
                               W.flat_node);
        } else if (!strcmp(op, "Dropout")) {
            if (W.after_dense) last_layer(&W)->dropout = dropout_ratio(g, n);
            else if (W.flat) L->pre_dropout = dropout_ratio(g, n);
        } else if (!strcmp(op, "Identity") || !strcmp(op, "Softmax") || !strcmp(op, "LogSoftmax")) {
            /* no parameters; the class scores' softmax is predict's */
        } else if (!strcmp(op, "Gemm")) {
            if (attr_int(n, "transA", 0)) return lp_fail(LP_ERR_FORMAT, "%s: %s with transA=1: not a dense layer on the activations", g->path, label);
            st = push_dense(&W, n, attr_int(n, "transB", 0) != 0, attr_float(n, "alpha", 1.0f), n->nin > 2 && n->in[2].n ? n : NULL, 2,
                            attr_float(n, "beta", 1.0f));
        } else if (!strcmp(op, "MatMul")) {
            /* a following Add of a constant vector is the bias */
            const onode *a = NULL, *a2 = NULL;
            int bi = -1;
            if (consumers(g, next, &a, &a2) == 1 && slice_eq(a->op, "Add") && a->nin == 2 && a->nout >= 1) {
                bi = slice_same(a->in[0], next) ? 1 : 0;
                if (!is_weight(g, a->in[bi])) bi = -1;
            }
            st = push_dense(&W, n, false, 1.0f, bi >= 0 ? a : NULL, bi, 1.0f);
            if (bi >= 0) next = a->out[0];
        } else if (!strcmp(op, "BatchNormalization")) {
            return lp_fail(LP_ERR_FORMAT, "%s: %s: a batch-norm VGG (vgg16_bn) is not supported; use plain VGG16/VGG19", g->path, label);
        } else {
            return lp_fail(LP_ERR_FORMAT, "%s: %s (after %d convs%s%s) is not part of a VGG16/VGG19 graph: loupe reads Conv, Relu and MaxPool, then "
                           "a head of Flatten or GlobalAveragePool and Gemm or MatMul (+Add) layers with Relu and Dropout (graph has %d Conv nodes)",
                           g->path, label, W.convs, W.denses ? " and dense layers" : "", W.flat ? ", in the head" : "", W.nconv_nodes);
        }
        if (strcmp(op, "Relu") && strcmp(op, "Dropout") && strcmp(op, "Identity") && strcmp(op, "Gemm") && strcmp(op, "MatMul"))
            W.after_dense = false;
        cur = next;
    }
    if (st) return st;
    if (W.denses && W.pools_at_first_dense != 5)
        return lp_fail(LP_ERR_FORMAT, "%s: the first dense layer follows %d max-pool layers: VGG's fc1 follows 5", g->path, W.pools_at_first_dense);
    return LP_OK;
}

lp_status lp_onnx_read_layers(const char *path, lp_wlayers *layers) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lp_fail(LP_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size <= 0) {
        close(fd);
        return lp_fail(LP_ERR_FORMAT, "%s: empty file: not an ONNX model", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return lp_fail(LP_ERR_IO, "%s: cannot map (%s)", path, strerror(errno));
    ograph g = {.path = path};
    /* top level: a ModelProto is a sequence of valid fields with a graph (7) */
    pb b = {map, (const uint8_t *)map + size};
    uint32_t f;
    int wt;
    uint64_t v;
    slice s, graph = {0};
    bool ok = true, has_ir = false, starts_ir = size > 1 && ((const uint8_t *)map)[0] == 0x08;
    while (b.p < b.end) {
        if (!pb_next(&b, &f, &wt, &v, &s)) {
            ok = false;
            break;
        }
        if (f == 1 && wt == 0) has_ir = true;
        if (f == 7 && wt == 2) graph = s;
    }
    lp_status st;
    if (!ok && starts_ir && has_ir)
        st = lp_fail(LP_ERR_FORMAT, "%s: ONNX model cut short (a field runs past the end of the file): the file is truncated or corrupt", path);
    else if (!ok || !graph.p || !has_ir) st = lp_fail(LP_ERR_FORMAT, "%s: not an ONNX model", path);
    else st = parse_graph(&g, graph);
    if (!st) st = walk(&g, layers);
    free(g.nodes);
    free(g.inits);
    munmap(map, size);
    return st;
}
