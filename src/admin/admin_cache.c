/*
 * admin_cache.c: the response cache's admin routes (cache/cache.h).
 *
 * Routes (under /v1/organization/):
 *
 *   GET  projects/{project_id}/cache    owners, members
 *       {"object":"project.cache","project_id":..,"settings":{"enabled","backend","ttl_s"},
 *        "stats":{"backend":"memory","hits","misses","puts","evictions","entries","bytes",
 *                 "max_bytes"}}
 *       The stats are those of the project's backend (memory, fs or db), which every
 *       project using it shares (partitioned by key), so they are not the project's alone.
 *   POST cache/invalidate               owners; readers for a project they are a member of
 *       {"project_id"?: id or name, "model"?: str, "older_than_s"?: int > 0, "all"?: bool}
 *       removes the entries matching every member given ("all": true, owners only, removes
 *       every entry) from every backend; at least one is required. Answers
 * {"object":"cache.invalidation", "removed":N, "project_id", "model", "older_than_s", "all"} and
 * writes one audit entry "cache.invalidated" with that object as its after.
 *
 * The memory and fs caches are not in the store: an invalidation that is rolled back (its
 * audit entry could not be written) still removed their entries, which only costs a few
 * upstream calls later. The db cache's removal rolls back with it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "cache/cache.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"

static const char *
backend_name(enum tg_cache_backend b)
{
    return b == TG_CACHE_FS ? "fs" : b == TG_CACHE_DB ? "db" : "memory";
}

/* The process-wide cache of backend b (NULL when it cannot be opened). Admin handlers run off
 * the loop threads, so opening the fs cache or reading the database here is fine. */
static struct tg_cache *
backend_cache(enum tg_cache_backend b)
{
    const struct tg_state_env *env = tg_state_env_get();
    return tg_cache_shared(b, env->config != NULL ? env->config->data_dir : NULL, env->store);
}

static void
append_stats(struct tg_buf *b, enum tg_cache_backend backend)
{
    struct tg_cache_stats st;
    memset(&st, 0, sizeof(st));
    struct tg_cache *c = backend_cache(backend);
    if (c != NULL) {
        tg_cache_stats(c, &st);
    }
    tg_buf_appendf(b,
                   "{\"backend\":\"%s\",\"hits\":%llu,\"misses\":%llu,\"puts\":%llu,"
                   "\"evictions\":%llu,\"entries\":%zu,\"bytes\":%zu,\"max_bytes\":%zu}",
                   backend_name(backend), (unsigned long long)st.hits,
                   (unsigned long long)st.misses, (unsigned long long)st.puts,
                   (unsigned long long)st.evictions, st.n_entries, st.bytes, st.max_bytes);
}

static void
get_project_cache(struct admin_job *j)
{
    struct tg_cache_settings cs;
    tg_cache_settings_of_project(j->project->settings, &cs);
    tg_buf_append_str(&j->out, "{\"object\":\"project.cache\",\"project_id\":");
    tg_json_quote(&j->out, j->project->id);
    tg_buf_appendf(&j->out, ",\"settings\":{\"enabled\":%s,\"backend\":\"%s\",\"ttl_s\":%lld}",
                   cs.enabled ? "true" : "false", backend_name(cs.backend), (long long)cs.ttl_s);
    tg_buf_append_str(&j->out, ",\"stats\":");
    append_stats(&j->out, cs.backend);
    tg_buf_append_str(&j->out, "}");
}

static int
found_doc(const struct tg_doc *d, void *arg)
{
    (void)d;
    *(bool *)arg = true;
    return 0;
}

/* An owner may invalidate anything; a reader only within a project they are a member of.
 * False after answering 403 (or 500). */
static bool
may_invalidate(struct admin_job *j, const struct tg_project *p, bool all)
{
    if (j->is_owner) {
        return true;
    }
    if (p == NULL || all) {
        admin_error(j, 403,
                    "Only organization owners may invalidate the cache across projects: name a "
                    "project_id you are a member of.",
                    NULL, "insufficient_role");
        return false;
    }
    bool is_member = false;
    int rc = TG_ENOTFOUND;
    if (j->user_id != NULL) {
        char id[160];
        snprintf(id, sizeof(id), "pm_%s_%s", p->id, j->user_id);
        rc = j->store->ops->doc_get(j->store, "member", id, found_doc, &is_member);
    }
    if (rc < 0 && rc != TG_ENOTFOUND) {
        admin_store_error(j, rc, "project membership");
        return false;
    }
    if (!is_member) {
        admin_error(j, 403,
                    "You are not a member of this project: ask an organization owner to add "
                    "you to it.",
                    NULL, "not_a_project_member");
        return false;
    }
    return true;
}

/* Reads "older_than_s" (absent: 0) and "all" (absent: false); false after answering 400. */
static bool
read_age_and_all(struct admin_job *j, int64_t *older_than_s, bool *all)
{
    json_t *age = json_object_get(j->body, "older_than_s");
    json_t *a = json_object_get(j->body, "all");
    *older_than_s = 0;
    *all = false;
    if (age != NULL && !json_is_null(age)) {
        /* A day count in seconds past a century is a typo, not a policy. */
        if (!json_is_integer(age) || json_integer_value(age) <= 0 ||
            json_integer_value(age) > 3153600000LL) {
            admin_error(j, 400, "'older_than_s' must be a positive whole number of seconds.",
                        "older_than_s", "invalid_value");
            return false;
        }
        *older_than_s = json_integer_value(age);
    }
    if (a != NULL && !json_is_null(a)) {
        if (!json_is_boolean(a)) {
            admin_error(j, 400, "'all' must be true or false.", "all", "invalid_type");
            return false;
        }
        *all = json_is_true(a);
    }
    return true;
}

static void
invalidate_cache(struct admin_job *j)
{
    static const char *const allowed[] = {"project_id", "model", "older_than_s", "all", NULL};
    const char *project_ref = NULL;
    const char *model = NULL;
    int64_t older_than_s = 0;
    bool all = false;
    if (j->body == NULL) {
        admin_error(j, 400, "The body must be a JSON object.", NULL, "invalid_body");
        return;
    }
    if (!admin_body_only(j, allowed) ||
        !admin_body_string(j, "project_id", false, 128, &project_ref) ||
        !admin_body_string(j, "model", false, 128, &model) ||
        !read_age_and_all(j, &older_than_s, &all)) {
        return;
    }
    if (!all && project_ref == NULL && model == NULL && older_than_s == 0) {
        admin_error(j, 400,
                    "Say what to invalidate: project_id, model, older_than_s, or all: true.", NULL,
                    "missing_filter");
        return;
    }
    const struct tg_project *p = NULL;
    if (project_ref != NULL) {
        p = tg_state_project(j->state, project_ref);
        if (p == NULL) {
            admin_error(j, 404, "No such project.", "project_id", "project_not_found");
            return;
        }
    }
    if (!may_invalidate(j, p, all)) {
        return;
    }
    struct tg_cache_filter f = {
        .all = all,
        .project_id = p != NULL ? p->id : NULL,
        .model = model,
        .older_than_ms = older_than_s * 1000,
    };
    /* Every backend: a project may have switched backends, leaving entries in another. */
    size_t removed = 0;
    int rc = 0;
    static const enum tg_cache_backend backends[] = {TG_CACHE_MEMORY, TG_CACHE_FS, TG_CACHE_DB};
    for (size_t i = 0; rc == 0 && i < sizeof(backends) / sizeof(backends[0]); i++) {
        struct tg_cache *c = backend_cache(backends[i]);
        size_t n = 0;
        rc = c != NULL ? tg_cache_invalidate(c, &f, &n) : 0;
        removed += n;
    }
    if (rc < 0) {
        admin_store_error(j, rc, "cache");
        return;
    }
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_buf_appendf(&b,
                   "{\"object\":\"cache.invalidation\",\"removed\":%zu,\"project_id\":", removed);
    if (p != NULL) {
        tg_json_quote(&b, p->id);
    } else {
        tg_buf_append_str(&b, "null");
    }
    tg_buf_append_str(&b, ",\"model\":");
    if (model != NULL) {
        tg_json_quote(&b, model);
    } else {
        tg_buf_append_str(&b, "null");
    }
    if (older_than_s > 0) {
        tg_buf_appendf(&b, ",\"older_than_s\":%lld", (long long)older_than_s);
    } else {
        tg_buf_append_str(&b, ",\"older_than_s\":null");
    }
    tg_buf_appendf(&b, ",\"all\":%s}", all ? "true" : "false");
    char *after = tg_buf_steal(&b, NULL);
    rc = admin_audit(j, "cache.invalidated", p != NULL ? p->id : NULL, p != NULL ? p->id : "cache",
                     NULL, after);
    if (rc < 0) {
        admin_store_error(j, rc, "audit entry");
    } else {
        tg_buf_append_str(&j->out, after);
        tg_log_info("admin: cache invalidated by %s (%zu entries)", j->key->id, removed);
    }
    free(after);
}

const struct admin_route tg_admin_routes_cache[] = {
    {TG_HTTP_GET, "projects/{project_id}/cache", ADMIN_PROJECT,
     "A project's cache settings and the cache's statistics", get_project_cache},
    {TG_HTTP_POST, "cache/invalidate", ADMIN_ORG_READ,
     "Remove cached answers by project, model, age, or all", invalidate_cache},
    {0, NULL, 0, NULL, NULL},
};
