/* Keras' MobileNetV2 (alpha 1.0) and EfficientNetB0 (keras.applications) from Keras HDF5
 * weights, as torchvision's mobilenet_v2 and efficientnet_b0: the same layers, so each Keras
 * layer has one torchvision name (keras_name below). What differs, and how it is carried:
 * - Keras pads its stride-2 convolutions as TensorFlow's "same" (on an even map one pixel
 *   after and none before; torchvision one on each side): metadata padding = tf, and loupe
 *   builds the net that way (lp_net_config.tf_padding);
 * - batch norm epsilon 1e-3 (Keras' default, not in the weights) moves into the running
 *   variances, so that PyTorch's 1e-5 computes the same function;
 * - depthwise kernels (kh, kw, C, 1) become (C, 1, kh, kw);
 * - preprocessing: MobileNetV2's is tf (x/127.5 - 1, keras.applications.mobilenet_v2.
 *   preprocess_input). EfficientNet's is inside the model: Rescaling 1/255, Normalization
 *   (x - mean) / sqrt(variance), and where it was built for ImageNet weights a Rescaling by
 *   1/sqrt(ImageNet std) after it (keras/applications/efficientnet.py). loupe runs it as a
 *   preprocessing mode; torch's ((x/255 - mean) / std with ImageNet's statistics) is what
 *   Keras' ImageNet weights hold (effnet_preprocess), and other statistics are refused. */
#include "nn/nn.h"
#include "weights.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KERAS_BN_EPS 1e-3f

const char *lp_keras_mobile_arch(const lp_wlayers *L) {
    char ln[160];
    for (int i = 0; i < L->count; i++) {
        lp_keras_layer_name(&L->items[i], ln, sizeof ln);
        if (!strcmp(ln, "Conv1") || !strcmp(ln, "expanded_conv_depthwise") || !strcmp(ln, "block_1_expand")) return "mobilenet_v2";
        if (!strcmp(ln, "stem_conv") || !strcmp(ln, "block1a_dwconv")) return "efficientnet_b0";
    }
    return NULL;
}

/* A Keras layer's role: its torchvision module, and whether that is a depthwise conv. */
typedef struct keras_role {
    char ours[96];
    bool dw;
} keras_role;

/* MobileNetV2 (keras/applications/mobilenet_v2.py): Conv1 + bn_Conv1; the first inverted
 * residual block expanded_conv_{depthwise,project}[_BN] (no expansion); block_I_{expand,
 * depthwise,project}[_BN] for I = 1..16 (features.I+1); Conv_1 + Conv_1_bn. */
static bool mnv2_role(const char *ln, keras_role *r) {
    static const struct {
        const char *keras, *ours;
    } fixed[] = {{"Conv1", "features.0.0"}, {"bn_Conv1", "features.0.1"}, {"expanded_conv_depthwise", "features.1.conv.0.0"},
                 {"expanded_conv_depthwise_BN", "features.1.conv.0.1"}, {"expanded_conv_project", "features.1.conv.1"},
                 {"expanded_conv_project_BN", "features.1.conv.2"}, {"Conv_1", "features.18.0"}, {"Conv_1_bn", "features.18.1"}};
    static const struct {
        const char *keras, *ours;
    } block[] = {{"expand", "conv.0.0"}, {"expand_BN", "conv.0.1"}, {"depthwise", "conv.1.0"},
                 {"depthwise_BN", "conv.1.1"}, {"project", "conv.2"}, {"project_BN", "conv.3"}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!strcmp(ln, fixed[i].keras)) {
            snprintf(r->ours, sizeof r->ours, "%s", fixed[i].ours);
            r->dw = !strcmp(ln, "expanded_conv_depthwise");
            return true;
        }
    int id, end = 0;
    if (sscanf(ln, "block_%d_%n", &id, &end) != 1 || !end || id < 1 || id > 16) return false;
    for (size_t i = 0; i < sizeof block / sizeof block[0]; i++)
        if (!strcmp(ln + end, block[i].keras)) {
            snprintf(r->ours, sizeof r->ours, "features.%d.%s", id + 1, block[i].ours);
            r->dw = !strcmp(block[i].keras, "depthwise");
            return true;
        }
    return false;
}

/* EfficientNetB0 (keras/applications/efficientnet.py): stem_conv + stem_bn; blockSL_... for
 * stage S = 1..7 and block L = a, b, ... (features.S.I.block): expand_conv + expand_bn (not in
 * stage 1, whose expansion ratio is 1), dwconv + bn, se_reduce and se_expand (the squeeze-
 * and-excitation's fc1 and fc2), project_conv + project_bn; top_conv + top_bn. */
static bool effnet_role(const char *ln, keras_role *r) {
    static const int blocks[7] = {1, 2, 2, 3, 3, 4, 1};
    static const char *const kinds[8] = {"expand_conv", "expand_bn", "dwconv", "bn", "se_reduce", "se_expand", "project_conv", "project_bn"};
    r->dw = false;
    if (!strcmp(ln, "stem_conv") || !strcmp(ln, "stem_bn") || !strcmp(ln, "top_conv") || !strcmp(ln, "top_bn")) {
        snprintf(r->ours, sizeof r->ours, "features.%d.%d", ln[0] == 's' ? 0 : 8, ln[strlen(ln) - 1] == 'v' ? 0 : 1);
        return true;
    }
    int s, end = 0;
    char letter;
    if (sscanf(ln, "block%d%c_%n", &s, &letter, &end) != 2 || !end || s < 1 || s > 7 || letter < 'a' || letter - 'a' >= blocks[s - 1])
        return false;
    const int e = s == 1 ? 0 : 1; /* the expansion's modules come first */
    for (int k = 0; k < 8; k++) {
        if (strcmp(ln + end, kinds[k])) continue;
        if (k < 2 && !e) return false;
        const char *pre = "features";
        const int i = letter - 'a';
        if (k < 2) snprintf(r->ours, sizeof r->ours, "%s.%d.%d.block.0.%d", pre, s, i, k);
        else if (k < 4) snprintf(r->ours, sizeof r->ours, "%s.%d.%d.block.%d.%d", pre, s, i, e, k - 2);
        else if (k < 6) snprintf(r->ours, sizeof r->ours, "%s.%d.%d.block.%d.fc%d", pre, s, i, e + 1, k - 3);
        else snprintf(r->ours, sizeof r->ours, "%s.%d.%d.block.%d.%d", pre, s, i, e + 2, k - 6);
        r->dw = k == 2;
        return true;
    }
    return false;
}

/* EfficientNet's Normalization (with the Rescaling after it where there is one) as a
 * preprocessing mode: torch, or refused. */
static lp_status effnet_preprocess(const char *path, const lp_wlayers *L, const char **pre) {
    static const double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
    const lp_wlayer *norm = NULL;
    for (int i = 0; i < L->count && !norm; i++)
        if (L->items[i].kind == LP_WLAYER_NORM) norm = &L->items[i];
    if (!norm)
        return lp_fail(LP_ERR_FORMAT, "%s: Keras' EfficientNetB0 without its Normalization layer: the model's preprocessing is in that "
                       "layer's weights; save the whole model's weights (model.save_weights)", path);
    if (norm->w.shape[1] != 3)
        return lp_fail(LP_ERR_FORMAT, "%s: normalization layer %s has %lld channels (expected 3)", path, norm->src, (long long)norm->w.shape[1]);
    const float *m = norm->w.data, *v = (const float *)norm->w.data + 3;
    /* ImageNet's std stored as the variance is what Keras' ImageNet weights hold, and the model
     * Keras builds for them has the Rescaling (Keras 2.10 and later: before, it divided by
     * sqrt(std), a bug). Files saved before, Keras' own efficientnetb0[_notop].h5 among them,
     * and nested models (whose weightless layers the file does not list) lack the layer: it
     * is there where listed, or where the variance is that std. */
    bool rescaled = true;
    for (int c = 0; c < 3; c++) rescaled = rescaled && fabs(v[c] / std[c] - 1.0) <= 1e-4;
    rescaled = rescaled || L->rescaled_after_norm;
    double d[3];
    bool torch = true;
    for (int c = 0; c < 3; c++) {
        d[c] = sqrt(fmax(v[c], 0.0)) * (rescaled ? sqrt(std[c]) : 1.0);
        torch = torch && fabs(m[c] - mean[c]) <= 1e-4 && fabs(d[c] / std[c] - 1.0) <= 1e-4;
    }
    if (!torch)
        return lp_fail(LP_ERR_FORMAT, "%s: the model normalises its input as (x/255 - [%.4g, %.4g, %.4g]) / [%.4g, %.4g, %.4g] (layer %s%s); "
                       "loupe reads Keras' EfficientNetB0 with ImageNet's statistics, which its 'torch' preprocessing computes "
                       "((x/255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])", path, m[0], m[1], m[2], d[0], d[1], d[2], norm->src,
                       L->rescaled_after_norm ? " and the rescaling after it" : "");
    *pre = "torch";
    return LP_OK;
}

/* Every parameter of the backbone must come from the file, with torchvision's shape. */
static lp_status check_complete(const char *path, const char *arch, const lp_tensor_list *out) {
    lp_net *net;
    lp_status st = lp_weights_reference_net(arch, &net);
    for (int i = 0; !st && i < lp_net_param_count(net); i++) {
        const char *name = lp_net_param_name(net, i);
        if (!strncmp(name, "classifier.", 11)) continue;
        int64_t shape[4];
        const int nd = lp_net_param_shape(net, i, shape);
        const lp_named_tensor *t = lp_tensor_list_find(out, name);
        if (!t) {
            st = lp_fail(LP_ERR_FORMAT, "%s: no weights for %s's %s: the file is not a whole Keras %s", path, arch, name,
                         arch[0] == 'm' ? "MobileNetV2 (alpha 1.0)" : "EfficientNetB0");
            break;
        }
        bool same = t->t.ndim == nd;
        for (int d = 0; same && d < nd; d++) same = t->t.shape[d] == shape[d];
        if (!same) {
            char want[64], got[64];
            lp_tensor ref = {.ndim = nd};
            memcpy(ref.shape, shape, sizeof shape);
            lp_shape_str(&ref, want, sizeof want);
            lp_shape_str(&t->t, got, sizeof got);
            st = lp_fail(LP_ERR_SHAPE, "%s: %s has shape %s where %s has %s%s", path, name, got, arch, want,
                         arch[0] == 'm' ? ": loupe reads MobileNetV2 of width (alpha) 1.0" : "");
        }
    }
    lp_net_free(net);
    return st;
}

lp_status lp_keras_mobile_map(const char *path, const lp_weights_opts *o, const char *arch, lp_wlayers *L, lp_tensor_list *out) {
    const bool mb = !strcmp(arch, "mobilenet_v2");
    const char *model = mb ? "Keras' MobileNetV2" : "Keras' EfficientNetB0";
    char ln[160], name[128];
    const lp_wlayer *conv = NULL; /* the convolution before a batch norm (Keras' order) */
    lp_status st = LP_OK;
    for (int i = 0; i < L->count && !st; i++) {
        lp_wlayer *y = &L->items[i];
        lp_keras_layer_name(y, ln, sizeof ln);
        if (y->kind == LP_WLAYER_NORM && !mb) continue; /* effnet_preprocess */
        if (y->kind == LP_WLAYER_DENSE) {
            st = lp_keras_top_dense(path, L, y, "classifier.1", model, out);
            continue;
        }
        keras_role r;
        if (y->kind == LP_WLAYER_NORM || !(mb ? mnv2_role(ln, &r) : effnet_role(ln, &r)))
            return lp_fail(LP_ERR_FORMAT, "%s: layer '%s' is not part of %s%s", path, ln, model,
                           mb ? " (Conv1, expanded_conv_..., block_N_..., Conv_1, predictions)"
                              : " (stem_conv, blockSL_..., top_conv, predictions); EfficientNetV2 and B1-B7 are not read");
        if (y->kind == LP_WLAYER_BN) {
            if (!conv) return lp_fail(LP_ERR_FORMAT, "%s: batch norm '%s' has no convolution before it: not %s", path, ln, model);
            st = lp_keras_bn_to_torch(path, y, conv, KERAS_BN_EPS, r.ours, out);
            conv = NULL;
            continue;
        }
        /* a convolution: the squeeze-and-excitation's keep their biases, the others have none
         * (a bias there goes into the batch norm after it) */
        if (r.dw) {
            if (y->w.shape[0] != 1)
                return lp_fail(LP_ERR_FORMAT, "%s: depthwise layer '%s' has depth multiplier %lld (expected 1)", path, ln, (long long)y->w.shape[0]);
            y->w.shape[0] = y->w.shape[1], y->w.shape[1] = 1; /* (1, C, kh, kw) -> (C, 1, kh, kw): the same memory */
        }
        snprintf(name, sizeof name, "%s.weight", r.ours);
        if ((st = lp_weights_check_finite(path, name, y->src, &y->w))) break;
        if (strstr(ln, "_se_")) {
            st = lp_weights_add_linear(path, y, r.ours, out);
            continue;
        }
        if ((st = lp_tensor_list_add(out, name, &y->w))) break;
        conv = y;
    }
    const char *pre = "tf";
    if (!st && !mb) st = effnet_preprocess(path, L, &pre);
    if (!st) st = check_complete(path, arch, out);
    if (!st) st = lp_tensor_list_set_meta(out, "source", "keras-h5");
    if (!st) st = lp_tensor_list_set_meta(out, "preprocess", pre);
    if (!st) st = lp_tensor_list_set_meta(out, "padding", "tf");
    if (!st) st = lp_weights_features_meta(path, o, arch, out);
    return st;
}
