/*
 * notify_int.h: what the notifier's files share (notifier.c decides and schedules,
 * notify_send.c speaks HTTP and SMTP through libcurl).
 */
#ifndef TG_NOTIFY_NOTIFY_INT_H
#define TG_NOTIFY_NOTIFY_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "notify/notifier.h"

/* Event keys already in the outbox this period: a tick re-decides every crossed threshold, and
 * this set spares the store a write for each one every second. The store's unique index is
 * what makes delivery once-only; this is only a cache of it. */
struct notify_seen {
    char **slots; /* open addressing; NULL = empty */
    size_t cap;   /* power of two */
    size_t n;
    int64_t period_start_ms; /* the period the keys belong to */
};

struct tg_notifier {
    struct tg_notifier_opts o;
    pthread_t thread;
    bool has_thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool is_woken;
    atomic_bool is_stopping; /* read by curl's progress callback to cut a transfer short */
    struct notify_seen seen;
    bool has_warned_no_admission;
};

/* POSTs body to url with the signature header when secret is set (secret_len bytes). Returns
 * 0 when the receiver answered 2xx, else a negative code with a short reason in err (no
 * secret in it). */
int notify_send_webhook(struct tg_notifier *n, const char *url, const char *secret,
                        size_t secret_len, const char *body, int64_t now_ms, char *err,
                        size_t err_cap);

/* Mails the event (its webhook JSON) to one address over SMTP. Returns 0 or a negative code
 * with a short reason in err. */
int notify_send_email(struct tg_notifier *n, const char *to, const char *event_json, char *err,
                      size_t err_cap);

#endif
