/*
 * org_store_test.c: the organization side of the SQLite store (store/store.h): migration from
 * a version-1 file, transactions (commit, rollback, nesting, other threads waiting), documents,
 * project updates, admin key roles, the hash-chained audit log and its filters, and config
 * versions. Each test gets a fresh file; what landed on disk is checked through a second
 * connection where it matters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"
#include "core/err.h"
#include "store/store.h"

#include "../fixture/store_fixture.h"

static void
seed(struct tg_store *s)
{
    static const struct tg_project_rec projects[2] = {
        {"proj_a", "org-1", "development", "development", 1001, 0, NULL},
        {"proj_b", "org-1", "production", "production", 1002, 0, "{\"models\":[\"gpt-4o\"]}"},
    };
    assert_true(store_fx_bootstrap(s, projects, 2));
}

static int
setup(void **state)
{
    struct store_fx *f = store_fx_new("orgstore-test");
    if (f == NULL) {
        return -1;
    }
    seed(f->s);
    *state = f;
    return 0;
}

/* A directory and a file name, no store: the test opens it. */
static int
setup_empty(void **state)
{
    struct store_fx *f = calloc(1, sizeof(*f));
    if (store_fx_mkdir(f, "orgstore-test") < 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

/* Runs SQL on a separate read-write connection (an outsider editing the file). */
static void
outside_exec(const struct store_fx *f, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "exec: %s\n", msg ? msg : "?");
    }
    sqlite3_free(msg);
    sqlite3_close(db);
    assert_int_equal(rc, SQLITE_OK);
}

static struct tg_doc
doc(const char *kind, const char *id, const char *project_id, const char *data, int64_t created)
{
    struct tg_doc d = {
        .kind = kind,
        .id = id,
        .org_id = "org-1",
        .project_id = project_id,
        .data = data,
        .created_ms = created,
        .updated_ms = created,
    };
    return d;
}

static struct tg_audit_rec
entry(const char *id, int64_t time_ms, const char *type, const char *actor, const char *user,
      const char *project)
{
    struct tg_audit_rec r = {
        .id = id,
        .org_id = "org-1",
        .time_ms = time_ms,
        .type = type,
        .actor_type = "api_key",
        .actor_id = actor,
        .actor_user = user,
        .project_id = project,
        .target_id = project,
        .before = NULL,
        .after = "{\"name\":\"x\"}",
        .source_addr = "127.0.0.1",
    };
    return r;
}

/* ---- migration ------------------------------------------------------------------------------ */

/* The shipped schema version 1, verbatim: a file made by the first release. */
static const char schema_v1[] =
    "CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE TABLE projects (id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id),"
    "  name TEXT NOT NULL, environment TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    "  archived_ms INTEGER NOT NULL DEFAULT 0, UNIQUE (org_id, name));"
    "CREATE TABLE api_keys (id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id),"
    "  project_id TEXT REFERENCES projects(id), name TEXT NOT NULL, redacted TEXT NOT NULL,"
    "  hash BLOB NOT NULL UNIQUE, kind INTEGER NOT NULL, role TEXT NOT NULL, owner_user_id TEXT,"
    "  created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL DEFAULT 0,"
    "  revoked_ms INTEGER NOT NULL DEFAULT 0, last_used_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX api_keys_org ON api_keys (org_id, created_ms);"
    "CREATE TABLE ledger (request_id TEXT NOT NULL, attempt INTEGER NOT NULL,"
    "  time_ms INTEGER NOT NULL, org_id TEXT NOT NULL, project_id TEXT NOT NULL,"
    "  key_id TEXT NOT NULL, user_id TEXT NOT NULL, endpoint TEXT NOT NULL,"
    "  model_requested TEXT NOT NULL, provider TEXT NOT NULL, deployment TEXT NOT NULL,"
    "  prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,"
    "  completion_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,"
    "  cost_micros INTEGER NOT NULL, status INTEGER NOT NULL, latency_ms INTEGER NOT NULL,"
    "  ttft_ms INTEGER NOT NULL, is_stream INTEGER NOT NULL, is_usage_estimated INTEGER NOT NULL,"
    "  error TEXT NOT NULL, PRIMARY KEY (request_id, attempt));"
    "CREATE INDEX ledger_org_time ON ledger (org_id, time_ms);"
    "INSERT INTO orgs VALUES ('org-1', 'Default', 1000);"
    "INSERT INTO projects (id, org_id, name, environment, created_ms) VALUES"
    "  ('proj_old', 'org-1', 'development', 'development', 1001);"
    "PRAGMA user_version = 1;";

struct proj_list {
    char id[8][32];
    char name[8][32];
    char settings[8][96];
    int64_t archived[8];
    size_t n;
};

static int
collect_project(const struct tg_project_rec *r, void *arg)
{
    struct proj_list *l = arg;
    snprintf(l->id[l->n], sizeof(l->id[0]), "%s", r->id);
    snprintf(l->name[l->n], sizeof(l->name[0]), "%s", r->name);
    snprintf(l->settings[l->n], sizeof(l->settings[0]), "%s", r->settings ? r->settings : "(null)");
    l->archived[l->n] = r->archived_ms;
    l->n++;
    return 0;
}

static void
migrates_a_version_1_file(void **state)
{
    struct store_fx *f = *state;
    outside_exec(f, schema_v1);
    assert_int_equal(store_fx_scalar(f, "PRAGMA user_version"), 1);

    char err[256] = "";
    assert_int_equal(tg_store_sqlite_open(f->path, &f->s, err, sizeof(err)), 0);
    assert_int_equal(store_fx_scalar(f, "PRAGMA user_version"), 6);

    /* The old project gained empty settings; its data is intact. */
    struct proj_list l = {0};
    assert_int_equal(f->s->ops->projects_list(f->s, "org-1", collect_project, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.id[0], "proj_old");
    assert_string_equal(l.settings[0], "{}");

    /* The new tables work on the migrated file. */
    struct tg_doc d = doc("user", "user-1", NULL, "{\"name\":\"A\"}", 5);
    assert_int_equal(f->s->ops->doc_put(f->s, &d), 0);
    struct tg_audit_rec r = entry("audit_log-1", 10, "user.added", "key_1", NULL, NULL);
    assert_int_equal(f->s->ops->audit_append(f->s, &r), 0);
    assert_int_equal(r.seq, 1);
    struct tg_version_rec v = {0, "org-1", "proj_old", 10, "key_1", "project.updated", "{}"};
    assert_int_equal(f->s->ops->version_append(f->s, &v), 0);
    assert_int_equal(v.number, 1);
    assert_int_equal(
        store_fx_scalar(f, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                           "tbl_name = 'docs' AND sql LIKE '%(kind, org_id, created_ms)%'"),
        1);

    /* Reopening does not migrate again. */
    f->s->ops->close(f->s);
    f->s = NULL;
    assert_int_equal(tg_store_sqlite_open(f->path, &f->s, err, sizeof(err)), 0);
    assert_int_equal(store_fx_scalar(f, "PRAGMA user_version"), 6);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs"), 1);
}

/* ---- transactions ------------------------------------------------------------------------------
 */

struct tx_plan {
    int result;   /* what fn returns */
    int op_rc[4]; /* what each op inside returned */
    const char *doc_id;
    const char *audit_id;
};

static int
put_and_audit(struct tg_store *s, void *arg)
{
    struct tx_plan *p = arg;
    struct tg_doc d = doc("user", p->doc_id, NULL, "{}", 10);
    p->op_rc[0] = s->ops->doc_put(s, &d);
    struct tg_audit_rec r = entry(p->audit_id, 10, "user.added", "key_1", NULL, NULL);
    p->op_rc[1] = s->ops->audit_append(s, &r);
    struct tg_project_rec pr = {"proj_a", "org-1", "dev2", "development", 0, 0, "{\"a\":1}"};
    p->op_rc[2] = s->ops->project_update(s, &pr);
    struct tg_version_rec v = {0, "org-1", "proj_a", 10, "key_1", "project.updated", "{\"a\":1}"};
    p->op_rc[3] = s->ops->version_append(s, &v);
    return p->result;
}

static void
transact_commits_everything(void **state)
{
    struct store_fx *f = *state;
    struct tx_plan p = {.result = 0, .doc_id = "user-1", .audit_id = "audit_log-1"};
    assert_int_equal(f->s->ops->transact(f->s, put_and_audit, &p), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(p.op_rc[i], 0);
    }
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs"), 1);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM audit"), 1);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM versions"), 1);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM projects WHERE name = 'dev2'"), 1);

    /* A positive result commits too and is handed back. */
    p = (struct tx_plan){.result = 7, .doc_id = "user-2", .audit_id = "audit_log-2"};
    assert_int_equal(f->s->ops->transact(f->s, put_and_audit, &p), 7);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs"), 2);
}

static void
transact_rolls_everything_back(void **state)
{
    struct store_fx *f = *state;
    struct tx_plan p = {.result = -1, .doc_id = "user-1", .audit_id = "audit_log-1"};
    assert_int_equal(f->s->ops->transact(f->s, put_and_audit, &p), -1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(p.op_rc[i], 0); /* each op succeeded inside */
    }
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs"), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM audit"), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM versions"), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM projects WHERE name = 'development'"),
                     1);

    /* The store is usable afterwards, and the audit chain starts at 1 again. */
    p = (struct tx_plan){.result = 0, .doc_id = "user-1", .audit_id = "audit_log-1"};
    assert_int_equal(f->s->ops->transact(f->s, put_and_audit, &p), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT max(seq) FROM audit"), 1);
    assert_int_equal(store_fx_scalar(f, "SELECT max(number) FROM versions"), 1);
}

struct nest {
    int inner_result;
    int inner_rc;
    int ledger_rc;
    int outer_result;
};

static int
put_one(struct tg_store *s, const char *id)
{
    struct tg_doc d = doc("user", id, NULL, "{}", 10);
    return s->ops->doc_put(s, &d);
}

static int
inner_fn(struct tg_store *s, void *arg)
{
    struct nest *n = arg;
    assert_int_equal(put_one(s, "user-B"), 0);
    return n->inner_result;
}

static int
outer_fn(struct tg_store *s, void *arg)
{
    struct nest *n = arg;
    assert_int_equal(put_one(s, "user-A"), 0);
    n->inner_rc = s->ops->transact(s, inner_fn, n);
    /* Ops that open their own transaction join this one as a savepoint. */
    struct tg_ledger_row row;
    memset(&row, 0, sizeof(row));
    snprintf(row.request_id, sizeof(row.request_id), "req_1");
    row.attempt = 1;
    snprintf(row.org_id, sizeof(row.org_id), "org-1");
    n->ledger_rc = s->ops->ledger_append(s, &row, 1);
    bool created = true;
    assert_int_equal(s->ops->bootstrap(s, &store_fx_org, NULL, 0, NULL, &created), 0);
    assert_false(created);
    assert_int_equal(put_one(s, "user-C"), 0);
    return n->outer_result;
}

static void
transactions_nest(void **state)
{
    struct store_fx *f = *state;
    /* An inner failure undoes only the inner part. */
    struct nest n = {.inner_result = TG_EINVAL, .outer_result = 0};
    assert_int_equal(f->s->ops->transact(f->s, outer_fn, &n), 0);
    assert_int_equal(n.inner_rc, TG_EINVAL);
    assert_int_equal(n.ledger_rc, 0);
    assert_int_equal(
        store_fx_scalar(f, "SELECT count(*) FROM docs WHERE id IN ('user-A', 'user-C')"), 2);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs WHERE id = 'user-B'"), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM ledger"), 1);

    /* An outer failure undoes the committed inner part and the nested ledger append too. */
    outside_exec(f, "DELETE FROM docs; DELETE FROM ledger;");
    n = (struct nest){.inner_result = 0, .outer_result = -3};
    assert_int_equal(f->s->ops->transact(f->s, outer_fn, &n), -3);
    assert_int_equal(n.inner_rc, 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs"), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM ledger"), 0);

    /* Both succeed: everything lands. */
    n = (struct nest){.inner_result = 0, .outer_result = 0};
    assert_int_equal(f->s->ops->transact(f->s, outer_fn, &n), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs"), 3);
}

static int
fails_midway(struct tg_store *s, void *arg)
{
    int *rc = arg;
    assert_int_equal(put_one(s, "user-X"), 0);
    /* A failed op (a name clash) leaves the transaction open; fn decides what happens. */
    struct tg_project_rec clash = {"proj_a", "org-1", "production", "development", 0, 0, NULL};
    *rc = s->ops->project_update(s, &clash);
    return *rc;
}

static void
a_failed_op_inside_rolls_back_what_came_before(void **state)
{
    struct store_fx *f = *state;
    int rc = 0;
    assert_int_equal(f->s->ops->transact(f->s, fails_midway, &rc), TG_EEXISTS);
    assert_int_equal(rc, TG_EEXISTS);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs"), 0);
}

/* ---- documents
 * ------------------------------------------------------------------------------------ */

struct doc_list {
    char id[8][32];
    char data[8][64];
    char project[8][32];
    int64_t created[8];
    int64_t updated[8];
    size_t n;
    int stop_after;
};

static int
collect_doc(const struct tg_doc *d, void *arg)
{
    struct doc_list *l = arg;
    assert_true(l->n < 8);
    snprintf(l->id[l->n], sizeof(l->id[0]), "%s", d->id);
    snprintf(l->data[l->n], sizeof(l->data[0]), "%s", d->data);
    snprintf(l->project[l->n], sizeof(l->project[0]), "%s", d->project_id ? d->project_id : "-");
    l->created[l->n] = d->created_ms;
    l->updated[l->n] = d->updated_ms;
    l->n++;
    return l->stop_after && (int)l->n == l->stop_after ? 9 : 0;
}

static void
documents_crud_and_order(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    struct tg_doc d3 = doc("member", "pm_b_u1", "proj_b", "{\"role\":\"owner\"}", 300);
    struct tg_doc d1 = doc("member", "pm_a_u1", "proj_a", "{\"role\":\"member\"}", 100);
    struct tg_doc d2 = doc("member", "pm_a_u2", "proj_a", "{\"role\":\"owner\"}", 200);
    struct tg_doc user = doc("user", "user-1", NULL, "{\"name\":\"A\"}", 50);
    struct tg_doc org_wide = doc("member", "m_org", NULL, "{}", 250);
    assert_int_equal(o->doc_put(f->s, &d3), 0);
    assert_int_equal(o->doc_put(f->s, &d1), 0);
    assert_int_equal(o->doc_put(f->s, &d2), 0);
    assert_int_equal(o->doc_put(f->s, &user), 0);
    assert_int_equal(o->doc_put(f->s, &org_wide), 0);

    /* Dangling scope: an unknown org or project is refused. */
    struct tg_doc bad = doc("member", "pm_x", "proj_404", "{}", 1);
    assert_int_equal(o->doc_put(f->s, &bad), TG_ENOTFOUND);
    bad = doc("user", "user-x", NULL, "{}", 1);
    bad.org_id = "org-404";
    assert_int_equal(o->doc_put(f->s, &bad), TG_ENOTFOUND);

    struct doc_list l = {0};
    assert_int_equal(o->doc_get(f->s, "member", "pm_a_u2", collect_doc, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.data[0], "{\"role\":\"owner\"}");
    assert_string_equal(l.project[0], "proj_a");
    assert_int_equal(l.created[0], 200);
    /* The kind is part of the key. */
    assert_int_equal(o->doc_get(f->s, "user", "pm_a_u2", collect_doc, &l), TG_ENOTFOUND);
    assert_int_equal(o->doc_get(f->s, "member", "nope", collect_doc, &l), TG_ENOTFOUND);

    /* Oldest first; NULL project means any, org-wide included; other kinds excluded. */
    memset(&l, 0, sizeof(l));
    assert_int_equal(o->doc_list(f->s, "member", "org-1", NULL, collect_doc, &l), 0);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.id[0], "pm_a_u1");
    assert_string_equal(l.id[1], "pm_a_u2");
    assert_string_equal(l.id[2], "m_org");
    assert_string_equal(l.id[3], "pm_b_u1");

    memset(&l, 0, sizeof(l));
    assert_int_equal(o->doc_list(f->s, "member", "org-1", "proj_a", collect_doc, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.id[0], "pm_a_u1");
    assert_string_equal(l.id[1], "pm_a_u2");

    memset(&l, 0, sizeof(l));
    assert_int_equal(o->doc_list(f->s, "member", "org-2", NULL, collect_doc, &l), 0);
    assert_int_equal(l.n, 0);

    /* A callback's non-zero return stops the list and is returned. */
    memset(&l, 0, sizeof(l));
    l.stop_after = 1;
    assert_int_equal(o->doc_list(f->s, "member", "org-1", NULL, collect_doc, &l), 9);
    assert_int_equal(l.n, 1);

    /* Put replaces by (kind, id). */
    struct tg_doc d1b = doc("member", "pm_a_u1", "proj_a", "{\"role\":\"owner\"}", 100);
    d1b.updated_ms = 999;
    assert_int_equal(o->doc_put(f->s, &d1b), 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(o->doc_get(f->s, "member", "pm_a_u1", collect_doc, &l), 0);
    assert_string_equal(l.data[0], "{\"role\":\"owner\"}");
    assert_int_equal(l.updated[0], 999);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs WHERE kind = 'member'"), 4);

    assert_int_equal(o->doc_delete(f->s, "member", "pm_a_u1"), 0);
    assert_int_equal(o->doc_delete(f->s, "member", "pm_a_u1"), TG_ENOTFOUND);
    assert_int_equal(o->doc_delete(f->s, "user", "pm_a_u2"), TG_ENOTFOUND);
    assert_int_equal(o->doc_get(f->s, "member", "pm_a_u1", collect_doc, &l), TG_ENOTFOUND);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs"), 4);
}

/* ---- projects and keys
 * ------------------------------------------------------------------------------ */

static void
project_settings_and_update(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    struct proj_list l = {0};
    assert_int_equal(o->projects_list(f->s, "org-1", collect_project, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.settings[0], "{}"); /* inserted with NULL */
    assert_string_equal(l.settings[1], "{\"models\":[\"gpt-4o\"]}");

    struct tg_project_rec up = {"proj_a", "org-1", "dev", "staging", 1001, 77, "{\"models\":[]}"};
    assert_int_equal(o->project_update(f->s, &up), 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(o->projects_list(f->s, "org-1", collect_project, &l), 0);
    assert_string_equal(l.name[0], "dev");
    assert_int_equal(l.archived[0], 77);
    assert_string_equal(l.settings[0], "{\"models\":[]}");
    assert_int_equal(
        store_fx_scalar(f, "SELECT count(*) FROM projects WHERE environment = 'staging'"), 1);

    /* The same values again is still a found project. */
    assert_int_equal(o->project_update(f->s, &up), 0);
    up.settings = NULL;
    assert_int_equal(o->project_update(f->s, &up), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM projects WHERE settings = '{}'"), 1);

    struct tg_project_rec clash = {"proj_a", "org-1", "production", "x", 0, 0, NULL};
    assert_int_equal(o->project_update(f->s, &clash), TG_EEXISTS);
    struct tg_project_rec missing = {"proj_404", "org-1", "other", "x", 0, 0, NULL};
    assert_int_equal(o->project_update(f->s, &missing), TG_ENOTFOUND);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM projects WHERE name = 'dev'"), 1);
}

static struct tg_key_rec
key_rec(const char *id, const char *project_id, const char *owner, unsigned char fill)
{
    struct tg_key_rec k = {
        .id = id,
        .org_id = "org-1",
        .project_id = project_id,
        .name = "k",
        .redacted = "tg-AbCd...wXyZ",
        .kind = project_id ? TG_KEY_PROJECT : TG_KEY_ADMIN,
        .role = project_id ? "member" : "owner",
        .owner_user_id = owner,
        .created_ms = fill,
    };
    memset(k.hash, fill, sizeof(k.hash));
    return k;
}

static void
key_roles_follow_the_user(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    struct tg_key_rec keys[] = {
        key_rec("key_1", NULL, "user-1", 1),
        key_rec("key_2", NULL, "user-1", 2),
        key_rec("key_3", NULL, "user-2", 3),
        key_rec("key_4", "proj_a", "user-1", 4),
    };
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(o->key_insert(f->s, &keys[i]), 0);
    }
    assert_int_equal(o->keys_set_role_by_user(f->s, "user-1", "reader"), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM api_keys WHERE role = 'reader' AND "
                                        "id IN ('key_1', 'key_2')"),
                     2);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM api_keys WHERE id = 'key_3' AND "
                                        "role = 'owner'"),
                     1);
    /* Project keys carry a project role, not the org role. */
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM api_keys WHERE id = 'key_4' AND "
                                        "role = 'member'"),
                     1);
    /* A user without keys is nothing to change, not an error. */
    assert_int_equal(o->keys_set_role_by_user(f->s, "user-9", "owner"), 0);
}

/* ---- audit log
 * ----------------------------------------------------------------------------------- */

struct verify {
    int64_t n;
    int64_t first_bad; /* seq of the first entry that does not verify, 0 = none */
    unsigned char prev[TG_SHA256_BYTES];
};

/* What `tollgate audit verify` does: recompute every hash and follow the links. */
static int
verify_entry(const struct tg_audit_rec *r, void *arg)
{
    struct verify *v = arg;
    v->n++;
    unsigned char h[TG_SHA256_BYTES];
    tg_audit_hash(r, h);
    bool ok = r->seq == v->n && memcmp(r->prev_hash, v->prev, TG_SHA256_BYTES) == 0 &&
              memcmp(h, r->hash, TG_SHA256_BYTES) == 0;
    if (!ok && v->first_bad == 0) {
        v->first_bad = r->seq;
    }
    memcpy(v->prev, r->hash, TG_SHA256_BYTES);
    return 0;
}

static void
append_five(struct tg_store *s)
{
    static const char *const types[] = {"project.created", "project.updated", "api_key.created",
                                        "user.added", "project.archived"};
    static const char *const actors[] = {"key_a", "key_b", "key_a", "key_b", "key_a"};
    static const char *const users[] = {"user-1", "user-2", "user-1", NULL, "user-1"};
    static const char *const projects[] = {"proj_a", "proj_a", "proj_b", NULL, "proj_b"};
    unsigned char prev[TG_SHA256_BYTES] = {0};
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof(id), "audit_log-%d", i + 1);
        struct tg_audit_rec r =
            entry(id, 1000 * (i + 1), types[i], actors[i], users[i], projects[i]);
        memset(r.prev_hash, 0xee, sizeof(r.prev_hash)); /* set by the store, not the caller */
        assert_int_equal(s->ops->audit_append(s, &r), 0);
        assert_int_equal(r.seq, i + 1);
        assert_memory_equal(r.prev_hash, prev, TG_SHA256_BYTES);
        unsigned char h[TG_SHA256_BYTES];
        tg_audit_hash(&r, h);
        assert_memory_equal(r.hash, h, TG_SHA256_BYTES);
        memcpy(prev, r.hash, TG_SHA256_BYTES);
    }
}

static void
audit_chain_verifies_and_shows_tampering(void **state)
{
    struct store_fx *f = *state;
    append_five(f->s);
    struct verify v = {0};
    assert_int_equal(f->s->ops->audit_all(f->s, "org-1", verify_entry, &v), 0);
    assert_int_equal(v.n, 5);
    assert_int_equal(v.first_bad, 0);

    /* Another org has its own chain, numbered from 1. */
    struct tg_audit_rec other = entry("audit_log-o1", 1, "user.added", "key_o", NULL, NULL);
    other.org_id = "org-2";
    assert_int_equal(f->s->ops->audit_append(f->s, &other), 0);
    assert_int_equal(other.seq, 1);
    unsigned char zero[TG_SHA256_BYTES] = {0};
    assert_memory_equal(other.prev_hash, zero, TG_SHA256_BYTES);

    /* The id is unique: a replayed append is refused, and the chain stays as it was. */
    struct tg_audit_rec dup = entry("audit_log-2", 1, "user.added", "key_o", NULL, NULL);
    assert_int_equal(f->s->ops->audit_append(f->s, &dup), TG_EEXISTS);

    /* Editing one entry's after breaks that entry. */
    outside_exec(f, "UPDATE audit SET after = '{\"name\":\"y\"}' WHERE org_id = 'org-1' AND "
                    "seq = 3");
    memset(&v, 0, sizeof(v));
    assert_int_equal(f->s->ops->audit_all(f->s, "org-1", verify_entry, &v), 0);
    assert_int_equal(v.first_bad, 3);

    /* Deleting an entry breaks the chain where it was. */
    outside_exec(f, "UPDATE audit SET after = '{\"name\":\"x\"}' WHERE org_id = 'org-1' AND "
                    "seq = 3");
    memset(&v, 0, sizeof(v));
    assert_int_equal(f->s->ops->audit_all(f->s, "org-1", verify_entry, &v), 0);
    assert_int_equal(v.first_bad, 0);
    outside_exec(f, "DELETE FROM audit WHERE org_id = 'org-1' AND seq = 2");
    memset(&v, 0, sizeof(v));
    assert_int_equal(f->s->ops->audit_all(f->s, "org-1", verify_entry, &v), 0);
    assert_int_equal(v.n, 4);
    assert_int_equal(v.first_bad, 3);
}

struct seqs {
    int64_t v[16];
    size_t n;
};

static int
collect_seq(const struct tg_audit_rec *r, void *arg)
{
    struct seqs *l = arg;
    assert_true(l->n < 16);
    l->v[l->n++] = r->seq;
    return 0;
}

/* The seqs the query yields, as "5,4,3" for compact assertions. */
static const char *
list_seqs(struct tg_store *s, const struct tg_audit_query *q, char *out, size_t cap)
{
    struct seqs l = {0};
    assert_int_equal(s->ops->audit_list(s, q, collect_seq, &l), 0);
    out[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < l.n; i++) {
        used += (size_t)snprintf(out + used, cap - used, "%s%lld", i ? "," : "", (long long)l.v[i]);
    }
    return out;
}

static void
audit_list_filters(void **state)
{
    struct store_fx *f = *state;
    struct tg_store *s = f->s;
    append_five(s);
    char b[64];

    struct tg_audit_query q = {.org_id = "org-1"};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "5,4,3,2,1");

    const char *types[] = {"project.created", "project.archived"};
    q = (struct tg_audit_query){.org_id = "org-1", .types = types, .n_types = 2};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "5,1");

    const char *key_b[] = {"key_b"};
    q = (struct tg_audit_query){.org_id = "org-1", .actor_ids = key_b, .n_actor_ids = 1};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "4,2");

    /* An actor is matched by the user behind the key too. */
    const char *user_2[] = {"user-2", "key_zz"};
    q = (struct tg_audit_query){.org_id = "org-1", .actor_ids = user_2, .n_actor_ids = 2};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "2");

    const char *proj_b[] = {"proj_b"};
    q = (struct tg_audit_query){.org_id = "org-1", .project_ids = proj_b, .n_project_ids = 1};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "5,3");

    q = (struct tg_audit_query){.org_id = "org-1", .since_ms = 2000, .until_ms = 4000};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "3,2");

    q = (struct tg_audit_query){.org_id = "org-1", .since_ms = 2000};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "5,4,3,2");

    /* Cursor paging: newest first, before_seq is the last seq of the previous page. */
    q = (struct tg_audit_query){.org_id = "org-1", .limit = 2};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "5,4");
    q.before_seq = 4;
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "3,2");
    q.before_seq = 2;
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "1");

    /* Filters combine with AND. */
    const char *t2[] = {"project.updated", "api_key.created"};
    const char *proj_a[] = {"proj_a"};
    q = (struct tg_audit_query){
        .org_id = "org-1", .types = t2, .n_types = 2, .project_ids = proj_a, .n_project_ids = 1};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "2");

    q = (struct tg_audit_query){.org_id = "org-2"};
    assert_string_equal(list_seqs(s, &q, b, sizeof(b)), "");

    /* Every field comes back as stored. */
    struct verify v = {0};
    assert_int_equal(s->ops->audit_all(s, "org-1", verify_entry, &v), 0);
    assert_int_equal(v.first_bad, 0);

    q = (struct tg_audit_query){.org_id = NULL};
    struct seqs l = {0};
    assert_int_equal(s->ops->audit_list(s, &q, collect_seq, &l), TG_EINVAL);
}

/* ---- config versions
 * --------------------------------------------------------------------------------- */

struct versions {
    int64_t number[8];
    char project[8][32];
    char reason[8][32];
    char settings[8][64];
    size_t n;
};

static int
collect_version(const struct tg_version_rec *r, void *arg)
{
    struct versions *l = arg;
    assert_true(l->n < 8);
    l->number[l->n] = r->number;
    snprintf(l->project[l->n], sizeof(l->project[0]), "%s", r->project_id);
    snprintf(l->reason[l->n], sizeof(l->reason[0]), "%s", r->reason);
    snprintf(l->settings[l->n], sizeof(l->settings[0]), "%s", r->settings);
    l->n++;
    return 0;
}

static void
versions_append_list_get(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    struct tg_version_rec v[] = {
        {0, "org-1", "proj_a", 10, "key_1", "project.updated", "{\"models\":[\"a\"]}"},
        {0, "org-1", "proj_b", 20, "key_1", "project.updated", "{\"models\":[\"b\"]}"},
        {0, "org-1", "proj_a", 30, "key_2", "rollback to 1", "{\"models\":[\"a\"]}"},
    };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o->version_append(f->s, &v[i]), 0);
        assert_int_equal(v[i].number, i + 1);
    }
    struct tg_version_rec other = {0, "org-2", "proj_z", 5, NULL, "x", "{}"};
    assert_int_equal(o->version_append(f->s, &other), 0);
    assert_int_equal(other.number, 1); /* numbered per org */

    struct versions l = {0};
    assert_int_equal(o->version_list(f->s, "org-1", NULL, collect_version, &l), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.number[0], 3);
    assert_int_equal(l.number[2], 1);

    memset(&l, 0, sizeof(l));
    assert_int_equal(o->version_list(f->s, "org-1", "proj_a", collect_version, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.number[0], 3);
    assert_string_equal(l.reason[0], "rollback to 1");
    assert_int_equal(l.number[1], 1);

    memset(&l, 0, sizeof(l));
    assert_int_equal(o->version_get(f->s, "org-1", 2, collect_version, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.project[0], "proj_b");
    assert_string_equal(l.settings[0], "{\"models\":[\"b\"]}");
    assert_int_equal(o->version_get(f->s, "org-1", 4, collect_version, &l), TG_ENOTFOUND);
    assert_int_equal(o->version_get(f->s, "org-2", 2, collect_version, &l), TG_ENOTFOUND);
    assert_int_equal(o->version_get(f->s, "org-1", 0, collect_version, &l), TG_ENOTFOUND);
}

/* ---- threads
 * ------------------------------------------------------------------------------------------ */

#define TX_ROUNDS 60
#define LEDGER_ROUNDS 60

struct tx_round {
    int i;
};

static int
round_fn(struct tg_store *s, void *arg)
{
    struct tx_round *r = arg;
    char id[32];
    snprintf(id, sizeof(id), "user-%d", r->i);
    struct tg_doc d = doc("user", id, NULL, "{}", r->i);
    if (s->ops->doc_put(s, &d) != 0) {
        return TG_ESTORE;
    }
    snprintf(id, sizeof(id), "audit_log-%d", r->i);
    struct tg_audit_rec a = entry(id, r->i, "user.added", "key_1", NULL, NULL);
    if (s->ops->audit_append(s, &a) != 0) {
        return TG_ESTORE;
    }
    /* Odd rounds roll back: had the other thread's ledger batch joined this transaction, it
     * would be lost with it. */
    return r->i % 2 ? -1 : 0;
}

static void *
tx_thread(void *arg)
{
    struct tg_store *s = arg;
    intptr_t bad = 0;
    for (int i = 0; i < TX_ROUNDS; i++) {
        struct tx_round r = {i};
        int rc = s->ops->transact(s, round_fn, &r);
        if (rc != (i % 2 ? -1 : 0)) {
            bad++;
        }
    }
    return (void *)bad;
}

static void *
ledger_thread(void *arg)
{
    struct tg_store *s = arg;
    intptr_t bad = 0;
    for (int i = 0; i < LEDGER_ROUNDS; i++) {
        struct tg_ledger_row rows[3];
        memset(rows, 0, sizeof(rows));
        for (int k = 0; k < 3; k++) {
            snprintf(rows[k].request_id, sizeof(rows[k].request_id), "req_%d_%d", i, k);
            rows[k].attempt = 1;
            rows[k].time_ms = i;
            snprintf(rows[k].org_id, sizeof(rows[k].org_id), "org-1");
        }
        if (s->ops->ledger_append(s, rows, 3) != 0) {
            bad++;
        }
    }
    return (void *)bad;
}

static void
transactions_and_ledger_from_two_threads(void **state)
{
    struct store_fx *f = *state;
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, tx_thread, f->s), 0);
    assert_int_equal(pthread_create(&b, NULL, ledger_thread, f->s), 0);
    void *bad_a = NULL, *bad_b = NULL;
    pthread_join(a, &bad_a);
    pthread_join(b, &bad_b);
    assert_int_equal((intptr_t)bad_a, 0);
    assert_int_equal((intptr_t)bad_b, 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM ledger"), LEDGER_ROUNDS * 3);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs"), TX_ROUNDS / 2);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM docs WHERE created_ms % 2 = 1"), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT max(seq) FROM audit"), TX_ROUNDS / 2);
    struct verify v = {0};
    assert_int_equal(f->s->ops->audit_all(f->s, "org-1", verify_entry, &v), 0);
    assert_int_equal(v.n, TX_ROUNDS / 2);
    assert_int_equal(v.first_bad, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(migrates_a_version_1_file, setup_empty, store_fx_teardown),
        cmocka_unit_test_setup_teardown(transact_commits_everything, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(transact_rolls_everything_back, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(transactions_nest, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(a_failed_op_inside_rolls_back_what_came_before, setup,
                                        store_fx_teardown),
        cmocka_unit_test_setup_teardown(documents_crud_and_order, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(project_settings_and_update, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(key_roles_follow_the_user, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(audit_chain_verifies_and_shows_tampering, setup,
                                        store_fx_teardown),
        cmocka_unit_test_setup_teardown(audit_list_filters, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(versions_append_list_get, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(transactions_and_ledger_from_two_threads, setup,
                                        store_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
