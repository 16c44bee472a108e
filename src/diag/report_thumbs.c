/* diag: the report's "Most affected images": thumbnails of the misclassified
 * images whose loss rose most since the best-loss epoch (the ones behind "val_loss
 * rises while accuracy stays flat"), embedded as base64 PNG data: URIs so the
 * report stays one self-contained file. An image that cannot be shown gets a
 * placeholder naming it and saying why: one missing file never fails the report.
 * Size stays bounded: at most LP_DIAG_THUMBS images of at most
 * LP_DIAG_THUMB_MAX_BYTES each. */
#include "diag/diag_impl.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lp_diagnosis_set_thumbnailer(lp_diagnosis *d, lp_thumbnail_fn fn, void *ctx) {
    if (!d) return;
    d->thumb_fn = fn;
    d->thumb_ctx = ctx;
}

static double rise_of(const lp_diagnosis *d, int img) {
    size_t n = (size_t)d->run.n_img;
    return d->loss[(size_t)d->L * n + img] - d->loss[(size_t)d->B * n + img];
}

int lp_diag_most_affected(const lp_diagnosis *d, int *out, int max) {
    if (!d || d->L < 0 || !d->run.ep_finite[d->L]) return 0;
    /* order_images puts the misclassified first, by rise (descending), then index */
    int m = 0;
    for (int j = 0; j < d->n_conf_wrong && m < max; j++)
        if (rise_of(d, d->order[j]) > 0) out[m++] = d->order[j];
    return m;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void sb_base64(diag_sb *b, const uint8_t *p, size_t n) {
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
    if (!out) {
        b->oom = true;
        return;
    }
    size_t i = 0;
    for (; i + 3 <= n; i += 3, o += 4) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        o[0] = B64[v >> 18], o[1] = B64[v >> 12 & 63], o[2] = B64[v >> 6 & 63], o[3] = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        o[0] = B64[v >> 18], o[1] = B64[v >> 12 & 63];
        o[2] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        o[3] = '=';
        o += 4;
    }
    *o = 0;
    sb_puts(b, out);
    free(out);
}

/* Width and height from a PNG's IHDR; false when it is not a PNG or too large. */
static bool png_size(const uint8_t *p, size_t n, int *w, int *h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 24 || memcmp(p, sig, 8) || memcmp(p + 12, "IHDR", 4)) return false;
    uint32_t W = (uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 | (uint32_t)p[18] << 8 | p[19];
    uint32_t H = (uint32_t)p[20] << 24 | (uint32_t)p[21] << 16 | (uint32_t)p[22] << 8 | p[23];
    if (W < 1 || H < 1 || W > LP_DIAG_THUMB_SIDE || H > LP_DIAG_THUMB_SIDE) return false;
    *w = (int)W, *h = (int)H;
    return true;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s && s[1] ? s + 1 : path;
}

/* The thumbnail as an <img>, or a placeholder naming the file and the reason. */
static void thumb_image(diag_sb *b, const lp_diagnosis *d, const char *data_dir, int img) {
    const char *rel = d->run.paths[img];
    char reason[320] = "";
    uint8_t *png = NULL;
    size_t len = 0;
    int w = 0, h = 0;
    if (!d->thumb_fn) {
        snprintf(reason, sizeof reason, "no image decoder was given to the report writer");
    } else {
        char *path = rel[0] == '/' || !data_dir ? lp_strdup(rel) : lp_path_join(data_dir, rel);
        lp_status s = path ? d->thumb_fn(path, LP_DIAG_THUMB_SIDE, d->thumb_ctx, &png, &len) : LP_ERR_NOMEM;
        if (s) snprintf(reason, sizeof reason, "%s", *lp_errmsg() ? lp_errmsg() : lp_status_name(s));
        else if (len > LP_DIAG_THUMB_MAX_BYTES)
            snprintf(reason, sizeof reason, "thumbnail of %zu bytes is over the report's limit of %d", len, LP_DIAG_THUMB_MAX_BYTES);
        else if (!png_size(png, len, &w, &h))
            snprintf(reason, sizeof reason, "the thumbnail is not a PNG of at most %d x %d pixels", LP_DIAG_THUMB_SIDE, LP_DIAG_THUMB_SIDE);
        lp_clear_error();
        free(path);
    }
    if (reason[0]) {
        sb_puts(b, "<div class=\"placeholder\"><b>");
        sb_html(b, base_name(rel));
        sb_puts(b, "</b><br>");
        sb_html(b, reason);
        sb_puts(b, "</div>");
    } else {
        sb_printf(b, "<img width=\"%d\" height=\"%d\" alt=\"", w, h);
        sb_html(b, rel);
        sb_puts(b, "\" src=\"data:image/png;base64,");
        sb_base64(b, png, len);
        sb_puts(b, "\">");
    }
    free(png);
}

static void caption(diag_sb *b, const lp_diagnosis *d, int img) {
    const diag_run *r = &d->run;
    int pr = d->pred[(size_t)d->L * r->n_img + img], eb = d->tl[d->tl_B].epoch, el = d->tl[d->tl_L].epoch;
    sb_puts(b, "<figcaption><b class=\"name\">");
    sb_html(b, base_name(r->paths[img]));
    sb_puts(b, "</b><br>true <i>");
    sb_html(b, diag_class_name(d, r->labels[img]));
    sb_puts(b, "</i>, predicted <i>");
    sb_html(b, diag_class_name(d, pr));
    sb_printf(b, "</i> (p %.3f)<br>p(true) %.3f &rarr; %.3f<br>loss %+.3f (epoch %d &rarr; %d)</figcaption>", diag_p(d, d->L, img, pr),
              diag_p_true(d, d->B, img), diag_p_true(d, d->L, img), rise_of(d, img), eb, el);
}

void diag_html_thumbs(diag_sb *b, const lp_diagnosis *d) {
    int idx[LP_DIAG_THUMBS], m = lp_diag_most_affected(d, idx, LP_DIAG_THUMBS), eb = d->tl[d->tl_B].epoch, el = d->tl[d->tl_L].epoch;
    int rose = 0;
    for (int j = 0; j < d->n_conf_wrong; j++) rose += rise_of(d, d->order[j]) > 0;
    sb_puts(b, "<h2>Most affected images</h2>\n");
    if (d->B == d->L) {
        sb_printf(b, "<p>val_loss is lowest at the analysed epoch %d, so no image's loss has risen since the best epoch; the table "
                  "below lists the misclassified images.</p>\n", el);
        return;
    }
    if (!m) {
        sb_printf(b, "<p>No misclassified image's loss rose between epoch %d and epoch %d.</p>\n", eb, el);
        return;
    }
    char of[48] = "";
    if (rose > m) snprintf(of, sizeof of, " (of %d)", rose);
    sb_printf(b, "<p>The %d%s image%s misclassified at epoch %d whose loss rose most since epoch %d (lowest val_loss): the model "
              "became more confidently wrong on them, which raises val_loss while accuracy stays flat. Caption: true and predicted "
              "class with the predicted probability, the probability of the true class, the change of the image's loss.</p>\n",
              m, of, m + (rose > m) == 1 ? "" : "s", el, eb);
    const char *data_dir = d->run.cfg.data;
    sb_puts(b, "<div class=\"thumbs\">\n");
    for (int j = 0; j < m; j++) {
        sb_puts(b, "<figure class=\"thumb\" data-path=\"");
        sb_html(b, d->run.paths[idx[j]]);
        sb_puts(b, "\" title=\"");
        sb_html(b, d->run.paths[idx[j]]);
        sb_puts(b, "\">");
        thumb_image(b, d, data_dir, idx[j]);
        caption(b, d, idx[j]);
        sb_puts(b, "</figure>\n");
    }
    sb_puts(b, "</div>\n");
}
