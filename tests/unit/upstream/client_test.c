/*
 * client_test.c: the upstream HTTP client against a scripted HTTP/1.1 server that runs on the
 * same libuv loop (uv_tcp). The server counts accepted connections and requests, keeps the
 * last request's bytes, and answers each request by its script: a fixed byte string (whole,
 * truncated, or stalled half way), silence, or a chunked trickle that never ends.
 *
 * Each test drives the loop with uv_run(UV_RUN_ONCE) until its condition holds, bounded by a
 * wall-clock limit that fails the test, and ends by freeing everything and checking that the
 * loop closes with no handle left (the client frees itself only after its handles close).
 *
 * The contract cases run twice: against the native HTTP/1.1 engine (h1.c, what plain http://
 * gets by default) and against libcurl (TG_UPSTREAM_CLIENT=curl). A few more check what only
 * the native engine promises: its URL parsing, its pool, its parser's edge cases.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/mem.h"
#include "upstream/client.h"
#include "upstream/h1.h"

/* ---- the scripted server --------------------------------------------------------------- */

enum srv_mode {
    SRV_RESPOND, /* write resp; close afterwards if close_after */
    SRV_SILENT,  /* read the request, never answer */
    SRV_TRICKLE, /* chunked headers, then one byte every 20 ms, forever */
    SRV_HANGUP,  /* read the request, close the connection without a word */
};

struct srv;

struct conn {
    struct conn *next;
    struct srv *s;
    uv_tcp_t tcp;
    uv_timer_t trickle;
    struct tg_buf in;
    int n_requests; /* on this connection */
    size_t drip_pos;
    int n_closing;
};

struct srv {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    int port;
    enum srv_mode mode;
    const char *resp;
    size_t resp_len;
    bool close_after;
    bool is_drop_reused;  /* close (once) a connection that brings its second request */
    bool is_byte_by_byte; /* SRV_RESPOND one byte per millisecond */
    int n_accepts;
    int n_requests;
    struct tg_buf last_req;
    struct conn *conns;
};

static void
on_write_done(uv_write_t *w, int status)
{
    free(w);
}

static void
conn_write(struct conn *cn, const char *p, size_t n)
{
    uv_write_t *w = tg_xmalloc(sizeof(*w));
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    if (uv_write(w, (uv_stream_t *)&cn->tcp, &b, 1, on_write_done) < 0) {
        free(w);
    }
}

static void
on_conn_closed(uv_handle_t *h)
{
    struct conn *cn = h->data;
    if (--cn->n_closing == 0) {
        tg_buf_deinit(&cn->in);
        free(cn);
    }
}

static void
conn_close(struct conn *cn)
{
    struct srv *s = cn->s;
    for (struct conn **pp = &s->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == cn) {
            *pp = cn->next;
            break;
        }
    }
    cn->n_closing = 2;
    uv_close((uv_handle_t *)&cn->trickle, on_conn_closed);
    uv_close((uv_handle_t *)&cn->tcp, on_conn_closed);
}

static void
on_shutdown_done(uv_shutdown_t *req, int status)
{
    struct conn *cn = req->data;
    free(req);
    if (!uv_is_closing((uv_handle_t *)&cn->tcp)) {
        conn_close(cn);
    }
}

static void
on_trickle(uv_timer_t *t)
{
    struct conn *cn = t->data;
    conn_write(cn, "1\r\nx\r\n", 6);
}

/* Content-Length of a request head, 0 if none. */
static size_t
content_length(const char *head, size_t head_len)
{
    const char *p = head;
    const char *end = head + head_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL) {
            break;
        }
        if (strncasecmp(p, "content-length:", 15) == 0) {
            return (size_t)strtoull(p + 15, NULL, 10);
        }
        p = eol + 1;
    }
    return 0;
}

static void
on_drip(uv_timer_t *t)
{
    struct conn *cn = t->data;
    struct srv *s = cn->s;
    conn_write(cn, s->resp + cn->drip_pos, 1);
    if (++cn->drip_pos == s->resp_len) {
        uv_timer_stop(t);
    }
}

static void
answer(struct conn *cn)
{
    struct srv *s = cn->s;
    switch (s->mode) {
    case SRV_RESPOND:
        if (s->is_byte_by_byte) {
            cn->drip_pos = 0;
            uv_timer_start(&cn->trickle, on_drip, 1, 1);
            break;
        }
        conn_write(cn, s->resp, s->resp_len);
        if (s->close_after) {
            uv_shutdown_t *sh = tg_xmalloc(sizeof(*sh));
            sh->data = cn;
            uv_shutdown(sh, (uv_stream_t *)&cn->tcp, on_shutdown_done);
        }
        break;
    case SRV_SILENT:
        break;
    case SRV_HANGUP:
        conn_close(cn);
        break;
    case SRV_TRICKLE:
        conn_write(cn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 47);
        uv_timer_start(&cn->trickle, on_trickle, 20, 20);
        break;
    }
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char slab[65536];
    *buf = uv_buf_init(slab, sizeof(slab));
}

static void
on_conn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct conn *cn = st->data;
    if (n < 0) {
        conn_close(cn);
        return;
    }
    tg_buf_append(&cn->in, buf->base, (size_t)n);
    for (;;) {
        char *hdr_end = cn->in.data ? memmem(cn->in.data, cn->in.len, "\r\n\r\n", 4) : NULL;
        if (hdr_end == NULL) {
            return;
        }
        size_t head_len = (size_t)(hdr_end - cn->in.data) + 4;
        size_t total = head_len + content_length(cn->in.data, head_len);
        if (cn->in.len < total) {
            return;
        }
        struct srv *s = cn->s;
        s->n_requests++;
        cn->n_requests++;
        tg_buf_reset(&s->last_req);
        tg_buf_append(&s->last_req, cn->in.data, total);
        tg_buf_consume(&cn->in, total);
        if (s->is_drop_reused && cn->n_requests == 2) {
            s->is_drop_reused = false; /* the stale-socket race: the peer closed as we sent */
            conn_close(cn);
            return;
        }
        answer(cn);
        if (s->mode == SRV_HANGUP) {
            return;
        }
    }
}

static void
on_accept(uv_stream_t *server, int status)
{
    struct srv *s = server->data;
    assert_int_equal(status, 0);
    struct conn *cn = tg_xcalloc(1, sizeof(*cn));
    cn->s = s;
    tg_buf_init(&cn->in, 0);
    uv_tcp_init(s->loop, &cn->tcp);
    uv_timer_init(s->loop, &cn->trickle);
    cn->tcp.data = cn;
    cn->trickle.data = cn;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&cn->tcp), 0);
    cn->next = s->conns;
    s->conns = cn;
    s->n_accepts++;
    uv_read_start((uv_stream_t *)&cn->tcp, on_alloc, on_conn_read);
}

static int
bound_port(uv_tcp_t *t)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    assert_int_equal(uv_tcp_getsockname(t, (struct sockaddr *)&ss, &len), 0);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void
srv_start(struct srv *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    tg_buf_init(&s->last_req, 0);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    assert_int_equal(uv_tcp_bind(&s->tcp, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->tcp, 16, on_accept), 0);
    s->port = bound_port(&s->tcp);
}

static void
srv_stop(struct srv *s)
{
    while (s->conns != NULL) {
        conn_close(s->conns);
    }
    uv_close((uv_handle_t *)&s->tcp, NULL);
}

/* ---- loop driving --------------------------------------------------------------------- */

static void
on_guard(uv_timer_t *t)
{
}

/* Runs the loop until *flag is non-zero; fails the test after max_ms. */
static void
run_until(uv_loop_t *loop, const int *flag, uint64_t max_ms)
{
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    uv_timer_start(&guard, on_guard, 5, 5); /* so UV_RUN_ONCE always returns */
    uint64_t start = uv_hrtime();
    while (*flag == 0 && (uv_hrtime() - start) / 1000000 < max_ms) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_true(*flag != 0);
}

/* Runs the loop until nothing is left, then checks that it closes cleanly. */
static void
drain_and_close(uv_loop_t *loop)
{
    for (int i = 0; i < 1000 && uv_loop_alive(loop); i++) {
        uv_run(loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- the recording consumer ------------------------------------------------------------- */

enum consumer {
    TAKE_ALL,
    PAUSE_EVERY_READ,  /* TG_EAGAIN each time, resumed on the next turn */
    PAUSE_ONCE_LONG,   /* TG_EAGAIN once, resumed after pause_ms */
    CANCEL_IN_DATA,    /* tg_upstream_call_cancel from the first on_data */
    RETURN_CANCELED,   /* TG_ECANCELED from the first on_data */
    CANCEL_IN_HEADERS, /* tg_upstream_call_cancel from on_headers */
    FREE_IN_DATA,      /* tg_upstream_client_free from the first on_data */
};

struct rec {
    enum consumer mode;
    struct tg_upstream_client *client;
    struct tg_upstream_call *call;
    uv_timer_t resume;
    uint64_t pause_ms;
    int is_paused;
    int n_pauses;
    int n_headers;
    int status;
    char x_test[64];
    bool has_interim_header;
    bool has_content_type;
    struct tg_buf body;
    int n_data;
    bool data_before_headers;
    bool data_while_paused;
    int n_done;
    int err;
    char msg[256];
    uint64_t done_ms;
};

/* Set around every API call: a callback firing inside one breaks the contract. */
static bool in_api;

static void
on_resume_timer(uv_timer_t *t)
{
    struct rec *r = t->data;
    r->is_paused = 0;
    in_api = true;
    tg_upstream_call_resume(r->call);
    in_api = false;
}

static void
rec_init(struct rec *r, uv_loop_t *loop, enum consumer mode)
{
    memset(r, 0, sizeof(*r));
    r->mode = mode;
    tg_buf_init(&r->body, 0);
    uv_timer_init(loop, &r->resume);
    r->resume.data = r;
}

static void
rec_deinit(struct rec *r)
{
    tg_buf_deinit(&r->body);
    uv_close((uv_handle_t *)&r->resume, NULL);
    uv_run(r->resume.loop, UV_RUN_NOWAIT); /* r lives on the stack: finish the close now */
}

static void
on_headers(int status, const struct tg_upstream_header *h, size_t n, void *arg)
{
    struct rec *r = arg;
    assert_false(in_api);
    r->n_headers++;
    r->status = status;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(h[i].name, "x-test") == 0) {
            snprintf(r->x_test, sizeof(r->x_test), "%s", h[i].value);
        } else if (strcasecmp(h[i].name, "link") == 0) {
            r->has_interim_header = true;
        } else if (strcasecmp(h[i].name, "content-type") == 0) {
            r->has_content_type = strcmp(h[i].value, "text/event-stream") == 0;
        }
    }
    if (r->mode == CANCEL_IN_HEADERS) {
        tg_upstream_call_cancel(r->call);
    }
}

static int
on_data(const char *data, size_t len, void *arg)
{
    struct rec *r = arg;
    assert_false(in_api);
    r->data_before_headers |= r->n_headers == 0;
    r->data_while_paused |= r->is_paused != 0;
    r->n_data++;
    tg_buf_append(&r->body, data, len);
    switch (r->mode) {
    case TAKE_ALL:
        return 0;
    case PAUSE_EVERY_READ:
        r->is_paused = 1;
        r->n_pauses++;
        uv_timer_start(&r->resume, on_resume_timer, 0, 0);
        return TG_EAGAIN;
    case PAUSE_ONCE_LONG:
        if (r->n_pauses > 0) {
            return 0;
        }
        r->is_paused = 1;
        r->n_pauses++;
        uv_timer_start(&r->resume, on_resume_timer, r->pause_ms, 0);
        return TG_EAGAIN;
    case CANCEL_IN_DATA:
        tg_upstream_call_cancel(r->call);
        return 0;
    case RETURN_CANCELED:
        return TG_ECANCELED;
    case CANCEL_IN_HEADERS:
        return 0;
    case FREE_IN_DATA:
        tg_upstream_client_free(r->client);
        return 0;
    }
    return 0;
}

static void
on_done(int err, const char *message, void *arg)
{
    struct rec *r = arg;
    assert_false(in_api);
    r->n_done++;
    r->err = err;
    snprintf(r->msg, sizeof(r->msg), "%s", message ? message : "");
    r->done_ms = uv_hrtime() / 1000000;
}

static const struct tg_upstream_callbacks cbs = {on_headers, on_data, on_done};

/* ---- fixture ----------------------------------------------------------------------------- */

struct fx {
    uv_loop_t loop;
    struct srv srv;
    struct tg_upstream_client *client;
    char url[128];
    struct tg_upstream_request req;
    char *resp; /* a large scripted response, freed after the server is gone */
};

static int
setup(void **state)
{
    struct fx *f = tg_xcalloc(1, sizeof(*f));
    uv_loop_init(&f->loop);
    srv_start(&f->srv, &f->loop);
    assert_int_equal(tg_upstream_client_new(&f->loop, &f->client), 0);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/v1/chat", f->srv.port);
    f->req.method = "GET";
    f->req.url = f->url;
    tg_upstream_timeouts_default(&f->req.timeouts);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    if (f->client != NULL) {
        tg_upstream_client_free(f->client);
    }
    srv_stop(&f->srv);
    drain_and_close(&f->loop);
    tg_buf_deinit(&f->srv.last_req);
    free(f->resp);
    free(f);
    return 0;
}

static void
start(struct fx *f, struct rec *r)
{
    r->client = f->client;
    in_api = true;
    int rc = tg_upstream_call_start(f->client, &f->req, &cbs, r, &r->call);
    in_api = false;
    assert_int_equal(rc, 0);
    assert_non_null(r->call);
}

static void
respond_with(struct fx *f, const char *resp, bool close_after)
{
    f->srv.mode = SRV_RESPOND;
    f->srv.resp = resp;
    f->srv.resp_len = strlen(resp);
    f->srv.close_after = close_after;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void
body_is_delivered_whole(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", false);
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    assert_int_equal(tg_upstream_client_active(f->client), 1);
    assert_int_equal(r.n_done, 0); /* nothing fires inside start */
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n_done, 1);
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 11);
    assert_memory_equal(r.body.data, "hello world", 11);
    assert_false(r.data_before_headers);
    assert_int_equal(tg_upstream_client_active(f->client), 0);
    assert_non_null(memmem(f->srv.last_req.data, f->srv.last_req.len, "GET /v1/chat HTTP/1.1", 21));
    rec_deinit(&r);
}

static void
headers_and_request_are_as_asked(void **state)
{
    struct fx *f = *state;
    /* An interim 103 (with its own header) comes first; only the final response counts. */
    respond_with(f,
                 "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
                 "HTTP/1.1 201 Created\r\nContent-Type: text/event-stream\r\n"
                 "X-Test:   spaced value  \r\nContent-Length: 5\r\n\r\nhello",
                 false);
    size_t body_len = 2 * 1024 * 1024; /* large enough that curl would ask for 100-continue */
    char *body = tg_xmalloc(body_len);
    memset(body, 'b', body_len);
    const struct tg_upstream_header hdrs[] = {
        {"Authorization", "Bearer k"},
        {"Content-Type", "application/json"},
        {"X-Empty", ""},
    };
    f->req.method = "POST";
    f->req.headers = hdrs;
    f->req.n_headers = 3;
    f->req.body = body;
    f->req.body_len = body_len;
    setenv("http_proxy", "http://127.0.0.1:1", 1); /* must be ignored */
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    unsetenv("http_proxy");
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.x_test, "spaced value");
    assert_true(r.has_content_type);
    assert_false(r.has_interim_header);
    assert_false(r.data_before_headers);
    assert_int_equal(r.body.len, 5);

    const struct tg_buf *q = &f->srv.last_req;
    char *head_end = memmem(q->data, q->len, "\r\n\r\n", 4);
    assert_non_null(head_end);
    size_t head_len = (size_t)(head_end - q->data);
    assert_non_null(memmem(q->data, head_len, "POST /v1/chat HTTP/1.1", 22));
    assert_non_null(memmem(q->data, head_len, "Authorization: Bearer k", 23));
    assert_non_null(memmem(q->data, head_len, "X-Empty:", 8));
    assert_null(memmem(q->data, head_len, "Expect", 6));
    assert_null(memmem(q->data, head_len, "Accept-Encoding", 15));
    assert_int_equal(q->len - head_len - 4, body_len);
    rec_deinit(&r);
    free(body);
}

static void
bad_request_headers_are_refused(void **state)
{
    struct fx *f = *state;
    const struct tg_upstream_header hdrs[] = {{"X-Evil", "a\r\nInjected: 1"}};
    f->req.headers = hdrs;
    f->req.n_headers = 1;
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    struct tg_upstream_call *call = NULL;
    assert_int_equal(tg_upstream_call_start(f->client, &f->req, &cbs, &r, &call), TG_EINVAL);
    assert_null(call);
    assert_int_equal(tg_upstream_client_active(f->client), 0);
    rec_deinit(&r);
}

static void
sequential_calls_share_one_connection(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    for (int i = 0; i < 3; i++) {
        struct rec r;
        rec_init(&r, &f->loop, TAKE_ALL);
        start(f, &r);
        run_until(&f->loop, &r.n_done, 5000);
        assert_int_equal(r.err, 0);
        assert_int_equal(r.body.len, 2);
        rec_deinit(&r);
    }
    assert_int_equal(f->srv.n_requests, 3);
    assert_int_equal(f->srv.n_accepts, 1);
}

/* Parallel calls to one plain-http host each get a connection at once: none waits behind a
 * slow first response to learn whether the connection could multiplex. */
static void
parallel_calls_do_not_wait_for_each_other(void **state)
{
    struct fx *f = *state;
    f->srv.mode = SRV_SILENT;
    enum { N = 12 };
    struct rec r[N];
    for (int i = 0; i < N; i++) {
        rec_init(&r[i], &f->loop, TAKE_ALL);
        start(f, &r[i]);
    }
    int all_sent = 0;
    uint64_t t0 = uv_hrtime();
    while (f->srv.n_requests < N && (uv_hrtime() - t0) / 1000000 < 5000) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    all_sent = f->srv.n_requests == N;
    assert_true(all_sent);
    assert_int_equal(f->srv.n_accepts, N);
    assert_int_equal(tg_upstream_client_active(f->client), N);
    tg_upstream_client_free(f->client);
    f->client = NULL;
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].n_done, 1);
        rec_deinit(&r[i]);
    }
}

static void
refused_connection_is_a_connect_error(void **state)
{
    struct fx *f = *state;
    /* A port that was just free: bind, read it, close. */
    uv_tcp_t t;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(&f->loop, &t);
    assert_int_equal(uv_tcp_bind(&t, (const struct sockaddr *)&addr, 0), 0);
    int port = bound_port(&t);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/", port);

    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_ECONNECT);
    assert_int_equal(r.n_done, 1);
    assert_int_equal(r.n_headers, 0);
    assert_non_null(strstr(r.msg, "could not connect"));
    rec_deinit(&r);
}

/* A listener with a full accept queue: Linux drops further SYNs, so connecting hangs. */
static void
unanswered_connect_hits_connect_timeout(void **state)
{
    struct fx *f = *state;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t alen = sizeof(a);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    int filler = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(filler, (struct sockaddr *)&a, sizeof(a)), 0);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    f->req.timeouts.connect_ms = 200;

    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    uint64_t t0 = uv_hrtime() / 1000000;
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_ETIMEOUT);
    assert_string_equal(r.msg, "timed out connecting after 200 ms");
    assert_true(r.done_ms - t0 >= 200);
    rec_deinit(&r);
    close(filler);
    close(lfd);
}

static void
silent_server_hits_first_byte_timeout(void **state)
{
    struct fx *f = *state;
    f->srv.mode = SRV_SILENT;
    f->req.timeouts.first_byte_ms = 150;
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    uint64_t t0 = uv_hrtime() / 1000000;
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_ETIMEOUT);
    assert_string_equal(r.msg, "timed out waiting for the first byte after 150 ms");
    assert_true(r.done_ms - t0 >= 150);
    assert_int_equal(f->srv.n_requests, 1);
    rec_deinit(&r);
}

static void
stalled_body_hits_idle_timeout(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", false);
    f->req.timeouts.idle_ms = 150;
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_ETIMEOUT);
    assert_non_null(strstr(r.msg, "after 150 ms idle"));
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.body.len, 7);
    rec_deinit(&r);
}

static void
endless_trickle_hits_total_timeout(void **state)
{
    struct fx *f = *state;
    f->srv.mode = SRV_TRICKLE;
    f->req.timeouts.first_byte_ms = 200;
    f->req.timeouts.idle_ms = 200;
    f->req.timeouts.total_ms = 400;
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    uint64_t t0 = uv_hrtime() / 1000000;
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_ETIMEOUT);
    assert_string_equal(r.msg, "timed out after 400 ms in total");
    assert_true(r.done_ms - t0 >= 400);
    assert_true(r.n_data >= 5); /* bytes kept coming, so neither other deadline fired */
    rec_deinit(&r);
}

static void
truncated_chunked_body_is_an_upstream_error(void **state)
{
    struct fx *f = *state;
    respond_with(f,
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                 "10\r\nonly part",
                 true);
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_EUPSTREAM);
    assert_int_equal(r.n_done, 1);
    assert_true(r.body.len >= 5);
    assert_memory_equal(r.body.data, "hello", 5);
    rec_deinit(&r);
}

/* A large body whose every byte, in order, arrives once however often the consumer pauses. */
static char *
large_response(size_t body_len, size_t *resp_len)
{
    char head[128];
    int n =
        snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", body_len);
    char *resp = tg_xmalloc((size_t)n + body_len);
    memcpy(resp, head, (size_t)n);
    for (size_t i = 0; i < body_len; i++) {
        resp[n + i] = (char)('a' + (i * 7 + i / 251) % 26);
    }
    *resp_len = (size_t)n + body_len;
    return resp;
}

static void
pause_and_resume_deliver_every_byte_once(void **state)
{
    struct fx *f = *state;
    size_t body_len = 3 * 1024 * 1024 + 17;
    size_t resp_len = 0;
    char *resp = large_response(body_len, &resp_len);
    f->resp = resp;
    f->srv.mode = SRV_RESPOND;
    f->srv.resp = resp;
    f->srv.resp_len = resp_len;
    struct rec r;
    rec_init(&r, &f->loop, PAUSE_EVERY_READ);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 8000);
    assert_int_equal(r.err, 0);
    assert_false(r.data_while_paused);
    assert_true(r.n_pauses > 10);
    assert_int_equal(r.body.len, body_len);
    assert_memory_equal(r.body.data, resp + (resp_len - body_len), body_len);
    rec_deinit(&r);
}

static void
paused_call_does_not_idle_out(void **state)
{
    struct fx *f = *state;
    size_t body_len = 512 * 1024;
    size_t resp_len = 0;
    char *resp = large_response(body_len, &resp_len);
    f->resp = resp;
    f->srv.mode = SRV_RESPOND;
    f->srv.resp = resp;
    f->srv.resp_len = resp_len;
    f->req.timeouts.idle_ms = 100;
    struct rec r;
    rec_init(&r, &f->loop, PAUSE_ONCE_LONG);
    r.pause_ms = 350;
    uint64_t t0 = uv_hrtime() / 1000000;
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, 0);
    assert_true(r.done_ms - t0 >= 350);
    assert_false(r.data_while_paused);
    assert_int_equal(r.body.len, body_len);
    assert_memory_equal(r.body.data, resp + (resp_len - body_len), body_len);
    rec_deinit(&r);
}

static void
cancel_ends_once_and_later(void **state)
{
    struct fx *f = *state;
    f->srv.mode = SRV_SILENT;
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    in_api = true;
    tg_upstream_call_cancel(r.call);
    tg_upstream_call_cancel(r.call);
    tg_upstream_call_resume(r.call);
    in_api = false;
    assert_int_equal(r.n_done, 0);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_ECANCELED);
    for (int i = 0; i < 20; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(r.n_done, 1);
    assert_int_equal(r.n_headers, 0);
    assert_int_equal(tg_upstream_client_active(f->client), 0);
    rec_deinit(&r);
}

static void
cancel_from_callbacks(void **state)
{
    struct fx *f = *state;
    size_t resp_len = 0;
    char *resp = large_response(1024 * 1024, &resp_len);
    f->resp = resp;
    f->srv.mode = SRV_RESPOND;
    f->srv.resp = resp;
    f->srv.resp_len = resp_len;
    const enum consumer modes[] = {CANCEL_IN_DATA, RETURN_CANCELED, CANCEL_IN_HEADERS};
    for (size_t i = 0; i < 3; i++) {
        struct rec r;
        rec_init(&r, &f->loop, modes[i]);
        start(f, &r);
        run_until(&f->loop, &r.n_done, 5000);
        for (int k = 0; k < 20; k++) {
            uv_run(&f->loop, UV_RUN_NOWAIT);
        }
        assert_int_equal(r.n_done, 1);
        assert_int_equal(r.err, TG_ECANCELED);
        assert_int_equal(r.n_headers, 1);
        assert_int_equal(r.n_data, modes[i] == CANCEL_IN_HEADERS ? 0 : 1);
        rec_deinit(&r);
    }
    assert_int_equal(tg_upstream_client_active(f->client), 0);
}

static void
free_cancels_calls_in_flight(void **state)
{
    struct fx *f = *state;
    f->srv.mode = SRV_SILENT;
    struct rec r[3];
    for (int i = 0; i < 3; i++) {
        rec_init(&r[i], &f->loop, TAKE_ALL);
        start(f, &r[i]);
    }
    assert_int_equal(tg_upstream_client_active(f->client), 3);
    for (int i = 0; i < 500 && f->srv.n_requests < 3; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(f->srv.n_requests, 3);
    tg_upstream_client_free(f->client);
    f->client = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].n_done, 1);
        assert_int_equal(r[i].err, TG_ECANCELED);
        rec_deinit(&r[i]);
    }
}

static void
free_inside_on_data_is_deferred(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", false);
    struct rec r;
    rec_init(&r, &f->loop, FREE_IN_DATA);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    f->client = NULL;
    assert_int_equal(r.n_done, 1);
    assert_int_equal(r.err, TG_ECANCELED);
    rec_deinit(&r);
}

/* Runs one call to the end and checks it succeeded with body want. */
static void
call_ok(struct fx *f, const char *want)
{
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.body.len, strlen(want));
    if (r.body.len > 0) {
        assert_memory_equal(r.body.data, want, r.body.len);
    }
    rec_deinit(&r);
}

/* Chunks (with an extension and a trailer) join into the body, and the connection is reused. */
static void
chunked_body_is_joined_and_connection_reused(void **state)
{
    struct fx *f = *state;
    respond_with(f,
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n",
                 false);
    call_ok(f, "hello world");
    call_ok(f, "hello world");
    assert_int_equal(f->srv.n_accepts, 1);
    assert_int_equal(f->srv.n_requests, 2);
}

/* No length and no chunking: the body runs until the upstream closes, and is complete then. */
static void
body_until_close_is_complete(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end", true);
    call_ok(f, "to the end");
    call_ok(f, "to the end");
    assert_int_equal(f->srv.n_accepts, 2);
}

/* "Connection: close" from the upstream: the next call opens a new connection even though the
 * upstream leaves this one open. */
static void
connection_close_is_honoured(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false);
    call_ok(f, "ok");
    call_ok(f, "ok");
    assert_int_equal(f->srv.n_accepts, 2);
}

/* HEAD and 204 responses have no body whatever their headers say, and leave the connection
 * usable. */
static void
bodiless_responses_end_at_their_headers(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
    f->req.method = "HEAD";
    call_ok(f, "");
    respond_with(f, "HTTP/1.1 204 No Content\r\n\r\n", false);
    f->req.method = "DELETE";
    call_ok(f, "");
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    f->req.method = "GET";
    call_ok(f, "ok");
    assert_int_equal(f->srv.n_accepts, 1);
    assert_int_equal(f->srv.n_requests, 3);
}

/* A pooled connection the upstream closes just as the request goes out: nothing of the
 * request was answered, so the call goes again on a fresh connection and succeeds. */
static void
stale_pooled_connection_is_retried_once(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    call_ok(f, "ok");
    f->srv.is_drop_reused = true;
    call_ok(f, "ok");
    assert_int_equal(f->srv.n_accepts, 2);
    assert_int_equal(f->srv.n_requests, 3); /* the dropped one, then the retry */
}

/* A fresh connection closed without a response is an upstream error, not retried. */
static void
hangup_without_response_is_an_upstream_error(void **state)
{
    struct fx *f = *state;
    f->srv.mode = SRV_HANGUP;
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_EUPSTREAM);
    assert_int_equal(r.n_headers, 0);
    assert_int_equal(f->srv.n_accepts, 1);
    rec_deinit(&r);
}

/* A Content-Length body cut short by a close is an upstream error after the bytes that came. */
static void
truncated_length_body_is_an_upstream_error(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly part", true);
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_EUPSTREAM);
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.body.len, 9);
    rec_deinit(&r);
}

/* Response headers larger than the limit end the call with an upstream error and no
 * on_headers. */
static void
oversized_headers_are_an_upstream_error(void **state)
{
    struct fx *f = *state;
    size_t big = 200 * 1024;
    char *resp = tg_xmalloc(big + 128);
    int n = snprintf(resp, 128, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(resp + n, 'a', big);
    snprintf(resp + n + big, 128, "\r\nContent-Length: 2\r\n\r\nok");
    f->resp = resp;
    respond_with(f, resp, false);
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_EUPSTREAM);
    assert_int_equal(r.n_headers, 0);
    if (getenv("TG_UPSTREAM_CLIENT") == NULL) {
        assert_string_equal(r.msg, "the upstream sent response headers that are too large");
    }
    rec_deinit(&r);
}

/* A host name is looked up (the native engine caches the address for its pool entry). */
static void
host_names_are_resolved(void **state)
{
    struct fx *f = *state;
    snprintf(f->url, sizeof(f->url), "http://localhost:%d/v1/chat", f->srv.port);
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    call_ok(f, "ok");
    call_ok(f, "ok");
    assert_int_equal(f->srv.n_requests, 2);
    assert_non_null(memmem(f->srv.last_req.data, f->srv.last_req.len, "Host: localhost:", 16));
}

/* ---- native engine only ------------------------------------------------------------------ */

static void
urls_are_parsed(void **state)
{
    struct tg_h1_url u;
    assert_int_equal(tg_h1_url_parse("http://api.example.com/v1/chat?x=1#frag", &u), 0);
    assert_string_equal(u.host, "api.example.com");
    assert_int_equal(u.port, 80);
    assert_int_equal(u.target_len, 12);
    assert_memory_equal(u.target, "/v1/chat?x=1", 12);
    assert_int_equal(u.authority_len, 15);
    assert_int_equal(tg_h1_url_parse("HTTP://127.0.0.1:8080", &u), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 8080);
    assert_int_equal(u.target_len, 1);
    assert_memory_equal(u.target, "/", 1);
    assert_memory_equal(u.authority, "127.0.0.1:8080", u.authority_len);
    assert_int_equal(tg_h1_url_parse("http://[::1]:9/x", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 9);
    assert_memory_equal(u.authority, "[::1]:9", u.authority_len);
    const char *bad[] = {"https://a/",      "http://",       "http://u:p@a/", "http://a:/",
                         "http://a:70000/", "http://a:0/",   "http://[::1/",  "http://a:1x/",
                         "ftp://a/",        "http://[::1]x/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(tg_h1_url_parse(bad[i], &u), TG_EINVAL);
    }
}

struct h1fx {
    uv_loop_t loop;
    struct srv srv;
    struct tg_h1_client *h1;
    char url[128];
    struct tg_upstream_request req;
};

static void
h1_start(struct h1fx *f, struct rec *r)
{
    rec_init(r, &f->loop, TAKE_ALL);
    r->client = NULL;
    in_api = true;
    int rc = tg_h1_call_start(f->h1, &f->req, &cbs, r, (struct tg_h1_call **)&r->call);
    in_api = false;
    assert_int_equal(rc, 0);
}

/* Parallel calls leave their connections in the pool; when the upstream closes them, they
 * leave the pool at once (no failed reuse later), and the next call connects afresh. */
static void
pool_keeps_connections_and_drops_closed_ones(void **state)
{
    struct h1fx f;
    memset(&f, 0, sizeof(f));
    uv_loop_init(&f.loop);
    srv_start(&f.srv, &f.loop);
    assert_int_equal(tg_h1_client_new(&f.loop, &f.h1), 0);
    snprintf(f.url, sizeof(f.url), "http://127.0.0.1:%d/", f.srv.port);
    f.req.method = "GET";
    f.req.url = f.url;
    f.srv.mode = SRV_RESPOND;
    f.srv.resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    f.srv.resp_len = strlen(f.srv.resp);

    enum { N = 3 };
    struct rec r[N];
    for (int i = 0; i < N; i++) {
        h1_start(&f, &r[i]);
    }
    for (int i = 0; i < N; i++) {
        run_until(&f.loop, &r[i].n_done, 5000);
        assert_int_equal(r[i].err, 0);
        rec_deinit(&r[i]);
    }
    assert_int_equal(f.srv.n_accepts, N);
    assert_int_equal(tg_h1_client_idle(f.h1, "127.0.0.1", (uint16_t)f.srv.port), N);

    /* The upstream closes every idle connection: the pool notices without being used. */
    while (f.srv.conns != NULL) {
        conn_close(f.srv.conns);
    }
    uint64_t t0 = uv_hrtime();
    while (tg_h1_client_idle(f.h1, "127.0.0.1", (uint16_t)f.srv.port) > 0 &&
           (uv_hrtime() - t0) / 1000000 < 5000) {
        uv_run(&f.loop, UV_RUN_ONCE);
    }
    assert_int_equal(tg_h1_client_idle(f.h1, "127.0.0.1", (uint16_t)f.srv.port), 0);

    struct rec last;
    h1_start(&f, &last);
    run_until(&f.loop, &last.n_done, 5000);
    assert_int_equal(last.err, 0);
    assert_int_equal(f.srv.n_accepts, N + 1);
    assert_int_equal(f.srv.n_requests, N + 1);
    rec_deinit(&last);
    assert_int_equal(tg_h1_client_idle(f.h1, "127.0.0.1", (uint16_t)f.srv.port), 1);

    tg_h1_client_free(f.h1);
    srv_stop(&f.srv);
    drain_and_close(&f.loop);
    tg_buf_deinit(&f.srv.last_req);
}

/* The request's framing is the engine's: a caller's Content-Length gives way to the body's
 * real length; a caller's Host is kept instead of the URL's. */
static void
request_framing_is_the_engines(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    const struct tg_upstream_header hdrs[] = {
        {"Host", "api.example.test"},
        {"Content-Length", "999"},
    };
    f->req.method = "POST";
    f->req.headers = hdrs;
    f->req.n_headers = 2;
    f->req.body = "abc";
    f->req.body_len = 3;
    call_ok(f, "ok");
    const struct tg_buf *q = &f->srv.last_req;
    assert_non_null(memmem(q->data, q->len, "\r\nHost: api.example.test\r\n", 26));
    assert_null(memmem(q->data, q->len, "Host: 127.0.0.1", 15));
    assert_non_null(memmem(q->data, q->len, "\r\nContent-Length: 3\r\n", 21));
    assert_null(memmem(q->data, q->len, "999", 3));
    assert_memory_equal(q->data + q->len - 3, "abc", 3);
}

/* The pool keeps at most its bound of idle connections per host, and the sweep closes those
 * idle longer than the idle timeout (the upstream sees them close). */
static void
pool_is_bounded_and_idle_connections_expire(void **state)
{
    struct h1fx f;
    memset(&f, 0, sizeof(f));
    uv_loop_init(&f.loop);
    srv_start(&f.srv, &f.loop);
    assert_int_equal(tg_h1_client_new(&f.loop, &f.h1), 0);
    tg_h1_client_set_pool_limits(f.h1, 2, 100);
    snprintf(f.url, sizeof(f.url), "http://127.0.0.1:%d/", f.srv.port);
    f.req.method = "GET";
    f.req.url = f.url;
    f.srv.mode = SRV_RESPOND;
    f.srv.resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    f.srv.resp_len = strlen(f.srv.resp);

    enum { N = 3 };
    struct rec r[N];
    for (int i = 0; i < N; i++) {
        h1_start(&f, &r[i]);
    }
    for (int i = 0; i < N; i++) {
        run_until(&f.loop, &r[i].n_done, 5000);
        assert_int_equal(r[i].err, 0);
        rec_deinit(&r[i]);
    }
    assert_int_equal(f.srv.n_accepts, N);
    assert_int_equal(tg_h1_client_idle(f.h1, "127.0.0.1", (uint16_t)f.srv.port), 2);

    /* Past the idle timeout the sweep closes both; the upstream's side closes in turn. */
    uint64_t t0 = uv_hrtime();
    while (
        (tg_h1_client_idle(f.h1, "127.0.0.1", (uint16_t)f.srv.port) > 0 || f.srv.conns != NULL) &&
        (uv_hrtime() - t0) / 1000000 < 5000) {
        uv_run(&f.loop, UV_RUN_ONCE);
    }
    assert_int_equal(tg_h1_client_idle(f.h1, "127.0.0.1", (uint16_t)f.srv.port), 0);
    assert_null(f.srv.conns);

    tg_h1_client_free(f.h1);
    srv_stop(&f.srv);
    drain_and_close(&f.loop);
    tg_buf_deinit(&f.srv.last_req);
}

/* A response the parser rejects is an upstream error naming the problem. */
static void
invalid_response_is_an_upstream_error(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nok", false);
    struct rec r;
    rec_init(&r, &f->loop, TAKE_ALL);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, TG_EUPSTREAM);
    assert_non_null(strstr(r.msg, "invalid response"));
    rec_deinit(&r);
}

/* A response split at every byte parses as the same response (headers and chunks cut
 * anywhere), and a paused call that completes gets on_done only after its resume. */
static void
byte_by_byte_response_parses_whole(void **state)
{
    struct fx *f = *state;
    respond_with(f,
                 "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Test: split\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                 false);
    f->srv.is_byte_by_byte = true;
    struct rec r;
    rec_init(&r, &f->loop, PAUSE_EVERY_READ);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.x_test, "split");
    assert_int_equal(r.body.len, 5);
    assert_memory_equal(r.body.data, "abcde", 5);
    assert_false(r.data_while_paused);
    rec_deinit(&r);
}

/* A response that ends in the read whose on_data paused: on_done waits for the resume. */
static void
paused_complete_response_ends_after_resume(void **state)
{
    struct fx *f = *state;
    respond_with(f, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false);
    struct rec r;
    rec_init(&r, &f->loop, PAUSE_EVERY_READ);
    start(f, &r);
    run_until(&f->loop, &r.n_done, 5000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n_pauses, 1);
    assert_int_equal(r.is_paused, 0); /* set back by the resume, before on_done */
    assert_int_equal(r.body.len, 5);
    rec_deinit(&r);
}

#define CONTRACT_TESTS                                                                             \
    cmocka_unit_test_setup_teardown(body_is_delivered_whole, setup, teardown),                     \
        cmocka_unit_test_setup_teardown(headers_and_request_are_as_asked, setup, teardown),        \
        cmocka_unit_test_setup_teardown(bad_request_headers_are_refused, setup, teardown),         \
        cmocka_unit_test_setup_teardown(sequential_calls_share_one_connection, setup, teardown),   \
        cmocka_unit_test_setup_teardown(parallel_calls_do_not_wait_for_each_other, setup,          \
                                        teardown),                                                 \
        cmocka_unit_test_setup_teardown(refused_connection_is_a_connect_error, setup, teardown),   \
        cmocka_unit_test_setup_teardown(unanswered_connect_hits_connect_timeout, setup, teardown), \
        cmocka_unit_test_setup_teardown(silent_server_hits_first_byte_timeout, setup, teardown),   \
        cmocka_unit_test_setup_teardown(stalled_body_hits_idle_timeout, setup, teardown),          \
        cmocka_unit_test_setup_teardown(endless_trickle_hits_total_timeout, setup, teardown),      \
        cmocka_unit_test_setup_teardown(truncated_chunked_body_is_an_upstream_error, setup,        \
                                        teardown),                                                 \
        cmocka_unit_test_setup_teardown(pause_and_resume_deliver_every_byte_once, setup,           \
                                        teardown),                                                 \
        cmocka_unit_test_setup_teardown(paused_call_does_not_idle_out, setup, teardown),           \
        cmocka_unit_test_setup_teardown(cancel_ends_once_and_later, setup, teardown),              \
        cmocka_unit_test_setup_teardown(cancel_from_callbacks, setup, teardown),                   \
        cmocka_unit_test_setup_teardown(free_cancels_calls_in_flight, setup, teardown),            \
        cmocka_unit_test_setup_teardown(free_inside_on_data_is_deferred, setup, teardown),         \
        cmocka_unit_test_setup_teardown(chunked_body_is_joined_and_connection_reused, setup,       \
                                        teardown),                                                 \
        cmocka_unit_test_setup_teardown(body_until_close_is_complete, setup, teardown),            \
        cmocka_unit_test_setup_teardown(connection_close_is_honoured, setup, teardown),            \
        cmocka_unit_test_setup_teardown(bodiless_responses_end_at_their_headers, setup, teardown), \
        cmocka_unit_test_setup_teardown(stale_pooled_connection_is_retried_once, setup, teardown), \
        cmocka_unit_test_setup_teardown(hangup_without_response_is_an_upstream_error, setup,       \
                                        teardown),                                                 \
        cmocka_unit_test_setup_teardown(truncated_length_body_is_an_upstream_error, setup,         \
                                        teardown),                                                 \
        cmocka_unit_test_setup_teardown(oversized_headers_are_an_upstream_error, setup, teardown), \
        cmocka_unit_test_setup_teardown(byte_by_byte_response_parses_whole, setup, teardown),      \
        cmocka_unit_test_setup_teardown(paused_complete_response_ends_after_resume, setup,         \
                                        teardown),                                                 \
        cmocka_unit_test_setup_teardown(host_names_are_resolved, setup, teardown)

int
main(void)
{
    /* The same contract, first on the native engine (the default for http://), then on
     * libcurl (what TG_UPSTREAM_CLIENT=curl selects, and what https:// always gets). */
    const struct CMUnitTest native[] = {
        CONTRACT_TESTS,
        cmocka_unit_test(urls_are_parsed),
        cmocka_unit_test(pool_keeps_connections_and_drops_closed_ones),
        cmocka_unit_test(pool_is_bounded_and_idle_connections_expire),
        cmocka_unit_test_setup_teardown(invalid_response_is_an_upstream_error, setup, teardown),
        cmocka_unit_test_setup_teardown(request_framing_is_the_engines, setup, teardown),
    };
    const struct CMUnitTest curl[] = {CONTRACT_TESTS};
    signal(SIGPIPE, SIG_IGN); /* as `tollgate serve` does: a write to a closed peer is an error */
    unsetenv("TG_UPSTREAM_CLIENT");
    int failed = cmocka_run_group_tests_name("native", native, NULL, NULL);
    setenv("TG_UPSTREAM_CLIENT", "curl", 1);
    failed += cmocka_run_group_tests_name("curl", curl, NULL, NULL);
    return failed;
}
