/*
 * quality_test.c: quality signals read from answer texts (monitor/quality.h): chat answers
 * and stream deltas, completions, Responses outputs; finish reasons, empty answers (no text,
 * no tool call), refusals; arrays with nested strings and brackets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "monitor/quality.h"

struct q {
    char finish[24];
    bool is_empty;
    bool is_refusal;
};

/* The signals of one answer body: its "choices", or its Responses members. */
static struct q
scan(const char *body)
{
    static const char *const names[4] = {"choices", "output", "status", "incomplete_details"};
    struct tg_json_span v[4];
    struct q q = {.is_empty = true};
    assert_true(tg_json_members(body, strlen(body), names, 4, v) >= 0);
    if (v[0].p != NULL) {
        tg_quality_choices(v[0], q.finish, sizeof(q.finish), &q.is_empty, &q.is_refusal);
    } else {
        tg_quality_responses(v[1], v[2], v[3], q.finish, sizeof(q.finish), &q.is_empty,
                             &q.is_refusal);
    }
    return q;
}

static void
chat_answers(void **state)
{
    (void)state;
    struct q q = scan("{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
                      "\"a [tricky] {text} \\\"quoted\\\"\",\"refusal\":null},\"finish_reason\":"
                      "\"length\"},{\"index\":1,\"finish_reason\":\"stop\"}]}");
    assert_string_equal(q.finish, "length"); /* the first choice's */
    assert_false(q.is_empty);
    assert_false(q.is_refusal);

    q = scan("{\"choices\":[{\"message\":{\"content\":\"\"},\"finish_reason\":\"stop\"}]}");
    assert_true(q.is_empty);
    q = scan("{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[{\"id\":\"c\"}]},"
             "\"finish_reason\":\"tool_calls\"}]}");
    assert_false(q.is_empty);
    assert_string_equal(q.finish, "tool_calls");
    q = scan("{\"choices\":[{\"message\":{\"content\":null,\"refusal\":\"I can't help.\"},"
             "\"finish_reason\":\"stop\"}]}");
    assert_true(q.is_refusal);
    assert_false(q.is_empty); /* a refusal is not an empty answer */
    /* completions */
    q = scan("{\"choices\":[{\"text\":\"hi\",\"finish_reason\":\"length\"}]}");
    assert_false(q.is_empty);
    assert_string_equal(q.finish, "length");
    q = scan("{\"choices\":[]}");
    assert_string_equal(q.finish, "");
}

static void
stream_deltas_accumulate(void **state)
{
    (void)state;
    const char *chunks[] = {
        "{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}"
        "]}",
        "{\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}",
        "{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}",
        "{\"choices\":[],\"usage\":{\"total_tokens\":3}}",
    };
    char finish[24] = "";
    bool is_empty = true, is_refusal = false;
    static const char *const names[1] = {"choices"};
    for (size_t i = 0; i < 4; i++) {
        struct tg_json_span v;
        assert_true(tg_json_members(chunks[i], strlen(chunks[i]), names, 1, &v) >= 0);
        tg_quality_choices(v, finish, sizeof(finish), &is_empty, &is_refusal);
        assert_true(i < 1 ? is_empty : !is_empty);
    }
    assert_string_equal(finish, "stop");
    assert_false(is_refusal);
}

static void
responses_outputs(void **state)
{
    (void)state;
    struct q q =
        scan("{\"status\":\"completed\",\"output\":[{\"type\":\"reasoning\",\"summary\":[]},"
             "{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"ok\"}]}]}");
    assert_string_equal(q.finish, "stop");
    assert_false(q.is_empty);
    q = scan("{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},"
             "\"output\":[{\"type\":\"reasoning\"}]}");
    assert_string_equal(q.finish, "length");
    assert_true(q.is_empty);
    q = scan("{\"status\":\"completed\",\"output\":[{\"type\":\"message\",\"content\":[{\"type\":"
             "\"refusal\",\"refusal\":\"no\"}]}]}");
    assert_true(q.is_refusal);
    assert_false(q.is_empty);
    q = scan("{\"status\":\"completed\",\"output\":[{\"type\":\"function_call\",\"name\":\"f\"}]}");
    assert_false(q.is_empty);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chat_answers),
        cmocka_unit_test(stream_deltas_accumulate),
        cmocka_unit_test(responses_outputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
