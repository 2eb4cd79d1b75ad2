/*
 * thread.c: background threads' priority and name.
 */
#include "core/thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"

void
tg_thread_background(const char *name)
{
    char short_name[16]; /* the kernel keeps 15 characters */
    snprintf(short_name, sizeof(short_name), "%s", name);
    pthread_setname_np(pthread_self(), short_name);
    id_t tid = (id_t)syscall(SYS_gettid);
    if (setpriority(PRIO_PROCESS, tid, TG_THREAD_BACKGROUND_NICE) != 0) {
        tg_log_debug("thread %s: cannot lower its priority: %s", name, strerror(errno));
    }
}
