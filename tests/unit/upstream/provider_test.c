/*
 * provider_test.c: the provider registry, the HTTP request each type builds (URL, auth and
 * tracing headers) without a network, and Azure's stream filter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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
                            .api_key = "sk-test-secret"};
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
        assert_string_equal(header(&r, "Authorization"), "Bearer sk-test-secret");
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
