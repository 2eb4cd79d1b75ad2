/*
 * sqlite_ckpt.c: WAL checkpoints off the committing thread (see sqlite_int.h).
 *
 * SQLite's automatic checkpoint runs inside the commit that crosses its threshold: the ledger
 * writer, holding the store lock, copies a thousand pages back into the database file in one
 * go, several milliseconds of CPU on a core it may share with a loop thread, which answers
 * nothing meanwhile. Here a commit only notes the WAL's size (sqlite3_wal_hook). When
 * CKPT_PAGES frames wait to be copied, it wakes a checkpointer thread, which runs a PASSIVE
 * checkpoint on a connection of its own, at a lower priority: writers and readers go on
 * meanwhile (WAL mode), and a busy core takes the CPU back from it in small pieces instead of
 * waiting for it.
 *
 * The WAL file starts over only when a write begins with every frame copied, which a
 * checkpoint running beside a steady writer rarely leaves. So once the WAL is past
 * CKPT_RESTART_PAGES and the thread has caught up to within CKPT_TAIL_PAGES, the committing
 * thread copies that short tail itself, and its next write starts the WAL over. Past
 * CKPT_BACKSTOP_PAGES (a thread starved on a saturated machine, say) it checkpoints whatever is
 * left, as SQLite would, so the WAL stays bounded either way.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/mem.h"
#include "core/thread.h"
#include "store/sqlite_int.h"

#define CKPT_PAGES 1000 /* SQLite's own default threshold */
#define CKPT_TAIL_PAGES 256
#define CKPT_RESTART_PAGES 4000   /* about 16 MiB of WAL */
#define CKPT_BACKSTOP_PAGES 16000 /* about 64 MiB */
#define CKPT_NICE 10

struct sq_ckpt {
    char *path;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* to the thread: due or stopping */
    pthread_cond_t done; /* to sq_ckpt_wait: n_done moved */
    pthread_t thread;
    bool has_thread;
    bool is_due;
    bool is_stopping;
    bool is_ended;  /* the thread returned */
    int backfilled; /* WAL frames copied by the last checkpoint */
    uint64_t n_done;
};

static void *
ckpt_end(struct sq_ckpt *k, sqlite3 *db)
{
    sqlite3_close(db);
    pthread_mutex_lock(&k->lock);
    k->is_ended = true;
    pthread_cond_broadcast(&k->done);
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

static void *
ckpt_main(void *arg)
{
    struct sq_ckpt *k = arg;
    tg_thread_set_name("tg-checkpoint");
    errno = 0;
    if (nice(CKPT_NICE) == -1 && errno != 0) {
        tg_log_debug("store: checkpoints run at the writer's priority (nice: %s)", strerror(errno));
    }
    sqlite3 *db = NULL;
    /* The connection reads the file at once: until then it has no WAL to checkpoint. */
    if (sqlite3_open_v2(k->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL) != SQLITE_OK) {
        tg_log_warn("store: no checkpoint connection (%s); commits checkpoint past %d pages",
                    db != NULL ? sqlite3_errmsg(db) : "out of memory", CKPT_BACKSTOP_PAGES);
        return ckpt_end(k, db);
    }
    pthread_mutex_lock(&k->lock);
    for (;;) {
        while (!k->is_due && !k->is_stopping) {
            pthread_cond_wait(&k->wake, &k->lock);
        }
        if (k->is_stopping) {
            break;
        }
        k->is_due = false;
        pthread_mutex_unlock(&k->lock);
        int copied = 0;
        int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, &copied);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
            tg_log_warn("store: checkpoint failed: %s", sqlite3_errmsg(db));
        }
        pthread_mutex_lock(&k->lock);
        if (rc == SQLITE_OK) {
            k->backfilled = copied;
        }
        k->n_done++;
        pthread_cond_broadcast(&k->done);
    }
    pthread_mutex_unlock(&k->lock);
    return ckpt_end(k, db);
}

/* sqlite3_wal_hook: runs after each commit on the store's connection, with its lock held;
 * pages is the WAL's length in frames. */
static int
on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct sq_ckpt *k = arg;
    pthread_mutex_lock(&k->lock);
    if (pages < k->backfilled) {
        k->backfilled = 0; /* the WAL started over */
    }
    int backlog = pages - k->backfilled;
    bool is_inline =
        pages >= CKPT_BACKSTOP_PAGES || (pages >= CKPT_RESTART_PAGES && backlog <= CKPT_TAIL_PAGES);
    if (!is_inline && backlog >= CKPT_PAGES) {
        if (!k->has_thread && !k->is_stopping) {
            /* Started at the first need: a CLI command that writes little never starts it. */
            int rc = pthread_create(&k->thread, NULL, ckpt_main, k);
            k->has_thread = rc == 0;
            if (rc != 0) {
                tg_log_warn("store: cannot start the checkpoint thread: %s", strerror(rc));
            }
        }
        k->is_due = true;
        pthread_cond_signal(&k->wake);
    }
    pthread_mutex_unlock(&k->lock);
    if (is_inline) {
        int copied = 0;
        if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, &copied) ==
            SQLITE_OK) {
            pthread_mutex_lock(&k->lock);
            k->backfilled = copied;
            pthread_mutex_unlock(&k->lock);
        }
    }
    return SQLITE_OK;
}

void
sq_ckpt_start(struct sq *s, const char *path)
{
    if (strcmp(path, ":memory:") == 0 || path[0] == '\0') {
        return; /* no WAL */
    }
    struct sq_ckpt *k = tg_xcalloc(1, sizeof(*k));
    k->path = tg_xstrdup(path);
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->wake, NULL);
    pthread_cond_init(&k->done, NULL);
    s->ckpt = k;
    sqlite3_wal_hook(s->db, on_wal_commit, k); /* replaces SQLite's automatic checkpoint */
}

void
sq_ckpt_stop(struct sq *s)
{
    struct sq_ckpt *k = s->ckpt;
    if (k == NULL) {
        return;
    }
    if (s->db != NULL) {
        sqlite3_wal_hook(s->db, NULL, NULL);
    }
    pthread_mutex_lock(&k->lock);
    k->is_stopping = true;
    pthread_cond_signal(&k->wake);
    bool has_thread = k->has_thread;
    pthread_mutex_unlock(&k->lock);
    if (has_thread) {
        pthread_join(k->thread, NULL);
    }
    pthread_cond_destroy(&k->wake);
    pthread_cond_destroy(&k->done);
    pthread_mutex_destroy(&k->lock);
    free(k->path);
    free(k);
    s->ckpt = NULL;
}

uint64_t
sq_ckpt_wait(struct sq *s, uint64_t n)
{
    struct sq_ckpt *k = s->ckpt;
    if (k == NULL) {
        return 0;
    }
    pthread_mutex_lock(&k->lock);
    while (k->n_done < n && k->has_thread && !k->is_ended) {
        pthread_cond_wait(&k->done, &k->lock);
    }
    uint64_t done = k->n_done;
    pthread_mutex_unlock(&k->lock);
    return done;
}
