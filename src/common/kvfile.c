/*
 * kvfile.c - `key = value` settings files (kvfile.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include "kvfile.h"

#define BK_KV_MAX_ONCE 64u      /* single keys remembered for duplicates */
#define BK_KV_KEY_MAX  32u

typedef struct kv_seen {
    char key[BK_KV_MAX_ONCE][BK_KV_KEY_MAX];
    size_t n;
} kv_seen_t;

static char *trim(char *s)
{
    char *e;

    s += strspn(s, " \t\r\n");
    e = s + strlen(s);
    while (e > s && strchr(" \t\r\n", e[-1]))
        *--e = '\0';
    return s;
}

/* One line, its comment cut and trimmed, not empty. */
static int kv_line(char *line, kv_seen_t *seen, bk_kv_set_fn set, void *arg,
                   char *why, size_t wl)
{
    char *eq = strchr(line, '='), *key, *val;
    bool once = false;

    if (!eq) {
        snprintf(why, wl, "expected 'key = value'");
        return -EINVAL;
    }
    *eq = '\0';
    key = trim(line);
    val = trim(eq + 1);
    if (!*key) {
        snprintf(why, wl, "missing key before '='");
        return -EINVAL;
    }
    for (size_t i = 0; i < seen->n; i++)
        if (!strcmp(seen->key[i], key)) {
            snprintf(why, wl, "duplicate key '%s'", key);
            return -EINVAL;
        }
    if (!*val) {
        snprintf(why, wl, "missing value for '%s'", key);
        return -EINVAL;
    }
    if (set(arg, key, val, &once, why, wl) < 0)
        return -EINVAL;
    if (once && seen->n < BK_KV_MAX_ONCE && strlen(key) < BK_KV_KEY_MAX)
        strcpy(seen->key[seen->n++], key);
    return 0;
}

int bk_kv_read(FILE *f, const char *name, bk_kv_set_fn set, void *arg,
               char *err, size_t errlen)
{
    kv_seen_t seen = { .n = 0 };
    char why[512], *line = NULL, *s;
    size_t cap = 0;
    unsigned lineno = 0;
    ssize_t n;
    int r = 0;

    while (r == 0 && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)n)) {
            snprintf(why, sizeof(why), "NUL byte in line");
            r = -EINVAL;
        } else {
            line[strcspn(line, "#")] = '\0';
            s = trim(line);
            if (*s)
                r = kv_line(s, &seen, set, arg, why, sizeof(why));
        }
        if (r < 0)
            snprintf(err, errlen, "%s:%u: %s", name, lineno, why);
    }
    if (r == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: read error", name);
        r = -EINVAL;
    }
    free(line);
    return r;
}
