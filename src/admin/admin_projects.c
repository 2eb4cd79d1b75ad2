/*
 * admin_projects.c: the organization's projects (OpenAI's organization.project) as
 * environments, and their members (organization.project.user).
 *
 * Projects are read from the store rather than the snapshot, so creation and archive times
 * are the stored ones. Owners see every project; readers see the projects a "member"
 * document links them to. Archived projects are listed only with ?include_archived=true.
 *
 * Beyond OpenAI's fields a project has "environment" (a label: development, staging,
 * production or any custom string, default development) and "models" (the allowed-model
 * setting: a list, or null when the settings name none and the config's list, else every
 * routed model, applies; gateway/state.h). Names are 1..64 bytes, unique in the organization
 * (archived projects keep theirs; a clash is 409) and never start with "proj_", so a path
 * naming a project by id or name is never ambiguous.
 *
 * Every change is one transaction (admin.c) with one audit entry (project.created, .updated,
 * .archived; user.added, .updated, .deleted for memberships); every change of the settings is
 * also a numbered config version, the first one written at creation. Archiving is final: an
 * archived project's keys are refused (403) and it takes no more changes.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin_int.h"
#include "cache/cache.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "gateway/microbatch.h"

static void
append_project(struct tg_buf *b, const struct tg_project_rec *p)
{
    tg_buf_append_str(b, "{\"id\":");
    tg_json_quote(b, p->id);
    tg_buf_append_str(b, ",\"object\":\"organization.project\",\"name\":");
    tg_json_quote(b, p->name);
    tg_buf_append_str(b, ",\"environment\":");
    tg_json_quote(b, p->environment != NULL ? p->environment : "");
    tg_buf_append_str(b, ",\"models\":");
    json_t *settings = json_loads(p->settings != NULL ? p->settings : "{}", 0, NULL);
    json_t *models = json_object_get(settings, "models");
    if (json_is_array(models) && json_array_size(models) > 0) {
        tg_json_dump_buf(models, b);
    } else {
        tg_buf_append_str(b, "null");
    }
    /* Shown only once set, so the answer (and the audit's before/after) reflects a change. */
    json_t *cache = json_object_get(settings, "cache");
    if (json_is_object(cache)) {
        tg_buf_append_str(b, ",\"cache\":");
        tg_json_dump_buf(cache, b);
    }
    json_t *batching = json_object_get(settings, "embedding_batching");
    if (json_is_object(batching)) {
        tg_buf_append_str(b, ",\"embedding_batching\":");
        tg_json_dump_buf(batching, b);
    }
    json_t *logging = json_object_get(settings, "logging");
    if (json_is_object(logging)) {
        tg_buf_append_str(b, ",\"logging\":");
        tg_json_dump_buf(logging, b);
    }
    json_decref(settings);
    tg_buf_append_str(b, ",\"created_at\":");
    admin_append_time(b, p->created_ms);
    tg_buf_append_str(b, ",\"archived_at\":");
    admin_append_time(b, p->archived_ms);
    tg_buf_appendf(b, ",\"status\":\"%s\"}", p->archived_ms != 0 ? "archived" : "active");
}

/* The ids of the projects a user is a member of, as a JSON array of strings. */
struct membership {
    const char *user_id;
    json_t *project_ids;
};

static int
add_membership(const struct tg_doc *d, void *arg)
{
    struct membership *m = arg;
    json_t *data = json_loads(d->data, 0, NULL);
    const char *user = tg_json_str(data, "user_id");
    if (user != NULL && d->project_id != NULL && strcmp(user, m->user_id) == 0) {
        json_array_append_new(m->project_ids, json_string(d->project_id));
    }
    json_decref(data);
    return 0;
}

static bool
is_member(const struct membership *m, const char *project_id)
{
    size_t i;
    json_t *v;
    json_array_foreach(m->project_ids, i, v)
    {
        if (strcmp(json_string_value(v), project_id) == 0) {
            return true;
        }
    }
    return false;
}

struct project_scan {
    struct admin_job *j;
    struct admin_page page;
    const struct membership *only; /* readers: their projects; NULL for owners */
    bool include_archived;
    const char *want_id; /* get: one project */
    bool is_found;
};

static int
scan_project(const struct tg_project_rec *p, void *arg)
{
    struct project_scan *s = arg;
    if (s->want_id != NULL) {
        if (strcmp(p->id, s->want_id) == 0) {
            append_project(&s->j->out, p);
            s->is_found = true;
        }
        return 0;
    }
    if ((p->archived_ms != 0 && !s->include_archived) ||
        (s->only != NULL && !is_member(s->only, p->id))) {
        return 0;
    }
    struct tg_buf item;
    tg_buf_init(&item, 0);
    append_project(&item, p);
    bool more = admin_page_add(&s->page, p->id, item.data);
    tg_buf_deinit(&item);
    return more ? 0 : 1;
}

static void
list_projects(struct admin_job *j)
{
    struct membership m = {j->user_id, json_array()};
    struct project_scan s = {.j = j};
    const char *arch = admin_query(j, "include_archived");
    s.include_archived = arch != NULL && strcmp(arch, "true") == 0;
    int rc = 0;
    if (!j->is_owner) {
        /* A reader with no user behind the key belongs to no project. */
        s.only = &m;
        if (j->user_id != NULL) {
            rc = j->store->ops->doc_list(j->store, "member", j->state->org_id, NULL, add_membership,
                                         &m);
        }
    }
    if (rc == 0 && admin_page_begin(&s.page, j)) {
        rc = j->store->ops->projects_list(j->store, j->state->org_id, scan_project, &s);
        if (rc >= 0) {
            admin_page_end(&s.page);
        }
    }
    if (rc < 0) {
        admin_store_error(j, rc, "projects");
    }
    json_decref(m.project_ids);
}

static void
get_project(struct admin_job *j)
{
    struct project_scan s = {.j = j, .want_id = j->project->id};
    int rc = j->store->ops->projects_list(j->store, j->state->org_id, scan_project, &s);
    if (rc < 0 || !s.is_found) {
        admin_store_error(j, rc < 0 ? rc : TG_ENOTFOUND, "project");
    }
}

/* ---- project members ------------------------------------------------------------------- */

#define MEMBER_KIND "member"

/* A member document (kind "member", id "pm_<project_id>_<user_id>") as read. */
struct member_role {
    char role[16];
    int64_t added_ms;
    bool is_found;
};

static int
member_cb(const struct tg_doc *d, void *arg)
{
    struct member_role *mr = arg;
    json_t *data = json_loads(d->data != NULL ? d->data : "{}", 0, NULL);
    const char *role = tg_json_str(data, "role");
    snprintf(mr->role, sizeof(mr->role), "%s", role != NULL ? role : "member");
    mr->added_ms = tg_json_int(data, "added_at_ms", d->created_ms);
    mr->is_found = true;
    json_decref(data);
    return 0;
}

static void
member_id(char *out, size_t cap, const char *project_id, const char *user_id)
{
    snprintf(out, cap, "pm_%s_%s", project_id, user_id);
}

/* Reads user_id's membership of project_id: 0, TG_ENOTFOUND or a store error. */
static int
read_member(struct admin_job *j, const char *project_id, const char *user_id,
            struct member_role *mr)
{
    if (user_id == NULL) {
        return TG_ENOTFOUND;
    }
    char id[160];
    member_id(id, sizeof(id), project_id, user_id);
    return j->store->ops->doc_get(j->store, MEMBER_KIND, id, member_cb, mr);
}

/* An organization user as read from its document. */
struct user_info {
    char *id;
    char *name;
    char *email;
    bool is_found;
    const char *want_email; /* doc_list by e-mail */
};

static int
user_cb(const struct tg_doc *d, void *arg)
{
    struct user_info *u = arg;
    if (u->is_found) {
        return 0;
    }
    json_t *data = json_loads(d->data != NULL ? d->data : "{}", 0, NULL);
    const char *email = tg_json_str(data, "email");
    if (u->want_email == NULL || (email != NULL && strcasecmp(email, u->want_email) == 0)) {
        const char *name = tg_json_str(data, "name");
        u->id = tg_xstrdup(d->id);
        u->name = tg_xstrdup(name != NULL ? name : "");
        u->email = tg_xstrdup(email != NULL ? email : "");
        u->is_found = true;
    }
    json_decref(data);
    return 0;
}

static void
user_info_deinit(struct user_info *u)
{
    free(u->id);
    free(u->name);
    free(u->email);
}

static void
append_member(struct tg_buf *b, const struct user_info *u, const struct member_role *mr)
{
    tg_buf_append_str(b, "{\"object\":\"organization.project.user\",\"id\":");
    tg_json_quote(b, u->id);
    tg_buf_append_str(b, ",\"name\":");
    tg_json_quote(b, u->name);
    tg_buf_append_str(b, ",\"email\":");
    tg_json_quote(b, u->email);
    tg_buf_append_str(b, ",\"role\":");
    tg_json_quote(b, mr->role);
    tg_buf_append_str(b, ",\"added_at\":");
    admin_append_time(b, mr->added_ms);
    tg_buf_append_str(b, "}");
}

/* The member data text ({"user_id", "role", "added_at_ms"}: admin_int.h's shape). */
static char *
member_data(const char *user_id, const char *role, int64_t added_ms)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_buf_append_str(&b, "{\"user_id\":");
    tg_json_quote(&b, user_id);
    tg_buf_append_str(&b, ",\"role\":");
    tg_json_quote(&b, role);
    tg_buf_appendf(&b, ",\"added_at_ms\":%lld}", (long long)added_ms);
    return tg_buf_steal(&b, NULL);
}

static bool
read_role(struct admin_job *j, bool required, const char **role)
{
    if (!admin_body_string(j, "role", required, 16, role)) {
        return false;
    }
    if (*role != NULL && strcmp(*role, "owner") != 0 && strcmp(*role, "member") != 0) {
        admin_error(j, 400, "Invalid value for 'role': expected \"owner\" or \"member\".", "role",
                    "invalid_value");
        return false;
    }
    return true;
}

/* Finds the org user by id (or by e-mail when by_email); answers 404 when absent. */
static bool
find_user(struct admin_job *j, const char *id, const char *email, struct user_info *u)
{
    int rc;
    if (email != NULL) {
        u->want_email = email;
        rc = j->store->ops->doc_list(j->store, "user", j->state->org_id, NULL, user_cb, u);
        rc = rc == 0 && !u->is_found ? TG_ENOTFOUND : rc;
    } else {
        rc = j->store->ops->doc_get(j->store, "user", id, user_cb, u);
    }
    if (rc == TG_ENOTFOUND) {
        admin_error(j, 404, "No such user in the organization.", email ? "email" : "user_id",
                    "user_not_found");
        return false;
    }
    if (rc < 0) {
        admin_store_error(j, rc, "user");
        return false;
    }
    return true;
}

static void
add_member(struct admin_job *j)
{
    static const char *const allowed[] = {"user_id", "email", "role", NULL};
    const char *user_id = NULL;
    const char *email = NULL;
    const char *role = NULL;
    struct user_info u = {0};
    struct member_role mr = {0};
    if (!admin_body_only(j, allowed) || !admin_body_string(j, "user_id", false, 96, &user_id) ||
        !admin_body_string(j, "email", false, 256, &email) || !read_role(j, true, &role)) {
        return;
    }
    if ((user_id == NULL) == (email == NULL)) {
        admin_error(j, 400, "Name the user with exactly one of 'user_id' or 'email'.", "user_id",
                    "missing_required_parameter");
        return;
    }
    if (!find_user(j, user_id, email, &u)) {
        goto out;
    }
    int rc = read_member(j, j->project->id, u.id, &mr);
    if (rc == 0) {
        admin_error(j, 409, "The user is already a member of this project.", "user_id",
                    "already_a_member");
        goto out;
    }
    if (rc != TG_ENOTFOUND) {
        admin_store_error(j, rc, "project membership");
        goto out;
    }
    char id[160];
    member_id(id, sizeof(id), j->project->id, u.id);
    int64_t now = tg_clock_unix_ms();
    char *data = member_data(u.id, role, now);
    struct tg_doc d = {
        .kind = MEMBER_KIND,
        .id = id,
        .org_id = j->state->org_id,
        .project_id = j->project->id,
        .data = data,
        .created_ms = now,
        .updated_ms = now,
    };
    rc = j->store->ops->doc_put(j->store, &d);
    rc = rc < 0 ? rc : admin_audit(j, "user.added", j->project->id, u.id, NULL, data);
    free(data);
    if (rc < 0) {
        admin_store_error(j, rc, "project membership");
        goto out;
    }
    snprintf(mr.role, sizeof(mr.role), "%s", role);
    mr.added_ms = now;
    append_member(&j->out, &u, &mr);
out:
    user_info_deinit(&u);
}

/* The user and membership of the path; answers 404 unless both exist. */
static bool
load_member(struct admin_job *j, struct user_info *u, struct member_role *mr)
{
    const char *user_id = admin_param(j, "user_id");
    int rc = read_member(j, j->project->id, user_id, mr);
    if (rc == TG_ENOTFOUND) {
        admin_error(j, 404, "No such user in this project.", "user_id", "not_found");
        return false;
    }
    if (rc < 0) {
        admin_store_error(j, rc, "project membership");
        return false;
    }
    return find_user(j, user_id, NULL, u);
}

static void
get_member(struct admin_job *j)
{
    struct user_info u = {0};
    struct member_role mr = {0};
    if (load_member(j, &u, &mr)) {
        append_member(&j->out, &u, &mr);
    }
    user_info_deinit(&u);
}

static void
modify_member(struct admin_job *j)
{
    static const char *const allowed[] = {"role", NULL};
    const char *role = NULL;
    struct user_info u = {0};
    struct member_role mr = {0};
    if (!admin_body_only(j, allowed) || !read_role(j, true, &role) || !load_member(j, &u, &mr)) {
        goto out;
    }
    if (strcmp(mr.role, role) != 0) {
        char id[160];
        member_id(id, sizeof(id), j->project->id, u.id);
        char *before = member_data(u.id, mr.role, mr.added_ms);
        char *after = member_data(u.id, role, mr.added_ms);
        struct tg_doc d = {
            .kind = MEMBER_KIND,
            .id = id,
            .org_id = j->state->org_id,
            .project_id = j->project->id,
            .data = after,
            .created_ms = mr.added_ms,
            .updated_ms = tg_clock_unix_ms(),
        };
        int rc = j->store->ops->doc_put(j->store, &d);
        rc = rc < 0 ? rc : admin_audit(j, "user.updated", j->project->id, u.id, before, after);
        free(before);
        free(after);
        if (rc < 0) {
            admin_store_error(j, rc, "project membership");
            goto out;
        }
        snprintf(mr.role, sizeof(mr.role), "%s", role);
    }
    append_member(&j->out, &u, &mr);
out:
    user_info_deinit(&u);
}

static void
remove_member(struct admin_job *j)
{
    struct member_role mr = {0};
    const char *user_id = admin_param(j, "user_id");
    /* A membership whose user has left the org can still be removed: only it must exist. */
    int rc = read_member(j, j->project->id, user_id, &mr);
    if (rc == TG_ENOTFOUND) {
        admin_error(j, 404, "No such user in this project.", "user_id", "not_found");
        return;
    }
    char id[160];
    member_id(id, sizeof(id), j->project->id, user_id);
    char *before = member_data(user_id, mr.role, mr.added_ms);
    rc = rc < 0 ? rc : j->store->ops->doc_delete(j->store, MEMBER_KIND, id);
    rc = rc < 0 ? rc : admin_audit(j, "user.deleted", j->project->id, user_id, before, NULL);
    free(before);
    if (rc < 0) {
        admin_store_error(j, rc, "project membership");
        return;
    }
    tg_buf_append_str(&j->out, "{\"object\":\"organization.project.user.deleted\",\"id\":");
    tg_json_quote(&j->out, user_id);
    tg_buf_append_str(&j->out, ",\"deleted\":true}");
}

/* Members are collected first (listing callbacks may not read the store), then each joined
 * with its user; a membership whose user is gone is left out. */
struct member_list {
    json_t *docs; /* [{"user_id", "role", "added_at_ms"}] */
};

static int
collect_member(const struct tg_doc *d, void *arg)
{
    struct member_list *ml = arg;
    json_t *data = json_loads(d->data != NULL ? d->data : "{}", 0, NULL);
    if (json_is_object(data) && tg_json_str(data, "user_id") != NULL) {
        json_array_append(ml->docs, data);
    }
    json_decref(data);
    return 0;
}

static void
list_members(struct admin_job *j)
{
    struct admin_page pg;
    struct member_list ml = {json_array()};
    int rc = j->store->ops->doc_list(j->store, MEMBER_KIND, j->state->org_id, j->project->id,
                                     collect_member, &ml);
    if (rc < 0) {
        admin_store_error(j, rc, "project members");
    } else if (admin_page_begin(&pg, j)) {
        struct tg_buf item;
        tg_buf_init(&item, 0);
        size_t i;
        json_t *m;
        json_array_foreach(ml.docs, i, m)
        {
            struct user_info u = {0};
            rc = j->store->ops->doc_get(j->store, "user", tg_json_str(m, "user_id"), user_cb, &u);
            if (rc < 0 && rc != TG_ENOTFOUND) {
                admin_store_error(j, rc, "users");
                user_info_deinit(&u);
                break;
            }
            bool is_more = true;
            if (u.is_found) {
                struct member_role mr = {.added_ms = tg_json_int(m, "added_at_ms", 0)};
                const char *role = tg_json_str(m, "role");
                snprintf(mr.role, sizeof(mr.role), "%s", role != NULL ? role : "member");
                tg_buf_reset(&item);
                append_member(&item, &u, &mr);
                is_more = admin_page_add(&pg, u.id, item.data);
            }
            user_info_deinit(&u);
            rc = 0;
            if (!is_more) {
                break;
            }
        }
        tg_buf_deinit(&item);
        if (rc >= 0) {
            admin_page_end(&pg);
        }
    }
    json_decref(ml.docs);
}

/* ---- writing: create, modify, archive ------------------------------------------------- */

#define PROJECT_NAME_MAX 64
#define PROJECT_ENV_MAX 64
#define PROJECT_MODEL_MAX 95 /* the ledger keeps 95 bytes of a model name */
#define PROJECT_MODELS_MAX 256

/* A stored project, copied out of the listing callback (which must not call the store). */
struct project_copy {
    const char *want_id;   /* find by id, or */
    const char *want_name; /* report whether another project has this name */
    const char *except_id; /* ... other than this one */
    bool is_found;
    bool is_name_taken;
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
    if (c->want_name != NULL && strcmp(p->name, c->want_name) == 0 &&
        (c->except_id == NULL || strcmp(p->id, c->except_id) != 0)) {
        c->is_name_taken = true;
    }
    if (c->want_id != NULL && strcmp(p->id, c->want_id) == 0) {
        c->is_found = true;
        c->id = tg_xstrdup(p->id);
        c->org_id = tg_xstrdup(p->org_id);
        c->name = tg_xstrdup(p->name);
        c->environment = tg_xstrdup(p->environment != NULL ? p->environment : "");
        c->settings = tg_xstrdup(p->settings != NULL ? p->settings : "{}");
        c->created_ms = p->created_ms;
        c->archived_ms = p->archived_ms;
    }
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

static struct tg_project_rec
copy_rec(const struct project_copy *c)
{
    return (struct tg_project_rec){
        .id = c->id,
        .org_id = c->org_id,
        .name = c->name,
        .environment = c->environment,
        .created_ms = c->created_ms,
        .archived_ms = c->archived_ms,
        .settings = c->settings,
    };
}

/* The object text of a project (for the answer and the audit log). */
static char *
project_json(const struct tg_project_rec *p)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    append_project(&b, p);
    return tg_buf_steal(&b, NULL);
}

/*
 * Reads "models" from the body. Absent: *is_given false. null or []: the setting is cleared
 * (*models NULL). Otherwise a list of 1..PROJECT_MODELS_MAX distinct non-empty strings; any
 * other value answers 400 naming "models". The caller owns *models.
 */
static bool
read_models(struct admin_job *j, bool *is_given, json_t **models)
{
    *is_given = false;
    *models = NULL;
    json_t *v = j->body != NULL ? json_object_get(j->body, "models") : NULL;
    if (v == NULL) {
        return true;
    }
    *is_given = true;
    if (json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0)) {
        return true;
    }
    const char *why = NULL;
    if (!json_is_array(v)) {
        why = "Invalid type for 'models': expected a list of model names or null.";
    } else if (json_array_size(v) > PROJECT_MODELS_MAX) {
        why = "'models' names too many models (at most 256).";
    }
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m)
    {
        if (why != NULL) {
            break;
        }
        if (!json_is_string(m)) {
            why = "Invalid type for 'models': every entry must be a model name (a string).";
        } else if (json_string_length(m) == 0 || json_string_length(m) > PROJECT_MODEL_MAX) {
            why = "Every entry of 'models' must be 1 to 95 characters long.";
        } else {
            for (size_t k = 0; k < i; k++) {
                if (strcmp(json_string_value(json_array_get(v, k)), json_string_value(m)) == 0) {
                    why = "'models' names the same model twice.";
                }
            }
            if (why == NULL && tg_config_route(j->state->config, json_string_value(m)) == NULL) {
                why = "'models' names a model the gateway does not route (see models: in the "
                      "config).";
            }
        }
    }
    if (why != NULL) {
        admin_error(j, 400, why, "models", "invalid_value");
        return false;
    }
    *models = json_incref(v);
    return true;
}

/* The settings text with "models" set to models (or removed when NULL), other members kept.
 * Keys are sorted so that equal settings have equal texts (history compares them). */
static char *
settings_with_models(const char *settings, json_t *models)
{
    json_t *root = json_loads(settings != NULL ? settings : "{}", 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = json_object();
    }
    if (models != NULL) {
        json_object_set(root, "models", models);
    } else {
        json_object_del(root, "models");
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    return text != NULL ? text : tg_xstrdup("{}");
}

/* The settings text with "cache" set to the body's cache settings (validated: 400 naming
 * "cache" otherwise). Returns the new text (caller frees), or NULL after answering. */
static char *
settings_with_cache(struct admin_job *j, const char *settings, json_t *cache)
{
    struct tg_cache_settings cs;
    char why[160];
    if (tg_cache_settings_parse(cache, &cs, why, sizeof(why)) != 0) {
        admin_error(j, 400, why, "cache", "invalid_value");
        return NULL;
    }
    json_t *root = json_loads(settings != NULL ? settings : "{}", 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = json_object();
    }
    json_object_set(root, "cache", cache);
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    return text != NULL ? text : tg_xstrdup("{}");
}

/* The settings text with "embedding_batching" set to the body's (validated like the gateway
 * reads it: 400 naming "embedding_batching" otherwise). Returns the new text (caller frees),
 * or NULL after answering. */
static char *
settings_with_batching(struct admin_job *j, const char *settings, json_t *batching)
{
    struct tg_mb_settings mb;
    char why[160];
    if (tg_mb_settings_parse(batching, &mb, why, sizeof(why)) != 0) {
        admin_error(j, 400, why, "embedding_batching", "invalid_value");
        return NULL;
    }
    json_t *root = json_loads(settings != NULL ? settings : "{}", 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = json_object();
    }
    json_object_set(root, "embedding_batching", batching);
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    return text != NULL ? text : tg_xstrdup("{}");
}

/* The settings text with "logging" set to the body's {"bodies": true|false} (the access log's
 * body logging, gateway/access_log.h; 400 naming "logging" otherwise). Returns the new text
 * (caller frees), or NULL after answering. */
static char *
settings_with_logging(struct admin_job *j, const char *settings, json_t *logging)
{
    json_t *bodies = json_object_get(logging, "bodies");
    if (!json_is_object(logging) || json_object_size(logging) != 1 || !json_is_boolean(bodies)) {
        admin_error(j, 400, "logging: expected {\"bodies\": true or false}.", "logging",
                    "invalid_value");
        return NULL;
    }
    json_t *root = json_loads(settings != NULL ? settings : "{}", 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = json_object();
    }
    json_object_set(root, "logging", logging);
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    return text != NULL ? text : tg_xstrdup("{}");
}

/* The project's name and environment from the body (either may be absent when !required). */
static bool
read_names(struct admin_job *j, bool required, const char **name, const char **environment)
{
    if (!admin_body_string(j, "name", required, PROJECT_NAME_MAX, name) ||
        !admin_body_string(j, "environment", false, PROJECT_ENV_MAX, environment)) {
        return false;
    }
    /* A project is addressed by id or name in paths, so a name must not look like an id. */
    if (*name != NULL && strncmp(*name, "proj_", 5) == 0) {
        admin_error(j, 400, "Project names may not start with 'proj_' (ids do).", "name",
                    "invalid_value");
        return false;
    }
    return true;
}

static bool
name_is_free(struct admin_job *j, const char *name, const char *except_id)
{
    struct project_copy c = {.want_name = name, .except_id = except_id};
    int rc = j->store->ops->projects_list(j->store, j->state->org_id, copy_project, &c);
    if (rc < 0) {
        admin_store_error(j, rc, "projects");
        return false;
    }
    if (c.is_name_taken) {
        admin_error(j, 409, "A project with this name already exists in the organization.", "name",
                    "name_taken");
        return false;
    }
    return true;
}

static void
create_project(struct admin_job *j)
{
    static const char *const allowed[] = {"name", "environment", "models", NULL};
    const char *name = NULL;
    const char *environment = NULL;
    bool has_models = false;
    json_t *models = NULL;
    if (!admin_body_only(j, allowed) || !read_names(j, true, &name, &environment) ||
        !read_models(j, &has_models, &models) || !name_is_free(j, name, NULL)) {
        json_decref(models);
        return;
    }
    char id[48];
    tg_id_new(id, sizeof(id), "proj_", 24);
    char *settings = settings_with_models("{}", models);
    json_decref(models);
    struct tg_project_rec rec = {
        .id = id,
        .org_id = j->state->org_id,
        .name = name,
        .environment = environment != NULL ? environment : "development",
        .created_ms = tg_clock_unix_ms(),
        .settings = settings,
    };
    char *after = project_json(&rec);
    int rc = j->store->ops->project_insert(j->store, &rec);
    /* Version 1 of the project's settings, so history and rollback start from creation. */
    rc = rc < 0 ? rc : admin_version(j, id, settings, "project.created");
    rc = rc < 0 ? rc : admin_audit(j, "project.created", id, id, NULL, after);
    if (rc < 0) {
        admin_store_error(j, rc, "project");
    } else {
        tg_buf_append_str(&j->out, after);
        j->reload = true;
        tg_log_info("admin: project %s created by %s", id, j->key->id);
    }
    free(after);
    free(settings);
}

/* Org owners and the project's owners may modify it. */
static bool
may_modify(struct admin_job *j)
{
    if (j->is_owner) {
        return true;
    }
    struct member_role mr = {0};
    int rc = read_member(j, j->project->id, j->user_id, &mr);
    if (rc < 0 && rc != TG_ENOTFOUND) {
        admin_store_error(j, rc, "project membership");
        return false;
    }
    if (rc == TG_ENOTFOUND || strcmp(mr.role, "owner") != 0) {
        admin_error(j, 403, "Only organization owners and owners of this project may change it.",
                    NULL, "insufficient_role");
        return false;
    }
    return true;
}

/* Reads the project of the path from the store into c; answers 404 when it is gone. */
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

static void
modify_project(struct admin_job *j)
{
    static const char *const allowed[] = {
        "name", "environment", "models", "cache", "embedding_batching", "logging", NULL};
    const char *name = NULL;
    const char *environment = NULL;
    bool has_models = false;
    json_t *models = NULL;
    struct project_copy c = {0};
    char *before = NULL;
    char *after = NULL;
    char *settings = NULL;
    if (!may_modify(j) || !admin_body_only(j, allowed) ||
        !read_names(j, false, &name, &environment) || !read_models(j, &has_models, &models) ||
        !load_project(j, &c)) {
        goto out;
    }
    if (c.archived_ms != 0) {
        admin_error(j, 400, "The project is archived and can no longer be changed.", NULL,
                    "project_archived");
        goto out;
    }
    if (name != NULL && !name_is_free(j, name, c.id)) {
        goto out;
    }
    struct tg_project_rec rec = copy_rec(&c);
    before = project_json(&rec);
    rec.name = name != NULL ? name : c.name;
    rec.environment = environment != NULL ? environment : c.environment;
    settings = has_models ? settings_with_models(c.settings, models) : tg_xstrdup(c.settings);
    json_t *cache = j->body != NULL ? json_object_get(j->body, "cache") : NULL;
    if (cache != NULL) {
        char *with_cache = settings_with_cache(j, settings, cache);
        if (with_cache == NULL) {
            goto out;
        }
        free(settings);
        settings = with_cache;
    }
    json_t *batching = j->body != NULL ? json_object_get(j->body, "embedding_batching") : NULL;
    if (batching != NULL) {
        char *with_batching = settings_with_batching(j, settings, batching);
        if (with_batching == NULL) {
            goto out;
        }
        free(settings);
        settings = with_batching;
    }
    json_t *logging = j->body != NULL ? json_object_get(j->body, "logging") : NULL;
    if (logging != NULL) {
        char *with_logging = settings_with_logging(j, settings, logging);
        if (with_logging == NULL) {
            goto out;
        }
        free(settings);
        settings = with_logging;
    }
    rec.settings = settings;
    after = project_json(&rec);
    if (strcmp(before, after) == 0) {
        tg_buf_append_str(&j->out, after); /* nothing to change: no version, no entry */
        goto out;
    }
    int rc = j->store->ops->project_update(j->store, &rec);
    if (rc == 0 && strcmp(settings, c.settings) != 0) {
        rc = admin_version(j, c.id, settings, "project.updated");
    }
    rc = rc < 0 ? rc : admin_audit(j, "project.updated", c.id, c.id, before, after);
    if (rc < 0) {
        admin_store_error(j, rc, "project");
        goto out;
    }
    tg_buf_append_str(&j->out, after);
    j->reload = true;
    tg_log_info("admin: project %s updated by %s", c.id, j->key->id);
out:
    json_decref(models);
    free(before);
    free(after);
    free(settings);
    project_copy_deinit(&c);
}

static void
archive_project(struct admin_job *j)
{
    static const char *const allowed[] = {NULL};
    struct project_copy c = {0};
    if (!admin_body_only(j, allowed) || !load_project(j, &c)) {
        project_copy_deinit(&c);
        return;
    }
    struct tg_project_rec rec = copy_rec(&c);
    char *before = project_json(&rec);
    if (c.archived_ms != 0) {
        /* Archiving twice is not an error and changes nothing (no second entry). */
        tg_buf_append_str(&j->out, before);
        free(before);
        project_copy_deinit(&c);
        return;
    }
    rec.archived_ms = tg_clock_unix_ms();
    char *after = project_json(&rec);
    int rc = j->store->ops->project_update(j->store, &rec);
    rc = rc < 0 ? rc : admin_audit(j, "project.archived", c.id, c.id, before, after);
    if (rc < 0) {
        admin_store_error(j, rc, "project");
    } else {
        tg_buf_append_str(&j->out, after);
        j->reload = true; /* the project's keys stop working with the next request */
        tg_log_info("admin: project %s archived by %s", c.id, j->key->id);
    }
    free(before);
    free(after);
    project_copy_deinit(&c);
}

const struct admin_route tg_admin_routes_projects[] = {
    {TG_HTTP_GET, "projects", ADMIN_ORG_READ,
     "List projects (readers: the projects they are a member of)", list_projects},
    {TG_HTTP_POST, "projects", ADMIN_OWNER,
     "Create a project {name, environment?, models?} (extension fields)", create_project},
    {TG_HTTP_GET, "projects/{project_id}", ADMIN_PROJECT, "Retrieve a project", get_project},
    {TG_HTTP_POST, "projects/{project_id}", ADMIN_PROJECT,
     "Modify a project's name, environment, models (org owners and project owners)",
     modify_project},
    {TG_HTTP_POST, "projects/{project_id}/archive", ADMIN_OWNER, "Archive a project",
     archive_project},
    {TG_HTTP_GET, "projects/{project_id}/users", ADMIN_PROJECT, "List a project's members",
     list_members},
    {TG_HTTP_POST, "projects/{project_id}/users", ADMIN_OWNER,
     "Add an organization user to a project {user_id | email, role}", add_member},
    {TG_HTTP_GET, "projects/{project_id}/users/{user_id}", ADMIN_PROJECT,
     "Retrieve a project member", get_member},
    {TG_HTTP_POST, "projects/{project_id}/users/{user_id}", ADMIN_OWNER,
     "Change a project member's role {role}", modify_member},
    {TG_HTTP_DELETE, "projects/{project_id}/users/{user_id}", ADMIN_OWNER,
     "Remove a user from a project", remove_member},
    {0, NULL, 0, NULL, NULL},
};
