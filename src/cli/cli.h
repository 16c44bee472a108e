/* Shared by the loupe subcommands. The CLI uses only the public header. */
#ifndef LP_CLI_H
#define LP_CLI_H
#include "loupe.h"
#include <stdbool.h>
#include <stdint.h>

typedef struct lp_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
} lp_command;

int cmd_data(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_evaluate(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_summary(int argc, char **argv);
int cmd_diagnose(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_fashion(int argc, char **argv);

/* Prints "loupe <cmd>: <msg>" and, when given, "hint: <hint>" to stderr.
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad data, 130 interrupted. */
void cli_error(const char *cmd, const char *msg, const char *hint);
/* Maps a failed status to an exit code and prints lp_errmsg(). */
int cli_fail(const char *cmd, lp_status s);
/* Strict number parsing (cmd_numbers.c): the whole string must be the number, in
 * range; no spaces, no '+', no hex, inf or nan, nothing after it. */
bool cli_parse_int(const char *s, long lo, long hi, long *out); /* [-]DIGITS in [lo, hi] */
bool cli_parse_u64(const char *s, uint64_t *out);               /* DIGITS, up to UINT64_MAX */
bool cli_parse_double(const char *s, double *out);              /* a finite decimal, e.g. -1.5e-3 */

/* --threads N: 0 (one per CPU) to CLI_MAX_THREADS, for every subcommand. 1024 is
 * CPU_SETSIZE, the most CPUs the library's thread pinning can name; more OpenMP
 * threads than that only compete for the same cores. */
#define CLI_MAX_THREADS 1024
#define CLI_OPT_THREADS(d) \
    {.name = "--threads", .kind = CLI_INT, .dest = (d), .lo = 0, .hi = CLI_MAX_THREADS, \
     .expects = "a thread count from 1 to 1024, or 0 for one per CPU"}

/* --size WxH: each side from a minimum to CLI_MAX_SIDE (the largest a checkpoint
 * records) and W*H at most CLI_MAX_PIXELS (the largest image the data loader takes,
 * 8192x8192), so a size accepted here can be trained, saved and evaluated. */
#define CLI_MAX_SIDE 65536L
#define CLI_MAX_PIXELS (1L << 26)
#define CLI_SIZE_LIMITS "each side 1 to 65536, W*H at most 67108864 pixels (8192x8192)"
/* "WxH" (and "N" for NxN when square_ok) within the limits above, sides >= min_side. */
bool cli_parse_size(const char *s, int min_side, bool square_ok, int *w, int *h);

/* Options of a subcommand, as a table (cmd_options.c). Example:
 *
 *     const cli_option opts[] = {
 *         CLI_OPT("--json", CLI_FLAG, &json),
 *         {"--batch", CLI_INT, &batch, .lo = 1, .hi = 65536},
 *         {"--arch", CLI_CHOICE, &arch, .expects = "vgg16|vgg19"},
 *         {0},
 *     };
 *     const cli_parser parser = {.cmd = "convert", .options = opts, .max_args = 2};
 *     int nargs, rc = cli_parse_options(&parser, argc, argv, &nargs);
 *     if (rc == CLI_HELP) return usage(stdout), 0;
 *     if (rc) return rc;              // the message is printed; rc is 2
 *     if (nargs > 2) ...              // too many arguments: argv[3] is the first extra one
 *     // argv[1] .. argv[nargs] are the positional arguments, in order
 */
typedef enum cli_opt_kind {
    CLI_FLAG,     /* no value; int *dest = 1 */
    CLI_FLAG_OFF, /* no value; int *dest = 0 (e.g. --no-shuffle) */
    CLI_INT,      /* int *dest, in [lo, hi] */
    CLI_INT64,    /* int64_t *dest, in [lo, hi] */
    CLI_U64,      /* uint64_t *dest, in [lo, hi] (lo >= 0) */
    CLI_DOUBLE,   /* double *dest, any number but NaN */
    CLI_STRING,   /* const char **dest, any text (the argument itself, not a copy) */
    CLI_CHOICE,   /* const char **dest, one of expects's '|'-separated words */
    CLI_CUSTOM,   /* parse(value, dest) says whether the value is good and stores it */
} cli_opt_kind;

typedef struct cli_option {
    const char *name; /* the spelling, e.g. "--epochs"; NULL ends the table */
    cli_opt_kind kind;
    void *dest;
    long lo, hi;         /* CLI_INT, CLI_INT64, CLI_U64: the accepted range */
    const char *expects; /* what a value looks like, for messages ("a file name");
                          * default from the kind and range; CLI_CHOICE: the words */
    bool (*parse)(const char *value, void *dest); /* CLI_CUSTOM */
    const char *hint;    /* under a missing or bad value's message; default: see --help */
    int *seen;           /* when not NULL, set to 1 when the option is given */
} cli_option;

/* A row with no more than name, kind and destination (other rows name the rest:
 * {"--batch", CLI_INT, &batch, .lo = 1, .hi = 64}). */
#define CLI_OPT(n, k, d) {.name = (n), .kind = (k), .dest = (d)}

typedef struct cli_parser {
    const char *cmd;           /* messages read "loupe <cmd>: ..." */
    const cli_option *options; /* ends with {0} */
    int max_args;              /* positional arguments taken; -1: any number */
    bool equals_form;          /* also accept --name=VALUE */
} cli_parser;

#define CLI_HELP (-1) /* cli_parse_options: -h or --help was given */

/* Parses argv[1..argc-1]: "--name VALUE" (and "--name=VALUE" with equals_form).
 * Arguments that do not start with '-' (and "-" alone) are positional: they are
 * moved, in order, to argv[1..*nargs]. Stops at the first problem: an unknown
 * option, a missing or bad value (one line on stderr, "loupe <cmd>: ...", and a
 * hint), or one positional argument more than max_args (*nargs = max_args + 1,
 * nothing printed: the command says what it expected).
 * @return 0 parsed, CLI_HELP for -h/--help (nothing printed), 2 bad usage */
int cli_parse_options(const cli_parser *p, int argc, char **argv, int *nargs);
/* For CLI_CUSTOM: a non-empty string (const char **dest). */
bool cli_parse_nonempty(const char *value, void *dest);
/* For CLI_CUSTOM: a number >= 0 (double *dest). */
bool cli_parse_nonnegative(const char *value, void *dest);
/* For CLI_CUSTOM: a number in [0, 1) (double *dest). */
bool cli_parse_fraction(const char *value, void *dest);
/* train's and summary's rule: --head implies --top none (*top set to it) and contradicts
 * another --top (false: the command refuses it). */
bool cli_head_top(bool head_seen, bool top_seen, const char **top);
#endif
