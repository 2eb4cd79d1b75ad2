/* main.c: placeholder entry point (replaced by the serve/CLI dispatcher). */
#include <stdio.h>

int
main(void)
{
    fputs("tollgate: not built yet\n", stderr);
    return 1;
}
