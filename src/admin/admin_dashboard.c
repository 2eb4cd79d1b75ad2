/*
 * admin_dashboard.c: what the dashboard asks of the admin API beyond the other resources.
 *
 * GET me tells the caller who its key says it is: the organization, the key (id, name,
 * redacted form, role) and the user behind it. The dashboard calls it to check a key at
 * sign-in and to learn the role, which decides what it shows; the access checks stay where
 * they are, on every route. Any admin key may call it (a revoked or unknown key never gets
 * this far: 401 like every admin route).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

/* The caller's key record, copied out of the store's key walk. */
struct me_key {
    const char *want_id;
    char redacted[64];
};

static int
find_key(const struct tg_key_rec *r, void *arg)
{
    struct me_key *k = arg;
    if (strcmp(r->id, k->want_id) == 0) {
        snprintf(k->redacted, sizeof(k->redacted), "%s", r->redacted ? r->redacted : "");
    }
    return 0;
}

/* The user document's email; NULL when the user has none (or no longer exists). */
static int
copy_email(const struct tg_doc *d, void *arg)
{
    char **email = arg;
    json_t *root = json_loads(d->data, 0, NULL);
    const char *e = tg_json_str(root, "email");
    free(*email);
    *email = e ? tg_xstrdup(e) : NULL;
    json_decref(root);
    return 0;
}

static void
get_me(struct admin_job *j)
{
    const struct tg_key_entry *key = j->key;
    struct me_key k = {.want_id = key->id};
    int rc = j->store->ops->keys_list(j->store, j->state->org_id, find_key, &k);
    if (rc < 0) {
        admin_store_error(j, rc, "admin API key");
        return;
    }
    char *email = NULL;
    if (j->user_id != NULL) {
        rc = j->store->ops->doc_get(j->store, "user", j->user_id, copy_email, &email);
        if (rc < 0 && rc != TG_ENOTFOUND) {
            admin_store_error(j, rc, "user");
            return;
        }
    }
    struct tg_buf *b = &j->out;
    tg_buf_append_str(b, "{\"object\":\"organization.me\",\"organization\":{\"id\":");
    tg_json_quote(b, j->state->org_id);
    tg_buf_append_str(b, ",\"name\":");
    tg_json_quote(b, j->state->org_name ? j->state->org_name : "");
    tg_buf_append_str(b, "},\"key\":{\"id\":");
    tg_json_quote(b, key->id);
    tg_buf_append_str(b, ",\"name\":");
    tg_json_quote(b, key->name ? key->name : "");
    tg_buf_append_str(b, ",\"redacted\":");
    tg_json_quote(b, k.redacted);
    tg_buf_append_str(b, ",\"role\":");
    tg_json_quote(b, j->is_owner ? "owner" : "reader");
    tg_buf_append_str(b, "},\"user\":");
    if (j->user_id != NULL) {
        tg_buf_append_str(b, "{\"id\":");
        tg_json_quote(b, j->user_id);
        tg_buf_append_str(b, ",\"email\":");
        if (email != NULL) {
            tg_json_quote(b, email);
        } else {
            tg_buf_append_str(b, "null");
        }
        tg_buf_append_str(b, "}");
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_append_str(b, "}");
    free(email);
}

const struct admin_route tg_admin_routes_dashboard[] = {
    {TG_HTTP_GET, "me", ADMIN_ORG_READ,
     "The calling admin key, its role and its user (the dashboard's sign-in)", get_me},
    {0, NULL, 0, NULL, NULL},
};
