/* WebP via libwebp (when built with it); alpha dropped. */
#include "data/data_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LOUPE_HAVE_WEBP
#include <webp/decode.h>

lp_status lp_decode_webp(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                         lp_image_info *info, int *orientation) {
    (void)orientation;
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(buf, n, &f);
    if (st == VP8_STATUS_NOT_ENOUGH_DATA) return lp_fail(LP_ERR_FORMAT, "truncated WebP");
    if (st != VP8_STATUS_OK) return lp_fail(LP_ERR_FORMAT, "corrupt WebP (status %d)", (int)st);
    info->width = f.width;
    info->height = f.height;
    snprintf(info->mode, sizeof info->mode, "%s", f.has_alpha ? "RGBA" : "RGB");
    if (f.has_animation) return lp_fail(LP_ERR_FORMAT, "unsupported format (animated WebP)");
    int64_t px = (int64_t)f.width * f.height;
    if (opt->max_pixels > 0 && px > opt->max_pixels)
        return lp_fail(LP_ERR_FORMAT, "too large (%dx%d = %lld pixels, limit %lld)", f.width, f.height, (long long)px,
                       (long long)opt->max_pixels);
    lp_status s = lp_image_alloc_checked(img, f.width, f.height, 3, 0, "WebP");
    if (s) return s;
    if (!WebPDecodeRGBInto(buf, n, img->data, (size_t)px * 3, f.width * 3)) {
        lp_image_free(img);
        return lp_fail(LP_ERR_FORMAT, "corrupt or truncated WebP");
    }
    return LP_OK;
}
#else
lp_status lp_decode_webp(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                         lp_image_info *info, int *orientation) {
    (void)buf, (void)n, (void)opt, (void)img, (void)orientation;
    snprintf(info->mode, sizeof info->mode, "?");
    return lp_fail(LP_ERR_FORMAT, "unsupported format (WebP: loupe built without libwebp)");
}
#endif
