/*
 * report_test.c: the pure parts of the usage and costs reports (admin_report.h): bucket
 * pages and their cursors, filtering and merging the store's groups, the split of a cost
 * into line items (always summing to the ledger's cost), CSV fields and number formats.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "admin/admin_report.h"
#include "core/buf.h"

#define DAY 86400000LL

static void
window_first_page_and_cursor(void **state)
{
    struct admin_report_window w;
    /* 2026-01-01 12:00 UTC .. 2026-01-11 00:00: eleven day buckets starting 2026-01-01. */
    int64_t start = 1767268800;
    int64_t end_ms = 1768089600000LL;
    assert_true(admin_report_window_make(start, end_ms, DAY, 7, -1, &w));
    assert_int_equal(w.first_ms, 1767225600000LL);
    assert_int_equal(w.n_buckets, 7);
    assert_int_equal(w.start_ms, start * 1000);
    assert_int_equal(w.end_ms, 1767225600000LL + 7 * DAY);
    assert_true(w.has_more);
    assert_int_equal(w.next_s, 1767225600 + 7 * 86400);

    char cur[24];
    admin_report_cursor(w.next_s, cur);
    int64_t back = 0;
    assert_true(admin_report_cursor_parse(cur, &back));
    assert_int_equal(back, w.next_s);

    struct admin_report_window w2;
    assert_true(admin_report_window_make(start, end_ms, DAY, 7, back, &w2));
    assert_int_equal(w2.first_ms, back * 1000);
    assert_int_equal(w2.n_buckets, 3);
    assert_int_equal(w2.start_ms, back * 1000);
    assert_int_equal(w2.end_ms, end_ms);
    assert_false(w2.has_more);
}

static void
window_refuses_foreign_cursors(void **state)
{
    struct admin_report_window w;
    int64_t start = 1767225600;
    int64_t end_ms = (start + 3 * 86400) * 1000;
    /* before the window, not on the grid, after its end */
    assert_false(admin_report_window_make(start, end_ms, DAY, 7, start - 86400, &w));
    assert_false(admin_report_window_make(start, end_ms, DAY, 7, start + 60, &w));
    assert_false(admin_report_window_make(start, end_ms, DAY, 7, start + 3 * 86400, &w));
    int64_t s = 0;
    assert_false(admin_report_cursor_parse("page_12", &s));
    assert_false(admin_report_cursor_parse("page_000000006955340g", &s));
    assert_false(admin_report_cursor_parse("pgae_0000000069553400", &s));
    assert_false(admin_report_cursor_parse("page_ffffffffffffffff", &s));
    /* a partial last bucket still counts as one */
    assert_true(admin_report_window_make(start, end_ms + 1000, DAY, 7, -1, &w));
    assert_int_equal(w.n_buckets, 4);
    assert_int_equal(w.end_ms, end_ms + 1000);
}

static struct tg_usage_result
res(int64_t bucket, const char *p, const char *k, const char *m, int64_t n, int64_t cost)
{
    return (struct tg_usage_result){.bucket_start_ms = bucket,
                                    .project_id = p,
                                    .key_id = k,
                                    .model = m,
                                    .requests = n,
                                    .prompt_tokens = 10 * n,
                                    .cached_tokens = n,
                                    .completion_tokens = 5 * n,
                                    .reasoning_tokens = 0,
                                    .cost_micros = cost};
}

static void
rows_filter_and_merge(void **state)
{
    /* Two projects asked for, not grouped by project; grouped by model. The store grouped by
     * project (several values), so rows of p1 and p2 merge and p3's are dropped. */
    struct admin_report_spec spec = {
        .by_model = true, .project_ids = {"p1", "p2"}, .n_project_ids = 2};
    struct admin_report r;
    admin_report_init(&r, &spec);
    struct tg_usage_result in[] = {
        res(DAY, "p1", NULL, "m-b", 1, 100), res(DAY, "p1", NULL, "m-a", 2, 200),
        res(DAY, "p2", NULL, "m-a", 3, 300), res(DAY, "p3", NULL, "m-a", 4, 999),
        res(0, "p2", NULL, "m-a", 5, 500),
    };
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        admin_report_add(&r, &in[i]);
    }
    admin_report_finish(&r);
    assert_int_equal(r.n_rows, 3);
    assert_int_equal(r.rows[0].bucket_ms, 0);
    assert_string_equal(r.rows[0].model, "m-a");
    assert_null(r.rows[0].project_id);
    assert_int_equal(r.rows[0].cost_micros, 500);
    assert_int_equal(r.rows[1].bucket_ms, DAY);
    assert_string_equal(r.rows[1].model, "m-a");
    assert_int_equal(r.rows[1].requests, 5);
    assert_int_equal(r.rows[1].prompt_tokens, 50);
    assert_int_equal(r.rows[1].cost_micros, 500);
    assert_string_equal(r.rows[2].model, "m-b");
    assert_int_equal(r.rows[2].cost_micros, 100);
    admin_report_deinit(&r);
}

static void
rows_single_filter_is_the_stores(void **state)
{
    /* One value: the store filtered already, so nothing is dropped here. */
    struct admin_report_spec spec = {.by_project = true, .key_ids = {"k1"}, .n_key_ids = 1};
    struct admin_report r;
    admin_report_init(&r, &spec);
    struct tg_usage_result a = res(0, "p1", NULL, NULL, 1, 7);
    struct tg_usage_result b = res(0, NULL, NULL, NULL, 1, 8);
    admin_report_add(&r, &a);
    admin_report_add(&r, &b);
    admin_report_finish(&r);
    assert_int_equal(r.n_rows, 2);
    assert_null(r.rows[0].project_id); /* NULL sorts first */
    assert_string_equal(r.rows[1].project_id, "p1");
    admin_report_deinit(&r);
}

static void
split_sums_to_the_cost(void **state)
{
    struct tg_price p = {.model = "m",
                         .input_micros = 150000,
                         .cached_input_micros = 75000,
                         .output_micros = 600000};
    int64_t out[3];
    /* 900 uncached x 0.15 + 100 cached x 0.075 + 500 x 0.60 = 135 + 7.5 + 300 = 442.5 */
    admin_cost_split(443, 1000, 100, 500, &p, out);
    assert_int_equal(out[0] + out[1] + out[2], 443);
    assert_int_equal(out[0], 135);
    assert_int_equal(out[2], 300);
    assert_int_equal(out[1], 8); /* the largest remainder takes the rounding */

    /* Prices changed since the requests were billed: still sums to the ledger's cost. */
    for (int64_t c = 1; c < 5000; c += 37) {
        admin_cost_split(c, 12345, 678, 910, &p, out);
        assert_int_equal(out[0] + out[1] + out[2], c);
        assert_true(out[0] >= 0 && out[1] >= 0 && out[2] >= 0);
    }

    /* No price: shares of the token counts. */
    admin_cost_split(100, 50, 0, 50, NULL, out);
    assert_int_equal(out[0], 50);
    assert_int_equal(out[1], 0);
    assert_int_equal(out[2], 50);

    /* No tokens at all: the cost stays whole, as input. */
    admin_cost_split(42, 0, 0, 0, &p, out);
    assert_int_equal(out[0], 42);
    assert_int_equal(out[1] + out[2], 0);

    /* Huge values do not overflow. */
    admin_cost_split(INT64_MAX / 2, INT64_MAX / 4, 0, INT64_MAX / 4, &p, out);
    assert_true(out[0] + out[1] + out[2] == INT64_MAX / 2);
}

static void
csv_fields_and_numbers(void **state)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    admin_csv_field(&b, "plain");
    tg_buf_append_str(&b, "|");
    admin_csv_field(&b, "gpt-4o, input");
    tg_buf_append_str(&b, "|");
    admin_csv_field(&b, "say \"hi\"");
    tg_buf_append_str(&b, "|");
    admin_csv_field(&b, "=HYPERLINK(\"x\")");
    tg_buf_append_str(&b, "|");
    admin_csv_field(&b, "@sum");
    tg_buf_append_str(&b, "|");
    admin_csv_field(&b, NULL);
    tg_buf_append_str(&b, "|");
    admin_csv_field(&b, "a\nb");
    assert_string_equal(b.data, "plain|\"gpt-4o, input\"|\"say \"\"hi\"\"\"|"
                                "\"'=HYPERLINK(\"\"x\"\")\"|'@sum||\"a\nb\"");
    tg_buf_reset(&b);
    admin_usd_number(&b, 150);
    tg_buf_append_str(&b, " ");
    admin_usd_number(&b, 12345678);
    tg_buf_append_str(&b, " ");
    admin_iso_time(&b, 1767225600000LL);
    assert_string_equal(b.data, "0.000150 12.345678 2026-01-01T00:00:00Z");
    tg_buf_deinit(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(window_first_page_and_cursor),
        cmocka_unit_test(window_refuses_foreign_cursors),
        cmocka_unit_test(rows_filter_and_merge),
        cmocka_unit_test(rows_single_filter_is_the_stores),
        cmocka_unit_test(split_sums_to_the_cost),
        cmocka_unit_test(csv_fields_and_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
