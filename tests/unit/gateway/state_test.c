/*
 * state_test.c: snapshot building from the store (gateway/state.h), in particular which models
 * a project may use: its settings' list first, then the config's list, then every routed model;
 * and that malformed settings from the store fall back instead of failing the reload; and the
 * limits of the organization, the projects and the keys (settings documents), key limits found
 * by id whatever the order the store lists them in.
 *
 * The store is a small fake (one org, the projects a test sets, no keys), so these tests do not
 * depend on the SQLite backend; the config is built by hand with three routes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "gateway/config.h"
#include "gateway/state.h"
#include "store/store.h"

/* ---- fake store ------------------------------------------------------------------------ */

static const struct tg_project_rec *fake_projects;
static size_t fake_n_projects;
static int fake_projects_rc;

static int
fake_orgs_list(struct tg_store *s, tg_store_org_cb cb, void *arg)
{
    (void)s;
    struct tg_org_rec org = {"org-test", "Test org", 1000};
    return cb(&org, arg);
}

static int
fake_projects_list(struct tg_store *s, const char *org_id, tg_store_project_cb cb, void *arg)
{
    (void)s;
    assert_string_equal(org_id, "org-test");
    if (fake_projects_rc != 0) {
        return fake_projects_rc;
    }
    for (size_t i = 0; i < fake_n_projects; i++) {
        int rc = cb(&fake_projects[i], arg);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int
fake_keys_list(struct tg_store *s, const char *org_id, tg_store_key_cb cb, void *arg)
{
    (void)s;
    (void)org_id;
    (void)cb;
    (void)arg;
    return 0;
}

/* Settings documents: "org_settings" and "key_settings" rows a test sets. */
static const struct tg_doc *fake_docs;
static size_t fake_n_docs;

static int
fake_doc_get(struct tg_store *s, const char *kind, const char *id, tg_store_doc_cb cb, void *arg)
{
    (void)s;
    for (size_t i = 0; i < fake_n_docs; i++) {
        if (strcmp(fake_docs[i].kind, kind) == 0 && strcmp(fake_docs[i].id, id) == 0) {
            return cb(&fake_docs[i], arg);
        }
    }
    return TG_ENOTFOUND;
}

static int
fake_doc_list(struct tg_store *s, const char *kind, const char *org_id, const char *project_id,
              tg_store_doc_cb cb, void *arg)
{
    (void)s;
    assert_string_equal(org_id, "org-test");
    assert_null(project_id);
    for (size_t i = 0; i < fake_n_docs; i++) {
        if (strcmp(fake_docs[i].kind, kind) == 0) {
            int rc = cb(&fake_docs[i], arg);
            if (rc != 0) {
                return rc;
            }
        }
    }
    return 0;
}

static const struct tg_store_ops fake_ops = {
    .name = "fake",
    .orgs_list = fake_orgs_list,
    .projects_list = fake_projects_list,
    .keys_list = fake_keys_list,
    .doc_get = fake_doc_get,
    .doc_list = fake_doc_list,
};

static struct tg_store fake_store = {.ops = &fake_ops};

/* ---- config ---------------------------------------------------------------------------- */

static char *route_names[] = {"gpt-4o", "gpt-4o-mini", "o3"};
static struct tg_model_route routes[3];
static char *conf_models[] = {"gpt-4o-mini"};
static struct tg_project_conf conf_projects[] = {
    {.name = "staging", .models = conf_models, .n_models = 1},
};
static struct tg_config config;

static int
setup(void **state)
{
    (void)state;
    memset(&config, 0, sizeof(config));
    for (size_t i = 0; i < 3; i++) {
        routes[i] = (struct tg_model_route){
            .name = route_names[i], .provider = "mock", .upstream_model = route_names[i]};
    }
    config.models = routes;
    config.n_models = 3;
    config.projects = conf_projects;
    config.n_projects = 1;
    static const unsigned char pepper[] = "pepper";
    struct tg_state_env env = {
        .config = &config,
        .store = &fake_store,
        .pepper = pepper,
        .pepper_len = sizeof(pepper) - 1,
    };
    tg_state_env_set(&env);
    fake_projects = NULL;
    fake_n_projects = 0;
    fake_projects_rc = 0;
    fake_docs = NULL;
    fake_n_docs = 0;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    tg_state_shutdown();
    return 0;
}

static void
reload_with(const struct tg_project_rec *projects, size_t n)
{
    fake_projects = projects;
    fake_n_projects = n;
    assert_int_equal(tg_state_reload(), 0);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void
test_fields_copied(void **state)
{
    (void)state;
    struct tg_project_rec recs[] = {
        {.id = "proj_a",
         .org_id = "org-test",
         .name = "development",
         .environment = "dev-eu",
         .created_ms = 5000,
         .settings = NULL},
        {.id = "proj_b",
         .org_id = "org-test",
         .name = "old",
         .environment = "production",
         .created_ms = 6000,
         .archived_ms = 9000,
         .settings = "{\"models\":[\"o3\"]}"},
    };
    uint64_t gen = tg_state_generation();
    reload_with(recs, 2);
    assert_true(tg_state_generation() > gen);
    struct tg_state *s = tg_state_acquire();
    assert_non_null(s);
    assert_int_equal(s->n_projects, 2);
    const struct tg_project *a = tg_state_project(s, "development");
    assert_non_null(a);
    assert_ptr_equal(a, tg_state_project(s, "proj_a"));
    assert_string_equal(a->environment, "dev-eu");
    assert_int_equal(a->created_ms, 5000);
    assert_int_equal(a->archived_ms, 0);
    assert_false(a->is_archived);
    assert_string_equal(a->settings, "{}");
    assert_null(a->models);
    const struct tg_project *b = tg_state_project(s, "proj_b");
    assert_true(b->is_archived);
    assert_int_equal(b->archived_ms, 9000);
    assert_string_equal(b->settings, "{\"models\":[\"o3\"]}");
    assert_int_equal(b->n_models, 1);
    assert_string_equal(b->models[0], "o3");
    assert_null(tg_state_project(s, "nope"));
    tg_state_unref(s);
}

static void
test_allows_precedence(void **state)
{
    (void)state;
    struct tg_project_rec recs[] = {
        /* no settings, no config entry: every routed model */
        {.id = "proj_1", .org_id = "org-test", .name = "development", .environment = "x"},
        /* config lists gpt-4o-mini only */
        {.id = "proj_2", .org_id = "org-test", .name = "staging", .environment = "x"},
        /* settings win over the config's list */
        {.id = "proj_3",
         .org_id = "org-test",
         .name = "staging-2",
         .environment = "x",
         .settings = "{\"models\":[\"o3\",\"gpt-4o\"]}"},
        /* an empty settings list is "not set": the config's list applies */
        {.id = "proj_4",
         .org_id = "org-test",
         .name = "staging",
         .environment = "x",
         .settings = "{\"models\":[]}"},
    };
    reload_with(recs, 4);
    struct tg_state *s = tg_state_acquire();
    const struct tg_project *p1 = tg_state_project(s, "proj_1");
    assert_true(tg_project_allows(p1, &config, "gpt-4o"));
    assert_true(tg_project_allows(p1, &config, "o3"));
    assert_false(tg_project_allows(p1, &config, "unrouted"));

    const struct tg_project *p2 = tg_state_project(s, "proj_2");
    assert_true(tg_project_allows(p2, &config, "gpt-4o-mini"));
    assert_false(tg_project_allows(p2, &config, "gpt-4o"));

    const struct tg_project *p3 = tg_state_project(s, "proj_3");
    assert_true(tg_project_allows(p3, &config, "o3"));
    assert_true(tg_project_allows(p3, &config, "gpt-4o"));
    assert_false(tg_project_allows(p3, &config, "gpt-4o-mini"));

    const struct tg_project *p4 = tg_state_project(s, "proj_4");
    assert_int_equal(p4->n_models, 0);
    assert_true(tg_project_allows(p4, &config, "gpt-4o-mini"));
    assert_false(tg_project_allows(p4, &config, "o3"));
    tg_state_unref(s);
}

static void
test_malformed_settings_fall_back(void **state)
{
    (void)state;
    struct tg_project_rec recs[] = {
        {.id = "proj_1",
         .org_id = "org-test",
         .name = "a",
         .environment = "x",
         .settings = "{not json"},
        {.id = "proj_2",
         .org_id = "org-test",
         .name = "b",
         .environment = "x",
         .settings = "[\"o3\"]"},
        {.id = "proj_3",
         .org_id = "org-test",
         .name = "c",
         .environment = "x",
         .settings = "{\"models\":\"o3\"}"},
        /* non-strings are skipped, strings kept */
        {.id = "proj_4",
         .org_id = "org-test",
         .name = "d",
         .environment = "x",
         .settings = "{\"models\":[1,\"o3\",null]}"},
        /* only non-strings: nothing named, so the fall-back applies */
        {.id = "proj_5",
         .org_id = "org-test",
         .name = "e",
         .environment = "x",
         .settings = "{\"models\":[1,2]}"},
    };
    reload_with(recs, 5);
    struct tg_state *s = tg_state_acquire();
    assert_int_equal(s->n_projects, 5);
    for (size_t i = 0; i < 3; i++) {
        const struct tg_project *p = &s->projects[i];
        assert_int_equal(p->n_models, 0);
        assert_true(tg_project_allows(p, &config, "gpt-4o"));
    }
    const struct tg_project *p4 = tg_state_project(s, "d");
    assert_int_equal(p4->n_models, 1);
    assert_true(tg_project_allows(p4, &config, "o3"));
    assert_false(tg_project_allows(p4, &config, "gpt-4o"));
    const struct tg_project *p5 = tg_state_project(s, "e");
    assert_int_equal(p5->n_models, 0);
    assert_true(tg_project_allows(p5, &config, "gpt-4o"));
    tg_state_unref(s);
}

static void
test_failed_reload_keeps_snapshot(void **state)
{
    (void)state;
    struct tg_project_rec recs[] = {
        {.id = "proj_1",
         .org_id = "org-test",
         .name = "kept",
         .environment = "x",
         .settings = "{\"models\":[\"o3\"]}"},
    };
    reload_with(recs, 1);
    uint64_t gen = tg_state_generation();
    fake_projects_rc = TG_EIO;
    assert_int_equal(tg_state_reload(), TG_EIO);
    assert_int_equal(tg_state_generation(), gen);
    struct tg_state *s = tg_state_acquire();
    assert_non_null(tg_state_project(s, "kept"));
    assert_int_equal(s->projects[0].n_models, 1);
    tg_state_unref(s);
}

static void
test_limits_of_every_level(void **state)
{
    (void)state;
    struct tg_project_rec recs[] = {
        {.id = "proj_1",
         .org_id = "org-test",
         .name = "limited",
         .environment = "x",
         .settings = "{\"rate_limits\":{\"*\":{\"max_requests_per_1_minute\":60},"
                     "\"o3\":{\"max_tokens_per_1_day\":1000}},"
                     "\"budget\":{\"monthly_limit_micros\":5000000}}"},
        /* a limit the parser refuses: the project runs without limits of its own */
        {.id = "proj_2",
         .org_id = "org-test",
         .name = "bad",
         .environment = "x",
         .settings = "{\"models\":[\"o3\"],\"budget\":{\"monthly_limit_micros\":-1}}"},
    };
    /* Keys listed out of order: the lookup must still find each (sorted at reload). */
    struct tg_doc docs[] = {
        {.kind = "org_settings",
         .id = "org-test",
         .org_id = "org-test",
         .data = "{\"budget\":{\"monthly_limit_micros\":100000000}}"},
        {.kind = "key_settings",
         .id = "key_zz",
         .org_id = "org-test",
         .data = "{\"rate_limits\":{\"*\":{\"max_tokens_per_1_minute\":7}}}"},
        {.kind = "key_settings",
         .id = "key_aa",
         .org_id = "org-test",
         .data = "{\"budget\":{\"monthly_limit_micros\":1}}"},
        {.kind = "key_settings", .id = "key_mm", .org_id = "org-test", .data = "[1]"},
    };
    fake_docs = docs;
    fake_n_docs = 4;
    reload_with(recs, 2);
    struct tg_state *s = tg_state_acquire();
    assert_true(s->org_limits.has_budget);
    assert_int_equal(s->org_limits.budget.monthly_limit_micros, 100000000);

    const struct tg_project *p1 = tg_state_project(s, "limited");
    assert_int_equal(p1->limits.all_models.rpm, 60);
    assert_int_equal(tg_level_model_limit(&p1->limits, "o3").tpd, 1000);
    assert_int_equal(tg_level_model_limit(&p1->limits, "gpt-4o").tpd, 0);
    assert_true(p1->limits.has_budget);
    assert_int_equal(p1->limits.budget.monthly_limit_micros, 5000000);

    const struct tg_project *p2 = tg_state_project(s, "bad");
    assert_false(p2->limits.has_budget);
    assert_int_equal(p2->n_models, 1); /* the rest of the settings still applies */

    const struct tg_level_limits *zz = tg_state_key_limits(s, "key_zz");
    assert_non_null(zz);
    assert_int_equal(zz->all_models.tpm, 7);
    const struct tg_level_limits *aa = tg_state_key_limits(s, "key_aa");
    assert_non_null(aa);
    assert_int_equal(aa->budget.monthly_limit_micros, 1);
    assert_null(tg_state_key_limits(s, "key_mm")); /* not an object: no entry */
    assert_null(tg_state_key_limits(s, "key_00"));
    assert_null(tg_state_key_limits(s, NULL));
    tg_state_unref(s);
}

static void
test_no_org_settings(void **state)
{
    (void)state;
    reload_with(NULL, 0);
    struct tg_state *s = tg_state_acquire();
    assert_false(s->org_limits.has_budget);
    assert_int_equal(s->n_key_limits, 0);
    assert_null(tg_state_key_limits(s, "key_aa"));
    tg_state_unref(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fields_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allows_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_settings_fall_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_reload_keeps_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_of_every_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_org_settings, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
