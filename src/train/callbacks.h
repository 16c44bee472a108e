/* Keras callback semantics as plain state machines, so the fit loop stays
 * short and the state can be saved in a checkpoint for --resume. */
#ifndef LP_CALLBACKS_H
#define LP_CALLBACKS_H
#include <stdbool.h>

/* Monitored figure: val_loss is minimised, val_accuracy maximised. */
typedef struct lp_monitor {
    bool maximize;
    double best;       /* +-inf before the first epoch */
    int best_epoch;    /* 0 before the first epoch */
} lp_monitor;
void lp_monitor_init(lp_monitor *m, bool maximize);
/* Keras ModelCheckpoint(save_best_only): true when `value` beats best (strictly). Updates best. */
bool lp_monitor_update(lp_monitor *m, double value, int epoch);

/* keras.callbacks.EarlyStopping(patience, min_delta=0, restore_best_weights). */
typedef struct lp_early_stop {
    int patience;      /* 0 = off */
    bool maximize;
    double best;
    int best_epoch, wait;
} lp_early_stop;
void lp_early_stop_init(lp_early_stop *e, int patience, bool maximize);
/* Returns true when training should stop after this epoch. */
bool lp_early_stop_update(lp_early_stop *e, double value, int epoch);

/* keras.callbacks.ReduceLROnPlateau(factor, patience, min_delta=1e-4 (rel mode off), cooldown=0, min_lr). */
typedef struct lp_reduce_lr {
    double factor;     /* 0 = off */
    int patience, cooldown, cooldown_counter, wait;
    double min_delta, min_lr, best;
    bool maximize;
} lp_reduce_lr;
void lp_reduce_lr_init(lp_reduce_lr *r, double factor, int patience, bool maximize);
/* Returns the learning rate for the next epoch (maybe reduced). */
double lp_reduce_lr_update(lp_reduce_lr *r, double value, double lr);

/* Learning-rate schedules: "constant", "step:E:G" (x G every E epochs), "cosine" (to 0 over all epochs). */
typedef struct lp_schedule {
    int kind; /* 0 constant, 1 step, 2 cosine */
    int step_epochs;
    double gamma;
} lp_schedule;
bool lp_schedule_parse(const char *spec, lp_schedule *out);
/* lr for (0-based) epoch e of `epochs`, from base lr. */
double lp_schedule_lr(const lp_schedule *s, double base_lr, int epoch, int epochs);
#endif
