/* loupe diagnose RUN: explains a run (why validation loss and accuracy
 * disagree), calibrates it, writes RUN/report.html; --apply stores the
 * temperature in the checkpoints. */
#include "cli.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *out) {
    fprintf(out,
        "usage: loupe diagnose RUN [--json] [--epoch N] [--apply] [--report FILE] [--no-report]\n"
        "                          [--patience N] [--images N] [--short]\n\n"
        "Explains a training run from its run directory alone (run.json, history.csv,\n"
        "valid_predictions.csv): why validation loss and accuracy disagree, per epoch and\n"
        "per image; calibration (ECE, MCE, Brier, NLL) and temperature scaling; verdicts\n"
        "(overconfident errors, overfitting, single-class predictor, learning rate too high,\n"
        "small validation set, preprocessing mismatch, early stopping).\n\n"
        "options:\n"
        "  --json          print every figure as one JSON object (keys in loupe.h)\n"
        "  --epoch N       analyse epoch N instead of the last one\n"
        "  --apply         store the fitted temperature in RUN/checkpoints/{best,last,final}.safetensors\n"
        "                  (each fitted on the predictions of the epoch it holds), so predict and\n"
        "                  evaluate give calibrated probabilities\n"
        "  --report FILE   write the HTML report to FILE (default RUN/report.html; --html is the same)\n"
        "  --no-report     do not write the HTML report\n"
        "  --patience N    patience for the early-stopping what-if (default: run.json's, else 5)\n"
        "  --images N      images listed in the text and the report (default 10)\n"
        "  --short         print only the summary, not the tables\n"
        "  -h, --help      this help\n\n"
        "exit status: 0 ok, 1 runtime failure, 2 bad usage or malformed run files\n");
}

/* The epoch whose weights a checkpoint holds: its "epoch" metadata when it loads,
 * else the one inferred from the run (best monitored epoch, or the last). */
static int checkpoint_epoch(const lp_diagnosis *d, const char *path, int inferred) {
    lp_model *m;
    if (lp_model_load(path, &m) != LP_OK) return inferred;
    const char *e = lp_model_meta(m, "epoch");
    long v;
    int epoch = e && cli_parse_int(e, 1, 100000000, &v) ? (int)v : inferred;
    lp_model_free(m);
    return isfinite(lp_diagnosis_temperature_at(d, epoch)) ? epoch : inferred;
}

static int apply_temperature(lp_diagnosis *d, const char *run, FILE *msg) {
    static const char *names[] = {"best", "last", "final"};
    int done = 0;
    for (int i = 0; i < 3; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "checkpoints/%s.safetensors", names[i]);
        size_t n = strlen(run) + strlen(rel) + 2;
        char *path = malloc(n);
        if (!path) {
            cli_error("diagnose", "out of memory", NULL);
            return 1;
        }
        snprintf(path, n, "%s/%s", run, rel);
        struct stat st;
        if (stat(path, &st) != 0) {
            free(path);
            continue;
        }
        int epoch = checkpoint_epoch(d, path, i == 1 ? lp_diagnosis_last_epoch(d) : lp_diagnosis_monitor_best_epoch(d));
        double T = lp_diagnosis_temperature_at(d, epoch);
        if (!isfinite(T)) {
            fprintf(msg, "loupe diagnose: %s: no temperature for epoch %d (no finite predictions, or the fit stops at its "
                         "bound: see the diagnosis' note); not stored\n", path, epoch);
            free(path);
            continue;
        }
        char value[32];
        snprintf(value, sizeof value, "%.6g", T);
        lp_status s = lp_checkpoint_set_meta(path, "temperature", value);
        if (s) {
            free(path);
            return cli_fail("diagnose", s);
        }
        fprintf(msg, "temperature %s (fitted on epoch %d's predictions) stored in %s\n", value, epoch, path);
        free(path);
        done++;
    }
    if (!done) {
        cli_error("diagnose", "--apply: no checkpoint to update in RUN/checkpoints (best, last or final .safetensors)",
                  "run it on a run directory written by 'loupe train'");
        return 1;
    }
    return 0;
}

int cmd_diagnose(int argc, char **argv) {
    const char *report = NULL;
    int json = 0, apply = 0, no_report = 0, brief = 0, nargs;
    lp_diagnose_params p = lp_diagnose_default_params();
    const cli_option opts[] = {
        CLI_OPT("--json", CLI_FLAG, &json),
        CLI_OPT("--apply", CLI_FLAG, &apply),
        CLI_OPT("--no-report", CLI_FLAG, &no_report),
        CLI_OPT("--short", CLI_FLAG, &brief),
        {"--report", CLI_STRING, &report, .expects = "a file name", .hint = "e.g. --report run-report.html"},
        {"--html", CLI_STRING, &report, .expects = "a file name", .hint = "e.g. --html run-report.html"},
        {"--epoch", CLI_INT, &p.epoch, .lo = 1, .hi = 100000000, .expects = "a whole number >= 1"},
        {"--patience", CLI_INT, &p.patience, .lo = 1, .hi = 100000000, .expects = "a whole number >= 1"},
        {"--images", CLI_INT, &p.max_images, .lo = 1, .hi = 100000000, .expects = "a whole number >= 1"},
        {0},
    };
    const cli_parser parser = {.cmd = "diagnose", .options = opts, .max_args = 1};
    int rc = cli_parse_options(&parser, argc, argv, &nargs);
    if (rc == CLI_HELP) {
        usage(stdout);
        return 0;
    }
    if (rc) return rc;
    if (nargs > 1) {
        cli_error("diagnose", "give one run directory", "usage: loupe diagnose RUN [options]");
        return 2;
    }
    if (!nargs) {
        usage(stderr);
        return 2;
    }
    const char *run = argv[1];
    lp_diagnosis *d;
    lp_status s = lp_diagnose_run(run, &p, &d);
    if (s) return cli_fail("diagnose", s);
    lp_diagnosis_set_thumbnailer(d, lp_image_thumbnail_png, NULL);
    FILE *msg = json ? stderr : stdout;
    char *out = json ? lp_diagnosis_json(d) : lp_diagnosis_text(d, brief ? LP_DIAGNOSIS_SHORT : LP_DIAGNOSIS_FULL);
    if (!out) {
        cli_error("diagnose", "out of memory", NULL);
        lp_diagnosis_free(d);
        return 1;
    }
    fputs(out, stdout);
    if (json) fputc('\n', stdout);
    free(out);
    if (!no_report) {
        s = lp_diagnosis_write_html(d, report);
        if (s) {
            if (report) {
                rc = cli_fail("diagnose", s);
            } else {
                fprintf(stderr, "loupe diagnose: warning: report not written: %s\n", lp_errmsg());
            }
        } else {
            fprintf(msg, "\nreport: %s%s\n", report ? report : run, report ? "" : "/report.html");
        }
    }
    if (apply && rc == 0) rc = apply_temperature(d, run, msg);
    lp_diagnosis_free(d);
    fflush(stdout);
    return rc;
}
