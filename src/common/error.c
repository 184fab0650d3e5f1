/*
 * error.c - broker_strerror(): error codes as the broker means them;
 * bk_sys_strerror(): a system call's failure in the same lower case.
 *
 * Part of libbkcommon so brokerd, brokerctl and libbroker share the same
 * wording, every text in lower case (the C library's too); exported from libbroker (which is built with hidden visibility).
 */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BK_EXPORT __attribute__((visibility("default")))

const char *broker_strerror(int err);

static const char *known(int e)
{
    switch (e) {
    case 0:               return "success";
    case ENOENT:          return "no such name, client or stream";
    case EEXIST:          return "name already owned or stream id in use";
    case EINVAL:          return "invalid argument or name";
    case EPROTO:          return "protocol violation";
    case EMSGSIZE:        return "message too large";
    case ECONNRESET:      return "peer disconnected";
    case EPERM:           return "not the owner of this name";
    case ENOSR:           return "too many streams or names";
    case EPROTONOSUPPORT: return "protocol version not supported";
    case ESHUTDOWN:       return "broker is shutting down";
    case ETIMEDOUT:       return "timed out";
    case ENOBUFS:         return "too many partial messages or queue full";
    case ENOMEM:          return "out of memory";
    case EBUSY:           return "not allowed while attached to an event loop";
    case ENODATA:         return "stream closed without a reply";
    case ECANCELED:       return "cancelled: connection closed";
    case ECONNREFUSED:    return "no broker is listening on the socket";
    case ENAMETOOLONG:    return "socket path too long";
    case EPIPE:           return "connection to the broker lost";
    case EACCES:          return "permission denied";
    default:              return NULL;
    }
}

/* The C library's text for e in buf, in lower case. */
static const char *sys_text(int e, char *buf, size_t len)
{
    const char *sys = strerror_r(e, buf, len);

    if (sys != buf)
        snprintf(buf, len, "%s", sys);
    /* the C library capitalises ("Bad file descriptor"); our texts and
     * the lines they end up in do not */
    if (isupper((unsigned char)buf[0]) && islower((unsigned char)buf[1]))
        buf[0] = (char)tolower((unsigned char)buf[0]);
    return buf;
}

static int abs_err(int err)
{
    return err == INT_MIN ? INT_MAX : (err < 0 ? -err : err);
}

const char *bk_sys_strerror(int err)
{
    static _Thread_local char buf[96];

    return sys_text(abs_err(err), buf, sizeof(buf));
}

BK_EXPORT const char *broker_strerror(int err)
{
    static _Thread_local char buf[96];
    int e = abs_err(err);
    const char *s = known(e);

    if (s)
        return s;
    return sys_text(e, buf, sizeof(buf));
}
