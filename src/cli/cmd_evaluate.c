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
    int json = 0, skip_bad = 0, batch = 32, threads = 0, nargs;
    const cli_option opts[] = {
        CLI_OPT("--json", CLI_FLAG, &json),
        CLI_OPT("--skip-bad", CLI_FLAG, &skip_bad),
        {"--batch", CLI_INT, &batch, .lo = 1, .hi = 65536},
        CLI_OPT_THREADS(&threads),
        {0},
    };
    const cli_parser parser = {.cmd = "evaluate", .options = opts, .max_args = 2};
    int rc = cli_parse_options(&parser, argc, argv, &nargs);
    if (rc == CLI_HELP) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (rc) return rc;
    if (nargs > 2) {
        cli_error("evaluate", "too many arguments", "usage: loupe evaluate CHECKPOINT DIR");
        return 2;
    }
    if (nargs < 2) {
        cli_error("evaluate", "needs CHECKPOINT and DIR", "usage: loupe evaluate CHECKPOINT DIR [--json]");
        return 2;
    }
    const char *ckpt = argv[1], *dir = argv[2];
    lp_set_threads(threads);
    lp_model *m;
    lp_status s = lp_model_load(ckpt, &m);
    if (s) return cli_fail("evaluate", s);
    lp_eval_result *r;
    s = lp_evaluate(m, dir, batch, skip_bad, &r);
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
