/* Private to src/data: one decoder per format, shared helpers. */
#ifndef LP_DATA_INTERNAL_H
#define LP_DATA_INTERNAL_H
#include "data/data.h"

/* Every decoder writes an 8-bit image with 1 (L) or 3 (RGB) channels (alpha
 * dropped, palette expanded), fills info and, when it finds one, the EXIF
 * orientation (1..8; 1 = none). The reason of a failure is the message. */
typedef lp_status (*lp_decoder_fn)(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                                   lp_image_info *info, int *orientation);
lp_status lp_decode_jpeg(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                         lp_image_info *info, int *orientation);
lp_status lp_decode_png(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                        lp_image_info *info, int *orientation);
lp_status lp_decode_bmp(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                        lp_image_info *info, int *orientation);
lp_status lp_decode_pnm(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                        lp_image_info *info, int *orientation);
lp_status lp_decode_tiff(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                         lp_image_info *info, int *orientation);
lp_status lp_decode_webp(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img,
                         lp_image_info *info, int *orientation);

/* Checks w*h against the bomb guard and allocates img (w x h x c). */
lp_status lp_image_alloc_checked(lp_image *img, int w, int h, int c, int64_t max_pixels, const char *fmt);
/* Orientation from a TIFF-structured EXIF block (starting at "II*\0"/"MM\0*"); 1 if none. */
int lp_exif_orientation(const uint8_t *tiff, size_t n);

/* 64-bit content hash (for duplicate detection). */
uint64_t lp_hash_bytes(const uint8_t *p, size_t n);

/* Automatic worker count for background decode threads. */
int lp_data_auto_workers(bool background);
#endif
