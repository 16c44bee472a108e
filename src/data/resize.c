/* Resize, bit-exact with Pillow 9 (what Keras' load_img calls):
 *  - nearest: Pillow's ImagingScaleAffine (x_in = floor(box0 + (x + 0.5) * scale),
 *    accumulated in double like Pillow);
 *  - bilinear: Pillow's two-pass ImagingResample, triangle filter whose support
 *    grows with the downscale factor (antialiasing), 8-bit fixed-point weights
 *    (22 fraction bits), horizontal pass first with an 8-bit intermediate. */
#include "data/data_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

static inline uint8_t clip8(int v) {
    if (v >= (1 << PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PRECISION_BITS);
}

static double tri(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc. Returns ksize or -1. */
static int coeffs(int in_size, float in0, float in1, int out_size, int **bounds_out, int32_t **kk_out) {
    double scale = (double)(in1 - in0) / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *kk = lp_malloc((size_t)out_size * ksize * sizeof(double));
    int *bounds = lp_malloc((size_t)out_size * 2 * sizeof(int));
    int32_t *ik = lp_malloc((size_t)out_size * ksize * sizeof(int32_t));
    if (!kk || !bounds || !ik) {
        free(kk);
        free(bounds);
        free(ik);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = &kk[(size_t)xx * ksize];
        int x = 0;
        for (; x < xmax; x++) {
            double w = tri((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)out_size * ksize; i++)
        ik[i] = kk[i] < 0 ? (int32_t)(-0.5 + kk[i] * (1 << PRECISION_BITS)) : (int32_t)(0.5 + kk[i] * (1 << PRECISION_BITS));
    free(kk);
    *bounds_out = bounds;
    *kk_out = ik;
    return ksize;
}

static lp_status resize_bilinear(const lp_image *src, const float box[4], int dw, int dh, uint8_t *dst) {
    int c = src->channels, sw = src->width, sh = src->height;
    bool need_h = dw != sw || box[0] != 0 || box[2] != (float)dw;
    bool need_v = dh != sh || box[1] != 0 || box[3] != (float)dh;
    int *bh = NULL, *bv = NULL;
    int32_t *kh = NULL, *kv = NULL;
    int ksh = coeffs(sw, box[0], box[2], dw, &bh, &kh);
    int ksv = coeffs(sh, box[1], box[3], dh, &bv, &kv);
    uint8_t *tmp = NULL;
    lp_status s = LP_OK;
    if (ksh < 0 || ksv < 0) {
        s = LP_ERR_NOMEM;
        goto done;
    }
    int yfirst = bv[0], ylast = bv[dh * 2 - 2] + bv[dh * 2 - 1];
    const uint8_t *in = src->data;
    int in_w = sw;
    int row0 = 0; /* source row of the vertical pass' row 0 */
    if (need_h) {
        int rows = ylast - yfirst;
        tmp = lp_malloc((size_t)rows * dw * c);
        if (!tmp) {
            s = LP_ERR_NOMEM;
            goto done;
        }
        for (int y = 0; y < rows; y++) {
            const uint8_t *ir = src->data + (size_t)(y + yfirst) * sw * c;
            uint8_t *orow = tmp + (size_t)y * dw * c;
            if (c == 3) {
                for (int xx = 0; xx < dw; xx++) {
                    int xmin = bh[xx * 2], xmax = bh[xx * 2 + 1];
                    const int32_t *k = &kh[(size_t)xx * ksh];
                    const uint8_t *p = ir + (size_t)xmin * 3;
                    int s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
                    for (int x = 0; x < xmax; x++, p += 3) {
                        s0 += p[0] * k[x];
                        s1 += p[1] * k[x];
                        s2 += p[2] * k[x];
                    }
                    orow[xx * 3] = clip8(s0);
                    orow[xx * 3 + 1] = clip8(s1);
                    orow[xx * 3 + 2] = clip8(s2);
                }
            } else {
                for (int xx = 0; xx < dw; xx++) {
                    int xmin = bh[xx * 2], xmax = bh[xx * 2 + 1];
                    const int32_t *k = &kh[(size_t)xx * ksh];
                    int ss = 1 << (PRECISION_BITS - 1);
                    for (int x = 0; x < xmax; x++) ss += ir[x + xmin] * k[x];
                    orow[xx] = clip8(ss);
                }
            }
        }
        in = tmp;
        in_w = dw;
        row0 = yfirst;
        if (!need_v) {
            memcpy(dst, tmp, (size_t)dh * dw * c);
            goto done;
        }
    }
    if (need_v) {
        /* row by row: acc[x] += row[x] * k, a loop the compiler vectorises */
        size_t rw = (size_t)dw * c;
        int32_t *acc = lp_malloc(rw * sizeof(int32_t));
        if (!acc) {
            s = LP_ERR_NOMEM;
            goto done;
        }
        for (int yy = 0; yy < dh; yy++) {
            const int32_t *k = &kv[(size_t)yy * ksv];
            int ymin = bv[yy * 2] - row0, ymax = bv[yy * 2 + 1];
            for (size_t i = 0; i < rw; i++) acc[i] = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++) {
                const uint8_t *ir = in + (size_t)(y + ymin) * in_w * c;
                int32_t kk = k[y];
                for (size_t i = 0; i < rw; i++) acc[i] += ir[i] * kk;
            }
            uint8_t *orow = dst + (size_t)yy * rw;
            for (size_t i = 0; i < rw; i++) orow[i] = clip8(acc[i]);
        }
        free(acc);
    } else if (!need_h) {
        memcpy(dst, src->data, (size_t)dh * dw * c);
    }
done:
    free(bh);
    free(bv);
    free(kh);
    free(kv);
    free(tmp);
    return s;
}

static lp_status resize_nearest(const lp_image *src, const float box[4], int dw, int dh, uint8_t *dst) {
    int c = src->channels, sw = src->width, sh = src->height;
    double a0 = (double)(box[2] - box[0]) / dw, a4 = (double)(box[3] - box[1]) / dh;
    int *xin = lp_malloc(sizeof(int) * (size_t)dw);
    if (!xin) return LP_ERR_NOMEM;
    double xo = box[0] + a0 * 0.5;
    for (int x = 0; x < dw; x++) {
        int xi = xo < 0.0 ? -1 : (int)xo;
        xin[x] = xi < sw ? xi : -1;
        xo += a0;
    }
    double yo = box[1] + a4 * 0.5;
    for (int y = 0; y < dh; y++) {
        int yi = yo < 0.0 ? -1 : (int)yo;
        uint8_t *o = dst + (size_t)y * dw * c;
        if (yi < 0 || yi >= sh) {
            memset(o, 0, (size_t)dw * c);
        } else {
            const uint8_t *ir = src->data + (size_t)yi * sw * c;
            if (c == 3) {
                for (int x = 0; x < dw; x++) {
                    if (xin[x] < 0) {
                        o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = 0;
                    } else {
                        const uint8_t *p = ir + 3 * xin[x];
                        o[3 * x] = p[0];
                        o[3 * x + 1] = p[1];
                        o[3 * x + 2] = p[2];
                    }
                }
            } else {
                for (int x = 0; x < dw; x++) o[x] = xin[x] < 0 ? 0 : ir[xin[x]];
            }
        }
        yo += a4;
    }
    free(xin);
    return LP_OK;
}

lp_status lp_image_resize(const lp_image *src, float box_x, float box_y, float box_w, float box_h, int dw, int dh,
                          lp_interp interp, uint8_t *dst) {
    if (dw <= 0 || dh <= 0 || !src->data) return lp_fail(LP_ERR_ARG, "resize: bad size %dx%d", dw, dh);
    if (src->channels != 1 && src->channels != 3) return lp_fail(LP_ERR_ARG, "resize: channels must be 1 or 3");
    float box[4] = {box_x, box_y, box_x + box_w, box_y + box_h};
    if (box[0] < 0 || box[1] < 0 || box[2] > (float)src->width || box[3] > (float)src->height || box_w <= 0 || box_h <= 0)
        return lp_fail(LP_ERR_ARG, "resize: box outside the image");
    if (src->width == dw && src->height == dh && box[0] == 0 && box[1] == 0 && box[2] == (float)dw && box[3] == (float)dh) {
        memcpy(dst, src->data, (size_t)dw * dh * src->channels);
        return LP_OK;
    }
    return interp == LP_INTERP_NEAREST ? resize_nearest(src, box, dw, dh, dst) : resize_bilinear(src, box, dw, dh, dst);
}
