/* router_test.c: each strategy's choice and spread, priority tiers, the exclude set, the
 * circuit breaker's closed/open/half-open transitions and the 429 cooldown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy/router.h"

static const struct tg_breaker_conf breaker = {
    .failures = 3, .error_rate_pct = 50, .window_ms = 1000, .open_ms = 500};

static struct tg_router *
make(enum tg_route_strategy s, const uint32_t *weights, const int32_t *prio, size_t n)
{
    struct tg_router_deployment_conf d[8];
    for (size_t i = 0; i < n; i++) {
        d[i].provider = i % 2 ? "b" : "a";
        d[i].upstream_model = "m";
        d[i].weight = weights[i];
        d[i].priority = prio ? prio[i] : 0;
        d[i].unavailable = NULL;
    }
    struct tg_router *r = tg_router_new(d, n, s, &breaker);
    assert_non_null(r);
    return r;
}

/* A small LCG: deterministic, spread enough for distribution checks. */
static uint64_t
next_rnd(uint64_t *x)
{
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return *x >> 17;
}

static void
weighted_spreads_by_weight(void **state)
{
    uint32_t w[2] = {3, 1};
    struct tg_router *r = make(TG_ROUTE_WEIGHTED, w, NULL, 2);
    int count[2] = {0, 0};
    uint64_t x = 42;
    for (int k = 0; k < 4000; k++) {
        int i = tg_router_pick(r, 0, 10, next_rnd(&x));
        assert_true(i == 0 || i == 1);
        count[i]++;
        tg_router_record(r, i, TG_ROUTE_OK, 5, 0, 10);
    }
    /* 3:1 expected, i.e. 3000 / 1000; allow a wide margin for the generator. */
    assert_in_range(count[0], 2700, 3300);
    assert_in_range(count[1], 700, 1300);
    tg_router_free(r);
}

static void
least_outstanding_takes_the_idlest(void **state)
{
    uint32_t w[3] = {1, 1, 1};
    struct tg_router *r = make(TG_ROUTE_LEAST_OUTSTANDING, w, NULL, 3);
    int a = tg_router_pick(r, 0, 10, 0);
    int b = tg_router_pick(r, 0, 10, 0);
    int c = tg_router_pick(r, 0, 10, 0);
    /* Three picks in flight land on three different deployments. */
    assert_true(a != b && b != c && a != c);
    tg_router_record(r, b, TG_ROUTE_OK, -1, 0, 10);
    assert_int_equal(tg_router_pick(r, 0, 10, 7), b);
    struct tg_deployment_view v;
    tg_router_view(r, (size_t)b, 10, &v);
    assert_int_equal(v.outstanding, 1);
    tg_router_free(r);
}

static void
lowest_latency_measures_then_prefers_fastest(void **state)
{
    uint32_t w[2] = {1, 1};
    struct tg_router *r = make(TG_ROUTE_LOWEST_LATENCY, w, NULL, 2);
    /* Unmeasured deployments go first, so both get measured. */
    int a = tg_router_pick(r, 0, 10, 0);
    tg_router_record(r, a, TG_ROUTE_OK, 200, 0, 10);
    int b = tg_router_pick(r, 0, 10, 0);
    assert_int_not_equal(a, b);
    tg_router_record(r, b, TG_ROUTE_OK, 20, 0, 10);
    for (uint64_t k = 0; k < 10; k++) {
        int i = tg_router_pick(r, 0, 10, k);
        assert_int_equal(i, b);
        tg_router_record(r, i, TG_ROUTE_OK, 20, 0, 10);
    }
    /* The EWMA moves toward new samples: b slows down until a is faster. */
    for (int k = 0; k < 20; k++) {
        tg_router_record(r, tg_router_pick(r, 1u << a, 10, 0), TG_ROUTE_OK, 1000, 0, 10);
    }
    struct tg_deployment_view v;
    tg_router_view(r, (size_t)b, 10, &v);
    assert_true(v.ewma_ttft_ms > 200);
    assert_int_equal(tg_router_pick(r, 0, 10, 0), a);
    tg_router_free(r);
}

static void
priority_tiers_and_exclusion(void **state)
{
    uint32_t w[3] = {1, 100, 1};
    int32_t p[3] = {0, 1, 0};
    struct tg_router *r = make(TG_ROUTE_WEIGHTED, w, p, 3);
    uint64_t x = 1;
    for (int k = 0; k < 200; k++) {
        int i = tg_router_pick(r, 0, 10, next_rnd(&x));
        assert_int_not_equal(i, 1); /* tier 1 serves only when tier 0 cannot */
        tg_router_record(r, i, TG_ROUTE_OK, -1, 0, 10);
    }
    assert_int_equal(tg_router_pick(r, 1u | 4u, 10, 5), 1);
    tg_router_record(r, 1, TG_ROUTE_OK, -1, 0, 10);
    assert_int_equal(tg_router_pick(r, 7u, 10, 5), -1);
    tg_router_free(r);
}

static void
breaker_opens_half_opens_and_closes(void **state)
{
    uint32_t w[2] = {1, 1};
    struct tg_router *r = make(TG_ROUTE_WEIGHTED, w, NULL, 2);
    struct tg_deployment_view v;
    /* Two failures are not enough (failures: 3). */
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tg_router_pick(r, 2, 100, 0), 0);
        tg_router_record(r, 0, TG_ROUTE_FAILED, -1, 0, 100);
    }
    tg_router_view(r, 0, 100, &v);
    assert_int_equal(v.breaker, TG_BREAKER_CLOSED);
    assert_int_equal(tg_router_pick(r, 2, 100, 0), 0);
    tg_router_record(r, 0, TG_ROUTE_FAILED, -1, 0, 100);
    tg_router_view(r, 0, 100, &v);
    assert_int_equal(v.breaker, TG_BREAKER_OPEN);
    assert_string_equal(tg_breaker_state_name(v.breaker), "open");
    /* Open: never picked, even when it is the only one left. */
    for (uint64_t k = 0; k < 20; k++) {
        int i = tg_router_pick(r, 0, 300, k);
        assert_int_equal(i, 1);
        tg_router_record(r, i, TG_ROUTE_OK, -1, 0, 300);
    }
    assert_int_equal(tg_router_pick(r, 2, 599, 0), -1);
    /* After open_ms: half-open, one probe at a time. */
    tg_router_view(r, 0, 600, &v);
    assert_int_equal(v.breaker, TG_BREAKER_HALF_OPEN);
    assert_int_equal(tg_router_pick(r, 2, 600, 0), 0);
    assert_int_equal(tg_router_pick(r, 2, 600, 0), -1);
    /* The probe fails: open again for open_ms. */
    tg_router_record(r, 0, TG_ROUTE_FAILED, -1, 0, 610);
    tg_router_view(r, 0, 610, &v);
    assert_int_equal(v.breaker, TG_BREAKER_OPEN);
    assert_int_equal(tg_router_pick(r, 2, 1000, 0), -1);
    /* The next probe succeeds: closed. */
    assert_int_equal(tg_router_pick(r, 2, 1110, 0), 0);
    tg_router_record(r, 0, TG_ROUTE_OK, 5, 0, 1120);
    tg_router_view(r, 0, 1120, &v);
    assert_int_equal(v.breaker, TG_BREAKER_CLOSED);
    assert_int_equal(v.window_failures, 0);
    assert_int_equal(tg_router_pick(r, 2, 1120, 0), 0);
    tg_router_record(r, 0, TG_ROUTE_OK, 5, 0, 1120);
    tg_router_free(r);
}

static void
breaker_needs_the_error_rate_and_window(void **state)
{
    uint32_t w[1] = {1};
    struct tg_router *r = make(TG_ROUTE_WEIGHTED, w, NULL, 1);
    struct tg_deployment_view v;
    /* 4 successes then 3 failures: 3/7 < 50%, stays closed. */
    for (int k = 0; k < 7; k++) {
        tg_router_record(r, tg_router_pick(r, 0, 10, 0), k < 4 ? TG_ROUTE_OK : TG_ROUTE_FAILED, -1,
                         0, 10);
    }
    tg_router_view(r, 0, 10, &v);
    assert_int_equal(v.breaker, TG_BREAKER_CLOSED);
    assert_int_equal(v.window_calls, 7);
    /* The window ends: old failures are forgotten. */
    for (int k = 0; k < 2; k++) {
        tg_router_record(r, tg_router_pick(r, 0, 2000, 0), TG_ROUTE_FAILED, -1, 0, 2000);
    }
    tg_router_view(r, 0, 2000, &v);
    assert_int_equal(v.breaker, TG_BREAKER_CLOSED);
    assert_int_equal(v.window_failures, 2);
    tg_router_record(r, tg_router_pick(r, 0, 2000, 0), TG_ROUTE_FAILED, -1, 0, 2000);
    tg_router_view(r, 0, 2000, &v);
    assert_int_equal(v.breaker, TG_BREAKER_OPEN);
    tg_router_free(r);
}

static void
throttled_cools_down_until_retry_after(void **state)
{
    uint32_t w[2] = {1, 1};
    struct tg_router *r = make(TG_ROUTE_WEIGHTED, w, NULL, 2);
    assert_int_equal(tg_router_pick(r, 2, 100, 0), 0);
    tg_router_record(r, 0, TG_ROUTE_THROTTLED, -1, 2000, 100);
    struct tg_deployment_view v;
    tg_router_view(r, 0, 100, &v);
    assert_int_equal(v.cooldown_until_ms, 2100);
    assert_int_equal(v.breaker, TG_BREAKER_CLOSED); /* a 429 is not a failure */
    assert_int_equal(tg_router_pick(r, 2, 2099, 0), -1);
    assert_int_equal(tg_router_pick(r, 0, 2099, 0), 1);
    tg_router_record(r, 1, TG_ROUTE_THROTTLED, -1, 0, 2099);
    tg_router_view(r, 1, 2099, &v);
    assert_int_equal(v.cooldown_until_ms, 2099 + TG_ROUTER_COOLDOWN_MS);
    assert_int_equal(tg_router_pick(r, 2, 2100, 0), 0);
    tg_router_record(r, 0, TG_ROUTE_ABANDONED, -1, 0, 2100);
    tg_router_view(r, 0, 2100, &v);
    assert_int_equal(v.outstanding, 0);
    tg_router_free(r);
}

static void
breaker_with_zero_failures_never_opens(void **state)
{
    struct tg_router_deployment_conf d = {"a", "m", 1, 0, NULL};
    struct tg_breaker_conf off = {0, 50, 1000, 500};
    struct tg_router *r = tg_router_new(&d, 1, TG_ROUTE_WEIGHTED, &off);
    for (int k = 0; k < 20; k++) {
        assert_int_equal(tg_router_pick(r, 0, 10, 0), 0);
        tg_router_record(r, 0, TG_ROUTE_FAILED, -1, 0, 10);
    }
    struct tg_deployment_view v;
    tg_router_view(r, 0, 10, &v);
    assert_int_equal(v.breaker, TG_BREAKER_CLOSED);
    assert_int_equal(v.window_failures, 20);
    tg_router_free(r);
}

/* A deployment whose provider's key was missing at start is never picked, whatever its
 * weight or tier; the view and tg_router_unavailable say why; all-unavailable picks -1. */
static void
unavailable_is_never_picked(void **state)
{
    struct tg_router_deployment_conf d[2] = {
        {"azure-eu", "m", 1000, 0, "provider 'azure-eu': environment variable K is not set"},
        {"openai", "m", 1, 1, NULL},
    };
    struct tg_router *r = tg_router_new(d, 2, TG_ROUTE_WEIGHTED, &breaker);
    uint64_t x = 1;
    for (int k = 0; k < 50; k++) {
        int i = tg_router_pick(r, 0, 10, next_rnd(&x));
        assert_int_equal(i, 1);
        tg_router_record(r, i, TG_ROUTE_OK, 5, 0, 10);
    }
    assert_int_equal(tg_router_pick(r, UINT64_C(1) << 1, 10, 0), -1);
    struct tg_deployment_view v;
    tg_router_view(r, 0, 10, &v);
    assert_string_equal(v.unavailable, "provider 'azure-eu': environment variable K is not set");
    assert_string_equal(tg_router_unavailable(r, 0), v.unavailable);
    assert_null(tg_router_unavailable(r, 1));
    assert_null(tg_router_unavailable(r, 2));
    tg_router_free(r);

    struct tg_router *all = tg_router_new(d, 1, TG_ROUTE_LEAST_OUTSTANDING, &breaker);
    assert_int_equal(tg_router_pick(all, 0, 10, 0), -1);
    tg_router_free(all);
}

static void
names_and_bounds(void **state)
{
    enum tg_route_strategy s;
    assert_true(tg_route_strategy_parse("least_outstanding", &s));
    assert_int_equal(s, TG_ROUTE_LEAST_OUTSTANDING);
    assert_true(tg_route_strategy_parse("lowest_latency", &s));
    assert_string_equal(tg_route_strategy_name(s), "lowest_latency");
    assert_false(tg_route_strategy_parse("random", &s));
    assert_null(tg_router_new(NULL, 0, TG_ROUTE_WEIGHTED, &breaker));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(weighted_spreads_by_weight),
        cmocka_unit_test(least_outstanding_takes_the_idlest),
        cmocka_unit_test(lowest_latency_measures_then_prefers_fastest),
        cmocka_unit_test(priority_tiers_and_exclusion),
        cmocka_unit_test(breaker_opens_half_opens_and_closes),
        cmocka_unit_test(breaker_needs_the_error_rate_and_window),
        cmocka_unit_test(throttled_cools_down_until_retry_after),
        cmocka_unit_test(breaker_with_zero_failures_never_opens),
        cmocka_unit_test(unavailable_is_never_picked),
        cmocka_unit_test(names_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
