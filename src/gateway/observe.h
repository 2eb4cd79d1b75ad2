/*
 * observe.h: the one place a settled request is reported to everything that watches traffic:
 * the Prometheus metrics (gateway/metrics.h), the access log (gateway/access_log.h) and the
 * monitor's windows, quality signals and alert rules (monitor/monitor.h).
 *
 * Called on a loop thread once per request, after its ledger row is final. Each consumer
 * copies what it keeps; nothing here blocks or writes to a file or the store.
 */
#ifndef TG_GATEWAY_OBSERVE_H
#define TG_GATEWAY_OBSERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct tg_observation {
    const struct tg_ledger_row *row; /* the request's final ledger row */
    int64_t upstream_ms;             /* time waiting on the provider; -1 when none */
    /* Quality signals of a 2xx chat or completions answer (the first choice's):
     * finish_reason as the provider gave it ("" when none or not applicable), whether the
     * answer carried no text and no tool call, and whether the model refused. */
    const char *finish_reason;
    bool is_empty;
    bool is_refusal;
    /* The response cache was consulted (the project caches this endpoint): a request that is
     * not a hit was a miss. */
    bool is_cache_checked;
    /* The bodies, when the project logs them (borrowed; NULL otherwise): the client's request
     * and the answer as relayed (a JSON body, or the stream's SSE text). */
    const char *request_body;
    size_t request_len;
    const char *response_body;
    size_t response_len;
};

/* Reports o to every consumer. */
void tg_observe(const struct tg_observation *o);

#endif
