#include "log/progress.h"
#include "core/core.h"
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void lp_progress_begin(lp_progress *p, FILE *out, int total) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->tty = out && isatty(fileno(out));
    p->total = total;
    p->start = lp_now();
    p->width = 30;
}

static void fmt_duration(char *buf, size_t n, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void lp_progress_update(lp_progress *p, int done, double loss, double accuracy) {
    if (!p->out || !p->tty) return;
    double now = lp_now();
    if (done < p->total && now - p->last_draw < 0.1) return;
    p->last_draw = now;
    char bar[64];
    int filled = p->total > 0 ? (int)((double)done / p->total * p->width) : 0;
    if (filled > p->width) filled = p->width;
    for (int i = 0; i < p->width; i++) bar[i] = i < filled - 1 ? '=' : i == filled - 1 ? (done >= p->total ? '=' : '>') : '.';
    bar[p->width] = 0;
    char eta[32];
    double per = done > 0 ? (now - p->start) / done : 0;
    fmt_duration(eta, sizeof eta, per * (p->total - done));
    fprintf(p->out, "\r%d/%d [%s] - ETA: %s - loss: %.4f - accuracy: %.4f", done, p->total, bar, eta, loss, accuracy);
    fflush(p->out);
}

void lp_progress_end(lp_progress *p, int done, double loss, double accuracy, const char *extra) {
    if (!p->out) return;
    double el = lp_now() - p->start;
    double per = done > 0 ? el / done : 0;
    if (p->tty) fprintf(p->out, "\r\033[K");
    fprintf(p->out, "%d/%d - %.0fs %.0fms/step - loss: %.4f - accuracy: %.4f%s\n", done, p->total, el, per * 1000,
            loss, accuracy, extra ? extra : "");
    fflush(p->out);
}
