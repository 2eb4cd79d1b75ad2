/*
 * cache_db_test.c: the response cache's database backend: entries round-trip through the
 * store's cache_entries table with every field and the exact body bytes, replace on put,
 * expire into misses that are deleted, survive reopening the store, are removed by project,
 * model, age and all (an empty filter removes none), and are counted. Also the "db" backend
 * setting and the process-wide cache of each backend.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <unistd.h>

#include "cache/cache.h"
#include "core/clock.h"
#include "core/err.h"
#include "store/store.h"

#include "../fixture/store_fixture.h"

struct fx {
    struct store_fx db;
    struct tg_cache *c;
};

static void
open_store(struct fx *f)
{
    assert_int_equal(store_fx_open(&f->db), 0);
    f->c = tg_cache_db_new(f->db.s);
}

static void
close_store(struct fx *f)
{
    tg_cache_free(f->c);
    f->c = NULL;
    f->db.s->ops->close(f->db.s);
    f->db.s = NULL;
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (store_fx_mkdir(&f->db, "cachedb-test") < 0) {
        free(f);
        return -1;
    }
    open_store(f);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    if (f->db.s != NULL) {
        close_store(f);
    }
    store_fx_deinit(&f->db);
    free(f);
    return 0;
}

static void
key_n(int n, unsigned char k[TG_CACHE_KEY_BYTES])
{
    memset(k, 0, TG_CACHE_KEY_BYTES);
    k[0] = (unsigned char)n;
    k[31] = 0xAB;
}

static struct tg_cache_entry
entry(const char *project, const char *model, const char *body, int64_t created_ms)
{
    struct tg_cache_entry e;
    memset(&e, 0, sizeof(e));
    e.status = 200;
    snprintf(e.content_type, sizeof(e.content_type), "application/json");
    snprintf(e.project_id, sizeof(e.project_id), "%s", project);
    snprintf(e.model, sizeof(e.model), "%s", model);
    e.prompt_tokens = 11;
    e.cached_tokens = 3;
    e.completion_tokens = 7;
    e.reasoning_tokens = 2;
    e.cost_micros = 1234;
    e.created_ms = created_ms;
    e.body = (char *)body;
    e.body_len = strlen(body);
    return e;
}

static void
round_trip_and_replace(void **state)
{
    struct fx *f = *state;
    unsigned char k[32];
    key_n(1, k);
    struct tg_cache_entry got;
    assert_int_equal(tg_cache_get(f->c, k, &got), TG_ENOTFOUND);

    /* A stream body with an embedded NUL: the exact bytes come back. */
    static const char sse[] = "data: {\"a\":1}\n\n\0data: [DONE]\n\n";
    struct tg_cache_entry e = entry("proj_a", "gpt-x", "", 1000);
    e.is_stream = true;
    snprintf(e.content_type, sizeof(e.content_type), "text/event-stream");
    e.body = (char *)sse;
    e.body_len = sizeof(sse) - 1;
    assert_int_equal(tg_cache_put(f->c, k, &e, 60000), 0);
    assert_int_equal(tg_cache_get(f->c, k, &got), 0);
    assert_int_equal(got.status, 200);
    assert_true(got.is_stream);
    assert_string_equal(got.content_type, "text/event-stream");
    assert_string_equal(got.project_id, "proj_a");
    assert_string_equal(got.model, "gpt-x");
    assert_int_equal(got.prompt_tokens, 11);
    assert_int_equal(got.cached_tokens, 3);
    assert_int_equal(got.completion_tokens, 7);
    assert_int_equal(got.reasoning_tokens, 2);
    assert_int_equal(got.cost_micros, 1234);
    assert_int_equal(got.created_ms, 1000);
    assert_true(got.expires_ms > tg_clock_unix_ms());
    assert_int_equal(got.body_len, sizeof(sse) - 1);
    assert_memory_equal(got.body, sse, sizeof(sse) - 1);
    assert_int_equal(got.body[got.body_len], '\0');
    tg_cache_entry_deinit(&got);

    /* Another key is still a miss; a put under the same key replaces. */
    unsigned char k2[32];
    key_n(2, k2);
    assert_int_equal(tg_cache_get(f->c, k2, &got), TG_ENOTFOUND);
    struct tg_cache_entry e2 = entry("proj_a", "gpt-x", "{\"v\":2}", 2000);
    assert_int_equal(tg_cache_put(f->c, k, &e2, 0), 0);
    assert_int_equal(tg_cache_get(f->c, k, &got), 0);
    assert_false(got.is_stream);
    assert_int_equal(got.expires_ms, 0);
    assert_string_equal(got.body, "{\"v\":2}");
    tg_cache_entry_deinit(&got);

    struct tg_cache_stats st;
    tg_cache_stats(f->c, &st);
    assert_int_equal(st.n_entries, 1);
    assert_int_equal(st.bytes, strlen("{\"v\":2}"));
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.puts, 2);

    /* An empty body is stored and served as empty, not refused. */
    struct tg_cache_entry e3 = entry("proj_a", "gpt-x", "", 2000);
    assert_int_equal(tg_cache_put(f->c, k2, &e3, 0), 0);
    assert_int_equal(tg_cache_get(f->c, k2, &got), 0);
    assert_int_equal(got.body_len, 0);
    tg_cache_entry_deinit(&got);
}

static void
expired_is_a_miss_and_removed(void **state)
{
    struct fx *f = *state;
    unsigned char k[32];
    key_n(3, k);
    struct tg_cache_entry e = entry("proj_a", "m", "{}", 1);
    /* A 1 ms TTL: wait on the clock (bounded) until it has passed. */
    assert_int_equal(tg_cache_put(f->c, k, &e, 1), 0);
    int64_t until = tg_clock_unix_ms() + 2;
    for (int i = 0; i < 1000000 && tg_clock_unix_ms() < until; i++) {
    }
    assert_true(tg_clock_unix_ms() >= until);
    struct tg_cache_entry got;
    assert_int_equal(tg_cache_get(f->c, k, &got), TG_ENOTFOUND);
    struct tg_cache_stats st;
    tg_cache_stats(f->c, &st);
    assert_int_equal(st.n_entries, 0);
}

static void
survives_reopen(void **state)
{
    struct fx *f = *state;
    unsigned char k[32];
    key_n(4, k);
    struct tg_cache_entry e = entry("proj_a", "m", "{\"kept\":true}", 5);
    assert_int_equal(tg_cache_put(f->c, k, &e, 3600000), 0);
    close_store(f);
    open_store(f);
    struct tg_cache_entry got;
    assert_int_equal(tg_cache_get(f->c, k, &got), 0);
    assert_string_equal(got.body, "{\"kept\":true}");
    tg_cache_entry_deinit(&got);
}

static size_t
count(struct fx *f)
{
    struct tg_cache_stats st;
    tg_cache_stats(f->c, &st);
    return st.n_entries;
}

static void
invalidation(void **state)
{
    struct fx *f = *state;
    int64_t now = tg_clock_unix_ms();
    struct {
        const char *project, *model;
        int64_t created;
    } rows[] = {
        {"proj_a", "m1", now},          {"proj_a", "m2", now},          {"proj_b", "m1", now},
        {"proj_b", "m2", now - 600000}, {"proj_c", "m3", now - 600000},
    };
    for (int i = 0; i < 5; i++) {
        unsigned char k[32];
        key_n(10 + i, k);
        struct tg_cache_entry e = entry(rows[i].project, rows[i].model, "{}", rows[i].created);
        assert_int_equal(tg_cache_put(f->c, k, &e, 0), 0);
    }
    size_t n = 99;
    struct tg_cache_filter none = {0};
    assert_int_equal(tg_cache_invalidate(f->c, &none, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(count(f), 5);

    struct tg_cache_filter pm = {.project_id = "proj_a", .model = "m2"};
    assert_int_equal(tg_cache_invalidate(f->c, &pm, &n), 0);
    assert_int_equal(n, 1);
    struct tg_cache_filter old = {.older_than_ms = 60000};
    assert_int_equal(tg_cache_invalidate(f->c, &old, &n), 0);
    assert_int_equal(n, 2);
    struct tg_cache_filter model = {.model = "m1"};
    assert_int_equal(tg_cache_invalidate(f->c, &model, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(count(f), 0);

    unsigned char k[32];
    key_n(20, k);
    struct tg_cache_entry e = entry("proj_z", "m", "{}", now);
    assert_int_equal(tg_cache_put(f->c, k, &e, 0), 0);
    struct tg_cache_filter project = {.project_id = "proj_y"};
    assert_int_equal(tg_cache_invalidate(f->c, &project, &n), 0);
    assert_int_equal(n, 0);
    struct tg_cache_filter all = {.all = true};
    assert_int_equal(tg_cache_invalidate(f->c, &all, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(count(f), 0);
}

static void
db_setting_and_shared_caches(void **state)
{
    struct fx *f = *state;
    struct tg_cache_settings s;
    char err[128];
    json_t *v = json_loads("{\"enabled\":true,\"backend\":\"db\"}", 0, NULL);
    assert_int_equal(tg_cache_settings_parse(v, &s, err, sizeof(err)), 0);
    assert_int_equal(s.backend, TG_CACHE_DB);
    json_decref(v);

    assert_ptr_equal(tg_cache_shared(TG_CACHE_MEMORY, NULL, NULL), tg_cache_shared_memory());
    struct tg_cache *db = tg_cache_shared(TG_CACHE_DB, NULL, f->db.s);
    assert_non_null(db);
    assert_string_equal(db->ops->name, "db");
    assert_ptr_equal(tg_cache_shared(TG_CACHE_DB, NULL, f->db.s), db);
    assert_null(tg_cache_shared(TG_CACHE_DB, NULL, NULL));

    /* The fs cache lives in data_dir/cache. */
    struct tg_cache *fs = tg_cache_shared(TG_CACHE_FS, f->db.dir, NULL);
    assert_non_null(fs);
    assert_ptr_equal(tg_cache_shared(TG_CACHE_FS, f->db.dir, NULL), fs);
    unsigned char k[32];
    key_n(30, k);
    struct tg_cache_entry e = entry("proj_a", "m", "{\"fs\":1}", 1);
    assert_int_equal(tg_cache_put(fs, k, &e, 0), 0);
    char path[160];
    snprintf(path, sizeof(path), "%s/cache", f->db.dir);
    assert_int_equal(access(path, F_OK), 0);
    struct tg_cache_filter all = {.all = true};
    assert_int_equal(tg_cache_invalidate(fs, &all, NULL), 0);
    /* Closes the process-wide caches so the directory can go and nothing leaks. */
    tg_cache_shared_close();
    rmdir(path);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_trip_and_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(expired_is_a_miss_and_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(invalidation, setup, teardown),
        cmocka_unit_test_setup_teardown(db_setting_and_shared_caches, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
