/*
 * state.h: the immutable snapshot every request reads (config, key table, projects, prices),
 * and how it is replaced.
 *
 * Workers never lock it on the hot path: each keeps a reference to the snapshot it last saw
 * and compares one atomic generation number per request; only when it changed does the worker
 * take the (short) lock to swap references. A change to keys or projects builds a whole new
 * snapshot from the store (tg_state_reload, blocking: thread pool or start-up only) and
 * publishes it, so the change is seen by the next request on every worker of this node.
 *
 * The config, price table and pepper live as long as the process; the snapshot borrows them.
 */
#ifndef TG_GATEWAY_STATE_H
#define TG_GATEWAY_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"
#include "gateway/config.h"
#include "gateway/microbatch.h"
#include "policy/keys.h"
#include "policy/limits.h"
#include "policy/price.h"
#include "policy/token_policy.h"
#include "store/store.h"

/*
 * A project as the snapshot holds it. Its allowed models come from two places: the store's
 * settings ({"models": [...]}, set through the admin API, parsed once at reload) win when they
 * name at least one model; otherwise the config file's list for a project of that name; when
 * neither names a model, every routed model is allowed.
 */
struct tg_project {
    char *id;
    char *org_id;
    char *name;
    char *environment;
    int64_t created_ms;
    int64_t archived_ms; /* 0 when active */
    bool is_archived;
    char *settings;                      /* the store's settings JSON object text ("{}" if none) */
    char **models;                       /* settings' allowed models; NULL when not set */
    size_t n_models;                     /* 0: the settings name no model (fall back) */
    const struct tg_project_conf *conf;  /* config settings by name, or NULL */
    struct tg_level_limits limits;       /* settings' rate_limits and budget (none if bad) */
    struct tg_token_policy token_policy; /* settings' token_policy (empty if bad) */
    struct tg_aliases aliases;           /* settings' aliases (none if bad) */
    struct tg_cache_settings cache;      /* settings' cache (off if bad) */
    struct tg_mb_settings embedding_batching; /* settings' embedding_batching (off if bad) */
    /* settings' "logging": {"bodies": true}: the access log carries the request and answer
     * bodies of this project's calls (off unless exactly true). */
    bool is_logging_bodies;
};

/* A key's limits (document kind "key_settings", id = key id), sorted by key id. */
struct tg_key_limits {
    char *key_id;
    struct tg_level_limits limits;
    struct tg_token_policy token_policy; /* the key's token_policy (empty when none) */
    struct tg_aliases aliases;
};

struct tg_state {
    atomic_int refs;
    uint64_t generation;
    const struct tg_config *config;      /* borrowed, process lifetime */
    const struct tg_price_table *prices; /* borrowed, process lifetime */
    char *org_id;
    char *org_name;
    struct tg_project *projects;
    size_t n_projects;
    struct tg_keyring *keys;
    struct tg_level_limits org_limits; /* document "org_settings" (id = org id) */
    struct tg_key_limits *key_limits;  /* sorted by key_id, for tg_state_key_limits */
    size_t n_key_limits;
};

/* Process-wide pieces the snapshots borrow; set once at start-up before tg_state_reload. */
struct tg_state_env {
    const struct tg_config *config;
    const struct tg_price_table *prices;
    struct tg_store *store;
    const unsigned char *pepper;
    size_t pepper_len;
    /* Rate limits and budgets (policy/admission.h), or NULL when not wired; set by serve.c
     * before the first request, owned by it. */
    struct tg_admission *admission;
};

void tg_state_env_set(const struct tg_state_env *env);
const struct tg_state_env *tg_state_env_get(void);

/* Builds a new snapshot from the store and publishes it. Blocking: never on a loop thread.
 * Returns 0 or a negative code (the old snapshot stays). */
int tg_state_reload(void);

/* The current generation (one atomic load). */
uint64_t tg_state_generation(void);

/* A reference to the current snapshot; release with tg_state_unref. */
struct tg_state *tg_state_acquire(void);
void tg_state_unref(struct tg_state *s);

/* Drops the published snapshot (at exit). */
void tg_state_shutdown(void);

/* Project lookups by id or by name. NULL when absent. */
const struct tg_project *tg_state_project(const struct tg_state *s, const char *id_or_name);

/* The limits of key key_id (document "key_settings"), or NULL when it has none. A binary
 * search: cheap enough for every request. */
const struct tg_level_limits *tg_state_key_limits(const struct tg_state *s, const char *key_id);

/* Everything key key_id's settings document holds (limits, token policy, aliases), or NULL. */
const struct tg_key_limits *tg_state_key_settings(const struct tg_state *s, const char *key_id);

/* True when the project may use model: the settings' list when it names any model, else the
 * config's list when it names any, else any model the config routes. */
bool tg_project_allows(const struct tg_project *p, const struct tg_config *c, const char *model);

#endif
