/*
 * admin.c: admin API routes (see admin.h).
 *
 * Each route is one row of the table below. A handler either answers from the state snapshot
 * at once (lists that the snapshot holds), or describes a job that runs on the thread pool
 * (store reads and writes) and is answered on the loop when done. Jobs borrow the request
 * (valid until it is finished) and hold their own reference to the snapshot.
 */
#include "admin/admin.h"

#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "upstream/api.h"

struct job;
typedef void (*job_fn)(struct job *j);

struct job {
    uv_work_t work;
    struct tg_http_req *req;
    struct tg_state *state;
    const struct tg_key_entry *key;
    const struct tg_project *project;
    const char *arg; /* route argument after the project (key id, usage kind) */
    job_fn run;      /* on the thread pool: sets status and body */
    int status;
    struct tg_buf body;
};

/* ---- answering ---------------------------------------------------------------------- */

static void
job_error(struct job *j, int status, const char *message, const char *code)
{
    j->status = status;
    tg_buf_reset(&j->body);
    tg_json_error_body(&j->body, message, "invalid_request_error", NULL, code);
}

static void
job_cleanup(void *arg)
{
    struct job *j = arg;
    tg_buf_deinit(&j->body);
    tg_state_unref(j->state);
}

static void
work_cb(uv_work_t *w)
{
    struct job *j = w->data;
    j->run(j);
}

static void
after_work_cb(uv_work_t *w, int status)
{
    struct job *j = w->data;
    tg_http_respond(j->req, j->status, "application/json", NULL, 0,
                    j->body.data ? j->body.data : "", j->body.len);
}

static void
job_start(struct tg_http_req *req, uv_loop_t *loop, struct tg_state *state,
          const struct tg_key_entry *key, const struct tg_project *project, const char *arg,
          job_fn run)
{
    struct job *j = tg_arena_alloc(&req->arena, sizeof(*j));
    j->req = req;
    j->state = state;
    atomic_fetch_add(&state->refs, 1);
    j->key = key;
    j->project = project;
    j->arg = arg;
    j->run = run;
    j->status = 200;
    tg_buf_init(&j->body, 0);
    tg_arena_cleanup_add(&req->arena, job_cleanup, j);
    j->work.data = j;
    if (uv_queue_work(loop, &j->work, work_cb, after_work_cb) != 0) {
        tg_http_respond_error(req, 500, "The admin request could not be queued.", "server_error",
                              NULL, NULL);
    }
}

/* ---- JSON shapes -------------------------------------------------------------------- */

static void
append_project(struct tg_buf *b, const struct tg_project *p)
{
    tg_buf_append_str(b, "{\"id\":");
    tg_json_quote(b, p->id);
    tg_buf_append_str(b, ",\"object\":\"organization.project\",\"name\":");
    tg_json_quote(b, p->name);
    tg_buf_append_str(b, ",\"environment\":");
    tg_json_quote(b, p->environment);
    tg_buf_appendf(b, ",\"created_at\":0,\"archived_at\":null,\"status\":\"%s\"}",
                   p->is_archived ? "archived" : "active");
}

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
    tg_buf_appendf(b, ",\"created_at\":%lld,\"last_used_at\":", (long long)(k->created_ms / 1000));
    if (k->last_used_ms != 0) {
        tg_buf_appendf(b, "%lld", (long long)(k->last_used_ms / 1000));
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_appendf(b, ",\"status\":\"%s\",\"project_id\":", k->revoked_ms ? "revoked" : "active");
    tg_json_quote(b, k->project_id ? k->project_id : "");
    tg_buf_append_str(b, "}");
}

/* ---- projects ------------------------------------------------------------------------ */

static void
list_projects(struct tg_http_req *req, const struct tg_state *st)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < st->n_projects; i++) {
        tg_buf_append_str(&b, i ? "," : "");
        append_project(&b, &st->projects[i]);
    }
    tg_buf_append_str(&b, "],\"first_id\":");
    tg_json_quote(&b, st->n_projects ? st->projects[0].id : "");
    tg_buf_append_str(&b, ",\"last_id\":");
    tg_json_quote(&b, st->n_projects ? st->projects[st->n_projects - 1].id : "");
    tg_buf_append_str(&b, ",\"has_more\":false}");
    tg_http_respond(req, 200, "application/json", NULL, 0, b.data, b.len);
    tg_buf_deinit(&b);
}

/* ---- keys (thread pool) ---------------------------------------------------------------- */

static void
create_key(struct job *j)
{
    char err[256];
    json_t *body = tg_json_parse(j->req->body.data ? j->req->body.data : "", j->req->body.len, 16,
                                 err, sizeof(err));
    const char *name = tg_json_str(body, "name");
    if (name == NULL || name[0] == '\0' || strlen(name) > 200) {
        json_decref(body);
        job_error(j, 400, "Give the key a name: {\"name\": \"...\"} (1 to 200 characters).", NULL);
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
        .created_ms = tg_clock_unix_ms(),
    };
    tg_key_hash(env->pepper, env->pepper_len, value, rec.hash);
    int rc = env->store->ops->key_insert(env->store, &rec);
    if (rc == 0) {
        rc = tg_state_reload();
    }
    if (rc < 0) {
        job_error(j, 500, "The key could not be stored.", NULL);
    } else {
        append_key(&j->body, &rec, value);
        tg_log_info("admin: key %s created for project %s by %s", id, j->project->name, j->key->id);
    }
    memset(value, 0, sizeof(value));
    json_decref(body);
}

struct key_scan {
    struct job *j;
    const char *want_id; /* one key, or NULL for all */
    const char *after;   /* pagination cursor */
    bool is_past_cursor;
    size_t n;
    size_t limit;
    bool has_more;
    char last_id[40];
    char first_id[40];
};

static int
scan_key(const struct tg_key_rec *k, void *arg)
{
    struct key_scan *s = arg;
    if (k->project_id == NULL || strcmp(k->project_id, s->j->project->id) != 0) {
        return 0;
    }
    if (s->want_id != NULL) {
        if (strcmp(k->id, s->want_id) == 0) {
            append_key(&s->j->body, k, NULL);
            s->n = 1;
        }
        return 0;
    }
    if (s->after != NULL && !s->is_past_cursor) {
        s->is_past_cursor = strcmp(k->id, s->after) == 0;
        return 0;
    }
    if (s->n == s->limit) {
        s->has_more = true;
        return 0;
    }
    tg_buf_append_str(&s->j->body, s->n ? "," : "");
    append_key(&s->j->body, k, NULL);
    if (s->n == 0) {
        snprintf(s->first_id, sizeof(s->first_id), "%s", k->id);
    }
    snprintf(s->last_id, sizeof(s->last_id), "%s", k->id);
    s->n++;
    return 0;
}

static void
list_keys(struct job *j)
{
    const struct tg_state_env *env = tg_state_env_get();
    const char *limit = tg_http_req_query(j->req, "limit");
    struct key_scan s = {.j = j, .after = tg_http_req_query(j->req, "after"), .limit = 20};
    if (limit != NULL) {
        long l = strtol(limit, NULL, 10);
        s.limit = l < 1 ? 1 : l > 100 ? 100 : (size_t)l;
    }
    tg_buf_append_str(&j->body, "{\"object\":\"list\",\"data\":[");
    if (env->store->ops->keys_list(env->store, j->project->org_id, scan_key, &s) < 0) {
        job_error(j, 500, "The keys could not be read.", NULL);
        return;
    }
    tg_buf_append_str(&j->body, "],\"first_id\":");
    tg_json_quote(&j->body, s.first_id);
    tg_buf_append_str(&j->body, ",\"last_id\":");
    tg_json_quote(&j->body, s.last_id);
    tg_buf_appendf(&j->body, ",\"has_more\":%s}", s.has_more ? "true" : "false");
}

static void
get_key(struct job *j)
{
    const struct tg_state_env *env = tg_state_env_get();
    struct key_scan s = {.j = j, .want_id = j->arg};
    if (env->store->ops->keys_list(env->store, j->project->org_id, scan_key, &s) < 0) {
        job_error(j, 500, "The keys could not be read.", NULL);
    } else if (s.n == 0) {
        job_error(j, 404, "No such API key in this project.", NULL);
    }
}

static void
revoke_key(struct job *j)
{
    const struct tg_state_env *env = tg_state_env_get();
    struct key_scan s = {.j = j, .want_id = j->arg};
    int rc = env->store->ops->keys_list(env->store, j->project->org_id, scan_key, &s);
    tg_buf_reset(&j->body);
    if (rc == 0 && s.n == 0) {
        job_error(j, 404, "No such API key in this project.", NULL);
        return;
    }
    rc = rc < 0 ? rc : env->store->ops->key_revoke(env->store, j->arg, tg_clock_unix_ms());
    if (rc == TG_ENOTFOUND) {
        rc = 0; /* already revoked: deleting twice is not an error */
    }
    rc = rc < 0 ? rc : tg_state_reload();
    if (rc < 0) {
        job_error(j, 500, "The key could not be revoked.", NULL);
        return;
    }
    tg_buf_append_str(&j->body, "{\"object\":\"organization.project.api_key.deleted\",\"id\":");
    tg_json_quote(&j->body, j->arg);
    tg_buf_append_str(&j->body, ",\"deleted\":true}");
    tg_log_info("admin: key %s revoked by %s", j->arg, j->key->id);
}

/* ---- usage (thread pool) ------------------------------------------------------------- */

struct usage_scan {
    struct job *j;
    const char *kind;
    int64_t bucket_ms;
    int64_t open_bucket;
    size_t n_results;
};

static void
append_nullable(struct tg_buf *b, const char *s)
{
    if (s == NULL) {
        tg_buf_append_str(b, "null");
    } else {
        tg_json_quote(b, s);
    }
}

static int
scan_usage(const struct tg_usage_result *r, void *arg)
{
    struct usage_scan *s = arg;
    struct tg_buf *b = &s->j->body;
    if (r->bucket_start_ms != s->open_bucket) {
        if (s->open_bucket >= 0) {
            tg_buf_append_str(b, "]},");
        }
        s->open_bucket = r->bucket_start_ms;
        s->n_results = 0;
        tg_buf_appendf(b,
                       "{\"object\":\"bucket\",\"start_time\":%lld,\"end_time\":%lld,"
                       "\"results\":[",
                       (long long)(r->bucket_start_ms / 1000),
                       (long long)((r->bucket_start_ms + s->bucket_ms) / 1000));
    }
    tg_buf_append_str(b, s->n_results++ ? "," : "");
    tg_buf_appendf(b,
                   "{\"object\":\"organization.usage.%s.result\",\"input_tokens\":%lld,"
                   "\"input_cached_tokens\":%lld,\"output_tokens\":%lld,"
                   "\"output_reasoning_tokens\":%lld,\"num_model_requests\":%lld,"
                   "\"cost_micros\":%lld,\"project_id\":",
                   s->kind, (long long)r->prompt_tokens, (long long)r->cached_tokens,
                   (long long)r->completion_tokens, (long long)r->reasoning_tokens,
                   (long long)r->requests, (long long)r->cost_micros);
    append_nullable(b, r->project_id);
    tg_buf_append_str(b, ",\"api_key_id\":");
    append_nullable(b, r->key_id);
    tg_buf_append_str(b, ",\"model\":");
    append_nullable(b, r->model);
    tg_buf_append_str(b, "}");
    return 0;
}

static bool
has_group(struct tg_http_req *req, const char *name)
{
    const char *vals[8];
    size_t n = tg_http_req_query_all(req, "group_by", vals, 8);
    for (size_t i = 0; i < n; i++) {
        /* Accept both repeated parameters and a comma-separated list. */
        const char *p = strstr(vals[i], name);
        size_t len = strlen(name);
        if (p != NULL && (p == vals[i] || p[-1] == ',') && (p[len] == '\0' || p[len] == ',')) {
            return true;
        }
    }
    return false;
}

static void
usage(struct job *j)
{
    struct tg_http_req *req = j->req;
    const char *start = tg_http_req_query(req, "start_time");
    const char *end = tg_http_req_query(req, "end_time");
    const char *width = tg_http_req_query(req, "bucket_width");
    if (start == NULL) {
        job_error(j, 400, "start_time is required (Unix seconds).", NULL);
        return;
    }
    int64_t bucket_ms = 86400000;
    if (width != NULL && strcmp(width, "1m") == 0) {
        bucket_ms = 60000;
    } else if (width != NULL && strcmp(width, "1h") == 0) {
        bucket_ms = 3600000;
    } else if (width != NULL && strcmp(width, "1d") != 0) {
        job_error(j, 400, "bucket_width must be 1m, 1h or 1d.", NULL);
        return;
    }
    /* OpenAI's completions usage covers every text-generation endpoint; the others are one
     * endpoint each, named as the ledger names them (tg_api_name). */
    static const char *const generation[] = {"chat.completions", "completions", "responses"};
    bool is_generation = strcmp(j->arg, "completions") == 0;
    struct tg_usage_query q = {
        .org_id = j->state->org_id,
        .start_ms = strtoll(start, NULL, 10) * 1000,
        .end_ms = end ? strtoll(end, NULL, 10) * 1000 : tg_clock_unix_ms() + 1,
        .bucket_ms = bucket_ms,
        .project_id = tg_http_req_query(req, "project_ids"),
        .key_id = tg_http_req_query(req, "api_key_ids"),
        .model = tg_http_req_query(req, "models"),
        .endpoint = is_generation ? NULL : j->arg,
        .endpoints = is_generation ? generation : NULL,
        .n_endpoints = is_generation ? sizeof(generation) / sizeof(generation[0]) : 0,
        .group_by_project = has_group(req, "project_id"),
        .group_by_key = has_group(req, "api_key_id"),
        .group_by_model = has_group(req, "model"),
    };
    if (q.project_id != NULL) {
        const struct tg_project *p = tg_state_project(j->state, q.project_id);
        q.project_id = p ? p->id : q.project_id;
    }
    struct usage_scan s = {.j = j, .kind = j->arg, .bucket_ms = bucket_ms, .open_bucket = -1};
    tg_buf_append_str(&j->body, "{\"object\":\"page\",\"data\":[");
    const struct tg_state_env *env = tg_state_env_get();
    if (env->store->ops->usage_query(env->store, &q, scan_usage, &s) < 0) {
        job_error(j, 500, "The usage could not be read.", NULL);
        return;
    }
    tg_buf_append_str(&j->body, s.open_bucket >= 0 ? "]}" : "");
    tg_buf_append_str(&j->body, "],\"has_more\":false,\"next_page\":null}");
}

/* ---- routing ------------------------------------------------------------------------- */

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

/* Splits "/v1/organization/a/b/c" into up to 4 percent-decoded segments (in the arena). */
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

static void
not_found(struct tg_http_req *req, const char *what)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "No such %s.", what);
    tg_http_respond_error(req, 404, msg, "invalid_request_error", NULL, NULL);
}

static void
method_not_allowed(struct tg_http_req *req)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "Invalid method for URL (%s %.200s)", req->method_name, req->path);
    tg_http_respond_error(req, 405, msg, "invalid_request_error", NULL, NULL);
}

static void
route_project(struct tg_http_req *req, uv_loop_t *loop, struct tg_state *st,
              const struct tg_key_entry *key, const char **seg, size_t n)
{
    const struct tg_project *p = tg_state_project(st, seg[1]);
    if (p == NULL) {
        not_found(req, "project");
        return;
    }
    enum tg_http_method m = req->method;
    if (n == 2) {
        if (m != TG_HTTP_GET) {
            method_not_allowed(req);
            return;
        }
        struct tg_buf b;
        tg_buf_init(&b, 0);
        append_project(&b, p);
        tg_http_respond(req, 200, "application/json", NULL, 0, b.data, b.len);
        tg_buf_deinit(&b);
    } else if (n == 3 && strcmp(seg[2], "api_keys") == 0) {
        if (m == TG_HTTP_GET) {
            job_start(req, loop, st, key, p, NULL, list_keys);
        } else if (m == TG_HTTP_POST) {
            job_start(req, loop, st, key, p, NULL, create_key);
        } else {
            method_not_allowed(req);
        }
    } else if (n == 4 && strcmp(seg[2], "api_keys") == 0) {
        if (m == TG_HTTP_GET) {
            job_start(req, loop, st, key, p, seg[3], get_key);
        } else if (m == TG_HTTP_DELETE) {
            job_start(req, loop, st, key, p, seg[3], revoke_key);
        } else {
            method_not_allowed(req);
        }
    } else {
        not_found(req, "admin route");
    }
}

void
tg_admin_handle(struct tg_http_req *req, uv_loop_t *loop, struct tg_state *state,
                const struct tg_key_entry *key)
{
    const char *seg[4];
    size_t n = split_path(req, req->path + strlen("/v1/organization/"), seg, 4);
    if (n >= 1 && n <= 4 && strcmp(seg[0], "projects") == 0) {
        if (n == 1) {
            if (req->method != TG_HTTP_GET) {
                method_not_allowed(req);
            } else {
                list_projects(req, state);
            }
            return;
        }
        route_project(req, loop, state, key, seg, n);
        return;
    }
    if (n == 2 && strcmp(seg[0], "usage") == 0 &&
        (strcmp(seg[1], "completions") == 0 || strcmp(seg[1], "embeddings") == 0 ||
         strcmp(seg[1], "moderations") == 0)) {
        if (req->method != TG_HTTP_GET) {
            method_not_allowed(req);
            return;
        }
        job_start(req, loop, state, key, NULL, seg[1], usage);
        return;
    }
    char msg[300];
    snprintf(msg, sizeof(msg), "Invalid URL (%s %.200s)", req->method_name, req->path);
    tg_http_respond_error(req, 404, msg, "invalid_request_error", NULL, NULL);
}
