/* core: errors, checked allocation, named tensors, counter-based RNG, threads,
 * small file helpers and the one atomic-replace helper. Knows only libc. */
#ifndef LP_CORE_H
#define LP_CORE_H

#include "loupe.h"
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors: set the thread's message and return the code ------------- */
lp_status lp_fail(lp_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "context: " (keeps the code). */
lp_status lp_fail_context(lp_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lp_clear_error(void);

/* ---- checked allocation: NULL + LP_ERR_NOMEM message on failure ------- */
void *lp_malloc(size_t n);
void *lp_calloc(size_t count, size_t size);
/* 64-byte aligned (for oneDNN and AVX-512); free with free(). */
void *lp_aligned_alloc(size_t n);
char *lp_strdup(const char *s);

/* ---- tensors: dense, row-major, owned storage ------------------------- */
typedef enum lp_dtype { LP_F32 = 0, LP_BF16, LP_F16, LP_I64, LP_U8, LP_DTYPE_COUNT } lp_dtype;
#define LP_MAX_DIMS 6
typedef struct lp_tensor {
    lp_dtype dtype;
    int ndim;
    int64_t shape[LP_MAX_DIMS];
    void *data; /* owned, 64-byte aligned */
} lp_tensor;

size_t lp_dtype_size(lp_dtype t);
const char *lp_dtype_name(lp_dtype t); /* safetensors spelling: "F32", "BF16", ... */
int64_t lp_tensor_numel(const lp_tensor *t);
size_t lp_tensor_nbytes(const lp_tensor *t);
lp_status lp_tensor_alloc(lp_tensor *t, lp_dtype dtype, int ndim, const int64_t *shape);
void lp_tensor_free(lp_tensor *t);
/* Writes "(2, 512, 7, 7)" into buf. */
const char *lp_shape_str(const lp_tensor *t, char *buf, size_t n);
/* Converts to a newly allocated F32 tensor (from F32/BF16/F16). */
lp_status lp_tensor_to_f32(const lp_tensor *src, lp_tensor *dst);
float lp_bf16_to_f32(uint16_t v);
uint16_t lp_f32_to_bf16(float v); /* round to nearest even */
float lp_f16_to_f32(uint16_t v);
/* 1 when x is NaN or +-Inf (exponent bits all ones): an integer test, so loops that
 * OR it over arrays still vectorize. */
static inline uint32_t lp_f32_nonfinite(float x) {
    union { float f; uint32_t u; } v = {x};
    return (v.u & 0x7f800000u) == 0x7f800000u;
}

/* A list of named tensors plus string metadata (a state dict). */
typedef struct lp_named_tensor {
    char *name;
    lp_tensor t;
} lp_named_tensor;
typedef struct lp_kv {
    char *key, *value;
} lp_kv;
typedef struct lp_tensor_list {
    int count, cap;
    lp_named_tensor *items;
    int meta_count, meta_cap;
    lp_kv *meta;
} lp_tensor_list;

void lp_tensor_list_init(lp_tensor_list *l);
void lp_tensor_list_free(lp_tensor_list *l);
/* Takes ownership of t's storage. */
lp_status lp_tensor_list_add(lp_tensor_list *l, const char *name, lp_tensor *t);
lp_named_tensor *lp_tensor_list_find(const lp_tensor_list *l, const char *name);
lp_status lp_tensor_list_set_meta(lp_tensor_list *l, const char *key, const char *value);
const char *lp_tensor_list_get_meta(const lp_tensor_list *l, const char *key);

/* ---- counter-based RNG: same numbers whatever the thread count --------
 * Every draw is a pure function of (seed, stream, counter), so work can be
 * split over threads without changing results. */
uint64_t lp_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter);
float lp_rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter);  /* [0,1) */
float lp_rng_normal(uint64_t seed, uint64_t stream, uint64_t counter);   /* N(0,1) */
/* Fisher-Yates permutation of 0..n-1 from (seed, stream). */
void lp_rng_permutation(uint64_t seed, uint64_t stream, int *perm, int n);

/* ---- files ------------------------------------------------------------ */
/* Reads a whole file (NUL-terminated for convenience, size excludes it). */
lp_status lp_read_file(const char *path, uint8_t **data, size_t *size);
lp_status lp_mkdirs(const char *path);
bool lp_path_exists(const char *path);
bool lp_is_dir(const char *path);
/* Joins a and b with one '/'; returns a malloc'ed string (NULL + error on OOM). */
char *lp_path_join(const char *a, const char *b);

/* Atomic replace: temporary file in the same folder, write, fsync, rename,
 * fsync the folder. A crash leaves either the old file or the new one whole. */
typedef struct lp_atomic_file lp_atomic_file;
lp_status lp_atomic_open(const char *path, lp_atomic_file **out);
lp_status lp_atomic_write(lp_atomic_file *f, const void *data, size_t n);
lp_status lp_atomic_printf(lp_atomic_file *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
lp_status lp_atomic_commit(lp_atomic_file *f); /* frees f */
void lp_atomic_abort(lp_atomic_file *f);       /* frees f, removes temporary */
lp_status lp_write_file_atomic(const char *path, const void *data, size_t n);

/* ---- threads ---------------------------------------------------------- */
/* A thread the library starts outside OpenMP (data workers) calls this first: it
 * would otherwise keep the one CPU of the compute thread that started it. */
void lp_thread_unpin(void);
/* CPUs the process may use, counted as before the compute threads were pinned. */
int lp_cpu_count(void);

/* ---- time ------------------------------------------------------------- */
double lp_now(void); /* monotonic seconds */

#endif
