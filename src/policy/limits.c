/*
 * limits.c: the rate limits and budget of one level, read from its settings object (see
 * limits.h for the shapes).
 *
 * The admin API checks what it stores with this same parser, and the state snapshot parses
 * each level once per reload, so the hot path reads plain structs and never JSON. The checks
 * are strict (unknown members, negative or absurd values, unsorted thresholds and inline
 * secrets are refused with a message naming the member) because a typo in a limit must not
 * silently leave a level unlimited.
 *
 * Model limits are kept sorted by model name so tg_level_model_limit is a binary search.
 */
#include "policy/limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/mem.h"
#include "policy/settings_int.h"

#define LIMIT_MAX 1000000000000LL /* 1e12: requests, tokens or micro-dollars */
#define PCT_MAX 1000
#define MAX_TOKENS_CAP_MAX 100000000LL /* 1e8 tokens: no model comes near it */
#define MAX_N_MAX 128
#define MAX_EMAILS 32
#define MAX_TEXT_BYTES 2048
#define MAX_MODELS 1024
#define DEFAULT_MAX_TOKENS_CAP 4096
#define DEFAULT_MAX_N 8

static const char *const rate_fields[] = {
    "max_requests_per_1_minute",
    "max_tokens_per_1_minute",
    "max_requests_per_1_day",
    "max_tokens_per_1_day",
    NULL,
};

static const char *const budget_fields[] = {
    "monthly_limit_micros", "thresholds_pct",
    "auto_increase",        "on_exceed",
    "max_tokens_cap",       "max_n",
    "notify_emails",        "webhook_url",
    "webhook_secret",       NULL,
};

static const char *const auto_fields[] = {"at_pct", "by_micros", "max_micros", NULL};

/* An integer member in lo..hi into *out; absent or null leaves *out. */
static int
read_int(const json_t *obj, const char *name, int64_t lo, int64_t hi, const char *where,
         int64_t *out, char *err, size_t err_cap)
{
    json_t *v = json_object_get(obj, name);
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        return tg_settings_fail(err, err_cap, "%s.%s: expected an integer from %lld to %lld", where,
                                name, (long long)lo, (long long)hi);
    }
    *out = json_integer_value(v);
    return 0;
}

/* A string member of at most MAX_TEXT_BYTES, non-empty; absent or null gives NULL. */
static int
read_text(const json_t *obj, const char *name, const char *where, const char **out, char *err,
          size_t err_cap)
{
    json_t *v = json_object_get(obj, name);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > MAX_TEXT_BYTES ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        return tg_settings_fail(err, err_cap,
                                "%s.%s: expected a non-empty string of at most %d bytes", where,
                                name, MAX_TEXT_BYTES);
    }
    *out = json_string_value(v);
    return 0;
}

static int
parse_rate(const json_t *v, const char *model, struct tg_rate_limit *out, char *err, size_t err_cap)
{
    char where[160];
    snprintf(where, sizeof(where), "rate_limits.%s", model);
    if (!json_is_object(v)) {
        return tg_settings_fail(err, err_cap, "%s: expected an object", where);
    }
    int rc = tg_settings_only(v, rate_fields, where, err, err_cap);
    rc = rc < 0 ? rc : read_int(v, rate_fields[0], 0, LIMIT_MAX, where, &out->rpm, err, err_cap);
    rc = rc < 0 ? rc : read_int(v, rate_fields[1], 0, LIMIT_MAX, where, &out->tpm, err, err_cap);
    rc = rc < 0 ? rc : read_int(v, rate_fields[2], 0, LIMIT_MAX, where, &out->rpd, err, err_cap);
    rc = rc < 0 ? rc : read_int(v, rate_fields[3], 0, LIMIT_MAX, where, &out->tpd, err, err_cap);
    return rc;
}

static int
model_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tg_model_limit *)a)->model,
                  ((const struct tg_model_limit *)b)->model);
}

static int
parse_rate_limits(const json_t *rl, struct tg_level_limits *out, char *err, size_t err_cap)
{
    if (rl == NULL || json_is_null(rl)) {
        return 0;
    }
    if (!json_is_object(rl)) {
        return tg_settings_fail(err, err_cap, "rate_limits: expected an object of models");
    }
    if (json_object_size(rl) > MAX_MODELS) {
        return tg_settings_fail(err, err_cap, "rate_limits: too many models");
    }
    out->models = tg_xcalloc(json_object_size(rl) + 1, sizeof(*out->models));
    const char *model;
    json_t *v;
    json_object_foreach((json_t *)rl, model, v)
    {
        if (model[0] == '\0' || strlen(model) > 256) {
            return tg_settings_fail(err, err_cap,
                                    "rate_limits: a model name must be 1 to 256 bytes");
        }
        if (strcmp(model, "*") == 0) {
            int rc = parse_rate(v, model, &out->all_models, err, err_cap);
            if (rc < 0) {
                return rc;
            }
            continue;
        }
        struct tg_model_limit *m = &out->models[out->n_models];
        int rc = parse_rate(v, model, &m->rate, err, err_cap);
        if (rc < 0) {
            return rc;
        }
        m->model = tg_xstrdup(model);
        out->n_models++;
    }
    qsort(out->models, out->n_models, sizeof(*out->models), model_cmp);
    return 0;
}

static int
parse_thresholds(const json_t *v, struct tg_budget_conf *b, char *err, size_t err_cap)
{
    if (v == NULL || json_is_null(v)) {
        return 0; /* the defaults stay */
    }
    if (!json_is_array(v) || json_array_size(v) > TG_MAX_THRESHOLDS) {
        return tg_settings_fail(err, err_cap,
                                "budget.thresholds_pct: expected a list of at most %d percentages",
                                TG_MAX_THRESHOLDS);
    }
    b->n_thresholds = 0;
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t)
    {
        if (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > PCT_MAX) {
            return tg_settings_fail(err, err_cap,
                                    "budget.thresholds_pct: each must be an integer from 1 to %d",
                                    PCT_MAX);
        }
        int pct = (int)json_integer_value(t);
        if (b->n_thresholds > 0 && pct <= b->thresholds_pct[b->n_thresholds - 1]) {
            return tg_settings_fail(err, err_cap,
                                    "budget.thresholds_pct: must be ascending, without repeats");
        }
        b->thresholds_pct[b->n_thresholds++] = pct;
    }
    return 0;
}

static int
parse_auto(const json_t *v, struct tg_budget_conf *b, char *err, size_t err_cap)
{
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    const char *where = "budget.auto_increase";
    if (!json_is_object(v)) {
        return tg_settings_fail(err, err_cap, "%s: expected an object", where);
    }
    int rc = tg_settings_only(v, auto_fields, where, err, err_cap);
    for (size_t i = 0; rc == 0 && auto_fields[i] != NULL; i++) {
        json_t *m = json_object_get(v, auto_fields[i]);
        if (m == NULL || json_is_null(m)) {
            rc = tg_settings_fail(err, err_cap, "%s.%s: required", where, auto_fields[i]);
        }
    }
    rc = rc < 0 ? rc : read_int(v, "at_pct", 1, PCT_MAX, where, &b->auto_at_pct, err, err_cap);
    rc = rc < 0 ? rc
                : read_int(v, "by_micros", 1, LIMIT_MAX, where, &b->auto_by_micros, err, err_cap);
    rc = rc < 0 ? rc
                : read_int(v, "max_micros", 1, LIMIT_MAX, where, &b->auto_max_micros, err, err_cap);
    if (rc == 0 && b->auto_max_micros < b->monthly_limit_micros) {
        rc = tg_settings_fail(err, err_cap, "%s.max_micros: must be at least monthly_limit_micros",
                              where);
    }
    return rc;
}

static bool
is_email(const char *s)
{
    const char *at = strchr(s, '@');
    return at != NULL && at != s && at[1] != '\0' && strchr(at + 1, '@') == NULL &&
           strpbrk(s, " \t\r\n<>,;\"") == NULL;
}

static int
parse_emails(const json_t *v, struct tg_budget_conf *b, char *err, size_t err_cap)
{
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > MAX_EMAILS) {
        return tg_settings_fail(err, err_cap,
                                "budget.notify_emails: expected a list of at most %d addresses",
                                MAX_EMAILS);
    }
    b->notify_emails = tg_xcalloc(json_array_size(v) + 1, sizeof(*b->notify_emails));
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *s = json_string_value(e);
        if (s == NULL || strlen(s) > 254 || !is_email(s)) {
            return tg_settings_fail(err, err_cap,
                                    "budget.notify_emails: '%s' is not an e-mail address",
                                    s != NULL && strlen(s) <= 254 ? s : "(item)");
        }
        b->notify_emails[b->n_notify_emails++] = tg_xstrdup(s);
    }
    return 0;
}

static int
parse_webhook(const json_t *v, struct tg_budget_conf *b, char *err, size_t err_cap)
{
    const char *url;
    const char *secret;
    int rc = read_text(v, "webhook_url", "budget", &url, err, err_cap);
    rc = rc < 0 ? rc : read_text(v, "webhook_secret", "budget", &secret, err, err_cap);
    if (rc < 0) {
        return rc;
    }
    if (url != NULL && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        return tg_settings_fail(err, err_cap,
                                "budget.webhook_url: must start with http:// or https://");
    }
    /* A secret is a reference, never the value: settings are exported, versioned and shown
     * to readers, so an inline secret would leak through all of them. */
    if (secret != NULL && !(strncmp(secret, "env:", 4) == 0 && secret[4] != '\0') &&
        !(strncmp(secret, "file:", 5) == 0 && secret[5] != '\0')) {
        return tg_settings_fail(
            err, err_cap, "budget.webhook_secret: must be a reference, env:NAME or file:PATH");
    }
    b->webhook_url = url != NULL ? tg_xstrdup(url) : NULL;
    b->webhook_secret = secret != NULL ? tg_xstrdup(secret) : NULL;
    return 0;
}

static int
parse_budget(const json_t *v, struct tg_level_limits *out, char *err, size_t err_cap)
{
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_object(v)) {
        return tg_settings_fail(err, err_cap, "budget: expected an object");
    }
    struct tg_budget_conf *b = &out->budget;
    out->has_budget = true;
    b->thresholds_pct[0] = 50;
    b->thresholds_pct[1] = 80;
    b->thresholds_pct[2] = 100;
    b->n_thresholds = 3;
    b->max_tokens_cap = DEFAULT_MAX_TOKENS_CAP;
    b->max_n = DEFAULT_MAX_N;
    int rc = tg_settings_only(v, budget_fields, "budget", err, err_cap);
    rc = rc < 0 ? rc
                : read_int(v, "monthly_limit_micros", 0, LIMIT_MAX, "budget",
                           &b->monthly_limit_micros, err, err_cap);
    rc = rc < 0 ? rc : parse_thresholds(json_object_get(v, "thresholds_pct"), b, err, err_cap);
    rc = rc < 0 ? rc : parse_auto(json_object_get(v, "auto_increase"), b, err, err_cap);
    rc = rc < 0 ? rc
                : read_int(v, "max_tokens_cap", 1, MAX_TOKENS_CAP_MAX, "budget", &b->max_tokens_cap,
                           err, err_cap);
    rc = rc < 0 ? rc : read_int(v, "max_n", 1, MAX_N_MAX, "budget", &b->max_n, err, err_cap);
    rc = rc < 0 ? rc : parse_emails(json_object_get(v, "notify_emails"), b, err, err_cap);
    rc = rc < 0 ? rc : parse_webhook(v, b, err, err_cap);
    if (rc < 0) {
        return rc;
    }
    json_t *oe = json_object_get(v, "on_exceed");
    if (oe != NULL && !json_is_null(oe)) {
        const char *s = json_string_value(oe);
        if (s == NULL || (strcmp(s, "refuse") != 0 && strcmp(s, "lower_max_tokens") != 0)) {
            return tg_settings_fail(
                err, err_cap, "budget.on_exceed: expected \"refuse\" or \"lower_max_tokens\"");
        }
        b->lower_max_tokens = strcmp(s, "lower_max_tokens") == 0;
    }
    return 0;
}

int
tg_level_limits_parse(const json_t *settings, struct tg_level_limits *out, char *err,
                      size_t err_cap)
{
    memset(out, 0, sizeof(*out));
    if (err != NULL && err_cap > 0) {
        err[0] = '\0';
    }
    if (settings == NULL || json_is_null(settings)) {
        return 0;
    }
    if (!json_is_object(settings)) {
        return tg_settings_fail(err, err_cap, "settings: expected an object");
    }
    int rc = parse_rate_limits(json_object_get(settings, "rate_limits"), out, err, err_cap);
    rc = rc < 0 ? rc : parse_budget(json_object_get(settings, "budget"), out, err, err_cap);
    if (rc < 0) {
        tg_level_limits_free(out);
    }
    return rc;
}

void
tg_level_limits_free(struct tg_level_limits *l)
{
    for (size_t i = 0; i < l->n_models; i++) {
        free(l->models[i].model);
    }
    free(l->models);
    for (size_t i = 0; i < l->budget.n_notify_emails; i++) {
        free(l->budget.notify_emails[i]);
    }
    free(l->budget.notify_emails);
    free(l->budget.webhook_url);
    free(l->budget.webhook_secret);
    memset(l, 0, sizeof(*l));
}

struct tg_rate_limit
tg_level_model_limit(const struct tg_level_limits *l, const char *model)
{
    struct tg_rate_limit none = {0};
    if (l == NULL || model == NULL || l->n_models == 0) {
        return none;
    }
    struct tg_model_limit key = {.model = (char *)model};
    const struct tg_model_limit *m =
        bsearch(&key, l->models, l->n_models, sizeof(*l->models), model_cmp);
    return m != NULL ? m->rate : none;
}
