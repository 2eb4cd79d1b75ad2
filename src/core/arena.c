/* arena.c: bump allocation in blocks, plus a cleanup list (see arena.h). */
#include "core/arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

struct tg_arena_block {
    struct tg_arena_block *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

struct tg_arena_cleanup {
    struct tg_arena_cleanup *next;
    tg_arena_cleanup_cb fn;
    void *arg;
};

void
tg_arena_init(struct tg_arena *a, size_t block_bytes)
{
    a->head = NULL;
    a->cleanups = NULL;
    a->block_bytes = block_bytes ? block_bytes : 4096;
}

void
tg_arena_deinit(struct tg_arena *a)
{
    struct tg_arena_cleanup *c = a->cleanups;
    a->cleanups = NULL;
    while (c != NULL) {
        c->fn(c->arg);
        c = c->next;
    }
    struct tg_arena_block *b = a->head;
    while (b != NULL) {
        struct tg_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

void *
tg_arena_alloc(struct tg_arena *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    struct tg_arena_block *b = a->head;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > a->block_bytes ? n : a->block_bytes;
        b = tg_xmalloc(sizeof(*b) + cap);
        b->used = 0;
        b->cap = cap;
        /* A block made for one large allocation goes behind the current one, so the current
         * block's free space stays in use. */
        if (a->head != NULL && n > a->block_bytes) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *
tg_arena_strndup(struct tg_arena *a, const char *s, size_t n)
{
    char *p = tg_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
tg_arena_strdup(struct tg_arena *a, const char *s)
{
    return tg_arena_strndup(a, s, strlen(s));
}

char *
tg_arena_sprintf(struct tg_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return tg_arena_strdup(a, "");
    }
    char *p = tg_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void
tg_arena_cleanup_add(struct tg_arena *a, tg_arena_cleanup_cb fn, void *arg)
{
    struct tg_arena_cleanup *c = tg_arena_alloc(a, sizeof(*c));
    c->fn = fn;
    c->arg = arg;
    c->next = a->cleanups;
    a->cleanups = c;
}
