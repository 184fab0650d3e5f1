/*
 * log.h - brokerd-nats's log lines on stderr (prefix bn_log): one line per
 * event, "brokerd-nats: LEVEL: text"; systemd's journal takes stderr.
 */
#ifndef BN_LOG_H
#define BN_LOG_H

enum { BN_LOG_ERROR = 0, BN_LOG_WARN, BN_LOG_INFO, BN_LOG_DEBUG };

/* Lines above this level are not written (default BN_LOG_INFO). */
void bn_log_set_level(int level);
/* "error", "warn", "info", "debug" as a level, or -EINVAL. */
int bn_log_parse_level(const char *s);

void bn_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
