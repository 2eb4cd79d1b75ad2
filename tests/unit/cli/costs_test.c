/*
 * costs_test.c: the pure parts of `tollgate costs`, `forecast` and `cost estimate`
 * (cli_costs.c): option parsing, the request path, the tables, and the estimate's exact
 * integer arithmetic (rounded up once, overflow refused).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "cli/cli_int.h"
#include "core/buf.h"
#include "core/err.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define NOW 1795875550 /* 2026-11-28 14:19:10 UTC */

static json_t *
load(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    if (v == NULL) {
        fail_msg("bad test JSON at %d: %s", e.position, e.text);
    }
    return v;
}

static int
parse_costs(char **argv, int argc, struct tg_cli_costs_query *q, char *err, size_t cap)
{
    struct tg_cli_args a;
    assert_int_equal(tg_cli_args_parse(argc, argv, &a, err, cap), 0);
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_costs);
    return tg_cli_costs_query_parse(&a, NOW, q, err, cap);
}

static void
costs_query_defaults_and_path(void **state)
{
    char *argv[] = {"tollgate", "costs"};
    struct tg_cli_costs_query q;
    char err[200];
    assert_int_equal(parse_costs(argv, ARGC(argv), &q, err, sizeof(err)), 0);
    assert_int_equal(q.start_s, 1795305600); /* 2026-11-22 00:00 UTC */
    assert_int_equal(q.end_s, 0);
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_cli_costs_query_path(&q, NULL, false, &b);
    assert_string_equal(b.data,
                        "/v1/organization/costs?start_time=1795305600&bucket_width=1d&limit=180");
    tg_buf_deinit(&b);
}

static void
costs_query_options(void **state)
{
    char *argv[] = {"tollgate",   "costs",     "--start",   "2026-11-01", "--end",
                    "2026-11-30", "--project", "prod & co", "--group-by", "line_item,project,key",
                    "--csv"};
    struct tg_cli_costs_query q;
    char err[200];
    assert_int_equal(parse_costs(argv, ARGC(argv), &q, err, sizeof(err)), 0);
    assert_true(q.by_project && q.by_key && q.by_line_item);
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_cli_costs_query_path(&q, "page_00", true, &b);
    assert_string_equal(b.data, "/v1/organization/costs?start_time=1793491200&end_time=1796083200"
                                "&bucket_width=1d&limit=180&group_by=project_id"
                                "&group_by=api_key_id&group_by=line_item"
                                "&project_ids=prod%20%26%20co&format=csv&page=page_00");
    tg_buf_deinit(&b);

    char *bad[][4] = {
        {"tollgate", "costs", "--group-by", "model"},
        {"tollgate", "costs", "--start", "yesterday"},
        {"tollgate", "costs", "--end", "1700000000"},
    };
    const char *why[] = {"--group-by: 'model' is not project, key or line_item",
                         "--start: 'yesterday' is not YYYY-MM-DD[THH:MM[:SS]] or Unix seconds",
                         "--end must be later than --start"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(parse_costs(bad[i], 4, &q, err, sizeof(err)), TG_EINVAL);
        assert_string_equal(err, why[i]);
    }
}

static void
costs_table_with_total(void **state)
{
    json_t *page = load(
        "{\"object\":\"page\",\"data\":["
        "{\"object\":\"bucket\",\"start_time\":1793491200,\"end_time\":1793577600,\"results\":["
        "{\"object\":\"organization.costs.result\",\"cost_micros\":1234567,"
        "\"line_item\":\"gpt-4o-mini, input\",\"project_id\":\"proj_a\"},"
        "{\"object\":\"organization.costs.result\",\"cost_micros\":5,"
        "\"line_item\":\"gpt-4o-mini, output\",\"project_id\":\"proj_b\"}]},"
        "{\"object\":\"bucket\",\"start_time\":1793577600,\"end_time\":1793664000,"
        "\"results\":[]}]}");
    json_t *projects = load("{\"data\":[{\"id\":\"proj_a\",\"name\":\"alpha\"}]}");
    struct tg_cli_costs_query q = {.by_project = true, .by_line_item = true};
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_costs_table(page, &q, projects, &b), 0);
    assert_string_equal(b.data, "day (UTC)   project  line item            cost (USD)\n"
                                "2026-11-01  alpha    gpt-4o-mini, input     1.234567\n"
                                "2026-11-01  proj_b   gpt-4o-mini, output    0.000005\n"
                                "total                                       1.234572\n");
    json_t *bad = load("{\"object\":\"page\"}");
    assert_int_equal(tg_cli_costs_table(bad, &q, NULL, &b), TG_EPARSE);
    json_decref(bad);
    json_decref(page);
    json_decref(projects);
    tg_buf_deinit(&b);
}

static void
forecast_lines(void **state)
{
    json_t *f = load("{\"object\":\"organization.costs.forecast\",\"project_id\":\"proj_a\","
                     "\"period_start\":1793491200,\"period_end\":1796083200,"
                     "\"as_of\":1795875550,\"month_to_date_micros\":3345678,"
                     "\"daily_average_micros\":120000,\"projected_micros\":3600000,"
                     "\"budget_micros\":3000000,\"exceeds_budget\":true,\"currency\":\"usd\"}");
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_forecast_table(f, &b), 0);
    assert_string_equal(b.data, "scope          project proj_a\n"
                                "period         2026-11-01 to 2026-12-01 (UTC dates)\n"
                                "as of          2026-11-28 14:19 UTC\n"
                                "month to date  3.345678 USD\n"
                                "daily average  0.120000 USD\n"
                                "projected      3.600000 USD at the end of the period\n"
                                "budget         3.000000 USD\n"
                                "forecast       EXCEEDS the budget\n");
    json_object_set_new(f, "budget_micros", json_null());
    json_object_set_new(f, "project_id", json_null());
    tg_buf_reset(&b);
    assert_int_equal(tg_cli_forecast_table(f, &b), 0);
    assert_non_null(strstr(b.data, "scope          organization\n"));
    assert_non_null(strstr(b.data, "budget         none\n"));
    assert_null(strstr(b.data, "forecast "));
    json_decref(f);
    tg_buf_deinit(&b);
}

static int
parse_estimate(char **argv, int argc, struct tg_cli_estimate *e, char *err, size_t cap)
{
    struct tg_cli_args a;
    assert_int_equal(tg_cli_args_parse(argc, argv, &a, err, cap), 0);
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_cost_estimate);
    return tg_cli_estimate_parse(&a, e, err, cap);
}

static void
estimate_exact_and_rounded_up(void **state)
{
    char *argv[] = {"tollgate",    "cost",
                    "estimate",    "--model",
                    "gpt-4o-mini", "--requests-per-day",
                    "1000",        "--prompt-tokens",
                    "1500",        "--completion-tokens",
                    "333",         "--cache-hit-rate",
                    "25%"};
    struct tg_cli_estimate e;
    char err[200];
    assert_int_equal(parse_estimate(argv, ARGC(argv), &e, err, sizeof(err)), 0);
    assert_string_equal(e.model, "gpt-4o-mini");
    assert_int_equal(e.requests_per_day, 1000);
    assert_int_equal(e.cache_hit_ppm, 250000);
    int64_t daily = 0, monthly = 0;
    /* 1.5M prompt tokens a day: 1.125M at 0.15 + 0.375M at 0.075 = 168750 + 28125 micros;
     * 333000 completion tokens at 0.60 = 199800: 396675 a day, exactly. */
    assert_int_equal(tg_cli_estimate_cost(&e, 150000, 75000, 600000, &daily, &monthly), 0);
    assert_int_equal(daily, 396675);
    assert_int_equal(monthly, 30 * 396675);

    /* A fraction of a micro-dollar a day rounds up; the month rounds once, not 30 times. */
    struct tg_cli_estimate small = {.requests_per_day = 1, .prompt_tokens = 1};
    assert_int_equal(tg_cli_estimate_cost(&small, 150000, 0, 0, &daily, &monthly), 0);
    assert_int_equal(daily, 1);   /* 0.15 */
    assert_int_equal(monthly, 5); /* 4.5 */

    struct tg_cli_estimate huge = {.requests_per_day = 10000000000LL,
                                   .prompt_tokens = 100000000,
                                   .completion_tokens = 100000000};
    assert_int_equal(tg_cli_estimate_cost(&huge, 1LL << 40, 1LL << 40, 1LL << 40, &daily, &monthly),
                     TG_ETOOBIG);
    assert_int_equal(tg_cli_estimate_cost(&small, (1LL << 40) + 1, 0, 0, &daily, &monthly),
                     TG_ETOOBIG);
}

static void
estimate_rates_and_refusals(void **state)
{
    struct {
        const char *rate;
        int64_t ppm;
    } ok[] = {{"0", 0},          {"1", 1000000},    {"0.5", 500000}, {"0.123456", 123456},
              {"12.5%", 125000}, {"100%", 1000000}, {"0.0001%", 1}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *argv[] = {"tollgate",
                        "cost",
                        "estimate",
                        "--model",
                        "m",
                        "--requests-per-day",
                        "1",
                        "--prompt-tokens",
                        "1",
                        "--completion-tokens",
                        "1",
                        "--cache-hit-rate",
                        (char *)ok[i].rate};
        struct tg_cli_estimate e;
        char err[200];
        assert_int_equal(parse_estimate(argv, ARGC(argv), &e, err, sizeof(err)), 0);
        assert_int_equal(e.cache_hit_ppm, ok[i].ppm);
    }
    const char *bad_rates[] = {"1.5", "-0.1", "0.1234567", "101%", ".5", "0.", "abc", "5%%"};
    for (size_t i = 0; i < sizeof(bad_rates) / sizeof(bad_rates[0]); i++) {
        char *argv[] = {"tollgate",
                        "cost",
                        "estimate",
                        "--model",
                        "m",
                        "--requests-per-day",
                        "1",
                        "--prompt-tokens",
                        "1",
                        "--completion-tokens",
                        "1",
                        "--cache-hit-rate",
                        (char *)bad_rates[i]};
        struct tg_cli_estimate e;
        char err[200];
        assert_int_equal(parse_estimate(argv, ARGC(argv), &e, err, sizeof(err)), TG_EINVAL);
        assert_non_null(strstr(err, "--cache-hit-rate"));
    }
    char *missing[] = {"tollgate", "cost", "estimate", "--model", "m", "--prompt-tokens", "1"};
    struct tg_cli_estimate e;
    char err[200];
    assert_int_equal(parse_estimate(missing, ARGC(missing), &e, err, sizeof(err)), TG_EINVAL);
    assert_string_equal(err, "--requests-per-day is required");
    char *neg[] = {"tollgate", "cost",
                   "estimate", "--model",
                   "m",        "--requests-per-day",
                   "-1",       "--prompt-tokens",
                   "1",        "--completion-tokens",
                   "1"};
    assert_int_equal(parse_estimate(neg, ARGC(neg), &e, err, sizeof(err)), TG_EINVAL);
    assert_string_equal(err, "--requests-per-day must be a whole number from 0 to 10000000000");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(costs_query_defaults_and_path),
        cmocka_unit_test(costs_query_options),
        cmocka_unit_test(costs_table_with_total),
        cmocka_unit_test(forecast_lines),
        cmocka_unit_test(estimate_exact_and_rounded_up),
        cmocka_unit_test(estimate_rates_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
