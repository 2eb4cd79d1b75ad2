/*
 * notifier_test.c: the notifier's ticks (notify/notifier.h) against a real SQLite store, a
 * published state snapshot, an admission object whose spend the test sets, a real HTTP
 * receiver on a loopback port (a thread here) and an SMTP port that refuses connections.
 *
 * It proves: nothing is queued below the first threshold; each threshold is queued once per
 * channel (webhook, each owner and each notify_emails address), however often it is decided
 * and across a new notifier on the same store (a restart); a webhook answered 500 is retried
 * after its back-off and delivered once, signed with HMAC-SHA256 over "<t>.<body>"; a failing
 * e-mail is rescheduled with its error; an automatic increase raises the project's limit once,
 * with a config version and an audit entry by "system", reloads the snapshot and queues
 * "budget.increased"; the forecast event comes once the month's trend exceeds the budget.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/crypto.h"
#include "gateway/config.h"
#include "gateway/state.h"
#include "notify/notifier.h"
#include "store/store.h"

#include "../fixture/state_fixture.h"
#include "../fixture/store_fixture.h"

#define DAY_MS 86400000LL
#define JAN_1_2026_MS 1767225600000LL

/* ---- a scripted HTTP receiver ------------------------------------------------------------ */

#define MAX_HITS 8

struct receiver {
    int fd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock;
    int statuses[MAX_HITS]; /* answer to the i-th request; 200 after the list */
    size_t n_statuses;
    size_t n_hits;
    char signature[MAX_HITS][160];
    char body[MAX_HITS][2048];
};

static void
handle(struct receiver *r, int c)
{
    char req[8192];
    size_t len = 0;
    char *end = NULL;
    /* Read the headers, then the body by Content-Length (bounded). */
    while (len < sizeof(req) - 1) {
        ssize_t n = read(c, req + len, sizeof(req) - 1 - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
        req[len] = '\0';
        end = strstr(req, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strcasestr(req, "content-length:");
            size_t want = cl != NULL ? (size_t)strtoul(cl + 15, NULL, 10) : 0;
            if (len >= (size_t)(end + 4 - req) + want) {
                break;
            }
        }
    }
    pthread_mutex_lock(&r->lock);
    size_t i = r->n_hits;
    int status = i < r->n_statuses ? r->statuses[i] : 200;
    if (i < MAX_HITS && end != NULL) {
        const char *sig = strcasestr(req, "x-tollgate-signature: ");
        if (sig != NULL) {
            sig += strlen("x-tollgate-signature: ");
            snprintf(r->signature[i], sizeof(r->signature[i]), "%.*s", (int)strcspn(sig, "\r"),
                     sig);
        }
        snprintf(r->body[i], sizeof(r->body[i]), "%s", end + 4);
        r->n_hits++;
    }
    pthread_mutex_unlock(&r->lock);
    char reply[128];
    int n = snprintf(reply, sizeof(reply),
                     "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", status);
    ssize_t w = write(c, reply, (size_t)n);
    (void)w;
    close(c);
}

static void *
receiver_run(void *arg)
{
    struct receiver *r = arg;
    while (!atomic_load(&r->stop)) {
        struct pollfd p = {r->fd, POLLIN, 0};
        if (poll(&p, 1, 20) == 1) {
            int c = accept(r->fd, NULL, NULL);
            if (c >= 0) {
                handle(r, c);
            }
        }
    }
    return NULL;
}

static int
listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A loopback port nothing listens on (bound, then closed). */
static int
closed_port(void)
{
    int port = 0;
    int fd = listen_loopback(&port);
    close(fd);
    return port;
}

/* ---- fixture ------------------------------------------------------------------------------- */

struct fake_admission {
    struct tg_admission base;
    int64_t project_spend;
};

static int64_t
fake_spend(struct tg_admission *a, enum tg_scope scope, const char *id, int64_t now_ms)
{
    struct fake_admission *f = (struct fake_admission *)a;
    return scope == TG_SCOPE_PROJECT && strcmp(id, "proj_a") == 0 ? f->project_spend : 0;
}

static const struct tg_admission_ops fake_ops = {.name = "fake", .spend = fake_spend};

struct fx {
    struct store_fx db;
    struct state_fx state;
    struct fake_admission adm;
    struct tg_smtp_conf smtp;
    struct receiver rx;
    struct tg_notifier *n;
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_int_equal(store_fx_mkdir(&f->db, "notifier-test"), 0);
    assert_int_equal(store_fx_open(&f->db), 0);

    /* The receiver. */
    pthread_mutex_init(&f->rx.lock, NULL);
    f->rx.fd = listen_loopback(&f->rx.port);
    assert_int_equal(pthread_create(&f->rx.thread, NULL, receiver_run, &f->rx), 0);

    char settings[1024];
    snprintf(settings, sizeof(settings),
             "{\"budget\":{\"monthly_limit_micros\":1000000,"
             "\"webhook_url\":\"http://127.0.0.1:%d/hook\","
             "\"webhook_secret\":\"env:TG_TEST_WEBHOOK_SECRET\","
             "\"notify_emails\":[\"ops@example.com\",\"Owner@Example.com\"],"
             "\"auto_increase\":{\"at_pct\":100,\"by_micros\":500000,\"max_micros\":1500000}}}",
             f->rx.port);
    const struct tg_project_rec projects[2] = {
        {"proj_a", "org-1", "production", "production", 1001, 0, settings},
        {"proj_b", "org-1", "staging", "staging", 1002, 0, NULL},
    };
    store_fx_bootstrap(f->db.s, projects, 2);
    const struct tg_doc owner = {"user",
                                 "user-1",
                                 "org-1",
                                 NULL,
                                 "{\"name\":\"O\",\"email\":\"owner@example.com\","
                                 "\"role\":\"owner\"}",
                                 1,
                                 1};
    const struct tg_doc reader = {"user",
                                  "user-2",
                                  "org-1",
                                  NULL,
                                  "{\"name\":\"R\",\"email\":\"reader@example.com\","
                                  "\"role\":\"reader\"}",
                                  2,
                                  2};
    assert_int_equal(f->db.s->ops->doc_put(f->db.s, &owner), 0);
    assert_int_equal(f->db.s->ops->doc_put(f->db.s, &reader), 0);

    state_fx_init(&f->state, f->db.s);

    setenv("TG_TEST_WEBHOOK_SECRET", "whsec_unit", 1);
    f->adm.base.ops = &fake_ops;
    f->smtp = (struct tg_smtp_conf){.host = "127.0.0.1",
                                    .port = closed_port(),
                                    .from = "tollgate@example.com",
                                    .timeout_ms = 2000};
    *state = f;
    return 0;
}

static void
start(struct fx *f)
{
    /* The thread waits an hour between ticks: the test ticks by hand, at times it chooses. */
    struct tg_notifier_opts o = {
        .store = f->db.s,
        .admission = &f->adm.base,
        .smtp = &f->smtp,
        .interval_ms = 3600000,
        .webhook_timeout_ms = 2000,
    };
    assert_int_equal(tg_notifier_start(&o, &f->n), 0);
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    tg_notifier_stop(f->n);
    atomic_store(&f->rx.stop, true);
    pthread_join(f->rx.thread, NULL);
    close(f->rx.fd);
    pthread_mutex_destroy(&f->rx.lock);
    state_fx_deinit(&f->state);
    store_fx_deinit(&f->db);
    free(f);
    return 0;
}

static size_t
hits(struct fx *f)
{
    pthread_mutex_lock(&f->rx.lock);
    size_t n = f->rx.n_hits;
    pthread_mutex_unlock(&f->rx.lock);
    return n;
}

/* The receiver's i-th request carries a valid signature over its body. */
static void
assert_signed(struct fx *f, size_t i)
{
    const char *sig = f->rx.signature[i];
    assert_true(strncmp(sig, "t=", 2) == 0);
    long long t = strtoll(sig + 2, NULL, 10);
    char want[160];
    tg_notify_signature("whsec_unit", 10, t, f->rx.body[i], strlen(f->rx.body[i]), want,
                        sizeof(want));
    assert_string_equal(sig, want);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void
thresholds_are_queued_once_per_channel_and_delivered_with_retry(void **state)
{
    struct fx *f = *state;
    start(f);
    f->rx.statuses[0] = 500;
    f->rx.n_statuses = 1;
    int64_t now = JAN_1_2026_MS + 12 * 3600 * 1000;

    f->adm.project_spend = 499999;
    assert_int_equal(tg_notifier_tick(f->n, now), 0);
    assert_int_equal(store_fx_scalar(&f->db, "SELECT count(*) FROM outbox"), 0);

    f->adm.project_spend = 500000;
    assert_int_equal(tg_notifier_tick(f->n, now), 0);
    /* One webhook; e-mail to the owner (once, whatever the case) and to ops, not the reader. */
    assert_int_equal(store_fx_scalar(&f->db, "SELECT count(*) FROM outbox"), 3);
    assert_int_equal(store_fx_scalar(&f->db, "SELECT count(*) FROM outbox WHERE event_key = "
                                             "'budget:project:proj_a:1767225600000:50'"),
                     3);
    assert_int_equal(store_fx_scalar(&f->db,
                                     "SELECT count(*) FROM outbox WHERE channel = 'email' AND "
                                     "target IN ('owner@example.com', 'ops@example.com')"),
                     2);
    /* The webhook was tried once and answered 500: due again in 1 s. */
    assert_int_equal(hits(f), 1);
    assert_signed(f, 0);
    assert_non_null(strstr(f->rx.body[0], "\"type\":\"budget.threshold\""));
    assert_non_null(strstr(f->rx.body[0], "\"threshold_pct\":50"));
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT attempts FROM outbox WHERE channel = 'webhook'"), 1);
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT next_attempt_ms FROM outbox WHERE channel = 'webhook'"),
        now + 1000);
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT count(*) FROM outbox WHERE channel = 'email' AND "
                                "attempts = 1 AND last_error IS NOT NULL AND delivered_ms = 0"),
        2);

    /* Deciding again queues nothing, and nothing is due yet. */
    assert_int_equal(tg_notifier_tick(f->n, now + 999), 0);
    assert_int_equal(store_fx_scalar(&f->db, "SELECT count(*) FROM outbox"), 3);
    assert_int_equal(hits(f), 1);

    /* After the back-off: delivered (200), once, the same event. */
    assert_int_equal(tg_notifier_tick(f->n, now + 1000), 0);
    assert_int_equal(hits(f), 2);
    assert_signed(f, 1);
    assert_string_equal(f->rx.body[0], f->rx.body[1]);
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT delivered_ms FROM outbox WHERE channel = 'webhook'"),
        now + 1000);
    assert_int_equal(tg_notifier_tick(f->n, now + 100000), 0);
    assert_int_equal(hits(f), 2);

    /* A restart: a fresh notifier on the same store queues no duplicate. */
    tg_notifier_stop(f->n);
    start(f);
    assert_int_equal(tg_notifier_tick(f->n, now + 100001), 0);
    assert_int_equal(store_fx_scalar(&f->db, "SELECT count(*) FROM outbox"), 3);
    assert_int_equal(hits(f), 2);

    /* 80%: one more event on each channel. */
    f->adm.project_spend = 800000;
    assert_int_equal(tg_notifier_tick(f->n, now + 200000), 0);
    assert_int_equal(store_fx_scalar(&f->db, "SELECT count(*) FROM outbox"), 6);
    assert_int_equal(hits(f), 3);
    assert_non_null(strstr(f->rx.body[2], "\"threshold_pct\":80"));

    /* Next month: the same threshold is a new event. */
    int64_t feb = JAN_1_2026_MS + 31 * DAY_MS + 3600 * 1000;
    f->adm.project_spend = 500000;
    assert_int_equal(tg_notifier_tick(f->n, feb), 0);
    assert_int_equal(store_fx_scalar(&f->db, "SELECT count(*) FROM outbox WHERE event_key = "
                                             "'budget:project:proj_a:1769904000000:50'"),
                     3);
}

static void
automatic_increase_applies_once_with_version_and_audit(void **state)
{
    struct fx *f = *state;
    start(f);
    int64_t now = JAN_1_2026_MS + 12 * 3600 * 1000;
    f->adm.project_spend = 1000000; /* 100%: thresholds 50, 80, 100 and the increase */
    assert_int_equal(tg_notifier_tick(f->n, now), 0);

    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT json_extract(settings, '$.budget.monthly_limit_micros') "
                                "FROM projects WHERE id = 'proj_a'"),
        1500000);
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT count(*) FROM versions WHERE project_id = 'proj_a' AND "
                                "actor_id = 'system' AND reason = 'budget.updated'"),
        1);
    assert_int_equal(store_fx_scalar(&f->db,
                                     "SELECT count(*) FROM audit WHERE type = 'budget.updated' AND "
                                     "actor_type = 'system' AND target_id = 'proj_a' AND "
                                     "json_extract(before, '$.monthly_limit_micros') = 1000000 AND "
                                     "json_extract(after, '$.monthly_limit_micros') = 1500000"),
                     1);
    /* The snapshot was reloaded with the new limit. */
    struct tg_state *st = tg_state_acquire();
    assert_int_equal(tg_state_project(st, "proj_a")->limits.budget.monthly_limit_micros, 1500000);
    tg_state_unref(st);
    assert_int_equal(store_fx_scalar(&f->db,
                                     "SELECT count(*) FROM outbox WHERE event_key LIKE "
                                     "'budget-increase:project:proj_a:1767225600000:1500000' AND "
                                     "payload LIKE '%\"previous_limit_micros\":1000000%'"),
                     3);
    /* The 50/80/100 events were decided against the old limit: 3 events x 3 channels. */
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT count(*) FROM outbox WHERE event_key LIKE 'budget:%'"), 9);

    /* Spend is now 66% of the new limit: no second increase, even at the ceiling's edge. */
    assert_int_equal(tg_notifier_tick(f->n, now + 1000), 0);
    f->adm.project_spend = 1500000;
    assert_int_equal(tg_notifier_tick(f->n, now + 2000), 0);
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT json_extract(settings, '$.budget.monthly_limit_micros') "
                                "FROM projects WHERE id = 'proj_a'"),
        1500000);
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT count(*) FROM audit WHERE type = 'budget.updated'"), 1);
}

static void
forecast_over_budget_is_queued_once(void **state)
{
    struct fx *f = *state;
    start(f);
    /* 20 of 31 days gone, 0.7 spent: 0.7 x 31 / 20 = 1.085 > 1.0. */
    int64_t now = JAN_1_2026_MS + 20 * DAY_MS;
    f->adm.project_spend = 700000;
    assert_int_equal(tg_notifier_tick(f->n, now), 0);
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT count(*) FROM outbox WHERE event_key = "
                                "'budget-forecast:project:proj_a:1767225600000' AND payload LIKE "
                                "'%\"forecast_micros\":1085000%'"),
        3);
    assert_int_equal(tg_notifier_tick(f->n, now + DAY_MS), 0);
    assert_int_equal(
        store_fx_scalar(&f->db,
                        "SELECT count(*) FROM outbox WHERE event_key LIKE 'budget-forecast:%'"),
        3);
    /* On track (0.5 after 20 days projects 0.775): nothing for another project's trend. */
    assert_int_equal(
        store_fx_scalar(&f->db, "SELECT count(*) FROM outbox WHERE event_key LIKE '%proj_b%'"), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            thresholds_are_queued_once_per_channel_and_delivered_with_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(automatic_increase_applies_once_with_version_and_audit,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(forecast_over_budget_is_queued_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
