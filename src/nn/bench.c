/* lp_bench_run: training throughput on a synthetic batch (loupe bench). */
#include "nn/nn_impl.h"
#include "nn/optim.h"
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

lp_bench_params lp_bench_default_params(void) {
    lp_bench_params p;
    memset(&p, 0, sizeof p);
    p.model = lp_model_default_params();
    p.batch = 8;
    p.steps = 5;
    p.warmup = 1;
    p.optimizer = "sgd";
    p.precision = "fp32";
    return p;
}

/* One SGD/Adam step on the synthetic batch; *t1 after the loss, *t2 after backward. */
static lp_status train_step(lp_net *net, lp_optim *opt, const lp_optim_config *oc, const float *x, const int *labels, int n,
                            int step, float *loss, double *t1, double *t2) {
    float l = 0;
    lp_net_zero_grad(net);
    lp_status st = lp_net_forward(net, x, n, true, (uint64_t)step, NULL);
    if (!st) st = lp_net_loss(net, labels, n, NULL, NULL, &l);
    if (t1) *t1 = lp_now();
    const float lr = oc->kind == LP_OPT_SGD ? 0.001f : 1e-5f;
    if (!st) st = lp_net_backward_fused(net, opt, lr); /* lp_net_backward_step in two halves */
    if (t2) *t2 = lp_now();
    if (!st) st = lp_optim_step(opt, lr);
    if (loss) *loss = l;
    return st;
}

lp_status lp_bench_run(const lp_bench_params *p, lp_bench_result *r) {
    lp_clear_error();
    if (!p || !r) return lp_fail(LP_ERR_ARG, "lp_bench_run: params and result are required (NULL given)");
    memset(r, 0, sizeof *r);
    if (p->batch < 1 || p->steps < 1 || p->warmup < 0) return lp_fail(LP_ERR_ARG, "bench: batch and steps must be >= 1");
    lp_net_config c;
    lp_status st = lp_net_config_from_model_params(&p->model, &c);
    if (st) return st;
    c.max_batch = p->batch;
    lp_precision prec;
    if (!lp_precision_parse(p->precision, &prec))
        return lp_fail(LP_ERR_ARG, "unknown precision '%s' (fp32, bf16, auto)", p->precision);
    /* bf16 asked is bf16 or an error (lp_net_create refuses it without native bf16) */
    c.bf16 = prec == LP_PREC_BF16 || lp_net_use_bf16(prec, c.arch);
    r->bf16 = c.bf16;
    if (p->conv_algo && !lp_conv_algo_parse(p->conv_algo, &c.conv_algo))
        return lp_fail(LP_ERR_ARG, "unknown convolution algorithm '%s' (auto, direct, winograd)", p->conv_algo);
    if (!lp_bn_mode_parse(p->bn, &c.bn)) return lp_fail(LP_ERR_ARG, "unknown batch norm mode '%s' (auto, train, frozen)", p->bn);
    lp_optim_config oc;
    const char *o = p->optimizer ? p->optimizer : "sgd";
    if (!strcmp(o, "sgd")) {
        oc = lp_optim_default_config(LP_OPT_SGD);
        oc.momentum = 0.9f;
    } else if (!strcmp(o, "adam")) oc = lp_optim_default_config(LP_OPT_ADAM);
    else if (!strcmp(o, "adamw")) oc = lp_optim_default_config(LP_OPT_ADAMW);
    else return lp_fail(LP_ERR_ARG, "bench: unknown optimizer '%s' (sgd, adam, adamw)", o);
    lp_net *net = NULL;
    lp_optim *opt = NULL;
    size_t nx = (size_t)p->batch * c.in_c * c.in_h * c.in_w;
    float *x = lp_aligned_alloc(nx * sizeof(float));
    int *labels = malloc(sizeof(int) * (size_t)p->batch);
    if (!x || !labels) {
        st = LP_ERR_NOMEM;
        goto done;
    }
    if ((st = lp_net_create(&c, &net))) goto done;
    if (p->model.freeze && (st = lp_net_freeze(net, p->model.freeze))) goto done;
    if ((st = lp_optim_create(net, &oc, &opt))) goto done;
    for (size_t i = 0; i < nx; i++) x[i] = 2.0f * lp_rng_uniform(1, 1, i) - 1.0f;
    for (int i = 0; i < p->batch; i++) labels[i] = i % c.num_classes;
    double tf = 0, tb = 0, tu = 0, t_all = 0;
    for (int s = 0; s < p->warmup + p->steps; s++) {
        double t0 = lp_now(), t1, t2;
        float loss;
        if ((st = train_step(net, opt, &oc, x, labels, p->batch, s, &loss, &t1, &t2))) goto done;
        double t3 = lp_now();
        r->final_loss = loss;
        if (s == 0) r->first_step_s = t3 - t0;
        if (s < p->warmup) continue;
        tf += t1 - t0, tb += t2 - t1, tu += t3 - t2, t_all += t3 - t0;
    }
    r->forward_s = tf / p->steps;
    r->winograd_layers = lp_net_winograd_layers(net, &r->conv_layers);
    r->backward_s = tb / p->steps;
    r->update_s = tu / p->steps;
    r->step_s = t_all / p->steps;
    r->images_per_s = t_all > 0 ? (double)p->batch * p->steps / t_all : 0;
    /* peak memory of training, before the per-layer timing's own buffers (saved
     * optimizer state, gradients the fused step never writes) */
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) r->peak_rss_mb = (double)ru.ru_maxrss / 1024.0;
    if (p->per_layer) {
        /* Interleaved so that drifting load on a shared machine hits all three alike:
         * a plain step (timed), a profiled step (a wait after each layer), then each
         * layer's primitives alone on the same buffers. */
        size_t nl = (size_t)net->nlayers;
        double *prim = lp_calloc(4 * nl, sizeof(double)), t_plain = 0;
        double *prof = net->prof = lp_calloc(2 * nl, sizeof(double)); /* freed with the net */
        net->prof = NULL; /* set for the profiled steps only (each forward adds to it) */
        if (!prim || !prof) {
            free(prim);
            free(prof);
            st = LP_ERR_NOMEM;
            goto done;
        }
        double *gflop = prim + 2 * nl, update_alone = 0;
        /* One untimed round first: buffers a step never writes (the gradients of
         * layers updated inside backward: 400 MB at VGG's top) get their pages here. */
        st = lp_net_forward(net, x, p->batch, true, 0, NULL);
        if (!st) st = lp_bench_time_primitives(net, prim, gflop);
        memset(prim, 0, 2 * nl * sizeof(double));
        for (int s = 0; s < p->steps && !st; s++) {
            double t0 = lp_now();
            st = train_step(net, opt, &oc, x, labels, p->batch, s, NULL, NULL, NULL);
            t_plain += lp_now() - t0;
            net->prof = prof;
            if (!st) st = train_step(net, opt, &oc, x, labels, p->batch, s, NULL, NULL, NULL);
            net->prof = NULL;
            /* backward left input gradients in the activation slots: the primitives
             * alone read activations, as in a step */
            if (!st) st = lp_net_forward(net, x, p->batch, true, (uint64_t)s, NULL);
            if (!st) st = lp_bench_time_primitives(net, prim, gflop);
            double u = 0;
            if (!st) st = lp_optim_time_update(opt, &u);
            update_alone += u;
        }
        r->update_alone_s = update_alone / p->steps;
        net->prof = prof;
        if (!st)
            st = lp_bench_layer_table(net, prim, gflop, p->steps, t_plain / p->steps, r->update_alone_s, &r->per_layer_text,
                                      &r->primitive_s);
        free(prim);
        if (st) goto done;
        r->overhead_share = 1.0 - (r->primitive_s + r->update_alone_s) / (t_plain / p->steps);
    }
done:
    lp_optim_free(opt);
    lp_net_free(net);
    free(x);
    free(labels);
    if (st) lp_bench_result_free(r);
    return st;
}

void lp_bench_result_free(lp_bench_result *r) {
    if (!r) return;
    free(r->per_layer_text);
    r->per_layer_text = NULL;
}
