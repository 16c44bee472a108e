/* log_png_grid: lp_png_encode round trip through libpng's reader for 1-4
 * channels and odd sizes; lp_image_grid geometry, thumbnail placement and
 * label ink; argument errors. */
#include "log/log.h"
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static void roundtrip(int h, int w, int ch) {
    size_t n = (size_t)h * w * ch;
    uint8_t *px = malloc(n);
    for (size_t i = 0; i < n; i++) px[i] = (uint8_t)(lp_rng_u64(5, (uint64_t)ch, i) & 255);
    uint8_t *png;
    size_t size;
    lp_status s = lp_png_encode(px, h, w, ch, &png, &size);
    CHECK(s == LP_OK, "encode %dx%dx%d: %s", h, w, ch, lp_errmsg());
    if (s) {
        free(px);
        return;
    }
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    CHECK(png_image_begin_read_from_memory(&img, png, size), "libpng cannot read our PNG: %s", img.message);
    static const png_uint_32 fmt[5] = {0, PNG_FORMAT_GRAY, PNG_FORMAT_GA, PNG_FORMAT_RGB, PNG_FORMAT_RGBA};
    CHECK((int)img.width == w && (int)img.height == h, "size %ux%u, wrote %dx%d", img.height, img.width, h, w);
    CHECK(img.format == fmt[ch], "format %u for %d channels", img.format, ch);
    img.format = fmt[ch];
    uint8_t *back = malloc(n);
    CHECK(png_image_finish_read(&img, NULL, back, 0, NULL), "decode: %s", img.message);
    CHECK(memcmp(back, px, n) == 0, "pixels differ after round trip (%dx%dx%d)", h, w, ch);
    free(back);
    free(png);
    free(px);
}

int main(void) {
    for (int ch = 1; ch <= 4; ch++) {
        roundtrip(1, 1, ch);
        roundtrip(28, 28, ch);
        roundtrip(7, 131, ch);
    }
    uint8_t *png;
    size_t size;
    uint8_t px[12] = {0};
    CHECK(lp_png_encode(px, 2, 2, 5, &png, &size) == LP_ERR_ARG, "5 channels accepted");
    CHECK(lp_png_encode(px, 0, 2, 3, &png, &size) == LP_ERR_ARG, "height 0 accepted");
    CHECK(strstr(lp_errmsg(), "png encode") != NULL, "message: %s", lp_errmsg());

    /* Grid: 5 thumbnails of 10x12 -> 3 columns, 2 rows. Each thumbnail is a
     * solid colour (i*40+10, 200, 7) so its placement can be checked. */
    enum { H = 10, W = 12, COUNT = 5 };
    uint8_t thumbs[COUNT][H * W * 3];
    const uint8_t *ptrs[COUNT];
    for (int i = 0; i < COUNT; i++) {
        for (int p = 0; p < H * W; p++) {
            thumbs[i][3 * p] = (uint8_t)(i * 40 + 10);
            thumbs[i][3 * p + 1] = 200;
            thumbs[i][3 * p + 2] = 7;
        }
        ptrs[i] = thumbs[i];
    }
    const char *labels[COUNT] = {"0", "1", "shirt 0.93", NULL, ""};
    uint8_t *grid;
    int gh, gw;
    CHECK(lp_image_grid(ptrs, COUNT, H, W, labels, &grid, &gh, &gw) == LP_OK, "grid: %s", lp_errmsg());
    /* cell width = max(12, 10 chars * 6 + 1) = 61; cell height 10 + 9; pad 2 */
    int cw = 61, chh = 19, pad = 2;
    CHECK(gw == 3 * cw + 4 * pad && gh == 2 * chh + 3 * pad, "grid size %dx%d", gh, gw);
    if (gw == 3 * cw + 4 * pad && gh == 2 * chh + 3 * pad) {
        for (int i = 0; i < COUNT; i++) {
            int cx = pad + (i % 3) * (cw + pad), cy = pad + (i / 3) * (chh + pad), x0 = cx + (cw - W) / 2;
            int bad = 0, ink = 0;
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    const uint8_t *p = grid + ((size_t)(cy + y) * gw + x0 + x) * 3;
                    bad += p[0] != i * 40 + 10 || p[1] != 200 || p[2] != 7;
                }
            for (int y = cy + H; y < cy + chh; y++)
                for (int x = cx; x < cx + cw; x++) {
                    const uint8_t *p = grid + ((size_t)y * gw + x) * 3;
                    ink += p[0] == 255 && p[1] == 255 && p[2] == 255;
                    bad += !(p[0] == p[1] && p[1] == p[2] && (p[0] == 0 || p[0] == 255));
                }
            CHECK(bad == 0, "cell %d: %d wrong pixels", i, bad);
            if (i == 2) CHECK(ink > 40, "label 'shirt 0.93' has only %d ink pixels", ink);
            else if (i < 2) CHECK(ink > 5, "label of cell %d has only %d ink pixels", i, ink);
            else CHECK(ink == 0, "empty label of cell %d has %d ink pixels", i, ink);
        }
        /* the '1' glyph: a 3-pixel foot (row 6 of the glyph, columns 1..3) */
        int cx = pad + 1 * (cw + pad) + 1, cy = pad + H + 1 + 6;
        for (int x = 0; x < 5; x++) {
            const uint8_t *p = grid + ((size_t)cy * gw + cx + x) * 3;
            CHECK((p[0] == 255) == (x >= 1 && x <= 3), "glyph '1' foot pixel %d", x);
        }
        /* background between cells is dark grey */
        CHECK(grid[0] == 32 && grid[1] == 32 && grid[2] == 32, "background");
    }
    free(grid);
    /* No labels: cells are just the thumbnails. */
    CHECK(lp_image_grid(ptrs, 4, H, W, NULL, &grid, &gh, &gw) == LP_OK, "grid without labels");
    CHECK(gw == 2 * W + 3 * pad && gh == 2 * H + 3 * pad, "unlabelled grid size %dx%d", gh, gw);
    free(grid);
    CHECK(lp_image_grid(ptrs, 0, H, W, NULL, &grid, &gh, &gw) == LP_ERR_ARG, "count 0 accepted");
    if (failures) fprintf(stderr, "%d failure(s)\n", failures);
    else printf("log_png_grid: all passed\n");
    return failures ? 1 : 0;
}
