/*
 * recon.h - libbroker layer 7: reconnecting (prefix bk_recon_).  Not
 * installed.
 *
 * Owns b->rc, which exists while BROKER_OPT_RECONNECT is on: the names
 * the application registered (with their flags) and its subscriptions
 * (pattern, group, policy), and the backoff state once the connection is
 * lost.  The subscription ids the application holds are its own: each
 * record maps it to the id the current broker granted, so publications
 * and GAPs are handed out with the application's id and
 * broker_unsubscribe is translated back.
 *
 * Reconnecting builds a whole new handle on a new socket (handle.c),
 * swaps its contents into the application's struct broker, frees the
 * old layers and registers the names and subscriptions again.
 *
 * Ownership: records and their strings are the module's own; the events
 * it returns belong to the caller.
 */
#ifndef BK_RECON_H
#define BK_RECON_H

#include "conn.h"
#include "msg.h"

/* Turn the option on (allocating b->rc) or off (freeing it).  0 or
 * -ENOMEM. */
int bk_recon_enable(broker_t *b, bool on);
void bk_recon_free(broker_t *b);
/* Whether the names and subscriptions being made are the module's own
 * replay (then the public functions must not record them again). */
bool bk_recon_replaying(const broker_t *b);

/* A name registered (ex: with REGISTER_EX and flags; outcome OWNER or
 * QUEUED); a name released.  Record: 0 or -ENOMEM. */
int bk_recon_name_add(broker_t *b, const char *name, bool ex,
                      uint32_t flags, int outcome);
void bk_recon_name_remove(broker_t *b, const char *name);

/* A subscription granted with broker id bid: record it and set *uid to
 * the id the application gets.  0 or -ENOMEM. */
int bk_recon_sub_add(broker_t *b, const char *pattern, const char *group,
                     int policy, uint32_t bid, uint32_t *uid);
/* The application's id of broker id bid (bid itself if unknown). */
uint32_t bk_recon_sub_user(const broker_t *b, uint32_t bid);
/* The broker id the application's id uid stands for now (uid itself if
 * unknown). */
uint32_t bk_recon_sub_broker(const broker_t *b, uint32_t uid);
/* Forget the application's id uid; the broker id it stands for (uid
 * itself if unknown). */
uint32_t bk_recon_sub_take(broker_t *b, uint32_t uid);

/* broker_recv on a failed connection with the option on: the first call
 * returns BROKER_MSG_DISCONNECTED; later ones reconnect with backoff
 * within timeout_ms (-1: as long as it takes) and return
 * BROKER_MSG_RECONNECTED.  0 and *out, -ETIMEDOUT, or -EINTR. */
int bk_recon_recv(broker_t *b, struct bk_msg **out, int timeout_ms);

#endif
