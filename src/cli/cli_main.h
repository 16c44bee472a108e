/* The whole loupe command line as one function, for loupe's main() and for
 * test programs that set up the library first (tests/reliability). */
#ifndef LP_CLI_MAIN_H
#define LP_CLI_MAIN_H
/* Runs `loupe argv[1] ...` and returns its exit status (0, 1, 2 or 130). */
int cli_main(int argc, char **argv);
#endif
