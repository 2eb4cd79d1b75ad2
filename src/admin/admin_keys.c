/*
 * admin_keys.c: a project's API keys (OpenAI's organization.project.api_key), plus creation,
 * which OpenAI leaves to its dashboard: POST .../api_keys {"name"} returns the value once.
 *
 * A key belongs to the user whose admin key made it (owner_user_id); it keeps working when
 * that user leaves the organization (README). Creation and deletion each record one audit
 * entry (api_key.created, api_key.deleted) and rebuild the snapshot, so a new key works and
 * a revoked key fails on the next request on every worker.
 */
#include <string.h>

#include "admin/admin_int.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"

#define KEY_NAME_MAX 64

static void
append_key(struct tg_buf *b, const struct tg_key_rec *k, const char *value)
{
    tg_buf_append_str(b, "{\"object\":\"organization.project.api_key\",\"id\":");
    tg_json_quote(b, k->id);
    tg_buf_append_str(b, ",\"name\":");
    tg_json_quote(b, k->name);
    tg_buf_append_str(b, ",\"redacted_value\":");
    tg_json_quote(b, k->redacted);
    if (value != NULL) {
        tg_buf_append_str(b, ",\"value\":");
        tg_json_quote(b, value);
    }
    tg_buf_append_str(b, ",\"created_at\":");
    admin_append_time(b, k->created_ms);
    tg_buf_append_str(b, ",\"last_used_at\":");
    admin_append_time(b, k->last_used_ms);
    tg_buf_appendf(b, ",\"status\":\"%s\",\"project_id\":", k->revoked_ms ? "revoked" : "active");
    tg_json_quote(b, k->project_id ? k->project_id : "");
    tg_buf_append_str(b, ",\"owner\":");
    const char *owner = k->owner_user_id;
    if (owner == NULL) {
        tg_buf_append_str(b, "null");
    } else {
        bool is_svc = strncmp(owner, "svc_acct_", 9) == 0;
        tg_buf_appendf(b, "{\"type\":\"%s\",\"%s\":{\"id\":", is_svc ? "service_account" : "user",
                       is_svc ? "service_account" : "user");
        tg_json_quote(b, owner);
        tg_buf_append_str(b, "}}");
    }
    tg_buf_append_str(b, "}");
}

static void
create_key(struct admin_job *j)
{
    static const char *const allowed[] = {"name", NULL};
    const char *name;
    if (!admin_body_only(j, allowed) || !admin_body_string(j, "name", true, KEY_NAME_MAX, &name)) {
        return;
    }
    if (j->project->is_archived) {
        admin_error(j, 400, "The project is archived: it cannot get new keys.", NULL,
                    "project_archived");
        return;
    }
    const struct tg_state_env *env = tg_state_env_get();
    char value[TG_KEY_LEN + 1];
    char redacted[TG_KEY_REDACTED_CAP];
    char id[40];
    tg_key_generate(value);
    tg_key_redact(value, redacted);
    tg_id_new(id, sizeof(id), "key_", 24);
    struct tg_key_rec rec = {
        .id = id,
        .org_id = j->project->org_id,
        .project_id = j->project->id,
        .name = name,
        .redacted = redacted,
        .kind = TG_KEY_PROJECT,
        .role = "member",
        .owner_user_id = j->user_id,
        .created_ms = tg_clock_unix_ms(),
    };
    tg_key_hash(env->pepper, env->pepper_len, value, rec.hash);
    int rc = j->store->ops->key_insert(j->store, &rec);
    struct tg_buf after;
    tg_buf_init(&after, 0);
    append_key(&after, &rec, NULL);
    rc = rc < 0 ? rc : admin_audit(j, "api_key.created", j->project->id, id, NULL, after.data);
    tg_buf_deinit(&after);
    if (rc < 0) {
        admin_store_error(j, rc, "API key");
    } else {
        append_key(&j->out, &rec, value);
        j->reload = true;
        tg_log_info("admin: key %s created for project %s by %s", id, j->project->name, j->key->id);
    }
    memset(value, 0, sizeof(value));
}

/* The project keys of the path's project. */
static bool
keep_project_key(const struct admin_job *j, const struct tg_key_rec *k)
{
    return k->kind == TG_KEY_PROJECT && k->project_id != NULL &&
           strcmp(k->project_id, j->project->id) == 0;
}

static void
list_keys(struct admin_job *j)
{
    struct admin_key_scan s = {.j = j, .keep = keep_project_key, .append = append_key};
    admin_keys_list(&s, "API keys");
}

/* Finds the key of the path in this project; false after answering 404 or 500. */
static bool
find_key(struct admin_job *j, struct admin_key_scan *s)
{
    *s = (struct admin_key_scan){.j = j, .keep = keep_project_key, .append = append_key};
    return admin_keys_find(s, "API key in this project");
}

static void
get_key(struct admin_job *j)
{
    struct admin_key_scan s;
    if (find_key(j, &s)) {
        tg_buf_append(&j->out, s.one.data, s.one.len);
    }
    tg_buf_deinit(&s.one);
}

static void
delete_key(struct admin_job *j)
{
    struct admin_key_scan s;
    if (!find_key(j, &s)) {
        tg_buf_deinit(&s.one);
        return;
    }
    const char *id = s.want_id;
    int rc = 0;
    /* Deleting a revoked key again is not an error, and records nothing new. */
    if (s.is_active) {
        rc = j->store->ops->key_revoke(j->store, id, tg_clock_unix_ms());
        rc = rc < 0 ? rc : admin_audit(j, "api_key.deleted", j->project->id, id, s.one.data, NULL);
    }
    tg_buf_deinit(&s.one);
    if (rc < 0) {
        admin_store_error(j, rc, "API key");
        return;
    }
    j->reload = s.is_active;
    tg_buf_append_str(&j->out, "{\"object\":\"organization.project.api_key.deleted\",\"id\":");
    tg_json_quote(&j->out, id);
    tg_buf_append_str(&j->out, ",\"deleted\":true}");
    tg_log_info("admin: key %s revoked by %s", id, j->key->id);
}

const struct admin_route tg_admin_routes_keys[] = {
    {TG_HTTP_GET, "projects/{project_id}/api_keys", ADMIN_PROJECT, "List a project's API keys",
     list_keys},
    {TG_HTTP_POST, "projects/{project_id}/api_keys", ADMIN_PROJECT,
     "Create a project API key (the value is shown once)", create_key},
    {TG_HTTP_GET, "projects/{project_id}/api_keys/{key_id}", ADMIN_PROJECT,
     "Retrieve a project API key", get_key},
    {TG_HTTP_DELETE, "projects/{project_id}/api_keys/{key_id}", ADMIN_PROJECT,
     "Revoke a project API key", delete_key},
    {0, NULL, 0, NULL, NULL},
};
