/* The ops a network with branches needs beyond a chain's (ResNet): the residual add
 * that joins a skip connection to its block, and the global average pooling before the
 * classifier; and MobileNetV2's ReLU6. Forward and backward on oneDNN, built once per shape like every backend
 * op (backend.h): the caller owns every buffer; scratchpads are user provided (at least
 * *_scratch_size bytes). fp32, or bf16 data in bf16 nets. */
#ifndef LP_GRAPH_OPS_H
#define LP_GRAPH_OPS_H

#include "backend.h"

/* ---- residual add (+ fused ReLU): ResNet's `out += identity; out = relu(out)` ----
 * a, b, y, dy, dx: (n, c, h, w), all in data_md, the one layout both inputs share (the
 * convolutions' nChw16c, nChw8c or nhwc; nchw too).
 *   forward:  y = a + b, then max(y, 0) with relu. y may be a or b (in place).
 *   backward: dx = dy * (y > 0) with relu (y: the forward's output), dx = dy without.
 * The gradient of a and the gradient of b are the same tensor: backward writes it once,
 * into dx, and the caller routes dx to both branches (adding it into a gradient that
 * another consumer of the same tensor also feeds is the caller's job). dx may be dy (in
 * place); without relu and with dx == dy backward does nothing, so a caller may skip it. */
typedef struct lp_residual_add {
    lp_md data_md;
    bool relu;
    lp_prim fwd; /* .impl: oneDNN's binary kernel, e.g. "jit:uni" */
    lp_prim bwd; /* relu: eltwise backward from y; else a copy (reorder) */
    bool has_bwd;
} lp_residual_add;

lp_status lp_residual_add_init(lp_residual_add *r, const lp_md *data_md, bool relu);
lp_status lp_residual_add_init_backward(lp_residual_add *r);
size_t lp_residual_add_scratch_size(const lp_residual_add *r);
lp_status lp_residual_add_forward(lp_residual_add *r, dnnl_stream_t s, const float *a, const float *b, float *y, void *scratch);
lp_status lp_residual_add_backward(lp_residual_add *r, dnnl_stream_t s, const float *dy, const float *y, float *dx,
                                   void *scratch);
void lp_residual_add_free(lp_residual_add *r);

/* ---- global average pooling: PyTorch's AdaptiveAvgPool2d(1) then flatten -------
 * x, dx: (n, c, h, w) in src_md (nchw, nhwc, or nChw8c / nChw16c with c a multiple of the
 * block); y, dy: (n, c) plain row-major.
 *   forward:  y[n][c] = mean over h, w of x[n][c]
 *   backward: dx[n][c][i][j] = dy[n][c] / (h w)   (written, not added) */
typedef struct lp_global_avgpool {
    int n, c, h, w;
    lp_md src_md;
    lp_md dst_md; /* (n, c, 1, 1) in src_md's layout: the same bytes as (n, c) row-major */
    dnnl_primitive_desc_t fwd_pd;
    lp_prim fwd, bwd; /* .impl: oneDNN's pooling kernels, e.g. "jit:avx512_core" */
    bool has_bwd;
} lp_global_avgpool;

lp_status lp_global_avgpool_init(lp_global_avgpool *g, const lp_md *src);
lp_status lp_global_avgpool_init_backward(lp_global_avgpool *g);
size_t lp_global_avgpool_scratch_size(const lp_global_avgpool *g);
lp_status lp_global_avgpool_forward(lp_global_avgpool *g, dnnl_stream_t s, const float *x, float *y, void *scratch);
lp_status lp_global_avgpool_backward(lp_global_avgpool *g, dnnl_stream_t s, const float *dy, float *dx, void *scratch);
/* dx[n][c][i][j] += dy[n][c] / (h w): backward added into a gradient summed from several
 * readers (EfficientNet's squeeze-and-excitation pools the map its gate then scales), with
 * no map of its own and no pass to add it. False, nothing done, unless src_md is fp32
 * pixel vectors (nhwc, nChw8c, nChw16c). */
bool lp_global_avgpool_backward_add(const lp_global_avgpool *g, const float *dy, float *dx);
void lp_global_avgpool_free(lp_global_avgpool *g);

/* ---- ReLU6 (MobileNetV2's activation after batch norm): min(max(x, 0), 6) ----------
 * In place on y, in data_md (any concrete layout; fp32 or bf16). Backward from the output,
 * as PyTorch's hardtanh: dy *= (0 < y < 6) in place (the same set as 0 < x < 6). oneDNN's
 * eltwise clip_v2 (its _use_dst_for_bwd kind for backward). */
typedef struct lp_relu6 {
    lp_md data_md;
    dnnl_primitive_desc_t fwd_pd;
    lp_prim fwd, bwd;
    bool has_bwd;
} lp_relu6;

lp_status lp_relu6_init(lp_relu6 *r, const lp_md *data_md);
lp_status lp_relu6_init_backward(lp_relu6 *r);
size_t lp_relu6_scratch_size(const lp_relu6 *r);
lp_status lp_relu6_forward(lp_relu6 *r, dnnl_stream_t s, float *y, void *scratch);
lp_status lp_relu6_backward(lp_relu6 *r, dnnl_stream_t s, float *dy, const float *y, void *scratch);
void lp_relu6_free(lp_relu6 *r);

/* ---- SiLU and sigmoid (EfficientNet's activation and its squeeze-and-excitation gate) --
 * y = x * sigmoid(x) (SiLU, oneDNN's eltwise swish with alpha 1) or y = sigmoid(x), x and
 * y in data_md (any concrete layout, or (n, c) plain; fp32). Backward dx = dy * f'(x), dx
 * may be dy (in place): SiLU's from x, sigmoid's from y (logistic_use_dst_for_bwd). */
typedef enum lp_act_kind { LP_ACT_SILU = 1, LP_ACT_SIGMOID } lp_act_kind;
typedef struct lp_act {
    lp_md data_md;
    lp_act_kind kind;
    dnnl_primitive_desc_t fwd_pd;
    lp_prim fwd, bwd;
    bool has_bwd;
} lp_act;

lp_status lp_act_init(lp_act *a, lp_act_kind kind, const lp_md *data_md);
lp_status lp_act_init_backward(lp_act *a);
size_t lp_act_scratch_size(const lp_act *a);
lp_status lp_act_forward(lp_act *a, dnnl_stream_t s, const float *x, float *y, void *scratch);
/* x: the forward's input, y: its output (each kind reads the one it needs) */
lp_status lp_act_backward(lp_act *a, dnnl_stream_t s, const float *dy, const float *x, const float *y, float *dx, void *scratch);
void lp_act_free(lp_act *a);

/* ---- channel scale: squeeze-and-excitation's x * gate --------------------------------
 * x, y, dy, dx: (n, c, h, w) in x_md (plain nchw, nhwc, or nChw8c / nChw16c); gate, dgate:
 * (n, c) plain row-major.
 *   forward:  y[n][c][i][j] = x[n][c][i][j] * gate[n][c]
 *   backward: dgate[n][c] = sum over i, j of dy * x;  dx = dy * gate (dx may be dy).
 * Our own loops (OpenMP): oneDNN 2.6's binary has no backward, and its forward has no
 * optimised kernel for a per-(sample, channel) broadcast. fp32. */
typedef struct lp_channel_scale {
    int n, c, hw;
    int vec;    /* values per pixel vector (lp_md_pixel_vectors); 0: plain nchw */
    bool x_bf16, gate_bf16; /* x, y, dy, dx in bf16 (x_md's type); gate and dgate in bf16 */
} lp_channel_scale;
lp_status lp_channel_scale_init(lp_channel_scale *cs, const lp_md *x_md, bool gate_bf16);
void lp_channel_scale_forward(const lp_channel_scale *cs, const void *x, const void *gate, void *y);
void lp_channel_scale_backward(const lp_channel_scale *cs, const void *x, const void *gate, void *dy_dx, void *dgate);
/* The same with dx in a buffer of its own (a fork's summed gradient, written as its first
 * reader's); false, nothing done, in bf16. */
bool lp_channel_scale_backward_into(const lp_channel_scale *cs, const void *x, const void *gate, const float *dy, float *dx, void *dgate);

/* ---- stochastic depth: a residual branch kept or dropped per sample -------------------
 * x, y: n samples of per floats each (any layout with the sample outermost); y = x * m[s]
 * for sample s (in place allowed): torchvision's StochasticDepth(p, "row") with the mask
 * given (0, or 1 / (1 - p) where kept). */
void lp_scale_samples(const void *x, const float *m, void *y, int n, size_t per, bool bf16); /* per: values; bf16: x, y in bf16 */

/* ---- bf16 element-wise (bf16_ops.c): in fp32, rounded to nearest even ---------------
 * g += d (a fork's gradients); y = x * s (in place allowed). n values. */
void lp_bf16_add(uint16_t *g, const uint16_t *d, size_t n);
void lp_bf16_scale(const uint16_t *x, float s, uint16_t *y, size_t n);

#endif
