/*
 * admin_projects.c: the organization's projects (OpenAI's organization.project).
 *
 * Projects are read from the store rather than the snapshot, so creation and archive times
 * are the stored ones. Owners see every project; readers see the projects a "member"
 * document links them to. Archived projects are listed only with ?include_archived=true.
 */
#include <string.h>

#include "admin/admin_int.h"
#include "core/err.h"
#include "core/json.h"

static void
append_project(struct tg_buf *b, const struct tg_project_rec *p)
{
    tg_buf_append_str(b, "{\"id\":");
    tg_json_quote(b, p->id);
    tg_buf_append_str(b, ",\"object\":\"organization.project\",\"name\":");
    tg_json_quote(b, p->name);
    tg_buf_append_str(b, ",\"environment\":");
    tg_json_quote(b, p->environment != NULL ? p->environment : "");
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

const struct admin_route tg_admin_routes_projects[] = {
    {TG_HTTP_GET, "projects", ADMIN_ORG_READ,
     "List projects (readers: the projects they are a member of)", list_projects},
    {TG_HTTP_GET, "projects/{project_id}", ADMIN_PROJECT, "Retrieve a project", get_project},
    {0, NULL, 0, NULL, NULL},
};
