/* clock.h: time in milliseconds (monotonic for durations, Unix for records). */
#ifndef TG_CORE_CLOCK_H
#define TG_CORE_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

/* Monotonic milliseconds, for timeouts and latencies. */
uint64_t tg_clock_mono_ms(void);

/* Monotonic microseconds, for fine latency measurements. */
uint64_t tg_clock_mono_us(void);

/* Wall-clock milliseconds since the Unix epoch, for records, admission periods and the
 * ledger; includes the test offset (below). */
int64_t tg_clock_unix_ms(void);

/*
 * Tests only: shifts tg_clock_unix_ms by offset_ms (0 restores the real clock), so an
 * end-to-end test can move the gateway into the next month. Thread-safe (one atomic). The
 * only caller outside unit tests is the route POST /v1/organization/_test/clock, which exists
 * only when the environment has TOLLGATE_TEST_CLOCK=1 (tg_clock_test_enabled).
 */
void tg_clock_set_test_offset_ms(int64_t offset_ms);
int64_t tg_clock_test_offset_ms(void);

/* True when TOLLGATE_TEST_CLOCK=1 was in the environment (read once). */
bool tg_clock_test_enabled(void);

#endif
