/* Per-thread last error message, like errno/dlerror: library calls return a
 * status and leave the readable message here for the caller. */
#include "core.h"
#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[2048];

lp_status lp_fail(lp_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return code;
}

lp_status lp_fail_context(lp_status code, const char *fmt, ...) {
    char prefix[1024], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    snprintf(g_msg, sizeof g_msg, "%s: %s", prefix, old);
    return code;
}

void lp_clear_error(void) { g_msg[0] = 0; }
const char *lp_errmsg(void) { return g_msg; }
const char *lp_version(void) { return LOUPE_VERSION; }

const char *lp_status_name(lp_status s) {
    static const char *names[] = {
        "ok", "bad argument", "i/o error", "format error", "out of memory",
        "backend error", "data error", "shape mismatch", "interrupted",
        "numeric error", "locked",
    };
    _Static_assert(sizeof names / sizeof names[0] == LP_STATUS_COUNT, "status names");
    return (unsigned)s < LP_STATUS_COUNT ? names[s] : "unknown";
}
