/* Writes TensorBoard event files for the Python tests and prints, one JSON
 * object a line, what it wrote (values, or files holding the raw inputs), so
 * the test can check the files with its own reader.
 *
 *   tfevents_writer DIR          scalars, histograms, images, a PR curve in
 *                                DIR/train and a second writer in DIR/validation
 *   tfevents_writer DIR --loop   writes scalar "loop" at steps 0,1,2,... and
 *                                prints each step after writing it, until killed */
#include "log/log.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIE(s) do { fprintf(stderr, "tfevents_writer:%d: %s\n", __LINE__, lp_errmsg()); return 1; } while (0)

static int save(const char *dir, const char *name, const void *data, size_t n, char *path_out, size_t cap) {
    snprintf(path_out, cap, "%s/%s", dir, name);
    FILE *f = fopen(path_out, "wb");
    if (!f) return 1;
    size_t k = fwrite(data, 1, n, f);
    return (fclose(f) != 0 || k != n);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: tfevents_writer DIR [--loop]\n");
        return 2;
    }
    const char *dir = argv[1];
    char logdir[1024], path[1200];
    lp_tb_writer *w, *v;
    if (argc > 2 && !strcmp(argv[2], "--loop")) {
        snprintf(logdir, sizeof logdir, "%s/loop", dir);
        if (lp_tb_open(logdir, &w)) DIE();
        printf("{\"kind\": \"file\", \"path\": \"%s\"}\n", lp_tb_path(w));
        fflush(stdout);
        for (int64_t step = 0;; step++) {
            if (lp_tb_scalar(w, "loop", step, 0.5 * (double)step)) DIE();
            if (step % 10 == 0 && lp_tb_flush(w)) DIE();
            printf("{\"kind\": \"step\", \"step\": %lld}\n", (long long)step);
            fflush(stdout);
        }
    }
    snprintf(logdir, sizeof logdir, "%s/train", dir);
    if (lp_tb_open(logdir, &w)) DIE();
    snprintf(logdir, sizeof logdir, "%s/validation", dir);
    if (lp_tb_open(logdir, &v)) DIE();
    printf("{\"kind\": \"file\", \"path\": \"%s\"}\n{\"kind\": \"file\", \"path\": \"%s\"}\n", lp_tb_path(w),
           lp_tb_path(v));

    /* Scalars: ordinary, tiny, huge, negative, zero; steps incl. 0, large, negative. */
    const double values[] = {0.6931471805599453, 1e-30, 3.0e38, -2.5, 0.0, 0.1, 123456.789, 1.0 / 3.0};
    const int64_t steps[] = {0, 1, 2, 3, 4, 5, 1ll << 40, -1};
    for (int i = 0; i < 8; i++) {
        const char *tag = i % 2 ? "epoch_accuracy" : "epoch_loss";
        if (lp_tb_scalar(w, tag, steps[i], values[i])) DIE();
        printf("{\"kind\": \"scalar\", \"file\": 0, \"tag\": \"%s\", \"step\": %lld, \"value\": %.17g}\n", tag,
               (long long)steps[i], values[i]);
        if (lp_tb_scalar(v, tag, steps[i], -values[i])) DIE();
        printf("{\"kind\": \"scalar\", \"file\": 1, \"tag\": \"%s\", \"step\": %lld, \"value\": %.17g}\n", tag,
               (long long)steps[i], -values[i]);
    }
    if (lp_tb_flush(w) || lp_tb_flush(v)) DIE();

    /* Histograms: normal-ish weights, a constant, with NaN/Inf, empty. */
    enum { NH = 5000 };
    float *h = malloc(sizeof(float) * NH);
    for (int i = 0; i < NH; i++) h[i] = 0.05f * lp_rng_normal(1, 0, (uint64_t)i);
    h[0] = 0.0f;
    h[1] = -0.0f;
    h[2] = 1e-13f; /* below the smallest positive limit */
    h[3] = 1e25f;  /* above 1e20: the DBL_MAX bucket */
    /* Floats at and next to every one of TF's bucket limits (the writer's
     * fast lookup must agree with a plain search there). */
    float *edges = malloc(sizeof(float) * 20000);
    size_t ne = 0;
    for (double lim = 1.0e-12; lim < 1.0e20; lim *= 1.1)
        for (int sign = -1; sign <= 1; sign += 2) {
            float y = (float)(sign * lim);
            y = nextafterf(nextafterf(y, -INFINITY), -INFINITY);
            for (int k = 0; k < 5; k++, y = nextafterf(y, INFINITY)) edges[ne++] = y;
        }
    edges[ne++] = 0.0f;
    edges[ne++] = -0.0f;
    edges[ne++] = 1e-45f; /* smallest denormal */
    edges[ne++] = -1e-45f;
    edges[ne++] = 3.4028235e38f;
    edges[ne++] = -3.4028235e38f;
    struct { const char *tag; size_t n; } hs[5] = {{"dense/kernel_0", NH}, {"const", 100}, {"with_nan", 50}, {"empty", 0}, {"edges", 0}};
    hs[4].n = ne;
    float *c = malloc(sizeof(float) * 100);
    for (int i = 0; i < 100; i++) c[i] = 0.25f;
    float nanv[50];
    for (int i = 0; i < 50; i++) nanv[i] = (float)i - 20.0f;
    nanv[5] = NAN;
    nanv[6] = INFINITY;
    nanv[7] = -INFINITY;
    const float *hv[5] = {h, c, nanv, NULL, edges};
    for (int k = 0; k < 5; k++) {
        char name[64];
        snprintf(name, sizeof name, "histo_%d.f32", k);
        if (save(dir, name, hv[k] ? hv[k] : (const float *)"", hs[k].n * sizeof(float), path, sizeof path)) return 1;
        if (lp_tb_histogram(w, hs[k].tag, 7, hv[k], hs[k].n)) DIE();
        printf("{\"kind\": \"histo\", \"file\": 0, \"tag\": \"%s\", \"step\": 7, \"values\": \"%s\"}\n", hs[k].tag, path);
    }
    free(h);
    free(c);
    free(edges);

    /* Images: an RGB gradient through lp_tb_image_rgb, a grid through lp_image_grid. */
    int H = 20, W = 30;
    uint8_t *rgb = malloc((size_t)H * W * 3);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = rgb + ((size_t)y * W + x) * 3;
            p[0] = (uint8_t)(x * 8);
            p[1] = (uint8_t)(y * 12);
            p[2] = (uint8_t)((x * y) & 255);
        }
    if (save(dir, "image.rgb", rgb, (size_t)H * W * 3, path, sizeof path)) return 1;
    if (lp_tb_image_rgb(w, "gradient", 3, rgb, H, W)) DIE();
    printf("{\"kind\": \"image\", \"file\": 0, \"tag\": \"gradient\", \"step\": 3, \"height\": %d, \"width\": %d, \"raw\": \"%s\"}\n",
           H, W, path);
    const uint8_t *imgs[5] = {rgb, rgb, rgb, rgb, rgb};
    const char *labels[5] = {"shirt 0.93", "T-SHIRT/TOP", "loss=2.70", NULL, "a"};
    uint8_t *grid;
    int gh, gw;
    if (lp_image_grid(imgs, 5, H, W, labels, &grid, &gh, &gw)) DIE();
    if (save(dir, "grid.rgb", grid, (size_t)gh * gw * 3, path, sizeof path)) return 1;
    if (lp_tb_image_rgb(w, "worst_validation_images", 3, grid, gh, gw)) DIE();
    printf("{\"kind\": \"image\", \"file\": 0, \"tag\": \"worst_validation_images\", \"step\": 3, \"height\": %d, \"width\": %d, \"raw\": \"%s\"}\n",
           gh, gw, path);
    free(grid);
    free(rgb);

    /* PR curve on 300 predictions, 11 thresholds (plus edge cases 0, 1, out of range). */
    enum { NP = 300 };
    float probs[NP];
    uint8_t labs[NP];
    for (int i = 0; i < NP; i++) {
        labs[i] = (uint8_t)(lp_rng_uniform(2, 0, (uint64_t)i) < 0.4f);
        float p = lp_rng_uniform(2, 1, (uint64_t)i);
        probs[i] = labs[i] ? sqrtf(p) : p * p;
    }
    probs[0] = 0.0f;
    probs[1] = 1.0f;
    probs[2] = 0.5f;
    if (save(dir, "pr_probs.f32", probs, sizeof probs, path, sizeof path)) return 1;
    char lpath[1200];
    if (save(dir, "pr_labels.u8", labs, sizeof labs, lpath, sizeof lpath)) return 1;
    if (lp_tb_pr_curve(v, "pr_curve", 9, probs, labs, NP, 11)) DIE();
    printf("{\"kind\": \"pr_curve\", \"file\": 1, \"tag\": \"pr_curve\", \"step\": 9, \"num_thresholds\": 11, \"probs\": \"%s\", \"labels\": \"%s\"}\n",
           path, lpath);

    /* Errors are reported, not crashes. */
    if (lp_tb_scalar(w, "", 0, 1.0) != LP_ERR_ARG) {
        fprintf(stderr, "empty tag accepted\n");
        return 1;
    }
    if (lp_tb_image_png(w, "x", 0, (const uint8_t *)"not a png", 9, 1, 1, 3) != LP_ERR_ARG) {
        fprintf(stderr, "bad png accepted\n");
        return 1;
    }
    lp_tb_close(w);
    lp_tb_close(v);
    return 0;
}
