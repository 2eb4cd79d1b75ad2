/* buf.c: capped growable buffers (see buf.h). */
#include "core/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/mem.h"

void
tg_buf_init(struct tg_buf *b, size_t max_bytes)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max_bytes = max_bytes ? max_bytes : SIZE_MAX - 1;
}

void
tg_buf_deinit(struct tg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void
tg_buf_reset(struct tg_buf *b)
{
    b->len = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

int
tg_buf_reserve(struct tg_buf *b, size_t n)
{
    if (n > b->max_bytes || b->len > b->max_bytes - n) {
        return TG_ETOOBIG;
    }
    size_t need = b->len + n + 1;
    if (need <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    b->data = tg_xrealloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int
tg_buf_append(struct tg_buf *b, const void *p, size_t n)
{
    int rc = tg_buf_reserve(b, n);
    if (rc < 0) {
        return rc;
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int
tg_buf_append_str(struct tg_buf *b, const char *s)
{
    return tg_buf_append(b, s, strlen(s));
}

int
tg_buf_vappendf(struct tg_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        return TG_EINVAL;
    }
    int rc = tg_buf_reserve(b, (size_t)n);
    if (rc < 0) {
        return rc;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int
tg_buf_appendf(struct tg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tg_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void
tg_buf_consume(struct tg_buf *b, size_t n)
{
    if (n >= b->len) {
        tg_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *
tg_buf_steal(struct tg_buf *b, size_t *len_out)
{
    if (b->data == NULL) {
        tg_buf_append(b, "", 0);
    }
    char *p = b->data;
    if (len_out != NULL) {
        *len_out = b->len;
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
