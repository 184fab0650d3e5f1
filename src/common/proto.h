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
    BK_T_MAX_       = 8
};

/* Frame flags. */
enum bk_flag {
    BK_F_MORE  = 0x01,    /* more fragments of this message follow */
    BK_F_CONT  = 0x02,    /* not the first fragment of its message */
    BK_F_OPEN  = 0x04,    /* first fragment opens a new stream */
    BK_F_CLOSE = 0x08,    /* the stream ends with this message */
    BK_F_NAME  = 0x10,    /* payload starts with `aux` bytes of dest name */
    BK_F_ALL_  = 0x1f
};

/* Control operations (CTRL frame, in `aux`). */
enum bk_op {
    BK_OP_PING     = 1,
    BK_OP_REGISTER = 2,
    BK_OP_RELEASE  = 3,
    BK_OP_RESOLVE  = 4,
    BK_OP_STATUS   = 5,
    BK_OP_MAX_     = 5
};

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

/* WELCOME payload (encoded little-endian, 40 bytes). */
#define BK_WELCOME_SIZE 40u
typedef struct bk_welcome {
    uint64_t client_id;
    uint32_t max_packet;
    uint32_t max_fds;
    uint64_t max_msg;
    uint32_t max_name;
    uint32_t max_streams;
    uint64_t queue_limit;
} bk_welcome_t;

#endif
