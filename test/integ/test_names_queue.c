/*
 * test_names_queue.c - a name's line of waiting clients: hand-over when the
 * owner closes, releases or is SIGKILLed, replacement, leaving the line,
 * the LIST_NAMES queue= and flags=, and the broker's announcements on
 * $broker.names and $broker.clients.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(names_queue, 240);

static uint64_t owner_of(broker_t *b, const char *name)
{
    uint64_t id = 0;
    int r = broker_resolve(b, name, &id);

    return r == 0 ? id : 0;
}

/* The announcement text the next $broker.names delivery carries. */
static void expect_names(broker_t *w, const char *name, uint64_t old,
                         uint64_t new_owner)
{
    broker_msg_t *m = th_recv_kind(w, BROKER_MSG_DATA);
    char want[256];

    snprintf(want, sizeof(want), "name=%s old=%" PRIu64 " new=%" PRIu64 "\n",
             name, old, new_owner);
    cr_assert(m->flags & BROKER_MSGF_TOPIC);
    cr_assert_str_eq(m->topic, "$broker.names");
    cr_assert_eq(m->source, 0, "announcements come from the broker");
    cr_assert_eq(m->len, strlen(want), "'%.*s', want '%s'", (int)m->len,
                 (char *)m->data, want);
    cr_assert_arr_eq(m->data, want, m->len);
    broker_msg_free(m);
}

static broker_t *watcher(void)
{
    broker_t *w = th_connect(&br);
    uint32_t id;

    TH_OK(broker_subscribe(w, "$broker.names", NULL, BROKER_SUB_BLOCK, &id));
    return w;
}

Test(names_queue, hand_over_on_close_and_release_in_order)
{
    broker_t *w = watcher();
    broker_t *a = th_connect(&br), *b = th_connect(&br), *c = th_connect(&br);
    uint64_t ia = broker_client_id(a), ib = broker_client_id(b),
             ic = broker_client_id(c);

    cr_assert_eq(broker_register_flags(a, "q.svc", BROKER_NAME_QUEUE),
                 BROKER_NAME_OWNER);
    expect_names(w, "q.svc", 0, ia);
    cr_assert_eq(broker_register_flags(b, "q.svc", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    cr_assert_eq(broker_register_flags(c, "q.svc", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    /* in line twice, or owner and in line: EALREADY; plain: EEXIST */
    cr_assert_eq(broker_register_flags(b, "q.svc", BROKER_NAME_QUEUE),
                 -EALREADY);
    cr_assert_eq(broker_register_flags(a, "q.svc", BROKER_NAME_QUEUE),
                 -EALREADY);
    cr_assert_eq(broker_register(w, "q.svc"), -EEXIST);
    cr_assert_eq(owner_of(w, "q.svc"), ia);
    /* the owner closes: the first in line owns it */
    broker_close(a);
    expect_names(w, "q.svc", ia, ib);
    cr_assert_eq(owner_of(w, "q.svc"), ib);
    /* the owner releases: the next */
    TH_OK(broker_release(b, "q.svc"));
    expect_names(w, "q.svc", ib, ic);
    cr_assert_eq(owner_of(w, "q.svc"), ic);
    /* nobody left in line: released for good */
    TH_OK(broker_release(c, "q.svc"));
    expect_names(w, "q.svc", ic, 0);
    cr_assert_eq(broker_resolve(w, "q.svc", &(uint64_t){ 0 }), -ENOENT);
    broker_close(b);
    broker_close(c);
    broker_close(w);
    th_broker_stop(&br);
}

Test(names_queue, leaving_the_line_by_release_and_by_disconnect)
{
    broker_t *w = watcher();
    broker_t *a = th_connect(&br), *b = th_connect(&br), *c = th_connect(&br);
    uint64_t ia = broker_client_id(a), ic = broker_client_id(c);

    cr_assert_eq(broker_register_flags(a, "q.x", 0), BROKER_NAME_OWNER);
    expect_names(w, "q.x", 0, ia);
    cr_assert_eq(broker_register_flags(b, "q.x", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    cr_assert_eq(broker_register_flags(c, "q.x", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    TH_OK(broker_release(b, "q.x"));        /* b leaves the line */
    cr_assert_eq(broker_release(b, "q.x"), -EPERM);
    broker_close(b);
    broker_close(a);                         /* c is next, not b */
    expect_names(w, "q.x", ia, ic);
    /* c's line place is gone with c, and a name c waits for too */
    broker_t *d = th_connect(&br);
    cr_assert_eq(broker_register_flags(d, "q.y", 0), BROKER_NAME_OWNER);
    expect_names(w, "q.y", 0, broker_client_id(d));
    cr_assert_eq(broker_register_flags(c, "q.y", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    uint64_t id_d = broker_client_id(d);
    broker_close(c);
    expect_names(w, "q.x", ic, 0);
    broker_close(d);
    expect_names(w, "q.y", id_d, 0);
    broker_close(w);
    th_broker_stop(&br);
}

static int owner_then_hang(void *arg)
{
    th_barrier_t *ready = arg;
    broker_t *b = th_connect(&br);

    TH_CHECK(broker_register_flags(b, "q.killed", 0) == BROKER_NAME_OWNER,
             "register");
    th_barrier_signal(ready, broker_client_id(b));
    for (;;)
        pause();
}

Test(names_queue, hand_over_when_the_owner_is_sigkilled)
{
    broker_t *w = watcher(), *next = th_connect(&br);
    th_barrier_t ready;
    uint64_t victim;
    pid_t pid;

    th_barrier_init(&ready);
    pid = th_spawn(owner_then_hang, &ready);
    victim = th_barrier_wait(&ready);
    expect_names(w, "q.killed", 0, victim);
    cr_assert_eq(broker_register_flags(next, "q.killed", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    cr_assert_eq(th_signal_join(pid, SIGKILL), SIGKILL);
    expect_names(w, "q.killed", victim, broker_client_id(next));
    cr_assert_eq(owner_of(w, "q.killed"), broker_client_id(next));
    /* messages to the name reach the new owner */
    TH_OK(broker_send(w, "q.killed", "hi", 2, NULL, 0));
    broker_msg_t *m = th_recv_kind(next, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 2);
    broker_msg_free(m);
    th_barrier_fini(&ready);
    broker_close(next);
    broker_close(w);
    th_broker_stop(&br);
}

Test(names_queue, replacement_and_the_replaced_owner_in_line)
{
    broker_t *w = watcher();
    broker_t *a = th_connect(&br), *b = th_connect(&br), *c = th_connect(&br);
    uint64_t ia = broker_client_id(a), ib = broker_client_id(b),
             ic = broker_client_id(c);

    /* a allows replacement and queues; b takes over; a waits at the head */
    cr_assert_eq(broker_register_flags(a, "r.svc",
                                       BROKER_NAME_ALLOW_REPLACEMENT |
                                       BROKER_NAME_QUEUE),
                 BROKER_NAME_OWNER);
    expect_names(w, "r.svc", 0, ia);
    cr_assert_eq(broker_register_flags(c, "r.svc", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    cr_assert_eq(broker_register_flags(b, "r.svc",
                                       BROKER_NAME_REPLACE_EXISTING),
                 BROKER_NAME_OWNER);
    expect_names(w, "r.svc", ia, ib);
    /* b did not allow replacement; c is in line already */
    cr_assert_eq(broker_register_flags(w, "r.svc",
                                       BROKER_NAME_REPLACE_EXISTING),
                 -EEXIST);
    cr_assert_eq(broker_register_flags(c, "r.svc",
                                       BROKER_NAME_REPLACE_EXISTING),
                 -EALREADY);
    /* b goes: a (head of the line) before c */
    broker_close(b);
    expect_names(w, "r.svc", ib, ia);
    broker_close(a);
    expect_names(w, "r.svc", ia, ic);
    /* a replaced owner that did not queue loses the name */
    broker_t *d = th_connect(&br);
    cr_assert_eq(broker_release(c, "r.svc"), 0);
    expect_names(w, "r.svc", ic, 0);
    cr_assert_eq(broker_register_flags(c, "r.svc",
                                       BROKER_NAME_ALLOW_REPLACEMENT),
                 BROKER_NAME_OWNER);
    expect_names(w, "r.svc", 0, ic);
    cr_assert_eq(broker_register_flags(d, "r.svc",
                                       BROKER_NAME_REPLACE_EXISTING),
                 BROKER_NAME_OWNER);
    expect_names(w, "r.svc", ic, broker_client_id(d));
    cr_assert_eq(broker_release(c, "r.svc"), -EPERM, "c is not in line");
    /* unknown flags */
    cr_assert_eq(broker_register_flags(c, "r.other", 0x8), -EINVAL);
    broker_close(c);
    broker_close(d);
    broker_close(w);
    th_broker_stop(&br);
}

Test(names_queue, list_names_shows_the_line_and_flags)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br), *c = th_connect(&br);
    char *text = NULL, want[128];
    size_t len = 0;

    cr_assert_eq(broker_register_flags(a, "l.svc",
                                       BROKER_NAME_ALLOW_REPLACEMENT),
                 BROKER_NAME_OWNER);
    cr_assert_eq(broker_register_flags(b, "l.svc", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    cr_assert_eq(broker_register_flags(c, "l.svc", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    TH_OK(broker_list(a, BROKER_CTRL_LIST_NAMES, &text, &len));
    snprintf(want, sizeof(want), "queue=%" PRIu64 ",%" PRIu64
             " flags=allow-replacement", broker_client_id(b),
             broker_client_id(c));
    cr_assert_not_null(strstr(text, want), "'%s' not in:\n%s", want, text);
    free(text);
    broker_close(a);
    broker_close(b);
    broker_close(c);
    th_broker_stop(&br);
}

Test(names_queue, client_announcements)
{
    broker_t *w = th_connect(&br), *x;
    broker_msg_t *m;
    uint32_t id;
    char want[160];
    uint64_t ix;

    TH_OK(broker_subscribe(w, "$broker.clients", NULL, BROKER_SUB_BLOCK,
                           &id));
    x = th_connect(&br);
    ix = broker_client_id(x);
    m = th_recv_kind(w, BROKER_MSG_DATA);
    cr_assert_str_eq(m->topic, "$broker.clients");
    cr_assert_eq(m->sub_id, id);
    snprintf(want, sizeof(want), "event=connect id=%" PRIu64 " pid=%d uid=%u "
             "comm=", ix, (int)getpid(), (unsigned)getuid());
    cr_assert_eq(memcmp(m->data, want, strlen(want)), 0, "'%.*s'",
                 (int)m->len, (char *)m->data);
    cr_assert_eq(((char *)m->data)[m->len - 1], '\n');
    broker_msg_free(m);
    broker_close(x);
    m = th_recv_kind(w, BROKER_MSG_DATA);
    snprintf(want, sizeof(want), "event=disconnect id=%" PRIu64 " pid=%d ",
             ix, (int)getpid());
    cr_assert_eq(memcmp(m->data, want, strlen(want)), 0, "'%.*s'",
                 (int)m->len, (char *)m->data);
    broker_msg_free(m);
    /* ">" does not see them ($ rule) */
    broker_t *all = th_connect(&br), *p = th_connect(&br);
    TH_OK(broker_subscribe(all, ">", NULL, BROKER_SUB_DROP, &id));
    broker_close(th_connect(&br));
    TH_OK(broker_publish(p, "z.end", "end", 3, NULL, 0));
    m = th_recv_kind(all, BROKER_MSG_DATA);
    cr_assert_str_eq(m->topic, "z.end", "'>' got %s", m->topic);
    broker_msg_free(m);
    broker_close(all);
    broker_close(p);
    broker_close(w);
    th_broker_stop(&br);
}
