/* data: small PNG thumbnails of image files, for reports that embed the images
 * they talk about (the diagnose report's most affected images). */
#ifndef LP_DATA_THUMBNAIL_H
#define LP_DATA_THUMBNAIL_H

#include "data/data.h"

/* lp_image_thumbnail_png (loupe.h): details. Decodes with EXIF orientation
 * applied, alpha dropped, gray as RGB; the shorter side becomes
 * max(1, round(short * max_side / long)); images already that small keep their
 * size. LP_ERR_IO when the file cannot be read, LP_ERR_FORMAT when it does not
 * decode; the message names the file and says why. */

/* Thumbnail size of a w x h image, as above. */
void lp_thumbnail_size(int w, int h, int max_side, int *tw, int *th);

#endif
