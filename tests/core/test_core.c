/* core: RNG determinism and statistics, bf16/f16 conversion, atomic writes, errors. */
#include "core/core.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

int main(void) {
    /* RNG: pure function of (seed, stream, counter). */
    CHECK(lp_rng_u64(1, 2, 3) == lp_rng_u64(1, 2, 3), "rng not deterministic");
    CHECK(lp_rng_u64(1, 2, 3) != lp_rng_u64(1, 2, 4), "rng counter ignored");
    CHECK(lp_rng_u64(1, 2, 3) != lp_rng_u64(1, 3, 3), "rng stream ignored");
    double sum = 0, sq = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) {
        double x = lp_rng_normal(7, 0, (uint64_t)i);
        sum += x;
        sq += x * x;
    }
    double mean = sum / n, var = sq / n - mean * mean;
    CHECK(fabs(mean) < 0.01 && fabs(var - 1) < 0.02, "normal mean %f var %f", mean, var);
    double us = 0;
    for (int i = 0; i < n; i++) {
        float u = lp_rng_uniform(9, 1, (uint64_t)i);
        CHECK(u >= 0 && u < 1, "uniform out of range %f", u);
        us += u;
    }
    CHECK(fabs(us / n - 0.5) < 0.005, "uniform mean %f", us / n);
    int perm[100], seen[100] = {0};
    lp_rng_permutation(3, 0, perm, 100);
    for (int i = 0; i < 100; i++) seen[perm[i]]++;
    for (int i = 0; i < 100; i++) CHECK(seen[i] == 1, "permutation misses %d", i);

    /* bf16: known encodings (1.0 = 0x3f80, -2.0 = 0xc000), rounding to nearest even. */
    CHECK(lp_f32_to_bf16(1.0f) == 0x3f80, "bf16(1)");
    CHECK(lp_f32_to_bf16(-2.0f) == 0xc000, "bf16(-2)");
    CHECK(lp_bf16_to_f32(0x3f80) == 1.0f, "f32(bf16 1)");
    CHECK(lp_f32_to_bf16(1.00390625f) == 0x3f80, "tie rounds to even"); /* 1 + 2^-8 */
    /* f16: 0x3c00 = 1.0, 0xc000 = -2.0, 0x0001 = 2^-24, 0x7bff = 65504. */
    CHECK(lp_f16_to_f32(0x3c00) == 1.0f && lp_f16_to_f32(0xc000) == -2.0f, "f16 basics");
    CHECK(lp_f16_to_f32(0x0001) == ldexpf(1, -24) && lp_f16_to_f32(0x7bff) == 65504.0f, "f16 edges");

    /* Atomic write: content replaced whole; abort leaves the old file. */
    char path[] = "atomic_test.txt";
    CHECK(lp_write_file_atomic(path, "first", 5) == LP_OK, "atomic write: %s", lp_errmsg());
    lp_atomic_file *f;
    CHECK(lp_atomic_open(path, &f) == LP_OK, "atomic open");
    lp_atomic_printf(f, "second %d", 2);
    lp_atomic_abort(f);
    uint8_t *data;
    size_t size;
    CHECK(lp_read_file(path, &data, &size) == LP_OK && size == 5 && !memcmp(data, "first", 5), "abort kept old");
    free(data);
    CHECK(lp_atomic_open(path, &f) == LP_OK, "atomic open");
    lp_atomic_printf(f, "second %d", 2);
    CHECK(lp_atomic_commit(f) == LP_OK, "commit");
    CHECK(lp_read_file(path, &data, &size) == LP_OK && size == 8 && !memcmp(data, "second 2", 8), "commit replaced");
    free(data);
    unlink(path);
    CHECK(lp_write_file_atomic("/nonexistent-dir/x", "a", 1) == LP_ERR_IO, "write to missing dir fails");
    CHECK(strstr(lp_errmsg(), "/nonexistent-dir/x") != NULL, "error names the file: %s", lp_errmsg());

    /* tensor sizes: a count or byte size that overflows is refused, not wrapped into a small
     * allocation (the weight readers size tensors from the file's dims) */
    lp_tensor t;
    const int64_t huge[3] = {(int64_t)1 << 31, (int64_t)1 << 31, (int64_t)1 << 2};
    CHECK(lp_tensor_alloc(&t, LP_F32, 3, huge) == LP_ERR_ARG && !t.data, "2^64 elements: %s", lp_errmsg());
    const int64_t bytes_wrap[2] = {(int64_t)1 << 31, (int64_t)1 << 31}; /* 2^62 elements, 2^64 bytes of F32 */
    CHECK(lp_tensor_alloc(&t, LP_F32, 2, bytes_wrap) == LP_ERR_ARG && !t.data, "2^64 bytes: %s", lp_errmsg());
    const int64_t small[2] = {3, 5};
    CHECK(lp_tensor_alloc(&t, LP_F32, 2, small) == LP_OK && t.data && lp_tensor_nbytes(&t) == 60, "3x5 tensor");
    lp_tensor_free(&t);

    if (failures) fprintf(stderr, "%d failures\n", failures);
    else printf("core: all checks passed\n");
    return failures ? 1 : 0;
}
