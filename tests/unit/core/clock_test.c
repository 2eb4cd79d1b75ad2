/* clock_test.c: the test offset shifts the Unix clock only, and 0 restores it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/clock.h"

static void
offset_shifts_unix_clock_only(void **state)
{
    (void)state;
    int64_t day = 86400000;
    int64_t before = tg_clock_unix_ms();
    uint64_t mono_before = tg_clock_mono_ms();
    tg_clock_set_test_offset_ms(40 * day);
    assert_int_equal(tg_clock_test_offset_ms(), 40 * day);
    int64_t shifted = tg_clock_unix_ms();
    /* Within a minute of the shifted time (the test takes far less). */
    assert_true(shifted - before >= 40 * day);
    assert_true(shifted - before < 40 * day + 60000);
    /* The monotonic clock is not shifted. */
    assert_true(tg_clock_mono_ms() - mono_before < 60000);
    tg_clock_set_test_offset_ms(0);
    int64_t back = tg_clock_unix_ms();
    assert_true(back >= before && back - before < 60000);
}

static void
enabled_follows_environment(void **state)
{
    (void)state;
    unsetenv("TOLLGATE_TEST_CLOCK");
    assert_false(tg_clock_test_enabled());
    setenv("TOLLGATE_TEST_CLOCK", "0", 1);
    assert_false(tg_clock_test_enabled());
    setenv("TOLLGATE_TEST_CLOCK", "1", 1);
    assert_true(tg_clock_test_enabled());
    unsetenv("TOLLGATE_TEST_CLOCK");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(offset_shifts_unix_clock_only),
        cmocka_unit_test(enabled_follows_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
