/*
 * token_policy_test.c: token policies and aliases (policy/token_policy.h): parsing the full
 * shape and every refusal, each rule applied to a request body (default and clamped caps,
 * refusal above the maximum, n, stop, prompt size, forbidden and forced parameters, the change
 * list), a key's policy overriding its project's, and the cheapest allowed model of a tier.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "policy/token_policy.h"

static json_t *
load(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    assert_non_null(v);
    return v;
}

static int
parse(const char *text, struct tg_token_policy *out, char *err, size_t err_cap)
{
    json_t *root = load(text);
    int rc = tg_token_policy_parse(root, out, err, err_cap);
    json_decref(root);
    return rc;
}

static void
test_parse_full_and_empty(void **state)
{
    (void)state;
    struct tg_token_policy p;
    char err[256];
    assert_int_equal(tg_token_policy_parse(NULL, &p, err, sizeof(err)), 0);
    assert_true(tg_token_policy_is_empty(&p));
    assert_int_equal(parse("{\"token_policy\":{\"default_max_tokens\":100,\"max_tokens\":500,"
                           "\"on_max_tokens\":\"refuse\",\"max_n\":2,\"default_stop\":[\"\\n\\n\","
                           "\"END\"],\"max_prompt_bytes\":1000,\"forbidden_params\":[\"logprobs\"],"
                           "\"forced_params\":{\"temperature\":0}}}",
                           &p, err, sizeof(err)),
                     0);
    assert_false(tg_token_policy_is_empty(&p));
    assert_int_equal(p.default_max_tokens, 100);
    assert_int_equal(p.max_tokens, 500);
    assert_true(p.is_refuse);
    assert_int_equal(p.max_n, 2);
    assert_int_equal(p.n_default_stop, 2);
    assert_string_equal(p.default_stop[1], "END");
    assert_int_equal(p.max_prompt_bytes, 1000);
    assert_string_equal(p.forbidden_params[0], "logprobs");
    assert_non_null(json_object_get(p.forced_params, "temperature"));
    tg_token_policy_free(&p);
}

static void
test_parse_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *member;
    } bad[] = {
        {"{\"token_policy\":[]}", "token_policy"},
        {"{\"token_policy\":{\"max_tokenz\":1}}", "max_tokenz"},
        {"{\"token_policy\":{\"max_tokens\":0}}", "max_tokens"},
        {"{\"token_policy\":{\"max_tokens\":\"9\"}}", "max_tokens"},
        {"{\"token_policy\":{\"on_max_tokens\":\"drop\"}}", "on_max_tokens"},
        {"{\"token_policy\":{\"default_stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}}", "default_stop"},
        {"{\"token_policy\":{\"default_stop\":[\"a\",1]}}", "default_stop"},
        {"{\"token_policy\":{\"default_max_tokens\":900,\"max_tokens\":100}}", "default_max"},
        {"{\"token_policy\":{\"forbidden_params\":[\"seed\"],\"forced_params\":{\"seed\":1}}}",
         "seed"},
        {"{\"token_policy\":{\"forced_params\":{\"model\":\"x\"}}}", "model"},
        {"{\"token_policy\":{\"forbidden_params\":[\"stream\"]}}", "stream"},
        {"{\"token_policy\":{\"forced_params\":[1]}}", "forced_params"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tg_token_policy p;
        char err[256] = "";
        assert_int_equal(parse(bad[i].text, &p, err, sizeof(err)), TG_EPARSE);
        assert_non_null(strstr(err, bad[i].member));
        assert_true(tg_token_policy_is_empty(&p));
    }
}

/* Applies the policy text to the body text; returns the code, *body_out the result. */
static int
apply(const char *policy, enum tg_api api, const char *body, json_t **body_out,
      struct tg_policy_result *res)
{
    struct tg_token_policy p;
    char err[256];
    assert_int_equal(parse(policy, &p, err, sizeof(err)), 0);
    json_t *b = load(body);
    int rc = tg_token_policy_apply(&p, api, b, res);
    tg_token_policy_free(&p);
    *body_out = b;
    return rc;
}

static void
test_max_tokens_rules(void **state)
{
    (void)state;
    const char *pol = "{\"token_policy\":{\"default_max_tokens\":100,\"max_tokens\":500}}";
    struct tg_policy_result r;
    json_t *b;
    /* Absent: the default is injected. */
    assert_int_equal(apply(pol, TG_API_CHAT, "{\"messages\":[]}", &b, &r), 0);
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")), 100);
    assert_string_equal(r.changes, "max_tokens=default");
    json_decref(b);
    /* Above: clamped, on either cap member. */
    assert_int_equal(apply(pol, TG_API_CHAT, "{\"max_completion_tokens\":9000}", &b, &r), 0);
    assert_int_equal(json_integer_value(json_object_get(b, "max_completion_tokens")), 500);
    assert_null(json_object_get(b, "max_tokens"));
    assert_string_equal(r.changes, "max_completion_tokens=clamped");
    json_decref(b);
    /* Within: untouched, no change reported. */
    assert_int_equal(apply(pol, TG_API_COMPLETIONS, "{\"max_tokens\":300}", &b, &r), 0);
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")), 300);
    assert_string_equal(r.changes, "");
    json_decref(b);
    /* Responses use max_output_tokens; embeddings have no cap. */
    assert_int_equal(apply(pol, TG_API_RESPONSES, "{}", &b, &r), 0);
    assert_int_equal(json_integer_value(json_object_get(b, "max_output_tokens")), 100);
    json_decref(b);
    assert_int_equal(apply(pol, TG_API_EMBEDDINGS, "{\"input\":\"x\"}", &b, &r), 0);
    assert_int_equal(json_object_size(b), 1);
    json_decref(b);
    /* Refuse mode: 400 naming the member. */
    const char *refusing = "{\"token_policy\":{\"max_tokens\":500,\"on_max_tokens\":\"refuse\"}}";
    assert_int_equal(apply(refusing, TG_API_CHAT, "{\"max_tokens\":501}", &b, &r), TG_EINVAL);
    assert_string_equal(r.param, "max_tokens");
    assert_non_null(strstr(r.message, "500"));
    json_decref(b);
}

static void
test_n_stop_prompt_params(void **state)
{
    (void)state;
    const char *pol = "{\"token_policy\":{\"max_n\":2,\"default_stop\":[\"END\"],"
                      "\"max_prompt_bytes\":40,\"forbidden_params\":[\"logprobs\"],"
                      "\"forced_params\":{\"temperature\":0}}}";
    struct tg_policy_result r;
    json_t *b;
    assert_int_equal(apply(pol, TG_API_CHAT, "{\"messages\":[],\"n\":5,\"temperature\":1}", &b, &r),
                     0);
    assert_int_equal(json_integer_value(json_object_get(b, "n")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "stop"), 0)), "END");
    assert_int_equal(json_integer_value(json_object_get(b, "temperature")), 0);
    assert_string_equal(r.changes, "temperature=forced,n=clamped,stop=added");
    json_decref(b);
    /* The client's own stop is kept. */
    assert_int_equal(apply(pol, TG_API_COMPLETIONS, "{\"prompt\":\"a\",\"stop\":\"x\"}", &b, &r),
                     0);
    assert_string_equal(json_string_value(json_object_get(b, "stop")), "x");
    assert_string_equal(r.changes, "temperature=forced");
    json_decref(b);
    /* Forbidden, even when null. */
    assert_int_equal(apply(pol, TG_API_CHAT, "{\"messages\":[],\"logprobs\":null}", &b, &r),
                     TG_EINVAL);
    assert_string_equal(r.param, "logprobs");
    assert_non_null(strstr(r.message, "logprobs"));
    json_decref(b);
    /* Prompt bytes above the maximum. */
    assert_int_equal(apply(pol, TG_API_CHAT,
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"0123456789abcdef\"}]}",
                           &b, &r),
                     TG_EINVAL);
    assert_string_equal(r.param, "messages");
    json_decref(b);
}

static void
test_key_overrides_project(void **state)
{
    (void)state;
    struct tg_token_policy proj;
    struct tg_token_policy key;
    char err[256];
    assert_int_equal(parse("{\"token_policy\":{\"default_max_tokens\":200,\"max_tokens\":1000,"
                           "\"on_max_tokens\":\"refuse\",\"default_stop\":[\"P\"]}}",
                           &proj, err, sizeof(err)),
                     0);
    assert_int_equal(parse("{\"token_policy\":{\"max_tokens\":100,\"on_max_tokens\":\"clamp\"}}",
                           &key, err, sizeof(err)),
                     0);
    struct tg_token_policy m;
    tg_token_policy_merge(&key, &proj, &m);
    assert_int_equal(m.max_tokens, 100);
    assert_false(m.is_refuse);
    assert_int_equal(m.default_max_tokens, 100); /* the project's 200, bounded by the key's max */
    assert_string_equal(m.default_stop[0], "P");
    json_t *b = load("{\"max_tokens\":150}");
    struct tg_policy_result r;
    assert_int_equal(tg_token_policy_apply(&m, TG_API_CHAT, b, &r), 0);
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")), 100);
    json_decref(b);
    tg_token_policy_merge(NULL, &proj, &m);
    assert_true(m.is_refuse);
    assert_int_equal(m.max_tokens, 1000);
    tg_token_policy_free(&key);
    tg_token_policy_free(&proj);
}

static bool
allow_not_b(const char *model, void *arg)
{
    (void)arg;
    return strcmp(model, "model-b") != 0;
}

static void
test_aliases(void **state)
{
    (void)state;
    struct tg_aliases a;
    char err[256];
    json_t *root =
        load("{\"aliases\":{\"default\":{\"tier\":\"small\"},\"big\":{\"model\":\"x\"}}}");
    assert_int_equal(tg_aliases_parse(root, &a, err, sizeof(err)), 0);
    json_decref(root);
    assert_int_equal(a.n, 2);
    const struct tg_alias *d = tg_aliases_find(NULL, &a, "default");
    assert_non_null(d);
    assert_string_equal(d->tier, "small");
    assert_null(d->model);
    assert_string_equal(tg_aliases_find(NULL, &a, "big")->model, "x");
    assert_null(tg_aliases_find(NULL, &a, "gpt-4o"));
    tg_aliases_free(&a);

    static const char *const bad[] = {
        "{\"aliases\":[]}",
        "{\"aliases\":{\"a\":{\"tier\":\"t\",\"model\":\"m\"}}}",
        "{\"aliases\":{\"a\":{\"tier\":\"\"}}}",
        "{\"aliases\":{\"a\":\"gpt\"}}",
        "{\"aliases\":{\"a\":{\"model\":\"a\"}}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        root = load(bad[i]);
        assert_int_equal(tg_aliases_parse(root, &a, err, sizeof(err)), TG_EPARSE);
        assert_null(a.items);
        json_decref(root);
    }

    struct tg_price_table *t = tg_price_table_new();
    struct tg_price pa = {"model-a", 3000000, 3000000, 12000000};
    struct tg_price pb = {"model-b", 100000, 100000, 400000};
    struct tg_price pc = {"model-c", 1000000, 1000000, 2000000};
    tg_price_table_set(t, &pa);
    tg_price_table_set(t, &pb);
    tg_price_table_set(t, &pc);
    const char *const models[] = {"model-a", "model-b", "model-c", "model-unpriced"};
    assert_string_equal(tg_alias_pick_cheapest(models, 4, t, NULL, NULL), "model-b");
    assert_string_equal(tg_alias_pick_cheapest(models, 4, t, allow_not_b, NULL), "model-c");
    /* A price change moves the choice. */
    pc.output_micros = 20000000;
    tg_price_table_set(t, &pc);
    assert_string_equal(tg_alias_pick_cheapest(models, 4, t, allow_not_b, NULL), "model-a");
    assert_null(tg_alias_pick_cheapest(models + 3, 1, t, NULL, NULL));
    tg_price_table_free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_full_and_empty),  cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_max_tokens_rules),      cmocka_unit_test(test_n_stop_prompt_params),
        cmocka_unit_test(test_key_overrides_project), cmocka_unit_test(test_aliases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
