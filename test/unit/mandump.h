/*
 * mandump.h - the hex dumps of a man page, as bytes (prefix md_).
 *
 * A dump is an .EX block of lines "OOOO: xx xx ...  xx" (offset, then up
 * to 16 bytes in hex).  Used by test_dumps (against the codec) and
 * test_pubsub_dumps (against brokerd).  Owns nothing: the caller gives
 * the array the dumps are read into.
 */
#ifndef MD_MANDUMP_H
#define MD_MANDUMP_H

#include <stddef.h>
#include <stdint.h>

#define MD_BYTES 256

typedef struct md_dump {
    char section[64];           /* the .SH it is under */
    int line;                   /* its first line in the page */
    size_t len;
    uint8_t b[MD_BYTES];
} md_dump_t;

/* Read the dumps of the page at path into d[0..max); returns how many.
 * Fails the running criterion test on a malformed dump or a missing
 * page. */
size_t md_load(const char *path, md_dump_t *d, size_t max);

/* The dumps of one section, in page order: fills out[0..max) with
 * pointers into d, returns how many. */
size_t md_section(md_dump_t *d, size_t n, const char *section,
                  md_dump_t **out, size_t max);

#endif
