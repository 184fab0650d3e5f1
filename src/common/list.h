/*
 * list.h - intrusive circular doubly-linked lists (prefix bk_list_).
 *
 * The one list type of brokerd, libbroker and brokerctl.  An object that
 * can sit on a list embeds a bk_list_t (a "link"); a list is a bk_list_t
 * head whose prev/next point at the last/first link, or at itself when
 * the list is empty.  Nothing here allocates: the list never owns what is
 * on it, the code that puts an object on a list says who does.
 *
 * A link that is on no list is "unlinked": prev == next == itself (after
 * bk_list_init or bk_list_unlink), so bk_list_linked() tells whether an
 * object is queued, and unlinking twice is harmless.
 *
 * The same type serves as
 *   - a FIFO queue:   bk_list_push_tail() + bk_list_pop_head();
 *   - a round-robin ring: take bk_list_first(), serve it, and
 *     bk_list_move_tail() it if it still has work;
 *   - a set to walk:  bk_list_for_each(), or bk_list_for_each_safe() when
 *     the body may unlink the current entry.
 *
 * Every operation is O(1) but the walks.
 */
#ifndef BK_LIST_H
#define BK_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct bk_list {
    struct bk_list *prev, *next;
} bk_list_t;

/* The object of type `type` whose member `member` is at `ptr`. */
#define bk_container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* An initializer for a static or embedded head: BK_LIST_INIT(x.head). */
#define BK_LIST_INIT(name) { &(name), &(name) }

static inline void bk_list_init(bk_list_t *l)
{
    l->prev = l->next = l;
}

static inline bool bk_list_empty(const bk_list_t *head)
{
    return head->next == head;
}

/* Whether the link is on a list (it was initialised or unlinked if not). */
static inline bool bk_list_linked(const bk_list_t *link)
{
    return link->next != link;
}

static inline void bk_list__insert(bk_list_t *link, bk_list_t *prev,
                                   bk_list_t *next)
{
    link->prev = prev;
    link->next = next;
    prev->next = link;
    next->prev = link;
}

/* Append link (which must be unlinked) at the tail of head. */
static inline void bk_list_push_tail(bk_list_t *head, bk_list_t *link)
{
    bk_list__insert(link, head->prev, head);
}

/* Insert link (which must be unlinked) at the front of head. */
static inline void bk_list_push_head(bk_list_t *head, bk_list_t *link)
{
    bk_list__insert(link, head, head->next);
}

/* Take link off whatever list it is on; a no-op on an unlinked link. */
static inline void bk_list_unlink(bk_list_t *link)
{
    link->prev->next = link->next;
    link->next->prev = link->prev;
    bk_list_init(link);
}

/* The first / last link, or NULL when the list is empty. */
static inline bk_list_t *bk_list_first(const bk_list_t *head)
{
    return head->next == head ? NULL : head->next;
}

static inline bk_list_t *bk_list_last(const bk_list_t *head)
{
    return head->prev == head ? NULL : head->prev;
}

/* Unlink and return the first link, or NULL when the list is empty. */
static inline bk_list_t *bk_list_pop_head(bk_list_t *head)
{
    bk_list_t *l = bk_list_first(head);

    if (l)
        bk_list_unlink(l);
    return l;
}

/* Move link (on head, or on no list) to the tail of head. */
static inline void bk_list_move_tail(bk_list_t *head, bk_list_t *link)
{
    bk_list_unlink(link);
    bk_list_push_tail(head, link);
}

/* Move every link of from to the tail of to, leaving from empty. */
static inline void bk_list_splice_tail(bk_list_t *to, bk_list_t *from)
{
    if (bk_list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    bk_list_init(from);
}

/* The object holding the first link of head, or NULL. */
#define bk_list_first_entry(head, type, member) \
    bk_list__entry_or_null(bk_list_first(head), type, member)
#define bk_list__entry_or_null(l, type, member) \
    ({ bk_list_t *bk__l = (l); \
       bk__l ? bk_container_of(bk__l, type, member) : (type *)NULL; })

/* for (each object `pos` of type `type` on head, through member): */
#define bk_list_for_each(pos, head, type, member) \
    for (bk_list_t *bk__it = (head)->next; \
         bk__it != (head) && \
         ((pos) = bk_container_of(bk__it, type, member), 1); \
         bk__it = bk__it->next)

/* The same, where the body may unlink (or free) pos. */
#define bk_list_for_each_safe(pos, head, type, member) \
    for (bk_list_t *bk__it = (head)->next, *bk__nx = bk__it->next; \
         bk__it != (head) && \
         ((pos) = bk_container_of(bk__it, type, member), 1); \
         bk__it = bk__nx, bk__nx = bk__it->next)

#endif
