/*
 * size.h - sizes as the configuration files and command lines of brokerd
 * and brokerd-nats write them (prefix bk_size_).
 */
#ifndef BK_SIZE_H
#define BK_SIZE_H

#include <stdint.h>

/* Parse a size: decimal digits, then optionally K, M or G (powers of
 * 1024), an "i" after the suffix, and a "B".  0 or -EINVAL (not a size,
 * or past 2^64 - 1). */
int bk_size_parse(const char *s, uint64_t *out);

/* have - n, or 0 if n is more: for counters of sizes and counts that a
 * release must never wrap below zero. */
static inline uint64_t bk_size_sub(uint64_t have, uint64_t n)
{
    return n <= have ? have - n : 0;
}

#endif
