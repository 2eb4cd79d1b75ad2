/* auth.c: bearer-token authentication against the key table (see auth.h). */
#include "policy/auth.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *
bearer_token(const char *authorization)
{
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0) {
        return NULL;
    }
    const char *t = authorization + 7;
    while (*t == ' ') {
        t++;
    }
    return *t != '\0' ? t : NULL;
}

enum tg_auth_result
tg_auth_bearer(const struct tg_keyring *keys, const unsigned char *pepper, size_t pepper_len,
               const char *authorization, int64_t now_ms, const struct tg_key_entry **out)
{
    const char *token = bearer_token(authorization);
    if (token == NULL) {
        return TG_AUTH_MISSING;
    }
    if (!tg_key_is_wellformed(token)) {
        return TG_AUTH_INVALID;
    }
    unsigned char hash[TG_SHA256_BYTES];
    tg_key_hash(pepper, pepper_len, token, hash);
    const struct tg_key_entry *e = tg_keyring_find(keys, hash);
    if (e == NULL) {
        return TG_AUTH_INVALID;
    }
    if (e->is_revoked) {
        return TG_AUTH_REVOKED;
    }
    if (e->expires_ms != 0 && now_ms >= e->expires_ms) {
        return TG_AUTH_EXPIRED;
    }
    *out = e;
    return TG_AUTH_OK;
}

void
tg_auth_message(enum tg_auth_result r, const char *authorization, char *out, size_t cap)
{
    if (r == TG_AUTH_MISSING) {
        snprintf(out, cap,
                 "You didn't provide an API key. You need to provide your API key in an "
                 "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
        return;
    }
    const char *token = bearer_token(authorization);
    char shown[TG_KEY_REDACTED_CAP] = "****";
    if (token != NULL && strlen(token) >= 12) {
        snprintf(shown, sizeof(shown), "%.3s****%s", token, token + strlen(token) - 4);
    }
    const char *why = r == TG_AUTH_REVOKED   ? "This API key has been revoked. "
                      : r == TG_AUTH_EXPIRED ? "This API key has expired. "
                                             : "";
    snprintf(out, cap,
             "Incorrect API key provided: %s. %sAsk your tollgate administrator for a key.", shown,
             why);
}
