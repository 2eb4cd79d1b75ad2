/*
 * admin_history.c: config history: the numbered versions of every project's settings, their
 * differences, and rollback.
 *
 * Every change to a project's settings (allowed models, limits, budgets, deployments) is
 * recorded by admin_version() as a new version numbered per organization (1, 2, ...), holding
 * the whole settings object. Rollback copies an old version's settings back onto its project
 * as a new version; it touches nothing else (keys stay as they are: a revoked key is never
 * resurrected).
 *
 * Routes (under /v1/organization/; owners only, except the per-project list):
 *
 *   GET config_versions?project_id=<id or name>&limit&after       newest first
 *   GET projects/{project_id}/config_versions?limit&after          owners, project members
 *       {"object":"list","data":[version...],"first_id":"7","last_id":"3","has_more":false}
 *       (ids in first_id/last_id/after are version numbers as strings)
 *   GET config_versions/{number}
 *       {"object":"organization.config_version","number":7,"project_id":"proj_...",
 *        "project_name":"staging"|null,"created_at":<unix s>,"actor_id":"key_..."|null,
 *        "reason":"project.updated","settings":{"models":[...]}}
 *   GET config_versions/diff?from=A&to=B
 *       {"object":"organization.config_version.diff","from":A,"to":B,
 *        "from_project_id":..,"to_project_id":..,
 *        "changes":[{"path":"models","change":"changed"|"added"|"removed",
 *                    "old":<value>|null,"new":<value>|null}, ...]}
 *       Objects are compared member by member (paths join names with "."), anything else
 *       (arrays included) as a whole value; paths come in sorted order.
 *   POST config_versions/{number}/rollback     body {} (or empty)
 *       Restores version N's settings onto its project: a new version with reason
 *       "rollback to N" and an audit entry config.rolled_back; answers the new version.
 *       409 when the project is archived, 404 when N or its project does not exist.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_export.h"
#include "admin/admin_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

/* ---- versions ------------------------------------------------------------------------------ */

/* A version copied out of a store callback. */
struct version {
    bool is_found;
    int64_t number;
    int64_t time_ms;
    char *project_id;
    char *actor_id;
    char *reason;
    char *settings;
};

static void
version_deinit(struct version *v)
{
    free(v->project_id);
    free(v->actor_id);
    free(v->reason);
    free(v->settings);
    memset(v, 0, sizeof(*v));
}

static int
copy_version(const struct tg_version_rec *r, void *arg)
{
    struct version *v = arg;
    version_deinit(v);
    v->is_found = true;
    v->number = r->number;
    v->time_ms = r->time_ms;
    v->project_id = r->project_id ? tg_xstrdup(r->project_id) : NULL;
    v->actor_id = r->actor_id ? tg_xstrdup(r->actor_id) : NULL;
    v->reason = r->reason ? tg_xstrdup(r->reason) : NULL;
    v->settings = tg_xstrdup(r->settings ? r->settings : "{}");
    return 1; /* the first one is enough (version_list: the newest) */
}

/* Settings text as a JSON object ({} when unreadable: the store only holds what we wrote). */
static json_t *
settings_json(const char *text)
{
    json_t *v = text != NULL ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_object(v)) {
        json_decref(v);
        v = json_object();
    }
    return v;
}

static json_t *
version_json(const struct tg_version_rec *r, const struct tg_state *st)
{
    const struct tg_project *p = r->project_id ? tg_state_project(st, r->project_id) : NULL;
    json_t *o = json_pack("{s:s,s:I}", "object", "organization.config_version", "number",
                          (json_int_t)r->number);
    json_object_set_new(o, "project_id", r->project_id ? json_string(r->project_id) : json_null());
    json_object_set_new(o, "project_name", p ? json_string(p->name) : json_null());
    json_object_set_new(o, "created_at", json_integer(r->time_ms / 1000));
    json_object_set_new(o, "actor_id", r->actor_id ? json_string(r->actor_id) : json_null());
    json_object_set_new(o, "reason", r->reason ? json_string(r->reason) : json_null());
    json_object_set_new(o, "settings", settings_json(r->settings));
    return o;
}

static void
write_version(struct admin_job *j, const struct version *v)
{
    struct tg_version_rec r = {
        .number = v->number,
        .project_id = v->project_id,
        .time_ms = v->time_ms,
        .actor_id = v->actor_id,
        .reason = v->reason,
        .settings = v->settings,
    };
    json_t *o = version_json(&r, j->state);
    tg_buf_reset(&j->out);
    tg_json_dump_buf(o, &j->out);
    json_decref(o);
}

static bool
parse_number(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = s != NULL ? strtoll(s, &end, 10) : 0;
    if (s == NULL || errno != 0 || end == s || *end != '\0' || v < 1) {
        return false;
    }
    *out = v;
    return true;
}

/* Reads version number (from text s, named param in errors); false after answering. */
static bool
load_version(struct admin_job *j, const char *s, const char *param, struct version *v)
{
    int64_t n;
    if (!parse_number(s, &n)) {
        admin_error(j, 400, "A config version is a positive integer.", param, NULL);
        return false;
    }
    int rc = j->store->ops->version_get(j->store, j->state->org_id, n, copy_version, v);
    if (rc == TG_ENOTFOUND || (rc >= 0 && !v->is_found)) {
        char msg[96];
        snprintf(msg, sizeof(msg), "No config version %lld.", (long long)n);
        admin_error(j, 404, msg, param, NULL);
        return false;
    }
    if (rc < 0) {
        admin_store_error(j, rc, "The config history could not be read.");
        return false;
    }
    return true;
}

/* ---- GET config_versions ------------------------------------------------------------------ */

struct list_scan {
    struct admin_page *pg;
    const struct tg_state *st;
};

static int
list_one(const struct tg_version_rec *r, void *arg)
{
    struct list_scan *s = arg;
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)r->number);
    json_t *o = version_json(r, s->st);
    char *text = json_dumps(o, JSON_COMPACT);
    bool more = admin_page_add(s->pg, id, text);
    free(text);
    json_decref(o);
    return more ? 0 : 1;
}

static void
list_versions_of(struct admin_job *j, const char *project_id)
{
    struct admin_page pg;
    if (!admin_page_begin(&pg, j)) {
        return;
    }
    struct list_scan s = {.pg = &pg, .st = j->state};
    int rc = j->store->ops->version_list(j->store, j->state->org_id, project_id, list_one, &s);
    if (rc < 0) {
        admin_store_error(j, rc, "The config history could not be read.");
        return;
    }
    admin_page_end(&pg);
}

static void
list_versions(struct admin_job *j)
{
    const char *project = admin_query(j, "project_id");
    const struct tg_project *p = NULL;
    if (project != NULL && (p = tg_state_project(j->state, project)) == NULL) {
        admin_error(j, 404, "No such project.", "project_id", NULL);
        return;
    }
    list_versions_of(j, p ? p->id : NULL);
}

static void
list_project_versions(struct admin_job *j)
{
    list_versions_of(j, j->project->id);
}

static void
get_version(struct admin_job *j)
{
    struct version v = {0};
    if (load_version(j, admin_param(j, "number"), "number", &v)) {
        write_version(j, &v);
    }
    version_deinit(&v);
}

/* ---- GET config_versions/diff ------------------------------------------------------------- */

static void
add_change(json_t *changes, const char *path, const json_t *old, const json_t *new)
{
    const char *what = old == NULL ? "added" : new == NULL ? "removed" : "changed";
    json_array_append_new(changes,
                          json_pack("{s:s,s:s,s:O,s:O}", "path", path, "change", what, "old",
                                    old ? old : json_null(), "new", new ? new : json_null()));
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The union of two objects' member names, sorted (so a diff reads the same every time). */
static const char **
sorted_keys(const json_t *a, const json_t *b, size_t *n_out)
{
    size_t cap = json_object_size(a) + json_object_size(b), n = 0;
    const char **keys = tg_xcalloc(cap + 1, sizeof(*keys));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)a, k, v)
    {
        keys[n++] = k;
    }
    json_object_foreach((json_t *)b, k, v)
    {
        if (json_object_get(a, k) == NULL) {
            keys[n++] = k;
        }
    }
    qsort(keys, n, sizeof(*keys), cmp_str);
    *n_out = n;
    return keys;
}

static void
diff_objects(json_t *changes, const char *prefix, const json_t *old, const json_t *new, int depth)
{
    size_t n;
    const char **keys = sorted_keys(old, new, &n);
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_object_get(old, keys[i]);
        const json_t *b = json_object_get(new, keys[i]);
        char *path = prefix ? tg_xasprintf("%s.%s", prefix, keys[i]) : tg_xstrdup(keys[i]);
        if (a != NULL && b != NULL && json_is_object(a) && json_is_object(b) && depth < 16) {
            diff_objects(changes, path, a, b, depth + 1);
        } else if (a == NULL || b == NULL || !json_equal((json_t *)a, (json_t *)b)) {
            add_change(changes, path, a, b);
        }
        free(path);
    }
    free(keys);
}

static void
diff_versions(struct admin_job *j)
{
    struct version from = {0}, to = {0};
    if (load_version(j, admin_query(j, "from"), "from", &from) &&
        load_version(j, admin_query(j, "to"), "to", &to)) {
        json_t *a = settings_json(from.settings);
        json_t *b = settings_json(to.settings);
        json_t *changes = json_array();
        diff_objects(changes, NULL, a, b, 0);
        json_t *o = json_pack(
            "{s:s,s:I,s:I,s:o,s:o,s:o}", "object", "organization.config_version.diff", "from",
            (json_int_t)from.number, "to", (json_int_t)to.number, "from_project_id",
            from.project_id ? json_string(from.project_id) : json_null(), "to_project_id",
            to.project_id ? json_string(to.project_id) : json_null(), "changes", changes);
        tg_buf_reset(&j->out);
        tg_json_dump_buf(o, &j->out);
        json_decref(o);
        json_decref(a);
        json_decref(b);
    }
    version_deinit(&from);
    version_deinit(&to);
}

/* ---- POST config_versions/{number}/rollback ------------------------------------------------ */

/* A project record copied out of projects_list. */
struct project {
    const char *want_id;
    bool is_found;
    struct tg_project_rec rec;
};

static int
copy_project(const struct tg_project_rec *r, void *arg)
{
    struct project *p = arg;
    if (strcmp(r->id, p->want_id) != 0) {
        return 0;
    }
    p->is_found = true;
    p->rec = *r;
    p->rec.id = tg_xstrdup(r->id);
    p->rec.org_id = tg_xstrdup(r->org_id);
    p->rec.name = tg_xstrdup(r->name);
    p->rec.environment = tg_xstrdup(r->environment ? r->environment : "");
    p->rec.settings = tg_xstrdup(r->settings ? r->settings : "{}");
    return 1;
}

static void
project_deinit(struct project *p)
{
    if (p->is_found) {
        free((char *)p->rec.id);
        free((char *)p->rec.org_id);
        free((char *)p->rec.name);
        free((char *)p->rec.environment);
        free((char *)p->rec.settings);
    }
}

/* {"settings": <settings>} plus, when n > 0, "rolled_back_to": n, as JSON text (malloc). */
static char *
audit_side(const char *settings, int64_t n)
{
    json_t *o = json_pack("{s:o}", "settings", settings_json(settings));
    if (n > 0) {
        json_object_set_new(o, "rolled_back_to", json_integer(n));
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return text;
}

static int
restore(struct admin_job *j, const struct version *v, struct project *p, struct version *out)
{
    struct tg_store *s = j->store;
    char reason[64];
    snprintf(reason, sizeof(reason), "rollback to %lld", (long long)v->number);
    struct tg_project_rec rec = p->rec;
    rec.settings = v->settings;
    int rc = s->ops->project_update(s, &rec);
    if (rc == 0) {
        rc = admin_version(j, p->rec.id, v->settings, reason);
    }
    if (rc == 0) {
        char *before = audit_side(p->rec.settings, 0);
        char *after = audit_side(v->settings, v->number);
        rc = admin_audit(j, "config.rolled_back", p->rec.id, p->rec.id, before, after);
        free(before);
        free(after);
    }
    if (rc == 0) {
        rc = s->ops->version_list(s, j->state->org_id, p->rec.id, copy_version, out);
        rc = rc < 0 ? rc : 0;
    }
    return rc;
}

static void
rollback_version(struct admin_job *j)
{
    static const char *const allowed[] = {NULL};
    struct version v = {0}, made = {0};
    struct project p = {0};
    if (!admin_body_only(j, allowed) || !load_version(j, admin_param(j, "number"), "number", &v)) {
        goto out;
    }
    if (v.project_id == NULL) {
        admin_error(j, 400, "This config version belongs to no project.", "number", NULL);
        goto out;
    }
    p.want_id = v.project_id;
    int rc = j->store->ops->projects_list(j->store, j->state->org_id, copy_project, &p);
    if (rc < 0) {
        admin_store_error(j, rc, "The project could not be read.");
        goto out;
    }
    if (!p.is_found) {
        admin_error(j, 404, "The project of this config version no longer exists.", "number", NULL);
        goto out;
    }
    if (p.rec.archived_ms != 0) {
        admin_error(j, 409, "The project of this config version is archived.", "number",
                    "project_archived");
        goto out;
    }
    rc = restore(j, &v, &p, &made);
    if (rc < 0 || !made.is_found) {
        admin_store_error(j, rc < 0 ? rc : TG_ESTORE, "The rollback could not be stored.");
        goto out;
    }
    j->reload = true; /* the snapshot's allowed models come from the settings */
    write_version(j, &made);
    tg_log_info("admin: project %s rolled back to config version %lld (now %lld) by %s", p.rec.id,
                (long long)v.number, (long long)made.number, j->key != NULL ? j->key->id : "?");
out:
    version_deinit(&v);
    version_deinit(&made);
    project_deinit(&p);
}

/* The diff row comes before {number} so that "diff" is never read as a version number. The
 * export and apply rows (admin_export.c) sit here too, so the router needs no new table. */
const struct admin_route tg_admin_routes_history[] = {
    {TG_HTTP_GET, "config_versions", ADMIN_OWNER,
     "List config versions, newest first (?project_id)", list_versions},
    {TG_HTTP_GET, "config_versions/diff", ADMIN_OWNER,
     "Compare the settings of two config versions (?from&to)", diff_versions},
    {TG_HTTP_GET, "config_versions/{number}", ADMIN_OWNER, "Retrieve a config version",
     get_version},
    {TG_HTTP_POST, "config_versions/{number}/rollback", ADMIN_OWNER,
     "Restore a config version's settings onto its project (a new version)", rollback_version},
    {TG_HTTP_GET, "projects/{project_id}/config_versions", ADMIN_PROJECT,
     "List a project's config versions, newest first", list_project_versions},
    {TG_HTTP_GET, "export", ADMIN_OWNER,
     "Export users, projects, members and service accounts as YAML", admin_export_run},
    {TG_HTTP_POST, "apply", ADMIN_OWNER,
     "Make the organization match a YAML file (?dry_run=true lists the changes only)",
     admin_apply_run},
    {0, NULL, 0, NULL, NULL},
};
