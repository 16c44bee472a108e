/* Under mpirun: the sum over ranks of integer-valued float gradients must be exact (every
 * partial sum is an integer below 2^24, so any order of additions gives the same bits),
 * and a broadcast must give rank 0's bytes everywhere. Prints "ok" (rank 0) or the first
 * wrong element, exit 1. */
#include "train/dist.h"
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    lp_dist d;
    if (lp_dist_init(&d)) return fprintf(stderr, "dist init: %s\n", lp_errmsg()), 1;
    if (d.size < 2) return fprintf(stderr, "run me under mpirun -np 2 or more (size %d)\n", d.size), 1;
    /* more than one message of the fit loop's runs would hold: 5 M floats */
    const size_t n = (size_t)5 << 20;
    float *g = malloc(n * sizeof *g);
    if (!g) return 1;
    for (size_t i = 0; i < n; i++) g[i] = (float)((long)(i % 4096) - 2048 + 1000 * d.rank);
    if (lp_dist_sum_f32(&d, g, n)) return fprintf(stderr, "sum: %s\n", lp_errmsg()), 1;
    for (size_t i = 0; i < n; i++) {
        const double want = (double)d.size * ((long)(i % 4096) - 2048) + 1000.0 * d.size * (d.size - 1) / 2;
        if ((double)g[i] != want) return fprintf(stderr, "rank %d: element %zu is %.1f, not %.1f\n", d.rank, i, g[i], want), 1;
    }
    double x[2] = {d.rank == 0 ? 3.25 : -1.0, d.rank == 0 ? 1e-300 : 0.0};
    if (lp_dist_bcast(&d, x, sizeof x) || x[0] != 3.25 || x[1] != 1e-300)
        return fprintf(stderr, "rank %d: broadcast gave %g %g\n", d.rank, x[0], x[1]), 1;
    if (d.rank == 0) printf("ok: %d ranks, %zu integer-valued floats summed exactly, broadcast\n", d.size, n);
    free(g);
    return 0;
}
