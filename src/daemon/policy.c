/*
 * policy.c - access rules: parsing and checks.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "frame.h"
#include "policy.h"
#include "topic.h"

#define SEPS " \t,|"

void bk_policy_init(bk_policy_t *p)
{
    memset(p, 0, sizeof(*p));
}

static void list_free(bk_policy_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].pattern);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

void bk_policy_free(bk_policy_t *p)
{
    list_free(&p->connect);
    list_free(&p->own);
    list_free(&p->send);
    list_free(&p->publish);
    list_free(&p->subscribe);
}

static int parse_id(const char *s, unsigned *out)
{
    char *end;
    unsigned long v;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v >= (unsigned long)(uid_t)-1)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

/* One principal token. */
static int parse_who(const char *tok, bk_policy_who_t *w, char *err,
                     size_t errlen)
{
    if (!strcmp(tok, "*")) {
        w->kind = BK_POLICY_ANY;
        w->id = 0;
        return 0;
    }
    if (!strncmp(tok, "uid:", 4) || !strncmp(tok, "gid:", 4)) {
        w->kind = tok[0] == 'u' ? BK_POLICY_UID : BK_POLICY_GID;
        if (parse_id(tok + 4, &w->id) == 0)
            return 0;
        snprintf(err, errlen, "bad id in '%s'", tok);
        return -EINVAL;
    }
    if (!strncmp(tok, "user:", 5)) {
        struct passwd *pw = tok[5] ? getpwnam(tok + 5) : NULL;
        if (pw) {
            w->kind = BK_POLICY_UID;
            w->id = pw->pw_uid;
            return 0;
        }
        snprintf(err, errlen, "unknown user '%s'", tok + 5);
        return -EINVAL;
    }
    if (!strncmp(tok, "group:", 6)) {
        struct group *gr = tok[6] ? getgrnam(tok + 6) : NULL;
        if (gr) {
            w->kind = BK_POLICY_GID;
            w->id = gr->gr_gid;
            return 0;
        }
        snprintf(err, errlen, "unknown group '%s'", tok + 6);
        return -EINVAL;
    }
    snprintf(err, errlen, "'%s' is not *, uid:N, gid:N, user:NAME or "
             "group:NAME", tok);
    return -EINVAL;
}

static int push(bk_policy_list_t *l, const bk_policy_rule_t *r)
{
    bk_policy_rule_t *v = realloc(l->v, (l->n + 1) * sizeof(*v));

    if (!v)
        return -ENOMEM;
    l->v = v;
    l->v[l->n++] = *r;
    return 0;
}

/* Append one rule per principal in `rest` (whitespace separated), each
 * with its own copy of the pattern (pat may be NULL). */
static int add_rules(bk_policy_list_t *l, const char *pat, char *rest,
                     bool topic, char *err, size_t errlen)
{
    char *save = NULL, *tok;
    size_t before = l->n;
    int r = 0;

    for (tok = strtok_r(rest, SEPS, &save); tok && !r;
         tok = strtok_r(NULL, SEPS, &save)) {
        bk_policy_rule_t rule = { 0 };

        if ((r = parse_who(tok, &rule.who, err, errlen)) < 0)
            break;
        if (pat) {
            size_t n = strlen(pat);
            rule.prefix = !topic && n && pat[n - 1] == '*';
            rule.plen = n - rule.prefix;
            if (!(rule.pattern = strdup(pat))) {
                r = -ENOMEM;
                break;
            }
        }
        if ((r = push(l, &rule)) < 0)
            free(rule.pattern);
    }
    if (!r && l->n == before) {
        snprintf(err, errlen, "no principal (*, uid:N, gid:N, user:NAME "
                 "or group:NAME)");
        r = -EINVAL;
    }
    if (r == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    if (r < 0) {
        while (l->n > before)
            free(l->v[--l->n].pattern);
    }
    return r;
}

/* A name pattern is a name (frame.h bk_name_valid: the alphabet of
 * broker-protocol(7) NAMES, at most BK_MAX_NAME bytes, no leading ':'),
 * or the start of one followed by '*' ("*" alone: every name).  What no
 * name can match is refused, so that a typo cannot lock every name out. */
static bool name_pattern_ok(const char *pat, char *err, size_t errlen)
{
    size_t n = strlen(pat), plen = n && pat[n - 1] == '*' ? n - 1 : n;
    const char *why = NULL;

    if (!n)
        why = "empty";
    else if (memchr(pat, '*', plen))
        why = "'*' only at the end, for a prefix";
    else if (plen >= BK_MAX_NAME + (plen == n))
        why = "longer than a name (255 bytes)";
    else if (pat[0] == ':')
        why = "names may not begin with ':'";
    else if (plen && !bk_name_valid(pat, plen, BK_MAX_NAME))
        why = "a name has only A-Z a-z 0-9 . _ : / -";
    if (!why)
        return true;
    snprintf(err, errlen, "bad name pattern '%s': %s (a name, or the start "
             "of one followed by *)", pat, why);
    return false;
}

/* How the first word of a rule is read. */
enum pat_kind { PAT_NONE, PAT_NAME, PAT_TOPIC };

static bool pattern_ok(const char *pat, enum pat_kind kind, char *err,
                       size_t errlen)
{
    if (kind == PAT_TOPIC) {
        if (bk_topic_pattern_valid(pat, strlen(pat)))
            return true;
        snprintf(err, errlen, "bad topic pattern '%s' (tokens separated by "
                 "'.', '*' for one token, '>' for the rest)", pat);
        return false;
    }
    return name_pattern_ok(pat, err, errlen);
}

static int add_copy(bk_policy_list_t *l, const char *value,
                    enum pat_kind named, char *err, size_t errlen)
{
    char *buf = strdup(value), *rest, *pat = NULL;
    int r;

    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    rest = buf;
    if (named) {
        pat = buf + strspn(buf, " \t");
        rest = pat + strcspn(pat, " \t");
        if (*rest)
            *rest++ = '\0';
        if (!pattern_ok(pat, named, err, errlen)) {
            free(buf);
            return -EINVAL;
        }
    }
    r = add_rules(l, pat, rest, named == PAT_TOPIC, err, errlen);
    free(buf);
    return r;
}

int bk_policy_add_connect(bk_policy_t *p, const char *value, char *err,
                          size_t errlen)
{
    return add_copy(&p->connect, value, PAT_NONE, err, errlen);
}

int bk_policy_add_own(bk_policy_t *p, const char *value, char *err,
                      size_t errlen)
{
    return add_copy(&p->own, value, PAT_NAME, err, errlen);
}

int bk_policy_add_send(bk_policy_t *p, const char *value, char *err,
                       size_t errlen)
{
    return add_copy(&p->send, value, PAT_NAME, err, errlen);
}

int bk_policy_add_publish(bk_policy_t *p, const char *value, char *err,
                          size_t errlen)
{
    return add_copy(&p->publish, value, PAT_TOPIC, err, errlen);
}

int bk_policy_add_subscribe(bk_policy_t *p, const char *value, char *err,
                            size_t errlen)
{
    return add_copy(&p->subscribe, value, PAT_TOPIC, err, errlen);
}

static bool privileged(const bk_policy_peer_t *who)
{
    return who->uid == 0 || who->uid == geteuid();
}

static bool who_matches(const bk_policy_who_t *w, const bk_policy_peer_t *p)
{
    switch (w->kind) {
    case BK_POLICY_ANY:
        return true;
    case BK_POLICY_UID:
        return p->uid == (uid_t)w->id;
    case BK_POLICY_GID:
        return p->gid == (gid_t)w->id;
    }
    return false;
}

static bool name_matches(const bk_policy_rule_t *r, const char *name,
                         size_t len)
{
    if (r->prefix)
        return len >= r->plen && !memcmp(name, r->pattern, r->plen);
    return len == r->plen && !memcmp(name, r->pattern, len);
}

static bool named_ok(const bk_policy_list_t *l, const bk_policy_peer_t *who,
                     const char *name, size_t len)
{
    if (!l->n || privileged(who))
        return true;
    for (size_t i = 0; i < l->n; i++)
        if (name_matches(&l->v[i], name, len) &&
            who_matches(&l->v[i].who, who))
            return true;
    return false;
}

bool bk_policy_may_connect(const bk_policy_t *p, const bk_policy_peer_t *who)
{
    if (!p->connect.n || privileged(who))
        return true;
    for (size_t i = 0; i < p->connect.n; i++)
        if (who_matches(&p->connect.v[i].who, who))
            return true;
    return false;
}

bool bk_policy_may_own(const bk_policy_t *p, const bk_policy_peer_t *who,
                       const char *name, size_t len)
{
    return named_ok(&p->own, who, name, len);
}

bool bk_policy_may_send(const bk_policy_t *p, const bk_policy_peer_t *who,
                        const char *name, size_t len)
{
    return named_ok(&p->send, who, name, len);
}

bool bk_policy_may_publish(const bk_policy_t *p, const bk_policy_peer_t *who,
                           const char *topic, size_t len)
{
    const bk_policy_list_t *l = &p->publish;

    if (!l->n || privileged(who))
        return true;
    for (size_t i = 0; i < l->n; i++)
        if (who_matches(&l->v[i].who, who) &&
            bk_topic_match(l->v[i].pattern, l->v[i].plen, topic, len))
            return true;
    return false;
}

bool bk_policy_may_subscribe(const bk_policy_t *p,
                             const bk_policy_peer_t *who, const char *pat,
                             size_t len)
{
    const bk_policy_list_t *l = &p->subscribe;

    if (!l->n || privileged(who))
        return true;
    for (size_t i = 0; i < l->n; i++)
        if (who_matches(&l->v[i].who, who) &&
            bk_topic_covers(l->v[i].pattern, l->v[i].plen, pat, len))
            return true;
    return false;
}

bool bk_policy_has_send_rules(const bk_policy_t *p)
{
    return p->send.n > 0;
}
