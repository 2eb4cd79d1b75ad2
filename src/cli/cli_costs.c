/*
 * cli_costs.c: `tollgate costs`, `tollgate forecast` and `tollgate cost estimate`: the
 * request paths and tables (pure, for the unit tests) and the commands that send them.
 *
 * Money stays integer micro-dollars from the API to the screen (the API's cost_micros), so
 * a total the CLI prints is the ledger's to the micro-dollar. The estimate is exact integer
 * arithmetic (128-bit intermediates) rounded up once, as the gateway bills.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

#define MAX_PAGES 1000
#define MAX_REQUESTS 10000000000LL /* 10^10 a day */
#define MAX_TOKENS 100000000LL     /* 10^8 a request */
#define MAX_PRICE (1LL << 40)      /* micro-dollars per 1M tokens: $1.1M */

/* ---- costs ------------------------------------------------------------------------------------
 */

static int
parse_cost_groups(struct tg_cli_costs_query *q, const char *list, char *err, size_t err_cap)
{
    for (const char *p = list; *p != '\0';) {
        size_t len = strcspn(p, ",");
        char word[32];
        snprintf(word, sizeof(word), "%.*s", (int)(len < sizeof(word) ? len : sizeof(word) - 1), p);
        if (strcmp(word, "project") == 0 || strcmp(word, "project_id") == 0) {
            q->by_project = true;
        } else if (strcmp(word, "key") == 0 || strcmp(word, "api_key_id") == 0) {
            q->by_key = true;
        } else if (strcmp(word, "line_item") == 0 || strcmp(word, "line-item") == 0) {
            q->by_line_item = true;
        } else {
            snprintf(err, err_cap, "--group-by: '%s' is not project, key or line_item", word);
            return TG_EINVAL;
        }
        p += len + (p[len] == ',');
    }
    return 0;
}

int
tg_cli_costs_query_parse(const struct tg_cli_args *a, int64_t now_s, struct tg_cli_costs_query *q,
                         char *err, size_t err_cap)
{
    memset(q, 0, sizeof(*q));
    q->project = a->opt[TG_CLI_OPT_PROJECT];
    if (a->opt[TG_CLI_OPT_GROUP_BY] != NULL &&
        parse_cost_groups(q, a->opt[TG_CLI_OPT_GROUP_BY], err, err_cap) < 0) {
        return TG_EINVAL;
    }
    /* As usage: the last seven days, OpenAI's default page of daily buckets. */
    return tg_cli_window_parse(a, now_s, &q->start_s, &q->end_s, err, err_cap);
}

void
tg_cli_costs_query_path(const struct tg_cli_costs_query *q, const char *page, bool is_csv,
                        struct tg_buf *out)
{
    tg_buf_appendf(out, "/v1/organization/costs?start_time=%lld", (long long)q->start_s);
    if (q->end_s != 0) {
        tg_buf_appendf(out, "&end_time=%lld", (long long)q->end_s);
    }
    tg_buf_append_str(out, "&bucket_width=1d&limit=180");
    if (q->by_project) {
        tg_cli_url_param(out, "group_by", "project_id");
    }
    if (q->by_key) {
        tg_cli_url_param(out, "group_by", "api_key_id");
    }
    if (q->by_line_item) {
        tg_cli_url_param(out, "group_by", "line_item");
    }
    if (q->project != NULL) {
        tg_cli_url_param(out, "project_ids", q->project);
    }
    if (is_csv) {
        tg_buf_append_str(out, "&format=csv");
    }
    if (page != NULL) {
        tg_cli_url_param(out, "page", page);
    }
}

static const char *
project_label(const json_t *projects, const char *id)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(projects, "data"), i, p)
    {
        const char *pid = tg_json_str(p, "id");
        if (id != NULL && pid != NULL && strcmp(pid, id) == 0 && tg_json_str(p, "name")) {
            return tg_json_str(p, "name");
        }
    }
    return id;
}

int
tg_cli_costs_table(const json_t *page, const struct tg_cli_costs_query *q, const json_t *projects,
                   struct tg_buf *out)
{
    const json_t *data = json_object_get(page, "data");
    if (!json_is_array(data)) {
        return TG_EPARSE;
    }
    const char *titles[5];
    size_t n = 0;
    titles[n++] = "day (UTC)";
    if (q->by_project) {
        titles[n++] = "project";
    }
    if (q->by_key) {
        titles[n++] = "key";
    }
    if (q->by_line_item) {
        titles[n++] = "line item";
    }
    titles[n++] = "cost (USD)";
    struct tg_cli_table t;
    tg_cli_table_init(&t, n, titles, 1u << (n - 1));
    int64_t total = 0;
    size_t i, j;
    json_t *b, *r;
    json_array_foreach(data, i, b)
    {
        char day[32];
        tg_cli_time_format(tg_json_int(b, "start_time", 0), false, day);
        json_array_foreach(json_object_get(b, "results"), j, r)
        {
            const char *row[5];
            size_t k = 0;
            char cost[32];
            int64_t micros = tg_json_int(r, "cost_micros", 0);
            total += micros;
            tg_cli_micros_format(micros, cost);
            row[k++] = day;
            if (q->by_project) {
                row[k++] = project_label(projects, tg_json_str(r, "project_id"));
            }
            if (q->by_key) {
                row[k++] = tg_json_str(r, "api_key_id");
            }
            if (q->by_line_item) {
                row[k++] = tg_json_str(r, "line_item");
            }
            row[k++] = cost;
            tg_cli_table_add(&t, row);
        }
    }
    const char *row[5] = {"total", "", "", "", ""};
    char cost[32];
    tg_cli_micros_format(total, cost);
    row[n - 1] = cost;
    tg_cli_table_add(&t, row);
    tg_cli_table_render(&t, out);
    tg_cli_table_deinit(&t);
    return 0;
}

/* ---- forecasts --------------------------------------------------------------------------------
 */

static void
money_or_none(const json_t *f, const char *member, char out[32])
{
    const json_t *v = json_object_get(f, member);
    if (json_is_integer(v)) {
        tg_cli_micros_format((int64_t)json_integer_value(v), out);
    } else {
        snprintf(out, 32, "none");
    }
}

int
tg_cli_forecast_table(const json_t *f, struct tg_buf *out)
{
    if (!json_is_object(f) || !json_is_integer(json_object_get(f, "month_to_date_micros"))) {
        return TG_EPARSE;
    }
    char start[32], end[32], asof[32], mtd[32], daily[32], proj[32], budget[32];
    tg_cli_time_format(tg_json_int(f, "period_start", 0), false, start);
    tg_cli_time_format(tg_json_int(f, "period_end", 0), false, end);
    tg_cli_time_format(tg_json_int(f, "as_of", 0), true, asof);
    money_or_none(f, "month_to_date_micros", mtd);
    money_or_none(f, "daily_average_micros", daily);
    money_or_none(f, "projected_micros", proj);
    money_or_none(f, "budget_micros", budget);
    const char *pid = tg_json_str(f, "project_id");
    bool has_budget = json_is_integer(json_object_get(f, "budget_micros"));
    tg_buf_appendf(out, "scope          %s%s\n", pid ? "project " : "organization", pid ? pid : "");
    tg_buf_appendf(out, "period         %s to %s (UTC dates)\n", start, end);
    tg_buf_appendf(out, "as of          %s UTC\n", asof);
    tg_buf_appendf(out, "month to date  %s USD\n", mtd);
    tg_buf_appendf(out, "daily average  %s USD\n", daily);
    tg_buf_appendf(out, "projected      %s USD at the end of the period\n", proj);
    tg_buf_appendf(out, "budget         %s%s\n", budget, has_budget ? " USD" : "");
    if (has_budget) {
        tg_buf_appendf(out, "forecast       %s\n",
                       tg_json_bool(f, "exceeds_budget", false) ? "EXCEEDS the budget"
                                                                : "within the budget");
    }
    return 0;
}

/* ---- estimates --------------------------------------------------------------------------------
 */

static int
parse_count(const char *s, int64_t max, int64_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 12 || strspn(s, "0123456789") != len) {
        return TG_EINVAL;
    }
    long long v = strtoll(s, NULL, 10);
    if (v > max) {
        return TG_EINVAL;
    }
    *out = v;
    return 0;
}

/* "0.25" or "25%" (at most 6 decimals of a share, 4 of a percentage) into parts per million. */
static int
parse_rate(const char *s, int64_t *ppm_out)
{
    size_t len = strlen(s);
    bool is_pct = len > 0 && s[len - 1] == '%';
    len -= is_pct;
    size_t int_len = strspn(s, "0123456789");
    if (int_len == 0 || int_len > 3) {
        return TG_EINVAL;
    }
    int64_t v = strtoll(s, NULL, 10);
    int decimals = 0;
    size_t i = int_len;
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (++decimals > (is_pct ? 4 : 6)) {
                return TG_EINVAL;
            }
            v = v * 10 + (s[i] - '0');
        }
        if (decimals == 0) {
            return TG_EINVAL;
        }
    }
    if (i != len) {
        return TG_EINVAL;
    }
    /* v / 10^decimals is the share (or the percentage): scale to parts per million. */
    for (int d = decimals; d < (is_pct ? 4 : 6); d++) {
        v *= 10;
    }
    if (v > 1000000) {
        return TG_EINVAL;
    }
    *ppm_out = v;
    return 0;
}

int
tg_cli_estimate_parse(const struct tg_cli_args *a, struct tg_cli_estimate *e, char *err,
                      size_t err_cap)
{
    memset(e, 0, sizeof(*e));
    e->model = a->opt[TG_CLI_OPT_MODEL];
    struct {
        int id;
        const char *name;
        int64_t max;
        int64_t *out;
    } counts[] = {
        {TG_CLI_OPT_REQUESTS_PER_DAY, "--requests-per-day", MAX_REQUESTS, &e->requests_per_day},
        {TG_CLI_OPT_PROMPT_TOKENS, "--prompt-tokens", MAX_TOKENS, &e->prompt_tokens},
        {TG_CLI_OPT_COMPLETION_TOKENS, "--completion-tokens", MAX_TOKENS, &e->completion_tokens},
    };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        const char *v = a->opt[counts[i].id];
        if (v == NULL) {
            snprintf(err, err_cap, "%s is required", counts[i].name);
            return TG_EINVAL;
        }
        if (parse_count(v, counts[i].max, counts[i].out) < 0) {
            snprintf(err, err_cap, "%s must be a whole number from 0 to %lld", counts[i].name,
                     (long long)counts[i].max);
            return TG_EINVAL;
        }
    }
    const char *rate = a->opt[TG_CLI_OPT_CACHE_HIT_RATE];
    if (rate != NULL && parse_rate(rate, &e->cache_hit_ppm) < 0) {
        snprintf(err, err_cap,
                 "--cache-hit-rate must be from 0 to 1 (e.g. 0.25) or a percentage (25%%)");
        return TG_EINVAL;
    }
    return 0;
}

int
tg_cli_estimate_cost(const struct tg_cli_estimate *e, int64_t input_micros,
                     int64_t cached_input_micros, int64_t output_micros, int64_t *daily_out,
                     int64_t *monthly_out)
{
    typedef unsigned __int128 u128;
    const u128 million = 1000000;
    if (e->requests_per_day < 0 || e->prompt_tokens < 0 || e->completion_tokens < 0 ||
        e->cache_hit_ppm < 0 || e->cache_hit_ppm > 1000000 || input_micros < 0 ||
        cached_input_micros < 0 || output_micros < 0) {
        return TG_EINVAL;
    }
    if (input_micros > MAX_PRICE || cached_input_micros > MAX_PRICE || output_micros > MAX_PRICE) {
        return TG_ETOOBIG;
    }
    /* In units of 10^-12 micro-dollars a day: prompt tokens split by the hit rate (ppm), each
     * token at its price per 10^6 tokens. Below 2^120 for every input parse accepts and any
     * price under 2^40 micro-dollars per 1M tokens. */
    u128 prompt = (u128)e->requests_per_day * (u128)e->prompt_tokens;
    u128 completion = (u128)e->requests_per_day * (u128)e->completion_tokens;
    u128 ppm = (u128)e->cache_hit_ppm;
    u128 num = prompt * (million - ppm) * (u128)input_micros +
               prompt * ppm * (u128)cached_input_micros +
               completion * million * (u128)output_micros;
    u128 unit = million * million;
    u128 daily = (num + unit - 1) / unit;
    u128 monthly = (num * 30 + unit - 1) / unit;
    if (monthly > (u128)INT64_MAX) {
        return TG_ETOOBIG;
    }
    *daily_out = (int64_t)daily;
    *monthly_out = (int64_t)monthly;
    return 0;
}

/* ---- commands ---------------------------------------------------------------------------------
 */

static void
costs_path(const void *q, const char *page, bool is_csv, struct tg_buf *out)
{
    tg_cli_costs_query_path(q, page, is_csv, out);
}

static int
costs_table(const json_t *page, const void *q, const json_t *projects, struct tg_buf *out)
{
    return tg_cli_costs_table(page, q, projects, out);
}

int
tg_cli_cmd_costs(struct tg_cli *cli)
{
    struct tg_cli_costs_query q;
    char err[200];
    if (tg_cli_costs_query_parse(cli->args, cli->now_s, &q, err, sizeof(err)) < 0) {
        tg_cli_fail(cli, "%s", err);
        return 2;
    }
    struct tg_cli_report r = {.what = "costs",
                              .q = &q,
                              .by_project = q.by_project,
                              .path = costs_path,
                              .table = costs_table};
    return tg_cli_report_run(cli, &r);
}

int
tg_cli_cmd_forecast(struct tg_cli *cli)
{
    const char *project = cli->args->opt[TG_CLI_OPT_PROJECT];
    char *path = project ? tg_cli_path("projects/%s/forecast", project) : tg_cli_path("forecast");
    json_t *ans = NULL;
    int rc = 1;
    if (tg_cli_request(cli, "GET", path, NULL, &ans) == 0) {
        rc = tg_cli_print(cli, ans, tg_cli_forecast_table);
    }
    json_decref(ans);
    free(path);
    return rc;
}

int
tg_cli_cmd_cost_estimate(struct tg_cli *cli)
{
    struct tg_cli_estimate e;
    char err[200];
    if (tg_cli_estimate_parse(cli->args, &e, err, sizeof(err)) < 0) {
        tg_cli_fail(cli, "%s", err);
        return 2;
    }
    char *path = tg_cli_path("prices?model=%s", e.model);
    json_t *ans = NULL;
    json_t *out = NULL;
    int rc = 1;
    if (tg_cli_request(cli, "GET", path, NULL, &ans) < 0) {
        goto done;
    }
    const json_t *price = json_array_get(json_object_get(ans, "data"), 0);
    if (!json_is_object(price)) {
        tg_cli_fail(cli, "the price table has no price for %s", e.model);
        goto done;
    }
    int64_t in = tg_json_int(price, "input_micros", -1);
    int64_t cached = tg_json_int(price, "cached_input_micros", -1);
    int64_t output = tg_json_int(price, "output_micros", -1);
    int64_t daily = 0, monthly = 0;
    if (tg_cli_estimate_cost(&e, in, cached, output, &daily, &monthly) < 0) {
        tg_cli_fail(cli, "the estimate is out of range for %s's prices", e.model);
        goto done;
    }
    char d[32], m[32], pin[32], pcached[32], pout[32];
    tg_cli_micros_format(daily, d);
    tg_cli_micros_format(monthly, m);
    tg_cli_micros_format(in, pin);
    tg_cli_micros_format(cached, pcached);
    tg_cli_micros_format(output, pout);
    const char *priced = tg_json_str(price, "model");
    if (cli->is_json) {
        out =
            json_pack("{s:s, s:s?, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "model", e.model,
                      "priced_as", priced, "requests_per_day", (json_int_t)e.requests_per_day,
                      "prompt_tokens", (json_int_t)e.prompt_tokens, "completion_tokens",
                      (json_int_t)e.completion_tokens, "cache_hit_ppm", (json_int_t)e.cache_hit_ppm,
                      "input_micros", (json_int_t)in, "cached_input_micros", (json_int_t)cached,
                      "output_micros", (json_int_t)output, "daily_micros", (json_int_t)daily,
                      "monthly_micros", (json_int_t)monthly);
        tg_cli_json_print(cli, out);
        rc = 0;
        goto done;
    }
    fprintf(cli->out, "model              %s (priced as %s)\n", e.model, priced ? priced : "?");
    fprintf(cli->out, "prices             input %s, cached input %s, output %s USD per 1M tokens\n",
            pin, pcached, pout);
    fprintf(cli->out, "requests per day   %lld\n", (long long)e.requests_per_day);
    fprintf(cli->out,
            "per request        %lld prompt tokens (%lld.%04lld%% cached), %lld "
            "completion tokens\n",
            (long long)e.prompt_tokens, (long long)(e.cache_hit_ppm / 10000),
            (long long)(e.cache_hit_ppm % 10000), (long long)e.completion_tokens);
    fprintf(cli->out, "daily cost         %s USD\n", d);
    fprintf(cli->out, "monthly cost       %s USD (30 days)\n", m);
    rc = 0;
done:
    json_decref(ans);
    json_decref(out);
    free(path);
    return rc;
}
