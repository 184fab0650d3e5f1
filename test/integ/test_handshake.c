/*
 * test_handshake.c - the handshake timeout: a connection that sends no
 * HELLO is closed with ERROR ETIMEDOUT, frees its slot against
 * max-clients and its fd; a client that said HELLO is never affected.
 * Nothing here times anything: each test waits for the broker's own
 * answer (the ERROR and EOF), hang-guarded.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "harness.h"

static th_broker_t br;

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(handshake, .fini = teardown, .timeout = 120);

/* fd sent nothing: the broker answers ERROR code `want` and closes. */
static void expect_closed_with(int fd, uint32_t want)
{
    uint32_t aux;
    int nerr, n = th_raw_drain_to_eof(fd, &aux, &nerr);

    cr_assert_eq(n, 1, "%d packets before EOF", n);
    cr_assert_eq(nerr, 1, "%d ERROR frames", nerr);
    cr_assert_eq(aux, want, "ERROR code %u, want %u", aux, want);
}

Test(handshake, silent_connection_is_closed_with_etimedout)
{
    int fd;

    th_broker_start(&br, "--handshake-timeout", "100", NULL);
    fd = th_raw_connect(br.sock);
    cr_assert_geq(fd, 0);
    expect_closed_with(fd, ETIMEDOUT);
    close(fd);
    th_broker_stop(&br);
}

/* A client that completed its HELLO before a silent connection was
 * accepted has been connected longer than the timeout once that one is
 * closed, and still works. */
Test(handshake, clients_past_the_hello_are_kept)
{
    broker_t *b;
    int fd;

    /* long enough for th_connect's HELLO under valgrind */
    th_broker_start(&br, "--handshake-timeout", "1000", NULL);
    b = th_connect(&br);
    th_register(b, "svc.kept");
    fd = th_raw_connect(br.sock);
    cr_assert_geq(fd, 0);
    expect_closed_with(fd, ETIMEDOUT);
    close(fd);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    cr_assert_eq(broker_send(b, "svc.kept", "x", 1, NULL, 0), 0);
    broker_close(b);
    th_broker_stop(&br);
}

/* Connections that never say HELLO hold every slot of max-clients until
 * the timeout frees them (those past the limit are refused at accept with
 * ENOSR); then a client gets in, and the broker's fds come back. */
Test(handshake, silent_connections_free_max_clients)
{
    enum { MAX = 20, N = 25 };
    int fds[N], baseline, timed_out = 0, refused = 0;
    broker_t *b;

    th_broker_start(&br, "--handshake-timeout", "200", "--max-clients",
                    "20", NULL);
    baseline = th_fd_count(br.pid);
    for (int i = 0; i < N; i++) {
        fds[i] = th_raw_connect(br.sock);
        cr_assert_geq(fds[i], 0);
    }
    for (int i = 0; i < N; i++) {
        uint32_t aux;
        int nerr, n = th_raw_drain_to_eof(fds[i], &aux, &nerr);

        cr_assert(n == 1 && nerr == 1, "connection %d: %d packets, %d "
                  "ERROR frames", i, n, nerr);
        cr_assert(aux == ETIMEDOUT || aux == ENOSR, "ERROR code %u", aux);
        timed_out += aux == ETIMEDOUT;
        refused += aux == ENOSR;
        close(fds[i]);
    }
    /* the start-up check's connection may have held one slot */
    cr_assert_geq(refused, N - MAX, "%d refused at accept", refused);
    cr_assert_geq(timed_out, MAX - 1, "%d timed out", timed_out);
    b = th_connect(&br);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    /* at most the baseline: the start-up check's connection may have been
     * open when it was taken */
    for (unsigned us = 500; th_fd_count(br.pid) > baseline; th_nap(&us))
        ;
    th_broker_stop(&br);
}

/* Out of range or not a number: brokerd says so and exits 2. */
Test(handshake, bad_values_are_usage_errors)
{
    const char *const bad[] = { "0", "9", "3600001", "x", "-5" };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *argv[] = { th_brokerd_path(), "-f", "-s", "/nonexistent/s",
                               "--handshake-timeout", bad[i], NULL };
        th_output_t o;
        int st = th_run(argv, NULL, NULL, 0, &o);

        cr_assert(TH_EXITED(st, 2), "--handshake-timeout %s: 0x%x", bad[i],
                  st);
        cr_assert(strstr(o.err, "--handshake-timeout") != NULL, "%s", o.err);
        th_output_free(&o);
    }
}
