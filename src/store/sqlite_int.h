/*
 * sqlite_int.h: private to the SQLite store (sqlite.c and sqlite_*.c). The connection and its
 * statement cache (struct sq, the statement table), locking, transaction levels, the bind and
 * run helpers, and the per-area ops that sqlite.c puts in its ops table.
 *
 * sqlite.c holds open and close, the schema and its migrations, the statement cache and
 * transactions; sqlite_org.c organizations, projects, keys, documents, audit and versions;
 * sqlite_ledger.c the ledger, usage and spend; sqlite_monitor.c the outbox, alerts and
 * feedback; sqlite_cache.c the response cache.
 */
#ifndef TG_STORE_SQLITE_INT_H
#define TG_STORE_SQLITE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* ---- cached statements ----------------------------------------------------------------- */

#define KEY_COLUMNS                                                                                \
    "id, org_id, project_id, name, redacted, hash, kind, role, owner_user_id, created_ms, "        \
    "expires_ms, revoked_ms, last_used_ms"

/* The usage query is one statement for every combination of filters and groupings: an unset
 * filter binds NULL and an unset grouping binds 0, which folds that column to NULL. The
 * (org_id, time_ms) index narrows the scan; the rest are checks on the rows it yields. */
#define USAGE_SQL                                                                                  \
    "SELECT time_ms - ((time_ms % ?4) + ?4) % ?4 AS bucket,"                                       \
    "  CASE WHEN ?10 THEN project_id END AS gp,"                                                   \
    "  CASE WHEN ?11 THEN key_id END AS gk,"                                                       \
    "  CASE WHEN ?12 THEN model_requested END AS gm,"                                              \
    "  count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),"                  \
    "  sum(reasoning_tokens), sum(cost_micros)"                                                    \
    " FROM ledger"                                                                                 \
    " WHERE org_id = ?1 AND time_ms >= ?2 AND time_ms < ?3"                                        \
    "  AND (?5 IS NULL OR project_id = ?5)"                                                        \
    "  AND (?6 IS NULL OR key_id = ?6)"                                                            \
    "  AND (?7 IS NULL OR model_requested = ?7)"                                                   \
    "  AND (?8 IS NULL OR endpoint = ?8)"                                                          \
    "  AND (?9 IS NULL OR endpoint IN (SELECT value FROM json_each(?9)))"                          \
    " GROUP BY bucket, gp, gk, gm"                                                                 \
    " ORDER BY bucket, gp, gk, gm"

/* Spend per key, per project and for the org since a period start, in one pass over the
 * (org_id, time_ms) index range; the org total comes last and always (coalesce). */
#define SPEND_SQL                                                                                  \
    "SELECT key_id, NULL, sum(cost_micros) FROM ledger"                                            \
    " WHERE org_id = ?1 AND time_ms >= ?2 GROUP BY key_id"                                         \
    " UNION ALL SELECT NULL, project_id, sum(cost_micros) FROM ledger"                             \
    " WHERE org_id = ?1 AND time_ms >= ?2 GROUP BY project_id"                                     \
    " UNION ALL SELECT NULL, NULL, coalesce(sum(cost_micros), 0) FROM ledger"                      \
    " WHERE org_id = ?1 AND time_ms >= ?2"

/* A ledger row has LEDGER_ROW_PARAMS columns; appends insert LEDGER_GROUP_ROWS rows per
 * statement where they can (one statement's fixed cost shared by eight rows: about a fifth
 * less CPU per row than one row per statement), and the rest one by one. */
#define LEDGER_ROW_PARAMS 23
#define LEDGER_GROUP_ROWS 8
#define LEDGER_INSERT_SQL                                                                          \
    "INSERT OR IGNORE INTO ledger (request_id, attempt, time_ms, org_id, project_id, key_id, "     \
    "user_id, endpoint, model_requested, provider, deployment, prompt_tokens, cached_tokens, "     \
    "completion_tokens, reasoning_tokens, cost_micros, status, latency_ms, ttft_ms, is_stream, "   \
    "is_usage_estimated, error, saved_micros) VALUES "
#define LEDGER_ROW_SQL "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

#define DOC_COLUMNS "kind, id, org_id, project_id, data, created_ms, updated_ms"

#define AUDIT_COLUMNS                                                                              \
    "seq, id, org_id, time_ms, type, actor_type, actor_id, actor_user, project_id, target_id, "    \
    "before, after, source_addr, prev_hash, hash"

/* Like USAGE_SQL, one statement for every combination of filters: a list filter is a JSON
 * array (json_each) or NULL, a bound of 0 is no bound, and a limit of -1 is none. An actor
 * matches by key id or by the user behind the key, as OpenAI's actor_ids filter does. */
#define AUDIT_LIST_SQL                                                                             \
    "SELECT " AUDIT_COLUMNS " FROM audit"                                                          \
    " WHERE org_id = ?1"                                                                           \
    "  AND (?2 IS NULL OR type IN (SELECT value FROM json_each(?2)))"                              \
    "  AND (?3 IS NULL OR actor_id IN (SELECT value FROM json_each(?3))"                           \
    "       OR actor_user IN (SELECT value FROM json_each(?3)))"                                   \
    "  AND (?4 IS NULL OR project_id IN (SELECT value FROM json_each(?4)))"                        \
    "  AND time_ms >= ?5 AND (?6 = 0 OR time_ms < ?6)"                                             \
    "  AND (?7 = 0 OR seq < ?7)"                                                                   \
    " ORDER BY seq DESC LIMIT ?8"

#define VERSION_COLUMNS "number, org_id, project_id, time_ms, actor_id, reason, settings"

#define OUTBOX_COLUMNS                                                                             \
    "id, org_id, event_key, channel, target, payload, created_ms, attempts, next_attempt_ms, "     \
    "delivered_ms, last_error"

#define LEDGER_COLUMNS                                                                             \
    "request_id, attempt, time_ms, org_id, project_id, key_id, user_id, endpoint, "                \
    "model_requested, provider, deployment, prompt_tokens, cached_tokens, completion_tokens, "     \
    "reasoning_tokens, cost_micros, status, latency_ms, ttft_ms, is_stream, is_usage_estimated, "  \
    "error, saved_micros"

#define ALERT_RULE_COLUMNS                                                                         \
    "id, org_id, name, project_id, model, metric, condition, threshold, window_s, min_requests, "  \
    "channels, is_enabled, created_ms, updated_ms"

#define ALERT_EVENT_COLUMNS                                                                        \
    "id, org_id, rule_id, name, metric, project_id, model, value, threshold, fired_ms, "           \
    "resolved_ms"

#define FEEDBACK_COLUMNS                                                                           \
    "id, org_id, project_id, request_id, model, provider, deployment, score, label, comment, "     \
    "created_ms"

#define CACHE_COLUMNS                                                                              \
    "status, is_stream, content_type, project_id, model, prompt_tokens, cached_tokens, "           \
    "completion_tokens, reasoning_tokens, cost_micros, created_ms, expires_ms, body"

#define STATEMENTS(X)                                                                              \
    X(BEGIN, "BEGIN IMMEDIATE")                                                                    \
    X(COMMIT, "COMMIT")                                                                            \
    X(ROLLBACK, "ROLLBACK")                                                                        \
    X(SAVEPOINT, "SAVEPOINT tg")                                                                   \
    X(RELEASE, "RELEASE tg")                                                                       \
    X(ROLLBACK_TO, "ROLLBACK TO tg")                                                               \
    X(ORG_COUNT, "SELECT count(*) FROM orgs")                                                      \
    X(ORG_INSERT, "INSERT INTO orgs (id, name, created_ms) VALUES (?, ?, ?)")                      \
    X(ORGS_LIST, "SELECT id, name, created_ms FROM orgs ORDER BY created_ms, rowid")               \
    X(PROJECT_INSERT, "INSERT INTO projects (id, org_id, name, environment, created_ms, "          \
                      "archived_ms, settings) VALUES (?, ?, ?, ?, ?, ?, coalesce(?, '{}'))")       \
    X(PROJECTS_LIST, "SELECT id, org_id, name, environment, created_ms, archived_ms, settings "    \
                     "FROM projects WHERE org_id = ? ORDER BY created_ms, rowid")                  \
    X(PROJECT_UPDATE, "UPDATE projects SET name = ?2, environment = ?3, archived_ms = ?4, "        \
                      "settings = coalesce(?5, '{}') WHERE id = ?1")                               \
    X(KEY_INSERT, "INSERT INTO api_keys (" KEY_COLUMNS ") VALUES "                                 \
                  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")                                       \
    X(KEY_REVOKE, "UPDATE api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms = 0")            \
    X(KEYS_LIST, "SELECT " KEY_COLUMNS " FROM api_keys WHERE org_id = ? "                          \
                 "ORDER BY created_ms, rowid")                                                     \
    X(KEYS_SET_ROLE, "UPDATE api_keys SET role = ?2 WHERE kind = 1 AND owner_user_id = ?1")        \
    X(LEDGER_INSERT, LEDGER_INSERT_SQL LEDGER_ROW_SQL)                                             \
    X(LEDGER_INSERT_GROUP, LEDGER_INSERT_SQL LEDGER_ROW_SQL                                        \
      "," LEDGER_ROW_SQL "," LEDGER_ROW_SQL "," LEDGER_ROW_SQL "," LEDGER_ROW_SQL                  \
      "," LEDGER_ROW_SQL "," LEDGER_ROW_SQL "," LEDGER_ROW_SQL)                                    \
    X(USAGE, USAGE_SQL)                                                                            \
    X(SPEND, SPEND_SQL)                                                                            \
    X(DOC_GET, "SELECT " DOC_COLUMNS " FROM docs WHERE kind = ? AND id = ?")                       \
    /* An upsert, not INSERT OR REPLACE: the row keeps its rowid, the tie-break of the list */     \
    X(DOC_PUT, "INSERT INTO docs (" DOC_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?, ?) "                  \
               "ON CONFLICT (kind, id) DO UPDATE SET org_id = excluded.org_id, "                   \
               "project_id = excluded.project_id, data = excluded.data, "                          \
               "created_ms = excluded.created_ms, updated_ms = excluded.updated_ms")               \
    X(DOC_DELETE, "DELETE FROM docs WHERE kind = ? AND id = ?")                                    \
    X(DOC_LIST, "SELECT " DOC_COLUMNS " FROM docs WHERE kind = ?1 AND org_id = ?2 "                \
                "AND (?3 IS NULL OR project_id = ?3) ORDER BY created_ms, rowid")                  \
    X(AUDIT_LAST, "SELECT seq, hash FROM audit WHERE org_id = ? ORDER BY seq DESC LIMIT 1")        \
    X(AUDIT_INSERT, "INSERT INTO audit (" AUDIT_COLUMNS ") VALUES "                                \
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")                               \
    X(AUDIT_LIST, AUDIT_LIST_SQL)                                                                  \
    X(AUDIT_ALL, "SELECT " AUDIT_COLUMNS " FROM audit WHERE org_id = ? ORDER BY seq")              \
    X(VERSION_LAST, "SELECT coalesce(max(number), 0) FROM versions WHERE org_id = ?")              \
    X(VERSION_INSERT, "INSERT INTO versions (" VERSION_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?, ?)")   \
    X(VERSION_LIST, "SELECT " VERSION_COLUMNS " FROM versions WHERE org_id = ?1 "                  \
                    "AND (?2 IS NULL OR project_id = ?2) ORDER BY number DESC")                    \
    X(VERSION_GET, "SELECT " VERSION_COLUMNS " FROM versions WHERE org_id = ? AND number = ?")     \
    X(OUTBOX_PUT, "INSERT OR IGNORE INTO outbox (org_id, event_key, channel, target, payload, "    \
                  "created_ms, next_attempt_ms) VALUES (?, ?, ?, ?, ?, ?, ?)")                     \
    X(OUTBOX_DUE, "SELECT " OUTBOX_COLUMNS " FROM outbox WHERE delivered_ms = 0 "                  \
                  "AND next_attempt_ms <= ?1 ORDER BY next_attempt_ms, id LIMIT ?2")               \
    X(OUTBOX_DELIVERED, "UPDATE outbox SET delivered_ms = ?2, last_error = NULL WHERE id = ?1")    \
    X(OUTBOX_FAILED, "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, "                \
                     "next_attempt_ms = ?3 WHERE id = ?1")                                         \
    X(CACHE_GET, "SELECT " CACHE_COLUMNS " FROM cache_entries WHERE key = ?")                      \
    X(CACHE_DELETE_KEY, "DELETE FROM cache_entries WHERE key = ?")                                 \
    X(CACHE_PUT, "INSERT OR REPLACE INTO cache_entries (key, " CACHE_COLUMNS ") VALUES "           \
                 "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")                                     \
    X(CACHE_INVALIDATE, "DELETE FROM cache_entries WHERE ?1 OR ((?2 IS NOT NULL OR "               \
                        "?3 IS NOT NULL OR ?4 > 0) AND (?2 IS NULL OR project_id = ?2) "           \
                        "AND (?3 IS NULL OR model = ?3) AND (?4 <= 0 OR created_ms < ?4))")        \
    X(CACHE_STATS, "SELECT count(*), coalesce(sum(length(body)), 0) FROM cache_entries")           \
    X(OUTBOX_LIST, "SELECT " OUTBOX_COLUMNS " FROM outbox WHERE org_id = ?1 "                      \
                   "ORDER BY id DESC LIMIT ?2")                                                    \
    X(LEDGER_FIND, "SELECT " LEDGER_COLUMNS " FROM ledger WHERE request_id = ?1 "                  \
                   "AND project_id = ?2 ORDER BY attempt DESC LIMIT 1")                            \
    X(ALERT_RULE_PUT, "INSERT OR REPLACE INTO alert_rules (" ALERT_RULE_COLUMNS ") VALUES "        \
                      "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")                                \
    X(ALERT_RULE_GET, "SELECT " ALERT_RULE_COLUMNS " FROM alert_rules WHERE id = ?")               \
    X(ALERT_RULE_DELETE, "DELETE FROM alert_rules WHERE id = ?")                                   \
    X(ALERT_RULES_LIST, "SELECT " ALERT_RULE_COLUMNS " FROM alert_rules WHERE org_id = ? "         \
                        "ORDER BY created_ms, rowid")                                              \
    X(ALERT_EVENT_PUT, "INSERT OR REPLACE INTO alert_events (" ALERT_EVENT_COLUMNS ") VALUES "     \
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")                                        \
    X(ALERT_EVENTS_LIST, "SELECT " ALERT_EVENT_COLUMNS " FROM alert_events WHERE org_id = ?1 "     \
                         "AND (?2 IS NULL OR rule_id = ?2) AND (?3 = 0 OR (?3 = 1 AND "            \
                         "resolved_ms = 0) OR (?3 = 2 AND resolved_ms > 0)) "                      \
                         "ORDER BY fired_ms DESC, rowid DESC LIMIT ?4")                            \
    X(FEEDBACK_INSERT, "INSERT INTO feedback (" FEEDBACK_COLUMNS ") VALUES "                       \
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")                                        \
    X(FEEDBACK_AGG, "SELECT model, CASE WHEN ?4 THEN deployment END AS d, label, count(*), "       \
                    "sum(score) FROM feedback WHERE org_id = ?1 AND created_ms >= ?2 "             \
                    "AND created_ms < ?3 GROUP BY model, d, label ORDER BY model, d, label")

enum stmt_id {
#define STMT_ENUM(name, sql) S_##name,
    STATEMENTS(STMT_ENUM)
#undef STMT_ENUM
        S_COUNT
};

struct sq {
    struct tg_store base; /* first: the ops receive &base */
    sqlite3 *db;
    pthread_mutex_t lock; /* recursive; held for the whole of every op and transaction */
    int depth;            /* open transaction levels (sq_tx_begin) on the lock's owner thread */
    sqlite3_stmt *stmts[S_COUNT];
    struct sq_ckpt *ckpt; /* the checkpointer (sqlite_ckpt.c); NULL without a WAL */
};

static inline struct sq *
sq_of(struct tg_store *s)
{
    return (struct sq *)s;
}

/* WAL checkpoints on a thread of their own instead of inside commits (sqlite_ckpt.c).
 * sq_ckpt_start installs the commit hook once the connection is open and migrated; sq_ckpt_stop
 * ends the thread before the connection closes; sq_ckpt_wait blocks until n checkpoints have
 * run (or the thread cannot run) and returns how many have. */
void sq_ckpt_start(struct sq *s, const char *path);
void sq_ckpt_stop(struct sq *s);
uint64_t sq_ckpt_wait(struct sq *s, uint64_t n);

/* Cached statements and running them (sqlite.c). */
int sq_fail(struct sq *s, int rc, const char *what);
sqlite3_stmt *sq_stmt(struct sq *s, enum stmt_id id);
int sq_run(struct sq *s, sqlite3_stmt *st, const char *what);
int sq_run_simple(struct sq *s, enum stmt_id id, const char *what);
int sq_tx_begin(struct sq *s);
int sq_tx_end(struct sq *s, int rc);
/* Steps st to the end, calling row(st, arg) on each row until one returns non-zero (that
 * value is returned); resets st. */
typedef int (*sq_row_fn)(sqlite3_stmt *st, void *arg);
int sq_each_row(struct sq *s, sqlite3_stmt *st, sq_row_fn row, void *arg, const char *what);
char *sq_strings_json(const char *const *v, size_t n);

static inline void
sq_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static inline void
sq_bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v != NULL) {
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, i);
    }
}

static inline const char *
sq_col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static inline void
sq_lock(struct sq *s)
{
    pthread_mutex_lock(&s->lock);
}

static inline void
sq_unlock(struct sq *s)
{
    pthread_mutex_unlock(&s->lock);
}

/* sqlite_org.c */
int sq_bootstrap(struct tg_store *store, const struct tg_org_rec *org,
                 const struct tg_project_rec *projects, size_t n_projects,
                 const struct tg_key_rec *admin_key, bool *created);
int sq_orgs_list(struct tg_store *store, tg_store_org_cb cb, void *arg);
int sq_projects_list(struct tg_store *store, const char *org_id, tg_store_project_cb cb, void *arg);
int sq_project_insert(struct tg_store *store, const struct tg_project_rec *r);
int sq_key_insert(struct tg_store *store, const struct tg_key_rec *r);
int sq_key_revoke(struct tg_store *store, const char *key_id, int64_t when_ms);
int sq_keys_list(struct tg_store *store, const char *org_id, tg_store_key_cb cb, void *arg);
int sq_project_update(struct tg_store *store, const struct tg_project_rec *r);
int sq_keys_set_role_by_user(struct tg_store *store, const char *user_id, const char *role);
int sq_doc_get(struct tg_store *store, const char *kind, const char *id, tg_store_doc_cb cb,
               void *arg);
int sq_doc_put(struct tg_store *store, const struct tg_doc *d);
int sq_doc_delete(struct tg_store *store, const char *kind, const char *id);
int sq_doc_list(struct tg_store *store, const char *kind, const char *org_id,
                const char *project_id, tg_store_doc_cb cb, void *arg);
int sq_audit_append(struct tg_store *store, struct tg_audit_rec *r);
int sq_audit_list(struct tg_store *store, const struct tg_audit_query *q, tg_store_audit_cb cb,
                  void *arg);
int sq_audit_all(struct tg_store *store, const char *org_id, tg_store_audit_cb cb, void *arg);
int sq_version_append(struct tg_store *store, struct tg_version_rec *r);
int sq_version_list(struct tg_store *store, const char *org_id, const char *project_id,
                    tg_store_version_cb cb, void *arg);
int sq_version_get(struct tg_store *store, const char *org_id, int64_t number,
                   tg_store_version_cb cb, void *arg);

/* sqlite_ledger.c */
int sq_ledger_append(struct tg_store *store, const struct tg_ledger_row *rows, size_t n);
int sq_usage_query(struct tg_store *store, const struct tg_usage_query *q, tg_store_usage_cb cb,
                   void *arg);
int sq_spend_by_level(struct tg_store *store, const char *org_id, int64_t since_ms,
                      tg_store_spend_cb cb, void *arg);
int sq_ledger_find(struct tg_store *store, const char *request_id, const char *project_id,
                   tg_store_ledger_cb cb, void *arg);

/* sqlite_monitor.c */
int sq_outbox_put(struct tg_store *store, const struct tg_outbox_rec *r, bool *inserted);
int sq_outbox_due(struct tg_store *store, int64_t now_ms, size_t limit, tg_store_outbox_cb cb,
                  void *arg);
int sq_outbox_mark(struct tg_store *store, int64_t id, int64_t delivered_ms, const char *error,
                   int64_t next_attempt_ms);
int sq_outbox_list(struct tg_store *store, const char *org_id, size_t limit, tg_store_outbox_cb cb,
                   void *arg);
int sq_alert_rule_put(struct tg_store *store, const struct tg_alert_rule_rec *r);
int sq_alert_rule_get(struct tg_store *store, const char *id, tg_store_alert_rule_cb cb, void *arg);
int sq_alert_rule_delete(struct tg_store *store, const char *id);
int sq_alert_rules_list(struct tg_store *store, const char *org_id, tg_store_alert_rule_cb cb,
                        void *arg);
int sq_alert_event_put(struct tg_store *store, const struct tg_alert_event_rec *r);
int sq_alert_events_list(struct tg_store *store, const char *org_id, const char *rule_id, int state,
                         size_t limit, tg_store_alert_event_cb cb, void *arg);
int sq_feedback_insert(struct tg_store *store, const struct tg_feedback_rec *r);
int sq_feedback_aggregate(struct tg_store *store, const char *org_id, int64_t start_ms,
                          int64_t end_ms, bool by_deployment, tg_store_feedback_agg_cb cb,
                          void *arg);

/* sqlite_cache.c */
int sq_cache_get(struct tg_store *store, const unsigned char *key, int64_t now_ms,
                 tg_store_cache_cb cb, void *arg);
int sq_cache_put(struct tg_store *store, const struct tg_cache_rec *r);
int sq_cache_invalidate(struct tg_store *store, bool all, const char *project_id, const char *model,
                        int64_t created_before_ms, size_t *n_removed);
int sq_cache_stats(struct tg_store *store, size_t *n_entries, size_t *bytes);

#endif
