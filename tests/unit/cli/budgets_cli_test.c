/*
 * budgets_cli_test.c: the pure parts of `tollgate budgets` and the limits level (cli_int.h):
 * the path of each level, the body of `budgets set` from every option (none, lists, the
 * automatic increase, exact USD), its refusals naming the option, and the budget's lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"

/* Parses a command line (argv[0] added); asserts it parses. */
static void
parse(struct tg_cli_args *a, int argc, const char **argv)
{
    char *full[32] = {"tollgate"};
    for (int i = 0; i < argc; i++) {
        full[i + 1] = (char *)argv[i];
    }
    char err[200];
    memset(a, 0, sizeof(*a));
    int rc = tg_cli_args_parse(argc + 1, full, a, err, sizeof(err));
    if (rc != 0) {
        fail_msg("parse: %s", err);
    }
}

#define PARSE(a, ...)                                                                              \
    do {                                                                                           \
        const char *argv_[] = {__VA_ARGS__};                                                       \
        parse(a, (int)(sizeof(argv_) / sizeof(argv_[0])), argv_);                                  \
    } while (0)

static void
level_paths(void **state)
{
    (void)state;
    struct tg_cli_args a;
    char err[160];
    PARSE(&a, "budgets", "get");
    char *p = tg_cli_level_path(&a, "budget", NULL, err, sizeof(err));
    assert_string_equal(p, "/v1/organization/budget");
    free(p);
    PARSE(&a, "budgets", "get", "--project", "my proj");
    p = tg_cli_level_path(&a, "budget", NULL, err, sizeof(err));
    assert_string_equal(p, "/v1/organization/projects/my%20proj/budget");
    free(p);
    PARSE(&a, "rate-limits", "set", "--project", "p", "--api-key", "key_1", "--model", "x");
    p = tg_cli_level_path(&a, "rate_limits", "rl-a/b%s", err, sizeof(err));
    assert_string_equal(p, "/v1/organization/projects/p/api_keys/key_1/rate_limits/rl-a%2Fb%25s");
    free(p);
    PARSE(&a, "rate-limits", "list");
    p = tg_cli_level_path(&a, "rate_limits", NULL, err, sizeof(err));
    assert_string_equal(p, "/v1/organization/rate_limits");
    free(p);
    PARSE(&a, "budgets", "get", "--api-key", "key_1");
    assert_null(tg_cli_level_path(&a, "budget", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "--api-key needs --project"));
}

static void
usd(void **state)
{
    (void)state;
    int64_t m = -1;
    assert_int_equal(tg_cli_usd_parse("100", &m), 0);
    assert_int_equal(m, 100000000);
    assert_int_equal(tg_cli_usd_parse("12.5", &m), 0);
    assert_int_equal(m, 12500000);
    assert_int_equal(tg_cli_usd_parse("0.000001", &m), 0);
    assert_int_equal(m, 1);
    assert_int_equal(tg_cli_usd_parse("1000000", &m), 0);
    assert_int_equal(m, INT64_C(1000000000000));
    const char *bad[] = {"", "-1", "1.", ".5", "1.0000001", "1000000.000001", "1e3", "12a", "1,5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m = 7;
        if (tg_cli_usd_parse(bad[i], &m) != TG_EINVAL || m != 7) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
    }
}

static void
body_of_every_option(void **state)
{
    (void)state;
    struct tg_cli_args a;
    char err[200];
    json_t *body = NULL;
    PARSE(&a, "budgets", "set", "--monthly-usd", "12.50", "--thresholds", "50,80,100",
          "--auto-increase", "90:5:50.5", "--on-exceed", "lower_max_tokens", "--notify-emails",
          "a@x.com, b@y.org", "--webhook-url", "https://h/x", "--webhook-secret", "env:H");
    assert_int_equal(tg_cli_budget_body(&a, &body, err, sizeof(err)), 0);
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(
        text, "{\"auto_increase\":{\"at_pct\":90,\"by_micros\":5000000,\"max_micros\":"
              "50500000},\"monthly_limit_micros\":12500000,\"notify_emails\":[\"a@x."
              "com\",\"b@y.org\"],\"on_exceed\":\"lower_max_tokens\",\"thresholds_pct\":"
              "[50,80,100],\"webhook_secret\":\"env:H\",\"webhook_url\":\"https://h/x\"}");
    free(text);
    json_decref(body);

    PARSE(&a, "budgets", "set", "--monthly-usd", "none", "--thresholds", "none", "--auto-increase",
          "none", "--notify-emails", "none", "--webhook-url", "none", "--webhook-secret", "none");
    assert_int_equal(tg_cli_budget_body(&a, &body, err, sizeof(err)), 0);
    text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "{\"auto_increase\":null,\"monthly_limit_micros\":null,"
                              "\"notify_emails\":null,\"thresholds_pct\":[],"
                              "\"webhook_secret\":null,\"webhook_url\":null}");
    free(text);
    json_decref(body);
}

static void
body_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *opt;
        const char *value;
        const char *message;
    } cases[] = {
        {"--monthly-usd", "lots", "--monthly-usd"},
        {"--monthly-usd", "-5", "--monthly-usd"},
        {"--thresholds", "50,,80", "--thresholds"},
        {"--thresholds", "50%", "--thresholds"},
        {"--auto-increase", "90:5", "--auto-increase"},
        {"--auto-increase", "x:5:10", "--auto-increase"},
        {"--auto-increase", "90:5:10:1", "--auto-increase"},
        {"--on-exceed", "warn", "--on-exceed"},
        {"--notify-emails", "a@x.com,,b@y.com", "--notify-emails"},
        {"--webhook-secret", "s3cret", "reference"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tg_cli_args a;
        PARSE(&a, "budgets", "set", cases[i].opt, cases[i].value);
        char err[200] = "";
        json_t *body = (json_t *)1;
        int rc = tg_cli_budget_body(&a, &body, err, sizeof(err));
        if (rc != TG_EINVAL || body != NULL || strstr(err, cases[i].message) == NULL) {
            fail_msg("%s %s: rc %d, \"%s\"", cases[i].opt, cases[i].value, rc, err);
        }
        assert_null(strstr(err, "s3cret"));
    }
    struct tg_cli_args a;
    PARSE(&a, "budgets", "set", "--project", "p");
    char err[200] = "";
    json_t *body = NULL;
    assert_int_equal(tg_cli_budget_body(&a, &body, err, sizeof(err)), TG_EINVAL);
    assert_non_null(strstr(err, "give at least one"));
}

static void
budget_lines(void **state)
{
    (void)state;
    json_t *b = json_loads(
        "{\"object\":\"organization.budget\",\"scope\":\"project\",\"scope_id\":\"proj_1\","
        "\"monthly_limit\":{\"value\":\"12.500000\",\"currency\":\"usd\"},"
        "\"monthly_limit_micros\":12500000,\"thresholds_pct\":[50,100],"
        "\"auto_increase\":{\"at_pct\":90,\"by_micros\":5000000,\"max_micros\":50123456},"
        "\"on_exceed\":\"refuse\",\"max_tokens_cap\":4096,\"max_n\":8,"
        "\"notify_emails\":[\"a@x.com\"],\"webhook_url\":null,\"webhook_secret\":null,"
        "\"spend\":{\"value\":\"0.000100\",\"currency\":\"usd\"},\"spend_micros\":100}",
        0, NULL);
    struct tg_buf out;
    tg_buf_init(&out, 0);
    assert_int_equal(tg_cli_budget_table(b, &out), 0);
    assert_string_equal(out.data, "budget of      project proj_1\n"
                                  "monthly limit  $12.50\n"
                                  "spent          $0.0001 this month\n"
                                  "thresholds     50%, 100%\n"
                                  "auto increase  at 90% by $5.00 up to $50.123456\n"
                                  "on exceed      refuse\n"
                                  "max_tokens cap 4096\n"
                                  "max n          8\n"
                                  "notify emails  a@x.com\n"
                                  "webhook        -\n");
    tg_buf_deinit(&out);
    json_decref(b);

    b = json_loads("{\"scope\":\"organization\",\"scope_id\":\"org-1\",\"monthly_limit\":null,"
                   "\"thresholds_pct\":[],\"webhook_url\":\"https://h\","
                   "\"webhook_secret\":\"env:S\"}",
                   0, NULL);
    tg_buf_init(&out, 0);
    assert_int_equal(tg_cli_budget_table(b, &out), 0);
    assert_non_null(strstr(out.data, "monthly limit  none (no hard limit)\n"));
    assert_non_null(strstr(out.data, "thresholds     none\n"));
    assert_non_null(strstr(out.data, "webhook        https://h (signed with env:S)\n"));
    tg_buf_deinit(&out);
    json_decref(b);

    b = json_loads("{\"object\":\"list\"}", 0, NULL);
    tg_buf_init(&out, 0);
    assert_int_equal(tg_cli_budget_table(b, &out), TG_EPARSE);
    tg_buf_deinit(&out);
    json_decref(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(level_paths),          cmocka_unit_test(usd),
        cmocka_unit_test(body_of_every_option), cmocka_unit_test(body_refusals),
        cmocka_unit_test(budget_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
