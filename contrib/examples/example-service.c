/*
 * example-service.c - a minimal libbroker service.
 *
 * Registers a name (default "example.greeter") and answers every request
 * with "hello, " followed by the request's bytes.  Ends cleanly on SIGTERM
 * or SIGINT, or when the broker shuts down.  Prints "ready" once the name
 * is registered.
 *
 *   cc -o example-service example-service.c $(pkg-config --cflags --libs libbroker)
 *   ./example-service [NAME]          (socket: $BROKER_SOCKET or the default)
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <broker.h>

#define GREETING "hello, "

/* Answer one message; a one-way message (no reply expected) is ignored. */
static int handle(broker_t *b, const broker_msg_t *msg)
{
    size_t len = strlen(GREETING) + msg->len;
    char *reply;
    int r;

    if (!broker_msg_is_request(msg))
        return 0;
    reply = malloc(len);
    if (!reply)
        return -ENOMEM;
    memcpy(reply, GREETING, strlen(GREETING));
    memcpy(reply + strlen(GREETING), msg->data, msg->len);
    r = broker_reply(b, msg, reply, len, NULL, 0);
    free(reply);
    return r;
}

/* Handle every message the library can hand out without waiting. */
static int drain(broker_t *b)
{
    for (;;) {
        broker_msg_t *msg;
        int r = broker_recv(b, &msg, 0);

        if (r == -ETIMEDOUT)
            return 0;
        if (r < 0)
            return r;
        r = handle(b, msg);
        broker_msg_free(msg);
        if (r < 0)
            fprintf(stderr, "example-service: reply: %s\n",
                    broker_strerror(r));
    }
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
    const char *name = argc > 1 ? argv[1] : "example.greeter";
    broker_t *b;
    int sfd, r;

    sfd = signal_fd();
    if (sfd < 0) {
        perror("example-service: signalfd");
        return 1;
    }
    r = broker_connect(NULL, &b);
    if (r < 0) {
        fprintf(stderr, "example-service: connect: %s\n", broker_strerror(r));
        return 1;
    }
    r = broker_register(b, name);
    if (r < 0) {
        fprintf(stderr, "example-service: register %s: %s\n", name,
                broker_strerror(r));
        broker_close(b);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    for (;;) {
        struct pollfd p[2] = {
            { .fd = broker_fd(b), .events = POLLIN },
            { .fd = sfd, .events = POLLIN },
        };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("example-service: poll");
            r = -errno;
            break;
        }
        if (p[1].revents) {
            r = 0;              /* asked to stop */
            break;
        }
        r = drain(b);
        if (r < 0) {
            /* The broker went away: not an error for a service. */
            if (r == -ESHUTDOWN || r == -ECONNRESET)
                r = 0;
            else
                fprintf(stderr, "example-service: %s\n", broker_strerror(r));
            break;
        }
    }
    broker_close(b);
    return r < 0 ? 1 : 0;
}
