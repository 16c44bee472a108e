/* loupe: command-line front end (cli_main.c). */
#include "cli_main.h"

int main(int argc, char **argv) { return cli_main(argc, argv); }
