/*
 * access_log.h: one JSON line per request (request id, key id, project, model, deployment,
 * status, tokens, cost, latency), written by a background thread, never on a loop thread.
 *
 * Never the key itself, and no prompt or completion text unless the request's project turns
 * body logging on.
 */
#ifndef TG_GATEWAY_ACCESS_LOG_H
#define TG_GATEWAY_ACCESS_LOG_H

#include "gateway/observe.h"

/* Queues o's line (thread-safe, never blocks on I/O). A no-op when the log is off. */
void tg_access_log_push(const struct tg_observation *o);

#endif
