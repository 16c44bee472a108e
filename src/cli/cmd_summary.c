/* loupe summary: layers, output shapes and parameter counts of a checkpoint
 * or of an architecture description. */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: loupe summary CHECKPOINT.safetensors\n"
               "       loupe summary --model vgg16|vgg19|resnet18|resnet34|resnet50|mobilenet_v2|efficientnet_b0|tiny [--top keep|none] [--head SPEC] [--classes N]\n"
               "                     [--size WxH] [--channels C] [--freeze base|none|PREFIX]\n\n"
               "Prints a Keras-like table: layer (torchvision names), output shape per image,\n"
               "parameters, and trainable/frozen totals. For a checkpoint it also lists the\n"
               "class names and metadata.\n"
               "  --head SPEC   with --top none, e.g. flatten,dense:256:relu,dropout:0.5,dense or gap,dense\n");
}

/* --size WxH within the CLI's size limits (lp_model_params *). */
static bool parse_size(const char *v, void *dest) {
    lp_model_params *p = dest;
    return cli_parse_size(v, 1, false, &p->in_width, &p->in_height);
}

int cmd_summary(int argc, char **argv) {
    lp_model_params p = lp_model_default_params();
    int have_model = 0, top_seen = 0, head_seen = 0, nargs;
    const cli_option opts[] = {
        {"--model", CLI_STRING, &p.arch, .seen = &have_model},
        {"--top", CLI_STRING, &p.top, .seen = &top_seen},
        {"--head", CLI_STRING, &p.head, .seen = &head_seen},
        CLI_OPT("--freeze", CLI_STRING, &p.freeze),
        {"--classes", CLI_INT, &p.num_classes, .lo = 1, .hi = 1000000},
        {"--channels", CLI_INT, &p.in_channels, .lo = 1, .hi = 4096},
        {"--size", CLI_CUSTOM, &p, .parse = parse_size, .expects = "WxH like 224x224, " CLI_SIZE_LIMITS},
        {0},
    };
    const cli_parser parser = {.cmd = "summary", .options = opts, .max_args = 1};
    int rc = cli_parse_options(&parser, argc, argv, &nargs);
    if (rc == CLI_HELP) {
        usage(stdout);
        return 0;
    }
    if (rc) return rc;
    if (nargs > 1 || (nargs && !strcmp(argv[1], "-"))) {
        char msg[256];
        snprintf(msg, sizeof msg, "unexpected argument '%s' (one checkpoint file)", !strcmp(argv[1], "-") ? argv[1] : argv[2]);
        cli_error("summary", msg, "run 'loupe summary --help' for the options");
        return 2;
    }
    if (!cli_head_top(head_seen, top_seen, &p.top)) {
        char msg[256];
        snprintf(msg, sizeof msg, "--head %s needs --top none (a head replaces the top)", p.head);
        cli_error("summary", msg, "drop --top keep, or --head");
        return 2;
    }
    const char *path = nargs ? argv[1] : NULL;
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
        static const char *keys[] = {"preprocess", "padding", "resnet_version", "temperature", "loupe_version", NULL};
        for (int i = 0; keys[i]; i++)
            if (lp_model_meta(m, keys[i])) printf("%s: %s\n", keys[i], lp_model_meta(m, keys[i]));
    }
    lp_model_free(m);
    return 0;
}
