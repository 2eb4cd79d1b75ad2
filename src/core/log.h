/*
 * log.h: the process log (stderr), one line per event, safe from any thread.
 *
 * Lines look like `2026-11-28T14:03:21.123Z info  worker 1 listening on 127.0.0.1:8080`.
 * Never log a secret: keys are logged by id, provider keys not at all.
 */
#ifndef TG_CORE_LOG_H
#define TG_CORE_LOG_H

enum tg_log_level { TG_LOG_DEBUG, TG_LOG_INFO, TG_LOG_WARN, TG_LOG_ERROR };

void tg_log_set_level(enum tg_log_level level);

/* Parses "debug", "info", "warn" or "error". Returns 0 or TG_EINVAL. */
int tg_log_level_parse(const char *s, enum tg_log_level *out);

void tg_log(enum tg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define tg_log_debug(...) tg_log(TG_LOG_DEBUG, __VA_ARGS__)
#define tg_log_info(...) tg_log(TG_LOG_INFO, __VA_ARGS__)
#define tg_log_warn(...) tg_log(TG_LOG_WARN, __VA_ARGS__)
#define tg_log_error(...) tg_log(TG_LOG_ERROR, __VA_ARGS__)

#endif
