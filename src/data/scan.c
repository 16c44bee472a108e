/* Folder scan: DATA/{train,valid|validation,test}/<class>/...; files judged by
 * content, decode-checked in parallel, ordered like Keras' flow_from_directory
 * (classes sorted or given; files by (folder, name) within a class). */
#include "data/scan_internal.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

lp_scan_options lp_scan_default_options(void) {
    lp_scan_options o;
    memset(&o, 0, sizeof o);
    o.check_decode = true;
    o.max_pixels = LP_DEFAULT_MAX_PIXELS;
    return o;
}

/* ---- small helpers -------------------------------------------------------- */
static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = lp_malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static lp_status push_str(char ***arr, int *n, char *s) {
    if (!s) return LP_ERR_NOMEM;
    char **a = realloc(*arr, sizeof(char *) * (size_t)(*n + 1));
    if (!a) {
        free(s);
        return lp_fail(LP_ERR_NOMEM, "out of memory");
    }
    a[(*n)++] = s;
    *arr = a;
    return LP_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool is_hidden(const char *name) {
    return name[0] == '.' || strcmp(name, "Thumbs.db") == 0 || strcmp(name, "desktop.ini") == 0 ||
           strcmp(name, "__MACOSX") == 0;
}

static bool has_image_ext(const char *name) {
    static const char *ext[] = {"jpg", "jpeg", "jpe", "jfif", "png", "bmp", "dib", "ppm", "pgm", "pbm", "pnm",
                                "tif", "tiff", "webp", "gif", "heic", "heif", "avif"};
    const char *dot = strrchr(name, '.');
    if (!dot) return false;
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
        if (strcasecmp(dot + 1, ext[i]) == 0) return true;
    return false;
}

/* ---- candidates --------------------------------------------------------- */
typedef enum { CAND_OK, CAND_BAD, CAND_IGNORED } cand_state;
typedef struct cand {
    char *path, *relpath, *dirrel, *name;
    int label;
    cand_state state;
    char *reason;
    lp_sample_meta meta;
} cand;

typedef struct cand_list {
    cand *v;
    int n, cap;
} cand_list;

static void cand_free(cand *c) {
    free(c->path);
    free(c->relpath);
    free(c->dirrel);
    free(c->name);
    free(c->reason);
}

static lp_status cand_push(cand_list *l, cand *c) {
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 256;
        cand *v = realloc(l->v, sizeof(cand) * (size_t)nc);
        if (!v) return lp_fail(LP_ERR_NOMEM, "out of memory");
        l->v = v;
        l->cap = nc;
    }
    l->v[l->n++] = *c;
    return LP_OK;
}

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->label != y->label) return x->label < y->label ? -1 : 1;
    int d = strcmp(x->dirrel, y->dirrel);
    return d ? d : strcmp(x->name, y->name);
}

typedef struct walk_ctx {
    const lp_scan_options *opt;
    cand_list *list;
    lp_split_ext *sp;
    dev_t stack_dev[64];
    ino_t stack_ino[64];
    int depth;
} walk_ctx;

/* Sorted names of a directory's entries (hidden ones included). */
static lp_status list_dir(const char *dir, char ***names, int *n) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return lp_fail(LP_ERR_IO, "%s: cannot open folder (%s)", dir, strerror(errno));
    struct dirent *e;
    lp_status s = LP_OK;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if ((s = push_str(names, n, lp_strdup(e->d_name)))) break;
    }
    closedir(d);
    if (!s && *n) qsort(*names, (size_t)*n, sizeof(char *), cmp_str);
    return s;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static lp_status walk(walk_ctx *w, const char *abs, const char *rel, const char *dirrel, int label) {
    char **names;
    int n;
    lp_status s = list_dir(abs, &names, &n);
    if (s) return s;
    for (int i = 0; i < n && !s; i++) {
        const char *nm = names[i];
        if (is_hidden(nm)) {
            w->sp->ignored_hidden++;
            continue;
        }
        char *p = lp_path_join(abs, nm), *r = lp_path_join(rel, nm);
        char *dr = dirrel[0] ? lp_path_join(dirrel, nm) : lp_strdup(nm);
        if (!p || !r || !dr) {
            free(p), free(r), free(dr);
            s = LP_ERR_NOMEM;
            break;
        }
        struct stat st;
        bool ok = lstat(p, &st) == 0;
        if (ok && S_ISLNK(st.st_mode)) {
            if (!w->opt->follow_symlinks || stat(p, &st) != 0) {
                w->sp->ignored_symlink++;
                free(p), free(r), free(dr);
                continue;
            }
        }
        if (ok && S_ISDIR(st.st_mode)) {
            bool loop = w->depth >= 64;
            for (int k = 0; k < w->depth && !loop; k++)
                loop = w->stack_dev[k] == st.st_dev && w->stack_ino[k] == st.st_ino;
            if (loop) {
                w->sp->ignored_symlink++;
            } else {
                w->stack_dev[w->depth] = st.st_dev;
                w->stack_ino[w->depth] = st.st_ino;
                w->depth++;
                s = walk(w, p, r, dr, label);
                w->depth--;
            }
            free(p), free(r), free(dr);
            continue;
        }
        free(dr);
        if (ok && !S_ISREG(st.st_mode)) {
            w->sp->ignored_other++;
            free(p), free(r);
            continue;
        }
        cand c = {.path = p, .relpath = r, .dirrel = lp_strdup(dirrel), .name = lp_strdup(nm), .label = label};
        if (!c.dirrel || !c.name || (s = cand_push(w->list, &c))) {
            cand_free(&c);
            if (!s) s = LP_ERR_NOMEM;
        }
    }
    free_names(names, n);
    return s;
}

/* ---- check (parallel) ------------------------------------------------------ */
typedef struct check_ctx {
    cand_list *list;
    const lp_scan_options *opt;
    int next;
    pthread_mutex_t mu;
} check_ctx;

static void set_bad(cand *c, const char *reason) {
    c->state = CAND_BAD;
    c->reason = lp_strdup(reason);
}

static void check_one(cand *c, const lp_scan_options *opt) {
    c->state = CAND_OK;
    int fd = open(c->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        char r[160];
        snprintf(r, sizeof r, "unreadable (%s)", strerror(errno));
        set_bad(c, r);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        set_bad(c, "unreadable (stat failed)");
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        set_bad(c, "not a regular file (replaced while the folder was read)");
        return;
    }
    c->meta.size = st.st_size;
    /* The first bytes decide what the file is; only images are read whole. */
    size_t head = st.st_size < 64 ? (size_t)st.st_size : 64;
    uint8_t *buf = malloc(head + 1);
    if (!buf) {
        close(fd);
        set_bad(c, "out of memory while reading");
        return;
    }
    size_t got = 0;
    int rerr = 0;
    while (got < head) {
        ssize_t k = read(fd, buf + got, head - got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) rerr = errno;
        if (k <= 0) break;
        got += (size_t)k;
    }
    lp_image_format f0 = lp_image_sniff(buf, got);
    bool decodable = f0 != LP_FMT_UNKNOWN && f0 != LP_FMT_GIF && f0 != LP_FMT_HEIF;
    size_t want = head;
    if (got == head && opt->check_decode && decodable && (size_t)st.st_size > head) {
        want = (size_t)st.st_size;
        uint8_t *nb = realloc(buf, want + 1);
        if (!nb) {
            free(buf);
            close(fd);
            set_bad(c, "out of memory while reading");
            return;
        }
        buf = nb;
        while (got < want) {
            ssize_t k = read(fd, buf + got, want - got);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) rerr = errno;
            if (k <= 0) break;
            got += (size_t)k;
        }
    }
    close(fd);
    if (got < want) {
        char r[160];
        snprintf(r, sizeof r, "unreadable (%s)", rerr ? strerror(rerr) : "short read");
        set_bad(c, r);
        free(buf);
        return;
    }
    bool imgext = has_image_ext(c->name);
    if (st.st_size == 0) {
        if (imgext) set_bad(c, "empty file");
        else c->state = CAND_IGNORED;
        free(buf);
        return;
    }
    lp_image_format f = lp_image_sniff(buf, got);
    c->meta.format = f;
    if (f == LP_FMT_UNKNOWN) {
        if (imgext) set_bad(c, "not an image (content matches no image format)");
        else c->state = CAND_IGNORED;
        free(buf);
        return;
    }
    if (opt->check_decode && decodable) {
        c->meta.hash = lp_hash_bytes(buf, got);
        lp_decode_options o = lp_decode_default_options();
        o.max_pixels = opt->max_pixels;
        o.min_width = o.min_height = 1; /* JPEG: 1/8 scale still reads every coefficient */
        o.apply_exif = false;
        lp_image img;
        lp_image_info info;
        lp_status s = lp_image_decode(buf, got, &o, &img, &info);
        c->meta.width = info.width;
        c->meta.height = info.height;
        memcpy(c->meta.mode, info.mode, sizeof c->meta.mode);
        if (s) set_bad(c, lp_errmsg());
        else lp_image_free(&img);
    } else if (!decodable || f == LP_FMT_GIF || f == LP_FMT_HEIF
#ifndef LOUPE_HAVE_TIFF
               || f == LP_FMT_TIFF
#endif
#ifndef LOUPE_HAVE_WEBP
               || f == LP_FMT_WEBP
#endif
    ) {
        char r[96];
        snprintf(r, sizeof r, "unsupported format (%s)", lp_image_format_name(f));
        set_bad(c, r);
    }
    free(buf);
}

static void *check_worker(void *arg) {
    check_ctx *cc = arg;
    for (;;) {
        pthread_mutex_lock(&cc->mu);
        int i = cc->next++;
        pthread_mutex_unlock(&cc->mu);
        if (i >= cc->list->n) break;
        check_one(&cc->list->v[i], cc->opt);
    }
    return NULL;
}

static void *check_thread(void *arg) {
    lp_thread_unpin();
    return check_worker(arg);
}

static void check_all(cand_list *l, const lp_scan_options *opt) {
    check_ctx cc = {.list = l, .opt = opt};
    pthread_mutex_init(&cc.mu, NULL);
    int nw = opt->workers > 0 ? opt->workers : lp_data_auto_workers(false);
    if (nw > l->n) nw = l->n;
    pthread_t th[64];
    if (nw > 64) nw = 64;
    int started = 0;
    for (int i = 1; i < nw; i++)
        if (pthread_create(&th[started], NULL, check_thread, &cc) == 0) started++;
    check_worker(&cc);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&cc.mu);
}

/* ---- splits ------------------------------------------------------------------ */
static void split_ext_free(lp_split_ext *e) {
    if (!e) return;
    lp_split *s = &e->s;
    for (int i = 0; i < s->num_samples; i++) {
        free(s->samples[i].path);
        free(s->samples[i].relpath);
    }
    free(s->samples);
    for (int i = 0; i < s->num_classes; i++) free(s->class_names[i]);
    free(s->class_names);
    free(s->class_counts);
    for (int i = 0; i < s->num_bad; i++) {
        free(s->bad[i].relpath);
        free(s->bad[i].reason);
    }
    free(s->bad);
    free(e->meta);
    free(e);
}

void lp_split_free(lp_split *s) { split_ext_free((lp_split_ext *)s); }

static lp_status parse_classes(const char *spec, char ***out, int *n) {
    *out = NULL;
    *n = 0;
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) return lp_fail(LP_ERR_ARG, "--classes '%s': empty class name", spec);
        char *nm = lp_malloc(len + 1);
        if (!nm) return LP_ERR_NOMEM;
        memcpy(nm, p, len);
        nm[len] = 0;
        for (int i = 0; i < *n; i++)
            if (strcmp((*out)[i], nm) == 0) {
                lp_status s = lp_fail(LP_ERR_ARG, "--classes '%s': class '%s' given twice", spec, nm);
                free(nm);
                return s;
            }
        if (strchr(nm, '/')) {
            free(nm);
            return lp_fail(LP_ERR_ARG, "--classes '%s': a class is a folder name, without '/'", spec);
        }
        lp_status s = push_str(out, n, nm);
        if (s) return s;
        p += len;
        if (*p == ',') p++;
    }
    if (*n == 0) return lp_fail(LP_ERR_ARG, "--classes is empty");
    return LP_OK;
}

/* Class folders of dir: sorted, hidden ones skipped; symlinked ones only when following. */
static lp_status class_folders(const char *dir, bool follow, char ***out, int *n, int *files_ignored) {
    char **names;
    int cnt;
    *out = NULL;
    *n = 0;
    lp_status s = list_dir(dir, &names, &cnt);
    if (s) return s;
    for (int i = 0; i < cnt && !s; i++) {
        if (is_hidden(names[i])) continue;
        char *p = lp_path_join(dir, names[i]);
        if (!p) {
            s = LP_ERR_NOMEM;
            break;
        }
        struct stat st;
        bool isdir = false, link = lstat(p, &st) == 0 && S_ISLNK(st.st_mode);
        if (link ? (follow && stat(p, &st) == 0 && S_ISDIR(st.st_mode)) : (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)))
            isdir = true;
        free(p);
        if (isdir) s = push_str(out, n, lp_strdup(names[i]));
        else (*files_ignored)++;
    }
    free_names(names, cnt);
    return s;
}

/* Appends name (between q and q) to the comma-separated list, while it fits in size; the
 * first that does not adds ", ..." and ends the list (*cut). */
static void list_name(char *list, size_t size, const char *name, const char *q, bool *cut) {
    if (*cut) return;
    const size_t used = strlen(list);
    if (used + strlen(name) + 8 < size) snprintf(list + used, size - used, "%s%s%s%s", used ? ", " : "", q, name, q);
    else snprintf(list + used, size - used, ", ..."), *cut = true;
}

/* Scans one split folder. classes: the order to use (NULL: the folder's own,
 * sorted). problems/notes collect what is wrong. missing_ok: a class without a folder
 * (or without images) is a note, not a problem (a model's classes over a folder that
 * holds some of them). */
static lp_status scan_split(const char *abs, const char *relbase, const char *name, char **classes, int nclasses,
                            bool classes_given, bool missing_ok, const lp_scan_options *opt, lp_split_ext **out,
                            char ***problems, int *nproblems, char ***notes, int *nnotes) {
    *out = NULL;
    lp_split_ext *e = lp_calloc(1, sizeof *e);
    if (!e) return LP_ERR_NOMEM;
    snprintf(e->s.name, sizeof e->s.name, "%s", name);
    char **folders = NULL;
    int nf = 0, loose = 0;
    cand_list list = {0};
    lp_status s = class_folders(abs, opt->follow_symlinks, &folders, &nf, &loose);
    if (s) goto fail;
    e->ignored_other += loose;
    char given[4096]; /* the folder as given, without trailing slashes (messages add one) */
    snprintf(given, sizeof given, "%s", abs);
    for (size_t gl = strlen(given); gl > 1 && given[gl - 1] == '/';) given[--gl] = 0;
    const char *shown = relbase[0] ? relbase : given;
    char absent[256] = ""; /* missing_ok: the classes without a folder, as many as fit */
    int nabsent = 0;
    bool cut = false;
    if (loose) {
        if ((s = push_str(notes, nnotes, xasprintf("%s/: %d file(s) outside class folders ignored", shown, loose)))) goto fail;
    }
    if (!classes) {
        classes = folders;
        nclasses = nf;
    } else {
        char list[256] = ""; /* the classes, as many as fit, for the folders that are none of them */
        bool list_cut = false;
        for (int k = 0; k < nclasses; k++) list_name(list, sizeof list, classes[k], "", &list_cut);
        for (int i = 0; i < nf; i++) {
            bool known = false;
            for (int k = 0; k < nclasses && !known; k++) known = strcmp(folders[i], classes[k]) == 0;
            if (known) continue;
            char *msg = classes_given ? xasprintf("%s/%s/: not among the classes (%s), ignored", shown, folders[i], list)
                                      : xasprintf("%s/%s/: folder is not a class of train/ (train's: %s)", shown, folders[i], list);
            if ((s = classes_given ? push_str(notes, nnotes, msg) : push_str(problems, nproblems, msg))) goto fail;
        }
    }
    e->s.num_classes = nclasses;
    e->s.class_names = lp_calloc((size_t)(nclasses ? nclasses : 1), sizeof(char *));
    e->s.class_counts = lp_calloc((size_t)(nclasses ? nclasses : 1), sizeof(int));
    if (!e->s.class_names || !e->s.class_counts) {
        s = LP_ERR_NOMEM;
        goto fail;
    }
    for (int k = 0; k < nclasses; k++) {
        if (!(e->s.class_names[k] = lp_strdup(classes[k]))) {
            s = LP_ERR_NOMEM;
            goto fail;
        }
    }
    walk_ctx w = {.opt = opt, .list = &list, .sp = e};
    for (int k = 0; k < nclasses; k++) {
        bool present = false;
        for (int i = 0; i < nf && !present; i++) present = strcmp(folders[i], classes[k]) == 0;
        if (!present && missing_ok) {
            list_name(absent, sizeof absent, classes[k], "'", &cut);
            nabsent++;
            continue;
        }
        if (!present) {
            if ((s = push_str(problems, nproblems, xasprintf("%s/: no folder for class '%s'", shown, classes[k])))) goto fail;
            continue;
        }
        char *cabs = lp_path_join(abs, classes[k]);
        char *crel = relbase[0] ? lp_path_join(relbase, classes[k]) : lp_strdup(classes[k]);
        if (!cabs || !crel) {
            free(cabs), free(crel);
            s = LP_ERR_NOMEM;
            goto fail;
        }
        w.depth = 0;
        s = walk(&w, cabs, crel, "", k);
        free(cabs);
        free(crel);
        if (s) goto fail;
    }
    check_all(&list, opt);
    if (list.n) qsort(list.v, (size_t)list.n, sizeof(cand), cmp_cand);
    int nok = 0, nbad = 0;
    for (int i = 0; i < list.n; i++) {
        nok += list.v[i].state == CAND_OK;
        nbad += list.v[i].state == CAND_BAD;
    }
    e->s.samples = lp_calloc((size_t)(nok ? nok : 1), sizeof(lp_sample));
    e->meta = lp_calloc((size_t)(nok ? nok : 1), sizeof(lp_sample_meta));
    e->s.bad = lp_calloc((size_t)(nbad ? nbad : 1), sizeof(lp_bad_file));
    if (!e->s.samples || !e->meta || !e->s.bad) {
        s = LP_ERR_NOMEM;
        goto fail;
    }
    for (int i = 0; i < list.n; i++) {
        cand *c = &list.v[i];
        if (c->state == CAND_OK) {
            int j = e->s.num_samples++;
            e->s.samples[j] = (lp_sample){.path = c->path, .relpath = c->relpath, .label = c->label};
            e->meta[j] = c->meta;
            e->s.class_counts[c->label]++;
            c->path = c->relpath = NULL;
        } else if (c->state == CAND_BAD) {
            int j = e->s.num_bad++;
            e->s.bad[j] = (lp_bad_file){.relpath = c->relpath, .reason = c->reason};
            c->relpath = c->reason = NULL;
        } else {
            e->ignored_nonimage++;
        }
    }
    e->s.num_ignored = e->ignored_hidden + e->ignored_symlink + e->ignored_nonimage + e->ignored_other;
    for (int k = 0; k < nclasses; k++) {
        if (e->s.class_counts[k] == 0) {
            bool present = false;
            for (int i = 0; i < nf && !present; i++) present = strcmp(folders[i], classes[k]) == 0;
            if (present && (s = push_str(missing_ok ? notes : problems, missing_ok ? nnotes : nproblems,
                                         xasprintf("%s/%s/: no usable images", shown, classes[k]))))
                goto fail;
        }
    }
    if (nabsent && (s = push_str(notes, nnotes, xasprintf("%s/: no folder for %d of the %d classes (%s)", shown, nabsent, nclasses,
                                                           absent))))
        goto fail;
    if (nclasses < 2 && (s = push_str(problems, nproblems,
                                      xasprintf("%s/: %d class folder(s); a classifier needs at least 2", shown, nclasses))))
        goto fail;
    for (int i = 0; i < list.n; i++) cand_free(&list.v[i]);
    free(list.v);
    free_names(folders, nf);
    *out = e;
    return LP_OK;
fail:
    for (int i = 0; i < list.n; i++) cand_free(&list.v[i]);
    free(list.v);
    free_names(folders, nf);
    split_ext_free(e);
    return s;
}

/* Stratified split of train into (train, valid): per class, a permutation from
 * (seed, class) picks round(f * n) images (at least 1 and at most n-1 when n >= 2). */
static lp_status split_validation(lp_split_ext *tr, double f, uint64_t seed, lp_split_ext **valid_out) {
    lp_split *s = &tr->s;
    int n = s->num_samples;
    char *take = lp_calloc((size_t)(n ? n : 1), 1);
    lp_split_ext *v = lp_calloc(1, sizeof *v);
    lp_sample *ts = lp_calloc((size_t)(n ? n : 1), sizeof(lp_sample)), *vs = lp_calloc((size_t)(n ? n : 1), sizeof(lp_sample));
    lp_sample_meta *tm = lp_calloc((size_t)(n ? n : 1), sizeof(lp_sample_meta)), *vm = lp_calloc((size_t)(n ? n : 1), sizeof(lp_sample_meta));
    int *perm = lp_malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!take || !v || !ts || !vs || !tm || !vm || !perm) {
        free(take), free(v), free(ts), free(vs), free(tm), free(vm), free(perm);
        return LP_ERR_NOMEM;
    }
    v->s.num_classes = s->num_classes;
    v->s.class_names = lp_calloc((size_t)s->num_classes, sizeof(char *));
    v->s.class_counts = lp_calloc((size_t)s->num_classes, sizeof(int));
    v->s.bad = lp_calloc(1, sizeof(lp_bad_file));
    if (!v->s.class_names || !v->s.class_counts || !v->s.bad) goto nomem;
    for (int k = 0; k < s->num_classes; k++)
        if (!(v->s.class_names[k] = lp_strdup(s->class_names[k]))) goto nomem;
    int start = 0;
    for (int k = 0; k < s->num_classes; k++) {
        int cnt = s->class_counts[k];
        int m = (int)(f * cnt + 0.5);
        if (cnt >= 2) {
            if (m < 1) m = 1;
            if (m > cnt - 1) m = cnt - 1;
        } else {
            m = 0;
        }
        lp_rng_permutation(seed ^ 0x5be0cd19137e2179ULL, (uint64_t)k, perm, cnt);
        for (int i = 0; i < m; i++) take[start + perm[i]] = 1;
        start += cnt;
    }
    int nt = 0, nv = 0;
    for (int i = 0; i < n; i++) {
        if (take[i]) {
            vs[nv] = s->samples[i];
            vm[nv++] = tr->meta[i];
            v->s.class_counts[s->samples[i].label]++;
        } else {
            ts[nt] = s->samples[i];
            tm[nt++] = tr->meta[i];
        }
    }
    for (int k = 0; k < s->num_classes; k++) s->class_counts[k] -= v->s.class_counts[k];
    free(s->samples);
    free(tr->meta);
    s->samples = ts;
    tr->meta = tm;
    s->num_samples = nt;
    v->s.samples = vs;
    v->meta = vm;
    v->s.num_samples = nv;
    v->from_validation_split = true;
    snprintf(v->s.name, sizeof v->s.name, "valid");
    free(take);
    free(perm);
    *valid_out = v;
    return LP_OK;
nomem:
    free(take), free(ts), free(vs), free(tm), free(vm), free(perm);
    split_ext_free(v);
    return LP_ERR_NOMEM;
}

lp_status lp_dataset_keep_sample(lp_dataset *d, const char *name, int keep, uint64_t seed) {
    lp_split *sp = (lp_split *)lp_dataset_split(d, name);
    if (!sp || keep < 0 || keep >= sp->num_samples) return LP_OK;
    lp_split_ext *e = (lp_split_ext *)sp;
    const int n = sp->num_samples;
    int *perm = lp_malloc(sizeof(int) * (size_t)n);
    char *take = lp_calloc((size_t)n, 1);
    if (!perm || !take) {
        free(perm), free(take);
        return LP_ERR_NOMEM;
    }
    lp_rng_permutation(seed ^ 0x1f83d9abfb41bd6bULL, 0, perm, n);
    for (int i = 0; i < keep; i++) take[perm[i]] = 1;
    int m = 0;
    for (int c = 0; c < sp->num_classes; c++) sp->class_counts[c] = 0;
    for (int i = 0; i < n; i++) {
        if (!take[i]) {
            free(sp->samples[i].path);
            free(sp->samples[i].relpath);
            continue;
        }
        sp->samples[m] = sp->samples[i];
        e->meta[m++] = e->meta[i];
        sp->class_counts[sp->samples[i].label]++;
    }
    sp->num_samples = m;
    free(perm);
    free(take);
    return LP_OK;
}

void lp_dataset_free(lp_dataset *d) {
    if (!d) return;
    for (int i = 0; i < 3; i++) split_ext_free(d->splits[i]);
    for (int i = 0; i < d->num_notes; i++) free(d->notes[i]);
    for (int i = 0; i < d->num_problems; i++) free(d->problems[i]);
    free(d->notes);
    free(d->problems);
    free(d->dir);
    free(d);
}

const lp_split *lp_dataset_split(const lp_dataset *d, const char *name) {
    if (!d || !name) return NULL;
    int i = strcmp(name, "train") == 0 ? 0 : (strcmp(name, "valid") == 0 || strcmp(name, "validation") == 0) ? 1
          : strcmp(name, "test") == 0 ? 2 : -1;
    return i < 0 || !d->splits[i] ? NULL : &d->splits[i]->s;
}

static lp_status check_options(const lp_scan_options *opt) {
    if (!(opt->validation_split >= 0 && opt->validation_split < 1))
        return lp_fail(LP_ERR_ARG, "validation split %g: must be in [0, 1)", opt->validation_split);
    if (opt->max_pixels < 0) return lp_fail(LP_ERR_ARG, "max_pixels must be >= 0");
    return LP_OK;
}

lp_status lp_dataset_scan_collect(const char *data_dir, const lp_scan_options *opt_in, lp_dataset **out) {
    *out = NULL;
    lp_scan_options opt = opt_in ? *opt_in : lp_scan_default_options();
    lp_status s = check_options(&opt);
    if (s) return s;
    if (!lp_is_dir(data_dir))
        return lp_fail(LP_ERR_DATA, "%s: %s", data_dir,
                       lp_path_exists(data_dir) ? "not a folder" : "no such folder");
    lp_dataset *d = lp_calloc(1, sizeof *d);
    if (!d || !(d->dir = lp_strdup(data_dir))) {
        free(d);
        return LP_ERR_NOMEM;
    }
    char **given = NULL;
    int ngiven = 0;
    if (opt.classes && (s = parse_classes(opt.classes, &given, &ngiven))) goto fail;
    char *tr = lp_path_join(data_dir, "train");
    if (!tr) {
        s = LP_ERR_NOMEM;
        goto fail;
    }
    if (!lp_is_dir(tr)) {
        free(tr);
        s = lp_fail(LP_ERR_DATA, "%s: no train/ folder; expected %s/train/<class>/<images> (and valid/, test/)",
                    data_dir, data_dir);
        goto fail;
    }
    s = scan_split(tr, "train", "train", given, ngiven, given != NULL, false, &opt, &d->splits[0], &d->problems,
                   &d->num_problems, &d->notes, &d->num_notes);
    free(tr);
    if (s) goto fail;
    lp_split *train = &d->splits[0]->s;
    /* valid/ or validation/ */
    char *va = lp_path_join(data_dir, "valid"), *vn = lp_path_join(data_dir, "validation");
    if (!va || !vn) {
        free(va), free(vn);
        s = LP_ERR_NOMEM;
        goto fail;
    }
    bool has_va = lp_is_dir(va), has_vn = lp_is_dir(vn);
    if (has_va && has_vn) {
        free(va), free(vn);
        s = lp_fail(LP_ERR_DATA, "%s: both valid/ and validation/ exist; keep one", data_dir);
        goto fail;
    }
    if (has_va || has_vn) {
        const char *nm = has_va ? "valid" : "validation";
        snprintf(d->valid_dir, sizeof d->valid_dir, "%s", nm);
        s = scan_split(has_va ? va : vn, nm, "valid", train->class_names, train->num_classes, given != NULL, false, &opt,
                       &d->splits[1], &d->problems, &d->num_problems, &d->notes, &d->num_notes);
        if (!s && opt.validation_split > 0)
            s = push_str(&d->notes, &d->num_notes,
                         xasprintf("validation split %g ignored: %s/ exists", opt.validation_split, nm));
    } else if (opt.validation_split > 0) {
        s = split_validation(d->splits[0], opt.validation_split, opt.seed, &d->splits[1]);
        if (!s)
            s = push_str(&d->notes, &d->num_notes,
                         xasprintf("valid: %g of train/ per class, drawn with seed %llu", opt.validation_split,
                                   (unsigned long long)opt.seed));
    }
    free(va), free(vn);
    if (s) goto fail;
    char *te = lp_path_join(data_dir, "test");
    if (!te) {
        s = LP_ERR_NOMEM;
        goto fail;
    }
    if (!opt.skip_test && lp_is_dir(te))
        s = scan_split(te, "test", "test", train->class_names, train->num_classes, given != NULL, false, &opt, &d->splits[2],
                       &d->problems, &d->num_problems, &d->notes, &d->num_notes);
    free(te);
    if (s) goto fail;
    free_names(given, ngiven);
    *out = d;
    return LP_OK;
fail:
    free_names(given, ngiven);
    lp_dataset_free(d);
    return s;
}

/* Builds the "what is wrong" message of a strict scan into the thread's error. */
static lp_status strict_fail(const char *what, const lp_split_ext *const *sp, int nsp, char **problems, int nproblems,
                             bool skip_bad) {
    int nbad = 0;
    for (int i = 0; i < nsp; i++)
        if (sp[i]) nbad += sp[i]->s.num_bad;
    if ((skip_bad || nbad == 0) && nproblems == 0) return LP_OK;
    char msg[2000];
    size_t len = 0;
#define ADD(...) \
    do { \
        if (len < sizeof msg) len += (size_t)snprintf(msg + len, sizeof msg - len, __VA_ARGS__); \
    } while (0)
    int shown = 0, total = nproblems + (skip_bad ? 0 : nbad);
    if (nproblems) ADD("%s: dataset problem%s:", what, nproblems > 1 ? "s" : "");
    for (int i = 0; i < nproblems; i++) {
        if (len > sizeof msg - 200) break;
        ADD("\n  %s", problems[i]);
        shown++;
    }
    if (!skip_bad && nbad) {
        ADD("%s%s: %d bad image file%s (fix or remove them, or use --skip-bad to leave them out):", len ? "\n" : "", what,
            nbad, nbad > 1 ? "s" : "");
        for (int i = 0; i < nsp; i++) {
            if (!sp[i]) continue;
            for (int j = 0; j < sp[i]->s.num_bad; j++) {
                if (len > sizeof msg - 200) break;
                ADD("\n  %s: %s", sp[i]->s.bad[j].relpath, sp[i]->s.bad[j].reason);
                shown++;
            }
        }
    }
    if (shown < total) ADD("\n  ... and %d more (`loupe data` lists them all)", total - shown);
#undef ADD
    return lp_fail(LP_ERR_DATA, "%s", msg);
}

lp_status lp_dataset_scan(const char *data_dir, const lp_scan_options *opt, lp_dataset **out) {
    lp_scan_options o = opt ? *opt : lp_scan_default_options();
    lp_dataset *d;
    lp_status s = lp_dataset_scan_collect(data_dir, &o, &d);
    if (s) return s;
    const lp_split_ext *sp[3] = {d->splits[0], d->splits[1], d->splits[2]};
    s = strict_fail(data_dir, sp, 3, d->problems, d->num_problems, o.skip_bad);
    if (s) {
        lp_dataset_free(d);
        return s;
    }
    *out = d;
    return LP_OK;
}

lp_status lp_split_scan_dir(const char *dir, const lp_scan_options *opt, lp_split **out) {
    return lp_split_scan_dir_notes(dir, opt, out, NULL, NULL);
}

lp_status lp_split_scan_dir_notes(const char *dir, const lp_scan_options *opt_in, lp_split **out, char ***notes_out, int *nnotes_out) {
    if (notes_out) *notes_out = NULL, *nnotes_out = 0;
    *out = NULL;
    lp_scan_options opt = opt_in ? *opt_in : lp_scan_default_options();
    lp_status s = check_options(&opt);
    if (s) return s;
    if (!lp_is_dir(dir))
        return lp_fail(LP_ERR_DATA, "%s: %s", dir, lp_path_exists(dir) ? "not a folder" : "no such folder");
    char **given = NULL, **problems = NULL, **notes = NULL;
    int ngiven = 0, np = 0, nn = 0;
    if (opt.classes && (s = parse_classes(opt.classes, &given, &ngiven))) return s;
    /* split name: the folder's last component ("test" for DATA/test/) */
    char tmpn[256], name[16];
    snprintf(tmpn, sizeof tmpn, "%s", dir);
    size_t tl = strlen(tmpn);
    while (tl > 1 && tmpn[tl - 1] == '/') tmpn[--tl] = 0;
    const char *base = strrchr(tmpn, '/');
    snprintf(name, sizeof name, "%s", base && base[1] ? base + 1 : tmpn);
    lp_split_ext *e = NULL;
    s = scan_split(dir, "", name, given, ngiven, given != NULL, given != NULL, &opt, &e, &problems, &np, &notes, &nn);
    if (!s) {
        const lp_split_ext *sp[1] = {e};
        s = strict_fail(dir, sp, 1, problems, np, opt.skip_bad);
        if (s) split_ext_free(e);
        else *out = &e->s;
    }
    free_names(given, ngiven);
    free_names(problems, np);
    if (!s && notes_out) *notes_out = notes, *nnotes_out = nn;
    else free_names(notes, nn);
    return s;
}
