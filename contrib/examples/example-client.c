/*
 * example-client.c - call a libbroker service and print its reply.
 *
 *   cc -o example-client example-client.c $(pkg-config --cflags --libs libbroker)
 *   ./example-client [NAME [TEXT]]    (socket: $BROKER_SOCKET or the default)
 *
 * NAME defaults to "example.greeter", TEXT to "world".  Exits 0 after
 * printing the reply, 1 on any error.
 */
#include <stdio.h>
#include <string.h>
#include <broker.h>

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "example.greeter";
    const char *text = argc > 2 ? argv[2] : "world";
    broker_msg_t *reply;
    broker_t *b;
    int r;

    r = broker_connect(NULL, &b);
    if (r < 0) {
        fprintf(stderr, "example-client: connect: %s\n", broker_strerror(r));
        return 1;
    }
    r = broker_call(b, name, text, strlen(text), &reply, 5000);
    if (r < 0) {
        fprintf(stderr, "example-client: call %s: %s\n", name,
                broker_strerror(r));
        broker_close(b);
        return 1;
    }
    printf("%.*s\n", (int)reply->len, (const char *)reply->data);
    broker_msg_free(reply);
    broker_close(b);
    return 0;
}
