/*
 * keys.h: tollgate API keys: making them, hashing them, and the in-memory key table that
 * authentication reads on every request.
 *
 * A key is "tg-" followed by 43 base64url characters (256 random bits). It is shown once, at
 * creation; the store keeps only HMAC-SHA256(pepper, key) and a redacted form
 * ("tg-AbCd...wXyZ"). The pepper is a server-side secret (keys.pepper in the config, else a
 * generated 0600 file in the data directory), so a stolen database alone cannot be used to
 * test guesses.
 *
 * The key table is immutable once built: authentication reads it without locks, and a change
 * (a new or revoked key) builds a new table that replaces the old one (see gateway/state.h).
 */
#ifndef TG_POLICY_KEYS_H
#define TG_POLICY_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "store/store.h"

#define TG_KEY_PREFIX "tg-"
#define TG_KEY_LEN 46 /* "tg-" + 43 */
#define TG_KEY_REDACTED_CAP 24

/* Writes a new random key (TG_KEY_LEN chars + NUL) into out. Returns 0 or TG_EIO. */
int tg_key_generate(char out[TG_KEY_LEN + 1]);

/* True when s has the shape of a tollgate key (prefix, length, alphabet). */
bool tg_key_is_wellformed(const char *s);

/* HMAC-SHA256(pepper, key). */
void tg_key_hash(const unsigned char *pepper, size_t pepper_len, const char *key,
                 unsigned char out[TG_SHA256_BYTES]);

/* "tg-AbCd...wXyZ": prefix, the first 4 and the last 4 characters of the secret part. */
void tg_key_redact(const char *key, char out[TG_KEY_REDACTED_CAP]);

/* What authentication needs to know about a key. Strings are owned by the table. */
struct tg_key_entry {
    unsigned char hash[TG_SHA256_BYTES];
    char *id;
    char *org_id;
    char *project_id; /* NULL for admin keys */
    char *name;
    char *role;
    char *owner_user_id;
    enum tg_key_kind kind;
    int64_t expires_ms; /* 0: never */
    bool is_revoked;
};

struct tg_keyring;

struct tg_keyring *tg_keyring_new(void);
void tg_keyring_free(struct tg_keyring *k);

/* Adds a copy of the record (revoked keys too, so they can be told apart from unknown ones). */
void tg_keyring_add(struct tg_keyring *k, const struct tg_key_rec *r);

/* Looks a hash up (constant-time comparison of the candidate). NULL when absent. */
const struct tg_key_entry *tg_keyring_find(const struct tg_keyring *k,
                                           const unsigned char hash[TG_SHA256_BYTES]);

size_t tg_keyring_count(const struct tg_keyring *k);

#endif
