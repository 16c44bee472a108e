/* Reads "n k T" then n rows "label z0 .. zk-1" (logits) from stdin and computes what
 * evaluate computes from them: probabilities (lp_softmax_rows at temperature T), each
 * image's loss (lp_logits_nll), then the metrics. Prints loss, accuracy, roc_auc, then
 * per class precision recall f1 support, then the confusion matrix; exit 1 with the
 * message on an error. */
#include "train/metrics.h"
#include "train/train.h"
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    int n, k;
    double T;
    if (scanf("%d %d %lf", &n, &k, &T) != 3) return 2;
    float *z = malloc((size_t)n * k * sizeof(float)), *p = malloc((size_t)n * k * sizeof(float));
    double *nll = malloc((size_t)n * sizeof(double));
    int *y = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) {
        if (scanf("%d", &y[i]) != 1) return 2;
        for (int c = 0; c < k; c++)
            if (scanf("%f", &z[i * k + c]) != 1) return 2;
        nll[i] = lp_logits_nll(z + (size_t)i * k, y[i], k, T);
    }
    lp_softmax_rows(z, n, k, T, p);
    lp_metrics m;
    if (lp_metrics_compute(p, nll, y, n, k, &m) != LP_OK) {
        fprintf(stderr, "%s\n", lp_errmsg());
        return 1;
    }
    printf("%.17g %.17g %.17g\n", m.loss, m.accuracy, m.roc_auc);
    for (int c = 0; c < k; c++) printf("%.17g %.17g %.17g %d\n", m.precision[c], m.recall[c], m.f1[c], m.support[c]);
    for (int i = 0; i < k * k; i++) printf("%d ", m.confusion[i]);
    printf("\n");
    lp_metrics_free(&m);
    free(z);
    free(p);
    free(nll);
    free(y);
    return 0;
}
