/*
 * loupe.h: the one public header of loupe, a C library for training image
 * classifiers by transfer learning, with training diagnostics built in.
 *
 * Conventions (sqlite-style):
 *   - every function that can fail returns lp_status (LP_OK == 0);
 *   - on failure a readable message ("file: what is wrong; what to do") is kept
 *     for the calling thread and returned by lp_errmsg();
 *   - library code never prints and never exits;
 *   - opaque handles come in lp_<object>_create/_load ... lp_<object>_free pairs;
 *   - options come in params structs initialised by lp_<object>_default_params().
 *
 * Example (train the seed user's model, then predict):
 *
 *     lp_train_params p = lp_train_default_params();
 *     p.data_dir = "positive-negative"; p.run_dir = "runs/seed";
 *     p.model = "vgg16"; p.top = "keep"; p.batch = 2; p.epochs = 50;
 *     if (lp_train(&p, NULL, NULL) != LP_OK) fprintf(stderr, "%s\n", lp_errmsg());
 *
 *     lp_model *m;
 *     if (lp_model_load("runs/seed/checkpoints/best.safetensors", &m) == LP_OK) {
 *         float probs[2];
 *         lp_predict_file(m, "x.png", probs);
 *         lp_model_free(m);
 *     }
 */
#ifndef LOUPE_H
#define LOUPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOUPE_VERSION "0.1.0"

/* ---- errors ------------------------------------------------------------ */

typedef enum lp_status {
    LP_OK = 0,
    LP_ERR_ARG,          /* bad argument or option value */
    LP_ERR_IO,           /* file could not be read or written */
    LP_ERR_FORMAT,       /* file content is malformed or unsupported */
    LP_ERR_NOMEM,        /* allocation failed */
    LP_ERR_BACKEND,      /* oneDNN failed */
    LP_ERR_DATA,         /* dataset problem (bad images, empty class, ...) */
    LP_ERR_SHAPE,        /* tensor shape/name mismatch */
    LP_ERR_INTERRUPTED,  /* stopped by the user (Ctrl-C) */
    LP_ERR_NUMERIC,      /* NaN/Inf in loss or weights */
    LP_ERR_LOCKED,       /* run directory used by another process */
    LP_STATUS_COUNT
} lp_status;

/** @return the calling thread's last error message ("" if none). */
const char *lp_errmsg(void);
/** @return a short name for a status code, e.g. "format error". */
const char *lp_status_name(lp_status s);
/** @return the library version string. */
const char *lp_version(void);

/** Sets the number of compute threads (0 = all cores). */
void lp_set_threads(int n);
int lp_get_threads(void);

/* ==== section: model (engine) ========================================== */
/* ==== end section: model =============================================== */

/* ==== section: data ===================================================== */
/* ==== end section: data ================================================= */

/* ==== section: weights (import/convert) ================================= */
/* ==== end section: weights ============================================== */

/* ==== section: train (fit, evaluate, predict) =========================== */
/* ==== end section: train ================================================ */

/* ==== section: tensorboard ============================================== */
/* ==== end section: tensorboard ========================================== */

/* ==== section: diagnose ================================================= */
/* ==== end section: diagnose ============================================= */

#ifdef __cplusplus
}
#endif
#endif /* LOUPE_H */
