/* PLACEHOLDER: replaced by the owner of this subcommand. */
#include "cli.h"
int cmd_predict(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("predict", "not built yet", NULL);
    return 1;
}
