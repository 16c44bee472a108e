/* Fashion-MNIST IDX (.gz) -> PNG folder trees for the demo: see the
 * "tensorboard" section of loupe.h for the layout and guarantees.
 *
 * Crash safety: the tree is built in OUT.tmp (marked by .loupe-fashion-partial
 * so only a tree of ours is ever deleted), synced with syncfs, given its final
 * marker, then renamed to OUT. An interrupted run leaves OUT.tmp, which the
 * next run removes; OUT itself is either absent or complete. Runs on the same
 * parent folder are serialised with flock, so two concurrent calls end with
 * one writer and one "already prepared". */
#define _GNU_SOURCE
#include "log/log.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include <zlib.h>

#define DEFAULT_SOURCE "/usr/share/datasets/fashion-mnist"
#define MARKER ".loupe-fashion"
#define PARTIAL ".loupe-fashion-partial"
#define HINT "install Debian's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist) or pass --source DIR"

static const char *const CLASS_NAMES[10] = {"tshirt_top", "trouser", "pullover", "dress", "coat",
                                            "sandal", "shirt", "sneaker", "bag", "ankle_boot"};

const char *lp_fashion_class_name(int label) { return label >= 0 && label < 10 ? CLASS_NAMES[label] : NULL; }

lp_fashion_params lp_fashion_default_params(void) {
    lp_fashion_params p;
    memset(&p, 0, sizeof p);
    p.source_dir = DEFAULT_SOURCE;
    p.negative = 0;
    p.positive = 6;
    p.exclude_mask = (1u << 0) | (1u << 6);
    p.seed = 1;
    return p;
}

/* ---- IDX ----------------------------------------------------------------- */
typedef struct idx_set {
    int n, rows, cols;
    uint8_t *pixels; /* n * rows * cols */
    uint8_t *labels; /* n */
} idx_set;

static void idx_free(idx_set *s) {
    free(s->pixels);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

static lp_status gz_read_exact(gzFile f, const char *path, void *buf, size_t n, const char *what) {
    uint8_t *p = buf;
    while (n > 0) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int got = gzread(f, p, chunk);
        if (got < 0) {
            int err;
            const char *msg = gzerror(f, &err);
            return lp_fail(LP_ERR_FORMAT, "%s: cannot decompress (%s); the file is damaged, reinstall it", path, msg);
        }
        if (got == 0)
            return lp_fail(LP_ERR_FORMAT, "%s: truncated: the file ends inside the %s; reinstall it", path, what);
        p += got;
        n -= (size_t)got;
    }
    return LP_OK;
}

static uint32_t be32(const uint8_t *b) {
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

/* Reads one IDX file: magic 0x00000803 (u8 images n x rows x cols) or
 * 0x00000801 (u8 labels n); *data gets the payload, dims the sizes. */
static lp_status idx_read(const char *path, uint32_t magic, uint32_t dims[3], uint8_t **data) {
    *data = NULL;
    int ndim = (int)(magic & 0xff);
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) return lp_fail(LP_ERR_IO, "%s: cannot open (%s); %s", path, errno ? strerror(errno) : "gzopen failed", HINT);
    uint8_t hdr[16];
    lp_status s = gz_read_exact(f, path, hdr, 4 + 4 * (size_t)ndim, "header");
    if (s) {
        gzclose(f);
        return s;
    }
    if (be32(hdr) != magic) {
        gzclose(f);
        return lp_fail(LP_ERR_FORMAT, "%s: not an IDX %s file (magic 0x%08x, expected 0x%08x); check --source", path,
                       ndim == 3 ? "image" : "label", be32(hdr), magic);
    }
    size_t total = 1;
    for (int i = 0; i < ndim; i++) {
        dims[i] = be32(hdr + 4 + 4 * i);
        uint32_t limit = i == 0 ? 10000000u : 1024u;
        if (dims[i] == 0 || dims[i] > limit) {
            gzclose(f);
            return lp_fail(LP_ERR_FORMAT, "%s: implausible size %u in dimension %d of the IDX header", path, dims[i], i);
        }
        total *= dims[i];
    }
    uint8_t *buf = lp_malloc(total);
    if (!buf) {
        gzclose(f);
        return LP_ERR_NOMEM;
    }
    s = gz_read_exact(f, path, buf, total, ndim == 3 ? "pixels" : "labels");
    uint8_t extra;
    if (!s && gzread(f, &extra, 1) != 0)
        s = lp_fail(LP_ERR_FORMAT, "%s: more bytes than the IDX header announces (%zu); the file is damaged", path, total);
    gzclose(f);
    if (s) {
        free(buf);
        return s;
    }
    *data = buf;
    return LP_OK;
}

/* prefix is "train" or "t10k". */
static lp_status idx_load(const char *dir, const char *prefix, idx_set *out) {
    memset(out, 0, sizeof *out);
    char ipath[4096], lpath[4096];
    snprintf(ipath, sizeof ipath, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(lpath, sizeof lpath, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    uint32_t idims[3] = {0}, ldims[3] = {0};
    lp_status s = idx_read(ipath, 0x00000803u, idims, &out->pixels);
    if (s) return s;
    s = idx_read(lpath, 0x00000801u, ldims, &out->labels);
    if (s) {
        idx_free(out);
        return s;
    }
    if (idims[0] != ldims[0]) {
        idx_free(out);
        return lp_fail(LP_ERR_FORMAT, "%s: %u labels for %u images in %s; the files do not belong together", lpath,
                       ldims[0], idims[0], ipath);
    }
    out->n = (int)idims[0];
    out->rows = (int)idims[1];
    out->cols = (int)idims[2];
    for (int i = 0; i < out->n; i++)
        if (out->labels[i] > 9) {
            int bad = out->labels[i];
            idx_free(out);
            return lp_fail(LP_ERR_FORMAT, "%s: label %d of image %d is not a Fashion-MNIST class (0-9)", lpath, bad, i);
        }
    return LP_OK;
}

/* ---- folders --------------------------------------------------------------- */
static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static bool dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return false;
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = false;
            break;
        }
    closedir(d);
    return empty;
}

/* The marker text: everything that decides the tree's content. */
static void describe(const lp_fashion_params *p, char *buf, size_t n) {
    if (p->pretrain) {
        char ex[64] = "";
        for (int l = 0; l < 10; l++)
            if (p->exclude_mask & (1u << l)) snprintf(ex + strlen(ex), sizeof ex - strlen(ex), "%s%d", ex[0] ? "," : "", l);
        snprintf(buf, n, "loupe fashion 1\nmode pretrain\nexclude %s\ntrain %d\nvalid %d\nseed %llu\n", ex, p->n_train,
                 p->n_valid, (unsigned long long)p->seed);
    } else {
        snprintf(buf, n, "loupe fashion 1\nmode binary\nnegative %d\npositive %d\ntrain %d\nvalid %d\ntest %d\nseed %llu\n",
                 p->negative, p->positive, p->n_train, p->n_valid, p->n_test, (unsigned long long)p->seed);
    }
}

static lp_status write_png(const char *root, const char *split, const char *cls, int index, const uint8_t *px,
                           int rows, int cols) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s/%05d.png", root, split, cls, index);
    uint8_t *png;
    size_t size;
    lp_status s = lp_png_encode(px, rows, cols, 1, &png, &size);
    if (s) return s;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(png);
        return lp_fail(LP_ERR_IO, "%s: cannot create (%s)", path, strerror(errno));
    }
    size_t w = fwrite(png, 1, size, f);
    int bad = fclose(f) != 0 || w != size;
    free(png);
    if (bad) return lp_fail(LP_ERR_IO, "%s: write failed (%s); is the disk full?", path, strerror(errno));
    return LP_OK;
}

/* Writes n_take images of label `label` from set, those at positions
 * [first, first+n_take) of its seeded permutation, into root/split/cls. */
static lp_status write_split(const char *root, const idx_set *set, int label, uint64_t seed, uint64_t stream, int first,
                             int n_take, const char *split, const char *cls) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s/%s", root, split, cls);
    lp_status s = lp_mkdirs(dir);
    if (s) return s;
    int count = 0;
    for (int i = 0; i < set->n; i++) count += set->labels[i] == label;
    int *idx = lp_malloc(sizeof(int) * (size_t)(count ? count : 1));
    int *perm = lp_malloc(sizeof(int) * (size_t)(count ? count : 1));
    if (!idx || !perm) {
        free(idx);
        free(perm);
        return LP_ERR_NOMEM;
    }
    for (int i = 0, k = 0; i < set->n; i++)
        if (set->labels[i] == label) idx[k++] = i;
    lp_rng_permutation(seed, stream, perm, count);
    size_t img = (size_t)set->rows * (size_t)set->cols;
    for (int j = first; j < first + n_take && !s; j++) {
        int i = idx[perm[j]];
        s = write_png(root, split, cls, i, set->pixels + (size_t)i * img, set->rows, set->cols);
    }
    free(idx);
    free(perm);
    return s;
}

static lp_status need(const idx_set *set, const char *file, int label, int want, const char *what) {
    int count = 0;
    for (int i = 0; i < set->n; i++) count += set->labels[i] == label;
    if (want > count)
        return lp_fail(LP_ERR_ARG, "%s: class %d (%s) has %d images, %d asked for %s; ask for fewer", file, label,
                       CLASS_NAMES[label], count, want, what);
    return LP_OK;
}

static lp_status build_tree(const lp_fashion_params *p, const char *root, lp_fashion_result *r) {
    idx_set train = {0}, test = {0};
    lp_status s = idx_load(p->source_dir, "train", &train);
    if (!s && !p->pretrain) s = idx_load(p->source_dir, "t10k", &test);
    char tf[4200], vf[4200];
    snprintf(tf, sizeof tf, "%s/train-*", p->source_dir);
    snprintf(vf, sizeof vf, "%s/t10k-*", p->source_dir);
    if (!s && !p->pretrain) {
        const int labels[2] = {p->negative, p->positive};
        const char *names[2] = {"negative", "positive"};
        for (int c = 0; c < 2 && !s; c++) {
            s = need(&train, tf, labels[c], p->n_train + p->n_valid, "for train + valid");
            if (!s) s = need(&test, vf, labels[c], p->n_test, "for test");
            if (!s) s = write_split(root, &train, labels[c], p->seed, 100 + (uint64_t)labels[c], 0, p->n_train, "train", names[c]);
            if (!s) s = write_split(root, &train, labels[c], p->seed, 100 + (uint64_t)labels[c], p->n_train, p->n_valid, "valid", names[c]);
            if (!s) s = write_split(root, &test, labels[c], p->seed, 200 + (uint64_t)labels[c], 0, p->n_test, "test", names[c]);
            r->train += p->n_train;
            r->valid += p->n_valid;
            r->test += p->n_test;
        }
    } else if (!s) {
        for (int l = 0; l < 10 && !s; l++) {
            if (p->exclude_mask & (1u << l)) continue;
            s = need(&train, tf, l, p->n_train + p->n_valid, "for train + valid");
            if (!s) s = write_split(root, &train, l, p->seed, 100 + (uint64_t)l, 0, p->n_train, "train", CLASS_NAMES[l]);
            if (!s) s = write_split(root, &train, l, p->seed, 100 + (uint64_t)l, p->n_train, p->n_valid, "valid", CLASS_NAMES[l]);
            r->train += p->n_train;
            r->valid += p->n_valid;
        }
    }
    r->images = r->train + r->valid + r->test;
    idx_free(&train);
    idx_free(&test);
    return s;
}

static lp_status check_params(lp_fashion_params *p) {
    if (!p->out_dir || !*p->out_dir) return lp_fail(LP_ERR_ARG, "fashion: no output folder; pass --out DIR");
    if (!p->source_dir || !*p->source_dir) p->source_dir = DEFAULT_SOURCE;
    if (p->pretrain) {
        if (!p->n_train) p->n_train = 400;
        if (!p->n_valid) p->n_valid = 50;
        p->n_test = 0;
        p->exclude_mask &= 0x3ffu;
        if (__builtin_popcount(~p->exclude_mask & 0x3ffu) < 2)
            return lp_fail(LP_ERR_ARG, "fashion: the exclude list leaves fewer than 2 classes to pretrain on");
    } else {
        if (!p->n_train) p->n_train = 154;
        if (!p->n_valid) p->n_valid = 26;
        if (!p->n_test) p->n_test = 77;
        if (p->negative < 0 || p->negative > 9 || p->positive < 0 || p->positive > 9)
            return lp_fail(LP_ERR_ARG, "fashion: labels must be 0-9 (got negative %d, positive %d)", p->negative, p->positive);
        if (p->negative == p->positive)
            return lp_fail(LP_ERR_ARG, "fashion: negative and positive are the same class (%d); pick two", p->negative);
        p->exclude_mask = 0;
    }
    if (p->n_train < 0 || p->n_valid < 0 || p->n_test < 0 || p->n_train > 60000 || p->n_valid > 60000 || p->n_test > 10000)
        return lp_fail(LP_ERR_ARG, "fashion: image counts out of range (train %d, valid %d, test %d)", p->n_train,
                       p->n_valid, p->n_test);
    return LP_OK;
}

lp_status lp_fashion_write_folder(const lp_fashion_params *params, lp_fashion_result *result) {
    lp_clear_error();
    lp_fashion_result r = {0};
    if (result) *result = r;
    if (!params) return lp_fail(LP_ERR_ARG, "fashion: params is NULL");
    lp_fashion_params p = *params;
    lp_status s = check_params(&p);
    if (s) return s;
    char want[512];
    describe(&p, want, sizeof want);

    size_t n = strlen(p.out_dir);
    while (n > 1 && p.out_dir[n - 1] == '/') n--;
    if (n + 32 > 4000) return lp_fail(LP_ERR_ARG, "fashion: output path too long");
    char out[4096], tmp[4096], scratch[4096], parent[4096], path[4200];
    snprintf(out, sizeof out, "%.*s", (int)n, p.out_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    snprintf(scratch, sizeof scratch, "%s", out);
    snprintf(parent, sizeof parent, "%s", dirname(scratch));
    s = lp_mkdirs(parent);
    if (s) return s;
    int lock = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lock < 0) return lp_fail(LP_ERR_IO, "%s: cannot open folder (%s)", parent, strerror(errno));
    if (flock(lock, LOCK_EX) != 0) {
        close(lock);
        return lp_fail(LP_ERR_IO, "%s: cannot lock folder (%s)", parent, strerror(errno));
    }

    /* Already there? */
    snprintf(path, sizeof path, "%s/" MARKER, out);
    if (lp_path_exists(out) && !(lp_is_dir(out) && dir_is_empty(out))) {
        uint8_t *have = NULL;
        size_t have_n = 0;
        if (lp_path_exists(path) && lp_read_file(path, &have, &have_n) == LP_OK && have_n == strlen(want) &&
            memcmp(have, want, have_n) == 0) {
            free(have);
            close(lock);
            r.already_prepared = 1;
            if (result) *result = r;
            return LP_OK;
        }
        free(have);
        close(lock);
        return lp_fail(LP_ERR_ARG, "%s: exists and %s; remove it or choose another --out", out,
                       lp_path_exists(path) ? "was prepared with other options" : "was not written by loupe fashion");
    }

    /* A leftover OUT.tmp from an interrupted run is ours only if marked. */
    if (lp_path_exists(tmp)) {
        snprintf(path, sizeof path, "%s/" PARTIAL, tmp);
        if (!lp_path_exists(path)) {
            close(lock);
            return lp_fail(LP_ERR_ARG, "%s: exists and was not made by loupe fashion; remove it", tmp);
        }
        if (nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
            close(lock);
            return lp_fail(LP_ERR_IO, "%s: cannot remove the leftover of an interrupted run (%s)", tmp, strerror(errno));
        }
    }
    s = lp_mkdirs(tmp);
    snprintf(path, sizeof path, "%s/" PARTIAL, tmp);
    if (!s) s = lp_write_file_atomic(path, "incomplete\n", 11);
    if (!s) s = build_tree(&p, tmp, &r);
    if (!s) {
        snprintf(path, sizeof path, "%s/" MARKER, tmp);
        s = lp_write_file_atomic(path, want, strlen(want));
    }
    if (!s) {
        snprintf(path, sizeof path, "%s/" PARTIAL, tmp);
        unlink(path);
        int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) { /* every PNG on disk before the rename makes the tree visible */
            syncfs(dfd);
            close(dfd);
        }
        if (rename(tmp, out) != 0) s = lp_fail(LP_ERR_IO, "%s: cannot rename to %s (%s)", tmp, out, strerror(errno));
        fsync(lock);
    }
    if (s) {
        lp_fail_context(s, "fashion");
        nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS); /* marked as ours above */
    }
    close(lock);
    if (!s && result) *result = r;
    return s;
}
