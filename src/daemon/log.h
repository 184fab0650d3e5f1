/*
 * log.h - levelled logging to stderr, the journal, syslog or a file
 * (prefix bk_log).
 *
 * Owns the process-wide log level and destination, and the log file's
 * FILE (opened by bk_log_set_file, closed by bk_log_close_file).
 *
 * Destinations, first match wins: the --log-file (a dated line each),
 * syslog (a daemon), the journal (stderr is the stream $JOURNAL_STREAM
 * names: each line starts with its syslog priority, "<6>", and carries
 * no timestamp, the journal has its own; see sd-daemon(3)), else stderr
 * ("HH:MM:SS.mmm brokerd[PID] LEVEL: text").
 */
#ifndef BK_LOG_H
#define BK_LOG_H

#include <stdbool.h>

enum bk_log_level {
    BK_LOG_ERROR = 0,
    BK_LOG_WARN = 1,
    BK_LOG_INFO = 2,
    BK_LOG_DEBUG = 3,
};

/* Parse "error", "warn", "info" or "debug"; returns the level or -EINVAL. */
int bk_log_parse_level(const char *s);
/* Set the level and choose syslog (use_syslog) or stderr; stderr counts as
 * the journal when it is the stream $JOURNAL_STREAM names. */
void bk_log_init(int level, int use_syslog);
/* Log to the file at `path` (appending) instead of syslog or stderr, or
 * reopen it (after a rotation).  Returns 0 or a negative errno; on error
 * the previous destination stays. */
int bk_log_set_file(const char *path);
void bk_log_close_file(void);
/* The level set by bk_log_init; read it through bk_log_enabled. */
extern int bk_log_level_;
/* Inline: the frame trace asks for every frame. */
static inline int bk_log_enabled(int level)
{
    return level <= bk_log_level_;
}
/* True when lines go to the journal (stderr is $JOURNAL_STREAM). */
bool bk_log_to_journal(void);
void bk_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define bk_err(...)   bk_log(BK_LOG_ERROR, __VA_ARGS__)
#define bk_warn(...)  bk_log(BK_LOG_WARN, __VA_ARGS__)
#define bk_info(...)  bk_log(BK_LOG_INFO, __VA_ARGS__)
#define bk_debug(...) \
    do { if (bk_log_enabled(BK_LOG_DEBUG)) bk_log(BK_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
