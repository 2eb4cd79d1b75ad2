/*
 * admin_int.h: what the admin API's files share: the route table, the access levels, the job
 * that runs a route on the thread pool, and the audit and history hooks every change calls.
 *
 * Every route is one row { method, pattern, access, summary, run } in a table of its resource
 * file (admin_projects.c, admin_users.c, ...); admin.c joins the tables, matches the path,
 * checks access, and runs the row's handler on the libuv thread pool, where it may use the
 * store (blocking). The README's route table lists the same rows (the role-walk test reads
 * it), so a route and its documented roles cannot drift apart.
 *
 * Access levels (org roles "owner" and "reader"; project roles "owner" and "member"):
 *   ADMIN_ORG_READ     any admin key: basic organization information
 *   ADMIN_PROJECT      owners; readers only for projects they are a member of (the pattern
 *                      names the project as {project_id}, by id or name)
 *   ADMIN_OWNER        owners only: billing (budgets, limits, prices) and team management
 *                      (users, invites, roles, members)
 * A denial is a 403 with an OpenAI error (type invalid_request_error, code "insufficient_role"
 * or "not_a_project_member"); an unknown project in the path is a 404.
 *
 * Routes other than GET run inside one store transaction (ops->transact): when the handler
 * answers with a status of 400 or more, or the commit fails, every change it made (its audit
 * entries included) is rolled back, so nothing is ever half-applied. When the handler set
 * reload, the state snapshot is rebuilt after the commit and before the answer goes out.
 *
 * Documents (store.h struct tg_doc) and their JSON shapes, shared by every file:
 *   kind "user"             id "user-<24 base62>"  org-wide
 *       {"name": str, "email": str (unique in the org, lower-cased), "role": "owner"|"reader"}
 *   kind "invite"           id "invite-<24>"       org-wide
 *       {"email", "role", "token_hash": hex SHA-256 of the one-time token,
 *        "expires_at_ms", "accepted_at_ms" (0 = not yet), "projects": [{"id", "role"}]}
 *   kind "member"           id "pm_<project_id>_<user_id>"  project_id set
 *       {"user_id": str, "role": "owner"|"member", "added_at_ms": int}
 *   kind "service_account"  id "svc_acct_<24>"     project_id set
 *       {"name": str, "role": "member"|"owner"}
 * Admin keys belong to a user (owner_user_id) and carry the user's org role; project keys
 * belong to a user or a service account (owner_user_id holds either id). Project settings
 * (store.h tg_project_rec.settings) are a JSON object: {"models": [str, ...]} now; the limits,
 * budgets and deployments issues add members of their own.
 */
#ifndef TG_ADMIN_ADMIN_INT_H
#define TG_ADMIN_ADMIN_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "gateway/state.h"
#include "http/server.h"
#include "policy/keys.h"
#include "store/store.h"

enum admin_access {
    ADMIN_ORG_READ,
    ADMIN_PROJECT,
    ADMIN_OWNER,
};

#define ADMIN_MAX_PARAMS 4

/* One admin request in progress. Lives in the request's arena until the answer is sent. */
struct admin_job {
    uv_work_t work;
    struct tg_http_req *req;
    struct tg_state *state;         /* a reference of the job's own */
    struct tg_store *store;         /* the process store */
    const struct tg_key_entry *key; /* the caller's admin key */
    const char *user_id;            /* the user behind the key, or NULL */
    bool is_owner;                  /* org role of the caller */
    /* Path parameters by name, in pattern order: {project_id} is resolved to the project's id
     * (a name is accepted) and project is set. */
    const char *param_names[ADMIN_MAX_PARAMS];
    const char *params[ADMIN_MAX_PARAMS];
    size_t n_params;
    const struct tg_project *project; /* from {project_id}, or NULL */
    /* Parsed JSON body of POST requests, or NULL (GET; or a body whose Content-Type is not
     * JSON, such as apply's YAML file, which the handler reads from req->body). */
    json_t *body;
    const struct admin_route *route;

    /* Set by the handler: the answer (status 200 and an empty body by default) and whether the
     * state snapshot must be rebuilt before it is sent (keys, projects, roles changed). */
    int status;
    struct tg_buf out;
    bool reload;
    /* Set by a handler whose answer is not JSON (export's YAML); NULL means application/json.
     * admin_error resets it. */
    const char *content_type;
};

typedef void (*admin_run_fn)(struct admin_job *j);

struct admin_route {
    enum tg_http_method method;
    const char *pattern; /* under /v1/organization/, e.g. "projects/{project_id}/api_keys" */
    enum admin_access access;
    const char *summary; /* one line for the README table */
    admin_run_fn run;    /* on the thread pool */
};

/* The route tables of the resource files, each ended by a row with pattern NULL. */
extern const struct admin_route tg_admin_routes_projects[];
extern const struct admin_route tg_admin_routes_keys[];
extern const struct admin_route tg_admin_routes_usage[];
extern const struct admin_route tg_admin_routes_users[];
extern const struct admin_route tg_admin_routes_service_accounts[];
extern const struct admin_route tg_admin_routes_audit[];
extern const struct admin_route tg_admin_routes_history[];
extern const struct admin_route tg_admin_routes_rate_limits[];
extern const struct admin_route tg_admin_routes_budgets[];
extern const struct admin_route tg_admin_routes_costs[];
extern const struct admin_route tg_admin_routes_deployments[];
extern const struct admin_route tg_admin_routes_policies[];
extern const struct admin_route tg_admin_routes_cache[];
extern const struct admin_route tg_admin_routes_monitor[];
extern const struct admin_route tg_admin_routes_dashboard[];

/* The public route POST /v1/organization/invites/accept (admin_users.c): runs with key NULL,
 * inside a transaction like every other change. */
void admin_invite_accept(struct admin_job *j);

/* The value of path parameter name, or NULL. */
const char *admin_param(const struct admin_job *j, const char *name);

/* Query parameter (percent-decoded), or NULL. */
const char *admin_query(struct admin_job *j, const char *name);

/* Answers with an OpenAI error object: {"error":{message, type:"invalid_request_error", param,
 * code}}. Any body written so far is replaced. */
void admin_error(struct admin_job *j, int status, const char *message, const char *param,
                 const char *code);

/* The store failed (rc): 404 for TG_ENOTFOUND, 409 for TG_EEXISTS, else 500. */
void admin_store_error(struct admin_job *j, int rc, const char *what);

/*
 * Records one change in the audit log (inside the handler's transaction, so a change and its
 * entry commit together). before/after are JSON object texts or NULL. Returns 0 or the store's
 * error (the handler then fails the transaction).
 */
int admin_audit(struct admin_job *j, const char *type, const char *project_id,
                const char *target_id, const char *before, const char *after);

/* Records a new numbered version of a project's settings (config history), inside the
 * transaction. Returns 0 or the store's error. */
int admin_version(struct admin_job *j, const char *project_id, const char *settings,
                  const char *reason);

/*
 * Cursor pagination in OpenAI's list shape: begin writes {"object":"list","data":[ ; add
 * writes one item (a JSON object text) unless the page is full; end closes with first_id,
 * last_id and has_more. limit comes from ?limit= (1..100, default 20) and after from ?after=
 * (items are skipped until the one with that id has passed).
 */
struct admin_page {
    struct admin_job *j;
    size_t limit;
    const char *after;
    bool is_after_seen;
    size_t n;
    bool has_more;
    char first_id[96];
    char last_id[96];
};

/* Returns false (after answering 400) when limit or after is malformed. */
bool admin_page_begin(struct admin_page *pg, struct admin_job *j);
/* Returns false once the page is full (has_more is then set): the caller may stop listing. */
bool admin_page_add(struct admin_page *pg, const char *id, const char *item_json);
void admin_page_end(struct admin_page *pg);

/*
 * Body checks for handlers: each returns false after answering 400 with the field named in
 * param. admin_body_only refuses members outside the NULL-terminated list ("Unrecognized
 * request argument supplied: foo"); admin_body_string reads a string member (required or
 * not; max_len bytes; empty refused).
 */
bool admin_body_only(struct admin_job *j, const char *const *allowed);
bool admin_body_string(struct admin_job *j, const char *name, bool required, size_t max_len,
                       const char **out);

/*
 * The settings of one limits level (policy/limits.h), shared by the budget and rate-limit
 * routes (admin_budgets.c): the organization's (document "org_settings", id = org id), the
 * path's project's (its settings column) or the path's key's (document "key_settings", id =
 * key id, project_id = the key's project). load reads it inside the handler's transaction
 * (false after answering 404 or 500; deinit either way); writable answers 400 for an archived
 * project; check parses settings as admission will (false after a 400 naming the member);
 * save writes settings back (an empty object deletes a document) with, at project level, a
 * config version, and one audit entry of type for target_id. 0 or a store error.
 */
struct admin_level {
    enum tg_scope scope;
    char *id;         /* org, project or key id */
    char *project_id; /* project and key levels, else NULL */
    char *settings;   /* the stored JSON object text, "{}" when none */
    bool is_found;    /* project level: the row was found */
    bool has_doc;     /* org and key levels: a document exists */
    char *org_id;     /* project level: the rest of the row, to write it back */
    char *name;
    char *environment;
    int64_t created_ms;
    int64_t archived_ms;
};

bool admin_level_load(struct admin_job *j, enum tg_scope scope, struct admin_level *l);
void admin_level_deinit(struct admin_level *l);
bool admin_level_writable(struct admin_job *j, const struct admin_level *l);
bool admin_level_check(struct admin_job *j, const char *settings);
int admin_level_save(struct admin_job *j, const struct admin_level *l, const char *settings,
                     const char *type, const char *target_id, const char *before,
                     const char *after);

/* Settings text as a JSON object (a malformed or absent text reads as {}); caller owns it. */
json_t *admin_settings_root(const char *settings);
/* The canonical text of settings (compact, keys sorted: equal settings, equal texts). */
char *admin_settings_text(const json_t *root);

/*
 * The organization's keys that keep() accepts (project keys of a project, admin keys a caller
 * may see), listed as a page of append()'s objects or found one by the path's {key_id}.
 * Set j, keep and append, then call one of the two.
 */
struct admin_key_scan {
    struct admin_job *j;
    bool (*keep)(const struct admin_job *j, const struct tg_key_rec *k);
    void (*append)(struct tg_buf *b, const struct tg_key_rec *k, const char *value);
    struct admin_page page;
    const char *want_id; /* set by admin_keys_find */
    struct tg_buf one;   /* the found key's JSON (the caller frees it with tg_buf_deinit) */
    bool is_active;      /* the found key is not revoked */
};

/* Answers a page of the kept keys; what names them in errors ("API keys"). */
void admin_keys_list(struct admin_key_scan *s, const char *what);

/* Finds the kept key named by {key_id}; false after answering 404 or 500. */
bool admin_keys_find(struct admin_key_scan *s, const char *what);

/* Unix seconds from milliseconds, or JSON null when ms is 0, appended to out. */
void admin_append_time(struct tg_buf *out, int64_t ms);

#endif
