/*
 * conffile.c - brokerd's configuration file: `key = value` lines, `#`
 * comments and blank lines; keys are the long options without dashes plus
 * the allow-* access rules (policy.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"

#define CONF_MAX_KEYS 32

static char *trim(char *s)
{
    char *e;

    s += strspn(s, " \t\r\n");
    e = s + strlen(s);
    while (e > s && strchr(" \t\r\n", e[-1]))
        *--e = '\0';
    return s;
}

/* One line (comment already cut).  seen[] remembers scalar keys. */
static int conf_line(bk_config_t *c, char *line, char seen[][32],
                     size_t *nseen, char *why, size_t whylen)
{
    char *eq = strchr(line, '='), *key, *val;
    bool scalar;
    int r;

    if (!eq) {
        snprintf(why, whylen, "expected 'key = value'");
        return -EINVAL;
    }
    *eq = '\0';
    key = trim(line);
    val = trim(eq + 1);
    if (!*key) {
        snprintf(why, whylen, "missing key before '='");
        return -EINVAL;
    }
    for (size_t i = 0; i < *nseen; i++)
        if (!strcmp(seen[i], key)) {
            snprintf(why, whylen, "duplicate key '%s'", key);
            return -EINVAL;
        }
    if (!*val) {
        snprintf(why, whylen, "missing value for '%s'", key);
        return -EINVAL;
    }
    r = bk_config_set(c, key, val, &scalar, why, whylen);
    if (r < 0)
        return -EINVAL;
    if (scalar && *nseen < CONF_MAX_KEYS && strlen(key) < sizeof(seen[0]))
        strcpy(seen[(*nseen)++], key);
    return 0;
}

int bk_config_read_file(bk_config_t *c, const char *path, char *err,
                        size_t errlen)
{
    char seen[CONF_MAX_KEYS][32], why[256], *line = NULL;
    size_t cap = 0, nseen = 0;
    unsigned lineno = 0;
    ssize_t n;
    FILE *f = fopen(path, "re");
    int r = 0;

    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -EINVAL;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        char *s;

        lineno++;
        if (memchr(line, '\0', (size_t)n)) {
            snprintf(why, sizeof(why), "NUL byte in line");
            r = -EINVAL;
        } else {
            line[strcspn(line, "#")] = '\0';
            s = trim(line);
            if (*s)
                r = conf_line(c, s, seen, &nseen, why, sizeof(why));
        }
        if (r < 0) {
            snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
            break;
        }
    }
    if (!r && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        r = -EINVAL;
    }
    free(line);
    fclose(f);
    return r;
}
