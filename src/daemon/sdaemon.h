/*
 * sdaemon.h - the service manager's side channels, without libsystemd
 * (prefix bk_sd_): a listening socket passed in by socket activation
 * ($LISTEN_PID, $LISTEN_FDS) and state notifications ($NOTIFY_SOCKET).
 *
 * Owns nothing: the listening fd it returns is the caller's, and the
 * notification socket lives only for one bk_sd_notify call.
 */
#ifndef BK_SDAEMON_H
#define BK_SDAEMON_H

#include <stddef.h>

/* First fd a service manager passes (after stdin, stdout, stderr). */
#define BK_SD_LISTEN_FDS_START 3

/* Take the listening socket passed by socket activation.  Returns the fd
 * (BK_SD_LISTEN_FDS_START, now O_NONBLOCK and FD_CLOEXEC) with its bound
 * address written to path ("@name" for an abstract address), 0 when no
 * socket was passed to this process, or a negative errno after logging
 * why the passed fd cannot be used.  Removes LISTEN_PID, LISTEN_FDS and
 * LISTEN_FDNAMES from the environment whenever LISTEN_PID is set. */
int bk_sd_listen_fd(char *path, size_t len);

/* bk_sd_notify's expected outcome: the state was sent. */
#define BK_SD_NOTIFIED 1

/* Send a state string ("READY=1\nMAINPID=...", "STOPPING=1") to
 * $NOTIFY_SOCKET.  Returns BK_SD_NOTIFIED if sent, 0 when $NOTIFY_SOCKET
 * is unset, or a negative errno (logged as a warning). */
int bk_sd_notify(const char *state);

/* "READY=1" with this process as MAINPID. */
int bk_sd_notify_ready(void);

#endif
