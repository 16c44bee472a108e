#include "core.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#include <unistd.h>

static int g_threads = 0;

void lp_set_threads(int n) {
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    g_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int lp_get_threads(void) {
    if (g_threads == 0) lp_set_threads(0);
    return g_threads;
}
