/* Shared by the loupe subcommands. The CLI uses only the public header. */
#ifndef LP_CLI_H
#define LP_CLI_H
#include "loupe.h"
#include <stdbool.h>

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
/* Strict number parsing: the whole string must be a number in range. */
bool cli_parse_int(const char *s, long lo, long hi, long *out);
bool cli_parse_double(const char *s, double *out);
#endif
