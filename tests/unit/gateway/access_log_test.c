/*
 * access_log_test.c: the access log's line (every member, RFC 3339 time, nulls, escaping of
 * control characters and bytes that are not UTF-8, no key, bodies only when handed over and
 * cut at the cap) and its writer (every pushed line is written or counted as dropped, the
 * queue drained at stop, the file reopened after a rotation).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gateway/access_log.h"

static struct tg_ledger_row
row(void)
{
    struct tg_ledger_row r;
    memset(&r, 0, sizeof(r));
    snprintf(r.request_id, sizeof(r.request_id), "req_1");
    snprintf(r.org_id, sizeof(r.org_id), "org_1");
    snprintf(r.project_id, sizeof(r.project_id), "proj_1");
    snprintf(r.key_id, sizeof(r.key_id), "key_1");
    snprintf(r.endpoint, sizeof(r.endpoint), "chat.completions");
    snprintf(r.model_requested, sizeof(r.model_requested), "gpt-4o-mini");
    snprintf(r.provider, sizeof(r.provider), "up");
    snprintf(r.deployment, sizeof(r.deployment), "gpt-4o-mini-2024");
    r.time_ms = 1764450245123; /* 2025-11-29T21:04:05.123Z */
    r.prompt_tokens = 11;
    r.cached_tokens = 2;
    r.completion_tokens = 7;
    r.reasoning_tokens = 0;
    r.cost_micros = 123;
    r.status = 200;
    r.latency_ms = 40;
    r.ttft_ms = -1;
    r.is_stream = true;
    return r;
}

/* The line for o, parsed (it must be one JSON object ending in exactly one newline). */
static json_t *
line_of(const struct tg_observation *o, char **text)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_access_log_format(&b, o), 0);
    assert_true(b.len > 2);
    assert_int_equal(b.data[b.len - 1], '\n');
    assert_null(memchr(b.data, '\n', b.len - 1));
    json_error_t e;
    json_t *j = json_loadb(b.data, b.len, 0, &e);
    assert_non_null(j);
    tg_buf_append(&b, "", 1);
    *text = tg_buf_steal(&b, NULL);
    return j;
}

static void
test_line(void **state)
{
    (void)state;
    struct tg_ledger_row r = row();
    struct tg_observation o = {.row = &r, .upstream_ms = 31, .finish_reason = "stop"};
    char *text;
    json_t *j = line_of(&o, &text);
    assert_string_equal(json_string_value(json_object_get(j, "time")), "2025-11-29T21:04:05.123Z");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "req_1");
    assert_string_equal(json_string_value(json_object_get(j, "key_id")), "key_1");
    assert_string_equal(json_string_value(json_object_get(j, "org_id")), "org_1");
    assert_string_equal(json_string_value(json_object_get(j, "project_id")), "proj_1");
    assert_true(json_is_null(json_object_get(j, "user_id")));
    assert_string_equal(json_string_value(json_object_get(j, "endpoint")), "chat.completions");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "gpt-4o-mini");
    assert_string_equal(json_string_value(json_object_get(j, "provider")), "up");
    assert_string_equal(json_string_value(json_object_get(j, "deployment")), "gpt-4o-mini-2024");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_true(json_is_true(json_object_get(j, "stream")));
    assert_int_equal(json_integer_value(json_object_get(j, "prompt_tokens")), 11);
    assert_int_equal(json_integer_value(json_object_get(j, "cached_tokens")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "completion_tokens")), 7);
    assert_int_equal(json_integer_value(json_object_get(j, "reasoning_tokens")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "cost_micros")), 123);
    assert_int_equal(json_integer_value(json_object_get(j, "latency_ms")), 40);
    assert_true(json_is_null(json_object_get(j, "ttft_ms")));
    assert_int_equal(json_integer_value(json_object_get(j, "upstream_ms")), 31);
    assert_true(json_is_null(json_object_get(j, "cache")));
    assert_true(json_is_null(json_object_get(j, "error")));
    assert_true(json_is_false(json_object_get(j, "usage_estimated")));
    assert_string_equal(json_string_value(json_object_get(j, "finish_reason")), "stop");
    /* No bodies unless handed over. */
    assert_null(json_object_get(j, "request_body"));
    assert_null(json_object_get(j, "response_body"));
    assert_int_equal(json_object_size(j), 24);
    json_decref(j);
    free(text);

    /* A cache hit reads "hit"; no finish reason is null. */
    snprintf(r.provider, sizeof(r.provider), "cache");
    o.finish_reason = NULL;
    j = line_of(&o, &text);
    assert_string_equal(json_string_value(json_object_get(j, "cache")), "hit");
    assert_true(json_is_null(json_object_get(j, "finish_reason")));
    json_decref(j);
    free(text);
}

/* Client-chosen text (the model name) with quotes, control characters and broken UTF-8 stays
 * one valid JSON line; valid UTF-8 is kept as it is. */
static void
test_escaping(void **state)
{
    (void)state;
    struct tg_ledger_row r = row();
    snprintf(r.model_requested, sizeof(r.model_requested), "a\"b\\c\nd\x01\xff\xc3\xa9\x7f");
    snprintf(r.error, sizeof(r.error), "upstream said \"no\"\r\n");
    struct tg_observation o = {.row = &r, .upstream_ms = -1};
    char *text;
    json_t *j = line_of(&o, &text);
    assert_string_equal(json_string_value(json_object_get(j, "model")),
                        "a\"b\\c\nd\x01\xef\xbf\xbd\xc3\xa9\x7f");
    assert_non_null(strstr(text, "\"a\\\"b\\\\c\\nd\\u0001\\ufffd\xc3\xa9\\u007f\""));
    assert_string_equal(json_string_value(json_object_get(j, "error")), "upstream said \"no\"\r\n");
    assert_true(json_is_null(json_object_get(j, "upstream_ms")));
    json_decref(j);
    free(text);
}

/* The key id is logged, the key never: the observation does not even carry it, and the
 * request body (which could) is written only when handed over. */
static void
test_bodies(void **state)
{
    (void)state;
    struct tg_ledger_row r = row();
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"secret prompt\"}]}";
    const char *resp = "data: {\"x\":1}\n\ndata: [DONE]\n\n";
    struct tg_observation o = {.row = &r, .upstream_ms = 5};
    char *text;
    json_t *j = line_of(&o, &text);
    assert_null(strstr(text, "secret prompt"));
    json_decref(j);
    free(text);

    o.request_body = req;
    o.request_len = strlen(req);
    o.response_body = resp;
    o.response_len = strlen(resp);
    j = line_of(&o, &text);
    assert_string_equal(json_string_value(json_object_get(j, "request_body")), req);
    assert_string_equal(json_string_value(json_object_get(j, "response_body")), resp);
    assert_null(json_object_get(j, "request_body_truncated"));
    json_decref(j);
    free(text);

    /* Past the cap a body is cut and says so. */
    size_t big = TG_ACCESS_LOG_MAX_BODY_BYTES + 10;
    char *huge = malloc(big);
    memset(huge, 'x', big);
    o.request_body = huge;
    o.request_len = big;
    j = line_of(&o, &text);
    assert_int_equal(json_string_length(json_object_get(j, "request_body")),
                     TG_ACCESS_LOG_MAX_BODY_BYTES);
    assert_true(json_is_true(json_object_get(j, "request_body_truncated")));
    assert_null(json_object_get(j, "response_body_truncated"));
    json_decref(j);
    free(text);
    free(huge);
}

/* Every pushed line is written or counted as dropped; stop drains the queue; a push after
 * stop is a no-op. */
static void
test_writer(void **state)
{
    (void)state;
    char path[] = "/tmp/tg-access-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(tg_access_log_start(path, 16), 0);
    struct tg_ledger_row r = row();
    const char *req = "{\"prompt\":\"hello\"}";
    const int n = 500;
    for (int i = 0; i < n; i++) {
        snprintf(r.request_id, sizeof(r.request_id), "req_%d", i);
        struct tg_observation o = {.row = &r, .upstream_ms = 1};
        if (i % 2 == 0) {
            o.request_body = req;
            o.request_len = strlen(req);
        }
        tg_access_log_push(&o);
    }
    tg_access_log_stop();
    struct tg_observation o = {.row = &r, .upstream_ms = 1};
    tg_access_log_push(&o); /* off again: neither written nor counted */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    int lines = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "key_id")), "key_1");
        json_decref(j);
        lines++;
    }
    fclose(f);
    unlink(path);
    assert_true(lines > 0);
    assert_int_equal((uint64_t)lines + tg_access_log_dropped(), (uint64_t)n);
}

static int
count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    int n = 0;
    for (int c; (c = fgetc(f)) != EOF;) {
        n += c == '\n';
    }
    fclose(f);
    return n;
}

/* Rotation: once the file was renamed and the log reopened, the next lines go to a new file
 * at the path; the renamed one keeps what was written before. */
static void
test_reopen(void **state)
{
    (void)state;
    char dir[] = "/tmp/tg-access-rot-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], old[140];
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(old, sizeof(old), "%s.1", path);
    assert_int_equal(tg_access_log_start(path, 16), 0);
    struct tg_ledger_row r = row();
    struct tg_observation o = {.row = &r, .upstream_ms = 1};
    tg_access_log_push(&o);
    /* Bounded wait for the writer (a thread) to write the first line. */
    for (int i = 0; i < 5000 && count_lines(path) < 1; i++) {
        usleep(1000);
    }
    assert_int_equal(count_lines(path), 1);
    assert_int_equal(rename(path, old), 0);
    tg_access_log_reopen();
    snprintf(r.request_id, sizeof(r.request_id), "req_after");
    tg_access_log_push(&o);
    tg_access_log_stop();
    assert_int_equal(count_lines(old), 1);
    assert_int_equal(count_lines(path), 1);
    FILE *f = fopen(path, "r");
    char line[4096];
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_non_null(strstr(line, "\"request_id\":\"req_after\""));
    unlink(path);
    unlink(old);
    rmdir(dir);
}

static void
test_open_fails(void **state)
{
    (void)state;
    assert_true(tg_access_log_start("/nonexistent-dir/for/sure/access.log", 16) < 0);
    tg_access_log_stop(); /* never started: a no-op */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line),   cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_bodies), cmocka_unit_test(test_writer),
        cmocka_unit_test(test_reopen), cmocka_unit_test(test_open_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
