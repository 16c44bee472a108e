/* ONNX import of a torchvision ResNet (resnet18, resnet34, resnet50), as the state dict
 * torchvision would save, with its names (conv1, bn1, layerS.B.convK, layerS.B.bnK,
 * layerS.B.downsample.0/1, fc).
 *
 * The graph is walked from its data input, never read by initializer names (an
 * exporter renames them): the stem Conv 7x7/2 [BatchNormalization] Relu MaxPool 3x3/2,
 * then blocks. A block starts at a tensor read by two paths that meet at an Add:
 * the main path (2 convs: basic block; 3: bottleneck, each but the last followed by a
 * Relu) and the shortcut (the tensor itself, or one 1x1 conv: the downsample); a Relu
 * follows the Add. A block with a downsample starts a new stage (but the first block,
 * whose downsample in a bottleneck net only widens). Then GlobalAveragePool (or
 * ReduceMean over H, W), Flatten/Reshape, and torchvision's fc (Gemm, or MatMul + Add),
 * or nothing: a base alone.
 *
 * Batch norm comes either as BatchNormalization nodes (exports in training mode keep
 * them), read as they are (a conv bias before it moves into the running mean, an epsilon
 * other than PyTorch's 1e-5 into the running variance: the same function), or folded
 * into the conv by the exporter (torch.onnx.export in eval mode does that): then the
 * batch norm becomes the identity in inference mode (weight 1, running mean 0, running
 * variance 1 - eps) with the conv's bias as its bias. That is exactly the exported
 * function with --bn frozen; trained with batch statistics (--bn train) the folded
 * weights start from a different point than the unfolded ones would.
 *
 * Strides, kernels and paddings must be torchvision's ("V1.5": the stride on the 3x3
 * conv of a bottleneck); anything else computes another function and is refused with
 * what differs. */
#include "onnx_graph.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define TORCH_BN_EPS 1e-5f

/* A conv as the graph has it, with the batch norm that follows it (NULL: folded). */
typedef struct rconv {
    const onode *conv, *bn;
    int k, stride, pad;
    slice out; /* the output of the batch norm, or of the conv when folded */
} rconv;

typedef struct rwalk {
    const ograph *g;
    lp_tensor_list *out;
    char label[200]; /* the node being read, for messages */
} rwalk;

static lp_status fail_at(rwalk *R, const onode *n, const char *what) {
    onnx_node_label(n, R->label, sizeof R->label);
    return lp_fail(LP_ERR_FORMAT, "%s: %s %s", R->g->path, R->label, what);
}

/* The single compute node that reads t (NULL when none or several). */
static const onode *next_node(const ograph *g, slice t) {
    const onode *a = NULL, *b = NULL;
    return onnx_consumers(g, t, &a, &b) == 1 ? a : NULL;
}

static lp_status read_conv(rwalk *R, const onode *n, rconv *c) {
    const ograph *g = R->g;
    int64_t v[8];
    int k;
    memset(c, 0, sizeof *c);
    c->conv = n;
    if (onnx_attr_int(n, "group", 1) != 1) return fail_at(R, n, "is grouped: not a ResNet conv");
    if ((k = onnx_attr_ints(n, "dilations", v, 8)) > 0 && (v[0] != 1 || (k > 1 && v[1] != 1))) return fail_at(R, n, "is dilated: not a ResNet conv");
    slice ap; /* NOTSET with no pads is padding 0 */
    if (onnx_attr_string(n, "auto_pad", &ap) && !onnx_slice_eq(ap, "NOTSET") && onnx_attr_ints(n, "pads", v, 8) < 0)
        return fail_at(R, n, "uses auto_pad: export with explicit pads (torch.onnx.export does)");
    if ((k = onnx_attr_ints(n, "kernel_shape", v, 8)) != 2 || v[0] != v[1]) return fail_at(R, n, "has no square 2-D kernel_shape");
    c->k = (int)v[0];
    c->stride = 1;
    if ((k = onnx_attr_ints(n, "strides", v, 8)) > 0) {
        if (k != 2 || v[0] != v[1]) return fail_at(R, n, "has different strides along H and W: not a ResNet conv");
        c->stride = (int)v[0];
    }
    if ((k = onnx_attr_ints(n, "pads", v, 8)) > 0) {
        if (k != 4 || v[0] != v[1] || v[0] != v[2] || v[0] != v[3]) return fail_at(R, n, "is padded unevenly: torchvision's ResNet convs pad all sides alike");
        c->pad = (int)v[0];
    }
    if (n->nout < 1) return fail_at(R, n, "has no output");
    c->out = n->out[0];
    const onode *bn = next_node(g, c->out);
    if (bn && onnx_slice_eq(bn->op, "BatchNormalization") && bn->nin >= 5 && bn->nout >= 1 && onnx_slice_same(bn->in[0], c->out)) {
        c->bn = bn;
        c->out = bn->out[0];
    }
    return LP_OK;
}

static lp_status expect_shape(rwalk *R, const onode *n, const char *what, int k, int stride, const rconv *c) {
    if (c->k == k && c->stride == stride && c->pad == (k - 1) / 2) return LP_OK;
    char msg[300];
    snprintf(msg, sizeof msg, "(%s) is %dx%d with stride %d and padding %d where torchvision's ResNet has %dx%d, stride %d, padding %d%s", what, c->k,
             c->k, c->stride, c->pad, k, k, stride, (k - 1) / 2,
             k == 1 && c->stride == 2 && stride == 1 ? ": a ResNet v1 (stride on the first 1x1 conv, as Keras' and Caffe's ResNet50); loupe builds "
                                                       "torchvision's V1.5, with the stride on the 3x3 conv"
                                                     : "");
    return fail_at(R, n, msg);
}

static lp_status add(rwalk *R, const char *name, lp_tensor *t) {
    lp_status st = lp_tensor_list_add(R->out, name, t);
    if (st) lp_tensor_free(t);
    return st;
}

static lp_status vector_of(rwalk *R, const onode *n, int k, int64_t len, lp_tensor *t) {
    char nm[256];
    lp_status st = onnx_load_weight(R->g, n, k, t, nm, sizeof nm);
    if (!st) st = onnx_bias_vector(R->g, t, len, nm);
    if (!st)
        for (int64_t i = 0; i < len; i++)
            if (!isfinite(((float *)t->data)[i])) st = lp_fail(LP_ERR_FORMAT, "%s: tensor %s holds NaN or Inf", R->g->path, nm);
    if (st) lp_tensor_free(t);
    return st;
}

/* The conv's weight as conv_name.weight, and its batch norm (or the identity with the
 * conv's bias, when folded) as bn_name.*. */
static lp_status emit(rwalk *R, const rconv *c, const char *conv_name, const char *bn_name) {
    const ograph *g = R->g;
    char nm[256], name[200];
    lp_tensor w = {0}, bias = {0}, p[4] = {{0}};
    lp_status st = onnx_load_weight(g, c->conv, 1, &w, nm, sizeof nm);
    if (!st && (w.ndim != 4 || w.shape[2] != c->k || w.shape[3] != c->k)) {
        char s[64];
        st = lp_fail(LP_ERR_SHAPE, "%s: the weight %s of the conv read as %s has shape %s, not (O, I, %d, %d)", g->path, nm, conv_name,
                     lp_shape_str(&w, s, sizeof s), c->k, c->k);
    }
    for (int64_t i = 0; !st && i < lp_tensor_numel(&w); i++)
        if (!isfinite(((float *)w.data)[i])) st = lp_fail(LP_ERR_FORMAT, "%s: tensor %s holds NaN or Inf", g->path, nm);
    const int64_t O = st ? 0 : w.shape[0];
    if (!st) {
        snprintf(name, sizeof name, "%s.weight", conv_name);
        st = add(R, name, &w);
    } else lp_tensor_free(&w);
    if (!st && c->conv->nin > 2 && c->conv->in[2].n) st = vector_of(R, c->conv, 2, O, &bias);
    if (!st && c->bn) {
        for (int i = 0; i < 4 && !st; i++) st = vector_of(R, c->bn, 1 + i, O, &p[i]);
        const float eps = onnx_attr_float(c->bn, "epsilon", TORCH_BN_EPS);
        float *mean = st ? NULL : p[2].data, *var = st ? NULL : p[3].data;
        for (int64_t i = 0; !st && i < O; i++) {
            if (bias.data) mean[i] -= ((float *)bias.data)[i];
            var[i] += eps - TORCH_BN_EPS;
            if (!(var[i] >= 0.0f)) st = fail_at(R, c->bn, "has a running variance below 0 once its epsilon is PyTorch's 1e-5");
        }
    } else if (!st) {
        for (int i = 0; i < 4 && !st; i++) st = lp_tensor_alloc(&p[i], LP_F32, 1, (int64_t[]){O});
        for (int64_t i = 0; !st && i < O; i++) {
            ((float *)p[0].data)[i] = 1.0f;
            ((float *)p[1].data)[i] = bias.data ? ((float *)bias.data)[i] : 0.0f;
            ((float *)p[2].data)[i] = 0.0f;
            ((float *)p[3].data)[i] = 1.0f - TORCH_BN_EPS;
        }
    }
    static const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s.%s", bn_name, suffix[i]);
        if (!st) st = add(R, name, &p[i]);
        else lp_tensor_free(&p[i]);
    }
    lp_tensor_free(&bias);
    lp_tensor steps = {0};
    if (!st) st = lp_tensor_alloc(&steps, LP_I64, 0, NULL);
    if (!st) {
        *(int64_t *)steps.data = 0;
        snprintf(name, sizeof name, "%s.num_batches_tracked", bn_name);
        st = add(R, name, &steps);
    }
    return st;
}

lp_status onnx_emit_conv_bn(const ograph *g, const onode *conv, const onode *bn, int k, const char *conv_name, const char *bn_name,
                            lp_tensor_list *out) {
    rwalk R = {.g = g, .out = out};
    rconv c = {.conv = conv, .bn = bn, .k = k};
    return emit(&R, &c, conv_name, bn_name);
}

/* One path from a block's input to its Add: the convs on it (at most 3), each but the
 * last followed by a Relu. *add_node is where it ends. */
static lp_status read_path(rwalk *R, const onode *first, rconv *convs, int *nconv, const onode **add_node) {
    const ograph *g = R->g;
    const onode *n = first;
    *nconv = 0;
    for (;;) {
        if (onnx_slice_eq(n->op, "Add") || onnx_slice_eq(n->op, "Sum")) {
            *add_node = n;
            return LP_OK;
        }
        if (!onnx_slice_eq(n->op, "Conv")) return fail_at(R, n, "is inside a residual block, where loupe reads Conv, BatchNormalization, Relu and Add");
        if (*nconv == 3) return fail_at(R, n, "is a fourth conv in one residual block: torchvision's blocks have 2 or 3");
        lp_status st = read_conv(R, n, &convs[*nconv]);
        if (st) return st;
        slice t = convs[(*nconv)++].out;
        n = next_node(g, t);
        if (n && onnx_slice_eq(n->op, "Relu")) {
            t = n->out[0];
            n = next_node(g, t);
            if (n && (onnx_slice_eq(n->op, "Add") || onnx_slice_eq(n->op, "Sum")))
                return fail_at(R, n, "adds a ReLU'd branch: torchvision's blocks apply the ReLU after the Add");
        } else if (n && onnx_slice_eq(n->op, "Conv"))
            return fail_at(R, n, "follows a conv with no ReLU between them: not a ResNet block");
        if (!n) {
            char nm[200];
            onnx_slice_str(t, nm, sizeof nm);
            return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' inside a residual block is read by no node or by several: not a torchvision ResNet", g->path, nm);
        }
    }
}

/* What follows the base: the pooling, the flatten, torchvision's fc or nothing. */
static lp_status read_top(rwalk *R, slice cur, int *num_classes) {
    const ograph *g = R->g;
    bool pooled = false, flat = false;
    *num_classes = 0;
    for (int step = 0; step <= g->nnodes; step++) {
        if (onnx_is_output(g, cur)) return LP_OK;
        const onode *n = next_node(g, cur);
        if (!n) {
            char nm[200];
            onnx_slice_str(cur, nm, sizeof nm);
            return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' after the residual blocks is read by no node or by several: not a torchvision ResNet", g->path, nm);
        }
        if (n->nout < 1) return fail_at(R, n, "has no output");
        slice next = n->out[0];
        if (onnx_slice_eq(n->op, "GlobalAveragePool") || onnx_is_spatial_mean(g, n)) {
            if (pooled) return fail_at(R, n, "pools a second time");
            pooled = true;
        } else if (onnx_slice_eq(n->op, "Flatten") || onnx_slice_eq(n->op, "Reshape") || onnx_slice_eq(n->op, "Squeeze")) {
            if (!pooled) return fail_at(R, n, "flattens the feature map before a global average pooling: not torchvision's ResNet head");
            flat = true;
        } else if (onnx_slice_eq(n->op, "Identity") || onnx_slice_eq(n->op, "Softmax") || onnx_slice_eq(n->op, "LogSoftmax")) {
        } else if ((onnx_slice_eq(n->op, "Gemm") || onnx_slice_eq(n->op, "MatMul")) && !*num_classes) {
            if (!pooled || !flat) return fail_at(R, n, "is a dense layer before the pooling and flatten: not torchvision's ResNet head");
            const bool gemm = onnx_slice_eq(n->op, "Gemm");
            if (gemm && onnx_attr_int(n, "transA", 0)) return fail_at(R, n, "has transA=1: not a dense layer on the activations");
            char nm[256];
            lp_tensor B = {0}, w = {0}, b = {0};
            lp_status st = onnx_load_weight(g, n, 1, &B, nm, sizeof nm);
            if (!st && B.ndim != 2) st = lp_fail(LP_ERR_SHAPE, "%s: the weight %s of the fc is not a matrix", g->path, nm);
            if (!st && gemm && onnx_attr_int(n, "transB", 0)) {
                w = B;
                memset(&B, 0, sizeof B);
            } else if (!st && !(st = lp_tensor_alloc(&w, LP_F32, 2, (int64_t[]){B.shape[1], B.shape[0]})))
                onnx_transpose2(&B, &w); /* ours is [out, in] */
            lp_tensor_free(&B);
            const float alpha = gemm ? onnx_attr_float(n, "alpha", 1.0f) : 1.0f, beta = gemm ? onnx_attr_float(n, "beta", 1.0f) : 1.0f;
            const onode *bn = gemm ? n : NULL;
            int bk = 2;
            if (!gemm) { /* MatMul: a following Add of a constant vector is the bias */
                const onode *a = next_node(g, next);
                if (a && onnx_slice_eq(a->op, "Add") && a->nin == 2 && a->nout >= 1) {
                    bk = onnx_slice_same(a->in[0], next) ? 1 : 0;
                    if (onnx_is_weight(g, a->in[bk])) {
                        bn = a;
                        next = a->out[0];
                    }
                }
            }
            for (int64_t i = 0; !st && i < lp_tensor_numel(&w); i++) ((float *)w.data)[i] *= alpha;
            if (!st && bn && bn->nin > bk && bn->in[bk].n) {
                st = vector_of(R, bn, bk, w.shape[0], &b);
                for (int64_t i = 0; !st && i < w.shape[0]; i++) ((float *)b.data)[i] *= beta;
            } else if (!st && !(st = lp_tensor_alloc(&b, LP_F32, 1, (int64_t[]){w.shape[0]})))
                memset(b.data, 0, (size_t)w.shape[0] * sizeof(float));
            if (!st) *num_classes = (int)w.shape[0];
            if (!st) st = add(R, "fc.weight", &w);
            else lp_tensor_free(&w);
            if (!st) st = add(R, "fc.bias", &b);
            else lp_tensor_free(&b);
            if (st) return st;
        } else if (onnx_slice_eq(n->op, "Gemm") || onnx_slice_eq(n->op, "MatMul") || onnx_slice_eq(n->op, "Relu") || onnx_slice_eq(n->op, "Dropout")) {
            return fail_at(R, n, "makes a head of more than one dense layer: loupe reads a ResNet's head when it is torchvision's fc (one Gemm); "
                                 "export the base alone (model.fc = torch.nn.Identity()) and train a head on it");
        } else
            return fail_at(R, n, "follows the residual blocks: torchvision's ResNet ends with GlobalAveragePool, Flatten and Gemm");
        cur = next;
    }
    return lp_fail(LP_ERR_FORMAT, "%s: the head does not end", g->path);
}

lp_status onnx_resnet_walk(const ograph *g, const lp_weights_opts *o, lp_tensor_list *out) {
    rwalk R = {.g = g, .out = out};
    slice cur;
    int in_h = 0, in_w = 0;
    lp_status st = onnx_classifier_io(g, "a ResNet classifier", &cur, &in_h, &in_w);
    if (st) return st;
    /* the stem */
    const onode *n = next_node(g, cur);
    if (!n || !onnx_slice_eq(n->op, "Conv"))
        return lp_fail(LP_ERR_FORMAT, "%s: the image input does not go to one Conv: torchvision's ResNet starts with its 7x7 conv "
                       "(normalise the pixels outside the model: loupe applies --preprocess torch)", g->path);
    rconv c;
    if ((st = read_conv(&R, n, &c)) || (st = expect_shape(&R, n, "the stem conv", 7, 2, &c)) || (st = emit(&R, &c, "conv1", "bn1"))) return st;
    n = next_node(g, c.out);
    if (!n || !onnx_slice_eq(n->op, "Relu")) return lp_fail(LP_ERR_FORMAT, "%s: no Relu after the stem conv: not a torchvision ResNet", g->path);
    const onode *pool = next_node(g, n->out[0]);
    int64_t k[4], s[4], p[8];
    if (!pool || !onnx_slice_eq(pool->op, "MaxPool") || onnx_attr_ints(pool, "kernel_shape", k, 4) != 2 || k[0] != 3 || k[1] != 3 ||
        onnx_attr_ints(pool, "strides", s, 4) != 2 || s[0] != 2 || s[1] != 2 || onnx_attr_ints(pool, "pads", p, 8) != 4 || p[0] != 1 || p[1] != 1 ||
        p[2] != 1 || p[3] != 1)
        return lp_fail(LP_ERR_FORMAT, "%s: the stem's Relu is not followed by a 3x3 MaxPool with stride 2 and padding 1: not a torchvision ResNet", g->path);
    cur = pool->out[0];
    /* the residual blocks */
    int blocks[8] = {0}, stages = 0, kind = 0; /* kind: convs per main path */
    for (int b = 0; !st; b++) {
        const onode *a = NULL, *a2 = NULL;
        if (onnx_consumers(g, cur, &a, &a2) != 2) break;
        rconv pc[2][3];
        int np[2];
        const onode *add_node[2];
        if ((st = read_path(&R, a, pc[0], &np[0], &add_node[0])) || (st = read_path(&R, a2, pc[1], &np[1], &add_node[1]))) return st;
        if (add_node[0] != add_node[1]) return fail_at(&R, add_node[0], "ends one branch of a block whose other branch ends elsewhere: not a ResNet block");
        const int m = np[0] >= np[1] ? 0 : 1;
        const rconv *main = pc[m], *down = np[1 - m] ? pc[1 - m] : NULL;
        if (np[m] < 2 || np[1 - m] > 1)
            return fail_at(&R, add_node[0], "joins branches of the wrong size: a ResNet block adds a path of 2 or 3 convs to its input or to one 1x1 conv");
        if (kind && np[m] != kind) return fail_at(&R, add_node[0], "ends a block unlike the ones before it (basic and bottleneck blocks mixed)");
        kind = np[m];
        if (down || b == 0) {
            if (stages == 4) return fail_at(&R, add_node[0], "starts a fifth stage: torchvision's ResNets have four");
            blocks[stages++] = 0;
        }
        const int stride = stages > 1 && blocks[stages - 1] == 0 ? 2 : 1;
        char name[64], what[64];
        snprintf(name, sizeof name, "layer%d.%d", stages, blocks[stages - 1]);
        for (int i = 0; i < kind && !st; i++) {
            const int kk = kind == 2 ? 3 : (i == 1 ? 3 : 1), ss = (kind == 2 ? i == 0 : i == 1) ? stride : 1;
            char cn[80], bnn[80];
            snprintf(what, sizeof what, "%s.conv%d", name, i + 1);
            snprintf(cn, sizeof cn, "%s.conv%d", name, i + 1);
            snprintf(bnn, sizeof bnn, "%s.bn%d", name, i + 1);
            if (!(st = expect_shape(&R, main[i].conv, what, kk, ss, &main[i]))) st = emit(&R, &main[i], cn, bnn);
        }
        if (!st && down) {
            char cn[80], bnn[80];
            snprintf(cn, sizeof cn, "%s.downsample.0", name);
            snprintf(bnn, sizeof bnn, "%s.downsample.1", name);
            if (!(st = expect_shape(&R, down->conv, cn, 1, stride, down))) st = emit(&R, down, cn, bnn);
        } else if (!st && stride != 1)
            st = fail_at(&R, add_node[0], "adds the input of a block that starts a stage without a downsample conv: not a torchvision ResNet");
        if (st) return st;
        const onode *add_n = add_node[0], *relu = add_n->nout ? next_node(g, add_n->out[0]) : NULL;
        if (!relu || !onnx_slice_eq(relu->op, "Relu")) return fail_at(&R, add_n, "is not followed by a Relu: not a torchvision ResNet block");
        blocks[stages - 1]++;
        cur = relu->out[0];
    }
    if (st) return st;
    /* which ResNet */
    static const struct {
        const char *arch;
        int kind, blocks[4];
    } known[] = {{"resnet18", 2, {2, 2, 2, 2}}, {"resnet34", 2, {3, 4, 6, 3}}, {"resnet50", 3, {3, 4, 6, 3}}};
    const char *arch = NULL;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (stages == 4 && known[i].kind == kind && !memcmp(known[i].blocks, blocks, sizeof known[i].blocks)) arch = known[i].arch;
    if (!arch)
        return lp_fail(LP_ERR_FORMAT, "%s: a ResNet of %d stages with %d, %d, %d, %d %s blocks: loupe builds resnet18 (2, 2, 2, 2 basic), resnet34 "
                       "(3, 4, 6, 3 basic) and resnet50 (3, 4, 6, 3 bottleneck)", g->path, stages, blocks[0], blocks[1], blocks[2], blocks[3],
                       kind == 3 ? "bottleneck" : "basic");
    if (o && o->arch && strcmp(o->arch, arch))
        return lp_fail(LP_ERR_FORMAT, "%s: the graph is a %s, not the %s asked for", g->path, arch, o->arch);
    int nc;
    if ((st = read_top(&R, cur, &nc))) return st;
    char buf[32];
    if (!st) st = lp_tensor_list_set_meta(out, "arch", arch);
    if (!st && nc) {
        snprintf(buf, sizeof buf, "%d", nc);
        st = lp_tensor_list_set_meta(out, "num_classes", buf);
    }
    if (!st) st = lp_tensor_list_set_meta(out, "top", nc ? "keep" : "none");
    if (!st && in_h > 0) {
        snprintf(buf, sizeof buf, "%dx%d", in_h, in_w);
        st = lp_tensor_list_set_meta(out, "input_size", buf);
    }
    if (!st) st = lp_tensor_list_set_meta(out, "source", "onnx");
    if (!st) st = lp_tensor_list_set_meta(out, "preprocess", "torch");
    return st;
}
