/*
 * config.c: loads the YAML config file into struct tg_config, or makes the embedded default
 * from the environment.
 *
 * Two steps. First libyaml's event stream becomes a small tree of mappings, sequences and
 * scalars, each with its line number; anchors may label nodes but aliases are refused (they
 * are not needed for a config this size, and refusing them rules out alias cycles and
 * exponential expansion). Second, declared tables of fields (one per section, below) read
 * the tree: every key is looked up in its section's table, so an unknown key, a wrong type
 * or a value out of range is an error naming the file, the line and the key, never a silent
 * default. Sections that refer to each other (models name providers) are read after the
 * whole top level, so their order in the file does not matter.
 *
 * Secrets: provider api_key values and keys.pepper must be references (env:NAME or
 * file:PATH). Provider keys are resolved here, once, and live only in the provider struct;
 * they are wiped before being freed. No message from this file contains a secret: inline
 * values are refused without being echoed, and resolved values are never printed.
 */
#include "gateway/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

#define MAX_CONFIG_BYTES (1u << 20)
#define MAX_SECRET_BYTES (64u * 1024)
#define MAX_DEPTH 32
#define DAY_MS 86400000u
#define KIB 1024u
#define MIB (1024u * 1024)
#define GIB (1024u * 1024 * 1024)

/* ---- YAML tree ------------------------------------------------------------------------ */

enum ykind { Y_SCALAR, Y_SEQ, Y_MAP };

struct ynode {
    enum ykind kind;
    int line;            /* 1-based */
    bool is_plain;       /* scalar written without quotes (only plain scalars can be null) */
    char *str;           /* scalar text */
    struct ynode **kids; /* sequence items; mapping: key, value, key, value, ... */
    size_t n;
    size_t cap;
};

struct ctx {
    const char *file; /* for messages */
    char *err;
    size_t err_cap;
};

/* Writes "FILE:LINE: message" (or "FILE: message" without a node) and returns TG_ECONFIG. */
static int __attribute__((format(printf, 3, 4)))
fail(struct ctx *cx, const struct ynode *at, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (at != NULL) {
        snprintf(cx->err, cx->err_cap, "%s:%d: %s", cx->file, at->line, msg);
    } else {
        snprintf(cx->err, cx->err_cap, "%s: %s", cx->file, msg);
    }
    return TG_ECONFIG;
}

static void
ynode_free(struct ynode *y)
{
    if (y == NULL) {
        return;
    }
    for (size_t i = 0; i < y->n; i++) {
        ynode_free(y->kids[i]);
    }
    free(y->kids);
    free(y->str);
    free(y);
}

static bool
is_null(const struct ynode *y)
{
    if (y == NULL) {
        return true;
    }
    if (y->kind != Y_SCALAR || !y->is_plain) {
        return false;
    }
    const char *s = y->str;
    return *s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

static const struct ynode *
map_get(const struct ynode *m, const char *key)
{
    if (m == NULL || m->kind != Y_MAP) {
        return NULL;
    }
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        if (strcmp(m->kids[i]->str, key) == 0) {
            return m->kids[i + 1];
        }
    }
    return NULL;
}

/* Adds child to the open container top; mapping keys must be unique scalars. */
static int
ynode_add(struct ctx *cx, struct ynode *top, struct ynode *child)
{
    if (top->kind == Y_MAP && top->n % 2 == 0) {
        if (child->kind != Y_SCALAR) {
            int rc = fail(cx, child, "mapping keys must be plain strings");
            ynode_free(child);
            return rc;
        }
        if (map_get(top, child->str) != NULL) {
            int rc = fail(cx, child, "duplicate key '%s'", child->str);
            ynode_free(child);
            return rc;
        }
    }
    if (top->n == top->cap) {
        top->cap = top->cap ? top->cap * 2 : 8;
        top->kids = tg_xrealloc(top->kids, top->cap * sizeof(*top->kids));
    }
    top->kids[top->n++] = child;
    return 0;
}

static struct ynode *
ynode_new(enum ykind kind, const yaml_mark_t *mark)
{
    struct ynode *y = tg_xcalloc(1, sizeof(*y));
    y->kind = kind;
    y->line = (int)mark->line + 1;
    return y;
}

/* One event into the tree under construction. *done is set at the end of the document. */
static int
tree_event(struct ctx *cx, yaml_event_t *ev, struct ynode **stack, int *depth, struct ynode **root)
{
    struct ynode *y = NULL;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        y = ynode_new(Y_SCALAR, &ev->start_mark);
        y->str = tg_xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        y->is_plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        y = ynode_new(ev->type == YAML_MAPPING_START_EVENT ? Y_MAP : Y_SEQ, &ev->start_mark);
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        (*depth)--;
        return 0;
    case YAML_ALIAS_EVENT: {
        struct ynode at = {.line = (int)ev->start_mark.line + 1};
        return fail(cx, &at, "YAML aliases (*%s) are not supported; repeat the value instead",
                    (const char *)ev->data.alias.anchor);
    }
    case YAML_DOCUMENT_START_EVENT:
        if (*root != NULL) {
            struct ynode at = {.line = (int)ev->start_mark.line + 1};
            return fail(cx, &at, "expected one YAML document, found a second one");
        }
        return 0;
    default:
        return 0;
    }
    if (*depth == 0) {
        *root = y;
    } else {
        int rc = ynode_add(cx, stack[*depth - 1], y);
        if (rc < 0) {
            return rc;
        }
    }
    if (y->kind != Y_SCALAR) {
        if (*depth == MAX_DEPTH) {
            return fail(cx, y, "nested deeper than %d levels", MAX_DEPTH);
        }
        stack[(*depth)++] = y;
    }
    return 0;
}

/* Parses text into a tree. *out is NULL for an empty document. */
static int
tree_parse(struct ctx *cx, const char *text, size_t len, struct ynode **out)
{
    yaml_parser_t parser;
    struct ynode *stack[MAX_DEPTH];
    struct ynode *root = NULL;
    int depth = 0;
    int rc = 0;
    if (!yaml_parser_initialize(&parser)) {
        return fail(cx, NULL, "cannot initialise the YAML parser");
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            struct ynode at = {.line = (int)parser.problem_mark.line + 1};
            rc = fail(cx, &at, "YAML syntax error: %s%s%s",
                      parser.problem ? parser.problem : "unknown problem",
                      parser.context ? " " : "", parser.context ? parser.context : "");
            break;
        }
        bool end = ev.type == YAML_STREAM_END_EVENT;
        rc = tree_event(cx, &ev, stack, &depth, &root);
        yaml_event_delete(&ev);
        if (rc < 0 || end) {
            break;
        }
    }
    yaml_parser_delete(&parser);
    if (rc < 0) {
        ynode_free(root);
        return rc;
    }
    *out = root;
    return 0;
}

/* ---- field tables --------------------------------------------------------------------- */

struct field;
typedef int (*field_fn)(struct ctx *cx, const struct ynode *v, const char *path,
                        const struct field *f, void *dst);

/* One key of a section: parse writes the value at base + offset, within [min, max] for
 * numbers; a nested section lists its own fields in sub. */
struct field {
    const char *key;
    field_fn parse;
    size_t offset;
    uint64_t min;
    uint64_t max;
    const struct field *sub;
    size_t n_sub;
};

static int
read_map(struct ctx *cx, const struct ynode *m, const char *path, const struct field *fields,
         size_t n, void *base)
{
    if (is_null(m)) {
        return 0; /* "limits:" with nothing under it: every default */
    }
    if (m->kind != Y_MAP) {
        return *path ? fail(cx, m, "%s: expected a mapping of keys to values", path)
                     : fail(cx, m, "the top level must be a mapping of keys to values");
    }
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const struct ynode *k = m->kids[i];
        const struct field *f = NULL;
        for (size_t j = 0; j < n; j++) {
            if (strcmp(fields[j].key, k->str) == 0) {
                f = &fields[j];
                break;
            }
        }
        if (f == NULL) {
            char known[512] = "";
            size_t used = 0;
            for (size_t j = 0; j < n && used < sizeof(known); j++) {
                used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", j ? ", " : "",
                                         fields[j].key);
            }
            return fail(cx, k, "unknown key '%s'%s%s (expected one of: %s)", k->str,
                        *path ? " in " : "", path, known);
        }
        char sub[160];
        snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", f->key);
        int rc = f->parse(cx, m->kids[i + 1], sub, f, (char *)base + f->offset);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

static int
parse_section(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
              void *dst)
{
    return read_map(cx, v, path, f->sub, f->n_sub, dst);
}

/* A non-negative decimal integer in [f->min, f->max]; quoted or not. */
static int
scalar_uint(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
            uint64_t *out)
{
    if (v->kind != Y_SCALAR || v->str[0] == '\0') {
        return fail(cx, v, "%s: expected a non-negative integer", path);
    }
    uint64_t x = 0;
    for (const char *p = v->str; *p; p++) {
        if (*p < '0' || *p > '9') {
            return fail(cx, v, "%s: expected a non-negative integer", path);
        }
        if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, *p - '0', &x)) {
            x = UINT64_MAX;
            break;
        }
    }
    if (x < f->min || x > f->max) {
        return fail(cx, v, "%s: %s is out of range (%llu to %llu)", path, v->str,
                    (unsigned long long)f->min, (unsigned long long)f->max);
    }
    *out = x;
    return 0;
}

static int
parse_u64(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f, void *dst)
{
    return scalar_uint(cx, v, path, f, dst);
}

static int
parse_size(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
           void *dst)
{
    uint64_t x = 0;
    int rc = scalar_uint(cx, v, path, f, &x);
    if (rc == 0) {
        *(size_t *)dst = (size_t)x;
    }
    return rc;
}

static int
parse_int(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f, void *dst)
{
    uint64_t x = 0;
    int rc = scalar_uint(cx, v, path, f, &x); /* tables keep max below INT_MAX */
    if (rc == 0) {
        *(int *)dst = (int)x;
    }
    return rc;
}

static int
parse_i64(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f, void *dst)
{
    uint64_t x = 0;
    int rc = scalar_uint(cx, v, path, f, &x);
    if (rc == 0) {
        *(int64_t *)dst = (int64_t)x;
    }
    return rc;
}

/* A non-empty string, replacing (and freeing) the previous value. */
static int
parse_str(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f, void *dst)
{
    if (v->kind != Y_SCALAR || is_null(v) || v->str[0] == '\0') {
        return fail(cx, v, "%s: expected a non-empty string", path);
    }
    char **s = dst;
    free(*s);
    *s = tg_xstrdup(v->str);
    return 0;
}

static int
parse_log_level(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
                void *dst)
{
    enum tg_log_level level;
    if (v->kind != Y_SCALAR || tg_log_level_parse(v->str, &level) < 0) {
        return fail(cx, v, "%s: expected one of debug, info, warn, error", path);
    }
    return parse_str(cx, v, path, f, dst);
}

/* The last key of a dotted path ("providers[0].api_key (provider 'x.y')" -> "api_key"), for
 * fix-it hints. The search stops at the first space: a provider name may contain dots. */
static const char *
last_key(const char *what, char *buf, size_t cap)
{
    size_t end = strcspn(what, " ");
    const char *k = what;
    for (size_t i = 0; i < end; i++) {
        if (what[i] == '.') {
            k = what + i + 1;
        }
    }
    size_t n = strspn(k, "abcdefghijklmnopqrstuvwxyz_");
    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), n ? k : "api_key");
    return buf;
}

/* The message for a value that is not a reference. It must not contain the value. */
static void
refuse_inline(const char *what, char *err, size_t err_cap)
{
    char key[32];
    last_key(what, key, sizeof(key));
    const char *example = strcmp(key, "pepper") == 0     ? "TOLLGATE_PEPPER"
                          : strcmp(key, "username") == 0 ? "SMTP_USERNAME"
                          : strcmp(key, "password") == 0 ? "SMTP_PASSWORD"
                                                         : "OPENAI_API_KEY";
    snprintf(err, err_cap,
             "%s: inline secrets are refused; put the key in an environment variable and write "
             "`%s: env:%s`, or in a file and write `%s: file:/path`",
             what, key, example, key);
}

static bool
is_env_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128 || (*s >= '0' && *s <= '9')) {
        return false;
    }
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

/* Checks that ref has the shape of a reference, without resolving it. */
static bool
ref_ok(const char *ref, const char *what, char *err, size_t err_cap)
{
    if (strncmp(ref, "env:", 4) == 0) {
        if (!is_env_name(ref + 4)) {
            /* Not echoed: what follows env: may be a pasted key. */
            snprintf(err, err_cap,
                     "%s: `env:` must be followed by an environment variable name (letters, "
                     "digits and _)",
                     what);
            return false;
        }
        return true;
    }
    if (strncmp(ref, "file:", 5) == 0) {
        if (ref[5] == '\0') {
            snprintf(err, err_cap, "%s: `file:` must be followed by a path", what);
            return false;
        }
        return true;
    }
    refuse_inline(what, err, err_cap);
    return false;
}

/* A secret reference, checked but not resolved (keys.pepper: serve resolves it). */
static int
parse_ref(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f, void *dst)
{
    if (is_null(v)) {
        return 0;
    }
    if (v->kind != Y_SCALAR) {
        return fail(cx, v, "%s: expected a string (env:NAME or file:PATH)", path);
    }
    char msg[400];
    if (!ref_ok(v->str, path, msg, sizeof(msg))) {
        return fail(cx, v, "%s", msg);
    }
    return parse_str(cx, v, path, f, dst);
}

/* "host:port", "[v6]:port" or ":port" (every IPv4 interface, 0.0.0.0). The host must be an
 * IP address (or "localhost", meaning 127.0.0.1): the listener binds without a resolver. */
static int
listen_parse(const char *s, char **host_out, int *port_out, char *err, size_t err_cap)
{
    const char *colon;
    char host[64];
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host)) {
            snprintf(err, err_cap, "expected [IPv6]:port, e.g. [::1]:8080");
            return TG_ECONFIG;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(close - s - 1), s + 1);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL ||
            (size_t)(colon - s) >= sizeof(host)) {
            snprintf(err, err_cap, "expected host:port (e.g. 127.0.0.1:8080, [::1]:8080 or :8080)");
            return TG_ECONFIG;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(colon - s), s);
        if (host[0] == '\0') {
            snprintf(host, sizeof(host), "0.0.0.0");
        } else if (strcmp(host, "localhost") == 0) {
            snprintf(host, sizeof(host), "127.0.0.1");
        }
    }
    unsigned char addr[16];
    if (inet_pton(s[0] == '[' ? AF_INET6 : AF_INET, host, addr) != 1) {
        snprintf(err, err_cap, "'%s' is not an IP address (names are not resolved)", host);
        return TG_ECONFIG;
    }
    const char *p = colon + 1;
    long port = 0;
    if (*p == '\0' || strspn(p, "0123456789") != strlen(p) || strlen(p) > 5 ||
        (port = strtol(p, NULL, 10)) < 1 || port > 65535) {
        snprintf(err, err_cap, "the port must be a number from 1 to 65535");
        return TG_ECONFIG;
    }
    *host_out = tg_xstrdup(host);
    *port_out = (int)port;
    return 0;
}

/* Staging area for the top level: the config plus the sections read after it. */
struct load {
    struct tg_config c;
    const struct ynode *providers;
    const struct ynode *models;
    const struct ynode *projects;
    const struct ynode *prices;
    const struct ynode *tiers;
};

static int
parse_listen(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
             void *dst)
{
    struct load *l = dst;
    char msg[200];
    char *host = NULL;
    int port;
    if (v->kind != Y_SCALAR || listen_parse(v->str, &host, &port, msg, sizeof(msg)) < 0) {
        return fail(cx, v, "%s: %s", path, v->kind != Y_SCALAR ? "expected host:port" : msg);
    }
    free(l->c.listen_host);
    l->c.listen_host = host;
    l->c.listen_port = port;
    return 0;
}

/* providers, models, projects, prices: kept as nodes and read once the top level is done. */
static int
parse_node(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
           void *dst)
{
    if (!is_null(v) && v->kind != Y_SEQ) {
        return fail(cx, v, "%s: expected a list", path);
    }
    *(const struct ynode **)dst = v;
    return 0;
}

/* model_tiers: a mapping, read after the models (read_tiers). */
static int
parse_map_node(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
               void *dst)
{
    (void)f;
    if (!is_null(v) && v->kind != Y_MAP) {
        return fail(cx, v, "%s: expected a map from tier name to a list of models", path);
    }
    *(const struct ynode **)dst = v;
    return 0;
}

#define CF(m) offsetof(struct load, c.m)
/* One line per table row reads best. */
// clang-format off
#define NUM(key, fn, off, lo, hi) {key, fn, off, lo, hi, NULL, 0}
#define SECTION(key, off, tab) {key, parse_section, off, 0, 0, tab, sizeof(tab) / sizeof(tab[0])}
// clang-format on

static const struct field limits_fields[] = {
    NUM("max_header_bytes", parse_size, CF(http.max_header_bytes), KIB, MIB),
    NUM("max_headers", parse_size, CF(http.max_headers), 1, 10000),
    NUM("max_body_bytes", parse_size, CF(http.max_body_bytes), 1, GIB),
    NUM("header_timeout_ms", parse_u64, CF(http.header_timeout_ms), 1, DAY_MS),
    NUM("body_timeout_ms", parse_u64, CF(http.body_timeout_ms), 1, DAY_MS),
    NUM("idle_timeout_ms", parse_u64, CF(http.idle_timeout_ms), 1, DAY_MS),
    NUM("max_connections", parse_size, CF(http.max_connections), 1, 1000000),
    NUM("max_json_depth", parse_int, CF(max_json_depth), 1, 1000),
    NUM("max_response_bytes", parse_size, CF(max_response_bytes), KIB, GIB),
    NUM("max_sse_event_bytes", parse_size, CF(max_sse_event_bytes), KIB, 64 * MIB),
    NUM("client_write_buffer_bytes", parse_size, CF(http.write_high_bytes), KIB, 64 * MIB),
};

static const struct field upstream_fields[] = {
    NUM("connect_timeout_ms", parse_u64, CF(upstream.connect_ms), 1, DAY_MS),
    NUM("first_byte_timeout_ms", parse_u64, CF(upstream.first_byte_ms), 1, DAY_MS),
    NUM("idle_timeout_ms", parse_u64, CF(upstream.idle_ms), 1, DAY_MS),
    NUM("total_timeout_ms", parse_u64, CF(upstream.total_ms), 1, DAY_MS),
    NUM("disconnect_drain_ms", parse_u64, CF(disconnect_drain_ms), 0, DAY_MS),
};

static const struct field ledger_fields[] = {
    NUM("batch_rows", parse_size, CF(ledger_batch_rows), 1, 100000),
    NUM("flush_ms", parse_u64, CF(ledger_flush_ms), 1, 60000),
};

static const struct field keys_fields[] = {
    NUM("pepper", parse_ref, CF(pepper_ref), 0, 0),
};

/* true/false (YAML 1.1's yes/no/on/off too: people write them). */
static int
parse_bool(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
           void *dst)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "on"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "off"};
    for (size_t i = 0; v->kind == Y_SCALAR && i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(v->str, yes[i]) == 0 || strcmp(v->str, no[i]) == 0) {
            *(bool *)dst = strcmp(v->str, yes[i]) == 0;
            return 0;
        }
    }
    return fail(cx, v, "%s: expected true or false", path);
}

static const struct field smtp_fields[] = {
    NUM("host", parse_str, CF(smtp.host), 0, 0),
    NUM("port", parse_int, CF(smtp.port), 1, 65535),
    NUM("starttls", parse_bool, CF(smtp.starttls), 0, 0),
    NUM("tls", parse_bool, CF(smtp.is_tls), 0, 0),
    NUM("username", parse_ref, CF(smtp.username), 0, 0),
    NUM("password", parse_ref, CF(smtp.password), 0, 0),
    NUM("from", parse_str, CF(smtp.from), 0, 0),
    NUM("timeout_ms", parse_u64, CF(smtp.timeout_ms), 100, DAY_MS),
};

static const struct field notifications_fields[] = {
    SECTION("smtp", 0, smtp_fields),
    NUM("interval_ms", parse_u64, CF(notify_interval_ms), 10, 3600000),
    NUM("webhook_timeout_ms", parse_u64, CF(webhook_timeout_ms), 100, DAY_MS),
};

/* A whole monthly budget in USD, quoted or plain, at most six decimals and $1,000,000 (the
 * limit of a budget in settings, policy/limits.h). */
static int
parse_budget_usd(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
                 void *dst)
{
    (void)f;
    int64_t micros = 0;
    if (v->kind != Y_SCALAR || tg_price_parse_usd(v->str, &micros) < 0 ||
        micros > INT64_C(1000000000000)) {
        return fail(cx, v,
                    "%s: expected USD, a non-negative decimal with at most six decimals and at "
                    "most 1000000, such as \"100\" (0: no budget)",
                    path);
    }
    *(int64_t *)dst = micros;
    return 0;
}

/* Minutes east of UTC, -840 to 840 (UTC-14:00 to UTC+14:00). */
static int
parse_tz_offset(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
                void *dst)
{
    (void)f;
    const char *s = v->kind == Y_SCALAR ? v->str : "";
    bool is_neg = s[0] == '-';
    const char *d = is_neg || s[0] == '+' ? s + 1 : s;
    long x = 0;
    bool is_ok = d[0] != '\0' && strlen(d) <= 3;
    for (const char *p = d; is_ok && *p != '\0'; p++) {
        is_ok = *p >= '0' && *p <= '9';
        x = x * 10 + (*p - '0');
    }
    if (!is_ok || x > 840) {
        return fail(cx, v, "%s: expected minutes east of UTC, from -840 to 840", path);
    }
    *(int *)dst = (int)(is_neg ? -x : x);
    return 0;
}

static const struct field budgets_fields[] = {
    NUM("default_org_monthly_usd", parse_budget_usd, CF(default_org_budget_micros), 0, 0),
    NUM("timezone_offset_minutes", parse_tz_offset, CF(budget_tz_offset_minutes), 0, 0),
};

/* cache.shared_projects: project names (projects are made through the admin API, so any
 * name is accepted; a name no project has shares nothing). */
static int
parse_shared_projects(struct ctx *cx, const struct ynode *v, const char *path,
                      const struct field *f, void *dst)
{
    (void)f;
    struct tg_config *c =
        (struct tg_config *)((char *)dst - offsetof(struct tg_config, cache_shared_projects));
    if (v->kind != Y_SEQ || v->n > 1024) {
        return fail(cx, v, "%s: expected a list of project names", path);
    }
    for (size_t i = 0; i < c->n_cache_shared_projects; i++) {
        free(c->cache_shared_projects[i]);
    }
    free(c->cache_shared_projects);
    c->cache_shared_projects = tg_xcalloc(v->n + 1, sizeof(char *));
    c->n_cache_shared_projects = 0;
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *n = v->kids[i];
        if (n->kind != Y_SCALAR || is_null(n) || n->str[0] == '\0') {
            return fail(cx, n, "%s[%zu]: expected a project name", path, i);
        }
        c->cache_shared_projects[c->n_cache_shared_projects++] = tg_xstrdup(n->str);
    }
    return 0;
}

static const struct field cache_fields[] = {
    NUM("shared_projects", parse_shared_projects, CF(cache_shared_projects), 0, 0),
};

static const struct field metrics_fields[] = {
    NUM("bearer_token", parse_ref, CF(metrics_token_ref), 0, 0),
};

static const struct field access_log_fields[] = {
    NUM("path", parse_str, CF(access_log_path), 0, 0),
    NUM("queue", parse_size, CF(access_log_queue), 16, 1000000),
};

static const struct field top_fields[] = {
    NUM("listen", parse_listen, 0, 0, 0),
    NUM("workers", parse_int, CF(workers), 0, 1024),
    NUM("data_dir", parse_str, CF(data_dir), 0, 0),
    NUM("log_level", parse_log_level, CF(log_level), 0, 0),
    SECTION("limits", 0, limits_fields),
    SECTION("upstream", 0, upstream_fields),
    NUM("shutdown_grace_ms", parse_u64, CF(shutdown_grace_ms), 0, DAY_MS),
    SECTION("ledger", 0, ledger_fields),
    SECTION("keys", 0, keys_fields),
    SECTION("notifications", 0, notifications_fields),
    SECTION("budgets", 0, budgets_fields),
    SECTION("cache", 0, cache_fields),
    SECTION("metrics", 0, metrics_fields),
    SECTION("access_log", 0, access_log_fields),
    NUM("providers", parse_node, offsetof(struct load, providers), 0, 0),
    NUM("models", parse_node, offsetof(struct load, models), 0, 0),
    NUM("projects", parse_node, offsetof(struct load, projects), 0, 0),
    NUM("prices", parse_node, offsetof(struct load, prices), 0, 0),
    NUM("model_tiers", parse_map_node, offsetof(struct load, tiers), 0, 0),
};

/* ---- providers ------------------------------------------------------------------------ */

struct pconf {
    char *name;
    char *type;
    char *base_url;
    char *api_key; /* the reference, not the secret */
    char *api_version;
    struct tg_upstream_timeouts timeouts;
    struct tg_mock_settings mock;
};

#define PF(m) offsetof(struct pconf, m)
#define TF(m) offsetof(struct tg_upstream_timeouts, m)
#define MF(m) offsetof(struct tg_mock_settings, m)

static const struct field timeout_fields[] = {
    NUM("connect_ms", parse_u64, TF(connect_ms), 1, DAY_MS),
    NUM("first_byte_ms", parse_u64, TF(first_byte_ms), 1, DAY_MS),
    NUM("idle_ms", parse_u64, TF(idle_ms), 1, DAY_MS),
    NUM("total_ms", parse_u64, TF(total_ms), 1, DAY_MS),
};

static const struct field mock_fields[] = {
    NUM("latency_ms", parse_u64, MF(latency_ms), 0, 3600000),
    NUM("tokens_per_sec", parse_u64, MF(tokens_per_sec), 0, 1000000),
    NUM("completion_tokens", parse_i64, MF(completion_tokens), 0, 1000000),
};

static const struct field provider_fields[] = {
    NUM("name", parse_str, PF(name), 0, 0),
    NUM("type", parse_str, PF(type), 0, 0),
    NUM("base_url", parse_str, PF(base_url), 0, 0),
    NUM("api_key", parse_str, PF(api_key), 0, 0),
    NUM("api_version", parse_str, PF(api_version), 0, 0),
    SECTION("timeouts", PF(timeouts), timeout_fields),
    SECTION("mock", PF(mock), mock_fields),
};

/* What each provider type needs. Types registered in provider.c but missing here get the
 * openai-compatible rules (base_url required, key optional). */
struct type_rules {
    const char *type;
    const char *default_base_url; /* NULL: base_url required (unless !takes_base_url) */
    bool takes_base_url;
    bool needs_key;
    bool takes_key;
    bool needs_api_version; /* and only this type takes one */
};

static const struct type_rules type_rules[] = {
    {"openai", "https://api.openai.com/v1", true, true, true, false},
    {"azure", NULL, true, true, true, true},
    {"openai-compatible", NULL, true, false, true, false},
    {"mock", NULL, false, false, false, false},
};

static const struct type_rules *
rules_for(const char *type)
{
    for (size_t i = 0; i < sizeof(type_rules) / sizeof(type_rules[0]); i++) {
        if (strcmp(type_rules[i].type, type) == 0) {
            return &type_rules[i];
        }
    }
    return &type_rules[2];
}

static void
pconf_deinit(struct pconf *p)
{
    free(p->name);
    free(p->type);
    free(p->base_url);
    free(p->api_key);
    free(p->api_version);
}

static void
wipe_free(const char *secret)
{
    if (secret != NULL) {
        explicit_bzero((char *)secret, strlen(secret));
        free((char *)secret);
    }
}

static void
provider_deinit(struct tg_provider *p)
{
    free((char *)p->name);
    free((char *)p->type);
    free((char *)p->base_url);
    free((char *)p->api_version);
    free((char *)p->unavailable);
    wipe_free(p->api_key);
}

static struct tg_provider *
provider_add(struct tg_config *c)
{
    c->providers = tg_xrealloc(c->providers, (c->n_providers + 1) * sizeof(*c->providers));
    struct tg_provider *p = &c->providers[c->n_providers++];
    memset(p, 0, sizeof(*p));
    return p;
}

static bool
base_url_ok(char *url)
{
    size_t scheme = strncmp(url, "http://", 7) == 0 ? 7 : strncmp(url, "https://", 8) == 0 ? 8 : 0;
    /* Paths are appended as "/chat/completions": drop trailing slashes. */
    size_t n = strlen(url);
    while (n > scheme && url[n - 1] == '/') {
        url[--n] = '\0';
    }
    return scheme > 0 && n > scheme; /* a scheme and a host */
}

/* Checks pc against its type's rules; y is the provider's node (for lines). */
static int
provider_check(struct ctx *cx, const struct ynode *y, const char *path, struct pconf *pc,
               const struct type_rules *r)
{
    const struct ynode *at;
    if (pc->base_url != NULL && !r->takes_base_url) {
        return fail(cx, map_get(y, "base_url"), "%s.base_url: type %s takes no base_url", path,
                    pc->type);
    }
    if (pc->base_url == NULL && r->takes_base_url && r->default_base_url == NULL) {
        return fail(cx, y, "%s: type %s requires base_url", path, pc->type);
    }
    if (pc->base_url == NULL && r->default_base_url != NULL) {
        pc->base_url = tg_xstrdup(r->default_base_url);
    } else if (pc->base_url != NULL && !base_url_ok(pc->base_url)) {
        return fail(cx, map_get(y, "base_url"), "%s.base_url: expected an http:// or https:// URL",
                    path);
    }
    if (pc->api_key != NULL && !r->takes_key) {
        return fail(cx, map_get(y, "api_key"), "%s.api_key: type %s takes no api_key", path,
                    pc->type);
    }
    if (pc->api_key == NULL && r->needs_key) {
        return fail(cx, y, "%s: type %s requires api_key (env:NAME or file:PATH)", path, pc->type);
    }
    if (pc->api_version == NULL && r->needs_api_version) {
        return fail(cx, y, "%s: type %s requires api_version (e.g. 2024-10-21)", path, pc->type);
    }
    if (pc->api_version != NULL && !r->needs_api_version) {
        return fail(cx, map_get(y, "api_version"), "%s.api_version: only type azure takes one",
                    path);
    }
    if ((at = map_get(y, "mock")) != NULL && strcmp(pc->type, "mock") != 0) {
        return fail(cx, at, "%s.mock: only type mock takes mock settings", path);
    }
    return 0;
}

/* Providers whose key did not resolve: refused when none is left to serve, else one line
 * each at start, so a missing key is known before the first call needs it. */
static int
check_unavailable(struct ctx *cx, const struct tg_config *c, const struct ynode *list)
{
    size_t usable = 0;
    for (size_t i = 0; i < c->n_providers; i++) {
        usable += c->providers[i].unavailable == NULL;
    }
    if (c->n_providers > 0 && usable == 0) {
        /* Nothing could serve: refused as before, at the first provider's api_key line. */
        const struct tg_provider *p = &c->providers[0];
        const struct ynode *at =
            list != NULL && list->kind == Y_SEQ && list->n > 0 ? list->kids[0] : list;
        const struct ynode *key = map_get(at, "api_key");
        return fail(cx, key != NULL ? key : at, "providers[0].api_key (provider '%s'): %s%s",
                    p->name, p->unavailable,
                    c->n_providers > 1 ? "; no other provider is usable either" : "");
    }
    for (size_t i = 0; i < c->n_providers; i++) {
        const struct tg_provider *p = &c->providers[i];
        if (p->unavailable != NULL) {
            tg_log_warn("provider '%s': %s; its deployments are unavailable", p->name,
                        p->unavailable);
        }
    }
    return 0;
}

static int
read_provider(struct ctx *cx, struct tg_config *c, const struct ynode *y, size_t i)
{
    char path[64];
    snprintf(path, sizeof(path), "providers[%zu]", i);
    struct pconf pc = {.timeouts = c->upstream, .mock = {0, 0, 16}};
    int rc = read_map(cx, y, path, provider_fields,
                      sizeof(provider_fields) / sizeof(*provider_fields), &pc);
    if (rc < 0) {
        goto out;
    }
    if (y->kind != Y_MAP || pc.name == NULL || pc.type == NULL) {
        rc = fail(cx, y, "%s: name and type are required", path);
        goto out;
    }
    if (tg_config_provider(c, pc.name) != NULL) {
        rc = fail(cx, map_get(y, "name"), "%s: provider name '%s' is used twice", path, pc.name);
        goto out;
    }
    const struct tg_provider_ops *ops = tg_provider_ops_find(pc.type);
    if (ops == NULL) {
        rc = fail(cx, map_get(y, "type"),
                  "%s.type: unknown provider type '%s' (expected openai, azure, "
                  "openai-compatible or mock)",
                  path, pc.type);
        goto out;
    }
    rc = provider_check(cx, y, path, &pc, rules_for(pc.type));
    if (rc < 0) {
        goto out;
    }
    char *secret = NULL;
    char *unavailable = NULL;
    if (pc.api_key != NULL) {
        char what[160];
        char msg[400];
        snprintf(what, sizeof(what), "%s.api_key (provider '%s')", path, pc.name);
        /* A value that is not a reference (an inline secret) is a config error; a reference
         * that does not resolve (unset variable, unreadable file) only makes this provider
         * unavailable: tg_config_load refuses the config when no provider is left. */
        if (!ref_ok(pc.api_key, what, msg, sizeof(msg))) {
            rc = fail(cx, map_get(y, "api_key"), "%s", msg);
            goto out;
        }
        secret = tg_config_resolve_secret(pc.api_key, what, msg, sizeof(msg));
        if (secret == NULL) {
            /* msg is "<what>: <why>"; the why names the variable or path, never a value. */
            size_t n = strlen(what);
            bool is_prefixed = strncmp(msg, what, n) == 0 && strncmp(msg + n, ": ", 2) == 0;
            unavailable = tg_xstrdup(is_prefixed ? msg + n + 2 : msg);
        }
    }
    struct tg_provider *p = provider_add(c);
    p->unavailable = unavailable;
    p->name = pc.name;
    p->type = pc.type;
    p->base_url = pc.base_url;
    p->api_version = pc.api_version;
    p->api_key = secret;
    p->timeouts = pc.timeouts;
    p->mock = pc.mock;
    p->ops = ops;
    pc.name = pc.type = pc.base_url = pc.api_version = NULL;
out:
    pconf_deinit(&pc);
    return rc;
}

/* ---- models, projects, prices ------------------------------------------------------------ */

#define RF(m) offsetof(struct tg_model_route, m)
#define DF(m) offsetof(struct tg_model_deployment, m)
#define BF(m) offsetof(struct tg_breaker_conf, m)

/* Routing keys of a route (policy/router.h); the deployments' providers and the fallbacks'
 * names are checked once every route is read. */
static const struct field deployment_fields[] = {
    NUM("provider", parse_str, DF(provider), 0, 0),
    NUM("upstream_model", parse_str, DF(upstream_model), 0, 0),
    NUM("weight", parse_int, DF(weight), 1, 1000000),
    NUM("priority", parse_int, DF(priority), 0, 1000),
    SECTION("timeouts", DF(timeouts), timeout_fields),
};

static void
deployments_free(struct tg_model_deployment *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(d[i].provider);
        free(d[i].upstream_model);
    }
    free(d);
}

static int
parse_deployments(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
                  void *dst)
{
    struct tg_model_route *r = (struct tg_model_route *)((char *)dst - RF(deployments));
    if (v->kind != Y_SEQ || v->n == 0 || v->n > TG_ROUTER_MAX_DEPLOYMENTS) {
        return fail(cx, v, "%s: expected a list of 1 to %d deployments", path,
                    TG_ROUTER_MAX_DEPLOYMENTS);
    }
    deployments_free(r->deployments, r->n_deployments);
    r->deployments = tg_xcalloc(v->n, sizeof(*r->deployments));
    r->n_deployments = 0;
    for (size_t i = 0; i < v->n; i++) {
        char sub[96];
        snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
        struct tg_model_deployment *d = &r->deployments[r->n_deployments++];
        d->weight = 1;
        int rc = read_map(cx, v->kids[i], sub, deployment_fields,
                          sizeof(deployment_fields) / sizeof(*deployment_fields), d);
        if (rc == 0 && (v->kids[i]->kind != Y_MAP || d->provider == NULL)) {
            rc = fail(cx, v->kids[i], "%s: provider is required", sub);
        }
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

static int
parse_strategy(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
               void *dst)
{
    if (v->kind != Y_SCALAR || !tg_route_strategy_parse(v->str, dst)) {
        return fail(cx, v, "%s: expected weighted, least_outstanding or lowest_latency", path);
    }
    return 0;
}

static void
names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

static int
parse_fallbacks(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
                void *dst)
{
    struct tg_model_route *r = (struct tg_model_route *)((char *)dst - RF(fallbacks));
    if (v->kind != Y_SEQ || v->n > 16) {
        return fail(cx, v, "%s: expected a list of at most 16 model names", path);
    }
    names_free(r->fallbacks, r->n_fallbacks);
    r->fallbacks = tg_xcalloc(v->n + 1, sizeof(char *));
    r->n_fallbacks = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (v->kids[i]->kind != Y_SCALAR || is_null(v->kids[i]) || v->kids[i]->str[0] == '\0') {
            return fail(cx, v->kids[i], "%s[%zu]: expected a model name", path, i);
        }
        r->fallbacks[r->n_fallbacks++] = tg_xstrdup(v->kids[i]->str);
    }
    return 0;
}

static const struct field retry_fields[] = {
    NUM("max_attempts", parse_int, RF(retry_max_attempts), 1, 10),
    NUM("backoff_ms", parse_u64, RF(retry_backoff_ms), 0, 60000),
};

static const struct field breaker_fields[] = {
    NUM("failures", parse_int, BF(failures), 1, 1000000),
    NUM("error_rate_pct", parse_int, BF(error_rate_pct), 0, 100),
    NUM("window_ms", parse_u64, BF(window_ms), 1, DAY_MS),
    NUM("open_ms", parse_u64, BF(open_ms), 1, DAY_MS),
};

static void
route_routing_free(struct tg_model_route *r)
{
    deployments_free(r->deployments, r->n_deployments);
    names_free(r->fallbacks, r->n_fallbacks);
    tg_router_free(r->router);
    r->deployments = NULL;
    r->fallbacks = NULL;
    r->router = NULL;
}

/* Gives a route its deployments (one from provider/upstream_model in the single-provider
 * form) and its router. */
static void
route_routing_finish(const struct tg_config *c, struct tg_model_route *r)
{
    if (r->n_deployments == 0) {
        r->deployments = tg_xcalloc(1, sizeof(*r->deployments));
        r->deployments[0] = (struct tg_model_deployment){
            .provider = tg_xstrdup(r->provider),
            .upstream_model = r->upstream_model ? tg_xstrdup(r->upstream_model) : NULL,
            .weight = 1,
        };
        r->n_deployments = 1;
    } else {
        free(r->provider);
        r->provider = tg_xstrdup(r->deployments[0].provider);
    }
    struct tg_router_deployment_conf d[TG_ROUTER_MAX_DEPLOYMENTS];
    char why[TG_ROUTER_MAX_DEPLOYMENTS][480];
    for (size_t i = 0; i < r->n_deployments; i++) {
        if (r->deployments[i].upstream_model == NULL) {
            r->deployments[i].upstream_model = tg_xstrdup(r->name);
        }
        const struct tg_provider *p = tg_config_provider(c, r->deployments[i].provider);
        if (p != NULL && p->unavailable != NULL) {
            snprintf(why[i], sizeof(why[i]), "provider '%s': %s", p->name, p->unavailable);
        }
        d[i] = (struct tg_router_deployment_conf){
            r->deployments[i].provider, r->deployments[i].upstream_model, r->deployments[i].weight,
            r->deployments[i].priority, p != NULL && p->unavailable != NULL ? why[i] : NULL};
    }
    free(r->upstream_model);
    r->upstream_model = tg_xstrdup(r->deployments[0].upstream_model);
    r->router = tg_router_new(d, r->n_deployments, r->strategy, &r->breaker);
}

static void
route_routing_defaults(struct tg_model_route *r)
{
    r->strategy = TG_ROUTE_WEIGHTED;
    r->retry_max_attempts = 3;
    r->retry_backoff_ms = 100;
}

static const struct field model_fields[] = {
    NUM("name", parse_str, RF(name), 0, 0),
    NUM("provider", parse_str, RF(provider), 0, 0),
    NUM("upstream_model", parse_str, RF(upstream_model), 0, 0),
    NUM("tier", parse_str, RF(tier), 0, 0),
    NUM("deployments", parse_deployments, RF(deployments), 0, 0),
    NUM("strategy", parse_strategy, RF(strategy), 0, 0),
    NUM("fallbacks", parse_fallbacks, RF(fallbacks), 0, 0),
    SECTION("retry", 0, retry_fields),
    SECTION("breaker", RF(breaker), breaker_fields),
};

/* The single-provider form (provider, upstream_model) or deployments:, not both; every
 * deployment names a provider. A breaker only opens when asked for or with deployments: the
 * single-provider form keeps serving (and failing) as before. */
static int
check_route_routing(struct ctx *cx, struct tg_config *c, const struct ynode *y, const char *path,
                    struct tg_model_route *r)
{
    bool has_breaker = map_get(y, "breaker") != NULL;
    if (y->kind != Y_MAP || r->name == NULL || (r->provider == NULL) == (r->deployments == NULL)) {
        return fail(cx, y, "%s: name and provider are required (or name and deployments:)", path);
    }
    if (r->deployments != NULL && r->upstream_model != NULL) {
        return fail(cx, map_get(y, "upstream_model"),
                    "%s.upstream_model: with deployments, each deployment names its model", path);
    }
    if (r->provider != NULL && tg_config_provider(c, r->provider) == NULL) {
        return fail(cx, map_get(y, "provider"), "%s.provider: no provider is named '%s'", path,
                    r->provider);
    }
    for (size_t j = 0; j < r->n_deployments; j++) {
        if (tg_config_provider(c, r->deployments[j].provider) == NULL) {
            return fail(cx, map_get(y, "deployments"),
                        "%s.deployments[%zu].provider: no provider is named '%s'", path, j,
                        r->deployments[j].provider);
        }
        if (r->deployments[j].upstream_model != NULL && strcmp(r->name, "*") == 0) {
            return fail(cx, map_get(y, "deployments"),
                        "%s.deployments[%zu].upstream_model: the \"*\" route passes each model "
                        "under its own name",
                        path, j);
        }
    }
    if (!has_breaker && r->deployments != NULL) {
        r->breaker = (struct tg_breaker_conf){5, 50, 30000, 10000};
    } else if (has_breaker) {
        struct tg_breaker_conf d = {5, 50, 30000, 10000};
        r->breaker.failures = r->breaker.failures ? r->breaker.failures : d.failures;
        r->breaker.error_rate_pct =
            map_get(map_get(y, "breaker"), "error_rate_pct") ? r->breaker.error_rate_pct : 50;
        r->breaker.window_ms = r->breaker.window_ms ? r->breaker.window_ms : d.window_ms;
        r->breaker.open_ms = r->breaker.open_ms ? r->breaker.open_ms : d.open_ms;
    }
    return 0;
}

/* fallbacks: name configured routes other than their own. */
static int
check_fallbacks(struct ctx *cx, const struct tg_config *c, const struct ynode *models)
{
    for (size_t i = 0; i < c->n_models; i++) {
        const struct tg_model_route *r = &c->models[i];
        for (size_t j = 0; j < r->n_fallbacks; j++) {
            bool is_known = false;
            for (size_t k = 0; k < c->n_models; k++) {
                is_known = is_known || (k != i && strcmp(c->models[k].name, r->fallbacks[j]) == 0);
            }
            if (!is_known || strcmp(r->fallbacks[j], "*") == 0) {
                const struct ynode *y = models != NULL && i < models->n ? models->kids[i] : NULL;
                return fail(cx, y != NULL ? map_get(y, "fallbacks") : NULL,
                            "models[%zu].fallbacks[%zu]: '%s' is not another configured model", i,
                            j, r->fallbacks[j]);
            }
        }
    }
    return 0;
}

static int
read_model(struct ctx *cx, struct tg_config *c, const struct ynode *y, size_t i)
{
    char path[64];
    snprintf(path, sizeof(path), "models[%zu]", i);
    struct tg_model_route r = {0};
    route_routing_defaults(&r);
    int rc = read_map(cx, y, path, model_fields, sizeof(model_fields) / sizeof(*model_fields), &r);
    rc = rc < 0 ? rc : check_route_routing(cx, c, y, path, &r);
    for (size_t j = 0; rc == 0 && j < c->n_models; j++) {
        if (strcmp(c->models[j].name, r.name) == 0) {
            rc = fail(cx, map_get(y, "name"), "%s: model name '%s' is used twice", path, r.name);
        }
    }
    if (rc == 0 && r.upstream_model != NULL && strcmp(r.name, "*") == 0) {
        rc = fail(cx, map_get(y, "upstream_model"),
                  "%s.upstream_model: the \"*\" route passes each model under its own name", path);
    }
    if (rc < 0) {
        free(r.name);
        free(r.provider);
        free(r.upstream_model);
        free(r.tier);
        route_routing_free(&r);
        return rc;
    }
    if (r.upstream_model == NULL) {
        r.upstream_model = tg_xstrdup(r.name);
    }
    route_routing_finish(c, &r);
    c->models = tg_xrealloc(c->models, (c->n_models + 1) * sizeof(*c->models));
    c->models[c->n_models++] = r;
    return 0;
}

/* projects[].models: a non-empty list of model names. Any name is allowed (a "*" route may
 * serve names not listed under models:). */
static int
parse_name_list(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
                void *dst)
{
    struct tg_project_conf *p = dst;
    if (v->kind != Y_SEQ) {
        return fail(cx, v, "%s: expected a list of model names", path);
    }
    if (v->n == 0) {
        return fail(cx, v, "%s: an empty list would allow no model; omit the key to allow all",
                    path);
    }
    for (size_t i = 0; i < p->n_models; i++) {
        free(p->models[i]);
    }
    free(p->models);
    p->models = tg_xcalloc(v->n, sizeof(char *));
    p->n_models = 0;
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *m = v->kids[i];
        if (m->kind != Y_SCALAR || is_null(m) || m->str[0] == '\0') {
            return fail(cx, m, "%s[%zu]: expected a model name", path, i);
        }
        p->models[p->n_models++] = tg_xstrdup(m->str);
    }
    return 0;
}

static void project_deinit(struct tg_project_conf *p);

/* model_tiers: a map from tier name to a non-empty list of model names. */
static int
read_tiers(struct ctx *cx, struct tg_config *c, const struct ynode *y)
{
    if (is_null(y)) {
        return 0;
    }
    if (y->kind != Y_MAP) {
        return fail(cx, y, "model_tiers: expected a map from tier name to a list of models");
    }
    for (size_t i = 0; i + 1 < y->n; i += 2) {
        const struct ynode *k = y->kids[i];
        char path[160];
        snprintf(path, sizeof(path), "model_tiers.%.120s", k->str != NULL ? k->str : "");
        for (size_t j = 0; j < c->n_tiers; j++) {
            if (strcmp(c->tiers[j].name, k->str) == 0) {
                return fail(cx, k, "%s: tier is listed twice", path);
            }
        }
        struct tg_project_conf list = {0};
        int rc = parse_name_list(cx, y->kids[i + 1], path, NULL, &list);
        if (rc < 0) {
            project_deinit(&list);
            return rc;
        }
        c->tiers = tg_xrealloc(c->tiers, (c->n_tiers + 1) * sizeof(*c->tiers));
        c->tiers[c->n_tiers++] =
            (struct tg_model_tier){tg_xstrdup(k->str), list.models, list.n_models};
    }
    return 0;
}

static const struct field project_fields[] = {
    NUM("name", parse_str, offsetof(struct tg_project_conf, name), 0, 0),
    NUM("models", parse_name_list, 0, 0, 0),
};

static void
project_deinit(struct tg_project_conf *p)
{
    free(p->name);
    for (size_t i = 0; i < p->n_models; i++) {
        free(p->models[i]);
    }
    free(p->models);
}

static int
read_project(struct ctx *cx, struct tg_config *c, const struct ynode *y, size_t i)
{
    char path[64];
    snprintf(path, sizeof(path), "projects[%zu]", i);
    struct tg_project_conf p = {0};
    int rc =
        read_map(cx, y, path, project_fields, sizeof(project_fields) / sizeof(*project_fields), &p);
    if (rc == 0 && (y->kind != Y_MAP || p.name == NULL)) {
        rc = fail(cx, y, "%s: name is required", path);
    }
    for (size_t j = 0; rc == 0 && j < c->n_projects; j++) {
        if (strcmp(c->projects[j].name, p.name) == 0) {
            rc = fail(cx, map_get(y, "name"), "%s: project name '%s' is used twice", path, p.name);
        }
    }
    if (rc < 0) {
        project_deinit(&p);
        return rc;
    }
    c->projects = tg_xrealloc(c->projects, (c->n_projects + 1) * sizeof(*c->projects));
    c->projects[c->n_projects++] = p;
    return 0;
}

static int
parse_model_name(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f,
                 void *dst)
{
    struct tg_price *p = dst;
    if (v->kind != Y_SCALAR || v->str[0] == '\0' || strlen(v->str) >= sizeof(p->model)) {
        return fail(cx, v, "%s: expected a model name of 1 to %zu characters", path,
                    sizeof(p->model) - 1);
    }
    snprintf(p->model, sizeof(p->model), "%s", v->str);
    return 0;
}

/* USD per 1M tokens, quoted or plain: the scalar's text is parsed, never a float. */
static int
parse_usd(struct ctx *cx, const struct ynode *v, const char *path, const struct field *f, void *dst)
{
    if (v->kind != Y_SCALAR || tg_price_parse_usd(v->str, dst) < 0) {
        return fail(cx, v,
                    "%s: expected USD per 1M tokens, a non-negative decimal with at most six "
                    "decimals such as \"0.15\"",
                    path);
    }
    return 0;
}

static const struct field price_fields[] = {
    NUM("model", parse_model_name, 0, 0, 0),
    NUM("input", parse_usd, offsetof(struct tg_price, input_micros), 0, 0),
    NUM("cached_input", parse_usd, offsetof(struct tg_price, cached_input_micros), 0, 0),
    NUM("output", parse_usd, offsetof(struct tg_price, output_micros), 0, 0),
};

static int
read_price(struct ctx *cx, struct tg_config *c, const struct ynode *y, size_t i)
{
    char path[64];
    snprintf(path, sizeof(path), "prices[%zu]", i);
    struct tg_price p = {.input_micros = -1, .cached_input_micros = -1, .output_micros = -1};
    int rc = read_map(cx, y, path, price_fields, sizeof(price_fields) / sizeof(*price_fields), &p);
    if (rc < 0) {
        return rc;
    }
    if (y->kind != Y_MAP || p.model[0] == '\0' || p.input_micros < 0 || p.output_micros < 0) {
        return fail(cx, y, "%s: model, input and output are required", path);
    }
    for (size_t j = 0; j < c->n_prices; j++) {
        if (strcmp(c->prices[j].model, p.model) == 0) {
            return fail(cx, map_get(y, "model"), "%s: prices for '%s' are given twice", path,
                        p.model);
        }
    }
    if (p.cached_input_micros < 0) {
        p.cached_input_micros = p.input_micros;
    }
    c->prices = tg_xrealloc(c->prices, (c->n_prices + 1) * sizeof(*c->prices));
    c->prices[c->n_prices++] = p;
    return 0;
}

typedef int (*item_fn)(struct ctx *cx, struct tg_config *c, const struct ynode *y, size_t i);

static int
read_list(struct ctx *cx, struct tg_config *c, const struct ynode *seq, item_fn fn)
{
    for (size_t i = 0; seq != NULL && seq->kind == Y_SEQ && i < seq->n; i++) {
        int rc = fn(cx, c, seq->kids[i], i);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

/* ---- the config ------------------------------------------------------------------------- */

static void
set_defaults(struct tg_config *c)
{
    c->listen_host = tg_xstrdup("127.0.0.1");
    c->listen_port = 8080;
    c->workers = 0;
    c->data_dir = tg_xstrdup("./tollgate-data");
    c->log_level = tg_xstrdup("info");
    tg_http_limits_default(&c->http);
    c->max_json_depth = 64;
    c->max_response_bytes = 64 * MIB;
    c->max_sse_event_bytes = MIB;
    tg_upstream_timeouts_default(&c->upstream);
    c->disconnect_drain_ms = 30000;
    c->shutdown_grace_ms = 30000;
    c->ledger_batch_rows = 64;
    c->ledger_flush_ms = 200;
    c->smtp.port = 25;
    c->smtp.from = tg_xstrdup("tollgate@localhost");
    c->smtp.timeout_ms = 30000;
    c->notify_interval_ms = 1000;
    c->webhook_timeout_ms = 10000;
    c->default_org_budget_micros = 100000000; /* $100, as the OpenAI platform starts an org */
    c->budget_tz_offset_minutes = 0;
    c->access_log_queue = 8192;
}

/* The environment's providers and routes: openai for every model when OPENAI_API_KEY is set
 * (OPENAI_BASE_URL may move it), else the mock. */
static int
env_providers(struct tg_config *c, char *err, size_t err_cap)
{
    const char *key = getenv("OPENAI_API_KEY");
    struct tg_provider *p = provider_add(c);
    p->timeouts = c->upstream;
    p->mock = (struct tg_mock_settings){0, 0, 16};
    const char *route = NULL;
    if (key != NULL && *key != '\0') {
        p->name = tg_xstrdup("openai");
        p->type = tg_xstrdup("openai");
        const char *base = getenv("OPENAI_BASE_URL");
        p->base_url = tg_xstrdup(base && *base ? base : "https://api.openai.com/v1");
        if (!base_url_ok((char *)p->base_url)) {
            snprintf(err, err_cap, "OPENAI_BASE_URL: expected an http:// or https:// URL");
            return TG_ECONFIG;
        }
        p->api_key = tg_config_resolve_secret("env:OPENAI_API_KEY", "OPENAI_API_KEY", err, err_cap);
        if (p->api_key == NULL) {
            return TG_ECONFIG;
        }
        route = "openai";
    } else {
        p->name = tg_xstrdup("mock");
        p->type = tg_xstrdup("mock");
        c->is_mock_default = true;
        route = "mock";
    }
    p->ops = tg_provider_ops_find(p->type);
    if (p->ops == NULL) {
        snprintf(err, err_cap, "provider type %s is not built in", p->type);
        return TG_ECONFIG;
    }
    /* The mock also gets a named route so /v1/models lists something to try. */
    size_t n = c->is_mock_default ? 2 : 1;
    c->models = tg_xcalloc(n, sizeof(*c->models));
    for (size_t i = 0; i < n; i++) {
        const char *name = i + 1 == n ? "*" : "mock-small";
        c->models[i].name = tg_xstrdup(name);
        c->models[i].provider = tg_xstrdup(route);
        c->models[i].upstream_model = tg_xstrdup(name);
        route_routing_defaults(&c->models[i]);
        route_routing_finish(c, &c->models[i]);
    }
    c->n_models = n;
    return 0;
}

static int
read_file(const char *path, size_t max_bytes, char **out, size_t *len_out, char *err,
          size_t err_cap, const char *what)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, err_cap, "%s: cannot open %s: %s", what, path, strerror(errno));
        return TG_EIO;
    }
    char *buf = tg_xmalloc(max_bytes + 1);
    size_t n = fread(buf, 1, max_bytes + 1, f);
    int rc = 0;
    if (ferror(f)) {
        snprintf(err, err_cap, "%s: cannot read %s: %s", what, path, strerror(errno));
        rc = TG_EIO;
    } else if (n > max_bytes) {
        snprintf(err, err_cap, "%s: %s is larger than %zu bytes", what, path, max_bytes);
        rc = TG_ETOOBIG;
    }
    fclose(f);
    if (rc < 0) {
        explicit_bzero(buf, max_bytes + 1);
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len_out = n;
    return 0;
}

int
tg_config_load(const char *path, struct tg_config **out, char *err, size_t err_cap)
{
    struct ctx cx = {path, err, err_cap};
    struct load l = {0};
    struct ynode *root = NULL;
    char *text = NULL;
    size_t len = 0;
    set_defaults(&l.c);
    l.c.source = tg_xstrdup(path);
    int rc = read_file(path, MAX_CONFIG_BYTES, &text, &len, err, err_cap, "config");
    if (rc < 0) {
        goto out;
    }
    rc = tree_parse(&cx, text, len, &root);
    if (rc < 0) {
        goto out;
    }
    rc = read_map(&cx, root, "", top_fields, sizeof(top_fields) / sizeof(*top_fields), &l);
    if (rc < 0) {
        goto out;
    }
    if (is_null(l.providers)) { /* absent, or present with every entry commented out */
        rc = env_providers(&l.c, err, err_cap);
        if (rc < 0) {
            goto out;
        }
        if (l.models != NULL) {
            rc = fail(&cx, l.models, "models: routes need providers; add a providers: list");
            goto out;
        }
    }
    rc = read_list(&cx, &l.c, l.providers, read_provider);
    if (rc == 0) {
        rc = check_unavailable(&cx, &l.c, l.providers);
    }
    if (rc == 0) {
        rc = read_list(&cx, &l.c, l.models, read_model);
    }
    if (rc == 0) {
        rc = check_fallbacks(&cx, &l.c, l.models);
    }
    if (rc == 0) {
        rc = read_list(&cx, &l.c, l.projects, read_project);
    }
    if (rc == 0) {
        rc = read_list(&cx, &l.c, l.prices, read_price);
    }
    if (rc == 0) {
        rc = read_tiers(&cx, &l.c, l.tiers);
    }
    if (rc == 0 && l.c.metrics_token_ref != NULL) {
        /* Resolved now, like the providers' keys: a token that cannot be read stops the
         * start rather than leaving /metrics open. */
        char msg[400];
        l.c.metrics_token = tg_config_resolve_secret(l.c.metrics_token_ref, "metrics.bearer_token",
                                                     msg, sizeof(msg));
        if (l.c.metrics_token == NULL) {
            rc = fail(&cx, NULL, "%s", msg);
        }
    }
    if (rc == 0 && l.c.n_models == 0) {
        tg_log_warn("%s: no models are configured; every inference request will be 404", path);
    }
out:
    free(text);
    ynode_free(root);
    if (rc < 0) {
        struct tg_config *tmp = tg_xmalloc(sizeof(*tmp));
        *tmp = l.c;
        tg_config_free(tmp);
        return rc;
    }
    *out = tg_xmalloc(sizeof(**out));
    **out = l.c;
    return 0;
}

int
tg_config_from_env(struct tg_config **out, char *err, size_t err_cap)
{
    struct tg_config *c = tg_xcalloc(1, sizeof(*c));
    set_defaults(c);
    c->source = tg_xstrdup("environment");
    const char *listen = getenv("TOLLGATE_LISTEN");
    const char *dir = getenv("TOLLGATE_DATA_DIR");
    int rc = 0;
    if (listen != NULL && *listen != '\0') {
        char msg[200];
        free(c->listen_host);
        c->listen_host = NULL;
        rc = listen_parse(listen, &c->listen_host, &c->listen_port, msg, sizeof(msg));
        if (rc < 0) {
            snprintf(err, err_cap, "TOLLGATE_LISTEN: %s", msg);
            goto out;
        }
    }
    if (dir != NULL && *dir != '\0') {
        free(c->data_dir);
        c->data_dir = tg_xstrdup(dir);
    }
    rc = env_providers(c, err, err_cap);
out:
    if (rc < 0) {
        tg_config_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void
tg_config_free(struct tg_config *c)
{
    if (c == NULL) {
        return;
    }
    free(c->source);
    free(c->listen_host);
    free(c->data_dir);
    free(c->log_level);
    free(c->pepper_ref);
    free(c->smtp.host);
    free(c->smtp.username);
    free(c->smtp.password);
    free(c->smtp.from);
    for (size_t i = 0; i < c->n_providers; i++) {
        provider_deinit(&c->providers[i]);
    }
    free(c->providers);
    for (size_t i = 0; i < c->n_models; i++) {
        free(c->models[i].name);
        free(c->models[i].provider);
        free(c->models[i].upstream_model);
        free(c->models[i].tier);
        route_routing_free(&c->models[i]);
    }
    free(c->models);
    for (size_t i = 0; i < c->n_tiers; i++) {
        free(c->tiers[i].name);
        for (size_t j = 0; j < c->tiers[i].n_models; j++) {
            free(c->tiers[i].models[j]);
        }
        free(c->tiers[i].models);
    }
    free(c->tiers);
    for (size_t i = 0; i < c->n_projects; i++) {
        project_deinit(&c->projects[i]);
    }
    free(c->projects);
    free(c->prices);
    names_free(c->cache_shared_projects, c->n_cache_shared_projects);
    free(c->metrics_token_ref);
    wipe_free(c->metrics_token);
    free(c->access_log_path);
    free(c);
}

bool
tg_config_cache_shared(const struct tg_config *c, const char *project_name)
{
    for (size_t i = 0; c != NULL && project_name != NULL && i < c->n_cache_shared_projects; i++) {
        if (strcmp(c->cache_shared_projects[i], project_name) == 0) {
            return true;
        }
    }
    return false;
}

/* Secrets go into HTTP headers: a control character (a stray CR/LF) would split them. */
static bool
secret_ok(const char *s, const char *what, char *err, size_t err_cap)
{
    if (*s == '\0') {
        snprintf(err, err_cap, "%s: the secret is empty", what);
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            snprintf(err, err_cap, "%s: the secret contains a control character (a line break?)",
                     what);
            return false;
        }
    }
    return true;
}

char *
tg_config_resolve_secret(const char *ref, const char *what, char *err, size_t err_cap)
{
    if (ref == NULL || !ref_ok(ref, what, err, err_cap)) {
        if (ref == NULL) {
            snprintf(err, err_cap, "%s: no secret reference given", what);
        }
        return NULL;
    }
    char *secret = NULL;
    if (strncmp(ref, "env:", 4) == 0) {
        const char *v = getenv(ref + 4);
        if (v == NULL) {
            snprintf(err, err_cap, "%s: environment variable %s is not set", what, ref + 4);
            return NULL;
        }
        secret = tg_xstrdup(v);
    } else {
        size_t len;
        char msg[300];
        if (read_file(ref + 5, MAX_SECRET_BYTES, &secret, &len, msg, sizeof(msg), what) < 0) {
            snprintf(err, err_cap, "%s", msg);
            return NULL;
        }
        struct stat st;
        if (stat(ref + 5, &st) == 0 && (st.st_mode & 077) != 0) {
            /* Works, but other local users can read the key: say so, once, at start. */
            tg_log_warn("%s: %s is readable by group or others; chmod 600 it", what, ref + 5);
        }
        while (len > 0 && (secret[len - 1] == '\n' || secret[len - 1] == '\r')) {
            secret[--len] = '\0';
        }
        if (strlen(secret) != len) {
            explicit_bzero(secret, len);
            free(secret);
            snprintf(err, err_cap, "%s: %s contains a NUL byte", what, ref + 5);
            return NULL;
        }
    }
    if (!secret_ok(secret, what, err, err_cap)) {
        wipe_free(secret);
        return NULL;
    }
    return secret;
}

const struct tg_provider *
tg_config_provider(const struct tg_config *c, const char *name)
{
    for (size_t i = 0; name != NULL && i < c->n_providers; i++) {
        if (strcmp(c->providers[i].name, name) == 0) {
            return &c->providers[i];
        }
    }
    return NULL;
}

const struct tg_model_route *
tg_config_route(const struct tg_config *c, const char *model)
{
    const struct tg_model_route *star = NULL;
    for (size_t i = 0; model != NULL && i < c->n_models; i++) {
        if (strcmp(c->models[i].name, model) == 0) {
            return &c->models[i];
        }
        if (strcmp(c->models[i].name, "*") == 0) {
            star = &c->models[i];
        }
    }
    return star;
}

/* Appends name to out unless it is there already or out is full. */
static size_t
add_unique(const char **out, size_t n, size_t cap, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(out[i], name) == 0) {
            return n;
        }
    }
    if (n < cap) {
        out[n++] = name;
    }
    return n;
}

size_t
tg_config_tier_models(const struct tg_config *c, const char *tier, const char **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_tiers; i++) {
        if (strcmp(c->tiers[i].name, tier) == 0) {
            for (size_t j = 0; j < c->tiers[i].n_models; j++) {
                n = add_unique(out, n, cap, c->tiers[i].models[j]);
            }
        }
    }
    for (size_t i = 0; i < c->n_models; i++) {
        if (c->models[i].tier != NULL && strcmp(c->models[i].tier, tier) == 0) {
            n = add_unique(out, n, cap, c->models[i].name);
        }
    }
    return n;
}
