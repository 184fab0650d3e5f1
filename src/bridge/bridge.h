/*
 * bridge.h - the state of brokerd-nats and what its parts offer each
 * other (prefix bn_).
 *
 *   main.c    bn_main     start, signals, reload (SIGHUP), shutdown
 *   conf.c    bn_conf_    settings (conf.h)
 *   log.c     bn_log      log lines (log.h)
 *   map.c     bn_map_     topics and names as subjects (map.h)
 *   nats.c    bn_nats_    the libnats connections on the loop, and the
 *                         hand-off of libnats's callbacks to the loop
 *   evloop.c  bn_evloop_  libnats's sockets polled by the loop
 *   local.c   bn_local_   the libbroker connection and its messages
 *   export.c  bn_export_  local publications to NATS
 *   import.c  bn_import_  NATS subjects published locally
 *   group.c   bn_group_   queue groups spanning hosts (import-group): a
 *                         gateway in the local group, a NATS queue
 *                         subscription while it has members
 *   parts.c   bn_parts_   publications larger than max_payload: split
 *                         into parts, and joined again
 *   call.c    bn_call_    requests and one-way messages across hosts
 *   offers.c  bn_offers_  which names other hosts offer, as local names
 *   stats.c   bn_stats_   counters, rates and the status text
 *
 * Everything runs on the one libuv loop's thread except libnats's own
 * callbacks, which only queue events for the loop (nats.c).  The bridge
 * owns every table here; the strings in them are malloc'd copies.
 */
#ifndef BN_BRIDGE_H
#define BN_BRIDGE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include <nats/nats.h>
#include "broker.h"
#include "conf.h"
#include "htable.h"
#include "list.h"

#define BN_MAX_REMOTES 1024     /* HOST/NAME proxies registered locally */

typedef struct bn_stats {
    uint64_t msgs_out, bytes_out;   /* publications sent to NATS */
    uint64_t msgs_in, bytes_in;     /* publications brought in */
    uint64_t calls_out, calls_out_failed;   /* local callers -> remote */
    uint64_t calls_in, calls_in_failed;     /* remote callers -> offers */
    uint64_t sends_out, sends_in;   /* one-way messages to HOST/NAME */
    uint64_t drop_size;             /* larger than max-message (or, a
                                       call, than max_payload) */
    uint64_t drop_incomplete;       /* split: a part missing or wrong */
    uint64_t drop_partial_bytes;    /* split: no room (partial-bytes) */
    uint64_t msgs_split, msgs_joined; /* split publications out, in */
    uint64_t drop_fds;              /* carried file descriptors */
    uint64_t drop_disconnected;     /* NATS not connected (no buffer) */
    uint64_t drop_reconnect_buffer; /* reconnect buffer full */
    uint64_t drop_slow_consumer;    /* libnats dropped for a slow sub */
    uint64_t drop_backlog;          /* import-backlog full */
    uint64_t drop_local_backlog;    /* local-backlog full */
    uint64_t drop_gap;              /* brokerd dropped (export-policy drop) */
    uint64_t drop_invalid;          /* bad subject, header or reply */
    uint64_t loop_skipped;          /* own messages not sent back */
    uint64_t group_out;             /* local group shares sent to NATS */
    uint64_t group_in;              /* NATS queue messages handed to a
                                       local member */
    uint64_t group_kept;            /* shares too large for one NATS
                                       message, handed to a local member */
    uint64_t group_parts_skipped;   /* parts on a queue subscription */
    uint64_t drop_group;            /* for a group without members here */
    uint64_t drop_refused;          /* brokerd refused a one-way message
                                       of the bridge (ERROR event) */
    uint64_t disconnects, reconnects;
    uint64_t started_ms;
    uint64_t rate_at_ms, rate_msgs_out, rate_msgs_in;
    double rate_out, rate_in;       /* messages/s over the last interval */
} bn_stats_t;

/* A local export subscription. */
typedef struct bn_export {
    struct bn_bridge *br;
    char *pattern;                  /* NULL: a free slot (once !pending) */
    uint32_t sub_id;                /* 0 until brokerd answered */
    bool pending;                   /* brokerd has not answered yet */
} bn_export_t;

/* An import-group entry: the gateway subscription in the local group,
 * and the NATS queue subscription while the group has members here. */
typedef struct bn_group {
    char *key;                      /* "PATTERN GROUP"; NULL: a free slot
                                       (once !pending) */
    char *pattern, *name;           /* in one allocation after key */
    uint32_t sub_id;                /* 0 until brokerd answered */
    bool pending;
    uint32_t members;               /* the local members, not gateways */
    uint32_t nats_id;               /* hand-off tag of nsub */
    natsSubscription *nsub;         /* on gnc, while members > 0 */
    uint32_t drain_id;              /* tag of the last one left (its
                                       messages may still come) */
} bn_group_t;

/* A NATS subscription of the bridge (imports and offers). */
typedef struct bn_nsub {
    char *key;                      /* the pattern or the offered name */
    uint32_t id;                    /* the hand-off tag, never 0 */
    natsSubscription *sub;
} bn_nsub_t;

/* A name registered locally for a remote host's offer. */
typedef struct bn_remote {
    char *name;                     /* HOST/NAME */
    bool fixed;                     /* from `remote =` */
    bool learned;                   /* announced by its host's bridge */
} bn_remote_t;

struct bn_call_out;
struct bn_partial;

typedef struct bn_bridge {
    uv_loop_t *loop;
    bn_conf_t conf;
    int exit_code;
    bool stopping;

    /* local.c */
    broker_t *b;
    uint64_t self_id;               /* the bridge's client id */

    /* nats.c */
    natsConnection *nc;
    natsOptions *nopts;
    uv_timer_t connect_timer;
    unsigned connect_delay_ms;
    const char *state;              /* connecting, connected,
                                       reconnecting, closed */
    char server[256];               /* the connected URL */
    int64_t max_payload;
    char inbox[96];                 /* this bridge's reply prefix */
    uint32_t inbox_id;              /* hand-off tag of inbox.* */
    natsSubscription *inbox_sub;
    uint32_t ctl_id;                /* hand-off tag of _bridge.> */
    natsSubscription *ctl_sub;
    natsConnection *gnc;            /* the queue groups' (echo allowed) */
    natsOptions *gopts;
    bool group_failed;              /* its last attempt failed (logged) */
    uint64_t group_retry_ms;        /* no attempt before (bn_now_ms) */

    bn_export_t exports[BN_MAX_LIST];
    size_t nexports;
    bn_group_t groups[BN_MAX_LIST];
    bn_nsub_t imports[BN_MAX_LIST];
    size_t nimports;
    bn_nsub_t offers[BN_MAX_LIST];
    size_t noffers;
    bn_remote_t remotes[BN_MAX_REMOTES];
    size_t nremotes;

    /* parts.c */
    char msg_run[20];               /* this run's id prefix (hex) */
    uint64_t msg_seq;               /* the last split publication's */
    bk_list_t partials;             /* split publications being joined */
    bk_htable_t partial_ids;        /* them by origin and Brokerd-Msg */
    bk_htable_t partial_live;       /* the living by origin and topic */
    size_t npartials;
    uint64_t partial_bytes;         /* their Brokerd-Size, summed */

    struct bn_call_out *calls;      /* call.c: calls waiting for NATS */
    size_t ncalls_out, ncalls_in;
    uint64_t next_call;

    uv_timer_t tick;                /* rates and announcements */
    uv_signal_t sig_term, sig_int, sig_hup;
    bn_stats_t st;
} bn_bridge_t;

/* ---- main.c ---------------------------------------------------------------- */

/* Begin the shutdown with this exit code (from any loop callback). */
void bn_quit(bn_bridge_t *br, int code);

/* ---- evloop.c -------------------------------------------------------------- */

/* natsOptions_SetEventLoop's callbacks (the loop's thread must be the one
 * that makes the first connection). */
natsStatus bn_evloop_attach(void **userData, void *loop, natsConnection *nc,
                            natsSock socket);
natsStatus bn_evloop_read(void *userData, bool add);
natsStatus bn_evloop_write(void *userData, bool add);
natsStatus bn_evloop_detach(void *userData);

/* ---- nats.c ---------------------------------------------------------------- */

/* What a NATS message was received for. */
enum { BN_SUB_IMPORT = 1, BN_SUB_OFFER, BN_SUB_INBOX, BN_SUB_CTL,
       BN_SUB_GROUP };

/* Options from the settings, the hand-off, then the first connection
 * attempt (later ones from a timer, with backoff, until one succeeds).
 * 0 or a negative errno (after a log line). */
int bn_nats_start(bn_bridge_t *br);
/* Close the connection and wait for libnats's threads; the loop must run
 * once more to release the handles. */
void bn_nats_stop(bn_bridge_t *br);
bool bn_nats_connected(const bn_bridge_t *br);
/* Make the group connection if groups are configured and it is not up
 * (after the first connection, then at every tick while it fails). */
void bn_nats_group_connect(bn_bridge_t *br);

/* Subscribe subject (queue group, or NULL) for kind (BN_SUB_GROUP: on the
 * group connection); *id gets the tag the messages come back with.  0 or a negative errno (-ENOTCONN before the
 * first connection: the caller subscribes again on connect). */
int bn_nats_subscribe(bn_bridge_t *br, const char *subject,
                      const char *group, int kind, uint32_t *id,
                      natsSubscription **sub);
void bn_nats_unsubscribe(natsSubscription **sub);
/* Unsubscribe, but still take (for 2 s at most) what the server sent
 * before it knew; *sub is NULL after, its messages keep their tag. */
void bn_nats_drain(natsSubscription **sub);
/* Destroy the drains that ended (all: every one, at shutdown). */
void bn_nats_reap_drains(bool all);

/* Whether len bytes of data go as one NATS message (with the origin mark;
 * true before the server told its max_payload). */
bool bn_nats_fits(const bn_bridge_t *br, size_t len);
/* Publish with this host's origin mark, a reply subject (or NULL) and
 * an error header (err < 0) or none.  0, -EMSGSIZE (data and headers
 * over max_payload), -ENOBUFS (reconnect buffer full), -ENOTCONN, -EIO. */
int bn_nats_publish(bn_bridge_t *br, const char *subject, const char *reply,
                    const void *data, size_t len, int err);

/* One part of a split publication (parts.c): its headers. */
typedef struct bn_part {
    const char *id;                 /* Brokerd-Msg */
    uint32_t index, count;          /* Brokerd-Part: INDEX/COUNT */
    uint64_t total;                 /* Brokerd-Size */
} bn_part_t;
#define BN_PART_ROOM 256            /* headers of a part take less */

/* Publish part p (with the origin mark), errors as bn_nats_publish. */
int bn_nats_publish_part(bn_bridge_t *br, const char *subject,
                         const void *data, size_t len, const bn_part_t *p);

/* ---- the parts that get NATS messages (the callee owns msg) ---------------- */

void bn_import_msg(bn_bridge_t *br, uint32_t id, natsMsg *msg);
void bn_group_nats_msg(bn_bridge_t *br, uint32_t id, natsMsg *msg);
void bn_call_offer_msg(bn_bridge_t *br, uint32_t id, natsMsg *msg);
void bn_call_reply_msg(bn_bridge_t *br, natsMsg *msg);
void bn_offers_ctl_msg(bn_bridge_t *br, natsMsg *msg);

/* (Re)connected: subscribe what the settings ask for and announce. */
void bn_import_sync(bn_bridge_t *br);
void bn_call_sync_offers(bn_bridge_t *br);
void bn_offers_announce(bn_bridge_t *br, bool hello);

/* ---- local.c --------------------------------------------------------------- */

/* Connect to brokerd, attach to the loop, register the status name.
 * 0 or a negative errno (after a log line). */
int bn_local_start(bn_bridge_t *br);
void bn_local_stop(bn_bridge_t *br);
/* Register / release a local name (blocking for brokerd's answer). */
int bn_local_register(bn_bridge_t *br, const char *name);
void bn_local_release(bn_bridge_t *br, const char *name);

/* ---- export.c, import.c ---------------------------------------------------- */

/* Make the local subscriptions match conf.exports. */
void bn_export_sync(bn_bridge_t *br);
void bn_export_stop(bn_bridge_t *br);
/* Count a message that does not cross, logging the first of each cause
 * (what) as a warning and the rest at debug level. */
void bn_stats_drop(bn_bridge_t *br, uint64_t *counter, const char *what,
                   const char *where);
void bn_export_publication(bn_bridge_t *br, broker_msg_t *msg);
/* Whether an export subscription delivers publications on topic. */
bool bn_export_covers(const bn_bridge_t *br, const char *topic);
/* Send a local publication to NATS (bounds checked, split if it must be,
 * counted). */
void bn_export_send(bn_bridge_t *br, const broker_msg_t *m);
void bn_import_stop(bn_bridge_t *br);
/* Publish data locally on topic (import-side bounds checked, counted). */
void bn_import_publish(bn_bridge_t *br, const char *topic, const void *data,
                       size_t len);

/* ---- group.c --------------------------------------------------------------- */

/* Make the gateway subscriptions match conf.groups (and drop the NATS
 * side of removed ones). */
void bn_group_sync(bn_bridge_t *br);
/* Subscribe or unsubscribe the NATS side of every group as its local
 * members come and go. */
void bn_group_nats_sync(bn_bridge_t *br);
/* A local delivery: true when it was for a gateway subscription (then
 * msg is consumed). */
bool bn_group_local_msg(bn_bridge_t *br, broker_msg_t *msg);
void bn_group_stop(bn_bridge_t *br);
/* The group connection is gone: forget its queue subscriptions (made
 * again by bn_group_nats_sync once it is back). */
void bn_group_nats_lost(bn_bridge_t *br);

/* ---- parts.c --------------------------------------------------------------- */

/* Choose this run's message ids (at start). */
void bn_parts_init(bn_bridge_t *br);
/* Send data as consecutive parts on subject.  0 or the first error of
 * bn_nats_publish_part (the parts after it are not sent). */
int bn_parts_send(bn_bridge_t *br, const char *subject, const void *data,
                  size_t len);
/* Whether an imported message is a part (it has Brokerd-Part). */
bool bn_parts_is_part(natsMsg *msg);
/* An imported part from origin on topic: joined with the others; once the
 * last arrives the whole publication is published locally. */
void bn_parts_take(bn_bridge_t *br, const char *topic, const char *origin,
                   natsMsg *msg);
/* An imported whole publication from origin on topic: a split one of the
 * same origin and topic still being joined lost its last parts. */
void bn_parts_whole(bn_bridge_t *br, const char *topic, const char *origin);
/* Drop what waited longer than partial-timeout for its next part. */
void bn_parts_tick(bn_bridge_t *br);
void bn_parts_stop(bn_bridge_t *br);

/* ---- call.c ---------------------------------------------------------------- */

/* A request or one-way message to a HOST/NAME name the bridge owns. */
void bn_call_local_msg(bn_bridge_t *br, broker_msg_t *msg);
/* Fail the calls that waited longer than call-timeout (-ETIMEDOUT). */
void bn_call_tick(bn_bridge_t *br);
/* End every call in flight (shutdown) and drop the offers' subjects. */
void bn_call_stop(bn_bridge_t *br);

/* ---- offers.c -------------------------------------------------------------- */

/* Register the fixed remotes of conf.remotes, drop those removed. */
void bn_offers_sync_fixed(bn_bridge_t *br);
void bn_offers_bye(bn_bridge_t *br);
void bn_offers_stop(bn_bridge_t *br);
bool bn_offers_is_remote(const bn_bridge_t *br, const char *name);

/* ---- stats.c --------------------------------------------------------------- */

uint64_t bn_now_ms(void);
/* Rates over the time since the last call. */
void bn_stats_tick(bn_bridge_t *br);
/* The status text ("key=value" lines); malloc'd, NULL on no memory. */
char *bn_stats_text(const bn_bridge_t *br, size_t *len);

#endif
