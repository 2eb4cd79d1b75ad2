/*
 * cache.c: what every cache backend shares: the dispatchers, the cache key, the per-project
 * settings and the per-request Cache-Control rules.
 *
 * The key must be equal for requests that produce the same output and differ otherwise, so it
 * hashes a canonical form of the body (sorted keys, compact, the transport-only members
 * removed) rather than the bytes the client sent. The partition comes first so two projects
 * never share an entry unless the operator gives them the same partition.
 */
#include "cache/cache.h"
#include "cache/cache_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/crypto.h"
#include "core/err.h"

void
tg_cache_entry_deinit(struct tg_cache_entry *e)
{
    free(e->body);
    e->body = NULL;
    e->body_len = 0;
}

int
tg_cache_get(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES],
             struct tg_cache_entry *out)
{
    return c->ops->get(c, key, out);
}

int
tg_cache_put(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES],
             const struct tg_cache_entry *e, int64_t ttl_ms)
{
    return c->ops->put(c, key, e, ttl_ms);
}

int
tg_cache_invalidate(struct tg_cache *c, const struct tg_cache_filter *f, size_t *n_removed)
{
    return c->ops->invalidate(c, f, n_removed);
}

void
tg_cache_stats(struct tg_cache *c, struct tg_cache_stats *out)
{
    c->ops->stats(c, out);
}

void
tg_cache_free(struct tg_cache *c)
{
    if (c) {
        c->ops->free(c);
    }
}

/* Members that change how the answer travels, or who asked, but not what it says. */
static const char *const transport_only[] = {"stream", "stream_options", "user"};

int
tg_cache_key(const char *partition, const char *endpoint, const char *body, size_t len,
             unsigned char out[TG_CACHE_KEY_BYTES])
{
    json_error_t jerr;
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v || !json_is_object(v)) {
        json_decref(v);
        return TG_EPARSE;
    }
    for (size_t i = 0; i < sizeof(transport_only) / sizeof(transport_only[0]); i++) {
        json_object_del(v, transport_only[i]);
    }
    char *canon = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(v);
    if (!canon) {
        return TG_EPARSE;
    }
    size_t plen = strlen(partition), elen = strlen(endpoint), clen = strlen(canon);
    size_t n = plen + 1 + elen + 1 + clen;
    char *msg = malloc(n);
    if (!msg) {
        free(canon);
        return TG_ENOMEM;
    }
    /* NUL separators: no partition/endpoint pair can be spelled as another. */
    memcpy(msg, partition, plen + 1);
    memcpy(msg + plen + 1, endpoint, elen + 1);
    memcpy(msg + plen + 1 + elen + 1, canon, clen);
    tg_sha256(msg, n, out);
    free(msg);
    free(canon);
    return 0;
}

int
tg_cache_settings_parse(const json_t *v, struct tg_cache_settings *out, char *err, size_t err_cap)
{
    out->enabled = false;
    out->backend = TG_CACHE_MEMORY;
    out->ttl_s = 3600;
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_object(v)) {
        snprintf(err, err_cap, "cache settings must be an object");
        return TG_EINVAL;
    }
    const char *name;
    json_t *m;
    json_object_foreach((json_t *)v, name, m)
    {
        if (strcmp(name, "enabled") == 0) {
            if (!json_is_boolean(m)) {
                snprintf(err, err_cap, "cache.enabled must be a boolean");
                return TG_EINVAL;
            }
            out->enabled = json_is_true(m);
        } else if (strcmp(name, "backend") == 0) {
            const char *s = json_string_value(m);
            if (s && strcmp(s, "memory") == 0) {
                out->backend = TG_CACHE_MEMORY;
            } else if (s && strcmp(s, "fs") == 0) {
                out->backend = TG_CACHE_FS;
            } else if (s && strcmp(s, "db") == 0) {
                out->backend = TG_CACHE_DB;
            } else {
                snprintf(err, err_cap, "cache.backend must be \"memory\", \"fs\" or \"db\"");
                return TG_EINVAL;
            }
        } else if (strcmp(name, "ttl_s") == 0) {
            if (!json_is_integer(m) || json_integer_value(m) <= 0 ||
                json_integer_value(m) > 365LL * 86400) {
                snprintf(err, err_cap, "cache.ttl_s must be an integer from 1 to 31536000");
                return TG_EINVAL;
            }
            out->ttl_s = json_integer_value(m);
        } else {
            snprintf(err, err_cap, "unknown cache setting \"%s\"", name);
            return TG_EINVAL;
        }
    }
    return 0;
}

/* True when the comma-separated directive list holds name (case-insensitive); with val, also
 * reads "name=N" into *val (-1 when absent or not a number). */
static bool
has_directive(const char *list, const char *name, int64_t *val)
{
    size_t nlen = strlen(name);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        const char *start = p;
        while (*p && *p != ',') {
            p++;
        }
        size_t len = (size_t)(p - start);
        while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t')) {
            len--;
        }
        if (len >= nlen && strncasecmp(start, name, nlen) == 0) {
            if (len == nlen && !val) {
                return true;
            }
            if (val && len > nlen + 1 && start[nlen] == '=') {
                char num[24];
                size_t dl = len - nlen - 1;
                if (dl >= sizeof(num)) {
                    return false;
                }
                memcpy(num, start + nlen + 1, dl);
                num[dl] = '\0';
                char *end;
                long long n = strtoll(num, &end, 10);
                *val = (*end == '\0' && n >= 0) ? (int64_t)n : -1;
                return *val >= 0;
            }
        }
    }
    return false;
}

void
tg_cache_control_parse(const char *cache_control, const char *x_tollgate_cache,
                       struct tg_cache_control *out)
{
    out->lookup = true;
    out->store = true;
    out->max_age_ms = -1;
    if (cache_control) {
        if (has_directive(cache_control, "no-cache", NULL)) {
            out->lookup = false;
        }
        if (has_directive(cache_control, "no-store", NULL)) {
            out->lookup = false;
            out->store = false;
        }
        int64_t age = -1;
        if (has_directive(cache_control, "max-age", &age)) {
            out->max_age_ms = age > INT64_MAX / 1000 ? INT64_MAX : age * 1000;
        }
    }
    if (x_tollgate_cache) {
        if (strcasecmp(x_tollgate_cache, "bypass") == 0) {
            out->lookup = false;
            out->store = false;
        } else if (strcasecmp(x_tollgate_cache, "refresh") == 0) {
            /* Ask upstream again and replace the entry with the fresh answer. */
            out->lookup = false;
        }
    }
}

int
tg_cache_entry_copy(struct tg_cache_entry *dst, const struct tg_cache_entry *src)
{
    *dst = *src;
    /* Body sizes come from upstream answers: fail cleanly rather than abort. */
    dst->body = malloc(src->body_len + 1);
    if (!dst->body) {
        dst->body_len = 0;
        return TG_ENOMEM;
    }
    if (src->body_len) {
        memcpy(dst->body, src->body, src->body_len);
    }
    dst->body[src->body_len] = '\0';
    return 0;
}

bool
tg_cache_filter_match(const struct tg_cache_filter *f, const char *project_id, const char *model,
                      int64_t created_ms, int64_t now_ms)
{
    if (f->all) {
        return true;
    }
    /* An empty filter is a mistake, not a request to wipe the cache: "all" must be said. */
    if (!f->project_id && !f->model && f->older_than_ms <= 0) {
        return false;
    }
    if (f->project_id && strcmp(f->project_id, project_id) != 0) {
        return false;
    }
    if (f->model && strcmp(f->model, model) != 0) {
        return false;
    }
    if (f->older_than_ms > 0 && created_ms > now_ms - f->older_than_ms) {
        return false;
    }
    return true;
}
