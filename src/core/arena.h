/*
 * arena.h: request-lifetime memory with registered cleanups.
 *
 * A request's small allocations (header copies, ids, strings derived from the body) come from
 * its arena and are freed together when the request ends. Cleanups registered on the arena run
 * in reverse order at tg_arena_deinit, so a limit, a reservation or an upstream handle acquired
 * for the request is released however the request ends (the nginx pool idea). Not thread-safe:
 * an arena belongs to one loop thread.
 */
#ifndef TG_CORE_ARENA_H
#define TG_CORE_ARENA_H

#include <stddef.h>

struct tg_arena_block;
struct tg_arena_cleanup;

struct tg_arena {
    struct tg_arena_block *head;
    struct tg_arena_cleanup *cleanups;
    size_t block_bytes;
};

typedef void (*tg_arena_cleanup_cb)(void *arg);

void tg_arena_init(struct tg_arena *a, size_t block_bytes);

/* Runs the cleanups (last registered first) and frees every block. */
void tg_arena_deinit(struct tg_arena *a);

/* Zeroed memory aligned for any type; aborts on out-of-memory (sizes are ours, not a peer's). */
void *tg_arena_alloc(struct tg_arena *a, size_t n);
char *tg_arena_strdup(struct tg_arena *a, const char *s);
char *tg_arena_strndup(struct tg_arena *a, const char *s, size_t n);
char *tg_arena_sprintf(struct tg_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Registers fn(arg) to run at tg_arena_deinit. */
void tg_arena_cleanup_add(struct tg_arena *a, tg_arena_cleanup_cb fn, void *arg);

#endif
