#define _GNU_SOURCE /* sincosf */
/* The sequential model: creation, parameters, freezing, per-batch-size
 * plans (primitives built once per shape, buffers shared), forward, loss,
 * backward. */
#include "nn_impl.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

lp_status lp_buf_reserve(lp_buf *b, size_t bytes, bool *grew) {
    if (grew) *grew = false;
    if (bytes <= b->cap) return LP_OK;
    free(b->p);
    b->cap = 0;
    b->p = NULL;
    if (bytes >= ((size_t)4 << 20)) {
        /* Large activation buffers: 2 MiB aligned and backed by transparent huge
         * pages where the kernel allows it (fewer TLB misses in the conv kernels). */
        size_t rounded = (bytes + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
        if (posix_memalign(&b->p, (size_t)2 << 20, rounded) != 0) b->p = NULL;
#ifdef MADV_HUGEPAGE
        if (b->p) madvise(b->p, rounded, MADV_HUGEPAGE);
#endif
        if (!b->p) return lp_fail(LP_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
    } else {
        b->p = lp_aligned_alloc(bytes);
        if (!b->p) return LP_ERR_NOMEM;
    }
    b->cap = bytes;
    if (grew) *grew = true;
    return LP_OK;
}

void lp_buf_free(lp_buf *b) {
    free(b->p);
    b->p = NULL;
    b->cap = 0;
}

/* Weights and gradients: zeroed anonymous memory (untouched pages, e.g. the gradients
 * of frozen layers, cost nothing) on transparent huge pages where the kernel allows:
 * the conv kernels read blocked weights straight from here, and with 4 KiB pages the
 * TLB misses cost more than the weight reorders this saves. */
static float *params_alloc(size_t n) {
    size_t bytes = (n ? n : 1) * sizeof(float);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= ((size_t)2 << 20)) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}
static void params_free(float *p, size_t n) {
    if (p) munmap(p, (n ? n : 1) * sizeof(float));
}

lp_net_config lp_net_default_config(void) {
    lp_net_config c;
    memset(&c, 0, sizeof c);
    strcpy(c.arch, "vgg16");
    strcpy(c.top, "keep");
    c.num_classes = 2;
    c.in_c = 3;
    c.in_h = c.in_w = 224;
    c.max_batch = 8;
    return c;
}

lp_status lp_net_config_from_model_params(const lp_model_params *p, lp_net_config *c) {
    *c = lp_net_default_config();
    if (!p->arch || strlen(p->arch) >= sizeof c->arch) return lp_fail(LP_ERR_ARG, "model: bad architecture name");
    if (!p->top || strlen(p->top) >= sizeof c->top) return lp_fail(LP_ERR_ARG, "model: bad top (use keep or none)");
    if (p->head && strlen(p->head) >= sizeof c->head) return lp_fail(LP_ERR_ARG, "model: head spec too long");
    strcpy(c->arch, p->arch);
    strcpy(c->top, p->top);
    c->head[0] = 0;
    if (p->head) strcpy(c->head, p->head);
    c->num_classes = p->num_classes;
    c->in_c = p->in_channels;
    c->in_h = p->in_height;
    c->in_w = p->in_width;
    c->seed = p->seed;
    c->max_batch = 1;
    return LP_OK;
}

/* torchvision VGG init: kaiming normal (fan_out, relu) for conv weights,
 * N(0, 0.01) for linear weights, zero biases. Counter-based: one stream per
 * parameter, one draw per pair of elements (Box-Muller on the two 24-bit
 * halves of one 64-bit hash), so any thread split gives the same weights. */
/* torchvision's init: conv weights normal with std sqrt(2 / fan_out), linear N(0, 0.01),
 * biases zero; batch norm weight 1, bias 0, running mean 0, running var 1. */
static void init_weights(lp_net *net) {
    for (int i = 0; i < net->nparams; i++) {
        lp_param *p = &net->params[i];
        float *w = net->weights + p->offset;
        const lp_layer *L = &net->layers[p->layer];
        if (L->kind == LP_LAYER_BN) {
            const float v = i == L->pw || i == L->prv ? 1.0f : 0.0f;
            for (size_t j = 0; j < p->numel; j++) w[j] = v;
            continue;
        }
        if (p->ndim <= 1) {
            memset(w, 0, p->numel * sizeof(float));
            continue;
        }
        float std = p->ndim == 4 ? sqrtf(2.0f / (float)(p->shape[0] * p->shape[2] * p->shape[3])) : 0.01f;
        uint64_t stream = 0x1000 + (uint64_t)i, seed = net->cfg.seed;
        const long long n = (long long)p->numel, pairs = (n + 1) / 2;
LP_OMP(parallel for if (pairs > 32768))
        for (long long j = 0; j < pairs; j++) {
            uint64_t u = lp_rng_u64(seed, stream, (uint64_t)j);
            float u1 = ((float)(u >> 40) + 1.0f) * (1.0f / 16777216.0f); /* (0, 1] */
            float u2 = (float)(u & 0xffffff) * (1.0f / 16777216.0f);
            float r = std * sqrtf(-2.0f * logf(u1)), s, c;
            sincosf(6.2831853f * u2, &s, &c);
            w[2 * j] = r * c;
            if (2 * j + 1 < n) w[2 * j + 1] = r * s;
        }
    }
}

lp_status lp_net_create(const lp_net_config *cfg, lp_net **out) { return lp_net_create_ex(cfg, true, out); }

bool lp_net_bf16_native(void) { return lp_bf16_native(); }
bool lp_net_amx(void) { return lp_amx_available(); }
const char *lp_net_winograd_kind(void) {
    return lp_winograd_onednn() ? "F(4x4,3x3)" : lp_winograd_available() ? "F(2x2,3x3)" : "none";
}
bool lp_net_use_bf16(lp_precision p, const char *arch) {
    if (p == LP_PREC_BF16) return lp_bf16_native();
    return p == LP_PREC_AUTO && lp_bf16_native() && !(lp_amx_available() && lp_net_arch_has_bn(arch));
}
bool lp_net_dense_bf16(const lp_net *net, int n) { return net->cfg.bf16 && n > LP_DENSE_SMALL_BATCH; }

/* i with names[i] == name, or -1 */
static int name_index(const char *const *names, int n, const char *name) {
    for (int i = 0; i < n && name; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

bool lp_precision_parse(const char *name, lp_precision *out) {
    static const char *const names[] = {"fp32", "bf16", "auto"};
    int i = name ? name_index(names, 3, name) : LP_PREC_FP32;
    if (i >= 0) *out = (lp_precision)i;
    return i >= 0;
}

static const char *const conv_algo_names[] = {"auto", "direct", "winograd"};

bool lp_conv_algo_parse(const char *name, lp_conv_algo *out) {
    int i = name_index(conv_algo_names, 3, name);
    if (i >= 0) *out = (lp_conv_algo)i;
    return i >= 0;
}

const char *lp_conv_algo_name(lp_conv_algo a) { return (unsigned)a < 3 ? conv_algo_names[a] : "?"; }

static const char *const bn_mode_names[] = {"auto", "train", "frozen"};

bool lp_bn_mode_parse(const char *name, lp_bn_mode_cfg *out) {
    if (!name) return *out = LP_BN_AUTO, true;
    int i = name_index(bn_mode_names, 3, name);
    if (i < 0) return false;
    *out = (lp_bn_mode_cfg)i;
    return true;
}
const char *lp_bn_mode_name(lp_bn_mode_cfg m) { return (unsigned)m < 3 ? bn_mode_names[m] : "?"; }

/* Winograd F(4x4,3x3) needs 2.25x fewer multiplications than direct, but it
 * transforms weights and tiles on every call. Measured here (loupe bench
 * --per-layer, VGG16 fp32, 2 cores), per layer it is 1.6-2x faster than direct
 * from 1024 output pixels per batch (16x16 at batch 8, 224x224 at batch 2), even
 * at 512, and 2-4x slower at 4x4 or on 3-channel input. The batch is the net's
 * max_batch, not the plan's, so that all batch sizes of one net (training,
 * evaluation, a short last batch) compute with the same algorithm. */
bool lp_layer_conv_winograd(const lp_net *net, const lp_layer *l) {
    const lp_net_config *c = &net->cfg;
    if (c->bf16 || l->k != 3 || l->stride != 1 || c->conv_algo == LP_CONV_DIRECT || !lp_winograd_available()) return false;
    if (c->conv_algo == LP_CONV_WINOGRAD) return true;
    const int oh = l->out_h, ow = l->out_w;
    if (!lp_winograd_onednn()) {
        /* Ours, F(2x2,3x3) below AVX-512 (backend's conv_wino_avx2.c): it transforms the
         * weights on every call, which pays once the batch has enough 2x2 output tiles to
         * use them. VGG16's layers at AVX2, 2 cores, forward + both backward passes
         * against oneDNN's direct (AMD EPYC, 2026-12-06): 512->512 1.17x at 16 tiles (2x2
         * batch 16, 4x4 batch 4), 0.83x at 8 (2x2 batch 8, 4x4 batch 2), 1.4-1.75x from
         * 32 tiles at every width; its scratch is bounded (chunks of tiles). */
        const long tiles = (long)c->max_batch * ((oh + 1) / 2) * ((ow + 1) / 2);
        return l->in_c % 8 == 0 && l->out_c % 8 == 0 && tiles >= 16;
    }
    /* oneDNN's F(4x4,3x3) keeps the layer's input and output transformed in scratch, 36
     * values per 4x4 tile and channel (~2.25x their size): past 256 MB that scratch, not
     * the activations, sets the step's peak memory (VGG16 224x224 batch 16: 112x112x128
     * would take ~460 MB), so such layers run direct */
    const double wino_bytes = (double)c->max_batch * ((oh + 3) / 4) * ((ow + 3) / 4) * 36.0 * (l->in_c + l->out_c) * 4.0;
    return l->in_c >= 16 && oh >= 8 && ow >= 8 && (long)c->max_batch * oh * ow >= 1024 && wino_bytes <= 256.0 * 1024 * 1024;
}

/* A layer's output is a fork unless exactly one layer reads it, the next, as its first
 * input: then its gradient is that layer's input gradient, passed on as in a chain. */
static void mark_forks(lp_net *net) {
    for (int j = 0; j < net->nlayers; j++) {
        int readers = 0;
        bool next_only = true;
        for (int l = j + 1; l < net->nlayers; l++) {
            const lp_layer *L = &net->layers[l];
            readers += (L->src == j) + (L->src2 == j);
            if ((L->src == j && l != j + 1) || L->src2 == j) next_only = false;
        }
        net->layers[j].fork = readers > 0 && !(readers == 1 && next_only);
        net->layers[j].last_reader = -1;
        for (int l = j + 1; l < net->nlayers; l++)
            if (net->layers[l].src == j || net->layers[l].src2 == j) net->layers[j].last_reader = l;
    }
}

lp_status lp_net_create_ex(const lp_net_config *cfg, bool init, lp_net **out) {
    *out = NULL;
    lp_net *net = lp_calloc(1, sizeof *net);
    if (!net) return LP_ERR_NOMEM;
    net->cfg = *cfg;
    net->cfg.arch[sizeof net->cfg.arch - 1] = 0;
    net->cfg.top[sizeof net->cfg.top - 1] = 0;
    net->cfg.head[sizeof net->cfg.head - 1] = 0;
    if (net->cfg.max_batch < 1) net->cfg.max_batch = 1;
    lp_status st = lp_net_build_layers(net);
    if (st) goto fail;
    mark_forks(net);
    if (net->cfg.bf16 && !lp_bf16_native()) {
        st = lp_fail(LP_ERR_ARG, "bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); use fp32");
        goto fail;
    }
    if (!lp_dnnl_engine()) {
        st = lp_fail(LP_ERR_BACKEND, "oneDNN: cannot create the CPU engine");
        goto fail;
    }
    if ((st = lp_dnnl_stream_create(&net->stream))) goto fail;
    net->weights = params_alloc(net->nweights);
    net->grads = params_alloc(net->nweights);
    net->act = calloc((size_t)net->nlayers + 3, sizeof *net->act); /* + 2 ping-pong slots for inference */
    if (!net->weights || !net->grads || !net->act) {
        st = lp_fail(LP_ERR_NOMEM, "out of memory for %zu weights", net->nweights);
        goto fail;
    }
    if (init) {
        memset(net->weights, 0, net->nweights * sizeof(float));
        init_weights(net);
    }
    *out = net;
    return LP_OK;
fail:
    lp_net_free(net);
    return st;
}

static void plan_free(lp_net *net, lp_plan *p) {
    if (!p->layers) return;
    for (int l = 0; l < net->nlayers; l++) lp_layer_kinds[net->layers[l].kind].free_plan(&p->layers[l]);
    free(p->layers);
    memset(p, 0, sizeof *p);
}

void lp_net_free(lp_net *net) {
    if (!net) return;
    for (int i = 0; i < LP_MAX_PLANS; i++) plan_free(net, &net->plans[i]);
    for (int l = 0; l < net->nlayers; l++) {
        lp_buf_free(&net->layers[l].aux);
        lp_buf_free(&net->layers[l].wf);
        lp_buf_free(&net->layers[l].wb);
        lp_buf_free(&net->layers[l].relu_bits);
        lp_buf_free(&net->layers[l].sd_mask);
        lp_buf_free(&net->layers[l].sd_dy);
        lp_reorder_free(&net->layers[l].st_to_blk);
        lp_reorder_free(&net->layers[l].st_to_plain);
    }
    if (net->act)
        for (int l = 0; l <= net->nlayers + 2; l++) lp_buf_free(&net->act[l]);
    if (net->grad_sums)
        for (int l = 0; l < net->nlayers; l++) lp_buf_free(&net->grad_sums[l]);
    free(net->grad_sums);
    free(net->act);
    lp_buf_free(&net->diff[0]);
    lp_buf_free(&net->diff[1]);
    lp_buf_free(&net->scratch);
    lp_buf_free(&net->tmp_dw);
    lp_buf_free(&net->tmp_db);
    lp_buf_free(&net->tmp_dx);
    lp_buf_free(&net->store_tmp);
    free(net->dlogits);
    free(net->prof);
    if (net->stream) dnnl_stream_destroy(net->stream);
    free(net->layers);
    free(net->params);
    params_free(net->weights, net->nweights);
    params_free(net->grads, net->nweights);
    free(net);
}

const lp_net_config *lp_net_get_config(const lp_net *net) { return &net->cfg; }

/* ---- parameters ---------------------------------------------------------- */
int lp_net_param_count(const lp_net *net) { return net->nparams; }
const char *lp_net_param_name(const lp_net *net, int i) { return i >= 0 && i < net->nparams ? net->params[i].name : NULL; }
int lp_net_param_shape(const lp_net *net, int i, int64_t shape[4]) {
    if (i < 0 || i >= net->nparams) return 0;
    for (int d = 0; d < net->params[i].ndim; d++) shape[d] = net->params[i].shape[d];
    return net->params[i].ndim;
}
size_t lp_net_param_numel(const lp_net *net, int i) { return i >= 0 && i < net->nparams ? net->params[i].numel : 0; }
/* Weights and gradients leave the net in plain layouts; converting back cannot fail
 * once lp_net_store_blocked has succeeded (buffers and reorders exist). */
static void to_plain(const lp_net *net) { (void)lp_net_store_plain((lp_net *)net); }

float *lp_net_param(lp_net *net, int i) {
    if (i < 0 || i >= net->nparams) return NULL;
    to_plain(net);
    lp_net_invalidate_weights(net, false); /* the caller may write through the pointer */
    return net->weights + net->params[i].offset;
}
const float *lp_net_param_data(const lp_net *net, int i) {
    if (i < 0 || i >= net->nparams) return NULL;
    to_plain(net);
    return net->weights + net->params[i].offset;
}
void lp_net_materialize_grad(lp_net *net, int i) {
    lp_param *p = &net->params[i];
    if (p->grad_state == LP_GRAD_STALE) {
        memset(net->grads + p->offset, 0, p->numel * sizeof(float));
        p->grad_state = LP_GRAD_ZERO;
    }
}
float *lp_net_grad(lp_net *net, int i) {
    if (i < 0 || i >= net->nparams) return NULL;
    to_plain(net);
    lp_net_materialize_grad(net, i);
    return net->grads + net->params[i].offset;
}
int lp_net_param_conv_stride(const lp_net *net, int i) {
    if (i < 0 || i >= net->nparams) return 0;
    const lp_layer *L = &net->layers[net->params[i].layer];
    return L->kind == LP_LAYER_CONV ? L->stride : 0;
}
bool lp_net_param_trainable(const lp_net *net, int i) { return i >= 0 && i < net->nparams && net->params[i].trainable; }
bool lp_net_param_is_buffer(const lp_net *net, int i) { return i >= 0 && i < net->nparams && net->params[i].buffer; }
bool lp_net_param_is_count(const lp_net *net, int i) { return i >= 0 && i < net->nparams && net->params[i].int64; }

int lp_net_bn_batch_stats_layers(const lp_net *net, int *bn_layers) {
    int on = 0, all = 0;
    for (int l = 0; l < net->nlayers; l++)
        if (net->layers[l].kind == LP_LAYER_BN) all++, on += lp_layer_bn_train(net, &net->layers[l]);
    if (bn_layers) *bn_layers = all;
    return on;
}
size_t lp_net_num_weights(const lp_net *net) { return net->nweights; }
float *lp_net_grads(lp_net *net) {
    to_plain(net);
    for (int i = 0; i < net->nparams; i++) lp_net_materialize_grad(net, i);
    return net->grads;
}

void lp_net_invalidate_weights(lp_net *net, bool trainable_only) {
    for (int l = 0; l < net->nlayers; l++) {
        lp_layer *L = &net->layers[l];
        if (L->pw < 0) continue;
        if (trainable_only && !net->params[L->pw].trainable && !(L->pb >= 0 && net->params[L->pb].trainable)) continue;
        L->wf_valid = L->wb_valid = false;
    }
}

/* "features.1" matches "features.1.weight" but not "features.10.weight". */
static bool prefix_match(const char *name, const char *spec) {
    size_t n = strlen(spec);
    if (n == 0 || strncmp(name, spec, n)) return false;
    return spec[n - 1] == '.' || name[n] == '.' || name[n] == 0;
}

/* "base": every layer that comes from the pretrained model (features, and
 * for top=keep classifier.0/3), i.e. all but the head or the new output layer. */
static bool is_base_param(const lp_net *net, const lp_param *p) {
    if (p->layer < net->backbone_layers) return true;
    return !strcmp(net->cfg.top, "keep") && p->layer != net->nlayers - 1;
}

lp_status lp_net_freeze(lp_net *net, const char *spec) {
    if (!spec) return lp_fail(LP_ERR_ARG, "freeze: no spec");
    lp_status st = lp_net_store_plain(net); /* frozen layers keep plain weights */
    if (st) return st;
    if (!strcmp(spec, "none")) {
        for (int i = 0; i < net->nparams; i++) net->params[i].trainable = !net->params[i].buffer;
        return LP_OK;
    }
    int hits = 0;
    for (int i = 0; i < net->nparams; i++) {
        lp_param *p = &net->params[i];
        bool hit = !strcmp(spec, "base") ? is_base_param(net, p) : prefix_match(p->name, spec);
        if (hit && p->buffer) continue; /* never trained: nothing to freeze */
        if (hit) {
            p->trainable = false;
            hits++;
        }
    }
    if (!hits && strcmp(spec, "base"))
        return lp_fail(LP_ERR_ARG, "freeze: no parameter matches '%s' (use base, none, or a prefix like features. or features.0)",
                       spec);
    return LP_OK;
}

/* ---- plans ------------------------------------------------------------------ */
lp_status lp_net_reserve_scratch(lp_net *net, size_t bytes) { return lp_buf_reserve(&net->scratch, bytes, NULL); }

/* Training plans keep every layer's output (slot l+1) for backward, but a residual add's,
 * which goes over its branch's batch norm output where nothing else reads that
 * (add_in_place); inference plans alternate between two slots (L+1, L+2), so memory stays
 * at two activations whatever the depth. */

/* Whether the add l can write its output over its first input (the branch), as PyTorch's
 * ResNet does (`out += identity`): that input is a batch norm's output that only the add
 * reads, and batch norm's backward reads its input, statistics and ReLU workspace, not its
 * output (ReLU6's and SiLU's backwards, which do, excluded). Saves one activation per block: resnet50
 * at 224x224 batch 16, 353 MB in fp32. */
static bool add_in_place(const lp_net *net, const lp_plan *p, int l) {
    const lp_layer *L = &net->layers[l];
    if (L->kind != LP_LAYER_ADD || L->src < 0) return false;
    const lp_layer *B = &net->layers[L->src];
    const lp_plan_layer *pb = &p->layers[L->src];
    return B->kind == LP_LAYER_BN && !B->relu6 && !B->silu && !B->fork && !pb->alias && pb->out_slot == L->src + 1 &&
           lp_md_equal(&pb->out_md, &p->layers[l].out_md);
}

static lp_status plan_build(lp_net *net, lp_plan *p, int n, bool training) {
    p->n = n;
    p->training = training;
    p->layers = lp_calloc((size_t)net->nlayers, sizeof *p->layers);
    if (!p->layers) return LP_ERR_NOMEM;
    const lp_net_config *c = &net->cfg;
    int64_t in_dims[4] = {n, c->in_c, c->in_h, c->in_w};
    const lp_md input_md = lp_md_plain(4, in_dims);
    lp_status st = lp_buf_reserve(&net->act[0], lp_md_size(&input_md), NULL);
    if (st) return st;
    for (int l = 0; l < net->nlayers; l++) {
        lp_plan_layer *pl = &p->layers[l];
        const lp_layer *L = &net->layers[l];
        pl->in_md = L->src < 0 ? input_md : p->layers[L->src].out_md;
        pl->in_slot = L->src < 0 ? 0 : p->layers[L->src].out_slot;
        pl->in2_slot = L->src2 < 0 ? -1 : p->layers[L->src2].out_slot;
        if (L->src2 >= 0) pl->in2_md = p->layers[L->src2].out_md;
        if ((st = lp_layer_kinds[L->kind].plan(net, &net->layers[l], pl, n))) {
            /* free what was built for layers [0, l] */
            for (int k = 0; k <= l; k++) lp_layer_kinds[net->layers[k].kind].free_plan(&p->layers[k]);
            free(p->layers);
            p->layers = NULL;
            return lp_fail_context(st, "layer %s (batch %d)", net->layers[l].name[0] ? net->layers[l].name : "reorder", n);
        }
        if (pl->alias && pl->in_slot != 0) {
            pl->out_slot = pl->in_slot;
        } else if (training && add_in_place(net, p, l)) {
            pl->out_slot = pl->in_slot;
        } else {
            /* inference: a fork's output stays in its own slot until its last reader;
             * every other output is read by the next layer only, and ping-pongs */
            const int N = net->nlayers, pp = pl->in_slot == N + 1 || pl->in2_slot == N + 1 ? N + 2 : N + 1;
            pl->alias = false;
            pl->out_slot = training || L->fork ? l + 1 : pp;
            if ((st = lp_buf_reserve(&net->act[pl->out_slot], lp_md_size(&pl->out_md), NULL))) return st;
        }
    }
    /* A max pool on our kernel right after a conv with ReLU applies that ReLU's
     * backward itself (one pass over the conv's output less) */
    for (int l = 1; l < net->nlayers; l++)
        if (net->layers[l].kind == LP_LAYER_MAXPOOL && p->layers[l].u.pool.own && net->layers[l - 1].kind == LP_LAYER_CONV &&
            net->layers[l - 1].relu && net->layers[l].src == l - 1 && !net->layers[l - 1].fork) {
            p->layers[l].u.pool.relu_backward = true;
            p->layers[l - 1].u.conv.dy_masked = true;
        }
    return LP_OK; /* the diff buffers are sized by backward (backward_targets) */
}

static lp_status get_plan(lp_net *net, int n, bool training, lp_plan **out) {
    lp_plan *free_slot = NULL, *lru = NULL;
    for (int i = 0; i < LP_MAX_PLANS; i++) {
        lp_plan *p = &net->plans[i];
        if (p->layers && p->n == n && p->training == training) {
            p->last_use = ++net->use_counter;
            *out = p;
            return LP_OK;
        }
        if (!p->layers && !free_slot) free_slot = p;
        if (p->layers && (!lru || p->last_use < lru->last_use)) lru = p;
    }
    lp_plan *p = free_slot ? free_slot : lru;
    if (p == net->cur) net->cur = NULL;
    plan_free(net, p);
    lp_status st = plan_build(net, p, n, training);
    if (st) {
        plan_free(net, p);
        return st;
    }
    p->last_use = ++net->use_counter;
    *out = p;
    return LP_OK;
}

static float *slot_ptr(lp_net *net, int slot) { return net->act[slot].p; }

/* ---- forward / loss / backward ------------------------------------------------ */
/* One layer's forward; with profiling on, waits for it and adds its time. */
static lp_status forward_layer(lp_net *net, lp_plan *p, int l, int n, bool training, uint64_t seed) {
    lp_plan_layer *pl = &p->layers[l];
    lp_layer *L = &net->layers[l];
    double t0 = net->prof ? lp_now() : 0;
    lp_status st = lp_layer_kinds[L->kind].forward(net, L, pl, n, slot_ptr(net, pl->in_slot), slot_ptr(net, pl->out_slot),
                                                   training, seed, (uint64_t)l);
    if (st) return lp_fail_context(st, "forward %s", L->name[0] ? L->name : "reorder");
    if (net->prof) {
        dnnl_stream_wait(net->stream);
        net->prof[2 * l] += lp_now() - t0;
    }
    return LP_OK;
}

/* Start of every forward pass: the last pass is forgotten, the plan for (n, training) found. */
static lp_status forward_begin(lp_net *net, int n, bool training, lp_plan **p) {
    net->loss_ready = false;
    net->acts_consumed = false;
    net->cur = NULL;
    return get_plan(net, n, training, p);
}

/* Layers [from, to) of plan p, then waits for them. seed: the dropout masks' seed. */
static lp_status forward_layers(lp_net *net, lp_plan *p, int from, int to, int n, bool training, uint64_t seed) {
    for (int l = from; l < to; l++) {
        lp_status st = forward_layer(net, p, l, n, training, seed);
        if (st) return st;
    }
    dnnl_stream_wait(net->stream);
    return LP_OK;
}

static void copy_input(lp_net *net, const float *x, int n) {
    const lp_net_config *c = &net->cfg;
    memcpy(net->act[0].p, x, sizeof(float) * (size_t)n * c->in_c * c->in_h * c->in_w);
}

static uint64_t dropout_stream_seed(const lp_net *net, uint64_t dropout_seed) {
    return lp_rng_u64(dropout_seed, net->cfg.seed, 0xd80);
}

/* End of a pass through the last layer: logits out (optional), the pass kept for loss and backward. */
static void forward_end(lp_net *net, lp_plan *p, int n, bool training, float *logits) {
    const float *z = slot_ptr(net, p->layers[net->nlayers - 1].out_slot);
    if (logits) memcpy(logits, z, sizeof(float) * (size_t)n * net->cfg.num_classes);
    net->cur = p;
    net->last_n = n;
    net->last_training = training;
}

lp_status lp_net_forward(lp_net *net, const float *x, int n, bool training, uint64_t dropout_seed, float *logits) {
    if (n < 1) return lp_fail(LP_ERR_ARG, "forward: batch size %d", n);
    lp_plan *p;
    lp_status st = forward_begin(net, n, training, &p);
    if (st) return st;
    copy_input(net, x, n);
    if ((st = forward_layers(net, p, 0, net->nlayers, n, training, dropout_stream_seed(net, dropout_seed)))) return st;
    forward_end(net, p, n, training, logits);
    return LP_OK;
}

/* ---- frozen-prefix feature cache -------------------------------------------------- */
/* Floats per sample of layer l's output. */
static size_t out_per_sample(const lp_net *net, int l) {
    const lp_layer *L = &net->layers[l];
    return (size_t)L->out_c * L->out_h * L->out_w;
}

/* Whether layers [k, L) read nothing of layers [0, k) but layer k - 1's output: then
 * that output alone stands for the prefix (the feature cache). */
static bool cut_is_clean(const lp_net *net, int k) {
    for (int m = k; m < net->nlayers; m++) {
        const lp_layer *M = &net->layers[m];
        if (M->src < k - 1 || (M->src2 >= 0 && M->src2 < k - 1)) return false;
    }
    return true;
}

int lp_net_frozen_prefix(const lp_net *net, size_t *feat_per_sample, const char **name) {
    int best = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const lp_layer *L = &net->layers[l];
        if (L->kind == LP_LAYER_DROPOUT) break;
        if (L->kind == LP_LAYER_BN && lp_layer_bn_train(net, L)) break; /* the batch's statistics: not a function of the image */
        if (L->kind == LP_LAYER_ADD && L->p > 0.0f && lp_layer_sd_active(net, L)) break; /* random per step */
        if ((L->pw >= 0 && net->params[L->pw].trainable) || (L->pb >= 0 && net->params[L->pb].trainable)) break;
        if ((L->kind == LP_LAYER_TOPLAIN || L->kind == LP_LAYER_APOOL || L->kind == LP_LAYER_FLATTEN ||
             L->kind == LP_LAYER_DENSE || L->kind == LP_LAYER_GAP) &&
            cut_is_clean(net, l + 1))
            best = l + 1;
    }
    if (best == net->nlayers) best = 0; /* nothing left to train */
    if (best > 0) {
        if (feat_per_sample) *feat_per_sample = out_per_sample(net, best - 1);
        if (name) {
            *name = "input";
            for (int l = best - 1; l >= 0; l--)
                if (net->layers[l].name[0] && net->layers[l].kind != LP_LAYER_FLATTEN) {
                    *name = net->layers[l].name;
                    break;
                }
        }
    }
    return best;
}

static int prefix_out_slot(const lp_plan *p, int k) { return p->layers[k - 1].out_slot; }

lp_status lp_net_forward_prefix(lp_net *net, const float *x, int n, int k, float *feat) {
    if (n < 1) return lp_fail(LP_ERR_ARG, "forward: batch size %d", n);
    int kk = lp_net_frozen_prefix(net, NULL, NULL);
    if (k < 1 || k > kk) return lp_fail(LP_ERR_ARG, "forward_prefix: %d is not a frozen prefix (max %d)", k, kk);
    lp_plan *p;
    lp_status st = forward_begin(net, n, false, &p);
    if (st) return st;
    copy_input(net, x, n);
    if ((st = forward_layers(net, p, 0, k, n, false, 0))) return st;
    memcpy(feat, slot_ptr(net, prefix_out_slot(p, k)), sizeof(float) * (size_t)n * out_per_sample(net, k - 1));
    return LP_OK;
}

lp_status lp_net_forward_from(lp_net *net, int k, const float *feat, int n, bool training, uint64_t dropout_seed,
                              float *logits) {
    if (n < 1) return lp_fail(LP_ERR_ARG, "forward: batch size %d", n);
    int kk = lp_net_frozen_prefix(net, NULL, NULL);
    if (k < 1 || k > kk) return lp_fail(LP_ERR_ARG, "forward_from: %d is not a frozen prefix (max %d)", k, kk);
    lp_plan *p;
    lp_status st = forward_begin(net, n, training, &p);
    if (st) return st;
    memcpy(slot_ptr(net, prefix_out_slot(p, k)), feat, sizeof(float) * (size_t)n * out_per_sample(net, k - 1));
    if ((st = forward_layers(net, p, k, net->nlayers, n, training, dropout_stream_seed(net, dropout_seed)))) return st;
    forward_end(net, p, n, training, logits);
    return LP_OK;
}

void lp_net_set_sample_offset(lp_net *net, int offset) { net->sample_offset = offset; }

void lp_net_scale_loss_grad(lp_net *net, float factor) {
    if (!net->loss_ready) return;
    const size_t n = (size_t)net->last_n * net->cfg.num_classes;
    for (size_t i = 0; i < n; i++) net->dlogits[i] *= factor;
}

void lp_net_set_backward_hook(lp_net *net, lp_status (*fn)(void *ctx, int layer), void *ctx) {
    net->bwd_hook = fn;
    net->bwd_hook_ctx = ctx;
}

int lp_net_grad_run_list(lp_net *net, size_t max_floats, lp_grad_run *runs, int cap) {
    int count = 0;
    for (int i = net->nparams - 1; i >= 0;) {
        if (!net->params[i].trainable) {
            i--;
            continue;
        }
        int j = i;
        while (j > 0 && net->params[j - 1].trainable) j--;
        const size_t lo = net->params[j].offset, hi = net->params[i].offset + net->params[i].numel;
        for (size_t e = hi; e > lo; count++) {
            const size_t s = e - lo > max_floats ? e - max_floats : lo;
            /* the lowest parameter with elements in [s, e) */
            int q = i;
            while (q > j && net->params[q].offset > s) q--;
            if (count < cap) runs[count] = (lp_grad_run){net->grads + s, e - s, net->params[q].layer};
            e = s;
        }
        i = j - 1;
    }
    return count;
}

void lp_net_grads_as_data(lp_net *net) {
    for (int i = 0; i < net->nparams; i++)
        if (net->params[i].trainable) {
            lp_net_materialize_grad(net, i);
            net->params[i].grad_state = LP_GRAD_DATA;
        }
}

lp_status lp_net_loss(lp_net *net, const int *labels, int n, float *loss_per_sample, float *probs, float *mean_loss) {
    if (!net->cur || n != net->last_n)
        return lp_fail(LP_ERR_ARG, "loss: needs a forward pass of the same batch size first (got %d, last forward %d)", n,
                       net->cur ? net->last_n : 0);
    int k = net->cfg.num_classes;
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k) return lp_fail(LP_ERR_ARG, "loss: label %d of sample %d not in [0, %d)", labels[i], i, k);
    if (net->dlogits_cap < n) {
        float *d = realloc(net->dlogits, sizeof(float) * (size_t)n * k);
        if (!d) return lp_fail(LP_ERR_NOMEM, "out of memory");
        net->dlogits = d;
        net->dlogits_cap = n;
    }
    const float *z = slot_ptr(net, net->cur->layers[net->nlayers - 1].out_slot);
    double m = lp_softmax_xent(z, labels, n, k, loss_per_sample, probs, net->dlogits);
    if (mean_loss) *mean_loss = (float)m;
    net->loss_ready = true;
    if (!isfinite(m)) return lp_fail(LP_ERR_NUMERIC, "loss is %g (diverged: lower the learning rate)", m);
    return LP_OK;
}

/* Lazy: the next backward overwrites instead of accumulating, and any
 * pointer handed out (lp_net_grad/lp_net_grads) is cleared first. */
void lp_net_zero_grad(lp_net *net) {
    for (int i = 0; i < net->nparams; i++)
        if (net->params[i].grad_state == LP_GRAD_DATA) net->params[i].grad_state = LP_GRAD_STALE;
}

bool lp_layer_bn_train(const lp_net *net, const lp_layer *L) {
    if (net->cfg.bn == LP_BN_MODE_TRAIN) return true;
    if (net->cfg.bn == LP_BN_MODE_FROZEN) return false;
    return net->params[L->pw].trainable;
}

static bool layer_trainable(const lp_net *net, const lp_layer *L) {
    return (L->pw >= 0 && net->params[L->pw].trainable) || (L->pb >= 0 && net->params[L->pb].trainable);
}

/* The branch's last layer (the add's first input, a batch norm) stands for the block: a
 * block is frozen whole or not at all by --freeze's prefixes */
bool lp_layer_sd_active(const lp_net *net, const lp_layer *L) {
    return net->cfg.bn == LP_BN_MODE_TRAIN || (L->src >= 0 && layer_trainable(net, &net->layers[L->src]));
}

/* Whether layer l's input gradient can overwrite its own output activation.
 * A conv layer reads its output y only to mask dy with ReLU', before anything
 * else, and no other layer reads that slot once backward has reached l. */
/* Layers whose input gradient is written over their output gradient: views, adds (both
 * inputs get dy, the ReLU's mask applied to it in place; with stochastic depth the skip
 * gets an unscaled copy), batch norms, activations and channel scales (the gate's gradient
 * goes to a buffer of the layer's, lp_layer_dx2). */
static bool dx_is_dy(const lp_net *net, const lp_plan_layer *pl, int l) {
    const lp_layer_kind k = net->layers[l].kind;
    return pl->alias || k == LP_LAYER_ADD || k == LP_LAYER_BN || k == LP_LAYER_ACT || k == LP_LAYER_SCALE;
}

static bool dx_in_own_output(const lp_net *net, const lp_plan_layer *pl, int l) {
    return net->layers[l].kind == LP_LAYER_CONV && !pl->alias && pl->out_slot != 0 &&
           lp_md_size(&pl->in_md) <= net->act[pl->out_slot].cap;
}

/* Where layer l's input gradient goes, given d, the diff buffer holding its dy
 * (-1: dy is in an activation slot); returns the new d. A view's dx is its dy (d
 * unchanged); a conv layer's goes into its own output slot where
 * dx_in_own_output (-1); any other into the diff buffer not holding dy. */
static int dx_place(const lp_net *net, const lp_plan_layer *pl, int l, int d) {
    if (dx_is_dy(net, pl, l)) return d;
    if (dx_in_own_output(net, pl, l)) return -1;
    return d == 0 ? 1 : 0;
}

#define DY_IN_SUM (-2) /* d: dy is a fork's summed gradient (its grad_sum) */

/* The lowest layer that reads fork k's summed gradient: k reads it as dy, and layers whose
 * input gradient is their dy (dx_is_dy) pass the buffer on down the chain, to the next fork. */
static int fork_grad_end(const lp_net *net, const lp_plan *p, int k, int lo) {
    int l = k;
    while (l > lo && dx_is_dy(net, &p->layers[l], l) && !net->layers[l - 1].fork) l--;
    return l;
}

/* For each activation slot, the lowest layer whose backward touches it (reads its input,
 * second input or output there, or finds its dy there or writes its dx there), INT_MAX
 * when none: below that layer the slot holds nothing backward needs. dy's place follows
 * dx_place: a conv's dx in its own output slot is the next layer's dy, passed on by the
 * layers whose dx is their dy, until a fork (whose dy is its summed gradient). */
static void slot_lowest_use(const lp_net *net, const lp_plan *p, int lo, int *last_use, int nslots) {
    for (int s = 0; s < nslots; s++) last_use[s] = INT_MAX;
    int dy_slot = -1; /* the slot holding dy; -1: a diff buffer or a summed gradient */
    for (int l = net->nlayers - 1; l >= lo; l--) {
        const lp_plan_layer *pl = &p->layers[l];
        if (net->layers[l].fork) dy_slot = -1;
        last_use[pl->in_slot] = last_use[pl->out_slot] = l;
        if (pl->in2_slot >= 0) last_use[pl->in2_slot] = l;
        if (dy_slot >= 0) last_use[dy_slot] = l;
        if (dx_is_dy(net, pl, l)) continue;
        dy_slot = dx_in_own_output(net, pl, l) ? pl->out_slot : -1;
    }
}

/* Sizes the two diff buffers for a backward down to layer lo+1 placed by dx_place
 * (dlogits start in diff[0]), and the summed gradients of the forks from lo up. In VGG
 * only pooling and the dense layers then need a diff buffer, which saves one
 * activation-sized buffer (205 MB at 224x224 batch 16). */
static lp_status backward_targets(lp_net *net, int lo) {
    lp_plan *p = net->cur;
    size_t need[2] = {sizeof(float) * (size_t)net->last_n * net->cfg.num_classes, 0};
    int d = 0;
    lp_status st = LP_OK;
    for (int l = net->nlayers - 1; l > lo; l--) {
        const lp_plan_layer *pl = &p->layers[l];
        if (net->layers[l].fork) d = DY_IN_SUM;
        d = dx_place(net, pl, l, d);
        if (!dx_is_dy(net, pl, l) && d >= 0 && lp_md_size(&pl->in_md) > need[d]) need[d] = lp_md_size(&pl->in_md);
    }
    if (!net->grad_sums && !(net->grad_sums = lp_calloc((size_t)net->nlayers, sizeof *net->grad_sums))) return LP_ERR_NOMEM;
    /* A fork's summed gradient is live from its last reader's backward down to the last
     * layer its gradient flows through in place (fork_grad_end). It goes into an activation
     * slot that backward no longer touches by then (its layers are behind: the slot's
     * activation and any gradient it carried are dead), else into a buffer of its own,
     * which forks share where their gradients are never live at once (interval colouring in
     * the order backward meets them). resnet50 at 224x224 batch 16: 17 summed gradients of
     * up to 51 MB each, in 3 buffers, and some of those in dead slots. */
    const int nslots = net->nlayers + 3;
    int *occupant = lp_calloc((size_t)net->nlayers, sizeof(int)), *buf_of = lp_calloc((size_t)net->nlayers, sizeof(int)), nbuf = 0;
    int *last_use = lp_calloc((size_t)nslots, sizeof(int)), *slot_busy = lp_calloc((size_t)nslots, sizeof(int));
    size_t *size = lp_calloc((size_t)net->nlayers, sizeof(size_t));
    if (!occupant || !buf_of || !size || !last_use || !slot_busy) st = LP_ERR_NOMEM;
    slot_lowest_use(net, p, lo, last_use, nslots);
    for (int s = 0; s < nslots && !st; s++) slot_busy[s] = INT_MAX;
    for (int r = net->nlayers - 1; r > lo && !st; r--)
        for (int j = r - 1; j >= lo; j--) {
            lp_layer *J = &net->layers[j];
            if (!J->fork || J->last_reader != r) continue;
            const size_t bytes = lp_md_size(&p->layers[j].out_md);
            const int end = fork_grad_end(net, p, j, lo);
            J->grad_sum_set = false;
            int s = lo + 1; /* the slots of layers from lo up (a frozen prefix's are the feature cache's business) */
            while (s < net->nlayers + 1 && !(last_use[s] > r && slot_busy[s] > r && net->act[s].cap >= bytes)) s++;
            if (s < net->nlayers + 1) {
                slot_busy[s] = end;
                buf_of[j] = -1 - s;
                continue;
            }
            int b = 0;
            while (b < nbuf && occupant[b] <= r) b++; /* a buffer is free once its last reader is behind */
            if (b == nbuf) size[nbuf++] = 0;
            occupant[b] = end;
            buf_of[j] = b;
            if (bytes > size[b]) size[b] = bytes;
        }
    for (int b = 0; b < nbuf && !st; b++) st = lp_buf_reserve(&net->grad_sums[b], size[b], NULL);
    for (int j = lo; j < net->nlayers && !st; j++)
        if (net->layers[j].fork) net->layers[j].grad_sum = buf_of[j] < 0 ? net->act[-1 - buf_of[j]].p : net->grad_sums[buf_of[j]].p;
    free(occupant);
    free(buf_of);
    free(size);
    free(last_use);
    free(slot_busy);
    if (!st) st = lp_buf_reserve(&net->diff[0], need[0], NULL);
    if (!st) st = lp_buf_reserve(&net->diff[1], need[1] ? need[1] : 64, NULL);
    return st;
}

/* Layer j's output gradient gets dx (md: its size and data type) from one of its readers:
 * the first reader's is copied into j's grad_sum, the others' added, in the order backward
 * meets them (from the top: the same order every step). Only forks from lo up. bf16
 * gradients (bf16 nets) are added in fp32 and rounded to bf16, as PyTorch's autograd sums
 * bf16 gradients. */
static void sum_into_fork(lp_net *net, int j, int lo, const void *dx, const lp_md *md) {
    if (j < lo || !net->layers[j].fork) return;
    lp_layer *J = &net->layers[j];
    const size_t bytes = lp_md_size(md);
    dnnl_stream_wait(net->stream);
    if (!J->grad_sum_set) memcpy(J->grad_sum, dx, bytes);
    else if (md->data_type == dnnl_bf16) lp_bf16_add((uint16_t *)J->grad_sum, dx, bytes / 2);
    else {
        float *g = J->grad_sum;
        const float *d = dx;
        const size_t n = bytes / sizeof(float);
LP_OMP(parallel for if (n > 65536))
        for (size_t i = 0; i < n; i++) g[i] += d[i];
    }
    J->grad_sum_set = true;
}

lp_status lp_net_backward(lp_net *net) {
    if (!net->cur || !net->loss_ready)
        return lp_fail(LP_ERR_ARG, "backward: needs lp_net_forward then lp_net_loss first");
    if (net->acts_consumed)
        return lp_fail(LP_ERR_ARG, "backward: the last forward's activations were used by a backward already "
                                   "(they hold its gradients now): run lp_net_forward again");
    if (!net->last_training) return lp_fail(LP_ERR_ARG, "backward: the last forward was not in training mode");
    int lo = -1;
    for (int l = 0; l < net->nlayers && lo < 0; l++)
        if (layer_trainable(net, &net->layers[l])) lo = l;
    if (lo < 0) return LP_OK; /* everything frozen */
    lp_plan *p = net->cur;
    int n = net->last_n;
    lp_status st;
    for (int l = lo; l < net->nlayers; l++) {
        lp_layer *L = &net->layers[l];
        if ((st = lp_layer_kinds[L->kind].prepare_backward(net, L, &p->layers[l], l > lo, layer_trainable(net, L))))
            return lp_fail_context(st, "backward %s", L->name[0] ? L->name : "reorder");
    }
    if ((st = backward_targets(net, lo))) return st;
    net->acts_consumed = true;
    float *dbuf[2] = {net->diff[0].p, net->diff[1].p}, *dy = dbuf[0];
    int d = 0; /* the diff buffer holding dy (dx_place) */
    memcpy(dbuf[0], net->dlogits, sizeof(float) * (size_t)n * net->cfg.num_classes);
    for (int l = net->nlayers - 1; l >= lo; l--) {
        lp_layer *L = &net->layers[l];
        lp_plan_layer *pl = &p->layers[l];
        bool w = layer_trainable(net, L), acc = false;
        if (L->fork) {
            if (!L->grad_sum_set) return lp_fail(LP_ERR_BACKEND, "internal: backward reached %s before its readers", L->name);
            dy = L->grad_sum, d = DY_IN_SUM;
        }
        if (w) {
            /* overwrite when both gradients are logically zero, else accumulate onto real zeros/data */
            bool zw = net->params[L->pw].grad_state != LP_GRAD_DATA,
                 zb = L->pb < 0 || net->params[L->pb].grad_state != LP_GRAD_DATA;
            acc = !(zw && zb);
            if (acc) {
                lp_net_materialize_grad(net, L->pw);
                if (L->pb >= 0) lp_net_materialize_grad(net, L->pb);
            }
        }
        float *dx = NULL;
        if (l > lo) {
            d = dx_place(net, pl, l, d);
            dx = dx_is_dy(net, pl, l) ? dy : d < 0 ? slot_ptr(net, pl->out_slot) : dbuf[d];
        }
        double t0 = net->prof ? lp_now() : 0;
        /* where the input is a fork, some layers put their dx straight into its summed
         * gradient (lp_layer_dx_into_sum) */
        lp_layer *S = L->src >= lo ? &net->layers[L->src] : NULL;
        const bool added = dx && !w && S && S->fork &&
                           lp_layer_dx_into_sum(net, L, pl, slot_ptr(net, pl->in_slot), dy, S->grad_sum, S->grad_sum_set);
        if (added) S->grad_sum_set = true;
        st = added ? LP_OK
                   : lp_layer_kinds[L->kind].backward(net, L, pl, n, slot_ptr(net, pl->in_slot), slot_ptr(net, pl->out_slot),
                                                      dy, dx, w, acc);
        if (st) return lp_fail_context(st, "backward %s", L->name[0] ? L->name : "reorder");
        if (net->prof) {
            dnnl_stream_wait(net->stream);
            net->prof[2 * l + 1] += lp_now() - t0;
        }
        if (w) {
            net->params[L->pw].grad_state = L->grad_consumed ? LP_GRAD_STALE : LP_GRAD_DATA;
            if (L->pb >= 0) net->params[L->pb].grad_state = LP_GRAD_DATA;
            L->grad_consumed = false;
        }
        if (net->bwd_hook) {
            dnnl_stream_wait(net->stream);
            if ((st = net->bwd_hook(net->bwd_hook_ctx, l))) return st;
        }
        if (dx) {
            if (!added) sum_into_fork(net, L->src, lo, dx, &pl->in_md);
            const float *dx2;
            if (L->src2 >= lo) {
                if ((st = lp_layer_dx2(net, L, pl, dx, &dx2))) return lp_fail_context(st, "backward %s", L->name);
                sum_into_fork(net, L->src2, lo, dx2, &pl->in2_md);
            }
        }
        dy = dx;
    }
    dnnl_stream_wait(net->stream);
    return LP_OK;
}

/* Conv layers with Winograd: by the rule (planned), or as the last forward's
 * primitives got it (none before a forward). */
static int count_winograd(const lp_net *net, bool planned, int *conv_layers) {
    int wino = 0, convs = 0;
    for (int l = 0; l < net->nlayers; l++) {
        if (net->layers[l].kind != LP_LAYER_CONV) continue;
        convs++;
        wino += planned ? lp_layer_conv_winograd(net, &net->layers[l])
                        : net->cur && net->cur->layers[l].u.conv.op.alg == dnnl_convolution_winograd;
    }
    if (conv_layers) *conv_layers = convs;
    return wino;
}
int lp_net_winograd_planned(const lp_net *net, int *conv_layers) { return count_winograd(net, true, conv_layers); }
int lp_net_winograd_layers(const lp_net *net, int *conv_layers) { return count_winograd(net, false, conv_layers); }

bool lp_net_grads_finite(const lp_net *net) {
    for (int i = 0; i < net->nparams; i++) {
        const lp_param *p = &net->params[i];
        if (!p->trainable || p->grad_state != LP_GRAD_DATA) continue; /* others are logically zero */
        const float *g = net->grads + p->offset;
        uint32_t bad = 0;
        for (size_t j = 0; j < p->numel; j++) bad |= lp_f32_nonfinite(g[j]);
        if (bad) return false;
    }
    return true;
}

const float *lp_net_dropout_mask(lp_net *net, const char *layer_name, size_t *count) {
    if (!net->cur || !net->last_training) return NULL;
    for (int l = 0; l < net->nlayers; l++) {
        lp_layer *L = &net->layers[l];
        if (L->kind == LP_LAYER_DROPOUT && !strcmp(L->name, layer_name)) {
            if (count) *count = (size_t)net->last_n * L->in_c * L->in_h * L->in_w;
            return L->aux.p;
        }
        if (L->kind == LP_LAYER_ADD && L->p > 0.0f && !strcmp(L->name, layer_name)) { /* stochastic depth: one per sample */
            if (count) *count = (size_t)net->last_n;
            return L->sd_mask.p;
        }
    }
    return NULL;
}
