/*
 * reasm.h - reassembly of fragmented DATA messages (prefix bk_reasm_).
 *
 * Pure bookkeeping: no socket I/O and no clock.  The caller feeds every
 * DATA fragment it received (already validated with frame.h) together with
 * the fds that arrived for it and the current time in milliseconds; the
 * table hands back completed messages (or, in chunked mode, pieces of
 * messages).  Partial messages are keyed by (source client id, stream id)
 * in a bk_htable hashed with XXH3, and indexed by stream id alone in a
 * second one, so that dropping a stream costs O(1) whether or not its
 * source is known.
 *
 * Everything is bounded:
 *   - bytes per message (max_msg) and fragments per message (max_frags);
 *   - number of partial messages (max_partial), and as many "discarding"
 *     entries (see below);
 *   - bytes of buffer allocated for all partial messages together
 *     (max_bytes, counted as allocated, not as received);
 *   - idle time of a partial message (timeout_ms, see bk_reasm_expire).
 *
 * When a message is refused (too large, too many partial messages, out of
 * memory, expired), its key becomes a "discarding" entry: the rest of that
 * message's fragments, which may already be in flight, are then swallowed
 * silently until its last fragment, a new first fragment on the key, a drop
 * or the idle timeout removes the entry.
 *
 * File descriptors: bk_reasm_feed always takes ownership of the fds it is
 * given.  fds that arrive on a first fragment belong to the partial message
 * until it completes, then to the caller through bk_reasm_out_t; every path
 * that discards a message closes them.
 */
#ifndef BK_REASM_H
#define BK_REASM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "proto.h"
#include "htable.h"
#include "list.h"

/* Flags of a completed message or chunk (same values as BROKER_MSGF_*). */
#define BK_REASM_OPEN   0x01u   /* first fragment carried BK_F_OPEN */
#define BK_REASM_CLOSE  0x02u   /* last fragment carried BK_F_CLOSE */
#define BK_REASM_CHUNK  0x04u   /* chunked mode: a piece of a message */
#define BK_REASM_LAST   0x08u   /* chunked mode: the message's last piece */

typedef struct bk_reasm_limits {
    uint64_t max_msg;       /* payload bytes per message (name excluded) */
    uint32_t max_frags;     /* fragments per message (per chunk if chunked) */
    uint32_t max_partial;   /* partial messages held at once */
    /* Buffer bytes of all partial messages together; 0: no total.  A
     * fragment that would need more is refused (BK_REASM_FULL), except in
     * chunked mode, where what the message has buffered is delivered as
     * a chunk at once instead. */
    uint64_t max_bytes;
    uint64_t timeout_ms;    /* idle time before a partial expires; 0: never */
    bool chunked;           /* deliver oversized messages as chunks */
} bk_reasm_limits_t;

/* Why bk_reasm_feed failed (bk_reasm_result_t.why). */
enum bk_reasm_why {
    BK_REASM_OK = 0,
    /* -EPROTO: a CONT fragment with no partial message for its key. */
    BK_REASM_ORPHAN_CONT,
    /* -EPROTO: a first fragment while a message on its key is partial.
     * The partial message is left untouched. */
    BK_REASM_BUSY_KEY,
    /* -EPROTO: not a DATA fragment, fds on a CONT fragment, bad name
     * length, or more fds than BK_MAX_FDS_HARD. */
    BK_REASM_BAD_FRAME,
    /* -EMSGSIZE: the message exceeds max_msg bytes or max_frags
     * fragments (never in chunked mode). */
    BK_REASM_TOO_BIG,
    /* -ENOBUFS: max_partial partial messages are already held. */
    BK_REASM_TOO_MANY,
    /* -ENOMEM: allocation failed. */
    BK_REASM_NOMEM,
    /* -ENOBUFS: the message's buffer would take the partial messages'
     * total past max_bytes (never in chunked mode). */
    BK_REASM_FULL,
};

/* A completed message or chunk, owned by the caller. */
typedef struct bk_reasm_out {
    uint64_t source;
    uint32_t stream;
    unsigned flags;                 /* BK_REASM_* */
    bool named;                     /* first fragment had BK_F_NAME */
    char name[BK_MAX_NAME + 1];     /* NUL-terminated when named */
    uint8_t *data;                  /* payload with the name stripped */
    size_t len;
    /* true: data is a malloc()ed buffer the caller must free().  false:
     * data points into the payload given to bk_reasm_feed (or is NULL)
     * and stays valid only as long as that buffer does. */
    bool data_owned;
    int fds[BK_MAX_FDS_HARD];       /* owned by the caller */
    unsigned nfds;
} bk_reasm_out_t;

#define BK_REASM_MAX_OUT 2

typedef struct bk_reasm_result {
    enum bk_reasm_why why;
    unsigned nout;
    bk_reasm_out_t out[BK_REASM_MAX_OUT];
} bk_reasm_result_t;

struct bk_partial;

typedef struct bk_reasm {
    bk_htable_t table;              /* bk_partial by (source, stream) */
    bk_htable_t bysid;              /* per stream id: its entries */
    bk_list_t lru;                  /* bk_partial, least recently
                                       active first */
    bk_list_t dlru;                 /* the discarding ones alone, in the
                                       same order */
    bk_reasm_limits_t lim;
    size_t npartial;                /* messages being reassembled */
    size_t ndiscard;                /* discarding entries */
    uint64_t bytes;                 /* payload bytes buffered */
    uint64_t alloc;                 /* buffer bytes allocated for them */
} bk_reasm_t;

void bk_reasm_init(bk_reasm_t *r, const bk_reasm_limits_t *lim);
/* New limits apply to the fragments fed from now on. */
void bk_reasm_set_limits(bk_reasm_t *r, const bk_reasm_limits_t *lim);
/* Frees every partial message and closes the fds they hold. */
void bk_reasm_fini(bk_reasm_t *r);

/* Feed one DATA fragment: h and payload as decoded by bk_pkt_next, fds =
 * the h->nfds descriptors that arrived for it (ownership passes to the
 * table in every case; may be NULL when h->nfds is 0).
 *
 * Returns the number of outputs stored in res->out (0, 1 or 2; 2 only in
 * chunked mode, when a buffered chunk and the fragment itself are both
 * delivered), or a negative errno with res->why telling which failure it
 * is (see enum bk_reasm_why).  On -EMSGSIZE, -ENOBUFS and -ENOMEM the
 * message is refused and its remaining fragments will be swallowed.  The
 * caller must release every output (bk_reasm_out_release or by taking the
 * data and fds). */
int bk_reasm_feed(bk_reasm_t *r, const bk_hdr_t *h, const uint8_t *payload,
                  int *fds, uint64_t now_ms, bk_reasm_result_t *res);

/* Free an output's owned data and close its fds. */
void bk_reasm_out_release(bk_reasm_out_t *o);

/* Forget the message on (source, stream); source 0 matches every source.
 * Discarding entries go too.  Returns how many entries were removed.
 * O(1) lookup in both cases (plus the entries removed). */
size_t bk_reasm_drop_stream(bk_reasm_t *r, uint64_t source, uint32_t stream);
/* Forget every message from source (the peer is gone). */
size_t bk_reasm_drop_source(bk_reasm_t *r, uint64_t source);

typedef void (*bk_reasm_expired_fn)(void *ud, uint64_t source,
                                    uint32_t stream);
/* Expire entries idle for timeout_ms or more at now_ms.  Each expired
 * partial message is reported through fn (may be NULL), its memory and fds
 * are released and its key starts discarding; expired discarding entries
 * vanish silently.  Returns the number of partial messages reported. */
size_t bk_reasm_expire(bk_reasm_t *r, uint64_t now_ms,
                       bk_reasm_expired_fn fn, void *ud);

/* Earliest time at which bk_reasm_expire has work, if any. */
bool bk_reasm_next_deadline(const bk_reasm_t *r, uint64_t *when_ms);

/* Partial messages currently held (discarding entries excluded). */
size_t bk_reasm_count(const bk_reasm_t *r);
/* Buffer bytes the partial messages hold now (what max_bytes bounds). */
uint64_t bk_reasm_alloc(const bk_reasm_t *r);

#endif
