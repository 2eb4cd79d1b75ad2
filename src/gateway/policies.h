/*
 * policies.h: the token policy and the model aliases of a request's key and project
 * (policy/token_policy.h), applied by the proxy right after it decoded the request.
 *
 * Kept out of proxy.c so the relay only asks two questions: does anything apply to this
 * request (cheap, no parse), and, when it does, what the parsed body, the model and the
 * x-tollgate-policy header become.
 */
#ifndef TG_GATEWAY_POLICIES_H
#define TG_GATEWAY_POLICIES_H

#include <jansson.h>
#include <stdbool.h>

#include "gateway/state.h"
#include "upstream/api.h"

struct tg_policy_outcome {
    const char *model; /* the model to route (borrowed from the snapshot or the argument) */
    bool is_alias;     /* model was resolved from an alias */
    char header[256];  /* x-tollgate-policy value; "" when nothing changed */
    int status;        /* on a refusal: 400 (policy) or 404 (alias resolves to nothing) */
    char message[256];
    char param[64];
};

/* True when key key_id's or project p's token policy is not empty, or model is one of their
 * aliases: the request must then be parsed and given to tg_policies_apply. */
bool tg_policies_touch(const struct tg_state *st, const struct tg_project *p, const char *key_id,
                       const char *model);

/* Resolves model through the aliases (key's over project's) and applies the merged policy to
 * body (modified in place; its "model" set to the resolved name). Returns 0, or TG_EINVAL
 * with out->status, message and param saying how to answer. */
int tg_policies_apply(const struct tg_state *st, const struct tg_project *p, const char *key_id,
                      enum tg_api api, const char *model, json_t *body,
                      struct tg_policy_outcome *out);

#endif
