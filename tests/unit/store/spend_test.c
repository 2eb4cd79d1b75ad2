/*
 * spend_test.c: the store's spend_by_level, which seeds admission at start-up: sums of the
 * ledger's cost per key, per project and for the organization since a period start, exact
 * to the micro-dollar, other orgs and older rows left out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "store/store.h"

#include "../fixture/store_fixture.h"

static int
setup(void **state)
{
    *state = store_fx_new("spend-test");
    return *state != NULL ? 0 : -1;
}

static struct tg_ledger_row
row(const char *id, int64_t time_ms, const char *org, const char *project, const char *key,
    int64_t cost)
{
    struct tg_ledger_row r;
    memset(&r, 0, sizeof(r));
    snprintf(r.request_id, sizeof(r.request_id), "%s", id);
    r.attempt = 1;
    r.time_ms = time_ms;
    snprintf(r.org_id, sizeof(r.org_id), "%s", org);
    snprintf(r.project_id, sizeof(r.project_id), "%s", project);
    snprintf(r.key_id, sizeof(r.key_id), "%s", key);
    snprintf(r.endpoint, sizeof(r.endpoint), "chat.completions");
    snprintf(r.model_requested, sizeof(r.model_requested), "m");
    r.cost_micros = cost;
    r.status = 200;
    return r;
}

struct seen {
    int64_t key_a, key_b, key_c, proj_x, proj_y, org;
    int n_org, n_rows;
};

static int
collect(const struct tg_spend_rec *r, void *arg)
{
    struct seen *s = arg;
    s->n_rows++;
    if (r->key_id != NULL) {
        assert_null(r->project_id);
        int64_t *slot = strcmp(r->key_id, "key_a") == 0   ? &s->key_a
                        : strcmp(r->key_id, "key_b") == 0 ? &s->key_b
                                                          : &s->key_c;
        *slot += r->cost_micros;
    } else if (r->project_id != NULL) {
        *(strcmp(r->project_id, "proj_x") == 0 ? &s->proj_x : &s->proj_y) += r->cost_micros;
    } else {
        s->n_org++;
        s->org += r->cost_micros;
    }
    return 0;
}

static void
sums_by_level_since_start(void **state)
{
    struct store_fx *f = *state;
    int64_t start = 1767225600000; /* 2026-01-01 */
    struct tg_ledger_row rows[] = {
        row("r1", start - 1, "org-1", "proj_x", "key_a", 1000000), /* last month */
        row("r2", start, "org-1", "proj_x", "key_a", 123457),
        row("r3", start + 5, "org-1", "proj_x", "key_b", 1),
        row("r4", start + 9, "org-1", "proj_y", "key_c", 999999),
        row("r5", start + 9, "org-2", "proj_z", "key_z", 777), /* another org */
        row("r6", start + 99, "org-1", "proj_x", "key_a", 2),
    };
    assert_int_equal(f->s->ops->ledger_append(f->s, rows, 6), 0);
    struct seen s = {0};
    assert_int_equal(f->s->ops->spend_by_level(f->s, "org-1", start, collect, &s), 0);
    assert_int_equal(s.key_a, 123459);
    assert_int_equal(s.key_b, 1);
    assert_int_equal(s.key_c, 999999);
    assert_int_equal(s.proj_x, 123460);
    assert_int_equal(s.proj_y, 999999);
    assert_int_equal(s.n_org, 1);
    assert_int_equal(s.org, 123460 + 999999);
    assert_int_equal(s.n_rows, 3 + 2 + 1);
}

static void
empty_ledger_still_reports_org(void **state)
{
    struct store_fx *f = *state;
    struct seen s = {0};
    assert_int_equal(f->s->ops->spend_by_level(f->s, "org-1", 0, collect, &s), 0);
    assert_int_equal(s.n_rows, 1);
    assert_int_equal(s.n_org, 1);
    assert_int_equal(s.org, 0);
}

static int
stop_early(const struct tg_spend_rec *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
    return 7;
}

static void
callback_stops_listing(void **state)
{
    struct store_fx *f = *state;
    struct tg_ledger_row r = row("r1", 10, "org-1", "proj_x", "key_a", 5);
    assert_int_equal(f->s->ops->ledger_append(f->s, &r, 1), 0);
    int calls = 0;
    assert_int_equal(f->s->ops->spend_by_level(f->s, "org-1", 0, stop_early, &calls), 7);
    assert_int_equal(calls, 1);
    assert_int_equal(f->s->ops->spend_by_level(f->s, NULL, 0, stop_early, &calls), TG_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(sums_by_level_since_start, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(empty_ledger_still_reports_org, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(callback_stops_listing, setup, store_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
