/* crypto.c: OpenSSL-backed helpers (see crypto.h). */
#include "core/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

int
tg_random_bytes(void *out, size_t n)
{
    return RAND_bytes(out, (int)n) == 1 ? 0 : TG_EIO;
}

void
tg_sha256(const void *data, size_t n, unsigned char out[TG_SHA256_BYTES])
{
    unsigned int len = 0;
    EVP_Digest(data, n, out, &len, EVP_sha256(), NULL);
}

/*
 * HMAC-SHA256 is computed on every request (the key's hash), always with the same key (the
 * pepper). Setting HMAC up from scratch each time makes OpenSSL look the algorithm up and
 * absorb the padded key again; instead each thread keeps the digest states with the inner and
 * outer pads absorbed for the last key it saw, and a call copies them (RFC 2104 by hand).
 */
#define HMAC_BLOCK 64

struct hmac_cache {
    unsigned char key[HMAC_BLOCK]; /* the key as given (keys longer than a block not cached) */
    size_t key_len;
    EVP_MD_CTX *inner; /* SHA-256 state after key ^ ipad */
    EVP_MD_CTX *outer; /* SHA-256 state after key ^ opad */
    EVP_MD_CTX *work;
};

static pthread_key_t hmac_tls;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void
hmac_cache_free(void *arg)
{
    struct hmac_cache *c = arg;
    EVP_MD_CTX_free(c->inner);
    EVP_MD_CTX_free(c->outer);
    EVP_MD_CTX_free(c->work);
    free(c);
}

static void
hmac_tls_init(void)
{
    pthread_key_create(&hmac_tls, hmac_cache_free);
}

/* The calling thread's cache, prepared for key; NULL when it cannot be (then the caller uses
 * the one-shot path). */
static struct hmac_cache *
hmac_cache_for(const void *key, size_t key_len)
{
    if (key_len > HMAC_BLOCK || pthread_once(&hmac_once, hmac_tls_init) != 0) {
        return NULL;
    }
    struct hmac_cache *c = pthread_getspecific(hmac_tls);
    if (c != NULL && c->key_len == key_len && memcmp(c->key, key, key_len) == 0) {
        return c;
    }
    if (c == NULL) {
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            return NULL;
        }
        c->inner = EVP_MD_CTX_new();
        c->outer = EVP_MD_CTX_new();
        c->work = EVP_MD_CTX_new();
        if (c->inner == NULL || c->outer == NULL || c->work == NULL ||
            pthread_setspecific(hmac_tls, c) != 0) {
            hmac_cache_free(c);
            return NULL;
        }
    }
    unsigned char ipad[HMAC_BLOCK], opad[HMAC_BLOCK];
    memset(ipad, 0x36, sizeof(ipad));
    memset(opad, 0x5c, sizeof(opad));
    for (size_t i = 0; i < key_len; i++) {
        ipad[i] ^= ((const unsigned char *)key)[i];
        opad[i] ^= ((const unsigned char *)key)[i];
    }
    c->key_len = 0; /* invalid until both states are ready */
    if (EVP_DigestInit_ex(c->inner, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c->inner, ipad, sizeof(ipad)) != 1 ||
        EVP_DigestInit_ex(c->outer, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c->outer, opad, sizeof(opad)) != 1) {
        return NULL;
    }
    memcpy(c->key, key, key_len);
    c->key_len = key_len;
    return c;
}

void
tg_hmac_sha256(const void *key, size_t key_len, const void *data, size_t n,
               unsigned char out[TG_SHA256_BYTES])
{
    struct hmac_cache *c = hmac_cache_for(key, key_len);
    unsigned char inner[TG_SHA256_BYTES];
    unsigned int len = 0;
    if (c != NULL && EVP_MD_CTX_copy_ex(c->work, c->inner) == 1 &&
        EVP_DigestUpdate(c->work, data, n) == 1 && EVP_DigestFinal_ex(c->work, inner, &len) == 1 &&
        EVP_MD_CTX_copy_ex(c->work, c->outer) == 1 &&
        EVP_DigestUpdate(c->work, inner, sizeof(inner)) == 1 &&
        EVP_DigestFinal_ex(c->work, out, &len) == 1) {
        return;
    }
    HMAC(EVP_sha256(), key, (int)key_len, data, n, out, &len);
}

bool
tg_mem_equal_ct(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void
tg_hex_encode(char *out, const void *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int
tg_hex_decode(void *out, const char *hex, size_t n)
{
    unsigned char *p = out;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]);
        int lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);
        if (lo < 0) {
            return TG_EPARSE;
        }
        p[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

size_t
tg_base64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

static size_t
b64(char *out, const void *in, size_t n, const char *alphabet, bool pad)
{
    const unsigned char *p = in;
    size_t o = 0;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        out[o++] = alphabet[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0);
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        if (i + 1 < n) {
            out[o++] = alphabet[v >> 6 & 63];
        } else if (pad) {
            out[o++] = '=';
        }
        if (pad) {
            out[o++] = '=';
        }
    }
    out[o] = '\0';
    return o;
}

size_t
tg_base64_encode(char *out, const void *in, size_t n)
{
    return b64(out, in, n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
               true);
}

size_t
tg_base64url_encode(char *out, const void *in, size_t n)
{
    return b64(out, in, n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
               false);
}

void
tg_id_new(char *out, size_t cap, const char *prefix, size_t hex_chars)
{
    unsigned char raw[32];
    char hex[65];
    if (hex_chars > 64) {
        hex_chars = 64;
    }
    if (tg_random_bytes(raw, sizeof(raw)) < 0) {
        /* RAND_bytes only fails when the system has no entropy source at all. */
        abort();
    }
    tg_hex_encode(hex, raw, sizeof(raw));
    hex[hex_chars] = '\0';
    snprintf(out, cap, "%s%s", prefix, hex);
}
