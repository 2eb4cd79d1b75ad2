/*
 * cli_fmt.c: the CLI's pure functions: UTC dates without the C library's time zone state,
 * usage query building, and aligned tables made from API answers (see cli_int.h).
 *
 * Nothing here does I/O, so the unit tests drive every function with literal inputs. Dates
 * use the proleptic Gregorian day count (H. Hinnant's days_from_civil), which is exact for
 * every year and independent of TZ.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

#define DAY_S 86400

/* ---- dates ------------------------------------------------------------------------------- */

static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned
days_in_month(int64_t y, unsigned m)
{
    static const unsigned days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool is_leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && is_leap ? 29 : days[m - 1];
}

/* Reads exactly n digits at *p into *out, advancing *p. */
static bool
digits(const char **p, int n, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) {
            return false;
        }
        v = v * 10 + (unsigned)((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Parses "HH:MM[:SS][Z]" at p into seconds of the day. */
static bool
parse_clock(const char *p, int64_t *secs)
{
    unsigned hh, mm, ss = 0;
    if (!digits(&p, 2, &hh) || *p++ != ':' || !digits(&p, 2, &mm)) {
        return false;
    }
    if (*p == ':' && (p++, !digits(&p, 2, &ss))) {
        return false;
    }
    if (*p == 'Z') {
        p++;
    }
    *secs = (int64_t)hh * 3600 + mm * 60 + ss;
    return *p == '\0' && hh < 24 && mm < 60 && ss < 60;
}

int
tg_cli_time_parse(const char *s, bool is_end, int64_t *out)
{
    size_t len = strlen(s);
    if (len > 0 && len <= 12 && strspn(s, "0123456789") == len) {
        *out = strtoll(s, NULL, 10);
        return 0;
    }
    const char *p = s;
    unsigned y, m, d;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &m) || *p++ != '-' ||
        !digits(&p, 2, &d)) {
        return TG_EINVAL;
    }
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m)) {
        return TG_EINVAL;
    }
    int64_t t = days_from_civil(y, m, d) * DAY_S;
    if (*p == '\0') {
        *out = t + (is_end ? DAY_S : 0);
        return 0;
    }
    int64_t secs;
    if ((*p != 'T' && *p != ' ') || !parse_clock(p + 1, &secs)) {
        return TG_EINVAL;
    }
    *out = t + secs;
    return 0;
}

void
tg_cli_time_format(int64_t unix_s, bool with_time, char out[32])
{
    int64_t days = unix_s / DAY_S - (unix_s % DAY_S < 0);
    int64_t secs = unix_s - days * DAY_S;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    if (with_time) {
        snprintf(out, 32, "%04lld-%02u-%02u %02u:%02u", (long long)y, m, d, (unsigned)(secs / 3600),
                 (unsigned)(secs % 3600 / 60));
    } else {
        snprintf(out, 32, "%04lld-%02u-%02u", (long long)y, m, d);
    }
}

void
tg_cli_micros_format(int64_t micros, char out[32])
{
    /* Integer arithmetic: a double would round large totals. */
    uint64_t mag = micros < 0 ? 0 - (uint64_t)micros : (uint64_t)micros;
    snprintf(out, 32, "%s%llu.%06llu", micros < 0 ? "-" : "", (unsigned long long)(mag / 1000000),
             (unsigned long long)(mag % 1000000));
}

/* ---- usage queries -------------------------------------------------------------------------- */

/* Sets the group flag that word names. False for an unknown word. */
static bool
group_set(struct tg_cli_usage_query *q, const char *w, size_t len)
{
    static const struct {
        const char *name;
        int which;
    } names[] = {{"project", 0}, {"project_id", 0}, {"key", 1},
                 {"api_key", 1}, {"api_key_id", 1}, {"model", 2}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i].name) == len && strncmp(names[i].name, w, len) == 0) {
            bool *flag[3] = {&q->by_project, &q->by_key, &q->by_model};
            *flag[names[i].which] = true;
            return true;
        }
    }
    return false;
}

static int
parse_groups(struct tg_cli_usage_query *q, const char *list, char *err, size_t err_cap)
{
    const char *p = list;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        const char *w = p;
        size_t wlen = len;
        while (wlen > 0 && isspace((unsigned char)*w)) {
            w++;
            wlen--;
        }
        while (wlen > 0 && isspace((unsigned char)w[wlen - 1])) {
            wlen--;
        }
        if (wlen > 0 && !group_set(q, w, wlen)) {
            snprintf(err, err_cap, "--group-by takes project, key and model, not '%.*s'",
                     (int)(wlen > 40 ? 40 : wlen), w);
            return TG_EINVAL;
        }
        p += len + (p[len] == ',');
    }
    return 0;
}

static bool
is_one_of(const char *s, const char *a, const char *b, const char *c)
{
    return strcmp(s, a) == 0 || strcmp(s, b) == 0 || strcmp(s, c) == 0;
}

int
tg_cli_usage_query_parse(const struct tg_cli_args *a, int64_t now_s, struct tg_cli_usage_query *q,
                         char *err, size_t err_cap)
{
    memset(q, 0, sizeof(*q));
    q->bucket = a->opt[TG_CLI_OPT_BUCKET] ? a->opt[TG_CLI_OPT_BUCKET] : "1d";
    q->endpoint = a->opt[TG_CLI_OPT_ENDPOINT] ? a->opt[TG_CLI_OPT_ENDPOINT] : "completions";
    q->project = a->opt[TG_CLI_OPT_PROJECT];
    q->model = a->opt[TG_CLI_OPT_MODEL];
    if (!is_one_of(q->bucket, "1m", "1h", "1d")) {
        snprintf(err, err_cap, "--bucket must be 1m, 1h or 1d");
        return TG_EINVAL;
    }
    if (!is_one_of(q->endpoint, "completions", "embeddings", "moderations")) {
        snprintf(err, err_cap, "--endpoint must be completions, embeddings or moderations");
        return TG_EINVAL;
    }
    if (a->opt[TG_CLI_OPT_GROUP_BY] != NULL &&
        parse_groups(q, a->opt[TG_CLI_OPT_GROUP_BY], err, err_cap) < 0) {
        return TG_EINVAL;
    }
    return tg_cli_window_parse(a, now_s, &q->start_s, &q->end_s, err, err_cap);
}

int
tg_cli_window_parse(const struct tg_cli_args *a, int64_t now_s, int64_t *start_s, int64_t *end_s,
                    char *err, size_t err_cap)
{
    const char *start = a->opt[TG_CLI_OPT_START];
    const char *end = a->opt[TG_CLI_OPT_END];
    int64_t today = (now_s / DAY_S - (now_s % DAY_S < 0)) * DAY_S;
    *start_s = today - 6 * DAY_S;
    *end_s = 0;
    if (start != NULL && tg_cli_time_parse(start, false, start_s) < 0) {
        snprintf(err, err_cap, "--start: '%.40s' is not YYYY-MM-DD[THH:MM[:SS]] or Unix seconds",
                 start);
        return TG_EINVAL;
    }
    if (end != NULL && tg_cli_time_parse(end, true, end_s) < 0) {
        snprintf(err, err_cap, "--end: '%.40s' is not YYYY-MM-DD[THH:MM[:SS]] or Unix seconds",
                 end);
        return TG_EINVAL;
    }
    if (end != NULL && *end_s <= *start_s) {
        snprintf(err, err_cap, "--end must be later than --start");
        return TG_EINVAL;
    }
    return 0;
}

void
tg_cli_url_param(struct tg_buf *out, const char *name, const char *value)
{
    tg_buf_appendf(out, "%c%s=", out->data != NULL && strchr(out->data, '?') ? '&' : '?', name);
    tg_cli_url_escape(out, value);
}

void
tg_cli_usage_query_path(const struct tg_cli_usage_query *q, const char *page, bool is_csv,
                        struct tg_buf *out)
{
    tg_buf_appendf(out, "/v1/organization/usage/%s?start_time=%lld", q->endpoint,
                   (long long)q->start_s);
    if (q->end_s != 0) {
        tg_buf_appendf(out, "&end_time=%lld", (long long)q->end_s);
    }
    tg_cli_url_param(out, "bucket_width", q->bucket);
    if (q->by_project) {
        tg_cli_url_param(out, "group_by", "project_id");
    }
    if (q->by_key) {
        tg_cli_url_param(out, "group_by", "api_key_id");
    }
    if (q->by_model) {
        tg_cli_url_param(out, "group_by", "model");
    }
    if (q->project != NULL) {
        tg_cli_url_param(out, "project_ids", q->project);
    }
    if (q->model != NULL) {
        tg_cli_url_param(out, "models", q->model);
    }
    if (is_csv) {
        tg_buf_append_str(out, "&format=csv");
    }
    if (page != NULL) {
        tg_cli_url_param(out, "page", page);
    }
}

/* ---- tables -------------------------------------------------------------------------------- */

void
tg_cli_table_init(struct tg_cli_table *t, size_t n_cols, const char *const *titles,
                  uint32_t right_mask)
{
    memset(t, 0, sizeof(*t));
    t->n_cols = n_cols;
    t->titles = titles;
    t->right_mask = right_mask;
}

void
tg_cli_table_deinit(struct tg_cli_table *t)
{
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++) {
        free(t->cells[i]);
    }
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

void
tg_cli_table_add(struct tg_cli_table *t, const char *const *row)
{
    if (t->n_rows == t->rows_cap) {
        t->rows_cap = t->rows_cap ? t->rows_cap * 2 : 16;
        t->cells = tg_xrealloc(t->cells, t->rows_cap * t->n_cols * sizeof(char *));
    }
    for (size_t c = 0; c < t->n_cols; c++) {
        char *cell = tg_xstrdup(row[c] ? row[c] : "-");
        for (char *p = cell; *p != '\0'; p++) {
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                *p = '?';
            }
        }
        t->cells[t->n_rows * t->n_cols + c] = cell;
    }
    t->n_rows++;
}

/* Width in characters of UTF-8 text (continuation bytes do not count). */
static size_t
text_width(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++) {
        n += ((unsigned char)*s & 0xc0) != 0x80;
    }
    return n;
}

static void
render_row(const struct tg_cli_table *t, const char *const *row, const size_t *width,
           struct tg_buf *out)
{
    size_t line_start = out->len;
    for (size_t c = 0; c < t->n_cols; c++) {
        size_t pad = width[c] - text_width(row[c]);
        bool is_right = (t->right_mask >> c) & 1u;
        tg_buf_append_str(out, c ? "  " : "");
        tg_buf_appendf(out, "%*s%s%*s", is_right ? (int)pad : 0, "", row[c],
                       is_right ? 0 : (int)pad, "");
    }
    while (out->len > line_start && out->data[out->len - 1] == ' ') {
        out->data[--out->len] = '\0';
    }
    tg_buf_append_str(out, "\n");
}

void
tg_cli_table_render(const struct tg_cli_table *t, struct tg_buf *out)
{
    size_t *width = tg_xcalloc(t->n_cols, sizeof(size_t));
    for (size_t c = 0; c < t->n_cols; c++) {
        width[c] = text_width(t->titles[c]);
        for (size_t r = 0; r < t->n_rows; r++) {
            size_t w = text_width(t->cells[r * t->n_cols + c]);
            width[c] = w > width[c] ? w : width[c];
        }
    }
    render_row(t, t->titles, width, out);
    for (size_t r = 0; r < t->n_rows; r++) {
        render_row(t, (const char *const *)&t->cells[r * t->n_cols], width, out);
    }
    free(width);
}

/* ---- tables from API answers ------------------------------------------------------------- */

/* The name of project id in a project list, or id itself. */
static const char *
project_name(const json_t *projects, const char *id)
{
    size_t i;
    json_t *p;
    if (id == NULL) {
        return NULL;
    }
    json_array_foreach(json_object_get(projects, "data"), i, p)
    {
        const char *name = tg_json_str(p, "name");
        if (name != NULL && tg_json_str(p, "id") && strcmp(tg_json_str(p, "id"), id) == 0) {
            return name;
        }
    }
    return id;
}

struct usage_sum {
    int64_t requests, input, cached, output, cost_micros;
};

/* Adds one result's row (or, when r is NULL, the total line) to t. */
static void
usage_row(struct tg_cli_table *t, const struct tg_cli_usage_query *q, const char *start,
          const json_t *r, const json_t *projects, struct usage_sum *sum)
{
    const char *row[9];
    char num[5][32];
    size_t n = 0;
    struct usage_sum v = *sum;
    if (r != NULL) {
        v.requests = tg_json_int(r, "num_model_requests", 0);
        v.input = tg_json_int(r, "input_tokens", 0);
        v.cached = tg_json_int(r, "input_cached_tokens", 0);
        v.output = tg_json_int(r, "output_tokens", 0);
        v.cost_micros = tg_json_int(r, "cost_micros", 0);
        sum->requests += v.requests;
        sum->input += v.input;
        sum->cached += v.cached;
        sum->output += v.output;
        sum->cost_micros += v.cost_micros;
    }
    row[n++] = start;
    if (q->by_project) {
        row[n++] = r ? project_name(projects, tg_json_str(r, "project_id")) : "";
    }
    if (q->by_key) {
        row[n++] = r ? tg_json_str(r, "api_key_id") : "";
    }
    if (q->by_model) {
        row[n++] = r ? tg_json_str(r, "model") : "";
    }
    int64_t counts[4] = {v.requests, v.input, v.cached, v.output};
    for (int i = 0; i < 4; i++) {
        snprintf(num[i], sizeof(num[i]), "%lld", (long long)counts[i]);
        row[n++] = num[i];
    }
    tg_cli_micros_format(v.cost_micros, num[4]);
    row[n++] = num[4];
    tg_cli_table_add(t, row);
}

int
tg_cli_usage_table(const json_t *page, const struct tg_cli_usage_query *q, const json_t *projects,
                   struct tg_buf *out)
{
    const char *titles[9];
    size_t n = 0;
    const json_t *data = json_object_get(page, "data");
    if (!json_is_array(data)) {
        return TG_EPARSE;
    }
    titles[n++] = "start (UTC)";
    if (q->by_project) {
        titles[n++] = "project";
    }
    if (q->by_key) {
        titles[n++] = "key";
    }
    if (q->by_model) {
        titles[n++] = "model";
    }
    size_t first_num = n;
    const char *nums[] = {"requests", "input", "cached", "output", "cost (USD)"};
    for (size_t i = 0; i < 5; i++) {
        titles[n++] = nums[i];
    }
    struct tg_cli_table t;
    struct usage_sum sum = {0};
    tg_cli_table_init(&t, n, titles, (uint32_t)(((1u << n) - 1) & ~((1u << first_num) - 1)));
    bool with_time = strcmp(q->bucket, "1d") != 0;
    size_t i, j;
    json_t *b, *r;
    json_array_foreach(data, i, b)
    {
        char start[32];
        tg_cli_time_format(tg_json_int(b, "start_time", 0), with_time, start);
        json_array_foreach(json_object_get(b, "results"), j, r)
        {
            usage_row(&t, q, start, r, projects, &sum);
        }
    }
    usage_row(&t, q, "total", NULL, projects, &sum);
    tg_cli_table_render(&t, out);
    tg_cli_table_deinit(&t);
    return 0;
}

int
tg_cli_keys_table(const json_t *list, struct tg_buf *out)
{
    static const char *const titles[] = {"id", "name", "redacted", "status", "created (UTC)"};
    const json_t *data = json_object_get(list, "data");
    if (!json_is_array(data)) {
        return TG_EPARSE;
    }
    struct tg_cli_table t;
    tg_cli_table_init(&t, 5, titles, 0);
    size_t i;
    json_t *k;
    json_array_foreach(data, i, k)
    {
        char created[32];
        int64_t created_s = tg_json_int(k, "created_at", 0);
        tg_cli_time_format(created_s, true, created);
        const char *row[] = {tg_json_str(k, "id"), tg_json_str(k, "name"),
                             tg_json_str(k, "redacted_value"), tg_json_str(k, "status"),
                             created_s > 0 ? created : NULL};
        tg_cli_table_add(&t, row);
    }
    tg_cli_table_render(&t, out);
    tg_cli_table_deinit(&t);
    return 0;
}

int
tg_cli_projects_table(const json_t *list, struct tg_buf *out)
{
    static const char *const titles[] = {"id", "name", "environment", "status"};
    const json_t *data = json_object_get(list, "data");
    if (!json_is_array(data)) {
        return TG_EPARSE;
    }
    struct tg_cli_table t;
    tg_cli_table_init(&t, 4, titles, 0);
    size_t i;
    json_t *p;
    json_array_foreach(data, i, p)
    {
        const char *row[] = {tg_json_str(p, "id"), tg_json_str(p, "name"),
                             tg_json_str(p, "environment"), tg_json_str(p, "status")};
        tg_cli_table_add(&t, row);
    }
    tg_cli_table_render(&t, out);
    tg_cli_table_deinit(&t);
    return 0;
}
