/*
 * example-subscriber.c - a minimal libbroker subscriber.
 *
 * Subscribes to a topic pattern (default "example.>") and prints one line
 * "TOPIC: DATA" per message published on a matching topic, and
 * "missed N" when the broker had to drop messages because this program
 * fell behind.  Prints "ready" once subscribed.  Exits 0 after COUNT
 * messages if COUNT (1 or more) is given, else on SIGTERM or SIGINT, or when the
 * broker shuts down.
 *
 *   cc -o example-subscriber example-subscriber.c \
 *      $(pkg-config --cflags --libs libbroker)
 *   ./example-subscriber [PATTERN [COUNT]]  (socket: $BROKER_SOCKET or the
 *                                            default)
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <broker.h>

/* Print one message or event; returns 1 for a publication, else 0. */
static int show(const broker_msg_t *m)
{
    if (m->kind == BROKER_MSG_GAP) {
        printf("missed %llu\n", (unsigned long long)m->gap);
        return 0;
    }
    if (m->kind != BROKER_MSG_DATA || !(m->flags & BROKER_MSGF_TOPIC))
        return 0;
    printf("%s: %.*s\n", m->topic, (int)m->len, (const char *)m->data);
    return 1;
}

/* Handle what the library can hand out without waiting; counts the
 * publications in *seen.  0 or a negative errno. */
static int drain(broker_t *b, long *seen, long count)
{
    while (count == 0 || *seen < count) {
        broker_msg_t *m;
        int r = broker_recv(b, &m, 0);

        if (r == -ETIMEDOUT)
            break;
        if (r < 0)
            return r;
        *seen += show(m);
        broker_msg_free(m);
    }
    fflush(stdout);
    return 0;
}

/* SIGTERM and SIGINT arrive as readable data on the returned fd. */
static int signal_fd(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -1;
    return signalfd(-1, &set, SFD_CLOEXEC);
}

int main(int argc, char **argv)
{
    const char *pattern = argc > 1 ? argv[1] : "example.>";
    long count = 0, seen = 0;
    char *end = NULL;
    uint32_t id;
    broker_t *b;
    int sfd, r;

    if (argc > 2)
        count = strtol(argv[2], &end, 10);
    if (argc > 2 && (end == argv[2] || *end || count < 1)) {
        fprintf(stderr, "example-subscriber: bad COUNT '%s'\n", argv[2]);
        return 1;
    }
    sfd = signal_fd();
    if (sfd < 0) {
        perror("example-subscriber: signalfd");
        return 1;
    }
    r = broker_connect(NULL, &b);
    if (r < 0) {
        fprintf(stderr, "example-subscriber: connect: %s\n",
                broker_strerror(r));
        return 1;
    }
    r = broker_subscribe(b, pattern, NULL, BROKER_SUB_DROP, &id);
    if (r < 0) {
        fprintf(stderr, "example-subscriber: subscribe %s: %s\n", pattern,
                broker_strerror(r));
        broker_close(b);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    while (count == 0 || seen < count) {
        struct pollfd p[2] = {
            { .fd = broker_fd(b), .events = POLLIN },
            { .fd = sfd, .events = POLLIN },
        };
        /* the library may hold messages already: look before sleeping */
        r = drain(b, &seen, count);
        if (r < 0 || (count && seen >= count))
            break;
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("example-subscriber: poll");
            r = -errno;
            break;
        }
        if (p[1].revents)
            break;              /* asked to stop */
    }
    if (r == -ESHUTDOWN || r == -ECONNRESET)
        r = 0;                  /* the broker went away: not our error */
    else if (r < 0)
        fprintf(stderr, "example-subscriber: %s\n", broker_strerror(r));
    broker_close(b);
    return r < 0 ? 1 : 0;
}
