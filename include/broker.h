/*
 * broker.h - libbroker, the client library of brokerd.
 *
 * Every function that can fail returns 0 (or a non-negative value) on
 * success and a negative errno value on failure; broker_strerror() turns it
 * into text.  A broker_t is not thread-safe: use one connection per thread,
 * or serialise every call on a connection with your own lock.  See
 * libbroker(3).
 */
#ifndef BROKER_H
#define BROKER_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BROKER_VERSION_STRING "0.1.0"

typedef struct broker broker_t;

/* What a received message or event is. */
typedef enum broker_kind {
    BROKER_MSG_DATA = 1,    /* a message (or, chunked mode, a piece of one) */
    BROKER_MSG_CLOSE = 2,   /* the peer closed the stream (code = reason) */
    BROKER_MSG_ERROR = 3,   /* the broker reports an error on a stream */
    BROKER_MSG_MONITOR = 4, /* a monitor record (broker_monitor): data/len
                               is the record, code the number of records
                               dropped before it (>= 0) */
    BROKER_MSG_GAP = 5,     /* publications dropped for subscription
                               sub_id (policy DROP): gap is how many */
    BROKER_MSG_DISCONNECTED = 6, /* BROKER_OPT_RECONNECT: the connection
                               was lost (code: the error); the next
                               broker_recv reconnects */
    BROKER_MSG_RECONNECTED = 7, /* BROKER_OPT_RECONNECT: connected again;
                               code: how many names and subscriptions
                               did not come back (0: all), data/len one
                               line of text for each */
} broker_kind_t;

/* Flags of a received message. */
#define BROKER_MSGF_OPEN   0x01u  /* first message of a new stream */
#define BROKER_MSGF_CLOSE  0x02u  /* last message: the stream is closed */
#define BROKER_MSGF_CHUNK  0x04u  /* chunked mode: a piece of a message */
#define BROKER_MSGF_LAST   0x08u  /* chunked mode: the message's last piece */
#define BROKER_MSGF_SHM    0x10u  /* data is a read-only view of the sender's
                                     shared memory, released by
                                     broker_msg_free() */
#define BROKER_MSGF_TOPIC  0x20u  /* a publication: topic and sub_id set */

/* The stream of a summary ERROR: count errors of its code (so far
 * -ECONNRESET: one-way messages whose receiver disconnected before
 * reading them) that the broker counted instead of sending one by one
 * while this connection did not read; source: their receiver, or 0 if
 * several.  Never a real stream. */
#define BROKER_STREAM_SUMMARY 0xffffffffu

typedef struct broker_msg {
    broker_kind_t kind;
    uint32_t flags;         /* BROKER_MSGF_* */
    uint64_t source;        /* sender's client id, stamped by the broker */
    uint32_t stream;        /* stream id, local to this connection */
    int code;               /* CLOSE/ERROR/DISCONNECTED: negative
                               errno; MONITOR: records dropped before
                               this one; RECONNECTED: names and
                               subscriptions not back; else 0 */
    char *name;             /* DATA with OPEN: the name it was sent to,
                               or NULL if sent to our id */
    void *data;             /* payload (ERROR: a text message) */
    size_t len;
    int *fds;               /* received fds, owned by the message */
    unsigned nfds;
    /* Added with publish/subscribe (the struct grew: rebuild against this
     * header).  Always allocated by the library, so only its size moved. */
    char *topic;            /* BROKER_MSGF_TOPIC: the topic it was
                               published on (NUL-terminated); else NULL */
    uint32_t sub_id;        /* publication or GAP: the subscription */
    uint64_t gap;           /* GAP: publications dropped since the last */
    /* Added with summary errors (the struct grew again, as above). */
    uint64_t count;         /* ERROR on BROKER_STREAM_SUMMARY: how many
                               errors it stands for; else 0 */
} broker_msg_t;

/* Frees the message and closes any fd still in msg->fds (set an entry to
 * -1 to keep that fd).  NULL is allowed. */
void broker_msg_free(broker_msg_t *msg);

/* Limits the broker announced in its WELCOME. */
typedef struct broker_limits {
    uint32_t max_packet;
    uint32_t max_fds;
    uint64_t max_msg;
    uint32_t max_name;
    uint32_t max_streams;
    uint64_t queue_limit;
    uint32_t max_segments;  /* shared-memory segments per client */
    uint64_t max_shm;       /* bytes of shared memory per client */
} broker_limits_t;

/* ---- connection ------------------------------------------------------ */

/* Resolve the default socket path (see brokerd(8)) into buf. */
int broker_default_path(char *buf, size_t len);

/* Connect and complete the handshake.  path may be NULL for the default. */
int broker_connect(const char *path, broker_t **out);
void broker_close(broker_t *b);

uint64_t broker_client_id(const broker_t *b);
const broker_limits_t *broker_limits(const broker_t *b);
/* The socket fd, for callers that poll it themselves.  When it polls
 * readable, call broker_recv(b, &msg, 0) until it returns -ETIMEDOUT:
 * the library may already hold messages it read while it was blocked. */
int broker_fd(const broker_t *b);

/* Options. */
typedef enum broker_opt {
    /* Largest message reassembled in memory (default 256 MiB).  A larger
     * message is refused (sender gets EMSGSIZE, receiver gets an ERROR
     * event with -EMSGSIZE) unless CHUNKED is on. */
    BROKER_OPT_MAX_MSG = 1,
    /* 1: deliver messages larger than MAX_MSG as a sequence of chunks with
     * BROKER_MSGF_CHUNK (and BROKER_MSGF_LAST on the final one). */
    BROKER_OPT_CHUNKED = 2,
    /* Most partially received messages kept at once (default 1024); see
     * also MAX_PARTIAL_BYTES. */
    BROKER_OPT_MAX_PARTIAL = 3,
    /* Milliseconds a partial message may wait for its next fragment before
     * it is dropped with an ERROR event (-ETIMEDOUT) (default 30000). */
    BROKER_OPT_PARTIAL_TIMEOUT = 4,
    /* Messages of at least this many bytes sent with broker_send*() go
     * through shared memory (one copy into the pool instead of two
     * through sockets); 0 turns it off (default 262144). */
    BROKER_OPT_SHM_THRESHOLD = 5,
    /* Size of each pool segment (default 64 MiB); a larger buffer gets a
     * segment of its own. */
    BROKER_OPT_SHM_SEGMENT_SIZE = 6,
    /* Most bytes of segments this connection creates (default: the
     * broker's max_shm). */
    BROKER_OPT_SHM_POOL_MAX = 7,
    /* 1 (default): when the pool is full, broker_send*() falls back to the
     * socket path instead of waiting for buffers to be released. */
    BROKER_OPT_SHM_FALLBACK = 8,
    /* 1: batch the messages of broker_send*() and broker_publish*() in
     * blocking mode (default 0: each is written before the call returns).
     * A batched message that fits one packet is added to the packet being
     * built and returns at once; the packet is written when the next
     * message no longer fits, on broker_flush(), before any call waits
     * for the broker (broker_recv, broker_call, broker_ping and every
     * other request, a send that must wait for room), and by
     * broker_close().  Order is kept: a message that cannot be batched
     * (larger than a packet, carrying fds) first writes the packet.
     * Attached connections always batch this way within one loop pass,
     * whatever this option says (see broker_attach). */
    BROKER_OPT_BATCH = 9,
    /* Milliseconds a segment of the shared-memory pool may stay with no
     * buffer in use before it is unmapped, closed and dropped at the
     * broker too (default 10000; 0: never).  Checked whenever the
     * library runs (every call that waits, and in attached mode a timer
     * of the loop). */
    BROKER_OPT_SHM_IDLE_MS = 10,
    /* 1: when the connection is lost, broker_recv returns a
     * BROKER_MSG_DISCONNECTED event (after every message received
     * before), then reconnects to the same socket path with backoff (50
     * ms doubling to 2 s, within each call's timeout), registers the
     * names and subscriptions made since the option was set again and
     * returns a BROKER_MSG_RECONNECTED event saying what did not come
     * back.  Subscription ids stay the ones the application got.
     * Blocking mode only: -ENOTSUP on an attached connection, and
     * broker_attach refuses a connection with it on (default 0: the
     * connection stays failed, every call returns its error). */
    BROKER_OPT_RECONNECT = 11,
    /* Bytes of received messages the library holds for broker_recv
     * (default 33554432, 32 MiB; 0 is refused), each counted as its payload
     * plus the library's object for it (a shared-memory message: the
     * object only).  Once reached, the library reads no more from the
     * socket until the application takes messages: the broker's queue for
     * this connection fills and the broker holds the senders back (their
     * writes block, or the loop waits), nothing is lost.  A blocking call
     * (broker_call, broker_send when the socket is full, broker_ping and
     * the other requests) still reads while it waits, since its answer
     * may be behind what waits in the socket, and queues what it reads
     * for broker_recv, up to a ceiling: this bound plus the larger of
     * this bound and twice the broker's queue_limit; there it stops and
     * fails with -ENOBUFS (receive, then try again).  The bound is checked
     * before each read, so one read may take it past by one packet's
     * messages, or by one reassembled message.  Attached connections stop
     * polling for input while the bound is reached (messages go to
     * on_message as they arrive, so only within one loop pass). */
    BROKER_OPT_MAX_QUEUED = 12,
    /* Bytes of buffer all partially received messages may hold together
     * (default, also for 0: MAX_MSG, or MAX_PARTIAL times the broker's
     * max_packet if that is more; 256 MiB with the defaults).
     * A fragment that would need more is refused like a message over
     * MAX_MSG, with -ENOBUFS instead of -EMSGSIZE (the sender's stream is
     * closed with ENOBUFS, the receiver gets an ERROR event with
     * -ENOBUFS); the other partial messages go on.  With CHUNKED on,
     * what the message holds is delivered as a chunk instead. */
    BROKER_OPT_MAX_PARTIAL_BYTES = 13,
    /* Bytes of shared memory to set up now and keep (default 0: none).
     * The pool grows by segments (BROKER_OPT_SHM_SEGMENT_SIZE each, so
     * the reservation is rounded up to whole segments) until its first
     * segments hold this much, and every page of them is allocated and
     * mapped before the call returns: buffers and automatic
     * shared-memory messages then take no page fault and no round trip
     * to the broker for new memory.  Reserved segments are kept while
     * idle (BROKER_OPT_SHM_IDLE_MS spares them); a smaller value, or 0,
     * lets the rest idle out again.  Waits for the broker's answers (30 s
     * at most: -ETIMEDOUT).  -ENOTSUP when the broker takes no shared
     * memory; -ENOSPC when BROKER_OPT_SHM_POOL_MAX or the broker's
     * max_shm and max_segments do not allow that much (what fit stays
     * reserved).  Set up again after a reconnection
     * (BROKER_OPT_RECONNECT). */
    BROKER_OPT_SHM_RESERVE = 14,
} broker_opt_t;
int broker_set_option(broker_t *b, broker_opt_t opt, uint64_t value);

/* Write every message batching holds (BROKER_OPT_BATCH) and every other
 * frame the library queued.  Blocking mode: waits while the socket is full
 * (timeout_ms < 0: as long as it takes); 0, -ETIMEDOUT (what is left stays
 * queued, in order) or the connection's error.  Attached mode: writes what
 * the socket takes now and leaves the rest to the loop; 0 or the
 * connection's error. */
int broker_flush(broker_t *b, int timeout_ms);

const char *broker_strerror(int err);

/* ---- names and control ----------------------------------------------- */

int broker_register(broker_t *b, const char *name);
/* Register with flags (D-Bus style):
 *   BROKER_NAME_ALLOW_REPLACEMENT  another client may take the name over
 *                                  with BROKER_NAME_REPLACE_EXISTING;
 *   BROKER_NAME_REPLACE_EXISTING   take the name if its owner allows it;
 *   BROKER_NAME_QUEUE              if taken, wait in line and become the
 *                                  owner when it is released or its owner
 *                                  leaves.
 * Returns BROKER_NAME_OWNER (1) or BROKER_NAME_QUEUED (2), or a negative
 * errno (-EEXIST taken and not queued, -EINVAL bad name or flags, -EACCES,
 * -ENOSR).  Owner changes are announced on the topic "$broker.names". */
#define BROKER_NAME_ALLOW_REPLACEMENT 0x1u
#define BROKER_NAME_REPLACE_EXISTING  0x2u
#define BROKER_NAME_QUEUE             0x4u
#define BROKER_NAME_OWNER             1
#define BROKER_NAME_QUEUED            2
int broker_register_flags(broker_t *b, const char *name, uint32_t flags);
int broker_release(broker_t *b, const char *name);
/* Resolve a name to the owner's client id. */
int broker_resolve(broker_t *b, const char *name, uint64_t *id);
int broker_ping(broker_t *b, int timeout_ms);
/* Broker status as text, "key=value" lines; free() the result. */
int broker_status(broker_t *b, char **text);

/* ---- operator control (brokerctl) --------------------------------------- */

/* Control operation numbers (the CTRL frame's `aux`, broker-protocol(7)).
 * The LIST ops, KICK, SHUTDOWN, RELOAD and MONITOR are privileged: the
 * broker answers -EPERM unless the caller's uid is 0 or the broker's own
 * uid. */
enum broker_ctrl_op {
    BROKER_CTRL_PING         = 1,
    BROKER_CTRL_REGISTER     = 2,
    BROKER_CTRL_RELEASE      = 3,
    BROKER_CTRL_RESOLVE      = 4,
    BROKER_CTRL_STATUS       = 5,
    BROKER_CTRL_LIST_CLIENTS = 7,
    BROKER_CTRL_LIST_NAMES   = 8,
    BROKER_CTRL_LIST_STREAMS = 9,
    BROKER_CTRL_LIST_SHM     = 10,
    BROKER_CTRL_KICK         = 11,
    BROKER_CTRL_SHUTDOWN     = 12,
    BROKER_CTRL_RELOAD       = 13,
    BROKER_CTRL_MONITOR      = 14,
    BROKER_CTRL_SUBSCRIBE    = 15,
    BROKER_CTRL_UNSUBSCRIBE  = 16,
    BROKER_CTRL_LIST_SUBS    = 17,
    BROKER_CTRL_REGISTER_EX  = 18,
    BROKER_CTRL_LIST_USERS   = 19,
};

/* Send one raw CTRL request `op` with `len` bytes of `req` (len at most
 * the broker's max_name, 255 by default; SUBSCRIBE up to 518 bytes,
 * REGISTER_EX up to 4 + max_name) and wait for its answer.
 * Returns 0 or the broker's error negated (-EPERM, -ENOENT, ...) or a
 * local error; *reply (malloc'd, NUL-terminated after *reply_len bytes,
 * free() it) holds the reply payload, also on an error when the broker
 * explained it (else NULL).  reply may be NULL to drop it.  Ops that need
 * file descriptors are refused with -EINVAL. */
int broker_ctrl(broker_t *b, uint32_t op, const void *req, size_t len,
                void **reply, size_t *reply_len);
/* A complete listing (op: BROKER_CTRL_LIST_*), fetched page by page
 * with the broker's cursors: records one per line, `key=value` pairs
 * separated by spaces, values percent-escaped, in the listing's key
 * order; the paging trailer lines are removed.  A record present during
 * the whole listing appears exactly once.  free() *text. */
int broker_list(broker_t *b, uint32_t op, char **text, size_t *len);
/* Disconnect client `id` (it gets an ERROR frame); -ENOENT if unknown. */
int broker_kick(broker_t *b, uint64_t id);
/* Ask the broker to shut down as on SIGTERM; 0 once it has agreed. */
int broker_shutdown(broker_t *b);

/* Become a monitor (privileged): from now on broker_recv() also returns
 * BROKER_MSG_MONITOR messages, one per DATA, CLOSE or stream ERROR frame
 * the broker delivers to anyone else.  filter: NULL or "" for everything,
 * "name:PATTERN" (exact, or a prefix ending in '*'), "id:N", or
 * "topic:PATTERN" (publications on matching topics).  snap:
 * payload bytes captured per record (0: the broker's default, 256; at
 * most 4096).  Calling it again replaces the filter. */
int broker_monitor(broker_t *b, const char *filter, uint32_t snap);

/* A decoded monitor record; the pointers point into the message's data. */
typedef struct broker_monitor_rec {
    uint64_t time_ns;       /* CLOCK_REALTIME when the broker forwarded it */
    uint64_t sender;        /* sending client id, 0 for the broker itself */
    uint64_t receiver;      /* receiving client id */
    uint32_t sender_stream;     /* the stream id the sender uses */
    uint32_t receiver_stream;   /* the stream id the receiver sees */
    uint32_t length;        /* the frame's whole payload length */
    uint32_t captured;      /* bytes at preview (at most length) */
    uint8_t type;           /* frame type: 3 DATA, 4 CLOSE, 5 ERROR */
    uint8_t flags;          /* frame flags, broker-protocol(7) */
    uint8_t nfds;           /* file descriptors the frame carried */
    uint32_t aux;           /* the frame's aux (name length, error code) */
    const uint8_t *header;  /* the 32-byte frame header as received */
    const uint8_t *preview; /* the first `captured` payload bytes */
} broker_monitor_rec_t;

/* Decode a BROKER_MSG_MONITOR message.  Returns 0 or -EINVAL (not a
 * monitor message, or a malformed record). */
int broker_monitor_parse(const broker_msg_t *m, broker_monitor_rec_t *rec);

/* ---- messages (blocking) ---------------------------------------------- */

/* One-way message to a name or a client id.  fds are duplicated by the
 * kernel on send; the caller keeps its own copies.  Returns once the
 * message is handed to the socket (it may wait for the broker to read). */
int broker_send(broker_t *b, const char *name, const void *data, size_t len,
                const int *fds, unsigned nfds);
int broker_send_id(broker_t *b, uint64_t id, const void *data, size_t len,
                   const int *fds, unsigned nfds);

/* Wait up to timeout_ms (-1 forever, 0 poll) for the next message or
 * event.  Returns 0 and *msg, -ETIMEDOUT, or another negative errno
 * (-ECONNRESET / -ESHUTDOWN when the broker went away). */
int broker_recv(broker_t *b, broker_msg_t **msg, int timeout_ms);

/* Request/reply: send a request to a name and wait for the reply.  Other
 * messages that arrive meanwhile are queued for broker_recv().  Returns 0
 * and *reply, -ETIMEDOUT, the error the broker or peer reported, or
 * -ENODATA if the peer closed the stream without replying.  On timeout the
 * stream is closed.  A reply without BROKER_MSGF_CLOSE leaves the stream
 * open (reply->stream) until either side closes it. */
int broker_call(broker_t *b, const char *name, const void *data, size_t len,
                broker_msg_t **reply, int timeout_ms);
int broker_call_fds(broker_t *b, const char *name, const void *data,
                    size_t len, const int *fds, unsigned nfds,
                    broker_msg_t **reply, int timeout_ms);
/* The same to client id `id` (broker_msg_t.source of a message from it,
 * broker_client_id() on its side) instead of a name. */
int broker_call_id(broker_t *b, uint64_t id, const void *data, size_t len,
                   broker_msg_t **reply, int timeout_ms);

/* Answer a request (see broker_msg_is_request; any DATA message without
 * BROKER_MSGF_CLOSE on a stream still open is accepted): sends one message
 * on its stream and closes it. */
int broker_reply(broker_t *b, const broker_msg_t *req, const void *data,
                 size_t len, const int *fds, unsigned nfds);
/* Answer a request with an error instead: closes its stream with err (a
 * negative errno), which the caller's broker_call() returns. */
int broker_reply_error(broker_t *b, const broker_msg_t *req, int err);

/* True if msg expects an answer: a BROKER_MSG_DATA message that opened a
 * stream (BROKER_MSGF_OPEN) its sender keeps open (no BROKER_MSGF_CLOSE),
 * that is a broker_call*() request or the first message of a stream the
 * peer opened with broker_stream_open().  False for NULL, every event
 * (CLOSE, ERROR, GAP, MONITOR), one-way messages, publications, replies,
 * later messages of a stream, and the pieces of a chunked message that
 * came in more than one piece (BROKER_MSGF_CHUNK without
 * BROKER_MSGF_LAST, or without OPEN).  Answer with broker_reply() or end
 * the stream with broker_stream_close(). */
bool broker_msg_is_request(const broker_msg_t *msg);

/* ---- publish/subscribe ------------------------------------------------- */

/* What happens to a subscription's messages when its connection's queue
 * in the broker is full (queue_limit bytes). */
typedef enum broker_sub_policy {
    BROKER_SUB_DROP = 0,        /* default: drop them, then deliver a
                                   BROKER_MSG_GAP with the count */
    BROKER_SUB_BLOCK = 1,       /* hold the publisher back; lose nothing */
    BROKER_SUB_DISCONNECT = 2,  /* the broker disconnects this client */
} broker_sub_policy_t;
/* OR'd into the policy: this subscription cannot take file descriptors.
 * The broker does not deliver a publication that carries fds to it; the
 * publisher gets a BROKER_MSG_ERROR event with code -EXDEV and source
 * the subscriber's client id instead (as for other one-way messages
 * that were not delivered).  Older brokers refuse it with -EINVAL. */
#define BROKER_SUB_NO_FDS 0x100
/* OR'd into the policy of a group subscription: this subscriber is the
 * group's gateway to other hosts (a bridge such as brokerd-nats;
 * privileged: uid 0 or brokerd's, else -EPERM).  While a group has a
 * gateway, its share of every publication goes to a gateway instead of
 * to a member, except for publications of the gateway's own client (the
 * group had its share on the host they came from).  The gateway hands a
 * message to one of the group's other members with broker_publish_group.
 * It also receives messages on topic "$broker.members" (data
 * "members=N\n"): the number of the group's other members, once when it
 * subscribes and whenever that number changes.  Older brokers refuse it
 * with -EINVAL. */
#define BROKER_SUB_GATEWAY 0x200

/* Subscribe to the topics matching `pattern` ('.'-separated tokens; `*`
 * matches one token, `>` one or more trailing tokens).  With a group,
 * the subscribers of the same pattern and group share its messages, each
 * message going to one of them.  *id (never 0) identifies the
 * subscription in received messages (msg->sub_id).  policy may carry
 * BROKER_SUB_NO_FDS.  Returns 0 or a negative errno (-EINVAL bad
 * pattern/group/policy, -EACCES, -ENOSR). */
int broker_subscribe(broker_t *b, const char *pattern, const char *group,
                     broker_sub_policy_t policy, uint32_t *id);
/* Messages still on their way for the subscription are discarded. */
int broker_unsubscribe(broker_t *b, uint32_t id);
/* Publish a one-way message on `topic` (no wildcards) to every matching
 * subscription; no subscriber is not an error.  fds: every receiver gets
 * its own duplicate.  Large payloads go through shared memory as with
 * broker_send (BROKER_OPT_SHM_THRESHOLD). */
int broker_publish(broker_t *b, const char *topic, const void *data,
                   size_t len, const int *fds, unsigned nfds);
/* Publish on `topic` to one member (not a gateway) of the group whose
 * gateway subscription is `gateway` (BROKER_SUB_GATEWAY), and to no one
 * else.  The topic must match the gateway's pattern.  Errors arrive as
 * for broker_publish, as a BROKER_MSG_ERROR on the publication's stream:
 * -EINVAL (not a gateway subscription of this connection, or the topic
 * does not match) or -ENOENT (the group has no member but gateways). */
int broker_publish_group(broker_t *b, uint32_t gateway, const char *topic,
                         const void *data, size_t len, const int *fds,
                         unsigned nfds);

/* ---- shared memory (zero copy) ------------------------------------------ */

/* A buffer in this connection's shared-memory pool.  Write the payload
 * into data[0..size), then send it to one or more destinations: every
 * receiver gets a read-only view of the same memory.  The memory returns
 * to the pool once broker_buf_free() was called and every receiver
 * released its view (broker_msg_free). */
typedef struct broker_buf {
    void *data;
    size_t size;
} broker_buf_t;

/* Allocate a buffer of at least `size` bytes.  Blocking mode: waits for
 * releases while the pool is full (timeout_ms, -1 forever); attached mode
 * or timeout_ms 0: -EAGAIN when full. */
int broker_buf_alloc(broker_t *b, size_t size, broker_buf_t **buf,
                     int timeout_ms);
/* Send the first `len` bytes of buf as a one-way message (the buffer stays
 * the caller's: send it again, or free it). */
int broker_buf_send(broker_t *b, const char *name, broker_buf_t *buf,
                    size_t len);
int broker_buf_send_id(broker_t *b, uint64_t id, broker_buf_t *buf,
                       size_t len);
/* Publish the first `len` bytes of buf (every subscriber gets a view of
 * the same memory). */
int broker_buf_publish(broker_t *b, const char *topic, broker_buf_t *buf,
                       size_t len);
/* Drop the caller's reference; NULL is allowed. */
void broker_buf_free(broker_t *b, broker_buf_t *buf);

/* Pool usage: bytes of segments mapped, and bytes of chunks in use
 * (allocated or still held by a receiver). */
typedef struct broker_shm_stats {
    uint32_t segments;
    uint64_t mapped;
    uint64_t in_use;
    uint64_t buffers;       /* buffers not yet back in the pool */
} broker_shm_stats_t;
void broker_shm_stats(const broker_t *b, broker_shm_stats_t *st);

/* ---- streams ---------------------------------------------------------- */

/* Open a stream to a name (or, with name NULL, to client id `id`).  The
 * stream exists at the peer once the first write arrives. */
int broker_stream_open(broker_t *b, const char *name, uint64_t id,
                       uint32_t *stream);
/* Send one message on a stream (ours or one a peer opened to us). */
int broker_stream_write(broker_t *b, uint32_t stream, const void *data,
                        size_t len, const int *fds, unsigned nfds);
/* Close a stream; the peer gets a BROKER_MSG_CLOSE event. */
int broker_stream_close(broker_t *b, uint32_t stream);

/* ---- async API on the caller's libuv loop ---------------------------- */

struct uv_loop_s;

/* What an attached connection calls (broker_attach copies the struct; a
 * NULL member is not called).  Callbacks run on the loop's thread from
 * the library's own libuv callbacks, never nested inside a libbroker
 * call except for the -ECANCELED completions broker_close() runs; so they
 * may call any libbroker function on b, broker_close() included (then no
 * later callback of b runs, save those -ECANCELED ones).  libbroker(3),
 * "Callbacks", has the details. */
typedef struct broker_callbacks {
    /* A message or event, in the order received (the messages of the
     * pass in which the loop read them, or of the next pass).  The callee
     * owns msg: broker_msg_free() it, now or later.  NULL: messages are
     * freed unread. */
    void (*on_message)(broker_t *b, broker_msg_t *msg, void *userdata);
    /* The connection failed (err < 0: -ECONNRESET, -ESHUTDOWN, -EPROTO,
     * ...): once, after every message received before the failure went to
     * on_message and every pending async call got err.  Not called after
     * broker_close().  The callee (or later code on the loop thread) must
     * call broker_close(b). */
    void (*on_disconnect)(broker_t *b, int err, void *userdata);
} broker_callbacks_t;

/* The end of broker_call_async(), run once: err 0 and reply (a DATA
 * message the callee owns and frees with broker_msg_free), or err < 0 and
 * reply NULL: the peer's or the broker's error (-ENOENT, -ECONNRESET,
 * ...), -ENODATA (closed without a reply), -ETIMEDOUT, the connection's
 * error, or -ECANCELED from inside broker_close(). */
typedef void (*broker_reply_cb)(broker_t *b, int err, broker_msg_t *reply,
                                void *userdata);

/* Attach a connected broker_t to a loop.  From then on, sends queue without
 * blocking and are flushed by the loop: the messages sent while the loop
 * runs one pass (from callbacks, or before uv_run) are packed into as few
 * packets as they fit and written before the loop next waits for events.
 * Received messages go to the callbacks; the blocking receive calls
 * return -EBUSY.  broker_close()
 * detaches (it must be called from the loop thread; the loop must run once
 * more for libuv to release its handle). */
int broker_attach(broker_t *b, struct uv_loop_s *loop,
                  const broker_callbacks_t *cbs, void *userdata);
/* Request/reply without blocking (attached connections only, else
 * -EINVAL): cb runs once with the reply, an error or -ETIMEDOUT
 * (timeout_ms < 0: none), or -ECANCELED if broker_close() runs first.
 * The callee owns reply. */
int broker_call_async(broker_t *b, const char *name, const void *data,
                      size_t len, int timeout_ms, broker_reply_cb cb,
                      void *userdata);
/* Subscribe without blocking (attached connections only, else -EINVAL):
 * cb runs once with err 0 and the subscription id, or an error (id 0), or
 * -ECANCELED if broker_close() runs first.  Publications for it may only
 * arrive after cb ran.  broker_publish and broker_unsubscribe work in
 * attached mode as they are (unsubscribe does not wait for the broker). */
typedef void (*broker_sub_cb)(broker_t *b, int err, uint32_t id,
                              void *userdata);
int broker_subscribe_async(broker_t *b, const char *pattern,
                           const char *group, broker_sub_policy_t policy,
                           broker_sub_cb cb, void *userdata);
/* Bytes queued in the library and not yet written to the socket. */
size_t broker_pending(const broker_t *b);
/* What received messages waiting for broker_recv (or for dispatch to
 * the callbacks) count against BROKER_OPT_MAX_QUEUED now, in bytes. */
size_t broker_queued(const broker_t *b);

#ifdef __cplusplus
}
#endif
#endif
