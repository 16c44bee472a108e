/* MPI for data-parallel training (dist.h). Large buffers go in chunks of at most 2^30
 * elements (MPI counts are int). */
#include "train/dist.h"
#include <stdlib.h>
#include <string.h>
#ifdef LOUPE_HAVE_MPI
#include <mpi.h>
#endif

bool lp_dist_launched(void) {
    /* Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE; PMIx launchers PMIX_RANK */
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}

#ifdef LOUPE_HAVE_MPI
static bool g_we_initialised;
static void finalize_at_exit(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

static lp_status mpi_check(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return LP_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return lp_fail(LP_ERR_IO, "MPI %s: %.*s (another process of the job may have died; the job stops)", what, len, msg);
}

lp_status lp_dist_init(lp_dist *d) {
    d->rank = 0, d->size = 1;
    if (!lp_dist_launched()) return LP_OK;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        /* FUNNELED: only the thread that trains calls MPI (OpenMP and the loader's threads never do) */
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return lp_fail(LP_ERR_IO, "MPI: initialisation failed (started by mpirun, but MPI cannot start)");
        g_we_initialised = true;
        atexit(finalize_at_exit);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    return LP_OK;
}

#define CHUNK ((size_t)1 << 30)
static lp_status sum(const lp_dist *d, void *x, size_t n, MPI_Datatype t, size_t elem) {
    if (d->size < 2) return LP_OK;
    for (size_t o = 0; o < n; o += CHUNK) {
        const int c = (int)(n - o < CHUNK ? n - o : CHUNK);
        lp_status st = mpi_check(MPI_Allreduce(MPI_IN_PLACE, (char *)x + o * elem, c, t, MPI_SUM, MPI_COMM_WORLD), "allreduce");
        if (st) return st;
    }
    return LP_OK;
}
lp_status lp_dist_sum_f32(const lp_dist *d, float *x, size_t n) { return sum(d, x, n, MPI_FLOAT, sizeof *x); }
lp_status lp_dist_sum_f64(const lp_dist *d, double *x, size_t n) { return sum(d, x, n, MPI_DOUBLE, sizeof *x); }

static MPI_Request *g_req;
static int g_nreq, g_capreq;

lp_status lp_dist_sum_start(const lp_dist *d, float *x, size_t n) {
    if (d->size < 2) return LP_OK;
    for (size_t o = 0; o < n; o += CHUNK) {
        if (g_nreq == g_capreq) {
            const int cap = g_capreq ? 2 * g_capreq : 64;
            MPI_Request *r = realloc(g_req, (size_t)cap * sizeof *r);
            if (!r) return lp_fail(LP_ERR_NOMEM, "out of memory");
            g_req = r, g_capreq = cap;
        }
        const int c = (int)(n - o < CHUNK ? n - o : CHUNK);
        lp_status st = mpi_check(MPI_Iallreduce(MPI_IN_PLACE, x + o, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &g_req[g_nreq]),
                                 "allreduce");
        if (st) return st;
        g_nreq++;
    }
    return LP_OK;
}

lp_status lp_dist_progress(const lp_dist *d) {
    if (d->size < 2 || g_nreq == 0) return LP_OK;
    int done;
    return mpi_check(MPI_Testall(g_nreq, g_req, &done, MPI_STATUSES_IGNORE), "allreduce");
}

lp_status lp_dist_sum_wait_all(const lp_dist *d) {
    if (d->size < 2 || g_nreq == 0) return LP_OK;
    lp_status st = mpi_check(MPI_Waitall(g_nreq, g_req, MPI_STATUSES_IGNORE), "allreduce");
    g_nreq = 0;
    return st;
}

lp_status lp_dist_bcast(const lp_dist *d, void *x, size_t bytes) {
    if (d->size < 2) return LP_OK;
    for (size_t o = 0; o < bytes; o += CHUNK) {
        const int c = (int)(bytes - o < CHUNK ? bytes - o : CHUNK);
        lp_status st = mpi_check(MPI_Bcast((char *)x + o, c, MPI_BYTE, 0, MPI_COMM_WORLD), "broadcast");
        if (st) return st;
    }
    return LP_OK;
}

void lp_dist_abort(const lp_dist *d, int code) {
    if (d->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

static bool mpi_running(void) {
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    return inited && !fin;
}

int lp_dist_world_rank(void) {
    int r = 0;
    if (mpi_running()) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

void lp_dist_abort_job(int code) {
    int n = 1;
    if (mpi_running()) MPI_Comm_size(MPI_COMM_WORLD, &n);
    if (n > 1) MPI_Abort(MPI_COMM_WORLD, code);
}
#else
lp_status lp_dist_init(lp_dist *d) {
    d->rank = 0, d->size = 1;
    if (lp_dist_launched()) return lp_fail(LP_ERR_ARG, "started by mpirun, but this loupe was built without MPI (install libopenmpi-dev and rebuild)");
    return LP_OK;
}
lp_status lp_dist_sum_f32(const lp_dist *d, float *x, size_t n) { return LP_OK; }
lp_status lp_dist_sum_f64(const lp_dist *d, double *x, size_t n) { return LP_OK; }
lp_status lp_dist_bcast(const lp_dist *d, void *x, size_t bytes) { return LP_OK; }
lp_status lp_dist_sum_start(const lp_dist *d, float *x, size_t n) { return LP_OK; }
lp_status lp_dist_progress(const lp_dist *d) { return LP_OK; }
lp_status lp_dist_sum_wait_all(const lp_dist *d) { return LP_OK; }
void lp_dist_abort(const lp_dist *d, int code) { (void)d, (void)code; }
int lp_dist_world_rank(void) { return 0; }
void lp_dist_abort_job(int code) { (void)code; }
#endif
