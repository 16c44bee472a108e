/* Test hooks: fault injection and switches that only tests turn on.
 *
 * The library never reads them from the environment. A test program fills an
 * lp_test_hooks and installs it before it does anything else: the reliability
 * tests run loupe-testhooks (tests/reliability/testhooks_main.c: the CLI plus
 * LOUPE_TEST_* variables read into this struct), the fuzz harnesses set what
 * they need. Not in include/loupe.h and not exported from libloupe.so; with
 * nothing installed (always, in loupe and libloupe) each hook point costs one
 * test of a NULL pointer. */
#ifndef LP_CORE_TEST_HOOKS_H
#define LP_CORE_TEST_HOOKS_H
#include <stdbool.h>

typedef struct lp_test_hooks {
    /* lp_atomic_write (src/core/files.c) */
    long write_delay_ms;          /* > 0: write in 4 KiB chunks and sleep this long before each,
                                   * so that a test can kill the process inside a write */
    long long fail_write_after;   /* >= 0: after this many bytes in total went through lp_atomic_write
                                   * in the process, writes fail with ENOSPC (a partial write first,
                                   * like a full disk); < 0: off */
    const char *fail_write_match; /* with fail_write_after: count only files whose path contains this */
    /* the fit loop, with on_nan "skip" only (src/train/fit.c); NULL: off */
    const char *nan_input; /* training images whose relative path contains this get a NaN first pixel */
    const char *nan_loss;  /* a training batch holding such an image has its loss taken as NaN */
    const char *nan_grad;  /* ... gets a NaN in the last parameter's gradient after backward */
    /* Keras HDF5 import (src/io/keras_h5.c) */
    bool h5_inprocess; /* read in this process instead of the isolating child (fuzzing, debuggers) */
} lp_test_hooks;

/* The installed hooks; NULL (the default): all off. Set it before the first
 * library call and before any thread starts; the struct must outlive its use. */
extern const lp_test_hooks *lp_test_hooks_active;

/* Every hook off: the starting point for a test that sets a few. */
lp_test_hooks lp_test_hooks_default(void);
#endif
