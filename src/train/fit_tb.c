/* TensorBoard output of the fit loop, with Keras' tags: epoch_loss,
 * epoch_accuracy (both writers), epoch_learning_rate (train), batch_loss;
 * weight and gradient histograms; the highest-loss validation images; the
 * diagnostics scalars and a PR curve for binary tasks. */
#include "diag/diag.h"
#include "train/fit_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WORST_IMAGES 9
#define THUMB 64

void lp_fit_tb_batch(lp_fit *f, float loss) {
    /* A failed batch scalar is not worth stopping training for; the epoch flush reports I/O errors. */
    (void)lp_tb_scalar(f->tb, "batch_loss", f->st.global_step, loss);
}

/* Keras names histograms "<layer>/kernel_0"; we use our tensor names: features.0.weight. */
static lp_status histograms(lp_fit *f, int epoch) {
    lp_status s = LP_OK;
    char tag[256];
    for (int i = 0; i < lp_net_param_count(f->net) && !s; i++) {
        const char *name = lp_net_param_name(f->net, i);
        size_t n = lp_net_param_numel(f->net, i);
        s = lp_tb_histogram(f->tb, name, epoch, lp_net_param(f->net, i), n);
        if (!s && lp_net_param_trainable(f->net, i)) {
            snprintf(tag, sizeof tag, "%s/gradient", name);
            s = lp_tb_histogram(f->tb, tag, epoch, lp_net_grad(f->net, i), n);
        }
    }
    return s;
}

/* The validation images with the highest loss this epoch, as one labelled grid. */
static lp_status worst_images(lp_fit *f, int epoch) {
    int n = f->val_count, k = f->num_classes;
    if (n <= 0) return LP_OK;
    int count = n < WORST_IMAGES ? n : WORST_IMAGES;
    int *order = lp_malloc((size_t)n * sizeof(int));
    if (!order) return LP_ERR_NOMEM;
    for (int i = 0; i < n; i++) order[i] = i;
    /* partial selection sort by p(true class) ascending = loss descending */
    for (int a = 0; a < count; a++) {
        int best = a;
        for (int b = a + 1; b < n; b++)
            if (f->val_probs[(size_t)order[b] * k + f->val_labels[order[b]]] <
                f->val_probs[(size_t)order[best] * k + f->val_labels[order[best]]])
                best = b;
        int t = order[a];
        order[a] = order[best];
        order[best] = t;
    }
    lp_loader_config lc = lp_loader_default_config();
    lc.height = lc.width = THUMB;
    lc.channels = 3;
    lc.preprocess = LP_PRE_NONE;
    lc.interp = LP_INTERP_BILINEAR;
    uint8_t *thumbs = lp_malloc((size_t)count * THUMB * THUMB * 3);
    float *x = lp_malloc((size_t)3 * THUMB * THUMB * sizeof(float));
    char labels[WORST_IMAGES][48];
    const uint8_t *imgs[WORST_IMAGES];
    const char *lab[WORST_IMAGES];
    lp_status s = (thumbs && x) ? LP_OK : LP_ERR_NOMEM;
    /* validation order = sorted sample order (no shuffle), so row i is sample i */
    for (int a = 0; a < count && !s; a++) {
        int i = order[a];
        const lp_sample *smp = &f->valid->samples[i];
        uint8_t *t = thumbs + (size_t)a * THUMB * THUMB * 3;
        if (lp_image_load(smp->path, &lc, x) != LP_OK) memset(t, 0, THUMB * THUMB * 3);
        else
            for (int y = 0; y < THUMB; y++)
                for (int xx = 0; xx < THUMB; xx++)
                    for (int c = 0; c < 3; c++) {
                        float v = x[(size_t)c * THUMB * THUMB + (size_t)y * THUMB + xx];
                        t[((size_t)y * THUMB + xx) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
                    }
        int y = f->val_labels[i];
        snprintf(labels[a], sizeof labels[a], "%.10s p=%.2f", f->train->class_names[y],
                 (double)f->val_probs[(size_t)i * k + y]);
        imgs[a] = t;
        lab[a] = labels[a];
    }
    uint8_t *grid = NULL;
    int gh, gw;
    if (!s) s = lp_image_grid(imgs, count, THUMB, THUMB, lab, &grid, &gh, &gw);
    if (!s) s = lp_tb_image_rgb(f->tb_val, "highest_loss_images", epoch, grid, gh, gw);
    free(grid);
    free(thumbs);
    free(x);
    free(order);
    return s;
}

lp_status lp_fit_tb_epoch(lp_fit *f, int epoch, double loss, double acc, double val_loss, double val_acc, double lr) {
    lp_status s = lp_tb_scalar(f->tb, "epoch_loss", epoch, loss);
    if (!s) s = lp_tb_scalar(f->tb, "epoch_accuracy", epoch, acc);
    if (!s) s = lp_tb_scalar(f->tb, "epoch_learning_rate", epoch, lr);
    if (!s && f->p.histogram_freq > 0 && epoch % f->p.histogram_freq == 0) s = histograms(f, epoch);
    if (!s && f->tb_val && f->val_count > 0) {
        s = lp_tb_scalar(f->tb_val, "epoch_loss", epoch, val_loss);
        if (!s) s = lp_tb_scalar(f->tb_val, "epoch_accuracy", epoch, val_acc);
        lp_epoch_figures fig;
        if (!s && lp_diag_epoch_figures(f->val_probs, f->val_labels, f->val_count, f->num_classes, &fig) == LP_OK) {
            s = lp_tb_scalar(f->tb_val, "diagnostics/loss_share_misclassified", epoch, fig.loss_share_wrong);
            if (!s && !isnan(fig.conf_correct))
                s = lp_tb_scalar(f->tb_val, "diagnostics/confidence_correct", epoch, fig.conf_correct);
            if (!s && !isnan(fig.conf_wrong))
                s = lp_tb_scalar(f->tb_val, "diagnostics/confidence_wrong", epoch, fig.conf_wrong);
            if (!s) s = lp_tb_scalar(f->tb_val, "diagnostics/ece", epoch, fig.ece);
            if (!s) s = lp_tb_scalar(f->tb_val, "diagnostics/misclassified", epoch, fig.n_wrong);
        }
        if (!s && f->num_classes == 2) {
            float *pos = lp_malloc((size_t)f->val_count * sizeof(float));
            uint8_t *lab = lp_malloc((size_t)f->val_count);
            if (!pos || !lab) s = LP_ERR_NOMEM;
            for (int i = 0; !s && i < f->val_count; i++) {
                pos[i] = f->val_probs[(size_t)i * 2 + 1];
                lab[i] = (uint8_t)(f->val_labels[i] == 1);
            }
            if (!s) s = lp_tb_pr_curve(f->tb_val, "pr_curve", epoch, pos, lab, (size_t)f->val_count, 0);
            free(pos);
            free(lab);
        }
        if (!s) s = worst_images(f, epoch);
        if (!s) s = lp_tb_flush(f->tb_val);
    }
    if (!s) s = lp_tb_flush(f->tb);
    return s;
}
