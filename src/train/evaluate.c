/* Evaluate a checkpoint on a folder of class subfolders, and predict single
 * images, with the checkpoint's own preprocessing, size and calibration. */
#include "io/checkpoint.h"
#include "train/metrics.h"
#include "train/train.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs the net over x in chunks the net was built for. */
static lp_status forward_chunks(lp_net *net, const float *x, int n, int per_image, int k, float *logits) {
    int max_b = lp_net_get_config(net)->max_batch;
    for (int off = 0; off < n; off += max_b) {
        int m = n - off < max_b ? n - off : max_b;
        lp_status s = lp_net_forward(net, x + (size_t)off * per_image, m, false, 0, logits + (size_t)off * k);
        if (s) return s;
    }
    return LP_OK;
}

static char *join_classes(lp_model *m) {
    size_t len = 1;
    int k = lp_model_num_classes(m);
    for (int c = 0; c < k; c++) len += strlen(lp_model_class_name(m, c)) + 1;
    char *s = lp_malloc(len);
    if (!s) return NULL;
    s[0] = 0;
    for (int c = 0; c < k; c++) {
        if (c) strcat(s, ",");
        strcat(s, lp_model_class_name(m, c));
    }
    return s;
}

static void free_notes(char **notes, int n) {
    for (int i = 0; i < n; i++) free(notes[i]);
    free(notes);
}

/* One image's logits: NaN or Inf (damaged weights, a run that diverged) would give
 * probabilities and a loss that mean nothing. */
static bool finite_logits(const float *logits, int k) {
    for (int c = 0; c < k; c++)
        if (!isfinite(logits[c])) return false;
    return true;
}

static lp_status finite_output(const float *logits, int k, const char *path) {
    if (finite_logits(logits, k)) return LP_OK;
    return lp_fail(LP_ERR_NUMERIC, "%s: the model's output is NaN or Inf: its weights are damaged or came from a run that diverged; "
                   "use another checkpoint (best.safetensors, or one from before the divergence)", path);
}

lp_status lp_evaluate(lp_model *m, const char *dir, int batch, int skip_bad, lp_eval_result **out) {
    lp_clear_error();
    if (!m || !dir || !out) return lp_fail(LP_ERR_ARG, "lp_evaluate: model, dir and out are required (NULL given)");
    *out = NULL;
    lp_model_io io;
    lp_status s = lp_model_io_from_meta(m, &io);
    if (s) return s;
    if (batch < 1) batch = 32;
    int k = lp_model_num_classes(m);
    char *classes = join_classes(m);
    if (!classes) return LP_ERR_NOMEM;
    lp_scan_options so = lp_scan_default_options();
    so.classes = classes;
    so.skip_bad = skip_bad;
    lp_split *sp = NULL;
    char **notes = NULL;
    int nnotes = 0;
    s = lp_split_scan_dir_notes(dir, &so, &sp, &notes, &nnotes);
    free(classes);
    if (s) return s;
    if (sp->num_samples == 0) {
        /* the notes say what the folder holds and which of the model's classes have no folder */
        char said[1024] = "";
        for (int i = 0; i < nnotes && strlen(said) + 8 < sizeof said - 2; i++) /* 2: room for the ")" */
            snprintf(said + strlen(said), sizeof said - 2 - strlen(said), "%s%s", i ? "; " : " (", notes[i]);
        if (nnotes) snprintf(said + strlen(said), sizeof said - strlen(said), ")");
        s = lp_fail(LP_ERR_DATA, "%s: no images of the model's classes%s; evaluate takes a folder of class folders named as the "
                    "model's classes (loupe summary lists them)", dir, said);
        lp_split_free(sp);
        free_notes(notes, nnotes);
        return s;
    }
    io.loader.batch = batch;
    lp_loader *ld = NULL;
    s = lp_loader_create(sp, &io.loader, &ld);
    int n = sp->num_samples;
    float *probs = lp_malloc((size_t)n * k * sizeof(float));
    float *logits = lp_malloc((size_t)batch * k * sizeof(float));
    int *labels = lp_malloc((size_t)n * sizeof(int));
    double *nll = lp_malloc((size_t)n * sizeof(double));
    if (!s && (!probs || !logits || !labels || !nll)) s = LP_ERR_NOMEM;
    lp_net *net = lp_model_net(m);
    int per_image = io.loader.channels * io.loader.height * io.loader.width;
    int done = 0;
    for (int b = 0; !s && b < lp_loader_batches_per_pass(ld); b++) {
        lp_batch bt;
        if ((s = lp_loader_next(ld, &bt))) break;
        if ((s = forward_chunks(net, bt.x, bt.n, per_image, k, logits))) break;
        lp_softmax_rows(logits, bt.n, k, io.temperature, probs + (size_t)done * k);
        for (int j = 0; j < bt.n && !s; j++)
            if (!(s = finite_output(logits + (size_t)j * k, k, sp->samples[bt.indices[j]].path)))
                nll[done + j] = lp_logits_nll(logits + (size_t)j * k, bt.labels[j], k, io.temperature);
        memcpy(labels + done, bt.labels, (size_t)bt.n * sizeof(int));
        done += bt.n;
    }
    lp_loader_free(ld);
    lp_metrics mt;
    if (!s) s = lp_metrics_compute(probs, nll, labels, done, k, &mt);
    free(probs);
    free(logits);
    free(labels);
    free(nll);
    lp_eval_result *r = s ? NULL : lp_calloc(1, sizeof *r);
    if (!r) {
        if (!s) lp_metrics_free(&mt), s = LP_ERR_NOMEM;
        lp_split_free(sp);
        free_notes(notes, nnotes);
        return s;
    }
    r->n = done;
    r->num_classes = k;
    r->loss = mt.loss;
    r->accuracy = mt.accuracy;
    r->roc_auc = mt.roc_auc;
    r->precision = mt.precision;
    r->recall = mt.recall;
    r->f1 = mt.f1;
    r->support = mt.support;
    r->confusion = mt.confusion;
    r->temperature = io.temperature;
    r->class_names = lp_calloc((size_t)k, sizeof(char *));
    for (int c = 0; r->class_names && c < k; c++) r->class_names[c] = lp_strdup(lp_model_class_name(m, c));
    r->skipped_bad = sp->num_bad;
    /* the bad images skipped, named (as train's skipped.txt names them), the first 10 */
    enum { NAMED_BAD = 10 };
    const int named = sp->num_bad < NAMED_BAD ? sp->num_bad : NAMED_BAD;
    char **more = named ? realloc(notes, sizeof(char *) * (size_t)(nnotes + named + 1)) : notes;
    if (more) {
        notes = more;
        for (int i = 0; i < named; i++) {
            char *t = lp_malloc(strlen(sp->bad[i].relpath) + strlen(sp->bad[i].reason) + 32);
            if (t) sprintf(t, "skipped %s: %s", sp->bad[i].relpath, sp->bad[i].reason), notes[nnotes++] = t;
        }
        if (sp->num_bad > named) {
            char *t = lp_malloc(64);
            if (t) snprintf(t, 64, "and %d more bad images skipped", sp->num_bad - named), notes[nnotes++] = t;
        }
    }
    r->notes = notes, r->num_notes = nnotes;
    lp_split_free(sp);
    *out = r;
    return LP_OK;
}

void lp_eval_result_free(lp_eval_result *r) {
    if (!r) return;
    for (int c = 0; r->class_names && c < r->num_classes; c++) free(r->class_names[c]);
    free(r->class_names);
    free_notes(r->notes, r->num_notes);
    free(r->precision);
    free(r->recall);
    free(r->f1);
    free(r->support);
    free(r->confusion);
    free(r);
}

char *lp_eval_result_text(const lp_eval_result *r) {
    lp_clear_error();
    size_t cap = 4096 + (size_t)r->num_classes * 256 + (size_t)(r->num_classes < 21 ? r->num_classes : 21) * 21 * 12;
    for (int i = 0; i < r->num_notes; i++) cap += strlen(r->notes[i]) + 16;
    char *t = lp_malloc(cap);
    if (!t) return NULL;
    size_t o = 0;
#define OUT(...) o += (size_t)snprintf(t + o, o < cap ? cap - o : 0, __VA_ARGS__)
    OUT("%d images, %d classes%s\n", r->n, r->num_classes, r->temperature != 1.0 ? " (calibrated)" : "");
    OUT("loss: %.4f - accuracy: %.4f", r->loss, r->accuracy);
    if (!isnan(r->roc_auc)) OUT(" - roc_auc: %.4f", r->roc_auc);
    if (r->temperature != 1.0) OUT(" - temperature: %.4g", r->temperature);
    if (r->skipped_bad) OUT("\nskipped %d bad image file%s (--skip-bad)", r->skipped_bad, r->skipped_bad > 1 ? "s" : "");
    for (int i = 0; i < r->num_notes; i++) OUT("\nnote: %s", r->notes[i]);
    /* many classes (a converted 1000-class model): the rows of the classes the folder has or the
     * model predicted, and the matrix over them while it stays readable; --json has all */
    const int k = r->num_classes, many = 20;
    bool *row = lp_calloc((size_t)k, sizeof(bool));
    if (!row) {
        free(t);
        return NULL;
    }
    int shown = 0;
    for (int c = 0; c < k; c++) {
        int predicted = 0;
        for (int a = 0; a < k; a++) predicted += r->confusion[a * k + c];
        row[c] = k <= many || r->support[c] > 0 || predicted > 0;
        shown += row[c];
    }
    OUT("\n\n%-16s %9s %9s %9s %9s\n", "class", "precision", "recall", "f1", "support");
    for (int c = 0; c < k; c++)
        if (row[c]) OUT("%-16.16s %9.4f %9.4f %9.4f %9d\n", r->class_names[c], r->precision[c], r->recall[c], r->f1[c], r->support[c]);
    if (shown < k) OUT("(%d classes with no images and no predictions left out; --json lists every class)\n", k - shown);
    if (shown > many) {
        OUT("\nconfusion matrix: %d x %d classes, in --json\n", k, k);
    } else {
        OUT("\nconfusion matrix (rows: true class, columns: predicted%s)\n%-16s", shown < k ? "; the classes above" : "", "");
        for (int c = 0; c < k; c++)
            if (row[c]) OUT(" %10.10s", r->class_names[c]);
        OUT("\n");
        for (int a = 0; a < k; a++) {
            if (!row[a]) continue;
            OUT("%-16.16s", r->class_names[a]);
            for (int b = 0; b < k; b++)
                if (row[b]) OUT(" %10d", r->confusion[a * k + b]);
            OUT("\n");
        }
    }
    free(row);
#undef OUT
    return t;
}

static void num_or_null(cJSON *o, const char *k, double v) {
    if (isnan(v) || isinf(v)) cJSON_AddNullToObject(o, k);
    else cJSON_AddNumberToObject(o, k, v);
}

char *lp_eval_result_json(const lp_eval_result *r) {
    lp_clear_error();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", r->n);
    num_or_null(o, "loss", r->loss);
    num_or_null(o, "accuracy", r->accuracy);
    num_or_null(o, "roc_auc", r->roc_auc);
    cJSON_AddNumberToObject(o, "temperature", r->temperature);
    cJSON_AddNumberToObject(o, "skipped_bad", r->skipped_bad);
    cJSON *nt = cJSON_AddArrayToObject(o, "notes");
    for (int i = 0; nt && i < r->num_notes; i++) cJSON_AddItemToArray(nt, cJSON_CreateString(r->notes[i]));
    cJSON *cl = cJSON_AddArrayToObject(o, "classes");
    cJSON *per = cJSON_AddObjectToObject(o, "per_class");
    for (int c = 0; c < r->num_classes; c++) {
        cJSON_AddItemToArray(cl, cJSON_CreateString(r->class_names[c]));
        cJSON *pc = cJSON_AddObjectToObject(per, r->class_names[c]);
        cJSON_AddNumberToObject(pc, "precision", r->precision[c]);
        cJSON_AddNumberToObject(pc, "recall", r->recall[c]);
        cJSON_AddNumberToObject(pc, "f1", r->f1[c]);
        cJSON_AddNumberToObject(pc, "support", r->support[c]);
    }
    cJSON *cm = cJSON_AddArrayToObject(o, "confusion");
    for (int a = 0; a < r->num_classes; a++) {
        cJSON *row = cJSON_CreateArray();
        for (int b = 0; b < r->num_classes; b++) cJSON_AddItemToArray(row, cJSON_CreateNumber(r->confusion[a * r->num_classes + b]));
        cJSON_AddItemToArray(cm, row);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

#define PREDICT_BATCH 16
lp_status lp_predict_files(lp_model *m, const char *const *paths, int n, float *probs, lp_status *status) {
    lp_clear_error();
    if (n < 0 || (n > 0 && (!paths || !probs || !status)) || !m)
        return lp_fail(LP_ERR_ARG, "lp_predict_files: model, paths, probs and status are required (NULL given), n >= 0 (%d)", n);
    lp_model_io io;
    lp_status s = lp_model_io_from_meta(m, &io);
    if (s) return s;
    const int k = lp_model_num_classes(m);
    const size_t per = (size_t)io.loader.channels * io.loader.height * io.loader.width;
    float *x = lp_malloc(PREDICT_BATCH * per * sizeof(float)), *logits = lp_malloc((size_t)PREDICT_BATCH * k * sizeof(float));
    if (!x || !logits) s = LP_ERR_NOMEM;
    for (int b0 = 0; b0 < n && !s; b0 += PREDICT_BATCH) {
        const int nb = n - b0 < PREDICT_BATCH ? n - b0 : PREDICT_BATCH;
        /* decoding is most of a small net's time: one file a thread */
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic)
#endif
        for (int i = 0; i < nb; i++) status[b0 + i] = lp_image_load(paths[b0 + i], &io.loader, x + (size_t)i * per);
        int good[PREDICT_BATCH], ng = 0;
        for (int i = 0; i < nb; i++) {
            if (status[b0 + i]) continue;
            if (ng != i) memmove(x + (size_t)ng * per, x + (size_t)i * per, per * sizeof(float));
            good[ng++] = i;
        }
        if (ng == 0) continue;
        if ((s = lp_net_forward(lp_model_net(m), x, ng, false, 0, logits))) break;
        for (int j = 0; j < ng; j++) { /* a file's message comes from lp_predict_file */
            const float *z = logits + (size_t)j * k;
            const bool finite = finite_logits(z, k);
            status[b0 + good[j]] = finite ? LP_OK : LP_ERR_NUMERIC;
            if (finite) lp_softmax_rows(z, 1, k, io.temperature, probs + (size_t)(b0 + good[j]) * k);
        }
    }
    free(x);
    free(logits);
    return s;
}

lp_status lp_predict_file(lp_model *m, const char *path, float *probs) {
    lp_clear_error();
    if (!m || !path || !probs) return lp_fail(LP_ERR_ARG, "lp_predict_file: model, path and probs are required (NULL given)");
    lp_model_io io;
    lp_status s = lp_model_io_from_meta(m, &io);
    if (s) return s;
    int k = lp_model_num_classes(m);
    size_t per = (size_t)io.loader.channels * io.loader.height * io.loader.width;
    float *x = lp_malloc(per * sizeof(float));
    float *logits = lp_malloc((size_t)k * sizeof(float));
    if (!x || !logits) s = LP_ERR_NOMEM;
    if (!s) s = lp_image_load(path, &io.loader, x);
    if (!s) s = lp_net_forward(lp_model_net(m), x, 1, false, 0, logits);
    if (!s) s = finite_output(logits, k, path);
    if (!s) lp_softmax_rows(logits, 1, k, io.temperature, probs);
    free(x);
    free(logits);
    return s;
}
