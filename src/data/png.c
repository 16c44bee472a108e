/* PNG via libpng (classic API, errors longjmp out). Palette expanded, 1/2/4-bit
 * gray scaled to 8 bits, 16-bit reduced to the high byte (Pillow does so for
 * RGB; for 16-bit gray Pillow clips to 255 instead, we keep the high byte),
 * alpha dropped (like Pillow's convert("RGB")), transparency ignored,
 * interlaced images handled. Every error, CRC mismatch or missing data is a bad
 * file; warnings about ancillary chunks are not. */
#include "data/data_internal.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct png_src {
    const uint8_t *buf;
    size_t n, pos;
    char reason[200];
} png_src;

static void on_read(png_structp png, png_bytep out, size_t len) {
    png_src *s = png_get_io_ptr(png);
    if (len > s->n - s->pos) {
        snprintf(s->reason, sizeof s->reason, "truncated PNG");
        png_error(png, "truncated");
    }
    memcpy(out, s->buf + s->pos, len);
    s->pos += len;
}

static void on_error(png_structp png, png_const_charp msg) {
    png_src *s = png_get_error_ptr(png);
    if (!s->reason[0]) snprintf(s->reason, sizeof s->reason, "corrupt PNG (%s)", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

lp_status lp_decode_png(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                        lp_image_info *info, int *orientation) {
    png_src src = {.buf = buf, .n = n};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, on_error, on_warning);
    if (!png) return lp_fail(LP_ERR_NOMEM, "out of memory (libpng)");
    png_infop pi = png_create_info_struct(png);
    if (!pi) {
        png_destroy_read_struct(&png, NULL, NULL);
        return lp_fail(LP_ERR_NOMEM, "out of memory (libpng)");
    }
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        lp_image_free(img);
        png_destroy_read_struct(&png, &pi, NULL);
        return lp_fail(LP_ERR_FORMAT, "%s", src.reason[0] ? src.reason : "corrupt PNG");
    }
    png_set_read_fn(png, &src, on_read);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_set_chunk_malloc_max(png, 64u << 20);
    png_read_info(png, pi);
    png_uint_32 w = png_get_image_width(png, pi), h = png_get_image_height(png, pi);
    int depth = png_get_bit_depth(png, pi), ct = png_get_color_type(png, pi);
    info->width = (int)w;
    info->height = (int)h;
    const char *mode = "RGB";
    switch (ct) {
    case PNG_COLOR_TYPE_GRAY: mode = depth == 1 ? "1" : depth == 16 ? "I;16" : "L"; break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: mode = "LA"; break;
    case PNG_COLOR_TYPE_PALETTE: mode = "P"; break;
    case PNG_COLOR_TYPE_RGB: mode = "RGB"; break;
    case PNG_COLOR_TYPE_RGB_ALPHA: mode = "RGBA"; break;
    }
    snprintf(info->mode, sizeof info->mode, "%s", mode);
    int64_t px = (int64_t)w * h;
    if (opt->max_pixels > 0 && px > opt->max_pixels) {
        png_destroy_read_struct(&png, &pi, NULL);
        return lp_fail(LP_ERR_FORMAT, "too large (%ux%u = %lld pixels, limit %lld)", (unsigned)w, (unsigned)h,
                       (long long)px, (long long)opt->max_pixels);
    }
#ifdef PNG_eXIf_SUPPORTED
    {
        png_uint_32 en = 0;
        png_bytep ex = NULL;
        if (png_get_eXIf_1(png, pi, &en, &ex) && ex) *orientation = lp_exif_orientation(ex, en);
    }
#endif
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    if ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, pi, PNG_INFO_tRNS)) png_set_strip_alpha(png); /* palette expansion adds tRNS as alpha */
    png_set_interlace_handling(png);
    png_read_update_info(png, pi);
    int ch = png_get_channels(png, pi);
    if ((ch != 1 && ch != 3) || png_get_bit_depth(png, pi) != 8) {
        png_destroy_read_struct(&png, &pi, NULL);
        return lp_fail(LP_ERR_FORMAT, "unsupported PNG layout");
    }
    lp_status s = lp_image_alloc_checked(img, (int)w, (int)h, ch, 0, "PNG");
    if (s) {
        png_destroy_read_struct(&png, &pi, NULL);
        return s;
    }
    rows = lp_malloc(sizeof(png_bytep) * h);
    if (!rows) {
        lp_image_free(img);
        png_destroy_read_struct(&png, &pi, NULL);
        return LP_ERR_NOMEM;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = img->data + (size_t)y * w * ch;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &pi, NULL);
    return LP_OK;
}
