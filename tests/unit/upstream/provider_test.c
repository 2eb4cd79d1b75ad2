/*
 * provider_test.c: the provider registry, the HTTP request each type builds (URL, auth and
 * tracing headers) without a network, and Azure's stream filter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "core/err.h"
#include "upstream/provider_int.h"

/* The value of header name in r, or NULL. Fails the test if it appears twice. */
static const char *
header(const struct tg_provider_http_req *r, const char *name)
{
    const char *found = NULL;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0) {
            assert_null(found);
            found = r->headers[i].value;
        }
    }
    return found;
}

static struct tg_provider_request
request(enum tg_api api, bool is_stream)
{
    struct tg_provider_request req = {
        .api = api,
        .upstream_model = "gpt-4o-mini",
        .body = "{}",
        .body_len = 2,
        .is_stream = is_stream,
        .request_id = "req_0123abcd",
    };
    return req;
}

static void
registry_finds_every_type(void **state)
{
    static const char *const types[] = {"openai", "openai-compatible", "azure", "mock"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        const struct tg_provider_ops *ops = tg_provider_ops_find(types[i]);
        assert_non_null(ops);
        assert_string_equal(ops->type, types[i]);
        assert_non_null(ops->start);
        assert_non_null(ops->resume);
        assert_non_null(ops->cancel);
    }
    assert_ptr_equal(tg_provider_ops_find("mock"), &tg_provider_mock_ops);
    assert_ptr_equal(tg_provider_ops_find("azure"), &tg_provider_azure_ops);
    assert_null(tg_provider_ops_find("Azure"));
    assert_null(tg_provider_ops_find("anthropic"));
    assert_null(tg_provider_ops_find(""));
    assert_null(tg_provider_ops_find(NULL));
    /* only Azure filters its stream */
    assert_non_null(tg_provider_ops_find("azure")->keep_event);
    assert_null(tg_provider_ops_find("openai")->keep_event);
}

static void
openai_url_and_headers(void **state)
{
    struct tg_provider p = {.name = "openai",
                            .type = "openai",
                            .base_url = "https://api.openai.com/v1",
                            .api_key = "placeholder-secret"};
    static const char *const urls[TG_API_COUNT] = {
        "https://api.openai.com/v1/chat/completions", "https://api.openai.com/v1/completions",
        "https://api.openai.com/v1/embeddings",       "https://api.openai.com/v1/responses",
        "https://api.openai.com/v1/moderations",
    };
    for (int api = 0; api < TG_API_COUNT; api++) {
        struct tg_provider_request req = request((enum tg_api)api, false);
        struct tg_provider_http_req r;
        assert_int_equal(tg_provider_openai_build(&p, &req, &r), 0);
        assert_string_equal(r.url, urls[api]);
        assert_string_equal(header(&r, "Authorization"), "Bearer placeholder-secret");
        assert_string_equal(header(&r, "Content-Type"), "application/json");
        assert_string_equal(header(&r, "X-Client-Request-Id"), "req_0123abcd");
        assert_null(header(&r, "Accept")); /* not a stream */
        assert_null(header(&r, "api-key"));
        tg_provider_http_req_deinit(&r);
        assert_null(r.url);
    }
}

static void
stream_asks_for_event_stream(void **state)
{
    struct tg_provider p = {.type = "openai", .base_url = "https://api.openai.com/v1/"};
    struct tg_provider_request req = request(TG_API_CHAT, true);
    struct tg_provider_http_req r;
    assert_int_equal(tg_provider_openai_build(&p, &req, &r), 0);
    assert_string_equal(r.url, "https://api.openai.com/v1/chat/completions"); /* no "//" */
    assert_string_equal(header(&r, "Accept"), "text/event-stream");
    tg_provider_http_req_deinit(&r);
}

static void
compatible_without_key_sends_no_auth(void **state)
{
    struct tg_provider p = {.type = "openai-compatible", .base_url = "http://127.0.0.1:11434/v1"};
    struct tg_provider_request req = request(TG_API_EMBEDDINGS, false);
    req.request_id = NULL;
    struct tg_provider_http_req r;
    assert_int_equal(tg_provider_openai_build(&p, &req, &r), 0);
    assert_string_equal(r.url, "http://127.0.0.1:11434/v1/embeddings");
    assert_null(header(&r, "Authorization"));
    assert_null(header(&r, "X-Client-Request-Id"));
    assert_string_equal(header(&r, "Content-Type"), "application/json");
    assert_int_equal(r.n_headers, 1);
    tg_provider_http_req_deinit(&r);

    p.api_key = "";
    assert_int_equal(tg_provider_openai_build(&p, &req, &r), 0);
    assert_null(header(&r, "Authorization")); /* an empty key is no key */
    tg_provider_http_req_deinit(&r);

    p.base_url = NULL;
    assert_int_equal(tg_provider_openai_build(&p, &req, &r), TG_ECONFIG);
    assert_null(r.url);
    tg_provider_http_req_deinit(&r); /* safe after a failed build */
}

static void
azure_deployment_paths(void **state)
{
    struct tg_provider p = {.type = "azure",
                            .base_url = "https://res.openai.azure.com/",
                            .api_key = "az-secret",
                            .api_version = "2024-10-21"};
    static const struct {
        enum tg_api api;
        const char *url;
    } cases[] = {
        {TG_API_CHAT, "https://res.openai.azure.com/openai/deployments/my-dep/chat/completions"
                      "?api-version=2024-10-21"},
        {TG_API_COMPLETIONS, "https://res.openai.azure.com/openai/deployments/my-dep/completions"
                             "?api-version=2024-10-21"},
        {TG_API_EMBEDDINGS, "https://res.openai.azure.com/openai/deployments/my-dep/embeddings"
                            "?api-version=2024-10-21"},
        {TG_API_RESPONSES, "https://res.openai.azure.com/openai/v1/responses"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tg_provider_request req = request(cases[i].api, i == 0);
        req.upstream_model = "my-dep";
        struct tg_provider_http_req r;
        assert_int_equal(tg_provider_azure_build(&p, &req, &r), 0);
        assert_string_equal(r.url, cases[i].url);
        assert_string_equal(header(&r, "api-key"), "az-secret");
        assert_null(header(&r, "Authorization"));
        assert_string_equal(header(&r, "Content-Type"), "application/json");
        assert_string_equal(header(&r, "X-Client-Request-Id"), "req_0123abcd");
        if (i == 0) {
            assert_string_equal(header(&r, "Accept"), "text/event-stream");
        }
        tg_provider_http_req_deinit(&r);
    }
}

static void
azure_escapes_and_defaults(void **state)
{
    struct tg_provider p = {.type = "azure", .base_url = "https://res.openai.azure.com"};
    struct tg_provider_request req = request(TG_API_CHAT, false);
    req.upstream_model = "dep/with space?x";
    struct tg_provider_http_req r;
    assert_int_equal(tg_provider_azure_build(&p, &req, &r), 0);
    assert_string_equal(r.url, "https://res.openai.azure.com/openai/deployments/"
                               "dep%2Fwith%20space%3Fx/chat/completions?api-version=2024-10-21");
    assert_null(header(&r, "api-key"));
    tg_provider_http_req_deinit(&r);

    req.api = TG_API_MODERATIONS; /* Azure OpenAI offers none */
    assert_int_equal(tg_provider_azure_build(&p, &req, &r), TG_EINVAL);
    req.api = TG_API_EMBEDDINGS;
    req.upstream_model = "";
    assert_int_equal(tg_provider_azure_build(&p, &req, &r), TG_EINVAL);
    p.base_url = "";
    assert_int_equal(tg_provider_azure_build(&p, &req, &r), TG_ECONFIG);
}

static bool
keep(const char *data)
{
    struct tg_sse_event ev = {
        .event = "",
        .data = data,
        .data_len = strlen(data),
        .raw = data,
        .raw_len = strlen(data),
        .has_data = true,
    };
    return tg_provider_azure_ops.keep_event(&ev);
}

static void
azure_drops_only_the_prompt_filter_chunk(void **state)
{
    assert_false(keep("{\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
                      "\"prompt_filter_results\":[{\"prompt_index\":0,"
                      "\"content_filter_results\":{}}]}"));
    assert_false(keep("{\"choices\":[],\"prompt_filter_results\":[],\"usage\":null}"));
    /* the include_usage chunk stays, with or without filter results */
    assert_true(keep("{\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,"
                     "\"completion_tokens\":1,\"total_tokens\":2}}"));
    assert_true(keep("{\"choices\":[],\"prompt_filter_results\":[],\"usage\":{\"prompt_tokens\":"
                     "1,\"completion_tokens\":1,\"total_tokens\":2}}"));
    /* content chunks, [DONE], odd bytes and events without data stay */
    assert_true(keep("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},"
                     "\"content_filter_results\":{}}],\"prompt_filter_results\":[]}"));
    assert_true(keep("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}"));
    assert_true(keep("[DONE]"));
    assert_true(keep("\"prompt_filter_results\" but not JSON {"));
    struct tg_sse_event empty = {.event = "", .data = "", .raw = "", .has_data = false};
    assert_true(tg_provider_azure_ops.keep_event(&empty));
}

static void
start_without_client_fails_cleanly(void **state)
{
    struct tg_provider p = {.type = "openai", .base_url = "https://api.openai.com/v1"};
    struct tg_provider_request req = request(TG_API_CHAT, false);
    struct tg_provider_call *call = NULL;
    static const struct tg_upstream_callbacks none = {NULL, NULL, NULL};
    assert_int_equal(tg_provider_call_start(&p, NULL, NULL, &req, &none, NULL, &call), TG_EINVAL);
    assert_null(call);
    struct tg_provider unknown = {.type = "smoke-signals"};
    assert_int_equal(tg_provider_call_start(&unknown, NULL, NULL, &req, &none, NULL, &call),
                     TG_ECONFIG);
    /* wrappers accept a NULL call (the relay clears its handle on done) */
    tg_provider_call_resume(&p, NULL);
    tg_provider_call_cancel(&p, NULL);
}

/* ---- through the real client, against a one-shot local server --------------------------- */

/* A loop-driven HTTP server that records one request and answers it (or holds it). */
struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_tcp_t conn;
    bool has_conn;
    bool is_holding; /* never answer */
    int port;
    char request[4096];
    size_t request_len;
    bool has_request;
    uv_write_t write;
    int n_closed;
};

static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            "Content-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}";

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct server *s = h->data;
    buf->base = s->request + s->request_len;
    buf->len = sizeof(s->request) - 1 - s->request_len;
}

static void
on_conn_closed(uv_handle_t *h)
{
    struct server *s = h->data;
    s->n_closed++;
}

static void
on_written(uv_write_t *w, int status)
{
    struct server *s = w->data;
    uv_close((uv_handle_t *)&s->conn, on_conn_closed);
}

/* True when the head and the Content-Length body of the request are in. */
static bool
request_complete(struct server *s)
{
    s->request[s->request_len] = '\0';
    const char *end = strstr(s->request, "\r\n\r\n");
    if (end == NULL) {
        return false;
    }
    const char *cl = strcasestr(s->request, "\r\ncontent-length:");
    size_t body = cl != NULL && cl < end ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
    return s->request_len >= (size_t)(end + 4 - s->request) + body;
}

static void
on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct server *s = st->data;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)st)) {
            uv_close((uv_handle_t *)st, on_conn_closed);
        }
        return;
    }
    s->request_len += (size_t)n;
    if (s->has_request || !request_complete(s)) {
        return;
    }
    s->has_request = true;
    if (!s->is_holding) {
        uv_buf_t out = uv_buf_init((char *)reply, sizeof(reply) - 1);
        s->write.data = s;
        uv_write(&s->write, st, &out, 1, on_written);
    }
}

static void
on_connection(uv_stream_t *l, int status)
{
    struct server *s = l->data;
    assert_int_equal(status, 0);
    assert_false(s->has_conn); /* one connection per test */
    s->has_conn = true;
    uv_tcp_init(s->loop, &s->conn);
    s->conn.data = s;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
    uv_read_start((uv_stream_t *)&s->conn, on_alloc, on_read);
}

static void
server_start(struct server *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 8, on_connection), 0);
    struct sockaddr_storage name;
    int len = sizeof(name);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &len);
    s->port = ntohs(((struct sockaddr_in *)&name)->sin_port);
}

struct wire_rec {
    int status;
    struct tg_buf body;
    int n_done;
    int err;
};

static void
w_headers(int status, const struct tg_upstream_header *h, size_t n, void *arg)
{
    struct wire_rec *r = arg;
    r->status = status;
}

static int
w_data(const char *data, size_t len, void *arg)
{
    struct wire_rec *r = arg;
    tg_buf_append(&r->body, data, len);
    return 0;
}

static void
w_done(int err, const char *message, void *arg)
{
    struct wire_rec *r = arg;
    r->n_done++;
    r->err = err;
}

static const struct tg_upstream_callbacks wire_cbs = {w_headers, w_data, w_done};

static void
run_until(uv_loop_t *loop, const int *flag, int want)
{
    for (int i = 0; i < 100000 && *flag < want; i++) {
        uv_run(loop, UV_RUN_ONCE);
    }
    assert_int_equal(*flag, want);
}

/* Frees the client and the server and checks every handle closed. */
static void
wire_teardown(uv_loop_t *loop, struct tg_upstream_client *client, struct server *s)
{
    tg_upstream_client_free(client);
    if (s->has_conn && !uv_is_closing((uv_handle_t *)&s->conn)) {
        uv_close((uv_handle_t *)&s->conn, on_conn_closed);
    }
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void
azure_call_reaches_the_wire(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct server s;
    server_start(&s, &loop);
    struct tg_upstream_client *client = NULL;
    assert_int_equal(tg_upstream_client_new(&loop, &client), 0);
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", s.port);
    struct tg_provider p = {.name = "az",
                            .type = "azure",
                            .base_url = base,
                            .api_key = "az-wire-secret",
                            .api_version = "2024-10-21",
                            .ops = tg_provider_ops_find("azure")};
    static const char body[] = "{\"model\":\"dep\",\"messages\":[]}";
    struct tg_provider_request req = request(TG_API_CHAT, false);
    req.upstream_model = "dep";
    req.body = body;
    req.body_len = sizeof(body) - 1;
    struct wire_rec r = {0};
    tg_buf_init(&r.body, 0);
    struct tg_provider_call *call = NULL;
    assert_int_equal(tg_provider_call_start(&p, client, &loop, &req, &wire_cbs, &r, &call), 0);
    assert_non_null(call);
    assert_int_equal(r.n_done, 0);
    run_until(&loop, &r.n_done, 1);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "{\"ok\":true}");
    assert_true(s.has_request);
    assert_non_null(
        strstr(s.request, "POST /openai/deployments/dep/chat/completions?api-version=2024-10-21 "));
    assert_non_null(strcasestr(s.request, "\r\napi-key: az-wire-secret\r\n"));
    assert_non_null(strcasestr(s.request, "\r\nx-client-request-id: req_0123abcd\r\n"));
    assert_non_null(strcasestr(s.request, "\r\ncontent-type: application/json\r\n"));
    assert_null(strcasestr(s.request, "authorization:"));
    assert_non_null(strstr(s.request, body));
    tg_buf_deinit(&r.body);
    wire_teardown(&loop, client, &s);
}

static void
cancel_through_the_wrapper_ends_once(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct server s;
    server_start(&s, &loop);
    s.is_holding = true;
    struct tg_upstream_client *client = NULL;
    assert_int_equal(tg_upstream_client_new(&loop, &client), 0);
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1", s.port);
    struct tg_provider p = {.type = "openai", .base_url = base, .api_key = "placeholder-wire"};
    struct tg_provider_request req = request(TG_API_CHAT, true);
    struct wire_rec r = {0};
    tg_buf_init(&r.body, 0);
    struct tg_provider_call *call = NULL;
    assert_int_equal(tg_provider_call_start(&p, client, &loop, &req, &wire_cbs, &r, &call), 0);
    for (int i = 0; i < 100000 && !s.has_request; i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_true(s.has_request);
    assert_non_null(strstr(s.request, "POST /v1/chat/completions "));
    assert_non_null(strcasestr(s.request, "\r\nauthorization: Bearer placeholder-wire\r\n"));
    assert_non_null(strcasestr(s.request, "\r\naccept: text/event-stream\r\n"));
    tg_provider_call_cancel(&p, call);
    assert_int_equal(r.n_done, 0); /* not from inside cancel */
    run_until(&loop, &r.n_done, 1);
    assert_int_equal(r.err, TG_ECANCELED);
    for (int i = 0; i < 20; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(r.n_done, 1);
    tg_buf_deinit(&r.body);
    wire_teardown(&loop, client, &s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(registry_finds_every_type),
        cmocka_unit_test(openai_url_and_headers),
        cmocka_unit_test(stream_asks_for_event_stream),
        cmocka_unit_test(compatible_without_key_sends_no_auth),
        cmocka_unit_test(azure_deployment_paths),
        cmocka_unit_test(azure_escapes_and_defaults),
        cmocka_unit_test(azure_drops_only_the_prompt_filter_chunk),
        cmocka_unit_test(start_without_client_fails_cleanly),
        cmocka_unit_test(azure_call_reaches_the_wire),
        cmocka_unit_test(cancel_through_the_wrapper_ends_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
