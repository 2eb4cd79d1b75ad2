/*
 * alerts.c: the alert rules' evaluation (alerts.h), on the notifier's thread once per tick.
 *
 * A tick reads the organization's rules and open events from the store (a few rows), computes
 * each enabled rule's value, and applies tg_alert_decide. A firing writes the open event and
 * its outbox rows in one transaction, a resolution closes the event and queues its rows the
 * same way, so an event is never recorded without its notifications nor notified twice (the
 * outbox's unique key backs this up). A rule deleted or disabled while firing has its event
 * closed without a notification.
 */
#include "monitor/alerts.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "gateway/state.h"
#include "notify/notifier.h"
#include "policy/router.h"

static const char *const metric_names[TG_METRIC_COUNT] = {
    "error_rate",     "p95_latency_ms",     "p95_ttft_ms", "spend_forecast", "breaker_open",
    "ledger_backlog", "finish_length_rate", "empty_rate",  "refusal_rate",   "feedback_mean",
};

const char *
tg_alert_metric_name(enum tg_alert_metric m)
{
    return m < TG_METRIC_COUNT ? metric_names[m] : "unknown";
}

bool
tg_alert_metric_parse(const char *s, enum tg_alert_metric *out)
{
    for (int i = 0; s != NULL && i < TG_METRIC_COUNT; i++) {
        if (strcmp(s, metric_names[i]) == 0) {
            *out = (enum tg_alert_metric)i;
            return true;
        }
    }
    return false;
}

bool
tg_alert_condition_parse(const char *s, enum tg_alert_condition *out)
{
    static const char *const names[] = {"above", "below", "change"};
    for (int i = 0; s != NULL && i < 3; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum tg_alert_condition)i;
            return true;
        }
    }
    return false;
}

bool
tg_alert_metric_is_windowed(enum tg_alert_metric m)
{
    return m != TG_METRIC_SPEND_FORECAST && m != TG_METRIC_BREAKER_OPEN &&
           m != TG_METRIC_LEDGER_BACKLOG;
}

static double
ratio(uint64_t n, uint64_t d, int64_t min_requests, bool *has_value)
{
    *has_value = d > 0 && d >= (uint64_t)(min_requests > 0 ? min_requests : 1);
    return *has_value ? (double)n / (double)d : 0;
}

double
tg_alert_metric_value(enum tg_alert_metric m, const struct tg_monitor_stats *st,
                      int64_t min_requests, bool *has_value)
{
    uint64_t min = (uint64_t)(min_requests > 0 ? min_requests : 1);
    *has_value = false;
    switch (m) {
    case TG_METRIC_ERROR_RATE:
        return ratio(st->errors, st->requests, min_requests, has_value);
    case TG_METRIC_FINISH_LENGTH_RATE:
        return ratio(st->finish_length, st->ok, min_requests, has_value);
    case TG_METRIC_EMPTY_RATE:
        return ratio(st->empty, st->ok, min_requests, has_value);
    case TG_METRIC_REFUSAL_RATE:
        return ratio(st->refusal, st->ok, min_requests, has_value);
    case TG_METRIC_P95_LATENCY:
    case TG_METRIC_P95_TTFT: {
        const uint64_t *h = m == TG_METRIC_P95_LATENCY ? st->latency : st->ttft;
        uint64_t n = 0;
        for (int i = 0; i < TG_MONITOR_N_BINS; i++) {
            n += h[i];
        }
        *has_value = n >= min;
        return *has_value ? tg_monitor_percentile(h, 0.95) : 0;
    }
    case TG_METRIC_FEEDBACK_MEAN:
        *has_value = st->feedback_count >= min;
        return *has_value ? st->feedback_sum / (double)st->feedback_count : 0;
    default:
        return 0;
    }
}

enum tg_alert_step
tg_alert_decide(const struct tg_alert_input *in, bool is_firing)
{
    bool holds = false;
    if (in->has_value) {
        switch (in->condition) {
        case TG_COND_ABOVE:
            holds = in->value > in->threshold;
            break;
        case TG_COND_BELOW:
            holds = in->value < in->threshold;
            break;
        case TG_COND_CHANGE:
            holds = in->has_baseline && fabs(in->value - in->baseline) > in->threshold;
            break;
        }
    }
    if (holds && !is_firing) {
        return TG_ALERT_FIRE;
    }
    if (!holds && is_firing && (in->has_value || in->is_window_complete)) {
        return TG_ALERT_RESOLVE;
    }
    return TG_ALERT_HOLD;
}

/* ---- one tick ------------------------------------------------------------------------------- */

/* Owned copies of the store's rows (the listing callbacks' records die with the callback). */
struct rule {
    char *id, *name, *project_id, *model, *metric, *condition, *channels;
    double threshold;
    int64_t window_s;
    int64_t min_requests;
    bool is_enabled;
};

struct event {
    char *id, *rule_id, *name, *metric, *project_id, *model;
    double value, threshold;
    int64_t fired_ms;
    bool is_matched; /* a rule claimed it */
};

struct tick {
    const struct tg_alerts_env *env;
    struct tg_state *st;
    int64_t now_ms;
    struct rule *rules;
    size_t n_rules;
    struct event *events;
    size_t n_events;
    int rc;
};

static char *
copy_str(const char *s)
{
    return s != NULL ? tg_xstrdup(s) : NULL;
}

static int
got_rule(const struct tg_alert_rule_rec *r, void *arg)
{
    struct tick *t = arg;
    t->rules = tg_xrealloc(t->rules, (t->n_rules + 1) * sizeof(*t->rules));
    t->rules[t->n_rules++] = (struct rule){
        .id = copy_str(r->id),
        .name = copy_str(r->name),
        .project_id = copy_str(r->project_id),
        .model = copy_str(r->model),
        .metric = copy_str(r->metric),
        .condition = copy_str(r->condition),
        .channels = copy_str(r->channels),
        .threshold = r->threshold,
        .window_s = r->window_s,
        .min_requests = r->min_requests,
        .is_enabled = r->is_enabled,
    };
    return 0;
}

static int
got_event(const struct tg_alert_event_rec *r, void *arg)
{
    struct tick *t = arg;
    t->events = tg_xrealloc(t->events, (t->n_events + 1) * sizeof(*t->events));
    t->events[t->n_events++] = (struct event){
        .id = copy_str(r->id),
        .rule_id = copy_str(r->rule_id),
        .name = copy_str(r->name),
        .metric = copy_str(r->metric),
        .project_id = copy_str(r->project_id),
        .model = copy_str(r->model),
        .value = r->value,
        .threshold = r->threshold,
        .fired_ms = r->fired_ms,
    };
    return 0;
}

static void
tick_free(struct tick *t)
{
    for (size_t i = 0; i < t->n_rules; i++) {
        struct rule *r = &t->rules[i];
        free(r->id);
        free(r->name);
        free(r->project_id);
        free(r->model);
        free(r->metric);
        free(r->condition);
        free(r->channels);
    }
    free(t->rules);
    for (size_t i = 0; i < t->n_events; i++) {
        struct event *e = &t->events[i];
        free(e->id);
        free(e->rule_id);
        free(e->name);
        free(e->metric);
        free(e->project_id);
        free(e->model);
    }
    free(t->events);
}

/* Deployments of the rule's model (every model when NULL) whose breaker is open. */
static double
breakers_open(const struct tick *t, const struct rule *r)
{
    const struct tg_config *cfg = t->st->config;
    uint64_t now_mono = tg_clock_mono_ms();
    int64_t n = 0;
    for (size_t m = 0; cfg != NULL && m < cfg->n_models; m++) {
        const struct tg_model_route *route = &cfg->models[m];
        if (route->router == NULL || (r->model != NULL && strcmp(route->name, r->model) != 0)) {
            continue;
        }
        for (size_t i = 0; i < tg_router_size(route->router); i++) {
            struct tg_deployment_view v;
            tg_router_view(route->router, i, now_mono, &v);
            n += v.breaker == TG_BREAKER_OPEN;
        }
    }
    return (double)n;
}

/* Month-end forecast over the budget of the rule's project (or the organization's). */
static double
forecast_share(const struct tick *t, const struct rule *r, bool *has_value)
{
    *has_value = false;
    struct tg_admission *a = t->env->admission;
    const struct tg_level_limits *l = NULL;
    enum tg_scope scope = TG_SCOPE_ORG;
    const char *id = t->st->org_id;
    if (r->project_id != NULL) {
        const struct tg_project *p = tg_state_project(t->st, r->project_id);
        l = p != NULL ? &p->limits : NULL;
        scope = TG_SCOPE_PROJECT;
        id = r->project_id;
    } else {
        l = &t->st->org_limits;
    }
    if (a == NULL || l == NULL || !l->has_budget || l->budget.monthly_limit_micros <= 0) {
        return 0;
    }
    int64_t spend = a->ops->spend(a, scope, id, t->now_ms);
    int64_t start = tg_period_start_ms(t->now_ms, t->env->tz_offset_minutes);
    int64_t end = tg_period_next_ms(t->now_ms, t->env->tz_offset_minutes);
    int64_t forecast =
        tg_notify_forecast_micros(spend, start, end, t->now_ms, t->env->forecast_min_elapsed_ms);
    if (forecast < 0) {
        return 0;
    }
    *has_value = true;
    return (double)forecast / (double)l->budget.monthly_limit_micros;
}

static void
evaluate(const struct tick *t, const struct rule *r, enum tg_alert_metric metric,
         struct tg_alert_input *in)
{
    int64_t w = r->window_s * 1000;
    in->is_window_complete = t->now_ms - w >= tg_monitor_started_ms(t->env->monitor);
    if (!tg_alert_metric_is_windowed(metric)) {
        in->is_window_complete = true;
        if (metric == TG_METRIC_BREAKER_OPEN) {
            in->value = breakers_open(t, r);
            in->has_value = true;
        } else if (metric == TG_METRIC_LEDGER_BACKLOG) {
            in->value = (double)t->env->ledger_backlog;
            in->has_value = t->env->ledger_backlog >= 0;
        } else {
            in->value = forecast_share(t, r, &in->has_value);
        }
        return;
    }
    struct tg_monitor_filter f = {
        t->st->org_id, r->project_id,
        r->model,      NULL,
        NULL,          metric != TG_METRIC_P95_LATENCY && metric != TG_METRIC_P95_TTFT};
    struct tg_monitor_stats *st = tg_xcalloc(1, sizeof(*st));
    tg_monitor_sum(t->env->monitor, &f, t->now_ms - w, t->now_ms, st);
    in->value = tg_alert_metric_value(metric, st, r->min_requests, &in->has_value);
    if (in->condition == TG_COND_CHANGE) {
        tg_monitor_sum(t->env->monitor, &f, t->now_ms - w * (1 + TG_ALERT_BASELINE_WINDOWS),
                       t->now_ms - w, st);
        in->baseline = tg_alert_metric_value(metric, st, r->min_requests, &in->has_baseline);
    }
    free(st);
}

/* ---- recording ------------------------------------------------------------------------------- */

struct record {
    const struct tick *t;
    const struct rule *r; /* NULL: the rule is gone (quiet close) */
    struct tg_alert_event_rec ev;
    const char *kind; /* "fired" | "resolved" */
    const char *condition;
    int64_t window_s;
    const char *channels;
};

static char *
event_payload(const struct record *x, const char *type)
{
    const struct tg_alert_event_rec *e = &x->ev;
    char id[40];
    tg_id_new(id, sizeof(id), "evt_", 24);
    json_t *data = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:f, s:f, s:I, s:o, s:o, s:I, s:o, s:s, s:s}", "alert_id", e->id,
        "rule_id", e->rule_id, "name", e->name, "metric", e->metric, "condition", x->condition,
        "value", e->value, "threshold", e->threshold, "window_seconds", (json_int_t)x->window_s,
        "project_id", e->project_id != NULL ? json_string(e->project_id) : json_null(), "model",
        e->model != NULL ? json_string(e->model) : json_null(), "fired_at",
        (json_int_t)(e->fired_ms / 1000), "resolved_at",
        e->resolved_ms > 0 ? json_integer(e->resolved_ms / 1000) : json_null(), "scope",
        e->project_id != NULL ? "project" : "organization", "id",
        e->project_id != NULL ? e->project_id : e->org_id);
    json_t *ev = json_pack("{s:s, s:s, s:I, s:o}", "id", id, "type", type, "created_at",
                           (json_int_t)(x->t->now_ms / 1000), "data", data);
    char *text = json_dumps(ev, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(ev);
    if (text == NULL) {
        abort(); /* like tg_x*: our own small allocation */
    }
    return text;
}

static int
put_rows(struct tg_store *s, const struct record *x, const char *key, const char *payload,
         const char *member, const char *channel)
{
    json_t *ch = json_loads(x->channels != NULL ? x->channels : "{}", 0, NULL);
    json_t *list = json_object_get(ch, member);
    int rc = 0;
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (rc < 0 || !json_is_string(v)) {
            continue;
        }
        struct tg_outbox_rec o = {
            .org_id = x->ev.org_id,
            .event_key = key,
            .channel = channel,
            .target = json_string_value(v),
            .payload = payload,
            .created_ms = x->t->now_ms,
            .next_attempt_ms = x->t->now_ms,
        };
        rc = s->ops->outbox_put(s, &o, NULL);
    }
    json_decref(ch);
    return rc;
}

static int
record_tx(struct tg_store *s, void *arg)
{
    struct record *x = arg;
    int rc = s->ops->alert_event_put(s, &x->ev);
    if (rc < 0 || x->r == NULL) {
        return rc;
    }
    char key[200];
    snprintf(key, sizeof(key), "alert:%s:%lld:%s", x->ev.rule_id, (long long)x->ev.fired_ms,
             x->kind);
    char *payload =
        event_payload(x, strcmp(x->kind, "fired") == 0 ? "alert.fired" : "alert.resolved");
    rc = put_rows(s, x, key, payload, "webhooks", "webhook");
    if (rc == 0 && x->t->env->has_smtp) {
        rc = put_rows(s, x, key, payload, "emails", "email");
    }
    free(payload);
    if (rc == 0) {
        tg_log_info("monitor: alert %s (%s) %s", x->ev.rule_id, x->ev.name, x->kind);
    }
    return rc;
}

static void
record(struct tick *t, struct record *x)
{
    struct tg_store *s = t->env->store;
    int rc = s->ops->transact(s, record_tx, x);
    if (rc < 0) {
        tg_log_error("monitor: cannot record alert %s %s: %s", x->ev.rule_id, x->kind,
                     tg_strerror(rc));
        t->rc = t->rc < 0 ? t->rc : rc;
    }
}

static struct event *
open_event(struct tick *t, const char *rule_id)
{
    for (size_t i = 0; i < t->n_events; i++) {
        if (strcmp(t->events[i].rule_id, rule_id) == 0) {
            t->events[i].is_matched = true;
            return &t->events[i];
        }
    }
    return NULL;
}

static void
close_quietly(struct tick *t, const struct event *e)
{
    struct record x = {
        .t = t,
        .ev = {.id = e->id,
               .org_id = t->st->org_id,
               .rule_id = e->rule_id,
               .name = e->name,
               .metric = e->metric,
               .project_id = e->project_id,
               .model = e->model,
               .value = e->value,
               .threshold = e->threshold,
               .fired_ms = e->fired_ms,
               .resolved_ms = t->now_ms},
        .kind = "resolved",
    };
    record(t, &x);
}

static void
check_rule(struct tick *t, const struct rule *r)
{
    struct event *e = open_event(t, r->id);
    enum tg_alert_metric metric;
    struct tg_alert_input in = {.threshold = r->threshold};
    if (!r->is_enabled || !tg_alert_metric_parse(r->metric, &metric) ||
        !tg_alert_condition_parse(r->condition, &in.condition)) {
        if (e != NULL) {
            close_quietly(t, e);
        }
        return;
    }
    evaluate(t, r, metric, &in);
    enum tg_alert_step step = tg_alert_decide(&in, e != NULL);
    if (step == TG_ALERT_HOLD) {
        return;
    }
    char id[40];
    struct record x = {
        .t = t,
        .r = r,
        .condition = r->condition,
        .window_s = r->window_s,
        .channels = r->channels,
    };
    if (step == TG_ALERT_FIRE) {
        tg_id_new(id, sizeof(id), "alt_", 24);
        x.kind = "fired";
        x.ev = (struct tg_alert_event_rec){.id = id,
                                           .org_id = t->st->org_id,
                                           .rule_id = r->id,
                                           .name = r->name,
                                           .metric = r->metric,
                                           .project_id = r->project_id,
                                           .model = r->model,
                                           .value = in.value,
                                           .threshold = r->threshold,
                                           .fired_ms = t->now_ms};
    } else {
        x.kind = "resolved";
        x.ev = (struct tg_alert_event_rec){.id = e->id,
                                           .org_id = t->st->org_id,
                                           .rule_id = e->rule_id,
                                           .name = e->name,
                                           .metric = e->metric,
                                           .project_id = e->project_id,
                                           .model = e->model,
                                           .value = in.has_value ? in.value : e->value,
                                           .threshold = e->threshold,
                                           .fired_ms = e->fired_ms,
                                           .resolved_ms = t->now_ms};
    }
    record(t, &x);
}

int
tg_alerts_tick(const struct tg_alerts_env *env, int64_t now_ms)
{
    struct tick t = {.env = env, .now_ms = now_ms};
    t.st = tg_state_acquire();
    if (t.st == NULL || t.st->org_id == NULL || env->store->ops->alert_rules_list == NULL) {
        tg_state_unref(t.st);
        return 0;
    }
    struct tg_store *s = env->store;
    int rc = s->ops->alert_rules_list(s, t.st->org_id, got_rule, &t);
    if (rc == 0) {
        rc = s->ops->alert_events_list(s, t.st->org_id, NULL, 1, 0, got_event, &t);
    }
    if (rc < 0) {
        tg_log_error("monitor: cannot read the alert rules: %s", tg_strerror(rc));
        t.rc = rc;
    }
    for (size_t i = 0; rc == 0 && i < t.n_rules; i++) {
        check_rule(&t, &t.rules[i]);
    }
    for (size_t i = 0; rc == 0 && i < t.n_events; i++) {
        if (!t.events[i].is_matched) {
            close_quietly(&t, &t.events[i]); /* its rule was deleted */
        }
    }
    tick_free(&t);
    tg_state_unref(t.st);
    return t.rc;
}
