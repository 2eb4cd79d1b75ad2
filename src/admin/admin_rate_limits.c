/*
 * admin_rate_limits.c: per-model rate limits of the organization, a project (OpenAI's
 * project.rate_limit) and a project's key.
 *
 * Routes (under /v1/organization/):
 *
 *   GET  projects/{project_id}/rate_limits                                owners, members
 *   GET  rate_limits                                                      any admin key
 *   GET  projects/{project_id}/api_keys/{key_id}/rate_limits              owners, members
 *       OpenAI's list shape: first the all-models entry when it holds a limit, then one item
 *       per model the level may use (a project or key: the project's models setting, else the
 *       config's list for a project of its name, else every routed model but "*"; the
 *       organization: every routed model but "*"), then any other model that still has limits
 *       stored (so they can be seen and cleared):
 *         {"object":"project.rate_limit","id":"rl-<model>","model":"<model>",
 *          "max_requests_per_1_minute":N|null,"max_tokens_per_1_minute":N|null,
 *          "max_requests_per_1_day":N|null,"max_tokens_per_1_day":N|null}
 *       object is "organization.rate_limit" and "project.api_key.rate_limit" at the other two
 *       levels. null means no limit at this level. The all-models entry limits every request
 *       of the level whatever its model (its own counters): id "rl-all-models", model "*".
 *   POST projects/{project_id}/rate_limits/{rate_limit_id}
 *   POST rate_limits/{rate_limit_id}
 *   POST projects/{project_id}/api_keys/{key_id}/rate_limits/{rate_limit_id}
 *       A partial body of those four members, each a non-negative integer (at most 10^12, the
 *       limit policy/limits.h accepts) or null to remove it. Owners only (billing).
 *       rl-all-models is always accepted.
 *
 * Storage: the level's settings (admin_level_*: a project's settings column, the documents
 * "org_settings" and "key_settings") hold
 *   "rate_limits": {"<model>" | "*": {"max_requests_per_1_minute": N, ...}}
 * with only the members that are set; a model whose members are all removed leaves the map,
 * and an empty map leaves the settings, so equal limits always have equal settings texts (the
 * config history compares them). Enforcement reads them from the state snapshot; export,
 * apply, history and rollback carry a project's with the rest of its settings.
 *
 * Each change is one transaction (admin.c) with one audit entry, "rate_limit.updated" (before
 * and after objects, so the entry's changes_requested lists the members that changed) or
 * "rate_limit.deleted" when a model's last limit is removed, whose target is the rate limit's
 * id (prefixed by "<key_id>/" at key level); at project level also a numbered config version.
 * A POST that changes nothing writes neither.
 */
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

#define RL_ID_PREFIX "rl-"
#define RL_ALL_ID "rl-all-models"
#define RL_ALL_MODEL "*"
#define RL_VALUE_MAX 1000000000000LL /* 10^12, as policy/limits.h */

/* The members of a rate limit, in the order the answers show them. */
static const char *const limit_fields[] = {
    "max_requests_per_1_minute",
    "max_tokens_per_1_minute",
    "max_requests_per_1_day",
    "max_tokens_per_1_day",
    NULL,
};

static const char *
object_name(enum tg_scope scope)
{
    switch (scope) {
    case TG_SCOPE_ORG:
        return "organization.rate_limit";
    case TG_SCOPE_KEY:
        return "project.api_key.rate_limit";
    default:
        return "project.rate_limit";
    }
}

/* The rate limit's id of model ("rl-all-models" for "*"). */
static void
limit_id(const char *model, char *out, size_t cap)
{
    if (strcmp(model, RL_ALL_MODEL) == 0) {
        snprintf(out, cap, "%s", RL_ALL_ID);
    } else {
        snprintf(out, cap, RL_ID_PREFIX "%s", model);
    }
}

/* settings.rate_limits, borrowed from root; NULL when absent or not an object. */
static json_t *
stored_limits(json_t *root)
{
    json_t *rl = json_object_get(root, "rate_limits");
    return json_is_object(rl) ? rl : NULL;
}

static void
add_model(json_t *models, const char *name)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, RL_ALL_MODEL) == 0) {
        return;
    }
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m)
    {
        if (strcmp(json_string_value(m), name) == 0) {
            return;
        }
    }
    json_array_append_new(models, json_string(name));
}

/*
 * The models the level has a rate limit entry for, in list order: "*" when it holds limits;
 * those the level may use (for a project or key, as tg_project_allows decides: the project's
 * settings' list, else the config's, else every route but "*"; for the organization every
 * route but "*"); then models that still have stored limits. The caller owns the array.
 */
static json_t *
limit_models(struct admin_job *j, enum tg_scope scope, json_t *root)
{
    json_t *models = json_array();
    json_t *rl = stored_limits(root);
    if (json_object_get(rl, RL_ALL_MODEL) != NULL) {
        json_array_append_new(models, json_string(RL_ALL_MODEL));
    }
    const struct tg_config *cfg = j->state->config;
    const struct tg_project *p = scope == TG_SCOPE_ORG ? NULL : j->project;
    if (p != NULL && p->n_models > 0) {
        for (size_t i = 0; i < p->n_models; i++) {
            add_model(models, p->models[i]);
        }
    } else if (p != NULL && p->conf != NULL && p->conf->n_models > 0) {
        for (size_t i = 0; i < p->conf->n_models; i++) {
            add_model(models, p->conf->models[i]);
        }
    } else {
        for (size_t i = 0; i < cfg->n_models; i++) {
            add_model(models, cfg->models[i].name);
        }
    }
    const char *name;
    json_t *v;
    json_object_foreach(rl, name, v)
    {
        add_model(models, name);
    }
    return models;
}

/* Appends the rate limit object of model, limits being its stored members or NULL. */
static void
append_limit(struct tg_buf *b, enum tg_scope scope, const char *model, const json_t *limits)
{
    char id[160];
    limit_id(model, id, sizeof(id));
    tg_buf_appendf(b, "{\"object\":\"%s\",\"id\":", object_name(scope));
    tg_json_quote(b, id);
    tg_buf_append_str(b, ",\"model\":");
    tg_json_quote(b, model);
    for (size_t i = 0; limit_fields[i] != NULL; i++) {
        json_t *v = json_object_get(limits, limit_fields[i]);
        tg_buf_appendf(b, ",\"%s\":", limit_fields[i]);
        if (json_is_integer(v)) {
            tg_buf_appendf(b, "%lld", (long long)json_integer_value(v));
        } else {
            tg_buf_append_str(b, "null");
        }
    }
    tg_buf_append_str(b, "}");
}

static char *
limit_json(enum tg_scope scope, const char *model, const json_t *limits)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    append_limit(&b, scope, model, limits);
    return tg_buf_steal(&b, NULL);
}

static void
list_rate_limits(struct admin_job *j, enum tg_scope scope)
{
    struct admin_level l;
    struct admin_page pg;
    if (!admin_level_load(j, scope, &l) || !admin_page_begin(&pg, j)) {
        admin_level_deinit(&l);
        return;
    }
    json_t *root = admin_settings_root(l.settings);
    json_t *models = limit_models(j, scope, root);
    json_t *rl = stored_limits(root);
    struct tg_buf item;
    tg_buf_init(&item, 0);
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m)
    {
        const char *model = json_string_value(m);
        char id[160];
        limit_id(model, id, sizeof(id));
        tg_buf_reset(&item);
        append_limit(&item, scope, model, json_object_get(rl, model));
        if (!admin_page_add(&pg, id, item.data)) {
            break;
        }
    }
    admin_page_end(&pg);
    tg_buf_deinit(&item);
    json_decref(models);
    json_decref(root);
    admin_level_deinit(&l);
}

/* Checks the body: only the four members, each null or an integer 0..RL_VALUE_MAX. */
static bool
read_body(struct admin_job *j)
{
    if (!admin_body_only(j, limit_fields)) {
        return false;
    }
    for (size_t i = 0; limit_fields[i] != NULL; i++) {
        json_t *v = j->body != NULL ? json_object_get(j->body, limit_fields[i]) : NULL;
        if (v == NULL || json_is_null(v)) {
            continue;
        }
        char msg[200];
        if (!json_is_integer(v)) {
            snprintf(msg, sizeof(msg),
                     "Invalid type for '%s': expected a non-negative integer, or null for no "
                     "limit.",
                     limit_fields[i]);
            admin_error(j, 400, msg, limit_fields[i], "invalid_type");
            return false;
        }
        if (json_integer_value(v) < 0 || json_integer_value(v) > RL_VALUE_MAX) {
            snprintf(msg, sizeof(msg), "Invalid value for '%s': expected 0 to %lld.",
                     limit_fields[i], RL_VALUE_MAX);
            admin_error(j, 400, msg, limit_fields[i], "invalid_value");
            return false;
        }
    }
    return true;
}

/* The model the path's rate_limit_id names, when the level has that entry ("*" for
 * rl-all-models, always); else NULL after answering 404. */
static const char *
find_model(struct admin_job *j, json_t *models)
{
    const char *id = admin_param(j, "rate_limit_id");
    size_t n = strlen(RL_ID_PREFIX);
    if (id != NULL && strcmp(id, RL_ALL_ID) == 0) {
        return RL_ALL_MODEL;
    }
    if (id != NULL && strncmp(id, RL_ID_PREFIX, n) == 0) {
        size_t i;
        json_t *m;
        json_array_foreach(models, i, m)
        {
            if (strcmp(json_string_value(m), id + n) == 0) {
                return json_string_value(m);
            }
        }
    }
    admin_error(j, 404,
                "No such rate limit here (ids are rl-<model>, for the models this level may use, "
                "and rl-all-models).",
                "rate_limit_id", "not_found");
    return NULL;
}

/* The model's limits after the body's changes (members set, nulls removed). Caller owns it. */
static json_t *
changed_limits(const struct admin_job *j, const json_t *old)
{
    json_t *now = old != NULL ? json_deep_copy(old) : json_object();
    if (!json_is_object(now)) {
        json_decref(now);
        now = json_object();
    }
    for (size_t i = 0; limit_fields[i] != NULL; i++) {
        json_t *v = j->body != NULL ? json_object_get(j->body, limit_fields[i]) : NULL;
        if (v == NULL) {
            continue;
        }
        if (json_is_null(v)) {
            json_object_del(now, limit_fields[i]);
        } else {
            json_object_set(now, limit_fields[i], v);
        }
    }
    return now;
}

/* The settings text with model's limits replaced (removed when empty), keys sorted. */
static char *
settings_with_limits(json_t *root, const char *model, json_t *limits)
{
    json_t *rl = stored_limits(root);
    if (rl == NULL) {
        rl = json_object();
        json_object_set_new(root, "rate_limits", rl);
    }
    if (json_object_size(limits) > 0) {
        json_object_set(rl, model, limits);
    } else {
        json_object_del(rl, model);
    }
    if (json_object_size(rl) == 0) {
        json_object_del(root, "rate_limits");
    }
    return admin_settings_text(root);
}

static void
modify_rate_limit(struct admin_job *j, enum tg_scope scope)
{
    struct admin_level l;
    memset(&l, 0, sizeof(l));
    json_t *root = NULL;
    json_t *models = NULL;
    json_t *limits = NULL;
    char *settings = NULL;
    char *before = NULL;
    char *after = NULL;
    if (!read_body(j) || !admin_level_load(j, scope, &l) || !admin_level_writable(j, &l)) {
        goto out;
    }
    root = admin_settings_root(l.settings);
    models = limit_models(j, scope, root);
    const char *model = find_model(j, models);
    if (model == NULL) {
        goto out;
    }
    json_t *old = json_object_get(stored_limits(root), model);
    old = json_is_object(old) ? old : NULL;
    before = limit_json(scope, model, old);
    limits = changed_limits(j, old);
    after = limit_json(scope, model, limits);
    if (strcmp(before, after) == 0) {
        tg_buf_append_str(&j->out, after); /* nothing to change: no version, no entry */
        goto out;
    }
    bool is_deleted = json_object_size(limits) == 0;
    settings = settings_with_limits(root, model, limits);
    if (!admin_level_check(j, settings)) {
        goto out;
    }
    char id[160];
    limit_id(model, id, sizeof(id));
    char target[256];
    snprintf(target, sizeof(target), "%s%s%s", scope == TG_SCOPE_KEY ? l.id : "",
             scope == TG_SCOPE_KEY ? "/" : "", id);
    const char *type = is_deleted ? "rate_limit.deleted" : "rate_limit.updated";
    int rc = admin_level_save(j, &l, settings, type, target, before, is_deleted ? NULL : after);
    if (rc < 0) {
        admin_store_error(j, rc, "rate limit");
        goto out;
    }
    tg_buf_append_str(&j->out, after);
    j->reload = true; /* enforcement reads the limits from the snapshot */
    tg_log_info("admin: rate limit %s of %s %s %s by %s", id, tg_scope_name(scope), l.id,
                is_deleted ? "removed" : "updated", j->key->id);
out:
    json_decref(limits);
    json_decref(models);
    json_decref(root);
    free(settings);
    free(before);
    free(after);
    admin_level_deinit(&l);
}

static void
list_project_limits(struct admin_job *j)
{
    list_rate_limits(j, TG_SCOPE_PROJECT);
}

static void
list_org_limits(struct admin_job *j)
{
    list_rate_limits(j, TG_SCOPE_ORG);
}

static void
list_key_limits(struct admin_job *j)
{
    list_rate_limits(j, TG_SCOPE_KEY);
}

static void
modify_project_limit(struct admin_job *j)
{
    modify_rate_limit(j, TG_SCOPE_PROJECT);
}

static void
modify_org_limit(struct admin_job *j)
{
    modify_rate_limit(j, TG_SCOPE_ORG);
}

static void
modify_key_limit(struct admin_job *j)
{
    modify_rate_limit(j, TG_SCOPE_KEY);
}

const struct admin_route tg_admin_routes_rate_limits[] = {
    {TG_HTTP_GET, "projects/{project_id}/rate_limits", ADMIN_PROJECT,
     "List a project's rate limits, one per model it may use", list_project_limits},
    {TG_HTTP_POST, "projects/{project_id}/rate_limits/{rate_limit_id}", ADMIN_OWNER,
     "Change a project's rate limits for one model, or all (partial body; null removes a "
     "limit)",
     modify_project_limit},
    {TG_HTTP_GET, "rate_limits", ADMIN_ORG_READ,
     "List the organization's rate limits, one per routed model", list_org_limits},
    {TG_HTTP_POST, "rate_limits/{rate_limit_id}", ADMIN_OWNER,
     "Change the organization's rate limits for one model, or all (partial body)",
     modify_org_limit},
    {TG_HTTP_GET, "projects/{project_id}/api_keys/{key_id}/rate_limits", ADMIN_PROJECT,
     "List a project API key's rate limits, one per model its project may use", list_key_limits},
    {TG_HTTP_POST, "projects/{project_id}/api_keys/{key_id}/rate_limits/{rate_limit_id}",
     ADMIN_OWNER, "Change a project API key's rate limits for one model, or all (partial body)",
     modify_key_limit},
    {0, NULL, 0, NULL, NULL},
};
