/*
 * thread.h: naming the gateway's background threads, so top, perf and gdb tell them apart.
 */
#ifndef TG_CORE_THREAD_H
#define TG_CORE_THREAD_H

/* Names the calling thread (the kernel keeps the first 15 characters). */
void tg_thread_set_name(const char *name);

#endif
