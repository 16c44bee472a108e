/* diag: the plain-text explanation: a short summary a person reads first,
 * then the tables (per epoch, images, reliability, confusion matrix). */
#include "diag/diag_impl.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WIDTH 100

static const char *f3(char *buf, double x) {
    if (!isfinite(x)) return strcpy(buf, isnan(x) ? "-" : x > 0 ? "inf" : "-inf");
    snprintf(buf, 32, "%.3g", x);
    return buf;
}
static const char *f4(char *buf, double x) {
    if (!isfinite(x)) return strcpy(buf, isnan(x) ? "-" : x > 0 ? "inf" : "-inf");
    snprintf(buf, 32, "%.4f", x);
    return buf;
}

/* Sparkline of a value in [0, 1] across epochs (at most 40 marks). */
static void sparkline(diag_sb *b, const lp_diagnosis *d, int img) {
    static const char *marks[] = {"\xe2\x96\x81", "\xe2\x96\x82", "\xe2\x96\x83", "\xe2\x96\x84",
                                  "\xe2\x96\x85", "\xe2\x96\x86", "\xe2\x96\x87", "\xe2\x96\x88"};
    int n = d->L + 1, count = n < 40 ? n : 40;
    for (int j = 0; j < count; j++) {
        int e = count > 1 ? (int)lround((double)j * (n - 1) / (count - 1)) : 0;
        if (!d->run.ep_finite[e]) {
            sb_puts(b, "?");
            continue;
        }
        double p = diag_p_true(d, e, img);
        int m = (int)floor(p * 8);
        sb_puts(b, marks[m < 0 ? 0 : m > 7 ? 7 : m]);
    }
}

static void header(diag_sb *b, const lp_diagnosis *d) {
    const diag_run *r = &d->run;
    sb_printf(b, "loupe diagnose: %s", r->dir);
    sb_puts(b, " (");
    if (r->cfg.model) sb_printf(b, "%s, ", r->cfg.model);
    sb_printf(b, "%d classes: ", r->k);
    for (int c = 0; c < r->k && c < 8; c++) sb_printf(b, "%s%s", c ? ", " : "", r->classes[c]);
    if (r->k > 8) sb_puts(b, ", ...");
    sb_printf(b, "; %d validation images; epoch %d of %d)\n", r->n_img, d->tl[d->tl_L].epoch, d->tl[d->n_tl - 1].epoch);
}

static void summary(diag_sb *b, const lp_diagnosis *d) {
    char a[32], c[32], e[32], f[32];
    sb_puts(b, "\n");
    sb_wrapped(b, d->headline, WIDTH, 0);
    sb_puts(b, "\n\n");
    if (d->n_verdicts == 0) sb_puts(b, "No problem found.\n");
    for (int i = 0; i < d->n_verdicts; i++) {
        const diag_verdict *v = &d->verdicts[i];
        char lead[64];
        snprintf(lead, sizeof lead, "[%s] ", v->severity);
        sb_puts(b, "  ");
        sb_puts(b, lead);
        sb_wrapped(b, v->message, WIDTH, 2 + (int)strlen(lead));
        sb_puts(b, "\n");
    }
    if (isfinite(d->T)) {
        char cal[1024];
        snprintf(cal, sizeof cal,
                 "Calibration at epoch %d: ECE %s, MCE %s, Brier %s (multi-class), NLL %s. Temperature scaling T = %s gives "
                 "NLL %s and ECE %s (accuracy unchanged)%s; %s%s%s",
                 d->tl[d->tl_L].epoch, f3(a, d->ece), f3(c, d->mce), f3(e, d->brier), f3(f, d->nll), f3((char[32]){0}, d->T),
                 f3((char[32]){0}, d->nll_c), f3((char[32]){0}, d->ece_c),
                 d->ece_c > d->ece + 0.01 ? "; ECE does not improve: T minimises NLL, not ECE" : "",
                 d->T_at_bound ? "T is at the fit's bound (see the note below): not worth applying" : "'loupe diagnose ",
                 d->T_at_bound ? "" : d->run.dir, d->T_at_bound ? "." : " --apply' stores T in the checkpoints.");
        sb_puts(b, "\n");
        sb_wrapped(b, cal, WIDTH, 0);
        sb_puts(b, "\n");
    }
    for (int i = 0; i < d->run.n_notes; i++) {
        sb_puts(b, i ? "      " : "\nnote: ");
        sb_wrapped(b, d->run.notes[i], WIDTH, 6);
        sb_puts(b, "\n");
    }
}

static void tables(diag_sb *b, const lp_diagnosis *d) {
    const diag_run *r = &d->run;
    char s[12][32];
    sb_puts(b, "\nPer epoch (loss/accuracy from history.csv; the rest from valid_predictions.csv; loss(wrong) + loss(right) = val_loss):\n");
    sb_printf(b, "%6s %9s %7s %9s %7s %6s %11s %11s %6s %10s %10s %7s %6s\n", "epoch", "loss", "acc", "val_loss", "val_acc",
              "wrong", "loss(wrong)", "loss(right)", "share", "conf(right)", "conf(wrong)", "ECE", "flips");
    for (int t = 0; t < d->n_tl; t++) {
        const diag_epoch *e = &d->tl[t];
        const diag_hist *h = e->hist >= 0 ? &r->hist[e->hist] : NULL;
        double vl = e->pred >= 0 ? e->val_loss : h ? h->val_loss : NAN, va = e->pred >= 0 ? e->acc : h ? h->val_acc : NAN;
        char mark = t == d->tl_B ? '*' : ' ';
        sb_printf(b, "%5d%c %9s %7s %9s %7s %6s %11s %11s %6s %10s %10s %7s %6s\n", e->epoch, mark, f4(s[0], h ? h->loss : NAN),
                  f4(s[1], h ? h->acc : NAN), f4(s[2], vl), f4(s[3], va), e->pred >= 0 ? (snprintf(s[4], 32, "%d", e->n_wrong), s[4]) : "-",
                  f4(s[5], e->loss_wrong), f4(s[6], e->loss_correct), f4(s[7], e->share_wrong), f4(s[8], e->conf_correct),
                  f4(s[9], e->conf_wrong), f4(s[10], e->ece),
                  e->pred >= 0 && t > 0 ? (snprintf(s[11], 32, "%d", e->flips), s[11]) : "-");
        if (t == d->tl_L && t != d->n_tl - 1) sb_puts(b, "  (analysed epoch above; later epochs follow)\n");
    }
    sb_printf(b, "  * lowest val_loss\n");
    if (d->L < 0 || !r->ep_finite[d->L]) return;

    int eb = d->tl[d->tl_B].epoch, el = d->tl[d->tl_L].epoch;
    int shown = d->n_listed < d->params.max_images ? d->n_listed : d->params.max_images;
    if (shown < d->n_conf_wrong && d->n_conf_wrong <= 2 * d->params.max_images) shown = d->n_conf_wrong;
    const char *key = d->B == d->L ? "highest loss first" : "most increased loss first";
    if (shown > d->n_conf_wrong)
        sb_printf(b, "\nImages: the %d misclassified at epoch %d first (%s), then the highest-loss correct ones:\n",
                  d->n_conf_wrong, el, key);
    else
        sb_printf(b, "\nImages: %d of the %d misclassified at epoch %d, %s:\n", shown, d->n_conf_wrong, el, key);
    sb_printf(b, "  %-40s %-12s %-12s %9s %9s %8s  %s\n", "path", "true", "predicted", "p_true@", "p_true@", "loss +/-",
              "p_true per epoch");
    char hb[16], hl[16];
    snprintf(hb, sizeof hb, "%d", eb);
    snprintf(hl, sizeof hl, "%d", el);
    sb_printf(b, "  %-40s %-12s %-12s %9s %9s %8s\n", "", "", "", hb, hl, "");
    for (int j = 0; j < shown; j++) {
        int img = d->order[j], n = r->n_img;
        const char *p = r->paths[img];
        size_t pl = strlen(p);
        char pbuf[48];
        if (pl > 40) snprintf(pbuf, sizeof pbuf, "...%s", p + pl - 37);
        else snprintf(pbuf, sizeof pbuf, "%s", p);
        double dl = d->loss[(size_t)d->L * n + img] - d->loss[(size_t)d->B * n + img];
        sb_printf(b, "%s %-40s %-12.12s %-12.12s %9s %9s %+8.3f  ", j < d->n_conf_wrong ? "x" : " ", pbuf,
                  diag_class_name(d, r->labels[img]), diag_class_name(d, d->pred[(size_t)d->L * n + img]),
                  f4(s[0], diag_p_true(d, d->B, img)), f4(s[1], diag_p_true(d, d->L, img)), dl);
        sparkline(b, d, img);
        sb_puts(b, "\n");
    }
    const int listed = diag_images_listed(d);
    if (shown < listed) sb_printf(b, "  (%d more in --json and the HTML report)\n", listed - shown);

    sb_printf(b, "\nReliability at epoch %d (%d equal-width bins of confidence; empty bins left out):\n", el, LP_DIAG_ECE_BINS);
    sb_printf(b, "  %-13s %6s %10s %9s %9s   %6s %10s %9s\n", "confidence", "count", "mean conf", "accuracy", "gap", "T:count",
              "mean conf", "accuracy");
    for (int m = 0; m < LP_DIAG_ECE_BINS; m++) {
        const lp_diag_bin *x = &d->bins[m], *y = &d->bins_c[m];
        if (!x->count && !y->count) continue;
        sb_printf(b, "  (%.3f,%.3f] %6d %10s %9s %9s   %6d %10s %9s\n", (double)m / LP_DIAG_ECE_BINS, (double)(m + 1) / LP_DIAG_ECE_BINS,
                  x->count, x->count ? f4(s[0], x->conf) : "-", x->count ? f4(s[1], x->acc) : "-",
                  x->count ? f4(s[2], x->acc - x->conf) : "-", y->count, y->count ? f4(s[3], y->conf) : "-",
                  y->count ? f4(s[4], y->acc) : "-");
    }

    sb_printf(b, "\nConfusion matrix at epoch %d (rows: true class, columns: predicted):\n  %12s", el, "");
    for (int c = 0; c < r->k; c++) sb_printf(b, " %10.10s", r->classes[c]);
    sb_puts(b, "\n");
    for (int t = 0; t < r->k; t++) {
        sb_printf(b, "  %-12.12s", r->classes[t]);
        for (int c = 0; c < r->k; c++) sb_printf(b, " %10d", d->confusion[t * r->k + c]);
        sb_puts(b, "\n");
    }
}

char *lp_diagnosis_text(const lp_diagnosis *d, int mode) {
    lp_clear_error();
    if (!d) return NULL;
    diag_sb b = {0};
    header(&b, d);
    summary(&b, d);
    if (mode != LP_DIAGNOSIS_SHORT) tables(&b, d);
    return sb_take(&b);
}
