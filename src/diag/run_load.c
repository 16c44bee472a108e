/* diag: reads a run directory (run.json, history.csv, valid_predictions.csv)
 * with checks whose messages name the file and line. A final line without a
 * newline (a crash while appending) is ignored with a note; an epoch written
 * again (a resumed run) replaces the earlier rows; an incomplete last epoch is
 * dropped with a note. */
#include <limits.h>
#include "diag/diag_impl.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void diag_note(diag_run *r, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **n = realloc(r->notes, (size_t)(r->n_notes + 1) * sizeof *n);
    if (!n) return;
    r->notes = n;
    if ((n[r->n_notes] = lp_strdup(buf))) r->n_notes++;
}

/* ---- CSV lines and fields ---------------------------------------------- */
typedef struct csv_file {
    char *path;       /* for messages */
    char *buf, *p, *end;
    int line;         /* number of the line last returned */
    int torn;         /* number of a last line without newline, 0 if none */
    char **header;    /* the header's fields (names for messages), in buf */
    char **fields;    /* the current row's fields, in buf */
    int n_cols;       /* the header's field count (-1: unterminated quote) */
} csv_file;

/* Returns the next line (NUL-terminated in place, without \r\n), NULL at the end.
 * A last line without newline is not returned: f->torn is set to its number. */
static char *csv_next(csv_file *f) {
    if (f->p >= f->end) return NULL;
    char *nl = memchr(f->p, '\n', (size_t)(f->end - f->p));
    if (!nl) {
        f->torn = f->line + 1;
        f->p = f->end;
        return NULL;
    }
    char *line = f->p;
    *nl = 0;
    if (nl > line && nl[-1] == '\r') nl[-1] = 0;
    f->p = nl + 1;
    f->line++;
    return line;
}

/* Splits a line in place into fields (RFC 4180 quotes within one line).
 * Returns the field count, or -1 for an unterminated quote. */
static int csv_split(char *line, char **fields, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == max) return max + 1; /* too many: caller reports the count mismatch */
        if (*p == '"') {
            char *out = ++p, *start = p;
            for (;;) {
                if (!*p) return -1;
                if (*p == '"') {
                    if (p[1] == '"') {
                        *out++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *out++ = *p++;
            }
            fields[n++] = start;
            if (*p != ',' && *p) return -1;
            *out = 0;
            if (!*p) break;
            p++;
        } else {
            fields[n++] = p;
            char *c = strchr(p, ',');
            if (!c) break;
            *c = 0;
            p = c + 1;
        }
    }
    return n;
}

static bool parse_double(const char *s, double *v) {
    while (*s == ' ') s++;
    if (!*s) return false;
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    while (*end == ' ') end++;
    return *end == 0 && errno != EINVAL && !(errno == ERANGE && fabs(*v) > 1);
}

static bool parse_int(const char *s, long *v) {
    while (*s == ' ') s++;
    if (!*s) return false;
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    while (*end == ' ') end++;
    return *end == 0 && errno == 0;
}

static lp_status csv_open(const char *dir, const char *name, csv_file *f) {
    memset(f, 0, sizeof *f);
    f->path = lp_path_join(dir, name);
    if (!f->path) return LP_ERR_NOMEM;
    if (!lp_path_exists(f->path))
        return lp_fail(LP_ERR_IO, "%s: not found; is '%s' a run directory written by 'loupe train'?", f->path, dir);
    size_t size;
    lp_status s = lp_read_file(f->path, (uint8_t **)&f->buf, &size);
    if (s) return s;
    f->p = f->buf;
    f->end = f->buf + size;
    return LP_OK;
}

static void csv_close(csv_file *f) {
    free(f->header);
    free(f->fields);
    free(f->buf);
    free(f->path);
}

/* Reads the header line into f->header and sizes f->fields for the rows.
 * `expected` (the header the writer writes) goes into the message for an empty file. */
static lp_status csv_read_header(csv_file *f, const char *expected) {
    char *line = csv_next(f);
    if (!line) return lp_fail(LP_ERR_FORMAT, "%s:1: empty file; expected the header %s", f->path, expected);
    int max = 1;
    for (const char *q = line; *q; q++) max += *q == ',';
    f->header = lp_malloc((size_t)(max + 1) * sizeof *f->header);
    f->fields = lp_malloc((size_t)(max + 1) * sizeof *f->fields);
    if (!f->header || !f->fields) return LP_ERR_NOMEM;
    f->n_cols = csv_split(line, f->header, max);
    return LP_OK;
}

/* Splits the next non-empty line into f->fields; *more is false at the end.
 * A row must have as many fields as the header. */
static lp_status csv_read_row(csv_file *f, bool *more) {
    char *line;
    while ((line = csv_next(f)) && !*line) {}
    *more = line != NULL;
    if (!line) return LP_OK;
    int n = csv_split(line, f->fields, f->n_cols < 0 ? 0 : f->n_cols);
    if (n == f->n_cols) return LP_OK;
    if (n < 0) return lp_fail(LP_ERR_FORMAT, "%s:%d: unterminated quote", f->path, f->line);
    if (n > f->n_cols) return lp_fail(LP_ERR_FORMAT, "%s:%d: more fields than the header's %d", f->path, f->line, f->n_cols);
    return lp_fail(LP_ERR_FORMAT, "%s:%d: %d fields, the header has %d", f->path, f->line, n, f->n_cols);
}

/* Field `col` of the current row as a number; the message names file, line and column. */
static lp_status csv_double(const csv_file *f, int col, double *v) {
    if (parse_double(f->fields[col], v)) return LP_OK;
    return lp_fail(LP_ERR_FORMAT, "%s:%d: %s '%s' is not a number", f->path, f->line, f->header[col], f->fields[col]);
}

/* Field `col` of the current row as a whole number in [min, max] (min == LONG_MIN: no bound is named). */
static lp_status csv_long(const csv_file *f, int col, long min, long max, long *v) {
    if (parse_int(f->fields[col], v) && *v >= min && *v <= max) return LP_OK;
    char bound[32] = "";
    if (min != LONG_MIN) snprintf(bound, sizeof bound, " >= %ld", min);
    return lp_fail(LP_ERR_FORMAT, "%s:%d: %s '%s' is not a whole number%s", f->path, f->line, f->header[col], f->fields[col], bound);
}

static void torn_note(diag_run *r, const csv_file *f) {
    if (f->torn)
        diag_note(r, "%s:%d: last line has no newline (the writer was interrupted?); ignored", f->path, f->torn);
}

/* ---- history.csv --------------------------------------------------------- */
static int cmp_hist(const void *a, const void *b) {
    const diag_hist *x = a, *y = b;
    return (x->epoch > y->epoch) - (x->epoch < y->epoch);
}

static lp_status load_history(diag_run *r) {
    csv_file f;
    lp_status s = csv_open(r->dir, "history.csv", &f);
    if (!s) s = csv_read_header(&f, "epoch,loss,accuracy,val_loss,val_accuracy,lr");
    if (s) goto done;
    const char *path = f.path;
    const char *want[] = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"};
    int col[6];
    for (int j = 0; j < 6; j++) {
        col[j] = -1;
        for (int c = 0; c < f.n_cols; c++)
            if (!strcmp(f.header[c], want[j])) col[j] = c;
        if (col[j] < 0 && j < 5) {
            s = lp_fail(LP_ERR_FORMAT, "%s:1: header has no '%s' column; expected epoch,loss,accuracy,val_loss,val_accuracy,lr", path, want[j]);
            goto done;
        }
    }
    int cap = 16;
    r->hist = lp_malloc((size_t)cap * sizeof *r->hist);
    if (!r->hist) {
        s = LP_ERR_NOMEM;
        goto done;
    }
    bool more;
    while (!(s = csv_read_row(&f, &more)) && more) {
        diag_hist h;
        long ep;
        if ((s = csv_long(&f, col[0], 1, 10000000, &ep))) goto done;
        h.epoch = (int)ep;
        double *dst[5] = {&h.loss, &h.acc, &h.val_loss, &h.val_acc, &h.lr};
        h.lr = NAN;
        for (int j = 1; j < 6; j++)
            if (col[j] >= 0 && (s = csv_double(&f, col[j], dst[j - 1]))) goto done;
        int dup = -1;
        for (int i = 0; i < r->n_hist; i++)
            if (r->hist[i].epoch == h.epoch) dup = i;
        if (dup >= 0) {
            diag_note(r, "%s:%d: epoch %d appears again (a resumed run?); the later row is used", path, f.line, h.epoch);
            r->hist[dup] = h;
            continue;
        }
        if (r->n_hist == cap) {
            cap *= 2;
            diag_hist *nh = realloc(r->hist, (size_t)cap * sizeof *nh);
            if (!nh) {
                s = lp_fail(LP_ERR_NOMEM, "out of memory reading %s", path);
                goto done;
            }
            r->hist = nh;
        }
        r->hist[r->n_hist++] = h;
    }
    if (s) goto done;
    torn_note(r, &f);
    qsort(r->hist, (size_t)r->n_hist, sizeof *r->hist, cmp_hist);
done:
    csv_close(&f);
    return s;
}

/* ---- valid_predictions.csv ----------------------------------------------- */
typedef struct prow {
    int epoch, line, label;
    char *path; /* into the file buffer */
} prow;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

typedef struct block {
    int start, end, epoch; /* rows [start, end) */
} block;

static lp_status load_predictions(diag_run *r) {
    csv_file f;
    prow *rows = NULL;
    double *rp = NULL;
    block *blocks = NULL;
    int *slot = NULL, *seen = NULL, *first_line = NULL;
    lp_status s = csv_open(r->dir, "valid_predictions.csv", &f);
    if (s == LP_ERR_IO && !lp_path_exists(f.path))
        s = lp_fail(LP_ERR_IO, "%s: not found; diagnose needs the validation predictions, which 'loupe train' writes when the "
                    "data has a valid/ split (or --validation-split)", f.path);
    if (!s) s = csv_read_header(&f, "epoch,path,label,p0,p1,...");
    if (s) goto done;
    const char *path = f.path;
    char **header = f.header, **fields = f.fields;
    int nf = f.n_cols, k = 0;
    if (nf >= 3 && !strcmp(header[0], "epoch") && !strcmp(header[1], "path") && !strcmp(header[2], "label")) {
        char name[32];
        while (3 + k < nf && (snprintf(name, sizeof name, "p%d", k), !strcmp(header[3 + k], name))) k++;
    }
    if (k < 2) {
        s = lp_fail(LP_ERR_FORMAT, "%s:1: header must be epoch,path,label,p0,p1,... with one p column per class (at least 2)", path);
        goto done;
    }
    if (r->k && r->k != k) {
        s = lp_fail(LP_ERR_FORMAT, "%s:1: %d probability columns (p0..p%d) but run.json lists %d classes", path, k, k - 1, r->k);
        goto done;
    }
    r->k = k;
    /* Upper bound on rows: the number of newlines. */
    size_t max_rows = 1;
    for (char *q = f.p; q < f.end; q++) max_rows += *q == '\n';
    rows = lp_malloc(max_rows * sizeof *rows);
    rp = lp_malloc(max_rows * (size_t)k * sizeof *rp);
    blocks = lp_malloc(max_rows * sizeof *blocks);
    if (!rows || !rp || !blocks) {
        s = LP_ERR_NOMEM;
        goto done;
    }
    int n_rows = 0, n_blocks = 0;
    bool more;
    while (!(s = csv_read_row(&f, &more)) && more) {
        prow *w = &rows[n_rows];
        long v;
        if ((s = csv_long(&f, 0, 1, 10000000, &v))) goto done;
        w->epoch = (int)v;
        if (!*fields[1]) {
            s = lp_fail(LP_ERR_FORMAT, "%s:%d: empty path", path, f.line);
            goto done;
        }
        w->path = fields[1];
        if ((s = csv_long(&f, 2, LONG_MIN, LONG_MAX, &v))) goto done;
        if (v < 0 || v >= k) {
            s = lp_fail(LP_ERR_FORMAT, "%s:%d: label %ld is out of range (classes 0..%d)", path, f.line, v, k - 1);
            goto done;
        }
        w->label = (int)v;
        w->line = f.line;
        double *p = rp + (size_t)n_rows * k, sum = 0;
        bool finite = true;
        for (int c = 0; c < k; c++) {
            if ((s = csv_double(&f, 3 + c, &p[c]))) goto done;
            if (!isfinite(p[c])) {
                finite = false;
                continue;
            }
            if (p[c] < -1e-6 || p[c] > 1 + 1e-6) {
                s = lp_fail(LP_ERR_FORMAT, "%s:%d: p%d = %s is not a probability (outside [0, 1])", path, f.line, c, fields[3 + c]);
                goto done;
            }
            p[c] = fmin(fmax(p[c], 0.0), 1.0);
            sum += p[c];
        }
        if (finite && fabs(sum - 1) > 0.01) {
            s = lp_fail(LP_ERR_FORMAT, "%s:%d: probabilities sum to %.4g, not 1 (expected softmax outputs)", path, f.line, sum);
            goto done;
        }
        /* Blocks of consecutive rows with one epoch; an epoch written again replaces. */
        if (n_blocks == 0 || blocks[n_blocks - 1].epoch != w->epoch) {
            if (n_blocks > 0 && w->epoch < blocks[n_blocks - 1].epoch) {
                int drop = n_blocks;
                while (drop > 0 && blocks[drop - 1].epoch >= w->epoch) drop--;
                diag_note(r, "%s:%d: epoch %d is written again after epoch %d (a resumed run?); the later rows replace the earlier ones",
                          path, f.line, w->epoch, blocks[n_blocks - 1].epoch);
                n_blocks = drop;
            }
            blocks[n_blocks++] = (block){n_rows, n_rows, w->epoch};
        }
        blocks[n_blocks - 1].end = ++n_rows;
    }
    if (s) goto done;
    torn_note(r, &f);
    if (n_blocks == 0) {
        s = lp_fail(LP_ERR_DATA, "%s: no prediction rows yet (no epoch has finished?)", path);
        goto done;
    }
    /* The first kept epoch defines the images. */
    block *b0 = &blocks[0];
    int n_img = b0->end - b0->start;
    int hcap = 1;
    while (hcap < 2 * n_img) hcap *= 2;
    slot = lp_malloc((size_t)hcap * sizeof *slot);
    seen = lp_malloc((size_t)n_img * sizeof *seen);
    first_line = lp_malloc((size_t)n_img * sizeof *first_line);
    r->paths = lp_calloc((size_t)n_img, sizeof *r->paths);
    r->labels = lp_malloc((size_t)n_img * sizeof *r->labels);
    if (!slot || !seen || !r->paths || !r->labels || !first_line) {
        s = LP_ERR_NOMEM;
        goto done;
    }
    for (int h = 0; h < hcap; h++) slot[h] = -1;
    for (int i = 0; i < n_img; i++) {
        prow *w = &rows[b0->start + i];
        uint64_t h = hash_str(w->path) & (uint64_t)(hcap - 1);
        while (slot[h] >= 0) {
            if (!strcmp(r->paths[slot[h]], w->path)) {
                s = lp_fail(LP_ERR_FORMAT, "%s:%d: '%s' appears twice in epoch %d (first at line %d)", path, w->line, w->path,
                            w->epoch, first_line[slot[h]]);
                goto done;
            }
            h = (h + 1) & (uint64_t)(hcap - 1);
        }
        slot[h] = i;
        first_line[i] = w->line;
        if (!(r->paths[i] = lp_strdup(w->path))) {
            s = LP_ERR_NOMEM;
            goto done;
        }
        r->labels[i] = w->label;
        r->n_img = i + 1;
    }
    r->ep_num = lp_malloc((size_t)n_blocks * sizeof *r->ep_num);
    r->ep_finite = lp_malloc((size_t)n_blocks * sizeof *r->ep_finite);
    r->probs = lp_malloc((size_t)n_blocks * n_img * k * sizeof *r->probs);
    if (!r->ep_num || !r->ep_finite || !r->probs) {
        s = LP_ERR_NOMEM;
        goto done;
    }
    for (int bi = 0; bi < n_blocks; bi++) {
        block *b = &blocks[bi];
        int cnt = b->end - b->start;
        bool last = bi == n_blocks - 1;
        for (int i = 0; i < n_img; i++) seen[i] = 0;
        for (int j = b->start; j < b->end; j++) {
            prow *w = &rows[j];
            uint64_t h = hash_str(w->path) & (uint64_t)(hcap - 1);
            while (slot[h] >= 0 && strcmp(r->paths[slot[h]], w->path)) h = (h + 1) & (uint64_t)(hcap - 1);
            int img = slot[h];
            if (img < 0) {
                s = lp_fail(LP_ERR_FORMAT, "%s:%d: '%s' (epoch %d) is not among epoch %d's %d images; every epoch must list the same validation images",
                            path, w->line, w->path, w->epoch, b0->epoch, n_img);
                goto done;
            }
            if (seen[img]) {
                s = lp_fail(LP_ERR_FORMAT, "%s:%d: '%s' appears twice in epoch %d (first at line %d)", path, w->line, w->path, w->epoch, seen[img]);
                goto done;
            }
            if (w->label != r->labels[img]) {
                s = lp_fail(LP_ERR_FORMAT, "%s:%d: label %d for '%s' differs from line %d (label %d)", path, w->line, w->label, w->path,
                            first_line[img], r->labels[img]);
                goto done;
            }
            seen[img] = w->line;
        }
        if (cnt != n_img) {
            if (last && cnt < n_img) {
                diag_note(r, "%s:%d-%d: epoch %d has %d of %d images (interrupted while writing?); ignored", path, rows[b->start].line,
                          rows[b->end - 1].line, b->epoch, cnt, n_img);
                break;
            }
            s = lp_fail(LP_ERR_FORMAT, "%s:%d-%d: epoch %d has %d rows but epoch %d has %d; every epoch must list the same validation images",
                        path, rows[b->start].line, rows[b->end - 1].line, b->epoch, cnt, b0->epoch, n_img);
            goto done;
        }
        int e = r->n_ep;
        r->ep_num[e] = b->epoch;
        r->ep_finite[e] = true;
        for (int j = b->start; j < b->end; j++) {
            prow *w = &rows[j];
            uint64_t h = hash_str(w->path) & (uint64_t)(hcap - 1);
            while (strcmp(r->paths[slot[h]], w->path)) h = (h + 1) & (uint64_t)(hcap - 1);
            double *dst = r->probs + ((size_t)e * n_img + slot[h]) * k, *src = rp + (size_t)j * k;
            for (int c = 0; c < k; c++) {
                dst[c] = src[c];
                if (!isfinite(src[c])) r->ep_finite[e] = false;
            }
        }
        r->n_ep++;
    }
done:
    free(rows);
    free(rp);
    free(blocks);
    free(slot);
    free(seen);
    free(first_line);
    csv_close(&f);
    return s;
}

/* ---- run.json ------------------------------------------------------------ */
static char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v) && v->valuestring && *v->valuestring) return lp_strdup(v->valuestring);
    return NULL;
}

static int json_int(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsNumber(v)) return v->valuedouble >= INT_MIN && v->valuedouble <= INT_MAX ? (int)v->valuedouble : -1;
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v) ? 1 : 0;
    return -1;
}

static int *json_counts(const cJSON *counts, const char *split, const diag_run *r) {
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(counts, split);
    if (!cJSON_IsObject(o)) return NULL;
    int *c = lp_calloc((size_t)r->k, sizeof *c);
    if (!c) return NULL;
    for (int i = 0; i < r->k; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, r->classes[i]);
        c[i] = cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= INT_MAX ? (int)v->valuedouble : 0;
    }
    return c;
}

static lp_status load_run_json(diag_run *r) {
    char *path = lp_path_join(r->dir, "run.json");
    if (!path) return LP_ERR_NOMEM;
    r->cfg.lr = NAN;
    r->cfg.batch = r->cfg.epochs = r->cfg.early_stop = r->cfg.bn_layers = r->cfg.bn_batch_stats_layers = -1;
    if (!lp_path_exists(path)) {
        diag_note(r, "%s: not found; class names, configuration and preprocessing are unknown", path);
        free(path);
        return LP_OK;
    }
    uint8_t *buf;
    size_t size;
    lp_status s = lp_read_file(path, &buf, &size);
    if (s) {
        free(path);
        return s;
    }
    cJSON *root = cJSON_ParseWithLength((const char *)buf, size);
    if (!root || !cJSON_IsObject(root)) {
        int line = 1;
        const char *err = cJSON_GetErrorPtr();
        if (root == NULL && err && err >= (const char *)buf && err <= (const char *)buf + size)
            for (const char *q = (const char *)buf; q < err; q++) line += *q == '\n';
        s = lp_fail(LP_ERR_FORMAT, "%s:%d: not a valid JSON object", path, line);
        cJSON_Delete(root);
        free(buf);
        free(path);
        return s;
    }
    r->have_run_json = true;
    const cJSON *classes = cJSON_GetObjectItemCaseSensitive(root, "classes");
    if (cJSON_IsArray(classes) && cJSON_GetArraySize(classes) >= 2) {
        int k = cJSON_GetArraySize(classes);
        r->classes = lp_calloc((size_t)k, sizeof *r->classes);
        if (!r->classes) s = LP_ERR_NOMEM;
        for (int i = 0; i < k && !s; i++) {
            const cJSON *c = cJSON_GetArrayItem(classes, i);
            char tmp[32];
            snprintf(tmp, sizeof tmp, "%d", i);
            r->classes[i] = lp_strdup(cJSON_IsString(c) && c->valuestring ? c->valuestring : tmp);
            if (!r->classes[i]) s = LP_ERR_NOMEM;
        }
        r->k = k;
    } else {
        diag_note(r, "%s: no \"classes\" list; classes are shown by index", path);
    }
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
    if (!cJSON_IsObject(cfg)) cfg = root; /* tolerate a flat file */
    r->cfg.model = json_str(cfg, "model");
    r->cfg.preprocess = json_str(cfg, "preprocess");
    r->cfg.weights = json_str(cfg, "weights");
    r->cfg.weights_preprocess = json_str(cfg, "weights_preprocess");
    r->cfg.monitor = json_str(cfg, "monitor");
    /* the data folder as an absolute path where the run has it and it is still there; else as
     * given to train (a relative one then resolves against the current folder) */
    r->cfg.data = json_str(cfg, "data_abs");
    struct stat sb;
    if (r->cfg.data && (stat(r->cfg.data, &sb) || !S_ISDIR(sb.st_mode))) free(r->cfg.data), r->cfg.data = NULL;
    if (!r->cfg.data) r->cfg.data = json_str(cfg, "data");
    const cJSON *lr = cJSON_GetObjectItemCaseSensitive(cfg, "lr");
    if (cJSON_IsNumber(lr)) r->cfg.lr = lr->valuedouble;
    r->cfg.batch = json_int(cfg, "batch");
    r->cfg.epochs = json_int(cfg, "epochs");
    r->cfg.early_stop = json_int(cfg, "early_stop");
    r->cfg.bn_layers = json_int(cfg, "bn_layers");
    r->cfg.bn_batch_stats_layers = json_int(cfg, "bn_batch_stats_layers");
    r->cfg.bn = json_str(cfg, "bn");
    const cJSON *bc = cJSON_GetObjectItemCaseSensitive(root, "bn_check");
    if (cJSON_IsObject(bc)) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(bc, "train_accuracy_train_mode"),
                    *b = cJSON_GetObjectItemCaseSensitive(bc, "train_accuracy_inference_mode"),
                    *l = cJSON_GetObjectItemCaseSensitive(bc, "train_loss_inference_mode");
        r->bn_check_epoch = json_int(bc, "epoch");
        r->bn_check_images = json_int(bc, "images");
        r->have_bn_check = cJSON_IsNumber(a) && cJSON_IsNumber(b) && r->bn_check_images > 0 && a->valuedouble >= 0 &&
                           a->valuedouble <= 1 && b->valuedouble >= 0 && b->valuedouble <= 1;
        if (r->have_bn_check) {
            r->bn_acc_train_mode = a->valuedouble, r->bn_acc_inference = b->valuedouble;
            r->bn_loss_inference = cJSON_IsNumber(l) ? l->valuedouble : NAN;
        } else {
            diag_note(r, "%s: bn_check is incomplete or out of range; not used", path);
        }
    }
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(root, "counts");
    if (r->classes && cJSON_IsObject(counts)) {
        r->train_counts = json_counts(counts, "train", r);
        r->valid_counts = json_counts(counts, "valid", r);
    }
    cJSON_Delete(root);
    free(buf);
    free(path);
    return s;
}

lp_status diag_run_load(const char *dir, diag_run *r) {
    memset(r, 0, sizeof *r);
    if (!lp_is_dir(dir)) return lp_fail(LP_ERR_IO, "%s: not a directory; give the run directory written by 'loupe train --run'", dir);
    r->dir = lp_strdup(dir);
    if (!r->dir) return LP_ERR_NOMEM;
    lp_status s = load_run_json(r);
    if (!s) s = load_history(r);
    if (!s) s = load_predictions(r);
    if (!s && !r->classes) {
        r->classes = lp_calloc((size_t)r->k, sizeof *r->classes);
        if (!r->classes) return LP_ERR_NOMEM;
        for (int c = 0; c < r->k; c++) {
            char tmp[32];
            snprintf(tmp, sizeof tmp, "%d", c);
            if (!(r->classes[c] = lp_strdup(tmp))) return LP_ERR_NOMEM;
        }
    }
    return s;
}

void diag_run_free(diag_run *r) {
    if (r->classes)
        for (int c = 0; c < r->k; c++) free(r->classes[c]);
    free(r->classes);
    free(r->cfg.model), free(r->cfg.preprocess), free(r->cfg.weights);
    free(r->cfg.weights_preprocess), free(r->cfg.monitor), free(r->cfg.data), free(r->cfg.bn);
    free(r->train_counts), free(r->valid_counts);
    free(r->hist);
    if (r->paths)
        for (int i = 0; i < r->n_img; i++) free(r->paths[i]);
    free(r->paths), free(r->labels), free(r->ep_num), free(r->ep_finite), free(r->probs);
    for (int i = 0; i < r->n_notes; i++) free(r->notes[i]);
    free(r->notes);
    free(r->dir);
    memset(r, 0, sizeof *r);
}
