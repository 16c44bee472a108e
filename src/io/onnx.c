/* ONNX import of a VGG graph (residual graphs go to onnx_resnet.c).
 *
 * Layers are found by walking the graph from its data input along the single
 * chain of consumers, never by initializer names: the base (Conv, Relu,
 * MaxPool), then the head: AveragePool 1x1 (torchvision's avgpool at 224),
 * GlobalAveragePool or ReduceMean over H, W, Flatten/Reshape/Squeeze, dense
 * layers (Gemm, MatMul+Add) each with its Relu and Dropout, Identity, Softmax.
 * A tensor feeding two compute nodes (a residual connection, a second output)
 * is an error, as is a spatial node after the flatten. Each conv's torchvision
 * features index comes from the convs and pools before it; the input size from
 * the data input's shape when it is fixed. */
#include "onnx_graph.h"
#include "weights.h"
#include <stdio.h>
#include <stdlib.h>

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
    onnx_node_label(n, label, sizeof label);
    if (!W->flat)
        return lp_fail(LP_ERR_FORMAT, "%s: %s is a dense layer on the feature map (no Flatten or GlobalAveragePool before it): not a VGG head", g->path, label);
    lp_tensor B = {0}, C = {0}, w = {0};
    lp_status st = onnx_load_weight(g, n, 1, &B, wn, sizeof wn);
    if (!st && B.ndim != 2) st = lp_fail(LP_ERR_SHAPE, "%s: the weight %s of %s is not a matrix", g->path, wn, label);
    if (!st) lp_shape_str(&B, sshape, sizeof sshape);
    if (!st && trans_b) {
        w = B;
        memset(&B, 0, sizeof B);
    } else if (!st) {
        st = lp_tensor_alloc(&w, LP_F32, 2, (int64_t[]){B.shape[1], B.shape[0]}); /* ours is [out, in] */
        if (!st) onnx_transpose2(&B, &w);
    }
    lp_tensor_free(&B);
    if (!st && alpha != 1.0f)
        for (int64_t i = 0; i < lp_tensor_numel(&w); i++) ((float *)w.data)[i] *= alpha;
    if (!st && bn) {
        st = onnx_load_weight(g, bn, bk, &C, bname, sizeof bname);
        if (!st) st = onnx_bias_vector(g, &C, w.shape[0], bname);
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
    if (onnx_attr_int(n, "group", 1) != 1) return lp_fail(LP_ERR_FORMAT, "%s: %s is grouped: not a VGG conv", g->path, label);
    if ((k = onnx_attr_ints(n, "strides", v, 8)) > 0 && (v[0] != 1 || (k > 1 && v[1] != 1)))
        return lp_fail(LP_ERR_FORMAT, "%s: %s has stride %lld: VGG convs have stride 1", g->path, label, (long long)v[0]);
    if ((k = onnx_attr_ints(n, "dilations", v, 8)) > 0 && (v[0] != 1 || (k > 1 && v[1] != 1)))
        return lp_fail(LP_ERR_FORMAT, "%s: %s is dilated: not a VGG conv", g->path, label);
    k = onnx_attr_ints(n, "pads", v, 8);
    for (int i = 0; i < k && i < 8; i++)
        if (v[i] != 1) return lp_fail(LP_ERR_FORMAT, "%s: %s has padding %lld: VGG convs pad by 1", g->path, label, (long long)v[i]);
    slice ap;
    if (k < 0 && !onnx_node_attr(n, "auto_pad", &ap)) /* SAME_UPPER/SAME_LOWER is padding 1 for 3x3, stride 1 */
        return lp_fail(LP_ERR_FORMAT, "%s: %s has no padding: VGG convs pad by 1", g->path, label);
    lp_tensor w = {0}, b = {0};
    char wn[256], bn[256] = "", sshape[64];
    lp_status st = onnx_load_weight(g, n, 1, &w, wn, sizeof wn);
    if (!st && n->nin > 2 && n->in[2].n) st = onnx_load_weight(g, n, 2, &b, bn, sizeof bn);
    if (!st && w.ndim != 4) st = lp_fail(LP_ERR_SHAPE, "%s: the weight %s of %s is not 4-D", g->path, wn, label);
    if (!st && b.data) st = onnx_bias_vector(g, &b, w.shape[0], bn);
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
    float r = onnx_attr_float(n, "ratio", -1.0f);
    slice m;
    if (r < 0 && n->nin > 1 && n->in[1].n && onnx_resolve_weight(g, n->in[1], &m, 0)) {
        lp_tensor t = {0};
        if (!onnx_tensor_to_f32(g, m, "ratio", &t) && lp_tensor_numel(&t) == 1) r = ((float *)t.data)[0];
        lp_tensor_free(&t);
    }
    return r >= 0.0f && r < 1.0f ? r : 0.5f;
}

static lp_status walk(ograph *g, lp_wlayers *L) {
    slice cur;
    lp_status st = onnx_classifier_io(g, "a VGG classifier", &cur, &L->in_h, &L->in_w);
    if (st) return st;
    walker W = {.g = g, .L = L, .pools_at_first_dense = -1};
    /* what kind of network: residual Adds, conv count */
    const onode *merge = NULL;
    const int nmerge = onnx_residual_adds(g, &merge);
    for (int i = 0; i < g->nnodes; i++) W.nconv_nodes += onnx_slice_eq(g->nodes[i].op, "Conv");
    if (nmerge) {
        char op[32], nn[128];
        onnx_slice_str(merge->op, op, sizeof op);
        onnx_slice_str(merge->name, nn, sizeof nn);
        return lp_fail(LP_ERR_FORMAT, "%s: graph has %d Conv nodes and %d %s nodes joining two branches (e.g. '%s'): a ResNet-like network, "
                       "not a sequential VGG16/VGG19", g->path, W.nconv_nodes, nmerge, op, nn);
    }
    char nm[256], label[200], op[64];
    for (int step = 0; step <= g->nnodes && !st; step++) {
        const onode *n = NULL, *n2 = NULL;
        int c = onnx_consumers(g, cur, &n, &n2);
        if (c == 0) {
            if (onnx_is_output(g, cur)) break;
            onnx_slice_str(cur, nm, sizeof nm);
            return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' is used by no node and is not a graph output: malformed graph", g->path, nm);
        }
        if (c > 1) {
            char a[200], b2[200];
            onnx_slice_str(cur, nm, sizeof nm);
            onnx_node_label(n, a, sizeof a);
            onnx_node_label(n2, b2, sizeof b2);
            return lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' feeds %d nodes (%s, %s): a branching graph, not a sequential VGG16/VGG19 with one output "
                           "(graph has %d Conv nodes)", g->path, nm, c, a, b2, W.nconv_nodes);
        }
        onnx_slice_str(n->op, op, sizeof op);
        onnx_node_label(n, label, sizeof label);
        if ((n->nin < 1 || !onnx_slice_same(n->in[0], cur)) && !(onnx_slice_eq(n->op, "Add") || onnx_slice_eq(n->op, "Mul")))
            return lp_fail(LP_ERR_FORMAT, "%s: %s takes the activation as a non-first input: not a VGG graph", g->path, label);
        if (n->nout < 1) return lp_fail(LP_ERR_FORMAT, "%s: %s has no output", g->path, label);
        slice next = n->out[0];
        bool spatial = !strcmp(op, "Conv") || !strcmp(op, "MaxPool") || !strcmp(op, "AveragePool") || !strcmp(op, "GlobalAveragePool") ||
                       onnx_is_spatial_mean(g, n);
        if (spatial && W.flat)
            return lp_fail(LP_ERR_FORMAT, "%s: %s comes after %s: a head is a Flatten or a GlobalAveragePool, then dense layers (Gemm or MatMul, "
                           "with Relu and Dropout); no %s after it", g->path, label, W.flat_node, op);
        if (!strcmp(op, "Conv")) {
            st = push_conv(&W, n, label);
        } else if (!strcmp(op, "MaxPool")) {
            int64_t k[4], s[4];
            int nk = onnx_attr_ints(n, "kernel_shape", k, 4), ns = onnx_attr_ints(n, "strides", s, 4);
            if (nk < 2 || k[0] != 2 || k[1] != 2 || ns < 2 || s[0] != 2 || s[1] != 2)
                return lp_fail(LP_ERR_FORMAT, "%s: %s is not 2x2 with stride 2: not a VGG pooling layer", g->path, label);
            W.pools++;
        } else if (!strcmp(op, "AveragePool")) {
            /* torchvision's avgpool to 7x7: a 1x1 kernel (the identity) when exported at 224x224 */
            int64_t k[4];
            int nk = onnx_attr_ints(n, "kernel_shape", k, 4);
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
            if (!strcmp(op, "Flatten") && onnx_attr_int(n, "axis", 1) != 1)
                return lp_fail(LP_ERR_FORMAT, "%s: %s with axis %lld: expected 1", g->path, label, (long long)onnx_attr_int(n, "axis", 1));
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
            if (onnx_attr_int(n, "transA", 0)) return lp_fail(LP_ERR_FORMAT, "%s: %s with transA=1: not a dense layer on the activations", g->path, label);
            st = push_dense(&W, n, onnx_attr_int(n, "transB", 0) != 0, onnx_attr_float(n, "alpha", 1.0f), n->nin > 2 && n->in[2].n ? n : NULL, 2,
                            onnx_attr_float(n, "beta", 1.0f));
        } else if (!strcmp(op, "MatMul")) {
            /* a following Add of a constant vector is the bias */
            const onode *a = NULL, *a2 = NULL;
            int bi = -1;
            if (onnx_consumers(g, next, &a, &a2) == 1 && onnx_slice_eq(a->op, "Add") && a->nin == 2 && a->nout >= 1) {
                bi = onnx_slice_same(a->in[0], next) ? 1 : 0;
                if (!onnx_is_weight(g, a->in[bi])) bi = -1;
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

lp_status lp_onnx_read(const char *path, const lp_weights_opts *o, lp_wlayers *layers, lp_tensor_list *resnet, bool *is_resnet) {
    ograph g;
    lp_status st = onnx_graph_open(path, &g);
    const onode *merge;
    const bool vgg_asked = o && o->arch && !strncmp(o->arch, "vgg", 3);
    const bool mobile = !st && !vgg_asked && onnx_has_grouped_conv(&g);
    *is_resnet = !st && !vgg_asked && (mobile || onnx_residual_adds(&g, &merge) > 0);
    if (!st && mobile) st = onnx_mobile_walk(&g, o, resnet);
    else if (!st && *is_resnet) st = onnx_resnet_walk(&g, o, resnet);
    else if (!st && o && o->arch && !strncmp(o->arch, "resnet", 6))
        st = lp_fail(LP_ERR_FORMAT, "%s: a graph without residual Add nodes: not a %s (convert it without --arch, or with --arch vgg16|vgg19)", path, o->arch);
    else if (!st) st = walk(&g, layers);
    onnx_graph_close(&g);
    return st;
}
