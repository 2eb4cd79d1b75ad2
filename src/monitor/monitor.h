/*
 * monitor.h: live health of models and deployments (sliding windows of requests, errors,
 * latency, time to first token), quality signals (feedback from applications, and automatic
 * ones: finish_reason=length, empty answers, refusals), and the alert rules evaluated over
 * them, whose fired and resolved events go through the notification outbox (monitor/alerts.h).
 *
 * The windows are per series, one series per (org, project, requested model, provider,
 * deployment), at most TG_MONITOR_MAX_SERIES of them (later combinations are not counted, and
 * a warning says so once). Each series keeps two rings of time buckets: 10-second buckets over
 * the last hour and 5-minute buckets over the last day; a query reads the fine ring when its
 * range lies within the last hour, else the coarse one. A bucket holds counts (requests,
 * successes, errors, finish_length, empty, refusal, feedback and its score sum) and
 * log-spaced histograms of latency and time to first token, from which percentiles are
 * interpolated.
 *
 * An error is a request answered with status >= 500 (the gateway's own failures and upstream
 * failures relayed as 502/503/504 alike); client errors (4xx) and clients that left (499) are
 * not. The quality counts (finish_length, empty, refusal) are of 2xx answers whose
 * finish_reason the gateway saw; their rates are over those answers.
 *
 * Everything is guarded by one mutex: tg_monitor_observe takes it once for a hash lookup and
 * some additions; queries take it while they sum. Memory is allocated when a series first
 * appears (about 150 KiB each), never on the observe path otherwise.
 */
#ifndef TG_MONITOR_MONITOR_H
#define TG_MONITOR_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/observe.h"

#define TG_MONITOR_MAX_SERIES 256
#define TG_MONITOR_N_BINS 24
#define TG_MONITOR_FINE_MS 10000LL
#define TG_MONITOR_FINE_N 360
#define TG_MONITOR_COARSE_MS 300000LL
#define TG_MONITOR_COARSE_N 288
/* The longest range the windows cover. */
#define TG_MONITOR_SPAN_MS (TG_MONITOR_COARSE_MS * TG_MONITOR_COARSE_N)

/* Sums over a range of buckets. */
struct tg_monitor_stats {
    uint64_t requests;
    uint64_t ok; /* 2xx answers whose finish_reason was seen (the quality denominator) */
    uint64_t errors;
    uint64_t finish_length;
    uint64_t empty;
    uint64_t refusal;
    uint64_t feedback_count;
    double feedback_sum;
    uint64_t latency[TG_MONITOR_N_BINS]; /* requests per latency bin */
    uint64_t ttft[TG_MONITOR_N_BINS];    /* requests with a first byte, per TTFT bin */
};

/* Which series a query sums: org_id is required; project_id, model, provider and deployment
 * NULL match any. */
struct tg_monitor_filter {
    const char *org_id;
    const char *project_id;
    const char *model;
    const char *provider;
    const char *deployment;
    bool is_counts_only; /* leave the histograms out (cheaper for long ranges) */
};

/* A series' identity, handed to tg_monitor_each's callback. */
struct tg_monitor_key {
    const char *org_id;
    const char *project_id;
    const char *model;
    const char *provider;
    const char *deployment;
};

/* What one request contributes (a copy of the parts of an observation the windows keep). */
struct tg_monitor_sample {
    const char *request_id; /* remembered for tg_monitor_recent_find; may be NULL */
    const char *org_id;
    const char *project_id;
    const char *model;
    const char *provider;
    const char *deployment;
    int status;
    int64_t latency_ms;
    int64_t ttft_ms;           /* -1: none */
    const char *finish_reason; /* "" or NULL: not seen */
    bool is_empty;
    bool is_refusal;
};

struct tg_monitor;

/* A monitor of one's own (tests); tg_monitor_default() is the process's. */
struct tg_monitor *tg_monitor_new(void);
void tg_monitor_free(struct tg_monitor *m);
struct tg_monitor *tg_monitor_default(void);

/* When the monitor began counting (Unix ms of the gateway clock): a window reaching before it
 * is incomplete. */
int64_t tg_monitor_started_ms(const struct tg_monitor *m);
void tg_monitor_set_started_ms(struct tg_monitor *m, int64_t ms);

/* Counts one request at now_ms. Thread-safe. */
void tg_monitor_add(struct tg_monitor *m, const struct tg_monitor_sample *s, int64_t now_ms);

/* Counts one feedback score into the series of the request it is about. Thread-safe. */
void tg_monitor_add_feedback(struct tg_monitor *m, const struct tg_monitor_key *k, double score,
                             int64_t now_ms);

/* Sums the buckets of the series matching f over [from_ms, to_ms) into *out (zeroed first);
 * the range is cut to what the rings hold. Returns how many series matched. */
size_t tg_monitor_sum(struct tg_monitor *m, const struct tg_monitor_filter *f, int64_t from_ms,
                      int64_t to_ms, struct tg_monitor_stats *out);

/* Calls cb for every series of org_id with at least one request or feedback in
 * [from_ms, to_ms), with its sums. The callback runs under the monitor's lock: it must not
 * call the monitor. */
typedef void (*tg_monitor_each_cb)(const struct tg_monitor_key *k,
                                   const struct tg_monitor_stats *st, void *arg);
void tg_monitor_each(struct tg_monitor *m, const char *org_id, int64_t from_ms, int64_t to_ms,
                     tg_monitor_each_cb cb, void *arg);

/* The p-th percentile (0 < p < 1) of a histogram of TG_MONITOR_N_BINS bins, interpolated
 * within its bin; -1 when the histogram is empty. */
double tg_monitor_percentile(const uint64_t *bins, double p);

/* The bin of a duration. */
int tg_monitor_bin(int64_t ms);

/* Requests the process settled recently (the last TG_MONITOR_RECENT), by id: feedback may
 * arrive before the request's ledger row reaches the store. Copies the series key parts
 * into the given buffers (96 bytes each). Returns true when found in project_id. */
#define TG_MONITOR_RECENT 4096
bool tg_monitor_recent_find(struct tg_monitor *m, const char *request_id, const char *project_id,
                            char *model, char *provider, char *deployment);

/* Counts one settled request into the process's monitor (thread-safe, cheap, never blocks on
 * I/O). */
void tg_monitor_observe(const struct tg_observation *o);

#endif
