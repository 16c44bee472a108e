/* The installed test hooks (test_hooks.h): none unless a test program sets them. */
#include "core/test_hooks.h"
#include <string.h>

const lp_test_hooks *lp_test_hooks_active = NULL;

lp_test_hooks lp_test_hooks_default(void) {
    lp_test_hooks h;
    memset(&h, 0, sizeof h);
    h.fail_write_after = -1;
    return h;
}
