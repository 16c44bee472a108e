/* loupe summary: layers, output shapes and parameter counts of a checkpoint
 * or of an architecture description. */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: loupe summary CHECKPOINT.safetensors\n"
               "       loupe summary --model vgg16|vgg19|tiny [--top keep|none] [--head SPEC] [--classes N]\n"
               "                     [--size WxH] [--channels C] [--freeze base|none|PREFIX]\n\n"
               "Prints a Keras-like table: layer (torchvision names), output shape per image,\n"
               "parameters, and trainable/frozen totals. For a checkpoint it also lists the\n"
               "class names and metadata.\n"
               "  --head SPEC   with --top none, e.g. flatten,dense:256:relu,dropout:0.5,dense or gap,dense\n");
}

static bool parse_size(const char *s, int *w, int *h) {
    char tail;
    return s && sscanf(s, "%dx%d%c", w, h, &tail) == 2 && *w > 0 && *h > 0 && *w <= 16384 && *h <= 16384;
}

int cmd_summary(int argc, char **argv) {
    lp_model_params p = lp_model_default_params();
    const char *path = NULL;
    bool have_model = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model") && v) p.arch = v, have_model = true, i++;
        else if (!strcmp(a, "--top") && v) p.top = v, i++;
        else if (!strcmp(a, "--head") && v) p.head = v, p.top = "none", i++;
        else if (!strcmp(a, "--freeze") && v) p.freeze = v, i++;
        else if (!strcmp(a, "--classes") && v && cli_parse_int(v, 1, 1000000, &n)) p.num_classes = (int)n, i++;
        else if (!strcmp(a, "--channels") && v && cli_parse_int(v, 1, 4096, &n)) p.in_channels = (int)n, i++;
        else if (!strcmp(a, "--size") && v && parse_size(v, &p.in_width, &p.in_height)) i++;
        else if (a[0] != '-' && !path) path = a;
        else {
            char msg[256];
            snprintf(msg, sizeof msg, "bad option or value: %s%s%s", a, v ? " " : "", v ? v : "");
            cli_error("summary", msg, "run 'loupe summary --help'");
            return 2;
        }
    }
    if (!path == !have_model) {
        cli_error("summary", "give either a checkpoint file or --model", "run 'loupe summary --help'");
        return 2;
    }
    lp_model *m;
    lp_status st = path ? lp_model_load(path, &m) : lp_model_create(&p, &m);
    if (st) return cli_fail("summary", st);
    if (path && p.freeze) fprintf(stderr, "loupe summary: --freeze ignored for a checkpoint\n");
    char *text;
    if ((st = lp_model_summary(m, &text))) {
        lp_model_free(m);
        return cli_fail("summary", st);
    }
    fputs(text, stdout);
    free(text);
    if (path) {
        printf("Classes (%d):", lp_model_num_classes(m));
        for (int i = 0; i < lp_model_num_classes(m); i++) printf(" %s", lp_model_class_name(m, i));
        printf("\n");
        static const char *keys[] = {"preprocess", "temperature", "loupe_version", NULL};
        for (int i = 0; keys[i]; i++)
            if (lp_model_meta(m, keys[i])) printf("%s: %s\n", keys[i], lp_model_meta(m, keys[i]));
    }
    lp_model_free(m);
    return 0;
}
