/*
 * proto.h - the brokerd wire protocol: constants and the frame header.
 *
 * This file is the single definition shared by brokerd, libbroker and
 * brokerctl.  man/broker-protocol.7 documents the same format in prose;
 * keep the two in step.
 *
 * All multi-byte fields are little-endian.  A packet (one SOCK_SEQPACKET
 * datagram) holds one or more frames back to back; a frame is a 32-byte
 * header followed by `length` payload bytes.
 */
#ifndef BK_PROTO_H
#define BK_PROTO_H

#include <fcntl.h>
#include <stdint.h>

#define BK_PROTO_VERSION    1u
#define BK_HDR_SIZE         32u

/* Frame types. */
enum bk_type {
    BK_T_HELLO      = 1,  /* client -> broker, first frame */
    BK_T_WELCOME    = 2,  /* broker -> client, answer to HELLO */
    BK_T_DATA       = 3,  /* a fragment of a message on a stream */
    BK_T_CLOSE      = 4,  /* close a stream (either direction) */
    BK_T_ERROR      = 5,  /* broker -> client: a stream failed */
    BK_T_CTRL       = 6,  /* client -> broker: control request */
    BK_T_CTRL_REPLY = 7,  /* broker -> client: control answer */
    BK_T_BYE        = 8,  /* broker -> client: broker shutting down */
    BK_T_SEGMENT    = 9,  /* broker -> client: a sender's segment (1 fd) */
    BK_T_RELEASE    = 10, /* both ways: shared-memory buffers released */
    BK_T_SEG_DROP   = 11, /* both ways: a segment is gone (its owner left
                             or dropped it) / owner drops its segment */
    BK_T_MONITOR    = 12, /* broker -> monitor: one recorded frame */
    BK_T_GAP        = 13, /* broker -> subscriber: publications dropped */
    BK_T_FLOW       = 14, /* broker -> sender: a receiver is full / has
                             room again (HELLO's BK_HELLO_FLOW) */
    BK_T_MAX_       = 14
};

/* Frame flags. */
enum bk_flag {
    BK_F_MORE  = 0x01,    /* more fragments of this message follow */
    BK_F_CONT  = 0x02,    /* not the first fragment of its message */
    BK_F_OPEN  = 0x04,    /* first fragment opens a new stream */
    BK_F_CLOSE = 0x08,    /* the stream ends with this message */
    BK_F_NAME  = 0x10,    /* payload starts with `aux` bytes of dest name */
    BK_F_SHM   = 0x20,    /* payload (after the name) is a shm descriptor */
    BK_F_TOPIC = 0x40,    /* a publication: payload starts with `aux`
                             bytes of topic; from the broker, `dest` is
                             the receiver's subscription id */
    BK_F_ALL_  = 0x7f
};

/* Control operations (CTRL frame, in `aux`). */
enum bk_op {
    BK_OP_PING     = 1,
    BK_OP_REGISTER = 2,
    BK_OP_RELEASE  = 3,
    BK_OP_RESOLVE  = 4,
    BK_OP_STATUS   = 5,
    BK_OP_SEGMENT  = 6,   /* register a shared-memory segment (1 fd) */
    /* Privileged (requester uid 0 or brokerd's euid, else EPERM).  The
     * LIST ops take an optional u64 cursor and answer one page of text
     * records after it; see man/broker-protocol.7 "Listings". */
    BK_OP_LIST_CLIENTS = 7,
    BK_OP_LIST_NAMES   = 8,
    BK_OP_LIST_STREAMS = 9,
    BK_OP_LIST_SHM     = 10,
    BK_OP_KICK         = 11,  /* payload: u64 client id */
    BK_OP_SHUTDOWN     = 12,  /* no payload */
    BK_OP_RELOAD       = 13,  /* no payload; error text in the reply */
    BK_OP_MONITOR      = 14,  /* payload: filter text; then MONITOR frames */
    /* Publish/subscribe (man/broker-protocol.7 "Publish and subscribe"). */
    BK_OP_SUBSCRIBE    = 15,  /* payload: BK_SUB_REQ_FIXED + pattern + group;
                                 reply: u32 subscription id */
    BK_OP_UNSUBSCRIBE  = 16,  /* payload: u32 subscription id */
    BK_OP_LIST_SUBS    = 17,  /* privileged listing, like the LIST ops */
    BK_OP_REGISTER_EX  = 18,  /* payload: u32 flags + name;
                                 reply: u32 BK_REG_OWNER or BK_REG_QUEUED */
    BK_OP_LIST_USERS   = 19,  /* privileged listing: per-uid accounting */
    BK_OP_MAX_         = 19
};

/* SUBSCRIBE request: u8 policy, u8 flags (BK_SUB_F_*), u16 pattern
 * length P, u16 group length G (0: no group), u16 0, then P bytes of
 * pattern, G of group. */
#define BK_SUB_REQ_FIXED  8u
#define BK_SUB_F_NOFDS    0x01u /* cannot take fds: the publisher of an
                                   fd-carrying message gets ERROR EXDEV */
#define BK_SUB_F_GATEWAY  0x02u /* a group member standing for other hosts
                                   (privileged): it takes the group's share
                                   of every publication but its client's,
                                   which it may address to the group's
                                   other members (dest = its id) */
#define BK_SUB_F_ALL_     0x03u
#define BK_SUB_REQ_MAX    (BK_SUB_REQ_FIXED + 2u * BK_MAX_TOPIC)
enum bk_sub_policy {
    BK_SUB_DROP       = 0,    /* default: drop, report with GAP */
    BK_SUB_BLOCK      = 1,    /* hold the publisher back */
    BK_SUB_DISCONNECT = 2,    /* disconnect a slow subscriber */
    BK_SUB_POLICY_MAX_ = 2
};
#define BK_GAP_SIZE       8u    /* GAP payload: u64 messages dropped */
#define BK_MAX_TOPIC      255u  /* topic and pattern length bound */
#define BK_DEF_MAX_SUBS   1024u /* subscriptions per client */
/* The reserved first token of the broker's own topics. */
#define BK_TOPIC_RESERVED "$broker"
#define BK_TOPIC_NAMES    "$broker.names"
#define BK_TOPIC_CLIENTS  "$broker.clients"
/* To a gateway subscription: its group's ordinary members now. */
#define BK_TOPIC_MEMBERS  "$broker.members"

/* REGISTER_EX flags and outcomes. */
#define BK_REG_ALLOW_REPLACEMENT 0x1u
#define BK_REG_REPLACE_EXISTING  0x2u
#define BK_REG_QUEUE             0x4u
#define BK_REG_FLAGS_ALL_        0x7u
#define BK_REG_OWNER             1u
#define BK_REG_QUEUED            2u
#define BK_LIST_REQ_SIZE  8u    /* LIST request payload: u64 cursor (or
                                   empty); other lengths get EINVAL */
#define BK_KICK_REQ_SIZE  8u    /* KICK request payload: u64 client id */
/* MONITOR frame payload: u64 time_ns, u64 sender, u64 receiver, u32
 * sender's sid, u32 receiver's sid, u32 length, u32 captured, the 32-byte
 * header as the receiver got it, then `captured` payload bytes. */
#define BK_MON_HDR_OFF    40u
#define BK_MON_FIXED_SIZE (BK_MON_HDR_OFF + BK_HDR_SIZE)

/* Shared memory.  A segment is a sealed memfd (F_SEAL_SHRINK|F_SEAL_GROW)
 * registered by its owner with CTRL SEGMENT; the broker forwards it to
 * each receiver once (SEGMENT frame, read-only fd) before the first
 * descriptor that points into it.  All little-endian. */
#define BK_SEG_REG_SIZE   16u   /* CTRL SEGMENT and SEGMENT payload:
                                   u32 segid, u32 0, u64 size */
#define BK_SHM_DESC_SIZE  24u   /* DATA+SHM payload after the name:
                                   u32 segid, u32 0, u64 offset, u64 len */
#define BK_RELEASE_SIZE   24u   /* each RELEASE record: u64 peer,
                                   u32 segid, u32 count, u64 offset */
#define BK_SEG_DROP_SIZE  8u    /* SEG_DROP payload: u32 segid, u32 0 */
#define BK_SEGID_MAX      0x7fffffffu
/* Seals every segment must carry before it is registered.  FUTURE_WRITE
 * (added after the owner mapped it read-write) stops everyone else from
 * writing, even through a read-write reopen of /proc/self/fd. */
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#define BK_SEALS_REQUIRED (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE)
#define BK_DEF_MAX_SEGMENTS 64u
#define BK_DEF_MAX_SHM    (UINT64_C(2) << 30)
/* Time from accept to HELLO before brokerd closes the connection. */
#define BK_DEF_HANDSHAKE_TIMEOUT_MS 5000u

/* Stream ids: clients choose ids with bit 31 clear; the broker assigns the
 * accepting side's ids with bit 31 set. */
#define BK_SID_PEER_BIT     0x80000000u
#define BK_SID_MAX_LOCAL    0x7fffffffu

/* Defaults and hard limits. */
#define BK_DEF_MAX_PACKET   65536u
#define BK_MIN_MAX_PACKET   4096u
#define BK_MAX_MAX_PACKET   (1u << 20)
#define BK_MAX_FDS_HARD     253u            /* SCM_MAX_FD in Linux */
#define BK_DEF_MAX_FDS      64u
#define BK_DEF_MAX_MSG      (UINT64_C(4) << 30)
#define BK_MAX_NAME         255u
#define BK_DEF_MAX_STREAMS  4096u
#define BK_DEF_QUEUE_LIMIT  (4u << 20)
#define BK_MAX_HELLO_DESC   256u
/* HELLO's aux: what the client can take.  SHM: it maps the segments of
 * others, so descriptors may be sent to it; without it the broker sends
 * the bytes themselves (broker-protocol(7), SHARED MEMORY). */
#define BK_HELLO_SHM        0x1u
/* FLOW: it holds back new messages to a receiver the broker calls busy
 * (FLOW frames), so the broker need not stop reading it when one of its
 * receivers is full (broker-protocol(7), FLOW CONTROL). */
#define BK_HELLO_FLOW       0x2u
#define BK_HELLO_CAPS_      0x3u
/* FLOW's aux */
#define BK_FLOW_READY       0u
#define BK_FLOW_BUSY        1u
#define BK_MAX_TEXT         1024u          /* ERROR text payload bound */

/* The decoded header.  Use bk_hdr_encode/bk_hdr_decode for the wire form;
 * never memcpy this struct onto the wire. */
typedef struct bk_hdr {
    uint8_t  version;
    uint8_t  type;
    uint8_t  flags;
    uint8_t  nfds;
    uint32_t length;
    uint32_t stream;
    uint32_t aux;
    uint64_t source;
    uint64_t dest;
} bk_hdr_t;

/* WELCOME payload (encoded little-endian, 56 bytes). */
#define BK_WELCOME_SIZE 56u
typedef struct bk_welcome {
    uint64_t client_id;
    uint32_t max_packet;
    uint32_t max_fds;
    uint64_t max_msg;
    uint32_t max_name;
    uint32_t max_streams;
    uint64_t queue_limit;
    uint32_t max_segments;      /* shared-memory segments per client */
    uint32_t reserved;          /* 0 */
    uint64_t max_shm;           /* bytes of segments per client */
} bk_welcome_t;

/* A shared-memory descriptor, decoded. */
typedef struct bk_shm_desc {
    uint32_t segid;
    uint64_t offset;
    uint64_t length;
} bk_shm_desc_t;

#endif
