/* Counter-based RNG. Each draw hashes (seed, stream, counter) through a
 * splitmix64-style finaliser, so the value does not depend on which thread
 * draws it or in which order (hand-written: a dozen lines, no library needed). */
#include "core.h"
#include <math.h>

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t lp_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter) {
    uint64_t z = mix64(seed + 0x9e3779b97f4a7c15ULL);
    z = mix64(z ^ (stream * 0xd1b54a32d192ed03ULL + 0x632be59bd9b4e019ULL));
    return mix64(z ^ (counter * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL));
}

float lp_rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
    return (float)(lp_rng_u64(seed, stream, counter) >> 40) * (1.0f / 16777216.0f);
}

float lp_rng_normal(uint64_t seed, uint64_t stream, uint64_t counter) {
    /* Box-Muller from two independent uniforms of the same counter. */
    uint64_t a = lp_rng_u64(seed, stream, 2 * counter), b = lp_rng_u64(seed, stream, 2 * counter + 1);
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0,1] */
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void lp_rng_permutation(uint64_t seed, uint64_t stream, int *perm, int n) {
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(lp_rng_u64(seed, stream, (uint64_t)i) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
