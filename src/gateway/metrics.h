/*
 * metrics.h: process-wide request metrics and their Prometheus text exposition (GET /metrics).
 *
 * Every settled request adds its ledger row here (counts by project, model, provider,
 * deployment and status; latency histograms; tokens by kind; cost; cache hits and savings).
 * Labels come only from bounded sets (ids and names from the config and the store, status
 * codes), never from request text. The number of label combinations is capped: past the cap a
 * row counts into one series whose labels all read "other", and a warning is logged once.
 *
 * Gauges (budget use per project, breaker state per deployment, connections, queue depths)
 * are sampled by the caller at scrape time (tg_metrics_gauges_sample) and rendered with the
 * counters.
 *
 * Thread-safe: one mutex guards the series table; a record is a hash lookup and a few adds,
 * far cheaper than the request it counts, and a scrape copies under the same lock and formats
 * without it (the worker formats on the thread pool).
 */
#ifndef TG_GATEWAY_METRICS_H
#define TG_GATEWAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "policy/router.h"
#include "store/store.h"

struct tg_state;
struct tg_admission;

/* The default cap on label combinations. */
#define TG_METRICS_MAX_SERIES 10000

enum tg_metrics_refusal { TG_METRICS_RATE_LIMITED, TG_METRICS_BUDGET_REFUSED };

/* Counts one settled request. upstream_ms is the time spent waiting on the provider (-1 when
 * nothing went upstream, e.g. a cache hit or a refusal). */
void tg_metrics_record(const struct tg_ledger_row *row, int64_t upstream_ms);

/* Counts a request refused by admission (429) for project_id. */
void tg_metrics_refused(enum tg_metrics_refusal why, const char *project_id);

/* One project's budget use in the current period, sampled at scrape time. */
struct tg_metrics_budget {
    const char *project_id; /* borrowed */
    int64_t spend_micros;   /* settled plus reserved (policy/admission.h ops->spend) */
    int64_t limit_micros;   /* the project's monthly hard limit; 0: none (line left out) */
};

/* One deployment's circuit breaker, sampled at scrape time. */
struct tg_metrics_breaker {
    const char *model;      /* the route's name; borrowed */
    const char *provider;   /* borrowed */
    const char *deployment; /* the provider-side model, as requests' deployment label */
    enum tg_breaker_state state;
};

/* Gauges sampled at scrape time by the caller, appended after the counters. */
struct tg_metrics_gauges {
    int64_t open_connections;   /* < 0: not reported */
    int64_t ledger_depth;       /* < 0: not reported */
    int64_t access_log_dropped; /* < 0: not reported */
    const struct tg_metrics_budget *budgets;
    size_t n_budgets;
    const struct tg_metrics_breaker *breakers;
    size_t n_breakers;
};

/* Fills g's budgets (every active project of st, spend from a when not NULL) and breakers
 * (every deployment of st's config routers, read at now_mono_ms) without touching its other
 * fields. Each router's and the admission's own lock is held only to copy a value out, so a
 * scrape never holds up requests for the time it takes to format. The arrays are g's (free
 * them with tg_metrics_gauges_deinit); their strings are borrowed from st. */
void tg_metrics_gauges_sample(struct tg_metrics_gauges *g, const struct tg_state *st,
                              struct tg_admission *a, int64_t now_ms, uint64_t now_mono_ms);
void tg_metrics_gauges_deinit(struct tg_metrics_gauges *g);

/* Worker index's count of open connections, sampled by the worker on each request (so a
 * scrape from any worker sees them all). Indexes past TG_METRICS_MAX_WORKERS are ignored. */
#define TG_METRICS_MAX_WORKERS 256
void tg_metrics_set_connections(int index, size_t n);

/* Sum of the counts set by tg_metrics_set_connections. */
int64_t tg_metrics_connections(void);

/* Appends the exposition text of everything counted so far (plus gauges) to out. */
int tg_metrics_render(struct tg_buf *out, const struct tg_metrics_gauges *g);

/* Appends s to out escaped as a Prometheus label value (\\, \" and \n). */
int tg_metrics_escape(struct tg_buf *out, const char *s);

/* Tests: forgets every series and sets the cap (0: the default). */
void tg_metrics_reset(size_t max_series);

#endif
