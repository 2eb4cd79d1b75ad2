/*
 * feedback.c: POST /v1/feedback (feedback.h).
 *
 * The body is checked on the loop; the request it names is found first among the requests
 * this process settled recently (monitor.h: its ledger row may still be queued for the store)
 * and then in the store's ledger, on the thread pool, where the feedback row is inserted too.
 * The answer is sent on the loop once that work is done. A request of another project is as
 * unknown as one that never was: the 404 tells nothing about other projects.
 */
#include "monitor/feedback.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "monitor/monitor.h"

#define MAX_LABEL_BYTES 64
#define MAX_COMMENT_BYTES 2000
#define MAX_REQUEST_ID_BYTES 39

struct job {
    uv_work_t work;
    struct tg_http_req *req;
    char org_id[40];
    char project_id[40];
    char request_id[40];
    char id[40];
    double score;
    const char *label;   /* arena; NULL when none */
    const char *comment; /* arena; NULL when none */
    char model[96];
    char provider[96];
    char deployment[96];
    bool is_recent; /* found among the recent requests: no ledger lookup */
    int64_t now_ms;
    int rc;
};

static void
bad(struct tg_http_req *req, const char *message, const char *param)
{
    tg_http_respond_error(req, 400, message, "invalid_request_error", param, NULL);
}

/* An optional string member of at most max bytes; false after answering 400. */
static bool
opt_string(struct tg_http_req *req, json_t *body, const char *name, size_t max, const char **out)
{
    json_t *v = json_object_get(body, name);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        return true;
    }
    char msg[160];
    if (!json_is_string(v)) {
        snprintf(msg, sizeof(msg), "'%s' must be a string.", name);
        bad(req, msg, name);
        return false;
    }
    if (json_string_length(v) > max) {
        snprintf(msg, sizeof(msg), "'%s' is longer than %zu bytes.", name, max);
        bad(req, msg, name);
        return false;
    }
    *out = tg_arena_strdup(&req->arena, json_string_value(v));
    return true;
}

/* Reads and checks the body into j; false after answering 400. */
static bool
read_body(struct job *j, json_t *body)
{
    static const char *const allowed[] = {"request_id", "score", "label", "comment"};
    const char *name;
    json_t *v;
    json_object_foreach(body, name, v)
    {
        bool is_known = false;
        for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
            is_known = is_known || strcmp(name, allowed[i]) == 0;
        }
        if (!is_known) {
            char msg[160];
            snprintf(msg, sizeof(msg), "Unrecognized request argument supplied: %.80s", name);
            bad(j->req, msg, name);
            return false;
        }
    }
    const char *rid = tg_json_str(body, "request_id");
    if (rid == NULL || rid[0] == '\0' || strlen(rid) > MAX_REQUEST_ID_BYTES) {
        bad(j->req, "'request_id' must be the id of one of your requests (its x-request-id).",
            "request_id");
        return false;
    }
    snprintf(j->request_id, sizeof(j->request_id), "%s", rid);
    /* Numbers only: jansson keeps true/false apart from numbers, and JSON has no NaN. */
    json_t *score = json_object_get(body, "score");
    double s = json_is_number(score) ? json_number_value(score) : NAN;
    if (!isfinite(s) || s < 0 || s > 1) {
        bad(j->req, "'score' must be a number from 0 to 1.", "score");
        return false;
    }
    j->score = s;
    return opt_string(j->req, body, "label", MAX_LABEL_BYTES, &j->label) &&
           opt_string(j->req, body, "comment", MAX_COMMENT_BYTES, &j->comment);
}

static int
got_row(const struct tg_ledger_row *r, void *arg)
{
    struct job *j = arg;
    snprintf(j->model, sizeof(j->model), "%s", r->model_requested);
    snprintf(j->provider, sizeof(j->provider), "%s", r->provider);
    snprintf(j->deployment, sizeof(j->deployment), "%s", r->deployment);
    return 0;
}

static void
work(uv_work_t *wk)
{
    struct job *j = wk->data;
    struct tg_store *s = tg_state_env_get()->store;
    if (s == NULL || s->ops->feedback_insert == NULL) {
        j->rc = TG_EIO;
        return;
    }
    if (!j->is_recent) {
        j->rc = s->ops->ledger_find(s, j->request_id, j->project_id, got_row, j);
        if (j->rc < 0) {
            return;
        }
    }
    struct tg_feedback_rec r = {
        .id = j->id,
        .org_id = j->org_id,
        .project_id = j->project_id,
        .request_id = j->request_id,
        .model = j->model,
        .provider = j->provider,
        .deployment = j->deployment,
        .score = j->score,
        .label = j->label,
        .comment = j->comment,
        .created_ms = j->now_ms,
    };
    j->rc = s->ops->feedback_insert(s, &r);
}

static void
after_work(uv_work_t *wk, int status)
{
    struct job *j = wk->data;
    int rc = status != 0 ? TG_ECANCELED : j->rc;
    if (rc == TG_ENOTFOUND) {
        char msg[160];
        snprintf(msg, sizeof(msg), "No request with id '%s' in this project.", j->request_id);
        tg_http_respond_error(j->req, 404, msg, "invalid_request_error", "request_id", NULL);
        return;
    }
    if (rc < 0) {
        tg_log_error("feedback: cannot store feedback on %s: %s", j->request_id, tg_strerror(rc));
        tg_http_respond_error(j->req, 500, "The gateway could not store the feedback.",
                              "server_error", NULL, NULL);
        return;
    }
    struct tg_monitor_key k = {j->org_id, j->project_id, j->model, j->provider, j->deployment};
    tg_monitor_add_feedback(tg_monitor_default(), &k, j->score, j->now_ms);

    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_buf_append_str(&b, "{\"object\":\"feedback\",\"id\":");
    tg_json_quote(&b, j->id);
    tg_buf_append_str(&b, ",\"request_id\":");
    tg_json_quote(&b, j->request_id);
    tg_buf_appendf(&b, ",\"score\":%.10g,\"label\":", j->score);
    if (j->label != NULL) {
        tg_json_quote(&b, j->label);
    } else {
        tg_buf_append_str(&b, "null");
    }
    tg_buf_append_str(&b, ",\"comment\":");
    if (j->comment != NULL) {
        tg_json_quote(&b, j->comment);
    } else {
        tg_buf_append_str(&b, "null");
    }
    tg_buf_append_str(&b, ",\"model\":");
    tg_json_quote(&b, j->model);
    tg_buf_appendf(&b, ",\"created_at\":%lld}", (long long)(j->now_ms / 1000));
    tg_http_respond(j->req, 201, "application/json", NULL, 0, b.data, b.len);
    tg_buf_deinit(&b);
}

void
tg_feedback_handle(struct tg_worker *w, struct tg_http_req *req, struct tg_state *st,
                   const struct tg_key_entry *key, const struct tg_project *p)
{
    (void)st;
    (void)key;
    char err[200];
    json_t *body =
        tg_json_parse(req->body.data ? req->body.data : "", req->body.len, 32, err, sizeof(err));
    if (!json_is_object(body)) {
        bad(req, body == NULL ? err : "The body must be a JSON object.", NULL);
        json_decref(body);
        return;
    }
    struct job *j = tg_arena_alloc(&req->arena, sizeof(*j));
    j->req = req;
    snprintf(j->org_id, sizeof(j->org_id), "%s", p->org_id);
    snprintf(j->project_id, sizeof(j->project_id), "%s", p->id);
    bool ok = read_body(j, body);
    json_decref(body);
    if (!ok) {
        return;
    }
    tg_id_new(j->id, sizeof(j->id), "fb_", 24);
    j->now_ms = tg_clock_unix_ms();
    j->is_recent = tg_monitor_recent_find(tg_monitor_default(), j->request_id, j->project_id,
                                          j->model, j->provider, j->deployment);
    j->work.data = j;
    if (uv_queue_work(&w->loop, &j->work, work, after_work) != 0) {
        tg_http_respond_error(req, 500, "The gateway could not reach its store.", "server_error",
                              NULL, NULL);
    }
}
