/* Clean-up after the atomic-replace helper (core.h lp_atomic_*): a process
 * killed inside a write leaves its temporary "<file>.tmp.<pid>" behind. */
#ifndef LP_ATOMIC_CLEANUP_H
#define LP_ATOMIC_CLEANUP_H

#include "core/core.h"

/* Removes the temporaries "<name>.tmp.<pid>" directly in dir whose writer
 * process no longer exists (never the caller's own). *removed (may be NULL)
 * receives how many were removed. A missing dir is not an error. */
lp_status lp_atomic_remove_stale(const char *dir, int *removed);

#endif
