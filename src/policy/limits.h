/*
 * limits.h: the rate limits and the budget of one level (organization, project or key), as
 * read from that level's settings object:
 *
 *   "rate_limits": { "<model>" | "*": { "max_requests_per_1_minute": int,
 *                                       "max_tokens_per_1_minute": int,
 *                                       "max_requests_per_1_day": int,
 *                                       "max_tokens_per_1_day": int } }
 *       "*" holds the limits on every request of the level; a model's entry limits that model.
 *   "budget": { "monthly_limit_micros": int,          0 or absent: no hard limit
 *               "thresholds_pct": [50, 80, 100],      notify at these shares of the limit
 *               "auto_increase": { "at_pct": int, "by_micros": int, "max_micros": int },
 *               "on_exceed": "refuse" | "lower_max_tokens",
 *               "max_tokens_cap": int,                injected when absent, clamped above;
 *                                                     default 4096
 *               "max_n": int,                         n is clamped to it; default 8
 *               "notify_emails": [str],               besides the org owners
 *               "webhook_url": str,
 *               "webhook_secret": "env:NAME" | "file:PATH" }
 *
 * Where the settings live: a project's in its settings column (store.h tg_project_rec);
 * the organization's in the document kind "org_settings" with id = org id; a key's in the
 * document kind "key_settings" with id = key id. A new organization starts with a budget of
 * $100 a month (config: budgets.default_org_monthly_usd).
 */
#ifndef TG_POLICY_LIMITS_H
#define TG_POLICY_LIMITS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/admission.h"

#define TG_MAX_THRESHOLDS 8

struct tg_budget_conf {
    int64_t monthly_limit_micros; /* 0 = no hard limit */
    int thresholds_pct[TG_MAX_THRESHOLDS];
    size_t n_thresholds;
    int64_t auto_at_pct; /* 0 = no automatic increase */
    int64_t auto_by_micros;
    int64_t auto_max_micros;
    bool lower_max_tokens; /* on_exceed: lower max_tokens to what the budget allows */
    int64_t max_tokens_cap;
    int64_t max_n;
    char **notify_emails;
    size_t n_notify_emails;
    char *webhook_url;    /* NULL when none */
    char *webhook_secret; /* the reference ("env:..."), resolved when sending */
};

struct tg_model_limit {
    char *model;
    struct tg_rate_limit rate;
};

struct tg_level_limits {
    struct tg_rate_limit all_models; /* from "*" */
    struct tg_model_limit *models;
    size_t n_models;
    bool has_budget;
    struct tg_budget_conf budget;
};

/* Reads the "rate_limits" and "budget" members of settings (a JSON object; NULL or members
 * absent give no limits) into out. Returns 0, or TG_EPARSE with a message naming the member. */
int tg_level_limits_parse(const json_t *settings, struct tg_level_limits *out, char *err,
                          size_t err_cap);

void tg_level_limits_free(struct tg_level_limits *l);

/* The limits for model at this level (zeros when none). */
struct tg_rate_limit tg_level_model_limit(const struct tg_level_limits *l, const char *model);

#endif
