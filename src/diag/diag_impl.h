/* diag: private to the layer: the run data read from a run directory, the
 * analysed figures (struct lp_diagnosis), and a growable string buffer. */
#ifndef LP_DIAG_IMPL_H
#define LP_DIAG_IMPL_H

#include "diag/diag.h"
#include <cjson/cJSON.h>
#include <stdbool.h>

/* ---- growable string ---------------------------------------------------- */
typedef struct diag_sb {
    char *s;
    size_t len, cap;
    bool oom;
} diag_sb;
void sb_printf(diag_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_puts(diag_sb *b, const char *s);
void sb_html(diag_sb *b, const char *s); /* HTML-escaped */
/* Word-wraps text at `width` columns, every line after the first indented by `indent`. */
void sb_wrapped(diag_sb *b, const char *text, int width, int indent);
char *sb_take(diag_sb *b); /* returns the string (NULL if out of memory) and resets b */

/* ---- the run directory, as read ----------------------------------------- */
typedef struct diag_hist {
    int epoch;
    double loss, acc, val_loss, val_acc, lr; /* NaN when absent */
} diag_hist;

typedef struct diag_config {
    char *model, *preprocess, *weights, *weights_preprocess, *monitor; /* NULL when absent */
    char *data; /* the data folder as given to train (image paths are relative to it); NULL when absent */
    double lr;                                                          /* NaN when absent */
    int batch, epochs, early_stop;                                      /* -1 when absent */
    int bn_layers, bn_batch_stats_layers; /* batch norm layers, and those on batch statistics; -1 when absent */
    char *bn;                             /* --bn; NULL when absent */
} diag_config;

typedef struct diag_run {
    char *dir;
    bool have_run_json;
    int k;
    char **classes;                  /* k names ("0", "1", ... without run.json) */
    diag_config cfg;
    /* run.json's bn_check (training ended with batch norm on batch statistics): the training
     * set's accuracy in training mode (the last epoch's) and in inference mode after it */
    bool have_bn_check;
    int bn_check_epoch, bn_check_images;
    double bn_acc_train_mode, bn_acc_inference, bn_loss_inference;
    int *train_counts, *valid_counts; /* k each, NULL when absent */
    int n_hist;
    diag_hist *hist;                 /* sorted by epoch, unique */
    int n_img;
    char **paths;
    int *labels;                     /* n_img */
    int n_ep;                        /* predicted epochs, ascending */
    int *ep_num;
    bool *ep_finite;                 /* all probabilities finite */
    double *probs;                   /* (n_ep, n_img, k) */
    int n_notes;
    char **notes;
} diag_run;

lp_status diag_run_load(const char *dir, diag_run *r);
void diag_run_free(diag_run *r);
void diag_note(diag_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- analysis ------------------------------------------------------------ */
typedef struct diag_epoch {
    int epoch;
    int hist;  /* index into run.hist or -1 */
    int pred;  /* index into run predictions or -1 */
    /* from predictions (NaN / 0 when pred < 0 or not finite) */
    int n, n_wrong;
    double val_loss, acc, loss_wrong, loss_correct, share_wrong;
    double conf_correct, conf_wrong, p_true_wrong, ece, mce, brier;
    int flips, to_wrong, to_right;
} diag_epoch;

typedef struct diag_verdict {
    char id[32];
    const char *severity; /* "problem" | "warning" | "info" */
    char *message;
    cJSON *evidence;
} diag_verdict;

typedef struct diag_es {
    bool valid;
    const char *monitor;
    int patience, stop_epoch, restored_epoch, epochs_saved;
    int best_epoch, needed_patience; /* best monitored epoch up to L; patience that reaches it */
    double restored_value, best_value;
    bool too_early;                  /* stopping would have missed the best epoch */
} diag_es;

struct lp_diagnosis {
    diag_run run;
    lp_diagnose_params params;
    int n_tl;          /* timeline: union of history and predicted epochs */
    diag_epoch *tl;
    double *loss;      /* (n_ep, n_img) per-image loss */
    int *pred;         /* (n_ep, n_img) argmax */
    int L, B, A;       /* prediction indices: analysed, best by val_loss, best by val_accuracy */
    int tl_L, tl_B, tl_A;
    /* decomposition best -> last */
    double rise, rise_share_mis;
    int n_wrong_L, n_wrong_L_also_B;
    double p_true_mis_B, p_true_mis_L, conf_wrong_B;
    /* calibration at L */
    double ece, mce, brier, nll, T, ece_c, mce_c, brier_c, nll_c;
    int T_at_bound;
    lp_diag_bin bins[LP_DIAG_ECE_BINS], bins_c[LP_DIAG_ECE_BINS];
    int hist_correct[LP_DIAG_ECE_BINS], hist_wrong[LP_DIAG_ECE_BINS]; /* confidence histograms */
    double ci_lo, ci_hi;
    int *confusion;    /* k*k */
    int n_listed;      /* images ordered for display */
    int *order;
    int n_conf_wrong;  /* the first n_conf_wrong of order: misclassified at L */
    diag_es es;
    char *headline;
    int n_verdicts;
    diag_verdict verdicts[16];
    lp_thumbnail_fn thumb_fn; /* NULL: the report shows placeholders */
    void *thumb_ctx;
};

/* The HTML report's "Most affected images" section (report_thumbs.c). */
void diag_html_thumbs(diag_sb *b, const lp_diagnosis *d);

/* Helpers shared by the writers. */
const char *diag_class_name(const lp_diagnosis *d, int c);
/* How many of order the JSON and HTML reports list: every misclassified image, then up to
 * max_images of the others. */
int diag_images_listed(const lp_diagnosis *d);
double diag_p_true(const lp_diagnosis *d, int pi, int img); /* prediction index, image */
double diag_p(const lp_diagnosis *d, int pi, int img, int c);

#endif
