/*
 * stream.h - libbroker layer 4: the stream table (prefix bk_stream_).
 * Not installed.
 *
 * Owns struct bk_stream, the library's view of a stream, and the table
 * of them (b->st): lookup by id, id allocation for streams we open, and a
 * few freed entries kept for reuse.  A stream owns its pending output
 * (s->q, outq.h) and its name; s->acall is the async call waiting on it
 * (async.c owns it; the stream only points at it).
 *
 * Lifetime: an entry lives from bk_stream_add() until bk_stream_forget(),
 * which drops its output and, when an async call waits on it, hands that
 * call to hooks.call_dropped.  Never keep a struct bk_stream pointer
 * across bk_io_wait() or a pump: an incoming CLOSE/ERROR frees the stream.
 * Look it up again by id.
 */
#ifndef BK_STREAM_H
#define BK_STREAM_H

#include "conn.h"
#include "outq.h"

struct bk_acall;

struct bk_stream {
    bk_hnode_t node;
    uint8_t key[4];
    uint32_t id;
    bool ours;                  /* we chose the id (peer bit clear) */
    bool opened;                /* OPEN assigned to a message already */
    uint64_t dest;              /* ours, opened to a client id */
    char *name;                 /* ours, opened to a name */
    char *topic;                /* a publication delivered to us: its
                                   topic, for every piece of it */
    uint32_t sub_id;            /* and the subscription it is for */
    struct bk_outq q;           /* attached mode: pending output; q.wire:
                                   the broker knows the stream; q.closing:
                                   our last frame is queued, free on drain */
    bk_list_t spare;            /* on the spare list while unused */
    struct bk_acall *acall;     /* broker_call_async waiting on it */
};

struct bk_stream_hooks {
    /* s is forgotten while s->acall waits on it (set by async.c): the
     * call must be ended with -ECANCELED.  s->acall is cleared after. */
    void (*call_dropped)(broker_t *b, struct bk_stream *s);
};

/* Allocate b->st; 0 or -ENOMEM. */
int bk_stream_init(broker_t *b);
void bk_stream_set_hooks(broker_t *b, const struct bk_stream_hooks *hooks);
/* Forget every stream (their async calls are not told) and free b->st. */
void bk_stream_fini(broker_t *b);

struct bk_stream *bk_stream_find(broker_t *b, uint32_t id);
/* A new entry for id; NULL: -ENOMEM. */
struct bk_stream *bk_stream_add(broker_t *b, uint32_t id);
/* Remove s from every structure and free it with its pending output. */
void bk_stream_forget(broker_t *b, struct bk_stream *s);
/* A free local stream id in *sid; 0 or -ENOSR. */
int bk_stream_alloc_id(broker_t *b, uint32_t *sid);

/* The broker or the peer ended stream s (CLOSE, ERROR, or a message with
 * CLOSE): finish a half-sent queued message, then forget s. */
void bk_stream_ended(broker_t *b, struct bk_stream *s);
/* End a stream of ours after a failure or a timeout (err, negative): tell
 * the broker if it knows the stream, then forget it. */
void bk_stream_abort(broker_t *b, uint32_t sid, int err);

#endif
