/*
 * observe.c: fans a settled request out to the metrics, the access log and the monitor.
 */
#include "gateway/observe.h"

#include "gateway/access_log.h"
#include "gateway/metrics.h"
#include "monitor/monitor.h"

void
tg_observe(const struct tg_observation *o)
{
    tg_metrics_record(o->row, o->upstream_ms);
    tg_access_log_push(o);
    tg_monitor_observe(o);
}
