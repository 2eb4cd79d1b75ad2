/*
 * config.h: the gateway's configuration, loaded from YAML (config/tollgate.example.yaml
 * documents every key) or made from the environment when no file is given.
 *
 * A loaded config is immutable. Provider secrets are resolved here from `env:NAME` or
 * `file:PATH` references; an inline secret is refused with a message saying how to fix it.
 * Nothing in this module logs a secret.
 */
#ifndef TG_GATEWAY_CONFIG_H
#define TG_GATEWAY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "policy/price.h"
#include "policy/router.h"
#include "upstream/provider.h"

/* One place a route's model is served: a provider and its name for the model. */
struct tg_model_deployment {
    char *provider;       /* provider name */
    char *upstream_model; /* provider-side name; the route's name by default */
    uint32_t weight;      /* 1 */
    int32_t priority;     /* tier, lower preferred; 0 */
    /* timeouts: {connect_ms, first_byte_ms, idle_ms, total_ms}: each field given overrides
     * the provider's for calls to this deployment; a zero field is the provider's. */
    struct tg_upstream_timeouts timeouts;
};

/* A model name clients use, mapped to a provider. name "*" matches any model not listed
 * (passed to the provider under its own name). */
struct tg_model_route {
    char *name;
    char *provider;       /* provider name */
    char *upstream_model; /* provider-side name (Azure: deployment); defaults to name */
    /* Routing (policy/router.h). upstream_model and provider above are the first
     * deployment's. A route made by hand (tests) may leave these zero: it then serves from
     * provider alone, without retries. */
    struct tg_model_deployment *deployments; /* >= 1 in a loaded config */
    size_t n_deployments;
    enum tg_route_strategy strategy; /* weighted */
    char **fallbacks;                /* model names tried in order once deployments fail */
    size_t n_fallbacks;
    int retry_max_attempts;         /* retry.max_attempts: attempts across deployments, 3 */
    uint64_t retry_backoff_ms;      /* retry.backoff_ms: doubled per retry, 100 */
    struct tg_breaker_conf breaker; /* failures 0 (the single-provider form): never opens */
    struct tg_router *router;       /* runtime state shared by the workers, or NULL */
    char *tier;                     /* tier: the model tier it belongs to (aliases), or NULL */
};

/* model_tiers: {name: [models]}: the models an alias naming the tier may resolve to
 * (policy/token_policy.h), besides the routes whose tier: names it. */
struct tg_model_tier {
    char *name;
    char **models;
    size_t n_models;
};

/* Per-project settings given in the config (issue-2 scope: the model allow-list). */
struct tg_project_conf {
    char *name;    /* project name, e.g. "production" */
    char **models; /* allowed model names; NULL/0 means every configured model */
    size_t n_models;
};

/* notifications.smtp: how spend alerts are mailed (notify/notifier.h). host NULL: no e-mail. */
struct tg_smtp_conf {
    char *host;
    int port;            /* 25 */
    bool starttls;       /* require STARTTLS on a plain connection */
    bool is_tls;         /* implicit TLS from the first byte (smtps, usually port 465) */
    char *username;      /* "env:NAME" / "file:PATH" reference, or NULL */
    char *password;      /* reference, or NULL */
    char *from;          /* sender address; "tollgate@localhost" */
    uint64_t timeout_ms; /* one message, connection to QUIT; 30000 */
};

struct tg_config {
    char *source; /* file path, or "environment" */

    char *listen_host; /* "127.0.0.1" */
    int listen_port;   /* 8080 */
    int workers;       /* 0 = one per core */
    char *data_dir;    /* "./tollgate-data" */
    char *log_level;   /* "info" */

    struct tg_http_limits http; /* limits.* */
    int max_json_depth;         /* limits.max_json_depth, 64 */
    size_t max_response_bytes;  /* limits.max_response_bytes: non-stream upstream body */
    size_t max_sse_event_bytes; /* limits.max_sse_event_bytes: 1 MiB */

    struct tg_upstream_timeouts upstream; /* upstream.*_timeout_ms (defaults for providers) */
    uint64_t disconnect_drain_ms;         /* upstream.disconnect_drain_ms, 30000 */
    uint64_t shutdown_grace_ms;           /* shutdown_grace_ms, 30000 */

    size_t ledger_batch_rows; /* ledger.batch_rows, 512 */
    uint64_t ledger_flush_ms; /* ledger.flush_ms, 200 */

    char *pepper_ref; /* keys.pepper: "env:NAME" / "file:PATH"; NULL = data_dir/pepper */

    struct tg_provider *providers; /* api_key resolved; ops set */
    size_t n_providers;
    struct tg_model_route *models;
    size_t n_models;
    struct tg_project_conf *projects;
    size_t n_projects;
    struct tg_model_tier *tiers; /* model_tiers */
    size_t n_tiers;
    struct tg_price *prices; /* overrides of the built-in table */
    size_t n_prices;

    struct tg_smtp_conf smtp;    /* notifications.smtp */
    uint64_t notify_interval_ms; /* notifications.interval_ms: notifier tick, 1000 */
    uint64_t webhook_timeout_ms; /* notifications.webhook_timeout_ms, 10000 */

    int64_t default_org_budget_micros; /* budgets.default_org_monthly_usd: "100" (first start) */
    int budget_tz_offset_minutes;      /* budgets.timezone_offset_minutes: month boundary, 0 */

    bool is_mock_default; /* made from the environment with no OPENAI_API_KEY */

    /* cache.shared_projects: names of the projects whose response caches are one partition
     * (each project's is its own otherwise). */
    char **cache_shared_projects;
    size_t n_cache_shared_projects;

    /* metrics.bearer_token: an "env:NAME" / "file:PATH" reference, resolved at load into
     * metrics_token (never logged). NULL: GET /metrics needs no credential. */
    char *metrics_token_ref;
    char *metrics_token;

    /* access_log (gateway/access_log.h): path is a file appended to, "-" for stdout, NULL
     * (the default) for no access log; queue is how many lines may wait for the writer
     * before new ones are dropped and counted, 8192. */
    char *access_log_path;
    size_t access_log_queue;
};

/* Loads and validates the YAML file at path. Returns 0 and sets *out, or a negative code
 * with a one-line message in err naming the file, line and key. */
int tg_config_load(const char *path, struct tg_config **out, char *err, size_t err_cap);

/* The embedded default: the openai provider (base https://api.openai.com/v1, key
 * env:OPENAI_API_KEY) routing every model when OPENAI_API_KEY is set; else the mock provider
 * with is_mock_default set. */
int tg_config_from_env(struct tg_config **out, char *err, size_t err_cap);

void tg_config_free(struct tg_config *c);

/* Resolves a secret reference ("env:NAME" or "file:PATH"; file contents are trimmed of
 * trailing newlines). Returns a heap string (caller frees) or NULL with a message in err;
 * anything that is not a reference is refused with a message saying how to fix it. */
char *tg_config_resolve_secret(const char *ref, const char *what, char *err, size_t err_cap);

/* True when the operator listed project_name in cache.shared_projects: its cache entries
 * live in the one shared partition (cache.h, tg_cache_key) with the other listed projects'. */
bool tg_config_cache_shared(const struct tg_config *c, const char *project_name);

/* The provider named name, or NULL. */
const struct tg_provider *tg_config_provider(const struct tg_config *c, const char *name);

/* The route for a model: exact name, else the "*" route, else NULL. */
const struct tg_model_route *tg_config_route(const struct tg_config *c, const char *model);

/* The models of tier: those model_tiers lists, then the routes with that tier: (no name
 * twice). Writes up to cap borrowed names into out; returns how many. */
size_t tg_config_tier_models(const struct tg_config *c, const char *tier, const char **out,
                             size_t cap);

#endif
