/*
 * pubsub.h - publish/subscribe in the broker: the subscriptions of each
 * client, fanning a publication out to every matching subscription (and
 * one member of each queue group), the slow-subscriber policies, GAP
 * reports and the broker's own announcements (prefix bk_pub_).
 *
 * Owns: the recipient record of every publication whose fragments are
 * still coming (bk_pub_t, hung on the publisher's stream end by the
 * router, freed by bk_pub_free), the per-client subscription lists (the
 * bk_sub_t objects themselves are the subscription table's, subs.h), and
 * the fds it dups for receivers until it hands them to their queues.
 *
 * Fan-out: the match set is computed once at the first fragment; each
 * receiver's frame is written at once when its queue is empty and the
 * frame large, else queued with a reference to one shared copy of the
 * fragment (outq.h, bk_opayload), never a copy per receiver.  Later
 * fragments go to the receivers the record lists, in order.
 *
 * Policies, at a message's first fragment, when the receiver's queue holds
 * more than queue_limit bytes: drop (not queued, counted, reported by a
 * GAP before the next delivery on that subscription or when the queue has
 * drained below half), block (queued, the publisher paused as for
 * unicast), disconnect (ERROR ENOBUFS "slow consumer" on stream 0, the
 * client closed).  Continuations of an accepted message are always queued.
 *
 * A subscription with BK_SUB_F_NOFDS never gets a publication that
 * carries fds: the publisher gets ERROR EXDEV on its stream, from the
 * subscriber's id, instead (not a drop: no GAP).
 *
 * Gateways (BK_SUB_F_GATEWAY, a bridge to other hosts): a group with one
 * gives its share of each publication to a gateway, never to its other
 * members, unless the publisher is one of its gateways (then the group has
 * no share: the message had it where it came from).  A gateway addresses
 * the group's other members with dest = its subscription id.  Gateways
 * hear "members=N" on BK_TOPIC_MEMBERS when they subscribe and whenever
 * that number changes.
 */
#ifndef BK_PUBSUB_H
#define BK_PUBSUB_H

#include <stddef.h>
#include <stdint.h>
#include "port.h"
#include "server.h"
#include "subs.h"

/* One receiver of a publication in progress. */
typedef struct bk_pub_rcpt {
    uint64_t client;
    uint32_t sid;               /* the receiver's delivery stream */
    uint32_t sub;               /* its subscription id (the frames' dest) */
    uint8_t policy;
} bk_pub_rcpt_t;

/* The receivers of a fragmented publication, recorded at its first
 * fragment. */
typedef struct bk_pub {
    uint32_t n, cap;
    bk_pub_rcpt_t r[];
} bk_pub_t;

/* SUBSCRIBE: the request is checked already (valid pattern, group, policy,
 * flags BK_SUB_F_*, the right to be a gateway).  Returns 0 with *id set,
 * -EINVAL (a gateway without a group), -EACCES (allow-subscribe), -ENOSR
 * (max-subscriptions) or -ENOMEM. */
int bk_pub_subscribe(bk_port_t *p, const char *pat, size_t plen,
                     const char *group, size_t glen, uint8_t policy,
                     uint8_t flags, uint32_t *id);
/* UNSUBSCRIBE.  Returns 0 or -ENOENT. */
int bk_pub_unsubscribe(bk_port_t *p, uint32_t id);
/* `p` is going away and its queue is dropped next (nothing in it is sent
 * any more): every subscription it has ends (queue-group messages waiting
 * in its queue move to other members). */
void bk_pub_port_gone(bk_port_t *p);

/* Publication h from `from` addressed to a group (h->dest not 0, see
 * BK_SUB_F_GATEWAY): 0 when dest is one of from's gateway subscriptions,
 * the topic matches its pattern and its group has a member that is not a
 * gateway; else -EINVAL or -ENOENT with *why.  0 for dest 0. */
int bk_pub_addressed(bk_port_t *from, const bk_hdr_t *h,
                     const uint8_t *payload, const char **why);

/* The first fragment of a valid, permitted publication from `from` (NULL:
 * the broker itself; fds NULL then).  Takes ownership of fds[0..h->nfds) (each receiver
 * gets a dup; these are closed).  With `rec` (fragments follow) the
 * receivers are recorded in a new *rec (NULL when nobody got it; to be
 * freed with bk_pub_free).  Returns how many receivers got it, or -ENOMEM
 * (nothing delivered). */
int bk_pub_fanout(bk_server_t *srv, bk_port_t *from, const bk_hdr_t *h,
                  const uint8_t *payload, int *fds, bk_pub_t **rec);
/* A continuation fragment, or a CLOSE frame (from the publisher's CLOSE:
 * the message is abandoned), to every receiver in rec.  A receiver the
 * fragment cannot be queued for (out of memory) gets an ERROR ENOMEM that
 * ends its delivery, a drop counted (a GAP under policy drop), and
 * leaves rec. */
void bk_pub_forward(bk_port_t *from, bk_pub_t *rec, const bk_hdr_t *h,
                    const uint8_t *payload);
/* The publisher died or broke the protocol mid-message: every receiver
 * gets ERROR (err, text) on its delivery stream. */
void bk_pub_abort(bk_port_t *from, const bk_pub_t *rec, int err,
                  const char *text);
void bk_pub_free(bk_pub_t *rec);

/* Send the GAPs pending on p's subscriptions (its queue drained). */
void bk_pub_flush_gaps(bk_port_t *p);

/* Publish text[0..len) on the broker's own topic (source 0). */
void bk_pub_announce(bk_server_t *srv, const char *topic, const char *text,
                     size_t len);

/* bk_names on_change hook (arg: the server): "$broker.names". */
void bk_pub_name_changed(const char *name, size_t len, uint64_t old,
                         uint64_t new_owner, void *arg);
/* "$broker.clients": event "connect" or "disconnect" of p. */
void bk_pub_client_event(bk_port_t *p, const char *event);

/* outq's on_sent hook: a queued first fragment of subscription `tag` left. */
void bk_pub_sent(void *tag, void *arg);

#endif
