/*
 * monitor.h: live health of models and deployments (sliding windows of requests, errors,
 * latency, time to first token), quality signals (feedback from applications, and automatic
 * ones: finish_reason=length, empty answers, refusals), and the alert rules evaluated over
 * them, whose fired and resolved events go through the notification outbox.
 */
#ifndef TG_MONITOR_MONITOR_H
#define TG_MONITOR_MONITOR_H

#include "gateway/observe.h"

/* Counts one settled request into the windows (thread-safe, cheap, never blocks on I/O). */
void tg_monitor_observe(const struct tg_observation *o);

#endif
