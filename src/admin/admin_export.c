/*
 * admin_export.c: the organization as one YAML file (export) and making the store match such a
 * file (apply), for keeping an organization's setup in git.
 *
 * Routes (under /v1/organization/; owners only; rows in admin_history.c's table):
 *
 *   GET export            -> the file below (Content-Type application/yaml).
 *   POST apply?dry_run=true|false
 *       Body: the file, sent with a non-JSON Content-Type (application/yaml), or JSON
 *       {"yaml": "<the file>"} for clients that only send JSON.
 *       Answer: {"object":"organization.apply","dry_run":bool,"changes":[{"action":
 *       "create"|"update"|"archive"|"delete","kind":"budget"|"rate_limit"|"user"|"project"|
 *       "member"|"service_account","name":..,"before":{..}|null,"after":{..}|null}, ...]}.
 *       The organization's changes come first: kind "budget", name "organization", before
 *       and after the stored budgets; kind "rate_limit", name "organization/rl-<model>"
 *       ("organization/rl-all-models" for "*"), before and after organization.rate_limit
 *       objects (after null when the model's last limit goes).
 *       A malformed file, an unknown key (named with its line), a dangling member e-mail, a
 *       file without an owner or without the caller's own user: 400, nothing applied.
 *
 * The file's format is org_file.h's (no ids, no key material, nothing that differs between
 * installs); export sorts users by e-mail, projects, members and service accounts by name, so
 * the file does not depend on creation order. The organization's settings document
 * ("org_settings") gives the file's organization section (budget and rate_limits); keys'
 * settings ("key_settings") are not exported, since keys have no names that hold across
 * installs: they stay as they are whatever the file says.
 *
 * Apply is declarative, keyed by e-mail and name: a listed user, project, member or service
 * account that does not exist is created, one that differs is updated, and one missing from a
 * list that the file has is deleted (users, members, service accounts; their keys are
 * revoked) or archived (projects: they are never deleted). A section or field the file leaves
 * out is left as it is. The organization section replaces the organization's budget and rate
 * limits (one it leaves out is removed; other members of the document stay). A renamed
 * project is an archive and a create. Applying an export of the same state changes nothing.
 * All of it is one transaction (the router's) with one audit entry per change (the
 * organization's as the admin routes write them: "budget.updated", "rate_limit.updated" or
 * "rate_limit.deleted"), each project settings change is a config version (reason "apply"),
 * and a change reloads the snapshot so admission sees it at once.
 */
#include "admin/admin_export.h"

#include <stdlib.h>
#include <string.h>

#include "admin/org_file.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

/* ---- the organization as a JSON model --------------------------------------------------- */

/*
 * The model is {"users": [...], "projects": [...]} in the file's shape. Objects read from the
 * store also carry members whose names start with "_" (ids, stored data, times) that apply
 * needs and export never writes.
 */

static const char *
str_of(const json_t *o, const char *k)
{
    return tg_json_str(o, k);
}

static json_t *
data_of(const char *text)
{
    json_t *v = text != NULL ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_object(v)) {
        json_decref(v);
        v = json_object();
    }
    return v;
}

static int
collect_user(const struct tg_doc *d, void *arg)
{
    json_t *data = data_of(d->data);
    const char *email = str_of(data, "email");
    if (email != NULL) {
        json_array_append_new(
            arg, json_pack("{s:s,s:s,s:s,s:s,s:I,s:O}", "email", email, "name",
                           str_of(data, "name") ? str_of(data, "name") : "", "role",
                           str_of(data, "role") ? str_of(data, "role") : "reader", "_id", d->id,
                           "_created_ms", (json_int_t)d->created_ms, "_data", data));
    }
    json_decref(data);
    return 0;
}

static int
collect_project(const struct tg_project_rec *r, void *arg)
{
    json_array_append_new(arg, json_pack("{s:s,s:s,s:b,s:o,s:[],s:[],s:s,s:I,s:I}", "name", r->name,
                                         "environment", r->environment ? r->environment : "",
                                         "archived", r->archived_ms != 0, "settings",
                                         data_of(r->settings), "members", "service_accounts", "_id",
                                         r->id, "_archived_ms", (json_int_t)r->archived_ms,
                                         "_created_ms", (json_int_t)r->created_ms));
    return 0;
}

/* Members and service accounts as they come (placed under their projects afterwards). */
static int
collect_doc(const struct tg_doc *d, void *arg)
{
    if (d->project_id != NULL) {
        json_array_append_new(arg, json_pack("{s:s,s:s,s:I,s:o}", "_id", d->id, "_project_id",
                                             d->project_id, "_created_ms",
                                             (json_int_t)d->created_ms, "_data", data_of(d->data)));
    }
    return 0;
}

static int
cmp_by_key(const void *a, const void *b, void *key)
{
    const char *x = str_of(*(json_t *const *)a, key);
    const char *y = str_of(*(json_t *const *)b, key);
    return strcmp(x ? x : "", y ? y : "");
}

/* Sorts an array of objects by one string member, in place. Keys are unique except
 * duplicate service-account names, which are alike in the file whatever their order. */
static void
sort_by(json_t *list, const char *key)
{
    size_t n = json_array_size(list);
    json_t **items = tg_xcalloc(n + 1, sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        items[i] = json_incref(json_array_get(list, i));
    }
    qsort_r(items, n, sizeof(*items), cmp_by_key, (void *)key);
    json_array_clear(list);
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(list, items[i]);
    }
    free(items);
}

/* Places member and service-account documents under their projects in the file's shape. */
static void
attach_docs(json_t *model, const json_t *members, const json_t *accounts)
{
    json_t *projects = json_object_get(model, "projects");
    json_t *users = json_object_get(model, "users");
    size_t i;
    json_t *d;
    json_array_foreach(members, i, d)
    {
        json_t *p = tg_org_file_find(projects, "_id", str_of(d, "_project_id"));
        json_t *data = json_object_get(d, "_data");
        json_t *u = tg_org_file_find(users, "_id", str_of(data, "user_id"));
        if (p == NULL || u == NULL) {
            continue; /* a membership of a deleted user or project is not part of the org */
        }
        json_t *m = json_deep_copy(d);
        json_object_set_new(m, "email", json_string(str_of(u, "email")));
        json_object_set_new(m, "role",
                            json_string(str_of(data, "role") ? str_of(data, "role") : "member"));
        json_object_set_new(m, "_user_id", json_string(str_of(u, "_id")));
        json_array_append_new(json_object_get(p, "members"), m);
    }
    json_array_foreach(accounts, i, d)
    {
        json_t *p = tg_org_file_find(projects, "_id", str_of(d, "_project_id"));
        json_t *data = json_object_get(d, "_data");
        if (p == NULL || str_of(data, "name") == NULL) {
            continue;
        }
        json_t *s = json_deep_copy(d);
        json_object_set_new(s, "name", json_string(str_of(data, "name")));
        json_object_set_new(s, "role",
                            json_string(str_of(data, "role") ? str_of(data, "role") : "member"));
        json_array_append_new(json_object_get(p, "service_accounts"), s);
    }
}

static int
collect_org(const struct tg_doc *d, void *arg)
{
    json_t *model = arg;
    json_t *data = data_of(d->data);
    json_t *org = json_object_get(model, "organization");
    static const char *const members[] = {"budget", "rate_limits", NULL};
    for (size_t i = 0; members[i] != NULL; i++) {
        if (json_object_get(data, members[i]) != NULL) {
            json_object_set(org, members[i], json_object_get(data, members[i]));
        }
    }
    json_object_set_new(
        model, "_org",
        json_pack("{s:o,s:I}", "_data", data, "_created_ms", (json_int_t)d->created_ms));
    return 0;
}

/* The org as the store holds it now; NULL after answering 500. */
static json_t *
load_model(struct admin_job *j)
{
    struct tg_store *s = j->store;
    const char *org = j->state->org_id;
    json_t *model = json_pack("{s:{},s:[],s:[]}", "organization", "users", "projects");
    json_t *members = json_array();
    json_t *accounts = json_array();
    int rc = s->ops->doc_get(s, "org_settings", org, collect_org, model);
    rc = rc == TG_ENOTFOUND ? 0 : rc;
    if (rc >= 0) {
        rc = s->ops->doc_list(s, "user", org, NULL, collect_user, json_object_get(model, "users"));
    }
    if (rc >= 0) {
        rc = s->ops->projects_list(s, org, collect_project, json_object_get(model, "projects"));
    }
    if (rc >= 0) {
        rc = s->ops->doc_list(s, "member", org, NULL, collect_doc, members);
    }
    if (rc >= 0) {
        rc = s->ops->doc_list(s, "service_account", org, NULL, collect_doc, accounts);
    }
    if (rc < 0) {
        admin_store_error(j, rc, "The organization could not be read.");
        json_decref(model);
        model = NULL;
    } else {
        attach_docs(model, members, accounts);
        sort_by(json_object_get(model, "users"), "email");
        json_t *projects = json_object_get(model, "projects");
        sort_by(projects, "name");
        size_t i;
        json_t *p;
        json_array_foreach(projects, i, p)
        {
            sort_by(json_object_get(p, "members"), "email");
            sort_by(json_object_get(p, "service_accounts"), "name");
        }
    }
    json_decref(members);
    json_decref(accounts);
    return model;
}

void
admin_export_run(struct admin_job *j)
{
    json_t *model = load_model(j);
    if (model == NULL) {
        return;
    }
    tg_buf_reset(&j->out);
    j->content_type = "application/yaml";
    if (tg_org_file_write(model, &j->out) < 0) {
        admin_error(j, 500, "The organization could not be written as YAML.", NULL, NULL);
    }
    json_decref(model);
}

/* ---- apply: the plan and its execution --------------------------------------------------- */

struct apply {
    struct admin_job *j;
    bool is_dry;
    json_t *cur;     /* the store's model (load_model) */
    json_t *want;    /* the file's model (tg_org_file_read) */
    json_t *changes; /* the answer's list */
    int rc;          /* first store error */
    int64_t now_ms;
};

/* The public view of an object: members not starting with "_" and not in skip. */
static json_t *
view(const json_t *o, const char *skip1, const char *skip2)
{
    if (o == NULL) {
        return json_null();
    }
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        if (k[0] != '_' && (skip1 == NULL || strcmp(k, skip1) != 0) &&
            (skip2 == NULL || strcmp(k, skip2) != 0)) {
            json_object_set(out, k, v);
        }
    }
    return out;
}

/* Records one change (before/after are views, stolen) and audits it unless dry. */
static void
record(struct apply *a, const char *action, const char *kind, const char *name, json_t *before,
       json_t *after, const char *type, const char *project_id, const char *target_id)
{
    json_array_append_new(a->changes,
                          json_pack("{s:s,s:s,s:s,s:O,s:O}", "action", action, "kind", kind, "name",
                                    name, "before", before, "after", after));
    if (!a->is_dry && a->rc == 0) {
        char *b = json_is_null(before) ? NULL : json_dumps(before, JSON_COMPACT | JSON_SORT_KEYS);
        char *f = json_is_null(after) ? NULL : json_dumps(after, JSON_COMPACT | JSON_SORT_KEYS);
        a->rc = admin_audit(a->j, type, project_id, target_id, b, f);
        free(b);
        free(f);
    }
    json_decref(before);
    json_decref(after);
}

static void
new_id(char *out, size_t cap, const char *prefix)
{
    tg_id_new(out, cap, prefix, 24);
}

static int
put_doc(struct apply *a, const char *kind, const char *id, const char *project_id,
        const json_t *data, int64_t created_ms)
{
    char *text = json_dumps(data, JSON_COMPACT);
    struct tg_doc d = {
        .kind = kind,
        .id = id,
        .org_id = a->j->state->org_id,
        .project_id = project_id,
        .data = text,
        .created_ms = created_ms ? created_ms : a->now_ms,
        .updated_ms = a->now_ms,
    };
    int rc = a->j->store->ops->doc_put(a->j->store, &d);
    free(text);
    return rc;
}

static bool
differs(const json_t *want, const json_t *cur, const char *key)
{
    const json_t *w = json_object_get(want, key);
    return w != NULL && !json_equal((json_t *)w, json_object_get(cur, key));
}

/* Users that exist or will: the file's when it lists users, else the store's. */
static const json_t *
final_users(const struct apply *a)
{
    const json_t *u = json_object_get(a->want, "users");
    return u != NULL ? u : json_object_get(a->cur, "users");
}

/* Refusals that make the whole file wrong: checked before anything changes. */
static bool
check_plan(struct apply *a, char *err, size_t cap)
{
    const json_t *users = json_object_get(a->want, "users");
    size_t i, k;
    json_t *u, *p, *m;
    if (users != NULL) {
        bool has_owner = false;
        json_array_foreach(users, i, u)
        {
            has_owner = has_owner || strcmp(str_of(u, "role"), "owner") == 0;
        }
        if (!has_owner) {
            snprintf(err, cap, "The file names no owner: an organization needs one.");
            return false;
        }
        json_t *me = tg_org_file_find(json_object_get(a->cur, "users"), "_id", a->j->user_id);
        if (me != NULL && tg_org_file_find(users, "email", str_of(me, "email")) == NULL) {
            snprintf(err, cap, "The file leaves out your own user (%.256s); apply would delete it.",
                     str_of(me, "email"));
            return false;
        }
    }
    json_array_foreach(json_object_get(a->want, "projects"), i, p)
    {
        json_array_foreach(json_object_get(p, "members"), k, m)
        {
            if (tg_org_file_find(final_users(a), "email", str_of(m, "email")) == NULL) {
                snprintf(err, cap, "line %lld: member %.256s of project %.64s is not a user%s.",
                         (long long)json_integer_value(json_object_get(m, "_line")),
                         str_of(m, "email"), str_of(p, "name"),
                         users != NULL ? " the file lists" : " of the organization");
                return false;
            }
        }
    }
    return true;
}

static char *
label(const char *project, const char *name)
{
    return tg_xasprintf("%s/%s", project, name);
}

/* ---- apply: the organization's settings --------------------------------------------- */

static const char *const limit_fields[] = {"max_requests_per_1_minute", "max_tokens_per_1_minute",
                                           "max_requests_per_1_day", "max_tokens_per_1_day", NULL};

/* A member of an organization section, an empty object reading as absent: the admin routes
 * never store an empty budget or rate-limit map, so equal limits have equal settings. */
static json_t *
org_member(const json_t *org, const char *key)
{
    json_t *v = json_object_get(org, key);
    return json_is_object(v) && json_object_size(v) == 0 ? NULL : v;
}

static bool
same(const json_t *x, const json_t *y)
{
    return x == NULL ? y == NULL : y != NULL && json_equal((json_t *)x, (json_t *)y);
}

static void
limit_id(const char *model, char *out, size_t cap)
{
    snprintf(out, cap, strcmp(model, "*") == 0 ? "rl-all-models" : "rl-%s", model);
}

/* The organization.rate_limit object of model as the admin routes show and audit it
 * (admin_rate_limits.c): every member, null where the level has no limit. */
static json_t *
limit_object(const char *model, const json_t *limits)
{
    char id[160];
    limit_id(model, id, sizeof(id));
    json_t *o =
        json_pack("{s:s,s:s,s:s}", "object", "organization.rate_limit", "id", id, "model", model);
    for (size_t i = 0; limit_fields[i] != NULL; i++) {
        json_t *v = json_object_get(limits, limit_fields[i]);
        json_object_set_new(o, limit_fields[i], json_is_integer(v) ? json_incref(v) : json_null());
    }
    return o;
}

static int
cmp_name(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* One model's organization rate limits from cur to want (either NULL for none), recorded and
 * audited as the admin route does: "rate_limit.updated", or "rate_limit.deleted" when the
 * model's last limit goes; target the rate limit's id. */
static void
apply_org_limit(struct apply *a, const char *model, const json_t *want, const json_t *cur)
{
    if (same(want, cur)) {
        return;
    }
    char id[160];
    limit_id(model, id, sizeof(id));
    char *name = label("organization", id);
    record(a,
           cur == NULL    ? "create"
           : want == NULL ? "delete"
                          : "update",
           "rate_limit", name, limit_object(model, cur),
           want != NULL ? limit_object(model, want) : json_null(),
           want != NULL ? "rate_limit.updated" : "rate_limit.deleted", NULL, id);
    free(name);
}

/* Every model of both rate-limit maps, in name order so the changes come in a stable one. */
static void
apply_org_limits(struct apply *a, const json_t *want, const json_t *cur)
{
    size_t n = 0;
    const char **models =
        tg_xcalloc(json_object_size(want) + json_object_size(cur) + 1, sizeof(*models));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)want, k, v)
    {
        models[n++] = k;
    }
    json_object_foreach((json_t *)cur, k, v)
    {
        if (json_object_get(want, k) == NULL) {
            models[n++] = k;
        }
    }
    qsort(models, n, sizeof(*models), cmp_name);
    for (size_t i = 0; i < n; i++) {
        apply_org_limit(a, models[i], json_object_get(want, models[i]),
                        json_object_get(cur, models[i]));
    }
    free(models);
}

/* Writes the organization's settings document with budget and rate_limits as the file says
 * (other members kept), or deletes it when nothing is left. */
static int
write_org(struct apply *a, const json_t *budget, const json_t *limits)
{
    const json_t *stored = json_object_get(a->cur, "_org");
    json_t *data = json_deep_copy(json_object_get(stored, "_data"));
    data = data != NULL ? data : json_object();
    const char *members[] = {"budget", "rate_limits"};
    const json_t *values[] = {budget, limits};
    for (size_t i = 0; i < 2; i++) {
        if (values[i] != NULL) {
            json_object_set(data, members[i], (json_t *)values[i]);
        } else {
            json_object_del(data, members[i]);
        }
    }
    int rc;
    if (json_object_size(data) > 0) {
        rc = put_doc(a, "org_settings", a->j->state->org_id, NULL, data,
                     json_integer_value(json_object_get(stored, "_created_ms")));
    } else {
        rc = stored != NULL
                 ? a->j->store->ops->doc_delete(a->j->store, "org_settings", a->j->state->org_id)
                 : 0;
        rc = rc == TG_ENOTFOUND ? 0 : rc;
    }
    json_decref(data);
    return rc;
}

/* The organization section, when the file has one: its budget and rate limits replace the
 * stored ones (a member it leaves out is removed), one change and audit entry each, as the
 * admin routes record them ("budget.updated" with the stored budgets before and after). */
static void
apply_org(struct apply *a)
{
    const json_t *want = json_object_get(a->want, "organization");
    const json_t *cur = json_object_get(a->cur, "organization");
    if (want == NULL) {
        return;
    }
    json_t *wb = org_member(want, "budget");
    json_t *cb = org_member(cur, "budget");
    json_t *wl = org_member(want, "rate_limits");
    json_t *cl = org_member(cur, "rate_limits");
    if (same(wb, cb) && same(wl, cl)) {
        return;
    }
    if (!same(wb, cb)) {
        record(a,
               cb == NULL   ? "create"
               : wb == NULL ? "delete"
                            : "update",
               "budget", "organization", cb != NULL ? json_incref(cb) : json_null(),
               wb != NULL ? json_incref(wb) : json_null(), "budget.updated", NULL,
               a->j->state->org_id);
    }
    apply_org_limits(a, wl, cl);
    if (!a->is_dry && a->rc == 0) {
        a->rc = write_org(a, wb, wl);
    }
}

static void
apply_users(struct apply *a)
{
    json_t *cur_users = json_object_get(a->cur, "users");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(a->want, "users"), i, w)
    {
        json_t *c = tg_org_file_find(cur_users, "email", str_of(w, "email"));
        if (c == NULL) {
            char id[40];
            new_id(id, sizeof(id), "user-");
            const char *email = str_of(w, "email");
            if (str_of(w, "name") == NULL) {
                json_object_set_new(w, "name", json_stringn(email, strcspn(email, "@")));
            }
            json_t *data = view(w, NULL, NULL);
            if (!a->is_dry && a->rc == 0) {
                a->rc = put_doc(a, "user", id, NULL, data, 0);
            }
            json_object_set_new(w, "_id", json_string(id));
            record(a, "create", "user", email, json_null(), data, "user.added", NULL, id);
            continue;
        }
        json_object_set(w, "_id", json_object_get(c, "_id"));
        if (!differs(w, c, "name") && !differs(w, c, "role")) {
            continue;
        }
        json_t *after = view(c, NULL, NULL);
        json_t *given = view(w, NULL, NULL);
        json_object_update_existing(after, given);
        json_decref(given);
        json_t *data = json_deep_copy(json_object_get(c, "_data"));
        json_object_update(data, after);
        if (!a->is_dry && a->rc == 0) {
            a->rc = put_doc(a, "user", str_of(c, "_id"), NULL, data,
                            json_integer_value(json_object_get(c, "_created_ms")));
        }
        if (!a->is_dry && a->rc == 0 && differs(w, c, "role")) {
            a->rc = a->j->store->ops->keys_set_role_by_user(a->j->store, str_of(c, "_id"),
                                                            str_of(w, "role"));
        }
        json_decref(data);
        record(a, "update", "user", str_of(c, "email"), view(c, NULL, NULL), after, "user.updated",
               NULL, str_of(c, "_id"));
    }
}

static int
write_project(struct apply *a, const char *id, const json_t *after, int64_t created_ms,
              int64_t archived_ms, bool is_new)
{
    struct tg_store *s = a->j->store;
    char *settings = json_dumps(json_object_get(after, "settings"), JSON_COMPACT | JSON_SORT_KEYS);
    struct tg_project_rec rec = {
        .id = id,
        .org_id = a->j->state->org_id,
        .name = str_of(after, "name"),
        .environment = str_of(after, "environment"),
        .created_ms = created_ms,
        .archived_ms = json_is_true(json_object_get(after, "archived"))
                           ? (archived_ms != 0 ? archived_ms : a->now_ms)
                           : 0,
        .settings = settings,
    };
    int rc = is_new ? s->ops->project_insert(s, &rec) : s->ops->project_update(s, &rec);
    free(settings);
    return rc;
}

/* Records a config version of the project's settings in after. */
static int
write_version(struct apply *a, const char *id, const json_t *after)
{
    char *settings = json_dumps(json_object_get(after, "settings"), JSON_COMPACT | JSON_SORT_KEYS);
    int rc = admin_version(a->j, id, settings, "apply");
    free(settings);
    return rc;
}

static void
create_project(struct apply *a, json_t *w)
{
    char id[40];
    new_id(id, sizeof(id), "proj_");
    json_t *after =
        json_pack("{s:s,s:s,s:b,s:o}", "name", str_of(w, "name"), "environment",
                  str_of(w, "environment") ? str_of(w, "environment") : "development", "archived",
                  json_is_true(json_object_get(w, "archived")), "settings", json_object());
    if (json_object_get(w, "settings") != NULL) {
        json_object_set(after, "settings", json_object_get(w, "settings"));
    }
    if (!a->is_dry && a->rc == 0) {
        a->rc = write_project(a, id, after, a->now_ms, 0, true);
    }
    if (!a->is_dry && a->rc == 0) {
        a->rc = write_version(a, id, after);
    }
    json_object_set_new(w, "_id", json_string(id));
    record(a, "create", "project", str_of(w, "name"), json_null(), after, "project.created", id,
           id);
}

/* Brings project c to after (archived, environment, settings; borrowed) and records it. */
static void
change_project(struct apply *a, const json_t *c, json_t *after)
{
    json_t *before = view(c, "members", "service_accounts");
    const char *id = str_of(c, "_id");
    bool is_archive = json_is_true(json_object_get(after, "archived")) &&
                      !json_is_true(json_object_get(before, "archived"));
    bool is_new_settings = differs(after, before, "settings");
    if (!a->is_dry && a->rc == 0) {
        a->rc = write_project(a, id, after, json_integer_value(json_object_get(c, "_created_ms")),
                              json_integer_value(json_object_get(c, "_archived_ms")), false);
    }
    if (!a->is_dry && a->rc == 0 && is_new_settings) {
        a->rc = write_version(a, id, after);
    }
    record(a, is_archive ? "archive" : "update", "project", str_of(c, "name"), before,
           json_incref(after), is_archive ? "project.archived" : "project.updated", id, id);
}

static void
apply_projects(struct apply *a)
{
    json_t *cur = json_object_get(a->cur, "projects");
    json_t *want = json_object_get(a->want, "projects");
    size_t i;
    json_t *w, *c;
    json_array_foreach(want, i, w)
    {
        c = tg_org_file_find(cur, "name", str_of(w, "name"));
        if (c == NULL) {
            create_project(a, w);
            continue;
        }
        json_object_set(w, "_id", json_object_get(c, "_id"));
        if (differs(w, c, "environment") || differs(w, c, "archived") ||
            differs(w, c, "settings")) {
            json_t *after = view(c, "members", "service_accounts");
            json_t *given = view(w, "members", "service_accounts");
            json_object_update_existing(after, given);
            json_decref(given);
            change_project(a, c, after);
            json_decref(after);
        }
    }
    json_array_foreach(want != NULL ? cur : NULL, i, c)
    {
        if (tg_org_file_find(want, "name", str_of(c, "name")) == NULL &&
            !json_is_true(json_object_get(c, "archived"))) {
            json_t *after = view(c, "members", "service_accounts");
            json_object_set_new(after, "archived", json_true());
            change_project(a, c, after);
            json_decref(after);
        }
    }
}

static void
delete_member(struct apply *a, const json_t *p, json_t *m)
{
    const char *pid = str_of(p, "_id");
    if (!a->is_dry && a->rc == 0) {
        a->rc = a->j->store->ops->doc_delete(a->j->store, "member", str_of(m, "_id"));
    }
    json_object_set_new(m, "_deleted", json_true());
    char *name = label(str_of(p, "name"), str_of(m, "email"));
    record(a, "delete", "member", name, view(m, NULL, NULL), json_null(), "user.deleted", pid,
           str_of(m, "_user_id"));
    free(name);
}

static void
apply_members_of(struct apply *a, const json_t *w, json_t *c)
{
    json_t *cur = c != NULL ? json_object_get(c, "members") : NULL;
    const char *pid = str_of(w, "_id");
    size_t i;
    json_t *m, *cm;
    json_array_foreach(json_object_get(w, "members"), i, m)
    {
        const json_t *u = tg_org_file_find(final_users(a), "email", str_of(m, "email"));
        const char *uid = str_of(u, "_id");
        char *name = label(str_of(w, "name"), str_of(m, "email"));
        json_t *after = view(m, NULL, NULL);
        cm = tg_org_file_find(cur, "email", str_of(m, "email"));
        if (cm == NULL) {
            char *id = tg_xasprintf("pm_%s_%s", pid, uid);
            json_t *data = json_pack("{s:s,s:s,s:I}", "user_id", uid, "role", str_of(m, "role"),
                                     "added_at_ms", (json_int_t)a->now_ms);
            if (!a->is_dry && a->rc == 0) {
                a->rc = put_doc(a, "member", id, pid, data, 0);
            }
            record(a, "create", "member", name, json_null(), after, "user.added", pid, uid);
            json_decref(data);
            free(id);
        } else if (differs(m, cm, "role")) {
            json_t *data = json_deep_copy(json_object_get(cm, "_data"));
            json_object_set(data, "role", json_object_get(m, "role"));
            if (!a->is_dry && a->rc == 0) {
                a->rc = put_doc(a, "member", str_of(cm, "_id"), pid, data,
                                json_integer_value(json_object_get(cm, "_created_ms")));
            }
            record(a, "update", "member", name, view(cm, NULL, NULL), after, "user.updated", pid,
                   uid);
            json_decref(data);
        } else {
            json_decref(after);
        }
        free(name);
    }
    json_array_foreach(cur, i, cm)
    {
        if (tg_org_file_find(json_object_get(w, "members"), "email", str_of(cm, "email")) == NULL) {
            delete_member(a, c, cm);
        }
    }
}

struct key_scan {
    const char *owner_id;
    enum tg_key_kind kind;
    json_t *ids;
};

static int
collect_key(const struct tg_key_rec *k, void *arg)
{
    struct key_scan *s = arg;
    if (k->kind == s->kind && k->revoked_ms == 0 && k->owner_user_id != NULL &&
        strcmp(k->owner_user_id, s->owner_id) == 0) {
        json_array_append_new(s->ids, json_string(k->id));
    }
    return 0;
}

/* Revokes the active keys of one kind that owner_id (a user or service account) owns. */
static void
revoke_keys_of(struct apply *a, const char *owner_id, enum tg_key_kind kind)
{
    struct tg_store *s = a->j->store;
    struct key_scan scan = {.owner_id = owner_id, .kind = kind, .ids = json_array()};
    if (!a->is_dry && a->rc == 0) {
        a->rc = s->ops->keys_list(s, a->j->state->org_id, collect_key, &scan);
    }
    size_t i;
    json_t *id;
    json_array_foreach(scan.ids, i, id)
    {
        if (a->rc == 0) {
            a->rc = s->ops->key_revoke(s, json_string_value(id), a->now_ms);
        }
    }
    json_decref(scan.ids);
}

static void
apply_accounts_of(struct apply *a, const json_t *w, json_t *c)
{
    json_t *cur = c != NULL ? json_object_get(c, "service_accounts") : NULL;
    const char *pid = str_of(w, "_id");
    size_t i, k;
    json_t *s, *cs;
    json_array_foreach(json_object_get(w, "service_accounts"), i, s)
    {
        json_t *match = NULL;
        json_array_foreach(cur, k, cs)
        {
            if (match == NULL && !json_is_true(json_object_get(cs, "_matched")) &&
                strcmp(str_of(cs, "name"), str_of(s, "name")) == 0) {
                match = cs;
            }
        }
        char *name = label(str_of(w, "name"), str_of(s, "name"));
        json_t *after = view(s, NULL, NULL);
        if (match == NULL) {
            char id[48];
            new_id(id, sizeof(id), "svc_acct_");
            if (!a->is_dry && a->rc == 0) {
                a->rc = put_doc(a, "service_account", id, pid, after, 0);
            }
            record(a, "create", "service_account", name, json_null(), after,
                   "service_account.created", pid, id);
        } else {
            json_object_set_new(match, "_matched", json_true());
            if (differs(s, match, "role")) {
                json_t *data = json_deep_copy(json_object_get(match, "_data"));
                json_object_set(data, "role", json_object_get(s, "role"));
                if (!a->is_dry && a->rc == 0) {
                    a->rc = put_doc(a, "service_account", str_of(match, "_id"), pid, data,
                                    json_integer_value(json_object_get(match, "_created_ms")));
                }
                json_decref(data);
                record(a, "update", "service_account", name, view(match, NULL, NULL), after,
                       "service_account.updated", pid, str_of(match, "_id"));
            } else {
                json_decref(after);
            }
        }
        free(name);
    }
    json_array_foreach(cur, i, cs)
    {
        if (json_is_true(json_object_get(cs, "_matched"))) {
            continue;
        }
        revoke_keys_of(a, str_of(cs, "_id"), TG_KEY_PROJECT);
        if (!a->is_dry && a->rc == 0) {
            a->rc = a->j->store->ops->doc_delete(a->j->store, "service_account", str_of(cs, "_id"));
        }
        char *name = label(str_of(c, "name"), str_of(cs, "name"));
        record(a, "delete", "service_account", name, view(cs, NULL, NULL), json_null(),
               "service_account.deleted", pid, str_of(cs, "_id"));
        free(name);
    }
}

static void
apply_project_lists(struct apply *a)
{
    json_t *cur = json_object_get(a->cur, "projects");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(a->want, "projects"), i, w)
    {
        json_t *c = tg_org_file_find(cur, "name", str_of(w, "name"));
        if (json_object_get(w, "members") != NULL) {
            apply_members_of(a, w, c);
        }
        if (json_object_get(w, "service_accounts") != NULL) {
            apply_accounts_of(a, w, c);
        }
    }
}

/* Users the file leaves out: their memberships go, their admin keys are revoked (project
 * keys they made keep working, as when a user is deleted through the API). */
static void
delete_users(struct apply *a)
{
    json_t *want = json_object_get(a->want, "users");
    size_t i, k, n;
    json_t *u, *p, *m;
    json_array_foreach(want != NULL ? json_object_get(a->cur, "users") : NULL, i, u)
    {
        if (tg_org_file_find(want, "email", str_of(u, "email")) != NULL) {
            continue;
        }
        const char *uid = str_of(u, "_id");
        json_array_foreach(json_object_get(a->cur, "projects"), k, p)
        {
            json_array_foreach(json_object_get(p, "members"), n, m)
            {
                if (strcmp(str_of(m, "_user_id"), uid) == 0 &&
                    !json_is_true(json_object_get(m, "_deleted"))) {
                    delete_member(a, p, m);
                }
            }
        }
        revoke_keys_of(a, uid, TG_KEY_ADMIN);
        if (!a->is_dry && a->rc == 0) {
            a->rc = a->j->store->ops->doc_delete(a->j->store, "user", uid);
        }
        record(a, "delete", "user", str_of(u, "email"), view(u, NULL, NULL), json_null(),
               "user.deleted", NULL, uid);
    }
}

/* The file's text: the body itself, or the "yaml" member of a JSON body. */
static bool
file_text(struct admin_job *j, const char **text, size_t *len)
{
    const json_t *y = j->body != NULL ? json_object_get(j->body, "yaml") : NULL;
    if (y != NULL) {
        static const char *const allowed[] = {"yaml", NULL};
        if (!admin_body_only(j, allowed)) {
            return false;
        }
        if (!json_is_string(y)) {
            admin_error(j, 400, "yaml must be the file's text.", "yaml", "invalid_type");
            return false;
        }
        *text = json_string_value(y);
        *len = json_string_length(y);
        return true;
    }
    *text = j->req->body.data ? j->req->body.data : "";
    *len = j->req->body.len;
    return true;
}

static void
answer(struct apply *a)
{
    json_t *o = json_pack("{s:s,s:b,s:O}", "object", "organization.apply", "dry_run", a->is_dry,
                          "changes", a->changes);
    tg_buf_reset(&a->j->out);
    tg_json_dump_buf(o, &a->j->out);
    json_decref(o);
}

void
admin_apply_run(struct admin_job *j)
{
    const char *dry = admin_query(j, "dry_run");
    const char *text;
    size_t len;
    char err[600];
    char why[400];
    struct apply a = {.j = j, .changes = json_array(), .now_ms = tg_clock_unix_ms()};
    if (dry != NULL && strcmp(dry, "true") != 0 && strcmp(dry, "false") != 0) {
        admin_error(j, 400, "dry_run must be true or false.", "dry_run", NULL);
        goto out;
    }
    a.is_dry = dry != NULL && strcmp(dry, "true") == 0;
    if (!file_text(j, &text, &len)) {
        goto out;
    }
    a.want = tg_org_file_read(text, len, why, sizeof(why));
    if (a.want == NULL) {
        snprintf(err, sizeof(err), "The organization file is not valid: %s.", why);
        admin_error(j, 400, err, "file", "invalid_org_file");
        goto out;
    }
    if ((a.cur = load_model(j)) == NULL) {
        goto out;
    }
    if (!check_plan(&a, err, sizeof(err))) {
        admin_error(j, 400, err, "file", "invalid_org_file");
        goto out;
    }
    apply_org(&a);
    apply_users(&a);
    apply_projects(&a);
    apply_project_lists(&a);
    delete_users(&a);
    if (a.rc < 0) {
        admin_store_error(j, a.rc, "The organization file could not be applied.");
        goto out;
    }
    answer(&a);
    if (!a.is_dry && json_array_size(a.changes) > 0) {
        j->reload = true;
        tg_log_info("admin: apply made %zu changes (by %s)", json_array_size(a.changes),
                    j->key != NULL ? j->key->id : "?");
    }
out:
    json_decref(a.want);
    json_decref(a.cur);
    json_decref(a.changes);
}
