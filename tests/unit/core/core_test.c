/* core_test.c: capped buffers, arenas, JSON helpers, crypto and encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"

static void
buf_cap_is_enforced(void **state)
{
    struct tg_buf b;
    tg_buf_init(&b, 8);
    assert_int_equal(tg_buf_append(&b, "12345", 5), 0);
    assert_int_equal(tg_buf_append(&b, "6789", 4), TG_ETOOBIG);
    assert_int_equal(b.len, 5); /* unchanged by the failed append */
    assert_string_equal(b.data, "12345");
    assert_int_equal(tg_buf_append(&b, "678", 3), 0);
    assert_int_equal(tg_buf_appendf(&b, "%d", 9), TG_ETOOBIG);
    tg_buf_consume(&b, 3);
    assert_string_equal(b.data, "45678");
    size_t len = 0;
    char *p = tg_buf_steal(&b, &len);
    assert_int_equal(len, 5);
    assert_null(b.data);
    free(p);
    tg_buf_deinit(&b);
}

static void
buf_grows_past_many_doublings(void **state)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(tg_buf_appendf(&b, "%04d", i % 10000), 0);
    }
    assert_int_equal(b.len, 40000);
    assert_memory_equal(b.data + 39996, "9999", 4);
    tg_buf_deinit(&b);
}

static int cleanup_order[4];
static int n_cleanups;

static void
record_cleanup(void *arg)
{
    cleanup_order[n_cleanups++] = (int)(intptr_t)arg;
}

static void
arena_allocates_and_cleans_up_in_reverse(void **state)
{
    struct tg_arena a;
    tg_arena_init(&a, 64);
    char *s = tg_arena_strdup(&a, "hello");
    char *big = tg_arena_alloc(&a, 1000); /* larger than a block */
    memset(big, 'x', 1000);
    char *f = tg_arena_sprintf(&a, "%s-%d", s, 42);
    assert_string_equal(f, "hello-42");
    assert_string_equal(s, "hello");
    n_cleanups = 0;
    tg_arena_cleanup_add(&a, record_cleanup, (void *)1);
    tg_arena_cleanup_add(&a, record_cleanup, (void *)2);
    tg_arena_deinit(&a);
    assert_int_equal(n_cleanups, 2);
    assert_int_equal(cleanup_order[0], 2);
    assert_int_equal(cleanup_order[1], 1);
}

static void
json_depth_limit(void **state)
{
    assert_true(tg_json_depth_ok("[[[]]]", 6, 3));
    assert_false(tg_json_depth_ok("[[[[]]]]", 8, 3));
    /* brackets inside strings do not count, escaped quotes do not end strings */
    const char *s = "{\"a\":\"[[[[\\\"[[[[\"}";
    assert_true(tg_json_depth_ok(s, strlen(s), 1));
    char err[128];
    assert_null(tg_json_parse("[[[[1]]]]", 9, 3, err, sizeof(err)));
    assert_non_null(strstr(err, "deeper than 3"));
    assert_null(tg_json_parse("{\"a\":", 5, 3, err, sizeof(err)));
    assert_non_null(strstr(err, "line 1"));
    json_t *v = tg_json_parse("{\"a\":1}", 7, 3, err, sizeof(err));
    assert_non_null(v);
    assert_int_equal(tg_json_int(v, "a", 0), 1);
    json_decref(v);
}

static void
json_validator(void **state)
{
    static const char *const good[] = {
        "{}",
        "[]",
        "0",
        "-1.5e+3",
        "\"\\u00e9\\n\"",
        " {\"a\" : [1, true, false, null]} ",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}",
    };
    static const char *const bad[] = {
        "",      "{",       "[1,]",  "{\"a\"}",    "01", "1.",        "tru", "\"abc",
        "{} {}", "\"\\x\"", "[1 2]", "{\"a\":1,}", "-",  "\"\\u12\"", "nul",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_true(tg_json_is_valid(good[i], strlen(good[i])));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(tg_json_is_valid(bad[i], strlen(bad[i])));
    }
}

static void
json_error_body_shape(void **state)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_json_error_body(&b, "bad \"x\"", "invalid_request_error", "model", NULL),
                     0);
    assert_string_equal(b.data, "{\"error\":{\"message\":\"bad \\\"x\\\"\",\"type\":"
                                "\"invalid_request_error\",\"param\":\"model\",\"code\":null}}");
    tg_buf_deinit(&b);
}

static void
crypto_known_answers(void **state)
{
    unsigned char d[TG_SHA256_BYTES];
    char hex[65];
    tg_sha256("abc", 3, d);
    tg_hex_encode(hex, d, sizeof(d));
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* RFC 4231 test case 2 */
    tg_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, d);
    tg_hex_encode(hex, d, sizeof(d));
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    unsigned char back[TG_SHA256_BYTES];
    assert_int_equal(tg_hex_decode(back, hex, sizeof(back)), 0);
    assert_memory_equal(back, d, sizeof(d));
    assert_int_equal(tg_hex_decode(back, "zz", 1), TG_EPARSE);
}

static void
base64_encodings(void **state)
{
    char out[64];
    assert_int_equal(tg_base64_encode(out, "foobar", 6), 8);
    assert_string_equal(out, "Zm9vYmFy");
    tg_base64_encode(out, "fo", 2);
    assert_string_equal(out, "Zm8=");
    tg_base64_encode(out, "f", 1);
    assert_string_equal(out, "Zg==");
    const unsigned char raw[3] = {0xfb, 0xff, 0xfe};
    tg_base64url_encode(out, raw, 3);
    assert_string_equal(out, "-__-");
    tg_base64url_encode(out, raw, 2);
    assert_string_equal(out, "-_8");
}

static void
ids_are_prefixed_and_distinct(void **state)
{
    char a[40];
    char b[40];
    tg_id_new(a, sizeof(a), "req_", 32);
    tg_id_new(b, sizeof(b), "req_", 32);
    assert_int_equal(strlen(a), 36);
    assert_memory_equal(a, "req_", 4);
    assert_string_not_equal(a, b);
    assert_true(tg_mem_equal_ct(a, a, 36));
    assert_false(tg_mem_equal_ct(a, b, 36));
}

static void
error_table(void **state)
{
    assert_string_equal(tg_strerror(TG_ETIMEOUT), "timed out");
    assert_string_equal(tg_err_name(TG_ETOOBIG), "TG_ETOOBIG");
    assert_string_equal(tg_strerror(-999), "unknown error");
}

static int
members(const char *text, struct tg_json_span *out)
{
    static const char *const names[3] = {"model", "stream", "n"};
    return tg_json_members(text, strlen(text), names, 3, out);
}

static bool
span_is(struct tg_json_span s, const char *want)
{
    return s.p != NULL && s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

static void
json_members_finds_top_level_values(void **state)
{
    struct tg_json_span v[3];
    assert_int_equal(members(" {\"model\" : \"gpt\", \"x\": {\"n\": 1}, \"stream\":true} ", v), 1);
    assert_true(span_is(v[0], "\"gpt\""));
    assert_true(span_is(v[1], "true"));
    assert_null(v[2].p); /* "n" inside x is not a top-level member */
    /* The last occurrence wins, as with jansson. */
    assert_int_equal(members("{\"n\":1,\"n\":[2, 3]}", v), 1);
    assert_true(span_is(v[2], "[2, 3]"));
    assert_int_equal(members("{}", v), 1);
    assert_null(v[0].p);
    const char *s;
    size_t len;
    assert_int_equal(members("{\"model\":\"a\\\"b\"}", v), 1);
    assert_false(tg_json_span_plain_string(v[0], &s, &len)); /* escaped: not plain */
    assert_int_equal(members("{\"model\":\"m-1\"}", v), 1);
    assert_true(tg_json_span_plain_string(v[0], &s, &len));
    assert_int_equal(len, 3);
    assert_memory_equal(s, "m-1", 3);
}

static void
json_members_refuses_what_a_parser_would(void **state)
{
    struct tg_json_span v[3];
    assert_int_equal(members("{\"mod\\u0065l\":\"x\"}", v), 0); /* valid, but needs a parse */
    assert_int_equal(members("[1]", v), -1);
    assert_int_equal(members("{\"a\":1} x", v), -1);
    assert_int_equal(members("{\"a\":1,}", v), -1);
    assert_int_equal(members("{\"a\" 1}", v), -1);
    assert_int_equal(members("{\"a\":\"\xff\"}", v), -1);         /* not UTF-8 */
    assert_int_equal(members("{\"a\":\"\xc0\xaf\"}", v), -1);     /* overlong */
    assert_int_equal(members("{\"a\":\"\xed\xa0\x80\"}", v), -1); /* surrogate */
    assert_int_equal(members("{\"a\":\"\xe2\x82\"}", v), -1);     /* cut sequence */
    assert_int_equal(members("{\"a\":\"\xe2\x82\xac \xf0\x9f\x98\x80\"}", v), 1);
    assert_int_equal(members("{\"a\":tru}", v), -1);
}

/* The member scan's depth limit counts as tg_json_depth_ok does (the top object is 1). */
static void
json_members_depth_limit(void **state)
{
    static const char *const names[1] = {"a"};
    struct tg_json_span v[1];
    const char *three = "{\"a\":[{\"b\":1}],\"s\":\"[[[[\"}";
    assert_true(tg_json_depth_ok(three, strlen(three), 3));
    assert_false(tg_json_depth_ok(three, strlen(three), 2));
    assert_int_equal(tg_json_members_depth(three, strlen(three), 3, names, 1, v), 1);
    assert_true(span_is(v[0], "[{\"b\":1}]"));
    assert_int_equal(tg_json_members_depth(three, strlen(three), 2, names, 1, v), -1);
    assert_int_equal(tg_json_members_depth("{}", 2, 1, names, 1, v), 1);
    assert_int_equal(tg_json_members_depth("{}", 2, 0, names, 1, v), -1);
}

/* One byte that matters, at every offset of a long string (the scan takes 8 bytes at a time
 * where it can): each is found wherever it sits. */
static void
json_string_scan_finds_every_special_byte(void **state)
{
    static const char *const names[2] = {"a", "b"};
    static const struct {
        const char *piece;
        int want;      /* tg_json_members */
        bool is_valid; /* tg_json_is_valid, which does not check UTF-8 */
    } cases[] = {
        {"\\\"", 1, true},         /* an escaped quote does not end the string */
        {"\\\\", 1, true},         /* nor does an escaped backslash */
        {"\\u00e9", 0, true},      /* a \u escape asks for a parse */
        {"\xc3\xa9", 1, true},     /* UTF-8 */
        {"\xe2\x82\xac", 1, true}, /* UTF-8, three bytes */
        {"\t", -1, false},         /* a raw control byte */
        {"\x1f", -1, false},       {"\xff", -1, true}, /* not UTF-8 */
        {"\"", -1, false}, /* ends the string early: what follows is not JSON */
    };
    char text[128];
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (int at = 0; at < 24; at++) {
            int n = snprintf(text, sizeof(text), "{\"a\":\"%.*s%s%.*s\",\"b\":2}", at,
                             "abcdefghijklmnopqrstuvwxyz", cases[c].piece, 23 - at,
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
            struct tg_json_span v[2];
            int rc = tg_json_members(text, (size_t)n, names, 2, v);
            if (rc != cases[c].want || tg_json_is_valid(text, (size_t)n) != cases[c].is_valid) {
                fail_msg("case %zu at %d: members %d, want %d", c, at, rc, cases[c].want);
            }
            if (rc >= 0) {
                assert_int_equal(v[0].len, 2 + 23 + strlen(cases[c].piece));
                assert_true(span_is(v[1], "2"));
            }
        }
    }
}

static void
expect_hmac(const void *key, size_t key_len, const char *data, const char *want_hex)
{
    unsigned char mac[TG_SHA256_BYTES];
    char hex[2 * TG_SHA256_BYTES + 1];
    tg_hmac_sha256(key, key_len, data, strlen(data), mac);
    tg_hex_encode(hex, mac, sizeof(mac));
    assert_string_equal(hex, want_hex);
}

/* RFC 4231 cases 1, 2 and 6 (a key longer than a block), interleaved so the per-thread
 * prepared key is switched and reused. */
static void
hmac_sha256_rfc4231(void **state)
{
    unsigned char k1[20], k6[131];
    memset(k1, 0x0b, sizeof(k1));
    memset(k6, 0xaa, sizeof(k6));
    for (int round = 0; round < 2; round++) {
        expect_hmac(k1, sizeof(k1), "Hi There",
                    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        expect_hmac(k1, sizeof(k1), "Hi There",
                    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        expect_hmac("Jefe", 4, "what do ya want for nothing?",
                    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        expect_hmac(k6, sizeof(k6), "Test Using Larger Than Block-Size Key - Hash Key First",
                    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buf_cap_is_enforced),
        cmocka_unit_test(buf_grows_past_many_doublings),
        cmocka_unit_test(arena_allocates_and_cleans_up_in_reverse),
        cmocka_unit_test(json_depth_limit),
        cmocka_unit_test(json_members_depth_limit),
        cmocka_unit_test(json_string_scan_finds_every_special_byte),
        cmocka_unit_test(json_validator),
        cmocka_unit_test(json_error_body_shape),
        cmocka_unit_test(crypto_known_answers),
        cmocka_unit_test(base64_encodings),
        cmocka_unit_test(ids_are_prefixed_and_distinct),
        cmocka_unit_test(error_table),
        cmocka_unit_test(hmac_sha256_rfc4231),
        cmocka_unit_test(json_members_finds_top_level_values),
        cmocka_unit_test(json_members_refuses_what_a_parser_would),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
