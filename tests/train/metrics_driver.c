/* Reads "n k" then n rows "label p0 .. pk-1" from stdin; prints loss, accuracy,
 * roc_auc, then per class precision recall f1 support, then the confusion matrix. */
#include "train/metrics.h"
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    int n, k;
    if (scanf("%d %d", &n, &k) != 2) return 2;
    float *p = malloc((size_t)n * k * sizeof(float));
    int *y = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) {
        if (scanf("%d", &y[i]) != 1) return 2;
        for (int c = 0; c < k; c++)
            if (scanf("%f", &p[i * k + c]) != 1) return 2;
    }
    lp_metrics m;
    if (lp_metrics_compute(p, y, n, k, &m) != LP_OK) {
        fprintf(stderr, "%s\n", lp_errmsg());
        return 1;
    }
    printf("%.17g %.17g %.17g\n", m.loss, m.accuracy, m.roc_auc);
    for (int c = 0; c < k; c++) printf("%.17g %.17g %.17g %d\n", m.precision[c], m.recall[c], m.f1[c], m.support[c]);
    for (int i = 0; i < k * k; i++) printf("%d ", m.confusion[i]);
    printf("\n");
    lp_metrics_free(&m);
    free(p);
    free(y);
    return 0;
}
