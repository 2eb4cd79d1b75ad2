/*
 * outbox_test.c: the notification outbox of the SQLite store (store.h outbox_*): one row per
 * (event, channel, target) even when put twice or after a reopen, due rows in order and within
 * the limit, failed attempts counted and re-scheduled, delivered rows never due again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "store/store.h"

#include "../fixture/store_fixture.h"

static int
setup(void **state)
{
    *state = store_fx_new("outbox-test");
    return *state != NULL ? 0 : -1;
}

static struct tg_outbox_rec
rec(const char *key, const char *channel, const char *target, int64_t due_ms)
{
    struct tg_outbox_rec r = {
        .org_id = "org-1",
        .event_key = key,
        .channel = channel,
        .target = target,
        .payload = "{\"type\":\"budget.threshold\"}",
        .created_ms = 1000,
        .next_attempt_ms = due_ms,
    };
    return r;
}

#define MAX_ROWS 8

struct due_list {
    size_t n;
    int64_t id[MAX_ROWS];
    char key[MAX_ROWS][96];
    char channel[MAX_ROWS][16];
    int attempts[MAX_ROWS];
    int64_t next_ms[MAX_ROWS];
    char error[MAX_ROWS][64];
    char payload[MAX_ROWS][64];
};

static int
collect(const struct tg_outbox_rec *r, void *arg)
{
    struct due_list *l = arg;
    assert_true(l->n < MAX_ROWS);
    l->id[l->n] = r->id;
    snprintf(l->key[l->n], sizeof(l->key[0]), "%s", r->event_key);
    snprintf(l->channel[l->n], sizeof(l->channel[0]), "%s", r->channel);
    l->attempts[l->n] = r->attempts;
    l->next_ms[l->n] = r->next_attempt_ms;
    snprintf(l->error[l->n], sizeof(l->error[0]), "%s", r->last_error ? r->last_error : "");
    snprintf(l->payload[l->n], sizeof(l->payload[0]), "%s", r->payload);
    l->n++;
    return 0;
}

static void
due(struct store_fx *f, int64_t now_ms, size_t limit, struct due_list *l)
{
    memset(l, 0, sizeof(*l));
    assert_int_equal(f->s->ops->outbox_due(f->s, now_ms, limit, collect, l), 0);
}

static void
put_ignores_duplicates(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    bool inserted = false;
    struct tg_outbox_rec a = rec("budget:project:p:0:50", "webhook", "http://h/x", 1000);
    assert_int_equal(o->outbox_put(f->s, &a, &inserted), 0);
    assert_true(inserted);
    /* The same event for the same channel and target: kept once, whatever the payload. */
    struct tg_outbox_rec again = a;
    again.payload = "{\"other\":1}";
    assert_int_equal(o->outbox_put(f->s, &again, &inserted), 0);
    assert_false(inserted);
    /* Another channel, or another target, is another delivery. */
    struct tg_outbox_rec mail = rec("budget:project:p:0:50", "email", "a@example.com", 1000);
    assert_int_equal(o->outbox_put(f->s, &mail, &inserted), 0);
    assert_true(inserted);
    struct tg_outbox_rec mail2 = rec("budget:project:p:0:50", "email", "b@example.com", 1000);
    assert_int_equal(o->outbox_put(f->s, &mail2, NULL), 0);

    struct due_list l;
    due(f, 1000, 0, &l);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.payload[0], "{\"type\":\"budget.threshold\"}");
    assert_int_equal(l.attempts[0], 0);
    assert_string_equal(l.error[0], "");

    /* Across a reopen the row is still there, and still refuses its duplicate. */
    o->close(f->s);
    char err[256] = "";
    assert_int_equal(tg_store_sqlite_open(f->path, &f->s, err, sizeof(err)), 0);
    assert_int_equal(f->s->ops->outbox_put(f->s, &a, &inserted), 0);
    assert_false(inserted);
    due(f, 1000, 0, &l);
    assert_int_equal(l.n, 3);
}

static void
due_respects_time_order_and_limit(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    struct tg_outbox_rec r1 = rec("k1", "webhook", "t", 3000);
    struct tg_outbox_rec r2 = rec("k2", "webhook", "t", 1000);
    struct tg_outbox_rec r3 = rec("k3", "webhook", "t", 2000);
    assert_int_equal(o->outbox_put(f->s, &r1, NULL), 0);
    assert_int_equal(o->outbox_put(f->s, &r2, NULL), 0);
    assert_int_equal(o->outbox_put(f->s, &r3, NULL), 0);

    struct due_list l;
    due(f, 999, 0, &l);
    assert_int_equal(l.n, 0);
    due(f, 2000, 0, &l);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.key[0], "k2");
    assert_string_equal(l.key[1], "k3");
    due(f, 5000, 2, &l);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.key[0], "k2");
    due(f, 5000, 0, &l);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.key[2], "k1");
}

static void
mark_failure_reschedules_and_delivery_ends(void **state)
{
    struct store_fx *f = *state;
    const struct tg_store_ops *o = f->s->ops;
    struct tg_outbox_rec r = rec("k1", "webhook", "t", 1000);
    assert_int_equal(o->outbox_put(f->s, &r, NULL), 0);
    struct due_list l;
    due(f, 1000, 0, &l);
    assert_int_equal(l.n, 1);
    int64_t id = l.id[0];

    assert_int_equal(o->outbox_mark(f->s, id, 0, "HTTP 500", 2000), 0);
    due(f, 1999, 0, &l);
    assert_int_equal(l.n, 0);
    due(f, 2000, 0, &l);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.attempts[0], 1);
    assert_int_equal(l.next_ms[0], 2000);
    assert_string_equal(l.error[0], "HTTP 500");

    assert_int_equal(o->outbox_mark(f->s, id, 0, "timeout", 4000), 0);
    due(f, 4000, 0, &l);
    assert_int_equal(l.attempts[0], 2);
    assert_string_equal(l.error[0], "timeout");

    assert_int_equal(o->outbox_mark(f->s, id, 4100, NULL, 0), 0);
    due(f, INT64_MAX, 0, &l);
    assert_int_equal(l.n, 0);
    /* Delivered for good: the same event is not queued again. */
    bool inserted = true;
    assert_int_equal(o->outbox_put(f->s, &r, &inserted), 0);
    assert_false(inserted);

    assert_int_equal(o->outbox_mark(f->s, id + 100, 0, "x", 1), TG_ENOTFOUND);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(put_ignores_duplicates, setup, store_fx_teardown),
        cmocka_unit_test_setup_teardown(due_respects_time_order_and_limit, setup,
                                        store_fx_teardown),
        cmocka_unit_test_setup_teardown(mark_failure_reschedules_and_delivery_ends, setup,
                                        store_fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
