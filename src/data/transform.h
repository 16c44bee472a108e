/* Private to src/data: the per-image pipeline pieces. */
#ifndef LP_DATA_TRANSFORM_H
#define LP_DATA_TRANSFORM_H
#include "data/data.h"

typedef struct lp_aug_params {
    float theta, tx, ty, zx, zy, brightness; /* degrees, rows, cols, zoom factors, brightness factor */
    bool hflip, vflip;
} lp_aug_params;

bool lp_augment_active(const lp_augment *a);
/* Draws the transform of one sample from (seed, stream): same values on any thread. */
void lp_augment_params_draw(const lp_augment *a, int h, int w, uint64_t seed, uint64_t stream, lp_aug_params *p);
void lp_augment_apply(const uint8_t *src, int h, int w, int c, const lp_aug_params *p, float *dst);
/* decode + (keep-aspect crop) + resize into out (H x W x C u8). */
lp_status lp_prepare_image(const uint8_t *buf, size_t n, const lp_loader_config *cfg, uint8_t *out);
void lp_preprocess_apply(const uint8_t *u8, const float *f, int h, int w, int c, lp_preprocess mode, float *x);
#endif
