/*
 * example-publisher.c - publish messages with libbroker.
 *
 * Publishes each TEXT argument, in order, as one message on TOPIC
 * (default "example.greeting", text "hello").  Nobody subscribed is not an
 * error: the messages just reach nobody.  Exits 0 once the broker has
 * taken them all, 1 on any error (a bad topic, a refused publication).
 *
 *   cc -o example-publisher example-publisher.c \
 *      $(pkg-config --cflags --libs libbroker)
 *   ./example-publisher [TOPIC [TEXT...]]   (socket: $BROKER_SOCKET or the
 *                                            default)
 */
#include <stdio.h>
#include <string.h>
#include <broker.h>

/* A publication gets no answer; the broker reports a refusal as an ERROR
 * event on its stream, which a ping round trip makes sure has arrived. */
static int refused(broker_t *b)
{
    broker_msg_t *m;
    int r = broker_ping(b, 5000);

    while (r == 0 && broker_recv(b, &m, 0) == 0) {
        if (m->kind == BROKER_MSG_ERROR)
            r = m->code;
        broker_msg_free(m);
    }
    return r;
}

int main(int argc, char **argv)
{
    const char *topic = argc > 1 ? argv[1] : "example.greeting";
    const char *hello[] = { "hello" };
    const char *const *texts = argc > 2 ? (const char *const *)argv + 2
                                        : hello;
    int ntexts = argc > 2 ? argc - 2 : 1;
    broker_t *b;
    int r;

    r = broker_connect(NULL, &b);
    if (r < 0) {
        fprintf(stderr, "example-publisher: connect: %s\n",
                broker_strerror(r));
        return 1;
    }
    for (int i = 0; i < ntexts && r == 0; i++)
        r = broker_publish(b, topic, texts[i], strlen(texts[i]), NULL, 0);
    if (r == 0)
        r = refused(b);
    if (r < 0)
        fprintf(stderr, "example-publisher: publish %s: %s\n", topic,
                broker_strerror(r));
    broker_close(b);
    return r < 0 ? 1 : 0;
}
