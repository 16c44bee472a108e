/* PLACEHOLDER: replaced by the owner of this subcommand. */
#include "cli.h"
int cmd_bench(int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_error("bench", "not built yet", NULL);
    return 1;
}
