/* Model zoo: VGG16/VGG19, ResNets, MobileNetV2, EfficientNet-B0 (torchvision topology and names), a tiny CNN for
 * tests, the torchvision classifier top and head specs. Fills the layer and
 * parameter tables; weights are allocated and initialised by net.c. */
#include "nn_impl.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Conv widths, 0 = max pool 2x2. */
static const int cfg_vgg16[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0, -1};
static const int cfg_vgg19[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0, -1};
static const int cfg_tiny[] = {8, 0, 16, 0, -1};

typedef struct builder {
    lp_net *net;
    int cap_layers, cap_params;
    int c, h, w;     /* current per-sample shape */
    int cur;         /* the layer whose output that is (-1: the input) */
    bool flat;       /* 2-D (features) */
    bool maybe_blocked;
} builder;

static lp_layer *add_layer(builder *b, lp_layer_kind kind, const char *name) {
    lp_net *net = b->net;
    if (net->nlayers == b->cap_layers) {
        int cap = b->cap_layers ? 2 * b->cap_layers : 32;
        lp_layer *p = realloc(net->layers, (size_t)cap * sizeof *p);
        if (!p) {
            lp_fail(LP_ERR_NOMEM, "out of memory");
            return NULL;
        }
        net->layers = p;
        b->cap_layers = cap;
    }
    lp_layer *l = &net->layers[net->nlayers++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->src = b->cur, l->src2 = -1;
    b->cur = net->nlayers - 1;
    snprintf(l->name, sizeof l->name, "%s", name);
    l->pw = l->pb = l->prm = l->prv = l->pnb = -1;
    l->in_c = l->out_c = b->c;
    l->in_h = l->out_h = b->h;
    l->in_w = l->out_w = b->w;
    return l;
}

static int add_param(builder *b, const char *layer_name, const char *suffix, int ndim, const int64_t *shape) {
    lp_net *net = b->net;
    if (net->nparams == b->cap_params) {
        int cap = b->cap_params ? 2 * b->cap_params : 64;
        lp_param *p = realloc(net->params, (size_t)cap * sizeof *p);
        if (!p) {
            lp_fail(LP_ERR_NOMEM, "out of memory");
            return -1;
        }
        net->params = p;
        b->cap_params = cap;
    }
    lp_param *p = &net->params[net->nparams];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s.%s", layer_name, suffix);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    p->offset = net->nweights;
    p->trainable = true;
    p->layer = net->nlayers - 1;
    net->nweights += (p->numel + 15) & ~(size_t)15; /* keep every tensor 64-byte aligned */
    return net->nparams++;
}

static lp_status need_plain(builder *b) {
    if (!b->maybe_blocked) return LP_OK;
    if (!add_layer(b, LP_LAYER_TOPLAIN, "")) return LP_ERR_NOMEM;
    b->maybe_blocked = false;
    return LP_OK;
}

static lp_status add_conv_bias(builder *b, const char *name, const char *relu_name, int out_c, int k, int stride, int pad,
                               bool bias);
static lp_status add_conv(builder *b, const char *name, const char *relu_name, int out_c, int k, int stride, int pad) {
    return add_conv_bias(b, name, relu_name, out_c, k, stride, pad, true);
}

/* A buffer of batch norm (saved and loaded, never trained). */
static int add_buffer(builder *b, const char *layer_name, const char *suffix, int64_t c, bool int64) {
    int64_t shape[1] = {c};
    const int i = add_param(b, layer_name, suffix, int64 ? 0 : 1, shape);
    if (i >= 0) b->net->params[i].buffer = true, b->net->params[i].trainable = false, b->net->params[i].int64 = int64;
    return i;
}

/* BatchNorm2d over the current tensor's channels (+ ReLU): weight, bias, and the buffers
 * running_mean, running_var, num_batches_tracked, as torchvision names them. */
static lp_status add_bn_act(builder *b, const char *name, const char *act_name, int act);
static lp_status add_bn(builder *b, const char *name, const char *relu_name) {
    return add_bn_act(b, name, relu_name, LP_BN_ACT_RELU);
}

/* ... followed by act_name's activation (act: LP_BN_ACT_RELU, LP_BN_ACT_RELU6 for
 * MobileNetV2, LP_BN_ACT_SILU for EfficientNet), which runs inside the batch norm. */
static lp_status add_bn_act(builder *b, const char *name, const char *act_name, int act) {
    if (b->flat) return lp_fail(LP_ERR_ARG, "%s: batch norm after flatten", name);
    lp_layer *l = add_layer(b, LP_LAYER_BN, name);
    if (!l) return LP_ERR_NOMEM;
    l->relu = act_name != NULL && act != LP_BN_ACT_SILU;
    l->relu6 = act_name != NULL && act == LP_BN_ACT_RELU6;
    l->silu = act_name != NULL && act == LP_BN_ACT_SILU;
    if (act_name) snprintf(l->relu_name, sizeof l->relu_name, "%s", act_name);
    int64_t cs[1] = {b->c};
    lp_layer *L;
    int i;
    if ((i = add_param(b, name, "weight", 1, cs)) < 0) return LP_ERR_NOMEM;
    (L = &b->net->layers[b->net->nlayers - 1])->pw = i;
    if ((L->pb = add_param(b, name, "bias", 1, cs)) < 0) return LP_ERR_NOMEM;
    if ((L->prm = add_buffer(b, name, "running_mean", b->c, false)) < 0) return LP_ERR_NOMEM;
    if ((L->prv = add_buffer(b, name, "running_var", b->c, false)) < 0) return LP_ERR_NOMEM;
    if ((L->pnb = add_buffer(b, name, "num_batches_tracked", 1, true)) < 0) return LP_ERR_NOMEM;
    return LP_OK;
}

static lp_status add_conv_full(builder *b, const char *name, const char *relu_name, int out_c, int k, int stride, int pad,
                               bool bias, int groups);
static lp_status add_conv_bias(builder *b, const char *name, const char *relu_name, int out_c, int k, int stride, int pad,
                               bool bias) {
    return add_conv_full(b, name, relu_name, out_c, k, stride, pad, bias, 1);
}

/* TensorFlow's "same" padding of an axis of n pixels (tf.nn.conv2d; Keras' ZeroPadding2D with
 * correct_pad and a "valid" convolution give the same on maps of a known size): ceil(n / s)
 * outputs, the padding they need split with the odd pixel after. At stride 1 and an odd
 * kernel it is (k - 1) / 2 on each side, as torchvision's. */
static void tf_same_padding(int n, int k, int s, int *before, int *after) {
    const int out = (n + s - 1) / s, total = (out - 1) * s + k - n > 0 ? (out - 1) * s + k - n : 0;
    *before = total / 2;
    *after = total - total / 2;
}

/* groups > 1: each of groups slices of the input channels feeds its slice of the outputs
 * (groups = channels: depthwise); the weight is (out_c, in_c / groups, k, k) as PyTorch's. */
static lp_status add_conv_full(builder *b, const char *name, const char *relu_name, int out_c, int k, int stride, int pad,
                               bool bias, int groups) {
    if (b->flat) return lp_fail(LP_ERR_ARG, "%s: convolution after flatten", name);
    if (groups < 1 || b->c % groups || out_c % groups)
        return lp_fail(LP_ERR_ARG, "%s: %d groups do not divide %d input and %d output channels", name, groups, b->c, out_c);
    int top = pad, bottom = pad, left = pad, right = pad;
    if (b->net->cfg.tf_padding && pad == (k - 1) / 2) {
        tf_same_padding(b->h, k, stride, &top, &bottom);
        tf_same_padding(b->w, k, stride, &left, &right);
    }
    int oh = (b->h + top + bottom - k) / stride + 1, ow = (b->w + left + right - k) / stride + 1;
    if (oh < 1 || ow < 1) return lp_fail(LP_ERR_ARG, "%s: input %dx%d too small", name, b->h, b->w);
    lp_layer *l = add_layer(b, LP_LAYER_CONV, name);
    if (!l) return LP_ERR_NOMEM;
    l->k = k;
    l->stride = stride;
    l->pad = top;
    l->pad_left = left, l->pad_bottom = bottom, l->pad_right = right;
    l->relu = relu_name != NULL;
    if (relu_name) snprintf(l->relu_name, sizeof l->relu_name, "%s", relu_name);
    l->out_c = out_c;
    l->out_h = oh;
    l->out_w = ow;
    l->groups = groups;
    int64_t ws[4] = {out_c, b->c / groups, k, k}, bs[1] = {out_c};
    if ((l->pw = add_param(b, name, "weight", 4, ws)) < 0) return LP_ERR_NOMEM;
    if (bias && (b->net->layers[b->net->nlayers - 1].pb = add_param(b, name, "bias", 1, bs)) < 0) return LP_ERR_NOMEM;
    b->c = out_c;
    b->h = oh;
    b->w = ow;
    b->maybe_blocked = true;
    return LP_OK;
}

/* The builder's current tensor: its shape and producer, to come back to for a branch. */
typedef struct tensor_at {
    int c, h, w, cur;
    bool maybe_blocked, flat;
} tensor_at;
static tensor_at here(const builder *b) { return (tensor_at){b->c, b->h, b->w, b->cur, b->maybe_blocked, b->flat}; }
static void go_to(builder *b, tensor_at t) {
    b->c = t.c, b->h = t.h, b->w = t.w, b->cur = t.cur, b->maybe_blocked = t.maybe_blocked, b->flat = t.flat;
}

/* y = current + other (+ ReLU); other's shape must be the current one. */
static lp_status add_residual(builder *b, const char *name, const char *relu_name, tensor_at other) {
    if (other.c != b->c || other.h != b->h || other.w != b->w)
        return lp_fail(LP_ERR_ARG, "%s: adds %dx%dx%d to %dx%dx%d", name, other.c, other.h, other.w, b->c, b->h, b->w);
    lp_layer *l = add_layer(b, LP_LAYER_ADD, name);
    if (!l) return LP_ERR_NOMEM;
    l->src2 = other.cur;
    l->relu = relu_name != NULL;
    if (relu_name) snprintf(l->relu_name, sizeof l->relu_name, "%s", relu_name);
    return LP_OK;
}

/* Global average pooling in the convolutions' layout, to (n, C). */
static lp_status add_gap(builder *b, const char *name) {
    lp_layer *l = add_layer(b, LP_LAYER_GAP, name);
    if (!l) return LP_ERR_NOMEM;
    l->out_h = l->out_w = 1;
    b->h = b->w = 1;
    b->flat = true;
    b->maybe_blocked = false;
    return LP_OK;
}

static lp_status add_maxpool_pad(builder *b, const char *name, int k, int stride, int pad);
static lp_status add_maxpool(builder *b, const char *name, int k, int stride) { return add_maxpool_pad(b, name, k, stride, 0); }

static lp_status add_maxpool_pad(builder *b, const char *name, int k, int stride, int pad) {
    if (b->h + 2 * pad < k || b->w + 2 * pad < k)
        return lp_fail(LP_ERR_ARG, "%s: feature map %dx%d is smaller than the %dx%d pooling window; use a larger input size "
                                   "(at least 32x32 for VGG)",
                       name, b->h, b->w, k, k);
    lp_layer *l = add_layer(b, LP_LAYER_MAXPOOL, name);
    if (!l) return LP_ERR_NOMEM;
    l->k = k;
    l->stride = stride;
    l->pad = pad;
    l->out_h = (b->h + 2 * pad - k) / stride + 1;
    l->out_w = (b->w + 2 * pad - k) / stride + 1;
    b->h = l->out_h;
    b->w = l->out_w;
    return LP_OK;
}

static lp_status add_apool(builder *b, const char *name, int oh, int ow) {
    lp_status st = need_plain(b);
    if (st) return st;
    lp_layer *l = add_layer(b, LP_LAYER_APOOL, name);
    if (!l) return LP_ERR_NOMEM;
    l->out_h = oh;
    l->out_w = ow;
    b->h = oh;
    b->w = ow;
    return LP_OK;
}

static lp_status add_flatten(builder *b, const char *name) {
    lp_status st = need_plain(b);
    if (st) return st;
    lp_layer *l = add_layer(b, LP_LAYER_FLATTEN, name);
    if (!l) return LP_ERR_NOMEM;
    l->out_c = b->c * b->h * b->w;
    l->out_h = l->out_w = 1;
    b->c = l->out_c;
    b->h = b->w = 1;
    b->flat = true;
    return LP_OK;
}

static lp_status add_dense_shaped(builder *b, const char *name, const char *relu_name, bool relu, int out, bool conv1x1);
static lp_status add_dense(builder *b, const char *name, const char *relu_name, bool relu, int out) {
    return add_dense_shaped(b, name, relu_name, relu, out, false);
}

/* conv1x1: a 1x1 convolution on a 1x1 map (squeeze-and-excitation's fc1, fc2), computed as
 * the dense layer it is, its weight (out, in, 1, 1) as PyTorch's Conv2d has it (and
 * initialised as a conv's) */
static lp_status add_dense_shaped(builder *b, const char *name, const char *relu_name, bool relu, int out, bool conv1x1) {
    if (!b->flat) return lp_fail(LP_ERR_ARG, "%s: dense layer needs flatten or gap before it", name);
    lp_layer *l = add_layer(b, LP_LAYER_DENSE, name);
    if (!l) return LP_ERR_NOMEM;
    l->relu = relu;
    if (relu_name) snprintf(l->relu_name, sizeof l->relu_name, "%s", relu_name);
    l->out_c = out;
    int64_t ws[4] = {out, b->c, 1, 1}, bs[1] = {out};
    if ((l->pw = add_param(b, name, "weight", conv1x1 ? 4 : 2, ws)) < 0) return LP_ERR_NOMEM;
    if ((b->net->layers[b->net->nlayers - 1].pb = add_param(b, name, "bias", 1, bs)) < 0) return LP_ERR_NOMEM;
    b->c = out;
    return LP_OK;
}

static lp_status add_dropout(builder *b, const char *name, float p) {
    if (!(p >= 0.0f && p < 1.0f)) return lp_fail(LP_ERR_ARG, "%s: dropout probability %g not in [0, 1)", name, p);
    lp_status st = need_plain(b);
    if (st) return st;
    lp_layer *l = add_layer(b, LP_LAYER_DROPOUT, name);
    if (!l) return LP_ERR_NOMEM;
    l->p = p;
    return LP_OK;
}

/* Parses one head token; "dense[:N][:relu]", "dropout[:p]", "flatten", "gap". */
static lp_status add_head_token(builder *b, char *tok, int index, bool last, int num_classes, int *final_units) {
    char name[32];
    snprintf(name, sizeof name, "head.%d", index);
    char *parts[4] = {0};
    int np = 0;
    for (char *s = tok; np < 4;) {
        parts[np++] = s;
        char *c = strchr(s, ':');
        if (!c) break;
        *c = 0;
        s = c + 1;
    }
    for (int i = 0; i < np; i++) {
        while (isspace((unsigned char)*parts[i])) parts[i]++;
        char *e = parts[i] + strlen(parts[i]);
        while (e > parts[i] && isspace((unsigned char)e[-1])) *--e = 0;
    }
    const char *kind = parts[0];
    if (!strcmp(kind, "flatten")) return np == 1 ? add_flatten(b, name) : lp_fail(LP_ERR_ARG, "head: 'flatten' takes no options");
    if (!strcmp(kind, "gap") || !strcmp(kind, "globalavgpool")) {
        if (np != 1) return lp_fail(LP_ERR_ARG, "head: 'gap' takes no options");
        if (b->flat) return lp_fail(LP_ERR_ARG, "head: 'gap' after flatten");
        lp_status st = add_apool(b, name, 1, 1);
        if (st) return st;
        b->c = b->c * b->h * b->w;
        b->h = b->w = 1;
        b->flat = true;
        return LP_OK;
    }
    if (!strcmp(kind, "dropout")) {
        float p = 0.5f;
        if (np > 2) return lp_fail(LP_ERR_ARG, "head: 'dropout[:p]' has one option");
        if (np == 2) {
            char *end;
            p = strtof(parts[1], &end);
            if (*end || end == parts[1]) return lp_fail(LP_ERR_ARG, "head: bad dropout probability '%s'", parts[1]);
        }
        return add_dropout(b, name, p);
    }
    if (!strcmp(kind, "dense")) {
        int units = 0;
        bool relu = false;
        for (int i = 1; i < np; i++) {
            if (!strcmp(parts[i], "relu")) relu = true;
            else if (!strcmp(parts[i], "linear") || !strcmp(parts[i], "none") || !strcmp(parts[i], "softmax")) relu = false;
            else {
                char *end;
                long v = strtol(parts[i], &end, 10);
                if (*end || end == parts[i] || v < 1 || v > 1000000)
                    return lp_fail(LP_ERR_ARG, "head: bad dense option '%s' (use dense[:units][:relu])", parts[i]);
                units = (int)v;
            }
        }
        if (!units) {
            if (!last) return lp_fail(LP_ERR_ARG, "head: only the final dense layer may omit its size ('%s')", name);
            units = num_classes;
        }
        if (last) *final_units = units;
        return add_dense(b, name, NULL, relu, units);
    }
    return lp_fail(LP_ERR_ARG, "head: unknown layer '%s' (known: flatten, gap, dense[:units][:relu], dropout[:p])", kind);
}

static lp_status build_head(builder *b);

bool lp_net_arch_has_bn(const char *arch) {
    return arch && (!strncmp(arch, "resnet", 6) || !strcmp(arch, "mobilenet_v2") || !strcmp(arch, "efficientnet_b0"));
}

/* torchvision's ResNet blocks, "V1.5" (the stride on the 3x3 conv; on the first 1x1 with
 * v1, as Keras' ResNet50): convolutions without
 * bias, each followed by batch norm; the shortcut's conv (1x1, the block's stride) and its
 * norm come last, next to the add, so that their gradient goes on as in a chain. Without
 * bn (the test architecture tiny_res): the same graph with biases and the ReLUs on the
 * convolutions. */
static lp_status add_resnet_block(builder *b, const char *prefix, int planes, int stride, bool bottleneck, bool bn, bool v1) {
    const int out_c = bottleneck ? planes * 4 : planes;
    char n[64], r[64];
    const tensor_at in = here(b);
    lp_status st;
    const int convs = bottleneck ? 3 : 2;
    for (int i = 1; i <= convs; i++) {
        const int k = bottleneck && i != 2 ? 1 : 3, s = i == (bottleneck && !v1 ? 2 : 1) ? stride : 1, c = i == convs ? out_c : planes;
        snprintf(n, sizeof n, "%s.conv%d", prefix, i), snprintf(r, sizeof r, "%s.relu%d", prefix, i);
        if ((st = add_conv_bias(b, n, bn || i == convs ? NULL : r, c, k, s, k / 2, !bn))) return st;
        snprintf(n, sizeof n, "%s.bn%d", prefix, i);
        if (bn && (st = add_bn(b, n, i < convs ? r : NULL))) return st;
    }
    snprintf(n, sizeof n, "%s", prefix), snprintf(r, sizeof r, "%s.relu", prefix);
    if (stride == 1 && in.c == out_c) return add_residual(b, n, r, in);
    const tensor_at main = here(b);
    go_to(b, in);
    snprintf(n, sizeof n, "%s.downsample.0", prefix);
    if ((st = add_conv_bias(b, n, NULL, out_c, 1, stride, 0, !bn))) return st;
    snprintf(n, sizeof n, "%s.downsample.1", prefix);
    if (bn && (st = add_bn(b, n, NULL))) return st;
    snprintf(n, sizeof n, "%s", prefix);
    return add_residual(b, n, r, main);
}

/* resnet18/34/50 (torchvision's topology and names; v1 strides for Keras' ResNet50); top=keep:
 * avgpool (global) + fc. */
static lp_status build_resnet(builder *b, const int blocks[4], bool bottleneck) {
    lp_net *net = b->net;
    lp_net_config *c = &net->cfg;
    lp_status st;
    if ((st = add_conv_bias(b, "conv1", NULL, 64, 7, 2, 3, false)) || (st = add_bn(b, "bn1", "relu")) ||
        (st = add_maxpool_pad(b, "maxpool", 3, 2, 1)))
        return st;
    char prefix[32];
    for (int s = 0; s < 4; s++)
        for (int i = 0; i < blocks[s]; i++) {
            snprintf(prefix, sizeof prefix, "layer%d.%d", s + 1, i);
            if ((st = add_resnet_block(b, prefix, 64 << s, i == 0 && s > 0 ? 2 : 1, bottleneck, true, c->resnet_v1))) return st;
        }
    if (strcmp(c->top, "keep")) return build_head(b);
    if ((st = add_gap(b, "avgpool"))) return st;
    net->backbone_layers = net->nlayers;
    if (c->num_classes < 1) return lp_fail(LP_ERR_ARG, "top=keep needs num_classes >= 1");
    return add_dense(b, "fc", NULL, false, c->num_classes);
}

/* A small network with ResNet's graph (no batch norm) for the tests of branches: conv1 3x3
 * 8 + ReLU, max pool 2x2, layer1.0 a block of 8 (identity shortcut), layer2.0 a block of
 * 16 at stride 2 (1x1 conv shortcut); top=keep: avgpool (global) and fc. */
static lp_status build_tiny_res(builder *b) {
    lp_net *net = b->net;
    lp_net_config *c = &net->cfg;
    lp_status st;
    if ((st = add_conv(b, "conv1", "relu", 8, 3, 1, 1)) || (st = add_maxpool(b, "maxpool", 2, 2)) ||
        (st = add_resnet_block(b, "layer1.0", 8, 1, false, false, false)) ||
        (st = add_resnet_block(b, "layer2.0", 16, 2, false, false, false)))
        return st;
    if (strcmp(c->top, "keep")) return build_head(b);
    if ((st = add_gap(b, "avgpool"))) return st;
    net->backbone_layers = net->nlayers;
    if (c->num_classes < 1) return lp_fail(LP_ERR_ARG, "top=keep needs num_classes >= 1");
    return add_dense(b, "fc", NULL, false, c->num_classes);
}

/* The top of torchvision's mobilenet_v2 and efficientnet_b0: top=keep is global pooling,
 * dropout 0.2 and a new classifier.1; top=none the head spec. */
static lp_status add_pooled_top(builder *b) {
    lp_net *net = b->net;
    lp_net_config *c = &net->cfg;
    lp_status st;
    if (strcmp(c->top, "keep")) return build_head(b);
    if ((st = add_gap(b, "avgpool"))) return st;
    net->backbone_layers = net->nlayers;
    if (c->num_classes < 1) return lp_fail(LP_ERR_ARG, "top=keep needs num_classes >= 1");
    if ((st = add_dropout(b, "classifier.0", 0.2f))) return st;
    return add_dense(b, "classifier.1", NULL, false, c->num_classes);
}

/* torchvision's mobilenet_v2 (width 1.0): features.0 conv 3x3/2 + BN + ReLU6, 17 inverted
 * residual blocks (features.1-17: 1x1 expansion + BN + ReLU6 where t > 1, depthwise 3x3 +
 * BN + ReLU6, 1x1 projection + BN, the input added where stride 1 keeps the width),
 * features.18 conv 1x1 to 1280 + BN + ReLU6; top=keep: global pooling, dropout 0.2 and
 * classifier.1. */
static lp_status build_mobilenet_v2(builder *b) {
    static const int setting[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    char n[64], a[64];
    lp_status st;
    if ((st = add_conv_full(b, "features.0.0", NULL, 32, 3, 2, 1, false, 1)) || (st = add_bn_act(b, "features.0.1", "features.0.2", LP_BN_ACT_RELU6)))
        return st;
    int f = 1;
    for (int g = 0; g < 7; g++)
        for (int i = 0; i < setting[g][2]; i++, f++) {
            const int t = setting[g][0], out = setting[g][1], stride = i ? 1 : setting[g][3], in = b->c, hidden = in * t;
            const tensor_at x = here(b);
            int m = 0; /* index in features.f.conv */
            if (t != 1) {
                snprintf(n, sizeof n, "features.%d.conv.0.0", f), snprintf(a, sizeof a, "features.%d.conv.0.2", f);
                if ((st = add_conv_full(b, n, NULL, hidden, 1, 1, 0, false, 1))) return st;
                snprintf(n, sizeof n, "features.%d.conv.0.1", f);
                if ((st = add_bn_act(b, n, a, LP_BN_ACT_RELU6))) return st;
                m = 1;
            }
            snprintf(n, sizeof n, "features.%d.conv.%d.0", f, m), snprintf(a, sizeof a, "features.%d.conv.%d.2", f, m);
            if ((st = add_conv_full(b, n, NULL, hidden, 3, stride, 1, false, hidden))) return st;
            snprintf(n, sizeof n, "features.%d.conv.%d.1", f, m);
            if ((st = add_bn_act(b, n, a, LP_BN_ACT_RELU6))) return st;
            snprintf(n, sizeof n, "features.%d.conv.%d", f, m + 1);
            if ((st = add_conv_full(b, n, NULL, out, 1, 1, 0, false, 1))) return st;
            snprintf(n, sizeof n, "features.%d.conv.%d", f, m + 2);
            if ((st = add_bn(b, n, NULL))) return st;
            snprintf(n, sizeof n, "features.%d", f);
            if (stride == 1 && in == out && (st = add_residual(b, n, NULL, x))) return st;
        }
    if ((st = add_conv_full(b, "features.18.0", NULL, 1280, 1, 1, 0, false, 1)) || (st = add_bn_act(b, "features.18.1", "features.18.2", LP_BN_ACT_RELU6)))
        return st;
    return add_pooled_top(b);
}

static lp_status add_act(builder *b, const char *name, lp_act_kind kind) {
    lp_layer *l = add_layer(b, LP_LAYER_ACT, name);
    if (!l) return LP_ERR_NOMEM;
    l->act = kind;
    return LP_OK;
}

/* torchvision's Conv2dNormActivation: prefix.0 conv (no bias, padding (k - 1) / 2), prefix.1
 * batch norm, prefix.2 SiLU (silu false: none), run inside the batch norm's kernel (one pass
 * over the map each way instead of three; no copy of the batch norm's output kept). */
static lp_status add_conv_bn_silu(builder *b, const char *prefix, int out, int k, int stride, int groups, bool silu) {
    char n[64], act[64];
    lp_status st;
    snprintf(n, sizeof n, "%s.0", prefix);
    if ((st = add_conv_full(b, n, NULL, out, k, stride, (k - 1) / 2, false, groups))) return st;
    snprintf(n, sizeof n, "%s.1", prefix);
    snprintf(act, sizeof act, "%s.2", prefix);
    return add_bn_act(b, n, silu ? act : NULL, LP_BN_ACT_SILU);
}

/* torchvision's SqueezeExcitation: avgpool (global), fc1 (1x1 conv with bias) to squeeze
 * channels, SiLU, fc2 back, sigmoid, and the input scaled channel by channel by that gate. */
static lp_status add_se(builder *b, const char *prefix, int squeeze) {
    char n[64];
    const tensor_at x = here(b);
    lp_status st;
    snprintf(n, sizeof n, "%s.avgpool", prefix);
    if ((st = add_gap(b, n))) return st;
    snprintf(n, sizeof n, "%s.fc1", prefix);
    if ((st = add_dense_shaped(b, n, NULL, false, squeeze, true))) return st;
    snprintf(n, sizeof n, "%s.activation", prefix);
    if ((st = add_act(b, n, LP_ACT_SILU))) return st;
    snprintf(n, sizeof n, "%s.fc2", prefix);
    if ((st = add_dense_shaped(b, n, NULL, false, x.c, true))) return st;
    snprintf(n, sizeof n, "%s.scale_activation", prefix);
    if ((st = add_act(b, n, LP_ACT_SIGMOID))) return st;
    const int gate = b->cur;
    go_to(b, x);
    lp_layer *l = add_layer(b, LP_LAYER_SCALE, prefix);
    if (!l) return LP_ERR_NOMEM;
    l->src2 = gate;
    return LP_OK;
}

/* torchvision's efficientnet_b0 (width and depth 1.0): features.0 conv 3x3/2 + BN + SiLU, 16
 * MBConv blocks in features.1-7 (features.S.I.block: 1x1 expansion + BN + SiLU where the
 * ratio is not 1, depthwise kxk + BN + SiLU, squeeze-and-excitation to a quarter of the
 * block's input width, 1x1 projection + BN; where stride 1 keeps the width, the input is
 * added, the branch dropped per sample with stochastic depth 0.2 x block / 16),
 * features.8 conv 1x1 to 1280 + BN + SiLU; top=keep: global pooling, dropout 0.2 and
 * classifier.1. */
static lp_status build_efficientnet_b0(builder *b) {
    /* expand ratio, kernel, stride, output channels, blocks */
    static const int setting[7][5] = {{1, 3, 1, 16, 1}, {6, 3, 2, 24, 2}, {6, 5, 2, 40, 2}, {6, 3, 2, 80, 3},
                                      {6, 5, 1, 112, 3}, {6, 5, 2, 192, 4}, {6, 3, 1, 320, 1}};
    const int total_blocks = 16;
    lp_net *net = b->net;
    char n[64], pre[48];
    lp_status st;
    if ((st = add_conv_bn_silu(b, "features.0", 32, 3, 2, 1, true))) return st;
    int id = 0;
    for (int g = 0; g < 7; g++)
        for (int i = 0; i < setting[g][4]; i++, id++) {
            const int t = setting[g][0], k = setting[g][1], stride = i ? 1 : setting[g][2], out = setting[g][3];
            const int in = b->c, hidden = in * t;
            const tensor_at x = here(b);
            int m = 0; /* index in block */
            snprintf(pre, sizeof pre, "features.%d.%d", g + 1, i);
            if (t != 1) {
                snprintf(n, sizeof n, "%s.block.%d", pre, m++);
                if ((st = add_conv_bn_silu(b, n, hidden, 1, 1, 1, true))) return st;
            }
            snprintf(n, sizeof n, "%s.block.%d", pre, m++);
            if ((st = add_conv_bn_silu(b, n, hidden, k, stride, hidden, true))) return st;
            snprintf(n, sizeof n, "%s.block.%d", pre, m++);
            if ((st = add_se(b, n, in / 4 > 1 ? in / 4 : 1))) return st;
            snprintf(n, sizeof n, "%s.block.%d", pre, m);
            if ((st = add_conv_bn_silu(b, n, out, 1, 1, 1, false))) return st;
            if (stride == 1 && in == out) {
                if ((st = add_residual(b, pre, NULL, x))) return st;
                net->layers[net->nlayers - 1].p = 0.2f * (float)id / (float)total_blocks;
            }
        }
    if ((st = add_conv_bn_silu(b, "features.8", 1280, 1, 1, 1, true))) return st;
    return add_pooled_top(b);
}

lp_status lp_net_build_layers(lp_net *net) {
    lp_net_config *c = &net->cfg;
    builder b = {.net = net, .c = c->in_c, .h = c->in_h, .w = c->in_w, .cur = -1};
    const int *cfg;
    int width;
    if (c->in_c < 1 || c->in_h < 1 || c->in_w < 1) return lp_fail(LP_ERR_ARG, "bad input shape %dx%dx%d", c->in_c, c->in_h, c->in_w);
    if (!strcmp(c->arch, "tiny_res")) return build_tiny_res(&b);
    if (c->resnet_v1 && strcmp(c->arch, "resnet50"))
        return lp_fail(LP_ERR_ARG, "ResNet v1 strides (Keras' ResNet50) are for resnet50, not %s", c->arch);
    if (c->tf_padding && strcmp(c->arch, "mobilenet_v2") && strcmp(c->arch, "efficientnet_b0"))
        return lp_fail(LP_ERR_ARG, "TensorFlow's padding (Keras' MobileNetV2 and EfficientNetB0) is for mobilenet_v2 and efficientnet_b0, not %s",
                       c->arch);
    static const int r18[4] = {2, 2, 2, 2}, r34[4] = {3, 4, 6, 3};
    if (!strcmp(c->arch, "resnet18")) return build_resnet(&b, r18, false);
    if (!strcmp(c->arch, "resnet34")) return build_resnet(&b, r34, false);
    if (!strcmp(c->arch, "resnet50")) return build_resnet(&b, r34, true);
    if (!strcmp(c->arch, "mobilenet_v2")) return build_mobilenet_v2(&b);
    if (!strcmp(c->arch, "efficientnet_b0")) return build_efficientnet_b0(&b);
    if (!strcmp(c->arch, "vgg16")) cfg = cfg_vgg16, width = 4096;
    else if (!strcmp(c->arch, "vgg19")) cfg = cfg_vgg19, width = 4096;
    else if (!strcmp(c->arch, "tiny")) cfg = cfg_tiny, width = 64;
    else return lp_fail(LP_ERR_ARG, "unknown architecture '%s' (known: vgg16, vgg19, resnet18, resnet34, resnet50, mobilenet_v2, efficientnet_b0, tiny, tiny_res)", c->arch);
    lp_status st;
    int idx = 0;
    char name[32], rname[32];
    for (int i = 0; cfg[i] >= 0; i++) {
        snprintf(name, sizeof name, "features.%d", idx);
        if (cfg[i] == 0) {
            if ((st = add_maxpool(&b, name, 2, 2))) return st;
            idx += 1;
        } else {
            snprintf(rname, sizeof rname, "features.%d", idx + 1);
            if ((st = add_conv(&b, name, rname, cfg[i], 3, 1, 1))) return st;
            idx += 2;
        }
    }
    if (!strcmp(c->top, "keep")) {
        if ((st = add_apool(&b, "avgpool", 7, 7))) return st;
        if ((st = add_flatten(&b, "flatten"))) return st;
        net->backbone_layers = net->nlayers;
        if (c->num_classes < 1) return lp_fail(LP_ERR_ARG, "top=keep needs num_classes >= 1");
        if ((st = add_dense(&b, "classifier.0", "classifier.1", true, width))) return st;
        if ((st = add_dropout(&b, "classifier.2", 0.5f))) return st;
        if ((st = add_dense(&b, "classifier.3", "classifier.4", true, width))) return st;
        if ((st = add_dropout(&b, "classifier.5", 0.5f))) return st;
        if ((st = add_dense(&b, "classifier.6", NULL, false, c->num_classes))) return st;
        return LP_OK;
    }
    return build_head(&b);
}

/* top=none: the head spec after the backbone. */
static lp_status build_head(builder *bp) {
    builder b = *bp;
    lp_net *net = b.net;
    lp_net_config *c = &net->cfg;
    lp_status st;
    if (strcmp(c->top, "none")) return lp_fail(LP_ERR_ARG, "unknown top '%s' (use keep or none)", c->top);
    net->backbone_layers = net->nlayers;
    char spec[sizeof c->head];
    snprintf(spec, sizeof spec, "%s", c->head[0] ? c->head : "flatten,dense");
    int ntok = 1;
    for (char *s = spec; *s; s++) ntok += *s == ',';
    int final_units = 0, index = 0;
    char *save = NULL;
    for (char *tok = strtok_r(spec, ",", &save); tok; tok = strtok_r(NULL, ",", &save), index++) {
        if (c->num_classes < 1 && index == ntok - 1 && !strchr(tok, ':') && !strncmp(tok, "dense", 5))
            return lp_fail(LP_ERR_ARG, "head '%s': final dense has no size and num_classes is not set", c->head);
        if ((st = add_head_token(&b, tok, index, index == ntok - 1, c->num_classes, &final_units))) return st;
    }
    if (index != ntok) return lp_fail(LP_ERR_ARG, "head '%s': empty layer in the list", c->head);
    if (net->nlayers == 0 || net->layers[net->nlayers - 1].kind != LP_LAYER_DENSE)
        return lp_fail(LP_ERR_ARG, "head '%s' must end with a dense layer", c->head);
    if (c->num_classes < 1) c->num_classes = final_units;
    if (final_units != c->num_classes)
        return lp_fail(LP_ERR_ARG, "head '%s': final dense has %d units but there are %d classes", c->head, final_units,
                       c->num_classes);
    return LP_OK;
}
