/* data: PNG thumbnails in memory: decode (image.c), shrink (resize.c), encode
 * with libpng through a memory sink. libpng reports errors by longjmp; what
 * must survive the jump lives in the sink, allocated before setjmp. */
#include "data/thumbnail.h"
#include <math.h>
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

static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

/* pixels: (h, w, 3) interleaved RGB */
static lp_status encode_rgb_png(const uint8_t *pixels, int w, int h, uint8_t **out, size_t *len) {
    png_sink *sink = lp_calloc(1, sizeof *sink);
    png_bytep *rows = lp_malloc(sizeof(png_bytep) * (size_t)h);
    if (!sink || !rows) {
        free(sink);
        free(rows);
        return LP_ERR_NOMEM;
    }
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)(pixels + (size_t)y * (size_t)w * 3);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, sink, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        free(sink);
        free(rows);
        return lp_fail(LP_ERR_NOMEM, "thumbnail: libpng could not start");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        lp_status s = sink->oom ? lp_fail(LP_ERR_NOMEM, "thumbnail: out of memory")
                                : lp_fail(LP_ERR_FORMAT, "thumbnail: libpng failed (%s)", sink->msg);
        free(rows);
        free(sink->data);
        free(sink);
        return s;
    }
    png_set_write_fn(png, sink, sink_write, sink_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 9); /* a few KB per thumbnail: size matters more than time */
    png_set_rows(png, info, rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    *out = sink->data;
    *len = sink->len;
    free(sink);
    return LP_OK;
}

void lp_thumbnail_size(int w, int h, int max_side, int *tw, int *th) {
    int lo = w < h ? w : h, hi = w < h ? h : w;
    if (hi <= max_side) {
        *tw = w, *th = h;
        return;
    }
    int s = (int)lround((double)lo * max_side / hi);
    if (s < 1) s = 1;
    *tw = w >= h ? max_side : s;
    *th = w >= h ? s : max_side;
}

lp_status lp_image_thumbnail_png(const char *path, int max_side, void *ctx, uint8_t **png, size_t *png_len) {
    (void)ctx;
    lp_clear_error();
    *png = NULL;
    *png_len = 0;
    if (!path || max_side < 1) return lp_fail(LP_ERR_ARG, "thumbnail: need a path and max_side >= 1");
    if (!lp_path_exists(path)) return lp_fail(LP_ERR_IO, "%s: not found", path);
    uint8_t *buf;
    size_t n;
    lp_status s = lp_read_file(path, &buf, &n);
    if (s) return s;
    lp_decode_options opt = lp_decode_default_options();
    opt.channels = 3;
    lp_image img;
    s = lp_image_decode(buf, n, &opt, &img, NULL);
    free(buf);
    if (s) return s == LP_ERR_NOMEM ? s : lp_fail_context(s, "%s", path);
    int tw, th;
    lp_thumbnail_size(img.width, img.height, max_side, &tw, &th);
    uint8_t *small = lp_malloc((size_t)tw * th * 3);
    s = small ? lp_image_resize(&img, 0, 0, (float)img.width, (float)img.height, tw, th, LP_INTERP_BILINEAR, small)
              : LP_ERR_NOMEM;
    lp_image_free(&img);
    if (!s) s = encode_rgb_png(small, tw, th, png, png_len);
    free(small);
    return s;
}
