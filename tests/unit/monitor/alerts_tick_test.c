/*
 * alerts_tick_test.c: alert rules evaluated by tg_alerts_tick (monitor/alerts.h) against a
 * real SQLite store, a published state snapshot and a monitor of the test's own, ticked at
 * times the test chooses.
 *
 * It proves: a rule fires once however many ticks see its condition, with one outbox row per
 * channel under "alert:<rule>:<fired_ms>:fired" (e-mails only when SMTP is configured); it
 * resolves once, under the ":resolved" key; a firing survives a restart (a new monitor whose
 * windows are empty and younger than the rule's window) without firing again or resolving;
 * a disabled or deleted rule that fired is closed without a notification; a change rule fires
 * on a sudden jump from its baseline and not on a steady rate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/alerts.h"
#include "store/store.h"

#include "../fixture/state_fixture.h"
#include "../fixture/store_fixture.h"

#define T0 1767225600000LL

struct fx {
    struct store_fx db;
    struct state_fx state;
    struct tg_monitor *m;
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_int_equal(store_fx_mkdir(&f->db, "alerts-tick-test"), 0);
    assert_int_equal(store_fx_open(&f->db), 0);
    const struct tg_project_rec projects[1] = {
        {"proj_a", "org-1", "production", "production", 1001, 0, NULL},
    };
    store_fx_bootstrap(f->db.s, projects, 1);
    state_fx_init(&f->state, f->db.s);
    f->m = tg_monitor_new();
    tg_monitor_set_started_ms(f->m, T0 - 3600000);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    tg_monitor_free(f->m);
    state_fx_deinit(&f->state);
    store_fx_deinit(&f->db);
    free(f);
    return 0;
}

static void
put_rule(struct fx *f, const char *id, const char *condition, double threshold, bool enabled)
{
    struct tg_alert_rule_rec r = {
        .id = id,
        .org_id = "org-1",
        .name = "errors",
        .project_id = "proj_a",
        .model = "gpt",
        .metric = "error_rate",
        .condition = condition,
        .threshold = threshold,
        .window_s = 60,
        .min_requests = 4,
        .channels = "{\"webhooks\":[\"https://h.example/a\",\"https://h.example/b\"],"
                    "\"emails\":[\"ops@example.com\"]}",
        .is_enabled = enabled,
        .created_ms = T0,
        .updated_ms = T0,
    };
    assert_int_equal(f->db.s->ops->alert_rule_put(f->db.s, &r), 0);
}

static void
traffic(struct fx *f, int ok, int errors, int64_t at_ms)
{
    for (int i = 0; i < ok + errors; i++) {
        struct tg_monitor_sample s = {
            .org_id = "org-1",
            .project_id = "proj_a",
            .model = "gpt",
            .provider = "up",
            .deployment = "gpt",
            .status = i < errors ? 502 : 200,
            .latency_ms = 10,
            .ttft_ms = 5,
            .finish_reason = "stop",
        };
        tg_monitor_add(f->m, &s, at_ms);
    }
}

static void
tick(struct fx *f, int64_t now_ms, bool has_smtp)
{
    struct tg_alerts_env env = {
        .store = f->db.s,
        .monitor = f->m,
        .ledger_backlog = -1,
        .has_smtp = has_smtp,
    };
    assert_int_equal(tg_alerts_tick(&env, now_ms), 0);
}

struct rows {
    int n;
    char keys[16][128];
    char channels[16][16];
};

static int
row(const struct tg_outbox_rec *r, void *arg)
{
    struct rows *l = arg;
    if (l->n < 16) {
        snprintf(l->keys[l->n], sizeof(l->keys[0]), "%s", r->event_key);
        snprintf(l->channels[l->n], sizeof(l->channels[0]), "%s", r->channel);
        l->n++;
    }
    return 0;
}

static struct rows
outbox(struct fx *f)
{
    struct rows l = {0};
    assert_int_equal(f->db.s->ops->outbox_list(f->db.s, "org-1", 0, row, &l), 0);
    return l;
}

static int
count_event(const struct tg_alert_event_rec *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
    return 0;
}

static int
events(struct fx *f, int state)
{
    int n = 0;
    assert_int_equal(
        f->db.s->ops->alert_events_list(f->db.s, "org-1", NULL, state, 0, count_event, &n), 0);
    return n;
}

static void
fires_once_resolves_once(void **state)
{
    struct fx *f = *state;
    put_rule(f, "alr_1", "above", 0.5, true);
    traffic(f, 1, 2, T0); /* 3 requests: below min_requests */
    tick(f, T0 + 1000, true);
    assert_int_equal(outbox(f).n, 0);

    traffic(f, 0, 1, T0 + 2000); /* 3 errors of 4 */
    for (int i = 0; i < 5; i++) {
        tick(f, T0 + 3000 + i * 1000, true);
    }
    struct rows l = outbox(f);
    assert_int_equal(l.n, 3); /* two webhooks, one e-mail */
    char want[128];
    snprintf(want, sizeof(want), "alert:alr_1:%lld:fired", T0 + 3000);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(l.keys[i], want);
    }
    assert_int_equal(events(f, 1), 1);

    /* Successes bring the rate to 3/10: resolved, once. */
    traffic(f, 6, 0, T0 + 10000);
    for (int i = 0; i < 5; i++) {
        tick(f, T0 + 11000 + i * 1000, false);
    }
    l = outbox(f);
    assert_int_equal(l.n, 5); /* without SMTP now: the two webhooks */
    snprintf(want, sizeof(want), "alert:alr_1:%lld:resolved", T0 + 3000);
    assert_string_equal(l.keys[0], want); /* newest first */
    assert_string_equal(l.keys[1], want);
    assert_string_equal(l.channels[0], "webhook");
    assert_int_equal(events(f, 1), 0);
    assert_int_equal(events(f, 2), 1);
}

static void
restart_keeps_the_firing(void **state)
{
    struct fx *f = *state;
    put_rule(f, "alr_1", "above", 0.5, true);
    traffic(f, 0, 4, T0);
    tick(f, T0 + 1000, false);
    assert_int_equal(events(f, 1), 1);
    assert_int_equal(outbox(f).n, 2);

    /* A new process: empty windows, started now. */
    tg_monitor_free(f->m);
    f->m = tg_monitor_new();
    tg_monitor_set_started_ms(f->m, T0 + 5000);
    for (int i = 0; i < 10; i++) {
        tick(f, T0 + 6000 + i * 1000, false); /* within 60 s of the start: holds */
    }
    assert_int_equal(events(f, 1), 1);
    assert_int_equal(outbox(f).n, 2);
    /* The same errors again in the new process: still the one firing. */
    traffic(f, 0, 4, T0 + 20000);
    tick(f, T0 + 21000, false);
    assert_int_equal(events(f, 1), 1);
    assert_int_equal(outbox(f).n, 2);
    /* A full window later without traffic: the condition is over. */
    tick(f, T0 + 5000 + 60000 + 20000 + 10000, false);
    assert_int_equal(events(f, 1), 0);
    assert_int_equal(outbox(f).n, 4);
}

static void
disabled_and_deleted_rules_close_quietly(void **state)
{
    struct fx *f = *state;
    put_rule(f, "alr_1", "above", 0.5, true);
    put_rule(f, "alr_2", "above", 0.5, true);
    traffic(f, 0, 4, T0);
    tick(f, T0 + 1000, false);
    assert_int_equal(events(f, 1), 2);
    assert_int_equal(outbox(f).n, 4);
    put_rule(f, "alr_1", "above", 0.5, false);
    assert_int_equal(f->db.s->ops->alert_rule_delete(f->db.s, "alr_2"), 0);
    tick(f, T0 + 2000, false);
    assert_int_equal(events(f, 1), 0);
    assert_int_equal(events(f, 2), 2);
    assert_int_equal(outbox(f).n, 4); /* no notification */
}

static void
change_rule_fires_on_a_jump(void **state)
{
    struct fx *f = *state;
    put_rule(f, "alr_c", "change", 0.3, true);
    /* Six windows of a steady 10% error rate, then the same in the current window. */
    for (int w = 0; w < 7; w++) {
        traffic(f, 9, 1, T0 + w * 60000);
    }
    tick(f, T0 + 6 * 60000 + 30000, false);
    assert_int_equal(events(f, 1), 0);
    /* A jump to 60% in the next window. */
    traffic(f, 4, 6, T0 + 7 * 60000);
    tick(f, T0 + 7 * 60000 + 30000, false);
    assert_int_equal(events(f, 1), 1);
    struct rows l = outbox(f);
    assert_int_equal(l.n, 2);
    assert_non_null(strstr(l.keys[0], ":fired"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(fires_once_resolves_once, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_keeps_the_firing, setup, teardown),
        cmocka_unit_test_setup_teardown(disabled_and_deleted_rules_close_quietly, setup, teardown),
        cmocka_unit_test_setup_teardown(change_rule_fires_on_a_jump, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
