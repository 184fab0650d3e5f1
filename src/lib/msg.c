/*
 * msg.c - libbroker layer 6: received message objects.
 */
#include "config.h"
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "blkcache.h"
#include "shmview.h"
#include "msg.h"

_Static_assert(BK_REASM_OPEN == BROKER_MSGF_OPEN &&
               BK_REASM_CLOSE == BROKER_MSGF_CLOSE &&
               BK_REASM_CHUNK == BROKER_MSGF_CHUNK &&
               BK_REASM_LAST == BROKER_MSGF_LAST,
               "reassembly flags must match BROKER_MSGF_*");

/* ---- message blocks ------------------------------------------------------
 *
 * A packed packet brings hundreds of small messages at once, each in a
 * block of its own that the application frees one by one.  Freed blocks
 * are kept in a block cache (blkcache.h) of the thread that frees them (a
 * message may be freed by any thread, see THREAD SAFETY in libbroker(3)),
 * at most CACHE_BYTES per thread, and reused by the next messages that
 * thread's connections receive.  A thread's cache is emptied when it
 * exits. */

#define CACHE_BYTES  (512u * 1024)

static __thread bk_blkcache_t tcache = { .max_bytes = CACHE_BYTES };
static __thread bool tcache_keyed;      /* the exit destructor is set */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_key_ok;

static void cache_drain(void *arg)
{
    bk_blk_trim(arg);
}

static void cache_key_init(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_drain) == 0;
}

static void *blk_alloc(size_t size, uint8_t *cls)
{
    return bk_blk_alloc(&tcache, size, cls);
}

static void blk_free(void *p, uint8_t cls)
{
    if (cls && !tcache_keyed) {
        pthread_once(&cache_once, cache_key_init);
        if (!cache_key_ok || pthread_setspecific(cache_key, &tcache) != 0) {
            free(p);
            return;
        }
        tcache_keyed = true;
    }
    bk_blk_free(&tcache, p, cls);
}

/* ---- messages -------------------------------------------------------------- */

struct bk_msg *bk_msg_event(broker_kind_t kind, uint32_t stream,
                            uint64_t source, int code, const void *text,
                            size_t textlen)
{
    struct bk_msg *m = calloc(1, sizeof(*m) + textlen + 1);

    if (!m)
        return NULL;
    bk_list_init(&m->link);
    m->pub.kind = kind;
    m->pub.stream = stream;
    m->pub.source = source;
    m->pub.code = code;
    if (kind == BROKER_MSG_ERROR || textlen) {
        char *t = (char *)(m + 1);
        if (textlen)
            memcpy(t, text, textlen);
        t[textlen] = '\0';
        m->pub.data = t;
        m->pub.len = textlen;
    }
    return m;
}

struct bk_msg *bk_msg_gap(uint32_t sub_id, uint64_t missed)
{
    struct bk_msg *m = bk_msg_event(BROKER_MSG_GAP, 0, 0, 0, NULL, 0);

    if (!m)
        return NULL;
    m->pub.sub_id = sub_id;
    m->pub.gap = missed;
    return m;
}

struct bk_msg *bk_msg_from_out(bk_reasm_out_t *o, const char *topic,
                               uint32_t sub_id)
{
    size_t namelen = o->named ? strlen(o->name) + 1 : 0;
    size_t toplen = topic ? strlen(topic) + 1 : 0;
    size_t inl = o->data_owned ? 0 : o->len + 1;
    size_t fdsz = o->nfds * sizeof(int);
    uint8_t cls;
    struct bk_msg *m = blk_alloc(sizeof(*m) + fdsz + namelen + toplen + inl,
                                 &cls);
    char *p;

    if (!m)
        return NULL;
    memset(m, 0, sizeof(*m));
    m->blk = cls;
    bk_list_init(&m->link);
    p = (char *)(m + 1);
    m->pub.kind = BROKER_MSG_DATA;
    m->pub.flags = o->flags;
    m->pub.source = o->source;
    m->pub.stream = o->stream;
    if (o->nfds) {
        m->pub.fds = (int *)p;
        memcpy(p, o->fds, fdsz);
        m->pub.nfds = o->nfds;
        p += fdsz;
        o->nfds = 0;
    }
    if (namelen) {
        m->pub.name = p;
        memcpy(p, o->name, namelen);
        p += namelen;
    }
    if (toplen) {
        m->pub.topic = p;
        memcpy(p, topic, toplen);
        p += toplen;
        m->pub.flags |= BROKER_MSGF_TOPIC;
        m->pub.sub_id = sub_id;
    }
    if (o->data_owned) {
        m->own_data = o->data;
        m->pub.data = o->data;
        o->data_owned = false;
    } else {
        if (o->len)
            memcpy(p, o->data, o->len);
        p[o->len] = '\0';
        m->pub.data = p;
    }
    m->pub.len = o->len;
    o->data = NULL;
    o->len = 0;
    return m;
}

void bk_msg_free(struct bk_msg *m)
{
    if (!m)
        return;
    if (m->view)
        bk_shmview_put(m->view, m->view_off);
    for (unsigned i = 0; i < m->pub.nfds; i++)
        if (m->pub.fds && m->pub.fds[i] >= 0)
            close(m->pub.fds[i]);
    free(m->own_data);
    blk_free(m, m->blk);
}
