/*
 * cli.h: the `tollgate` command-line client (every command except `serve`).
 *
 * Each command is one HTTP call (or a short paginated series of them) to the admin API with
 * libcurl's blocking easy interface, so every change passes the same checks and audit as the
 * API itself; the CLI never opens the store. The commands and options live in one table (see
 * cli_int.h) from which `tollgate help`, `tollgate COMMAND --help` and docs/cli.md are made.
 */
#ifndef TG_CLI_CLI_H
#define TG_CLI_CLI_H

/* Runs the command named by argv[1] (argv[0] is the program; options may come before or
 * after the command). Prints tables or, with --json, the API's JSON on stdout and errors on
 * stderr as "tollgate: <message>". Returns the process exit code: 0 ok, 1 API or usage error
 * (including an unreachable gateway or no admin key), 2 bad command line. Never prints the
 * admin key. Blocking; call from the main thread (it calls curl_global_init). */
int tg_cli_main(int argc, char **argv);

#endif
