/*
 * server.c: the HTTP/1.1 server of one worker (see server.h).
 *
 * A connection is a small state machine, one enum and one switch per event:
 *   IDLE     waiting for a request's first byte (idle timer; header timer on a new connection)
 *   HEAD     parsing the request line and headers (header timer)
 *   BODY     reading the body (body timer)
 *   HANDLER  the handler owns the request; bytes that arrive are kept in `pending`
 *   LINGER   the last response is queued; we shut down our side and drop input until the peer
 *            closes (or a timer), so an unread request body cannot turn our answer into a RST
 *   CLOSED   uv_close was called; the memory goes once both handles are closed and the handler
 *            has finished the request (deferred destruction: never inside our own callbacks,
 *            which hold `busy`)
 *
 * Memory: the server owns one 64 KiB read buffer that every connection reads into (libuv
 * calls alloc and read back to back); bytes that must outlive a read (pipelined requests) are
 * copied into the connection's `pending` buffer, capped so a client cannot queue more than
 * about a header's worth while its request is handled. Header strings are copied once into
 * the connection's `head` buffer (kept across requests), the body into req->body (kept when
 * small), so a keep-alive request costs one arena block and nothing else. The request is
 * embedded in its connection: one request at a time per connection.
 *
 * Writes try uv_try_write first and copy only what the socket did not take into one queued
 * uv_write; the queued byte count is the back-pressure measure for streamed responses.
 *
 * A streamed response is corked: its head and chunks collect in the connection's `cork` buffer
 * and go out in one write when the loop finishes the callbacks of this turn (a check handle
 * after the I/O phase, a prepare handle before the loop blocks), when the response ends, or
 * when the cork passes CORK_MAX_BYTES. An upstream read that carries the head, the events and
 * the end of a stream so becomes one write and one TCP segment to the client, not three, and
 * nothing waits longer than the loop turn that produced it.
 */
#include "http/server.h"

#include <errno.h>
#include <http_parser.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

#define READ_BUF_BYTES 65536
#define LINGER_MS 2000
#define BODY_KEEP_BYTES 65536 /* a body buffer up to this size is kept for the next request */
#define LISTEN_BACKLOG 1024
#define CORK_MAX_BYTES 16384 /* a cork this full is written at once */

enum conn_state { ST_IDLE, ST_HEAD, ST_BODY, ST_HANDLER, ST_LINGER, ST_CLOSED };

enum last_cb { CB_NONE, CB_URL, CB_FIELD, CB_VALUE };

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    struct tg_http_server *s;
    struct conn *prev;
    struct conn *next;
    enum conn_state state;
    int n_handles; /* open libuv handles: tcp and timer */
    int busy;      /* depth of calls out to handler code; no free while > 0 */
    bool is_reading;
    bool is_broken;    /* a write failed: close at the next loop turn, not inside the caller */
    bool is_shut;      /* our shutdown completed (LINGER) */
    bool saw_eof;      /* the peer closed its side (LINGER) */
    bool is_congested; /* a stream write reported back-pressure; drain is due */
    uint64_t n_requests;

    http_parser parser;
    enum last_cb last_cb;
    bool is_msg_complete;
    int err_status; /* a limit or parse failure to answer */
    const char *err_message;
    const char *err_code;
    size_t head_fed;    /* bytes fed while in HEAD */
    struct tg_buf head; /* url \0 name \0 value \0 ... */
    size_t *hoff;       /* offsets of each header's name and value in head */
    size_t hoff_cap;
    size_t n_headers;
    size_t url_len;

    struct tg_buf pending;  /* received, not yet parsed */
    struct tg_buf out;      /* response head being built */
    struct tg_buf cork;     /* streamed bytes not yet written (see the top) */
    struct conn *cork_prev; /* in the server's list of corked connections */
    struct conn *cork_next;
    bool is_corked;       /* in that list */
    size_t pending_write; /* bytes queued with uv_write and not completed */

    /* the request in progress */
    struct tg_http_req req;
    bool has_req;  /* req.arena is initialised */
    bool is_owned; /* the handler owns req */
    bool is_aborted;
    bool is_streaming;
    bool is_raw_stream; /* HTTP/1.0 client: no chunked framing, close ends the body */
    bool is_head;
    tg_http_abort_cb abort_cb;
    void *abort_arg;
    tg_http_drain_cb drain_cb;
    void *drain_arg;
};

struct tg_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t final;          /* closed last, so the closed callback always fires from the loop */
    uv_check_t cork_check;     /* writes the corks after the I/O callbacks of a turn */
    uv_prepare_t cork_prepare; /* and before the loop blocks (writes made by timers) */
    int n_cork_handles;        /* of those two, still open */
    struct conn *corked;       /* connections with a non-empty cork */
    struct tg_http_limits limits;
    tg_http_handler_cb handler;
    void *ctx;
    struct conn *conns;
    size_t n_conns;
    size_t n_in_flight;
    bool is_stopping;
    bool is_freeing;
    bool is_listener_closed;
    bool is_final;
    tg_http_closed_cb closed_cb;
    void *closed_arg;
    time_t date_sec;
    char date[40];
    uint64_t rng[4];
    char rbuf[READ_BUF_BYTES];
};

struct wreq {
    uv_write_t w;
    struct conn *c;
    size_t len;
    char data[];
};

static void conn_close(struct conn *c);
static void cork_drop(struct conn *c);
static void on_timer(uv_timer_t *t);
static void drive(struct conn *c);

void
tg_http_limits_default(struct tg_http_limits *l)
{
    l->max_header_bytes = 16 * 1024;
    l->max_headers = 100;
    l->max_body_bytes = 8 * 1024 * 1024;
    l->header_timeout_ms = 10000;
    l->body_timeout_ms = 60000;
    l->idle_timeout_ms = 75000;
    l->write_high_bytes = 256 * 1024;
    l->max_connections = 10000;
}

/* ---- small helpers ----------------------------------------------------------------------- */

static struct conn *
conn_of(const struct tg_http_req *req)
{
    return (struct conn *)((char *)req - offsetof(struct conn, req));
}

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256**: request ids need to be unique, not secret, and must not cost a syscall. */
static uint64_t
rng_next(uint64_t *s)
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/*
 * "req_" + 12 hex digits of Unix milliseconds + 20 random hex digits. The time prefix makes
 * ids sort by arrival, so the ledger's primary-key index grows at its end instead of touching
 * a random page per row (which made every ledger batch write hundreds of pages); 80 random
 * bits keep ids unique across workers and nodes.
 */
static void
new_id(struct tg_http_server *s, char *out)
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "req_", 4);
    uint64_t ms = (uint64_t)tg_clock_unix_ms();
    for (int i = 0; i < 12; i++) {
        out[4 + i] = hex[(ms >> ((11 - i) * 4)) & 15];
    }
    uint64_t a = rng_next(s->rng);
    uint64_t b = rng_next(s->rng);
    for (int i = 0; i < 16; i++) {
        out[16 + i] = hex[(a >> (i * 4)) & 15];
    }
    for (int i = 0; i < 4; i++) {
        out[32 + i] = hex[(b >> (i * 4)) & 15];
    }
    out[36] = '\0';
}

static const char *
date_now(struct tg_http_server *s)
{
    time_t now = time(NULL);
    if (now != s->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof(s->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_sec = now;
    }
    return s->date;
}

static void
timer_arm(struct conn *c, uint64_t ms)
{
    if (c->state != ST_CLOSED) {
        uv_timer_start(&c->timer, on_timer, c->is_broken ? 0 : ms, 0);
    }
}

static void
read_stop(struct conn *c)
{
    if (c->is_reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->is_reading = false;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void
read_start(struct conn *c)
{
    if (!c->is_reading && c->state != ST_CLOSED && c->pending.len < c->s->limits.max_header_bytes) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
            c->is_reading = true;
        }
    }
}

/* ---- lifetime ------------------------------------------------------------------------------ */

static void server_maybe_done(struct tg_http_server *s);

/* Ends the request's memory (arena cleanups run here). */
static void
req_end(struct conn *c)
{
    if (!c->has_req) {
        return;
    }
    c->has_req = false;
    tg_arena_deinit(&c->req.arena);
    if (c->req.body.cap > BODY_KEEP_BYTES) {
        tg_buf_deinit(&c->req.body);
    } else {
        tg_buf_reset(&c->req.body);
    }
}

static void
conn_maybe_free(struct conn *c)
{
    if (c->n_handles > 0 || c->is_owned || c->busy > 0) {
        return;
    }
    struct tg_http_server *s = c->s;
    req_end(c);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    tg_buf_deinit(&c->head);
    tg_buf_deinit(&c->pending);
    tg_buf_deinit(&c->out);
    cork_drop(c);
    tg_buf_deinit(&c->cork);
    tg_buf_deinit(&c->req.body);
    free(c->hoff);
    free(c);
    s->n_conns--;
    server_maybe_done(s);
}

static void
on_handle_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->n_handles--;
    conn_maybe_free(c);
}

/* Closes the socket now. A request the handler still owns is aborted (its callback runs). */
static void
conn_close(struct conn *c)
{
    if (c->state == ST_CLOSED) {
        return;
    }
    c->state = ST_CLOSED;
    c->is_reading = false;
    cork_drop(c);
    uv_close((uv_handle_t *)&c->tcp, on_handle_close);
    uv_close((uv_handle_t *)&c->timer, on_handle_close);
    if (c->is_owned && !c->is_aborted) {
        c->is_aborted = true;
        if (c->abort_cb != NULL) {
            c->busy++;
            c->abort_cb(&c->req, c->abort_arg);
            c->busy--;
        }
    }
}

/* A write failed where the caller cannot take a callback: close at the next loop turn. */
static void
conn_break(struct conn *c)
{
    c->is_broken = true;
    timer_arm(c, 0);
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state != ST_LINGER) {
        return;
    }
    c->is_shut = true;
    if (status < 0 || c->saw_eof) {
        conn_close(c);
        return;
    }
    timer_arm(c, LINGER_MS);
}

/* The last response is queued: send FIN after it, drop input until the peer closes. */
static void
begin_linger(struct conn *c)
{
    if (c->state == ST_CLOSED || c->state == ST_LINGER) {
        return;
    }
    c->state = ST_LINGER;
    tg_buf_reset(&c->pending);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    /* bounds a client that stops reading our answer */
    timer_arm(c, c->s->limits.idle_timeout_ms);
    read_start(c);
}

/* ---- writing ------------------------------------------------------------------------------- */

static void
on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct conn *c = wr->c;
    c->pending_write -= wr->len;
    free(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    size_t low = c->s->limits.write_high_bytes / 2;
    if (c->is_congested && c->pending_write <= low) {
        c->is_congested = false;
        if (c->is_owned && !c->is_aborted && c->drain_cb != NULL) {
            c->busy++;
            c->drain_cb(&c->req, c->drain_arg);
            c->busy--;
            conn_maybe_free(c);
        }
    }
}

/* Writes bufs in order: what the socket takes now is not copied, the rest is queued in one
 * copy. Returns 0 or TG_ECLOSED. */
static int
conn_write(struct conn *c, const uv_buf_t *bufs, unsigned int nbufs)
{
    if (c->state == ST_CLOSED || c->is_broken || c->is_aborted) {
        return TG_ECLOSED;
    }
    size_t total = 0;
    for (unsigned int i = 0; i < nbufs; i++) {
        total += bufs[i].len;
    }
    size_t done = 0;
    if (c->pending_write == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (n >= 0) {
            done = (size_t)n;
        } else if (n != UV_EAGAIN) {
            conn_break(c);
            return TG_ECLOSED;
        }
        if (done == total) {
            return 0;
        }
    }
    struct wreq *wr = tg_xmalloc(sizeof(*wr) + total - done);
    wr->c = c;
    wr->len = total - done;
    size_t skip = done;
    size_t at = 0;
    for (unsigned int i = 0; i < nbufs; i++) {
        if (skip >= bufs[i].len) {
            skip -= bufs[i].len;
            continue;
        }
        memcpy(wr->data + at, bufs[i].base + skip, bufs[i].len - skip);
        at += bufs[i].len - skip;
        skip = 0;
    }
    uv_buf_t b = uv_buf_init(wr->data, (unsigned int)wr->len);
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        free(wr);
        conn_break(c);
        return TG_ECLOSED;
    }
    c->pending_write += wr->len;
    return 0;
}

/* ---- corked stream output ---------------------------------------------------------------- */

static void on_cork_check(uv_check_t *h);
static void on_cork_prepare(uv_prepare_t *h);

static void
cork_unlist(struct conn *c)
{
    if (!c->is_corked) {
        return;
    }
    if (c->cork_prev != NULL) {
        c->cork_prev->cork_next = c->cork_next;
    } else {
        c->s->corked = c->cork_next;
    }
    if (c->cork_next != NULL) {
        c->cork_next->cork_prev = c->cork_prev;
    }
    c->cork_prev = NULL;
    c->cork_next = NULL;
    c->is_corked = false;
}

/* Forgets the cork unwritten: the connection closed, or the response is over. */
static void
cork_drop(struct conn *c)
{
    cork_unlist(c);
    tg_buf_reset(&c->cork);
}

/* Writes the cork and then extra[0..n_extra) in one write. Returns 0 or TG_ECLOSED. */
static int
cork_flush(struct conn *c, const uv_buf_t *extra, unsigned int n_extra)
{
    cork_unlist(c);
    uv_buf_t bufs[4];
    unsigned int n = 0;
    if (c->cork.len > 0) {
        bufs[n++] = uv_buf_init(c->cork.data, (unsigned int)c->cork.len);
    }
    for (unsigned int i = 0; i < n_extra; i++) {
        bufs[n++] = extra[i];
    }
    int rc = n > 0 ? conn_write(c, bufs, n) : 0;
    tg_buf_reset(&c->cork);
    return rc;
}

/* Queues bufs (at most 3) behind the cork; a cork that would pass CORK_MAX_BYTES is written
 * at once, with them. Returns 0 or TG_ECLOSED. */
static int
cork_write(struct conn *c, const uv_buf_t *bufs, unsigned int nbufs)
{
    if (c->state == ST_CLOSED || c->is_broken || c->is_aborted) {
        return TG_ECLOSED;
    }
    size_t total = 0;
    for (unsigned int i = 0; i < nbufs; i++) {
        total += bufs[i].len;
    }
    if (c->cork.len + total > CORK_MAX_BYTES) {
        return cork_flush(c, bufs, nbufs);
    }
    for (unsigned int i = 0; i < nbufs; i++) {
        tg_buf_append(&c->cork, bufs[i].base, bufs[i].len);
    }
    if (!c->is_corked) {
        struct tg_http_server *s = c->s;
        if (s->corked == NULL) {
            uv_check_start(&s->cork_check, on_cork_check);
            uv_prepare_start(&s->cork_prepare, on_cork_prepare);
        }
        c->cork_next = s->corked;
        if (s->corked != NULL) {
            s->corked->cork_prev = c;
        }
        s->corked = c;
        c->is_corked = true;
    }
    return 0;
}

/* The loop finished a turn's callbacks (check) or is about to block (prepare): write every
 * cork. conn_write never closes or calls out synchronously, so the walk is safe. */
static void
cork_flush_all(struct tg_http_server *s)
{
    while (s->corked != NULL) {
        cork_flush(s->corked, NULL, 0);
    }
    uv_check_stop(&s->cork_check);
    uv_prepare_stop(&s->cork_prepare);
}

static void
on_cork_check(uv_check_t *h)
{
    cork_flush_all(h->data);
}

static void
on_cork_prepare(uv_prepare_t *h)
{
    cork_flush_all(h->data);
}

static bool
is_bodyless_status(int status)
{
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

/* Headers the server sets itself, or that could split the response, are not copied. */
static bool
is_extra_header_ok(const struct tg_http_header *h)
{
    if (h->name == NULL || h->value == NULL || h->name[0] == '\0' ||
        strpbrk(h->name, "\r\n: ") != NULL || strpbrk(h->value, "\r\n") != NULL) {
        return false;
    }
    static const char *const own[] = {"content-length", "transfer-encoding", "connection", "date",
                                      "x-request-id"};
    size_t len = strlen(h->name);
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
        if (strlen(own[i]) == len && strcasecmp(h->name, own[i]) == 0) {
            return false;
        }
    }
    return true;
}

static bool
conn_keeps_alive(const struct conn *c)
{
    return c->req.keep_alive && !c->s->is_stopping && !c->is_raw_stream;
}

/* Builds the status line and headers into c->out. body_len < 0 means chunked. */
static void
build_head(struct conn *c, int status, const char *content_type, const struct tg_http_header *hdrs,
           size_t n_hdrs, long long body_len)
{
    struct tg_buf *o = &c->out;
    tg_buf_reset(o);
    const char *reason = http_status_str((enum http_status)status);
    tg_buf_appendf(o, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                   strcmp(reason, "<unknown>") == 0 ? "Unknown" : reason, date_now(c->s));
    if (content_type != NULL) {
        tg_buf_append_str(o, "Content-Type: ");
        tg_buf_append_str(o, content_type);
        tg_buf_append(o, "\r\n", 2);
    }
    if (body_len < 0) {
        if (!c->is_raw_stream) {
            tg_buf_append_str(o, "Transfer-Encoding: chunked\r\n");
        }
    } else if (!is_bodyless_status(status)) {
        tg_buf_appendf(o, "Content-Length: %lld\r\n", body_len);
    }
    tg_buf_append_str(o, "x-request-id: ");
    tg_buf_append_str(o, c->req.id);
    tg_buf_append(o, "\r\n", 2);
    for (size_t i = 0; i < n_hdrs; i++) {
        if (is_extra_header_ok(&hdrs[i])) {
            tg_buf_append_str(o, hdrs[i].name);
            tg_buf_append(o, ": ", 2);
            tg_buf_append_str(o, hdrs[i].value);
            tg_buf_append(o, "\r\n", 2);
        }
    }
    if (!conn_keeps_alive(c)) {
        tg_buf_append_str(o, "Connection: close\r\n");
    } else if (c->parser.http_minor == 0) {
        tg_buf_append_str(o, "Connection: keep-alive\r\n");
    }
    tg_buf_append(o, "\r\n", 2);
}

static int
write_response(struct conn *c, int status, const char *content_type,
               const struct tg_http_header *hdrs, size_t n_hdrs, const char *body, size_t len)
{
    build_head(c, status, content_type, hdrs, n_hdrs, (long long)len);
    uv_buf_t bufs[2] = {uv_buf_init(c->out.data, (unsigned int)c->out.len),
                        uv_buf_init((char *)body, (unsigned int)len)};
    bool has_body = len > 0 && !c->is_head && !is_bodyless_status(status);
    return conn_write(c, bufs, has_body ? 2 : 1);
}

/* ---- requests: finishing ------------------------------------------------------------------- */

/* The handler is done with the request: free it, then go on with the connection. */
static void
req_finish(struct conn *c)
{
    struct tg_http_server *s = c->s;
    bool keep = conn_keeps_alive(c) && !c->parser.upgrade;
    cork_drop(c); /* the stream calls wrote it; nothing may follow the response */
    c->is_owned = false;
    c->is_streaming = false;
    s->n_in_flight--;
    req_end(c);
    if (c->state == ST_CLOSED) {
        conn_maybe_free(c);
        return;
    }
    if (!keep) {
        begin_linger(c);
        return;
    }
    c->state = ST_IDLE;
    c->n_requests++;
    /* Pipelined bytes are parsed from the timer, never inside the handler's own call. */
    timer_arm(c, c->pending.len > 0 ? 0 : s->limits.idle_timeout_ms);
    read_start(c);
}

/* Answers a request the handler never saw (a limit, a timeout, bad HTTP) and closes. */
static void
answer_error(struct conn *c, int status, const char *message, const char *code)
{
    struct tg_buf body;
    tg_buf_init(&body, 0);
    tg_json_error_body(&body, message, "invalid_request_error", NULL, code);
    c->req.keep_alive = false;
    if (c->req.id[0] == '\0') {
        new_id(c->s, c->req.id);
    }
    tg_log_debug("http: %d for %s (%s)", status, c->req.remote_addr, message);
    write_response(c, status, "application/json", NULL, 0, body.data, body.len);
    tg_buf_deinit(&body);
    req_end(c);
    begin_linger(c);
}

/* ---- parsing --------------------------------------------------------------------------- */

static int
parse_fail(struct conn *c, int status, const char *message, const char *code)
{
    if (c->err_status == 0) {
        c->err_status = status;
        c->err_message = message;
        c->err_code = code;
    }
    return -1;
}

static int
head_add(struct conn *c, const char *at, size_t len)
{
    if (tg_buf_append(&c->head, at, len) < 0 ||
        c->head.len + c->n_headers * 2 > c->s->limits.max_header_bytes) {
        return parse_fail(c, 431, "Request header fields too large.", "request_header_too_large");
    }
    return 0;
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->last_cb = CB_URL;
    return head_add(c, at, len);
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->last_cb != CB_FIELD) {
        if (c->last_cb == CB_URL) {
            c->url_len = c->head.len;
        }
        if (head_add(c, "", 1) < 0) {
            return -1;
        }
        if (c->n_headers >= c->s->limits.max_headers) {
            return parse_fail(c, 431, "Too many request header fields.",
                              "request_header_too_large");
        }
        if (c->n_headers * 2 + 2 > c->hoff_cap) {
            c->hoff_cap = c->hoff_cap ? c->hoff_cap * 2 : 32;
            c->hoff = tg_xrealloc(c->hoff, c->hoff_cap * sizeof(*c->hoff));
        }
        c->hoff[c->n_headers * 2] = c->head.len;
        c->hoff[c->n_headers * 2 + 1] = c->head.len; /* until a value comes */
        c->n_headers++;
        c->last_cb = CB_FIELD;
    }
    return head_add(c, at, len);
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->last_cb != CB_VALUE) {
        if (head_add(c, "", 1) < 0) {
            return -1;
        }
        c->hoff[c->n_headers * 2 - 1] = c->head.len;
        c->last_cb = CB_VALUE;
    }
    return head_add(c, at, len);
}

static enum tg_http_method
method_of(unsigned int m)
{
    switch (m) {
    case HTTP_GET:
        return TG_HTTP_GET;
    case HTTP_HEAD:
        return TG_HTTP_HEAD;
    case HTTP_POST:
        return TG_HTTP_POST;
    case HTTP_PUT:
        return TG_HTTP_PUT;
    case HTTP_PATCH:
        return TG_HTTP_PATCH;
    case HTTP_DELETE:
        return TG_HTTP_DELETE;
    case HTTP_OPTIONS:
        return TG_HTTP_OPTIONS;
    default:
        return TG_HTTP_OTHER;
    }
}

/* Splits the request target into path and query. Returns false for a target we cannot use. */
static bool
split_target(struct conn *c, char *url, size_t url_len)
{
    struct tg_http_req *req = &c->req;
    if (url[0] == '/' || url[0] == '*') {
        char *hash = memchr(url, '#', url_len);
        if (hash != NULL) {
            *hash = '\0';
        }
        char *q = strchr(url, '?');
        if (q != NULL) {
            *q = '\0';
        }
        req->path = url;
        req->query = q != NULL ? q + 1 : "";
        return true;
    }
    struct http_parser_url u;
    http_parser_url_init(&u);
    bool is_connect = c->parser.method == HTTP_CONNECT;
    if (http_parser_parse_url(url, url_len, is_connect, &u) != 0) {
        return false;
    }
    req->path = url;
    req->query = "";
    if (u.field_set & (1 << UF_PATH)) {
        req->path = tg_arena_strndup(&req->arena, url + u.field_data[UF_PATH].off,
                                     u.field_data[UF_PATH].len);
    } else if (!is_connect) {
        req->path = "/";
    }
    if (u.field_set & (1 << UF_QUERY)) {
        req->query = tg_arena_strndup(&req->arena, url + u.field_data[UF_QUERY].off,
                                      u.field_data[UF_QUERY].len);
    }
    return true;
}

static bool
is_100_continue(const struct tg_http_req *req)
{
    const char *e = tg_http_req_header(req, "expect");
    return e != NULL && strcasecmp(e, "100-continue") == 0;
}

static int
on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct tg_http_server *s = c->s;
    struct tg_http_req *req = &c->req;
    if (c->last_cb == CB_URL) {
        c->url_len = c->head.len;
    }
    if (head_add(c, "", 1) < 0) {
        return -1;
    }
    if (p->http_major != 1) {
        return parse_fail(c, 505, "HTTP version not supported.", "http_version_not_supported");
    }
    req->headers = tg_arena_alloc(&req->arena, (c->n_headers + 1) * sizeof(*req->headers));
    for (size_t i = 0; i < c->n_headers; i++) {
        req->headers[i].name = c->head.data + c->hoff[i * 2];
        req->headers[i].value = c->head.data + c->hoff[i * 2 + 1];
    }
    req->n_headers = c->n_headers;
    if (!split_target(c, c->head.data, c->url_len)) {
        return parse_fail(c, 400, "The request target is malformed.", NULL);
    }
    req->method = method_of(p->method);
    req->method_name = http_method_str((enum http_method)p->method);
    req->keep_alive = http_should_keep_alive(p) != 0;
    c->is_head = req->method == TG_HTTP_HEAD;
    bool has_length = (p->flags & F_CONTENTLENGTH) != 0;
    if (has_length && p->content_length > s->limits.max_body_bytes) {
        return parse_fail(c, 413, "The request body is too large.", "request_too_large");
    }
    if (has_length && p->content_length > 0 && p->content_length <= 1024 * 1024) {
        tg_buf_reserve(&req->body, (size_t)p->content_length); /* larger bodies grow as they come */
    }
    bool has_body = (p->flags & F_CHUNKED) != 0 || (has_length && p->content_length > 0);
    if (has_body && p->http_minor >= 1 && is_100_continue(req)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        conn_write(c, &b, 1);
    }
    c->state = ST_BODY;
    timer_arm(c, s->limits.body_timeout_ms);
    return 0;
}

static int
on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (tg_buf_append(&c->req.body, at, len) < 0) {
        return parse_fail(c, 413, "The request body is too large.", "request_too_large");
    }
    return 0;
}

static int
on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->is_msg_complete = true;
    http_parser_pause(p, 1); /* one request at a time: the rest waits in pending */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void
req_begin(struct conn *c)
{
    struct tg_http_req *req = &c->req;
    tg_buf_reset(&c->head);
    c->n_headers = 0;
    c->url_len = 0;
    c->last_cb = CB_NONE;
    c->is_msg_complete = false;
    c->err_status = 0;
    c->head_fed = 0;
    req->method = TG_HTTP_OTHER;
    req->method_name = "";
    req->path = "/";
    req->query = "";
    req->headers = NULL;
    req->n_headers = 0;
    tg_buf_reset(&req->body);
    req->keep_alive = false;
    req->id[0] = '\0';
    req->start_us = 0;
    req->user = NULL;
    tg_arena_init(&req->arena, 4096);
    c->has_req = true;
    c->is_aborted = false;
    c->is_streaming = false;
    c->is_raw_stream = false;
    c->is_head = false;
    c->is_congested = false;
    c->abort_cb = NULL;
    c->drain_cb = NULL;
}

/* Feeds bytes to the parser; returns how many it used (it stops after one request). */
static size_t
feed(struct conn *c, const char *data, size_t n)
{
    if (c->state == ST_IDLE) {
        req_begin(c);
        c->state = ST_HEAD;
        if (c->n_requests > 0) {
            timer_arm(c, c->s->limits.header_timeout_ms);
        }
    }
    size_t used = http_parser_execute(&c->parser, &parser_settings, data, n);
    if (c->is_msg_complete) {
        http_parser_pause(&c->parser, 0);
        return used;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->err_status == 0 && e != HPE_OK) {
        if (e == HPE_HEADER_OVERFLOW) {
            parse_fail(c, 431, "Request header fields too large.", "request_header_too_large");
        } else if (e == HPE_INVALID_VERSION) {
            parse_fail(c, 505, "HTTP version not supported.", "http_version_not_supported");
        } else {
            parse_fail(c, 400, "The request is not valid HTTP/1.1.", NULL);
        }
    }
    if (c->err_status == 0 && c->state == ST_HEAD) {
        c->head_fed += used;
        if (c->head_fed > c->s->limits.max_header_bytes) {
            parse_fail(c, 431, "Request header fields too large.", "request_header_too_large");
        }
    }
    return used;
}

static void
dispatch(struct conn *c)
{
    struct tg_http_server *s = c->s;
    struct tg_http_req *req = &c->req;
    uv_timer_stop(&c->timer);
    c->state = ST_HANDLER;
    c->is_owned = true;
    s->n_in_flight++;
    req->start_us = tg_clock_mono_us();
    new_id(s, req->id);
    c->busy++;
    s->handler(req, s->ctx);
    c->busy--;
    conn_maybe_free(c);
}

/* After a feed: answers an error or hands a complete request over. Returns true when the
 * connection can parse more right away. */
static bool
after_feed(struct conn *c)
{
    if (c->err_status != 0) {
        answer_error(c, c->err_status, c->err_message, c->err_code);
        return false;
    }
    if (!c->is_msg_complete) {
        return true;
    }
    c->is_msg_complete = false;
    dispatch(c);
    return c->state == ST_IDLE;
}

/* Parses what waits in pending, as far as the connection's state allows. */
static void
drive(struct conn *c)
{
    while (c->pending.len > 0 &&
           (c->state == ST_IDLE || c->state == ST_HEAD || c->state == ST_BODY)) {
        size_t used = feed(c, c->pending.data, c->pending.len);
        tg_buf_consume(&c->pending, used);
        bool is_progress = used > 0 || c->is_msg_complete || c->err_status != 0;
        if (!after_feed(c) || !is_progress) {
            break;
        }
    }
    if (c->state == ST_IDLE && c->pending.len == 0) {
        timer_arm(c, c->s->limits.idle_timeout_ms);
    }
    read_start(c);
}

/* ---- libuv callbacks ------------------------------------------------------------------------ */

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;
    *buf = uv_buf_init(c->s->rbuf, READ_BUF_BYTES);
}

static void
keep_pending(struct conn *c, const char *data, size_t n)
{
    /* pending is capped above max_header_bytes + one read; reading stops before it fills */
    if (tg_buf_append(&c->pending, data, n) < 0) {
        conn_close(c);
        return;
    }
    if (c->pending.len >= c->s->limits.max_header_bytes) {
        read_stop(c);
    }
}

static void
on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        if (c->state == ST_LINGER && !c->is_shut) {
            c->saw_eof = true; /* our answer is still being written */
            read_stop(c);
            return;
        }
        conn_close(c);
        return;
    }
    size_t n = (size_t)nread;
    switch (c->state) {
    case ST_LINGER:
    case ST_CLOSED:
        return;
    case ST_HANDLER:
        keep_pending(c, buf->base, n);
        return;
    case ST_IDLE:
    case ST_HEAD:
    case ST_BODY:
        break;
    }
    if (c->pending.len > 0) {
        keep_pending(c, buf->base, n);
        drive(c);
        return;
    }
    size_t used = feed(c, buf->base, n);
    if (c->is_msg_complete && used < n) {
        keep_pending(c, buf->base + used, n - used);
    }
    if (after_feed(c)) {
        drive(c);
    }
}

static void
on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->is_broken) {
        conn_close(c);
        return;
    }
    switch (c->state) {
    case ST_IDLE:
        if (c->pending.len > 0) {
            drive(c);
        } else if (c->pending_write > 0 && !c->s->is_stopping) {
            timer_arm(c, c->s->limits.idle_timeout_ms); /* still sending the last answer */
        } else {
            conn_close(c);
        }
        return;
    case ST_HEAD:
        answer_error(c, 408, "The request headers were not received in time.", "request_timeout");
        return;
    case ST_BODY:
        answer_error(c, 408, "The request body was not received in time.", "request_timeout");
        return;
    case ST_LINGER:
        conn_close(c);
        return;
    case ST_HANDLER:
    case ST_CLOSED:
        return;
    }
}

static void
on_connection(uv_stream_t *listener, int status)
{
    struct tg_http_server *s = listener->data;
    if (status < 0) {
        tg_log_warn("http: accept failed: %s", uv_strerror(status));
        return;
    }
    struct conn *c = tg_xcalloc(1, sizeof(*c));
    c->s = s;
    c->state = ST_IDLE;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->n_handles = 2;
    c->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->n_conns++;
    const struct tg_http_limits *l = &s->limits;
    tg_buf_init(&c->head, l->max_header_bytes + 2 * l->max_headers + 16);
    tg_buf_init(&c->pending, l->max_header_bytes + READ_BUF_BYTES);
    tg_buf_init(&c->out, 0);
    tg_buf_init(&c->cork, 0);
    tg_buf_init(&c->req.body, l->max_body_bytes);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || s->n_conns > l->max_connections ||
        s->is_stopping) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->req.remote_addr, sizeof(c->req.remote_addr));
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, c->req.remote_addr, sizeof(c->req.remote_addr));
        }
    }
    timer_arm(c, l->header_timeout_ms);
    read_start(c);
}

/* ---- public: requests ---------------------------------------------------------------------- */

const char *
tg_http_req_header(const struct tg_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0) {
            return req->headers[i].value;
        }
    }
    return NULL;
}

static int
hex_val(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/* Percent-decodes (and '+' to space) src[0..n) into dst, which has room for n + 1 bytes. */
static size_t
url_decode(char *dst, const char *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi;
        int lo;
        if (src[i] == '%' && i + 2 < n && (hi = hex_val(src[i + 1])) >= 0 &&
            (lo = hex_val(src[i + 2])) >= 0) {
            dst[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            dst[o++] = src[i] == '+' ? ' ' : src[i];
        }
    }
    dst[o] = '\0';
    return o;
}

/* True when the query key k[0..n) decodes to name or to name + "[]". */
static bool
key_matches(const char *k, size_t n, const char *name)
{
    char tmp[256];
    if (n >= sizeof(tmp)) {
        return false;
    }
    size_t len = url_decode(tmp, k, n);
    size_t name_len = strlen(name);
    if (len == name_len) {
        return memcmp(tmp, name, len) == 0;
    }
    return len == name_len + 2 && memcmp(tmp, name, name_len) == 0 &&
           memcmp(tmp + name_len, "[]", 2) == 0;
}

size_t
tg_http_req_query_all(struct tg_http_req *req, const char *name, const char **out, size_t cap)
{
    size_t count = 0;
    const char *p = req->query;
    while (*p != '\0') {
        const char *end = strchr(p, '&');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        size_t key_len = eq != NULL ? (size_t)(eq - p) : n;
        if (key_len > 0 && key_matches(p, key_len, name)) {
            if (count < cap) {
                const char *v = eq != NULL ? eq + 1 : p + n;
                size_t v_len = (size_t)(p + n - v);
                char *d = tg_arena_alloc(&req->arena, v_len + 1);
                url_decode(d, v, v_len);
                out[count] = d;
            }
            count++;
        }
        p += n;
        if (*p == '&') {
            p++;
        }
    }
    return count;
}

const char *
tg_http_req_query(struct tg_http_req *req, const char *name)
{
    const char *v = NULL;
    return tg_http_req_query_all(req, name, &v, 1) > 0 ? v : NULL;
}

void
tg_http_req_on_abort(struct tg_http_req *req, tg_http_abort_cb cb, void *arg)
{
    struct conn *c = conn_of(req);
    c->abort_cb = cb;
    c->abort_arg = arg;
}

void
tg_http_req_on_drain(struct tg_http_req *req, tg_http_drain_cb cb, void *arg)
{
    struct conn *c = conn_of(req);
    c->drain_cb = cb;
    c->drain_arg = arg;
}

bool
tg_http_req_is_aborted(const struct tg_http_req *req)
{
    const struct conn *c = conn_of(req);
    return c->is_aborted || c->is_broken || c->state == ST_CLOSED;
}

size_t
tg_http_req_pending_bytes(const struct tg_http_req *req)
{
    const struct conn *c = conn_of(req);
    return c->pending_write + c->cork.len;
}

static bool
check_owned(struct conn *c, const char *fn)
{
    if (!c->is_owned) {
        tg_log_error("http: %s on a request that is already finished", fn);
        return false;
    }
    return true;
}

int
tg_http_respond(struct tg_http_req *req, int status, const char *content_type,
                const struct tg_http_header *hdrs, size_t n_hdrs, const char *body, size_t body_len)
{
    struct conn *c = conn_of(req);
    if (!check_owned(c, "tg_http_respond")) {
        return TG_EINVAL;
    }
    int rc =
        write_response(c, status, content_type, hdrs, n_hdrs, body != NULL ? body : "", body_len);
    req_finish(c);
    return rc;
}

int
tg_http_respond_error(struct tg_http_req *req, int status, const char *message, const char *type,
                      const char *param, const char *code)
{
    struct tg_buf body;
    tg_buf_init(&body, 0);
    tg_json_error_body(&body, message, type, param, code);
    int rc = tg_http_respond(req, status, "application/json", NULL, 0, body.data, body.len);
    tg_buf_deinit(&body);
    return rc;
}

int
tg_http_stream_begin(struct tg_http_req *req, int status, const char *content_type,
                     const struct tg_http_header *hdrs, size_t n_hdrs)
{
    struct conn *c = conn_of(req);
    if (!check_owned(c, "tg_http_stream_begin") || c->is_streaming) {
        return TG_EINVAL;
    }
    c->is_streaming = true;
    c->is_raw_stream = c->parser.http_minor == 0; /* HTTP/1.0 has no chunked encoding */
    build_head(c, status, content_type, hdrs, n_hdrs, -1);
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned int)c->out.len);
    return cork_write(c, &b, 1);
}

int
tg_http_stream_write(struct tg_http_req *req, const void *data, size_t len)
{
    struct conn *c = conn_of(req);
    if (!c->is_owned || !c->is_streaming || tg_http_req_is_aborted(req)) {
        return TG_ECLOSED;
    }
    if (len == 0 || c->is_head) {
        return 0; /* an empty chunk would end the body */
    }
    char size[24];
    int n = snprintf(size, sizeof(size), "%zx\r\n", len);
    uv_buf_t bufs[3] = {uv_buf_init(size, (unsigned int)n), uv_buf_init((char *)data, len),
                        uv_buf_init("\r\n", 2)};
    int rc = c->is_raw_stream ? cork_write(c, &bufs[1], 1) : cork_write(c, bufs, 3);
    if (rc < 0) {
        return rc;
    }
    if (c->pending_write + c->cork.len > c->s->limits.write_high_bytes) {
        c->is_congested = true;
        return 1;
    }
    return 0;
}

int
tg_http_stream_end(struct tg_http_req *req)
{
    struct conn *c = conn_of(req);
    if (!check_owned(c, "tg_http_stream_end")) {
        return TG_EINVAL;
    }
    if (!c->is_streaming && !tg_http_req_is_aborted(req)) {
        /* ended before it began: still give the client an answer */
        return tg_http_respond_error(req, 500, "The response stream ended before it began.",
                                     "server_error", NULL, NULL);
    }
    int rc = TG_ECLOSED;
    if (!tg_http_req_is_aborted(req)) {
        uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
        bool has_last_chunk = !c->is_head && !c->is_raw_stream;
        rc = cork_flush(c, &b, has_last_chunk ? 1 : 0);
    }
    req_finish(c);
    return rc;
}

void
tg_http_stream_abort(struct tg_http_req *req)
{
    struct conn *c = conn_of(req);
    if (!check_owned(c, "tg_http_stream_abort")) {
        return;
    }
    c->req.keep_alive = false; /* closing without the last chunk tells the client it was cut */
    if (!tg_http_req_is_aborted(req)) {
        cork_flush(c, NULL, 0); /* what was relayed still goes out, before the FIN */
    }
    req_finish(c);
}

/* ---- public: the server -------------------------------------------------------------------- */

static void
on_final_close(uv_handle_t *h)
{
    struct tg_http_server *s = h->data;
    if (s->closed_cb != NULL) {
        s->closed_cb(s, s->closed_arg);
    }
    free(s);
}

static void
server_maybe_done(struct tg_http_server *s)
{
    if (s->is_freeing && s->is_listener_closed && s->n_cork_handles == 0 && s->n_conns == 0 &&
        !s->is_final) {
        s->is_final = true;
        uv_close((uv_handle_t *)&s->final, on_final_close);
    }
}

static void
on_cork_handle_close(uv_handle_t *h)
{
    struct tg_http_server *s = h->data;
    s->n_cork_handles--;
    server_maybe_done(s);
}

static void
on_listener_close(uv_handle_t *h)
{
    struct tg_http_server *s = h->data;
    s->is_listener_closed = true;
    server_maybe_done(s);
}

/* Opens a non-blocking listening socket with SO_REUSEPORT. Returns the fd or -1 (logged). */
static int
listen_socket(const char *host, int port)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port_str[16];
    snprintf(port_str, sizeof(port_str), "%d", port);
    struct addrinfo *res = NULL;
    bool any = host == NULL || host[0] == '\0' || strcmp(host, "*") == 0;
    int rc = getaddrinfo(any ? NULL : host, port_str, &hints, &res);
    if (rc != 0) {
        tg_log_error("http: cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
        tg_log_error("http: cannot bind %s:%d: %s", any ? "*" : host, port, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void
on_failed_close(uv_handle_t *h)
{
    free(h->data);
}

int
tg_http_server_new(uv_loop_t *loop, const char *host, int port, const struct tg_http_limits *limits,
                   tg_http_handler_cb handler, void *ctx, struct tg_http_server **out)
{
    *out = NULL;
    int fd = listen_socket(host, port);
    if (fd < 0) {
        return TG_EIO;
    }
    struct tg_http_server *s = tg_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->handler = handler;
    s->ctx = ctx;
    struct tg_http_limits def;
    tg_http_limits_default(&def);
    s->limits = limits != NULL ? *limits : def;
    /* a zero limit means "the default", so a partly filled struct stays safe */
    struct tg_http_limits *l = &s->limits;
    l->max_header_bytes = l->max_header_bytes ? l->max_header_bytes : def.max_header_bytes;
    l->max_headers = l->max_headers ? l->max_headers : def.max_headers;
    l->max_body_bytes = l->max_body_bytes ? l->max_body_bytes : def.max_body_bytes;
    l->header_timeout_ms = l->header_timeout_ms ? l->header_timeout_ms : def.header_timeout_ms;
    l->body_timeout_ms = l->body_timeout_ms ? l->body_timeout_ms : def.body_timeout_ms;
    l->idle_timeout_ms = l->idle_timeout_ms ? l->idle_timeout_ms : def.idle_timeout_ms;
    l->write_high_bytes = l->write_high_bytes ? l->write_high_bytes : def.write_high_bytes;
    l->max_connections = l->max_connections ? l->max_connections : def.max_connections;
    if (tg_random_bytes(s->rng, sizeof(s->rng)) < 0) {
        s->rng[0] = tg_clock_mono_us() | 1; /* ids stay unique per process, if predictable */
    }
    uv_timer_init(loop, &s->final);
    s->final.data = s;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    int rc = uv_tcp_open(&s->listener, fd);
    if (rc < 0) {
        close(fd); /* not adopted by the handle */
    } else {
        rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    }
    if (rc < 0) {
        tg_log_error("http: cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_close((uv_handle_t *)&s->final, on_failed_close);
        return TG_EIO;
    }
    uv_check_init(loop, &s->cork_check);
    uv_prepare_init(loop, &s->cork_prepare);
    s->cork_check.data = s;
    s->cork_prepare.data = s;
    uv_unref((uv_handle_t *)&s->cork_check);
    uv_unref((uv_handle_t *)&s->cork_prepare);
    s->n_cork_handles = 2;
    *out = s;
    return 0;
}

void
tg_http_server_stop(struct tg_http_server *s)
{
    if (s->is_stopping) {
        return;
    }
    s->is_stopping = true;
    uv_close((uv_handle_t *)&s->listener, on_listener_close);
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        switch (c->state) {
        case ST_IDLE:
        case ST_HEAD:
        case ST_BODY:
            if (c->pending_write > 0) {
                begin_linger(c); /* let the last answer out */
            } else {
                conn_close(c);
            }
            break;
        case ST_HANDLER: /* closes after its answer: is_stopping turns keep-alive off */
        case ST_LINGER:
        case ST_CLOSED:
            break;
        }
    }
}

size_t
tg_http_server_connections(const struct tg_http_server *s)
{
    return s->n_conns;
}

size_t
tg_http_server_requests_in_flight(const struct tg_http_server *s)
{
    return s->n_in_flight;
}

void
tg_http_server_free(struct tg_http_server *s, tg_http_closed_cb cb, void *arg)
{
    tg_http_server_stop(s);
    s->is_freeing = true;
    s->closed_cb = cb;
    s->closed_arg = arg;
    uv_close((uv_handle_t *)&s->cork_check, on_cork_handle_close);
    uv_close((uv_handle_t *)&s->cork_prepare, on_cork_handle_close);
    /* conn_close never frees synchronously (the handles close first), so the walk is safe */
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        if (c->state == ST_LINGER) {
            timer_arm(c, LINGER_MS);
        } else {
            conn_close(c);
        }
    }
    server_maybe_done(s);
}
