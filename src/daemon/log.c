/*
 * log.c - levelled logging to stderr or syslog.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

static int log_level = BK_LOG_INFO;
static int log_syslog;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int bk_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, level_names[i]))
            return i;
    if (!strcmp(s, "warning"))
        return BK_LOG_WARN;
    return -EINVAL;
}

void bk_log_init(int level, int use_syslog)
{
    log_level = level;
    log_syslog = use_syslog;
    if (use_syslog)
        openlog("brokerd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

int bk_log_enabled(int level)
{
    return level <= log_level;
}

void bk_log(int level, const char *fmt, ...)
{
    static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
    char msg[1024];
    va_list ap;

    if (!bk_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (log_syslog) {
        syslog(prio[level], "%s", msg);
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld brokerd[%d] %s: %s\n", tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(),
            level_names[level], msg);
}
