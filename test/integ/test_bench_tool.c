/*
 * test_bench_tool.c - brokerctl bench against a real brokerd: every
 * workload with a tiny count succeeds, its JSON (one flat object) parses
 * and counts exactly what was sent with no message out of order (with
 * and without batched sends), the
 * baseline adds its figures and ratios, repetitions give a spread, the
 * table has its columns, and bad options are usage errors naming the
 * option.
 *
 * No figure is compared with a threshold: the machine's speed is not
 * what is tested, only that every message was measured.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(bench_tool, 240);

/* brokerctl with ARGS, which must exit with `code`; its output in *o. */
#define CTL_EXPECT(code, o, ...) do { \
        int st_ = th_ctl(br.sock, (o), __VA_ARGS__, NULL); \
        cr_assert(TH_EXITED(st_, code), "brokerctl exit 0x%x, stderr: %s", \
                  st_, (o)->err); \
    } while (0)

/* Run `bench ARGS... --json`, which must succeed; parse its object. */
#define BENCH_JSON(obj, ...) do { \
        th_output_t o_; \
        CTL_EXPECT(0, &o_, "bench", "--json", __VA_ARGS__); \
        cr_assert_geq(th_json_object(o_.out, 0, (obj)), 1, \
                      "not one JSON object: %s", o_.out); \
        th_output_free(&o_); \
    } while (0)

static unsigned long long get_u64(const th_json_obj_t *j, const char *label,
                                  const char *field)
{
    char key[128];

    snprintf(key, sizeof(key), "%s.%s", label, field);
    return th_json_u64(j, key);
}

/* The number at LABEL.FIELD (a figure: not necessarily an integer). */
static double get_num(const th_json_obj_t *j, const char *label,
                      const char *field)
{
    const th_json_member_t *m;
    char key[128];

    snprintf(key, sizeof(key), "%s.%s", label, field);
    m = th_json_get(j, key);
    cr_assert_not_null(m, "no key %s", key);
    cr_assert_eq(m->type, TH_JSON_NUM, "%s is not a number: %s", key,
                 m->val);
    return strtod(m->val, NULL);
}

static bool has_key(const th_json_obj_t *j, const char *label,
                    const char *field)
{
    char key[128];

    snprintf(key, sizeof(key), "%s.%s", label, field);
    return th_json_get(j, key) != NULL;
}

/* label ran `count` times `factor` messages, all received in order. */
static void assert_counted(const th_json_obj_t *j, const char *label,
                           unsigned long long count,
                           unsigned long long expect_sent)
{
    cr_assert_eq(get_u64(j, label, "count"), count, "%s.count", label);
    cr_assert_eq(get_u64(j, label, "sent"), expect_sent, "%s.sent", label);
    cr_assert_eq(get_u64(j, label, "received"), expect_sent,
                 "%s.received", label);
    cr_assert_eq(get_u64(j, label, "badseq"), 0, "%s.badseq", label);
    cr_assert_eq(get_u64(j, label, "lost"), 0, "%s.lost", label);
    cr_assert_eq(get_u64(j, label, "failed"), 0, "%s.failed", label);
}

Test(bench_tool, pingpong_counts_every_round_trip)
{
    th_json_obj_t j;

    BENCH_JSON(&j, "pingpong", "--count", "40");
    assert_counted(&j, "pingpong", 40, 40);
    cr_assert_eq(get_u64(&j, "pingpong", "size"), 64);
    cr_assert_gt(get_num(&j, "pingpong", "median_us"), 0.0);
    cr_assert_leq(get_num(&j, "pingpong", "median_us"),
                  get_num(&j, "pingpong", "p99_us"));
    cr_assert_leq(get_num(&j, "pingpong", "p99_us"),
                  get_num(&j, "pingpong", "p999_us"));
    cr_assert_eq(th_json_u64(&j, "reps"), 1);
    cr_assert_eq(th_json_u64(&j, "baseline"), 0);
    cr_assert(!has_key(&j, "pingpong", "median_us.pair"));
    cr_assert_eq((pid_t)th_json_u64(&j, "broker_pid"), br.pid);
    cr_assert_str_eq(th_json_str(&j, "socket"), br.sock);
    th_json_obj_free(&j);
}

Test(bench_tool, stream_runs_both_default_sizes_or_the_one_given)
{
    th_json_obj_t j;

    BENCH_JSON(&j, "stream", "--count", "60");
    assert_counted(&j, "stream64", 60, 60);
    assert_counted(&j, "stream4096", 60, 60);
    cr_assert_eq(get_u64(&j, "stream4096", "size"), 4096);
    cr_assert_geq(get_num(&j, "stream64", "msg_s"), 0.0);
    cr_assert_geq(get_num(&j, "stream4096", "mb_s"), 0.0);
    th_json_obj_free(&j);

    /* Larger than a packet: fragments, reassembled and counted. */
    BENCH_JSON(&j, "stream", "--count", "12", "--size", "100K");
    assert_counted(&j, "stream102400", 12, 12);
    cr_assert(!has_key(&j, "stream64", "count"));
    th_json_obj_free(&j);
}

Test(bench_tool, producers_batch_unless_no_batch)
{
    th_json_obj_t j;

    BENCH_JSON(&j, "stream", "fanout", "--size", "100", "--count", "300",
               "--subs", "2");
    cr_assert_eq(th_json_u64(&j, "batch"), 1);
    assert_counted(&j, "stream100", 300, 300);
    assert_counted(&j, "fanout", 300, 600);
    th_json_obj_free(&j);

    BENCH_JSON(&j, "stream", "fanout", "--size", "100", "--count", "300",
               "--subs", "2", "--no-batch");
    cr_assert_eq(th_json_u64(&j, "batch"), 0);
    assert_counted(&j, "stream100", 300, 300);
    assert_counted(&j, "fanout", 300, 600);
    th_json_obj_free(&j);
}

Test(bench_tool, bulk_measures_both_paths)
{
    th_json_obj_t j;

    /* Each repetition sends count messages per path: buf_alloc and
     * broker_send. */
    BENCH_JSON(&j, "bulk", "--count", "6", "--size", "1M");
    assert_counted(&j, "bulk", 6, 12);
    cr_assert_eq(get_u64(&j, "bulk", "size"), 1u << 20);
    cr_assert_geq(get_num(&j, "bulk", "buf_gb_s"), 0.0);
    cr_assert_geq(get_num(&j, "bulk", "send_gb_s"), 0.0);
    th_json_obj_free(&j);
}

Test(bench_tool, fanout_delivers_to_every_subscriber)
{
    broker_t *b = th_connect(&br);
    th_json_obj_t j;

    BENCH_JSON(&j, "fanout", "--count", "30", "--subs", "3");
    assert_counted(&j, "fanout", 30, 90);
    cr_assert_eq(get_u64(&j, "fanout", "n"), 3);
    cr_assert_geq(get_num(&j, "fanout", "msg_s"), 0.0);
    th_json_obj_free(&j);
    /* Its clients leave nothing behind. */
    th_await_status(b, "subscriptions", 0);
    th_await_status(b, "clients", 1);
    broker_close(b);
}

Test(bench_tool, clients_count_round_trips_and_read_the_broker_rss)
{
    th_json_obj_t j;

    BENCH_JSON(&j, "clients", "--count", "5", "--clients", "4");
    assert_counted(&j, "clients", 5, 20);
    cr_assert_eq(get_u64(&j, "clients", "n"), 4);
    cr_assert_geq(get_num(&j, "clients", "rtt_s"), 0.0);
    /* The test runs as the broker's user: /proc/PID/status is readable. */
    (void)get_num(&j, "clients", "rss_kib");
    th_json_obj_free(&j);

    /* Seven clients over three processes (3 + 2 + 2 connections): every
     * connection makes its calls, each answered with its own sequence
     * number; never more processes than clients. */
    BENCH_JSON(&j, "clients", "--count", "6", "--clients", "7",
               "--procs", "3");
    assert_counted(&j, "clients", 6, 42);
    cr_assert_eq(get_u64(&j, "clients", "procs"), 3);
    th_json_obj_free(&j);
    BENCH_JSON(&j, "clients", "--count", "3", "--clients", "2",
               "--procs", "5");
    assert_counted(&j, "clients", 3, 6);
    cr_assert_eq(get_u64(&j, "clients", "procs"), 2);
    th_json_obj_free(&j);
}

Test(bench_tool, baseline_gives_pair_and_relay_ratios)
{
    static const char *const labels[] = { "pingpong", "stream64",
                                          "fanout" };
    static const char *const figs[] = { "median_us", "msg_s", "msg_s" };
    th_json_obj_t j;
    char f[64];

    BENCH_JSON(&j, "pingpong", "stream", "fanout", "--size", "64",
               "--count", "30", "--subs", "2", "--baseline");
    cr_assert_eq(th_json_u64(&j, "baseline"), 1);
    assert_counted(&j, "pingpong", 30, 30);
    assert_counted(&j, "stream64", 30, 30);
    assert_counted(&j, "fanout", 30, 60);
    for (int i = 0; i < 3; i++) {
        const char *via[] = { "pair", "relay" };
        for (int v = 0; v < 2; v++) {
            snprintf(f, sizeof(f), "%s.%s", figs[i], via[v]);
            cr_assert_geq(get_num(&j, labels[i], f), 0.0, "%s", f);
            snprintf(f, sizeof(f), "%s.%s_ratio", figs[i], via[v]);
            cr_assert_gt(get_num(&j, labels[i], f), 0.0, "%s", f);
        }
    }
    th_json_obj_free(&j);

    /* bulk's baseline is the shared-memory floor, for both paths; there
     * is no relay of it. */
    BENCH_JSON(&j, "bulk", "--count", "8", "--size", "64K", "--baseline");
    assert_counted(&j, "bulk", 8, 16);
    cr_assert_gt(get_num(&j, "bulk", "buf_gb_s.pair_ratio"), 0.0);
    cr_assert_gt(get_num(&j, "bulk", "send_gb_s.pair_ratio"), 0.0);
    cr_assert(!has_key(&j, "bulk", "buf_gb_s.relay"));
    th_json_obj_free(&j);

    /* Nor for clients. */
    BENCH_JSON(&j, "clients", "--count", "2", "--clients", "2",
               "--baseline");
    assert_counted(&j, "clients", 2, 4);
    cr_assert(!has_key(&j, "clients", "rtt_s.pair"));
    th_json_obj_free(&j);
}

Test(bench_tool, reps_give_the_median_within_its_spread)
{
    th_json_obj_t j;

    BENCH_JSON(&j, "pingpong", "--count", "20", "--reps", "3");
    cr_assert_eq(th_json_u64(&j, "reps"), 3);
    assert_counted(&j, "pingpong", 20, 60);
    cr_assert_leq(get_num(&j, "pingpong", "median_us.min"),
                  get_num(&j, "pingpong", "median_us"));
    cr_assert_leq(get_num(&j, "pingpong", "median_us"),
                  get_num(&j, "pingpong", "median_us.max"));
    th_json_obj_free(&j);
}

Test(bench_tool, table_has_a_row_per_figure_and_the_baseline_columns)
{
    th_output_t o;

    CTL_EXPECT(0, &o, "bench", "pingpong", "fanout", "--count", "20",
               "--subs", "2", "--baseline");
    cr_assert(strstr(o.out, "WORKLOAD"), "%s", o.out);
    cr_assert(strstr(o.out, "BROKERD"), "%s", o.out);
    cr_assert(strstr(o.out, "RELAY"), "%s", o.out);
    cr_assert(strstr(o.out, "\npingpong    p99.9 "), "%s", o.out);
    cr_assert(strstr(o.out, "\nfanout      delivered "), "%s", o.out);
    cr_assert(strstr(o.out, "x\n"), "no ratio column: %s", o.out);
    th_output_free(&o);

    CTL_EXPECT(0, &o, "bench", "pingpong", "--count", "10", "--no-legend");
    cr_assert(!strstr(o.out, "WORKLOAD"), "%s", o.out);
    cr_assert(!strncmp(o.out, "pingpong    median ", 19), "%s", o.out);
    th_output_free(&o);
}

Test(bench_tool, bad_options_are_usage_errors_naming_the_option)
{
    static const struct {
        const char *args[4];
        const char *named;
    } bad[] = {
        { { "--size", "abc" }, "--size" },
        { { "--size", "4" }, "--size" },
        { { "--size", "2G" }, "--size" },
        { { "--subs", "0" }, "--subs" },
        { { "--clients", "x" }, "--clients" },
        { { "--procs", "0" }, "--procs" },
        { { "--procs", "1001" }, "--procs" },
        { { "--reps", "0" }, "--reps" },
        { { "--count", "-3" }, "--count" },
        { { "--count" }, "--count" },
        { { "--bogus" }, "--bogus" },
        { { "pingpang" }, "pingpang" },
    };
    th_output_t o;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = th_ctl(br.sock, &o, "bench", bad[i].args[0],
                        bad[i].args[1], NULL);
        cr_assert(TH_EXITED(st, 2), "bench %s: exit 0x%x", bad[i].args[0],
                  st);
        cr_assert(strstr(o.err, bad[i].named), "bench %s: stderr '%s'",
                  bad[i].args[0], o.err);
        th_output_free(&o);
    }
    /* bench's options belong to bench. */
    CTL_EXPECT(2, &o, "ping", "--baseline");
    cr_assert(strstr(o.err, "--baseline"), "%s", o.err);
    th_output_free(&o);
}

Test(bench_tool, no_broker_is_a_runtime_error)
{
    th_output_t o;
    char sock[200];
    int st;

    snprintf(sock, sizeof(sock), "%s/none.sock", br.dir);
    st = th_ctl(sock, &o, "bench", "pingpong", "--count", "5", NULL);
    cr_assert(TH_EXITED(st, 1), "exit 0x%x", st);
    cr_assert(strstr(o.err, "brokerctl: "), "%s", o.err);
    th_output_free(&o);
}
