/* Classification metrics over a table of predicted probabilities. */
#ifndef LP_METRICS_H
#define LP_METRICS_H
#include "core/core.h"

typedef struct lp_metrics {
    int n, k;
    double loss, accuracy;
    double *precision, *recall, *f1; /* k each */
    int *support;                    /* k: true count per class */
    int *confusion;                  /* k*k: row = true class, column = predicted */
    double roc_auc;                  /* binary only (positive = class 1); NAN otherwise or when undefined */
} lp_metrics;

/* The predicted class of one row of k probabilities: the first of the largest. */
int lp_probs_argmax(const float *row, int k);
/* -log softmax(z / T)[y] of one row of k logits, exactly (in double, from the logits: the
 * probabilities of a confident wrong answer underflow in float). NaN/Inf where z has them. */
double lp_logits_nll(const float *z, int y, int k, double T);
/* probs: n*k softmax probabilities; nll: n per-image losses (lp_logits_nll), whose mean is
 * the loss; labels: n class indices. LP_ERR_NUMERIC (naming the image, 1-based) where a
 * probability or loss is not finite. */
lp_status lp_metrics_compute(const float *probs, const double *nll, const int *labels, int n, int k, lp_metrics *out);
void lp_metrics_free(lp_metrics *m);
/* Area under the ROC curve from scores of the positive class (Mann-Whitney, ties count 1/2). */
double lp_roc_auc(const float *score, const int *positive, int n);
#endif
