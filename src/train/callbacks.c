#include "train/callbacks.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool better(bool maximize, double value, double best, double min_delta) {
    if (isnan(value)) return false;
    return maximize ? value - min_delta > best : value + min_delta < best;
}

void lp_monitor_init(lp_monitor *m, bool maximize) {
    m->maximize = maximize;
    m->best = maximize ? -INFINITY : INFINITY;
    m->best_epoch = 0;
}

bool lp_monitor_update(lp_monitor *m, double value, int epoch) {
    if (!better(m->maximize, value, m->best, 0)) return false;
    m->best = value;
    m->best_epoch = epoch;
    return true;
}

void lp_early_stop_init(lp_early_stop *e, int patience, bool maximize) {
    memset(e, 0, sizeof *e);
    e->patience = patience;
    e->maximize = maximize;
    e->best = maximize ? -INFINITY : INFINITY;
}

bool lp_early_stop_update(lp_early_stop *e, double value, int epoch) {
    if (e->patience <= 0) return false;
    e->wait++;
    if (better(e->maximize, value, e->best, 0)) {
        e->best = value;
        e->best_epoch = epoch;
        e->wait = 0;
    }
    return e->wait >= e->patience;
}

void lp_reduce_lr_init(lp_reduce_lr *r, double factor, int patience, bool maximize) {
    memset(r, 0, sizeof *r);
    r->factor = factor;
    r->patience = patience;
    r->maximize = maximize;
    r->min_delta = 1e-4;
    r->best = maximize ? -INFINITY : INFINITY;
}

double lp_reduce_lr_update(lp_reduce_lr *r, double value, double lr) {
    if (r->factor <= 0) return lr;
    if (r->cooldown_counter > 0) { /* Keras: in cooldown, count down and reset wait */
        r->cooldown_counter--;
        r->wait = 0;
    }
    if (better(r->maximize, value, r->best, r->min_delta)) {
        r->best = value;
        r->wait = 0;
    } else if (r->cooldown_counter <= 0) {
        r->wait++;
        if (r->wait >= r->patience && lr > r->min_lr) {
            double nl = lr * r->factor;
            if (nl < r->min_lr) nl = r->min_lr;
            lr = nl;
            r->cooldown_counter = r->cooldown;
            r->wait = 0;
        }
    }
    return lr;
}

bool lp_schedule_parse(const char *spec, lp_schedule *out) {
    memset(out, 0, sizeof *out);
    if (!spec || !strcmp(spec, "constant")) return true;
    if (!strcmp(spec, "cosine")) {
        out->kind = 2;
        return true;
    }
    if (!strncmp(spec, "step:", 5)) {
        char *end;
        long e = strtol(spec + 5, &end, 10);
        if (*end != ':' || e <= 0) return false;
        double g = strtod(end + 1, &end);
        if (*end || !(g > 0)) return false;
        out->kind = 1;
        out->step_epochs = (int)e;
        out->gamma = g;
        return true;
    }
    return false;
}

double lp_schedule_lr(const lp_schedule *s, double base_lr, int epoch, int epochs) {
    switch (s->kind) {
    case 1: return base_lr * pow(s->gamma, epoch / s->step_epochs);
    case 2: return epochs > 0 ? base_lr * 0.5 * (1 + cos(M_PI * epoch / epochs)) : base_lr;
    default: return base_lr;
    }
}
