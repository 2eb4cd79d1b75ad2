/*
 * config_routing_test.c: the routing keys of a model route (deployments, strategy,
 * fallbacks, retry, breaker, per-deployment timeouts), their defaults, the single-provider form as
 * one deployment, and the errors that name the line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/err.h"
#include "gateway/config.h"

static const char *providers = "providers:\n"
                               "  - {name: a, type: mock}\n"
                               "  - {name: b, type: mock}\n";

/* Loads providers + models_yaml; returns the config or NULL with the message in err. */
static struct tg_config *
load(const char *models_yaml, char *err, size_t err_cap)
{
    char path[] = "/tmp/tg-config-routing-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(providers, f);
    fputs(models_yaml, f);
    fclose(f);
    struct tg_config *c = NULL;
    int rc = tg_config_load(path, &c, err, err_cap);
    unlink(path);
    return rc == 0 ? c : NULL;
}

static void
deployments_and_defaults(void **state)
{
    char err[512];
    struct tg_config *c = load("models:\n"
                               "  - name: m\n"
                               "    strategy: least_outstanding\n"
                               "    deployments:\n"
                               "      - {provider: a, upstream_model: m-a, weight: 3}\n"
                               "      - {provider: b, priority: 1}\n"
                               "    fallbacks: [n]\n"
                               "    retry: {max_attempts: 4, backoff_ms: 5}\n"
                               "  - name: n\n"
                               "    provider: b\n"
                               "    upstream_model: n-b\n",
                               err, sizeof(err));
    assert_non_null(c);
    const struct tg_model_route *m = tg_config_route(c, "m");
    assert_non_null(m);
    assert_int_equal(m->n_deployments, 2);
    assert_string_equal(m->deployments[0].upstream_model, "m-a");
    assert_int_equal(m->deployments[0].weight, 3);
    assert_string_equal(m->deployments[1].provider, "b");
    assert_string_equal(m->deployments[1].upstream_model, "m"); /* the route's name */
    assert_int_equal(m->deployments[1].priority, 1);
    assert_string_equal(m->provider, "a"); /* the first deployment's */
    assert_string_equal(m->upstream_model, "m-a");
    assert_int_equal(m->strategy, TG_ROUTE_LEAST_OUTSTANDING);
    assert_int_equal(m->n_fallbacks, 1);
    assert_string_equal(m->fallbacks[0], "n");
    assert_int_equal(m->retry_max_attempts, 4);
    assert_int_equal(m->retry_backoff_ms, 5);
    assert_int_equal(m->breaker.failures, 5); /* deployments: the breaker's defaults */
    assert_int_equal(m->breaker.open_ms, 10000);
    assert_non_null(m->router);
    assert_int_equal(tg_router_size(m->router), 2);

    const struct tg_model_route *n = tg_config_route(c, "n");
    assert_int_equal(n->n_deployments, 1);
    assert_string_equal(n->deployments[0].provider, "b");
    assert_string_equal(n->deployments[0].upstream_model, "n-b");
    assert_int_equal(n->retry_max_attempts, 3);
    assert_int_equal(n->retry_backoff_ms, 100);
    assert_int_equal(n->breaker.failures, 0); /* single-provider form: never opens */
    tg_config_free(c);
}

static void
breaker_section_fills_defaults(void **state)
{
    char err[512];
    struct tg_config *c = load("models:\n"
                               "  - name: m\n"
                               "    provider: a\n"
                               "    breaker: {failures: 2, open_ms: 50}\n",
                               err, sizeof(err));
    assert_non_null(c);
    const struct tg_model_route *m = tg_config_route(c, "m");
    assert_int_equal(m->breaker.failures, 2);
    assert_int_equal(m->breaker.open_ms, 50);
    assert_int_equal(m->breaker.error_rate_pct, 50);
    assert_int_equal(m->breaker.window_ms, 30000);
    tg_config_free(c);
}

/* A deployment's timeouts keep only the fields it gives (zero: its provider's, merged per
 * field when the call is made); a deployment without the key has none. */
static void
deployment_timeouts(void **state)
{
    char err[512];
    struct tg_config *c = load("models:\n"
                               "  - name: m\n"
                               "    deployments:\n"
                               "      - provider: a\n"
                               "        timeouts: {first_byte_ms: 150, total_ms: 9000}\n"
                               "      - {provider: b, timeouts: {connect_ms: 7, idle_ms: 8}}\n"
                               "      - {provider: b, upstream_model: x}\n",
                               err, sizeof(err));
    if (c == NULL) {
        fail_msg("%s", err);
    }
    const struct tg_model_route *m = tg_config_route(c, "m");
    assert_int_equal(m->n_deployments, 3);
    const struct tg_upstream_timeouts *t = &m->deployments[0].timeouts;
    assert_int_equal(t->connect_ms, 0);
    assert_int_equal(t->first_byte_ms, 150);
    assert_int_equal(t->idle_ms, 0);
    assert_int_equal(t->total_ms, 9000);
    t = &m->deployments[1].timeouts;
    assert_int_equal(t->connect_ms, 7);
    assert_int_equal(t->first_byte_ms, 0);
    assert_int_equal(t->idle_ms, 8);
    assert_int_equal(t->total_ms, 0);
    t = &m->deployments[2].timeouts;
    assert_true(t->connect_ms == 0 && t->first_byte_ms == 0 && t->idle_ms == 0 && t->total_ms == 0);
    tg_config_free(c);
}

static void
expect_error(const char *yaml, const char *want)
{
    char err[512] = "";
    struct tg_config *c = load(yaml, err, sizeof(err));
    if (c != NULL || strstr(err, want) == NULL) {
        fail_msg("expected \"%s\" in \"%s\"", want, err);
    }
}

static void
errors_name_the_key(void **state)
{
    expect_error("models:\n  - {name: m, provider: a, deployments: [{provider: b}]}\n",
                 "name and provider are required (or name and deployments:)");
    expect_error("models:\n  - {name: m, deployments: [{provider: c}]}\n",
                 "models[0].deployments[0].provider: no provider is named 'c'");
    expect_error("models:\n  - {name: m, deployments: [{upstream_model: x}]}\n",
                 "deployments[0]: provider is required");
    expect_error("models:\n  - {name: m, deployments: []}\n", "expected a list of 1 to 64");
    expect_error("models:\n  - {name: m, provider: a, strategy: random}\n",
                 "expected weighted, least_outstanding or lowest_latency");
    expect_error("models:\n  - {name: m, provider: a, fallbacks: [zz]}\n",
                 "models[0].fallbacks[0]: 'zz' is not another configured model");
    expect_error("models:\n  - {name: m, provider: a, fallbacks: [m]}\n",
                 "'m' is not another configured model");
    expect_error("models:\n  - {name: m, provider: a, retry: {max_attempts: 0}}\n", "out of range");
    expect_error("models:\n  - {name: m, deployments: [{provider: a, weight: 0}]}\n",
                 "out of range");
    expect_error("models:\n  - {name: m, provider: a, breaker: {bogus: 1}}\n",
                 "unknown key 'bogus'");
    expect_error("models:\n  - {name: m, deployments: [{provider: a, timeouts: {first_byte_ms: "
                 "0}}]}\n",
                 "out of range");
    expect_error("models:\n  - {name: m, deployments: [{provider: a, timeouts: {read_ms: 5}}]}\n",
                 "unknown key 'read_ms'");
}

int
main(void)
{
    unsetenv("OPENAI_API_KEY");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deployments_and_defaults),
        cmocka_unit_test(breaker_section_fills_defaults),
        cmocka_unit_test(deployment_timeouts),
        cmocka_unit_test(errors_name_the_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
