/*
 * admin_rate_limits.c: a project's per-model rate limits (OpenAI's project.rate_limit).
 *
 * Routes (under /v1/organization/):
 *
 *   GET  projects/{project_id}/rate_limits
 *       OpenAI's list shape, one item per model the project may use (its models setting, else
 *       the config's list for a project of its name, else every routed model but "*"), then
 *       any other model that still has limits stored (so they can be seen and cleared):
 *         {"object":"project.rate_limit","id":"rl-<model>","model":"<model>",
 *          "max_requests_per_1_minute":N|null,"max_tokens_per_1_minute":N|null,
 *          "max_requests_per_1_day":N|null,"max_tokens_per_1_day":N|null}
 *       null means no limit at this level.
 *   POST projects/{project_id}/rate_limits/{rate_limit_id}
 *       A partial body of those four members, each a non-negative integer (at most 2^53 - 1,
 *       so every JSON reader holds it exactly) or null to remove it. Owners only (billing).
 *
 * Storage: the project's settings (store.h tg_project_rec.settings) hold
 *   "rate_limits": {"<model>": {"max_requests_per_1_minute": N, ...}}
 * with only the members that are set; a model whose members are all removed leaves the map,
 * and an empty map leaves the settings, so equal limits always have equal settings texts (the
 * config history compares them). Enforcement (issue 4) reads them from the state snapshot;
 * export, apply, history and rollback carry them with the rest of the settings.
 *
 * Each change is one transaction (admin.c) with a numbered config version and one audit entry:
 * "rate_limit.updated" (before and after objects, so the entry's changes_requested lists the
 * members that changed) or "rate_limit.deleted" when a model's last limit is removed. A POST
 * that changes nothing writes neither.
 */
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

#define RL_ID_PREFIX "rl-"
#define RL_VALUE_MAX 9007199254740991LL /* 2^53 - 1 */

/* The members of a rate limit, in the order the answers show them. */
static const char *const limit_fields[] = {
    "max_requests_per_1_minute",
    "max_tokens_per_1_minute",
    "max_requests_per_1_day",
    "max_tokens_per_1_day",
    NULL,
};

/* A stored project, copied out of the listing callback (which must not call the store). */
struct project_copy {
    const char *want_id;
    bool is_found;
    char *id;
    char *org_id;
    char *name;
    char *environment;
    char *settings;
    int64_t created_ms;
    int64_t archived_ms;
};

static int
copy_project(const struct tg_project_rec *p, void *arg)
{
    struct project_copy *c = arg;
    if (c->is_found || strcmp(p->id, c->want_id) != 0) {
        return 0;
    }
    c->is_found = true;
    c->id = tg_xstrdup(p->id);
    c->org_id = tg_xstrdup(p->org_id);
    c->name = tg_xstrdup(p->name);
    c->environment = tg_xstrdup(p->environment != NULL ? p->environment : "");
    c->settings = tg_xstrdup(p->settings != NULL && p->settings[0] != '\0' ? p->settings : "{}");
    c->created_ms = p->created_ms;
    c->archived_ms = p->archived_ms;
    return 0;
}

static void
project_copy_deinit(struct project_copy *c)
{
    free(c->id);
    free(c->org_id);
    free(c->name);
    free(c->environment);
    free(c->settings);
}

/* Reads the project of the path from the store (the snapshot may be older than this
 * transaction); answers 404 when it is gone. */
static bool
load_project(struct admin_job *j, struct project_copy *c)
{
    c->want_id = j->project->id;
    int rc = j->store->ops->projects_list(j->store, j->state->org_id, copy_project, c);
    if (rc < 0 || !c->is_found) {
        admin_store_error(j, rc < 0 ? rc : TG_ENOTFOUND, "project");
        return false;
    }
    return true;
}

/* The settings as a JSON object (a malformed text reads as {}). The caller owns it. */
static json_t *
settings_root(const char *settings)
{
    json_t *root = json_loads(settings, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = json_object();
    }
    return root;
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
    if (name == NULL || name[0] == '\0' || strcmp(name, "*") == 0) {
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
 * The models the project has a rate limit entry for, in list order: those it may use (as
 * tg_project_allows decides: the settings' list, else the config's, else every route but "*"),
 * then models that still have stored limits. The caller owns the array.
 */
static json_t *
limit_models(struct admin_job *j, json_t *root)
{
    json_t *models = json_array();
    json_t *set = json_object_get(root, "models");
    const struct tg_project_conf *conf = j->project->conf;
    const struct tg_config *cfg = j->state->config;
    if (json_is_array(set) && json_array_size(set) > 0) {
        size_t i;
        json_t *m;
        json_array_foreach(set, i, m)
        {
            add_model(models, json_string_value(m));
        }
    } else if (conf != NULL && conf->n_models > 0) {
        for (size_t i = 0; i < conf->n_models; i++) {
            add_model(models, conf->models[i]);
        }
    } else {
        for (size_t i = 0; i < cfg->n_models; i++) {
            add_model(models, cfg->models[i].name);
        }
    }
    json_t *rl = stored_limits(root);
    const char *name;
    json_t *v;
    json_object_foreach(rl, name, v)
    {
        add_model(models, name);
    }
    return models;
}

/* Appends the project.rate_limit object of model, limits being its stored members or NULL. */
static void
append_limit(struct tg_buf *b, const char *model, const json_t *limits)
{
    tg_buf_append_str(b, "{\"object\":\"project.rate_limit\",\"id\":");
    char id[160];
    snprintf(id, sizeof(id), RL_ID_PREFIX "%s", model);
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
limit_json(const char *model, const json_t *limits)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    append_limit(&b, model, limits);
    return tg_buf_steal(&b, NULL);
}

static void
list_rate_limits(struct admin_job *j)
{
    struct project_copy c = {0};
    struct admin_page pg;
    if (!load_project(j, &c) || !admin_page_begin(&pg, j)) {
        project_copy_deinit(&c);
        return;
    }
    json_t *root = settings_root(c.settings);
    json_t *models = limit_models(j, root);
    json_t *rl = stored_limits(root);
    struct tg_buf item;
    tg_buf_init(&item, 0);
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m)
    {
        const char *model = json_string_value(m);
        char id[160];
        snprintf(id, sizeof(id), RL_ID_PREFIX "%s", model);
        tg_buf_reset(&item);
        append_limit(&item, model, json_object_get(rl, model));
        if (!admin_page_add(&pg, id, item.data)) {
            break;
        }
    }
    admin_page_end(&pg);
    tg_buf_deinit(&item);
    json_decref(models);
    json_decref(root);
    project_copy_deinit(&c);
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

/* The model the path's rate_limit_id names, when the project has that entry; else NULL after
 * answering 404. */
static const char *
find_model(struct admin_job *j, json_t *models)
{
    const char *id = admin_param(j, "rate_limit_id");
    size_t n = strlen(RL_ID_PREFIX);
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
                "No such rate limit in this project (ids are rl-<model>, for the models the "
                "project may use).",
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
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    return text != NULL ? text : tg_xstrdup("{}");
}

/* Stores settings and records the version and the audit entry. 0 or a store error. */
static int
save(struct admin_job *j, const struct project_copy *c, const char *settings, const char *model,
     const char *before, const char *after, bool is_deleted)
{
    struct tg_project_rec rec = {
        .id = c->id,
        .org_id = c->org_id,
        .name = c->name,
        .environment = c->environment,
        .created_ms = c->created_ms,
        .archived_ms = c->archived_ms,
        .settings = settings,
    };
    const char *type = is_deleted ? "rate_limit.deleted" : "rate_limit.updated";
    char id[160];
    snprintf(id, sizeof(id), RL_ID_PREFIX "%s", model);
    int rc = j->store->ops->project_update(j->store, &rec);
    rc = rc < 0 ? rc : admin_version(j, c->id, settings, type);
    rc = rc < 0 ? rc : admin_audit(j, type, c->id, id, before, is_deleted ? NULL : after);
    return rc;
}

static void
modify_rate_limit(struct admin_job *j)
{
    struct project_copy c = {0};
    json_t *root = NULL;
    json_t *models = NULL;
    json_t *limits = NULL;
    char *settings = NULL;
    char *before = NULL;
    char *after = NULL;
    if (!read_body(j) || !load_project(j, &c)) {
        goto out;
    }
    if (c.archived_ms != 0) {
        admin_error(j, 400, "The project is archived and can no longer be changed.", NULL,
                    "project_archived");
        goto out;
    }
    root = settings_root(c.settings);
    models = limit_models(j, root);
    const char *model = find_model(j, models);
    if (model == NULL) {
        goto out;
    }
    json_t *old = json_object_get(stored_limits(root), model);
    old = json_is_object(old) ? old : NULL;
    before = limit_json(model, old);
    limits = changed_limits(j, old);
    after = limit_json(model, limits);
    if (strcmp(before, after) == 0) {
        tg_buf_append_str(&j->out, after); /* nothing to change: no version, no entry */
        goto out;
    }
    bool is_deleted = json_object_size(limits) == 0;
    settings = settings_with_limits(root, model, limits);
    int rc = save(j, &c, settings, model, before, after, is_deleted);
    if (rc < 0) {
        admin_store_error(j, rc, "rate limit");
        goto out;
    }
    tg_buf_append_str(&j->out, after);
    j->reload = true; /* enforcement reads the limits from the snapshot */
    tg_log_info("admin: rate limit %s%s of project %s %s by %s", RL_ID_PREFIX, model, c.id,
                is_deleted ? "removed" : "updated", j->key->id);
out:
    json_decref(limits);
    json_decref(models);
    json_decref(root);
    free(settings);
    free(before);
    free(after);
    project_copy_deinit(&c);
}

const struct admin_route tg_admin_routes_rate_limits[] = {
    {TG_HTTP_GET, "projects/{project_id}/rate_limits", ADMIN_PROJECT,
     "List a project's rate limits, one per model it may use", list_rate_limits},
    {TG_HTTP_POST, "projects/{project_id}/rate_limits/{rate_limit_id}", ADMIN_OWNER,
     "Change a project's rate limits for one model (partial body; null removes a limit)",
     modify_rate_limit},
    {0, NULL, 0, NULL, NULL},
};
