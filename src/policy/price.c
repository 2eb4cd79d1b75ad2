/*
 * price.c: the price table (model -> micro-dollars per 1M tokens) and the cost of a request.
 *
 * The table is built once at start-up (built-in data/prices.json, then the config's
 * overrides) and only read afterwards, from every worker, without locks. It is kept sorted by
 * model name so a lookup on the request path is a binary search; the dated-suffix fallback
 * ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini") tries each '-' boundary from the right, which
 * finds the longest matching prefix first.
 *
 * All money is integer micro-dollars: prices are parsed from decimal text without floating
 * point, and a request's cost is rounded up once, at the end, so sums in the ledger are exact
 * and tollgate never under-bills.
 */
#include "policy/price.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

/* Generated from data/prices.json by scripts/embed.cmake (NUL-terminated). */
extern const unsigned char tg_embed_prices[];
extern const size_t tg_embed_prices_len;

#define MICROS_PER_USD 1000000
/* A price above this ($9.2M per 1M tokens) is a typo, and it keeps input * 1e6 exact. */
#define MAX_PRICE_MICROS (INT64_MAX / MICROS_PER_USD)

struct tg_price_table {
    struct tg_price *v; /* sorted by model */
    size_t n;
    size_t cap;
};

struct tg_price_table *
tg_price_table_new(void)
{
    return tg_xcalloc(1, sizeof(struct tg_price_table));
}

void
tg_price_table_free(struct tg_price_table *t)
{
    if (t == NULL) {
        return;
    }
    free(t->v);
    free(t);
}

/* Index of the first entry whose model is >= model; *found tells whether it is equal. */
static size_t
find(const struct tg_price_table *t, const char *model, size_t model_len, bool *found)
{
    size_t lo = 0;
    size_t hi = t->n;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *m = t->v[mid].model;
        int c = strncmp(m, model, model_len);
        if (c == 0 && m[model_len] != '\0') {
            c = 1; /* m is longer than the key, so it sorts after it */
        }
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

void
tg_price_table_set(struct tg_price_table *t, const struct tg_price *p)
{
    bool found;
    size_t len = strnlen(p->model, sizeof(p->model) - 1);
    size_t i = find(t, p->model, len, &found);
    if (found) {
        t->v[i] = *p;
        return;
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 32;
        t->v = tg_xrealloc(t->v, t->cap * sizeof(*t->v));
    }
    memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof(*t->v));
    t->v[i] = *p;
    t->v[i].model[sizeof(p->model) - 1] = '\0';
    t->n++;
}

const struct tg_price *
tg_price_lookup(const struct tg_price_table *t, const char *model)
{
    if (t == NULL || model == NULL) {
        return NULL;
    }
    bool found;
    size_t len = strlen(model);
    size_t i = find(t, model, len, &found);
    if (found) {
        return &t->v[i];
    }
    /* Longest prefix first: cut at each '-' from the right. */
    for (size_t k = len; k > 0; k--) {
        if (model[k - 1] != '-' || k - 1 == 0) {
            continue;
        }
        i = find(t, model, k - 1, &found);
        if (found) {
            return &t->v[i];
        }
    }
    return NULL;
}

size_t
tg_price_table_count(const struct tg_price_table *t)
{
    return t->n;
}

const struct tg_price *
tg_price_table_at(const struct tg_price_table *t, size_t i)
{
    return i < t->n ? &t->v[i] : NULL;
}

int64_t
tg_price_cost_micros(const struct tg_price *p, const struct tg_usage *u)
{
    if (p == NULL || u == NULL) {
        return 0;
    }
    /* Providers' counts are input: clamp instead of trusting cached <= prompt. Reasoning
     * tokens are part of completion_tokens and billed at the output price, so they need no
     * term of their own. */
    int64_t prompt = u->prompt_tokens > 0 ? u->prompt_tokens : 0;
    int64_t cached = u->cached_tokens > 0 ? u->cached_tokens : 0;
    int64_t completion = u->completion_tokens > 0 ? u->completion_tokens : 0;
    if (cached > prompt) {
        cached = prompt;
    }
    int64_t a, b, c, sum;
    /* On overflow the true cost exceeds INT64_MAX micro-dollars ($9.2 trillion): saturate at
     * INT64_MAX rather than wrap, because a wrapped (small or negative) cost would under-bill
     * and could slip past a budget. */
    if (__builtin_mul_overflow(prompt - cached, p->input_micros, &a) ||
        __builtin_mul_overflow(cached, p->cached_input_micros, &b) ||
        __builtin_mul_overflow(completion, p->output_micros, &c) ||
        __builtin_add_overflow(a, b, &sum) || __builtin_add_overflow(sum, c, &sum)) {
        return INT64_MAX;
    }
    if (sum <= 0) {
        return 0;
    }
    /* Round up once, per request: (sum + 999999) / 1e6 without the overflow of the add. */
    return sum / MICROS_PER_USD + (sum % MICROS_PER_USD != 0);
}

int
tg_price_parse_usd(const char *s, int64_t *micros_out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return TG_EPARSE; /* empty, sign, leading '.', whitespace */
    }
    int64_t whole = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (__builtin_mul_overflow(whole, 10, &whole) ||
            __builtin_add_overflow(whole, *p - '0', &whole)) {
            return TG_EPARSE;
        }
    }
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (++digits > 6) {
                return TG_EPARSE; /* below a micro-dollar: would not be exact */
            }
            frac = frac * 10 + (*p - '0');
        }
        if (digits == 0) {
            return TG_EPARSE; /* "2." */
        }
        for (; digits < 6; digits++) {
            frac *= 10;
        }
    }
    if (*p != '\0') {
        return TG_EPARSE; /* exponent, junk, trailing space */
    }
    int64_t micros;
    if (__builtin_mul_overflow(whole, MICROS_PER_USD, &micros) ||
        __builtin_add_overflow(micros, frac, &micros)) {
        return TG_EPARSE;
    }
    *micros_out = micros;
    return 0;
}

void
tg_price_format_usd(int64_t micros, char *out, size_t cap)
{
    /* Via the unsigned magnitude so INT64_MIN formats too. */
    uint64_t mag = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    snprintf(out, cap, "%s%llu.%06llu", micros < 0 ? "-" : "",
             (unsigned long long)(mag / MICROS_PER_USD),
             (unsigned long long)(mag % MICROS_PER_USD));
}

/* One price field of the JSON document: a decimal string, an integer or a real with at most
 * six decimals. Reals are checked by round-tripping through six-decimal text, because the
 * double 0.15 is not 0.15 and must not become 149999 micro-dollars. */
static int
json_usd(const json_t *v, int64_t *out)
{
    if (json_is_string(v)) {
        return tg_price_parse_usd(json_string_value(v), out);
    }
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > MAX_PRICE_MICROS) {
            return TG_EPARSE;
        }
        *out = (int64_t)i * MICROS_PER_USD;
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0) || d > 1e12) {
            return TG_EPARSE;
        }
        char text[64];
        snprintf(text, sizeof(text), "%.6f", d);
        if (strtod(text, NULL) != d) {
            return TG_EPARSE;
        }
        return tg_price_parse_usd(text, out);
    }
    return TG_EPARSE;
}

static int
parse_entry(const char *model, const json_t *e, struct tg_price *p, char *err, size_t err_cap)
{
    if (strlen(model) == 0 || strlen(model) >= sizeof(p->model)) {
        snprintf(err, err_cap, "model name must be 1 to %zu characters", sizeof(p->model) - 1);
        return TG_EPARSE;
    }
    if (!json_is_object(e)) {
        snprintf(err, err_cap, "%s: expected an object with input, cached_input, output", model);
        return TG_EPARSE;
    }
    memset(p, 0, sizeof(*p));
    snprintf(p->model, sizeof(p->model), "%s", model);
    const char *key;
    const json_t *v;
    bool has_input = false, has_cached = false, has_output = false;
    json_object_foreach((json_t *)e, key, v)
    {
        int64_t *dst;
        if (strcmp(key, "input") == 0) {
            dst = &p->input_micros;
            has_input = true;
        } else if (strcmp(key, "cached_input") == 0) {
            dst = &p->cached_input_micros;
            has_cached = true;
        } else if (strcmp(key, "output") == 0) {
            dst = &p->output_micros;
            has_output = true;
        } else if (key[0] == '_') {
            continue; /* "_comment" and the like */
        } else {
            snprintf(err, err_cap, "%s: unknown member '%s'", model, key);
            return TG_EPARSE;
        }
        if (json_usd(v, dst) < 0) {
            snprintf(err, err_cap,
                     "%s.%s: expected USD per 1M tokens, a non-negative decimal with at most "
                     "six decimals",
                     model, key);
            return TG_EPARSE;
        }
    }
    if (!has_input || !has_output) {
        snprintf(err, err_cap, "%s: input and output are required", model);
        return TG_EPARSE;
    }
    if (!has_cached) {
        p->cached_input_micros = p->input_micros;
    }
    return 0;
}

int
tg_price_table_load_json(struct tg_price_table *t, const char *json, size_t len, char *err,
                         size_t err_cap)
{
    char jerr[200];
    json_t *root = tg_json_parse(json, len, 8, jerr, sizeof(jerr));
    if (root == NULL) {
        snprintf(err, err_cap, "%s", jerr);
        return TG_EPARSE;
    }
    int rc = 0;
    struct tg_price *parsed = NULL;
    /* Members other than "models" ("_comment", "source") are documentation. */
    const json_t *models = json_object_get(root, "models");
    if (!json_is_object(models)) {
        snprintf(err, err_cap, "expected an object with a \"models\" object");
        rc = TG_EPARSE;
        goto out;
    }
    /* Parse everything first so a bad entry leaves the table as it was. */
    parsed = tg_xcalloc(json_object_size(models) + 1, sizeof(*parsed));
    size_t n = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)models, key, v)
    {
        rc = parse_entry(key, v, &parsed[n], err, err_cap);
        if (rc < 0) {
            goto out;
        }
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        tg_price_table_set(t, &parsed[i]);
    }
out:
    free(parsed);
    json_decref(root);
    return rc;
}

int
tg_price_table_load_builtin(struct tg_price_table *t, char *err, size_t err_cap)
{
    return tg_price_table_load_json(t, (const char *)tg_embed_prices, tg_embed_prices_len, err,
                                    err_cap);
}
