/* conv2d forward/backward on oneDNN: any kernel size and stride, padding per side,
 * groups (depthwise included), with or without bias. Layouts chosen by oneDNN (format any)
 * for weights and output; the input layout is the one the caller has (or
 * any for the model's first layer). ReLU is fused as a post-op. Direct or
 * Winograd algorithm, as the caller asks (nn decides where Winograd pays). Where they
 * are faster, our own kernels (conv_*_small.c on small maps, conv_bwd_w_rgb.c and
 * conv_bwd_w_amx.c) run instead, and bf16 backward data runs as a forward. */
#include "backend.h"
#include "conv_wino.h"
#include <stdio.h>
#include <string.h>

bool lp_conv_fwd_own_allowed = true, lp_conv_bwd_d_own_allowed = true, lp_conv_bwd_w_own_allowed = true;
bool lp_conv_bwd_w_rgb_amx_allowed = true;

/* ---- where our kernels replace oneDNN's ------------------------------------------- */

/* 3x3, stride 1, pad 1 on every side, groups 1: the only convolution VGG has, and the only
 * one our kernels compute (every row's fits asks for it); oneDNN runs all others. The fp32
 * kernels take it with or without a bias (ResNet's have none: the small-map backward
 * weights then writes its bias gradient to the caller's scratch, Winograd skips it). */
static bool same_3x3_any_bias(const lp_conv2d_params *p) {
    return p->kh == 3 && p->kw == 3 && p->sh == 1 && p->sw == 1 && p->ph == 1 && p->pw == 1 && p->ph_extra == 0 &&
           p->pw_extra == 0 && lp_conv2d_groups(p) == 1;
}
/* ... with a bias: the bf16 kernels (bf16_nhwc_3x3) and the bf16 small-map backward weights */
static bool same_3x3(const lp_conv2d_params *p) { return same_3x3_any_bias(p) && !p->no_bias; }

/* The weights' dims: (k, c, kh, kw), or (g, k/g, c/g, kh, kw) with groups. Returns ndims. */
static int weights_dims(const lp_conv2d_params *p, int64_t *d) {
    const int g = lp_conv2d_groups(p);
    if (g == 1) {
        d[0] = p->k, d[1] = p->c, d[2] = p->kh, d[3] = p->kw;
        return 4;
    }
    d[0] = g, d[1] = p->k / g, d[2] = p->c / g, d[3] = p->kh, d[4] = p->kw;
    return 5;
}

lp_md lp_conv2d_weights_plain_md(const lp_conv2d_params *p, dnnl_data_type_t dt) {
    dnnl_dims_t d;
    const int nd = weights_dims(p, d);
    lp_md md;
    memset(&md, 0, sizeof md);
    dnnl_memory_desc_init_by_tag(&md, nd, d, dt, nd == 4 ? dnnl_oihw : dnnl_goihw);
    return md;
}

/* The 4-d weights layout md is tag in data type dt, for dims (o, i, kh, kw) (oneDNN
 * chose it; the kernels and the optimizer's copy writers know only these). */
static bool dims_layout_is(const lp_md *md, int64_t o, int64_t i, const lp_conv2d_params *p, dnnl_data_type_t dt,
                           dnnl_format_tag_t tag) {
    lp_md want;
    dnnl_dims_t wd = {o, i, p->kh, p->kw};
    return dnnl_memory_desc_init_by_tag(&want, 4, wd, dt, tag) == dnnl_success && lp_md_equal(&want, md);
}

/* The conv's (k, c, 3, 3) weights. */
static bool weights_are(const lp_md *md, const lp_conv2d_params *p, dnnl_data_type_t dt, dnnl_format_tag_t tag) {
    return dims_layout_is(md, p->k, p->c, p, dt, tag);
}

/* The (c, k, 3, 3) weights of the convolution run backward (flipped_bwd_data). */
static bool flipped_weights_are(const lp_md *md, const lp_conv2d_params *p, dnnl_data_type_t dt, dnnl_format_tag_t tag) {
    return dims_layout_is(md, p->c, p->k, p, dt, tag);
}

/* bf16 3x3 with x and y nhwc (the layout of oneDNN's AMX kernels; blocked layouts get
 * other weight layouts): what all our bf16 kernels take. */
static bool bf16_nhwc_3x3(const lp_conv2d *c) {
    const lp_conv2d_params *p = &c->p;
    int vx, vy;
    return p->bf16 && same_3x3(p) && c->src_md.data_type == dnnl_bf16 && c->dst_md.data_type == dnnl_bf16 &&
           lp_md_pixel_vectors(&c->src_md, &vx) && lp_md_pixel_vectors(&c->dst_md, &vy) && vx == p->c && vy == p->k;
}

#if LP_X86_KERNELS
/* The bf16 forward and backward-data kernels: maps of at most 4 pixels (VGG's 2x2 at
 * 32x32 input; at 4x4 backward data was slower than oneDNN's in the training step, 0.9
 * ms more per step) and batches of at most 8 positions (one register tile: the weights
 * are read once), bf16 nhwc. */
static bool bf16_nhwc_tile(const lp_conv2d *c) {
    const lp_conv2d_params *p = &c->p;
    return bf16_nhwc_3x3(c) && lp_bf16_native() && p->h * p->w <= 4 && p->n * p->h * p->w <= 8;
}
#endif

/* ---- the table of our kernels ------------------------------------------------------
 * One entry a kernel: the pass it replaces, the ISA level it needs (lp_cpu_isa, so that
 * ONEDNN_MAX_CPU_ISA caps it with oneDNN's), fits (the shapes and layouts it takes,
 * given the weights layout and the name of oneDNN's kernel for that pass; it may set
 * up c), its scratch and its run. The first entry that fits replaces oneDNN's kernel;
 * none: oneDNN's runs. Rows of x86-64 code exist only where it is built (backend.h's
 * LP_X86_KERNELS); elsewhere oneDNN's kernels run. */
enum { PASS_FWD, PASS_BWD_DATA, PASS_BWD_W };
typedef struct lp_conv_kernel {
    const char *name;
    int pass;
    lp_isa isa;
    int blk; /* the block of values the kernel works in, where it has a choice */
    bool (*fits)(lp_conv2d *c, const struct lp_conv_kernel *k, const lp_md *w_md, const char *onednn);
    size_t (*scratch)(const lp_conv2d *c);
    lp_status (*fwd)(const lp_conv2d *c, const void *x, const void *w, const float *b, void *y, uint16_t *bits, void *scratch);
    lp_status (*bwd_data)(lp_conv2d *c, dnnl_stream_t s, const void *dy, const void *w, void *dx, void *scratch);
    lp_status (*bwd_w)(const lp_conv2d *c, const void *x, const void *dy, const void *relu_y, const uint16_t *bits, float *dw,
                       float *db, void *scratch);
    bool in_pieces;  /* bwd_w, bwd_data: also as prepare + pairs (the fused update) */
    bool masks_relu; /* bwd_w: multiplies dy by y's ReLU mask (or bits) as it reads it */
    bool relu_bits;  /* fwd: can write y's ReLU mask as bits */
} lp_conv_kernel;

/* The flipped forward (backward data on AMX): plain C and oneDNN, on every architecture. */
static bool fits_bwd_data_flipped(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *w_md, const char *onednn);
static size_t scratch_none(const lp_conv2d *c) { return 0; } /* the flipped forward's own, counted apart */
static lp_status run_bwd_data_flipped(lp_conv2d *c, dnnl_stream_t st, const void *dy, const void *w, void *dx, void *s);

#if LP_X86_KERNELS /* the kernels of x86-64 code (backend.h) */
/* Forward: also 32k channels in and out, and weights AcdB16b32a2b (the optimizer writes
 * that copy). */
static bool fits_fwd_small(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *w_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    return lp_conv_fwd_own_allowed && bf16_nhwc_tile(c) && p->c % 32 == 0 && p->k % 32 == 0 &&
           weights_are(w_md, p, dnnl_bf16, dnnl_AcdB16b32a2b);
}

/* Forward with 3 input channels on AMX (conv_fwd_rgb_amx.c says why), bf16 nhwc, 32k
 * output channels, on maps larger than the small-map kernels', with the weights layout
 * oneDNN's forward chose for them, Adcb16a. */
static bool fits_fwd_rgb_amx(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *w_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    return lp_conv_fwd_own_allowed && bf16_nhwc_3x3(c) && p->c == 3 && p->k % 32 == 0 && p->h * p->w > 16 &&
           weights_are(w_md, p, dnnl_bf16, dnnl_Adcb16a) && lp_conv_bwd_w_amx_ready();
}

/* Backward data: also 32k output channels, and weights ABcd16a16b2a. */
static bool fits_bwd_data_small(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *w_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    if (!lp_conv_bwd_d_own_allowed || !bf16_nhwc_tile(c) || p->c % 16 || p->k % 32 ||
        !weights_are(w_md, p, dnnl_bf16, dnnl_ABcd16a16b2a))
        return false;
    c->vec_x = p->c, c->vec_y = p->k;
    return true;
}

/* Maps of at most 16 pixels where the batch has at most 256 (position, tap) products per
 * weight: where the small-map kernels beat oneDNN's (fits_bwd_w_small says by how much). */
static bool small_maps(const lp_conv2d_params *p) {
    return p->h * p->w <= 16 && (long long)p->n * (3 * p->h - 2) * (3 * p->w - 2) <= 256;
}

/* Backward weights, fp32 or bf16 (AVX-512, blocks of 16) or fp32 (AVX2, blocks of 8), x
 * and dy in pixel-vector layouts, where it is faster than oneDNN's, or where oneDNN has
 * only its reference kernel (AVX2 on maps of 2x2 and less; ours is then used at any batch).
 * Faster: maps of at most 16 pixels (VGG's 4x4 and 2x2 at 32x32 input) where the batch
 * has at most 256 (position, tap) products per weight: its time grows with them, and
 * oneDNN's is faster beyond (AVX-512, 512x512 layers, 2 cores: 4x4 batch 2 0.47-0.50 vs
 * 0.48-0.58 ms, batch 16 5.1 vs 4.0-4.5 ms; 2x2 batch 16 1.0 vs 2.7-3.3 ms). The
 * gradient layout is then ours, ABcd<blk>b<blk>a: oneDNN's own choice for AVX-512, and
 * the layout its AVX2 forward reads weights in, so that weights, gradient and optimizer
 * state stay in one blocked layout between steps (nn's storage). */
static bool fits_bwd_w_small(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *dw_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    const dnnl_data_type_t dt = p->bf16 ? dnnl_bf16 : dnnl_f32;
    const int b = k->blk;
    const bool ref = onednn && !strncmp(onednn, "ref", 3);
    int vx, vy;
    if (!lp_conv_bwd_w_own_allowed || (!small_maps(p) && !ref) || !(p->bf16 ? same_3x3(p) : same_3x3_any_bias(p)) || p->c % b ||
        p->k % b || (p->bf16 && b != 16) ||
        c->src_md.data_type != dt || c->dst_md.data_type != dt || !lp_md_pixel_vectors(&c->src_md, &vx) ||
        !lp_md_pixel_vectors(&c->dst_md, &vy) || vx % b || vy % b)
        return false;
    lp_md ours;
    dnnl_dims_t wd = {p->k, p->c, 3, 3};
    if (dnnl_memory_desc_init_by_tag(&ours, 4, wd, dnnl_f32, b == 16 ? dnnl_ABcd16b16a : dnnl_ABcd8b8a) != dnnl_success)
        return false;
    c->bw_dw_md = ours;
    c->vec_x = vx, c->vec_y = vy, c->wblk = b;
    return true;
}

/* Backward weights of a depthwise convolution where oneDNN has no depthwise kernel for it
 * (jit_dw takes 3x3 only: 5x5 falls to its generic kernel, 5-12% of the memory bandwidth;
 * conv_bwd_w_dw.c), fp32 (bf16 on AVX-512), x and dy in pixel-vector layouts; the gradient in PyTorch's
 * plain order (g, 1, 1, kh, kw), which nn reorders into its storage. */
static bool fits_bwd_w_dw(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *dw_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    int vx, vy;
    const dnnl_data_type_t dt = p->bf16 ? dnnl_bf16 : dnnl_f32;
    if (!lp_conv_bwd_w_own_allowed || (p->bf16 && k->blk != 16) || p->groups < 2 || p->groups != p->c || p->k != p->c ||
        !lp_conv_bwd_w_dw_fits(p) || (onednn && !strncmp(onednn, "jit_dw", 6)) || p->c % k->blk || c->src_md.data_type != dt ||
        c->dst_md.data_type != dt ||
        !lp_md_pixel_vectors(&c->src_md, &vx) || !lp_md_pixel_vectors(&c->dst_md, &vy) || vx % k->blk || vy % k->blk)
        return false;
    c->bw_dw_md = lp_conv2d_weights_plain_md(p, dnnl_f32);
    c->vec_x = vx, c->vec_y = vy, c->wblk = k->blk;
    return true;
}
static lp_status run_bwd_w_dw(const lp_conv2d *c, const void *x, const void *dy, const void *y, const uint16_t *bits, float *dw,
                              float *db, void *s) {
    lp_conv_bwd_w_dw(&c->p, c->oh, c->ow, c->wblk, c->vec_x, c->vec_y, x, dy, dw, db);
    return LP_OK;
}

/* Backward weights with 3 input channels (VGG's first layer on RGB images), bf16 nhwc,
 * on maps larger than the small-map kernel's: oneDNN's AMX kernel runs there at about
 * 100 GFLOP/s (conv_bwd_w_rgb.c says why). Its gradient layout too must be oneDNN's
 * choice, ABcd16b16a. On AMX tiles (conv_bwd_w_rgb_amx.c: 22 -> 11 ms at 224x224 batch
 * 16, ReLU mask included) with 32k output channels, else on AVX512-BF16. */
static bool fits_bwd_w_rgb(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *dw_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    if (k->isa == LP_ISA_AMX && (!lp_conv_bwd_w_rgb_amx_allowed || p->k % 32 || !lp_conv_bwd_w_amx_ready())) return false;
    return lp_conv_bwd_w_own_allowed && bf16_nhwc_3x3(c) && p->c == 3 && p->k % 16 == 0 && p->h * p->w > 16 &&
           weights_are(dw_md, p, dnnl_f32, dnnl_ABcd16b16a);
}

/* Backward weights on AMX (conv_bwd_w_amx.c says why and how fast), bf16 nhwc with 32k
 * channels in and out, on maps larger than the small-map kernel's. Gradient layout
 * oneDNN's choice, ABcd16b16a. */
static bool fits_bwd_w_amx(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *dw_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    return lp_conv_bwd_w_own_allowed && bf16_nhwc_3x3(c) && p->c % 32 == 0 && p->k % 32 == 0 && p->h * p->w > 16 &&
           weights_are(dw_md, p, dnnl_f32, dnnl_ABcd16b16a) && lp_conv_bwd_w_amx_ready();
}

/* Winograd F(2x2,3x3) on AVX2 (conv_wino_avx2.c), for all three passes: where nn asked
 * for Winograd (its rule, lp_layer_conv_winograd, says where it pays) and oneDNN has none
 * (below AVX-512), fp32 VGG-style 3x3 with c and k multiples of 8; weights OIhw8i8o,
 * whatever oneDNN's forward (which then never runs) chose. Backward data and weights
 * follow the forward: they read and write the weights in its layout, so nn keeps
 * weights, gradient and optimizer state there and reorders none of them. */
static bool fits_fwd_wino(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *w_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    int vx, vy;
    lp_md ours;
    dnnl_dims_t wd = {p->k, p->c, 3, 3};
    if (!lp_conv_fwd_own_allowed || !p->winograd || lp_winograd_onednn() || p->bf16 || !same_3x3_any_bias(p) || p->c % 8 || p->k % 8 ||
        !lp_md_pixel_vectors(&c->src_md, &vx) || !lp_md_pixel_vectors(&c->dst_md, &vy) || vx % 8 || vy % 8 ||
        dnnl_memory_desc_init_by_tag(&ours, 4, wd, dnnl_f32, dnnl_ABcd8b8a) != dnnl_success)
        return false;
    c->w_md = ours; /* ours runs every pass, so the layout is ours: oneDNN's AVX2 choice for nChw8c */
    c->vec_x = vx, c->vec_y = vy;
    c->alg = dnnl_convolution_winograd; /* what the layer computes with, for summaries */
    return true;
}
static lp_status run_fwd_wino(const lp_conv2d *c, const void *x, const void *w, const float *b, void *y, uint16_t *bits,
                              void *s) {
    return lp_conv_wino_avx2_fwd(&c->p, c->vec_x, c->vec_y, x, w, b, y, s);
}
static bool fits_bwd_data_wino(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *w_md, const char *onednn) {
    if (!lp_conv_bwd_d_own_allowed || !c->k_fwd || c->k_fwd->fwd != run_fwd_wino) return false;
    c->bd_w_md = c->w_md;
    return true;
}
static bool fits_bwd_w_wino(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *dw_md, const char *onednn) {
    if (!lp_conv_bwd_w_own_allowed || !c->k_fwd || c->k_fwd->fwd != run_fwd_wino) return false;
    c->bw_dw_md = c->w_md;
    return true;
}
static size_t scratch_wino(const lp_conv2d *c) { return lp_conv_wino_avx2_scratch(&c->p); }
static lp_status run_bwd_data_wino(lp_conv2d *c, dnnl_stream_t st, const void *dy, const void *w, void *dx, void *s) {
    return lp_conv_wino_avx2_bwd_data(&c->p, c->vec_x, c->vec_y, dy, w, dx, s);
}
static lp_status run_bwd_w_wino(const lp_conv2d *c, const void *x, const void *dy, const void *y, const uint16_t *bits,
                                float *dw, float *db, void *s) {
    return lp_conv_wino_avx2_bwd_w(&c->p, c->vec_x, c->vec_y, x, dy, dw, db, s);
}

/* Backward data fp32 on AVX-512 where the small-map backward weights runs with blocks of
 * 16 (the same shapes, fits_bwd_w_small), from the forward's weights ABcd16b16a: the
 * pieces of conv_bwd_w_small.c, which the fused step also runs, so that its dx is the
 * same. */
static bool fits_bwd_data_small_fp32(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *w_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    int vx, vy;
    if (!lp_conv_bwd_d_own_allowed || !lp_conv_bwd_w_own_allowed || !small_maps(p) || !same_3x3_any_bias(p) ||
        !lp_conv_bwd_d_small_pair_fits(p, 16) || p->c % 16 || p->k % 16 || c->src_md.data_type != dnnl_f32 ||
        c->dst_md.data_type != dnnl_f32 || !lp_md_pixel_vectors(&c->src_md, &vx) || !lp_md_pixel_vectors(&c->dst_md, &vy) ||
        vx % 16 || vy % 16 || !weights_are(&c->w_md, p, dnnl_f32, dnnl_ABcd16b16a))
        return false;
    c->bd_w_md = c->w_md;
    c->vec_x = vx, c->vec_y = vy;
    return true;
}
static lp_status run_bwd_data_small_fp32(lp_conv2d *c, dnnl_stream_t st, const void *dy, const void *w, void *dx, void *s) {
    lp_conv_bwd_d_small_fp32(&c->p, c->vec_x, c->vec_y, dy, w, dx, s);
    return LP_OK;
}

static size_t scratch_fwd_small(const lp_conv2d *c) { return lp_conv_fwd_small_scratch(&c->p); }
static size_t scratch_fwd_rgb_amx(const lp_conv2d *c) { return lp_conv_fwd_rgb_amx_scratch(&c->p); }
static size_t scratch_bwd_data_small(const lp_conv2d *c) { return lp_conv_bwd_d_small_scratch(&c->p); }
static size_t scratch_bwd_w_small(const lp_conv2d *c) { return lp_conv_bwd_w_small_scratch(&c->p); }
static size_t scratch_bwd_w_rgb(const lp_conv2d *c) { return lp_conv_bwd_w_rgb_scratch(&c->p); }
static size_t scratch_bwd_w_rgb_amx(const lp_conv2d *c) { return lp_conv_bwd_w_rgb_amx_scratch(&c->p); }
static size_t scratch_bwd_w_amx(const lp_conv2d *c) { return lp_conv_bwd_w_amx_scratch(&c->p); }

static lp_status run_fwd_small(const lp_conv2d *c, const void *x, const void *w, const float *b, void *y, uint16_t *bits, void *s) {
    lp_conv_fwd_small(&c->p, x, w, b, y, s);
    return LP_OK;
}
static lp_status run_fwd_rgb_amx(const lp_conv2d *c, const void *x, const void *w, const float *b, void *y, uint16_t *bits,
                            void *s) {
    lp_conv_fwd_rgb_amx(&c->p, x, w, b, y, bits, s);
    return LP_OK;
}
static lp_status run_bwd_data_small(lp_conv2d *c, dnnl_stream_t st, const void *dy, const void *w, void *dx, void *s) {
    lp_conv_bwd_d_small(&c->p, c->vec_x, c->vec_y, dy, w, dx, s);
    return LP_OK;
}
static lp_status run_bwd_w_small(const lp_conv2d *c, const void *x, const void *dy, const void *y, const uint16_t *bits, float *dw,
                            float *db, void *s) {
    lp_conv_bwd_w_small(&c->p, c->wblk, c->vec_x, c->vec_y, x, dy, dw, db, s);
    return LP_OK;
}
static lp_status run_bwd_w_rgb(const lp_conv2d *c, const void *x, const void *dy, const void *y, const uint16_t *bits, float *dw,
                          float *db, void *s) {
    lp_conv_bwd_w_rgb(&c->p, x, dy, y, dw, db, s);
    return LP_OK;
}
static lp_status run_bwd_w_rgb_amx(const lp_conv2d *c, const void *x, const void *dy, const void *y, const uint16_t *bits, float *dw,
                              float *db, void *s) {
    /* the bits: 1/16 of y's bytes (at 224x224 batch 16, y is 103 MB) */
    lp_conv_bwd_w_rgb_amx(&c->p, x, dy, bits ? NULL : y, bits, dw, db, s);
    return LP_OK;
}
static lp_status run_bwd_w_amx(const lp_conv2d *c, const void *x, const void *dy, const void *y, const uint16_t *bits, float *dw,
                          float *db, void *s) {
    lp_conv_bwd_w_amx(&c->p, x, dy, dw, db, s);
    return LP_OK;
}
#endif /* LP_X86_KERNELS */

static const lp_conv_kernel kernels[] = {
#if LP_X86_KERNELS
    {"loupe:avx2_wino_2x2_3x3", PASS_FWD, LP_ISA_AVX2, 0, fits_fwd_wino, scratch_wino, .fwd = run_fwd_wino},
    {"loupe:avx2_wino_2x2_3x3", PASS_BWD_DATA, LP_ISA_AVX2, 0, fits_bwd_data_wino, scratch_wino, .bwd_data = run_bwd_data_wino},
    {"loupe:avx2_wino_2x2_3x3", PASS_BWD_W, LP_ISA_AVX2, 0, fits_bwd_w_wino, scratch_wino, .bwd_w = run_bwd_w_wino},
    {"loupe:avx512_bf16_3x3_small", PASS_FWD, LP_ISA_AVX512_BF16, 0, fits_fwd_small, scratch_fwd_small, .fwd = run_fwd_small},
    {"loupe:amx_bf16_3x3_rgb", PASS_FWD, LP_ISA_AMX, 0, fits_fwd_rgb_amx, scratch_fwd_rgb_amx, .fwd = run_fwd_rgb_amx,
     .relu_bits = true},
    {"loupe:avx512_bf16_3x3_small", PASS_BWD_DATA, LP_ISA_AVX512_BF16, 0, fits_bwd_data_small, scratch_bwd_data_small,
     .bwd_data = run_bwd_data_small},
    {"loupe:avx512_3x3_small", PASS_BWD_DATA, LP_ISA_AVX512, 16, fits_bwd_data_small_fp32, scratch_bwd_w_small,
     .bwd_data = run_bwd_data_small_fp32, .in_pieces = true},
#endif
    {"loupe:flipped", PASS_BWD_DATA, LP_ISA_AMX, 0, fits_bwd_data_flipped, scratch_none, .bwd_data = run_bwd_data_flipped},
#if LP_X86_KERNELS
    {"loupe:avx512_3x3_small", PASS_BWD_W, LP_ISA_AVX512, 16, fits_bwd_w_small, scratch_bwd_w_small, .bwd_w = run_bwd_w_small,
     .in_pieces = true},
    {"loupe:avx2_3x3_small", PASS_BWD_W, LP_ISA_AVX2, 8, fits_bwd_w_small, scratch_bwd_w_small, .bwd_w = run_bwd_w_small,
     .in_pieces = true},
    {"loupe:amx_bf16_3x3_rgb", PASS_BWD_W, LP_ISA_AMX, 0, fits_bwd_w_rgb, scratch_bwd_w_rgb_amx, .bwd_w = run_bwd_w_rgb_amx,
     .masks_relu = true},
    {"loupe:avx512_3x3_rgb", PASS_BWD_W, LP_ISA_AVX512_BF16, 0, fits_bwd_w_rgb, scratch_bwd_w_rgb, .bwd_w = run_bwd_w_rgb,
     .masks_relu = true},
    {"loupe:amx_bf16_3x3", PASS_BWD_W, LP_ISA_AMX, 0, fits_bwd_w_amx, scratch_bwd_w_amx, .bwd_w = run_bwd_w_amx},
    {"loupe:avx512_dw", PASS_BWD_W, LP_ISA_AVX512, 16, fits_bwd_w_dw, scratch_none, .bwd_w = run_bwd_w_dw},
    {"loupe:avx2_dw", PASS_BWD_W, LP_ISA_AVX2, 8, fits_bwd_w_dw, scratch_none, .bwd_w = run_bwd_w_dw},
#endif
};

/* oneDNN's name for the kernel of pd ("jit:avx2", "ref:any"). */
static void impl_of(const_dnnl_primitive_desc_t pd, char *buf, size_t n) {
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    snprintf(buf, n, "%s", impl ? impl : "");
}

/* The first of our kernels for pass that this CPU (as capped) runs and that fits; it
 * then replaces oneDNN's in pr (name and scratch). NULL: oneDNN's runs. */
static const lp_conv_kernel *pick(lp_conv2d *c, int pass, const lp_md *w_md, lp_prim *pr, const char *onednn) {
    const lp_isa isa = lp_cpu_isa();
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++) {
        const lp_conv_kernel *k = &kernels[i];
        if (k->pass != pass || k->isa > isa || !k->fits(c, k, w_md, onednn)) continue;
        size_t s = k->scratch(c);
        if (s > pr->scratch_size) pr->scratch_size = s;
        if (k->bwd_data != run_bwd_data_flipped) snprintf(pr->impl, sizeof pr->impl, "%s", k->name);
        return k;
    }
    return NULL;
}

bool lp_conv2d_bwd_w_in_pieces(const lp_conv2d *c) { return c->k_bwd_w && c->k_bwd_w->in_pieces; }
bool lp_conv2d_bwd_d_in_pieces(const lp_conv2d *c) { return c->k_bwd_data && c->k_bwd_data->in_pieces; }
bool lp_conv2d_bwd_w_masks_relu(const lp_conv2d *c) { return c->k_bwd_w && c->k_bwd_w->masks_relu; }

/* Whether md is plain nhwc (n, c, h, w with c fastest). */
static bool md_is_nhwc(const lp_md *md) {
    lp_md want;
    dnnl_dims_t d = {0};
    if (md->ndims != 4 || md->format_kind != dnnl_blocked) return false;
    memcpy(d, md->dims, 4 * sizeof d[0]);
    return dnnl_memory_desc_init_by_tag(&want, 4, d, md->data_type, dnnl_nhwc) == dnnl_success && lp_md_equal(&want, md);
}

/* Whether oneDNN's kernel for pd is its reference one ("ref:any"). */
static bool is_ref(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    return dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl && !strncmp(impl, "ref", 3);
}

lp_status lp_conv2d_init(lp_conv2d *c, const lp_conv2d_params *p, const lp_md *src) {
    memset(c, 0, sizeof *c);
    c->p = *p;
    const int g = lp_conv2d_groups(p), pb = lp_conv2d_pad_bottom(p), pr = lp_conv2d_pad_right(p);
    if (p->n < 1 || p->c < 1 || p->k < 1 || p->kh < 1 || p->kw < 1 || p->sh < 1 || p->sw < 1 || p->ph < 0 || p->pw < 0 ||
        pb < 0 || pr < 0)
        return lp_fail(LP_ERR_ARG, "conv2d: bad parameters (sizes, kernel and stride must be positive, padding not negative)");
    if (p->c % g || p->k % g)
        return lp_fail(LP_ERR_ARG, "conv2d: %d groups do not divide %d input and %d output channels", g, p->c, p->k);
    /* floor, as PyTorch; a pad past the last window's reach is allowed (oneDNN checks it too) */
    c->oh = p->h + p->ph + pb >= p->kh ? (p->h + p->ph + pb - p->kh) / p->sh + 1 : 0;
    c->ow = p->w + p->pw + pr >= p->kw ? (p->w + p->pw + pr - p->kw) / p->sw + 1 : 0;
    if (c->oh < 1 || c->ow < 1)
        return lp_fail(LP_ERR_SHAPE, "conv2d: input %dx%d too small for kernel %dx%d", p->h, p->w, p->kh, p->kw);
    dnnl_dims_t wd;
    int64_t sd[4] = {p->n, p->c, p->h, p->w}, bd[1] = {p->k}, dd[4] = {p->n, p->k, c->oh, c->ow};
    const int wn = weights_dims(p, wd);
    dnnl_data_type_t dt = p->bf16 ? dnnl_bf16 : dnnl_f32;
    lp_md src_md = src ? *src : lp_md_any_dt(4, sd, dt), w_md = lp_md_any_dt(wn, wd, dt), b_md = lp_md_plain(1, bd),
          dst_md = lp_md_any_dt(4, dd, dt);
    dnnl_dims_t strides = {p->sh, p->sw}, pad_l = {p->ph, p->pw}, pad_r = {pb, pr};
    dnnl_primitive_attr_t attr;
    lp_status st = lp_attr_create(&attr, p->relu, false);
    if (st) return st;
    /* Winograd is a speed choice, not a promise: where oneDNN has no kernel for
     * this shape or CPU, the direct algorithm computes the same convolution (out of
     * memory is an error either way). F(4x4,3x3) is for dense 3x3 stride 1 only. */
    const bool wino_shape = p->kh == 3 && p->kw == 3 && p->sh == 1 && p->sw == 1 && g == 1;
    c->alg = p->winograd && wino_shape ? dnnl_convolution_winograd : dnnl_convolution_direct;
    for (;;) {
        dnnl_convolution_desc_t desc;
        dnnl_status_t ds = dnnl_convolution_forward_desc_init(&desc, dnnl_forward_training, c->alg, &src_md, &w_md,
                                                              p->no_bias ? NULL : &b_md, &dst_md, strides, pad_l, pad_r);
        if (ds == dnnl_success) ds = dnnl_primitive_desc_create(&c->fwd_pd, &desc, attr, lp_dnnl_engine(), NULL);
        if (ds != dnnl_success && ds != dnnl_out_of_memory && c->alg == dnnl_convolution_winograd) {
            c->alg = dnnl_convolution_direct;
            continue;
        }
        st = lp_dnnl_check(ds, "conv2d forward");
        break;
    }
    /* Given nhwc input and any output, oneDNN 2.6's fp32 jit kernels (depthwise, 1x1 and
     * direct) want the output nhwc too, and only its reference kernel is left: ask for an
     * nhwc output there, and keep it where that finds a kernel other than the reference. */
    if (!st && src && md_is_nhwc(src) && is_ref(c->fwd_pd)) {
        dnnl_dims_t ddims = {p->n, p->k, c->oh, c->ow};
        dnnl_convolution_desc_t desc;
        dnnl_primitive_desc_t pd = NULL;
        if (dnnl_memory_desc_init_by_tag(&dst_md, 4, ddims, dt, dnnl_nhwc) == dnnl_success &&
            dnnl_convolution_forward_desc_init(&desc, dnnl_forward_training, c->alg, &src_md, &w_md, p->no_bias ? NULL : &b_md,
                                               &dst_md, strides, pad_l, pad_r) == dnnl_success &&
            dnnl_primitive_desc_create(&pd, &desc, attr, lp_dnnl_engine(), NULL) == dnnl_success && !is_ref(pd)) {
            dnnl_primitive_desc_destroy(c->fwd_pd);
            c->fwd_pd = pd;
        } else if (pd) {
            dnnl_primitive_desc_destroy(pd);
        }
    }
    /* Still the reference kernel on the given layout (e.g. 8 channels padded to a block of 16,
     * where "any" output picks nhwc): ask for the input's own blocking on the output, and else
     * let oneDNN choose the input layout too (the layer then reorders its input: a pass over it,
     * against a reference convolution forward and backward). */
    const dnnl_blocking_desc_t *bk = src && src->format_kind == dnnl_blocked ? &src->format_desc.blocking : NULL;
    const int vec = bk && bk->inner_nblks == 1 && bk->inner_idxs[0] == 1 ? (int)bk->inner_blks[0] : 0; /* nChw<vec>c */
    const bool blocked = vec == 8 || vec == 16;
    for (int attempt = blocked ? 0 : 1; !st && src && attempt < 2 && is_ref(c->fwd_pd); attempt++) {
        const lp_md any_src = lp_md_any_dt(4, sd, dt);
        lp_md out = lp_md_any_dt(4, dd, dt);
        dnnl_dims_t ddims = {p->n, p->k, c->oh, c->ow};
        dnnl_convolution_desc_t desc;
        dnnl_primitive_desc_t pd = NULL;
        if ((attempt == 1 || dnnl_memory_desc_init_by_tag(&out, 4, ddims, dt, vec == 16 ? dnnl_aBcd16b : dnnl_aBcd8b) == dnnl_success) &&
            dnnl_convolution_forward_desc_init(&desc, dnnl_forward_training, c->alg, attempt ? &any_src : &src_md, &w_md,
                                               p->no_bias ? NULL : &b_md, &out, strides, pad_l, pad_r) == dnnl_success &&
            dnnl_primitive_desc_create(&pd, &desc, attr, lp_dnnl_engine(), NULL) == dnnl_success && !is_ref(pd)) {
            dnnl_primitive_desc_destroy(c->fwd_pd);
            c->fwd_pd = pd;
        } else if (pd) {
            dnnl_primitive_desc_destroy(pd);
        }
    }
    dnnl_primitive_attr_destroy(attr);
    if (st) return st;
    c->src_md = *dnnl_primitive_desc_query_md(c->fwd_pd, dnnl_query_src_md, 0);
    c->w_md = *dnnl_primitive_desc_query_md(c->fwd_pd, dnnl_query_weights_md, 0);
    if (!p->no_bias) c->b_md = *dnnl_primitive_desc_query_md(c->fwd_pd, dnnl_query_weights_md, 1);
    c->dst_md = *dnnl_primitive_desc_query_md(c->fwd_pd, dnnl_query_dst_md, 0);
    static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
    if ((st = lp_prim_create(&c->fwd, c->fwd_pd, kinds, p->no_bias ? 3 : 4))) {
        lp_conv2d_free(c);
        return st;
    }
    char onednn[64];
    snprintf(onednn, sizeof onednn, "%s", c->fwd.impl);
    c->k_fwd = pick(c, PASS_FWD, &c->w_md, &c->fwd, onednn); /* fwd.p is kept: backward's hint */
    return LP_OK;
}

/* A backward primitive desc (data, or weights with bias) for weights layout w_md,
 * with the forward's algorithm; direct where oneDNN has no Winograd one for it.
 * Returns oneDNN's status: the caller decides whether failing is an error. */
static dnnl_status_t backward_pd(const lp_conv2d *c, bool data, const lp_md *w_md, const lp_md *x_md, const lp_md *y_md,
                                 dnnl_primitive_desc_t *pd) {
    const lp_conv2d_params *p = &c->p;
    dnnl_dims_t strides = {p->sh, p->sw}, pad_l = {p->ph, p->pw}, pad_r = {lp_conv2d_pad_bottom(p), lp_conv2d_pad_right(p)};
    int64_t bd[1] = {p->k};
    lp_md db = lp_md_plain(1, bd);
    dnnl_primitive_attr_t attr;
    if (lp_attr_create(&attr, false, false)) return dnnl_out_of_memory;
    dnnl_alg_kind_t algs[2] = {c->alg, dnnl_convolution_direct};
    dnnl_status_t ds = dnnl_unimplemented;
    for (int i = 0; i < (c->alg == dnnl_convolution_direct ? 1 : 2) && ds != dnnl_success && ds != dnnl_out_of_memory; i++) {
        dnnl_convolution_desc_t desc;
        ds = data ? dnnl_convolution_backward_data_desc_init(&desc, algs[i], x_md, w_md, y_md, strides, pad_l, pad_r)
                  : dnnl_convolution_backward_weights_desc_init(&desc, algs[i], x_md, w_md, p->no_bias ? NULL : &db, y_md,
                                                                strides, pad_l, pad_r);
        if (ds == dnnl_success) ds = dnnl_primitive_desc_create(pd, &desc, attr, lp_dnnl_engine(), c->fwd_pd);
    }
    dnnl_primitive_attr_destroy(attr);
    if (ds != dnnl_success) *pd = NULL;
    return ds;
}

/* Backward data of a 3x3 stride 1 pad 1 convolution is the forward convolution of dy
 * with the weights transposed (in <-> out) and turned 180 degrees: oneDNN 2.6 has a
 * brgemm AMX kernel for the forward only, and it ran VGG's layers faster than the
 * backward-data one (batch 16, alone: 128->128 at 112x112 17.8 vs 21.5 ms, 256->256 at
 * 56x56 17.0 vs 20.8, 64->64 at 224x224 23.9 vs 26.7; 24 ms of a 680 ms step). bf16,
 * nhwc, 32k channels, weights given in oneDNN's backward-data layout ABcd16a16b2a
 * (flip_weights rewrites them for the forward's AcdB16b32a2b). True when set up. */
static bool fits_bwd_data_flipped(lp_conv2d *c, const lp_conv_kernel *k, const lp_md *bd_w_md, const char *onednn) {
    const lp_conv2d_params *p = &c->p;
    if (!lp_conv_bwd_d_own_allowed || !bf16_nhwc_3x3(c) || p->c % 32 || p->k % 32 ||
        !weights_are(bd_w_md, p, dnnl_bf16, dnnl_ABcd16a16b2a))
        return false;
    int64_t wd[4] = {p->c, p->k, p->kh, p->kw};
    lp_md w_md = lp_md_any_dt(4, wd, dnnl_bf16);
    dnnl_dims_t strides = {1, 1}, pad = {1, 1};
    dnnl_primitive_attr_t attr;
    if (lp_attr_create(&attr, false, false)) return false;
    dnnl_convolution_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    bool ok = dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &c->dst_md, &w_md, NULL,
                                                 &c->src_md, strides, pad, pad) == dnnl_success &&
              dnnl_primitive_desc_create(&pd, &desc, attr, lp_dnnl_engine(), NULL) == dnnl_success;
    dnnl_primitive_attr_destroy(attr);
    const char *impl = NULL;
    ok = ok && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl && !strncmp(impl, "brg", 3) &&
         flipped_weights_are(dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), p, dnnl_bf16, dnnl_AcdB16b32a2b);
    static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    lp_prim pr;
    ok = ok && lp_prim_create(&pr, pd, kinds, 3) == LP_OK;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (!ok) return false;
    lp_prim_free(&c->bwd_data); /* oneDNN's, which this replaces */
    c->bwd_data = pr;
    c->flip_bytes = ((size_t)p->k * p->c * 9 * 2 + 63) / 64 * 64;
    snprintf(c->bwd_data.impl, sizeof c->bwd_data.impl, "loupe:flipped+%s", impl);
    return true;
}

/* w (k, c, 3, 3) in ABcd16a16b2a to the flipped forward's (c, k, 3, 3) AcdB16b32a2b, tap
 * (kh, kw) to (2 - kh, 2 - kw). Both layouts hold, for each 32 output channels o, input
 * block of 16 i and tap, 16 runs of (16 i x 2 o) values: 64-byte runs, moved whole. */
static void flip_weights(const lp_conv2d_params *p, const uint16_t *w, uint16_t *f) {
    const int ib16 = p->c / 16, ob32 = p->k / 32;
LP_OMP(parallel for schedule(static))
    for (int u = 0; u < ob32 * ib16 * 9; u++) {
        const int tap = u % 9, b = (u / 9) % ib16, a = u / 9 / ib16;
        const uint16_t *s = w + (size_t)u * 512;
        uint16_t *d = f + ((size_t)((b / 2) * 9 + 8 - tap) * ob32 + a) * 1024 + (b % 2) * 32;
        for (int j = 0; j < 16; j++) memcpy(d + j * 64, s + j * 32, 64);
    }
}

/* Where oneDNN's backward weights for the forward's layouts is its reference kernel
 * (depthwise 5x5 on nChw16c / nChw8c, at every level of oneDNN 2.6), one on nhwc copies
 * of x and dy when oneDNN has another kernel for that: EfficientNet-B0's 240-channel 5x5
 * at 28x28, batch 16, AVX-512, 2 threads: 1515 ms against 21 ms, plus 22 ms for each copy
 * (one cold run). *pd becomes that kernel's, bw_dw_md its gradient layout. Not an error
 * when there is none. Our depthwise kernel (conv_bwd_w_dw.c; docs/engine.md has its
 * figures) takes the fp32 cases before this is tried; this remains for the others. */
static lp_status bwd_w_on_nhwc_copies(lp_conv2d *c, const lp_md *dw_any, dnnl_primitive_desc_t *pd) {
    const lp_conv2d_params *p = &c->p;
    if (md_is_nhwc(&c->src_md) && md_is_nhwc(&c->dst_md)) return LP_OK;
    dnnl_dims_t xd = {p->n, p->c, p->h, p->w}, yd = {p->n, p->k, c->oh, c->ow};
    lp_md x_nhwc, y_nhwc;
    dnnl_primitive_desc_t alt = NULL;
    if (dnnl_memory_desc_init_by_tag(&x_nhwc, 4, xd, c->src_md.data_type, dnnl_nhwc) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&y_nhwc, 4, yd, c->dst_md.data_type, dnnl_nhwc) != dnnl_success ||
        backward_pd(c, false, dw_any, &x_nhwc, &y_nhwc, &alt) != dnnl_success)
        return LP_OK;
    if (is_ref(alt)) {
        dnnl_primitive_desc_destroy(alt);
        return LP_OK;
    }
    lp_status st = lp_reorder_init(&c->bw_re_x, &c->src_md, &x_nhwc, false);
    if (!st) st = lp_reorder_init(&c->bw_re_dy, &c->dst_md, &y_nhwc, false);
    if (st) {
        dnnl_primitive_desc_destroy(alt);
        lp_reorder_free(&c->bw_re_x);
        lp_reorder_free(&c->bw_re_dy);
        return st;
    }
    dnnl_primitive_desc_destroy(*pd);
    *pd = alt;
    c->bw_dw_md = *dnnl_primitive_desc_query_md(alt, dnnl_query_diff_weights_md, 0);
    c->bw_copy_bytes = (lp_md_size(&x_nhwc) + 63) / 64 * 64 + (lp_md_size(&y_nhwc) + 63) / 64 * 64;
    return LP_OK;
}

lp_status lp_conv2d_init_backward(lp_conv2d *c, bool data, bool weights) {
    const lp_conv2d_params *p = &c->p;
    dnnl_dims_t wd;
    const int wn = weights_dims(p, wd);
    lp_status st;
    if (data && !c->has_bwd_data) {
        /* First try the forward weights layout (saves a weights reorder per step);
         * keep it only if oneDNN has a jit kernel for it, else let it choose. */
        dnnl_primitive_desc_t pd = NULL;
        for (int attempt = 0; attempt < 2 && !pd; attempt++) {
            lp_md w_md = attempt == 0 ? c->w_md : lp_md_any_dt(wn, wd, c->w_md.data_type);
            dnnl_status_t ds = backward_pd(c, true, &w_md, &c->src_md, &c->dst_md, &pd);
            if (ds != dnnl_success) {
                if (attempt == 1) return lp_dnnl_check(ds, "conv2d backward data");
                continue;
            }
            const char *impl = NULL;
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
            if (attempt == 0 && (!impl || strncmp(impl, "jit", 3))) {
                dnnl_primitive_desc_destroy(pd);
                pd = NULL;
            }
        }
        c->bd_w_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        static const int kinds[] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
        char onednn[64];
        impl_of(pd, onednn, sizeof onednn);
        c->k_bwd_data = pick(c, PASS_BWD_DATA, &c->bd_w_md, &c->bwd_data, onednn);
        st = c->k_bwd_data ? LP_OK : lp_prim_create(&c->bwd_data, pd, kinds, 3);
        dnnl_primitive_desc_destroy(pd);
        if (st) return st;
        c->has_bwd_data = true;
    }
    if (weights && !c->has_bwd_w) {
        lp_md dw_any = lp_md_any(wn, wd); /* f32 even in bf16: the update accumulates in f32 */
        dnnl_primitive_desc_t pd;
        if ((st = lp_dnnl_check(backward_pd(c, false, &dw_any, &c->src_md, &c->dst_md, &pd), "conv2d backward weights")))
            return st;
        c->bw_dw_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0);
        static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS};
        char onednn[64];
        impl_of(pd, onednn, sizeof onednn);
        /* ours may set its own gradient layout (bw_dw_md) */
        c->k_bwd_w = pick(c, PASS_BWD_W, &c->bw_dw_md, &c->bwd_w, onednn);
        if (!c->k_bwd_w && !strncmp(onednn, "ref", 3) && (st = bwd_w_on_nhwc_copies(c, &dw_any, &pd))) {
            dnnl_primitive_desc_destroy(pd);
            return st;
        }
        st = c->k_bwd_w ? LP_OK : lp_prim_create(&c->bwd_w, pd, kinds, p->no_bias ? 3 : 4);
        dnnl_primitive_desc_destroy(pd);
        if (st) return st;
        c->has_bwd_w = true;
    }
    return LP_OK;
}

size_t lp_conv2d_scratch_size(const lp_conv2d *c) {
    size_t s = c->fwd.scratch_size;
    if (c->has_bwd_data && c->flip_bytes + c->bwd_data.scratch_size > s) s = c->flip_bytes + c->bwd_data.scratch_size;
    if (c->has_bwd_w && c->bwd_w.scratch_size > s) s = c->bwd_w.scratch_size;
    if (c->bw_copy_bytes) {
        size_t r = c->bwd_w.scratch_size;
        if (c->bw_re_x.prim.scratch_size > r) r = c->bw_re_x.prim.scratch_size;
        if (c->bw_re_dy.prim.scratch_size > r) r = c->bw_re_dy.prim.scratch_size;
        if (c->bw_copy_bytes + r > s) s = c->bw_copy_bytes + r;
    }
    return s;
}

lp_status lp_conv2d_forward(lp_conv2d *c, dnnl_stream_t s, const void *x, const void *w, const void *b, void *y, void *scratch) {
    if (c->k_fwd) return c->k_fwd->fwd(c, x, w, b, y, NULL, scratch);
    void *p[4] = {(void *)x, (void *)w, y, (void *)b}; /* no bias: the first three */
    return lp_prim_exec(&c->fwd, s, p, scratch);
}

static lp_status run_bwd_data_flipped(lp_conv2d *c, dnnl_stream_t s, const void *dy, const void *w, void *dx, void *scratch) {
    flip_weights(&c->p, w, scratch);
    void *p[3] = {(void *)dy, scratch, dx};
    return lp_prim_exec(&c->bwd_data, s, p, (char *)scratch + c->flip_bytes);
}

lp_status lp_conv2d_backward_data(lp_conv2d *c, dnnl_stream_t s, const void *dy, const void *w, void *dx, void *scratch) {
    if (c->k_bwd_data) return c->k_bwd_data->bwd_data(c, s, dy, w, dx, scratch);
    void *p[3] = {(void *)dy, (void *)w, dx};
    return lp_prim_exec(&c->bwd_data, s, p, scratch);
}

lp_status lp_conv2d_backward_weights(lp_conv2d *c, dnnl_stream_t s, const void *x, const void *dy, void *dw, void *db, void *scratch) {
    if (c->k_bwd_w) return c->k_bwd_w->bwd_w(c, x, dy, NULL, NULL, dw, db, scratch); /* no mask */
    if (c->bw_copy_bytes) { /* x and dy to nhwc copies first (bwd_w_on_nhwc_copies) */
        char *xc = scratch, *yc = xc + (lp_md_size(&c->bw_re_x.dst_md) + 63) / 64 * 64, *rest = xc + c->bw_copy_bytes;
        lp_status st = lp_reorder_exec(&c->bw_re_x, s, x, xc, rest);
        if (!st) st = lp_reorder_exec(&c->bw_re_dy, s, dy, yc, rest);
        if (st) return st;
        x = xc, dy = yc, scratch = rest;
    }
    void *p[4] = {(void *)x, (void *)dy, dw, db};
    return lp_prim_exec(&c->bwd_w, s, p, scratch);
}

lp_status lp_conv2d_backward_weights_relu(lp_conv2d *c, dnnl_stream_t s, const void *x, const void *dy, const void *y,
                                          const uint16_t *bits, void *dw, void *db, void *scratch) {
    (void)s;
    if (!lp_conv2d_bwd_w_masks_relu(c))
        return lp_fail(LP_ERR_ARG, "conv2d: backward weights with the ReLU mask needs a kernel that masks (%s does not)",
                       c->bwd_w.impl);
    return c->k_bwd_w->bwd_w(c, x, dy, y, bits, dw, db, scratch);
}

/* Our RGB forward on AMX can write the ReLU mask as bits. */
size_t lp_conv2d_relu_bits_size(const lp_conv2d *c) {
    return c->k_fwd && c->k_fwd->relu_bits && c->p.relu ? (size_t)c->p.n * c->oh * c->ow * c->p.k / 8 : 0;
}

lp_status lp_conv2d_forward_relu_bits(lp_conv2d *c, dnnl_stream_t s, const void *x, const void *w, const void *b, void *y,
                                      uint16_t *bits, void *scratch) {
    (void)s;
    if (!lp_conv2d_relu_bits_size(c)) return lp_fail(LP_ERR_ARG, "conv2d: ReLU bits need our RGB forward with ReLU");
    return c->k_fwd->fwd(c, x, w, b, y, bits, scratch);
}

void lp_conv2d_free(lp_conv2d *c) {
    if (!c) return;
    lp_prim_free(&c->fwd);
    lp_prim_free(&c->bwd_data);
    lp_prim_free(&c->bwd_w);
    lp_reorder_free(&c->bw_re_x);
    lp_reorder_free(&c->bw_re_dy);
    if (c->fwd_pd) dnnl_primitive_desc_destroy(c->fwd_pd);
    memset(c, 0, sizeof *c);
}
