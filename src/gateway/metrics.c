/*
 * metrics.c: the series table behind /metrics and its Prometheus text rendering.
 *
 * A series is one label combination (project, model, provider, deployment, status) with its
 * counters and histograms. Series live in one growing array addressed by index from a chained
 * hash table, so growing the array never invalidates the chains. Refusals by admission are
 * series too (status -1, only the project set), so one cap bounds all of them.
 */
#include "gateway/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "gateway/state.h"
#include "policy/admission.h"

#define N_BUCKETS 13
/* Upper bounds in milliseconds; rendered in seconds as Prometheus names them. */
static const int64_t bucket_ms[N_BUCKETS] = {5,    10,   25,   50,    100,   250,  500,
                                             1000, 2500, 5000, 10000, 30000, 60000};
static const char *const bucket_le[N_BUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60"};

enum { H_TOTAL, H_TTFT, H_UPSTREAM, H_OVERHEAD, N_HIST };
enum { T_PROMPT, T_CACHED, T_COMPLETION, T_REASONING, N_TOKENS };

struct hist {
    uint64_t counts[N_BUCKETS]; /* per bucket, not cumulative; summed when rendered */
    uint64_t count;
    int64_t sum_ms;
};

struct series {
    char project[40];
    char model[96];
    char provider[64];
    char deployment[96];
    int status; /* -1: a refusal series (project only) */
    uint32_t next;
    uint64_t requests;
    uint64_t tokens[N_TOKENS];
    int64_t cost_micros;
    uint64_t cache_hits;
    int64_t saved_micros;
    uint64_t rate_limited;
    uint64_t budget_refused;
    struct hist h[N_HIST];
};

#define N_HEADS 16384u
#define NIL UINT32_MAX

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct series *all;
static size_t n_all, cap_all;
static uint32_t heads[N_HEADS];
static bool heads_ready;
static size_t max_series = TG_METRICS_MAX_SERIES;
static bool warned_cap;

static void
copy_label(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src != NULL ? src : "");
}

static uint32_t
hash_key(const struct series *k)
{
    uint32_t h = 2166136261u;
    const char *parts[4] = {k->project, k->model, k->provider, k->deployment};
    for (size_t i = 0; i < 4; i++) {
        for (const char *p = parts[i]; *p != '\0'; p++) {
            h = (h ^ (unsigned char)*p) * 16777619u;
        }
        h = (h ^ 0xffu) * 16777619u;
    }
    h = (h ^ (uint32_t)k->status) * 16777619u;
    return h % N_HEADS;
}

static bool
same_key(const struct series *a, const struct series *b)
{
    return a->status == b->status && strcmp(a->project, b->project) == 0 &&
           strcmp(a->model, b->model) == 0 && strcmp(a->provider, b->provider) == 0 &&
           strcmp(a->deployment, b->deployment) == 0;
}

static struct series *
find_or_add(const struct series *k, bool may_add)
{
    if (!heads_ready) {
        for (size_t i = 0; i < N_HEADS; i++) {
            heads[i] = NIL;
        }
        heads_ready = true;
    }
    uint32_t h = hash_key(k);
    for (uint32_t i = heads[h]; i != NIL; i = all[i].next) {
        if (same_key(&all[i], k)) {
            return &all[i];
        }
    }
    if (!may_add) {
        return NULL;
    }
    if (n_all == cap_all) {
        size_t cap = cap_all ? cap_all * 2 : 64;
        all = tg_xrealloc(all, cap * sizeof(*all));
        cap_all = cap;
    }
    struct series *s = &all[n_all];
    memset(s, 0, sizeof(*s));
    memcpy(s->project, k->project, sizeof(s->project));
    memcpy(s->model, k->model, sizeof(s->model));
    memcpy(s->provider, k->provider, sizeof(s->provider));
    memcpy(s->deployment, k->deployment, sizeof(s->deployment));
    s->status = k->status;
    s->next = heads[h];
    heads[h] = (uint32_t)n_all;
    n_all++;
    return s;
}

/* The series for k, or past the cap the "other" series of the same status (which may be
 * added beyond the cap: statuses are few, so those stay bounded). */
static struct series *
lookup(struct series *k)
{
    struct series *s = find_or_add(k, n_all < max_series);
    if (s != NULL) {
        return s;
    }
    if (!warned_cap) {
        warned_cap = true;
        tg_log_warn("metrics: more than %zu label combinations; further ones count as \"other\"",
                    max_series);
    }
    const char *o = "other";
    copy_label(k->project, sizeof(k->project), o);
    copy_label(k->model, sizeof(k->model), k->status < 0 ? "" : o);
    copy_label(k->provider, sizeof(k->provider), k->status < 0 ? "" : o);
    copy_label(k->deployment, sizeof(k->deployment), k->status < 0 ? "" : o);
    return find_or_add(k, true);
}

static void
observe(struct hist *h, int64_t ms)
{
    if (ms < 0) {
        return;
    }
    size_t i = 0;
    while (i < N_BUCKETS && ms > bucket_ms[i]) {
        i++;
    }
    if (i < N_BUCKETS) {
        h->counts[i]++;
    }
    h->count++;
    h->sum_ms += ms;
}

void
tg_metrics_record(const struct tg_ledger_row *row, int64_t upstream_ms)
{
    struct series k;
    memset(&k, 0, sizeof(k));
    copy_label(k.project, sizeof(k.project), row->project_id);
    copy_label(k.model, sizeof(k.model), row->model_requested);
    copy_label(k.provider, sizeof(k.provider), row->provider);
    copy_label(k.deployment, sizeof(k.deployment), row->deployment);
    k.status = row->status < 0 ? 0 : row->status;
    pthread_mutex_lock(&lock);
    struct series *s = lookup(&k);
    s->requests++;
    s->tokens[T_PROMPT] += (uint64_t)(row->prompt_tokens > 0 ? row->prompt_tokens : 0);
    s->tokens[T_CACHED] += (uint64_t)(row->cached_tokens > 0 ? row->cached_tokens : 0);
    s->tokens[T_COMPLETION] += (uint64_t)(row->completion_tokens > 0 ? row->completion_tokens : 0);
    s->tokens[T_REASONING] += (uint64_t)(row->reasoning_tokens > 0 ? row->reasoning_tokens : 0);
    s->cost_micros += row->cost_micros;
    if (strcmp(row->provider, "cache") == 0) {
        s->cache_hits++;
        s->saved_micros += row->saved_micros;
    }
    observe(&s->h[H_TOTAL], row->latency_ms);
    observe(&s->h[H_TTFT], row->ttft_ms);
    if (upstream_ms >= 0) {
        observe(&s->h[H_UPSTREAM], upstream_ms);
        int64_t own = row->latency_ms - upstream_ms;
        observe(&s->h[H_OVERHEAD], own > 0 ? own : 0);
    }
    pthread_mutex_unlock(&lock);
}

void
tg_metrics_refused(enum tg_metrics_refusal why, const char *project_id)
{
    struct series k;
    memset(&k, 0, sizeof(k));
    copy_label(k.project, sizeof(k.project), project_id);
    k.status = -1;
    pthread_mutex_lock(&lock);
    struct series *s = lookup(&k);
    if (why == TG_METRICS_RATE_LIMITED) {
        s->rate_limited++;
    } else {
        s->budget_refused++;
    }
    pthread_mutex_unlock(&lock);
}

void
tg_metrics_reset(size_t max)
{
    pthread_mutex_lock(&lock);
    free(all);
    all = NULL;
    n_all = cap_all = 0;
    heads_ready = false;
    warned_cap = false;
    max_series = max > 0 ? max : TG_METRICS_MAX_SERIES;
    pthread_mutex_unlock(&lock);
}

/* ---- exposition --------------------------------------------------------------------------- */

int
tg_metrics_escape(struct tg_buf *out, const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        int rc;
        if (*p == '\\') {
            rc = tg_buf_append_str(out, "\\\\");
        } else if (*p == '"') {
            rc = tg_buf_append_str(out, "\\\"");
        } else if (*p == '\n') {
            rc = tg_buf_append_str(out, "\\n");
        } else {
            rc = tg_buf_append(out, p, 1);
        }
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

static void
labels(struct tg_buf *b, const struct series *s, bool with_status)
{
    tg_buf_append_str(b, "project=\"");
    tg_metrics_escape(b, s->project);
    if (s->status >= 0) {
        tg_buf_append_str(b, "\",model=\"");
        tg_metrics_escape(b, s->model);
        tg_buf_append_str(b, "\",provider=\"");
        tg_metrics_escape(b, s->provider);
        tg_buf_append_str(b, "\",deployment=\"");
        tg_metrics_escape(b, s->deployment);
    }
    tg_buf_append_str(b, "\"");
    if (with_status && s->status >= 0) {
        tg_buf_appendf(b, ",status=\"%d\",status_class=\"%dxx\"", s->status, s->status / 100);
    }
}

static void
family(struct tg_buf *b, const char *name, const char *type, const char *help)
{
    tg_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
render_hist(struct tg_buf *b, const char *name, const char *help, int which, const struct series *v,
            size_t n)
{
    family(b, name, "histogram", help);
    for (size_t i = 0; i < n; i++) {
        const struct series *s = &v[i];
        const struct hist *h = &s->h[which];
        if (s->status < 0 || h->count == 0) {
            continue;
        }
        uint64_t cum = 0;
        for (size_t j = 0; j < N_BUCKETS; j++) {
            cum += h->counts[j];
            tg_buf_appendf(b, "%s_bucket{", name);
            labels(b, s, true);
            tg_buf_appendf(b, ",le=\"%s\"} %llu\n", bucket_le[j], (unsigned long long)cum);
        }
        tg_buf_appendf(b, "%s_bucket{", name);
        labels(b, s, true);
        tg_buf_appendf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->count);
        tg_buf_appendf(b, "%s_sum{", name);
        labels(b, s, true);
        tg_buf_appendf(b, "} %lld.%03lld\n", (long long)(h->sum_ms / 1000),
                       (long long)(h->sum_ms % 1000));
        tg_buf_appendf(b, "%s_count{", name);
        labels(b, s, true);
        tg_buf_appendf(b, "} %llu\n", (unsigned long long)h->count);
    }
}

/* One counter line per request series; value(s) picks the number, 0 skips the line unless
 * always is set. */
typedef long long (*value_fn)(const struct series *s, int arg);

static long long
v_requests(const struct series *s, int arg)
{
    (void)arg;
    return (long long)s->requests;
}
static long long
v_tokens(const struct series *s, int arg)
{
    return (long long)s->tokens[arg];
}
static long long
v_cost(const struct series *s, int arg)
{
    (void)arg;
    return (long long)s->cost_micros;
}
static long long
v_hits(const struct series *s, int arg)
{
    (void)arg;
    return (long long)s->cache_hits;
}
static long long
v_saved(const struct series *s, int arg)
{
    (void)arg;
    return (long long)s->saved_micros;
}

static void
render_counter(struct tg_buf *b, const char *name, const char *help, value_fn fn,
               const struct series *v, size_t n)
{
    family(b, name, "counter", help);
    for (size_t i = 0; i < n; i++) {
        if (v[i].status < 0 || (fn != v_requests && fn(&v[i], 0) == 0)) {
            continue;
        }
        tg_buf_appendf(b, "%s{", name);
        labels(b, &v[i], true);
        tg_buf_appendf(b, "} %lld\n", fn(&v[i], 0));
    }
}

/* The scrape-time gauges: budget use per project and breaker state per deployment. */
static void
render_gauges(struct tg_buf *b, const struct tg_metrics_gauges *g)
{
    family(b, "tollgate_project_budget_spend_micro_dollars", "gauge",
           "Spend of the project in the current budget period (settled plus reserved), in "
           "micro-dollars.");
    for (size_t i = 0; i < g->n_budgets; i++) {
        tg_buf_append_str(b, "tollgate_project_budget_spend_micro_dollars{project=\"");
        tg_metrics_escape(b, g->budgets[i].project_id);
        tg_buf_appendf(b, "\"} %lld\n", (long long)g->budgets[i].spend_micros);
    }
    family(b, "tollgate_project_budget_limit_micro_dollars", "gauge",
           "The project's monthly hard budget, in micro-dollars (projects without one are "
           "left out).");
    for (size_t i = 0; i < g->n_budgets; i++) {
        if (g->budgets[i].limit_micros <= 0) {
            continue;
        }
        tg_buf_append_str(b, "tollgate_project_budget_limit_micro_dollars{project=\"");
        tg_metrics_escape(b, g->budgets[i].project_id);
        tg_buf_appendf(b, "\"} %lld\n", (long long)g->budgets[i].limit_micros);
    }
    family(b, "tollgate_deployment_breaker_state", "gauge",
           "Circuit breaker of each deployment: 1 on the line of its current state "
           "(closed, open, half_open), 0 on the others.");
    static const enum tg_breaker_state states[] = {TG_BREAKER_CLOSED, TG_BREAKER_OPEN,
                                                   TG_BREAKER_HALF_OPEN};
    for (size_t i = 0; i < g->n_breakers; i++) {
        const struct tg_metrics_breaker *d = &g->breakers[i];
        for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
            tg_buf_append_str(b, "tollgate_deployment_breaker_state{model=\"");
            tg_metrics_escape(b, d->model);
            tg_buf_append_str(b, "\",provider=\"");
            tg_metrics_escape(b, d->provider);
            tg_buf_append_str(b, "\",deployment=\"");
            tg_metrics_escape(b, d->deployment);
            tg_buf_appendf(b, "\",state=\"%s\"} %d\n", tg_breaker_state_name(states[k]),
                           d->state == states[k] ? 1 : 0);
        }
    }
    if (g->access_log_dropped >= 0) {
        family(b, "tollgate_access_log_dropped_total", "counter",
               "Access log lines dropped because the writer's queue was full.");
        tg_buf_appendf(b, "tollgate_access_log_dropped_total %lld\n",
                       (long long)g->access_log_dropped);
    }
}

static const char *const token_kind[N_TOKENS] = {"prompt", "cached", "completion", "reasoning"};

int
tg_metrics_render(struct tg_buf *b, const struct tg_metrics_gauges *g)
{
    /* Copy under the lock, render without it: a scrape never holds up requests for long. */
    pthread_mutex_lock(&lock);
    size_t n = n_all;
    struct series *v = n ? tg_xmalloc(n * sizeof(*v)) : NULL;
    if (n) {
        memcpy(v, all, n * sizeof(*v));
    }
    pthread_mutex_unlock(&lock);

    render_counter(b, "tollgate_requests_total",
                   "Requests answered, by project, model, provider, deployment and status.",
                   v_requests, v, n);
    family(b, "tollgate_tokens_total", "counter", "Tokens billed, by kind.");
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < N_TOKENS; k++) {
            if (v[i].status < 0 || v_tokens(&v[i], k) == 0) {
                continue;
            }
            tg_buf_append_str(b, "tollgate_tokens_total{");
            labels(b, &v[i], true);
            tg_buf_appendf(b, ",kind=\"%s\"} %lld\n", token_kind[k], v_tokens(&v[i], k));
        }
    }
    render_counter(b, "tollgate_cost_micro_dollars_total",
                   "Cost charged, in millionths of a US dollar.", v_cost, v, n);
    render_counter(b, "tollgate_cache_hits_total", "Requests answered from the response cache.",
                   v_hits, v, n);
    render_counter(b, "tollgate_cache_saved_micro_dollars_total",
                   "Cost the cache hits would have had upstream, in micro-dollars.", v_saved, v, n);
    family(b, "tollgate_rate_limited_total", "counter",
           "Requests refused by a rate limit (429), by project.");
    for (size_t i = 0; i < n; i++) {
        if (v[i].status < 0 && v[i].rate_limited > 0) {
            tg_buf_append_str(b, "tollgate_rate_limited_total{");
            labels(b, &v[i], false);
            tg_buf_appendf(b, "} %llu\n", (unsigned long long)v[i].rate_limited);
        }
    }
    family(b, "tollgate_budget_refused_total", "counter",
           "Requests refused because a budget is used up (429 insufficient_quota), by project.");
    for (size_t i = 0; i < n; i++) {
        if (v[i].status < 0 && v[i].budget_refused > 0) {
            tg_buf_append_str(b, "tollgate_budget_refused_total{");
            labels(b, &v[i], false);
            tg_buf_appendf(b, "} %llu\n", (unsigned long long)v[i].budget_refused);
        }
    }
    render_hist(b, "tollgate_request_duration_seconds",
                "Time from admission to the last byte of the answer.", H_TOTAL, v, n);
    render_hist(b, "tollgate_time_to_first_token_seconds",
                "Time from the request to the first byte sent to the client.", H_TTFT, v, n);
    render_hist(b, "tollgate_upstream_duration_seconds", "Time spent waiting on the provider.",
                H_UPSTREAM, v, n);
    render_hist(b, "tollgate_gateway_overhead_seconds",
                "The gateway's own time: total minus upstream.", H_OVERHEAD, v, n);
    if (g != NULL) {
        render_gauges(b, g);
    }
    if (g != NULL && g->open_connections >= 0) {
        family(b, "tollgate_open_connections", "gauge", "Client connections open.");
        tg_buf_appendf(b, "tollgate_open_connections %lld\n", (long long)g->open_connections);
    }
    if (g != NULL && g->ledger_depth >= 0) {
        family(b, "tollgate_ledger_queue_depth", "gauge", "Ledger rows queued, not yet written.");
        tg_buf_appendf(b, "tollgate_ledger_queue_depth %lld\n", (long long)g->ledger_depth);
    }
    free(v);
    return 0;
}

static atomic_size_t connections[TG_METRICS_MAX_WORKERS];

void
tg_metrics_set_connections(int index, size_t n)
{
    if (index >= 0 && index < TG_METRICS_MAX_WORKERS) {
        atomic_store_explicit(&connections[index], n, memory_order_relaxed);
    }
}

int64_t
tg_metrics_connections(void)
{
    size_t sum = 0;
    for (size_t i = 0; i < TG_METRICS_MAX_WORKERS; i++) {
        sum += atomic_load_explicit(&connections[i], memory_order_relaxed);
    }
    return (int64_t)sum;
}

void
tg_metrics_gauges_sample(struct tg_metrics_gauges *g, const struct tg_state *st,
                         struct tg_admission *a, int64_t now_ms, uint64_t now_mono_ms)
{
    struct tg_metrics_budget *bs = st->n_projects ? tg_xcalloc(st->n_projects, sizeof(*bs)) : NULL;
    size_t n_b = 0;
    for (size_t i = 0; i < st->n_projects; i++) {
        const struct tg_project *p = &st->projects[i];
        if (p->is_archived) {
            continue;
        }
        struct tg_metrics_budget *m = &bs[n_b++];
        m->project_id = p->id;
        m->spend_micros = a != NULL ? a->ops->spend(a, TG_SCOPE_PROJECT, p->id, now_ms) : 0;
        m->limit_micros = p->limits.has_budget ? p->limits.budget.monthly_limit_micros : 0;
    }
    const struct tg_config *c = st->config;
    size_t n_dep = 0;
    for (size_t m = 0; m < c->n_models; m++) {
        n_dep += c->models[m].router != NULL ? tg_router_size(c->models[m].router) : 0;
    }
    struct tg_metrics_breaker *ds = n_dep ? tg_xcalloc(n_dep, sizeof(*ds)) : NULL;
    size_t n_d = 0;
    for (size_t m = 0; m < c->n_models; m++) {
        const struct tg_model_route *r = &c->models[m];
        for (size_t i = 0; r->router != NULL && i < tg_router_size(r->router); i++) {
            struct tg_deployment_view v;
            tg_router_view(r->router, i, now_mono_ms, &v);
            ds[n_d++] = (struct tg_metrics_breaker){
                .model = r->name,
                .provider = v.provider,
                .deployment = v.upstream_model,
                .state = v.breaker,
            };
        }
    }
    g->budgets = bs;
    g->n_budgets = n_b;
    g->breakers = ds;
    g->n_breakers = n_d;
}

void
tg_metrics_gauges_deinit(struct tg_metrics_gauges *g)
{
    free((void *)g->budgets);
    free((void *)g->breakers);
    g->budgets = NULL;
    g->breakers = NULL;
    g->n_budgets = g->n_breakers = 0;
}
