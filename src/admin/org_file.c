/*
 * org_file.c: the organization file's YAML writer and reader (org_file.h).
 *
 * The writer drives libyaml's emitter with events (so quoting and escaping are libyaml's); the
 * reader loads the text as one libyaml document and walks its nodes, whose marks give the line
 * of every error. Both are pure: the text in, a model out, or the reverse.
 */
#include "admin/org_file.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cache/cache.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"
#include "gateway/microbatch.h"
#include "policy/limits.h"
#include "policy/token_policy.h"

#define YAML_MAX_DEPTH 32
#define YAML_MAX_NODES 100000

static const char *
str_of(const json_t *o, const char *k)
{
    return tg_json_str(o, k);
}

json_t *
tg_org_file_find(const json_t *list, const char *key, const char *value)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *s = str_of(v, key);
        if (s != NULL && value != NULL && strcmp(s, value) == 0) {
            return v;
        }
    }
    return NULL;
}

/* ---- YAML scalars ------------------------------------------------------------------------ */

static bool
is_int_text(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    if (*p == '\0') {
        return false;
    }
    for (; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p)) {
            return false;
        }
    }
    return true;
}

/* [-+]? (digits [. digits?] | . digits) ([eE] [-+]? digits)? */
static bool
is_float_text(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    size_t digits = 0;
    while (isdigit((unsigned char)*p)) {
        p++, digits++;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            p++, digits++;
        }
    }
    if (digits == 0) {
        return false;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '-' || *p == '+';
        if (!isdigit((unsigned char)*p)) {
            return false;
        }
        while (isdigit((unsigned char)*p)) {
            p++;
        }
    }
    return *p == '\0';
}

static bool
is_word(const char *s, const char *const *words)
{
    for (size_t i = 0; words[i] != NULL; i++) {
        if (strcmp(s, words[i]) == 0) {
            return true;
        }
    }
    return false;
}

static const char *const null_words[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const true_words[] = {"true", "True", "TRUE", NULL};
static const char *const false_words[] = {"false", "False", "FALSE", NULL};
/* YAML 1.1 booleans other tools read as such: always written quoted, read as strings. */
static const char *const other_bool_words[] = {"yes", "Yes", "YES", "no",  "No",  "NO",
                                               "on",  "On",  "ON",  "off", "Off", "OFF",
                                               "y",   "Y",   "n",   "N",   NULL};

/* A plain scalar as JSON: null, a boolean, an integer, a real, or a string. */
static json_t *
plain_value(const char *s)
{
    if (is_word(s, null_words)) {
        return json_null();
    }
    if (is_word(s, true_words) || is_word(s, false_words)) {
        return json_boolean(is_word(s, true_words));
    }
    errno = 0;
    if (is_int_text(s)) {
        long long v = strtoll(s, NULL, 10);
        if (errno == 0) {
            return json_integer(v);
        }
    }
    if (is_float_text(s)) {
        double d = strtod(s, NULL);
        if (isfinite(d)) {
            return json_real(d);
        }
    }
    return json_string(s);
}

/* True when s written plain would read back as something other than the string s. */
static bool
needs_quotes(const char *s)
{
    return is_word(s, null_words) || is_word(s, true_words) || is_word(s, false_words) ||
           is_word(s, other_bool_words) || is_int_text(s) || is_float_text(s) ||
           strchr(".-+", s[0]) != NULL;
}

/* ---- the writer -------------------------------------------------------------- */

struct writer {
    yaml_emitter_t em;
    yaml_event_t ev;
    bool is_failed;
};

static int
write_out(void *data, unsigned char *buffer, size_t size)
{
    return tg_buf_append(data, buffer, size) == 0;
}

static void
emit(struct writer *w)
{
    if (!w->is_failed && !yaml_emitter_emit(&w->em, &w->ev)) {
        w->is_failed = true;
    }
}

static void
emit_scalar(struct writer *w, const char *text, bool is_string)
{
    yaml_scalar_style_t style =
        is_string && needs_quotes(text) ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE;
    yaml_scalar_event_initialize(&w->ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text), 1, 1,
                                 style);
    emit(w);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool
is_flat_array(const json_t *a)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (json_is_object(v) || json_is_array(v)) {
            return false;
        }
    }
    return true;
}

static void emit_value(struct writer *w, const json_t *v, bool is_sorted);

/* An object's members: "_" members skipped; sorted by name inside settings. */
static void
emit_object(struct writer *w, const json_t *o, bool is_sorted)
{
    size_t n = 0;
    const char **keys = tg_xcalloc(json_object_size(o) + 1, sizeof(*keys));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        if (is_sorted || k[0] != '_') {
            keys[n++] = k;
        }
    }
    if (is_sorted) {
        qsort(keys, n, sizeof(*keys), cmp_str);
    }
    yaml_mapping_start_event_initialize(&w->ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
    emit(w);
    for (size_t i = 0; i < n; i++) {
        emit_scalar(w, keys[i], true);
        /* settings hold the project's own data: sorted all the way down, no "_" skipping */
        emit_value(w, json_object_get(o, keys[i]), is_sorted || strcmp(keys[i], "settings") == 0);
    }
    yaml_mapping_end_event_initialize(&w->ev);
    emit(w);
    free(keys);
}

static void
emit_value(struct writer *w, const json_t *v, bool is_sorted)
{
    char num[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        emit_object(w, v, is_sorted);
        break;
    case JSON_ARRAY: {
        yaml_sequence_start_event_initialize(&w->ev, NULL, NULL, 1,
                                             is_flat_array(v) && json_array_size(v) > 0
                                                 ? YAML_FLOW_SEQUENCE_STYLE
                                                 : YAML_BLOCK_SEQUENCE_STYLE);
        emit(w);
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            emit_value(w, item, is_sorted);
        }
        yaml_sequence_end_event_initialize(&w->ev);
        emit(w);
        break;
    }
    case JSON_STRING:
        emit_scalar(w, json_string_value(v), true);
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        emit_scalar(w, num, false);
        break;
    case JSON_REAL:
        /* %.17g round-trips a double; a whole number gets ".0" so it reads back as a real */
        snprintf(num, sizeof(num), "%.17g", json_real_value(v));
        if (strspn(num, "-0123456789") == strlen(num)) {
            strcat(num, ".0");
        }
        emit_scalar(w, num, false);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        emit_scalar(w, json_is_true(v) ? "true" : "false", false);
        break;
    case JSON_NULL:
        emit_scalar(w, "null", false);
        break;
    }
}

int
tg_org_file_write(const json_t *model, struct tg_buf *out)
{
    struct writer w = {0};
    if (!yaml_emitter_initialize(&w.em)) {
        return TG_ENOMEM;
    }
    yaml_emitter_set_output(&w.em, write_out, out);
    yaml_emitter_set_unicode(&w.em, 1);
    yaml_emitter_set_width(&w.em, -1); /* no folding: one line per value, stable diffs */
    yaml_emitter_set_indent(&w.em, 2);
    yaml_stream_start_event_initialize(&w.ev, YAML_UTF8_ENCODING);
    emit(&w);
    yaml_document_start_event_initialize(&w.ev, NULL, NULL, NULL, 1);
    emit(&w);
    yaml_mapping_start_event_initialize(&w.ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
    emit(&w);
    emit_scalar(&w, "version", true);
    emit_scalar(&w, "1", false);
    if (json_object_get(model, "organization") != NULL) {
        /* the organization's own data, like a project's settings: sorted, nothing skipped */
        emit_scalar(&w, "organization", true);
        emit_value(&w, json_object_get(model, "organization"), true);
    }
    emit_scalar(&w, "users", true);
    emit_value(&w, json_object_get(model, "users"), false);
    emit_scalar(&w, "projects", true);
    emit_value(&w, json_object_get(model, "projects"), false);
    yaml_mapping_end_event_initialize(&w.ev);
    emit(&w);
    yaml_document_end_event_initialize(&w.ev, 1);
    emit(&w);
    yaml_stream_end_event_initialize(&w.ev);
    emit(&w);
    yaml_emitter_flush(&w.em);
    yaml_emitter_delete(&w.em);
    return w.is_failed ? TG_EIO : 0;
}

/* ---- reading the file -------------------------------------------------------------- */

struct reader {
    yaml_document_t doc;
    size_t visits;
    bool is_failed;
    char err[400];
};

static int
line_of(const yaml_node_t *n)
{
    return n != NULL ? (int)n->start_mark.line + 1 : 0;
}

static bool fail(struct reader *r, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool
fail(struct reader *r, const yaml_node_t *n, const char *fmt, ...)
{
    if (!r->is_failed) {
        va_list ap;
        int len = snprintf(r->err, sizeof(r->err), "line %d: ", line_of(n));
        va_start(ap, fmt);
        vsnprintf(r->err + len, sizeof(r->err) - (size_t)len, fmt, ap);
        va_end(ap);
        r->is_failed = true;
    }
    return false;
}

static yaml_node_t *
node_at(struct reader *r, int index)
{
    return yaml_document_get_node(&r->doc, index);
}

/* Scalar text, or NULL when n is not a scalar. */
static const char *
scalar(const yaml_node_t *n)
{
    return n != NULL && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* Checks that n is a mapping whose keys are all in allowed (no duplicates). */
static bool
check_mapping(struct reader *r, yaml_node_t *n, const char *what, const char *const *allowed)
{
    if (n == NULL || n->type != YAML_MAPPING_NODE) {
        return fail(r, n, "%s must be a mapping", what);
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(r, p->key);
        const char *name = scalar(k);
        if (name == NULL) {
            return fail(r, k, "the keys of %s must be plain names", what);
        }
        bool is_known = false;
        char known[200] = "";
        for (size_t i = 0; allowed[i] != NULL; i++) {
            is_known = is_known || strcmp(name, allowed[i]) == 0;
            size_t len = strlen(known);
            snprintf(known + len, sizeof(known) - len, "%s%s", i ? ", " : "", allowed[i]);
        }
        if (!is_known) {
            return fail(r, k, "unknown key \"%.64s\" in %s (known: %s)", name, what, known);
        }
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
            if (strcmp(scalar(node_at(r, q->key)), name) == 0) {
                return fail(r, k, "key \"%s\" appears twice in %s", name, what);
            }
        }
    }
    return true;
}

static yaml_node_t *
map_get(struct reader *r, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        if (strcmp(scalar(node_at(r, p->key)), key) == 0) {
            return node_at(r, p->value);
        }
    }
    return NULL;
}

/* A text field (any scalar's text): absent is fine unless required; empty or longer than
 * max_len is not. */
static bool
get_text(struct reader *r, yaml_node_t *map, const char *what, const char *key, bool required,
         size_t max_len, json_t *out)
{
    yaml_node_t *v = map_get(r, map, key);
    if (v == NULL) {
        return required ? fail(r, map, "%s needs a %s", what, key) : true;
    }
    const char *s = scalar(v);
    if (s == NULL || (v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && s[0] == '\0')) {
        return fail(r, v, "%s.%s must be a non-empty string", what, key);
    }
    if (s[0] == '\0' || strlen(s) > max_len) {
        return fail(r, v, "%s.%s must be 1 to %zu bytes", what, key, max_len);
    }
    json_object_set_new(out, key, json_string(s));
    return true;
}

static bool
get_choice(struct reader *r, yaml_node_t *map, const char *what, const char *key, bool required,
           const char *const *choices, json_t *out)
{
    if (!get_text(r, map, what, key, required, TG_ORG_NAME_MAX_BYTES, out)) {
        return false;
    }
    const char *s = str_of(out, key);
    if (s != NULL && !is_word(s, choices)) {
        return fail(r, map_get(r, map, key), "%s.%s must be %s or %s", what, key, choices[0],
                    choices[1]);
    }
    return true;
}

/* Any YAML node as JSON (settings). */
static json_t *
to_json(struct reader *r, yaml_node_t *n, int depth)
{
    if (++r->visits > YAML_MAX_NODES || depth > YAML_MAX_DEPTH) {
        fail(r, n, "the file nests too deeply or repeats too much (aliases?)");
        return NULL;
    }
    if (n->type == YAML_SCALAR_NODE) {
        const char *s = scalar(n);
        return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? plain_value(s) : json_string(s);
    }
    json_t *out = n->type == YAML_MAPPING_NODE ? json_object() : json_array();
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top;
             i++) {
            json_t *v = to_json(r, node_at(r, *i), depth + 1);
            if (v == NULL) {
                json_decref(out);
                return NULL;
            }
            json_array_append_new(out, v);
        }
        return out;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(r, p->key);
        json_t *v = scalar(k) != NULL ? to_json(r, node_at(r, p->value), depth + 1) : NULL;
        if (v == NULL || json_object_get(out, scalar(k)) != NULL) {
            if (v != NULL || !r->is_failed) {
                fail(r, k, "settings keys must be unique plain names");
            }
            json_decref(v);
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, scalar(k), v);
    }
    return out;
}

static bool
check_sequence(struct reader *r, yaml_node_t *n, const char *what)
{
    return n->type == YAML_SEQUENCE_NODE ? true : fail(r, n, "%s must be a list", what);
}

static const char *const user_roles[] = {"owner", "reader", NULL};
static const char *const project_roles[] = {"owner", "member", NULL};

static json_t *
read_user(struct reader *r, yaml_node_t *n)
{
    static const char *const keys[] = {"email", "name", "role", NULL};
    json_t *u = json_object();
    if (!check_mapping(r, n, "a user", keys) ||
        !get_text(r, n, "user", "email", true, TG_ORG_EMAIL_MAX_BYTES, u) ||
        !get_text(r, n, "user", "name", false, TG_ORG_NAME_MAX_BYTES, u) ||
        !get_choice(r, n, "user", "role", true, user_roles, u)) {
        json_decref(u);
        return NULL;
    }
    char *email = tg_xstrdup(str_of(u, "email"));
    for (char *p = email; *p != '\0'; p++) {
        *p = (char)tolower((unsigned char)*p);
    }
    if (strchr(email, '@') == NULL) {
        fail(r, map_get(r, n, "email"), "user.email must be an e-mail address");
    }
    json_object_set_new(u, "email", json_string(email));
    free(email);
    if (r->is_failed) {
        json_decref(u);
        return NULL;
    }
    return u;
}

/* A list of items read by one function, each with a key member that must be unique (unless
 * is_unique is false), into out. */
static bool
read_list(struct reader *r, yaml_node_t *n, const char *what,
          json_t *(*item)(struct reader *, yaml_node_t *), const char *key, bool is_unique,
          json_t *out)
{
    if (!check_sequence(r, n, what)) {
        return false;
    }
    for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++) {
        yaml_node_t *in = node_at(r, *i);
        json_t *v = item(r, in);
        if (v == NULL) {
            return false;
        }
        if (is_unique && tg_org_file_find(out, key, str_of(v, key)) != NULL) {
            fail(r, in, "%s lists %s \"%.256s\" twice", what, key, str_of(v, key));
            json_decref(v);
            return false;
        }
        json_object_set_new(v, "_line", json_integer(line_of(in)));
        json_array_append_new(out, v);
    }
    return true;
}

static json_t *
read_member(struct reader *r, yaml_node_t *n)
{
    static const char *const keys[] = {"email", "role", NULL};
    json_t *m = json_object();
    if (!check_mapping(r, n, "a project member", keys) ||
        !get_text(r, n, "member", "email", true, TG_ORG_EMAIL_MAX_BYTES, m) ||
        !get_choice(r, n, "member", "role", true, project_roles, m)) {
        json_decref(m);
        return NULL;
    }
    char *email = tg_xstrdup(str_of(m, "email"));
    for (char *p = email; *p != '\0'; p++) {
        *p = (char)tolower((unsigned char)*p);
    }
    json_object_set_new(m, "email", json_string(email));
    free(email);
    return m;
}

static json_t *
read_account(struct reader *r, yaml_node_t *n)
{
    static const char *const keys[] = {"name", "role", NULL};
    json_t *s = json_object();
    if (!check_mapping(r, n, "a service account", keys) ||
        !get_text(r, n, "service_account", "name", true, TG_ORG_NAME_MAX_BYTES, s) ||
        !get_choice(r, n, "service_account", "role", false, project_roles, s)) {
        json_decref(s);
        return NULL;
    }
    if (str_of(s, "role") == NULL) {
        json_object_set_new(s, "role", json_string("member"));
    }
    return s;
}

/*
 * The settings members a file may set, each checked here as the gateway reads it. The issues
 * that add members (limits, budgets, deployments) add them to this table, so a misspelt
 * member is a 400 naming its line rather than a setting nobody reads.
 */
static const char *const settings_keys[] = {
    "aliases",     "budget",       "cache", "embedding_batching", "logging", "models",
    "rate_limits", "token_policy", NULL};

/* The members of one model's rate limits (admin_rate_limits.c), each a non-negative integer
 * up to 10^12 as the admin API takes them; a model with none is left out, not empty. */
static const char *const rate_limit_keys[] = {"max_requests_per_1_minute",
                                              "max_tokens_per_1_minute", "max_requests_per_1_day",
                                              "max_tokens_per_1_day", NULL};
#define RATE_LIMIT_MAX 1000000000000LL

/* <where>.rate_limits, when given: {model: {member: integer, ...}, ...}; where is "settings"
 * (a project's) or "organization". */
static bool
check_rate_limits(struct reader *r, const char *where, yaml_node_t *settings_node,
                  const json_t *settings)
{
    yaml_node_t *n = map_get(r, settings_node, "rate_limits");
    if (n == NULL) {
        return true;
    }
    if (n->type != YAML_MAPPING_NODE) {
        return fail(r, n, "%s.rate_limits must be a mapping of model names to limits", where);
    }
    const json_t *all = json_object_get(settings, "rate_limits");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(r, p->key);
        yaml_node_t *v = node_at(r, p->value);
        const char *model = scalar(k);
        if (model == NULL || model[0] == '\0') {
            return fail(r, k, "%s.rate_limits must be keyed by model names", where);
        }
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
            const char *other = scalar(node_at(r, q->key));
            if (other != NULL && strcmp(other, model) == 0) {
                return fail(r, k, "model \"%.95s\" appears twice in %s.rate_limits", model, where);
            }
        }
        char what[160];
        snprintf(what, sizeof(what), "%s.rate_limits.%.95s", where, model);
        if (!check_mapping(r, v, what, rate_limit_keys)) {
            return false;
        }
        if (v->data.mapping.pairs.top == v->data.mapping.pairs.start) {
            return fail(r, v, "%s names no limit (leave the model out instead)", what);
        }
        const json_t *limits = json_object_get(all, model);
        for (size_t i = 0; rate_limit_keys[i] != NULL; i++) {
            const json_t *x = json_object_get(limits, rate_limit_keys[i]);
            if (x != NULL && (!json_is_integer(x) || json_integer_value(x) < 0 ||
                              json_integer_value(x) > RATE_LIMIT_MAX)) {
                return fail(r, map_get(r, v, rate_limit_keys[i]),
                            "%s.%s must be an integer from 0 to %lld (leave it out for no limit)",
                            what, rate_limit_keys[i], RATE_LIMIT_MAX);
            }
        }
    }
    return true;
}

/* <where>.budget, when given, checked by the parser admission reads it with (policy/limits.h);
 * the error names the member, and its line when the member is there. */
static bool
check_budget(struct reader *r, const char *where, yaml_node_t *settings_node,
             const json_t *settings)
{
    yaml_node_t *n = map_get(r, settings_node, "budget");
    if (n == NULL) {
        return true;
    }
    json_t *only = json_pack("{s:O}", "budget", json_object_get(settings, "budget"));
    struct tg_level_limits lim;
    char err[200];
    int rc = tg_level_limits_parse(only, &lim, err, sizeof(err));
    json_decref(only);
    if (rc == 0) {
        tg_level_limits_free(&lim);
        return true;
    }
    /* "budget.<member>: why": point at the member's line when it is one of the mapping's. */
    yaml_node_t *at = n;
    char member[64] = "";
    if (sscanf(err, "budget.%63[a-z_]", member) == 1 && n->type == YAML_MAPPING_NODE &&
        map_get(r, n, member) != NULL) {
        at = map_get(r, n, member);
    }
    return fail(r, at, "%s.%s", where, err);
}

/* settings.cache, token_policy and aliases, when given, must read as the admin API's own
 * parsers read them (cache/cache.h, policy/token_policy.h), so what apply stores is what a
 * request then uses; the line named is the member's. */
static bool
check_parsed_settings(struct reader *r, yaml_node_t *n, const json_t *settings)
{
    char err[200];
    const json_t *cache = json_object_get(settings, "cache");
    if (cache != NULL) {
        struct tg_cache_settings cs;
        if (tg_cache_settings_parse(cache, &cs, err, sizeof(err)) != 0) {
            return fail(r, map_get(r, n, "cache"), "settings.cache: %s", err);
        }
    }
    const json_t *batching = json_object_get(settings, "embedding_batching");
    if (batching != NULL) {
        struct tg_mb_settings mb;
        if (tg_mb_settings_parse(batching, &mb, err, sizeof(err)) != 0) {
            return fail(r, map_get(r, n, "embedding_batching"), "settings.embedding_batching: %s",
                        err);
        }
    }
    if (json_object_get(settings, "token_policy") != NULL) {
        struct tg_token_policy p;
        int rc = tg_token_policy_parse(settings, &p, err, sizeof(err));
        tg_token_policy_free(&p);
        if (rc != 0) {
            return fail(r, map_get(r, n, "token_policy"), "settings.%s", err);
        }
    }
    if (json_object_get(settings, "aliases") != NULL) {
        struct tg_aliases a;
        int rc = tg_aliases_parse(settings, &a, err, sizeof(err));
        tg_aliases_free(&a);
        if (rc != 0) {
            return fail(r, map_get(r, n, "aliases"), "settings.%s", err);
        }
    }
    return true;
}

/* settings.models, when given, must be a list of model names. */
static bool
check_settings(struct reader *r, yaml_node_t *n, const json_t *settings)
{
    if (!check_rate_limits(r, "settings", n, settings) ||
        !check_budget(r, "settings", n, settings) || !check_parsed_settings(r, n, settings)) {
        return false;
    }
    const json_t *models = json_object_get(settings, "models");
    n = map_get(r, n, "models") != NULL ? map_get(r, n, "models") : n;
    size_t i;
    json_t *m;
    if (models == NULL) {
        return true;
    }
    if (!json_is_array(models)) {
        return fail(r, n, "settings.models must be a list of model names");
    }
    json_array_foreach(models, i, m)
    {
        if (!json_is_string(m) || json_string_length(m) == 0) {
            return fail(r, n, "settings.models must be a list of model names");
        }
    }
    return true;
}

static json_t *
read_project(struct reader *r, yaml_node_t *n)
{
    static const char *const keys[] = {"name",    "environment",      "archived", "settings",
                                       "members", "service_accounts", NULL};
    json_t *p = json_object();
    yaml_node_t *v;
    if (!check_mapping(r, n, "a project", keys) ||
        !get_text(r, n, "project", "name", true, TG_ORG_NAME_MAX_BYTES, p) ||
        !get_text(r, n, "project", "environment", false, TG_ORG_NAME_MAX_BYTES, p)) {
        goto fail;
    }
    if ((v = map_get(r, n, "archived")) != NULL) {
        json_t *b = scalar(v) && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE
                        ? plain_value(scalar(v))
                        : NULL;
        if (!json_is_boolean(b)) {
            json_decref(b);
            fail(r, v, "project.archived must be true or false");
            goto fail;
        }
        json_object_set_new(p, "archived", b);
    }
    if ((v = map_get(r, n, "settings")) != NULL) {
        if (!check_mapping(r, v, "project.settings", settings_keys)) {
            goto fail;
        }
        json_t *settings = to_json(r, v, 0);
        if (settings == NULL) {
            goto fail;
        }
        json_object_set_new(p, "settings", settings);
        if (!check_settings(r, v, settings)) {
            goto fail;
        }
    }
    if ((v = map_get(r, n, "members")) != NULL) {
        json_object_set_new(p, "members", json_array());
        if (!read_list(r, v, "project.members", read_member, "email", true,
                       json_object_get(p, "members"))) {
            goto fail;
        }
    }
    if ((v = map_get(r, n, "service_accounts")) != NULL) {
        json_object_set_new(p, "service_accounts", json_array());
        /* the store allows two service accounts of one name; they pair up in order */
        if (!read_list(r, v, "project.service_accounts", read_account, "name", false,
                       json_object_get(p, "service_accounts"))) {
            goto fail;
        }
    }
    return p;
fail:
    json_decref(p);
    return NULL;
}

/* The organization's settings members a file may set (policy/limits.h): key settings are not
 * in the file, since keys have no names that hold across installs. */
static const char *const org_keys[] = {"budget", "rate_limits", NULL};

/* The organization section: its settings, checked as admission reads them. */
static json_t *
read_org(struct reader *r, yaml_node_t *n)
{
    if (!check_mapping(r, n, "organization", org_keys)) {
        return NULL;
    }
    json_t *org = to_json(r, n, 0);
    if (org != NULL && (!check_rate_limits(r, "organization", n, org) ||
                        !check_budget(r, "organization", n, org))) {
        json_decref(org);
        org = NULL;
    }
    return org;
}

/* The desired model from the file text; NULL with r->err set. */
static json_t *
read_file(struct reader *r, const char *text, size_t len)
{
    static const char *const keys[] = {"version", "organization", "users", "projects", NULL};
    yaml_parser_t parser;
    json_t *want = NULL;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &r->doc)) {
        snprintf(r->err, sizeof(r->err), "line %zu: %s", parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "malformed YAML");
        yaml_parser_delete(&parser);
        memset(&r->doc, 0, sizeof(r->doc));
        return NULL;
    }
    yaml_parser_delete(&parser);
    yaml_node_t *root = yaml_document_get_root_node(&r->doc);
    if (r->doc.nodes.top - r->doc.nodes.start > YAML_MAX_NODES) {
        fail(r, root, "the file has too many nodes");
        return NULL;
    }
    if (root == NULL) {
        snprintf(r->err, sizeof(r->err), "line 1: the file is empty");
        return NULL;
    }
    if (!check_mapping(r, root, "the file", keys)) {
        return NULL;
    }
    yaml_node_t *v = map_get(r, root, "version");
    if (v != NULL && (scalar(v) == NULL || strcmp(scalar(v), "1") != 0)) {
        fail(r, v, "this tollgate reads version 1 files only");
        return NULL;
    }
    want = json_object();
    if ((v = map_get(r, root, "organization")) != NULL) {
        json_t *org = read_org(r, v);
        if (org == NULL) {
            goto fail;
        }
        json_object_set_new(want, "organization", org);
    }
    if ((v = map_get(r, root, "users")) != NULL) {
        json_object_set_new(want, "users", json_array());
        if (!read_list(r, v, "users", read_user, "email", true, json_object_get(want, "users"))) {
            goto fail;
        }
    }
    if ((v = map_get(r, root, "projects")) != NULL) {
        json_object_set_new(want, "projects", json_array());
        if (!read_list(r, v, "projects", read_project, "name", true,
                       json_object_get(want, "projects"))) {
            goto fail;
        }
    }
    return want;
fail:
    json_decref(want);
    return NULL;
}

json_t *
tg_org_file_read(const char *text, size_t len, char *err, size_t err_cap)
{
    struct reader r = {0};
    json_t *model = read_file(&r, text, len);
    yaml_document_delete(&r.doc);
    if (model == NULL) {
        snprintf(err, err_cap, "%s", r.err);
    }
    return model;
}
