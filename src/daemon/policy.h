/*
 * policy.h - access rules from the configuration file: who may connect,
 * own a name, or open a stream to a name (prefix bk_policy_).
 *
 * A principal is `*`, uid:N, gid:N, user:NAME or group:NAME (names are
 * resolved to ids when the rule is parsed).  A name pattern is exact, or
 * ends in `*` for a prefix match.  The publish and subscribe rules take a
 * topic pattern (topic.h): a topic may be published if a rule's pattern
 * matches it, a subscription pattern is allowed if a rule's pattern
 * covers it (bk_topic_covers).  With no rule of a kind, that kind of
 * access is open; with some, only what a rule allows.  Root and the
 * broker's own uid are always allowed.
 *
 * Owns the rule arrays and their patterns (bk_policy_free releases them);
 * a bk_policy lives in the configuration (config.h).
 */
#ifndef BK_POLICY_H
#define BK_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef enum bk_policy_kind {
    BK_POLICY_ANY,
    BK_POLICY_UID,
    BK_POLICY_GID,
} bk_policy_kind_t;

typedef struct bk_policy_who {
    bk_policy_kind_t kind;
    unsigned id;
} bk_policy_who_t;

typedef struct bk_policy_rule {
    char *pattern;              /* malloc'd; NULL for connect rules */
    size_t plen;                /* without the trailing '*' */
    bool prefix;
    bk_policy_who_t who;
} bk_policy_rule_t;

typedef struct bk_policy_list {
    bk_policy_rule_t *v;
    size_t n;
} bk_policy_list_t;

typedef struct bk_policy {
    bk_policy_list_t connect, own, send;
    bk_policy_list_t publish, subscribe;    /* topic patterns */
} bk_policy_t;

/* The peer as SO_PEERCRED reported it. */
typedef struct bk_policy_peer {
    uid_t uid;
    gid_t gid;
} bk_policy_peer_t;

void bk_policy_init(bk_policy_t *p);
void bk_policy_free(bk_policy_t *p);

/* Add rules from a value: "PRINCIPAL..." for connect, "PATTERN
 * PRINCIPAL..." for own and send.  Returns 0, or -EINVAL with a reason
 * in err, or -ENOMEM. */
int bk_policy_add_connect(bk_policy_t *p, const char *value, char *err,
                          size_t errlen);
int bk_policy_add_own(bk_policy_t *p, const char *value, char *err,
                      size_t errlen);
int bk_policy_add_send(bk_policy_t *p, const char *value, char *err,
                       size_t errlen);
/* "PATTERN PRINCIPAL..." with a topic pattern (topic.h). */
int bk_policy_add_publish(bk_policy_t *p, const char *value, char *err,
                          size_t errlen);
int bk_policy_add_subscribe(bk_policy_t *p, const char *value, char *err,
                            size_t errlen);

bool bk_policy_may_connect(const bk_policy_t *p, const bk_policy_peer_t *who);
bool bk_policy_may_own(const bk_policy_t *p, const bk_policy_peer_t *who,
                       const char *name, size_t len);
bool bk_policy_may_send(const bk_policy_t *p, const bk_policy_peer_t *who,
                        const char *name, size_t len);
/* Whether `who` may publish to the topic / subscribe with the pattern. */
bool bk_policy_may_publish(const bk_policy_t *p, const bk_policy_peer_t *who,
                           const char *topic, size_t len);
bool bk_policy_may_subscribe(const bk_policy_t *p,
                             const bk_policy_peer_t *who, const char *pat,
                             size_t len);
/* True when there are send rules (sends by client id are then checked
 * against the target's names). */
bool bk_policy_has_send_rules(const bk_policy_t *p);

#endif
