/*
 * capture.c - brokerctl capture: the monitor's records as pcapng (prefix
 * ctl_cap_).
 *
 * Owns the output file for the run (opened here, closed here; stdout for
 * "-" is only borrowed).  Blocks are little-endian: a Section Header, one
 * Interface Description (LINKTYPE_USER0, named "brokerd:SOCKET",
 * nanosecond timestamps), then an Enhanced Packet Block per record
 * holding the 32-byte frame header and the captured bytes, with a comment
 * naming both clients, their stream ids, the stream's name or topic and
 * the message size (contrib/wireshark/brokerd.lua decodes the packets).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "error.h"

#define CTL_CAP_LINKTYPE 147u      /* LINKTYPE_USER0 */
#define CTL_CAP_DEF_SNAP 256u       /* the broker's default snap length */
#define CTL_CAP_OPT_MAX  1024u      /* the longest option value written */

/* pcapng option codes */
enum { CTL_CAP_OPT_END = 0, CTL_CAP_OPT_COMMENT = 1, CTL_CAP_IF_NAME = 2,
       CTL_CAP_IF_DESCRIPTION = 3, CTL_CAP_IF_TSRESOL = 9 };

/* A block being built: at most one IDB or one EPB's header and options. */
typedef struct ctl_cap_buf {
    uint8_t b[64 + 3 * (CTL_CAP_OPT_MAX + 8)];
    size_t n;
} ctl_cap_buf_t;

static void ctl_cap_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void ctl_cap_put32(ctl_cap_buf_t *c, uint32_t v)
{
    ctl_cap_le32(c->b + c->n, v);
    c->n += 4;
}

/* One option: code, length, the value padded to 4 bytes (cut to
 * CTL_CAP_OPT_MAX). */
static void ctl_cap_opt(ctl_cap_buf_t *c, uint16_t code, const void *v,
                        size_t len)
{
    if (len > CTL_CAP_OPT_MAX)
        len = CTL_CAP_OPT_MAX;
    c->b[c->n++] = code & 0xff;
    c->b[c->n++] = code >> 8;
    c->b[c->n++] = len & 0xff;
    c->b[c->n++] = (uint8_t)(len >> 8);
    if (len)
        memcpy(c->b + c->n, v, len);
    memset(c->b + c->n + len, 0, (4 - len % 4) % 4);
    c->n += (len + 3) & ~(size_t)3;
}

static int ctl_cap_write(FILE *f, const void *buf, size_t len)
{
    if (fwrite(buf, 1, len, f) != len || fflush(f) == EOF)
        return errno ? -errno : -EIO;
    return 0;
}

/* The socket path the capture is of, as ctl_connect will use it. */
static void ctl_cap_path(const ctl_opts_t *o, char *buf, size_t len)
{
    if (o->socket && *o->socket)
        snprintf(buf, len, "%s", o->socket);
    else if (broker_default_path(buf, len) < 0)
        snprintf(buf, len, "?");
}

/* Section Header Block and one Interface Description Block. */
static int ctl_cap_header(FILE *f, const ctl_opts_t *o, uint32_t snap)
{
    static const uint8_t tsresol = 9;   /* 10^-9 s */
    char path[CTL_PATH_MAX], name[CTL_PATH_MAX + 16];
    static const char desc[] =
        "brokerd MONITOR records: frame header and captured payload";
    ctl_cap_buf_t c = { .n = 0 };
    int e;

    ctl_cap_put32(&c, 0x0A0D0D0Au);
    ctl_cap_put32(&c, 28);
    ctl_cap_put32(&c, 0x1A2B3C4Du);
    ctl_cap_put32(&c, 1);               /* major 1, minor 0 */
    ctl_cap_put32(&c, 0xffffffffu);     /* section length unknown */
    ctl_cap_put32(&c, 0xffffffffu);
    ctl_cap_put32(&c, 28);
    if ((e = ctl_cap_write(f, c.b, c.n)) < 0)
        return e;
    ctl_cap_path(o, path, sizeof(path));
    snprintf(name, sizeof(name), "brokerd:%s", path);
    c.n = 0;
    ctl_cap_put32(&c, 1);
    ctl_cap_put32(&c, 0);               /* total length, below */
    ctl_cap_put32(&c, CTL_CAP_LINKTYPE);    /* and 16 reserved bits */
    ctl_cap_put32(&c, 32 + snap);
    ctl_cap_opt(&c, CTL_CAP_IF_NAME, name, strlen(name));
    ctl_cap_opt(&c, CTL_CAP_IF_DESCRIPTION, desc, sizeof(desc) - 1);
    ctl_cap_opt(&c, CTL_CAP_IF_TSRESOL, &tsresol, 1);
    ctl_cap_opt(&c, CTL_CAP_OPT_END, NULL, 0);
    ctl_cap_put32(&c, (uint32_t)c.n + 4);
    ctl_cap_le32(c.b + 4, (uint32_t)c.n);
    return ctl_cap_write(f, c.b, c.n);
}

/* What the monitor line says around the frame, for the packet comment:
 * "S(comm) -> R(comm) stream=0xS->0xR size=N[+] [dest=NAME]". */
static size_t ctl_cap_comment(const ctl_mon_view_t *v, char *buf,
                              size_t len)
{
    char from[80], to[80], lab[4 * 256 + 16];
    const broker_monitor_rec_t *r = &v->rec;
    int n;

    ctl_mon_escape((const uint8_t *)v->from_comm, strlen(v->from_comm), 16,
                   false, from, sizeof(from), false);
    ctl_mon_escape((const uint8_t *)v->to_comm, strlen(v->to_comm), 16,
                   false, to, sizeof(to), false);
    lab[0] = '\0';
    if (v->dest_key) {
        size_t k = (size_t)snprintf(lab, sizeof(lab), " %s=", v->dest_key);
        ctl_mon_escape((const uint8_t *)v->dest, strlen(v->dest), 255,
                       false, lab + k, sizeof(lab) - k, false);
    }
    n = snprintf(buf, len, "%" PRIu64 "(%s) -> %" PRIu64 "(%s) stream=0x%"
                 PRIx32 "->0x%" PRIx32 " size=", r->sender, from,
                 r->receiver, to, r->sender_stream, r->receiver_stream);
    if (v->size_known)
        n += snprintf(buf + n, len - (size_t)n, "%" PRIu64 "%s", v->size,
                      v->more ? "+" : "");
    else
        n += snprintf(buf + n, len - (size_t)n, "?");
    n += snprintf(buf + n, len - (size_t)n, "%s", lab);
    return (size_t)n < len ? (size_t)n : len - 1;
}

/* One Enhanced Packet Block: the frame header, then the captured bytes,
 * then the comment. */
static int ctl_cap_record(broker_t *b, broker_msg_t *m, void *ctx)
{
    static const uint8_t pad[4];
    ctl_mon_t *mon = ctx;
    ctl_mon_view_t v;
    ctl_cap_buf_t opts = { .n = 0 };
    char text[CTL_CAP_OPT_MAX];
    uint8_t h[28], t[4];
    uint32_t cap, padded, total;
    int e;

    if (!ctl_mon_take(b, mon, m, &v))
        return 0;
    ctl_cap_opt(&opts, CTL_CAP_OPT_COMMENT, text,
                ctl_cap_comment(&v, text, sizeof(text)));
    ctl_cap_opt(&opts, CTL_CAP_OPT_END, NULL, 0);
    cap = 32 + v.rec.captured;
    padded = (cap + 3) & ~3u;
    total = 32 + padded + (uint32_t)opts.n;
    ctl_cap_le32(h, 6);
    ctl_cap_le32(h + 4, total);
    ctl_cap_le32(h + 8, 0);
    ctl_cap_le32(h + 12, (uint32_t)(v.rec.time_ns >> 32));
    ctl_cap_le32(h + 16, (uint32_t)v.rec.time_ns);
    ctl_cap_le32(h + 20, cap);
    ctl_cap_le32(h + 24, v.rec.length > UINT32_MAX - 32 ? UINT32_MAX
                                                        : 32 + v.rec.length);
    ctl_cap_le32(t, total);
    if ((e = ctl_cap_write(mon->file, h, sizeof(h))) < 0 ||
        (e = ctl_cap_write(mon->file, v.rec.header, 32)) < 0 ||
        (e = ctl_cap_write(mon->file, v.rec.preview, v.rec.captured)) < 0 ||
        (e = ctl_cap_write(mon->file, pad, padded - cap)) < 0 ||
        (e = ctl_cap_write(mon->file, opts.b, opts.n)) < 0 ||
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
        ctl_err("capture %s: %s", file, bk_sys_strerror(errno));
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_cap_header(mon.file, o, o->snap ? o->snap : CTL_CAP_DEF_SNAP);
    if (r == 0) {
        r = ctl_mon_loop(o, "capture", o->nargs > 1 ? o->args[1] : NULL,
                         ctl_cap_record, &mon);
    } else {
        ctl_err("capture %s: %s", file, bk_sys_strerror(-r));
        r = CTL_EXIT_RUNTIME;
    }
    if (mon.file != stdout && fclose(mon.file) == EOF && r == CTL_EXIT_OK) {
        ctl_err("capture %s: %s", file, bk_sys_strerror(errno));
        r = CTL_EXIT_RUNTIME;
    }
    return r;
}
