/* libFuzzer target: Keras HDF5 import (lp_weights_read on HDF5 content), read
 * in this process (the h5_inprocess test hook) so that our walk over groups,
 * attributes and datasets is instrumented. libhdf5 itself is not: it hangs on
 * some corrupt files (loupe reads HDF5 in a child process with a time limit for
 * that reason), so scripts/fuzz runs this target with timeouts ignored; a crash
 * whose frames are all in libhdf5 is libhdf5's. */
#include "core/test_hooks.h"
#include "fuzz_util.h"
#include "io/weights.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    static lp_test_hooks hooks;
    hooks = lp_test_hooks_default();
    hooks.h5_inprocess = true;
    lp_test_hooks_active = &hooks;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[600];
    if (!path[0]) snprintf(path, sizeof path, "%s/input.h5", fuzz_dir());
    fuzz_write(path, data, size);
    lp_tensor_list out;
    lp_weights_read(path, size && (data[size - 1] & 1) ? "vgg16" : NULL, &out);
    lp_tensor_list_free(&out);
    return 0;
}
