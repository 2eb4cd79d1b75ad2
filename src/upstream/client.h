/*
 * client.h: the upstream HTTP client of one worker. Transfers never block the loop: plain
 * http:// upstreams go through a native HTTP/1.1 client on the worker's libuv loop (h1.h:
 * uv_tcp connections, a keep-alive pool per host and port), https:// ones through libcurl's
 * multi interface driven by the same loop (curl_multi_socket_action with uv_poll and
 * uv_timer). The environment variable TG_UPSTREAM_CLIENT=curl, read when a client is made,
 * sends plain http:// through libcurl as well.
 *
 * Both keep connections alive and reuse them across calls (per host); libcurl negotiates
 * HTTP/2 over TLS where the server offers it. Each call has four timeouts: connect, first byte
 * (request sent -> first response byte), idle (between two reads of the body) and total. A
 * call whose consumer cannot keep up returns TG_EAGAIN from on_data; the transfer is then
 * paused (the native client stops reading the socket; libcurl gets CURL_WRITEFUNC_PAUSE and
 * keeps its one chunk), with no buffering on our side beyond one read, until
 * tg_upstream_call_resume(); the idle timer does not run while paused, and a response that
 * ended while paused reports on_done after the resume.
 *
 * Every callback fires on the loop thread, never from inside tg_upstream_call_start. Exactly
 * one on_done ends a started call (also after cancel, with TG_ECANCELED); the call is freed
 * right after on_done returns. The callbacks carry no call pointer (the starter keeps the one
 * tg_upstream_call_start returned), so in-process providers can drive the same table.
 */
#ifndef TG_UPSTREAM_CLIENT_H
#define TG_UPSTREAM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct tg_upstream_client;
struct tg_upstream_call;

struct tg_upstream_timeouts {
    uint64_t connect_ms;    /* default 10 s */
    uint64_t first_byte_ms; /* default 120 s (reasoning models think before the first byte) */
    uint64_t idle_ms;       /* default 120 s */
    uint64_t total_ms;      /* default 600 s */
};

void tg_upstream_timeouts_default(struct tg_upstream_timeouts *t);

struct tg_upstream_header {
    const char *name;
    const char *value;
};

struct tg_upstream_request {
    const char *method; /* "POST", "GET", ... */
    const char *url;
    const struct tg_upstream_header *headers; /* copied by start */
    size_t n_headers;
    const char *body; /* borrowed: must stay valid until on_done */
    size_t body_len;
    struct tg_upstream_timeouts timeouts;
};

struct tg_upstream_callbacks {
    /* Status line and headers are complete. headers/n valid only during the call. */
    void (*on_headers)(int status, const struct tg_upstream_header *headers, size_t n, void *arg);
    /* Body bytes, in order. Return 0 to go on, TG_EAGAIN to pause (these bytes were taken),
     * or TG_ECANCELED to stop the transfer (on_done follows with TG_ECANCELED). */
    int (*on_data)(const char *data, size_t len, void *arg);
    /* The call ended: err is 0 (complete), TG_ECONNECT, TG_ETIMEOUT, TG_EUPSTREAM (reset,
     * protocol error, truncated body) or TG_ECANCELED. message says what failed, e.g.
     * "timed out waiting for the first byte after 120000 ms". */
    void (*on_done)(int err, const char *message, void *arg);
};

/* Creates the client for loop. Returns 0 or a negative TG_E code. */
int tg_upstream_client_new(uv_loop_t *loop, struct tg_upstream_client **out);

/* Cancels every call (their on_done fires with TG_ECANCELED), closes handles, frees the
 * client once its handles are closed. */
void tg_upstream_client_free(struct tg_upstream_client *c);

/* Number of calls in progress. */
size_t tg_upstream_client_active(const struct tg_upstream_client *c);

/* Starts a call. Returns 0 and sets *out (borrowed; valid until on_done returns), or a
 * negative code (no callback will fire). */
int tg_upstream_call_start(struct tg_upstream_client *c, const struct tg_upstream_request *req,
                           const struct tg_upstream_callbacks *cbs, void *arg,
                           struct tg_upstream_call **out);

/* Resumes a paused call. Safe to call when not paused. */
void tg_upstream_call_resume(struct tg_upstream_call *call);

/* Stops a call; its on_done fires later with TG_ECANCELED (never from inside this call). */
void tg_upstream_call_cancel(struct tg_upstream_call *call);

#endif
