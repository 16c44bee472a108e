/* diag: the analysis behind `loupe diagnose`: per-epoch figures, the loss
 * decomposition between the best-loss epoch and the analysed one, calibration
 * and temperature scaling, and the verdicts with their evidence. */
#include "diag/diag_impl.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lp_diagnose_params lp_diagnose_default_params(void) {
    return (lp_diagnose_params){.epoch = 0, .patience = 0, .max_images = 10};
}

int diag_images_listed(const lp_diagnosis *d) {
    const int listed = d->n_conf_wrong + d->params.max_images;
    return listed < d->n_listed ? listed : d->n_listed;
}

const char *diag_class_name(const lp_diagnosis *d, int c) {
    return c >= 0 && c < d->run.k ? d->run.classes[c] : "?";
}

double diag_p(const lp_diagnosis *d, int pi, int img, int c) {
    return d->run.probs[((size_t)pi * d->run.n_img + img) * d->run.k + c];
}

double diag_p_true(const lp_diagnosis *d, int pi, int img) {
    return diag_p(d, pi, img, d->run.labels[img]);
}

static double hist_val(const lp_diagnosis *d, int tl, int which) {
    if (tl < 0 || d->tl[tl].hist < 0) return NAN;
    const diag_hist *h = &d->run.hist[d->tl[tl].hist];
    switch (which) {
    case 0: return h->loss;
    case 1: return h->acc;
    case 2: return h->val_loss;
    case 3: return h->val_acc;
    default: return h->lr;
    }
}

static const char *share_phrase(const lp_diagnosis *d, char *buf);

/* ---- verdicts ------------------------------------------------------------- */
static diag_verdict *add_verdict(lp_diagnosis *d, const char *id, const char *severity, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static diag_verdict *add_verdict(lp_diagnosis *d, const char *id, const char *severity, const char *fmt, ...) {
    if (d->n_verdicts >= (int)(sizeof d->verdicts / sizeof d->verdicts[0])) return NULL;
    diag_sb b = {0};
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sb_puts(&b, buf);
    diag_verdict *v = &d->verdicts[d->n_verdicts];
    snprintf(v->id, sizeof v->id, "%s", id);
    v->severity = severity;
    v->message = sb_take(&b);
    v->evidence = cJSON_CreateObject();
    if (!v->message || !v->evidence) {
        free(v->message);
        cJSON_Delete(v->evidence);
        return NULL;
    }
    d->n_verdicts++;
    return v;
}

static void ev_num(cJSON *o, const char *key, double x) {
    if (isfinite(x)) cJSON_AddNumberToObject(o, key, x);
    else cJSON_AddNullToObject(o, key);
}

/* "0.29", "0.003", "12.5": three significant digits. */
static const char *g3(char *buf, double x) {
    if (!isfinite(x)) return strcpy(buf, isnan(x) ? "n/a" : x > 0 ? "inf" : "-inf");
    snprintf(buf, 32, "%.3g", x);
    return buf;
}

typedef struct pp_mode {
    const char *name, *desc;
    double scale; /* multiplier on raw 0..255 pixels */
    int bgr, centred;
} pp_mode;

static const pp_mode pp_modes[] = {
    {"rescale", "RGB, x/255, range [0, 1]", 1.0 / 255, 0, 0},
    {"caffe", "BGR, ImageNet mean subtracted, range about [-124, 152]", 1.0, 1, 1},
    {"torch", "RGB, x/255 then ImageNet mean/std per channel, range about [-2.1, 2.6]", 1.0 / (255 * 0.226), 0, 1},
    {"tf", "RGB, x/127.5 - 1, range [-1, 1]", 1.0 / 127.5, 0, 1},
    {"none", "RGB, raw pixels, range [0, 255]", 1.0, 0, 0},
};

static const pp_mode *find_pp(const char *name) {
    for (size_t i = 0; name && i < sizeof pp_modes / sizeof pp_modes[0]; i++)
        if (!strcmp(pp_modes[i].name, name)) return &pp_modes[i];
    return NULL;
}

static void verdict_preprocessing(lp_diagnosis *d) {
    const diag_config *c = &d->run.cfg;
    if (!c->weights || !c->weights_preprocess || !c->preprocess) return;
    if (!strcmp(c->weights, "null") || !strcmp(c->preprocess, "auto") || !strcmp(c->weights_preprocess, c->preprocess)) return;
    const pp_mode *used = find_pp(c->preprocess), *want = find_pp(c->weights_preprocess);
    char effect[512] = "";
    if (used && want) {
        double ratio = used->scale / want->scale;
        size_t n = 0;
        if (ratio < 0.67) n += snprintf(effect + n, sizeof effect - n, "inputs about %.0fx smaller than in their training", 1 / ratio);
        else if (ratio > 1.5) n += snprintf(effect + n, sizeof effect - n, "inputs about %.0fx larger than in their training", ratio);
        else n += snprintf(effect + n, sizeof effect - n, "inputs of about the right scale");
        if (want->centred && !used->centred) n += snprintf(effect + n, sizeof effect - n, ", not centred on zero");
        if (!want->centred && used->centred) n += snprintf(effect + n, sizeof effect - n, ", centred where the weights expect positive values");
        if (want->bgr != used->bgr) n += snprintf(effect + n, sizeof effect - n, ", with red and blue channels swapped");
    } else {
        snprintf(effect, sizeof effect, "inputs on another scale or channel order than in their training");
    }
    diag_verdict *v = add_verdict(d, "preprocessing_mismatch", "problem",
        "Preprocessing mismatch: the pretrained weights (%s) expect '%s' preprocessing (%s) but this run used '%s' (%s): "
        "the pretrained layers see %s. Their features are then far from what they learned, which a new head can partly "
        "hide on the training set; train again with --preprocess %s (or auto).",
        c->weights, c->weights_preprocess, want ? want->desc : "see the weights' documentation", c->preprocess,
        used ? used->desc : "unknown mode", effect, c->weights_preprocess);
    if (!v) return;
    cJSON_AddStringToObject(v->evidence, "preprocess", c->preprocess);
    cJSON_AddStringToObject(v->evidence, "weights_preprocess", c->weights_preprocess);
    cJSON_AddStringToObject(v->evidence, "weights", c->weights);
    if (used && want) ev_num(v->evidence, "input_scale_ratio", used->scale / want->scale);
    if (used && want) cJSON_AddBoolToObject(v->evidence, "channels_swapped", used->bgr != want->bgr);
}

/* Batch norm on the statistics of a handful of images (keras #9214 and its many duplicates):
 * each step normalizes with the mean and variance of `batch` images, noisy estimates of the
 * running statistics that evaluation uses, so the network trains for one normalization and
 * is evaluated with another. */
static void verdict_bn_small_batch(lp_diagnosis *d) {
    const diag_config *c = &d->run.cfg;
    if (c->bn_batch_stats_layers <= 0 || c->batch < 1 || c->batch > 4) return;
    diag_verdict *v = add_verdict(d, "batchnorm_small_batch", "problem",
        "Batch norm on %d image%s: %d of the model's %d batch norm layers normalize each training step with the mean and "
        "variance of the batch (%d image%s), while evaluation uses the running statistics. The pixels of one image are "
        "much alike, so so few images give estimates that swing from step to step and differ from the running ones: "
        "the model learns under one normalization and is evaluated under another, and validation accuracy can lag "
        "training accuracy for no fault of the data. Train with --bn frozen (the running statistics, as Keras does for a frozen base), "
        "freeze the base (--bn auto then freezes its batch norm too), or use a batch of 16 or more.",
        c->batch, c->batch == 1 ? "" : "s", c->bn_batch_stats_layers, c->bn_layers, c->batch, c->batch == 1 ? "" : "s");
    if (!v) return;
    cJSON_AddNumberToObject(v->evidence, "batch", c->batch);
    cJSON_AddNumberToObject(v->evidence, "bn_layers", c->bn_layers);
    cJSON_AddNumberToObject(v->evidence, "bn_batch_stats_layers", c->bn_batch_stats_layers);
    if (c->bn) cJSON_AddStringToObject(v->evidence, "bn", c->bn);
}

/* Batch norm's two modes disagree on the training images themselves: trained with the
 * batch's statistics, evaluated with the running ones. A gap of 10 points or more (and of
 * 3 images at least) is the normalization, not overfitting: the images are the same. */
static void verdict_bn_mode_gap(lp_diagnosis *d) {
    const diag_run *r = &d->run;
    if (!r->have_bn_check) return;
    const double gap = r->bn_acc_train_mode - r->bn_acc_inference;
    if (gap < 0.10 || gap * r->bn_check_images < 3) return;
    char a[32], b[32];
    diag_verdict *v = add_verdict(d, "batchnorm_mode_gap", "problem",
        "Batch norm modes disagree: at epoch %d the training images were classified %s%% right in training mode (batch "
        "statistics) but %s%% right by the same weights with the running statistics that evaluation and prediction use "
        "(%d images). The gap is the normalization, not overfitting (the images are the same): the running statistics "
        "do not describe what the layers saw in training, typically with small batches. Train with --bn frozen, freeze "
        "the base (its batch norm then freezes too), or use a larger batch; compare val_accuracy with the second figure.",
        r->bn_check_epoch, g3(a, 100 * r->bn_acc_train_mode), g3(b, 100 * r->bn_acc_inference), r->bn_check_images);
    if (!v) return;
    ev_num(v->evidence, "train_accuracy_train_mode", r->bn_acc_train_mode);
    ev_num(v->evidence, "train_accuracy_inference_mode", r->bn_acc_inference);
    ev_num(v->evidence, "train_loss_inference_mode", r->bn_loss_inference);
    cJSON_AddNumberToObject(v->evidence, "images", r->bn_check_images);
    cJSON_AddNumberToObject(v->evidence, "epoch", r->bn_check_epoch);
}

static void verdict_lr(lp_diagnosis *d) {
    const diag_run *r = &d->run;
    char buf[2048] = "", a[32], b[32];
    size_t n = 0;
    cJSON *nan_epochs = cJSON_CreateArray(), *spikes = cJSON_CreateArray();
    int first_nan = 0, n_spikes = 0;
    /* the whole run, unless an epoch was asked for (the analysed epoch may be the last finite one) */
    int upto = d->params.epoch > 0 ? d->params.epoch : 1 << 30;
    for (int i = 0; i < r->n_hist; i++) {
        const diag_hist *h = &r->hist[i];
        if (h->epoch > upto) break;
        if (!isfinite(h->loss) || !isfinite(h->val_loss)) {
            cJSON_AddItemToArray(nan_epochs, cJSON_CreateNumber(h->epoch));
            if (!first_nan) first_nan = h->epoch;
        }
        if (i > 0 && isfinite(h->loss) && isfinite(r->hist[i - 1].loss) && h->loss > 1.5 * r->hist[i - 1].loss &&
            h->loss - r->hist[i - 1].loss > 0.1) {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddNumberToObject(s, "epoch", h->epoch);
            cJSON_AddNumberToObject(s, "loss_before", r->hist[i - 1].loss);
            cJSON_AddNumberToObject(s, "loss", h->loss);
            cJSON_AddItemToArray(spikes, s);
            if (n_spikes < 4)
                n += snprintf(buf + n, sizeof buf - n, "%s%d (%s -> %s)", n_spikes ? ", " : "training loss jumped at epoch ",
                              h->epoch, g3(a, r->hist[i - 1].loss), g3(b, h->loss));
            n_spikes++;
        }
    }
    if (n_spikes > 4) n += snprintf(buf + n, sizeof buf - n, " and %d more", n_spikes - 4);
    int first_bad_pred = 0;
    for (int e = 0; e < r->n_ep && r->ep_num[e] <= upto; e++)
        if (!r->ep_finite[e] && !first_bad_pred) first_bad_pred = r->ep_num[e];
    /* divergence: training loss ends above where it started */
    double l0 = NAN, l1 = NAN;
    int e0 = 0, e1 = 0;
    for (int i = 0; i < r->n_hist && r->hist[i].epoch <= upto; i++)
        if (isfinite(r->hist[i].loss)) {
            if (isnan(l0)) l0 = r->hist[i].loss, e0 = r->hist[i].epoch;
            l1 = r->hist[i].loss, e1 = r->hist[i].epoch;
        }
    bool diverged = e1 - e0 >= 2 && l1 > 1.1 * l0 + 0.02;
    if (!first_nan && !first_bad_pred && !n_spikes && !diverged) {
        cJSON_Delete(nan_epochs);
        cJSON_Delete(spikes);
        return;
    }
    char what[2600] = "";
    size_t m = 0;
    if (first_nan) m += snprintf(what + m, sizeof what - m, "the loss became NaN/inf at epoch %d", first_nan);
    else if (first_bad_pred) m += snprintf(what + m, sizeof what - m, "the predicted probabilities became NaN at epoch %d", first_bad_pred);
    if (n_spikes) m += snprintf(what + m, sizeof what - m, "%s%s", m ? "; " : "", buf);
    if (diverged) m += snprintf(what + m, sizeof what - m, "%straining loss ended higher than it started (%s at epoch %d, %s at epoch %d)",
                                m ? "; " : "", g3(a, l0), e0, g3(b, l1), e1);
    char lr[64] = "";
    if (isfinite(r->cfg.lr)) snprintf(lr, sizeof lr, " (lr was %g; try %g)", r->cfg.lr, r->cfg.lr / 10);
    diag_verdict *v = add_verdict(d, "lr_too_high", "problem",
        "Learning rate too high: %s. Lower the learning rate%s, or use --reduce-lr or a schedule.", what, lr);
    if (!v) {
        cJSON_Delete(nan_epochs);
        cJSON_Delete(spikes);
        return;
    }
    cJSON_AddItemToObject(v->evidence, "nan_epochs", nan_epochs);
    cJSON_AddItemToObject(v->evidence, "spikes", spikes);
    cJSON_AddBoolToObject(v->evidence, "diverged", diverged);
    if (first_bad_pred) cJSON_AddNumberToObject(v->evidence, "first_nonfinite_prediction_epoch", first_bad_pred);
    ev_num(v->evidence, "lr", r->cfg.lr);
}

static cJSON *image_brief(const lp_diagnosis *d, int img) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", d->run.paths[img]);
    cJSON_AddStringToObject(o, "label_name", diag_class_name(d, d->run.labels[img]));
    ev_num(o, "p_true_best", diag_p_true(d, d->B, img));
    ev_num(o, "p_true_last", diag_p_true(d, d->L, img));
    return o;
}

static void verdicts_predictions(lp_diagnosis *d) {
    const diag_run *r = &d->run;
    if (d->L < 0 || !r->ep_finite[d->L]) return;
    const diag_epoch *eL = &d->tl[d->tl_L], *eB = &d->tl[d->tl_B];
    int n = r->n_img, k = r->k;
    char a[32], b[32], c[32], e[32], f[32];
    bool rose = d->rise > 0.02 && d->rise > 0.1 * eB->val_loss;
    bool acc_held = eL->acc >= eB->acc - fmax(0.02, 1.5 / n);

    /* overconfident errors */
    bool conf_rise = rose && d->n_wrong_L > 0 && isfinite(d->rise_share_mis) && d->rise_share_mis >= 0.5 &&
                     d->p_true_mis_L < d->p_true_mis_B;
    bool conf_static = d->n_wrong_L > 0 && !d->T_at_bound && d->T >= 1.5 && eL->conf_wrong >= 0.8;
    if (conf_rise || conf_static) {
        int shown = 0;
        char names[1200] = "";
        size_t m = 0;
        for (int j = 0; j < d->n_conf_wrong && shown < 3; j++) {
            int img = d->order[j];
            m += snprintf(names + m, sizeof names - m, "%s%s (%s -> %s)", shown ? ", " : "", r->paths[img],
                          g3(a, diag_p_true(d, d->B, img)), g3(b, diag_p_true(d, d->L, img)));
            shown++;
        }
        diag_verdict *v;
        if (conf_rise)
            v = add_verdict(d, "overconfident_errors", "problem",
                "Overconfident errors: val_loss rose %s -> %s (epoch %d -> %d) while accuracy %s; %s comes from "
                "the %d images misclassified at epoch %d, which became more confidently wrong (mean probability of the true class "
                "%s -> %s; mean confidence in the wrong class %s -> %s). Most affected (p_true at epoch %d -> %d): %s. "
                "Accuracy only counts errors, the loss also weighs how confident they are. Temperature scaling (T = %s) brings "
                "NLL %s -> %s without changing accuracy; early stopping, augmentation or more data address the cause.",
                g3(a, eB->val_loss), g3(b, eL->val_loss), eB->epoch, eL->epoch,
                acc_held ? "held" : "fell", share_phrase(d, (char[160]){0}), d->n_wrong_L, eL->epoch,
                g3(c, d->p_true_mis_B), g3(e, d->p_true_mis_L), g3(f, d->conf_wrong_B), g3((char[32]){0}, eL->conf_wrong),
                eB->epoch, eL->epoch, names, g3((char[32]){0}, d->T), g3((char[32]){0}, d->nll), g3((char[32]){0}, d->nll_c));
        else
            v = add_verdict(d, "overconfident_errors", "problem",
                "Overconfident errors: at epoch %d the %d misclassified images get a mean confidence of %s in the wrong class; "
                "the fitted temperature T = %s (> 1) says the probabilities are too sharp overall (ECE %s -> %s after scaling). "
                "Worst: %s.",
                eL->epoch, d->n_wrong_L, g3(a, eL->conf_wrong), g3(b, d->T), g3(c, d->ece), g3(e, d->ece_c), names);
        if (v) {
            cJSON *imgs = cJSON_AddArrayToObject(v->evidence, "images");
            for (int j = 0; j < d->n_conf_wrong; j++) {
                int img = d->order[j];
                if (d->loss[(size_t)d->L * n + img] > d->loss[(size_t)d->B * n + img] || !conf_rise)
                    cJSON_AddItemToArray(imgs, image_brief(d, img));
            }
            ev_num(v->evidence, "rise_share_misclassified", d->rise_share_mis);
            cJSON_AddNumberToObject(v->evidence, "n_misclassified", d->n_wrong_L);
            ev_num(v->evidence, "p_true_misclassified_best", d->p_true_mis_B);
            ev_num(v->evidence, "p_true_misclassified_last", d->p_true_mis_L);
            ev_num(v->evidence, "conf_wrong_best", d->conf_wrong_B);
            ev_num(v->evidence, "conf_wrong_last", eL->conf_wrong);
            ev_num(v->evidence, "temperature", d->T);
        }
    }

    /* overfitting: training loss falls while val_loss rises */
    double tr_B = hist_val(d, d->tl_B, 0), tr_L = hist_val(d, d->tl_L, 0), tra_L = hist_val(d, d->tl_L, 1);
    if (rose && isfinite(tr_B) && isfinite(tr_L) && tr_L < tr_B && tr_L < 0.5 * eL->val_loss) {
        char ntrain[64] = "";
        if (r->train_counts) {
            int t = 0;
            for (int j = 0; j < k; j++) t += r->train_counts[j];
            snprintf(ntrain, sizeof ntrain, "%d ", t);
        }
        diag_verdict *v = add_verdict(d, "overfitting", "problem",
            "Overfitting: between epoch %d and epoch %d the training loss fell %s -> %s (training accuracy %s) while val_loss "
            "rose %s -> %s: the model fits its %straining images ever better without doing better on new ones. Stop at the "
            "best val_loss (--early-stop with --restore-best), augment, add data, or train fewer layers (--freeze base).",
            eB->epoch, eL->epoch, g3(a, tr_B), g3(b, tr_L), g3(c, tra_L), g3(e, eB->val_loss), g3(f, eL->val_loss), ntrain);
        if (v) {
            ev_num(v->evidence, "train_loss_best", tr_B);
            ev_num(v->evidence, "train_loss_last", tr_L);
            ev_num(v->evidence, "train_accuracy_last", tra_L);
            ev_num(v->evidence, "val_loss_best", eB->val_loss);
            ev_num(v->evidence, "val_loss_last", eL->val_loss);
        }
    }

    /* single-class predictor */
    int *cnt = calloc((size_t)k, sizeof *cnt), *prior = calloc((size_t)k, sizeof *prior);
    if (cnt && prior) {
        for (int i = 0; i < n; i++) {
            cnt[d->pred[(size_t)d->L * n + i]]++;
            prior[r->labels[i]]++;
        }
        int top = 0;
        for (int j = 1; j < k; j++)
            if (cnt[j] > cnt[top]) top = j;
        /* only when the model predicts that class more often than it occurs: a
         * validation set that is itself (nearly) one class, predicted correctly, is
         * no evidence of a model that learned the prior */
        if (n >= 2 && cnt[top] >= 0.95 * n && cnt[top] > prior[top]) {
            int single_epochs = 0, pe = 0;
            for (int ei = 0; ei <= d->L; ei++) {
                if (!r->ep_finite[ei]) continue;
                pe++;
                int first = d->pred[(size_t)ei * n], same = 1;
                for (int i = 1; i < n && same; i++) same = d->pred[(size_t)ei * n + i] == first;
                single_epochs += same;
            }
            char tc[512] = "";
            size_t tn = 0;
            if (fabs(eL->val_loss - log((double)k)) < 0.05)
                tn += snprintf(tc, sizeof tc, " val_loss %s is about ln %d = %s, the loss of guessing.", g3(a, eL->val_loss), k,
                               g3(b, log((double)k)));
            if (r->train_counts) {
                int t = 0;
                for (int j = 0; j < k; j++) t += r->train_counts[j];
                if (t > 0)
                    snprintf(tc + tn, sizeof tc - tn, " The training set is %.0f%% '%s'.", 100.0 * r->train_counts[top] / t,
                             diag_class_name(d, top));
            }
            diag_verdict *v = add_verdict(d, "single_class", "problem",
                "Single-class predictor: at epoch %d the model predicts '%s' for %d of %d images (in %d of %d epochs it "
                "predicted one class for all); accuracy %s equals the share of '%s' in the validation set (%s): it has learned the "
                "class prior and nothing else.%s Usual causes: a learning rate too high or too low, frozen features fed the wrong "
                "preprocessing, a strong class imbalance.",
                eL->epoch, diag_class_name(d, top), cnt[top], n, single_epochs, pe, g3(a, eL->acc), diag_class_name(d, top),
                g3(b, (double)prior[top] / n), tc);
            if (v) {
                cJSON_AddStringToObject(v->evidence, "class", diag_class_name(d, top));
                cJSON_AddNumberToObject(v->evidence, "predicted", cnt[top]);
                cJSON_AddNumberToObject(v->evidence, "n", n);
                ev_num(v->evidence, "accuracy", eL->acc);
                cJSON_AddNumberToObject(v->evidence, "prior", (double)prior[top] / n);
                cJSON_AddNumberToObject(v->evidence, "single_class_epochs", single_epochs);
            }
        }
    }
    free(cnt);
    free(prior);

    /* not enough validation data */
    double half = (d->ci_hi - d->ci_lo) / 2;
    if (half > 0.05) {
        diag_verdict *v = add_verdict(d, "small_validation_set", "warning",
            "Small validation set: %d images, so accuracy %s has a 95%% interval of %s-%s (Wilson); one image moves accuracy "
            "by %.1f points, and differences between epochs or runs smaller than about %.0f points are noise.",
            n, g3(a, eL->acc), g3(b, d->ci_lo), g3(c, d->ci_hi), 100.0 / n, 100 * half);
        if (v) {
            cJSON_AddNumberToObject(v->evidence, "n", n);
            ev_num(v->evidence, "accuracy", eL->acc);
            ev_num(v->evidence, "ci_low", d->ci_lo);
            ev_num(v->evidence, "ci_high", d->ci_hi);
        }
    }

    /* underconfident */
    if (!d->T_at_bound && d->T < 0.7 && d->ece > 0.05) {
        diag_verdict *v = add_verdict(d, "underconfident", "warning",
            "Underconfident: the fitted temperature T = %s (< 1) sharpens the probabilities (ECE %s -> %s); label smoothing, "
            "heavy dropout or augmentation often cause this.", g3(a, d->T), g3(b, d->ece), g3(c, d->ece_c));
        if (v) ev_num(v->evidence, "temperature", d->T);
    }

    /* best epoch by val_loss vs by val_accuracy */
    const diag_epoch *eA = &d->tl[d->tl_A];
    if (d->A != d->B && eA->acc > eB->acc) {
        diag_verdict *v = add_verdict(d, "best_epoch_disagreement", "info",
            "Best epochs disagree: lowest val_loss at epoch %d (%s, accuracy %s), highest val_accuracy at epoch %d (%s, val_loss "
            "%s). The best checkpoint follows --monitor (%s).",
            eB->epoch, g3(a, eB->val_loss), g3(b, eB->acc), eA->epoch, g3(c, eA->acc), g3(e, eA->val_loss),
            r->cfg.monitor ? r->cfg.monitor : "val_loss by default");
        if (v) {
            cJSON_AddNumberToObject(v->evidence, "best_epoch_loss", eB->epoch);
            cJSON_AddNumberToObject(v->evidence, "best_epoch_accuracy", eA->epoch);
        }
    }

    /* what early stopping would have saved */
    if (d->es.valid && d->es.stop_epoch < eL->epoch && !d->es.too_early) {
        int ri = -1;
        for (int t = 0; t < d->n_tl; t++)
            if (d->tl[t].epoch == d->es.restored_epoch) ri = t;
        double vl = ri >= 0 ? (d->tl[ri].pred >= 0 ? d->tl[ri].val_loss : hist_val(d, ri, 2)) : NAN;
        double va = ri >= 0 ? (d->tl[ri].pred >= 0 ? d->tl[ri].acc : hist_val(d, ri, 3)) : NAN;
        int total = eL->epoch;
        diag_verdict *v = add_verdict(d, "early_stopping", "warning",
            "Early stopping on %s with patience %d would have stopped at epoch %d of %d (%d epochs, %.0f%% of the training, "
            "saved) and restored epoch %d (val_loss %s, accuracy %s) instead of ending at val_loss %s, accuracy %s.",
            d->es.monitor, d->es.patience, d->es.stop_epoch, total, d->es.epochs_saved, 100.0 * d->es.epochs_saved / total,
            d->es.restored_epoch, g3(a, vl), g3(b, va), g3(c, eL->val_loss), g3(e, eL->acc));
        if (v) {
            cJSON_AddStringToObject(v->evidence, "monitor", d->es.monitor);
            cJSON_AddNumberToObject(v->evidence, "patience", d->es.patience);
            cJSON_AddNumberToObject(v->evidence, "stop_epoch", d->es.stop_epoch);
            cJSON_AddNumberToObject(v->evidence, "restored_epoch", d->es.restored_epoch);
            cJSON_AddNumberToObject(v->evidence, "epochs_saved", d->es.epochs_saved);
        }
    } else if (d->es.valid && d->es.too_early) {
        diag_verdict *v = add_verdict(d, "patience_too_short", "info",
            "Early stopping on %s with patience %d would have stopped too soon, at epoch %d with epoch %d's weights (%s %s): "
            "%s improved again later, to %s at epoch %d. A patience of at least %d reaches that epoch.",
            d->es.monitor, d->es.patience, d->es.stop_epoch, d->es.restored_epoch, d->es.monitor, g3(a, d->es.restored_value),
            d->es.monitor, g3(b, d->es.best_value), d->es.best_epoch, d->es.needed_patience);
        if (v) {
            cJSON_AddNumberToObject(v->evidence, "patience", d->es.patience);
            cJSON_AddNumberToObject(v->evidence, "stop_epoch", d->es.stop_epoch);
            cJSON_AddNumberToObject(v->evidence, "best_epoch", d->es.best_epoch);
            cJSON_AddNumberToObject(v->evidence, "needed_patience", d->es.needed_patience);
        }
    }
}

/* ---- figures ---------------------------------------------------------------- */
static void epoch_figures(lp_diagnosis *d, int pi, diag_epoch *out) {
    const diag_run *r = &d->run;
    int n = r->n_img, k = r->k;
    const double *P = r->probs + (size_t)pi * n * k;
    double sw = 0, sc = 0, cc = 0, cw = 0, ptw = 0;
    int nw = 0;
    for (int i = 0; i < n; i++) {
        const double *row = P + (size_t)i * k;
        int pr = lp_diag_argmax(row, k);
        double l = lp_diag_image_loss(row[r->labels[i]]);
        d->loss[(size_t)pi * n + i] = l;
        d->pred[(size_t)pi * n + i] = pr;
        if (pr != r->labels[i]) {
            nw++;
            sw += l;
            cw += row[pr];
            ptw += row[r->labels[i]];
        } else {
            sc += l;
            cc += row[pr];
        }
    }
    out->n = n;
    out->n_wrong = nw;
    out->acc = (double)(n - nw) / n;
    out->loss_wrong = sw / n;
    out->loss_correct = sc / n;
    out->val_loss = (sw + sc) / n;
    out->share_wrong = sw + sc > 0 ? sw / (sw + sc) : 0;
    out->conf_correct = n - nw ? cc / (n - nw) : NAN;
    out->conf_wrong = nw ? cw / nw : NAN;
    out->p_true_wrong = nw ? ptw / nw : NAN;
    lp_diag_calibration(P, r->labels, n, k, LP_DIAG_ECE_BINS, &out->ece, &out->mce, NULL);
    out->brier = lp_diag_brier(P, r->labels, n, k);
}

static void set_nan_figures(diag_epoch *e) {
    e->n = e->n_wrong = 0;
    e->val_loss = e->acc = e->loss_wrong = e->loss_correct = e->share_wrong = NAN;
    e->conf_correct = e->conf_wrong = e->p_true_wrong = e->ece = e->mce = e->brier = NAN;
}

typedef struct keyed {
    double key;
    int idx;
} keyed;
/* Descending key, then ascending index. */
static int cmp_keyed(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Misclassified at L first, by loss change best -> L; then the rest by loss at L. */
static lp_status order_images(lp_diagnosis *d) {
    int n = d->run.n_img, nw = 0;
    keyed *kk = lp_malloc((size_t)n * sizeof *kk);
    if (!kk) return LP_ERR_NOMEM;
    for (int pass = 0; pass < 2; pass++) {
        int start = pass ? nw : 0, m = 0;
        for (int i = 0; i < n; i++) {
            bool wrong = d->pred[(size_t)d->L * n + i] != d->run.labels[i];
            if (wrong != (pass == 0)) continue;
            double lL = d->loss[(size_t)d->L * n + i], lB = d->loss[(size_t)d->B * n + i];
            /* analysing the best epoch itself: no change to sort by, the loss then */
            kk[start + m++] = (keyed){pass || d->B == d->L ? lL : lL - lB, i};
        }
        if (!pass) nw = m;
        qsort(kk + start, (size_t)m, sizeof *kk, cmp_keyed);
    }
    for (int i = 0; i < n; i++) d->order[i] = kk[i].idx;
    d->n_conf_wrong = nw;
    d->n_listed = n;
    free(kk);
    return LP_OK;
}

/* Keras EarlyStopping (min_delta 0) replayed on the monitored series up to L:
 * where it would have stopped, which epoch it would have restored, and whether
 * that is the best epoch of the run or a patience too short to reach it. */
static void early_stopping_whatif(lp_diagnosis *d) {
    const diag_config *c = &d->run.cfg;
    d->es.patience = d->params.patience > 0 ? d->params.patience : c->early_stop > 0 ? c->early_stop : 5;
    bool acc = c->monitor && !strcmp(c->monitor, "val_accuracy");
    d->es.monitor = acc ? "val_accuracy" : "val_loss";
    double best = acc ? -INFINITY : INFINITY;
    int wait = 0, last_improved = 0;
    d->es.stop_epoch = 0;
    for (int t = 0; t <= d->tl_L; t++) {
        const diag_epoch *e = &d->tl[t];
        double v = hist_val(d, t, acc ? 3 : 2);
        if (!isfinite(v) && e->pred >= 0) v = acc ? e->acc : e->val_loss;
        if (isfinite(v) && (acc ? v > best : v < best)) {
            if (last_improved && e->epoch - last_improved > d->es.needed_patience) d->es.needed_patience = e->epoch - last_improved;
            best = v;
            wait = 0;
            last_improved = e->epoch;
            d->es.best_epoch = e->epoch;
            d->es.best_value = v;
            if (!d->es.stop_epoch) d->es.restored_epoch = e->epoch, d->es.restored_value = v;
            d->es.valid = true;
        } else if (d->es.valid && !d->es.stop_epoch && ++wait >= d->es.patience) {
            d->es.stop_epoch = e->epoch;
        }
    }
    if (!d->es.stop_epoch) d->es.stop_epoch = d->tl[d->tl_L].epoch;
    d->es.epochs_saved = d->tl[d->tl_L].epoch - d->es.stop_epoch;
    d->es.too_early = d->es.best_epoch > d->es.stop_epoch;
}

/* "91% of the rise" / "all of the rise (120%: the correct images' loss fell meanwhile)" */
static const char *share_phrase(const lp_diagnosis *d, char *buf) {
    double s = d->rise_share_mis;
    if (s > 1.005) snprintf(buf, 160, "all of the rise (%.0f%%: the correct images' loss fell meanwhile)", 100 * s);
    else snprintf(buf, 160, "%.0f%% of the rise", 100 * s);
    return buf;
}

static void make_headline(lp_diagnosis *d) {
    char buf[2048], a[32], b[32], c[32], e[32];
    if (d->L < 0 || !d->run.ep_finite[d->L]) {
        snprintf(buf, sizeof buf, "The predictions at epoch %d are not finite (NaN): the training diverged.", d->tl[d->tl_L].epoch);
    } else {
        const diag_epoch *eL = &d->tl[d->tl_L], *eB = &d->tl[d->tl_B];
        int n = d->run.n_img;
        bool rose = d->rise > 0.02 && d->rise > 0.1 * eB->val_loss;
        if (d->B != d->L && !rose) {
            snprintf(buf, sizeof buf, "val_loss at epoch %d is %s, close to its lowest (%s at epoch %d); accuracy %s; the %d misclassified "
                     "image%s carr%s %.0f%% of the loss.", eL->epoch, g3(a, eL->val_loss), g3(b, eB->val_loss), eB->epoch,
                     g3(c, eL->acc), eL->n_wrong, eL->n_wrong == 1 ? "" : "s", eL->n_wrong == 1 ? "ies" : "y", 100 * eL->share_wrong);
        } else if (d->B != d->L) {
            char acc[96];
            if (fabs(eL->acc - eB->acc) < 0.5 / n) snprintf(acc, sizeof acc, "accuracy stayed at %s", g3(a, eL->acc));
            else snprintf(acc, sizeof acc, "accuracy went %s -> %s", g3(a, eB->acc), g3(b, eL->acc));
            if (d->n_wrong_L > 0)
                snprintf(buf, sizeof buf,
                         "val_loss rose %s -> %s between epoch %d and epoch %d; %s comes from the %d misclassified "
                         "image%s, whose probability of their true class %s from %s to %s on average; %s.",
                         g3(b, eB->val_loss), g3(c, eL->val_loss), eB->epoch, eL->epoch, share_phrase(d, (char[160]){0}), d->n_wrong_L,
                         d->n_wrong_L == 1 ? "" : "s", d->p_true_mis_L < d->p_true_mis_B ? "fell" : "went",
                         g3(e, d->p_true_mis_B), g3((char[32]){0}, d->p_true_mis_L), acc);
            else
                snprintf(buf, sizeof buf, "val_loss rose %s -> %s between epoch %d and epoch %d although every image is classified correctly "
                         "(the correct predictions became less confident); %s.", g3(b, eB->val_loss), g3(c, eL->val_loss), eB->epoch, eL->epoch, acc);
        } else {
            snprintf(buf, sizeof buf, "val_loss is lowest at the analysed epoch %d (%s, accuracy %s); the %d misclassified image%s carr%s %.0f%% of it.",
                     eL->epoch, g3(a, eL->val_loss), g3(b, eL->acc), eL->n_wrong, eL->n_wrong == 1 ? "" : "s",
                     eL->n_wrong == 1 ? "ies" : "y", 100 * eL->share_wrong);
        }
    }
    d->headline = lp_strdup(buf);
}

lp_status lp_diagnose_run(const char *run_dir, const lp_diagnose_params *p, lp_diagnosis **out) {
    lp_clear_error();
    if (!out) return lp_fail(LP_ERR_ARG, "lp_diagnose_run: out is required (NULL given)");
    *out = NULL;
    if (!run_dir) return lp_fail(LP_ERR_ARG, "lp_diagnose_run: run_dir is NULL");
    lp_diagnosis *d = lp_calloc(1, sizeof *d);
    if (!d) return LP_ERR_NOMEM;
    d->params = p ? *p : lp_diagnose_default_params();
    if (d->params.max_images <= 0) d->params.max_images = 10;
    lp_status s = diag_run_load(run_dir, &d->run);
    if (s) {
        lp_diagnosis_free(d);
        return s;
    }
    diag_run *r = &d->run;
    int n = r->n_img, k = r->k;

    /* timeline: union of history and predicted epochs */
    d->tl = lp_calloc((size_t)(r->n_hist + r->n_ep), sizeof *d->tl);
    d->loss = lp_malloc((size_t)r->n_ep * n * sizeof *d->loss);
    d->pred = lp_malloc((size_t)r->n_ep * n * sizeof *d->pred);
    d->confusion = lp_calloc((size_t)k * k, sizeof *d->confusion);
    d->order = lp_malloc((size_t)n * sizeof *d->order);
    if (!d->tl || !d->loss || !d->pred || !d->confusion || !d->order) {
        lp_diagnosis_free(d);
        return LP_ERR_NOMEM;
    }
    for (int hi = 0, pi = 0; hi < r->n_hist || pi < r->n_ep;) {
        int eh = hi < r->n_hist ? r->hist[hi].epoch : 1 << 30, ep = pi < r->n_ep ? r->ep_num[pi] : 1 << 30;
        diag_epoch *t = &d->tl[d->n_tl++];
        t->epoch = eh < ep ? eh : ep;
        t->hist = eh == t->epoch ? hi++ : -1;
        t->pred = ep == t->epoch ? pi++ : -1;
        set_nan_figures(t);
    }
    int prev = -1;
    double max_gap = 0;
    int gap_epoch = 0;
    for (int t = 0; t < d->n_tl; t++) {
        diag_epoch *e = &d->tl[t];
        if (e->pred < 0 || !r->ep_finite[e->pred]) continue;
        epoch_figures(d, e->pred, e);
        if (prev >= 0) {
            for (int i = 0; i < n; i++) {
                int a = d->pred[(size_t)prev * n + i], b = d->pred[(size_t)e->pred * n + i];
                if (a != b) {
                    e->flips++;
                    if (a == r->labels[i]) e->to_wrong++;
                    else if (b == r->labels[i]) e->to_right++;
                }
            }
        }
        prev = e->pred;
        double hv = hist_val(d, t, 2), gap = fabs(hv - e->val_loss) - 1e-3 * fabs(hv);
        if (isfinite(hv) && gap > max_gap) max_gap = gap, gap_epoch = e->epoch;
    }
    if (max_gap > 1e-3)
        diag_note(r, "history.csv's val_loss differs from the loss recomputed from valid_predictions.csv by up to %.3g (epoch %d); "
                  "figures here use the recomputed one", max_gap, gap_epoch);

    /* analysed epoch */
    d->L = -1;
    if (d->params.epoch > 0) {
        for (int e = 0; e < r->n_ep; e++)
            if (r->ep_num[e] == d->params.epoch) d->L = e;
        if (d->L < 0) {
            s = lp_fail(LP_ERR_ARG, "%s: no predictions for epoch %d (valid_predictions.csv has epochs %d to %d)", run_dir,
                        d->params.epoch, r->ep_num[0], r->ep_num[r->n_ep - 1]);
            lp_diagnosis_free(d);
            return s;
        }
    } else {
        for (int e = r->n_ep - 1; e >= 0 && d->L < 0; e--)
            if (r->ep_finite[e]) d->L = e;
        if (d->L < 0) d->L = r->n_ep - 1;
        else if (d->L != r->n_ep - 1)
            diag_note(r, "epochs after %d have non-finite predictions; the analysis uses epoch %d", r->ep_num[d->L], r->ep_num[d->L]);
    }
    bool fin = r->ep_finite[d->L];
    /* best epochs up to L: lowest val_loss, highest accuracy (first on ties) */
    d->B = d->A = -1;
    for (int t = 0; t < d->n_tl; t++) {
        const diag_epoch *e = &d->tl[t];
        if (e->pred < 0 || e->pred > d->L || !r->ep_finite[e->pred]) continue;
        if (d->B < 0 || e->val_loss < d->tl[d->tl_B].val_loss) d->B = e->pred, d->tl_B = t;
        if (d->A < 0 || e->acc > d->tl[d->tl_A].acc) d->A = e->pred, d->tl_A = t;
    }
    for (int t = 0; t < d->n_tl; t++)
        if (d->tl[t].pred == d->L) d->tl_L = t;
    if (d->B < 0) d->B = d->A = d->L, d->tl_B = d->tl_A = d->tl_L;

    d->rise = d->rise_share_mis = d->p_true_mis_B = d->p_true_mis_L = d->conf_wrong_B = NAN;
    d->ece = d->mce = d->brier = d->nll = d->T = d->ece_c = d->mce_c = d->brier_c = d->nll_c = NAN;
    d->ci_lo = 0, d->ci_hi = 1;
    if (fin) {
        const double *P = r->probs + (size_t)d->L * n * k;
        /* decomposition between the best epoch and the analysed one */
        d->rise = d->tl[d->tl_L].val_loss - d->tl[d->tl_B].val_loss;
        double delta_mis = 0, ptb = 0, ptl = 0, cwb = 0;
        for (int i = 0; i < n; i++) {
            if (d->pred[(size_t)d->L * n + i] == r->labels[i]) continue;
            d->n_wrong_L++;
            if (d->pred[(size_t)d->B * n + i] != r->labels[i]) d->n_wrong_L_also_B++;
            delta_mis += d->loss[(size_t)d->L * n + i] - d->loss[(size_t)d->B * n + i];
            ptb += diag_p_true(d, d->B, i);
            ptl += diag_p_true(d, d->L, i);
            double mx = 0;
            for (int c = 0; c < k; c++)
                if (c != r->labels[i]) mx = fmax(mx, diag_p(d, d->B, i, c));
            cwb += mx;
        }
        if (d->rise > 0) d->rise_share_mis = delta_mis / (n * d->rise);
        if (d->n_wrong_L) {
            d->p_true_mis_B = ptb / d->n_wrong_L;
            d->p_true_mis_L = ptl / d->n_wrong_L;
            d->conf_wrong_B = cwb / d->n_wrong_L;
        }
        /* calibration and temperature scaling */
        lp_diag_calibration(P, r->labels, n, k, LP_DIAG_ECE_BINS, &d->ece, &d->mce, d->bins);
        d->brier = lp_diag_brier(P, r->labels, n, k);
        d->nll = lp_diag_nll(P, r->labels, n, k);
        d->T = lp_diag_fit_temperature(P, r->labels, n, k, &d->T_at_bound);
        double *Q = lp_malloc((size_t)n * k * sizeof *Q);
        if (!Q) {
            lp_diagnosis_free(d);
            return LP_ERR_NOMEM;
        }
        lp_diag_apply_temperature(P, n, k, d->T, Q);
        lp_diag_calibration(Q, r->labels, n, k, LP_DIAG_ECE_BINS, &d->ece_c, &d->mce_c, d->bins_c);
        d->brier_c = lp_diag_brier(Q, r->labels, n, k);
        d->nll_c = lp_diag_nll(Q, r->labels, n, k);
        free(Q);
        /* T < 1 at the bound: every image right (sharper is always better), or probabilities so
         * near uniform that sharpening them by 100 still lowers the loss; not a calibration */
        if (d->T_at_bound)
            diag_note(r, "the temperature fit stopped at its bound (T = %g): %s", d->T,
                      d->T >= 1 ? "the predictions carry no information"
                      : d->n_wrong_L == 0
                          ? "every image is classified correctly, so sharper is always better"
                          : "the probabilities are so close to uniform that sharpening keeps lowering the loss; T says "
                            "little here, and applying it is not advised");
        for (int i = 0; i < n; i++) {
            const double *row = P + (size_t)i * k;
            int pr = d->pred[(size_t)d->L * n + i], m = 0;
            while (m < LP_DIAG_ECE_BINS - 1 && row[pr] > (double)(m + 1) / LP_DIAG_ECE_BINS) m++;
            if (pr == r->labels[i]) d->hist_correct[m]++;
            else d->hist_wrong[m]++;
            d->confusion[r->labels[i] * k + pr]++;
        }
        lp_diag_wilson(n - d->n_wrong_L, n, &d->ci_lo, &d->ci_hi);
        if (order_images(d)) {
            lp_diagnosis_free(d);
            return LP_ERR_NOMEM;
        }
    }
    early_stopping_whatif(d);
    make_headline(d);
    verdict_preprocessing(d);
    verdict_bn_small_batch(d);
    verdict_bn_mode_gap(d);
    verdict_lr(d);
    verdicts_predictions(d);
    if (!d->headline) {
        lp_diagnosis_free(d);
        return LP_ERR_NOMEM;
    }
    *out = d;
    return LP_OK;
}

double lp_diagnosis_temperature(const lp_diagnosis *d) { return d ? d->T : NAN; }

double lp_diagnosis_temperature_at(const lp_diagnosis *d, int epoch) {
    if (!d) return NAN;
    const diag_run *r = &d->run;
    for (int e = 0; e < r->n_ep; e++)
        if (r->ep_num[e] == epoch && r->ep_finite[e]) {
            int at_bound;
            const double T = lp_diag_fit_temperature(r->probs + (size_t)e * r->n_img * r->k, r->labels, r->n_img, r->k, &at_bound);
            return at_bound ? NAN : T; /* a bound is where the search stopped, not a calibration */
        }
    return NAN;
}

int lp_diagnosis_monitor_best_epoch(const lp_diagnosis *d) {
    if (!d) return 0;
    bool acc = d->run.cfg.monitor && !strcmp(d->run.cfg.monitor, "val_accuracy");
    double best = acc ? -INFINITY : INFINITY;
    int epoch = 0;
    for (int t = 0; t < d->n_tl; t++) {
        const diag_epoch *e = &d->tl[t];
        double v = hist_val(d, t, acc ? 3 : 2);
        if (!isfinite(v) && e->pred >= 0) v = acc ? e->acc : e->val_loss;
        if (isfinite(v) && (acc ? v > best : v < best)) best = v, epoch = e->epoch;
    }
    return epoch;
}

int lp_diagnosis_last_epoch(const lp_diagnosis *d) {
    return d && d->run.n_ep ? d->run.ep_num[d->run.n_ep - 1] : 0;
}
int lp_diagnosis_verdict_count(const lp_diagnosis *d) { return d ? d->n_verdicts : 0; }
const char *lp_diagnosis_verdict_id(const lp_diagnosis *d, int i) {
    return d && i >= 0 && i < d->n_verdicts ? d->verdicts[i].id : NULL;
}
const char *lp_diagnosis_run_dir(const lp_diagnosis *d) { return d ? d->run.dir : NULL; }

void lp_diagnosis_free(lp_diagnosis *d) {
    if (!d) return;
    diag_run_free(&d->run);
    free(d->tl), free(d->loss), free(d->pred), free(d->confusion), free(d->order), free(d->headline);
    for (int i = 0; i < d->n_verdicts; i++) {
        free(d->verdicts[i].message);
        cJSON_Delete(d->verdicts[i].evidence);
    }
    free(d);
}
