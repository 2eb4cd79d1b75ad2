/* price_test.c: USD parsing and formatting, the cost formula, lookup, and the built-in table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "policy/price.h"

static int64_t
usd(const char *s)
{
    int64_t m = -1;
    assert_int_equal(tg_price_parse_usd(s, &m), 0);
    return m;
}

static void
parse_usd_accepts_exact_decimals(void **state)
{
    assert_int_equal(usd("0"), 0);
    assert_int_equal(usd("2"), 2000000);
    assert_int_equal(usd("0.15"), 150000);
    assert_int_equal(usd("0.075"), 75000);
    assert_int_equal(usd("1.234567"), 1234567);
    assert_int_equal(usd("0.000001"), 1);
    assert_int_equal(usd("10.50"), 10500000);
    assert_int_equal(usd("007.5"), 7500000);
    /* The largest value that fits: INT64_MAX micro-dollars. */
    assert_int_equal(usd("9223372036854.775807"), INT64_MAX);
}

static void
parse_usd_refuses_everything_else(void **state)
{
    static const char *bad[] = {
        "",          "-1",
        "+1",        "1e3",
        "0.1234567", ".5",
        "2.",        " 1",
        "1 ",        "1,5",
        "0x10",      "abc",
        "1.2.3",     "9223372036854.775808",
        "inf",       "nan",
        "1.-5",      "99999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t m = 42;
        if (tg_price_parse_usd(bad[i], &m) != TG_EPARSE) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
        assert_int_equal(m, 42); /* untouched on failure */
    }
    int64_t m;
    assert_int_equal(tg_price_parse_usd(NULL, &m), TG_EPARSE);
}

static void
format_usd_has_six_places(void **state)
{
    char out[32];
    tg_price_format_usd(150, out, sizeof(out));
    assert_string_equal(out, "0.000150");
    tg_price_format_usd(0, out, sizeof(out));
    assert_string_equal(out, "0.000000");
    tg_price_format_usd(12345678, out, sizeof(out));
    assert_string_equal(out, "12.345678");
    tg_price_format_usd(-1500000, out, sizeof(out));
    assert_string_equal(out, "-1.500000");
    tg_price_format_usd(INT64_MIN, out, sizeof(out));
    assert_string_equal(out, "-9223372036854.775808");
    tg_price_format_usd(INT64_MAX, out, sizeof(out));
    assert_string_equal(out, "9223372036854.775807");
}

static const struct tg_price mini = {"gpt-4o-mini", 150000, 75000, 600000};

static void
cost_rounds_up_once_per_request(void **state)
{
    /* 1000 prompt (200 cached), 500 completion (300 of them reasoning):
     * 800*150000 + 200*75000 + 500*600000 = 120e6 + 15e6 + 300e6 = 435e6 -> 435 micros. */
    struct tg_usage u = {1000, 200, 500, 300, true};
    assert_int_equal(tg_price_cost_micros(&mini, &u), 435);
    /* One prompt token: 150000 / 1e6 = 0.15 -> rounds up to 1, not down to 0. */
    struct tg_usage one = {1, 0, 0, 0, true};
    assert_int_equal(tg_price_cost_micros(&mini, &one), 1);
    /* Rounded once: 7 prompt tokens cost ceil(1.05) = 2, not 7 * ceil(0.15) = 7. */
    struct tg_usage seven = {7, 0, 0, 0, true};
    assert_int_equal(tg_price_cost_micros(&mini, &seven), 2);
    /* Exactly on a boundary: no extra micro. 20 tokens * 150000 = 3e6 -> 3. */
    struct tg_usage twenty = {20, 0, 0, 0, true};
    assert_int_equal(tg_price_cost_micros(&mini, &twenty), 3);
    /* Reasoning tokens are inside completion_tokens: not billed twice. */
    struct tg_usage r1 = {0, 0, 1000, 0, true};
    struct tg_usage r2 = {0, 0, 1000, 1000, true};
    assert_int_equal(tg_price_cost_micros(&mini, &r1), 600);
    assert_int_equal(tg_price_cost_micros(&mini, &r2), 600);
    /* Cached tokens at the cached price: 1000 cached of 1000 = 75 micros. */
    struct tg_usage all_cached = {1000, 1000, 0, 0, true};
    assert_int_equal(tg_price_cost_micros(&mini, &all_cached), 75);
    /* No price, no usage: 0. */
    assert_int_equal(tg_price_cost_micros(NULL, &u), 0);
    struct tg_usage none = {0};
    assert_int_equal(tg_price_cost_micros(&mini, &none), 0);
}

static void
cost_clamps_inconsistent_counts(void **state)
{
    /* cached > prompt is clamped to prompt (all cached), negatives count as 0. */
    struct tg_usage u = {100, 500, -5, 0, true};
    assert_int_equal(tg_price_cost_micros(&mini, &u), 8); /* 100*75000 = 7.5e6 -> 8 */
}

static void
cost_saturates_on_overflow(void **state)
{
    struct tg_price huge = {"huge", INT64_MAX / 1000000, 0, INT64_MAX / 1000000};
    struct tg_usage u = {INT64_MAX, 0, 0, 0, true};
    assert_int_equal(tg_price_cost_micros(&huge, &u), INT64_MAX);
    /* Each term fits but the sum does not. */
    struct tg_price big = {"big", INT64_MAX / 4, 0, INT64_MAX / 4};
    struct tg_usage v = {3, 0, 3, 0, true};
    assert_int_equal(tg_price_cost_micros(&big, &v), INT64_MAX);
    /* Just under: no saturation. */
    struct tg_usage w = {1, 0, 1, 0, true};
    int64_t c = tg_price_cost_micros(&big, &w);
    assert_true(c > 0 && c < INT64_MAX);
    assert_int_equal(c, ((INT64_MAX / 4) * 2 + 999999) / 1000000);
}

static void
lookup_exact_then_dated_prefix(void **state)
{
    struct tg_price_table *t = tg_price_table_new();
    struct tg_price a = {"gpt-4o", 2500000, 1250000, 10000000};
    struct tg_price b = {"gpt-4o-mini", 150000, 75000, 600000};
    struct tg_price c = {"o1", 15000000, 7500000, 60000000};
    tg_price_table_set(t, &b);
    tg_price_table_set(t, &c);
    tg_price_table_set(t, &a);
    assert_int_equal(tg_price_table_count(t), 3);
    /* Kept sorted for listing. */
    assert_string_equal(tg_price_table_at(t, 0)->model, "gpt-4o");
    assert_string_equal(tg_price_table_at(t, 1)->model, "gpt-4o-mini");
    assert_string_equal(tg_price_table_at(t, 2)->model, "o1");
    assert_null(tg_price_table_at(t, 3));

    assert_string_equal(tg_price_lookup(t, "gpt-4o")->model, "gpt-4o");
    assert_string_equal(tg_price_lookup(t, "gpt-4o-mini")->model, "gpt-4o-mini");
    /* Dated suffix: the longest prefix followed by '-'. */
    assert_string_equal(tg_price_lookup(t, "gpt-4o-mini-2024-07-18")->model, "gpt-4o-mini");
    assert_string_equal(tg_price_lookup(t, "gpt-4o-2024-08-06")->model, "gpt-4o");
    assert_string_equal(tg_price_lookup(t, "o1-2024-12-17")->model, "o1");
    /* A prefix not at a '-' boundary does not match. */
    assert_null(tg_price_lookup(t, "gpt-4omni"));
    assert_null(tg_price_lookup(t, "o1x"));
    assert_null(tg_price_lookup(t, "gpt"));
    assert_null(tg_price_lookup(t, "gpt-"));
    assert_null(tg_price_lookup(t, ""));
    assert_null(tg_price_lookup(t, NULL));

    /* set replaces. */
    struct tg_price b2 = {"gpt-4o-mini", 1, 2, 3};
    tg_price_table_set(t, &b2);
    assert_int_equal(tg_price_table_count(t), 3);
    assert_int_equal(tg_price_lookup(t, "gpt-4o-mini-x")->output_micros, 3);
    tg_price_table_free(t);
}

static void
load_json_strings_numbers_and_defaults(void **state)
{
    struct tg_price_table *t = tg_price_table_new();
    char err[256] = "";
    const char *doc = "{\"_comment\": \"ignored\", \"source\": [1,2], \"models\": {"
                      "\"a\": {\"input\": \"0.15\", \"cached_input\": \"0.075\", \"output\": 0.6},"
                      "\"b\": {\"input\": 2, \"output\": \"8\", \"_note\": \"x\"}}}";
    assert_int_equal(tg_price_table_load_json(t, doc, strlen(doc), err, sizeof(err)), 0);
    const struct tg_price *a = tg_price_lookup(t, "a");
    assert_non_null(a);
    assert_int_equal(a->input_micros, 150000);
    assert_int_equal(a->cached_input_micros, 75000);
    assert_int_equal(a->output_micros, 600000); /* 0.6 as a JSON number, still exact */
    const struct tg_price *b = tg_price_lookup(t, "b");
    assert_int_equal(b->input_micros, 2000000);
    assert_int_equal(b->cached_input_micros, 2000000); /* defaults to input */
    assert_int_equal(b->output_micros, 8000000);
    tg_price_table_free(t);
}

static void
load_json_errors_leave_table_unchanged(void **state)
{
    static const char *bad[] = {
        "{",
        "{\"models\": []}",
        "{}",
        "{\"models\": {\"a\": {\"input\": \"-1\", \"output\": \"1\"}}}",
        "{\"models\": {\"a\": {\"input\": \"1\"}}}",
        "{\"models\": {\"a\": {\"input\": \"1\", \"output\": \"1\", \"outptu\": \"1\"}}}",
        "{\"models\": {\"a\": {\"input\": 0.1234567, \"output\": 1}}}",
        "{\"models\": {\"a\": {\"input\": true, \"output\": 1}}}",
        "{\"models\": {\"a\": \"0.1\"}}",
        "{\"models\": {\"ok\": {\"input\": 1, \"output\": 1}, \"\": {\"input\": 1, \"output\": "
        "1}}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tg_price_table *t = tg_price_table_new();
        char err[256] = "";
        assert_int_equal(tg_price_table_load_json(t, bad[i], strlen(bad[i]), err, sizeof(err)),
                         TG_EPARSE);
        assert_true(strlen(err) > 0);
        assert_int_equal(tg_price_table_count(t), 0);
        tg_price_table_free(t);
    }
}

static void
builtin_table_loads(void **state)
{
    struct tg_price_table *t = tg_price_table_new();
    char err[256] = "";
    assert_int_equal(tg_price_table_load_builtin(t, err, sizeof(err)), 0);
    assert_true(tg_price_table_count(t) >= 19);
    const struct tg_price *p = tg_price_lookup(t, "gpt-4o-mini");
    assert_non_null(p);
    assert_int_equal(p->input_micros, 150000);
    assert_int_equal(p->cached_input_micros, 75000);
    assert_int_equal(p->output_micros, 600000);
    p = tg_price_lookup(t, "gpt-4o-mini-2024-07-18");
    assert_string_equal(p->model, "gpt-4o-mini");
    p = tg_price_lookup(t, "gpt-5-nano");
    assert_int_equal(p->input_micros, 50000);
    assert_int_equal(p->cached_input_micros, 5000);
    assert_int_equal(p->output_micros, 400000);
    p = tg_price_lookup(t, "o4-mini");
    assert_int_equal(p->cached_input_micros, 275000);
    p = tg_price_lookup(t, "text-embedding-3-small");
    assert_int_equal(p->input_micros, 20000);
    assert_int_equal(p->output_micros, 0);
    p = tg_price_lookup(t, "gpt-4.1-2025-04-14");
    assert_string_equal(p->model, "gpt-4.1");
    assert_non_null(tg_price_lookup(t, "mock-small"));
    assert_non_null(tg_price_lookup(t, "omni-moderation-latest"));
    tg_price_table_free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_usd_accepts_exact_decimals),
        cmocka_unit_test(parse_usd_refuses_everything_else),
        cmocka_unit_test(format_usd_has_six_places),
        cmocka_unit_test(cost_rounds_up_once_per_request),
        cmocka_unit_test(cost_clamps_inconsistent_counts),
        cmocka_unit_test(cost_saturates_on_overflow),
        cmocka_unit_test(lookup_exact_then_dated_prefix),
        cmocka_unit_test(load_json_strings_numbers_and_defaults),
        cmocka_unit_test(load_json_errors_leave_table_unchanged),
        cmocka_unit_test(builtin_table_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
