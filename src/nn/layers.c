/* Layer kinds: one forward/backward pair per kind and the kind table.
 * Shapes (per plan, batch n): conv x (n, C, H, W) -> y (n, K, OH, OW) with
 * w (K, C, k, k) OIHW; maxpool (n, C, H, W) -> (n, C, H/2, W/2) floor;
 * toplain: any layout -> plain NCHW; apool (n, C, H, W) -> (n, C, OH, OW);
 * flatten (n, C, H, W) -> (n, C*H*W) view; dense x (n, IN) -> y (n, OUT)
 * with w (OUT, IN); dropout (n, F) -> (n, F); add (n, C, H, W) x 2 -> (n, C, H, W);
 * global average pool (n, C, H, W) -> (n, C); activation (SiLU, sigmoid) any shape;
 * channel scale (n, C, H, W) x gate (n, C) -> (n, C, H, W). */
#include "nn_impl.h"
#include <assert.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static float *param_ptr(lp_net *net, int i) { return net->weights + net->params[i].offset; }
static float *grad_ptr(lp_net *net, int i) { return net->grads + net->params[i].offset; }

static lp_status reserve_scratch(lp_net *net, size_t s) { return lp_net_reserve_scratch(net, s); }
/* The layer's bias, or NULL where it has none (ResNet's convolutions). */
static float *bias_ptr(lp_net *net, const lp_layer *l) { return l->pb >= 0 ? param_ptr(net, l->pb) : NULL; }

/* Hands b's pages back to the system and keeps the buffer (what was in it reads as
 * zeros, or stays, where the system keeps it): for a buffer no step reads for now, which
 * a later plan may fill again without allocating. */
static void buf_release_pages(lp_buf *b) {
#ifdef MADV_DONTNEED
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)b->p + page - 1) & ~(page - 1), hi = ((uintptr_t)b->p + b->cap) & ~(page - 1);
    if (b->p && hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
#else
    (void)b;
#endif
}

/* ---- conv ------------------------------------------------------------------ */
static lp_conv2d_params conv_params(const lp_net *net, const lp_layer *l, int n) {
    return (lp_conv2d_params){.n = n, .c = l->in_c, .h = l->in_h, .w = l->in_w, .k = l->out_c, .kh = l->k, .kw = l->k,
                              .sh = l->stride, .sw = l->stride, .ph = l->pad, .pw = l->pad_left, .ph_extra = l->pad_bottom - l->pad,
                              .pw_extra = l->pad_right - l->pad_left, .groups = l->groups, .relu = l->relu,
                              .bf16 = net ? net->cfg.bf16 : false, .no_bias = l->pb < 0};
}

lp_md lp_layer_conv_w_plain(const lp_layer *l) {
    const lp_conv2d_params p = conv_params(NULL, l, 1);
    return lp_conv2d_weights_plain_md(&p, dnnl_f32);
}
static lp_md conv_w_plain(const lp_layer *l) { return lp_layer_conv_w_plain(l); }

static lp_status conv_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    lp_conv2d_params p = conv_params(net, l, n);
    p.winograd = lp_layer_conv_winograd(net, l);
    lp_status st = lp_conv2d_init(&pl->u.conv.op, &p, pl->in_slot == 0 ? NULL : &pl->in_md);
    if (st) return st;
    lp_conv2d *c = &pl->u.conv.op;
    if (!lp_md_equal(&c->src_md, &pl->in_md)) {
        pl->u.conv.in_re = true;
        if ((st = lp_reorder_init(&pl->u.conv.re_in, &pl->in_md, &c->src_md, false))) return st;
        if ((st = lp_buf_reserve(&l->aux, lp_md_size(&c->src_md), NULL))) return st;
        if ((st = reserve_scratch(net, pl->u.conv.re_in.prim.scratch_size))) return st;
    }
    lp_md wp = conv_w_plain(l);
    if (!lp_md_equal(&c->w_md, &wp)) {
        if ((st = lp_reorder_init(&pl->u.conv.re_wf, &wp, &c->w_md, false))) return st;
        pl->u.conv.has_re_wf = true;
        bool grew;
        if ((st = lp_buf_reserve(&l->wf, lp_md_size(&c->w_md), &grew))) return st;
        if (grew) l->wf_valid = false;
    }
    const size_t bits = lp_conv2d_relu_bits_size(c);
    if (bits) {
        if ((st = lp_buf_reserve(&l->relu_bits, bits, NULL))) return st;
        pl->u.conv.relu_bits = true;
    }
    pl->out_md = c->dst_md;
    return reserve_scratch(net, lp_conv2d_scratch_size(c));
}

static lp_status conv_prepare_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights) {
    lp_conv2d *c = &pl->u.conv.op;
    lp_status st = lp_conv2d_init_backward(c, data, weights);
    if (st) return st;
    lp_md wp = conv_w_plain(l);
    if (weights) {
        if (!pl->u.conv.has_re_dw) {
            if ((st = lp_reorder_init(&pl->u.conv.re_dw, &c->bw_dw_md, &wp, true))) return st;
            if ((st = lp_reorder_init(&pl->u.conv.re_dw_set, &c->bw_dw_md, &wp, false))) return st;
            pl->u.conv.has_re_dw = true;
        }
        if ((st = lp_buf_reserve(&net->tmp_dw, lp_md_size(&c->bw_dw_md), NULL))) return st;
        if ((st = lp_buf_reserve(&net->tmp_db, sizeof(float) * (size_t)l->out_c, NULL))) return st;
    }
    if (data) {
        if (!lp_md_equal(&c->bd_w_md, &wp) && !pl->u.conv.has_re_wb) {
            if ((st = lp_reorder_init(&pl->u.conv.re_wb, &wp, &c->bd_w_md, false))) return st;
            /* From the forward copy made this step when there is one: a block transpose
             * (for bf16 without a second conversion) rather than a gather from plain OIHW;
             * 8% faster steps at 32x32 batch 2, where weight reorders dominate. */
            if (pl->u.conv.has_re_wf && !lp_md_equal(&c->w_md, &c->bd_w_md) &&
                (st = lp_reorder_init(&pl->u.conv.re_wbf, &c->w_md, &c->bd_w_md, false)))
                return st;
            pl->u.conv.has_re_wb = true;
            bool grew;
            if ((st = lp_buf_reserve(&l->wb, lp_md_size(&c->bd_w_md), &grew))) return st;
            if (grew) l->wb_valid = false;
        }
        if (pl->u.conv.in_re) {
            if (!pl->u.conv.has_re_din) {
                if ((st = lp_reorder_init(&pl->u.conv.re_din, &c->src_md, &pl->in_md, false))) return st;
                pl->u.conv.has_re_din = true;
            }
            if ((st = lp_buf_reserve(&net->tmp_dx, lp_md_size(&c->src_md), NULL))) return st;
        }
    }
    /* Training: keep the weights (and gradient, optimizer state) in the layout
     * backward-weights writes (store.c). fp32: when that is also the forward layout and
     * backward-data can read it or a reorder of it. bf16: always (the bf16 copies are
     * reordered from it instead of from plain OIHW; backward-data's from the forward one). */
    bool blocked = weights && net->params[l->pw].trainable && c->has_bwd_w &&
                   lp_md_size(&c->bw_dw_md) == net->params[l->pw].numel * sizeof(float) && !lp_md_equal(&c->bw_dw_md, &wp) &&
                   (c->p.bf16 ? pl->u.conv.has_re_wf && (!c->has_bwd_data || pl->u.conv.re_wbf.prim.p)
                              : lp_md_equal(&c->w_md, &c->bw_dw_md) &&
                                    (!c->has_bwd_data || lp_md_equal(&c->bd_w_md, &c->w_md) || pl->u.conv.re_wbf.prim.p));
    if (blocked) st = lp_net_store_blocked(net, l, &c->bw_dw_md);
    else if (l->st_blocked) st = lp_net_store_plain(net);
    if (st) return st;
    /* fp32 stored in the forward's own layout: the forward reads the storage, so the
     * copy in wf that the first step made while the weights were plain is not read
     * again (VGG16: 56 MB of the peak at 224x224 batch 16) */
    if (l->st_blocked && !c->p.bf16 && lp_md_equal(&l->st_md, &c->w_md)) {
        l->wf_valid = false;
        buf_release_pages(&l->wf);
    }
    size_t s = lp_conv2d_scratch_size(c);
    if (pl->u.conv.has_re_dw && pl->u.conv.re_dw.prim.scratch_size > s) s = pl->u.conv.re_dw.prim.scratch_size;
    if (pl->u.conv.has_re_dw && pl->u.conv.re_dw_set.prim.scratch_size > s) s = pl->u.conv.re_dw_set.prim.scratch_size;
    if (pl->u.conv.has_re_wb && pl->u.conv.re_wb.prim.scratch_size > s) s = pl->u.conv.re_wb.prim.scratch_size;
    if (pl->u.conv.re_wbf.prim.p && pl->u.conv.re_wbf.prim.scratch_size > s) s = pl->u.conv.re_wbf.prim.scratch_size;
    if (pl->u.conv.has_re_din && pl->u.conv.re_din.prim.scratch_size > s) s = pl->u.conv.re_din.prim.scratch_size;
    if (pl->u.conv.has_re_wf && pl->u.conv.re_wf.prim.scratch_size > s) s = pl->u.conv.re_wf.prim.scratch_size;
    return reserve_scratch(net, s);
}

/* bf16 with the fp32 master weights stored blocked (in backward-weights' layout):
 * the reorder that makes the bf16 forward copy from that storage, built on first
 * use by each plan (an evaluation plan too) */
static lp_status conv_bf16_copy_reorder(lp_net *net, lp_layer *l, lp_plan_layer *pl) {
    lp_conv2d *c = &pl->u.conv.op;
    if (pl->u.conv.has_re_wsf && lp_md_equal(&pl->u.conv.re_wsf.src_md, &l->st_md)) return LP_OK;
    if (pl->u.conv.has_re_wsf) lp_reorder_free(&pl->u.conv.re_wsf);
    pl->u.conv.has_re_wsf = false;
    lp_status st = lp_reorder_init(&pl->u.conv.re_wsf, &l->st_md, &c->w_md, false);
    if (st) return st;
    pl->u.conv.has_re_wsf = true;
    return reserve_scratch(net, pl->u.conv.re_wsf.prim.scratch_size);
}

/* l->wf = the weights in the forward layout (a reorder from plain OIHW, or for bf16 from
 * the blocked storage) unless already there since the last weight change. */
static lp_status weights_for_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl) {
    lp_conv2d *c = &pl->u.conv.op;
    if (l->wf_valid && lp_md_equal(&l->wf_md, &c->w_md)) return LP_OK;
    lp_status st;
    if (l->st_blocked && (st = conv_bf16_copy_reorder(net, l, pl))) return st;
    lp_reorder *re = l->st_blocked ? &pl->u.conv.re_wsf : &pl->u.conv.re_wf;
    if ((st = lp_reorder_exec(re, net->stream, param_ptr(net, l->pw), l->wf.p, net->scratch.p))) return st;
    l->wf_md = c->w_md;
    l->wf_valid = true;
    return LP_OK;
}

static lp_status conv_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                              uint64_t seed, uint64_t stream) {
    lp_conv2d *c = &pl->u.conv.op;
    lp_status st;
    const void *src = x;
    if (pl->u.conv.in_re) {
        if ((st = lp_reorder_exec(&pl->u.conv.re_in, net->stream, x, l->aux.p, net->scratch.p))) return st;
        src = l->aux.p;
    }
    if (l->st_blocked && !c->p.bf16 && !lp_md_equal(&l->st_md, &c->w_md) && (st = lp_net_store_plain(net))) return st;
    const void *w = param_ptr(net, l->pw);
    if (l->st_blocked && !c->p.bf16) {
        /* stored in this very layout: nothing to reorder */
    } else if (pl->u.conv.has_re_wf) {
        if ((st = weights_for_forward(net, l, pl))) return st;
        w = l->wf.p;
    }
    if (pl->u.conv.relu_bits)
        return lp_conv2d_forward_relu_bits(c, net->stream, src, w, bias_ptr(net, l), y, l->relu_bits.p, net->scratch.p);
    return lp_conv2d_forward(c, net->stream, src, w, bias_ptr(net, l), y, net->scratch.p);
}

/* l->wb = the weights in backward-data's layout, made by reorder re from src unless
 * already there since the last weight change. */
static lp_status weights_for_bwd_data(lp_net *net, lp_layer *l, const lp_conv2d *c, lp_reorder *re, const void *src) {
    if (l->wb_valid && lp_md_equal(&l->wb_md, &c->bd_w_md)) return LP_OK;
    lp_status st = lp_reorder_exec(re, net->stream, src, l->wb.p, net->scratch.p);
    if (st) return st;
    l->wb_md = c->bd_w_md;
    l->wb_valid = true;
    return LP_OK;
}

/* The fused step (lp_net_backward_step): the weight gradient from the small-map kernel,
 * one block pair (9 taps) at a time, goes straight into the optimizer's update of
 * those weights (and their bf16 copies or twin) while in L1: the gradient never goes
 * to memory, which saves writing and reading it back (2 x 9.4 MB per 512x512 layer,
 * and the update is bandwidth-bound). The same arithmetic on the same values as
 * lp_net_backward + lp_optim_step, so the same weights bit for bit. The bias gradient
 * is written as usual and updated by lp_optim_step. The kernel is x86-64 code: elsewhere
 * (backend.h's LP_X86_KERNELS) there is no fused step. */
#if LP_X86_KERNELS
static lp_status conv_fused_update(lp_net *net, lp_layer *l, const lp_conv2d *c, const void *src, const void *dy, float *dx) {
    if (dx) l->twin = false; /* backward data reads the weights here: no copy for it */
    lp_param_update u;
    lp_status st = lp_optim_param_begin(net->fuse_opt, l->pw, net->fuse_lr, &u);
    if (st) return st;
    const int blk = c->wblk;
    lp_conv_bwd_w_small_prepare(&c->p, blk, c->vec_x, c->vec_y, src, dy, l->pb >= 0 ? grad_ptr(net, l->pb) : net->tmp_db.p,
                                net->scratch.p);
    const long long pairs = lp_conv_bwd_w_small_pairs(&c->p, blk), size = (long long)lp_conv_bwd_w_small_pair_size(blk);
    const struct lp_optim *o = net->fuse_opt;
    const void *scratch = net->scratch.p;
    uint32_t bad = 0;
    if (!dx) {
LP_OMP(parallel for reduction(| : bad))
        for (long long q = 0; q < pairs; q++) {
            float g[LP_BWD_W_PAIR] __attribute__((aligned(64)));
            lp_conv_bwd_w_small_pair(&c->p, blk, scratch, q, g);
            bad |= lp_optim_param_range(o, &u, g, q * size, (q + 1) * size);
        }
    } else {
        /* one thread per input block, so that its dx sums in one fixed order: each pair's
         * share of dx from its old weights, then their update */
        const int ib_n = c->p.c / blk, ob_n = c->p.k / blk;
        const size_t acc_n = (size_t)c->p.n * c->p.h * c->p.w * blk;
LP_OMP(parallel for reduction(| : bad))
        for (int ib = 0; ib < ib_n; ib++) {
            float g[LP_BWD_W_PAIR] __attribute__((aligned(64)));
            float acc[LP_BWD_D_ACC] __attribute__((aligned(64)));
            memset(acc, 0, acc_n * sizeof(float));
            for (int ob = 0; ob < ob_n; ob++) {
                const long long q = (long long)ob * ib_n + ib;
                /* the next pair's weights and state lie a row of pairs away, where the
                 * hardware's prefetchers do not look */
                if (ob + 1 < ob_n) {
                    lp_prefetch_floats(u.w + (q + ib_n) * size, size);
                    lp_prefetch_floats(u.m + (q + ib_n) * size, size);
                }
                lp_conv_bwd_w_small_pair(&c->p, blk, scratch, q, g);
                lp_conv_bwd_d_small_pair(&c->p, scratch, q, u.w + q * size, acc);
                bad |= lp_optim_param_range(o, &u, g, q * size, (q + 1) * size);
            }
            lp_conv_bwd_d_small_store(&c->p, c->vec_x, ib, acc, dx);
        }
    }
    lp_optim_param_fused(net->fuse_opt, &u, bad);
    l->grad_consumed = true;
    return LP_OK;
}
#endif

static lp_status conv_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                               float *dx, bool weights, bool accumulate) {
    lp_conv2d *c = &pl->u.conv.op;
    lp_status st;
    /* the first layer's RGB kernel masks dy as it reads it: no backward data needs it */
    const bool mask_in_bwd_w = l->relu && !pl->u.conv.dy_masked && weights && !dx && lp_conv2d_bwd_w_masks_relu(c);
    if (l->relu && pl->u.conv.dy_masked) {
        /* done by the max pool after it */
    } else if (mask_in_bwd_w) {
        /* done by backward weights */
    } else if (l->relu && c->p.bf16) {
        lp_relu_backward_inplace_bf16((uint16_t *)dy, (const uint16_t *)y, lp_md_size(&c->dst_md) / 2);
    } else if (l->relu) {
        lp_relu_backward_inplace(dy, y, lp_md_size(&c->dst_md) / sizeof(float));
    }
    const void *src = pl->u.conv.in_re ? l->aux.p : (const void *)x;
    if (l->st_blocked && (!lp_md_equal(&l->st_md, &c->bw_dw_md) || (!c->p.bf16 && !lp_md_equal(&l->st_md, &c->w_md))) &&
        (st = lp_net_store_plain(net)))
        return st;
    if (l->st_blocked && c->p.bf16) lp_net_note_bf16_copies(l, &c->w_md, dx ? &c->bd_w_md : NULL);
    /* fused: after backward data, which reads the weights' copies that the update rewrites */
    const bool fuse = LP_X86_KERNELS && weights && !accumulate && net->fuse_opt && lp_conv2d_bwd_w_in_pieces(c) && net->params[l->pw].trainable &&
                      l->st_blocked && lp_md_equal(&l->st_md, &c->bw_dw_md);
    if (weights && !fuse) {
        /* blocked storage: the gradient has the layout backward-weights writes, so it
         * writes there directly (or into tmp_dw to be added); else a reorder to OIHW */
        float *gw = grad_ptr(net, l->pw);
        void *dw = l->st_blocked && !accumulate ? (void *)gw : net->tmp_dw.p;
        const uint16_t *bits = pl->u.conv.relu_bits ? l->relu_bits.p : NULL; /* the mask the forward wrote */
        if ((st = mask_in_bwd_w ? lp_conv2d_backward_weights_relu(c, net->stream, src, dy, y, bits, dw, net->tmp_db.p, net->scratch.p)
                                : lp_conv2d_backward_weights(c, net->stream, src, dy, dw, net->tmp_db.p, net->scratch.p)))
            return st;
        if (!l->st_blocked &&
            (st = lp_reorder_exec(accumulate ? &pl->u.conv.re_dw : &pl->u.conv.re_dw_set, net->stream, net->tmp_dw.p, gw,
                                  net->scratch.p)))
            return st;
        dnnl_stream_wait(net->stream);
        if (l->st_blocked && accumulate) {
            const float *t = net->tmp_dw.p;
            const long long cnt = (long long)net->params[l->pw].numel;
LP_OMP(parallel for if (cnt > 65536))
            for (long long i = 0; i < cnt; i++) gw[i] += t[i];
        }
        if (l->pb >= 0) {
            float *gb = grad_ptr(net, l->pb);
            const float *db = net->tmp_db.p;
            for (int i = 0; i < l->out_c; i++) gb[i] = accumulate ? gb[i] + db[i] : db[i];
        }
    }
    /* with the fused step, backward data too where the small-map kernel has it */
    const bool fuse_dx = fuse && dx && lp_conv2d_bwd_d_in_pieces(c);
    void *target = pl->u.conv.in_re ? net->tmp_dx.p : (void *)dx;
    if (dx && !fuse_dx) {
        const void *w = param_ptr(net, l->pw);
        if (l->st_blocked && c->p.bf16) {
            /* re_wbf reorders the bf16 forward copy to backward-data's layout; that copy
             * is this step's unless the storage just became blocked (first step) */
            if ((st = weights_for_forward(net, l, pl))) return st;
            if ((st = weights_for_bwd_data(net, l, c, &pl->u.conv.re_wbf, l->wf.p))) return st;
            w = l->wb.p;
        } else if (l->st_blocked) {
            /* stored in the forward layout: re_wbf reorders from it */
            if (!lp_md_equal(&c->bd_w_md, &l->st_md)) {
                lp_net_note_twin(l, &c->bd_w_md);
                if ((st = weights_for_bwd_data(net, l, c, &pl->u.conv.re_wbf, w))) return st;
                w = l->wb.p;
            }
        } else if (pl->u.conv.has_re_wb) {
            if (pl->u.conv.has_re_wf && l->wf_valid && lp_md_equal(&l->wf_md, &c->bd_w_md)) {
                w = l->wf.p;
            } else {
                bool from_wf = pl->u.conv.re_wbf.prim.p && l->wf_valid && lp_md_equal(&l->wf_md, &c->w_md);
                if ((st = weights_for_bwd_data(net, l, c, from_wf ? &pl->u.conv.re_wbf : &pl->u.conv.re_wb,
                                                     from_wf ? l->wf.p : w)))
                    return st;
                w = l->wb.p;
            }
        }
        if ((st = lp_conv2d_backward_data(c, net->stream, dy, w, target, net->scratch.p))) return st;
        if (pl->u.conv.in_re && (st = lp_reorder_exec(&pl->u.conv.re_din, net->stream, target, dx, net->scratch.p))) return st;
    }
#if LP_X86_KERNELS
    if (fuse) {
        dnnl_stream_wait(net->stream);
        if ((st = conv_fused_update(net, l, c, src, dy, fuse_dx ? (float *)target : NULL))) return st;
        if (fuse_dx && pl->u.conv.in_re && (st = lp_reorder_exec(&pl->u.conv.re_din, net->stream, target, dx, net->scratch.p)))
            return st;
    }
#endif
    return LP_OK;
}

static void conv_free(lp_plan_layer *pl) {
    lp_conv2d_free(&pl->u.conv.op);
    lp_reorder_free(&pl->u.conv.re_in);
    lp_reorder_free(&pl->u.conv.re_din);
    lp_reorder_free(&pl->u.conv.re_wf);
    lp_reorder_free(&pl->u.conv.re_wb);
    lp_reorder_free(&pl->u.conv.re_wbf);
    lp_reorder_free(&pl->u.conv.re_wsf);
    lp_reorder_free(&pl->u.conv.re_dw);
    lp_reorder_free(&pl->u.conv.re_dw_set);
}

/* ---- max pool ------------------------------------------------------------------ */
static lp_status pool_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    lp_maxpool *m = &pl->u.pool;
    lp_status st = l->pad ? lp_maxpool_init_padded(m, n, l->in_c, l->in_h, l->in_w, l->k, l->k, l->stride, l->stride, l->pad,
                                                   l->pad, &pl->in_md)
                          : lp_maxpool_init(m, n, l->in_c, l->in_h, l->in_w, l->k, l->k, l->stride, l->stride, &pl->in_md);
    if (st) return st;
    pl->out_md = m->dst_md;
    if ((st = lp_buf_reserve(&l->aux, m->ws_size + 64, NULL))) return st;
    return reserve_scratch(net, lp_maxpool_scratch_size(m));
}

static lp_status pool_prepare_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights) {
    if (!data) return LP_OK;
    lp_status st = lp_maxpool_init_backward(&pl->u.pool);
    if (st) return st;
    return reserve_scratch(net, lp_maxpool_scratch_size(&pl->u.pool));
}

static lp_status pool_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                              uint64_t seed, uint64_t stream) {
    return lp_maxpool_forward(&pl->u.pool, net->stream, x, y, l->aux.p, net->scratch.p);
}

static lp_status pool_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                               float *dx, bool weights, bool accumulate) {
    if (!dx) return LP_OK;
    return lp_maxpool_backward(&pl->u.pool, net->stream, dy, l->aux.p, dx, net->scratch.p);
}

static void pool_free(lp_plan_layer *pl) { lp_maxpool_free(&pl->u.pool); }

/* ---- reorder to plain NCHW ------------------------------------------------------- */
static lp_status toplain_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    int64_t d[4] = {n, l->in_c, l->in_h, l->in_w};
    lp_md plain = lp_md_plain(4, d);
    pl->out_md = plain;
    if (lp_md_equal(&pl->in_md, &plain)) {
        pl->alias = true;
        return LP_OK;
    }
    lp_status st = lp_reorder_init(&pl->u.re.fwd, &pl->in_md, &plain, false);
    if (st) return st;
    return reserve_scratch(net, pl->u.re.fwd.prim.scratch_size);
}

static lp_status toplain_prepare_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights) {
    if (!data || pl->alias || pl->u.re.has_bwd) return LP_OK;
    lp_status st = lp_reorder_init(&pl->u.re.bwd, &pl->out_md, &pl->in_md, false);
    if (st) return st;
    pl->u.re.has_bwd = true;
    return reserve_scratch(net, pl->u.re.bwd.prim.scratch_size);
}

static lp_status toplain_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                                 uint64_t seed, uint64_t stream) {
    if (pl->alias) return LP_OK;
    return lp_reorder_exec(&pl->u.re.fwd, net->stream, x, y, net->scratch.p);
}

static lp_status toplain_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                                  float *dx, bool weights, bool accumulate) {
    if (!dx || pl->alias) return LP_OK;
    return lp_reorder_exec(&pl->u.re.bwd, net->stream, dy, dx, net->scratch.p);
}

static void toplain_free(lp_plan_layer *pl) {
    lp_reorder_free(&pl->u.re.fwd);
    lp_reorder_free(&pl->u.re.bwd);
}

/* ---- adaptive average pool (plain) ------------------------------------------------ */
static lp_status apool_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    int64_t d[4] = {n, l->out_c, l->out_h, l->out_w};
    pl->out_md = lp_md_plain(4, d);
    return LP_OK;
}

static lp_status no_prepare(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights) { return LP_OK; }

static lp_status apool_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                               uint64_t seed, uint64_t stream) {
    dnnl_stream_wait(net->stream);
    lp_adaptive_avgpool_forward(x, y, n * l->in_c, l->in_h, l->in_w, l->out_h, l->out_w);
    return LP_OK;
}

static lp_status apool_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                                float *dx, bool weights, bool accumulate) {
    if (!dx) return LP_OK;
    dnnl_stream_wait(net->stream);
    lp_adaptive_avgpool_backward(dy, dx, n * l->in_c, l->in_h, l->in_w, l->out_h, l->out_w);
    return LP_OK;
}

static void nothing_free(lp_plan_layer *pl) { (void)pl; }

/* ---- flatten (view) ------------------------------------------------------------------- */
static lp_status flatten_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    int64_t d[2] = {n, l->out_c};
    pl->out_md = lp_md_plain(2, d);
    pl->alias = true;
    return LP_OK;
}

static lp_status flatten_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                                 uint64_t seed, uint64_t stream) {
    return LP_OK;
}

static lp_status flatten_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                                  float *dx, bool weights, bool accumulate) {
    return LP_OK;
}

/* ---- dense ------------------------------------------------------------------------------ */
static lp_status dense_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    if (lp_md_size(&pl->in_md) != sizeof(float) * (size_t)n * l->in_c)
        return lp_fail(LP_ERR_SHAPE, "dense input has %zu bytes, expected %d x %d floats", lp_md_size(&pl->in_md), n, l->in_c);
    /* bf16 above small batches only. At 4 or fewer the layer is bound by reading its
     * weights, and training reads the fp32 master weights for the update anyway: bf16
     * adds the copy (written by the update, read by the matmuls) and saves nothing.
     * Measured at VGG16's 4096-wide top, 224x224 batch 2: steps of 0.219-0.233 s in bf16
     * against 0.189-0.199 in fp32. */
    const bool bf16 = lp_net_dense_bf16(net, n);
    lp_status st = lp_dense_init(&pl->u.dense, n, l->in_c, l->out_c, l->relu, bf16);
    if (st) return st;
    int64_t d[2] = {n, l->out_c};
    pl->out_md = lp_md_plain(2, d);
    if (bf16) {
        bool grew;
        if ((st = lp_net_dense_bf16_md(l))) return st;
        if ((st = lp_buf_reserve(&l->wf, lp_md_size(&l->bf16_fwd_md), &grew))) return st;
        if (grew) l->wf_valid = false;
    }
    return reserve_scratch(net, lp_dense_scratch_size(&pl->u.dense));
}

static lp_status dense_prepare_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights) {
    lp_status st = lp_dense_init_backward(&pl->u.dense, data, weights);
    if (st) return st;
    return reserve_scratch(net, lp_dense_scratch_size(&pl->u.dense));
}

/* bf16: l->wf = the weights' bf16 copy, unless there since the last weight change
 * (the optimizer writes it along with each update: store.c). */
static lp_status dense_bf16_weights(lp_net *net, lp_layer *l, lp_plan_layer *pl) {
    if (l->wf_valid) return LP_OK;
    lp_status st = lp_dense_weights_bf16(&pl->u.dense, net->stream, param_ptr(net, l->pw), l->wf.p, net->scratch.p);
    if (st) return st;
    l->wf_valid = true;
    return LP_OK;
}

static lp_status dense_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                               uint64_t seed, uint64_t stream) {
    const void *w = param_ptr(net, l->pw);
    /* the update writes the copy when the training steps read it */
    if (training) lp_net_note_dense_bf16_copy(l, pl->u.dense.bf16);
    if (pl->u.dense.bf16) {
        lp_status st = dense_bf16_weights(net, l, pl);
        if (st) return st;
        w = l->wf.p;
    }
    return lp_dense_forward(&pl->u.dense, net->stream, x, w, param_ptr(net, l->pb), y, net->scratch.p);
}

/* The fused step for a dense layer at small batch: its weight gradient, an outer
 * product, is made one piece of a row at a time in L1 and goes straight into the
 * update, as for conv layers above; backward data takes each piece of the weights
 * just before the update rewrites it (lp_dense_backward_small). At VGG's top (102 M
 * weights in classifier.0) that saves writing and reading back a 400 MB gradient and
 * one more read of the weights per step. */
typedef struct dense_fused {
    const struct lp_optim *o;
    const lp_param_update *u;
} dense_fused;

static uint32_t dense_update_piece(void *ctx, const float *g, long long lo, long long hi) {
    const dense_fused *f = ctx;
    return lp_optim_param_range(f->o, f->u, g, lo, hi);
}

static lp_status dense_fused_update(lp_net *net, lp_layer *l, const lp_dense *d, const float *x, const float *dy, float *dx) {
    lp_param_update u;
    lp_status st = lp_optim_param_begin(net->fuse_opt, l->pw, net->fuse_lr, &u);
    if (st) return st;
    lp_dense_backward_bias(d, dy, grad_ptr(net, l->pb), false);
    dense_fused f = {net->fuse_opt, &u};
    const uint32_t bad = lp_dense_backward_small(d, x, dy, param_ptr(net, l->pw), dx, net->scratch.p, dense_update_piece, &f);
    lp_optim_param_fused(net->fuse_opt, &u, bad);
    l->grad_consumed = true;
    return LP_OK;
}

static lp_status dense_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                                float *dx, bool weights, bool accumulate) {
    lp_status st;
    dnnl_stream_wait(net->stream);
    if (l->relu) lp_relu_backward_inplace(dy, y, (size_t)n * l->out_c);
    if (weights && !accumulate && net->fuse_opt && net->params[l->pw].trainable && lp_dense_small_batch(&pl->u.dense))
        return dense_fused_update(net, l, &pl->u.dense, x, dy, dx);
    if (weights &&
        (st = lp_dense_backward_weights(&pl->u.dense, net->stream, x, dy, grad_ptr(net, l->pw), grad_ptr(net, l->pb), accumulate,
                                    net->scratch.p)))
        return st;
    if (!dx) return LP_OK;
    const void *w = param_ptr(net, l->pw);
    if (pl->u.dense.bf16) {
        if ((st = dense_bf16_weights(net, l, pl))) return st;
        w = l->wf.p;
    }
    return lp_dense_backward_data(&pl->u.dense, net->stream, dy, w, dx, net->scratch.p);
}

static void dense_free(lp_plan_layer *pl) { lp_dense_free(&pl->u.dense); }

/* ---- dropout ------------------------------------------------------------------------------ */
static lp_status dropout_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    pl->out_md = pl->in_md;
    return lp_buf_reserve(&l->aux, lp_md_size(&pl->in_md), NULL);
}

static lp_status dropout_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                                 uint64_t seed, uint64_t stream) {
    size_t count = lp_md_size(&pl->in_md) / sizeof(float);
    dnnl_stream_wait(net->stream);
    if (training && l->p > 0.0f)
        lp_dropout_forward_at(x, y, l->aux.p, count, l->p, seed, stream, (uint64_t)net->sample_offset * (count / (size_t)n));
    else {
        memcpy(y, x, count * sizeof(float));
        if (training) {
            float *m = l->aux.p;
            for (size_t i = 0; i < count; i++) m[i] = 1.0f;
        }
    }
    return LP_OK;
}

static lp_status dropout_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                                  float *dx, bool weights, bool accumulate) {
    if (!dx) return LP_OK;
    dnnl_stream_wait(net->stream);
    lp_dropout_backward(dy, l->aux.p, dx, lp_md_size(&pl->in_md) / sizeof(float));
    return LP_OK;
}

/* ---- residual add (+ ReLU) ---------------------------------------------------------------
 * y = x + x2 (x2: the second input's slot) in x's layout; x2 is reordered to it first where
 * the convolutions before chose different layouts (aux holds it). Backward: dx is dy itself
 * (net.c's dx_is_dy), masked by the ReLU in place; net.c hands it to both inputs, the
 * second's reordered back to its layout (lp_layer_dx2). */
static lp_status add_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    lp_status st = lp_residual_add_init(&pl->u.add.op, &pl->in_md, l->relu);
    if (st) return st;
    pl->out_md = pl->in_md;
    if (l->p > 0.0f && ((st = lp_buf_reserve(&l->sd_mask, sizeof(float) * (size_t)n, NULL)) ||
                        (st = lp_buf_reserve(&l->sd_dy, lp_md_size(&pl->in_md), NULL))))
        return st;
    if (!lp_md_equal(&pl->in_md, &pl->in2_md)) {
        pl->u.add.re2 = true;
        if ((st = lp_reorder_init(&pl->u.add.fwd2, &pl->in2_md, &pl->in_md, false))) return st;
        const size_t need = lp_md_size(&pl->in_md) > lp_md_size(&pl->in2_md) ? lp_md_size(&pl->in_md) : lp_md_size(&pl->in2_md);
        if ((st = lp_buf_reserve(&l->aux, need, NULL))) return st;
        if ((st = reserve_scratch(net, pl->u.add.fwd2.prim.scratch_size))) return st;
    }
    return reserve_scratch(net, lp_residual_add_scratch_size(&pl->u.add.op));
}

static lp_status add_prepare_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights) {
    if (!data) return LP_OK;
    lp_status st;
    if (pl->u.add.re2 && !pl->u.add.bwd2.prim.p) {
        if ((st = lp_reorder_init(&pl->u.add.bwd2, &pl->in_md, &pl->in2_md, false))) return st;
        if ((st = reserve_scratch(net, pl->u.add.bwd2.prim.scratch_size))) return st;
    }
    if (!l->relu) return LP_OK;
    if ((st = lp_residual_add_init_backward(&pl->u.add.op))) return st;
    return reserve_scratch(net, lp_residual_add_scratch_size(&pl->u.add.op));
}

/* Stochastic depth (l->p > 0): in a training step where lp_layer_sd_active, sample i's
 * branch (the first input) is kept with probability 1 - p and then scaled by 1 / (1 - p)
 * (torchvision's StochasticDepth "row"), y = x * m[i] + x2; the mask is drawn like
 * dropout's, per sample, and is all ones in steps without it (the tests read it). */
static lp_status add_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                             uint64_t seed, uint64_t stream) {
    const float *x2 = net->act[pl->in2_slot].p;
    lp_status st;
    if (pl->u.add.re2) {
        if ((st = lp_reorder_exec(&pl->u.add.fwd2, net->stream, x2, l->aux.p, net->scratch.p))) return st;
        x2 = l->aux.p;
    }
    if (training && l->p > 0.0f) {
        float *m = l->sd_mask.p;
        l->sd_on = lp_layer_sd_active(net, l);
        const float keep = 1.0f / (1.0f - l->p);
        for (int i = 0; i < n; i++)
            m[i] = !l->sd_on || lp_rng_uniform(seed, stream, (uint64_t)(net->sample_offset + i)) >= l->p ? (l->sd_on ? keep : 1.0f) : 0.0f;
        if (l->sd_on) {
            dnnl_stream_wait(net->stream);
            const bool bf16 = pl->in_md.data_type == dnnl_bf16;
            lp_scale_samples(x, m, y, n, lp_md_size(&pl->in_md) / (bf16 ? 2 : 4) / (size_t)n, bf16);
            x = y; /* oneDNN's binary works in place on its first input */
        }
    }
    return lp_residual_add_forward(&pl->u.add.op, net->stream, x, x2, y, net->scratch.p);
}

static lp_status add_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                              float *dx, bool weights, bool accumulate) {
    if (!dx) return LP_OK;
    lp_status st = l->relu ? lp_residual_add_backward(&pl->u.add.op, net->stream, dy, y, dy, net->scratch.p) : LP_OK;
    if (st || !(l->p > 0.0f && l->sd_on)) return st;
    /* the skip's gradient is dy, the branch's dy * m (lp_layer_dx2 hands out the copy) */
    dnnl_stream_wait(net->stream);
    const size_t bytes = lp_md_size(&pl->in_md);
    memcpy(l->sd_dy.p, dy, bytes);
    const bool bf16 = pl->in_md.data_type == dnnl_bf16;
    lp_scale_samples(dy, l->sd_mask.p, dy, n, bytes / (bf16 ? 2 : 4) / (size_t)n, bf16);
    return LP_OK;
}

lp_status lp_layer_dx2(lp_net *net, lp_layer *l, lp_plan_layer *pl, const float *dx, const float **dx2) {
    *dx2 = dx;
    if (l->kind == LP_LAYER_SCALE) *dx2 = l->aux.p; /* the gate's gradient */
    if (l->kind != LP_LAYER_ADD) return LP_OK;
    if (l->p > 0.0f && l->sd_on) *dx2 = dx = l->sd_dy.p;
    if (!pl->u.add.re2) return LP_OK;
    /* aux held the forward's reordered input, which backward no longer needs */
    lp_status st = lp_reorder_exec(&pl->u.add.bwd2, net->stream, dx, l->aux.p, net->scratch.p);
    *dx2 = l->aux.p;
    return st;
}

static void add_free(lp_plan_layer *pl) {
    lp_residual_add_free(&pl->u.add.op);
    lp_reorder_free(&pl->u.add.fwd2);
    lp_reorder_free(&pl->u.add.bwd2);
}

/* ---- global average pool: (n, C, H, W) in the convolutions' layout -> (n, C) plain -------- */
static lp_status gap_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    lp_status st = lp_global_avgpool_init(&pl->u.gap, &pl->in_md);
    if (st) return st;
    int64_t d[2] = {n, l->out_c};
    pl->out_md = lp_md_plain(2, d); /* fp32 for the dense layer; bf16 nets pool into aux and widen */
    if (pl->u.gap.dst_md.data_type == dnnl_bf16 && (st = lp_buf_reserve(&l->aux, sizeof(uint16_t) * (size_t)n * l->out_c, NULL))) return st;
    return reserve_scratch(net, lp_global_avgpool_scratch_size(&pl->u.gap));
}

static lp_status gap_prepare_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights) {
    if (!data) return LP_OK;
    lp_status st = lp_global_avgpool_init_backward(&pl->u.gap);
    if (st) return st;
    return reserve_scratch(net, lp_global_avgpool_scratch_size(&pl->u.gap));
}

static lp_status gap_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                             uint64_t seed, uint64_t stream) {
    if (pl->u.gap.dst_md.data_type != dnnl_bf16) return lp_global_avgpool_forward(&pl->u.gap, net->stream, x, y, net->scratch.p);
    lp_status st = lp_global_avgpool_forward(&pl->u.gap, net->stream, x, l->aux.p, net->scratch.p);
    if (st) return st;
    dnnl_stream_wait(net->stream);
    const uint16_t *h = l->aux.p;
    for (size_t i = 0; i < (size_t)n * l->out_c; i++) y[i] = lp_bf16_to_f32(h[i]);
    return LP_OK;
}

/* bf16: dy rounded to bf16 first, as the bf16 gradient autocast's Linear hands its input */
static lp_status gap_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                              float *dx, bool weights, bool accumulate) {
    if (!dx) return LP_OK;
    if (pl->u.gap.dst_md.data_type != dnnl_bf16) return lp_global_avgpool_backward(&pl->u.gap, net->stream, dy, dx, net->scratch.p);
    uint16_t *h = l->aux.p;
    for (size_t i = 0; i < (size_t)n * l->out_c; i++) h[i] = lp_f32_to_bf16(dy[i]);
    return lp_global_avgpool_backward(&pl->u.gap, net->stream, (const float *)h, dx, net->scratch.p);
}

static void gap_free(lp_plan_layer *pl) { lp_global_avgpool_free(&pl->u.gap); }

bool lp_layer_dx_into_sum(lp_net *net, lp_layer *L, lp_plan_layer *pl, const float *x, const float *dy, float *sum, bool set) {
    if (set && L->kind == LP_LAYER_GAP) { /* false in bf16, as the scale's below */
        dnnl_stream_wait(net->stream); /* dy and sum may come from primitives still running */
        return lp_global_avgpool_backward_add(&pl->u.gap, dy, sum);
    }
    if (!set && L->kind == LP_LAYER_SCALE) {
        dnnl_stream_wait(net->stream);
        return lp_channel_scale_backward_into(&pl->u.scale, x, net->act[pl->in2_slot].p, dy, sum, L->aux.p);
    }
    return false;
}

/* ---- batch normalization (+ ReLU) -----------------------------------------------------------
 * PyTorch's BatchNorm2d (backend's batchnorm.c). In a training step, with the batch's
 * statistics where lp_layer_bn_train (kept in aux for backward; the running ones updated
 * as PyTorch does, momentum 0.1), else with the running statistics; evaluation always
 * with the running ones. One op per mode, built on first use; relu_bits holds the fused
 * ReLU's mask. Backward writes dx over dy (net.c's dx_is_dy). */
static lp_status bn_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    pl->out_md = pl->in_md;
    return lp_buf_reserve(&l->aux, 2 * sizeof(float) * (size_t)l->in_c, NULL);
}

/* A net with ReLU6 (MobileNetV2) runs all its batch norms on our fused kernel: one
 * arithmetic for all of them, PyTorch's folding of scale and shift, so that its ReLU6
 * masks fall where PyTorch's do (docs/engine.md). */
static bool net_has_relu6(const lp_net *net) {
    for (int i = 0; i < net->nlayers; i++)
        if (net->layers[i].kind == LP_LAYER_BN && net->layers[i].relu6) return true;
    return false;
}

static lp_status bn_op(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, bool train, lp_batchnorm **out) {
    lp_batchnorm *b = train ? &pl->u.bn.train : &pl->u.bn.frozen;
    bool *has = train ? &pl->u.bn.has_train : &pl->u.bn.has_frozen;
    *out = b;
    if (*has) return LP_OK;
    lp_batchnorm_params p = {.n = n, .c = l->in_c, .h = l->in_h, .w = l->in_w, .mode = train ? LP_BN_TRAIN : LP_BN_FROZEN,
                             .relu = l->relu, .relu6 = l->relu6, .silu = l->silu, .fused = net_has_relu6(net),
                             .backward = true};
    lp_status st = lp_batchnorm_init(b, &p, &pl->in_md);
    if (st) return st;
    *has = true;
    if (!lp_md_equal(&b->data_md, &pl->in_md)) return lp_fail(LP_ERR_BACKEND, "%s: batch norm chose another layout than its input's", l->name);
    if ((st = lp_buf_reserve(&l->relu_bits, b->ws_size + 64, NULL))) return st;
    return reserve_scratch(net, lp_batchnorm_scratch_size(b));
}

static lp_status bn_prepare_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights) {
    const bool train = pl->u.bn.last_train;
    if (!(train ? pl->u.bn.has_train : pl->u.bn.has_frozen))
        return lp_fail(LP_ERR_ARG, "%s: backward needs a training forward first", l->name);
    lp_batchnorm *b = train ? &pl->u.bn.train : &pl->u.bn.frozen;
    lp_status st = lp_batchnorm_init_backward(b);
    if (st) return st;
    if ((st = lp_buf_reserve(&net->tmp_db, 2 * sizeof(float) * (size_t)l->in_c, NULL))) return st;
    return reserve_scratch(net, lp_batchnorm_scratch_size(b));
}

static lp_status bn_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                            uint64_t seed, uint64_t stream) {
    const bool train = training && lp_layer_bn_train(net, l);
    lp_batchnorm *b;
    lp_status st = bn_op(net, l, pl, n, train, &b);
    if (st) return st;
    if (training) pl->u.bn.last_train = train;
    float *stats = l->aux.p, *rm = param_ptr(net, l->prm), *rv = param_ptr(net, l->prv);
    if ((st = lp_batchnorm_forward(b, net->stream, x, param_ptr(net, l->pw), param_ptr(net, l->pb), train ? stats : rm,
                                   train ? stats + l->in_c : rv, y, l->relu_bits.p, net->scratch.p)))
        return st;
    if (train) {
        dnnl_stream_wait(net->stream);
        float *nbt = param_ptr(net, l->pnb);
        int64_t count = (int64_t)*nbt;
        lp_batchnorm_update_running(rm, rv, &count, stats, stats + l->in_c, l->in_c, (int64_t)n * l->in_h * l->in_w,
                                    LP_BN_MOMENTUM);
        *nbt = (float)count;
    }
    return LP_OK;
}

static lp_status bn_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                             float *dx, bool weights, bool accumulate) {
    if (!dx && !weights) return LP_OK;
    const bool train = pl->u.bn.last_train;
    lp_batchnorm *b = train ? &pl->u.bn.train : &pl->u.bn.frozen;
    const float *stats = l->aux.p, *mean = train ? stats : param_ptr(net, l->prm), *var = train ? stats + l->in_c : param_ptr(net, l->prv);
    float *dg = NULL, *dbeta = NULL, *tmp = net->tmp_db.p;
    if (weights) dg = accumulate ? tmp : grad_ptr(net, l->pw), dbeta = accumulate ? tmp + l->in_c : grad_ptr(net, l->pb);
    lp_status st = lp_batchnorm_backward(b, net->stream, x, y, dy, param_ptr(net, l->pw), param_ptr(net, l->pb), mean, var,
                                         l->relu_bits.p, dx, dg, dbeta, net->scratch.p);
    if (st || !weights || !accumulate) return st;
    dnnl_stream_wait(net->stream);
    float *gw = grad_ptr(net, l->pw), *gb = grad_ptr(net, l->pb);
    for (int i = 0; i < l->in_c; i++) gw[i] += tmp[i], gb[i] += tmp[l->in_c + i];
    return LP_OK;
}

static void bn_free(lp_plan_layer *pl) {
    if (pl->u.bn.has_train) lp_batchnorm_free(&pl->u.bn.train);
    if (pl->u.bn.has_frozen) lp_batchnorm_free(&pl->u.bn.frozen);
}

/* ---- SiLU / sigmoid (l->act), oneDNN's eltwise: output in its own slot (SiLU's backward
 * reads the input); backward writes dx over dy (net.c's dx_is_dy) --------------------------- */
static lp_status act_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    pl->out_md = pl->in_md;
    lp_status st = lp_act_init(&pl->u.act, (lp_act_kind)l->act, &pl->in_md);
    if (st) return st;
    return reserve_scratch(net, lp_act_scratch_size(&pl->u.act));
}

static lp_status act_prepare_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, bool data, bool weights) {
    if (!data) return LP_OK;
    lp_status st = lp_act_init_backward(&pl->u.act);
    if (st) return st;
    return reserve_scratch(net, lp_act_scratch_size(&pl->u.act));
}

static lp_status act_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                             uint64_t seed, uint64_t stream) {
    return lp_act_forward(&pl->u.act, net->stream, x, y, net->scratch.p);
}

static lp_status act_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                              float *dx, bool weights, bool accumulate) {
    if (!dx) return LP_OK;
    return lp_act_backward(&pl->u.act, net->stream, dy, x, y, dx, net->scratch.p);
}

static void act_free(lp_plan_layer *pl) { lp_act_free(&pl->u.act); }

/* ---- channel scale: y = x * gate (gate: src2's (n, C)); backward writes dx over dy and the
 * gate's gradient into aux, which lp_layer_dx2 hands on ------------------------------------- */
static lp_status scale_plan(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n) {
    pl->out_md = pl->in_md;
    if (pl->in2_md.ndims != 2 || pl->in2_md.dims[0] != n || pl->in2_md.dims[1] != l->in_c)
        return lp_fail(LP_ERR_SHAPE, "%s: the gate must be (n, %d)", l->name, l->in_c);
    lp_status st = lp_channel_scale_init(&pl->u.scale, &pl->in_md, pl->in2_md.data_type == dnnl_bf16);
    if (st) return st;
    return lp_buf_reserve(&l->aux, sizeof(float) * (size_t)n * l->in_c, NULL);
}

static lp_status scale_forward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, float *y, bool training,
                               uint64_t seed, uint64_t stream) {
    dnnl_stream_wait(net->stream);
    lp_channel_scale_forward(&pl->u.scale, x, net->act[pl->in2_slot].p, y);
    return LP_OK;
}

static lp_status scale_backward(lp_net *net, lp_layer *l, lp_plan_layer *pl, int n, const float *x, const float *y, float *dy,
                                float *dx, bool weights, bool accumulate) {
    if (!dx) return LP_OK;
    dnnl_stream_wait(net->stream);
    lp_channel_scale_backward(&pl->u.scale, x, net->act[pl->in2_slot].p, dy, l->aux.p);
    return LP_OK;
}

const lp_layer_ops lp_layer_kinds[LP_LAYER_KIND_COUNT] = {
    [LP_LAYER_CONV] = {"Conv2d", conv_plan, conv_prepare_backward, conv_forward, conv_backward, conv_free},
    [LP_LAYER_MAXPOOL] = {"MaxPool2d", pool_plan, pool_prepare_backward, pool_forward, pool_backward, pool_free},
    [LP_LAYER_TOPLAIN] = {"Reorder", toplain_plan, toplain_prepare_backward, toplain_forward, toplain_backward, toplain_free},
    [LP_LAYER_APOOL] = {"AdaptiveAvgPool2d", apool_plan, no_prepare, apool_forward, apool_backward, nothing_free},
    [LP_LAYER_FLATTEN] = {"Flatten", flatten_plan, no_prepare, flatten_forward, flatten_backward, nothing_free},
    [LP_LAYER_DENSE] = {"Linear", dense_plan, dense_prepare_backward, dense_forward, dense_backward, dense_free},
    [LP_LAYER_DROPOUT] = {"Dropout", dropout_plan, no_prepare, dropout_forward, dropout_backward, nothing_free},
    [LP_LAYER_ADD] = {"Add", add_plan, add_prepare_backward, add_forward, add_backward, add_free},
    [LP_LAYER_GAP] = {"AdaptiveAvgPool2d", gap_plan, gap_prepare_backward, gap_forward, gap_backward, gap_free},
    [LP_LAYER_BN] = {"BatchNorm2d", bn_plan, bn_prepare_backward, bn_forward, bn_backward, bn_free},
    [LP_LAYER_ACT] = {"SiLU", act_plan, act_prepare_backward, act_forward, act_backward, act_free},
    [LP_LAYER_SCALE] = {"Mul", scale_plan, no_prepare, scale_forward, scale_backward, nothing_free},
};
static_assert(sizeof lp_layer_kinds / sizeof lp_layer_kinds[0] == LP_LAYER_KIND_COUNT, "one entry per layer kind");
