/*
 * auth_test.c: bearer authentication as a pure decision (policy/auth.h): header parsing,
 * unknown, revoked and expired keys, admin versus project keys, the pepper, and the 401
 * messages (which must never echo a key).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/auth.h"
#include "policy/keys.h"

static const unsigned char pepper[] = "unit-test-pepper";
#define PEPPER_LEN (sizeof(pepper) - 1)
#define NOW 1700000000000LL

struct fx {
    struct tg_keyring *ring;
    char project[TG_KEY_LEN + 1];
    char admin[TG_KEY_LEN + 1];
    char revoked[TG_KEY_LEN + 1];
    char expired[TG_KEY_LEN + 1];
    char expiring[TG_KEY_LEN + 1]; /* expires later than NOW */
    char unknown[TG_KEY_LEN + 1];
};

static void
add(struct tg_keyring *ring, const char *value, const char *id, enum tg_key_kind kind,
    int64_t expires_ms, int64_t revoked_ms)
{
    struct tg_key_rec r = {
        .id = id,
        .org_id = "org-1",
        .project_id = kind == TG_KEY_PROJECT ? "proj_1" : NULL,
        .name = id,
        .redacted = "tg-x",
        .kind = kind,
        .role = kind == TG_KEY_PROJECT ? "member" : "owner",
        .expires_ms = expires_ms,
        .revoked_ms = revoked_ms,
    };
    tg_key_hash(pepper, PEPPER_LEN, value, r.hash);
    tg_keyring_add(ring, &r);
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->ring = tg_keyring_new();
    char *keys[] = {f->project, f->admin, f->revoked, f->expired, f->expiring, f->unknown};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (tg_key_generate(keys[i]) != 0) {
            return -1;
        }
    }
    add(f->ring, f->project, "key_project", TG_KEY_PROJECT, 0, 0);
    add(f->ring, f->admin, "key_admin", TG_KEY_ADMIN, 0, 0);
    add(f->ring, f->revoked, "key_revoked", TG_KEY_PROJECT, 0, NOW - 1000);
    add(f->ring, f->expired, "key_expired", TG_KEY_PROJECT, NOW, 0);
    add(f->ring, f->expiring, "key_expiring", TG_KEY_PROJECT, NOW + 1, 0);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    tg_keyring_free(f->ring);
    free(f);
    return 0;
}

/* Authenticates with header as the Authorization value (NULL: no header) at NOW. */
static enum tg_auth_result
auth(const struct fx *f, const char *header, const struct tg_key_entry **out)
{
    *out = NULL;
    return tg_auth_bearer(f->ring, pepper, PEPPER_LEN, header, NOW, out);
}

static enum tg_auth_result
auth_key(const struct fx *f, const char *scheme, const char *key, const struct tg_key_entry **out)
{
    char header[128];
    snprintf(header, sizeof(header), "%s%s", scheme, key);
    return auth(f, header, out);
}

static void
missing_or_not_bearer(void **state)
{
    struct fx *f = *state;
    const struct tg_key_entry *e;
    assert_int_equal(auth(f, NULL, &e), TG_AUTH_MISSING);
    assert_int_equal(auth(f, "", &e), TG_AUTH_MISSING);
    assert_int_equal(auth(f, "Bearer", &e), TG_AUTH_MISSING);
    assert_int_equal(auth(f, "Bearer ", &e), TG_AUTH_MISSING);
    assert_int_equal(auth(f, "Bearer     ", &e), TG_AUTH_MISSING);
    assert_int_equal(auth_key(f, "Basic ", f->project, &e), TG_AUTH_MISSING);
    assert_int_equal(auth_key(f, "", f->project, &e), TG_AUTH_MISSING); /* no scheme */
    assert_int_equal(auth_key(f, "Bearer:", f->project, &e), TG_AUTH_MISSING);
    assert_null(e);
}

static void
project_and_admin_keys_are_found(void **state)
{
    struct fx *f = *state;
    const struct tg_key_entry *e;
    assert_int_equal(auth_key(f, "Bearer ", f->project, &e), TG_AUTH_OK);
    assert_non_null(e);
    assert_string_equal(e->id, "key_project");
    assert_int_equal(e->kind, TG_KEY_PROJECT);
    assert_string_equal(e->project_id, "proj_1");
    assert_string_equal(e->org_id, "org-1");

    assert_int_equal(auth_key(f, "Bearer ", f->admin, &e), TG_AUTH_OK);
    assert_string_equal(e->id, "key_admin");
    assert_int_equal(e->kind, TG_KEY_ADMIN);
    assert_null(e->project_id);
    assert_string_equal(e->role, "owner");

    /* The scheme is case-insensitive and extra spaces before the token are allowed. */
    assert_int_equal(auth_key(f, "bearer ", f->project, &e), TG_AUTH_OK);
    assert_int_equal(auth_key(f, "BEARER   ", f->project, &e), TG_AUTH_OK);
    assert_string_equal(e->id, "key_project");
}

static void
unknown_and_malformed_tokens_are_invalid(void **state)
{
    struct fx *f = *state;
    const struct tg_key_entry *e;
    assert_int_equal(auth_key(f, "Bearer ", f->unknown, &e), TG_AUTH_INVALID);
    assert_int_equal(auth(f, "Bearer placeholder-provider-style-token", &e), TG_AUTH_INVALID);
    assert_int_equal(auth(f, "Bearer tg-short", &e), TG_AUTH_INVALID);
    char longer[TG_KEY_LEN + 2];
    snprintf(longer, sizeof(longer), "%sA", f->project);
    assert_int_equal(auth_key(f, "Bearer ", longer, &e), TG_AUTH_INVALID);
    char altered[TG_KEY_LEN + 1];
    snprintf(altered, sizeof(altered), "%s", f->project);
    altered[20] = altered[20] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_key(f, "Bearer ", altered, &e), TG_AUTH_INVALID);
    assert_null(e);

    /* The same key under another pepper is a stranger. */
    char header[80];
    snprintf(header, sizeof(header), "Bearer %s", f->project);
    assert_int_equal(tg_auth_bearer(f->ring, (const unsigned char *)"other", 5, header, NOW, &e),
                     TG_AUTH_INVALID);
}

static void
revoked_and_expired_keys_are_refused(void **state)
{
    struct fx *f = *state;
    const struct tg_key_entry *e;
    assert_int_equal(auth_key(f, "Bearer ", f->revoked, &e), TG_AUTH_REVOKED);
    assert_null(e);
    /* expires_ms is the first instant the key no longer works. */
    assert_int_equal(auth_key(f, "Bearer ", f->expired, &e), TG_AUTH_EXPIRED);
    assert_null(e);
    assert_int_equal(auth_key(f, "Bearer ", f->expiring, &e), TG_AUTH_OK);
    assert_string_equal(e->id, "key_expiring");
    char header[80];
    snprintf(header, sizeof(header), "Bearer %s", f->expiring);
    e = NULL;
    assert_int_equal(tg_auth_bearer(f->ring, pepper, PEPPER_LEN, header, NOW + 1, &e),
                     TG_AUTH_EXPIRED);
    assert_null(e);
}

static void
messages_explain_without_echoing_the_key(void **state)
{
    struct fx *f = *state;
    char msg[320];
    char header[80];

    tg_auth_message(TG_AUTH_MISSING, NULL, msg, sizeof(msg));
    assert_non_null(strstr(msg, "You didn't provide an API key"));

    snprintf(header, sizeof(header), "Bearer %s", f->unknown);
    tg_auth_message(TG_AUTH_INVALID, header, msg, sizeof(msg));
    assert_non_null(strstr(msg, "Incorrect API key provided: tg-****"));
    assert_non_null(strstr(msg, f->unknown + TG_KEY_LEN - 4)); /* the last 4 help find it */
    char middle[9];
    memcpy(middle, f->unknown + 10, 8);
    middle[8] = '\0';
    assert_null(strstr(msg, middle));
    assert_null(strstr(msg, "revoked"));

    snprintf(header, sizeof(header), "Bearer %s", f->revoked);
    tg_auth_message(TG_AUTH_REVOKED, header, msg, sizeof(msg));
    assert_non_null(strstr(msg, "revoked"));
    assert_null(strstr(msg, f->revoked + 3));

    snprintf(header, sizeof(header), "Bearer %s", f->expired);
    tg_auth_message(TG_AUTH_EXPIRED, header, msg, sizeof(msg));
    assert_non_null(strstr(msg, "expired"));

    /* A short token is hidden entirely. */
    tg_auth_message(TG_AUTH_INVALID, "Bearer abc", msg, sizeof(msg));
    assert_non_null(strstr(msg, "Incorrect API key provided: ****."));
    assert_null(strstr(msg, "abc"));

    /* A small buffer is truncated, never overrun. */
    char tiny[16];
    memset(tiny, 'x', sizeof(tiny));
    tg_auth_message(TG_AUTH_MISSING, NULL, tiny, sizeof(tiny));
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(missing_or_not_bearer, setup, teardown),
        cmocka_unit_test_setup_teardown(project_and_admin_keys_are_found, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_and_malformed_tokens_are_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(revoked_and_expired_keys_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(messages_explain_without_echoing_the_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
