/* JPEG via libjpeg-turbo. Errors longjmp out of the library (never exit());
 * a warning about corrupt data (premature end, bad Huffman code, ...) makes
 * the file bad. Default decoder settings (ISLOW DCT, fancy upsampling), like
 * Pillow, so pixels match Keras' load_img. CMYK/YCCK: Adobe files store
 * inverted CMYK (Pillow assumes so for every CMYK JPEG; we follow the Adobe
 * marker), converted to RGB with Pillow's cmyk2rgb. */
#include "data/data_internal.h"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

typedef struct jerr_ctx {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char reason[JMSG_LENGTH_MAX + 32];
} jerr_ctx;

static void on_error(j_common_ptr cinfo) {
    jerr_ctx *e = (jerr_ctx *)cinfo->err;
    char msg[JMSG_LENGTH_MAX];
    cinfo->err->format_message(cinfo, msg);
    int code = cinfo->err->msg_code;
    if (code == JERR_INPUT_EOF || code == JERR_NO_IMAGE)
        snprintf(e->reason, sizeof e->reason, "truncated JPEG");
    else
        snprintf(e->reason, sizeof e->reason, "corrupt JPEG (%s)", msg);
    longjmp(e->jb, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level != -1) return; /* trace messages */
    jerr_ctx *e = (jerr_ctx *)cinfo->err;
    int code = cinfo->err->msg_code;
    if (code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM || code == JWRN_BOGUS_ICC) return; /* harmless */
    char msg[JMSG_LENGTH_MAX];
    cinfo->err->format_message(cinfo, msg);
    if (code == JWRN_JPEG_EOF)
        snprintf(e->reason, sizeof e->reason, "truncated JPEG (premature end of data)");
    else
        snprintf(e->reason, sizeof e->reason, "corrupt JPEG (%s)", msg);
    longjmp(e->jb, 1);
}

static int exif_from_markers(j_decompress_ptr c) {
    for (jpeg_saved_marker_ptr m = c->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length > 14 && memcmp(m->data, "Exif\0\0", 6) == 0)
            return lp_exif_orientation(m->data + 6, m->data_length - 6);
    return 1;
}

static inline uint8_t muldiv255(int a, int b) {
    int t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

lp_status lp_decode_jpeg(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                         lp_image_info *info, int *orientation) {
    struct jpeg_decompress_struct c;
    jerr_ctx err;
    memset(&c, 0, sizeof c);
    memset(&err, 0, sizeof err);
    c.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    /* volatile: modified between setjmp and longjmp */
    uint8_t *volatile row = NULL;
    volatile bool created = false;
    if (setjmp(err.jb)) {
        free(row);
        lp_image_free(img);
        if (created) jpeg_destroy_decompress(&c);
        return lp_fail(LP_ERR_FORMAT, "%s", err.reason);
    }
    jpeg_create_decompress(&c);
    created = true;
    jpeg_mem_src(&c, buf, (unsigned long)n);
    jpeg_save_markers(&c, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&c, TRUE);
    info->width = (int)c.image_width;
    info->height = (int)c.image_height;
    int comps = c.num_components;
    bool cmyk = c.jpeg_color_space == JCS_CMYK || c.jpeg_color_space == JCS_YCCK;
    bool gray = c.jpeg_color_space == JCS_GRAYSCALE;
    snprintf(info->mode, sizeof info->mode, "%s", cmyk ? "CMYK" : gray ? "L" : "RGB");
    if (!cmyk && !gray && comps != 3) {
        jpeg_destroy_decompress(&c);
        return lp_fail(LP_ERR_FORMAT, "unsupported JPEG colour space (%d components)", comps);
    }
    int64_t px = (int64_t)c.image_width * c.image_height;
    if (opt->max_pixels > 0 && px > opt->max_pixels) {
        jpeg_destroy_decompress(&c);
        return lp_fail(LP_ERR_FORMAT, "too large (%ux%u = %lld pixels, limit %lld)", c.image_width, c.image_height,
                       (long long)px, (long long)opt->max_pixels);
    }
    *orientation = exif_from_markers(&c);
    c.out_color_space = cmyk ? JCS_CMYK : gray ? JCS_GRAYSCALE : JCS_RGB;
    if (opt->min_width > 0 && opt->min_height > 0) {
        /* DCT scaling: the largest 1/d (d = 8,4,2) that keeps the output at least min size. */
        int mw = opt->min_width, mh = opt->min_height;
        if (opt->apply_exif && *orientation >= 5) {
            int t = mw;
            mw = mh;
            mh = t;
        }
        for (int d = 8; d >= 2; d /= 2) {
            if ((int64_t)(c.image_width + d - 1) / d >= mw && (int64_t)(c.image_height + d - 1) / d >= mh) {
                c.scale_num = 1;
                c.scale_denom = (unsigned)d;
                break;
            }
        }
    }
    jpeg_start_decompress(&c);
    int w = (int)c.output_width, h = (int)c.output_height, oc = c.output_components;
    int dc = cmyk ? 3 : oc;
    lp_status s = lp_image_alloc_checked(img, w, h, dc, 0, "JPEG");
    if (s) {
        jpeg_destroy_decompress(&c);
        return s;
    }
    bool inverted = cmyk && c.saw_Adobe_marker;
    if (cmyk) {
        row = lp_malloc((size_t)w * 4);
        if (!row) {
            lp_image_free(img);
            jpeg_destroy_decompress(&c);
            return LP_ERR_NOMEM;
        }
    }
    while (c.output_scanline < c.output_height) {
        uint8_t *dst = img->data + (size_t)c.output_scanline * w * dc;
        if (!cmyk) {
            JSAMPROW r = dst;
            jpeg_read_scanlines(&c, &r, 1);
            continue;
        }
        JSAMPROW r = row;
        jpeg_read_scanlines(&c, &r, 1);
        for (int x = 0; x < w; x++) {
            int cc = row[4 * x], m = row[4 * x + 1], yy = row[4 * x + 2], k = row[4 * x + 3];
            if (inverted) {
                cc = 255 - cc;
                m = 255 - m;
                yy = 255 - yy;
                k = 255 - k;
            }
            int nk = 255 - k;
            dst[3 * x] = (uint8_t)(nk - muldiv255(cc, nk));
            dst[3 * x + 1] = (uint8_t)(nk - muldiv255(m, nk));
            dst[3 * x + 2] = (uint8_t)(nk - muldiv255(yy, nk));
        }
    }
    jpeg_finish_decompress(&c);
    jpeg_destroy_decompress(&c);
    free(row);
    return LP_OK;
}
