/* nn internals shared by the files of this layer (not for other layers). */
#ifndef LP_NN_IMPL_H
#define LP_NN_IMPL_H

#include "backend/backend.h"
#include "backend/batchnorm.h"
#include "backend/graph_ops.h"
#include "nn/nn.h"

typedef enum lp_layer_kind {
    LP_LAYER_CONV,    /* conv2d (+ fused ReLU), any layout */
    LP_LAYER_MAXPOOL, /* max pool, any layout */
    LP_LAYER_TOPLAIN, /* reorder to plain NCHW (inserted before plain-only layers) */
    LP_LAYER_APOOL,   /* adaptive average pool (also global average pool), plain */
    LP_LAYER_FLATTEN, /* view (n, C*H*W); no data movement */
    LP_LAYER_DENSE,   /* dense (+ fused ReLU), plain */
    LP_LAYER_DROPOUT, /* inverted dropout, plain */
    LP_LAYER_ADD,     /* residual add of two inputs (+ fused ReLU), their shared layout */
    LP_LAYER_GAP,     /* global average pool (n, C, H, W) -> (n, C), any layout in, plain out */
    LP_LAYER_BN,      /* batch normalization (+ fused ReLU, ReLU6 or SiLU), the convolutions' layout */
    LP_LAYER_ACT,     /* SiLU or sigmoid, any layout (EfficientNet) */
    LP_LAYER_SCALE,   /* squeeze-and-excitation's x * gate: x any layout, gate (n, C) from src2 */
    LP_LAYER_KIND_COUNT
} lp_layer_kind;

/* A growable, 64-byte aligned buffer (contents lost on growth). */
typedef struct lp_buf {
    void *p;
    size_t cap;
} lp_buf;
lp_status lp_buf_reserve(lp_buf *b, size_t bytes, bool *grew);
void lp_buf_free(lp_buf *b);

/* Where a blocked conv weight's transposed twin puts each blk x blk block of the weights
 * (ob, ib, kk: output block, input block, tap, in that order): at the same index, or with
 * swap at (ib, ob, kk), ob_n output and ib_n input blocks, khw taps. */
typedef struct lp_twin_map {
    int blk;
    bool swap;
    long long ob_n, ib_n, khw;
} lp_twin_map;

typedef struct lp_layer {
    lp_layer_kind kind;
    char name[48];      /* module name ("features.0", "classifier.6", "head.1"); "" when internal */
    char relu_name[48]; /* name of a fused ReLU module for the summary ("features.1"), "" if none */
    int pw, pb;         /* parameter indices, -1 when none */
    int prm, prv, pnb;  /* batch norm: running mean, running var, num_batches_tracked (buffers) */
    /* The network is a graph in topological order: src is the layer whose output is
     * this one's input (-1: the network's input; l - 1 in a chain), src2 the second
     * input of an add (-1 otherwise). fork: the output feeds a layer other than the next,
     * or several: its gradient is summed from its consumers in grad_sum, one of the net's
     * grad_sums (forks whose gradients are never live at once share one). */
    int src, src2;
    bool fork;
    int last_reader;   /* fork: the highest layer that reads it (its gradient is live from
                          that layer's backward down to its own) */
    float *grad_sum;
    bool grad_sum_set; /* in this backward, grad_sum holds a first contribution */
    int in_c, in_h, in_w, out_c, out_h, out_w; /* per sample; 2-D data has h = w = 1 */
    int k, stride, pad; /* conv kernel/stride/pad, pool kernel/stride */
    int pad_left, pad_bottom, pad_right; /* conv: the padding on the other sides (pad: the top);
                                            all pad where symmetric, as in every net but one
                                            with TensorFlow's "same" (lp_net_config.tf_padding) */
    int groups;         /* conv: 0 or 1 dense, in_c for depthwise */
    bool relu;
    bool relu6;         /* batch norm: followed by ReLU6 (MobileNetV2) instead of ReLU */
    bool silu;          /* batch norm: followed by SiLU (EfficientNet) instead (relu_name: its module) */
    float p; /* dropout probability; add: stochastic depth's, of dropping the first input (the branch) */
    int act; /* LP_LAYER_ACT: lp_act_kind */
    lp_buf sd_mask, sd_dy; /* add with stochastic depth: the step's per-sample mask; dy unscaled (the skip's) */
    bool sd_on;            /* ... the last training forward dropped with it */
    /* per-layer buffers (shared by all batch-size plans) */
    lp_buf aux;    /* conv: reordered input; maxpool: workspace; dropout: mask */
    lp_buf wf, wb; /* conv: weights in the forward / backward-data layouts */
    lp_buf relu_bits; /* conv: its ReLU mask, a bit a value, where its forward writes one */
    lp_md wf_md, wb_md;
    bool wf_valid, wb_valid;
    /* conv weights stored in a blocked layout (store.c): st_md while st_blocked */
    bool st_blocked, st_has_re;
    lp_md st_md;
    lp_reorder st_to_blk, st_to_plain;
    /* backward-data's layout is st_md with each 16x16 (AVX-512) or 8x8 (AVX2) inner block
     * transposed (OIhw16o16i vs OIhw16i16o), or also its outer order (IOhw16o16i: 1x1
     * convolutions'): the optimizer then writes wb along with the update (store.c) */
    bool twin;
    lp_twin_map twin_map;
    lp_md twin_md;
    /* bf16 training, conv weights stored OIhw16i16o: the optimizer writes the bf16 forward
     * (OhwI16i32o2i, in wf) and backward-data (OIhw16o16i2o, in wb) copies as it updates
     * (AMX's layouts), or with bf16_blk16 AVX512-BF16's: forward OIhw8i16o2i, backward-data
     * OIhw8o16i2o (IOhw8o16i2o with bf16_bwd_swap: 1x1's); dense weights: their bf16 copy
     * (out, in) in wf */
    bool bf16_copies, bf16_copy_bwd, bf16_blk16, bf16_bwd_swap;
    lp_md bf16_fwd_md, bf16_bwd_md;
    bool grad_consumed; /* this backward applied the weight's update itself (fused): its gradient is not kept */
} lp_layer;

typedef struct lp_plan_layer {
    lp_md in_md, out_md;
    int in_slot, out_slot; /* activation slots; out_slot == in_slot for views */
    int in2_slot;          /* an add's second input, in in2_md */
    lp_md in2_md;
    bool alias;
    union {
        struct {
            lp_conv2d op;
            bool in_re; /* input reordered into aux */
            lp_reorder re_in, re_din, re_wf, re_wb, re_wbf, re_dw, re_dw_set; /* re_wbf: forward copy -> backward-data layout */
            bool has_re_din, has_re_wf, has_re_wb, has_re_dw;
            bool dy_masked; /* the max pool after it applies the ReLU's backward */
            bool relu_bits; /* the forward writes the ReLU mask as bits into the layer's relu_bits */
            lp_reorder re_wsf; /* bf16: blocked fp32 storage -> bf16 forward copy (built on use) */
            bool has_re_wsf;
        } conv;
        lp_maxpool pool;
        struct {
            lp_reorder fwd, bwd;
            bool has_bwd;
        } re;
        lp_dense dense;
        struct {
            lp_residual_add op;
            bool re2;              /* the second input is in another layout: reordered to the first's */
            lp_reorder fwd2, bwd2; /* second input -> aux; dx -> the second input's layout (aux) */
        } add;
        lp_global_avgpool gap;
        lp_act act;
        lp_channel_scale scale;
        struct {
            lp_batchnorm train, frozen; /* built on first use */
            bool has_train, has_frozen;
            bool last_train; /* the mode of the last training forward (backward follows it) */
        } bn;
    } u;
} lp_plan_layer;

typedef struct lp_plan {
    int n;
    bool training;
    uint64_t last_use;
    lp_plan_layer *layers;
} lp_plan;

#define LP_MAX_PLANS 8

enum { LP_GRAD_ZERO, LP_GRAD_DATA, LP_GRAD_STALE /* logically zero, memory not cleared */ };

typedef struct lp_param {
    char name[48];
    int ndim;
    int64_t shape[4];
    size_t offset, numel;
    bool trainable;
    int grad_state; /* LP_GRAD_*: zero_grad is lazy, backward overwrites logically-zero grads */
    int layer;
    bool buffer; /* saved and loaded, never trained, no gradient (batch norm's running statistics) */
    bool int64;  /* an integer in the state dict (num_batches_tracked), a float here */
} lp_param;

struct lp_net {
    lp_net_config cfg;
    int nlayers;
    lp_layer *layers;
    int nparams;
    lp_param *params;
    size_t nweights;
    float *weights, *grads;
    dnnl_stream_t stream;
    /* activation slots: slot 0 is the caller's input, slot l+1 the output of layer l
     * (training plans, and forks in inference plans), slots L+1 and L+2 the ping-pong
     * outputs of inference plans */
    lp_buf *act;
    lp_buf diff[2], scratch, tmp_dw, tmp_db, tmp_dx, store_tmp;
    lp_buf *grad_sums; /* the forks' summed gradients (nlayers of them at most; backward_targets) */
    lp_plan plans[LP_MAX_PLANS];
    uint64_t use_counter;
    /* last forward */
    lp_plan *cur;
    int last_n;
    bool last_training, loss_ready;
    bool acts_consumed; /* backward wrote input gradients over activations (net.c backward_targets) */
    int sample_offset;  /* lp_net_set_sample_offset: the masks' counters start at this sample */
    lp_status (*bwd_hook)(void *ctx, int layer); /* lp_net_set_backward_hook */
    void *bwd_hook_ctx;
    float *dlogits; /* (cap_batch, K) */
    int dlogits_cap;
    double *prof; /* NULL, or per layer l: [2l] forward and [2l+1] backward seconds (bench) */
    /* lp_net_backward_step: the optimizer and learning rate that conv layers with the
     * small-map backward-weights kernel apply inside backward (NULL: none) */
    struct lp_optim *fuse_opt;
    float fuse_lr;
    /* summary bookkeeping */
    int backbone_layers; /* layers[0..backbone_layers) come from the backbone */
};

/* A conv layer's weights in PyTorch's plain layout: oihw, or goihw with groups (layers.c). */
lp_md lp_layer_conv_w_plain(const lp_layer *l);

/* kind table (layers.c) */
typedef struct lp_layer_ops {
    const char *type;  /* for the summary: "Conv2d", ... */
    lp_status (*plan)(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n); /* in_md set; sets out_md, alias */
    lp_status (*prepare_backward)(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights);
    lp_status (*forward)(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                         uint64_t seed, uint64_t stream);
    /* dy may be modified (ReLU mask applied in place). dx NULL when not needed. */
    /* weights: compute parameter gradients; accumulate: add to them (else overwrite). */
    lp_status (*backward)(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                          float *dx, bool weights, bool accumulate);
    void (*free_plan)(lp_plan_layer *pl);
} lp_layer_ops;
extern const lp_layer_ops lp_layer_kinds[LP_LAYER_KIND_COUNT];

/* layers.c: the gradient of an add's second input, given dx, the gradient of its first
 * (the same values; another buffer where the layouts differ). */
lp_status lp_layer_dx2(lp_net *net, lp_layer *l, lp_plan_layer *pl, const float *dx, const float **dx2);

/* Layer L's backward (it has no weights) with its input gradient put straight into sum, the
 * summed gradient of its input x: added where another reader's is there (set), written
 * where L is the first; where L's kind and layout allow it (a global pool adds its
 * broadcast, a channel scale writes dy * gate, its gate's gradient still to aux for
 * lp_layer_dx2), else false, nothing done. Saves a map and a pass that copies or adds it. */
bool lp_layer_dx_into_sum(lp_net *net, lp_layer *L, lp_plan_layer *pl, const float *x, const float *dy, float *sum, bool set);

/* The kind of the activation module a layer with relu_name runs after itself: "SiLU",
 * "ReLU6" or "ReLU". */
static inline const char *lp_layer_act_name(const lp_layer *L) { return L->silu ? "SiLU" : L->relu6 ? "ReLU6" : "ReLU"; }

/* Whether batch-norm layer L normalizes with the batch's statistics in a training step. */
bool lp_layer_bn_train(const lp_net *net, const lp_layer *L);
/* Whether add layer L drops its branch per sample (stochastic depth) in a training step:
 * where the branch is trained, or with --bn train (PyTorch's model.train()); a frozen
 * block runs as in inference, as Keras runs a frozen base (and stays a function of the
 * image for the feature cache). */
bool lp_layer_sd_active(const lp_net *net, const lp_layer *L);

/* zoo.c: fills net->layers/params from the config (no allocation of weights). */
lp_status lp_net_build_layers(lp_net *net);
/* net.c */
void lp_net_materialize_grad(lp_net *net, int i); /* STALE -> memset -> ZERO */
void lp_net_invalidate_weights(lp_net *net, bool trainable_only);
lp_status lp_net_reserve_scratch(lp_net *net, size_t bytes);
/* store.c: layer L's weight tensor, its gradient (when it holds data) to the blocked
 * layout md (f32, unpadded); lp_net_store_plain: every layer back to plain OIHW (called
 * before weights or gradients leave the net). The optimizer keeps its state in the
 * param's storage layout (lp_net_param_store_md: NULL when plain) and converts it
 * with lp_net_param_store_convert. */
lp_status lp_net_store_blocked(lp_net *net, lp_layer *L, const lp_md *md);
lp_status lp_net_store_plain(lp_net *net);
const lp_md *lp_net_param_store_md(const lp_net *net, int i);
lp_status lp_net_param_store_convert(lp_net *net, int i, float *buf, bool to_blocked);
/* Backward-data's weights copy as the blocked storage's transposed twin:
 * lp_net_note_twin (conv backward) records whether bwd_md is one for layer L;
 * lp_net_param_twin gives the optimizer the copy of param i to write as it
 * updates the weights (NULL when there is none), and
 * lp_net_param_twin_written marks it current after the update. */
void lp_net_note_twin(lp_layer *L, const lp_md *bwd_md);
/* Whether conv layer l computes with oneDNN's Winograd F(4x4,3x3): the rule of --conv (net.c). */
bool lp_layer_conv_winograd(const lp_net *net, const lp_layer *l);
float *lp_net_param_twin(lp_net *net, int i, lp_twin_map *map);
void lp_net_param_twin_written(lp_net *net, int i);
/* The same for bf16: lp_net_note_bf16_copies (conv backward) records whether layer L's
 * storage and bf16 copies have the layouts the optimizer writes (bwd_md NULL: no
 * backward-data copy); lp_net_param_bf16_copies fills *c for param i (false: none);
 * lp_net_param_twin_written marks them current too. */
typedef struct lp_bf16_copies {
    uint16_t *fwd, *bwd; /* bwd NULL: none */
    int o, i, khw;
    bool plain; /* dense: fwd is w (out, in) in bf16, element for element */
    bool blk16; /* AVX512-BF16's layouts (lp_layer.bf16_blk16); bwd's blocks placed by bwd_map */
    lp_twin_map bwd_map;
} lp_bf16_copies;
void lp_net_note_bf16_copies(lp_layer *L, const lp_md *fwd_md, const lp_md *bwd_md);
/* A dense layer's bf16 copy (wf): its descriptor (bf16_fwd_md), set when a bf16 plan is
 * made; written by the update from now on (on: the bf16 plan's training forward) or not. */
lp_status lp_net_dense_bf16_md(lp_layer *L);
void lp_net_note_dense_bf16_copy(lp_layer *L, bool on);
/* optim.c: c[j] = w[j] rounded to bf16 for j in [lo, hi) (AVX512-BF16 only). */
void lp_bf16_plain_range(uint16_t *c, const float *w, long long lo, long long hi);
bool lp_net_param_bf16_copies(lp_net *net, int i, lp_bf16_copies *c);

/* optim.c: one parameter's update in a step, in pieces. lp_optim_step runs it over
 * the whole gradient; a fused step (lp_net_backward_step) runs it inside backward
 * on each piece of a conv weight's gradient as the small-map kernel makes it, then
 * marks it done with lp_optim_param_fused so that lp_optim_step skips it. */
typedef struct lp_param_update {
    float *w, *m, *v;
    const float *g;
    float lr;
    bool first;                       /* SGD: no momentum buffer yet */
    float step_size, bc2_sqrt, decay; /* Adam */
    float *twin;                      /* or NULL */
    lp_twin_map twin_map;             /* its blocks (16x16 or 8x8) and where they go */
    lp_bf16_copies cp;
    bool copies;
    int param;
} lp_param_update;
struct lp_optim;
lp_status lp_optim_param_begin(struct lp_optim *o, int i, float lr, lp_param_update *u);
/* Elements [lo, hi) (whole blocks of the twin's) from gradient g[0, hi - lo); non-zero when
 * a weight came out NaN/Inf. */
uint32_t lp_optim_param_range(const struct lp_optim *o, const lp_param_update *u, const float *g, long long lo, long long hi);
void lp_optim_param_fused(struct lp_optim *o, const lp_param_update *u, uint32_t bad);
/* The backward half of lp_net_backward_step (the bench times the halves). */
lp_status lp_net_backward_fused(lp_net *net, struct lp_optim *o, float lr);
/* For loupe bench: the update of every trainable parameter alone (optim.c). */
lp_status lp_optim_time_update(struct lp_optim *o, double *seconds);
/* bench_layers.c: after a training step, runs each layer's primitives once alone,
 * adding seconds to t[2l] (forward), t[2l+1] (backward) and setting gflop[2l], [2l+1]. */
lp_status lp_bench_time_primitives(lp_net *net, double *t, double *gflop);
/* The per-layer table (malloc'ed) from net->prof and prim, both summed over steps,
 * with the update alone (per step) as the last kernel. */
lp_status lp_bench_layer_table(const lp_net *net, const double *prim, const double *gflop, int steps, double step_s,
                               double update_s, char **text, double *primitive_s);

#endif
