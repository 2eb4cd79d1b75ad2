/*
 * sse_fuzz.c: libFuzzer target for the SSE reader (built with -DTG_FUZZ=ON and clang).
 *
 * Differential: the input is fed whole and again cut at a point chosen by its first bytes;
 * both runs must produce the same events (names, data, raw bytes) and the same partial
 * state, and every event's data must be NUL-terminated at data_len.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "http/sse.h"

static int
on_event(const struct tg_sse_event *ev, void *arg)
{
    struct tg_buf *out = arg;
    if (ev->data[ev->data_len] != '\0' || ev->raw_len == 0) {
        abort();
    }
    tg_buf_append_str(out, ev->event);
    tg_buf_append(out, "\x01", 1);
    tg_buf_append(out, ev->data, ev->data_len);
    tg_buf_append(out, "\x01", 1);
    tg_buf_append(out, ev->raw, ev->raw_len);
    tg_buf_append(out, ev->has_data ? "\x02" : "\x03", 1);
    return 0;
}

static int
run(const char *p, size_t len, size_t cut, struct tg_buf *out, bool *partial)
{
    struct tg_sse_reader r;
    tg_sse_reader_init(&r, 1024);
    int rc = tg_sse_reader_feed(&r, p, cut, on_event, out);
    if (rc == 0) {
        rc = tg_sse_reader_feed(&r, p + cut, len - cut, on_event, out);
    }
    *partial = tg_sse_reader_has_partial(&r);
    tg_sse_reader_deinit(&r);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    size_t cut = ((size_t)data[0] << 8 | data[1]) % (size - 1);
    const char *p = (const char *)data + 2;
    size_t len = size - 2;
    cut = cut > len ? len : cut;
    struct tg_buf a;
    struct tg_buf b;
    tg_buf_init(&a, 0);
    tg_buf_init(&b, 0);
    bool pa;
    bool pb;
    int ra = run(p, len, len, &a, &pa);
    int rb = run(p, len, cut, &b, &pb);
    /* the cap may trip at a different event only if it trips at all; compare clean runs */
    if (ra == 0 && rb == 0 &&
        (a.len != b.len || (a.len > 0 && memcmp(a.data, b.data, a.len)) || pa != pb)) {
        abort();
    }
    tg_buf_deinit(&a);
    tg_buf_deinit(&b);
    return 0;
}
