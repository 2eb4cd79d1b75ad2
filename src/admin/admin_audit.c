/*
 * admin_audit.c: reading the audit log and verifying its hash chain (owners only).
 *
 * Routes (under /v1/organization/):
 *
 *   GET audit_logs
 *       Query: effective_at[gt|gte|lt|lte]=<unix seconds>, project_ids[]=<id or name>,
 *       event_types[]=<type>, actor_ids[]=<admin key id>, limit (1..100, default 20),
 *       after=<entry id> (older entries than it), before=<entry id> (newer entries than it).
 *       Answer: {"object":"list","data":[entry...],"first_id","last_id","has_more"}, newest
 *       first. One entry, OpenAI's shape plus tollgate's fields after "<type>":
 *         {"id":"audit_log-...","object":"organization.audit_log","type":"project.updated",
 *          "effective_at":1767225600,
 *          "project":{"id":"proj_...","name":"staging"},               (absent when none)
 *          "actor":{"type":"api_key","api_key":{"id":"key_...","type":"user",
 *                   "user":{"id":"user-...","email":"ops@example.com"}}},   (user: null when
 *                                                                  the key has no user)
 *          "project.updated":{"id":<target id>,
 *                             "data":{...}                  (created: the new object)
 *                             "changes_requested":{...}},   (updated: members that changed,
 *                                                            null for a removed member)
 *          "before":{...}|null,"after":{...}|null,"source_address":"127.0.0.1",
 *          "seq":12,"prev_hash":"<64 hex>","hash":"<64 hex>"}
 *
 *   GET audit_logs/verify
 *       Recomputes every entry's hash (tg_audit_hash) in chain order and checks that seq runs
 *       1, 2, 3, ... without gaps and that each prev_hash is the hash of the entry before.
 *       Answer: {"object":"organization.audit_log.verification","valid":true|false,
 *                "entries":<entries read>,"first_invalid_seq":<seq>|null,"reason":str|null,
 *                "head_seq":<last seq>|null,"head_hash":"<hex>"|null}
 *       A deleted entry shows as a gap (first_invalid_seq is the missing number), an edited
 *       one as a hash mismatch at its seq. Deleting the newest entries leaves a shorter chain
 *       that is still consistent: keep head_seq/head_hash somewhere else to detect that.
 *
 * Both run on the thread pool (admin_int.h) and only read; the entries themselves are written
 * by admin_audit() in admin.c, inside each change's transaction.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

#define MAX_FILTER_VALUES 32

/* ---- users behind actors ------------------------------------------------------------------ */

/* The org's users (id -> email), read before listing: list callbacks must not call the store. */
struct user_map {
    char **ids;
    char **emails;
    size_t n;
    size_t cap;
};

static int
collect_user(const struct tg_doc *d, void *arg)
{
    struct user_map *m = arg;
    json_t *data = json_loads(d->data, 0, NULL);
    const char *email = tg_json_str(data, "email");
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->ids = tg_xrealloc(m->ids, m->cap * sizeof(*m->ids));
        m->emails = tg_xrealloc(m->emails, m->cap * sizeof(*m->emails));
    }
    m->ids[m->n] = tg_xstrdup(d->id);
    m->emails[m->n] = email ? tg_xstrdup(email) : NULL;
    m->n++;
    json_decref(data);
    return 0;
}

static void
user_map_free(struct user_map *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->ids[i]);
        free(m->emails[i]);
    }
    free(m->ids);
    free(m->emails);
}

static const char *
user_email(const struct user_map *m, const char *id)
{
    for (size_t i = 0; id != NULL && i < m->n; i++) {
        if (strcmp(m->ids[i], id) == 0) {
            return m->emails[i];
        }
    }
    return NULL;
}

/* ---- one entry -------------------------------------------------------------------------- */

/* The stored before/after text as JSON (a string when it is not JSON, null when absent). */
static json_t *
load_side(const char *text)
{
    if (text == NULL) {
        return json_null();
    }
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v != NULL ? v : json_string(text);
}

/* Members of after that differ from before (a removed member as null). */
static json_t *
changes_between(const json_t *before, const json_t *after)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)after, k, v)
    {
        json_t *old = json_object_get(before, k);
        if (old == NULL || !json_equal(old, v)) {
            json_object_set(out, k, v);
        }
    }
    json_object_foreach((json_t *)before, k, v)
    {
        if (json_object_get(after, k) == NULL) {
            json_object_set_new(out, k, json_null());
        }
    }
    return out;
}

static json_t *
hex_json(const unsigned char h[TG_SHA256_BYTES])
{
    char hex[2 * TG_SHA256_BYTES + 1];
    tg_hex_encode(hex, h, TG_SHA256_BYTES);
    return json_string(hex);
}

static json_t *
str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

static json_t *
entry_json(const struct tg_audit_rec *r, const struct tg_state *st, const struct user_map *users)
{
    json_t *e = json_object();
    json_object_set_new(e, "id", str_or_null(r->id));
    json_object_set_new(e, "object", json_string("organization.audit_log"));
    json_object_set_new(e, "type", str_or_null(r->type));
    json_object_set_new(e, "effective_at", json_integer(r->time_ms / 1000));
    if (r->project_id != NULL) {
        /* The snapshot holds archived projects too; a name is null only for a project the
         * store no longer has. */
        const struct tg_project *p = tg_state_project(st, r->project_id);
        json_object_set_new(e, "project",
                            json_pack("{s:s,s:o}", "id", r->project_id, "name",
                                      p != NULL ? json_string(p->name) : json_null()));
    }
    json_t *user = json_null();
    if (r->actor_user != NULL) {
        user = json_pack("{s:s,s:o}", "id", r->actor_user, "email",
                         str_or_null(user_email(users, r->actor_user)));
    }
    json_t *key =
        json_pack("{s:o,s:s,s:o}", "id", str_or_null(r->actor_id), "type", "user", "user", user);
    json_object_set_new(e, "actor",
                        json_pack("{s:o,s:o}", "type",
                                  str_or_null(r->actor_type ? r->actor_type : "api_key"), "api_key",
                                  key));

    json_t *before = load_side(r->before);
    json_t *after = load_side(r->after);
    json_t *details = json_pack("{s:o}", "id", str_or_null(r->target_id));
    if (json_is_null(before) && json_is_object(after)) {
        json_object_set(details, "data", after);
    } else if (json_is_object(before) && json_is_object(after)) {
        json_object_set_new(details, "changes_requested", changes_between(before, after));
    }
    json_object_set_new(e, r->type ? r->type : "event", details);
    json_object_set_new(e, "before", before);
    json_object_set_new(e, "after", after);
    json_object_set_new(e, "source_address", str_or_null(r->source_addr));
    json_object_set_new(e, "seq", json_integer(r->seq));
    json_object_set_new(e, "prev_hash", hex_json(r->prev_hash));
    json_object_set_new(e, "hash", hex_json(r->hash));
    return e;
}

/* ---- query parameters ------------------------------------------------------------------- */

static bool
parse_int(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

/* effective_at[op] into the query's [since_ms, until_ms) window. */
static bool
parse_time_filters(struct admin_job *j, struct tg_audit_query *q)
{
    static const char *const ops[] = {"effective_at[gt]", "effective_at[gte]", "effective_at[lt]",
                                      "effective_at[lte]"};
    for (size_t i = 0; i < 4; i++) {
        const char *v = admin_query(j, ops[i]);
        long long s;
        if (v == NULL) {
            continue;
        }
        if (!parse_int(v, &s) || s < 0 || s > INT64_MAX / 1000 - 1) {
            admin_error(j, 400, "effective_at filters take Unix seconds.", ops[i], NULL);
            return false;
        }
        int64_t ms = (int64_t)s * 1000;
        /* Entries are compared at millisecond precision, filters at second precision: "gt s"
         * starts after the whole second s, "lte s" includes all of it. */
        int64_t since = i == 0 ? ms + 1000 : i == 1 ? ms : 0;
        int64_t until = i == 2 ? ms : i == 3 ? ms + 1000 : 0;
        if (since > q->since_ms) {
            q->since_ms = since;
        }
        if (until != 0 && (q->until_ms == 0 || until < q->until_ms)) {
            /* until_ms 0 means "no bound": an empty window is kept empty with 1 ms. */
            q->until_ms = until > 0 ? until : 1;
        }
    }
    return true;
}

/* A repeated filter (name or name[]): values in the request's arena. */
static bool
parse_list(struct admin_job *j, const char *name, const char *const **out, size_t *n)
{
    const char *vals[MAX_FILTER_VALUES];
    size_t count = tg_http_req_query_all(j->req, name, vals, MAX_FILTER_VALUES);
    if (count > MAX_FILTER_VALUES) {
        char msg[128];
        snprintf(msg, sizeof(msg), "At most %d values of %s.", MAX_FILTER_VALUES, name);
        admin_error(j, 400, msg, name, NULL);
        return false;
    }
    if (count == 0) {
        return true;
    }
    const char **copy = tg_arena_alloc(&j->req->arena, count * sizeof(*copy));
    memcpy(copy, vals, count * sizeof(*copy));
    *out = copy;
    *n = count;
    return true;
}

struct find_seq {
    const char *id;
    int64_t seq;
};

static int
match_id(const struct tg_audit_rec *r, void *arg)
{
    struct find_seq *f = arg;
    if (strcmp(r->id, f->id) == 0) {
        f->seq = r->seq;
        return 1;
    }
    return 0;
}

/* The seq of the entry a cursor names (its id, or its seq as a number), or 0 after a 400. */
static int64_t
cursor_seq(struct admin_job *j, const char *name, const char *id)
{
    long long n;
    if (parse_int(id, &n) && n > 0) {
        return n;
    }
    struct find_seq f = {.id = id};
    struct tg_audit_query q = {.org_id = j->state->org_id};
    int rc = j->store->ops->audit_list(j->store, &q, match_id, &f);
    if (rc < 0) {
        admin_store_error(j, rc, "The audit log could not be read.");
        return 0;
    }
    if (f.seq == 0) {
        admin_error(j, 400, "No audit log entry with that id.", name, NULL);
    }
    return f.seq;
}

/* ---- GET audit_logs ---------------------------------------------------------------------- */

struct list_scan {
    struct admin_job *j;
    const struct user_map *users;
    size_t limit;
    int64_t newer_than; /* the before= cursor's seq, or 0 */
    /* Rendered entries: the first limit + 1 (after= or no cursor), or a ring of the last
     * limit before the cursor (before=), since the store lists newest first. */
    char **items;
    char **ids;
    size_t n_seen;
};

static int
scan_entry(const struct tg_audit_rec *r, void *arg)
{
    struct list_scan *s = arg;
    if (s->newer_than != 0 && r->seq <= s->newer_than) {
        return 1; /* newest first: everything from here on is at or before the cursor */
    }
    size_t slot = s->newer_than != 0 ? s->n_seen % s->limit : s->n_seen;
    if (s->newer_than == 0 && s->n_seen == s->limit) {
        s->n_seen++; /* one more than a page: has_more */
        return 1;
    }
    json_t *e = entry_json(r, s->j->state, s->users);
    free(s->items[slot]);
    free(s->ids[slot]);
    s->items[slot] = json_dumps(e, JSON_COMPACT);
    s->ids[slot] = tg_xstrdup(r->id);
    json_decref(e);
    s->n_seen++;
    return 0;
}

static void
write_list(struct list_scan *s)
{
    struct tg_buf *b = &s->j->out;
    size_t n = s->n_seen < s->limit ? s->n_seen : s->limit;
    /* With before=, the ring holds the n entries nearest the cursor; the oldest slot written
     * first is where the newest of them sits. */
    size_t start = s->newer_than != 0 && s->n_seen > s->limit ? s->n_seen % s->limit : 0;
    tg_buf_reset(b);
    tg_buf_append_str(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < n; i++) {
        tg_buf_append_str(b, i ? "," : "");
        tg_buf_append_str(b, s->items[(start + i) % s->limit]);
    }
    tg_buf_append_str(b, "],\"first_id\":");
    if (n > 0) {
        tg_json_quote(b, s->ids[start % s->limit]);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_append_str(b, ",\"last_id\":");
    if (n > 0) {
        tg_json_quote(b, s->ids[(start + n - 1) % s->limit]);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_appendf(b, ",\"has_more\":%s}", s->n_seen > s->limit ? "true" : "false");
}

static bool
parse_limit(struct admin_job *j, size_t *out)
{
    const char *v = admin_query(j, "limit");
    long long n = 20;
    if (v != NULL && (!parse_int(v, &n) || n < 1 || n > 100)) {
        admin_error(j, 400, "limit must be an integer from 1 to 100.", "limit", NULL);
        return false;
    }
    *out = (size_t)n;
    return true;
}

/* Project filters accept names too; an unknown one matches nothing rather than failing, as
 * the log also names projects that no longer exist. */
static void
resolve_projects(struct admin_job *j, const char *const *in, size_t n)
{
    const char **ids = (const char **)in;
    for (size_t i = 0; i < n; i++) {
        const struct tg_project *p = tg_state_project(j->state, ids[i]);
        if (p != NULL) {
            ids[i] = p->id;
        }
    }
}

static void
list_audit_logs(struct admin_job *j)
{
    struct tg_audit_query q = {.org_id = j->state->org_id};
    struct list_scan s = {.j = j};
    struct user_map users = {0};
    if (!parse_limit(j, &s.limit) || !parse_time_filters(j, &q) ||
        !parse_list(j, "project_ids", &q.project_ids, &q.n_project_ids) ||
        !parse_list(j, "event_types", &q.types, &q.n_types) ||
        !parse_list(j, "actor_ids", &q.actor_ids, &q.n_actor_ids)) {
        return;
    }
    resolve_projects(j, q.project_ids, q.n_project_ids);
    const char *after = admin_query(j, "after");
    const char *before = admin_query(j, "before");
    if (after != NULL && before != NULL) {
        admin_error(j, 400, "Give after or before, not both.", "before", NULL);
        return;
    }
    if (after != NULL && (q.before_seq = cursor_seq(j, "after", after)) == 0) {
        return;
    }
    if (before != NULL && (s.newer_than = cursor_seq(j, "before", before)) == 0) {
        return;
    }
    q.limit = s.newer_than != 0 ? 0 : s.limit + 1;
    int rc =
        j->store->ops->doc_list(j->store, "user", j->state->org_id, NULL, collect_user, &users);
    s.users = &users;
    s.items = tg_xcalloc(s.limit + 1, sizeof(*s.items));
    s.ids = tg_xcalloc(s.limit + 1, sizeof(*s.ids));
    if (rc >= 0) {
        rc = j->store->ops->audit_list(j->store, &q, scan_entry, &s);
    }
    if (rc < 0) {
        admin_store_error(j, rc, "The audit log could not be read.");
    } else {
        write_list(&s);
    }
    for (size_t i = 0; i <= s.limit; i++) {
        free(s.items[i]);
        free(s.ids[i]);
    }
    free(s.items);
    free(s.ids);
    user_map_free(&users);
}

/* ---- GET audit_logs/verify --------------------------------------------------------------- */

struct verify_scan {
    int64_t entries;
    int64_t next_seq;
    unsigned char prev[TG_SHA256_BYTES];
    int64_t bad_seq;
    char reason[160];
};

static int
verify_entry(const struct tg_audit_rec *r, void *arg)
{
    struct verify_scan *v = arg;
    unsigned char h[TG_SHA256_BYTES];
    if (r->seq != v->next_seq) {
        v->bad_seq = v->next_seq;
        snprintf(v->reason, sizeof(v->reason),
                 r->seq > v->next_seq ? "entry %lld is missing (the chain jumps from %lld to %lld)"
                                      : "entry %lld is out of order (seq %lld follows %lld)",
                 (long long)v->next_seq, (long long)v->next_seq - 1, (long long)r->seq);
        return 1;
    }
    v->entries++;
    if (!tg_mem_equal_ct(r->prev_hash, v->prev, TG_SHA256_BYTES)) {
        v->bad_seq = r->seq;
        snprintf(v->reason, sizeof(v->reason),
                 "entry %lld does not link to the hash of entry %lld (prev_hash differs)",
                 (long long)r->seq, (long long)r->seq - 1);
        return 1;
    }
    tg_audit_hash(r, h);
    if (!tg_mem_equal_ct(h, r->hash, TG_SHA256_BYTES)) {
        v->bad_seq = r->seq;
        snprintf(v->reason, sizeof(v->reason),
                 "entry %lld was changed after it was written (its hash does not match)",
                 (long long)r->seq);
        return 1;
    }
    memcpy(v->prev, r->hash, TG_SHA256_BYTES);
    v->next_seq++;
    return 0;
}

static void
verify_audit_log(struct admin_job *j)
{
    struct verify_scan v = {.next_seq = 1};
    int rc = j->store->ops->audit_all(j->store, j->state->org_id, verify_entry, &v);
    if (rc < 0) {
        admin_store_error(j, rc, "The audit log could not be read.");
        return;
    }
    bool is_valid = v.bad_seq == 0;
    json_t *o = json_pack("{s:s,s:b,s:I}", "object", "organization.audit_log.verification", "valid",
                          is_valid, "entries", (json_int_t)v.entries);
    json_object_set_new(o, "first_invalid_seq", is_valid ? json_null() : json_integer(v.bad_seq));
    json_object_set_new(o, "reason", is_valid ? json_null() : json_string(v.reason));
    bool has_head = is_valid && v.entries > 0;
    json_object_set_new(o, "head_seq", has_head ? json_integer(v.next_seq - 1) : json_null());
    json_object_set_new(o, "head_hash", has_head ? hex_json(v.prev) : json_null());
    tg_buf_reset(&j->out);
    tg_json_dump_buf(o, &j->out);
    json_decref(o);
    if (!is_valid) {
        tg_log_warn("admin: audit chain of org %s is broken at seq %lld: %s", j->state->org_id,
                    (long long)v.bad_seq, v.reason);
    }
}

const struct admin_route tg_admin_routes_audit[] = {
    {TG_HTTP_GET, "audit_logs", ADMIN_OWNER,
     "List audit log entries (filters: effective_at, project_ids, event_types, actor_ids)",
     list_audit_logs},
    {TG_HTTP_GET, "audit_logs/verify", ADMIN_OWNER,
     "Verify the audit log's hash chain (gaps, edits, broken links)", verify_audit_log},
    {0, NULL, 0, NULL, NULL},
};
