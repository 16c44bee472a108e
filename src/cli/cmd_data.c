/* loupe data DATA: what a user needs to know about a dataset before training. */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(FILE *out) {
    fprintf(out,
            "usage: loupe data DATA [options]\n"
            "\n"
            "Checks DATA/{train,valid|validation,test}/<class>/<images> and prints, per split and\n"
            "class, the image count (\"Found 308 images belonging to 2 classes.\"), formats, modes\n"
            "and sizes seen, class imbalance, duplicate files (same bytes; across splits this is a\n"
            "leak), every bad file with its reason, and how many files were ignored (hidden files,\n"
            "Thumbs.db, non-images). Images are recognised by content, not by extension, and every\n"
            "one is decoded once.\n"
            "\n"
            "options:\n"
            "  --json                 print the report as JSON (paths relative to DATA)\n"
            "  --classes a,b,...      class order (like Keras classes=); other folders are ignored\n"
            "  --follow-symlinks      follow symlinked files and folders (default: ignore them)\n"
            "  --validation-split F   without valid/, use fraction F of train/ per class as valid\n"
            "  --seed N               seed of the validation split (default 1, as train's)\n"
            "  --skip-bad             bad files are warnings: exit 0 unless there are dataset problems\n"
            "  --max-pixels N         refuse images with more pixels (default 89478485, like Pillow)\n"
            "  --threads N            decode-check threads (default: all cores)\n"
            "  -h, --help             this help\n"
            "\n"
            "exit status: 0 ok, 2 bad files (without --skip-bad) or dataset problems (empty class,\n"
            "missing class folder, fewer than 2 classes) or bad usage, 1 runtime failure.\n");
}

/* --seed N: any unsigned 64-bit number (uint64_t *). */
static bool parse_seed(const char *v, void *dest) { return cli_parse_u64(v, dest); }

int cmd_data(int argc, char **argv) {
    lp_data_params p = lp_data_default_params();
    int json = 0, skip_bad = 0, nargs;
    const cli_option opts[] = {
        CLI_OPT("--json", CLI_FLAG, &json),
        CLI_OPT("--follow-symlinks", CLI_FLAG, &p.follow_symlinks),
        CLI_OPT("--skip-bad", CLI_FLAG, &skip_bad),
        CLI_OPT("--classes", CLI_STRING, &p.classes),
        {"--validation-split", CLI_CUSTOM, &p.validation_split, .parse = cli_parse_fraction,
         .expects = "a fraction in [0, 1)", .hint = "a fraction in [0, 1), e.g. 0.2"},
        {"--seed", CLI_CUSTOM, &p.seed, .parse = parse_seed, .expects = "an integer from 0 to 18446744073709551615"},
        {"--max-pixels", CLI_INT64, &p.max_pixels, .lo = 1, .hi = 0x7fffffffffffffffL,
         .expects = "a positive integer"},
        CLI_OPT_THREADS(&p.threads),
        {0},
    };
    const cli_parser parser = {.cmd = "data", .options = opts, .max_args = 1};
    int rc = cli_parse_options(&parser, argc, argv, &nargs);
    if (rc == CLI_HELP) {
        help(stdout);
        return 0;
    }
    if (rc) return rc;
    if (nargs > 1) {
        char msg[256];
        snprintf(msg, sizeof msg, "unexpected argument '%s' (one DATA folder)", argv[2]);
        cli_error("data", msg, "see loupe data --help");
        return 2;
    }
    if (nargs) p.data_dir = argv[1];
    if (!p.data_dir) {
        cli_error("data", "no DATA folder given", "usage: loupe data DATA [--json]");
        return 2;
    }
    lp_data_report *r;
    lp_status s = lp_data_check(&p, &r);
    if (s) return cli_fail("data", s);
    fputs(json ? lp_data_report_json(r) : lp_data_report_text(r), stdout);
    if (json) fputc('\n', stdout);
    int bad = lp_data_report_num_bad(r), problems = lp_data_report_num_problems(r);
    lp_data_report_free(r);
    if (problems) {
        fprintf(stderr, "loupe data: %d dataset problem(s); training would refuse this dataset\n", problems);
        return 2;
    }
    if (bad) {
        if (skip_bad) {
            fprintf(stderr, "loupe data: warning: %d bad file(s) would be skipped (--skip-bad)\n", bad);
            return 0;
        }
        fprintf(stderr, "loupe data: %d bad file(s); fix or remove them, or train with --skip-bad\n", bad);
        return 2;
    }
    return 0;
}
