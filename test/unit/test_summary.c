/*
 * test_summary.c - the count of a summary ERROR's text (summary.h).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <criterion/criterion.h>
#include "summary.h"

static int parse(const char *t, uint64_t *n)
{
    return bk_sum_parse(t, strlen(t), n);
}

Test(summary, format_then_parse_gives_the_count)
{
    static const uint64_t counts[] = { 1, 9, 10, 431234, UINT64_MAX };
    char buf[128];

    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        uint64_t n = 0;
        size_t len = bk_sum_format(buf, sizeof(buf), counts[i], "lost");

        cr_assert_eq(len, strlen(buf));
        cr_assert_eq(bk_sum_parse(buf, len, &n), 0, "%s", buf);
        cr_assert_eq(n, counts[i], "%s", buf);
    }
    bk_sum_format(buf, sizeof(buf), 431234, "one-way messages lost");
    cr_assert_str_eq(buf, "431234 one-way messages lost");
}

Test(summary, format_cuts_to_fit)
{
    char buf[8];
    size_t len = bk_sum_format(buf, sizeof(buf), 12345, "lost messages");

    cr_assert_eq(len, 7);
    cr_assert_str_eq(buf, "12345 l");
    cr_assert_eq(bk_sum_format(buf, 0, 1, "x"), 0);
}

Test(summary, a_count_alone_is_enough)
{
    uint64_t n = 0;

    cr_assert_eq(parse("7", &n), 0);
    cr_assert_eq(n, 7);
    cr_assert_eq(parse("18446744073709551615 x", &n), 0);
    cr_assert_eq(n, UINT64_MAX);
}

Test(summary, bad_counts_are_refused)
{
    static const char *bad[] = {
        "", " 5 lost", "lost", "0", "0 lost", "05 lost", "5lost", "5\tlost",
        "-5 lost", "+5 lost", "18446744073709551616 lost",
        "99999999999999999999 lost", "000000000000000000001 lost",
    };
    uint64_t n = 42;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(parse(bad[i], &n), -EPROTO, "\"%s\" accepted", bad[i]);
        cr_expect_eq(n, 42, "\"%s\" changed the count", bad[i]);
    }
    /* the length bounds the text, not a NUL */
    cr_assert_eq(bk_sum_parse("12 lost", 1, &n), 0);
    cr_assert_eq(n, 1);
}
