/*
 * subs.h - libbroker layer 3: the connection's live subscriptions
 * (prefix bk_subs_).  Not installed.
 *
 * Owns b->subs: the set of subscription ids the broker granted this
 * connection and that the application has not unsubscribed.  The input
 * layer delivers a publication or a GAP only while its subscription id is
 * in the set; what still arrives for an id that left it is dropped
 * silently.  An id enters the set the moment the broker's SUBSCRIBE reply
 * is read (ctrl.c), so deliveries read right after the reply are kept,
 * and leaves it before the UNSUBSCRIBE request is sent.
 *
 * Ownership: the set's entries are the module's own allocations.
 */
#ifndef BK_SUBS_H
#define BK_SUBS_H

#include "conn.h"

/* Allocate b->subs; 0 or -ENOMEM. */
int bk_subs_init(broker_t *b);
void bk_subs_fini(broker_t *b);

/* Add id (not 0).  0, 1 if it was there already, or -ENOMEM. */
int bk_subs_add(broker_t *b, uint32_t id);
/* Remove id.  0, or -ENOENT if it was not there. */
int bk_subs_remove(broker_t *b, uint32_t id);
/* Whether id is a live subscription. */
bool bk_subs_live(const broker_t *b, uint32_t id);
/* How many subscriptions are live. */
size_t bk_subs_count(const broker_t *b);

#endif
