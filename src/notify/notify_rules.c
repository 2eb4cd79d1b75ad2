/*
 * notify_rules.c: the notifier's pure decisions (notifier.h): back-off, webhook signature,
 * thresholds crossed, automatic increase, month-end forecast, and the e-mail text of an event.
 *
 * No I/O and no clock: every input is an argument, so unit tests pin each rule down. Money is
 * integer micro-dollars throughout; the comparisons are done in integers (spend x 100 against
 * pct x limit) so a threshold is crossed at exactly its share, never a rounding early or late.
 */
#include "notify/notifier.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"

#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 3600000

int64_t
tg_notify_backoff_ms(int attempts)
{
    int64_t d = BACKOFF_FIRST_MS;
    for (int i = 1; i < attempts && d < BACKOFF_MAX_MS; i++) {
        d *= 2;
    }
    return d < BACKOFF_MAX_MS ? d : BACKOFF_MAX_MS;
}

void
tg_notify_signature(const void *secret, size_t secret_len, int64_t t_unix, const char *body,
                    size_t body_len, char *out, size_t out_cap)
{
    /* The timestamp is signed with the body so a captured request cannot be replayed later
     * under a fresh timestamp (the receiver checks that t is recent). */
    char prefix[32];
    int n = snprintf(prefix, sizeof(prefix), "%lld.", (long long)t_unix);
    struct tg_buf msg;
    tg_buf_init(&msg, 0);
    tg_buf_append(&msg, prefix, (size_t)n);
    tg_buf_append(&msg, body, body_len);
    unsigned char mac[TG_SHA256_BYTES];
    tg_hmac_sha256(secret, secret_len, msg.data, msg.len, mac);
    tg_buf_deinit(&msg);
    char hex[2 * TG_SHA256_BYTES + 1];
    tg_hex_encode(hex, mac, sizeof(mac));
    snprintf(out, out_cap, "t=%lld,v1=%s", (long long)t_unix, hex);
}

size_t
tg_notify_crossed(const struct tg_budget_conf *conf, int64_t limit_micros, int64_t spend_micros,
                  int out[TG_MAX_THRESHOLDS])
{
    size_t n = 0;
    if (limit_micros <= 0) {
        return 0;
    }
    for (size_t i = 0; i < conf->n_thresholds && i < TG_MAX_THRESHOLDS; i++) {
        int pct = conf->thresholds_pct[i];
        /* limits.c caps limits at 1e12 and percentages at 1000: no overflow. */
        if (spend_micros * 100 >= (int64_t)pct * limit_micros) {
            out[n++] = pct;
        }
    }
    return n;
}

bool
tg_notify_auto_increase(const struct tg_budget_conf *conf, int64_t limit_micros,
                        int64_t spend_micros, int64_t *new_limit)
{
    if (conf->auto_at_pct <= 0 || conf->auto_by_micros <= 0 || limit_micros <= 0) {
        return false;
    }
    if (spend_micros * 100 < conf->auto_at_pct * limit_micros) {
        return false;
    }
    /* Up to the ceiling: the last step may be smaller than by_micros, so the limit can reach
     * max_micros exactly (as "raise by Y up to Z" reads). */
    int64_t next = limit_micros + conf->auto_by_micros;
    if (next > conf->auto_max_micros) {
        next = conf->auto_max_micros;
    }
    if (next <= limit_micros) {
        return false;
    }
    *new_limit = next;
    return true;
}

int64_t
tg_notify_forecast_micros(int64_t spend_micros, int64_t period_start_ms, int64_t period_end_ms,
                          int64_t now_ms, int64_t min_elapsed_ms)
{
    int64_t elapsed = now_ms - period_start_ms;
    int64_t len = period_end_ms - period_start_ms;
    if (len <= 0 || elapsed < min_elapsed_ms || elapsed <= 0) {
        return -1;
    }
    if (elapsed >= len) {
        return spend_micros;
    }
    /* spend x len / elapsed in 128 bits: spend (1e12) x a month in ms (2.7e9) overflows 64. */
    __int128 f = (__int128)spend_micros * len / elapsed;
    return f > INT64_MAX ? INT64_MAX : (int64_t)f;
}

/* ---- e-mail ---------------------------------------------------------------------------- */

/* Appends s with CR, LF and other control characters made spaces: a project name written into
 * a header must not start a header of its own. */
static void
append_line_safe(struct tg_buf *out, const char *s)
{
    for (const char *p = s != NULL ? s : ""; *p != '\0'; p++) {
        char c = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
        tg_buf_append(out, &c, 1);
    }
}

/* "$1.50", "$0.0005", "$1.234567": at least two decimals, and every micro-dollar that is
 * not zero, so a small test budget does not read as "$0.00". */
static void
append_usd(struct tg_buf *out, int64_t micros)
{
    const char *sign = micros < 0 ? "-" : "";
    uint64_t m = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    char frac[8];
    snprintf(frac, sizeof(frac), "%06llu", (unsigned long long)(m % 1000000));
    size_t n = 6;
    while (n > 2 && frac[n - 1] == '0') {
        n--;
    }
    tg_buf_appendf(out, "%s$%llu.%.*s", sign, (unsigned long long)(m / 1000000), (int)n, frac);
}

static void
append_date(struct tg_buf *out, int64_t unix_s)
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    char s[32];
    gmtime_r(&t, &tm);
    strftime(s, sizeof(s), "%Y-%m-%d %H:%M UTC", &tm);
    tg_buf_append_str(out, s);
}

static void
append_rfc5322_date(struct tg_buf *out, int64_t unix_s)
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    char s[64];
    gmtime_r(&t, &tm);
    strftime(s, sizeof(s), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    tg_buf_append_str(out, s);
}

/* "project production", "organization Default", "key key_abc". */
static void
append_level(struct tg_buf *out, const json_t *data)
{
    const char *scope = tg_json_str(data, "scope");
    const char *name = tg_json_str(data, "name");
    const char *id = tg_json_str(data, "id");
    append_line_safe(out, scope != NULL ? scope : "level");
    tg_buf_append_str(out, " ");
    append_line_safe(out, name != NULL ? name : id);
}

static bool
is_alert(const char *type)
{
    return strcmp(type, "alert.fired") == 0 || strcmp(type, "alert.resolved") == 0;
}

/* An alert rule's event (monitor/alerts.h): the rule, its metric, value and threshold. */
static void
append_alert(struct tg_buf *out, const char *type, const json_t *data, bool is_subject)
{
    const char *name = tg_json_str(data, "name");
    const char *metric = tg_json_str(data, "metric");
    const char *cond = tg_json_str(data, "condition");
    bool fired = strcmp(type, "alert.fired") == 0;
    if (is_subject) {
        tg_buf_append_str(out, "[tollgate] alert ");
        append_line_safe(out, name != NULL ? name : "?");
        tg_buf_append_str(out, fired ? " fired" : " resolved");
        return;
    }
    tg_buf_append_str(out, "Alert rule ");
    append_line_safe(out, name != NULL ? name : "?");
    tg_buf_append_str(out, fired ? " fired" : " resolved");
    tg_buf_append_str(out, ".\r\n\r\nMetric:    ");
    append_line_safe(out, metric != NULL ? metric : "?");
    tg_buf_append_str(out, "\r\nCondition: ");
    append_line_safe(out, cond != NULL ? cond : "?");
    tg_buf_appendf(out, " %g\r\nValue:     %g\r\nWindow:    %lld s\r\n",
                   json_number_value(json_object_get(data, "threshold")),
                   json_number_value(json_object_get(data, "value")),
                   (long long)tg_json_int(data, "window_seconds", 0));
}

static void
append_subject(struct tg_buf *out, const char *type, const json_t *data)
{
    if (is_alert(type)) {
        append_alert(out, type, data, true);
        return;
    }
    tg_buf_append_str(out, "[tollgate] ");
    append_level(out, data);
    if (strcmp(type, "budget.threshold") == 0) {
        tg_buf_appendf(out, " reached %lld%% of its monthly budget",
                       (long long)tg_json_int(data, "threshold_pct", 0));
    } else if (strcmp(type, "budget.increased") == 0) {
        tg_buf_append_str(out, ": monthly budget raised to ");
        append_usd(out, tg_json_int(data, "limit_micros", 0));
    } else if (strcmp(type, "budget.forecast_exceeded") == 0) {
        tg_buf_append_str(out, ": month-end forecast exceeds the budget");
    } else {
        tg_buf_append_str(out, ": ");
        append_line_safe(out, type);
    }
}

static void
append_body(struct tg_buf *out, const char *type, const json_t *data)
{
    if (is_alert(type)) {
        append_alert(out, type, data, false);
        return;
    }
    int64_t limit = tg_json_int(data, "limit_micros", 0);
    int64_t spend = tg_json_int(data, "spend_micros", 0);
    if (strcmp(type, "budget.threshold") == 0) {
        tg_buf_append_str(out, "Spend of ");
        append_level(out, data);
        tg_buf_appendf(out, " has reached %lld%% of its monthly budget.\r\n\r\n",
                       (long long)tg_json_int(data, "threshold_pct", 0));
    } else if (strcmp(type, "budget.increased") == 0) {
        tg_buf_append_str(out, "The monthly budget of ");
        append_level(out, data);
        tg_buf_append_str(out, " was raised automatically from ");
        append_usd(out, tg_json_int(data, "previous_limit_micros", 0));
        tg_buf_append_str(out, " to ");
        append_usd(out, limit);
        tg_buf_append_str(out, " (ceiling ");
        append_usd(out, tg_json_int(data, "max_micros", 0));
        tg_buf_append_str(out, ").\r\n\r\n");
    } else if (strcmp(type, "budget.forecast_exceeded") == 0) {
        tg_buf_append_str(out, "At the current rate, spend of ");
        append_level(out, data);
        tg_buf_append_str(out, " will reach ");
        append_usd(out, tg_json_int(data, "forecast_micros", 0));
        tg_buf_append_str(out, " by the end of the month, above its budget.\r\n\r\n");
    }
    tg_buf_append_str(out, "Spend this month: ");
    append_usd(out, spend);
    tg_buf_append_str(out, "\r\nMonthly budget:   ");
    append_usd(out, limit);
    tg_buf_append_str(out, "\r\nPeriod:           ");
    append_date(out, tg_json_int(data, "period_start", 0));
    tg_buf_append_str(out, " to ");
    append_date(out, tg_json_int(data, "period_end", 0));
    tg_buf_append_str(out, "\r\n");
}

int
tg_notify_email_render(const char *event_json, const char *from, const char *to, struct tg_buf *out)
{
    json_t *ev = json_loads(event_json, 0, NULL);
    const char *type = tg_json_str(ev, "type");
    const char *id = tg_json_str(ev, "id");
    json_t *data = json_object_get(ev, "data");
    if (type == NULL || id == NULL || !json_is_object(data)) {
        json_decref(ev);
        return TG_EPARSE;
    }
    tg_buf_append_str(out, "Date: ");
    append_rfc5322_date(out, tg_json_int(ev, "created_at", 0));
    tg_buf_append_str(out, "\r\nFrom: ");
    append_line_safe(out, from);
    tg_buf_append_str(out, "\r\nTo: ");
    append_line_safe(out, to);
    tg_buf_append_str(out, "\r\nMessage-ID: <");
    append_line_safe(out, id);
    tg_buf_append_str(out, ".");
    append_line_safe(out, to);
    tg_buf_append_str(out, ">\r\nSubject: ");
    append_subject(out, type, data);
    tg_buf_append_str(out, "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8"
                           "\r\nContent-Transfer-Encoding: 8bit\r\nX-Tollgate-Event: ");
    append_line_safe(out, type);
    tg_buf_append_str(out, "\r\nX-Tollgate-Event-Id: ");
    append_line_safe(out, id);
    tg_buf_append_str(out, "\r\n\r\n");
    append_body(out, type, data);
    tg_buf_append_str(out, "\r\nEvent ");
    append_line_safe(out, id);
    tg_buf_append_str(out, " (");
    append_line_safe(out, type);
    tg_buf_append_str(out, ").\r\n");
    json_decref(ev);
    return 0;
}
