/* data: PNG thumbnails in memory: decode (image.c), shrink (resize.c), encode
 * (png_write.c). */
#include "data/thumbnail.h"
#include "data/png_write.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (!path || !png || !png_len || max_side < 1)
        return lp_fail(LP_ERR_ARG, "lp_image_thumbnail_png: path, png and png_len are required (NULL given), max_side >= 1 (%d)", max_side);
    *png = NULL;
    *png_len = 0;
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
    if (!s) s = lp_png_encode(small, th, tw, 3, png, png_len);
    free(small);
    return s;
}
