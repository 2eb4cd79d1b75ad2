/*
 * sqlite_org.c: the SQLite store's organizations, projects and keys, documents, the audit
 * log and config versions. See sqlite.c for the design and sqlite_int.h for the helpers.
 */
#include "store/sqlite_int.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"

/* ---- organizations, projects, keys ----------------------------------------------------- */

static int
insert_project(struct sq *s, const struct tg_project_rec *r)
{
    sqlite3_stmt *st = sq_stmt(s, S_PROJECT_INSERT);
    if (st == NULL) {
        return TG_ESTORE;
    }
    sq_bind_text(st, 1, r->id);
    sq_bind_text(st, 2, r->org_id);
    sq_bind_text(st, 3, r->name);
    sq_bind_text(st, 4, r->environment);
    sqlite3_bind_int64(st, 5, r->created_ms);
    sqlite3_bind_int64(st, 6, r->archived_ms);
    sq_bind_text(st, 7, r->settings);
    return sq_run(s, st, "insert project");
}

static int
insert_key(struct sq *s, const struct tg_key_rec *r)
{
    sqlite3_stmt *st = sq_stmt(s, S_KEY_INSERT);
    if (st == NULL) {
        return TG_ESTORE;
    }
    sq_bind_text(st, 1, r->id);
    sq_bind_text(st, 2, r->org_id);
    sq_bind_text(st, 3, r->project_id);
    sq_bind_text(st, 4, r->name);
    sq_bind_text(st, 5, r->redacted);
    sqlite3_bind_blob(st, 6, r->hash, TG_SHA256_BYTES, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, (int)r->kind);
    sq_bind_text(st, 8, r->role);
    sq_bind_text(st, 9, r->owner_user_id);
    sqlite3_bind_int64(st, 10, r->created_ms);
    sqlite3_bind_int64(st, 11, r->expires_ms);
    sqlite3_bind_int64(st, 12, r->revoked_ms);
    sqlite3_bind_int64(st, 13, r->last_used_ms);
    return sq_run(s, st, "insert key");
}

static int
bootstrap_locked(struct sq *s, const struct tg_org_rec *org, const struct tg_project_rec *projects,
                 size_t n_projects, const struct tg_key_rec *admin_key, bool *created)
{
    /* Outside a transaction this is BEGIN IMMEDIATE, which takes the write lock first, so two
     * processes starting on one file cannot both see an empty store and both insert an org. */
    int rc = sq_tx_begin(s);
    if (rc < 0) {
        return rc;
    }
    sqlite3_stmt *st = sq_stmt(s, S_ORG_COUNT);
    rc = st != NULL ? 0 : TG_ESTORE;
    int64_t n_orgs = 0;
    if (rc == 0) {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            n_orgs = sqlite3_column_int64(st, 0);
        } else {
            rc = sq_fail(s, sqlite3_extended_errcode(s->db), "count orgs");
        }
        sq_done(st);
    }
    if (rc == 0 && n_orgs == 0) {
        st = sq_stmt(s, S_ORG_INSERT);
        rc = st != NULL ? 0 : TG_ESTORE;
        if (rc == 0) {
            sq_bind_text(st, 1, org->id);
            sq_bind_text(st, 2, org->name);
            sqlite3_bind_int64(st, 3, org->created_ms);
            rc = sq_run(s, st, "insert org");
        }
        for (size_t i = 0; rc == 0 && i < n_projects; i++) {
            rc = insert_project(s, &projects[i]);
        }
        if (rc == 0 && admin_key != NULL) {
            rc = insert_key(s, admin_key);
        }
    }
    rc = sq_tx_end(s, rc);
    *created = rc == 0 && n_orgs == 0;
    return rc;
}

int
sq_bootstrap(struct tg_store *store, const struct tg_org_rec *org,
             const struct tg_project_rec *projects, size_t n_projects,
             const struct tg_key_rec *admin_key, bool *created)
{
    struct sq *s = sq_of(store);
    *created = false;
    sq_lock(s);
    int rc = bootstrap_locked(s, org, projects, n_projects, admin_key, created);
    sq_unlock(s);
    return rc;
}

int
sq_orgs_list(struct tg_store *store, tg_store_org_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_ORGS_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_org_rec r = {sq_col_text(st, 0), sq_col_text(st, 1), sqlite3_column_int64(st, 2)};
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = sq_fail(s, sqlite3_extended_errcode(s->db), "list orgs");
    }
    if (st != NULL) {
        sq_done(st);
    }
    sq_unlock(s);
    return rc;
}

int
sq_projects_list(struct tg_store *store, const char *org_id, tg_store_project_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_PROJECTS_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_project_rec r = {
            .id = sq_col_text(st, 0),
            .org_id = sq_col_text(st, 1),
            .name = sq_col_text(st, 2),
            .environment = sq_col_text(st, 3),
            .created_ms = sqlite3_column_int64(st, 4),
            .archived_ms = sqlite3_column_int64(st, 5),
            .settings = sq_col_text(st, 6),
        };
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = sq_fail(s, sqlite3_extended_errcode(s->db), "list projects");
    }
    if (st != NULL) {
        sq_done(st);
    }
    sq_unlock(s);
    return rc;
}

int
sq_project_insert(struct tg_store *store, const struct tg_project_rec *r)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    int rc = insert_project(s, r);
    sq_unlock(s);
    return rc;
}

int
sq_key_insert(struct tg_store *store, const struct tg_key_rec *r)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    int rc = insert_key(s, r);
    sq_unlock(s);
    return rc;
}

int
sq_key_revoke(struct tg_store *store, const char *key_id, int64_t when_ms)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_KEY_REVOKE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, when_ms);
        sq_bind_text(st, 2, key_id);
        rc = sq_run(s, st, "revoke key");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    sq_unlock(s);
    return rc;
}

/* Reads the current row of S_KEYS_LIST; false when the stored hash is not a hash. */
static bool
read_key(sqlite3_stmt *st, struct tg_key_rec *r)
{
    memset(r, 0, sizeof(*r));
    r->id = sq_col_text(st, 0);
    r->org_id = sq_col_text(st, 1);
    r->project_id = sq_col_text(st, 2);
    r->name = sq_col_text(st, 3);
    r->redacted = sq_col_text(st, 4);
    const void *hash = sqlite3_column_blob(st, 5);
    if (hash == NULL || sqlite3_column_bytes(st, 5) != TG_SHA256_BYTES) {
        return false;
    }
    memcpy(r->hash, hash, TG_SHA256_BYTES);
    r->kind = sqlite3_column_int(st, 6) == TG_KEY_ADMIN ? TG_KEY_ADMIN : TG_KEY_PROJECT;
    r->role = sq_col_text(st, 7);
    r->owner_user_id = sq_col_text(st, 8);
    r->created_ms = sqlite3_column_int64(st, 9);
    r->expires_ms = sqlite3_column_int64(st, 10);
    r->revoked_ms = sqlite3_column_int64(st, 11);
    r->last_used_ms = sqlite3_column_int64(st, 12);
    return true;
}

int
sq_keys_list(struct tg_store *store, const char *org_id, tg_store_key_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_KEYS_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_key_rec r;
        if (!read_key(st, &r)) {
            /* Skip rather than fail: one damaged row must not lock every key out. */
            tg_log_error("store: key %s has a malformed hash; skipped", r.id ? r.id : "?");
            continue;
        }
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = sq_fail(s, sqlite3_extended_errcode(s->db), "list keys");
    }
    if (st != NULL) {
        sq_done(st);
    }
    sq_unlock(s);
    return rc;
}

/* ---- project updates, key roles ------------------------------------------------------------ */

int
sq_project_update(struct tg_store *store, const struct tg_project_rec *r)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_PROJECT_UPDATE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, r->id);
        sq_bind_text(st, 2, r->name);
        sq_bind_text(st, 3, r->environment);
        sqlite3_bind_int64(st, 4, r->archived_ms);
        sq_bind_text(st, 5, r->settings);
        rc = sq_run(s, st, "update project");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    sq_unlock(s);
    return rc;
}

int
sq_keys_set_role_by_user(struct tg_store *store, const char *user_id, const char *role)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_KEYS_SET_ROLE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        /* A user with no admin keys is not an error: there is simply nothing to change. */
        sq_bind_text(st, 1, user_id);
        sq_bind_text(st, 2, role);
        rc = sq_run(s, st, "set key roles");
    }
    sq_unlock(s);
    return rc;
}

/* ---- documents ------------------------------------------------------------------------------- */

struct doc_walk {
    tg_store_doc_cb cb;
    void *arg;
    size_t n;
};

static int
doc_row(sqlite3_stmt *st, void *arg)
{
    struct doc_walk *w = arg;
    struct tg_doc d = {
        .kind = sq_col_text(st, 0),
        .id = sq_col_text(st, 1),
        .org_id = sq_col_text(st, 2),
        .project_id = sq_col_text(st, 3),
        .data = sq_col_text(st, 4),
        .created_ms = sqlite3_column_int64(st, 5),
        .updated_ms = sqlite3_column_int64(st, 6),
    };
    w->n++;
    return w->cb(&d, w->arg);
}

int
sq_doc_get(struct tg_store *store, const char *kind, const char *id, tg_store_doc_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct doc_walk w = {cb, arg, 0};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_DOC_GET);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, kind);
        sq_bind_text(st, 2, id);
        rc = sq_each_row(s, st, doc_row, &w, "get document");
    }
    sq_unlock(s);
    return rc == 0 && w.n == 0 ? TG_ENOTFOUND : rc;
}

int
sq_doc_put(struct tg_store *store, const struct tg_doc *d)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_DOC_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, d->kind);
        sq_bind_text(st, 2, d->id);
        sq_bind_text(st, 3, d->org_id);
        sq_bind_text(st, 4, d->project_id);
        sq_bind_text(st, 5, d->data);
        sqlite3_bind_int64(st, 6, d->created_ms);
        sqlite3_bind_int64(st, 7, d->updated_ms);
        rc = sq_run(s, st, "put document");
    }
    sq_unlock(s);
    return rc;
}

int
sq_doc_delete(struct tg_store *store, const char *kind, const char *id)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_DOC_DELETE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, kind);
        sq_bind_text(st, 2, id);
        rc = sq_run(s, st, "delete document");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    sq_unlock(s);
    return rc;
}

int
sq_doc_list(struct tg_store *store, const char *kind, const char *org_id, const char *project_id,
            tg_store_doc_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct doc_walk w = {cb, arg, 0};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_DOC_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, kind);
        sq_bind_text(st, 2, org_id);
        sq_bind_text(st, 3, project_id);
        rc = sq_each_row(s, st, doc_row, &w, "list documents");
    }
    sq_unlock(s);
    return rc;
}

/* ---- audit log ---------------------------------------------------------------------------------
 */

/* Copies a stored hash; one of the wrong size (a damaged row) reads as all zero, which no
 * real hash is, so verification reports the entry instead of the store failing. */
static void
col_hash(sqlite3_stmt *st, int i, unsigned char out[TG_SHA256_BYTES])
{
    const void *p = sqlite3_column_blob(st, i);
    if (p != NULL && sqlite3_column_bytes(st, i) == TG_SHA256_BYTES) {
        memcpy(out, p, TG_SHA256_BYTES);
    } else {
        memset(out, 0, TG_SHA256_BYTES);
    }
}

struct audit_walk {
    tg_store_audit_cb cb;
    void *arg;
};

static int
audit_row(sqlite3_stmt *st, void *arg)
{
    struct audit_walk *w = arg;
    struct tg_audit_rec r = {
        .seq = sqlite3_column_int64(st, 0),
        .id = sq_col_text(st, 1),
        .org_id = sq_col_text(st, 2),
        .time_ms = sqlite3_column_int64(st, 3),
        .type = sq_col_text(st, 4),
        .actor_type = sq_col_text(st, 5),
        .actor_id = sq_col_text(st, 6),
        .actor_user = sq_col_text(st, 7),
        .project_id = sq_col_text(st, 8),
        .target_id = sq_col_text(st, 9),
        .before = sq_col_text(st, 10),
        .after = sq_col_text(st, 11),
        .source_addr = sq_col_text(st, 12),
    };
    col_hash(st, 13, r.prev_hash);
    col_hash(st, 14, r.hash);
    return w->cb(&r, w->arg);
}

/* Reads the org's last entry: *seq 0 and a zero hash when the log is empty. */
static int
audit_last(struct sq *s, const char *org_id, int64_t *seq, unsigned char hash[TG_SHA256_BYTES])
{
    *seq = 0;
    memset(hash, 0, TG_SHA256_BYTES);
    sqlite3_stmt *st = sq_stmt(s, S_AUDIT_LAST);
    if (st == NULL) {
        return TG_ESTORE;
    }
    sq_bind_text(st, 1, org_id);
    int rc = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *seq = sqlite3_column_int64(st, 0);
        col_hash(st, 1, hash);
    } else if (step != SQLITE_DONE) {
        rc = sq_fail(s, sqlite3_extended_errcode(s->db), "read last audit entry");
    }
    sq_done(st);
    return rc;
}

static int
audit_insert(struct sq *s, struct tg_audit_rec *r)
{
    int64_t last = 0;
    int rc = audit_last(s, r->org_id, &last, r->prev_hash);
    if (rc < 0) {
        return rc;
    }
    r->seq = last + 1;
    tg_audit_hash(r, r->hash);
    sqlite3_stmt *st = sq_stmt(s, S_AUDIT_INSERT);
    if (st == NULL) {
        return TG_ESTORE;
    }
    sqlite3_bind_int64(st, 1, r->seq);
    sq_bind_text(st, 2, r->id);
    sq_bind_text(st, 3, r->org_id);
    sqlite3_bind_int64(st, 4, r->time_ms);
    sq_bind_text(st, 5, r->type);
    sq_bind_text(st, 6, r->actor_type);
    sq_bind_text(st, 7, r->actor_id);
    sq_bind_text(st, 8, r->actor_user);
    sq_bind_text(st, 9, r->project_id);
    sq_bind_text(st, 10, r->target_id);
    sq_bind_text(st, 11, r->before);
    sq_bind_text(st, 12, r->after);
    sq_bind_text(st, 13, r->source_addr);
    sqlite3_bind_blob(st, 14, r->prev_hash, TG_SHA256_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 15, r->hash, TG_SHA256_BYTES, SQLITE_STATIC);
    return sq_run(s, st, "append audit entry");
}

int
sq_audit_append(struct tg_store *store, struct tg_audit_rec *r)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    /* Reading the last entry and inserting after it is one unit: inside the write
     * transaction no other process can append between the two. */
    int rc = sq_tx_begin(s);
    if (rc == 0) {
        rc = sq_tx_end(s, audit_insert(s, r));
    }
    sq_unlock(s);
    return rc;
}

int
sq_audit_list(struct tg_store *store, const struct tg_audit_query *q, tg_store_audit_cb cb,
              void *arg)
{
    if (q->org_id == NULL) {
        return TG_EINVAL;
    }
    struct sq *s = sq_of(store);
    char *types = sq_strings_json(q->types, q->n_types);
    char *actors = sq_strings_json(q->actor_ids, q->n_actor_ids);
    char *projects = sq_strings_json(q->project_ids, q->n_project_ids);
    struct audit_walk w = {cb, arg};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_AUDIT_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, q->org_id);
        sq_bind_text(st, 2, types);
        sq_bind_text(st, 3, actors);
        sq_bind_text(st, 4, projects);
        sqlite3_bind_int64(st, 5, q->since_ms);
        sqlite3_bind_int64(st, 6, q->until_ms);
        sqlite3_bind_int64(st, 7, q->before_seq);
        sqlite3_bind_int64(st, 8,
                           q->limit == 0 || q->limit > INT64_MAX ? -1 : (sqlite3_int64)q->limit);
        rc = sq_each_row(s, st, audit_row, &w, "list audit entries");
    }
    sq_unlock(s);
    free(types);
    free(actors);
    free(projects);
    return rc;
}

int
sq_audit_all(struct tg_store *store, const char *org_id, tg_store_audit_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct audit_walk w = {cb, arg};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_AUDIT_ALL);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
        rc = sq_each_row(s, st, audit_row, &w, "walk audit entries");
    }
    sq_unlock(s);
    return rc;
}

/* ---- config versions ----------------------------------------------------------------------------
 */

struct version_walk {
    tg_store_version_cb cb;
    void *arg;
    size_t n;
};

static int
version_row(sqlite3_stmt *st, void *arg)
{
    struct version_walk *w = arg;
    struct tg_version_rec r = {
        .number = sqlite3_column_int64(st, 0),
        .org_id = sq_col_text(st, 1),
        .project_id = sq_col_text(st, 2),
        .time_ms = sqlite3_column_int64(st, 3),
        .actor_id = sq_col_text(st, 4),
        .reason = sq_col_text(st, 5),
        .settings = sq_col_text(st, 6),
    };
    w->n++;
    return w->cb(&r, w->arg);
}

static int
version_insert(struct sq *s, struct tg_version_rec *r)
{
    sqlite3_stmt *st = sq_stmt(s, S_VERSION_LAST);
    if (st == NULL) {
        return TG_ESTORE;
    }
    sq_bind_text(st, 1, r->org_id);
    int64_t last = 0;
    int step = sqlite3_step(st);
    int rc = 0;
    if (step == SQLITE_ROW) {
        last = sqlite3_column_int64(st, 0);
    } else {
        rc = sq_fail(s, sqlite3_extended_errcode(s->db), "read last version");
    }
    sq_done(st);
    if (rc < 0) {
        return rc;
    }
    st = sq_stmt(s, S_VERSION_INSERT);
    if (st == NULL) {
        return TG_ESTORE;
    }
    sqlite3_bind_int64(st, 1, last + 1);
    sq_bind_text(st, 2, r->org_id);
    sq_bind_text(st, 3, r->project_id);
    sqlite3_bind_int64(st, 4, r->time_ms);
    sq_bind_text(st, 5, r->actor_id);
    sq_bind_text(st, 6, r->reason);
    sq_bind_text(st, 7, r->settings);
    rc = sq_run(s, st, "append version");
    if (rc == 0) {
        r->number = last + 1;
    }
    return rc;
}

int
sq_version_append(struct tg_store *store, struct tg_version_rec *r)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    int rc = sq_tx_begin(s);
    if (rc == 0) {
        rc = sq_tx_end(s, version_insert(s, r));
    }
    sq_unlock(s);
    return rc;
}

int
sq_version_list(struct tg_store *store, const char *org_id, const char *project_id,
                tg_store_version_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct version_walk w = {cb, arg, 0};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_VERSION_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
        sq_bind_text(st, 2, project_id);
        rc = sq_each_row(s, st, version_row, &w, "list versions");
    }
    sq_unlock(s);
    return rc;
}

int
sq_version_get(struct tg_store *store, const char *org_id, int64_t number, tg_store_version_cb cb,
               void *arg)
{
    struct sq *s = sq_of(store);
    struct version_walk w = {cb, arg, 0};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_VERSION_GET);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
        sqlite3_bind_int64(st, 2, number);
        rc = sq_each_row(s, st, version_row, &w, "get version");
    }
    sq_unlock(s);
    return rc == 0 && w.n == 0 ? TG_ENOTFOUND : rc;
}
