/*
 * token_policy.h: the token-saving policy and the model aliases of one level (project or
 * key), as read from that level's settings object (the same documents as limits.h):
 *
 *   "token_policy": { "default_max_tokens": int,     injected when the request sets no cap
 *                     "max_tokens": int,             the largest cap a request may ask
 *                     "on_max_tokens": "clamp" | "refuse",   above max_tokens; "clamp"
 *                     "max_n": int,                  n (and best_of) clamped to it
 *                     "default_stop": [str],         at most 4; added when the request has none
 *                     "max_prompt_bytes": int,       larger prompts are refused
 *                     "forbidden_params": [str],     a request naming one is refused
 *                     "forced_params": {name: JSON value} }  set on every request
 *   "aliases": { "<alias>": {"tier": str} | {"model": str} }
 *       a request naming <alias> as its model goes to the named model, or to the cheapest
 *       (input + output price) allowed model of the tier.
 *
 * A key's policy overrides its project's member by member (tg_token_policy_merge). Applying
 * a policy works on a parsed request body and reports every change it made, for the
 * x-tollgate-policy response header. Nothing here does I/O.
 */
#ifndef TG_POLICY_TOKEN_POLICY_H
#define TG_POLICY_TOKEN_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/price.h"
#include "upstream/api.h"

#define TG_POLICY_MAX_STOP 4

struct tg_token_policy {
    int64_t default_max_tokens; /* 0: none */
    int64_t max_tokens;         /* 0: none */
    bool is_refuse;             /* on_max_tokens "refuse" */
    bool has_on_max_tokens;     /* on_max_tokens given (for merging) */
    int64_t max_n;              /* 0: none */
    char **default_stop;        /* NULL when not set */
    size_t n_default_stop;
    int64_t max_prompt_bytes; /* 0: none */
    char **forbidden_params;  /* NULL when not set */
    size_t n_forbidden_params;
    json_t *forced_params; /* an object (owned), or NULL */
};

struct tg_alias {
    char *name;
    char *tier; /* exactly one of tier and model is set */
    char *model;
};

struct tg_aliases {
    struct tg_alias *items;
    size_t n;
};

/* Reads the "token_policy" member of settings (NULL or absent: an empty policy) into out.
 * Returns 0, or TG_EPARSE with a message naming the member. */
int tg_token_policy_parse(const json_t *settings, struct tg_token_policy *out, char *err,
                          size_t err_cap);

void tg_token_policy_free(struct tg_token_policy *p);

/* True when p sets nothing. */
bool tg_token_policy_is_empty(const struct tg_token_policy *p);

/* The policy in force for a key of a project: each member of key (may be NULL) when set,
 * else project's (may be NULL). out borrows from both; do not free it. */
void tg_token_policy_merge(const struct tg_token_policy *key, const struct tg_token_policy *project,
                           struct tg_token_policy *out);

/* What applying a policy did. changes lists them ("max_tokens=clamped,stop=added"); on a
 * refusal, message and param say why (param names the request member at fault). */
struct tg_policy_result {
    char changes[256];
    char message[200];
    char param[64];
};

/* Applies p to body (a request object of api, modified in place). Returns 0 (changes may be
 * empty), or TG_EINVAL when the request is refused (message and param set). */
int tg_token_policy_apply(const struct tg_token_policy *p, enum tg_api api, json_t *body,
                          struct tg_policy_result *res);

/* Reads the "aliases" member of settings (NULL or absent: none). Returns 0 or TG_EPARSE. */
int tg_aliases_parse(const json_t *settings, struct tg_aliases *out, char *err, size_t err_cap);

void tg_aliases_free(struct tg_aliases *a);

/* The alias named name in key (may be NULL), else in project (may be NULL), or NULL. */
const struct tg_alias *tg_aliases_find(const struct tg_aliases *key,
                                       const struct tg_aliases *project, const char *name);

typedef bool (*tg_alias_allow_cb)(const char *model, void *arg);

/* The model among models[0..n) that allow accepts and that has the lowest input + output
 * price in prices (models without a price are skipped; ties keep the first). NULL if none. */
const char *tg_alias_pick_cheapest(const char *const *models, size_t n,
                                   const struct tg_price_table *prices, tg_alias_allow_cb allow,
                                   void *arg);

#endif
