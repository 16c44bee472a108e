/* Engine check for imported weights: reads a weights file with lp_weights_read
 * (any format), builds the matching net (top=keep with the file's classes, or
 * top=none with HEAD and head tensors from EXTRA), loads it with
 * lp_weights_load_into and writes the logits of a forward pass.
 *
 *   weights_engine WEIGHTS EXTRA|- X.bin N H W HEAD|- OUT.bin
 *   weights_engine --read WEIGHTS      (only lp_weights_read: for load time/memory)
 * X.bin: float32 NCHW (N, 3, H, W); OUT.bin: float32 (N, classes). */
#include "io/safetensors.h"
#include "io/weights.h"
#include "nn/nn.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *what) {
    fprintf(stderr, "weights_engine: %s: %s\n", what, lp_errmsg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--read")) {
        lp_tensor_list wl;
        double t0 = lp_now();
        if (lp_weights_read(argv[2], NULL, &wl)) return die("read weights");
        printf("read %s: %d tensors, source %s, %.2f s\n", argv[2], wl.count, lp_tensor_list_get_meta(&wl, "source"), lp_now() - t0);
        lp_tensor_list_free(&wl);
        return 0;
    }
    if (argc != 9) {
        fprintf(stderr, "usage: weights_engine WEIGHTS EXTRA|- X.bin N H W HEAD|- OUT.bin\n");
        return 2;
    }
    int n = atoi(argv[4]), h = atoi(argv[5]), w = atoi(argv[6]);
    lp_tensor_list wl;
    if (lp_weights_read(argv[1], NULL, &wl)) return die("read weights");
    lp_net_config c = lp_net_default_config();
    snprintf(c.arch, sizeof c.arch, "%s", lp_tensor_list_get_meta(&wl, "arch"));
    snprintf(c.top, sizeof c.top, "%s", lp_tensor_list_get_meta(&wl, "top"));
    c.in_c = 3;
    c.in_h = h;
    c.in_w = w;
    c.max_batch = n;
    if (strcmp(argv[2], "-")) {
        lp_tensor_list extra;
        lp_tensor_list_init(&extra);
        if (lp_safetensors_read(argv[2], &extra)) return die("read extra");
        for (int i = 0; i < extra.count; i++) {
            lp_tensor t;
            if (lp_tensor_to_f32(&extra.items[i].t, &t) || lp_tensor_list_add(&wl, extra.items[i].name, &t)) return die("extra");
        }
        lp_tensor_list_free(&extra);
    }
    if (!strcmp(c.top, "keep")) {
        c.num_classes = atoi(lp_tensor_list_get_meta(&wl, "num_classes"));
    } else {
        snprintf(c.head, sizeof c.head, "%s", argv[7]);
        lp_named_tensor *last = NULL;
        for (int i = 0; i < wl.count; i++)
            if (!strncmp(wl.items[i].name, "head.", 5) && wl.items[i].t.ndim == 2) last = &wl.items[i];
        if (!last) {
            fprintf(stderr, "weights_engine: top=none needs head tensors in EXTRA\n");
            return 2;
        }
        c.num_classes = (int)last->t.shape[0];
    }
    lp_net *net;
    if (lp_net_create(&c, &net)) return die("create net");
    char *skipped = NULL;
    if (lp_weights_load_into(net, &wl, NULL, &skipped, NULL)) return die("load weights");
    if (skipped) {
        fprintf(stderr, "weights_engine: tensors skipped: %s\n", skipped);
        return 1;
    }
    size_t nx = (size_t)n * 3 * h * w;
    float *x = malloc(nx * sizeof *x), *logits = malloc((size_t)n * c.num_classes * sizeof *logits);
    FILE *f = fopen(argv[3], "rb");
    if (!x || !logits || !f || fread(x, sizeof *x, nx, f) != nx) {
        fprintf(stderr, "weights_engine: cannot read %s\n", argv[3]);
        return 1;
    }
    fclose(f);
    if (lp_net_forward(net, x, n, false, 0, logits)) return die("forward");
    f = fopen(argv[8], "wb");
    if (!f || fwrite(logits, sizeof *logits, (size_t)n * c.num_classes, f) != (size_t)n * c.num_classes || fclose(f)) {
        fprintf(stderr, "weights_engine: cannot write %s\n", argv[8]);
        return 1;
    }
    printf("%s %s top=%s classes=%d: forward ok\n", argv[1], c.arch, c.top, c.num_classes);
    lp_net_free(net);
    lp_tensor_list_free(&wl);
    free(x);
    free(logits);
    return 0;
}
