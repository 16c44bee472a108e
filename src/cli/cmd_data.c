/* PLACEHOLDER: replaced by the owner of this subcommand. */
#include "cli.h"
int cmd_data(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("data", "not built yet", NULL);
    return 1;
}
