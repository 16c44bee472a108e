/* libFuzzer target: pretrained-weights import (lp_weights_read): the format is
 * detected from the content, so one target covers Keras HDF5 (through libhdf5,
 * not instrumented: crashes inside it are libhdf5's), ONNX (our protobuf
 * reader), torchvision/timm safetensors and loupe checkpoints. The reader takes
 * a path: the input is written to a file in a private tmpfs folder first.
 * The arch hint alternates with the last input byte (vgg16 / inferred). */
#include "fuzz_util.h"
#include "io/weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[600];
    if (!path[0]) snprintf(path, sizeof path, "%s/input.bin", fuzz_dir());
    fuzz_write(path, data, size);
    lp_tensor_list out;
    const char *hint = size && (data[size - 1] & 1) ? "vgg16" : NULL;
    lp_weights_read(path, hint, &out);
    lp_weights_preprocess(&out);
    lp_tensor_list_free(&out);
    return 0;
}
