/* Memory bandwidth for the roofline of memory-bound layers (bench/depthwise_roofline.sh):
 * STREAM's triad a[i] = b[i] + s * c[i] over three 128 MB arrays with OpenMP threads, best
 * of 10, counting 3 arrays of traffic (12 bytes an element; the write-allocate read of a,
 * where the CPU does one, is not counted, as in STREAM).
 * usage: stream_triad [threads] -> prints "triad GB/s: X" */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc > 1) omp_set_num_threads(atoi(argv[1]));
    const long n = 32L << 20;
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    if (!a || !b || !c) return 1;
#pragma omp parallel for
    for (long i = 0; i < n; i++) a[i] = 0, b[i] = 1, c[i] = 2;
    double best = 1e30;
    for (int r = 0; r < 10; r++) {
        const double t0 = omp_get_wtime();
#pragma omp parallel for
        for (long i = 0; i < n; i++) a[i] = b[i] + 3.0 * c[i];
        const double t = omp_get_wtime() - t0;
        if (t < best) best = t;
    }
    printf("triad GB/s: %.1f (check %g)\n", 3.0 * n * sizeof(double) / best / 1e9, a[n / 2]);
    return 0;
}
