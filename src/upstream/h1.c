/*
 * h1.c: the native HTTP/1.1 engine (see h1.h): plain http:// calls on the worker's loop with
 * no library between the socket and the relay.
 *
 * Why: libcurl's multi interface costs about six system calls per request on a kept-alive
 * connection (two poll() liveness checks, epoll_ctl churn as it stops and restarts watching the
 * socket) and a good share of CPU of its own. Here a request is one write (uv_try_write of the
 * head and the borrowed body, uv_write only for what the kernel did not take) and its response
 * one or a few reads; a pooled connection stays in epoll, read-armed, the whole time it lives.
 *
 * What the engine owns: the pool (one struct host per (host, port), each with a list of idle
 * connections, most recently used first, at most TG_H1_MAX_IDLE_PER_HOST, closed after
 * TG_H1_IDLE_TIMEOUT_MS unused by a sweep timer; both adjustable for tests), the active calls, a
 * free list of finished calls (each keeps its timer, parser and buffers, so a busy worker does not
 * allocate per call), one read buffer, and a uv_idle that applies cancel and resume outside the API
 * calls.
 *
 * Reading: an idle pooled connection stays read-armed so that a peer's close is seen at once
 * (the connection leaves the pool) without a liveness probe at reuse. A read is parsed whole;
 * the body callbacks compact the body bytes of that read to the front of the read buffer, and
 * the consumer gets them in one on_data after the parser returns, so nothing is kept between
 * reads: when on_data asks to pause (it took the bytes), the connection simply stops reading
 * (uv_read_stop) until resume, and the kernel's socket buffer is the only buffer. A response
 * that completes while its call is paused hands its connection back to the pool at once, and
 * on_done waits for the resume, as libcurl holds a paused transfer's end.
 *
 * A pooled connection the upstream closed while our request was in flight (EOF, reset or a
 * failed write before any response byte) is the stale-socket race: the call is retried once
 * on a fresh connection. Any other failure ends the call.
 *
 * Deadlines, the active and deferred lists, the free-call pool and the header storage are the
 * shared call machinery (call_int.h, call_common.c); connect is one of this engine's deadlines.
 *
 * Invariants: a call is in exactly one of the active list or the free list; it has at most one
 * connection, and that connection points back to it; a connection is attached to a call, in its
 * host's idle list, or closing. on_done fires once per started call, from a loop callback or
 * from tg_h1_client_free, never from inside an API call or a parser callback.
 */
#include "upstream/h1.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/mem.h"
#include "upstream/call_int.h"

#define READ_BUF_BYTES (64 * 1024)
#define SWEEP_INTERVAL_MS 5000 /* at most; half the idle timeout when that is shorter */

struct conn;

struct host {
    struct host *next;
    struct tg_h1_client *client;
    char *name;
    uint16_t port;
    struct conn *idle; /* most recently used first */
    size_t n_idle;
    struct sockaddr_storage addr;
    bool has_addr;
    bool is_numeric;
    uint64_t addr_expires_ms;
};

struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    struct tg_h1_client *client;
    struct host *host;
    struct conn *next; /* host's idle list */
    struct conn *prev;
    struct tg_h1_call *call;
    uint64_t idle_since_ms;
    bool is_idle;
    bool is_connected;
    bool is_writing;
    bool is_reading;
    bool is_closing;
    bool is_reused; /* it served an earlier call: the stale-socket retry applies */
};

/* A name lookup in flight; outlives a call that ends before it does (call is then NULL). */
struct resolve {
    uv_getaddrinfo_t req;
    struct tg_h1_call *call;
};

struct tg_h1_call {
    struct tg_call_base base; /* first: the pointer handed out converts to it */
    struct tg_h1_client *client;
    struct host *host;
    struct conn *conn;
    struct resolve *resolve;

    struct tg_buf req_head; /* request line and header lines */
    const char *body;       /* borrowed from the request */
    size_t body_len;
    bool is_head_method;

    http_parser parser;
    bool has_response_byte;
    bool is_interim;  /* the response being parsed is a 1xx */
    bool is_complete; /* the final response ended */
    bool is_keep_alive;
    bool is_done_pending; /* complete while paused: on_done on resume */
    bool has_retried;
    bool is_in_value;

    /* Body bytes of the read being parsed, compacted to the front of the read buffer. */
    char *body_at;
    size_t body_n;
};

struct tg_h1_client {
    struct tg_call_set calls; /* first: the set's on_closed frees the client */
    uv_timer_t sweep;
    struct host *hosts;
    size_t n_idle; /* over every host */
    size_t max_idle_per_host;
    uint64_t idle_timeout_ms;
    char read_buf[READ_BUF_BYTES];
};

static http_parser_settings parser_settings;

static void conn_close(struct conn *cn);
static void call_connect(struct tg_h1_call *call);
static void finish(struct tg_h1_call *call, int err, const char *msg);
static void arm_timer(struct tg_h1_call *call);

/* ---- URLs ------------------------------------------------------------------------------------ */

int
tg_h1_url_parse(const char *url, struct tg_h1_url *out)
{
    memset(out, 0, sizeof(*out));
    if (strncasecmp(url, "http://", 7) != 0) {
        return TG_EINVAL;
    }
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    if (alen == 0 || memchr(a, '@', alen) != NULL) {
        return TG_EINVAL; /* no host, or user info: left to libcurl */
    }
    const char *h = a;
    size_t hlen = alen;
    const char *port = NULL;
    if (a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        if (close == NULL) {
            return TG_EINVAL;
        }
        h = a + 1;
        hlen = (size_t)(close - h);
        if (close + 1 < a + alen) {
            if (close[1] != ':') {
                return TG_EINVAL;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(a, ':', alen);
        if (colon != NULL) {
            hlen = (size_t)(colon - a);
            port = colon + 1;
        }
    }
    if (hlen == 0 || hlen >= sizeof(out->host)) {
        return TG_EINVAL;
    }
    memcpy(out->host, h, hlen);
    out->host[hlen] = '\0';
    out->port = 80;
    if (port != NULL) {
        const char *end = a + alen;
        unsigned long v = 0;
        if (port == end) {
            return TG_EINVAL;
        }
        for (const char *p = port; p < end; p++) {
            if (*p < '0' || *p > '9' || (v = v * 10 + (unsigned long)(*p - '0')) > 65535) {
                return TG_EINVAL;
            }
        }
        if (v == 0) {
            return TG_EINVAL;
        }
        out->port = (uint16_t)v;
    }
    out->authority = a;
    out->authority_len = alen;
    const char *t = a + alen;
    size_t tlen = strcspn(t, "#");
    out->target = tlen > 0 ? t : "/";
    out->target_len = tlen > 0 ? tlen : 1;
    return 0;
}

/* ---- handle bookkeeping ---------------------------------------------------------------------- */

/* The set's last handle closed: the engine goes too. */
static void
on_calls_closed(struct tg_call_set *set)
{
    free(set); /* the first member of struct tg_h1_client */
}

static void
on_client_handle_closed(uv_handle_t *h)
{
    struct tg_h1_client *c = h->data;
    tg_call_set_handle_closed(&c->calls);
}

static void
on_conn_closed(uv_handle_t *h)
{
    struct conn *cn = h->data;
    struct tg_h1_client *c = cn->client;
    free(cn);
    tg_call_set_handle_closed(&c->calls);
}

/* ---- the pool -------------------------------------------------------------------------------- */

static struct host *
host_get(struct tg_h1_client *c, const char *name, uint16_t port)
{
    for (struct host *h = c->hosts; h != NULL; h = h->next) {
        if (h->port == port && strcmp(h->name, name) == 0) {
            return h;
        }
    }
    struct host *h = tg_xcalloc(1, sizeof(*h));
    h->client = c;
    h->name = tg_xstrdup(name);
    h->port = port;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&h->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h->addr;
    if (uv_ip4_addr(name, port, in4) == 0 || uv_ip6_addr(name, port, in6) == 0) {
        h->has_addr = h->is_numeric = true;
    }
    h->next = c->hosts;
    c->hosts = h;
    return h;
}

static void
idle_unlink(struct conn *cn)
{
    struct host *h = cn->host;
    if (!cn->is_idle) {
        return;
    }
    cn->is_idle = false;
    if (cn->prev != NULL) {
        cn->prev->next = cn->next;
    } else {
        h->idle = cn->next;
    }
    if (cn->next != NULL) {
        cn->next->prev = cn->prev;
    }
    cn->next = cn->prev = NULL;
    h->n_idle--;
    cn->client->n_idle--;
}

static void
conn_close(struct conn *cn)
{
    if (cn->is_closing) {
        return;
    }
    idle_unlink(cn);
    if (cn->call != NULL) {
        cn->call->conn = NULL;
        cn->call = NULL;
    }
    cn->is_closing = true;
    uv_close((uv_handle_t *)&cn->tcp, on_conn_closed); /* cancels a pending connect or write */
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);

static void
conn_read_start(struct conn *cn)
{
    if (!cn->is_reading && uv_read_start((uv_stream_t *)&cn->tcp, on_alloc, on_read) == 0) {
        cn->is_reading = true;
    }
}

static void
conn_read_stop(struct conn *cn)
{
    if (cn->is_reading) {
        uv_read_stop((uv_stream_t *)&cn->tcp);
        cn->is_reading = false;
    }
}

/* Detaches a connection whose response ended cleanly: into the pool, or closed when the pool
 * is full, the client closes, or the connection cannot carry another request. */
static void
conn_release(struct conn *cn, bool is_reusable)
{
    struct tg_h1_client *c = cn->client;
    struct host *h = cn->host;
    if (cn->call != NULL) {
        cn->call->conn = NULL;
        cn->call = NULL;
    }
    if (!is_reusable || cn->is_writing || c->calls.is_closing ||
        h->n_idle >= c->max_idle_per_host) {
        conn_close(cn);
        return;
    }
    cn->is_reused = true;
    cn->is_idle = true;
    cn->idle_since_ms = uv_now(c->calls.loop);
    cn->prev = NULL;
    cn->next = h->idle;
    if (h->idle != NULL) {
        h->idle->prev = cn;
    }
    h->idle = cn;
    h->n_idle++;
    c->n_idle++;
    /* Read-armed while idle, so a close by the peer takes it out of the pool at once. It does
     * not keep the loop alive, as an idle libcurl connection does not. */
    conn_read_start(cn);
    uv_unref((uv_handle_t *)&cn->tcp);
}

/* Closes connections idle for longer than the pool keeps them. */
static void
on_sweep(uv_timer_t *t)
{
    struct tg_h1_client *c = t->data;
    uint64_t now = uv_now(c->calls.loop);
    for (struct host *h = c->hosts; h != NULL; h = h->next) {
        struct conn *cn = h->idle;
        while (cn != NULL) {
            struct conn *next = cn->next;
            if (now - cn->idle_since_ms >= c->idle_timeout_ms) {
                conn_close(cn);
            }
            cn = next;
        }
    }
    if (c->n_idle == 0) {
        uv_timer_stop(&c->sweep);
    }
}

static void
sweep_ensure(struct tg_h1_client *c)
{
    if (!uv_is_active((uv_handle_t *)&c->sweep)) {
        uint64_t every =
            c->idle_timeout_ms / 2 < SWEEP_INTERVAL_MS ? c->idle_timeout_ms / 2 : SWEEP_INTERVAL_MS;
        every = every > 0 ? every : 1;
        uv_timer_start(&c->sweep, on_sweep, every, every);
    }
}

/* The most recently used idle connection to h that is still fresh, or NULL. */
static struct conn *
pool_take(struct host *h)
{
    uint64_t now = uv_now(h->client->calls.loop);
    while (h->idle != NULL) {
        struct conn *cn = h->idle;
        idle_unlink(cn);
        if (now - cn->idle_since_ms >= h->client->idle_timeout_ms) {
            conn_close(cn);
            continue;
        }
        uv_ref((uv_handle_t *)&cn->tcp);
        return cn;
    }
    return NULL;
}

/* ---- call lifecycle -------------------------------------------------------------------------- */

static void
call_destroy(struct tg_h1_call *call)
{
    tg_buf_deinit(&call->req_head);
    tg_call_destroy(&call->base);
}

static void
call_recycle(struct tg_h1_call *call)
{
    if (!tg_call_pool_put(&call->base)) {
        call_destroy(call);
    }
}

/* Ends a call: the one place on_done fires. Not from inside a parser callback or an API call. */
static void
finish(struct tg_h1_call *call, int err, const char *msg)
{
    if (!tg_call_end(&call->base)) {
        return;
    }
    if (call->resolve != NULL) {
        call->resolve->call = NULL;
        uv_cancel((uv_req_t *)&call->resolve->req);
        call->resolve = NULL;
    }
    if (call->conn != NULL) {
        conn_close(call->conn); /* the response did not end cleanly on it */
    }
    tg_call_report(&call->base, err, msg);
    call_recycle(call);
}

/* A canceled call whose cancel waits in the deferred list ends as canceled when any other event
 * reaches it first: after cancel, on_done (TG_ECANCELED) is the only callback. */
static bool
end_if_canceled(struct tg_h1_call *call)
{
    if (!call->base.is_cancel_pending) {
        return false;
    }
    finish(call, TG_ECANCELED, "canceled");
    return true;
}

/* ---- deadlines ------------------------------------------------------------------------------- */

static void on_call_timer(uv_timer_t *t);

static void
arm_timer(struct tg_h1_call *call)
{
    tg_call_arm(&call->base, on_call_timer);
}

/* After a change of phase or clock: re-arms only for a sooner deadline. A later one is left to
 * the timer, which wakes early and re-arms; that saves a timer update on most reads. */
static void
arm_if_sooner(struct tg_h1_call *call)
{
    if (tg_call_next_deadline(&call->base) < call->base.due_ms) {
        arm_timer(call);
    }
}

static void
on_call_timer(uv_timer_t *t)
{
    struct tg_h1_call *call = t->data;
    if (end_if_canceled(call)) {
        return;
    }
    if (call->base.err != 0) {
        finish(call, call->base.err, call->base.msg); /* failed where on_done could not fire */
        return;
    }
    if (!tg_call_is_timed_out(&call->base)) {
        arm_timer(call); /* woke early: data came, or the call was paused */
        return;
    }
    finish(call, TG_ETIMEOUT, call->base.msg);
}

/* ---- response parsing ------------------------------------------------------------------------ */

static void
fail_in_parser(struct tg_h1_call *call, int err, const char *msg)
{
    tg_call_fail(&call->base, err, msg);
    http_parser_pause(&call->parser, 1);
}

static void
headers_reset(struct tg_h1_call *call)
{
    tg_call_headers_reset(&call->base);
    call->is_in_value = false;
}

/* Ends the value being read: trailing blanks go, a NUL follows. */
static int
value_end(struct tg_h1_call *call)
{
    struct tg_buf *b = &call->base.hdr_bytes;
    size_t start = call->base.hdr_offs[call->base.n_hdrs - 1].value;
    while (b->len > start && (b->data[b->len - 1] == ' ' || b->data[b->len - 1] == '\t')) {
        b->len--;
    }
    return tg_buf_append(b, "", 1);
}

/* Appends header bytes; false, with the call failed, when the headers outgrow their cap. */
static bool
header_append(struct tg_h1_call *call, const char *at, size_t len)
{
    if (tg_buf_append(&call->base.hdr_bytes, at, len) < 0) {
        fail_in_parser(call, TG_EUPSTREAM, TG_CALL_HEADERS_TOO_LARGE);
        return false;
    }
    return true;
}

static int
p_on_message_begin(http_parser *p)
{
    struct tg_h1_call *call = p->data;
    headers_reset(call);
    return 0;
}

static int
p_on_header_field(http_parser *p, const char *at, size_t len)
{
    struct tg_h1_call *call = p->data;
    struct tg_buf *b = &call->base.hdr_bytes;
    if (call->base.has_headers) {
        return 0; /* trailers after a chunked body: not part of the contract */
    }
    if (call->is_in_value || call->base.n_hdrs == 0) {
        /* A new field starts. */
        if (call->is_in_value && value_end(call) < 0) {
            fail_in_parser(call, TG_EUPSTREAM, TG_CALL_HEADERS_TOO_LARGE);
            return 0;
        }
        call->is_in_value = false;
        if (tg_call_header_room(&call->base) < 0) {
            http_parser_pause(p, 1);
            return 0;
        }
        call->base.hdr_offs[call->base.n_hdrs].name = b->len;
        call->base.hdr_offs[call->base.n_hdrs].value = SIZE_MAX;
        call->base.n_hdrs++;
    }
    header_append(call, at, len);
    return 0;
}

static int
p_on_header_value(http_parser *p, const char *at, size_t len)
{
    struct tg_h1_call *call = p->data;
    if (call->base.has_headers || call->base.n_hdrs == 0) {
        return 0;
    }
    if (!call->is_in_value) {
        call->is_in_value = true;
        if (!header_append(call, "", 1)) {
            return 0;
        }
        call->base.hdr_offs[call->base.n_hdrs - 1].value = call->base.hdr_bytes.len;
    }
    header_append(call, at, len);
    return 0;
}

/* End of one response's header block: a final status goes to on_headers, a 1xx is dropped.
 * Returning 1 tells the parser the response has no body (HEAD). */
static int
p_on_headers_complete(http_parser *p)
{
    struct tg_h1_call *call = p->data;
    if (call->base.has_headers) {
        return 0;
    }
    if (p->status_code >= 100 && p->status_code < 200) {
        call->is_interim = true;
        headers_reset(call);
        return 0;
    }
    call->is_interim = false;
    if (call->base.n_hdrs > 0) {
        if (!call->is_in_value) {
            /* A field with no value at all. */
            if (!header_append(call, "", 1)) {
                return 0;
            }
            call->base.hdr_offs[call->base.n_hdrs - 1].value = call->base.hdr_bytes.len;
            call->is_in_value = true;
        }
        if (value_end(call) < 0) {
            fail_in_parser(call, TG_EUPSTREAM, TG_CALL_HEADERS_TOO_LARGE);
            return 0;
        }
    }
    tg_call_headers_deliver(&call->base, (int)p->status_code);
    if (call->base.is_cancel_pending) {
        http_parser_pause(p, 1);
    }
    return call->is_head_method ? 1 : 0;
}

/* Body bytes of this read move to the front of the read buffer: the parser has passed them,
 * and whatever it still reads lies after them. */
static int
p_on_body(http_parser *p, const char *at, size_t len)
{
    struct tg_h1_call *call = p->data;
    char *dst = call->body_at + call->body_n;
    if (dst != at) {
        memmove(dst, at, len);
    }
    call->body_n += len;
    return 0;
}

static int
p_on_message_complete(http_parser *p)
{
    struct tg_h1_call *call = p->data;
    if (call->is_interim) {
        call->is_interim = false;
        return 0; /* the final response follows */
    }
    call->is_complete = true;
    call->is_keep_alive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1); /* nothing after the final response belongs to this call */
    return 0;
}

/* ---- reading --------------------------------------------------------------------------------- */

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    /* One buffer for every connection: libuv reads one stream at a time, and a read is parsed
     * and delivered before its callback returns. */
    struct conn *cn = h->data;
    struct tg_h1_client *c = cn->client;
    *buf = uv_buf_init(c->read_buf, sizeof(c->read_buf));
}

static void
fail_transfer(struct tg_h1_call *call, const char *what)
{
    snprintf(call->base.msg, sizeof(call->base.msg), "upstream transfer failed: %s", what);
    finish(call, TG_EUPSTREAM, call->base.msg);
}

/* Moves a call whose request was never answered on a stale pooled connection to a fresh one. */
static bool
retry_stale(struct tg_h1_call *call, struct conn *cn)
{
    if (!cn->is_reused || call->has_response_byte || call->has_retried || call->base.is_done) {
        return false;
    }
    call->has_retried = true;
    conn_close(cn);
    call->base.phase = TG_CALL_CONNECTING;
    call->base.connect_start_ms =
        uv_now(call->client->calls.loop); /* total still counts from the start */
    arm_if_sooner(call);
    call_connect(call);
    return true;
}

/* The response ended: hand the connection back and end the call, unless it is paused. */
static void
complete(struct tg_h1_call *call, bool has_extra_bytes)
{
    if (call->conn != NULL) {
        conn_release(call->conn, call->is_keep_alive && !has_extra_bytes);
        sweep_ensure(call->client);
    }
    if (call->base.is_paused) {
        call->is_done_pending = true; /* the total deadline still runs, as with libcurl */
        return;
    }
    finish(call, 0, "");
}

/* The peer closed (n == UV_EOF) or the read failed. */
static void
read_ended(struct tg_h1_call *call, struct conn *cn, ssize_t n)
{
    if (retry_stale(call, cn)) {
        return;
    }
    if (n != UV_EOF) {
        char what[160];
        snprintf(what, sizeof(what), "reading the response: %s", uv_strerror((int)n));
        fail_transfer(call, what);
        return;
    }
    if (call->base.has_headers) {
        /* A body that runs until the close ends here; any other kind was cut short. */
        http_parser_execute(&call->parser, &parser_settings, NULL, 0);
        if (call->is_complete) {
            call->is_keep_alive = false;
            complete(call, false);
            return;
        }
        fail_transfer(call, "the upstream closed the connection before the response ended");
        return;
    }
    fail_transfer(call, call->has_response_byte
                            ? "the upstream closed the connection inside the response headers"
                            : "the upstream closed the connection without a response");
}

/* Parses one read and hands its body bytes to the consumer. */
static void
feed(struct tg_h1_call *call, char *data, size_t n)
{
    struct tg_h1_client *c = call->client;
    call->has_response_byte = true;
    call->base.last_read_ms = uv_now(c->calls.loop);
    if (call->base.phase != TG_CALL_RECEIVING) {
        call->base.phase = TG_CALL_RECEIVING;
        arm_if_sooner(call);
    }
    call->body_at = data;
    call->body_n = 0;
    size_t used = http_parser_execute(&call->parser, &parser_settings, data, n);
    enum http_errno perr = HTTP_PARSER_ERRNO(&call->parser);
    if (call->base.is_cancel_pending) {
        conn_close(call->conn); /* on_done comes from the deferred list */
        return;
    }
    if (call->base.err != 0) {
        finish(call, call->base.err, call->base.msg);
        return;
    }
    if (perr == HPE_HEADER_OVERFLOW) {
        finish(call, TG_EUPSTREAM, TG_CALL_HEADERS_TOO_LARGE);
        return;
    }
    if (perr != HPE_OK && perr != HPE_PAUSED) {
        char what[160];
        snprintf(what, sizeof(what), "the upstream sent an invalid response (%s)",
                 http_errno_description(perr));
        fail_transfer(call, what);
        return;
    }
    if (call->body_n > 0) {
        int rc = tg_call_deliver(&call->base, call->body_at, call->body_n);
        if (call->base.is_cancel_pending) {
            if (call->conn != NULL) {
                conn_close(call->conn);
            }
            return;
        }
        if (rc == TG_EAGAIN) {
            if (call->base.is_resume_pending) {
                call->base.is_resume_pending = false; /* resumed before it even paused */
            } else {
                call->base.is_paused =
                    true; /* the idle deadline is off: the timer re-arms lazily */
                if (call->conn != NULL) {
                    conn_read_stop(call->conn);
                }
            }
        } else if (rc < 0) {
            finish(call, TG_ECANCELED, "canceled by the consumer");
            return;
        }
    }
    if (call->is_complete) {
        complete(call, used < n);
    }
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *cn = s->data;
    struct tg_h1_call *call = cn->call;
    if (n == 0) {
        return;
    }
    if (call == NULL) {
        /* Idle in the pool: a close, or bytes nobody asked for. Either way it is done. */
        conn_close(cn);
        return;
    }
    if (end_if_canceled(call)) {
        return;
    }
    if (n < 0) {
        read_ended(call, cn, n);
        return;
    }
    feed(call, buf->base, (size_t)n);
}

/* ---- writing the request --------------------------------------------------------------------- */

static void
on_write(uv_write_t *w, int status)
{
    struct conn *cn = w->data;
    cn->is_writing = false;
    struct tg_h1_call *call = cn->call;
    if (call == NULL || status == 0) {
        if (call == NULL && !cn->is_idle) {
            conn_close(cn); /* its call ended while the request was going out */
        }
        return;
    }
    if (end_if_canceled(call) || retry_stale(call, cn)) {
        return;
    }
    char what[160];
    snprintf(what, sizeof(what), "sending the request: %s", uv_strerror(status));
    fail_transfer(call, what);
}

/* Sends head and body: uv_try_write first, uv_write for what the kernel did not take. Never
 * ends the call here (it runs inside tg_h1_call_start too): a failed write is reported by
 * on_write, or by the timer. */
static void
send_request(struct tg_h1_call *call)
{
    struct conn *cn = call->conn;
    call->base.phase = TG_CALL_SENT;
    call->base.sent_ms = uv_now(call->client->calls.loop);
    arm_if_sooner(call);
    conn_read_start(cn);
    uv_buf_t bufs[2];
    unsigned nbufs = 0;
    bufs[nbufs++] = uv_buf_init(call->req_head.data, (unsigned)call->req_head.len);
    if (call->body_len > 0) {
        bufs[nbufs++] = uv_buf_init((char *)call->body, (unsigned)call->body_len);
    }
    /* An error here (a reset pooled connection) is left to uv_write, which reports it through
     * on_write on the next turn, where the stale-socket retry applies. */
    int rc = uv_try_write((uv_stream_t *)&cn->tcp, bufs, nbufs);
    size_t sent = rc > 0 ? (size_t)rc : 0;
    unsigned first = 0;
    while (first < nbufs && sent >= bufs[first].len) {
        sent -= bufs[first].len;
        first++;
    }
    if (first == nbufs) {
        return;
    }
    bufs[first].base += sent;
    bufs[first].len -= sent;
    cn->write.data = cn;
    rc = uv_write(&cn->write, (uv_stream_t *)&cn->tcp, bufs + first, nbufs - first, on_write);
    if (rc < 0) {
        snprintf(call->base.msg, sizeof(call->base.msg),
                 "upstream transfer failed: sending the request: %s", uv_strerror(rc));
        call->base.err = TG_EUPSTREAM;
        uv_timer_start(&call->base.timer, on_call_timer, 0, 0);
        return;
    }
    cn->is_writing = true;
}

/* ---- connecting ------------------------------------------------------------------------------ */

static void
connect_failed(struct tg_h1_call *call, const char *what)
{
    snprintf(call->base.msg, sizeof(call->base.msg), "could not connect to %s port %u: %s",
             call->host->name, (unsigned)call->host->port, what);
    finish(call, TG_ECONNECT, call->base.msg);
}

static void
on_connect(uv_connect_t *req, int status)
{
    struct conn *cn = req->data;
    struct tg_h1_call *call = cn->call;
    if (status == UV_ECANCELED || call == NULL) {
        return; /* closed while connecting: the call already ended */
    }
    if (end_if_canceled(call)) {
        return;
    }
    if (status < 0) {
        if (status == UV_ECONNREFUSED || status == UV_ENETUNREACH || status == UV_EHOSTUNREACH) {
            call->host->addr_expires_ms = 0; /* look the name up again next time */
        }
        connect_failed(call, uv_strerror(status));
        return;
    }
    cn->is_connected = true;
    send_request(call);
}

static void
conn_open(struct tg_h1_call *call)
{
    struct tg_h1_client *c = call->client;
    struct conn *cn = tg_xcalloc(1, sizeof(*cn));
    cn->client = c;
    cn->host = call->host;
    uv_tcp_init(c->calls.loop, &cn->tcp);
    cn->tcp.data = cn;
    c->calls.n_open++;
    cn->call = call;
    call->conn = cn;
    uv_tcp_nodelay(&cn->tcp, 1);
    uv_tcp_keepalive(&cn->tcp, 1, 60);
    cn->connect.data = cn;
    int rc = uv_tcp_connect(&cn->connect, &cn->tcp, (const struct sockaddr *)&call->host->addr,
                            on_connect);
    if (rc < 0) {
        conn_close(cn);
        connect_failed(call, uv_strerror(rc));
    }
}

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct resolve *r = req->data;
    struct tg_h1_call *call = r->call;
    free(r);
    if (call == NULL) {
        uv_freeaddrinfo(res);
        return; /* the call ended first */
    }
    call->resolve = NULL;
    if (end_if_canceled(call)) {
        uv_freeaddrinfo(res);
        return;
    }
    if (status < 0 || res == NULL) {
        uv_freeaddrinfo(res);
        connect_failed(call, status < 0 ? uv_strerror(status) : "no address");
        return;
    }
    /* One address, IPv4 first: "localhost" often lists ::1 first while the service listens on
     * 127.0.0.1 only. */
    const struct addrinfo *a = res;
    for (const struct addrinfo *i = res; i != NULL; i = i->ai_next) {
        if (i->ai_family == AF_INET) {
            a = i;
            break;
        }
    }
    struct host *h = call->host;
    memcpy(&h->addr, a->ai_addr, a->ai_addrlen);
    if (a->ai_family == AF_INET6) {
        ((struct sockaddr_in6 *)&h->addr)->sin6_port = htons(h->port);
    } else {
        ((struct sockaddr_in *)&h->addr)->sin_port = htons(h->port);
    }
    h->has_addr = true;
    h->addr_expires_ms = uv_now(call->client->calls.loop) + TG_H1_DNS_TTL_MS;
    uv_freeaddrinfo(res);
    conn_open(call);
}

/* Gets the call a connection: a pooled one (not after a stale one failed), or a new one. */
static void
call_connect(struct tg_h1_call *call)
{
    struct tg_h1_client *c = call->client;
    struct host *h = call->host;
    if (!call->has_retried) {
        struct conn *cn = pool_take(h);
        if (cn != NULL) {
            cn->call = call;
            call->conn = cn;
            send_request(call);
            return;
        }
    }
    if (h->has_addr && (h->is_numeric || uv_now(c->calls.loop) < h->addr_expires_ms)) {
        conn_open(call);
        return;
    }
    struct resolve *r = tg_xcalloc(1, sizeof(*r));
    r->call = call;
    r->req.data = r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(c->calls.loop, &r->req, on_resolved, h->name, NULL, &hints);
    if (rc < 0) {
        free(r);
        connect_failed(call, uv_strerror(rc));
        return;
    }
    call->resolve = r;
}

/* ---- deferred cancel and resume -------------------------------------------------------------- */

static void
apply_resume(struct tg_h1_call *call)
{
    if (!tg_call_unpause(&call->base)) {
        return;
    }
    if (call->is_done_pending) {
        finish(call, 0, "");
        return;
    }
    call->base.last_read_ms = uv_now(call->client->calls.loop); /* the idle clock restarts now */
    arm_if_sooner(call);
    if (call->conn != NULL) {
        conn_read_start(call->conn);
    }
}

static void
on_defer(uv_idle_t *idle)
{
    struct tg_call_set *set = idle->data;
    struct tg_h1_call *call;
    while ((call = (struct tg_h1_call *)tg_call_deferred_pop(set)) != NULL) {
        if (call->base.is_cancel_pending) {
            finish(call, TG_ECANCELED, "canceled");
        } else if (call->base.is_resume_pending) {
            apply_resume(call);
        }
    }
    uv_idle_stop(&set->defer);
}

/* ---- public API ------------------------------------------------------------------------------ */

int
tg_h1_client_new(uv_loop_t *loop, struct tg_h1_client **out)
{
    if (parser_settings.on_message_complete == NULL) {
        parser_settings.on_message_begin = p_on_message_begin;
        parser_settings.on_header_field = p_on_header_field;
        parser_settings.on_header_value = p_on_header_value;
        parser_settings.on_headers_complete = p_on_headers_complete;
        parser_settings.on_body = p_on_body;
        parser_settings.on_message_complete = p_on_message_complete;
    }
    struct tg_h1_client *c = tg_xcalloc(1, sizeof(*c));
    tg_call_set_init(&c->calls, loop, on_defer, on_calls_closed);
    c->calls.has_connect_deadline = true; /* connects are ours to time */
    uv_timer_init(loop, &c->sweep);
    c->sweep.data = c;
    uv_unref((uv_handle_t *)&c->sweep);
    c->calls.n_open++;
    c->max_idle_per_host = TG_H1_MAX_IDLE_PER_HOST;
    c->idle_timeout_ms = TG_H1_IDLE_TIMEOUT_MS;
    *out = c;
    return 0;
}

void
tg_h1_client_set_pool_limits(struct tg_h1_client *c, size_t max_idle_per_host,
                             uint64_t idle_timeout_ms)
{
    c->max_idle_per_host = max_idle_per_host;
    c->idle_timeout_ms = idle_timeout_ms;
}

void
tg_h1_client_free(struct tg_h1_client *c)
{
    if (c == NULL || c->calls.is_closing) {
        return;
    }
    c->calls.is_closing = true;
    while (c->calls.active != NULL) {
        struct tg_h1_call *call = (struct tg_h1_call *)c->calls.active;
        call->base.is_cancel_pending = true;
        finish(call, TG_ECANCELED, "canceled: the upstream client is closing");
    }
    struct tg_call_base *pooled;
    while ((pooled = tg_call_pool_take(&c->calls)) != NULL) {
        call_destroy((struct tg_h1_call *)pooled);
    }
    while (c->hosts != NULL) {
        struct host *h = c->hosts;
        c->hosts = h->next;
        while (h->idle != NULL) {
            conn_close(h->idle);
        }
        free(h->name);
        free(h);
    }
    tg_call_set_close(&c->calls);
    uv_close((uv_handle_t *)&c->sweep, on_client_handle_closed);
}

bool
tg_h1_client_is_in_callback(const struct tg_h1_client *c)
{
    return c != NULL && c->calls.cb_depth > 0;
}

size_t
tg_h1_client_active(const struct tg_h1_client *c)
{
    return c != NULL ? c->calls.n_active : 0;
}

size_t
tg_h1_client_idle(const struct tg_h1_client *c, const char *host, uint16_t port)
{
    for (const struct host *h = c->hosts; h != NULL; h = h->next) {
        if (h->port == port && strcmp(h->name, host) == 0) {
            return h->n_idle;
        }
    }
    return 0;
}

static struct tg_h1_call *
call_acquire(struct tg_h1_client *c)
{
    struct tg_h1_call *call = (struct tg_h1_call *)tg_call_pool_take(&c->calls);
    if (call == NULL) {
        call = tg_xcalloc(1, sizeof(*call));
        tg_call_init(&c->calls, &call->base);
        call->client = c;
        tg_buf_init(&call->req_head, 0);
    }
    tg_call_reset(&call->base);
    call->host = NULL;
    call->conn = NULL;
    call->resolve = NULL;
    call->has_response_byte = call->is_interim = call->is_complete = false;
    call->is_keep_alive = call->is_done_pending = call->has_retried = false;
    call->is_in_value = false;
    tg_buf_reset(&call->req_head);
    http_parser_init(&call->parser, HTTP_RESPONSE);
    call->parser.data = call;
    return call;
}

static bool
is_header_named(const char *name, size_t len, const char *want, size_t want_len)
{
    return len == want_len && strncasecmp(name, want, len) == 0;
}

/* Request line and header lines; TG_EINVAL for a header that would break the framing. Host
 * comes from the URL unless given; Content-Length is always ours. */
static int
build_head(struct tg_h1_call *call, const struct tg_upstream_request *req,
           const struct tg_h1_url *u, const char *method, bool has_body)
{
    struct tg_buf *b = &call->req_head;
    tg_buf_append_str(b, method);
    tg_buf_append(b, " ", 1);
    tg_buf_append(b, u->target, u->target_len);
    tg_buf_append(b, " HTTP/1.1\r\n", 11);
    bool has_host = false;
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct tg_upstream_header *h = &req->headers[i];
        const char *v = h->value != NULL ? h->value : "";
        if (h->name == NULL || h->name[0] == '\0' || strpbrk(h->name, ":\r\n") != NULL ||
            strpbrk(v, "\r\n") != NULL) {
            return TG_EINVAL;
        }
        size_t nlen = strlen(h->name);
        if (is_header_named(h->name, nlen, "Content-Length", 14) ||
            is_header_named(h->name, nlen, "Transfer-Encoding", 17)) {
            continue; /* the body is sent whole, with its length */
        }
        has_host |= is_header_named(h->name, nlen, "Host", 4);
        tg_buf_append(b, h->name, nlen);
        tg_buf_append(b, ": ", 2);
        tg_buf_append_str(b, v);
        tg_buf_append(b, "\r\n", 2);
    }
    if (!has_host) {
        tg_buf_append(b, "Host: ", 6);
        tg_buf_append(b, u->authority, u->authority_len);
        tg_buf_append(b, "\r\n", 2);
    }
    if (has_body) {
        char digits[24];
        char *d = digits + sizeof(digits);
        size_t v = req->body != NULL ? req->body_len : 0;
        do {
            *--d = (char)('0' + v % 10);
            v /= 10;
        } while (v > 0);
        tg_buf_append(b, "Content-Length: ", 16);
        tg_buf_append(b, d, (size_t)(digits + sizeof(digits) - d));
        tg_buf_append(b, "\r\n", 2);
    }
    tg_buf_append(b, "\r\n", 2);
    return 0;
}

/* A call with no pooled connection starts connecting on the next loop turn, so no callback
 * (a refused connect, a failed lookup) fires inside tg_h1_call_start. */
static void
on_start(uv_timer_t *t)
{
    struct tg_h1_call *call = t->data;
    arm_timer(call);
    call_connect(call);
}

int
tg_h1_call_start(struct tg_h1_client *c, const struct tg_upstream_request *req,
                 const struct tg_upstream_callbacks *cbs, void *arg, struct tg_h1_call **out)
{
    *out = NULL;
    struct tg_h1_url u;
    if (c->calls.is_closing) {
        return TG_ECLOSED;
    }
    if (tg_h1_url_parse(req->url, &u) < 0) {
        return TG_EINVAL;
    }
    struct tg_h1_call *call = call_acquire(c);
    const char *method = req->method != NULL ? req->method : "GET";
    bool has_body = req->body != NULL || req->body_len > 0 || strcmp(method, "POST") == 0 ||
                    strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
    int rc = build_head(call, req, &u, method, has_body);
    if (rc < 0) {
        call_recycle(call);
        return rc;
    }
    call->is_head_method = strcmp(method, "HEAD") == 0;
    call->body = req->body;
    call->body_len = req->body != NULL ? req->body_len : 0;
    call->host = host_get(c, u.host, u.port);
    tg_call_begin(&call->base, req, cbs, arg);
    tg_call_active_push(&call->base);
    /* With a pooled connection the request goes out right here: send_request fires nothing. */
    struct conn *cn = pool_take(call->host);
    if (cn != NULL) {
        cn->call = call;
        call->conn = cn;
        arm_timer(call);
        send_request(call);
    } else {
        uv_timer_start(&call->base.timer, on_start, 0, 0);
    }
    *out = call;
    return 0;
}
