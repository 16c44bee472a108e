/* weights: preprocessing warnings and format sniffing (no files needed). */
#include "io/weights.h"
#include "nn/nn.h"
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

    /* the Keras example's rescale=1/255 with Keras (caffe) weights: ~115x too small, RGB vs BGR, not centred */
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

    /* lp_weights_load_into: a 1000-class VGG16 state dict into a 2-class top=keep
     * net loads everything but classifier.6 (listed as skipped); a wrong-shape
     * backbone tensor is an error naming it. */
    lp_net_config c = lp_net_default_config();
    c.in_h = c.in_w = 32;
    c.max_batch = 1;
    lp_net *net = NULL;
    CHECK(lp_net_create(&c, &net) == LP_OK, "create net: %s", lp_errmsg());
    if (net) {
        lp_tensor_list sd;
        lp_tensor_list_init(&sd);
        CHECK(lp_net_state_dict(net, &sd) == LP_OK, "state dict");
        for (int i = 0; i < sd.count; i++) { /* mark the weights: 0.5 everywhere */
            float *p = sd.items[i].t.data;
            for (int64_t j = 0; j < lp_tensor_numel(&sd.items[i].t); j++) p[j] = 0.5f;
        }
        lp_named_tensor *c6w = lp_tensor_list_find(&sd, "classifier.6.weight"), *c6b = lp_tensor_list_find(&sd, "classifier.6.bias");
        CHECK(c6w && c6b, "classifier.6 present");
        if (c6w && c6b) {
            lp_tensor_free(&c6w->t);
            lp_tensor_free(&c6b->t);
            lp_tensor_alloc(&c6w->t, LP_F32, 2, (int64_t[]){1000, 4096});
            lp_tensor_alloc(&c6b->t, LP_F32, 1, (int64_t[]){1000});
            memset(c6w->t.data, 0, lp_tensor_nbytes(&c6w->t));
            memset(c6b->t.data, 0, lp_tensor_nbytes(&c6b->t));
        }
        char *skipped = NULL;
        lp_status st = lp_weights_load_into(net, &sd, NULL, &skipped, NULL);
        CHECK(st == LP_OK, "load_into: %s", lp_errmsg());
        CHECK(skipped && !strcmp(skipped, "classifier.6.weight,classifier.6.bias"), "skipped: %s", skipped ? skipped : "(none)");
        free(skipped);
        for (int i = 0; i < lp_net_param_count(net); i++) {
            const char *nm = lp_net_param_name(net, i);
            if (!strncmp(nm, "classifier.6", 12)) continue;
            CHECK(lp_net_param(net, i)[0] == 0.5f, "%s loaded", nm);
        }
        lp_named_tensor *f10 = lp_tensor_list_find(&sd, "features.10.weight");
        if (f10) f10->t.shape[1] = 64, f10->t.shape[0] = 512; /* same numel, wrong shape */
        st = lp_weights_load_into(net, &sd, NULL, NULL, NULL);
        CHECK(st == LP_ERR_SHAPE && strstr(lp_errmsg(), "features.10.weight") && strstr(lp_errmsg(), "(512, 64, 3, 3)"), "bad shape: %s", lp_errmsg());
        lp_tensor_list_free(&sd);
        lp_net_free(net);
    }
    if (failures) fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
