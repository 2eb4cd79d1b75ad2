/*
 * provider_http.c: the provider types that are real HTTP servers: "openai",
 * "openai-compatible" and "azure".
 *
 * A type only decides how a call becomes an HTTP request (URL, auth header, API version);
 * the transfer itself is the upstream client's (client.h). Each call is a small wrapper around
 * the client's call that keeps the URL alive until the end and forwards the callbacks, so the
 * relay holds one kind of handle for every type. The wrapper is freed right after the relay's
 * on_done returns, as client.h promises for its own calls.
 *
 * The provider secret goes into exactly one header value, which is wiped before it is freed
 * and never logged.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/mem.h"
#include "upstream/provider_int.h"

/* Azure's GA data-plane version, used when the config names none. */
#define AZURE_DEFAULT_API_VERSION "2024-10-21"

/* ---- request building (pure) ------------------------------------------------------------ */

/* Appends base without its trailing slashes, so "https://h/v1/" + "/chat" has no "//". */
static void
append_base(struct tg_buf *b, const char *base)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/') {
        n--;
    }
    tg_buf_append(b, base, n);
}

/* Percent-encodes everything but RFC 3986 unreserved characters (for a path segment or a
 * query value taken from config). */
static void
append_escaped(struct tg_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        unsigned char c = *p;
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '.' || c == '_' || c == '~';
        if (plain) {
            tg_buf_append(b, p, 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            tg_buf_append(b, esc, 3);
        }
    }
}

static void
add_header(struct tg_provider_http_req *r, const char *name, const char *value)
{
    r->headers[r->n_headers].name = name;
    r->headers[r->n_headers].value = value;
    r->n_headers++;
}

/* The headers every type sends; the auth header is the caller's. */
static void
add_common_headers(struct tg_provider_http_req *r, const struct tg_provider_request *req)
{
    add_header(r, "Content-Type", "application/json");
    if (req->is_stream) {
        add_header(r, "Accept", "text/event-stream");
    }
    if (req->request_id != NULL && req->request_id[0] != '\0') {
        add_header(r, "X-Client-Request-Id", req->request_id);
    }
}

static bool
has_text(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int
tg_provider_openai_build(const struct tg_provider *p, const struct tg_provider_request *req,
                         struct tg_provider_http_req *out)
{
    memset(out, 0, sizeof(*out));
    if (!has_text(p->base_url) || (unsigned)req->api >= TG_API_COUNT) {
        return TG_ECONFIG;
    }
    struct tg_buf url;
    tg_buf_init(&url, 0);
    append_base(&url, p->base_url);
    tg_buf_append_str(&url, tg_api_path(req->api));
    out->url = tg_buf_steal(&url, NULL);
    if (has_text(p->api_key)) {
        out->auth_value = tg_xasprintf("Bearer %s", p->api_key);
        add_header(out, "Authorization", out->auth_value);
    }
    add_common_headers(out, req);
    return 0;
}

int
tg_provider_azure_build(const struct tg_provider *p, const struct tg_provider_request *req,
                        struct tg_provider_http_req *out)
{
    memset(out, 0, sizeof(*out));
    if (!has_text(p->base_url)) {
        return TG_ECONFIG;
    }
    bool is_deployment_api =
        req->api == TG_API_CHAT || req->api == TG_API_COMPLETIONS || req->api == TG_API_EMBEDDINGS;
    if (req->api != TG_API_RESPONSES && !is_deployment_api) {
        return TG_EINVAL; /* Azure OpenAI has no moderations endpoint */
    }
    if (is_deployment_api && !has_text(req->upstream_model)) {
        return TG_EINVAL;
    }
    struct tg_buf url;
    tg_buf_init(&url, 0);
    append_base(&url, p->base_url);
    if (is_deployment_api) {
        tg_buf_append_str(&url, "/openai/deployments/");
        append_escaped(&url, req->upstream_model);
        tg_buf_append_str(&url, tg_api_path(req->api));
        tg_buf_append_str(&url, "?api-version=");
        append_escaped(&url, has_text(p->api_version) ? p->api_version : AZURE_DEFAULT_API_VERSION);
    } else {
        /* The v1 API (openai-wire.md section 8): no api-version, model in the body. */
        tg_buf_append_str(&url, "/openai/v1");
        tg_buf_append_str(&url, tg_api_path(req->api));
    }
    out->url = tg_buf_steal(&url, NULL);
    if (has_text(p->api_key)) {
        out->auth_value = tg_xstrdup(p->api_key);
        add_header(out, "api-key", out->auth_value);
    }
    add_common_headers(out, req);
    return 0;
}

void
tg_provider_http_req_deinit(struct tg_provider_http_req *r)
{
    if (r->auth_value != NULL) {
        explicit_bzero(r->auth_value, strlen(r->auth_value));
        free(r->auth_value);
    }
    free(r->url);
    memset(r, 0, sizeof(*r));
}

/* ---- calls --------------------------------------------------------------------------- */

struct http_call {
    struct tg_provider_call base; /* first: the relay's handle is this struct's address */
    struct tg_upstream_call *up;
    const struct tg_upstream_callbacks *cbs;
    void *arg;
    struct tg_provider_http_req hreq; /* the URL stays valid for the whole transfer */
};

static void
fwd_headers(int status, const struct tg_upstream_header *headers, size_t n, void *arg)
{
    struct http_call *c = arg;
    c->cbs->on_headers(status, headers, n, c->arg);
}

static int
fwd_data(const char *data, size_t len, void *arg)
{
    struct http_call *c = arg;
    return c->cbs->on_data(data, len, c->arg);
}

static void
fwd_done(int err, const char *message, void *arg)
{
    struct http_call *c = arg;
    c->cbs->on_done(err, message, c->arg);
    tg_provider_http_req_deinit(&c->hreq);
    free(c);
}

static const struct tg_upstream_callbacks fwd_callbacks = {fwd_headers, fwd_data, fwd_done};

/* The deployment's timeouts (req->timeouts) win per field over the provider's; zero means
 * "not configured" at both levels, and then the client's defaults apply. */
static struct tg_upstream_timeouts
timeouts_of(const struct tg_provider *p, const struct tg_provider_request *req)
{
    struct tg_upstream_timeouts d;
    tg_upstream_timeouts_default(&d);
    struct tg_upstream_timeouts t = p->timeouts;
    if (req->timeouts != NULL) {
        const struct tg_upstream_timeouts *o = req->timeouts;
        t.connect_ms = o->connect_ms ? o->connect_ms : t.connect_ms;
        t.first_byte_ms = o->first_byte_ms ? o->first_byte_ms : t.first_byte_ms;
        t.idle_ms = o->idle_ms ? o->idle_ms : t.idle_ms;
        t.total_ms = o->total_ms ? o->total_ms : t.total_ms;
    }
    t.connect_ms = t.connect_ms ? t.connect_ms : d.connect_ms;
    t.first_byte_ms = t.first_byte_ms ? t.first_byte_ms : d.first_byte_ms;
    t.idle_ms = t.idle_ms ? t.idle_ms : d.idle_ms;
    t.total_ms = t.total_ms ? t.total_ms : d.total_ms;
    return t;
}

typedef int (*build_fn)(const struct tg_provider *p, const struct tg_provider_request *req,
                        struct tg_provider_http_req *out);

static int
http_start(const struct tg_provider_ops *ops, build_fn build, const struct tg_provider *p,
           struct tg_upstream_client *client, const struct tg_provider_request *req,
           const struct tg_upstream_callbacks *cbs, void *arg, struct tg_provider_call **out)
{
    if (client == NULL) {
        return TG_EINVAL;
    }
    struct http_call *c = tg_xcalloc(1, sizeof(*c));
    c->base.ops = ops;
    c->cbs = cbs;
    c->arg = arg;
    int rc = build(p, req, &c->hreq);
    if (rc < 0) {
        goto fail;
    }
    struct tg_upstream_request ureq = {
        .method = "POST",
        .url = c->hreq.url,
        .headers = c->hreq.headers,
        .n_headers = c->hreq.n_headers,
        .body = req->body,
        .body_len = req->body_len,
        .timeouts = timeouts_of(p, req),
    };
    rc = tg_upstream_call_start(client, &ureq, &fwd_callbacks, c, &c->up);
    if (rc < 0) {
        goto fail;
    }
    *out = &c->base;
    return 0;
fail:
    tg_provider_http_req_deinit(&c->hreq);
    free(c);
    return rc;
}

static void
http_resume(struct tg_provider_call *call)
{
    struct http_call *c = (struct http_call *)call;
    tg_upstream_call_resume(c->up);
}

static void
http_cancel(struct tg_provider_call *call)
{
    struct http_call *c = (struct http_call *)call;
    tg_upstream_call_cancel(c->up);
}

static int
openai_start(const struct tg_provider *p, struct tg_upstream_client *client, uv_loop_t *loop,
             const struct tg_provider_request *req, const struct tg_upstream_callbacks *cbs,
             void *arg, struct tg_provider_call **out)
{
    return http_start(&tg_provider_openai_ops, tg_provider_openai_build, p, client, req, cbs, arg,
                      out);
}

static int
compat_start(const struct tg_provider *p, struct tg_upstream_client *client, uv_loop_t *loop,
             const struct tg_provider_request *req, const struct tg_upstream_callbacks *cbs,
             void *arg, struct tg_provider_call **out)
{
    return http_start(&tg_provider_compat_ops, tg_provider_openai_build, p, client, req, cbs, arg,
                      out);
}

static int
azure_start(const struct tg_provider *p, struct tg_upstream_client *client, uv_loop_t *loop,
            const struct tg_provider_request *req, const struct tg_upstream_callbacks *cbs,
            void *arg, struct tg_provider_call **out)
{
    return http_start(&tg_provider_azure_ops, tg_provider_azure_build, p, client, req, cbs, arg,
                      out);
}

/* Azure opens a chat stream with {"choices":[],"prompt_filter_results":[...],...} and no
 * usage. An OpenAI client would read its empty choices as the include_usage chunk (or index
 * choices[0] and crash), so it is not shown. Any chunk that carries usage is kept. */
static bool
azure_keep_event(const struct tg_sse_event *ev)
{
    static const char marker[] = "\"prompt_filter_results\"";
    if (!ev->has_data || memmem(ev->data, ev->data_len, marker, sizeof(marker) - 1) == NULL) {
        return true;
    }
    json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return true; /* not ours to judge: the relay reports malformed events */
    }
    const json_t *choices = json_object_get(j, "choices");
    const json_t *usage = json_object_get(j, "usage");
    bool drop = json_is_array(choices) && json_array_size(choices) == 0 &&
                (usage == NULL || json_is_null(usage));
    json_decref(j);
    return !drop;
}

const struct tg_provider_ops tg_provider_openai_ops = {
    .type = "openai",
    .start = openai_start,
    .resume = http_resume,
    .cancel = http_cancel,
    .keep_event = NULL,
};

const struct tg_provider_ops tg_provider_compat_ops = {
    .type = "openai-compatible",
    .start = compat_start,
    .resume = http_resume,
    .cancel = http_cancel,
    .keep_event = NULL,
};

const struct tg_provider_ops tg_provider_azure_ops = {
    .type = "azure",
    .start = azure_start,
    .resume = http_resume,
    .cancel = http_cancel,
    .keep_event = azure_keep_event,
};
