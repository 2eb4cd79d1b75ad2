/*
 * cli_budgets.c: `tollgate budgets get|set` and the level a limits command speaks of.
 *
 * A level is chosen by the options: none, the organization; --project P, that project;
 * --project P --api-key K, that project key (the global --key is the admin key, so a project
 * key is --api-key). The body builder and the budget's lines are pure functions, unit tested;
 * the commands are one admin API call each.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

#define USD_MAX_MICROS INT64_C(1000000000000) /* $1,000,000: the API's limit */

/* ---- the level --------------------------------------------------------------------------- */

char *
tg_cli_level_path(const struct tg_cli_args *a, const char *what, const char *leaf, char *err,
                  size_t err_cap)
{
    const char *project = a->opt[TG_CLI_OPT_PROJECT];
    const char *key = a->opt[TG_CLI_OPT_API_KEY];
    if (key != NULL && project == NULL) {
        snprintf(err, err_cap, "--api-key needs --project (the key's project)");
        return NULL;
    }
    /* what is ours (a constant); the names from the command line are escaped as %s. */
    const char *tail = leaf != NULL ? "/%s" : "";
    char *path;
    if (key != NULL) {
        char *fmt = tg_xasprintf("projects/%%s/api_keys/%%s/%s%s", what, tail);
        path = tg_cli_path(fmt, project, key, leaf);
        free(fmt);
    } else if (project != NULL) {
        char *fmt = tg_xasprintf("projects/%%s/%s%s", what, tail);
        path = tg_cli_path(fmt, project, leaf);
        free(fmt);
    } else {
        char *fmt = tg_xasprintf("%s%s", what, tail);
        path = tg_cli_path(fmt, leaf);
        free(fmt);
    }
    return path;
}

/* ---- the body of `budgets set` ------------------------------------------------------------ */

/* USD as micro-dollars: digits, optionally "." and at most six more; at most $1,000,000. */
int
tg_cli_usd_parse(const char *s, int64_t *out)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 7) {
        return TG_EINVAL;
    }
    int64_t micros = strtoll(s, NULL, 10) * 1000000;
    if (s[n] == '.') {
        const char *f = s + n + 1;
        size_t m = strspn(f, "0123456789");
        if (m == 0 || m > 6 || f[m] != '\0') {
            return TG_EINVAL;
        }
        int64_t frac = strtoll(f, NULL, 10);
        for (size_t i = m; i < 6; i++) {
            frac *= 10;
        }
        micros += frac;
    } else if (s[n] != '\0') {
        return TG_EINVAL;
    }
    if (micros > USD_MAX_MICROS) {
        return TG_EINVAL;
    }
    *out = micros;
    return 0;
}

static bool
is_none(const char *v)
{
    return strcmp(v, "none") == 0;
}

/* --thresholds 50,80,100 (percentages) or none (no notification). */
static int
thresholds(const char *v, json_t *body, char *err, size_t err_cap)
{
    json_t *list = json_array();
    json_object_set_new(body, "thresholds_pct", list);
    if (is_none(v)) {
        return 0;
    }
    const char *p = v;
    for (;;) {
        size_t n = strspn(p, "0123456789");
        if (n == 0 || n > 4 || (p[n] != ',' && p[n] != '\0')) {
            snprintf(err, err_cap,
                     "--thresholds wants percentages separated by commas, such "
                     "as 50,80,100, or none");
            return TG_EINVAL;
        }
        json_array_append_new(list, json_integer(strtoll(p, NULL, 10)));
        if (p[n] == '\0') {
            return 0;
        }
        p += n + 1;
    }
}

/* --auto-increase AT:BY:MAX (AT percent; BY and MAX in USD) or none. */
static int
auto_increase(const char *v, json_t *body, char *err, size_t err_cap)
{
    if (is_none(v)) {
        json_object_set_new(body, "auto_increase", json_null());
        return 0;
    }
    char at[16];
    char by[32];
    char max[32];
    int64_t by_micros = 0;
    int64_t max_micros = 0;
    size_t n = strspn(v, "0123456789");
    const char *c1 = strchr(v, ':');
    const char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
    bool is_ok = n > 0 && n < sizeof(at) && c1 == v + n && c2 != NULL &&
                 (size_t)(c2 - c1 - 1) < sizeof(by) && strlen(c2 + 1) < sizeof(max);
    if (is_ok) {
        snprintf(at, sizeof(at), "%.*s", (int)n, v);
        snprintf(by, sizeof(by), "%.*s", (int)(c2 - c1 - 1), c1 + 1);
        snprintf(max, sizeof(max), "%s", c2 + 1);
        is_ok = tg_cli_usd_parse(by, &by_micros) == 0 && tg_cli_usd_parse(max, &max_micros) == 0;
    }
    if (!is_ok) {
        snprintf(err, err_cap,
                 "--auto-increase wants AT:BY:MAX (at AT%% of the budget raise it by BY USD, up "
                 "to MAX USD), such as 80:50:500, or none");
        return TG_EINVAL;
    }
    json_object_set_new(body, "auto_increase",
                        json_pack("{s:I,s:I,s:I}", "at_pct", (json_int_t)strtoll(at, NULL, 10),
                                  "by_micros", (json_int_t)by_micros, "max_micros",
                                  (json_int_t)max_micros));
    return 0;
}

/* A string option: its value, or null for none. */
static void
text_or_null(json_t *body, const char *member, const char *v)
{
    json_object_set_new(body, member, is_none(v) ? json_null() : json_string(v));
}

int
tg_cli_budget_body(const struct tg_cli_args *a, json_t **out, char *err, size_t err_cap)
{
    json_t *body = json_object();
    *out = NULL;
    const char *v;
    int rc = 0;
    if ((v = a->opt[TG_CLI_OPT_MONTHLY_USD]) != NULL) {
        int64_t micros = 0;
        if (is_none(v)) {
            json_object_set_new(body, "monthly_limit_micros", json_null());
        } else if (tg_cli_usd_parse(v, &micros) == 0) {
            json_object_set_new(body, "monthly_limit_micros", json_integer(micros));
        } else {
            snprintf(err, err_cap,
                     "--monthly-usd wants USD such as 100 or 12.50 (at most six decimals and "
                     "1000000), or none");
            rc = TG_EINVAL;
        }
    }
    if (rc == 0 && (v = a->opt[TG_CLI_OPT_THRESHOLDS]) != NULL) {
        rc = thresholds(v, body, err, err_cap);
    }
    if (rc == 0 && (v = a->opt[TG_CLI_OPT_AUTO_INCREASE]) != NULL) {
        rc = auto_increase(v, body, err, err_cap);
    }
    if (rc == 0 && (v = a->opt[TG_CLI_OPT_ON_EXCEED]) != NULL) {
        if (strcmp(v, "refuse") != 0 && strcmp(v, "lower_max_tokens") != 0) {
            snprintf(err, err_cap, "--on-exceed wants refuse or lower_max_tokens");
            rc = TG_EINVAL;
        } else {
            json_object_set_new(body, "on_exceed", json_string(v));
        }
    }
    if (rc == 0 && (v = a->opt[TG_CLI_OPT_NOTIFY_EMAILS]) != NULL) {
        json_t *list = NULL;
        if (is_none(v)) {
            json_object_set_new(body, "notify_emails", json_null());
        } else if ((rc = tg_cli_list_split(v, "--notify-emails", &list, err, err_cap)) == 0) {
            json_object_set_new(body, "notify_emails", list);
        }
    }
    if (rc == 0 && (v = a->opt[TG_CLI_OPT_WEBHOOK_URL]) != NULL) {
        text_or_null(body, "webhook_url", v);
    }
    if (rc == 0 && (v = a->opt[TG_CLI_OPT_WEBHOOK_SECRET]) != NULL) {
        /* A reference only: a secret on the command line would land in shell history. */
        if (!is_none(v) && strncmp(v, "env:", 4) != 0 && strncmp(v, "file:", 5) != 0) {
            snprintf(err, err_cap,
                     "--webhook-secret wants a reference, env:NAME or file:PATH "
                     "(never the secret itself), or none");
            rc = TG_EINVAL;
        } else {
            text_or_null(body, "webhook_secret", v);
        }
    }
    if (rc == 0 && json_object_size(body) == 0) {
        snprintf(err, err_cap,
                 "give at least one of --monthly-usd, --thresholds, --auto-increase, "
                 "--on-exceed, --notify-emails, --webhook-url, --webhook-secret");
        rc = TG_EINVAL;
    }
    if (rc < 0) {
        json_decref(body);
        return TG_EINVAL;
    }
    *out = body;
    return 0;
}

/* ---- the budget's lines ------------------------------------------------------------------- */

/* "$12.50" from the API's {"value": "12.500000"}: at least two decimals, no trailing zeros
 * beyond them. */
static void
append_money(struct tg_buf *out, const json_t *m)
{
    const char *v = tg_json_str(m, "value");
    if (v == NULL) {
        tg_buf_append_str(out, "none");
        return;
    }
    size_t len = strlen(v);
    const char *dot = strchr(v, '.');
    if (dot != NULL) {
        size_t keep = (size_t)(dot - v) + 3;
        while (len > keep && v[len - 1] == '0') {
            len--;
        }
    }
    tg_buf_appendf(out, "$%.*s", (int)len, v);
}

/* "$1.50" from micro-dollars. */
static void
append_micros(struct tg_buf *out, int64_t micros)
{
    char v[48];
    snprintf(v, sizeof(v), "%lld.%06lld", (long long)(micros / 1000000),
             (long long)(micros % 1000000));
    json_t *m = json_pack("{s:s}", "value", v);
    append_money(out, m);
    json_decref(m);
}

int
tg_cli_budget_table(const json_t *b, struct tg_buf *out)
{
    const char *scope = tg_json_str(b, "scope");
    const char *id = tg_json_str(b, "scope_id");
    if (scope == NULL || id == NULL) {
        return TG_EPARSE;
    }
    tg_buf_appendf(out, "%-15s%s %s\n", "budget of", scope, id);
    tg_buf_appendf(out, "%-15s", "monthly limit");
    const json_t *limit = json_object_get(b, "monthly_limit");
    if (json_is_object(limit)) {
        append_money(out, limit);
    } else {
        tg_buf_append_str(out, "none (no hard limit)");
    }
    tg_buf_appendf(out, "\n%-15s", "spent");
    const json_t *spend = json_object_get(b, "spend");
    if (json_is_object(spend)) {
        append_money(out, spend);
        tg_buf_append_str(out, " this month");
    } else {
        tg_buf_append_str(out, "-");
    }
    tg_buf_appendf(out, "\n%-15s", "thresholds");
    const json_t *th = json_object_get(b, "thresholds_pct");
    size_t i;
    const json_t *t;
    json_array_foreach(th, i, t)
    {
        tg_buf_appendf(out, "%s%lld%%", i > 0 ? ", " : "", (long long)json_integer_value(t));
    }
    tg_buf_append_str(out, json_array_size(th) == 0 ? "none\n" : "\n");
    tg_buf_appendf(out, "%-15s", "auto increase");
    const json_t *ai = json_object_get(b, "auto_increase");
    if (json_is_object(ai)) {
        tg_buf_appendf(out, "at %lld%% by ", (long long)tg_json_int(ai, "at_pct", 0));
        append_micros(out, tg_json_int(ai, "by_micros", 0));
        tg_buf_append_str(out, " up to ");
        append_micros(out, tg_json_int(ai, "max_micros", 0));
        tg_buf_append_str(out, "\n");
    } else {
        tg_buf_append_str(out, "none\n");
    }
    const char *oe = tg_json_str(b, "on_exceed");
    tg_buf_appendf(out, "%-15s%s\n", "on exceed", oe != NULL ? oe : "refuse");
    tg_buf_appendf(out, "%-15s%lld\n%-15s%lld\n", "max_tokens cap",
                   (long long)tg_json_int(b, "max_tokens_cap", 0), "max n",
                   (long long)tg_json_int(b, "max_n", 0));
    tg_buf_appendf(out, "%-15s", "notify emails");
    const json_t *emails = json_object_get(b, "notify_emails");
    json_array_foreach(emails, i, t)
    {
        const char *e = json_string_value(t);
        tg_buf_appendf(out, "%s%s", i > 0 ? ", " : "", e != NULL ? e : "?");
    }
    tg_buf_append_str(out, json_array_size(emails) == 0 ? "-\n" : "\n");
    const char *url = tg_json_str(b, "webhook_url");
    const char *secret = tg_json_str(b, "webhook_secret");
    tg_buf_appendf(out, "%-15s%s", "webhook", url != NULL ? url : "-");
    if (secret != NULL) {
        tg_buf_appendf(out, " (signed with %s)", secret);
    }
    tg_buf_append_str(out, "\n");
    return 0;
}

/* ---- the commands ------------------------------------------------------------------------- */

int
tg_cli_cmd_budgets_get(struct tg_cli *cli)
{
    char err[160];
    char *path = tg_cli_level_path(cli->args, "budget", NULL, err, sizeof(err));
    if (path == NULL) {
        tg_cli_fail(cli, "%s", err);
        return 2;
    }
    int rc = tg_cli_send(cli, "GET", path, NULL, tg_cli_budget_table, NULL);
    free(path);
    return rc;
}

int
tg_cli_cmd_budgets_set(struct tg_cli *cli)
{
    char err[200];
    json_t *body = NULL;
    char *path = tg_cli_level_path(cli->args, "budget", NULL, err, sizeof(err));
    if (path == NULL || tg_cli_budget_body(cli->args, &body, err, sizeof(err)) < 0) {
        free(path);
        tg_cli_fail(cli, "%s", err);
        return 2;
    }
    int rc = tg_cli_send(cli, "POST", path, body, tg_cli_budget_table, NULL);
    free(path);
    return rc;
}
