/*
 * proxy.h: the inference path: decode, policy, relay to the provider, settle.
 *
 * A request that reaches tg_proxy_handle is authenticated (key and project known). From here
 * the call decodes the JSON body once, checks the model against the project's allow-list,
 * rewrites the body for the provider (upstream model name; stream_options.include_usage for
 * streams), relays the provider's answer as it arrives (SSE events are read on the side for
 * usage, and forwarded verbatim; the client's write queue pauses the upstream), and ends by
 * pushing one ledger row with the provider-reported usage and its cost.
 */
#ifndef TG_GATEWAY_PROXY_H
#define TG_GATEWAY_PROXY_H

#include "gateway/worker.h"
#include "http/server.h"
#include "policy/keys.h"
#include "upstream/api.h"

/* Handles an inference request for api. key and project belong to state (borrowed; the call
 * takes its own reference to state for as long as it lives). Finishes req. */
void tg_proxy_handle(struct tg_worker *w, struct tg_http_req *req, enum tg_api api,
                     struct tg_state *state, const struct tg_key_entry *key,
                     const struct tg_project *project);

/* GET /v1/models and GET /v1/models/{id} (model_id NULL for the list). Finishes req. */
void tg_proxy_models(struct tg_http_req *req, const struct tg_state *state,
                     const struct tg_project *project, const char *model_id);

/* Cancels every call in flight on w (shutdown after the grace period); each is still
 * settled and accounted. */
void tg_proxy_cancel_all(struct tg_worker *w);

#endif
