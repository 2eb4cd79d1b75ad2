/* clock.h: time in milliseconds (monotonic for durations, Unix for records). */
#ifndef TG_CORE_CLOCK_H
#define TG_CORE_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds, for timeouts and latencies. */
uint64_t tg_clock_mono_ms(void);

/* Monotonic microseconds, for fine latency measurements. */
uint64_t tg_clock_mono_us(void);

/* Wall-clock milliseconds since the Unix epoch, for records. */
int64_t tg_clock_unix_ms(void);

#endif
