#include "core.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t lp_dtype_size(lp_dtype t) {
    static const size_t sizes[] = {4, 2, 2, 8, 1};
    _Static_assert(sizeof sizes / sizeof sizes[0] == LP_DTYPE_COUNT, "dtype sizes");
    return (unsigned)t < LP_DTYPE_COUNT ? sizes[t] : 0;
}

const char *lp_dtype_name(lp_dtype t) {
    static const char *names[] = {"F32", "BF16", "F16", "I64", "U8"};
    _Static_assert(sizeof names / sizeof names[0] == LP_DTYPE_COUNT, "dtype names");
    return (unsigned)t < LP_DTYPE_COUNT ? names[t] : "?";
}

int64_t lp_tensor_numel(const lp_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t lp_tensor_nbytes(const lp_tensor *t) {
    return (size_t)lp_tensor_numel(t) * lp_dtype_size(t->dtype);
}

lp_status lp_tensor_alloc(lp_tensor *t, lp_dtype dtype, int ndim, const int64_t *shape) {
    memset(t, 0, sizeof *t);
    if (ndim < 0 || ndim > LP_MAX_DIMS) return lp_fail(LP_ERR_ARG, "tensor with %d dimensions (at most %d)", ndim, LP_MAX_DIMS);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return lp_fail(LP_ERR_ARG, "negative tensor dimension");
        t->shape[i] = shape[i];
    }
    /* the element count and its bytes must not overflow (lp_tensor_numel multiplies freely) */
    int64_t n = 1;
    size_t bytes;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, shape[i], &n)) n = -1;
    if (n < 0 || __builtin_mul_overflow((size_t)n, lp_dtype_size(dtype), &bytes)) {
        t->ndim = 0;
        return lp_fail(LP_ERR_ARG, "tensor too large (its element count overflows)");
    }
    t->data = lp_aligned_alloc(bytes);
    return t->data ? LP_OK : LP_ERR_NOMEM;
}

void lp_tensor_free(lp_tensor *t) {
    if (!t) return;
    free(t->data);
    t->data = NULL;
}

const char *lp_shape_str(const lp_tensor *t, char *buf, size_t n) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, off < n ? n - off : 0, "(");
    for (int i = 0; i < t->ndim; i++)
        off += (size_t)snprintf(buf + off, off < n ? n - off : 0, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    snprintf(buf + off, off < n ? n - off : 0, ")");
    return buf;
}

float lp_bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t lp_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float lp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    uint32_t u;
    if (exp == 31) u = sign | 0x7f800000u | (mant << 13);
    else u = sign | ((exp + 112) << 23) | (mant << 13);
    memcpy(&f, &u, 4);
    return f;
}

lp_status lp_tensor_to_f32(const lp_tensor *src, lp_tensor *dst) {
    lp_status s = lp_tensor_alloc(dst, LP_F32, src->ndim, src->shape);
    if (s) return s;
    int64_t n = lp_tensor_numel(src);
    float *o = dst->data;
    switch (src->dtype) {
    case LP_F32: memcpy(o, src->data, (size_t)n * 4); break;
    case LP_BF16: for (int64_t i = 0; i < n; i++) o[i] = lp_bf16_to_f32(((const uint16_t *)src->data)[i]); break;
    case LP_F16: for (int64_t i = 0; i < n; i++) o[i] = lp_f16_to_f32(((const uint16_t *)src->data)[i]); break;
    default:
        lp_tensor_free(dst);
        return lp_fail(LP_ERR_FORMAT, "cannot convert %s tensor to F32", lp_dtype_name(src->dtype));
    }
    return LP_OK;
}

void lp_tensor_list_init(lp_tensor_list *l) { memset(l, 0, sizeof *l); }

void lp_tensor_list_free(lp_tensor_list *l) {
    for (int i = 0; i < l->count; i++) {
        free(l->items[i].name);
        lp_tensor_free(&l->items[i].t);
    }
    for (int i = 0; i < l->meta_count; i++) {
        free(l->meta[i].key);
        free(l->meta[i].value);
    }
    free(l->items);
    free(l->meta);
    memset(l, 0, sizeof *l);
}

lp_status lp_tensor_list_add(lp_tensor_list *l, const char *name, lp_tensor *t) {
    if (l->count == l->cap) {
        int cap = l->cap ? l->cap * 2 : 32;
        lp_named_tensor *p = realloc(l->items, (size_t)cap * sizeof *p);
        if (!p) return lp_fail(LP_ERR_NOMEM, "out of memory");
        l->items = p;
        l->cap = cap;
    }
    char *n = lp_strdup(name);
    if (!n) return LP_ERR_NOMEM;
    l->items[l->count].name = n;
    l->items[l->count].t = *t;
    l->count++;
    memset(t, 0, sizeof *t);
    return LP_OK;
}

lp_named_tensor *lp_tensor_list_find(const lp_tensor_list *l, const char *name) {
    for (int i = 0; i < l->count; i++)
        if (strcmp(l->items[i].name, name) == 0) return &l->items[i];
    return NULL;
}

lp_status lp_tensor_list_set_meta(lp_tensor_list *l, const char *key, const char *value) {
    for (int i = 0; i < l->meta_count; i++)
        if (strcmp(l->meta[i].key, key) == 0) {
            char *v = lp_strdup(value);
            if (!v) return LP_ERR_NOMEM;
            free(l->meta[i].value);
            l->meta[i].value = v;
            return LP_OK;
        }
    if (l->meta_count == l->meta_cap) {
        int cap = l->meta_cap ? l->meta_cap * 2 : 16;
        lp_kv *p = realloc(l->meta, (size_t)cap * sizeof *p);
        if (!p) return lp_fail(LP_ERR_NOMEM, "out of memory");
        l->meta = p;
        l->meta_cap = cap;
    }
    char *k = lp_strdup(key), *v = lp_strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return LP_ERR_NOMEM;
    }
    l->meta[l->meta_count++] = (lp_kv){k, v};
    return LP_OK;
}

const char *lp_tensor_list_get_meta(const lp_tensor_list *l, const char *key) {
    for (int i = 0; i < l->meta_count; i++)
        if (strcmp(l->meta[i].key, key) == 0) return l->meta[i].value;
    return NULL;
}
