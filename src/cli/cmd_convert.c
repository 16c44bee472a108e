/* PLACEHOLDER: replaced by the owner of this subcommand. */
#include "cli.h"
int cmd_convert(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("convert", "not built yet", NULL);
    return 1;
}
