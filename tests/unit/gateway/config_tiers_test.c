/*
 * config_tiers_test.c: model tiers in the config (gateway/config.h): model_tiers lists and
 * per-route tier: merged without duplicates, and the refusals (not a map, an empty list, a
 * tier listed twice), each naming its line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/config.h"

#define HEAD                                                                                       \
    "providers:\n  - name: m\n    type: mock\nmodels:\n  - name: a\n    provider: m\n"             \
    "    tier: small\n  - name: b\n    provider: m\n  - name: \"*\"\n    provider: m\n"

/* Loads text from a temporary file; returns the loader's code, err filled. */
static int
load(const char *text, struct tg_config **out, char *err, size_t err_cap)
{
    char path[] = "/tmp/tg-tiers-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    *out = NULL;
    int rc = tg_config_load(path, out, err, err_cap);
    unlink(path);
    return rc;
}

static void
test_tiers_merged(void **state)
{
    (void)state;
    struct tg_config *c;
    char err[512];
    assert_int_equal(
        load(HEAD "model_tiers:\n  small: [b, a, c]\n  big: [x]\n", &c, err, sizeof(err)), 0);
    const char *names[8];
    size_t n = tg_config_tier_models(c, "small", names, 8);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "b");
    assert_string_equal(names[1], "a");
    assert_string_equal(names[2], "c");
    assert_int_equal(tg_config_tier_models(c, "big", names, 8), 1);
    assert_int_equal(tg_config_tier_models(c, "none", names, 8), 0);
    assert_int_equal(tg_config_tier_models(c, "small", names, 2), 2); /* capped */
    tg_config_free(c);
    /* Without model_tiers, the routes' tier: alone. */
    assert_int_equal(load(HEAD, &c, err, sizeof(err)), 0);
    assert_int_equal(tg_config_tier_models(c, "small", names, 8), 1);
    assert_string_equal(names[0], "a");
    tg_config_free(c);
}

static void
test_tiers_refused(void **state)
{
    (void)state;
    static const struct {
        const char *tail;
        const char *needle;
    } bad[] = {
        {"model_tiers: [a]\n", ":12:"},
        {"model_tiers:\n  small: []\n", ":13:"},
        {"model_tiers:\n  small: [a]\n  small: [b]\n", "duplicate key 'small'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), "%s%s", HEAD, bad[i].tail);
        struct tg_config *c;
        char err[512] = "";
        assert_true(load(text, &c, err, sizeof(err)) < 0);
        assert_null(c);
        if (strstr(err, bad[i].needle) == NULL) {
            fail_msg("case %zu: %s", i, err);
        }
        if (i < 2 && strstr(err, "model_tiers") == NULL) {
            fail_msg("case %zu: %s", i, err);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiers_merged),
        cmocka_unit_test(test_tiers_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
