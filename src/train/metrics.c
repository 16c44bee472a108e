#include "train/metrics.h"
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct { float s; int pos; } scored;

static int cmp_scored(const void *a, const void *b) {
    float x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return x < y ? -1 : x > y;
}

double lp_roc_auc(const float *score, const int *positive, int n) {
    scored *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) return NAN;
    long npos = 0, nneg = 0;
    for (int i = 0; i < n; i++) {
        v[i].s = score[i];
        v[i].pos = positive[i] != 0;
        if (v[i].pos) npos++; else nneg++;
    }
    bool finite = true;
    for (int i = 0; i < n; i++) finite = finite && isfinite(v[i].s);
    if (npos == 0 || nneg == 0 || !finite) { /* undefined; a NaN has no rank (the sort and the tie scan need order) */
        free(v);
        return NAN;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_scored);
    /* Sum of positive ranks, ties given their average rank. */
    double rank_sum = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && v[j].s == v[i].s) j++;
        double avg = 0.5 * (i + 1 + j); /* ranks i+1..j */
        for (int t = i; t < j; t++)
            if (v[t].pos) rank_sum += avg;
        i = j;
    }
    free(v);
    return (rank_sum - (double)npos * (npos + 1) / 2) / ((double)npos * nneg);
}

int lp_probs_argmax(const float *row, int k) {
    int pred = 0;
    for (int c = 1; c < k; c++)
        if (row[c] > row[pred]) pred = c;
    return pred;
}

double lp_logits_nll(const float *z, int y, int k, double T) {
    double mx = z[0];
    for (int c = 1; c < k; c++)
        if (z[c] > mx) mx = z[c];
    double sum = 0;
    for (int c = 0; c < k; c++) sum += exp((z[c] - mx) / T);
    return log(sum) - (z[y] - mx) / T; /* NaN or Inf where a logit is */
}

lp_status lp_metrics_compute(const float *probs, const double *nll, const int *labels, int n, int k, lp_metrics *m) {
    memset(m, 0, sizeof *m);
    m->n = n;
    m->k = k;
    m->precision = lp_calloc((size_t)k, sizeof(double));
    m->recall = lp_calloc((size_t)k, sizeof(double));
    m->f1 = lp_calloc((size_t)k, sizeof(double));
    m->support = lp_calloc((size_t)k, sizeof(int));
    m->confusion = lp_calloc((size_t)k * k, sizeof(int));
    if (!m->precision || !m->recall || !m->f1 || !m->support || !m->confusion) {
        lp_metrics_free(m);
        return LP_ERR_NOMEM;
    }
    double loss = 0;
    int correct = 0;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        const int pred = lp_probs_argmax(p, k);
        int y = labels[i];
        if (y < 0 || y >= k) {
            lp_metrics_free(m);
            return lp_fail(LP_ERR_ARG, "label %d out of range for %d classes", y, k);
        }
        bool finite = isfinite(nll[i]);
        for (int c = 0; c < k; c++) finite = finite && isfinite(p[c]);
        if (!finite) {
            lp_metrics_free(m);
            return lp_fail(LP_ERR_NUMERIC, "the model's output is NaN or Inf for image %d: no figure would mean anything", i + 1);
        }
        loss += nll[i];
        correct += pred == y;
        m->confusion[y * k + pred]++;
        m->support[y]++;
    }
    m->loss = n ? loss / n : NAN;
    m->accuracy = n ? (double)correct / n : NAN;
    for (int c = 0; c < k; c++) {
        int tp = m->confusion[c * k + c], pred_c = 0;
        for (int r = 0; r < k; r++) pred_c += m->confusion[r * k + c];
        m->precision[c] = pred_c ? (double)tp / pred_c : 0;
        m->recall[c] = m->support[c] ? (double)tp / m->support[c] : 0;
        double s = m->precision[c] + m->recall[c];
        m->f1[c] = s > 0 ? 2 * m->precision[c] * m->recall[c] / s : 0;
    }
    m->roc_auc = NAN;
    if (k == 2 && n > 0) {
        float *score = lp_malloc((size_t)n * sizeof(float));
        if (!score) {
            lp_metrics_free(m);
            return LP_ERR_NOMEM;
        }
        for (int i = 0; i < n; i++) score[i] = probs[(size_t)i * 2 + 1];
        m->roc_auc = lp_roc_auc(score, labels, n);
        free(score);
    }
    return LP_OK;
}

void lp_metrics_free(lp_metrics *m) {
    free(m->precision);
    free(m->recall);
    free(m->f1);
    free(m->support);
    free(m->confusion);
    memset(m, 0, sizeof *m);
}
