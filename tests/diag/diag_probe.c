/* diag_probe: prints the diag layer's figures for a prediction table so that
 * test_figures.py can check them against its own numpy/torch computation.
 *   diag_probe table FILE   FILE: "n k" then n lines "label p0 ... p(k-1)"
 *   diag_probe wilson X N
 * Output: one "name value" per line (%.17g). */
#include "diag/diag.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(const char *name, double v) { printf("%s %.17g\n", name, v); }

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "wilson")) {
        double lo, hi;
        lp_diag_wilson(atoi(argv[2]), atoi(argv[3]), &lo, &hi);
        put("wilson_lo", lo);
        put("wilson_hi", hi);
        return 0;
    }
    if (argc != 3 || strcmp(argv[1], "table")) {
        fprintf(stderr, "usage: diag_probe table FILE | diag_probe wilson X N\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "r");
    int n, k;
    if (!f || fscanf(f, "%d %d", &n, &k) != 2 || n < 1 || k < 2) {
        fprintf(stderr, "diag_probe: cannot read %s\n", argv[2]);
        return 2;
    }
    double *p = malloc((size_t)n * k * sizeof *p), *q = malloc((size_t)n * k * sizeof *q);
    float *pf = malloc((size_t)n * k * sizeof *pf);
    int *y = malloc((size_t)n * sizeof *y);
    for (int i = 0; i < n; i++) {
        if (fscanf(f, "%d", &y[i]) != 1) return 2;
        for (int c = 0; c < k; c++) {
            if (fscanf(f, "%lf", &p[(size_t)i * k + c]) != 1) return 2;
            pf[(size_t)i * k + c] = (float)p[(size_t)i * k + c];
        }
    }
    fclose(f);
    double ece, mce;
    lp_diag_bin bins[LP_DIAG_ECE_BINS];
    lp_diag_calibration(p, y, n, k, LP_DIAG_ECE_BINS, &ece, &mce, bins);
    put("ece", ece);
    put("mce", mce);
    for (int m = 0; m < LP_DIAG_ECE_BINS; m++) printf("bin%d %d %.17g %.17g\n", m, bins[m].count, bins[m].conf, bins[m].acc);
    put("brier", lp_diag_brier(p, y, n, k));
    put("nll", lp_diag_nll(p, y, n, k));
    int at_bound;
    double T = lp_diag_fit_temperature(p, y, n, k, &at_bound);
    put("temperature", T);
    put("temperature_at_bound", at_bound);
    lp_diag_apply_temperature(p, n, k, T, q);
    lp_diag_calibration(q, y, n, k, LP_DIAG_ECE_BINS, &ece, &mce, NULL);
    put("nll_after", lp_diag_nll(q, y, n, k));
    put("ece_after", ece);
    lp_epoch_figures ef;
    if (lp_diag_epoch_figures(pf, y, n, k, &ef) != LP_OK) {
        fprintf(stderr, "diag_probe: %s\n", lp_errmsg());
        return 1;
    }
    put("f_n", ef.n);
    put("f_n_wrong", ef.n_wrong);
    put("f_accuracy", ef.accuracy);
    put("f_nll", ef.nll);
    put("f_loss_share_wrong", ef.loss_share_wrong);
    put("f_conf_correct", ef.conf_correct);
    put("f_conf_wrong", ef.conf_wrong);
    put("f_ece", ef.ece);
    /* argument checks */
    y[0] = k;
    put("bad_label_rejected", lp_diag_epoch_figures(pf, y, n, k, &ef) == LP_ERR_ARG);
    free(p), free(q), free(pf), free(y);
    return 0;
}
