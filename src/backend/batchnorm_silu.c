/* SiLU inside our fused batch norm (batchnorm_fused.c), over np pixels of vec channels
 * (contiguous, vec a multiple of 8), on z = a x + b with a, b per channel:
 *   forward:  y = z s, s = sigmoid(z) = 1 / (1 + e^-z)
 *   backward: g = dy silu'(z) = dy (s + y (1 - s)), s = y / z from the forward's own y
 *             (1/2 where |z| < 1e-30): PyTorch's silu_backward, dy s (1 + z (1 - s)),
 *             rewritten with y = z s, so that backward needs a division, not e^-z again.
 * Written by hand because these run inside the batch norm's passes, where no library's
 * activation reaches, and they are the costly part of that kernel, so they have their own
 * vector code a level: AVX-512 16 lanes, reciprocals by rcp14 and a Newton step, 2^n by
 * scalef; AVX2 8 lanes and divisions; plain vectors elsewhere. e^t is Cephes' expf (within 2
 * ulp): t = n ln2 + r, ln2 in two parts so r is exact, e^r by its degree-7 polynomial; t is
 * clamped to [-87.3, 88] (e^88 = 1.7e38: finite, and 2^n a normal float), NaN goes through. */
#include "batchnorm.h"
#include "vec8.h"

#define EXP_HI 88.0f
#define EXP_LO (-87.3365f)
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO (-2.12194440e-4f)
#define TINY 1e-30f /* |z| below it: sigmoid(z) = 1/2 (y / z would lose it) */
static const float exp_poly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                  4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

/* ---- plain vectors (any CPU) ---- */
static inline v8f exp8(v8f t) {
    t = select8(t > splat8(EXP_HI), splat8(EXP_HI), t);
    t = select8(t < splat8(EXP_LO), splat8(EXP_LO), t);
    const v8f magic = splat8(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    const v8f nf = (t * splat8(LOG2E) + magic) - magic;
    const v8f r = (t - nf * splat8(LN2_HI)) - nf * splat8(LN2_LO);
    v8f p = splat8(exp_poly[0]);
    for (int i = 1; i < 6; i++) p = p * r + splat8(exp_poly[i]);
    p = p * (r * r) + r + splat8(1.0f);
    return p * (v8f)((__builtin_convertvector(nf, v8i) + 127) << 23);
}

static void forward_plain(const float *x, float *y, int vec, int np, const float *a, const float *b) {
    for (int p = 0; p < np; p++)
        for (int k = 0; k < vec; k += 8) {
            const size_t e = (size_t)p * vec + k;
            const v8f z = ld8(a + k) * ld8(x + e) + ld8(b + k);
            st8(y + e, z / (splat8(1.0f) + exp8(-z)));
        }
}

static void grad_plain(const float *x, const float *y, const float *dy, float *g, int vec, int np, const float *a, const float *b) {
    const v8f one = splat8(1.0f);
    for (int p = 0; p < np; p++)
        for (int k = 0; k < vec; k += 8) {
            const size_t e = (size_t)p * vec + k;
            const v8f z = ld8(a + k) * ld8(x + e) + ld8(b + k), yv = ld8(y + e);
            const v8i tiny = (z < splat8(TINY)) & (z > splat8(-TINY));
            const v8f s = select8(tiny, splat8(0.5f), yv / select8(tiny, one, z));
            st8(g + e, ld8(dy + e) * (s + yv * (one - s)));
        }
}

#if LP_X86_KERNELS
#include <immintrin.h>

/* ---- AVX-512 ---- */
#define T512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
T512 static inline __m512 exp16(__m512 t) {
    t = _mm512_max_ps(_mm512_set1_ps(EXP_LO), _mm512_min_ps(_mm512_set1_ps(EXP_HI), t)); /* NaN: t */
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), t));
    __m512 p = _mm512_set1_ps(exp_poly[0]);
    for (int i = 1; i < 6; i++) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_poly[i]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}
/* 1 / (1 + e^-z): rcp14's 14 bits, one Newton step to about 1 ulp */
T512 static inline __m512 sigmoid16(__m512 z) {
    const __m512 one = _mm512_set1_ps(1.0f), d = _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), z)));
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, one), r);
}
/* Channels 16 at a time; with vec an odd multiple of 8, the last 8 of each pixel under a mask. */
T512 static void forward_avx512(const float *x, float *y, int vec, int np, const float *a, const float *b) {
    for (int p = 0; p < np; p++)
        for (int k = 0; k < vec; k += 16) {
            const size_t e = (size_t)p * vec + k;
            const __mmask16 m = vec - k >= 16 ? 0xffff : 0xff;
            const __m512 z = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, x + e), _mm512_maskz_loadu_ps(m, b + k));
            _mm512_mask_storeu_ps(y + e, m, _mm512_mul_ps(z, sigmoid16(z)));
        }
}
T512 static void grad_avx512(const float *x, const float *y, const float *dy, float *g, int vec, int np, const float *a, const float *b) {
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
    for (int p = 0; p < np; p++)
        for (int k = 0; k < vec; k += 16) {
            const size_t e = (size_t)p * vec + k;
            const __mmask16 m = vec - k >= 16 ? 0xffff : 0xff;
            const __m512 z = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, x + e), _mm512_maskz_loadu_ps(m, b + k));
            const __m512 yv = _mm512_maskz_loadu_ps(m, y + e);
            const __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(z), _mm512_set1_ps(TINY), _CMP_LT_OQ);
            const __m512 zs = _mm512_mask_blend_ps(tiny, z, one), r0 = _mm512_rcp14_ps(zs);
            const __m512 r = _mm512_fmadd_ps(r0, _mm512_fnmadd_ps(zs, r0, one), r0); /* 1/z to about 1 ulp */
            const __m512 s = _mm512_mask_blend_ps(tiny, _mm512_mul_ps(yv, r), half);
            _mm512_mask_storeu_ps(g + e, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + e), _mm512_fmadd_ps(yv, _mm512_sub_ps(one, s), s)));
        }
}

/* ---- AVX2 ---- */
#define T2 __attribute__((target("avx2,fma")))
T2 static inline __m256 exp8x(__m256 t) {
    t = _mm256_max_ps(_mm256_set1_ps(EXP_LO), _mm256_min_ps(_mm256_set1_ps(EXP_HI), t));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), t));
    __m256 p = _mm256_set1_ps(exp_poly[0]);
    for (int i = 1; i < 6; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_poly[i]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
T2 static void forward_avx2(const float *x, float *y, int vec, int np, const float *a, const float *b) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int p = 0; p < np; p++)
        for (int k = 0; k < vec; k += 8) {
            const size_t e = (size_t)p * vec + k;
            const __m256 z = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(x + e), _mm256_loadu_ps(b + k));
            _mm256_storeu_ps(y + e, _mm256_div_ps(z, _mm256_add_ps(one, exp8x(_mm256_sub_ps(_mm256_setzero_ps(), z)))));
        }
}
T2 static void grad_avx2(const float *x, const float *y, const float *dy, float *g, int vec, int np, const float *a, const float *b) {
    const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f), sign = _mm256_set1_ps(-0.0f);
    for (int p = 0; p < np; p++)
        for (int k = 0; k < vec; k += 8) {
            const size_t e = (size_t)p * vec + k;
            const __m256 z = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(x + e), _mm256_loadu_ps(b + k));
            const __m256 yv = _mm256_loadu_ps(y + e);
            const __m256 tiny = _mm256_cmp_ps(_mm256_andnot_ps(sign, z), _mm256_set1_ps(TINY), _CMP_LT_OQ);
            const __m256 s = _mm256_blendv_ps(_mm256_div_ps(yv, _mm256_blendv_ps(z, one, tiny)), half, tiny);
            _mm256_storeu_ps(g + e, _mm256_mul_ps(_mm256_loadu_ps(dy + e), _mm256_fmadd_ps(yv, _mm256_sub_ps(one, s), s)));
        }
}
#endif

void lp_bn_silu_forward(const float *x, float *y, int vec, int np, const float *a, const float *b) {
#if LP_X86_KERNELS
    const lp_isa isa = lp_cpu_isa();
    if (isa >= LP_ISA_AVX512) forward_avx512(x, y, vec, np, a, b);
    else if (isa >= LP_ISA_AVX2) forward_avx2(x, y, vec, np, a, b);
    else
#endif
        forward_plain(x, y, vec, np, a, b);
}

void lp_bn_silu_grad(const float *x, const float *y, const float *dy, float *g, int vec, int np, const float *a, const float *b) {
#if LP_X86_KERNELS
    const lp_isa isa = lp_cpu_isa();
    if (isa >= LP_ISA_AVX512) grad_avx512(x, y, dy, g, vec, np, a, b);
    else if (isa >= LP_ISA_AVX2) grad_avx2(x, y, dy, g, vec, np, a, b);
    else
#endif
        grad_plain(x, y, dy, g, vec, np, a, b);
}
