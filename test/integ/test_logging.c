/*
 * test_logging.c - what brokerd writes to its log: syslog priorities and
 * no timestamp when stderr is the journal ($JOURNAL_STREAM), no lines at
 * info for clients that come and go without a name, one line per client
 * and kind of refusal, the frame trace at debug, and SIGHUP without -c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <criterion/criterion.h>
#include "harness.h"

static th_broker_t br;

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(logging, .fini = teardown, .timeout = 180);

/* How many times needle occurs in text. */
static unsigned count_of(const char *text, const char *needle)
{
    unsigned n = 0;

    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static unsigned count_lines(const char *text)
{
    return count_of(text, "\n");
}

/* The log of the stopped broker (br.log is gone after th_broker_stop). */
static char *stop_and_read_log(void)
{
    char *log;
    size_t len;
    int st = th_broker_signal_wait(&br, SIGTERM);

    log = th_read_file(br.log, &len);
    if (!TH_EXITED(st, 0)) {
        th_broker_dump_log(&br);
        cr_assert_fail("brokerd did not exit 0 on SIGTERM: 0x%x", st);
    }
    th_broker_cleanup(&br);
    return log;
}

/* ---- the journal ------------------------------------------------------------ */

/* Start brokerd (ARGS: NULL-terminated extra arguments) with its output
 * in br.log and JOURNAL_STREAM naming `stream`'s device and inode. */
static void start_with_journal_stream(const char *stream, const char **args)
{
    static char env[64];
    struct stat st;
    int fd, status;

    memset(&br, 0, sizeof(br));
    strcpy(br.dir, "/tmp/bkt-XXXXXX");
    cr_assert_not_null(mkdtemp(br.dir));
    snprintf(br.sock, sizeof(br.sock), "%s/sock", br.dir);
    snprintf(br.log, sizeof(br.log), "%s/brokerd.log", br.dir);
    fd = open(br.log, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0, "%s: %s", br.log, strerror(errno));
    close(fd);
    if (!stream)
        stream = br.log;
    cr_assert_eq(stat(stream, &st), 0, "%s: %s", stream, strerror(errno));
    snprintf(env, sizeof(env), "JOURNAL_STREAM=%llu:%llu",
             (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    br.env[0] = env;
    br.pid = th_brokerd_spawn(br.sock, br.log, br.env, args);
    if (th_wait_listening(br.sock, br.pid, &status) < 0) {
        br.pid = 0;
        th_broker_dump_log(&br);
        cr_assert_fail("brokerd exited at start: 0x%x", status);
    }
}

/* Every line is "<N>text" with N a syslog priority, no timestamp and no
 * "brokerd[PID]" (the journal records both). */
static void assert_journal_lines(const char *log)
{
    const char *line = log;

    cr_assert(*log, "nothing logged");
    while (*line) {
        const char *end = strchr(line, '\n');
        int len = end ? (int)(end - line) : (int)strlen(line);

        cr_assert(len >= 4 && line[0] == '<' && line[1] >= '0' &&
                  line[1] <= '7' && line[2] == '>',
                  "not a journal line: '%.*s'", len, line);
        cr_assert(!memmem(line, (size_t)len, "brokerd[", 8),
                  "pid prefix in '%.*s'", len, line);
        cr_assert(!(line[5] == ':' && line[8] == ':'),
                  "timestamp in '%.*s'", len, line);
        if (!end)
            break;
        line = end + 1;
    }
}

Test(logging, journal_stream_gets_priorities_without_timestamps)
{
    const char *args[] = { "--max-names", "1", NULL };
    broker_t *b;
    char *log, want[160];
    uint64_t id;

    start_with_journal_stream(NULL, args);
    b = th_connect(&br);
    id = broker_client_id(b);
    th_register(b, "svc.one");
    cr_assert_eq(broker_register(b, "svc.two"), -ENOSR);
    broker_close(b);
    log = stop_and_read_log();
    assert_journal_lines(log);
    cr_assert(strstr(log, "<6>listening on ") == log ||
              strstr(log, "\n<6>listening on "), "%s", log);
    snprintf(want, sizeof(want), "\n<6>client %llu (",
             (unsigned long long)id);
    cr_assert(strstr(log, want), "no info line about the client in:\n%s",
              log);
    snprintf(want, sizeof(want), "\n<4>client %llu (pid ",
             (unsigned long long)id);
    cr_assert(strstr(log, want), "no warning in:\n%s", log);
    cr_assert(strstr(log, "\n<6>stopped\n"), "%s", log);
    free(log);
}

Test(logging, journal_stream_of_another_file_keeps_timestamps)
{
    char other[] = "/tmp/bk-journal-XXXXXX";
    int fd = mkstemp(other);
    char *log;

    cr_assert_geq(fd, 0);
    close(fd);
    start_with_journal_stream(other, NULL);
    log = stop_and_read_log();
    unlink(other);
    cr_assert(!strchr("<", log[0]), "journal format on a plain stderr:\n%s",
              log);
    cr_assert(strstr(log, " brokerd[") && strstr(log, "] info: listening on "),
              "%s", log);
    free(log);
}

/* ---- what info shows ------------------------------------------------------- */

Test(logging, send_loop_at_info_logs_no_line_per_connection)
{
    size_t n = th_scaled(200, 20);
    broker_t *svc, *b;
    char *log, want[160];
    uint64_t svc_id;

    th_broker_start(&br, NULL);
    svc = th_connect(&br);
    svc_id = broker_client_id(svc);
    th_register(svc, "svc.sink");
    for (size_t i = 0; i < n; i++) {
        b = th_connect(&br);
        TH_OK(broker_send(b, "svc.sink", "hello", 5, NULL, 0));
        TH_OK(broker_flush(b, TH_HANG_MS));
        broker_close(b);
        broker_msg_free(th_recv(svc));
    }
    broker_close(svc);
    log = stop_and_read_log();
    /* start-up (2), owning the name, its owner's disconnect, the signal,
     * stopped: nothing from the n senders. */
    cr_assert_leq(count_lines(log), 8, "%zu connections logged %u lines:\n%s",
                  n, count_lines(log), log);
    cr_assert_eq(count_of(log, " connected ("), 0, "%s", log);
    snprintf(want, sizeof(want), "info: client %llu (pid %d, uid %d, "
             "test_logging) owns 'svc.sink'\n", (unsigned long long)svc_id,
             (int)getpid(), (int)getuid());
    cr_assert(strstr(log, want), "no '%s' in:\n%s", want, log);
    snprintf(want, sizeof(want), "info: client %llu (pid ",
             (unsigned long long)svc_id);
    cr_assert(strstr(log, want) && strstr(log, ") disconnected\n"),
              "the name owner's disconnect is not at info:\n%s", log);
    cr_assert_eq(count_of(log, "disconnected"), 1, "%s", log);
    free(log);
}

/* ---- refusals: once per client and kind ------------------------------------ */

Test(logging, quota_hits_are_logged_once_per_client_and_kind)
{
    broker_t *b, *c;
    char *log, want[128];
    uint64_t bid, cid;
    uint32_t sub;

    th_broker_start(&br, "--max-names", "1", "--max-subscriptions", "1",
                    NULL);
    b = th_connect(&br);
    c = th_connect(&br);
    bid = broker_client_id(b);
    cid = broker_client_id(c);
    th_register(b, "svc.a");
    for (int i = 0; i < 5; i++)
        cr_assert_eq(broker_register(b, "svc.more"), -ENOSR);
    TH_OK(broker_subscribe(b, "t.one", NULL, BROKER_SUB_DROP, &sub));
    for (int i = 0; i < 3; i++)
        cr_assert_eq(broker_subscribe(b, "t.two", NULL, BROKER_SUB_DROP,
                                      &sub), -ENOSR);
    th_register(c, "svc.c");
    cr_assert_eq(broker_register(c, "svc.more"), -ENOSR);
    broker_close(c);
    broker_close(b);
    log = stop_and_read_log();
    snprintf(want, sizeof(want), "warn: client %llu (pid %d, uid %d, ",
             (unsigned long long)bid, (int)getpid(), (int)getuid());
    cr_assert_eq(count_of(log, want), 2, "want 2 lines '%s...' in:\n%s",
                 want, log);
    cr_assert_eq(count_of(log, "max-names reached (1 names owned or "
                          "waited for) (logged once per client)"), 2,
                 "one for each client:\n%s", log);
    cr_assert_eq(count_of(log, "max-subscriptions reached"), 1, "%s", log);
    snprintf(want, sizeof(want), "warn: client %llu (pid ",
             (unsigned long long)cid);
    cr_assert(strstr(log, want), "%s", log);
    free(log);
}

/* ---- debug: the frame trace ------------------------------------------------ */

Test(logging, debug_traces_every_frame)
{
    broker_t *svc, *b;
    broker_msg_t *m;
    char *log, want[160];
    uint64_t sid, bid;

    th_broker_start(&br, "--log-level", "debug", NULL);
    svc = th_connect(&br);
    b = th_connect(&br);
    sid = broker_client_id(svc);
    bid = broker_client_id(b);
    th_register(svc, "svc.trace");
    TH_OK(broker_send(b, "svc.trace", "hello", 5, NULL, 0));
    m = th_recv(svc);
    broker_msg_free(m);
    broker_close(b);
    broker_close(svc);
    log = stop_and_read_log();
    snprintf(want, sizeof(want), "debug: frame from client %llu (",
             (unsigned long long)bid);
    cr_assert(strstr(log, want), "no '%s' in:\n%s", want, log);
    snprintf(want, sizeof(want), "): DATA OPEN,CLOSE,NAME %llu->'svc.trace' "
             "stream=0x1 size=5 fds=0\n", (unsigned long long)bid);
    cr_assert_eq(count_of(log, want), 1, "no '%s' in:\n%s", want, log);
    /* the receiver's end of the stream has the broker's id for it */
    snprintf(want, sizeof(want), "debug: frame to client %llu (",
             (unsigned long long)sid);
    cr_assert(strstr(log, want), "no '%s' in:\n%s", want, log);
    snprintf(want, sizeof(want), "): DATA OPEN,CLOSE,NAME %llu->'svc.trace' "
             "stream=0x80000001 size=5 fds=0\n", (unsigned long long)bid);
    cr_assert_eq(count_of(log, want), 1, "no '%s' in:\n%s", want, log);
    cr_assert(strstr(log, "): CTRL - "), "%s", log);
    cr_assert(strstr(log, " op=2\n"), "REGISTER is op 2:\n%s", log);
    snprintf(want, sizeof(want), "debug: client %llu connected (pid ",
             (unsigned long long)bid);
    cr_assert(strstr(log, want), "%s", log);
    free(log);
}

/* ---- SIGHUP ---------------------------------------------------------------- */

static bool says_nothing_to_reload(const char *log, size_t len)
{
    (void)len;
    return strstr(log, "SIGHUP: started without a configuration file (-c), "
                  "nothing to reload\n") != NULL;
}

Test(logging, sighup_without_config_file_is_not_a_failure)
{
    broker_t *b;
    size_t len;
    char *log;

    th_broker_start(&br, NULL);
    cr_assert_eq(kill(br.pid, SIGHUP), 0);
    free(th_await_file(br.log, says_nothing_to_reload, &len));
    b = th_connect(&br);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    log = stop_and_read_log();
    cr_assert(!strstr(log, "reload failed"), "%s", log);
    cr_assert(!strstr(log, "error:"), "%s", log);
    free(log);
}
