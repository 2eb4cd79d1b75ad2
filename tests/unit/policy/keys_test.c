/* keys_test.c: key format, hashing, redaction and the key table (policy/keys.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/crypto.h"
#include "policy/keys.h"

static int
cmp_keys(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void
generated_keys_are_wellformed_and_unique(void **state)
{
    enum { N = 2000 };
    char(*keys)[TG_KEY_LEN + 1] = calloc(N, sizeof(*keys));
    assert_non_null(keys);
    for (int i = 0; i < N; i++) {
        assert_int_equal(tg_key_generate(keys[i]), 0);
        assert_int_equal(strlen(keys[i]), TG_KEY_LEN);
        assert_memory_equal(keys[i], "tg-", 3);
        assert_true(tg_key_is_wellformed(keys[i]));
    }
    qsort(keys, N, sizeof(*keys), cmp_keys);
    for (int i = 1; i < N; i++) {
        assert_string_not_equal(keys[i - 1], keys[i]);
    }
    free(keys);
}

static void
wellformed_rejects_wrong_shapes(void **state)
{
    char good[TG_KEY_LEN + 1];
    assert_int_equal(tg_key_generate(good), 0);
    char bad[TG_KEY_LEN + 8];

    assert_false(tg_key_is_wellformed(NULL));
    assert_false(tg_key_is_wellformed(""));
    assert_false(tg_key_is_wellformed("tg-"));
    snprintf(bad, sizeof(bad), "sk-%s", good + 3); /* OpenAI's prefix */
    assert_false(tg_key_is_wellformed(bad));
    snprintf(bad, sizeof(bad), "%.*s", TG_KEY_LEN - 1, good); /* one short */
    assert_false(tg_key_is_wellformed(bad));
    snprintf(bad, sizeof(bad), "%sA", good); /* one long */
    assert_false(tg_key_is_wellformed(bad));
    snprintf(bad, sizeof(bad), "%s", good);
    bad[10] = '+'; /* standard base64, not base64url */
    assert_false(tg_key_is_wellformed(bad));
    bad[10] = '=';
    assert_false(tg_key_is_wellformed(bad));
    bad[10] = '-';
    assert_true(tg_key_is_wellformed(bad));
    bad[10] = '_';
    assert_true(tg_key_is_wellformed(bad));
    assert_true(tg_key_is_wellformed(TG_KEY_PREFIX "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
}

static void
hash_is_hmac_sha256_of_the_pepper(void **state)
{
    /* RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?". */
    static const char want[] = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    unsigned char out[TG_SHA256_BYTES];
    char hex[2 * TG_SHA256_BYTES + 1];
    tg_key_hash((const unsigned char *)"Jefe", 4, "what do ya want for nothing?", out);
    tg_hex_encode(hex, out, sizeof(out));
    assert_string_equal(hex, want);

    /* Another pepper gives another hash for the same key. */
    unsigned char other[TG_SHA256_BYTES];
    tg_key_hash((const unsigned char *)"Jeff", 4, "what do ya want for nothing?", other);
    assert_memory_not_equal(out, other, TG_SHA256_BYTES);
}

static void
redaction_shows_prefix_and_ends_only(void **state)
{
    char out[TG_KEY_REDACTED_CAP];
    tg_key_redact(TG_KEY_PREFIX "AbCdefghijklmnopqrstuvwxyz0123456789ABwXyZ", out);
    assert_string_equal(out, "tg-AbCd...wXyZ");

    char key[TG_KEY_LEN + 1];
    assert_int_equal(tg_key_generate(key), 0);
    tg_key_redact(key, out);
    assert_int_equal(strlen(out), 14);
    assert_memory_equal(out, key, 7);
    assert_memory_equal(out + 7, "...", 3);
    assert_memory_equal(out + 10, key + TG_KEY_LEN - 4, 4);

    /* A short string is hidden altogether rather than mostly shown. */
    tg_key_redact("tg-short", out);
    assert_string_equal(out, "tg-****");
}

static void
fill_rec(struct tg_key_rec *r, const char *value, const char *id, int64_t revoked_ms)
{
    static const unsigned char pepper[] = "pepper";
    memset(r, 0, sizeof(*r));
    r->id = id;
    r->org_id = "org-1";
    r->project_id = "proj_1";
    r->name = "n";
    r->redacted = "tg-x";
    r->kind = TG_KEY_PROJECT;
    r->role = "member";
    r->revoked_ms = revoked_ms;
    r->expires_ms = 123;
    tg_key_hash(pepper, sizeof(pepper) - 1, value, r->hash);
}

static void
keyring_find_miss_and_revoked(void **state)
{
    struct tg_keyring *k = tg_keyring_new();
    struct tg_key_rec a, b, c;
    char id_a[] = "key_a";
    fill_rec(&a, "tg-value-a", id_a, 0);
    fill_rec(&b, "tg-value-b", "key_b", 99);
    fill_rec(&c, "tg-value-c", "key_c", 0);
    tg_keyring_add(k, &a);
    tg_keyring_add(k, &b);
    assert_int_equal(tg_keyring_count(k), 2);

    /* The table keeps its own copies of the strings. */
    id_a[4] = 'z';
    const struct tg_key_entry *e = tg_keyring_find(k, a.hash);
    assert_non_null(e);
    assert_string_equal(e->id, "key_a");
    assert_string_equal(e->org_id, "org-1");
    assert_string_equal(e->project_id, "proj_1");
    assert_string_equal(e->role, "member");
    assert_null(e->owner_user_id);
    assert_int_equal(e->kind, TG_KEY_PROJECT);
    assert_int_equal(e->expires_ms, 123);
    assert_false(e->is_revoked);

    e = tg_keyring_find(k, b.hash);
    assert_non_null(e);
    assert_string_equal(e->id, "key_b");
    assert_true(e->is_revoked);

    assert_null(tg_keyring_find(k, c.hash));

    /* Same first 8 bytes, different hash: the full comparison tells them apart. */
    unsigned char near[TG_SHA256_BYTES];
    memcpy(near, a.hash, sizeof(near));
    near[TG_SHA256_BYTES - 1] ^= 1;
    assert_null(tg_keyring_find(k, near));

    /* The active record of a secret stored twice wins over a revoked one. */
    struct tg_key_rec b2;
    fill_rec(&b2, "tg-value-b", "key_b2", 0);
    tg_keyring_add(k, &b2);
    assert_int_equal(tg_keyring_count(k), 2);
    e = tg_keyring_find(k, b.hash);
    assert_string_equal(e->id, "key_b2");
    assert_false(e->is_revoked);
    tg_keyring_free(k);
}

static void
keyring_holds_many_keys(void **state)
{
    enum { N = 5000 };
    struct tg_keyring *k = tg_keyring_new();
    struct tg_key_rec r;
    char value[64];
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(value, sizeof(value), "tg-key-%d", i);
        snprintf(id, sizeof(id), "key_%d", i);
        fill_rec(&r, value, id, i % 7 == 0 ? 1 : 0);
        tg_keyring_add(k, &r);
    }
    assert_int_equal(tg_keyring_count(k), N);
    for (int i = 0; i < N; i++) {
        snprintf(value, sizeof(value), "tg-key-%d", i);
        snprintf(id, sizeof(id), "key_%d", i);
        fill_rec(&r, value, "", 0);
        const struct tg_key_entry *e = tg_keyring_find(k, r.hash);
        assert_non_null(e);
        assert_string_equal(e->id, id);
        assert_int_equal(e->is_revoked, i % 7 == 0);
    }
    for (int i = N; i < N + 500; i++) {
        snprintf(value, sizeof(value), "tg-key-%d", i);
        fill_rec(&r, value, "", 0);
        assert_null(tg_keyring_find(k, r.hash));
    }
    tg_keyring_free(k);
}

static void
empty_keyring_finds_nothing(void **state)
{
    struct tg_keyring *k = tg_keyring_new();
    unsigned char h[TG_SHA256_BYTES] = {0};
    assert_int_equal(tg_keyring_count(k), 0);
    assert_null(tg_keyring_find(k, h));
    tg_keyring_free(k);
    tg_keyring_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generated_keys_are_wellformed_and_unique),
        cmocka_unit_test(wellformed_rejects_wrong_shapes),
        cmocka_unit_test(hash_is_hmac_sha256_of_the_pepper),
        cmocka_unit_test(redaction_shows_prefix_and_ends_only),
        cmocka_unit_test(keyring_find_miss_and_revoked),
        cmocka_unit_test(keyring_holds_many_keys),
        cmocka_unit_test(empty_keyring_finds_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
