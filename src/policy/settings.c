/*
 * settings.c: helpers shared by the settings parsers (settings_int.h).
 */
#include "policy/settings_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"

int
tg_settings_fail(char *err, size_t err_cap, const char *fmt, ...)
{
    if (err != NULL && err_cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_cap, fmt, ap);
        va_end(ap);
    }
    return TG_EPARSE;
}

bool
tg_settings_is_listed(const char *name, const char *const *names)
{
    for (size_t i = 0; names[i] != NULL; i++) {
        if (strcmp(names[i], name) == 0) {
            return true;
        }
    }
    return false;
}

int
tg_settings_only(const json_t *obj, const char *const *names, const char *where, char *err,
                 size_t err_cap)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)obj, name, v)
    {
        if (!tg_settings_is_listed(name, names)) {
            return tg_settings_fail(err, err_cap, "%s: unknown member '%s'", where, name);
        }
    }
    return 0;
}
