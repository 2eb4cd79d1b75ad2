/*
 * err.h: the one table of error codes.
 *
 * Actions return 0 on success or a negative TG_E* code; predicates return bool. The table
 * below is the only place a code is declared, so names and messages cannot drift apart.
 */
#ifndef TG_CORE_ERR_H
#define TG_CORE_ERR_H

#define TG_ERRNO_MAP(X)                                                                            \
    X(NOMEM, -1, "out of memory")                                                                  \
    X(INVAL, -2, "invalid argument")                                                               \
    X(TOOBIG, -3, "too large")                                                                     \
    X(NOTFOUND, -4, "not found")                                                                   \
    X(EXISTS, -5, "already exists")                                                                \
    X(IO, -6, "input/output error")                                                                \
    X(PARSE, -7, "malformed input")                                                                \
    X(TIMEOUT, -8, "timed out")                                                                    \
    X(CLOSED, -9, "connection closed")                                                             \
    X(DENIED, -10, "permission denied")                                                            \
    X(UPSTREAM, -11, "upstream failure")                                                           \
    X(CONFIG, -12, "bad configuration")                                                            \
    X(STORE, -13, "store failure")                                                                 \
    X(AGAIN, -14, "try again")                                                                     \
    X(LIMIT, -15, "limit reached")                                                                 \
    X(CONNECT, -16, "could not connect")                                                           \
    X(CANCELED, -17, "canceled")

enum tg_err {
    TG_OK = 0,
#define TG_ERR_ENUM(name, value, msg) TG_E##name = value,
    TG_ERRNO_MAP(TG_ERR_ENUM)
#undef TG_ERR_ENUM
};

/* Short message for a code ("unknown error" for anything outside the table). */
const char *tg_strerror(int err);

/* Symbolic name for a code, e.g. "TG_ETIMEOUT". */
const char *tg_err_name(int err);

#endif
