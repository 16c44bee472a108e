/* Where a conv layer's weight tensor lives: plain OIHW (torchvision's layout,
 * what every API and file sees) or, while training in fp32, the blocked layout
 * the forward primitive reads and backward-weights writes. Then the weights,
 * their gradient and the optimizer's state (all updated elementwise, so any
 * common order will do) stay blocked between steps, and a step reorders no
 * weights: at small images, where the 3x3x512x512 weights outweigh the
 * activations, those reorders were most of the step. Everything that hands
 * weights or gradients out converts back first (lp_net_store_plain). */
#include "nn_impl.h"
#include <string.h>

static size_t param_bytes(const lp_net *net, int i) { return net->params[i].numel * sizeof(float); }

/* buf (the layer's weight-sized data) between plain and the storage layout, via
 * net->store_tmp. Conversions happen when a layout changes, not in every step: the
 * functions below free store_tmp when done (9 MB at VGG's 512x512 layers, which
 * otherwise stayed in the training's peak memory). */
static lp_status convert(lp_net *net, lp_layer *L, float *buf, bool to_blocked) {
    size_t bytes = param_bytes(net, L->pw);
    lp_status st = lp_buf_reserve(&net->store_tmp, bytes, NULL);
    if (st) return st;
    st = lp_reorder_exec(to_blocked ? &L->st_to_blk : &L->st_to_plain, net->stream, buf, net->store_tmp.p,
                                   net->scratch.p);
    if (st) return st;
    dnnl_stream_wait(net->stream);
    memcpy(buf, net->store_tmp.p, bytes);
    return LP_OK;
}

lp_status lp_net_store_blocked(lp_net *net, lp_layer *L, const lp_md *md) {
    /* One blocked layout per layer for good: the optimizer may hold this layer's state
     * in it (lp_net_param_store_convert uses these reorders). A plan that wants another
     * layout (another batch size, say) gets plain weights and reorders them, as before. */
    if (L->st_has_re && !lp_md_equal(&L->st_md, md)) return L->st_blocked ? lp_net_store_plain(net) : LP_OK;
    if (L->st_blocked) return LP_OK;
    lp_status st;
    if (md->data_type != dnnl_f32 || lp_md_size(md) != param_bytes(net, L->pw))
        return lp_fail(LP_ERR_BACKEND, "internal: layer %s cannot store its weights in a padded or non-f32 layout", L->name);
    if (!L->st_has_re) {
        lp_md plain = lp_layer_conv_w_plain(L);
        if ((st = lp_reorder_init(&L->st_to_blk, &plain, md, false))) return st;
        if ((st = lp_reorder_init(&L->st_to_plain, md, &plain, false))) {
            lp_reorder_free(&L->st_to_blk);
            return st;
        }
        L->st_has_re = true;
        L->st_md = *md;
        size_t s = L->st_to_blk.prim.scratch_size > L->st_to_plain.prim.scratch_size ? L->st_to_blk.prim.scratch_size
                                                                                     : L->st_to_plain.prim.scratch_size;
        if ((st = lp_net_reserve_scratch(net, s))) return st;
    }
    st = convert(net, L, net->weights + net->params[L->pw].offset, true);
    if (!st && net->params[L->pw].grad_state == LP_GRAD_DATA) st = convert(net, L, net->grads + net->params[L->pw].offset, true);
    lp_buf_free(&net->store_tmp);
    if (st) return st;
    L->st_blocked = true;
    L->wf_valid = L->wb_valid = false;
    return LP_OK;
}

lp_status lp_net_store_plain(lp_net *net) {
    for (int l = 0; l < net->nlayers; l++) {
        lp_layer *L = &net->layers[l];
        if (!L->st_blocked) continue;
        lp_status st = convert(net, L, net->weights + net->params[L->pw].offset, false);
        if (!st && net->params[L->pw].grad_state == LP_GRAD_DATA)
            st = convert(net, L, net->grads + net->params[L->pw].offset, false);
        if (st) {
            lp_buf_free(&net->store_tmp);
            return st;
        }
        L->st_blocked = false;
        L->wf_valid = L->wb_valid = false;
    }
    lp_buf_free(&net->store_tmp);
    return LP_OK;
}

const lp_md *lp_net_param_store_md(const lp_net *net, int i) {
    const lp_layer *L = &net->layers[net->params[i].layer];
    return L->st_blocked && L->pw == i ? &L->st_md : NULL;
}

lp_status lp_net_param_store_convert(lp_net *net, int i, float *buf, bool to_blocked) {
    lp_layer *L = &net->layers[net->params[i].layer];
    if (L->pw != i || !L->st_has_re)
        return lp_fail(LP_ERR_BACKEND, "internal: %s has no blocked storage layout", net->params[i].name);
    lp_status st = convert(net, L, buf, to_blocked);
    lp_buf_free(&net->store_tmp);
    return st;
}

/* Whether b is a with its two inner blocks (B and B, over dims 0 and 1) swapped and
 * everything else equal (element r*B + c of each BxB block of a is c*B + r of b's), or
 * with the outer order of dims 0 and 1 swapped too, a in the dense order O, I, h, w
 * (OIhw16i16o against IOhw16o16i, 1x1 convolutions' backward data). */
static bool transposed_twin(const lp_md *a, const lp_md *b, lp_twin_map *map) {
    if (a->format_kind != dnnl_blocked || b->format_kind != dnnl_blocked || a->ndims != 4 || b->ndims != 4 ||
        a->data_type != dnnl_f32 || b->data_type != dnnl_f32 || a->offset0 || b->offset0)
        return false;
    const dnnl_blocking_desc_t *x = &a->format_desc.blocking, *y = &b->format_desc.blocking;
    if (x->inner_nblks != 2 || y->inner_nblks != 2 || x->inner_blks[0] != x->inner_blks[1] ||
        y->inner_blks[0] != x->inner_blks[0] || y->inner_blks[1] != x->inner_blks[0] || x->inner_idxs[0] != y->inner_idxs[1] ||
        x->inner_idxs[1] != y->inner_idxs[0] || (x->inner_idxs[0] | x->inner_idxs[1]) != 1)
        return false;
    const long long B = x->inner_blks[0], bb = B * B;
    for (int d = 0; d < 4; d++)
        if (a->dims[d] != b->dims[d] || a->padded_dims[d] != b->padded_dims[d] || a->padded_dims[d] != a->dims[d]) return false;
    *map = (lp_twin_map){.blk = (int)B, .ob_n = a->dims[0] / B, .ib_n = a->dims[1] / B, .khw = a->dims[2] * a->dims[3]};
    bool same = true;
    for (int d = 0; d < 4; d++) same &= x->strides[d] == y->strides[d];
    if (same) return true;
    const long long w = a->dims[3], khw = map->khw;
    const bool dense = x->strides[3] == bb && x->strides[2] == w * bb && x->strides[1] == khw * bb && x->strides[0] == map->ib_n * khw * bb;
    const bool swapped = y->strides[3] == bb && y->strides[2] == w * bb && y->strides[0] == khw * bb && y->strides[1] == map->ob_n * khw * bb;
    map->swap = true;
    return dense && swapped;
}

void lp_net_note_twin(lp_layer *L, const lp_md *bwd_md) {
    /* the blocks of AVX-512's layouts (16x16) and of AVX2's (8x8): the optimizer
     * transposes them with code of that level */
    lp_twin_map map = {0};
    const bool t = transposed_twin(&L->st_md, bwd_md, &map);
    const lp_isa isa = lp_cpu_isa();
    L->twin = t && L->st_blocked && ((map.blk == 16 && isa >= LP_ISA_AVX512) || (map.blk == 8 && isa >= LP_ISA_AVX2));
    L->twin_map = map;
    if (L->twin) L->twin_md = *bwd_md;
}

float *lp_net_param_twin(lp_net *net, int i, lp_twin_map *map) {
    lp_layer *L = &net->layers[net->params[i].layer];
    if (L->pw != i || !L->st_blocked || !L->twin || L->wb.cap < param_bytes(net, i)) return NULL;
    *map = L->twin_map;
    return L->wb.p;
}

/* The layer's copies are written by its update: conv weights stored blocked, or a
 * dense layer's (whose weights are always stored plain). */
static bool copies_written(const lp_layer *L) { return L->bf16_copies && (L->st_blocked || L->kind == LP_LAYER_DENSE); }

void lp_net_param_twin_written(lp_net *net, int i) {
    lp_layer *L = &net->layers[net->params[i].layer];
    if (copies_written(L)) {
        L->wf_md = L->bf16_fwd_md;
        L->wf_valid = true;
        if (L->bf16_copy_bwd) {
            L->wb_md = L->bf16_bwd_md;
            L->wb_valid = true;
        }
        return;
    }
    L->wb_md = L->twin_md;
    L->wb_valid = true;
}

static bool md_is(const lp_md *md, const lp_layer *L, dnnl_data_type_t dt, dnnl_format_tag_t tag) {
    lp_md want;
    dnnl_dims_t d = {L->out_c, L->in_c, L->k, L->k};
    return dnnl_memory_desc_init_by_tag(&want, 4, d, dt, tag) == dnnl_success && lp_md_equal(md, &want);
}

void lp_net_note_bf16_copies(lp_layer *L, const lp_md *fwd_md, const lp_md *bwd_md) {
    /* the layouts oneDNN 2.6 picks for AMX, and for AVX512-BF16 without it (jit_bf16 and
     * jit_bf16_1x1: 16x16 blocks at the fp32 storage's own places, backward-data's swapped
     * to input-major for 1x1); the optimizer's writer knows only these */
    const bool room = L->wf.cap >= lp_md_size(fwd_md) && (!bwd_md || L->wb.cap >= lp_md_size(bwd_md));
    const bool base = L->st_blocked && lp_bf16_native() && room && md_is(&L->st_md, L, dnnl_f32, dnnl_ABcd16b16a);
    const bool amx = base && L->out_c % 32 == 0 && L->in_c % 32 == 0 && md_is(fwd_md, L, dnnl_bf16, dnnl_AcdB16b32a2b) &&
                     (!bwd_md || md_is(bwd_md, L, dnnl_bf16, dnnl_ABcd16a16b2a));
    const bool swap = bwd_md && md_is(bwd_md, L, dnnl_bf16, dnnl_BAcd8a16b2a);
    const bool blk16 = base && !amx && L->out_c % 16 == 0 && L->in_c % 16 == 0 && md_is(fwd_md, L, dnnl_bf16, dnnl_ABcd8b16a2b) &&
                       (!bwd_md || swap || md_is(bwd_md, L, dnnl_bf16, dnnl_ABcd8a16b2a));
    L->bf16_copies = amx || blk16;
    L->bf16_blk16 = blk16;
    L->bf16_bwd_swap = blk16 && swap;
    L->bf16_copy_bwd = L->bf16_copies && bwd_md;
    if (L->bf16_copies) L->bf16_fwd_md = *fwd_md;
    if (L->bf16_copy_bwd) L->bf16_bwd_md = *bwd_md;
}

lp_status lp_net_dense_bf16_md(lp_layer *L) {
    dnnl_dims_t d = {L->out_c, L->in_c};
    if (dnnl_memory_desc_init_by_tag(&L->bf16_fwd_md, 2, d, dnnl_bf16, dnnl_ab) != dnnl_success)
        return lp_fail(LP_ERR_BACKEND, "%s: bf16 weight copy descriptor", L->name);
    return LP_OK;
}

void lp_net_note_dense_bf16_copy(lp_layer *L, bool on) {
    L->bf16_copies = on && lp_bf16_native() && L->wf.cap >= lp_md_size(&L->bf16_fwd_md);
    L->bf16_copy_bwd = false;
}

bool lp_net_param_bf16_copies(lp_net *net, int i, lp_bf16_copies *c) {
    lp_layer *L = &net->layers[net->params[i].layer];
    if (L->pw != i || !copies_written(L)) return false;
    *c = (lp_bf16_copies){.fwd = L->wf.p, .bwd = L->bf16_copy_bwd ? L->wb.p : NULL, .o = L->out_c, .i = L->in_c,
                          .khw = L->k * L->k, .plain = L->kind == LP_LAYER_DENSE, .blk16 = L->bf16_blk16,
                          .bwd_map = {.blk = 16, .swap = L->bf16_bwd_swap, .ob_n = L->out_c / 16, .ib_n = L->in_c / 16,
                                      .khw = L->k * L->k}};
    return true;
}
