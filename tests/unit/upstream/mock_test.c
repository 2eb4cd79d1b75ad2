/*
 * mock_test.c: the built-in mock provider, driven on a real libuv loop.
 *
 * Each test starts a call, runs the loop until on_done (with an iteration bound as the
 * failure guard) and checks the bytes as an OpenAI client would read them: whole JSON bodies,
 * SSE events (split on blank lines here, and checked once more through the relay's SSE reader),
 * usage, pacing times, back-pressure and cancellation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/err.h"
#include "http/sse.h"
#include "upstream/provider_int.h"

#define MAX_CHUNKS 512
#define LOOP_GUARD 100000

struct rec {
    uv_loop_t *loop;
    struct tg_provider_call *call;
    int n_headers;
    int status;
    char content_type[64];
    int n_data;
    struct tg_buf data;
    uint64_t chunk_ms[MAX_CHUNKS];
    uint64_t headers_ms;
    int n_done;
    int err;
    /* behaviour: 1-based on_data numbers, 0 = never */
    int pause_at;
    int cancel_ret_at;  /* return TG_ECANCELED */
    int cancel_call_at; /* call cancel from inside on_data */
};

static void
on_headers(int status, const struct tg_upstream_header *h, size_t n, void *arg)
{
    struct rec *r = arg;
    r->n_headers++;
    r->status = status;
    r->headers_ms = uv_now(r->loop);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(h[i].name, "content-type") == 0) {
            snprintf(r->content_type, sizeof(r->content_type), "%s", h[i].value);
        }
    }
}

static int
on_data(const char *data, size_t len, void *arg)
{
    struct rec *r = arg;
    assert_int_equal(r->n_done, 0);
    assert_int_equal(r->n_headers, 1);
    if (r->n_data < MAX_CHUNKS) {
        r->chunk_ms[r->n_data] = uv_now(r->loop);
    }
    r->n_data++;
    tg_buf_append(&r->data, data, len);
    if (r->n_data == r->cancel_call_at) {
        tg_provider_mock_ops.cancel(r->call);
    }
    if (r->n_data == r->cancel_ret_at) {
        return TG_ECANCELED;
    }
    return r->n_data == r->pause_at ? TG_EAGAIN : 0;
}

static void
on_done(int err, const char *message, void *arg)
{
    struct rec *r = arg;
    r->n_done++;
    r->err = err;
}

static const struct tg_upstream_callbacks cbs = {on_headers, on_data, on_done};

struct fixture {
    uv_loop_t loop;
    struct tg_provider p;
    struct rec r;
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    uv_loop_init(&f->loop);
    f->p.name = "mock";
    f->p.type = "mock";
    f->p.mock.completion_tokens = 16;
    f->p.ops = &tg_provider_mock_ops;
    f->r.loop = &f->loop;
    tg_buf_init(&f->r.data, 0);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    uv_run(&f->loop, UV_RUN_DEFAULT); /* let closing handles finish */
    int rc = uv_loop_close(&f->loop);
    tg_buf_deinit(&f->r.data);
    free(f);
    assert_int_equal(rc, 0); /* the call closed its timer */
    return 0;
}

static void
start(struct fixture *f, enum tg_api api, const char *body, bool is_stream)
{
    struct tg_provider_request req = {
        .api = api,
        .upstream_model = "mock-up",
        .body = body,
        .body_len = strlen(body),
        .is_stream = is_stream,
        .request_id = "req_test",
    };
    f->r.n_headers = 0; /* a test may run several calls on one fixture */
    f->r.n_data = 0;
    f->r.n_done = 0;
    f->r.status = 0;
    f->r.content_type[0] = '\0';
    tg_buf_reset(&f->r.data);
    uv_update_time(&f->loop);
    assert_int_equal(
        tg_provider_mock_ops.start(&f->p, NULL, &f->loop, &req, &cbs, &f->r, &f->r.call), 0);
    /* nothing fires from inside start */
    assert_int_equal(f->r.n_headers + f->r.n_data + f->r.n_done, 0);
}

/* Runs the loop until on_done fired, failing the test after LOOP_GUARD turns. */
static void
run_until_done(struct fixture *f)
{
    for (int i = 0; i < LOOP_GUARD && f->r.n_done == 0; i++) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_int_equal(f->r.n_done, 1);
}

static json_t *
run_json(struct fixture *f, enum tg_api api, const char *body)
{
    start(f, api, body, false);
    run_until_done(f);
    assert_int_equal(f->r.err, 0);
    assert_string_equal(f->r.content_type, "application/json");
    json_t *j = json_loadb(f->r.data.data, f->r.data.len, 0, NULL);
    assert_non_null(j);
    return j;
}

/* ---- a small SSE splitter -------------------------------------------------------------- */

struct event {
    char name[64];
    char *data; /* heap */
};

static size_t
split_events(const char *s, size_t len, struct event *out, size_t cap)
{
    size_t n = 0;
    const char *end = s + len;
    while (s < end) {
        const char *stop = strstr(s, "\n\n");
        assert_non_null(stop); /* every event ends with a blank line */
        assert_true(n < cap);
        struct event *e = &out[n++];
        e->name[0] = '\0';
        e->data = NULL;
        for (const char *line = s; line < stop;) {
            const char *nl = memchr(line, '\n', (size_t)(stop - line));
            const char *le = nl != NULL ? nl : stop;
            if (strncmp(line, "event: ", 7) == 0) {
                snprintf(e->name, sizeof(e->name), "%.*s", (int)(le - line - 7), line + 7);
            } else if (strncmp(line, "data: ", 6) == 0) {
                assert_null(e->data); /* OpenAI sends one data line per event */
                e->data = strndup(line + 6, (size_t)(le - line - 6));
            } else {
                fail_msg("unexpected SSE line: %.*s", (int)(le - line), line);
            }
            line = le + 1;
        }
        assert_non_null(e->data);
        s = stop + 2;
    }
    return n;
}

static void
free_events(struct event *ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ev[i].data);
    }
}

static int
count_words(const char *s)
{
    int n = 0;
    for (bool in_word = false; *s != '\0'; s++) {
        if (*s != ' ' && !in_word) {
            n++;
        }
        in_word = *s != ' ';
    }
    return n;
}

/* ---- chat ------------------------------------------------------------------------------- */

#define CHAT_BODY(extra)                                                                           \
    "{\"model\":\"mock-small\",\"messages\":[{\"role\":\"user\",\"content\":\"hello world, this "  \
    "is a prompt\"}]" extra "}"

static void
chat_nonstream_body_and_usage(void **state)
{
    struct fixture *f = *state;
    json_t *j = run_json(f, TG_API_CHAT, CHAT_BODY(""));
    assert_int_equal(f->r.status, 200);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "mock-up");
    assert_int_equal(strncmp(json_string_value(json_object_get(j, "id")), "chatcmpl-mock-", 14), 0);
    assert_true(json_is_integer(json_object_get(j, "created")));
    json_t *choices = json_object_get(j, "choices");
    assert_int_equal(json_array_size(choices), 1);
    json_t *c0 = json_array_get(choices, 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "stop");
    json_t *msg = json_object_get(c0, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "role")), "assistant");
    assert_int_equal(count_words(json_string_value(json_object_get(msg, "content"))), 16);

    struct tg_usage u = {0};
    assert_true(tg_usage_from_response(TG_API_CHAT, j, &u));
    assert_int_equal(u.prompt_tokens, 8); /* 29 bytes of text, ceil(29 / 4) */
    assert_int_equal(u.completion_tokens, 16);
    assert_int_equal(u.cached_tokens, 0);
    json_decref(j);
}

static void
chat_is_deterministic_for_a_prompt(void **state)
{
    struct fixture *f = *state;
    json_t *a = run_json(f, TG_API_CHAT, CHAT_BODY(""));
    json_t *b = run_json(f, TG_API_CHAT, CHAT_BODY(""));
    json_t *ca = json_object_get(
        json_object_get(json_array_get(json_object_get(a, "choices"), 0), "message"), "content");
    json_t *cb = json_object_get(
        json_object_get(json_array_get(json_object_get(b, "choices"), 0), "message"), "content");
    assert_string_equal(json_string_value(ca), json_string_value(cb));
    assert_string_not_equal(json_string_value(json_object_get(a, "id")),
                            json_string_value(json_object_get(b, "id")));
    json_decref(a);
    json_decref(b);
}

static void
max_tokens_caps_and_n_multiplies(void **state)
{
    struct fixture *f = *state;
    json_t *j = run_json(f, TG_API_CHAT,
                         CHAT_BODY(",\"n\":3,\"max_tokens\":9,\"max_completion_tokens\":5"));
    json_t *choices = json_object_get(j, "choices");
    assert_int_equal(json_array_size(choices), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *c = json_array_get(choices, i);
        assert_int_equal(json_integer_value(json_object_get(c, "index")), (json_int_t)i);
        assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "length");
        const char *text =
            json_string_value(json_object_get(json_object_get(c, "message"), "content"));
        assert_int_equal(count_words(text), 5); /* max_completion_tokens wins over max_tokens */
    }
    struct tg_usage u = {0};
    assert_true(tg_usage_from_response(TG_API_CHAT, j, &u));
    assert_int_equal(u.completion_tokens, 15);
    json_decref(j);
}

static void
max_tokens_above_the_setting_changes_nothing(void **state)
{
    struct fixture *f = *state;
    f->p.mock.completion_tokens = 4;
    json_t *j = run_json(f, TG_API_CHAT, CHAT_BODY(",\"max_tokens\":100"));
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "stop");
    assert_int_equal(
        count_words(json_string_value(json_object_get(json_object_get(c0, "message"), "content"))),
        4);
    json_decref(j);
}

/* Runs a chat stream and checks its framing. Returns the events (caller frees). */
static size_t
run_chat_stream(struct fixture *f, const char *body, struct event *ev, size_t cap)
{
    start(f, TG_API_CHAT, body, true);
    run_until_done(f);
    assert_int_equal(f->r.err, 0);
    assert_int_equal(f->r.status, 200);
    assert_string_equal(f->r.content_type, "text/event-stream; charset=utf-8");
    size_t n = split_events(f->r.data.data, f->r.data.len, ev, cap);
    assert_true(n >= 2);
    assert_string_equal(ev[n - 1].data, "[DONE]");
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(ev[i].name, ""); /* chat streams have no event: lines */
    }
    return n;
}

static void
chat_stream_without_include_usage(void **state)
{
    struct fixture *f = *state;
    f->p.mock.completion_tokens = 4;
    struct event ev[32];
    size_t n = run_chat_stream(f, CHAT_BODY(",\"stream\":true"), ev, 32);
    assert_int_equal(n, 1 + 4 + 1 + 1); /* role, tokens, finish, [DONE] */
    struct tg_buf text;
    tg_buf_init(&text, 0);
    for (size_t i = 0; i + 1 < n; i++) {
        json_t *j = json_loads(ev[i].data, 0, NULL);
        assert_non_null(j);
        assert_null(json_object_get(j, "usage")); /* no usage key at all */
        assert_string_equal(json_string_value(json_object_get(j, "object")),
                            "chat.completion.chunk");
        json_t *choices = json_object_get(j, "choices");
        assert_int_equal(json_array_size(choices), 1);
        json_t *c0 = json_array_get(choices, 0);
        json_t *delta = json_object_get(c0, "delta");
        if (i == 0) {
            assert_string_equal(json_string_value(json_object_get(delta, "role")), "assistant");
        } else if (i <= 4) {
            tg_buf_append_str(&text, json_string_value(json_object_get(delta, "content")));
            assert_true(json_is_null(json_object_get(c0, "finish_reason")));
        } else {
            assert_int_equal(json_object_size(delta), 0);
            assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "stop");
        }
        json_decref(j);
    }
    assert_int_equal(count_words(text.data), 4);
    tg_buf_deinit(&text);
    free_events(ev, n);
}

static void
chat_stream_with_include_usage(void **state)
{
    struct fixture *f = *state;
    f->p.mock.completion_tokens = 3;
    struct event ev[32];
    size_t n = run_chat_stream(
        f, CHAT_BODY(",\"stream\":true,\"stream_options\":{\"include_usage\":true}"), ev, 32);
    assert_int_equal(n, 1 + 3 + 1 + 1 + 1); /* role, tokens, finish, usage, [DONE] */
    for (size_t i = 0; i + 2 < n; i++) {
        json_t *j = json_loads(ev[i].data, 0, NULL);
        json_t *u = json_object_get(j, "usage");
        assert_non_null(u);
        assert_true(json_is_null(u)); /* "usage": null on every ordinary chunk */
        json_decref(j);
    }
    json_t *last = json_loads(ev[n - 2].data, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(last, "choices")), 0);
    struct tg_usage u = {0};
    assert_true(tg_usage_parse(TG_API_CHAT, json_object_get(last, "usage"), &u));
    assert_int_equal(u.prompt_tokens, 8);
    assert_int_equal(u.completion_tokens, 3);
    json_decref(last);
    free_events(ev, n);
}

static void
chat_stream_n_choices_and_max_tokens(void **state)
{
    struct fixture *f = *state;
    struct event ev[64];
    size_t n = run_chat_stream(f,
                               CHAT_BODY(",\"stream\":true,\"n\":2,\"max_completion_tokens\":2,"
                                         "\"stream_options\":{\"include_usage\":true}"),
                               ev, 64);
    int tokens[2] = {0, 0};
    int finishes[2] = {0, 0};
    for (size_t i = 0; i + 2 < n; i++) {
        json_t *j = json_loads(ev[i].data, 0, NULL);
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        json_int_t idx = json_integer_value(json_object_get(c0, "index"));
        assert_true(idx == 0 || idx == 1);
        if (json_is_string(json_object_get(json_object_get(c0, "delta"), "content")) &&
            json_string_length(json_object_get(json_object_get(c0, "delta"), "content")) > 0) {
            tokens[idx]++;
        }
        const char *fr = json_string_value(json_object_get(c0, "finish_reason"));
        if (fr != NULL) {
            assert_string_equal(fr, "length");
            finishes[idx]++;
        }
        json_decref(j);
    }
    assert_int_equal(tokens[0], 2);
    assert_int_equal(tokens[1], 2);
    assert_int_equal(finishes[0], 1);
    assert_int_equal(finishes[1], 1);
    json_t *last = json_loads(ev[n - 2].data, 0, NULL);
    struct tg_usage u = {0};
    assert_true(tg_usage_parse(TG_API_CHAT, json_object_get(last, "usage"), &u));
    assert_int_equal(u.completion_tokens, 4);
    json_decref(last);
    free_events(ev, n);
}

static void
stream_text_equals_nonstream_text(void **state)
{
    struct fixture *f = *state;
    json_t *j = run_json(f, TG_API_CHAT, CHAT_BODY(""));
    char *whole = strdup(json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content")));
    json_decref(j);
    struct event ev[32];
    size_t n = run_chat_stream(f, CHAT_BODY(",\"stream\":true"), ev, 32);
    struct tg_buf text;
    tg_buf_init(&text, 0);
    for (size_t i = 1; i + 2 < n; i++) {
        json_t *c = json_loads(ev[i].data, 0, NULL);
        tg_buf_append_str(
            &text, json_string_value(json_object_get(
                       json_object_get(json_array_get(json_object_get(c, "choices"), 0), "delta"),
                       "content")));
        json_decref(c);
    }
    assert_string_equal(text.data, whole);
    tg_buf_deinit(&text);
    free(whole);
    free_events(ev, n);
}

/* ---- pacing, back-pressure, cancellation ------------------------------------------------ */

static void
latency_and_pacing(void **state)
{
    struct fixture *f = *state;
    f->p.mock.completion_tokens = 4;
    f->p.mock.latency_ms = 20;
    f->p.mock.tokens_per_sec = 200; /* one token every 5 ms */
    uv_update_time(&f->loop);
    uint64_t t0 = uv_now(&f->loop);
    struct event ev[16];
    size_t n = run_chat_stream(f, CHAT_BODY(",\"stream\":true"), ev, 16);
    assert_int_equal(n, 7);
    assert_true(f->r.headers_ms >= t0 + 20);
    assert_int_equal(f->r.n_data, 7); /* one on_data per event */
    assert_true(f->r.chunk_ms[0] >= f->r.headers_ms);
    for (int j = 0; j < 4; j++) {
        /* content chunk j is on_data 1 + j, due 5 ms after the one before */
        assert_true(f->r.chunk_ms[1 + j] >= f->r.headers_ms + 5 * (uint64_t)j);
        assert_true(f->r.chunk_ms[1 + j] >= f->r.chunk_ms[j]);
    }
    assert_true(f->r.chunk_ms[4] - f->r.chunk_ms[1] >= 15);
    free_events(ev, n);
}

static void
pause_until_resume(void **state)
{
    struct fixture *f = *state;
    f->p.mock.completion_tokens = 6;
    f->r.pause_at = 2;
    start(f, TG_API_CHAT, CHAT_BODY(",\"stream\":true"), true);
    for (int i = 0; i < LOOP_GUARD && f->r.n_data < 2; i++) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_int_equal(f->r.n_data, 2);
    /* paused: the loop has nothing to do and nothing more arrives */
    for (int i = 0; i < 50; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(f->r.n_data, 2);
    assert_int_equal(f->r.n_done, 0);
    tg_provider_mock_ops.resume(f->r.call);
    assert_int_equal(f->r.n_data, 2);       /* nothing from inside resume */
    tg_provider_mock_ops.resume(f->r.call); /* harmless when not paused */
    run_until_done(f);
    assert_int_equal(f->r.err, 0);
    assert_int_equal(f->r.n_data, 1 + 6 + 1 + 1);
    struct event ev[16];
    size_t n = split_events(f->r.data.data, f->r.data.len, ev, 16);
    assert_int_equal(n, 9);
    assert_string_equal(ev[8].data, "[DONE]");
    free_events(ev, n);
}

static void
cancel_before_first_byte(void **state)
{
    struct fixture *f = *state;
    f->p.mock.latency_ms = 10000;
    start(f, TG_API_CHAT, CHAT_BODY(""), false);
    tg_provider_mock_ops.cancel(f->r.call);
    assert_int_equal(f->r.n_done, 0); /* nothing from inside cancel */
    tg_provider_mock_ops.cancel(f->r.call);
    run_until_done(f);
    assert_int_equal(f->r.err, TG_ECANCELED);
    assert_int_equal(f->r.n_data, 0);
    for (int i = 0; i < 10; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(f->r.n_done, 1);
}

static void
cancel_from_inside_on_data(void **state)
{
    struct fixture *f = *state;
    f->r.cancel_call_at = 3;
    start(f, TG_API_CHAT, CHAT_BODY(""), true);
    run_until_done(f);
    assert_int_equal(f->r.err, TG_ECANCELED);
    assert_int_equal(f->r.n_data, 3);
    for (int i = 0; i < 10; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(f->r.n_done, 1);
}

static void
on_data_canceled_stops_the_stream(void **state)
{
    struct fixture *f = *state;
    f->r.cancel_ret_at = 2;
    start(f, TG_API_CHAT, CHAT_BODY(""), true);
    run_until_done(f);
    assert_int_equal(f->r.err, TG_ECANCELED);
    assert_int_equal(f->r.n_data, 2);
}

static void
cancel_while_paused(void **state)
{
    struct fixture *f = *state;
    f->r.pause_at = 1;
    start(f, TG_API_CHAT, CHAT_BODY(""), true);
    for (int i = 0; i < LOOP_GUARD && f->r.n_data < 1; i++) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    tg_provider_mock_ops.cancel(f->r.call);
    run_until_done(f);
    assert_int_equal(f->r.err, TG_ECANCELED);
    assert_int_equal(f->r.n_data, 1);
}

/* ---- other endpoints ------------------------------------------------------------------- */

static void
completions_body_and_stream(void **state)
{
    struct fixture *f = *state;
    f->p.mock.completion_tokens = 3;
    json_t *j = run_json(f, TG_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"abcdefgh\"}");
    assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_equal(count_words(json_string_value(json_object_get(c0, "text"))), 3);
    struct tg_usage u = {0};
    assert_true(tg_usage_from_response(TG_API_COMPLETIONS, j, &u));
    assert_int_equal(u.prompt_tokens, 2);
    assert_int_equal(u.completion_tokens, 3);
    json_decref(j);

    start(f, TG_API_COMPLETIONS,
          "{\"model\":\"m\",\"prompt\":\"abcdefgh\",\"stream\":true,"
          "\"stream_options\":{\"include_usage\":true}}",
          true);
    run_until_done(f);
    struct event ev[16];
    size_t n = split_events(f->r.data.data, f->r.data.len, ev, 16);
    assert_int_equal(n, 3 + 1 + 1 + 1); /* tokens, finish, usage, [DONE] */
    for (size_t i = 0; i < 4; i++) {
        json_t *c = json_loads(ev[i].data, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(c, "object")), "text_completion");
        assert_true(json_is_string(
            json_object_get(json_array_get(json_object_get(c, "choices"), 0), "text")));
        json_decref(c);
    }
    json_t *usage_chunk = json_loads(ev[4].data, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(usage_chunk, "choices")), 0);
    assert_true(tg_usage_parse(TG_API_COMPLETIONS, json_object_get(usage_chunk, "usage"), &u));
    assert_int_equal(u.completion_tokens, 3);
    json_decref(usage_chunk);
    assert_string_equal(ev[5].data, "[DONE]");
    free_events(ev, n);
}

static void
responses_body(void **state)
{
    struct fixture *f = *state;
    json_t *j = run_json(f, TG_API_RESPONSES,
                         "{\"model\":\"m\",\"instructions\":\"be brief\",\"input\":[{\"role\":"
                         "\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"hi\"}]}],"
                         "\"max_output_tokens\":6}");
    assert_string_equal(json_string_value(json_object_get(j, "object")), "response");
    assert_string_equal(json_string_value(json_object_get(j, "status")), "incomplete");
    json_t *item = json_array_get(json_object_get(j, "output"), 0);
    assert_string_equal(json_string_value(json_object_get(item, "type")), "message");
    json_t *part = json_array_get(json_object_get(item, "content"), 0);
    assert_string_equal(json_string_value(json_object_get(part, "type")), "output_text");
    assert_int_equal(count_words(json_string_value(json_object_get(part, "text"))), 6);
    struct tg_usage u = {0};
    assert_true(tg_usage_from_response(TG_API_RESPONSES, j, &u));
    assert_int_equal(u.prompt_tokens, 3); /* "be brief" + "hi": 10 bytes */
    assert_int_equal(u.completion_tokens, 6);
    json_decref(j);
}

static void
responses_stream_events(void **state)
{
    struct fixture *f = *state;
    f->p.mock.completion_tokens = 5;
    start(f, TG_API_RESPONSES, "{\"model\":\"m\",\"input\":\"hello there\",\"stream\":true}", true);
    run_until_done(f);
    assert_int_equal(f->r.err, 0);
    assert_string_equal(f->r.content_type, "text/event-stream; charset=utf-8");
    struct event ev[32];
    size_t n = split_events(f->r.data.data, f->r.data.len, ev, 32);
    assert_int_equal(n, 4 + 5 + 4);
    assert_string_equal(ev[0].name, "response.created");
    assert_string_equal(ev[1].name, "response.in_progress");
    assert_string_equal(ev[n - 1].name, "response.completed");
    struct tg_buf text;
    tg_buf_init(&text, 0);
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(ev[i].data, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "type")), ev[i].name);
        assert_int_equal(json_integer_value(json_object_get(j, "sequence_number")), (json_int_t)i);
        if (strcmp(ev[i].name, "response.output_text.delta") == 0) {
            tg_buf_append_str(&text, json_string_value(json_object_get(j, "delta")));
        } else if (strcmp(ev[i].name, "response.output_text.done") == 0) {
            assert_string_equal(json_string_value(json_object_get(j, "text")), text.data);
        } else if (i == n - 1) {
            json_t *resp = json_object_get(j, "response");
            assert_string_equal(json_string_value(json_object_get(resp, "status")), "completed");
            struct tg_usage u = {0};
            assert_true(tg_usage_parse(TG_API_RESPONSES, json_object_get(resp, "usage"), &u));
            assert_int_equal(u.prompt_tokens, 3);
            assert_int_equal(u.completion_tokens, 5);
        } else if (i == 0) {
            json_t *resp = json_object_get(j, "response");
            assert_true(json_is_null(json_object_get(resp, "usage")));
            assert_string_equal(json_string_value(json_object_get(resp, "status")), "in_progress");
        }
        json_decref(j);
    }
    assert_int_equal(count_words(text.data), 5);
    assert_null(strstr(f->r.data.data, "[DONE]"));
    tg_buf_deinit(&text);
    free_events(ev, n);
}

/* Standard base64 decoder for the test's own check. Returns the decoded length. */
static size_t
b64_decode(const char *s, unsigned char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *s != '\0' && *s != '='; s++) {
        const char *p = strchr(alphabet, *s);
        assert_non_null(p);
        acc = (acc << 6) | (uint32_t)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

static json_t *
embeddings(struct fixture *f, const char *body)
{
    return run_json(f, TG_API_EMBEDDINGS, body);
}

static void
embeddings_float_and_base64_agree(void **state)
{
    struct fixture *f = *state;
    json_t *fl = embeddings(f, "{\"model\":\"e\",\"input\":[\"alpha\",\"beta\",[1,2,3]]}");
    json_t *b64 = embeddings(
        f,
        "{\"model\":\"e\",\"input\":[\"alpha\",\"beta\",[1,2,3]],\"encoding_format\":\"base64\"}");
    assert_string_equal(json_string_value(json_object_get(fl, "object")), "list");
    json_t *fd = json_object_get(fl, "data");
    json_t *bd = json_object_get(b64, "data");
    assert_int_equal(json_array_size(fd), 3);
    assert_int_equal(json_array_size(bd), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *fv = json_object_get(json_array_get(fd, i), "embedding");
        const char *bs = json_string_value(json_object_get(json_array_get(bd, i), "embedding"));
        assert_int_equal(json_array_size(fv), 8);
        assert_non_null(bs);
        unsigned char raw[64];
        assert_int_equal(b64_decode(bs, raw), 8 * 4);
        for (size_t d = 0; d < 8; d++) {
            uint32_t u = (uint32_t)raw[d * 4] | (uint32_t)raw[d * 4 + 1] << 8 |
                         (uint32_t)raw[d * 4 + 2] << 16 | (uint32_t)raw[d * 4 + 3] << 24;
            float x;
            memcpy(&x, &u, 4);
            double fx = json_real_value(json_array_get(fv, d));
            assert_true((float)fx == x); /* exactly the same number */
            assert_true(x >= -1.0f && x < 1.0f);
        }
    }
    /* different inputs give different vectors */
    assert_false(json_equal(json_object_get(json_array_get(fd, 0), "embedding"),
                            json_object_get(json_array_get(fd, 1), "embedding")));
    struct tg_usage u = {0};
    assert_true(tg_usage_from_response(TG_API_EMBEDDINGS, fl, &u));
    assert_int_equal(u.prompt_tokens, 6); /* 9 bytes of text + 3 token ids (12 bytes) -> 21/4 */
    assert_int_equal(u.completion_tokens, 0);
    json_decref(fl);
    json_decref(b64);

    json_t *one = embeddings(f, "{\"model\":\"e\",\"input\":\"alpha\",\"dimensions\":3}");
    json_t *v = json_object_get(json_array_get(json_object_get(one, "data"), 0), "embedding");
    assert_int_equal(json_array_size(v), 3);
    json_decref(one);
}

static void
moderations_shape(void **state)
{
    struct fixture *f = *state;
    json_t *j = run_json(f, TG_API_MODERATIONS, "{\"input\":[\"a\",\"b\"]}");
    assert_int_equal(strncmp(json_string_value(json_object_get(j, "id")), "modr-", 5), 0);
    json_t *results = json_object_get(j, "results");
    assert_int_equal(json_array_size(results), 2);
    json_t *r0 = json_array_get(results, 0);
    assert_true(json_is_false(json_object_get(r0, "flagged")));
    json_t *cats = json_object_get(r0, "categories");
    assert_int_equal(json_object_size(cats), 13);
    assert_true(json_is_false(json_object_get(cats, "violence")));
    assert_true(json_is_real(json_object_get(json_object_get(r0, "category_scores"), "hate")));
    assert_null(json_object_get(j, "usage"));
    struct tg_usage u = {0};
    assert_false(tg_usage_from_response(TG_API_MODERATIONS, j, &u));
    json_decref(j);
}

static void
bad_bodies_get_a_400_error(void **state)
{
    static const struct {
        enum tg_api api;
        const char *body;
        const char *param;
    } cases[] = {
        {TG_API_CHAT, "not json", NULL},
        {TG_API_CHAT, "[1,2]", NULL},
        {TG_API_CHAT, "{\"model\":\"m\"}", "messages"},
        {TG_API_CHAT, "{\"model\":\"m\",\"messages\":[],\"n\":0}", "n"},
        {TG_API_EMBEDDINGS, "{\"model\":\"m\",\"input\":[]}", "input"},
        {TG_API_EMBEDDINGS, "{\"model\":\"m\",\"input\":\"x\",\"encoding_format\":\"hex\"}",
         "encoding_format"},
        {TG_API_MODERATIONS, "{\"input\":7}", "input"},
    };
    struct fixture *f = *state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        start(f, cases[i].api, cases[i].body, true); /* a refused stream answers JSON */
        run_until_done(f);
        assert_int_equal(f->r.err, 0);
        assert_int_equal(f->r.status, 400);
        assert_string_equal(f->r.content_type, "application/json");
        json_t *j = json_loadb(f->r.data.data, f->r.data.len, 0, NULL);
        json_t *e = json_object_get(j, "error");
        assert_non_null(e);
        assert_string_equal(json_string_value(json_object_get(e, "type")), "invalid_request_error");
        assert_true(json_is_string(json_object_get(e, "message")));
        if (cases[i].param == NULL) {
            assert_true(json_is_null(json_object_get(e, "param")));
        } else {
            assert_string_equal(json_string_value(json_object_get(e, "param")), cases[i].param);
        }
        assert_true(json_is_null(json_object_get(e, "code")));
        json_decref(j);
    }
}

struct sse_check {
    struct event *want;
    size_t n_want;
    size_t n_got;
};

static int
check_event(const struct tg_sse_event *ev, void *arg)
{
    struct sse_check *k = arg;
    assert_true(k->n_got < k->n_want);
    const struct event *w = &k->want[k->n_got++];
    assert_true(ev->has_data);
    assert_string_equal(ev->event, w->name);
    assert_string_equal(ev->data, w->data);
    return 0;
}

/* The relay's own SSE reader, fed in 7-byte pieces, sees the events the splitter saw. */
static void
streams_read_the_same_through_the_sse_reader(void **state)
{
    struct fixture *f = *state;
    static const struct {
        enum tg_api api;
        const char *body;
    } cases[] = {
        {TG_API_CHAT,
         CHAT_BODY(",\"stream\":true,\"n\":2,\"stream_options\":{\"include_usage\":true}")},
        {TG_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"p\",\"stream\":true}"},
        {TG_API_RESPONSES, "{\"model\":\"m\",\"input\":\"p\",\"stream\":true}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        start(f, cases[i].api, cases[i].body, true);
        run_until_done(f);
        struct event ev[64];
        size_t n = split_events(f->r.data.data, f->r.data.len, ev, 64);
        struct sse_check k = {ev, n, 0};
        struct tg_sse_reader rd;
        tg_sse_reader_init(&rd, 1 << 20);
        for (size_t off = 0; off < f->r.data.len; off += 7) {
            size_t len = f->r.data.len - off < 7 ? f->r.data.len - off : 7;
            assert_int_equal(tg_sse_reader_feed(&rd, f->r.data.data + off, len, check_event, &k),
                             0);
        }
        assert_false(tg_sse_reader_has_partial(&rd));
        assert_int_equal(k.n_got, n);
        tg_sse_reader_deinit(&rd);
        free_events(ev, n);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(chat_nonstream_body_and_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(chat_is_deterministic_for_a_prompt, setup, teardown),
        cmocka_unit_test_setup_teardown(max_tokens_caps_and_n_multiplies, setup, teardown),
        cmocka_unit_test_setup_teardown(max_tokens_above_the_setting_changes_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(chat_stream_without_include_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(chat_stream_with_include_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(chat_stream_n_choices_and_max_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_text_equals_nonstream_text, setup, teardown),
        cmocka_unit_test_setup_teardown(latency_and_pacing, setup, teardown),
        cmocka_unit_test_setup_teardown(pause_until_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_before_first_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_from_inside_on_data, setup, teardown),
        cmocka_unit_test_setup_teardown(on_data_canceled_stops_the_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_while_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(completions_body_and_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(responses_body, setup, teardown),
        cmocka_unit_test_setup_teardown(responses_stream_events, setup, teardown),
        cmocka_unit_test_setup_teardown(embeddings_float_and_base64_agree, setup, teardown),
        cmocka_unit_test_setup_teardown(moderations_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_bodies_get_a_400_error, setup, teardown),
        cmocka_unit_test_setup_teardown(streams_read_the_same_through_the_sse_reader, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
