/*
 * call_common.c: the call machinery both upstream engines share (see call_int.h): timeouts and
 * deadlines, the collected response headers, the active and deferred lists, the free-call pool,
 * and the handle count that frees an engine once it has closed.
 *
 * Deadlines: one uv_timer per call, armed for the earliest deadline that applies and checked
 * lazily: a read only records the time, and the timer, when it fires early, re-arms for what is
 * left. That keeps the per-read cost to one store. The idle deadline is ignored while the call
 * is paused.
 */
#include "upstream/call_int.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"
#include "core/mem.h"

void
tg_upstream_timeouts_default(struct tg_upstream_timeouts *t)
{
    t->connect_ms = 10000;
    t->first_byte_ms = 120000;
    t->idle_ms = 120000;
    t->total_ms = 600000;
}

void
tg_call_timeouts_fill(struct tg_upstream_timeouts *t, const struct tg_upstream_timeouts *req)
{
    struct tg_upstream_timeouts d;
    tg_upstream_timeouts_default(&d);
    t->connect_ms = req->connect_ms ? req->connect_ms : d.connect_ms;
    t->first_byte_ms = req->first_byte_ms ? req->first_byte_ms : d.first_byte_ms;
    t->idle_ms = req->idle_ms ? req->idle_ms : d.idle_ms;
    t->total_ms = req->total_ms ? req->total_ms : d.total_ms;
}

/* ---- the set and its handles ------------------------------------------------------------- */

void
tg_call_set_init(struct tg_call_set *set, uv_loop_t *loop, uv_idle_cb on_defer,
                 void (*on_closed)(struct tg_call_set *set))
{
    set->loop = loop;
    set->on_defer = on_defer;
    set->on_closed = on_closed;
    uv_idle_init(loop, &set->defer);
    set->defer.data = set;
    set->n_open = 1;
}

void
tg_call_set_handle_closed(struct tg_call_set *set)
{
    set->n_open--;
    if (set->is_closing && set->n_open == 0) {
        set->on_closed(set);
    }
}

static void
on_defer_closed(uv_handle_t *h)
{
    tg_call_set_handle_closed(h->data);
}

void
tg_call_set_close(struct tg_call_set *set)
{
    set->is_closing = true;
    uv_close((uv_handle_t *)&set->defer, on_defer_closed);
}

static void
on_call_closed(uv_handle_t *h)
{
    struct tg_call_base *call = h->data;
    struct tg_call_set *set = call->set;
    free(call); /* the base is the first member of the engine's call */
    tg_call_set_handle_closed(set);
}

/* ---- the free-call pool ------------------------------------------------------------------ */

struct tg_call_base *
tg_call_pool_take(struct tg_call_set *set)
{
    struct tg_call_base *call = set->pool;
    if (call != NULL) {
        set->pool = call->next;
        set->n_pool--;
    }
    return call;
}

void
tg_call_init(struct tg_call_set *set, struct tg_call_base *call)
{
    call->set = set;
    uv_timer_init(set->loop, &call->timer);
    call->timer.data = call;
    set->n_open++;
    tg_buf_init(&call->hdr_bytes, TG_CALL_MAX_HEADER_BYTES);
}

void
tg_call_reset(struct tg_call_base *call)
{
    call->next = call->prev = call->dnext = call->dprev = NULL;
    call->phase = TG_CALL_CONNECTING;
    call->is_deferred = call->is_paused = call->is_resume_pending = false;
    call->is_cancel_pending = call->is_in_on_data = call->has_headers = call->is_done = false;
    call->err = 0;
    call->msg[0] = '\0';
    tg_call_headers_reset(call);
}

bool
tg_call_pool_put(struct tg_call_base *call)
{
    struct tg_call_set *set = call->set;
    if (set->is_closing || set->n_pool >= TG_CALL_MAX_POOLED) {
        return false;
    }
    call->next = set->pool;
    set->pool = call;
    set->n_pool++;
    return true;
}

void
tg_call_destroy(struct tg_call_base *call)
{
    tg_buf_deinit(&call->hdr_bytes);
    free(call->hdr_offs);
    free(call->hdrs);
    uv_close((uv_handle_t *)&call->timer, on_call_closed);
}

/* ---- the active and deferred lists ------------------------------------------------------- */

static void
active_unlink(struct tg_call_base *call)
{
    struct tg_call_set *set = call->set;
    if (call->prev != NULL) {
        call->prev->next = call->next;
    } else {
        set->active = call->next;
    }
    if (call->next != NULL) {
        call->next->prev = call->prev;
    }
    call->next = call->prev = NULL;
    set->n_active--;
}

static void
defer_unlink(struct tg_call_base *call)
{
    struct tg_call_set *set = call->set;
    if (!call->is_deferred) {
        return;
    }
    call->is_deferred = false;
    if (call->dprev != NULL) {
        call->dprev->dnext = call->dnext;
    } else {
        set->deferred = call->dnext;
    }
    if (call->dnext != NULL) {
        call->dnext->dprev = call->dprev;
    }
    call->dnext = call->dprev = NULL;
}

static void
defer_push(struct tg_call_base *call)
{
    struct tg_call_set *set = call->set;
    if (call->is_deferred) {
        return;
    }
    call->is_deferred = true;
    call->dprev = NULL;
    call->dnext = set->deferred;
    if (set->deferred != NULL) {
        set->deferred->dprev = call;
    }
    set->deferred = call;
    uv_idle_start(&set->defer, set->on_defer);
}

struct tg_call_base *
tg_call_deferred_pop(struct tg_call_set *set)
{
    struct tg_call_base *call = set->deferred;
    if (call != NULL) {
        defer_unlink(call);
    }
    return call;
}

/* ---- starting and ending ----------------------------------------------------------------- */

void
tg_call_begin(struct tg_call_base *call, const struct tg_upstream_request *req,
              const struct tg_upstream_callbacks *cbs, void *arg)
{
    struct tg_call_set *set = call->set;
    call->cbs = *cbs;
    call->arg = arg;
    tg_call_timeouts_fill(&call->t, &req->timeouts);
    uv_update_time(set->loop);
    call->start_ms = uv_now(set->loop);
    call->connect_start_ms = call->start_ms;
}

void
tg_call_active_push(struct tg_call_base *call)
{
    struct tg_call_set *set = call->set;
    call->next = set->active;
    if (set->active != NULL) {
        set->active->prev = call;
    }
    set->active = call;
    set->n_active++;
}

bool
tg_call_end(struct tg_call_base *call)
{
    if (call->is_done) {
        return false;
    }
    call->is_done = true;
    defer_unlink(call);
    uv_timer_stop(&call->timer);
    active_unlink(call);
    return true;
}

void
tg_call_report(struct tg_call_base *call, int err, const char *msg)
{
    if (msg != call->msg) {
        if (msg[0] == '\0') {
            call->msg[0] = '\0'; /* the common case, without a printf */
        } else {
            snprintf(call->msg, sizeof(call->msg), "%s", msg);
        }
    }
    call->cbs.on_done(err, call->msg, call->arg);
}

/* ---- cancel and resume ------------------------------------------------------------------- */

void
tg_call_resume(struct tg_call_base *call)
{
    if (call == NULL || call->is_done || call->is_cancel_pending) {
        return;
    }
    if (call->is_in_on_data && !call->is_paused) {
        /* The engine sees it when on_data returns TG_EAGAIN: resumed before it even paused. */
        call->is_resume_pending = true;
        return;
    }
    if (!call->is_paused) {
        return;
    }
    call->is_resume_pending = true;
    defer_push(call);
}

void
tg_call_cancel(struct tg_call_base *call)
{
    if (call == NULL || call->is_done || call->is_cancel_pending) {
        return;
    }
    call->is_cancel_pending = true;
    defer_push(call);
}

bool
tg_call_unpause(struct tg_call_base *call)
{
    call->is_resume_pending = false;
    if (!call->is_paused) {
        return false;
    }
    call->is_paused = false;
    return true;
}

/* ---- deadlines --------------------------------------------------------------------------- */

uint64_t
tg_call_next_deadline(const struct tg_call_base *call)
{
    uint64_t d = call->start_ms + call->t.total_ms;
    uint64_t p = UINT64_MAX;
    if (call->phase == TG_CALL_CONNECTING) {
        if (call->set->has_connect_deadline) {
            p = call->connect_start_ms + call->t.connect_ms;
        }
    } else if (call->phase == TG_CALL_SENT) {
        p = call->sent_ms + call->t.first_byte_ms;
    } else if (!call->is_paused) {
        p = call->last_read_ms + call->t.idle_ms;
    }
    return p < d ? p : d;
}

void
tg_call_arm(struct tg_call_base *call, uv_timer_cb on_timer)
{
    uint64_t now = uv_now(call->set->loop);
    uint64_t d = tg_call_next_deadline(call);
    call->due_ms = d > now ? d : now;
    uv_timer_start(&call->timer, on_timer, call->due_ms - now, 0);
}

bool
tg_call_is_timed_out(struct tg_call_base *call)
{
    uint64_t now = uv_now(call->set->loop);
    if (call->phase == TG_CALL_CONNECTING && call->set->has_connect_deadline &&
        now >= call->connect_start_ms + call->t.connect_ms &&
        now < call->start_ms + call->t.total_ms) {
        snprintf(call->msg, sizeof(call->msg), "timed out connecting after %llu ms",
                 (unsigned long long)call->t.connect_ms);
    } else if (now >= call->start_ms + call->t.total_ms) {
        snprintf(call->msg, sizeof(call->msg), "timed out after %llu ms in total",
                 (unsigned long long)call->t.total_ms);
    } else if (call->phase == TG_CALL_SENT && now >= call->sent_ms + call->t.first_byte_ms) {
        snprintf(call->msg, sizeof(call->msg), "timed out waiting for the first byte after %llu ms",
                 (unsigned long long)call->t.first_byte_ms);
    } else if (call->phase == TG_CALL_RECEIVING && !call->is_paused &&
               now >= call->last_read_ms + call->t.idle_ms) {
        snprintf(call->msg, sizeof(call->msg),
                 "timed out waiting for more of the response after %llu ms idle",
                 (unsigned long long)call->t.idle_ms);
    } else {
        return false;
    }
    return true;
}

/* ---- response headers -------------------------------------------------------------------- */

void
tg_call_headers_reset(struct tg_call_base *call)
{
    tg_buf_reset(&call->hdr_bytes);
    call->n_hdrs = 0;
}

void
tg_call_fail(struct tg_call_base *call, int err, const char *msg)
{
    if (call->err == 0) {
        call->err = err;
        snprintf(call->msg, sizeof(call->msg), "%s", msg);
    }
}

int
tg_call_header_room(struct tg_call_base *call)
{
    if (call->n_hdrs == TG_CALL_MAX_HEADERS) {
        tg_call_fail(call, TG_EUPSTREAM, TG_CALL_TOO_MANY_HEADERS);
        return TG_EUPSTREAM;
    }
    if (call->n_hdrs == call->hdrs_cap) {
        call->hdrs_cap = call->hdrs_cap ? call->hdrs_cap * 2 : 16;
        call->hdr_offs = tg_xrealloc(call->hdr_offs, call->hdrs_cap * sizeof(*call->hdr_offs));
        call->hdrs = tg_xrealloc(call->hdrs, call->hdrs_cap * sizeof(*call->hdrs));
    }
    return 0;
}

void
tg_call_headers_deliver(struct tg_call_base *call, int status)
{
    for (size_t i = 0; i < call->n_hdrs; i++) {
        call->hdrs[i].name = call->hdr_bytes.data + call->hdr_offs[i].name;
        call->hdrs[i].value = call->hdr_bytes.data + call->hdr_offs[i].value;
    }
    call->has_headers = true;
    call->set->cb_depth++;
    call->cbs.on_headers(status, call->hdrs, call->n_hdrs, call->arg);
    call->set->cb_depth--;
}
