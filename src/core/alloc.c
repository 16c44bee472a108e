#include "core.h"
#include <stdlib.h>
#include <string.h>

void *lp_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) lp_fail(LP_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *lp_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) lp_fail(LP_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *lp_aligned_alloc(size_t n) {
    size_t rounded = (n + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) lp_fail(LP_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

char *lp_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = lp_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}
