/* train: the fit loop and its callbacks, evaluation and prediction.
 * Knows nn, data, io, log and diag. Public entry points are in include/loupe.h
 * (section train); this header holds what the layer's files share. */
#ifndef LP_TRAIN_H
#define LP_TRAIN_H

#include "core/core.h"
#include "data/data.h"
#include "nn/nn.h"
#include "train/callbacks.h"
#include <stdbool.h>

/* Everything the loop must carry across a --resume or a Ctrl-C, saved as JSON in
 * the "train_state" metadata of last.safetensors. */
typedef struct lp_train_state {
    int epochs_done;       /* completed epochs */
    int step_in_epoch;     /* > 0 when stopped mid-epoch */
    int64_t global_step;   /* optimizer steps so far (dropout streams derive from it) */
    int64_t loader_pass;   /* train loader position */
    int loader_batch;
    double lr;             /* learning rate in use (after ReduceLROnPlateau) */
    double loss_sum, correct, seen; /* running sums of an interrupted epoch */
    int64_t nan_skipped;   /* --on-nan skip: training batches skipped so far (run.json's total) */
    int nan_skipped_epoch; /* of them in the current (interrupted) epoch */
    lp_monitor monitor;
    lp_early_stop early;
    lp_reduce_lr reduce;
} lp_train_state;

char *lp_train_state_to_json(const lp_train_state *s); /* malloc'ed */
lp_status lp_train_state_from_json(const char *json, lp_train_state *s);

/* Run directory lock: RUN/lock, flock()ed by its owner and holding its pid; a
 * live owner means LP_ERR_LOCKED; the lock of a killed owner is free. */
typedef struct lp_runlock lp_runlock;
lp_status lp_run_lock(const char *run_dir, lp_runlock **lock);
void lp_run_unlock(lp_runlock *lock); /* removes RUN/lock; NULL is fine */

/* Softmax of logits / T for n rows of k (T = 1: plain softmax), numerically stable. */
void lp_softmax_rows(const float *logits, int n, int k, double T, float *probs);

/* Model metadata helpers shared by evaluate/predict. */
typedef struct lp_model_io {
    lp_loader_config loader;  /* size, channels, preprocess, interpolation from the checkpoint */
    double temperature;       /* 1 when not calibrated */
} lp_model_io;
lp_status lp_model_io_from_meta(lp_model *m, lp_model_io *io);

#endif
