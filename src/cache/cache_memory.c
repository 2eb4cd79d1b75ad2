/*
 * cache_memory.c: the in-memory cache backend, an LRU bounded by bytes.
 *
 * Workers on every loop thread share one instance, so a mutex guards it; each operation is a
 * hash lookup plus a list splice, and the copy of a body, so the lock is held briefly. Entries
 * live in a chained hash table keyed by the first bytes of the (already uniformly random)
 * SHA-256 key, and on a doubly linked list in recency order: a get moves the entry to the
 * front, a put that would pass max_bytes evicts from the back. An entry's charged size is its
 * body plus a fixed overhead, so many tiny entries cannot exceed the cap either.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "cache/cache_int.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/mem.h"

struct node {
    unsigned char key[TG_CACHE_KEY_BYTES];
    struct tg_cache_entry e;
    size_t charge;
    struct node *chain;       /* next in the hash bucket */
    struct node *prev, *next; /* recency list: head is the most recently used */
};

struct mem_cache {
    struct tg_cache base;
    pthread_mutex_t lock;
    struct node **buckets;
    size_t n_buckets; /* a power of two */
    struct node *head, *tail;
    struct tg_cache_stats st;
};

static size_t
charge_of(const struct tg_cache_entry *e)
{
    return sizeof(struct node) + e->body_len + 1;
}

static size_t
bucket_of(const struct mem_cache *m, const unsigned char *key)
{
    size_t h;
    memcpy(&h, key, sizeof(h));
    return h & (m->n_buckets - 1);
}

static struct node **
find_slot(struct mem_cache *m, const unsigned char *key)
{
    struct node **pp = &m->buckets[bucket_of(m, key)];
    while (*pp && memcmp((*pp)->key, key, TG_CACHE_KEY_BYTES) != 0) {
        pp = &(*pp)->chain;
    }
    return pp;
}

static void
list_unlink(struct mem_cache *m, struct node *n)
{
    if (n->prev) {
        n->prev->next = n->next;
    } else {
        m->head = n->next;
    }
    if (n->next) {
        n->next->prev = n->prev;
    } else {
        m->tail = n->prev;
    }
    n->prev = n->next = NULL;
}

static void
list_push_front(struct mem_cache *m, struct node *n)
{
    n->prev = NULL;
    n->next = m->head;
    if (m->head) {
        m->head->prev = n;
    }
    m->head = n;
    if (!m->tail) {
        m->tail = n;
    }
}

/* Unlinks n from its bucket and the list and frees it. */
static void
drop(struct mem_cache *m, struct node *n)
{
    struct node **pp = find_slot(m, n->key);
    *pp = n->chain;
    list_unlink(m, n);
    m->st.bytes -= n->charge;
    m->st.n_entries--;
    tg_cache_entry_deinit(&n->e);
    free(n);
}

static void
grow(struct mem_cache *m)
{
    size_t nb = m->n_buckets * 2;
    struct node **b = tg_xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < m->n_buckets; i++) {
        struct node *n = m->buckets[i];
        while (n) {
            struct node *next = n->chain;
            size_t h;
            memcpy(&h, n->key, sizeof(h));
            n->chain = b[h & (nb - 1)];
            b[h & (nb - 1)] = n;
            n = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = nb;
}

static int
mem_get(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES], struct tg_cache_entry *out)
{
    struct mem_cache *m = (struct mem_cache *)c;
    int rc = TG_ENOTFOUND;
    pthread_mutex_lock(&m->lock);
    struct node *n = *find_slot(m, key);
    if (n && n->e.expires_ms > 0 && tg_clock_unix_ms() >= n->e.expires_ms) {
        drop(m, n);
        n = NULL;
    }
    if (n) {
        rc = tg_cache_entry_copy(out, &n->e);
        list_unlink(m, n);
        list_push_front(m, n);
    }
    if (rc == 0) {
        m->st.hits++;
    } else {
        m->st.misses++;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int
mem_put(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES],
        const struct tg_cache_entry *e, int64_t ttl_ms)
{
    struct mem_cache *m = (struct mem_cache *)c;
    size_t charge = charge_of(e);
    if (charge > m->st.max_bytes) {
        return TG_ETOOBIG;
    }
    struct node *n = tg_xcalloc(1, sizeof(*n));
    memcpy(n->key, key, TG_CACHE_KEY_BYTES);
    if (tg_cache_entry_copy(&n->e, e) != 0) {
        free(n);
        return TG_ENOMEM;
    }
    n->e.expires_ms = ttl_ms > 0 ? tg_clock_unix_ms() + ttl_ms : 0;
    n->charge = charge;

    pthread_mutex_lock(&m->lock);
    struct node *old = *find_slot(m, key);
    if (old) {
        drop(m, old);
    }
    while (m->tail && m->st.bytes + charge > m->st.max_bytes) {
        drop(m, m->tail);
        m->st.evictions++;
    }
    if (m->st.n_entries + 1 > m->n_buckets) {
        grow(m);
    }
    struct node **slot = &m->buckets[bucket_of(m, key)];
    n->chain = *slot;
    *slot = n;
    list_push_front(m, n);
    m->st.bytes += charge;
    m->st.n_entries++;
    m->st.puts++;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int
mem_invalidate(struct tg_cache *c, const struct tg_cache_filter *f, size_t *n_removed)
{
    struct mem_cache *m = (struct mem_cache *)c;
    size_t removed = 0;
    int64_t now = tg_clock_unix_ms();
    pthread_mutex_lock(&m->lock);
    struct node *n = m->head;
    while (n) {
        struct node *next = n->next;
        if (tg_cache_filter_match(f, n->e.project_id, n->e.model, n->e.created_ms, now)) {
            drop(m, n);
            removed++;
        }
        n = next;
    }
    pthread_mutex_unlock(&m->lock);
    if (n_removed) {
        *n_removed = removed;
    }
    return 0;
}

static void
mem_stats(struct tg_cache *c, struct tg_cache_stats *out)
{
    struct mem_cache *m = (struct mem_cache *)c;
    pthread_mutex_lock(&m->lock);
    *out = m->st;
    pthread_mutex_unlock(&m->lock);
}

static void
mem_free(struct tg_cache *c)
{
    struct mem_cache *m = (struct mem_cache *)c;
    while (m->head) {
        drop(m, m->head);
    }
    free(m->buckets);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static const struct tg_cache_ops mem_ops = {
    .name = "memory",
    .get = mem_get,
    .put = mem_put,
    .invalidate = mem_invalidate,
    .stats = mem_stats,
    .free = mem_free,
};

struct tg_cache *
tg_cache_memory_new(size_t max_bytes)
{
    struct mem_cache *m = tg_xcalloc(1, sizeof(*m));
    m->base.ops = &mem_ops;
    pthread_mutex_init(&m->lock, NULL);
    m->n_buckets = 64;
    m->buckets = tg_xcalloc(m->n_buckets, sizeof(*m->buckets));
    m->st.max_bytes = max_bytes;
    return &m->base;
}
