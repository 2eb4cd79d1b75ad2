/*
 * metrics_test.c: the /metrics exposition: label escaping, cumulative histogram buckets with
 * +Inf, _sum and _count, counters per status, refusals, and the cap on label combinations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/metrics.h"

static struct tg_ledger_row
row(const char *project, const char *model, int status, int64_t latency_ms)
{
    struct tg_ledger_row r;
    memset(&r, 0, sizeof(r));
    snprintf(r.project_id, sizeof(r.project_id), "%s", project);
    snprintf(r.model_requested, sizeof(r.model_requested), "%s", model);
    snprintf(r.provider, sizeof(r.provider), "mock");
    snprintf(r.deployment, sizeof(r.deployment), "dep-1");
    r.status = status;
    r.latency_ms = latency_ms;
    r.ttft_ms = -1;
    return r;
}

static char *
render(void)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    struct tg_metrics_gauges g = {.open_connections = 3, .ledger_depth = 7};
    assert_int_equal(tg_metrics_render(&b, &g), 0);
    tg_buf_append(&b, "", 1);
    return tg_buf_steal(&b, NULL);
}

static void
test_escaping(void **state)
{
    (void)state;
    tg_metrics_reset(0);
    struct tg_ledger_row r = row("p\"1\\x\ny", "gpt", 200, 1);
    tg_metrics_record(&r, -1);
    char *t = render();
    assert_non_null(strstr(t, "tollgate_requests_total{project=\"p\\\"1\\\\x\\ny\",model=\"gpt\","
                              "provider=\"mock\",deployment=\"dep-1\",status=\"200\","
                              "status_class=\"2xx\"} 1\n"));
    assert_non_null(strstr(t, "# TYPE tollgate_requests_total counter\n"));
    assert_non_null(strstr(t, "tollgate_open_connections 3\n"));
    assert_non_null(strstr(t, "tollgate_ledger_queue_depth 7\n"));
    free(t);
    tg_metrics_reset(0);
}

static void
test_histogram_cumulative(void **state)
{
    (void)state;
    tg_metrics_reset(0);
    int64_t lat[] = {3, 40, 40, 700, 120000};
    for (size_t i = 0; i < 5; i++) {
        struct tg_ledger_row r = row("p", "m", 200, lat[i]);
        r.prompt_tokens = 10;
        r.completion_tokens = 2;
        r.cost_micros = 5;
        tg_metrics_record(&r, lat[i] / 2);
    }
    char *t = render();
    const char *pre = "tollgate_request_duration_seconds_bucket{project=\"p\",model=\"m\","
                      "provider=\"mock\",deployment=\"dep-1\",status=\"200\",status_class=\"2xx\",";
    char want[512];
    struct {
        const char *le;
        int n;
    } exp[] = {{"0.005", 1}, {"0.025", 1}, {"0.05", 3}, {"0.5", 3},
               {"1", 4},     {"60", 4},    {"+Inf", 5}};
    for (size_t i = 0; i < sizeof(exp) / sizeof(exp[0]); i++) {
        snprintf(want, sizeof(want), "%sle=\"%s\"} %d\n", pre, exp[i].le, exp[i].n);
        assert_non_null(strstr(t, want));
    }
    assert_non_null(strstr(t, "tollgate_request_duration_seconds_sum{project=\"p\",model=\"m\","
                              "provider=\"mock\",deployment=\"dep-1\",status=\"200\","
                              "status_class=\"2xx\"} 120.783\n"));
    assert_non_null(strstr(t, "tollgate_request_duration_seconds_count{project=\"p\",model=\"m\","
                              "provider=\"mock\",deployment=\"dep-1\",status=\"200\","
                              "status_class=\"2xx\"} 5\n"));
    assert_non_null(strstr(t, "status_class=\"2xx\",kind=\"prompt\"} 50\n"));
    assert_non_null(strstr(t, "status_class=\"2xx\",kind=\"completion\"} 10\n"));
    assert_non_null(strstr(t, "tollgate_cost_micro_dollars_total{project=\"p\",model=\"m\","
                              "provider=\"mock\",deployment=\"dep-1\",status=\"200\","
                              "status_class=\"2xx\"} 25\n"));
    /* Upstream half of each, so the overhead is the other half. */
    assert_non_null(strstr(t, "tollgate_gateway_overhead_seconds_count{"));
    /* ttft -1 means none: no ttft series. */
    assert_null(strstr(t, "tollgate_time_to_first_token_seconds_count{"));
    free(t);
    tg_metrics_reset(0);
}

static void
test_status_and_refusals(void **state)
{
    (void)state;
    tg_metrics_reset(0);
    struct tg_ledger_row a = row("p", "m", 200, 1), b = row("p", "m", 502, 1);
    tg_metrics_record(&a, 1);
    tg_metrics_record(&a, 1);
    tg_metrics_record(&b, 1);
    tg_metrics_refused(TG_METRICS_RATE_LIMITED, "p");
    tg_metrics_refused(TG_METRICS_BUDGET_REFUSED, "p");
    tg_metrics_refused(TG_METRICS_BUDGET_REFUSED, "p");
    char *t = render();
    assert_non_null(strstr(t, "status=\"200\",status_class=\"2xx\"} 2\n"));
    assert_non_null(strstr(t, "status=\"502\",status_class=\"5xx\"} 1\n"));
    assert_non_null(strstr(t, "tollgate_rate_limited_total{project=\"p\"} 1\n"));
    assert_non_null(strstr(t, "tollgate_budget_refused_total{project=\"p\"} 2\n"));
    free(t);
    tg_metrics_reset(0);
}

static void
test_label_cap(void **state)
{
    (void)state;
    tg_metrics_reset(4);
    char model[16];
    for (int i = 0; i < 10; i++) {
        snprintf(model, sizeof(model), "m%d", i);
        struct tg_ledger_row r = row("p", model, 200, 1);
        tg_metrics_record(&r, -1);
    }
    char *t = render();
    assert_non_null(strstr(t, "model=\"m3\""));
    assert_null(strstr(t, "model=\"m4\""));
    assert_non_null(strstr(t, "tollgate_requests_total{project=\"other\",model=\"other\","
                              "provider=\"other\",deployment=\"other\",status=\"200\","
                              "status_class=\"2xx\"} 6\n"));
    free(t);
    tg_metrics_reset(0);
}

/* Budget use per project, one-hot breaker states per deployment and the access log's drops. */
static void
test_gauges(void **state)
{
    (void)state;
    tg_metrics_reset(0);
    struct tg_metrics_budget budgets[] = {{"proj_a", 1250, 5000000}, {"proj_b", 0, 0}};
    struct tg_metrics_breaker breakers[] = {{"rt", "up", "fail-500", TG_BREAKER_OPEN},
                                            {"rt", "up", "gpt\"x", TG_BREAKER_HALF_OPEN}};
    struct tg_metrics_gauges g = {.open_connections = -1,
                                  .ledger_depth = -1,
                                  .access_log_dropped = 4,
                                  .budgets = budgets,
                                  .n_budgets = 2,
                                  .breakers = breakers,
                                  .n_breakers = 2};
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_metrics_render(&b, &g), 0);
    tg_buf_append(&b, "", 1);
    char *t = tg_buf_steal(&b, NULL);
    assert_non_null(strstr(t, "# TYPE tollgate_project_budget_spend_micro_dollars gauge\n"));
    assert_non_null(strstr(t, "tollgate_project_budget_spend_micro_dollars{project=\"proj_a\"} "
                              "1250\n"));
    assert_non_null(strstr(t, "tollgate_project_budget_spend_micro_dollars{project=\"proj_b\"} "
                              "0\n"));
    assert_non_null(strstr(t, "tollgate_project_budget_limit_micro_dollars{project=\"proj_a\"} "
                              "5000000\n"));
    /* No limit, no limit line. */
    assert_null(strstr(t, "tollgate_project_budget_limit_micro_dollars{project=\"proj_b\"}"));
    assert_non_null(strstr(t, "# TYPE tollgate_deployment_breaker_state gauge\n"));
    const char *dep = "tollgate_deployment_breaker_state{model=\"rt\",provider=\"up\","
                      "deployment=\"fail-500\",state=";
    char line[256];
    snprintf(line, sizeof(line), "%s\"closed\"} 0\n", dep);
    assert_non_null(strstr(t, line));
    snprintf(line, sizeof(line), "%s\"open\"} 1\n", dep);
    assert_non_null(strstr(t, line));
    snprintf(line, sizeof(line), "%s\"half_open\"} 0\n", dep);
    assert_non_null(strstr(t, line));
    assert_non_null(strstr(t, "deployment=\"gpt\\\"x\",state=\"half_open\"} 1\n"));
    assert_non_null(strstr(t, "# TYPE tollgate_access_log_dropped_total counter\n"
                              "tollgate_access_log_dropped_total 4\n"));
    assert_null(strstr(t, "tollgate_open_connections"));
    free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_status_and_refusals),
        cmocka_unit_test(test_label_cap),
        cmocka_unit_test(test_gauges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
