/*
 * test_names.c - well-known names: register, conflicts, release, resolve,
 * release on disconnect, invalid names.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* pipe2, memfd_create */
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(names, 180);

static uint64_t resolve_ok(broker_t *b, const char *name)
{
    uint64_t id = 0;
    int r = broker_resolve(b, name, &id);

    cr_assert_eq(r, 0, "resolve '%s': %s", name, broker_strerror(r));
    return id;
}

Test(names, register_and_resolve)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    uint64_t id = 12345;

    cr_assert_neq(broker_client_id(a), 0);
    cr_assert_neq(broker_client_id(a), broker_client_id(b));
    cr_assert_eq(broker_register(a, "svc.alpha"), 0);
    cr_assert_eq(broker_register(a, "org.example/beta:2"), 0);
    cr_assert_eq(resolve_ok(b, "svc.alpha"), broker_client_id(a));
    cr_assert_eq(resolve_ok(a, "svc.alpha"), broker_client_id(a));
    cr_assert_eq(resolve_ok(b, "org.example/beta:2"), broker_client_id(a));
    cr_assert_eq(broker_resolve(b, "svc.nobody", &id), -ENOENT);
    cr_assert_eq(broker_resolve(b, "svc.alph", &id), -ENOENT, "prefix");

    /* Names are case-sensitive byte strings. */
    cr_assert_eq(broker_register(b, "SVC.ALPHA"), 0);
    cr_assert_eq(resolve_ok(a, "SVC.ALPHA"), broker_client_id(b));
    cr_assert_eq(resolve_ok(a, "svc.alpha"), broker_client_id(a));

    /* The longest valid name. */
    char longest[BK_MAX_NAME + 1];
    memset(longest, 'n', BK_MAX_NAME);
    longest[BK_MAX_NAME] = '\0';
    cr_assert_eq(broker_register(b, longest), 0);
    cr_assert_eq(resolve_ok(a, longest), broker_client_id(b));

    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

Test(names, conflict)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    int r;

    cr_assert_eq(broker_register(a, "svc.taken"), 0);
    cr_assert_eq(broker_register(b, "svc.taken"), -EEXIST);
    /* The owner registering it again is an error too, not a takeover. */
    r = broker_register(a, "svc.taken");
    cr_assert(r == -EALREADY || r == -EEXIST, "re-register by owner: %d", r);
    cr_assert_eq(resolve_ok(b, "svc.taken"), broker_client_id(a),
                 "the first owner keeps it");
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

Test(names, release_then_register_by_another)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    uint64_t id;
    broker_msg_t *m;

    cr_assert_eq(broker_register(a, "svc.moving"), 0);
    cr_assert_eq(broker_release(a, "svc.moving"), 0);
    cr_assert_eq(broker_resolve(b, "svc.moving", &id), -ENOENT);
    cr_assert_eq(broker_release(a, "svc.moving"), -ENOENT,
                 "second release");
    cr_assert_eq(broker_register(b, "svc.moving"), 0);
    cr_assert_eq(resolve_ok(a, "svc.moving"), broker_client_id(b));

    /* Messages to the name now reach the new owner. */
    cr_assert_eq(broker_send(a, "svc.moving", "to-b", 4, NULL, 0), 0);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 4);
    cr_assert_arr_eq(m->data, "to-b", 4);
    cr_assert_eq(m->source, broker_client_id(a));
    cr_assert_not_null(m->name);
    cr_assert_str_eq(m->name, "svc.moving");
    broker_msg_free(m);

    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

Test(names, release_not_owned)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);

    cr_assert_eq(broker_register(a, "svc.mine"), 0);
    cr_assert_eq(broker_release(b, "svc.mine"), -EPERM,
                 "release of a name another client owns");
    cr_assert_eq(broker_release(b, "svc.never"), -ENOENT,
                 "release of a name nobody owns");
    cr_assert_eq(resolve_ok(b, "svc.mine"), broker_client_id(a),
                 "failed release changed nothing");
    cr_assert_eq(broker_register(b, "svc.mine"), -EEXIST);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

Test(names, invalid_names)
{
    static const char *const bad[] = {
        "", ":reserved", ":", "a b", "tab\tname", "new\nline", "star*",
        "caf\xc3\xa9", "semi;colon", "back\\slash",
    };
    broker_t *a = th_connect(&br);
    char toolong[BK_MAX_NAME + 2];
    uint64_t id;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(broker_register(a, bad[i]), -EINVAL, "register '%s'",
                     bad[i]);
        cr_expect_eq(broker_release(a, bad[i]), -EINVAL, "release '%s'",
                     bad[i]);
        cr_expect_eq(broker_resolve(a, bad[i], &id), -EINVAL,
                     "resolve '%s'", bad[i]);
    }
    memset(toolong, 'x', BK_MAX_NAME + 1);
    toolong[BK_MAX_NAME + 1] = '\0';
    cr_expect_eq(broker_register(a, toolong), -EINVAL, "256-byte name");
    cr_expect_eq(broker_resolve(a, toolong, &id), -EINVAL);

    /* The connection is still fine afterwards. */
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    cr_assert_eq(broker_register(a, "ok.name"), 0);
    broker_close(a);
    th_broker_stop(&br);
}

Test(names, too_many_names)
{
    broker_t *a, *b;
    uint64_t id;

    th_broker_restart(&br, "--max-names", "3", NULL);
    a = th_connect(&br);
    b = th_connect(&br);
    cr_assert_eq(broker_register(a, "n.1"), 0);
    cr_assert_eq(broker_register(a, "n.2"), 0);
    cr_assert_eq(broker_register(a, "n.3"), 0);
    cr_assert_eq(broker_register(a, "n.4"), -ENOSR);
    cr_assert_eq(broker_resolve(b, "n.4", &id), -ENOENT);
    /* The limit is per client and a release frees a slot. */
    cr_assert_eq(broker_register(b, "n.4"), 0);
    cr_assert_eq(broker_release(a, "n.1"), 0);
    cr_assert_eq(broker_register(a, "n.5"), 0);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- release on disconnect --------------------------------------------- */

struct owner_arg {
    th_barrier_t ready;         /* owner -> test: names registered */
    th_barrier_t go;            /* test -> owner: leave now */
    bool orderly;               /* broker_close, else just _exit */
};

static int owner_main(void *p)
{
    struct owner_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m;

    th_register(b, "svc.owner.1");
    th_register(b, "svc.owner.2");
    th_register(b, "svc.owner.3");
    th_barrier_signal(&a->ready, broker_client_id(b));
    /* The test opens a stream to us; wait for its first message so the
     * stream exists at the broker before we leave. */
    m = th_recv_kind(b, BROKER_MSG_DATA);
    broker_msg_free(m);
    th_barrier_signal(&a->ready, 1);
    th_barrier_wait(&a->go);
    if (a->orderly)
        broker_close(b);
    _exit(0);       /* without close: the kernel closes the socket */
}

static void disconnect_releases(bool orderly)
{
    struct owner_arg arg = { .orderly = orderly };
    broker_t *t;
    uint64_t owner_id, id;
    uint32_t sid;
    broker_msg_t *m;
    pid_t pid;

    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.go);
    pid = th_spawn(owner_main, &arg);
    owner_id = th_barrier_wait(&arg.ready);
    t = th_connect(&br);
    cr_assert_eq(resolve_ok(t, "svc.owner.1"), owner_id);
    cr_assert_eq(resolve_ok(t, "svc.owner.3"), owner_id);

    cr_assert_eq(broker_stream_open(t, "svc.owner.2", 0, &sid), 0);
    cr_assert_eq(broker_stream_write(t, sid, "hi", 2, NULL, 0), 0);
    th_barrier_wait(&arg.ready);
    th_barrier_signal(&arg.go, 1);
    th_join(pid);

    /* The broker tells us when it has handled the disconnect. */
    m = th_recv_kind(t, BROKER_MSG_ERROR);
    cr_assert_eq(m->stream, sid);
    cr_assert_eq(m->code, -ECONNRESET, "code %d", m->code);
    broker_msg_free(m);

    for (int i = 1; i <= 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "svc.owner.%d", i);
        cr_assert_eq(broker_resolve(t, name, &id), -ENOENT,
                     "%s still owned after its owner left", name);
        cr_assert_eq(broker_register(t, name), 0, "%s not free", name);
    }
    cr_assert_eq(resolve_ok(t, "svc.owner.2"), broker_client_id(t));
    broker_close(t);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.go);
    th_broker_stop(&br);
}

Test(names, released_on_orderly_disconnect)
{
    disconnect_releases(true);
}

Test(names, released_when_owner_dies)
{
    disconnect_releases(false);
}

Test(names, ids_not_reused)
{
    uint64_t seen[20];

    for (int i = 0; i < 20; i++) {
        broker_t *b = th_connect(&br);
        seen[i] = broker_client_id(b);
        cr_assert_neq(seen[i], 0);
        for (int k = 0; k < i; k++)
            cr_assert_neq(seen[k], seen[i], "id %llu reused",
                          (unsigned long long)seen[i]);
        broker_close(b);
    }
    th_broker_stop(&br);
}
