/*
 * notify_config_test.c: the notifications section of the config (gateway/config.h): defaults,
 * every SMTP key read, booleans in their YAML spellings, credentials only as references (an
 * inline password refused without echoing it), ranges and unknown keys named with their line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/config.h"

static char path[64];

static int
load(const char *yaml, struct tg_config **c, char *err, size_t err_cap)
{
    snprintf(path, sizeof(path), "/tmp/tg-notify-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    int rc = tg_config_load(path, c, err, err_cap);
    unlink(path);
    return rc;
}

static void
defaults_without_the_section(void **state)
{
    struct tg_config *c = NULL;
    char err[512] = "";
    assert_int_equal(load("workers: 1\n", &c, err, sizeof(err)), 0);
    assert_null(c->smtp.host);
    assert_int_equal(c->smtp.port, 25);
    assert_false(c->smtp.starttls);
    assert_false(c->smtp.is_tls);
    assert_string_equal(c->smtp.from, "tollgate@localhost");
    assert_int_equal(c->smtp.timeout_ms, 30000);
    assert_int_equal(c->notify_interval_ms, 1000);
    assert_int_equal(c->webhook_timeout_ms, 10000);
    tg_config_free(c);
}

static void
every_key_is_read(void **state)
{
    struct tg_config *c = NULL;
    char err[512] = "";
    const char *yaml = "notifications:\n"
                       "  interval_ms: 250\n"
                       "  webhook_timeout_ms: 4000\n"
                       "  smtp:\n"
                       "    host: mail.example.com\n"
                       "    port: 587\n"
                       "    starttls: yes\n"
                       "    tls: false\n"
                       "    username: env:SMTP_USERNAME\n"
                       "    password: file:/run/secrets/smtp\n"
                       "    from: alerts@example.com\n"
                       "    timeout_ms: 9000\n";
    assert_int_equal(load(yaml, &c, err, sizeof(err)), 0);
    assert_string_equal(c->smtp.host, "mail.example.com");
    assert_int_equal(c->smtp.port, 587);
    assert_true(c->smtp.starttls);
    assert_false(c->smtp.is_tls);
    assert_string_equal(c->smtp.username, "env:SMTP_USERNAME");
    assert_string_equal(c->smtp.password, "file:/run/secrets/smtp");
    assert_string_equal(c->smtp.from, "alerts@example.com");
    assert_int_equal(c->smtp.timeout_ms, 9000);
    assert_int_equal(c->notify_interval_ms, 250);
    assert_int_equal(c->webhook_timeout_ms, 4000);
    tg_config_free(c);
}

static void
bad_values_are_named_with_their_line(void **state)
{
    struct tg_config *c = NULL;
    char err[512] = "";
    /* An inline password: refused, and the value is not in the message. */
    assert_true(load("notifications:\n  smtp:\n    host: h\n    password: hunter2secret\n", &c, err,
                     sizeof(err)) < 0);
    assert_null(c);
    assert_non_null(strstr(err, ":4: notifications.smtp.password: inline secrets are refused"));
    assert_non_null(strstr(err, "env:SMTP_PASSWORD"));
    assert_null(strstr(err, "hunter2secret"));

    assert_true(load("notifications:\n  smtp:\n    starttls: maybe\n", &c, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, ":3: notifications.smtp.starttls: expected true or false"));

    assert_true(load("notifications:\n  smtp:\n    port: 70000\n", &c, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, ":3: notifications.smtp.port: 70000 is out of range"));

    assert_true(load("notifications:\n  interval_ms: 5\n", &c, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "notifications.interval_ms: 5 is out of range"));

    assert_true(load("notifications:\n  smtp:\n    hots: h\n", &c, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, ":3: unknown key 'hots' in notifications.smtp"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_without_the_section),
        cmocka_unit_test(every_key_is_read),
        cmocka_unit_test(bad_values_are_named_with_their_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
