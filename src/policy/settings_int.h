/*
 * settings_int.h: what the parsers of settings objects (limits.c, token_policy.c) share: the
 * error message that names the member, and the check of member names against a list.
 */
#ifndef TG_POLICY_SETTINGS_INT_H
#define TG_POLICY_SETTINGS_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Writes the message (naming the member) into err and returns TG_EPARSE. */
int tg_settings_fail(char *err, size_t err_cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Whether name is one of names (NULL-terminated). */
bool tg_settings_is_listed(const char *name, const char *const *names);

/* Refuses members of obj outside names; where names the object in messages. */
int tg_settings_only(const json_t *obj, const char *const *names, const char *where, char *err,
                     size_t err_cap);

#endif
