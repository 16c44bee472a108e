/* backend: the ops a network needs, forward and backward, on oneDNN 2.6 (C API).
 * Knows core and oneDNN only.
 *
 * Each op is a struct built once per shape (batch size included) by *_init,
 * holding its primitives and oneDNN memory objects (created without buffers);
 * the execute functions take raw pointers, so the caller owns every buffer
 * and a step allocates nothing. Memory descriptors (lp_md) say the layout:
 * convolutions and pooling pick oneDNN's preferred (blocked) layouts with
 * format `any`; dense layers and the C ops work on plain row-major data.
 * All ops run on one engine and the caller's stream; scratchpads are user
 * provided (one shared buffer, at least *scratch_size bytes).
 *
 * Backward functions that produce parameter gradients ADD into them. */
#ifndef LP_BACKEND_H
#define LP_BACKEND_H

#include "core/core.h"
#include <dnnl.h>
#include <stdbool.h>

typedef dnnl_memory_desc_t lp_md;

/* OpenMP pragmas that vanish (without warnings) in builds without OpenMP. */
#ifdef _OPENMP
#define LP_PRAGMA_(x) _Pragma(#x)
#define LP_OMP(x) LP_PRAGMA_(omp x)
#else
#define LP_OMP(x)
#endif

/* The calling thread's number in its OpenMP team (0 without OpenMP). */
int lp_omp_thread(void);

/* ---- the CPU (cpu_isa.c) ------------------------------------------------------
 * Instruction-set levels, each including the ones before it. lp_cpu_isa() is the
 * level oneDNN runs at here (ONEDNN_MAX_CPU_ISA lowers it): every kernel of ours
 * asks it, so that the cap holds for ours as for oneDNN's. AVX2 includes FMA;
 * AVX-512 is oneDNN's avx512_core (F, CD, BW, DQ, VL). Off x86-64 the level is
 * generic: oneDNN does all the work, and only plain C of ours is built. */
/* Our x86-64 code (intrinsics, target attributes): on x86-64 unless the build asks for
 * the portable paths only (CMake LOUPE_PORTABLE_ONLY, which defines LOUPE_PORTABLE_ONLY:
 * the build other architectures get, made and tested on x86-64 too). Without it the
 * kernel files compile to nothing, conv2d.c's table has no rows for them, and the
 * level stays generic. */
#if defined(__x86_64__) && !defined(LOUPE_PORTABLE_ONLY)
#define LP_X86_KERNELS 1
#else
#define LP_X86_KERNELS 0
#endif
typedef enum lp_isa { LP_ISA_GENERIC, LP_ISA_AVX2, LP_ISA_AVX512, LP_ISA_AVX512_BF16, LP_ISA_AMX } lp_isa;
lp_isa lp_cpu_isa(void);
const char *lp_isa_name(lp_isa isa); /* "AVX2", "AVX512-BF16", ... */
const char *lp_cpu_name(void);       /* the processor's brand string */
/* True when this CPU runs bf16 convolutions natively (AVX512-BF16 or AMX):
 * elsewhere oneDNN would emulate them, slower than fp32. */
static inline bool lp_bf16_native(void) { return lp_cpu_isa() >= LP_ISA_AVX512_BF16; }
/* True when oneDNN may use AMX tiles here (avx512_core_amx). */
static inline bool lp_amx_available(void) { return lp_cpu_isa() >= LP_ISA_AMX; }
/* fp32 Winograd training kernels for 3x3 stride 1: oneDNN 2.6's F(4x4,3x3) (jit_wino_4x3)
 * on x86-64 AVX-512 only (oneDNN's level decides, also where ours is held at generic:
 * LOUPE_PORTABLE_ONLY), else our F(2x2,3x3) at AVX2 (conv_wino.h). Available: either. */
bool lp_winograd_onednn(void);
bool lp_winograd_available(void);

/* Loops compiled once per ISA level and chosen by lp_cpu_isa(), so that the cap holds
 * for them too (-ffp-contract=off: the same results at every level). From a static
 * inline always_inline name##_body, LP_ISA_VARIANTS defines static name(params)
 * returning ret, LP_ISA_VARIANTS_VOID one returning nothing; args: params' names. */
#define LP_ISA_BODY static inline __attribute__((always_inline))
#if LP_X86_KERNELS
#define LP_ISA_T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define LP_ISA_T2 __attribute__((target("avx2,fma")))
#define LP_ISA_VARIANTS(ret, name, params, args)                                                                   \
    LP_ISA_T512 static ret name##_avx512 params { return name##_body args; }                                     \
    LP_ISA_T2 static ret name##_avx2 params { return name##_body args; }                                         \
    static ret name##_generic params { return name##_body args; }                                                \
    static ret name params {                                                                                     \
        const lp_isa isa_ = lp_cpu_isa();                                                                        \
        return isa_ >= LP_ISA_AVX512 ? name##_avx512 args : isa_ >= LP_ISA_AVX2 ? name##_avx2 args : name##_generic args; \
    }
#define LP_ISA_VARIANTS_VOID(name, params, args)                                                                   \
    LP_ISA_T512 static void name##_avx512 params { name##_body args; }                                            \
    LP_ISA_T2 static void name##_avx2 params { name##_body args; }                                                \
    static void name##_generic params { name##_body args; }                                                       \
    static void name params {                                                                                    \
        const lp_isa isa_ = lp_cpu_isa();                                                                        \
        if (isa_ >= LP_ISA_AVX512) name##_avx512 args;                                                           \
        else if (isa_ >= LP_ISA_AVX2) name##_avx2 args;                                                          \
        else name##_generic args;                                                                                \
    }
#else /* the plain C loop alone */
#define LP_ISA_VARIANTS(ret, name, params, args) \
    static ret name params { return name##_body args; }
#define LP_ISA_VARIANTS_VOID(name, params, args) \
    static void name params { name##_body args; }
#endif

/* ---- engine, streams, errors ------------------------------------------ */
dnnl_engine_t lp_dnnl_engine(void); /* process-wide CPU engine, created on first use; NULL on failure */
lp_status lp_dnnl_stream_create(dnnl_stream_t *out);
/* LP_OK when s == dnnl_success, else LP_ERR_BACKEND with "oneDNN: <what>: <status>". */
lp_status lp_dnnl_check(dnnl_status_t s, const char *what);
size_t lp_md_size(const lp_md *md);
bool lp_md_equal(const lp_md *a, const lp_md *b);
/* Plain row-major f32 descriptor of ndims (1..5) dims. */
lp_md lp_md_plain(int ndims, const int64_t *dims);
lp_md lp_md_any(int ndims, const int64_t *dims);
/* Format `any` of a given data type (dnnl_f32 or dnnl_bf16). */
lp_md lp_md_any_dt(int ndims, const int64_t *dims, dnnl_data_type_t dt);
/* Pixel-vector layouts: nhwc (one vector of C values per pixel) or nChw16c / nChw8c
 * (vectors of 16 or 8), unpadded; *vec = values per vector. Our kernels take these
 * (each checks that vec is a multiple of its own block). */
bool lp_md_pixel_vectors(const lp_md *md, int *vec);
/* Element offset of value c of pixel (n, y, x) in such a layout (channels per pixel,
 * h x w pixels, vectors of vec: channels for nhwc, 16 for nChw16c). */
static inline size_t lp_pv_offset(int n, int c, int y, int x, int channels, int h, int w, int vec) {
    return ((((size_t)n * (channels / vec) + (size_t)(c / vec)) * h + y) * w + x) * vec + c % vec;
}
/* "nChw16c"-style short description of a layout, for logs and summaries. */
const char *lp_md_layout(const lp_md *md, char *buf, size_t n);

/* ---- one primitive with its argument memories --------------------------- */
#define LP_PRIM_MAX_ARGS 8
typedef struct lp_prim {
    dnnl_primitive_t p;
    int nargs;
    int arg_kind[LP_PRIM_MAX_ARGS];
    dnnl_memory_t mem[LP_PRIM_MAX_ARGS + 1]; /* + scratchpad */
    dnnl_exec_arg_t args[LP_PRIM_MAX_ARGS + 1];
    size_t scratch_size;
    char impl[64]; /* oneDNN implementation name, e.g. "jit:avx512_core" */
} lp_prim;
/* Creates the primitive for pd (taking ownership of pd only on success? no:
 * pd stays owned by the caller) with one memory object per arg kind. */
lp_status lp_prim_create(lp_prim *pr, const_dnnl_primitive_desc_t pd, const int *arg_kinds, int nargs);
/* ptrs: one per arg kind, same order. scratch: >= pr->scratch_size bytes. */
lp_status lp_prim_exec(lp_prim *pr, dnnl_stream_t s, void *const *ptrs, void *scratch);
void lp_prim_free(lp_prim *pr);
/* Attribute with user scratchpad, optional fused ReLU and optional sum (accumulate). */
lp_status lp_attr_create(dnnl_primitive_attr_t *attr, bool relu, bool sum);
/* A primitive desc for desc (hint: the forward's, for a backward one) with a user
 * scratchpad and no post-ops; "oneDNN: <what>: <status>" on failure. */
lp_status lp_pd_create(dnnl_primitive_desc_t *pd, const_dnnl_op_desc_t desc, const_dnnl_primitive_desc_t hint,
                       const char *what);

/* ---- reorder: layout change, optionally accumulating (dst += reorder(src)) ---- */
typedef struct lp_reorder {
    lp_md src_md, dst_md;
    lp_prim prim;
} lp_reorder;
lp_status lp_reorder_init(lp_reorder *r, const lp_md *src, const lp_md *dst, bool accumulate);
lp_status lp_reorder_exec(lp_reorder *r, dnnl_stream_t s, const void *src, void *dst, void *scratch);
void lp_reorder_free(lp_reorder *r);

/* ---- conv2d (+ fused ReLU) -----------------------------------------------
 * x: (n, c, h, w), w: (k, c/g, kh, kw) OIHW logically, as oneDNN's (g, k/g, c/g, kh, kw)
 * when g = groups > 1 (layout w_md; the same memory order as PyTorch's), b: (k) or none,
 * y: (n, k, oh, ow) with oh = (h + pt + pb - kh)/sh + 1 (floor, as PyTorch), pt = ph and
 * pb = ph + ph_extra (likewise pw, pw_extra for left and right). Zero in every field after
 * winograd keeps the old meaning: symmetric padding, groups 1, a bias. */
typedef struct lp_conv2d_params {
    int n, c, h, w, k, kh, kw, sh, sw, ph, pw;
    bool relu;
    bool bf16; /* bf16 src/weights/dst (bias and diff weights stay f32) */
    bool winograd; /* try oneDNN's Winograd F(4x4,3x3) (fp32 3x3 stride 1); direct where it has none */
    /* Added last, so that positional initializers of the fields above keep their meaning. */
    /* padding after (bottom, right) minus padding before (top, left): TensorFlow's "same"
     * at stride 2 pads one more after (ph 0, ph_extra 1); 0: symmetric */
    int ph_extra, pw_extra;
    int groups;   /* 0 or 1: every input channel feeds every output; c: depthwise */
    bool no_bias; /* no b (ResNet's convolutions): forward and backward take NULL for it */
} lp_conv2d_params;
typedef struct lp_conv2d {
    lp_conv2d_params p;
    int oh, ow;
    dnnl_alg_kind_t alg; /* the algorithm the forward got; backward uses the same */
    lp_md src_md, w_md, b_md, dst_md; /* forward (chosen by oneDNN) */
    lp_md bd_w_md;                    /* weights layout for backward data */
    lp_md bw_dw_md;                   /* diff weights layout from backward weights */
    dnnl_primitive_desc_t fwd_pd;
    lp_prim fwd, bwd_data, bwd_w; /* .impl names the kernel, oneDNN's or ours */
    bool has_bwd_data, has_bwd_w;
    /* ours in place of oneDNN's, from conv2d.c's table (NULL: oneDNN's) */
    const struct lp_conv_kernel *k_fwd, *k_bwd_data, *k_bwd_w;
    size_t flip_bytes;  /* backward data runs as a forward convolution (bwd_data.p) with the
                           weights flipped into the first flip_bytes of scratch; 0: not */
    int vec_x, vec_y; /* our kernels: src_md's and dst_md's pixel vectors */
    int wblk;         /* the small-map backward weights: its block, 16 or 8 */
    /* Backward weights on nhwc copies of x and dy, made in the first bw_copy_bytes of
     * scratch, where oneDNN has only its reference kernel for the forward's layouts
     * (depthwise 5x5 on blocked layouts: 70x slower); 0: not */
    size_t bw_copy_bytes;
    lp_reorder bw_re_x, bw_re_dy;
} lp_conv2d;
/* src: layout the input has (NULL = let oneDNN choose; then src_md tells it). */
lp_status lp_conv2d_init(lp_conv2d *c, const lp_conv2d_params *p, const lp_md *src);
/* groups as a count (>= 1), and the padding after (bottom, right). */
static inline int lp_conv2d_groups(const lp_conv2d_params *p) { return p->groups > 1 ? p->groups : 1; }
static inline int lp_conv2d_pad_bottom(const lp_conv2d_params *p) { return p->ph + p->ph_extra; }
static inline int lp_conv2d_pad_right(const lp_conv2d_params *p) { return p->pw + p->pw_extra; }
/* The weights' plain layout in data type dt: oihw, or goihw with groups (PyTorch's order). */
lp_md lp_conv2d_weights_plain_md(const lp_conv2d_params *p, dnnl_data_type_t dt);
/* Builds the backward primitives asked for (once; no-op when built). */
lp_status lp_conv2d_init_backward(lp_conv2d *c, bool data, bool weights);
size_t lp_conv2d_scratch_size(const lp_conv2d *c);
lp_status lp_conv2d_forward(lp_conv2d *c, dnnl_stream_t s, const void *x, const void *w, const void *b, void *y, void *scratch);
/* dy in dst_md (already multiplied by the ReLU mask), w in bd_w_md, dx in src_md (overwritten). */
lp_status lp_conv2d_backward_data(lp_conv2d *c, dnnl_stream_t s, const void *dy, const void *w, void *dx, void *scratch);
/* dw written (not accumulated) in bw_dw_md; db (k) written (NULL with no_bias). */
lp_status lp_conv2d_backward_weights(lp_conv2d *c, dnnl_stream_t s, const void *x, const void *dy, void *dw, void *db, void *scratch);
/* The ReLU mask as bits (lp_conv2d_relu_bits_size bytes, 0: not available here) that
 * the forward writes next to y, for backward weights to read instead of y. */
size_t lp_conv2d_relu_bits_size(const lp_conv2d *c);
lp_status lp_conv2d_forward_relu_bits(lp_conv2d *c, dnnl_stream_t s, const void *x, const void *w, const void *b, void *y,
                                      uint16_t *bits, void *scratch);
/* Backward weights runs our small-map kernel, which also comes in pieces
 * (lp_conv_bwd_w_small_prepare/pair, with c->wblk, vec_x, vec_y) for a fused update. */
bool lp_conv2d_bwd_w_in_pieces(const lp_conv2d *c);
/* Backward weights runs a kernel that multiplies dy by the ReLU mask itself
 * (lp_conv2d_backward_weights_relu). */
bool lp_conv2d_bwd_w_masks_relu(const lp_conv2d *c);
/* Backward weights from a dy not yet multiplied by the ReLU mask of the output y
 * (unchanged in memory; y NULL: no mask); only where the kernel does that masking itself
 * (lp_conv2d_bwd_w_masks_relu: the AVX512-BF16 or the AMX RGB kernel). bits (or
 * NULL): the same mask from lp_conv2d_forward_relu_bits, read instead of y by the kernel
 * that can (the AMX one). */
lp_status lp_conv2d_backward_weights_relu(lp_conv2d *c, dnnl_stream_t s, const void *x, const void *dy, const void *y,
                                          const uint16_t *bits, void *dw, void *db, void *scratch);
void lp_conv2d_free(lp_conv2d *c);
/* Tests set these false to run oneDNN's backward weights / data where ours would run. */
extern bool lp_conv_bwd_w_own_allowed, lp_conv_bwd_d_own_allowed, lp_conv_fwd_own_allowed;
/* ... and false to run the AVX512-BF16 RGB kernel where the AMX one would run. */
extern bool lp_conv_bwd_w_rgb_amx_allowed;
/* conv_fwd_small.c (AVX512-BF16): bf16 3x3 stride 1 pad 1 + bias (+ ReLU), h*w small
 * (conv2d.c: <= 4), c and k multiples of 32, x and y nhwc, w in AcdB16b32a2b. */
size_t lp_conv_fwd_small_scratch(const lp_conv2d_params *p);
void lp_conv_fwd_small(const lp_conv2d_params *p, const void *x, const void *w, const float *bias, void *y, void *scratch);
/* conv_bwd_d_small.c (AVX512-BF16): bf16 3x3 stride 1 pad 1, h*w <= 16 (conv2d.c: <= 4), c % 16 == 0,
 * k % 32 == 0, dy and dx in pixel-vector layouts (conv2d.c uses it on nhwc), w in
 * ABcd16a16b2a. */
size_t lp_conv_bwd_d_small_scratch(const lp_conv2d_params *p);
void lp_conv_bwd_d_small(const lp_conv2d_params *p, int vec_x, int vec_y, const void *dy, const void *w, void *dx,
                         void *scratch);
/* conv_bwd_w_small.c: 3x3 stride 1 pad 1, c and k multiples of blk, x and dy in pixel-vector
 * layouts (vec_x, vec_y multiples of blk), dw fp32 in ABcd<blk>b<blk>a, db (k). blk 16:
 * AVX-512F, fp32 or bf16; blk 8: AVX2 + FMA, fp32. */
size_t lp_conv_bwd_w_small_scratch(const lp_conv2d_params *p);
void lp_conv_bwd_w_small(const lp_conv2d_params *p, int blk, int vec_x, int vec_y, const void *x, const void *dy, float *dw,
                         float *db, void *scratch);
/* conv_bwd_w_dw.c: depthwise (groups = c = k), fp32 (or bf16 x and dy with blk 16: p->bf16),
 * kernels up to 7x7 (lp_conv_bwd_w_dw_fits), any stride and padding, c a multiple of blk, x
 * and dy in pixel-vector layouts (vec_x, vec_y multiples of blk), dw fp32 (c, 1, kh, kw), db
 * (c) or NULL. blk 16: AVX-512F; 8: AVX2 + FMA. */
bool lp_conv_bwd_w_dw_fits(const lp_conv2d_params *p);
void lp_conv_bwd_w_dw(const lp_conv2d_params *p, int oh, int ow, int blk, int vec_x, int vec_y, const void *x, const void *dy,
                      float *dw, float *db);
/* conv_bwd_w_rgb.c (AVX512-BF16): 3x3 stride 1 pad 1 with 3 input channels, k % 16 == 0,
 * x and dy bf16 nhwc, dw fp32 in ABcd16b16a (input channels padded to 16), db (k);
 * relu_y (or NULL): the layer's output, whose ReLU mask dy is multiplied by as read. */
size_t lp_conv_bwd_w_rgb_scratch(const lp_conv2d_params *p);
void lp_conv_bwd_w_rgb(const lp_conv2d_params *p, const void *x, const void *dy, const void *relu_y, float *dw, float *db,
                       void *scratch);
/* conv_bwd_w_rgb_amx.c: the same on AMX (lp_conv_bwd_w_amx_ready), k % 32 == 0; the
 * mask from relu_y, or from relu_bits (lp_conv_fwd_rgb_amx's), or none (both NULL). */
size_t lp_conv_bwd_w_rgb_amx_scratch(const lp_conv2d_params *p);
void lp_conv_bwd_w_rgb_amx(const lp_conv2d_params *p, const void *x, const void *dy, const void *relu_y,
                           const uint16_t *relu_bits, float *dw, float *db, void *scratch);
/* conv_fwd_rgb_amx.c (AMX, lp_conv_bwd_w_amx_ready): forward of a 3x3 stride 1 pad 1
 * bf16 nhwc convolution with 3 input channels, k % 32 == 0, weights Adcb16a. relu_bits
 * (or NULL): bit i of word j set where y's value 16 j + i (nhwc order) is > 0, for a
 * backward that masks dy without reading y (n h w k / 8 bytes). */
/* Outputs of our kernels larger than this (beyond the L2s) are written around the caches. */
#define LP_STREAM_FROM ((size_t)8 << 20)
size_t lp_conv_fwd_rgb_amx_scratch(const lp_conv2d_params *p);
void lp_conv_fwd_rgb_amx(const lp_conv2d_params *p, const void *x, const void *w, const float *bias, void *y,
                         uint16_t *relu_bits, void *scratch);
/* conv_bwd_w_amx.c (AMX): 3x3 stride 1 pad 1 bf16, c and k multiples of 32, x and dy
 * nhwc, dw fp32 in ABcd16b16a, db (k); both overwritten. _ready: AMX tiles usable here. */
#if LP_X86_KERNELS
bool lp_conv_bwd_w_amx_ready(void);
#else
static inline bool lp_conv_bwd_w_amx_ready(void) { return false; }
#endif
/* Tiles 0-7 as 16 rows x 64 bytes for this thread (AMX code between; _ready first). */
void lp_amx_tiles_on(void);
void lp_amx_tiles_off(void);
/* Per-thread scratch slots of the AMX kernels: one per processor, counted once per
 * process (conv_bwd_w_amx.c says why); and the threads to run over them. */
int lp_amx_slots(void);
int lp_amx_slot_threads(void);
size_t lp_conv_bwd_w_amx_scratch(const lp_conv2d_params *p);
void lp_conv_bwd_w_amx(const lp_conv2d_params *p, const void *x, const void *dy, float *dw, float *db, void *scratch);
/* The same in pieces, for an update that consumes each piece as it is made (nn's
 * fused update): prepare (writes db and fills scratch), then pair q in [0, pairs)
 * writes the lp_conv_bwd_w_small_pair_size values dw[q * size ...] (one blk x blk block
 * pair, 9 taps) to out, at most LP_BWD_W_PAIR. */
#define LP_BWD_W_PAIR (9 * 256)
static inline long long lp_conv_bwd_w_small_pairs(const lp_conv2d_params *p, int blk) {
    return (long long)(p->k / blk) * (p->c / blk);
}
static inline size_t lp_conv_bwd_w_small_pair_size(int blk) { return (size_t)9 * blk * blk; }
void lp_conv_bwd_w_small_prepare(const lp_conv2d_params *p, int blk, int vec_x, int vec_y, const void *x, const void *dy,
                                 float *db, void *scratch);
void lp_conv_bwd_w_small_pair(const lp_conv2d_params *p, int blk, const void *scratch, long long q, float *out);
/* Backward data in the same pieces (fp32, blocks of 16, where _fits): pair q's share of
 * dx from its weights w (its 9 x 16 x 16 values, read before the update), added to
 * acc[n * h * w][16] of its input block; the pairs of one input block in ascending q,
 * then _store writes that block's acc to dx (src_md's layout, pixel vectors vec_x). */
#define LP_BWD_D_ACC 4096
bool lp_conv_bwd_d_small_pair_fits(const lp_conv2d_params *p, int blk);
void lp_conv_bwd_d_small_pair(const lp_conv2d_params *p, const void *scratch, long long q, const float *w, float *acc);
void lp_conv_bwd_d_small_store(const lp_conv2d_params *p, int vec_x, int ib, const float *acc, float *dx);
/* ... and all pairs at once (conv2d.c's backward data where the pieces fit; scratch
 * lp_conv_bwd_w_small_scratch), w in the forward's ABcd16b16a. */
void lp_conv_bwd_d_small_fp32(const lp_conv2d_params *p, int vec_x, int vec_y, const float *dy, const float *w, float *dx,
                              void *scratch);
/* Backward data runs the pieces above (so the fused step may make dx itself). */
bool lp_conv2d_bwd_d_in_pieces(const lp_conv2d *c);
/* Asks for n floats from p on into cache: for access patterns that the hardware's
 * prefetchers do not follow (rows of blocks far apart). */
static inline void lp_prefetch_floats(const float *p, long long n) {
    for (long long e = 0; e < n; e += 16) __builtin_prefetch(p + e, 1, 3);
}

/* ---- max pooling (floor, like PyTorch's MaxPool2d) ------------------------
 * x: (n, c, h, w) in src_md, y: (n, c, oh, ow) in dst_md, ws: workspace of
 * ws_size bytes. 2x2 stride 2 on nhwc or nChw16c with 16k channels runs our
 * AVX-512 kernel (own), where AVX-512 exists; the rest runs oneDNN's. */
typedef struct lp_maxpool {
    int n, c, h, w, kh, kw, sh, sw, oh, ow;
    lp_md src_md, dst_md;
    size_t ws_size;
    dnnl_primitive_desc_t fwd_pd;
    lp_prim fwd, bwd; /* fwd.impl / bwd.impl name the kernel in both cases */
    bool has_bwd;
    bool own;        /* our kernel: planes x h x w pixel vectors of vec values */
    bool relu_backward; /* own only: the input is a ReLU's output, and backward applies
                           that ReLU's backward too (set by the caller before use) */
    int planes, vec;
} lp_maxpool;
/* Tests set this false to run oneDNN's pooling where ours would run. */
extern bool lp_maxpool_own_allowed;
/* maxpool2x2.c (AVX-512F): x planes x h x w pixels of vec (16k) values, fp32 or bf16;
 * idx one byte per output value (the window position of the maximum). */
void lp_maxpool2x2_forward(const void *x, void *y, uint8_t *idx, int planes, int h, int w, int vec, bool bf16);
void lp_maxpool2x2_backward(const void *dy, const uint8_t *idx, void *dx, int planes, int h, int w, int vec, bool bf16,
                            bool relu);
lp_status lp_maxpool_init(lp_maxpool *m, int n, int c, int h, int w, int kh, int kw, int sh, int sw, const lp_md *src);
/* The same with PyTorch's symmetric padding ph, pw (at most half the window; padded
 * positions never win, as PyTorch's -inf): oh = (h + 2 ph - kh) / sh + 1 (floor), e.g.
 * ResNet's stem 3x3 stride 2 pad 1. Padded pooling always runs oneDNN's kernel. */
lp_status lp_maxpool_init_padded(lp_maxpool *m, int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                                 const lp_md *src);
lp_status lp_maxpool_init_backward(lp_maxpool *m);
size_t lp_maxpool_scratch_size(const lp_maxpool *m);
lp_status lp_maxpool_forward(lp_maxpool *m, dnnl_stream_t s, const void *x, void *y, void *ws, void *scratch);
lp_status lp_maxpool_backward(lp_maxpool *m, dnnl_stream_t s, const void *dy, const void *ws, void *dx, void *scratch);
void lp_maxpool_free(lp_maxpool *m);

/* ---- dense (+ fused ReLU), plain row-major ---------------------------------
 * x: (n, in), w: (out, in) as torch.nn.Linear, b: (out), y: (n, out), all fp32.
 * bf16: the matmuls take x, dy and w rounded to bf16 (w's bf16 copy, made by
 * lp_dense_weights_bf16); y, dx, dw and db stay fp32. */
typedef struct lp_dense {
    int n, in, out;
    bool relu, bf16;
    lp_prim fwd, bwd_data, bwd_w, bwd_w_set;
    lp_reorder x_to_bf16, dy_to_bf16, w_to_bf16; /* bf16 only */
    bool has_bwd_data, has_bwd_w;
} lp_dense;
lp_status lp_dense_init(lp_dense *d, int n, int in, int out, bool relu, bool bf16);
lp_status lp_dense_init_backward(lp_dense *d, bool data, bool weights);
size_t lp_dense_scratch_size(const lp_dense *d);
/* bf16: wbf (out, in) = w rounded to bf16. */
lp_status lp_dense_weights_bf16(lp_dense *d, dnnl_stream_t s, const float *w, uint16_t *wbf, void *scratch);
/* w: fp32, or in bf16 the bf16 copy. */
lp_status lp_dense_forward(lp_dense *d, dnnl_stream_t s, const float *x, const void *w, const float *b, float *y, void *scratch);
/* dy already multiplied by the ReLU mask. dx overwritten. w: as for forward. */
lp_status lp_dense_backward_data(lp_dense *d, dnnl_stream_t s, const float *dy, const void *w, float *dx, void *scratch);
/* dw += dy^T x ; db += sum over n of dy (accumulate), or dw = ..., db = ... (overwrite).
 * db from the fp32 dy also in bf16. */
lp_status lp_dense_backward_weights(lp_dense *d, dnnl_stream_t s, const float *x, const float *dy, float *dw, float *db,
                                   bool accumulate, void *scratch);
/* Small batches (n <= LP_DENSE_SMALL_BATCH) in fp32: backward runs our own loops
 * (dense.c says why). */
#define LP_DENSE_SMALL_BATCH 4
bool lp_dense_small_batch(const lp_dense *d);
/* Small batches: dx (when not NULL) from dy and w, and, with fn, each piece [lo, hi)
 * of dw (flat (out, in) indices; g holds dw[lo, hi)) handed to fn as it is made, after
 * dx has read w[lo, hi): the fused update (nn) rewrites w there. Returns the OR of fn's
 * results. The sums do not depend on fn or the thread count. scratch: as for
 * lp_dense_backward_data. */
typedef uint32_t (*lp_dense_piece_fn)(void *ctx, const float *g, long long lo, long long hi);
uint32_t lp_dense_backward_small(const lp_dense *d, const float *x, const float *dy, const float *w, float *dx, void *scratch,
                                 lp_dense_piece_fn fn, void *ctx);
void lp_dense_backward_bias(const lp_dense *d, const float *dy, float *db, bool accumulate);
void lp_dense_free(lp_dense *d);

/* ---- plain C ops (OpenMP) ---------------------------------------------------- */
/* ReLU backward from the output: dy[i] = y[i] > 0 ? dy[i] : 0 (any layout, same for both). */
void lp_relu_backward_inplace(float *dy, const float *y, size_t count);
/* The same on bf16 data (bit patterns; y > 0 means sign clear and not zero). */
void lp_relu_backward_inplace_bf16(uint16_t *dy, const uint16_t *y, size_t count);
/* Adaptive average pooling, exact torch.nn.AdaptiveAvgPool2d: output cell (i, j)
 * averages rows [floor(i*h/oh), ceil((i+1)*h/oh)) and the same for columns.
 * x: (n, c, h, w), y: (n, c, oh, ow), plain NCHW. Backward writes dx. */
void lp_adaptive_avgpool_forward(const float *x, float *y, int nc, int h, int w, int oh, int ow);
void lp_adaptive_avgpool_backward(const float *dy, float *dx, int nc, int h, int w, int oh, int ow);
/* Dropout (inverted, like PyTorch): element i kept when
 * lp_rng_uniform(seed, stream, i) >= p, scaled by 1/(1-p). mask gets the
 * factor (0 or 1/(1-p)); y = x * mask. Backward: dx = dy * mask. */
void lp_dropout_forward(const float *x, float *y, float *mask, size_t count, float p, uint64_t seed, uint64_t stream);
/* ... element i drawn with counter counter0 + i (a slice of a larger batch's tensor) */
void lp_dropout_forward_at(const float *x, float *y, float *mask, size_t count, float p, uint64_t seed, uint64_t stream,
                           uint64_t counter0);
void lp_dropout_backward(const float *dy, const float *mask, float *dx, size_t count);
/* Numerically stable softmax cross-entropy from logits z: (n, k).
 * loss (n) optional, probs (n*k) optional, dz (n*k) optional = (softmax - onehot)/n.
 * Returns the mean loss. Labels must be in [0, k). */
double lp_softmax_xent(const float *z, const int *labels, int n, int k, float *loss, float *probs, float *dz);

#endif
