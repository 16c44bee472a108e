/* core: the pool's compute threads pinned one per CPU (or left alone where an OpenMP
 * binding is set: run with OMP_PROC_BIND=false too), the caller's thread (thread 0) left
 * with the program's CPUs, data worker threads unpinned. */
#define _GNU_SOURCE
#include "core/core.h"
#include "loupe.h"
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static cpu_set_t worker_mask;
static void *worker(void *arg) {
    (void)arg;
    lp_thread_unpin();
    sched_getaffinity(0, sizeof worker_mask, &worker_mask);
    return NULL;
}

int main(void) {
    cpu_set_t all;
    CHECK(sched_getaffinity(0, sizeof all, &all) == 0, "sched_getaffinity");
    const bool bind_set = getenv("OMP_PROC_BIND") || getenv("OMP_PLACES") || getenv("GOMP_CPU_AFFINITY");
    /* an OpenMP binding has already bound this thread: its count is libgomp's */
    const int m = bind_set ? omp_get_num_procs() : CPU_COUNT(&all);
    lp_set_threads(0);
    CHECK(lp_get_threads() == m, "threads %d, the process may use %d CPUs", lp_get_threads(), m);
    CHECK(lp_cpu_count() == m, "lp_cpu_count %d after pinning, want %d", lp_cpu_count(), m);
    cpu_set_t seen[256];
    int team = 0;
#pragma omp parallel
    {
#pragma omp single
        team = omp_get_num_threads();
        const int t = omp_get_thread_num();
        if (t < 256) sched_getaffinity(0, sizeof seen[t], &seen[t]);
    }
    CHECK(team == m, "team of %d threads, want %d", team, m);
    const bool pin = m >= 2 && !bind_set;
    cpu_set_t used;
    CPU_ZERO(&used);
    /* the caller's own thread keeps the program's CPUs: a thread it then starts is not confined */
    if (!bind_set) CHECK(CPU_EQUAL(&seen[0], &all), "the calling thread may run on %d CPUs after lp_set_threads, want all %d",
                         CPU_COUNT(&seen[0]), m);
    for (int t = 1; t < team && t < 256; t++) {
        if (pin) {
            CHECK(CPU_COUNT(&seen[t]) == 1, "thread %d may run on %d CPUs, want 1", t, CPU_COUNT(&seen[t]));
            cpu_set_t in;
            CPU_AND(&in, &seen[t], &all);
            CHECK(CPU_EQUAL(&in, &seen[t]), "thread %d pinned outside the process's CPUs", t);
            CPU_AND(&in, &seen[t], &used);
            CHECK(CPU_COUNT(&in) == 0, "thread %d shares its CPU with another thread", t);
            CPU_OR(&used, &used, &seen[t]);
        } else if (!bind_set) {
            CHECK(CPU_EQUAL(&seen[t], &all), "thread %d pinned: one CPU or a binding was set", t);
        }
    }
    /* a thread started by a pinned one inherits its CPU: lp_thread_unpin gives all back
     * (under an OpenMP binding it changes nothing) */
    pthread_t th;
    CHECK(pthread_create(&th, NULL, worker, NULL) == 0, "pthread_create");
    pthread_join(th, NULL);
    if (!bind_set) CHECK(CPU_EQUAL(&worker_mask, &all), "worker may run on %d CPUs, want all %d", CPU_COUNT(&worker_mask), m);
    /* a second call keeps the pinning and the count */
    lp_set_threads(0);
    CHECK(lp_get_threads() == m, "second call: threads %d, want %d", lp_get_threads(), m);
    printf("%d CPUs, pinned: %s, %s\n", m, pin ? "yes" : "no", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
