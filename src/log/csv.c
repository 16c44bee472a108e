#include "log/csv.h"
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct lp_csv {
    FILE *f;
    char *path;
};

/* Keeps the header and complete rows whose epoch <= keep; rewrites atomically. */
static lp_status csv_trim(const char *path, const char *header, int keep) {
    uint8_t *data;
    size_t size;
    lp_status s = lp_read_file(path, &data, &size);
    if (s) return s;
    char *text = (char *)data;
    char *nl = strchr(text, '\n');
    size_t hlen = strlen(header);
    if (!nl || (size_t)(nl - text) != hlen || strncmp(text, header, hlen) != 0) {
        free(data);
        return lp_fail(LP_ERR_FORMAT, "%s: header is not '%s'; move the file away or start a new run", path, header);
    }
    size_t keep_end = (size_t)(nl - text) + 1;
    bool dropped = false;
    char *line = nl + 1;
    while (*line) {
        char *end = strchr(line, '\n');
        if (!end) { dropped = true; break; } /* torn last line */
        long epoch = strtol(line, NULL, 10);
        if (epoch <= keep && epoch >= 1) keep_end = (size_t)(end - text) + 1;
        else dropped = true;
        line = end + 1;
    }
    if (dropped) s = lp_write_file_atomic(path, text, keep_end);
    free(data);
    return s;
}

lp_status lp_csv_open(const char *path, const char *header, int keep_epochs, lp_csv **out) {
    *out = NULL;
    lp_status s;
    if (keep_epochs > 0 && lp_path_exists(path)) {
        if ((s = csv_trim(path, header, keep_epochs))) return s;
    } else {
        size_t n = strlen(header);
        char *buf = lp_malloc(n + 2);
        if (!buf) return LP_ERR_NOMEM;
        memcpy(buf, header, n);
        buf[n] = '\n';
        s = lp_write_file_atomic(path, buf, n + 1);
        free(buf);
        if (s) return s;
    }
    lp_csv *c = lp_calloc(1, sizeof *c);
    if (!c) return LP_ERR_NOMEM;
    c->path = lp_strdup(path);
    c->f = fopen(path, "a");
    if (!c->path || !c->f) {
        s = lp_fail(LP_ERR_IO, "%s: cannot open for appending (%s)", path, strerror(errno));
        lp_csv_close(c);
        return s;
    }
    *out = c;
    return LP_OK;
}

lp_status lp_csv_printf(lp_csv *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(c->f, fmt, ap);
    va_end(ap);
    if (r < 0) return lp_fail(LP_ERR_IO, "%s: write failed (%s)", c->path, strerror(errno));
    return LP_OK;
}

lp_status lp_csv_write_field(lp_csv *c, const char *field) {
    if (!strpbrk(field, ",\"\n\r")) return lp_csv_printf(c, "%s", field);
    if (fputc('"', c->f) == EOF) return lp_fail(LP_ERR_IO, "%s: write failed", c->path);
    for (const char *q = field; *q; q++) {
        if (*q == '"' && fputc('"', c->f) == EOF) return lp_fail(LP_ERR_IO, "%s: write failed", c->path);
        if (fputc(*q, c->f) == EOF) return lp_fail(LP_ERR_IO, "%s: write failed", c->path);
    }
    if (fputc('"', c->f) == EOF) return lp_fail(LP_ERR_IO, "%s: write failed", c->path);
    return LP_OK;
}

lp_status lp_csv_sync(lp_csv *c) {
    if (fflush(c->f) != 0 || fsync(fileno(c->f)) != 0)
        return lp_fail(LP_ERR_IO, "%s: write failed (%s); rows of finished epochs are kept", c->path, strerror(errno));
    return LP_OK;
}

void lp_csv_close(lp_csv *c) {
    if (!c) return;
    if (c->f) fclose(c->f);
    free(c->path);
    free(c);
}
