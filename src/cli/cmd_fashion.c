/* PLACEHOLDER: replaced by the owner of this subcommand. */
#include "cli.h"
int cmd_fashion(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("fashion", "not built yet", NULL);
    return 1;
}
