/*
 * topic.h - publish/subscribe topics and patterns (prefix bk_topic_).
 *
 * Pure functions over byte strings (not NUL-terminated; lengths given),
 * no allocation: shared by brokerd (validation, matching, access rules),
 * libbroker (checks before sending) and the fuzz target.
 *
 * A topic is 1..BK_MAX_TOPIC bytes of '.'-separated tokens; every token is
 * non-empty and made of printable ASCII (0x21..0x7e) other than '.', '*'
 * and '>'.  A pattern may also use the tokens `*` (exactly one token) and
 * `>` (one or more trailing tokens, last token only).  A pattern whose
 * first token is a wildcard never matches a topic whose first token starts
 * with '$' (the broker's own topics must be subscribed to by name).
 * man/broker-protocol.7 lists the edge cases with examples.
 */
#ifndef BK_TOPIC_H
#define BK_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

/* Whether t[0..len) is a valid topic / pattern. */
bool bk_topic_valid(const char *t, size_t len);
bool bk_topic_pattern_valid(const char *p, size_t len);

/* Whether the (valid) pattern matches the (valid) topic. */
bool bk_topic_match(const char *pat, size_t plen, const char *t,
                    size_t tlen);

/* Whether every topic that pattern `sub` can match is also matched by
 * pattern `rule` (both valid): used for allow-subscribe rules. */
bool bk_topic_covers(const char *rule, size_t rlen, const char *sub,
                     size_t slen);

/* Whether the topic's first token is the reserved BK_TOPIC_RESERVED. */
bool bk_topic_reserved(const char *t, size_t len);

/* Iterate tokens: *off starts at 0; returns true and sets *tok and *toklen
 * for the next token, false at the end. */
bool bk_topic_next_token(const char *t, size_t len, size_t *off,
                         const char **tok, size_t *toklen);

#endif
