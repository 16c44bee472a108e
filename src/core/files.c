#include "core.h"
#include "core/test_hooks.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

lp_status lp_read_file(const char *path, uint8_t **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lp_fail(LP_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return lp_fail(LP_ERR_IO, "%s: not a regular file", path);
    }
    uint8_t *buf = lp_malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        return LP_ERR_NOMEM;
    }
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    const int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err || got != (size_t)st.st_size) {
        free(buf);
        return lp_fail(LP_ERR_IO, "%s: read failed (%s)", path, err ? strerror(err) : "the file changed size while read");
    }
    buf[got] = 0;
    *data = buf;
    *size = got;
    return LP_OK;
}

bool lp_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

bool lp_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *lp_path_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    while (na > 1 && a[na - 1] == '/') na--;
    char *p = lp_malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    p[na] = '/';
    memcpy(p + na + 1, b, nb + 1);
    return p;
}

lp_status lp_mkdirs(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return lp_fail(LP_ERR_ARG, "bad directory path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return lp_fail(LP_ERR_IO, "%s: cannot create directory (%s): choose a folder you can write to", buf, strerror(errno));
            buf[i] = c;
        }
    }
    if (!lp_is_dir(path)) return lp_fail(LP_ERR_IO, "%s: exists and is not a directory", path);
    return LP_OK;
}

double lp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- atomic replace --------------------------------------------------- */
struct lp_atomic_file {
    int fd;
    char *path, *tmp;
    bool failed;
};

lp_status lp_atomic_open(const char *path, lp_atomic_file **out) {
    *out = NULL;
    lp_atomic_file *f = lp_calloc(1, sizeof *f);
    if (!f) return LP_ERR_NOMEM;
    size_t n = strlen(path) + 32;
    f->path = lp_strdup(path);
    f->tmp = lp_malloc(n);
    if (!f->path || !f->tmp) {
        free(f->path);
        free(f->tmp);
        free(f);
        return LP_ERR_NOMEM;
    }
    snprintf(f->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        /* the file the caller named, not our temporary beside it */
        lp_status s = lp_fail(LP_ERR_IO, "%s: cannot write it (creating %s beside it: %s); choose a folder you can write to",
                              path, f->tmp, strerror(errno));
        free(f->path);
        free(f->tmp);
        free(f);
        return s;
    }
    *out = f;
    return LP_OK;
}

/* Test hooks (core/test_hooks.h): a write delay and injected ENOSPC, off
 * unless a test program installed them. g_test_written counts the bytes the
 * ENOSPC hook has let through in this process. */
static _Atomic long long g_test_written;

lp_status lp_atomic_write(lp_atomic_file *f, const void *data, size_t n) {
    const uint8_t *p = data;
    const lp_test_hooks *th = lp_test_hooks_active;
    long delay_ms = th ? th->write_delay_ms : 0;
    long long fail_after = th ? th->fail_write_after : -1;
    const char *match = th ? th->fail_write_match : NULL;
    bool counted = fail_after >= 0 && (!match || strstr(f->path, match));
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        if (delay_ms > 0) {
            if (chunk > 4096) chunk = 4096;
            struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        long long room = counted ? fail_after - g_test_written : (long long)chunk;
        if (room < (long long)chunk) chunk = room > 0 ? (size_t)room : 0;
        ssize_t w = chunk ? write(f->fd, p, chunk) : (errno = ENOSPC, -1);
        if (counted && w > 0) g_test_written += w;
        if (w < 0) {
            if (errno == EINTR) continue;
            f->failed = true;
            return lp_fail(LP_ERR_IO, "%s: write failed (%s); the previous file is kept", f->path, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return LP_OK;
}

lp_status lp_atomic_printf(lp_atomic_file *f, const char *fmt, ...) {
    char small[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return lp_fail(LP_ERR_ARG, "format error");
    if ((size_t)n < sizeof small) return lp_atomic_write(f, small, (size_t)n);
    char *big = lp_malloc((size_t)n + 1);
    if (!big) return LP_ERR_NOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    lp_status s = lp_atomic_write(f, big, (size_t)n);
    free(big);
    return s;
}

static void atomic_free(lp_atomic_file *f) {
    free(f->path);
    free(f->tmp);
    free(f);
}

void lp_atomic_abort(lp_atomic_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    atomic_free(f);
}

lp_status lp_atomic_commit(lp_atomic_file *f) {
    if (f->failed) {
        lp_atomic_abort(f);
        return LP_ERR_IO;
    }
    if (fsync(f->fd) != 0) {
        lp_status s = lp_fail(LP_ERR_IO, "%s: fsync failed (%s); the previous file is kept", f->path, strerror(errno));
        lp_atomic_abort(f);
        return s;
    }
    if (close(f->fd) != 0) {
        f->fd = -1;
        lp_status s = lp_fail(LP_ERR_IO, "%s: close failed (%s); the previous file is kept", f->path, strerror(errno));
        lp_atomic_abort(f);
        return s;
    }
    f->fd = -1;
    if (rename(f->tmp, f->path) != 0) {
        lp_status s = lp_fail(LP_ERR_IO, "%s: rename failed (%s); the previous file is kept", f->path, strerror(errno));
        lp_atomic_abort(f);
        return s;
    }
    /* fsync the folder so the rename itself survives a power cut. */
    char *dir = lp_strdup(f->path);
    if (dir) {
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    atomic_free(f);
    return LP_OK;
}

lp_status lp_write_file_atomic(const char *path, const void *data, size_t n) {
    lp_atomic_file *f;
    lp_status s = lp_atomic_open(path, &f);
    if (s) return s;
    s = lp_atomic_write(f, data, n);
    if (s) {
        lp_atomic_abort(f);
        return s;
    }
    return lp_atomic_commit(f);
}
