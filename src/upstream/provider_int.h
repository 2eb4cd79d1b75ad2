/*
 * provider_int.h: what the provider types share inside src/upstream (not a public contract).
 *
 * Every type's call struct starts with a struct tg_provider_call, so the opaque handle the
 * relay holds is the same pointer whichever type made it. The HTTP types build their request
 * (URL and headers) with a pure function, declared here so unit tests can check it without a
 * network.
 */
#ifndef TG_UPSTREAM_PROVIDER_INT_H
#define TG_UPSTREAM_PROVIDER_INT_H

#include <stddef.h>

#include "upstream/provider.h"

/* The common head of every type's call. */
struct tg_provider_call {
    const struct tg_provider_ops *ops;
};

/* The ops tables of the built-in types (provider.c lists them for tg_provider_ops_find). */
extern const struct tg_provider_ops tg_provider_openai_ops;
extern const struct tg_provider_ops tg_provider_compat_ops;
extern const struct tg_provider_ops tg_provider_azure_ops;
extern const struct tg_provider_ops tg_provider_mock_ops;

#define TG_PROVIDER_MAX_HEADERS 6

/* An upstream HTTP request as a type builds it. url and auth_value are heap strings owned by
 * the struct (auth_value holds the provider secret: it is wiped when freed, never logged);
 * header values also point at static text or at the request's request_id (borrowed). */
struct tg_provider_http_req {
    char *url;
    struct tg_upstream_header headers[TG_PROVIDER_MAX_HEADERS];
    size_t n_headers;
    char *auth_value;
};

/* Builds the request of an "openai" or "openai-compatible" provider:
 * base_url + tg_api_path(api), `Authorization: Bearer <api_key>` when a key is set.
 * Returns 0 and fills out (free with tg_provider_http_req_deinit), or TG_ECONFIG when the
 * provider has no base_url. */
int tg_provider_openai_build(const struct tg_provider *p, const struct tg_provider_request *req,
                             struct tg_provider_http_req *out);

/* Builds the request of an "azure" provider: chat, completions and embeddings go to
 * base_url/openai/deployments/<upstream_model><path>?api-version=<api_version>; Responses to
 * the v1 API, base_url/openai/v1/responses (no api-version; the body's model names the
 * deployment). Auth is `api-key: <api_key>`. Returns 0, TG_ECONFIG (no base_url), or TG_EINVAL
 * for an endpoint Azure OpenAI does not offer (moderations) or a missing deployment name. */
int tg_provider_azure_build(const struct tg_provider *p, const struct tg_provider_request *req,
                            struct tg_provider_http_req *out);

void tg_provider_http_req_deinit(struct tg_provider_http_req *r);

#endif
