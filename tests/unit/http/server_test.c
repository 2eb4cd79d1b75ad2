/*
 * server_test.c: the HTTP server on a real loop, driven by a plain-socket client thread.
 *
 * Each test starts a server on 127.0.0.1 (a port the kernel just handed out), runs a short
 * client script (send, read until a string, read until the server closes, close) in a second
 * thread, and turns the loop until the client is done; a 5 s guard timer fails the test
 * instead of hanging. Nothing sleeps: the client blocks on its socket (with a receive
 * timeout as the guard) and the loop is woken by uv_async when the client finishes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "http/server.h"

#define GUARD_MS 5000
#define CHUNK_BYTES 65536

enum step_op { SEND, READ_UNTIL, READ_EOF, CLOSE_NOW, WAIT_FLAG };

struct step {
    enum step_op op;
    const char *data; /* SEND: bytes; READ_UNTIL: substring */
};

struct fixture;
typedef void (*handler_fn)(struct fixture *f, struct tg_http_req *req);

struct fixture {
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t guard;
    uv_timer_t later; /* finishes a request after the handler returned */
    struct tg_http_server *s;
    int port;
    handler_fn handler;
    bool is_guard_fired;
    bool is_closed;
    int n_handled;
    int n_aborts;
    int n_drains;
    bool saw_backpressure;
    struct tg_http_req *held; /* a request the test finishes later */
    char seen[512];           /* what the handler observed, for assertions */

    /* client thread */
    uv_thread_t thread;
    const struct step *steps;
    size_t n_steps;
    int rcvbuf;
    atomic_bool is_client_done;
    struct {
        char *data; /* static storage, so it outlives finish() without a free */
        size_t len;
    } got;
    size_t n_z; /* 'z' bytes received (stream payload) */
    bool saw_eof;
    bool saw_timeout;
    uint64_t eof_after_ms; /* time from the step before READ_EOF to the close */
    uv_mutex_t mu;
    uv_cond_t cond;
    bool flag;
};

/* ---- loop side ------------------------------------------------------------------------- */

static void
on_wake(uv_async_t *a)
{
}

static void
on_guard(uv_timer_t *t)
{
    struct fixture *f = t->data;
    f->is_guard_fired = true;
}

static void
on_request(struct tg_http_req *req, void *ctx)
{
    struct fixture *f = ctx;
    f->n_handled++;
    f->handler(f, req);
}

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void
start(struct fixture *f, const struct tg_http_limits *limits, handler_fn handler)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_async_init(&f->loop, &f->wake, on_wake);
    uv_timer_init(&f->loop, &f->guard);
    uv_timer_init(&f->loop, &f->later);
    f->guard.data = f;
    f->later.data = f;
    uv_timer_start(&f->guard, on_guard, GUARD_MS, 0);
    uv_mutex_init(&f->mu);
    uv_cond_init(&f->cond);
    static char got_storage[1 << 20];
    f->got.data = got_storage;
    got_storage[0] = '\0';
    f->handler = handler;
    f->port = free_port();
    assert_int_equal(
        tg_http_server_new(&f->loop, "127.0.0.1", f->port, limits, on_request, f, &f->s), 0);
}

/* Turns the loop until cond(f) holds; fails after the guard time. */
static void
run_until(struct fixture *f, bool (*cond)(struct fixture *f))
{
    while (!cond(f)) {
        if (f->is_guard_fired) {
            fail_msg("guard timer fired before the condition held");
        }
        uv_run(&f->loop, UV_RUN_ONCE);
    }
}

static bool
client_done(struct fixture *f)
{
    return atomic_load(&f->is_client_done);
}

static bool
server_idle(struct fixture *f)
{
    return tg_http_server_connections(f->s) == 0 && tg_http_server_requests_in_flight(f->s) == 0;
}

static bool
server_closed(struct fixture *f)
{
    return f->is_closed;
}

static void
on_closed(struct tg_http_server *s, void *arg)
{
    struct fixture *f = arg;
    f->is_closed = true;
}

static void
finish(struct fixture *f)
{
    uv_thread_join(&f->thread);
    run_until(f, server_idle);
    tg_http_server_stop(f->s);
    tg_http_server_free(f->s, on_closed, f);
    run_until(f, server_closed);
    uv_close((uv_handle_t *)&f->wake, NULL);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_close((uv_handle_t *)&f->later, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    uv_mutex_destroy(&f->mu);
    uv_cond_destroy(&f->cond);
}

static void
set_flag(struct fixture *f)
{
    uv_mutex_lock(&f->mu);
    f->flag = true;
    uv_cond_signal(&f->cond);
    uv_mutex_unlock(&f->mu);
}

/* ---- client side (its own thread, blocking sockets) ------------------------------------- */

static void
take(struct fixture *f, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        f->n_z += p[i] == 'z';
    }
    size_t room = (1 << 20) - 1 - f->got.len; /* past 1 MiB only the count matters */
    size_t keep = n < room ? n : room;
    memcpy(f->got.data + f->got.len, p, keep);
    f->got.len += keep;
    f->got.data[f->got.len] = '\0';
}

/* Reads once; returns false at EOF, error or timeout. */
static bool
read_some(struct fixture *f, int fd)
{
    char buf[CHUNK_BYTES];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
        take(f, buf, (size_t)n);
        return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        f->saw_timeout = true;
    } else {
        f->saw_eof = true;
    }
    return false;
}

static void
client_main(void *arg)
{
    struct fixture *f = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (f->rcvbuf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &f->rcvbuf, sizeof(f->rcvbuf));
    }
    struct timeval tv = {.tv_sec = GUARD_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)f->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    uint64_t mark = tg_clock_mono_ms();
    for (size_t i = 0; ok && i < f->n_steps; i++) {
        const struct step *st = &f->steps[i];
        switch (st->op) {
        case SEND:
            ok = send(fd, st->data, strlen(st->data), MSG_NOSIGNAL) == (ssize_t)strlen(st->data);
            break;
        case READ_UNTIL:
            while (ok && strstr(f->got.data, st->data) == NULL) {
                ok = read_some(f, fd);
            }
            break;
        case READ_EOF:
            while (read_some(f, fd)) {
            }
            f->eof_after_ms = tg_clock_mono_ms() - mark;
            break;
        case CLOSE_NOW:
            close(fd);
            fd = -1;
            ok = false;
            break;
        case WAIT_FLAG: {
            uv_mutex_lock(&f->mu);
            while (!f->flag) {
                if (uv_cond_timedwait(&f->cond, &f->mu, (uint64_t)GUARD_MS * 1000000) != 0) {
                    ok = false;
                    break;
                }
            }
            uv_mutex_unlock(&f->mu);
            break;
        }
        }
        mark = tg_clock_mono_ms();
    }
    if (fd >= 0) {
        close(fd);
    }
    atomic_store(&f->is_client_done, true);
    uv_async_send(&f->wake);
}

static void
run_client(struct fixture *f, const struct step *steps, size_t n)
{
    f->steps = steps;
    f->n_steps = n;
    assert_int_equal(uv_thread_create(&f->thread, client_main, f), 0);
    run_until(f, client_done);
}

static int
count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle)) {
        n++;
    }
    return n;
}

static struct tg_http_limits
small_limits(void)
{
    struct tg_http_limits l;
    tg_http_limits_default(&l);
    l.max_header_bytes = 1024;
    l.max_headers = 10;
    l.max_body_bytes = 1000;
    l.header_timeout_ms = 2000;
    l.body_timeout_ms = 2000;
    l.idle_timeout_ms = 2000;
    return l;
}

/* ---- handlers ------------------------------------------------------------------------------ */

/* Answers "<method> <path> <body>" as text. */
static void
echo(struct fixture *f, struct tg_http_req *req)
{
    char out[2048];
    int n = snprintf(out, sizeof(out), "%s %s [%.*s]", req->method_name, req->path,
                     (int)req->body.len, req->body.data ? req->body.data : "");
    struct tg_http_header h = {"x-test", "yes"};
    assert_int_equal(tg_http_respond(req, 200, "text/plain", &h, 1, out, (size_t)n), 0);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void
keep_alive_two_requests(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    const struct step steps[] = {
        {SEND, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"},
        {READ_UNTIL, "[]"},
        {SEND,
         "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 4);
    finish(&f);
    const char *g = f.got.data;
    assert_int_equal(f.n_handled, 2);
    assert_true(f.saw_eof);
    assert_int_equal(count(g, "HTTP/1.1 200 OK\r\n"), 2);
    assert_non_null(strstr(g, "GET /a []"));
    assert_non_null(strstr(g, "POST /b [hello]"));
    assert_int_equal(count(g, "\r\nx-test: yes\r\n"), 2);
    assert_int_equal(count(g, "\r\nDate: "), 2);
    assert_int_equal(count(g, "\r\nConnection: close\r\n"), 1);
    /* two distinct request ids, each "req_" + 32 hex */
    const char *id1 = strstr(g, "x-request-id: req_");
    assert_non_null(id1);
    const char *id2 = strstr(id1 + 1, "x-request-id: req_");
    assert_non_null(id2);
    assert_int_equal(strspn(id1 + 18, "0123456789abcdef"), 32);
    assert_memory_not_equal(id1 + 18, id2 + 18, 32);
    /* the first connection-close line belongs to the second answer */
    assert_true(strstr(g, "Connection: close") > id2);
}

static void
pipelined_requests_answer_in_order(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    const struct step steps[] = {
        {SEND, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 3\r\n\r\nabc\r\nGET /3 HTTP/1.1\r\nConnection: close\r\n\r\n"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 2);
    finish(&f);
    const char *g = f.got.data;
    assert_int_equal(f.n_handled, 3);
    const char *a = strstr(g, "GET /1 []");
    const char *b = strstr(g, "POST /2 [abc]");
    const char *c = strstr(g, "GET /3 []");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(a < b && b < c);
}

static void
on_answer_later(uv_timer_t *t)
{
    struct fixture *f = t->data;
    struct tg_http_req *req = f->held;
    f->held = NULL;
    echo(f, req);
}

/* Answers from a later loop turn, as the proxy does. */
static void
echo_later(struct fixture *f, struct tg_http_req *req)
{
    f->held = req;
    uv_timer_start(&f->later, on_answer_later, 1, 0);
}

static void
pipelined_requests_wait_for_async_answers(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo_later);
    const struct step steps[] = {
        {SEND, "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
               "GET /2 HTTP/1.1\r\nConnection: close\r\n\r\n"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 2);
    finish(&f);
    assert_int_equal(f.n_handled, 2);
    const char *a = strstr(f.got.data, "POST /1 [ab]");
    const char *b = strstr(f.got.data, "GET /2 []");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b);
}

static void
expect_error(struct fixture *f, int status, const char *code)
{
    char line[64];
    snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
    assert_non_null(strstr(f->got.data, line));
    assert_non_null(strstr(f->got.data, "\"type\":\"invalid_request_error\""));
    assert_non_null(strstr(f->got.data, "\"param\":null"));
    assert_non_null(strstr(f->got.data, "Connection: close\r\n"));
    assert_non_null(strstr(f->got.data, "x-request-id: req_"));
    if (code != NULL) {
        assert_non_null(strstr(f->got.data, code));
    }
    assert_true(f->saw_eof);
    assert_int_equal(f->n_handled, 0);
}

static void
oversized_headers_get_431(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    char req[4096];
    char big[2001];
    memset(big, 'a', 2000);
    big[2000] = '\0';
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: %s\r\n\r\n", big);
    const struct step steps[] = {{SEND, req}, {READ_EOF, NULL}};
    run_client(&f, steps, 2);
    finish(&f);
    expect_error(&f, 431, NULL);
}

static void
too_many_headers_get_431(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    const struct step steps[] = {
        {SEND, "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\nf: 6\r\ng: 7\r\nh: 8\r\n"
               "i: 9\r\nj: 10\r\nk: 11\r\n\r\n"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 2);
    finish(&f);
    expect_error(&f, 431, NULL);
}

static void
oversized_content_length_gets_413(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    /* answered from the headers alone: the body never comes */
    const struct step steps[] = {
        {SEND, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 2);
    finish(&f);
    expect_error(&f, 413, "request_too_large");
}

static void
oversized_chunked_body_gets_413(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    static char req[4096];
    char chunk[601];
    memset(chunk, 'q', 600);
    chunk[600] = '\0';
    snprintf(req, sizeof(req),
             "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             "258\r\n%s\r\n258\r\n%s\r\n0\r\n\r\n",
             chunk, chunk);
    const struct step steps[] = {{SEND, req}, {READ_EOF, NULL}};
    run_client(&f, steps, 2);
    finish(&f);
    expect_error(&f, 413, "request_too_large");
}

static void
chunked_body_under_the_cap_is_assembled(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    const struct step steps[] = {
        {SEND, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close"
               "\r\n\r\n3\r\nabc\r\n"},
        {SEND, "4\r\ndefg\r\n0\r\n\r\n"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 3);
    finish(&f);
    assert_non_null(strstr(f.got.data, "POST /c [abcdefg]"));
}

static void
garbage_gets_400(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    const struct step steps[] = {{SEND, "\x01\x02 what is this\r\n\r\n"}, {READ_EOF, NULL}};
    run_client(&f, steps, 2);
    finish(&f);
    expect_error(&f, 400, NULL);
}

static void
unsupported_version_gets_505(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    const struct step steps[] = {{SEND, "GET / HTTP/2.0\r\nHost: x\r\n\r\n"}, {READ_EOF, NULL}};
    run_client(&f, steps, 2);
    finish(&f);
    expect_error(&f, 505, NULL);
}

static void
slow_headers_get_408(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    l.header_timeout_ms = 100;
    start(&f, &l, echo);
    const struct step steps[] = {{SEND, "GET / HTTP/1.1\r\nHost: x\r\nX-Half"}, {READ_EOF, NULL}};
    run_client(&f, steps, 2);
    finish(&f);
    expect_error(&f, 408, "request_timeout");
    assert_true(f.eof_after_ms >= 80);
    assert_true(f.eof_after_ms < 2000);
}

static void
slow_body_gets_408(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    l.body_timeout_ms = 100;
    start(&f, &l, echo);
    const struct step steps[] = {
        {SEND, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 2);
    finish(&f);
    expect_error(&f, 408, "request_timeout");
}

static void
idle_keep_alive_is_closed(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    l.idle_timeout_ms = 100;
    start(&f, &l, echo);
    const struct step steps[] = {
        {SEND, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"},
        {READ_UNTIL, "GET /idle []"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 3);
    finish(&f);
    assert_true(f.saw_eof);
    assert_false(f.saw_timeout);
    assert_null(strstr(f.got.data, "Connection: close"));
    assert_true(f.eof_after_ms >= 80);
    assert_true(f.eof_after_ms < 2000);
}

static void
expect_100_continue(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    const struct step steps[] = {
        {SEND, "POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
               "Connection: close\r\n\r\n"},
        {READ_UNTIL, "HTTP/1.1 100 Continue\r\n\r\n"},
        {SEND, "hi"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 4);
    finish(&f);
    assert_non_null(strstr(f.got.data, "POST /e [hi]"));
}

/* Streams "hello", "world" and ends. */
static void
stream_two(struct fixture *f, struct tg_http_req *req)
{
    assert_int_equal(tg_http_stream_begin(req, 200, "text/event-stream", NULL, 0), 0);
    assert_int_equal(tg_http_stream_write(req, "hello", 5), 0);
    assert_int_equal(tg_http_stream_write(req, "", 0), 0); /* no accidental last chunk */
    assert_int_equal(tg_http_stream_write(req, "world!", 6), 0);
    assert_int_equal(tg_http_stream_end(req), 0);
}

static void
streaming_uses_chunked_framing(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, stream_two);
    const struct step steps[] = {
        {SEND, "GET /s HTTP/1.1\r\nHost: x\r\n\r\n"},
        {READ_UNTIL, "0\r\n\r\n"},
        {SEND, "GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 4);
    finish(&f);
    const char *g = f.got.data;
    assert_int_equal(count(g, "Transfer-Encoding: chunked\r\n"), 2);
    assert_int_equal(count(g, "\r\n\r\n5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n"), 2);
    assert_null(strstr(g, "Content-Length"));
}

/* Writes 64 KiB chunks until back-pressure, then finishes from the drain callback. */
static void
on_drain(struct tg_http_req *req, void *arg)
{
    struct fixture *f = arg;
    f->n_drains++;
    assert_true(tg_http_req_pending_bytes(req) <= 4096);
    assert_int_equal(tg_http_stream_end(req), 0);
}

static void
stream_until_full(struct fixture *f, struct tg_http_req *req)
{
    static char chunk[CHUNK_BYTES];
    memset(chunk, 'z', sizeof(chunk));
    tg_http_req_on_drain(req, on_drain, f);
    assert_int_equal(tg_http_stream_begin(req, 200, "text/plain", NULL, 0), 0);
    int n = 0;
    int rc = 0;
    while (rc == 0 && n < 4096) {
        rc = tg_http_stream_write(req, chunk, sizeof(chunk));
        n++;
    }
    assert_int_equal(rc, 1);
    assert_true(tg_http_req_pending_bytes(req) > 8192);
    f->saw_backpressure = true;
    snprintf(f->seen, sizeof(f->seen), "%d", n);
    set_flag(f); /* now the client may read */
}

static void
backpressure_and_drain(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    l.write_high_bytes = 8192;
    start(&f, &l, stream_until_full);
    f.rcvbuf = 4096;
    const struct step steps[] = {
        {SEND, "GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
        {WAIT_FLAG, NULL},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 3);
    finish(&f);
    assert_true(f.saw_backpressure);
    assert_int_equal(f.n_drains, 1);
    assert_int_equal(f.n_z, (size_t)atoi(f.seen) * CHUNK_BYTES);
    assert_false(f.saw_timeout);
}

/* Streams one chunk and keeps the request; the abort callback finishes it a turn later. */
static void
on_later(uv_timer_t *t)
{
    struct fixture *f = t->data;
    struct tg_http_req *req = f->held;
    f->held = NULL;
    assert_true(tg_http_req_is_aborted(req));
    assert_int_equal(tg_http_stream_write(req, "late", 4), TG_ECLOSED);
    assert_int_equal(tg_http_stream_end(req), TG_ECLOSED);
}

static void
on_abort(struct tg_http_req *req, void *arg)
{
    struct fixture *f = arg;
    f->n_aborts++;
    assert_true(tg_http_req_is_aborted(req));
    /* the request must stay valid after the callback: finish it from a later turn */
    assert_string_equal(req->path, "/abort");
    uv_timer_start(&f->later, on_later, 0, 0);
}

static void
stream_and_hold(struct fixture *f, struct tg_http_req *req)
{
    tg_http_req_on_abort(req, on_abort, f);
    f->held = req;
    assert_int_equal(tg_http_stream_begin(req, 200, "text/event-stream", NULL, 0), 0);
    assert_int_equal(tg_http_stream_write(req, "data: 1\n\n", 9), 0);
}

static bool
aborted_and_finished(struct fixture *f)
{
    return f->n_aborts == 1 && f->held == NULL;
}

static void
abort_when_client_leaves_mid_stream(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, stream_and_hold);
    const struct step steps[] = {
        {SEND, "GET /abort HTTP/1.1\r\nHost: x\r\n\r\n"},
        {READ_UNTIL, "data: 1\n\n"},
        {CLOSE_NOW, NULL},
    };
    run_client(&f, steps, 3);
    run_until(&f, aborted_and_finished);
    finish(&f);
    assert_int_equal(f.n_handled, 1);
    assert_int_equal(f.n_aborts, 1);
}

/* Writes the second event from a timer: the loop must not block on its cork. */
static void
on_write_later(uv_timer_t *t)
{
    struct fixture *f = t->data;
    assert_int_equal(tg_http_stream_write(f->held, "data: 2\n\n", 9), 0);
}

static void
stream_then_write_from_timer(struct fixture *f, struct tg_http_req *req)
{
    stream_and_hold(f, req);
    uv_timer_start(&f->later, on_write_later, 0, 0);
}

/* Streamed output is corked within a loop turn; a write made by a timer (before the loop
 * blocks in poll) and one made by the handler (an I/O callback) both reach the client while
 * the response is still open, without waiting for more events. */
static void
stream_writes_are_not_held_back(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, stream_then_write_from_timer);
    const struct step steps[] = {
        {SEND, "GET /abort HTTP/1.1\r\nHost: x\r\n\r\n"},
        {READ_UNTIL, "data: 1\n\n\r\n9\r\ndata: 2\n\n"},
        {CLOSE_NOW, NULL},
    };
    run_client(&f, steps, 3);
    run_until(&f, aborted_and_finished);
    finish(&f);
    assert_int_equal(count(f.got.data, "HTTP/1.1 200"), 1);
}

static void
query_handler(struct fixture *f, struct tg_http_req *req)
{
    const char *all[8];
    size_t n = tg_http_req_query_all(req, "m", all, 8);
    const char *missing = tg_http_req_query(req, "nope");
    snprintf(f->seen, sizeof(f->seen),
             "path=%s|a=%s|b=%s|empty=%s|flag=%s|pct=%s|n=%zu|%s,%s,%s|%s", req->path,
             tg_http_req_query(req, "a"), tg_http_req_query(req, "b"),
             tg_http_req_query(req, "empty"), tg_http_req_query(req, "flag"),
             tg_http_req_query(req, "pct"), n, all[0], all[1], all[2],
             missing == NULL ? "null" : missing);
    assert_string_equal(tg_http_req_header(req, "X-MiXed"), "Case");
    assert_null(tg_http_req_header(req, "absent"));
    assert_string_equal(req->remote_addr, "127.0.0.1");
    tg_http_respond(req, 204, NULL, NULL, 0, NULL, 0);
}

static void
query_parsing_with_percent_decoding(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, query_handler);
    const struct step steps[] = {
        {SEND, "GET /v1/x?a=hello%20world&b=1+2&m=1&m[]=2&m%5B%5D=3&empty=&flag&pct=%zz%4"
               " HTTP/1.1\r\nHost: x\r\nx-mixed: Case\r\nConnection: close\r\n\r\n"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 2);
    finish(&f);
    assert_string_equal(f.seen,
                        "path=/v1/x|a=hello world|b=1 2|empty=|flag=|pct=%zz%4|n=3|1,2,3|null");
    assert_non_null(strstr(f.got.data, "HTTP/1.1 204 No Content\r\n"));
}

static void
on_stop_later(uv_timer_t *t)
{
    struct fixture *f = t->data;
    tg_http_server_stop(f->s);
    if (f->held != NULL) {
        struct tg_http_req *req = f->held;
        f->held = NULL;
        tg_http_respond(req, 200, "text/plain", NULL, 0, "held", 4);
    }
}

/* Answers, then stops the server from a later turn: the idle connection must close now. */
static void
answer_then_stop(struct fixture *f, struct tg_http_req *req)
{
    tg_http_respond(req, 200, "text/plain", NULL, 0, "ok", 2);
    uv_timer_start(&f->later, on_stop_later, 0, 0);
}

static void
stop_closes_idle_connections(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, answer_then_stop);
    const struct step steps[] = {
        {SEND, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
        {READ_UNTIL, "\r\n\r\nok"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 3);
    finish(&f);
    assert_true(f.saw_eof);
    assert_true(f.eof_after_ms < 1000); /* well before the 2 s idle timeout */
    assert_null(strstr(f.got.data, "Connection: close"));
}

/* Holds the request and stops the server; the answer then carries Connection: close. */
static void
hold_then_stop(struct fixture *f, struct tg_http_req *req)
{
    f->held = req;
    uv_timer_start(&f->later, on_stop_later, 0, 0);
}

static void
stop_lets_busy_request_finish(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, hold_then_stop);
    const struct step steps[] = {
        {SEND, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n"},
        {READ_EOF, NULL},
    };
    run_client(&f, steps, 2);
    finish(&f);
    assert_int_equal(f.n_handled, 1); /* the pipelined second request is not started */
    assert_non_null(strstr(f.got.data, "Connection: close\r\n\r\nheld"));
}

static void
connections_beyond_the_limit_are_closed(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    l.max_connections = 1;
    start(&f, &l, echo);
    int first = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)f.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(first, (struct sockaddr *)&sa, sizeof(sa)), 0);
    while (tg_http_server_connections(f.s) < 1) {
        assert_false(f.is_guard_fired);
        uv_run(&f.loop, UV_RUN_ONCE);
    }
    const struct step steps[] = {{SEND, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, {READ_EOF, NULL}};
    run_client(&f, steps, 2);
    close(first);
    finish(&f);
    assert_true(f.saw_eof);
    assert_int_equal(f.got.len, 0);
    assert_int_equal(f.n_handled, 0);
}

static void
http10_gets_connection_close_by_default(void **state)
{
    struct fixture f;
    struct tg_http_limits l = small_limits();
    start(&f, &l, echo);
    const struct step steps[] = {{SEND, "GET /old HTTP/1.0\r\n\r\n"}, {READ_EOF, NULL}};
    run_client(&f, steps, 2);
    finish(&f);
    assert_non_null(strstr(f.got.data, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(f.got.data, "Connection: close\r\n"));
    assert_non_null(strstr(f.got.data, "GET /old []"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keep_alive_two_requests),
        cmocka_unit_test(pipelined_requests_answer_in_order),
        cmocka_unit_test(pipelined_requests_wait_for_async_answers),
        cmocka_unit_test(oversized_headers_get_431),
        cmocka_unit_test(too_many_headers_get_431),
        cmocka_unit_test(oversized_content_length_gets_413),
        cmocka_unit_test(oversized_chunked_body_gets_413),
        cmocka_unit_test(chunked_body_under_the_cap_is_assembled),
        cmocka_unit_test(garbage_gets_400),
        cmocka_unit_test(unsupported_version_gets_505),
        cmocka_unit_test(slow_headers_get_408),
        cmocka_unit_test(slow_body_gets_408),
        cmocka_unit_test(idle_keep_alive_is_closed),
        cmocka_unit_test(expect_100_continue),
        cmocka_unit_test(streaming_uses_chunked_framing),
        cmocka_unit_test(backpressure_and_drain),
        cmocka_unit_test(abort_when_client_leaves_mid_stream),
        cmocka_unit_test(stream_writes_are_not_held_back),
        cmocka_unit_test(query_parsing_with_percent_decoding),
        cmocka_unit_test(stop_closes_idle_connections),
        cmocka_unit_test(stop_lets_busy_request_finish),
        cmocka_unit_test(connections_beyond_the_limit_are_closed),
        cmocka_unit_test(http10_gets_connection_close_by_default),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
