/* Fit loop set-up and tear-down: dataset, model, pretrained weights,
 * freezing, optimizer, --resume, loaders, run.json and the logs. */
#include "core/atomic_cleanup.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "train/fit_internal.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define say lp_fit_say

lp_status lp_fit_load_net_tensors(lp_fit *f, lp_tensor_list *all) {
    lp_tensor_list net_only;
    lp_tensor_list_init(&net_only);
    lp_status s = LP_OK;
    for (int i = 0; i < all->count && !s; i++)
        if (!lp_checkpoint_is_state_tensor(all->items[i].name)) s = lp_tensor_list_add(&net_only, all->items[i].name, &all->items[i].t);
    if (!s) s = lp_net_load_state_dict(f->net, &net_only, true, NULL);
    lp_tensor_list_free(&net_only);
    return s;
}

void lp_fit_say(const lp_fit *f, const char *fmt, ...) {
    if (!f->p.verbose || !f->out) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f->out, fmt, ap);
    va_end(ap);
    fflush(f->out);
}

static char *classes_json(const lp_split *sp) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < sp->num_classes; i++) cJSON_AddItemToArray(a, cJSON_CreateString(sp->class_names[i]));
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

lp_status lp_fit_fill_meta(lp_fit *f, lp_tensor_list *meta) {
    char buf[64];
    char *cls = classes_json(f->train);
    if (!cls) return lp_fail(LP_ERR_NOMEM, "out of memory");
    lp_status s = lp_tensor_list_set_meta(meta, "classes", cls);
    free(cls);
    if (!s) s = lp_tensor_list_set_meta(meta, "preprocess", lp_preprocess_name(f->preprocess));
    if (!s) s = lp_tensor_list_set_meta(meta, "interpolation", f->p.interpolation);
    snprintf(buf, sizeof buf, "%dx%d", f->p.height, f->p.width);
    if (!s) s = lp_tensor_list_set_meta(meta, "input_size", buf);
    snprintf(buf, sizeof buf, "%d", f->channels);
    if (!s) s = lp_tensor_list_set_meta(meta, "in_channels", buf);
    if (!s) s = lp_tensor_list_set_meta(meta, "color_mode", f->p.color_mode);
    if (!s && f->weights_preprocess) s = lp_tensor_list_set_meta(meta, "weights_preprocess", f->weights_preprocess);
    /* what was trained: summary and evaluate of the checkpoint show the same trainable split */
    if (!s && f->p.freeze && strcmp(f->p.freeze, "none")) s = lp_tensor_list_set_meta(meta, "freeze", f->p.freeze);
    snprintf(buf, sizeof buf, "%d", f->st.epochs_done);
    if (!s) s = lp_tensor_list_set_meta(meta, "epoch", buf);
    /* the batch is the whole (global) batch, whatever the number of processes that shared it */
    snprintf(buf, sizeof buf, "%d", f->p.batch);
    if (!s) s = lp_tensor_list_set_meta(meta, "batch", buf);
    snprintf(buf, sizeof buf, "%d", f->dist.size);
    if (!s) s = lp_tensor_list_set_meta(meta, "processes", buf);
    return s;
}

/* ---- run.json --------------------------------------------------------------- */
static void add_str(cJSON *o, const char *k, const char *v) {
    if (v) cJSON_AddStringToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static cJSON *split_counts(const lp_split *sp) {
    cJSON *o = cJSON_CreateObject();
    for (int c = 0; c < sp->num_classes; c++) cJSON_AddNumberToObject(o, sp->class_names[c], sp->class_counts[c]);
    return o;
}

/* run.json's content for this run (NULL: out of memory). */
static cJSON *run_json(lp_fit *f) {
    const lp_train_params *p = &f->p;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "loupe_version", lp_version());
    cJSON *cfg = cJSON_AddObjectToObject(root, "config");
    add_str(cfg, "data", p->data_dir);
    char *data_abs = realpath(p->data_dir, NULL); /* for diagnose run from another folder (its thumbnails) */
    add_str(cfg, "data_abs", data_abs);
    free(data_abs);
    add_str(cfg, "run", p->run_dir);
    add_str(cfg, "model", p->model);
    add_str(cfg, "top", p->top);
    add_str(cfg, "head", !strcmp(p->top, "none") ? p->head : NULL);
    add_str(cfg, "weights", p->weights);
    add_str(cfg, "weights_preprocess", f->weights_preprocess);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", p->width, p->height);
    add_str(cfg, "size", size);
    add_str(cfg, "preprocess", lp_preprocess_name(f->preprocess));
    add_str(cfg, "preprocess_requested", p->preprocess);
    add_str(cfg, "interpolation", p->interpolation);
    add_str(cfg, "color_mode", p->color_mode);
    add_str(cfg, "classes_requested", p->classes);
    cJSON_AddNumberToObject(cfg, "epochs", p->epochs);
    cJSON_AddNumberToObject(cfg, "batch", p->batch);
    cJSON_AddNumberToObject(cfg, "processes", f->dist.size);
    cJSON_AddNumberToObject(cfg, "steps_per_epoch", p->steps_per_epoch);
    cJSON_AddNumberToObject(cfg, "validation_steps", p->validation_steps);
    add_str(cfg, "optimizer", p->optimizer);
    cJSON_AddNumberToObject(cfg, "lr", f->base_lr);
    cJSON_AddNumberToObject(cfg, "momentum", p->momentum);
    cJSON_AddBoolToObject(cfg, "nesterov", p->nesterov);
    cJSON_AddNumberToObject(cfg, "weight_decay", p->weight_decay);
    add_str(cfg, "freeze", p->freeze);
    cJSON_AddNumberToObject(cfg, "seed", (double)p->seed);
    cJSON_AddBoolToObject(cfg, "shuffle", p->shuffle);
    cJSON_AddNumberToObject(cfg, "threads", lp_get_threads());
    add_str(cfg, "monitor", p->monitor);
    cJSON_AddNumberToObject(cfg, "early_stop", p->early_stop);
    cJSON_AddBoolToObject(cfg, "restore_best", p->restore_best);
    cJSON_AddNumberToObject(cfg, "reduce_lr_factor", p->reduce_lr_factor);
    cJSON_AddNumberToObject(cfg, "reduce_lr_patience", p->reduce_lr_patience);
    add_str(cfg, "schedule", p->schedule);
    cJSON_AddBoolToObject(cfg, "skip_bad", p->skip_bad);
    cJSON_AddBoolToObject(cfg, "tensorboard", p->tensorboard);
    cJSON *aug = cJSON_AddObjectToObject(cfg, "augmentation");
    cJSON_AddBoolToObject(aug, "horizontal_flip", p->hflip);
    cJSON_AddBoolToObject(aug, "vertical_flip", p->vflip);
    cJSON_AddNumberToObject(aug, "rotation_range", p->rotation_range);
    cJSON_AddNumberToObject(aug, "width_shift_range", p->width_shift);
    cJSON_AddNumberToObject(aug, "height_shift_range", p->height_shift);
    cJSON_AddNumberToObject(aug, "zoom_range", p->zoom_range);
    cJSON_AddNumberToObject(aug, "brightness_lo", p->brightness_lo);
    cJSON_AddNumberToObject(aug, "brightness_hi", p->brightness_hi);
    cJSON_AddNumberToObject(cfg, "validation_split", p->validation_split);
    add_str(cfg, "precision", p->precision);
    add_str(cfg, "precision_used", lp_net_get_config(f->net)->bf16 ? "bf16" : "fp32");
    add_str(cfg, "conv_algo", lp_conv_algo_name(lp_net_get_config(f->net)->conv_algo));
    add_str(cfg, "bn", lp_bn_mode_name(lp_net_get_config(f->net)->bn));
    int bn_all, bn_batch = lp_net_bn_batch_stats_layers(f->net, &bn_all);
    cJSON_AddNumberToObject(cfg, "bn_layers", bn_all);
    cJSON_AddNumberToObject(cfg, "bn_batch_stats_layers", bn_batch); /* on the batch's statistics in training */
    cJSON *classes = cJSON_AddArrayToObject(root, "classes");
    bool all = classes != NULL; /* a class left out would shift every name after it */
    for (int i = 0; all && i < f->num_classes; i++) all = cJSON_AddItemToArray(classes, cJSON_CreateString(f->train->class_names[i]));
    cJSON *counts = cJSON_AddObjectToObject(root, "counts");
    cJSON_AddItemToObject(counts, "train", split_counts(f->train));
    if (f->valid) cJSON_AddItemToObject(counts, "valid", split_counts(f->valid));
    long long total, trainable; /* as `loupe summary` counts them */
    lp_net_param_totals(f->net, &total, &trainable);
    cJSON_AddNumberToObject(root, "parameters", (double)total);
    cJSON_AddNumberToObject(root, "trainable_parameters", (double)trainable);
    if (!all) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* The options a resumed run must share with its start: they shape the model, the data it
 * sees and in which order, or the optimizer's state, so a change would continue another run
 * than the one checkpointed (and a bit-identical resume needs them all). Keys of run.json's
 * config, with the option that sets each. The learning-rate policy (resume_noted_keys) may
 * change, said in a note: lowering it is the remedy for a run that diverged. The others
 * (epochs, threads, callbacks' patience, logs, precision) may change unsaid. */
typedef struct resume_key {
    const char *key, *option;
} resume_key;
static const resume_key resume_keys[] = {
    {"model", "--model"}, {"top", "--top"}, {"head", "--head"}, {"size", "--size"}, {"color_mode", "--color-mode"},
    {"preprocess", "--preprocess"}, {"interpolation", "--interpolation"}, {"validation_split", "--validation-split"},
    {"batch", "--batch"}, {"steps_per_epoch", "--steps-per-epoch"}, {"seed", "--seed"}, {"shuffle", "--no-shuffle"},
    {"optimizer", "--optimizer"}, {"momentum", "--momentum"}, {"nesterov", "--nesterov"},
    {"weight_decay", "--weight-decay"}, {"freeze", "--freeze"}, {"bn", "--bn"}, {"monitor", "--monitor"},
    {"validation_steps", "--validation-steps"},
}, resume_noted_keys[] = {
    {"lr", "--lr"}, {"schedule", "--schedule"}, {"reduce_lr_factor", "--reduce-lr"}, {"reduce_lr_patience", "--reduce-lr"},
}, resume_aug_keys[] = {
    {"horizontal_flip", "--horizontal-flip"}, {"vertical_flip", "--vertical-flip"}, {"rotation_range", "--rotation-range"},
    {"width_shift_range", "--width-shift-range"}, {"height_shift_range", "--height-shift-range"},
    {"zoom_range", "--zoom-range"}, {"brightness_lo", "--brightness-range"}, {"brightness_hi", "--brightness-range"},
};

/* A value as the message shows it: numbers as %g (0.01, not the float's 0.00999999977648258). */
static char *shown(const cJSON *v) {
    char num[32];
    if (!cJSON_IsNumber(v)) {
        char *s = v ? cJSON_PrintUnformatted(v) : NULL;
        if (s && strlen(s) > 80) strcpy(s + 72, " ...]"); /* a long class list: the message keeps its remedy */
        return s;
    }
    snprintf(num, sizeof num, "%g", v->valuedouble);
    return lp_strdup(num);
}

/* One difference, "OPTION: the run has A, this command B", appended to list. */
static void add_difference(char *list, size_t size, const char *option, const cJSON *was, const cJSON *now) {
    char *a = shown(was), *b = shown(now);
    const size_t used = strlen(list);
    snprintf(list + used, size - used, "\n  %s: the run has %s, this command %s", option, a ? a : "nothing", b ? b : "nothing");
    free(a);
    free(b);
}

/* The keys of table (n) whose value in was (the run's start) differs from now's, each appended
 * to list; how many. Keys was lacks (an older run.json) are not compared. */
static int differences(const resume_key *table, size_t n, const cJSON *was, const cJSON *now, char *list, size_t size) {
    int count = 0;
    for (size_t i = 0; was && i < n; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(was, table[i].key), *b = cJSON_GetObjectItemCaseSensitive(now, table[i].key);
        if (a && !cJSON_Compare(a, b, true)) add_difference(list, size, table[i].option, a, b), count++;
    }
    return count;
}
#define COUNT(table) (sizeof table / sizeof table[0])

/* --resume: the options of resume_keys, the augmentation and the classes as run.json has
 * them from the run's start, against this command's (now: run_json(f)). A run.json that is
 * missing or unreadable leaves nothing to compare. */
static lp_status check_resume_options(lp_fit *f, const cJSON *now) {
    char *path = lp_path_join(f->p.run_dir, "run.json");
    if (!path) return LP_ERR_NOMEM;
    uint8_t *data = NULL;
    size_t n = 0;
    cJSON *was = lp_path_exists(path) && !lp_read_file(path, &data, &n) ? cJSON_ParseWithLength((const char *)data, n) : NULL;
    free(data);
    lp_clear_error();
    char list[2048] = "";
    static const resume_key classes[] = {{"classes", "classes (the data's folders, --classes)"}};
    const cJSON *wc = cJSON_GetObjectItemCaseSensitive(was, "config"), *nc = cJSON_GetObjectItemCaseSensitive(now, "config");
    const int count = differences(resume_keys, COUNT(resume_keys), wc, nc, list, sizeof list) +
                      differences(resume_aug_keys, COUNT(resume_aug_keys), cJSON_GetObjectItemCaseSensitive(wc, "augmentation"),
                                  cJSON_GetObjectItemCaseSensitive(nc, "augmentation"), list, sizeof list) +
                      differences(classes, 1, was, now, list, sizeof list);
    char noted[1024] = "";
    if (!count && differences(resume_noted_keys, COUNT(resume_noted_keys), wc, nc, noted, sizeof noted)) {
        const cJSON *lr = cJSON_GetObjectItemCaseSensitive(wc, "lr");
        f->resume_new_lr = lr && !cJSON_Compare(lr, cJSON_GetObjectItemCaseSensitive(nc, "lr"), true);
    }
    if (noted[0])
        say(f, "Resuming with another learning-rate policy than the run's (this command's from here on%s):%s\n",
            f->resume_new_lr ? ", starting at the new --lr" : "", noted);
    cJSON_Delete(was);
    lp_status s = LP_OK;
    if (count)
        s = lp_fail(LP_ERR_ARG, "--resume: %s was started with other options than this command's, so it would not continue "
                                "the same run (%s has them):%s\nRepeat the run's options, or start a new --run from its "
                                "weights (--weights %s/checkpoints/last.safetensors)",
                    f->p.run_dir, path, list, f->p.run_dir);
    free(path);
    return s;
}

static lp_status write_run_json(lp_fit *f) {
    const lp_train_params *p = &f->p;
    cJSON *root = run_json(f);
    if (!root) return lp_fail(LP_ERR_NOMEM, "out of memory");
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt) return lp_fail(LP_ERR_NOMEM, "out of memory");
    char *path = lp_path_join(p->run_dir, "run.json");
    lp_status s = path ? lp_write_file_atomic(path, txt, strlen(txt)) : LP_ERR_NOMEM;
    free(path);
    free(txt);
    return s;
}

/* ---- pretrained weights ---------------------------------------------------- */
/* The weights, read before the net is built: Keras' ResNet50 (metadata resnet_version = v1)
 * makes another net than torchvision's. */
static lp_status read_weights(lp_fit *f, lp_tensor_list *w) {
    lp_status s = lp_weights_read(f->p.weights, strcmp(f->p.model, "tiny") ? f->p.model : NULL, w);
    if (s) return s;
    /* a loupe checkpoint of a grayscale run has a one-channel first convolution */
    const char *mode = lp_tensor_list_get_meta(w, "color_mode");
    if (mode && strcmp(mode, f->p.color_mode))
        return lp_fail(LP_ERR_ARG, "%s was trained on %s images and this run reads %s ones; add --color-mode %s (its first "
                       "convolution takes %s channels)", f->p.weights, mode, f->p.color_mode, mode,
                       !strcmp(mode, "grayscale") ? "1" : "3");
    const char *pre = lp_weights_preprocess(w);
    if (pre) f->weights_preprocess = lp_strdup(pre);
    return LP_OK;
}

/* Loads them into the net (lp_weights_load_into): what does not fit, such as
 * the 1000-class output layer or the whole classifier for top=none, is left
 * out and initialised new, as Keras users expect. */
static lp_status load_weights(lp_fit *f, const lp_tensor_list *w) {
    int loaded = 0;
    char *skipped = NULL, *missing = NULL;
    lp_status s = lp_weights_load_into(f->net, w, &loaded, &skipped, &missing);
    if (s) lp_fail_context(s, "%s", f->p.weights);
    else if (loaded == 0) /* another model's weights: training would start from nothing, as if none were given */
        s = lp_fail(LP_ERR_FORMAT, "%s: none of its %d tensors fits the %s model (names or shapes of another one); pass weights of a "
                    "%s, or check them with loupe convert --arch %s", f->p.weights, w->count, f->p.model, f->p.model, f->p.model);
    else {
        say(f, "Loaded %d tensors from %s", loaded, f->p.weights);
        if (f->weights_preprocess) say(f, " (expects '%s' preprocessing)", f->weights_preprocess);
        say(f, "\n");
        if (skipped) say(f, "Not used (no such layer in this model, or another shape): %s\n", skipped);
        if (missing) say(f, "Initialised new (not in the weights file): %s\n", missing);
    }
    free(skipped);
    free(missing);
    return s;
}

/* --resume: the run's last checkpoint, read once. Its metadata decides the net before it is
 * built (net_variant), its tensors restore the run (resume). */
static lp_status read_last_checkpoint(lp_fit *f) {
    char *path = lp_path_join(f->ckpt_dir, "last.safetensors");
    if (!path) return LP_ERR_NOMEM;
    lp_status s = LP_OK;
    if ((f->resume_found = lp_path_exists(path)) && (s = lp_safetensors_read(path, &f->resume_ck)))
        lp_fail_context(s, "cannot resume from %s", path);
    free(path);
    return s;
}

/* A variant of the architecture that Keras' weights make, with the same tensors as
 * torchvision's and another function: metadata key = variant (resnet_version v1: Keras'
 * ResNet50; padding tf: Keras' MobileNetV2 and EfficientNetB0), else the usual (usual).
 * The weights say which, and a resumed run's checkpoint must agree. */
static lp_status net_variant(lp_fit *f, const lp_tensor_list *w, const char *key, const char *variant, const char *usual, bool *on) {
    const char *v = f->p.weights ? lp_tensor_list_get_meta(w, key) : NULL;
    *on = v && !strcmp(v, variant);
    if (!f->resume_found) return LP_OK;
    const char *cv = lp_tensor_list_get_meta(&f->resume_ck, key);
    const bool ck_on = cv && !strcmp(cv, variant);
    lp_status s = LP_OK;
    if (f->p.weights && ck_on != *on)
        s = lp_fail(LP_ERR_ARG, "%s/last.safetensors has %s %s but %s has %s %s: resume with the run's own --weights, or none", f->ckpt_dir,
                    key, ck_on ? variant : usual, f->p.weights, key, *on ? variant : usual);
    *on = ck_on;
    return s;
}

/* Input scale each preprocessing mode produces, for the mismatch warning. */
static void warn_preprocess(lp_fit *f) {
    if (!f->weights_preprocess) return;
    if (!strcmp(f->weights_preprocess, lp_preprocess_name(f->preprocess))) return;
    const char *pre = lp_preprocess_name(f->preprocess);
    const char *why = "";
    if (!strcmp(f->weights_preprocess, "caffe") && f->preprocess == LP_PRE_RESCALE)
        why = ": caffe weights expect BGR pixels in 0..255 minus the ImageNet mean (spread ~±128), rescale feeds RGB "
              "in 0..1, about 255x too small, with red and blue swapped";
    else if (!strcmp(f->weights_preprocess, "torch") && f->preprocess == LP_PRE_RESCALE)
        why = ": torch weights expect (x/255 - mean)/std (spread ~±2), rescale feeds 0..1 without centring, about 4x "
              "smaller and shifted";
    else if (!strcmp(f->weights_preprocess, "torch") && f->preprocess == LP_PRE_CAFFE)
        why = ": torch weights expect RGB normalised to ~±2, caffe feeds BGR in ~±128, about 60x too large";
    else if (!strcmp(f->weights_preprocess, "caffe") && f->preprocess == LP_PRE_TORCH)
        why = ": caffe weights expect BGR in ~±128, torch feeds RGB normalised to ~±2, about 60x too small";
    if (!f->out) return; /* silent, or another MPI rank than the one that prints */
    fprintf(f->out, "WARNING: --preprocess %s differs from what the weights expect (%s)%s. Use "
            "--preprocess auto unless this is deliberate.\n", pre, f->weights_preprocess, why);
}

/* ---- resume ------------------------------------------------------------------ */
static lp_status resume(lp_fit *f) {
    char *path = lp_path_join(f->ckpt_dir, "last.safetensors");
    if (!path) return LP_ERR_NOMEM;
    if (!f->resume_found) {
        say(f, "No %s yet: starting from epoch 1.\n", path);
        free(path);
        return LP_OK;
    }
    lp_tensor_list *all = &f->resume_ck; /* read_last_checkpoint */
    const char *js = lp_tensor_list_get_meta(all, "train_state");
    lp_status s = js ? lp_train_state_from_json(js, &f->st)
                     : lp_fail(LP_ERR_FORMAT, "%s: no train_state metadata: not a resumable checkpoint", path);
    if (!s) s = lp_optim_load_state_dict(f->opt, all);
    if (!s) s = lp_fit_load_net_tensors(f, all);
    if (s) lp_fail_context(s, "cannot resume from %s", path);
    else if (f->st.step_in_epoch > 0)
        say(f, "Resuming from %s: epoch %d, step %d.\n", path, f->st.epochs_done + 1, f->st.step_in_epoch);
    else say(f, "Resuming from %s after epoch %d.\n", path, f->st.epochs_done);
    lp_tensor_list_free(all); /* restored: its memory back before training */
    free(path);
    return s;
}

/* ---- set-up -------------------------------------------------------------------- */
static lp_status open_logs(lp_fit *f) {
    int keep = f->st.epochs_done;
    char *path = lp_path_join(f->p.run_dir, "history.csv");
    if (!path) return LP_ERR_NOMEM;
    lp_status s = lp_csv_open(path, "epoch,loss,accuracy,val_loss,val_accuracy,lr", keep, &f->hist_csv);
    free(path);
    if (s) return s;
    if (f->valid) {
        char header[4096];
        int off = snprintf(header, sizeof header, "epoch,path,label");
        for (int c = 0; c < f->num_classes && off < (int)sizeof header - 16; c++)
            off += snprintf(header + off, sizeof header - (size_t)off, ",p%d", c);
        path = lp_path_join(f->p.run_dir, "valid_predictions.csv");
        if (!path) return LP_ERR_NOMEM;
        s = lp_csv_open(path, header, keep, &f->pred_csv);
        free(path);
        if (s) return s;
    }
    if (f->p.tensorboard) {
        char *logs = lp_path_join(f->p.run_dir, "logs");
        char *tr = logs ? lp_path_join(logs, "train") : NULL;
        char *va = logs ? lp_path_join(logs, "validation") : NULL;
        s = (tr && va) ? lp_tb_open(tr, &f->tb) : LP_ERR_NOMEM;
        if (!s && f->valid) s = lp_tb_open(va, &f->tb_val);
        free(logs);
        free(tr);
        free(va);
        if (s) return s;
    }
    return LP_OK;
}

static void print_config(lp_fit *f) {
    const lp_train_params *p = &f->p;
    say(f, "loupe %s: %s top=%s%s%s, input %dx%dx%d, %d classes [", lp_version(), p->model, p->top,
        !strcmp(p->top, "none") ? " head=" : "", !strcmp(p->top, "none") ? p->head : "", f->channels, p->height, p->width,
        f->num_classes);
    for (int c = 0; c < f->num_classes; c++) say(f, "%s%s", c ? ", " : "", f->train->class_names[c]);
    say(f, "]\n  weights %s, preprocess %s, interpolation %s, freeze %s\n", p->weights ? p->weights : "random init",
        lp_preprocess_name(f->preprocess), p->interpolation, p->freeze);
    say(f, "  optimizer %s lr %g momentum %g%s weight decay %g, schedule %s", p->optimizer, f->base_lr, p->momentum,
        p->nesterov ? " (nesterov)" : "", p->weight_decay, p->schedule);
    if (p->reduce_lr_factor > 0) say(f, ", reduce-lr x%g after %d", p->reduce_lr_factor, p->reduce_lr_patience);
    say(f, "\n  epochs %d, batch %d, steps/epoch %d, shuffle %s, seed %llu, threads %d, monitor %s", p->epochs, p->batch,
        p->steps_per_epoch > 0 ? p->steps_per_epoch : lp_loader_batches_per_pass(f->train_loader),
        p->shuffle ? "on" : "off", (unsigned long long)p->seed, lp_get_threads(), f->monitor_name);
    if (p->early_stop > 0) say(f, ", early stop after %d%s", p->early_stop, p->restore_best ? " (restore best)" : "");
    say(f, "\n  run %s\n", p->run_dir);
}

lp_status lp_fit_make_loader(lp_fit *f, const lp_split *sp, bool train, lp_loader **out) {
    lp_loader_config lc = lp_loader_default_config();
    lc.batch = f->p.batch;
    lc.shuffle = train && f->p.shuffle;
    lc.seed = f->p.seed;
    lc.height = f->p.height;
    lc.width = f->p.width;
    lc.channels = f->channels;
    lc.preprocess = f->preprocess;
    lc.shard = f->dist.rank, lc.shards = f->dist.size;
    lp_status s = lp_interp_parse(f->p.interpolation, &lc.interp);
    if (s) return s;
    if (train) {
        lc.augment.horizontal_flip = f->p.hflip;
        lc.augment.vertical_flip = f->p.vflip;
        lc.augment.rotation_range = (float)f->p.rotation_range;
        lc.augment.width_shift_range = (float)f->p.width_shift;
        lc.augment.height_shift_range = (float)f->p.height_shift;
        lc.augment.zoom_range = (float)f->p.zoom_range;
        lc.augment.brightness_lo = (float)f->p.brightness_lo;
        lc.augment.brightness_hi = (float)f->p.brightness_hi;
    }
    return lp_loader_create(sp, &lc, out);
}

/* Frozen-base feature cache: when the layers before some point are frozen,
 * hold no dropout and the training images are not augmented, their output
 * depends on the image only: compute it once per image and train the rest
 * from memory. Off with cache_features = 0 or when it would need > 4 GiB. */
static lp_status setup_feature_cache(lp_fit *f) {
    const lp_train_params *p = &f->p;
    if (!p->cache_features) return LP_OK;
    bool augment = p->hflip || p->vflip || p->rotation_range != 0 || p->width_shift != 0 || p->height_shift != 0 ||
                   p->zoom_range != 0 || p->brightness_lo != 0 || p->brightness_hi != 0;
    size_t fs = 0;
    const char *name = NULL;
    int k = lp_net_frozen_prefix(f->net, &fs, &name);
    if (k <= 0 || fs == 0) return LP_OK;
    if (augment) {
        say(f, "Feature cache: off (augmentation changes the frozen layers' input every epoch)\n");
        return LP_OK;
    }
    size_t nt = (size_t)f->train->num_samples, nv = f->valid ? (size_t)f->valid->num_samples : 0;
    double bytes = ((double)nt + (double)nv + (double)p->batch) * (double)fs * sizeof(float);
    const double limit = 4.0 * 1024 * 1024 * 1024;
    if (bytes > limit) {
        say(f, "Feature cache: off (frozen layers up to %s would need %.0f MB > %.0f MB in memory)\n", name,
            bytes / 1048576.0, limit / 1048576.0);
        return LP_OK;
    }
    f->feat_train = malloc((nt ? nt : 1) * fs * sizeof(float));
    f->have_train = calloc(nt ? nt : 1, 1);
    f->feat_valid = malloc((nv ? nv : 1) * fs * sizeof(float));
    f->have_valid = calloc(nv ? nv : 1, 1);
    f->feat_batch = lp_aligned_alloc((size_t)p->batch * fs * sizeof(float));
    if (!f->feat_train || !f->have_train || !f->feat_valid || !f->have_valid || !f->feat_batch) {
        free(f->feat_train), free(f->have_train), free(f->feat_valid), free(f->have_valid), free(f->feat_batch);
        f->feat_train = f->feat_valid = f->feat_batch = NULL;
        f->have_train = f->have_valid = NULL;
        say(f, "Feature cache: off (out of memory for %.0f MB)\n", bytes / 1048576.0);
        return LP_OK;
    }
    f->feat_k = k;
    f->feat_size = fs;
    say(f, "Feature cache: frozen layers up to %s computed once per image (%.1f MB)\n", name, bytes / 1048576.0);
    return LP_OK;
}

/* The batch's frozen-prefix features in f->feat_batch: from the cache, or
 * computed for the whole batch when any image is missing. */
static lp_status batch_features(lp_fit *f, const lp_batch *bt, float *cache, unsigned char *have) {
    size_t fs = f->feat_size;
    bool all = true;
    for (int i = 0; i < bt->n && all; i++) all = have[bt->indices[i]];
    if (all) {
        for (int i = 0; i < bt->n; i++)
            memcpy(f->feat_batch + (size_t)i * fs, cache + (size_t)bt->indices[i] * fs, fs * sizeof(float));
        return LP_OK;
    }
    lp_status s = lp_net_forward_prefix(f->net, bt->x, bt->n, f->feat_k, f->feat_batch);
    if (s) return s;
    for (int i = 0; i < bt->n; i++) {
        memcpy(cache + (size_t)bt->indices[i] * fs, f->feat_batch + (size_t)i * fs, fs * sizeof(float));
        have[bt->indices[i]] = 1;
    }
    return LP_OK;
}

static lp_status write_skipped(lp_fit *f) {
    int total = 0;
    const char *names[3] = {"train", "valid", "test"};
    for (int i = 0; i < 3; i++) {
        const lp_split *sp = lp_dataset_split(f->ds, names[i]);
        if (sp) total += sp->num_bad;
    }
    if (!total) return LP_OK;
    char *path = lp_path_join(f->p.run_dir, "skipped.txt");
    if (!path) return LP_ERR_NOMEM;
    lp_atomic_file *af;
    lp_status s = lp_atomic_open(path, &af);
    int shown = 0; /* the first few in the output (--quiet: none), all in skipped.txt */
    for (int i = 0; i < 3 && !s; i++) {
        const lp_split *sp = lp_dataset_split(f->ds, names[i]);
        for (int b = 0; sp && b < sp->num_bad && !s; b++) {
            s = lp_atomic_printf(af, "%s: %s\n", sp->bad[b].relpath, sp->bad[b].reason);
            if (shown++ < 10) say(f, "WARNING: skipped %s: %s\n", sp->bad[b].relpath, sp->bad[b].reason);
        }
    }
    if (!s) s = lp_atomic_commit(af);
    else lp_atomic_abort(af);
    if (!s) say(f, "Skipped %d bad image file%s (--skip-bad); %s lists %s.\n", total, total > 1 ? "s" : "", path, total > 1 ? "them all" : "it");
    free(path);
    return s;
}

/* Data-parallel: every rank must run at rank 0's instruction-set level (the gradients are
 * summed in their storage layout, which the level decides: blocks of 16 or 8). */
static lp_status same_isa_as_rank0(lp_fit *f) {
    char mine[80], theirs[80];
    snprintf(mine, sizeof mine, "%s", lp_cpu_description());
    char *paren = strstr(mine, " (");
    if (paren) *paren = 0;
    memcpy(theirs, mine, sizeof mine);
    lp_status s = lp_dist_bcast(&f->dist, theirs, sizeof theirs);
    if (s || !strcmp(mine, theirs)) return s;
    return lp_fail(LP_ERR_ARG, "process %d runs at %s, process 0 at %s: all processes must run at one level (cap the higher "
                               "ones with ONEDNN_MAX_CPU_ISA, e.g. mpirun -x ONEDNN_MAX_CPU_ISA=AVX2)", f->dist.rank, mine, theirs);
}

static lp_status bcast_optim(lp_fit *f);
lp_status lp_fit_setup(lp_fit *f) {
    const lp_train_params *p = &f->p;
    lp_status s;
    lp_set_threads(p->threads);
    if (f->dist.size > 1 && (s = same_isa_as_rank0(f))) return s;
    f->monitor_name = p->monitor;
    f->ckpt_dir = lp_path_join(p->run_dir, "checkpoints");
    if (!f->ckpt_dir) return LP_ERR_NOMEM;
    if (lp_fit_writer(f) && (s = lp_mkdirs(f->ckpt_dir))) return s;
    /* Temporaries of a killed run (we hold the run lock: nobody else writes here). */
    int stale = 0, n;
    if (lp_fit_writer(f) && !lp_atomic_remove_stale(p->run_dir, &n)) stale += n;
    if (lp_fit_writer(f) && !lp_atomic_remove_stale(f->ckpt_dir, &n)) stale += n;
    if (stale) say(f, "Removed %d temporary file(s) left by an interrupted run.\n", stale);
    char *last = lp_path_join(f->ckpt_dir, "last.safetensors");
    const bool has_run = last && lp_path_exists(last); /* --resume of a folder without one starts a new run */
    free(last);
    if (!p->resume && has_run)
        return lp_fail(LP_ERR_ARG, "%s already holds a run (checkpoints/last.safetensors); add --resume to continue it "
                                   "or choose another --run", p->run_dir);

    /* options that another one would silently override. The learning-rate policy may change on
     * --resume, so that check holds there too (drop one to resume); momentum may not, so an
     * older run that had it with Adam still resumes */
    if (p->reduce_lr_factor > 0 && p->schedule && strcmp(p->schedule, "constant"))
        return lp_fail(LP_ERR_ARG, "--schedule %s and --reduce-lr both set the learning rate, and --reduce-lr's would win; use one: "
                                   "a schedule for a fixed plan, --reduce-lr to lower the rate when %s stalls",
                       p->schedule, p->monitor);
    if (!has_run && p->momentum > 0 && strcmp(p->optimizer, "sgd"))
        return lp_fail(LP_ERR_ARG, "--momentum is SGD's: --optimizer %s keeps its own (beta1 0.9, beta2 0.999); drop --momentum, "
                                   "or use --optimizer sgd", p->optimizer);

    /* data */
    if (p->validation_split > 0 && !has_run) { /* with a valid/ folder the split would be left unused, unseen */
        for (int i = 0; i < 2; i++) {
            char *v = lp_path_join(p->data_dir, i ? "validation" : "valid");
            const bool dir = v && lp_is_dir(v);
            free(v);
            if (dir)
                return lp_fail(LP_ERR_ARG, "--validation-split %g: %s/%s/ exists and is the validation set; use one or "
                                           "the other (drop --validation-split, or move that folder away)",
                               p->validation_split, p->data_dir, i ? "validation" : "valid");
        }
    }
    lp_scan_options so = lp_scan_default_options();
    so.classes = p->classes;
    so.skip_bad = p->skip_bad;
    so.validation_split = p->validation_split;
    so.seed = p->seed;
    so.skip_test = true;
    if ((s = lp_dataset_scan(p->data_dir, &so, &f->ds))) return s;
    f->train = lp_dataset_split(f->ds, "train");
    f->valid = lp_dataset_split(f->ds, "valid");
    if (!f->train) return lp_fail(LP_ERR_DATA, "%s: no train/ folder", p->data_dir);
    f->num_classes = f->train->num_classes;
    if (f->num_classes < 2) return lp_fail(LP_ERR_DATA, "%s/train: found %d class folder(s); need at least 2", p->data_dir, f->num_classes);
    if (f->valid && f->valid->num_classes != f->num_classes)
        return lp_fail(LP_ERR_DATA, "%s: valid has %d classes but train has %d", p->data_dir, f->valid->num_classes, f->num_classes);
    say(f, "Found %d images belonging to %d classes (train).\n", f->train->num_samples, f->num_classes);
    if (f->valid) say(f, "Found %d images belonging to %d classes (valid).\n", f->valid->num_samples, f->valid->num_classes);
    else {
        say(f, "No valid/ split: monitoring training loss instead (use --validation-split to hold out images).\n");
        f->monitor_name = "loss";
    }
    int dup_groups, dup_across, dup_conflicts;
    lp_dataset_duplicates(f->ds, &dup_groups, &dup_across, &dup_conflicts);
    if (dup_across || dup_conflicts)
        say(f, "WARNING: identical images (same bytes): %d group%s across train/ and valid/ (validation figures flatter the "
               "model), %d under different classes; 'loupe data %s' lists them.\n", dup_across, dup_across == 1 ? "" : "s",
            dup_conflicts, p->data_dir);
    const int ignored = f->train->num_ignored + (f->valid ? f->valid->num_ignored : 0);
    if (ignored)
        say(f, "Ignored %d file%s that %s not images (hidden files, Thumbs.db, others by content; 'loupe data %s' lists "
               "them by kind).\n", ignored, ignored > 1 ? "s" : "", ignored > 1 ? "are" : "is", p->data_dir);
    /* after the checks above, which speak of the whole of valid/ */
    const long long val_keep = (long long)p->validation_steps * p->batch;
    if (f->valid && p->validation_steps > 0 && val_keep < f->valid->num_samples) {
        /* the first batches of valid/ would be its first classes (it is sorted): a sample of all */
        const int all = f->valid->num_samples;
        if ((s = lp_dataset_keep_sample(f->ds, "valid", (int)val_keep, p->seed))) return s;
        say(f, "Validating on %d of the %d valid/ images (--validation-steps %d x --batch %d): a random sample drawn with "
               "--seed, the same every epoch.\n", f->valid->num_samples, all, p->validation_steps, p->batch);
    }
    f->channels = !strcmp(p->color_mode, "grayscale") ? 1 : 3;

    /* model */
    lp_net_config nc = lp_net_default_config();
    snprintf(nc.arch, sizeof nc.arch, "%s", p->model);
    snprintf(nc.top, sizeof nc.top, "%s", p->top);
    snprintf(nc.head, sizeof nc.head, "%s", p->head ? p->head : "flatten,dense");
    nc.num_classes = f->num_classes;
    nc.in_c = f->channels;
    nc.in_h = p->height;
    nc.in_w = p->width;
    nc.max_batch = p->batch;
    nc.seed = p->seed;
    lp_precision prec = LP_PREC_FP32;
    lp_precision_parse(p->precision, &prec); /* checked in check_params */
    nc.bf16 = lp_net_use_bf16(prec, p->model); /* bf16 without native support: fp32, said below */
    if (p->conv_algo) lp_conv_algo_parse(p->conv_algo, &nc.conv_algo); /* checked in check_params */
    lp_bn_mode_parse(p->bn, &nc.bn);                                    /* likewise */
    lp_tensor_list w;
    lp_tensor_list_init(&w);
    if (p->resume) s = read_last_checkpoint(f);
    if (!s && p->weights) s = read_weights(f, &w);
    /* resumed without the weights it started from: what they expected, as the checkpoint kept it */
    const char *ck_pre = !s && !p->weights && f->resume_found ? lp_tensor_list_get_meta(&f->resume_ck, "weights_preprocess") : NULL;
    if (ck_pre && !(f->weights_preprocess = lp_strdup(ck_pre))) s = LP_ERR_NOMEM;
    if (!s) s = net_variant(f, &w, "resnet_version", "v1", "v1.5", &nc.resnet_v1);
    if (!s) s = net_variant(f, &w, "padding", "tf", "torch", &nc.tf_padding);
    if (!s) s = lp_net_create(&nc, &f->net);
    if (!s && nc.resnet_v1) say(f, "ResNet v1 strides (Keras' ResNet50): each stage's first block strides on its first 1x1 conv.\n");
    if (!s && nc.tf_padding) say(f, "TensorFlow's \"same\" padding (Keras' weights): stride-2 convolutions pad after, not before.\n");
    if (!s && p->weights) s = load_weights(f, &w);
    lp_tensor_list_free(&w);
    if (s) return s;
    if (!strcmp(p->preprocess, "auto")) {
        const char *pre = f->weights_preprocess ? f->weights_preprocess : "rescale";
        if (lp_preprocess_parse(pre, &f->preprocess) != LP_OK) f->preprocess = LP_PRE_RESCALE;
    } else {
        if ((s = lp_preprocess_parse(p->preprocess, &f->preprocess))) return s;
        warn_preprocess(f);
    }
    if (p->freeze && strcmp(p->freeze, "none") && (s = lp_net_freeze(f->net, p->freeze))) return s;

    /* optimizer */
    lp_optim_config oc;
    if (!strcmp(p->optimizer, "sgd")) oc = lp_optim_default_config(LP_OPT_SGD);
    else if (!strcmp(p->optimizer, "adam")) oc = lp_optim_default_config(LP_OPT_ADAM);
    else oc = lp_optim_default_config(LP_OPT_ADAMW);
    f->base_lr = p->lr > 0 ? p->lr : oc.lr;
    oc.lr = (float)f->base_lr;
    oc.momentum = (float)p->momentum;
    oc.nesterov = p->nesterov;
    if (p->weight_decay > 0 || oc.kind != LP_OPT_ADAMW) oc.weight_decay = (float)p->weight_decay;
    if ((s = lp_optim_create(f->net, &oc, &f->opt))) return s;

    /* loop state */
    bool maximize = !strcmp(p->monitor, "val_accuracy") && f->valid;
    f->st.lr = f->base_lr;
    lp_monitor_init(&f->st.monitor, maximize);
    lp_early_stop_init(&f->st.early, p->early_stop, maximize);
    lp_reduce_lr_init(&f->st.reduce, p->reduce_lr_factor, p->reduce_lr_patience, maximize);
    if (p->resume && f->resume_found && lp_fit_writer(f)) { /* before anything is restored or said */
        cJSON *now = run_json(f);
        s = now ? check_resume_options(f, now) : lp_fail(LP_ERR_NOMEM, "out of memory");
        cJSON_Delete(now);
        if (s) return s;
    }
    if (p->resume && (s = resume(f))) return s;
    /* the saved lr is where ReduceLROnPlateau had brought the old policy; a new --lr starts at its
     * base (rank 0 compared the options: every rank takes its lr) */
    if (f->resume_new_lr) f->st.lr = f->base_lr;
    if (p->resume && f->dist.size > 1 && (s = lp_dist_bcast(&f->dist, &f->st.lr, sizeof f->st.lr))) return s;
    /* one model and optimizer state everywhere, whatever each rank read */
    if ((s = lp_fit_bcast_model(f)) || (f->dist.size > 1 && (s = bcast_optim(f)))) return s;

    /* loaders and buffers */
    if ((s = lp_fit_make_loader(f, f->train, true, &f->train_loader))) return s;
    if (f->valid && (s = lp_fit_make_loader(f, f->valid, false, &f->valid_loader))) return s;
    size_t k = (size_t)f->num_classes, b = (size_t)p->batch;
    f->logits = lp_malloc(b * k * sizeof(float));
    f->probs = lp_malloc(b * k * sizeof(float));
    f->sample_loss = lp_malloc(b * sizeof(float));
    size_t nv = f->valid ? (size_t)f->valid->num_samples : 1;
    f->val_probs = lp_malloc(nv * k * sizeof(float));
    f->val_labels = lp_malloc(nv * sizeof(int));
    if (!f->logits || !f->probs || !f->sample_loss || !f->val_probs || !f->val_labels) return LP_ERR_NOMEM;

    print_config(f);
    say(f, "CPU: %s, %s\n", lp_cpu_description(), lp_net_get_config(f->net)->bf16 ? "bf16" : "fp32");
    if (lp_net_dense_bf16(f->net, p->batch))
        say(f, "Precision: bf16 convolutions, pooling and dense layers%s; fp32 master weights, gradients and loss.\n",
            lp_net_amx() ? " on AMX" : "");
    else if (lp_net_get_config(f->net)->bf16)
        say(f, "Precision: bf16 convolutions and pooling%s; fp32 dense layers (at batch %d bf16 saves nothing there), "
               "master weights, gradients and loss.\n",
            lp_net_amx() ? " on AMX" : "", p->batch);
    else if (prec == LP_PREC_BF16)
        say(f, "Precision: bf16 asked, but this CPU has no native bf16 (AVX512-BF16 or AMX)%s: training in fp32.\n",
            getenv("ONEDNN_MAX_CPU_ISA") || getenv("DNNL_MAX_CPU_ISA") ? " at the level ONEDNN_MAX_CPU_ISA caps it to" : "");
    else if (prec == LP_PREC_AUTO && lp_net_bf16_native())
        say(f, "Precision: fp32 (auto: %s on AMX stays fp32 until bf16 is measured there).\n", p->model);
    else if (prec == LP_PREC_AUTO)
        say(f, "Precision: fp32 (auto: no native bf16 on this CPU).\n");
    if (!lp_net_get_config(f->net)->bf16) {
        int convs, wino = lp_net_winograd_planned(f->net, &convs);
        say(f, "Convolutions: Winograd %s in %d of %d conv layers, direct in the others (--conv %s).\n",
            lp_net_winograd_kind(), wino, convs, lp_conv_algo_name(lp_net_get_config(f->net)->conv_algo));
    } else if (p->conv_algo && strcmp(p->conv_algo, "auto")) {
        say(f, "Convolutions: bf16, direct (--conv %s picks the algorithm of fp32 convolutions).\n", p->conv_algo);
    }
    if (f->dist.size > 1)
        say(f, "Data-parallel: %d processes (MPI), each batch of %d split between them; this one writes the run.\n",
            f->dist.size, p->batch);
    if ((s = setup_feature_cache(f))) return s;
    if (!lp_fit_writer(f)) return LP_OK;
    if ((s = write_skipped(f))) return s;
    if ((s = write_run_json(f))) return s;
    if ((s = open_logs(f))) return s;
    return LP_OK;
}

void lp_fit_teardown(lp_fit *f) {
    lp_csv_close(f->hist_csv);
    lp_csv_close(f->pred_csv);
    lp_tb_close(f->tb);
    lp_tb_close(f->tb_val);
    lp_loader_free(f->train_loader);
    lp_loader_free(f->valid_loader);
    lp_optim_free(f->opt);
    lp_net_free(f->net);
    lp_dataset_free(f->ds);
    free(f->ckpt_dir);
    free(f->weights_preprocess);
    lp_tensor_list_free(&f->resume_ck);
    free(f->logits);
    free(f->probs);
    free(f->sample_loss);
    free(f->val_probs);
    free(f->val_labels);
    free(f->feat_train);
    free(f->feat_valid);
    free(f->have_train);
    free(f->have_valid);
    free(f->feat_batch);
    free(f->dist_runs);
}

/* ---- steps ------------------------------------------------------------------------ */
/* Forward and loss of a training step, gradients zeroed for the backward. */
static lp_status train_forward(lp_fit *f, const lp_batch *bt, uint64_t dropout_seed, float *mean_loss) {
    lp_status s;
    if (f->feat_k > 0) {
        s = batch_features(f, bt, f->feat_train, f->have_train);
        if (!s) s = lp_net_forward_from(f->net, f->feat_k, f->feat_batch, bt->n, true, dropout_seed, f->logits);
    } else {
        s = lp_net_forward(f->net, bt->x, bt->n, true, dropout_seed, f->logits);
    }
    if (!s) s = lp_net_loss(f->net, bt->labels, bt->n, NULL, f->probs, mean_loss);
    if (s) return s;
    lp_net_zero_grad(f->net);
    return LP_OK;
}

lp_status lp_fit_train_backward(lp_fit *f, const lp_batch *bt, uint64_t dropout_seed, float *mean_loss) {
    lp_status s = train_forward(f, bt, dropout_seed, mean_loss);
    return s ? s : lp_net_backward(f->net);
}

/* Data-parallel step: this rank's slice forward and backward with dlogits scaled to the
 * whole batch (an empty slice contributes zeros), the gradients summed over ranks in
 * fixed runs, then the same update everywhere. Not overlapped with backward yet. */
/* 4 M floats (16 MB) a message: large enough to stream, small enough to start early */
#define DIST_RUN_FLOATS ((size_t)1 << 22)

/* Backward's hook: starts the sums of the runs that layer l completed (those whose lowest
 * layer is l or above, in the fixed order of the list) and moves the started ones on. */
static lp_status start_ready_sums(void *ctx, int layer) {
    lp_fit *f = ctx;
    lp_status s;
    for (; f->dist_next < f->dist_nruns && f->dist_runs[f->dist_next].layer >= layer; f->dist_next++) {
        const lp_grad_run *r = &f->dist_runs[f->dist_next];
        if (f->dist_next == 0) f->dist_first = lp_now();
        f->dist_bytes += (double)r->n * sizeof(float);
        if ((s = lp_dist_sum_start(&f->dist, r->g, r->n))) return s;
    }
    return lp_dist_progress(&f->dist);
}

static lp_status dist_train_step(lp_fit *f, const lp_batch *bt, uint64_t dropout_seed, float lr, float *mean_loss) {
    lp_status s = LP_OK;
    const double t0 = lp_now();
    *mean_loss = 0.0f;
    if (!f->dist_runs) {
        f->dist_nruns = lp_net_grad_run_list(f->net, DIST_RUN_FLOATS, NULL, 0);
        if (!(f->dist_runs = lp_malloc(sizeof *f->dist_runs * (size_t)(f->dist_nruns + 1)))) return LP_ERR_NOMEM;
        lp_net_grad_run_list(f->net, DIST_RUN_FLOATS, f->dist_runs, f->dist_nruns);
    }
    f->dist_next = 0;
    if (bt->n > 0) {
        lp_net_set_sample_offset(f->net, bt->offset);
        s = train_forward(f, bt, dropout_seed, mean_loss);
        if (!s) lp_net_scale_loss_grad(f->net, (float)bt->n / (float)bt->global_n);
        lp_net_set_backward_hook(f->net, start_ready_sums, f);
        if (!s) s = lp_net_backward(f->net);
        lp_net_set_backward_hook(f->net, NULL, NULL);
    } else { /* an empty slice adds zeros */
        lp_net_zero_grad(f->net);
        lp_net_grads_as_data(f->net);
    }
    if (!s) s = start_ready_sums(f, -1); /* the runs no layer's backward completed here */
    const double t1 = lp_now();
    if (!s) s = lp_dist_sum_wait_all(&f->dist);
    if (s) return s;
    f->dist_comm_s += lp_now() - t1;
    if (f->dist_nruns > 0) f->dist_span_s += lp_now() - f->dist_first;
    s = lp_optim_step(f->opt, lr);
    f->dist_step_s += lp_now() - t0;
    f->dist_steps++;
    return s;
}

/* Rank 0's optimizer state to all (every rank read the same checkpoint, or none: this
 * makes it so, and finds ranks that resumed different runs). */
static lp_status bcast_optim(lp_fit *f) {
    lp_tensor_list st;
    lp_tensor_list_init(&st);
    lp_status s = lp_optim_state_dict(f->opt, &st);
    int64_t count = st.count;
    if (!s) s = lp_dist_bcast(&f->dist, &count, sizeof count);
    for (int i = 0; i < st.count && !s && count == st.count; i++) {
        int64_t bytes = lp_tensor_numel(&st.items[i].t) * (int64_t)lp_dtype_size(st.items[i].t.dtype), b0 = bytes;
        if ((s = lp_dist_bcast(&f->dist, &b0, sizeof b0))) break;
        if (b0 != bytes) {
            count = -1;
            break;
        }
        s = lp_dist_bcast(&f->dist, st.items[i].t.data, (size_t)bytes);
    }
    if (!s && count != st.count)
        s = lp_fail(LP_ERR_ARG, "process %d holds another optimizer state than process 0: the processes resumed different "
                                "checkpoints (every process must see the same run directory)", f->dist.rank);
    if (!s) s = lp_optim_load_state_dict(f->opt, &st);
    lp_tensor_list_free(&st);
    return s;
}

lp_status lp_fit_bcast_model(lp_fit *f) {
    if (f->dist.size < 2) return LP_OK;
    for (int i = 0; i < lp_net_param_count(f->net); i++) {
        if (!lp_net_param_trainable(f->net, i) && !lp_net_param_is_buffer(f->net, i)) continue;
        lp_status s = lp_dist_bcast(&f->dist, lp_net_param(f->net, i), sizeof(float) * lp_net_param_numel(f->net, i));
        if (s) return s;
    }
    return LP_OK;
}

lp_status lp_fit_train_step(lp_fit *f, const lp_batch *bt, uint64_t dropout_seed, float lr, bool keep_grads,
                            float *mean_loss) {
    if (f->dist.size > 1) return dist_train_step(f, bt, dropout_seed, lr, mean_loss);
    lp_status s = train_forward(f, bt, dropout_seed, mean_loss);
    if (s) return s;
    if (keep_grads) return (s = lp_net_backward(f->net)) ? s : lp_optim_step(f->opt, lr);
    return lp_net_backward_step(f->net, f->opt, lr);
}

lp_status lp_fit_forward_eval(lp_fit *f, const lp_batch *bt, float *logits) {
    if (f->feat_k > 0) {
        lp_status s = batch_features(f, bt, f->feat_valid, f->have_valid);
        if (s) return s;
        return lp_net_forward_from(f->net, f->feat_k, f->feat_batch, bt->n, false, 0, logits);
    }
    return lp_net_forward(f->net, bt->x, bt->n, false, 0, logits);
}
