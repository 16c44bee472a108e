/* ONNX import of torchvision's mobilenet_v2 and efficientnet_b0, as the state dict
 * torchvision would save, with its names (features.N.conv..., features.S.I.block...,
 * classifier.1).
 *
 * The model is told by its activations (Clip: ReLU6, MobileNetV2; Sigmoid: SiLU and the
 * squeeze-and-excitation gates, EfficientNet-B0), or by --arch. loupe builds that model and
 * reads the graph's convolutions in order (the exporter writes nodes in the order forward
 * runs them, as loupe's layers are): each must be the model's next one, with its weight
 * shape, kernel, stride, padding ((k - 1) / 2 on every side, torchvision's) and groups,
 * and a bias where the model has one (squeeze-and-excitation's fc1, fc2). Batch norm comes
 * as BatchNormalization nodes or folded into the conv (onnx_emit_conv_bn, as for ResNets).
 * The counts of the other operations must be the model's too (ReLU6s, SiLUs, gates, adds),
 * so that a graph with the same convolutions but another function is refused. Then the
 * classifier: one Gemm (classifier.1), or none (a base alone). */
#include "onnx_graph.h"
#include "nn/nn.h"
#include <stdio.h>
#include <stdlib.h>

bool onnx_has_grouped_conv(const ograph *g) {
    for (int i = 0; i < g->nnodes; i++)
        if (onnx_slice_eq(g->nodes[i].op, "Conv") && onnx_attr_int(&g->nodes[i], "group", 1) > 1) return true;
    return false;
}

static int count_op(const ograph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < g->nnodes; i++) n += onnx_slice_eq(g->nodes[i].op, op);
    return n;
}

/* One conv node against the model's param i (its weight, shape w[4]): geometry and groups. */
static lp_status check_conv(const ograph *g, const onode *n, const char *name, const int64_t w[4], int stride) {
    char label[200], msg[400];
    int64_t v[8];
    const int k = (int)w[2];
    onnx_node_label(n, label, sizeof label);
    const int64_t group = onnx_attr_int(n, "group", 1), want_group = w[1] == 1 && w[0] > 1 && k > 1 ? w[0] : 1;
    int nk = onnx_attr_ints(n, "kernel_shape", v, 8);
    bool ok = nk == 2 && v[0] == k && v[1] == w[3] && group == want_group;
    if (ok && (nk = onnx_attr_ints(n, "strides", v, 8)) > 0) ok = nk == 2 && v[0] == stride && v[1] == stride;
    else if (ok) ok = stride == 1;
    if (ok && (nk = onnx_attr_ints(n, "pads", v, 8)) > 0) ok = nk == 4 && v[0] == (k - 1) / 2 && v[1] == v[0] && v[2] == v[0] && v[3] == v[0];
    else if (ok) ok = k == 1;
    if (ok && (nk = onnx_attr_ints(n, "dilations", v, 8)) > 0) ok = v[0] == 1 && (nk < 2 || v[1] == 1);
    if (ok) return LP_OK;
    snprintf(msg, sizeof msg, "%s: %s is read as %s, which is %dx%d with stride %d, padding %d and %lld group(s): the conv differs", g->path,
             label, name, k, (int)w[3], stride, (k - 1) / 2, (long long)want_group);
    return lp_fail(LP_ERR_FORMAT, "%s", msg);
}

/* The conv's weight, shape checked, and its bias (SE convs) as name.weight / name.bias. */
static lp_status emit_conv_bias(const ograph *g, const onode *n, const char *name, const int64_t w[4], bool bias, lp_tensor_list *out) {
    char nm[256], full[200];
    lp_tensor t = {0}, b = {0};
    lp_status st = onnx_load_weight(g, n, 1, &t, nm, sizeof nm);
    if (!st && (t.ndim != 4 || t.shape[0] != w[0] || t.shape[1] != w[1] || t.shape[2] != w[2] || t.shape[3] != w[3]))
        st = lp_fail(LP_ERR_SHAPE, "%s: the weight %s of the conv read as %s is not (%lld, %lld, %lld, %lld)", g->path, nm, name,
                     (long long)w[0], (long long)w[1], (long long)w[2], (long long)w[3]);
    if (!st && bias && !(n->nin > 2 && n->in[2].n)) st = lp_fail(LP_ERR_FORMAT, "%s: the conv read as %s has no bias", g->path, name);
    if (!st && bias && !(st = onnx_load_weight(g, n, 2, &b, nm, sizeof nm))) st = onnx_bias_vector(g, &b, w[0], nm);
    snprintf(full, sizeof full, "%s.weight", name);
    if (!st && !(st = lp_tensor_list_add(out, full, &t))) memset(&t, 0, sizeof t);
    snprintf(full, sizeof full, "%s.bias", name);
    if (!st && bias && !(st = lp_tensor_list_add(out, full, &b))) memset(&b, 0, sizeof b);
    lp_tensor_free(&t);
    lp_tensor_free(&b);
    return st;
}

/* The batch norm node after conv n, or NULL (folded). */
static const onode *bn_after(const ograph *g, const onode *n) {
    const onode *a = NULL, *b = NULL;
    if (n->nout < 1 || onnx_consumers(g, n->out[0], &a, &b) != 1) return NULL;
    return onnx_slice_eq(a->op, "BatchNormalization") && a->nin >= 5 ? a : NULL;
}

/* torchvision's classifier.1: the Gemm, [out, in] (transB) or [in, out]. */
static lp_status emit_gemm(const ograph *g, const onode *n, lp_tensor_list *out, int *classes) {
    char nm[256];
    lp_tensor B = {0}, w = {0}, b = {0};
    if (onnx_attr_int(n, "transA", 0) || onnx_attr_float(n, "alpha", 1.0f) != 1.0f || onnx_attr_float(n, "beta", 1.0f) != 1.0f)
        return lp_fail(LP_ERR_FORMAT, "%s: the classifier's Gemm has transA, alpha or beta: not torchvision's Linear", g->path);
    lp_status st = onnx_load_weight(g, n, 1, &B, nm, sizeof nm);
    if (!st && B.ndim != 2) st = lp_fail(LP_ERR_SHAPE, "%s: the weight %s of the classifier is not a matrix", g->path, nm);
    if (!st && onnx_attr_int(n, "transB", 0)) w = B, memset(&B, 0, sizeof B);
    else if (!st && !(st = lp_tensor_alloc(&w, LP_F32, 2, (int64_t[]){B.shape[1], B.shape[0]}))) onnx_transpose2(&B, &w);
    lp_tensor_free(&B);
    if (!st && n->nin > 2 && n->in[2].n && !(st = onnx_load_weight(g, n, 2, &b, nm, sizeof nm))) st = onnx_bias_vector(g, &b, w.shape[0], nm);
    else if (!st && !(st = lp_tensor_alloc(&b, LP_F32, 1, (int64_t[]){w.shape[0]}))) memset(b.data, 0, (size_t)w.shape[0] * sizeof(float));
    if (!st) *classes = (int)w.shape[0];
    if (!st && !(st = lp_tensor_list_add(out, "classifier.1.weight", &w))) memset(&w, 0, sizeof w);
    if (!st && !(st = lp_tensor_list_add(out, "classifier.1.bias", &b))) memset(&b, 0, sizeof b);
    lp_tensor_free(&w);
    lp_tensor_free(&b);
    return st;
}

lp_status onnx_mobile_walk(const ograph *g, const lp_weights_opts *o, lp_tensor_list *out) {
    const int clips = count_op(g, "Clip"), sigmoids = count_op(g, "Sigmoid"), gemms = count_op(g, "Gemm");
    const char *arch = o && o->arch ? o->arch : clips ? "mobilenet_v2" : sigmoids ? "efficientnet_b0" : NULL;
    if (!arch || (strcmp(arch, "mobilenet_v2") && strcmp(arch, "efficientnet_b0")))
        return lp_fail(LP_ERR_FORMAT, "%s: a graph with grouped convolutions%s%s: loupe reads torchvision's mobilenet_v2 and efficientnet_b0 "
                       "from ONNX", g->path, arch ? ", asked for as " : " and neither Clip (ReLU6) nor Sigmoid (SiLU) nodes", arch ? arch : "");
    /* their other operations, counted in torchvision's graphs: ReLU6s; SiLUs and gates (a
     * Sigmoid and a Mul each); residual adds */
    const bool mb = !strcmp(arch, "mobilenet_v2");
    const int want_clips = mb ? 35 : 0, want_sig = mb ? 0 : 65, want_adds = mb ? 10 : 9;
    const int adds = count_op(g, "Add") + count_op(g, "Sum"), muls = count_op(g, "Mul");
    if (clips != want_clips || sigmoids != want_sig || muls < want_sig || adds < want_adds || gemms > 1)
        return lp_fail(LP_ERR_FORMAT, "%s: %d Clip, %d Sigmoid, %d Mul, %d Add and %d Gemm nodes: torchvision's %s has %d, %d, %d, %d and "
                       "one Gemm (or none: a base alone)", g->path, clips, sigmoids, muls, adds, gemms, arch, want_clips, want_sig,
                       want_sig, want_adds);
    lp_net *net;
    lp_status st = lp_weights_reference_net(arch, &net);
    if (st) return st;
    int conv = 0, classes = 0;
    const int P = lp_net_param_count(net);
    for (int i = 0; i < P && !st; i++) {
        int64_t w[4];
        const char *name = lp_net_param_name(net, i);
        if (lp_net_param_shape(net, i, w) != 4 || !strncmp(name, "classifier.", 11)) continue;
        char base[160];
        snprintf(base, sizeof base, "%.*s", (int)(strlen(name) - 7), name); /* less ".weight" */
        while (conv < g->nnodes && !onnx_slice_eq(g->nodes[conv].op, "Conv")) conv++;
        if (conv == g->nnodes) {
            st = lp_fail(LP_ERR_FORMAT, "%s: the graph's convolutions end before %s's %s", g->path, arch, base);
            break;
        }
        const onode *n = &g->nodes[conv++];
        const int stride = lp_net_param_conv_stride(net, i);
        if ((st = check_conv(g, n, base, w, stride ? stride : 1))) break;
        /* batch norm after it: the model's next params are X.weight, X.bias, X.running_mean... */
        const char *next = i + 1 < P ? lp_net_param_name(net, i + 1) : "";
        const bool se = !strncmp(next, base, strlen(base)) && !strcmp(next + strlen(base), ".bias");
        const char *bn_name = i + 3 < P && !se ? lp_net_param_name(net, i + 3) : NULL;
        if (bn_name && strstr(bn_name, ".running_mean")) {
            char bn[160];
            snprintf(bn, sizeof bn, "%.*s", (int)(strlen(bn_name) - 13), bn_name);
            st = onnx_emit_conv_bn(g, n, bn_after(g, n), (int)w[2], base, bn, out);
        } else {
            st = emit_conv_bias(g, n, base, w, se, out);
        }
    }
    while (!st && conv < g->nnodes && !onnx_slice_eq(g->nodes[conv].op, "Conv")) conv++;
    if (!st && conv < g->nnodes) st = lp_fail(LP_ERR_FORMAT, "%s: more convolutions than torchvision's %s has", g->path, arch);
    for (int i = 0; i < g->nnodes && !st && gemms; i++)
        if (onnx_slice_eq(g->nodes[i].op, "Gemm")) st = emit_gemm(g, &g->nodes[i], out, &classes);
    lp_net_free(net);
    if (!st) st = lp_tensor_list_set_meta(out, "arch", arch);
    if (!st) st = lp_tensor_list_set_meta(out, "source", "onnx");
    if (!st) st = lp_tensor_list_set_meta(out, "preprocess", "torch");
    return st;
}
