/* lp_png_encode: libpng with a memory write callback. libpng reports errors by
 * longjmp; everything that must survive the jump is volatile or lives in the
 * sink struct, which is freed after the jump. */
#include "data/png_write.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct png_sink {
    uint8_t *data;
    size_t len, cap;
    bool oom;
    char msg[200];
} png_sink;

static void sink_write(png_structp png, png_bytep p, png_size_t n) {
    png_sink *s = png_get_io_ptr(png);
    if (s->oom) return;
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n) cap *= 2;
        uint8_t *d = realloc(s->data, cap);
        if (!d) {
            s->oom = true;
            png_error(png, "out of memory");
        }
        s->data = d;
        s->cap = cap;
    }
    memcpy(s->data + s->len, p, n);
    s->len += n;
}

static void sink_flush(png_structp png) { (void)png; }

static void on_error(png_structp png, png_const_charp msg) {
    png_sink *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

lp_status lp_png_encode(const uint8_t *pixels, int height, int width, int channels, uint8_t **png_out, size_t *size) {
    *png_out = NULL;
    *size = 0;
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                       PNG_COLOR_TYPE_RGBA};
    if (!pixels || height <= 0 || width <= 0 || height > 1000000 || width > 1000000 || channels < 1 || channels > 4)
        return lp_fail(LP_ERR_ARG, "png encode: bad image %dx%d with %d channels; need positive size and 1-4 channels",
                       height, width, channels);
    /* The sink and the row table are allocated before setjmp and never
     * reassigned after it, so they are valid after a longjmp. */
    png_sink *sink = lp_calloc(1, sizeof *sink);
    png_bytep *rows = lp_malloc(sizeof(png_bytep) * (size_t)height);
    if (!sink || !rows) {
        free(sink);
        free(rows);
        return LP_ERR_NOMEM;
    }
    for (int y = 0; y < height; y++) rows[y] = (png_bytep)(pixels + (size_t)y * (size_t)width * (size_t)channels);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, sink, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        free(sink);
        free(rows);
        return lp_fail(LP_ERR_NOMEM, "png encode: libpng could not start");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        lp_status s = sink->oom ? lp_fail(LP_ERR_NOMEM, "png encode: out of memory")
                                : lp_fail(LP_ERR_FORMAT, "png encode: libpng failed (%s)", sink->msg);
        free(rows);
        free(sink->data);
        free(sink);
        return s;
    }
    png_set_write_fn(png, sink, sink_write, sink_flush);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, color_types[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 6);
    png_set_rows(png, info, rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    *png_out = sink->data;
    *size = sink->len;
    free(sink);
    return LP_OK;
}
