#define _GNU_SOURCE /* sched_setaffinity, CPU_COUNT */
#include "core.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

static int g_threads = 0;
static cpu_set_t g_cpus; /* the process's CPUs before the compute threads were pinned */
static bool g_pinned = false;

/* One compute thread per CPU, the pool's pinned, where the threads take every CPU the process may
 * use. Left free, the scheduler moved them between the cores during a step, each move
 * leaving the thread's L2 (the AMX kernels' 1 MB bands, oneDNN's blocks) behind: a
 * 224x224 batch 16 bf16 step on 2 cores took 0.527-0.536 s pinned against 0.539-0.547 s
 * (min to median of 5 alternating runs; no gain at 32x32 batch 2).
 * An OpenMP binding the user set (OMP_PROC_BIND, OMP_PLACES, GOMP_CPU_AFFINITY; with
 * OMP_PROC_BIND=false, none) is left as it is; so are fewer threads than CPUs, where
 * the scheduler's choice of the idle ones is better than ours. */
static void pin_pool(int n) {
#ifdef _OPENMP
    if (g_pinned || getenv("OMP_PROC_BIND") || getenv("OMP_PLACES") || getenv("GOMP_CPU_AFFINITY")) return;
    cpu_set_t all;
    if (sched_getaffinity(0, sizeof all, &all) != 0 || CPU_COUNT(&all) != n || n < 2) return;
    int cpus[CPU_SETSIZE], m = 0;
    for (int c = 0; c < CPU_SETSIZE && m < n; c++)
        if (CPU_ISSET(c, &all)) cpus[m++] = c;
    g_cpus = all;
    g_pinned = true;
#pragma omp parallel num_threads(n)
    {
        /* the pool's own threads; thread 0 is the caller's, whose affinity is the program's
         * (pinned, every thread it then created would inherit one CPU); the scheduler keeps
         * it on the CPU the others leave free */
        const int t = omp_get_thread_num();
        if (t > 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpus[t], &one);
            sched_setaffinity(0, sizeof one, &one); /* 0: the calling thread */
        }
    }
#else
    (void)n;
#endif
}

/* Once per process: two threads' first calls at the same time (two trainings) would each
 * pin their own pool to the same CPUs. */
static void pin_threads(int n) {
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    pin_pool(n);
    pthread_mutex_unlock(&lock);
}

int lp_cpu_count(void) {
    if (g_pinned) return CPU_COUNT(&g_cpus);
#ifdef _OPENMP
    return omp_get_num_procs(); /* the CPUs before an OpenMP binding, where one is set */
#else
    cpu_set_t all;
    if (sched_getaffinity(0, sizeof all, &all) == 0 && CPU_COUNT(&all) > 0) return CPU_COUNT(&all);
    const long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
#endif
}

void lp_thread_unpin(void) {
    if (g_pinned) sched_setaffinity(0, sizeof g_cpus, &g_cpus);
}

void lp_set_threads(int n) {
    if (n <= 0) n = lp_cpu_count(); /* those the process may use (taskset, cpusets), not all online */
    g_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    pin_threads(n);
}

int lp_get_threads(void) {
    if (g_threads == 0) lp_set_threads(0);
    return g_threads;
}
