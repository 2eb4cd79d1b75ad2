/*
 * token_policy.c: token policies and model aliases (see token_policy.h).
 *
 * Parsing is strict (unknown members, wrong types and contradictions are refused with the
 * member named) because the admin API stores only what this parser accepted; applying works
 * on a jansson request object, which the proxy builds only for requests a policy or an alias
 * touches, so requests of levels without a policy keep the relay's fast path.
 */
#include "policy/token_policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/mem.h"
#include "policy/settings_int.h"

#define TOKENS_MAX 100000000LL /* 1e8 tokens: no model comes near it */
#define N_MAX 128
#define PROMPT_BYTES_MAX (1LL << 40)
#define NAMES_MAX 64
#define NAME_BYTES_MAX 128
#define STOP_BYTES_MAX 256

static const char *const policy_fields[] = {
    "default_max_tokens", "max_tokens",       "on_max_tokens", "max_n", "default_stop",
    "max_prompt_bytes",   "forbidden_params", "forced_params", NULL,
};

/* Members a policy may not force or forbid: the gateway must see them as the client sent. */
static const char *const protected_params[] = {"model", "stream", "stream_options", NULL};

/* An optional positive integer member at most max; 0 when absent. */
static int
read_count(const json_t *obj, const char *name, int64_t max, int64_t *out, char *err,
           size_t err_cap)
{
    const json_t *v = json_object_get(obj, name);
    *out = 0;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max) {
        return tg_settings_fail(err, err_cap, "token_policy.%s must be an integer from 1 to %lld",
                                name, (long long)max);
    }
    *out = json_integer_value(v);
    return 0;
}

/* An optional list of distinct non-empty strings; *out NULL when absent. */
static int
read_names(const json_t *obj, const char *name, size_t max, size_t max_bytes, char ***out,
           size_t *n_out, char *err, size_t err_cap)
{
    const json_t *v = json_object_get(obj, name);
    *out = NULL;
    *n_out = 0;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > max) {
        return tg_settings_fail(err, err_cap,
                                "token_policy.%s must be a list of at most %zu strings", name, max);
    }
    size_t n = json_array_size(v);
    char **names = tg_xcalloc(n + 1, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_array_get(v, i);
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > max_bytes) {
            for (size_t j = 0; j < i; j++) {
                free(names[j]);
            }
            free(names);
            return tg_settings_fail(
                err, err_cap,
                "token_policy.%s[%zu] must be a non-empty string of at most %zu bytes", name, i,
                max_bytes);
        }
        names[i] = tg_xstrdup(json_string_value(s));
    }
    *out = names;
    *n_out = n;
    return 0;
}

static int
check_params(const struct tg_token_policy *p, char *err, size_t err_cap)
{
    for (size_t i = 0; i < p->n_forbidden_params; i++) {
        const char *name = p->forbidden_params[i];
        if (tg_settings_is_listed(name, protected_params)) {
            return tg_settings_fail(
                err, err_cap, "token_policy.forbidden_params: '%s' cannot be forbidden", name);
        }
        if (p->forced_params != NULL && json_object_get(p->forced_params, name) != NULL) {
            return tg_settings_fail(
                err, err_cap, "token_policy: '%s' is both forbidden and forced; choose one", name);
        }
    }
    const char *name;
    json_t *value;
    json_object_foreach(p->forced_params, name, value)
    {
        if (tg_settings_is_listed(name, protected_params)) {
            return tg_settings_fail(err, err_cap,
                                    "token_policy.forced_params: '%s' cannot be forced", name);
        }
        if (strlen(name) == 0 || strlen(name) > NAME_BYTES_MAX) {
            return tg_settings_fail(err, err_cap,
                                    "token_policy.forced_params: a name is empty or too long");
        }
    }
    return 0;
}

int
tg_token_policy_parse(const json_t *settings, struct tg_token_policy *out, char *err,
                      size_t err_cap)
{
    memset(out, 0, sizeof(*out));
    const json_t *tp = settings != NULL ? json_object_get(settings, "token_policy") : NULL;
    if (tp == NULL || json_is_null(tp)) {
        return 0;
    }
    if (!json_is_object(tp)) {
        return tg_settings_fail(err, err_cap, "token_policy must be an object");
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)tp, key, v)
    {
        if (!tg_settings_is_listed(key, policy_fields)) {
            return tg_settings_fail(err, err_cap, "token_policy.%s is not a known member", key);
        }
    }
    int rc =
        read_count(tp, "default_max_tokens", TOKENS_MAX, &out->default_max_tokens, err, err_cap);
    rc = rc < 0 ? rc : read_count(tp, "max_tokens", TOKENS_MAX, &out->max_tokens, err, err_cap);
    rc = rc < 0 ? rc : read_count(tp, "max_n", N_MAX, &out->max_n, err, err_cap);
    rc = rc < 0 ? rc
                : read_count(tp, "max_prompt_bytes", PROMPT_BYTES_MAX, &out->max_prompt_bytes, err,
                             err_cap);
    rc = rc < 0 ? rc
                : read_names(tp, "default_stop", TG_POLICY_MAX_STOP, STOP_BYTES_MAX,
                             &out->default_stop, &out->n_default_stop, err, err_cap);
    rc = rc < 0 ? rc
                : read_names(tp, "forbidden_params", NAMES_MAX, NAME_BYTES_MAX,
                             &out->forbidden_params, &out->n_forbidden_params, err, err_cap);
    if (rc < 0) {
        goto fail;
    }
    const json_t *on = json_object_get(tp, "on_max_tokens");
    if (on != NULL && !json_is_null(on)) {
        const char *s = json_string_value(on);
        if (s == NULL || (strcmp(s, "clamp") != 0 && strcmp(s, "refuse") != 0)) {
            rc = tg_settings_fail(err, err_cap,
                                  "token_policy.on_max_tokens must be \"clamp\" or \"refuse\"");
            goto fail;
        }
        out->has_on_max_tokens = true;
        out->is_refuse = strcmp(s, "refuse") == 0;
    }
    const json_t *forced = json_object_get(tp, "forced_params");
    if (forced != NULL && !json_is_null(forced)) {
        if (!json_is_object(forced) || json_object_size(forced) > NAMES_MAX) {
            rc = tg_settings_fail(err, err_cap,
                                  "token_policy.forced_params must be an object of at most %d "
                                  "members",
                                  NAMES_MAX);
            goto fail;
        }
        out->forced_params = json_deep_copy(forced);
    }
    if (out->max_tokens > 0 && out->default_max_tokens > out->max_tokens) {
        rc = tg_settings_fail(
            err, err_cap,
            "token_policy.default_max_tokens (%lld) is above token_policy.max_tokens (%lld)",
            (long long)out->default_max_tokens, (long long)out->max_tokens);
        goto fail;
    }
    rc = check_params(out, err, err_cap);
    if (rc == 0) {
        return 0;
    }
fail:
    tg_token_policy_free(out);
    return rc;
}

static void
free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

void
tg_token_policy_free(struct tg_token_policy *p)
{
    free_names(p->default_stop, p->n_default_stop);
    free_names(p->forbidden_params, p->n_forbidden_params);
    json_decref(p->forced_params);
    memset(p, 0, sizeof(*p));
}

bool
tg_token_policy_is_empty(const struct tg_token_policy *p)
{
    return p->default_max_tokens == 0 && p->max_tokens == 0 && !p->has_on_max_tokens &&
           p->max_n == 0 && p->default_stop == NULL && p->max_prompt_bytes == 0 &&
           p->forbidden_params == NULL && p->forced_params == NULL;
}

void
tg_token_policy_merge(const struct tg_token_policy *key, const struct tg_token_policy *project,
                      struct tg_token_policy *out)
{
    static const struct tg_token_policy none;
    const struct tg_token_policy *k = key != NULL ? key : &none;
    const struct tg_token_policy *p = project != NULL ? project : &none;
    out->default_max_tokens =
        k->default_max_tokens > 0 ? k->default_max_tokens : p->default_max_tokens;
    out->max_tokens = k->max_tokens > 0 ? k->max_tokens : p->max_tokens;
    out->has_on_max_tokens = k->has_on_max_tokens || p->has_on_max_tokens;
    out->is_refuse = k->has_on_max_tokens ? k->is_refuse : p->is_refuse;
    out->max_n = k->max_n > 0 ? k->max_n : p->max_n;
    const struct tg_token_policy *stop = k->default_stop != NULL ? k : p;
    out->default_stop = stop->default_stop;
    out->n_default_stop = stop->n_default_stop;
    out->max_prompt_bytes = k->max_prompt_bytes > 0 ? k->max_prompt_bytes : p->max_prompt_bytes;
    const struct tg_token_policy *fb = k->forbidden_params != NULL ? k : p;
    out->forbidden_params = fb->forbidden_params;
    out->n_forbidden_params = fb->n_forbidden_params;
    out->forced_params = k->forced_params != NULL ? k->forced_params : p->forced_params;
    /* A key's default above the project's maximum would be clamped right back: the key's own
     * default wins only up to the maximum in force. */
    if (out->max_tokens > 0 && out->default_max_tokens > out->max_tokens) {
        out->default_max_tokens = out->max_tokens;
    }
}

/* ---- applying ------------------------------------------------------------------------ */

/* Adds "member=what" to the change list. */
static void
note(struct tg_policy_result *res, const char *member, const char *what)
{
    size_t used = strlen(res->changes);
    if (used + 1 >= sizeof(res->changes)) {
        return;
    }
    if (used > 0) {
        res->changes[used++] = ',';
        res->changes[used] = '\0';
    }
    snprintf(res->changes + used, sizeof(res->changes) - used, "%s=%s", member, what);
}

static int refuse(struct tg_policy_result *res, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
refuse(struct tg_policy_result *res, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof(res->message), fmt, ap);
    va_end(ap);
    snprintf(res->param, sizeof(res->param), "%s", param);
    return TG_EINVAL;
}

/* The members that cap the output of api; the first is the one injected. */
static size_t
cap_fields(enum tg_api api, const char *out[2])
{
    switch (api) {
    case TG_API_CHAT:
        out[0] = "max_tokens";
        out[1] = "max_completion_tokens";
        return 2;
    case TG_API_COMPLETIONS:
        out[0] = "max_tokens";
        return 1;
    case TG_API_RESPONSES:
        out[0] = "max_output_tokens";
        return 1;
    default:
        return 0;
    }
}

/* Bytes of the request's prompt members as JSON text. */
static size_t
prompt_bytes(const json_t *body)
{
    static const char *const members[] = {"messages", "prompt", "input", "instructions"};
    size_t n = 0;
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
        const json_t *v = json_object_get(body, members[i]);
        if (v != NULL) {
            n += json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
        }
    }
    return n;
}

static int
apply_max_tokens(const struct tg_token_policy *p, enum tg_api api, json_t *body,
                 struct tg_policy_result *res)
{
    const char *f[2];
    size_t n = cap_fields(api, f);
    bool has_cap = false;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(body, f[i]);
        if (!json_is_integer(v)) {
            continue;
        }
        has_cap = true;
        json_int_t asked = json_integer_value(v);
        if (p->max_tokens <= 0 || asked <= p->max_tokens) {
            continue;
        }
        if (p->is_refuse) {
            return refuse(res, f[i],
                          "'%s' is %lld, above this project's limit of %lld set by its token "
                          "policy.",
                          f[i], (long long)asked, (long long)p->max_tokens);
        }
        json_object_set_new(body, f[i], json_integer(p->max_tokens));
        note(res, f[i], "clamped");
    }
    if (!has_cap && n > 0 && p->default_max_tokens > 0) {
        json_object_set_new(body, f[0], json_integer(p->default_max_tokens));
        note(res, f[0], "default");
    }
    return 0;
}

static void
apply_n(const struct tg_token_policy *p, enum tg_api api, json_t *body,
        struct tg_policy_result *res)
{
    static const char *const members[] = {"n", "best_of"};
    if (p->max_n <= 0 || (api != TG_API_CHAT && api != TG_API_COMPLETIONS)) {
        return;
    }
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(body, members[i]);
        if (json_is_integer(v) && json_integer_value(v) > p->max_n) {
            json_object_set_new(body, members[i], json_integer(p->max_n));
            note(res, members[i], "clamped");
        }
    }
}

static void
apply_stop(const struct tg_token_policy *p, enum tg_api api, json_t *body,
           struct tg_policy_result *res)
{
    if (p->n_default_stop == 0 || (api != TG_API_CHAT && api != TG_API_COMPLETIONS)) {
        return;
    }
    json_t *v = json_object_get(body, "stop");
    bool has_stop = (json_is_string(v) && json_string_length(v) > 0) ||
                    (json_is_array(v) && json_array_size(v) > 0);
    if (has_stop) {
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < p->n_default_stop; i++) {
        json_array_append_new(list, json_string(p->default_stop[i]));
    }
    json_object_set_new(body, "stop", list);
    note(res, "stop", "added");
}

int
tg_token_policy_apply(const struct tg_token_policy *p, enum tg_api api, json_t *body,
                      struct tg_policy_result *res)
{
    memset(res, 0, sizeof(*res));
    for (size_t i = 0; i < p->n_forbidden_params; i++) {
        const char *name = p->forbidden_params[i];
        if (json_object_get(body, name) != NULL) {
            return refuse(res, name,
                          "The parameter '%s' is not allowed by this project's token policy.",
                          name);
        }
    }
    if (p->max_prompt_bytes > 0) {
        size_t bytes = prompt_bytes(body);
        if ((int64_t)bytes > p->max_prompt_bytes) {
            const char *param = api == TG_API_CHAT          ? "messages"
                                : api == TG_API_COMPLETIONS ? "prompt"
                                                            : "input";
            return refuse(res, param,
                          "The prompt is %zu bytes, above this project's limit of %lld bytes "
                          "set by its token policy.",
                          bytes, (long long)p->max_prompt_bytes);
        }
    }
    /* Forced values first, so the caps and n below still bound what was forced. */
    const char *name;
    json_t *value;
    json_object_foreach(p->forced_params, name, value)
    {
        json_t *old = json_object_get(body, name);
        if (old == NULL || !json_equal(old, value)) {
            json_object_set(body, name, value);
            note(res, name, "forced");
        }
    }
    int rc = apply_max_tokens(p, api, body, res);
    if (rc < 0) {
        return rc;
    }
    apply_n(p, api, body, res);
    apply_stop(p, api, body, res);
    return 0;
}

/* ---- aliases ------------------------------------------------------------------------- */

void
tg_aliases_free(struct tg_aliases *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->items[i].name);
        free(a->items[i].tier);
        free(a->items[i].model);
    }
    free(a->items);
    a->items = NULL;
    a->n = 0;
}

int
tg_aliases_parse(const json_t *settings, struct tg_aliases *out, char *err, size_t err_cap)
{
    memset(out, 0, sizeof(*out));
    const json_t *al = settings != NULL ? json_object_get(settings, "aliases") : NULL;
    if (al == NULL || json_is_null(al)) {
        return 0;
    }
    if (!json_is_object(al) || json_object_size(al) > NAMES_MAX) {
        return tg_settings_fail(err, err_cap, "aliases must be an object of at most %d members",
                                NAMES_MAX);
    }
    out->items = tg_xcalloc(json_object_size(al) + 1, sizeof(*out->items));
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)al, name, v)
    {
        const char *tier = json_string_value(json_object_get(v, "tier"));
        const char *model = json_string_value(json_object_get(v, "model"));
        bool is_ok = json_is_object(v) && json_object_size(v) == 1 &&
                     ((tier != NULL && tier[0] != '\0') || (model != NULL && model[0] != '\0'));
        if (name[0] == '\0' || strlen(name) > NAME_BYTES_MAX || !is_ok) {
            tg_aliases_free(out);
            return tg_settings_fail(
                err, err_cap,
                "aliases.%s must be {\"tier\": \"<tier>\"} or {\"model\": \"<model>\"}", name);
        }
        if (model != NULL && strcmp(model, name) == 0) {
            tg_aliases_free(out);
            return tg_settings_fail(err, err_cap, "aliases.%s names itself", name);
        }
        struct tg_alias *a = &out->items[out->n++];
        a->name = tg_xstrdup(name);
        a->tier = tier != NULL ? tg_xstrdup(tier) : NULL;
        a->model = model != NULL ? tg_xstrdup(model) : NULL;
    }
    return 0;
}

static const struct tg_alias *
find_in(const struct tg_aliases *a, const char *name)
{
    for (size_t i = 0; a != NULL && i < a->n; i++) {
        if (strcmp(a->items[i].name, name) == 0) {
            return &a->items[i];
        }
    }
    return NULL;
}

const struct tg_alias *
tg_aliases_find(const struct tg_aliases *key, const struct tg_aliases *project, const char *name)
{
    const struct tg_alias *a = find_in(key, name);
    return a != NULL ? a : find_in(project, name);
}

const char *
tg_alias_pick_cheapest(const char *const *models, size_t n, const struct tg_price_table *prices,
                       tg_alias_allow_cb allow, void *arg)
{
    const char *best = NULL;
    int64_t best_price = 0;
    for (size_t i = 0; i < n; i++) {
        const struct tg_price *p = prices != NULL ? tg_price_lookup(prices, models[i]) : NULL;
        if (p == NULL || (allow != NULL && !allow(models[i], arg))) {
            continue;
        }
        int64_t price = p->input_micros + p->output_micros;
        if (best == NULL || price < best_price) {
            best = models[i];
            best_price = price;
        }
    }
    return best;
}
