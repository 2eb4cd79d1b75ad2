/*
 * quota.c: limits and budgets arithmetic and wording for the inference path (see quota.h).
 * Pure functions: no state, no I/O.
 */
#include "gateway/quota.h"

#include <stdio.h>
#include <string.h>

void
tg_quota_duration(int64_t ms, char *out, size_t cap)
{
    if (ms < 0) {
        ms = 0;
    }
    if (ms < 1000) {
        snprintf(out, cap, "%lldms", (long long)ms);
        return;
    }
    int64_t s = ms / 1000;
    int64_t frac = ms % 1000;
    int64_t h = s / 3600;
    int64_t m = (s % 3600) / 60;
    char sec[32];
    if (frac == 0) {
        snprintf(sec, sizeof(sec), "%llds", (long long)(s % 60));
    } else {
        /* Milliseconds without trailing zeros: 17.5s, 1.25s, 2.001s (Go's way). */
        char f[8];
        snprintf(f, sizeof(f), "%03lld", (long long)frac);
        for (size_t n = strlen(f); n > 0 && f[n - 1] == '0'; n--) {
            f[n - 1] = '\0';
        }
        snprintf(sec, sizeof(sec), "%lld.%ss", (long long)(s % 60), f);
    }
    if (h > 0) {
        snprintf(out, cap, "%lldh%lldm%s", (long long)h, (long long)m, sec);
    } else if (m > 0) {
        snprintf(out, cap, "%lldm%s", (long long)m, sec);
    } else {
        snprintf(out, cap, "%s", sec);
    }
}

void
tg_quota_usd(int64_t micros, char *out, size_t cap)
{
    if (micros < 0) {
        micros = 0;
    }
    char frac[8];
    snprintf(frac, sizeof(frac), "%06lld", (long long)(micros % 1000000));
    for (size_t n = strlen(frac); n > 2 && frac[n - 1] == '0'; n--) {
        frac[n - 1] = '\0';
    }
    snprintf(out, cap, "$%lld.%s", (long long)(micros / 1000000), frac);
}

static int64_t
utf8_chars(const char *s, size_t len)
{
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        /* Count every byte that does not continue a sequence. */
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return n;
}

int64_t
tg_quota_text_chars(const json_t *v)
{
    if (v == NULL) {
        return 0;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        return utf8_chars(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
    case JSON_REAL:
        return 4;
    case JSON_ARRAY: {
        int64_t n = 0;
        size_t i;
        const json_t *x;
        json_array_foreach(v, i, x)
        {
            n += tg_quota_text_chars(x);
        }
        return n;
    }
    case JSON_OBJECT:
        return tg_quota_text_chars(json_object_get(v, "content")) +
               tg_quota_text_chars(json_object_get(v, "text")) +
               tg_quota_text_chars(json_object_get(v, "input"));
    default:
        return 0;
    }
}

int64_t
tg_quota_prompt_tokens(int64_t chars)
{
    return chars <= 0 ? 0 : (chars + 3) / 4;
}

int64_t
tg_quota_cost_bound(const struct tg_price *p, int64_t prompt_tokens, int64_t completion_tokens)
{
    struct tg_usage u = {
        .prompt_tokens = prompt_tokens, .completion_tokens = completion_tokens, .is_known = true};
    return tg_price_cost_micros(p, &u);
}

int64_t
tg_quota_affordable_max_tokens(const struct tg_price *p, int64_t prompt_tokens, int64_t n,
                               int64_t max_tokens, int64_t remaining_micros)
{
    if (n < 1) {
        n = 1;
    }
    /* Cost grows with k, so the largest k that fits is found by bisection: exact whatever
     * the rounding of the cost formula. */
    int64_t lo = 0;
    int64_t hi = max_tokens;
    if (tg_quota_cost_bound(p, prompt_tokens, 0) > remaining_micros) {
        return 0;
    }
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (tg_quota_cost_bound(p, prompt_tokens, mid * n) <= remaining_micros) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

static const char *
level_words(enum tg_scope s)
{
    switch (s) {
    case TG_SCOPE_KEY:
        return "API key";
    case TG_SCOPE_PROJECT:
        return "project";
    default:
        return "organization";
    }
}

void
tg_quota_rate_message(const struct tg_admit_result *r, const char *model, const char *level_id,
                      int64_t requested, char *out, size_t cap)
{
    const char *what = r->is_tokens ? "tokens" : "requests";
    const char *per = r->is_daily ? "day" : "min";
    char abbr[4] = {r->is_tokens ? 'T' : 'R', 'P', r->is_daily ? 'D' : 'M', '\0'};
    const char *level = level_words(r->scope);
    if (r->is_too_large) {
        snprintf(out, cap,
                 "Request too large for %s in %s %s on %s per %s (%s): Limit %lld, Requested "
                 "%lld. The input or output tokens must be reduced in order to run "
                 "successfully.",
                 model, level, level_id, what, per, abbr, (long long)r->limit,
                 (long long)requested);
        return;
    }
    /* A refilling bucket refuses when used + requested > limit, and the wait is the time the
     * excess takes to drain at limit per window: so used = limit - requested + drained. */
    int64_t window_ms = r->is_daily ? 86400000 : 60000;
    int64_t limit = r->limit > 0 ? r->limit : 1;
    int64_t wait = r->retry_after_ms > 0 ? r->retry_after_ms : 0;
    wait = wait > window_ms ? window_ms : wait;
    limit = limit > TG_RATE_LIMIT_MAX ? TG_RATE_LIMIT_MAX : limit;
    /* wait <= window, limit <= TG_RATE_LIMIT_MAX: the product fits in 64 bits. */
    int64_t drained = (wait * limit + window_ms - 1) / window_ms;
    int64_t used = limit - requested + drained;
    used = used < 0 ? 0 : used > limit ? limit : used;
    char again[32];
    tg_quota_duration(r->retry_after_ms, again, sizeof(again));
    snprintf(out, cap,
             "Rate limit reached for %s in %s %s on %s per %s (%s): Limit %lld, Used %lld, "
             "Requested %lld. Please try again in %s.",
             model, level, level_id, what, per, abbr, (long long)r->limit, (long long)used,
             (long long)requested, again);
}

void
tg_quota_budget_message(enum tg_scope scope, const char *level_id, int64_t limit_micros, char *out,
                        size_t cap)
{
    char usd[32];
    tg_quota_usd(limit_micros, usd, sizeof(usd));
    snprintf(out, cap,
             "You exceeded your current quota: the monthly budget of %s %s (%s) cannot cover "
             "this request. An owner of the organization can raise the budget; otherwise "
             "requests are admitted again when the next month begins.",
             level_words(scope), level_id, usd);
}
