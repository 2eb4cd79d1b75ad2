/*
 * admin_service_accounts.c: a project's service accounts and their API keys (admin_int.h).
 *
 * A service account is a "service_account" document scoped to one project, {"name", "role"}.
 * It is nobody's: keys made for it carry the account's id as owner_user_id, so they keep
 * working when the person who made them leaves the organization. Deleting the account revokes
 * every key it owns in the same transaction, so no key outlives its account.
 *
 * Names are 1..64 bytes and unique within a project (409 otherwise), so that an export can
 * name accounts by name. Project members and owners may manage them (ADMIN_PROJECT); an
 * archived project takes no new accounts or keys.
 *
 * Every handler runs on the thread pool inside the route's transaction (admin.c): an answer of
 * 400 or more rolls back everything it wrote, audit entries included.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

#define SVC_KIND "service_account"
#define SVC_NAME_MAX 64
#define SVC_KEY_NAME_MAX 64
#define SVC_MAX_KEYS 256 /* keys one account may own; bounds the revoke list on delete */

/* One service account as read from its document. */
struct svc {
    char id[64];
    char project_id[64];
    char name[SVC_NAME_MAX + 1];
    char role[16];
    int64_t created_ms;
    bool is_found;
};

static void
svc_from_doc(struct svc *s, const struct tg_doc *d)
{
    snprintf(s->id, sizeof(s->id), "%s", d->id);
    snprintf(s->project_id, sizeof(s->project_id), "%s", d->project_id ? d->project_id : "");
    json_t *data = json_loads(d->data ? d->data : "{}", 0, NULL);
    const char *name = tg_json_str(data, "name");
    const char *role = tg_json_str(data, "role");
    snprintf(s->name, sizeof(s->name), "%s", name ? name : "");
    snprintf(s->role, sizeof(s->role), "%s", role ? role : "member");
    json_decref(data);
    s->created_ms = d->created_ms;
    s->is_found = true;
}

static int
get_cb(const struct tg_doc *d, void *arg)
{
    svc_from_doc(arg, d);
    return 0;
}

/* Reads the account named in the path; answers 404 (and returns false) when it does not
 * exist in this project: another project's account is as unknown as a made-up id. */
static bool
load_svc(struct admin_job *j, struct svc *s)
{
    const char *id = admin_param(j, "service_account_id");
    memset(s, 0, sizeof(*s));
    int rc = id ? j->store->ops->doc_get(j->store, SVC_KIND, id, get_cb, s) : TG_ENOTFOUND;
    if (rc == TG_ENOTFOUND || (rc == 0 && strcmp(s->project_id, j->project->id) != 0)) {
        admin_error(j, 404, "No such service account in this project.", "service_account_id",
                    "not_found");
        return false;
    }
    if (rc < 0) {
        admin_store_error(j, rc, "service account");
        return false;
    }
    return true;
}

static void
append_svc(struct tg_buf *b, const struct svc *s)
{
    tg_buf_append_str(b, "{\"object\":\"organization.project.service_account\",\"id\":");
    tg_json_quote(b, s->id);
    tg_buf_append_str(b, ",\"name\":");
    tg_json_quote(b, s->name);
    tg_buf_append_str(b, ",\"role\":");
    tg_json_quote(b, s->role);
    tg_buf_append_str(b, ",\"created_at\":");
    admin_append_time(b, s->created_ms);
}

/* The document's data: the shape admin_int.h fixes for service accounts. */
static char *
svc_data(const char *name, const char *role)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_buf_append_str(&b, "{\"name\":");
    tg_json_quote(&b, name);
    tg_buf_append_str(&b, ",\"role\":");
    tg_json_quote(&b, role);
    tg_buf_append_str(&b, "}");
    return tg_buf_steal(&b, NULL);
}

/* ---- names --------------------------------------------------------------------------- */

struct name_scan {
    const char *name;
    bool is_taken;
};

static int
name_cb(const struct tg_doc *d, void *arg)
{
    struct name_scan *ns = arg;
    json_t *data = json_loads(d->data ? d->data : "{}", 0, NULL);
    const char *name = tg_json_str(data, "name");
    if (name != NULL && strcmp(name, ns->name) == 0) {
        ns->is_taken = true;
    }
    json_decref(data);
    return 0;
}

/* ---- keys ---------------------------------------------------------------------------- */

/*
 * Makes a project key owned by the account and appends its OpenAI object (with the only copy
 * of the value) to out. The secret is wiped from the stack before returning.
 */
static int
make_key(struct admin_job *j, const struct svc *s, const char *name, struct tg_buf *out,
         char *key_id, size_t key_id_cap)
{
    const struct tg_state_env *env = tg_state_env_get();
    char value[TG_KEY_LEN + 1];
    char redacted[TG_KEY_REDACTED_CAP];
    int rc = tg_key_generate(value);
    if (rc < 0) {
        return rc;
    }
    tg_key_redact(value, redacted);
    tg_id_new(key_id, key_id_cap, "key_", 24);
    struct tg_key_rec rec = {
        .id = key_id,
        .org_id = j->project->org_id,
        .project_id = j->project->id,
        .name = name,
        .redacted = redacted,
        .kind = TG_KEY_PROJECT,
        .role = "member",
        .owner_user_id = s->id,
        .created_ms = tg_clock_unix_ms(),
    };
    tg_key_hash(env->pepper, env->pepper_len, value, rec.hash);
    rc = j->store->ops->key_insert(j->store, &rec);
    if (rc == 0) {
        tg_buf_append_str(out,
                          "{\"object\":\"organization.project.service_account.api_key\",\"id\":");
        tg_json_quote(out, key_id);
        tg_buf_append_str(out, ",\"name\":");
        tg_json_quote(out, name);
        tg_buf_append_str(out, ",\"value\":");
        tg_json_quote(out, value);
        tg_buf_append_str(out, ",\"redacted_value\":");
        tg_json_quote(out, redacted);
        tg_buf_append_str(out, ",\"created_at\":");
        admin_append_time(out, rec.created_ms);
        tg_buf_append_str(out, "}");
    }
    memset(value, 0, sizeof(value));
    return rc;
}

/* Audit text of a key: never the value, only what identifies it. */
static char *
key_audit(const char *key_id, const char *name, const struct svc *s)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_buf_append_str(&b, "{\"id\":");
    tg_json_quote(&b, key_id);
    tg_buf_append_str(&b, ",\"name\":");
    tg_json_quote(&b, name);
    tg_buf_append_str(&b, ",\"owner\":{\"type\":\"service_account\",\"id\":");
    tg_json_quote(&b, s->id);
    tg_buf_append_str(&b, "}}");
    return tg_buf_steal(&b, NULL);
}

/* ---- handlers ------------------------------------------------------------------------ */

static bool
project_is_open(struct admin_job *j)
{
    if (j->project->is_archived) {
        admin_error(j, 400, "The project is archived; it takes no new service accounts or keys.",
                    "project_id", "project_archived");
        return false;
    }
    return true;
}

static void
create_svc(struct admin_job *j)
{
    static const char *const allowed[] = {"name", "create_service_account_only", NULL};
    const char *name = NULL;
    if (!admin_body_only(j, allowed) || !admin_body_string(j, "name", true, SVC_NAME_MAX, &name) ||
        !project_is_open(j)) {
        return;
    }
    json_t *only = j->body ? json_object_get(j->body, "create_service_account_only") : NULL;
    if (only != NULL && !json_is_boolean(only)) {
        admin_error(j, 400, "Invalid type for 'create_service_account_only': expected a boolean.",
                    "create_service_account_only", "invalid_type");
        return;
    }
    struct name_scan ns = {.name = name};
    int rc = j->store->ops->doc_list(j->store, SVC_KIND, j->project->org_id, j->project->id,
                                     name_cb, &ns);
    if (rc < 0) {
        admin_store_error(j, rc, "service accounts");
        return;
    }
    if (ns.is_taken) {
        admin_error(j, 409, "A service account with this name already exists in the project.",
                    "name", "name_taken");
        return;
    }
    struct svc s = {.created_ms = tg_clock_unix_ms(), .is_found = true};
    tg_id_new(s.id, sizeof(s.id), "svc_acct_", 24);
    snprintf(s.project_id, sizeof(s.project_id), "%s", j->project->id);
    snprintf(s.name, sizeof(s.name), "%s", name);
    snprintf(s.role, sizeof(s.role), "member");
    char *data = svc_data(s.name, s.role);
    struct tg_doc d = {
        .kind = SVC_KIND,
        .id = s.id,
        .org_id = j->project->org_id,
        .project_id = j->project->id,
        .data = data,
        .created_ms = s.created_ms,
        .updated_ms = s.created_ms,
    };
    rc = j->store->ops->doc_put(j->store, &d);
    rc = rc < 0 ? rc : admin_audit(j, "service_account.created", j->project->id, s.id, NULL, data);
    free(data);
    if (rc < 0) {
        admin_store_error(j, rc, "service account");
        return;
    }
    struct tg_buf *out = &j->out;
    append_svc(out, &s);
    tg_buf_append_str(out, ",\"api_key\":");
    if (only != NULL && json_is_true(only)) {
        tg_buf_append_str(out, "null}");
        return;
    }
    char key_id[48];
    rc = make_key(j, &s, "Secret Key", out, key_id, sizeof(key_id));
    char *after = rc < 0 ? NULL : key_audit(key_id, "Secret Key", &s);
    rc = rc < 0 ? rc : admin_audit(j, "api_key.created", j->project->id, key_id, NULL, after);
    free(after);
    if (rc < 0) {
        admin_store_error(j, rc, "service account key");
        return;
    }
    tg_buf_append_str(out, "}");
    j->reload = true;
    tg_log_info("admin: service account %s created in project %s by %s", s.id, j->project->name,
                j->key->id);
}

struct list_scan {
    struct admin_page *pg;
    struct tg_buf item;
};

static int
list_cb(const struct tg_doc *d, void *arg)
{
    struct list_scan *ls = arg;
    struct svc s;
    svc_from_doc(&s, d);
    tg_buf_reset(&ls->item);
    append_svc(&ls->item, &s);
    tg_buf_append_str(&ls->item, "}");
    /* A full page stops the walk (a positive return is not an error). */
    return admin_page_add(ls->pg, s.id, ls->item.data) ? 0 : 1;
}

static void
list_svcs(struct admin_job *j)
{
    struct admin_page pg;
    if (!admin_page_begin(&pg, j)) {
        return;
    }
    struct list_scan ls = {.pg = &pg};
    tg_buf_init(&ls.item, 0);
    int rc = j->store->ops->doc_list(j->store, SVC_KIND, j->project->org_id, j->project->id,
                                     list_cb, &ls);
    tg_buf_deinit(&ls.item);
    if (rc < 0) {
        admin_store_error(j, rc, "service accounts");
        return;
    }
    admin_page_end(&pg);
}

static void
get_svc(struct admin_job *j)
{
    struct svc s;
    if (!load_svc(j, &s)) {
        return;
    }
    append_svc(&j->out, &s);
    tg_buf_append_str(&j->out, "}");
}

static void
modify_svc(struct admin_job *j)
{
    static const char *const allowed[] = {"name", NULL};
    const char *name = NULL;
    struct svc s;
    if (!admin_body_only(j, allowed) || !admin_body_string(j, "name", false, SVC_NAME_MAX, &name) ||
        !load_svc(j, &s)) {
        return;
    }
    if (name != NULL && strcmp(name, s.name) != 0) {
        struct name_scan ns = {.name = name};
        int rc = j->store->ops->doc_list(j->store, SVC_KIND, j->project->org_id, j->project->id,
                                         name_cb, &ns);
        if (rc < 0) {
            admin_store_error(j, rc, "service accounts");
            return;
        }
        if (ns.is_taken) {
            admin_error(j, 409, "A service account with this name already exists in the project.",
                        "name", "name_taken");
            return;
        }
        char *before = svc_data(s.name, s.role);
        char *after = svc_data(name, s.role);
        struct tg_doc d = {
            .kind = SVC_KIND,
            .id = s.id,
            .org_id = j->project->org_id,
            .project_id = j->project->id,
            .data = after,
            .created_ms = s.created_ms,
            .updated_ms = tg_clock_unix_ms(),
        };
        rc = j->store->ops->doc_put(j->store, &d);
        rc = rc < 0
                 ? rc
                 : admin_audit(j, "service_account.updated", j->project->id, s.id, before, after);
        free(before);
        free(after);
        if (rc < 0) {
            admin_store_error(j, rc, "service account");
            return;
        }
        snprintf(s.name, sizeof(s.name), "%s", name);
    }
    append_svc(&j->out, &s);
    tg_buf_append_str(&j->out, "}");
}

/* The active keys an account owns, collected first: listing callbacks may not write. */
struct owned_keys {
    const char *owner;
    char (*ids)[48];
    size_t n;
    bool is_overflow;
};

static int
owned_cb(const struct tg_key_rec *k, void *arg)
{
    struct owned_keys *ok = arg;
    if (k->revoked_ms != 0 || k->owner_user_id == NULL || strcmp(k->owner_user_id, ok->owner)) {
        return 0;
    }
    if (ok->n == SVC_MAX_KEYS) {
        ok->is_overflow = true;
        return 0;
    }
    snprintf(ok->ids[ok->n++], sizeof(ok->ids[0]), "%s", k->id);
    return 0;
}

static void
delete_svc(struct admin_job *j)
{
    struct svc s;
    if (!load_svc(j, &s)) {
        return;
    }
    struct owned_keys ok = {.owner = s.id, .ids = tg_xcalloc(SVC_MAX_KEYS, sizeof(*ok.ids))};
    struct tg_buf before;
    tg_buf_init(&before, 0);
    int rc = j->store->ops->keys_list(j->store, j->project->org_id, owned_cb, &ok);
    if (rc == 0 && ok.is_overflow) {
        rc = TG_ELIMIT;
    }
    int64_t now = tg_clock_unix_ms();
    for (size_t i = 0; rc == 0 && i < ok.n; i++) {
        rc = j->store->ops->key_revoke(j->store, ok.ids[i], now);
    }
    rc = rc < 0 ? rc : j->store->ops->doc_delete(j->store, SVC_KIND, s.id);
    if (rc == 0) {
        /* The entry names the keys that went with the account, so the log shows why they
         * stopped working without one entry per key. */
        tg_buf_append_str(&before, "{\"name\":");
        tg_json_quote(&before, s.name);
        tg_buf_append_str(&before, ",\"role\":");
        tg_json_quote(&before, s.role);
        tg_buf_append_str(&before, ",\"revoked_api_keys\":[");
        for (size_t i = 0; i < ok.n; i++) {
            tg_buf_append_str(&before, i ? "," : "");
            tg_json_quote(&before, ok.ids[i]);
        }
        tg_buf_append_str(&before, "]}");
        rc = admin_audit(j, "service_account.deleted", j->project->id, s.id, before.data, NULL);
    }
    tg_buf_deinit(&before);
    free(ok.ids);
    if (rc < 0) {
        admin_store_error(j, rc, "service account");
        return;
    }
    tg_buf_append_str(&j->out,
                      "{\"object\":\"organization.project.service_account.deleted\",\"id\":");
    tg_json_quote(&j->out, s.id);
    tg_buf_append_str(&j->out, ",\"deleted\":true}");
    j->reload = true;
    tg_log_info("admin: service account %s deleted (%zu keys revoked) by %s", s.id, ok.n,
                j->key->id);
}

static void
create_svc_key(struct admin_job *j)
{
    static const char *const allowed[] = {"name", NULL};
    const char *name = NULL;
    struct svc s;
    if (!admin_body_only(j, allowed) ||
        !admin_body_string(j, "name", false, SVC_KEY_NAME_MAX, &name) || !project_is_open(j) ||
        !load_svc(j, &s)) {
        return;
    }
    if (name == NULL) {
        name = "Secret Key";
    }
    char key_id[48];
    int rc = make_key(j, &s, name, &j->out, key_id, sizeof(key_id));
    char *after = rc < 0 ? NULL : key_audit(key_id, name, &s);
    rc = rc < 0 ? rc : admin_audit(j, "api_key.created", j->project->id, key_id, NULL, after);
    free(after);
    if (rc < 0) {
        admin_store_error(j, rc, "service account key");
        return;
    }
    j->reload = true;
    tg_log_info("admin: key %s created for service account %s by %s", key_id, s.id, j->key->id);
}

const struct admin_route tg_admin_routes_service_accounts[] = {
    {TG_HTTP_GET, "projects/{project_id}/service_accounts", ADMIN_PROJECT,
     "List a project's service accounts", list_svcs},
    {TG_HTTP_POST, "projects/{project_id}/service_accounts", ADMIN_PROJECT,
     "Create a service account (returns its first key, shown once)", create_svc},
    {TG_HTTP_GET, "projects/{project_id}/service_accounts/{service_account_id}", ADMIN_PROJECT,
     "Retrieve a service account", get_svc},
    {TG_HTTP_POST, "projects/{project_id}/service_accounts/{service_account_id}", ADMIN_PROJECT,
     "Rename a service account {name}", modify_svc},
    {TG_HTTP_DELETE, "projects/{project_id}/service_accounts/{service_account_id}", ADMIN_PROJECT,
     "Delete a service account and revoke its keys", delete_svc},
    {TG_HTTP_POST, "projects/{project_id}/service_accounts/{service_account_id}/api_keys",
     ADMIN_PROJECT, "Create another key for a service account (extension; shown once)",
     create_svc_key},
    {0, NULL, 0, NULL, NULL},
};
