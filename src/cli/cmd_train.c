/* PLACEHOLDER: replaced by the owner of this subcommand. */
#include "cli.h"
int cmd_train(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("train", "not built yet", NULL);
    return 1;
}
