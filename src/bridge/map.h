/*
 * map.h - how local topics and names map onto NATS subjects (prefix
 * bn_map_).  Pure functions on strings; nothing is allocated.
 *
 *   publication on topic T          PREFIX.T
 *   call/message to HOST/NAME       PREFIX._call.HOST.NAME
 *   offer announcements             PREFIX._bridge.offers (and .hello,
 *                                   .bye)
 *
 * Topics whose first token is `_call` or `_bridge` are the bridge's own
 * and never cross.  Every message the bridge publishes carries the
 * header BN_MAP_ORIGIN with its host's name (the loop mark).
 */
#ifndef BN_MAP_H
#define BN_MAP_H

#include <stdbool.h>
#include <stddef.h>

#define BN_MAP_ORIGIN   "Brokerd-Origin"    /* header: publishing host */
#define BN_MAP_ERROR    "Brokerd-Error"     /* header: a reply's errno */
#define BN_MAP_MSG      "Brokerd-Msg"       /* header: a split message's id */
#define BN_MAP_PART     "Brokerd-Part"      /* header: I/N of its parts */
#define BN_MAP_SIZE     "Brokerd-Size"      /* header: its whole size */
#define BN_MAP_ID_MAX   64                  /* Brokerd-Msg bytes at most */
#define BN_MAP_SUBJ_MAX 600                 /* any subject built here */

/* "PREFIX.T" into buf.  0 or -ENAMETOOLONG. */
int bn_map_subject(const char *prefix, const char *topic, char *buf,
                   size_t len);

/* The local topic of an imported subject: the part after "PREFIX.", or
 * NULL if the subject is not under the prefix, is not a valid topic, or
 * is one of the bridge's own (`_call`, `_bridge`, `$broker`). */
const char *bn_map_topic(const char *prefix, const char *subject);

/* Whether subject is one of the bridge's own under the prefix (calls,
 * announcements): an import pattern such as `>` also sees those. */
bool bn_map_is_own(const char *prefix, const char *subject);

/* Whether a local topic is one the bridge may export (not reserved). */
bool bn_map_exportable(const char *topic);

/* "PREFIX._call.HOST.NAME" into buf.  0, -EINVAL (NAME is not a run of
 * non-empty '.'-separated tokens) or -ENAMETOOLONG. */
int bn_map_call_subject(const char *prefix, const char *host,
                        const char *name, char *buf, size_t len);

/* "PREFIX._bridge.WHAT" into buf (WHAT: offers, hello, bye). */
int bn_map_ctl_subject(const char *prefix, const char *what, char *buf,
                       size_t len);

/* Split a local name "HOST/NAME": the host's length (> 0), or -EINVAL if
 * it is not of that form with a valid host token and a NAME that maps to
 * a subject. */
int bn_map_split_remote(const char *local_name);

/* Whether h can be a host's name: one subject token of letters, digits,
 * '-' and '_', at most 63 bytes. */
bool bn_map_host_ok(const char *h);

/* Whether NAME maps into a subject (bn_map_call_subject accepts it). */
bool bn_map_name_ok(const char *name);

#endif
