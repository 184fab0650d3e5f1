/*
 * fault.c - allocation failures on demand, linked only into brokerd-fault,
 * the test build of brokerd (make check builds it; it is never installed).
 *
 * That program is linked with -Wl,--wrap=malloc,--wrap=calloc,
 * --wrap=realloc, so every allocation made by brokerd's own code (not by
 * libuv or the C library) comes here.  BROKERD_FAIL_EVERY=N in the
 * environment makes every N-th allocation fail with ENOMEM while failing
 * is on; SIGUSR2 turns failing on and off, so a test can let the broker
 * start and its clients connect, then run a message path through a heap
 * that keeps running out, then check that the broker recovers.  The
 * counter is per process; nothing here is thread-safe, and brokerd has
 * one thread.
 */
#include "config.h"
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

static volatile sig_atomic_t failing;
static unsigned long every, count;

static void on_usr2(int sig)
{
    (void)sig;
    failing = !failing;
}

__attribute__((constructor)) static void fault_init(void)
{
    const char *e = getenv("BROKERD_FAIL_EVERY");
    struct sigaction sa;

    every = e ? strtoul(e, NULL, 10) : 0;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
}

static int fail_now(void)
{
    if (!failing || !every || ++count % every)
        return 0;
    errno = ENOMEM;
    return 1;
}

void *__wrap_malloc(size_t size)
{
    return fail_now() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    return fail_now() ? NULL : __real_realloc(p, size);
}
