/* What the fit loop's files share: the loop's working state. */
#ifndef LP_FIT_INTERNAL_H
#define LP_FIT_INTERNAL_H

#include "data/data.h"
#include "log/csv.h"
#include "log/log.h"
#include "nn/nn.h"
#include "nn/optim.h"
#include "train/dist.h"
#include "train/train.h"
#include <stdio.h>

typedef struct lp_fit {
    lp_train_params p;
    lp_dist dist;       /* data-parallel ranks (size 1: one process); rank 0 alone writes the run */
    double dist_step_s, dist_comm_s, dist_bytes; /* data-parallel steps: their time, the wait for the gradients' sums, bytes */
    double dist_span_s, dist_first;              /* ... from the first sum's start to the last's end */
    int64_t dist_steps;
    lp_grad_run *dist_runs; /* the gradients' runs, each summed over ranks as soon as backward completes it */
    int dist_nruns, dist_next;
    FILE *out;
    char *ckpt_dir;
    const char *monitor_name;
    lp_dataset *ds;
    const lp_split *train, *valid;
    int num_classes, channels;
    lp_preprocess preprocess;
    char *weights_preprocess; /* what the weights expect, or NULL */
    lp_tensor_list resume_ck; /* --resume: the run's last checkpoint, read once in set-up */
    bool resume_found;        /* ... when there is one */
    bool resume_new_lr;       /* ... with another learning-rate policy than the run's */
    lp_net *net;
    lp_optim *opt;
    double base_lr;
    lp_loader *train_loader, *valid_loader;
    lp_csv *hist_csv, *pred_csv;
    lp_tb_writer *tb, *tb_val;
    lp_train_state st;
    /* buffers sized for one batch (max of train/valid batch) */
    float *logits, *probs, *sample_loss;
    /* validation table of the current epoch (for diagnostics scalars) */
    float *val_probs;
    int *val_labels;
    int val_count;
    /* frozen-prefix feature cache (feat_k == 0: off): layers [0, feat_k) run once per image */
    int feat_k;
    size_t feat_size;                    /* floats per sample */
    float *feat_train, *feat_valid;      /* (num_samples, feat_size) of each split */
    unsigned char *have_train, *have_valid;
    float *feat_batch;                   /* (batch, feat_size) */
} lp_fit;

lp_status lp_fit_setup(lp_fit *f);
/* Whether this process writes the run directory (rank 0). */
static inline bool lp_fit_writer(const lp_fit *f) { return f->dist.rank == 0; }
/* Data-parallel: the trainable weights and the buffers (batch norm's statistics) from
 * rank 0 to all, so that every rank holds rank 0's model. */
lp_status lp_fit_bcast_model(lp_fit *f);
/* Progress/info line to f->out unless quiet. */
void lp_fit_say(const lp_fit *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Loads the net's tensors of a checkpoint's contents (moved out of all), strictly,
 * leaving optimizer and loop state aside. */
lp_status lp_fit_load_net_tensors(lp_fit *f, lp_tensor_list *all);
void lp_fit_teardown(lp_fit *f);
/* forward(training) + loss + backward + optimizer step; f->probs holds the batch's probabilities. */
/* keep_grads: the gradients are read after the step (histograms), so no layer may
 * apply its update inside backward (lp_net_backward_step); the weights are the same. */
lp_status lp_fit_train_step(lp_fit *f, const lp_batch *bt, uint64_t dropout_seed, float lr, bool keep_grads,
                            float *mean_loss);
/* lp_fit_train_step without the optimizer step, for --on-nan skip (gradients checked first). */
lp_status lp_fit_train_backward(lp_fit *f, const lp_batch *bt, uint64_t dropout_seed, float *mean_loss);
/* Inference forward of a validation batch (uses the feature cache when on). */
lp_status lp_fit_forward_eval(lp_fit *f, const lp_batch *bt, float *logits);
/* A loader over split sp with the run's batch, size and preprocessing; train: shuffled
 * and augmented as the run asks. */
lp_status lp_fit_make_loader(lp_fit *f, const lp_split *sp, bool train, lp_loader **out);
/* Checkpoint metadata (classes, preprocessing, input size, ...). */
lp_status lp_fit_fill_meta(lp_fit *f, lp_tensor_list *meta);
/* TensorBoard writes. */
lp_status lp_fit_tb_epoch(lp_fit *f, int epoch, double loss, double acc, double val_loss, double val_acc, double lr);
void lp_fit_tb_batch(lp_fit *f, float loss);

#endif
