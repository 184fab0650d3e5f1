/*
 * test_units.c - `make install` of the build under test into a DESTDIR:
 * the systemd units name the installed brokerd, brokerctl and
 * configuration file, the bash completion is installed, and
 * `systemd-analyze verify` accepts the units (skipped with a message when
 * systemd-analyze is not installed).
 *
 * The build directory is the one of $BROKERD (make check sets it); make
 * runs there with configure's own paths, so the units are checked as
 * they would be installed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <criterion/criterion.h>
#include "harness.h"

static char dest[64];

static void teardown(void)
{
    char cmd[128];

    if (!dest[0])
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dest);
    if (system(cmd) != 0)
        fprintf(stderr, "test_units: could not remove %s\n", dest);
    dest[0] = '\0';
}

TestSuite(units, .fini = teardown, .timeout = 300);

/* Run a shell script; returns the wait status, output in *o. */
static int sh(const char *script, th_output_t *o)
{
    const char *argv[] = { "/bin/sh", "-c", script, NULL };

    return th_run(argv, NULL, NULL, 0, o);
}

/* `make install DESTDIR=dest` in the build directory of $BROKERD. */
static void install_into_destdir(void)
{
    char bin[512], script[1024];
    th_output_t o;
    int st;

    strcpy(dest, "/tmp/bk-units-XXXXXX");
    cr_assert_not_null(mkdtemp(dest), "mkdtemp: %s", strerror(errno));
    snprintf(bin, sizeof(bin), "%s", th_brokerd_path());
    /* make check's own make must not hand its jobserver on */
    snprintf(script, sizeof(script), "unset MAKEFLAGS MFLAGS MAKELEVEL; "
             "exec make -s -C '%s' install DESTDIR='%s'", dirname(bin), dest);
    st = sh(script, &o);
    cr_assert(TH_EXITED(st, 0), "make install failed (0x%x):\n%s\n%s", st,
              o.out, o.err);
    th_output_free(&o);
}

/* The one installed file (relative to dest, starting with '/') whose
 * path matches the find(1) pattern; NULL if there is none. */
static char *installed(const char *pattern)
{
    char script[512], *nl, *path;
    th_output_t o;
    int st;

    snprintf(script, sizeof(script), "cd '%s' && find . -path '%s' | "
             "sed 's|^\\.||'", dest, pattern);
    st = sh(script, &o);
    cr_assert(TH_EXITED(st, 0), "find failed: %s", o.err);
    nl = strchr(o.out, '\n');
    cr_assert(!nl || !strchr(nl + 1, '\n'), "more than one %s:\n%s", pattern,
              o.out);
    if (nl)
        *nl = '\0';
    path = o.out[0] ? strdup(o.out) : NULL;
    th_output_free(&o);
    return path;
}

static char *installed_file(const char *pattern)
{
    char *p = installed(pattern);

    cr_assert_not_null(p, "make install put nothing at %s", pattern);
    return p;
}

/* The value of the first "Key=" line of a unit, without a leading '+'. */
static char *unit_value(const char *unit, const char *key)
{
    char path[512], *text, *v, *end;
    size_t len, klen = strlen(key);

    snprintf(path, sizeof(path), "%s%s", dest, unit);
    text = th_read_file(path, &len);
    for (v = text; v; v = strchr(v, '\n')) {
        v += *v == '\n';
        if (!strncmp(v, key, klen) && v[klen] == '=')
            break;
    }
    cr_assert(v && *v, "no %s= in %s:\n%s", key, unit, text);
    v += klen + 1 + (v[klen + 1] == '+');
    end = strchr(v, '\n');
    v = strndup(v, end ? (size_t)(end - v) : strlen(v));
    free(text);
    return v;
}

/* Word n (0-based) of a command line. */
static char *word(const char *line, int n)
{
    char *copy = strdup(line), *save = NULL, *w = strtok_r(copy, " ", &save);

    while (w && n--)
        w = strtok_r(NULL, " ", &save);
    cr_assert_not_null(w, "no word %d in '%s'", n, line);
    w = strdup(w);
    free(copy);
    return w;
}

static void assert_installed_program(const char *path, const char *name)
{
    char full[512];
    const char *base = strrchr(path, '/');

    cr_assert(path[0] == '/', "'%s' is not absolute", path);
    cr_assert_str_eq(base + 1, name);
    snprintf(full, sizeof(full), "%s%s", dest, path);
    cr_assert_eq(access(full, X_OK), 0, "%s is not installed: %s", path,
                 strerror(errno));
}

static void assert_substituted(const char *unit)
{
    char path[512], *text;
    size_t len;

    snprintf(path, sizeof(path), "%s%s", dest, unit);
    text = th_read_file(path, &len);
    cr_assert(len > 0, "%s is empty", unit);
    cr_assert(!strstr(text, "@bindir@") && !strstr(text, "@sysconfdir@"),
              "%s has configure variables left:\n%s", unit, text);
    free(text);
}

Test(units, install_names_the_installed_programs_and_config)
{
    char *service, *user_service, *start, *reload, *conf, *v, full[512];

    install_into_destdir();
    service = installed_file("*/systemd/system/brokerd.service");
    free(installed_file("*/systemd/system/brokerd.socket"));
    user_service = installed_file("*/systemd/user/brokerd.service");
    free(installed_file("*/systemd/user/brokerd.socket"));
    free(installed_file("*/bash-completion/completions/brokerctl"));
    assert_substituted(service);
    assert_substituted(user_service);

    start = unit_value(service, "ExecStart");
    v = word(start, 0);
    assert_installed_program(v, "brokerd");
    free(v);
    v = word(start, 2);
    cr_assert_str_eq(v, "-c", "ExecStart=%s", start);
    free(v);
    conf = word(start, 3);
    snprintf(full, sizeof(full), "%s%s", dest, conf);
    cr_assert_eq(access(full, R_OK), 0, "ExecStart's -c %s is not installed",
                 conf);
    free(conf);
    reload = unit_value(service, "ExecReload");
    v = word(reload, 0);
    assert_installed_program(v, "brokerctl");
    free(v);
    cr_assert(strstr(reload, " reload"), "ExecReload=%s", reload);
    /* the client names need /proc/PID/comm of every user */
    v = unit_value(service, "ProtectProc");
    cr_assert_str_eq(v, "default");
    free(v);
    free(start);
    free(reload);

    start = unit_value(user_service, "ExecStart");
    v = word(start, 0);
    assert_installed_program(v, "brokerd");
    free(v);
    free(start);
    free(service);
    free(user_service);
}

/* ---- systemd-analyze verify ------------------------------------------------ */

static bool have_systemd_analyze(void)
{
    th_output_t o;
    int st = sh("command -v systemd-analyze", &o);

    th_output_free(&o);
    return TH_EXITED(st, 0);
}

/* systemd-analyze verify --root=dest on the two units: the root needs
 * the distribution's own units (sysinit.target, sockets.target, ...)
 * and finds the man pages of Documentation= through MANPATH. */
static void verify(const char *service, const char *socket)
{
    char script[2048], *man = installed_file("*/man8/brokerd.8");
    th_output_t o;
    int st;

    *strrchr(man, '/') = '\0';
    *strrchr(man, '/') = '\0';
    snprintf(script, sizeof(script),
             "MANPATH='%s%s' exec systemd-analyze verify --root='%s' "
             "'%s%s' '%s%s' 2>&1", dest, man, dest, dest, service, dest,
             socket);
    st = sh(script, &o);
    cr_assert(TH_EXITED(st, 0) && o.out_len == 0,
              "systemd-analyze verify %s (0x%x):\n%s", service, st, o.out);
    th_output_free(&o);
    free(man);
}

/* Copy the installed PATTERN{service,socket} to the root's
 * /etc/systemd/system and verify them there. */
static void verify_pair(const char *pattern)
{
    char script[1024], pat[128], *service, *socket;
    th_output_t o;
    int st;

    snprintf(pat, sizeof(pat), "%sservice", pattern);
    service = installed_file(pat);
    snprintf(pat, sizeof(pat), "%ssocket", pattern);
    socket = installed_file(pat);
    snprintf(script, sizeof(script), "mkdir -p '%s/etc/systemd/system' && "
             "cp '%s%s' '%s%s' '%s/etc/systemd/system/'", dest, dest, service,
             dest, socket, dest);
    st = sh(script, &o);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    th_output_free(&o);
    verify("/etc/systemd/system/brokerd.service",
           "/etc/systemd/system/brokerd.socket");
    free(service);
    free(socket);
}

Test(units, systemd_analyze_verify_accepts_the_installed_units)
{
    char script[512];
    th_output_t o;
    int st;

    if (!have_systemd_analyze())
        cr_skip_test("systemd-analyze is not installed (Debian package "
                     "systemd): the units are not verified");
    install_into_destdir();
    snprintf(script, sizeof(script), "mkdir -p '%s/usr/lib/systemd' && "
             "for d in /usr/lib/systemd/system /lib/systemd/system; do "
             "[ -d $d ] && exec cp -a $d '%s/usr/lib/systemd/'; done; "
             "exit 1", dest, dest);
    st = sh(script, &o);
    cr_assert(TH_EXITED(st, 0), "no system units to copy: %s", o.err);
    th_output_free(&o);

    /* Requires= and Also= find the other unit by name, so each pair is
     * checked from /etc/systemd/system of the root, which is in the
     * search path whatever configure's unit directories are. */
    verify_pair("*/systemd/system/brokerd.");
    /* systemd 252 verifies user units only without --root: check them
     * as system units. */
    verify_pair("*/systemd/user/brokerd.");
}
