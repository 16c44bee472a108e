/* What `loupe data` prints: counts per split and class, formats, modes and
 * sizes seen, imbalance, duplicate files (same bytes), bad and ignored files. */
#include "data/scan_internal.h"
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *split_keys[3] = {"train", "valid", "test"};

/* ---- counting helpers ------------------------------------------------------ */
typedef struct kc {
    char key[32];
    int count;
} kc;
typedef struct kc_list {
    kc *v;
    int n, cap;
} kc_list;

static void kc_add(kc_list *l, const char *key) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->v[i].key, key) == 0) {
            l->v[i].count++;
            return;
        }
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 16;
        kc *v = realloc(l->v, sizeof(kc) * (size_t)nc);
        if (!v) return;
        l->v = v;
        l->cap = nc;
    }
    snprintf(l->v[l->n].key, sizeof l->v[l->n].key, "%s", key);
    l->v[l->n++].count = 1;
}
static int kc_cmp(const void *a, const void *b) {
    const kc *x = a, *y = b;
    if (x->count != y->count) return y->count - x->count;
    return strcmp(x->key, y->key);
}

typedef struct split_stats {
    kc_list formats, modes, sizes;
    int minw, minh, maxw, maxh;
    double imbalance; /* largest / smallest class (0 when a class is empty) */
} split_stats;

static void stats_of(const lp_split_ext *e, split_stats *st) {
    memset(st, 0, sizeof *st);
    int64_t mina = -1, maxa = -1;
    for (int i = 0; i < e->s.num_samples; i++) {
        const lp_sample_meta *m = &e->meta[i];
        kc_add(&st->formats, lp_image_format_name(m->format));
        if (m->width > 0) {
            char b[32];
            kc_add(&st->modes, m->mode[0] ? m->mode : "?");
            snprintf(b, sizeof b, "%dx%d", m->width, m->height);
            kc_add(&st->sizes, b);
            int64_t a = (int64_t)m->width * m->height;
            if (mina < 0 || a < mina) {
                mina = a;
                st->minw = m->width;
                st->minh = m->height;
            }
            if (a > maxa) {
                maxa = a;
                st->maxw = m->width;
                st->maxh = m->height;
            }
        }
    }
    if (st->formats.n) qsort(st->formats.v, (size_t)st->formats.n, sizeof(kc), kc_cmp);
    if (st->modes.n) qsort(st->modes.v, (size_t)st->modes.n, sizeof(kc), kc_cmp);
    if (st->sizes.n) qsort(st->sizes.v, (size_t)st->sizes.n, sizeof(kc), kc_cmp);
    int lo = -1, hi = 0;
    for (int k = 0; k < e->s.num_classes; k++) {
        int c = e->s.class_counts[k];
        if (lo < 0 || c < lo) lo = c;
        if (c > hi) hi = c;
    }
    st->imbalance = lo > 0 ? (double)hi / lo : 0;
}
static void stats_free(split_stats *st) {
    free(st->formats.v);
    free(st->modes.v);
    free(st->sizes.v);
}

/* ---- duplicates ---------------------------------------------------------------- */
typedef struct dup_ref {
    uint64_t hash;
    int64_t size;
    int split, index;
} dup_ref;
static int dup_cmp(const void *a, const void *b) {
    const dup_ref *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    if (x->size != y->size) return x->size < y->size ? -1 : 1;
    if (x->split != y->split) return x->split - y->split;
    return x->index - y->index;
}
typedef enum { DUP_WITHIN, DUP_ACROSS, DUP_CONFLICT } dup_kind;
typedef struct dup_group {
    int start, count;
    bool across, conflict;
} dup_group;

static int find_dups(const lp_dataset *d, dup_ref **refs_out, dup_group **groups_out) {
    int n = 0;
    for (int s = 0; s < 3; s++)
        if (d->splits[s]) n += d->splits[s]->s.num_samples;
    dup_ref *r = malloc(sizeof(dup_ref) * (size_t)(n ? n : 1));
    dup_group *g = malloc(sizeof(dup_group) * (size_t)(n ? n : 1));
    *refs_out = r;
    *groups_out = g;
    if (!r || !g) return 0;
    int k = 0;
    for (int s = 0; s < 3; s++) {
        if (!d->splits[s]) continue;
        for (int i = 0; i < d->splits[s]->s.num_samples; i++) {
            const lp_sample_meta *m = &d->splits[s]->meta[i];
            if (m->hash == 0) continue;
            r[k++] = (dup_ref){m->hash, m->size, s, i};
        }
    }
    if (k) qsort(r, (size_t)k, sizeof(dup_ref), dup_cmp);
    int ng = 0;
    for (int i = 0; i < k;) {
        int j = i + 1;
        while (j < k && r[j].hash == r[i].hash && r[j].size == r[i].size) j++;
        if (j - i > 1) {
            dup_group grp = {i, j - i, false, false};
            for (int t = i + 1; t < j; t++) {
                if (r[t].split != r[i].split) grp.across = true;
                const char *a = d->splits[r[i].split]->s.class_names[d->splits[r[i].split]->s.samples[r[i].index].label];
                const char *b = d->splits[r[t].split]->s.class_names[d->splits[r[t].split]->s.samples[r[t].index].label];
                if (strcmp(a, b) != 0) grp.conflict = true;
            }
            g[ng++] = grp;
        }
        i = j;
    }
    return ng;
}
static const char *ref_path(const lp_dataset *d, const dup_ref *r) { return d->splits[r->split]->s.samples[r->index].relpath; }

void lp_dataset_duplicates(const lp_dataset *d, int *groups, int *across, int *conflicts) {
    dup_ref *refs;
    dup_group *g;
    *groups = find_dups(d, &refs, &g), *across = *conflicts = 0;
    for (int i = 0; i < *groups; i++) *across += g[i].across, *conflicts += g[i].conflict;
    free(refs);
    free(g);
}

/* ---- JSON ------------------------------------------------------------------------ */
lp_status lp_dataset_report_json(const lp_dataset *d, char **json) {
    *json = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return lp_fail(LP_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(root, "data_dir", d->dir);
    cJSON *splits = cJSON_AddObjectToObject(root, "splits");
    int total_bad = 0;
    for (int s = 0; s < 3; s++) {
        const lp_split_ext *e = d->splits[s];
        if (!e) continue;
        split_stats st;
        stats_of(e, &st);
        cJSON *o = cJSON_AddObjectToObject(splits, split_keys[s]);
        cJSON_AddStringToObject(o, "dir", s == 1 ? (d->valid_dir[0] ? d->valid_dir : "train") : split_keys[s]);
        cJSON_AddBoolToObject(o, "from_validation_split", e->from_validation_split);
        cJSON_AddNumberToObject(o, "num_images", e->s.num_samples);
        cJSON_AddNumberToObject(o, "num_classes", e->s.num_classes);
        cJSON *cl = cJSON_AddObjectToObject(o, "classes");
        cJSON *order = cJSON_AddArrayToObject(o, "class_order");
        for (int k = 0; k < e->s.num_classes; k++) {
            cJSON_AddNumberToObject(cl, e->s.class_names[k], e->s.class_counts[k]);
            cJSON_AddItemToArray(order, cJSON_CreateString(e->s.class_names[k]));
        }
        cJSON_AddNumberToObject(o, "imbalance", st.imbalance);
        cJSON *bad = cJSON_AddArrayToObject(o, "bad");
        for (int i = 0; i < e->s.num_bad; i++) {
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "path", e->s.bad[i].relpath);
            cJSON_AddStringToObject(b, "reason", e->s.bad[i].reason);
            cJSON_AddItemToArray(bad, b);
        }
        total_bad += e->s.num_bad;
        cJSON_AddNumberToObject(o, "ignored", e->s.num_ignored);
        cJSON *ig = cJSON_AddObjectToObject(o, "ignored_detail");
        cJSON_AddNumberToObject(ig, "hidden", e->ignored_hidden);
        cJSON_AddNumberToObject(ig, "symlinks", e->ignored_symlink);
        cJSON_AddNumberToObject(ig, "not_images", e->ignored_nonimage);
        cJSON_AddNumberToObject(ig, "other", e->ignored_other);
        cJSON *f = cJSON_AddObjectToObject(o, "formats");
        for (int i = 0; i < st.formats.n; i++) cJSON_AddNumberToObject(f, st.formats.v[i].key, st.formats.v[i].count);
        cJSON *m = cJSON_AddObjectToObject(o, "modes");
        for (int i = 0; i < st.modes.n; i++) cJSON_AddNumberToObject(m, st.modes.v[i].key, st.modes.v[i].count);
        cJSON *sz = cJSON_AddObjectToObject(o, "sizes");
        for (int i = 0; i < st.sizes.n && i < 50; i++) cJSON_AddNumberToObject(sz, st.sizes.v[i].key, st.sizes.v[i].count);
        cJSON_AddNumberToObject(o, "distinct_sizes", st.sizes.n);
        if (st.maxw) {
            int mn[2] = {st.minw, st.minh}, mx[2] = {st.maxw, st.maxh};
            cJSON_AddItemToObject(o, "min_size", cJSON_CreateIntArray(mn, 2));
            cJSON_AddItemToObject(o, "max_size", cJSON_CreateIntArray(mx, 2));
        }
        stats_free(&st);
    }
    dup_ref *refs;
    dup_group *groups;
    int ng = find_dups(d, &refs, &groups);
    cJSON *dups = cJSON_AddArrayToObject(root, "duplicates");
    int n_across = 0;
    for (int i = 0; i < ng; i++) {
        cJSON *g = cJSON_CreateObject();
        cJSON_AddBoolToObject(g, "across_splits", groups[i].across);
        cJSON_AddBoolToObject(g, "conflicting_classes", groups[i].conflict);
        cJSON *p = cJSON_AddArrayToObject(g, "paths");
        for (int t = 0; t < groups[i].count; t++)
            cJSON_AddItemToArray(p, cJSON_CreateString(ref_path(d, &refs[groups[i].start + t])));
        cJSON_AddItemToArray(dups, g);
        n_across += groups[i].across;
    }
    free(refs);
    free(groups);
    cJSON_AddNumberToObject(root, "num_bad", total_bad);
    cJSON_AddNumberToObject(root, "num_duplicates_across_splits", n_across);
    cJSON *pr = cJSON_AddArrayToObject(root, "problems");
    for (int i = 0; i < d->num_problems; i++) cJSON_AddItemToArray(pr, cJSON_CreateString(d->problems[i]));
    cJSON *no = cJSON_AddArrayToObject(root, "notes");
    for (int i = 0; i < d->num_notes; i++) cJSON_AddItemToArray(no, cJSON_CreateString(d->notes[i]));
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt) return lp_fail(LP_ERR_NOMEM, "out of memory (JSON report)");
    /* cJSON allocates with malloc by default: the caller frees with free() */
    *json = txt;
    return LP_OK;
}

/* ---- text ------------------------------------------------------------------------ */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;
static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t nc = (b->cap ? b->cap * 2 : 4096);
        while (nc < b->n + (size_t)k + 1) nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

static void kc_line(sbuf *b, const char *label, const kc_list *l, int max) {
    if (!l->n) return;
    sb_printf(b, "  %s:", label);
    for (int i = 0; i < l->n && i < max; i++) sb_printf(b, "%s %s (%d)", i ? "," : "", l->v[i].key, l->v[i].count);
    if (l->n > max) sb_printf(b, ", ... %d more", l->n - max);
    sb_printf(b, "\n");
}

/* Characters of a UTF-8 string (its continuation bytes not counted): the columns it takes in
 * a terminal for the scripts class names are usually in. */
static int text_width(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

lp_status lp_dataset_report_text(const lp_dataset *d, char **text) {
    *text = NULL;
    sbuf b = {0};
    sb_printf(&b, "Dataset %s\n", d->dir);
    int total_bad = 0;
    for (int s = 0; s < 3; s++) {
        const lp_split_ext *e = d->splits[s];
        if (!e) continue;
        split_stats st;
        stats_of(e, &st);
        const char *dir = s == 1 ? (e->from_validation_split ? "valid (split from train/)" : d->valid_dir) : split_keys[s];
        sb_printf(&b, "\n%s: Found %d images belonging to %d classes.\n", dir, e->s.num_samples, e->s.num_classes);
        int w = 5;
        for (int k = 0; k < e->s.num_classes; k++)
            if (text_width(e->s.class_names[k]) > w) w = text_width(e->s.class_names[k]);
        for (int k = 0; k < e->s.num_classes; k++) /* padded by characters, not bytes: names are UTF-8 */
            sb_printf(&b, "  %d %s%*s %6d  (%.1f%%)\n", k, e->s.class_names[k], w - text_width(e->s.class_names[k]), "",
                      e->s.class_counts[k], e->s.num_samples ? 100.0 * e->s.class_counts[k] / e->s.num_samples : 0.0);
        if (st.imbalance > 0)
            sb_printf(&b, "  imbalance: %.2f (largest / smallest class)%s\n", st.imbalance,
                      st.imbalance >= 3 ? "  <- consider class weights or resampling" : "");
        kc_line(&b, "formats", &st.formats, 8);
        kc_line(&b, "modes", &st.modes, 8);
        kc_line(&b, "sizes", &st.sizes, 5);
        if (st.maxw) sb_printf(&b, "  smallest %dx%d, largest %dx%d\n", st.minw, st.minh, st.maxw, st.maxh);
        if (e->s.num_ignored) {
            sb_printf(&b, "  ignored: %d (", e->s.num_ignored);
            const char *sep = "";
            if (e->ignored_hidden) sb_printf(&b, "%shidden %d", sep, e->ignored_hidden), sep = ", ";
            if (e->ignored_nonimage) sb_printf(&b, "%snot images %d", sep, e->ignored_nonimage), sep = ", ";
            if (e->ignored_symlink) /* not followed (the default), or broken or looping when followed */
                sb_printf(&b, "%ssymlinks %d (not followed, broken or looping; see --follow-symlinks)", sep, e->ignored_symlink), sep = ", ";
            if (e->ignored_other) sb_printf(&b, "%sother %d", sep, e->ignored_other);
            sb_printf(&b, ")\n");
        }
        if (e->s.num_bad) {
            sb_printf(&b, "  bad files: %d\n", e->s.num_bad);
            for (int i = 0; i < e->s.num_bad; i++) sb_printf(&b, "    %s: %s\n", e->s.bad[i].relpath, e->s.bad[i].reason);
        }
        total_bad += e->s.num_bad;
        stats_free(&st);
    }
    dup_ref *refs;
    dup_group *groups;
    int ng = find_dups(d, &refs, &groups);
    int n_across = 0, n_conflict = 0;
    for (int i = 0; i < ng; i++) {
        n_across += groups[i].across;
        n_conflict += groups[i].conflict;
    }
    if (ng) {
        sb_printf(&b, "\nduplicates (same bytes): %d group(s), %d across splits (a leak between training and evaluation), "
                      "%d with different classes\n", ng, n_across, n_conflict);
        int shown = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < ng; i++) {
                bool important = groups[i].across || groups[i].conflict;
                if ((pass == 0) != important || shown >= 20) continue;
                sb_printf(&b, "  %s", groups[i].across ? "across: " : groups[i].conflict ? "classes:" : "within: ");
                for (int t = 0; t < groups[i].count; t++)
                    sb_printf(&b, "%s%s", t ? " = " : " ", ref_path(d, &refs[groups[i].start + t]));
                sb_printf(&b, "\n");
                shown++;
            }
        if (shown < ng) sb_printf(&b, "  ... %d more (see --json)\n", ng - shown);
    }
    free(refs);
    free(groups);
    if (d->num_problems) {
        sb_printf(&b, "\nproblems:\n");
        for (int i = 0; i < d->num_problems; i++) sb_printf(&b, "  %s\n", d->problems[i]);
    }
    if (d->num_notes) {
        sb_printf(&b, "\nnotes:\n");
        for (int i = 0; i < d->num_notes; i++) sb_printf(&b, "  %s\n", d->notes[i]);
    }
    sb_printf(&b, "\n%d bad file(s), %d problem(s)\n", total_bad, d->num_problems);
    if (b.oom) {
        free(b.p);
        return lp_fail(LP_ERR_NOMEM, "out of memory (report)");
    }
    *text = b.p;
    return LP_OK;
}
