/* PNG encoding to memory with libpng (for TensorBoard images, the
 * Fashion-MNIST folder writer and the report's thumbnails). */
#ifndef LP_DATA_PNG_WRITE_H
#define LP_DATA_PNG_WRITE_H
#include "core/core.h"

/* Encodes 8-bit pixels, row-major, interleaved channels (1 gray, 2 gray+alpha,
 * 3 RGB, 4 RGBA), into a malloc'ed PNG (*png, free with free()). */
lp_status lp_png_encode(const uint8_t *pixels, int height, int width, int channels, uint8_t **png, size_t *size);
#endif
