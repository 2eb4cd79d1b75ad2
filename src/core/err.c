/* err.c: messages and names for the codes declared in err.h. */
#include "core/err.h"

const char *
tg_strerror(int err)
{
    switch (err) {
    case TG_OK:
        return "ok";
#define TG_ERR_MSG(name, value, msg)                                                               \
    case value:                                                                                    \
        return msg;
        TG_ERRNO_MAP(TG_ERR_MSG)
#undef TG_ERR_MSG
    }
    return "unknown error";
}

const char *
tg_err_name(int err)
{
    switch (err) {
    case TG_OK:
        return "TG_OK";
#define TG_ERR_NAME(name, value, msg)                                                              \
    case value:                                                                                    \
        return "TG_E" #name;
        TG_ERRNO_MAP(TG_ERR_NAME)
#undef TG_ERR_NAME
    }
    return "TG_E?";
}
