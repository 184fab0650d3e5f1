/*
 * test_docs.c - the manual pages cover the interface: every public
 * function of include/broker.h is in libbroker(3), every brokerctl command
 * (its command table) is a documented command of brokerctl(1), every long
 * option of brokerd (src/daemon/conf.c) is in the OPTIONS of brokerd(8).
 *
 * The sources are read from TOP_SRCDIR (set by Makefile.am), or from
 * $BROKER_DOCS_SRCDIR when set (to check the test against a modified copy
 * of the tree).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>

#ifndef TOP_SRCDIR
#error "TOP_SRCDIR must name the source tree"
#endif

#define DOC_MAX_NAMES 256
#define DOC_NAME_LEN  64

typedef struct doc_names {
    char name[DOC_MAX_NAMES][DOC_NAME_LEN];
    size_t n;
} doc_names_t;

/* ---- files ---------------------------------------------------------------- */

/* Whole file under the source dir, NUL-terminated; free() it. */
static char *doc_read(const char *rel)
{
    const char *top = getenv("BROKER_DOCS_SRCDIR");
    char path[1024];
    char *buf;
    long len;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", top && *top ? top : TOP_SRCDIR,
             rel);
    f = fopen(path, "r");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    cr_assert_geq(len, 0);
    rewind(f);
    buf = malloc((size_t)len + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len, "read %s",
                 path);
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static void doc_add(doc_names_t *d, const char *s, size_t len)
{
    cr_assert_lt(d->n, DOC_MAX_NAMES, "too many names");
    cr_assert_lt(len, DOC_NAME_LEN, "name too long: %.*s", (int)len, s);
    for (size_t i = 0; i < d->n; i++)
        if (strlen(d->name[i]) == len && !memcmp(d->name[i], s, len))
            return;
    memcpy(d->name[d->n], s, len);
    d->name[d->n++][len] = '\0';
}

/* Every line of text (modified in place) matching re: group 1 is added. */
static void doc_grep(char *text, const char *pattern, doc_names_t *d)
{
    regex_t re;
    regmatch_t m[2];
    char *save = NULL;

    cr_assert_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE), 0,
                 "bad regex %s", pattern);
    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save))
        if (regexec(&re, line, 2, m, 0) == 0 && m[1].rm_so >= 0)
            doc_add(d, line + m[1].rm_so, (size_t)(m[1].rm_eo - m[1].rm_so));
    regfree(&re);
}

/* The text between `start` and the first later line starting with `end`
 * (in place: the end is cut off).  NULL if start is missing. */
static char *doc_between(char *text, const char *start, const char *end)
{
    char *p = strstr(text, start), *q;

    if (!p)
        return NULL;
    p += strlen(start);
    for (q = strchr(p, '\n'); q; q = strchr(q + 1, '\n'))
        if (!strncmp(q + 1, end, strlen(end))) {
            q[1] = '\0';
            break;
        }
    return p;
}

/* ---- sources: what the interface has --------------------------------------- */

/* Functions declared in broker.h: a declaration line starts in column 0
 * with its return type, then the name and '('. */
static void doc_api_functions(doc_names_t *d)
{
    char *h = doc_read("include/broker.h");

    doc_grep(h, "^[A-Za-z_][A-Za-z0-9_ \t*]*[ \t*](broker_[a-z0-9_]+)"
             "[ \t]*\\(", d);
    free(h);
}

/* Commands: the { "name", ... } entries of brokerctl's ctl_cmds table. */
static void doc_ctl_commands(doc_names_t *d)
{
    char *src = doc_read("src/tool/brokerctl.c");
    char *table = doc_between(src, "ctl_cmd_t ctl_cmds[] = {", "};");

    cr_assert_not_null(table, "no ctl_cmds table in brokerctl.c");
    doc_grep(table, "^[ \t]*\\{[ \t]*\"([a-z][a-z0-9-]*)\"[ \t]*,", d);
    free(src);
}

/* brokerd's long options: the struct option table of conf.c. */
static void doc_daemon_options(doc_names_t *d)
{
    char *src = doc_read("src/daemon/conf.c");
    char *table = doc_between(src, "struct option", "};");

    cr_assert_not_null(table, "no struct option table in config.c");
    doc_grep(table, "^[ \t]*\\{[ \t]*\"([a-z][a-z0-9-]*)\"[ \t]*,", d);
    free(src);
}

/* ---- manual pages ------------------------------------------------------------ */

static bool doc_word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

/* name occurs in text and is not the start of a longer word. */
static bool doc_has_word(const char *text, const char *name)
{
    size_t len = strlen(name);

    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name))
        if (!doc_word_char(p[len]) && (p == text || p[-1] != '_'))
            return true;
    return false;
}

/* The tag lines (the line after each .TP) of section `sh`, with roff's
 * "\-" turned into '-', joined by newlines; free() the result. */
static char *doc_tags(const char *man, const char *sh)
{
    char *text = doc_read(man), *sec, *out, *o;
    char head[64];

    /* Keep the header's newline: the first ".TP" follows it. */
    snprintf(head, sizeof(head), "\n.SH %s", sh);
    sec = doc_between(text, head, ".SH ");
    cr_assert_not_null(sec, "%s: no section %s", man, sh);
    out = o = calloc(1, strlen(sec) + 2);
    cr_assert_not_null(out);
    for (char *p = strstr(sec, "\n.TP\n"); p; p = strstr(p + 1, "\n.TP\n")) {
        for (const char *s = p + 5; *s && *s != '\n'; s++) {
            if (s[0] == '\\' && s[1] == '-')
                continue;       /* "\-" -> "-" */
            *o++ = *s;
        }
        *o++ = '\n';
    }
    *o = '\0';
    free(text);
    return out;
}

/* ---- tests --------------------------------------------------------------------- */

Test(docs, every_api_function_is_in_libbroker_3)
{
    doc_names_t d = { .n = 0 };
    char *man = doc_read("man/libbroker.3");
    size_t missing = 0;

    doc_api_functions(&d);
    /* The parser must see the API, not an empty or misread header. */
    cr_assert_geq(d.n, 30, "only %zu functions found in broker.h", d.n);
    for (size_t i = 0; i < d.n; i++)
        if (!doc_has_word(man, d.name[i])) {
            cr_log_error("%s is not documented in man/libbroker.3",
                         d.name[i]);
            missing++;
        }
    free(man);
    cr_assert_eq(missing, 0, "%zu function(s) missing from libbroker(3)",
                 missing);
}

Test(docs, every_brokerctl_command_is_in_brokerctl_1)
{
    doc_names_t d = { .n = 0 };
    char *tags = doc_tags("man/brokerctl.1", "COMMANDS");
    size_t missing = 0;

    doc_ctl_commands(&d);
    cr_assert_geq(d.n, 10, "only %zu commands found in brokerctl.c", d.n);
    for (size_t i = 0; i < d.n; i++) {
        bool found = false;
        /* A tag line names the command as a word of its own, e.g.
         * ".BI send " NAME ..." or ".BR clients " | " names ...". */
        for (const char *p = strstr(tags, d.name[i]); p && !found;
             p = strstr(p + 1, d.name[i])) {
            size_t len = strlen(d.name[i]);
            found = (p == tags || !doc_word_char(p[-1])) &&
                    !doc_word_char(p[len]);
        }
        if (!found) {
            cr_log_error("brokerctl command '%s' is not documented in "
                         "COMMANDS of man/brokerctl.1", d.name[i]);
            missing++;
        }
    }
    free(tags);
    cr_assert_eq(missing, 0, "%zu command(s) missing from brokerctl(1)",
                 missing);
}

Test(docs, every_brokerd_option_is_in_brokerd_8)
{
    doc_names_t d = { .n = 0 };
    char *tags = doc_tags("man/brokerd.8", "OPTIONS");
    size_t missing = 0;

    doc_daemon_options(&d);
    cr_assert_geq(d.n, 5, "only %zu options found in config.c", d.n);
    for (size_t i = 0; i < d.n; i++) {
        char opt[DOC_NAME_LEN + 2];
        snprintf(opt, sizeof(opt), "--%s", d.name[i]);
        if (!doc_has_word(tags, opt)) {
            cr_log_error("brokerd option %s is not documented in OPTIONS "
                         "of man/brokerd.8", opt);
            missing++;
        }
    }
    free(tags);
    cr_assert_eq(missing, 0, "%zu option(s) missing from brokerd(8)",
                 missing);
}
