/*
 * port_double.c - stands in for port.c, server.c and monitor.c in unit
 * tests of router.c and shm.c: frames sent to a port are logged.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include "error.h"
#include "port_double.h"
#include "router.h"
#include "shm.h"
#include "sockio.h"
#include "user.h"

/* ---- the world -------------------------------------------------------- */

dbl_world_t *dbl_world_new(void)
{
    dbl_world_t *w = calloc(1, sizeof(*w));

    cr_assert_not_null(w);
    w->cfg.max_packet = BK_DEF_MAX_PACKET;
    w->cfg.max_fds = 16;
    w->cfg.max_name = BK_MAX_NAME;
    w->cfg.max_streams = 4;
    w->cfg.max_names = 16;
    w->cfg.max_msg = 1 << 20;
    w->cfg.queue_limit = 1 << 20;
    w->cfg.max_segments = 4;
    w->cfg.max_shm = 1 << 24;
    bk_policy_init(&w->cfg.policy);
    w->srv.cfg = &w->cfg;
    w->srv.users.nofile = 1024;     /* budgets (user.h): the defaults' 0 */
    bk_ht_init(&w->srv.clients);
    bk_names_init(&w->srv.names);
    bk_st_init(&w->srv.streams);
    w->srv.subs = bk_subs_new();
    cr_assert_not_null(w->srv.subs);
    bk_list_init(&w->srv.reap);
    bk_list_init(&w->srv.all);
    bk_list_init(&w->srv.dirty);
    bk_list_init(&w->srv.monitors);
    bk_shm_drain_init(&w->srv.releases);
    return w;
}

void dbl_world_free(dbl_world_t *w)
{
    for (unsigned i = 0; i < w->nports; i++) {
        bk_port_t *p = w->ports[i];
        if (p->in_table)
            dbl_port_gone(w, p);
        free(p);
    }
    bk_shm_drain_fini(&w->srv.releases);
    bk_st_fini(&w->srv.streams);
    bk_subs_free(w->srv.subs);
    bk_names_fini(&w->srv.names);
    bk_ht_fini(&w->srv.clients);
    bk_policy_free(&w->cfg.policy);
    free(w);
}

bk_port_t *dbl_port_new(dbl_world_t *w, uint64_t id)
{
    bk_port_t *p = calloc(1, sizeof(*p));

    cr_assert_not_null(p);
    cr_assert_lt(w->nports, DBL_PORTS);
    p->srv = &w->srv;
    p->id = id;
    p->fd = -1;
    p->state = BK_PORT_READY;
    p->in_table = true;
    p->pid = 1000 + (pid_t)id;
    strcpy(p->comm, "double");
    p->next_psid = 1;
    bk_outq_init(&p->out);
    bk_list_init(&p->reap_link);
    bk_list_init(&p->all_link);
    bk_list_init(&p->dirty_link);
    bk_shm_port_init(&p->shm);
    p->shm.maps = true;         /* as libbroker says in its HELLO */
    bk_st_list_init(&p->streams);
    bk_name_list_init(&p->names);
    w->ports[w->nports++] = p;
    return p;
}

void dbl_port_gone(dbl_world_t *w, bk_port_t *p)
{
    p->in_table = false;
    p->state = BK_PORT_CLOSING;
    bk_router_port_gone(p);
    bk_names_release_all(&w->srv.names, &p->names, 0);
    bk_shm_port_gone(p);
    while (!w->hold_releases && bk_shm_drain_step(&w->srv, UINT32_MAX))
        ;
}

/* user.c is not linked in: a record's holds are counted, no more. */
void bk_user_hold(bk_user_t *user)
{
    user->holds++;
}

void bk_user_release(bk_user_t *user)
{
    if (user)
        user->holds--;
}

void bk_server_release_soon(bk_server_t *s)
{
    bk_container_of(s, dbl_world_t, srv)->release_wakeups++;
}

static bool for_port(const dbl_frame_t *f, const bk_port_t *to)
{
    return !to || f->to == to;
}

unsigned dbl_count(const dbl_world_t *w, const bk_port_t *to)
{
    unsigned n = 0;

    for (unsigned i = 0; i < w->nlog; i++)
        n += for_port(&w->log[i], to);
    return n;
}

const dbl_frame_t *dbl_nth(const dbl_world_t *w, const bk_port_t *to,
                           unsigned i)
{
    for (unsigned k = 0; k < w->nlog; k++)
        if (for_port(&w->log[k], to) && i-- == 0)
            return &w->log[k];
    return NULL;
}

void dbl_clear(dbl_world_t *w)
{
    w->nlog = 0;
}

static dbl_world_t *world_of(const bk_port_t *p)
{
    return bk_container_of(p->srv, dbl_world_t, srv);
}

/* ---- what port.c, server.c and monitor.c would do ----------------------- */

int bk_port_send(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                 int *fds, unsigned nfds, bk_port_t *cause)
{
    dbl_world_t *w = world_of(to);
    dbl_frame_t *f;

    (void)cause;
    if (to->failed || !to->in_table) {
        bk_close_fds(fds, nfds);
        return -ECONNRESET;
    }
    if (w->fail_to == to && h->type == BK_T_DATA) {
        w->fail_to = NULL;
        bk_close_fds(fds, nfds);
        return w->fail_err ? w->fail_err : -ENOMEM;
    }
    cr_assert_lt(w->nlog, DBL_LOG);
    f = &w->log[w->nlog++];
    f->to = to;
    f->h = *h;
    memcpy(f->payload, payload,
           h->length < DBL_PAYLOAD ? h->length : DBL_PAYLOAD);
    f->nfds = nfds;
    f->body = false;
    f->body_len = 0;
    bk_close_fds(fds, nfds);
    return 0;
}

void bk_port_note_busy(bk_port_t *to, bk_port_t *from, const bk_hdr_t *m,
                       const uint8_t *payload)
{
    bool named = (m->flags & (BK_F_OPEN | BK_F_NAME)) ==
                 (BK_F_OPEN | BK_F_NAME);
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_FLOW,
        .aux = BK_FLOW_BUSY, .stream = m->stream, .source = to->id,
        .length = named ? m->aux : 0,
    };

    if (from->flow && world_of(to)->busy == to)
        bk_port_send(from, &h, payload, NULL, 0, NULL);
}

int bk_port_send_oneway(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                        int *fds, unsigned nfds, bk_port_t *cause,
                        uint32_t src_sid)
{
    (void)src_sid;
    return bk_port_send(to, h, payload, fds, nfds, cause);
}

void bk_port_oneway_lost(bk_port_t *p, bk_port_t *src, uint32_t src_sid)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_ERROR, .stream = src_sid,
        .aux = bk_err_to_wire(-ECONNRESET), .source = p->id,
        .dest = src->id,
    };

    src->errors++;
    bk_port_send(src, &h, "", NULL, 0, NULL);
}

void bk_port_error(bk_port_t *to, uint32_t stream, int err,
                   const char *text, bk_port_t *cause)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_ERROR, .stream = stream,
        .aux = bk_err_to_wire(err), .dest = to->id,
        .length = (uint32_t)strlen(text),
    };

    to->errors++;
    bk_port_send(to, &h, text, NULL, 0, cause);
}

void bk_port_protocol_error(bk_port_t *p, int err, uint32_t stream,
                            const char *what)
{
    p->srv->stats.protocol_errors++;
    bk_port_error(p, stream, err, what, NULL);
    bk_port_fail(p, err);
}

void bk_port_refused(bk_port_t *p, enum bk_port_refusal kind,
                     const char *fmt, ...)
{
    (void)fmt;
    p->refusals_logged |= (uint16_t)(1u << kind);
}

/* Budgets (user.h): the double's ports have no user record, so the
 * per-uid budgets pass; hits are not logged. */
void bk_port_quota(bk_port_t *p, int kind, const char *fmt, ...)
{
    (void)p;
    (void)kind;
    (void)fmt;
}

void bk_port_quota_ok(bk_port_t *p, int kind)
{
    (void)p;
    (void)kind;
}

bool bk_port_uid_fits(bk_port_t *p, int kind, uint64_t have, uint64_t want,
                      uint64_t max, const char *what)
{
    (void)kind;
    (void)what;
    return !p->acct || bk_user_fits(have, want, max);
}

void bk_port_fail(bk_port_t *p, int err)
{
    if (p->failed)
        return;
    p->failed = true;
    p->fail_err = err;
}

uint32_t bk_port_alloc_sid(bk_port_t *p)
{
    for (;;) {
        uint32_t n = p->next_psid++ & BK_SID_MAX_LOCAL;
        uint32_t sid = BK_SID_PEER_BIT | n;
        if (n && !bk_st_find(&p->srv->streams, p->id, sid))
            return sid;
    }
}

bk_port_t *bk_server_find(const bk_server_t *s, uint64_t id)
{
    const dbl_world_t *w = bk_container_of(s, dbl_world_t, srv);

    for (unsigned i = 0; i < w->nports; i++)
        if (w->ports[i]->id == id && w->ports[i]->in_table)
            return w->ports[i];
    return NULL;
}

uint64_t bk_now_ms(void)
{
    return 1;
}

void bk_mon_record(const bk_port_t *from, const bk_port_t *to,
                   uint32_t from_sid, const bk_hdr_t *o,
                   const uint8_t *payload)
{
    (void)from, (void)to, (void)from_sid, (void)o, (void)payload;
    cr_assert_fail("no monitor in these tests");
}

/* Publications: logged like any other frame (no queue to share into). */
int bk_port_send_pub(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                     bk_opayload_t **shared, int *fds, unsigned nfds,
                     bk_port_t *cause, void *tag)
{
    (void)shared;
    (void)tag;
    return bk_port_send(to, h, payload, fds, nfds, cause);
}

/* A body: logged as its descriptor frame (body set), then sent at once,
 * so the reference ends as it would once the last fragment went out. */
int bk_port_send_body(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                      bk_obody_t *body, bk_port_t *cause, bool pub,
                      void *tag, uint32_t oneway_sid)
{
    dbl_world_t *w = world_of(to);
    int r;

    (void)pub, (void)tag, (void)oneway_sid;
    r = bk_port_send(to, h, payload, NULL, 0, cause);
    if (r == 0) {
        w->log[w->nlog - 1].body = true;
        w->log[w->nlog - 1].body_len = body->end - body->pos;
    }
    body->done(body);
    return r < 0 ? r : BK_PORT_QUEUED;
}

int bk_port_requeue(bk_port_t *to, bk_oframe_t *f, const bk_hdr_t *h)
{
    (void)to;
    (void)h;
    bk_outq_frame_free(f);
    return -ECONNRESET;
}

void bk_port_hangup(bk_port_t *p, int err, const char *text)
{
    bk_port_error(p, 0, err, text, NULL);
    bk_port_fail(p, err);
}
