/*
 * microbatch_test.c: embedding micro-batching's pure parts (gateway/microbatch.h): the
 * settings' bounds, the usage split summing exactly to the upstream's total, what may merge,
 * the merged body, and the answer split back per caller in each caller's order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "gateway/microbatch.h"

static void
settings_defaults_and_bounds(void **state)
{
    (void)state;
    struct tg_mb_settings s;
    char err[160];
    json_t *v = json_loads("{\"enabled\":true}", 0, NULL);
    assert_int_equal(tg_mb_settings_parse(v, &s, err, sizeof(err)), 0);
    assert_true(s.enabled);
    assert_int_equal(s.window_ms, 5);
    assert_int_equal(s.max_inputs, 256);
    json_decref(v);
    static const char *const bad[] = {
        "{\"window_ms\":0}",
        "{\"window_ms\":51}",
        "{\"max_inputs\":0}",
        "{\"max_inputs\":2049}",
        "{\"enabled\":1}",
        "{\"window\":5}",
        "[]",
        "{\"window_ms\":\"5\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        assert_int_equal(tg_mb_settings_parse(v, &s, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "embedding_batching"));
        json_decref(v);
    }
    v = json_loads("{\"enabled\":false,\"window_ms\":50,\"max_inputs\":2048}", 0, NULL);
    assert_int_equal(tg_mb_settings_parse(v, &s, err, sizeof(err)), 0);
    assert_false(s.enabled);
    assert_int_equal(s.window_ms, 50);
    assert_int_equal(s.max_inputs, 2048);
    json_decref(v);

    tg_mb_settings_of_project("{\"embedding_batching\":{\"enabled\":true,\"window_ms\":9}}", &s);
    assert_true(s.enabled);
    assert_int_equal(s.window_ms, 9);
    tg_mb_settings_of_project("{\"embedding_batching\":{\"enabled\":true,\"window_ms\":99}}", &s);
    assert_false(s.enabled); /* invalid: off, never a guess */
    tg_mb_settings_of_project("{}", &s);
    assert_false(s.enabled);
}

static void
split_sums_exactly_and_is_proportional(void **state)
{
    (void)state;
    int64_t out[4];
    int64_t w1[] = {1, 1, 1};
    tg_mb_split(10, w1, 3, out);
    assert_int_equal(out[0] + out[1] + out[2], 10);
    assert_int_equal(out[0], 4); /* ties: the remainder goes to the earlier part */
    assert_int_equal(out[1], 3);
    assert_int_equal(out[2], 3);

    int64_t w2[] = {10, 30, 60};
    tg_mb_split(100, w2, 3, out);
    assert_int_equal(out[0], 10);
    assert_int_equal(out[1], 30);
    assert_int_equal(out[2], 60);

    int64_t w3[] = {1, 2};
    tg_mb_split(10, w3, 2, out); /* 3.33 and 6.67: the larger fraction gets the token */
    assert_int_equal(out[0], 3);
    assert_int_equal(out[1], 7);

    int64_t w4[] = {0, 0, 0, 0};
    tg_mb_split(7, w4, 4, out);
    assert_int_equal(out[0] + out[1] + out[2] + out[3], 7);

    int64_t w5[] = {5, 7, 11, 13};
    for (int64_t total = 0; total < 200; total++) {
        tg_mb_split(total, w5, 4, out);
        int64_t sum = 0;
        for (int i = 0; i < 4; i++) {
            assert_true(out[i] >= 0);
            sum += out[i];
        }
        assert_int_equal(sum, total);
        assert_true(out[0] <= out[1] && out[1] <= out[2] && out[2] <= out[3]);
    }
}

static void
parse_key_ignores_input_and_user(void **state)
{
    (void)state;
    struct tg_mb_req a, b, c, d;
    const char *ta = "{\"model\":\"m\",\"input\":\"hello\",\"user\":\"u1\"}";
    const char *tb = "{\"user\":\"u2\",\"input\":[\"ab\",[1,2,3]],\"model\":\"m\"}";
    const char *tc = "{\"model\":\"m\",\"input\":\"x\",\"encoding_format\":\"base64\"}";
    assert_int_equal(tg_mb_req_parse(ta, strlen(ta), &a), 0);
    assert_int_equal(tg_mb_req_parse(tb, strlen(tb), &b), 0);
    assert_int_equal(tg_mb_req_parse(tc, strlen(tc), &c), 0);
    assert_string_equal(a.key, b.key);
    assert_string_not_equal(a.key, c.key);
    assert_int_equal(a.n_inputs, 1);
    assert_int_equal(a.weight, 5);
    assert_int_equal(b.n_inputs, 2);
    assert_int_equal(b.weight, 2 + 7);                    /* "ab" and the text [1,2,3] */
    const char *td = "{\"model\":\"m\",\"input\":[1,2]}"; /* one token array: one input */
    assert_int_equal(tg_mb_req_parse(td, strlen(td), &d), 0);
    assert_int_equal(d.n_inputs, 1);
    tg_mb_req_deinit(&a);
    tg_mb_req_deinit(&b);
    tg_mb_req_deinit(&c);
    tg_mb_req_deinit(&d);
    static const char *const bad[] = {
        "{\"model\":\"m\",\"input\":[]}",
        "{\"model\":\"m\",\"input\":5}",
        "{\"model\":\"m\",\"input\":[\"a\",{}]}",
        "{\"model\":\"m\"}",
        "[1]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(tg_mb_req_parse(bad[i], strlen(bad[i]), &a), TG_EINVAL);
    }
}

static void
merge_then_split_back(void **state)
{
    (void)state;
    struct tg_mb_req r[3];
    const char *texts[3] = {
        "{\"model\":\"m\",\"input\":\"aaaa\"}",
        "{\"model\":\"m\",\"input\":[\"bb\",\"cc\"],\"user\":\"u\"}",
        "{\"model\":\"m\",\"input\":[\"dddddddd\"]}",
    };
    const struct tg_mb_req *p[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tg_mb_req_parse(texts[i], strlen(texts[i]), &r[i]), 0);
        p[i] = &r[i];
    }
    struct tg_buf merged;
    tg_buf_init(&merged, 0);
    assert_int_equal(tg_mb_merge(p, 3, &merged), 0);
    json_t *m = json_loadb(merged.data, merged.len, 0, NULL);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "model")), "m");
    json_t *in = json_object_get(m, "input");
    assert_int_equal(json_array_size(in), 4);
    assert_string_equal(json_string_value(json_array_get(in, 1)), "bb");
    assert_string_equal(json_string_value(json_array_get(in, 3)), "dddddddd");
    assert_null(json_object_get(m, "user"));
    json_decref(m);
    tg_buf_deinit(&merged);

    /* Out of order on purpose: items are placed by their index. */
    const char *answer = "{\"object\":\"list\",\"model\":\"m-1\",\"data\":["
                         "{\"object\":\"embedding\",\"index\":3,\"embedding\":[3]},"
                         "{\"object\":\"embedding\",\"index\":0,\"embedding\":[0]},"
                         "{\"object\":\"embedding\",\"index\":2,\"embedding\":[2]},"
                         "{\"object\":\"embedding\",\"index\":1,\"embedding\":[1]}],"
                         "\"usage\":{\"prompt_tokens\":17,\"total_tokens\":17}}";
    struct tg_buf outs[3];
    for (int i = 0; i < 3; i++) {
        tg_buf_init(&outs[i], 0);
    }
    int64_t prompt[3], total = 0;
    assert_int_equal(tg_mb_split_answer(answer, strlen(answer), p, 3, outs, prompt, &total), 0);
    assert_int_equal(total, 17);
    assert_int_equal(prompt[0] + prompt[1] + prompt[2], 17);
    assert_int_equal(prompt[0], 4); /* weights 4, 4, 8 of 16: 4.25, 4.25, 8.5 */
    assert_int_equal(prompt[1], 4);
    assert_int_equal(prompt[2], 9);
    static const int want_n[3] = {1, 2, 1};
    static const int want_first[3] = {0, 1, 3};
    for (int i = 0; i < 3; i++) {
        json_t *o = json_loadb(outs[i].data, outs[i].len, 0, NULL);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "model")), "m-1");
        json_t *data = json_object_get(o, "data");
        assert_int_equal(json_array_size(data), want_n[i]);
        for (int k = 0; k < want_n[i]; k++) {
            json_t *it = json_array_get(data, k);
            assert_int_equal(json_integer_value(json_object_get(it, "index")), k);
            json_t *emb = json_object_get(it, "embedding");
            assert_int_equal(json_integer_value(json_array_get(emb, 0)), want_first[i] + k);
        }
        json_t *u = json_object_get(o, "usage");
        assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), prompt[i]);
        assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), prompt[i]);
        json_decref(o);
        tg_buf_deinit(&outs[i]);
    }

    /* One embedding missing: not split (every caller gets an error instead). */
    const char *short_answer = "{\"data\":[{\"index\":0,\"embedding\":[0]}],\"usage\":{}}";
    for (int i = 0; i < 3; i++) {
        tg_buf_init(&outs[i], 0);
    }
    assert_int_equal(
        tg_mb_split_answer(short_answer, strlen(short_answer), p, 3, outs, prompt, &total),
        TG_EUPSTREAM);
    for (int i = 0; i < 3; i++) {
        tg_buf_deinit(&outs[i]);
        tg_mb_req_deinit(&r[i]);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(settings_defaults_and_bounds),
        cmocka_unit_test(split_sums_exactly_and_is_proportional),
        cmocka_unit_test(parse_key_ignores_input_and_user),
        cmocka_unit_test(merge_then_split_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
