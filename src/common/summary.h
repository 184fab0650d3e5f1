/*
 * summary.h - the ERROR that sums up notices the broker folded (prefix
 * bk_sum_).
 *
 * When a client's output queue is past its limit, the broker stops
 * queueing its per-message notices to it one by one (the ERROR
 * ECONNRESET for each one-way message a receiver never read) and counts
 * them instead; once the queue has room again it sends one ERROR on the
 * reserved stream id BK_SID_SUMMARY whose text starts with that count in
 * decimal, then a space (broker-protocol(7), "Peer disconnect").  brokerd
 * writes the text, libbroker reads the count back.  Owns nothing.
 */
#ifndef BK_SUMMARY_H
#define BK_SUMMARY_H

#include <stddef.h>
#include <stdint.h>

/* The stream id of a summary ERROR: never a stream's (clients use ids up
 * to 0x7fffffff, the broker never assigns this one). */
#define BK_SID_SUMMARY 0xffffffffu

/* The text of the summary of one-way messages lost, after the count. */
#define BK_SUM_LOST "one-way messages lost: receivers disconnected " \
                    "before reading them"

/* The longest count: 20 digits (UINT64_MAX). */
#define BK_SUM_DIGITS 20u

/* Write "COUNT WHAT" into buf[0..cap) (NUL-terminated, cut to fit);
 * returns the length without the NUL. */
size_t bk_sum_format(char *buf, size_t cap, uint64_t count, const char *what);

/* The count at the start of a summary's text t[0..len): 1 to 20 decimal
 * digits without a leading zero, a value from 1 to UINT64_MAX, then a
 * space or the end of the text.  Returns 0 and sets *count, or -EPROTO. */
int bk_sum_parse(const void *t, size_t len, uint64_t *count);

#endif
