/*
 * cache.h: the exact-match response cache.
 *
 * A cache maps a 32-byte key (SHA-256 of the partition, the endpoint and the canonical
 * request, see tg_cache_key) to one successful upstream answer: its status, content type,
 * body (a JSON document or the SSE stream bytes as the provider sent them), usage and cost.
 * Backends sit behind one ops table: memory (an LRU with a byte cap, shared by the workers, so
 * thread-safe), file system (one file per key in a directory, written atomically through
 * rename, a byte cap enforced by removing the oldest files). Every backend is thread-safe.
 *
 * Ownership: get() fills a caller-owned entry whose body the caller releases with
 * tg_cache_entry_deinit; put() copies what it keeps. Expired, corrupt or truncated entries
 * are misses (and are removed), never served.
 */
#ifndef TG_CACHE_CACHE_H
#define TG_CACHE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define TG_CACHE_KEY_BYTES 32

struct tg_cache_entry {
    int status;
    bool is_stream; /* body holds SSE bytes ("data: ...\n\n" ... "data: [DONE]") */
    char content_type[64];
    char project_id[64]; /* the partition owner, for invalidation by project */
    char model[128];     /* the model the request named, for invalidation by model */
    int64_t prompt_tokens;
    int64_t cached_tokens;
    int64_t completion_tokens;
    int64_t reasoning_tokens;
    int64_t cost_micros; /* what the original call cost: the saving of each hit */
    int64_t created_ms;  /* Unix ms when the answer was stored */
    int64_t expires_ms;  /* Unix ms after which it is a miss; 0: never (set by put) */
    char *body;          /* owned; NUL-terminated, not counted in body_len */
    size_t body_len;
};

/* Releases the entry's body; the entry may be reused afterwards. */
void tg_cache_entry_deinit(struct tg_cache_entry *e);

/* Copies src into dst (dst's body freshly allocated). Returns 0 or TG_ENOMEM. */
int tg_cache_entry_copy(struct tg_cache_entry *dst, const struct tg_cache_entry *src);

/* Which entries invalidate() removes: all of them, or those matching every set field (a
 * filter with no field set matches nothing). */
struct tg_cache_filter {
    bool all;
    const char *project_id; /* NULL: any */
    const char *model;      /* NULL: any */
    int64_t older_than_ms;  /* > 0: entries created before now - older_than_ms */
};

struct tg_cache_stats {
    uint64_t hits;
    uint64_t misses;
    uint64_t puts;
    uint64_t evictions;
    size_t n_entries;
    size_t bytes;
    size_t max_bytes;
};

struct tg_cache;

struct tg_cache_ops {
    const char *name;
    /* Copies the live entry for key into *out. Returns 0, TG_ENOTFOUND (miss, also for
     * expired or corrupt entries) or TG_EIO. */
    int (*get)(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES],
               struct tg_cache_entry *out);
    /* Stores a copy of e under key for ttl_ms (<= 0: no expiry), replacing any entry. Returns
     * 0, TG_ETOOBIG (larger than the cache) or TG_EIO. */
    int (*put)(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES],
               const struct tg_cache_entry *e, int64_t ttl_ms);
    /* Removes the entries f matches; *n_removed (may be NULL) gets their number. */
    int (*invalidate)(struct tg_cache *c, const struct tg_cache_filter *f, size_t *n_removed);
    void (*stats)(struct tg_cache *c, struct tg_cache_stats *out);
    void (*free)(struct tg_cache *c);
};

struct tg_cache {
    const struct tg_cache_ops *ops;
};

/* An in-memory LRU holding at most max_bytes of entries (bodies plus fixed overhead). */
struct tg_cache *tg_cache_memory_new(size_t max_bytes);

/* A directory cache under dir (created if missing) holding at most max_bytes of files.
 * Returns 0 and *out, or TG_EIO when the directory cannot be made or read. */
int tg_cache_fs_new(const char *dir, size_t max_bytes, struct tg_cache **out);

/* A cache in the store's cache_entries table (store/store.h), which it does not own. Its
 * operations block on the database: callers run them off the loop threads. */
struct tg_store;
struct tg_cache *tg_cache_db_new(struct tg_store *store);

/* Dispatchers; c may be NULL for tg_cache_free. */
int tg_cache_get(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES],
                 struct tg_cache_entry *out);
int tg_cache_put(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES],
                 const struct tg_cache_entry *e, int64_t ttl_ms);
int tg_cache_invalidate(struct tg_cache *c, const struct tg_cache_filter *f, size_t *n_removed);
void tg_cache_stats(struct tg_cache *c, struct tg_cache_stats *out);
void tg_cache_free(struct tg_cache *c);

/* The cache key of a request: SHA-256 over the partition (the project id, or "shared" when
 * the operator shares a cache), the endpoint path and the canonical body: the JSON with the
 * members that do not change the output (stream, stream_options, user) removed and the keys
 * of every object sorted, serialized compactly. Returns 0 or TG_EPARSE (body not a JSON
 * object). */
int tg_cache_key(const char *partition, const char *endpoint, const char *body, size_t len,
                 unsigned char out[TG_CACHE_KEY_BYTES]);

/* Per-project cache settings ("cache" in the project settings). */
enum tg_cache_backend { TG_CACHE_MEMORY, TG_CACHE_FS, TG_CACHE_DB };

struct tg_cache_settings {
    bool enabled;
    enum tg_cache_backend backend;
    int64_t ttl_s;
};

/* Parses {"enabled": bool, "backend": "memory"|"fs"|"db", "ttl_s": int > 0}; absent members
 * take the defaults (disabled, memory, 3600 s). Returns 0, or TG_EINVAL with a reason in err
 * (err_cap bytes). */
int tg_cache_settings_parse(const json_t *v, struct tg_cache_settings *out, char *err,
                            size_t err_cap);

/* Per-request control from the Cache-Control and x-tollgate-cache request headers (either may
 * be NULL). */
struct tg_cache_control {
    bool lookup;        /* false: no-cache, bypass or refresh */
    bool store;         /* false: no-store or bypass */
    int64_t max_age_ms; /* >= 0: only entries at most this old are acceptable; -1: any */
};

void tg_cache_control_parse(const char *cache_control, const char *x_tollgate_cache,
                            struct tg_cache_control *out);

/* A chat.completion JSON answer rewritten as the SSE stream the client would have received
 * with stream=true (one chunk per choice carrying its whole message, one with its
 * finish_reason, one with the usage, then [DONE]), appended to out (a tg_buf). Returns 0,
 * TG_EPARSE (not a chat.completion) or TG_ETOOBIG. */
struct tg_buf;
int tg_cache_chat_json_to_sse(const char *body, size_t len, struct tg_buf *out);

/* The project's cache settings read from its settings JSON text ("cache" member); disabled
 * when absent or invalid. */
void tg_cache_settings_of_project(const char *settings_json, struct tg_cache_settings *out);

/* The process-wide memory cache the workers share (created on first use, 64 MiB, or
 * TOLLGATE_CACHE_MEMORY_BYTES). */
struct tg_cache *tg_cache_shared_memory(void);

/* The process-wide cache of backend b: the memory cache; for TG_CACHE_FS the directory
 * data_dir/cache (created on first use, 256 MiB or TOLLGATE_CACHE_FS_BYTES); for TG_CACHE_DB
 * the store's table. NULL when it cannot be opened (logged once per attempt). Opening the fs
 * cache reads its directory: call it off the loop threads for fs and db. */
struct tg_cache *tg_cache_shared(enum tg_cache_backend b, const char *data_dir,
                                 struct tg_store *store);

/* Frees the process-wide fs and db caches (at exit, with no request in flight); the next
 * tg_cache_shared opens them again. */
void tg_cache_shared_close(void);

#endif
