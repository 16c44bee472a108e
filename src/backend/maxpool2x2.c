/* Max pooling 2x2 stride 2 (VGG's only pooling) on AVX-512, for layouts that keep a
 * vector of channels per pixel (nhwc, nChw16c), fp32 or bf16.
 *
 * Hand-written because oneDNN 2.6's pooling runs at 5-7 GB/s on this machine: at
 * 224x224 batch 16 in bf16 it took 165 ms of a 1.2 s training step, for work that
 * streams memory once (forward reads x, writes y and a one-byte argmax; backward
 * reads dy and the argmax, writes dx) and runs here at 30+ GB/s.
 *
 * Semantics are PyTorch's MaxPool2d(2, 2): floor output size (an odd last row or
 * column is dropped and gets zero gradient), the first maximum in scan order wins
 * ties (row 0 col 0, row 0 col 1, row 1 col 0, row 1 col 1), NaN propagates. */
#include "backend.h"
#if LP_X86_KERNELS /* x86-64 code: nothing elsewhere (backend.h) */
#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f")))

/* 16 values (fp32 or bf16) as fp32 lanes; bf16 -> fp32 is exact (a shift). */
TARGET static inline __m512 load16(const void *p, bool bf16) {
    if (!bf16) return _mm512_loadu_ps(p);
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

/* Stores 16 fp32 lanes that hold bf16 values exactly (the low 16 bits are zero). */
TARGET static inline void store16(void *p, __m512 v, bool bf16) {
    if (!bf16) {
        _mm512_storeu_ps(p, v);
        return;
    }
    __m512i w = _mm512_srli_epi32(_mm512_castps_si512(v), 16);
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(w));
}

/* store16, around the caches where stream (bf16 only; p 32-byte aligned). */
TARGET static inline void put16(void *p, __m512 v, bool bf16, bool stream) {
    if (!stream) {
        store16(p, v, bf16);
        return;
    }
    __m512i w = _mm512_srli_epi32(_mm512_castps_si512(v), 16);
    _mm256_stream_si256((__m256i *)p, _mm512_cvtepi32_epi16(w));
}

/* Whether a bf16 output goes around the caches: one over LP_STREAM_FROM bytes (its
 * lines would only be read to be overwritten), aligned, whole lines per pixel. */
static bool streamed(bool bf16, int vec, size_t bytes, const void *out) {
    return bf16 && vec % 32 == 0 && ((uintptr_t)out & 63) == 0 && bytes > LP_STREAM_FROM;
}

/* PyTorch's rule, lane-wise: take v when v > m or v is NaN. */
TARGET static inline __mmask16 takes(__m512 v, __m512 m) {
    return _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}

/* One output row r (of planes x oh): y, idx from input rows 2i, 2i+1. x: planes x h x w
 * pixels of vec values; idx: one byte per output value: the window position of the
 * maximum (0..3), plus 4 when the maximum is not > 0 (for a backward that folds in the
 * ReLU before the pool). */
TARGET static void forward_row(const void *x, void *y, uint8_t *idx, long long r, int h, int w, int vec, bool bf16, bool stream) {
    const int oh = h / 2, ow = w / 2;
    const size_t es = bf16 ? 2 : 4, row = (size_t)w * vec * es;
    const long long pl = r / oh, i = r % oh;
    const char *x0 = (const char *)x + ((size_t)pl * h + 2 * (size_t)i) * row, *x1 = x0 + row;
    char *yr = (char *)y + (size_t)r * ow * vec * es;
    uint8_t *ir = idx + (size_t)r * ow * vec;
    for (int j = 0; j < ow; j++)
        for (int c = 0; c < vec; c += 16) {
            size_t a = ((size_t)2 * j * vec + c) * es, b = a + (size_t)vec * es;
            __m512 m = load16(x0 + a, bf16), v;
            __m512i k = _mm512_setzero_si512();
            __mmask16 t;
            v = load16(x0 + b, bf16), t = takes(v, m);
            m = _mm512_mask_mov_ps(m, t, v), k = _mm512_mask_mov_epi32(k, t, _mm512_set1_epi32(1));
            v = load16(x1 + a, bf16), t = takes(v, m);
            m = _mm512_mask_mov_ps(m, t, v), k = _mm512_mask_mov_epi32(k, t, _mm512_set1_epi32(2));
            v = load16(x1 + b, bf16), t = takes(v, m);
            m = _mm512_mask_mov_ps(m, t, v), k = _mm512_mask_mov_epi32(k, t, _mm512_set1_epi32(3));
            __mmask16 pos = _mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_GT_OQ);
            k = _mm512_mask_or_epi32(k, (__mmask16)~pos, k, _mm512_set1_epi32(4));
            size_t o = (size_t)j * vec + c;
            put16(yr + o * es, m, bf16, stream);
            if (stream)
                _mm_stream_si128((__m128i *)(ir + o), _mm512_cvtepi32_epi8(k));
            else
                _mm_storeu_si128((__m128i *)(ir + o), _mm512_cvtepi32_epi8(k));
        }
    if (stream) _mm_sfence(); /* the streamed stores land before other threads read y */
}

/* dx rows 2i, 2i+1 (and an odd last column) for output row r: dy at each window's
 * argmax, zero elsewhere; relu: also zero where the maximum was not > 0. */
TARGET static void backward_row(const void *dy, const uint8_t *idx, void *dx, long long r, int h, int w, int vec, bool bf16,
                                bool relu, bool stream) {
    const int oh = h / 2, ow = w / 2;
    const size_t es = bf16 ? 2 : 4, row = (size_t)w * vec * es;
    const __m512i keep = _mm512_set1_epi32(relu ? 7 : 3);
    const long long pl = r / oh, i = r % oh;
    char *x0 = (char *)dx + ((size_t)pl * h + 2 * (size_t)i) * row, *x1 = x0 + row;
    const char *gr = (const char *)dy + (size_t)r * ow * vec * es;
    const uint8_t *ir = idx + (size_t)r * ow * vec;
    for (int j = 0; j < ow; j++)
        for (int c = 0; c < vec; c += 16) {
            size_t o = (size_t)j * vec + c;
            __m512 g = load16(gr + o * es, bf16);
            __m512i k = _mm512_and_si512(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ir + o))), keep);
            size_t a = ((size_t)2 * j * vec + c) * es, b = a + (size_t)vec * es;
            put16(x0 + a, _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(0)), g), bf16, stream);
            put16(x0 + b, _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(1)), g), bf16, stream);
            put16(x1 + a, _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(2)), g), bf16, stream);
            put16(x1 + b, _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(3)), g), bf16, stream);
        }
    if (w % 2) {
        memset(x0 + (size_t)(w - 1) * vec * es, 0, (size_t)vec * es);
        memset(x1 + (size_t)(w - 1) * vec * es, 0, (size_t)vec * es);
    }
    if (stream) _mm_sfence(); /* the streamed stores land before other threads read dx */
}

/* The parallel loops hold no vector types: an OpenMP body is a function of its own,
 * which (in clang) does not inherit the target attribute. */
void lp_maxpool2x2_forward(const void *x, void *y, uint8_t *idx, int planes, int h, int w, int vec, bool bf16) {
    const long long rows = (long long)planes * (h / 2);
    /* x over LP_STREAM_FROM: y and idx around the caches (1 ms less at 224x224 batch 16) */
    const bool stream = streamed(bf16, vec, (size_t)planes * h * w * vec * 2, y) && ((uintptr_t)idx & 63) == 0;
LP_OMP(parallel for if (rows * (w / 2) * vec > 16384))
    for (long long r = 0; r < rows; r++) forward_row(x, y, idx, r, h, w, vec, bf16, stream);
}

/* dx (planes x h x w pixels) gets dy at each window's argmax and zero elsewhere,
 * including a dropped odd last row or column. relu: x is a ReLU's output and dx
 * also gets the ReLU's backward (zero where the maximum is not > 0), so that the
 * layer before need not mask it again. */
void lp_maxpool2x2_backward(const void *dy, const uint8_t *idx, void *dx, int planes, int h, int w, int vec, bool bf16,
                            bool relu) {
    const size_t row = (size_t)w * vec * (bf16 ? 2 : 4);
    const long long rows = (long long)planes * (h / 2);
    /* (whole lines: the 16-channel pieces of a pixel are written in turn) */
    const bool stream = streamed(bf16, vec, (size_t)planes * h * row, dx);
LP_OMP(parallel for if (rows * (w / 2) * vec > 16384))
    for (long long r = 0; r < rows; r++) backward_row(dy, idx, dx, r, h, w, vec, bf16, relu, stream);
    if (h % 2)
        for (int pl = 0; pl < planes; pl++) memset((char *)dx + ((size_t)pl * h + (size_t)h - 1) * row, 0, row);
}

#endif /* LP_X86_KERNELS */
