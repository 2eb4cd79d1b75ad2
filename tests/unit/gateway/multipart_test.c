/*
 * multipart_test.c: the multipart/form-data parser of the Files API (gateway/batch.h): parts
 * with and without filenames, quoted and bare boundaries, binary data holding CRLFs, and the
 * malformed bodies (no boundary, unterminated part, too many parts) it refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "core/err.h"
#include "gateway/batch.h"

#define BODY                                                                                       \
    "--XyZ\r\n"                                                                                    \
    "Content-Disposition: form-data; name=\"purpose\"\r\n\r\n"                                     \
    "batch\r\n"                                                                                    \
    "--XyZ\r\n"                                                                                    \
    "content-disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"                     \
    "Content-Type: application/jsonl\r\n\r\n"                                                      \
    "{\"a\":1}\r\n{\"b\":2}\n\r\n"                                                                 \
    "--XyZ--\r\n"

static bool
eq(const char *p, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(p, want, n) == 0;
}

static void
parses_fields_and_files(void **state)
{
    struct tg_multipart_part parts[4];
    size_t n = 0;
    assert_int_equal(
        tg_multipart_parse("multipart/form-data; boundary=XyZ", BODY, strlen(BODY), parts, 4, &n),
        0);
    assert_int_equal(n, 2);
    assert_true(eq(parts[0].name, parts[0].name_len, "purpose"));
    assert_null(parts[0].filename);
    assert_true(eq(parts[0].data, parts[0].data_len, "batch"));
    assert_true(eq(parts[1].name, parts[1].name_len, "file"));
    assert_true(eq(parts[1].filename, parts[1].filename_len, "in.jsonl"));
    /* The CRLF inside the data is data; only the one before the delimiter is framing. */
    assert_true(eq(parts[1].data, parts[1].data_len, "{\"a\":1}\r\n{\"b\":2}\n"));
}

static void
quoted_boundary_and_preamble(void **state)
{
    const char body[] = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=x\r\n\r\n"
                        "1\r\n--XyZ--";
    struct tg_multipart_part parts[2];
    size_t n = 0;
    assert_int_equal(tg_multipart_parse("multipart/form-data; boundary=\"XyZ\"", body,
                                        sizeof(body) - 1, parts, 2, &n),
                     0);
    assert_int_equal(n, 1);
    assert_true(eq(parts[0].name, parts[0].name_len, "x"));
    assert_true(eq(parts[0].data, parts[0].data_len, "1"));
}

static void
refuses_malformed(void **state)
{
    struct tg_multipart_part parts[1];
    size_t n = 0;
    assert_int_equal(tg_multipart_parse("application/json", BODY, strlen(BODY), parts, 1, &n),
                     TG_EPARSE);
    assert_int_equal(tg_multipart_parse("multipart/form-data", BODY, strlen(BODY), parts, 1, &n),
                     TG_EPARSE);
    assert_int_equal(tg_multipart_parse(NULL, BODY, strlen(BODY), parts, 1, &n), TG_EPARSE);
    /* Two parts do not fit in one slot. */
    assert_int_equal(
        tg_multipart_parse("multipart/form-data; boundary=XyZ", BODY, strlen(BODY), parts, 1, &n),
        TG_EPARSE);
    /* Cut before the closing delimiter: every truncation is refused, none overreads. */
    for (size_t len = 0; len < strlen(BODY) - 9; len++) {
        struct tg_multipart_part p4[4];
        assert_int_equal(
            tg_multipart_parse("multipart/form-data; boundary=XyZ", BODY, len, p4, 4, &n),
            TG_EPARSE);
    }
    const char noname[] = "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--";
    assert_int_equal(tg_multipart_parse("multipart/form-data; boundary=b", noname,
                                        sizeof(noname) - 1, parts, 1, &n),
                     TG_EPARSE);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_fields_and_files),
        cmocka_unit_test(quoted_boundary_and_preamble),
        cmocka_unit_test(refuses_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
