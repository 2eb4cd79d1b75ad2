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
    int status;         /* HTTP status given to the client (or 499 client closed) */
    int64_t latency_ms; /* admission to last byte */
    int64_t ttft_ms;    /* admission to first byte to the client; -1 when none */
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

/* Listing callbacks run on the calling thread while the store is locked: they must not call
 * back into the store. A non-zero return stops the listing, and the op returns that value. */
typedef int (*tg_store_org_cb)(const struct tg_org_rec *r, void *arg);
typedef int (*tg_store_project_cb)(const struct tg_project_rec *r, void *arg);
typedef int (*tg_store_key_cb)(const struct tg_key_rec *r, void *arg);
typedef int (*tg_store_usage_cb)(const struct tg_usage_result *r, void *arg);

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
};

struct tg_store {
    const struct tg_store_ops *ops;
};

/* Opens (creating and migrating as needed) the SQLite store at path. Returns 0 and sets *out,
 * or a negative code with a message in err. */
int tg_store_sqlite_open(const char *path, struct tg_store **out, char *err, size_t err_cap);

#endif
