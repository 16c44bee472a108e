/* Append-only CSV logs (history.csv, valid_predictions.csv).
 * Rows are appended and flushed to disk each epoch; on resume the file is
 * cut back to the rows of finished epochs, which also drops a torn last line
 * left by a crash. */
#ifndef LP_CSV_H
#define LP_CSV_H
#include "core/core.h"
#include <stdio.h>

typedef struct lp_csv lp_csv;
/* Opens path for appending. If it does not exist or keep_epochs == 0, starts it with `header`.
 * Otherwise checks the header matches and keeps only rows whose first field (the epoch)
 * is <= keep_epochs, rewriting the file atomically if anything is dropped. */
lp_status lp_csv_open(const char *path, const char *header, int keep_epochs, lp_csv **out);
lp_status lp_csv_printf(lp_csv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes one field, quoted per RFC 4180 when it holds a comma, quote or newline. */
lp_status lp_csv_write_field(lp_csv *c, const char *field);
lp_status lp_csv_sync(lp_csv *c); /* fflush + fsync: rows so far survive a crash */
void lp_csv_close(lp_csv *c);
#endif
