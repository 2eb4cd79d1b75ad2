/*
 * notify_rules_test.c: the notifier's pure rules (notify/notifier.h): the webhook signature
 * against an independently computed HMAC, the back-off schedule and its cap, which thresholds
 * a spend crosses (exactly at the share, not a micro-dollar early), the automatic increase up
 * to its ceiling, the month-end forecast, and the e-mail text (headers that cannot be split by
 * a hostile project name).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "core/buf.h"
#include "notify/notifier.h"

static void
signature_matches_hmac_sha256_of_timestamp_dot_body(void **state)
{
    char sig[128];
    const char *body = "{\"a\":1}";
    tg_notify_signature("whsec_test", 10, 1767225600, body, strlen(body), sig, sizeof(sig));
    /* python3: hmac.new(b'whsec_test', b'1767225600.{"a":1}', hashlib.sha256).hexdigest() */
    assert_string_equal(
        sig, "t=1767225600,v1=6d204545ff126a339c00513d93603299c984074ce1331c3537c3f6c976b49019");
    /* Another timestamp or body gives another signature. */
    char other[128];
    tg_notify_signature("whsec_test", 10, 1767225601, body, strlen(body), other, sizeof(other));
    assert_string_not_equal(strchr(sig, 'v'), strchr(other, 'v'));
}

static void
backoff_doubles_from_one_second_to_one_hour(void **state)
{
    assert_int_equal(tg_notify_backoff_ms(1), 1000);
    assert_int_equal(tg_notify_backoff_ms(2), 2000);
    assert_int_equal(tg_notify_backoff_ms(3), 4000);
    assert_int_equal(tg_notify_backoff_ms(12), 2048000);
    assert_int_equal(tg_notify_backoff_ms(13), 3600000);
    assert_int_equal(tg_notify_backoff_ms(1000), 3600000);
    assert_int_equal(tg_notify_backoff_ms(0), 1000);
}

static struct tg_budget_conf
conf3(void)
{
    struct tg_budget_conf b = {.monthly_limit_micros = 1000000, .n_thresholds = 3};
    b.thresholds_pct[0] = 50;
    b.thresholds_pct[1] = 80;
    b.thresholds_pct[2] = 100;
    return b;
}

static void
thresholds_cross_exactly_at_their_share(void **state)
{
    struct tg_budget_conf b = conf3();
    int out[TG_MAX_THRESHOLDS];
    assert_int_equal(tg_notify_crossed(&b, 1000000, 0, out), 0);
    assert_int_equal(tg_notify_crossed(&b, 1000000, 499999, out), 0);
    assert_int_equal(tg_notify_crossed(&b, 1000000, 500000, out), 1);
    assert_int_equal(out[0], 50);
    assert_int_equal(tg_notify_crossed(&b, 1000000, 799999, out), 1);
    assert_int_equal(tg_notify_crossed(&b, 1000000, 800000, out), 2);
    assert_int_equal(out[1], 80);
    assert_int_equal(tg_notify_crossed(&b, 1000000, 999999, out), 2);
    assert_int_equal(tg_notify_crossed(&b, 1000000, 1000000, out), 3);
    assert_int_equal(out[2], 100);
    assert_int_equal(tg_notify_crossed(&b, 1000000, 5000000, out), 3);
    /* Odd limits: 80% of 333 micro-dollars is 266.4, so 266 is below and 267 above. */
    assert_int_equal(tg_notify_crossed(&b, 333, 266, out), 1);
    assert_int_equal(tg_notify_crossed(&b, 333, 267, out), 2);
    /* No limit, no threshold; a threshold above 100% is a share like any other. */
    assert_int_equal(tg_notify_crossed(&b, 0, 10, out), 0);
    b.thresholds_pct[2] = 150;
    assert_int_equal(tg_notify_crossed(&b, 1000, 1499, out), 2);
    assert_int_equal(tg_notify_crossed(&b, 1000, 1500, out), 3);
    /* Large values do not overflow: 1e12 limit (limits.c's cap) at 1000%. */
    b.thresholds_pct[2] = 1000;
    assert_int_equal(tg_notify_crossed(&b, 1000000000000LL, 10000000000000LL, out), 3);
}

static void
auto_increase_steps_up_to_the_ceiling(void **state)
{
    struct tg_budget_conf b = conf3();
    int64_t next = 0;
    /* No rule: nothing. */
    assert_false(tg_notify_auto_increase(&b, 1000000, 1000000, &next));
    b.auto_at_pct = 80;
    b.auto_by_micros = 500000;
    b.auto_max_micros = 2200000;
    assert_false(tg_notify_auto_increase(&b, 1000000, 799999, &next));
    assert_true(tg_notify_auto_increase(&b, 1000000, 800000, &next));
    assert_int_equal(next, 1500000);
    assert_true(tg_notify_auto_increase(&b, 2000000, 1600000, &next));
    assert_int_equal(next, 2200000); /* the last step is cut at the ceiling */
    assert_false(tg_notify_auto_increase(&b, 2200000, 2200000, &next));
}

static void
forecast_projects_spend_to_the_period_end(void **state)
{
    const int64_t day = 86400000;
    const int64_t start = 1767225600000; /* 2026-01-01 */
    const int64_t end = start + 31 * day;
    /* Too early: less than a day of data. */
    assert_int_equal(tg_notify_forecast_micros(1000, start, end, start + day - 1, day), -1);
    /* 1000 in 1 day of 31: 31000. */
    assert_int_equal(tg_notify_forecast_micros(1000, start, end, start + day, day), 31000);
    /* Half-way: twice the spend. */
    assert_int_equal(tg_notify_forecast_micros(12345, start, end, start + end / 2 - start / 2, 0),
                     24690);
    /* At or after the end: the spend itself. */
    assert_int_equal(tg_notify_forecast_micros(777, start, end, end, day), 777);
    /* Large spend does not overflow. */
    assert_int_equal(tg_notify_forecast_micros(1000000000000LL, start, end, start + day, day),
                     31000000000000LL);
}

static const char *const event =
    "{\"id\":\"evt_1\",\"type\":\"budget.threshold\",\"created_at\":1767312000,"
    "\"data\":{\"scope\":\"project\",\"id\":\"proj_1\",\"name\":\"prod\\r\\nBcc: x@evil\","
    "\"threshold_pct\":80,\"spend_micros\":800500,\"limit_micros\":1000000,"
    "\"period_start\":1767225600,\"period_end\":1769904000}}";

static void
email_has_headers_subject_and_amounts(void **state)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_notify_email_render(event, "alerts@example.com", "o@example.com", &b), 0);
    assert_non_null(strstr(b.data, "From: alerts@example.com\r\n"));
    assert_non_null(strstr(b.data, "To: o@example.com\r\n"));
    assert_non_null(strstr(b.data, "Date: Fri, 02 Jan 2026 00:00:00 +0000\r\n"));
    assert_non_null(strstr(b.data, "Subject: [tollgate] project prod  Bcc: x@evil reached 80% of "
                                   "its monthly budget\r\n"));
    /* The name's CR LF became spaces: no header of its own. */
    assert_null(strstr(b.data, "\r\nBcc:"));
    assert_non_null(strstr(b.data, "X-Tollgate-Event-Id: evt_1\r\n"));
    assert_non_null(strstr(b.data, "Spend this month: $0.8005\r\n"));
    assert_non_null(strstr(b.data, "Monthly budget:   $1.00\r\n"));
    assert_non_null(strstr(b.data, "2026-01-01 00:00 UTC to 2026-02-01 00:00 UTC"));
    /* Headers end with one empty line before the body. */
    assert_non_null(strstr(b.data, "\r\n\r\nSpend of project prod"));
    tg_buf_deinit(&b);

    tg_buf_init(&b, 0);
    assert_int_equal(tg_notify_email_render("{\"type\":1}", "a@b", "c@d", &b), -7);
    assert_int_equal(tg_notify_email_render("not json", "a@b", "c@d", &b), -7);
    tg_buf_deinit(&b);
}

static void
email_for_an_increase_names_old_and_new_limits(void **state)
{
    const char *ev = "{\"id\":\"evt_2\",\"type\":\"budget.increased\",\"created_at\":1767312000,"
                     "\"data\":{\"scope\":\"organization\",\"id\":\"org-1\",\"name\":\"Default\","
                     "\"previous_limit_micros\":100000000,\"limit_micros\":150000000,"
                     "\"max_micros\":300000000,\"spend_micros\":90000000,"
                     "\"period_start\":1767225600,\"period_end\":1769904000}}";
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_notify_email_render(ev, "a@b", "c@d", &b), 0);
    assert_non_null(strstr(
        b.data, "Subject: [tollgate] organization Default: monthly budget raised to $150.00"));
    assert_non_null(strstr(b.data, "from $100.00 to $150.00 (ceiling $300.00)"));
    tg_buf_deinit(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(signature_matches_hmac_sha256_of_timestamp_dot_body),
        cmocka_unit_test(backoff_doubles_from_one_second_to_one_hour),
        cmocka_unit_test(thresholds_cross_exactly_at_their_share),
        cmocka_unit_test(auto_increase_steps_up_to_the_ceiling),
        cmocka_unit_test(forecast_projects_spend_to_the_period_end),
        cmocka_unit_test(email_has_headers_subject_and_amounts),
        cmocka_unit_test(email_for_an_increase_names_old_and_new_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
