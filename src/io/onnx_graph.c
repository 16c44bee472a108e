/* ONNX protobuf reading: the graph of a ModelProto, parsed in place.
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
 * Assumes a little-endian host (raw_data is little-endian). */
#include "onnx_graph.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

bool onnx_pb_next(pb *b, uint32_t *field, int *wt, uint64_t *val, slice *bytes) {
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

void onnx_slice_str(slice a, char *buf, size_t n) {
    size_t k = 0;
    for (; k + 1 < n && k < a.n && k < 200; k++) buf[k] = a.p[k] >= 0x20 && a.p[k] < 0x7f ? (char)a.p[k] : '?';
    if (n) buf[k] = 0;
}

/* ---- parsed graph ---------------------------------------------------------- */
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
    pb b = onnx_pb_of(m);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end) {
        if (!onnx_pb_next(&b, &f, &wt, &v, &s)) return bad(g, "node");
        if (wt != 2) continue;
        if (f == 1) {
            if (n->nin == MAX_IO) return lp_fail(LP_ERR_FORMAT, "%s: node with more than %d inputs: not a VGG or ResNet graph", g->path, MAX_IO);
            n->in[n->nin++] = s;
        } else if (f == 2) {
            if (n->nout == MAX_IO) return lp_fail(LP_ERR_FORMAT, "%s: node with more than %d outputs: not a VGG or ResNet graph", g->path, MAX_IO);
            n->out[n->nout++] = s;
        } else if (f == 3) n->name = s;
        else if (f == 4) n->op = s;
    }
    g->nnodes++;
    return LP_OK;
}

static lp_status parse_tensor_name(ograph *g, slice m, slice *name) {
    pb b = onnx_pb_of(m);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    name->p = m.p;
    name->n = 0;
    while (b.p < b.end) {
        if (!onnx_pb_next(&b, &f, &wt, &v, &s)) return bad(g, "tensor");
        if (f == 8 && wt == 2) *name = s;
    }
    return LP_OK;
}

static lp_status parse_graph(ograph *g, slice m) {
    pb b = onnx_pb_of(m);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    lp_status st = LP_OK;
    while (b.p < b.end && !st) {
        if (!onnx_pb_next(&b, &f, &wt, &v, &s)) return bad(g, "graph");
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
            pb vb = onnx_pb_of(s);
            slice nm = {0};
            uint32_t f2;
            int wt2;
            uint64_t v2;
            slice s2;
            while (vb.p < vb.end) {
                if (!onnx_pb_next(&vb, &f2, &wt2, &v2, &s2)) return bad(g, "value info");
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

lp_status onnx_graph_open(const char *path, ograph *g) {
    memset(g, 0, sizeof *g);
    g->path = path;
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
    g->map = map;
    g->size = size;
    /* top level: a ModelProto is a sequence of valid fields with a graph (7) */
    pb b = {map, (const uint8_t *)map + size};
    uint32_t f;
    int wt;
    uint64_t v;
    slice s, graph = {0};
    bool ok = true, has_ir = false, starts_ir = size > 1 && ((const uint8_t *)map)[0] == 0x08;
    while (b.p < b.end) {
        if (!onnx_pb_next(&b, &f, &wt, &v, &s)) {
            ok = false;
            break;
        }
        if (f == 1 && wt == 0) has_ir = true;
        if (f == 7 && wt == 2) graph = s;
    }
    if (!ok && starts_ir && has_ir)
        return lp_fail(LP_ERR_FORMAT, "%s: ONNX model cut short (a field runs past the end of the file): the file is truncated or corrupt", path);
    if (!ok || !graph.p || !has_ir) return lp_fail(LP_ERR_FORMAT, "%s: not an ONNX model", path);
    return parse_graph(g, graph);
}

void onnx_graph_close(ograph *g) {
    free(g->nodes);
    free(g->inits);
    if (g->map) munmap(g->map, g->size);
    memset(g, 0, sizeof *g);
}

/* ---- attributes -------------------------------------------------------------- */
/* Finds attribute `name`; returns its message. */
bool onnx_node_attr(const onode *n, const char *name, slice *attr) {
    pb b = onnx_pb_of(n->msg);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end) {
        if (!onnx_pb_next(&b, &f, &wt, &v, &s)) return false;
        if (f != 5 || wt != 2) continue;
        pb a = onnx_pb_of(s);
        uint32_t f2;
        int wt2;
        uint64_t v2;
        slice s2;
        while (a.p < a.end) {
            if (!onnx_pb_next(&a, &f2, &wt2, &v2, &s2)) break;
            if (f2 == 1 && wt2 == 2 && onnx_slice_eq(s2, name)) {
                *attr = s;
                return true;
            }
        }
    }
    return false;
}

int64_t onnx_attr_int(const onode *n, const char *name, int64_t dflt) {
    slice a;
    if (!onnx_node_attr(n, name, &a)) return dflt;
    pb b = onnx_pb_of(a);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end && onnx_pb_next(&b, &f, &wt, &v, &s))
        if (f == 3 && wt == 0) return (int64_t)v;
    return dflt;
}

float onnx_attr_float(const onode *n, const char *name, float dflt) {
    slice a;
    if (!onnx_node_attr(n, name, &a)) return dflt;
    pb b = onnx_pb_of(a);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end && onnx_pb_next(&b, &f, &wt, &v, &s))
        if (f == 2 && wt == 5) {
            uint32_t u = (uint32_t)v;
            float x;
            memcpy(&x, &u, 4);
            return x;
        }
    return dflt;
}

/* ints (field 8), packed or not; returns the count (-1: absent). */
int onnx_attr_ints(const onode *n, const char *name, int64_t *out, int max) {
    slice a;
    if (!onnx_node_attr(n, name, &a)) return -1;
    pb b = onnx_pb_of(a);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    int k = 0;
    while (b.p < b.end && onnx_pb_next(&b, &f, &wt, &v, &s)) {
        if (f != 8) continue;
        if (wt == 0) {
            if (k < max) out[k] = (int64_t)v;
            k++;
        } else if (wt == 2) {
            pb p = onnx_pb_of(s);
            uint64_t x;
            while (p.p < p.end && pb_varint(&p, &x)) {
                if (k < max) out[k] = (int64_t)x;
                k++;
            }
        }
    }
    return k;
}

/* The bytes of AttributeProto field `field` (4: s, a string; 5: t, a tensor) of attribute `name`. */
static bool attr_bytes(const onode *n, const char *name, uint32_t field, slice *out) {
    slice a;
    if (!onnx_node_attr(n, name, &a)) return false;
    pb b = onnx_pb_of(a);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    while (b.p < b.end && onnx_pb_next(&b, &f, &wt, &v, &s))
        if (f == field && wt == 2) {
            *out = s;
            return true;
        }
    return false;
}

bool onnx_attr_string(const onode *n, const char *name, slice *out) { return attr_bytes(n, name, 4, out); }
bool onnx_attr_tensor(const onode *n, const char *name, slice *t) { return attr_bytes(n, name, 5, t); }

/* ---- tensors -------------------------------------------------------------- */
enum { ONNX_FLOAT = 1, ONNX_FLOAT16 = 10, ONNX_DOUBLE = 11, ONNX_BFLOAT16 = 16 };

/* Decodes a TensorProto into a new F32 tensor; name is for messages. Pages of
 * raw_data are dropped from the mapping once copied. */
lp_status onnx_tensor_to_f32(const ograph *g, slice m, const char *name, lp_tensor *out) {
    pb b = onnx_pb_of(m);
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
        if (!onnx_pb_next(&b, &f, &wt, &v, &s)) return bad(g, "tensor");
        switch (f) {
        case 1:
            if (wt == 0) {
                if (nd == LP_MAX_DIMS) return lp_fail(LP_ERR_FORMAT, "%s: tensor %s has more than %d dims", g->path, name, LP_MAX_DIMS);
                dims[nd++] = (int64_t)v;
            } else if (wt == 2) {
                pb p = onnx_pb_of(s);
                uint64_t x;
                while (p.p < p.end) {
                    if (!pb_varint(&p, &x)) return bad(g, "dims");
                    if (nd == LP_MAX_DIMS) return lp_fail(LP_ERR_FORMAT, "%s: tensor %s has more than %d dims", g->path, name, LP_MAX_DIMS);
                    dims[nd++] = (int64_t)x;
                }
            }
            break;
        case 2: dtype = (int64_t)v; break;
        case 4:
            if (wt == 2 && s.n % 4) return bad(g, "float_data"); /* packed floats: whole values only */
            nfloat += wt == 2 ? s.n / 4 : 1;
            break;
        case 5:
            if (wt == 0) nint32++;
            else if (wt == 2) {
                pb p = onnx_pb_of(s);
                uint64_t x;
                while (p.p < p.end && pb_varint(&p, &x)) nint32++;
            }
            break;
        case 9:
            raw = s;
            has_raw = true;
            break;
        case 10:
            if (wt == 2 && s.n % 8) return bad(g, "double_data");
            ndouble += wt == 2 ? s.n / 8 : 1;
            break;
        case 13: {
            external = true;
            pb e = onnx_pb_of(s);
            slice k = {0}, val = {0};
            uint32_t f2;
            int wt2;
            uint64_t v2;
            slice s2;
            while (e.p < e.end && onnx_pb_next(&e, &f2, &wt2, &v2, &s2)) {
                if (f2 == 1) k = s2;
                if (f2 == 2) val = s2;
            }
            if (onnx_slice_eq(k, "location")) onnx_slice_str(val, ext_loc, sizeof ext_loc);
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
    if (!esz) return lp_fail(LP_ERR_FORMAT, "%s: tensor %s has ONNX data type %lld (expected float, float16, bfloat16 or double): export the model in float32", g->path, name, (long long)dtype);
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
        b = onnx_pb_of(m);
        uint32_t want = dtype == ONNX_FLOAT ? 4 : dtype == ONNX_DOUBLE ? 10 : 5;
        while (b.p < b.end && onnx_pb_next(&b, &f, &wt, &v, &s)) {
            if (f != want) continue;
            if (wt == 2) {
                pb p = onnx_pb_of(s);
                /* whole values only: a packed field of a length not a multiple of the
                 * value's size would otherwise be read past its end */
                const ptrdiff_t esz = want == 4 ? 4 : want == 10 ? 8 : 1;
                while (p.end - p.p >= esz && k < numel) {
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

const otensor *onnx_find_init(const ograph *g, slice name) {
    for (int i = 0; i < g->ninits; i++)
        if (onnx_slice_same(g->inits[i].name, name)) return &g->inits[i];
    return NULL;
}

const onode *onnx_producer(const ograph *g, slice name) {
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].nout; j++)
            if (onnx_slice_same(g->nodes[i].out[j], name)) return &g->nodes[i];
    return NULL;
}

/* A weight operand: an initializer, or a Constant / Identity of one. */
bool onnx_resolve_weight(const ograph *g, slice name, slice *msg, int depth) {
    const otensor *t = onnx_find_init(g, name);
    if (t) {
        *msg = t->msg;
        return true;
    }
    if (depth > 8) return false;
    const onode *p = onnx_producer(g, name);
    if (!p) return false;
    if (onnx_slice_eq(p->op, "Constant")) return onnx_attr_tensor(p, "value", msg);
    if (onnx_slice_eq(p->op, "Identity") && p->nin == 1) return onnx_resolve_weight(g, p->in[0], msg, depth + 1);
    return false;
}

bool onnx_is_weight(const ograph *g, slice name) {
    slice m;
    return onnx_resolve_weight(g, name, &m, 0);
}

lp_status onnx_load_weight(const ograph *g, const onode *n, int k, lp_tensor *out, char *nm, size_t nmn) {
    slice m;
    onnx_slice_str(n->in[k], nm, nmn);
    if (k >= n->nin || !onnx_resolve_weight(g, n->in[k], &m, 0)) {
        char nn[128];
        onnx_slice_str(n->name, nn, sizeof nn);
        return lp_fail(LP_ERR_FORMAT, "%s: input %d ('%s') of node '%s' is not a constant weight: not a plain VGG or ResNet graph", g->path, k, nm, nn);
    }
    return onnx_tensor_to_f32(g, m, nm, out);
}

/* Compute nodes that consume `name` (Shape nodes and weight-only users are side branches). */
int onnx_consumers(const ograph *g, slice name, const onode **first, const onode **second) {
    int c = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const onode *n = &g->nodes[i];
        if (onnx_slice_eq(n->op, "Shape")) continue;
        for (int j = 0; j < n->nin; j++)
            if (onnx_slice_same(n->in[j], name)) {
                if (c == 0) *first = n;
                else if (c == 1) *second = n;
                c++;
                break;
            }
    }
    return c;
}

bool onnx_is_output(const ograph *g, slice name) {
    for (int i = 0; i < g->noutputs; i++)
        if (onnx_slice_same(g->outputs[i], name)) return true;
    return false;
}

void onnx_transpose2(const lp_tensor *src, lp_tensor *dst) {
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
lp_status onnx_bias_vector(const ograph *g, lp_tensor *b, int64_t nout, const char *nm) {
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
void onnx_node_label(const onode *n, char *buf, size_t cap) {
    char op[64], nn[128];
    onnx_slice_str(n->op, op, sizeof op);
    onnx_slice_str(n->name, nn, sizeof nn);
    snprintf(buf, cap, "%s '%s'", op, nn);
}

/* H and W of the data input when the graph fixes them (NCHW dims > 0). */
void onnx_input_hw(slice vi, int *h, int *w) {
    int64_t dims[8];
    int nd = 0;
    pb b = onnx_pb_of(vi);
    uint32_t f;
    int wt;
    uint64_t v;
    slice s;
    *h = *w = 0;
    /* ValueInfoProto.type (2) -> TypeProto.tensor_type (1) -> .shape (2) -> .dim (1): dim_value (1) */
    slice type = {0}, tensor = {0}, shape = {0};
    while (b.p < b.end && onnx_pb_next(&b, &f, &wt, &v, &s))
        if (f == 2 && wt == 2) type = s;
    for (pb t = onnx_pb_of(type); t.p < t.end && onnx_pb_next(&t, &f, &wt, &v, &s);)
        if (f == 1 && wt == 2) tensor = s;
    for (pb t = onnx_pb_of(tensor); t.p < t.end && onnx_pb_next(&t, &f, &wt, &v, &s);)
        if (f == 2 && wt == 2) shape = s;
    for (pb t = onnx_pb_of(shape); t.p < t.end && onnx_pb_next(&t, &f, &wt, &v, &s);) {
        if (f != 1 || wt != 2 || nd == 8) continue;
        int64_t val = 0;
        for (pb d = onnx_pb_of(s); d.p < d.end;) {
            uint32_t f2;
            int wt2;
            uint64_t v2;
            slice s2;
            if (!onnx_pb_next(&d, &f2, &wt2, &v2, &s2)) break;
            if (f2 == 1 && wt2 == 0) val = (int64_t)v2;
        }
        dims[nd++] = val;
    }
    if (nd == 4 && dims[2] > 0 && dims[3] > 0 && dims[2] <= 65536 && dims[3] <= 65536) {
        *h = (int)dims[2];
        *w = (int)dims[3];
    }
}

/* ReduceMean over H and W (axes 2, 3), as some exporters write a global average pooling. */
bool onnx_is_spatial_mean(const ograph *g, const onode *n) {
    if (!onnx_slice_eq(n->op, "ReduceMean")) return false;
    int64_t ax[8];
    int k = onnx_attr_ints(n, "axes", ax, 8);
    slice m;
    if (k < 0 && n->nin > 1 && onnx_resolve_weight(g, n->in[1], &m, 0)) {
        /* opset 18: axes as an int64 input; read its raw_data */
        pb b = onnx_pb_of(m);
        uint32_t f;
        int wt;
        uint64_t v;
        slice s;
        k = 0;
        while (b.p < b.end && onnx_pb_next(&b, &f, &wt, &v, &s))
            if (f == 9 && wt == 2)
                for (size_t i = 0; i + 8 <= s.n && k < 8; i += 8) memcpy(&ax[k++], s.p + i, 8);
    }
    if (k != 2) return false;
    for (int i = 0; i < 2; i++)
        if (ax[i] < 0) ax[i] += 4;
    return (ax[0] == 2 && ax[1] == 3) || (ax[0] == 3 && ax[1] == 2);
}

lp_status onnx_classifier_io(const ograph *g, const char *what, slice *data, int *h, int *w) {
    /* the data input: a graph input that is not an initializer */
    *data = (slice){0};
    int ndata = 0;
    for (int i = 0; i < g->ninputs; i++)
        if (!onnx_find_init(g, g->inputs[i])) {
            *data = g->inputs[i];
            onnx_input_hw(g->input_info[i], h, w);
            ndata++;
        }
    if (ndata != 1)
        return lp_fail(LP_ERR_FORMAT, "%s: ONNX graph has %d data inputs (expected 1 image input): not %s", g->path, ndata, what);
    if (g->noutputs != 1) {
        char names[600] = "", nm[128], from[200];
        for (int i = 0, off = 0; i < g->noutputs && i < 4 && off < (int)sizeof names; i++) {
            const onode *pn = onnx_producer(g, g->outputs[i]);
            onnx_slice_str(g->outputs[i], nm, sizeof nm);
            if (pn) onnx_node_label(pn, from, sizeof from);
            off += snprintf(names + off, sizeof names - (size_t)off, "%s'%s'%s%s", i ? ", " : "", nm, pn ? " from " : "", pn ? from : "");
        }
        return lp_fail(LP_ERR_FORMAT, "%s: ONNX graph has %d outputs (%s): loupe imports a classifier with one output, its class scores", g->path,
                       g->noutputs, names);
    }
    return LP_OK;
}

int onnx_residual_adds(const ograph *g, const onode **first) {
    int count = 0;
    *first = NULL;
    for (int i = 0; i < g->nnodes; i++) {
        const onode *n = &g->nodes[i];
        if (!onnx_slice_eq(n->op, "Add") && !onnx_slice_eq(n->op, "Sum")) continue;
        int act = 0;
        for (int j = 0; j < n->nin; j++) {
            const onode *p = onnx_producer(g, n->in[j]);
            act += !onnx_is_weight(g, n->in[j]) && p && !onnx_slice_eq(p->op, "Constant");
        }
        if (act >= 2 && !count++) *first = n;
    }
    return count;
}
