/*
 * sse.c: the incremental server-sent-events reader (see sse.h).
 *
 * Bytes are appended to `pending` one line at a time, so pending always holds exactly the raw
 * bytes of the event in progress and an event's raw slice is pending itself when its blank
 * line arrives. `scanned` marks where the next line starts. A line is interpreted as soon as
 * its terminator is seen; only a blank line that ends in CR at the very end of the input is
 * held back, because a following LF (in the next piece) still belongs to it: that keeps the
 * events, raw bytes included, identical however the stream is split. The cap bounds pending,
 * and data/name are never longer than pending, so one event never uses more than about three
 * times the cap.
 */
#include "http/sse.h"

#include <string.h>

#include "core/err.h"

void
tg_sse_reader_init(struct tg_sse_reader *r, size_t max_event_bytes)
{
    tg_buf_init(&r->pending, max_event_bytes);
    tg_buf_init(&r->data, 0);
    tg_buf_init(&r->name, 0);
    r->scanned = 0;
    r->has_data = false;
    r->last_was_cr = false;
}

void
tg_sse_reader_deinit(struct tg_sse_reader *r)
{
    tg_buf_deinit(&r->pending);
    tg_buf_deinit(&r->data);
    tg_buf_deinit(&r->name);
}

bool
tg_sse_reader_has_partial(const struct tg_sse_reader *r)
{
    return r->pending.len > 0;
}

static void
reset_event(struct tg_sse_reader *r)
{
    tg_buf_reset(&r->pending);
    tg_buf_reset(&r->data);
    tg_buf_reset(&r->name);
    r->scanned = 0;
    r->has_data = false;
}

static int
emit(struct tg_sse_reader *r, tg_sse_event_cb cb, void *arg)
{
    struct tg_sse_event ev = {
        .event = r->name.data != NULL ? r->name.data : "",
        .data = r->data.data != NULL ? r->data.data : "",
        .data_len = r->data.len,
        .raw = r->pending.data,
        .raw_len = r->pending.len,
        .has_data = r->has_data,
    };
    int rc = cb(&ev, arg);
    reset_event(r);
    return rc < 0 ? rc : 0;
}

/* Interprets one non-blank line (without its terminator). */
static void
field(struct tg_sse_reader *r, const char *line, size_t n)
{
    if (line[0] == ':') {
        return; /* comment */
    }
    const char *colon = memchr(line, ':', n);
    size_t name_len = colon != NULL ? (size_t)(colon - line) : n;
    const char *value = colon != NULL ? colon + 1 : line + n;
    size_t value_len = (size_t)(line + n - value);
    if (value_len > 0 && value[0] == ' ') {
        value++;
        value_len--;
    }
    /* data and name are bounded by pending (already capped), so these appends cannot fail. */
    if (name_len == 4 && memcmp(line, "data", 4) == 0) {
        if (r->has_data) {
            tg_buf_append(&r->data, "\n", 1);
        }
        tg_buf_append(&r->data, value, value_len);
        r->has_data = true;
    } else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
        tg_buf_reset(&r->name);
        tg_buf_append(&r->name, value, value_len);
    }
    /* id, retry and unknown fields are ignored, as the SDKs do. */
}

/* True when the line just ended was blank and ended in CR with no byte after it yet. */
static bool
is_awaiting_lf(const struct tg_sse_reader *r)
{
    const struct tg_buf *b = &r->pending;
    if (!r->last_was_cr || b->len == 0 || b->data[b->len - 1] != '\r') {
        return false;
    }
    return b->len == 1 || b->data[b->len - 2] == '\r' || b->data[b->len - 2] == '\n';
}

/* A blank line ended the event in pending: emit it, or drop a block with no lines at all. */
static int
end_block(struct tg_sse_reader *r, size_t line_start, tg_sse_event_cb cb, void *arg)
{
    if (line_start == 0) {
        reset_event(r); /* extra blank line between events */
        return 0;
    }
    return emit(r, cb, arg);
}

int
tg_sse_reader_feed(struct tg_sse_reader *r, const char *p, size_t len, tg_sse_event_cb cb,
                   void *arg)
{
    while (len > 0) {
        if (r->last_was_cr) {
            bool awaiting = is_awaiting_lf(r);
            size_t line_start = r->pending.len - 1; /* where the held blank line starts */
            r->last_was_cr = false;
            if (p[0] == '\n') {
                if (tg_buf_append(&r->pending, "\n", 1) < 0) {
                    return TG_ETOOBIG;
                }
                r->scanned = r->pending.len;
                p++;
                len--;
            }
            if (awaiting) {
                int rc = end_block(r, line_start, cb, arg);
                if (rc < 0) {
                    return rc;
                }
            }
            continue;
        }
        size_t i = 0;
        while (i < len && p[i] != '\n' && p[i] != '\r') {
            i++;
        }
        if (i == len) {
            return tg_buf_append(&r->pending, p, len) < 0 ? TG_ETOOBIG : 0;
        }
        size_t n = i + 1;
        bool is_cr = p[i] == '\r';
        size_t used = is_cr && n < len && p[n] == '\n' ? n + 1 : n; /* CRLF is one terminator */
        size_t line_start = r->scanned;
        size_t line_len = r->pending.len + n - 1 - line_start;
        if (tg_buf_append(&r->pending, p, used) < 0) {
            return TG_ETOOBIG;
        }
        const char *line = r->pending.data + line_start;
        r->scanned = r->pending.len;
        p += used;
        len -= used;
        if (is_cr && used == n && len == 0) {
            r->last_was_cr = true; /* an LF may still come in the next piece */
        }
        if (line_len > 0) {
            field(r, line, line_len);
            continue;
        }
        if (r->last_was_cr) {
            return 0; /* blank line ending in CR: emit once the next byte is known */
        }
        int rc = end_block(r, line_start, cb, arg);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}
