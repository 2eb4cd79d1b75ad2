/*
 * client.c: the upstream HTTP client (see client.h). Plain http:// calls go to the native
 * HTTP/1.1 engine (h1.c: uv_tcp on this loop, far fewer system calls and no library layer per
 * request); https:// calls, and every call when the environment variable
 * TG_UPSTREAM_CLIENT=curl is set at start (to compare the two, or to rule the native engine out
 * when chasing a problem), go to libcurl. Both hand out struct tg_upstream_call pointers whose
 * first member is the struct tg_call_base of call_int.h: the call machinery both share (lists,
 * free-call pool, deadlines, header collection, cancel and resume) is in call_common.c.
 *
 * The libcurl side: one libcurl multi handle per worker loop,
 * driven with curl_multi_socket_action from uv_poll (one per socket curl asks us to watch) and
 * one uv_timer (curl's own timeout), after curl's multi-uv.c example.
 *
 * What the client owns: the multi handle (and so the connection cache, which gives keep-alive
 * reuse and HTTP/2 multiplexing per host), the poll handles, and its struct tg_call_set: the
 * active calls and a pool of finished ones kept for reuse (each with its easy handle, its timer
 * and its header storage, so a busy worker does not allocate per call).
 *
 * Timeouts: connect is curl's (CURLOPT_CONNECTTIMEOUT_MS), so this set keeps no connect
 * deadline. First byte, idle and total are ours, on the call's timer (call_common.c).
 *
 * Back-pressure: when on_data returns TG_EAGAIN it has taken the bytes, so the write callback
 * returns their full length and pauses receiving with curl_easy_pause(CURLPAUSE_RECV); curl
 * then holds whatever it had already read (one buffer) and delivers it on resume. Resume and
 * cancel are recorded and applied from a uv_idle callback, outside every curl callback and
 * never inside the API call that asked for them.
 *
 * Invariants: a call is in exactly one of the active list (started, no on_done yet) or the
 * pool; on_done fires once per started call, from a loop callback or from
 * tg_upstream_client_free, and never while curl is inside one of its callbacks (curl forbids
 * removing a handle there). A zero timeout in a request takes its default.
 *
 * tg_upstream_client_free fires the remaining on_done callbacks (TG_ECANCELED) before it
 * returns, so the caller may free what they point at right after; called from inside
 * on_headers/on_data it cannot tear curl down there, so it does all of that on the next turn.
 */
#include "upstream/client.h"

#include <assert.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "upstream/call_int.h"
#include "upstream/h1.h"

struct sock {
    struct sock *next;
    struct sock *prev;
    struct tg_upstream_client *client;
    uv_poll_t poll;
    curl_socket_t fd;
    int events; /* what the poll watches now (UV_READABLE | UV_WRITABLE), 0 = stopped */
};

struct tg_upstream_call {
    struct tg_call_base base; /* first: the pointer handed out converts to it */
    struct tg_upstream_client *client;
    CURL *easy;
    struct curl_slist *req_headers;
    char errbuf[CURL_ERROR_SIZE];
};

_Static_assert(TG_CALL_MSG_BYTES >= CURL_ERROR_SIZE + 64, "room for curl's message and ours");

struct tg_upstream_client {
    struct tg_call_set calls; /* first: the set's on_closed frees the client */
    struct tg_h1_client *h1;  /* plain http://; NULL when libcurl takes every call */
    CURLM *multi;
    uv_timer_t timer; /* curl's timeout */
    struct sock *socks;
    struct sock **by_fd; /* the watched socket of each descriptor curl has open */
    size_t by_fd_cap;
    bool is_free_requested;
    struct tg_buf scratch; /* formats request header lines */
};

static void check_info(struct tg_upstream_client *c);
static void client_teardown(struct tg_upstream_client *c);

/* ---- handle bookkeeping -------------------------------------------------------------- */

/* The set's last handle closed: the client goes too. */
static void
on_calls_closed(struct tg_call_set *set)
{
    struct tg_upstream_client *c = (struct tg_upstream_client *)set;
    tg_buf_deinit(&c->scratch);
    free(c);
}

static void
on_client_handle_closed(uv_handle_t *h)
{
    struct tg_upstream_client *c = h->data;
    tg_call_set_handle_closed(&c->calls);
}

static void
on_sock_closed(uv_handle_t *h)
{
    struct sock *s = h->data;
    struct tg_upstream_client *c = s->client;
    free(s);
    tg_call_set_handle_closed(&c->calls);
}

static void
sock_close(struct sock *s)
{
    struct tg_upstream_client *c = s->client;
    if (s->fd >= 0 && (size_t)s->fd < c->by_fd_cap && c->by_fd[s->fd] == s) {
        c->by_fd[s->fd] = NULL;
    }
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        c->socks = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* ---- curl's socket and timer callbacks ----------------------------------------------- */

static void
on_poll(uv_poll_t *p, int status, int events)
{
    struct sock *s = p->data;
    struct tg_upstream_client *c = s->client;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        flags |= (events & UV_READABLE) ? CURL_CSELECT_IN : 0;
        flags |= (events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0;
    }
    int running = 0;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    check_info(c);
}

/*
 * A socket's poll handle outlives curl's interest in it: curl stops watching a kept-alive
 * connection after every transfer (CURL_POLL_REMOVE) and watches it again on reuse, and a new
 * uv_poll each time costs three system calls (libuv probes the descriptor with epoll_ctl ADD
 * and DEL, and sets it non-blocking). So REMOVE only stops the poll, and the handle is found
 * again by descriptor. It is closed when curl closes the socket through on_close_socket; curl
 * also closes some sockets (failed connects) without it, which leaves a stopped handle behind
 * for that descriptor number: harmless, and reused if curl opens a socket with that number.
 */
static int
on_close_socket(void *clientp, curl_socket_t fd)
{
    struct tg_upstream_client *c = clientp;
    if (fd >= 0 && (size_t)fd < c->by_fd_cap && c->by_fd[fd] != NULL) {
        sock_close(c->by_fd[fd]); /* libuv drops the descriptor from epoll before close */
    }
    return close(fd);
}

static void
remember_sock(struct tg_upstream_client *c, struct sock *s)
{
    if ((size_t)s->fd >= c->by_fd_cap) {
        size_t cap = c->by_fd_cap ? c->by_fd_cap : 64;
        while (cap <= (size_t)s->fd) {
            cap *= 2;
        }
        c->by_fd = tg_xrealloc(c->by_fd, cap * sizeof(*c->by_fd));
        memset(c->by_fd + c->by_fd_cap, 0, (cap - c->by_fd_cap) * sizeof(*c->by_fd));
        c->by_fd_cap = cap;
    }
    c->by_fd[s->fd] = s;
}

static int
on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct tg_upstream_client *c = userp;
    struct sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            curl_multi_assign(c->multi, fd, NULL);
            uv_poll_stop(&s->poll);
            s->events = 0;
        }
        return 0;
    }
    if (s == NULL && fd >= 0 && (size_t)fd < c->by_fd_cap && c->by_fd[fd] != NULL) {
        s = c->by_fd[fd];
        curl_multi_assign(c->multi, fd, s);
    }
    if (s == NULL) {
        s = tg_xcalloc(1, sizeof(*s));
        s->client = c;
        s->fd = fd;
        int rc = uv_poll_init_socket(c->calls.loop, &s->poll, fd);
        if (rc < 0) {
            tg_log_error("upstream: cannot watch socket %d: %s", (int)fd, uv_strerror(rc));
            free(s);
            return -1;
        }
        s->poll.data = s;
        c->calls.n_open++;
        s->next = c->socks;
        s->prev = NULL;
        if (s->next != NULL) {
            s->next->prev = s;
        }
        c->socks = s;
        remember_sock(c, s);
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    events |= (what & CURL_POLL_IN) ? UV_READABLE : 0;
    events |= (what & CURL_POLL_OUT) ? UV_WRITABLE : 0;
    if (events != s->events) {
        uv_poll_start(&s->poll, events, on_poll);
        s->events = events;
    }
    return 0;
}

static void
on_curl_timer_fired(uv_timer_t *t)
{
    struct tg_upstream_client *c = t->data;
    int running = 0;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_info(c);
}

/* curl asks for a timeout; a zero one runs on the next loop turn, never from here (curl
 * forbids calling socket_action inside this callback). */
static int
on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct tg_upstream_client *c = userp;
    if (timeout_ms < 0) {
        uv_timer_stop(&c->timer);
    } else {
        uv_timer_start(&c->timer, on_curl_timer_fired, (uint64_t)timeout_ms, 0);
    }
    return 0;
}

/* ---- call lifecycle ------------------------------------------------------------------- */

static void
call_destroy(struct tg_upstream_call *call)
{
    curl_easy_cleanup(call->easy);
    tg_call_destroy(&call->base);
}

/* Keeps a finished call (easy handle, timer, header storage) for the next start. */
static void
call_recycle(struct tg_upstream_call *call)
{
    curl_slist_free_all(call->req_headers);
    call->req_headers = NULL;
    if (!tg_call_pool_put(&call->base)) {
        call_destroy(call);
    }
}

/* Ends a call: the one place on_done fires. Must not run inside a curl callback. */
static void
finish(struct tg_upstream_call *call, int err, const char *msg)
{
    if (!tg_call_end(&call->base)) {
        return;
    }
    curl_multi_remove_handle(call->client->multi, call->easy);
    tg_call_report(&call->base, err, msg);
    call_recycle(call);
}

static bool
is_connect_error(CURLcode res)
{
    switch (res) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
        return true;
    default:
        return false;
    }
}

/* Turns curl's verdict on a transfer into our code and message (in call->base.msg). */
static int
map_result(struct tg_upstream_call *call, CURLcode res)
{
    const char *detail = call->errbuf[0] != '\0' ? call->errbuf : curl_easy_strerror(res);
    if (res == CURLE_OK) {
        call->base.msg[0] = '\0';
        return 0;
    }
    if (call->base.err != 0) {
        return call->base.err; /* we failed it from a callback; msg is already set */
    }
    if (res == CURLE_OPERATION_TIMEDOUT) {
        if (call->base.phase == TG_CALL_CONNECTING) {
            snprintf(call->base.msg, sizeof(call->base.msg), "timed out connecting after %llu ms",
                     (unsigned long long)call->base.t.connect_ms);
        } else {
            snprintf(call->base.msg, sizeof(call->base.msg), "timed out: %s", detail);
        }
        return TG_ETIMEOUT;
    }
    if (is_connect_error(res)) {
        snprintf(call->base.msg, sizeof(call->base.msg), "could not connect: %s", detail);
        return TG_ECONNECT;
    }
    snprintf(call->base.msg, sizeof(call->base.msg), "upstream transfer failed: %s", detail);
    return TG_EUPSTREAM;
}

static void
check_info(struct tg_upstream_client *c)
{
    CURLMsg *m;
    int pending = 0;
    /* on_done may free the client (it stays allocated until its handles close, but the multi
     * is gone), so the loop re-checks before every read. */
    while (!c->calls.is_closing && (m = curl_multi_info_read(c->multi, &pending)) != NULL) {
        if (m->msg != CURLMSG_DONE) {
            continue;
        }
        struct tg_upstream_call *call = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        CURLcode res = m->data.result;
        if (call->base.is_cancel_pending) {
            finish(call, TG_ECANCELED, "canceled");
            continue;
        }
        int err = map_result(call, res);
        finish(call, err, call->base.msg);
    }
}

/* ---- per-call deadlines ------------------------------------------------------------------ */

static void on_call_timer(uv_timer_t *t);

static void
arm_timer(struct tg_upstream_call *call)
{
    tg_call_arm(&call->base, on_call_timer);
}

/* First byte, idle and total; connect is curl's (the set keeps no connect deadline). */
static void
on_call_timer(uv_timer_t *t)
{
    struct tg_upstream_call *call = t->data;
    if (!tg_call_is_timed_out(&call->base)) {
        arm_timer(call); /* woke early: data came, or the call was paused */
        return;
    }
    finish(call, TG_ETIMEOUT, call->base.msg);
}

/* Any response byte (header or body): the first one moves the call to the idle deadline. */
static void
note_read(struct tg_upstream_call *call)
{
    call->base.last_read_ms = uv_now(call->client->calls.loop);
    if (call->base.phase != TG_CALL_RECEIVING) {
        call->base.phase = TG_CALL_RECEIVING;
        arm_timer(call);
    }
}

/* ---- curl's per-transfer callbacks ----------------------------------------------------- */

static int
on_prereq(void *userp, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
          int conn_local_port)
{
    struct tg_upstream_call *call = userp;
    /* Connected (or reusing a connection): the request goes out now. A retry on a fresh
     * connection after a dead reused one comes back here and restarts the wait. */
    call->base.phase = TG_CALL_SENT;
    call->base.sent_ms = uv_now(call->client->calls.loop);
    arm_timer(call);
    return CURL_PREREQFUNC_OK;
}

static void
headers_add(struct tg_upstream_call *call, const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon == line) {
        return; /* not a field (an obsolete folded line, or junk): skip it */
    }
    size_t name_len = (size_t)(colon - line);
    const char *v = colon + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }
    if (tg_call_header_room(&call->base) < 0) {
        return;
    }
    struct tg_buf *b = &call->base.hdr_bytes;
    size_t name_off = b->len;
    if (tg_buf_append(b, line, name_len) < 0 || tg_buf_append(b, "", 1) < 0) {
        goto too_big;
    }
    size_t value_off = b->len;
    if (tg_buf_append(b, v, (size_t)(end - v)) < 0 || tg_buf_append(b, "", 1) < 0) {
        goto too_big;
    }
    call->base.hdr_offs[call->base.n_hdrs].name = name_off;
    call->base.hdr_offs[call->base.n_hdrs].value = value_off;
    call->base.n_hdrs++;
    return;
too_big:
    tg_call_fail(&call->base, TG_EUPSTREAM, TG_CALL_HEADERS_TOO_LARGE);
}

/* End of one response's header block: a final status goes to on_headers, a 1xx is dropped. */
static void
headers_complete(struct tg_upstream_call *call)
{
    long status = 0;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 100 && status < 200) {
        tg_call_headers_reset(&call->base);
        return;
    }
    tg_call_headers_deliver(&call->base, (int)status);
}

static size_t
on_header_line(char *line, size_t size, size_t n, void *userp)
{
    struct tg_upstream_call *call = userp;
    size_t len = size * n;
    if (call->base.err != 0 || call->base.is_cancel_pending) {
        return 0; /* fails the transfer; check_info reports why */
    }
    note_read(call);
    if (call->base.has_headers) {
        return len; /* trailers after a chunked body: not part of the contract */
    }
    size_t l = len;
    while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r')) {
        l--;
    }
    if (l == 0) {
        headers_complete(call);
    } else if (l >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        tg_call_headers_reset(&call->base); /* a status line starts a new response (after a 1xx) */
    } else {
        headers_add(call, line, l);
    }
    return call->base.err != 0 || call->base.is_cancel_pending ? 0 : len;
}

static size_t
on_body(char *data, size_t size, size_t n, void *userp)
{
    struct tg_upstream_call *call = userp;
    size_t len = size * n;
    if (call->base.err != 0 || call->base.is_cancel_pending) {
        return 0;
    }
    if (call->base.is_paused) {
        /* curl had more of one read to hand over after we paused: it keeps these bytes and
         * delivers them again on resume, so nothing is taken twice. */
        return CURL_WRITEFUNC_PAUSE;
    }
    note_read(call);
    int rc = tg_call_deliver(&call->base, data, len);
    if (call->base.is_cancel_pending) {
        return 0;
    }
    if (rc == TG_EAGAIN) {
        if (call->base.is_resume_pending) {
            call->base.is_resume_pending = false; /* resumed before it even paused */
            return len;
        }
        call->base.is_paused = true;
        curl_easy_pause(call->easy, CURLPAUSE_RECV);
        return len;
    }
    if (rc < 0) {
        tg_call_fail(&call->base, TG_ECANCELED, "canceled by the consumer");
        return 0;
    }
    return len;
}

/* ---- deferred cancel and resume ---------------------------------------------------------- */

static void
apply_resume(struct tg_upstream_call *call)
{
    if (!tg_call_unpause(&call->base)) {
        return;
    }
    call->base.last_read_ms = uv_now(call->client->calls.loop); /* the idle clock restarts now */
    arm_timer(call);
    /* Unpausing hands over the bytes curl held, through on_body, right here. */
    CURLcode res = curl_easy_pause(call->easy, CURLPAUSE_CONT);
    if (call->base.is_done) {
        return;
    }
    if (call->base.is_cancel_pending) {
        finish(call, TG_ECANCELED, "canceled");
    } else if (call->base.err != 0) {
        finish(call, call->base.err, call->base.msg);
    } else if (res != CURLE_OK) {
        finish(call, map_result(call, res), call->base.msg);
    }
}

static void
on_defer(uv_idle_t *idle)
{
    struct tg_upstream_client *c = (struct tg_upstream_client *)idle->data; /* its set */
    if (c->is_free_requested) {
        client_teardown(c);
        return;
    }
    struct tg_upstream_call *call;
    while (!c->calls.is_closing &&
           (call = (struct tg_upstream_call *)tg_call_deferred_pop(&c->calls)) != NULL) {
        if (call->base.is_cancel_pending) {
            finish(call, TG_ECANCELED, "canceled");
        } else if (call->base.is_resume_pending) {
            apply_resume(call);
        }
    }
    if (c->calls.is_closing) {
        return;
    }
    uv_idle_stop(&c->calls.defer);
    /* Resuming may have completed transfers whose results wait in the multi. */
    int running = 0;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_info(c);
}

/* ---- public API ---------------------------------------------------------------------------- */

int
tg_upstream_client_new(uv_loop_t *loop, struct tg_upstream_client **out)
{
    *out = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return TG_EIO;
    }
    struct tg_upstream_client *c = tg_xcalloc(1, sizeof(*c));
    c->multi = curl_multi_init();
    if (c->multi == NULL) {
        free(c);
        curl_global_cleanup();
        return TG_ENOMEM;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L); /* unlimited */
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* Keep every idle upstream connection: curl's default cache (4 x the transfers in
     * progress at that moment) closes connections whenever concurrency dips, and each one is
     * then paid again as a new TCP (and TLS) handshake. */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 4096L);
    tg_call_set_init(&c->calls, loop, on_defer, on_calls_closed);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->calls.n_open++;
    tg_buf_init(&c->scratch, 0);
    const char *engine = getenv("TG_UPSTREAM_CLIENT");
    if (engine == NULL || strcmp(engine, "curl") != 0) {
        int rc = tg_h1_client_new(loop, &c->h1);
        if (rc < 0) {
            c->h1 = NULL;
            tg_log_error("upstream: native HTTP/1.1 client unavailable (%s); using libcurl",
                         tg_strerror(rc));
        }
    }
    *out = c;
    return 0;
}

static void
client_teardown(struct tg_upstream_client *c)
{
    c->is_free_requested = false;
    c->calls.is_closing = true;
    tg_h1_client_free(c->h1); /* fires its calls' on_done; frees itself once its handles close */
    c->h1 = NULL;
    while (c->calls.active != NULL) {
        struct tg_upstream_call *call = (struct tg_upstream_call *)c->calls.active;
        call->base.is_cancel_pending = true;
        finish(call, TG_ECANCELED, "canceled: the upstream client is closing");
    }
    struct tg_call_base *pooled;
    while ((pooled = tg_call_pool_take(&c->calls)) != NULL) {
        call_destroy((struct tg_upstream_call *)pooled);
    }
    /* Closing the cached connections may still call on_curl_socket(REMOVE); the polls it
     * does not mention are closed below. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->socks != NULL) {
        sock_close(c->socks);
    }
    free(c->by_fd);
    c->by_fd = NULL;
    c->by_fd_cap = 0;
    uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
    tg_call_set_close(&c->calls);
    curl_global_cleanup();
}

void
tg_upstream_client_free(struct tg_upstream_client *c)
{
    if (c == NULL || c->calls.is_closing || c->is_free_requested) {
        return;
    }
    if (c->calls.cb_depth > 0 || tg_h1_client_is_in_callback(c->h1)) {
        /* Inside on_headers/on_data curl (and the native engine, whose caller still holds its
         * call) may not be torn down; do it on the next turn. */
        c->is_free_requested = true;
        uv_idle_start(&c->calls.defer, on_defer);
        return;
    }
    client_teardown(c);
}

size_t
tg_upstream_client_active(const struct tg_upstream_client *c)
{
    return c->calls.n_active + tg_h1_client_active(c->h1);
}

static struct tg_upstream_call *
call_acquire(struct tg_upstream_client *c)
{
    struct tg_upstream_call *call = (struct tg_upstream_call *)tg_call_pool_take(&c->calls);
    if (call != NULL) {
        curl_easy_reset(call->easy);
    } else {
        CURL *easy = curl_easy_init();
        if (easy == NULL) {
            return NULL;
        }
        call = tg_xcalloc(1, sizeof(*call));
        tg_call_init(&c->calls, &call->base);
        call->client = c;
        call->easy = easy;
    }
    tg_call_reset(&call->base);
    call->errbuf[0] = '\0';
    return call;
}

static bool
has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* Builds the request header list; "Expect:" stops curl's 100-continue wait on large bodies. */
static int
build_headers(struct tg_upstream_client *c, struct tg_upstream_call *call,
              const struct tg_upstream_request *req)
{
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct tg_upstream_header *h = &req->headers[i];
        const char *v = h->value != NULL ? h->value : "";
        if (h->name == NULL || h->name[0] == '\0' || strpbrk(h->name, ":\r\n") != NULL ||
            has_crlf(v)) {
            curl_slist_free_all(list);
            return TG_EINVAL;
        }
        tg_buf_reset(&c->scratch);
        /* "name;" is curl's way to send a header with an empty value. */
        tg_buf_appendf(&c->scratch, v[0] != '\0' ? "%s: %s" : "%s;", h->name, v);
        struct curl_slist *next = curl_slist_append(list, c->scratch.data);
        if (next == NULL) {
            curl_slist_free_all(list);
            return TG_ENOMEM;
        }
        list = next;
    }
    struct curl_slist *next = curl_slist_append(list, "Expect:");
    if (next == NULL) {
        curl_slist_free_all(list);
        return TG_ENOMEM;
    }
    call->req_headers = next;
    return 0;
}

static void
set_method(CURL *e, const struct tg_upstream_request *req)
{
    const char *m = req->method != NULL ? req->method : "GET";
    bool has_body = req->body != NULL || req->body_len > 0;
    if (strcmp(m, "GET") == 0 && !has_body) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        return;
    }
    if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        return;
    }
    if (strcmp(m, "POST") == 0 || has_body) {
        /* Borrowed: the request says the body outlives the call. */
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (strcmp(m, "POST") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }
}

static void
set_options(struct tg_upstream_call *call, const struct tg_upstream_request *req)
{
    CURL *e = call->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    set_method(e, req);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->req_headers);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* Over TLS, ALPN tells at connect time whether the connection multiplexes, so waiting
     * for it beats opening another one. Over plain http curl would only learn that from the
     * first response, so every call behind a slow one would wait: no PIPEWAIT there. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncasecmp(req->url, "https:", 6) == 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* an http_proxy variable must not reroute us */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)call->base.t.connect_ms);
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, call->client);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header_line);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, call);
}

int
tg_upstream_call_start(struct tg_upstream_client *c, const struct tg_upstream_request *req,
                       const struct tg_upstream_callbacks *cbs, void *arg,
                       struct tg_upstream_call **out)
{
    *out = NULL;
    if (req->url == NULL || cbs->on_headers == NULL || cbs->on_data == NULL ||
        cbs->on_done == NULL) {
        return TG_EINVAL;
    }
    if (c->calls.is_closing || c->is_free_requested) {
        return TG_ECLOSED;
    }
    struct tg_h1_url u;
    if (c->h1 != NULL && tg_h1_url_parse(req->url, &u) == 0) {
        return tg_h1_call_start(c->h1, req, cbs, arg, (struct tg_h1_call **)out);
    }
    struct tg_upstream_call *call = call_acquire(c);
    if (call == NULL) {
        return TG_ENOMEM;
    }
    int rc = build_headers(c, call, req);
    if (rc < 0) {
        call_recycle(call);
        return rc;
    }
    tg_call_begin(&call->base, req, cbs, arg);
    set_options(call, req);
    /* Adding only schedules curl's timer (zero): the transfer, and every callback, starts on
     * the next loop turn. */
    if (curl_multi_add_handle(c->multi, call->easy) != CURLM_OK) {
        call_recycle(call);
        return TG_EIO;
    }
    tg_call_active_push(&call->base);
    arm_timer(call);
    *out = call;
    return 0;
}

/* Either engine's call starts with its struct tg_call_base, which holds all that resume and
 * cancel touch. */
void
tg_upstream_call_resume(struct tg_upstream_call *call)
{
    tg_call_resume((struct tg_call_base *)call);
}

void
tg_upstream_call_cancel(struct tg_upstream_call *call)
{
    tg_call_cancel((struct tg_call_base *)call);
}
