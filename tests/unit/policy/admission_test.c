/*
 * admission_test.c: the local admission (admission_local.c): GCRA exactness for requests and
 * tokens per minute and per day, token refunds, all-or-nothing across key, project and
 * organization, budgets (reservation, settle, release, periods, seeded spend), calendar-month
 * math in several time zones, and exactness under concurrent admits, settles and releases.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/err.h"
#include "policy/admission.h"

#define T0 INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */
#define MIN_MS INT64_C(60000)
#define DAY_MS INT64_C(86400000)

static struct tg_admission *
make(int tz)
{
    struct tg_admission *a = NULL;
    assert_int_equal(tg_admission_local_new(tz, &a), 0);
    assert_non_null(a);
    assert_string_equal(a->ops->name, "local");
    return a;
}

/* A request of one key in one project of one organization, no limits set. */
static struct tg_admit_request
req(int64_t now, int64_t tokens, int64_t cost)
{
    struct tg_admit_request r;
    memset(&r, 0, sizeof(r));
    r.now_ms = now;
    r.model = "gpt-4o-mini";
    r.levels[TG_SCOPE_KEY].id = "key_1";
    r.levels[TG_SCOPE_PROJECT].id = "proj_1";
    r.levels[TG_SCOPE_ORG].id = "org_1";
    r.tokens = tokens;
    r.cost_bound_micros = cost;
    return r;
}

static struct tg_admit_result
admit(struct tg_admission *a, const struct tg_admit_request *r)
{
    struct tg_admit_result out;
    memset(&out, 0xa5, sizeof(out));
    assert_int_equal(a->ops->admit(a, r, &out), 0);
    return out;
}

static bool
admitted(struct tg_admission *a, const struct tg_admit_request *r)
{
    return admit(a, r).verdict == TG_ADMIT_OK;
}

/* Unix ms of a UTC calendar time. */
static int64_t
utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm) * 1000;
}

/* ---- rate limits ----------------------------------------------------------------------- */

static void
rpm_burst_then_retry_after_one_interval(void **state)
{
    struct tg_admission *a = make(0);
    struct tg_admit_request r = req(T0, 10, 0);
    r.levels[TG_SCOPE_KEY].all_models.rpm = 60;

    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OK);
    assert_int_equal(out.limit_requests, 60);
    assert_int_equal(out.remaining_requests, 59);
    assert_int_equal(out.reset_requests_ms, 1000);
    assert_int_equal(out.limit_tokens, -1); /* no token limit anywhere */
    assert_int_equal(out.remaining_tokens, -1);
    assert_int_equal(out.budget_remaining_micros, -1);
    for (int i = 1; i < 60; i++) {
        out = admit(a, &r);
        assert_int_equal(out.verdict, TG_ADMIT_OK);
    }
    assert_int_equal(out.remaining_requests, 0);
    assert_int_equal(out.reset_requests_ms, 60000);

    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_int_equal(out.scope, TG_SCOPE_KEY);
    assert_false(out.is_tokens);
    assert_false(out.is_daily);
    assert_false(out.is_model_limit);
    assert_false(out.is_too_large);
    assert_int_equal(out.limit, 60);
    assert_int_equal(out.retry_after_ms, 1000);
    assert_int_equal(out.remaining_requests, 0);

    /* One ms early is still refused, exactly on time is admitted. */
    r.now_ms = T0 + 999;
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_int_equal(out.retry_after_ms, 1);
    r.now_ms = T0 + 1000;
    assert_true(admitted(a, &r));
    assert_false(admitted(a, &r));
    a->ops->free(a);
}

static void
rpm_steady_rate_is_exact(void **state)
{
    /* rpm 7: the interval (8571.43 ms) is no whole number of ms. Polling every ms for seven
     * minutes admits the burst of 7 and then exactly one every 60000/7 ms: 49 more. */
    struct tg_admission *a = make(0);
    struct tg_admit_request r = req(T0, 0, 0);
    r.levels[TG_SCOPE_PROJECT].all_models.rpm = 7;
    int n = 0;
    int64_t last = 0;
    for (int64_t t = T0; t <= T0 + 7 * MIN_MS; t++) {
        r.now_ms = t;
        while (admitted(a, &r)) {
            n++;
            last = t;
        }
    }
    assert_int_equal(n, 7 + 49);
    assert_int_equal(last, T0 + 7 * MIN_MS);
    /* The 8th of the burst waits ceil(60000/7) ms. */
    struct tg_admission *b = make(0);
    r.now_ms = T0;
    for (int i = 0; i < 7; i++) {
        assert_true(admitted(b, &r));
    }
    struct tg_admit_result out = admit(b, &r);
    assert_int_equal(out.retry_after_ms, 8572);
    r.now_ms = T0 + 8571;
    assert_false(admitted(b, &r));
    r.now_ms = T0 + 8572;
    assert_true(admitted(b, &r));
    a->ops->free(a);
    b->ops->free(b);
}

static void
tpm_reservation_refund_and_overage(void **state)
{
    struct tg_admission *a = make(0);
    struct tg_admit_request r = req(T0, 400, 0);
    r.levels[TG_SCOPE_KEY].all_models.tpm = 1000;

    struct tg_admit_result first = admit(a, &r);
    assert_int_equal(first.verdict, TG_ADMIT_OK);
    assert_int_equal(first.limit_tokens, 1000);
    assert_int_equal(first.remaining_tokens, 600);
    assert_int_equal(first.reset_tokens_ms, 24000);
    struct tg_admit_result second = admit(a, &r);
    assert_int_equal(second.remaining_tokens, 200);

    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_true(out.is_tokens);
    assert_false(out.is_too_large);
    assert_int_equal(out.limit, 1000);
    assert_int_equal(out.retry_after_ms, 12000); /* 200 tokens at 60 ms each */

    /* The first used 100 of its 400: 300 come back, so a third 400 fits with 100 left. */
    a->ops->settle(a, first.reservation, 100, 0);
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OK);
    assert_int_equal(out.remaining_tokens, 100);

    /* The second used 700: 300 more are charged. */
    a->ops->settle(a, second.reservation, 700, 0);
    r.tokens = 1;
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_int_equal(out.retry_after_ms, 60000 * 200 / 1000 + 60);

    /* Larger than the whole limit: no wait helps. */
    r.now_ms = T0 + 10 * MIN_MS;
    r.tokens = 1001;
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_true(out.is_tokens);
    assert_true(out.is_too_large);
    assert_int_equal(out.retry_after_ms, 0);
    assert_int_equal(out.limit, 1000);
    assert_int_equal(out.remaining_tokens, 1000); /* nothing was charged */
    r.tokens = 1000;
    assert_true(admitted(a, &r));
    a->ops->free(a);
}

static void
refund_is_capped_by_what_has_drained(void **state)
{
    /* tpm 60 (one token a second). A reserves 60 at T0; B takes 30 at T0+30s. A then
     * settles at 0 tokens: had A cost 0, the counter would have been idle when B came, so
     * only 30 tokens are free now, not 60. */
    struct tg_admission *a = make(0);
    struct tg_admit_request r = req(T0, 60, 0);
    r.levels[TG_SCOPE_KEY].all_models.tpm = 60;
    struct tg_admit_result ra = admit(a, &r);
    assert_int_equal(ra.verdict, TG_ADMIT_OK);
    r.now_ms = T0 + 30000;
    r.tokens = 30;
    assert_true(admitted(a, &r));
    a->ops->settle(a, ra.reservation, 0, 0);
    r.tokens = 31;
    assert_false(admitted(a, &r));
    r.tokens = 30;
    assert_true(admitted(a, &r));
    a->ops->free(a);
}

static void
daily_windows(void **state)
{
    struct tg_admission *a = make(0);
    struct tg_admit_request r = req(T0, 500, 0);
    r.levels[TG_SCOPE_ORG].all_models.rpd = 3;
    r.levels[TG_SCOPE_ORG].all_models.tpd = 100000;
    for (int i = 0; i < 3; i++) {
        struct tg_admit_result out = admit(a, &r);
        assert_int_equal(out.verdict, TG_ADMIT_OK);
        /* Day limits are not in the per-minute headers. */
        assert_int_equal(out.limit_requests, -1);
        assert_int_equal(out.limit_tokens, -1);
    }
    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_true(out.is_daily);
    assert_false(out.is_tokens);
    assert_int_equal(out.scope, TG_SCOPE_ORG);
    assert_int_equal(out.retry_after_ms, DAY_MS / 3);
    r.now_ms = T0 + DAY_MS / 3 - 1;
    assert_false(admitted(a, &r));
    r.now_ms = T0 + DAY_MS / 3;
    assert_true(admitted(a, &r));

    /* Tokens per day: 100000 - 4 x 500 left; a request of exactly that fits, one more
     * token waits (DAY / 100000 = 864 ms a token). */
    struct tg_admission *b = make(0);
    struct tg_admit_request t = req(T0, 98000, 0);
    t.levels[TG_SCOPE_KEY].all_models.tpd = 100000;
    assert_true(admitted(b, &t));
    t.tokens = 2001;
    out = admit(b, &t);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_true(out.is_tokens);
    assert_true(out.is_daily);
    assert_int_equal(out.retry_after_ms, 864);
    t.tokens = 2000;
    assert_true(admitted(b, &t));
    a->ops->free(a);
    b->ops->free(b);
}

static void
model_limits_are_separate_counters(void **state)
{
    struct tg_admission *a = make(0);
    struct tg_admit_request r = req(T0, 0, 0);
    r.levels[TG_SCOPE_KEY].all_models.rpm = 10;
    r.levels[TG_SCOPE_KEY].model.rpm = 2;
    assert_true(admitted(a, &r));
    assert_true(admitted(a, &r));
    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_true(out.is_model_limit);
    assert_int_equal(out.limit, 2);
    /* The tightest per-minute counter is the model's, now empty. */
    assert_int_equal(out.limit_requests, 2);
    assert_int_equal(out.remaining_requests, 0);

    /* Another model (its own limit of 2) still has room; all-models then has 10-2-2. */
    r.model = "gpt-4o";
    assert_true(admitted(a, &r));
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OK);
    assert_int_equal(out.limit_requests, 2);
    assert_int_equal(out.remaining_requests, 0);
    r.levels[TG_SCOPE_KEY].model.rpm = 0;
    r.model = "o3";
    for (int i = 0; i < 6; i++) {
        assert_true(admitted(a, &r));
    }
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_false(out.is_model_limit);
    assert_int_equal(out.limit, 10);
    a->ops->free(a);
}

static void
three_levels_all_or_nothing(void **state)
{
    struct tg_admission *a = make(0);
    struct tg_admit_request r = req(T0, 100, 0);
    r.levels[TG_SCOPE_KEY].all_models.rpm = 8;
    r.levels[TG_SCOPE_PROJECT].all_models.rpm = 5;
    r.levels[TG_SCOPE_ORG].all_models.rpm = 9;
    r.levels[TG_SCOPE_KEY].all_models.tpm = 100000;
    r.levels[TG_SCOPE_ORG].all_models.tpm = 1000;
    for (int i = 0; i < 5; i++) {
        assert_true(admitted(a, &r));
    }
    for (int i = 0; i < 20; i++) {
        struct tg_admit_result out = admit(a, &r);
        assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
        assert_int_equal(out.scope, TG_SCOPE_PROJECT);
        assert_int_equal(out.limit, 5);
    }
    /* Lift the project's limit: the key has exactly 3 left, the org 4 (and 500 tokens). */
    r.levels[TG_SCOPE_PROJECT].all_models.rpm = 0;
    for (int i = 0; i < 3; i++) {
        assert_true(admitted(a, &r));
    }
    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.scope, TG_SCOPE_KEY);
    r.levels[TG_SCOPE_KEY].all_models.rpm = 0;
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OK);
    assert_int_equal(out.remaining_requests, 0);
    assert_int_equal(out.remaining_tokens, 100);
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_int_equal(out.scope, TG_SCOPE_ORG);
    assert_false(out.is_tokens);

    /* A budget refusal at the project charges no rate counter either. */
    struct tg_admission *b = make(0);
    struct tg_admit_request q = req(T0, 100, 600);
    q.levels[TG_SCOPE_KEY].all_models.rpm = 3;
    q.levels[TG_SCOPE_ORG].all_models.tpm = 300;
    q.levels[TG_SCOPE_PROJECT].budget_micros = 1000;
    q.levels[TG_SCOPE_ORG].budget_micros = 5000;
    assert_true(admitted(b, &q));
    for (int i = 0; i < 10; i++) {
        out = admit(b, &q);
        assert_int_equal(out.verdict, TG_ADMIT_OVER_BUDGET);
        assert_int_equal(out.scope, TG_SCOPE_PROJECT);
        assert_int_equal(out.limit, 1000);
    }
    assert_int_equal(b->ops->spend(b, TG_SCOPE_ORG, "org_1", T0), 600);
    assert_int_equal(b->ops->spend(b, TG_SCOPE_KEY, "key_1", T0), 600);
    q.levels[TG_SCOPE_PROJECT].budget_micros = 0;
    q.cost_bound_micros = 1;
    assert_true(admitted(b, &q));
    out = admit(b, &q);
    assert_int_equal(out.verdict, TG_ADMIT_OK);
    assert_int_equal(out.remaining_requests, 0);
    assert_int_equal(out.remaining_tokens, 0);
    assert_int_equal(b->ops->spend(b, TG_SCOPE_ORG, "org_1", T0), 602);
    a->ops->free(a);
    b->ops->free(b);
}

static void
release_gives_requests_and_tokens_back(void **state)
{
    struct tg_admission *a = make(0);
    struct tg_admit_request r = req(T0, 250, 10);
    r.levels[TG_SCOPE_KEY].all_models.rpm = 2;
    r.levels[TG_SCOPE_KEY].all_models.tpm = 500;
    r.levels[TG_SCOPE_KEY].budget_micros = 20;
    struct tg_admit_result x = admit(a, &r);
    struct tg_admit_result y = admit(a, &r);
    assert_int_equal(y.verdict, TG_ADMIT_OK);
    assert_int_equal(y.budget_remaining_micros, 0);
    assert_false(admitted(a, &r));
    a->ops->release(a, x.reservation);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_KEY, "key_1", T0), 10);
    struct tg_admit_result z = admit(a, &r);
    assert_int_equal(z.verdict, TG_ADMIT_OK);
    assert_int_equal(z.remaining_requests, 0);
    assert_int_equal(z.remaining_tokens, 0);
    /* A second release or settle of the same reservation changes nothing. */
    a->ops->release(a, x.reservation);
    a->ops->settle(a, x.reservation, 0, 0);
    a->ops->settle(a, 0, 0, 0);
    a->ops->settle(a, UINT64_MAX, 0, 0);
    assert_false(admitted(a, &r));
    assert_int_equal(a->ops->spend(a, TG_SCOPE_KEY, "key_1", T0), 20);
    a->ops->free(a);
}

/* ---- budgets --------------------------------------------------------------------------- */

static void
budget_reserve_settle_release(void **state)
{
    struct tg_admission *a = make(0);
    struct tg_admit_request r = req(T0, 0, 300);
    r.levels[TG_SCOPE_PROJECT].budget_micros = 1000;
    struct tg_admit_result x[3];
    for (int i = 0; i < 3; i++) {
        x[i] = admit(a, &r);
        assert_int_equal(x[i].verdict, TG_ADMIT_OK);
    }
    assert_int_equal(x[2].budget_remaining_micros, 100);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", T0), 900);
    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OVER_BUDGET);
    assert_int_equal(out.scope, TG_SCOPE_PROJECT);
    assert_int_equal(out.limit, 1000);
    assert_int_equal(out.budget_remaining_micros, 100);

    /* Settled lower: the difference is free again; exactly up to the limit. */
    a->ops->settle(a, x[0].reservation, 0, 100);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", T0), 700);
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OK);
    assert_int_equal(out.budget_remaining_micros, 0);
    r.cost_bound_micros = 0;
    assert_true(admitted(a, &r)); /* a zero bound fits a full budget */
    r.cost_bound_micros = 1;
    assert_false(admitted(a, &r));

    /* Settled higher (the bound was wrong): spend goes over and nothing more is admitted. */
    a->ops->settle(a, x[1].reservation, 0, 450);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", T0), 1150);
    r.cost_bound_micros = 0;
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OVER_BUDGET);
    assert_int_equal(out.budget_remaining_micros, 0);

    /* Released: the bound comes back whole. */
    a->ops->release(a, x[2].reservation);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", T0), 850);
    r.cost_bound_micros = 150;
    assert_true(admitted(a, &r));
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", T0), 1000);
    /* Other levels track spend without a budget; unknown ids spend nothing. */
    assert_int_equal(a->ops->spend(a, TG_SCOPE_ORG, "org_1", T0), 1000);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_ORG, "org_2", T0), 0);

    /* Negative usage is garbled: the reservation stands as the bill. */
    r.levels[TG_SCOPE_PROJECT].budget_micros = 0;
    r.cost_bound_micros = 70;
    out = admit(a, &r);
    a->ops->settle(a, out.reservation, -1, -5);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", T0), 1070);
    a->ops->free(a);
}

static void
budget_all_levels_and_period_boundary(void **state)
{
    struct tg_admission *a = make(0);
    int64_t jan_end = utc(2026, 1, 31, 23, 59, 59) + 999;
    int64_t feb = utc(2026, 2, 1, 0, 0, 0);
    struct tg_admit_request r = req(jan_end, 0, 600);
    r.levels[TG_SCOPE_KEY].budget_micros = 5000;
    r.levels[TG_SCOPE_ORG].budget_micros = 1000;
    struct tg_admit_result jan = admit(a, &r);
    assert_int_equal(jan.verdict, TG_ADMIT_OK);
    assert_int_equal(jan.budget_remaining_micros, 400);
    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OVER_BUDGET);
    assert_int_equal(out.scope, TG_SCOPE_ORG);

    /* February is a new period: the January reservation does not count in it. */
    r.now_ms = feb;
    struct tg_admit_result f = admit(a, &r);
    assert_int_equal(f.verdict, TG_ADMIT_OK);
    assert_int_equal(f.budget_remaining_micros, 400);
    /* Settled in February, billed in January. */
    a->ops->settle(a, jan.reservation, 0, 250);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_ORG, "org_1", jan_end), 250);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_ORG, "org_1", feb), 600);
    a->ops->settle(a, f.reservation, 0, 1000);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_ORG, "org_1", feb + 5 * DAY_MS), 1000);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_ORG, "org_1", jan_end - 20 * DAY_MS), 250);
    r.cost_bound_micros = 1;
    r.now_ms = feb + 27 * DAY_MS; /* Feb 28 */
    assert_false(admitted(a, &r));
    r.now_ms = utc(2026, 3, 1, 0, 0, 0);
    assert_true(admitted(a, &r));
    a->ops->free(a);
}

static void
seed_spend_counts_in_its_period(void **state)
{
    struct tg_admission *a = make(0);
    int64_t mid = utc(2026, 3, 15, 12, 0, 0);
    a->ops->seed_spend(a, TG_SCOPE_PROJECT, "proj_1", utc(2026, 3, 1, 0, 0, 0), 600);
    /* Any time inside the month seeds it; other months and levels are separate. */
    a->ops->seed_spend(a, TG_SCOPE_PROJECT, "proj_1", mid, 300);
    a->ops->seed_spend(a, TG_SCOPE_PROJECT, "proj_1", utc(2026, 2, 1, 0, 0, 0), 99999);
    a->ops->seed_spend(a, TG_SCOPE_PROJECT, "proj_2", mid, 99999);
    a->ops->seed_spend(a, TG_SCOPE_PROJECT, "proj_1", mid, -5); /* ignored */
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", mid), 900);
    struct tg_admit_request r = req(mid, 0, 200);
    r.levels[TG_SCOPE_PROJECT].budget_micros = 1000;
    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OVER_BUDGET);
    assert_int_equal(out.budget_remaining_micros, 100);
    r.cost_bound_micros = 100;
    assert_true(admitted(a, &r));
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", mid), 1000);
    a->ops->free(a);
}

/* ---- calendar months ------------------------------------------------------------------- */

static void
period_math_table(void **state)
{
    struct {
        int64_t t;
        int tz;
        int64_t start, next;
    } cases[] = {
        /* leap day, UTC */
        {utc(2024, 2, 29, 12, 0, 0), 0, utc(2024, 2, 1, 0, 0, 0), utc(2024, 3, 1, 0, 0, 0)},
        /* last ms of a non-leap February */
        {utc(2023, 3, 1, 0, 0, 0) - 1, 0, utc(2023, 2, 1, 0, 0, 0), utc(2023, 3, 1, 0, 0, 0)},
        /* exactly on the boundary */
        {utc(2023, 3, 1, 0, 0, 0), 0, utc(2023, 3, 1, 0, 0, 0), utc(2023, 4, 1, 0, 0, 0)},
        /* Dec -> Jan in UTC, and already January one hour east */
        {utc(2023, 12, 31, 23, 30, 0), 0, utc(2023, 12, 1, 0, 0, 0), utc(2024, 1, 1, 0, 0, 0)},
        {utc(2023, 12, 31, 23, 30, 0), 60, utc(2023, 12, 31, 23, 0, 0), utc(2024, 1, 31, 23, 0, 0)},
        /* still Feb 29 five hours west */
        {utc(2024, 3, 1, 2, 0, 0), -300, utc(2024, 2, 1, 5, 0, 0), utc(2024, 3, 1, 5, 0, 0)},
        /* half-hour zone: local Dec 1 05:29 */
        {utc(2024, 11, 30, 23, 59, 0), 330, utc(2024, 11, 30, 18, 30, 0),
         utc(2024, 12, 31, 18, 30, 0)},
        /* the extreme zones */
        {utc(2025, 6, 30, 10, 0, 0), 840, utc(2025, 6, 30, 10, 0, 0), utc(2025, 7, 31, 10, 0, 0)},
        {utc(2025, 7, 1, 11, 59, 0), -720, utc(2025, 6, 1, 12, 0, 0), utc(2025, 7, 1, 12, 0, 0)},
        /* centuries: 2100 is no leap year, 2000 is */
        {utc(2100, 2, 28, 12, 0, 0), 0, utc(2100, 2, 1, 0, 0, 0), utc(2100, 3, 1, 0, 0, 0)},
        {utc(2000, 2, 29, 23, 59, 59), 0, utc(2000, 2, 1, 0, 0, 0), utc(2000, 3, 1, 0, 0, 0)},
        /* 31-day and 30-day months */
        {utc(2026, 1, 31, 0, 0, 0), 0, utc(2026, 1, 1, 0, 0, 0), utc(2026, 2, 1, 0, 0, 0)},
        {utc(2026, 4, 30, 23, 0, 0), 0, utc(2026, 4, 1, 0, 0, 0), utc(2026, 5, 1, 0, 0, 0)},
        /* before the epoch */
        {utc(1969, 12, 31, 23, 0, 0), 0, utc(1969, 12, 1, 0, 0, 0), utc(1970, 1, 1, 0, 0, 0)},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t s = tg_period_start_ms(cases[i].t, cases[i].tz);
        int64_t n = tg_period_next_ms(cases[i].t, cases[i].tz);
        if (s != cases[i].start || n != cases[i].next) {
            fail_msg("case %zu: start %lld (want %lld) next %lld (want %lld)", i, (long long)s,
                     (long long)cases[i].start, (long long)n, (long long)cases[i].next);
        }
    }
    /* Every day of a leap and a common year, in a zone east and west: months tile time. */
    for (int tz = -600; tz <= 600; tz += 525) {
        for (int64_t t = utc(2023, 1, 1, 0, 0, 0); t < utc(2025, 1, 1, 0, 0, 0); t += DAY_MS) {
            int64_t s = tg_period_start_ms(t, tz), n = tg_period_next_ms(t, tz);
            assert_true(s <= t && t < n);
            assert_int_equal(tg_period_start_ms(n, tz), n);
            assert_int_equal(tg_period_next_ms(s - 1, tz), s);
            int64_t days = (n - s) / DAY_MS;
            assert_true(days >= 28 && days <= 31);
        }
    }

    assert_string_equal(tg_scope_name(TG_SCOPE_KEY), "key");
    assert_string_equal(tg_scope_name(TG_SCOPE_PROJECT), "project");
    assert_string_equal(tg_scope_name(TG_SCOPE_ORG), "organization");
}

static void
tz_offset_moves_the_budget_period(void **state)
{
    /* UTC+2: March starts at 2026-02-28T22:00Z. */
    struct tg_admission *a = make(120);
    int64_t t = utc(2026, 2, 28, 22, 0, 0);
    struct tg_admit_request r = req(t - 2 * 3600 * 1000, 0, 700);
    r.levels[TG_SCOPE_ORG].budget_micros = 1000;
    assert_true(admitted(a, &r));
    r.now_ms = t - 1;
    assert_false(admitted(a, &r));
    r.now_ms = t;
    assert_true(admitted(a, &r));
    a->ops->free(a);

    struct tg_admission *b = NULL;
    assert_int_equal(tg_admission_local_new(19 * 60, &b), TG_EINVAL);
    assert_int_equal(tg_admission_local_new(-19 * 60, &b), TG_EINVAL);
}

/* ---- bad input and memory -------------------------------------------------------------- */

static void
bad_requests_are_refused(void **state)
{
    struct tg_admission *a = make(0);
    struct tg_admit_result out;
    struct tg_admit_request r = req(T0, 10, 10);
    r.levels[TG_SCOPE_PROJECT].all_models.tpm = -1;
    assert_int_equal(a->ops->admit(a, &r, &out), TG_EINVAL);
    r = req(T0, -1, 0);
    assert_int_equal(a->ops->admit(a, &r, &out), TG_EINVAL);
    r = req(T0, 0, -1);
    assert_int_equal(a->ops->admit(a, &r, &out), TG_EINVAL);
    r = req(T0, 0, 0);
    r.levels[TG_SCOPE_KEY].budget_micros = -5;
    assert_int_equal(a->ops->admit(a, &r, &out), TG_EINVAL);
    /* An id too long for a counter key. */
    char long_id[1024];
    memset(long_id, 'k', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    r = req(T0, 0, 0);
    r.levels[TG_SCOPE_KEY].id = long_id;
    assert_int_equal(a->ops->admit(a, &r, &out), TG_EINVAL);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_KEY, long_id, T0), 0);

    /* Absurd limits count as TG_RATE_LIMIT_MAX; huge costs stay exact at that limit. */
    r = req(T0, TG_RATE_LIMIT_MAX, 0);
    r.levels[TG_SCOPE_KEY].all_models.tpd = INT64_MAX;
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OK);
    r.tokens = 1;
    out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_int_equal(out.limit, TG_RATE_LIMIT_MAX);
    assert_int_equal(out.retry_after_ms, 1); /* 0.000864 ms a token, rounded up */

    /* Levels without an id are skipped whatever their limits. */
    r = req(T0, 0, 0);
    r.levels[TG_SCOPE_ORG].id = NULL;
    r.levels[TG_SCOPE_ORG].all_models.rpm = -3;
    r.levels[TG_SCOPE_ORG].budget_micros = 1;
    r.cost_bound_micros = 2;
    r.model = NULL;
    assert_true(admitted(a, &r));
    a->ops->free(a);
}

static void
pending_reservations_survive_the_sweep(void **state)
{
    /* Thousands of keys, each admitted once and left pending while time moves on and the
     * sweep runs over the whole table; the late settles must find their counters. */
    enum { N = 3000 };
    struct tg_admission *a = make(0);
    static uint64_t resv[N];
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "key_%d", i);
        struct tg_admit_request r = req(T0, 100, 10);
        r.levels[TG_SCOPE_KEY].id = id;
        r.levels[TG_SCOPE_KEY].all_models.rpm = 1;
        r.levels[TG_SCOPE_KEY].all_models.tpm = 100;
        r.levels[TG_SCOPE_KEY].budget_micros = 10;
        struct tg_admit_result out = admit(a, &r);
        assert_int_equal(out.verdict, TG_ADMIT_OK);
        resv[i] = out.reservation;
    }
    /* Two days later every rate counter is idle; many admits sweep every bucket. */
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof(id), "other_%d", i % 50);
        struct tg_admit_request r = req(T0 + 2 * DAY_MS + i, 0, 0);
        r.levels[TG_SCOPE_KEY].id = id;
        r.levels[TG_SCOPE_KEY].all_models.rpm = 1000000;
        assert_true(admitted(a, &r));
    }
    for (int i = 0; i < N; i++) {
        a->ops->settle(a, resv[i], 50, 4);
    }
    snprintf(id, sizeof(id), "key_%d", N - 1);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_KEY, id, T0), 4);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", T0), 4 * N);
    /* An idle key starts over with its whole limit. */
    struct tg_admit_request r = req(T0 + 3 * DAY_MS, 100, 0);
    r.levels[TG_SCOPE_KEY].id = "key_0";
    r.levels[TG_SCOPE_KEY].all_models.rpm = 1;
    r.levels[TG_SCOPE_KEY].all_models.tpm = 100;
    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_OK);
    assert_int_equal(out.remaining_requests, 0);
    assert_int_equal(out.remaining_tokens, 0);
    a->ops->free(a);
}

/* ---- concurrency ----------------------------------------------------------------------- */

enum { N_THREADS = 8, N_ITER = 10000 };

struct worker {
    pthread_t th;
    struct tg_admission *a;
    int mode; /* 0: admit only; 1: admit, then settle or release */
    int index;
    int64_t admitted;
    int64_t settled_micros;
    int64_t refused_rate;
    int64_t released;
};

static void *
work(void *arg)
{
    struct worker *w = arg;
    char key[16];
    snprintf(key, sizeof(key), "key_%d", w->index);
    for (int i = 0; i < N_ITER; i++) {
        struct tg_admit_request r = req(T0, 10, 7);
        r.levels[TG_SCOPE_KEY].id = key;
        r.levels[TG_SCOPE_ORG].budget_micros = 7000;
        if (w->mode == 1) {
            r.levels[TG_SCOPE_ORG].budget_micros = 0;
            r.levels[TG_SCOPE_PROJECT].all_models.rpm = 5000;
            r.levels[TG_SCOPE_PROJECT].all_models.tpm = 1000000000;
            r.cost_bound_micros = 100;
        }
        struct tg_admit_result out;
        if (w->a->ops->admit(w->a, &r, &out) != 0) {
            return "admit failed";
        }
        if (out.verdict == TG_ADMIT_RATE_LIMITED) {
            w->refused_rate++;
        }
        if (out.verdict != TG_ADMIT_OK) {
            continue;
        }
        w->admitted++;
        if (w->mode == 1) {
            if (i % 3 == 0) {
                w->a->ops->release(w->a, out.reservation);
                w->released++;
            } else {
                int64_t cost = (i * 7 + w->index) % 100;
                w->a->ops->settle(w->a, out.reservation, i % 11, cost);
                w->settled_micros += cost;
            }
        }
    }
    return NULL;
}

static void
run_workers(struct tg_admission *a, int mode, struct worker *w)
{
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker){.a = a, .mode = mode, .index = i};
        assert_int_equal(pthread_create(&w[i].th, NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(w[i].th, &ret), 0);
        assert_null(ret);
    }
}

static void
concurrent_admits_fill_the_budget_exactly(void **state)
{
    struct tg_admission *a = make(0);
    struct worker w[N_THREADS];
    run_workers(a, 0, w);
    int64_t n = 0;
    for (int i = 0; i < N_THREADS; i++) {
        n += w[i].admitted;
    }
    assert_int_equal(n, 1000);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_ORG, "org_1", T0), 1000 * 7);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", T0), 1000 * 7);
    a->ops->free(a);
}

static void
concurrent_settle_and_release(void **state)
{
    /* Project rpm 5000 at one instant: at most 5000 are held whatever the interleaving (a
     * release gives its request back, so more may follow); spend ends as the sum of what was
     * settled. */
    struct tg_admission *a = make(0);
    struct worker w[N_THREADS];
    run_workers(a, 1, w);
    int64_t n = 0, settled = 0, refused = 0, released = 0;
    for (int i = 0; i < N_THREADS; i++) {
        n += w[i].admitted;
        settled += w[i].settled_micros;
        refused += w[i].refused_rate;
        released += w[i].released;
    }
    assert_int_equal(n + refused, N_THREADS * N_ITER);
    assert_true(n >= 5000);
    assert_true(n - released <= 5000);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_PROJECT, "proj_1", T0), settled);
    assert_int_equal(a->ops->spend(a, TG_SCOPE_ORG, "org_1", T0), settled);
    int64_t per_key = 0;
    for (int i = 0; i < N_THREADS; i++) {
        char key[16];
        snprintf(key, sizeof(key), "key_%d", i);
        assert_int_equal(a->ops->spend(a, TG_SCOPE_KEY, key, T0), w[i].settled_micros);
        per_key += w[i].settled_micros;
    }
    assert_int_equal(per_key, settled);
    /* Every release gave exactly its request back: what is free is 5000 minus those held. */
    struct tg_admit_request r = req(T0, 0, 0);
    r.levels[TG_SCOPE_PROJECT].all_models.rpm = 5000;
    for (int64_t i = 0; i < 5000 - (n - released); i++) {
        assert_true(admitted(a, &r));
    }
    struct tg_admit_result out = admit(a, &r);
    assert_int_equal(out.verdict, TG_ADMIT_RATE_LIMITED);
    assert_int_equal(out.retry_after_ms, 12); /* 60000 / 5000 */
    a->ops->free(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rpm_burst_then_retry_after_one_interval),
        cmocka_unit_test(rpm_steady_rate_is_exact),
        cmocka_unit_test(tpm_reservation_refund_and_overage),
        cmocka_unit_test(refund_is_capped_by_what_has_drained),
        cmocka_unit_test(daily_windows),
        cmocka_unit_test(model_limits_are_separate_counters),
        cmocka_unit_test(three_levels_all_or_nothing),
        cmocka_unit_test(release_gives_requests_and_tokens_back),
        cmocka_unit_test(budget_reserve_settle_release),
        cmocka_unit_test(budget_all_levels_and_period_boundary),
        cmocka_unit_test(seed_spend_counts_in_its_period),
        cmocka_unit_test(period_math_table),
        cmocka_unit_test(tz_offset_moves_the_budget_period),
        cmocka_unit_test(bad_requests_are_refused),
        cmocka_unit_test(pending_reservations_survive_the_sweep),
        cmocka_unit_test(concurrent_admits_fill_the_budget_exactly),
        cmocka_unit_test(concurrent_settle_and_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
