/*
 * monitor.h - operator monitors: connections that asked (CTRL MONITOR) to
 * receive a MONITOR record for every DATA, CLOSE and stream ERROR frame the
 * broker delivers (prefix bk_mon_).
 *
 * A monitor never slows anyone down: records are queued without flow
 * control, and while a monitor's queue holds more than queue_limit bytes
 * its records are dropped and counted; the count travels in the `aux` of
 * the next record it gets.  Traffic of a monitor connection itself is not
 * recorded.  Filters: everything, name:PATTERN, id:N, or topic:PATTERN
 * (the first fragments of publications whose topic the topic pattern
 * matches, one record per receiver).  man/broker-protocol.7 ("Monitoring") is the normative text.
 *
 * Owns each monitor's bk_mon (its filter and drop count), on the server's
 * monitor list; a record is built on the stack and copied into the
 * monitor's output queue.
 */
#ifndef BK_MONITOR_H
#define BK_MONITOR_H

#include <stddef.h>
#include <stdint.h>
#include "port.h"
#include "server.h"

/* Fixed part of a MONITOR record before the preview bytes: u64 time_ns,
 * u64 sender, u64 receiver, u32 sender's sid, u32 receiver's sid,
 * u32 length, u32 captured, then the 32-byte header. */
#define BK_MON_REC_FIXED  BK_MON_HDR_OFF
#define BK_MON_REC_SIZE   BK_MON_FIXED_SIZE
#define BK_MON_DEF_SNAP   256u
#define BK_MON_MAX_SNAP   4096u

/* The monitors hang off the server (srv->monitors, owned by this module:
 * each bk_mon is malloc'd by bk_mon_add, freed by bk_mon_port_gone); the
 * list is empty when nobody monitors, so a tap costs one pointer check. */

/* Make p a monitor with the filter in req (see broker-protocol(7)); a
 * port that already monitors gets the new filter.  Returns 0, -EINVAL (bad
 * filter text) or -ENOMEM. */
int bk_mon_add(bk_port_t *p, const uint8_t *req, size_t len);
/* p is going away: it stops being a monitor (no-op if it was none). */
void bk_mon_port_gone(bk_port_t *p);
/* Number of monitors (STATUS). */
unsigned bk_mon_count(const bk_server_t *s);

/* Record one frame: `o` and `payload` as the receiver `to` gets them,
 * `from` the sending client (NULL for the broker's own frames) and
 * `from_sid` its stream id. */
void bk_mon_record(const bk_port_t *from, const bk_port_t *to,
                   uint32_t from_sid, const bk_hdr_t *o,
                   const uint8_t *payload);

static inline void bk_mon_tap(const bk_port_t *from, const bk_port_t *to,
                              uint32_t from_sid, const bk_hdr_t *o,
                              const void *payload)
{
    if (!bk_list_empty(&to->srv->monitors))
        bk_mon_record(from, to, from_sid, o, payload);
}

#endif
