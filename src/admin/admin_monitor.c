/*
 * admin_monitor.c: alert rules, alerts, model health, quality signals and notifications
 * (shapes in docs/alerts.md).
 *
 * Routes (under /v1/organization/):
 *
 *   GET    alert_rules              any admin key   the organization's rules, oldest first
 *                                                   (channel targets shown to owners only)
 *   POST   alert_rules              owners          create a rule (201)
 *   GET    alert_rules/{rule_id}    any admin key
 *   POST   alert_rules/{rule_id}    owners          modify any subset of the fields
 *   DELETE alert_rules/{rule_id}    owners
 *   GET    alerts                   any admin key   fired events, newest first (?state, ?limit)
 *   GET    health                   any admin key   per model and deployment (?window_seconds)
 *   GET    quality                  any admin key   feedback and automatic signals (?start_time,
 *                                                   ?end_time, ?group_by=model|deployment)
 *   GET    notifications            any admin key   the outbox, newest first (?limit); targets
 *                                                   shown to owners only
 *
 * A rule is validated whole: a modification is merged into the stored rule first, then the
 * result is checked as a creation would be. Every write is audited (alert_rule.created,
 * .updated, .deleted) in the route's transaction. The rules evaluator (monitor/alerts.c)
 * reads the store on each tick, so no reload is needed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "gateway/config.h"
#include "monitor/alerts.h"
#include "monitor/monitor.h"
#include "policy/router.h"

#define MAX_NAME_BYTES 128
#define MAX_WEBHOOKS 10
#define MAX_EMAILS 20
#define DEFAULT_WINDOW_S 300
#define DEFAULT_MIN_REQUESTS 10

/* ---- rules as JSON ------------------------------------------------------------------------ */

static json_t *
str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

/* The editable fields of a stored rule, as the API names them. */
static json_t *
rule_fields(const struct tg_alert_rule_rec *r)
{
    json_t *ch = json_loads(r->channels != NULL ? r->channels : "{}", 0, NULL);
    return json_pack("{s:s, s:o, s:o, s:s, s:s, s:f, s:I, s:I, s:o, s:b}", "name", r->name,
                     "project_id", str_or_null(r->project_id), "model", str_or_null(r->model),
                     "metric", r->metric, "condition", r->condition, "threshold", r->threshold,
                     "window_seconds", (json_int_t)r->window_s, "min_requests",
                     (json_int_t)r->min_requests, "channels",
                     json_is_object(ch) ? ch : json_object(), "enabled", r->is_enabled);
}

static int
is_open(const struct tg_alert_event_rec *r, void *arg)
{
    (void)r;
    *(bool *)arg = true;
    return 0;
}

static void
append_rule(struct admin_job *j, struct tg_buf *b, const struct tg_alert_rule_rec *r)
{
    bool is_firing = false;
    j->store->ops->alert_events_list(j->store, r->org_id, r->id, 1, 1, is_open, &is_firing);
    json_t *o = rule_fields(r);
    json_object_set_new(o, "object", json_string("alert_rule"));
    json_object_set_new(o, "id", json_string(r->id));
    json_object_set_new(o, "state", json_string(is_firing ? "firing" : "ok"));
    json_object_set_new(o, "created_at", json_integer(r->created_ms / 1000));
    if (!j->is_owner) {
        /* As in the notifications listing: a webhook URL may carry the receiver's token. */
        json_t *ch = json_object_get(o, "channels");
        const char *k;
        json_t *list;
        json_object_foreach(ch, k, list)
        {
            size_t i;
            json_t *v;
            json_array_foreach(list, i, v)
            {
                json_array_set_new(list, i, json_string("redacted"));
            }
        }
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
    tg_buf_append_str(b, text != NULL ? text : "{}");
    free(text);
    json_decref(o);
}

/* ---- validation --------------------------------------------------------------------------- */

static bool
fail(struct admin_job *j, const char *param, const char *message)
{
    admin_error(j, 400, message, param, "invalid_value");
    return false;
}

static bool
check_list(struct admin_job *j, json_t *ch, const char *member, size_t max, bool is_url)
{
    json_t *v = json_object_get(ch, member);
    char param[48];
    snprintf(param, sizeof(param), "channels.%s", member);
    if (v == NULL) {
        return true;
    }
    if (!json_is_array(v) || json_array_size(v) > max) {
        char msg[120];
        snprintf(msg, sizeof(msg), "'%s' must be an array of at most %zu strings.", param, max);
        return fail(j, param, msg);
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *s = json_string_value(e);
        bool ok = s != NULL && strlen(s) <= 512 &&
                  (is_url ? strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0
                          : strchr(s, '@') != NULL && strpbrk(s, " \r\n<>") == NULL);
        if (!ok) {
            return fail(j, param,
                        is_url ? "Each webhook must be an http:// or https:// URL."
                               : "Each e-mail must be an address such as ops@example.com.");
        }
    }
    return true;
}

/* Checks the merged rule fields f and fills r (pointers into f). False after a 400. */
static bool
check_rule(struct admin_job *j, json_t *f, struct tg_alert_rule_rec *r)
{
    const char *name = tg_json_str(f, "name");
    if (name == NULL || name[0] == '\0' || strlen(name) > MAX_NAME_BYTES) {
        return fail(j, "name", "'name' must be a string of 1 to 128 bytes.");
    }
    json_t *pid = json_object_get(f, "project_id");
    if (!json_is_null(pid) &&
        (!json_is_string(pid) || tg_state_project(j->state, json_string_value(pid)) == NULL)) {
        return fail(j, "project_id", "'project_id' must be null or the id of a project.");
    }
    json_t *model = json_object_get(f, "model");
    if (!json_is_null(model) && (!json_is_string(model) || json_string_length(model) == 0 ||
                                 json_string_length(model) > 95)) {
        return fail(j, "model", "'model' must be null or a model name.");
    }
    enum tg_alert_metric metric;
    if (!tg_alert_metric_parse(tg_json_str(f, "metric"), &metric)) {
        return fail(j, "metric",
                    "'metric' must be one of error_rate, p95_latency_ms, p95_ttft_ms, "
                    "spend_forecast, breaker_open, ledger_backlog, finish_length_rate, "
                    "empty_rate, refusal_rate, feedback_mean.");
    }
    enum tg_alert_condition cond;
    if (!tg_alert_condition_parse(tg_json_str(f, "condition"), &cond)) {
        return fail(j, "condition", "'condition' must be above, below or change.");
    }
    if (cond == TG_COND_CHANGE && !tg_alert_metric_is_windowed(metric)) {
        return fail(j, "condition",
                    "'change' applies to the windowed metrics only (not spend_forecast, "
                    "breaker_open or ledger_backlog).");
    }
    json_t *th = json_object_get(f, "threshold");
    if (!json_is_number(th) || !isfinite(json_number_value(th))) {
        return fail(j, "threshold", "'threshold' must be a number.");
    }
    json_t *w = json_object_get(f, "window_seconds");
    if (!json_is_integer(w) || json_integer_value(w) < 60 || json_integer_value(w) > 86400) {
        return fail(j, "window_seconds", "'window_seconds' must be an integer from 60 to 86400.");
    }
    json_t *mr = json_object_get(f, "min_requests");
    if (!json_is_integer(mr) || json_integer_value(mr) < 1 || json_integer_value(mr) > 100000000) {
        return fail(j, "min_requests", "'min_requests' must be a positive integer.");
    }
    json_t *ch = json_object_get(f, "channels");
    if (!json_is_object(ch)) {
        return fail(j, "channels",
                    "'channels' must be an object {\"webhooks\": [...], "
                    "\"emails\": [...]}.");
    }
    const char *k;
    json_t *v;
    json_object_foreach(ch, k, v)
    {
        if (strcmp(k, "webhooks") != 0 && strcmp(k, "emails") != 0) {
            return fail(j, "channels", "'channels' takes only webhooks and emails.");
        }
    }
    if (!check_list(j, ch, "webhooks", MAX_WEBHOOKS, true) ||
        !check_list(j, ch, "emails", MAX_EMAILS, false)) {
        return false;
    }
    if (!json_is_boolean(json_object_get(f, "enabled"))) {
        return fail(j, "enabled", "'enabled' must be true or false.");
    }
    r->name = name;
    r->project_id =
        json_is_string(pid) ? tg_state_project(j->state, json_string_value(pid))->id : NULL;
    r->model = json_string_value(model);
    r->metric = tg_alert_metric_name(metric);
    r->condition = tg_json_str(f, "condition");
    r->threshold = json_number_value(th);
    r->window_s = json_integer_value(w);
    r->min_requests = json_integer_value(mr);
    r->is_enabled = json_is_true(json_object_get(f, "enabled"));
    return true;
}

/* Overlays the body on fields; false after a 400 (a member the API does not know). The
 * read-only members of an alert_rule (object, id, state, created_at) are accepted and ignored,
 * so a client may send back what it read. */
static bool
merge_body(struct admin_job *j, json_t *fields)
{
    static const char *const allowed[] = {
        "name",           "project_id",   "model",    "metric",  "condition", "threshold",
        "window_seconds", "min_requests", "channels", "enabled", "object",    "id",
        "state",          "created_at",   NULL};
    static const char *const read_only[] = {"object", "id", "state", "created_at"};
    if (!json_is_object(j->body)) {
        return fail(j, NULL, "The request body must be a JSON object.");
    }
    if (!admin_body_only(j, allowed)) {
        return false;
    }
    json_t *body = json_deep_copy(j->body);
    for (size_t i = 0; i < sizeof(read_only) / sizeof(read_only[0]); i++) {
        json_object_del(body, read_only[i]);
    }
    json_object_update(fields, body);
    json_decref(body);
    /* Both channel lists are always there, empty when unused. */
    json_t *ch = json_object_get(fields, "channels");
    if (json_is_object(ch)) {
        static const char *const lists[] = {"webhooks", "emails"};
        for (size_t i = 0; i < 2; i++) {
            json_t *v = json_object_get(ch, lists[i]);
            if (v == NULL || json_is_null(v)) {
                json_object_set_new(ch, lists[i], json_array());
            }
        }
    }
    return true;
}

/* ---- rule routes ---------------------------------------------------------------------------- */

struct found_rule {
    json_t *fields;
    char *org_id;
    int64_t created_ms;
};

static int
got_rule(const struct tg_alert_rule_rec *r, void *arg)
{
    struct found_rule *f = arg;
    f->fields = rule_fields(r);
    f->org_id = tg_xstrdup(r->org_id);
    f->created_ms = r->created_ms;
    return 0;
}

/* The path's rule of this organization; false after a 404 or 500. */
static bool
load_rule(struct admin_job *j, struct found_rule *f)
{
    memset(f, 0, sizeof(*f));
    int rc = j->store->ops->alert_rule_get(j->store, admin_param(j, "rule_id"), got_rule, f);
    if (rc == 0 && strcmp(f->org_id, j->state->org_id) != 0) {
        rc = TG_ENOTFOUND;
    }
    if (rc < 0) {
        admin_store_error(j, rc, "alert rule");
        return false;
    }
    return true;
}

static void
found_free(struct found_rule *f)
{
    json_decref(f->fields);
    free(f->org_id);
}

static int
list_one(const struct tg_alert_rule_rec *r, void *arg)
{
    struct admin_page *pg = arg;
    struct tg_buf item;
    tg_buf_init(&item, 0);
    append_rule(pg->j, &item, r);
    bool more = admin_page_add(pg, r->id, item.data);
    tg_buf_deinit(&item);
    return more ? 0 : 1;
}

static void
list_rules(struct admin_job *j)
{
    struct admin_page pg;
    if (!admin_page_begin(&pg, j)) {
        return;
    }
    int rc = j->store->ops->alert_rules_list(j->store, j->state->org_id, list_one, &pg);
    if (rc < 0) {
        admin_store_error(j, rc, "alert rules");
        return;
    }
    admin_page_end(&pg);
}

static int
answer_rule(const struct tg_alert_rule_rec *r, void *arg)
{
    struct admin_job *j = arg;
    tg_buf_reset(&j->out);
    append_rule(j, &j->out, r);
    return 0;
}

static void
get_rule(struct admin_job *j)
{
    struct found_rule f;
    if (!load_rule(j, &f)) {
        return;
    }
    found_free(&f);
    j->store->ops->alert_rule_get(j->store, admin_param(j, "rule_id"), answer_rule, j);
}

static char *
fields_text(json_t *fields)
{
    char *t = json_dumps(fields, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(12));
    return t != NULL ? t : tg_xstrdup("{}");
}

/* Checks fields, writes the rule (id, created_ms) and its audit entry, answers it. */
static void
save_rule(struct admin_job *j, json_t *fields, const char *id, int64_t created_ms, const char *type,
          const char *before)
{
    struct tg_alert_rule_rec r = {.id = id, .org_id = j->state->org_id};
    if (!check_rule(j, fields, &r)) {
        return;
    }
    char *channels = json_dumps(json_object_get(fields, "channels"), JSON_COMPACT);
    r.channels = channels;
    r.created_ms = created_ms;
    r.updated_ms = tg_clock_unix_ms();
    char *after = fields_text(fields);
    int rc = j->store->ops->alert_rule_put(j->store, &r);
    if (rc == 0) {
        rc = admin_audit(j, type, r.project_id, id, before, after);
    }
    if (rc < 0) {
        admin_store_error(j, rc, "alert rule");
    } else {
        tg_buf_reset(&j->out);
        append_rule(j, &j->out, &r);
        tg_log_info("admin: alert rule %s %s by %s", id, type + strlen("alert_rule."), j->key->id);
    }
    free(channels);
    free(after);
}

static void
create_rule(struct admin_job *j)
{
    json_t *fields = json_pack("{s:n, s:n, s:s, s:i, s:i, s:{}, s:b}", "project_id", "model",
                               "condition", "above", "window_seconds", DEFAULT_WINDOW_S,
                               "min_requests", DEFAULT_MIN_REQUESTS, "channels", "enabled", 1);
    if (merge_body(j, fields)) {
        char id[40];
        tg_id_new(id, sizeof(id), "alr_", 24);
        save_rule(j, fields, id, tg_clock_unix_ms(), "alert_rule.created", NULL);
        if (j->status == 200) {
            j->status = 201;
        }
    }
    json_decref(fields);
}

static void
modify_rule(struct admin_job *j)
{
    struct found_rule f;
    if (!load_rule(j, &f)) {
        return;
    }
    char *before = fields_text(f.fields);
    if (merge_body(j, f.fields)) {
        save_rule(j, f.fields, admin_param(j, "rule_id"), f.created_ms, "alert_rule.updated",
                  before);
    }
    free(before);
    found_free(&f);
}

static void
delete_rule(struct admin_job *j)
{
    struct found_rule f;
    if (!load_rule(j, &f)) {
        return;
    }
    const char *id = admin_param(j, "rule_id");
    char *before = fields_text(f.fields);
    const char *pid = tg_json_str(f.fields, "project_id");
    int rc = j->store->ops->alert_rule_delete(j->store, id);
    if (rc == 0) {
        rc = admin_audit(j, "alert_rule.deleted", pid, id, before, NULL);
    }
    if (rc < 0) {
        admin_store_error(j, rc, "alert rule");
    } else {
        tg_buf_append_str(&j->out, "{\"object\":\"alert_rule.deleted\",\"id\":");
        tg_json_quote(&j->out, id);
        tg_buf_append_str(&j->out, ",\"deleted\":true}");
    }
    free(before);
    found_free(&f);
}

/* ---- alerts and notifications ------------------------------------------------------------- */

/* ?limit= from 1 to 100 (default 20); false after a 400. */
static bool
read_limit(struct admin_job *j, size_t *out)
{
    const char *s = admin_query(j, "limit");
    *out = 20;
    if (s == NULL) {
        return true;
    }
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < 1 || v > 100) {
        return fail(j, "limit", "'limit' must be an integer from 1 to 100.");
    }
    *out = (size_t)v;
    return true;
}

/* The shortest of %.15g and %.17g that reads back as v (0.1 stays "0.1", 2/7 keeps every
 * digit). */
static void
append_number(struct tg_buf *b, double v)
{
    char s[40];
    v = isfinite(v) ? v : 0;
    snprintf(s, sizeof(s), "%.15g", v);
    if (strtod(s, NULL) != v) {
        snprintf(s, sizeof(s), "%.17g", v);
    }
    tg_buf_append_str(b, s);
}

static void
append_str_or_null(struct tg_buf *b, const char *s)
{
    if (s != NULL) {
        tg_json_quote(b, s);
    } else {
        tg_buf_append_str(b, "null");
    }
}

static int
list_alert(const struct tg_alert_event_rec *r, void *arg)
{
    struct tg_buf *b = arg;
    if (b->data[b->len - 1] == '}') {
        tg_buf_append_str(b, ",");
    }
    tg_buf_append_str(b, "{\"object\":\"alert\",\"id\":");
    tg_json_quote(b, r->id);
    tg_buf_append_str(b, ",\"rule_id\":");
    tg_json_quote(b, r->rule_id);
    tg_buf_append_str(b, ",\"name\":");
    tg_json_quote(b, r->name);
    tg_buf_append_str(b, ",\"metric\":");
    tg_json_quote(b, r->metric);
    tg_buf_append_str(b, ",\"project_id\":");
    append_str_or_null(b, r->project_id);
    tg_buf_append_str(b, ",\"model\":");
    append_str_or_null(b, r->model);
    tg_buf_appendf(b, ",\"state\":\"%s\",\"value\":", r->resolved_ms > 0 ? "resolved" : "firing");
    append_number(b, r->value);
    tg_buf_append_str(b, ",\"threshold\":");
    append_number(b, r->threshold);
    tg_buf_append_str(b, ",\"fired_at\":");
    admin_append_time(b, r->fired_ms);
    tg_buf_append_str(b, ",\"resolved_at\":");
    admin_append_time(b, r->resolved_ms);
    tg_buf_append_str(b, "}");
    return 0;
}

static void
list_alerts(struct admin_job *j)
{
    size_t limit;
    if (!read_limit(j, &limit)) {
        return;
    }
    const char *s = admin_query(j, "state");
    int state = 0;
    if (s != NULL && strcmp(s, "firing") == 0) {
        state = 1;
    } else if (s != NULL && strcmp(s, "resolved") == 0) {
        state = 2;
    } else if (s != NULL) {
        fail(j, "state", "'state' must be firing or resolved.");
        return;
    }
    tg_buf_append_str(&j->out, "{\"object\":\"list\",\"data\":[");
    int rc = j->store->ops->alert_events_list(j->store, j->state->org_id, NULL, state, limit,
                                              list_alert, &j->out);
    if (rc < 0) {
        admin_store_error(j, rc, "alerts");
        return;
    }
    tg_buf_append_str(&j->out, "],\"has_more\":false}");
}

struct notif_list {
    struct tg_buf *b;
    bool is_owner;
};

static int
list_notification(const struct tg_outbox_rec *r, void *arg)
{
    struct notif_list *l = arg;
    struct tg_buf *b = l->b;
    if (b->data[b->len - 1] == '}') {
        tg_buf_append_str(b, ",");
    }
    tg_buf_appendf(b, "{\"object\":\"notification\",\"id\":%lld,\"event_key\":", (long long)r->id);
    tg_json_quote(b, r->event_key);
    tg_buf_append_str(b, ",\"channel\":");
    tg_json_quote(b, r->channel);
    tg_buf_append_str(b, ",\"target\":");
    tg_json_quote(b, l->is_owner ? r->target : "redacted");
    tg_buf_append_str(b, ",\"created_at\":");
    admin_append_time(b, r->created_ms);
    tg_buf_append_str(b, ",\"delivered_at\":");
    admin_append_time(b, r->delivered_ms);
    tg_buf_appendf(b, ",\"attempts\":%d,\"last_error\":", r->attempts);
    append_str_or_null(b, r->last_error);
    tg_buf_append_str(b, "}");
    return 0;
}

static void
list_notifications(struct admin_job *j)
{
    size_t limit;
    if (!read_limit(j, &limit)) {
        return;
    }
    struct notif_list l = {&j->out, j->is_owner};
    tg_buf_append_str(&j->out, "{\"object\":\"list\",\"data\":[");
    int rc = j->store->ops->outbox_list(j->store, j->state->org_id, limit, list_notification, &l);
    if (rc < 0) {
        admin_store_error(j, rc, "notifications");
        return;
    }
    tg_buf_append_str(&j->out, "],\"has_more\":false}");
}

/* ---- health and quality ------------------------------------------------------------------- */

/* One row of health or quality: the sums of the series that share its key. */
struct group {
    char model[96];
    char provider[64];
    char deployment[96];
    bool has_deployment;
    struct tg_monitor_stats st;
    int64_t fb_count; /* quality: from the store */
    double fb_sum;
    json_t *labels;
};

struct groups {
    struct group *v;
    size_t n;
    bool by_provider;   /* health: model, provider, deployment */
    bool by_deployment; /* quality with group_by=deployment */
};

static struct group *
group_of(struct groups *g, const char *model, const char *provider, const char *deployment)
{
    provider = g->by_provider ? provider : "";
    deployment = g->by_deployment ? deployment : "";
    for (size_t i = 0; i < g->n; i++) {
        struct group *x = &g->v[i];
        if (strcmp(x->model, model) == 0 && strcmp(x->provider, provider) == 0 &&
            strcmp(x->deployment, deployment) == 0) {
            return x;
        }
    }
    g->v = tg_xrealloc(g->v, (g->n + 1) * sizeof(*g->v));
    struct group *x = &g->v[g->n++];
    memset(x, 0, sizeof(*x));
    snprintf(x->model, sizeof(x->model), "%s", model);
    snprintf(x->provider, sizeof(x->provider), "%s", provider);
    snprintf(x->deployment, sizeof(x->deployment), "%s", deployment);
    x->has_deployment = g->by_deployment;
    return x;
}

static void
add_stats(struct tg_monitor_stats *to, const struct tg_monitor_stats *from)
{
    to->requests += from->requests;
    to->ok += from->ok;
    to->errors += from->errors;
    to->finish_length += from->finish_length;
    to->empty += from->empty;
    to->refusal += from->refusal;
    to->feedback_count += from->feedback_count;
    to->feedback_sum += from->feedback_sum;
    for (int i = 0; i < TG_MONITOR_N_BINS; i++) {
        to->latency[i] += from->latency[i];
        to->ttft[i] += from->ttft[i];
    }
}

static void
collect(const struct tg_monitor_key *k, const struct tg_monitor_stats *st, void *arg)
{
    struct groups *g = arg;
    add_stats(&group_of(g, k->model, k->provider, k->deployment)->st, st);
}

static void
groups_free(struct groups *g)
{
    for (size_t i = 0; i < g->n; i++) {
        json_decref(g->v[i].labels);
    }
    free(g->v);
}

static double
rate(uint64_t n, uint64_t d)
{
    return d > 0 ? (double)n / (double)d : 0;
}

static void
append_percentile(struct tg_buf *b, const char *name, const uint64_t *bins, double p)
{
    double v = tg_monitor_percentile(bins, p);
    tg_buf_appendf(b, "\"%s\":", name);
    if (v < 0) {
        tg_buf_append_str(b, "null");
    } else {
        tg_buf_appendf(b, "%lld", (long long)llround(v));
    }
}

/* The breaker of the deployment named by model, provider and upstream model, or null. */
static void
append_breaker(struct tg_buf *b, const struct tg_config *cfg, const struct group *g)
{
    uint64_t now = tg_clock_mono_ms();
    for (size_t m = 0; cfg != NULL && m < cfg->n_models; m++) {
        const struct tg_model_route *r = &cfg->models[m];
        if (r->router == NULL || strcmp(r->name, g->model) != 0) {
            continue;
        }
        for (size_t i = 0; i < tg_router_size(r->router); i++) {
            struct tg_deployment_view v;
            tg_router_view(r->router, i, now, &v);
            if (strcmp(v.provider, g->provider) == 0 &&
                strcmp(v.upstream_model, g->deployment) == 0) {
                tg_buf_appendf(b, "\"%s\"", tg_breaker_state_name(v.breaker));
                return;
            }
        }
    }
    tg_buf_append_str(b, "null");
}

static void
append_quality(struct tg_buf *b, const struct tg_monitor_stats *st)
{
    tg_buf_append_str(b, "\"finish_length_rate\":");
    append_number(b, rate(st->finish_length, st->ok));
    tg_buf_append_str(b, ",\"empty_rate\":");
    append_number(b, rate(st->empty, st->ok));
    tg_buf_append_str(b, ",\"refusal_rate\":");
    append_number(b, rate(st->refusal, st->ok));
}

static void
health(struct admin_job *j)
{
    int64_t window_s = DEFAULT_WINDOW_S;
    const char *w = admin_query(j, "window_seconds");
    if (w != NULL) {
        char *end = NULL;
        window_s = strtoll(w, &end, 10);
        if (end == w || *end != '\0' || window_s < 60 || window_s > 86400) {
            fail(j, "window_seconds", "'window_seconds' must be an integer from 60 to 86400.");
            return;
        }
    }
    int64_t now = tg_clock_unix_ms();
    struct groups g = {.by_provider = true, .by_deployment = true};
    tg_monitor_each(tg_monitor_default(), j->state->org_id, now - window_s * 1000, now, collect,
                    &g);
    struct tg_buf *b = &j->out;
    tg_buf_appendf(b, "{\"object\":\"list\",\"window_seconds\":%lld,\"data\":[",
                   (long long)window_s);
    for (size_t i = 0; i < g.n; i++) {
        const struct group *x = &g.v[i];
        const struct tg_monitor_stats *st = &x->st;
        tg_buf_append_str(b, i > 0 ? ",{" : "{");
        tg_buf_append_str(b, "\"object\":\"model_health\",\"model\":");
        tg_json_quote(b, x->model);
        tg_buf_append_str(b, ",\"provider\":");
        tg_json_quote(b, x->provider);
        tg_buf_append_str(b, ",\"deployment\":");
        tg_json_quote(b, x->deployment);
        tg_buf_appendf(b, ",\"requests\":%llu,\"errors\":%llu,\"error_rate\":",
                       (unsigned long long)st->requests, (unsigned long long)st->errors);
        append_number(b, rate(st->errors, st->requests));
        tg_buf_append_str(b, ",\"latency_ms\":{");
        append_percentile(b, "p50", st->latency, 0.5);
        tg_buf_append_str(b, ",");
        append_percentile(b, "p95", st->latency, 0.95);
        tg_buf_append_str(b, ",");
        append_percentile(b, "p99", st->latency, 0.99);
        tg_buf_append_str(b, "},\"ttft_ms\":{");
        append_percentile(b, "p50", st->ttft, 0.5);
        tg_buf_append_str(b, ",");
        append_percentile(b, "p95", st->ttft, 0.95);
        tg_buf_append_str(b, "},\"breaker\":");
        append_breaker(b, j->state->config, x);
        tg_buf_append_str(b, ",\"quality\":{");
        append_quality(b, st);
        tg_buf_appendf(b, ",\"feedback_count\":%llu,\"feedback_mean\":",
                       (unsigned long long)st->feedback_count);
        if (st->feedback_count > 0) {
            append_number(b, st->feedback_sum / (double)st->feedback_count);
        } else {
            tg_buf_append_str(b, "null");
        }
        tg_buf_append_str(b, "}}");
    }
    tg_buf_append_str(b, "],\"has_more\":false}");
    groups_free(&g);
}

static int
collect_feedback(const struct tg_feedback_agg *a, void *arg)
{
    struct groups *g = arg;
    struct group *x = group_of(g, a->model != NULL ? a->model : "", "",
                               a->deployment != NULL ? a->deployment : "");
    x->fb_count += a->count;
    x->fb_sum += a->score_sum;
    if (a->label != NULL) {
        if (x->labels == NULL) {
            x->labels = json_object();
        }
        json_object_set_new(x->labels, a->label, json_integer(a->count));
    }
    return 0;
}

/* ?name= as Unix seconds (a non-negative integer), or def; false after a 400. */
static bool
read_time(struct admin_job *j, const char *name, int64_t def_s, int64_t *out_s)
{
    const char *s = admin_query(j, name);
    *out_s = def_s;
    if (s == NULL) {
        return true;
    }
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || v < 0) {
        char msg[120];
        snprintf(msg, sizeof(msg), "'%s' must be a Unix time in seconds.", name);
        return fail(j, name, msg);
    }
    *out_s = v;
    return true;
}

static void
quality(struct admin_job *j)
{
    int64_t now_s = tg_clock_unix_ms() / 1000;
    int64_t end_s, start_s;
    if (!read_time(j, "end_time", now_s + 1, &end_s) ||
        !read_time(j, "start_time", end_s - 86400, &start_s)) {
        return;
    }
    if (start_s >= end_s) {
        fail(j, "start_time", "'start_time' must be before 'end_time'.");
        return;
    }
    const char *by = admin_query(j, "group_by");
    if (by != NULL && strcmp(by, "model") != 0 && strcmp(by, "deployment") != 0) {
        fail(j, "group_by", "'group_by' must be model or deployment.");
        return;
    }
    struct groups g = {.by_deployment = by != NULL && strcmp(by, "deployment") == 0};
    /* Automatic signals from the windows (the last day at most); feedback from the store. */
    tg_monitor_each(tg_monitor_default(), j->state->org_id, start_s * 1000, end_s * 1000, collect,
                    &g);
    int rc = j->store->ops->feedback_aggregate(j->store, j->state->org_id, start_s * 1000,
                                               end_s * 1000, g.by_deployment, collect_feedback, &g);
    if (rc < 0) {
        groups_free(&g);
        admin_store_error(j, rc, "feedback");
        return;
    }
    struct tg_buf *b = &j->out;
    tg_buf_append_str(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < g.n; i++) {
        const struct group *x = &g.v[i];
        const struct tg_monitor_stats *st = &x->st;
        tg_buf_append_str(b, i > 0 ? ",{" : "{");
        tg_buf_append_str(b, "\"object\":\"quality\",\"model\":");
        tg_json_quote(b, x->model);
        tg_buf_append_str(b, ",\"deployment\":");
        append_str_or_null(b, x->has_deployment ? x->deployment : NULL);
        tg_buf_appendf(b, ",\"feedback_count\":%lld,\"feedback_mean\":", (long long)x->fb_count);
        if (x->fb_count > 0) {
            append_number(b, x->fb_sum / (double)x->fb_count);
        } else {
            tg_buf_append_str(b, "null");
        }
        tg_buf_append_str(b, ",\"labels\":");
        if (x->labels != NULL) {
            tg_json_dump_buf(x->labels, b);
        } else {
            tg_buf_append_str(b, "{}");
        }
        tg_buf_appendf(b, ",\"requests\":%llu,", (unsigned long long)st->requests);
        append_quality(b, st);
        tg_buf_append_str(b, ",\"error_rate\":");
        append_number(b, rate(st->errors, st->requests));
        tg_buf_append_str(b, "}");
    }
    tg_buf_append_str(b, "],\"has_more\":false}");
    groups_free(&g);
}

const struct admin_route tg_admin_routes_monitor[] = {
    {TG_HTTP_GET, "alert_rules", ADMIN_ORG_READ, "List the alert rules", list_rules},
    {TG_HTTP_POST, "alert_rules", ADMIN_OWNER,
     "Create an alert rule (metric, condition, threshold, window, channels)", create_rule},
    {TG_HTTP_GET, "alert_rules/{rule_id}", ADMIN_ORG_READ, "Show an alert rule and its state",
     get_rule},
    {TG_HTTP_POST, "alert_rules/{rule_id}", ADMIN_OWNER, "Modify an alert rule", modify_rule},
    {TG_HTTP_DELETE, "alert_rules/{rule_id}", ADMIN_OWNER, "Delete an alert rule", delete_rule},
    {TG_HTTP_GET, "alerts", ADMIN_ORG_READ, "Fired and resolved alerts, newest first", list_alerts},
    {TG_HTTP_GET, "health", ADMIN_ORG_READ,
     "Requests, errors, latency and TTFT percentiles, breaker and quality per model deployment",
     health},
    {TG_HTTP_GET, "quality", ADMIN_ORG_READ,
     "Feedback and automatic quality signals per model or deployment", quality},
    {TG_HTTP_GET, "notifications", ADMIN_ORG_READ,
     "The notification outbox, newest first (targets shown to owners only)", list_notifications},
    {0, NULL, 0, NULL, NULL},
};
