/*
 * alerts_test.c: the alert rules' pure parts (monitor/alerts.h): metric values and their
 * min_requests, and the fire/resolve decision: a rule crossing its threshold fires once and
 * resolves once when it is back, holds while the window has no value yet after a restart,
 * and a change rule compares the window to its baseline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "monitor/alerts.h"

static void
names_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < TG_METRIC_COUNT; i++) {
        enum tg_alert_metric m;
        assert_true(tg_alert_metric_parse(tg_alert_metric_name((enum tg_alert_metric)i), &m));
        assert_int_equal(m, i);
    }
    enum tg_alert_metric m;
    assert_false(tg_alert_metric_parse("error-rate", &m));
    assert_false(tg_alert_metric_parse(NULL, &m));
    enum tg_alert_condition c;
    assert_true(tg_alert_condition_parse("change", &c));
    assert_int_equal(c, TG_COND_CHANGE);
    assert_false(tg_alert_condition_parse("ABOVE", &c));
    assert_false(tg_alert_metric_is_windowed(TG_METRIC_BREAKER_OPEN));
    assert_true(tg_alert_metric_is_windowed(TG_METRIC_FEEDBACK_MEAN));
}

static void
values_need_min_requests(void **state)
{
    (void)state;
    struct tg_monitor_stats st;
    memset(&st, 0, sizeof(st));
    st.requests = 4;
    st.errors = 1;
    st.ok = 2;
    st.finish_length = 1;
    bool has;
    assert_true(tg_alert_metric_value(TG_METRIC_ERROR_RATE, &st, 4, &has) == 0.25);
    assert_true(has);
    tg_alert_metric_value(TG_METRIC_ERROR_RATE, &st, 5, &has);
    assert_false(has);
    /* Quality rates are over answers with a finish_reason (ok), not every request. */
    assert_true(tg_alert_metric_value(TG_METRIC_FINISH_LENGTH_RATE, &st, 2, &has) == 0.5);
    assert_true(has);
    tg_alert_metric_value(TG_METRIC_FINISH_LENGTH_RATE, &st, 3, &has);
    assert_false(has);
    /* Feedback mean counts feedback, not requests. */
    st.feedback_count = 2;
    st.feedback_sum = 1.5;
    assert_true(tg_alert_metric_value(TG_METRIC_FEEDBACK_MEAN, &st, 2, &has) == 0.75);
    assert_true(has);
    tg_alert_metric_value(TG_METRIC_FEEDBACK_MEAN, &st, 3, &has);
    assert_false(has);
    /* p95 of 10 latencies in one bin. */
    st.latency[tg_monitor_bin(300)] = 10;
    double p95 = tg_alert_metric_value(TG_METRIC_P95_LATENCY, &st, 10, &has);
    assert_true(has);
    assert_true(p95 > 200 && p95 <= 300);
    tg_alert_metric_value(TG_METRIC_P95_TTFT, &st, 1, &has);
    assert_false(has);
}

/* Steps a rule over a sequence of window values (NAN = no value), as ticks would, and counts
 * its fired and resolved events. */
struct run {
    int fired;
    int resolved;
    bool is_firing;
};

static void
step(struct run *r, struct tg_alert_input *in)
{
    switch (tg_alert_decide(in, r->is_firing)) {
    case TG_ALERT_FIRE:
        r->fired++;
        r->is_firing = true;
        break;
    case TG_ALERT_RESOLVE:
        r->resolved++;
        r->is_firing = false;
        break;
    case TG_ALERT_HOLD:
        break;
    }
}

static void
fires_once_and_resolves_once(void **state)
{
    (void)state;
    struct run r = {0};
    struct tg_alert_input in = {
        .condition = TG_COND_ABOVE, .threshold = 0.5, .is_window_complete = true};
    double seq[] = {0.1, 0.4, 0.6, 0.9, 1.0, 0.7, 0.5, 0.2, 0.0, 0.3};
    int fired_at = -1, resolved_at = -1;
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
        in.value = seq[i];
        in.has_value = true;
        int f = r.fired, s = r.resolved;
        step(&r, &in);
        fired_at = r.fired > f ? (int)i : fired_at;
        resolved_at = r.resolved > s ? (int)i : resolved_at;
    }
    assert_int_equal(r.fired, 1);
    assert_int_equal(r.resolved, 1);
    assert_int_equal(fired_at, 2);    /* the first value above 0.5 */
    assert_int_equal(resolved_at, 6); /* 0.5 is not above 0.5 */

    /* below */
    struct run b = {0};
    in.condition = TG_COND_BELOW;
    in.threshold = 0.3;
    in.value = 0.2;
    step(&b, &in);
    step(&b, &in);
    in.value = 0.4;
    step(&b, &in);
    assert_int_equal(b.fired, 1);
    assert_int_equal(b.resolved, 1);
}

static void
no_value_holds_until_the_window_is_complete(void **state)
{
    (void)state;
    struct tg_alert_input in = {.condition = TG_COND_ABOVE, .threshold = 0.5};
    /* Without a value nothing fires. */
    assert_int_equal(tg_alert_decide(&in, false), TG_ALERT_HOLD);
    /* Firing, restarted: empty windows younger than the rule's window prove nothing. */
    in.is_window_complete = false;
    assert_int_equal(tg_alert_decide(&in, true), TG_ALERT_HOLD);
    /* Once the window lies after the start and still has no value, the condition is over. */
    in.is_window_complete = true;
    assert_int_equal(tg_alert_decide(&in, true), TG_ALERT_RESOLVE);
    /* A value below the threshold resolves even in an incomplete window. */
    in.is_window_complete = false;
    in.has_value = true;
    in.value = 0.1;
    assert_int_equal(tg_alert_decide(&in, true), TG_ALERT_RESOLVE);
    /* And a value above fires in one. */
    in.value = 0.9;
    assert_int_equal(tg_alert_decide(&in, false), TG_ALERT_FIRE);
}

static void
change_compares_to_the_baseline(void **state)
{
    (void)state;
    struct tg_alert_input in = {.condition = TG_COND_CHANGE,
                                .threshold = 0.2,
                                .is_window_complete = true,
                                .has_value = true};
    in.value = 0.9;
    /* No baseline (too few requests before): no judgement. */
    assert_int_equal(tg_alert_decide(&in, false), TG_ALERT_HOLD);
    in.has_baseline = true;
    in.baseline = 0.8;
    assert_int_equal(tg_alert_decide(&in, false), TG_ALERT_HOLD); /* 0.1: steady */
    in.baseline = 0.6;
    assert_int_equal(tg_alert_decide(&in, false), TG_ALERT_FIRE); /* up by 0.3 */
    in.value = 0.3;
    assert_int_equal(tg_alert_decide(&in, false), TG_ALERT_FIRE); /* down by 0.3 */
    in.value = 0.65;
    assert_int_equal(tg_alert_decide(&in, true), TG_ALERT_RESOLVE);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_round_trip),
        cmocka_unit_test(values_need_min_requests),
        cmocka_unit_test(fires_once_and_resolves_once),
        cmocka_unit_test(no_value_holds_until_the_window_is_complete),
        cmocka_unit_test(change_compares_to_the_baseline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
