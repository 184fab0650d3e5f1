/*
 * msg.h - libbroker layer 6: a received message or event (prefix
 * bk_msg_).  Not installed.
 *
 * Owns struct bk_msg, whose public part (pub) the application gets from
 * broker_recv, broker_call or a callback.  One allocation holds the
 * object, its fds array, its name, its topic and (unless it is owned
 * apart) its payload.
 *
 * Ownership: a struct bk_msg belongs to whoever holds it (the FIFO or
 * the watch slot of in.c, or the application once handed out), and it
 * owns its fds (closed on free), its payload allocated apart (own_data)
 * and its view of a shared segment (view, shmview.h).
 */
#ifndef BK_MSG_H
#define BK_MSG_H

#include "conn.h"
#include "reasm.h"

struct bk_acall;
struct bk_rseg;

struct bk_msg {
    bk_list_t link;             /* on the FIFO of in.c */
    struct bk_acall *acall;     /* async call it answers, or NULL */
    void *own_data;             /* payload allocated apart, or NULL */
    struct bk_rseg *view;       /* BROKER_MSGF_SHM: the segment data is in */
    uint64_t view_off;          /* and the descriptor's offset */
    uint8_t blk;                /* msg.c's block class, 0: plain malloc */
    broker_msg_t pub;
};

static inline struct bk_msg *bk_msg_of(broker_msg_t *pub)
{
    return bk_container_of(pub, struct bk_msg, pub);
}

/* A CLOSE, ERROR or MONITOR event; its text (if any) is copied and
 * NUL-terminated into data/len.  NULL: -ENOMEM. */
struct bk_msg *bk_msg_event(broker_kind_t kind, uint32_t stream,
                            uint64_t source, int code, const void *text,
                            size_t textlen);
/* A GAP event: `missed` publications of subscription sub_id dropped.
 * NULL: -ENOMEM. */
struct bk_msg *bk_msg_gap(uint32_t sub_id, uint64_t missed);
/* Wrap a reassembled message.  Takes the output's data (when owned) and
 * fds; on failure (NULL: -ENOMEM) the output is left for the caller to
 * release.  topic (NUL-terminated, copied; NULL for none) makes it a
 * publication of subscription sub_id. */
struct bk_msg *bk_msg_from_out(bk_reasm_out_t *o, const char *topic,
                               uint32_t sub_id);
/* Close its fds, end its view, free it.  NULL is ignored. */
void bk_msg_free(struct bk_msg *m);

#endif
