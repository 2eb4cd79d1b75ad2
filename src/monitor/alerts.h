/*
 * alerts.h: alert rules over the monitor's windows (monitor.h) and the gateway's state, and
 * their fired and resolved events.
 *
 * A rule (store.h tg_alert_rule_rec) names a metric over a scope (a project or all, a model or
 * all), a condition and a threshold:
 *   above / below   the window's value is above / below the threshold;
 *   change          |window - baseline| > threshold, the baseline being the same metric over
 *                   the TG_ALERT_BASELINE_WINDOWS windows before.
 * Rates and percentiles need min_requests requests in the window (feedback_mean needs that
 * many feedback scores; the baseline of a change rule needs as many too); below that the
 * window has no value.
 *
 * Hysteresis: a rule fires once when its condition starts to hold and resolves once when it
 * stops. A window without a value resolves a firing rule, unless the window reaches back
 * before the monitor started (after a restart the windows are empty, which proves nothing).
 * The firing is persisted as an open alert event, so a restart neither forgets nor repeats it.
 *
 * Events go into the notification outbox under the keys "alert:<rule_id>:<fired_at_ms>:fired"
 * and "alert:<rule_id>:<fired_at_ms>:resolved", one row per channel (the rule's webhooks and,
 * when SMTP is configured, e-mails), and are delivered by the notifier like budget events.
 */
#ifndef TG_MONITOR_ALERTS_H
#define TG_MONITOR_ALERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "monitor/monitor.h"
#include "policy/admission.h"
#include "store/store.h"

#define TG_ALERT_BASELINE_WINDOWS 6

enum tg_alert_metric {
    TG_METRIC_ERROR_RATE,
    TG_METRIC_P95_LATENCY,
    TG_METRIC_P95_TTFT,
    TG_METRIC_SPEND_FORECAST,
    TG_METRIC_BREAKER_OPEN,
    TG_METRIC_LEDGER_BACKLOG,
    TG_METRIC_FINISH_LENGTH_RATE,
    TG_METRIC_EMPTY_RATE,
    TG_METRIC_REFUSAL_RATE,
    TG_METRIC_FEEDBACK_MEAN,
    TG_METRIC_COUNT,
};

enum tg_alert_condition { TG_COND_ABOVE, TG_COND_BELOW, TG_COND_CHANGE };

/* Names as the API spells them; parse returns false for anything else. */
const char *tg_alert_metric_name(enum tg_alert_metric m);
bool tg_alert_metric_parse(const char *s, enum tg_alert_metric *out);
bool tg_alert_condition_parse(const char *s, enum tg_alert_condition *out);

/* True for the metrics computed from the windows (the others read the gateway's state). */
bool tg_alert_metric_is_windowed(enum tg_alert_metric m);

/* A metric's value over stats: has_value is false when there are fewer than min_requests
 * requests (or feedback scores) to judge by. */
double tg_alert_metric_value(enum tg_alert_metric m, const struct tg_monitor_stats *st,
                             int64_t min_requests, bool *has_value);

/* One evaluation of a rule. */
struct tg_alert_input {
    enum tg_alert_condition condition;
    double threshold;
    double value;
    bool has_value;
    double baseline; /* change rules */
    bool has_baseline;
    bool is_window_complete; /* the window lies after the monitor's start */
};

enum tg_alert_step { TG_ALERT_HOLD, TG_ALERT_FIRE, TG_ALERT_RESOLVE };

/* What a rule does now, given whether it fires already. */
enum tg_alert_step tg_alert_decide(const struct tg_alert_input *in, bool is_firing);

/* What a tick needs besides the store and the monitor. */
struct tg_alerts_env {
    struct tg_store *store;
    struct tg_monitor *monitor;
    struct tg_admission *admission; /* spend_forecast; NULL = no value */
    int tz_offset_minutes;
    int64_t forecast_min_elapsed_ms;
    int64_t ledger_backlog; /* rows waiting for the store; -1 = unknown */
    bool has_smtp;          /* e-mail channels are queued only when SMTP is configured */
};

/* Evaluates every rule of the current state's organization at now_ms and records fired and
 * resolved events (alert event and outbox rows in one transaction each). On the notifier's
 * thread. Returns 0 or the first store error. */
int tg_alerts_tick(const struct tg_alerts_env *env, int64_t now_ms);

#endif
