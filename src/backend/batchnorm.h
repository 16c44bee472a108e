/* Batch normalization over (n, c, h, w), fp32 or bf16 data (bf16 nets; statistics,
 * scale and shift always fp32, as PyTorch's batch norm under autocast), on oneDNN, with exactly
 * torch.nn.BatchNorm2d's semantics (eps, biased variance in the normalization, the
 * unbiased one in the running update, momentum, num_batches_tracked).
 *
 *   y = gamma * (x - mean) / sqrt(var + eps) + beta        (then ReLU, ReLU6 or SiLU)
 *
 * Modes:
 *   LP_BN_TRAIN   PyTorch's model.train(): mean and var are the batch's (per channel,
 *                 over n*h*w values; var biased); forward returns them so that the
 *                 caller updates the running statistics (lp_batchnorm_update_running).
 *                 Backward is the full derivative through the batch statistics.
 *   LP_BN_FROZEN  PyTorch's model.eval() (and Keras' frozen base): mean and var are the
 *                 running statistics, given; backward treats them as constants:
 *                 dx = dy * gamma / sqrt(var + eps); gamma and beta still get gradients.
 *
 * Tensors: x, y, dy, dx (n, c, h, w) in data_md (one layout for all four, the one the
 * producing convolution hands over: nChw16c, nChw8c, nhwc or nchw); gamma, beta, mean,
 * var, dgamma, dbeta (c) plain. ws: ws_size bytes (0 on our kernel, without an activation,
 * or in a forward-only LP_BN_FROZEN op): what oneDNN's path keeps from forward for backward,
 * the ReLU mask, or SiLU's input z.
 * Backward writes (does not add into) dgamma and dbeta. Scratchpad as every backend op:
 * user provided, at least lp_batchnorm_scratch_size bytes.
 *
 * Kernels: with ReLU6 or SiLU (or p.fused), fp32 in pixel vectors of a multiple of 8
 * channels (nChw16c, nChw8c, most nhwc) runs our own, the activation fused
 * (batchnorm_fused.c); the rest oneDNN's, with its fused ReLU, or ReLU6 (relu6.c) or SiLU
 * (activation.c) as an eltwise pass after it. */
#ifndef LP_BATCHNORM_H
#define LP_BATCHNORM_H

#include "backend.h"
#include "graph_ops.h"

typedef enum lp_bn_mode { LP_BN_TRAIN, LP_BN_FROZEN } lp_bn_mode;

#define LP_BN_EPS 1e-5f     /* torch.nn.BatchNorm2d's default */
#define LP_BN_MOMENTUM 0.1f /* likewise */

typedef struct lp_batchnorm_params {
    int n, c, h, w;
    float eps; /* 0: LP_BN_EPS (Keras' ResNet50 uses 1.001e-5) */
    lp_bn_mode mode;
    bool relu;     /* ReLU after the normalization (PyTorch: bn then relu) */
    bool relu6;    /* ReLU6 instead (MobileNetV2: min(max(z, 0), 6)) */
    bool silu;     /* SiLU instead of either (EfficientNet: z * sigmoid(z)) */
    bool fused;    /* our fused kernel wherever it takes the layout, not only with ReLU6 */
    bool backward; /* backward will run: LP_BN_FROZEN then keeps the ReLU mask too */
} lp_batchnorm_params;

/* ---- the fused kernel of our own (batchnorm_fused.c) ---- */
enum { LP_BN_ACT_NONE, LP_BN_ACT_RELU, LP_BN_ACT_RELU6, LP_BN_ACT_SILU };
typedef struct lp_bn_fused {
    int n, c, hw, vec, nb; /* vec channels a pixel vector, nb = c / vec blocks */
    int chunk, nchunk;     /* pixels a task, tasks a (block, sample) */
    bool per_block;        /* each thread runs all passes over one channel block, then the next */
} lp_bn_fused;
/* True (and *vec set) when md is fp32 pixel vectors of a multiple of 8 channels. */
bool lp_bn_fused_layout(const lp_md *md, int *vec);
void lp_bn_fused_plan(lp_bn_fused *f, int n, int c, int hw, int vec);
size_t lp_bn_fused_scratch_size(const lp_bn_fused *f);
/* batch_stats: mean and var computed (biased) and written; else read. */
void lp_bn_fused_forward(const lp_bn_fused *f, bool batch_stats, const float *x, const float *gamma, const float *beta, float *mean,
                         float *var, float eps, int act, float *y, void *scratch);
/* dx (may be dy, or NULL: dy may then be overwritten), dgamma, dbeta (either may be NULL)
 * written. y: the forward's output (read with SiLU only). */
void lp_bn_fused_backward(const lp_bn_fused *f, bool batch_stats, const float *x, const float *y, float *dy, const float *gamma,
                          const float *beta, const float *mean, const float *var, float eps, int act, float *dx, float *dgamma,
                          float *dbeta, void *scratch);

/* SiLU on z = a x + b inside the fused kernel's passes (batchnorm_silu.c), over np pixels of
 * vec channels: y = silu(z); g = dy silu'(z) from x and the forward's y (g may be dy). */
void lp_bn_silu_forward(const float *x, float *y, int vec, int np, const float *a, const float *b);
void lp_bn_silu_grad(const float *x, const float *y, const float *dy, float *g, int vec, int np, const float *a, const float *b);

typedef struct lp_batchnorm {
    lp_batchnorm_params p;
    lp_md data_md;  /* x, y, dx, dy */
    size_t ws_size; /* bytes of ws (0: none): oneDNN's ReLU mask, or SiLU's input */
    bool own;       /* our fused kernel (fused); else oneDNN's primitives below */
    lp_bn_fused fused;
    dnnl_primitive_desc_t fwd_pd;
    lp_prim fwd, bwd; /* .impl: the kernel's name, e.g. "bnorm_jit:avx512_core" or "loupe:fused" */
    dnnl_memory_t bwd_shift, bwd_ws; /* backward's arguments beyond lp_prim's eight */
    lp_relu6 relu6;                  /* oneDNN's path with p.relu6: in place on y */
    lp_act silu;                     /* oneDNN's path with p.silu: from ws (or y, in place) to y */
    bool has_bwd;
} lp_batchnorm;

/* src: the layout x comes in (NULL: nChw16c at AVX-512 and above, nChw8c at AVX2, nchw
 * below, each where c is a multiple of the block; else nchw). Fails with LP_ERR_SHAPE in
 * LP_BN_TRAIN when a channel has a single value (n*h*w == 1), as PyTorch does. */
lp_status lp_batchnorm_init(lp_batchnorm *b, const lp_batchnorm_params *p, const lp_md *src);
/* Builds the backward primitive (once; p.backward must have been set). */
lp_status lp_batchnorm_init_backward(lp_batchnorm *b);
size_t lp_batchnorm_scratch_size(const lp_batchnorm *b);
/* LP_BN_TRAIN: mean, var written (the batch's, var biased). LP_BN_FROZEN: read (the
 * running statistics). ws: NULL when ws_size is 0. y may be x (in place) only in an op without backward,
 * which reads x. */
lp_status lp_batchnorm_forward(lp_batchnorm *b, dnnl_stream_t s, const float *x, const float *gamma, const float *beta,
                               float *mean, float *var, float *y, void *ws, void *scratch);
/* dy: gradient of the output (after the activation; its mask comes from ws, from x or,
 * ReLU6 on oneDNN's path, from y). x, y, gamma, beta, mean, var, ws: those of the forward. dx
 * written (may be dy; NULL: not wanted, dy may then be overwritten); dgamma, dbeta written (either may be NULL when not
 * wanted). With ReLU6 or SiLU on oneDNN's path, dy is overwritten with the gradient of z. */
lp_status lp_batchnorm_backward(lp_batchnorm *b, dnnl_stream_t s, const float *x, const float *y, float *dy, const float *gamma,
                                const float *beta, const float *mean, const float *var, const void *ws, float *dx, float *dgamma,
                                float *dbeta, void *scratch);
void lp_batchnorm_free(lp_batchnorm *b);

/* PyTorch's running-statistics update after a LP_BN_TRAIN forward over count = n*h*w
 * values per channel (count >= 2):
 *   running_mean = (1 - momentum) * running_mean + momentum * mean
 *   running_var  = (1 - momentum) * running_var  + momentum * var * count / (count - 1)
 *   *num_batches_tracked += 1 */
void lp_batchnorm_update_running(float *running_mean, float *running_var, int64_t *num_batches_tracked, const float *mean,
                                 const float *var, int c, int64_t count, float momentum);

#endif
