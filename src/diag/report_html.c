/* diag: the self-contained HTML report: inline SVG charts (training curves,
 * loss decomposition, confidence, reliability before/after temperature
 * scaling, confidence histogram), thumbnails of the most affected images
 * (report_thumbs.c), the images table with trajectories, the confusion matrix.
 * No scripts, no external resources: images are data: URIs. */
#include "diag/diag_impl.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CW 560
#define CH 300
#define ML 58
#define MR 16
#define MT 46
#define MB 42

typedef struct series {
    const char *name, *color;
    const double *x, *y;
    int n;
    int dashed;
} series;

static double nice_step(double range) {
    double raw = range / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

typedef struct frame {
    double x0, x1, y0, y1;
} frame;

static double px(const frame *f, double x) { return ML + (x - f->x0) / (f->x1 - f->x0) * (CW - ML - MR); }
static double py(const frame *f, double y) { return CH - MB - (y - f->y0) / (f->y1 - f->y0) * (CH - MT - MB); }

static void axes(diag_sb *b, const frame *f, const char *title, const char *xlabel, const char *ylabel, int integer_x) {
    sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" class=\"chart\">\n", CW, CH, CW, CH);
    sb_printf(b, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", CW, CH);
    sb_puts(b, "<text x=\"10\" y=\"20\" class=\"title\">");
    sb_html(b, title);
    sb_puts(b, "</text>\n");
    double ys = nice_step(f->y1 - f->y0);
    for (double y = ceil(f->y0 / ys) * ys; y <= f->y1 + 1e-9 * ys; y += ys) {
        sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>", ML, py(f, y), CW - MR, py(f, y));
        sb_printf(b, "<text x=\"%d\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%g</text>\n", ML - 5, py(f, y) + 4, fabs(y) < 1e-12 ? 0 : y);
    }
    double xs = nice_step(f->x1 - f->x0);
    if (integer_x && xs < 1) xs = 1;
    for (double x = ceil(f->x0 / xs) * xs; x <= f->x1 + 1e-9 * xs; x += xs)
        sb_printf(b, "<text x=\"%.1f\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">%g</text>\n", px(f, x), CH - MB + 16, x);
    sb_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>", ML, CH - MB, CW - MR, CH - MB);
    sb_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>\n", ML, MT, ML, CH - MB);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" class=\"label\" text-anchor=\"middle\">", (ML + CW - MR) / 2, CH - 6);
    sb_html(b, xlabel);
    sb_printf(b, "</text><text x=\"14\" y=\"%d\" class=\"label\" text-anchor=\"middle\" transform=\"rotate(-90 14 %d)\">", (MT + CH - MB) / 2,
              (MT + CH - MB) / 2);
    sb_html(b, ylabel);
    sb_puts(b, "</text>\n");
}

static void legend(diag_sb *b, const char **names, const char **colors, int n) {
    double x = CW - MR - 6;
    for (int i = n - 1; i >= 0; i--) {
        double w = 7.0 * (double)strlen(names[i]) + 22;
        x -= w;
        sb_printf(b, "<rect x=\"%.1f\" y=\"27\" width=\"12\" height=\"10\" fill=\"%s\"/>", x, colors[i]);
        sb_printf(b, "<text x=\"%.1f\" y=\"36\" class=\"tick\">", x + 16);
        sb_html(b, names[i]);
        sb_puts(b, "</text>\n");
    }
}

static void vmark(diag_sb *b, const frame *f, double x, const char *text, const char *color) {
    if (!(x >= f->x0 && x <= f->x1)) return;
    sb_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" stroke-dasharray=\"3,3\"/>", px(f, x), MT, px(f, x), CH - MB, color);
    sb_printf(b, "<text x=\"%.1f\" y=\"%d\" class=\"tick\" fill=\"%s\">", px(f, x) + 3, MT + 10, color);
    sb_html(b, text);
    sb_puts(b, "</text>\n");
}

static void polyline(diag_sb *b, const frame *f, const series *s) {
    bool open = false;
    for (int i = 0; i < s->n; i++) {
        if (!isfinite(s->y[i])) {
            if (open) sb_puts(b, "\"/>\n");
            open = false;
            continue;
        }
        if (!open)
            sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", s->color,
                      s->dashed ? " stroke-dasharray=\"6,3\"" : "");
        open = true;
        double y = fmin(fmax(s->y[i], f->y0), f->y1);
        sb_printf(b, "%.1f,%.1f ", px(f, s->x[i]), py(f, y));
    }
    if (open) sb_puts(b, "\"/>\n");
    if (s->n == 1 && isfinite(s->y[0]))
        sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", px(f, s->x[0]), py(f, s->y[0]), s->color);
}

static void line_chart(diag_sb *b, const lp_diagnosis *d, const char *title, const char *ylabel, const series *s, int ns,
                       double ymin, double ymax) {
    frame f = {INFINITY, -INFINITY, ymin, -INFINITY};
    for (int j = 0; j < ns; j++)
        for (int i = 0; i < s[j].n; i++) {
            f.x0 = fmin(f.x0, s[j].x[i]);
            f.x1 = fmax(f.x1, s[j].x[i]);
            if (isfinite(s[j].y[i])) f.y1 = fmax(f.y1, s[j].y[i]), f.y0 = fmin(f.y0, s[j].y[i]);
        }
    if (!isfinite(f.x0)) f.x0 = 0, f.x1 = 1;
    if (f.x1 <= f.x0) f.x1 = f.x0 + 1;
    if (isfinite(ymax)) f.y1 = ymax;
    if (!isfinite(f.y1) || f.y1 <= f.y0) f.y1 = f.y0 + 1;
    else if (!isfinite(ymax)) f.y1 += 0.05 * (f.y1 - f.y0);
    axes(b, &f, title, "epoch", ylabel, 1);
    const char *names[8], *colors[8];
    for (int j = 0; j < ns && j < 8; j++) {
        polyline(b, &f, &s[j]);
        names[j] = s[j].name, colors[j] = s[j].color;
    }
    char t[64];
    snprintf(t, sizeof t, "best %d", d->tl[d->tl_B].epoch);
    vmark(b, &f, d->tl[d->tl_B].epoch, t, "#2a7");
    if (d->tl_L != d->n_tl - 1) {
        snprintf(t, sizeof t, "analysed %d", d->tl[d->tl_L].epoch);
        vmark(b, &f, d->tl[d->tl_L].epoch, t, "#a52");
    }
    legend(b, names, colors, ns < 8 ? ns : 8);
    sb_puts(b, "</svg>\n");
}

static void decomposition_chart(diag_sb *b, const lp_diagnosis *d, const double *x, const double *lw, const double *lc, int n) {
    frame f = {INFINITY, -INFINITY, 0, 0};
    for (int i = 0; i < n; i++) {
        f.x0 = fmin(f.x0, x[i]);
        f.x1 = fmax(f.x1, x[i]);
        if (isfinite(lw[i] + lc[i])) f.y1 = fmax(f.y1, lw[i] + lc[i]);
    }
    if (!isfinite(f.x0)) f.x0 = 0, f.x1 = 1;
    if (f.x1 <= f.x0) f.x1 = f.x0 + 1;
    f.y1 = f.y1 > 0 ? f.y1 * 1.05 : 1;
    axes(b, &f, "val_loss = misclassified + correct images (their shares of the mean)", "epoch",
         "contribution to mean loss", 1);
    /* correct (bottom) and misclassified (top) as bars per epoch */
    double w = (CW - ML - MR) / (f.x1 - f.x0 + 1) * 0.8;
    if (w > 24) w = 24;
    for (int i = 0; i < n; i++) {
        if (!isfinite(lw[i] + lc[i])) continue;
        double xc = px(&f, x[i]);
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#7aa6d8\"/>", xc - w / 2, py(&f, lc[i]), w,
                  py(&f, 0) - py(&f, lc[i]));
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#d9534f\"/>\n", xc - w / 2, py(&f, lc[i] + lw[i]), w,
                  py(&f, lc[i]) - py(&f, lc[i] + lw[i]));
    }
    const char *names[] = {"correct", "misclassified"}, *colors[] = {"#7aa6d8", "#d9534f"};
    legend(b, names, colors, 2);
    char t[64];
    snprintf(t, sizeof t, "best %d", d->tl[d->tl_B].epoch);
    vmark(b, &f, d->tl[d->tl_B].epoch, t, "#2a7");
    sb_puts(b, "</svg>\n");
}

static void reliability_chart(diag_sb *b, const lp_diag_bin *bins, const char *title) {
    frame f = {0, 1, 0, 1};
    axes(b, &f, title, "confidence (max probability)", "accuracy", 0);
    sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"4,4\"/>\n", px(&f, 0), py(&f, 0),
              px(&f, 1), py(&f, 1));
    for (int m = 0; m < LP_DIAG_ECE_BINS; m++) {
        if (!bins[m].count) continue;
        double lo = (double)m / LP_DIAG_ECE_BINS, hi = (double)(m + 1) / LP_DIAG_ECE_BINS;
        double a = bins[m].acc, c = bins[m].conf;
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#4a79b8\" stroke=\"#fff\"><title>%d images, "
                  "confidence %.3f, accuracy %.3f</title></rect>", px(&f, lo), py(&f, a), px(&f, hi) - px(&f, lo), py(&f, 0) - py(&f, a),
                  bins[m].count, c, a);
        double top = fmax(a, c), bot = fmin(a, c);
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#d9534f\" fill-opacity=\"0.35\"/>\n", px(&f, lo),
                  py(&f, top), px(&f, hi) - px(&f, lo), py(&f, bot) - py(&f, top));
        sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#222\"/>\n", px(&f, c), py(&f, c));
    }
    const char *names[] = {"accuracy", "gap to confidence"}, *colors[] = {"#4a79b8", "#e9a3a1"};
    legend(b, names, colors, 2);
    sb_puts(b, "</svg>\n");
}

static void histogram_chart(diag_sb *b, const lp_diagnosis *d) {
    int mx = 1;
    for (int m = 0; m < LP_DIAG_ECE_BINS; m++)
        if (d->hist_correct[m] + d->hist_wrong[m] > mx) mx = d->hist_correct[m] + d->hist_wrong[m];
    frame f = {0, 1, 0, mx * 1.05};
    char title[96];
    snprintf(title, sizeof title, "Confidence histogram at epoch %d", d->tl[d->tl_L].epoch);
    axes(b, &f, title, "confidence (max probability)", "images", 0);
    for (int m = 0; m < LP_DIAG_ECE_BINS; m++) {
        double lo = (double)m / LP_DIAG_ECE_BINS, hi = (double)(m + 1) / LP_DIAG_ECE_BINS;
        int c = d->hist_correct[m], w = d->hist_wrong[m];
        if (c)
            sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#5cb85c\" stroke=\"#fff\"/>", px(&f, lo), py(&f, c),
                      px(&f, hi) - px(&f, lo), py(&f, 0) - py(&f, c));
        if (w)
            sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#d9534f\" stroke=\"#fff\"/>\n", px(&f, lo),
                      py(&f, c + w), px(&f, hi) - px(&f, lo), py(&f, c) - py(&f, c + w));
    }
    const char *names[] = {"correct", "wrong"}, *colors[] = {"#5cb85c", "#d9534f"};
    legend(b, names, colors, 2);
    sb_puts(b, "</svg>\n");
}

static void sparkline_svg(diag_sb *b, const lp_diagnosis *d, int img) {
    int n = d->L + 1, w = 160, h = 28;
    sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">", w, h, w, h);
    sb_printf(b, "<line x1=\"0\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ccc\"/>", h / 2.0, w, h / 2.0);
    sb_puts(b, "<polyline fill=\"none\" stroke=\"#d9534f\" stroke-width=\"1.5\" points=\"");
    for (int e = 0; e < n; e++) {
        double p = diag_p_true(d, e, img);
        if (!isfinite(p)) continue;
        sb_printf(b, "%.1f,%.1f ", n > 1 ? (double)e / (n - 1) * (w - 2) + 1 : w / 2.0, (1 - p) * (h - 4) + 2);
    }
    sb_puts(b, "\"/></svg>");
}

static const char *f3(char *buf, double x) {
    if (!isfinite(x)) return strcpy(buf, "&ndash;");
    snprintf(buf, 32, "%.3g", x);
    return buf;
}

static const char CSS[] =
    "body{font-family:sans-serif;margin:24px;color:#222;max-width:1180px}"
    "h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}"
    ".headline{font-size:16px;background:#f4f6fa;padding:10px 14px;border-left:4px solid #4a79b8}"
    ".verdict{padding:8px 12px;margin:8px 0;border-radius:4px}"
    ".problem{background:#fbe9e8;border-left:4px solid #d9534f}.warning{background:#fdf5e3;border-left:4px solid #f0ad4e}"
    ".info{background:#eef5ee;border-left:4px solid #5cb85c}.vid{font-family:monospace;font-weight:bold}"
    "svg.chart{border:1px solid #eee;margin:6px}.title{font-size:13px;font-weight:bold}.tick{font-size:11px;fill:#444}"
    ".label{font-size:12px;fill:#444}.grid{stroke:#eee}.axis{stroke:#888}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}"
    "td.l,th.l{text-align:left}tr.wrong td{background:#fff4f3}.note{color:#555;font-size:13px}"
    ".charts{display:flex;flex-wrap:wrap}"
    ".thumbs{display:flex;flex-wrap:wrap;align-items:flex-start}.thumb{width:150px;margin:6px 10px 6px 0;font-size:12px}"
    ".thumb img{display:block;border:1px solid #ccc}.thumb figcaption{margin-top:4px;line-height:1.35}"
    ".placeholder{width:140px;height:96px;overflow:hidden;background:#f3f3f3;border:1px dashed #aaa;font-size:11px;"
    "padding:2px;word-break:break-all;color:#555}";

lp_status lp_diagnosis_write_html(const lp_diagnosis *d, const char *path) {
    lp_clear_error();
    if (!d) return lp_fail(LP_ERR_ARG, "lp_diagnosis_write_html: no diagnosis");
    const diag_run *r = &d->run;
    char *own = NULL;
    if (!path) {
        own = lp_path_join(r->dir, "report.html");
        if (!own) return LP_ERR_NOMEM;
        path = own;
    }
    diag_sb b = {0};
    char s[8][32];
    sb_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>loupe diagnose: ");
    sb_html(&b, r->dir);
    sb_printf(&b, "</title><style>%s</style></head><body>\n<h1>loupe diagnose: ", CSS);
    sb_html(&b, r->dir);
    sb_puts(&b, "</h1>\n<p>");
    if (r->cfg.model) {
        sb_html(&b, r->cfg.model);
        sb_puts(&b, ", ");
    }
    sb_printf(&b, "%d classes (", r->k);
    for (int c = 0; c < r->k; c++) {
        if (c) sb_puts(&b, ", ");
        sb_html(&b, r->classes[c]);
    }
    sb_printf(&b, "), %d validation images, analysed epoch %d of %d.</p>\n", r->n_img, d->tl[d->tl_L].epoch, d->tl[d->n_tl - 1].epoch);
    sb_puts(&b, "<p class=\"headline\">");
    sb_html(&b, d->headline);
    sb_puts(&b, "</p>\n<h2>Verdicts</h2>\n");
    if (!d->n_verdicts) sb_puts(&b, "<p>No problem found.</p>\n");
    for (int i = 0; i < d->n_verdicts; i++) {
        sb_printf(&b, "<div class=\"verdict %s\"><span class=\"vid\">%s</span> (%s): ", d->verdicts[i].severity, d->verdicts[i].id,
                  d->verdicts[i].severity);
        sb_html(&b, d->verdicts[i].message);
        sb_puts(&b, "</div>\n");
    }
    if (r->n_notes) {
        sb_puts(&b, "<ul class=\"note\">");
        for (int i = 0; i < r->n_notes; i++) {
            sb_puts(&b, "<li>");
            sb_html(&b, r->notes[i]);
            sb_puts(&b, "</li>");
        }
        sb_puts(&b, "</ul>\n");
    }

    /* curves */
    int n = d->n_tl;
    double *buf = calloc((size_t)n * 12, sizeof(double));
    if (!buf) {
        free(own);
        free(sb_take(&b));
        return lp_fail(LP_ERR_NOMEM, "out of memory writing the report");
    }
    double *x = buf, *tl = buf + n, *vl = buf + 2 * n, *ta = buf + 3 * n, *va = buf + 4 * n, *lw = buf + 5 * n, *lc = buf + 6 * n;
    double *cc = buf + 7 * n, *cw = buf + 8 * n, *ece = buf + 9 * n, *vlp = buf + 10 * n, *vap = buf + 11 * n;
    for (int t = 0; t < n; t++) {
        const diag_epoch *e = &d->tl[t];
        const diag_hist *h = e->hist >= 0 ? &r->hist[e->hist] : NULL;
        x[t] = e->epoch;
        tl[t] = h ? h->loss : NAN;
        ta[t] = h ? h->acc : NAN;
        vl[t] = h ? h->val_loss : e->val_loss;
        va[t] = h ? h->val_acc : e->acc;
        lw[t] = e->loss_wrong, lc[t] = e->loss_correct, cc[t] = e->conf_correct, cw[t] = e->conf_wrong, ece[t] = e->ece;
        vlp[t] = e->val_loss, vap[t] = e->acc;
    }
    sb_puts(&b, "<h2>Training curves</h2>\n<div class=\"charts\">\n");
    series ls[] = {{"train loss", "#4a79b8", x, tl, n, 0}, {"val loss", "#d9534f", x, vl, n, 0}};
    line_chart(&b, d, "Loss", "loss", ls, 2, 0, NAN);
    series as[] = {{"train accuracy", "#4a79b8", x, ta, n, 0}, {"val accuracy", "#d9534f", x, va, n, 0}};
    line_chart(&b, d, "Accuracy", "accuracy", as, 2, NAN, 1.0);
    sb_puts(&b, "</div>\n<h2>Why the loss moves: decomposition and confidence</h2>\n<div class=\"charts\">\n");
    decomposition_chart(&b, d, x, lw, lc, n);
    series cs[] = {{"conf. correct", "#5cb85c", x, cc, n, 0}, {"conf. wrong", "#d9534f", x, cw, n, 0}, {"ECE", "#888", x, ece, n, 1}};
    line_chart(&b, d, "Mean confidence on correct / wrong predictions, and ECE", "", cs, 3, 0, 1.0);
    sb_puts(&b, "</div>\n");
    (void)vlp, (void)vap;

    if (d->L >= 0 && r->ep_finite[d->L]) {
        char t1[160], t2[160];
        snprintf(t1, sizeof t1, "Reliability at epoch %d: ECE %.3f, MCE %.3f", d->tl[d->tl_L].epoch, d->ece, d->mce);
        snprintf(t2, sizeof t2, "After temperature scaling T = %.3g: ECE %.3f, MCE %.3f", d->T, d->ece_c, d->mce_c);
        sb_puts(&b, "<h2>Calibration</h2>\n");
        sb_printf(&b, "<p>NLL %s &rarr; %s, Brier (multi-class, sum over classes) %s &rarr; %s, ECE %s &rarr; %s with T = %s "
                  "(fitted on these validation predictions; accuracy unchanged).</p>\n<div class=\"charts\">\n",
                  f3(s[0], d->nll), f3(s[1], d->nll_c), f3(s[2], d->brier), f3(s[3], d->brier_c), f3(s[4], d->ece), f3(s[5], d->ece_c),
                  f3(s[6], d->T));
        reliability_chart(&b, d->bins, t1);
        reliability_chart(&b, d->bins_c, t2);
        histogram_chart(&b, d);
        sb_puts(&b, "</div>\n");

        diag_html_thumbs(&b, d);

        int eb = d->tl[d->tl_B].epoch, el = d->tl[d->tl_L].epoch, ni = r->n_img;
        const int shown = diag_images_listed(d);
        char key[64] = "highest loss first"; /* the best epoch analysed itself: no change to rank by */
        if (d->B != d->L) snprintf(key, sizeof key, "largest loss increase since epoch %d first", eb);
        sb_printf(&b, "<h2>Images</h2>\n<p>Misclassified at epoch %d first (%s), then the highest-loss correct ones. The curve is "
                  "the probability of the true class per epoch (middle line = 0.5).</p>\n", el, key);
        sb_printf(&b, "<table><tr><th class=\"l\">path</th><th class=\"l\">true</th><th class=\"l\">predicted</th><th>p_true @%d</th>"
                  "<th>p_true @%d</th><th>loss change</th><th class=\"l\">p_true per epoch</th></tr>\n", eb, el);
        for (int j = 0; j < shown; j++) {
            int img = d->order[j], pr = d->pred[(size_t)d->L * ni + img];
            sb_printf(&b, "<tr%s><td class=\"l\">", j < d->n_conf_wrong ? " class=\"wrong\"" : "");
            sb_html(&b, r->paths[img]);
            sb_puts(&b, "</td><td class=\"l\">");
            sb_html(&b, diag_class_name(d, r->labels[img]));
            sb_puts(&b, "</td><td class=\"l\">");
            sb_html(&b, diag_class_name(d, pr));
            sb_printf(&b, "</td><td>%s</td><td>%s</td><td>%+.3f</td><td class=\"l\">", f3(s[0], diag_p_true(d, d->B, img)),
                      f3(s[1], diag_p_true(d, d->L, img)), d->loss[(size_t)d->L * ni + img] - d->loss[(size_t)d->B * ni + img]);
            sparkline_svg(&b, d, img);
            sb_puts(&b, "</td></tr>\n");
        }
        sb_puts(&b, "</table>\n");

        sb_printf(&b, "<h2>Confusion matrix at epoch %d</h2>\n<table><tr><th class=\"l\">true \\ predicted</th>", el);
        int mx = 1;
        for (int i = 0; i < r->k * r->k; i++) mx = d->confusion[i] > mx ? d->confusion[i] : mx;
        for (int c = 0; c < r->k; c++) {
            sb_puts(&b, "<th>");
            sb_html(&b, r->classes[c]);
            sb_puts(&b, "</th>");
        }
        sb_puts(&b, "</tr>\n");
        for (int t = 0; t < r->k; t++) {
            sb_puts(&b, "<tr><th class=\"l\">");
            sb_html(&b, r->classes[t]);
            sb_puts(&b, "</th>");
            for (int c = 0; c < r->k; c++) {
                int v = d->confusion[t * r->k + c];
                double a = 0.08 + 0.6 * v / mx;
                sb_printf(&b, "<td style=\"background:rgba(%s,%.2f)\">%d</td>", t == c ? "92,184,92" : "217,83,79", v ? a : 0.0, v);
            }
            sb_puts(&b, "</tr>\n");
        }
        sb_puts(&b, "</table>\n");
    }

    sb_puts(&b, "<h2>Per epoch</h2>\n<details><summary>table</summary>\n<table><tr><th>epoch</th><th>loss</th><th>accuracy</th>"
                "<th>val_loss</th><th>val_accuracy</th><th>wrong</th><th>loss (wrong)</th><th>loss (correct)</th><th>share wrong</th>"
                "<th>conf correct</th><th>conf wrong</th><th>ECE</th><th>flips</th></tr>\n");
    for (int t = 0; t < n; t++) {
        const diag_epoch *e = &d->tl[t];
        sb_printf(&b, "<tr><td>%d%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d</td>", e->epoch, t == d->tl_B ? " *" : "",
                  f3(s[0], tl[t]), f3(s[1], ta[t]), f3(s[2], vl[t]), f3(s[3], va[t]), e->n_wrong);
        sb_printf(&b, "<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d</td></tr>\n", f3(s[0], e->loss_wrong),
                  f3(s[1], e->loss_correct), f3(s[2], e->share_wrong), f3(s[3], e->conf_correct), f3(s[4], e->conf_wrong),
                  f3(s[5], e->ece), e->flips);
    }
    sb_puts(&b, "</table></details>\n<p class=\"note\">* lowest val_loss. Written by loupe " LOUPE_VERSION
                ". Per-image loss = &minus;log p(true class); ECE with 15 equal-width bins (Guo et al. 2017); Brier = mean over "
                "images of the sum over classes of (p &minus; y)&sup2;.</p>\n</body></html>\n");
    free(buf);
    char *html = sb_take(&b);
    if (!html) {
        free(own);
        return lp_fail(LP_ERR_NOMEM, "out of memory writing the report");
    }
    lp_status st = lp_write_file_atomic(path, html, strlen(html));
    free(html);
    free(own);
    return st;
}
