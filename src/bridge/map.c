/*
 * map.c - topics and names as NATS subjects (see map.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "map.h"
#include "topic.h"

static int bn_map_print(char *buf, size_t len, const char *fmt,
                        const char *a, const char *b, const char *c)
{
    int n = snprintf(buf, len, fmt, a, b, c);

    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int bn_map_subject(const char *prefix, const char *topic, char *buf,
                   size_t len)
{
    return bn_map_print(buf, len, "%s.%s%s", prefix, topic, "");
}

/* Whether the first token of t is one the bridge keeps for itself. */
static bool bn_map_reserved(const char *t)
{
    size_t n = strcspn(t, ".");

    return (n == 5 && !memcmp(t, "_call", 5)) ||
           (n == 7 && !memcmp(t, "_bridge", 7)) ||
           bk_topic_reserved(t, strlen(t));
}

bool bn_map_is_own(const char *prefix, const char *subject)
{
    size_t pl = strlen(prefix);

    return !strncmp(subject, prefix, pl) && subject[pl] == '.' &&
           bn_map_reserved(subject + pl + 1);
}

bool bn_map_exportable(const char *topic)
{
    return !bn_map_reserved(topic);
}

const char *bn_map_topic(const char *prefix, const char *subject)
{
    size_t pl = strlen(prefix);
    const char *t;

    if (strncmp(subject, prefix, pl) || subject[pl] != '.')
        return NULL;
    t = subject + pl + 1;
    if (!bk_topic_valid(t, strlen(t)) || bn_map_reserved(t))
        return NULL;
    return t;
}

bool bn_map_name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || name[0] == '.' || name[n - 1] == '.' ||
        strstr(name, ".."))
        return false;
    for (size_t i = 0; i < n; i++)
        if (name[i] == '*' || name[i] == '>' || name[i] <= ' ' ||
            name[i] > '~')
            return false;
    return true;
}

int bn_map_call_subject(const char *prefix, const char *host,
                        const char *name, char *buf, size_t len)
{
    if (!bn_map_name_ok(name))
        return -EINVAL;
    return bn_map_print(buf, len, "%s._call.%s.%s", prefix, host, name);
}

int bn_map_ctl_subject(const char *prefix, const char *what, char *buf,
                       size_t len)
{
    return bn_map_print(buf, len, "%s._bridge.%s%s", prefix, what, "");
}

static bool bn_map_host_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

bool bn_map_host_ok(const char *h)
{
    size_t n = strlen(h);

    if (n == 0 || n >= 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!bn_map_host_byte(h[i]))
            return false;
    return true;
}

int bn_map_split_remote(const char *local_name)
{
    const char *slash = strchr(local_name, '/');
    size_t hl = slash ? (size_t)(slash - local_name) : 0;

    if (hl == 0 || hl >= 64 || !bn_map_name_ok(slash + 1))
        return -EINVAL;
    for (size_t i = 0; i < hl; i++)
        if (!bn_map_host_byte(local_name[i]))
            return -EINVAL;
    return (int)hl;
}
