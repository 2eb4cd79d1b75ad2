/*
 * crypto.h: random bytes, hashes and encodings (OpenSSL underneath).
 *
 * Secrets pass through here as bytes; nothing in this module logs or keeps them.
 */
#ifndef TG_CORE_CRYPTO_H
#define TG_CORE_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#define TG_SHA256_BYTES 32

/* Cryptographically strong random bytes. Returns 0 or TG_EIO. */
int tg_random_bytes(void *out, size_t n);

void tg_sha256(const void *data, size_t n, unsigned char out[TG_SHA256_BYTES]);
void tg_hmac_sha256(const void *key, size_t key_len, const void *data, size_t n,
                    unsigned char out[TG_SHA256_BYTES]);

/* Constant-time comparison of n bytes. */
bool tg_mem_equal_ct(const void *a, const void *b, size_t n);

/* Lower-case hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void tg_hex_encode(char *out, const void *in, size_t n);

/* Decodes 2n hex characters into n bytes. Returns 0 or TG_EPARSE. */
int tg_hex_decode(void *out, const char *hex, size_t n);

/* Base64 (standard alphabet, padded) and base64url (no padding) of n bytes into out, which
 * must hold tg_base64_len(n) + 1 bytes. Returns the encoded length. */
size_t tg_base64_len(size_t n);
size_t tg_base64_encode(char *out, const void *in, size_t n);
size_t tg_base64url_encode(char *out, const void *in, size_t n);

/* A fresh identifier: prefix followed by hex_chars random hex characters (hex_chars <= 64),
 * written to out (cap bytes). Example: tg_id_new(out, sizeof(out), "req_", 32). */
void tg_id_new(char *out, size_t cap, const char *prefix, size_t hex_chars);

#endif
