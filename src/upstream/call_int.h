/*
 * call_int.h: the call machinery both engines of the upstream client share (client.c for
 * libcurl, h1.c for native HTTP/1.1), so that the promises of client.h (the four timeouts,
 * pause and resume, cancel, on_done once) are kept by one piece of code.
 *
 * struct tg_call_base is the first member of each engine's call, so the struct tg_upstream_call
 * pointers both hand out convert to it, and resume and cancel need not know the engine. It holds
 * the callbacks, timeouts, phase and clocks, state flags, the collected response headers, the
 * message for on_done and the links of the lists. struct tg_call_set is one engine's bookkeeping:
 * its active calls, the calls with a cancel or resume to apply (run from a uv_idle, outside every
 * engine callback and API call), the finished calls kept for reuse (each keeps its timer and
 * header storage, so a busy worker does not allocate per call), and the count of uv handles not
 * yet closed, at whose end the engine is freed.
 *
 * What stays in the engines: how a call ends on the wire (finish), what fires the timer
 * callbacks, and the parts of a call that differ (curl easy handles; sockets, pool and parser).
 *
 * Private to src/upstream. Everything runs on the loop thread.
 */
#ifndef TG_UPSTREAM_CALL_INT_H
#define TG_UPSTREAM_CALL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "upstream/client.h"

#define TG_CALL_MAX_POOLED 64
#define TG_CALL_MAX_HEADER_BYTES (128 * 1024)
#define TG_CALL_MAX_HEADERS 256
#define TG_CALL_MSG_BYTES 320

enum tg_call_phase {
    TG_CALL_CONNECTING, /* before the request goes out: connect deadline (where the set keeps one)
                         */
    TG_CALL_SENT,       /* request going out or out, nothing back yet: first-byte deadline */
    TG_CALL_RECEIVING,  /* response bytes arriving: idle deadline */
};

struct tg_call_header_off {
    size_t name;
    size_t value;
};

struct tg_call_base {
    struct tg_call_set *set;
    struct tg_call_base *next; /* active list or pool */
    struct tg_call_base *prev;
    struct tg_call_base *dnext; /* deferred list (cancel/resume to apply) */
    struct tg_call_base *dprev;
    uv_timer_t timer; /* the earliest deadline; data is the call */
    struct tg_upstream_callbacks cbs;
    void *arg;
    struct tg_upstream_timeouts t;

    enum tg_call_phase phase;
    uint64_t start_ms;
    uint64_t connect_start_ms;
    uint64_t sent_ms;
    uint64_t last_read_ms;
    uint64_t due_ms; /* when the timer fires next */
    bool is_deferred;
    bool is_paused;
    bool is_resume_pending;
    bool is_cancel_pending;
    bool is_in_on_data;
    bool has_headers;
    bool is_done;
    int err; /* set inside an engine callback to fail the call with this code */

    /* Response headers of the current response: "name\0value\0" pairs plus their offsets. */
    struct tg_buf hdr_bytes;
    struct tg_call_header_off *hdr_offs;
    struct tg_upstream_header *hdrs;
    size_t n_hdrs;
    size_t hdrs_cap;

    char msg[TG_CALL_MSG_BYTES]; /* what on_done says */
};

struct tg_call_set {
    uv_loop_t *loop;
    uv_idle_t defer; /* runs on_defer while the deferred list is not empty; data is the set */
    uv_idle_cb on_defer;
    /* Called once the set is closing and its last handle has closed: frees the engine. */
    void (*on_closed)(struct tg_call_set *set);
    struct tg_call_base *active;
    struct tg_call_base *pool;
    struct tg_call_base *deferred;
    size_t n_active;
    size_t n_pool;
    size_t n_open; /* uv handles not yet closed (the defer idle among them) */
    int cb_depth;  /* > 0 while on_headers or on_data runs */
    bool is_closing;
    bool has_connect_deadline; /* false where the engine times connects itself (libcurl) */
};

/* Fills the zero timeouts of req with the defaults. */
void tg_call_timeouts_fill(struct tg_upstream_timeouts *t, const struct tg_upstream_timeouts *req);

/* Initializes set on loop with its defer idle (one open handle). on_closed frees the engine. */
void tg_call_set_init(struct tg_call_set *set, uv_loop_t *loop, uv_idle_cb on_defer,
                      void (*on_closed)(struct tg_call_set *set));

/* Marks set closing and closes its defer idle; the engine is freed through on_closed once every
 * handle it counts has closed. */
void tg_call_set_close(struct tg_call_set *set);

/* Counts one closed handle of the engine; for close callbacks of the engine's own handles. */
void tg_call_set_handle_closed(struct tg_call_set *set);

/* ---- the free-call pool ---- */

/* A pooled call (to reset and reuse), or NULL when the pool is empty. */
struct tg_call_base *tg_call_pool_take(struct tg_call_set *set);

/* Sets up a freshly allocated (zeroed) call: its timer and header storage. */
void tg_call_init(struct tg_call_set *set, struct tg_call_base *call);

/* Readies a call, new or pooled, for a start: lists, phase, flags, message and headers. */
void tg_call_reset(struct tg_call_base *call);

/* Keeps a finished call for reuse; false when the pool is full or the set closing, and the
 * engine must then release its parts and call tg_call_destroy. */
bool tg_call_pool_put(struct tg_call_base *call);

/* Frees the header storage and closes the timer; the call is freed (free()) once it closed. */
void tg_call_destroy(struct tg_call_base *call);

/* ---- starting and ending ---- */

/* Takes the callbacks and timeouts (zeros become defaults) of a call being started and starts
 * its clocks from now: the loop's clock may be a whole callback old. */
void tg_call_begin(struct tg_call_base *call, const struct tg_upstream_request *req,
                   const struct tg_upstream_callbacks *cbs, void *arg);

/* Adds a started call to the active list, once nothing can fail its start any more. */
void tg_call_active_push(struct tg_call_base *call);

/* First half of ending a call: false when it had ended already; otherwise marks it done and
 * takes it off the lists and its timer. The engine then detaches its own parts and calls
 * tg_call_report. */
bool tg_call_end(struct tg_call_base *call);

/* Fires on_done with err and msg (copied into call->msg unless it is call->msg). */
void tg_call_report(struct tg_call_base *call, int err, const char *msg);

/* ---- cancel, resume and the deferred list ---- */

/* As tg_upstream_call_resume and tg_upstream_call_cancel, for either engine. */
void tg_call_resume(struct tg_call_base *call);
void tg_call_cancel(struct tg_call_base *call);

/* Takes the next call off the deferred list, or NULL when it is empty. */
struct tg_call_base *tg_call_deferred_pop(struct tg_call_set *set);

/* Clears a resume request; true when the call was paused and is no longer, so the engine
 * reads again (the idle clock restarts now). */
bool tg_call_unpause(struct tg_call_base *call);

/* ---- deadlines ---- */

/* The earliest deadline that applies now (absolute loop ms). */
uint64_t tg_call_next_deadline(const struct tg_call_base *call);

/* Arms the call's timer for its earliest deadline, with the engine's timer callback. */
void tg_call_arm(struct tg_call_base *call, uv_timer_cb on_timer);

/* For the timer callback: true when a deadline has passed, with call->msg saying which; false
 * when the timer woke early (data came, or the call was paused) and must be armed again. */
bool tg_call_is_timed_out(struct tg_call_base *call);

/* ---- response headers ---- */

/* Forgets the headers collected so far (a new response starts, after a 1xx). */
void tg_call_headers_reset(struct tg_call_base *call);

/* Makes room for one more header; 0, or TG_EUPSTREAM (and call->err set) past the cap. */
int tg_call_header_room(struct tg_call_base *call);

/* Sets err and msg unless the call has failed already. */
void tg_call_fail(struct tg_call_base *call, int err, const char *msg);

/* The header block is complete: hands it to on_headers with status. */
void tg_call_headers_deliver(struct tg_call_base *call, int status);

/* Hands body bytes to on_data and returns what it returned. */
static inline int
tg_call_deliver(struct tg_call_base *call, const char *data, size_t len)
{
    call->set->cb_depth++;
    call->is_in_on_data = true;
    int rc = call->cbs.on_data(data, len, call->arg);
    call->is_in_on_data = false;
    call->set->cb_depth--;
    return rc;
}

#define TG_CALL_TOO_MANY_HEADERS "the upstream sent too many response headers"
#define TG_CALL_HEADERS_TOO_LARGE "the upstream sent response headers that are too large"

#endif
