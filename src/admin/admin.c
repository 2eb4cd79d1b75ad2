/*
 * admin.c: the admin API's router and the helpers every resource file shares (admin_int.h).
 *
 * A request under /v1/organization/ is matched against the joined route tables: the path is
 * split into percent-decoded segments and compared with each row's pattern, whose {name}
 * segments capture parameters. No row for the path is a 404; rows only for other methods a
 * 405. {project_id} is resolved by id or name in the caller's state snapshot (404 when
 * absent). The body of a non-GET request is parsed here (empty means {}), so handlers see a
 * JSON object, or nothing when the body's Content-Type says it is not JSON (a YAML file).
 *
 * The access check that needs no store (owner-only routes) runs on the loop; everything else,
 * the project membership check included, runs on the libuv thread pool, where handlers may
 * block on the store. A non-GET handler runs inside one store transaction that is rolled back
 * when it answers with a status of 400 or more; when it asked for a reload, the snapshot is
 * rebuilt after the commit and before the answer is sent on the loop. The job lives in the
 * request's arena and holds a reference to the snapshot, released by an arena cleanup.
 */
#include "admin/admin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

#define MAX_SEGMENTS 8
#define BODY_MAX_DEPTH 16

/* The route tables, one per resource file. */
static const struct admin_route *const tables[] = {
    tg_admin_routes_projects,
    tg_admin_routes_keys,
    tg_admin_routes_usage,
    tg_admin_routes_users,
    tg_admin_routes_service_accounts,
    tg_admin_routes_audit,
    tg_admin_routes_history,
    tg_admin_routes_rate_limits,
    tg_admin_routes_budgets,
    tg_admin_routes_costs,
    tg_admin_routes_deployments,
    tg_admin_routes_policies,
    tg_admin_routes_cache,
    tg_admin_routes_monitor,
    tg_admin_routes_dashboard,
};

/* Routes reachable without an admin key, matched by worker.c before authentication. */
static const struct admin_route public_routes[] = {
    {TG_HTTP_POST, "invites/accept", ADMIN_ORG_READ,
     "Accept an invite with its one-time token (no key needed)", admin_invite_accept},
    {0, NULL, 0, NULL, NULL},
};

/* ---- answering and helpers ------------------------------------------------------------- */

const char *
admin_param(const struct admin_job *j, const char *name)
{
    for (size_t i = 0; i < j->n_params; i++) {
        if (strcmp(j->param_names[i], name) == 0) {
            return j->params[i];
        }
    }
    return NULL;
}

const char *
admin_query(struct admin_job *j, const char *name)
{
    return tg_http_req_query(j->req, name);
}

void
admin_error(struct admin_job *j, int status, const char *message, const char *param,
            const char *code)
{
    j->status = status;
    j->content_type = NULL;
    tg_buf_reset(&j->out);
    tg_json_error_body(&j->out, message, "invalid_request_error", param, code);
}

void
admin_store_error(struct admin_job *j, int rc, const char *what)
{
    char msg[200];
    if (rc == TG_ENOTFOUND) {
        snprintf(msg, sizeof(msg), "No such %s.", what);
        admin_error(j, 404, msg, NULL, NULL);
    } else if (rc == TG_EEXISTS) {
        snprintf(msg, sizeof(msg), "The %s already exists.", what);
        admin_error(j, 409, msg, NULL, "already_exists");
    } else {
        tg_log_error("admin: %s %s: store failure on the %s: %s", j->req->method_name, j->req->path,
                     what, tg_strerror(rc));
        snprintf(msg, sizeof(msg), "The %s could not be read or written; try again.", what);
        j->status = 500;
        j->content_type = NULL;
        tg_buf_reset(&j->out);
        tg_json_error_body(&j->out, msg, "server_error", NULL, NULL);
    }
}

int
admin_audit(struct admin_job *j, const char *type, const char *project_id, const char *target_id,
            const char *before, const char *after)
{
    char id[48];
    tg_id_new(id, sizeof(id), "audit_log-", 24);
    struct tg_audit_rec r = {
        .id = id,
        .org_id = j->state->org_id,
        .time_ms = tg_clock_unix_ms(),
        .type = type,
        /* A public route (invite acceptance) has no key: the invite is the actor. */
        .actor_type = j->key != NULL ? "api_key" : "invite",
        .actor_id = j->key != NULL ? j->key->id : target_id,
        .actor_user = j->user_id,
        .project_id = project_id,
        .target_id = target_id,
        .before = before,
        .after = after,
        .source_addr = j->req->remote_addr,
    };
    return j->store->ops->audit_append(j->store, &r);
}

int
admin_version(struct admin_job *j, const char *project_id, const char *settings, const char *reason)
{
    struct tg_version_rec r = {
        .org_id = j->state->org_id,
        .project_id = project_id,
        .time_ms = tg_clock_unix_ms(),
        .actor_id = j->key != NULL ? j->key->id : "",
        .reason = reason,
        .settings = settings != NULL ? settings : "{}",
    };
    return j->store->ops->version_append(j->store, &r);
}

void
admin_append_time(struct tg_buf *out, int64_t ms)
{
    if (ms == 0) {
        tg_buf_append_str(out, "null");
    } else {
        tg_buf_appendf(out, "%lld", (long long)(ms / 1000));
    }
}

/* ---- pagination ------------------------------------------------------------------------- */

bool
admin_page_begin(struct admin_page *pg, struct admin_job *j)
{
    memset(pg, 0, sizeof(*pg));
    pg->j = j;
    pg->limit = 20;
    const char *limit = admin_query(j, "limit");
    if (limit != NULL) {
        char *end = NULL;
        errno = 0;
        long l = strtol(limit, &end, 10);
        if (errno != 0 || end == limit || *end != '\0' || l < 1 || l > 100) {
            admin_error(j, 400, "limit must be an integer from 1 to 100.", "limit", NULL);
            return false;
        }
        pg->limit = (size_t)l;
    }
    pg->after = admin_query(j, "after");
    if (pg->after != NULL && pg->after[0] == '\0') {
        pg->after = NULL;
    }
    tg_buf_append_str(&j->out, "{\"object\":\"list\",\"data\":[");
    return true;
}

bool
admin_page_add(struct admin_page *pg, const char *id, const char *item_json)
{
    if (pg->has_more) {
        return false;
    }
    if (pg->after != NULL && !pg->is_after_seen) {
        pg->is_after_seen = strcmp(id, pg->after) == 0;
        return true;
    }
    if (pg->n == pg->limit) {
        pg->has_more = true;
        return false;
    }
    tg_buf_append_str(&pg->j->out, pg->n ? "," : "");
    tg_buf_append_str(&pg->j->out, item_json);
    if (pg->n == 0) {
        snprintf(pg->first_id, sizeof(pg->first_id), "%s", id);
    }
    snprintf(pg->last_id, sizeof(pg->last_id), "%s", id);
    pg->n++;
    return true;
}

void
admin_page_end(struct admin_page *pg)
{
    struct tg_buf *b = &pg->j->out;
    tg_buf_append_str(b, "],\"first_id\":");
    if (pg->n > 0) {
        tg_json_quote(b, pg->first_id);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_append_str(b, ",\"last_id\":");
    if (pg->n > 0) {
        tg_json_quote(b, pg->last_id);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_appendf(b, ",\"has_more\":%s}", pg->has_more ? "true" : "false");
}

/* ---- body checks -------------------------------------------------------------------------- */

bool
admin_body_only(struct admin_job *j, const char *const *allowed)
{
    if (j->body == NULL) {
        return true;
    }
    const char *name;
    json_t *v;
    json_object_foreach(j->body, name, v)
    {
        bool is_known = false;
        for (size_t i = 0; allowed[i] != NULL && !is_known; i++) {
            is_known = strcmp(allowed[i], name) == 0;
        }
        if (!is_known) {
            char msg[200];
            snprintf(msg, sizeof(msg), "Unrecognized request argument supplied: %.100s", name);
            admin_error(j, 400, msg, name, "unknown_parameter");
            return false;
        }
    }
    return true;
}

bool
admin_body_string(struct admin_job *j, const char *name, bool required, size_t max_len,
                  const char **out)
{
    char msg[200];
    *out = NULL;
    json_t *v = j->body != NULL ? json_object_get(j->body, name) : NULL;
    if (v == NULL) {
        if (required) {
            snprintf(msg, sizeof(msg), "Missing required parameter: '%s'.", name);
            admin_error(j, 400, msg, name, "missing_required_parameter");
            return false;
        }
        return true;
    }
    if (!json_is_string(v)) {
        snprintf(msg, sizeof(msg), "Invalid type for '%s': expected a string.", name);
        admin_error(j, 400, msg, name, "invalid_type");
        return false;
    }
    const char *s = json_string_value(v);
    if (s[0] == '\0' || strlen(s) > max_len) {
        snprintf(msg, sizeof(msg), "'%s' must be 1 to %zu characters long.", name, max_len);
        admin_error(j, 400, msg, name, "invalid_value");
        return false;
    }
    *out = s;
    return true;
}

/* ---- the job ------------------------------------------------------------------------------ */

/* Inside the transaction: any error answer rolls the change back. */
static int
run_in_tx(struct tg_store *s, void *arg)
{
    struct admin_job *j = arg;
    j->route->run(j);
    return j->status >= 400 ? TG_EINVAL : 0;
}

struct member_probe {
    bool is_found;
};

static int
found_member(const struct tg_doc *d, void *arg)
{
    ((struct member_probe *)arg)->is_found = true;
    return 0;
}

/* A reader may use a project route when a "member" document links them to the project. */
static bool
check_member(struct admin_job *j)
{
    if (j->is_owner || j->route->access != ADMIN_PROJECT || j->project == NULL) {
        return true;
    }
    struct member_probe probe = {false};
    int rc = TG_ENOTFOUND;
    if (j->user_id != NULL) {
        char id[160];
        snprintf(id, sizeof(id), "pm_%s_%s", j->project->id, j->user_id);
        rc = j->store->ops->doc_get(j->store, "member", id, found_member, &probe);
    }
    if (rc < 0 && rc != TG_ENOTFOUND) {
        admin_store_error(j, rc, "project membership");
        return false;
    }
    if (!probe.is_found) {
        admin_error(j, 403,
                    "You are not a member of this project: ask an organization owner to add "
                    "you to it.",
                    NULL, "not_a_project_member");
        return false;
    }
    return true;
}

static void
work_cb(uv_work_t *w)
{
    struct admin_job *j = w->data;
    if (!check_member(j)) {
        return;
    }
    if (j->req->method == TG_HTTP_GET || j->req->method == TG_HTTP_HEAD) {
        j->route->run(j);
        return;
    }
    int rc = j->store->ops->transact(j->store, run_in_tx, j);
    if (rc < 0 && j->status < 400) {
        /* The handler succeeded but the commit did not. */
        admin_store_error(j, rc, "change");
        j->reload = false;
    }
    if (j->status < 400 && j->reload) {
        rc = tg_state_reload();
        if (rc < 0) {
            /* Committed, so the answer stands; the next reload will pick the change up. */
            tg_log_error("admin: %s %s committed but the state reload failed: %s",
                         j->req->method_name, j->req->path, tg_strerror(rc));
        }
    }
}

static void
after_work_cb(uv_work_t *w, int status)
{
    struct admin_job *j = w->data;
    if (j->status >= 500) {
        tg_log_warn("admin: %s %s answered %d", j->req->method_name, j->req->path, j->status);
    }
    tg_http_respond(j->req, j->status, j->content_type ? j->content_type : "application/json", NULL,
                    0, j->out.data ? j->out.data : "", j->out.len);
}

static void
job_cleanup(void *arg)
{
    struct admin_job *j = arg;
    tg_buf_deinit(&j->out);
    json_decref(j->body);
    tg_state_unref(j->state);
}

static struct admin_job *
job_new(struct tg_http_req *req, struct tg_state *state, const struct tg_key_entry *key,
        const struct admin_route *route)
{
    struct admin_job *j = tg_arena_alloc(&req->arena, sizeof(*j));
    j->req = req;
    j->state = state;
    atomic_fetch_add(&state->refs, 1);
    j->store = tg_state_env_get()->store;
    j->key = key;
    j->user_id = key != NULL ? key->owner_user_id : NULL;
    j->is_owner = key != NULL && key->role != NULL && strcmp(key->role, "owner") == 0;
    j->route = route;
    j->status = 200;
    tg_buf_init(&j->out, 0);
    tg_arena_cleanup_add(&req->arena, job_cleanup, j);
    j->work.data = j;
    return j;
}

/* ---- matching ----------------------------------------------------------------------------- */

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s in place ("%2F" inside a segment is data, not a separator, since the
 * path was split first); a malformed escape stays as written. */
static void
percent_decode(char *s)
{
    char *out = s;
    for (const char *p = s; *p != '\0'; p++) {
        int hi, lo;
        if (p[0] == '%' && (hi = hex_value(p[1])) >= 0 && (lo = hex_value(p[2])) >= 0) {
            *out++ = (char)(hi * 16 + lo);
            p += 2;
        } else {
            *out++ = *p;
        }
    }
    *out = '\0';
}

/* Splits rest ("a/b/c") into percent-decoded segments in the arena. Returns how many, or
 * cap + 1 when there are more (no route is that deep). */
static size_t
split_path(struct tg_http_req *req, const char *rest, const char **seg, size_t cap)
{
    size_t n = 0;
    while (*rest != '\0' && n < cap) {
        const char *slash = strchr(rest, '/');
        size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
        char *s = tg_arena_strndup(&req->arena, rest, len);
        percent_decode(s);
        seg[n++] = s;
        rest += len + (slash ? 1 : 0);
    }
    return *rest == '\0' ? n : cap + 1;
}

/* Whether the pattern matches the segments; returns the number of literal segments (a more
 * specific row wins) or -1. */
static int
pattern_score(const char *pattern, const char **seg, size_t n)
{
    int literals = 0;
    size_t i = 0;
    const char *p = pattern;
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (i == n) {
            return -1;
        }
        if (p[0] == '{') {
            if (seg[i][0] == '\0') {
                return -1;
            }
        } else if (strlen(seg[i]) != len || strncmp(seg[i], p, len) != 0) {
            return -1;
        } else {
            literals++;
        }
        i++;
        p += len + (slash ? 1 : 0);
    }
    return i == n ? literals : -1;
}

static bool
method_matches(enum tg_http_method want, enum tg_http_method got)
{
    return want == got || (want == TG_HTTP_GET && got == TG_HTTP_HEAD);
}

/* Best row for the segments: sets *path_known when any row matches the path. */
static const struct admin_route *
find_route(const struct admin_route *const *tabs, size_t n_tabs, enum tg_http_method method,
           const char **seg, size_t n, bool *path_known)
{
    const struct admin_route *best = NULL;
    int best_score = -1;
    *path_known = false;
    for (size_t t = 0; t < n_tabs; t++) {
        for (const struct admin_route *r = tabs[t]; r->pattern != NULL; r++) {
            int score = pattern_score(r->pattern, seg, n);
            if (score < 0) {
                continue;
            }
            *path_known = true;
            if (method_matches(r->method, method) && score > best_score) {
                best = r;
                best_score = score;
            }
        }
    }
    return best;
}

/* Fills the job's parameters from the pattern; resolves {project_id}. False after answering
 * 404 for an unknown project. */
static bool
bind_params(struct admin_job *j, const char **seg)
{
    const char *p = j->route->pattern;
    size_t i = 0;
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (p[0] == '{' && j->n_params < ADMIN_MAX_PARAMS) {
            const char *name = tg_arena_strndup(&j->req->arena, p + 1, len - 2);
            const char *value = seg[i];
            if (strcmp(name, "project_id") == 0) {
                j->project = tg_state_project(j->state, value);
                if (j->project == NULL) {
                    admin_error(j, 404, "No such project.", "project_id", "project_not_found");
                    return false;
                }
                value = j->project->id;
            }
            j->param_names[j->n_params] = name;
            j->params[j->n_params++] = value;
        }
        i++;
        p += len + (slash ? 1 : 0);
    }
    return true;
}

/* Parses the body of a non-GET request into j->body (an object; empty means {}). */
static bool
parse_body(struct admin_job *j)
{
    struct tg_http_req *req = j->req;
    if (req->method == TG_HTTP_GET || req->method == TG_HTTP_HEAD) {
        return true;
    }
    bool is_blank = true;
    for (size_t i = 0; i < req->body.len && is_blank; i++) {
        is_blank = strchr(" \t\r\n", req->body.data[i]) != NULL;
    }
    if (is_blank) {
        j->body = json_object();
        return true;
    }
    /* A body declared as something other than JSON (apply takes a YAML file) is left to the
     * handler in req->body; j->body stays NULL. */
    const char *type = tg_http_req_header(req, "content-type");
    if (type != NULL && strstr(type, "json") == NULL) {
        return true;
    }
    char err[256];
    j->body = tg_json_parse(req->body.data, req->body.len, BODY_MAX_DEPTH, err, sizeof(err));
    if (j->body == NULL) {
        char msg[320];
        snprintf(msg, sizeof(msg), "We could not parse the JSON body of your request. (%s)", err);
        admin_error(j, 400, msg, NULL, "invalid_json");
        return false;
    }
    if (!json_is_object(j->body)) {
        admin_error(j, 400, "The request body must be a JSON object.", NULL, "invalid_json");
        return false;
    }
    return true;
}

static void
respond_now(struct admin_job *j)
{
    tg_http_respond(j->req, j->status, j->content_type ? j->content_type : "application/json", NULL,
                    0, j->out.data ? j->out.data : "", j->out.len);
}

static void
route_and_run(struct tg_http_req *req, uv_loop_t *loop, struct tg_state *state,
              const struct tg_key_entry *key, const struct admin_route *const *tabs, size_t n_tabs)
{
    const char *seg[MAX_SEGMENTS];
    size_t n = split_path(req, req->path + strlen("/v1/organization/"), seg, MAX_SEGMENTS);
    bool path_known = false;
    const struct admin_route *r =
        n <= MAX_SEGMENTS ? find_route(tabs, n_tabs, req->method, seg, n, &path_known) : NULL;
    if (r == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Invalid URL (%s %.200s)", req->method_name, req->path);
        tg_http_respond_error(req, path_known ? 405 : 404, msg, "invalid_request_error", NULL,
                              NULL);
        return;
    }
    struct admin_job *j = job_new(req, state, key, r);
    if (!bind_params(j, seg) || !parse_body(j)) {
        respond_now(j);
        return;
    }
    if (key != NULL && r->access == ADMIN_OWNER && !j->is_owner) {
        admin_error(j, 403,
                    "This action needs the organization owner role; your admin key has the "
                    "reader role.",
                    NULL, "insufficient_role");
        respond_now(j);
        return;
    }
    if (uv_queue_work(loop, &j->work, work_cb, after_work_cb) != 0) {
        tg_http_respond_error(req, 500, "The admin request could not be queued.", "server_error",
                              NULL, NULL);
    }
}

void
tg_admin_handle(struct tg_http_req *req, uv_loop_t *loop, struct tg_state *state,
                const struct tg_key_entry *key)
{
    route_and_run(req, loop, state, key, tables, sizeof(tables) / sizeof(tables[0]));
}

void
tg_admin_handle_public(struct tg_http_req *req, uv_loop_t *loop, struct tg_state *state)
{
    static const struct admin_route *const pub[] = {public_routes};
    route_and_run(req, loop, state, NULL, pub, 1);
}

bool
tg_admin_is_public(const struct tg_http_req *req)
{
    const char *prefix = "/v1/organization/";
    if (strncmp(req->path, prefix, strlen(prefix)) != 0) {
        return false;
    }
    for (const struct admin_route *r = public_routes; r->pattern != NULL; r++) {
        if (strcmp(req->path + strlen(prefix), r->pattern) == 0 && r->method == req->method) {
            return true;
        }
    }
    return false;
}

/* ---- key listings ------------------------------------------------------------------------ */

static int
scan_key(const struct tg_key_rec *k, void *arg)
{
    struct admin_key_scan *s = arg;
    if (!s->keep(s->j, k)) {
        return 0;
    }
    if (s->want_id != NULL) {
        if (strcmp(k->id, s->want_id) == 0) {
            s->append(&s->one, k, NULL);
            s->is_active = k->revoked_ms == 0;
        }
        return 0;
    }
    struct tg_buf item;
    tg_buf_init(&item, 0);
    s->append(&item, k, NULL);
    bool more = admin_page_add(&s->page, k->id, item.data);
    tg_buf_deinit(&item);
    return more ? 0 : 1;
}

void
admin_keys_list(struct admin_key_scan *s, const char *what)
{
    struct admin_job *j = s->j;
    s->want_id = NULL;
    if (!admin_page_begin(&s->page, j)) {
        return;
    }
    int rc = j->store->ops->keys_list(j->store, j->state->org_id, scan_key, s);
    if (rc < 0) {
        admin_store_error(j, rc, what);
        return;
    }
    admin_page_end(&s->page);
}

bool
admin_keys_find(struct admin_key_scan *s, const char *what)
{
    struct admin_job *j = s->j;
    s->want_id = admin_param(j, "key_id");
    tg_buf_init(&s->one, 0);
    int rc = j->store->ops->keys_list(j->store, j->state->org_id, scan_key, s);
    if (rc < 0 || s->one.len == 0) {
        admin_store_error(j, rc < 0 ? rc : TG_ENOTFOUND, what);
        return false;
    }
    return true;
}
