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
#include "weights.h"
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        else if (H5Aread(a, mt, v) < 0) st = lp_fail(LP_ERR_FORMAT, "%s: cannot read attribute %s of %s (%s)", c->path, name, objname, h5_msg(eb));
        else {
            for (hssize_t i = 0; i < n && !st; i++) st = strlist_push(out, v[i] ? v[i] : "", v[i] ? strlen(v[i]) : 0);
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, v);
        }
        H5Tclose(mt);
        free(v);
    } else {
        size_t sz = H5Tget_size(t);
        char *buf = sz ? lp_malloc((size_t)n * sz) : NULL;
        hid_t mt = H5Tcopy(t);
        if (!buf) st = sz ? LP_ERR_NOMEM : lp_fail(LP_ERR_FORMAT, "%s: empty string type in %s", c->path, name);
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
    *rank = r;
    H5Tclose(t);
    H5Sclose(sp);
    return st;
}

/* Reads rows [r0, r0+nr) of a rank-2 dataset, or the whole dataset when nr < 0. */
static lp_status dset_read(h5_ctx *c, hid_t d, const char *nm, float *buf, hsize_t r0, hssize_t nr, hsize_t ncols) {
    char eb[256];
    herr_t e;
    if (nr < 0) {
        e = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    } else {
        hid_t fs = H5Dget_space(d);
        hsize_t start[2] = {r0, 0}, count[2] = {(hsize_t)nr, ncols};
        hid_t ms = H5Screate_simple(2, count, NULL);
        e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
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
    lp_status st = dset_read(c, d, nm, tmp, 0, -1, 0);
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

/* (in, out) -> [out, in]; when flatten_hwc, input row (h*7+w)*512+c goes to column c*49+h*7+w. */
static lp_status read_dense(h5_ctx *c, hid_t d, const char *nm, const hsize_t *k, bool flatten_hwc, lp_tensor *w) {
    int64_t in = (int64_t)k[0], out = (int64_t)k[1];
    lp_status st = lp_tensor_alloc(w, LP_F32, 2, (int64_t[]){out, in});
    if (st) return st;
    const int64_t block = 256;
    float *tmp = lp_malloc((size_t)(block * out) * sizeof(float));
    if (!tmp) {
        lp_tensor_free(w);
        return LP_ERR_NOMEM;
    }
    float *o = w->data;
    for (int64_t r0 = 0; r0 < in && !st; r0 += block) {
        int64_t nr = in - r0 < block ? in - r0 : block;
        st = dset_read(c, d, nm, tmp, (hsize_t)r0, nr, (hsize_t)out);
        if (st) break;
        for (int64_t r = 0; r < nr; r++) {
            int64_t row = r0 + r, col = row;
            if (flatten_hwc) {
                int64_t ch = row % 512, hw = row / 512;
                col = ch * 49 + hw;
            }
            const float *src = tmp + r * out;
            for (int64_t oc = 0; oc < out; oc++) o[oc * in + col] = src[oc];
        }
    }
    free(tmp);
    if (st) lp_tensor_free(w);
    return st;
}

static lp_status read_vector(h5_ctx *c, hid_t d, const char *nm, int64_t n, lp_tensor *b) {
    lp_status st = lp_tensor_alloc(b, LP_F32, 1, &n);
    if (!st) st = dset_read(c, d, nm, b->data, 0, -1, 0);
    if (st) lp_tensor_free(b);
    return st;
}

/* One layer group. Its weights are listed in order: each kernel (rank 4: conv,
 * rank 2: dense) is followed by its bias (rank 1). A nested model (a Keras
 * `vgg16` layer inside a bigger model) lists all its layers' weights in order in
 * one group. Other vectors (batch norm gamma/beta/mean/var) are not VGG. */
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
    for (int i = 0; i < wn.n && !st; i++) {
        if (rank[i] != 4 && rank[i] != 2) {
            lp_wlayers_note_foreign(layers, wn.s[i], false);
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
            st = read_dense(c, d, src, dims[i], *ndense == 0 && dims[i][0] == 512 * 7 * 7, &w);
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
        lp_tensor_free(&w);
        lp_tensor_free(&b);
    }
    free(rank);
    free(dims);
    strlist_free(&wn);
    H5Gclose(g);
    return st;
}

lp_status lp_keras_h5_read_layers(const char *path, lp_wlayers *layers) {
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
    for (int i = 0; i < names.n && !st; i++) st = read_layer(&c, root, names.s[i], &ndense, layers);
    strlist_free(&names);
    if (root >= 0) H5Gclose(root);
    H5Fclose(c.file);
    H5Eclear2(H5E_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    return st;
}
