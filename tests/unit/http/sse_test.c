/* sse_test.c: the SSE reader over every split point, line endings, comments, caps, stops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/err.h"
#include "http/sse.h"

/* Every event, serialized as name / data / raw / has_data, so runs compare as strings. */
struct record {
    struct tg_buf out;
    int n_events;
    int stop_after; /* return an error on this event number (1-based); 0 = never */
};

static int
on_event(const struct tg_sse_event *ev, void *arg)
{
    struct record *rec = arg;
    rec->n_events++;
    assert_int_equal(strlen(ev->data), ev->data_len);
    tg_buf_appendf(&rec->out, "[%s|", ev->event);
    tg_buf_append(&rec->out, ev->data, ev->data_len);
    tg_buf_append_str(&rec->out, "|");
    tg_buf_append(&rec->out, ev->raw, ev->raw_len);
    tg_buf_appendf(&rec->out, "|%d]", ev->has_data);
    if (rec->stop_after != 0 && rec->n_events == rec->stop_after) {
        return TG_ECANCELED;
    }
    return 0;
}

static void
record_init(struct record *rec)
{
    memset(rec, 0, sizeof(*rec));
    tg_buf_init(&rec->out, 0);
    tg_buf_append_str(&rec->out, "");
}

/* Feeds s in pieces cut at a and b (a <= b), returns the record (caller deinits). */
static void
feed_split(const char *s, size_t a, size_t b, struct record *rec, bool *partial)
{
    struct tg_sse_reader r;
    tg_sse_reader_init(&r, 4096);
    record_init(rec);
    size_t len = strlen(s);
    assert_int_equal(tg_sse_reader_feed(&r, s, a, on_event, rec), 0);
    assert_int_equal(tg_sse_reader_feed(&r, s + a, b - a, on_event, rec), 0);
    assert_int_equal(tg_sse_reader_feed(&r, s + b, len - b, on_event, rec), 0);
    *partial = tg_sse_reader_has_partial(&r);
    tg_sse_reader_deinit(&r);
}

/* Every pair of split points gives the same events as one whole feed. */
static void
check_all_splits(const char *s, const char *expect, bool expect_partial)
{
    size_t len = strlen(s);
    struct record whole;
    bool partial;
    feed_split(s, len, len, &whole, &partial);
    assert_string_equal(whole.out.data, expect);
    assert_true(partial == expect_partial);
    for (size_t a = 0; a <= len; a++) {
        for (size_t b = a; b <= len; b++) {
            struct record rec;
            feed_split(s, a, b, &rec, &partial);
            if (strcmp(rec.out.data, whole.out.data) != 0) {
                fail_msg("split %zu/%zu of %s gave %s", a, b, s, rec.out.data);
            }
            assert_true(partial == expect_partial);
            tg_buf_deinit(&rec.out);
        }
    }
    tg_buf_deinit(&whole.out);
}

static void
openai_stream_lf(void **state)
{
    check_all_splits("data: {\"a\":1}\n\ndata: [DONE]\n\n",
                     "[|{\"a\":1}|data: {\"a\":1}\n\n|1][|[DONE]|data: [DONE]\n\n|1]", false);
}

static void
crlf_and_cr_line_endings(void **state)
{
    check_all_splits("event: x\r\ndata: 1\r\n\r\ndata: 2\r\rdata: 3\n\n",
                     "[x|1|event: x\r\ndata: 1\r\n\r\n|1][|2|data: 2\r\r|1][|3|data: 3\n\n|1]",
                     false);
    /* mixed endings inside one event, and a CRLF split from its blank line */
    check_all_splits("data: a\rdata: b\ndata: c\r\n\n",
                     "[|a\nb\nc|data: a\rdata: b\ndata: c\r\n\n|1]", false);
}

static void
multi_line_data_and_fields(void **state)
{
    check_all_splits("event: response.created\ndata:  two spaces\ndata:nospace\nid: 7\n"
                     "retry: 10\nunknown: z\ndata\n\n",
                     "[response.created| two spaces\nnospace\n|event: response.created\n"
                     "data:  two spaces\ndata:nospace\nid: 7\nretry: 10\nunknown: z\ndata\n\n|1]",
                     false);
}

static void
comments_and_empty_blocks(void **state)
{
    /* a comment-only block is an event without data (a relay may forward it); extra blank
     * lines between events are no event at all */
    check_all_splits(": keep-alive\n\n\n\ndata: x\n\n", "[||: keep-alive\n\n|0][|x|data: x\n\n|1]",
                     false);
}

static void
partial_event_is_reported(void **state)
{
    check_all_splits("data: 1\n\ndata: cut", "[|1|data: 1\n\n|1]", true);
    check_all_splits("data: 1\n\ndata: cut\n", "[|1|data: 1\n\n|1]", true);
}

static void
cap_fails_with_toobig(void **state)
{
    struct tg_sse_reader r;
    struct record rec;
    record_init(&rec);
    tg_sse_reader_init(&r, 32);
    /* events under the cap pass, however many arrive in one feed */
    const char *small = "data: 0123456789\n\ndata: 0123456789\n\ndata: 0123456789\n\n";
    assert_int_equal(tg_sse_reader_feed(&r, small, strlen(small), on_event, &rec), 0);
    assert_int_equal(rec.n_events, 3);
    char big[64];
    memset(big, 'x', sizeof(big));
    memcpy(big, "data: ", 6);
    assert_int_equal(tg_sse_reader_feed(&r, big, 20, on_event, &rec), 0);
    assert_int_equal(tg_sse_reader_feed(&r, big + 20, 20, on_event, &rec), TG_ETOOBIG);
    assert_int_equal(rec.n_events, 3);
    tg_sse_reader_deinit(&r);
    tg_buf_deinit(&rec.out);
}

static void
callback_stop_code_is_returned(void **state)
{
    struct tg_sse_reader r;
    struct record rec;
    record_init(&rec);
    rec.stop_after = 2;
    tg_sse_reader_init(&r, 0);
    const char *s = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    assert_int_equal(tg_sse_reader_feed(&r, s, strlen(s), on_event, &rec), TG_ECANCELED);
    assert_int_equal(rec.n_events, 2);
    assert_string_equal(rec.out.data, "[|1|data: 1\n\n|1][|2|data: 2\n\n|1]");
    tg_sse_reader_deinit(&r);
    tg_buf_deinit(&rec.out);
}

/* A CR-terminated blank line at the very end of a feed waits for the next byte. */
static void
trailing_cr_waits_for_next_byte(void **state)
{
    struct tg_sse_reader r;
    struct record rec;
    record_init(&rec);
    tg_sse_reader_init(&r, 0);
    assert_int_equal(tg_sse_reader_feed(&r, "data: 1\r\r", 9, on_event, &rec), 0);
    assert_int_equal(rec.n_events, 0);
    assert_true(tg_sse_reader_has_partial(&r));
    assert_int_equal(tg_sse_reader_feed(&r, "data: 2\r\r", 9, on_event, &rec), 0);
    assert_int_equal(rec.n_events, 1);
    assert_string_equal(rec.out.data, "[|1|data: 1\r\r|1]");
    tg_sse_reader_deinit(&r);
    tg_buf_deinit(&rec.out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openai_stream_lf),
        cmocka_unit_test(crlf_and_cr_line_endings),
        cmocka_unit_test(multi_line_data_and_fields),
        cmocka_unit_test(comments_and_empty_blocks),
        cmocka_unit_test(partial_event_is_reported),
        cmocka_unit_test(cap_fails_with_toobig),
        cmocka_unit_test(callback_stop_code_is_returned),
        cmocka_unit_test(trailing_cr_waits_for_next_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
