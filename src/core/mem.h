/*
 * mem.h: allocation wrappers for our own small, internal allocations.
 *
 * They abort on out-of-memory: a gateway that cannot allocate 64 bytes cannot do anything
 * useful. Allocations whose size a peer chooses (bodies, headers) must not use these; they go
 * through tg_buf with a cap and fail with TG_ETOOBIG instead.
 */
#ifndef TG_CORE_MEM_H
#define TG_CORE_MEM_H

#include <stddef.h>

void *tg_xmalloc(size_t n);
void *tg_xcalloc(size_t count, size_t n);
void *tg_xrealloc(void *p, size_t n);
char *tg_xstrdup(const char *s);
char *tg_xstrndup(const char *s, size_t n);

/* Heap-allocated printf; the caller frees. */
char *tg_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
