/*
 * quota_test.c: the inference path's limits arithmetic and wording (gateway/quota.h):
 * OpenAI's duration format, USD text, the prompt measures, the cost bound, the largest
 * affordable output cap, and the 429 messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "gateway/quota.h"

static void
durations_as_openai_writes_them(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {0, "0ms"},       {20, "20ms"},          {999, "999ms"},      {1000, "1s"},
        {17500, "17.5s"}, {1250, "1.25s"},       {2001, "2.001s"},    {60000, "1m0s"},
        {360000, "6m0s"}, {83000, "1m23s"},      {3600000, "1h0m0s"}, {3723000, "1h2m3s"},
        {-5, "0ms"},      {86400000, "24h0m0s"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[32];
        tg_quota_duration(cases[i].ms, out, sizeof(out));
        assert_string_equal(out, cases[i].want);
    }
}

static void
usd_keeps_two_places_at_least(void **state)
{
    (void)state;
    char out[32];
    tg_quota_usd(100000000, out, sizeof(out));
    assert_string_equal(out, "$100.00");
    tg_quota_usd(150, out, sizeof(out));
    assert_string_equal(out, "$0.00015");
    tg_quota_usd(1234567, out, sizeof(out));
    assert_string_equal(out, "$1.234567");
    tg_quota_usd(500000, out, sizeof(out));
    assert_string_equal(out, "$0.50");
}

static void
text_chars_of_request_shapes(void **state)
{
    (void)state;
    /* Chat: string content and text parts; roles and image URLs do not count. */
    json_t *msgs =
        json_loads("[{\"role\":\"system\",\"content\":\"abcd\"},"
                   "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"héllo\"},"
                   "{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y.png\"}}]}]",
                   0, NULL);
    assert_non_null(msgs);
    assert_int_equal(tg_quota_text_chars(msgs), 4 + 5);
    json_decref(msgs);
    /* Completions prompt as token ids: 4 characters (one token) each. */
    json_t *ids = json_loads("[1, 2, 3]", 0, NULL);
    assert_int_equal(tg_quota_text_chars(ids), 12);
    json_decref(ids);
    /* Responses items. */
    json_t *items = json_loads("[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
                               "\"text\":\"12345678\"}]}]",
                               0, NULL);
    assert_int_equal(tg_quota_text_chars(items), 8);
    json_decref(items);
    assert_int_equal(tg_quota_text_chars(NULL), 0);
    assert_int_equal(tg_quota_prompt_tokens(0), 0);
    assert_int_equal(tg_quota_prompt_tokens(1), 1);
    assert_int_equal(tg_quota_prompt_tokens(8), 2);
    assert_int_equal(tg_quota_prompt_tokens(9), 3);
}

static void
cost_bound_and_affordable_cap(void **state)
{
    (void)state;
    /* $1.5 in, $6 out per 1M tokens. */
    struct tg_price p = {"m", 1500000, 750000, 6000000};
    /* 100 prompt tokens: 150 micros; 50 completion: 300 micros. */
    assert_int_equal(tg_quota_cost_bound(&p, 100, 50), 450);
    assert_int_equal(tg_quota_cost_bound(NULL, 100, 50), 0);
    /* Remaining 450: with n = 1 the cap is 50; with n = 2, 25. */
    assert_int_equal(tg_quota_affordable_max_tokens(&p, 100, 1, 4096, 450), 50);
    assert_int_equal(tg_quota_affordable_max_tokens(&p, 100, 2, 4096, 450), 25);
    /* Never above the asked cap. */
    assert_int_equal(tg_quota_affordable_max_tokens(&p, 100, 1, 10, 450), 10);
    /* The prompt alone does not fit: 0. */
    assert_int_equal(tg_quota_affordable_max_tokens(&p, 100, 1, 4096, 149), 0);
    /* Every answer is the largest that fits (rounding up per request). */
    for (int64_t rem = 150; rem < 2000; rem += 37) {
        int64_t k = tg_quota_affordable_max_tokens(&p, 100, 3, 100000, rem);
        assert_true(tg_quota_cost_bound(&p, 100, k * 3) <= rem);
        assert_true(tg_quota_cost_bound(&p, 100, (k + 1) * 3) > rem);
    }
}

static void
rate_messages_name_level_and_limit(void **state)
{
    (void)state;
    struct tg_admit_result r;
    memset(&r, 0, sizeof(r));
    r.verdict = TG_ADMIT_RATE_LIMITED;
    r.scope = TG_SCOPE_PROJECT;
    r.limit = 3;
    r.retry_after_ms = 20000;
    char msg[400];
    tg_quota_rate_message(&r, "gpt-4o-mini", "proj_x", 1, msg, sizeof(msg));
    assert_string_equal(msg, "Rate limit reached for gpt-4o-mini in project proj_x on requests "
                             "per min (RPM): Limit 3, Used 3, Requested 1. Please try again in "
                             "20s.");
    r.scope = TG_SCOPE_ORG;
    r.is_tokens = true;
    r.is_daily = true;
    r.limit = 1000;
    r.retry_after_ms = 864000; /* a hundredth of a day: 10 tokens drain */
    tg_quota_rate_message(&r, "m", "org-1", 50, msg, sizeof(msg));
    assert_string_equal(msg, "Rate limit reached for m in organization org-1 on tokens per day "
                             "(TPD): Limit 1000, Used 960, Requested 50. Please try again in "
                             "14m24s.");
    r.is_daily = false;
    r.is_too_large = true;
    r.scope = TG_SCOPE_KEY;
    r.limit = 100;
    tg_quota_rate_message(&r, "m", "key_1", 500, msg, sizeof(msg));
    assert_non_null(strstr(msg, "Request too large for m in API key key_1 on tokens per min "
                                "(TPM): Limit 100, Requested 500."));
}

static void
budget_message_names_level_and_usd(void **state)
{
    (void)state;
    char msg[400];
    tg_quota_budget_message(TG_SCOPE_PROJECT, "proj_x", 10000000, msg, sizeof(msg));
    assert_non_null(strstr(msg, "project proj_x ($10.00)"));
    assert_non_null(strstr(msg, "exceeded your current quota"));
    tg_quota_budget_message(TG_SCOPE_ORG, "org-1", 1500, msg, sizeof(msg));
    assert_non_null(strstr(msg, "organization org-1 ($0.0015)"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(durations_as_openai_writes_them),
        cmocka_unit_test(usd_keeps_two_places_at_least),
        cmocka_unit_test(text_chars_of_request_shapes),
        cmocka_unit_test(cost_bound_and_affordable_cap),
        cmocka_unit_test(rate_messages_name_level_and_limit),
        cmocka_unit_test(budget_message_names_level_and_usd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
