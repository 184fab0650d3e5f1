/*
 * log.c - levelled logging to stderr, the journal, syslog or a file.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

int bk_log_level_ = BK_LOG_INFO;
static int log_syslog;
static bool log_journal;         /* stderr is $JOURNAL_STREAM */
static FILE *log_file;           /* takes precedence over syslog/stderr */

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

/* $JOURNAL_STREAM is "DEV:INODE" of the stream the service manager
 * connected to stdout/stderr; it is inherited by children that may have
 * other stderr, so it counts only if it names our fd 2. */
static bool stderr_is_journal(void)
{
    const char *env = getenv("JOURNAL_STREAM");
    uintmax_t dev, ino;
    struct stat st;
    int used = 0;

    if (!env || sscanf(env, "%ju:%ju%n", &dev, &ino, &used) != 2 ||
        env[used] != '\0' || fstat(2, &st) < 0)
        return false;
    return (uintmax_t)st.st_dev == dev && (uintmax_t)st.st_ino == ino;
}

void bk_log_init(int level, int use_syslog)
{
    bk_log_level_ = level;
    log_syslog = use_syslog;
    log_journal = !use_syslog && stderr_is_journal();
    if (use_syslog)
        openlog("brokerd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

int bk_log_set_file(const char *path)
{
    FILE *f = fopen(path, "ae");

    if (!f)
        return -errno;
    setvbuf(f, NULL, _IOLBF, 0);
    if (log_file)
        fclose(log_file);
    log_file = f;
    return 0;
}

void bk_log_close_file(void)
{
    if (log_file)
        fclose(log_file);
    log_file = NULL;
}

bool bk_log_to_journal(void)
{
    return log_journal && !log_file;
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
    if (log_syslog && !log_file) {
        syslog(prio[level], "%s", msg);
        return;
    }
    if (bk_log_to_journal()) {  /* sd-daemon(3): "<N>" and the text */
        fprintf(stderr, "<%d>%s\n", prio[level], msg);
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    if (log_file)               /* a file outlives the day: full date */
        fprintf(log_file, "%04d-%02d-%02d ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday);
    fprintf(log_file ? log_file : stderr,
            "%02d:%02d:%02d.%03ld brokerd[%d] %s: %s\n", tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(),
            level_names[level], msg);
}
