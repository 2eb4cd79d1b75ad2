/*
 * h1.h: the native HTTP/1.1 engine of the upstream client, for plain http:// upstreams: one
 * uv_tcp_t per connection on the worker's loop, a keep-alive pool per (host, port), responses
 * parsed with http_parser (HTTP_RESPONSE). client.c sends http:// calls here and keeps libcurl
 * for https:// (TLS, HTTP/2); this engine keeps every promise of client.h (callbacks, the four
 * timeouts, pause and resume, cancel, error codes and messages), so the caller cannot tell
 * which engine ran a call.
 *
 * Private to src/upstream: the relay sees only client.h.
 */
#ifndef TG_UPSTREAM_H1_H
#define TG_UPSTREAM_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "upstream/client.h"

struct tg_h1_client;
struct tg_h1_call;

/* Pool bounds: idle connections kept per (host, port), and how long one may sit idle. */
#define TG_H1_MAX_IDLE_PER_HOST 256
#define TG_H1_IDLE_TIMEOUT_MS 30000
/* A resolved name is reused for this long before it is looked up again. */
#define TG_H1_DNS_TTL_MS 30000

/* A parsed plain-http URL. host is without brackets for IPv6 literals; authority is the
 * "host[:port]" text as written (the Host header); target is the path and query ("/" when the
 * URL has none), pointing into the URL. */
struct tg_h1_url {
    char host[256];
    uint16_t port;
    const char *authority;
    size_t authority_len;
    const char *target;
    size_t target_len;
};

/* Parses url; returns 0, or TG_EINVAL when it is not a plain http:// URL this engine takes
 * (https, user info, a bad port, a host longer than 255 bytes). */
int tg_h1_url_parse(const char *url, struct tg_h1_url *out);

/* Creates the engine for loop. Returns 0 or a negative TG_E code. */
int tg_h1_client_new(uv_loop_t *loop, struct tg_h1_client **out);

/* Ends every call (on_done with TG_ECANCELED, before this returns), closes the pooled
 * connections, and frees the engine once its handles are closed. Must not be called from
 * inside one of its callbacks (see tg_h1_client_is_in_callback). */
void tg_h1_client_free(struct tg_h1_client *c);

/* Replaces the pool bounds above (for tests): idle connections kept per (host, port), and how
 * long one may sit idle before the sweep closes it. */
void tg_h1_client_set_pool_limits(struct tg_h1_client *c, size_t max_idle_per_host,
                                  uint64_t idle_timeout_ms);

/* True while an on_headers or on_data of this engine is running. */
bool tg_h1_client_is_in_callback(const struct tg_h1_client *c);

/* Calls in progress. */
size_t tg_h1_client_active(const struct tg_h1_client *c);

/* Idle pooled connections to host:port (for tests and the pool's own bound). */
size_t tg_h1_client_idle(const struct tg_h1_client *c, const char *host, uint16_t port);

/* As tg_upstream_call_start, for a URL tg_h1_url_parse accepts. The call starts with a struct
 * tg_call_base (call_int.h), so tg_upstream_call_resume and tg_upstream_call_cancel take it as
 * a struct tg_upstream_call *. */
int tg_h1_call_start(struct tg_h1_client *c, const struct tg_upstream_request *req,
                     const struct tg_upstream_callbacks *cbs, void *arg, struct tg_h1_call **out);

#endif
