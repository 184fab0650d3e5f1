/*
 * log.c - log lines on stderr (see log.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "log.h"

static int bn_log_level = BN_LOG_INFO;
static const char *const bn_log_names[] = { "error", "warn", "info",
                                            "debug" };

void bn_log_set_level(int level)
{
    bn_log_level = level;
}

int bn_log_parse_level(const char *s)
{
    for (int i = 0; i <= BN_LOG_DEBUG; i++)
        if (!strcmp(s, bn_log_names[i]))
            return i;
    return -EINVAL;
}

void bn_log(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (level > bn_log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "brokerd-nats: %s: %s\n", bn_log_names[level], line);
}
