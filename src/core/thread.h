/*
 * thread.h: background threads that must not delay the request loops.
 */
#ifndef TG_CORE_THREAD_H
#define TG_CORE_THREAD_H

/* The nice value of background threads: low enough that a worker waking on a shared core
 * preempts them at once (a worker waiting out the scheduler's wake-up granularity behind a
 * ledger batch is a millisecond of tail latency), high enough that they still get a tenth
 * of a core that the workers saturate. */
#define TG_THREAD_BACKGROUND_NICE 10

/* Lowers the calling thread's priority to TG_THREAD_BACKGROUND_NICE (Linux: nice is per
 * thread). Best effort: a failure is logged at debug level and otherwise ignored. */
void tg_thread_background(const char *name);

#endif
