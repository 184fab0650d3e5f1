/*
 * error.h - the one error convention of brokerd, libbroker and brokerctl.
 *
 * Every function that can fail returns an int (or ssize_t) read this way:
 *
 *   r < 0   a failure: a negative errno value (-ENOMEM, -EPROTO, ...).
 *           Callers propagate it or act on it; they never flip its sign,
 *           and a function never returns a positive errno to mean failure.
 *   r == 0  success.
 *   r > 0   an expected outcome the caller must handle, or a count.  Such
 *           values are documented at the function that returns them, as
 *           named constants of its module (BK_SHM_QUOTA, say) or as "the
 *           number of bytes/frames/...".  They are never errno values.
 *
 * Functions that take an error take it the same way: a negative errno
 * (bk_port_fail(p, -EPROTO), protocol_error(p, -EINVAL, ...)), or 0 for
 * "no error" where the function says so.
 *
 * The wire is the one place errno values are positive: ERROR frames and
 * CTRL_REPLY codes carry a positive errno in the header's aux field
 * (broker-protocol(7)).  Convert only where a frame is built or read,
 * with bk_err_to_wire() and bk_err_from_wire().
 *
 * broker_strerror() (error.c, public in broker.h) words an error for a
 * person; it accepts either sign so that a wire code can be shown as is.
 * bk_sys_strerror() words a system call's failure the same way.
 */
#ifndef BK_ERROR_H
#define BK_ERROR_H

#include <stdint.h>

/* A negative errno (or 0) as the aux field of an ERROR / CTRL_REPLY. */
static inline uint32_t bk_err_to_wire(int err)
{
    return err < 0 ? (uint32_t)-err : 0u;
}

/* A wire code as a negative errno (0 stays 0).  A peer may send any
 * 32-bit code: one too large for an int is clamped to -INT32_MAX, so the
 * result is always negative and never overflows. */
static inline int bk_err_from_wire(uint32_t code)
{
    return code > (uint32_t)INT32_MAX ? -INT32_MAX : -(int)code;
}

const char *broker_strerror(int err);

/* The C library's text for an errno of either sign, in lower case like
 * the rest of our messages: for failures of system calls, where
 * broker_strerror's broker meanings ("no such name, client or stream" for
 * ENOENT) would mislead.  The text lives in a thread-local buffer until
 * the thread's next call. */
const char *bk_sys_strerror(int err);

#endif
