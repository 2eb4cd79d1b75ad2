/*
 * sqlite.c: the embedded store (see store.h) on one SQLite file in WAL mode.
 *
 * Workload: a steady trickle of ledger batches from the writer thread, rare admin writes
 * (keys, projects) and reads (key lists at reload, usage queries) from the libuv thread pool.
 * One connection serves them all, guarded by a mutex: SQLite serializes writers on a file
 * anyway, and WAL lets outside readers (the sqlite3 shell, backups) read while we write.
 * Statements are prepared once, on first use, and kept until close.
 *
 * Transactions (ops->transact) hold that mutex from BEGIN to COMMIT. It is recursive, so the
 * ops the transaction's function calls on the same thread take it again and join the
 * transaction, while other threads (the ledger writer among them) wait for it to end, no
 * longer. Every op that writes several rows opens its own level with tx_begin: a BEGIN
 * IMMEDIATE at the outermost level, a SAVEPOINT inside one, so bootstrap or ledger_append
 * called inside a transaction roll back alone on failure and commit with the outer one.
 *
 * The schema is versioned by PRAGMA user_version; each migration runs in its own transaction
 * and bumps the version, so opening a store twice, or an older one, is safe. The ledger has
 * no foreign keys on purpose: accounting must never be refused because a project or key it
 * names was changed, and a refused batch would be retried forever.
 */
#include "store/store.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

#define BUSY_TIMEOUT_MS 5000

/* ---- schema ---------------------------------------------------------------------------- */

/* migrations[i] takes the schema from user_version i to i + 1. Never edit one that shipped;
 * append a new one. */
static const char *const migrations[] = {
    "CREATE TABLE orgs ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE projects ("
    "  id TEXT PRIMARY KEY,"
    "  org_id TEXT NOT NULL REFERENCES orgs(id),"
    "  name TEXT NOT NULL,"
    "  environment TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  archived_ms INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (org_id, name));"
    "CREATE TABLE api_keys ("
    "  id TEXT PRIMARY KEY,"
    "  org_id TEXT NOT NULL REFERENCES orgs(id),"
    "  project_id TEXT REFERENCES projects(id),"
    "  name TEXT NOT NULL,"
    "  redacted TEXT NOT NULL,"
    "  hash BLOB NOT NULL UNIQUE," /* HMAC-SHA256 of the key; the key itself is never stored */
    "  kind INTEGER NOT NULL,"
    "  role TEXT NOT NULL,"
    "  owner_user_id TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL DEFAULT 0,"
    "  revoked_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_used_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX api_keys_org ON api_keys (org_id, created_ms);"
    "CREATE TABLE ledger ("
    "  request_id TEXT NOT NULL,"
    "  attempt INTEGER NOT NULL,"
    "  time_ms INTEGER NOT NULL,"
    "  org_id TEXT NOT NULL,"
    "  project_id TEXT NOT NULL,"
    "  key_id TEXT NOT NULL,"
    "  user_id TEXT NOT NULL,"
    "  endpoint TEXT NOT NULL,"
    "  model_requested TEXT NOT NULL,"
    "  provider TEXT NOT NULL,"
    "  deployment TEXT NOT NULL,"
    "  prompt_tokens INTEGER NOT NULL,"
    "  cached_tokens INTEGER NOT NULL,"
    "  completion_tokens INTEGER NOT NULL,"
    "  reasoning_tokens INTEGER NOT NULL,"
    "  cost_micros INTEGER NOT NULL,"
    "  status INTEGER NOT NULL,"
    "  latency_ms INTEGER NOT NULL,"
    "  ttft_ms INTEGER NOT NULL,"
    "  is_stream INTEGER NOT NULL,"
    "  is_usage_estimated INTEGER NOT NULL,"
    "  error TEXT NOT NULL,"
    "  PRIMARY KEY (request_id, attempt));"
    "CREATE INDEX ledger_org_time ON ledger (org_id, time_ms);",

    /* 2: the organization model. Documents carry users, invites, members and service
     * accounts; audit is the hash-chained log, numbered per org (seq has no AUTOINCREMENT:
     * audit_append takes the org's last entry inside its transaction, so numbers have no gaps
     * and a gap means a deleted entry); versions is the numbered config history. Neither audit
     * nor versions has foreign keys: history must outlive what it names. */
    "ALTER TABLE projects ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';"
    "CREATE TABLE docs ("
    "  kind TEXT NOT NULL,"
    "  id TEXT NOT NULL,"
    "  org_id TEXT NOT NULL REFERENCES orgs(id),"
    "  project_id TEXT REFERENCES projects(id),"
    "  data TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (kind, id));"
    "CREATE INDEX docs_org ON docs (kind, org_id, created_ms);"
    "CREATE TABLE audit ("
    "  org_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  id TEXT NOT NULL UNIQUE,"
    "  time_ms INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  actor_type TEXT,"
    "  actor_id TEXT,"
    "  actor_user TEXT,"
    "  project_id TEXT,"
    "  target_id TEXT,"
    "  before TEXT,"
    "  after TEXT,"
    "  source_addr TEXT,"
    "  prev_hash BLOB NOT NULL,"
    "  hash BLOB NOT NULL,"
    "  PRIMARY KEY (org_id, seq));"
    "CREATE INDEX audit_org_time ON audit (org_id, time_ms);"
    "CREATE TABLE versions ("
    "  org_id TEXT NOT NULL,"
    "  number INTEGER NOT NULL,"
    "  project_id TEXT,"
    "  time_ms INTEGER NOT NULL,"
    "  actor_id TEXT,"
    "  reason TEXT,"
    "  settings TEXT NOT NULL,"
    "  PRIMARY KEY (org_id, number));",
    /* 3: the notification outbox. The unique triple makes "once per event and channel" a
     * property of the table, so a notifier that decides twice (after a restart, say) still
     * delivers once; due rows are found by (delivered_ms, next_attempt_ms). */
    "CREATE TABLE outbox ("
    "  id INTEGER PRIMARY KEY,"
    "  org_id TEXT NOT NULL,"
    "  event_key TEXT NOT NULL,"
    "  channel TEXT NOT NULL,"
    "  target TEXT NOT NULL,"
    "  payload TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_ms INTEGER NOT NULL,"
    "  delivered_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  UNIQUE (event_key, channel, target));"
    "CREATE INDEX outbox_due ON outbox (delivered_ms, next_attempt_ms);",
    /* 4: what a cache hit saved (the original answer's cost); 0 on every other row, so old
     * rows and writers that do not name the column stay right. */
    "ALTER TABLE ledger ADD COLUMN saved_micros INTEGER NOT NULL DEFAULT 0;",
    /* 5: the response cache's database backend, one row per key; the indexes serve
     * invalidation by project, by model and by age. */
    "CREATE TABLE cache_entries ("
    "  key BLOB PRIMARY KEY,"
    "  status INTEGER NOT NULL,"
    "  is_stream INTEGER NOT NULL,"
    "  content_type TEXT NOT NULL,"
    "  project_id TEXT NOT NULL,"
    "  model TEXT NOT NULL,"
    "  prompt_tokens INTEGER NOT NULL,"
    "  cached_tokens INTEGER NOT NULL,"
    "  completion_tokens INTEGER NOT NULL,"
    "  reasoning_tokens INTEGER NOT NULL,"
    "  cost_micros INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL,"
    "  body BLOB NOT NULL);"
    "CREATE INDEX cache_entries_project ON cache_entries (project_id);"
    "CREATE INDEX cache_entries_model ON cache_entries (model);"
    "CREATE INDEX cache_entries_created ON cache_entries (created_ms);",
    /* 6: alert rules, their events (an open event, resolved_ms 0, is a firing rule: the state
     * that must survive a restart) and feedback on requests. None has foreign keys: events
     * and feedback are history and outlive the rule or key they name. Feedback finds its
     * request through the ledger's primary key (request_id, attempt). */
    "CREATE TABLE alert_rules ("
    "  id TEXT PRIMARY KEY,"
    "  org_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  project_id TEXT,"
    "  model TEXT,"
    "  metric TEXT NOT NULL,"
    "  condition TEXT NOT NULL,"
    "  threshold REAL NOT NULL,"
    "  window_s INTEGER NOT NULL,"
    "  min_requests INTEGER NOT NULL,"
    "  channels TEXT NOT NULL,"
    "  is_enabled INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE INDEX alert_rules_org ON alert_rules (org_id, created_ms);"
    "CREATE TABLE alert_events ("
    "  id TEXT PRIMARY KEY,"
    "  org_id TEXT NOT NULL,"
    "  rule_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  metric TEXT NOT NULL,"
    "  project_id TEXT,"
    "  model TEXT,"
    "  value REAL NOT NULL,"
    "  threshold REAL NOT NULL,"
    "  fired_ms INTEGER NOT NULL,"
    "  resolved_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX alert_events_org ON alert_events (org_id, fired_ms);"
    "CREATE TABLE feedback ("
    "  id TEXT PRIMARY KEY,"
    "  org_id TEXT NOT NULL,"
    "  project_id TEXT NOT NULL,"
    "  request_id TEXT NOT NULL,"
    "  model TEXT NOT NULL,"
    "  provider TEXT NOT NULL,"
    "  deployment TEXT NOT NULL,"
    "  score REAL NOT NULL,"
    "  label TEXT,"
    "  comment TEXT,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE INDEX feedback_org_time ON feedback (org_id, created_ms);",
};

#define N_MIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))

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
    X(LEDGER_INSERT,                                                                               \
      "INSERT OR IGNORE INTO ledger (request_id, attempt, time_ms, org_id, "                       \
      "project_id, key_id, user_id, endpoint, model_requested, provider, "                         \
      "deployment, prompt_tokens, cached_tokens, completion_tokens, "                              \
      "reasoning_tokens, cost_micros, status, latency_ms, ttft_ms, is_stream, "                    \
      "is_usage_estimated, error, saved_micros) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "               \
      "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")                                                 \
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

static const char *const stmt_sql[S_COUNT] = {
#define STMT_SQL(name, sql) sql,
    STATEMENTS(STMT_SQL)
#undef STMT_SQL
};

struct sq {
    struct tg_store base; /* first: the ops receive &base */
    sqlite3 *db;
    pthread_mutex_t lock; /* recursive; held for the whole of every op and transaction */
    int depth;            /* open transaction levels (tx_begin) on the lock's owner thread */
    sqlite3_stmt *stmts[S_COUNT];
};

static struct sq *
sq_of(struct tg_store *s)
{
    return (struct sq *)s;
}

/* Maps a SQLite result to our codes; logs anything that is not a plain conflict. */
static int
fail(struct sq *s, int rc, const char *what)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
        return TG_EEXISTS;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return TG_ENOTFOUND;
    default:
        break;
    }
    tg_log_error("store: %s: %s", what, sqlite3_errmsg(s->db));
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return TG_EAGAIN;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
        return TG_EINVAL;
    case SQLITE_NOMEM:
        return TG_ENOMEM;
    default:
        return TG_ESTORE;
    }
}

/* The cached statement, prepared on first use; NULL (logged) if it cannot be. */
static sqlite3_stmt *
stmt(struct sq *s, enum stmt_id id)
{
    /* After some errors (I/O, disk full) SQLite rolls the whole transaction back by itself.
     * Refuse to run anything more in it: it would run in autocommit mode and commit alone,
     * half of what the caller meant as one change. */
    if (s->depth > 0 && sqlite3_get_autocommit(s->db)) {
        tg_log_error("store: the transaction was rolled back by an earlier error");
        return NULL;
    }
    if (s->stmts[id] == NULL) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->stmts[id], NULL);
        if (rc != SQLITE_OK) {
            tg_log_error("store: cannot prepare statement %d: %s", (int)id, sqlite3_errmsg(s->db));
            s->stmts[id] = NULL;
            return NULL;
        }
    }
    return s->stmts[id];
}

static void
done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no rows, with its parameters bound. */
static int
run(struct sq *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int out = rc == SQLITE_DONE ? 0 : fail(s, sqlite3_extended_errcode(s->db), what);
    done(st);
    return out;
}

static int
run_simple(struct sq *s, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = stmt(s, id);
    return st != NULL ? run(s, st, what) : TG_ESTORE;
}

static void
bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v != NULL) {
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, i);
    }
}

static const char *
col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static void
lock(struct sq *s)
{
    pthread_mutex_lock(&s->lock);
}

static void
unlock(struct sq *s)
{
    pthread_mutex_unlock(&s->lock);
}

/* Opens one transaction level: BEGIN IMMEDIATE at the outermost (the write lock first, so two
 * processes cannot both read and then both write), a savepoint inside a transaction. The
 * caller holds the lock until the matching tx_end. */
static int
tx_begin(struct sq *s)
{
    int rc = run_simple(s, s->depth == 0 ? S_BEGIN : S_SAVEPOINT, "begin");
    if (rc == 0) {
        s->depth++;
    }
    return rc;
}

/* Closes the level tx_begin opened: commits (or releases the savepoint) when rc >= 0, else
 * rolls the level back. Returns rc, or the commit's error. */
static int
tx_end(struct sq *s, int rc)
{
    s->depth--;
    bool inner = s->depth > 0;
    if (rc >= 0) {
        int end = run_simple(s, inner ? S_RELEASE : S_COMMIT, "commit");
        if (end == 0) {
            return rc;
        }
        rc = end;
    }
    /* After some errors SQLite has already rolled back; then there is nothing to undo. */
    if (!sqlite3_get_autocommit(s->db)) {
        if (inner) {
            /* ROLLBACK TO keeps the savepoint open; RELEASE then drops it. */
            run_simple(s, S_ROLLBACK_TO, "rollback to savepoint");
            run_simple(s, S_RELEASE, "release savepoint");
        } else {
            run_simple(s, S_ROLLBACK, "rollback");
        }
    }
    return rc;
}

/* Steps st to the end, calling row(st, arg) on each row until one returns non-zero (that
 * value is returned); resets st. */
typedef int (*row_fn)(sqlite3_stmt *st, void *arg);

static int
each_row(struct sq *s, sqlite3_stmt *st, row_fn row, void *arg, const char *what)
{
    int rc = 0;
    int step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        rc = row(st, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = fail(s, sqlite3_extended_errcode(s->db), what);
    }
    done(st);
    return rc;
}

/* A JSON array of n strings for json_each(), or NULL when there are none. */
static char *
strings_json(const char *const *v, size_t n)
{
    if (v == NULL || n == 0) {
        return NULL;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_string(v[i] ? v[i] : ""));
    }
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (text == NULL) {
        abort(); /* like tg_x*: our own small allocation */
    }
    return text;
}

/* ---- organizations, projects, keys ----------------------------------------------------- */

static int
insert_project(struct sq *s, const struct tg_project_rec *r)
{
    sqlite3_stmt *st = stmt(s, S_PROJECT_INSERT);
    if (st == NULL) {
        return TG_ESTORE;
    }
    bind_text(st, 1, r->id);
    bind_text(st, 2, r->org_id);
    bind_text(st, 3, r->name);
    bind_text(st, 4, r->environment);
    sqlite3_bind_int64(st, 5, r->created_ms);
    sqlite3_bind_int64(st, 6, r->archived_ms);
    bind_text(st, 7, r->settings);
    return run(s, st, "insert project");
}

static int
insert_key(struct sq *s, const struct tg_key_rec *r)
{
    sqlite3_stmt *st = stmt(s, S_KEY_INSERT);
    if (st == NULL) {
        return TG_ESTORE;
    }
    bind_text(st, 1, r->id);
    bind_text(st, 2, r->org_id);
    bind_text(st, 3, r->project_id);
    bind_text(st, 4, r->name);
    bind_text(st, 5, r->redacted);
    sqlite3_bind_blob(st, 6, r->hash, TG_SHA256_BYTES, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, (int)r->kind);
    bind_text(st, 8, r->role);
    bind_text(st, 9, r->owner_user_id);
    sqlite3_bind_int64(st, 10, r->created_ms);
    sqlite3_bind_int64(st, 11, r->expires_ms);
    sqlite3_bind_int64(st, 12, r->revoked_ms);
    sqlite3_bind_int64(st, 13, r->last_used_ms);
    return run(s, st, "insert key");
}

static int
bootstrap_locked(struct sq *s, const struct tg_org_rec *org, const struct tg_project_rec *projects,
                 size_t n_projects, const struct tg_key_rec *admin_key, bool *created)
{
    /* Outside a transaction this is BEGIN IMMEDIATE, which takes the write lock first, so two
     * processes starting on one file cannot both see an empty store and both insert an org. */
    int rc = tx_begin(s);
    if (rc < 0) {
        return rc;
    }
    sqlite3_stmt *st = stmt(s, S_ORG_COUNT);
    rc = st != NULL ? 0 : TG_ESTORE;
    int64_t n_orgs = 0;
    if (rc == 0) {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            n_orgs = sqlite3_column_int64(st, 0);
        } else {
            rc = fail(s, sqlite3_extended_errcode(s->db), "count orgs");
        }
        done(st);
    }
    if (rc == 0 && n_orgs == 0) {
        st = stmt(s, S_ORG_INSERT);
        rc = st != NULL ? 0 : TG_ESTORE;
        if (rc == 0) {
            bind_text(st, 1, org->id);
            bind_text(st, 2, org->name);
            sqlite3_bind_int64(st, 3, org->created_ms);
            rc = run(s, st, "insert org");
        }
        for (size_t i = 0; rc == 0 && i < n_projects; i++) {
            rc = insert_project(s, &projects[i]);
        }
        if (rc == 0 && admin_key != NULL) {
            rc = insert_key(s, admin_key);
        }
    }
    rc = tx_end(s, rc);
    *created = rc == 0 && n_orgs == 0;
    return rc;
}

static int
sq_bootstrap(struct tg_store *store, const struct tg_org_rec *org,
             const struct tg_project_rec *projects, size_t n_projects,
             const struct tg_key_rec *admin_key, bool *created)
{
    struct sq *s = sq_of(store);
    *created = false;
    lock(s);
    int rc = bootstrap_locked(s, org, projects, n_projects, admin_key, created);
    unlock(s);
    return rc;
}

static int
sq_orgs_list(struct tg_store *store, tg_store_org_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_ORGS_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_org_rec r = {col_text(st, 0), col_text(st, 1), sqlite3_column_int64(st, 2)};
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = fail(s, sqlite3_extended_errcode(s->db), "list orgs");
    }
    if (st != NULL) {
        done(st);
    }
    unlock(s);
    return rc;
}

static int
sq_projects_list(struct tg_store *store, const char *org_id, tg_store_project_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_PROJECTS_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_project_rec r = {
            .id = col_text(st, 0),
            .org_id = col_text(st, 1),
            .name = col_text(st, 2),
            .environment = col_text(st, 3),
            .created_ms = sqlite3_column_int64(st, 4),
            .archived_ms = sqlite3_column_int64(st, 5),
            .settings = col_text(st, 6),
        };
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = fail(s, sqlite3_extended_errcode(s->db), "list projects");
    }
    if (st != NULL) {
        done(st);
    }
    unlock(s);
    return rc;
}

static int
sq_project_insert(struct tg_store *store, const struct tg_project_rec *r)
{
    struct sq *s = sq_of(store);
    lock(s);
    int rc = insert_project(s, r);
    unlock(s);
    return rc;
}

static int
sq_key_insert(struct tg_store *store, const struct tg_key_rec *r)
{
    struct sq *s = sq_of(store);
    lock(s);
    int rc = insert_key(s, r);
    unlock(s);
    return rc;
}

static int
sq_key_revoke(struct tg_store *store, const char *key_id, int64_t when_ms)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_KEY_REVOKE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, when_ms);
        bind_text(st, 2, key_id);
        rc = run(s, st, "revoke key");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    unlock(s);
    return rc;
}

/* Reads the current row of S_KEYS_LIST; false when the stored hash is not a hash. */
static bool
read_key(sqlite3_stmt *st, struct tg_key_rec *r)
{
    memset(r, 0, sizeof(*r));
    r->id = col_text(st, 0);
    r->org_id = col_text(st, 1);
    r->project_id = col_text(st, 2);
    r->name = col_text(st, 3);
    r->redacted = col_text(st, 4);
    const void *hash = sqlite3_column_blob(st, 5);
    if (hash == NULL || sqlite3_column_bytes(st, 5) != TG_SHA256_BYTES) {
        return false;
    }
    memcpy(r->hash, hash, TG_SHA256_BYTES);
    r->kind = sqlite3_column_int(st, 6) == TG_KEY_ADMIN ? TG_KEY_ADMIN : TG_KEY_PROJECT;
    r->role = col_text(st, 7);
    r->owner_user_id = col_text(st, 8);
    r->created_ms = sqlite3_column_int64(st, 9);
    r->expires_ms = sqlite3_column_int64(st, 10);
    r->revoked_ms = sqlite3_column_int64(st, 11);
    r->last_used_ms = sqlite3_column_int64(st, 12);
    return true;
}

static int
sq_keys_list(struct tg_store *store, const char *org_id, tg_store_key_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_KEYS_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_key_rec r;
        if (!read_key(st, &r)) {
            /* Skip rather than fail: one damaged row must not lock every key out. */
            tg_log_error("store: key %s has a malformed hash; skipped", r.id ? r.id : "?");
            continue;
        }
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = fail(s, sqlite3_extended_errcode(s->db), "list keys");
    }
    if (st != NULL) {
        done(st);
    }
    unlock(s);
    return rc;
}

/* ---- ledger ------------------------------------------------------------------------------ */

static int
insert_row(struct sq *s, sqlite3_stmt *st, const struct tg_ledger_row *r)
{
    /* The row's strings are fixed arrays; SQLITE_STATIC is fine since each is bound and
     * stepped within this call. */
    bind_text(st, 1, r->request_id);
    sqlite3_bind_int(st, 2, r->attempt);
    sqlite3_bind_int64(st, 3, r->time_ms);
    bind_text(st, 4, r->org_id);
    bind_text(st, 5, r->project_id);
    bind_text(st, 6, r->key_id);
    bind_text(st, 7, r->user_id);
    bind_text(st, 8, r->endpoint);
    bind_text(st, 9, r->model_requested);
    bind_text(st, 10, r->provider);
    bind_text(st, 11, r->deployment);
    sqlite3_bind_int64(st, 12, r->prompt_tokens);
    sqlite3_bind_int64(st, 13, r->cached_tokens);
    sqlite3_bind_int64(st, 14, r->completion_tokens);
    sqlite3_bind_int64(st, 15, r->reasoning_tokens);
    sqlite3_bind_int64(st, 16, r->cost_micros);
    sqlite3_bind_int(st, 17, r->status);
    sqlite3_bind_int64(st, 18, r->latency_ms);
    sqlite3_bind_int64(st, 19, r->ttft_ms);
    sqlite3_bind_int(st, 20, r->is_stream ? 1 : 0);
    sqlite3_bind_int(st, 21, r->is_usage_estimated ? 1 : 0);
    bind_text(st, 22, r->error);
    sqlite3_bind_int64(st, 23, r->saved_micros);
    return run(s, st, "append ledger row");
}

static int
sq_ledger_append(struct tg_store *store, const struct tg_ledger_row *rows, size_t n)
{
    if (n == 0) {
        return 0;
    }
    struct sq *s = sq_of(store);
    lock(s);
    int rc = tx_begin(s);
    if (rc == 0) {
        sqlite3_stmt *st = stmt(s, S_LEDGER_INSERT);
        rc = st != NULL ? 0 : TG_ESTORE;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            rc = insert_row(s, st, &rows[i]);
        }
        rc = tx_end(s, rc);
    }
    unlock(s);
    return rc;
}

/* ---- usage --------------------------------------------------------------------------------- */

static void
bind_usage(sqlite3_stmt *st, const struct tg_usage_query *q, const char *endpoints)
{
    bind_text(st, 1, q->org_id);
    sqlite3_bind_int64(st, 2, q->start_ms);
    sqlite3_bind_int64(st, 3, q->end_ms);
    sqlite3_bind_int64(st, 4, q->bucket_ms);
    bind_text(st, 5, q->project_id);
    bind_text(st, 6, q->key_id);
    bind_text(st, 7, q->model);
    bind_text(st, 8, q->endpoint);
    bind_text(st, 9, endpoints);
    sqlite3_bind_int(st, 10, q->group_by_project);
    sqlite3_bind_int(st, 11, q->group_by_key);
    sqlite3_bind_int(st, 12, q->group_by_model);
}

static int
sq_usage_query(struct tg_store *store, const struct tg_usage_query *q, tg_store_usage_cb cb,
               void *arg)
{
    if (q->bucket_ms <= 0 || q->org_id == NULL) {
        return TG_EINVAL;
    }
    struct sq *s = sq_of(store);
    char *endpoints = strings_json(q->endpoints, q->n_endpoints);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_USAGE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    if (rc == 0) {
        bind_usage(st, q, endpoints);
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        /* sum() of integer columns is exact integer arithmetic (it fails rather than wrap
         * past 2^63), so the totals equal the rows to the token and the micro-dollar. */
        struct tg_usage_result r = {
            .bucket_start_ms = sqlite3_column_int64(st, 0),
            .project_id = col_text(st, 1),
            .key_id = col_text(st, 2),
            .model = col_text(st, 3),
            .requests = sqlite3_column_int64(st, 4),
            .prompt_tokens = sqlite3_column_int64(st, 5),
            .cached_tokens = sqlite3_column_int64(st, 6),
            .completion_tokens = sqlite3_column_int64(st, 7),
            .reasoning_tokens = sqlite3_column_int64(st, 8),
            .cost_micros = sqlite3_column_int64(st, 9),
        };
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = fail(s, sqlite3_extended_errcode(s->db), "usage query");
    }
    if (st != NULL) {
        done(st);
    }
    unlock(s);
    free(endpoints);
    return rc;
}

static int
sq_spend_by_level(struct tg_store *store, const char *org_id, int64_t since_ms,
                  tg_store_spend_cb cb, void *arg)
{
    if (org_id == NULL) {
        return TG_EINVAL;
    }
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_SPEND);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
        sqlite3_bind_int64(st, 2, since_ms);
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_spend_rec r = {col_text(st, 0), col_text(st, 1), sqlite3_column_int64(st, 2)};
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = fail(s, sqlite3_extended_errcode(s->db), "spend query");
    }
    if (st != NULL) {
        done(st);
    }
    unlock(s);
    return rc;
}

/* ---- transactions ------------------------------------------------------------------------- */

static int
sq_transact(struct tg_store *store, tg_store_tx_fn fn, void *arg)
{
    struct sq *s = sq_of(store);
    lock(s);
    int rc = tx_begin(s);
    if (rc == 0) {
        rc = tx_end(s, fn(store, arg));
    }
    unlock(s);
    return rc;
}

/* ---- project updates, key roles ------------------------------------------------------------ */

static int
sq_project_update(struct tg_store *store, const struct tg_project_rec *r)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_PROJECT_UPDATE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, r->id);
        bind_text(st, 2, r->name);
        bind_text(st, 3, r->environment);
        sqlite3_bind_int64(st, 4, r->archived_ms);
        bind_text(st, 5, r->settings);
        rc = run(s, st, "update project");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    unlock(s);
    return rc;
}

static int
sq_keys_set_role_by_user(struct tg_store *store, const char *user_id, const char *role)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_KEYS_SET_ROLE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        /* A user with no admin keys is not an error: there is simply nothing to change. */
        bind_text(st, 1, user_id);
        bind_text(st, 2, role);
        rc = run(s, st, "set key roles");
    }
    unlock(s);
    return rc;
}

/* ---- documents ------------------------------------------------------------------------------- */

struct doc_walk {
    tg_store_doc_cb cb;
    void *arg;
    size_t n;
};

static int
doc_row(sqlite3_stmt *st, void *arg)
{
    struct doc_walk *w = arg;
    struct tg_doc d = {
        .kind = col_text(st, 0),
        .id = col_text(st, 1),
        .org_id = col_text(st, 2),
        .project_id = col_text(st, 3),
        .data = col_text(st, 4),
        .created_ms = sqlite3_column_int64(st, 5),
        .updated_ms = sqlite3_column_int64(st, 6),
    };
    w->n++;
    return w->cb(&d, w->arg);
}

static int
sq_doc_get(struct tg_store *store, const char *kind, const char *id, tg_store_doc_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct doc_walk w = {cb, arg, 0};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_DOC_GET);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, kind);
        bind_text(st, 2, id);
        rc = each_row(s, st, doc_row, &w, "get document");
    }
    unlock(s);
    return rc == 0 && w.n == 0 ? TG_ENOTFOUND : rc;
}

static int
sq_doc_put(struct tg_store *store, const struct tg_doc *d)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_DOC_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, d->kind);
        bind_text(st, 2, d->id);
        bind_text(st, 3, d->org_id);
        bind_text(st, 4, d->project_id);
        bind_text(st, 5, d->data);
        sqlite3_bind_int64(st, 6, d->created_ms);
        sqlite3_bind_int64(st, 7, d->updated_ms);
        rc = run(s, st, "put document");
    }
    unlock(s);
    return rc;
}

static int
sq_doc_delete(struct tg_store *store, const char *kind, const char *id)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_DOC_DELETE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, kind);
        bind_text(st, 2, id);
        rc = run(s, st, "delete document");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    unlock(s);
    return rc;
}

static int
sq_doc_list(struct tg_store *store, const char *kind, const char *org_id, const char *project_id,
            tg_store_doc_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct doc_walk w = {cb, arg, 0};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_DOC_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, kind);
        bind_text(st, 2, org_id);
        bind_text(st, 3, project_id);
        rc = each_row(s, st, doc_row, &w, "list documents");
    }
    unlock(s);
    return rc;
}

/* ---- audit log ---------------------------------------------------------------------------------
 */

/* Copies a stored hash; one of the wrong size (a damaged row) reads as all zero, which no
 * real hash is, so verification reports the entry instead of the store failing. */
static void
col_hash(sqlite3_stmt *st, int i, unsigned char out[TG_SHA256_BYTES])
{
    const void *p = sqlite3_column_blob(st, i);
    if (p != NULL && sqlite3_column_bytes(st, i) == TG_SHA256_BYTES) {
        memcpy(out, p, TG_SHA256_BYTES);
    } else {
        memset(out, 0, TG_SHA256_BYTES);
    }
}

struct audit_walk {
    tg_store_audit_cb cb;
    void *arg;
};

static int
audit_row(sqlite3_stmt *st, void *arg)
{
    struct audit_walk *w = arg;
    struct tg_audit_rec r = {
        .seq = sqlite3_column_int64(st, 0),
        .id = col_text(st, 1),
        .org_id = col_text(st, 2),
        .time_ms = sqlite3_column_int64(st, 3),
        .type = col_text(st, 4),
        .actor_type = col_text(st, 5),
        .actor_id = col_text(st, 6),
        .actor_user = col_text(st, 7),
        .project_id = col_text(st, 8),
        .target_id = col_text(st, 9),
        .before = col_text(st, 10),
        .after = col_text(st, 11),
        .source_addr = col_text(st, 12),
    };
    col_hash(st, 13, r.prev_hash);
    col_hash(st, 14, r.hash);
    return w->cb(&r, w->arg);
}

/* Reads the org's last entry: *seq 0 and a zero hash when the log is empty. */
static int
audit_last(struct sq *s, const char *org_id, int64_t *seq, unsigned char hash[TG_SHA256_BYTES])
{
    *seq = 0;
    memset(hash, 0, TG_SHA256_BYTES);
    sqlite3_stmt *st = stmt(s, S_AUDIT_LAST);
    if (st == NULL) {
        return TG_ESTORE;
    }
    bind_text(st, 1, org_id);
    int rc = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *seq = sqlite3_column_int64(st, 0);
        col_hash(st, 1, hash);
    } else if (step != SQLITE_DONE) {
        rc = fail(s, sqlite3_extended_errcode(s->db), "read last audit entry");
    }
    done(st);
    return rc;
}

static int
audit_insert(struct sq *s, struct tg_audit_rec *r)
{
    int64_t last = 0;
    int rc = audit_last(s, r->org_id, &last, r->prev_hash);
    if (rc < 0) {
        return rc;
    }
    r->seq = last + 1;
    tg_audit_hash(r, r->hash);
    sqlite3_stmt *st = stmt(s, S_AUDIT_INSERT);
    if (st == NULL) {
        return TG_ESTORE;
    }
    sqlite3_bind_int64(st, 1, r->seq);
    bind_text(st, 2, r->id);
    bind_text(st, 3, r->org_id);
    sqlite3_bind_int64(st, 4, r->time_ms);
    bind_text(st, 5, r->type);
    bind_text(st, 6, r->actor_type);
    bind_text(st, 7, r->actor_id);
    bind_text(st, 8, r->actor_user);
    bind_text(st, 9, r->project_id);
    bind_text(st, 10, r->target_id);
    bind_text(st, 11, r->before);
    bind_text(st, 12, r->after);
    bind_text(st, 13, r->source_addr);
    sqlite3_bind_blob(st, 14, r->prev_hash, TG_SHA256_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 15, r->hash, TG_SHA256_BYTES, SQLITE_STATIC);
    return run(s, st, "append audit entry");
}

static int
sq_audit_append(struct tg_store *store, struct tg_audit_rec *r)
{
    struct sq *s = sq_of(store);
    lock(s);
    /* Reading the last entry and inserting after it is one unit: inside the write
     * transaction no other process can append between the two. */
    int rc = tx_begin(s);
    if (rc == 0) {
        rc = tx_end(s, audit_insert(s, r));
    }
    unlock(s);
    return rc;
}

static int
sq_audit_list(struct tg_store *store, const struct tg_audit_query *q, tg_store_audit_cb cb,
              void *arg)
{
    if (q->org_id == NULL) {
        return TG_EINVAL;
    }
    struct sq *s = sq_of(store);
    char *types = strings_json(q->types, q->n_types);
    char *actors = strings_json(q->actor_ids, q->n_actor_ids);
    char *projects = strings_json(q->project_ids, q->n_project_ids);
    struct audit_walk w = {cb, arg};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_AUDIT_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, q->org_id);
        bind_text(st, 2, types);
        bind_text(st, 3, actors);
        bind_text(st, 4, projects);
        sqlite3_bind_int64(st, 5, q->since_ms);
        sqlite3_bind_int64(st, 6, q->until_ms);
        sqlite3_bind_int64(st, 7, q->before_seq);
        sqlite3_bind_int64(st, 8,
                           q->limit == 0 || q->limit > INT64_MAX ? -1 : (sqlite3_int64)q->limit);
        rc = each_row(s, st, audit_row, &w, "list audit entries");
    }
    unlock(s);
    free(types);
    free(actors);
    free(projects);
    return rc;
}

static int
sq_audit_all(struct tg_store *store, const char *org_id, tg_store_audit_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct audit_walk w = {cb, arg};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_AUDIT_ALL);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
        rc = each_row(s, st, audit_row, &w, "walk audit entries");
    }
    unlock(s);
    return rc;
}

/* ---- config versions ----------------------------------------------------------------------------
 */

struct version_walk {
    tg_store_version_cb cb;
    void *arg;
    size_t n;
};

static int
version_row(sqlite3_stmt *st, void *arg)
{
    struct version_walk *w = arg;
    struct tg_version_rec r = {
        .number = sqlite3_column_int64(st, 0),
        .org_id = col_text(st, 1),
        .project_id = col_text(st, 2),
        .time_ms = sqlite3_column_int64(st, 3),
        .actor_id = col_text(st, 4),
        .reason = col_text(st, 5),
        .settings = col_text(st, 6),
    };
    w->n++;
    return w->cb(&r, w->arg);
}

static int
version_insert(struct sq *s, struct tg_version_rec *r)
{
    sqlite3_stmt *st = stmt(s, S_VERSION_LAST);
    if (st == NULL) {
        return TG_ESTORE;
    }
    bind_text(st, 1, r->org_id);
    int64_t last = 0;
    int step = sqlite3_step(st);
    int rc = 0;
    if (step == SQLITE_ROW) {
        last = sqlite3_column_int64(st, 0);
    } else {
        rc = fail(s, sqlite3_extended_errcode(s->db), "read last version");
    }
    done(st);
    if (rc < 0) {
        return rc;
    }
    st = stmt(s, S_VERSION_INSERT);
    if (st == NULL) {
        return TG_ESTORE;
    }
    sqlite3_bind_int64(st, 1, last + 1);
    bind_text(st, 2, r->org_id);
    bind_text(st, 3, r->project_id);
    sqlite3_bind_int64(st, 4, r->time_ms);
    bind_text(st, 5, r->actor_id);
    bind_text(st, 6, r->reason);
    bind_text(st, 7, r->settings);
    rc = run(s, st, "append version");
    if (rc == 0) {
        r->number = last + 1;
    }
    return rc;
}

static int
sq_version_append(struct tg_store *store, struct tg_version_rec *r)
{
    struct sq *s = sq_of(store);
    lock(s);
    int rc = tx_begin(s);
    if (rc == 0) {
        rc = tx_end(s, version_insert(s, r));
    }
    unlock(s);
    return rc;
}

static int
sq_version_list(struct tg_store *store, const char *org_id, const char *project_id,
                tg_store_version_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct version_walk w = {cb, arg, 0};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_VERSION_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
        bind_text(st, 2, project_id);
        rc = each_row(s, st, version_row, &w, "list versions");
    }
    unlock(s);
    return rc;
}

static int
sq_version_get(struct tg_store *store, const char *org_id, int64_t number, tg_store_version_cb cb,
               void *arg)
{
    struct sq *s = sq_of(store);
    struct version_walk w = {cb, arg, 0};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_VERSION_GET);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
        sqlite3_bind_int64(st, 2, number);
        rc = each_row(s, st, version_row, &w, "get version");
    }
    unlock(s);
    return rc == 0 && w.n == 0 ? TG_ENOTFOUND : rc;
}

/* ---- notification outbox ------------------------------------------------------------------- */

static int
sq_outbox_put(struct tg_store *store, const struct tg_outbox_rec *r, bool *inserted)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_OUTBOX_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, r->org_id);
        bind_text(st, 2, r->event_key);
        bind_text(st, 3, r->channel);
        bind_text(st, 4, r->target);
        bind_text(st, 5, r->payload);
        sqlite3_bind_int64(st, 6, r->created_ms);
        sqlite3_bind_int64(st, 7, r->next_attempt_ms);
        rc = run(s, st, "put outbox row");
    }
    if (inserted != NULL) {
        *inserted = rc == 0 && sqlite3_changes(s->db) > 0;
    }
    unlock(s);
    return rc;
}

struct outbox_walk {
    tg_store_outbox_cb cb;
    void *arg;
};

static int
outbox_row(sqlite3_stmt *st, void *arg)
{
    struct outbox_walk *w = arg;
    struct tg_outbox_rec r = {
        .id = sqlite3_column_int64(st, 0),
        .org_id = col_text(st, 1),
        .event_key = col_text(st, 2),
        .channel = col_text(st, 3),
        .target = col_text(st, 4),
        .payload = col_text(st, 5),
        .created_ms = sqlite3_column_int64(st, 6),
        .attempts = sqlite3_column_int(st, 7),
        .next_attempt_ms = sqlite3_column_int64(st, 8),
        .delivered_ms = sqlite3_column_int64(st, 9),
        .last_error = col_text(st, 10),
    };
    return w->cb(&r, w->arg);
}

static int
sq_outbox_due(struct tg_store *store, int64_t now_ms, size_t limit, tg_store_outbox_cb cb,
              void *arg)
{
    struct sq *s = sq_of(store);
    struct outbox_walk w = {cb, arg};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_OUTBOX_DUE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, now_ms);
        sqlite3_bind_int64(st, 2, limit == 0 || limit > INT64_MAX ? -1 : (sqlite3_int64)limit);
        rc = each_row(s, st, outbox_row, &w, "list due outbox rows");
    }
    unlock(s);
    return rc;
}

static int
sq_outbox_mark(struct tg_store *store, int64_t id, int64_t delivered_ms, const char *error,
               int64_t next_attempt_ms)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, delivered_ms > 0 ? S_OUTBOX_DELIVERED : S_OUTBOX_FAILED);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, id);
        if (delivered_ms > 0) {
            sqlite3_bind_int64(st, 2, delivered_ms);
        } else {
            bind_text(st, 2, error);
            sqlite3_bind_int64(st, 3, next_attempt_ms);
        }
        rc = run(s, st, "mark outbox row");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    unlock(s);
    return rc;
}

static int
sq_outbox_list(struct tg_store *store, const char *org_id, size_t limit, tg_store_outbox_cb cb,
               void *arg)
{
    struct sq *s = sq_of(store);
    struct outbox_walk w = {cb, arg};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_OUTBOX_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
        sqlite3_bind_int64(st, 2, limit == 0 || limit > INT64_MAX ? -1 : (sqlite3_int64)limit);
        rc = each_row(s, st, outbox_row, &w, "list outbox rows");
    }
    unlock(s);
    return rc;
}

/* ---- ledger lookup --------------------------------------------------------------------------- */

static void
col_copy(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const char *v = col_text(st, i);
    snprintf(out, cap, "%s", v != NULL ? v : "");
}

struct ledger_walk {
    tg_store_ledger_cb cb;
    void *arg;
    bool is_found;
};

static int
ledger_row(sqlite3_stmt *st, void *arg)
{
    struct ledger_walk *w = arg;
    struct tg_ledger_row r;
    memset(&r, 0, sizeof(r));
    col_copy(st, 0, r.request_id, sizeof(r.request_id));
    r.attempt = sqlite3_column_int(st, 1);
    r.time_ms = sqlite3_column_int64(st, 2);
    col_copy(st, 3, r.org_id, sizeof(r.org_id));
    col_copy(st, 4, r.project_id, sizeof(r.project_id));
    col_copy(st, 5, r.key_id, sizeof(r.key_id));
    col_copy(st, 6, r.user_id, sizeof(r.user_id));
    col_copy(st, 7, r.endpoint, sizeof(r.endpoint));
    col_copy(st, 8, r.model_requested, sizeof(r.model_requested));
    col_copy(st, 9, r.provider, sizeof(r.provider));
    col_copy(st, 10, r.deployment, sizeof(r.deployment));
    r.prompt_tokens = sqlite3_column_int64(st, 11);
    r.cached_tokens = sqlite3_column_int64(st, 12);
    r.completion_tokens = sqlite3_column_int64(st, 13);
    r.reasoning_tokens = sqlite3_column_int64(st, 14);
    r.cost_micros = sqlite3_column_int64(st, 15);
    r.status = sqlite3_column_int(st, 16);
    r.latency_ms = sqlite3_column_int64(st, 17);
    r.ttft_ms = sqlite3_column_int64(st, 18);
    r.is_stream = sqlite3_column_int(st, 19) != 0;
    r.is_usage_estimated = sqlite3_column_int(st, 20) != 0;
    col_copy(st, 21, r.error, sizeof(r.error));
    r.saved_micros = sqlite3_column_int64(st, 22);
    w->is_found = true;
    return w->cb(&r, w->arg);
}

static int
sq_ledger_find(struct tg_store *store, const char *request_id, const char *project_id,
               tg_store_ledger_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct ledger_walk w = {cb, arg, false};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_LEDGER_FIND);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, request_id);
        bind_text(st, 2, project_id);
        rc = each_row(s, st, ledger_row, &w, "find ledger row");
    }
    unlock(s);
    return rc == 0 && !w.is_found ? TG_ENOTFOUND : rc;
}

/* ---- alert rules and events ------------------------------------------------------------------ */

static int
sq_alert_rule_put(struct tg_store *store, const struct tg_alert_rule_rec *r)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_ALERT_RULE_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, r->id);
        bind_text(st, 2, r->org_id);
        bind_text(st, 3, r->name);
        bind_text(st, 4, r->project_id);
        bind_text(st, 5, r->model);
        bind_text(st, 6, r->metric);
        bind_text(st, 7, r->condition);
        sqlite3_bind_double(st, 8, r->threshold);
        sqlite3_bind_int64(st, 9, r->window_s);
        sqlite3_bind_int64(st, 10, r->min_requests);
        bind_text(st, 11, r->channels != NULL ? r->channels : "{}");
        sqlite3_bind_int(st, 12, r->is_enabled ? 1 : 0);
        sqlite3_bind_int64(st, 13, r->created_ms);
        sqlite3_bind_int64(st, 14, r->updated_ms);
        rc = run(s, st, "put alert rule");
    }
    unlock(s);
    return rc;
}

struct rule_walk {
    tg_store_alert_rule_cb cb;
    void *arg;
    bool is_found;
};

static int
alert_rule_row(sqlite3_stmt *st, void *arg)
{
    struct rule_walk *w = arg;
    struct tg_alert_rule_rec r = {
        .id = col_text(st, 0),
        .org_id = col_text(st, 1),
        .name = col_text(st, 2),
        .project_id = col_text(st, 3),
        .model = col_text(st, 4),
        .metric = col_text(st, 5),
        .condition = col_text(st, 6),
        .threshold = sqlite3_column_double(st, 7),
        .window_s = sqlite3_column_int64(st, 8),
        .min_requests = sqlite3_column_int64(st, 9),
        .channels = col_text(st, 10),
        .is_enabled = sqlite3_column_int(st, 11) != 0,
        .created_ms = sqlite3_column_int64(st, 12),
        .updated_ms = sqlite3_column_int64(st, 13),
    };
    w->is_found = true;
    return w->cb(&r, w->arg);
}

static int
sq_alert_rule_get(struct tg_store *store, const char *id, tg_store_alert_rule_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct rule_walk w = {cb, arg, false};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_ALERT_RULE_GET);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, id);
        rc = each_row(s, st, alert_rule_row, &w, "get alert rule");
    }
    unlock(s);
    return rc == 0 && !w.is_found ? TG_ENOTFOUND : rc;
}

static int
sq_alert_rule_delete(struct tg_store *store, const char *id)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_ALERT_RULE_DELETE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, id);
        rc = run(s, st, "delete alert rule");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    unlock(s);
    return rc;
}

static int
sq_alert_rules_list(struct tg_store *store, const char *org_id, tg_store_alert_rule_cb cb,
                    void *arg)
{
    struct sq *s = sq_of(store);
    struct rule_walk w = {cb, arg, false};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_ALERT_RULES_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
        rc = each_row(s, st, alert_rule_row, &w, "list alert rules");
    }
    unlock(s);
    return rc;
}

static int
sq_alert_event_put(struct tg_store *store, const struct tg_alert_event_rec *r)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_ALERT_EVENT_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, r->id);
        bind_text(st, 2, r->org_id);
        bind_text(st, 3, r->rule_id);
        bind_text(st, 4, r->name);
        bind_text(st, 5, r->metric);
        bind_text(st, 6, r->project_id);
        bind_text(st, 7, r->model);
        sqlite3_bind_double(st, 8, r->value);
        sqlite3_bind_double(st, 9, r->threshold);
        sqlite3_bind_int64(st, 10, r->fired_ms);
        sqlite3_bind_int64(st, 11, r->resolved_ms);
        rc = run(s, st, "put alert event");
    }
    unlock(s);
    return rc;
}

struct event_walk {
    tg_store_alert_event_cb cb;
    void *arg;
};

static int
alert_event_row(sqlite3_stmt *st, void *arg)
{
    struct event_walk *w = arg;
    struct tg_alert_event_rec r = {
        .id = col_text(st, 0),
        .org_id = col_text(st, 1),
        .rule_id = col_text(st, 2),
        .name = col_text(st, 3),
        .metric = col_text(st, 4),
        .project_id = col_text(st, 5),
        .model = col_text(st, 6),
        .value = sqlite3_column_double(st, 7),
        .threshold = sqlite3_column_double(st, 8),
        .fired_ms = sqlite3_column_int64(st, 9),
        .resolved_ms = sqlite3_column_int64(st, 10),
    };
    return w->cb(&r, w->arg);
}

static int
sq_alert_events_list(struct tg_store *store, const char *org_id, const char *rule_id, int state,
                     size_t limit, tg_store_alert_event_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct event_walk w = {cb, arg};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_ALERT_EVENTS_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
        bind_text(st, 2, rule_id);
        sqlite3_bind_int(st, 3, state);
        sqlite3_bind_int64(st, 4, limit == 0 || limit > INT64_MAX ? -1 : (sqlite3_int64)limit);
        rc = each_row(s, st, alert_event_row, &w, "list alert events");
    }
    unlock(s);
    return rc;
}

/* ---- feedback ----------------------------------------------------------------------------------
 */

static int
sq_feedback_insert(struct tg_store *store, const struct tg_feedback_rec *r)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_FEEDBACK_INSERT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, r->id);
        bind_text(st, 2, r->org_id);
        bind_text(st, 3, r->project_id);
        bind_text(st, 4, r->request_id);
        bind_text(st, 5, r->model != NULL ? r->model : "");
        bind_text(st, 6, r->provider != NULL ? r->provider : "");
        bind_text(st, 7, r->deployment != NULL ? r->deployment : "");
        sqlite3_bind_double(st, 8, r->score);
        bind_text(st, 9, r->label);
        bind_text(st, 10, r->comment);
        sqlite3_bind_int64(st, 11, r->created_ms);
        rc = run(s, st, "insert feedback");
    }
    unlock(s);
    return rc;
}

struct agg_walk {
    tg_store_feedback_agg_cb cb;
    void *arg;
};

static int
feedback_agg_row(sqlite3_stmt *st, void *arg)
{
    struct agg_walk *w = arg;
    struct tg_feedback_agg r = {
        .model = col_text(st, 0),
        .deployment = col_text(st, 1),
        .label = col_text(st, 2),
        .count = sqlite3_column_int64(st, 3),
        .score_sum = sqlite3_column_double(st, 4),
    };
    return w->cb(&r, w->arg);
}

static int
sq_feedback_aggregate(struct tg_store *store, const char *org_id, int64_t start_ms, int64_t end_ms,
                      bool by_deployment, tg_store_feedback_agg_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct agg_walk w = {cb, arg};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_FEEDBACK_AGG);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        bind_text(st, 1, org_id);
        sqlite3_bind_int64(st, 2, start_ms);
        sqlite3_bind_int64(st, 3, end_ms);
        sqlite3_bind_int(st, 4, by_deployment ? 1 : 0);
        rc = each_row(s, st, feedback_agg_row, &w, "aggregate feedback");
    }
    unlock(s);
    return rc;
}

/* ---- open and close ------------------------------------------------------------------------ */

static void
sq_close(struct tg_store *store)
{
    struct sq *s = sq_of(store);
    if (s == NULL) {
        return;
    }
    for (int i = 0; i < S_COUNT; i++) {
        sqlite3_finalize(s->stmts[i]);
    }
    /* close_v2 defers the close if a statement escaped; none should, but never crash. */
    sqlite3_close_v2(s->db);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- response cache ---------------------------------------------------------------------- */

struct cache_walk {
    tg_store_cache_cb cb;
    void *arg;
    const unsigned char *key;
    int64_t now_ms;
    int n;
    bool is_expired;
};

static int
cache_row(sqlite3_stmt *st, void *arg)
{
    struct cache_walk *w = arg;
    struct tg_cache_rec r = {
        .key = w->key,
        .status = sqlite3_column_int(st, 0),
        .is_stream = sqlite3_column_int(st, 1) != 0,
        .content_type = col_text(st, 2),
        .project_id = col_text(st, 3),
        .model = col_text(st, 4),
        .prompt_tokens = sqlite3_column_int64(st, 5),
        .cached_tokens = sqlite3_column_int64(st, 6),
        .completion_tokens = sqlite3_column_int64(st, 7),
        .reasoning_tokens = sqlite3_column_int64(st, 8),
        .cost_micros = sqlite3_column_int64(st, 9),
        .created_ms = sqlite3_column_int64(st, 10),
        .expires_ms = sqlite3_column_int64(st, 11),
    };
    if (r.expires_ms > 0 && r.expires_ms <= w->now_ms) {
        w->is_expired = true;
        return 0;
    }
    /* column_blob before column_bytes: the documented order for a stable pointer. */
    const void *body = sqlite3_column_blob(st, 12);
    r.body_len = (size_t)sqlite3_column_bytes(st, 12);
    r.body = body != NULL ? body : "";
    w->n++;
    return w->cb(&r, w->arg);
}

static int
sq_cache_get(struct tg_store *store, const unsigned char *key, int64_t now_ms, tg_store_cache_cb cb,
             void *arg)
{
    struct sq *s = sq_of(store);
    struct cache_walk w = {cb, arg, key, now_ms, 0, false};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_CACHE_GET);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_blob(st, 1, key, TG_SHA256_BYTES, SQLITE_STATIC);
        rc = each_row(s, st, cache_row, &w, "get cache entry");
    }
    if (rc == 0 && w.is_expired) {
        st = stmt(s, S_CACHE_DELETE_KEY);
        if (st != NULL) {
            sqlite3_bind_blob(st, 1, key, TG_SHA256_BYTES, SQLITE_STATIC);
            (void)run(s, st, "delete expired cache entry"); /* a miss either way */
        }
    }
    unlock(s);
    return rc == 0 && w.n == 0 ? TG_ENOTFOUND : rc;
}

static int
sq_cache_put(struct tg_store *store, const struct tg_cache_rec *r)
{
    struct sq *s = sq_of(store);
    if (r->body_len > INT32_MAX) {
        return TG_ETOOBIG;
    }
    lock(s);
    sqlite3_stmt *st = stmt(s, S_CACHE_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_blob(st, 1, r->key, TG_SHA256_BYTES, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, r->status);
        sqlite3_bind_int(st, 3, r->is_stream ? 1 : 0);
        sqlite3_bind_text(st, 4, r->content_type ? r->content_type : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, r->project_id ? r->project_id : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, r->model ? r->model : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, r->prompt_tokens);
        sqlite3_bind_int64(st, 8, r->cached_tokens);
        sqlite3_bind_int64(st, 9, r->completion_tokens);
        sqlite3_bind_int64(st, 10, r->reasoning_tokens);
        sqlite3_bind_int64(st, 11, r->cost_micros);
        sqlite3_bind_int64(st, 12, r->created_ms);
        sqlite3_bind_int64(st, 13, r->expires_ms);
        /* An empty body binds an empty blob: NULL would break the NOT NULL column. */
        sqlite3_bind_blob(st, 14, r->body != NULL ? r->body : "", (int)r->body_len, SQLITE_STATIC);
        rc = run(s, st, "put cache entry");
    }
    unlock(s);
    return rc;
}

static int
sq_cache_invalidate(struct tg_store *store, bool all, const char *project_id, const char *model,
                    int64_t created_before_ms, size_t *n_removed)
{
    struct sq *s = sq_of(store);
    lock(s);
    sqlite3_stmt *st = stmt(s, S_CACHE_INVALIDATE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_int(st, 1, all ? 1 : 0);
        bind_text(st, 2, project_id);
        bind_text(st, 3, model);
        sqlite3_bind_int64(st, 4, created_before_ms);
        rc = run(s, st, "invalidate cache entries");
    }
    if (n_removed != NULL) {
        *n_removed = rc == 0 ? (size_t)sqlite3_changes(s->db) : 0;
    }
    unlock(s);
    return rc;
}

static int
cache_stats_row(sqlite3_stmt *st, void *arg)
{
    int64_t *v = arg;
    v[0] = sqlite3_column_int64(st, 0);
    v[1] = sqlite3_column_int64(st, 1);
    return 0;
}

static int
sq_cache_stats(struct tg_store *store, size_t *n_entries, size_t *bytes)
{
    struct sq *s = sq_of(store);
    int64_t v[2] = {0, 0};
    lock(s);
    sqlite3_stmt *st = stmt(s, S_CACHE_STATS);
    int rc = st != NULL ? each_row(s, st, cache_stats_row, v, "cache stats") : TG_ESTORE;
    unlock(s);
    *n_entries = (size_t)v[0];
    *bytes = (size_t)v[1];
    return rc;
}

static const struct tg_store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .bootstrap = sq_bootstrap,
    .orgs_list = sq_orgs_list,
    .projects_list = sq_projects_list,
    .project_insert = sq_project_insert,
    .key_insert = sq_key_insert,
    .key_revoke = sq_key_revoke,
    .keys_list = sq_keys_list,
    .ledger_append = sq_ledger_append,
    .usage_query = sq_usage_query,
    .spend_by_level = sq_spend_by_level,
    .transact = sq_transact,
    .project_update = sq_project_update,
    .keys_set_role_by_user = sq_keys_set_role_by_user,
    .doc_get = sq_doc_get,
    .doc_put = sq_doc_put,
    .doc_delete = sq_doc_delete,
    .doc_list = sq_doc_list,
    .audit_append = sq_audit_append,
    .audit_list = sq_audit_list,
    .audit_all = sq_audit_all,
    .version_append = sq_version_append,
    .version_list = sq_version_list,
    .version_get = sq_version_get,
    .outbox_put = sq_outbox_put,
    .outbox_due = sq_outbox_due,
    .outbox_mark = sq_outbox_mark,
    .cache_get = sq_cache_get,
    .cache_put = sq_cache_put,
    .cache_invalidate = sq_cache_invalidate,
    .cache_stats = sq_cache_stats,
    .outbox_list = sq_outbox_list,
    .ledger_find = sq_ledger_find,
    .alert_rule_put = sq_alert_rule_put,
    .alert_rule_get = sq_alert_rule_get,
    .alert_rule_delete = sq_alert_rule_delete,
    .alert_rules_list = sq_alert_rules_list,
    .alert_event_put = sq_alert_event_put,
    .alert_events_list = sq_alert_events_list,
    .feedback_insert = sq_feedback_insert,
    .feedback_aggregate = sq_feedback_aggregate,
};

static int
exec(sqlite3 *db, const char *sql, char *err, size_t err_cap)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_cap, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return TG_ESTORE;
    }
    return 0;
}

static int
user_version(sqlite3 *db, int *out, char *err, size_t err_cap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        *out = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        return 0;
    }
    snprintf(err, err_cap, "cannot read the schema version: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return TG_ESTORE;
}

/* Brings the schema to N_MIGRATIONS, one transaction per step. */
static int
migrate(sqlite3 *db, char *err, size_t err_cap)
{
    for (;;) {
        if (exec(db, "BEGIN IMMEDIATE", err, err_cap) < 0) {
            return TG_ESTORE;
        }
        /* Read the version inside the write transaction: another process may have migrated
         * between our read and our write. */
        int version = 0;
        int rc = user_version(db, &version, err, err_cap);
        if (rc == 0 && version > (int)N_MIGRATIONS) {
            snprintf(err, err_cap,
                     "the store has schema version %d; this tollgate knows up to %d (a newer "
                     "tollgate made it)",
                     version, (int)N_MIGRATIONS);
            rc = TG_ESTORE;
        }
        if (rc == 0 && version == (int)N_MIGRATIONS) {
            return exec(db, "COMMIT", err, err_cap);
        }
        if (rc == 0) {
            rc = exec(db, migrations[version], err, err_cap);
        }
        if (rc == 0) {
            char sql[64];
            snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
            rc = exec(db, sql, err, err_cap);
        }
        if (rc == 0) {
            rc = exec(db, "COMMIT", err, err_cap);
        }
        if (rc < 0) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
        tg_log_info("store: schema migrated to version %d", version + 1);
    }
}

static int
configure(sqlite3 *db, char *err, size_t err_cap)
{
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    /* NORMAL is durable across process crashes in WAL mode; only a power loss can drop the
     * last transactions, which the ledger's reservations already bound. */
    int rc = exec(db, "PRAGMA journal_mode = WAL", err, err_cap);
    rc = rc < 0 ? rc : exec(db, "PRAGMA synchronous = NORMAL", err, err_cap);
    rc = rc < 0 ? rc : exec(db, "PRAGMA foreign_keys = ON", err, err_cap);
    return rc;
}

int
tg_store_sqlite_open(const char *path, struct tg_store **out, char *err, size_t err_cap)
{
    *out = NULL;
    struct sq *s = tg_xcalloc(1, sizeof(*s));
    s->base.ops = &sqlite_ops;
    /* Recursive: the ops a transaction's function calls take it again on the same thread. */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&s->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    /* NOMUTEX: our own lock already serializes every use of the connection. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_cap, "%s", s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        sq_close(&s->base);
        return TG_ESTORE;
    }
    rc = configure(s->db, err, err_cap);
    rc = rc < 0 ? rc : migrate(s->db, err, err_cap);
    if (rc < 0) {
        sq_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}
