/*
 * monitor.c: the windows of request outcomes per model and deployment.
 */
#include "monitor/monitor.h"

void
tg_monitor_observe(const struct tg_observation *o)
{
    (void)o;
}
