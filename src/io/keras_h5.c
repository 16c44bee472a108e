/* Keras HDF5 weights (libhdf5 C API): both `model.save_weights(...h5)` and
 * `model.save(...h5)` (weights under the `model_weights` group) files, Keras 1
 * names (block1_conv1_W_1:0) and Keras 2 names (block1_conv1/kernel:0).
 *
 * Layout written by Keras (saving/legacy/hdf5_format.py):
 *   /                       attrs layer_names (array of bytes; or layer_names0..N
 *                           when larger than HDF5's 64 KiB attribute limit),
 *                           backend, keras_version
 *   /<layer>                attr weight_names (array of bytes, or float64 (0,) when
 *                           the layer has none; also chunked weight_names0..N)
 *   /<layer>/<weight name>  datasets; a weight name with '/' makes subgroups
 * Conv kernels are (H, W, in, out) -> OIHW; dense kernels (in, out) -> [out, in].
 * fc1 follows Flatten of the (7, 7, 512) NHWC map, so its input index is
 * (h*7 + w)*512 + c; ours is c*49 + h*7 + w: the rows are permuted so that the
 * converted model computes the same function. Datasets are read as native
 * float whatever their stored float type (HDF5 converts f16/f64); fc1 (411 MB)
 * is read in row blocks so the peak memory stays near the output size. */
#define _GNU_SOURCE /* memfd_create, fallocate */
#include "core/test_hooks.h"
#include "weights.h"
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct h5_ctx {
    const char *path;
    hid_t file;
} h5_ctx;

/* The innermost libhdf5 message on the error stack ("truncated file: ..."). */
static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    char *buf = data; /* walked upward: keep the innermost (most specific) message */
    if (!buf[0] && e->desc && e->desc[0]) snprintf(buf, 256, "%s", e->desc);
    (void)n;
    return 0;
}

static const char *h5_msg(char buf[256]) {
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, buf);
    H5Eclear2(H5E_DEFAULT);
    if (!buf[0]) snprintf(buf, 256, "unknown libhdf5 error");
    return buf;
}

/* A string list held in one block. */
typedef struct strlist {
    int n;
    char **s;
} strlist;

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    l->n = 0;
    l->s = NULL;
}

static lp_status strlist_push(strlist *l, const char *s, size_t len) {
    char **p = realloc(l->s, (size_t)(l->n + 1) * sizeof *p);
    if (!p) return lp_fail(LP_ERR_NOMEM, "out of memory");
    l->s = p;
    char *c = lp_malloc(len + 1);
    if (!c) return LP_ERR_NOMEM;
    memcpy(c, s, len);
    c[len] = 0;
    l->s[l->n++] = c;
    return LP_OK;
}

/* Reads one attribute holding an array of strings (fixed or variable length);
 * an empty numeric array (Keras' "no weights") gives an empty list. */
static lp_status read_str_attr(h5_ctx *c, hid_t obj, const char *objname, const char *name, strlist *out) {
    char eb[256];
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return lp_fail(LP_ERR_FORMAT, "%s: cannot open attribute %s of %s (%s)", c->path, name, objname, h5_msg(eb));
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    lp_status st = LP_OK;
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5T_class_t cls = H5Tget_class(t);
    if (n < 0) {
        st = lp_fail(LP_ERR_FORMAT, "%s: unreadable attribute %s of %s", c->path, name, objname);
    } else if (n == 0) {
        /* empty list (Keras writes np.asarray([]) = float64 (0,)) */
    } else if (cls != H5T_STRING) {
        st = lp_fail(LP_ERR_FORMAT, "%s: attribute %s of %s is not a list of strings", c->path, name, objname);
    } else if (H5Tis_variable_str(t) > 0) {
        char **v = lp_calloc((size_t)n, sizeof *v);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        if (!v) st = LP_ERR_NOMEM;
        else if (H5Aread(a, mt, v) < 0) {
            st = lp_fail(LP_ERR_FORMAT, "%s: cannot read attribute %s of %s (%s)", c->path, name, objname, h5_msg(eb));
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, v); /* strings read before the failure */
        }
        else {
            for (hssize_t i = 0; i < n && !st; i++) st = strlist_push(out, v[i] ? v[i] : "", v[i] ? strlen(v[i]) : 0);
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, v);
        }
        H5Tclose(mt);
        free(v);
    } else {
        size_t sz = H5Tget_size(t), bytes = 0;
        /* a corrupt header can claim any count and size: their product must not wrap (H5Aread
         * would write past the buffer), and no list of layer names needs 64 MB */
        const bool huge = __builtin_mul_overflow((size_t)n, sz, &bytes) || bytes > ((size_t)64 << 20);
        char *buf = sz && !huge ? lp_malloc(bytes) : NULL;
        hid_t mt = H5Tcopy(t);
        if (huge)
            st = lp_fail(LP_ERR_FORMAT, "%s: attribute %s of %s claims %lld strings of %zu bytes: the file is corrupt, download it again",
                         c->path, name, objname, (long long)n, sz);
        else if (!buf) st = sz ? LP_ERR_NOMEM : lp_fail(LP_ERR_FORMAT, "%s: empty string type in %s", c->path, name);
        else if (H5Aread(a, mt, buf) < 0) st = lp_fail(LP_ERR_FORMAT, "%s: cannot read attribute %s of %s (%s)", c->path, name, objname, h5_msg(eb));
        else
            for (hssize_t i = 0; i < n && !st; i++) st = strlist_push(out, buf + (size_t)i * sz, strnlen(buf + (size_t)i * sz, sz));
        H5Tclose(mt);
        free(buf);
    }
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return st;
}

/* name, or the chunked name0, name1, ... that Keras writes for long lists. */
static lp_status read_keras_list(h5_ctx *c, hid_t obj, const char *objname, const char *name, strlist *out, bool *found) {
    *found = false;
    if (H5Aexists(obj, name) > 0) {
        *found = true;
        return read_str_attr(c, obj, objname, name, out);
    }
    for (int k = 0;; k++) {
        char nm[96];
        snprintf(nm, sizeof nm, "%s%d", name, k);
        if (H5Aexists(obj, nm) <= 0) break;
        *found = true;
        lp_status st = read_str_attr(c, obj, objname, nm, out);
        if (st) return st;
    }
    return LP_OK;
}

/* Shape of a float dataset; rank at most 4. */
static lp_status dset_shape(h5_ctx *c, hid_t d, const char *nm, int *rank, hsize_t dims[4]) {
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    H5T_class_t cls = H5Tget_class(t);
    int r = H5Sget_simple_extent_ndims(sp);
    lp_status st = LP_OK;
    if (cls != H5T_FLOAT) st = lp_fail(LP_ERR_FORMAT, "%s: dataset %s is not floating point", c->path, nm);
    else if (r < 1 || r > 4) st = lp_fail(LP_ERR_FORMAT, "%s: dataset %s has %d dimensions (expected 1, 2 or 4)", c->path, nm, r);
    else H5Sget_simple_extent_dims(sp, dims, NULL);
    /* the readers size their buffers from the dims: a product past 2^32 values (16 GB) is a
     * corrupt header, not weights (and could overflow their arithmetic) */
    uint64_t numel = 1;
    for (int i = 0; i < r && !st; i++)
        if (__builtin_mul_overflow(numel, (uint64_t)dims[i], &numel) || numel > ((uint64_t)1 << 32))
            st = lp_fail(LP_ERR_FORMAT, "%s: dataset %s has an impossible shape (dimension %d is %llu); the file is corrupt", c->path, nm, i,
                         (unsigned long long)dims[i]);
    *rank = r;
    H5Tclose(t);
    H5Sclose(sp);
    return st;
}

/* Reads a whole dataset (nblock < 0), or from a rank-2 dataset `count` blocks
 * of `nblock` rows, the first starting at row r0 and each `stride` rows after
 * the previous one, in file order. */
static lp_status dset_read(h5_ctx *c, hid_t d, const char *nm, float *buf, hsize_t r0, hssize_t nblock, hsize_t stride, hsize_t count,
                           hsize_t ncols) {
    char eb[256];
    herr_t e;
    if (nblock < 0) {
        e = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    } else {
        hid_t fs = H5Dget_space(d);
        hsize_t start[2] = {r0, 0}, str[2] = {stride, 1}, cnt[2] = {count, 1}, blk[2] = {(hsize_t)nblock, ncols};
        hsize_t mdims[2] = {count * (hsize_t)nblock, ncols};
        hid_t ms = H5Screate_simple(2, mdims, NULL);
        e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, str, cnt, blk);
        if (e >= 0) e = H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf);
        H5Sclose(ms);
        H5Sclose(fs);
    }
    if (e < 0) return lp_fail(LP_ERR_FORMAT, "%s: cannot read dataset %s (%s); the file may be truncated or corrupt", c->path, nm, h5_msg(eb));
    return LP_OK;
}

static void shape_str(char *buf, size_t n, int rank, const hsize_t *dims) {
    lp_tensor t = {.ndim = rank};
    for (int i = 0; i < rank; i++) t.shape[i] = (int64_t)dims[i];
    lp_shape_str(&t, buf, n);
}

/* (H, W, in, out) -> (out, in, H, W). */
static lp_status read_conv(h5_ctx *c, hid_t d, const char *nm, const hsize_t *k, lp_tensor *w) {
    if (k[0] != k[1] && k[2] == k[3])
        return lp_fail(LP_ERR_FORMAT, "%s: %s has shape (%llu, %llu, %llu, %llu): Theano-ordered kernels (out, in, H, W); use the TensorFlow-ordered file (..._tf_dim_ordering_tf_kernels.h5)",
                       c->path, nm, (unsigned long long)k[0], (unsigned long long)k[1], (unsigned long long)k[2], (unsigned long long)k[3]);
    int64_t kh = (int64_t)k[0], kw = (int64_t)k[1], ci = (int64_t)k[2], co = (int64_t)k[3];
    float *tmp = lp_malloc((size_t)(kh * kw * ci * co) * sizeof(float));
    if (!tmp) return LP_ERR_NOMEM;
    lp_status st = dset_read(c, d, nm, tmp, 0, -1, 0, 0, 0);
    if (!st) st = lp_tensor_alloc(w, LP_F32, 4, (int64_t[]){co, ci, kh, kw});
    if (!st) {
        float *o = w->data;
        for (int64_t y = 0; y < kh; y++)
            for (int64_t x = 0; x < kw; x++)
                for (int64_t i = 0; i < ci; i++) {
                    const float *src = tmp + ((y * kw + x) * ci + i) * co;
                    for (int64_t oc = 0; oc < co; oc++) o[((oc * ci + i) * kh + y) * kw + x] = src[oc];
                }
    }
    free(tmp);
    return st;
}

/* (in, out) -> [out, in]; after the flatten of an s x s map (hw = s*s > 1 positions),
 * input row (h*s+w)*512+c goes to column c*hw+h*s+w. Read in slices whose output
 * columns are contiguous: for that first dense layer, channels [c0, c0+8) at all
 * hw positions (rows p*512+c: a strided hyperslab), else 256 consecutive rows.
 * The slice's source rows stay in cache while each output row is written
 * sequentially. */
static lp_status read_dense(h5_ctx *c, hid_t d, const char *nm, const hsize_t *k, int64_t hw, lp_tensor *w) {
    int64_t in = (int64_t)k[0], out = (int64_t)k[1];
    lp_status st = lp_tensor_alloc(w, LP_F32, 2, (int64_t[]){out, in});
    if (st) return st;
    bool flatten_hwc = hw > 1;
    const int64_t cb = 8, rows_max = flatten_hwc ? hw * cb : 256;
    float *tmp = lp_malloc((size_t)(rows_max * out) * sizeof(float));
    if (!tmp) {
        lp_tensor_free(w);
        return LP_ERR_NOMEM;
    }
    float *o = w->data;
    int64_t step = flatten_hwc ? cb : 256;
    int64_t total = flatten_hwc ? 512 : in;
    for (int64_t s0 = 0; s0 < total && !st; s0 += step) {
        int64_t nb = total - s0 < step ? total - s0 : step;
        if (flatten_hwc) {
            /* rows p*512 + c0 + j, j < nb, p < hw; tmp row (p*nb + j) -> column (c0+j)*hw + p */
            st = dset_read(c, d, nm, tmp, (hsize_t)s0, nb, 512, (hsize_t)hw, (hsize_t)out);
            if (st) break;
            for (int64_t oc = 0; oc < out; oc++) {
                float *dst = o + oc * in + s0 * hw;
                for (int64_t j = 0; j < nb; j++)
                    for (int64_t p = 0; p < hw; p++) dst[j * hw + p] = tmp[(p * nb + j) * out + oc];
            }
        } else {
            st = dset_read(c, d, nm, tmp, (hsize_t)s0, nb, (hsize_t)nb, 1, (hsize_t)out);
            if (st) break;
            for (int64_t oc = 0; oc < out; oc++) {
                float *dst = o + oc * in + s0;
                for (int64_t r = 0; r < nb; r++) dst[r] = tmp[r * out + oc];
            }
        }
    }
    free(tmp);
    if (st) lp_tensor_free(w);
    return st;
}

static lp_status read_vector(h5_ctx *c, hid_t d, const char *nm, int64_t n, lp_tensor *b) {
    lp_status st = lp_tensor_alloc(b, LP_F32, 1, &n);
    if (!st) st = dset_read(c, d, nm, b->data, 0, -1, 0, 0, 0);
    if (st) lp_tensor_free(b);
    return st;
}

/* A BatchNormalization layer: gamma, beta, moving_mean, moving_variance, all of one length. */
static const char *const bn_suffix[4] = {"gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"};
static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}
static bool is_batch_norm(const strlist *wn, const int *rank, hsize_t (*dims)[4]) {
    if (wn->n != 4) return false;
    for (int i = 0; i < 4; i++)
        if (rank[i] != 1 || dims[i][0] != dims[0][0] || !ends_with(wn->s[i], bn_suffix[i])) return false;
    return true;
}

/* Pushes it as a layer of kind BN: w is (4, C), the rows gamma, beta, mean, variance. */
static lp_status read_batch_norm(h5_ctx *c, hid_t g, const char *lname, const strlist *wn, int64_t n, lp_wlayers *layers) {
    lp_tensor w = {0};
    lp_status st = lp_tensor_alloc(&w, LP_F32, 2, (int64_t[]){4, n});
    for (int i = 0; i < 4 && !st; i++) {
        hid_t d = H5Dopen2(g, wn->s[i], H5P_DEFAULT);
        st = dset_read(c, d, wn->s[i], (float *)w.data + i * n, 0, -1, 0, 0, 0);
        H5Dclose(d);
    }
    char sshape[64];
    snprintf(sshape, sizeof sshape, "4 x (%lld)", (long long)n);
    if (!st) st = lp_wlayers_push(layers, LP_WLAYER_BN, lname, sshape, -1, &w, NULL, "");
    lp_tensor_free(&w);
    return st;
}

/* A Normalization layer (Keras' EfficientNet: its input normalisation inside the model):
 * mean, variance and count (an int64 scalar, not needed), as a layer of kind NORM. The
 * mean and variance are (C) or broadcast shapes such as (1, 1, 1, C). */
static bool is_normalization(const strlist *wn) {
    return wn->n == 3 && ends_with(wn->s[0], "/mean:0") && ends_with(wn->s[1], "/variance:0") && ends_with(wn->s[2], "/count:0");
}
static lp_status read_normalization(h5_ctx *c, hid_t g, const char *lname, const strlist *wn, lp_wlayers *layers) {
    int64_t n[2] = {0, 0};
    lp_tensor v[2] = {{0}, {0}};
    lp_status st = LP_OK;
    for (int i = 0; i < 2 && !st; i++) {
        hid_t d = H5Dopen2(g, wn->s[i], H5P_DEFAULT);
        int rank;
        hsize_t dims[4];
        if (d < 0) {
            char eb[256];
            st = lp_fail(LP_ERR_FORMAT, "%s: cannot open dataset %s/%s (%s)", c->path, lname, wn->s[i], h5_msg(eb));
            break;
        }
        st = dset_shape(c, d, wn->s[i], &rank, dims);
        n[i] = 1;
        for (int r = 0; r < rank && !st; r++) n[i] *= (int64_t)dims[r];
        if (!st && (n[i] < 1 || n[i] > 4)) st = lp_fail(LP_ERR_FORMAT, "%s: %s has %lld values: not an image normalization", c->path, wn->s[i], (long long)n[i]);
        if (!st) st = read_vector(c, d, wn->s[i], n[i], &v[i]);
        H5Dclose(d);
    }
    if (!st && n[0] != n[1])
        st = lp_fail(LP_ERR_FORMAT, "%s: normalization layer '%s' has %lld means but %lld variances", c->path, lname, (long long)n[0], (long long)n[1]);
    lp_tensor w = {0};
    if (!st) st = lp_tensor_alloc(&w, LP_F32, 2, (int64_t[]){2, n[0]});
    if (!st) {
        memcpy(w.data, v[0].data, (size_t)n[0] * sizeof(float));
        memcpy((float *)w.data + n[0], v[1].data, (size_t)n[0] * sizeof(float));
        char sshape[64];
        snprintf(sshape, sizeof sshape, "2 x (%lld)", (long long)n[0]);
        st = lp_wlayers_push(layers, LP_WLAYER_NORM, lname, sshape, -1, &w, NULL, "");
    }
    lp_tensor_free(&w);
    lp_tensor_free(&v[0]);
    lp_tensor_free(&v[1]);
    return st;
}

static lp_status read_weights(h5_ctx *c, hid_t g, const char *lname, const strlist *wnp, int *ndense, lp_wlayers *layers);

/* A nested model with batch norm (a user's model with Keras' MobileNetV2, EfficientNetB0 or
 * ResNet50 as one layer, e.g. "mobilenetv2_1.00_224"): its group lists all its layers'
 * weights, named "<inner layer>/<weight>:0", trainable ones first and the batch norms'
 * moving statistics after them all (Keras' _legacy_weights). Each inner layer is read as a
 * layer of its own, its weights in Keras' order (kernel, bias; gamma, beta, moving mean and
 * variance; mean, variance, count), the layers in the order they first appear. A nested VGG
 * (no batch norm) keeps the plain reading. */
static bool nested_with_bn(const char *lname, const strlist *wn) {
    bool bn = false, inner = false;
    const size_t n = strlen(lname);
    for (int i = 0; i < wn->n; i++) {
        bn |= ends_with(wn->s[i], "/moving_mean:0");
        inner |= !(strncmp(wn->s[i], lname, n) == 0 && wn->s[i][n] == '/');
    }
    return bn && inner;
}

static int weight_rank(const char *name) {
    static const char *const order[] = {"/kernel:0", "/depthwise_kernel:0", "/bias:0", "/gamma:0", "/beta:0", "/moving_mean:0",
                                        "/moving_variance:0", "/mean:0", "/variance:0", "/count:0"};
    for (int k = 0; k < (int)(sizeof order / sizeof order[0]); k++)
        if (ends_with(name, order[k])) return k;
    return 99;
}

static lp_status read_nested(h5_ctx *c, hid_t g, const strlist *wn, int *ndense, lp_wlayers *layers) {
    lp_status st = LP_OK;
    bool *done = lp_calloc((size_t)wn->n, sizeof *done);
    if (!done) return LP_ERR_NOMEM;
    for (int i = 0; i < wn->n && !st; i++) {
        if (done[i]) continue;
        const char *slash = strchr(wn->s[i], '/');
        const size_t len = slash ? (size_t)(slash - wn->s[i]) : strlen(wn->s[i]);
        char inner[160];
        snprintf(inner, sizeof inner, "%.*s", (int)(len < sizeof inner ? len : sizeof inner - 1), wn->s[i]);
        strlist sub = {0};
        for (int j = i; j < wn->n && !st; j++)
            if (!done[j] && !strncmp(wn->s[j], wn->s[i], len) && (wn->s[j][len] == '/' || !wn->s[j][len])) {
                done[j] = true;
                st = strlist_push(&sub, wn->s[j], strlen(wn->s[j]));
            }
        for (int a = 1; a < sub.n; a++) /* insertion sort by Keras' order of a layer's weights */
            for (int b = a; b > 0 && weight_rank(sub.s[b]) < weight_rank(sub.s[b - 1]); b--) {
                char *t = sub.s[b];
                sub.s[b] = sub.s[b - 1], sub.s[b - 1] = t;
            }
        if (!st) st = read_weights(c, g, inner, &sub, ndense, layers);
        strlist_free(&sub);
    }
    free(done);
    return st;
}

static lp_status read_layer(h5_ctx *c, hid_t root, const char *lname, int *ndense, lp_wlayers *layers) {
    char eb[256];
    if (H5Lexists(root, lname, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return lp_fail(LP_ERR_FORMAT, "%s: layer '%s' is listed in layer_names but has no group in the file; the file is incomplete", c->path, lname);
    }
    hid_t g = H5Gopen2(root, lname, H5P_DEFAULT);
    if (g < 0) return lp_fail(LP_ERR_FORMAT, "%s: cannot open layer group '%s' (%s)", c->path, lname, h5_msg(eb));
    strlist wn = {0};
    bool found;
    lp_status st = read_keras_list(c, g, lname, "weight_names", &wn, &found);
    if (!st && !found) st = lp_fail(LP_ERR_FORMAT, "%s: layer group '%s' has no weight_names attribute: not a Keras weights file", c->path, lname);
    if (!st) st = nested_with_bn(lname, &wn) ? read_nested(c, g, &wn, ndense, layers) : read_weights(c, g, lname, &wn, ndense, layers);
    strlist_free(&wn);
    H5Gclose(g);
    return st;
}

/* The weights wnp (datasets of group g) of layer lname, listed in order: each kernel (rank
 * 4: conv, rank 2: dense) is followed by its bias (rank 1). A nested model without batch
 * norm (a Keras `vgg16` layer inside a bigger model) lists all its layers' weights in order
 * in one group. A batch norm's four vectors make a layer of kind BN (for ResNets and the
 * mobile models; the VGG reader drops them and names them in its messages), a
 * Normalization's three one of kind NORM. */
static lp_status read_weights(h5_ctx *c, hid_t g, const char *lname, const strlist *wnp, int *ndense, lp_wlayers *layers) {
    char eb[256];
    const strlist wn = *wnp;
    lp_status st = LP_OK;
    if (is_normalization(&wn)) return read_normalization(c, g, lname, &wn, layers);
    int *rank = wn.n ? lp_calloc((size_t)wn.n, sizeof *rank) : NULL;
    hsize_t(*dims)[4] = wn.n ? lp_calloc((size_t)wn.n, sizeof *dims) : NULL;
    if (!st && wn.n && (!rank || !dims)) st = LP_ERR_NOMEM;
    for (int i = 0; i < wn.n && !st; i++) {
        if (H5Lexists(g, wn.s[i], H5P_DEFAULT) <= 0) {
            H5Eclear2(H5E_DEFAULT); /* H5Lexists also fails on a missing intermediate group */
            st = lp_fail(LP_ERR_FORMAT, "%s: layer '%s' lists weight '%s' but the dataset is missing; the file is incomplete", c->path, lname, wn.s[i]);
            break;
        }
        hid_t d = H5Dopen2(g, wn.s[i], H5P_DEFAULT);
        if (d < 0) {
            st = lp_fail(LP_ERR_FORMAT, "%s: cannot open dataset %s/%s (%s)", c->path, lname, wn.s[i], h5_msg(eb));
            break;
        }
        st = dset_shape(c, d, wn.s[i], &rank[i], dims[i]);
        H5Dclose(d);
    }
    if (!st && is_batch_norm(&wn, rank, dims)) st = read_batch_norm(c, g, lname, &wn, (int64_t)dims[0][0], layers);
    for (int i = 0; i < wn.n && !st; i++) {
        if (rank[i] != 4 && rank[i] != 2) {
            lp_wlayers_note_foreign(layers, wn.s[i], false); /* for the messages of the VGG reader */
            continue;
        }
        int kr = rank[i];
        const char *kn = wn.s[i];
        int64_t nout = (int64_t)dims[i][kr - 1];
        int bi = (i + 1 < wn.n && rank[i + 1] == 1 && (int64_t)dims[i + 1][0] == nout) ? i + 1 : -1;
        char src[160], sshape[64];
        if (strncmp(kn, lname, strlen(lname)) == 0) snprintf(src, sizeof src, "%s", kn);
        else snprintf(src, sizeof src, "%s/%s", lname, kn);
        shape_str(sshape, sizeof sshape, kr, dims[i]);
        lp_tensor w = {0}, b = {0};
        hid_t d = H5Dopen2(g, kn, H5P_DEFAULT);
        if (kr == 4) {
            st = read_conv(c, d, src, dims[i], &w);
        } else {
            /* the first dense layer after a flatten of an s x s map (s > 1) reads it in Keras' H, W, C order */
            int64_t s = 1, in = (int64_t)dims[i][0];
            while ((s + 1) * (s + 1) * 512 <= in) s++;
            bool hwc = *ndense == 0 && s > 1 && s * s * 512 == in && layers->pool != LP_WPOOL_GAP;
            st = read_dense(c, d, src, dims[i], hwc ? s * s : 0, &w);
            (*ndense)++;
        }
        H5Dclose(d);
        if (!st && bi >= 0) {
            hid_t db = H5Dopen2(g, wn.s[bi], H5P_DEFAULT);
            st = read_vector(c, db, wn.s[bi], nout, &b);
            H5Dclose(db);
            i = bi;
        }
        char bsrc[200] = "";
        if (bi >= 0) {
            if (strncmp(wn.s[bi], lname, strlen(lname)) == 0) snprintf(bsrc, sizeof bsrc, "%s", wn.s[bi]);
            else snprintf(bsrc, sizeof bsrc, "%s/%s", lname, wn.s[bi]);
        }
        if (!st) st = lp_wlayers_push(layers, kr == 4 ? LP_WLAYER_CONV : LP_WLAYER_DENSE, src, sshape, -1, &w, &b, bsrc);
        if (!st && kr == 2) {
            /* Keras keeps a Dense layer's activation in the model config, not with the weights:
             * known for VGG's own top only; dropout layers do not change predictions */
            lp_wlayer *y = &layers->items[layers->count - 1];
            y->relu = !strcmp(lname, "fc1") || !strcmp(lname, "fc2") ? 1 : !strcmp(lname, "predictions") ? 0 : -1;
            y->dropout = 0.0f;
        }
        lp_tensor_free(&w);
        lp_tensor_free(&b);
    }
    free(rank);
    free(dims);
    return st;
}

typedef struct h5_sink h5_sink;
static lp_status sink_flush(h5_sink *k, lp_wlayers *layers);

static lp_status read_layers_direct(const char *path, lp_wlayers *layers, h5_sink *sink) {
    char eb[256];
    H5E_auto2_t old_fn;
    void *old_data;
    H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* no error stacks on stderr: we make the message */
    h5_ctx c = {.path = path};
    lp_status st = LP_OK;
    c.file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (c.file < 0) {
        st = lp_fail(LP_ERR_FORMAT, "%s: cannot open as HDF5 (%s); the file is truncated or corrupt, download it again", path, h5_msg(eb));
        H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
        return st;
    }
    /* save_weights puts layer_names on the root; save (full model) under model_weights */
    hid_t root = -1;
    const char *rootname = "/";
    if (H5Aexists(c.file, "layer_names") > 0 || H5Aexists(c.file, "layer_names0") > 0) {
        root = H5Gopen2(c.file, "/", H5P_DEFAULT);
    } else if (H5Lexists(c.file, "model_weights", H5P_DEFAULT) > 0) {
        root = H5Gopen2(c.file, "model_weights", H5P_DEFAULT);
        rootname = "/model_weights";
    }
    H5Eclear2(H5E_DEFAULT);
    strlist names = {0};
    bool found = false;
    if (root < 0) {
        if (H5Lexists(c.file, "layers", H5P_DEFAULT) > 0 || H5Lexists(c.file, "_layer_checkpoint_dependencies", H5P_DEFAULT) > 0)
            st = lp_fail(LP_ERR_FORMAT, "%s: Keras 3 '.weights.h5' layout is not supported; save with Keras 2 (tf.keras save_weights to a '.h5' name) or export to ONNX", path);
        else
            st = lp_fail(LP_ERR_FORMAT, "%s: HDF5 file without Keras 'layer_names' (neither on the root nor under model_weights): not a Keras weights file", path);
    } else {
        st = read_keras_list(&c, root, rootname, "layer_names", &names, &found);
        if (!st && !found) st = lp_fail(LP_ERR_FORMAT, "%s: no layer_names attribute in %s: not a Keras weights file", path, rootname);
    }
    int ndense = 0;
    for (int i = 0; i < names.n && !st; i++) {
        /* the weightless layers between the base and the first dense layer name the pooling
         * (avg_pool: the GlobalAveragePooling2D of Keras' ResNets) */
        const char *ln = names.s[i];
        if (!ndense && (!strncmp(ln, "flatten", 7) || !strncmp(ln, "global_average_pooling2d", 24) || !strcmp(ln, "avg_pool"))) {
            layers->pool = ln[0] == 'f' ? LP_WPOOL_FLATTEN : LP_WPOOL_GAP;
            snprintf(layers->pool_src, sizeof layers->pool_src, "layer '%s'", ln);
        }
        /* Keras' EfficientNet rescales after its Normalization layer where it was built for
         * ImageNet weights (keras/applications/efficientnet.py): the layer's name tells */
        if (!strncmp(ln, "rescaling", 9) && layers->count && layers->items[layers->count - 1].kind == LP_WLAYER_NORM)
            layers->rescaled_after_norm = true;
        st = read_layer(&c, root, ln, &ndense, layers);
        if (!st && sink) st = sink_flush(sink, layers);
    }
    strlist_free(&names);
    if (root >= 0) H5Gclose(root);
    H5Fclose(c.file);
    H5Eclear2(H5E_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    return st;
}

/* ---- isolation ---------------------------------------------------------------
 * libhdf5 1.10 is not robust against corrupt files: a mutation fuzz of small
 * Keras files made it crash (segfault in H5T__conv_vlen/H5HG_read) or loop
 * forever in about 1% of cases. So the HDF5 part runs in a child process that
 * streams the converted layers into a memfd; the parent waits with a time
 * limit and turns a crash or a hang into a clean error. The child frees each
 * layer once written, and the parent frees the memfd's pages as it reads them
 * back (FALLOC_FL_PUNCH_HOLE), so memory stays near one copy of the weights.
 * The test hook h5_inprocess (core/test_hooks.h) reads in this process instead,
 * for the fuzz harness (instrumented walk) and debuggers (loupe-testhooks with
 * LOUPE_H5_INPROCESS=1); users always get the isolated read. */

struct h5_sink {
    int fd;
    int flushed;
};

enum { REC_LAYER = 0x4c, REC_END = 0x45 };

static bool write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

static bool read_at(int fd, void *p, size_t n, off_t *off) {
    char *c = p;
    while (n) {
        ssize_t r = pread(fd, c, n, *off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        c += r;
        n -= (size_t)r;
        *off += r;
    }
    return true;
}

/* Reads n bytes in 16 MB steps, freeing the memfd's pages behind (best effort),
 * so that a tensor never sits twice in memory. */
static bool read_punch(int fd, void *p, size_t n, off_t *off) {
    const size_t step = (size_t)16 << 20;
    long pg = sysconf(_SC_PAGESIZE);
    char *c = p;
    while (n) {
        size_t k = n < step ? n : step;
        off_t start = *off;
        if (!read_at(fd, c, k, off)) return false;
        off_t a = (start + pg - 1) / pg * pg, e = *off / pg * pg;
        if (e > a) fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, a, e - a);
        c += k;
        n -= k;
    }
    return true;
}

static lp_status sink_flush(h5_sink *k, lp_wlayers *layers) {
    for (; k->flushed < layers->count; k->flushed++) {
        lp_wlayer *y = &layers->items[k->flushed];
        uint8_t tag = REC_LAYER;
        bool ok = write_all(k->fd, &tag, 1) && write_all(k->fd, y, sizeof *y) && write_all(k->fd, y->w.data, lp_tensor_nbytes(&y->w));
        if (ok && y->b.data) ok = write_all(k->fd, y->b.data, lp_tensor_nbytes(&y->b));
        if (!ok) return lp_fail(LP_ERR_IO, "cannot pass the weights to the parent process (%s)", strerror(errno));
        lp_tensor_free(&y->w);
        lp_tensor_free(&y->b);
    }
    return LP_OK;
}

static void child_main(const char *path, int fd) {
    lp_wlayers L = {0};
    h5_sink k = {.fd = fd};
    lp_status st = read_layers_direct(path, &L, &k);
    uint8_t tag = REC_END;
    int32_t code = (int32_t)st;
    const char *msg = st ? lp_errmsg() : "";
    uint32_t len = (uint32_t)strlen(msg);
    lp_wlayers head = L;
    head.items = NULL;
    bool ok = write_all(fd, &tag, 1) && write_all(fd, &code, sizeof code) && write_all(fd, &len, sizeof len) && write_all(fd, msg, len) &&
              write_all(fd, &head, sizeof head);
    _exit(ok ? 0 : 3);
}

/* Reads the child's stream back into layers. */
static lp_status parent_read(const char *path, int fd, lp_wlayers *layers, bool *complete) {
    off_t off = 0;
    *complete = false;
    for (;;) {
        uint8_t tag;
        if (!read_at(fd, &tag, 1, &off)) return LP_OK; /* stream cut short: the child died */
        if (tag == REC_END) {
            int32_t code;
            uint32_t len;
            lp_wlayers head;
            char msg[2048];
            if (!read_at(fd, &code, sizeof code, &off) || !read_at(fd, &len, sizeof len, &off) || len >= sizeof msg ||
                !read_at(fd, msg, len, &off) || !read_at(fd, &head, sizeof head, &off))
                return LP_OK;
            msg[len] = 0;
            *complete = true;
            layers->foreign_count += head.foreign_count;
            layers->foreign_conv_count += head.foreign_conv_count;
            layers->foreign_bn |= head.foreign_bn;
            layers->pool = head.pool;
            memcpy(layers->pool_src, head.pool_src, sizeof head.pool_src);
            layers->pre_dropout = head.pre_dropout;
            layers->rescaled_after_norm = head.rescaled_after_norm;
            for (int i = 0; i < head.n_examples && layers->n_examples < 3; i++)
                memcpy(layers->examples[layers->n_examples++], head.examples[i], sizeof head.examples[i]);
            for (int i = 0; i < head.n_conv_examples && layers->n_conv_examples < 3; i++)
                memcpy(layers->conv_examples[layers->n_conv_examples++], head.conv_examples[i], sizeof head.conv_examples[i]);
            if (code) return lp_fail((lp_status)code, "%s", msg);
            return LP_OK;
        }
        if (tag != REC_LAYER) return lp_fail(LP_ERR_IO, "%s: bad record from the HDF5 reader process", path);
        lp_wlayer y;
        if (!read_at(fd, &y, sizeof y, &off)) return LP_OK;
        bool has_b = y.b.data != NULL;
        lp_tensor w = {0}, b = {0};
        lp_status st = lp_tensor_alloc(&w, LP_F32, y.w.ndim, y.w.shape);
        if (!st && has_b) st = lp_tensor_alloc(&b, LP_F32, y.b.ndim, y.b.shape);
        bool ok = !st && read_punch(fd, w.data, lp_tensor_nbytes(&w), &off) && (!has_b || read_punch(fd, b.data, lp_tensor_nbytes(&b), &off));
        if (ok) st = lp_wlayers_push(layers, y.kind, y.src, y.src_shape, y.index, &w, has_b ? &b : NULL, y.bsrc);
        if (ok && !st) {
            lp_wlayer *z = &layers->items[layers->count - 1];
            z->relu = y.relu;
            z->dropout = y.dropout;
            memcpy(z->node, y.node, sizeof y.node);
        }
        lp_tensor_free(&w);
        lp_tensor_free(&b);
        if (st) return st;
        if (!ok) return LP_OK;
    }
}

lp_status lp_keras_h5_read_layers(const char *path, lp_wlayers *layers) {
    if (lp_test_hooks_active && lp_test_hooks_active->h5_inprocess) return read_layers_direct(path, layers, NULL);
    struct stat sb;
    if (stat(path, &sb) != 0) return lp_fail(LP_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    int fd = memfd_create("loupe-keras-h5", MFD_CLOEXEC);
    if (fd < 0) return read_layers_direct(path, layers, NULL); /* no memfd: no isolation */
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return read_layers_direct(path, layers, NULL);
    }
    /* a 528 MB file takes ~1 s; allow far more before calling it a hang */
    double limit = 60.0 + (double)sb.st_size / (8 << 20), t0 = lp_now();
    if (pid == 0) {
        /* never outlive the parent, nor the parent's time limit (libhdf5 can loop forever) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) _exit(4);
        alarm((unsigned)limit + 1);
        child_main(path, fd);
    }
    int status = 0;
    bool exited = false, killed = false;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            exited = true;
            break;
        }
        if (r < 0 && errno != EINTR) break; /* ECHILD (SIGCHLD ignored): judge by the stream */
        if (lp_now() - t0 > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            killed = true;
            break;
        }
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    bool complete;
    lp_status st = parent_read(path, fd, layers, &complete);
    close(fd);
    if (killed)
        return lp_fail(LP_ERR_FORMAT, "%s: libhdf5 did not finish reading the file in %.0f s (it loops on some corrupt files): the file is likely corrupt, download it again (if it opens in Keras, report it)",
                       path, limit);
    if (exited && WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == SIGINT || sig == SIGTERM) return lp_fail(LP_ERR_INTERRUPTED, "%s: reading interrupted", path);
        if (sig == SIGKILL) /* not ours (that is the timeout above): most likely the kernel's out-of-memory killer */
            return lp_fail(LP_ERR_NOMEM, "%s: the HDF5 reader process was killed (out of memory?): free memory and try again", path);
        return lp_fail(LP_ERR_FORMAT, "%s: libhdf5 crashed reading the file (signal %d): the file is corrupt, download it again", path, sig);
    }
    if (st) return st;
    if (!complete) return lp_fail(LP_ERR_FORMAT, "%s: the HDF5 reader process stopped early (exit status %d): the file is corrupt or memory ran out", path,
                                  exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return LP_OK;
}
