/*
 * access_log.h: one JSON line per request (request id, key id, project, model, deployment,
 * status, tokens, cost, latency), written by a background thread, never on a loop thread.
 *
 * Never the key itself, and no prompt or completion text unless the request's project turns
 * body logging on (settings "logging": {"bodies": true}, gateway/state.h).
 *
 * Loop threads hand a copy of the request's fields to a bounded queue (a mutex held for a
 * copy, never for I/O); the writer thread formats and appends them. When the queue is full a
 * line is dropped and counted (tg_access_log_dropped, /metrics
 * tollgate_access_log_dropped_total) rather than making a request wait on the disk. The line
 * format is in docs/observability.md; tg_access_log_format writes it (tests drive it alone).
 * The file is opened in append mode and reopened on tg_access_log_reopen (SIGHUP).
 */
#ifndef TG_GATEWAY_ACCESS_LOG_H
#define TG_GATEWAY_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "gateway/observe.h"

/* A body kept for the log is cut at this many bytes ("request_body_truncated": true). */
#define TG_ACCESS_LOG_MAX_BODY_BYTES (1024 * 1024)

/* The bodies waiting in the queue, all lines together, stay under this many bytes: a line
 * whose bodies would pass it is dropped (and counted) like one that finds the queue full. */
#define TG_ACCESS_LOG_MAX_QUEUED_BODY_BYTES (64 * 1024 * 1024)

/* Starts the writer: appends to the file at path (created 0640 when missing), or to standard
 * output when path is "-"; queue_cap lines may wait. Returns 0, or a negative code when the
 * file cannot be opened (logged). One log per process; start-up only (before the workers). */
int tg_access_log_start(const char *path, size_t queue_cap);

/* Writes every queued line, closes the file and ends the thread (after the workers stopped,
 * so a graceful stop loses no line). A no-op when the log was never started. */
void tg_access_log_stop(void);

/* Log rotation (SIGHUP): the writer reopens the file at the configured path before its next
 * write, so lines go to a new file once the old one was renamed. Thread-safe; a no-op for
 * standard output or when the log is off. */
void tg_access_log_reopen(void);

/* Queues o's line (thread-safe, never blocks on I/O). A no-op when the log is off. */
void tg_access_log_push(const struct tg_observation *o);

/* Lines dropped because the queue was full, since start. */
uint64_t tg_access_log_dropped(void);

/* Appends o's line (one JSON object and "\n") to out. Bodies are written when o carries them
 * (the caller decides), each cut at TG_ACCESS_LOG_MAX_BODY_BYTES; bytes that are not UTF-8
 * become U+FFFD. Returns 0 or TG_ENOMEM (out's cap). */
int tg_access_log_format(struct tg_buf *out, const struct tg_observation *o);

#endif
