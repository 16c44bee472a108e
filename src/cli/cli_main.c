/* The loupe command line without main(): the command table, the helpers of
 * cli.h and cli_main(), which dispatches to one file per subcommand. loupe's
 * main() (main.c) and the tests' loupe-testhooks (tests/reliability) call it. */
#include "cli.h"
#include "cli_main.h"
#include <stdio.h>
#include <string.h>

static const lp_command commands[] = {
    {"data", "check a dataset folder: counts, sizes, bad files, leaks", cmd_data},
    {"train", "train a classifier on DATA/{train,valid}/<class>/*", cmd_train},
    {"evaluate", "loss, accuracy, per-class metrics, confusion matrix", cmd_evaluate},
    {"predict", "class probabilities for images", cmd_predict},
    {"summary", "layers, output shapes and parameter counts", cmd_summary},
    {"diagnose", "explain a run: loss vs accuracy, calibration, report", cmd_diagnose},
    {"convert", "Keras .h5, safetensors or ONNX weights to a loupe checkpoint", cmd_convert},
    {"bench", "training throughput on synthetic data", cmd_bench},
    {"fashion", "write a folder dataset from Debian's Fashion-MNIST", cmd_fashion},
};

static void usage(FILE *out) {
    fprintf(out, "loupe %s: train image classifiers by transfer learning, with diagnostics\n\n", lp_version());
    fprintf(out, "usage: loupe <command> [options]   (loupe <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

void cli_error(const char *cmd, const char *msg, const char *hint) {
    fprintf(stderr, "loupe%s%s: %s\n", cmd && *cmd ? " " : "", cmd ? cmd : "", msg);
    if (hint && *hint) fprintf(stderr, "hint: %s\n", hint);
}

int cli_fail(const char *cmd, lp_status s) {
    cli_error(cmd, lp_errmsg()[0] ? lp_errmsg() : lp_status_name(s), NULL);
    switch (s) {
    case LP_ERR_ARG: case LP_ERR_DATA: case LP_ERR_FORMAT: case LP_ERR_SHAPE: return 2;
    case LP_ERR_INTERRUPTED: return 130;
    default: return 1;
    }
}

int cli_main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("loupe %s\n", lp_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    char msg[256];
    snprintf(msg, sizeof msg, "unknown command '%s'", argv[1]);
    cli_error("", msg, "run 'loupe --help' for the list of commands");
    return 2;
}
