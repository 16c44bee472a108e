/* Format sniffing, decode dispatch, colour conversion (PIL's formulas, so
 * results match Keras' load_img) and EXIF orientation. */
#include "data/data_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

lp_image_format lp_image_sniff(const uint8_t *b, size_t n) {
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return LP_FMT_JPEG;
    if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) return LP_FMT_PNG;
    if (n >= 14 && b[0] == 'B' && b[1] == 'M') return LP_FMT_BMP;
    if (n >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6' &&
        (b[2] == ' ' || b[2] == '\n' || b[2] == '\r' || b[2] == '\t'))
        return LP_FMT_PNM;
    if (n >= 4 && (memcmp(b, "II*\0", 4) == 0 || memcmp(b, "MM\0*", 4) == 0)) return LP_FMT_TIFF;
    if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) return LP_FMT_WEBP;
    if (n >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0)) return LP_FMT_GIF;
    if (n >= 12 && memcmp(b + 4, "ftyp", 4) == 0 &&
        (memcmp(b + 8, "heic", 4) == 0 || memcmp(b + 8, "heix", 4) == 0 || memcmp(b + 8, "mif1", 4) == 0 ||
         memcmp(b + 8, "avif", 4) == 0 || memcmp(b + 8, "msf1", 4) == 0))
        return LP_FMT_HEIF;
    return LP_FMT_UNKNOWN;
}

int lp_file_is_image(const char *path) {
    uint8_t head[16];
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    const size_t n = fread(head, 1, sizeof head, f);
    const int err = ferror(f);
    fclose(f);
    return err ? -1 : lp_image_sniff(head, n) != LP_FMT_UNKNOWN;
}

const char *lp_image_format_name(lp_image_format f) {
    switch (f) {
    case LP_FMT_JPEG: return "JPEG";
    case LP_FMT_PNG: return "PNG";
    case LP_FMT_BMP: return "BMP";
    case LP_FMT_PNM: return "PNM";
    case LP_FMT_TIFF: return "TIFF";
    case LP_FMT_WEBP: return "WebP";
    case LP_FMT_GIF: return "GIF";
    case LP_FMT_HEIF: return "HEIF/AVIF";
    default: return "unknown";
    }
}

lp_decode_options lp_decode_default_options(void) {
    lp_decode_options o = {.channels = 3, .max_pixels = LP_DEFAULT_MAX_PIXELS, .apply_exif = true};
    return o;
}

void lp_image_free(lp_image *img) {
    if (!img) return;
    free(img->data);
    img->data = NULL;
    img->width = img->height = img->channels = 0;
}

lp_status lp_image_alloc_checked(lp_image *img, int w, int h, int c, int64_t max_pixels, const char *fmt) {
    img->data = NULL;
    if (w <= 0 || h <= 0) return lp_fail(LP_ERR_FORMAT, "bad %s header (size %dx%d)", fmt, w, h);
    int64_t px = (int64_t)w * h;
    if (max_pixels > 0 && px > max_pixels)
        return lp_fail(LP_ERR_FORMAT, "too large (%dx%d = %lld pixels, limit %lld)", w, h, (long long)px,
                       (long long)max_pixels);
    img->data = lp_malloc((size_t)px * (size_t)c);
    if (!img->data) return LP_ERR_NOMEM;
    img->width = w;
    img->height = h;
    img->channels = c;
    return LP_OK;
}

/* ---- EXIF --------------------------------------------------------------- */
static unsigned rd16(const uint8_t *p, bool le) { return le ? (unsigned)(p[0] | p[1] << 8) : (unsigned)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p, bool le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int lp_exif_orientation(const uint8_t *t, size_t n) {
    if (n < 8) return 1;
    bool le;
    if (t[0] == 'I' && t[1] == 'I') le = true;
    else if (t[0] == 'M' && t[1] == 'M') le = false;
    else return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd > n - 2) return 1;
    unsigned count = rd16(t + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + 12 * (size_t)i;
        if (e + 12 > n) break;
        if (rd16(t + e, le) == 0x0112 && rd16(t + e + 2, le) == 3) {
            unsigned v = rd16(t + e + 8, le);
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
}

/* PIL's exif_transpose: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM,
 * 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90. */
static lp_status apply_orientation(lp_image *img, int o) {
    if (o <= 1 || o > 8) return LP_OK;
    int w = img->width, h = img->height, c = img->channels;
    bool swap = o >= 5;
    int ow = swap ? h : w, oh = swap ? w : h;
    uint8_t *out = lp_malloc((size_t)w * h * c);
    if (!out) return LP_ERR_NOMEM;
    for (int y = 0; y < oh; y++) {
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            switch (o) {
            case 2: sx = w - 1 - x; sy = y; break;
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;
            case 4: sx = x; sy = h - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = h - 1 - x; break;
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;
            default: sx = w - 1 - y; sy = x; break; /* 8 */
            }
            memcpy(out + ((size_t)y * ow + x) * c, img->data + ((size_t)sy * w + sx) * c, (size_t)c);
        }
    }
    free(img->data);
    img->data = out;
    img->width = ow;
    img->height = oh;
    return LP_OK;
}

/* ---- colour conversion (Pillow's Convert.c) ------------------------------ */
static lp_status to_channels(lp_image *img, int c) {
    if (img->channels == c) return LP_OK;
    size_t np = (size_t)img->width * img->height;
    if (img->channels == 1 && c == 3) {
        uint8_t *out = lp_malloc(np * 3);
        if (!out) return LP_ERR_NOMEM;
        for (size_t i = 0; i < np; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = img->data[i];
        free(img->data);
        img->data = out;
    } else if (img->channels == 3 && c == 1) {
        /* Pillow L24: L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16, in place */
        uint8_t *d = img->data;
        for (size_t i = 0; i < np; i++)
            d[i] = (uint8_t)((d[3 * i] * 19595u + d[3 * i + 1] * 38470u + d[3 * i + 2] * 7471u + 0x8000u) >> 16);
    } else {
        return lp_fail(LP_ERR_ARG, "unsupported channel conversion %d -> %d", img->channels, c);
    }
    img->channels = c;
    return LP_OK;
}

lp_status lp_image_decode(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img, lp_image_info *info) {
    lp_decode_options def = lp_decode_default_options();
    if (!opt) opt = &def;
    lp_image_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    memset(img, 0, sizeof *img);
    if (opt->channels != 1 && opt->channels != 3) return lp_fail(LP_ERR_ARG, "channels must be 1 or 3");
    if (n == 0) return lp_fail(LP_ERR_FORMAT, "empty file");
    lp_image_format f = lp_image_sniff(buf, n);
    info->format = f;
    lp_decoder_fn fn = NULL;
    switch (f) {
    case LP_FMT_JPEG: fn = lp_decode_jpeg; break;
    case LP_FMT_PNG: fn = lp_decode_png; break;
    case LP_FMT_BMP: fn = lp_decode_bmp; break;
    case LP_FMT_PNM: fn = lp_decode_pnm; break;
    case LP_FMT_TIFF: fn = lp_decode_tiff; break;
    case LP_FMT_WEBP: fn = lp_decode_webp; break;
    case LP_FMT_UNKNOWN: return lp_fail(LP_ERR_FORMAT, "not an image");
    default: return lp_fail(LP_ERR_FORMAT, "unsupported format (%s)", lp_image_format_name(f));
    }
    int orientation = 1;
    lp_status s = fn(buf, n, opt, img, info, &orientation);
    if (s) {
        lp_image_free(img);
        return s;
    }
    info->orientation = orientation;
    if (opt->apply_exif && orientation > 1) s = apply_orientation(img, orientation);
    if (!s) s = to_channels(img, opt->channels);
    if (s) lp_image_free(img);
    return s;
}

uint64_t lp_hash_bytes(const uint8_t *p, size_t n) {
    /* word-wise multiply-xorshift; good enough to find identical files */
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h ^= w;
        h *= 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    h ^= w;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 32;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 29);
}

int lp_data_auto_workers(bool background) {
    const int n = lp_cpu_count(); /* those the process may use (taskset, cpusets) */
    if (!background) return n > 16 ? 16 : n;
    /* Background prefetch competes with the OpenMP compute threads: a quarter of the cores. */
    int w = n / 4;
    if (w < 1) w = 1;
    return w > 8 ? 8 : w;
}
