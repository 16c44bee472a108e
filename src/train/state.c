/* Train-loop state to/from JSON (for --resume), the run-directory lock, and
 * small helpers shared by evaluate and predict. */
#include "io/checkpoint.h"
#include "train/train.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* JSON has no infinity: store +-inf as strings. */
static void put_num(cJSON *o, const char *k, double v) {
    if (isinf(v)) cJSON_AddStringToObject(o, k, v > 0 ? "inf" : "-inf");
    else if (isnan(v)) cJSON_AddStringToObject(o, k, "nan");
    else cJSON_AddNumberToObject(o, k, v);
}

static bool get_num(const cJSON *o, const char *k, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsNumber(it)) {
        *v = it->valuedouble;
        return true;
    }
    if (cJSON_IsString(it)) {
        if (!strcmp(it->valuestring, "inf")) *v = INFINITY;
        else if (!strcmp(it->valuestring, "-inf")) *v = -INFINITY;
        else *v = NAN;
        return true;
    }
    return false;
}

char *lp_train_state_to_json(const lp_train_state *s) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    put_num(o, "epochs_done", s->epochs_done);
    put_num(o, "step_in_epoch", s->step_in_epoch);
    put_num(o, "global_step", (double)s->global_step);
    put_num(o, "loader_pass", (double)s->loader_pass);
    put_num(o, "loader_batch", s->loader_batch);
    put_num(o, "lr", s->lr);
    put_num(o, "loss_sum", s->loss_sum);
    put_num(o, "correct", s->correct);
    put_num(o, "seen", s->seen);
    put_num(o, "monitor_best", s->monitor.best);
    put_num(o, "monitor_best_epoch", s->monitor.best_epoch);
    put_num(o, "early_best", s->early.best);
    put_num(o, "early_best_epoch", s->early.best_epoch);
    put_num(o, "early_wait", s->early.wait);
    put_num(o, "reduce_best", s->reduce.best);
    put_num(o, "reduce_wait", s->reduce.wait);
    put_num(o, "reduce_cooldown", s->reduce.cooldown_counter);
    put_num(o, "nan_skipped", (double)s->nan_skipped);
    put_num(o, "nan_skipped_epoch", s->nan_skipped_epoch);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return txt;
}

lp_status lp_train_state_from_json(const char *json, lp_train_state *s) {
    cJSON *o = cJSON_Parse(json);
    if (!o) return lp_fail(LP_ERR_FORMAT, "train_state metadata is not valid JSON");
    double v[17];
    const char *keys[17] = {"epochs_done", "step_in_epoch", "global_step", "loader_pass", "loader_batch", "lr",
                            "loss_sum", "correct", "seen", "monitor_best", "monitor_best_epoch", "early_best",
                            "early_best_epoch", "early_wait", "reduce_best", "reduce_wait", "reduce_cooldown"};
    for (int i = 0; i < 17; i++)
        if (!get_num(o, keys[i], &v[i])) {
            cJSON_Delete(o);
            return lp_fail(LP_ERR_FORMAT, "train_state metadata lacks '%s'", keys[i]);
        }
    /* optional (absent in checkpoints written before --on-nan): none skipped */
    double skipped = 0, skipped_epoch = 0;
    get_num(o, "nan_skipped", &skipped);
    get_num(o, "nan_skipped_epoch", &skipped_epoch);
    cJSON_Delete(o);
    s->nan_skipped = skipped >= 0 && skipped < 1e15 ? (int64_t)skipped : 0;
    s->nan_skipped_epoch = skipped_epoch >= 0 && skipped_epoch < 1e9 ? (int)skipped_epoch : 0;
    s->epochs_done = (int)v[0];
    s->step_in_epoch = (int)v[1];
    s->global_step = (int64_t)v[2];
    s->loader_pass = (int64_t)v[3];
    s->loader_batch = (int)v[4];
    s->lr = v[5];
    s->loss_sum = v[6];
    s->correct = v[7];
    s->seen = v[8];
    s->monitor.best = v[9];
    s->monitor.best_epoch = (int)v[10];
    s->early.best = v[11];
    s->early.best_epoch = (int)v[12];
    s->early.wait = (int)v[13];
    s->reduce.best = v[14];
    s->reduce.wait = (int)v[15];
    s->reduce.cooldown_counter = (int)v[16];
    return LP_OK;
}

/* RUN/lock is held with flock(): the kernel drops it when its owner exits or is
 * killed, so a stale file never blocks and two starters can never both hold it
 * (the pid in the file is only for the message). */
struct lp_runlock {
    int fd;
    char *path;
};

lp_status lp_run_lock(const char *run_dir, lp_runlock **out) {
    *out = NULL;
    char *path = lp_path_join(run_dir, "lock");
    if (!path) return LP_ERR_NOMEM;
    lp_status s = LP_OK;
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            s = lp_fail(LP_ERR_IO, "%s: cannot create lock file (%s)", path, strerror(errno));
            break;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char buf[32] = "";
            ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
            buf[n > 0 ? n : 0] = 0;
            long pid = strtol(buf, NULL, 10);
            close(fd);
            if (e != EWOULDBLOCK) {
                s = lp_fail(LP_ERR_IO, "%s: cannot lock (%s)", path, strerror(e));
            } else {
                char who[48] = "";
                if (pid > 0) snprintf(who, sizeof who, " (pid %ld)", pid);
                s = lp_fail(LP_ERR_LOCKED, "%s is in use by another loupe process%s; wait for it to finish or use another --run",
                            run_dir, who);
            }
            break;
        }
        /* The previous owner unlinks the file when it ends: if it did so after our
         * open, we hold a lock on a file nobody else will see; take the new one. */
        struct stat a, b;
        if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
            close(fd);
            continue;
        }
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
            s = lp_fail(LP_ERR_IO, "%s: cannot write (%s)", path, strerror(errno));
            close(fd);
            break;
        }
        lp_runlock *l = lp_calloc(1, sizeof *l);
        if (!l) {
            close(fd);
            s = LP_ERR_NOMEM;
            break;
        }
        l->fd = fd;
        l->path = path;
        *out = l;
        return LP_OK;
    }
    if (!s) s = lp_fail(LP_ERR_IO, "%s: cannot take the lock (it keeps being replaced)", path);
    free(path);
    return s;
}

void lp_run_unlock(lp_runlock *l) {
    if (!l) return;
    unlink(l->path); /* while still holding it */
    close(l->fd);
    free(l->path);
    free(l);
}

void lp_softmax_rows(const float *logits, int n, int k, double T, float *probs) {
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        double mx = z[0];
        for (int c = 1; c < k; c++)
            if (z[c] > mx) mx = z[c];
        double sum = 0;
        for (int c = 0; c < k; c++) sum += exp((z[c] - mx) / T);
        for (int c = 0; c < k; c++) probs[(size_t)i * k + c] = (float)(exp((z[c] - mx) / T) / sum);
    }
}

lp_status lp_model_io_from_meta(lp_model *m, lp_model_io *io) {
    io->loader = lp_loader_default_config();
    int c, h, w;
    lp_model_input_size(m, &c, &h, &w);
    io->loader.channels = c;
    io->loader.height = h;
    io->loader.width = w;
    io->loader.shuffle = false;
    const char *pre = lp_model_meta(m, "preprocess");
    if (pre && *pre && lp_preprocess_parse(pre, &io->loader.preprocess) != LP_OK)
        return lp_fail(LP_ERR_FORMAT, "checkpoint metadata 'preprocess' = '%s' is not a preprocessing mode loupe knows: the file is "
                                      "damaged or from a newer loupe; use another checkpoint", pre);
    const char *interp = lp_model_meta(m, "interpolation");
    if (interp && *interp && lp_interp_parse(interp, &io->loader.interp) != LP_OK)
        return lp_fail(LP_ERR_FORMAT, "checkpoint metadata 'interpolation' = '%s' is not an interpolation loupe knows: the file is "
                                      "damaged or from a newer loupe; use another checkpoint", interp);
    io->temperature = 1.0;
    const char *t = lp_model_meta(m, "temperature");
    if (t && *t && !lp_checkpoint_temperature(t, &io->temperature))
        return lp_fail(LP_ERR_FORMAT, "checkpoint temperature '%s' is not a number in 0.001..1000 (diagnose --apply stores 0.01..100): "
                       "the file is damaged; calibrate again or use another checkpoint", t);
    return LP_OK;
}
