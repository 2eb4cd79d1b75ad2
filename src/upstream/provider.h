/*
 * provider.h: provider types behind one small table of operations.
 *
 * A provider is a configured upstream (OpenAI, an Azure OpenAI resource, an OpenAI-compatible
 * server, or the built-in mock). Its type's ops decide how a call becomes an HTTP request
 * (URL, auth header, API version) or, for the mock, how it is answered in-process; the relay
 * above sees the same callbacks (tg_upstream_callbacks) and the same OpenAI wire bytes
 * either way. Adding a type is adding one ops table, not an if-chain.
 *
 * The provider's secret (api_key) is resolved at config load and never logged or returned.
 */
#ifndef TG_UPSTREAM_PROVIDER_H
#define TG_UPSTREAM_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/arena.h"
#include "http/sse.h"
#include "upstream/api.h"
#include "upstream/client.h"

struct tg_provider_ops;

/* Built-in mock behaviour (type "mock"). */
struct tg_mock_settings {
    uint64_t latency_ms;       /* before the first byte; default 0 */
    uint64_t tokens_per_sec;   /* stream pacing; 0 = as fast as possible (default) */
    int64_t completion_tokens; /* tokens per choice when max_tokens allows; default 16 */
};

struct tg_provider {
    const char *name;     /* config name, e.g. "openai" */
    const char *type;     /* "openai", "azure", "openai-compatible", "mock" */
    const char *base_url; /* e.g. "https://api.example.com/v1" (openai, openai-compatible) or
                           * "https://RESOURCE.openai.azure.com" (azure) */
    const char *api_key;  /* resolved secret, or NULL (openai-compatible servers may need none) */
    const char *api_version; /* azure only, e.g. "2024-10-21" */
    /* Non-NULL: the api_key reference could not be resolved at start (no secret in it, e.g.
     * "environment variable X is not set"); its deployments are never picked. */
    const char *unavailable;
    struct tg_upstream_timeouts timeouts;
    struct tg_mock_settings mock;
    const struct tg_provider_ops *ops;
};

/* One call to a provider, as the relay asks for it. */
struct tg_provider_request {
    enum tg_api api;
    const char *upstream_model; /* provider-side model (Azure: the deployment name) */
    const char *body;           /* JSON body to send (already rewritten); borrowed until done */
    size_t body_len;
    bool is_stream;
    const char *request_id; /* ours; sent upstream as X-Client-Request-Id for tracing */
    /* The deployment's timeouts: each non-zero field overrides the provider's; NULL: none. */
    const struct tg_upstream_timeouts *timeouts;
};

struct tg_provider_call;

struct tg_provider_ops {
    const char *type;
    /* Starts the call; same contract as tg_upstream_call_start (callbacks later, exactly one
     * on_done). Returns 0 and sets *out, or a negative code and no callback fires. */
    int (*start)(const struct tg_provider *p, struct tg_upstream_client *client, uv_loop_t *loop,
                 const struct tg_provider_request *req, const struct tg_upstream_callbacks *cbs,
                 void *arg, struct tg_provider_call **out);
    void (*resume)(struct tg_provider_call *call);
    void (*cancel)(struct tg_provider_call *call);
    /* Stream filter: false for an event the client must not see (Azure's leading
     * prompt_filter_results chunk). NULL keeps everything. */
    bool (*keep_event)(const struct tg_sse_event *ev);
};

/* The ops for a type name, or NULL if unknown. */
const struct tg_provider_ops *tg_provider_ops_find(const char *type);

/* Convenience wrappers over p->ops. */
int tg_provider_call_start(const struct tg_provider *p, struct tg_upstream_client *client,
                           uv_loop_t *loop, const struct tg_provider_request *req,
                           const struct tg_upstream_callbacks *cbs, void *arg,
                           struct tg_provider_call **out);
void tg_provider_call_resume(const struct tg_provider *p, struct tg_provider_call *call);
void tg_provider_call_cancel(const struct tg_provider *p, struct tg_provider_call *call);

#endif
