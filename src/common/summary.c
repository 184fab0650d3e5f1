/*
 * summary.c - the count at the start of a summary ERROR's text.
 */
#include "config.h"
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include "summary.h"

size_t bk_sum_format(char *buf, size_t cap, uint64_t count, const char *what)
{
    int n;

    if (!cap)
        return 0;
    n = snprintf(buf, cap, "%" PRIu64 " %s", count, what);
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

int bk_sum_parse(const void *t, size_t len, uint64_t *count)
{
    const unsigned char *p = t;
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
        unsigned d = p[i] - '0';

        if (i == BK_SUM_DIGITS || (i == 0 && d == 0) ||
            v > (UINT64_MAX - d) / 10)
            return -EPROTO;
        v = v * 10 + d;
    }
    if (i == 0 || (i < len && p[i] != ' '))
        return -EPROTO;
    *count = v;
    return 0;
}
