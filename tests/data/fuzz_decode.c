/* libFuzzer target for the decode path: sniff, decode every format (JPEG, PNG,
 * BMP, PNM, TIFF, WebP), EXIF orientation, colour conversion, then both resizes.
 * Build: cmake -DLOUPE_FUZZ=ON -DCMAKE_C_COMPILER=clang ...; run:
 *   build-fuzz/tests/data/fuzz_decode -max_total_time=60 CORPUS_DIR */
#include "data/data.h"
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_decode_options o = lp_decode_default_options();
    o.max_pixels = 1 << 22; /* keep allocations small: the guard itself is under test */
    o.channels = size > 0 && (data[size - 1] & 1) ? 1 : 3;
    lp_image img;
    if (lp_image_decode(data, size, &o, &img, NULL) != LP_OK) return 0;
    uint8_t out[17 * 13 * 3];
    lp_image_resize(&img, 0, 0, (float)img.width, (float)img.height, 17, 13, LP_INTERP_BILINEAR, out);
    lp_image_resize(&img, 0, 0, (float)img.width, (float)img.height, 13, 17, LP_INTERP_NEAREST, out);
    lp_image_free(&img);
    return 0;
}
