/* Small ops in plain C (OpenMP): ReLU backward mask, adaptive average
 * pooling, dropout, softmax cross-entropy. */
#include "backend.h"
#include <math.h>
#include <string.h>

void lp_relu_backward_inplace(float *dy, const float *y, size_t count) {
    const long long n = (long long)count;
LP_OMP(parallel for if (n > 65536))
    for (long long i = 0; i < n; i++) dy[i] = y[i] > 0.0f ? dy[i] : 0.0f; /* branch-free: vectorizes */
}

void lp_relu_backward_inplace_bf16(uint16_t *dy, const uint16_t *y, size_t count) {
    const long long n = (long long)count;
LP_OMP(parallel for if (n > 65536))
    /* y > 0 <=> the bit pattern is in [0x0001, 0x7fff]; a mask, not a branch (random signs) */
    for (long long i = 0; i < n; i++) dy[i] &= (uint16_t)((uint16_t)(y[i] - 1u) < 0x7fffu ? 0xffffu : 0u);
}

/* PyTorch's start/end indices: start = floor(i*in/out), end = ceil((i+1)*in/out). */
static inline int ap_start(int i, int in, int out) { return (int)(((long long)i * in) / out); }
static inline int ap_end(int i, int in, int out) { return (int)(((long long)(i + 1) * in + out - 1) / out); }

void lp_adaptive_avgpool_forward(const float *x, float *y, int nc, int h, int w, int oh, int ow) {
LP_OMP(parallel for if (nc >= 64))
    for (int p = 0; p < nc; p++) {
        const float *xp = x + (size_t)p * h * w;
        float *yp = y + (size_t)p * oh * ow;
        for (int i = 0; i < oh; i++) {
            int h0 = ap_start(i, h, oh), h1 = ap_end(i, h, oh);
            for (int j = 0; j < ow; j++) {
                int w0 = ap_start(j, w, ow), w1 = ap_end(j, w, ow);
                float s = 0.0f;
                for (int a = h0; a < h1; a++)
                    for (int b = w0; b < w1; b++) s += xp[a * w + b];
                yp[i * ow + j] = s / (float)((h1 - h0) * (w1 - w0));
            }
        }
    }
}

void lp_adaptive_avgpool_backward(const float *dy, float *dx, int nc, int h, int w, int oh, int ow) {
LP_OMP(parallel for if (nc >= 64))
    for (int p = 0; p < nc; p++) {
        float *dxp = dx + (size_t)p * h * w;
        const float *dyp = dy + (size_t)p * oh * ow;
        memset(dxp, 0, sizeof(float) * (size_t)h * w);
        for (int i = 0; i < oh; i++) {
            int h0 = ap_start(i, h, oh), h1 = ap_end(i, h, oh);
            for (int j = 0; j < ow; j++) {
                int w0 = ap_start(j, w, ow), w1 = ap_end(j, w, ow);
                float g = dyp[i * ow + j] / (float)((h1 - h0) * (w1 - w0));
                for (int a = h0; a < h1; a++)
                    for (int b = w0; b < w1; b++) dxp[a * w + b] += g;
            }
        }
    }
}

void lp_dropout_forward(const float *x, float *y, float *mask, size_t count, float p, uint64_t seed, uint64_t stream) {
    lp_dropout_forward_at(x, y, mask, count, p, seed, stream, 0);
}

void lp_dropout_forward_at(const float *x, float *y, float *mask, size_t count, float p, uint64_t seed, uint64_t stream,
                           uint64_t counter0) {
    const long long n = (long long)count;
    const float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
LP_OMP(parallel for if (n > 16384))
    for (long long i = 0; i < n; i++) {
        float m = lp_rng_uniform(seed, stream, counter0 + (uint64_t)i) >= p ? scale : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

void lp_dropout_backward(const float *dy, const float *mask, float *dx, size_t count) {
    const long long n = (long long)count;
LP_OMP(parallel for if (n > 65536))
    for (long long i = 0; i < n; i++) dx[i] = dy[i] * mask[i];
}

double lp_softmax_xent(const float *z, const int *labels, int n, int k, float *loss, float *probs, float *dz) {
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *zi = z + (size_t)i * k;
        float m = zi[0];
        for (int j = 1; j < k; j++)
            if (zi[j] > m) m = zi[j];
        double se = 0.0;
        for (int j = 0; j < k; j++) se += exp((double)zi[j] - m);
        double lse = m + log(se);
        double li = lse - zi[labels[i]];
        if (loss) loss[i] = (float)li;
        total += li;
        for (int j = 0; j < k; j++) {
            double pj = exp((double)zi[j] - lse);
            if (probs) probs[(size_t)i * k + j] = (float)pj;
            if (dz) dz[(size_t)i * k + j] = (float)((pj - (j == labels[i] ? 1.0 : 0.0)) / n);
        }
    }
    return n > 0 ? total / n : 0.0;
}
