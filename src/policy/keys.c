/*
 * keys.c: tollgate API keys and the in-memory key table (see keys.h).
 *
 * The key table answers one question on every request: which key has this hash? It is an
 * open-addressing table (linear probing, at most half full) of pointers to entries, indexed by
 * the first 8 bytes of the hash. Those bytes are already uniformly distributed (HMAC output),
 * so they are the slot index as they are; a matching tag is confirmed by a constant-time
 * comparison of the whole hash. Entries are allocated one by one so the pointers that
 * tg_keyring_find hands out never move; the table is filled once and then only read, by any
 * number of threads without locks.
 */
#include "policy/keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/mem.h"

#define SECRET_LEN (TG_KEY_LEN - (sizeof(TG_KEY_PREFIX) - 1))
#define SECRET_BYTES 32 /* 256 bits -> 43 base64url characters */

_Static_assert(SECRET_LEN == 43, "a key's secret part is 43 base64url characters");

int
tg_key_generate(char out[TG_KEY_LEN + 1])
{
    unsigned char raw[SECRET_BYTES];
    char enc[64];
    if (tg_random_bytes(raw, sizeof(raw)) < 0) {
        out[0] = '\0';
        return TG_EIO;
    }
    size_t n = tg_base64url_encode(enc, raw, sizeof(raw));
    memset(raw, 0, sizeof(raw));
    if (n != SECRET_LEN) {
        memset(enc, 0, sizeof(enc));
        out[0] = '\0';
        return TG_EIO;
    }
    memcpy(out, TG_KEY_PREFIX, sizeof(TG_KEY_PREFIX) - 1);
    memcpy(out + sizeof(TG_KEY_PREFIX) - 1, enc, SECRET_LEN + 1);
    memset(enc, 0, sizeof(enc));
    return 0;
}

static bool
is_base64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

bool
tg_key_is_wellformed(const char *s)
{
    if (s == NULL || strncmp(s, TG_KEY_PREFIX, sizeof(TG_KEY_PREFIX) - 1) != 0) {
        return false;
    }
    const char *p = s + sizeof(TG_KEY_PREFIX) - 1;
    size_t n = 0;
    while (n <= SECRET_LEN && p[n] != '\0') {
        if (!is_base64url(p[n])) {
            return false;
        }
        n++;
    }
    return n == SECRET_LEN && p[n] == '\0';
}

void
tg_key_hash(const unsigned char *pepper, size_t pepper_len, const char *key,
            unsigned char out[TG_SHA256_BYTES])
{
    tg_hmac_sha256(pepper, pepper_len, key, strlen(key), out);
}

void
tg_key_redact(const char *key, char out[TG_KEY_REDACTED_CAP])
{
    const size_t plen = sizeof(TG_KEY_PREFIX) - 1;
    const char *secret = strncmp(key, TG_KEY_PREFIX, plen) == 0 ? key + plen : key;
    size_t n = strlen(secret);
    /* A secret too short to show 8 of its characters would be mostly shown: hide it all. */
    if (n < 16) {
        snprintf(out, TG_KEY_REDACTED_CAP, "%s****", TG_KEY_PREFIX);
        return;
    }
    snprintf(out, TG_KEY_REDACTED_CAP, "%s%.4s...%.4s", TG_KEY_PREFIX, secret, secret + n - 4);
}

/* ---- key table ------------------------------------------------------------------------- */

struct slot {
    uint64_t tag; /* first 8 bytes of the hash */
    struct tg_key_entry *e;
};

struct tg_keyring {
    struct slot *slots;
    size_t slots_cap; /* a power of two, at least twice count */
    size_t count;
};

static uint64_t
tag_of(const unsigned char hash[TG_SHA256_BYTES])
{
    uint64_t t;
    memcpy(&t, hash, sizeof(t));
    return t;
}

struct tg_keyring *
tg_keyring_new(void)
{
    struct tg_keyring *k = tg_xcalloc(1, sizeof(*k));
    k->slots_cap = 16;
    k->slots = tg_xcalloc(k->slots_cap, sizeof(*k->slots));
    return k;
}

static void
entry_free(struct tg_key_entry *e)
{
    free(e->id);
    free(e->org_id);
    free(e->project_id);
    free(e->name);
    free(e->role);
    free(e->owner_user_id);
    free(e);
}

void
tg_keyring_free(struct tg_keyring *k)
{
    if (k == NULL) {
        return;
    }
    for (size_t i = 0; i < k->slots_cap; i++) {
        if (k->slots[i].e != NULL) {
            entry_free(k->slots[i].e);
        }
    }
    free(k->slots);
    free(k);
}

/* The slot holding hash, or the empty slot where it would go. */
static struct slot *
probe(const struct tg_keyring *k, const unsigned char hash[TG_SHA256_BYTES])
{
    uint64_t tag = tag_of(hash);
    size_t mask = k->slots_cap - 1;
    for (size_t i = (size_t)tag & mask;; i = (i + 1) & mask) {
        struct slot *s = &k->slots[i];
        if (s->e == NULL || (s->tag == tag && tg_mem_equal_ct(s->e->hash, hash, TG_SHA256_BYTES))) {
            return s;
        }
    }
}

static void
grow(struct tg_keyring *k)
{
    struct slot *old = k->slots;
    size_t old_cap = k->slots_cap;
    k->slots_cap *= 2;
    k->slots = tg_xcalloc(k->slots_cap, sizeof(*k->slots));
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].e != NULL) {
            *probe(k, old[i].e->hash) = old[i];
        }
    }
    free(old);
}

static char *
dup_or_null(const char *s)
{
    return s != NULL ? tg_xstrdup(s) : NULL;
}

void
tg_keyring_add(struct tg_keyring *k, const struct tg_key_rec *r)
{
    if (2 * (k->count + 1) > k->slots_cap) {
        grow(k);
    }
    struct tg_key_entry *e = tg_xcalloc(1, sizeof(*e));
    memcpy(e->hash, r->hash, TG_SHA256_BYTES);
    e->id = dup_or_null(r->id);
    e->org_id = dup_or_null(r->org_id);
    e->project_id = dup_or_null(r->project_id);
    e->name = dup_or_null(r->name);
    e->role = dup_or_null(r->role);
    e->owner_user_id = dup_or_null(r->owner_user_id);
    e->kind = r->kind;
    e->expires_ms = r->expires_ms;
    e->is_revoked = r->revoked_ms != 0;
    struct slot *s = probe(k, r->hash);
    if (s->e != NULL) {
        /* The same secret stored twice (say, revoked and then added again): the active
         * record is the one that decides. */
        if (s->e->is_revoked && !e->is_revoked) {
            entry_free(s->e);
            s->e = e;
        } else {
            entry_free(e);
        }
        return;
    }
    s->tag = tag_of(r->hash);
    s->e = e;
    k->count++;
}

const struct tg_key_entry *
tg_keyring_find(const struct tg_keyring *k, const unsigned char hash[TG_SHA256_BYTES])
{
    return probe(k, hash)->e;
}

size_t
tg_keyring_count(const struct tg_keyring *k)
{
    return k->count;
}
