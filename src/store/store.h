/*
 * store.h: the persistent store behind one table of operations.
 *
 * The embedded backend is SQLite (one file, WAL mode); a PostgreSQL backend will implement the
 * same ops. Every operation is blocking and thread-safe: callers run them on the libuv thread
 * pool, the ledger writer thread or at start-up, never on a loop thread. Records passed in are
 * borrowed; records handed to callbacks are valid only during the callback.
 *
 * Money is integer micro-dollars, times are Unix milliseconds, tokens are integers.
 */
#ifndef TG_STORE_STORE_H
#define TG_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"

struct tg_store;

struct tg_org_rec {
    const char *id; /* "org-..." */
    const char *name;
    int64_t created_ms;
};

struct tg_project_rec {
    const char *id; /* "proj_..." */
    const char *org_id;
    const char *name;        /* unique within the org, e.g. "production" */
    const char *environment; /* "development", "staging", "production" or custom */
    int64_t created_ms;
    int64_t archived_ms; /* 0 when active */
    /* The project's settings as a JSON object text (allowed models, limits, budgets,
     * deployments as later features add them), or NULL for "{}". Every change to it is a
     * numbered config version (version_append). */
    const char *settings;
};

enum tg_key_kind {
    TG_KEY_PROJECT = 0, /* inference key bound to one project */
    TG_KEY_ADMIN = 1,   /* admin API key of the org; role says owner or reader */
};

struct tg_key_rec {
    const char *id; /* "key_..." */
    const char *org_id;
    const char *project_id; /* NULL for admin keys */
    const char *name;
    const char *redacted; /* visible form, e.g. "tg-AbCd...wXyZ" */
    unsigned char hash[TG_SHA256_BYTES];
    enum tg_key_kind kind;
    const char *role;          /* admin keys: "owner" | "reader"; project keys: "member" */
    const char *owner_user_id; /* NULL when none */
    int64_t created_ms;
    int64_t expires_ms; /* 0: never */
    int64_t revoked_ms; /* 0: active */
    int64_t last_used_ms;
};

/* One ledger row: one upstream attempt of one request (attempt 1 is the first). */
struct tg_ledger_row {
    char request_id[40];
    int attempt;
    int64_t time_ms; /* when the request was admitted */
    char org_id[40];
    char project_id[40];
    char key_id[40];
    char user_id[40];
    char endpoint[32];        /* tg_api_name(): "chat.completions", ... */
    char model_requested[96]; /* as the client named it */
    char provider[64];        /* provider name from config */
    char deployment[96];      /* provider-side model or deployment */
    int64_t prompt_tokens;
    int64_t cached_tokens;
    int64_t completion_tokens;
    int64_t reasoning_tokens;
    int64_t cost_micros;
    int64_t saved_micros; /* a cache hit: the cost of the answer it replayed; else 0 */
    int status;           /* HTTP status given to the client (or 499 client closed) */
    int64_t latency_ms;   /* admission to last byte */
    int64_t ttft_ms;      /* admission to first byte to the client; -1 when none */
    bool is_stream;
    bool is_usage_estimated; /* usage not reported by the provider; estimated (see DESIGN) */
    char error[128];         /* short reason for failures, "" on success */
};

/* Usage query: sums of the ledger in time buckets, optionally grouped. */
struct tg_usage_query {
    const char *org_id;
    int64_t start_ms;       /* inclusive */
    int64_t end_ms;         /* exclusive */
    int64_t bucket_ms;      /* 60000, 3600000 or 86400000 */
    const char *project_id; /* filters: NULL for any */
    const char *key_id;
    const char *model;
    const char *endpoint;         /* one endpoint (tg_api_name), NULL for any */
    const char *const *endpoints; /* several endpoints, NULL/0 for any; a row must match */
    size_t n_endpoints;           /* both this list and endpoint when both are set */
    bool group_by_project;
    bool group_by_key;
    bool group_by_model;
};

struct tg_usage_result {
    int64_t bucket_start_ms;
    const char *project_id; /* NULL unless grouped by it */
    const char *key_id;
    const char *model;
    int64_t requests;
    int64_t prompt_tokens;
    int64_t cached_tokens;
    int64_t completion_tokens;
    int64_t reasoning_tokens;
    int64_t cost_micros;
};

/* Settled spend of one budget level (spend_by_level): a key (key_id set), a project
 * (project_id set) or the whole organization (both NULL). */
struct tg_spend_rec {
    const char *key_id;
    const char *project_id;
    int64_t cost_micros;
};

/* Listing callbacks run on the calling thread while the store is locked: they must not call
 * back into the store. A non-zero return stops the listing, and the op returns that value. */
/*
 * The organization model beyond orgs, projects and keys (users, invites, project members,
 * service accounts) is kept as documents: a kind, an id, a scope and a JSON object. The admin
 * layer owns their shapes and checks (unique e-mails, names); the store keeps them, lists them
 * in creation order, and makes a group of changes one transaction (transact).
 */
struct tg_doc {
    const char *kind; /* "user", "invite", "member", "service_account" */
    const char *id;   /* "user-...", "invite-...", "member-...", "svc_acct_..." */
    const char *org_id;
    const char *project_id; /* NULL for org-wide documents */
    const char *data;       /* JSON object text */
    int64_t created_ms;
    int64_t updated_ms;
};

/*
 * One audit log entry. Entries form a hash chain: hash = SHA-256 over prev_hash and the
 * canonical encoding of every other field (tg_audit_hash), and prev_hash is the hash of the
 * entry before it (all zero for the first). Editing or deleting any entry breaks the chain at
 * that point, which tg_audit_verify finds.
 */
struct tg_audit_rec {
    int64_t seq;    /* 1, 2, ...: assigned by audit_append */
    const char *id; /* "audit_log-..." */
    const char *org_id;
    int64_t time_ms;
    const char *type;        /* "project.created", "api_key.deleted", ... (OpenAI's names) */
    const char *actor_type;  /* "api_key" (admin API) */
    const char *actor_id;    /* key id */
    const char *actor_user;  /* user id behind the key, or NULL */
    const char *project_id;  /* the project concerned, or NULL */
    const char *target_id;   /* the object changed */
    const char *before;      /* JSON text of the object before, or NULL (created) */
    const char *after;       /* JSON text after, or NULL (deleted) */
    const char *source_addr; /* client address */
    unsigned char prev_hash[TG_SHA256_BYTES];
    unsigned char hash[TG_SHA256_BYTES];
};

/* Filters for audit_list; NULL / 0 fields match anything. Entries come newest first. */
struct tg_audit_query {
    const char *org_id;
    const char *const *types;
    size_t n_types;
    const char *const *actor_ids;
    size_t n_actor_ids;
    const char *const *project_ids;
    size_t n_project_ids;
    int64_t since_ms;   /* inclusive */
    int64_t until_ms;   /* exclusive; 0 = no bound */
    int64_t before_seq; /* only entries with seq < before_seq (cursor); 0 = none */
    size_t limit;       /* 0 = no limit */
};

/* One numbered version of a project's settings (config history). */
struct tg_version_rec {
    int64_t number; /* 1, 2, ... per org: assigned by version_append */
    const char *org_id;
    const char *project_id;
    int64_t time_ms;
    const char *actor_id;
    const char *reason;   /* "project.updated", "rollback to 3", ... */
    const char *settings; /* JSON text of the whole settings object at this version */
};

/*
 * One notification to deliver: an event (event_key names it, e.g.
 * "budget:project:proj_x:1767225600000:80") for one channel and target. The outbox is durable
 * so a restart neither loses nor repeats a notification: (event_key, channel, target) is
 * unique, and a row stays due, with back-off, until a delivery succeeds.
 */
struct tg_outbox_rec {
    int64_t id; /* assigned by outbox_put */
    const char *org_id;
    const char *event_key;
    const char *channel; /* "webhook" | "email" */
    const char *target;  /* URL or e-mail address */
    const char *payload; /* JSON object text */
    int64_t created_ms;
    int attempts;            /* failed deliveries so far */
    int64_t next_attempt_ms; /* due from then */
    int64_t delivered_ms;    /* 0 until delivered */
    const char *last_error;  /* NULL when none */
};

/* One cached response (cache/cache.h's tg_cache_entry, keyed by its 32-byte hash). */
struct tg_cache_rec {
    const unsigned char *key; /* TG_SHA256_BYTES */
    int status;
    bool is_stream;
    const char *content_type;
    const char *project_id;
    const char *model;
    int64_t prompt_tokens;
    int64_t cached_tokens;
    int64_t completion_tokens;
    int64_t reasoning_tokens;
    int64_t cost_micros;
    int64_t created_ms;
    int64_t expires_ms; /* 0: never */
    const char *body;
    size_t body_len;
};

/*
 * Alert rules (monitor/alerts.h). The rule's shape is the admin API's: scope (project_id and
 * model, NULL = any), metric, condition, threshold, window, min_requests, channels as a JSON
 * object text ({"webhooks": [...], "emails": [...]}).
 */
struct tg_alert_rule_rec {
    const char *id; /* "alr_..." */
    const char *org_id;
    const char *name;
    const char *project_id; /* NULL: every project */
    const char *model;      /* NULL: every model (requested name) */
    const char *metric;     /* "error_rate", "p95_latency_ms", ... */
    const char *condition;  /* "above" | "below" | "change" */
    double threshold;
    int64_t window_s;
    int64_t min_requests;
    const char *channels; /* JSON object text */
    bool is_enabled;
    int64_t created_ms;
    int64_t updated_ms;
};

/* One firing of a rule: open (resolved_ms 0) while the rule fires. The open event is the
 * rule's persisted state, so a restart neither forgets nor repeats a firing. */
struct tg_alert_event_rec {
    const char *id; /* "alt_..." */
    const char *org_id;
    const char *rule_id;
    const char *name; /* the rule's, at the time it fired */
    const char *metric;
    const char *project_id;
    const char *model;
    double value; /* the metric when it fired (updated when it resolves) */
    double threshold;
    int64_t fired_ms;
    int64_t resolved_ms; /* 0 while firing */
};

/* Feedback from an application about one of its requests (monitor/feedback.h). */
struct tg_feedback_rec {
    const char *id; /* "fb_..." */
    const char *org_id;
    const char *project_id;
    const char *request_id;
    const char *model; /* the request's requested model, provider and deployment */
    const char *provider;
    const char *deployment;
    double score;        /* 0..1 */
    const char *label;   /* NULL when none */
    const char *comment; /* NULL when none */
    int64_t created_ms;
};

/* One group of feedback_aggregate: feedback on model (and deployment when grouped by it, else
 * NULL) with label (NULL: feedback without one), its count and score sum. */
struct tg_feedback_agg {
    const char *model;
    const char *deployment;
    const char *label;
    int64_t count;
    double score_sum;
};

typedef int (*tg_store_outbox_cb)(const struct tg_outbox_rec *r, void *arg);
typedef int (*tg_store_cache_cb)(const struct tg_cache_rec *r, void *arg);
typedef int (*tg_store_org_cb)(const struct tg_org_rec *r, void *arg);
typedef int (*tg_store_project_cb)(const struct tg_project_rec *r, void *arg);
typedef int (*tg_store_key_cb)(const struct tg_key_rec *r, void *arg);
typedef int (*tg_store_usage_cb)(const struct tg_usage_result *r, void *arg);
typedef int (*tg_store_spend_cb)(const struct tg_spend_rec *r, void *arg);
typedef int (*tg_store_doc_cb)(const struct tg_doc *d, void *arg);
typedef int (*tg_store_audit_cb)(const struct tg_audit_rec *r, void *arg);
typedef int (*tg_store_version_cb)(const struct tg_version_rec *r, void *arg);
typedef int (*tg_store_ledger_cb)(const struct tg_ledger_row *r, void *arg);
typedef int (*tg_store_alert_rule_cb)(const struct tg_alert_rule_rec *r, void *arg);
typedef int (*tg_store_alert_event_cb)(const struct tg_alert_event_rec *r, void *arg);
typedef int (*tg_store_feedback_agg_cb)(const struct tg_feedback_agg *r, void *arg);
typedef int (*tg_store_tx_fn)(struct tg_store *s, void *arg);

struct tg_store_ops {
    const char *name; /* "sqlite" */
    void (*close)(struct tg_store *s);
    /* Inserts the org and its projects in one transaction if the store holds no org yet.
     * Sets *created to whether it did. */
    int (*bootstrap)(struct tg_store *s, const struct tg_org_rec *org,
                     const struct tg_project_rec *projects, size_t n_projects,
                     const struct tg_key_rec *admin_key, bool *created);
    int (*orgs_list)(struct tg_store *s, tg_store_org_cb cb, void *arg);
    int (*projects_list)(struct tg_store *s, const char *org_id, tg_store_project_cb cb, void *arg);
    int (*project_insert)(struct tg_store *s, const struct tg_project_rec *r);
    int (*key_insert)(struct tg_store *s, const struct tg_key_rec *r);
    /* Sets revoked_ms on an active key; TG_ENOTFOUND when no such active key. */
    int (*key_revoke)(struct tg_store *s, const char *key_id, int64_t when_ms);
    /* All keys of the org (revoked ones too), oldest first. */
    int (*keys_list)(struct tg_store *s, const char *org_id, tg_store_key_cb cb, void *arg);
    /* Appends rows in one transaction; a row whose (request_id, attempt) exists is skipped,
     * so a replayed batch adds nothing. */
    int (*ledger_append)(struct tg_store *s, const struct tg_ledger_row *rows, size_t n);
    int (*usage_query)(struct tg_store *s, const struct tg_usage_query *q, tg_store_usage_cb cb,
                       void *arg);
    /* Sums cost_micros of the org's ledger rows with time_ms >= since_ms (a budget period's
     * start, to seed admission at start-up): cb once per key, once per project, then once for
     * the organization (always, 0 when no row). */
    int (*spend_by_level)(struct tg_store *s, const char *org_id, int64_t since_ms,
                          tg_store_spend_cb cb, void *arg);

    /* Runs fn(s, arg) in one transaction: every op fn calls joins it; a negative return from
     * fn (or a failed commit) rolls everything back and is returned. Transactions nest (an
     * inner one is a savepoint). Other threads wait until it ends. */
    int (*transact)(struct tg_store *s, tg_store_tx_fn fn, void *arg);

    /* Projects: a full update of name, environment, archived_ms and settings by id
     * (TG_ENOTFOUND; TG_EEXISTS when the name is taken in the org). */
    int (*project_update)(struct tg_store *s, const struct tg_project_rec *r);
    /* Changes role (and name) of every admin key a user owns (when the user's role changes). */
    int (*keys_set_role_by_user)(struct tg_store *s, const char *user_id, const char *role);

    /* Documents. get calls cb once or returns TG_ENOTFOUND; put inserts or replaces by
     * (kind, id); delete returns TG_ENOTFOUND when absent; list is oldest first, project_id
     * NULL meaning any project (org-wide documents included). */
    int (*doc_get)(struct tg_store *s, const char *kind, const char *id, tg_store_doc_cb cb,
                   void *arg);
    int (*doc_put)(struct tg_store *s, const struct tg_doc *d);
    int (*doc_delete)(struct tg_store *s, const char *kind, const char *id);
    int (*doc_list)(struct tg_store *s, const char *kind, const char *org_id,
                    const char *project_id, tg_store_doc_cb cb, void *arg);

    /* Audit log. append sets r->seq, r->prev_hash and r->hash (from the last entry of the
     * org) and inserts it; list filters, newest first; all walks every entry of the org in
     * chain order (oldest first) for verification. */
    int (*audit_append)(struct tg_store *s, struct tg_audit_rec *r);
    int (*audit_list)(struct tg_store *s, const struct tg_audit_query *q, tg_store_audit_cb cb,
                      void *arg);
    int (*audit_all)(struct tg_store *s, const char *org_id, tg_store_audit_cb cb, void *arg);

    /* Config history. append sets r->number; list is newest first (project_id NULL = all);
     * get returns TG_ENOTFOUND when the number does not exist in the org. */
    int (*version_append)(struct tg_store *s, struct tg_version_rec *r);
    int (*version_list)(struct tg_store *s, const char *org_id, const char *project_id,
                        tg_store_version_cb cb, void *arg);
    int (*version_get)(struct tg_store *s, const char *org_id, int64_t number,
                       tg_store_version_cb cb, void *arg);

    /* Notification outbox. put inserts r (id, attempts, delivered_ms and last_error are
     * ignored) unless a row with its (event_key, channel, target) exists; *inserted says
     * which (may be NULL). due lists undelivered rows with next_attempt_ms <= now_ms, earliest
     * first, at most limit (0 = no limit). mark records one delivery attempt of row id: with
     * delivered_ms > 0 it is delivered; otherwise attempts grows by one, error is kept and the
     * row is due again at next_attempt_ms. TG_ENOTFOUND when no such row. */
    int (*outbox_put)(struct tg_store *s, const struct tg_outbox_rec *r, bool *inserted);
    int (*outbox_due)(struct tg_store *s, int64_t now_ms, size_t limit, tg_store_outbox_cb cb,
                      void *arg);
    int (*outbox_mark)(struct tg_store *s, int64_t id, int64_t delivered_ms, const char *error,
                       int64_t next_attempt_ms);

    /* The outbox of the org, newest first, at most limit rows (0 = no limit). */
    int (*outbox_list)(struct tg_store *s, const char *org_id, size_t limit, tg_store_outbox_cb cb,
                       void *arg);

    /* The last attempt's ledger row of request_id in project_id: cb once, or TG_ENOTFOUND. */
    int (*ledger_find)(struct tg_store *s, const char *request_id, const char *project_id,
                       tg_store_ledger_cb cb, void *arg);

    /* Alert rules. put inserts or replaces by id; get calls cb once or returns TG_ENOTFOUND;
     * delete returns TG_ENOTFOUND when absent (the rule's events stay: history); list is the
     * org's rules, oldest first. */
    int (*alert_rule_put)(struct tg_store *s, const struct tg_alert_rule_rec *r);
    int (*alert_rule_get)(struct tg_store *s, const char *id, tg_store_alert_rule_cb cb, void *arg);
    int (*alert_rule_delete)(struct tg_store *s, const char *id);
    int (*alert_rules_list)(struct tg_store *s, const char *org_id, tg_store_alert_rule_cb cb,
                            void *arg);
    /* Alert events. put inserts or replaces by id. list gives the org's events newest first
     * (by fired_ms), only those of rule_id unless NULL, only open ones (state 1), resolved
     * ones (state 2) or all (0), at most limit (0 = no limit). */
    int (*alert_event_put)(struct tg_store *s, const struct tg_alert_event_rec *r);
    int (*alert_events_list)(struct tg_store *s, const char *org_id, const char *rule_id, int state,
                             size_t limit, tg_store_alert_event_cb cb, void *arg);

    /* Feedback. insert adds r (TG_EEXISTS on a duplicate id). aggregate sums the org's
     * feedback created in [start_ms, end_ms) per model (and deployment when by_deployment)
     * and label, ordered by those. */
    int (*feedback_insert)(struct tg_store *s, const struct tg_feedback_rec *r);
    int (*feedback_aggregate)(struct tg_store *s, const char *org_id, int64_t start_ms,
                              int64_t end_ms, bool by_deployment, tg_store_feedback_agg_cb cb,
                              void *arg);

    /* Response cache. get calls cb with the entry under key (TG_SHA256_BYTES) unless it
     * expired at now_ms (then it is deleted); TG_ENOTFOUND when there is none. put replaces
     * the entry under r->key. invalidate removes every entry (all) or those matching every
     * given condition (project_id, model non-NULL; created_before_ms > 0: created before it),
     * none when no condition is given; *n_removed (may be NULL) gets their number. stats
     * counts the entries and their body bytes. */
    int (*cache_get)(struct tg_store *s, const unsigned char *key, int64_t now_ms,
                     tg_store_cache_cb cb, void *arg);
    int (*cache_put)(struct tg_store *s, const struct tg_cache_rec *r);
    int (*cache_invalidate)(struct tg_store *s, bool all, const char *project_id, const char *model,
                            int64_t created_before_ms, size_t *n_removed);
    int (*cache_stats)(struct tg_store *s, size_t *n_entries, size_t *bytes);
};

/* The chain hash of r (over r->prev_hash and every field except seq and hash). */
void tg_audit_hash(const struct tg_audit_rec *r, unsigned char out[TG_SHA256_BYTES]);

struct tg_store {
    const struct tg_store_ops *ops;
};

/* Opens (creating and migrating as needed) the SQLite store at path. Returns 0 and sets *out,
 * or a negative code with a message in err. */
int tg_store_sqlite_open(const char *path, struct tg_store **out, char *err, size_t err_cap);

#endif
