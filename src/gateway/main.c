/*
 * main.c: the `tollgate` command: `serve` runs the gateway; every other command is a client
 * of the admin API (src/cli), so the CLI never opens the store itself.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "gateway/serve.h"

int
main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
        return tg_serve_main(argc - 2, argv + 2);
    }
    return tg_cli_main(argc, argv);
}
