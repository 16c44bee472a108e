/* PLACEHOLDER: replaced by the owner of this subcommand. */
#include "cli.h"
int cmd_evaluate(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("evaluate", "not built yet", NULL);
    return 1;
}
