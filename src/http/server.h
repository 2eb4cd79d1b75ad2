/*
 * server.h: the HTTP/1.1 server side of a worker: listening socket, connections, requests,
 * responses (whole or streamed), on one libuv loop.
 *
 * One tg_http_server per worker thread, each with its own listening socket bound with
 * SO_REUSEPORT, so the kernel spreads connections across workers. Connections are keep-alive;
 * requests on one connection are handled one at a time (pipelined bytes wait in the
 * connection's buffer, within the header cap). Every limit is enforced here and answered
 * with an OpenAI-style JSON error (or a clean close when no answer is possible):
 *   header bytes    -> 431 (request line and headers larger than max_header_bytes)
 *   body bytes      -> 413
 *   header time     -> 408 then close (slow-loris: headers not complete in header_timeout_ms)
 *   body time       -> 408 then close (body not complete in body_timeout_ms)
 *   idle keep-alive -> close (no new request within idle_timeout_ms)
 *   malformed HTTP  -> 400 then close
 *
 * Request lifecycle. The server calls the handler once a request (headers and body) is
 * complete. The handler must finish it exactly once, with tg_http_respond() or with
 * tg_http_stream_begin() ... tg_http_stream_end(); it may do so later, from any callback on
 * the same loop. If the client goes away first, the server calls the request's abort
 * callback (if set); the request stays valid until the handler finishes it, and writes after
 * the client left are silently dropped. After finishing, the handler must not touch req.
 * Every callback fires on the server's loop thread, never before the call that started it
 * has returned.
 */
#ifndef TG_HTTP_SERVER_H
#define TG_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/arena.h"
#include "core/buf.h"

struct tg_http_limits {
    size_t max_header_bytes;    /* request line + headers; default 16 KiB */
    size_t max_headers;         /* header count; default 100 */
    size_t max_body_bytes;      /* default 8 MiB */
    uint64_t header_timeout_ms; /* default 10 s */
    uint64_t body_timeout_ms;   /* default 60 s */
    uint64_t idle_timeout_ms;   /* keep-alive idle; default 75 s */
    size_t write_high_bytes;    /* stream writes report back-pressure above this; 256 KiB */
    size_t max_connections;     /* per worker; beyond it new connections are closed; 10000 */
};

/* Fills l with the defaults above. */
void tg_http_limits_default(struct tg_http_limits *l);

enum tg_http_method {
    TG_HTTP_OTHER = 0,
    TG_HTTP_GET,
    TG_HTTP_HEAD,
    TG_HTTP_POST,
    TG_HTTP_PUT,
    TG_HTTP_PATCH,
    TG_HTTP_DELETE,
    TG_HTTP_OPTIONS,
};

struct tg_http_header {
    const char *name; /* as received; compare case-insensitively */
    const char *value;
};

struct tg_http_req;
struct tg_http_server;

/* Called on the loop thread with a complete request. See the lifecycle above. */
typedef void (*tg_http_handler_cb)(struct tg_http_req *req, void *ctx);

/* Called when the client disconnects before the handler finished the request. */
typedef void (*tg_http_abort_cb)(struct tg_http_req *req, void *arg);

/* Called when a streamed response's pending output fell below write_high_bytes / 2. */
typedef void (*tg_http_drain_cb)(struct tg_http_req *req, void *arg);

/* Called once the server has closed its socket and every connection (after stop). */
typedef void (*tg_http_closed_cb)(struct tg_http_server *s, void *arg);

/*
 * A request as the handler sees it. All strings are NUL-terminated and live in the
 * request's arena (or its body buffer) until the request is finished.
 */
struct tg_http_req {
    enum tg_http_method method;
    const char *method_name; /* "POST", ... */
    const char *path;        /* raw path without the query, e.g. "/v1/models/x" */
    const char *query;       /* raw query string without '?', or "" */
    struct tg_http_header *headers;
    size_t n_headers;
    struct tg_buf body;    /* the whole body (capped at max_body_bytes) */
    bool keep_alive;       /* the client wants the connection kept */
    char remote_addr[64];  /* peer address, e.g. "127.0.0.1" */
    char id[40];           /* "req_" + 32 hex; sent back as x-request-id */
    uint64_t start_us;     /* monotonic time the request was complete */
    struct tg_arena arena; /* request-lifetime memory; cleanups run when it is freed */
    void *user;            /* free for the handler */
};

/* Case-insensitive header lookup; NULL if absent. */
const char *tg_http_req_header(const struct tg_http_req *req, const char *name);

/* Value of a query parameter (percent-decoded, in the arena), or NULL if absent. */
const char *tg_http_req_query(struct tg_http_req *req, const char *name);

/* All values of a repeated query parameter (also given as name[]), percent-decoded, in the
 * arena: writes up to cap pointers to out and returns how many values there are. */
size_t tg_http_req_query_all(struct tg_http_req *req, const char *name, const char **out,
                             size_t cap);

/* Sets the callbacks for client disconnects and for output drain. */
void tg_http_req_on_abort(struct tg_http_req *req, tg_http_abort_cb cb, void *arg);
void tg_http_req_on_drain(struct tg_http_req *req, tg_http_drain_cb cb, void *arg);

/* True once the client has gone (writes are dropped). */
bool tg_http_req_is_aborted(const struct tg_http_req *req);

/*
 * Finishes the request with a whole response. Adds Content-Length, Date, x-request-id,
 * Connection as needed; hdrs are extra headers (not copied after return; the call copies).
 * content_type may be NULL (no Content-Type). Returns 0, or TG_ECLOSED if the client left
 * (the request is finished either way).
 */
int tg_http_respond(struct tg_http_req *req, int status, const char *content_type,
                    const struct tg_http_header *hdrs, size_t n_hdrs, const char *body,
                    size_t body_len);

/* Shorthand: an OpenAI error body {"error":{...}} with the given status. */
int tg_http_respond_error(struct tg_http_req *req, int status, const char *message,
                          const char *type, const char *param, const char *code);

/*
 * Starts a streamed response (chunked transfer encoding). Returns 0 or TG_ECLOSED.
 * Then tg_http_stream_write() any number of times, then tg_http_stream_end() exactly once.
 */
int tg_http_stream_begin(struct tg_http_req *req, int status, const char *content_type,
                         const struct tg_http_header *hdrs, size_t n_hdrs);

/* Queues data (copied) as one chunk. Returns 1 when the pending output is above
 * write_high_bytes (the caller should pause its source until the drain callback), 0 when
 * not, TG_ECLOSED when the client has gone. */
int tg_http_stream_write(struct tg_http_req *req, const void *data, size_t len);

/* Bytes queued to the client and not yet written. */
size_t tg_http_req_pending_bytes(const struct tg_http_req *req);

/* Ends a streamed response (terminating chunk) and finishes the request. */
int tg_http_stream_end(struct tg_http_req *req);

/* Ends a streamed response abruptly: closes the connection without the terminating chunk,
 * so the client sees a truncated body. Finishes the request. */
void tg_http_stream_abort(struct tg_http_req *req);

/*
 * Creates a server on loop, listening on host:port with SO_REUSEPORT. handler(req, ctx) gets
 * each request. Returns 0 and sets *out, or a negative TG_E code (TG_EIO with errno logged
 * when the address cannot be bound).
 */
int tg_http_server_new(uv_loop_t *loop, const char *host, int port,
                       const struct tg_http_limits *limits, tg_http_handler_cb handler, void *ctx,
                       struct tg_http_server **out);

/* Stops accepting, closes idle connections now and busy ones as their request finishes. */
void tg_http_server_stop(struct tg_http_server *s);

/* Number of open connections and of requests in progress. */
size_t tg_http_server_connections(const struct tg_http_server *s);
size_t tg_http_server_requests_in_flight(const struct tg_http_server *s);

/* After stop: closes every remaining connection, then the listener, then calls cb and frees
 * the server. */
void tg_http_server_free(struct tg_http_server *s, tg_http_closed_cb cb, void *arg);

#endif
