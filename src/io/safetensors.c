/* safetensors: 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
 * {str: str}}), then the data buffer. Every field is checked on read. */
#include "io/safetensors.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static bool dtype_from_name(const char *s, lp_dtype *out) {
    for (int i = 0; i < LP_DTYPE_COUNT; i++)
        if (!strcmp(s, lp_dtype_name((lp_dtype)i))) {
            *out = (lp_dtype)i;
            return true;
        }
    return false;
}

/* Non-negative integer below 2^53 stored as a JSON number. */
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* What a file given for a safetensors one is instead, by its first bytes (NULL: unknown). */
static const char *other_format(const uint8_t *d, size_t n) {
    if (n >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8)) return "a PNG image";
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return "a JPEG image";
    if (n >= 8 && !memcmp(d, "\x89HDF\r\n\x1a\n", 8)) return "an HDF5 file (Keras .h5: give it to --weights or 'loupe convert')";
    if (n >= 4 && !memcmp(d, "PK\x03\x04", 4))
        return "a zip archive (PyTorch's torch.save .pt/.pth?): save the state dict with safetensors.torch.save_file";
    return NULL;
}

lp_status lp_safetensors_parse(const uint8_t *data, size_t size, const char *fname, lp_tensor_list *out) {
    const char *other = size > 8 && data[8] == '{' ? NULL : other_format(data, size); /* a JSON header: not those */
    if (other) return lp_fail(LP_ERR_FORMAT, "%s: not a safetensors file or loupe checkpoint: %s", fname, other);
    if (size < 8) return lp_fail(LP_ERR_FORMAT, "%s: truncated safetensors file (%zu bytes, no header length)", fname, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    if (hlen > size - 8)
        return lp_fail(LP_ERR_FORMAT, "%s: safetensors header length %llu is longer than the file (%zu bytes): truncated or not a safetensors file",
                       fname, (unsigned long long)hlen, size);
    if (hlen < 2) return lp_fail(LP_ERR_FORMAT, "%s: empty safetensors header", fname);
    const char *hdr = (const char *)data + 8;
    const uint8_t *buf = data + 8 + hlen;
    uint64_t buf_size = size - 8 - hlen;
    cJSON *root = cJSON_ParseWithLength(hdr, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lp_fail(LP_ERR_FORMAT, "%s: safetensors header is not a JSON object", fname);
    }
    lp_status st = LP_OK;
    int ntensors = 0;
    for (cJSON *e = root->child; e; e = e->next) ntensors++;
    span *spans = calloc((size_t)ntensors + 1, sizeof *spans);
    int nspans = 0;
    if (!spans) {
        cJSON_Delete(root);
        return lp_fail(LP_ERR_NOMEM, "out of memory");
    }
    for (cJSON *e = root->child; e && !st; e = e->next) {
        const char *name = e->string ? e->string : "";
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                st = lp_fail(LP_ERR_FORMAT, "%s: __metadata__ is not an object", fname);
                break;
            }
            for (cJSON *m = e->child; m && !st; m = m->next) {
                if (!cJSON_IsString(m)) st = lp_fail(LP_ERR_FORMAT, "%s: metadata '%s' is not a string", fname, m->string);
                else st = lp_tensor_list_set_meta(out, m->string, m->valuestring);
            }
            continue;
        }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype"), *js = cJSON_GetObjectItemCaseSensitive(e, "shape"),
                    *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        lp_dtype dt;
        if (!cJSON_IsObject(e) || !cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2) {
            st = lp_fail(LP_ERR_FORMAT, "%s: tensor '%s': entry needs dtype, shape and data_offsets [begin, end]", fname, name);
            break;
        }
        if (!dtype_from_name(jd->valuestring, &dt)) {
            st = lp_fail(LP_ERR_FORMAT, "%s: tensor '%s': dtype %s not supported (F32, BF16, F16, I64, U8)", fname, name,
                         jd->valuestring);
            break;
        }
        int ndim = cJSON_GetArraySize(js);
        if (ndim > LP_MAX_DIMS) {
            st = lp_fail(LP_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d)", fname, name, ndim, LP_MAX_DIMS);
            break;
        }
        int64_t shape[LP_MAX_DIMS];
        uint64_t numel = 1;
        bool ok = true, overflow = false;
        for (int d = 0; d < ndim; d++) {
            uint64_t v;
            if (!json_uint(cJSON_GetArrayItem(js, d), &v)) {
                ok = false;
                break;
            }
            shape[d] = (int64_t)v;
            if (v && numel > UINT64_MAX / 16 / v) overflow = true;
            else numel *= v;
        }
        uint64_t b0, b1;
        if (!ok || !json_uint(cJSON_GetArrayItem(jo, 0), &b0) || !json_uint(cJSON_GetArrayItem(jo, 1), &b1)) {
            st = lp_fail(LP_ERR_FORMAT, "%s: tensor '%s': shape and offsets must be non-negative integers", fname, name);
            break;
        }
        uint64_t nbytes = numel * lp_dtype_size(dt);
        if (overflow || b1 < b0 || b1 - b0 != nbytes) {
            st = lp_fail(LP_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] do not match its %s shape (%llu bytes)", fname,
                         name, (unsigned long long)b0, (unsigned long long)b1, jd->valuestring, (unsigned long long)nbytes);
            break;
        }
        if (b1 > buf_size) {
            st = lp_fail(LP_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] past the end of the data (%llu bytes): truncated file",
                         fname, name, (unsigned long long)b0, (unsigned long long)b1, (unsigned long long)buf_size);
            break;
        }
        if (lp_tensor_list_find(out, name)) {
            st = lp_fail(LP_ERR_FORMAT, "%s: tensor '%s' appears twice", fname, name);
            break;
        }
        lp_tensor t;
        if ((st = lp_tensor_alloc(&t, dt, ndim, shape))) break;
        memcpy(t.data, buf + b0, (size_t)nbytes);
        if ((st = lp_tensor_list_add(out, name, &t))) {
            lp_tensor_free(&t);
            break;
        }
        spans[nspans++] = (span){b0, b1, out->items[out->count - 1].name};
    }
    if (!st) {
        qsort(spans, (size_t)nspans, sizeof *spans, span_cmp);
        for (int i = 1; i < nspans && !st; i++)
            if (spans[i].begin < spans[i - 1].end)
                st = lp_fail(LP_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data buffer", fname, spans[i - 1].name,
                             spans[i].name);
    }
    const char *sum = st ? NULL : lp_tensor_list_get_meta(out, "checksum");
    if (sum && !strncmp(sum, "crc32:", 6)) {
        unsigned long want = strtoul(sum + 6, NULL, 16);
        unsigned long got = crc32_z(crc32_z(0L, Z_NULL, 0), buf, (z_size_t)buf_size);
        if (want != got)
            st = lp_fail(LP_ERR_FORMAT, "%s: corrupt checkpoint: payload checksum %08lx does not match the stored %08lx "
                         "(the file was damaged after it was written); use another checkpoint or retrain", fname, got, want);
    }
    free(spans);
    cJSON_Delete(root);
    return st;
}

lp_status lp_fail_folder_given(const char *path) {
    char *best = lp_path_join(path, "checkpoints/best.safetensors");
    const bool run = best && lp_path_exists(best);
    lp_status st = run ? lp_fail(LP_ERR_ARG, "%s: a run folder, not a checkpoint file; give one of its checkpoints, e.g. %s", path, best)
                       : lp_fail(LP_ERR_ARG, "%s: a folder, not a checkpoint file; give a .safetensors file", path);
    free(best);
    return st;
}

lp_status lp_safetensors_read(const char *path, lp_tensor_list *out) {
    /* mmap: tensors are copied once, straight from the page cache. */
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lp_fail(LP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    const bool stat_ok = fstat(fd, &sb) == 0;
    if (!stat_ok || !S_ISREG(sb.st_mode)) {
        close(fd);
        return stat_ok && S_ISDIR(sb.st_mode) ? lp_fail_folder_given(path) : lp_fail(LP_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) {
        close(fd);
        return lp_safetensors_parse((const uint8_t *)"", 0, path, out);
    }
    void *data = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (data == MAP_FAILED) return lp_fail(LP_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    lp_status st = lp_safetensors_parse(data, size, path, out);
    munmap(data, size);
    return st;
}

static int dtype_rank(lp_dtype t) { return -(int)lp_dtype_size(t); }

lp_status lp_safetensors_write_views(const char *path, int count, const char *const *names, const lp_tensor *tensors,
                                     const lp_tensor_list *meta) {
    /* Data order: larger element sizes first, so every tensor starts aligned to
     * its element size with no holes (the format forbids gaps). */
    int *order = malloc(sizeof(int) * (size_t)(count + 1));
    uint64_t *begin = malloc(sizeof(uint64_t) * (size_t)(count + 1));
    cJSON *root = cJSON_CreateObject();
    char *json = NULL;
    lp_status st = LP_OK;
    if (!order || !begin || !root) {
        st = lp_fail(LP_ERR_NOMEM, "out of memory");
        goto done;
    }
    int k = 0;
    for (int r = -8; r <= -1; r++)
        for (int i = 0; i < count; i++)
            if (dtype_rank(tensors[i].dtype) == r) order[k++] = i;
    if (k != count) {
        st = lp_fail(LP_ERR_ARG, "%s: tensor with unknown dtype", path);
        goto done;
    }
    uint64_t off = 0;
    for (int j = 0; j < count; j++) {
        begin[order[j]] = off;
        off += lp_tensor_nbytes(&tensors[order[j]]);
    }
    /* Checksum of the payload in metadata, so a file damaged after writing is
     * refused on load ("corrupt checkpoint") instead of trained on. zlib's crc32. */
    uLong crc = crc32_z(0L, Z_NULL, 0);
    for (int j = 0; j < count; j++) crc = crc32_z(crc, tensors[order[j]].data, lp_tensor_nbytes(&tensors[order[j]]));
    /* every part of the header or none: a header short of a tensor (cJSON out of memory)
     * must not replace a good file */
    bool built = true;
    {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        built = m != NULL;
        for (int i = 0; built && meta && i < meta->meta_count; i++)
            if (strcmp(meta->meta[i].key, "checksum"))
                built = cJSON_AddStringToObject(m, meta->meta[i].key, meta->meta[i].value) != NULL;
        char sum[32];
        snprintf(sum, sizeof sum, "crc32:%08lx", (unsigned long)crc);
        built = built && cJSON_AddStringToObject(m, "checksum", sum);
    }
    for (int i = 0; built && i < count; i++) {
        if (cJSON_GetObjectItemCaseSensitive(root, names[i])) {
            st = lp_fail(LP_ERR_ARG, "%s: tensor '%s' given twice", path, names[i]);
            goto done;
        }
        cJSON *e = cJSON_AddObjectToObject(root, names[i]);
        cJSON *sh = e && cJSON_AddStringToObject(e, "dtype", lp_dtype_name(tensors[i].dtype)) ? cJSON_AddArrayToObject(e, "shape")
                                                                                               : NULL;
        for (int d = 0; sh && d < tensors[i].ndim; d++)
            if (!cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)tensors[i].shape[d]))) sh = NULL;
        cJSON *of = sh ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        built = of && cJSON_AddItemToArray(of, cJSON_CreateNumber((double)begin[i])) &&
                cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(begin[i] + lp_tensor_nbytes(&tensors[i]))));
    }
    json = built ? cJSON_PrintUnformatted(root) : NULL;
    if (!json) {
        st = lp_fail(LP_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t jl = strlen(json), padded = (jl + 7) & ~(size_t)7;
    uint8_t head[8];
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    lp_atomic_file *f;
    if ((st = lp_atomic_open(path, &f))) goto done;
    static const char spaces[8] = "        ";
    st = lp_atomic_write(f, head, 8);
    if (!st) st = lp_atomic_write(f, json, jl);
    if (!st) st = lp_atomic_write(f, spaces, padded - jl);
    for (int j = 0; j < count && !st; j++) st = lp_atomic_write(f, tensors[order[j]].data, lp_tensor_nbytes(&tensors[order[j]]));
    if (st) lp_atomic_abort(f);
    else st = lp_atomic_commit(f);
done:
    free(order);
    free(begin);
    cJSON_free(json);
    cJSON_Delete(root);
    return st;
}

lp_status lp_safetensors_write(const char *path, const lp_tensor_list *l) {
    const char **names = malloc(sizeof(char *) * (size_t)(l->count + 1));
    lp_tensor *ts = malloc(sizeof(lp_tensor) * (size_t)(l->count + 1));
    if (!names || !ts) {
        free(names);
        free(ts);
        return lp_fail(LP_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < l->count; i++) {
        names[i] = l->items[i].name;
        ts[i] = l->items[i].t;
    }
    lp_status st = lp_safetensors_write_views(path, l->count, names, ts, l);
    free(names);
    free(ts);
    return st;
}
