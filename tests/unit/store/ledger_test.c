/*
 * ledger_test.c: the ledger's write queue (store/ledger.h) on a real SQLite store, seen
 * through a thin wrapper that counts appends, records batch sizes and can fail the first N.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "store/ledger.h"
#include "store/store.h"

#include "../fixture/store_fixture.h"

/* A store whose ledger_append goes to the real one unless told to fail. Only ledger_append is
 * ever called through it (the ledger uses nothing else). */
struct fake {
    struct tg_store base;
    struct tg_store_ops ops;
    struct tg_store *real;
    atomic_int fail_left; /* fail this many appends, then pass; < 0: fail for ever */
    atomic_int calls;
    atomic_int failures;
    atomic_size_t max_batch;
};

struct fx {
    struct store_fx db; /* db.s is the real store, fake.real */
    struct fake fake;
};

static int
fake_append(struct tg_store *s, const struct tg_ledger_row *rows, size_t n)
{
    struct fake *f = (struct fake *)s;
    atomic_fetch_add(&f->calls, 1);
    size_t m = atomic_load(&f->max_batch);
    while (n > m && !atomic_compare_exchange_weak(&f->max_batch, &m, n)) {
    }
    int left = atomic_load(&f->fail_left);
    if (left < 0 || (left > 0 && atomic_fetch_sub(&f->fail_left, 1) > 0)) {
        atomic_fetch_add(&f->failures, 1);
        return TG_ESTORE;
    }
    return f->real->ops->ledger_append(f->real, rows, n);
}

static int
setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));
    if (store_fx_init(&x->db, "ledger-test") < 0) {
        free(x);
        return -1;
    }
    x->fake.real = x->db.s;
    x->fake.ops = *x->fake.real->ops;
    x->fake.ops.ledger_append = fake_append;
    x->fake.base.ops = &x->fake.ops;
    *state = x;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *x = *state;
    store_fx_deinit(&x->db);
    free(x);
    return 0;
}

static int64_t
n_rows(const struct fx *x)
{
    return store_fx_scalar(&x->db, "SELECT count(*) FROM ledger");
}

/* Polls until the ledger holds want rows; fails the test after 5 s. */
static void
await_rows(const struct fx *x, int64_t want)
{
    uint64_t end = tg_clock_mono_ms() + 5000;
    while (n_rows(x) != want) {
        assert_true(tg_clock_mono_ms() < end);
        usleep(1000);
    }
}

static struct tg_ledger_row
make_row(int thread, int i)
{
    struct tg_ledger_row r;
    memset(&r, 0, sizeof(r));
    snprintf(r.request_id, sizeof(r.request_id), "req_%d_%d", thread, i);
    r.attempt = 1;
    r.time_ms = 1000 + i;
    snprintf(r.org_id, sizeof(r.org_id), "org-1");
    snprintf(r.endpoint, sizeof(r.endpoint), "chat.completions");
    r.prompt_tokens = i;
    r.completion_tokens = 1;
    r.status = 200;
    return r;
}

struct pusher {
    struct tg_ledger *l;
    int index;
    int n;
};

static void *
push_many(void *arg)
{
    struct pusher *p = arg;
    for (int i = 0; i < p->n; i++) {
        struct tg_ledger_row r = make_row(p->index, i);
        tg_ledger_push(p->l, &r);
    }
    return NULL;
}

static void
pushes_from_threads_all_land_once(void **state)
{
    struct fx *x = *state;
    struct tg_ledger_opts o = {.batch_rows = 64, .flush_ms = 5, .max_rows = 100};
    struct tg_ledger *l = NULL;
    assert_int_equal(tg_ledger_start(&x->fake.base, &o, &l), 0);
    enum { THREADS = 4, EACH = 3000 };
    pthread_t t[THREADS];
    struct pusher p[THREADS];
    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct pusher){l, i, EACH};
        assert_int_equal(pthread_create(&t[i], NULL, push_many, &p[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    tg_ledger_stop(l);
    assert_int_equal(n_rows(x), THREADS * EACH);
    assert_int_equal(store_fx_scalar(&x->db, "SELECT count(DISTINCT request_id) FROM ledger"),
                     THREADS * EACH);
    assert_int_equal(store_fx_scalar(&x->db, "SELECT sum(prompt_tokens) FROM ledger"),
                     THREADS * ((int64_t)EACH * (EACH - 1) / 2));
    /* Rows were shared among transactions, none bigger than batch_rows. */
    assert_true(atomic_load(&x->fake.max_batch) <= 64);
    assert_true(atomic_load(&x->fake.calls) >= THREADS * EACH / 64);
}

static void
flush_writes_what_was_queued_before(void **state)
{
    struct fx *x = *state;
    /* A long flush_ms and a big batch: nothing is written unless flushed. */
    struct tg_ledger_opts o = {.batch_rows = 1000, .flush_ms = 60000};
    struct tg_ledger *l = NULL;
    assert_int_equal(tg_ledger_start(&x->fake.base, &o, &l), 0);
    for (int i = 0; i < 10; i++) {
        struct tg_ledger_row r = make_row(0, i);
        tg_ledger_push(l, &r);
    }
    assert_int_equal(tg_ledger_depth(l), 10);
    assert_int_equal(n_rows(x), 0);
    tg_ledger_flush(l);
    assert_int_equal(tg_ledger_depth(l), 0);
    assert_int_equal(n_rows(x), 10);
    assert_int_equal(atomic_load(&x->fake.calls), 1); /* one transaction */

    tg_ledger_flush(l); /* nothing queued: returns at once */
    assert_int_equal(atomic_load(&x->fake.calls), 1);

    struct tg_ledger_row r = make_row(1, 0);
    tg_ledger_push(l, &r);
    tg_ledger_stop(l); /* stop writes the rest */
    assert_int_equal(n_rows(x), 11);
}

static void
rows_are_written_after_flush_ms_or_a_full_batch(void **state)
{
    struct fx *x = *state;
    struct tg_ledger_opts o = {.batch_rows = 1000, .flush_ms = 30};
    struct tg_ledger *l = NULL;
    assert_int_equal(tg_ledger_start(&x->fake.base, &o, &l), 0);
    struct tg_ledger_row r = make_row(0, 0);
    tg_ledger_push(l, &r);
    await_rows(x, 1); /* no flush, no stop: the timer wrote it */
    tg_ledger_stop(l);

    o = (struct tg_ledger_opts){.batch_rows = 8, .flush_ms = 60000};
    assert_int_equal(tg_ledger_start(&x->fake.base, &o, &l), 0);
    for (int i = 0; i < 8; i++) {
        r = make_row(1, i);
        tg_ledger_push(l, &r);
    }
    await_rows(x, 9); /* a full batch goes at once */
    tg_ledger_stop(l);
}

static void
failed_appends_are_retried_without_loss(void **state)
{
    struct fx *x = *state;
    atomic_store(&x->fake.fail_left, 3);
    struct tg_ledger_opts o = {.batch_rows = 16, .flush_ms = 5};
    struct tg_ledger *l = NULL;
    assert_int_equal(tg_ledger_start(&x->fake.base, &o, &l), 0);
    for (int i = 0; i < 50; i++) {
        struct tg_ledger_row r = make_row(0, i);
        tg_ledger_push(l, &r);
    }
    tg_ledger_flush(l);
    assert_int_equal(atomic_load(&x->fake.failures), 3);
    assert_int_equal(n_rows(x), 50);
    assert_int_equal(tg_ledger_depth(l), 0);

    /* Failures across a stop: the queue is still drained. */
    atomic_store(&x->fake.fail_left, 2);
    for (int i = 0; i < 20; i++) {
        struct tg_ledger_row r = make_row(1, i);
        tg_ledger_push(l, &r);
    }
    tg_ledger_stop(l);
    assert_int_equal(atomic_load(&x->fake.failures), 5);
    assert_int_equal(n_rows(x), 70);
    assert_int_equal(store_fx_scalar(&x->db, "SELECT count(DISTINCT request_id) FROM ledger"), 70);
}

static void
stop_gives_up_on_a_dead_store(void **state)
{
    struct fx *x = *state;
    atomic_store(&x->fake.fail_left, -1);
    struct tg_ledger_opts o = {.batch_rows = 16, .flush_ms = 5};
    struct tg_ledger *l = NULL;
    assert_int_equal(tg_ledger_start(&x->fake.base, &o, &l), 0);
    struct tg_ledger_row r = make_row(0, 0);
    tg_ledger_push(l, &r);
    /* Let it fail at least once before stop, as a store that died would. */
    uint64_t end = tg_clock_mono_ms() + 5000;
    while (atomic_load(&x->fake.failures) == 0) {
        assert_true(tg_clock_mono_ms() < end);
        usleep(1000);
    }
    uint64_t t0 = tg_clock_mono_ms();
    tg_ledger_stop(l); /* must return, having tried a bounded number of times */
    assert_true(tg_clock_mono_ms() - t0 < 5000);
    assert_true(atomic_load(&x->fake.failures) >= 2);
    assert_int_equal(n_rows(x), 0);
}

static void
defaults_apply_and_empty_stop_is_quick(void **state)
{
    struct fx *x = *state;
    struct tg_ledger *l = NULL;
    assert_int_equal(tg_ledger_start(&x->fake.base, NULL, &l), 0);
    assert_int_equal(tg_ledger_depth(l), 0);
    tg_ledger_flush(l);
    tg_ledger_stop(l);
    assert_int_equal(atomic_load(&x->fake.calls), 0);
    tg_ledger_stop(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(pushes_from_threads_all_land_once, setup, teardown),
        cmocka_unit_test_setup_teardown(flush_writes_what_was_queued_before, setup, teardown),
        cmocka_unit_test_setup_teardown(rows_are_written_after_flush_ms_or_a_full_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(failed_appends_are_retried_without_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(stop_gives_up_on_a_dead_store, setup, teardown),
        cmocka_unit_test_setup_teardown(defaults_apply_and_empty_stop_is_quick, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
