/*
 * admin_costs.c: what the organization spends: OpenAI's Costs API, the price table, and the
 * month-end forecasts.
 *
 * Routes (under /v1/organization/):
 *
 *   GET costs                          owners (billing)
 *       OpenAI's shape: start_time (required), end_time, bucket_width=1d (the only width),
 *       project_ids, api_key_ids, group_by project_id | line_item | api_key_id, limit in
 *       buckets (1..180, default 7), page. Results:
 *         {"object":"organization.costs.result","amount":{"value":0.001234,"currency":"usd"},
 *          "cost_micros":1234,"line_item":str|null,"project_id":str|null,
 *          "api_key_id":str|null,"quantity":N|null,"quantity_unit":"tokens"|null}
 *       Without line_item each result is the ledger's cost_micros sum of its group, exactly.
 *       With line_item the cost of each model is split into "<model>, input", "<model>,
 *       cached input" and "<model>, output" (admin_cost_split: shares of the ledger's cost in
 *       the proportion of tokens x today's prices, by largest remainder), so the items of a
 *       model still sum to the ledger's cost to the micro-dollar even when prices changed
 *       since; quantity is that item's tokens. ?format=csv answers one CSV row per result.
 *   GET prices                         any admin key
 *       The price table (built in, overridden by the config) in the list shape:
 *         {"object":"organization.price","id":model,"model":model,"input_micros":N,
 *          "cached_input_micros":N,"output_micros":N,"per_tokens":1000000}
 *       ?model=M answers the one entry M is priced by (dated names find their base entry), or
 *       an empty list.
 *   GET forecast                       owners
 *   GET projects/{project_id}/forecast owners; readers who are members of the project
 *       The budget period (calendar month) so far, from the ledger, and its linear
 *       projection to the period's end:
 *         {"object":"organization.costs.forecast","project_id":str|null,
 *          "period_start":s,"period_end":s,"as_of":s,"month_to_date_micros":N,
 *          "daily_average_micros":N,"projected_micros":N,"budget_micros":N|null,
 *          "exceeds_budget":bool,"currency":"usd"}
 *       daily_average = spend x 1 day / elapsed and projected = spend x period / elapsed, both
 *       rounded up; elapsed counts at least one hour, so a few cents in the first minutes of a
 *       month do not project a fortune. The budget is the level's monthly hard limit.
 */
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "admin/admin_report.h"
#include "core/clock.h"
#include "core/json.h"
#include "policy/admission.h"

#define DAY_MS 86400000LL
#define MIN_ELAPSED_MS 3600000LL

/* ---- costs ----------------------------------------------------------------------------------- */

static const char *const line_kinds[3] = {"input", "cached input", "output"};

struct cost_item {
    const struct admin_report_row *row;
    const char *kind; /* NULL when not split by line item */
    int64_t micros;
    int64_t quantity; /* tokens of the line item */
};

static void
nullable(struct tg_buf *b, const char *s)
{
    if (s == NULL) {
        tg_buf_append_str(b, "null");
    } else {
        tg_json_quote(b, s);
    }
}

static void
item_json(struct tg_buf *b, const struct cost_item *it)
{
    tg_buf_append_str(b, "{\"object\":\"organization.costs.result\",\"amount\":{\"value\":");
    admin_usd_number(b, it->micros);
    tg_buf_appendf(
        b, ",\"currency\":\"usd\"},\"cost_micros\":%lld,\"line_item\":", (long long)it->micros);
    if (it->kind != NULL) {
        struct tg_buf li;
        tg_buf_init(&li, 0);
        tg_buf_appendf(&li, "%s, %s", it->row->model ? it->row->model : "", it->kind);
        tg_json_quote(b, li.data);
        tg_buf_deinit(&li);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_append_str(b, ",\"project_id\":");
    nullable(b, it->row->project_id);
    tg_buf_append_str(b, ",\"api_key_id\":");
    nullable(b, it->row->key_id);
    if (it->kind != NULL) {
        tg_buf_appendf(b, ",\"quantity\":%lld,\"quantity_unit\":\"tokens\"}",
                       (long long)it->quantity);
    } else {
        tg_buf_append_str(b, ",\"quantity\":null,\"quantity_unit\":null}");
    }
}

static void
item_csv(struct tg_buf *b, const struct admin_report_window *w, const struct cost_item *it)
{
    const struct admin_report_row *r = it->row;
    tg_buf_appendf(b, "%lld,%lld,", (long long)(r->bucket_ms / 1000),
                   (long long)((r->bucket_ms + w->bucket_ms) / 1000));
    admin_iso_time(b, r->bucket_ms);
    tg_buf_append_str(b, ",");
    admin_csv_field(b, r->project_id);
    tg_buf_append_str(b, ",");
    admin_csv_field(b, r->key_id);
    tg_buf_append_str(b, ",");
    if (it->kind != NULL) {
        struct tg_buf li;
        tg_buf_init(&li, 0);
        tg_buf_appendf(&li, "%s, %s", r->model ? r->model : "", it->kind);
        admin_csv_field(b, li.data);
        tg_buf_deinit(&li);
    }
    tg_buf_append_str(b, ",");
    admin_usd_number(b, it->micros);
    tg_buf_appendf(b, ",%lld,usd,", (long long)it->micros);
    if (it->kind != NULL) {
        tg_buf_appendf(b, "%lld,tokens", (long long)it->quantity);
    } else {
        tg_buf_append_str(b, ",");
    }
    tg_buf_append_str(b, "\r\n");
}

/* Calls emit for each result of row: the whole cost, or its line items with any tokens or
 * cost (an item with neither says nothing). Returns how many it emitted. */
typedef void (*emit_fn)(struct tg_buf *b, const struct admin_report_window *w,
                        const struct cost_item *it, size_t n);

static size_t
row_items(struct admin_job *j, const struct admin_report_window *w,
          const struct admin_report_row *r, bool by_line, emit_fn emit, size_t n)
{
    if (!by_line) {
        struct cost_item it = {.row = r, .micros = r->cost_micros};
        emit(&j->out, w, &it, n);
        return 1;
    }
    const struct tg_price *p = r->model ? tg_price_lookup(j->state->prices, r->model) : NULL;
    int64_t parts[3];
    admin_cost_split(r->cost_micros, r->prompt_tokens, r->cached_tokens, r->completion_tokens, p,
                     parts);
    int64_t uncached =
        r->prompt_tokens > r->cached_tokens ? r->prompt_tokens - r->cached_tokens : 0;
    int64_t qty[3] = {uncached, r->cached_tokens, r->completion_tokens};
    size_t k = 0;
    for (int i = 0; i < 3; i++) {
        if (parts[i] == 0 && qty[i] == 0) {
            continue;
        }
        struct cost_item it = {
            .row = r, .kind = line_kinds[i], .micros = parts[i], .quantity = qty[i]};
        emit(&j->out, w, &it, n + k++);
    }
    return k;
}

static void
emit_json(struct tg_buf *b, const struct admin_report_window *w, const struct cost_item *it,
          size_t n)
{
    tg_buf_append_str(b, n ? "," : "");
    item_json(b, it);
}

static void
emit_csv(struct tg_buf *b, const struct admin_report_window *w, const struct cost_item *it,
         size_t n)
{
    item_csv(b, w, it);
}

static void
costs(struct admin_job *j)
{
    static const char *const groups[] = {"project_id", "line_item", "api_key_id", NULL};
    const char *width = admin_query(j, "bucket_width");
    if (width != NULL && strcmp(width, "1d") != 0) {
        admin_error(j, 400, "bucket_width must be 1d for costs.", "bucket_width", NULL);
        return;
    }
    struct admin_report_window w;
    struct admin_report_spec spec = {0};
    bool is_csv = false;
    if (!admin_report_groups_check(j, groups) ||
        !admin_report_params(j, DAY_MS, 7, 180, false, &w, &spec, &is_csv)) {
        return;
    }
    spec.by_project = admin_report_has_group(j, "project_id");
    spec.by_key = admin_report_has_group(j, "api_key_id");
    bool by_line = admin_report_has_group(j, "line_item");
    spec.by_model = by_line;
    struct admin_report rep;
    admin_report_init(&rep, &spec);
    int rc = admin_report_load(&rep, j->store, j->state->org_id, &w, NULL, NULL, 0);
    if (rc < 0) {
        admin_store_error(j, rc, "costs");
        admin_report_deinit(&rep);
        return;
    }
    struct tg_buf *b = &j->out;
    size_t k = 0;
    if (is_csv) {
        j->content_type = "text/csv; charset=utf-8";
        tg_buf_append_str(b, "start_time,end_time,bucket_start,project_id,api_key_id,line_item,"
                             "amount_usd,cost_micros,currency,quantity,quantity_unit\r\n");
        for (; k < rep.n_rows; k++) {
            row_items(j, &w, &rep.rows[k], by_line, emit_csv, 0);
        }
        admin_report_deinit(&rep);
        return;
    }
    tg_buf_append_str(b, "{\"object\":\"page\",\"data\":[");
    for (int64_t i = 0; i < w.n_buckets; i++) {
        int64_t start = w.first_ms + i * w.bucket_ms;
        tg_buf_appendf(b,
                       "%s{\"object\":\"bucket\",\"start_time\":%lld,\"end_time\":%lld,"
                       "\"results\":[",
                       i ? "," : "", (long long)(start / 1000),
                       (long long)((start + w.bucket_ms) / 1000));
        for (size_t n = 0; k < rep.n_rows && rep.rows[k].bucket_ms == start; k++) {
            n += row_items(j, &w, &rep.rows[k], by_line, emit_json, n);
        }
        tg_buf_append_str(b, "]}");
    }
    tg_buf_appendf(b, "],\"has_more\":%s,\"next_page\":", w.has_more ? "true" : "false");
    if (w.has_more) {
        char cursor[24];
        admin_report_cursor(w.next_s, cursor);
        tg_json_quote(b, cursor);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_append_str(b, "}");
    admin_report_deinit(&rep);
}

/* ---- prices ------------------------------------------------------------------------------------
 */

static void
price_json(struct tg_buf *b, const struct tg_price *p)
{
    tg_buf_append_str(b, "{\"object\":\"organization.price\",\"id\":");
    tg_json_quote(b, p->model);
    tg_buf_append_str(b, ",\"model\":");
    tg_json_quote(b, p->model);
    tg_buf_appendf(b,
                   ",\"input_micros\":%lld,\"cached_input_micros\":%lld,"
                   "\"output_micros\":%lld,\"per_tokens\":1000000}",
                   (long long)p->input_micros, (long long)p->cached_input_micros,
                   (long long)p->output_micros);
}

static void
prices(struct admin_job *j)
{
    const struct tg_price_table *t = j->state->prices;
    const char *model = admin_query(j, "model");
    struct admin_page pg;
    if (!admin_page_begin(&pg, j)) {
        return;
    }
    struct tg_buf item;
    tg_buf_init(&item, 0);
    if (model != NULL) {
        const struct tg_price *p = tg_price_lookup(t, model);
        if (p != NULL) {
            price_json(&item, p);
            admin_page_add(&pg, p->model, item.data);
        }
    } else {
        size_t n = tg_price_table_count(t);
        for (size_t i = 0; i < n; i++) {
            const struct tg_price *p = tg_price_table_at(t, i);
            tg_buf_reset(&item);
            price_json(&item, p);
            if (!admin_page_add(&pg, p->model, item.data)) {
                break;
            }
        }
    }
    tg_buf_deinit(&item);
    admin_page_end(&pg);
}

/* ---- forecasts ---------------------------------------------------------------------------------
 */

struct spend_sum {
    int64_t micros;
};

static int
sum_cost(const struct tg_usage_result *r, void *arg)
{
    struct spend_sum *s = arg;
    s->micros += r->cost_micros;
    return 0;
}

/* ceil(a * b / c) for non-negative a, b and positive c, without overflow. */
static int64_t
mul_div_up(int64_t a, int64_t b, int64_t c)
{
    unsigned __int128 n = (unsigned __int128)a * (unsigned __int128)b;
    unsigned __int128 q = (n + (unsigned __int128)c - 1) / (unsigned __int128)c;
    return q > (unsigned __int128)INT64_MAX ? INT64_MAX : (int64_t)q;
}

static void
forecast_answer(struct admin_job *j, const char *project_id, const struct tg_level_limits *lim)
{
    int64_t now = tg_clock_unix_ms();
    /* The month as admission counts it (config budgets.timezone_offset_minutes). */
    int tz = j->state->config->budget_tz_offset_minutes;
    int64_t period_start = tg_period_start_ms(now, tz);
    int64_t period_end = tg_period_next_ms(now, tz);
    struct tg_usage_query q = {
        .org_id = j->state->org_id,
        .start_ms = period_start,
        .end_ms = now + 1,
        .bucket_ms = DAY_MS,
        .project_id = project_id,
    };
    struct spend_sum s = {0};
    int rc = j->store->ops->usage_query(j->store, &q, sum_cost, &s);
    if (rc < 0) {
        admin_store_error(j, rc, "forecast");
        return;
    }
    int64_t elapsed = now - period_start;
    elapsed = elapsed < MIN_ELAPSED_MS ? MIN_ELAPSED_MS : elapsed;
    int64_t spend = s.micros > 0 ? s.micros : 0;
    int64_t daily = mul_div_up(spend, DAY_MS, elapsed);
    int64_t projected = mul_div_up(spend, period_end - period_start, elapsed);
    int64_t budget = lim != NULL && lim->has_budget ? lim->budget.monthly_limit_micros : 0;
    struct tg_buf *b = &j->out;
    tg_buf_append_str(b, "{\"object\":\"organization.costs.forecast\",\"project_id\":");
    nullable(b, project_id);
    tg_buf_appendf(b,
                   ",\"period_start\":%lld,\"period_end\":%lld,\"as_of\":%lld,"
                   "\"month_to_date_micros\":%lld,\"daily_average_micros\":%lld,"
                   "\"projected_micros\":%lld,\"budget_micros\":",
                   (long long)(period_start / 1000), (long long)(period_end / 1000),
                   (long long)(now / 1000), (long long)s.micros, (long long)daily,
                   (long long)projected);
    if (budget > 0) {
        tg_buf_appendf(b, "%lld", (long long)budget);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_appendf(b, ",\"exceeds_budget\":%s,\"currency\":\"usd\"}",
                   budget > 0 && projected > budget ? "true" : "false");
}

static void
forecast_org(struct admin_job *j)
{
    forecast_answer(j, NULL, &j->state->org_limits);
}

static void
forecast_project(struct admin_job *j)
{
    forecast_answer(j, j->project->id, &j->project->limits);
}

const struct admin_route tg_admin_routes_costs[] = {
    {TG_HTTP_GET, "costs", ADMIN_OWNER, "Costs in daily buckets, by project, key and line item",
     costs},
    {TG_HTTP_GET, "prices", ADMIN_ORG_READ, "The price table (micro-dollars per 1M tokens)",
     prices},
    {TG_HTTP_GET, "forecast", ADMIN_OWNER,
     "The organization's spend this month and its month-end forecast", forecast_org},
    {TG_HTTP_GET, "projects/{project_id}/forecast", ADMIN_PROJECT,
     "A project's spend this month and its month-end forecast against its budget",
     forecast_project},
    {0, NULL, 0, NULL, NULL},
};
