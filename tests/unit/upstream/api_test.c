/* api_test.c: endpoint paths and names, and usage parsing for every endpoint's shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "upstream/api.h"

/* Parses usage JSON text for api; the JSON must be valid (a test bug otherwise). */
static bool
parse(enum tg_api api, const char *usage_json, struct tg_usage *out)
{
    json_error_t e;
    json_t *u = json_loads(usage_json, JSON_DECODE_ANY, &e);
    assert_non_null(u);
    bool ok = tg_usage_parse(api, u, out);
    json_decref(u);
    return ok;
}

static void
paths_names_and_from_path_agree(void **state)
{
    static const char *const names[TG_API_COUNT] = {"chat.completions", "completions", "embeddings",
                                                    "responses", "moderations"};
    for (int i = 0; i < TG_API_COUNT; i++) {
        char full[64];
        snprintf(full, sizeof(full), "/v1%s", tg_api_path((enum tg_api)i));
        enum tg_api got = TG_API_COUNT;
        assert_true(tg_api_from_path(full, &got));
        assert_int_equal(got, i);
        assert_string_equal(tg_api_name((enum tg_api)i), names[i]);
    }
    assert_string_equal(tg_api_path(TG_API_CHAT), "/chat/completions");
    assert_string_equal(tg_api_path(TG_API_RESPONSES), "/responses");
}

static void
from_path_rejects_everything_else(void **state)
{
    static const char *const bad[] = {
        "/v1/chat/completions/",
        "/v1/chat",
        "/chat/completions",
        "/v2/embeddings",
        "/v1/models",
        "/v1/responses/x",
        "/v1/",
        "",
        "/v1/chat/completionsXX",
        "/V1/embeddings",
        "/v1//embeddings",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum tg_api got = TG_API_COUNT;
        assert_false(tg_api_from_path(bad[i], &got));
        assert_int_equal(got, TG_API_COUNT); /* untouched */
    }
    enum tg_api got = TG_API_COUNT;
    assert_false(tg_api_from_path(NULL, &got));
    assert_string_equal(tg_api_name(TG_API_COUNT), "unknown");
}

static void
chat_usage_with_details(void **state)
{
    struct tg_usage u;
    memset(&u, 0x55, sizeof(u));
    assert_true(parse(TG_API_CHAT,
                      "{\"prompt_tokens\":82,\"completion_tokens\":17,\"total_tokens\":99,"
                      "\"prompt_tokens_details\":{\"cached_tokens\":64,\"audio_tokens\":0},"
                      "\"completion_tokens_details\":{\"reasoning_tokens\":9,\"audio_tokens\":0}}",
                      &u));
    assert_true(u.is_known);
    assert_int_equal(u.prompt_tokens, 82);
    assert_int_equal(u.cached_tokens, 64);
    assert_int_equal(u.completion_tokens, 17);
    assert_int_equal(u.reasoning_tokens, 9);
}

static void
chat_usage_without_details_has_zero_subsets(void **state)
{
    struct tg_usage u;
    memset(&u, 0x55, sizeof(u));
    assert_true(parse(TG_API_COMPLETIONS, "{\"prompt_tokens\":5,\"completion_tokens\":7}", &u));
    assert_int_equal(u.prompt_tokens, 5);
    assert_int_equal(u.completion_tokens, 7);
    assert_int_equal(u.cached_tokens, 0);
    assert_int_equal(u.reasoning_tokens, 0);
    assert_true(u.is_known);
    /* details of the wrong type are ignored, not fatal */
    assert_true(parse(TG_API_CHAT,
                      "{\"prompt_tokens\":5,\"completion_tokens\":7,\"prompt_tokens_details\":null,"
                      "\"completion_tokens_details\":{\"reasoning_tokens\":\"3\"}}",
                      &u));
    assert_int_equal(u.cached_tokens, 0);
    assert_int_equal(u.reasoning_tokens, 0);
}

static void
subsets_are_clamped_to_totals(void **state)
{
    struct tg_usage u;
    assert_true(parse(TG_API_CHAT,
                      "{\"prompt_tokens\":10,\"completion_tokens\":4,"
                      "\"prompt_tokens_details\":{\"cached_tokens\":50},"
                      "\"completion_tokens_details\":{\"reasoning_tokens\":-2}}",
                      &u));
    assert_int_equal(u.cached_tokens, 10);
    assert_int_equal(u.reasoning_tokens, 0);
    assert_true(parse(TG_API_RESPONSES,
                      "{\"input_tokens\":3,\"output_tokens\":2,"
                      "\"input_tokens_details\":{\"cached_tokens\":3},"
                      "\"output_tokens_details\":{\"reasoning_tokens\":99}}",
                      &u));
    assert_int_equal(u.cached_tokens, 3);
    assert_int_equal(u.reasoning_tokens, 2);
}

static void
responses_usage_uses_its_own_names(void **state)
{
    struct tg_usage u;
    assert_true(parse(TG_API_RESPONSES,
                      "{\"input_tokens\":36,\"input_tokens_details\":{\"cached_tokens\":12,"
                      "\"cache_write_tokens\":0},\"output_tokens\":87,"
                      "\"output_tokens_details\":{\"reasoning_tokens\":64},\"total_tokens\":123}",
                      &u));
    assert_int_equal(u.prompt_tokens, 36);
    assert_int_equal(u.cached_tokens, 12);
    assert_int_equal(u.completion_tokens, 87);
    assert_int_equal(u.reasoning_tokens, 64);
    /* the chat shape is not a Responses usage, and the other way round */
    assert_false(parse(TG_API_RESPONSES, "{\"prompt_tokens\":1,\"completion_tokens\":1}", &u));
    assert_false(parse(TG_API_CHAT, "{\"input_tokens\":1,\"output_tokens\":1}", &u));
}

static void
embeddings_have_no_completion_tokens(void **state)
{
    struct tg_usage u;
    memset(&u, 0x55, sizeof(u));
    assert_true(parse(TG_API_EMBEDDINGS, "{\"prompt_tokens\":8,\"total_tokens\":8}", &u));
    assert_int_equal(u.prompt_tokens, 8);
    assert_int_equal(u.completion_tokens, 0);
    assert_int_equal(u.cached_tokens, 0);
    assert_int_equal(u.reasoning_tokens, 0);
    assert_false(parse(TG_API_EMBEDDINGS, "{\"total_tokens\":8}", &u));
}

static void
missing_or_wrong_counts_fail_and_leave_out_untouched(void **state)
{
    static const char *const bad_chat[] = {
        "null",
        "[]",
        "12",
        "{}",
        "{\"prompt_tokens\":5}",
        "{\"completion_tokens\":5}",
        "{\"prompt_tokens\":\"5\",\"completion_tokens\":1}",
        "{\"prompt_tokens\":5,\"completion_tokens\":1.5}",
        "{\"prompt_tokens\":-1,\"completion_tokens\":1}",
        "{\"prompt_tokens\":true,\"completion_tokens\":1}",
        "{\"prompt_tokens\":5,\"completion_tokens\":null}",
    };
    for (size_t i = 0; i < sizeof(bad_chat) / sizeof(bad_chat[0]); i++) {
        struct tg_usage u = {.prompt_tokens = 77, .is_known = false};
        assert_false(parse(TG_API_CHAT, bad_chat[i], &u));
        assert_int_equal(u.prompt_tokens, 77);
        assert_false(u.is_known);
    }
    struct tg_usage u = {0};
    assert_false(tg_usage_parse(TG_API_CHAT, NULL, &u));
    assert_false(tg_usage_parse(TG_API_COUNT, NULL, &u));
    assert_false(u.is_known);
}

static void
moderations_report_no_usage(void **state)
{
    struct tg_usage u = {0};
    assert_false(parse(TG_API_MODERATIONS, "{\"prompt_tokens\":3,\"completion_tokens\":0}", &u));
    json_t *body = json_loads("{\"id\":\"modr-1\",\"results\":[]}", 0, NULL);
    assert_false(tg_usage_from_response(TG_API_MODERATIONS, body, &u));
    json_decref(body);
    assert_false(u.is_known);
}

static void
usage_from_whole_responses(void **state)
{
    struct tg_usage u = {0};
    json_t *chat =
        json_loads("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[],"
                   "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}}",
                   0, NULL);
    assert_true(tg_usage_from_response(TG_API_CHAT, chat, &u));
    assert_int_equal(u.prompt_tokens, 10);
    assert_int_equal(u.completion_tokens, 2);
    json_decref(chat);

    json_t *resp = json_loads("{\"id\":\"resp_1\",\"object\":\"response\",\"usage\":"
                              "{\"input_tokens\":4,\"output_tokens\":6,\"total_tokens\":10}}",
                              0, NULL);
    assert_true(tg_usage_from_response(TG_API_RESPONSES, resp, &u));
    assert_int_equal(u.prompt_tokens, 4);
    assert_int_equal(u.completion_tokens, 6);
    json_decref(resp);

    json_t *none = json_loads("{\"id\":\"chatcmpl-2\",\"usage\":null}", 0, NULL);
    u.is_known = false;
    assert_false(tg_usage_from_response(TG_API_CHAT, none, &u));
    assert_false(u.is_known);
    json_decref(none);
    json_t *arr =
        json_loads("[{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}]", 0, NULL);
    assert_false(tg_usage_from_response(TG_API_CHAT, arr, &u));
    json_decref(arr);
    assert_false(tg_usage_from_response(TG_API_CHAT, NULL, &u));
}

/* The text parser (hot path) and the tree parser agree on every shape, odd ones included. */
static void
text_parser_agrees_with_tree_parser(void **state)
{
    static const char *const texts[] = {
        "{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15}",
        "{\"prompt_tokens\":10,\"completion_tokens\":5,\"prompt_tokens_details\":"
        "{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":2}}",
        "{\"prompt_tokens\":3,\"completion_tokens\":1,\"prompt_tokens_details\":"
        "{\"cached_tokens\":99},\"completion_tokens_details\":{\"reasoning_tokens\":7}}",
        "{\"input_tokens\":8,\"output_tokens\":2,\"input_tokens_details\":{\"cached_tokens\":1},"
        "\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":10}",
        "{\"prompt_tokens\":7,\"total_tokens\":7}",
        "{\"prompt_tokens\":-1,\"completion_tokens\":5}",
        "{\"prompt_tokens\":1.0,\"completion_tokens\":5}",
        "{\"prompt_tokens\":\"4\",\"completion_tokens\":5}",
        "{\"prompt_tokens\":4,\"completion_tokens\":null}",
        "{\"prompt_tokens\":4,\"completion_tokens\":2,\"prompt_tokens_details\":null}",
        "{\"prompt_tokens\":4,\"completion_tokens\":2,\"prompt_tokens_details\":"
        "{\"cached_tokens\":-3}}",
        "{\"prompt_tokens\":4,\"completion_tokens\":2,\"prompt_tokens\":9}",
        "{}",
        "[]",
        "null",
    };
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
        json_t *j = json_loads(texts[t], JSON_DECODE_ANY, NULL);
        assert_non_null(j);
        for (int api = 0; api < TG_API_COUNT; api++) {
            struct tg_usage a = {0}, b = {0};
            bool ok_tree = tg_usage_parse((enum tg_api)api, j, &a);
            bool ok_text = tg_usage_parse_text((enum tg_api)api, texts[t], strlen(texts[t]), &b);
            assert_int_equal(ok_tree, ok_text);
            assert_memory_equal(&a, &b, sizeof(a));
        }
        json_decref(j);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(paths_names_and_from_path_agree),
        cmocka_unit_test(text_parser_agrees_with_tree_parser),
        cmocka_unit_test(from_path_rejects_everything_else),
        cmocka_unit_test(chat_usage_with_details),
        cmocka_unit_test(chat_usage_without_details_has_zero_subsets),
        cmocka_unit_test(subsets_are_clamped_to_totals),
        cmocka_unit_test(responses_usage_uses_its_own_names),
        cmocka_unit_test(embeddings_have_no_completion_tokens),
        cmocka_unit_test(missing_or_wrong_counts_fail_and_leave_out_untouched),
        cmocka_unit_test(moderations_report_no_usage),
        cmocka_unit_test(usage_from_whole_responses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
