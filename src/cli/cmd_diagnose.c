/* PLACEHOLDER: replaced by the owner of this subcommand. */
#include "cli.h"
int cmd_diagnose(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("diagnose", "not built yet", NULL);
    return 1;
}
