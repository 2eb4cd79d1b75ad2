/*
 * buf.h: growable byte buffers with a hard cap.
 *
 * Every buffer that a peer can grow (request bodies, upstream responses, SSE lines) is a
 * tg_buf whose max_bytes is set when it is made: growth past it fails with TG_ETOOBIG and
 * leaves the buffer as it was, so the caller can answer 413 or 502 instead of exhausting
 * memory. The data is always NUL-terminated (not counted in len) so text parsers can use it.
 */
#ifndef TG_CORE_BUF_H
#define TG_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct tg_buf {
    char *data;       /* NULL until the first append */
    size_t len;       /* bytes in use, excluding the trailing NUL */
    size_t cap;       /* bytes allocated */
    size_t max_bytes; /* hard cap on len; 0 means SIZE_MAX */
};

void tg_buf_init(struct tg_buf *b, size_t max_bytes);
void tg_buf_deinit(struct tg_buf *b);

/* Empties the buffer, keeping its memory. */
void tg_buf_reset(struct tg_buf *b);

/* Appends n bytes. Returns 0 or TG_ETOOBIG (nothing appended). */
int tg_buf_append(struct tg_buf *b, const void *p, size_t n);
int tg_buf_append_str(struct tg_buf *b, const char *s);
int tg_buf_appendf(struct tg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int tg_buf_vappendf(struct tg_buf *b, const char *fmt, va_list ap);

/* Ensures room for n more bytes. Returns 0 or TG_ETOOBIG. */
int tg_buf_reserve(struct tg_buf *b, size_t n);

/* Drops the first n bytes (n <= len), moving the rest to the front. */
void tg_buf_consume(struct tg_buf *b, size_t n);

/* Hands the heap memory to the caller (who frees it) and leaves b empty. */
char *tg_buf_steal(struct tg_buf *b, size_t *len_out);

#endif
