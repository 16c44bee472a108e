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
/* probs: n*k softmax probabilities; labels: n class indices. */
lp_status lp_metrics_compute(const float *probs, const int *labels, int n, int k, lp_metrics *out);
void lp_metrics_free(lp_metrics *m);
/* Area under the ROC curve from scores of the positive class (Mann-Whitney, ties count 1/2). */
double lp_roc_auc(const float *score, const int *positive, int n);
#endif
