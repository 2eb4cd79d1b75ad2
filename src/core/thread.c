/*
 * thread.c: background threads' names.
 */
#include "core/thread.h"

#include <pthread.h>
#include <stdio.h>

void
tg_thread_set_name(const char *name)
{
    char short_name[16]; /* the kernel keeps 15 characters and the terminator */
    snprintf(short_name, sizeof(short_name), "%s", name);
    pthread_setname_np(pthread_self(), short_name);
}
