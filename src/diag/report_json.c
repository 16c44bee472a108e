/* diag: the machine-readable diagnosis (keys documented in loupe.h). */
#include "diag/diag_impl.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void num(cJSON *o, const char *key, double x) {
    if (isfinite(x)) cJSON_AddNumberToObject(o, key, x);
    else cJSON_AddNullToObject(o, key);
}

static void str(cJSON *o, const char *key, const char *s) {
    if (s) cJSON_AddStringToObject(o, key, s);
    else cJSON_AddNullToObject(o, key);
}

static void int_or_null(cJSON *o, const char *key, int v) {
    if (v >= 0) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

static cJSON *bins_json(const lp_diag_bin *bins) {
    cJSON *a = cJSON_CreateArray();
    for (int m = 0; m < LP_DIAG_ECE_BINS; m++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "lo", (double)m / LP_DIAG_ECE_BINS);
        cJSON_AddNumberToObject(o, "hi", (double)(m + 1) / LP_DIAG_ECE_BINS);
        cJSON_AddNumberToObject(o, "count", bins[m].count);
        num(o, "confidence", bins[m].count ? bins[m].conf : NAN);
        num(o, "accuracy", bins[m].count ? bins[m].acc : NAN);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

static cJSON *image_json(const lp_diagnosis *d, int img) {
    const diag_run *r = &d->run;
    int n = r->n_img;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", r->paths[img]);
    cJSON_AddNumberToObject(o, "label", r->labels[img]);
    cJSON_AddStringToObject(o, "label_name", diag_class_name(d, r->labels[img]));
    int pr = d->pred[(size_t)d->L * n + img];
    cJSON_AddNumberToObject(o, "predicted", pr);
    cJSON_AddStringToObject(o, "predicted_name", diag_class_name(d, pr));
    cJSON_AddBoolToObject(o, "wrong", pr != r->labels[img]);
    double lb = d->loss[(size_t)d->B * n + img], ll = d->loss[(size_t)d->L * n + img];
    num(o, "loss_best", lb);
    num(o, "loss_last", ll);
    num(o, "loss_change", ll - lb);
    num(o, "p_true_best", diag_p_true(d, d->B, img));
    num(o, "p_true_last", diag_p_true(d, d->L, img));
    num(o, "confidence_last", diag_p(d, d->L, img, pr));
    cJSON *t = cJSON_AddArrayToObject(o, "trajectory");
    for (int e = 0; e < r->n_ep; e++) {
        double p = diag_p_true(d, e, img);
        cJSON_AddItemToArray(t, isfinite(p) ? cJSON_CreateNumber(p) : cJSON_CreateNull());
    }
    return o;
}

char *lp_diagnosis_json(const lp_diagnosis *d) {
    lp_clear_error();
    if (!d) return NULL;
    const diag_run *r = &d->run;
    bool fin = d->L >= 0 && r->ep_finite[d->L];
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddStringToObject(root, "run_dir", r->dir);
    cJSON *cl = cJSON_AddArrayToObject(root, "classes");
    for (int c = 0; c < r->k; c++) cJSON_AddItemToArray(cl, cJSON_CreateString(r->classes[c]));
    cJSON_AddNumberToObject(root, "n_valid", r->n_img);
    const diag_epoch *eL = &d->tl[d->tl_L], *eB = &d->tl[d->tl_B], *eA = &d->tl[d->tl_A];
    cJSON_AddNumberToObject(root, "analysed_epoch", eL->epoch);
    cJSON_AddNumberToObject(root, "best_epoch", eB->epoch);
    cJSON_AddNumberToObject(root, "last_epoch", eL->epoch);
    cJSON_AddNumberToObject(root, "best_epoch_accuracy", eA->epoch);
    num(root, "val_loss_best", eB->val_loss);
    num(root, "val_loss_last", eL->val_loss);
    num(root, "accuracy_best", eB->acc);
    num(root, "accuracy_last", eL->acc);
    num(root, "rise", d->rise);
    num(root, "rise_share_misclassified", d->rise_share_mis);
    cJSON_AddNumberToObject(root, "n_misclassified_last", d->n_wrong_L);
    num(root, "p_true_misclassified_best", d->p_true_mis_B);
    num(root, "p_true_misclassified_last", d->p_true_mis_L);
    num(root, "ece", d->ece);
    num(root, "mce", d->mce);
    num(root, "brier", d->brier);
    num(root, "nll", d->nll);
    num(root, "temperature", d->T);
    num(root, "ece_calibrated", d->ece_c);
    num(root, "nll_calibrated", d->nll_c);
    num(root, "brier_calibrated", d->brier_c);
    cJSON *ci = cJSON_AddArrayToObject(root, "accuracy_ci");
    cJSON_AddItemToArray(ci, cJSON_CreateNumber(d->ci_lo));
    cJSON_AddItemToArray(ci, cJSON_CreateNumber(d->ci_hi));
    cJSON_AddStringToObject(root, "headline", d->headline);

    cJSON *vs = cJSON_AddArrayToObject(root, "verdicts");
    for (int i = 0; i < d->n_verdicts; i++) {
        cJSON *v = cJSON_CreateObject();
        cJSON_AddStringToObject(v, "id", d->verdicts[i].id);
        cJSON_AddStringToObject(v, "severity", d->verdicts[i].severity);
        cJSON_AddStringToObject(v, "message", d->verdicts[i].message);
        cJSON_AddItemToObject(v, "evidence", cJSON_Duplicate(d->verdicts[i].evidence, 1));
        cJSON_AddItemToArray(vs, v);
    }

    cJSON *cal = cJSON_AddObjectToObject(root, "calibration");
    cJSON_AddNumberToObject(cal, "bins", LP_DIAG_ECE_BINS);
    num(cal, "ece", d->ece);
    num(cal, "mce", d->mce);
    num(cal, "brier", d->brier);
    num(cal, "nll", d->nll);
    num(cal, "temperature", d->T);
    cJSON_AddBoolToObject(cal, "temperature_at_bound", d->T_at_bound);
    num(cal, "ece_calibrated", d->ece_c);
    num(cal, "mce_calibrated", d->mce_c);
    num(cal, "nll_calibrated", d->nll_c);
    num(cal, "brier_calibrated", d->brier_c);
    if (fin) {
        cJSON_AddItemToObject(cal, "reliability", bins_json(d->bins));
        cJSON_AddItemToObject(cal, "reliability_calibrated", bins_json(d->bins_c));
    }

    cJSON *eps = cJSON_AddArrayToObject(root, "epochs");
    for (int t = 0; t < d->n_tl; t++) {
        const diag_epoch *e = &d->tl[t];
        const diag_hist *h = e->hist >= 0 ? &r->hist[e->hist] : NULL;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "epoch", e->epoch);
        num(o, "loss", h ? h->loss : NAN);
        num(o, "accuracy", h ? h->acc : NAN);
        num(o, "val_loss", h ? h->val_loss : NAN);
        num(o, "val_accuracy", h ? h->val_acc : NAN);
        num(o, "lr", h ? h->lr : NAN);
        bool p = e->pred >= 0 && r->ep_finite[e->pred];
        cJSON_AddBoolToObject(o, "has_predictions", e->pred >= 0);
        if (p) {
            cJSON_AddNumberToObject(o, "n", e->n);
            cJSON_AddNumberToObject(o, "n_wrong", e->n_wrong);
        }
        num(o, "val_loss_pred", e->val_loss);
        num(o, "pred_accuracy", e->acc);
        num(o, "loss_wrong", e->loss_wrong);
        num(o, "loss_correct", e->loss_correct);
        num(o, "share_wrong", e->share_wrong);
        num(o, "conf_correct", e->conf_correct);
        num(o, "conf_wrong", e->conf_wrong);
        num(o, "p_true_wrong", e->p_true_wrong);
        num(o, "ece", e->ece);
        num(o, "mce", e->mce);
        num(o, "brier", e->brier);
        if (p) {
            cJSON_AddNumberToObject(o, "flips", e->flips);
            cJSON_AddNumberToObject(o, "flips_to_wrong", e->to_wrong);
            cJSON_AddNumberToObject(o, "flips_to_right", e->to_right);
        }
        cJSON_AddItemToArray(eps, o);
    }

    cJSON *imgs = cJSON_AddArrayToObject(root, "images");
    cJSON *pe = cJSON_AddArrayToObject(root, "prediction_epochs");
    for (int e = 0; e < r->n_ep; e++) cJSON_AddItemToArray(pe, cJSON_CreateNumber(r->ep_num[e]));
    if (fin) {
        const int listed = diag_images_listed(d);
        for (int j = 0; j < listed; j++) cJSON_AddItemToArray(imgs, image_json(d, d->order[j]));
        cJSON *conf = cJSON_AddArrayToObject(root, "confusion");
        for (int t = 0; t < r->k; t++) {
            cJSON *row = cJSON_CreateArray();
            for (int c = 0; c < r->k; c++) cJSON_AddItemToArray(row, cJSON_CreateNumber(d->confusion[t * r->k + c]));
            cJSON_AddItemToArray(conf, row);
        }
    } else {
        cJSON_AddNullToObject(root, "confusion");
    }

    cJSON *es = cJSON_AddObjectToObject(root, "early_stopping");
    cJSON_AddStringToObject(es, "monitor", d->es.monitor ? d->es.monitor : "val_loss");
    cJSON_AddNumberToObject(es, "patience", d->es.patience);
    int_or_null(es, "stop_epoch", d->es.valid ? d->es.stop_epoch : -1);
    int_or_null(es, "restored_epoch", d->es.valid ? d->es.restored_epoch : -1);
    cJSON_AddNumberToObject(es, "epochs_saved", d->es.epochs_saved);
    int_or_null(es, "best_epoch", d->es.valid ? d->es.best_epoch : -1);
    cJSON_AddNumberToObject(es, "needed_patience", d->es.needed_patience);
    cJSON_AddBoolToObject(es, "too_early", d->es.too_early);

    cJSON *cfg = cJSON_AddObjectToObject(root, "config");
    str(cfg, "model", r->cfg.model);
    str(cfg, "preprocess", r->cfg.preprocess);
    str(cfg, "weights", r->cfg.weights);
    str(cfg, "weights_preprocess", r->cfg.weights_preprocess);
    num(cfg, "lr", r->cfg.lr);
    int_or_null(cfg, "batch", r->cfg.batch);
    int_or_null(cfg, "epochs", r->cfg.epochs);
    str(cfg, "monitor", r->cfg.monitor);
    int_or_null(cfg, "early_stop", r->cfg.early_stop);

    cJSON *notes = cJSON_AddArrayToObject(root, "notes");
    for (int i = 0; i < r->n_notes; i++) cJSON_AddItemToArray(notes, cJSON_CreateString(r->notes[i]));

    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}
