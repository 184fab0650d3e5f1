/*
 * capture.c - brokerctl capture: the monitor's records as pcapng (prefix
 * ctl_cap_).
 *
 * Owns the output file for the run (opened here, closed here; stdout for
 * "-" is only borrowed).  Blocks are little-endian: a Section Header, one
 * Interface Description (LINKTYPE_USER0), then an Enhanced Packet Block
 * per record holding the 32-byte frame header and the captured bytes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"

#define CTL_CAP_LINKTYPE 147u      /* LINKTYPE_USER0 */
#define CTL_CAP_DEF_SNAP 256u       /* the broker's default snap length */

static void ctl_cap_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int ctl_cap_write(FILE *f, const void *buf, size_t len)
{
    if (fwrite(buf, 1, len, f) != len || fflush(f) == EOF)
        return errno ? -errno : -EIO;
    return 0;
}

/* Section Header Block and one Interface Description Block. */
static int ctl_cap_header(FILE *f, uint32_t snap)
{
    uint8_t b[28 + 20];

    ctl_cap_le32(b, 0x0A0D0D0Au);
    ctl_cap_le32(b + 4, 28);
    ctl_cap_le32(b + 8, 0x1A2B3C4Du);
    b[12] = 1; b[13] = 0;               /* major 1 */
    b[14] = 0; b[15] = 0;               /* minor 0 */
    memset(b + 16, 0xff, 8);            /* section length unknown */
    ctl_cap_le32(b + 24, 28);
    ctl_cap_le32(b + 28, 1);
    ctl_cap_le32(b + 32, 20);
    b[36] = CTL_CAP_LINKTYPE & 0xff;
    b[37] = CTL_CAP_LINKTYPE >> 8;
    b[38] = 0; b[39] = 0;
    ctl_cap_le32(b + 40, 32 + snap);
    ctl_cap_le32(b + 44, 20);
    return ctl_cap_write(f, b, sizeof(b));
}

/* One Enhanced Packet Block: the frame header, then the captured bytes. */
static int ctl_cap_record(broker_t *b, broker_msg_t *m, void *ctx)
{
    static const uint8_t pad[4];
    ctl_mon_t *mon = ctx;
    broker_monitor_rec_t r;
    uint8_t h[28], t[4];
    uint64_t us;
    uint32_t cap, padded;
    int e;

    (void)b;
    if (!ctl_mon_take(mon, m, &r))
        return 0;
    cap = 32 + r.captured;
    padded = (cap + 3) & ~3u;
    us = r.time_ns / 1000u;
    ctl_cap_le32(h, 6);
    ctl_cap_le32(h + 4, 32 + padded);
    ctl_cap_le32(h + 8, 0);
    ctl_cap_le32(h + 12, (uint32_t)(us >> 32));
    ctl_cap_le32(h + 16, (uint32_t)us);
    ctl_cap_le32(h + 20, cap);
    ctl_cap_le32(h + 24, r.length > UINT32_MAX - 32 ? UINT32_MAX
                                                     : 32 + r.length);
    ctl_cap_le32(t, 32 + padded);
    if ((e = ctl_cap_write(mon->file, h, sizeof(h))) < 0 ||
        (e = ctl_cap_write(mon->file, r.header, 32)) < 0 ||
        (e = ctl_cap_write(mon->file, r.preview, r.captured)) < 0 ||
        (e = ctl_cap_write(mon->file, pad, padded - cap)) < 0 ||
        (e = ctl_cap_write(mon->file, t, sizeof(t))) < 0)
        return e;
    return 0;
}

int ctl_run_capture(const ctl_opts_t *o)
{
    const char *file = o->args[0];
    ctl_mon_t mon = { .file = stdout };
    int r;

    if (strcmp(file, "-") && !(mon.file = fopen(file, "wbe"))) {
        ctl_err("capture %s: %s", file, strerror(errno));
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_cap_header(mon.file, o->snap ? o->snap : CTL_CAP_DEF_SNAP);
    if (r == 0) {
        r = ctl_mon_loop(o, "capture", o->nargs > 1 ? o->args[1] : NULL,
                         ctl_cap_record, &mon);
    } else {
        ctl_err("capture %s: %s", file, strerror(-r));
        r = CTL_EXIT_RUNTIME;
    }
    if (mon.file != stdout && fclose(mon.file) == EOF && r == CTL_EXIT_OK) {
        ctl_err("capture %s: %s", file, strerror(errno));
        r = CTL_EXIT_RUNTIME;
    }
    return r;
}
