/* data layer unit tests that need no Python: sniffing, preprocessing values,
 * resize identities, and the loader (order, determinism across worker counts,
 * augmentation determinism, cache, seek, partial batches, a file that turns bad
 * after the scan). Fixtures are PPM/PGM files written here. */
#include "data/data.h"
#include "data/transform.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond, ...) \
    do { \
        if (!(cond)) { \
            failures++; \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__); \
            fprintf(stderr, " [%s]\n", lp_errmsg()); \
        } \
    } while (0)

static void write_ppm(const char *path, int w, int h, int seed) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "P6\n%d %d\n255\n", w, h);
    for (int i = 0; i < w * h * 3; i++) fputc((i * 7 + seed * 31 + (i / 3) * seed) & 255, f);
    fclose(f);
}

static void test_sniff(void) {
    CHECK(lp_image_sniff((const uint8_t *)"\xff\xd8\xff\xe0", 4) == LP_FMT_JPEG, "jpeg");
    CHECK(lp_image_sniff((const uint8_t *)"\x89PNG\r\n\x1a\n", 8) == LP_FMT_PNG, "png");
    CHECK(lp_image_sniff((const uint8_t *)"GIF89a", 6) == LP_FMT_GIF, "gif");
    CHECK(lp_image_sniff((const uint8_t *)"P6\n1 1\n255\n", 11) == LP_FMT_PNM, "pnm");
    CHECK(lp_image_sniff((const uint8_t *)"hello world!", 12) == LP_FMT_UNKNOWN, "text");
    lp_image img;
    CHECK(lp_image_decode((const uint8_t *)"", 0, NULL, &img, NULL) == LP_ERR_FORMAT && strstr(lp_errmsg(), "empty"), "empty");
    CHECK(lp_image_decode((const uint8_t *)"GIF89a\1\0\1\0", 10, NULL, &img, NULL) == LP_ERR_FORMAT &&
              strstr(lp_errmsg(), "unsupported format (GIF)"), "gif unsupported");
    /* bomb guard: a PNM header claiming 100000 x 100000 */
    const char *bomb = "P5\n100000 100000\n255\n";
    CHECK(lp_image_decode((const uint8_t *)bomb, strlen(bomb), NULL, &img, NULL) == LP_ERR_FORMAT &&
              strstr(lp_errmsg(), "too large"), "bomb");
}

static void test_names(void) {
    lp_preprocess p;
    CHECK(lp_preprocess_parse("caffe", &p) == LP_OK && p == LP_PRE_CAFFE, "parse caffe");
    CHECK(lp_preprocess_parse("bogus", &p) == LP_ERR_ARG, "parse bogus");
    for (int i = 0; i < 4; i++) {
        CHECK(lp_preprocess_parse(lp_preprocess_name((lp_preprocess)i), &p) == LP_OK && (int)p == i, "round trip %d", i);
    }
    lp_interp it;
    CHECK(lp_interp_parse("bilinear", &it) == LP_OK && it == LP_INTERP_BILINEAR, "interp");
}

/* One 2x1 RGB image through every preprocessing mode. */
static void test_preprocess(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/pp.ppm", dir);
    FILE *f = fopen(path, "wb");
    fprintf(f, "P6\n2 1\n255\n");
    const uint8_t px[6] = {10, 20, 30, 200, 100, 0};
    fwrite(px, 1, 6, f);
    fclose(f);
    lp_loader_config c = lp_loader_default_config();
    c.width = 2;
    c.height = 1;
    float x[6];
    /* rescale */
    c.preprocess = LP_PRE_RESCALE;
    CHECK(lp_image_load(path, &c, x) == LP_OK, "load");
    CHECK(fabsf(x[0] - 10 / 255.f) < 1e-6f && fabsf(x[1] - 200 / 255.f) < 1e-6f && fabsf(x[2] - 20 / 255.f) < 1e-6f, "rescale CHW");
    c.preprocess = LP_PRE_CAFFE;
    CHECK(lp_image_load(path, &c, x) == LP_OK, "load");
    /* channel 0 = B - 103.939 */
    CHECK(fabsf(x[0] - (30 - 103.939f)) < 1e-4f && fabsf(x[1] - (0 - 103.939f)) < 1e-4f, "caffe B");
    CHECK(fabsf(x[4] - (10 - 123.68f)) < 1e-4f && fabsf(x[5] - (200 - 123.68f)) < 1e-4f, "caffe R");
    c.preprocess = LP_PRE_TORCH;
    CHECK(lp_image_load(path, &c, x) == LP_OK, "load");
    CHECK(fabsf(x[0] - (10 / 255.f - 0.485f) / 0.229f) < 1e-5f && fabsf(x[3] - (100 / 255.f - 0.456f) / 0.224f) < 1e-5f, "torch");
    c.preprocess = LP_PRE_NONE;
    CHECK(lp_image_load(path, &c, x) == LP_OK, "load");
    CHECK(x[0] == 10 && x[1] == 200 && x[4] == 30 && x[5] == 0, "none");
    c.channels = 1;
    CHECK(lp_image_load(path, &c, x) == LP_OK, "load gray");
    /* Pillow L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16 */
    CHECK(x[0] == (float)((10 * 19595 + 20 * 38470 + 30 * 7471 + 0x8000) >> 16), "gray %g", x[0]);
}

static void test_resize_identity(void) {
    uint8_t d[4 * 3 * 3];
    for (int i = 0; i < 36; i++) d[i] = (uint8_t)(i * 7);
    lp_image img = {4, 3, 3, d};
    uint8_t out[36];
    CHECK(lp_image_resize(&img, 0, 0, 4, 3, 4, 3, LP_INTERP_BILINEAR, out) == LP_OK && !memcmp(out, d, 36), "identity");
    /* 2x nearest upscale duplicates pixels */
    uint8_t big[8 * 6 * 3];
    CHECK(lp_image_resize(&img, 0, 0, 4, 3, 8, 6, LP_INTERP_NEAREST, big) == LP_OK, "nearest up");
    CHECK(!memcmp(big + (1 * 8 + 3) * 3, d + (0 * 4 + 1) * 3, 3), "nearest pixel");
    /* constant image stays constant under bilinear downscale */
    uint8_t cst[40 * 30];
    memset(cst, 77, sizeof cst);
    lp_image ci = {40, 30, 1, cst};
    uint8_t small[7 * 5];
    CHECK(lp_image_resize(&ci, 0, 0, 40, 30, 7, 5, LP_INTERP_BILINEAR, small) == LP_OK, "bilinear down");
    for (int i = 0; i < 35; i++) CHECK(small[i] == 77, "constant %d", small[i]);
}

/* Augmentation draws: inside the ranges, Keras-like distribution, pure function of (seed, stream). */
static void test_augment_draws(void) {
    lp_augment a = {.horizontal_flip = true, .rotation_range = 20, .width_shift_range = 0.1f, .height_shift_range = 0.25f,
                    .zoom_range = 0.2f, .brightness_lo = 0.7f, .brightness_hi = 1.1f};
    int flips = 0, n = 4000;
    double mean_theta = 0;
    for (int i = 0; i < n; i++) {
        lp_aug_params p, q;
        lp_augment_params_draw(&a, 100, 50, 99, (uint64_t)i, &p);
        lp_augment_params_draw(&a, 100, 50, 99, (uint64_t)i, &q);
        CHECK(!memcmp(&p, &q, sizeof p), "same (seed, stream), same draw");
        CHECK(p.theta >= -20 && p.theta <= 20, "theta %g", p.theta);
        CHECK(fabsf(p.tx) <= 25.0f && fabsf(p.ty) <= 5.0f, "shift rows %g (0.25 * h 100), cols %g (0.1 * w 50)", p.tx, p.ty);
        CHECK(p.zx >= 0.8f && p.zx <= 1.2f && p.zy >= 0.8f && p.zy <= 1.2f, "zoom");
        CHECK(p.brightness >= 0.7f && p.brightness <= 1.1f, "brightness");
        CHECK(!p.vflip, "vflip off");
        flips += p.hflip;
        mean_theta += p.theta / n;
    }
    CHECK(flips > n * 0.45 && flips < n * 0.55, "flip about half the time (%d/%d)", flips, n);
    CHECK(fabs(mean_theta) < 1.0, "theta centred (%g)", mean_theta);
    lp_augment off = {0};
    CHECK(!lp_augment_active(&off) && lp_augment_active(&a), "active flag");
}

typedef struct dump {
    int nb;
    int *idx;
    float *x;
} dump;

static size_t run_loader(const lp_split *sp, lp_loader_config c, int passes, dump *d, int64_t *decodes) {
    lp_loader *l;
    memset(d, 0, sizeof *d);
    if (lp_loader_create(sp, &c, &l) != LP_OK) {
        CHECK(0, "loader create");
        return 0;
    }
    int bpp = lp_loader_batches_per_pass(l);
    size_t per = (size_t)c.height * c.width * c.channels, total = (size_t)sp->num_samples * passes;
    d->idx = calloc(total, sizeof(int));
    d->x = calloc(total * per, sizeof(float));
    size_t k = 0;
    for (int p = 0; p < passes; p++)
        for (int b = 0; b < bpp; b++) {
            lp_batch bt;
            if (lp_loader_next(l, &bt) != LP_OK) {
                CHECK(0, "next");
                break;
            }
            for (int i = 0; i < bt.n; i++, k++) {
                d->idx[k] = bt.indices[i];
                CHECK(bt.labels[i] == sp->samples[bt.indices[i]].label, "label");
                memcpy(d->x + k * per, bt.x + (size_t)i * per, per * sizeof(float));
            }
            d->nb++;
        }
    if (decodes) *decodes = lp_loader_decode_count(l);
    lp_loader_free(l);
    return k;
}

static void dump_free(dump *d) {
    free(d->idx);
    free(d->x);
}

static void test_loader(const char *dir) {
    char root[512], path[700];
    snprintf(root, sizeof root, "%s/ds", dir);
    const char *classes[3] = {"b_class", "a_class", "c_class"};
    int counts[3] = {7, 5, 6};
    for (int c = 0; c < 3; c++) {
        snprintf(path, sizeof path, "%s/%s", root, classes[c]);
        lp_mkdirs(path);
        for (int i = 0; i < counts[c]; i++) {
            snprintf(path, sizeof path, "%s/%s/img%02d.ppm", root, classes[c], i);
            write_ppm(path, 20 + i, 16 + c, c * 10 + i);
        }
    }
    lp_scan_options so = lp_scan_default_options();
    lp_split *sp;
    CHECK(lp_split_scan_dir(root, &so, &sp) == LP_OK, "scan");
    if (!sp) return;
    CHECK(sp->num_samples == 18 && sp->num_classes == 3, "counts %d %d", sp->num_samples, sp->num_classes);
    CHECK(!strcmp(sp->class_names[0], "a_class") && !strcmp(sp->class_names[2], "c_class"), "sorted classes");
    CHECK(sp->samples[0].label == 0 && !strcmp(sp->samples[0].relpath, "a_class/img00.ppm"), "first sample %s", sp->samples[0].relpath);

    lp_loader_config c = lp_loader_default_config();
    c.batch = 4;
    c.height = 12;
    c.width = 10;
    c.seed = 1234;
    c.interp = LP_INTERP_BILINEAR;
    /* sorted order without shuffle; last batch partial */
    c.shuffle = false;
    dump d0;
    size_t n = run_loader(sp, c, 1, &d0, NULL);
    CHECK(n == 18 && d0.nb == 5, "one pass: %zu samples in %d batches", n, d0.nb);
    for (size_t i = 0; i < n; i++) CHECK(d0.idx[i] == (int)i, "sorted order");
    dump_free(&d0);

    /* shuffled: each pass is a permutation; identical on 1, 2 and 3 workers,
     * with and without the cache, with and without augmentation */
    c.shuffle = true;
    for (int aug = 0; aug < 2; aug++) {
        lp_loader_config ca = c;
        if (aug) {
            ca.augment.horizontal_flip = true;
            ca.augment.rotation_range = 20;
            ca.augment.zoom_range = 0.2f;
            ca.augment.width_shift_range = 0.1f;
            ca.augment.height_shift_range = 0.1f;
            ca.augment.brightness_lo = 0.8f;
            ca.augment.brightness_hi = 1.2f;
        }
        dump ref;
        ca.workers = 1;
        int64_t dec = 0;
        size_t nr = run_loader(sp, ca, 3, &ref, &dec);
        CHECK(nr == 54, "3 passes");
        CHECK(dec == 18, "cache: %lld decodes for 3 passes of 18 images", (long long)dec);
        for (int p = 0; p < 3; p++) {
            int seen[18] = {0};
            for (int i = 0; i < 18; i++) seen[ref.idx[p * 18 + i]]++;
            for (int i = 0; i < 18; i++) CHECK(seen[i] == 1, "pass %d is a permutation", p);
            int perm[18];
            lp_rng_permutation(ca.seed, (uint64_t)p, perm, 18);
            CHECK(!memcmp(perm, ref.idx + p * 18, sizeof perm), "pass %d order = lp_rng_permutation(seed, pass)", p);
        }
        CHECK(memcmp(ref.idx, ref.idx + 18, 18 * sizeof(int)) != 0, "passes differ");
        for (int w = 2; w <= 3; w++) {
            for (int cache = 0; cache < 2; cache++) {
                lp_loader_config cw = ca;
                cw.workers = w;
                cw.cache = cache;
                dump o;
                int64_t dec2 = 0;
                size_t no = run_loader(sp, cw, 3, &o, &dec2);
                CHECK(no == nr && !memcmp(o.idx, ref.idx, nr * sizeof(int)), "order, %d workers", w);
                CHECK(!memcmp(o.x, ref.x, nr * 120 * 3 * sizeof(float)), "pixels, %d workers, cache %d, aug %d", w, cache, aug);
                if (!cache) CHECK(dec2 >= 54 && dec2 <= 58, "no cache: %lld decodes (3 passes + one prefetched batch)", (long long)dec2);
                dump_free(&o);
            }
        }
        if (aug) {
            /* augmentation changes pixels, and differently in different passes */
            lp_loader_config cn = c;
            cn.workers = 2;
            dump plain;
            run_loader(sp, cn, 3, &plain, NULL);
            CHECK(memcmp(plain.idx, ref.idx, nr * sizeof(int)) == 0, "same order with augmentation");
            CHECK(memcmp(plain.x, ref.x, nr * 360 * sizeof(float)) != 0, "augmentation does something");
            for (size_t i = 0; i < nr * 360; i++)
                if (!(ref.x[i] >= 0 && ref.x[i] <= 1)) {
                    CHECK(0, "augmented value out of range: %g", ref.x[i]);
                    break;
                }
            dump_free(&plain);
        }
        dump_free(&ref);
    }

    /* seek: position (2, 1) gives the same batch as reading up to it */
    {
        lp_loader *l;
        c.workers = 2;
        CHECK(lp_loader_create(sp, &c, &l) == LP_OK, "create");
        lp_batch bt;
        int want[4];
        float *wx = malloc(sizeof(float) * 4 * 360);
        for (int k = 0; k < 5 * 2 + 2; k++) lp_loader_next(l, &bt);
        memcpy(want, bt.indices, sizeof want);
        memcpy(wx, bt.x, sizeof(float) * 4 * 360);
        int64_t pass;
        int bip;
        lp_loader_position(l, &pass, &bip);
        CHECK(pass == 2 && bip == 2, "position %lld %d", (long long)pass, bip);
        CHECK(lp_loader_seek(l, 0, 3) == LP_OK, "seek");
        lp_loader_next(l, &bt);
        CHECK(lp_loader_seek(l, 2, 1) == LP_OK, "seek");
        CHECK(lp_loader_next(l, &bt) == LP_OK && !memcmp(bt.indices, want, sizeof want) &&
                  !memcmp(bt.x, wx, sizeof(float) * 4 * 360), "seek reproduces the batch");
        CHECK(lp_loader_seek(l, 0, 5) == LP_ERR_ARG, "seek out of range");
        lp_loader_free(l);
        free(wx);
    }

    /* a file that turns bad after the scan: error naming it, never garbage */
    {
        c.cache = false;
        c.shuffle = false;
        lp_loader *l;
        CHECK(lp_loader_create(sp, &c, &l) == LP_OK, "create");
        FILE *f = fopen(sp->samples[5].path, "wb");
        fputs("P6\n20 16\n255\n", f); /* header only: truncated */
        fclose(f);
        lp_batch bt;
        CHECK(lp_loader_next(l, &bt) == LP_OK, "batch 0 fine");
        lp_status s = lp_loader_next(l, &bt);
        CHECK(s == LP_ERR_FORMAT && strstr(lp_errmsg(), sp->samples[5].path) && strstr(lp_errmsg(), "truncated"),
              "error names the file: %s", lp_errmsg());
        CHECK(bt.n == 0 && bt.x == NULL, "no batch on error");
        unlink(sp->samples[5].path);
        s = lp_loader_next(l, &bt);
        CHECK(s == LP_ERR_IO && strstr(lp_errmsg(), sp->samples[5].path), "deleted file: %s", lp_errmsg());
        lp_loader_free(l);
    }
    lp_split_free(sp);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "data_unit_tmp";
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    lp_mkdirs(dir);
    test_sniff();
    test_names();
    test_preprocess(dir);
    test_resize_identity();
    test_augment_draws();
    test_loader(dir);
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("data unit tests: all passed\n");
    return 0;
}
