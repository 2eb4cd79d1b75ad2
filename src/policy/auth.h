/*
 * auth.h: authentication as a pure decision: an Authorization header value in, a key entry
 * or a reason out. No I/O; the caller turns the reason into the OpenAI-style 401.
 */
#ifndef TG_POLICY_AUTH_H
#define TG_POLICY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "policy/keys.h"

enum tg_auth_result {
    TG_AUTH_OK,
    TG_AUTH_MISSING, /* no Authorization header, or not "Bearer <token>" */
    TG_AUTH_INVALID, /* not a tollgate key, or unknown */
    TG_AUTH_REVOKED, /* known but revoked */
    TG_AUTH_EXPIRED, /* known but past expires_ms */
};

/* Decides on the header value (may be NULL). On TG_AUTH_OK sets *out to the entry, which
 * belongs to keys. */
enum tg_auth_result tg_auth_bearer(const struct tg_keyring *keys, const unsigned char *pepper,
                                   size_t pepper_len, const char *authorization, int64_t now_ms,
                                   const struct tg_key_entry **out);

/* The 401 message for a result, in OpenAI's words; the key is shown redacted. */
void tg_auth_message(enum tg_auth_result r, const char *authorization, char *out, size_t cap);

#endif
