/*
 * test_list_cursor.c - LIST paging by cursor against a real brokerd: a
 * long listing paged to the end has every record once and in key order,
 * records that come and go between pages do not make those present
 * throughout repeat or go missing, a cursor past the end or between keys,
 * and the payload lengths that are refused (the old 4-byte start index
 * among them).
 *
 * brokerd runs with the smallest max_packet (4096), so a few hundred
 * records take many pages.  Nothing here waits for time: every change
 * between pages is a request the broker has answered (REGISTER, RELEASE,
 * a connect's WELCOME) before the next page is asked for, or does not
 * matter to the assertion (a closed client may or may not be listed).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "harness.h"

static th_broker_t br;

static void lc_setup(void)
{
    th_broker_start(&br, "--max-packet", "4096", "--max-names", "4000",
                    NULL);
}

static void lc_teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(cursor, .init = lc_setup, .fini = lc_teardown, .timeout = 240);

static const uint32_t list_ops[] = {
    BROKER_CTRL_LIST_CLIENTS, BROKER_CTRL_LIST_NAMES,
    BROKER_CTRL_LIST_STREAMS, BROKER_CTRL_LIST_SHM,
    BROKER_CTRL_LIST_SUBS, BROKER_CTRL_LIST_USERS,
};
#define NOPS (sizeof(list_ops) / sizeof(list_ops[0]))

/* One page after `cursor`: returns its next= cursor; *records (malloc'd,
 * NUL-terminated) is the page without its trailer line. */
static uint64_t page_after(broker_t *b, uint32_t op, uint64_t cursor,
                           char **records)
{
    uint8_t req[BK_LIST_REQ_SIZE];
    void *page = NULL;
    size_t len = 0;
    char *text, *last, *end;
    uint64_t next;

    bk_put64(req, cursor);
    TH_OK(broker_ctrl(b, op, req, sizeof(req), &page, &len));
    text = page;
    cr_assert_leq(len, broker_limits(b)->max_packet - BK_HDR_SIZE);
    cr_assert(len > 0 && text[len - 1] == '\n', "page: %s", text);
    text[len - 1] = '\0';
    last = strrchr(text, '\n');
    last = last ? last + 1 : text;
    cr_assert(!strncmp(last, "next=", 5), "trailer: %s", last);
    next = strtoull(last + 5, &end, 10);
    cr_assert_eq(*end, '\0', "trailer: %s", last);
    *last = '\0';
    *records = text;
    return next;
}

/* The number after `key=` in line (which must have it). */
static uint64_t field(const char *line, const char *key)
{
    char pat[32];
    const char *p;

    snprintf(pat, sizeof(pat), "%s=", key);
    p = strstr(line, pat);
    cr_assert(p && (p == line || p[-1] == ' '), "no %s in: %s", key, line);
    return strtoull(p + strlen(pat), NULL, 10);
}

/* The index of a name "<prefix>.NNNN" on line, or -1 if it has another
 * prefix. */
static int name_index(const char *line, const char *prefix)
{
    char pat[64];
    int idx;

    snprintf(pat, sizeof(pat), "name=%s.%%d ", prefix);
    return sscanf(line, pat, &idx) == 1 ? idx : -1;
}

/* A small deterministic generator: the churn is the same on every run. */
/* Remove every " age_ms=N" from s: two pages of the same records differ
 * there when a millisecond passes between the requests. */
static void drop_ages(char *s)
{
    static const char key[] = " age_ms=";
    char *k;

    while ((k = strstr(s, key))) {
        char *end = k + sizeof(key) - 1;

        while (*end >= '0' && *end <= '9')
            end++;
        memmove(k, end, strlen(end) + 1);
    }
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

#define MANY 3000

/* 3000 names paged to the end: each once, in registration order (the
 * creation number is the key), the cursors growing, and the same records
 * as broker_list joins. */
Test(cursor, names_each_once_in_key_order)
{
    broker_t *a = th_connect(&br);
    static unsigned char seen[MANY];
    char name[64], *recs, *save = NULL, *all;
    uint64_t cursor = 0, next;
    unsigned pages = 0, total = 0;
    int prev = -1;
    size_t all_len = 0;

    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof(name), "cur.%04d", i);
        th_register(a, name);
    }
    do {
        next = page_after(a, BROKER_CTRL_LIST_NAMES, cursor, &recs);
        cr_assert(next == 0 || next > cursor, "cursor %" PRIu64 " -> %"
                  PRIu64, cursor, next);
        cr_assert(next == 0 || *recs, "a page that continues is empty");
        for (char *l = strtok_r(recs, "\n", &save); l;
             l = strtok_r(NULL, "\n", &save)) {
            int idx = name_index(l, "cur");

            cr_assert(idx >= 0 && idx < MANY, "record: %s", l);
            cr_assert_eq(seen[idx], 0, "name %d listed twice", idx);
            cr_assert_gt(idx, prev, "name %d after %d", idx, prev);
            seen[idx] = 1;
            prev = idx;
            total++;
        }
        free(recs);
        cursor = next;
        pages++;
    } while (next);
    cr_assert_eq(total, MANY);
    cr_assert_gt(pages, 10, "only %u pages", pages);

    /* broker_list pages the same way: the same names in the same order
     * (age_ms may differ, the clock moved on). */
    TH_OK(broker_list(a, BROKER_CTRL_LIST_NAMES, &all, &all_len));
    prev = -1;
    total = 0;
    for (char *l = strtok_r(all, "\n", &save); l;
         l = strtok_r(NULL, "\n", &save)) {
        cr_assert_eq(name_index(l, "cur"), prev + 1, "record: %s", l);
        prev++;
        total++;
    }
    cr_assert_eq(total, MANY);
    free(all);
    broker_close(a);
}

/* Names released and registered between every two pages: each name that
 * stays registered the whole time appears once and in order, and no name
 * appears twice.  The released names are taken from all over the key
 * range, before and after the cursor: with the old index paging, removing
 * a record before the start made the next page skip one. */
Test(cursor, names_churn_between_pages)
{
    broker_t *a = th_connect(&br);
    enum { HALF = MANY / 2, CHURN = 20 };
    static unsigned char stay_seen[HALF], go_live[HALF], go_seen[HALF];
    static unsigned char new_seen[4 * HALF];
    char name[64], *recs, *save = NULL;
    uint64_t cursor = 0, next, rng = 0x2545f4914f6cdd1du;
    int prev_stay = -1, nnew = 0;
    unsigned stays = 0, pages = 0;

    /* stay.i and go.i alternate, so the keys of both are interleaved. */
    for (int i = 0; i < HALF; i++) {
        snprintf(name, sizeof(name), "stay.%04d", i);
        th_register(a, name);
        snprintf(name, sizeof(name), "go.%04d", i);
        th_register(a, name);
        go_live[i] = 1;
    }
    do {
        next = page_after(a, BROKER_CTRL_LIST_NAMES, cursor, &recs);
        cr_assert(next == 0 || next > cursor);
        for (char *l = strtok_r(recs, "\n", &save); l;
             l = strtok_r(NULL, "\n", &save)) {
            int idx;

            if ((idx = name_index(l, "stay")) >= 0) {
                cr_assert_lt(idx, HALF);
                cr_assert_eq(stay_seen[idx], 0, "stay.%d twice", idx);
                cr_assert_gt(idx, prev_stay, "stay.%d after stay.%d", idx,
                             prev_stay);
                stay_seen[idx] = 1;
                prev_stay = idx;
                stays++;
            } else if ((idx = name_index(l, "go")) >= 0) {
                cr_assert_lt(idx, HALF);
                cr_assert_eq(go_seen[idx], 0, "go.%d twice", idx);
                go_seen[idx] = 1;
            } else if ((idx = name_index(l, "new")) >= 0) {
                cr_assert(idx < nnew, "record: %s", l);
                cr_assert_eq(new_seen[idx], 0, "new.%d twice", idx);
                new_seen[idx] = 1;
            } else {
                cr_assert_fail("record: %s", l);
            }
        }
        free(recs);
        /* Churn: release some go names, anywhere; register new ones. */
        for (int k = 0; k < CHURN && next; k++) {
            int i = (int)(rng_next(&rng) % HALF);

            if (go_live[i]) {
                snprintf(name, sizeof(name), "go.%04d", i);
                TH_OK(broker_release(a, name));
                go_live[i] = 0;
            }
            if (nnew < 4 * HALF) {
                snprintf(name, sizeof(name), "new.%04d", nnew++);
                th_register(a, name);
            }
        }
        cursor = next;
        pages++;
    } while (next);
    cr_assert_eq(stays, HALF, "%u of %d stay names listed", stays, HALF);
    /* The go names still registered at the end were there throughout. */
    for (int i = 0; i < HALF; i++)
        if (go_live[i])
            cr_assert(go_seen[i], "go.%d was registered throughout", i);
    cr_assert_gt(pages, 10);
    broker_close(a);
}

/* Clients: connected ones are listed once each in id order while others
 * connect and leave between pages. */
Test(cursor, clients_churn_between_pages)
{
    enum { KEEP = 300, CHURN = 8, MAXC = KEEP + 2000 };
    static broker_t *keep[KEEP], *churn[MAXC];
    static unsigned char kept_seen[KEEP];
    broker_t *obs = th_connect(&br);
    uint64_t cursor = 0, next, prev_id = 0, rng = 99;
    size_t nchurn = 0, live_from = 0;
    unsigned pages = 0;
    char *recs, *save = NULL;
    bool obs_seen = false;

    for (int i = 0; i < KEEP; i++) {
        keep[i] = th_connect(&br);
        if (rng_next(&rng) % 2 && nchurn < MAXC)
            churn[nchurn++] = th_connect(&br);
    }
    do {
        next = page_after(obs, BROKER_CTRL_LIST_CLIENTS, cursor, &recs);
        cr_assert(next == 0 || next > cursor);
        for (char *l = strtok_r(recs, "\n", &save); l;
             l = strtok_r(NULL, "\n", &save)) {
            uint64_t id = field(l, "id");

            cr_assert_gt(id, prev_id, "client %" PRIu64 " after %" PRIu64,
                         id, prev_id);
            prev_id = id;
            obs_seen |= id == broker_client_id(obs);
            for (int i = 0; i < KEEP; i++)
                if (broker_client_id(keep[i]) == id)
                    kept_seen[i]++;
        }
        free(recs);
        /* Old churn clients leave, new ones come (with higher ids). */
        for (int k = 0; k < CHURN && next; k++) {
            if (live_from < nchurn) {
                broker_close(churn[live_from]);
                churn[live_from++] = NULL;
            }
            if (nchurn < MAXC)
                churn[nchurn++] = th_connect(&br);
        }
        cursor = next;
        pages++;
    } while (next);
    cr_assert(obs_seen);
    for (int i = 0; i < KEEP; i++)
        cr_assert_eq(kept_seen[i], 1, "kept client %d listed %u times", i,
                     kept_seen[i]);
    cr_assert_gt(pages, 10);
    for (size_t i = live_from; i < nchurn; i++)
        broker_close(churn[i]);
    for (int i = 0; i < KEEP; i++)
        broker_close(keep[i]);
    broker_close(obs);
}

/* Subscriptions are paged by creation order too: one client's are in the
 * order of their ids; unsubscribing between pages skips nothing else. */
Test(cursor, subs_paged_in_creation_order)
{
    enum { NSUBS = 600 };
    broker_t *a = th_connect(&br);
    static uint32_t ids[NSUBS];
    static unsigned char seen[NSUBS], gone[NSUBS];
    char pat[32], *recs, *save = NULL;
    uint64_t cursor = 0, next;
    uint32_t prev = 0;
    int drop = NSUBS - 1;

    for (int i = 0; i < NSUBS; i++) {
        snprintf(pat, sizeof(pat), "cursor.t%d.*", i);
        TH_OK(broker_subscribe(a, pat, NULL, BROKER_SUB_DROP, &ids[i]));
    }
    do {
        next = page_after(a, BROKER_CTRL_LIST_SUBS, cursor, &recs);
        for (char *l = strtok_r(recs, "\n", &save); l;
             l = strtok_r(NULL, "\n", &save)) {
            uint32_t sub = (uint32_t)field(l, "sub");
            int i;

            cr_assert_gt(sub, prev);
            prev = sub;
            for (i = 0; i < NSUBS && ids[i] != sub; i++)
                ;
            cr_assert_lt(i, NSUBS, "sub %u unknown", sub);
            cr_assert_eq(seen[i], 0);
            seen[i] = 1;
        }
        free(recs);
        /* The newest not yet listed goes: from the far end of the keys. */
        if (next && drop >= 0 && !seen[drop]) {
            TH_OK(broker_unsubscribe(a, ids[drop]));
            gone[drop--] = 1;
        }
        cursor = next;
    } while (next);
    for (int i = 0; i < NSUBS; i++)
        cr_assert(seen[i] || gone[i], "subscription %d missing", i);
    broker_close(a);
}

/* A cursor past the last key gives a page of only next=0, for every
 * listing; a cursor between keys or of a record that is gone resumes at
 * the next record. */
Test(cursor, past_the_end_and_between_keys)
{
    broker_t *a = th_connect(&br);
    char name[64], *recs, *again;
    uint64_t first_next, n2;
    const uint64_t far[] = { UINT64_C(1) << 32, UINT64_C(1) << 62,
                             UINT64_MAX - 1, UINT64_MAX };

    for (size_t i = 0; i < NOPS; i++)
        for (size_t k = 0; k < sizeof(far) / sizeof(far[0]); k++) {
            cr_assert_eq(page_after(a, list_ops[i], far[k], &recs), 0);
            cr_assert_str_eq(recs, "", "op %u", list_ops[i]);
            free(recs);
        }

    for (int i = 0; i < 400; i++) {
        snprintf(name, sizeof(name), "gap.%04d", i);
        th_register(a, name);
    }
    first_next = page_after(a, BROKER_CTRL_LIST_NAMES, 0, &recs);
    cr_assert_gt(first_next, 0);
    /* The last record of the first page. */
    char *last = strrchr(recs, '\n');
    *last = '\0';
    last = strrchr(recs, '\n');
    last = last ? last + 1 : recs;
    int idx = name_index(last, "gap");
    cr_assert_geq(idx, 0, "%s", last);
    free(recs);

    /* It goes: its cursor still resumes right after it. */
    snprintf(name, sizeof(name), "gap.%04d", idx);
    TH_OK(broker_release(a, name));
    n2 = page_after(a, BROKER_CTRL_LIST_NAMES, first_next, &recs);
    cr_assert_eq(name_index(recs, "gap"), idx + 1, "%.60s", recs);
    /* The cursor just below it gives the same page (nothing in between). */
    cr_assert_eq(page_after(a, BROKER_CTRL_LIST_NAMES, first_next - 1,
                            &again), n2);
    drop_ages(again);
    drop_ages(recs);
    cr_assert_str_eq(again, recs);
    free(again);
    free(recs);
    /* Registered again it is a new record, after every existing one. */
    th_register(a, name);
    TH_OK(broker_list(a, BROKER_CTRL_LIST_NAMES, &recs, NULL));
    last = strrchr(recs, '\n');
    *last = '\0';
    last = strrchr(recs, '\n');
    cr_assert_eq(name_index(last ? last + 1 : recs, "gap"), idx);
    free(recs);
    broker_close(a);
}

/* Payloads neither empty nor 8 bytes are EINVAL, the old u32 start index
 * included; the connection carries on. */
Test(cursor, bad_payload_lengths)
{
    broker_t *a = th_connect(&br);
    uint8_t junk[64];
    const size_t bad[] = { 1, 2, 3, 4, 5, 7, 9, 12, 16, 63 };
    void *page = NULL;

    memset(junk, 0, sizeof(junk));
    for (size_t i = 0; i < NOPS; i++) {
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
            cr_assert_eq(broker_ctrl(a, list_ops[i], junk, bad[k], NULL,
                                     NULL), -EINVAL, "op %u, %zu bytes",
                         list_ops[i], bad[k]);
        /* Empty and 8 bytes of zeros are the same first page. */
        TH_OK(broker_ctrl(a, list_ops[i], NULL, 0, &page, NULL));
        free(page);
        TH_OK(broker_ctrl(a, list_ops[i], junk, 8, &page, NULL));
        free(page);
    }
    TH_OK(broker_ping(a, TH_HANG_MS));
    broker_close(a);
}

/* Every listing of a quiet broker paged by hand is what broker_list
 * joins (streams, segments and users included). */
Test(cursor, every_listing_pages_like_broker_list)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    char *recs, *all, *joined;
    uint64_t cursor, next;
    size_t jlen, alen;
    uint32_t sid;

    th_register(b, "cursor.peer");
    /* A stream exists at the broker with its first message; the LISTs
     * below come after these on a's connection, so they see all 60. */
    for (int i = 0; i < 60; i++) {
        TH_OK(broker_stream_open(a, "cursor.peer", 0, &sid));
        TH_OK(broker_stream_write(a, sid, "x", 1, NULL, 0));
    }
    for (size_t i = 0; i < NOPS; i++) {
        joined = calloc(1, 1);
        jlen = 0;
        cursor = 0;
        do {
            next = page_after(a, list_ops[i], cursor, &recs);
            joined = realloc(joined, jlen + strlen(recs) + 1);
            memcpy(joined + jlen, recs, strlen(recs) + 1);
            jlen += strlen(recs);
            free(recs);
            cursor = next;
        } while (next);
        TH_OK(broker_list(a, list_ops[i], &all, &alen));
        /* age_ms moves on between the two listings: compare the count
         * of records only, the order needs no clock. */
        size_t l1 = 0, l2 = 0;
        for (size_t k = 0; k < jlen; k++)
            l1 += joined[k] == '\n';
        for (size_t k = 0; k < alen; k++)
            l2 += all[k] == '\n';
        cr_assert_eq(l1, l2, "op %u: %zu and %zu records", list_ops[i], l1,
                     l2);
        if (list_ops[i] == BROKER_CTRL_LIST_STREAMS)
            cr_assert_eq(l1, 60);
        free(all);
        free(joined);
    }
    broker_close(a);
    broker_close(b);
}
