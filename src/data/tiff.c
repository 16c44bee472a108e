/* TIFF via libtiff (when built with it): any layout libtiff's RGBA interface
 * reads; first page only; alpha dropped. Errors and warnings are captured per
 * thread through the extended handlers, never printed. */
#include "data/data_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LOUPE_HAVE_TIFF
#include <pthread.h>
#include <tiffio.h>

typedef struct mem_tiff {
    const uint8_t *buf;
    toff_t n, pos;
} mem_tiff;

static tsize_t m_read(thandle_t h, tdata_t d, tsize_t sz) {
    mem_tiff *m = h;
    if (sz < 0) return -1;
    toff_t left = m->pos < m->n ? m->n - m->pos : 0;
    if ((toff_t)sz > left) sz = (tsize_t)left;
    memcpy(d, m->buf + m->pos, (size_t)sz);
    m->pos += (toff_t)sz;
    return sz;
}
static tsize_t m_write(thandle_t h, tdata_t d, tsize_t sz) { (void)h, (void)d, (void)sz; return -1; }
static toff_t m_seek(thandle_t h, toff_t off, int whence) {
    mem_tiff *m = h;
    toff_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->n;
    m->pos = base + off;
    return m->pos;
}
static int m_close(thandle_t h) { (void)h; return 0; }
static toff_t m_size(thandle_t h) { return ((mem_tiff *)h)->n; }
static int m_map(thandle_t h, tdata_t *base, toff_t *size) { (void)h, (void)base, (void)size; return 0; }
static void m_unmap(thandle_t h, tdata_t base, toff_t size) { (void)h, (void)base, (void)size; }

static _Thread_local char t_err[256];
static void on_err(thandle_t h, const char *mod, const char *fmt, va_list ap) {
    (void)h, (void)mod;
    if (!t_err[0]) vsnprintf(t_err, sizeof t_err, fmt, ap);
}
static void on_warn(thandle_t h, const char *mod, const char *fmt, va_list ap) { (void)h, (void)mod, (void)fmt, (void)ap; }
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;
static void set_handlers(void) {
    TIFFSetErrorHandler(NULL);
    TIFFSetWarningHandler(NULL);
    TIFFSetErrorHandlerExt(on_err);
    TIFFSetWarningHandlerExt(on_warn);
}

lp_status lp_decode_tiff(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                         lp_image_info *info, int *orientation) {
    (void)orientation; /* TIFFReadRGBAImageOriented applies the TIFF orientation tag */
    pthread_once(&handlers_once, set_handlers);
    t_err[0] = 0;
    mem_tiff m = {buf, n, 0};
    TIFF *t = TIFFClientOpen("image", "rm", &m, m_read, m_write, m_seek, m_close, m_size, m_map, m_unmap);
    if (!t) return lp_fail(LP_ERR_FORMAT, "corrupt TIFF (%s)", t_err[0] ? t_err : "cannot open");
    uint32_t w = 0, h = 0;
    uint16_t spp = 1, photo = 0;
    TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
    TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
    TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(t, TIFFTAG_PHOTOMETRIC, &photo);
    info->width = (int)w;
    info->height = (int)h;
    bool gray = photo == PHOTOMETRIC_MINISBLACK || photo == PHOTOMETRIC_MINISWHITE;
    snprintf(info->mode, sizeof info->mode, "%s", gray ? (spp > 1 ? "LA" : "L") : photo == PHOTOMETRIC_SEPARATED ? "CMYK" : spp > 3 ? "RGBA" : "RGB");
    if (w == 0 || h == 0 || w > 0x7fffffff || h > 0x7fffffff) {
        TIFFClose(t);
        return lp_fail(LP_ERR_FORMAT, "corrupt TIFF (size %ux%u)", (unsigned)w, (unsigned)h);
    }
    int64_t px = (int64_t)w * h;
    if (opt->max_pixels > 0 && px > opt->max_pixels) {
        TIFFClose(t);
        return lp_fail(LP_ERR_FORMAT, "too large (%ux%u = %lld pixels, limit %lld)", (unsigned)w, (unsigned)h,
                       (long long)px, (long long)opt->max_pixels);
    }
    uint32_t *rgba = lp_malloc((size_t)px * 4);
    if (!rgba) {
        TIFFClose(t);
        return LP_ERR_NOMEM;
    }
    int ok = TIFFReadRGBAImageOriented(t, w, h, rgba, ORIENTATION_TOPLEFT, 0);
    TIFFClose(t);
    if (!ok || t_err[0]) {
        free(rgba);
        return lp_fail(LP_ERR_FORMAT, "corrupt TIFF (%s)", t_err[0] ? t_err : "cannot read image data");
    }
    int c = gray ? 1 : 3;
    lp_status s = lp_image_alloc_checked(img, (int)w, (int)h, c, 0, "TIFF");
    if (s) {
        free(rgba);
        return s;
    }
    for (size_t i = 0; i < (size_t)px; i++) {
        uint32_t v = rgba[i];
        if (c == 1) {
            img->data[i] = (uint8_t)TIFFGetR(v);
        } else {
            img->data[3 * i] = (uint8_t)TIFFGetR(v);
            img->data[3 * i + 1] = (uint8_t)TIFFGetG(v);
            img->data[3 * i + 2] = (uint8_t)TIFFGetB(v);
        }
    }
    free(rgba);
    return LP_OK;
}
#else
lp_status lp_decode_tiff(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                         lp_image_info *info, int *orientation) {
    (void)buf, (void)n, (void)opt, (void)img, (void)orientation;
    snprintf(info->mode, sizeof info->mode, "?");
    return lp_fail(LP_ERR_FORMAT, "unsupported format (TIFF: loupe built without libtiff)");
}
#endif
