/* Batches from a split: an endless stream of passes, each in the order of
 * lp_rng_permutation(seed, pass) (or sorted order), decoded by a pool of
 * worker threads into one of two buffers while the caller uses the other
 * (double buffering). Every random draw is a function of (seed, pass, sample),
 * so batches are the same on any number of threads. Decoded+resized images are
 * cached (u8) when the whole split fits the budget: after the first pass no
 * file is read again. */
#include "data/data_internal.h"
#include "data/transform.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lp_buf {
    float *x;
    int *labels, *indices;
    int n;
    int global_n, offset; /* the whole batch's size and the slice's start (sharded) */
    bool filled;          /* holds batch (pass, bip), or is being filled with it */
    int64_t pass;
    int bip;
    lp_status status;
    int err_item; /* smallest failing item (deterministic message) */
    char err[1024];
} lp_buf;

struct lp_loader {
    const lp_split *split;
    lp_loader_config cfg;
    int n, bpp;
    size_t elems; /* H*W*C */
    int64_t pass;
    int bip;
    int *perm;
    int64_t perm_pass; /* pass whose order perm holds (-1: none) */
    lp_buf bufs[2];
    bool augment;
    /* cache */
    uint8_t *cache;
    uint8_t *cached;
    int64_t decodes;
    /* pool */
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    bool quit;
    int job_buf;     /* -1: no job */
    int job_next, job_done;
};

static void order_for_pass(lp_loader *l, int64_t pass) {
    if (l->perm_pass == pass) return;
    if (l->cfg.shuffle) lp_rng_permutation(l->cfg.seed, (uint64_t)pass, l->perm, l->n);
    else
        for (int i = 0; i < l->n; i++) l->perm[i] = i;
    l->perm_pass = pass;
}

/* Produces item i of buffer b. Called without the lock. */
static lp_status do_item(lp_loader *l, lp_buf *b, int i, int64_t *decoded) {
    const lp_loader_config *c = &l->cfg;
    int idx = b->indices[i];
    const lp_sample *smp = &l->split->samples[idx];
    uint8_t *img = NULL, *own = NULL;
    lp_status s = LP_OK;
    if (l->cache && l->cached[idx]) {
        img = l->cache + (size_t)idx * l->elems;
    } else {
        img = l->cache ? l->cache + (size_t)idx * l->elems : (own = lp_malloc(l->elems));
        if (!img) return LP_ERR_NOMEM;
        uint8_t *buf;
        size_t n;
        s = lp_read_file(smp->path, &buf, &n);
        if (!s) {
            s = lp_prepare_image(buf, n, c, img);
            free(buf);
            if (s) lp_fail_context(s, "%s", smp->path);
        }
        if (s) {
            free(own);
            return s;
        }
        (*decoded)++;
        if (l->cache) l->cached[idx] = 1;
    }
    float *x = b->x + (size_t)i * l->elems;
    if (l->augment) {
        float *tmp = lp_malloc(l->elems * sizeof(float));
        if (!tmp) {
            free(own);
            return LP_ERR_NOMEM;
        }
        lp_aug_params p;
        lp_augment_params_draw(&c->augment, c->height, c->width, c->seed, ((uint64_t)b->pass << 32) ^ (uint64_t)idx, &p);
        lp_augment_apply(img, c->height, c->width, c->channels, &p, tmp);
        lp_preprocess_apply(NULL, tmp, c->height, c->width, c->channels, c->preprocess, x);
        free(tmp);
    } else {
        lp_preprocess_apply(img, NULL, c->height, c->width, c->channels, c->preprocess, x);
    }
    free(own);
    return LP_OK;
}

static void *worker(void *arg) {
    lp_loader *l = arg;
    lp_thread_unpin();
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && (l->job_buf < 0 || l->job_next >= l->bufs[l->job_buf].n)) pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->quit) break;
        lp_buf *b = &l->bufs[l->job_buf];
        int i = l->job_next++;
        pthread_mutex_unlock(&l->mu);
        int64_t dec = 0;
        lp_status s = do_item(l, b, i, &dec);
        char msg[sizeof b->err];
        if (s) snprintf(msg, sizeof msg, "%s", lp_errmsg());
        pthread_mutex_lock(&l->mu);
        l->decodes += dec;
        if (s && (b->status == LP_OK || i < b->err_item)) {
            b->status = s;
            b->err_item = i;
            memcpy(b->err, msg, sizeof msg);
        }
        if (++l->job_done == b->n) {
            l->job_buf = -1;
            pthread_cond_broadcast(&l->cv_done);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Waits until no job runs (lock held by caller). */
static void wait_idle(lp_loader *l) {
    while (l->job_buf >= 0) pthread_cond_wait(&l->cv_done, &l->mu);
}

/* Starts filling buffer bi with batch (pass, bip) (lock held, no job running). */
static void submit(lp_loader *l, int bi, int64_t pass, int bip) {
    lp_buf *b = &l->bufs[bi];
    order_for_pass(l, pass);
    int start = bip * l->cfg.batch;
    int n = l->n - start < l->cfg.batch ? l->n - start : l->cfg.batch;
    b->global_n = n;
    b->offset = 0;
    if (l->cfg.shards > 1) { /* contiguous slices; an uneven batch splits unevenly */
        const int lo = (int)((int64_t)n * l->cfg.shard / l->cfg.shards), hi = (int)((int64_t)n * (l->cfg.shard + 1) / l->cfg.shards);
        start += lo;
        b->offset = lo;
        n = hi - lo;
    }
    b->n = n;
    b->filled = true;
    b->pass = pass;
    b->bip = bip;
    b->status = LP_OK;
    b->err_item = n;
    b->err[0] = 0;
    for (int i = 0; i < n; i++) {
        b->indices[i] = l->perm[start + i];
        b->labels[i] = l->split->samples[b->indices[i]].label;
    }
    l->job_buf = n > 0 ? bi : -1; /* an empty slice is ready as it is */
    l->job_next = 0;
    l->job_done = 0;
    if (n > 0) pthread_cond_broadcast(&l->cv_work);
}

void lp_loader_free(lp_loader *l) {
    if (!l) return;
    if (l->threads) {
        pthread_mutex_lock(&l->mu);
        wait_idle(l);
        l->quit = true;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < l->nthreads; i++) pthread_join(l->threads[i], NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_done);
    }
    free(l->threads);
    for (int i = 0; i < 2; i++) {
        free(l->bufs[i].x);
        free(l->bufs[i].labels);
        free(l->bufs[i].indices);
    }
    free(l->perm);
    free(l->cache);
    free(l->cached);
    free(l);
}

lp_status lp_loader_create(const lp_split *split, const lp_loader_config *cfg, lp_loader **out) {
    *out = NULL;
    if (!split || !cfg) return lp_fail(LP_ERR_ARG, "loader: no split or config");
    if (cfg->batch < 1) return lp_fail(LP_ERR_ARG, "batch size %d: must be at least 1", cfg->batch);
    if (cfg->height < 1 || cfg->width < 1 || (int64_t)cfg->height * cfg->width > (1 << 26))
        return lp_fail(LP_ERR_ARG, "image size %dx%d: out of range", cfg->width, cfg->height);
    if (cfg->channels != 1 && cfg->channels != 3) return lp_fail(LP_ERR_ARG, "channels %d: use 3 (rgb) or 1 (grayscale)", cfg->channels);
    if ((unsigned)cfg->preprocess > LP_PRE_TF) return lp_fail(LP_ERR_ARG, "unknown preprocessing mode %d", (int)cfg->preprocess);
    if ((unsigned)cfg->interp > LP_INTERP_BILINEAR) return lp_fail(LP_ERR_ARG, "unknown interpolation %d", (int)cfg->interp);
    const lp_augment *a = &cfg->augment;
    if (a->rotation_range < 0 || a->width_shift_range < 0 || a->height_shift_range < 0 || a->zoom_range < 0 ||
        a->zoom_range >= 1 || a->brightness_lo < 0 || a->brightness_hi < a->brightness_lo)
        return lp_fail(LP_ERR_ARG, "augmentation: ranges must be >= 0, zoom < 1, brightness lo <= hi");
    if (split->num_samples < 1) return lp_fail(LP_ERR_DATA, "split '%s' has no images", split->name);
    lp_loader *l = lp_calloc(1, sizeof *l);
    if (!l) return LP_ERR_NOMEM;
    l->split = split;
    l->cfg = *cfg;
    l->n = split->num_samples;
    l->bpp = (l->n + cfg->batch - 1) / cfg->batch;
    l->elems = (size_t)cfg->height * cfg->width * cfg->channels;
    l->perm_pass = -1;
    l->job_buf = -1;
    l->augment = lp_augment_active(a);
    l->perm = lp_malloc(sizeof(int) * (size_t)l->n);
    if (!l->perm) goto nomem;
    for (int i = 0; i < 2; i++) {
        l->bufs[i].x = lp_aligned_alloc(sizeof(float) * l->elems * (size_t)cfg->batch);
        l->bufs[i].labels = lp_malloc(sizeof(int) * (size_t)cfg->batch);
        l->bufs[i].indices = lp_malloc(sizeof(int) * (size_t)cfg->batch);
        if (!l->bufs[i].x || !l->bufs[i].labels || !l->bufs[i].indices) goto nomem;
    }
    int64_t budget = cfg->cache_max_bytes > 0 ? cfg->cache_max_bytes : ((int64_t)2 << 30);
    if (cfg->cache && (int64_t)l->elems * l->n <= budget) {
        l->cache = malloc(l->elems * (size_t)l->n); /* pages are touched only when filled */
        l->cached = calloc((size_t)l->n, 1);
        if (!l->cache || !l->cached) { /* no cache is not an error */
            free(l->cache);
            free(l->cached);
            l->cache = l->cached = NULL;
        }
    }
    l->nthreads = cfg->workers > 0 ? cfg->workers : lp_data_auto_workers(true);
    if (l->nthreads > 64) l->nthreads = 64;
    l->threads = lp_calloc((size_t)l->nthreads, sizeof(pthread_t));
    if (!l->threads) goto nomem;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    int started = 0;
    for (int i = 0; i < l->nthreads; i++) {
        if (pthread_create(&l->threads[i], NULL, worker, l) != 0) break;
        started++;
    }
    if (started == 0) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_done);
        free(l->threads);
        l->threads = NULL;
        lp_loader_free(l);
        return lp_fail(LP_ERR_NOMEM, "loader: cannot start worker threads");
    }
    l->nthreads = started;
    *out = l;
    return LP_OK;
nomem:
    lp_loader_free(l);
    return lp_fail(LP_ERR_NOMEM, "loader: out of memory");
}

int lp_loader_batches_per_pass(const lp_loader *l) { return l->bpp; }

lp_status lp_loader_seek(lp_loader *l, int64_t pass, int batch_in_pass) {
    if (pass < 0 || batch_in_pass < 0 || batch_in_pass >= l->bpp)
        return lp_fail(LP_ERR_ARG, "loader seek (%lld, %d): out of range (batches per pass: %d)", (long long)pass,
                       batch_in_pass, l->bpp);
    l->pass = pass;
    l->bip = batch_in_pass;
    return LP_OK;
}

void lp_loader_position(const lp_loader *l, int64_t *pass, int *batch_in_pass) {
    if (pass) *pass = l->pass;
    if (batch_in_pass) *batch_in_pass = l->bip;
}

/* Whether buffer b holds batch (pass, bip): without shuffling and augmentation
 * every pass is the same, so only the batch number counts. */
static bool holds(const lp_loader *l, const lp_buf *b, int64_t pass, int bip) {
    return b->filled && b->bip == bip && (b->pass == pass || (!l->cfg.shuffle && !l->augment));
}

lp_status lp_loader_next(lp_loader *l, lp_batch *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&l->mu);
    int cancelled = -1;
    if (l->job_buf >= 0 && !holds(l, &l->bufs[l->job_buf], l->pass, l->bip)) {
        /* a seek made the running prefetch useless: skip its unclaimed items */
        lp_buf *jb = &l->bufs[l->job_buf];
        l->job_done += jb->n - l->job_next;
        l->job_next = jb->n;
        cancelled = l->job_buf;
        if (l->job_done == jb->n) l->job_buf = -1;
    }
    wait_idle(l);
    if (cancelled >= 0) l->bufs[cancelled].n = 0, l->bufs[cancelled].filled = false;
    int bi = -1;
    for (int i = 0; i < 2; i++)
        if (holds(l, &l->bufs[i], l->pass, l->bip) && l->bufs[i].status == LP_OK) bi = i;
    if (bi < 0) { /* not prefetched (first call, after a seek or an error): fill buffer 0 now */
        bi = 0;
        submit(l, bi, l->pass, l->bip);
        wait_idle(l);
    }
    lp_buf *b = &l->bufs[bi];
    if (b->status) {
        lp_status s = b->status;
        char msg[sizeof b->err];
        memcpy(msg, b->err, sizeof msg);
        b->n = 0, b->filled = false; /* retry decodes again */
        pthread_mutex_unlock(&l->mu);
        return lp_fail(s, "%s", msg);
    }
    if (++l->bip == l->bpp) {
        l->bip = 0;
        l->pass++;
    }
    submit(l, 1 - bi, l->pass, l->bip); /* prefetch the next batch */
    pthread_mutex_unlock(&l->mu);
    out->n = b->n;
    out->x = b->x;
    out->labels = b->labels;
    out->indices = b->indices;
    out->global_n = b->global_n;
    out->offset = b->offset;
    return LP_OK;
}

int64_t lp_loader_decode_count(const lp_loader *l) {
    lp_loader *m = (lp_loader *)l;
    pthread_mutex_lock(&m->mu);
    int64_t d = m->decodes;
    pthread_mutex_unlock(&m->mu);
    return d;
}
