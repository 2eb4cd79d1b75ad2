/*
 * client.c: the upstream HTTP client (see client.h). Plain http:// calls go to the native
 * HTTP/1.1 engine (h1.c: uv_tcp on this loop, far fewer system calls and no library layer per
 * request); https:// calls, and every call when the environment variable
 * TG_UPSTREAM_CLIENT=curl is set at start (to compare the two, or to rule the native engine out
 * when chasing a problem), go to libcurl. Both hand out struct tg_upstream_call pointers whose
 * first member says which engine owns them.
 *
 * The libcurl side: one libcurl multi handle per worker loop,
 * driven with curl_multi_socket_action from uv_poll (one per socket curl asks us to watch) and
 * one uv_timer (curl's own timeout), after curl's multi-uv.c example.
 *
 * What the client owns: the multi handle (and so the connection cache, which gives keep-alive
 * reuse and HTTP/2 multiplexing per host), the poll handles, a pool of finished calls kept for
 * reuse (each with its easy handle, its timer and its header storage, so a busy worker does not
 * allocate per call), and the list of active calls.
 *
 * Timeouts: connect is curl's (CURLOPT_CONNECTTIMEOUT_MS). First byte, idle and total are ours,
 * on one uv_timer per call that is armed for the earliest deadline and checked lazily: a read
 * only records the time, and the timer, when it fires early, re-arms for what is left. That
 * keeps the per-read cost to one store. The idle deadline is ignored while the call is paused.
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
#include "upstream/h1.h"

#define MAX_POOLED_CALLS 64
#define MAX_HEADER_BYTES (128 * 1024)
#define MAX_HEADERS 256

enum phase {
    PHASE_CONNECTING, /* before the request goes out: curl's connect timeout applies */
    PHASE_SENT,       /* request on the wire, nothing back yet: first-byte deadline */
    PHASE_RECEIVING,  /* response bytes arriving: idle deadline */
};

struct sock {
    struct sock *next;
    struct sock *prev;
    struct tg_upstream_client *client;
    uv_poll_t poll;
    curl_socket_t fd;
    int events; /* what the poll watches now (UV_READABLE | UV_WRITABLE), 0 = stopped */
};

struct header_off {
    size_t name;
    size_t value;
};

struct tg_upstream_call {
    struct tg_upstream_call_head head; /* is_native false */
    struct tg_upstream_client *client;
    struct tg_upstream_call *next; /* active list or pool */
    struct tg_upstream_call *prev;
    struct tg_upstream_call *dnext; /* deferred list (cancel/resume to apply) */
    struct tg_upstream_call *dprev;
    CURL *easy;
    uv_timer_t timer;
    struct curl_slist *req_headers;
    struct tg_upstream_callbacks cbs;
    void *arg;
    struct tg_upstream_timeouts t;

    enum phase phase;
    uint64_t start_ms;
    uint64_t sent_ms;
    uint64_t last_read_ms;
    bool is_deferred;
    bool is_paused;
    bool is_resume_pending;
    bool is_cancel_pending;
    bool is_in_on_data;
    bool has_headers;
    bool is_done;
    int err; /* set inside a curl callback to fail the transfer with this code */

    /* Response headers of the current response: "name\0value\0" pairs plus their offsets. */
    struct tg_buf hdr_bytes;
    struct header_off *hdr_offs;
    struct tg_upstream_header *hdrs;
    size_t n_hdrs;
    size_t hdrs_cap;

    char errbuf[CURL_ERROR_SIZE];
    char msg[CURL_ERROR_SIZE + 64];
};

struct tg_upstream_client {
    uv_loop_t *loop;
    struct tg_h1_client *h1; /* plain http://; NULL when libcurl takes every call */
    CURLM *multi;
    uv_timer_t timer; /* curl's timeout */
    uv_idle_t defer;  /* applies cancel/resume requests outside curl */
    struct tg_upstream_call *active;
    struct tg_upstream_call *pool;
    struct tg_upstream_call *deferred;
    struct sock *socks;
    struct sock **by_fd; /* the watched socket of each descriptor curl has open */
    size_t by_fd_cap;
    size_t n_active;
    size_t n_pool;
    size_t n_open;   /* uv handles not yet closed; the client is freed when it reaches 0 */
    int cb_depth;    /* > 0 while curl is inside one of our callbacks */
    bool is_closing; /* tg_upstream_client_free ran */
    bool is_free_requested;
    struct tg_buf scratch; /* formats request header lines */
};

static void check_info(struct tg_upstream_client *c);
static void client_teardown(struct tg_upstream_client *c);

void
tg_upstream_timeouts_default(struct tg_upstream_timeouts *t)
{
    t->connect_ms = 10000;
    t->first_byte_ms = 120000;
    t->idle_ms = 120000;
    t->total_ms = 600000;
}

/* ---- handle bookkeeping -------------------------------------------------------------- */

static void
maybe_free_client(struct tg_upstream_client *c)
{
    if (c->is_closing && c->n_open == 0) {
        tg_buf_deinit(&c->scratch);
        free(c);
    }
}

static void
on_client_handle_closed(uv_handle_t *h)
{
    struct tg_upstream_client *c = h->data;
    c->n_open--;
    maybe_free_client(c);
}

static void
on_sock_closed(uv_handle_t *h)
{
    struct sock *s = h->data;
    struct tg_upstream_client *c = s->client;
    free(s);
    c->n_open--;
    maybe_free_client(c);
}

static void
on_call_closed(uv_handle_t *h)
{
    struct tg_upstream_call *call = h->data;
    struct tg_upstream_client *c = call->client;
    free(call);
    c->n_open--;
    maybe_free_client(c);
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
        int rc = uv_poll_init_socket(c->loop, &s->poll, fd);
        if (rc < 0) {
            tg_log_error("upstream: cannot watch socket %d: %s", (int)fd, uv_strerror(rc));
            free(s);
            return -1;
        }
        s->poll.data = s;
        c->n_open++;
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

/* ---- the deferred list ------------------------------------------------------------------ */

static void
defer_unlink(struct tg_upstream_call *call)
{
    struct tg_upstream_client *c = call->client;
    if (!call->is_deferred) {
        return;
    }
    call->is_deferred = false;
    if (call->dprev != NULL) {
        call->dprev->dnext = call->dnext;
    } else {
        c->deferred = call->dnext;
    }
    if (call->dnext != NULL) {
        call->dnext->dprev = call->dprev;
    }
    call->dnext = call->dprev = NULL;
}

static void on_defer(uv_idle_t *idle);

static void
defer_push(struct tg_upstream_call *call)
{
    struct tg_upstream_client *c = call->client;
    if (call->is_deferred) {
        return;
    }
    call->is_deferred = true;
    call->dprev = NULL;
    call->dnext = c->deferred;
    if (c->deferred != NULL) {
        c->deferred->dprev = call;
    }
    c->deferred = call;
    uv_idle_start(&c->defer, on_defer);
}

/* ---- call lifecycle ------------------------------------------------------------------- */

static void
active_unlink(struct tg_upstream_call *call)
{
    struct tg_upstream_client *c = call->client;
    if (call->prev != NULL) {
        call->prev->next = call->next;
    } else {
        c->active = call->next;
    }
    if (call->next != NULL) {
        call->next->prev = call->prev;
    }
    call->next = call->prev = NULL;
    c->n_active--;
}

static void
call_destroy(struct tg_upstream_call *call)
{
    curl_easy_cleanup(call->easy);
    tg_buf_deinit(&call->hdr_bytes);
    free(call->hdr_offs);
    free(call->hdrs);
    uv_close((uv_handle_t *)&call->timer, on_call_closed);
}

/* Keeps a finished call (easy handle, timer, header storage) for the next start. */
static void
call_recycle(struct tg_upstream_call *call)
{
    struct tg_upstream_client *c = call->client;
    curl_slist_free_all(call->req_headers);
    call->req_headers = NULL;
    if (c->is_closing || c->n_pool >= MAX_POOLED_CALLS) {
        call_destroy(call);
        return;
    }
    call->next = c->pool;
    c->pool = call;
    c->n_pool++;
}

/* Ends a call: the one place on_done fires. Must not run inside a curl callback. */
static void
finish(struct tg_upstream_call *call, int err, const char *msg)
{
    struct tg_upstream_client *c = call->client;
    if (call->is_done) {
        return;
    }
    call->is_done = true;
    defer_unlink(call);
    uv_timer_stop(&call->timer);
    curl_multi_remove_handle(c->multi, call->easy);
    active_unlink(call);
    if (msg != call->msg) {
        snprintf(call->msg, sizeof(call->msg), "%s", msg);
    }
    call->cbs.on_done(err, call->msg, call->arg);
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

/* Turns curl's verdict on a transfer into our code and message (in call->msg). */
static int
map_result(struct tg_upstream_call *call, CURLcode res)
{
    const char *detail = call->errbuf[0] != '\0' ? call->errbuf : curl_easy_strerror(res);
    if (res == CURLE_OK) {
        call->msg[0] = '\0';
        return 0;
    }
    if (call->err != 0) {
        return call->err; /* we failed it from a callback; msg is already set */
    }
    if (res == CURLE_OPERATION_TIMEDOUT) {
        if (call->phase == PHASE_CONNECTING) {
            snprintf(call->msg, sizeof(call->msg), "timed out connecting after %llu ms",
                     (unsigned long long)call->t.connect_ms);
        } else {
            snprintf(call->msg, sizeof(call->msg), "timed out: %s", detail);
        }
        return TG_ETIMEOUT;
    }
    if (is_connect_error(res)) {
        snprintf(call->msg, sizeof(call->msg), "could not connect: %s", detail);
        return TG_ECONNECT;
    }
    snprintf(call->msg, sizeof(call->msg), "upstream transfer failed: %s", detail);
    return TG_EUPSTREAM;
}

static void
check_info(struct tg_upstream_client *c)
{
    CURLMsg *m;
    int pending = 0;
    /* on_done may free the client (it stays allocated until its handles close, but the multi
     * is gone), so the loop re-checks before every read. */
    while (!c->is_closing && (m = curl_multi_info_read(c->multi, &pending)) != NULL) {
        if (m->msg != CURLMSG_DONE) {
            continue;
        }
        struct tg_upstream_call *call = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        CURLcode res = m->data.result;
        if (call->is_cancel_pending) {
            finish(call, TG_ECANCELED, "canceled");
            continue;
        }
        int err = map_result(call, res);
        finish(call, err, call->msg);
    }
}

/* ---- per-call deadlines ------------------------------------------------------------------ */

static void on_call_timer(uv_timer_t *t);

/* The earliest deadline that applies now (absolute loop ms). */
static uint64_t
next_deadline(const struct tg_upstream_call *call)
{
    uint64_t d = call->start_ms + call->t.total_ms;
    uint64_t p = UINT64_MAX;
    if (call->phase == PHASE_SENT) {
        p = call->sent_ms + call->t.first_byte_ms;
    } else if (call->phase == PHASE_RECEIVING && !call->is_paused) {
        p = call->last_read_ms + call->t.idle_ms;
    }
    return p < d ? p : d;
}

static void
arm_timer(struct tg_upstream_call *call)
{
    uint64_t now = uv_now(call->client->loop);
    uint64_t d = next_deadline(call);
    uv_timer_start(&call->timer, on_call_timer, d > now ? d - now : 0, 0);
}

static void
on_call_timer(uv_timer_t *t)
{
    struct tg_upstream_call *call = t->data;
    uint64_t now = uv_now(call->client->loop);
    if (now >= call->start_ms + call->t.total_ms) {
        snprintf(call->msg, sizeof(call->msg), "timed out after %llu ms in total",
                 (unsigned long long)call->t.total_ms);
    } else if (call->phase == PHASE_SENT && now >= call->sent_ms + call->t.first_byte_ms) {
        snprintf(call->msg, sizeof(call->msg), "timed out waiting for the first byte after %llu ms",
                 (unsigned long long)call->t.first_byte_ms);
    } else if (call->phase == PHASE_RECEIVING && !call->is_paused &&
               now >= call->last_read_ms + call->t.idle_ms) {
        snprintf(call->msg, sizeof(call->msg),
                 "timed out waiting for more of the response after %llu ms idle",
                 (unsigned long long)call->t.idle_ms);
    } else {
        arm_timer(call); /* woke early: data came, or the call was paused */
        return;
    }
    finish(call, TG_ETIMEOUT, call->msg);
}

/* Any response byte (header or body): the first one moves the call to the idle deadline. */
static void
note_read(struct tg_upstream_call *call)
{
    call->last_read_ms = uv_now(call->client->loop);
    if (call->phase != PHASE_RECEIVING) {
        call->phase = PHASE_RECEIVING;
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
    call->phase = PHASE_SENT;
    call->sent_ms = uv_now(call->client->loop);
    arm_timer(call);
    return CURL_PREREQFUNC_OK;
}

static void
fail_in_callback(struct tg_upstream_call *call, int err, const char *msg)
{
    if (call->err == 0) {
        call->err = err;
        snprintf(call->msg, sizeof(call->msg), "%s", msg);
    }
}

static void
headers_reset(struct tg_upstream_call *call)
{
    tg_buf_reset(&call->hdr_bytes);
    call->n_hdrs = 0;
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
    if (call->n_hdrs == MAX_HEADERS) {
        fail_in_callback(call, TG_EUPSTREAM, "the upstream sent too many response headers");
        return;
    }
    if (call->n_hdrs == call->hdrs_cap) {
        call->hdrs_cap = call->hdrs_cap ? call->hdrs_cap * 2 : 16;
        call->hdr_offs = tg_xrealloc(call->hdr_offs, call->hdrs_cap * sizeof(*call->hdr_offs));
        call->hdrs = tg_xrealloc(call->hdrs, call->hdrs_cap * sizeof(*call->hdrs));
    }
    struct tg_buf *b = &call->hdr_bytes;
    size_t name_off = b->len;
    if (tg_buf_append(b, line, name_len) < 0 || tg_buf_append(b, "", 1) < 0) {
        goto too_big;
    }
    size_t value_off = b->len;
    if (tg_buf_append(b, v, (size_t)(end - v)) < 0 || tg_buf_append(b, "", 1) < 0) {
        goto too_big;
    }
    call->hdr_offs[call->n_hdrs].name = name_off;
    call->hdr_offs[call->n_hdrs].value = value_off;
    call->n_hdrs++;
    return;
too_big:
    fail_in_callback(call, TG_EUPSTREAM, "the upstream sent response headers that are too large");
}

/* End of one response's header block: a final status goes to on_headers, a 1xx is dropped. */
static void
headers_complete(struct tg_upstream_call *call)
{
    long status = 0;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 100 && status < 200) {
        headers_reset(call);
        return;
    }
    call->has_headers = true;
    for (size_t i = 0; i < call->n_hdrs; i++) {
        call->hdrs[i].name = call->hdr_bytes.data + call->hdr_offs[i].name;
        call->hdrs[i].value = call->hdr_bytes.data + call->hdr_offs[i].value;
    }
    call->client->cb_depth++;
    call->cbs.on_headers((int)status, call->hdrs, call->n_hdrs, call->arg);
    call->client->cb_depth--;
}

static size_t
on_header_line(char *line, size_t size, size_t n, void *userp)
{
    struct tg_upstream_call *call = userp;
    size_t len = size * n;
    if (call->err != 0 || call->is_cancel_pending) {
        return 0; /* fails the transfer; check_info reports why */
    }
    note_read(call);
    if (call->has_headers) {
        return len; /* trailers after a chunked body: not part of the contract */
    }
    size_t l = len;
    while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r')) {
        l--;
    }
    if (l == 0) {
        headers_complete(call);
    } else if (l >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        headers_reset(call); /* a status line starts a new response (after a 1xx) */
    } else {
        headers_add(call, line, l);
    }
    return call->err != 0 || call->is_cancel_pending ? 0 : len;
}

static size_t
on_body(char *data, size_t size, size_t n, void *userp)
{
    struct tg_upstream_call *call = userp;
    size_t len = size * n;
    if (call->err != 0 || call->is_cancel_pending) {
        return 0;
    }
    if (call->is_paused) {
        /* curl had more of one read to hand over after we paused: it keeps these bytes and
         * delivers them again on resume, so nothing is taken twice. */
        return CURL_WRITEFUNC_PAUSE;
    }
    note_read(call);
    call->client->cb_depth++;
    call->is_in_on_data = true;
    int rc = call->cbs.on_data(data, len, call->arg);
    call->is_in_on_data = false;
    call->client->cb_depth--;
    if (call->is_cancel_pending) {
        return 0;
    }
    if (rc == TG_EAGAIN) {
        if (call->is_resume_pending) {
            call->is_resume_pending = false; /* resumed before it even paused */
            return len;
        }
        call->is_paused = true;
        curl_easy_pause(call->easy, CURLPAUSE_RECV);
        return len;
    }
    if (rc < 0) {
        fail_in_callback(call, TG_ECANCELED, "canceled by the consumer");
        return 0;
    }
    return len;
}

/* ---- deferred cancel and resume ---------------------------------------------------------- */

static void
apply_resume(struct tg_upstream_call *call)
{
    call->is_resume_pending = false;
    if (!call->is_paused) {
        return;
    }
    call->is_paused = false;
    call->last_read_ms = uv_now(call->client->loop); /* the idle clock restarts now */
    arm_timer(call);
    /* Unpausing hands over the bytes curl held, through on_body, right here. */
    CURLcode res = curl_easy_pause(call->easy, CURLPAUSE_CONT);
    if (call->is_done) {
        return;
    }
    if (call->is_cancel_pending) {
        finish(call, TG_ECANCELED, "canceled");
    } else if (call->err != 0) {
        finish(call, call->err, call->msg);
    } else if (res != CURLE_OK) {
        finish(call, map_result(call, res), call->msg);
    }
}

static void
on_defer(uv_idle_t *idle)
{
    struct tg_upstream_client *c = idle->data;
    if (c->is_free_requested) {
        client_teardown(c);
        return;
    }
    while (c->deferred != NULL && !c->is_closing) {
        struct tg_upstream_call *call = c->deferred;
        defer_unlink(call);
        if (call->is_cancel_pending) {
            finish(call, TG_ECANCELED, "canceled");
        } else if (call->is_resume_pending) {
            apply_resume(call);
        }
    }
    if (c->is_closing) {
        return;
    }
    uv_idle_stop(&c->defer);
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
    c->loop = loop;
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
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_idle_init(loop, &c->defer);
    c->defer.data = c;
    c->n_open = 2;
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
    c->is_closing = true;
    tg_h1_client_free(c->h1); /* fires its calls' on_done; frees itself once its handles close */
    c->h1 = NULL;
    while (c->active != NULL) {
        struct tg_upstream_call *call = c->active;
        call->is_cancel_pending = true;
        finish(call, TG_ECANCELED, "canceled: the upstream client is closing");
    }
    while (c->pool != NULL) {
        struct tg_upstream_call *call = c->pool;
        c->pool = call->next;
        c->n_pool--;
        call_destroy(call);
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
    uv_close((uv_handle_t *)&c->defer, on_client_handle_closed);
    curl_global_cleanup();
}

void
tg_upstream_client_free(struct tg_upstream_client *c)
{
    if (c == NULL || c->is_closing || c->is_free_requested) {
        return;
    }
    if (c->cb_depth > 0 || tg_h1_client_is_in_callback(c->h1)) {
        /* Inside on_headers/on_data curl (and the native engine, whose caller still holds its
         * call) may not be torn down; do it on the next turn. */
        c->is_free_requested = true;
        uv_idle_start(&c->defer, on_defer);
        return;
    }
    client_teardown(c);
}

size_t
tg_upstream_client_active(const struct tg_upstream_client *c)
{
    return c->n_active + tg_h1_client_active(c->h1);
}

static struct tg_upstream_call *
call_acquire(struct tg_upstream_client *c)
{
    struct tg_upstream_call *call = c->pool;
    if (call != NULL) {
        c->pool = call->next;
        c->n_pool--;
        curl_easy_reset(call->easy);
    } else {
        CURL *easy = curl_easy_init();
        if (easy == NULL) {
            return NULL;
        }
        call = tg_xcalloc(1, sizeof(*call));
        call->client = c;
        call->easy = easy;
        uv_timer_init(c->loop, &call->timer);
        call->timer.data = call;
        c->n_open++;
        tg_buf_init(&call->hdr_bytes, MAX_HEADER_BYTES);
    }
    call->next = call->prev = call->dnext = call->dprev = NULL;
    call->phase = PHASE_CONNECTING;
    call->is_deferred = call->is_paused = call->is_resume_pending = false;
    call->is_cancel_pending = call->is_in_on_data = call->has_headers = call->is_done = false;
    call->err = 0;
    call->errbuf[0] = '\0';
    call->msg[0] = '\0';
    headers_reset(call);
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
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)call->t.connect_ms);
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

static void
fill_timeouts(struct tg_upstream_timeouts *t, const struct tg_upstream_timeouts *req)
{
    struct tg_upstream_timeouts d;
    tg_upstream_timeouts_default(&d);
    t->connect_ms = req->connect_ms ? req->connect_ms : d.connect_ms;
    t->first_byte_ms = req->first_byte_ms ? req->first_byte_ms : d.first_byte_ms;
    t->idle_ms = req->idle_ms ? req->idle_ms : d.idle_ms;
    t->total_ms = req->total_ms ? req->total_ms : d.total_ms;
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
    if (c->is_closing || c->is_free_requested) {
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
    call->cbs = *cbs;
    call->arg = arg;
    fill_timeouts(&call->t, &req->timeouts);
    set_options(call, req);
    /* The loop's clock may be a whole callback old; the total deadline counts from now. */
    uv_update_time(c->loop);
    call->start_ms = uv_now(c->loop);
    /* Adding only schedules curl's timer (zero): the transfer, and every callback, starts on
     * the next loop turn. */
    if (curl_multi_add_handle(c->multi, call->easy) != CURLM_OK) {
        call_recycle(call);
        return TG_EIO;
    }
    call->next = c->active;
    if (c->active != NULL) {
        c->active->prev = call;
    }
    c->active = call;
    c->n_active++;
    arm_timer(call);
    *out = call;
    return 0;
}

void
tg_upstream_call_resume(struct tg_upstream_call *call)
{
    if (call != NULL && call->head.is_native) {
        tg_h1_call_resume((struct tg_h1_call *)call);
        return;
    }
    if (call == NULL || call->is_done || call->is_cancel_pending) {
        return;
    }
    if (call->is_in_on_data && !call->is_paused) {
        call->is_resume_pending = true; /* on_body sees it when on_data returns TG_EAGAIN */
        return;
    }
    if (!call->is_paused) {
        return;
    }
    call->is_resume_pending = true;
    defer_push(call);
}

void
tg_upstream_call_cancel(struct tg_upstream_call *call)
{
    if (call != NULL && call->head.is_native) {
        tg_h1_call_cancel((struct tg_h1_call *)call);
        return;
    }
    if (call == NULL || call->is_done || call->is_cancel_pending) {
        return;
    }
    call->is_cancel_pending = true;
    defer_push(call);
}
