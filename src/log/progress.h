/* Keras-like progress output: a live bar on a terminal, one plain line per
 * epoch otherwise (so logs piped to files stay readable and parseable). */
#ifndef LP_PROGRESS_H
#define LP_PROGRESS_H
#include <stdbool.h>
#include <stdio.h>

typedef struct lp_progress {
    FILE *out;
    bool tty;
    int total;        /* steps in the epoch */
    double start, last_draw;
    int width;
} lp_progress;

void lp_progress_begin(lp_progress *p, FILE *out, int total);
/* Redraws "12/154 [===>......] - ETA: 0:41 - loss: 0.4121 - accuracy: 0.8333" (terminal only, rate-limited). */
void lp_progress_update(lp_progress *p, int done, double loss, double accuracy);
/* Ends the epoch line: "154/154 - 41s 266ms/step - loss: ... - val_loss: ..." (extra is appended verbatim). */
void lp_progress_end(lp_progress *p, int done, double loss, double accuracy, const char *extra);
#endif
