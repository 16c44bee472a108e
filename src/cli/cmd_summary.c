/* PLACEHOLDER: replaced by the owner of this subcommand. */
#include "cli.h"
int cmd_summary(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("summary", "not built yet", NULL);
    return 1;
}
