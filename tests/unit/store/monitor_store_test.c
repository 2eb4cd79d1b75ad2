/*
 * monitor_store_test.c: the store ops of alert rules, alert events, feedback, the ledger lookup
 * by request id and the outbox listing (store.h): put replaces by id, get and delete answer
 * TG_ENOTFOUND when absent, rules are listed per org, events by state and newest first, an
 * open event survives a reopen, feedback is summed per model, deployment and label within a
 * time range, and a request is found only in its own project.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "store/store.h"

#include "../fixture/store_fixture.h"

static int
setup(void **state)
{
    *state = store_fx_new("monitor-store-test");
    return *state != NULL ? 0 : -1;
}

static struct tg_alert_rule_rec
rule(const char *id, const char *org, int64_t created_ms)
{
    struct tg_alert_rule_rec r = {
        .id = id,
        .org_id = org,
        .name = "errors",
        .project_id = "proj_1",
        .model = NULL,
        .metric = "error_rate",
        .condition = "above",
        .threshold = 0.25,
        .window_s = 300,
        .min_requests = 10,
        .channels = "{\"webhooks\":[\"https://h.example/x\"]}",
        .is_enabled = true,
        .created_ms = created_ms,
        .updated_ms = created_ms,
    };
    return r;
}

struct seen {
    int n;
    char ids[8][40];
    double numbers[8];
    int64_t times[8];
    char text[8][256];
    bool has_model[8];
};

static int
rule_seen(const struct tg_alert_rule_rec *r, void *arg)
{
    struct seen *s = arg;
    snprintf(s->ids[s->n], 40, "%s", r->id);
    s->numbers[s->n] = r->threshold;
    s->has_model[s->n] = r->model != NULL;
    snprintf(s->text[s->n], sizeof(s->text[0]), "%s|%s|%lld|%d", r->name, r->channels,
             (long long)r->window_s, r->is_enabled);
    s->n++;
    return 0;
}

static void
alert_rules_put_get_list_delete(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    struct tg_alert_rule_rec a = rule("alr_a", "org-1", 1000);
    struct tg_alert_rule_rec b = rule("alr_b", "org-1", 2000);
    struct tg_alert_rule_rec c = rule("alr_c", "org-2", 1500);
    b.model = "gpt";
    assert_int_equal(o->alert_rule_put(f->s, &b), 0);
    assert_int_equal(o->alert_rule_put(f->s, &a), 0);
    assert_int_equal(o->alert_rule_put(f->s, &c), 0);

    struct seen s = {0};
    assert_int_equal(o->alert_rules_list(f->s, "org-1", rule_seen, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], "alr_a"); /* oldest first */
    assert_string_equal(s.ids[1], "alr_b");
    assert_false(s.has_model[0]);
    assert_true(s.has_model[1]);

    /* put replaces */
    a.threshold = 0.75;
    a.is_enabled = false;
    a.name = "renamed";
    assert_int_equal(o->alert_rule_put(f->s, &a), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(o->alert_rule_get(f->s, "alr_a", rule_seen, &s), 0);
    assert_int_equal(s.n, 1);
    assert_true(s.numbers[0] == 0.75);
    assert_string_equal(s.text[0], "renamed|{\"webhooks\":[\"https://h.example/x\"]}|300|0");

    assert_int_equal(o->alert_rule_delete(f->s, "alr_a"), 0);
    assert_int_equal(o->alert_rule_delete(f->s, "alr_a"), TG_ENOTFOUND);
    assert_int_equal(o->alert_rule_get(f->s, "alr_a", rule_seen, &s), TG_ENOTFOUND);
}

static int
event_seen(const struct tg_alert_event_rec *r, void *arg)
{
    struct seen *s = arg;
    snprintf(s->ids[s->n], 40, "%s", r->id);
    s->numbers[s->n] = r->value;
    s->times[s->n] = r->resolved_ms;
    s->n++;
    return 0;
}

static struct tg_alert_event_rec
event(const char *id, const char *rule_id, int64_t fired_ms, int64_t resolved_ms)
{
    struct tg_alert_event_rec e = {
        .id = id,
        .org_id = "org-1",
        .rule_id = rule_id,
        .name = "errors",
        .metric = "error_rate",
        .project_id = NULL,
        .model = "gpt",
        .value = 0.5,
        .threshold = 0.25,
        .fired_ms = fired_ms,
        .resolved_ms = resolved_ms,
    };
    return e;
}

static int
reopen(struct store_fx *f)
{
    f->s->ops->close(f->s);
    char err[256] = "";
    return tg_store_sqlite_open(f->path, &f->s, err, sizeof(err));
}

static void
alert_events_by_state_and_reopen(void **state)
{
    struct store_fx *f = *state;
    struct tg_alert_event_rec e1 = event("alt_1", "alr_a", 1000, 2000);
    struct tg_alert_event_rec e2 = event("alt_2", "alr_a", 3000, 0);
    struct tg_alert_event_rec e3 = event("alt_3", "alr_b", 4000, 0);
    assert_int_equal(f->s->ops->alert_event_put(f->s, &e1), 0);
    assert_int_equal(f->s->ops->alert_event_put(f->s, &e2), 0);
    assert_int_equal(f->s->ops->alert_event_put(f->s, &e3), 0);
    assert_int_equal(reopen(f), 0); /* a firing survives a restart */
    const struct tg_store_ops *o = f->s->ops;

    struct seen s = {0};
    assert_int_equal(o->alert_events_list(f->s, "org-1", NULL, 0, 0, event_seen, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[0], "alt_3"); /* newest first */
    assert_string_equal(s.ids[2], "alt_1");
    memset(&s, 0, sizeof(s));
    assert_int_equal(o->alert_events_list(f->s, "org-1", NULL, 1, 0, event_seen, &s), 0);
    assert_int_equal(s.n, 2);
    memset(&s, 0, sizeof(s));
    assert_int_equal(o->alert_events_list(f->s, "org-1", "alr_a", 1, 0, event_seen, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "alt_2");
    memset(&s, 0, sizeof(s));
    assert_int_equal(o->alert_events_list(f->s, "org-1", NULL, 2, 0, event_seen, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.times[0], 2000);
    memset(&s, 0, sizeof(s));
    assert_int_equal(o->alert_events_list(f->s, "org-1", NULL, 0, 1, event_seen, &s), 0);
    assert_int_equal(s.n, 1);

    /* Resolving is a put of the same id. */
    e2.resolved_ms = 5000;
    e2.value = 0.1;
    assert_int_equal(o->alert_event_put(f->s, &e2), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(o->alert_events_list(f->s, "org-1", "alr_a", 1, 0, event_seen, &s), 0);
    assert_int_equal(s.n, 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(o->alert_events_list(f->s, "org-2", NULL, 0, 0, event_seen, &s), 0);
    assert_int_equal(s.n, 0);
}

static int
agg_seen(const struct tg_feedback_agg *a, void *arg)
{
    struct seen *s = arg;
    snprintf(s->text[s->n], sizeof(s->text[0]), "%s|%s|%s|%lld", a->model,
             a->deployment ? a->deployment : "-", a->label ? a->label : "-", (long long)a->count);
    s->numbers[s->n] = a->score_sum;
    s->n++;
    return 0;
}

static void
feedback_aggregates(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    struct tg_feedback_rec r = {
        .org_id = "org-1",
        .project_id = "proj_1",
        .request_id = "req_1",
        .model = "gpt",
        .provider = "up",
        .deployment = "dep-a",
    };
    struct {
        const char *id, *dep, *label;
        double score;
        int64_t at;
    } rows[] = {
        {"fb_1", "dep-a", "good", 1.0, 1000}, {"fb_2", "dep-a", "good", 0.5, 1100},
        {"fb_3", "dep-b", NULL, 0.25, 1200},  {"fb_4", "dep-b", "bad", 0.0, 1300},
        {"fb_5", "dep-b", "bad", 0.0, 9000}, /* outside the range below */
    };
    for (size_t i = 0; i < 5; i++) {
        r.id = rows[i].id;
        r.deployment = rows[i].dep;
        r.label = rows[i].label;
        r.score = rows[i].score;
        r.created_ms = rows[i].at;
        assert_int_equal(o->feedback_insert(f->s, &r), 0);
    }
    r.id = "fb_1";
    assert_int_equal(o->feedback_insert(f->s, &r), TG_EEXISTS);

    struct seen s = {0};
    assert_int_equal(o->feedback_aggregate(f->s, "org-1", 1000, 2000, false, agg_seen, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.text[0], "gpt|-|-|1"); /* NULL label sorts first */
    assert_string_equal(s.text[1], "gpt|-|bad|1");
    assert_string_equal(s.text[2], "gpt|-|good|2");
    assert_true(fabs(s.numbers[2] - 1.5) < 1e-9);

    memset(&s, 0, sizeof(s));
    assert_int_equal(o->feedback_aggregate(f->s, "org-1", 0, 10000, true, agg_seen, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.text[0], "gpt|dep-a|good|2");
    assert_string_equal(s.text[1], "gpt|dep-b|-|1");
    assert_string_equal(s.text[2], "gpt|dep-b|bad|2");
}

static int
row_seen(const struct tg_ledger_row *r, void *arg)
{
    struct seen *s = arg;
    snprintf(s->text[s->n], sizeof(s->text[0]), "%s|%d|%s|%d", r->deployment, r->attempt,
             r->model_requested, r->status);
    s->n++;
    return 0;
}

static void
ledger_find_by_request_and_project(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    struct tg_ledger_row rows[2];
    memset(rows, 0, sizeof(rows));
    for (int i = 0; i < 2; i++) {
        snprintf(rows[i].request_id, sizeof(rows[i].request_id), "req_x");
        rows[i].attempt = i + 1;
        snprintf(rows[i].org_id, sizeof(rows[i].org_id), "org-1");
        snprintf(rows[i].project_id, sizeof(rows[i].project_id), "proj_1");
        snprintf(rows[i].model_requested, sizeof(rows[i].model_requested), "gpt");
        snprintf(rows[i].deployment, sizeof(rows[i].deployment), i == 0 ? "dep-a" : "dep-b");
        rows[i].status = i == 0 ? 502 : 200;
    }
    assert_int_equal(o->ledger_append(f->s, rows, 2), 0);
    struct seen s = {0};
    assert_int_equal(o->ledger_find(f->s, "req_x", "proj_1", row_seen, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.text[0], "dep-b|2|gpt|200"); /* the last attempt */
    assert_int_equal(o->ledger_find(f->s, "req_x", "proj_2", row_seen, &s), TG_ENOTFOUND);
    assert_int_equal(o->ledger_find(f->s, "req_y", "proj_1", row_seen, &s), TG_ENOTFOUND);
}

static int
outbox_seen(const struct tg_outbox_rec *r, void *arg)
{
    struct seen *s = arg;
    snprintf(s->text[s->n], sizeof(s->text[0]), "%s", r->event_key);
    s->n++;
    return 0;
}

static void
outbox_list_newest_first(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    const char *keys[] = {"k1", "k2", "k3"};
    for (int i = 0; i < 3; i++) {
        struct tg_outbox_rec r = {.org_id = i < 2 ? "org-1" : "org-2",
                                  .event_key = keys[i],
                                  .channel = "webhook",
                                  .target = "https://h.example/",
                                  .payload = "{}",
                                  .created_ms = 1,
                                  .next_attempt_ms = 1};
        assert_int_equal(o->outbox_put(f->s, &r, NULL), 0);
    }
    struct seen s = {0};
    assert_int_equal(o->outbox_list(f->s, "org-1", 0, outbox_seen, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.text[0], "k2");
    assert_string_equal(s.text[1], "k1");
    memset(&s, 0, sizeof(s));
    assert_int_equal(o->outbox_list(f->s, "org-1", 1, outbox_seen, &s), 0);
    assert_int_equal(s.n, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(alert_rules_put_get_list_delete, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(alert_events_by_state_and_reopen, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(feedback_aggregates, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(ledger_find_by_request_and_project, setup,
                                        store_fx_teardown),
        cmocka_unit_test_setup_teardown(outbox_list_newest_first, setup, store_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
