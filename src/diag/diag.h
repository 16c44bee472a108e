/* diag: internal API of the diagnostics layer (knows only core + cJSON).
 *
 * Figures on one table of validation predictions (n images, k classes):
 *   probs:  (n, k) row-major, softmax probabilities, each row sums to ~1
 *   labels: (n,)   true class index in [0, k)
 * Conventions shared by every function here (and by `loupe diagnose`):
 *   - prediction = argmax of the row (first index on ties, like numpy);
 *   - confidence = the largest probability of the row;
 *   - per-image loss = -log(max(p_true, LP_DIAG_P_FLOOR));
 *   - ECE / MCE: Guo et al. 2017, M equal-width bins (lo, hi], edges m/M;
 *     ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)|, MCE = max over non-empty bins;
 *   - Brier: multi-class form, mean over images of sum_k (p_k - y_k)^2
 *     (range [0, 2]; the binary "one column" form is half of it for k = 2);
 *   - temperature scaling: logits z = log p (exact for softmax up to a per-row
 *     constant), calibrated probabilities softmax(z / T), T > 0 minimising NLL. */
#ifndef LP_DIAG_H
#define LP_DIAG_H

#include "core/core.h"

/* probabilities below count as this in logs: the smallest float, so that any probability the
 * predictions CSV holds keeps its exact loss (up to 103.3); 0, an underflow, counts as it */
#define LP_DIAG_P_FLOOR 1.40129846e-45
#define LP_DIAG_ECE_BINS 15
#define LP_DIAG_FLAT_SPREAD 1e-6 /* log p spread of a row still counted uniform */
#define LP_DIAG_T_MIN 0.01      /* temperature fit bounds */
#define LP_DIAG_T_MAX 100.0

/* Per-epoch figures for the training loop's TensorBoard scalars. */
typedef struct lp_epoch_figures {
    int n;                   /* images */
    int n_wrong;             /* misclassified images */
    double accuracy;         /* fraction with argmax == label */
    double nll;              /* mean per-image loss (the validation loss) */
    double loss_share_wrong; /* fraction of the summed loss from misclassified images (0 if loss is 0) */
    double conf_correct;     /* mean confidence on correct predictions; NaN if none */
    double conf_wrong;       /* mean confidence on wrong predictions; NaN if none */
    double ece;              /* 15-bin ECE */
} lp_epoch_figures;

/* probs: n*k floats. Returns LP_ERR_ARG for n < 1, k < 2 or a label out of range. */
lp_status lp_diag_epoch_figures(const float *probs, const int *labels, int n, int k, lp_epoch_figures *out);

/* ---- the same figures on double tables (what diagnose uses) ----------- */
typedef struct lp_diag_bin {
    int count;
    double conf; /* mean confidence in the bin (0 if empty) */
    double acc;  /* accuracy in the bin (0 if empty) */
} lp_diag_bin;

/* Guo et al. ECE and MCE with `nbins` bins; bins (may be NULL) gets nbins entries. */
void lp_diag_calibration(const double *probs, const int *labels, int n, int k, int nbins,
                         double *ece, double *mce, lp_diag_bin *bins);
double lp_diag_brier(const double *probs, const int *labels, int n, int k);
double lp_diag_nll(const double *probs, const int *labels, int n, int k);
int lp_diag_argmax(const double *row, int k);
double lp_diag_image_loss(double p_true);

/* Fits T in [LP_DIAG_T_MIN, LP_DIAG_T_MAX] minimising the NLL of softmax(log p / T).
 * NLL is convex in the inverse temperature s = 1/T (its second derivative is the
 * mean variance of log p under the scaled distribution), so a safeguarded Newton
 * iteration on s inside a sign-change bracket of the derivative converges to the
 * global minimum. *at_bound (may be NULL) is set when the minimum lies at a bound
 * (e.g. every image correct: T -> 0). Returns 1.0 for a flat objective: every row uniform
 * to within LP_DIAG_FLAT_SPREAD in log p (the rounding of written probabilities). */
double lp_diag_fit_temperature(const double *probs, const int *labels, int n, int k, int *at_bound);
/* Writes softmax(log p / T) for the whole table into out (n*k). */
void lp_diag_apply_temperature(const double *probs, int n, int k, double T, double *out);

/* Wilson score interval (z = 1.96) of a proportion successes/n. */
void lp_diag_wilson(int successes, int n, double *lo, double *hi);

/* ---- thumbnails of the most affected images in the HTML report ---------
 * (provider: lp_diagnosis_set_thumbnailer in loupe.h) */
#define LP_DIAG_THUMBS 8                   /* at most this many images */
#define LP_DIAG_THUMB_SIDE 96              /* longer side in pixels */
#define LP_DIAG_THUMB_MAX_BYTES (64 * 1024) /* a larger PNG is refused: keeps the report small */

/* Images misclassified at the analysed epoch whose loss rose since the best-loss
 * epoch, largest rise first (then by index); writes up to max indices into out
 * and returns their count. */
int lp_diag_most_affected(const lp_diagnosis *d, int *out, int max);

#endif
