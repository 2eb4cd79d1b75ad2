/*
 * monitor_test.c: the monitor's windows (monitor/monitor.h): counts per series and filter,
 * ranges cut to the buckets they cover, old buckets forgotten as the ring turns, the coarse
 * ring for ranges longer than an hour, percentiles from the histograms, quality counts only
 * for answers with a finish_reason, feedback, and the recent-request lookup.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "monitor/monitor.h"

#define T0 1767225600000LL /* 2026-01-01, a multiple of every bucket width */

static void
add(struct tg_monitor *m, const char *project, const char *model, int status, int64_t latency_ms,
    const char *finish, int64_t at_ms)
{
    struct tg_monitor_sample s = {
        .request_id = NULL,
        .org_id = "org-1",
        .project_id = project,
        .model = model,
        .provider = "up",
        .deployment = model,
        .status = status,
        .latency_ms = latency_ms,
        .ttft_ms = latency_ms / 2,
        .finish_reason = finish,
    };
    tg_monitor_add(m, &s, at_ms);
}

static void
counts_per_filter_and_range(void **state)
{
    (void)state;
    struct tg_monitor *m = tg_monitor_new();
    add(m, "p1", "a", 200, 100, "stop", T0 + 1000);
    add(m, "p1", "a", 502, 100, "", T0 + 2000);
    add(m, "p2", "a", 200, 100, "length", T0 + 15000);
    add(m, "p2", "b", 404, 100, "", T0 + 25000);

    struct tg_monitor_stats st;
    struct tg_monitor_filter all = {.org_id = "org-1"};
    assert_int_equal(tg_monitor_sum(m, &all, T0, T0 + 30000, &st), 3);
    assert_int_equal(st.requests, 4);
    assert_int_equal(st.errors, 1); /* 502; a 404 is the client's */
    assert_int_equal(st.ok, 2);     /* 2xx with a finish_reason */
    assert_int_equal(st.finish_length, 1);

    struct tg_monitor_filter model_a = {.org_id = "org-1", .model = "a"};
    tg_monitor_sum(m, &model_a, T0, T0 + 30000, &st);
    assert_int_equal(st.requests, 3);
    struct tg_monitor_filter p2a = {.org_id = "org-1", .project_id = "p2", .model = "a"};
    tg_monitor_sum(m, &p2a, T0, T0 + 30000, &st);
    assert_int_equal(st.requests, 1);
    struct tg_monitor_filter other = {.org_id = "org-2"};
    assert_int_equal(tg_monitor_sum(m, &other, T0, T0 + 30000, &st), 0);
    assert_int_equal(st.requests, 0);

    /* Counts only: the histograms stay empty. */
    struct tg_monitor_filter counts = {.org_id = "org-1", .is_counts_only = true};
    tg_monitor_sum(m, &counts, T0, T0 + 30000, &st);
    assert_int_equal(st.requests, 4);
    assert_true(tg_monitor_percentile(st.latency, 0.5) < 0);
    tg_monitor_sum(m, &all, T0, T0 + 30000, &st);
    assert_true(tg_monitor_percentile(st.latency, 0.5) > 75);

    /* 10-second buckets: [T0+10 s, T0+30 s) holds the last two only. */
    tg_monitor_sum(m, &all, T0 + 10000, T0 + 30000, &st);
    assert_int_equal(st.requests, 2);
    tg_monitor_free(m);
}

static void
old_buckets_are_forgotten(void **state)
{
    (void)state;
    struct tg_monitor *m = tg_monitor_new();
    struct tg_monitor_filter all = {.org_id = "org-1"};
    struct tg_monitor_stats st;
    add(m, "p1", "a", 500, 10, "", T0);
    /* An hour later the fine ring's slot of T0 is the one of the new bucket: a reader of that
     * bucket must not take T0's counts for it. */
    int64_t later = T0 + TG_MONITOR_FINE_MS * TG_MONITOR_FINE_N;
    tg_monitor_sum(m, &all, later, later + TG_MONITOR_FINE_MS, &st);
    assert_int_equal(st.requests, 0);
    /* A request then takes the slot over: T0's bucket is gone from the fine ring. */
    add(m, "p1", "a", 200, 10, "stop", later);
    tg_monitor_sum(m, &all, later, later + 1, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.errors, 0);
    tg_monitor_sum(m, &all, T0, T0 + TG_MONITOR_FINE_MS, &st);
    assert_int_equal(st.requests, 0);
    /* A range over both reads the coarse ring (longer than the fine one holds). */
    tg_monitor_sum(m, &all, T0, later + 1, &st);
    assert_int_equal(st.requests, 2);
    assert_int_equal(st.errors, 1);
    /* A day after T0 the coarse ring reuses T0's slot too. */
    int64_t next_day = T0 + TG_MONITOR_SPAN_MS;
    add(m, "p1", "a", 200, 10, "stop", next_day);
    tg_monitor_sum(m, &all, T0, next_day + 1, &st);
    assert_int_equal(st.requests, 2);
    assert_int_equal(st.errors, 0);
    tg_monitor_free(m);
}

static void
percentiles_from_histograms(void **state)
{
    (void)state;
    uint64_t bins[TG_MONITOR_N_BINS] = {0};
    assert_true(tg_monitor_percentile(bins, 0.95) < 0);
    /* 100 requests of 80 ms (the bin 75..100 ms) and none else: p50 and p95 in that bin. */
    int b = tg_monitor_bin(80);
    assert_int_equal(b, tg_monitor_bin(100));
    assert_int_not_equal(b, tg_monitor_bin(101));
    bins[b] = 100;
    double p50 = tg_monitor_percentile(bins, 0.5);
    double p95 = tg_monitor_percentile(bins, 0.95);
    assert_true(p50 >= 75 && p50 <= 100);
    assert_true(p95 >= p50 && p95 <= 100);
    /* 90 fast and 10 slow: p50 is fast, p95 is slow. */
    memset(bins, 0, sizeof(bins));
    bins[tg_monitor_bin(20)] = 90;
    bins[tg_monitor_bin(2000)] = 10;
    assert_true(tg_monitor_percentile(bins, 0.5) <= 20);
    assert_true(tg_monitor_percentile(bins, 0.95) > 1500);
    assert_true(tg_monitor_percentile(bins, 0.95) <= 2000);
    /* Beyond the last bound: the last bin. */
    assert_int_equal(tg_monitor_bin(10000000), TG_MONITOR_N_BINS - 1);
}

static void
feedback_and_recent_requests(void **state)
{
    (void)state;
    struct tg_monitor *m = tg_monitor_new();
    struct tg_monitor_sample s = {
        .request_id = "req_1",
        .org_id = "org-1",
        .project_id = "p1",
        .model = "gpt",
        .provider = "up",
        .deployment = "gpt-dep",
        .status = 200,
        .latency_ms = 5,
        .ttft_ms = -1,
        .finish_reason = "stop",
        .is_empty = true,
        .is_refusal = true,
    };
    tg_monitor_add(m, &s, T0);
    char model[96], provider[96], dep[96];
    assert_true(tg_monitor_recent_find(m, "req_1", "p1", model, provider, dep));
    assert_string_equal(model, "gpt");
    assert_string_equal(provider, "up");
    assert_string_equal(dep, "gpt-dep");
    assert_false(tg_monitor_recent_find(m, "req_1", "p2", model, provider, dep));
    assert_false(tg_monitor_recent_find(m, "req_2", "p1", model, provider, dep));

    struct tg_monitor_key k = {"org-1", "p1", "gpt", "up", "gpt-dep"};
    tg_monitor_add_feedback(m, &k, 0.25, T0 + 1);
    tg_monitor_add_feedback(m, &k, 0.75, T0 + 2);
    struct tg_monitor_stats st;
    struct tg_monitor_filter f = {.org_id = "org-1", .deployment = "gpt-dep"};
    tg_monitor_sum(m, &f, T0, T0 + 10, &st);
    assert_int_equal(st.feedback_count, 2);
    assert_true(fabs(st.feedback_sum - 1.0) < 1e-9);
    assert_int_equal(st.empty, 1);
    assert_int_equal(st.refusal, 1);
    /* No first byte: nothing in the TTFT histogram. */
    assert_true(tg_monitor_percentile(st.ttft, 0.5) < 0);
    tg_monitor_free(m);
}

static void
series_are_capped(void **state)
{
    (void)state;
    struct tg_monitor *m = tg_monitor_new();
    char model[32];
    for (int i = 0; i < TG_MONITOR_MAX_SERIES + 10; i++) {
        snprintf(model, sizeof(model), "m%d", i);
        add(m, "p1", model, 200, 1, "stop", T0);
    }
    struct tg_monitor_stats st;
    struct tg_monitor_filter all = {.org_id = "org-1"};
    assert_int_equal(tg_monitor_sum(m, &all, T0, T0 + 1, &st), TG_MONITOR_MAX_SERIES);
    assert_int_equal(st.requests, TG_MONITOR_MAX_SERIES);
    tg_monitor_free(m);
}

static void
long_names_share_one_series(void **state)
{
    (void)state;
    struct tg_monitor *m = tg_monitor_new();
    char model[200];
    memset(model, 'x', sizeof(model) - 1);
    model[sizeof(model) - 1] = '\0';
    for (int i = 0; i < 3; i++) {
        add(m, "p1", model, 200, 1, "stop", T0);
    }
    struct tg_monitor_stats st;
    struct tg_monitor_filter all = {.org_id = "org-1"};
    assert_int_equal(tg_monitor_sum(m, &all, T0, T0 + 1, &st), 1);
    assert_int_equal(st.requests, 3);
    tg_monitor_free(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counts_per_filter_and_range),
        cmocka_unit_test(old_buckets_are_forgotten),
        cmocka_unit_test(percentiles_from_histograms),
        cmocka_unit_test(feedback_and_recent_requests),
        cmocka_unit_test(series_are_capped),
        cmocka_unit_test(long_names_share_one_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
