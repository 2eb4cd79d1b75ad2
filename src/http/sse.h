/*
 * sse.h: a pure, incremental server-sent-events reader.
 *
 * Fed the upstream body in arbitrary pieces, it emits one event per blank-line boundary
 * (\n\n, \r\n\r\n or \r\r), following the WHATWG rules the OpenAI SDKs follow: `event:` sets
 * the name, `data:` lines are joined with \n, one space after the colon is stripped, `id:`,
 * `retry:` and comment lines (`:`) are ignored. Each event also carries the raw bytes it was
 * made from, so a relay can forward it verbatim. No I/O, no allocation beyond the capped
 * line buffer, so a fuzzer can drive it.
 */
#ifndef TG_HTTP_SSE_H
#define TG_HTTP_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

struct tg_sse_event {
    const char *event; /* name from `event:`, or "" */
    const char *data;  /* joined data lines (NUL-terminated), or "" */
    size_t data_len;
    const char *raw; /* the event's bytes as received, through its terminating blank line */
    size_t raw_len;
    bool has_data; /* at least one data: line */
};

/* Called for each complete event. Return 0 to go on, or a negative code to stop feeding
 * (tg_sse_reader_feed returns that code). The event's pointers are valid only during the
 * call. */
typedef int (*tg_sse_event_cb)(const struct tg_sse_event *ev, void *arg);

struct tg_sse_reader {
    struct tg_buf pending; /* bytes of the event in progress */
    struct tg_buf data;    /* joined data of the event in progress */
    struct tg_buf name;
    size_t scanned; /* bytes of pending already split into lines */
    bool has_data;
    bool last_was_cr;
};

/* max_event_bytes caps one event (raw); a larger event fails the feed with TG_ETOOBIG. */
void tg_sse_reader_init(struct tg_sse_reader *r, size_t max_event_bytes);
void tg_sse_reader_deinit(struct tg_sse_reader *r);

/* Consumes len bytes, calling cb for each event completed. Returns 0, TG_ETOOBIG, or the
 * first negative value cb returned. */
int tg_sse_reader_feed(struct tg_sse_reader *r, const char *p, size_t len, tg_sse_event_cb cb,
                       void *arg);

/* True when bytes of an unfinished event are buffered (a stream that ends now was cut). */
bool tg_sse_reader_has_partial(const struct tg_sse_reader *r);

#endif
