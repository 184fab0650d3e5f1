/*
 * frame.h - frame codec and validation (prefix bk_frame_ / bk_hdr_).
 *
 * Pure functions over byte buffers: no allocation, no I/O.  Shared by the
 * daemon (which validates everything a client sends), the library (which
 * validates what the broker sends) and the fuzz target.
 */
#ifndef BK_FRAME_H
#define BK_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include "proto.h"

/* Limits a frame is validated against. */
typedef struct bk_limits {
    uint32_t max_packet;
    uint32_t max_fds;
    uint32_t max_name;
} bk_limits_t;

void bk_hdr_encode(const bk_hdr_t *h, uint8_t out[BK_HDR_SIZE]);
void bk_hdr_decode(const uint8_t in[BK_HDR_SIZE], bk_hdr_t *h);

/* Iterate the frames of a packet.  *off starts at 0.  Returns 1 and fills
 * *h and *payload for the next frame, 0 at the clean end of the packet,
 * -EPROTO if the remaining bytes are not a whole frame. */
int bk_pkt_next(const uint8_t *pkt, size_t len, size_t *off, bk_hdr_t *h,
                const uint8_t **payload);

/* Validate a frame a client sent to the broker.  Returns 0 or a negative
 * errno: -EPROTO for a malformed frame, -EPROTONOSUPPORT for a version
 * mismatch, -EMSGSIZE for a frame too large, -EINVAL for a bad name or
 * topic (a publication with a bad topic is a stream error, not a
 * protocol violation: see broker-protocol(7) VALIDATION). */
int bk_frame_check_from_client(const bk_hdr_t *h, const uint8_t *payload,
                               const bk_limits_t *lim);

/* Validate a frame the broker sent to a client. */
int bk_frame_check_from_broker(const bk_hdr_t *h, const uint8_t *payload,
                               const bk_limits_t *lim);

/* A frame type's name as broker-protocol(7) spells it ("?" if none). */
const char *bk_type_name(uint8_t type);
/* Frame flags as their names joined by ',' ("-" for none) in buf. */
void bk_flags_str(uint8_t flags, char *buf, size_t len);

/* A name is 1..max bytes of [A-Za-z0-9._:/-] and does not start with ':'. */
bool bk_name_valid(const char *name, size_t len, size_t max);

/* Shared-memory descriptors: decode checks the reserved field and the
 * segment id range; fits() checks the range lies inside a segment. */
void bk_shm_desc_encode(const bk_shm_desc_t *d, uint8_t out[BK_SHM_DESC_SIZE]);
int bk_shm_desc_decode(const uint8_t in[BK_SHM_DESC_SIZE], bk_shm_desc_t *d);
bool bk_shm_desc_fits(const bk_shm_desc_t *d, uint64_t seg_size);

void bk_welcome_encode(const bk_welcome_t *w, uint8_t out[BK_WELCOME_SIZE]);
void bk_welcome_decode(const uint8_t in[BK_WELCOME_SIZE], bk_welcome_t *w);

/* Little-endian loads and stores.  On a little-endian host they are
 * plain unaligned moves (memcpy), elsewhere byte by byte. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define BK_LE_HOST 1
#else
#define BK_LE_HOST 0
#endif

static inline void bk_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8);
}
static inline void bk_put32(uint8_t *p, uint32_t v)
{
    if (BK_LE_HOST) {
        memcpy(p, &v, sizeof(v));
        return;
    }
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void bk_put64(uint8_t *p, uint64_t v)
{
    if (BK_LE_HOST) {
        memcpy(p, &v, sizeof(v));
        return;
    }
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t bk_get32(const uint8_t *p)
{
    uint32_t v;

    if (BK_LE_HOST) {
        memcpy(&v, p, sizeof(v));
        return v;
    }
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
static inline uint64_t bk_get64(const uint8_t *p)
{
    uint64_t v;

    if (BK_LE_HOST) {
        memcpy(&v, p, sizeof(v));
        return v;
    }
    return (uint64_t)bk_get32(p) | (uint64_t)bk_get32(p + 4) << 32;
}

#endif
