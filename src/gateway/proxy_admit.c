/*
 * proxy_admit.c: limits and budgets of the inference path (policy/admission.h).
 *
 * After routing, the request's token count and cost bound are computed (gateway/quota.h says
 * how), a budgeted request gets its output cap injected or clamped and n clamped (so the bound
 * is real), and admission decides at the key, project and organization levels at once. A
 * refused request never reaches the provider and changes no counter. An admitted one is settled
 * in proxy_finish (proxy_relay.c) with the usage the ledger row gets (the same cost).
 */
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "gateway/metrics.h"
#include "gateway/proxy_int.h"
#include "gateway/quota.h"
#include "policy/limits.h"

#define N_RL_HEADERS 6

/* ---- limits and budgets -------------------------------------------------------------- */

/* Products of counts a client or a provider chose (non-negative), saturating instead of
 * overflowing. */
static int64_t
mul_sat(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

/* The value of a member check_fields accepted as a non-negative integer; false when absent
 * or null. */
static bool
field_uint(const struct call *c, enum field f, int64_t *out)
{
    if (c->body != NULL) {
        json_t *v = json_object_get(c->body, proxy_field_names[f]);
        if (!json_is_integer(v)) {
            return false;
        }
        *out = json_integer_value(v);
        return true;
    }
    struct tg_json_span v = c->fields[f];
    if (proxy_kind_of_span(v) != K_UINT) {
        return false;
    }
    int64_t x = 0;
    for (size_t i = 0; i < v.len; i++) {
        x = x * 10 + (v.p[i] - '0'); /* at most 18 digits: no overflow */
    }
    *out = x;
    return true;
}

/* Characters of the request's text (for OpenAI's token estimate of rate limits). Only the
 * members holding text are parsed, and only when a token limit needs the count. */
static int64_t
text_chars(const struct call *c)
{
    static const enum field members[] = {F_MESSAGES, F_PROMPT, F_INPUT, F_INSTRUCTIONS};
    int64_t n = 0;
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
        enum field f = members[i];
        if (c->body != NULL) {
            n += tg_quota_text_chars(json_object_get(c->body, proxy_field_names[f]));
        } else if (c->fields[f].p != NULL) {
            json_t *v = json_loadb(c->fields[f].p, c->fields[f].len, JSON_DECODE_ANY, NULL);
            n += tg_quota_text_chars(v);
            json_decref(v);
        }
    }
    return n;
}

/* The levels of a request: each one's limits (NULL when it has none) and id. */
struct levels {
    const struct tg_level_limits *l[TG_SCOPE_COUNT];
    const char *id[TG_SCOPE_COUNT];
};

static bool
has_budget(const struct tg_level_limits *l)
{
    return l != NULL && l->has_budget && l->budget.monthly_limit_micros > 0;
}

static bool
has_token_limit(const struct levels *lv, const char *model)
{
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        const struct tg_level_limits *l = lv->l[s];
        if (l == NULL) {
            continue;
        }
        struct tg_rate_limit m = tg_level_model_limit(l, model);
        if (l->all_models.tpm > 0 || l->all_models.tpd > 0 || m.tpm > 0 || m.tpd > 0) {
            return true;
        }
    }
    return false;
}

/* The members that cap the output of api; the first is the one injected. */
static size_t
output_fields(enum tg_api api, enum field out[2])
{
    switch (api) {
    case TG_API_CHAT:
        out[0] = F_MAX_TOKENS;
        out[1] = F_MAX_COMPLETION_TOKENS;
        return 2;
    case TG_API_COMPLETIONS:
        out[0] = F_MAX_TOKENS;
        return 1;
    case TG_API_RESPONSES:
        out[0] = F_MAX_OUTPUT_TOKENS;
        return 1;
    default:
        return 0;
    }
}

/* The output cap the client asked for (the largest of its cap members), or -1. */
static int64_t
asked_output(const struct call *c)
{
    enum field f[2];
    size_t n = output_fields(c->api, f);
    int64_t asked = -1;
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (field_uint(c, f[i], &v) && v > asked) {
            asked = v;
        }
    }
    return asked;
}

/* Makes max_out the cap the provider sees: every cap member above it is rewritten, and when
 * the client set none, the first is injected. */
static void
write_output_cap(struct call *c, int64_t asked)
{
    enum field f[2];
    size_t n = output_fields(c->api, f);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (asked < 0 ? i == 0 : field_uint(c, f[i], &v) && v > c->max_out) {
            c->write_field[f[i]] = true;
            c->field_value[f[i]] = c->max_out;
        }
    }
}

/* Output cap and n: the client's, injected or clamped for a budgeted request. */
static void
plan_output(struct call *c, const struct levels *lv)
{
    int64_t cap = 0;
    int64_t max_n = 0;
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        if (has_budget(lv->l[s])) {
            const struct tg_budget_conf *b = &lv->l[s]->budget;
            int64_t bc = b->max_tokens_cap > 0 ? b->max_tokens_cap : TG_QUOTA_DEFAULT_MAX_TOKENS;
            cap = cap == 0 || bc < cap ? bc : cap;
            max_n = b->max_n > 0 && (max_n == 0 || b->max_n < max_n) ? b->max_n : max_n;
        }
    }
    int64_t v;
    c->n = 1;
    if ((c->api == TG_API_CHAT || c->api == TG_API_COMPLETIONS) && field_uint(c, F_N, &v) &&
        v > 0) {
        c->n = v;
    }
    /* Completions generate best_of choices server-side (and bill them all), n of which are
     * returned: the bound counts the larger. */
    int64_t best_of = 0;
    if (c->api == TG_API_COMPLETIONS && field_uint(c, F_BEST_OF, &best_of) && best_of > c->n) {
        c->n = best_of;
    }
    enum field f[2];
    int64_t asked = asked_output(c);
    if (output_fields(c->api, f) == 0) {
        c->max_out = 0;
    } else if (!c->is_budgeted) {
        c->max_out = asked >= 0 ? asked : TG_QUOTA_DEFAULT_MAX_TOKENS;
    } else {
        c->max_out = asked >= 0 && asked <= cap ? asked : cap;
        write_output_cap(c, asked);
    }
    if (c->is_budgeted && max_n > 0 && c->n > max_n) {
        c->n = max_n;
        int64_t n;
        for (enum field g = F_N; g <= F_BEST_OF; g++) {
            if (field_uint(c, g, &n) && n > max_n) {
                c->write_field[g] = true;
                c->field_value[g] = max_n;
            }
        }
    }
}

static void
compute_bounds(struct call *c, bool count_text)
{
    c->prompt_bound = (int64_t)c->req->body.len;
    c->completion_bound = mul_sat(c->max_out, c->n);
    /* A route with fallbacks reserves for its dearest model, so whichever answers fits. */
    c->cost_bound = tg_quota_cost_bound(c->has_bound_price ? &c->bound_price : c->price,
                                        c->prompt_bound, c->completion_bound);
    int64_t prompt = count_text ? tg_quota_prompt_tokens(text_chars(c)) : 0;
    c->rl_tokens = add_sat(prompt, c->completion_bound);
}

static void
answer_429(struct call *c, const char *message, const char *type, const char *code,
           const struct tg_http_header *h, size_t n_h)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_json_error_body(&b, message, type, NULL, code);
    tg_http_respond(c->req, 429, "application/json", h, n_h, b.data, b.len);
    tg_buf_deinit(&b);
}

/* x-ratelimit-* headers from an admission result (only the units some level limits per
 * minute). vals holds the texts. Returns how many were written. */
static size_t
rl_headers(const struct tg_admit_result *r, struct tg_http_header *h, char vals[][32])
{
    static const char *const names[N_RL_HEADERS] = {
        "x-ratelimit-limit-requests",   "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",   "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    };
    const int64_t v[N_RL_HEADERS] = {r->limit_requests, r->remaining_requests, r->reset_requests_ms,
                                     r->limit_tokens,   r->remaining_tokens,   r->reset_tokens_ms};
    size_t n = 0;
    for (size_t i = 0; i < N_RL_HEADERS; i++) {
        if (v[i - i % 3] < 0) {
            continue; /* no per-minute limit of this unit */
        }
        if (i % 3 == 2) {
            tg_quota_duration(v[i], vals[n], 32);
        } else {
            snprintf(vals[n], 32, "%lld", (long long)(v[i] < 0 ? 0 : v[i]));
        }
        h[n].name = names[i];
        h[n].value = vals[n];
        n++;
    }
    return n;
}

static void
refuse_rate(struct call *c, const struct tg_admit_result *r, const struct levels *lv)
{
    char msg[512];
    tg_quota_rate_message(r, c->model, lv->id[r->scope], r->is_tokens ? c->rl_tokens : 1, msg,
                          sizeof(msg));
    struct tg_http_header h[N_RL_HEADERS + 3];
    char vals[N_RL_HEADERS + 3][32];
    size_t n = rl_headers(r, h, vals);
    if (r->is_too_large) {
        /* No wait admits it: tell the SDK not to retry. */
        h[n++] = (struct tg_http_header){"x-should-retry", "false"};
    } else {
        int64_t ms = r->retry_after_ms > 0 ? r->retry_after_ms : 1;
        snprintf(vals[n], 32, "%lld", (long long)((ms + 999) / 1000));
        h[n] = (struct tg_http_header){"retry-after", vals[n]};
        n++;
        snprintf(vals[n], 32, "%lld", (long long)ms);
        h[n] = (struct tg_http_header){"retry-after-ms", vals[n]};
        n++;
    }
    tg_metrics_refused(TG_METRICS_RATE_LIMITED, c->project->id);
    answer_429(c, msg, r->is_tokens ? "tokens" : "requests", "rate_limit_exceeded", h, n);
}

static void
refuse_budget(struct call *c, enum tg_scope scope, const struct levels *lv)
{
    char msg[512];
    tg_quota_budget_message(scope, lv->id[scope], lv->l[scope]->budget.monthly_limit_micros, msg,
                            sizeof(msg));
    /* A spent budget stays spent for the month: the SDK must not retry (openai-wire.md 6.2). */
    static const struct tg_http_header h[1] = {{"x-should-retry", "false"}};
    tg_metrics_refused(TG_METRICS_BUDGET_REFUSED, c->project->id);
    answer_429(c, msg, "insufficient_quota", "insufficient_quota", h, 1);
}

/*
 * on_exceed lower_max_tokens: lowers the output cap to what the least remaining budget
 * allows. The spend read here may be stale by the time admit runs; admit then refuses, so
 * the budget still holds. Returns false after refusing (not even one token fits).
 */
static bool
lower_to_budget(struct call *c, const struct levels *lv, int64_t asked)
{
    bool wants = false;
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        wants = wants || (has_budget(lv->l[s]) && lv->l[s]->budget.lower_max_tokens);
    }
    enum field f[2];
    if (!wants || c->admission == NULL || output_fields(c->api, f) == 0) {
        return true;
    }
    int64_t remaining = INT64_MAX;
    enum tg_scope least = TG_SCOPE_PROJECT;
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        if (!has_budget(lv->l[s])) {
            continue;
        }
        int64_t spent =
            c->admission->ops->spend(c->admission, (enum tg_scope)s, lv->id[s], c->admitted_ms);
        int64_t left = lv->l[s]->budget.monthly_limit_micros - spent;
        if (left < remaining) {
            remaining = left;
            least = (enum tg_scope)s;
        }
    }
    int64_t k =
        tg_quota_affordable_max_tokens(c->price, c->prompt_bound, c->n, c->max_out, remaining);
    if (k >= c->max_out) {
        return true;
    }
    if (k < 1) {
        refuse_budget(c, least, lv);
        return false;
    }
    c->max_out = k;
    write_output_cap(c, asked);
    return true;
}

/* Keeps the admitted request's x-ratelimit-* headers for its answer (they replace the
 * upstream's, which describe tollgate's provider account, not the client's limits). */
static void
keep_rl_headers(struct call *c, const struct tg_admit_result *r)
{
    struct tg_http_header h[N_RL_HEADERS];
    char vals[N_RL_HEADERS][32];
    size_t n = rl_headers(r, h, vals);
    for (size_t i = 0; i < n && c->n_pass < MAX_PASS_HEADERS; i++) {
        c->pass[c->n_pass].name = h[i].name; /* static strings */
        c->pass[c->n_pass].value = tg_arena_strdup(&c->req->arena, vals[i]);
        c->n_pass++;
    }
    c->has_own_rl = n > 0;
}

/*
 * Limits and budgets of the call (see the file comment). Returns false after answering
 * (400/403 for a budgeted model without a price, 429 for a refusal, 503 when admission could
 * not decide).
 */
bool
proxy_admit_call(struct call *c)
{
    const struct tg_state *st = c->state;
    struct levels lv = {
        {tg_state_key_limits(st, c->key->id), &c->project->limits, &st->org_limits},
        {c->key->id, c->project->id, st->org_id},
    };
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        c->is_budgeted = c->is_budgeted || has_budget(lv.l[s]);
    }
    /* Moderations are free (OpenAI bills none), so they need no price. */
    if (c->is_budgeted && c->price == NULL && c->api != TG_API_MODERATIONS) {
        char msg[320];
        snprintf(msg, sizeof(msg),
                 "The model `%s` has no price in tollgate's price table, and this request is "
                 "under a budget: it is refused until the model's price is set.",
                 c->model);
        tg_http_respond_error(c->req, 403, msg, "invalid_request_error", "model",
                              "model_price_missing");
        return false;
    }
    plan_output(c, &lv);
    bool count_text = has_token_limit(&lv, c->model);
    compute_bounds(c, count_text);
    if (c->admission == NULL) {
        return true;
    }
    if (c->is_budgeted) {
        if (!lower_to_budget(c, &lv, asked_output(c))) {
            return false;
        }
        compute_bounds(c, count_text);
    }
    struct tg_admit_request r = {.now_ms = c->admitted_ms,
                                 .model = c->model,
                                 .tokens = c->rl_tokens,
                                 .cost_bound_micros = c->cost_bound};
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        const struct tg_level_limits *l = lv.l[s];
        r.levels[s].id = lv.id[s];
        if (l != NULL) {
            r.levels[s].all_models = l->all_models;
            r.levels[s].model = tg_level_model_limit(l, c->model);
            r.levels[s].budget_micros = has_budget(l) ? l->budget.monthly_limit_micros : 0;
        }
    }
    struct tg_admit_result res;
    int rc = c->admission->ops->admit(c->admission, &r, &res);
    if (rc < 0) {
        tg_log_error("admission failed for request %s: %s", c->req->id, tg_strerror(rc));
        tg_http_respond_error(c->req, 503,
                              "The gateway could not check this request's limits; try again.",
                              "server_error", NULL, NULL);
        return false;
    }
    if (res.verdict == TG_ADMIT_RATE_LIMITED) {
        refuse_rate(c, &res, &lv);
        return false;
    }
    if (res.verdict == TG_ADMIT_OVER_BUDGET) {
        refuse_budget(c, res.scope, &lv);
        return false;
    }
    c->is_admitted = true;
    c->reservation = res.reservation;
    keep_rl_headers(c, &res);
    return true;
}
