/*
 * limits_test.c: a level's limits read from its settings (policy/limits.h): the full shapes,
 * the defaults a budget gets, the per-model lookup, and every refusal (unknown members,
 * negative and absurd values, bad thresholds, inline secrets), each naming its member and
 * leaving nothing allocated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "policy/limits.h"

/* Parses text (a JSON object) into out; returns the parser's code, err filled. */
static int
parse(const char *text, struct tg_level_limits *out, char *err, size_t err_cap)
{
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    assert_non_null(root);
    int rc = tg_level_limits_parse(root, out, err, err_cap);
    json_decref(root);
    return rc;
}

static void
test_empty_and_null(void **state)
{
    (void)state;
    struct tg_level_limits l;
    char err[200];
    assert_int_equal(tg_level_limits_parse(NULL, &l, err, sizeof(err)), 0);
    assert_false(l.has_budget);
    assert_int_equal(l.n_models, 0);
    tg_level_limits_free(&l);
    /* other settings members (models, deployments, ...) are not this parser's business */
    assert_int_equal(
        parse("{\"models\":[\"o3\"],\"rate_limits\":null,\"budget\":null}", &l, err, sizeof(err)),
        0);
    assert_false(l.has_budget);
    assert_int_equal(l.all_models.rpm, 0);
    assert_int_equal(tg_level_model_limit(&l, "o3").rpm, 0);
    tg_level_limits_free(&l);
}

static void
test_full_shape(void **state)
{
    (void)state;
    const char *text =
        "{\"rate_limits\":{"
        "\"*\":{\"max_requests_per_1_minute\":100,\"max_tokens_per_1_minute\":2000,"
        "\"max_requests_per_1_day\":3000,\"max_tokens_per_1_day\":40000},"
        "\"zeta\":{\"max_requests_per_1_minute\":1},"
        "\"gpt-4o\":{\"max_tokens_per_1_minute\":5,\"max_requests_per_1_day\":null},"
        "\"alpha\":{\"max_tokens_per_1_day\":1000000000000}},"
        "\"budget\":{\"monthly_limit_micros\":100000000,\"thresholds_pct\":[25,90,100,150],"
        "\"auto_increase\":{\"at_pct\":90,\"by_micros\":50000000,\"max_micros\":300000000},"
        "\"on_exceed\":\"lower_max_tokens\",\"max_tokens_cap\":1024,\"max_n\":2,"
        "\"notify_emails\":[\"a@example.com\",\"ops@example.org\"],"
        "\"webhook_url\":\"https://hooks.example.com/x\",\"webhook_secret\":\"env:HOOK_SECRET\"}}";
    struct tg_level_limits l;
    char err[200];
    assert_int_equal(parse(text, &l, err, sizeof(err)), 0);
    assert_int_equal(l.all_models.rpm, 100);
    assert_int_equal(l.all_models.tpm, 2000);
    assert_int_equal(l.all_models.rpd, 3000);
    assert_int_equal(l.all_models.tpd, 40000);
    assert_int_equal(l.n_models, 3); /* "*" is not a model entry */
    /* sorted by name, whatever the order in the settings */
    assert_string_equal(l.models[0].model, "alpha");
    assert_string_equal(l.models[1].model, "gpt-4o");
    assert_string_equal(l.models[2].model, "zeta");
    struct tg_rate_limit g = tg_level_model_limit(&l, "gpt-4o");
    assert_int_equal(g.tpm, 5);
    assert_int_equal(g.rpm, 0);
    assert_int_equal(g.rpd, 0);
    assert_int_equal(tg_level_model_limit(&l, "alpha").tpd, 1000000000000LL);
    assert_int_equal(tg_level_model_limit(&l, "zeta").rpm, 1);
    assert_int_equal(tg_level_model_limit(&l, "beta").rpm, 0);
    assert_int_equal(tg_level_model_limit(&l, "*").rpm, 0);

    assert_true(l.has_budget);
    const struct tg_budget_conf *b = &l.budget;
    assert_int_equal(b->monthly_limit_micros, 100000000);
    assert_int_equal(b->n_thresholds, 4);
    assert_int_equal(b->thresholds_pct[0], 25);
    assert_int_equal(b->thresholds_pct[3], 150);
    assert_int_equal(b->auto_at_pct, 90);
    assert_int_equal(b->auto_by_micros, 50000000);
    assert_int_equal(b->auto_max_micros, 300000000);
    assert_true(b->lower_max_tokens);
    assert_int_equal(b->max_tokens_cap, 1024);
    assert_int_equal(b->max_n, 2);
    assert_int_equal(b->n_notify_emails, 2);
    assert_string_equal(b->notify_emails[1], "ops@example.org");
    assert_string_equal(b->webhook_url, "https://hooks.example.com/x");
    assert_string_equal(b->webhook_secret, "env:HOOK_SECRET");
    tg_level_limits_free(&l);
    assert_int_equal(l.n_models, 0);
    assert_null(l.models);
}

static void
test_budget_defaults(void **state)
{
    (void)state;
    struct tg_level_limits l;
    char err[200];
    assert_int_equal(parse("{\"budget\":{}}", &l, err, sizeof(err)), 0);
    assert_true(l.has_budget);
    assert_int_equal(l.budget.monthly_limit_micros, 0); /* no hard limit */
    assert_int_equal(l.budget.n_thresholds, 3);
    assert_int_equal(l.budget.thresholds_pct[0], 50);
    assert_int_equal(l.budget.thresholds_pct[1], 80);
    assert_int_equal(l.budget.thresholds_pct[2], 100);
    assert_int_equal(l.budget.auto_at_pct, 0);
    assert_false(l.budget.lower_max_tokens);
    assert_int_equal(l.budget.max_tokens_cap, 4096);
    assert_int_equal(l.budget.max_n, 8);
    assert_null(l.budget.webhook_url);
    assert_null(l.budget.webhook_secret);
    tg_level_limits_free(&l);
    /* an empty list means: no thresholds */
    assert_int_equal(
        parse("{\"budget\":{\"thresholds_pct\":[],\"on_exceed\":\"refuse\",\"webhook_secret\":"
              "\"file:/run/secrets/hook\"}}",
              &l, err, sizeof(err)),
        0);
    assert_int_equal(l.budget.n_thresholds, 0);
    assert_false(l.budget.lower_max_tokens);
    assert_string_equal(l.budget.webhook_secret, "file:/run/secrets/hook");
    tg_level_limits_free(&l);
}

/* Each refused text, and a piece its message must contain. */
static const struct {
    const char *text;
    const char *message;
} refusals[] = {
    {"[]", "settings"},
    {"{\"rate_limits\":[1]}", "rate_limits"},
    {"{\"rate_limits\":{\"o3\":5}}", "rate_limits.o3"},
    {"{\"rate_limits\":{\"o3\":{\"rpm\":5}}}", "unknown member 'rpm'"},
    {"{\"rate_limits\":{\"o3\":{\"max_requests_per_1_minute\":-1}}}", "max_requests_per_1_minute"},
    {"{\"rate_limits\":{\"*\":{\"max_tokens_per_1_day\":1000000000001}}}", "max_tokens_per_1_day"},
    {"{\"rate_limits\":{\"o3\":{\"max_tokens_per_1_minute\":1.5}}}", "max_tokens_per_1_minute"},
    {"{\"rate_limits\":{\"o3\":{\"max_requests_per_1_day\":\"10\"}}}", "max_requests_per_1_day"},
    {"{\"rate_limits\":{\"\":{}}}", "model name"},
    {"{\"budget\":5}", "budget"},
    {"{\"budget\":{\"monthly_limit\":5}}", "unknown member 'monthly_limit'"},
    {"{\"budget\":{\"monthly_limit_micros\":-5}}", "monthly_limit_micros"},
    {"{\"budget\":{\"monthly_limit_micros\":1000000000001}}", "monthly_limit_micros"},
    {"{\"budget\":{\"monthly_limit_micros\":true}}", "monthly_limit_micros"},
    {"{\"budget\":{\"thresholds_pct\":[80,50]}}", "ascending"},
    {"{\"budget\":{\"thresholds_pct\":[50,50]}}", "ascending"},
    {"{\"budget\":{\"thresholds_pct\":[0]}}", "thresholds_pct"},
    {"{\"budget\":{\"thresholds_pct\":[1001]}}", "thresholds_pct"},
    {"{\"budget\":{\"thresholds_pct\":[1,2,3,4,5,6,7,8,9]}}", "at most 8"},
    {"{\"budget\":{\"thresholds_pct\":50}}", "thresholds_pct"},
    {"{\"budget\":{\"auto_increase\":{\"at_pct\":80,\"by_micros\":1}}}", "max_micros: required"},
    {"{\"budget\":{\"auto_increase\":{\"at_pct\":80,\"by_micros\":1,\"max_micros\":9,\"x\":1}}}",
     "unknown member 'x'"},
    {"{\"budget\":{\"auto_increase\":{\"at_pct\":0,\"by_micros\":1,\"max_micros\":9}}}", "at_pct"},
    {"{\"budget\":{\"monthly_limit_micros\":10,\"auto_increase\":{\"at_pct\":80,\"by_micros\":1,"
     "\"max_micros\":9}}}",
     "at least monthly_limit_micros"},
    {"{\"budget\":{\"on_exceed\":\"warn\"}}", "on_exceed"},
    {"{\"budget\":{\"max_tokens_cap\":0}}", "max_tokens_cap"},
    {"{\"budget\":{\"max_n\":129}}", "max_n"},
    {"{\"budget\":{\"notify_emails\":[\"not-an-address\"]}}", "not-an-address"},
    {"{\"budget\":{\"notify_emails\":[\"a@b@c\"]}}", "notify_emails"},
    {"{\"budget\":{\"notify_emails\":[7]}}", "notify_emails"},
    {"{\"budget\":{\"notify_emails\":\"a@b.c\"}}", "notify_emails"},
    {"{\"budget\":{\"webhook_url\":\"ftp://x\"}}", "webhook_url"},
    {"{\"budget\":{\"webhook_url\":\"\"}}", "webhook_url"},
    {"{\"budget\":{\"webhook_secret\":\"s3cr3t-inline\"}}", "must be a reference"},
    {"{\"budget\":{\"webhook_secret\":\"env:\"}}", "must be a reference"},
};

static void
test_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        struct tg_level_limits l;
        char err[200];
        int rc = parse(refusals[i].text, &l, err, sizeof(err));
        if (rc != TG_EPARSE || strstr(err, refusals[i].message) == NULL) {
            fail_msg("%s: rc %d, message \"%s\" (wanted \"%s\")", refusals[i].text, rc, err,
                     refusals[i].message);
        }
        /* nothing is left allocated or half-filled */
        assert_false(l.has_budget);
        assert_int_equal(l.n_models, 0);
        assert_null(l.models);
        assert_null(l.budget.notify_emails);
    }
}

static void
test_secret_never_in_message(void **state)
{
    (void)state;
    struct tg_level_limits l;
    char err[200];
    assert_int_equal(
        parse("{\"budget\":{\"webhook_secret\":\"hunter2hunter2\"}}", &l, err, sizeof(err)),
        TG_EPARSE);
    assert_null(strstr(err, "hunter2"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_and_null),          cmocka_unit_test(test_full_shape),
        cmocka_unit_test(test_budget_defaults),         cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_secret_never_in_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
