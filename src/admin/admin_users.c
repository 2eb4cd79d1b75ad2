/*
 * admin_users.c: the organization's people: users (organization.user), invites
 * (organization.invite) and each user's admin API keys (organization.admin_api_key).
 *
 * Users and invites are store documents (admin_int.h gives their shapes); an admin key is a
 * key of kind admin whose owner_user_id is the user and whose role is the user's org role, so
 * a role change rewrites the role of the user's keys and a deleted user's keys are revoked.
 * Project keys a departed user made keep working (they belong to the project; README).
 *
 * An invite carries a one-time token, shown once in the create answer and stored as its
 * SHA-256; whoever presents it to POST /v1/organization/invites/accept (no admin key needed)
 * becomes the user, gets the invite's project memberships and a first admin key (shown once).
 * An organization always keeps at least one owner: the last one can be neither demoted nor
 * deleted.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin_int.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

#define NAME_MAX_LEN 64
#define EMAIL_MAX_LEN 256
#define INVITE_DAYS_DEFAULT 7
#define INVITE_DAYS_MAX 30
#define DAY_MS 86400000LL
#define TOKEN_PREFIX "tginv-"

/* ---- documents ---------------------------------------------------------------------------- */

/* One document copied out of a store callback. */
struct doc_copy {
    json_t *data;
    char id[96];
    char project_id[96];
    int64_t created_ms;
};

static int
copy_doc(const struct tg_doc *d, void *arg)
{
    struct doc_copy *c = arg;
    json_decref(c->data);
    c->data = json_loads(d->data, 0, NULL);
    snprintf(c->id, sizeof(c->id), "%s", d->id);
    snprintf(c->project_id, sizeof(c->project_id), "%s", d->project_id ? d->project_id : "");
    c->created_ms = d->created_ms;
    return 0;
}

/* Reads one document; false after answering 404 (absent or unreadable) or 500. */
static bool
load_doc(struct admin_job *j, const char *kind, const char *id, const char *what,
         struct doc_copy *c)
{
    memset(c, 0, sizeof(*c));
    int rc = j->store->ops->doc_get(j->store, kind, id, copy_doc, c);
    if (rc == 0 && c->data == NULL) {
        rc = TG_ENOTFOUND;
    }
    if (rc < 0) {
        admin_store_error(j, rc, what);
        return false;
    }
    return true;
}

static int
put_doc(struct admin_job *j, const char *kind, const char *id, const char *project_id, json_t *data,
        int64_t created_ms)
{
    char *text = json_dumps(data, JSON_COMPACT);
    struct tg_doc d = {
        .kind = kind,
        .id = id,
        .org_id = j->state->org_id,
        .project_id = project_id,
        .data = text,
        .created_ms = created_ms,
        .updated_ms = tg_clock_unix_ms(),
    };
    int rc = j->store->ops->doc_put(j->store, &d);
    free(text);
    return rc;
}

/* Every document of a kind in the org, as a JSON array of {"id", "project_id", "created_ms",
 * "data"} (small lists: people, invites, memberships). */
static int
collect_doc(const struct tg_doc *d, void *arg)
{
    json_t *item =
        json_pack("{s:s, s:s?, s:I, s:o}", "id", d->id, "project_id", d->project_id, "created_ms",
                  (json_int_t)d->created_ms, "data", json_loads(d->data, 0, NULL));
    if (item != NULL) {
        json_array_append_new(arg, item);
    }
    return 0;
}

static int
list_docs(struct admin_job *j, const char *kind, json_t **out)
{
    *out = json_array();
    return j->store->ops->doc_list(j->store, kind, j->state->org_id, NULL, collect_doc, *out);
}

static bool
is_role(const char *s, const char *a, const char *b)
{
    return s != NULL && (strcmp(s, a) == 0 || strcmp(s, b) == 0);
}

/* ---- users -------------------------------------------------------------------------------- */

static void
append_user(struct tg_buf *b, const char *id, const json_t *data, int64_t created_ms)
{
    tg_buf_append_str(b, "{\"object\":\"organization.user\",\"id\":");
    tg_json_quote(b, id);
    tg_buf_append_str(b, ",\"name\":");
    tg_json_quote(b, tg_json_str(data, "name") ? tg_json_str(data, "name") : "");
    tg_buf_append_str(b, ",\"email\":");
    tg_json_quote(b, tg_json_str(data, "email") ? tg_json_str(data, "email") : "");
    tg_buf_append_str(b, ",\"role\":");
    tg_json_quote(b, tg_json_str(data, "role") ? tg_json_str(data, "role") : "reader");
    tg_buf_append_str(b, ",\"added_at\":");
    admin_append_time(b, created_ms);
    tg_buf_append_str(b, "}");
}

static char *
user_text(const char *id, const json_t *data, int64_t created_ms)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    append_user(&b, id, data, created_ms);
    return tg_buf_steal(&b, NULL);
}

/* Owners in the org other than except_id. Negative on a store failure. */
static int
count_other_owners(struct admin_job *j, const char *except_id)
{
    json_t *users;
    int rc = list_docs(j, "user", &users);
    int n = 0;
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u)
    {
        const char *role = tg_json_str(json_object_get(u, "data"), "role");
        if (role != NULL && strcmp(role, "owner") == 0 &&
            strcmp(tg_json_str(u, "id"), except_id) != 0) {
            n++;
        }
    }
    json_decref(users);
    return rc < 0 ? rc : n;
}

static bool
email_wanted(struct admin_job *j, const char *email)
{
    const char *vals[32];
    size_t n = tg_http_req_query_all(j->req, "emails", vals, 32);
    if (n == 0) {
        return true;
    }
    for (size_t i = 0; i < n && i < 32; i++) {
        if (email != NULL && strcasecmp(vals[i], email) == 0) {
            return true;
        }
    }
    return false;
}

static void
list_users(struct admin_job *j)
{
    struct admin_page pg;
    json_t *users;
    int rc = list_docs(j, "user", &users);
    if (rc < 0) {
        admin_store_error(j, rc, "users");
    } else if (admin_page_begin(&pg, j)) {
        size_t i;
        json_t *u;
        json_array_foreach(users, i, u)
        {
            json_t *data = json_object_get(u, "data");
            if (!email_wanted(j, tg_json_str(data, "email"))) {
                continue;
            }
            char *item = user_text(tg_json_str(u, "id"), data, tg_json_int(u, "created_ms", 0));
            bool more = admin_page_add(&pg, tg_json_str(u, "id"), item);
            free(item);
            if (!more) {
                break;
            }
        }
        admin_page_end(&pg);
    }
    json_decref(users);
}

static void
get_user(struct admin_job *j)
{
    struct doc_copy u;
    if (load_doc(j, "user", admin_param(j, "user_id"), "user", &u)) {
        append_user(&j->out, u.id, u.data, u.created_ms);
    }
    json_decref(u.data);
}

static void
modify_user(struct admin_job *j)
{
    static const char *const allowed[] = {"role", NULL};
    const char *role;
    struct doc_copy u = {0};
    if (!admin_body_only(j, allowed) || !admin_body_string(j, "role", true, 16, &role)) {
        return;
    }
    if (!is_role(role, "owner", "reader")) {
        admin_error(j, 400, "role must be \"owner\" or \"reader\".", "role", "invalid_value");
        return;
    }
    if (!load_doc(j, "user", admin_param(j, "user_id"), "user", &u)) {
        return;
    }
    const char *old = tg_json_str(u.data, "role");
    char *before = user_text(u.id, u.data, u.created_ms);
    int rc = 0;
    if (old != NULL && strcmp(old, "owner") == 0 && strcmp(role, "owner") != 0) {
        rc = count_other_owners(j, u.id);
        if (rc == 0) {
            admin_error(j, 400,
                        "This user is the last owner of the organization: make someone "
                        "else an owner first.",
                        "role", "last_owner");
            goto out;
        }
    }
    json_object_set_new(u.data, "role", json_string(role));
    rc = rc < 0 ? rc : put_doc(j, "user", u.id, NULL, u.data, u.created_ms);
    rc = rc < 0 ? rc : j->store->ops->keys_set_role_by_user(j->store, u.id, role);
    char *after = user_text(u.id, u.data, u.created_ms);
    rc = rc < 0 ? rc : admin_audit(j, "user.updated", NULL, u.id, before, after);
    if (rc < 0) {
        admin_store_error(j, rc, "user");
    } else {
        tg_buf_append_str(&j->out, after);
        j->reload = true;
    }
    free(after);
out:
    free(before);
    json_decref(u.data);
}

struct revoke_scan {
    const char *user_id;
    json_t *ids;
};

static int
revoke_user_key(const struct tg_key_rec *k, void *arg)
{
    struct revoke_scan *s = arg;
    if (k->kind == TG_KEY_ADMIN && k->revoked_ms == 0 && k->owner_user_id != NULL &&
        strcmp(k->owner_user_id, s->user_id) == 0) {
        /* Collected here, revoked after the listing: callbacks must not call the store. */
        json_array_append_new(s->ids, json_string(k->id));
    }
    return 0;
}

static int
revoke_admin_keys(struct admin_job *j, const char *user_id)
{
    json_t *ids = json_array();
    struct revoke_scan s = {user_id, ids};
    int rc = j->store->ops->keys_list(j->store, j->state->org_id, revoke_user_key, &s);
    int64_t now = tg_clock_unix_ms();
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        rc = rc < 0 ? rc : j->store->ops->key_revoke(j->store, json_string_value(id), now);
    }
    json_decref(ids);
    return rc;
}

/* Removes every project membership of a user. */
static int
delete_memberships(struct admin_job *j, const char *user_id)
{
    json_t *members;
    int rc = list_docs(j, "member", &members);
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m)
    {
        const char *who = tg_json_str(json_object_get(m, "data"), "user_id");
        if (rc >= 0 && who != NULL && strcmp(who, user_id) == 0) {
            rc = j->store->ops->doc_delete(j->store, "member", tg_json_str(m, "id"));
        }
    }
    json_decref(members);
    return rc;
}

static void
delete_user(struct admin_job *j)
{
    struct doc_copy u;
    if (!load_doc(j, "user", admin_param(j, "user_id"), "user", &u)) {
        return;
    }
    const char *role = tg_json_str(u.data, "role");
    int rc = 0;
    if (role != NULL && strcmp(role, "owner") == 0) {
        rc = count_other_owners(j, u.id);
        if (rc == 0) {
            admin_error(j, 400,
                        "This user is the last owner of the organization and cannot be removed.",
                        "user_id", "last_owner");
            json_decref(u.data);
            return;
        }
    }
    char *before = user_text(u.id, u.data, u.created_ms);
    rc = rc < 0 ? rc : j->store->ops->doc_delete(j->store, "user", u.id);
    rc = rc < 0 ? rc : revoke_admin_keys(j, u.id);
    rc = rc < 0 ? rc : delete_memberships(j, u.id);
    rc = rc < 0 ? rc : admin_audit(j, "user.deleted", NULL, u.id, before, NULL);
    if (rc < 0) {
        admin_store_error(j, rc, "user");
    } else {
        tg_buf_append_str(&j->out, "{\"object\":\"organization.user.deleted\",\"id\":");
        tg_json_quote(&j->out, u.id);
        tg_buf_append_str(&j->out, ",\"deleted\":true}");
        j->reload = true;
    }
    free(before);
    json_decref(u.data);
}

/* ---- invites ------------------------------------------------------------------------------ */

static const char *
invite_status(const json_t *data, int64_t now)
{
    if (tg_json_int(data, "accepted_at_ms", 0) != 0) {
        return "accepted";
    }
    return now >= tg_json_int(data, "expires_at_ms", 0) ? "expired" : "pending";
}

static void
append_invite(struct tg_buf *b, const char *id, const json_t *data, int64_t created_ms,
              const char *token)
{
    tg_buf_append_str(b, "{\"object\":\"organization.invite\",\"id\":");
    tg_json_quote(b, id);
    tg_buf_append_str(b, ",\"email\":");
    tg_json_quote(b, tg_json_str(data, "email") ? tg_json_str(data, "email") : "");
    tg_buf_append_str(b, ",\"role\":");
    tg_json_quote(b, tg_json_str(data, "role") ? tg_json_str(data, "role") : "reader");
    tg_buf_appendf(b,
                   ",\"status\":\"%s\",\"created_at\":", invite_status(data, tg_clock_unix_ms()));
    admin_append_time(b, created_ms);
    tg_buf_append_str(b, ",\"expires_at\":");
    admin_append_time(b, tg_json_int(data, "expires_at_ms", 0));
    tg_buf_append_str(b, ",\"accepted_at\":");
    admin_append_time(b, tg_json_int(data, "accepted_at_ms", 0));
    tg_buf_append_str(b, ",\"projects\":");
    json_t *projects = json_object_get(data, "projects");
    if (projects != NULL) {
        tg_json_dump_buf(projects, b);
    } else {
        tg_buf_append_str(b, "[]");
    }
    if (token != NULL) {
        tg_buf_append_str(b, ",\"token\":");
        tg_json_quote(b, token);
    }
    tg_buf_append_str(b, "}");
}

static char *
invite_text(const char *id, const json_t *data, int64_t created_ms)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    append_invite(&b, id, data, created_ms, NULL);
    return tg_buf_steal(&b, NULL);
}

static void
list_invites(struct admin_job *j)
{
    struct admin_page pg;
    json_t *invites;
    int rc = list_docs(j, "invite", &invites);
    if (rc < 0) {
        admin_store_error(j, rc, "invites");
    } else if (admin_page_begin(&pg, j)) {
        size_t i;
        json_t *v;
        json_array_foreach(invites, i, v)
        {
            char *item = invite_text(tg_json_str(v, "id"), json_object_get(v, "data"),
                                     tg_json_int(v, "created_ms", 0));
            bool more = admin_page_add(&pg, tg_json_str(v, "id"), item);
            free(item);
            if (!more) {
                break;
            }
        }
        admin_page_end(&pg);
    }
    json_decref(invites);
}

/* A lower-cased copy of a plausible e-mail address, or NULL. */
static char *
normalize_email(const char *s)
{
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') != NULL ||
        strchr(at + 1, '.') == NULL) {
        return NULL;
    }
    char *out = tg_xstrdup(s);
    for (char *p = out; *p != '\0'; p++) {
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p)) {
            free(out);
            return NULL;
        }
        *p = (char)tolower((unsigned char)*p);
    }
    return out;
}

/* Checks the invite's "projects" member and returns it with ids resolved, or NULL after
 * answering 400. */
static json_t *
invite_projects(struct admin_job *j)
{
    json_t *in = json_object_get(j->body, "projects");
    if (in == NULL) {
        return json_array();
    }
    if (!json_is_array(in)) {
        admin_error(j, 400, "projects must be a list of {\"id\", \"role\"}.", "projects",
                    "invalid_type");
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(in, i, p)
    {
        const char *id = tg_json_str(p, "id");
        const char *role = tg_json_str(p, "role");
        const struct tg_project *proj = id != NULL ? tg_state_project(j->state, id) : NULL;
        if (!json_is_object(p) || json_object_size(p) != 2 || !is_role(role, "owner", "member")) {
            admin_error(j, 400,
                        "Each project is {\"id\": \"proj_...\", \"role\": \"member\" or "
                        "\"owner\"}.",
                        "projects", "invalid_value");
        } else if (proj == NULL || proj->is_archived) {
            char msg[200];
            snprintf(msg, sizeof(msg), "No such active project: %.100s", id);
            admin_error(j, 400, msg, "projects", "project_not_found");
        } else {
            json_array_append_new(out, json_pack("{s:s, s:s}", "id", proj->id, "role", role));
            continue;
        }
        json_decref(out);
        return NULL;
    }
    return out;
}

/* Refuses an e-mail that already belongs to a user or (with_invites) to a pending invite
 * (409). */
static bool
email_free(struct admin_job *j, const char *email, bool with_invites)
{
    json_t *users;
    json_t *invites;
    int rc = list_docs(j, "user", &users);
    int rc2 = list_docs(j, "invite", &invites);
    const char *clash = NULL;
    int64_t now = tg_clock_unix_ms();
    size_t i;
    json_t *v;
    json_array_foreach(users, i, v)
    {
        const char *e = tg_json_str(json_object_get(v, "data"), "email");
        clash = e != NULL && strcmp(e, email) == 0 ? "a user of the organization" : clash;
    }
    json_array_foreach(invites, i, v)
    {
        json_t *data = json_object_get(v, "data");
        const char *e = tg_json_str(data, "email");
        if (with_invites && e != NULL && strcmp(e, email) == 0 &&
            strcmp(invite_status(data, now), "pending") == 0) {
            clash = clash ? clash : "already invited (a pending invite)";
        }
    }
    json_decref(users);
    json_decref(invites);
    if (rc < 0 || rc2 < 0) {
        admin_store_error(j, rc < 0 ? rc : rc2, "users");
        return false;
    }
    if (clash != NULL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "This e-mail address is %s.", clash);
        admin_error(j, 409, msg, "email", "email_taken");
        return false;
    }
    return true;
}

static void
token_hash_hex(const char *token, char hex[2 * TG_SHA256_BYTES + 1])
{
    unsigned char h[TG_SHA256_BYTES];
    tg_sha256(token, strlen(token), h);
    tg_hex_encode(hex, h, TG_SHA256_BYTES);
}

static void
create_invite(struct admin_job *j)
{
    static const char *const allowed[] = {"email", "role", "projects", "expires_in_days", NULL};
    const char *email_in;
    const char *role;
    if (!admin_body_only(j, allowed) ||
        !admin_body_string(j, "email", true, EMAIL_MAX_LEN, &email_in) ||
        !admin_body_string(j, "role", true, 16, &role)) {
        return;
    }
    if (!is_role(role, "owner", "reader")) {
        admin_error(j, 400, "role must be \"owner\" or \"reader\".", "role", "invalid_value");
        return;
    }
    json_t *days_v = json_object_get(j->body, "expires_in_days");
    json_int_t days = INVITE_DAYS_DEFAULT;
    if (days_v != NULL) {
        days = json_is_integer(days_v) ? json_integer_value(days_v) : 0;
        if (days < 1 || days > INVITE_DAYS_MAX) {
            admin_error(j, 400, "expires_in_days must be an integer from 1 to 30.",
                        "expires_in_days", "invalid_value");
            return;
        }
    }
    char *email = normalize_email(email_in);
    if (email == NULL) {
        admin_error(j, 400, "email is not an e-mail address.", "email", "invalid_value");
        return;
    }
    json_t *projects = NULL;
    if (!email_free(j, email, true) || (projects = invite_projects(j)) == NULL) {
        free(email);
        return;
    }
    unsigned char raw[32];
    char token[sizeof(TOKEN_PREFIX) + 44];
    char hex[2 * TG_SHA256_BYTES + 1];
    char id[48];
    tg_random_bytes(raw, sizeof(raw));
    memcpy(token, TOKEN_PREFIX, sizeof(TOKEN_PREFIX) - 1);
    size_t n = tg_base64url_encode(token + sizeof(TOKEN_PREFIX) - 1, raw, sizeof(raw));
    token[sizeof(TOKEN_PREFIX) - 1 + n] = '\0';
    token_hash_hex(token, hex);
    tg_id_new(id, sizeof(id), "invite-", 24);
    int64_t now = tg_clock_unix_ms();
    json_t *data = json_pack("{s:s, s:s, s:s, s:I, s:I, s:o}", "email", email, "role", role,
                             "token_hash", hex, "expires_at_ms", (json_int_t)(now + days * DAY_MS),
                             "accepted_at_ms", (json_int_t)0, "projects", projects);
    int rc = put_doc(j, "invite", id, NULL, data, now);
    char *after = invite_text(id, data, now);
    rc = rc < 0 ? rc : admin_audit(j, "invite.sent", NULL, id, NULL, after);
    if (rc < 0) {
        admin_store_error(j, rc, "invite");
    } else {
        append_invite(&j->out, id, data, now, token);
        tg_log_info("admin: invite %s (%s) created by %s", id, role, j->key->id);
    }
    memset(token, 0, sizeof(token));
    free(after);
    free(email);
    json_decref(data);
}

static void
get_invite(struct admin_job *j)
{
    struct doc_copy v;
    if (load_doc(j, "invite", admin_param(j, "invite_id"), "invite", &v)) {
        append_invite(&j->out, v.id, v.data, v.created_ms, NULL);
    }
    json_decref(v.data);
}

static void
delete_invite(struct admin_job *j)
{
    struct doc_copy v;
    if (!load_doc(j, "invite", admin_param(j, "invite_id"), "invite", &v)) {
        return;
    }
    char *before = invite_text(v.id, v.data, v.created_ms);
    int rc = j->store->ops->doc_delete(j->store, "invite", v.id);
    rc = rc < 0 ? rc : admin_audit(j, "invite.deleted", NULL, v.id, before, NULL);
    if (rc < 0) {
        admin_store_error(j, rc, "invite");
    } else {
        tg_buf_append_str(&j->out, "{\"object\":\"organization.invite.deleted\",\"id\":");
        tg_json_quote(&j->out, v.id);
        tg_buf_append_str(&j->out, ",\"deleted\":true}");
    }
    free(before);
    json_decref(v.data);
}

/* ---- admin API keys ------------------------------------------------------------------------ */

static void
append_admin_key(struct tg_buf *b, const struct tg_key_rec *k, const char *value)
{
    tg_buf_append_str(b, "{\"object\":\"organization.admin_api_key\",\"id\":");
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
    tg_buf_append_str(b, ",\"expires_at\":");
    admin_append_time(b, k->expires_ms);
    tg_buf_appendf(b, ",\"status\":\"%s\",\"owner\":{\"type\":\"user\",\"id\":",
                   k->revoked_ms ? "revoked" : "active");
    if (k->owner_user_id != NULL) {
        tg_json_quote(b, k->owner_user_id);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_append_str(b, ",\"role\":");
    tg_json_quote(b, k->role != NULL ? k->role : "reader");
    tg_buf_append_str(b, "}}");
}

/* Creates an admin key for user_id with role; writes the record's JSON (with the value) to
 * out. Shared by key creation and invite acceptance. */
static int
insert_admin_key(struct admin_job *j, const char *user_id, const char *role, const char *name,
                 struct tg_buf *out)
{
    const struct tg_state_env *env = tg_state_env_get();
    char value[TG_KEY_LEN + 1];
    char redacted[TG_KEY_REDACTED_CAP];
    char id[40];
    tg_key_generate(value);
    tg_key_redact(value, redacted);
    tg_id_new(id, sizeof(id), "key_", 24);
    struct tg_key_rec rec = {
        .id = id,
        .org_id = j->state->org_id,
        .name = name,
        .redacted = redacted,
        .kind = TG_KEY_ADMIN,
        .role = role,
        .owner_user_id = user_id,
        .created_ms = tg_clock_unix_ms(),
    };
    tg_key_hash(env->pepper, env->pepper_len, value, rec.hash);
    int rc = j->store->ops->key_insert(j->store, &rec);
    struct tg_buf after;
    tg_buf_init(&after, 0);
    append_admin_key(&after, &rec, NULL);
    /* Acceptance records invite.accepted instead: one change, one entry. */
    if (rc == 0 && j->key != NULL) {
        rc = admin_audit(j, "api_key.created", NULL, id, NULL, after.data);
    }
    tg_buf_deinit(&after);
    if (rc == 0) {
        append_admin_key(out, &rec, value);
    }
    memset(value, 0, sizeof(value));
    return rc;
}

/* Admin keys; readers see only their own. */
static bool
may_see_admin_key(const struct admin_job *j, const struct tg_key_rec *k)
{
    return k->kind == TG_KEY_ADMIN &&
           (j->is_owner || (j->user_id != NULL && k->owner_user_id != NULL &&
                            strcmp(j->user_id, k->owner_user_id) == 0));
}

static void
list_admin_keys(struct admin_job *j)
{
    struct admin_key_scan s = {.j = j, .keep = may_see_admin_key, .append = append_admin_key};
    admin_keys_list(&s, "admin API keys");
}

static void
create_admin_key(struct admin_job *j)
{
    static const char *const allowed[] = {"name", NULL};
    const char *name;
    if (!admin_body_only(j, allowed) || !admin_body_string(j, "name", true, NAME_MAX_LEN, &name)) {
        return;
    }
    int rc = insert_admin_key(j, j->user_id, j->is_owner ? "owner" : "reader", name, &j->out);
    if (rc < 0) {
        admin_store_error(j, rc, "admin API key");
        return;
    }
    j->reload = true;
    tg_log_info("admin: admin key created by %s", j->key->id);
}

static bool
find_admin_key(struct admin_job *j, struct admin_key_scan *s)
{
    *s = (struct admin_key_scan){.j = j, .keep = may_see_admin_key, .append = append_admin_key};
    return admin_keys_find(s, "admin API key");
}

static void
get_admin_key(struct admin_job *j)
{
    struct admin_key_scan s;
    if (find_admin_key(j, &s)) {
        tg_buf_append(&j->out, s.one.data, s.one.len);
    }
    tg_buf_deinit(&s.one);
}

static void
delete_admin_key(struct admin_job *j)
{
    struct admin_key_scan s;
    if (!find_admin_key(j, &s)) {
        tg_buf_deinit(&s.one);
        return;
    }
    int rc = 0;
    if (s.is_active) {
        rc = j->store->ops->key_revoke(j->store, s.want_id, tg_clock_unix_ms());
        rc = rc < 0 ? rc : admin_audit(j, "api_key.deleted", NULL, s.want_id, s.one.data, NULL);
    }
    tg_buf_deinit(&s.one);
    if (rc < 0) {
        admin_store_error(j, rc, "admin API key");
        return;
    }
    j->reload = s.is_active;
    tg_buf_append_str(&j->out, "{\"object\":\"organization.admin_api_key.deleted\",\"id\":");
    tg_json_quote(&j->out, s.want_id);
    tg_buf_append_str(&j->out, ",\"deleted\":true}");
}

/* ---- invite acceptance (public) ------------------------------------------------------------ */

/* The invite whose token hashes to hex, or NULL (an array item of list_docs). */
static json_t *
find_invite(json_t *invites, const char *hex)
{
    size_t i;
    json_t *v;
    json_array_foreach(invites, i, v)
    {
        const char *h = tg_json_str(json_object_get(v, "data"), "token_hash");
        if (h != NULL && strlen(h) == strlen(hex) && tg_mem_equal_ct(h, hex, strlen(hex))) {
            return v;
        }
    }
    return NULL;
}

static int
add_memberships(struct admin_job *j, const char *user_id, const json_t *projects, int64_t now)
{
    int rc = 0;
    size_t i;
    json_t *p;
    json_array_foreach(projects, i, p)
    {
        const struct tg_project *proj = tg_state_project(j->state, tg_json_str(p, "id"));
        if (rc < 0 || proj == NULL) {
            continue; /* a project removed since the invite: nothing to join */
        }
        char id[200];
        snprintf(id, sizeof(id), "pm_%s_%s", proj->id, user_id);
        json_t *data = json_pack("{s:s, s:s, s:I}", "user_id", user_id, "role",
                                 tg_json_str(p, "role"), "added_at_ms", (json_int_t)now);
        rc = put_doc(j, "member", id, proj->id, data, now);
        json_decref(data);
    }
    return rc;
}

void
admin_invite_accept(struct admin_job *j)
{
    static const char *const allowed[] = {"token", "name", NULL};
    const char *token;
    const char *name;
    json_t *invites = NULL;
    char *user = NULL;
    if (!admin_body_only(j, allowed) || !admin_body_string(j, "token", true, 128, &token) ||
        !admin_body_string(j, "name", false, NAME_MAX_LEN, &name)) {
        return;
    }
    char hex[2 * TG_SHA256_BYTES + 1];
    token_hash_hex(token, hex);
    int rc = list_docs(j, "invite", &invites);
    json_t *inv = rc < 0 ? NULL : find_invite(invites, hex);
    json_t *data = json_object_get(inv, "data");
    int64_t now = tg_clock_unix_ms();
    if (rc < 0) {
        admin_store_error(j, rc, "invites");
        goto out;
    }
    if (inv == NULL || strcmp(invite_status(data, now), "pending") != 0) {
        admin_error(j, inv == NULL ? 404 : 400,
                    inv == NULL ? "No invite has this token (it may have been deleted)."
                                : "This invite was already accepted or has expired.",
                    "token", inv == NULL ? "invite_not_found" : "invite_not_pending");
        goto out;
    }
    const char *email = tg_json_str(data, "email");
    const char *role = tg_json_str(data, "role");
    const char *invite_id = tg_json_str(inv, "id");
    if (!email_free(j, email, false)) {
        goto out;
    }
    char user_id[40];
    tg_id_new(user_id, sizeof(user_id), "user-", 24);
    j->user_id = user_id;
    json_t *udata = json_pack("{s:s, s:s, s:s}", "name", name != NULL ? name : email, "email",
                              email, "role", role);
    rc = put_doc(j, "user", user_id, NULL, udata, now);
    rc = rc < 0 ? rc : add_memberships(j, user_id, json_object_get(data, "projects"), now);
    char *before = invite_text(invite_id, data, tg_json_int(inv, "created_ms", 0));
    json_object_set_new(data, "accepted_at_ms", json_integer(now));
    rc = rc < 0 ? rc
                : put_doc(j, "invite", invite_id, NULL, data, tg_json_int(inv, "created_ms", 0));
    user = user_text(user_id, udata, now);
    rc = rc < 0 ? rc : admin_audit(j, "invite.accepted", NULL, invite_id, before, user);
    struct tg_buf key;
    tg_buf_init(&key, 0);
    rc = rc < 0 ? rc : insert_admin_key(j, user_id, role, "default", &key);
    if (rc < 0) {
        admin_store_error(j, rc, "invite");
    } else {
        /* The user, with their first admin key (its value is shown this once). */
        tg_buf_append(&j->out, user, strlen(user) - 1);
        tg_buf_append_str(&j->out, ",\"admin_api_key\":");
        tg_buf_append(&j->out, key.data, key.len);
        tg_buf_append_str(&j->out, "}");
        j->reload = true;
        tg_log_info("admin: invite %s accepted: user %s (%s)", invite_id, user_id, role);
    }
    j->user_id = NULL;
    tg_buf_deinit(&key);
    free(before);
    json_decref(udata);
out:
    free(user);
    json_decref(invites);
}

const struct admin_route tg_admin_routes_users[] = {
    {TG_HTTP_GET, "users", ADMIN_ORG_READ, "List the organization's users", list_users},
    {TG_HTTP_GET, "users/{user_id}", ADMIN_ORG_READ, "Retrieve a user", get_user},
    {TG_HTTP_POST, "users/{user_id}", ADMIN_OWNER, "Change a user's role", modify_user},
    {TG_HTTP_DELETE, "users/{user_id}", ADMIN_OWNER, "Remove a user (revokes their admin keys)",
     delete_user},
    {TG_HTTP_GET, "invites", ADMIN_OWNER, "List invites", list_invites},
    {TG_HTTP_POST, "invites", ADMIN_OWNER, "Invite someone (the one-time token is shown once)",
     create_invite},
    {TG_HTTP_GET, "invites/{invite_id}", ADMIN_OWNER, "Retrieve an invite", get_invite},
    {TG_HTTP_DELETE, "invites/{invite_id}", ADMIN_OWNER, "Delete an invite", delete_invite},
    {TG_HTTP_GET, "admin_api_keys", ADMIN_ORG_READ, "List admin API keys (readers: their own)",
     list_admin_keys},
    {TG_HTTP_POST, "admin_api_keys", ADMIN_ORG_READ,
     "Create an admin API key for yourself (the value is shown once)", create_admin_key},
    {TG_HTTP_GET, "admin_api_keys/{key_id}", ADMIN_ORG_READ,
     "Retrieve an admin API key (readers: their own)", get_admin_key},
    {TG_HTTP_DELETE, "admin_api_keys/{key_id}", ADMIN_ORG_READ,
     "Revoke an admin API key (readers: their own)", delete_admin_key},
    {0, NULL, 0, NULL, NULL},
};
