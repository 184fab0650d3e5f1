/*
 * inspect.h - operator listings of the broker's state: clients, names,
 * streams, shared-memory segments, subscriptions and users (prefix
 * bk_inspect_).
 *
 * A listing is text: one record per line, each record `key=value` pairs
 * separated by single spaces, values percent-escaped (every byte outside
 * '!'..'~', and '%', '=' and ',', becomes %XX with upper-case hex).  The
 * `names` value of a client record is a comma-separated list of escaped
 * names.  A page ends with the line `next=C`: C > 0 is the cursor of the
 * next page (the key of this page's last record), 0 means the listing is
 * complete.  man/broker-protocol.7
 * ("Listings") is the normative description.
 *
 * Owns nothing but the page it builds, which it hands to the caller.
 */
#ifndef BK_INSPECT_H
#define BK_INSPECT_H

#include <stddef.h>
#include <stdint.h>
#include "port.h"

/* Whether `p` may use the privileged CTRL ops (LIST_*, KICK, SHUTDOWN):
 * its uid is 0 or brokerd's effective uid. */
bool bk_inspect_allowed(const bk_port_t *p);

/* Build the page of listing `op` (a BK_OP_LIST_* value) that starts after
 * `cursor` (0: at the first record), at most `room` bytes including the
 * `next=` line.  On
 * success *out is malloc'd text owned by the caller.  Returns 0, -EINVAL
 * (not a listing op), -ENOMEM, or -EMSGSIZE (one record exceeds `room`). */
int bk_inspect_list(const bk_port_t *p, uint32_t op, uint64_t cursor,
                    size_t room, char **out, size_t *len);

#endif
