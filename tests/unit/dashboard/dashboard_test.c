/*
 * dashboard_test.c: the dashboard's asset table (dashboard/dashboard.h): the page under its
 * three names, each asset with its content type and non-empty content, a stable quoted ETag
 * that differs between assets, and no asset for names outside the table or outside
 * /dashboard (no path tricks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "dashboard/dashboard.h"

static void
page_under_its_names(void **unused)
{
    const struct tg_dashboard_asset *a = tg_dashboard_asset_find("/dashboard");
    assert_non_null(a);
    assert_string_equal(a->name, "index.html");
    assert_string_equal(a->content_type, "text/html; charset=utf-8");
    assert_ptr_equal(tg_dashboard_asset_find("/dashboard/"), a);
    assert_ptr_equal(tg_dashboard_asset_find("/dashboard/index.html"), a);
    assert_non_null(strstr((const char *)a->data, "/dashboard/app.js"));
}

static void
assets_and_types(void **unused)
{
    static const char *const want[][2] = {
        {"app.js", "text/javascript; charset=utf-8"},
        {"app.css", "text/css; charset=utf-8"},
        {"uPlot.iife.min.js", "text/javascript; charset=utf-8"},
        {"uPlot.min.css", "text/css; charset=utf-8"},
    };
    const char *etags[4];
    for (size_t i = 0; i < 4; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/dashboard/%s", want[i][0]);
        const struct tg_dashboard_asset *a = tg_dashboard_asset_find(path);
        assert_non_null(a);
        assert_string_equal(a->name, want[i][0]);
        assert_string_equal(a->content_type, want[i][1]);
        assert_true(a->len > 100);
        /* The embedded arrays end in a NUL past len (for text consumers). */
        assert_int_equal(a->data[a->len], 0);
        assert_int_equal(strlen(a->etag), 18);
        assert_int_equal(a->etag[0], '"');
        assert_int_equal(a->etag[17], '"');
        assert_ptr_equal(tg_dashboard_asset_find(path)->etag, a->etag);
        etags[i] = a->etag;
    }
    for (size_t i = 0; i < 4; i++) {
        for (size_t k = i + 1; k < 4; k++) {
            assert_string_not_equal(etags[i], etags[k]);
        }
    }
}

static void
unknown_names(void **unused)
{
    static const char *const bad[] = {
        "/dashboard/nope.js",
        "/dashboard/app.js/",
        "/dashboard/../app.js",
        "/dashboard//app.js",
        "/dashboardx",
        "/dashboard.js",
        "/app.js",
        "/",
        "/dashboard/APP.JS",
        "/dashboard/app",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(tg_dashboard_asset_find(bad[i]));
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(page_under_its_names),
        cmocka_unit_test(assets_and_types),
        cmocka_unit_test(unknown_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
