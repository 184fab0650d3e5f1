/*
 * offers.c - the names other hosts offer, registered here as HOST/NAME
 * (prefix bn_offers_).
 *
 * Every bridge announces its host's offers on PREFIX._bridge.offers, a
 * text payload of lines "host=HOST" then "offer=NAME" for each offer:
 * when it connects or reconnects (together with PREFIX._bridge.hello,
 * which makes every other bridge announce its own), and after a reload.
 * A bridge that stops says PREFIX._bridge.bye ("host=HOST").  Each bridge
 * owns the local name HOST/NAME for every remote offer it has heard of
 * and for every `remote = HOST/NAME` of its settings; call.c forwards
 * what is sent to those names.  A bridge that dies without its bye
 * leaves its names registered elsewhere: calls to them fail with ENOENT
 * (NATS has no responder) until it is back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "frame.h"
#include "log.h"
#include "map.h"
#include "proto.h"

#define BN_OFFERS_TEXT_MAX 65536

bool bn_offers_is_remote(const bn_bridge_t *br, const char *name)
{
    for (size_t i = 0; i < br->nremotes; i++)
        if (!strcmp(br->remotes[i].name, name))
            return true;
    return false;
}

static bn_remote_t *bn_offers_find(bn_bridge_t *br, const char *name)
{
    for (size_t i = 0; i < br->nremotes; i++)
        if (!strcmp(br->remotes[i].name, name))
            return &br->remotes[i];
    return NULL;
}

/* Register name if needed and mark why it is wanted. */
static void bn_offers_want(bn_bridge_t *br, const char *name, bool fixed)
{
    bn_remote_t *r = bn_offers_find(br, name);

    if (!r) {
        if (br->nremotes == BN_MAX_REMOTES ||
            !bk_name_valid(name, strlen(name), BK_MAX_NAME) ||
            bn_map_split_remote(name) < 0 ||
            bn_local_register(br, name) < 0)
            return;
        r = &br->remotes[br->nremotes];
        r->name = strdup(name);
        if (!r->name) {
            bn_local_release(br, name);
            return;
        }
        r->fixed = r->learned = false;
        br->nremotes++;
        bn_log(BN_LOG_INFO, "remote name %s registered", name);
    }
    if (fixed)
        r->fixed = true;
    else
        r->learned = true;
}

/* Release the entries wanted for no reason any more. */
static void bn_offers_prune(bn_bridge_t *br)
{
    for (size_t i = br->nremotes; i-- > 0;) {
        bn_remote_t *r = &br->remotes[i];

        if (r->fixed || r->learned)
            continue;
        bn_local_release(br, r->name);
        bn_log(BN_LOG_INFO, "remote name %s released", r->name);
        free(r->name);
        memmove(r, r + 1, (br->nremotes - i - 1) * sizeof(*r));
        br->nremotes--;
    }
}

void bn_offers_sync_fixed(bn_bridge_t *br)
{
    for (size_t i = 0; i < br->nremotes; i++)
        br->remotes[i].fixed = false;
    for (size_t i = 0; i < br->conf.remotes.n; i++)
        bn_offers_want(br, br->conf.remotes.v[i], true);
    for (size_t i = 0; i < br->conf.remotes.n; i++) {
        bn_remote_t *r = bn_offers_find(br, br->conf.remotes.v[i]);

        if (r)
            r->fixed = true;
    }
    bn_offers_prune(br);
}

/* Forget what host announced (its bye, or before its new list). */
static void bn_offers_forget(bn_bridge_t *br, const char *host)
{
    size_t hl = strlen(host);

    for (size_t i = 0; i < br->nremotes; i++)
        if (!strncmp(br->remotes[i].name, host, hl) &&
            br->remotes[i].name[hl] == '/')
            br->remotes[i].learned = false;
}

/* ---- announcements ----------------------------------------------------------- */

static void bn_offers_publish(bn_bridge_t *br, const char *what,
                              const char *text, size_t len)
{
    char subj[BN_MAP_SUBJ_MAX];

    if (bn_map_ctl_subject(br->conf.prefix, what, subj, sizeof(subj)) == 0 &&
        bn_nats_publish(br, subj, NULL, text, len, 0) < 0)
        bn_log(BN_LOG_DEBUG, "cannot publish %s", subj);
}

void bn_offers_announce(bn_bridge_t *br, bool hello)
{
    char *text = malloc(BN_OFFERS_TEXT_MAX);
    size_t n;

    if (!text)
        return;
    n = (size_t)snprintf(text, BN_OFFERS_TEXT_MAX, "host=%s\n",
                         br->conf.host);
    if (hello)
        bn_offers_publish(br, "hello", text, n);
    for (size_t i = 0; i < br->conf.offers.n; i++) {
        int k = snprintf(text + n, BN_OFFERS_TEXT_MAX - n, "offer=%s\n",
                         br->conf.offers.v[i]);

        if (k < 0 || (size_t)k >= BN_OFFERS_TEXT_MAX - n)
            break;
        n += (size_t)k;
    }
    bn_offers_publish(br, "offers", text, n);
    free(text);
}

void bn_offers_bye(bn_bridge_t *br)
{
    char text[BN_HOST_MAX + 8];
    int n = snprintf(text, sizeof(text), "host=%s\n", br->conf.host);

    bn_offers_publish(br, "bye", text, (size_t)n);
}

/* The next line of text[*off..len) into line (NUL-terminated); false at
 * the end or for a line too long. */
static bool bn_offers_line(const char *text, size_t len, size_t *off,
                           char *line, size_t max)
{
    const char *nl;
    size_t n;

    if (*off >= len)
        return false;
    nl = memchr(text + *off, '\n', len - *off);
    n = nl ? (size_t)(nl - (text + *off)) : len - *off;
    if (n >= max)
        return false;
    memcpy(line, text + *off, n);
    line[n] = '\0';
    *off += n + 1;
    return true;
}

/* "offers" from host: the list replaces what it said before. */
static void bn_offers_learn(bn_bridge_t *br, const char *host,
                            const char *text, size_t len, size_t off)
{
    char line[BK_MAX_NAME + 16], name[BN_HOST_MAX + sizeof(line) + 2];

    bn_offers_forget(br, host);
    while (bn_offers_line(text, len, &off, line, sizeof(line))) {
        if (strncmp(line, "offer=", 6) || !bn_map_name_ok(line + 6))
            continue;
        snprintf(name, sizeof(name), "%s/%s", host, line + 6);
        bn_offers_want(br, name, false);
    }
    bn_offers_prune(br);
}

void bn_offers_ctl_msg(bn_bridge_t *br, natsMsg *msg)
{
    const char *text = natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg), off = 0;
    const char *subj = natsMsg_GetSubject(msg);
    const char *what = strrchr(subj, '.');
    char line[BN_HOST_MAX + 8];

    if (!what || !bn_offers_line(text, len, &off, line, sizeof(line)) ||
        strncmp(line, "host=", 5) || !bn_map_host_ok(line + 5) ||
        !strcmp(line + 5, br->conf.host)) {
        natsMsg_Destroy(msg);
        return;
    }
    what++;
    if (!strcmp(what, "offers")) {
        bn_offers_learn(br, line + 5, text, len, off);
    } else if (!strcmp(what, "hello")) {
        bn_offers_announce(br, false);
    } else if (!strcmp(what, "bye")) {
        bn_offers_forget(br, line + 5);
        bn_offers_prune(br);
    }
    natsMsg_Destroy(msg);
}

void bn_offers_stop(bn_bridge_t *br)
{
    for (size_t i = 0; i < br->nremotes; i++)
        free(br->remotes[i].name);
    br->nremotes = 0;
}
