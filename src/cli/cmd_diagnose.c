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
            fprintf(msg, "loupe diagnose: %s: no finite predictions for epoch %d; temperature not stored\n", path, epoch);
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
    const char *run = NULL, *report = NULL;
    int json = 0, apply = 0, no_report = 0, brief = 0;
    lp_diagnose_params p = lp_diagnose_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--apply")) {
            apply = 1;
        } else if (!strcmp(a, "--no-report")) {
            no_report = 1;
        } else if (!strcmp(a, "--short")) {
            brief = 1;
        } else if (!strcmp(a, "--report") || !strcmp(a, "--html")) {
            if (i + 1 >= argc) {
                cli_error("diagnose", "--report needs a file name", "e.g. --report run-report.html");
                return 2;
            }
            report = argv[++i];
        } else if (!strcmp(a, "--epoch") || !strcmp(a, "--patience") || !strcmp(a, "--images")) {
            if (i + 1 >= argc || !cli_parse_int(argv[i + 1], 1, 100000000, &v)) {
                char m[128];
                snprintf(m, sizeof m, "%s needs a whole number >= 1%s%s%s", a, i + 1 < argc ? " (got '" : "",
                         i + 1 < argc ? argv[i + 1] : "", i + 1 < argc ? "')" : "");
                cli_error("diagnose", m, NULL);
                return 2;
            }
            i++;
            if (!strcmp(a, "--epoch")) p.epoch = (int)v;
            else if (!strcmp(a, "--patience")) p.patience = (int)v;
            else p.max_images = (int)v;
        } else if (a[0] == '-' && a[1]) {
            char m[256];
            snprintf(m, sizeof m, "unknown option '%s'", a);
            cli_error("diagnose", m, "run 'loupe diagnose --help' for the options");
            return 2;
        } else if (!run) {
            run = a;
        } else {
            cli_error("diagnose", "give one run directory", "usage: loupe diagnose RUN [options]");
            return 2;
        }
    }
    if (!run) {
        usage(stderr);
        return 2;
    }
    lp_diagnosis *d;
    lp_status s = lp_diagnose_run(run, &p, &d);
    if (s) return cli_fail("diagnose", s);
    int rc = 0;
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
