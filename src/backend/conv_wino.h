/* Winograd F(2x2,3x3) convolution on AVX2 (conv_wino_avx2.c says why and how): fp32 3x3,
 * stride 1, pad 1, c and k multiples of 8, activations in pixel-vector layouts of a
 * multiple of 8 values (vec_x for x and dx, vec_y for y and dy), weights and their
 * gradient OIhw8i8o (ABcd8b8a). Scratch: lp_conv_wino_avx2_scratch bytes. Backward
 * weights writes dw and db (not added). Built on x86-64 only (backend.h's LP_X86_KERNELS);
 * conv2d.c's table runs it where the CPU (as capped) has AVX2 and oneDNN has no Winograd. */
#ifndef LP_CONV_WINO_H
#define LP_CONV_WINO_H
#include "backend.h"

size_t lp_conv_wino_avx2_scratch(const lp_conv2d_params *p);
lp_status lp_conv_wino_avx2_fwd(const lp_conv2d_params *p, int vec_x, int vec_y, const float *x, const float *w,
                                const float *b, float *y, void *scratch);
lp_status lp_conv_wino_avx2_bwd_data(const lp_conv2d_params *p, int vec_x, int vec_y, const float *dy, const float *w,
                                     float *dx, void *scratch);
lp_status lp_conv_wino_avx2_bwd_w(const lp_conv2d_params *p, int vec_x, int vec_y, const float *x, const float *dy, float *dw,
                                  float *db, void *scratch);
#endif
