/*
 * worker.h: one worker thread: its libuv loop, HTTP server, upstream client and the requests
 * in flight on it.
 *
 * Workers share nothing mutable but the published state snapshot (gateway/state.h) and the
 * ledger queue. The main thread starts them, and asks them to stop through an async handle;
 * a stopping worker stops accepting, lets in-flight requests finish within the grace period,
 * then cancels what is left (each cancelled call is still accounted) and ends its loop.
 */
#ifndef TG_GATEWAY_WORKER_H
#define TG_GATEWAY_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "gateway/state.h"
#include "http/server.h"
#include "store/ledger.h"
#include "upstream/client.h"

struct tg_call;

struct tg_worker {
    int index;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;  /* main -> worker: stop requested */
    uv_timer_t grace; /* shutdown grace period */
    struct tg_http_server *http;
    struct tg_upstream_client *upstream;
    struct tg_ledger *ledger; /* shared, borrowed */
    struct tg_state *state;   /* this worker's reference to the snapshot it last saw */
    struct tg_call *calls;    /* in-flight inference calls (intrusive list) */
    atomic_bool stop_requested;
    bool is_stopping;
    bool is_cancelled; /* the grace period ran out and in-flight calls were cancelled */
    uint64_t stop_ms;  /* loop time the stop began */
    int start_rc;      /* 0, or why the worker could not start */
    uv_sem_t started;
};

/* The snapshot for a request on this worker: refreshed when the generation moved. The
 * pointer is valid until the worker's next tg_worker_state call; a request that outlives its
 * handler keeps its own reference (tg_state_acquire semantics via refs). */
struct tg_state *tg_worker_state(struct tg_worker *w);

/* Starts the worker thread (listening on the config's address). Blocks until it listens or
 * failed; returns 0 or the failure code. */
int tg_worker_start(struct tg_worker *w, int index, struct tg_ledger *ledger);

/* Asks the worker to stop (thread-safe). */
void tg_worker_request_stop(struct tg_worker *w);

/* Waits for the worker thread to end and frees its loop. */
void tg_worker_join(struct tg_worker *w);

/* Readiness: false once shutdown began (process-wide). */
bool tg_gateway_is_ready(void);
void tg_gateway_set_ready(bool ready);

#endif
