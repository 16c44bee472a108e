/* Batch normalization with its activation (none, ReLU, ReLU6 or SiLU) in one pass over the
 * data, forward and backward: a kernel of our own because oneDNN 2.6 fuses only ReLU into its
 * batch normalization, so MobileNetV2's ReLU6 and EfficientNet's SiLU cost two more passes
 * forward and three more backward over the largest maps of the net (its expansions). Here:
 *   forward:  one pass for the statistics, one for y = act(a x + b) (a = gamma/sigma,
 *             b = beta - mean a);
 *   backward: one pass for sum(g) and sum(g (x - mean)), g = dy act'(z), one for dx; z
 *             (the mask, SiLU's derivative) is recomputed from x with the forward's very
 *             a and b, so nothing is kept between the two (no workspace).
 * The statistics are summed in double, of x less a value of its channel's own (its first),
 * so that one pass gives mean and variance as PyTorch's double two-pass sums do; the
 * backward's sums in float over runs of 64 pixels, then in double.
 *
 * Data in pixel vectors (nChw16c, nChw8c, nhwc with c a multiple of 8; lp_md_pixel_vectors),
 * 8 channels a vector; loops compiled per ISA level (LP_ISA_VARIANTS; the statistics with
 * intrinsics at AVX2 and AVX-512, below). The parallel loops
 * run over (channel block, sample, pixel chunk) tasks, each writing its partial sums, added
 * per channel afterwards. */
#include "batchnorm.h"
#include "vec8.h"
#include <math.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef double v4d __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

#define V 8 /* channels a vector */

LP_ISA_BODY v4d lo4d(v8f v) { return __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3), v4d); }
LP_ISA_BODY v4d hi4d(v8f v) { return __builtin_convertvector(__builtin_shufflevector(v, v, 4, 5, 6, 7), v4d); }

/* The activation's output and its pass-through mask on z (PyTorch: ReLU passes z > 0,
 * ReLU6 (hardtanh) 0 < z < 6). A NaN z stays NaN forward. SiLU: batchnorm_silu.c. */
LP_ISA_BODY v8f activate(v8f z, int act) {
    if (act == LP_BN_ACT_NONE) return z;
    z = select8(z < splat8(0.0f), splat8(0.0f), z);
    return act == LP_BN_ACT_RELU6 ? select8(z > splat8(6.0f), splat8(6.0f), z) : z;
}
LP_ISA_BODY v8i passes(v8f z, int act) {
    if (act == LP_BN_ACT_NONE) return (v8i){-1, -1, -1, -1, -1, -1, -1, -1};
    const v8i pos = z > splat8(0.0f);
    return act == LP_BN_ACT_RELU6 ? pos & (z < splat8(6.0f)) : pos;
}

/* The loops go over pixel blocks of about 8 KB, and in each over the vec channels 8 at a
 * time, so that a block's cache lines are read from memory once whatever vec is; sums
 * are carried across blocks in the caller's arrays (zeroed by it). */
LP_ISA_BODY int block_pixels(int vec) { return vec >= 2048 ? 1 : 2048 / vec; }

/* The backward's sums: float over runs of at most RUN pixels (two accumulators each, for two
 * pixels in flight), added into the caller's double sums after each run. */
#define RUN 64
LP_ISA_BODY void add_run(double *to, v8f s) {
    const v4d l = lo4d(s), h = hi4d(s);
    for (int j = 0; j < 4; j++) to[j] += l[j], to[4 + j] += h[j];
}

/* One task's pixels: np pixels of vec channels from x; sums of d = x - shift and of d^2
 * for each of the vec channels, in double (where d and d^2 are exact: the variance then
 * comes out as PyTorch's double two-pass one does, to the last bit of its float in all but
 * rare ties, and a ReLU6 mask with it); shift, a value of the channel's own, keeps
 * E[d^2] - E[d]^2 from cancelling where the mean is large against the spread. */
LP_ISA_BODY void stats_body(const float *x, int vec, int np, const float *shift, double *sum, double *sq) {
    const int pb = block_pixels(vec);
    for (int p0 = 0; p0 < np; p0 += pb) {
        const int p1 = np - p0 < pb ? np : p0 + pb;
        for (int k = 0; k < vec; k += V) {
            const v8d kv = __builtin_convertvector(ld8(shift + k), v8d);
            v8d s0 = {0}, s1 = {0}, q0 = {0}, q1 = {0};
            int p = p0;
            for (; p + 1 < p1; p += 2) {
                const v8d d0 = __builtin_convertvector(ld8(x + (size_t)p * vec + k), v8d) - kv;
                const v8d d1 = __builtin_convertvector(ld8(x + (size_t)(p + 1) * vec + k), v8d) - kv;
                s0 += d0, q0 += d0 * d0, s1 += d1, q1 += d1 * d1;
            }
            if (p < p1) {
                const v8d d0 = __builtin_convertvector(ld8(x + (size_t)p * vec + k), v8d) - kv;
                s0 += d0, q0 += d0 * d0;
            }
            const v8d s = s0 + s1, q = q0 + q1;
            for (int j = 0; j < V; j++) sum[k + j] += s[j], sq[k + j] += q[j];
        }
    }
}

#if LP_X86_KERNELS /* x86-64 code (backend.h) */
#include <immintrin.h>
/* The same sums with the conversions to double as single instructions (GCC's generic
 * vectors split them into pairs of halves, half the speed); a fused d*d + q (d*d is exact
 * or off by an ulp of a double: no float result changes). */
__attribute__((target("avx512f"))) static void stats_avx512(const float *x, int vec, int np, const float *shift, double *sum,
                                                            double *sq) {
    const int pb = block_pixels(vec);
    for (int p0 = 0; p0 < np; p0 += pb) {
        const int p1 = np - p0 < pb ? np : p0 + pb;
        for (int k = 0; k < vec; k += V) {
            const __m512d kv = _mm512_cvtps_pd(_mm256_loadu_ps(shift + k));
            __m512d s0 = _mm512_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
            int p = p0;
            for (; p + 1 < p1; p += 2) {
                const __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + (size_t)p * vec + k)), kv);
                const __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + (size_t)(p + 1) * vec + k)), kv);
                s0 = _mm512_add_pd(s0, d0), q0 = _mm512_fmadd_pd(d0, d0, q0);
                s1 = _mm512_add_pd(s1, d1), q1 = _mm512_fmadd_pd(d1, d1, q1);
            }
            if (p < p1) {
                const __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + (size_t)p * vec + k)), kv);
                s0 = _mm512_add_pd(s0, d0), q0 = _mm512_fmadd_pd(d0, d0, q0);
            }
            _mm512_storeu_pd(sum + k, _mm512_add_pd(_mm512_loadu_pd(sum + k), _mm512_add_pd(s0, s1)));
            _mm512_storeu_pd(sq + k, _mm512_add_pd(_mm512_loadu_pd(sq + k), _mm512_add_pd(q0, q1)));
        }
    }
}

__attribute__((target("avx2,fma"))) static void stats_avx2(const float *x, int vec, int np, const float *shift, double *sum,
                                                           double *sq) {
    const int pb = block_pixels(vec);
    for (int p0 = 0; p0 < np; p0 += pb) {
        const int p1 = np - p0 < pb ? np : p0 + pb;
        for (int k = 0; k < vec; k += V) {
            const __m256d k0 = _mm256_cvtps_pd(_mm_loadu_ps(shift + k)), k1 = _mm256_cvtps_pd(_mm_loadu_ps(shift + k + 4));
            __m256d s0 = _mm256_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
            for (int p = p0; p < p1; p++) {
                const float *xp = x + (size_t)p * vec + k;
                const __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(xp)), k0);
                const __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(xp + 4)), k1);
                s0 = _mm256_add_pd(s0, d0), q0 = _mm256_fmadd_pd(d0, d0, q0);
                s1 = _mm256_add_pd(s1, d1), q1 = _mm256_fmadd_pd(d1, d1, q1);
            }
            _mm256_storeu_pd(sum + k, _mm256_add_pd(_mm256_loadu_pd(sum + k), s0));
            _mm256_storeu_pd(sum + k + 4, _mm256_add_pd(_mm256_loadu_pd(sum + k + 4), s1));
            _mm256_storeu_pd(sq + k, _mm256_add_pd(_mm256_loadu_pd(sq + k), q0));
            _mm256_storeu_pd(sq + k + 4, _mm256_add_pd(_mm256_loadu_pd(sq + k + 4), q1));
        }
    }
}
#endif

static void stats(const float *x, int vec, int np, const float *shift, double *sum, double *sq) {
#if LP_X86_KERNELS
    const lp_isa isa = lp_cpu_isa();
    if (isa >= LP_ISA_AVX512) {
        stats_avx512(x, vec, np, shift, sum, sq);
        return;
    }
    if (isa >= LP_ISA_AVX2) {
        stats_avx2(x, vec, np, shift, sum, sq);
        return;
    }
#endif
    stats_body(x, vec, np, shift, sum, sq);
}

LP_ISA_BODY void apply_body(const float *x, float *y, int vec, int np, const float *a, const float *b, int act) {
    const int pb = block_pixels(vec);
    for (int p0 = 0; p0 < np; p0 += pb) {
        const int p1 = np - p0 < pb ? np : p0 + pb;
        for (int k = 0; k < vec; k += V) {
            const v8f av = ld8(a + k), bv = ld8(b + k);
            for (int p = p0; p < p1; p++) {
                const size_t e = (size_t)p * vec + k;
                st8(y + e, activate(av * ld8(x + e) + bv, act));
            }
        }
    }
}
LP_ISA_VARIANTS_VOID(apply, (const float *x, float *y, int vec, int np, const float *a, const float *b, int act),
                     (x, y, vec, np, a, b, act))

/* g: dy where the activation passes z = a x + b (the forward's z, recomputed). */
LP_ISA_BODY v8f act_grad(v8f dy, v8f xv, v8f av, v8f bv, int act) { return (v8f)((v8i)dy & passes(av * xv + bv, act)); }

LP_ISA_BODY void grad_pixel(const float *x, const float *dy, float *dx, size_t e, v8f av, v8f bv, v8f mv, int act, v8f *gs,
                            v8f *xs) {
    const v8f xv = ld8(x + e);
    const v8f g = act_grad(ld8(dy + e), xv, av, bv, act);
    *gs += g, *xs += g * (xv - mv);
    if (dx) st8(dx + e, av * g);
}

/* s1 = sum(g), s2 = sum(g (x - mean)); with dx (frozen statistics, no term through them)
 * also dx = a g in the same pass. */
LP_ISA_BODY void grad_sums_body(const float *x, const float *dy, float *dx, int vec, int np, const float *a, const float *b,
                                const float *mean, int act, double *s1, double *s2) {
    const int pb = block_pixels(vec);
    for (int p0 = 0; p0 < np; p0 += pb) {
        const int p1 = np - p0 < pb ? np : p0 + pb;
        for (int k = 0; k < vec; k += V) {
            const v8f av = ld8(a + k), bv = ld8(b + k), mv = ld8(mean + k);
            for (int r0 = p0; r0 < p1; r0 += RUN) {
                const int r1 = p1 - r0 < RUN ? p1 : r0 + RUN;
                v8f g0 = {0}, g1 = {0}, x0 = {0}, x1 = {0};
                int p = r0;
                for (; p + 1 < r1; p += 2) {
                    grad_pixel(x, dy, dx, (size_t)p * vec + k, av, bv, mv, act, &g0, &x0);
                    grad_pixel(x, dy, dx, (size_t)(p + 1) * vec + k, av, bv, mv, act, &g1, &x1);
                }
                if (p < r1) grad_pixel(x, dy, dx, (size_t)p * vec + k, av, bv, mv, act, &g0, &x0);
                add_run(s1 + k, g0 + g1);
                add_run(s2 + k, x0 + x1);
            }
        }
    }
}
LP_ISA_VARIANTS_VOID(grad_sums,
                     (const float *x, const float *dy, float *dx, int vec, int np, const float *a, const float *b, const float *mean,
                      int act, double *s1, double *s2),
                     (x, dy, dx, vec, np, a, b, mean, act, s1, s2))

/* Batch statistics: dx = a g + k1 (x - mean) + k0. */
LP_ISA_BODY void grad_apply_body(const float *x, const float *dy, float *dx, int vec, int np, const float *a, const float *b,
                                 const float *mean, const float *k1, const float *k0, int act) {
    const int pb = block_pixels(vec);
    for (int p0 = 0; p0 < np; p0 += pb) {
        const int p1 = np - p0 < pb ? np : p0 + pb;
        for (int k = 0; k < vec; k += V) {
            const v8f av = ld8(a + k), bv = ld8(b + k), mv = ld8(mean + k), k1v = ld8(k1 + k), k0v = ld8(k0 + k);
            for (int p = p0; p < p1; p++) {
                const size_t e = (size_t)p * vec + k;
                const v8f xv = ld8(x + e);
                st8(dx + e, av * act_grad(ld8(dy + e), xv, av, bv, act) + (k1v * (xv - mv) + k0v));
            }
        }
    }
}
LP_ISA_VARIANTS_VOID(grad_apply,
                     (const float *x, const float *dy, float *dx, int vec, int np, const float *a, const float *b, const float *mean,
                      const float *k1, const float *k0, int act),
                     (x, dy, dx, vec, np, a, b, mean, k1, k0, act))

bool lp_bn_fused_layout(const lp_md *md, int *vec) {
    return md->data_type == dnnl_f32 && lp_md_pixel_vectors(md, vec) && *vec % V == 0;
}

/* Tasks: (channel block, sample, pixel chunk), enough of them for every thread; chunks of
 * at least 256 pixels. Where there are channel blocks for every thread and the data of
 * one block per thread fits in a share of the last-level cache, each thread takes whole
 * blocks instead and runs both passes over a block before the next, the second from the
 * cache (as oneDNN's batch normalization does), one task per (block, sample). */
static size_t last_level_cache(void) {
    long l3 = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
    l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    return l3 > 0 ? (size_t)l3 : 8u << 20;
}

static size_t block_budget(int threads) {
    /* x and dy of one block a thread, in half the cache */
    const size_t b = last_level_cache() / (4 * (size_t)threads);
    return b > (256 << 10) ? b : 256 << 10;
}

void lp_bn_fused_plan(lp_bn_fused *f, int n, int c, int hw, int vec) {
    f->n = n, f->c = c, f->hw = hw, f->vec = vec, f->nb = c / vec;
    const int threads = lp_get_threads(), want = 4 * threads, base = f->nb * n;
    f->per_block = (f->nb % threads == 0 || f->nb >= 4 * threads) && (size_t)n * hw * vec * sizeof(float) <= block_budget(threads);
    int chunks = f->per_block ? 1 : (want + base - 1) / base;
    if (chunks > hw / 256) chunks = hw / 256;
    if (chunks < 1) chunks = 1;
    f->chunk = (hw + chunks - 1) / chunks;
    f->nchunk = (hw + f->chunk - 1) / f->chunk;
}

static int tasks(const lp_bn_fused *f) { return f->nb * f->n * f->nchunk; }

size_t lp_bn_fused_scratch_size(const lp_bn_fused *f) {
    return (size_t)tasks(f) * 2 * f->vec * sizeof(double) + 5 * (size_t)f->c * sizeof(float);
}

/* Task t's first element, its pixel count and its block's first channel. */
static size_t task_at(const lp_bn_fused *f, int t, int *np, int *ch0) {
    const int chunk = t % f->nchunk, i = t / f->nchunk % f->n, blk = t / f->nchunk / f->n;
    const int p0 = chunk * f->chunk;
    *np = f->hw - p0 < f->chunk ? f->hw - p0 : f->chunk;
    *ch0 = blk * f->vec;
    return (((size_t)i * f->nb + blk) * f->hw + p0) * f->vec;
}

/* One task's part of each pass (part: per task, the vec values of one sum, then the other's). */
static void run_stats(const lp_bn_fused *f, int t, const float *x, const float *shift, double *part) {
    int np, ch0;
    const size_t o = task_at(f, t, &np, &ch0);
    double *sum = part + (size_t)t * 2 * f->vec;
    memset(sum, 0, 2 * f->vec * sizeof(double));
    stats(x + o, f->vec, np, shift + ch0, sum, sum + f->vec);
}

/* Each channel's first value (sample 0, pixel 0), the shift of its sums. */
static void shifts(const lp_bn_fused *f, const float *x, int c0, int c1, float *shift) {
    for (int ch = c0; ch < c1; ch++) shift[ch] = x[(size_t)(ch / f->vec) * f->hw * f->vec + ch % f->vec];
}

/* Channel ch's two sums over all tasks (part: per task, vec values of the first sum, then
 * vec of the second). */
static void channel_sums(const lp_bn_fused *f, const double *part, int ch, double *a, double *b) {
    const int blk = ch / f->vec, k = ch % f->vec;
    double s = 0, q = 0;
    for (int t = blk * f->n * f->nchunk; t < (blk + 1) * f->n * f->nchunk; t++)
        s += part[(size_t)t * 2 * f->vec + k], q += part[(size_t)t * 2 * f->vec + f->vec + k];
    *a = s, *b = q;
}

/* y = a x + b with a = gamma / sqrt(var + eps), b = beta - mean a, as PyTorch's batch norm
 * folds them (so that an activation's mask at 0 or 6 falls where PyTorch's does): 1/sqrt
 * in double from the batch's variance, in float from running statistics, then a and b in
 * float. Forward and backward compute them alike from the same floats, so backward's
 * mask is forward's. For channels [c0, c1), as the next three. */
static void coefficients(bool batch_stats, const float *gamma, const float *beta, const float *mean, const float *var, float eps,
                         int c0, int c1, float *a, float *b) {
    for (int ch = c0; ch < c1; ch++) {
        const float is = batch_stats ? (float)(1.0 / sqrt((double)var[ch] + eps)) : 1.0f / sqrtf(var[ch] + eps);
        a[ch] = is * gamma[ch];
        b[ch] = beta[ch] - mean[ch] * a[ch];
    }
}

static void batch_statistics(const lp_bn_fused *f, const double *part, const float *shift, int c0, int c1, float *mean,
                             float *var) {
    const double m = (double)f->n * f->hw;
    for (int ch = c0; ch < c1; ch++) {
        double s, q;
        channel_sums(f, part, ch, &s, &q);
        const double d = s / m, v = q / m - d * d;
        mean[ch] = (float)(shift[ch] + d), var[ch] = (float)(v > 0 ? v : 0);
    }
}

/* dgamma, dbeta, and dx's coefficients: dx = a (g - s1/m - xhat dgamma/m), xhat = (x - mean) is,
 * = a g + k1 (x - mean) + k0. */
static void gradient_terms(const lp_bn_fused *f, const double *part, const float *a, const float *var, float eps, int c0, int c1,
                           float *dgamma, float *dbeta, float *k1, float *k0) {
    const double m = (double)f->n * f->hw;
    for (int ch = c0; ch < c1; ch++) {
        double s1, s2;
        channel_sums(f, part, ch, &s1, &s2);
        const double is = 1.0 / sqrt((double)var[ch] + eps), dg = s2 * is;
        if (dgamma) dgamma[ch] = (float)dg;
        if (dbeta) dbeta[ch] = (float)s1;
        k1[ch] = (float)(-(double)a[ch] * is * dg / m);
        k0[ch] = (float)(-(double)a[ch] * s1 / m);
    }
}

static void run_apply(const lp_bn_fused *f, int t, const float *x, const float *a, const float *b, int act, float *y) {
    int np, ch0;
    const size_t o = task_at(f, t, &np, &ch0);
    if (act == LP_BN_ACT_SILU) lp_bn_silu_forward(x + o, y + o, f->vec, np, a + ch0, b + ch0);
    else apply(x + o, y + o, f->vec, np, a + ch0, b + ch0, act);
}

/* With SiLU, g = dy silu'(z) is computed once, block by block, into gbuf (dx, or dy where
 * dx is not wanted), summed from the cache, and read back by the dx pass. */
static void run_grad_sums(const lp_bn_fused *f, int t, const float *x, const float *y, float *dy, const float *a, const float *b,
                          const float *mean, int act, float *dx, float *gbuf, double *part) {
    int np, ch0;
    const size_t o = task_at(f, t, &np, &ch0);
    double *sum = part + (size_t)t * 2 * f->vec;
    memset(sum, 0, 2 * f->vec * sizeof(double));
    if (act != LP_BN_ACT_SILU) {
        grad_sums(x + o, dy + o, dx ? dx + o : NULL, f->vec, np, a + ch0, b + ch0, mean + ch0, act, sum, sum + f->vec);
        return;
    }
    const int pb = block_pixels(f->vec);
    for (int p0 = 0; p0 < np; p0 += pb) {
        const size_t e = o + (size_t)p0 * f->vec;
        const int n = np - p0 < pb ? np - p0 : pb;
        lp_bn_silu_grad(x + e, y + e, dy + e, gbuf + e, f->vec, n, a + ch0, b + ch0);
        grad_sums(x + e, gbuf + e, dx ? dx + e : NULL, f->vec, n, a + ch0, b + ch0, mean + ch0, LP_BN_ACT_NONE, sum, sum + f->vec);
    }
}

static void run_grad_apply(const lp_bn_fused *f, int t, const float *x, const float *dy, const float *a, const float *b,
                           const float *mean, const float *k1, const float *k0, int act, float *dx) {
    int np, ch0;
    const size_t o = task_at(f, t, &np, &ch0);
    grad_apply(x + o, dy + o, dx + o, f->vec, np, a + ch0, b + ch0, mean + ch0, k1 + ch0, k0 + ch0, act);
}

/* This thread's share of tasks [0, nt): one contiguous range a thread, the same in every
 * pass, so that a pass that runs its range backwards (the second of two over the data)
 * starts on what the first left in the caches. */
static void thread_range(int nt, int *lo, int *hi) {
#ifdef _OPENMP
    const int id = omp_get_thread_num(), threads = omp_get_num_threads();
#else
    const int id = 0, threads = 1;
#endif
    const int q = nt / threads, r = nt % threads;
    *lo = id * q + (id < r ? id : r);
    *hi = *lo + q + (id < r);
}

void lp_bn_fused_forward(const lp_bn_fused *f, bool batch_stats, const float *x, const float *gamma, const float *beta, float *mean,
                         float *var, float eps, int act, float *y, void *scratch) {
    const int nt = tasks(f), per = f->n * f->nchunk;
    double *part = scratch;
    float *a = (float *)(part + (size_t)nt * 2 * f->vec), *b = a + f->c, *shift = b + f->c;
    if (f->per_block) {
LP_OMP(parallel for schedule(static))
        for (int blk = 0; blk < f->nb; blk++) {
            const int c0 = blk * f->vec, c1 = c0 + f->vec;
            if (batch_stats) {
                shifts(f, x, c0, c1, shift);
                for (int t = blk * per; t < (blk + 1) * per; t++) run_stats(f, t, x, shift, part);
                batch_statistics(f, part, shift, c0, c1, mean, var);
            }
            coefficients(batch_stats, gamma, beta, mean, var, eps, c0, c1, a, b);
            for (int t = blk * per; t < (blk + 1) * per; t++) run_apply(f, t, x, a, b, act, y);
        }
        return;
    }
    if (batch_stats) {
        shifts(f, x, 0, f->c, shift);
LP_OMP(parallel)
        {
            int lo, hi;
            thread_range(nt, &lo, &hi);
            for (int t = lo; t < hi; t++) run_stats(f, t, x, shift, part);
        }
        batch_statistics(f, part, shift, 0, f->c, mean, var);
    }
    coefficients(batch_stats, gamma, beta, mean, var, eps, 0, f->c, a, b);
LP_OMP(parallel)
    {
        int lo, hi;
        thread_range(nt, &lo, &hi);
        for (int t = hi - 1; t >= lo; t--) run_apply(f, t, x, a, b, act, y);
    }
}

void lp_bn_fused_backward(const lp_bn_fused *f, bool batch_stats, const float *x, const float *y, float *dy, const float *gamma,
                          const float *beta, const float *mean, const float *var, float eps, int act, float *dx, float *dgamma,
                          float *dbeta, void *scratch) {
    if (!dx && !dgamma && !dbeta) return;
    const int nt = tasks(f), per = f->n * f->nchunk;
    double *part = scratch;
    float *a = (float *)(part + (size_t)nt * 2 * f->vec), *b = a + f->c, *k1 = b + f->c, *k0 = k1 + f->c;
    /* frozen statistics: dx = a g needs no sums, so it goes in the sums' pass */
    float *dx_now = batch_stats ? NULL : dx;
    const bool second = batch_stats && dx;
    /* SiLU: the dx pass reads g (in dx) where the sums' pass left it */
    float *gbuf = dx ? dx : dy;
    const float *g2 = act == LP_BN_ACT_SILU ? dx : dy;
    const int act2 = act == LP_BN_ACT_SILU ? LP_BN_ACT_NONE : act;
    if (f->per_block) {
LP_OMP(parallel for schedule(static))
        for (int blk = 0; blk < f->nb; blk++) {
            const int c0 = blk * f->vec, c1 = c0 + f->vec;
            coefficients(batch_stats, gamma, beta, mean, var, eps, c0, c1, a, b);
            for (int t = blk * per; t < (blk + 1) * per; t++) run_grad_sums(f, t, x, y, dy, a, b, mean, act, dx_now, gbuf, part);
            gradient_terms(f, part, a, var, eps, c0, c1, dgamma, dbeta, k1, k0);
            if (second)
                for (int t = blk * per; t < (blk + 1) * per; t++) run_grad_apply(f, t, x, g2, a, b, mean, k1, k0, act2, dx);
        }
        return;
    }
    coefficients(batch_stats, gamma, beta, mean, var, eps, 0, f->c, a, b);
LP_OMP(parallel)
    {
        int lo, hi;
        thread_range(nt, &lo, &hi);
        for (int t = lo; t < hi; t++) run_grad_sums(f, t, x, y, dy, a, b, mean, act, dx_now, gbuf, part);
    }
    gradient_terms(f, part, a, var, eps, 0, f->c, dgamma, dbeta, k1, k0);
    if (!second) return;
LP_OMP(parallel)
    {
        int lo, hi;
        thread_range(nt, &lo, &hi);
        for (int t = hi - 1; t >= lo; t--) run_grad_apply(f, t, x, g2, a, b, mean, k1, k0, act2, dx);
    }
}
