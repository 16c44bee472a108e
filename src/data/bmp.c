/* BMP (uncompressed 1/4/8-bit palette, 16/24/32-bit, BI_BITFIELDS) and
 * binary PNM (P4 bitmap, P5 gray, P6 RGB; maxval up to 65535, rescaled to
 * 0..255). Hand-written: a few dozen lines each, every read bounds-checked. */
#include "data/data_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static unsigned le16(const uint8_t *p) { return (unsigned)(p[0] | p[1] << 8); }

static int mask_shift(uint32_t m) {
    int s = 0;
    if (!m) return 0;
    while (!(m & 1)) {
        m >>= 1;
        s++;
    }
    return s;
}
static int mask_bits(uint32_t m) {
    int b = 0;
    while (m) {
        b += (int)(m & 1);
        m >>= 1;
    }
    return b;
}
static uint8_t mask_get(uint32_t v, uint32_t m) {
    if (!m) return 0;
    int s = mask_shift(m), b = mask_bits(m);
    uint32_t x = (v & m) >> s, mx = (b >= 32) ? 0xffffffffu : ((1u << b) - 1);
    return (uint8_t)((x * 255u + mx / 2) / mx);
}

lp_status lp_decode_bmp(const uint8_t *b, size_t n, const lp_decode_options *opt, lp_image *img,
                        lp_image_info *info, int *orientation) {
    (void)orientation;
    if (n < 26) return lp_fail(LP_ERR_FORMAT, "truncated BMP");
    uint32_t off = le32(b + 10), hs = le32(b + 14);
    if (hs < 12 || 14 + (size_t)hs > n) return lp_fail(LP_ERR_FORMAT, hs < 12 ? "corrupt BMP (bad header)" : "truncated BMP");
    int32_t w, h;
    unsigned bpp, comp = 0, ncolors = 0;
    if (hs == 12) {
        w = (int32_t)le16(b + 18);
        h = (int32_t)(int16_t)le16(b + 20);
        bpp = le16(b + 24);
    } else {
        if (hs < 40) return lp_fail(LP_ERR_FORMAT, "corrupt BMP (bad header size %u)", hs);
        w = (int32_t)le32(b + 18);
        h = (int32_t)le32(b + 22);
        bpp = le16(b + 28);
        comp = le32(b + 30);
        ncolors = le32(b + 46);
    }
    bool topdown = h < 0;
    if (h < 0) h = h == INT32_MIN ? 0 : -h;
    info->width = w;
    info->height = h;
    snprintf(info->mode, sizeof info->mode, "%s", bpp <= 8 ? "P" : bpp == 32 ? "RGBA" : "RGB");
    if (w <= 0 || h <= 0) return lp_fail(LP_ERR_FORMAT, "corrupt BMP (size %dx%d)", (int)w, (int)h);
    int64_t px = (int64_t)w * h;
    if (opt->max_pixels > 0 && px > opt->max_pixels)
        return lp_fail(LP_ERR_FORMAT, "too large (%dx%d = %lld pixels, limit %lld)", (int)w, (int)h, (long long)px,
                       (long long)opt->max_pixels);
    uint32_t rm = 0x00ff0000, gm = 0x0000ff00, bm = 0x000000ff;
    if (comp == 3 || comp == 6) { /* BI_BITFIELDS: masks after a 40-byte header or inside V4/V5 */
        if (14 + 40 + 12 > n) return lp_fail(LP_ERR_FORMAT, "truncated BMP");
        rm = le32(b + 54);
        gm = le32(b + 58);
        bm = le32(b + 62);
        if (bpp != 16 && bpp != 32) return lp_fail(LP_ERR_FORMAT, "corrupt BMP (bitfields with %u bits)", bpp);
    } else if (comp != 0) {
        return lp_fail(LP_ERR_FORMAT, "unsupported BMP compression (%u)", comp);
    } else if (bpp == 16) {
        rm = 0x7c00;
        gm = 0x03e0;
        bm = 0x001f;
    }
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return lp_fail(LP_ERR_FORMAT, "unsupported BMP bit depth (%u)", bpp);
    uint8_t pal[256][3];
    memset(pal, 0, sizeof pal);
    if (bpp <= 8) {
        unsigned maxc = 1u << bpp, entry = hs == 12 ? 3 : 4;
        if (ncolors == 0 || ncolors > maxc) ncolors = maxc;
        size_t p0 = 14 + hs;
        if (p0 + (size_t)ncolors * entry > n) return lp_fail(LP_ERR_FORMAT, "truncated BMP");
        for (unsigned i = 0; i < ncolors; i++) {
            pal[i][0] = b[p0 + i * entry + 2];
            pal[i][1] = b[p0 + i * entry + 1];
            pal[i][2] = b[p0 + i * entry + 0];
        }
    }
    size_t stride = (((size_t)w * bpp + 31) / 32) * 4;
    if (off > n || stride * (size_t)h > n - off) return lp_fail(LP_ERR_FORMAT, "truncated BMP");
    lp_status s = lp_image_alloc_checked(img, w, h, 3, 0, "BMP");
    if (s) return s;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = b + off + stride * (size_t)(topdown ? y : h - 1 - y);
        uint8_t *d = img->data + (size_t)y * w * 3;
        for (int x = 0; x < w; x++, d += 3) {
            if (bpp <= 8) {
                unsigned idx;
                if (bpp == 8) idx = row[x];
                else if (bpp == 4) idx = (row[x >> 1] >> (x & 1 ? 0 : 4)) & 15;
                else idx = (row[x >> 3] >> (7 - (x & 7))) & 1;
                memcpy(d, pal[idx], 3);
            } else if (bpp == 24) {
                d[0] = row[3 * x + 2];
                d[1] = row[3 * x + 1];
                d[2] = row[3 * x];
            } else {
                uint32_t v = bpp == 16 ? le16(row + 2 * x) : le32(row + 4 * x);
                d[0] = mask_get(v, rm);
                d[1] = mask_get(v, gm);
                d[2] = mask_get(v, bm);
            }
        }
    }
    return LP_OK;
}

/* ---- PNM ------------------------------------------------------------------ */
static bool pnm_int(const uint8_t *b, size_t n, size_t *pos, long *out) {
    size_t p = *pos;
    for (;;) {
        while (p < n && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r')) p++;
        if (p < n && b[p] == '#') {
            while (p < n && b[p] != '\n') p++;
            continue;
        }
        break;
    }
    if (p >= n || b[p] < '0' || b[p] > '9') return false;
    long v = 0;
    while (p < n && b[p] >= '0' && b[p] <= '9') {
        v = v * 10 + (b[p] - '0');
        if (v > 1000000000L) return false;
        p++;
    }
    *pos = p;
    *out = v;
    return true;
}

lp_status lp_decode_pnm(const uint8_t *b, size_t n, const lp_decode_options *opt, lp_image *img,
                        lp_image_info *info, int *orientation) {
    (void)orientation;
    char kind = (char)b[1];
    if (kind == '1' || kind == '2' || kind == '3')
        return lp_fail(LP_ERR_FORMAT, "unsupported format (ASCII PNM P%c)", kind);
    size_t pos = 2;
    long w, h, maxval = 1;
    if (!pnm_int(b, n, &pos, &w) || !pnm_int(b, n, &pos, &h) || (kind != '4' && !pnm_int(b, n, &pos, &maxval)))
        return lp_fail(LP_ERR_FORMAT, "corrupt PNM header");
    if (pos >= n) return lp_fail(LP_ERR_FORMAT, "truncated PNM");
    pos++; /* one whitespace after the header */
    info->width = (int)w;
    info->height = (int)h;
    snprintf(info->mode, sizeof info->mode, "%s", kind == '4' ? "1" : kind == '5' ? (maxval > 255 ? "I;16" : "L") : "RGB");
    if (w <= 0 || h <= 0 || maxval <= 0 || maxval > 65535) return lp_fail(LP_ERR_FORMAT, "corrupt PNM header");
    int64_t px = (int64_t)w * h;
    if (opt->max_pixels > 0 && px > opt->max_pixels)
        return lp_fail(LP_ERR_FORMAT, "too large (%ldx%ld = %lld pixels, limit %lld)", w, h, (long long)px,
                       (long long)opt->max_pixels);
    int c = kind == '6' ? 3 : 1, bps = maxval > 255 ? 2 : 1;
    size_t need = kind == '4' ? (size_t)((w + 7) / 8) * (size_t)h : (size_t)px * c * bps;
    if (n - pos < need) return lp_fail(LP_ERR_FORMAT, "truncated PNM");
    lp_status s = lp_image_alloc_checked(img, (int)w, (int)h, c, 0, "PNM");
    if (s) return s;
    const uint8_t *p = b + pos;
    if (kind == '4') {
        size_t rs = (size_t)(w + 7) / 8;
        for (long y = 0; y < h; y++)
            for (long x = 0; x < w; x++)
                img->data[(size_t)y * w + x] = (p[y * rs + x / 8] >> (7 - x % 8)) & 1 ? 0 : 255;
        return LP_OK;
    }
    size_t cnt = (size_t)px * c;
    for (size_t i = 0; i < cnt; i++) {
        long v = bps == 2 ? (p[2 * i] << 8 | p[2 * i + 1]) : p[i];
        if (v > maxval) v = maxval;
        img->data[i] = maxval == 255 ? (uint8_t)v : (uint8_t)((v * 255 + maxval / 2) / maxval);
    }
    return LP_OK;
}
