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
 * longer. Every op that writes several rows opens its own level with sq_tx_begin: a BEGIN
 * IMMEDIATE at the outermost level, a SAVEPOINT inside one, so bootstrap or ledger_append
 * called inside a transaction roll back alone on failure and commit with the outer one.
 *
 * The schema is versioned by PRAGMA user_version; each migration runs in its own transaction
 * and bumps the version, so opening a store twice, or an older one, is safe. The ledger has
 * no foreign keys on purpose: accounting must never be refused because a project or key it
 * names was changed, and a refused batch would be retried forever.
 *
 * This file holds open and close, the schema and its migrations, the statement cache,
 * transactions and the ops table; the ops themselves sit by area in sqlite_org.c,
 * sqlite_ledger.c, sqlite_monitor.c and sqlite_cache.c, sharing sqlite_int.h.
 */
#include "store/sqlite_int.h"

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

static const char *const stmt_sql[S_COUNT] = {
#define STMT_SQL(name, sql) sql,
    STATEMENTS(STMT_SQL)
#undef STMT_SQL
};

/* Maps a SQLite result to our codes; logs anything that is not a plain conflict. */
int
sq_fail(struct sq *s, int rc, const char *what)
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
sqlite3_stmt *
sq_stmt(struct sq *s, enum stmt_id id)
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

/* Runs a statement that returns no rows, with its parameters bound. */
int
sq_run(struct sq *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int out = rc == SQLITE_DONE ? 0 : sq_fail(s, sqlite3_extended_errcode(s->db), what);
    sq_done(st);
    return out;
}

int
sq_run_simple(struct sq *s, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = sq_stmt(s, id);
    return st != NULL ? sq_run(s, st, what) : TG_ESTORE;
}

/* Opens one transaction level: BEGIN IMMEDIATE at the outermost (the write lock first, so two
 * processes cannot both read and then both write), a savepoint inside a transaction. The
 * caller holds the lock until the matching sq_tx_end. */
int
sq_tx_begin(struct sq *s)
{
    int rc = sq_run_simple(s, s->depth == 0 ? S_BEGIN : S_SAVEPOINT, "begin");
    if (rc == 0) {
        s->depth++;
    }
    return rc;
}

/* Closes the level sq_tx_begin opened: commits (or releases the savepoint) when rc >= 0, else
 * rolls the level back. Returns rc, or the commit's error. */
int
sq_tx_end(struct sq *s, int rc)
{
    s->depth--;
    bool inner = s->depth > 0;
    if (rc >= 0) {
        int end = sq_run_simple(s, inner ? S_RELEASE : S_COMMIT, "commit");
        if (end == 0) {
            return rc;
        }
        rc = end;
    }
    /* After some errors SQLite has already rolled back; then there is nothing to undo. */
    if (!sqlite3_get_autocommit(s->db)) {
        if (inner) {
            /* ROLLBACK TO keeps the savepoint open; RELEASE then drops it. */
            sq_run_simple(s, S_ROLLBACK_TO, "rollback to savepoint");
            sq_run_simple(s, S_RELEASE, "release savepoint");
        } else {
            sq_run_simple(s, S_ROLLBACK, "rollback");
        }
    }
    return rc;
}

/* Steps st to the end, calling row(st, arg) on each row until one returns non-zero (that
 * value is returned); resets st. */
int
sq_each_row(struct sq *s, sqlite3_stmt *st, sq_row_fn row, void *arg, const char *what)
{
    int rc = 0;
    int step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        rc = row(st, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = sq_fail(s, sqlite3_extended_errcode(s->db), what);
    }
    sq_done(st);
    return rc;
}

/* A JSON array of n strings for json_each(), or NULL when there are none. */
char *
sq_strings_json(const char *const *v, size_t n)
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

/* ---- transactions ------------------------------------------------------------------------- */

static int
sq_transact(struct tg_store *store, tg_store_tx_fn fn, void *arg)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    int rc = sq_tx_begin(s);
    if (rc == 0) {
        rc = sq_tx_end(s, fn(store, arg));
    }
    sq_unlock(s);
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
    sq_ckpt_stop(s);
    for (int i = 0; i < S_COUNT; i++) {
        sqlite3_finalize(s->stmts[i]);
    }
    /* close_v2 defers the close if a statement escaped; none should, but never crash. */
    sqlite3_close_v2(s->db);
    pthread_mutex_destroy(&s->lock);
    free(s);
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
    sq_ckpt_start(s, path);
    *out = &s->base;
    return 0;
}
