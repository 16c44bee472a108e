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
            "  --seed N               seed of the validation split (default 0)\n"
            "  --skip-bad             bad files are warnings: exit 0 unless there are dataset problems\n"
            "  --max-pixels N         refuse images with more pixels (default 89478485, like Pillow)\n"
            "  --threads N            decode-check threads (default: all cores)\n"
            "  -h, --help             this help\n"
            "\n"
            "exit status: 0 ok, 2 bad files (without --skip-bad) or dataset problems (empty class,\n"
            "missing class folder, fewer than 2 classes) or bad usage, 1 runtime failure.\n");
}

int cmd_data(int argc, char **argv) {
    lp_data_params p = lp_data_default_params();
    int json = 0, skip_bad = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--follow-symlinks")) {
            p.follow_symlinks = 1;
        } else if (!strcmp(a, "--skip-bad")) {
            skip_bad = 1;
        } else if (!strcmp(a, "--classes") || !strcmp(a, "--validation-split") || !strcmp(a, "--seed") ||
                   !strcmp(a, "--max-pixels") || !strcmp(a, "--threads")) {
            if (!v) {
                char msg[128];
                snprintf(msg, sizeof msg, "%s needs a value", a);
                cli_error("data", msg, "see loupe data --help");
                return 2;
            }
            i++;
            long n;
            double d;
            bool ok = true;
            if (!strcmp(a, "--classes")) p.classes = v;
            else if (!strcmp(a, "--validation-split")) ok = cli_parse_double(v, &d) && d >= 0 && d < 1, p.validation_split = ok ? d : 0;
            else if (!strcmp(a, "--seed")) {
                char *end;
                unsigned long long s = strtoull(v, &end, 10);
                ok = *v && *v != '-' && !*end;
                p.seed = s;
            } else if (!strcmp(a, "--max-pixels")) ok = cli_parse_int(v, 1, 0x7fffffffffffffffL, &n), p.max_pixels = n;
            else ok = cli_parse_int(v, 0, 1024, &n), p.threads = (int)n;
            if (!ok) {
                char msg[256];
                snprintf(msg, sizeof msg, "%s '%s': not a valid value", a, v);
                cli_error("data", msg,
                          !strcmp(a, "--validation-split") ? "a fraction in [0, 1), e.g. 0.2" : "see loupe data --help");
                return 2;
            }
        } else if (a[0] == '-' && a[1]) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", a);
            cli_error("data", msg, "see loupe data --help");
            return 2;
        } else if (!p.data_dir) {
            p.data_dir = a;
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "unexpected argument '%s' (one DATA folder)", a);
            cli_error("data", msg, "see loupe data --help");
            return 2;
        }
    }
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
