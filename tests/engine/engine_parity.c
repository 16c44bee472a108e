/* Test driver for the PyTorch parity script (parity.py). Modes:
 *   init OUT.safetensors ARCH TOP HEAD CLASSES C H W SEED
 *       builds a net with loupe's own init and saves it as a checkpoint;
 *   run CKPT INPUTS.safetensors OUT.safetensors OPT LR STEPS [FREEZE]
 *       loads CKPT strictly, reads x (F32 n,C,H,W) and labels (I64 n) from
 *       INPUTS, and writes: eval_logits; logits, loss, loss_per_sample, probs
 *       and grad.<param> (trainable ones) of the first training step;
 *       mask.<step>.<layer> for each dropout layer and step; final.<param>
 *       (trainable ones; frozen ones must stay bit-identical) after STEPS steps
 *       (OPT sgd = momentum 0.9, adam, adamw); seed of step s is s.
 * Exit 1 with the library's message on any error. */
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "nn/nn.h"
#include "nn/optim.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                    \
    do {                                                            \
        lp_status st_ = (x);                                        \
        if (st_) {                                                  \
            fprintf(stderr, "engine_parity: %s: %s\n", #x, lp_errmsg()); \
            exit(1);                                                \
        }                                                           \
    } while (0)

static void add_copy(lp_tensor_list *l, const char *name, const float *src, int ndim, const int64_t *shape) {
    lp_tensor t;
    CHECK(lp_tensor_alloc(&t, LP_F32, ndim, shape));
    memcpy(t.data, src, lp_tensor_nbytes(&t));
    CHECK(lp_tensor_list_add(l, name, &t));
}

/* sgd: momentum 0.9; nesterov: + weight decay 1e-4; sgd_plain: no momentum, wd 1e-3; adam; adam_eps6:
 * eps 1e-6; adam_wd: Adam + wd 1e-2; adamw (wd 0.01). */
static lp_optim_config opt_config(const char *name) {
    lp_optim_config oc;
    if (!strcmp(name, "sgd") || !strcmp(name, "nesterov")) {
        oc = lp_optim_default_config(LP_OPT_SGD);
        oc.momentum = 0.9f;
        if (!strcmp(name, "nesterov")) oc.nesterov = true, oc.weight_decay = 1e-4f;
    } else if (!strcmp(name, "sgd_plain")) {
        oc = lp_optim_default_config(LP_OPT_SGD);
        oc.weight_decay = 1e-3f;
    } else if (!strcmp(name, "adam") || !strcmp(name, "adam_wd") || !strcmp(name, "adam_eps6")) {
        oc = lp_optim_default_config(LP_OPT_ADAM);
        if (!strcmp(name, "adam_wd")) oc.weight_decay = 1e-2f;
        if (!strcmp(name, "adam_eps6")) oc.eps = 1e-6f;
    } else if (!strcmp(name, "adamw")) oc = lp_optim_default_config(LP_OPT_ADAMW);
    else {
        fprintf(stderr, "unknown optimizer %s\n", name);
        exit(2);
    }
    return oc;
}

static int cmd_init(int argc, char **argv) {
    if (argc != 11) return fprintf(stderr, "usage: init OUT ARCH TOP HEAD CLASSES C H W SEED\n"), 2;
    lp_net_config c = lp_net_default_config();
    snprintf(c.arch, sizeof c.arch, "%s", argv[3]);
    snprintf(c.top, sizeof c.top, "%s", argv[4]);
    snprintf(c.head, sizeof c.head, "%s", strcmp(argv[5], "-") ? argv[5] : "");
    c.num_classes = atoi(argv[6]);
    c.in_c = atoi(argv[7]);
    c.in_h = atoi(argv[8]);
    c.in_w = atoi(argv[9]);
    c.seed = strtoull(argv[10], NULL, 10);
    c.max_batch = 2;
    lp_net *net;
    CHECK(lp_net_create(&c, &net));
    CHECK(lp_checkpoint_save(argv[2], net, NULL, NULL));
    lp_net_free(net);
    return 0;
}

static int cmd_run(int argc, char **argv) {
    if (argc < 8) return fprintf(stderr, "usage: run CKPT INPUTS OUT OPT LR STEPS [FREEZE]\n"), 2;
    lp_net *net;
    CHECK(lp_checkpoint_load(argv[2], &net, NULL));
    /* the same weights in a net with another config: bf16 (bf16_parity.py) and/or a
     * chosen convolution algorithm (parity.py --conv) */
    const char *algo = getenv("LOUPE_PARITY_CONV"), *bn = getenv("LOUPE_PARITY_BN");
    if (getenv("LOUPE_PARITY_BF16") || algo || bn) {
        lp_net_config c = *lp_net_get_config(net);
        c.bf16 = getenv("LOUPE_PARITY_BF16") != NULL;
        if (algo && !lp_conv_algo_parse(algo, &c.conv_algo)) return fprintf(stderr, "bad LOUPE_PARITY_CONV %s\n", algo), 2;
        if (bn) c.bn = !strcmp(bn, "train") ? LP_BN_MODE_TRAIN : !strcmp(bn, "frozen") ? LP_BN_MODE_FROZEN : LP_BN_AUTO;
        lp_net *other;
        lp_tensor_list sd;
        lp_tensor_list_init(&sd);
        CHECK(lp_net_state_dict(net, &sd));
        CHECK(lp_net_create_ex(&c, false, &other));
        CHECK(lp_net_load_state_dict(other, &sd, true, NULL));
        lp_tensor_list_free(&sd);
        lp_net_free(net);
        net = other;
    }
    if (argc > 8) CHECK(lp_net_freeze(net, argv[8]));
    lp_tensor_list in;
    lp_tensor_list_init(&in);
    CHECK(lp_safetensors_read(argv[3], &in));
    lp_named_tensor *x = lp_tensor_list_find(&in, "x"), *lab = lp_tensor_list_find(&in, "labels");
    if (!x || !lab || x->t.dtype != LP_F32 || lab->t.dtype != LP_I64) return fprintf(stderr, "inputs need x F32 and labels I64\n"), 1;
    int n = (int)x->t.shape[0], k = lp_net_get_config(net)->num_classes;
    int *labels = malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) labels[i] = (int)((int64_t *)lab->t.data)[i];
    lp_optim_config oc = opt_config(argv[5]);
    float lr = strtof(argv[6], NULL);
    int steps = atoi(argv[7]);
    lp_optim *opt;
    CHECK(lp_optim_create(net, &oc, &opt));
    lp_tensor_list out;
    lp_tensor_list_init(&out);
    float *logits = malloc(sizeof(float) * (size_t)n * k), *lps = malloc(sizeof(float) * (size_t)n),
          *probs = malloc(sizeof(float) * (size_t)n * k);
    int64_t ls[2] = {n, k}, one = 1, nn_ = n;
    CHECK(lp_net_forward(net, x->t.data, n, false, 0, logits));
    add_copy(&out, "eval_logits", logits, 2, ls);
    int convs, wino = lp_net_winograd_layers(net, &convs);
    float wc[2] = {(float)wino, (float)convs};
    int64_t two = 2;
    add_copy(&out, "winograd_layers", wc, 1, &two);
    for (int s = 0; s < steps; s++) {
        float loss;
        lp_net_zero_grad(net);
        CHECK(lp_net_forward(net, x->t.data, n, true, (uint64_t)s, logits));
        CHECK(lp_net_loss(net, labels, n, lps, probs, &loss));
        CHECK(lp_net_backward(net));
        char name[128];
        /* dropout masks of this step */
        const char *drops[] = {"classifier.0", "classifier.2", "classifier.5", "head.0", "head.1", "head.2", "head.3", "head.4", "head.5", NULL};
        for (int d = 0; drops[d]; d++) {
            size_t cnt;
            const float *m = lp_net_dropout_mask(net, drops[d], &cnt);
            if (!m) continue;
            int64_t ms[2] = {n, (int64_t)cnt / n};
            snprintf(name, sizeof name, "mask.%d.%s", s, drops[d]);
            add_copy(&out, name, m, 2, ms);
        }
        /* stochastic depth's per-sample masks (efficientnet_b0's blocks features.S.I) */
        for (int st = 1; st <= 7; st++)
            for (int bi = 0; bi < 4; bi++) {
                char blk[32];
                size_t cnt;
                snprintf(blk, sizeof blk, "features.%d.%d", st, bi);
                const float *m = lp_net_dropout_mask(net, blk, &cnt);
                if (!m) continue;
                int64_t ms[2] = {n, 1};
                snprintf(name, sizeof name, "mask.%d.%s", s, blk);
                add_copy(&out, name, m, 2, ms);
            }
        if (s == 0) {
            add_copy(&out, "logits", logits, 2, ls);
            add_copy(&out, "loss", &loss, 1, &one);
            add_copy(&out, "loss_per_sample", lps, 1, &nn_);
            add_copy(&out, "probs", probs, 2, ls);
            for (int p = 0; p < lp_net_param_count(net); p++) {
                int64_t sh[4];
                int nd = lp_net_param_shape(net, p, sh);
                if (!lp_net_param_trainable(net, p)) continue; /* frozen: checked below to stay unchanged */
                snprintf(name, sizeof name, "grad.%s", lp_net_param_name(net, p));
                add_copy(&out, name, lp_net_grad(net, p), nd, sh);
            }
        }
        CHECK(lp_optim_step(opt, lr));
    }
    lp_tensor_list init;
    lp_tensor_list_init(&init);
    CHECK(lp_safetensors_read(argv[2], &init));
    for (int p = 0; p < lp_net_param_count(net); p++) {
        int64_t sh[4];
        char name[128];
        int nd = lp_net_param_shape(net, p, sh);
        if (!lp_net_param_trainable(net, p) && !lp_net_param_is_buffer(net, p)) {
            lp_named_tensor *t0 = lp_tensor_list_find(&init, lp_net_param_name(net, p));
            if (!t0 || memcmp(t0->t.data, lp_net_param_data(net, p), lp_net_param_numel(net, p) * sizeof(float)))
                return fprintf(stderr, "frozen parameter %s changed\n", lp_net_param_name(net, p)), 1;
            continue;
        }
        snprintf(name, sizeof name, "final.%s", lp_net_param_name(net, p));
        add_copy(&out, name, lp_net_param_data(net, p), nd, sh);
    }
    lp_tensor_list_free(&init);
    CHECK(lp_safetensors_write(argv[4], &out));
    lp_tensor_list_free(&out);
    lp_tensor_list_free(&in);
    lp_optim_free(opt);
    lp_net_free(net);
    free(labels), free(logits), free(lps), free(probs);
    return 0;
}

/* optim CKPT GRADS OUT OPT LR STEPS: grads g.<step>.<param> given, no forward. */
static int cmd_optim(int argc, char **argv) {
    if (argc != 8) return fprintf(stderr, "usage: optim CKPT GRADS OUT OPT LR STEPS\n"), 2;
    lp_net *net;
    CHECK(lp_checkpoint_load(argv[2], &net, NULL));
    lp_tensor_list g;
    lp_tensor_list_init(&g);
    CHECK(lp_safetensors_read(argv[3], &g));
    lp_optim_config oc = opt_config(argv[5]);
    lp_optim *opt;
    CHECK(lp_optim_create(net, &oc, &opt));
    int steps = atoi(argv[7]);
    for (int s = 0; s < steps; s++) {
        for (int p = 0; p < lp_net_param_count(net); p++) {
            char name[128];
            snprintf(name, sizeof name, "g.%d.%s", s, lp_net_param_name(net, p));
            lp_named_tensor *t = lp_tensor_list_find(&g, name);
            if (!t) return fprintf(stderr, "missing %s\n", name), 1;
            memcpy(lp_net_grad(net, p), t->t.data, lp_net_param_numel(net, p) * sizeof(float));
        }
        CHECK(lp_optim_step(opt, strtof(argv[6], NULL)));
    }
    /* round trip of the optimizer state through a state dict */
    lp_tensor_list osd;
    lp_tensor_list_init(&osd);
    CHECK(lp_optim_state_dict(opt, &osd));
    lp_optim *opt2;
    CHECK(lp_optim_create(net, &oc, &opt2));
    CHECK(lp_optim_load_state_dict(opt2, &osd));
    lp_tensor_list osd2;
    lp_tensor_list_init(&osd2);
    CHECK(lp_optim_state_dict(opt2, &osd2));
    if (osd.count != osd2.count) return fprintf(stderr, "optimizer state round trip: %d vs %d tensors\n", osd.count, osd2.count), 1;
    for (int i = 0; i < osd.count; i++)
        if (memcmp(osd.items[i].t.data, osd2.items[i].t.data, lp_tensor_nbytes(&osd.items[i].t)))
            return fprintf(stderr, "optimizer state round trip differs at %s\n", osd.items[i].name), 1;
    lp_tensor_list out;
    lp_tensor_list_init(&out);
    for (int p = 0; p < lp_net_param_count(net); p++) {
        int64_t sh[4];
        char name[128];
        int nd = lp_net_param_shape(net, p, sh);
        snprintf(name, sizeof name, "final.%s", lp_net_param_name(net, p));
        add_copy(&out, name, lp_net_param_data(net, p), nd, sh);
    }
    CHECK(lp_safetensors_write(argv[4], &out));
    lp_tensor_list_free(&out), lp_tensor_list_free(&osd), lp_tensor_list_free(&osd2), lp_tensor_list_free(&g);
    lp_optim_free(opt), lp_optim_free(opt2);
    lp_net_free(net);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "optim")) return cmd_optim(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "init")) return cmd_init(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "run")) return cmd_run(argc, argv);
    fprintf(stderr, "usage: engine_parity init|run ...\n");
    return 2;
}
