/* SGD / Adam / AdamW with torch.optim 1.13 semantics (single-tensor path,
 * maximize=False, dampening 0, amsgrad off). State in flat buffers with the
 * net's offsets; frozen parameters are skipped and their state never touched
 * (calloc'ed, so it costs no memory). */
#include "nn/optim.h"
#include "nn_impl.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if LP_X86_KERNELS
#include <immintrin.h>
#endif

struct lp_optim {
    lp_net *net;
    lp_optim_config cfg;
    float *m, *v;       /* SGD: momentum buffer in m; Adam: exp_avg, exp_avg_sq */
    int64_t *steps;     /* per parameter, as torch's state['step'] */
    bool *has_state;    /* per parameter */
    bool *state_blk;    /* per parameter: m/v are in the param's blocked storage layout (store.c) */
    bool *twin_written; /* per parameter, in one step: the update also wrote backward-data's copy */
    bool *fused;        /* per parameter, in one step: updated inside backward (lp_net_backward_step) */
    bool *fused_last;   /* per parameter: fused in the last step (lp_optim_time_update) */
    int fused_bad;      /* the first fused parameter that came out NaN/Inf this step, or -1 */
    int64_t step;       /* number of lp_optim_step calls */
};

lp_optim_config lp_optim_default_config(lp_opt_kind kind) {
    lp_optim_config c = {.kind = kind, .lr = kind == LP_OPT_SGD ? 0.01f : 0.001f, .momentum = 0.0f,
                         .weight_decay = kind == LP_OPT_ADAMW ? 0.01f : 0.0f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                         .nesterov = false};
    return c;
}

lp_status lp_optim_create(lp_net *net, const lp_optim_config *cfg, lp_optim **out) {
    *out = NULL;
    if (cfg->kind != LP_OPT_SGD && cfg->kind != LP_OPT_ADAM && cfg->kind != LP_OPT_ADAMW)
        return lp_fail(LP_ERR_ARG, "optimizer: unknown kind %d", (int)cfg->kind);
    if (cfg->nesterov && (cfg->kind != LP_OPT_SGD || cfg->momentum <= 0.0f))
        return lp_fail(LP_ERR_ARG, "optimizer: Nesterov needs SGD with momentum > 0");
    if (cfg->kind != LP_OPT_SGD && (!(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1)))
        return lp_fail(LP_ERR_ARG, "optimizer: betas must be in [0, 1)");
    lp_optim *o = lp_calloc(1, sizeof *o);
    if (!o) return LP_ERR_NOMEM;
    o->net = net;
    o->cfg = *cfg;
    size_t n = net->nweights ? net->nweights : 1;
    o->m = calloc(n, sizeof(float));
    if (cfg->kind != LP_OPT_SGD) o->v = calloc(n, sizeof(float));
    o->steps = calloc((size_t)net->nparams + 1, sizeof *o->steps);
    o->has_state = calloc((size_t)net->nparams + 1, sizeof *o->has_state);
    o->state_blk = calloc((size_t)net->nparams + 1, sizeof *o->state_blk);
    o->twin_written = calloc((size_t)net->nparams + 1, sizeof *o->twin_written);
    o->fused = calloc((size_t)net->nparams + 1, sizeof *o->fused);
    o->fused_last = calloc((size_t)net->nparams + 1, sizeof *o->fused_last);
    o->fused_bad = -1;
    if (!o->m || (cfg->kind != LP_OPT_SGD && !o->v) || !o->steps || !o->has_state || !o->state_blk || !o->twin_written ||
        !o->fused || !o->fused_last) {
        lp_optim_free(o);
        return lp_fail(LP_ERR_NOMEM, "optimizer: out of memory");
    }
    *out = o;
    return LP_OK;
}

void lp_optim_free(lp_optim *o) {
    if (!o) return;
    free(o->m);
    free(o->v);
    free(o->steps);
    free(o->has_state);
    free(o->state_blk);
    free(o->twin_written);
    free(o->fused);
    free(o->fused_last);
    free(o);
}

/* The update of elements [lo, hi) of one parameter. The loops return non-zero
 * when a weight came out NaN/Inf: a diverged step would otherwise go unnoticed,
 * since ReLU (max(x, 0) in oneDNN) maps NaN to 0 and the loss of a net with NaN
 * weights can stay finite. */
/* The update loops are built for AVX2 and AVX-512 too where our x86-64 code is (the
 * default build is baseline x86-64), chosen by the capped ISA (LP_ISA_VARIANTS); -ffp-contract=off keeps the
 * builds' results identical. */
LP_ISA_BODY uint32_t sgd_range_body(const lp_optim *o, const lp_param_update *a, long long lo, long long hi) {
    const float wd = o->cfg.weight_decay, mom = o->cfg.momentum, lr = a->lr;
    const bool nest = o->cfg.nesterov, first = a->first;
    float *w = a->w, *buf = a->m;
    const float *g = a->g;
    uint32_t bad = 0;
    for (long long i = lo; i < hi; i++) {
        float d = g[i];
        if (wd != 0.0f) d = d + wd * w[i];
        if (mom != 0.0f) {
            float b = first ? d : buf[i] * mom + d;
            buf[i] = b;
            d = nest ? d + mom * b : b;
        }
        float wn = w[i] + (-lr) * d;
        w[i] = wn;
        bad |= lp_f32_nonfinite(wn);
    }
    return bad;
}

LP_ISA_VARIANTS(uint32_t, sgd_range, (const lp_optim *o, const lp_param_update *a, long long lo, long long hi), (o, a, lo, hi))

LP_ISA_BODY uint32_t adam_range_body(const lp_optim *o, const lp_param_update *a, long long lo, long long hi) {
    const float b1 = o->cfg.beta1, b2 = o->cfg.beta2, eps = o->cfg.eps, wd = o->cfg.weight_decay;
    const bool decoupled = o->cfg.kind == LP_OPT_ADAMW;
    const float step_size = a->step_size, bc2_sqrt = a->bc2_sqrt, decay = a->decay;
    float *w = a->w, *m = a->m, *v = a->v;
    const float *g = a->g;
    uint32_t bad = 0;
    for (long long i = lo; i < hi; i++) {
        float wi = w[i], gi = g[i];
        if (decoupled) wi = wi * decay;
        else if (wd != 0.0f) gi = gi + wd * wi;
        float mi = m[i] * b1 + gi * (1.0f - b1);
        float vi = v[i] * b2 + gi * gi * (1.0f - b2);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        float wn = wi + (-step_size) * (mi / denom);
        w[i] = wn;
        bad |= lp_f32_nonfinite(wn);
    }
    return bad;
}

LP_ISA_VARIANTS(uint32_t, adam_range, (const lp_optim *o, const lp_param_update *a, long long lo, long long hi), (o, a, lo, hi))

/* One 16x16 block b transposed into t. */
static inline void transpose_block16(float *restrict t, const float *restrict b) {
    for (int q = 0; q < 16; q++)
        for (int r = 0; r < 16; r++) t[q * 16 + r] = b[r * 16 + q];
}

/* Block q's place in the twin (map->swap: block (ob, ib, kk) goes to (ib, ob, kk)). */
static inline long long twin_block(const lp_twin_map *map, long long q) {
    if (!map->swap) return q;
    const long long kk = q % map->khw, t = q / map->khw, ib = t % map->ib_n, ob = t / map->ib_n;
    return (ib * map->ob_n + ob) * map->khw + kk;
}

/* Where block q (16x16, [16 i][16 o]) of conv weights stored OIhw16i16o goes in their bf16
 * copies: the forward one at *f, its 8 lines of 32 bf16 (rows i, i+1 over o) *line apart,
 * and backward data's at *d (NULL: none), its lines (columns o, o+1 over i) 32 apart. AMX's
 * layouts: OhwI16i32o2i (two of our blocks side by side in a 32-wide o block) and
 * OIhw16o16i2o; AVX512-BF16's (cp->blk16): OIhw8i16o2i and OIhw8o16i2o, each block at its
 * own place, backward data's at bwd_map's (IOhw8o16i2o for 1x1). */
static void copy_places(const lp_bf16_copies *cp, long long q, uint16_t **f, long long *line, uint16_t **d) {
    if (cp->blk16) {
        *f = cp->fwd + q * 256, *line = 32;
        *d = cp->bwd ? cp->bwd + twin_block(&cp->bwd_map, q) * 256 : NULL;
        return;
    }
    const long long ib16 = cp->i / 16, i32 = cp->i / 32, khw = cp->khw;
    const long long kk = q % khw, t = q / khw, ib = t % ib16, ob = t / ib16, A = ob >> 1, B = ib >> 1;
    *f = cp->fwd + ((A * khw + kk) * i32 + B) * 1024 + (ib & 1) * 8 * 64 + (ob & 1) * 32, *line = 64;
    *d = cp->bwd ? cp->bwd + ((A * ib16 + ib) * khw + kk) * 512 + (ob & 1) * 8 * 32 : NULL;
}

#if LP_X86_KERNELS
/* A dense layer's bf16 copy, element for element, for [lo, hi) (any range: the
 * update's chunks end where the weights end). Streaming stores where a 32-byte piece is
 * whole and aligned (the copy is read only by the next step's matmuls), masked stores
 * at the ends. Rounds as vcvtneps2bf16 does (oneDNN's reorder uses it too). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void lp_bf16_plain_range(uint16_t *c, const float *w, long long lo, long long hi) {
    long long j = lo;
    const long long head = (long long)(((32 - ((uintptr_t)(c + lo) & 31)) & 31) / 2); /* to a 32-byte boundary */
    for (long long end; j < hi; j = end) {
        end = j + 16 < hi ? j + 16 : hi;
        if (j == lo && head && end > lo + head) end = lo + head;
        if (end - j == 16 && !((uintptr_t)(c + j) & 31)) {
            _mm256_stream_si256((__m256i *)(c + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(w + j)));
        } else {
            const __mmask16 m = (__mmask16)((1u << (end - j)) - 1);
            _mm256_mask_storeu_epi16(c + j, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, w + j)));
        }
    }
    _mm_sfence();
}

#define COPIES_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))
/* Rows 2r and 2r + 1 of a 16x16 block interleaved into line r of out (8 lines of 32 bf16,
 * line apart), with streaming stores. */
COPIES_TARGET static inline void pairs_stream(const float *rows, uint16_t *out, long long line, __m512i inter) {
    for (int r = 0; r < 8; r++) {
        __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(rows + (2 * r + 1) * 16), _mm512_loadu_ps(rows + 2 * r * 16));
        _mm512_stream_si512((__m512i *)(out + r * line), _mm512_permutexvar_epi16(inter, v));
    }
}

/* The bf16 copies of conv weights stored OIhw16i16o (fp32), for blocks [lo, hi) of
 * 16x16 (elements), where copy_places puts them (store.c checked the layouts). Streaming
 * stores: the copies are only read by the next step, and not reading their lines first
 * saved 1.3 ms of an 8.6 ms update at 32x32 batch 2. vcvtne2ps2bf16 rounds as oneDNN's
 * reorder does on these CPUs (it uses the same instruction), so the copies are
 * bit-identical to the reorders they replace. A dense layer's copy (plain) goes to
 * lp_bf16_plain_range. Only called in bf16 training, which needs AVX512-BF16. */
COPIES_TARGET static void bf16_copies_range(const lp_bf16_copies *cp, const float *w, long long lo, long long hi) {
    if (cp->plain) {
        lp_bf16_plain_range(cp->fwd, w, lo, hi);
        return;
    }
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                           20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (long long q = lo / 256; q < hi / 256; q++) {
        const float *blk = w + q * 256;
        uint16_t *f, *d;
        long long line;
        copy_places(cp, q, &f, &line, &d);
        pairs_stream(blk, f, line, inter);
        if (!d) continue;
        float tr[256];
        transpose_block16(tr, blk); /* columns o, o+1 as rows */
        pairs_stream(tr, d, 32, inter);
    }
    _mm_sfence(); /* the streaming stores are weakly ordered: done before anyone reads them */
}

/* Each 16x16 block of w transposed into its place in t (AVX-512's weight layouts: store.c
 * notes a twin only where the CPU has AVX-512), through a block in L1, with streaming
 * stores: t is read only by the next step's backward. */
__attribute__((target("avx512f")))
static void transpose16_stream(float *restrict t, const float *restrict w, const lp_twin_map *map, long long lo, long long hi) {
    float tmp[256] __attribute__((aligned(64)));
    for (long long blk = lo; blk < hi; blk += 256) {
        transpose_block16(tmp, w + blk);
        float *to = t + twin_block(map, blk / 256) * 256;
        for (int q = 0; q < 16; q++) _mm512_stream_ps(to + q * 16, _mm512_load_ps(tmp + q * 16));
    }
    _mm_sfence();
}

/* The same for AVX2's 8x8 blocks. */
__attribute__((target("avx2")))
static void transpose8_stream(float *restrict t, const float *restrict w, const lp_twin_map *map, long long lo, long long hi) {
    float tmp[64] __attribute__((aligned(32)));
    for (long long blk = lo; blk < hi; blk += 64) {
        const float *b = w + blk;
        for (int q = 0; q < 8; q++)
            for (int r = 0; r < 8; r++) tmp[q * 8 + r] = b[r * 8 + q];
        float *to = t + twin_block(map, blk / 64) * 64;
        for (int q = 0; q < 8; q++) _mm256_stream_ps(to + q * 8, _mm256_load_ps(tmp + q * 8));
    }
    _mm_sfence();
}
#else
/* The same writers in plain C, where our x86-64 code is not built (backend.h). There the
 * level is generic, so no twins (store.c) and no bf16 training: only the dense copy's
 * writer is run, by its test. */
void lp_bf16_plain_range(uint16_t *c, const float *w, long long lo, long long hi) {
    for (long long j = lo; j < hi; j++) c[j] = lp_f32_to_bf16(w[j]);
}

static void bf16_copies_range(const lp_bf16_copies *cp, const float *w, long long lo, long long hi) {
    if (cp->plain) {
        lp_bf16_plain_range(cp->fwd, w, lo, hi);
        return;
    }
    for (long long q = lo / 256; q < hi / 256; q++) {
        const float *blk = w + q * 256; /* [16 i][16 o] */
        uint16_t *f, *d;
        long long line;
        copy_places(cp, q, &f, &line, &d);
        for (int r = 0; r < 8; r++)
            for (int j = 0; j < 16; j++)
                for (int e = 0; e < 2; e++) {
                    f[r * line + 2 * j + e] = lp_f32_to_bf16(blk[(2 * r + e) * 16 + j]); /* rows i, i+1 over o */
                    if (d) d[r * 32 + 2 * j + e] = lp_f32_to_bf16(blk[j * 16 + 2 * r + e]); /* columns o, o+1 over i */
                }
    }
}

static void transpose16_stream(float *restrict t, const float *restrict w, const lp_twin_map *map, long long lo, long long hi) {
    for (long long blk = lo; blk < hi; blk += 256) transpose_block16(t + twin_block(map, blk / 256) * 256, w + blk);
}

static void transpose8_stream(float *restrict t, const float *restrict w, const lp_twin_map *map, long long lo, long long hi) {
    for (long long blk = lo; blk < hi; blk += 64)
        for (int q = 0; q < 8; q++)
            for (int r = 0; r < 8; r++) t[twin_block(map, blk / 64) * 64 + q * 8 + r] = w[blk + r * 8 + q];
}
#endif

/* Elements [lo, hi) of u's parameter (whole 16x16 blocks) from their gradient g[0,
 * hi - lo): the update, then the twin or bf16 copies. With a twin (backward-data's
 * copy of blocked conv weights, each 16x16 block transposed: store.c) or the bf16
 * copies, each piece is written there while it is still in cache: that replaces
 * reorders of the weights in every step's backward, which at small images were a
 * tenth of the step. */
uint32_t lp_optim_param_range(const lp_optim *o, const lp_param_update *u, const float *g, long long lo, long long hi) {
    lp_param_update a = *u;
    a.w += lo, a.m += lo, a.g = g;
    if (a.v) a.v += lo;
    uint32_t bad = o->cfg.kind == LP_OPT_SGD ? sgd_range(o, &a, 0, hi - lo) : adam_range(o, &a, 0, hi - lo);
    if (u->twin && u->twin_map.blk == 16) transpose16_stream(u->twin, u->w, &u->twin_map, lo, hi);
    else if (u->twin) transpose8_stream(u->twin, u->w, &u->twin_map, lo, hi);
    if (u->copies) bf16_copies_range(&u->cp, u->w, lo, hi);
    return bad;
}

#define UPDATE_CHUNK 4096 /* elements: whole 16x16 blocks */
static uint32_t update_param(const lp_optim *o, const lp_param_update *u, long long n) {
    const long long chunks = (n + UPDATE_CHUNK - 1) / UPDATE_CHUNK;
    uint32_t bad = 0;
LP_OMP(parallel for reduction(| : bad) if (n > 32768))
    for (long long c = 0; c < chunks; c++) {
        long long lo = c * UPDATE_CHUNK, hi = lo + UPDATE_CHUNK < n ? lo + UPDATE_CHUNK : n;
        bad |= lp_optim_param_range(o, u, u->g + lo, lo, hi);
    }
    return bad;
}

/* Puts param i's optimizer state in the layout its weights are stored in (the
 * update is elementwise: w, g, m, v only need one common order). */
static lp_status state_layout(lp_optim *o, int i, bool blocked) {
    if (o->state_blk[i] == blocked) return LP_OK;
    if (o->has_state[i]) {
        const lp_param *p = &o->net->params[i];
        lp_status st = lp_net_param_store_convert(o->net, i, o->m + p->offset, blocked);
        if (!st && o->v) st = lp_net_param_store_convert(o->net, i, o->v + p->offset, blocked);
        if (st) return st;
    }
    o->state_blk[i] = blocked;
    return LP_OK;
}

/* Starts param i's update in this step: its state in the weights' layout, its step
 * count, and where its twin or bf16 copies go. */
lp_status lp_optim_param_begin(lp_optim *o, int i, float lr, lp_param_update *u) {
    lp_net *net = o->net;
    lp_param *p = &net->params[i];
    lp_status st = state_layout(o, i, lp_net_param_store_md(net, i) != NULL);
    if (st) return st;
    o->steps[i]++;
    *u = (lp_param_update){.w = net->weights + p->offset, .g = net->grads + p->offset, .m = o->m + p->offset,
                           .v = o->v ? o->v + p->offset : NULL, .lr = lr, .first = !o->has_state[i], .param = i};
    if (o->cfg.kind != LP_OPT_SGD) {
        double bc1 = 1.0 - pow((double)o->cfg.beta1, (double)o->steps[i]),
               bc2 = 1.0 - pow((double)o->cfg.beta2, (double)o->steps[i]);
        u->step_size = (float)((double)lr / bc1);
        u->bc2_sqrt = (float)sqrt(bc2);
        u->decay = (float)(1.0 - (double)lr * o->cfg.weight_decay);
    }
    u->twin = lp_net_param_twin(net, i, &u->twin_map);
    u->copies = lp_net_param_bf16_copies(net, i, &u->cp);
    return LP_OK;
}

/* Ends it: its copies were written (end_step marks them current), it has state now. */
static void param_end(lp_optim *o, const lp_param_update *u) {
    const int i = u->param;
    o->twin_written[i] = u->twin != NULL || u->copies;
    o->has_state[i] = o->cfg.kind != LP_OPT_SGD || o->cfg.momentum != 0.0f;
}

/* bad: the ranges' NaN/Inf flags. */
void lp_optim_param_fused(lp_optim *o, const lp_param_update *u, uint32_t bad) {
    param_end(o, u);
    o->fused[u->param] = true;
    /* the lowest index, as lp_optim_step's loop names (backward runs from the top) */
    if (bad && (o->fused_bad < 0 || u->param < o->fused_bad)) o->fused_bad = u->param;
}

/* The end of a step, also of one that failed part-way (the parameters updated keep
 * their update: weights and copies agree): the copies the update wrote are marked
 * current, and the per-step flags start clear for the next one. */
static void end_step(lp_optim *o) {
    lp_net *net = o->net;
    lp_net_invalidate_weights(net, true);
    for (int i = 0; i < net->nparams; i++)
        if (o->twin_written[i]) lp_net_param_twin_written(net, i);
    memset(o->twin_written, 0, sizeof *o->twin_written * (size_t)net->nparams);
    memcpy(o->fused_last, o->fused, sizeof *o->fused * (size_t)net->nparams);
    memset(o->fused, 0, sizeof *o->fused * (size_t)net->nparams);
    o->fused_bad = -1;
}

static lp_status check_lr(float lr) {
    if (!(lr >= 0.0f) || !isfinite(lr)) return lp_fail(LP_ERR_ARG, "optimizer: learning rate %g", lr);
    return LP_OK;
}

lp_status lp_optim_step(lp_optim *o, float lr) {
    lp_net *net = o->net;
    lp_status st = check_lr(lr);
    if (st) return st;
    int bad = o->fused_bad; /* the parameters updated inside backward come first */
    for (int i = 0; i < net->nparams; i++) {
        lp_param *p = &net->params[i];
        if (!p->trainable || o->fused[i]) continue;
        lp_net_materialize_grad(net, i);
        lp_param_update u;
        if ((st = lp_optim_param_begin(o, i, lr, &u))) {
            end_step(o);
            return st;
        }
        uint32_t nf = update_param(o, &u, (long long)p->numel);
        if (nf && (bad < 0 || i < bad)) bad = i;
        param_end(o, &u);
    }
    o->step++;
    end_step(o);
    if (bad >= 0)
        return lp_fail(LP_ERR_NUMERIC, "optimizer: the update made %s NaN/Inf (diverged: lower the learning rate)",
                       net->params[bad].name);
    return LP_OK;
}

lp_status lp_net_backward_fused(lp_net *net, lp_optim *o, float lr) {
    if (o->net != net) return lp_fail(LP_ERR_ARG, "backward step: the optimizer was made for another net");
    lp_status st = check_lr(lr);
    if (st) return st;
    for (int i = 0; i < net->nparams; i++) /* a fused backward is always followed by lp_optim_step */
        if (o->fused[i]) return lp_fail(LP_ERR_ARG, "backward step: the last fused backward's step was not run");
    net->fuse_opt = o;
    net->fuse_lr = lr;
    st = lp_net_backward(net);
    net->fuse_opt = NULL;
    if (st) end_step(o); /* the layers it updated keep their update */
    return st;
}

lp_status lp_net_backward_step(lp_net *net, lp_optim *o, float lr) {
    lp_status st = lp_net_backward_fused(net, o, lr);
    if (!st) st = lp_optim_step(o, lr);
    /* the fused layers' weight gradients are gone: all gradients restart from zero, so
     * that a next backward without lp_net_zero_grad cannot add onto half of them */
    lp_net_zero_grad(net);
    return st;
}

/* A fused parameter's update as inside backward (layers.c): piece by piece (a conv
 * weight's 16x16 block pair, 9 taps), from a gradient piece in cache (here zeros),
 * not from memory. */
static uint32_t update_param_cached_grad(const lp_optim *o, const lp_param_update *u, long long n) {
    static const float zeros[LP_BWD_W_PAIR] __attribute__((aligned(64)));
    const long long pieces = (n + LP_BWD_W_PAIR - 1) / LP_BWD_W_PAIR;
    uint32_t bad = 0;
LP_OMP(parallel for reduction(| : bad))
    for (long long q = 0; q < pieces; q++)
        bad |= lp_optim_param_range(o, u, zeros, q * LP_BWD_W_PAIR, q + 1 < pieces ? (q + 1) * LP_BWD_W_PAIR : n);
    return bad;
}

/* The trainable parameters' m (then v) copied to saved (n values each, in parameter
 * order), or back from it (restore). */
static void trainable_state(lp_optim *o, float *saved, size_t n, bool restore) {
    const lp_net *net = o->net;
    size_t at = 0;
    for (int i = 0; i < net->nparams; i++) {
        const lp_param *p = &net->params[i];
        if (!p->trainable) continue;
        float *st[2] = {o->m + p->offset, o->v ? o->v + p->offset : NULL}, *sv[2] = {saved + at, saved + n + at};
        for (int k = 0; k < 2 && st[k]; k++)
            memcpy(restore ? st[k] : sv[k], restore ? sv[k] : st[k], p->numel * sizeof(float));
        at += p->numel;
    }
}

/* For loupe bench --per-layer: the last step's update of every trainable parameter
 * (the same loops, w, state, copies and twins read and written; the parameters
 * fused in that step with their gradient in cache, as inside backward), run alone.
 * lr 0 leaves each weight's value as it was, and so its copies (only a -0 can
 * become +0); the state (m, v, step counts) is put back. */
lp_status lp_optim_time_update(lp_optim *o, double *seconds) {
    lp_net *net = o->net;
    const int np = net->nparams;
    size_t n = 0; /* the trainable parameters' state, saved in order */
    for (int i = 0; i < np; i++)
        if (net->params[i].trainable) n += net->params[i].numel;
    const int nv = o->v ? 2 : 1;
    float *saved = malloc((n ? n : 1) * nv * sizeof(float));
    int64_t *steps = malloc((size_t)np * sizeof *steps);
    bool *blk = malloc((size_t)np * sizeof *blk);
    if (!saved || !steps || !blk) {
        free(saved), free(steps), free(blk);
        return lp_fail(LP_ERR_NOMEM, "bench: out of memory timing the update");
    }
    trainable_state(o, saved, n, false);
    memcpy(steps, o->steps, (size_t)np * sizeof *steps);
    memcpy(blk, o->state_blk, (size_t)np * sizeof *blk);
    lp_status st = LP_OK;
    double t0 = lp_now();
    for (int i = 0; i < np && !st; i++) {
        lp_param_update u;
        if (!net->params[i].trainable || (st = lp_optim_param_begin(o, i, 0.0f, &u))) continue;
        u.first = false; /* as in every step after the first */
        const long long numel = (long long)net->params[i].numel;
        if (o->fused_last[i]) update_param_cached_grad(o, &u, numel);
        else update_param(o, &u, numel);
    }
    *seconds = lp_now() - t0;
    /* the state as it was, in the layout it was in (param_begin may have converted it) */
    trainable_state(o, saved, n, true);
    memcpy(o->steps, steps, (size_t)np * sizeof *steps);
    memcpy(o->state_blk, blk, (size_t)np * sizeof *blk);
    free(saved), free(steps), free(blk);
    return st;
}

static lp_status add_f32(lp_tensor_list *out, const char *name, const lp_param *p, const float *src) {
    lp_tensor t;
    lp_status st = lp_tensor_alloc(&t, LP_F32, p->ndim, p->shape);
    if (st) return st;
    memcpy(t.data, src, p->numel * sizeof(float));
    if ((st = lp_tensor_list_add(out, name, &t))) lp_tensor_free(&t);
    return st;
}

static lp_status add_i64(lp_tensor_list *out, const char *name, int64_t v) {
    lp_tensor t;
    int64_t one = 1;
    lp_status st = lp_tensor_alloc(&t, LP_I64, 1, &one);
    if (st) return st;
    memcpy(t.data, &v, sizeof v);
    if ((st = lp_tensor_list_add(out, name, &t))) lp_tensor_free(&t);
    return st;
}

static const char *kind_name(lp_opt_kind k) { return k == LP_OPT_SGD ? "sgd" : k == LP_OPT_ADAM ? "adam" : "adamw"; }

lp_status lp_optim_state_dict(lp_optim *o, lp_tensor_list *out) {
    lp_net *net = o->net;
    char name[96];
    lp_status st;
    for (int i = 0; i < net->nparams; i++) /* files hold plain layouts */
        if ((st = state_layout(o, i, false))) return st;
    st = add_i64(out, "optim.step", o->step);
    if (st) return st;
    if ((st = lp_tensor_list_set_meta(out, "optim", kind_name(o->cfg.kind)))) return st;
    for (int i = 0; i < net->nparams; i++) {
        const lp_param *p = &net->params[i];
        if (!o->has_state[i] && !o->steps[i]) continue;
        snprintf(name, sizeof name, "optim.%s.step", p->name);
        if ((st = add_i64(out, name, o->steps[i]))) return st;
        if (!o->has_state[i]) continue;
        if (o->cfg.kind == LP_OPT_SGD) {
            snprintf(name, sizeof name, "optim.%s.momentum_buffer", p->name);
            if ((st = add_f32(out, name, p, o->m + p->offset))) return st;
        } else {
            snprintf(name, sizeof name, "optim.%s.exp_avg", p->name);
            if ((st = add_f32(out, name, p, o->m + p->offset))) return st;
            snprintf(name, sizeof name, "optim.%s.exp_avg_sq", p->name);
            if ((st = add_f32(out, name, p, o->v + p->offset))) return st;
        }
    }
    return LP_OK;
}

static lp_status read_i64(const lp_named_tensor *nt, int64_t *v) {
    if (nt->t.dtype != LP_I64 || lp_tensor_numel(&nt->t) != 1)
        return lp_fail(LP_ERR_SHAPE, "optimizer state '%s': expected one I64 value", nt->name);
    memcpy(v, nt->t.data, sizeof *v);
    return LP_OK;
}

lp_status lp_optim_load_state_dict(lp_optim *o, const lp_tensor_list *in) {
    lp_net *net = o->net;
    const char *kind = lp_tensor_list_get_meta(in, "optim");
    if (kind && strcmp(kind, kind_name(o->cfg.kind)))
        return lp_fail(LP_ERR_ARG, "optimizer state is for %s, the optimizer is %s", kind, kind_name(o->cfg.kind));
    char name[96];
    lp_status st;
    const lp_named_tensor *nt = lp_tensor_list_find(in, "optim.step");
    if (nt && (st = read_i64(nt, &o->step))) return st;
    for (int i = 0; i < net->nparams; i++) {
        const lp_param *p = &net->params[i];
        snprintf(name, sizeof name, "optim.%s.step", p->name);
        if ((nt = lp_tensor_list_find(in, name)) && (st = read_i64(nt, &o->steps[i]))) return st;
        const char *keys[2] = {o->cfg.kind == LP_OPT_SGD ? "momentum_buffer" : "exp_avg", o->cfg.kind == LP_OPT_SGD ? NULL : "exp_avg_sq"};
        float *dst[2] = {o->m + p->offset, o->v ? o->v + p->offset : NULL};
        for (int k = 0; k < 2 && keys[k]; k++) {
            snprintf(name, sizeof name, "optim.%s.%s", p->name, keys[k]);
            if (!(nt = lp_tensor_list_find(in, name))) continue;
            if (nt->t.dtype != LP_F32 || (size_t)lp_tensor_numel(&nt->t) != p->numel)
                return lp_fail(LP_ERR_SHAPE, "optimizer state '%s': expected F32 with %zu values", name, p->numel);
            memcpy(dst[k], nt->t.data, p->numel * sizeof(float));
            o->has_state[i] = true;
            o->state_blk[i] = false;
        }
    }
    return LP_OK;
}
