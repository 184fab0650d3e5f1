/*
 * port.c - one connected client: reading and dispatching packets, writing
 * its output queue (outq.c) to the socket, pausing senders of a full
 * receiver, teardown.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include "ctrl.h"
#include "error.h"
#include "frame.h"
#include "log.h"
#include "monitor.h"
#include "port.h"
#include "pubsub.h"
#include "router.h"
#include "server.h"
#include "sockio.h"
#include "summary.h"

/* Packets read from one client per wakeup, so busy clients take turns. */
#define READ_BURST 32

static void on_poll(uv_poll_t *h, int status, int events);

/* ---- poll interest ---------------------------------------------------- */

/* Whether p is not read for now.  A paused client is still watched for
 * its hangup (EPOLLRDHUP): one that left can send nothing more, so what
 * it did send is read and routed all the same, past the full queues it
 * waited on by at most its socket's contents; then its EOF tears it down.
 * Otherwise a sender that dies while its receiver never reads would keep
 * its name, streams and slot for as long as that receiver lives. */
static bool held_back(const bk_port_t *p)
{
    return p->paused && !p->departed;
}

static void update_poll(bk_port_t *p)
{
    int want = 0;

    if (p->state == BK_PORT_CLOSING && p->failed)
        return;
    if (p->state != BK_PORT_CLOSING)
        want |= held_back(p) ? UV_DISCONNECT : UV_READABLE;
    if (p->out.frames)
        want |= UV_WRITABLE;
    if (want == p->events)
        return;
    p->events = want;
    if (want)
        uv_poll_start(&p->poll, want, on_poll);
    else
        uv_poll_stop(&p->poll);
}

/* ---- construction ------------------------------------------------------ */

static void read_comm(bk_port_t *p)
{
    char path[64];
    int fd;
    ssize_t n;

    strcpy(p->comm, "?");
    if (p->pid <= 0)
        return;
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)p->pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    n = read(fd, p->comm, sizeof(p->comm) - 1);
    close(fd);
    if (n <= 0) {
        strcpy(p->comm, "?");
        return;
    }
    p->comm[n] = '\0';
    p->comm[strcspn(p->comm, "\n")] = '\0';
}

/* The kernel refuses a datagram longer than the send buffer less 32
 * bytes, and reports the socket writable only while less than a quarter
 * of the buffer is in flight: room for two packets of max_packet keeps
 * one in flight when poll wakes us.  getsockopt reports the doubled value
 * the kernel keeps. */
int bk_port_size_sndbuf(int fd, uint32_t max_packet, int *got)
{
    int want = (int)(2 * (size_t)max_packet + 4096), cur = 0;
    socklen_t sl = sizeof(cur);

    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl) == 0 &&
        cur >= 2 * want) {
        *got = cur;
        return 0;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
    sl = sizeof(cur);
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl) == 0 &&
        cur < 2 * want)     /* capped by net.core.wmem_max: as root, force */
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof(want));
    sl = sizeof(cur);
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl) < 0)
        return -errno;
    *got = cur;
    return (size_t)cur >= (size_t)max_packet + 32 ? 0 : -ENOBUFS;
}

bk_port_t *bk_port_new(bk_server_t *srv, int fd, uint64_t id)
{
    bk_port_t *p = calloc(1, sizeof(*p));
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (!p) {
        close(fd);
        return NULL;
    }
    p->srv = srv;
    p->fd = fd;
    p->id = id;
    p->state = BK_PORT_HELLO;
    p->pid = -1;
    p->uid = (uid_t)-1;
    p->gid = (gid_t)-1;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        p->pid = cred.pid;
        p->uid = cred.uid;
        p->gid = cred.gid;
    }
    read_comm(p);
    bk_reap_port_new(p);
    {
        int got;                /* checked for max_packet at start */
        (void)bk_port_size_sndbuf(fd, srv->cfg->max_packet, &got);
    }
    p->connected_ms = bk_now_ms();
    bk_outq_init(&p->out);
    bk_list_init(&p->reap_link);
    bk_list_init(&p->all_link);
    bk_list_init(&p->dirty_link);
    bk_list_init(&p->hs_link);
    bk_list_init(&p->drain_link);
    bk_list_init(&p->stash);
    bk_list_init(&p->stash_link);
    bk_list_init(&p->budget_link);
    bk_shm_port_init(&p->shm);
    bk_st_list_init(&p->streams);
    bk_name_list_init(&p->names);
    p->next_psid = 1;
    bk_list_init(&p->subs);
    p->next_sub = 1;
    p->out.on_sent = bk_pub_sent;
    p->out.on_sent_arg = p;
    bk_put64(p->idkey, id);
    p->node.key = p->idkey;
    p->node.keylen = sizeof(p->idkey);
    if (uv_poll_init(srv->loop, &p->poll, fd) < 0) {
        free(p);
        close(fd);
        return NULL;
    }
    p->poll.data = p;
    update_poll(p);
    return p;
}

/* Every stream end of client p is on p->streams (router.c opens them so),
 * so with none there no id can be taken and the lookup is skipped. */
uint32_t bk_port_alloc_sid(bk_port_t *p)
{
    for (;;) {
        uint32_t n = p->next_psid++ & BK_SID_MAX_LOCAL;
        uint32_t sid = BK_SID_PEER_BIT | n;
        /* BK_SID_SUMMARY is reserved for the summary ERROR */
        if (n && sid != BK_SID_SUMMARY && (p->streams.count == 0 ||
                  !bk_st_find(&p->srv->streams, p->id, sid)))
            return sid;
    }
}

/* ---- output ------------------------------------------------------------- */

/* cause's entry among to's waiters, added if new (NULL: out of memory;
 * not pausing or telling is safe, only less strict). */
static bk_waiter_t *waiter_of(bk_port_t *to, const bk_port_t *cause)
{
    for (uint32_t i = 0; i < to->nwaiters; i++)
        if (to->waiters[i].id == cause->id)
            return &to->waiters[i];
    if (to->nwaiters == to->capwaiters) {
        uint32_t cap = to->capwaiters ? to->capwaiters * 2 : 4;
        bk_waiter_t *w = realloc(to->waiters, cap * sizeof(*w));
        if (!w)
            return NULL;
        to->waiters = w;
        to->capwaiters = cap;
    }
    to->waiters[to->nwaiters] = (bk_waiter_t){ .id = cause->id };
    return &to->waiters[to->nwaiters++];
}

static void pause_sender(bk_port_t *to, bk_port_t *cause)
{
    bk_waiter_t *w;

    if (cause->state == BK_PORT_CLOSING || !(w = waiter_of(to, cause)) ||
        w->paused)
        return;
    w->paused = true;
    cause->paused++;
    update_poll(cause);
    bk_debug("client %llu paused: client %llu has %llu bytes queued",
             (unsigned long long)cause->id, (unsigned long long)to->id,
             (unsigned long long)to->out.mem);
}

/* FLOW about receiver `about` to sender w (BUSY with w's stream and the
 * name, or READY). */
static void send_flow(bk_port_t *w, const bk_port_t *about, uint32_t state,
                      uint32_t sid, const char *name, size_t len)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_FLOW, .aux = state,
        .stream = sid, .source = about->id, .dest = w->id,
        .length = (uint32_t)len,
    };

    bk_port_send(w, &h, name ? name : "", NULL, 0, NULL);
}

/* One reason fewer for w to be paused; read again once none is left. */
static void unpause(bk_port_t *w)
{
    if (w->paused == 0)
        return;
    w->paused--;
    if (w->paused == 0 && !bk_list_empty(&w->stash) &&
        !bk_list_linked(&w->stash_link))
        bk_list_push_tail(&w->srv->unstash, &w->stash_link);
    update_poll(w);
}

static void resume_waiters(bk_port_t *p)
{
    uint32_t n = p->nwaiters;

    p->nwaiters = 0;
    for (uint32_t i = 0; i < n; i++) {
        bk_waiter_t e = p->waiters[i];
        bk_port_t *w = bk_server_find(p->srv, e.id);

        if (!w)
            continue;
        if (e.told && w->state != BK_PORT_CLOSING)
            send_flow(w, p, BK_FLOW_READY, 0, NULL, 0);
        if (e.paused)
            unpause(w);
    }
}

static uint64_t half_more(uint64_t max);

uint64_t bk_port_hard_limit(const bk_port_t *to)
{
    return half_more(to->srv->cfg->queue_limit);
}

/* What a sender is told about once per episode: the name a message was
 * addressed by (an odd FNV-1a hash), the receiver by id (0), or a stream
 * (an even hash of its id). */
static uint32_t busy_key(const bk_hdr_t *h, const char *name, size_t len)
{
    uint32_t k = 2166136261u;

    if (len) {
        for (size_t i = 0; i < len; i++)
            k = (k ^ (uint8_t)name[i]) * 16777619u;
        return k | 1;
    }
    return h->flags & BK_F_OPEN ? 0 : (h->stream * 2654435761u) & ~1u;
}

void bk_port_note_busy(bk_port_t *to, bk_port_t *from, const bk_hdr_t *h,
                       const uint8_t *payload)
{
    bool named = (h->flags & (BK_F_OPEN | BK_F_NAME)) ==
                 (BK_F_OPEN | BK_F_NAME);
    const char *name = named ? (const char *)payload : NULL;
    size_t len = named ? h->aux : 0;
    uint32_t key = busy_key(h, name, len);
    bk_waiter_t *w;

    if (!from->flow || from == to || !bk_port_full(to) ||
        from->state == BK_PORT_CLOSING ||
        to->state == BK_PORT_CLOSING || !(w = waiter_of(to, from)) ||
        (w->told && w->name_hash == key))
        return;
    w->told = true;
    w->name_hash = key;
    send_flow(from, to, BK_FLOW_BUSY, h->stream, name, len);
    bk_debug("client %llu told client %llu is busy (%llu bytes queued)",
             (unsigned long long)from->id, (unsigned long long)to->id,
             (unsigned long long)to->out.mem);
}

static void count_out(bk_port_t *p, const bk_outq_tally_t *t)
{
    p->bytes_out += t->bytes;
    p->srv->stats.bytes_out += t->bytes;
    p->msgs_out += t->msgs;
    p->srv->stats.msgs_out += t->msgs;
}

static void mark_dirty(bk_port_t *p)
{
    if (!bk_list_linked(&p->dirty_link))
        bk_list_push_head(&p->srv->dirty, &p->dirty_link);
}

/* 1.5 x max, saturating: where a FLOW sender that did not hold back is
 * paused all the same. */
static uint64_t half_more(uint64_t max)
{
    return max > UINT64_MAX / 3 * 2 ? UINT64_MAX : max + max / 2;
}

/* Whether the queues of to's user take more than max (0: no limit). */
static bool user_over(const bk_port_t *to, uint64_t max)
{
    return max && to->acct && to->acct->queued > max &&
           !bk_user_exempt(to->uid);
}

bool bk_port_full(const bk_port_t *to)
{
    const bk_conf_t *c = to->srv->cfg;

    return to->out.mem > c->queue_limit ||
           user_over(to, c->max_queued_per_uid);
}

/* Whether a FLOW sender is paused for to all the same. */
static bool past_hard(const bk_port_t *to)
{
    return to->out.mem > bk_port_hard_limit(to) ||
           user_over(to, half_more(to->srv->cfg->max_queued_per_uid));
}

/* Whether cause's user's sends keep more than `max` queued. */
static bool by_over(const bk_port_t *cause, uint64_t max)
{
    return max && cause->acct && cause->acct->queued_by > max &&
           !bk_user_exempt(cause->uid);
}

/* Whether all queues take more than `max`. */
static bool all_over(const bk_server_t *srv, uint64_t max)
{
    return max && srv->users.queued > max;
}

/* Pause cause until the budgets that paused it are back under half. */
static void budget_pause_sender(bk_port_t *cause)
{
    if (cause->budget_paused || cause->state == BK_PORT_CLOSING)
        return;
    cause->budget_paused = true;
    cause->paused++;
    bk_list_push_tail(&cause->srv->budget_paused, &cause->budget_link);
    update_poll(cause);
    bk_debug("client %llu paused: its user's queued memory %llu, the "
             "broker's %llu", (unsigned long long)cause->id,
             (unsigned long long)(cause->acct ? cause->acct->queued_by : 0),
             (unsigned long long)cause->srv->users.queued);
}

static void budget_unpause(bk_port_t *p)
{
    if (!p->budget_paused)
        return;
    p->budget_paused = false;
    bk_list_unlink(&p->budget_link);
    unpause(p);
}

void bk_port_resume_budget(bk_server_t *srv)
{
    const bk_conf_t *c = srv->cfg;
    bk_port_t *p;

    if (bk_list_empty(&srv->budget_paused) ||
        all_over(srv, c->max_queued / 2))
        return;
    bk_list_for_each_safe(p, &srv->budget_paused, bk_port_t, budget_link)
        if (!by_over(p, c->max_queued_per_uid / 2))
            budget_unpause(p);
}

/* The budgets of what is queued besides to's own limit, checked after a
 * frame caused by `cause` was queued for `to`: the queues of to's user
 * (max-queued-per-uid: to counts as full, see bk_port_full), what cause's
 * user's sends keep queued (max-queued-per-uid again) and the whole
 * broker (max-queued).  Past the last two, cause is paused, FLOW or not,
 * until both are back under half (bk_port_resume_budget): they bound
 * memory, not one receiver.  Each is logged once per episode and
 * counted as one quota hit then. */
static void budget_check(bk_port_t *to, bk_port_t *cause)
{
    const bk_conf_t *c = to->srv->cfg;
    bool pause = false;

    if (to->acct && c->max_queued_per_uid) {
        if (!user_over(to, c->max_queued_per_uid))
            bk_port_quota_ok(to, BK_QUOTA_QUEUED);
        else if (!bk_user_in_episode(to->acct, BK_QUOTA_QUEUED))
            bk_port_quota(to, BK_QUOTA_QUEUED, "max-queued-per-uid: the "
                          "clients of uid %d have %llu bytes queued; "
                          "their senders are held back", (int)to->uid,
                          (unsigned long long)to->acct->queued);
    }
    if (!cause || !cause->acct || cause->budget_paused)
        return;
    if (!by_over(cause, c->max_queued_per_uid)) {
        bk_port_quota_ok(cause, BK_QUOTA_QUEUED_BY);
    } else {
        pause = true;
        if (!bk_user_in_episode(cause->acct, BK_QUOTA_QUEUED_BY))
            bk_port_quota(cause, BK_QUOTA_QUEUED_BY, "max-queued-per-uid: "
                          "uid %d's messages take %llu bytes in queues; "
                          "its clients are paused", (int)cause->uid,
                          (unsigned long long)cause->acct->queued_by);
    }
    if (!all_over(to->srv, c->max_queued)) {
        bk_port_quota_ok(cause, BK_QUOTA_QUEUED_ALL);
    } else {
        pause = true;
        if (!bk_user_in_episode(cause->acct, BK_QUOTA_QUEUED_ALL))
            bk_port_quota(cause, BK_QUOTA_QUEUED_ALL, "max-queued: the "
                          "broker's queues take %llu bytes; senders are "
                          "paused", (unsigned long long)to->srv->users.queued);
    }
    if (pause)
        budget_pause_sender(cause);
}

/* A frame h was queued: pause `cause` if this fills the queue.  A sender
 * that takes FLOW frames is told instead (the router calls
 * bk_port_note_busy) and paused only past the hard limit, when it has not
 * held back in time -- or when the full queue is its own (replies and
 * errors for a client that does not read: nothing else would bound
 * them).  The broker's budgets may pause cause too (budget_check). */
static void queued(bk_port_t *to, bk_port_t *cause, const bk_hdr_t *h)
{
    to->srv->unflushed += BK_HDR_SIZE + (uint64_t)h->length;
    if (to->out.mem > to->srv->cfg->queue_limit)
        to->overfull = true;
    budget_check(to, cause);
    if (cause && bk_port_full(to) &&
        (!cause->flow || cause == to || past_hard(to)))
        pause_sender(to, cause);
    if (!(to->events & UV_WRITABLE))
        mark_dirty(to);         /* else the socket is full: poll flushes */
}

/* ---- fds in flight (user.h) ---------------------------------------------
 *
 * A queued frame's fds are open in the broker until the frame is written:
 * they are counted towards the receiver (its queue's nfds), the user whose
 * send caused them (or the broker, for its own frames) and the whole
 * broker, and a frame that would pass a budget is refused instead of
 * queued.  The whole-broker budget keeps fd_reserve fds free below
 * RLIMIT_NOFILE besides what the connections and segments take.  A
 * refusal is counted and logged for the client that caused it (none for
 * the broker's own frames). */

static bk_ocharge_t *fd_account(bk_port_t *to, bk_port_t *cause)
{
    return cause && cause->acct ? &cause->acct->charge
                                : &to->srv->users.broker;
}

/* The global budget for n more fds: 0 or -ENOBUFS. */
static int fd_global(const bk_server_t *s, unsigned n)
{
    const bk_users_t *u = &s->users;

    if (!bk_user_fits(u->fds, n, bk_conf_fds_in_flight(s->cfg, u->nofile)) ||
        !bk_users_fd_room(u, (uint64_t)s->nports + s->stats.shm_segments,
                          s->cfg->fd_reserve, n))
        return -ENOBUFS;
    return 0;
}

/* Whether n more fds may be queued towards `to` because of `cause`:
 * 0, -ENOBUFS (to's budget, or the broker's) or -EDQUOT (cause's user's
 * quota); a refusal is counted and logged for cause. */
static int fd_budget(bk_port_t *to, bk_port_t *cause, unsigned n)
{
    const bk_conf_t *c = to->srv->cfg;

    if (!bk_user_fits(to->out.nfds, n, c->max_fds_per_client)) {
        if (cause)
            bk_port_quota(cause, BK_QUOTA_RECV_FDS, "max-fds-per-client: "
                          "client %llu (%s) has %llu fds queued; messages "
                          "with fds to it are refused (ENOBUFS)",
                          (unsigned long long)to->id, to->comm,
                          (unsigned long long)to->out.nfds);
        return -ENOBUFS;
    }
    if (cause && cause->acct &&
        !bk_port_uid_fits(cause, BK_QUOTA_FDS, cause->acct->fds, n,
                          c->max_fds_per_uid, "max-fds-per-uid"))
        return -EDQUOT;
    if (fd_global(to->srv, n) < 0) {
        if (cause)
            bk_port_quota(cause, BK_QUOTA_GLOBAL, "the broker's budget "
                          "of fds in flight is spent (%llu queued, fd "
                          "limit %llu); messages with fds are refused "
                          "(ENOBUFS)",
                          (unsigned long long)to->srv->users.fds,
                          (unsigned long long)to->srv->users.nofile);
        return -ENOBUFS;
    }
    if (cause) {
        bk_port_quota_ok(cause, BK_QUOTA_RECV_FDS);
        bk_port_quota_ok(cause, BK_QUOTA_GLOBAL);
    }
    return 0;
}

/* Before a frame with fds is queued: its budgets (the broker's SEGMENT
 * frames are counted, not refused: segments have budgets of their own,
 * and a receiver must get a segment before descriptors into it).
 * Returns 0 or the refusal, the fds closed then. */
static int fds_admit(bk_port_t *to, const bk_hdr_t *h, int *fds,
                     unsigned nfds, bk_port_t *cause)
{
    int r;

    if (!nfds || h->type == BK_T_SEGMENT)
        return 0;
    r = fd_budget(to, cause, nfds);
    if (r < 0)
        bk_close_fds(fds, nfds);
    return r;
}

/* A frame was queued: charge its fds, and its memory to the user whose
 * send caused it. */
static void frame_charge(bk_port_t *to, bk_oframe_t *f, bk_port_t *cause)
{
    bool user = cause && cause->acct;

    if (!f->nfds && !user)
        return;
    f->charge = fd_account(to, cause);
    bk_user_charge(&to->srv->users, f->charge, f->nfds, user ? f->mem : 0);
}

/* Queue a copy of the frame; pause `cause` if this fills the queue. */
static int enqueue(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                   int *fds, unsigned nfds, bk_port_t *cause,
                   bk_oframe_t **out)
{
    int r = fds_admit(to, h, fds, nfds, cause);

    if (r < 0 || (r = bk_outq_push(&to->out, h, payload, fds, nfds, out)) < 0)
        return r;
    frame_charge(to, *out, cause);
    queued(to, cause, h);
    return 0;
}

/* Write a frame at once from the caller's buffer.  Returns 0 (sent; fds
 * closed), -EAGAIN (socket full; nothing taken) or another negative errno
 * (the port failed; fds closed). */
static int write_now(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                     int *fds, unsigned nfds)
{
    uint8_t hdr[BK_HDR_SIZE];
    struct iovec iov[2];
    bk_outq_tally_t sent = { 0, 0 };
    int r;

    bk_hdr_encode(h, hdr);
    iov[0] = (struct iovec){ hdr, BK_HDR_SIZE };
    iov[1] = (struct iovec){ (void *)payload, h->length };
    r = bk_sock_send(to->fd, iov, h->length ? 2 : 1, fds, nfds);
    if (r == -EAGAIN)
        return r;
    bk_close_fds(fds, nfds);
    if (r < 0) {
        bk_port_fail(to, r);
        return r;
    }
    bk_outq_tally(&sent, h->type, h->flags, h->length);
    count_out(to, &sent);
    return 0;
}

/* ---- the frame trace (--log-level debug) ------------------------------ */

/* "5->'echo'", "5->topic 'a.b'", "5->7": where a frame goes. */
static void trace_route(uint64_t src, const bk_hdr_t *h,
                        const uint8_t *payload, char *buf, size_t len)
{
    int n = (int)(h->aux < 64 ? h->aux : 64);

    if (payload && h->type == BK_T_DATA && (h->flags & BK_F_NAME))
        snprintf(buf, len, "%llu->'%.*s'", (unsigned long long)src, n,
                 (const char *)payload);
    else if (payload && h->type == BK_T_DATA && (h->flags & BK_F_TOPIC))
        snprintf(buf, len, "%llu->topic '%.*s'", (unsigned long long)src, n,
                 (const char *)payload);
    else
        snprintf(buf, len, "%llu->%llu", (unsigned long long)src,
                 (unsigned long long)h->dest);
}

/* One line per frame: direction and client, type, flags, route, stream,
 * size (without a name or topic prefix), fds; CTRL frames add the op. */
static void trace_frame(const char *dir, const bk_port_t *p,
                        const bk_hdr_t *h, const uint8_t *payload)
{
    char flags[48], route[160], op[24] = "";
    bool prefixed = h->type == BK_T_DATA &&
                    (h->flags & (BK_F_NAME | BK_F_TOPIC));
    uint32_t size = prefixed && h->aux <= h->length ? h->length - h->aux :
                    h->length;

    bk_flags_str(h->flags, flags, sizeof(flags));
    trace_route(dir[0] == 'f' ? p->id : h->source, h, payload, route,
                sizeof(route));
    if (h->type == BK_T_CTRL || h->type == BK_T_CTRL_REPLY)
        snprintf(op, sizeof(op), " %s=%u", h->type == BK_T_CTRL ? "op" :
                 "status", h->aux);
    bk_log(BK_LOG_DEBUG, "frame %s client %llu (%s): %s %s %s stream=0x%x "
           "size=%u fds=%u%s", dir, (unsigned long long)p->id, p->comm,
           bk_type_name(h->type), flags, route, h->stream, size, h->nfds, op);
}

static int send_frame(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                      int *fds, unsigned nfds, bk_port_t *cause,
                      bk_oframe_t **queued)
{
    int r;

    if (bk_log_enabled(BK_LOG_DEBUG))
        trace_frame("to", to, h, payload);

    *queued = NULL;
    if (to->failed || to->fd < 0 || to->hangup) {
        bk_close_fds(fds, nfds);
        return -ECONNRESET;
    }
    if (bk_outq_bypass(&to->out, h->length, to->srv->cfg->max_packet)) {
        r = write_now(to, h, payload, fds, nfds);
        if (r != -EAGAIN)
            return r;
    }
    return enqueue(to, h, payload, fds, nfds, cause, queued);
}

int bk_port_send(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                 int *fds, unsigned nfds, bk_port_t *cause)
{
    bk_oframe_t *f;

    return send_frame(to, h, payload, fds, nfds, cause, &f);
}

int bk_port_send_oneway(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                        int *fds, unsigned nfds, bk_port_t *cause,
                        uint32_t src_sid)
{
    bk_oframe_t *f;
    int r = send_frame(to, h, payload, fds, nfds, cause, &f);

    if (f) {
        f->oneway_first = true;
        f->src = h->source;
        f->src_sid = src_sid;
    }
    return r;
}

int bk_port_send_pub(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                     bk_opayload_t **shared, int *fds, unsigned nfds,
                     bk_port_t *cause, void *tag)
{
    bk_port_t *payer;
    bk_oframe_t *f;
    int r;

    if (bk_log_enabled(BK_LOG_DEBUG))
        trace_frame("to", to, h, payload);
    if (to->failed || to->fd < 0 || to->hangup) {
        bk_close_fds(fds, nfds);
        return -ECONNRESET;
    }
    if (bk_outq_bypass(&to->out, h->length, to->srv->cfg->max_packet)) {
        r = write_now(to, h, payload, fds, nfds);
        if (r != -EAGAIN)
            return r;
    }
    /* a subscription that does not block has no cause for flow control,
     * but the publisher still pays for the fds */
    payer = cause || !nfds || !h->source ? cause :
            bk_server_find(to->srv, h->source);
    if ((r = fds_admit(to, h, fds, nfds, payer)) < 0)
        return r;
    if (!*shared && !(*shared = bk_opayload_new(payload, h->length))) {
        bk_close_fds(fds, nfds);
        return -ENOMEM;
    }
    r = bk_outq_push_shared(&to->out, h, *shared, fds, nfds, &f);
    if (r < 0)
        return r;
    frame_charge(to, f, payer);
    f->tag = tag;
    f->tag_first = !(h->flags & BK_F_CONT);
    queued(to, cause, h);
    return BK_PORT_QUEUED;
}

int bk_port_send_body(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                      bk_obody_t *body, bk_port_t *cause, bool pub,
                      void *tag, uint32_t oneway_sid)
{
    bk_oframe_t *f;
    int r;

    if (to->failed || to->fd < 0 || to->hangup) {
        body->done(body);
        return -ECONNRESET;
    }
    r = bk_outq_push_body(&to->out, h, payload, body, pub, &f);
    if (r < 0)
        return r;
    frame_charge(to, f, cause);
    if (pub) {
        f->tag = tag;
        f->tag_first = true;
    } else if (oneway_sid) {
        f->oneway_first = true;
        f->src = h->source;
        f->src_sid = oneway_sid;
    }
    queued(to, cause, h);
    return BK_PORT_QUEUED;
}

int bk_port_requeue(bk_port_t *to, bk_oframe_t *f, const bk_hdr_t *h)
{
    int r;

    if (bk_log_enabled(BK_LOG_DEBUG))
        trace_frame("to", to, h, NULL);
    if (to->failed || to->fd < 0 || to->hangup) {
        bk_outq_frame_free(f);
        return -ECONNRESET;
    }
    r = bk_outq_push_frame(&to->out, f, h);
    if (r == 0)
        queued(to, NULL, h);
    return r;
}

void bk_port_error(bk_port_t *to, uint32_t stream, int err,
                   const char *text, bk_port_t *cause)
{
    size_t len = text ? strlen(text) : 0;
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_ERROR,
        .stream = stream, .aux = bk_err_to_wire(err), .dest = to->id,
        .length = (uint32_t)(len > BK_MAX_TEXT ? BK_MAX_TEXT : len),
    };

    to->errors++;
    if (stream)                 /* a stream's ERROR: monitors see it */
        bk_mon_tap(NULL, to, 0, &h, text ? text : "");
    bk_port_send(to, &h, text ? text : "", NULL, 0, cause);
    if (cause == to)
        bk_port_count_refusal(to, err);
}

void bk_port_count_refusal(bk_port_t *p, int err)
{
    uint32_t max = p->srv->cfg->max_refusals;
    uint64_t now;

    if (err != -EDQUOT && err != -ENOBUFS && err != -EACCES)
        return;
    p->refusals++;
    if (!max || p->hangup || p->failed || p->fd < 0)
        return;
    now = bk_now_ms();
    if (now - p->refusals_since_ms >= 60000) {
        p->refusals_since_ms = now;
        p->refusals_minute = 0;
    }
    if (++p->refusals_minute <= max)
        return;
    bk_warn("client %llu (pid %d, uid %d, %s): refused more than %u times "
            "within a minute (max-refusals); disconnecting",
            (unsigned long long)p->id, (int)p->pid, (int)p->uid, p->comm,
            max);
    bk_port_hangup(p, -EDQUOT, "too many refused requests within a minute "
                   "(max-refusals): disconnected");
}

/* A packet of many small frames as one segment.  The kernel copies an
 * iovec segment by segment, and for 32-byte headers beside payloads of a
 * few hundred bytes that costs several times one memcpy here into the
 * loop's staging buffer (which stays in the cache); fan-out of 1 KiB
 * publications spent a quarter of brokerd's time in it.  Large frames are
 * written as they are: a second copy would cost more than it saves.
 * Returns the iovec to write and sets *niov. */
#define BK_COALESCE_SEG_MAX 1024    /* average bytes per iovec segment */

static const struct iovec *coalesce(bk_port_t *p, const bk_outq_pkt_t *pkt,
                                    struct iovec *one, int *niov)
{
    size_t total = 0, off = 0;
    uint8_t *w;

    *niov = (int)pkt->niov;
    if (pkt->niov <= 2)
        return pkt->iov;
    for (unsigned i = 0; i < pkt->niov; i++)
        total += pkt->iov[i].iov_len;
    if (total > (size_t)BK_COALESCE_SEG_MAX * pkt->niov ||
        !(w = bk_server_wbuf(p->srv)) || total > p->srv->wbuf_len)
        return pkt->iov;
    for (unsigned i = 0; i < pkt->niov; i++) {
        memcpy(w + off, pkt->iov[i].iov_base, pkt->iov[i].iov_len);
        off += pkt->iov[i].iov_len;
    }
    *one = (struct iovec){ w, off };
    *niov = 1;
    return one;
}

/* Write queued packets until the socket is full or the queue is empty. */
static int write_queue(bk_port_t *p)
{
    bk_outq_pkt_t pkt;

    while (bk_outq_gather(&p->out, p->srv->cfg->max_packet, &pkt)) {
        bk_outq_tally_t sent = { 0, 0 };
        struct iovec one;
        int niov;
        const struct iovec *iov = coalesce(p, &pkt, &one, &niov);
        int r = bk_sock_send(p->fd, iov, niov, pkt.fds, pkt.nfds);

        if (r == -EAGAIN)
            break;
        if (r < 0) {
            bk_port_fail(p, r);
            return r;
        }
        bk_outq_consume(&p->out, &pkt, &sent);
        count_out(p, &sent);
        p->writes++;
    }
    return 0;
}

/* ---- notices ---------------------------------------------------------------
 *
 * The broker's own frames about a client's messages go to that client
 * whether it reads or not.  Most are bounded by what causes them: a
 * refusal or a CTRL_REPLY is queued with the client as its cause, so the
 * client is not read while its own queue is past queue_limit (queued());
 * a stream's ERROR when its peer leaves comes once per stream the client
 * holds (max-streams); GAP once per subscription; MONITOR records are
 * dropped and counted past the limit (monitor.c); FLOW BUSY is bounded by
 * the messages the busy receiver's queue takes before its hard limit.
 * The ERROR for a one-way message its receiver never read is not: one
 * receiver that leaves can turn its whole queue into ERRORs towards a
 * sender that does not read.  Those are queued one by one while the
 * sender's queue is within queue_limit; past it (and until the summary is
 * out) they are only counted, and once the queue has drained to half the
 * limit the sender gets one summary ERROR ECONNRESET on stream
 * BK_SID_SUMMARY, from the receiver's id if they all came from one (else
 * 0), whose text starts with the count (summary.h).  So such notices
 * take a sender's queue past queue_limit by one frame at most, and the
 * individual ERRORs plus the summaries' counts are every message lost. */

static void fold(bk_port_fold_t *f, uint64_t source)
{
    if (!f->count)
        f->source = source;
    else if (f->source != source)
        f->source = 0;
    if (f->count < UINT64_MAX)
        f->count++;
}

/* Send the summary of p's folded losses, if any and it is time. */
static void sum_lost(bk_port_t *p)
{
    char text[128];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_ERROR,
        .stream = BK_SID_SUMMARY, .aux = bk_err_to_wire(-ECONNRESET),
        .source = p->lost.source, .dest = p->id,
    };

    if (!p->lost.count || p->out.mem > p->srv->cfg->queue_limit / 2 ||
        p->state == BK_PORT_CLOSING)
        return;
    h.length = (uint32_t)bk_sum_format(text, sizeof(text), p->lost.count,
                                       BK_SUM_LOST);
    bk_mon_tap(NULL, p, 0, &h, text);
    if (bk_port_send(p, &h, text, NULL, 0, NULL) != -ENOMEM)
        p->lost.count = 0;      /* else the next flush tries again */
}

static void flush(bk_port_t *p)
{
    uint64_t limit = p->srv->cfg->queue_limit;

    if (write_queue(p) < 0)
        return;
    if (p->overfull && !p->out.frames) {
        p->overfull = false;
        bk_server_trim_soon(p->srv);    /* the memory rule, server.h */
    }
    /* folded notices, and drops (pubsub.h), reported once the queue has
     * room again */
    if (p->lost.count) {
        sum_lost(p);
        if (write_queue(p) < 0)
            return;
    }
    if (p->gaps_pending && p->out.mem <= limit / 2 &&
        p->state != BK_PORT_CLOSING) {
        bk_pub_flush_gaps(p);
        if (write_queue(p) < 0)
            return;
    }
    if (p->nwaiters && p->out.mem <= limit / 2)
        resume_waiters(p);
    if (p->shm.release_wait && p->out.bytes <= limit / 2)
        bk_shm_owner_drained(p);        /* release jobs go on (shm.h) */
    if (p->hangup && !p->out.frames) {
        bk_port_fail(p, p->fail_err);
        return;
    }
    update_poll(p);
    if (!p->out.frames && p->srv->stopping && !p->failed)
        bk_server_port_drained(p->srv);
}

/* Set the socket's send buffer to `val` (the kernel keeps twice that):
 * forced past wmem_max where the broker may. */
static void set_sndbuf(int fd, int val)
{
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &val, sizeof(val)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &val, sizeof(val));
}

int bk_port_push(bk_port_t *p)
{
    int cur = 0;
    socklen_t sl = sizeof(cur);
    uint64_t need;

    if (p->fd < 0 || p->failed)
        return -EBADF;
    if (getsockopt(p->fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl) < 0)
        return -errno;
    /* what is in flight already (at most cur), the queue, and the
     * kernel's own overhead per packet, generously; halved, as the
     * kernel doubles it */
    need = ((uint64_t)cur + 2 * p->out.bytes +
            (uint64_t)p->out.frames * 2048) / 2 + 65536;
    set_sndbuf(p->fd, need > INT_MAX / 2 ? INT_MAX / 2 : (int)need);
    flush(p);
    if (p->failed || p->fd < 0)
        return -EPIPE;
    /* what is written stays in flight; new frames wait as before */
    set_sndbuf(p->fd, cur / 2);
    return p->out.nfds ? -ENOBUFS : 0;
}

void bk_port_flush_dirty(bk_server_t *srv)
{
    bk_list_t *l;

    srv->unflushed = 0;
    while ((l = bk_list_pop_head(&srv->dirty))) {
        bk_port_t *p = bk_container_of(l, bk_port_t, dirty_link);

        if (!p->failed && p->fd >= 0)
            flush(p);
    }
}

/* ---- input ----------------------------------------------------------------- */

void bk_port_protocol_error(bk_port_t *p, int err, uint32_t stream,
                            const char *what)
{
    char text[160];

    p->srv->stats.protocol_errors++;
    snprintf(text, sizeof(text), "protocol error: %s", what);
    bk_warn("client %llu (pid %d, %s): %s; disconnecting",
            (unsigned long long)p->id, (int)p->pid, p->comm, text);
    bk_port_error(p, stream, err, text, NULL);
    bk_port_fail(p, err);
}

void bk_port_refused(bk_port_t *p, enum bk_port_refusal kind,
                     const char *fmt, ...)
{
    char text[256];
    va_list ap;

    if (p->refusals_logged & (1u << kind) || !bk_log_enabled(BK_LOG_WARN))
        return;
    p->refusals_logged |= (uint16_t)(1u << kind);
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    bk_warn("client %llu (pid %d, uid %d, %s): %s (logged once per client)",
            (unsigned long long)p->id, (int)p->pid, (int)p->uid, p->comm,
            text);
}

void bk_port_quota(bk_port_t *p, int kind, const char *fmt, ...)
{
    char text[256];
    va_list ap;

    if (!p->acct || !bk_user_hit(p->acct, (enum bk_user_quota)kind) ||
        !bk_log_enabled(BK_LOG_WARN))
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    bk_warn("client %llu (pid %d, uid %d, %s): %s (logged once until the "
            "user is under the limit again)", (unsigned long long)p->id,
            (int)p->pid, (int)p->uid, p->comm, text);
}

void bk_port_quota_ok(bk_port_t *p, int kind)
{
    if (p->acct)
        bk_user_episode_over(p->acct, (enum bk_user_quota)kind);
}

bool bk_port_uid_fits(bk_port_t *p, int kind, uint64_t have, uint64_t want,
                      uint64_t max, const char *what)
{
    if (!p->acct || bk_user_exempt(p->uid) ||
        bk_user_fits(have, want, max)) {
        bk_port_quota_ok(p, kind);
        return true;
    }
    bk_port_quota(p, kind, "%s reached: uid %d has %llu of %llu; refused "
                  "(EDQUOT)", what, (int)p->uid, (unsigned long long)have,
                  (unsigned long long)max);
    return false;
}

static void welcome(bk_port_t *p)
{
    const bk_conf_t *c = p->srv->cfg;
    bk_welcome_t w = {
        .client_id = p->id, .max_packet = c->max_packet,
        .max_fds = c->max_fds, .max_msg = c->max_msg,
        .max_name = c->max_name, .max_streams = c->max_streams,
        .queue_limit = c->queue_limit, .max_segments = c->max_segments,
        .max_shm = c->max_shm,
    };
    uint8_t buf[BK_WELCOME_SIZE];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_WELCOME,
        .length = BK_WELCOME_SIZE, .dest = p->id,
    };

    bk_welcome_encode(&w, buf);
    if (bk_ht_insert(&p->srv->clients, &p->node) < 0) {
        bk_port_fail(p, -ENOMEM);
        return;
    }
    /* Ids are unique, so the index cannot refuse the key. */
    p->tnode.key = p->id;
    bk_tree_insert(&p->srv->client_index, &p->tnode);
    p->in_table = true;
    p->srv->nclients++;
    p->state = BK_PORT_READY;
    bk_list_unlink(&p->hs_link);       /* the handshake timeout is off */
    bk_port_send(p, &h, buf, NULL, 0, NULL);
    bk_debug("client %llu connected (pid %d, uid %d, %s)",
             (unsigned long long)p->id, (int)p->pid, (int)p->uid, p->comm);
    bk_pub_client_event(p, "connect");
}

/* --max-clients-per-uid: whether this connection is one too many for its
 * user.  Every connection counts from accept (user.h), in the handshake
 * or not, this one included. */
static bool uid_full(const bk_port_t *p)
{
    uint32_t max = p->srv->cfg->max_clients_per_uid;

    if (!max || p->uid == 0 || p->uid == geteuid() || !p->user)
        return false;
    return p->user->nports > max;
}

/* max-clients-per-uid: one line per episode of a user's refusals. */
static void uid_refused(bk_port_t *p)
{
    bk_server_t *s = p->srv;

    if (s->uid_full_logged && s->uid_full == p->uid)
        return;
    s->uid_full_logged = true;
    s->uid_full = p->uid;
    bk_warn("client %llu (pid %d, uid %d, %s): refused, uid %d has %u "
            "clients already; further refusals are not logged until one "
            "of its clients is let in", (unsigned long long)p->id,
            (int)p->pid, (int)p->uid, p->comm, (int)p->uid,
            s->cfg->max_clients_per_uid);
}

/* The handshake is refused (err: a negative errno): say why and hang up. */
static void refuse(bk_port_t *p, int err, const char *text)
{
    bk_port_error(p, 0, err, text, NULL);
    bk_port_fail(p, err);
}

void bk_port_admit(bk_port_t *p)
{
    p->acct = p->user;
    bk_user_hold(p->acct);
    bk_outq_set_acct(&p->out, &p->acct->queued, &p->srv->users.queued);
    p->streams.shared = &p->acct->streams;
    p->names.shared = &p->acct->names;
    if (uid_full(p)) {
        uid_refused(p);
        refuse(p, -ENOSR, "too many clients for this user");
    }
}

void bk_port_handshake_expired(bk_port_t *p)
{
    char text[80];

    snprintf(text, sizeof(text), "no HELLO within %u ms",
             p->srv->cfg->handshake_timeout_ms);
    bk_debug("client %llu (pid %d, uid %d, %s): %s; closing",
             (unsigned long long)p->id, (int)p->pid, (int)p->uid, p->comm,
             text);
    refuse(p, -ETIMEDOUT, text);
}

static void hello(bk_port_t *p, const bk_hdr_t *h, const uint8_t *payload)
{
    uint32_t version = bk_get32(payload);
    bk_policy_peer_t who = { .uid = p->uid, .gid = p->gid };

    if (version != BK_PROTO_VERSION) {
        char text[96];
        snprintf(text, sizeof(text),
                 "protocol version %u not supported (broker speaks %u)",
                 version, BK_PROTO_VERSION);
        refuse(p, -EPROTONOSUPPORT, text);
        return;
    }
    p->shm.maps = h->aux & BK_HELLO_SHM;
    p->flow = h->aux & BK_HELLO_FLOW;
    if (!bk_policy_may_connect(&p->srv->cfg->policy, &who)) {
        bk_warn("client %llu (pid %d, uid %d, %s): refused by allow-connect",
                (unsigned long long)p->id, (int)p->pid, (int)p->uid, p->comm);
        refuse(p, -EACCES, "not allowed to connect");
        return;
    }
    if (uid_full(p)) {
        uid_refused(p);
        refuse(p, -ENOSR, "too many clients for this user");
        return;
    }
    if (p->srv->uid_full_logged && p->srv->uid_full == p->uid)
        p->srv->uid_full_logged = false;    /* the episode is over */
    p->desc_len = (uint16_t)(h->length - 4);  /* at most 256: frame.c */
    memcpy(p->desc, payload + 4, p->desc_len);
    welcome(p);
}

static void dispatch(bk_port_t *p, const bk_hdr_t *h, const uint8_t *payload,
                     int *fds)
{
    if (bk_log_enabled(BK_LOG_DEBUG))
        trace_frame("from", p, h, payload);
    if (p->state == BK_PORT_HELLO) {
        if (h->type != BK_T_HELLO) {
            bk_close_fds(fds, h->nfds);
            bk_port_protocol_error(p, -EPROTO, 0, "the first frame must be HELLO");
            return;
        }
        hello(p, h, payload);
        return;
    }
    p->msgs_in += h->type == BK_T_DATA && !(h->flags & BK_F_MORE);
    p->bytes_in += h->type == BK_T_DATA ? h->length : 0;
    switch (h->type) {
    case BK_T_DATA:
    case BK_T_CLOSE:
        bk_router_frame(p, h, payload, fds, h->nfds);
        return;
    case BK_T_CTRL:
        bk_ctrl_handle(p, h, payload, fds);
        return;
    case BK_T_RELEASE: {
        const char *why = NULL;
        if (bk_shm_release(p, payload, h->length, &why) < 0)
            bk_port_protocol_error(p, -EPROTO, 0, why);
        return;
    }
    case BK_T_SEG_DROP: {
        const char *why = NULL;
        if (bk_shm_drop(p, payload, &why) < 0)
            bk_port_protocol_error(p, -EPROTO, 0, why);
        return;
    }
    default:
        bk_port_protocol_error(p, -EPROTO, 0, "HELLO after the handshake");
        return;
    }
}

static const char *check_text(int err)
{
    switch (err) {
    case -EPROTONOSUPPORT: return "unsupported protocol version";
    case -EMSGSIZE: return "frame larger than the packet limit";
    case -EINVAL: return "invalid destination name";
    default: return "malformed frame header or flag combination";
    }
}

/* An invalid topic is the publication's error, not the connection's: the
 * router answers EINVAL on its stream.  frame.c stops at the topic, so the
 * checks that come after it there are made here. */
static bool only_topic_invalid(const bk_hdr_t *h)
{
    return h->type == BK_T_DATA && (h->flags & BK_F_TOPIC) &&
           h->stream <= BK_SID_MAX_LOCAL &&
           (!(h->flags & BK_F_SHM) || h->length - h->aux == BK_SHM_DESC_SIZE);
}

/* A frame whose fds the broker could not take (it was out of file
 * descriptors when the packet came): refused with ENOBUFS, as a message
 * over an fd budget would be; the connection stays. */
static void refuse_lost_fds(bk_port_t *p, const bk_hdr_t *h,
                            const uint8_t *payload)
{
    static const char text[] = "the broker is out of file descriptors: "
                               "the message's fds were lost";

    bk_port_quota(p, BK_QUOTA_GLOBAL, "out of file descriptors receiving "
                  "a packet's fds; its messages with fds are refused "
                  "(ENOBUFS)");
    if (h->type == BK_T_DATA)
        bk_router_refuse(p, h, payload, -ENOBUFS, text);
    else if (h->type == BK_T_CTRL)
        bk_ctrl_refuse(p, h, -ENOBUFS);
}

/* Validate the whole packet before acting on any of it, so a bad packet
 * has no partial effect and the fds add up.  fds_lost: the broker ran
 * out of fds taking the packet's (none are passed in then): the frames
 * that carried some are refused, the others go on. */
static void process_packet(bk_port_t *p, const uint8_t *buf, size_t n,
                           int *fds, unsigned nfds, bool fds_lost)
{
    const bk_conf_t *c = p->srv->cfg;
    bk_limits_t lim = { c->max_packet, c->max_fds, c->max_name };
    const uint8_t *payload;
    size_t off = 0;
    unsigned want = 0, used = 0;
    int none[1] = { -1 };
    bk_hdr_t h;
    int r;

    if (fds_lost) {             /* what did arrive is of no use */
        if (fds)
            bk_close_fds(fds, nfds);
        fds = none;
        nfds = 0;
    }

    while ((r = bk_pkt_next(buf, n, &off, &h, &payload)) == 1) {
        int e = bk_frame_check_from_client(&h, payload, &lim);
        if (e == -EINVAL && (h.flags & BK_F_TOPIC))
            e = only_topic_invalid(&h) ? 0 : -EPROTO;
        if (e < 0) {
            bk_close_fds(fds, nfds);
            bk_port_protocol_error(p, e, 0, check_text(e));
            return;
        }
        want += h.nfds;
    }
    if (r < 0 || (want != nfds && !fds_lost)) {
        bk_close_fds(fds, nfds);
        bk_port_protocol_error(p, -EPROTO, 0, r < 0 ? "truncated frame in packet"
                       : "fd count does not match the frames' nfds");
        return;
    }
    off = 0;
    while (bk_pkt_next(buf, n, &off, &h, &payload) == 1) {
        if (p->state == BK_PORT_CLOSING || p->failed) {
            bk_close_fds(fds + used, nfds - used);
            return;
        }
        if (fds_lost && h.nfds) {
            refuse_lost_fds(p, &h, payload);
            continue;
        }
        dispatch(p, &h, payload, fds + used);
        used += h.nfds;
    }
}

/* One recvmmsg call's worth of packets: each lands in its own slot of the
 * server's receive buffer, with its own control data. */
typedef union ctl_buf {
    char buf[CMSG_SPACE(BK_MAX_FDS_HARD * sizeof(int))];
    struct cmsghdr align;
} ctl_buf_t;

typedef struct rx_batch {
    struct mmsghdr msg[BK_RECV_BATCH];
    struct iovec iov[BK_RECV_BATCH];
    ctl_buf_t ctl[BK_RECV_BATCH];
    bool short_of_fds;          /* truncated control data is the broker's
                                 * own fault (out of fds) */
} rx_batch_t;

/* Whether the broker itself is out of file descriptors now (EMFILE or
 * ENFILE for one more): then control data the kernel truncated lost fds
 * the broker could not take, and the client is not to blame.  Control
 * data is sized for SCM_MAX_FD fds, the most a packet can carry, so a
 * client cannot truncate it otherwise but with other control messages. */
static bool out_of_fds(int fd)
{
    int probe = fcntl(fd, F_DUPFD_CLOEXEC, 0);

    if (probe >= 0) {
        close(probe);
        return false;
    }
    return errno == EMFILE || errno == ENFILE;
}

/* Right after recvmmsg, before any fd it installed is closed: whether a
 * truncation in the batch is the broker's shortage. */
static void check_truncation(bk_port_t *p, rx_batch_t *rx, int n)
{
    rx->short_of_fds = false;
    for (int i = 0; i < n; i++)
        if (rx->msg[i].msg_hdr.msg_flags & MSG_CTRUNC) {
            rx->short_of_fds = out_of_fds(p->fd);
            return;
        }
}

/* How many packets the next recvmmsg asks for: BK_RECV_BATCH while the
 * client's packets are small (one message each, from a client that does
 * not batch), fewer once they were large, so that a call brings about
 * BK_RECV_BYTES at most (server.h). */
static unsigned recv_slots(const bk_port_t *p)
{
    unsigned n = p->rx_avg ? BK_RECV_BYTES / p->rx_avg : BK_RECV_BATCH;

    return n < 1 ? 1 : n > BK_RECV_BATCH ? BK_RECV_BATCH : n;
}

/* Take up to `slots` packets (at most BK_RECV_BATCH).  Returns how many,
 * -EAGAIN or another negative errno. */
static int recv_batch(bk_port_t *p, uint8_t *buf, rx_batch_t *rx,
                      unsigned slots)
{
    size_t len = p->srv->cfg->max_packet, got = 0;
    int n;

    for (unsigned i = 0; i < slots; i++) {
        rx->iov[i] = (struct iovec){ buf + i * len, len };
        rx->msg[i].msg_hdr = (struct msghdr){
            .msg_iov = &rx->iov[i], .msg_iovlen = 1,
            .msg_control = rx->ctl[i].buf,
            .msg_controllen = sizeof(rx->ctl[i].buf),
        };
        rx->msg[i].msg_len = 0;
    }
    do {
        n = recvmmsg(p->fd, rx->msg, slots, MSG_CMSG_CLOEXEC | MSG_DONTWAIT,
                     NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    check_truncation(p, rx, n);
    for (int i = 0; i < n; i++)
        got += rx->msg[i].msg_len;
    if (n > 0)
        p->rx_avg = (uint32_t)(got / (size_t)n) | 1;
    return n;
}

/* Whether packet m lost fds to the broker's own shortage. */
static bool lost_to_shortage(const rx_batch_t *rx, const struct mmsghdr *m)
{
    return rx->short_of_fds && (m->msg_hdr.msg_flags & MSG_CTRUNC) &&
           !(m->msg_hdr.msg_flags & MSG_TRUNC);
}

/* Act on one received packet.  Returns false once the port reads no
 * more (EOF, an error, closing). */
static bool take_packet(bk_port_t *p, const rx_batch_t *rx,
                        struct mmsghdr *m, int *fds)
{
    unsigned nfds;
    bool lost = lost_to_shortage(rx, m);
    int r = bk_sock_take_fds(&m->msg_hdr, fds, &nfds, BK_MAX_FDS_HARD);

    if (lost && m->msg_len) {   /* take_fds closed what did arrive */
        process_packet(p, m->msg_hdr.msg_iov->iov_base, m->msg_len, NULL,
                       0, true);
        return p->state != BK_PORT_CLOSING && !p->failed;
    }
    if (r == 0 && m->msg_len == 0 && nfds) {
        bk_close_fds(fds, nfds);
        r = -EPROTO;
    }
    if (r < 0) {
        bk_port_protocol_error(p, -EPROTO, 0, "packet or its control data "
                               "truncated (too large, or too many fds)");
        return false;
    }
    if (m->msg_len == 0) {
        bk_port_fail(p, 0);     /* EOF */
        return false;
    }
    process_packet(p, m->msg_hdr.msg_iov->iov_base, m->msg_len, fds, nfds,
                   false);
    return p->state != BK_PORT_CLOSING && !p->failed;
}

/* Packets taken after the one that ended reading: only their fds matter. */
static void drop_packets(struct mmsghdr *m, int n, int *fds)
{
    for (int i = 0; i < n; i++) {
        unsigned nfds;
        if (bk_sock_take_fds(&m[i].msg_hdr, fds, &nfds,
                             BK_MAX_FDS_HARD) == 0)
            bk_close_fds(fds, nfds);
    }
}

/* ---- packets read past a pause ------------------------------------------
 *
 * recvmmsg takes several packets at once; when one of them pauses its
 * sender (a receiver's queue went over the limit), the ones after it are
 * copied here, with their fds, instead of being acted on: they are acted
 * on in order once the sender is resumed, before anything else is read
 * from it, so a receiver's queue grows by one packet past the limit at
 * most (broker-protocol(7) FLOW CONTROL). */

typedef struct stashed {
    bk_list_t link;
    size_t len;                 /* 0: EOF; SIZE_MAX: bad control data */
    bool fds_lost;              /* the broker was out of fds (take_packet) */
    bk_ocharge_t *charge;       /* the fds count as in flight there */
    unsigned charged;
    unsigned nfds;
    int *fds;                   /* into data, after the packet */
    uint8_t data[];
} stashed_t;

static void stash_free(stashed_t *st)
{
    bk_close_fds(st->fds, st->nfds);
    if (st->charged)
        st->charge->put(st->charge, st->charged, 0);
    free(st);
}

static void stash_clear(bk_port_t *p)
{
    bk_list_t *l;

    bk_list_unlink(&p->stash_link);
    while ((l = bk_list_pop_head(&p->stash)))
        stash_free(bk_container_of(l, stashed_t, link));
}

static void read_packets(bk_port_t *p);

/* Keep packets m[0..n) for later.  Out of memory, the port fails. */
static void stash_packets(bk_port_t *p, const rx_batch_t *rx,
                          struct mmsghdr *m, int n, int *fds)
{
    for (int i = 0; i < n; i++) {
        unsigned nfds = 0;
        bool lost = lost_to_shortage(rx, &m[i]) && m[i].msg_len;
        bool bad = bk_sock_take_fds(&m[i].msg_hdr, fds, &nfds,
                                    BK_MAX_FDS_HARD) < 0 && !lost;
        size_t len = bad ? 0 : m[i].msg_len;
        stashed_t *st = malloc(sizeof(*st) + len + nfds * sizeof(int));

        if (!st) {
            bk_close_fds(fds, nfds);
            for (int j = i + 1; j < n; j++)
                if (bk_sock_take_fds(&m[j].msg_hdr, fds, &nfds,
                                     BK_MAX_FDS_HARD) == 0)
                    bk_close_fds(fds, nfds);
            bk_port_fail(p, -ENOMEM);
            return;
        }
        st->len = bad ? SIZE_MAX : len;
        st->fds_lost = lost;
        st->nfds = nfds;
        st->charge = fd_account(p, p);
        st->charged = nfds;
        bk_user_charge(&p->srv->users, st->charge, nfds, 0);
        st->fds = (int *)(st->data + len);
        memcpy(st->data, m[i].msg_hdr.msg_iov->iov_base, len);
        memcpy(st->fds, fds, nfds * sizeof(int));
        bk_list_push_tail(&p->stash, &st->link);
    }
}

/* Act on stashed packets while the port reads.  Returns true once none is
 * left. */
static bool unstash(bk_port_t *p)
{
    bk_list_t *l;

    while (!bk_list_empty(&p->stash)) {
        stashed_t *st;

        if (p->state == BK_PORT_CLOSING || p->failed || held_back(p))
            return false;
        l = bk_list_pop_head(&p->stash);
        st = bk_container_of(l, stashed_t, link);
        if (st->len == SIZE_MAX) {
            bk_port_protocol_error(p, -EPROTO, 0, "packet or its control "
                                   "data truncated (too large, or too many "
                                   "fds)");
        } else if (st->len == 0) {
            bk_port_fail(p, 0);
        } else {
            process_packet(p, st->data, st->len, st->fds, st->nfds,
                           st->fds_lost);
            st->nfds = 0;       /* process_packet took them */
        }
        stash_free(st);
    }
    return true;
}

void bk_port_unstash_resumed(bk_server_t *srv)
{
    bk_list_t *l;

    while ((l = bk_list_pop_head(&srv->unstash))) {
        bk_port_t *p = bk_container_of(l, bk_port_t, stash_link);

        if (unstash(p) && !p->failed && p->fd >= 0)
            read_packets(p);    /* what waited in the socket meanwhile */
    }
}

/* Read and process up to READ_BURST packets, recv_slots() per syscall,
 * into the server's receive buffer (bk_server_rbuf): a batch is processed
 * before the next read, but for the packets after one that paused the
 * sender, which wait in its stash (above). */
static void read_packets(bk_port_t *p)
{
    int fds[BK_MAX_FDS_HARD];
    rx_batch_t rx;

    for (int done = 0; done < READ_BURST;) {
        unsigned slots = recv_slots(p);
        uint8_t *buf;
        int n, i = 0;

        if (p->state == BK_PORT_CLOSING || p->failed || held_back(p))
            return;
        if (!unstash(p))
            return;
        if (!(buf = bk_server_rbuf(p->srv))) {
            bk_port_fail(p, -ENOMEM);
            return;
        }
        n = recv_batch(p, buf, &rx, slots);
        if (n == -EAGAIN)
            return;
        if (n < 0) {
            bk_port_fail(p, n);
            return;
        }
        while (i < n && take_packet(p, &rx, &rx.msg[i], fds)) {
            i++;
            if (p->srv->unflushed >= BK_FLUSH_EARLY)
                bk_port_flush_dirty(p->srv);
            if (held_back(p) && i < n) {
                stash_packets(p, &rx, &rx.msg[i], n - i, fds);
                return;
            }
        }
        if (i < n) {
            drop_packets(&rx.msg[i + 1], n - i - 1, fds);
            return;
        }
        if ((unsigned)n < slots)
            return;             /* the socket is empty */
        done += n;
    }
}

static void on_poll(uv_poll_t *handle, int status, int events)
{
    bk_port_t *p = handle->data;

    if (status < 0) {
        /* libuv reports any socket error as UV_EBADF: reading tells the
         * real cause (usually the peer's reset or EOF) */
        read_packets(p);
        bk_port_fail(p, -ECONNRESET);
    } else {
        if (events & UV_WRITABLE)
            flush(p);
        if ((events & UV_DISCONNECT) && held_back(p)) {
            p->departed = true;
            update_poll(p);
            bk_debug("client %llu hung up while paused: reading the rest",
                     (unsigned long long)p->id);
        }
        if (events & (UV_READABLE | UV_DISCONNECT))
            read_packets(p);
    }
    bk_server_reap(p->srv);
}

/* ---- teardown ---------------------------------------------------------------- */

void bk_port_fail(bk_port_t *p, int err)
{
    if (p->failed)
        return;
    p->failed = true;
    p->fail_err = err;
    bk_list_push_head(&p->srv->reap, &p->reap_link);
}

static void on_closed(uv_handle_t *h)
{
    bk_port_t *p = h->data;

    free(p->waiters);
    free(p);
}

/* A queued one-way message is dropped with its receiver: its sender hears
 * of it (unless the broker is stopping), as of any peer that disconnects:
 * ECONNRESET on its stream id, from the receiver's id -- or, past its
 * queue limit, in a summary (above). */
void bk_port_oneway_lost(bk_port_t *p, bk_port_t *src, uint32_t src_sid)
{
    static const char text[] = "receiver disconnected before reading the "
                               "message";
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_ERROR,
        .stream = src_sid, .aux = bk_err_to_wire(-ECONNRESET),
        .source = p->id, .dest = src->id, .length = sizeof(text) - 1,
    };

    if (p->srv->stopping || src == p)
        return;
    src->errors++;
    if (src->lost.count || src->out.mem > src->srv->cfg->queue_limit) {
        fold(&src->lost, p->id);
        mark_dirty(src);        /* flush sends the summary when it can */
        return;
    }
    bk_mon_tap(NULL, src, 0, &h, text);
    bk_port_send(src, &h, text, NULL, 0, NULL);
}

static void lost_oneway(const bk_oframe_t *f, void *arg)
{
    bk_port_t *p = arg;
    bk_port_t *src = bk_server_find(p->srv, f->src);

    if (src)
        bk_port_oneway_lost(p, src, f->src_sid);
}

void bk_port_hangup(bk_port_t *p, int err, const char *text)
{
    if (p->failed || p->hangup || p->fd < 0)
        return;
    p->fail_err = err;
    p->state = BK_PORT_CLOSING;
    bk_outq_fini(&p->out, lost_oneway, p);
    bk_outq_init(&p->out);
    if (p->acct)
        bk_outq_set_acct(&p->out, &p->acct->queued, &p->srv->users.queued);
    p->out.on_sent = bk_pub_sent;
    p->out.on_sent_arg = p;
    resume_waiters(p);
    bk_port_error(p, 0, err, text, NULL);
    /* from now on nothing more is queued for it, and its names go to
     * whoever is next in line */
    p->hangup = true;
    bk_names_release_all(&p->srv->names, &p->names, bk_now_ms());
    update_poll(p);
}

/* At info only for clients that owned or waited for a name, or went
 * for a reason other than hanging up: a plain client that connects,
 * sends and leaves is a debug matter (its connect line is too). */
static void log_disconnect(const bk_port_t *p)
{
    bool failed = p->fail_err && p->fail_err != -ECONNRESET &&
                  p->fail_err != -EPIPE;
    int level = failed || p->names.count || p->names.nwaiting ?
                BK_LOG_INFO : BK_LOG_DEBUG;

    if (!bk_log_enabled(level))
        return;
    if (failed)
        bk_log(level, "client %llu (pid %d, %s) disconnected: %s",
               (unsigned long long)p->id, (int)p->pid, p->comm,
               bk_sys_strerror(-p->fail_err));
    else
        bk_log(level, "client %llu (pid %d, %s) disconnected",
               (unsigned long long)p->id, (int)p->pid, p->comm);
}

void bk_port_close(bk_port_t *p)
{
    bk_server_t *srv = p->srv;
    bool announce = p->in_table;

    if (p->fd < 0)
        return;
    bk_reap_port_gone(p);
    p->state = BK_PORT_CLOSING;
    if (p->fail_err != -EPIPE && p->fail_err != -ECONNRESET)
        flush(p);               /* last words, e.g. an ERROR frame */
    if (p->in_table) {
        bk_ht_remove(&srv->clients, &p->node);
        bk_tree_remove(&srv->client_index, &p->tnode);
        p->in_table = false;
        srv->nclients--;
        log_disconnect(p);
    }
    bk_mon_port_gone(p);
    if (p->acct)
        p->acct->subs -= p->nsubs <= p->acct->subs ? p->nsubs
                                                    : p->acct->subs;
    bk_pub_port_gone(p);
    bk_router_port_gone(p);
    bk_names_release_all(&srv->names, &p->names, bk_now_ms());
    if (announce)
        bk_pub_client_event(p, "disconnect");
    bk_outq_fini(&p->out, lost_oneway, p);
    if (p->overfull)
        bk_server_trim_soon(srv);       /* the memory rule, server.h */
    bk_shm_port_gone(p);
    resume_waiters(p);
    stash_clear(p);
    bk_list_unlink(&p->dirty_link);
    bk_list_unlink(&p->budget_link);
    bk_user_release(p->acct);   /* nothing counts into it any more */
    p->acct = NULL;
    uv_close((uv_handle_t *)&p->poll, on_closed);
    close(p->fd);
    p->fd = -1;
}

void bk_port_shutdown(bk_port_t *p)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_BYE, .dest = p->id,
        .aux = bk_err_to_wire(-ESHUTDOWN),
    };

    p->state = BK_PORT_CLOSING;
    bk_port_send(p, &h, "", NULL, 0, NULL);
    update_poll(p);
}
