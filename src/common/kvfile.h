/*
 * kvfile.h - the `key = value` settings files of brokerd and brokerd-nats
 * (prefix bk_kv_).
 *
 * One setting per line; '#' starts a comment; blanks around keys and
 * values are dropped.  Errors read "NAME:LINE: reason".
 */
#ifndef BK_KVFILE_H
#define BK_KVFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Apply one setting (key and value trimmed and not empty): 0, or
 * -EINVAL with the reason in why.  *once: the key may appear only once
 * in a file (a second time is an error). */
typedef int (*bk_kv_set_fn)(void *arg, const char *key, const char *value,
                            bool *once, char *why, size_t whylen);

/* Read the lines of f (called `name` in errors) and apply each with set;
 * stops at the first error.  0, or -EINVAL with "NAME:LINE: reason" (or
 * "NAME: read error") in err. */
int bk_kv_read(FILE *f, const char *name, bk_kv_set_fn set, void *arg,
               char *err, size_t errlen);

#endif
