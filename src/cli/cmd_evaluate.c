/* loupe evaluate CHECKPOINT DIR [--json] [--batch N] [--skip-bad] [--threads N] */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: loupe evaluate CHECKPOINT DIR [--json] [--batch N] [--skip-bad] [--threads N]\n"
    "\n"
    "Evaluates a checkpoint on DIR/<class>/* (e.g. DATA/test) with the checkpoint's preprocessing,\n"
    "input size and calibration temperature: loss, accuracy, per-class precision, recall, F1,\n"
    "ROC-AUC (binary) and the confusion matrix. --json prints one JSON object.\n";

int cmd_evaluate(int argc, char **argv) {
    const char *ckpt = NULL, *dir = NULL;
    bool json = false;
    int skip_bad = 0;
    long batch = 32, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--skip-bad")) skip_bad = 1;
        else if (!strcmp(a, "--batch") || !strcmp(a, "--threads")) {
            long *dst = !strcmp(a, "--batch") ? &batch : &threads;
            if (i + 1 >= argc || !cli_parse_int(argv[i + 1], !strcmp(a, "--batch") ? 1 : 0, 65536, dst)) {
                cli_error("evaluate", "--batch/--threads expect a number", "run 'loupe evaluate --help'");
                return 2;
            }
            i++;
        } else if (a[0] == '-' && a[1]) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", a);
            cli_error("evaluate", msg, "run 'loupe evaluate --help'");
            return 2;
        } else if (!ckpt) ckpt = a;
        else if (!dir) dir = a;
        else {
            cli_error("evaluate", "too many arguments", "usage: loupe evaluate CHECKPOINT DIR");
            return 2;
        }
    }
    if (!ckpt || !dir) {
        cli_error("evaluate", "needs CHECKPOINT and DIR", "usage: loupe evaluate CHECKPOINT DIR [--json]");
        return 2;
    }
    lp_set_threads((int)threads);
    lp_model *m;
    lp_status s = lp_model_load(ckpt, &m);
    if (s) return cli_fail("evaluate", s);
    lp_eval_result *r;
    s = lp_evaluate(m, dir, (int)batch, skip_bad, &r);
    lp_model_free(m);
    if (s) return cli_fail("evaluate", s);
    char *text = json ? lp_eval_result_json(r) : lp_eval_result_text(r);
    if (text) {
        fputs(text, stdout);
        if (json) fputc('\n', stdout);
    }
    free(text);
    lp_eval_result_free(r);
    return text ? 0 : 1;
}
