/* diag: figures on one table of predictions: accuracy, loss decomposition,
 * confidence, ECE/MCE (Guo et al. 2017), Brier, NLL, temperature scaling,
 * Wilson interval. Conventions in diag.h. */
#include "diag/diag.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int lp_diag_argmax(const double *row, int k) {
    int best = 0;
    for (int c = 1; c < k; c++)
        if (row[c] > row[best]) best = c;
    return best;
}

double lp_diag_image_loss(double p_true) {
    if (isnan(p_true)) return NAN; /* no figure for an image the model gave no probability */
    return -log(p_true > LP_DIAG_P_FLOOR ? p_true : LP_DIAG_P_FLOOR);
}

void lp_diag_calibration(const double *probs, const int *labels, int n, int k, int nbins,
                         double *ece, double *mce, lp_diag_bin *bins) {
    if (nbins < 1) nbins = LP_DIAG_ECE_BINS;
    double *conf_sum = calloc((size_t)nbins, sizeof(double));
    double *acc_sum = calloc((size_t)nbins, sizeof(double));
    int *count = calloc((size_t)nbins, sizeof(int));
    if (!conf_sum || !acc_sum || !count) {
        free(conf_sum), free(acc_sum), free(count);
        if (ece) *ece = NAN;
        if (mce) *mce = NAN;
        return;
    }
    for (int i = 0; i < n; i++) {
        const double *row = probs + (size_t)i * k;
        int pred = lp_diag_argmax(row, k);
        double conf = row[pred];
        /* bin m (0-based) holds (m/M, (m+1)/M]; confidence 0 goes to bin 0. */
        int m = 0;
        while (m < nbins - 1 && conf > (double)(m + 1) / nbins) m++;
        count[m]++;
        conf_sum[m] += conf;
        acc_sum[m] += pred == labels[i] ? 1.0 : 0.0;
    }
    double e = 0, worst = 0;
    for (int m = 0; m < nbins; m++) {
        double c = count[m] ? conf_sum[m] / count[m] : 0, a = count[m] ? acc_sum[m] / count[m] : 0;
        if (count[m]) {
            double gap = fabs(a - c);
            e += (double)count[m] / n * gap;
            if (gap > worst) worst = gap;
        }
        if (bins) bins[m] = (lp_diag_bin){count[m], c, a};
    }
    if (ece) *ece = n > 0 ? e : NAN;
    if (mce) *mce = n > 0 ? worst : NAN;
    free(conf_sum), free(acc_sum), free(count);
}

double lp_diag_brier(const double *probs, const int *labels, int n, int k) {
    double s = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < k; c++) {
            double d = probs[(size_t)i * k + c] - (c == labels[i] ? 1.0 : 0.0);
            s += d * d;
        }
    return n > 0 ? s / n : NAN;
}

double lp_diag_nll(const double *probs, const int *labels, int n, int k) {
    double s = 0;
    for (int i = 0; i < n; i++) s += lp_diag_image_loss(probs[(size_t)i * k + labels[i]]);
    return n > 0 ? s / n : NAN;
}

/* ---- temperature scaling ----------------------------------------------- */
/* f(s) = mean_i [ -s z_iy + logsumexp_c(s z_ic) ], z = log p, s = 1/T.
 * f'(s) = mean_i [ E_q[z_i] - z_iy ],  f''(s) = mean_i Var_q[z_i] >= 0. */
static void nll_derivs(const double *z, const int *labels, int n, int k, double s, double *f, double *d1, double *d2) {
    double F = 0, D1 = 0, D2 = 0;
    for (int i = 0; i < n; i++) {
        const double *zi = z + (size_t)i * k;
        double mx = -INFINITY;
        for (int c = 0; c < k; c++) mx = fmax(mx, s * zi[c]);
        double sum = 0, ez = 0, ez2 = 0;
        for (int c = 0; c < k; c++) {
            double w = exp(s * zi[c] - mx);
            sum += w;
            ez += w * zi[c];
            ez2 += w * zi[c] * zi[c];
        }
        ez /= sum;
        ez2 /= sum;
        F += -s * zi[labels[i]] + mx + log(sum);
        D1 += ez - zi[labels[i]];
        D2 += fmax(ez2 - ez * ez, 0.0);
    }
    if (f) *f = F / n;
    if (d1) *d1 = D1 / n;
    if (d2) *d2 = D2 / n;
}

double lp_diag_fit_temperature(const double *probs, const int *labels, int n, int k, int *at_bound) {
    if (at_bound) *at_bound = 0;
    if (n < 1 || k < 2) return 1.0;
    double *z = malloc((size_t)n * k * sizeof(double));
    if (!z) return 1.0;
    for (size_t j = 0; j < (size_t)n * k; j++) z[j] = log(probs[j] > LP_DIAG_P_FLOOR ? probs[j] : LP_DIAG_P_FLOOR);
    double lo = 1.0 / LP_DIAG_T_MAX, hi = 1.0 / LP_DIAG_T_MIN, d_lo, d_hi, d, dd;
    nll_derivs(z, labels, n, k, lo, NULL, &d_lo, NULL);
    nll_derivs(z, labels, n, k, hi, NULL, &d_hi, NULL);
    /* flat: every row uniform, to the rounding of the probabilities read (the derivative's
     * sign is then rounding's, and would send the fit to a bound) */
    double spread = 0;
    for (int i = 0; i < n; i++) {
        const double *zi = z + (size_t)i * k;
        double mn = zi[0], mx = zi[0];
        for (int c = 1; c < k; c++) mn = fmin(mn, zi[c]), mx = fmax(mx, zi[c]);
        spread = fmax(spread, mx - mn);
    }
    double s;
    if (spread <= LP_DIAG_FLAT_SPREAD) {
        s = 1.0;
    } else if (d_lo >= 0) {
        s = lo;
        if (at_bound) *at_bound = 1;
    } else if (d_hi <= 0) {
        s = hi;
        if (at_bound) *at_bound = 1;
    } else {
        /* Safeguarded Newton: keep the bracket [lo, hi] with f'(lo) < 0 < f'(hi);
         * take the Newton step when it falls inside, else the geometric midpoint. */
        s = 1.0;
        for (int it = 0; it < 200; it++) {
            nll_derivs(z, labels, n, k, s, NULL, &d, &dd);
            if (d == 0) break;
            if (d < 0) lo = s; else hi = s;
            double next = dd > 0 ? s - d / dd : NAN;
            if (!(next > lo && next < hi)) next = sqrt(lo * hi);
            if (fabs(next - s) <= 1e-14 * s || hi - lo <= 1e-14 * hi) {
                s = next;
                break;
            }
            s = next;
        }
    }
    free(z);
    return 1.0 / s;
}

void lp_diag_apply_temperature(const double *probs, int n, int k, double T, double *out) {
    for (int i = 0; i < n; i++) {
        const double *p = probs + (size_t)i * k;
        double *q = out + (size_t)i * k;
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < k; c++) {
            q[c] = log(p[c] > LP_DIAG_P_FLOOR ? p[c] : LP_DIAG_P_FLOOR) / T;
            mx = fmax(mx, q[c]);
        }
        for (int c = 0; c < k; c++) sum += (q[c] = exp(q[c] - mx));
        for (int c = 0; c < k; c++) q[c] /= sum;
    }
}

void lp_diag_wilson(int x, int n, double *lo, double *hi) {
    if (n <= 0) {
        *lo = 0, *hi = 1;
        return;
    }
    const double z = 1.959963984540054;
    double p = (double)x / n, z2n = z * z / n;
    double centre = (p + z2n / 2) / (1 + z2n);
    double half = z / (1 + z2n) * sqrt(p * (1 - p) / n + z * z / (4.0 * n * n));
    *lo = fmax(0.0, centre - half);
    *hi = fmin(1.0, centre + half);
}

/* ---- per-epoch figures for the training loop --------------------------- */
lp_status lp_diag_epoch_figures(const float *probs, const int *labels, int n, int k, lp_epoch_figures *out) {
    memset(out, 0, sizeof *out);
    if (!probs || !labels || n < 1 || k < 2)
        return lp_fail(LP_ERR_ARG, "lp_diag_epoch_figures: need n >= 1 images and k >= 2 classes (got n=%d, k=%d)", n, k);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return lp_fail(LP_ERR_ARG, "lp_diag_epoch_figures: label %d of image %d is outside [0, %d)", labels[i], i, k);
    double *p = lp_malloc((size_t)n * k * sizeof(double));
    if (!p) return LP_ERR_NOMEM;
    for (size_t j = 0; j < (size_t)n * k; j++) p[j] = probs[j];
    double sum_wrong = 0, sum_all = 0, cc = 0, cw = 0;
    int n_wrong = 0;
    for (int i = 0; i < n; i++) {
        const double *row = p + (size_t)i * k;
        int pred = lp_diag_argmax(row, k);
        double l = lp_diag_image_loss(row[labels[i]]);
        sum_all += l;
        if (pred != labels[i]) {
            n_wrong++;
            sum_wrong += l;
            cw += row[pred];
        } else {
            cc += row[pred];
        }
    }
    out->n = n;
    out->n_wrong = n_wrong;
    out->accuracy = (double)(n - n_wrong) / n;
    out->nll = sum_all / n;
    out->loss_share_wrong = sum_all > 0 ? sum_wrong / sum_all : 0.0;
    out->conf_correct = n - n_wrong > 0 ? cc / (n - n_wrong) : NAN;
    out->conf_wrong = n_wrong > 0 ? cw / n_wrong : NAN;
    lp_diag_calibration(p, labels, n, k, LP_DIAG_ECE_BINS, &out->ece, NULL, NULL);
    free(p);
    return LP_OK;
}
