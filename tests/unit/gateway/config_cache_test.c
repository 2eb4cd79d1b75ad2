/*
 * config_cache_test.c: cache.shared_projects, the operator's list of projects whose response
 * caches are one partition: parsed, asked by name, refused when malformed, and the partition
 * it selects gives the listed projects one key while an unlisted project keeps its own.
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

#include "cache/cache.h"
#include "core/err.h"
#include "gateway/config.h"

/* Loads yaml (after one mock provider); returns the config or NULL with the message in err. */
static struct tg_config *
load(const char *yaml, char *err, size_t err_cap)
{
    char path[] = "/tmp/tg-config-cache-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("providers:\n  - {name: a, type: mock}\nmodels:\n  - {name: m, provider: a}\n", f);
    fputs(yaml, f);
    fclose(f);
    struct tg_config *c = NULL;
    int rc = tg_config_load(path, &c, err, err_cap);
    unlink(path);
    return rc == 0 ? c : NULL;
}

static void
shared_projects_listed(void **state)
{
    char err[512];
    struct tg_config *c = load("cache:\n  shared_projects: [alpha, beta]\n", err, sizeof(err));
    if (c == NULL) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_cache_shared_projects, 2);
    assert_true(tg_config_cache_shared(c, "alpha"));
    assert_true(tg_config_cache_shared(c, "beta"));
    assert_false(tg_config_cache_shared(c, "gamma"));
    assert_false(tg_config_cache_shared(c, "alph"));
    assert_false(tg_config_cache_shared(c, NULL));
    tg_config_free(c);
}

static void
nothing_shared_by_default(void **state)
{
    char err[512];
    struct tg_config *c = load("", err, sizeof(err));
    if (c == NULL) {
        fail_msg("%s", err);
    }
    assert_int_equal(c->n_cache_shared_projects, 0);
    assert_false(tg_config_cache_shared(c, "alpha"));
    assert_false(tg_config_cache_shared(NULL, "alpha"));
    tg_config_free(c);
}

static void
expect_error(const char *yaml, const char *want)
{
    char err[512] = "";
    struct tg_config *c = load(yaml, err, sizeof(err));
    if (c != NULL || strstr(err, want) == NULL) {
        tg_config_free(c);
        fail_msg("expected \"%s\" in \"%s\"", want, err);
    }
}

static void
malformed_refused(void **state)
{
    expect_error("cache:\n  shared_projects: alpha\n", "expected a list of project names");
    expect_error("cache:\n  shared_projects: [alpha, '']\n",
                 "cache.shared_projects[1]: expected a project name");
    expect_error("cache:\n  shared_projects: [[x]]\n", "expected a project name");
    expect_error("cache:\n  shared: true\n", "unknown key 'shared'");
}

/* The partition the proxy picks ("shared" for a listed project, else the project id) is what
 * separates keys: two listed projects meet, an unlisted one does not. */
static void
partition_separates_keys(void **state)
{
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    unsigned char shared_a[TG_CACHE_KEY_BYTES], shared_b[TG_CACHE_KEY_BYTES];
    unsigned char own_c[TG_CACHE_KEY_BYTES], own_d[TG_CACHE_KEY_BYTES];
    assert_int_equal(tg_cache_key("shared", "/v1/chat/completions", body, strlen(body), shared_a),
                     0);
    assert_int_equal(tg_cache_key("shared", "/v1/chat/completions", body, strlen(body), shared_b),
                     0);
    assert_int_equal(tg_cache_key("proj_c", "/v1/chat/completions", body, strlen(body), own_c), 0);
    assert_int_equal(tg_cache_key("proj_d", "/v1/chat/completions", body, strlen(body), own_d), 0);
    assert_memory_equal(shared_a, shared_b, TG_CACHE_KEY_BYTES);
    assert_memory_not_equal(shared_a, own_c, TG_CACHE_KEY_BYTES);
    assert_memory_not_equal(own_c, own_d, TG_CACHE_KEY_BYTES);
}

int
main(void)
{
    unsetenv("OPENAI_API_KEY");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shared_projects_listed),
        cmocka_unit_test(nothing_shared_by_default),
        cmocka_unit_test(malformed_refused),
        cmocka_unit_test(partition_separates_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
