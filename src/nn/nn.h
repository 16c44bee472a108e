/* nn: layers as data plus forward/backward pairs, the sequential model
 * (backbone + head), freezing, parameter lists, model zoo (VGG16/VGG19 and a
 * tiny CNN for tests), summary. Knows core and backend.
 *
 * Tensors at this API are NCHW float32; the backend keeps oneDNN's blocked
 * layouts internally and reorders only at the model's edges.
 *
 *     lp_net_config c = lp_net_default_config();
 *     strcpy(c.arch, "vgg16"); strcpy(c.top, "none"); strcpy(c.head, "gap,dense");
 *     c.num_classes = 2; c.in_h = c.in_w = 64; c.max_batch = 8;
 *     lp_net *net; lp_net_create(&c, &net);
 *     lp_net_forward(net, x, n, true, seed, logits);
 *     lp_net_loss(net, labels, n, NULL, NULL, &loss);
 *     lp_net_zero_grad(net); lp_net_backward(net); lp_optim_step(opt, lr);
 */
#ifndef LP_NN_H
#define LP_NN_H

#include "core/core.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lp_net lp_net;

/* --precision: the convolutions' number format. */
typedef enum lp_precision { LP_PREC_FP32 = 0, LP_PREC_BF16, LP_PREC_AUTO } lp_precision;
/* "fp32" | "bf16" | "auto" (NULL: fp32); false for anything else. */
bool lp_precision_parse(const char *name, lp_precision *out);

/* Algorithm of the fp32 3x3 stride-1 convolutions. */
typedef enum lp_conv_algo {
    LP_CONV_AUTO = 0,  /* Winograd where it is faster on this machine (net.c lp_layer_conv_winograd), else direct */
    LP_CONV_DIRECT,    /* direct everywhere: the summation order of PyTorch's oneDNN path */
    LP_CONV_WINOGRAD,  /* Winograd wherever oneDNN has a kernel for the layer */
} lp_conv_algo;
/* "auto" | "direct" | "winograd"; false for anything else. */
bool lp_conv_algo_parse(const char *name, lp_conv_algo *out);
const char *lp_conv_algo_name(lp_conv_algo a);

/* Batch normalization in training steps (evaluation always uses the running statistics):
 * train = PyTorch's model.train() (the batch's statistics, running ones updated), frozen =
 * inference mode with fixed statistics (Keras/TF2 for a frozen base), auto = frozen for
 * frozen layers, train for trainable ones. */
typedef enum lp_bn_mode_cfg { LP_BN_AUTO = 0, LP_BN_MODE_TRAIN, LP_BN_MODE_FROZEN } lp_bn_mode_cfg;
/* "auto" | "train" | "frozen" (NULL: auto); false for anything else. */
bool lp_bn_mode_parse(const char *name, lp_bn_mode_cfg *out);
const char *lp_bn_mode_name(lp_bn_mode_cfg m);

typedef struct lp_net_config {
    char arch[16];  /* "vgg16" | "vgg19" | "tiny" (conv8-pool-conv16-pool, for fast tests) | "tiny_res" (branches, for tests) */
    char top[8];    /* "keep": torchvision classifier (avgpool 7x7, fc 4096, fc 4096 with ReLU +
                       dropout 0.5, new output layer; tiny uses width 64) | "none": head spec */
    char head[256]; /* when top=none, e.g. "flatten,dense:256:relu,dropout:0.5,dense:2" or
                       "gap,dense"; the final dense size defaults to num_classes */
    int num_classes, in_c, in_h, in_w;
    int max_batch;  /* largest batch forward/backward will see (a hint: buffers are sized
                       per batch size on first use, larger batches still work) */
    uint64_t seed;  /* init + dropout streams */
    bool bf16;      /* convolutions, pooling and (at batches over 4: lp_net_dense_bf16) dense
                       layers in bf16 (oneDNN, AMX where present): bf16 activations and
                       weight copies, fp32 master weights, gradients, bias, loss. Only
                       where lp_net_bf16_native(); else refused. */
    lp_conv_algo conv_algo; /* fp32 convolutions (bf16 ones are always direct); 0 = auto */
    lp_bn_mode_cfg bn;      /* batch norm in training steps; 0 = auto */
    bool resnet_v1;         /* resnet50 as Keras builds it (ResNet v1): a stage's first bottleneck
                               strides on its first 1x1 conv, not on the 3x3 (torchvision's
                               "V1.5"); the same tensors, another function. Set from the weights
                               (checkpoint metadata resnet_version = v1) */
    bool tf_padding;        /* mobilenet_v2 / efficientnet_b0 as Keras builds them: TensorFlow's
                               "same" padding, which at stride 2 on an even map pads one
                               pixel after and none before (torchvision pads one on each
                               side); the same tensors, another function. Set from the
                               weights (checkpoint metadata padding = tf) */
} lp_net_config;
/* True when this CPU runs bf16 convolutions natively (AVX512-BF16 or AMX). */
bool lp_net_bf16_native(void);
/* True when it has AMX tiles (then bf16 is several times fp32's speed). */
bool lp_net_amx(void);
/* The Winograd algorithm fp32 3x3 convolutions get here (--conv): "F(4x4,3x3)" (oneDNN's,
 * AVX-512), "F(2x2,3x3)" (loupe's, AVX2) or "none". */
const char *lp_net_winograd_kind(void);
/* Whether a net of arch runs bf16 under p: bf16 where the CPU has native bf16 (training
 * falls back to fp32; lp_net_create refuses bf16 without it); auto where it was measured
 * faster than fp32: every model on AVX512-BF16 without AMX (loupe bench, AMD EPYC,
 * 2026-12-07: VGG16 1.07-1.37x, ResNet-18/50 1.3-1.45x, MobileNetV2 and EfficientNet-B0
 * 1.3-1.6x, at 32x32 and 224x224, batches 2 and 16), and on AMX the models without batch
 * norm (VGG16: 1.4x fp32 at 32x32 batch 2, 2.1x at 64x64 batch 16; the others are not
 * measured there yet). */
bool lp_net_use_bf16(lp_precision p, const char *arch);
/* Whether architecture arch has batch norm layers (ResNets, MobileNetV2,
 * EfficientNet-B0); --precision bf16 runs them in bf16 as PyTorch's autocast does (batch
 * norm's data bf16, its statistics, scale and shift fp32). */
bool lp_net_arch_has_bn(const char *arch);
/* Whether a bf16 net runs its dense layers in bf16 at batch n: above 4 only (at 4 or
 * less they are bound by reading the fp32 master weights, which the update needs
 * anyway, and a bf16 copy only adds traffic: layers.c). */
bool lp_net_dense_bf16(const lp_net *net, int n);
/* How many conv layers computed with Winograd in the last forward (0 before
 * one); *conv_layers (optional) gets the number of conv layers. */
int lp_net_winograd_layers(const lp_net *net, int *conv_layers);
/* The same by the rule alone, before any forward (oneDNN may still fall back to direct). */
int lp_net_winograd_planned(const lp_net *net, int *conv_layers);

/* vgg16, top=keep, 2 classes, 3x224x224, max_batch 8, seed 0. */
lp_net_config lp_net_default_config(void);
/* Public lp_model_params (include/loupe.h) -> config (max_batch 1; freeze not applied). */
lp_status lp_net_config_from_model_params(const lp_model_params *p, lp_net_config *c);
lp_status lp_net_create(const lp_net_config *cfg, lp_net **out);
/* init=false leaves the weights uninitialised (to be loaded right after). */
lp_status lp_net_create_ex(const lp_net_config *cfg, bool init, lp_net **out);
void lp_net_free(lp_net *net);
const lp_net_config *lp_net_get_config(const lp_net *net);

/* Parameters: named tensors (torchvision names: features.0.weight OIHW,
 * classifier.6.weight [out,in], head.<i>.weight) living in ONE flat float
 * buffer, grads in another with the same offsets. Index order = layer order. */
int lp_net_param_count(const lp_net *net);
const char *lp_net_param_name(const lp_net *net, int i);
int lp_net_param_shape(const lp_net *net, int i, int64_t shape[4]); /* returns ndim */
/* The stride of the convolution that owns param i (0: not a convolution's) */
int lp_net_param_conv_stride(const lp_net *net, int i);
size_t lp_net_param_numel(const lp_net *net, int i);
/* Writable pointers: taking one marks the net's cached (reordered) weights
 * stale. Use lp_net_param_data to read without that cost. */
float *lp_net_param(lp_net *net, int i);
const float *lp_net_param_data(const lp_net *net, int i);
float *lp_net_grad(lp_net *net, int i);
bool lp_net_param_trainable(const lp_net *net, int i);
/* Parameters as `loupe summary` and Keras count them: batch norm's running statistics
 * included (not trainable), its step counters not. */
void lp_net_param_totals(const lp_net *net, long long *total, long long *trainable);
/* Batch norm's running statistics and step count: saved and loaded with the weights,
 * updated by training forwards, never by the optimizer (never trainable). */
bool lp_net_param_is_buffer(const lp_net *net, int i);
/* A buffer that is a count (num_batches_tracked, one value): I64 in state dicts and files. */
bool lp_net_param_is_count(const lp_net *net, int i);
/* Batch norm layers that normalize with the batch's statistics in training steps (--bn and
 * freezing decide); *bn_layers (optional) gets all batch norm layers. */
int lp_net_bn_batch_stats_layers(const lp_net *net, int *bn_layers);
size_t lp_net_num_weights(const lp_net *net);
float *lp_net_grads(lp_net *net);
/* "base" (whole backbone: features.* and, for top=keep, classifier.0/3) |
 * "none" (everything trains) | a name prefix ("features." or "features.0").
 * Freezing is cumulative ("features.0" then "features.2" freezes both);
 * "none" unfreezes all. Unknown prefix -> LP_ERR_ARG. */
lp_status lp_net_freeze(lp_net *net, const char *spec);

/* x: (n, C, H, W) float NCHW, n <= max_batch. training=true enables dropout
 * (mask from lp_rng with dropout_seed, deterministic whatever the thread
 * count) and keeps what backward needs. logits: (n, num_classes). */
lp_status lp_net_forward(lp_net *net, const float *x, int n, bool training, uint64_t dropout_seed, float *logits);
/* Frozen-prefix feature cache. Returns k > 0 when layers [0, k) hold no
 * trainable parameter and no dropout and layer k-1's output is plain
 * (n, feat) row-major, so that their output is a pure function of the input
 * image (training and inference agree); 0 when there is no such prefix.
 * *feat_per_sample (optional): floats per sample of that output; *name
 * (optional): the last named module of the prefix that is not a view
 * ("features.30", not the flatten after it). */
int lp_net_frozen_prefix(const lp_net *net, size_t *feat_per_sample, const char **name);
/* Inference forward of layers [0, k) of x (n, C, H, W) into feat (n, feat_per_sample). */
lp_status lp_net_forward_prefix(lp_net *net, const float *x, int n, int k, float *feat);
/* Forward of layers [k, L) from feat (output of lp_net_forward_prefix with the
 * same k). Same contract as lp_net_forward otherwise (dropout masks identical,
 * lp_net_loss/lp_net_backward work after it; layers [0, k) must be frozen). */
lp_status lp_net_forward_from(lp_net *net, int k, const float *feat, int n, bool training, uint64_t dropout_seed,
                              float *logits);

/* Softmax cross-entropy from the last forward's logits; loss_per_sample
 * optional (n); mean_loss = mean over n; probs optional (n*K). Stores
 * dlogits = (softmax - onehot)/n for backward. Labels out of range -> LP_ERR_ARG. */
lp_status lp_net_loss(lp_net *net, const int *labels, int n, float *loss_per_sample, float *probs, float *mean_loss);
void lp_net_zero_grad(lp_net *net);
/* Accumulates into grads of trainable params; skips backward below the first
 * trainable layer. Needs a forward with training=true and lp_net_loss before. */
lp_status lp_net_backward(lp_net *net);
/* false when a trainable parameter's gradient holds a NaN or an Inf (checked where the
 * gradients are, whatever their layout: no conversion, so cheap enough for every step). */
bool lp_net_grads_finite(const lp_net *net);

/* Data-parallel training (one batch split over processes):
 * lp_net_set_sample_offset: the batch's first sample is sample `offset` of the whole
 * batch, so that dropout and stochastic depth draw the masks the whole batch's run would;
 * lp_net_scale_loss_grad: dlogits *= factor (n / the whole batch's n: the gradients
 * summed over processes are then the whole batch's mean);
 * lp_net_grads_as_data: every trainable gradient as data, zero where no backward made it
 * (a process whose slice of the batch is empty still adds its gradients to the sums). */
void lp_net_set_sample_offset(lp_net *net, int offset);
/* The trainable gradients in runs of consecutive parameters of at most max_floats, from
 * the top layer down (the order backward completes them), the same runs on every process:
 * where each is, and the layer whose backward completes it (every layer above it is done
 * by then). Returns the count (runs beyond cap are counted, not written). */
typedef struct lp_grad_run {
    float *g;
    size_t n;
    int layer;
} lp_grad_run;
int lp_net_grad_run_list(lp_net *net, size_t max_floats, lp_grad_run *runs, int cap);
/* fn(ctx, l) after layer l's backward in each lp_net_backward (fn NULL: none). */
void lp_net_set_backward_hook(lp_net *net, lp_status (*fn)(void *ctx, int layer), void *ctx);
void lp_net_scale_loss_grad(lp_net *net, float factor);
void lp_net_grads_as_data(lp_net *net);

/* State dict out/in (torchvision names, F32). load: strict=false allows
 * missing tensors (listed in *missing as a malloc'ed comma-separated string,
 * or NULL when none); unknown names or wrong shapes are always an error
 * naming the tensor and both shapes. F32/BF16/F16 inputs are accepted. */
lp_status lp_net_state_dict(lp_net *net, lp_tensor_list *out);
lp_status lp_net_load_state_dict(lp_net *net, const lp_tensor_list *in, bool strict, char **missing);
/* Keras-like table: layer, output shape, params; totals trainable/frozen.
 * *text is malloc'ed. */
lp_status lp_net_summary(lp_net *net, char **text);

/* For tests: the dropout factors (0 or 1/(1-p)) of the last training forward
 * for dropout layer layer_name ("classifier.2", "head.2"), count = n * features. */
const float *lp_net_dropout_mask(lp_net *net, const char *layer_name, size_t *count);

#endif
