/* weights: preprocessing warnings and format sniffing (no files needed). */
#include "io/weights.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The "~Nx" factor in a warning (0 if none). Expected values from the
 * ImageNet pixel statistics: caffe inputs have RMS ~57.6 (0..255, mean
 * removed), rescale ~0.50 (0..1), torch ~1.0. */
static double factor(const char *s) {
    const char *p = strstr(s, "~");
    return p ? atof(p + 1) : 0;
}

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

int main(void) {
    char buf[1024];
    /* same mode, or unknown expectation: no warning */
    CHECK(lp_weights_preprocess_warning("caffe", "caffe", buf, sizeof buf) == 0 && buf[0] == 0, "same mode warns: %s", buf);
    CHECK(lp_weights_preprocess_warning(NULL, "rescale", buf, sizeof buf) == 0, "NULL expected warns");

    /* the seed's rescale=1/255 with Keras (caffe) weights: ~115x too small, RGB vs BGR, not centred */
    int n = lp_weights_preprocess_warning("caffe", "rescale", buf, sizeof buf);
    printf("caffe weights, rescale input: %s\n", buf);
    CHECK(n > 0 && (size_t)n == strlen(buf), "length");
    CHECK(strstr(buf, "'caffe'") && strstr(buf, "'rescale'"), "names both modes: %s", buf);
    CHECK(strstr(buf, "too small") && factor(buf) >= 100 && factor(buf) <= 130, "scale factor ~100x: %s", buf);
    CHECK(strstr(buf, "wrong order") && strstr(buf, "BGR expected"), "channel order: %s", buf);
    CHECK(strstr(buf, "not mean-centred"), "centring: %s", buf);

    /* torch weights with caffe input: ~58x too large, channel order */
    lp_weights_preprocess_warning("torch", "caffe", buf, sizeof buf);
    printf("torch weights, caffe input: %s\n", buf);
    CHECK(strstr(buf, "too large") && factor(buf) >= 50 && factor(buf) <= 65 && strstr(buf, "wrong order"), "torch/caffe: %s", buf);

    /* torch weights with rescale input: scale ~2x off, same channel order */
    lp_weights_preprocess_warning("torch", "rescale", buf, sizeof buf);
    printf("torch weights, rescale input: %s\n", buf);
    fflush(stdout);
    CHECK(strstr(buf, "too small") && factor(buf) >= 1.5 && factor(buf) <= 2.5 && !strstr(buf, "wrong order"), "torch/rescale: %s", buf);

    /* unknown mode name: still a warning naming both */
    CHECK(lp_weights_preprocess_warning("caffe", "weird", buf, sizeof buf) > 0 && strstr(buf, "weird"), "unknown mode: %s", buf);
    /* truncation is safe */
    char small[16];
    int full = lp_weights_preprocess_warning("caffe", "rescale", small, sizeof small);
    CHECK(full > 15 && strlen(small) == 15, "truncated output");

    /* sniffing */
    const uint8_t h5[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    CHECK(lp_weights_is_hdf5(h5, 8) && !lp_weights_is_hdf5(h5, 7), "hdf5 signature");
    uint8_t st[16] = {16, 0, 0, 0, 0, 0, 0, 0, '{', '"'};
    CHECK(lp_weights_is_safetensors(st, 16, 100), "safetensors header");
    CHECK(!lp_weights_is_safetensors(st, 16, 20), "safetensors header longer than file");
    st[8] = '[';
    CHECK(!lp_weights_is_safetensors(st, 16, 100), "safetensors without '{'");

    /* a missing file is an i/o error naming it */
    lp_tensor_list l;
    CHECK(lp_weights_read("/nonexistent/x.h5", NULL, &l) == LP_ERR_IO && strstr(lp_errmsg(), "/nonexistent/x.h5"), "missing file: %s", lp_errmsg());
    if (failures) fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
