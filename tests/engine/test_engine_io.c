/* Engine API and bad-input tests: safetensors round trip and every malformed
 * file case (truncated, header longer than the file, overlapping or
 * out-of-range offsets, bad JSON, unknown dtype); state dict errors (wrong
 * shape, unknown and missing names); checkpoints and lp_model; head specs,
 * freezing, plan reuse across batch sizes, gradient accumulation, dropout
 * determinism across thread counts; a public call that succeeds after a failed
 * one leaves lp_errmsg() empty. Exits non-zero on failure. */
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "nn/nn.h"
#include "nn/optim.h"
#include "nn/nn_impl.h" /* test_bf16_copies looks at which layers got the copies */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int failures = 0;
#define EXPECT(cond, ...)                                   \
    do {                                                    \
        if (!(cond)) {                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);     \
            printf(__VA_ARGS__);                            \
            printf("\n");                                   \
            failures++;                                     \
        }                                                   \
    } while (0)
#define OK(x)                                                                   \
    do {                                                                        \
        lp_status st_ = (x);                                                    \
        if (st_) {                                                              \
            printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #x, lp_errmsg()); \
            exit(1);                                                            \
        }                                                                       \
    } while (0)
/* Expects status code and every given substring in the message. */
static void expect_err(lp_status got, lp_status want, const char *what, const char *s1, const char *s2) {
    const char *m = lp_errmsg();
    bool ok = got == want && (!s1 || strstr(m, s1)) && (!s2 || strstr(m, s2));
    printf("%-44s -> %s: %s %s\n", what, lp_status_name(got), m, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

static void write_raw(const char *path, const char *json, size_t json_len_override, size_t data_bytes) {
    FILE *f = fopen(path, "wb");
    uint64_t n = json_len_override ? json_len_override : strlen(json);
    fwrite(&n, 8, 1, f);
    fwrite(json, 1, strlen(json), f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

static void test_safetensors(void) {
    lp_tensor_list l;
    lp_tensor_list_init(&l);
    lp_tensor t;
    int64_t s1[2] = {2, 3}, s2[1] = {3}, s3[1] = {1}, s4[1] = {5};
    OK(lp_tensor_alloc(&t, LP_F32, 2, s1));
    for (int i = 0; i < 6; i++) ((float *)t.data)[i] = (float)i * 0.5f - 1.0f;
    OK(lp_tensor_list_add(&l, "a.weight", &t));
    OK(lp_tensor_alloc(&t, LP_BF16, 1, s2));
    for (int i = 0; i < 3; i++) ((uint16_t *)t.data)[i] = lp_f32_to_bf16((float)i + 0.25f);
    OK(lp_tensor_list_add(&l, "b", &t));
    OK(lp_tensor_alloc(&t, LP_I64, 1, s3));
    ((int64_t *)t.data)[0] = -1234567890123LL;
    OK(lp_tensor_list_add(&l, "step", &t));
    OK(lp_tensor_alloc(&t, LP_U8, 1, s4));
    memcpy(t.data, "hello", 5);
    OK(lp_tensor_list_add(&l, "u", &t));
    OK(lp_tensor_list_set_meta(&l, "classes", "[\"a \\\"q\\\"\",\"b\"]"));
    OK(lp_tensor_list_set_meta(&l, "format", "test"));
    OK(lp_safetensors_write("rt.safetensors", &l));
    lp_tensor_list r;
    lp_tensor_list_init(&r);
    OK(lp_safetensors_read("rt.safetensors", &r));
    EXPECT(r.count == 4, "round trip count %d", r.count);
    for (int i = 0; i < l.count; i++) {
        lp_named_tensor *x = lp_tensor_list_find(&r, l.items[i].name);
        EXPECT(x && x->t.dtype == l.items[i].t.dtype && x->t.ndim == l.items[i].t.ndim &&
                   !memcmp(x->t.shape, l.items[i].t.shape, sizeof(int64_t) * (size_t)x->t.ndim) &&
                   !memcmp(x->t.data, l.items[i].t.data, lp_tensor_nbytes(&x->t)),
               "round trip of %s", l.items[i].name);
    }
    const char *cm = lp_tensor_list_get_meta(&r, "classes");
    EXPECT(cm && !strcmp(cm, "[\"a \\\"q\\\"\",\"b\"]"), "metadata round trip: %s", cm ? cm : "(null)");
    printf("safetensors round trip (F32, BF16, I64, U8, metadata) %s\n", failures ? "FAIL" : "ok");
    /* header: data section starts 8-aligned */
    FILE *f = fopen("rt.safetensors", "rb");
    uint64_t hl;
    EXPECT(fread(&hl, 8, 1, f) == 1 && hl % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hl);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    lp_tensor_list_free(&r);
    /* truncated: cut into the last tensor */
    if (truncate("rt.safetensors", size - 3) != 0) failures++;
    lp_tensor_list_init(&r);
    expect_err(lp_safetensors_read("rt.safetensors", &r), LP_ERR_FORMAT, "truncated file", "rt.safetensors", "truncated");
    lp_tensor_list_free(&r);
    if (truncate("rt.safetensors", 5) != 0) failures++;
    lp_tensor_list_init(&r);
    expect_err(lp_safetensors_read("rt.safetensors", &r), LP_ERR_FORMAT, "file shorter than 8 bytes", "rt.safetensors", "truncated");
    lp_tensor_list_free(&r);
    lp_tensor_list_free(&l);

    struct {
        const char *what, *json;
        size_t hlen, data;
        const char *s1, *s2;
    } bad[] = {
        {"header longer than file", "{}", 4096, 0, "longer than the file", "bad1"},
        {"overlapping offsets", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         0, 16, "overlap", "'x'"},
        {"offsets past the end", "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 0, 8, "'x'", "past the end"},
        {"offsets do not match shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8, "'w'", "do not match"},
        {"unknown dtype", "{\"z\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 0, 8, "'z'", "F64"},
        {"negative dimension", "{\"n\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4, "'n'", "non-negative"},
        {"missing data_offsets", "{\"m\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 4, "'m'", "data_offsets"},
        {"header not JSON", "{\"x\": nope", 0, 0, "JSON", NULL},
        {"header is an array", "[1, 2]", 0, 0, "JSON object", NULL},
        {"metadata not strings", "{\"__metadata__\":{\"a\":1}}", 0, 0, "metadata", "'a'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, "bad%zu.safetensors", i + 1);
        write_raw(path, bad[i].json, bad[i].hlen, bad[i].data);
        lp_tensor_list_init(&r);
        lp_status st = lp_safetensors_read(path, &r);
        expect_err(st, LP_ERR_FORMAT, bad[i].what, bad[i].s1, bad[i].s2 ? bad[i].s2 : path);
        EXPECT(strstr(lp_errmsg(), path) != NULL, "message names the file %s", path);
        lp_tensor_list_free(&r);
    }
    lp_tensor_list_init(&r);
    expect_err(lp_safetensors_read("does-not-exist.safetensors", &r), LP_ERR_IO, "missing file", "does-not-exist", NULL);
    lp_tensor_list_free(&r);
}

static lp_net *tiny(const char *top, const char *head, int classes, int h, int w) {
    lp_net_config c = lp_net_default_config();
    strcpy(c.arch, "tiny");
    snprintf(c.top, sizeof c.top, "%s", top);
    snprintf(c.head, sizeof c.head, "%s", head);
    c.num_classes = classes;
    c.in_h = h;
    c.in_w = w;
    c.max_batch = 2;
    c.seed = 3;
    lp_net *net;
    OK(lp_net_create(&c, &net));
    return net;
}

static void test_state_and_checkpoint(void) {
    lp_net *net = tiny("keep", "", 2, 16, 16);
    lp_tensor_list sd;
    lp_tensor_list_init(&sd);
    OK(lp_net_state_dict(net, &sd));
    EXPECT(sd.count == 10, "tiny keep has %d tensors", sd.count);
    /* wrong shape */
    lp_named_tensor *w0 = lp_tensor_list_find(&sd, "features.0.weight");
    lp_tensor saved = w0->t, bad;
    int64_t bs[4] = {8, 1, 3, 3};
    OK(lp_tensor_alloc(&bad, LP_F32, 4, bs));
    w0->t = bad;
    expect_err(lp_net_load_state_dict(net, &sd, true, NULL), LP_ERR_SHAPE, "wrong tensor shape", "features.0.weight", "(8, 1, 3, 3)");
    EXPECT(strstr(lp_errmsg(), "(8, 3, 3, 3)") != NULL, "message has the model's shape too");
    lp_tensor_free(&w0->t);
    w0->t = saved;
    /* unknown name */
    lp_tensor extra;
    int64_t es[1] = {4};
    OK(lp_tensor_alloc(&extra, LP_F32, 1, es));
    OK(lp_tensor_list_add(&sd, "features.99.weight", &extra));
    expect_err(lp_net_load_state_dict(net, &sd, false, NULL), LP_ERR_SHAPE, "unknown tensor name", "features.99.weight", NULL);
    lp_tensor_list_free(&sd);
    /* missing: strict error, non-strict list */
    lp_tensor_list_init(&sd);
    OK(lp_net_state_dict(net, &sd));
    lp_tensor_list part = sd;
    part.count = 8; /* drop classifier.6.* */
    expect_err(lp_net_load_state_dict(net, &part, true, NULL), LP_ERR_SHAPE, "missing tensor (strict)", "classifier.6.weight", NULL);
    char *missing = NULL;
    OK(lp_net_load_state_dict(net, &part, false, &missing));
    EXPECT(missing && !strcmp(missing, "classifier.6.weight,classifier.6.bias"), "missing list: %s", missing ? missing : "(null)");
    free(missing);
    lp_tensor_list_free(&sd);

    /* checkpoint round trip + metadata + lp_model */
    lp_tensor_list meta;
    lp_tensor_list_init(&meta);
    OK(lp_tensor_list_set_meta(&meta, "classes", "[\"cat\",\"dog\"]"));
    OK(lp_tensor_list_set_meta(&meta, "preprocess", "torch"));
    OK(lp_checkpoint_save("tiny.safetensors", net, NULL, &meta));
    lp_tensor_list_free(&meta);
    lp_net *back;
    lp_tensor_list all;
    OK(lp_checkpoint_load("tiny.safetensors", &back, &all));
    bool same = lp_net_num_weights(net) == lp_net_num_weights(back);
    for (int i = 0; same && i < lp_net_param_count(net); i++)
        same = !memcmp(lp_net_param_data(net, i), lp_net_param_data(back, i), lp_net_param_numel(net, i) * 4);
    EXPECT(same, "checkpoint round trip weights");
    const char *fmt = lp_tensor_list_get_meta(&all, "format"), *isz = lp_tensor_list_get_meta(&all, "input_size");
    EXPECT(fmt && !strcmp(fmt, "loupe-checkpoint-1") && isz && !strcmp(isz, "16x16"), "checkpoint metadata");
    lp_tensor_list_free(&all);
    lp_net_free(back);
    OK(lp_checkpoint_set_meta("tiny.safetensors", "temperature", "1.37"));
    lp_model *m;
    OK(lp_model_load("tiny.safetensors", &m));
    EXPECT(lp_model_num_classes(m) == 2 && !strcmp(lp_model_class_name(m, 1), "dog") && lp_model_class_name(m, 2) == NULL,
           "model classes");
    EXPECT(lp_model_meta(m, "temperature") && !strcmp(lp_model_meta(m, "temperature"), "1.37"), "set_meta temperature");
    EXPECT(!strcmp(lp_model_meta(m, "preprocess"), "torch") && !strcmp(lp_model_arch(m), "tiny"), "model meta");
    int c, h, w;
    lp_model_input_size(m, &c, &h, &w);
    EXPECT(c == 3 && h == 16 && w == 16, "input size");
    char *text;
    OK(lp_model_summary(m, &text));
    EXPECT(strstr(text, "features.0 (Conv2d 3x3)") && strstr(text, "classifier.6") && strstr(text, "Total params: 55,922"),
           "summary:\n%s", text);
    printf("%s", text);
    free(text);
    lp_model_free(m);
    /* not a loupe checkpoint */
    lp_tensor_list_init(&sd);
    OK(lp_net_state_dict(net, &sd));
    OK(lp_safetensors_write("plain.safetensors", &sd));
    lp_tensor_list_free(&sd);
    expect_err(lp_model_load("plain.safetensors", &m), LP_ERR_FORMAT, "safetensors without loupe metadata", "plain.safetensors",
               "not a loupe checkpoint");
    /* lp_checkpoint_set_meta keeps the metadata describing the network its tensors fit */
    expect_err(lp_checkpoint_set_meta("tiny.safetensors", "num_classes", "3"), LP_ERR_ARG, "set_meta num_classes", "num_classes",
               "describes the network");
    expect_err(lp_checkpoint_set_meta("tiny.safetensors", "temperature", "-3"), LP_ERR_ARG, "set_meta temperature -3", "-3",
               "0.001..1000");
    expect_err(lp_checkpoint_set_meta("tiny.safetensors", "classes", "[\"a\",\"b\",\"c\"]"), LP_ERR_FORMAT,
               "set_meta classes of another count", "tiny.safetensors", "class");
    OK(lp_model_load("tiny.safetensors", &m)); /* untouched by the refusals */
    lp_model_free(m);
    /* checkpoint whose tensors do not fit its metadata (written by another tool) */
    lp_tensor_list_init(&sd);
    OK(lp_safetensors_read("tiny.safetensors", &sd));
    OK(lp_tensor_list_set_meta(&sd, "num_classes", "3"));
    OK(lp_tensor_list_set_meta(&sd, "classes", "[\"a\",\"b\",\"c\"]"));
    OK(lp_safetensors_write("tiny.safetensors", &sd));
    lp_tensor_list_free(&sd);
    expect_err(lp_model_load("tiny.safetensors", &m), LP_ERR_SHAPE, "checkpoint tensors vs metadata", "classifier.6.weight",
               "tiny.safetensors");
    lp_net_free(net);
}

static void test_net_api(void) {
    lp_net_config c = lp_net_default_config();
    lp_net *net = NULL;
    struct {
        const char *arch, *top, *head, *msg;
        int classes, size;
    } bad[] = {
        {"tiny", "none", "flatten,dense:3", "3 units", 2, 16},
        {"tiny", "none", "conv,dense", "unknown layer", 2, 16},
        {"tiny", "none", "dense:4,flatten,dense", "flatten or gap", 2, 16},
        {"tiny", "none", "flatten,dropout:1.5,dense", "dropout", 2, 16},
        {"tiny", "none", "flatten,dense:4:relu", "", 2, 16},
        {"tiny", "none", "flatten", "end with a dense", 2, 16},
        {"resnet101", "none", "flatten,dense", "unknown architecture", 2, 16},
        {"tiny", "most", "", "unknown top", 2, 16},
        {"vgg16", "none", "flatten,dense", "smaller than the 2x2", 2, 16},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = lp_net_default_config();
        strcpy(c.arch, bad[i].arch);
        strcpy(c.top, bad[i].top);
        strcpy(c.head, bad[i].head);
        c.num_classes = bad[i].classes;
        c.in_h = c.in_w = bad[i].size;
        lp_status st = lp_net_create(&c, &net);
        char what[96];
        snprintf(what, sizeof what, "config %s/%s/%s", bad[i].arch, bad[i].top, bad[i].head);
        if (!bad[i].msg[0]) EXPECT(st == LP_ERR_ARG, "final dense 4 units vs 2 classes accepted");
        else expect_err(st, LP_ERR_ARG, what, bad[i].msg, NULL);
        lp_net_free(net);
        net = NULL;
    }
    /* freeze prefixes on VGG16 names */
    c = lp_net_default_config();
    strcpy(c.top, "none");
    strcpy(c.head, "gap,dense");
    c.in_h = c.in_w = 32;
    OK(lp_net_create(&c, &net));
    /* features.1 is a ReLU: no parameter, and features.10/11... must not match */
    expect_err(lp_net_freeze(net, "features.1"), LP_ERR_ARG, "freeze features.1 (a ReLU)", "features.1", NULL);
    for (int i = 0; i < lp_net_param_count(net); i++)
        EXPECT(lp_net_param_trainable(net, i), "features.1 froze %s", lp_net_param_name(net, i));
    OK(lp_net_freeze(net, "features.10"));
    int frozen = 0;
    for (int i = 0; i < lp_net_param_count(net); i++) frozen += !lp_net_param_trainable(net, i);
    EXPECT(frozen == 2, "features.10 froze %d tensors", frozen);
    OK(lp_net_freeze(net, "base"));
    for (int i = 0; i < lp_net_param_count(net); i++)
        EXPECT(lp_net_param_trainable(net, i) == !strncmp(lp_net_param_name(net, i), "head.", 5), "base freeze of %s",
               lp_net_param_name(net, i));
    expect_err(lp_net_freeze(net, "classifier."), LP_ERR_ARG, "freeze prefix matching nothing", "classifier.", NULL);
    OK(lp_net_freeze(net, "none"));
    lp_net_free(net);
    printf("head specs and freezing: %s\n", failures ? "FAIL" : "ok");

    /* call order errors, label range, batch changes, accumulation, all frozen */
    net = tiny("keep", "", 3, 12, 10);
    const int per = 3 * 12 * 10;
    float x[5 * 360], logits[5 * 3], l3[5 * 3], loss;
    for (int i = 0; i < 5 * per; i++) x[i] = sinf((float)i * 0.37f);
    int labels[5] = {0, 1, 2, 1, 0}, badl[1] = {3};
    expect_err(lp_net_backward(net), LP_ERR_ARG, "backward before forward", "forward", NULL);
    expect_err(lp_net_forward(net, x, 0, true, 0, logits), LP_ERR_ARG, "batch of 0", "batch", NULL);
    OK(lp_net_forward(net, x, 1, true, 0, logits));
    expect_err(lp_net_loss(net, badl, 1, NULL, NULL, &loss), LP_ERR_ARG, "label out of range", "label 3", NULL);
    expect_err(lp_net_loss(net, labels, 2, NULL, NULL, &loss), LP_ERR_ARG, "loss batch differs from forward", "batch", NULL);
    OK(lp_net_forward(net, x, 3, false, 0, l3));
    OK(lp_net_forward(net, x, 1, false, 0, logits));
    OK(lp_net_forward(net, x, 5, false, 0, logits)); /* larger than max_batch: buffers grow */
    OK(lp_net_forward(net, x, 3, false, 0, logits));
    double d = 0;
    for (int i = 0; i < 9; i++) d = fmax(d, fabs(logits[i] - l3[i]));
    EXPECT(d < 1e-5, "same inputs, batch 3 after batch 5/1: max diff %g", d);
    expect_err(lp_net_backward(net), LP_ERR_ARG, "backward after an eval forward", NULL, NULL);
    lp_net_zero_grad(net);
    OK(lp_net_forward(net, x, 3, true, 9, logits));
    OK(lp_net_loss(net, labels, 3, NULL, NULL, &loss));
    OK(lp_net_backward(net));
    /* backward writes input gradients over the activations: a second one must refuse */
    expect_err(lp_net_backward(net), LP_ERR_ARG, "second backward on one forward", "forward again", NULL);
    size_t nw = lp_net_num_weights(net);
    float *g1 = malloc(nw * 4);
    memcpy(g1, lp_net_grads(net), nw * 4);
    OK(lp_net_forward(net, x, 3, true, 9, logits));
    OK(lp_net_loss(net, labels, 3, NULL, NULL, &loss));
    OK(lp_net_backward(net));
    double worst = 0, gmax = 0;
    for (size_t i = 0; i < nw; i++) {
        worst = fmax(worst, fabs(lp_net_grads(net)[i] - 2 * g1[i]));
        gmax = fmax(gmax, fabs(g1[i]));
    }
    EXPECT(gmax > 0 && worst <= 1e-5 * gmax, "gradients accumulate over two backward calls (%g)", worst / gmax);
    lp_net_zero_grad(net);
    for (size_t i = 0; i < nw; i++)
        if (lp_net_grads(net)[i] != 0) {
            EXPECT(0, "zero_grad left %g at %zu", lp_net_grads(net)[i], i);
            break;
        }
    OK(lp_net_freeze(net, "features."));
    OK(lp_net_freeze(net, "classifier."));
    OK(lp_net_forward(net, x, 3, true, 9, logits));
    OK(lp_net_loss(net, labels, 3, NULL, NULL, &loss));
    OK(lp_net_backward(net));
    for (size_t i = 0; i < nw; i++)
        if (lp_net_grads(net)[i] != 0) {
            EXPECT(0, "all frozen: grad %g at %zu", lp_net_grads(net)[i], i);
            break;
        }
    /* dropout masks do not depend on the thread count */
#ifdef _OPENMP
    size_t cnt;
    OK(lp_net_forward(net, x, 5, true, 77, logits));
    const float *m = lp_net_dropout_mask(net, "classifier.2", &cnt);
    float *m1 = malloc(cnt * 4);
    memcpy(m1, m, cnt * 4);
    int saved = lp_get_threads();
    lp_set_threads(1);
    OK(lp_net_forward(net, x, 5, true, 77, logits));
    m = lp_net_dropout_mask(net, "classifier.2", &cnt);
    EXPECT(!memcmp(m, m1, cnt * 4), "dropout mask differs between thread counts");
    OK(lp_net_forward(net, x, 5, true, 78, logits));
    EXPECT(memcmp(lp_net_dropout_mask(net, "classifier.2", NULL), m1, cnt * 4), "dropout mask ignores the seed");
    lp_set_threads(saved);
    free(m1);
#endif
    free(g1);
    lp_net_free(net);
    printf("net API checks: %s\n", failures ? "FAIL" : "ok");
}

/* A step that makes weights non-finite is reported, not hidden: ReLU maps NaN to 0,
 * so a net with NaN conv weights can still give a finite loss. */
/* arch with top=none, head gap,dense, size x size inputs, max_batch 2 */
static lp_net_config gap_config(const char *arch, int size) {
    lp_net_config c = lp_net_default_config();
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    strcpy(c.top, "none");
    strcpy(c.head, "gap,dense");
    c.in_h = c.in_w = size;
    c.max_batch = 2;
    return c;
}

static void test_optim_non_finite(void) {
    lp_net_config c = gap_config("tiny", 16);
    for (int kind = 0; kind < 2; kind++) {
        lp_net *net;
        lp_optim *opt;
        OK(lp_net_create(&c, &net));
        lp_optim_config oc = lp_optim_default_config(kind ? LP_OPT_ADAM : LP_OPT_SGD);
        OK(lp_optim_create(net, &oc, &opt));
        float x[2 * 3 * 16 * 16];
        for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = lp_rng_uniform(5, 1, i);
        int labels[2] = {0, 1};
        float loss;
        OK(lp_net_forward(net, x, 2, true, 0, NULL));
        OK(lp_net_loss(net, labels, 2, NULL, NULL, &loss));
        lp_net_zero_grad(net);
        OK(lp_net_backward(net));
        OK(lp_optim_step(opt, 0.01f));
        /* a NaN gradient in features.0.weight: that parameter is named */
        OK(lp_net_forward(net, x, 2, true, 1, NULL));
        OK(lp_net_loss(net, labels, 2, NULL, NULL, &loss));
        lp_net_zero_grad(net);
        OK(lp_net_backward(net));
        lp_net_grad(net, 0)[3] = NAN;
        expect_err(lp_optim_step(opt, 0.01f), LP_ERR_NUMERIC, kind ? "adam: NaN gradient -> NaN weight" : "sgd: NaN gradient -> NaN weight",
                   "features.0.weight", "NaN/Inf");
        /* the forward of that net hides it: its loss is finite */
        OK(lp_net_forward(net, x, 2, true, 2, NULL));
        lp_status st = lp_net_loss(net, labels, 2, NULL, NULL, &loss);
        printf("loss of the net with a NaN conv weight: %g (%s)\n", loss, st ? "error" : "finite: the check above is needed");
        lp_optim_free(opt);
        lp_net_free(net);
    }
}

/* One training step of net on (x, labels); grads of param 0 into g0 when given. */
static void train_step(lp_net *net, lp_optim *opt, const float *x, const int *labels, int n, float *g0) {
    float loss;
    OK(lp_net_forward(net, x, n, true, 0, NULL));
    OK(lp_net_loss(net, labels, n, NULL, NULL, &loss));
    lp_net_zero_grad(net);
    OK(lp_net_backward(net));
    if (g0) memcpy(g0, lp_net_grad(net, 0), lp_net_param_numel(net, 0) * sizeof(float));
    if (opt) OK(lp_optim_step(opt, 0.01f));
}

/* A net of config c with SGD (momentum 0.9) on it. */
static void sgd_net(const lp_net_config *c, lp_net **net, lp_optim **opt) {
    OK(lp_net_create(c, net));
    lp_optim_config oc = lp_optim_default_config(LP_OPT_SGD);
    oc.momentum = 0.9f;
    OK(lp_optim_create(*net, &oc, opt));
}

/* The oracle of the weight-copy tests: features.0's gradient g on batch (x, labels) of n
 * from a fresh net of config c with net's weights (frozen: a layer to freeze, or NULL),
 * whose weight copies come from oneDNN's reorders. */
static void fresh_net_grad0(const lp_net_config *c, lp_net *net, const char *frozen, const float *x, const int *labels, int n,
                            float *g) {
    lp_net *ref;
    lp_tensor_list sd;
    lp_tensor_list_init(&sd);
    OK(lp_net_state_dict(net, &sd));
    OK(lp_net_create_ex(c, false, &ref));
    OK(lp_net_load_state_dict(ref, &sd, true, NULL));
    if (frozen) OK(lp_net_freeze(ref, frozen));
    train_step(ref, NULL, x, labels, n, g);
    lp_tensor_list_free(&sd);
    lp_net_free(ref);
}

/* The optimizer writes backward-data's copy of blocked conv weights as it updates
 * them (store.c). A layer frozen after such a step, then changed by hand, must not
 * get that old copy marked current by a later step: the input gradient it passes
 * down would come from its old weights. Oracle: a fresh net with the same weights. */
static void test_weights_copy_after_freeze(void) {
    lp_net_config c = gap_config("vgg16", 32);
    c.conv_algo = LP_CONV_DIRECT;
    lp_net *net;
    lp_optim *opt;
    sgd_net(&c, &net, &opt);
    static float x[2 * 3 * 32 * 32];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = lp_rng_uniform(7, 1, i);
    int labels[2] = {0, 1}, p10 = -1;
    for (int i = 0; i < lp_net_param_count(net); i++)
        if (!strcmp(lp_net_param_name(net, i), "features.10.weight")) p10 = i;
    train_step(net, opt, x, labels, 2, NULL);
    OK(lp_net_freeze(net, "features.10"));
    float *w = lp_net_param(net, p10);
    for (size_t i = 0; i < lp_net_param_numel(net, p10); i++) w[i] *= 0.5f;
    OK(lp_optim_step(opt, 0.01f)); /* the trainable layers again; features.10 skipped */
    size_t n0 = lp_net_param_numel(net, 0);
    float *ga = malloc(n0 * sizeof(float)), *gb = malloc(n0 * sizeof(float));
    train_step(net, NULL, x, labels, 2, ga);
    fresh_net_grad0(&c, net, "features.10", x, labels, 2, gb);
    double d = 0, m = 0;
    for (size_t i = 0; i < n0; i++) d = fmax(d, fabs(ga[i] - gb[i])), m = fmax(m, fabs(gb[i]));
    EXPECT(m > 0 && d <= 1e-6 * m, "features.0 gradient after freezing and changing features.10: %g off (of %g)", d, m);
    printf("frozen-then-changed layer: features.0 gradient matches a fresh net's (%g of %g)\n", d, m);
    free(ga), free(gb);
    lp_optim_free(opt);
    lp_net_free(net);
}

/* bf16 training: the optimizer writes the bf16 forward and backward-data copies of
 * blocked conv weights, and the dense layer's copy at batches over
 * LP_DENSE_SMALL_BATCH, itself (optim.c) instead of oneDNN's reorders. Oracle: a fresh
 * net with the same weights, whose copies come from oneDNN's reorders, must compute
 * bit-identical gradients (the writer rounds as the reorders do). VGG16 (3x3) at batch 2
 * (dense in fp32: no dense copy) and 6; MobileNetV2 (1x1, whose backward-data copy is
 * input-major on AVX512-BF16) at batch 2. */
static void test_bf16_copies(const char *arch, int size, int n) {
    if (!lp_net_bf16_native()) {
        printf("bf16 copies: skipped (no native bf16 here)\n");
        return;
    }
    lp_net_config c = gap_config(arch, size);
    c.bf16 = true;
    c.max_batch = n;
    lp_net *net;
    lp_optim *opt;
    sgd_net(&c, &net, &opt);
    static float x[6 * 3 * 64 * 64];
    int labels[6] = {1, 0, 0, 1, 1, 0};
    for (size_t i = 0; i < (size_t)n * 3 * size * size; i++) x[i] = lp_rng_uniform(8, 1, i);
    train_step(net, opt, x, labels, n, NULL);
    train_step(net, opt, x, labels, n, NULL); /* the copies exist from the second step on */
    int written = 0, dense = 0;
    for (int l = 0; l < net->nlayers; l++) {
        written += net->layers[l].bf16_copies && net->layers[l].bf16_copy_bwd;
        dense += net->layers[l].bf16_copies && net->layers[l].kind == LP_LAYER_DENSE;
    }
    /* the conv copies' writer knows the layouts oneDNN picks for AMX and for AVX512-BF16
     * (store.c); VGG16's are 3x3 on both, MobileNetV2's 1x1 known on AVX512-BF16 */
    if (!strcmp(arch, "vgg16") || !lp_net_amx())
        EXPECT(written >= 10, "bf16 copies (%s): the optimizer wrote both copies for %d conv layers (want 10 or more)", arch,
               written);
    const int want_dense = n > LP_DENSE_SMALL_BATCH;
    EXPECT(dense == want_dense, "bf16 copies at batch %d: the optimizer wrote the copy of %d dense layers (want %d)", n, dense,
           want_dense);
    /* the dense copy, marked current, is the weights rounded to nearest even (core's
     * scalar rounding, not the instruction the optimizer uses) */
    size_t stale = 0, nd = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const lp_layer *L = &net->layers[l];
        if (L->kind != LP_LAYER_DENSE || !L->bf16_copies) continue;
        const float *w = net->weights + net->params[L->pw].offset;
        const uint16_t *cp = L->wf.p;
        EXPECT(L->wf_valid, "bf16 copies: %s's copy not marked current after a step", L->name);
        for (size_t j = 0; j < lp_net_param_numel(net, L->pw); j++, nd++) stale += cp[j] != lp_f32_to_bf16(w[j]);
    }
    EXPECT(nd == 0 || stale == 0, "bf16 copies: %zu of %zu dense copy values are not the weights rounded", stale, nd);
    size_t n0 = lp_net_param_numel(net, 0);
    float *ga = malloc(n0 * sizeof(float)), *gb = malloc(n0 * sizeof(float));
    train_step(net, NULL, x, labels, n, ga);
    fresh_net_grad0(&c, net, NULL, x, labels, n, gb);
    size_t diff = 0;
    double m = 0;
    for (size_t i = 0; i < n0; i++) diff += ga[i] != gb[i], m = fmax(m, fabs(gb[i]));
    EXPECT(m > 0 && diff == 0, "bf16 copies (%s): the first conv's gradient differs from a fresh net's in %zu of %zu values", arch,
           diff, n0);
    printf("bf16 copies (%s) at batch %d written by the optimizer in %d conv and %d dense layers: the first conv's gradient "
           "against a fresh net's: %zu of %zu values differ; dense copy: %zu of %zu not the weights rounded\n",
           arch, n, written, dense, diff, n0, stale, nd);
    free(ga), free(gb);
    lp_optim_free(opt);
    lp_net_free(net);
}

/* The optimizer's writer of a dense layer's bf16 copy, on every start offset within a
 * 32-byte line and lengths 0-70 (masked head, streamed middle, masked tail): exactly
 * [lo, hi) written, each value core's scalar rounding of its weight. */
static void test_bf16_plain_range(void) {
    if (LP_X86_KERNELS && !lp_net_bf16_native()) { /* AVX512-BF16 code, run where loupe trains in bf16; plain C
                                                      without our x86-64 code (backend.h) */
        printf("bf16 plain copy writer: skipped (no AVX512-BF16 here)\n");
        return;
    }
    enum { N = 160 };
    float *w = lp_aligned_alloc(N * sizeof(float));
    uint16_t *c = lp_aligned_alloc(N * sizeof(uint16_t));
    for (int j = 0; j < N; j++) w[j] = (lp_rng_uniform(9, 1, j) - 0.5f) * 8.0f;
    w[17] = INFINITY, w[40] = -0.0f, w[41] = NAN;
    size_t bad = 0, cases = 0;
    for (int lo = 0; lo < 48; lo++)
        for (int len = 0; len <= 70; len++, cases++) {
            for (int j = 0; j < N; j++) c[j] = 0xabcd;
            lp_bf16_plain_range(c, w, lo, lo + len);
            for (int j = 0; j < N; j++) bad += c[j] != (j >= lo && j < lo + len ? lp_f32_to_bf16(w[j]) : 0xabcd);
        }
    EXPECT(bad == 0, "bf16 plain copy writer: %zu wrong values over %zu ranges", bad, cases);
    printf("bf16 plain copy writer: %zu ranges, %zu wrong values\n", cases, bad);
    free(w), free(c);
}

/* One training step of net on the first n of (x, labels): fused (lp_net_backward_step)
 * or backward then lp_optim_step. */
static void train_step_fused(lp_net *net, lp_optim *opt, const float *x, const int *labels, int n, bool fused) {
    float loss;
    OK(lp_net_forward(net, x, n, true, 0, NULL));
    OK(lp_net_loss(net, labels, n, NULL, NULL, &loss));
    if (fused) {
        OK(lp_net_backward_step(net, opt, 0.05f));
    } else {
        lp_net_zero_grad(net);
        OK(lp_net_backward(net));
        OK(lp_optim_step(opt, 0.05f));
    }
}

/* bf16 dense layers run in bf16 above LP_DENSE_SMALL_BATCH and in fp32 at or below, and
 * the optimizer writes their copy only while training reads it. One net switching batch
 * sizes (fused and plain steps) must never use a stale copy: after each step every copy
 * marked current is the weights rounded, and evaluation logits equal those of a fresh
 * net from the same state dict, bit for bit. Heads: 37 classes; 3000 (its update runs
 * in chunks across threads); and top=keep (three dense layers, backward data in bf16). */
static void test_dense_copy_batch_switch(void) {
    if (!lp_net_bf16_native()) {
        printf("dense copy across batch sizes: skipped (no native bf16 here)\n");
        return;
    }
    static const struct {
        const char *top;
        int classes;
    } cfgs[] = {{"none", 37}, {"none", 3000}, {"keep", 10}};
    static const int seq[][2] = {{6, 0}, {6, 0}, {8, 1}, {3, 0}, {6, 0}, {2, 1}, {7, 1}, {7, 0}, {4, 1}, {5, 0}};
    static float x[8 * 3 * 16 * 16];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = lp_rng_uniform(10, 1, i);
    const int labels[8] = {1, 0, 3, 9, 5, 2, 7, 1};
    for (int k = 0; k < 3; k++) {
        lp_net_config c = gap_config("tiny", 16);
        strcpy(c.top, cfgs[k].top);
        if (!strcmp(c.top, "keep")) c.head[0] = 0;
        c.num_classes = cfgs[k].classes;
        c.max_batch = 8;
        c.bf16 = true;
        lp_net *net;
        lp_optim *opt;
        sgd_net(&c, &net, &opt);
        size_t stale = 0, differ = 0, checked = 0;
        float *a = malloc(sizeof(float) * 8 * (size_t)c.num_classes), *b = malloc(sizeof(float) * 8 * (size_t)c.num_classes);
        for (int s = 0; s < 10; s++) {
            const int n = seq[s][0];
            train_step_fused(net, opt, x, labels, n, seq[s][1]);
            for (int l = 0; l < net->nlayers; l++) {
                const lp_layer *L = &net->layers[l];
                if (L->kind != LP_LAYER_DENSE || !L->wf_valid) continue;
                const float *w = net->weights + net->params[L->pw].offset;
                const uint16_t *cp = L->wf.p;
                for (size_t j = 0; j < lp_net_param_numel(net, L->pw); j++, checked++) stale += cp[j] != lp_f32_to_bf16(w[j]);
            }
            const int ne = n > LP_DENSE_SMALL_BATCH ? n : 6; /* evaluated in bf16 */
            OK(lp_net_forward(net, x, ne, false, 0, a));
            lp_tensor_list sd;
            lp_tensor_list_init(&sd);
            OK(lp_net_state_dict(net, &sd));
            lp_net *ref;
            OK(lp_net_create_ex(&c, false, &ref));
            OK(lp_net_load_state_dict(ref, &sd, true, NULL));
            OK(lp_net_forward(ref, x, ne, false, 0, b));
            for (int i = 0; i < ne * c.num_classes; i++) differ += a[i] != b[i];
            lp_tensor_list_free(&sd);
            lp_net_free(ref);
        }
        EXPECT(checked > 0 && stale == 0 && differ == 0,
               "dense copy across batch sizes (top=%s, %d classes): %zu of %zu current copy values stale, %zu logits differ "
               "from a fresh net's",
               c.top, c.num_classes, stale, checked, differ);
        printf("dense copy across batch sizes (top=%s, %d classes): 10 steps, %zu of %zu current copy values stale, %zu "
               "logits differ from a fresh net's\n",
               c.top, c.num_classes, stale, checked, differ);
        free(a), free(b);
        lp_optim_free(opt);
        lp_net_free(net);
    }
}

/* lp_net_backward_step applies the update of conv layers with the small-map kernel
 * (VGG16's last six at 32x32) inside backward. Oracle: lp_net_backward then
 * lp_optim_step on a second net with the same weights: every weight must come out
 * bit-identical, with SGD (momentum) and Adam, fp32 and bf16, over five steps: the
 * two halves with a look at the gradients between, three lp_net_backward_step back to
 * back, then one unfused on both (the optimizer's flags are clean). */
/* size 32, head gap,dense: the last six conv layers fused (2x2 and 4x4 maps); size 96,
 * head flatten,dense:16:relu,dense:600:relu,dense:2: the three dense layers (rows of 4608
 * inputs: three pieces, the last one short; 600 outputs: backward data in two chunks). */
static void test_fused_step(bool bf16, lp_opt_kind kind, int size) {
    static const char *names[] = {"sgd", "adam", "adamw"};
    char what[32];
    snprintf(what, sizeof what, "%s%s", names[kind], size == 32 ? "" : " dense");
    if (bf16 && !lp_net_bf16_native()) {
        printf("fused step bf16 %s: skipped (no native bf16 here)\n", what);
        return;
    }
    lp_net_config c = gap_config("vgg16", size);
    if (size != 32) strcpy(c.head, "flatten,dense:16:relu,dense:600:relu,dense:2");
    c.conv_algo = LP_CONV_DIRECT;
    c.bf16 = bf16;
    lp_net *a, *b;
    lp_optim *oa, *ob;
    lp_optim_config oc = lp_optim_default_config(kind);
    oc.momentum = kind == LP_OPT_SGD ? 0.9f : 0.0f;
    if (kind == LP_OPT_SGD && size != 32) oc.nesterov = true, oc.weight_decay = 1e-3f; /* "sgd dense": nesterov, decay */
    OK(lp_net_create(&c, &a));
    OK(lp_net_create(&c, &b));
    lp_tensor_list sd;
    lp_tensor_list_init(&sd);
    OK(lp_net_state_dict(a, &sd));
    OK(lp_net_load_state_dict(b, &sd, true, NULL));
    lp_tensor_list_free(&sd);
    OK(lp_optim_create(a, &oc, &oa));
    OK(lp_optim_create(b, &oc, &ob));
    static float x[2 * 3 * 96 * 96];
    const size_t nx = (size_t)2 * 3 * size * size;
    int labels[2] = {1, 0}, p28 = -1;
    for (int i = 0; i < lp_net_param_count(a); i++)
        if (!strcmp(lp_net_param_name(a, i), size == 32 ? "features.28.weight" : "head.1.weight")) p28 = i;
    const float lr = kind == LP_OPT_SGD ? 0.01f : 1e-4f;
    for (int step = 0; step < 5; step++) {
        for (size_t i = 0; i < nx; i++) x[i] = lp_rng_uniform(9, (uint64_t)step, i);
        float la, lb;
        OK(lp_net_forward(a, x, 2, true, 0, NULL));
        OK(lp_net_loss(a, labels, 2, NULL, NULL, &la));
        lp_net_zero_grad(a);
        OK(lp_net_backward(a));
        OK(lp_net_forward(b, x, 2, true, 0, NULL));
        OK(lp_net_loss(b, labels, 2, NULL, NULL, &lb));
        lp_net_zero_grad(b);
        if (step == 0) {
            /* the two halves of lp_net_backward_step: between them, features.28's (or
             * head.1's) weight gradient was consumed by the fused update, its bias
             * gradient was not */
            OK(lp_net_backward_fused(b, ob, lr));
            /* the conv layers fuse where the small-map backward weights runs: our x86-64
             * kernel from AVX2 on (conv2d.c's table); the dense layers' loops at any level */
            const bool consumed = size != 32 || (LP_X86_KERNELS && lp_cpu_isa() >= LP_ISA_AVX2);
            size_t n28 = lp_net_param_numel(a, p28), nz_a = 0, nz_b = 0;
            const float *ga = lp_net_grad(a, p28), *gb = lp_net_grad(b, p28), *bias = lp_net_grad(b, p28 + 1);
            for (size_t i = 0; i < n28; i++) nz_a += ga[i] != 0, nz_b += gb[i] != 0;
            size_t nz_bias = 0;
            for (size_t i = 0; i < lp_net_param_numel(b, p28 + 1); i++) nz_bias += bias[i] != 0;
            EXPECT(nz_a > 0 && (nz_b == 0) == consumed && nz_bias > 0,
                   "fused step %s at %s: %s's gradient has %zu non-zeros unfused, %zu fused (want > 0 and %s)", what,
                   lp_isa_name(lp_cpu_isa()), lp_net_param_name(a, p28), nz_a, nz_b,
                   consumed ? "0: the fused update consumed it" : "> 0: no fused update here");
            OK(lp_optim_step(ob, lr));
        } else if (step < 4) { /* back to back, nothing reading gradients in between */
            OK(lp_net_backward_step(b, ob, lr));
            if (step == 1) { /* loupe bench's update timed alone leaves the training as it was */
                double t = 0;
                OK(lp_optim_time_update(ob, &t));
                EXPECT(t > 0, "fused step %s: the update alone took %g s", what, t);
            }
        } else {
            OK(lp_net_backward(b));
            OK(lp_optim_step(ob, lr));
        }
        OK(lp_optim_step(oa, lr));
        EXPECT(la == lb, "fused step %s %s: step %d loss %.9g vs %.9g", what, bf16 ? "bf16" : "fp32", step, la, lb);
    }
    size_t diff = 0, total = 0;
    for (int i = 0; i < lp_net_param_count(a); i++) {
        const float *wa = lp_net_param_data(a, i), *wb = lp_net_param_data(b, i);
        for (size_t j = 0; j < lp_net_param_numel(a, i); j++) diff += memcmp(&wa[j], &wb[j], 4) != 0;
        total += lp_net_param_numel(a, i);
    }
    EXPECT(diff == 0, "fused step %s %s: %zu of %zu weights differ from backward + step", what, bf16 ? "bf16" : "fp32", diff, total);
    printf("fused step %s %s: after 5 steps %zu of %zu weights differ from lp_net_backward + lp_optim_step\n", what,
           bf16 ? "bf16" : "fp32", diff, total);
    lp_optim_free(oa), lp_optim_free(ob);
    lp_net_free(a), lp_net_free(b);
}

/* loupe.h: a public function that can fail clears the thread's message first, so a
 * success after a failure leaves lp_errmsg() empty; _free functions leave it alone. */
/* A network with branches (tiny_res) and its frozen base: the feature cache's cut after
 * the global pool (no shortcut crosses it), and the prefix then the rest give the full
 * forward's logits bit for bit, at two batch sizes (inference plans keep a fork's output
 * in its own slot while the other layers ping-pong). */
static void test_graph_prefix(void) {
    lp_net_config c = lp_net_default_config();
    strcpy(c.arch, "tiny_res");
    strcpy(c.top, "keep");
    c.num_classes = 3;
    c.in_h = 13, c.in_w = 10;
    c.max_batch = 4;
    c.seed = 5;
    lp_net *net;
    OK(lp_net_create(&c, &net));
    OK(lp_net_freeze(net, "base"));
    size_t per = 0;
    const char *name = NULL;
    const int k = lp_net_frozen_prefix(net, &per, &name);
    EXPECT(k > 0 && per == 16 && name && !strcmp(name, "avgpool"), "tiny_res frozen prefix: %d layers, %zu features, after %s", k, per,
           name ? name : "-");
    for (int n = 1; n <= 4; n += 3) {
        const size_t in = (size_t)n * 3 * 13 * 10;
        float *x = malloc(in * sizeof(float)), *feat = malloc((size_t)n * 16 * sizeof(float));
        float full[12], part[12];
        for (size_t i = 0; i < in; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
        OK(lp_net_forward(net, x, n, false, 0, full));
        if (k > 0) {
            OK(lp_net_forward_prefix(net, x, n, k, feat));
            OK(lp_net_forward_from(net, k, feat, n, false, 0, part));
            EXPECT(!memcmp(full, part, (size_t)n * 3 * sizeof(float)), "tiny_res batch %d: prefix + rest differ from the forward", n);
        }
        free(x), free(feat);
    }
    lp_net_free(net);
    printf("branches: frozen prefix and feature cache: %s\n", failures ? "FAIL" : "ok");
}

static void test_errmsg_cleared(void) {
    const char *path = "errmsg_cleared.safetensors", *bad = "no-such-folder/errmsg.safetensors";
#define FAILS(call) EXPECT((call) != LP_OK && lp_errmsg()[0], "%s should fail with a message", #call)
#define CLEARS(call)                                                                                   \
    do {                                                                                               \
        OK(call);                                                                                      \
        EXPECT(!lp_errmsg()[0], "%s succeeded after a failure, lp_errmsg() still \"%s\"", #call, lp_errmsg()); \
    } while (0)
    lp_model *m = NULL, *back = NULL;
    FAILS(lp_model_load(bad, &back));
    lp_model_params p = lp_model_default_params();
    p.arch = "tiny";
    p.in_height = p.in_width = 16;
    CLEARS(lp_model_create(&p, &m));
    FAILS(lp_model_save(m, bad));
    char *text = NULL;
    CLEARS(lp_model_summary(m, &text));
    free(text);
    FAILS(lp_checkpoint_set_meta(bad, "temperature", "1.5"));
    CLEARS(lp_model_save(m, path));
    FAILS(lp_weights_convert(bad, path, NULL, NULL));
    CLEARS(lp_checkpoint_set_meta(path, "temperature", "1.5"));
    FAILS(lp_model_load(bad, &back));
    CLEARS(lp_model_load(path, &back));
    FAILS(lp_model_save(m, bad));
    lp_model_free(back);
    EXPECT(lp_errmsg()[0], "lp_model_free cleared the message of the failure before it");
    lp_model_free(m);
    remove(path);
#undef FAILS
#undef CLEARS
}

int main(void) {
    test_weights_copy_after_freeze();
    test_bf16_copies("vgg16", 32, 2);
    test_bf16_copies("vgg16", 32, 6);
    test_bf16_copies("mobilenet_v2", 64, 2);
    test_bf16_plain_range();
    test_dense_copy_batch_switch();
    for (int size = 32; size <= 96; size += 64) {
        test_fused_step(false, LP_OPT_SGD, size);
        test_fused_step(false, LP_OPT_ADAM, size);
        test_fused_step(true, LP_OPT_SGD, size);
        test_fused_step(true, LP_OPT_ADAM, size);
    }
    test_fused_step(false, LP_OPT_ADAMW, 96);
    test_optim_non_finite();
    test_safetensors();
    test_state_and_checkpoint();
    test_net_api();
    test_graph_prefix();
    test_errmsg_cleared();
    if (failures) printf("%d check(s) FAILED\n", failures);
    else printf("all engine API checks passed\n");
    return failures ? 1 : 0;
}
