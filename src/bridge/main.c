/*
 * main.c - brokerd-nats: a libbroker client of the local brokerd and a
 * libnats client of a NATS cluster on one libuv loop (prefix bn_main).
 *
 * Start: settings (exit 2 on an error), the local connection, the export
 * subscriptions and fixed remote names, then NATS (whose first connection
 * may come later).  SIGHUP re-reads the file (an error keeps the settings
 * in use); SIGTERM and SIGINT end the bridge: it says bye on NATS, fails
 * the calls in flight with ESHUTDOWN and closes both connections.
 * Exit status: 0 after a signal, 1 on a runtime failure (brokerd gone,
 * NATS closed for good), 2 on bad settings.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "log.h"

#define BN_TICK_MS 250

static int bn_main_argc;
static char **bn_main_argv;

void bn_quit(bn_bridge_t *br, int code)
{
    if (code > br->exit_code)
        br->exit_code = code;
    if (br->stopping)
        return;
    br->stopping = true;
    uv_stop(br->loop);
}

/* Defaults, the command line, then the file: 0, BN_CONF_HANDLED or -EINVAL
 * with the reason in err (empty if already printed). */
static int bn_main_settings(bn_conf_t *c, char *err, size_t el)
{
    int r;

    err[0] = '\0';
    bn_conf_defaults(c);
    r = bn_conf_args(c, bn_main_argc, bn_main_argv);
    if (r != 0)
        return r;
    return bn_conf_read(c, err, el);
}

static void bn_main_apply(bn_bridge_t *br)
{
    bn_log_set_level(br->conf.log_level);
    bn_export_sync(br);
    bn_group_sync(br);
    bn_import_sync(br);
    bn_call_sync_offers(br);
    bn_offers_sync_fixed(br);
}

static void bn_main_reload(bn_bridge_t *br)
{
    char err[1024];
    bn_conf_t fresh;

    if (bn_main_settings(&fresh, err, sizeof(err)) != 0) {
        bn_log(BN_LOG_ERROR, "reload: %s; keeping the settings in use",
               err[0] ? err : "bad command line");
        bn_conf_free(&fresh);
        return;
    }
    bn_conf_keep_restart(&fresh, &br->conf);
    bn_conf_free(&br->conf);
    br->conf = fresh;
    bn_main_apply(br);
    bn_offers_announce(br, false);
    bn_log(BN_LOG_INFO, "reloaded %s", br->conf.conffile ?
           br->conf.conffile : "the settings");
}

static void bn_main_signal(uv_signal_t *s, int signum)
{
    bn_bridge_t *br = s->data;

    if (signum == SIGHUP)
        bn_main_reload(br);
    else
        bn_quit(br, 0);
}

static void bn_main_tick(uv_timer_t *t)
{
    bn_bridge_t *br = t->data;

    bn_stats_tick(br);
    bn_call_tick(br);
    bn_parts_tick(br);
    bn_nats_group_connect(br);
    bn_nats_reap_drains(false);
}

static void bn_main_handles(bn_bridge_t *br)
{
    uv_signal_t *sigs[] = { &br->sig_term, &br->sig_int, &br->sig_hup };
    int nums[] = { SIGTERM, SIGINT, SIGHUP };

    for (size_t i = 0; i < 3; i++) {
        uv_signal_init(br->loop, sigs[i]);
        sigs[i]->data = br;
        uv_signal_start(sigs[i], bn_main_signal, nums[i]);
    }
    uv_timer_init(br->loop, &br->tick);
    br->tick.data = br;
    uv_timer_start(&br->tick, bn_main_tick, BN_TICK_MS, BN_TICK_MS);
}

static void bn_main_shutdown(bn_bridge_t *br)
{
    br->stopping = true;
    if (br->nc)
        bn_offers_bye(br);
    bn_call_stop(br);
    bn_import_stop(br);
    bn_group_stop(br);
    bn_parts_stop(br);
    bn_local_stop(br);
    bn_export_stop(br);
    bn_offers_stop(br);
    bn_nats_stop(br);
    uv_close((uv_handle_t *)&br->sig_term, NULL);
    uv_close((uv_handle_t *)&br->sig_int, NULL);
    uv_close((uv_handle_t *)&br->sig_hup, NULL);
    uv_close((uv_handle_t *)&br->tick, NULL);
    uv_run(br->loop, UV_RUN_DEFAULT);
}

static int bn_main_run(bn_bridge_t *br)
{
    br->st.started_ms = br->st.rate_at_ms = bn_now_ms();
    br->state = "connecting";
    bn_log_set_level(br->conf.log_level);
    bn_parts_init(br);
    if (bn_local_start(br) < 0)
        return 1;
    bn_export_sync(br);
    bn_offers_sync_fixed(br);
    if (bn_nats_start(br) < 0) {
        bn_local_stop(br);
        uv_run(br->loop, UV_RUN_NOWAIT);
        return 1;
    }
    bn_group_sync(br);              /* after bn_nats_start: its options */
    bn_main_handles(br);
    bn_log(BN_LOG_INFO, "host %s, prefix %s: bridging %zu export(s), %zu "
           "import(s), %zu offer(s)", br->conf.host, br->conf.prefix,
           br->conf.exports.n, br->conf.imports.n + br->conf.groups.n,
           br->conf.offers.n);
    if (!br->stopping)
        uv_run(br->loop, UV_RUN_DEFAULT);
    bn_main_shutdown(br);
    return br->exit_code;
}

int main(int argc, char **argv)
{
    static bn_bridge_t br;
    char err[1024];
    uv_loop_t loop;
    int r;

    bn_main_argc = argc;
    bn_main_argv = argv;
    r = bn_main_settings(&br.conf, err, sizeof(err));
    if (r != 0 || br.conf.check_only) {
        if (r < 0 && err[0])
            fprintf(stderr, "brokerd-nats: %s\n", err);
        bn_conf_free(&br.conf);
        return r < 0 ? 2 : 0;
    }
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&loop) < 0) {
        bn_conf_free(&br.conf);
        return 1;
    }
    br.loop = &loop;
    r = bn_main_run(&br);
    uv_loop_close(&loop);
    bn_conf_free(&br.conf);
    return r;
}
