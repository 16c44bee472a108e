/* Element-wise bf16 arithmetic the graph does outside oneDNN's primitives in bf16 nets: the
 * sum of a fork's gradients and the per-sample scale of stochastic depth. Computed in fp32,
 * rounded to nearest even (PyTorch's bf16 tensors round so; vcvtneps2bf16 does it 16 lanes
 * at a time). Ours because no primitive of oneDNN 2.6 takes a bf16 tensor in place with a
 * per-sample factor, and a binary primitive per fork would cost a dispatch for a memory-bound
 * pass; the scalar loops these replace took a fifth of a bf16 EfficientNet-B0 step. */
#include "graph_ops.h"

#define CHUNK 16384 /* values a task: 32 KB of bf16, a parallel loop's unit */

#if LP_X86_KERNELS
#include <immintrin.h>
/* Only where the CPU has AVX512-BF16 (bf16 nets run nowhere else); the parallel loop stays
 * outside, as an OpenMP region's outlined body would not inherit the target attribute. */
#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
TARGET static inline __m512 load_bf16(const uint16_t *p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
TARGET static inline void store_bf16(uint16_t *p, __mmask16 m, __m512 v) {
    _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(v));
}
TARGET static void add_avx512(uint16_t *g, const uint16_t *d, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        store_bf16(g + i, m, _mm512_add_ps(load_bf16(g + i, m), load_bf16(d + i, m)));
    }
}
TARGET static void scale_avx512(const uint16_t *x, float s, uint16_t *y, size_t n) {
    const __m512 sv = _mm512_set1_ps(s);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        store_bf16(y + i, m, _mm512_mul_ps(load_bf16(x + i, m), sv));
    }
}
#endif

static void add_range(uint16_t *g, const uint16_t *d, size_t n) {
#if LP_X86_KERNELS
    if (lp_bf16_native()) {
        add_avx512(g, d, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) g[i] = lp_f32_to_bf16(lp_bf16_to_f32(g[i]) + lp_bf16_to_f32(d[i]));
}

static void scale_range(const uint16_t *x, float s, uint16_t *y, size_t n) {
#if LP_X86_KERNELS
    if (lp_bf16_native()) {
        scale_avx512(x, s, y, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) y[i] = lp_f32_to_bf16(lp_bf16_to_f32(x[i]) * s);
}

void lp_bf16_add(uint16_t *g, const uint16_t *d, size_t n) {
    const long long chunks = (long long)((n + CHUNK - 1) / CHUNK);
LP_OMP(parallel for if (chunks > 4))
    for (long long c = 0; c < chunks; c++) {
        const size_t i = (size_t)c * CHUNK;
        add_range(g + i, d + i, n - i < CHUNK ? n - i : CHUNK);
    }
}

void lp_bf16_scale(const uint16_t *x, float s, uint16_t *y, size_t n) {
    const long long chunks = (long long)((n + CHUNK - 1) / CHUNK);
LP_OMP(parallel for if (chunks > 4))
    for (long long c = 0; c < chunks; c++) {
        const size_t i = (size_t)c * CHUNK;
        scale_range(x + i, s, y + i, n - i < CHUNK ? n - i : CHUNK);
    }
}
