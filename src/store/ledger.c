/*
 * ledger.c: the ledger's write queue and its writer thread (see ledger.h).
 *
 * Loop threads push; one writer thread appends to the store. The two share only a growable
 * array of rows under one mutex: a push is a lock, a memcpy and an unlock. The writer swaps
 * that array with its own (empty) one and writes the rows it took with the lock released, so
 * a push never waits on the store, only on another push or on the swap.
 *
 * Progress is counted, not tracked per row: n_pushed counts rows ever queued and n_done rows
 * written (or given up on). The writer handles rows in push order, so "every row queued before
 * this flush is done" is simply n_done reaching the n_pushed read at the flush.
 *
 * A failed append keeps its rows and is retried with doubling back-off, forever while the
 * process runs (accounting is never dropped because the disk was briefly full or locked).
 * Once stop is asked, a chunk gets STOP_ATTEMPTS more tries and is then logged as lost, so a
 * dead store cannot hang the shutdown.
 */
#include "store/ledger.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/thread.h"

#define DEFAULT_BATCH_ROWS 64
#define DEFAULT_FLUSH_MS 200
#define DEFAULT_MAX_ROWS 100000
#define BACKOFF_FIRST_MS 25
#define BACKOFF_MAX_MS 2000
#define STOP_ATTEMPTS 5

struct tg_ledger {
    struct tg_store *store; /* borrowed */
    size_t batch_rows;
    uint64_t flush_ms;
    size_t max_rows;

    pthread_mutex_t lock;
    pthread_cond_t wake;     /* to the writer: rows, a flush or stop */
    pthread_cond_t progress; /* to flushers: n_done moved */

    /* Under lock. */
    struct tg_ledger_row *queue; /* rows pushed, not yet taken by the writer */
    size_t n_queued;
    size_t queue_cap;
    uint64_t first_queued_ms; /* monotonic time the oldest queued row arrived */
    uint64_t n_pushed;
    uint64_t n_done;
    uint64_t flush_target; /* write at once while n_done < flush_target */
    bool is_stopping;
    bool is_over_cap; /* warned about depth > max_rows, not yet back under half */

    pthread_t thread;
};

/* Absolute CLOCK_MONOTONIC time ms from now, for the condition variables' timed waits. */
static struct timespec
deadline_in(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Called with the lock held: whether the queued rows should be written now rather than
 * waiting for more to share the transaction. Sets *wait_ms otherwise. */
static bool
is_due(const struct tg_ledger *l, uint64_t *wait_ms)
{
    if (l->is_stopping || l->n_queued >= l->batch_rows || l->flush_target > l->n_done) {
        return true;
    }
    uint64_t now = tg_clock_mono_ms();
    uint64_t due = l->first_queued_ms + l->flush_ms;
    if (now >= due) {
        return true;
    }
    *wait_ms = due - now;
    return false;
}

/* Sleeps ms with the lock held by the caller, waking early only when stop begins. */
static void
backoff_wait(struct tg_ledger *l, uint64_t ms, bool was_stopping)
{
    struct timespec until = deadline_in(ms);
    while (l->is_stopping == was_stopping) {
        if (pthread_cond_timedwait(&l->wake, &l->lock, &until) == ETIMEDOUT) {
            break;
        }
    }
}

/* Appends one chunk, retrying as the file header says. Returns false if it gave up. */
static bool
write_chunk(struct tg_ledger *l, const struct tg_ledger_row *rows, size_t n)
{
    uint64_t backoff_ms = BACKOFF_FIRST_MS;
    int failures = 0;
    int tries_since_stop = 0;
    bool was_stopping = false;
    for (;;) {
        int rc = l->store->ops->ledger_append(l->store, rows, n);
        if (rc == 0) {
            if (failures > 0) {
                tg_log_info("ledger: store writable again after %d failed attempts", failures);
            }
            return true;
        }
        failures++;
        pthread_mutex_lock(&l->lock);
        if (l->is_stopping && !was_stopping) {
            /* Stop began: retry promptly a few times instead of at the long back-off. */
            was_stopping = true;
            backoff_ms = BACKOFF_FIRST_MS;
        }
        if (was_stopping && ++tries_since_stop >= STOP_ATTEMPTS) {
            pthread_mutex_unlock(&l->lock);
            tg_log_error("ledger: giving up on %zu rows at stop after %d failed attempts (%s); "
                         "first request %s",
                         n, failures, tg_strerror(rc), rows[0].request_id);
            return false;
        }
        if (failures == 1 || (failures % 20) == 0) {
            tg_log_warn("ledger: cannot write %zu rows (%s); keeping them and retrying", n,
                        tg_strerror(rc));
        }
        backoff_wait(l, backoff_ms, was_stopping);
        pthread_mutex_unlock(&l->lock);
        backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
    }
}

/* Writes rows taken from the queue in chunks of batch_rows, reporting progress per chunk. */
static void
write_rows(struct tg_ledger *l, const struct tg_ledger_row *rows, size_t n)
{
    for (size_t off = 0; off < n; off += l->batch_rows) {
        size_t chunk = n - off < l->batch_rows ? n - off : l->batch_rows;
        write_chunk(l, rows + off, chunk);
        pthread_mutex_lock(&l->lock);
        l->n_done += chunk;
        pthread_cond_broadcast(&l->progress);
        pthread_mutex_unlock(&l->lock);
        /* Let a worker sharing this core answer before the next chunk: a backlog written in
         * one run of several milliseconds would be that much added to requests' latency. */
        sched_yield();
    }
}

static void *
writer_main(void *arg)
{
    struct tg_ledger *l = arg;
    struct tg_ledger_row *taken = NULL;
    size_t taken_cap = 0;
    tg_thread_set_name("tg-ledger");
    pthread_mutex_lock(&l->lock);
    for (;;) {
        if (l->n_queued == 0) {
            if (l->is_stopping) {
                break;
            }
            pthread_cond_wait(&l->wake, &l->lock);
            continue;
        }
        uint64_t wait_ms = 0;
        if (!is_due(l, &wait_ms)) {
            struct timespec until = deadline_in(wait_ms);
            pthread_cond_timedwait(&l->wake, &l->lock, &until);
            continue;
        }
        /* Swap arrays: pushes continue into our old (emptied) one while we write. */
        struct tg_ledger_row *rows = l->queue;
        size_t n = l->n_queued;
        size_t cap = l->queue_cap;
        l->queue = taken;
        l->queue_cap = taken_cap;
        l->n_queued = 0;
        taken = rows;
        taken_cap = cap;
        pthread_mutex_unlock(&l->lock);
        write_rows(l, taken, n);
        pthread_mutex_lock(&l->lock);
    }
    pthread_mutex_unlock(&l->lock);
    free(taken);
    return NULL;
}

int
tg_ledger_start(struct tg_store *store, const struct tg_ledger_opts *opts, struct tg_ledger **out)
{
    struct tg_ledger *l = tg_xcalloc(1, sizeof(*l));
    l->store = store;
    l->batch_rows = opts && opts->batch_rows ? opts->batch_rows : DEFAULT_BATCH_ROWS;
    l->flush_ms = opts && opts->flush_ms ? opts->flush_ms : DEFAULT_FLUSH_MS;
    l->max_rows = opts && opts->max_rows ? opts->max_rows : DEFAULT_MAX_ROWS;
    pthread_mutex_init(&l->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&l->wake, &attr);
    pthread_cond_init(&l->progress, NULL);
    pthread_condattr_destroy(&attr);
    int rc = pthread_create(&l->thread, NULL, writer_main, l);
    if (rc != 0) {
        tg_log_error("ledger: cannot start the writer thread: %s", strerror(rc));
        pthread_cond_destroy(&l->wake);
        pthread_cond_destroy(&l->progress);
        pthread_mutex_destroy(&l->lock);
        free(l);
        *out = NULL;
        return TG_EIO;
    }
    *out = l;
    return 0;
}

void
tg_ledger_push(struct tg_ledger *l, const struct tg_ledger_row *row)
{
    pthread_mutex_lock(&l->lock);
    if (l->n_queued == l->queue_cap) {
        l->queue_cap = l->queue_cap ? 2 * l->queue_cap : l->batch_rows;
        l->queue = tg_xrealloc(l->queue, l->queue_cap * sizeof(*l->queue));
    }
    memcpy(&l->queue[l->n_queued++], row, sizeof(*row));
    l->n_pushed++;
    if (l->n_queued == 1) {
        l->first_queued_ms = tg_clock_mono_ms();
        pthread_cond_signal(&l->wake);
    } else if (l->n_queued == l->batch_rows) {
        pthread_cond_signal(&l->wake);
    }
    uint64_t depth = l->n_pushed - l->n_done;
    bool warn = depth > l->max_rows && !l->is_over_cap;
    if (warn) {
        l->is_over_cap = true;
    } else if (l->is_over_cap && depth < l->max_rows / 2) {
        l->is_over_cap = false;
    }
    pthread_mutex_unlock(&l->lock);
    if (warn) {
        tg_log_warn("ledger: %llu rows waiting to be written (more than %zu); is the store slow "
                    "or failing?",
                    (unsigned long long)depth, l->max_rows);
    }
}

size_t
tg_ledger_depth(struct tg_ledger *l)
{
    pthread_mutex_lock(&l->lock);
    size_t depth = (size_t)(l->n_pushed - l->n_done);
    pthread_mutex_unlock(&l->lock);
    return depth;
}

void
tg_ledger_flush(struct tg_ledger *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t target = l->n_pushed;
    if (l->flush_target < target) {
        l->flush_target = target;
        pthread_cond_signal(&l->wake);
    }
    while (l->n_done < target) {
        pthread_cond_wait(&l->progress, &l->lock);
    }
    pthread_mutex_unlock(&l->lock);
}

void
tg_ledger_stop(struct tg_ledger *l)
{
    if (l == NULL) {
        return;
    }
    pthread_mutex_lock(&l->lock);
    l->is_stopping = true;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->lock);
    /* The writer drains the queue before it exits. */
    pthread_join(l->thread, NULL);
    pthread_cond_destroy(&l->wake);
    pthread_cond_destroy(&l->progress);
    pthread_mutex_destroy(&l->lock);
    free(l->queue);
    free(l);
}
