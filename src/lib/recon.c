/*
 * recon.c - libbroker layer 7: BROKER_OPT_RECONNECT, what it restores
 * and the reconnection itself (the rules are in recon.h).
 */
#include "config.h"
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shm.h"
#include "shmview.h"
#include "handle.h"
#include "recon.h"

#define BK_RECON_FIRST_MS   50u     /* the first retry's delay ... */
#define BK_RECON_MAX_MS     2000u   /* doubling up to this */
#define BK_RECON_LOST_MAX   4096u   /* bytes of RECONNECTED text at most */

struct bk_rname {
    bk_list_t link;
    bool ex;                    /* REGISTER_EX with flags */
    uint32_t flags;
    int outcome;                /* BROKER_NAME_OWNER or _QUEUED */
    char name[];
};

struct bk_rsub {
    bk_list_t link;
    uint32_t uid;               /* the application's id */
    uint32_t bid;               /* the current broker's id, 0: none */
    int policy;
    char *group;                /* NULL: none */
    char pattern[];
};

struct bk_recon {
    bk_list_t names;            /* struct bk_rname */
    bk_list_t subs;             /* struct bk_rsub */
    bool replaying;
    bool told;                  /* DISCONNECTED handed out */
    uint32_t delay_ms;          /* before the next attempt */
    uint64_t next_ms;           /* bk_io_now_ms of the next attempt */
};

int bk_recon_enable(broker_t *b, bool on)
{
    if (!on) {
        bk_recon_free(b);
        return 0;
    }
    if (b->rc)
        return 0;
    b->rc = calloc(1, sizeof(*b->rc));
    if (!b->rc)
        return -ENOMEM;
    bk_list_init(&b->rc->names);
    bk_list_init(&b->rc->subs);
    return 0;
}

static void sub_free(struct bk_rsub *s)
{
    bk_list_unlink(&s->link);
    free(s->group);
    free(s);
}

void bk_recon_free(broker_t *b)
{
    struct bk_recon *rc = b->rc;
    struct bk_rname *n;
    struct bk_rsub *s;

    if (!rc)
        return;
    bk_list_for_each_safe(n, &rc->names, struct bk_rname, link) {
        bk_list_unlink(&n->link);
        free(n);
    }
    bk_list_for_each_safe(s, &rc->subs, struct bk_rsub, link)
        sub_free(s);
    free(rc);
    b->rc = NULL;
}

bool bk_recon_replaying(const broker_t *b)
{
    return b->rc && b->rc->replaying;
}

static struct bk_rname *name_find(const broker_t *b, const char *name)
{
    struct bk_rname *n;

    bk_list_for_each(n, &b->rc->names, struct bk_rname, link)
        if (strcmp(n->name, name) == 0)
            return n;
    return NULL;
}

int bk_recon_name_add(broker_t *b, const char *name, bool ex,
                      uint32_t flags, int outcome)
{
    struct bk_rname *n = name_find(b, name);
    size_t len = strlen(name);

    if (!n) {
        n = calloc(1, sizeof(*n) + len + 1);
        if (!n)
            return -ENOMEM;
        memcpy(n->name, name, len + 1);
        bk_list_push_tail(&b->rc->names, &n->link);
    }
    n->ex = ex;
    n->flags = flags;
    n->outcome = outcome;
    return 0;
}

void bk_recon_name_remove(broker_t *b, const char *name)
{
    struct bk_rname *n = name_find(b, name);

    if (n) {
        bk_list_unlink(&n->link);
        free(n);
    }
}

static struct bk_rsub *sub_by_uid(const broker_t *b, uint32_t uid)
{
    struct bk_rsub *s;

    bk_list_for_each(s, &b->rc->subs, struct bk_rsub, link)
        if (s->uid == uid)
            return s;
    return NULL;
}

/* An application id for broker id bid: bid itself unless another record
 * holds it already. */
static uint32_t fresh_uid(const broker_t *b, uint32_t bid)
{
    struct bk_rsub *s;
    uint32_t max = bid;

    if (!sub_by_uid(b, bid))
        return bid;
    bk_list_for_each(s, &b->rc->subs, struct bk_rsub, link)
        if (s->uid > max)
            max = s->uid;
    return max + 1;
}

int bk_recon_sub_add(broker_t *b, const char *pattern, const char *group,
                     int policy, uint32_t bid, uint32_t *uid)
{
    size_t len = strlen(pattern);
    struct bk_rsub *s = calloc(1, sizeof(*s) + len + 1);

    if (!s)
        return -ENOMEM;
    if (group && !(s->group = strdup(group))) {
        free(s);
        return -ENOMEM;
    }
    memcpy(s->pattern, pattern, len + 1);
    s->policy = policy;
    s->bid = bid;
    s->uid = fresh_uid(b, bid);
    bk_list_push_tail(&b->rc->subs, &s->link);
    *uid = s->uid;
    return 0;
}

uint32_t bk_recon_sub_user(const broker_t *b, uint32_t bid)
{
    struct bk_rsub *s;

    bk_list_for_each(s, &b->rc->subs, struct bk_rsub, link)
        if (s->bid == bid)
            return s->uid;
    return bid;
}

uint32_t bk_recon_sub_broker(const broker_t *b, uint32_t uid)
{
    struct bk_rsub *s = sub_by_uid(b, uid);

    return s ? s->bid : uid;
}

uint32_t bk_recon_sub_take(broker_t *b, uint32_t uid)
{
    struct bk_rsub *s = sub_by_uid(b, uid);
    uint32_t bid;

    if (!s)
        return uid;
    bid = s->bid;
    sub_free(s);
    return bid;
}

/* ---- reconnecting ------------------------------------------------------ */

/* Append one line of what did not come back. */
static void lost_line(char *buf, size_t *len, const char *what,
                      const char *which, const char *why)
{
    int n;

    if (*len >= BK_RECON_LOST_MAX)
        return;
    n = snprintf(buf + *len, BK_RECON_LOST_MAX - *len, "%s %s: %s\n",
                 what, which, why);
    if (n > 0)
        *len += (size_t)n < BK_RECON_LOST_MAX - *len ?
                (size_t)n : BK_RECON_LOST_MAX - *len - 1;
}

/* Register the names again; the ones not back are forgotten (a name
 * owned before and only queued now stays, but counts as lost).  If the
 * connection fails meanwhile, the rest stays for the next attempt. */
static unsigned replay_names(broker_t *b, char *buf, size_t *len)
{
    struct bk_rname *n;
    unsigned lost = 0;

    bk_list_for_each_safe(n, &b->rc->names, struct bk_rname, link) {
        int r = n->ex ? broker_register_flags(b, n->name, n->flags)
                      : broker_register(b, n->name);

        if (r == 0)
            r = BROKER_NAME_OWNER;
        if (r < 0 && b->io.err)
            break;              /* lost again: kept for the next try */
        if (r < 0) {
            lost_line(buf, len, "name", n->name, r == -EEXIST ?
                      "name already owned by another client" :
                      broker_strerror(r));
            bk_list_unlink(&n->link);
            free(n);
            lost++;
        } else if (r == BROKER_NAME_QUEUED &&
                   n->outcome == BROKER_NAME_OWNER) {
            lost_line(buf, len, "name", n->name,
                      "owned by another client: waiting in line");
            n->outcome = r;
            lost++;
        }
    }
    return lost;
}

/* Subscribe again; the application keeps its ids. */
static unsigned replay_subs(broker_t *b, char *buf, size_t *len)
{
    struct bk_rsub *s;
    unsigned lost = 0;

    bk_list_for_each_safe(s, &b->rc->subs, struct bk_rsub, link) {
        uint32_t bid;
        int r = broker_subscribe(b, s->pattern, s->group,
                                 (broker_sub_policy_t)s->policy, &bid);

        if (r < 0 && b->io.err)
            break;              /* lost again: kept for the next try */
        if (r < 0) {
            lost_line(buf, len, "subscription", s->pattern,
                      broker_strerror(r));
            sub_free(s);
            lost++;
        } else {
            s->bid = bid;
        }
    }
    return lost;
}

/* A new connection swapped into b; the old layers are freed. */
static int swap_in(broker_t *b)
{
    struct broker tmp;
    broker_t *nb;
    int r = bk_handle_connect(b->path, b, &nb);

    if (r < 0)
        return r;
    tmp = *b;
    *b = *nb;
    *nb = tmp;
    b->rc = tmp.rc;
    nb->rc = NULL;
    bk_shmview_rebind(b);
    bk_shmview_rebind(nb);
    bk_handle_free(nb);
    return 0;
}

static int reconnected(broker_t *b, struct bk_msg **out)
{
    char *buf = malloc(BK_RECON_LOST_MAX);
    size_t len = 0;
    unsigned lost;

    if (!buf)
        return -ENOMEM;
    b->rc->replaying = true;
    lost = replay_names(b, buf, &len);
    lost += replay_subs(b, buf, &len);
    b->rc->replaying = false;
    /* the new pool is set up as the old one was; if that no longer fits,
     * buffers come from new memory as they would without it */
    if (b->opt_shm_reserve && !b->io.err)
        (void)bk_shm_reserve(b, b->opt_shm_reserve,
                             (int64_t)(bk_io_now_ms() + BK_DEF_LIB_TIMEOUT_MS));
    if (b->io.err) {            /* lost again before all was back */
        free(buf);
        return -EAGAIN;
    }
    *out = bk_msg_event(BROKER_MSG_RECONNECTED, 0, 0, (int)lost, buf, len);
    free(buf);
    if (!*out)
        return -ENOMEM;
    b->rc->told = false;
    return 0;
}

/* Sleep until `until` (bk_io_now_ms time).  0 or -EINTR. */
static int nap(uint64_t until)
{
    uint64_t now = bk_io_now_ms();

    if (until <= now)
        return 0;
    if (poll(NULL, 0, (int)(until - now)) < 0 && errno == EINTR)
        return -EINTR;
    return 0;
}

int bk_recon_recv(broker_t *b, struct bk_msg **out, int timeout_ms)
{
    struct bk_recon *rc = b->rc;
    uint64_t end = timeout_ms < 0 ? UINT64_MAX :
                   bk_io_now_ms() + (uint64_t)timeout_ms;

    if (!rc->told) {
        *out = bk_msg_event(BROKER_MSG_DISCONNECTED, 0, 0, b->io.err,
                            NULL, 0);
        if (!*out)
            return -ENOMEM;
        rc->told = true;
        rc->delay_ms = BK_RECON_FIRST_MS;
        rc->next_ms = bk_io_now_ms();
        return 0;
    }
    for (;;) {
        int r;

        if (rc->next_ms > end) {
            r = nap(end);
            return r < 0 ? r : -ETIMEDOUT;
        }
        if ((r = nap(rc->next_ms)) < 0)
            return r;
        if (swap_in(b) == 0 && (r = reconnected(b, out)) != -EAGAIN)
            return r;
        rc->next_ms = bk_io_now_ms() + rc->delay_ms;
        rc->delay_ms = rc->delay_ms * 2 > BK_RECON_MAX_MS ?
                       BK_RECON_MAX_MS : rc->delay_ms * 2;
    }
}
