/*
 * notifier.h: spend alerts. One background thread watches every budgeted level (organization,
 * projects, keys), decides which events are due (thresholds crossed, an automatic increase, a
 * month-end forecast over the budget), puts them into the store's durable outbox, and
 * delivers the outbox: webhooks (JSON body, HMAC-SHA256 signature header) and e-mail over SMTP
 * (libcurl).
 *
 * Exactly once per period and channel: an event is named by a key such as
 * "budget:project:<id>:<period_start_ms>:80", and the outbox keeps one row per (key, channel,
 * target), so deciding an event twice (every tick, or again after a restart) queues it once.
 * A row stays due until a delivery succeeds, with exponential back-off (1 s, 2 s, ... 1 h)
 * that the store keeps across restarts.
 *
 * The thread never runs on a loop: it may block on the store and on the network (each
 * delivery bounded by a timeout, and cut short by stop).
 *
 * Each tick also evaluates the alert rules (monitor/alerts.h), whose events go through the same
 * outbox and delivery.
 *
 * The pure pieces (signature, back-off, threshold, increase and forecast rules, messages) are
 * declared here too, so unit tests can drive them without a thread or a network.
 */
#ifndef TG_NOTIFY_NOTIFIER_H
#define TG_NOTIFY_NOTIFIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "gateway/config.h"
#include "policy/admission.h"
#include "policy/limits.h"
#include "store/store.h"

struct tg_ledger;

struct tg_notifier_opts {
    struct tg_store *store;          /* borrowed; outlives the notifier */
    struct tg_ledger *ledger;        /* borrowed; its backlog for alert rules (NULL: unknown) */
    struct tg_admission *admission;  /* borrowed; spend of each level */
    const struct tg_smtp_conf *smtp; /* borrowed; NULL = no e-mail */
    int tz_offset_minutes;           /* budget periods (admission.h) */
    uint64_t interval_ms;            /* between ticks; 1000 */
    uint64_t webhook_timeout_ms;     /* each webhook POST; 10000 */
};

struct tg_notifier;

/* Starts the thread. The state snapshot (gateway/state.h) must be published already. Returns
 * 0 and sets *out, or a negative code. */
int tg_notifier_start(const struct tg_notifier_opts *opts, struct tg_notifier **out);

/* Wakes the thread for an early tick (after a change of settings, say). Thread-safe. */
void tg_notifier_wake(struct tg_notifier *n);

/* Stops the thread (a delivery in progress is cut short and stays due) and frees n. */
void tg_notifier_stop(struct tg_notifier *n);

/* One tick on the calling thread, at now_ms: decide events, then deliver what is due. Used by
 * the thread, and by tests. Returns 0 or the first store error. */
int tg_notifier_tick(struct tg_notifier *n, int64_t now_ms);

/* ---- the pure rules ------------------------------------------------------------------------ */

/* Delay before the next attempt after the attempts-th failure (1 for the first): 1 s doubled
 * each time, at most 1 h. */
int64_t tg_notify_backoff_ms(int attempts);

/* The signature header value for a webhook body: "t=<t_unix>,v1=<hex HMAC-SHA256(secret,
 * "<t_unix>.<body>")>", written to out (out_cap >= 96 bytes). */
void tg_notify_signature(const void *secret, size_t secret_len, int64_t t_unix, const char *body,
                         size_t body_len, char *out, size_t out_cap);

/* The thresholds of conf crossed by spend against limit_micros (spend * 100 >= pct * limit),
 * written to out (at most TG_MAX_THRESHOLDS). Returns how many. None when limit <= 0. */
size_t tg_notify_crossed(const struct tg_budget_conf *conf, int64_t limit_micros,
                         int64_t spend_micros, int out[TG_MAX_THRESHOLDS]);

/* The automatic increase due now: when conf has a rule and spend has reached at_pct of the
 * limit, the new limit is limit + by_micros, never above max_micros. Returns true and sets
 * *new_limit when that is above the current limit. */
bool tg_notify_auto_increase(const struct tg_budget_conf *conf, int64_t limit_micros,
                             int64_t spend_micros, int64_t *new_limit);

/* Month-end spend projected from spend so far: spend / (elapsed share of [start, end)).
 * Returns -1 while less than min_elapsed_ms of the period has passed (too early to say). */
int64_t tg_notify_forecast_micros(int64_t spend_micros, int64_t period_start_ms,
                                  int64_t period_end_ms, int64_t now_ms, int64_t min_elapsed_ms);

/* The plain-text e-mail (headers and body, CRLF line ends) for an event body (the webhook's
 * JSON), from and to the given addresses. Returns 0 or TG_EPARSE. */
int tg_notify_email_render(const char *event_json, const char *from, const char *to,
                           struct tg_buf *out);

#endif
