/* Preprocessing modes, augmentation (Keras ImageDataGenerator semantics) and
 * the per-image pipeline decode -> crop -> resize -> augment -> preprocess. */
#include "data/data_internal.h"
#include "data/transform.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *pre_names[] = {"rescale", "caffe", "torch", "none", "tf"};
#define N_PRE (int)(sizeof pre_names / sizeof pre_names[0])
static const char *interp_names[] = {"nearest", "bilinear"};

lp_status lp_preprocess_parse(const char *s, lp_preprocess *out) {
    for (int i = 0; i < N_PRE; i++)
        if (s && strcmp(s, pre_names[i]) == 0) {
            *out = (lp_preprocess)i;
            return LP_OK;
        }
    return lp_fail(LP_ERR_ARG, "unknown preprocessing '%s'; use rescale, caffe, torch, tf or none", s ? s : "");
}
const char *lp_preprocess_name(lp_preprocess p) { return (unsigned)p < (unsigned)N_PRE ? pre_names[p] : "?"; }

lp_status lp_interp_parse(const char *s, lp_interp *out) {
    for (int i = 0; i < 2; i++)
        if (s && strcmp(s, interp_names[i]) == 0) {
            *out = (lp_interp)i;
            return LP_OK;
        }
    return lp_fail(LP_ERR_ARG, "unknown interpolation '%s'; use nearest or bilinear", s ? s : "");
}
const char *lp_interp_name(lp_interp i) { return (unsigned)i < 2 ? interp_names[i] : "?"; }

lp_loader_config lp_loader_default_config(void) {
    lp_loader_config c;
    memset(&c, 0, sizeof c);
    c.batch = 32;
    c.shuffle = true;
    c.seed = 0;
    c.height = c.width = 224;
    c.channels = 3;
    c.preprocess = LP_PRE_RESCALE;
    c.interp = LP_INTERP_NEAREST;
    c.cache = true;
    c.max_pixels = LP_DEFAULT_MAX_PIXELS;
    c.cache_max_bytes = (int64_t)2 << 30;
    return c;
}

bool lp_augment_active(const lp_augment *a) {
    return a->horizontal_flip || a->vertical_flip || a->rotation_range != 0 || a->width_shift_range != 0 ||
           a->height_shift_range != 0 || a->zoom_range != 0 || a->brightness_lo != 0 || a->brightness_hi != 0;
}

lp_status lp_prepare_image(const uint8_t *buf, size_t n, const lp_loader_config *cfg, uint8_t *out) {
    lp_decode_options o = lp_decode_default_options();
    o.channels = cfg->channels;
    o.max_pixels = cfg->max_pixels;
    if (cfg->dct_scaling) {
        o.min_width = cfg->width;
        o.min_height = cfg->height;
    }
    lp_image img;
    lp_status s = lp_image_decode(buf, n, &o, &img, NULL);
    if (s) return s;
    int w = img.width, h = img.height, tw = cfg->width, th = cfg->height;
    float bx = 0, by = 0, bw = (float)w, bh = (float)h;
    if (cfg->keep_aspect && (w != tw || h != th)) {
        /* Keras load_img(keep_aspect_ratio=True): centre crop to the target aspect. */
        int64_t ch = ((int64_t)w * th) / tw, cw = ((int64_t)h * tw) / th;
        if (ch > h) ch = h;
        if (cw > w) cw = w;
        if (ch < 1) ch = 1; /* extreme aspect ratios: Keras would fail on an empty box */
        if (cw < 1) cw = 1;
        bx = (float)((w - cw) / 2);
        by = (float)((h - ch) / 2);
        bw = (float)cw;
        bh = (float)ch;
    }
    s = lp_image_resize(&img, bx, by, bw, bh, tw, th, cfg->interp, out);
    lp_image_free(&img);
    return s;
}

void lp_augment_params_draw(const lp_augment *a, int h, int w, uint64_t seed, uint64_t stream, lp_aug_params *p) {
    uint64_t sd = seed ^ 0x6a09e667f3bcc909ULL; /* keep augmentation draws apart from shuffling */
#define U(k, lo, hi) ((lo) + ((hi) - (lo)) * lp_rng_uniform(sd, stream, (k)))
    memset(p, 0, sizeof *p);
    p->theta = a->rotation_range != 0 ? U(0, -a->rotation_range, a->rotation_range) : 0;
    float hs = a->height_shift_range, ws = a->width_shift_range;
    p->tx = hs != 0 ? U(1, -hs, hs) * (hs < 1 ? (float)h : 1.0f) : 0;
    p->ty = ws != 0 ? U(2, -ws, ws) * (ws < 1 ? (float)w : 1.0f) : 0;
    p->zx = a->zoom_range != 0 ? U(3, 1 - a->zoom_range, 1 + a->zoom_range) : 1;
    p->zy = a->zoom_range != 0 ? U(4, 1 - a->zoom_range, 1 + a->zoom_range) : 1;
    p->hflip = a->horizontal_flip && lp_rng_uniform(sd, stream, 5) < 0.5f;
    p->vflip = a->vertical_flip && lp_rng_uniform(sd, stream, 6) < 0.5f;
    p->brightness = (a->brightness_lo != 0 || a->brightness_hi != 0) ? U(7, a->brightness_lo, a->brightness_hi) : 1;
#undef U
}

/* Keras apply_transform: affine (rotation, shift, zoom) about the centre, bilinear
 * (scipy order=1) with edge pixels extended (fill_mode 'nearest'), then flips,
 * then brightness (multiply, clip to 0..255). src u8 HWC -> dst float HWC. */
void lp_augment_apply(const uint8_t *src, int h, int w, int c, const lp_aug_params *p, float *dst) {
    bool affine = p->theta != 0 || p->tx != 0 || p->ty != 0 || p->zx != 1 || p->zy != 1;
    double m[6] = {1, 0, 0, 0, 1, 0}; /* in_row = m0 r + m1 c + m2; in_col = m3 r + m4 c + m5 */
    if (affine) {
        double t = p->theta * 3.14159265358979323846 / 180.0, cs = cos(t), sn = sin(t);
        /* A = R * S * Z (rows, cols); R = [[cs,-sn],[sn,cs]], S shifts by (tx,ty), Z = diag(zx,zy) */
        double a00 = cs * p->zx, a01 = -sn * p->zy, a10 = sn * p->zx, a11 = cs * p->zy;
        double b0 = cs * p->tx - sn * p->ty, b1 = sn * p->tx + cs * p->ty;
        double ox = h / 2.0 + 0.5, oy = w / 2.0 + 0.5;
        m[0] = a00;
        m[1] = a01;
        m[2] = b0 + ox - (a00 * ox + a01 * oy);
        m[3] = a10;
        m[4] = a11;
        m[5] = b1 + oy - (a10 * ox + a11 * oy);
    }
    for (int r = 0; r < h; r++) {
        int rr = p->vflip ? h - 1 - r : r;
        for (int col = 0; col < w; col++) {
            int cc = p->hflip ? w - 1 - col : col;
            float *o = dst + ((size_t)rr * w + cc) * c;
            if (!affine) {
                const uint8_t *s = src + ((size_t)r * w + col) * c;
                for (int k = 0; k < c; k++) o[k] = s[k];
            } else {
                double fr = m[0] * r + m[1] * col + m[2], fc = m[3] * r + m[4] * col + m[5];
                if (fr < 0) fr = 0;
                if (fr > h - 1) fr = h - 1;
                if (fc < 0) fc = 0;
                if (fc > w - 1) fc = w - 1;
                int r0 = (int)fr, c0 = (int)fc;
                int r1 = r0 + 1 < h ? r0 + 1 : r0, c1 = c0 + 1 < w ? c0 + 1 : c0;
                double wr = fr - r0, wc = fc - c0;
                const uint8_t *p00 = src + ((size_t)r0 * w + c0) * c, *p01 = src + ((size_t)r0 * w + c1) * c;
                const uint8_t *p10 = src + ((size_t)r1 * w + c0) * c, *p11 = src + ((size_t)r1 * w + c1) * c;
                for (int k = 0; k < c; k++)
                    o[k] = (float)((1 - wr) * ((1 - wc) * p00[k] + wc * p01[k]) + wr * ((1 - wc) * p10[k] + wc * p11[k]));
            }
        }
    }
    if (p->brightness != 1) {
        size_t n = (size_t)h * w * c;
        for (size_t i = 0; i < n; i++) {
            float v = dst[i] * p->brightness;
            dst[i] = v < 0 ? 0 : v > 255 ? 255 : v;
        }
    }
}

/* Preprocess HWC values (u8 when f == NULL) into CHW x. */
void lp_preprocess_apply(const uint8_t *u8, const float *f, int h, int w, int c, lp_preprocess mode, float *x) {
    static const float caffe_mean_bgr[3] = {103.939f, 116.779f, 123.68f};
    static const float torch_mean[3] = {0.485f, 0.456f, 0.406f}, torch_std[3] = {0.229f, 0.224f, 0.225f};
    size_t hw = (size_t)h * w;
    for (int k = 0; k < c; k++) {
        /* caffe writes BGR: output channel k takes input channel 2-k */
        int src_k = (mode == LP_PRE_CAFFE && c == 3) ? 2 - k : k;
        float *o = x + (size_t)k * hw;
        float mul = 1, add = 0;
        switch (mode) {
        case LP_PRE_RESCALE: mul = (float)(1.0 / 255.0); break;
        case LP_PRE_CAFFE: add = c == 3 ? -caffe_mean_bgr[k] : -(103.939f + 116.779f + 123.68f) / 3; break;
        case LP_PRE_TORCH: break;
        case LP_PRE_NONE: break;
        case LP_PRE_TF: mul = (float)(1.0 / 127.5), add = -1.0f; break;
        }
        if (mode == LP_PRE_TORCH) {
            float mean = c == 3 ? torch_mean[k] : 0.449f, sd = c == 3 ? torch_std[k] : 0.226f;
            for (size_t i = 0; i < hw; i++) {
                float v = u8 ? (float)u8[i * c + src_k] : f[i * c + src_k];
                o[i] = (v / 255.0f - mean) / sd;
            }
        } else {
            for (size_t i = 0; i < hw; i++) {
                float v = u8 ? (float)u8[i * c + src_k] : f[i * c + src_k];
                o[i] = v * mul + add;
            }
        }
    }
}

lp_status lp_image_load(const char *path, const lp_loader_config *cfg, float *x) {
    if (cfg->channels != 1 && cfg->channels != 3) return lp_fail(LP_ERR_ARG, "channels must be 1 or 3");
    if (cfg->width <= 0 || cfg->height <= 0) return lp_fail(LP_ERR_ARG, "bad target size %dx%d", cfg->width, cfg->height);
    uint8_t *buf;
    size_t n;
    lp_status s = lp_read_file(path, &buf, &n);
    if (s) return s;
    uint8_t *img = lp_malloc((size_t)cfg->width * cfg->height * cfg->channels);
    if (!img) {
        free(buf);
        return LP_ERR_NOMEM;
    }
    s = lp_prepare_image(buf, n, cfg, img);
    free(buf);
    if (s) {
        free(img);
        return lp_fail_context(s, "%s", path);
    }
    lp_preprocess_apply(img, NULL, cfg->height, cfg->width, cfg->channels, cfg->preprocess, x);
    free(img);
    return LP_OK;
}
