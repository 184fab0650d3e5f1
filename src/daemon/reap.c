/*
 * reap.c - the sweep for dead clients whose stalled queue holds fds, and
 * pushing their queue into the kernel (reap.h says why).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include "error.h"
#include "log.h"
#include "port.h"
#include "reap.h"
#include "server.h"

/* ---- /proc/PID/stat ---------------------------------------------------- */

int bk_reap_proc_stat(pid_t pid, uint64_t *start, bool *zombie)
{
    char path[64], buf[1024], *p, *end;
    ssize_t n;
    int fd, r;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ESRCH ? -ENOENT : -errno;
    n = read(fd, buf, sizeof(buf) - 1);
    r = n < 0 ? -errno : 0;
    close(fd);
    if (r < 0)
        return r == -ESRCH ? -ENOENT : r;
    buf[n] = '\0';
    /* "PID (COMM) S ...": COMM may hold spaces and parentheses, so the
     * fields start after the last ')'; S is field 3, starttime 22. */
    p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2])
        return -EINVAL;
    p += 2;
    *zombie = *p == 'Z' || *p == 'X' || *p == 'x';
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -EINVAL;
        p++;
    }
    errno = 0;
    *start = strtoull(p, &end, 10);
    return errno || end == p ? -EINVAL : 0;
}

/* Whether the client's process is gone: no such pid, a zombie (its fds
 * are closed), or another process under its pid.  In doubt (cannot
 * read), not gone. */
static bool process_gone(const bk_port_t *p)
{
    uint64_t start;
    bool zombie;
    int r = bk_reap_proc_stat(p->pid, &start, &zombie);

    if (r == -ENOENT)
        return true;
    return r == 0 && (zombie || start != p->reap.start);
}

void bk_reap_port_new(bk_port_t *p)
{
    bool zombie;

    p->reap.start = 0;
    if (p->pid > 0 && (bk_reap_proc_stat(p->pid, &p->reap.start,
                                         &zombie) < 0 || zombie))
        p->reap.start = 0;      /* unknown: never pushed */
}

void bk_reap_port_gone(bk_port_t *p)
{
    bool eof = !p->fail_err || p->fail_err == -ECONNRESET ||
               p->fail_err == -EPIPE;

    if (!p->reap.pushed || !eof || p->msgs_in != p->reap.msgs_in ||
        p->srv->stopping)
        return;
    p->srv->reaper.reaped++;
    bk_info("client %llu (pid %d, %s) reaped: its process was gone, and "
            "once its queue was written out the kernel collected its end "
            "of the connection, which only descriptors in flight kept open",
            (unsigned long long)p->id, (int)p->pid, p->comm);
}

/* ---- the sweep ----------------------------------------------------------------- */

/* Wake the kernel's collector of Unix sockets in flight: it runs when a
 * Unix socket is released. */
static void wake_collector(void)
{
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0)
        return;
    close(sv[0]);
    close(sv[1]);
}

static void push(bk_server_t *s, bk_port_t *p)
{
    uint64_t nfds = p->out.nfds, bytes = p->out.bytes;
    int r;

    p->reap.pushed = true;
    p->reap.msgs_in = p->msgs_in;
    s->reaper.pushes++;
    r = bk_port_push(p);
    bk_debug("client %llu (pid %d, %s): its process is gone; wrote its "
             "stalled queue (%llu bytes, %llu fds) past the socket buffer: "
             "%s", (unsigned long long)p->id, (int)p->pid, p->comm,
             (unsigned long long)bytes, (unsigned long long)nfds,
             r == 0 ? "all out" : bk_sys_strerror(-r));
    if (r == -ENOBUFS && !s->reaper.short_logged) {
        s->reaper.short_logged = true;
        bk_debug("a dead client's queue did not fit its socket's send "
                 "buffer (raise net.core.wmem_max, or run brokerd as "
                 "root): a connection kept open by it may stay");
    }
    wake_collector();
}

/* Whether p is a suspect: fds queued for it, and nothing written to it
 * since the last sweep that saw it so. */
static bool suspect(bk_port_t *p)
{
    bk_reap_port_t *r = &p->reap;

    if (p->state != BK_PORT_READY || p->failed || p->hangup ||
        !p->out.nfds || r->pushed) {
        r->armed = false;
        return false;
    }
    if (!r->armed || r->mark != p->writes) {
        r->armed = true;
        r->mark = p->writes;
        return false;
    }
    return p->pid > 0 && r->start;
}

/* Look at up to BK_REAP_BATCH clients from the cursor on (whole buckets)
 * and check up to BK_REAP_SUSPECTS suspects among them. */
static void sweep(bk_server_t *s)
{
    bk_reap_t *r = &s->reaper;
    size_t nb = s->clients.nbuckets, seen = 0, checked = 0;

    if (r->cursor >= nb)
        r->cursor = 0;
    for (size_t k = 0; k < nb && seen < BK_REAP_BATCH &&
         checked < BK_REAP_SUSPECTS; k++) {
        bk_hnode_t *e = bk_ht_bucket(&s->clients, r->cursor), *next;

        r->cursor = r->cursor + 1 < nb ? r->cursor + 1 : 0;
        for (; e; e = next) {
            bk_port_t *p = bk_container_of(e, bk_port_t, node);

            next = e->next;     /* a push may fail p (not unlink it) */
            seen++;
            if (!suspect(p))
                continue;
            checked++;
            r->checks++;
            if (process_gone(p))
                push(s, p);
        }
    }
}

static void on_sweep(uv_timer_t *t)
{
    bk_server_t *s = t->data;

    if (s->stopping)
        return;
    sweep(s);
    bk_server_reap(s);
}

void bk_reap_init(bk_server_t *s, uv_loop_t *loop)
{
    uv_timer_init(loop, &s->reaper.timer);
    s->reaper.timer.data = s;
}

void bk_reap_configure(bk_server_t *s)
{
    uint32_t ms = s->cfg->reap_interval_ms;

    if (!ms || s->stopping) {
        uv_timer_stop(&s->reaper.timer);
        return;
    }
    if (uv_is_active((uv_handle_t *)&s->reaper.timer) &&
        uv_timer_get_repeat(&s->reaper.timer) == ms)
        return;
    uv_timer_start(&s->reaper.timer, on_sweep, ms, ms);
}

void bk_reap_stop(bk_server_t *s)
{
    uv_timer_stop(&s->reaper.timer);
}

void bk_reap_close(bk_server_t *s)
{
    uv_close((uv_handle_t *)&s->reaper.timer, NULL);
}
