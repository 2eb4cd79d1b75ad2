/*
 * sqlite_test.c: the SQLite store (store/store.h): schema and migration, bootstrap, keys,
 * ledger idempotence, usage sums, and concurrent appends. Each test gets a fresh file in its
 * own temporary directory, and checks what landed on disk through a second connection.
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
#include <sys/stat.h>

#include "core/err.h"
#include "store/sqlite_int.h"
#include "store/store.h"

#include "../fixture/store_fixture.h"

static int
setup(void **state)
{
    *state = store_fx_new("sqlite-test");
    return *state != NULL ? 0 : -1;
}

static void
seed(struct tg_store *s)
{
    static const struct tg_project_rec projects[2] = {
        {"proj_a", "org-1", "development", "development", 1001, 0, NULL},
        {"proj_b", "org-1", "production", "production", 1002, 0, NULL},
    };
    assert_true(store_fx_bootstrap(s, projects, 2));
}

static struct tg_key_rec
key_rec(const char *id, const char *project_id, int64_t created_ms, unsigned char fill)
{
    struct tg_key_rec k = {
        .id = id,
        .org_id = "org-1",
        .project_id = project_id,
        .name = "k",
        .redacted = "tg-AbCd...wXyZ",
        .kind = project_id ? TG_KEY_PROJECT : TG_KEY_ADMIN,
        .role = project_id ? "member" : "owner",
        .created_ms = created_ms,
    };
    memset(k.hash, fill, sizeof(k.hash));
    return k;
}

/* ---- schema ------------------------------------------------------------------------------ */

static void
reopen_is_idempotent_and_keeps_data(void **state)
{
    struct store_fx *f = *state;
    assert_int_equal(store_fx_scalar(f, "PRAGMA user_version"), 6);
    seed(f->s);
    f->s->ops->close(f->s);
    f->s = NULL;

    char err[256] = "";
    for (int i = 0; i < 2; i++) {
        struct tg_store *s = NULL;
        assert_int_equal(tg_store_sqlite_open(f->path, &s, err, sizeof(err)), 0);
        bool created = true;
        assert_int_equal(s->ops->bootstrap(s, &store_fx_org, NULL, 0, NULL, &created), 0);
        assert_false(created);
        s->ops->close(s);
    }
    assert_int_equal(store_fx_scalar(f, "PRAGMA user_version"), 6);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM orgs"), 1);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM projects"), 2);

    /* WAL mode is a property of the file: an outside reader sees it. */
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void
ledger_columns_have_the_row_names(void **state)
{
    struct store_fx *f = *state;
    static const char *const want[] = {
        "request_id",
        "attempt",
        "time_ms",
        "org_id",
        "project_id",
        "key_id",
        "user_id",
        "endpoint",
        "model_requested",
        "provider",
        "deployment",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "cost_micros",
        "status",
        "latency_ms",
        "ttft_ms",
        "is_stream",
        "is_usage_estimated",
        "error",
        "saved_micros",
    };
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT name FROM pragma_table_info('ledger') ORDER BY cid",
                                        -1, &st, NULL),
                     SQLITE_OK);
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_true(n < sizeof(want) / sizeof(want[0]));
        assert_string_equal((const char *)sqlite3_column_text(st, 0), want[n]);
        n++;
    }
    assert_int_equal(n, sizeof(want) / sizeof(want[0]));
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_int_equal(store_fx_scalar(f,
                                     "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                     "tbl_name = 'ledger' AND sql LIKE '%(org_id, time_ms)%'"),
                     1);
}

static void
open_fails_cleanly_on_a_bad_path(void **state)
{
    char err[256] = "";
    struct tg_store *s = (struct tg_store *)&err; /* must be reset to NULL */
    assert_int_equal(tg_store_sqlite_open("/nonexistent-dir/x/t.db", &s, err, sizeof(err)),
                     TG_ESTORE);
    assert_null(s);
    assert_true(strlen(err) > 0);
}

/* ---- orgs, projects, keys ------------------------------------------------------------------ */

struct names {
    char v[8][48];
    size_t n;
    int stop_after; /* return 1 after this many, 0 = never */
};

static int
org_name(const struct tg_org_rec *r, void *arg)
{
    struct names *n = arg;
    snprintf(n->v[n->n++], sizeof(n->v[0]), "%s/%s/%lld", r->id, r->name, (long long)r->created_ms);
    return 0;
}

static int
project_name(const struct tg_project_rec *r, void *arg)
{
    struct names *n = arg;
    snprintf(n->v[n->n++], sizeof(n->v[0]), "%s/%s/%s", r->id, r->name, r->environment);
    return n->stop_after && (int)n->n == n->stop_after ? 1 : 0;
}

static void
bootstrap_happens_once(void **state)
{
    struct store_fx *f = *state;
    struct tg_project_rec projects[3] = {
        {"proj_1", "org-1", "development", "development", 1, 0, NULL},
        {"proj_2", "org-1", "staging", "staging", 2, 0, NULL},
        {"proj_3", "org-1", "production", "production", 3, 0, NULL},
    };
    struct tg_key_rec admin = key_rec("key_admin", NULL, 5, 0xAA);
    bool created = false;
    assert_int_equal(f->s->ops->bootstrap(f->s, &store_fx_org, projects, 3, &admin, &created), 0);
    assert_true(created);

    struct tg_org_rec other = {"org-2", "Other", 2000};
    created = true;
    assert_int_equal(f->s->ops->bootstrap(f->s, &other, NULL, 0, NULL, &created), 0);
    assert_false(created);

    struct names n = {0};
    assert_int_equal(f->s->ops->orgs_list(f->s, org_name, &n), 0);
    assert_int_equal(n.n, 1);
    assert_string_equal(n.v[0], "org-1/Default/1000");

    memset(&n, 0, sizeof(n));
    assert_int_equal(f->s->ops->projects_list(f->s, "org-1", project_name, &n), 0);
    assert_int_equal(n.n, 3);
    assert_string_equal(n.v[0], "proj_1/development/development");
    assert_string_equal(n.v[2], "proj_3/production/production");

    /* A callback's non-zero return stops the listing and is returned. */
    memset(&n, 0, sizeof(n));
    n.stop_after = 2;
    assert_int_equal(f->s->ops->projects_list(f->s, "org-1", project_name, &n), 1);
    assert_int_equal(n.n, 2);

    memset(&n, 0, sizeof(n));
    assert_int_equal(f->s->ops->projects_list(f->s, "org-9", project_name, &n), 0);
    assert_int_equal(n.n, 0);
    assert_int_equal(
        store_fx_scalar(f, "SELECT count(*) FROM api_keys WHERE kind = 1 AND role = 'owner'"), 1);
}

static void
bootstrap_is_all_or_nothing(void **state)
{
    struct store_fx *f = *state;
    /* The second project repeats the first's name: the whole bootstrap must roll back. */
    struct tg_project_rec projects[2] = {
        {"proj_1", "org-1", "development", "development", 1, 0, NULL},
        {"proj_2", "org-1", "development", "development", 2, 0, NULL},
    };
    bool created = true;
    assert_int_equal(f->s->ops->bootstrap(f->s, &store_fx_org, projects, 2, NULL, &created),
                     TG_EEXISTS);
    assert_false(created);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM orgs"), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM projects"), 0);
    seed(f->s); /* and the store is usable afterwards */
}

static void
project_insert_conflicts(void **state)
{
    struct store_fx *f = *state;
    seed(f->s);
    struct tg_project_rec p = {"proj_c", "org-1", "staging", "staging", 1003, 0, NULL};
    assert_int_equal(f->s->ops->project_insert(f->s, &p), 0);
    assert_int_equal(f->s->ops->project_insert(f->s, &p), TG_EEXISTS);
    struct tg_project_rec same_name = {"proj_d", "org-1", "staging", "x", 1004, 0, NULL};
    assert_int_equal(f->s->ops->project_insert(f->s, &same_name), TG_EEXISTS);
    struct tg_project_rec no_org = {"proj_e", "org-404", "x", "x", 1005, 0, NULL};
    assert_int_equal(f->s->ops->project_insert(f->s, &no_org), TG_ENOTFOUND);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM projects"), 3);
}

struct key_list {
    struct tg_key_rec r[8];
    char id[8][32];
    char project[8][32];
    size_t n;
};

static int
collect_key(const struct tg_key_rec *r, void *arg)
{
    struct key_list *l = arg;
    l->r[l->n] = *r;
    snprintf(l->id[l->n], sizeof(l->id[0]), "%s", r->id);
    snprintf(l->project[l->n], sizeof(l->project[0]), "%s", r->project_id ? r->project_id : "-");
    l->n++;
    return 0;
}

static void
keys_insert_list_revoke(void **state)
{
    struct store_fx *f = *state;
    seed(f->s);
    /* Inserted out of creation order: the list is oldest first. */
    struct tg_key_rec b = key_rec("key_b", "proj_b", 300, 0x02);
    struct tg_key_rec a = key_rec("key_a", "proj_a", 200, 0x01);
    struct tg_key_rec adm = key_rec("key_adm", NULL, 100, 0x03);
    b.expires_ms = 999;
    b.owner_user_id = "user_1";
    assert_int_equal(f->s->ops->key_insert(f->s, &b), 0);
    assert_int_equal(f->s->ops->key_insert(f->s, &a), 0);
    assert_int_equal(f->s->ops->key_insert(f->s, &adm), 0);
    assert_int_equal(f->s->ops->key_insert(f->s, &a), TG_EEXISTS);
    struct tg_key_rec same_hash = key_rec("key_z", "proj_a", 400, 0x01);
    assert_int_equal(f->s->ops->key_insert(f->s, &same_hash), TG_EEXISTS);
    struct tg_key_rec bad_project = key_rec("key_y", "proj_404", 400, 0x09);
    assert_int_equal(f->s->ops->key_insert(f->s, &bad_project), TG_ENOTFOUND);

    struct key_list l = {0};
    assert_int_equal(f->s->ops->keys_list(f->s, "org-1", collect_key, &l), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.id[0], "key_adm");
    assert_string_equal(l.id[1], "key_a");
    assert_string_equal(l.id[2], "key_b");
    assert_string_equal(l.project[0], "-");
    assert_string_equal(l.project[2], "proj_b");
    assert_int_equal(l.r[0].kind, TG_KEY_ADMIN);
    assert_int_equal(l.r[2].kind, TG_KEY_PROJECT);
    assert_int_equal(l.r[2].expires_ms, 999);
    assert_int_equal(l.r[2].created_ms, 300);
    assert_int_equal(l.r[2].revoked_ms, 0);
    assert_memory_equal(l.r[2].hash, b.hash, TG_SHA256_BYTES);

    assert_int_equal(f->s->ops->key_revoke(f->s, "key_b", 5000), 0);
    assert_int_equal(f->s->ops->key_revoke(f->s, "key_b", 6000), TG_ENOTFOUND);
    assert_int_equal(f->s->ops->key_revoke(f->s, "key_nope", 6000), TG_ENOTFOUND);
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->keys_list(f->s, "org-1", collect_key, &l), 0);
    assert_int_equal(l.n, 3); /* revoked keys are listed too */
    assert_int_equal(l.r[2].revoked_ms, 5000);
    assert_int_equal(l.r[1].revoked_ms, 0);

    /* Only the hash is on disk, as a 32-byte blob. */
    assert_int_equal(
        store_fx_scalar(f, "SELECT count(*) FROM api_keys WHERE typeof(hash) = 'blob' AND "
                           "length(hash) = 32"),
        3);
}

/* ---- ledger ---------------------------------------------------------------------------------- */

static struct tg_ledger_row
row(const char *request_id, int attempt, int64_t time_ms, const char *project, const char *key,
    const char *endpoint, const char *model, int64_t prompt, int64_t completion)
{
    struct tg_ledger_row r;
    memset(&r, 0, sizeof(r));
    snprintf(r.request_id, sizeof(r.request_id), "%s", request_id);
    r.attempt = attempt;
    r.time_ms = time_ms;
    snprintf(r.org_id, sizeof(r.org_id), "org-1");
    snprintf(r.project_id, sizeof(r.project_id), "%s", project);
    snprintf(r.key_id, sizeof(r.key_id), "%s", key);
    snprintf(r.endpoint, sizeof(r.endpoint), "%s", endpoint);
    snprintf(r.model_requested, sizeof(r.model_requested), "%s", model);
    snprintf(r.provider, sizeof(r.provider), "openai");
    snprintf(r.deployment, sizeof(r.deployment), "%s-2024", model);
    r.prompt_tokens = prompt;
    r.cached_tokens = prompt / 2;
    r.completion_tokens = completion;
    r.reasoning_tokens = completion / 3;
    r.cost_micros = prompt * 3 + completion * 7;
    r.status = 200;
    r.latency_ms = 120;
    r.ttft_ms = -1;
    return r;
}

static void
ledger_append_is_idempotent(void **state)
{
    struct store_fx *f = *state;
    struct tg_ledger_row rows[4] = {
        row("req_1", 1, 1000, "proj_a", "key_a", "chat.completions", "gpt-4o", 10, 20),
        row("req_1", 2, 1000, "proj_a", "key_a", "chat.completions", "gpt-4o", 11, 21),
        row("req_2", 1, 1001, "proj_a", "key_a", "responses", "gpt-4o", 12, 22),
        row("req_3", 1, 1002, "proj_b", "key_b", "embeddings", "emb", 13, 0),
    };
    rows[2].is_stream = true;
    rows[2].is_usage_estimated = true;
    rows[2].ttft_ms = 45;
    rows[2].saved_micros = 77;
    rows[2].status = 499;
    snprintf(rows[2].user_id, sizeof(rows[2].user_id), "user_7");
    snprintf(rows[2].error, sizeof(rows[2].error), "client closed");
    assert_int_equal(f->s->ops->ledger_append(f->s, rows, 3), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM ledger"), 3);
    /* Replaying the batch with one new row adds only the new row. */
    assert_int_equal(f->s->ops->ledger_append(f->s, rows, 4), 0);
    assert_int_equal(f->s->ops->ledger_append(f->s, rows, 4), 0);
    assert_int_equal(f->s->ops->ledger_append(f->s, rows, 0), 0);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM ledger"), 4);
    assert_int_equal(store_fx_scalar(f, "SELECT sum(prompt_tokens) FROM ledger"), 46);

    /* Every field lands in its column. */
    assert_int_equal(
        store_fx_scalar(f, "SELECT count(*) FROM ledger WHERE request_id = 'req_2' AND "
                           "attempt = 1 AND time_ms = 1001 AND org_id = 'org-1' AND "
                           "project_id = 'proj_a' AND key_id = 'key_a' AND user_id = "
                           "'user_7' AND endpoint = 'responses' AND model_requested = "
                           "'gpt-4o' AND provider = 'openai' AND deployment = "
                           "'gpt-4o-2024' AND prompt_tokens = 12 AND cached_tokens = 6 AND "
                           "completion_tokens = 22 AND reasoning_tokens = 7 AND cost_micros "
                           "= 190 AND status = 499 AND latency_ms = 120 AND ttft_ms = 45 AND "
                           "is_stream = 1 AND is_usage_estimated = 1 AND error = 'client "
                           "closed' AND saved_micros = 77"),
        1);
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM ledger WHERE is_stream = 0 AND "
                                        "is_usage_estimated = 0 AND ttft_ms = -1 AND error = ''"),
                     3);
}

/* ---- usage ------------------------------------------------------------------------------------
 */

struct usage_list {
    struct tg_usage_result r[32];
    char project[32][16];
    char key[32][16];
    char model[32][16];
    size_t n;
};

static int
collect_usage(const struct tg_usage_result *r, void *arg)
{
    struct usage_list *l = arg;
    assert_true(l->n < 32);
    l->r[l->n] = *r;
    snprintf(l->project[l->n], 16, "%s", r->project_id ? r->project_id : "-");
    snprintf(l->key[l->n], 16, "%s", r->key_id ? r->key_id : "-");
    snprintf(l->model[l->n], 16, "%s", r->model ? r->model : "-");
    l->n++;
    return 0;
}

#define H 3600000LL

/* Rows spread over three hours, two projects, two keys, two models, three endpoints. */
static void
seed_usage(struct tg_store *s)
{
    struct tg_ledger_row rows[] = {
        row("r1", 1, 0 * H + 10, "proj_a", "key_a", "chat.completions", "m1", 100, 10),
        row("r2", 1, 0 * H + 20, "proj_a", "key_a", "completions", "m2", 200, 20),
        row("r3", 1, 0 * H + 30, "proj_b", "key_b", "chat.completions", "m1", 300, 30),
        row("r4", 1, 1 * H + 0, "proj_a", "key_a", "responses", "m1", 400, 40),
        row("r5", 1, 1 * H + 59, "proj_b", "key_b", "embeddings", "e1", 500, 0),
        row("r6", 1, 2 * H - 1, "proj_b", "key_b", "chat.completions", "m2", 600, 60),
        row("r7", 1, 2 * H + 5, "proj_a", "key_a", "chat.completions", "m1", 700, 70),
        row("r8", 1, 3 * H, "proj_a", "key_a", "chat.completions", "m1", 800, 80), /* excluded */
    };
    assert_int_equal(s->ops->ledger_append(s, rows, sizeof(rows) / sizeof(rows[0])), 0);
    /* Another org's row never shows. */
    struct tg_ledger_row other =
        row("r9", 1, 10, "proj_x", "key_x", "chat.completions", "m1", 9, 9);
    snprintf(other.org_id, sizeof(other.org_id), "org-2");
    assert_int_equal(s->ops->ledger_append(s, &other, 1), 0);
}

static void
usage_buckets_sum_exactly(void **state)
{
    struct store_fx *f = *state;
    seed_usage(f->s);
    struct tg_usage_query q = {.org_id = "org-1", .start_ms = 0, .end_ms = 3 * H, .bucket_ms = H};
    struct usage_list l = {0};
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.r[0].bucket_start_ms, 0);
    assert_int_equal(l.r[0].requests, 3);
    assert_int_equal(l.r[0].prompt_tokens, 600);
    assert_int_equal(l.r[0].cached_tokens, 300);
    assert_int_equal(l.r[0].completion_tokens, 60);
    assert_int_equal(l.r[0].reasoning_tokens, 3 + 6 + 10);
    assert_int_equal(l.r[0].cost_micros, 600 * 3 + 60 * 7);
    assert_string_equal(l.project[0], "-");
    assert_string_equal(l.key[0], "-");
    assert_string_equal(l.model[0], "-");
    assert_int_equal(l.r[1].bucket_start_ms, H);
    assert_int_equal(l.r[1].requests, 3);
    assert_int_equal(l.r[1].prompt_tokens, 1500);
    assert_int_equal(l.r[2].bucket_start_ms, 2 * H);
    assert_int_equal(l.r[2].requests, 1);
    assert_int_equal(l.r[2].prompt_tokens, 700);

    /* One day bucket: everything in range, in one row. start is inclusive, end exclusive. */
    q.bucket_ms = 24 * H;
    q.start_ms = 20;
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.r[0].bucket_start_ms, 0);
    assert_int_equal(l.r[0].requests, 6);
    assert_int_equal(l.r[0].prompt_tokens, 2700);

    /* Minute buckets start on whole minutes. */
    q.bucket_ms = 60000;
    q.start_ms = H;
    q.end_ms = 2 * H;
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.r[0].bucket_start_ms, H);
    assert_int_equal(l.r[0].requests, 2);
    assert_int_equal(l.r[1].bucket_start_ms, 2 * H - 60000);

    q.bucket_ms = 0;
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), TG_EINVAL);
}

static void
usage_groups_and_filters(void **state)
{
    struct store_fx *f = *state;
    seed_usage(f->s);
    struct tg_usage_query q = {.org_id = "org-1",
                               .start_ms = 0,
                               .end_ms = 3 * H,
                               .bucket_ms = 24 * H,
                               .group_by_project = true,
                               .group_by_model = true};
    struct usage_list l = {0};
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), 0);
    /* Ordered by bucket, then project, then model. */
    assert_int_equal(l.n, 5);
    const char *want[5][2] = {
        {"proj_a", "m1"}, {"proj_a", "m2"}, {"proj_b", "e1"}, {"proj_b", "m1"}, {"proj_b", "m2"}};
    const int64_t want_prompt[5] = {100 + 400 + 700, 200, 500, 300, 600};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(l.project[i], want[i][0]);
        assert_string_equal(l.model[i], want[i][1]);
        assert_string_equal(l.key[i], "-"); /* not grouped by key */
        assert_int_equal(l.r[i].prompt_tokens, want_prompt[i]);
    }
    assert_int_equal(l.r[0].requests, 3);

    /* Filters combine: key_b's m1 and m2 chat rows only. */
    struct tg_usage_query g = {.org_id = "org-1",
                               .start_ms = 0,
                               .end_ms = 3 * H,
                               .bucket_ms = 24 * H,
                               .key_id = "key_b",
                               .endpoint = "chat.completions",
                               .group_by_key = true};
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &g, collect_usage, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.key[0], "key_b");
    assert_string_equal(l.project[0], "-");
    assert_int_equal(l.r[0].requests, 2);
    assert_int_equal(l.r[0].prompt_tokens, 900);

    g.key_id = NULL;
    g.endpoint = NULL;
    g.project_id = "proj_a";
    g.model = "m1";
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &g, collect_usage, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.r[0].requests, 3);
    assert_int_equal(l.r[0].completion_tokens, 120);

    g.project_id = "proj_404";
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &g, collect_usage, &l), 0);
    assert_int_equal(l.n, 0);

    g.project_id = NULL;
    g.model = NULL;
    g.org_id = "org-2";
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &g, collect_usage, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.r[0].prompt_tokens, 9);
}

static void
usage_filters_several_endpoints(void **state)
{
    struct store_fx *f = *state;
    seed_usage(f->s);
    static const char *const completions[] = {"chat.completions", "completions", "responses"};
    struct tg_usage_query q = {.org_id = "org-1",
                               .start_ms = 0,
                               .end_ms = 3 * H,
                               .bucket_ms = 24 * H,
                               .endpoints = completions,
                               .n_endpoints = 3};
    struct usage_list l = {0};
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.r[0].requests, 7 - 1); /* all but the embeddings row */
    assert_int_equal(l.r[0].prompt_tokens, 2800 - 500);

    q.n_endpoints = 2; /* chat.completions and completions */
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), 0);
    assert_int_equal(l.r[0].requests, 5);
    assert_int_equal(l.r[0].prompt_tokens, 100 + 200 + 300 + 600 + 700);

    /* Both the single endpoint and the list: a row must match both. */
    q.endpoint = "completions";
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), 0);
    assert_int_equal(l.r[0].requests, 1);
    assert_int_equal(l.r[0].prompt_tokens, 200);

    q.endpoint = "embeddings";
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), 0);
    assert_int_equal(l.n, 0);

    /* NULL list with a count means any. */
    q.endpoint = NULL;
    q.endpoints = NULL;
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->usage_query(f->s, &q, collect_usage, &l), 0);
    assert_int_equal(l.r[0].requests, 7);
}

/* ---- concurrency -------------------------------------------------------------------------------
 */

struct appender {
    struct tg_store *s;
    int index;
    int rc;
};

static void *
append_many(void *arg)
{
    struct appender *a = arg;
    char id[32];
    for (int b = 0; b < 25 && a->rc == 0; b++) {
        struct tg_ledger_row rows[10];
        for (int i = 0; i < 10; i++) {
            snprintf(id, sizeof(id), "t%d-%d", a->index, b * 10 + i);
            rows[i] = row(id, 1, 1000 + i, "proj_a", "key_a", "chat.completions", "m1", 1, 2);
        }
        a->rc = a->s->ops->ledger_append(a->s, rows, 10);
        /* Interleave reads with the writes, as the admin API does. */
        struct usage_list l = {0};
        struct tg_usage_query q = {.org_id = "org-1", .start_ms = 0, .end_ms = H, .bucket_ms = H};
        if (a->rc == 0) {
            a->rc = a->s->ops->usage_query(a->s, &q, collect_usage, &l);
        }
    }
    return NULL;
}

static void
concurrent_appends_from_four_threads(void **state)
{
    struct store_fx *f = *state;
    pthread_t t[4];
    struct appender a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct appender){f->s, i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, append_many, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].rc, 0);
    }
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM ledger"), 1000);
    assert_int_equal(store_fx_scalar(f, "SELECT count(DISTINCT request_id) FROM ledger"), 1000);
    assert_int_equal(store_fx_scalar(f, "SELECT sum(completion_tokens) FROM ledger"), 2000);
}

/* Row i of the grouped-insert test: every column different, and derivable from time_ms. */
static struct tg_ledger_row
distinct_row(int i)
{
    struct tg_ledger_row r;
    memset(&r, 0, sizeof(r));
    snprintf(r.request_id, sizeof(r.request_id), "g-%02d", i);
    r.attempt = 1 + i % 3;
    r.time_ms = 5000 + i;
    snprintf(r.org_id, sizeof(r.org_id), "org-1");
    snprintf(r.project_id, sizeof(r.project_id), "p%d", i);
    snprintf(r.key_id, sizeof(r.key_id), "k%d", i);
    snprintf(r.user_id, sizeof(r.user_id), "u%d", i);
    snprintf(r.endpoint, sizeof(r.endpoint), "e%d", i);
    snprintf(r.model_requested, sizeof(r.model_requested), "m%d", i);
    snprintf(r.provider, sizeof(r.provider), "v%d", i);
    snprintf(r.deployment, sizeof(r.deployment), "d%d", i);
    r.prompt_tokens = 100 + i;
    r.cached_tokens = i;
    r.completion_tokens = 200 + i;
    r.reasoning_tokens = 300 + i;
    r.cost_micros = 400 + i;
    r.status = 200 + i;
    r.latency_ms = 500 + i;
    r.ttft_ms = 600 + i;
    r.is_stream = i % 2 == 1;
    r.is_usage_estimated = (i / 2) % 2 == 1;
    snprintf(r.error, sizeof(r.error), "x%d", i);
    r.saved_micros = 700 + i;
    return r;
}

/* Appends go eight rows to a statement and the rest one by one: every column of every row
 * lands where it belongs, and a repeated append stays idempotent in both paths. */
static void
ledger_groups_keep_every_row_whole(void **state)
{
    struct store_fx *f = *state;
    struct tg_ledger_row rows[24];
    for (int i = 0; i < 24; i++) {
        rows[i] = distinct_row(i);
    }
    assert_int_equal(f->s->ops->ledger_append(f->s, rows, 21), 0); /* two groups, five single */
    static const char *const whole =
        "SELECT count(*) FROM ledger WHERE"
        " request_id = printf('g-%02d', time_ms - 5000) AND attempt = 1 + (time_ms - 5000) % 3"
        " AND org_id = 'org-1' AND project_id = 'p' || (time_ms - 5000)"
        " AND key_id = 'k' || (time_ms - 5000) AND user_id = 'u' || (time_ms - 5000)"
        " AND endpoint = 'e' || (time_ms - 5000) AND model_requested = 'm' || (time_ms - 5000)"
        " AND provider = 'v' || (time_ms - 5000) AND deployment = 'd' || (time_ms - 5000)"
        " AND prompt_tokens = time_ms - 4900 AND cached_tokens = time_ms - 5000"
        " AND completion_tokens = time_ms - 4800 AND reasoning_tokens = time_ms - 4700"
        " AND cost_micros = time_ms - 4600 AND status = time_ms - 4800"
        " AND latency_ms = time_ms - 4500 AND ttft_ms = time_ms - 4400"
        " AND is_stream = (time_ms - 5000) % 2 AND is_usage_estimated = ((time_ms - 5000) / 2) % 2"
        " AND error = 'x' || (time_ms - 5000) AND saved_micros = time_ms - 4300";
    assert_int_equal(store_fx_scalar(f, whole), 21);
    assert_int_equal(f->s->ops->ledger_append(f->s, rows, 24), 0); /* 21 again, 3 new */
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM ledger"), 24);
    assert_int_equal(store_fx_scalar(f, whole), 24);
}

/* ---- checkpoints ------------------------------------------------------------------------- */

static long long
file_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Commits only append to the WAL; the pages reach the database file through the checkpoint
 * thread (sqlite_ckpt.c), which starts once enough of them wait, and nothing is lost. */
static void
checkpoints_run_on_their_own_thread(void **state)
{
    struct store_fx *f = *state;
    long long before = file_bytes(f->path);
    assert_true(before > 0);
    char id[32];
    struct tg_ledger_row rows[64];
    for (int b = 0; b < 250; b++) {
        for (int i = 0; i < 64; i++) {
            snprintf(id, sizeof(id), "ck-%d-%d", b, i);
            rows[i] = row(id, 1, 1000 + b, "proj_a", "key_a", "chat.completions", "m1", 5, 7);
        }
        assert_int_equal(f->s->ops->ledger_append(f->s, rows, 64), 0);
    }
    assert_true(sq_ckpt_wait(sq_of(f->s), 1) >= 1);
    assert_true(file_bytes(f->path) > before + 1024 * 1024); /* copied into the file */
    assert_int_equal(store_fx_scalar(f, "SELECT count(*) FROM ledger"), 250 * 64);
    assert_int_equal(store_fx_scalar(f, "SELECT sum(completion_tokens) FROM ledger"), 250 * 64 * 7);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(reopen_is_idempotent_and_keeps_data, setup,
                                        store_fx_teardown),
        cmocka_unit_test_setup_teardown(ledger_columns_have_the_row_names, setup,
                                        store_fx_teardown),
        cmocka_unit_test(open_fails_cleanly_on_a_bad_path),
        cmocka_unit_test_setup_teardown(bootstrap_happens_once, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(bootstrap_is_all_or_nothing, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(project_insert_conflicts, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(keys_insert_list_revoke, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(ledger_append_is_idempotent, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(usage_buckets_sum_exactly, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(usage_groups_and_filters, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(usage_filters_several_endpoints, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(ledger_groups_keep_every_row_whole, setup,
                                        store_fx_teardown),
        cmocka_unit_test_setup_teardown(checkpoints_run_on_their_own_thread, setup,
                                        store_fx_teardown),
        cmocka_unit_test_setup_teardown(concurrent_appends_from_four_threads, setup,
                                        store_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
