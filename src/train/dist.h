/* Data-parallel training over MPI (Open MPI): the job's processes ("ranks") and the few
 * collectives the fit loop needs. Launched by mpirun, loupe joins the job; otherwise,
 * or in a build without MPI, it is a job of one and every call is a no-op. */
#ifndef LP_DIST_H
#define LP_DIST_H

#include "core/core.h"
#include <stdbool.h>
#include <stddef.h>

typedef struct lp_dist {
    int rank, size; /* size 1: no MPI */
} lp_dist;

/* Joins the job when this process was started by mpirun (MPI initialised once per
 * process, finalised at exit), else {0, 1}. */
lp_status lp_dist_init(lp_dist *d);
/* Whether mpirun started this process (its environment says so). */
bool lp_dist_launched(void);
/* In place: x = the sum over ranks of x, the same on every rank; the same order of
 * additions on every run with the same number of ranks (MPI_Allreduce on
 * MPI_COMM_WORLD, whose algorithm Open MPI picks from the message size and the job). */
lp_status lp_dist_sum_f32(const lp_dist *d, float *x, size_t n);
lp_status lp_dist_sum_f64(const lp_dist *d, double *x, size_t n);
/* The same sum without waiting: started now, done after lp_dist_sum_wait_all (x untouched
 * meanwhile); lp_dist_progress lets MPI move the started sums on (no progress thread:
 * the fit loop calls it between layers of backward). */
lp_status lp_dist_sum_start(const lp_dist *d, float *x, size_t n);
lp_status lp_dist_progress(const lp_dist *d);
lp_status lp_dist_sum_wait_all(const lp_dist *d);
/* bytes of x from rank 0 to every rank. */
lp_status lp_dist_bcast(const lp_dist *d, void *x, size_t bytes);
/* Ends the whole job (after an error on one rank, the others would wait for it forever). */
void lp_dist_abort(const lp_dist *d, int code);
/* For the command line, after lp_train: this process's rank (0 outside a job), and the
 * abort of a job of several processes (nothing otherwise). */
int lp_dist_world_rank(void);
void lp_dist_abort_job(int code);

#endif
