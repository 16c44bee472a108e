/* libFuzzer target: pretrained-weights import (lp_weights_read) of ONNX (our
 * protobuf reader), torchvision/timm safetensors and loupe checkpoints; the
 * format is detected from the content. HDF5 inputs are left to fuzz_h5 (here
 * they would go to the forked libhdf5 reader, whose hang guard is 60 s).
 * The reader takes a path: the input is written to a file in a private tmpfs
 * folder first. The arch hint alternates with the last input byte. */
#include "fuzz_util.h"
#include "io/weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (size_t off = 0; off + 8 <= size && off <= 65536; off = off ? off * 2 : 512)
        if (lp_weights_is_hdf5(data + off, 8)) return -1; /* not for this target: keep out of the corpus */
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
