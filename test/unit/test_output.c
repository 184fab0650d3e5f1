/*
 * test_output.c - brokerctl's text output (src/tool/output.c): sizes and
 * durations for people, lists cut with a count, tables cut to a width,
 * and JSON keeping the raw numbers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>
#include <criterion/redirect.h>

#include "ctl.h"

Test(output, sizes)
{
    static const struct { uint64_t v; const char *s; } t[] = {
        { 0, "0B" }, { 850, "850B" }, { 1023, "1023B" }, { 1024, "1.0KiB" },
        { 1229, "1.2KiB" }, { 10 * 1024, "10KiB" }, { 4u << 20, "4.0MiB" },
        { 34u << 20, "34MiB" }, { 2ull << 30, "2.0GiB" },
        { 5ull << 40, "5.0TiB" }, { 5000ull << 40, "5000TiB" },
    };
    char buf[32];

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ctl_out_size(buf, sizeof(buf), t[i].v);
        cr_assert_str_eq(buf, t[i].s, "%llu", (unsigned long long)t[i].v);
    }
}

Test(output, durations)
{
    static const struct { uint64_t ms; const char *s; } t[] = {
        { 0, "0ms" }, { 850, "850ms" }, { 999, "999ms" }, { 1000, "1.0s" },
        { 2899, "2.8s" }, { 9999, "9.9s" }, { 10000, "10s" }, { 59999, "59s" },
        { 60000, "1m" }, { 3 * 60000 + 59000, "3m" }, { 3600000, "1h" },
        { 2 * 3600000 + 1, "2h" }, { 86400000, "1d" },
        { 5ull * 86400000, "5d" },
    };
    char buf[32];

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ctl_out_duration(buf, sizeof(buf), t[i].ms);
        cr_assert_str_eq(buf, t[i].s, "%llu", (unsigned long long)t[i].ms);
    }
}

/* One record from "key=value ..." (the text stays in buf). */
static ctl_rec_t one_rec(char *buf)
{
    ctl_rec_t *recs = NULL, r;
    ssize_t n = ctl_rec_parse(buf, &recs);

    cr_assert_eq(n, 1);
    r = recs[0];
    free(recs);
    return r;
}

/* 20 names of 5 bytes and 4 more left out: 5 fit in 40 bytes. */
Test(output, names_cut_with_count_json_whole, .init = cr_redirect_stdout)
{
    static const char *const cols[] = { "id", "names", "age_ms",
                                        "queued_bytes", NULL };
    char text[512] = "id=7 names=", json[512];
    ctl_rec_t r;

    for (int i = 0; i < 20; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text),
                 "%ssvc.%c", i ? "," : "", 'a' + i);
    strcat(text, " names_more=4 age_ms=2899 queued_bytes=1229\n");
    snprintf(json, sizeof(json), "%s", text);
    r = one_rec(text);
    cr_assert_eq(ctl_out_table(cols, &r, 1, true), 0);
    r = one_rec(json);
    ctl_out_json_records(&r, 1, CTL_JSON_SHORT);
    fflush(stdout);
    cr_assert_stdout_eq_str(
        "ID  NAMES" "                                   AGE  QUEUED\n"
        " 7  svc.a, svc.b, svc.c, svc.d, svc.e +19  2.8s  1.2KiB\n"
        "[{\"id\":7,\"names\":[\"svc.a\",\"svc.b\",\"svc.c\",\"svc.d\","
        "\"svc.e\",\"svc.f\",\"svc.g\",\"svc.h\",\"svc.i\",\"svc.j\","
        "\"svc.k\",\"svc.l\",\"svc.m\",\"svc.n\",\"svc.o\",\"svc.p\","
        "\"svc.q\",\"svc.r\",\"svc.s\",\"svc.t\"],\"names_more\":4,"
        "\"age_ms\":2899,\"queued_bytes\":1229}]\n");
}

/* A last NAMES column gets the room left; a name too long alone is cut
 * with "..."; lines are cut at the width. */
Test(output, table_fit_width, .init = cr_redirect_stdout)
{
    static const char *const cols[] = { "id", "comm", "names", NULL };
    char t1[] = "id=1 comm=a names=alpha,beta,gamma\n";
    char t2[] = "id=22 comm=bb names=averyveryverylongname\n";
    char t3[] = "id=3 comm=c names=\n";
    ctl_rec_t r[3] = { one_rec(t1), one_rec(t2), one_rec(t3) };

    cr_assert_eq(ctl_out_table_fit(cols, r, 3, true, 24), 0);
    cr_assert_eq(ctl_out_table_fit(cols, r, 1, false, 6), 0);
    fflush(stdout);
    cr_assert_stdout_eq_str(
        "ID  COMM  NAMES\n"
        " 1  a     alpha, beta +1\n"
        "22  bb    averyveryve...\n"
        " 3  c\n"
        "1  a\n");
}
