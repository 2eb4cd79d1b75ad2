/*
 * clock.c: thin wrappers over clock_gettime, and the test-only offset of the Unix clock.
 *
 * The offset is one process-wide atomic: every thread that reads the Unix clock (admission,
 * ledger rows, the admin API) sees the same shifted time, and the monotonic clocks (timeouts)
 * are never shifted, so moving the test clock cannot fire or stall a timer.
 */
#include "core/clock.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int_fast64_t test_offset_ms;

uint64_t
tg_clock_mono_ms(void)
{
    return tg_clock_mono_us() / 1000;
}

uint64_t
tg_clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t
tg_clock_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
           (int64_t)atomic_load_explicit(&test_offset_ms, memory_order_relaxed);
}

void
tg_clock_set_test_offset_ms(int64_t offset_ms)
{
    atomic_store(&test_offset_ms, offset_ms);
}

int64_t
tg_clock_test_offset_ms(void)
{
    return (int64_t)atomic_load(&test_offset_ms);
}

bool
tg_clock_test_enabled(void)
{
    /* getenv is read each time: cheap, called only by the test route, and no start-up
     * ordering to get wrong. */
    const char *v = getenv("TOLLGATE_TEST_CLOCK");
    return v != NULL && strcmp(v, "1") == 0;
}
