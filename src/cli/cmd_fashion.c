/* loupe fashion: writes the demo's folder datasets from Debian's
 * dataset-fashion-mnist (see lp_fashion_write_folder in loupe.h). */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: loupe fashion --out DIR [--negative 0] [--positive 6] [--train 154] [--valid 26]\n"
            "                     [--test 77] [--seed 1] [--source DIR]\n"
            "       loupe fashion --pretrain --out DIR [--per-class 400] [--valid 50] [--exclude 0,6]\n"
            "                     [--seed 1] [--source DIR]\n"
            "\n"
            "Writes a folder dataset of 28x28 grayscale PNGs from Debian's dataset-fashion-mnist.\n"
            "\n"
            "Binary task (default): DIR/{train,valid,test}/{negative,positive}/NNNNN.png, the given\n"
            "number of images per class in each split; train and valid come from the training file,\n"
            "test from the t10k file, so no image is in two splits.\n"
            "With --pretrain: DIR/{train,valid}/<class>/NNNNN.png for every class not excluded, to\n"
            "pretrain a backbone in place of ImageNet weights.\n"
            "\n"
            "options:\n"
            "  --out DIR          folder to create (required); written as DIR.tmp, then renamed\n"
            "  --negative L       class for 'negative' (label 0-9 or name, default 0 = tshirt_top)\n"
            "  --positive L       class for 'positive' (default 6 = shirt)\n"
            "  --train N          training images per class (default 154; 400 with --pretrain)\n"
            "  --valid N          validation images per class (default 26; 50 with --pretrain)\n"
            "  --test N           test images per class (default 77; binary task only)\n"
            "  --pretrain         write the pretraining set instead of the binary task\n"
            "  --per-class N      with --pretrain: N training and N/8 validation images per class\n"
            "  --exclude L,L,...  with --pretrain: classes left out (default 0,6)\n"
            "  --seed N           selection seed (default 1)\n"
            "  --source DIR       folder of the *-ubyte.gz files (default /usr/share/datasets/fashion-mnist)\n"
            "\n"
            "classes: 0 tshirt_top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt,\n"
            "         7 sneaker, 8 bag, 9 ankle_boot\n"
            "Running again with the same options when DIR is complete does nothing.\n");
}

/* A label 0-9 or a class name (int *). */
static bool parse_label(const char *s, void *dest) {
    int *out = dest;
    long v;
    if (cli_parse_int(s, 0, 9, &v)) {
        *out = (int)v;
        return true;
    }
    for (int l = 0; l < 10; l++)
        if (!strcmp(s, lp_fashion_class_name(l))) {
            *out = l;
            return true;
        }
    return false;
}

/* L,L,... or "none" (unsigned *, a bit per label). */
static bool parse_exclude(const char *s, void *dest) {
    unsigned *mask = dest;
    *mask = 0;
    if (!strcmp(s, "none") || !*s) return true;
    while (*s) {
        char tok[32];
        size_t n = strcspn(s, ",");
        if (n == 0 || n >= sizeof tok) return false;
        memcpy(tok, s, n);
        tok[n] = 0;
        int l;
        if (!parse_label(tok, &l)) return false;
        *mask |= 1u << l;
        s += n;
        if (*s == ',') s++;
    }
    return true;
}

int cmd_fashion(int argc, char **argv) {
    const char *cmd = "fashion";
    lp_fashion_params p = lp_fashion_default_params();
    int per_class = 0, train_given = 0, valid_given = 0, test_given = 0, exclude_given = 0, label_given = 0, nargs;
    const char *hint = "run 'loupe fashion --help' for the accepted values";
    const char *label = "a label 0-9 or a class name";
    const cli_option opts[] = {
        CLI_OPT("--pretrain", CLI_FLAG, &p.pretrain),
        {"--out", CLI_STRING, &p.out_dir, .expects = "a folder"},
        {"--source", CLI_STRING, &p.source_dir, .expects = "a folder"},
        {"--negative", CLI_CUSTOM, &p.negative, .parse = parse_label, .expects = label, .hint = hint, .seen = &label_given},
        {"--positive", CLI_CUSTOM, &p.positive, .parse = parse_label, .expects = label, .hint = hint, .seen = &label_given},
        {"--train", CLI_INT, &p.n_train, .lo = 1, .hi = 60000, .hint = hint, .seen = &train_given},
        {"--valid", CLI_INT, &p.n_valid, .lo = 1, .hi = 60000, .hint = hint, .seen = &valid_given},
        {"--test", CLI_INT, &p.n_test, .lo = 1, .hi = 10000, .hint = hint, .seen = &test_given},
        {"--per-class", CLI_INT, &per_class, .lo = 1, .hi = 60000, .hint = hint},
        {"--exclude", CLI_CUSTOM, &p.exclude_mask, .parse = parse_exclude, .expects = "labels L,L,... or none",
         .hint = hint, .seen = &exclude_given},
        {"--seed", CLI_U64, &p.seed, .lo = 0, .hi = 2147483647L, .hint = hint},
        {0},
    };
    const cli_parser parser = {.cmd = cmd, .options = opts, .max_args = 0};
    int rc = cli_parse_options(&parser, argc, argv, &nargs);
    if (rc == CLI_HELP) {
        usage(stdout);
        return 0;
    }
    if (rc) return rc;
    if (nargs) {
        char msg[160];
        snprintf(msg, sizeof msg, "unexpected argument '%s' (fashion takes options only)", argv[1]);
        cli_error(cmd, msg, "run 'loupe fashion --help'");
        return 2;
    }
    if (!p.out_dir) {
        cli_error(cmd, "--out DIR is required", "e.g. loupe fashion --out data/fashion");
        return 2;
    }
    if (p.pretrain && (test_given || label_given)) {
        cli_error(cmd, "--test, --negative and --positive are for the binary task, not --pretrain", NULL);
        return 2;
    }
    if (!p.pretrain && (per_class || exclude_given)) {
        cli_error(cmd, "--per-class and --exclude go with --pretrain", NULL);
        return 2;
    }
    if (per_class && train_given) {
        cli_error(cmd, "--per-class N sets the training images per class, as --train does", "give one of them");
        return 2;
    }
    if (per_class) {
        p.n_train = per_class;
        if (!valid_given) p.n_valid = per_class / 8 > 0 ? per_class / 8 : 1;
    }
    lp_fashion_result r;
    lp_status s = lp_fashion_write_folder(&p, &r);
    if (s) return cli_fail(cmd, s);
    if (r.already_prepared) printf("%s: already prepared\n", p.out_dir);
    else if (p.pretrain)
        printf("%s: wrote %d images (train %d, valid %d)\n", p.out_dir, r.images, r.train, r.valid);
    else
        printf("%s: wrote %d images (train %d, valid %d, test %d)\n", p.out_dir, r.images, r.train, r.valid, r.test);
    return 0;
}
