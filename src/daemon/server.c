/*
 * server.c - listening socket, client table, signals, orderly shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include "error.h"
#include "frame.h"
#include "log.h"
#include "port.h"
#include "router.h"
#include "sdaemon.h"
#include "pubsub.h"
#include "server.h"
#include "sockio.h"

#define ACCEPT_BURST 64
/* How long after a trigger of the memory rule (server.h) the trim runs. */
#define TRIM_DELAY_MS 1000

uint64_t bk_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bk_port_t *bk_server_find(const bk_server_t *s, uint64_t id)
{
    uint8_t key[8];
    bk_hnode_t *n;

    bk_put64(key, id);
    n = bk_ht_find(&s->clients, key, sizeof(key));
    return n ? bk_container_of(n, bk_port_t, node) : NULL;
}

/* ---- ports ------------------------------------------------------------------ */

/* A new connection counts against its user from now on, and waits for
 * its HELLO on the handshaking list.  Returns 0 or -ENOMEM (the port is
 * linked either way, so reaping it undoes both). */
static int link_port(bk_server_t *s, bk_port_t *p)
{
    s->nports++;
    if (s->nports > s->nports_peak)
        s->nports_peak = s->nports;
    bk_list_push_head(&s->all, &p->all_link);
    bk_list_push_tail(&s->handshaking, &p->hs_link);
    p->user = bk_user_ref(&s->users, p->uid);
    return p->user ? 0 : -ENOMEM;
}

static void unlink_port(bk_server_t *s, bk_port_t *p)
{
    s->nports--;
    bk_list_unlink(&p->all_link);
    bk_list_unlink(&p->hs_link);
    bk_list_unlink(&p->drain_link);
    bk_user_unref(&s->users, p->user);
    p->user = NULL;
}

/* ---- the handshake timeout ---------------------------------------------------
 *
 * Connections wait for their HELLO on s->handshaking in the order they
 * were accepted, and all get the same time, so the first is always the
 * next to expire: one timer, armed for it, is enough. */

static void on_handshake_timer(uv_timer_t *t);

static void arm_handshake_timer(bk_server_t *s)
{
    bk_list_t *l = bk_list_first(&s->handshaking);
    uint64_t now = bk_now_ms(), due;
    bk_port_t *p;

    if (!l) {
        uv_timer_stop(&s->hs_timer);
        return;
    }
    p = bk_container_of(l, bk_port_t, hs_link);
    due = p->connected_ms + s->cfg->handshake_timeout_ms;
    uv_timer_start(&s->hs_timer, on_handshake_timer, due > now ? due - now : 0,
                   0);
}

static void on_handshake_timer(uv_timer_t *t)
{
    bk_server_t *s = t->data;
    uint64_t now = bk_now_ms();
    unsigned n = 0;
    bk_list_t *l;

    while ((l = bk_list_first(&s->handshaking))) {
        bk_port_t *p = bk_container_of(l, bk_port_t, hs_link);

        if (now - p->connected_ms < s->cfg->handshake_timeout_ms)
            break;
        bk_list_unlink(&p->hs_link);
        if (!p->failed) {
            bk_port_handshake_expired(p);
            n++;
        }
    }
    if (n)
        bk_info("closed %u connection%s that sent no HELLO within %u ms",
                n, n == 1 ? "" : "s", s->cfg->handshake_timeout_ms);
    arm_handshake_timer(s);
    bk_server_reap(s);
}

/* ---- memory ----------------------------------------------------------------- */

static void on_trim(uv_timer_t *t)
{
    bk_server_t *s = t->data;

    s->nports_peak = s->nports;
    bk_outq_cache_trim();       /* its blocks would pin pages of the heap */
    malloc_trim(0);
    bk_debug("gave free heap memory back to the system (%u connections)",
             s->nports);
}

void bk_server_trim_soon(bk_server_t *s)
{
    if (s->finished || uv_is_active((uv_handle_t *)&s->trimmer))
        return;
    uv_timer_start(&s->trimmer, on_trim, TRIM_DELAY_MS, 0);
}

/* The memory rule's second half: many connections went. */
static void check_drop(bk_server_t *s)
{
    if (s->nports_peak - s->nports >= BK_TRIM_MIN_DROP &&
        s->nports < s->nports_peak / 2)
        bk_server_trim_soon(s);
}

uint8_t *bk_server_rbuf(bk_server_t *s)
{
    size_t want = (size_t)s->cfg->max_packet * BK_RECV_BATCH;
    uint8_t *b;

    if (s->rbuf && s->rbuf_len == want)
        return s->rbuf;
    b = malloc(want);
    if (!b)
        return NULL;
    free(s->rbuf);
    s->rbuf = b;
    s->rbuf_len = want;
    return b;
}

uint8_t *bk_server_wbuf(bk_server_t *s)
{
    size_t want = s->cfg->max_packet;
    uint8_t *b;

    if (s->wbuf && s->wbuf_len == want)
        return s->wbuf;
    b = malloc(want);
    if (!b)
        return NULL;
    free(s->wbuf);
    s->wbuf = b;
    s->wbuf_len = want;
    return b;
}

/* ---- once per callback, once per loop pass ---------------------------------- */

/* End of every callback: close what failed.  Closing tells peers, which
 * may fail more ports; the loop takes those too. */
void bk_server_reap(bk_server_t *s)
{
    bk_list_t *l;

    if (bk_list_empty(&s->reap))
        return;
    while ((l = bk_list_pop_head(&s->reap))) {
        bk_port_t *p = bk_container_of(l, bk_port_t, reap_link);
        unlink_port(s, p);
        bk_port_close(p);
    }
    check_drop(s);
}

/* Once per loop pass, before it waits: act on the packets resumed senders
 * had read past their pause, write what was queued during the pass and
 * close what failed; each may cause more of the others (writing resumes
 * senders, closing queues for peers), so repeat until all are done. */
static void on_flush(uv_prepare_t *h)
{
    bk_server_t *s = h->data;

    do {
        bk_port_resume_budget(s);
        bk_port_unstash_resumed(s);
        bk_port_flush_dirty(s);
        bk_server_reap(s);
    } while (!bk_list_empty(&s->dirty) || !bk_list_empty(&s->unstash));
}

/* A batch of the release jobs (shm.h); while this handle is active the
 * loop polls without waiting, so clients are served between batches. */
static void on_release(uv_idle_t *h)
{
    bk_server_t *s = h->data;

    if (!bk_shm_drain_step(s, BK_SHM_RELEASE_BATCH))
        uv_idle_stop(h);
    bk_server_reap(s);
}

void bk_server_release_soon(bk_server_t *s)
{
    if (s->finished || uv_is_active((uv_handle_t *)&s->releaser))
        return;
    uv_idle_start(&s->releaser, on_release);
}

/* ---- accepting -------------------------------------------------------------- */

/* Send an ERROR (err: a negative errno) on a socket no port owns yet, and
 * close it. */
static void refuse(int fd, int err, const char *text)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_ERROR,
        .aux = bk_err_to_wire(err),
        .length = (uint32_t)strlen(text),
    };
    uint8_t hdr[BK_HDR_SIZE];
    struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)text, h.length } };

    bk_hdr_encode(&h, hdr);
    bk_sock_send(fd, iov, 2, NULL, 0);
    close(fd);
}

/* Out of fds: accept and drop one connection using the spare fd, so the
 * client sees a closed socket instead of waiting forever. */
static void shed(bk_server_t *s)
{
    int fd;

    if (s->reserve_fd < 0)
        return;
    close(s->reserve_fd);
    fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
        refuse(fd, -EMFILE, "broker is out of file descriptors");
    s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    bk_warn("out of file descriptors; refused a connection");
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    bk_server_t *s = h->data;

    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < ACCEPT_BURST && !s->stopping; i++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        bk_port_t *p;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                shed(s);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                bk_warn("accept: %s", bk_sys_strerror(errno));
            break;
        }
        if (s->nports >= s->cfg->max_clients) {
            refuse(fd, -ENOSR, "too many clients");
            if (!s->full_logged)
                bk_warn("max-clients reached (%u connections); refusing "
                        "new connections until one closes (logged once)",
                        s->cfg->max_clients);
            s->full_logged = true;
            continue;
        }
        s->full_logged = false;
        p = bk_port_new(s, fd, s->next_client_id++);
        if (!p) {
            bk_warn("out of memory for a new client");
            continue;
        }
        s->stats.clients_total++;
        if (link_port(s, p) < 0)
            bk_port_fail(p, -ENOMEM);
        else
            bk_port_admit(p);
    }
    if (!uv_is_active((uv_handle_t *)&s->hs_timer))
        arm_handshake_timer(s);
    bk_server_reap(s);
}

/* ---- the socket ------------------------------------------------------------- */

static int take_lock(bk_server_t *s, const char *path)
{
    snprintf(s->lockpath, sizeof(s->lockpath), "%s.lock", path);
    s->lockfd = open(s->lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lockfd < 0) {
        int e = errno;
        bk_err("cannot create %s: %s", s->lockpath, bk_sys_strerror(e));
        return -e;
    }
    if (flock(s->lockfd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(s->lockfd);
        s->lockfd = -1;
        if (e == EWOULDBLOCK) {
            bk_err("another broker is listening on %s", path);
            return -EADDRINUSE;
        }
        bk_err("cannot lock %s: %s", s->lockpath, bk_sys_strerror(e));
        return -e;
    }
    return 0;
}

/* A socket file left by a broker that died is replaced; a live one never. */
static int clear_stale(const char *path)
{
    struct stat st;
    int fd;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode)) {
        bk_err("%s exists and is not a socket; not replacing it", path);
        return -EEXIST;
    }
    fd = bk_sock_connect(path);
    if (fd >= 0) {
        close(fd);
        bk_err("another broker is listening on %s", path);
        return -EADDRINUSE;
    }
    if (fd != -ECONNREFUSED && fd != -ENOENT) {
        bk_err("cannot check %s: %s", path, bk_sys_strerror(-fd));
        return fd;
    }
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    bk_info("replaced stale socket %s", path);
    return 0;
}

/* Create the socket's directory if it is missing (one level, mode 0700). */
static void make_dir(const char *path)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char *slash;

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return;
    *slash = '\0';
    if (mkdir(dir, 0700) == 0)
        bk_info("created %s", dir);
}

/* Mode and group of the socket file, set before listen() so nobody
 * connects through looser permissions. */
static int set_perms(const bk_conf_t *c, const char *path)
{
    if (c->socket_group_set && chown(path, (uid_t)-1, c->socket_group) < 0)
        return -1;
    return chmod(path, c->socket_mode);
}

static int listen_on(bk_server_t *s, const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd, e;

    make_dir(path);
    if ((e = take_lock(s, path)) < 0)
        return e;
    if ((e = clear_stale(path)) < 0)
        return e;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        set_perms(s->cfg, path) < 0 || listen(fd, SOMAXCONN) < 0) {
        e = errno;
        bk_err("cannot listen on %s: %s", path, bk_sys_strerror(e));
        close(fd);
        return -e;
    }
    s->lfd = fd;
    return 0;
}

/* ---- life cycle ----------------------------------------------------------- */

static void finish(bk_server_t *s);

static void on_signal(uv_signal_t *h, int signum)
{
    bk_server_t *s = h->data;

    if (s->stopping) {
        bk_info("second signal %d: closing now", signum);
        finish(s);
        return;
    }
    bk_info("signal %d: shutting down", signum);
    bk_server_stop(s);
}

int bk_server_reload(bk_server_t *s, char *err, size_t errlen)
{
    bk_conf_t *c = s->cfg;
    int r;

    /* reopen first: a rotated log gets the reload's own lines */
    if (c->logfile && (r = bk_log_set_file(c->logfile)) < 0)
        bk_err("cannot reopen %s: %s", c->logfile, bk_sys_strerror(-r));
    if (bk_conf_reload(c, err, errlen) < 0) {
        bk_err("reload failed, configuration unchanged: %s", err);
        return -EINVAL;
    }
    bk_log_init(c->log_level, !c->foreground);
    if (c->logfile && (r = bk_log_set_file(c->logfile)) < 0)
        bk_err("cannot open %s: %s", c->logfile, bk_sys_strerror(-r));
    if (s->listening)
        arm_handshake_timer(s);     /* the timeout may have changed */
    bk_reap_configure(s);           /* and the reap interval */
    bk_info("reloaded %s (queue limit %" PRIu64 ", max clients %u, max "
            "streams %u, max names %u; %zu connect, %zu own, %zu send rules)",
            c->confpath, c->queue_limit, c->max_clients, c->max_streams,
            c->max_names, c->policy.connect.n, c->policy.own.n,
            c->policy.send.n);
    return 0;
}

/* SIGHUP re-reads the -c file; without one it only reopens the log file
 * (for log rotation), which is not a failed reload. */
static void on_sighup(uv_signal_t *h, int signum)
{
    bk_server_t *s = h->data;
    const bk_conf_t *c = s->cfg;
    char err[512];
    int r;

    (void)signum;
    if (c->confpath) {
        bk_info("SIGHUP: reloading the configuration");
        bk_server_reload(s, err, sizeof(err));
        return;
    }
    if (!c->logfile) {
        bk_info("SIGHUP: started without a configuration file (-c), "
                "nothing to reload");
        return;
    }
    if ((r = bk_log_set_file(c->logfile)) < 0)
        bk_err("SIGHUP: cannot reopen %s: %s", c->logfile, bk_sys_strerror(-r));
    else
        bk_info("SIGHUP: reopened %s; started without a configuration "
                "file (-c), nothing else to reload", c->logfile);
}

/* The handles every broker has, listening or not. */
static void init_handles(bk_server_t *s, uv_loop_t *loop)
{
    uv_signal_init(loop, &s->sigint);
    uv_signal_init(loop, &s->sigterm);
    uv_signal_init(loop, &s->sighup);
    s->sigint.data = s->sigterm.data = s->sighup.data = s;
    uv_signal_start(&s->sighup, on_sighup, SIGHUP);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_timer_init(loop, &s->grace);
    s->grace.data = s;
    uv_timer_init(loop, &s->trimmer);
    s->trimmer.data = s;
    uv_timer_init(loop, &s->hs_timer);
    s->hs_timer.data = s;
    uv_idle_init(loop, &s->releaser);
    s->releaser.data = s;
    uv_prepare_init(loop, &s->flusher);
    s->flusher.data = s;
    uv_prepare_start(&s->flusher, on_flush);
    bk_reap_init(s, loop);
}

static void close_handles(bk_server_t *s)
{
    uv_close((uv_handle_t *)&s->grace, NULL);
    uv_close((uv_handle_t *)&s->trimmer, NULL);
    uv_close((uv_handle_t *)&s->hs_timer, NULL);
    uv_close((uv_handle_t *)&s->flusher, NULL);
    uv_close((uv_handle_t *)&s->releaser, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
    bk_reap_close(s);
}

/* Whether client sockets can take packets of max_packet bytes: tried on a
 * socketpair, so a --max-packet the system cannot carry fails at start. */
static int check_sndbuf(uint32_t max_packet)
{
    int sv[2], got = 0, r;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    r = bk_port_size_sndbuf(sv[0], max_packet, &got);
    close(sv[0]);
    close(sv[1]);
    if (r == -ENOBUFS)
        bk_err("max-packet %u needs a socket send buffer of %u bytes, the "
               "system allows %d: raise net.core.wmem_max (sysctl) to %u or "
               "more, or lower max-packet", max_packet, max_packet + 32, got,
               (unsigned)(2 * (size_t)max_packet + 4096));
    else if (r < 0)
        bk_err("cannot size a socket's send buffer: %s", bk_sys_strerror(-r));
    return r;
}

int bk_server_init(bk_server_t *s, uv_loop_t *loop, bk_conf_t *cfg,
                   int lfd)
{
    int r;

    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->cfg = cfg;
    s->lfd = s->lockfd = s->reserve_fd = -1;
    s->next_client_id = 1;
    s->start_ms = bk_now_ms();
    bk_ht_init(&s->clients);
    bk_tree_init(&s->client_index);
    bk_tree_init(&s->shm_index);
    bk_list_init(&s->reap);
    bk_list_init(&s->all);
    bk_list_init(&s->dirty);
    bk_list_init(&s->handshaking);
    bk_list_init(&s->draining);
    bk_users_init(&s->users);
    bk_list_init(&s->unstash);
    bk_list_init(&s->budget_paused);
    bk_list_init(&s->monitors);
    bk_shm_drain_init(&s->releases);
    bk_names_init(&s->names);
    s->names.on_change = bk_pub_name_changed;
    s->names.arg = s;
    bk_st_init(&s->streams);
    s->subs = bk_subs_new();
    if (!s->subs || !bk_server_rbuf(s))
        return -ENOMEM;
    r = check_sndbuf(cfg->max_packet);
    if (r < 0)
        return r;
    /* Signals first: a client may connect (and a test may SIGTERM us) as
     * soon as listen() returns. */
    init_handles(s, loop);
    if (lfd >= 0) {
        s->lfd = lfd;
        s->activated = true;
        r = 0;
    } else {
        r = listen_on(s, cfg->socket_path);
    }
    if (r < 0) {
        close_handles(s);
        uv_run(loop, UV_RUN_NOWAIT);
        return r;
    }
    s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    s->laddr_len = sizeof(s->laddr);
    if (getsockname(s->lfd, (struct sockaddr *)&s->laddr, &s->laddr_len) < 0)
        s->laddr_len = 0;
    uv_poll_init(loop, &s->lpoll, s->lfd);
    s->lpoll.data = s;
    uv_poll_start(&s->lpoll, UV_READABLE, on_accept);
    s->listening = true;
    bk_reap_configure(s);
    bk_info("listening on %s%s (protocol %u, max packet %u, queue limit %" PRIu64
            ")", cfg->socket_path, s->activated ? " (socket activation)" : "",
            BK_PROTO_VERSION, cfg->max_packet,
            cfg->queue_limit);
    return 0;
}

static void finish(bk_server_t *s)
{
    bk_port_t *p;

    if (s->finished)
        return;
    s->finished = true;
    bk_list_for_each(p, &s->all, bk_port_t, all_link)
        bk_port_fail(p, -ESHUTDOWN);
    bk_server_reap(s);
    close_handles(s);
}

static void on_grace(uv_timer_t *t)
{
    bk_server_t *s = t->data;

    bk_warn("shutdown: some clients did not read their last frames");
    finish(s);
}

/* While stopping nothing new is queued (ports no longer read, and the
 * errors a closing port would send its peers are not sent), so a port
 * that drained stays drained: each leaves the draining list once, and
 * the whole shutdown costs O(ports), not a walk of every port each time
 * one drains. */
void bk_server_port_drained(bk_server_t *s)
{
    bk_list_t *l;

    if (!s->stopping || s->finished)
        return;
    while ((l = bk_list_first(&s->draining))) {
        bk_port_t *p = bk_container_of(l, bk_port_t, drain_link);

        if (p->out.frames && !p->failed)
            return;
        bk_list_unlink(l);
    }
    finish(s);
}

void bk_server_stop(bk_server_t *s)
{
    bk_port_t *p;

    if (s->stopping)
        return;
    s->stopping = true;
    bk_sd_notify("STOPPING=1");
    bk_reap_stop(s);
    if (s->listening) {
        uv_close((uv_handle_t *)&s->lpoll, NULL);
        close(s->lfd);
        s->lfd = -1;
        if (!s->activated) {    /* else the service manager owns the path */
            unlink(s->cfg->socket_path);
            unlink(s->lockpath);
        }
        s->listening = false;
    }
    bk_list_for_each(p, &s->all, bk_port_t, all_link)
        if (!p->failed) {
            bk_port_shutdown(p);
            if (p->out.frames)
                bk_list_push_tail(&s->draining, &p->drain_link);
        }
    bk_server_reap(s);
    uv_timer_start(&s->grace, on_grace, s->cfg->shutdown_grace_ms, 0);
    bk_server_port_drained(s);
}

void bk_server_fini(bk_server_t *s)
{
    bk_st_fini(&s->streams);
    if (s->subs)
        bk_subs_free(s->subs);
    s->subs = NULL;
    bk_names_fini(&s->names);
    bk_ht_fini(&s->clients);
    bk_shm_drain_fini(&s->releases);    /* before the users they hold */
    bk_users_fini(&s->users);
    free(s->rbuf);
    s->rbuf = NULL;
    free(s->wbuf);
    s->wbuf = NULL;
    if (s->reserve_fd >= 0)
        close(s->reserve_fd);
    if (s->lockfd >= 0)
        close(s->lockfd);
    if (s->lfd >= 0)
        close(s->lfd);
    bk_outq_cache_trim();
}
