/*
 * frame.c - frame codec and validation.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "frame.h"
#include "topic.h"

void bk_hdr_encode(const bk_hdr_t *h, uint8_t out[BK_HDR_SIZE])
{
    out[0] = h->version;
    out[1] = h->type;
    out[2] = h->flags;
    out[3] = h->nfds;
    bk_put32(out + 4, h->length);
    bk_put32(out + 8, h->stream);
    bk_put32(out + 12, h->aux);
    bk_put64(out + 16, h->source);
    bk_put64(out + 24, h->dest);
}

void bk_hdr_decode(const uint8_t in[BK_HDR_SIZE], bk_hdr_t *h)
{
    h->version = in[0];
    h->type = in[1];
    h->flags = in[2];
    h->nfds = in[3];
    h->length = bk_get32(in + 4);
    h->stream = bk_get32(in + 8);
    h->aux = bk_get32(in + 12);
    h->source = bk_get64(in + 16);
    h->dest = bk_get64(in + 24);
}

int bk_pkt_next(const uint8_t *pkt, size_t len, size_t *off, bk_hdr_t *h,
                const uint8_t **payload)
{
    size_t rest;

    if (*off == len)
        return 0;
    if (*off > len)
        return -EPROTO;
    rest = len - *off;
    if (rest < BK_HDR_SIZE)
        return -EPROTO;
    bk_hdr_decode(pkt + *off, h);
    if (h->length > rest - BK_HDR_SIZE)
        return -EPROTO;
    *payload = pkt + *off + BK_HDR_SIZE;
    *off += BK_HDR_SIZE + (size_t)h->length;
    return 1;
}

const char *bk_type_name(uint8_t type)
{
    static const char *const names[] = {
        "?", "HELLO", "WELCOME", "DATA", "CLOSE", "ERROR", "CTRL",
        "CTRL_REPLY", "BYE", "SEGMENT", "RELEASE", "SEG_DROP", "MONITOR",
        "GAP", "FLOW",
    };

    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}

void bk_flags_str(uint8_t flags, char *buf, size_t len)
{
    static const char *const names[] = {
        "MORE", "CONT", "OPEN", "CLOSE", "NAME", "SHM", "TOPIC",
    };
    size_t n = 0;

    if (!len)
        return;
    buf[0] = '\0';
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (flags & (1u << i))
            n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s",
                                  n ? "," : "", names[i]);
    if (!n)
        snprintf(buf, len, "-");
}

bool bk_name_valid(const char *name, size_t len, size_t max)
{
    if (len == 0 || len > max || name[0] == ':')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
            c == ':' || c == '/')
            continue;
        return false;
    }
    return true;
}

/* The first fragment of a publication (BK_F_TOPIC): it opens a one-way
 * stream, so without MORE it must CLOSE; `aux` bytes of topic start the
 * payload.  To the broker dest is 0 (the topic addresses it) or a u32,
 * one of the publisher's gateway subscriptions (the daemon checks which);
 * from the broker dest is the receiver's subscription id (u32, never 0) on a
 * stream the broker opened.  Whether the message that follows ends with
 * CLOSE needs the stream's state: the daemon checks that. */
static int check_topic(const bk_hdr_t *h, const uint8_t *payload,
                       bool to_broker)
{
    if (h->flags & BK_F_NAME)
        return -EPROTO;
    if (h->aux == 0 || h->aux > BK_MAX_TOPIC || h->aux > h->length)
        return -EPROTO;
    if (!(h->flags & (BK_F_MORE | BK_F_CLOSE)))
        return -EPROTO;
    if (to_broker && h->dest > UINT32_MAX)
        return -EPROTO;
    if (!to_broker && (h->dest == 0 || h->dest > UINT32_MAX ||
                       !(h->stream & BK_SID_PEER_BIT)))
        return -EPROTO;
    if (!bk_topic_valid((const char *)payload, h->aux))
        return -EINVAL;
    return 0;
}

/* The first fragment's `aux` prefix (a name or a topic), checked. */
static int check_prefix(const bk_hdr_t *h, const uint8_t *payload,
                        const bk_limits_t *lim, bool to_broker)
{
    bool named = h->flags & BK_F_NAME;
    bool topic = h->flags & BK_F_TOPIC;

    if ((named || topic) && !(h->flags & BK_F_OPEN))
        return -EPROTO;
    if (topic)
        return check_topic(h, payload, to_broker);
    if (!named)
        return h->aux ? -EPROTO : 0;
    if (h->aux == 0 || h->aux > h->length)
        return -EPROTO;
    if (!bk_name_valid((const char *)payload, h->aux, lim->max_name))
        return -EINVAL;
    if (to_broker && h->dest)
        return -EPROTO;
    return 0;
}

/* DATA frame rules shared by both directions; `to_broker` selects the
 * rules on addressing fields that differ. */
static int check_data(const bk_hdr_t *h, const uint8_t *payload,
                      const bk_limits_t *lim, bool to_broker)
{
    bool cont = h->flags & BK_F_CONT;
    bool open = h->flags & BK_F_OPEN;
    bool prefixed = h->flags & (BK_F_NAME | BK_F_TOPIC);
    bool shm = h->flags & BK_F_SHM;

    if (h->stream == 0)
        return -EPROTO;
    if (shm && (cont || (h->flags & BK_F_MORE) || h->nfds))
        return -EPROTO;
    if ((h->flags & BK_F_CLOSE) && (h->flags & BK_F_MORE))
        return -EPROTO;
    if (h->nfds > lim->max_fds)
        return -EPROTO;
    if (cont) {
        if (open || prefixed || shm || h->nfds || h->aux)
            return -EPROTO;
        if (to_broker && h->dest)
            return -EPROTO;
        return 0;
    }
    int r = check_prefix(h, payload, lim, to_broker);
    if (r < 0)
        return r;
    if (shm && h->length - (prefixed ? h->aux : 0) != BK_SHM_DESC_SIZE)
        return -EPROTO;
    if (to_broker) {
        if (open && !prefixed && h->dest == 0)
            return -EPROTO;
        if (!open && h->dest)
            return -EPROTO;
        if (open && h->stream > BK_SID_MAX_LOCAL)
            return -EPROTO;
    }
    return 0;
}

static int check_common(const bk_hdr_t *h, const bk_limits_t *lim)
{
    if (h->version != BK_PROTO_VERSION)
        return -EPROTONOSUPPORT;
    if (h->type == 0 || h->type > BK_T_MAX_)
        return -EPROTO;
    if (h->flags & ~BK_F_ALL_)
        return -EPROTO;
    if ((uint64_t)h->length + BK_HDR_SIZE > lim->max_packet)
        return -EMSGSIZE;
    if (h->type == BK_T_DATA)
        return 0;
    if (h->flags)
        return -EPROTO;
    /* Only segment frames carry an fd outside DATA: exactly one. */
    if ((h->type == BK_T_CTRL && h->aux == BK_OP_SEGMENT) ||
        h->type == BK_T_SEGMENT)
        return h->nfds == 1 ? 0 : -EPROTO;
    return h->nfds ? -EPROTO : 0;
}

/* Payload of CTRL SEGMENT and SEGMENT: a segment id and a size. */
static int check_seg_reg(const bk_hdr_t *h, const uint8_t *payload)
{
    if (h->length != BK_SEG_REG_SIZE)
        return -EPROTO;
    if (bk_get32(payload) == 0 || bk_get32(payload) > BK_SEGID_MAX ||
        bk_get32(payload + 4) != 0 || bk_get64(payload + 8) == 0)
        return -EPROTO;
    return 0;
}

/* Request payload of a CTRL frame: SEGMENT has its own layout; SUBSCRIBE
 * carries at most BK_SUB_REQ_MAX bytes, REGISTER_EX a u32 of flags and a
 * name; every other op at most max_name bytes (a name, a u32 LIST start
 * index or a u64 KICK id).  These are framing bounds: ctrl.c checks each
 * op's exact layout and answers EINVAL. */
static int check_ctrl(const bk_hdr_t *h, const uint8_t *payload,
                      const bk_limits_t *lim)
{
    switch (h->aux) {
    case BK_OP_SEGMENT:
        return check_seg_reg(h, payload);
    case BK_OP_SUBSCRIBE:
        return h->length > BK_SUB_REQ_MAX ? -EPROTO : 0;
    case BK_OP_REGISTER_EX:
        return h->length > 4 + (uint64_t)lim->max_name ? -EPROTO : 0;
    default:
        return h->length > lim->max_name ? -EPROTO : 0;
    }
}

/* GAP: drops of one subscription (aux), counted in a u64. */
static int check_gap(const bk_hdr_t *h)
{
    if (h->stream || h->source || h->aux == 0 || h->length != BK_GAP_SIZE)
        return -EPROTO;
    return 0;
}

static int check_release(const bk_hdr_t *h)
{
    if (h->length == 0 || h->length % BK_RELEASE_SIZE || h->stream ||
        h->aux)
        return -EPROTO;
    return 0;
}

int bk_frame_check_from_client(const bk_hdr_t *h, const uint8_t *payload,
                               const bk_limits_t *lim)
{
    int r = check_common(h, lim);

    if (r < 0)
        return r;
    if (h->source != 0)
        return -EPROTO;
    switch (h->type) {
    case BK_T_HELLO:
        if (h->length < 4 || h->length > 4 + BK_MAX_HELLO_DESC ||
            h->stream || (h->aux & ~BK_HELLO_CAPS_) || h->dest)
            return -EPROTO;
        return 0;
    case BK_T_DATA:
        return check_data(h, payload, lim, true);
    case BK_T_CLOSE:
        if (h->stream == 0 || h->dest || h->length > BK_MAX_TEXT)
            return -EPROTO;
        return 0;
    case BK_T_CTRL:
        if (h->aux == 0 || h->aux > BK_OP_MAX_ || h->dest)
            return -EPROTO;
        return check_ctrl(h, payload, lim);
    case BK_T_RELEASE:
        return h->dest ? -EPROTO : check_release(h);
    case BK_T_SEG_DROP:      /* the owner unregisters one of its segments */
        return h->length == BK_SEG_DROP_SIZE && !h->stream && !h->aux &&
               !h->dest ? 0 : -EPROTO;
    default:
        return -EPROTO;      /* broker-only types */
    }
}

int bk_frame_check_from_broker(const bk_hdr_t *h, const uint8_t *payload,
                               const bk_limits_t *lim)
{
    int r = check_common(h, lim);

    if (r < 0)
        return r;
    switch (h->type) {
    case BK_T_WELCOME:
        return h->length >= BK_WELCOME_SIZE ? 0 : -EPROTO;
    case BK_T_DATA:          /* source 0: only the broker's publications */
        if (h->source == 0 && !(h->flags & BK_F_TOPIC))
            return -EPROTO;
        return check_data(h, payload, lim, false);
    case BK_T_CLOSE:
        return h->stream ? 0 : -EPROTO;
    case BK_T_ERROR:          /* stream 0: the connection as a whole */
        return 0;
    case BK_T_CTRL_REPLY:
    case BK_T_BYE:
        return 0;
    case BK_T_SEGMENT:
        return h->source ? check_seg_reg(h, payload) : -EPROTO;
    case BK_T_RELEASE:
        return check_release(h);
    case BK_T_SEG_DROP:
        return h->source && h->length == BK_SEG_DROP_SIZE ? 0 : -EPROTO;
    case BK_T_MONITOR:        /* captured must add up with the length */
        if (h->stream || h->source || h->length < BK_MON_FIXED_SIZE ||
            bk_get32(payload + 36) != h->length - BK_MON_FIXED_SIZE)
            return -EPROTO;
        return 0;
    case BK_T_GAP:
        return check_gap(h);
    case BK_T_FLOW:           /* about receiver `source`; BUSY: the stream
                                 of the message, and the name */
        if (!h->source || h->aux > BK_FLOW_BUSY ||
            h->length > BK_MAX_NAME ||
            (h->aux == BK_FLOW_BUSY ? !h->stream : h->length || h->stream))
            return -EPROTO;
        return 0;
    default:
        return -EPROTO;
    }
}

void bk_welcome_encode(const bk_welcome_t *w, uint8_t out[BK_WELCOME_SIZE])
{
    bk_put64(out, w->client_id);
    bk_put32(out + 8, w->max_packet);
    bk_put32(out + 12, w->max_fds);
    bk_put64(out + 16, w->max_msg);
    bk_put32(out + 24, w->max_name);
    bk_put32(out + 28, w->max_streams);
    bk_put64(out + 32, w->queue_limit);
    bk_put32(out + 40, w->max_segments);
    bk_put32(out + 44, 0);
    bk_put64(out + 48, w->max_shm);
}

void bk_welcome_decode(const uint8_t in[BK_WELCOME_SIZE], bk_welcome_t *w)
{
    w->client_id = bk_get64(in);
    w->max_packet = bk_get32(in + 8);
    w->max_fds = bk_get32(in + 12);
    w->max_msg = bk_get64(in + 16);
    w->max_name = bk_get32(in + 24);
    w->max_streams = bk_get32(in + 28);
    w->queue_limit = bk_get64(in + 32);
    w->max_segments = bk_get32(in + 40);
    w->reserved = 0;
    w->max_shm = bk_get64(in + 48);
}

void bk_shm_desc_encode(const bk_shm_desc_t *d, uint8_t out[BK_SHM_DESC_SIZE])
{
    bk_put32(out, d->segid);
    bk_put32(out + 4, 0);
    bk_put64(out + 8, d->offset);
    bk_put64(out + 16, d->length);
}

int bk_shm_desc_decode(const uint8_t in[BK_SHM_DESC_SIZE], bk_shm_desc_t *d)
{
    d->segid = bk_get32(in);
    d->offset = bk_get64(in + 8);
    d->length = bk_get64(in + 16);
    if (d->segid == 0 || d->segid > BK_SEGID_MAX || bk_get32(in + 4))
        return -EPROTO;
    return 0;
}

bool bk_shm_desc_fits(const bk_shm_desc_t *d, uint64_t seg_size)
{
    return d->offset <= seg_size && d->length <= seg_size - d->offset;
}
