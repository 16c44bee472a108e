/* The fit loop: Keras' fit() with ModelCheckpoint, EarlyStopping,
 * ReduceLROnPlateau, LR schedules, CSV and TensorBoard logs, and --resume that
 * reproduces an uninterrupted run bit for bit (same thread count).
 *
 * NaN/Inf (on_nan): "stop" fails at the first non-finite training loss (the
 * last good checkpoint stays). "skip" leaves out a training batch whose loss
 * is non-finite or, checked before the optimizer step (like PyTorch AMP's
 * GradScaler), whose gradients hold a NaN/Inf: weights, optimizer state and
 * global_step (dropout streams) unchanged, batch not in the epoch's loss and
 * accuracy. One warning line per epoch; the total goes to run.json
 * (skipped_nan_batches) and, for --resume, to the train state. An epoch with
 * every batch skipped, or a non-finite validation loss, stops as "stop" does.
 *
 * Test hooks (core/test_hooks.h: nan_input, nan_loss, nan_grad; only with
 * on_nan "skip", never installed outside tests) poison chosen batches for
 * tests/reliability/test_nan_skip.py. A NaN first pixel (nan_input) goes
 * through the real engine; its forward drops the NaN before the logits, so
 * only a trainable first layer shows it, in its weight gradient. */
#include "core/test_hooks.h"
#include "diag/diag.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "log/csv.h"
#include "log/progress.h"
#include "nn/optim.h"
#include "train/fit_internal.h"
#include "train/metrics.h"
#include "train/train.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop_requested = 0;
void lp_train_request_stop(void) { g_stop_requested = 1; }

lp_train_params lp_train_default_params(void) {
    lp_train_params p;
    memset(&p, 0, sizeof p);
    p.model = "vgg16";
    p.top = "keep";
    p.head = "flatten,dense";
    p.height = p.width = 224;
    p.preprocess = "auto";
    p.interpolation = "nearest";
    p.color_mode = "rgb";
    p.epochs = 10;
    p.batch = 32;
    p.optimizer = "sgd";
    p.freeze = "none";
    p.seed = 1;
    p.shuffle = 1;
    p.monitor = "val_loss";
    p.schedule = "constant";
    p.on_nan = "stop";
    p.tensorboard = 1;
    p.cache_features = 1;
    p.precision = "fp32";
    p.conv_algo = "auto";
    p.bn = "auto";
    p.verbose = 1;
    return p;
}

/* Stream ids for the counter-based RNG, so no two uses share numbers. */
enum { STREAM_DROPOUT = 0x100 };

#define say lp_fit_say

static lp_status check_params(const lp_train_params *p) {
    if (!p->data_dir || !*p->data_dir) return lp_fail(LP_ERR_ARG, "no data folder given");
    if (!p->run_dir || !*p->run_dir) return lp_fail(LP_ERR_ARG, "no run folder given (--run RUN)");
    if (p->epochs < 1) return lp_fail(LP_ERR_ARG, "epochs must be at least 1 (got %d)", p->epochs);
    if (p->batch < 1) return lp_fail(LP_ERR_ARG, "batch must be at least 1 (got %d)", p->batch);
    if (p->height < 32 || p->width < 32)
        return lp_fail(LP_ERR_ARG, "input size %dx%d is too small: loupe's models need at least 32x32", p->width, p->height);
    if (p->steps_per_epoch < 0 || p->validation_steps < 0) return lp_fail(LP_ERR_ARG, "steps must not be negative");
    static const char *const models[] = {"vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "mobilenet_v2", "efficientnet_b0", "tiny"};
    bool known = false;
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) known |= !strcmp(p->model, models[i]);
    if (!known) return lp_fail(LP_ERR_ARG, "unknown model '%s' (vgg16, vgg19, resnet18, resnet34, resnet50, mobilenet_v2, efficientnet_b0 or tiny)", p->model);
    lp_bn_mode_cfg bn;
    if (!lp_bn_mode_parse(p->bn, &bn)) return lp_fail(LP_ERR_ARG, "unknown batch norm mode '%s' (auto, train or frozen)", p->bn);
    if (strcmp(p->top, "keep") && strcmp(p->top, "none")) return lp_fail(LP_ERR_ARG, "unknown top '%s' (keep or none)", p->top);
    if (strcmp(p->optimizer, "sgd") && strcmp(p->optimizer, "adam") && strcmp(p->optimizer, "adamw"))
        return lp_fail(LP_ERR_ARG, "unknown optimizer '%s' (sgd, adam or adamw)", p->optimizer);
    if (strcmp(p->monitor, "val_loss") && strcmp(p->monitor, "val_accuracy"))
        return lp_fail(LP_ERR_ARG, "unknown monitor '%s' (val_loss or val_accuracy)", p->monitor);
    if (p->lr < 0 || p->momentum < 0 || p->momentum >= 1 || p->weight_decay < 0)
        return lp_fail(LP_ERR_ARG, "lr, momentum (< 1) and weight decay must not be negative");
    if (p->reduce_lr_factor < 0 || p->reduce_lr_factor >= 1)
        return lp_fail(LP_ERR_ARG, "reduce-lr factor must be in (0, 1) (got %g)", p->reduce_lr_factor);
    if (p->nesterov && (p->momentum <= 0 || strcmp(p->optimizer, "sgd")))
        return lp_fail(LP_ERR_ARG, "--nesterov needs --optimizer sgd with --momentum > 0");
    if (strcmp(p->color_mode, "rgb") && strcmp(p->color_mode, "grayscale"))
        return lp_fail(LP_ERR_ARG, "unknown color mode '%s' (rgb or grayscale)", p->color_mode);
    lp_schedule sch;
    if (!lp_schedule_parse(p->schedule, &sch))
        return lp_fail(LP_ERR_ARG, "bad schedule '%s' (constant, step:EPOCHS:GAMMA or cosine)", p->schedule);
    lp_precision prec;
    if (!lp_precision_parse(p->precision, &prec))
        return lp_fail(LP_ERR_ARG, "unknown precision '%s' (fp32, bf16 or auto)", p->precision);
    lp_conv_algo ca;
    if (p->conv_algo && !lp_conv_algo_parse(p->conv_algo, &ca))
        return lp_fail(LP_ERR_ARG, "unknown convolution algorithm '%s' (auto, direct or winograd)", p->conv_algo);
    if (p->on_nan && strcmp(p->on_nan, "stop") && strcmp(p->on_nan, "skip"))
        return lp_fail(LP_ERR_ARG, "unknown --on-nan '%s' (stop or skip)", p->on_nan);
    if (p->validation_split < 0 || p->validation_split >= 1)
        return lp_fail(LP_ERR_ARG, "validation split must be in [0, 1) (got %g)", p->validation_split);
    return LP_OK;
}

/* ---- one validation pass ------------------------------------------------ */
/* One row of valid_predictions.csv: the epoch, the image, its label, its probabilities. */
static lp_status prediction_row(lp_fit *f, int epoch, const lp_sample *smp, int label, const float *pr) {
    lp_csv_printf(f->pred_csv, "%d,", epoch);
    lp_csv_write_field(f->pred_csv, smp->relpath);
    lp_csv_printf(f->pred_csv, ",%d", label);
    for (int c = 0; c < f->num_classes; c++) lp_csv_printf(f->pred_csv, ",%.9g", pr[c]);
    return lp_csv_printf(f->pred_csv, "\n");
}

static lp_status validate(lp_fit *f, int epoch, double *val_loss, double *val_acc) {
    *val_loss = NAN;
    *val_acc = NAN;
    if (!f->valid_loader) return LP_OK;
    lp_status s = lp_loader_seek(f->valid_loader, 0, 0);
    if (s) return s;
    const int steps = lp_loader_batches_per_pass(f->valid_loader); /* --validation-steps: the setup sampled valid/ */
    int k = f->num_classes, n_total = 0;
    double loss_sum = 0;
    int correct = 0;
    const bool dist = f->dist.size > 1;
    if (dist) memset(f->val_probs, 0, sizeof(float) * (size_t)f->valid->num_samples * k);
    for (int b = 0; b < steps; b++) {
        lp_batch bt;
        if ((s = lp_loader_next(f->valid_loader, &bt))) return s;
        if (bt.n == 0) continue; /* an empty slice (data-parallel) */
        if ((s = lp_fit_forward_eval(f, &bt, f->logits))) return s;
        float mean;
        if ((s = lp_net_loss(f->net, bt.labels, bt.n, f->sample_loss, f->probs, &mean))) return s;
        for (int i = 0; i < bt.n; i++) {
            const float *pr = f->probs + (size_t)i * k;
            correct += lp_probs_argmax(pr, k) == bt.labels[i];
            loss_sum += f->sample_loss[i];
            const int at = dist ? bt.indices[i] : n_total; /* data-parallel: the sample's own place */
            memcpy(f->val_probs + (size_t)at * k, pr, (size_t)k * sizeof(float));
            f->val_labels[at] = bt.labels[i];
            n_total++;
            if (f->pred_csv && !dist && (s = prediction_row(f, epoch, &f->valid->samples[bt.indices[i]], bt.labels[i], pr))) return s;
        }
    }
    if (dist) {
        /* each rank validated its slice of every batch: sums and the table over all (the
         * loader does not shuffle, so a sample's place in the table is its index) */
        double sums[3] = {loss_sum, (double)correct, (double)n_total};
        if ((s = lp_dist_sum_f64(&f->dist, sums, 3))) return s;
        loss_sum = sums[0], correct = (int)sums[1], n_total = (int)sums[2];
        if ((s = lp_dist_sum_f32(&f->dist, f->val_probs, (size_t)n_total * k))) return s;
        for (int i = 0; i < n_total; i++) f->val_labels[i] = f->valid->samples[i].label;
        for (int i = 0; f->pred_csv && i < n_total; i++)
            if ((s = prediction_row(f, epoch, &f->valid->samples[i], f->val_labels[i], f->val_probs + (size_t)i * k))) return s;
    }
    f->val_count = n_total;
    if (n_total > 0) {
        *val_loss = loss_sum / n_total;
        *val_acc = (double)correct / n_total;
    }
    /* an image's loss past float's range (finite in double, where lp_net_loss checks it) */
    if (n_total > 0 && !isfinite(*val_loss)) return lp_fail(LP_ERR_NUMERIC, "validation loss is %g", *val_loss);
    return LP_OK;
}

/* ---- checkpoints ---------------------------------------------------------- */
static lp_status save_checkpoint(lp_fit *f, const char *name, bool with_state) {
    if (!lp_fit_writer(f)) return LP_OK;
    char *path = lp_path_join(f->ckpt_dir, name);
    if (!path) return LP_ERR_NOMEM;
    lp_tensor_list extra, meta;
    lp_tensor_list_init(&extra);
    lp_tensor_list_init(&meta);
    lp_status s = lp_fit_fill_meta(f, &meta);
    if (!s && with_state) {
        char *js = lp_train_state_to_json(&f->st);
        if (!js) s = lp_fail(LP_ERR_NOMEM, "out of memory");
        else {
            s = lp_tensor_list_set_meta(&meta, "train_state", js);
            free(js);
        }
        if (!s) s = lp_optim_state_dict(f->opt, &extra);
    }
    if (!s) s = lp_checkpoint_save(path, f->net, with_state ? &extra : NULL, &meta);
    lp_tensor_list_free(&extra);
    lp_tensor_list_free(&meta);
    free(path);
    return s;
}

static lp_status restore_weights(lp_fit *f, const char *name) {
    char *path = lp_path_join(f->ckpt_dir, name);
    if (!path) return LP_ERR_NOMEM;
    lp_tensor_list all;
    lp_tensor_list_init(&all);
    lp_status s = lp_safetensors_read(path, &all);
    if (!s) s = lp_fit_load_net_tensors(f, &all);
    lp_tensor_list_free(&all);
    free(path);
    return s;
}

/* ---- --on-nan skip ----------------------------------------------------------- */
/* run.json, written by the setup, read, changed by edit (ctx its argument) and written
 * back atomically. */
static lp_status edit_run_json(lp_fit *f, void (*edit)(cJSON *root, const void *ctx), const void *ctx) {
    char *path = lp_path_join(f->p.run_dir, "run.json");
    if (!path) return LP_ERR_NOMEM;
    uint8_t *data = NULL;
    size_t n = 0;
    lp_status s = lp_read_file(path, &data, &n);
    cJSON *root = s ? NULL : cJSON_ParseWithLength((const char *)data, n);
    free(data);
    if (!s && !root) s = lp_fail(LP_ERR_FORMAT, "%s: not valid JSON: the run folder is damaged; start a new --run folder", path);
    char *txt = NULL;
    if (!s) {
        edit(root, ctx);
        if (!(txt = cJSON_Print(root))) s = lp_fail(LP_ERR_NOMEM, "out of memory");
    }
    if (!s) s = lp_write_file_atomic(path, txt, strlen(txt));
    cJSON_Delete(root);
    free(txt);
    free(path);
    return s;
}

/* What a run that stops on NaN leaves: its last checkpoint, or none yet. */
static const char *kept_checkpoint(const lp_fit *f) {
    char *last = lp_path_join(f->ckpt_dir, "last.safetensors");
    const bool have = last && lp_path_exists(last);
    free(last);
    return have ? "the last good checkpoint is kept" : "no checkpoint was saved before it";
}

/* config.on_nan and the skipped total. */
static void set_skipped(cJSON *root, const void *ctx) {
    const lp_fit *f = ctx;
    cJSON *cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
    if (cJSON_IsObject(cfg)) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, "on_nan");
        cJSON_AddStringToObject(cfg, "on_nan", f->p.on_nan);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(root, "skipped_nan_batches");
    cJSON_AddNumberToObject(root, "skipped_nan_batches", (double)f->st.nan_skipped);
}
static lp_status note_skipped_in_run_json(lp_fit *f) { return edit_run_json(f, set_skipped, f); }

/* --on-nan skip: the epoch's skipped batches, said and added to run.json (where the epoch
 * ends, or where its validation failed). */
static lp_status report_skipped(lp_fit *f, int epoch, int steps) {
    if (f->out)
        fprintf(f->out, "WARNING: epoch %d: skipped %d of %d training batches with a NaN/Inf loss or gradient (--on-nan skip)\n",
                epoch, f->st.nan_skipped_epoch, steps);
    return note_skipped_in_run_json(f);
}

typedef struct bn_check {
    int epoch, images;
    double acc_train_mode, acc, loss;
} bn_check;

static void set_bn_check(cJSON *root, const void *ctx) {
    const bn_check *b = ctx;
    cJSON_DeleteItemFromObjectCaseSensitive(root, "bn_check");
    cJSON *o = cJSON_AddObjectToObject(root, "bn_check");
    cJSON_AddNumberToObject(o, "epoch", b->epoch);
    cJSON_AddNumberToObject(o, "images", b->images);
    cJSON_AddNumberToObject(o, "train_accuracy_train_mode", b->acc_train_mode);
    cJSON_AddNumberToObject(o, "train_accuracy_inference_mode", b->acc);
    cJSON_AddNumberToObject(o, "train_loss_inference_mode", b->loss);
}

/* Batch norm on the batch's statistics: once training ends, the training images once more
 * in inference mode (the running statistics that evaluation and prediction use; no
 * augmentation), next to the last epoch's training accuracy (measured in training mode),
 * into run.json's bn_check for diagnose (batchnorm_mode_gap). */
static lp_status bn_mode_check(lp_fit *f, int epoch, double acc_train_mode) {
    if (lp_net_bn_batch_stats_layers(f->net, NULL) == 0 || !f->train || f->train->num_samples == 0) return LP_OK;
    lp_loader *ld;
    lp_status s = lp_fit_make_loader(f, f->train, false, &ld);
    if (s) return s;
    const int k = f->num_classes, steps = lp_loader_batches_per_pass(ld);
    int n = 0, correct = 0;
    double loss_sum = 0;
    for (int b = 0; b < steps && !s; b++) {
        lp_batch bt;
        float mean;
        if ((s = lp_loader_next(ld, &bt)) || bt.n == 0) continue;
        if ((s = lp_net_forward(f->net, bt.x, bt.n, false, 0, f->logits)) ||
            (s = lp_net_loss(f->net, bt.labels, bt.n, f->sample_loss, f->probs, &mean)))
            break;
        for (int i = 0; i < bt.n; i++, n++) {
            const float *pr = f->probs + (size_t)i * k;
            correct += lp_probs_argmax(pr, k) == bt.labels[i];
            loss_sum += f->sample_loss[i];
        }
    }
    lp_loader_free(ld);
    if (s) return s;
    double sums[3] = {(double)n, (double)correct, loss_sum}; /* data-parallel: each rank checked its slices */
    if ((s = lp_dist_sum_f64(&f->dist, sums, 3))) return s;
    n = (int)sums[0], correct = (int)sums[1], loss_sum = sums[2];
    if (n == 0) return LP_OK;
    const bn_check check = {epoch, n, acc_train_mode, (double)correct / n, loss_sum / n};
    say(f, "Batch norm check: training accuracy %.4f in training mode (epoch %d, batch statistics), %.4f with the running "
           "statistics\n", acc_train_mode, epoch, check.acc);
    return lp_fit_writer(f) ? edit_run_json(f, set_bn_check, &check) : LP_OK;
}

typedef struct nan_hooks {
    const char *input, *loss, *grad; /* lp_test_hooks' nan_input / nan_loss / nan_grad; NULL: off */
} nan_hooks;

/* Does the batch hold an image whose relative path contains pat? */
static bool batch_has(const lp_fit *f, const lp_batch *bt, const char *pat) {
    for (int i = 0; pat && i < bt->n; i++)
        if (strstr(f->train->samples[bt->indices[i]].relpath, pat)) return true;
    return false;
}

static void poison_input(const lp_fit *f, const lp_batch *bt, const char *pat) {
    size_t per = (size_t)f->channels * (size_t)f->p.height * (size_t)f->p.width; /* floats per image */
    for (int i = 0; pat && i < bt->n; i++)
        if (strstr(f->train->samples[bt->indices[i]].relpath, pat)) bt->x[(size_t)i * per] = NAN;
}

/* One training step with --on-nan skip. *skipped: the batch was left out
 * (non-finite loss or gradient); the step is applied otherwise. */
static lp_status train_step_or_skip(lp_fit *f, const lp_batch *bt, uint64_t dseed, float lr, const nan_hooks *h,
                                    float *mean, bool *skipped) {
    *skipped = false;
    lp_status s = lp_fit_train_backward(f, bt, dseed, mean);
    if (!s && batch_has(f, bt, h->loss)) *mean = NAN;
    if (s == LP_ERR_NUMERIC || (!s && !isfinite(*mean))) {
        lp_clear_error();
        *skipped = true;
        return LP_OK;
    }
    if (s) return s;
    if (batch_has(f, bt, h->grad)) lp_net_grad(f->net, lp_net_param_count(f->net) - 1)[0] = NAN;
    if (!lp_net_grads_finite(f->net)) {
        *skipped = true;
        return LP_OK;
    }
    return lp_optim_step(f->opt, lr);
}

/* ---- the loop ------------------------------------------------------------- */
static lp_status run_epochs(lp_fit *f, lp_epoch_callback cb, void *user) {
    const lp_train_params *p = &f->p;
    lp_status s = LP_OK;
    int k = f->num_classes;
    int per_pass = lp_loader_batches_per_pass(f->train_loader);
    int steps = p->steps_per_epoch > 0 ? p->steps_per_epoch : per_pass;
    lp_schedule sched;
    lp_schedule_parse(p->schedule, &sched);
    bool maximize = !strcmp(p->monitor, "val_accuracy") && f->valid; /* without validation: the training loss, minimised */
    bool skip_nan = p->on_nan && !strcmp(p->on_nan, "skip");
    nan_hooks hooks = {NULL, NULL, NULL};
    if (skip_nan) {
        const lp_test_hooks *th = lp_test_hooks_active;
        if (th) hooks = (nan_hooks){th->nan_input, th->nan_loss, th->nan_grad};
        if ((s = note_skipped_in_run_json(f))) return s;
    }

    int last_epoch = 0;
    double last_acc = NAN;
    if (f->st.epochs_done >= p->epochs && f->st.step_in_epoch == 0)
        say(f, "Nothing to train: %s has %d epoch%s done, --epochs is %d; raise --epochs to continue it.\n", p->run_dir,
            f->st.epochs_done, f->st.epochs_done > 1 ? "s" : "", p->epochs);
    else if (f->st.epochs_done >= p->epochs) /* stopped inside the epoch after the last one asked for */
        say(f, "Nothing to train: %s stopped at epoch %d step %d, --epochs is %d; pass --epochs %d or more to finish "
            "that epoch.\n", p->run_dir, f->st.epochs_done + 1, f->st.step_in_epoch, p->epochs, f->st.epochs_done + 1);
    for (int epoch = f->st.epochs_done + 1; epoch <= p->epochs; epoch++) {
        double t0 = lp_now();
        bool mid = f->st.step_in_epoch > 0;
        if (!mid) {
            if (p->reduce_lr_factor <= 0) f->st.lr = lp_schedule_lr(&sched, f->base_lr, epoch - 1, p->epochs);
            f->st.loss_sum = f->st.correct = f->st.seen = 0;
            f->st.nan_skipped_epoch = 0;
        }
        say(f, "Epoch %d/%d\n", epoch, p->epochs);
        lp_progress prog;
        lp_progress_begin(&prog, p->verbose ? f->out : NULL, steps);
        if ((s = lp_loader_seek(f->train_loader, f->st.loader_pass, f->st.loader_batch))) return s;
        for (int step = f->st.step_in_epoch; step < steps; step++) {
            lp_batch bt;
            if ((s = lp_loader_next(f->train_loader, &bt))) return s;
            uint64_t dseed = lp_rng_u64(p->seed, STREAM_DROPOUT, (uint64_t)f->st.global_step);
            float mean = NAN;
            bool skipped = false;
            if (skip_nan) {
                poison_input(f, &bt, hooks.input);
                s = train_step_or_skip(f, &bt, dseed, (float)f->st.lr, &hooks, &mean, &skipped);
                if (s == LP_ERR_NUMERIC) /* finite loss and gradients, but the update itself overflowed */
                    return lp_fail(LP_ERR_NUMERIC,
                                   "the update of epoch %d step %d made the weights NaN/Inf: training diverged; %s (try a "
                                   "smaller --lr)", epoch, step + 1, kept_checkpoint(f));
                if (s) return s;
            } else {
                /* lp_net_loss fails on a non-finite loss (before any update), lp_optim_step on
                 * weights the update made non-finite (after it; training stops either way) */
                /* the epoch's gradient histograms read the last step's gradients */
                const bool keep_grads = f->tb && p->histogram_freq > 0 && epoch % p->histogram_freq == 0 && step == steps - 1;
                if ((s = lp_fit_train_step(f, &bt, dseed, (float)f->st.lr, keep_grads, &mean)) && s != LP_ERR_NUMERIC)
                    return s;
                if (s == LP_ERR_NUMERIC && isfinite(mean))
                    return lp_fail(LP_ERR_NUMERIC,
                                   "the update of epoch %d step %d made the weights NaN/Inf: training diverged; %s (try a "
                                   "smaller --lr)", epoch, step + 1, kept_checkpoint(f));
                if (s == LP_ERR_NUMERIC || !isfinite(mean)) {
                    return lp_fail(LP_ERR_NUMERIC,
                                   "loss is %g at epoch %d step %d: training diverged; %s (try a smaller --lr, or --on-nan "
                                   "skip)", (double)mean, epoch, step + 1, kept_checkpoint(f));
                }
            }
            bool stop = g_stop_requested;
            if (skipped) {
                f->st.nan_skipped++;
                f->st.nan_skipped_epoch++;
            } else {
                /* data-parallel: the step's figures over all ranks, and one decision on Ctrl-C */
                double sums[4] = {(double)mean * bt.n, 0.0, (double)bt.n, stop ? 1.0 : 0.0};
                for (int i = 0; i < bt.n; i++) sums[1] += lp_probs_argmax(f->probs + (size_t)i * k, k) == bt.labels[i];
                if ((s = lp_dist_sum_f64(&f->dist, sums, 4))) return s;
                f->st.correct += sums[1];
                f->st.loss_sum += sums[0];
                f->st.seen += sums[2];
                if (f->dist.size > 1) stop = sums[3] > 0, mean = (float)(sums[0] / sums[2]);
                f->st.global_step++;
            }
            lp_loader_position(f->train_loader, &f->st.loader_pass, &f->st.loader_batch);
            f->st.step_in_epoch = step + 1;
            if (!skipped && f->tb && p->batch_log_freq > 0 && f->st.global_step % p->batch_log_freq == 0)
                lp_fit_tb_batch(f, mean);
            if (f->st.seen > 0)
                lp_progress_update(&prog, step + 1, f->st.loss_sum / f->st.seen, f->st.correct / f->st.seen);
            if (stop && step + 1 < steps) {
                if (p->verbose && f->out) fputc('\n', f->out);
                say(f, "Interrupted: saving %s/last.safetensors (epoch %d, step %d of %d)\n", f->ckpt_dir, epoch,
                    step + 1, steps);
                f->st.epochs_done = epoch - 1;
                if ((s = save_checkpoint(f, "last.safetensors", true))) return s;
                return lp_fail(LP_ERR_INTERRUPTED, "interrupted at epoch %d step %d; continue with --resume", epoch,
                               step + 1);
            }
        }
        if (f->st.nan_skipped_epoch > 0 && f->st.seen == 0) {
            if (p->verbose && f->out) fputc('\n', f->out);
            lp_status w = note_skipped_in_run_json(f);
            if (w) return w;
            return lp_fail(LP_ERR_NUMERIC,
                           "all %d training batches of epoch %d had a NaN/Inf loss or gradient (--on-nan skip): training "
                           "diverged; %s (try a smaller --lr)", f->st.nan_skipped_epoch, epoch, kept_checkpoint(f));
        }
        double loss = f->st.loss_sum / f->st.seen, acc = f->st.correct / f->st.seen;
        last_epoch = epoch, last_acc = acc;
        double val_loss, val_acc;
        if ((s = validate(f, epoch, &val_loss, &val_acc))) {
            if (s == LP_ERR_NUMERIC) {
                lp_fail_context(s, "validation of epoch %d: training diverged; %s (try a smaller --lr)", epoch,
                                kept_checkpoint(f));
                /* the batches skipped before it still count (a successful update leaves the message) */
                if (f->st.nan_skipped_epoch > 0) {
                    if (p->verbose && f->out) fputc('\n', f->out);
                    lp_status w = report_skipped(f, epoch, steps);
                    if (w) return w;
                }
            }
            return s;
        }
        double lr_used = f->st.lr;
        char extra[256];
        if (f->valid_loader) snprintf(extra, sizeof extra, " - val_loss: %.4f - val_accuracy: %.4f", val_loss, val_acc);
        else extra[0] = 0;
        lp_progress_end(&prog, steps, loss, acc, extra);
        if (f->st.nan_skipped_epoch > 0 && (s = report_skipped(f, epoch, steps))) return s;

        /* Logs first: a finished epoch is on disk before its checkpoint. */
        if (f->hist_csv && (s = lp_csv_printf(f->hist_csv, "%d,%.9g,%.9g,%.9g,%.9g,%.9g\n", epoch, loss, acc, val_loss, val_acc,
                                              lr_used)))
            return s;
        if (f->hist_csv && (s = lp_csv_sync(f->hist_csv))) return s;
        if (f->pred_csv && (s = lp_csv_sync(f->pred_csv))) return s;
        if (f->tb && (s = lp_fit_tb_epoch(f, epoch, loss, acc, val_loss, val_acc, lr_used))) return s;

        /* ModelCheckpoint(save_best_only) on the monitored figure. */
        double mval = f->valid_loader ? (maximize ? val_acc : val_loss) : loss;
        double prev = f->st.monitor.best;
        f->st.epochs_done = epoch; /* the checkpoints below hold this epoch's weights */
        f->st.step_in_epoch = 0;
        bool improved = lp_monitor_update(&f->st.monitor, mval, epoch);
        if (improved) {
            if ((s = save_checkpoint(f, "best.safetensors", false))) return s;
            if (epoch == 1 || isinf(prev))
                say(f, "Epoch %d: %s improved from %s to %.5f, saving model to %s/best.safetensors\n", epoch, f->monitor_name,
                    maximize ? "-inf" : "inf", mval, f->ckpt_dir);
            else
                say(f, "Epoch %d: %s improved from %.5f to %.5f, saving model to %s/best.safetensors\n", epoch,
                    f->monitor_name, prev, mval, f->ckpt_dir);
        } else {
            say(f, "Epoch %d: %s did not improve from %.5f\n", epoch, f->monitor_name, f->st.monitor.best);
        }
        bool stop = lp_early_stop_update(&f->st.early, mval, epoch);
        double new_lr = lp_reduce_lr_update(&f->st.reduce, mval, f->st.lr);
        if (f->dist.size > 1) {
            /* rank 0's decisions and model for everyone (the figures are the same sums on every
             * rank; this makes the outcome not depend on it), after its checkpoints are written */
            double d[3] = {stop, new_lr, g_stop_requested};
            if ((s = lp_dist_bcast(&f->dist, d, sizeof d)) || (s = lp_fit_bcast_model(f))) return s;
            stop = d[0] != 0, new_lr = d[1], g_stop_requested = d[2] != 0;
        }
        if (new_lr != f->st.lr) {
            say(f, "Epoch %d: ReduceLROnPlateau reducing learning rate to %g.\n", epoch, new_lr);
            f->st.lr = new_lr;
        }
        if ((s = save_checkpoint(f, "last.safetensors", true))) return s;

        lp_epoch_result r = {epoch, loss, acc, val_loss, val_acc, lr_used, lp_now() - t0, improved};
        if (cb && cb(&r, user)) {
            say(f, "Stopped by the epoch callback after epoch %d.\n", epoch);
            break;
        }
        if (stop) {
            say(f, "Epoch %d: early stopping (no improvement of %s for %d epochs; best %.5f at epoch %d)\n", epoch,
                f->monitor_name, f->st.early.patience, f->st.early.best, f->st.early.best_epoch);
            break;
        }
        if (g_stop_requested) {
            return lp_fail(LP_ERR_INTERRUPTED, "interrupted after epoch %d; continue with --resume", epoch);
        }
    }
    if (f->dist_steps > 0) {
        /* ring allreduce: each rank sends 2 (N - 1) / N of the gradients' bytes a step */
        const double mb = f->dist_bytes / f->dist_steps / 1e6, n = f->dist.size;
        say(f, "Data-parallel: %.1f MB of gradients summed a step (%.1f MB sent by each process in a ring); a step %.1f ms, "
               "the sums running %.1f ms of it (from the first start, as backward completes it, to the last end) of which "
               "%.1f ms after backward (rank 0; waiting for the slower process included)\n",
            mb, mb * 2 * (n - 1) / n, 1e3 * f->dist_step_s / f->dist_steps, 1e3 * f->dist_span_s / f->dist_steps,
            1e3 * f->dist_comm_s / f->dist_steps);
    }
    if (last_epoch > 0 && (s = bn_mode_check(f, last_epoch, last_acc))) return s;
    if (f->p.restore_best && f->st.monitor.best_epoch > 0 && lp_fit_writer(f)) {
        if ((s = restore_weights(f, "best.safetensors"))) return s;
        /* stamped with the epoch its weights are from (diagnose --apply fits that epoch's predictions) */
        const int done = f->st.epochs_done;
        f->st.epochs_done = f->st.monitor.best_epoch;
        s = save_checkpoint(f, "final.safetensors", false);
        f->st.epochs_done = done;
        if (s) return s;
        say(f, "Restoring model weights from the end of the best epoch: %d (final.safetensors).\n",
            f->st.monitor.best_epoch);
    }
    return LP_OK;
}

lp_status lp_train(const lp_train_params *params, lp_epoch_callback cb, void *user) {
    lp_clear_error();
    if (!params) return lp_fail(LP_ERR_ARG, "lp_train: params are required (NULL given)");
    g_stop_requested = 0;
    lp_status s = check_params(params);
    if (s) return s;
    lp_fit f;
    memset(&f, 0, sizeof f);
    f.p = *params;
    f.out = params->out; /* NULL: silent (library code prints only where asked to) */
    if ((s = lp_dist_init(&f.dist))) return s;
    if (f.dist.size > 1 && params->on_nan && !strcmp(params->on_nan, "skip"))
        return lp_fail(LP_ERR_ARG, "--on-nan skip is not supported under mpirun yet (a skipped batch must be skipped by every process)");
    if (!lp_fit_writer(&f)) f.out = NULL; /* rank 0 prints the progress */
    lp_runlock *lock = NULL;
    const bool new_run = !lp_path_exists(params->run_dir);
    if (lp_fit_writer(&f) && ((s = lp_mkdirs(params->run_dir)) || (s = lp_run_lock(params->run_dir, &lock)))) return s;
    s = lp_fit_setup(&f);
    const bool set_up = !s;
    if (!s) s = run_epochs(&f, cb, user);
    char *ckpt = set_up || !lp_fit_writer(&f) ? NULL : lp_path_join(params->run_dir, "checkpoints");
    lp_fit_teardown(&f);
    /* a run refused before it began (bad options, data, weights) leaves no empty folders behind:
     * checkpoints/ while the lock is held (another run may take the folder the moment it is
     * released), RUN after (it holds the lock file until then); rmdir leaves a folder with
     * anything in it */
    if (ckpt) rmdir(ckpt);
    lp_run_unlock(lock);
    if (ckpt && new_run) rmdir(params->run_dir);
    free(ckpt);
    return s;
}
