/* io/onnx_graph: an ONNX ModelProto parsed in place (zero-copy on an mmap of the
 * file), and what the model readers (onnx.c for VGG chains, onnx_resnet.c for
 * residual graphs) ask of it: nodes, their attributes, producers and consumers,
 * and constant weights decoded to F32. Internal to src/io. */
#ifndef LP_IO_ONNX_GRAPH_H
#define LP_IO_ONNX_GRAPH_H

#include "weights.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct slice {
    const uint8_t *p;
    size_t n;
} slice;

typedef struct pb {
    const uint8_t *p, *end;
} pb;

/* An absent field is {NULL, 0}: NULL + 0 is undefined in C (UBSan: pointer-overflow), so no arithmetic then. */
static inline pb onnx_pb_of(slice s) { return (pb){s.p, s.n ? s.p + s.n : s.p}; }
static inline bool onnx_slice_eq(slice a, const char *s) { return a.n == strlen(s) && (a.n == 0 || memcmp(a.p, s, a.n) == 0); }
static inline bool onnx_slice_same(slice a, slice b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }

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
    void *map; /* the file */
    size_t size;
} ograph;

/* Maps and parses the file; onnx_graph_close frees what it holds (also after a failure). */
lp_status onnx_graph_open(const char *path, ograph *g);
void onnx_graph_close(ograph *g);

/* Next field: number, wire type, and for length-delimited its payload. */
bool onnx_pb_next(pb *b, uint32_t *field, int *wt, uint64_t *val, slice *bytes);
/* Copies a name for messages; bytes outside printable ASCII become '?'. */
void onnx_slice_str(slice a, char *buf, size_t n);

/* Attributes: the message of attribute `name`; its int, float, ints (count, -1: absent), string
 * (AttributeProto field 4), tensor. */
bool onnx_node_attr(const onode *n, const char *name, slice *attr);
int64_t onnx_attr_int(const onode *n, const char *name, int64_t dflt);
float onnx_attr_float(const onode *n, const char *name, float dflt);
int onnx_attr_ints(const onode *n, const char *name, int64_t *out, int max);
bool onnx_attr_string(const onode *n, const char *name, slice *out);
bool onnx_attr_tensor(const onode *n, const char *name, slice *t);

/* Decodes a TensorProto into a new F32 tensor; name is for messages. */
lp_status onnx_tensor_to_f32(const ograph *g, slice m, const char *name, lp_tensor *out);
const otensor *onnx_find_init(const ograph *g, slice name);
const onode *onnx_producer(const ograph *g, slice name);
/* A weight operand: an initializer, or a Constant / Identity of one. */
bool onnx_resolve_weight(const ograph *g, slice name, slice *msg, int depth);
bool onnx_is_weight(const ograph *g, slice name);
/* Input k of node n as an F32 tensor; its name goes to nm. */
lp_status onnx_load_weight(const ograph *g, const onode *n, int k, lp_tensor *out, char *nm, size_t nmn);
/* Compute nodes that consume `name` (Shape nodes and weight-only users are side branches). */
int onnx_consumers(const ograph *g, slice name, const onode **first, const onode **second);
bool onnx_is_output(const ograph *g, slice name);
/* [r, c] -> [c, r] */
void onnx_transpose2(const lp_tensor *src, lp_tensor *dst);
/* Bias operand: rank 1 [out] or [1, out] (made rank 1). */
lp_status onnx_bias_vector(const ograph *g, lp_tensor *b, int64_t nout, const char *nm);
/* "Op 'name'" of a node, for messages. */
void onnx_node_label(const onode *n, char *buf, size_t cap);
/* H and W of the data input when the graph fixes them (NCHW dims > 0), else 0. */
void onnx_input_hw(slice vi, int *h, int *w);
/* ReduceMean over H and W (axes 2, 3), as some exporters write a global average pooling. */
bool onnx_is_spatial_mean(const ograph *g, const onode *n);

/* The one data input (a graph input that is not an initializer; its H and W when fixed)
 * and a check that there is one output; what names the model for messages. */
lp_status onnx_classifier_io(const ograph *g, const char *what, slice *data, int *h, int *w);
/* Add/Sum nodes joining two activations (residual connections); the first one to *first. */
int onnx_residual_adds(const ograph *g, const onode **first);

/* A torchvision ResNet graph as a state dict with torchvision's names (onnx_resnet.c). */
lp_status onnx_resnet_walk(const ograph *g, const lp_weights_opts *o, lp_tensor_list *out);
/* A conv's k x k weight as conv_name.weight and the batch norm after it as bn_name.* (bn
 * NULL: folded by the exporter, then the identity with the conv's bias), as onnx_resnet.c
 * reads them (a conv bias and another epsilon moved into the running statistics). */
lp_status onnx_emit_conv_bn(const ograph *g, const onode *conv, const onode *bn, int k, const char *conv_name, const char *bn_name,
                            lp_tensor_list *out);
/* Whether the graph has a grouped convolution (depthwise: MobileNetV2, EfficientNet-B0). */
bool onnx_has_grouped_conv(const ograph *g);
/* torchvision's mobilenet_v2 or efficientnet_b0 as a state dict with its names (onnx_mobile.c). */
lp_status onnx_mobile_walk(const ograph *g, const lp_weights_opts *o, lp_tensor_list *out);

#endif
