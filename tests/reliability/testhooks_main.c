/* loupe-testhooks: the loupe command line with the library's test hooks
 * (src/core/test_hooks.h) taken from environment variables. The reliability
 * tests run it where they need a fault injected; loupe itself never reads
 * these variables (reliability_hooks_off checks that). README.md here lists
 * them. */
#include "cli/cli_main.h"
#include "core/test_hooks.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* The variable's value, NULL when unset or empty. */
static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A whole non-negative number, or dflt when unset; exits on a bad value, so a
 * typo cannot turn a fault-injection test into a plain run. */
static long long env_count(const char *name, long long dflt) {
    const char *v = env(name);
    if (!v) return dflt;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < 0) {
        fprintf(stderr, "loupe-testhooks: %s=%s is not a whole number >= 0\n", name, v);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv) {
    static lp_test_hooks hooks;
    hooks = lp_test_hooks_default();
    hooks.write_delay_ms = (long)env_count("LOUPE_TEST_WRITE_DELAY_MS", 0);
    hooks.fail_write_after = env_count("LOUPE_TEST_FAIL_WRITE_AFTER", -1);
    hooks.fail_write_match = env("LOUPE_TEST_FAIL_WRITE_MATCH");
    hooks.nan_input = env("LOUPE_TEST_NAN_INPUT");
    hooks.nan_loss = env("LOUPE_TEST_NAN_LOSS");
    hooks.nan_grad = env("LOUPE_TEST_NAN_GRAD");
    hooks.h5_inprocess = env_count("LOUPE_H5_INPROCESS", 0) == 1;
    lp_test_hooks_active = &hooks;
    return cli_main(argc, argv);
}
