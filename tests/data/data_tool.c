/* Test driver for the Python comparers in tests/data:
 *   data_tool decodemany LIST      lines "IN OUT CHANNELS EXIF": writes raw u8 HWC to OUT,
 *                                  prints "OK w h c mode orientation" or "BAD reason" per line
 *   data_tool loadmany LIST        lines "IN OUT W H CHANNELS nearest|bilinear KEEP PREPROCESS":
 *                                  lp_image_load, writes float32 CHW to OUT, prints OK/BAD
 *   data_tool scan DIR [--classes C] [--vsplit F] [--seed N] [--skip-bad] [--no-check]
 *                                  strict lp_dataset_scan; prints "SPLIT LABEL RELPATH" per
 *                                  sample and "BAD SPLIT RELPATH: REASON", or "ERROR msg"
 *   data_tool bench W H THREADS SECONDS FILE...   decode+resize throughput (img/s)
 *   data_tool batches DIR OUT W H BATCH WORKERS PASSES SEED AUG   raw dump of loader output
 *   data_tool augment IN OUT THETA TX TY ZX ZY HFLIP VFLIP BRIGHTNESS   one augmentation of a
 *                                  decoded image (RGB), float32 HWC to OUT; prints "OK w h" */
#include "data/data.h"
#include "data/transform.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int decodemany(const char *list) {
    FILE *f = fopen(list, "r");
    if (!f) return 1;
    char in[1024], out[1024];
    int ch, exif;
    while (fscanf(f, "%1023s %1023s %d %d", in, out, &ch, &exif) == 4) {
        uint8_t *buf;
        size_t n;
        if (lp_read_file(in, &buf, &n)) {
            printf("BAD %s\n", lp_errmsg());
            continue;
        }
        lp_decode_options o = lp_decode_default_options();
        o.channels = ch;
        o.apply_exif = exif != 0;
        lp_image img;
        lp_image_info info;
        lp_status s = lp_image_decode(buf, n, &o, &img, &info);
        free(buf);
        if (s) {
            printf("BAD %s\n", lp_errmsg());
            continue;
        }
        FILE *g = fopen(out, "wb");
        fwrite(img.data, 1, (size_t)img.width * img.height * img.channels, g);
        fclose(g);
        printf("OK %d %d %d %s %d\n", img.width, img.height, img.channels, info.mode, info.orientation);
        lp_image_free(&img);
    }
    fclose(f);
    return 0;
}

static int loadmany(const char *list) {
    FILE *f = fopen(list, "r");
    if (!f) return 1;
    char in[1024], out[1024], interp[32], pre[32];
    int w, h, ch, keep;
    while (fscanf(f, "%1023s %1023s %d %d %d %31s %d %31s", in, out, &w, &h, &ch, interp, &keep, pre) == 8) {
        lp_loader_config c = lp_loader_default_config();
        c.width = w;
        c.height = h;
        c.channels = ch;
        c.keep_aspect = keep != 0;
        if (lp_interp_parse(interp, &c.interp) || lp_preprocess_parse(pre, &c.preprocess)) {
            printf("BAD %s\n", lp_errmsg());
            continue;
        }
        float *x = malloc(sizeof(float) * (size_t)w * h * ch);
        if (lp_image_load(in, &c, x)) {
            printf("BAD %s\n", lp_errmsg());
        } else {
            FILE *g = fopen(out, "wb");
            fwrite(x, sizeof(float), (size_t)w * h * ch, g);
            fclose(g);
            printf("OK\n");
        }
        free(x);
    }
    fclose(f);
    return 0;
}

static int scan(int argc, char **argv) {
    lp_scan_options o = lp_scan_default_options();
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--classes") && i + 1 < argc) o.classes = argv[++i];
        else if (!strcmp(argv[i], "--vsplit") && i + 1 < argc) o.validation_split = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) o.seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--skip-bad")) o.skip_bad = true;
        else if (!strcmp(argv[i], "--no-check")) o.check_decode = false;
        else if (!strcmp(argv[i], "--follow")) o.follow_symlinks = true;
    }
    lp_dataset *d;
    if (!strcmp(argv[1], "scandir")) {
        lp_split *sp;
        if (lp_split_scan_dir(argv[2], &o, &sp)) {
            printf("ERROR %s\n", lp_errmsg());
            return 0;
        }
        for (int i = 0; i < sp->num_samples; i++) printf("%s %d %s\n", sp->name, sp->samples[i].label, sp->samples[i].relpath);
        lp_split_free(sp);
        return 0;
    }
    if (lp_dataset_scan(argv[2], &o, &d)) {
        printf("ERROR %s\n", lp_errmsg());
        return 0;
    }
    const char *names[3] = {"train", "valid", "test"};
    for (int s = 0; s < 3; s++) {
        const lp_split *sp = lp_dataset_split(d, names[s]);
        if (!sp) continue;
        printf("CLASSES %s", names[s]);
        for (int k = 0; k < sp->num_classes; k++) printf(" %s", sp->class_names[k]);
        printf("\n");
        for (int i = 0; i < sp->num_samples; i++) printf("%s %d %s\n", names[s], sp->samples[i].label, sp->samples[i].relpath);
        for (int i = 0; i < sp->num_bad; i++) printf("BAD %s %s: %s\n", names[s], sp->bad[i].relpath, sp->bad[i].reason);
    }
    lp_dataset_free(d);
    return 0;
}

typedef struct bench_ctx {
    char **files;
    int nfiles;
    int w, h;
    double until;
    long done;
    int bad;
    pthread_mutex_t mu;
} bench_ctx;

static void *bench_worker(void *arg) {
    bench_ctx *b = arg;
    lp_loader_config c = lp_loader_default_config();
    c.width = b->w;
    c.height = b->h;
    c.interp = LP_INTERP_BILINEAR;
    c.dct_scaling = getenv("LOUPE_BENCH_DCT") != NULL;
    float *x = malloc(sizeof(float) * (size_t)b->w * b->h * 3);
    long done = 0;
    for (int i = 0; lp_now() < b->until; i++) {
        if (lp_image_load(b->files[i % b->nfiles], &c, x)) {
            pthread_mutex_lock(&b->mu);
            b->bad++;
            pthread_mutex_unlock(&b->mu);
            break;
        }
        done++;
    }
    free(x);
    pthread_mutex_lock(&b->mu);
    b->done += done;
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static int bench(int argc, char **argv) {
    if (argc < 7) return 1;
    bench_ctx b = {.files = argv + 6, .nfiles = argc - 6, .w = atoi(argv[2]), .h = atoi(argv[3])};
    int threads = atoi(argv[4]);
    double secs = atof(argv[5]);
    pthread_mutex_init(&b.mu, NULL);
    double t0 = lp_now();
    b.until = t0 + secs;
    pthread_t th[64];
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, bench_worker, &b);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    double dt = lp_now() - t0;
    if (b.bad) {
        printf("ERROR %s\n", lp_errmsg());
        return 1;
    }
    printf("%d thread(s): %ld images in %.2f s = %.1f img/s (%dx%d bilinear, preprocess rescale%s)\n", threads, b.done, dt,
           b.done / dt, b.w, b.h, getenv("LOUPE_BENCH_DCT") ? ", JPEG DCT scaling" : "");
    return 0;
}

static int batches(int argc, char **argv) {
    if (argc < 11) return 1;
    lp_scan_options o = lp_scan_default_options();
    lp_split *sp;
    if (lp_split_scan_dir(argv[2], &o, &sp)) {
        printf("ERROR %s\n", lp_errmsg());
        return 1;
    }
    lp_loader_config c = lp_loader_default_config();
    c.width = atoi(argv[4]);
    c.height = atoi(argv[5]);
    c.batch = atoi(argv[6]);
    c.workers = atoi(argv[7]);
    int passes = atoi(argv[8]);
    c.seed = strtoull(argv[9], NULL, 10);
    c.preprocess = LP_PRE_NONE;
    if (atoi(argv[10])) {
        c.augment.horizontal_flip = c.augment.vertical_flip = true;
        c.augment.rotation_range = 30;
        c.augment.zoom_range = 0.3f;
        c.augment.width_shift_range = c.augment.height_shift_range = 0.2f;
    }
    lp_loader *l;
    if (lp_loader_create(sp, &c, &l)) {
        printf("ERROR %s\n", lp_errmsg());
        return 1;
    }
    FILE *f = fopen(argv[3], "wb");
    for (int p = 0; p < passes; p++)
        for (int b = 0; b < lp_loader_batches_per_pass(l); b++) {
            lp_batch bt;
            if (lp_loader_next(l, &bt)) {
                printf("ERROR %s\n", lp_errmsg());
                return 1;
            }
            fwrite(bt.indices, sizeof(int), (size_t)bt.n, f);
            fwrite(bt.x, sizeof(float), (size_t)bt.n * c.width * c.height * 3, f);
        }
    fclose(f);
    lp_loader_free(l);
    lp_split_free(sp);
    printf("OK\n");
    return 0;
}

static int augment(int argc, char **argv) {
    if (argc < 12) return 1;
    uint8_t *buf;
    size_t n;
    lp_image img;
    if (lp_read_file(argv[2], &buf, &n) || lp_image_decode(buf, n, NULL, &img, NULL)) {
        printf("ERROR %s\n", lp_errmsg());
        return 1;
    }
    free(buf);
    lp_aug_params p = {.theta = (float)atof(argv[4]), .tx = (float)atof(argv[5]), .ty = (float)atof(argv[6]),
                       .zx = (float)atof(argv[7]), .zy = (float)atof(argv[8]), .hflip = atoi(argv[9]) != 0,
                       .vflip = atoi(argv[10]) != 0, .brightness = (float)atof(argv[11])};
    float *out = malloc(sizeof(float) * (size_t)img.width * img.height * 3);
    lp_augment_apply(img.data, img.height, img.width, 3, &p, out);
    FILE *f = fopen(argv[3], "wb");
    fwrite(out, sizeof(float), (size_t)img.width * img.height * 3, f);
    fclose(f);
    printf("OK %d %d\n", img.width, img.height);
    free(out);
    lp_image_free(&img);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "augment")) return augment(argc, argv);
    if (argc >= 3 && !strcmp(argv[1], "decodemany")) return decodemany(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "loadmany")) return loadmany(argv[2]);
    if (argc >= 3 && (!strcmp(argv[1], "scan") || !strcmp(argv[1], "scandir"))) return scan(argc, argv);
    if (argc >= 3 && !strcmp(argv[1], "bench")) return bench(argc, argv);
    if (argc >= 3 && !strcmp(argv[1], "batches")) return batches(argc, argv);
    fprintf(stderr, "usage: see the comment at the top of data_tool.c\n");
    return 2;
}
