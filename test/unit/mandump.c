/*
 * mandump.c - the hex dumps of a man page, as bytes (see mandump.h).
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <criterion/criterion.h>
#include "mandump.h"

/* Whether l looks like "OOOO: xx ...": four hex digits and a colon. */
static bool md_is_dump_line(const char *l)
{
    for (int i = 0; i < 4; i++)
        if (!l[i] || !strchr("0123456789abcdef", l[i]))
            return false;
    return l[4] == ':' && l[5] == ' ';
}

/* Append the bytes of one dump line to d. */
static void md_parse_line(const char *l, md_dump_t *d, int lineno)
{
    unsigned off, v;
    int used = 0, n;
    cr_assert_eq(sscanf(l, "%4x: %n", &off, &used), 1);
    cr_assert_eq(off, d->len, "line %d: offset %04x, expected %04zx",
                 lineno, off, d->len);
    const char *p = l + used;
    int count = 0;
    while (sscanf(p, "%2x%n", &v, &n) == 1) {
        cr_assert_lt(d->len, MD_BYTES, "line %d: dump too long", lineno);
        cr_assert_eq(n, 2, "line %d: not a hex byte", lineno);
        d->b[d->len++] = (uint8_t)v;
        count++;
        p += n;
        while (*p == ' ')
            p++;
    }
    cr_assert(*p == '\n' || *p == '\0', "line %d: junk after the bytes",
              lineno);
    cr_assert(count >= 1 && count <= 16, "line %d: %d bytes", lineno,
              count);
}

size_t md_load(const char *path, md_dump_t *d, size_t max)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char line[512], section[64] = "";
    bool in_ex = false;
    int lineno = 0;
    md_dump_t *cur = NULL;
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (strncmp(line, ".SH ", 4) == 0) {
            snprintf(section, sizeof section, "%.60s", line + 4);
            section[strcspn(section, "\n")] = '\0';
        } else if (strncmp(line, ".EX", 3) == 0) {
            in_ex = true;
            cur = NULL;
        } else if (strncmp(line, ".EE", 3) == 0) {
            in_ex = false;
        } else if (in_ex && md_is_dump_line(line)) {
            if (!cur) {             /* the first line of a dump */
                cr_assert_lt(n, max);
                cur = &d[n++];
                memset(cur, 0, sizeof *cur);
                cur->line = lineno;
                snprintf(cur->section, sizeof cur->section, "%s", section);
            }
            md_parse_line(line, cur, lineno);
        }
    }
    fclose(f);
    return n;
}

size_t md_section(md_dump_t *d, size_t n, const char *section,
                  md_dump_t **out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < max; i++)
        if (strcmp(d[i].section, section) == 0)
            out[k++] = &d[i];
    return k;
}
