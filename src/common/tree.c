/*
 * tree.c - intrusive AVL tree keyed by u64.
 *
 * Recursive insert and remove: the recursion is as deep as the tree is
 * high (at most about 90 levels for 2^64 nodes), and it rebalances each
 * subtree on the way back up, which is what parent pointers would
 * otherwise be needed for.
 */
#include <errno.h>
#include <stdbool.h>
#include "tree.h"

static int32_t height(const bk_tnode_t *n)
{
    return n ? n->height : 0;
}

static void fix_height(bk_tnode_t *n)
{
    int32_t l = height(n->left), r = height(n->right);

    n->height = (l > r ? l : r) + 1;
}

static bk_tnode_t *rotate_right(bk_tnode_t *n)
{
    bk_tnode_t *l = n->left;

    n->left = l->right;
    l->right = n;
    fix_height(n);
    fix_height(l);
    return l;
}

static bk_tnode_t *rotate_left(bk_tnode_t *n)
{
    bk_tnode_t *r = n->right;

    n->right = r->left;
    r->left = n;
    fix_height(n);
    fix_height(r);
    return r;
}

/* Restore the AVL property at n, whose subtrees are AVL trees whose
 * heights differ by at most 2; returns the subtree's new root. */
static bk_tnode_t *balance(bk_tnode_t *n)
{
    int32_t d = height(n->left) - height(n->right);

    if (d > 1) {
        if (height(n->left->left) < height(n->left->right))
            n->left = rotate_left(n->left);
        return rotate_right(n);
    }
    if (d < -1) {
        if (height(n->right->right) < height(n->right->left))
            n->right = rotate_right(n->right);
        return rotate_left(n);
    }
    fix_height(n);
    return n;
}

static bk_tnode_t *insert_at(bk_tnode_t *at, bk_tnode_t *n, bool *dup)
{
    if (!at)
        return n;
    if (n->key < at->key)
        at->left = insert_at(at->left, n, dup);
    else if (n->key > at->key)
        at->right = insert_at(at->right, n, dup);
    else {
        *dup = true;
        return at;
    }
    return balance(at);
}

int bk_tree_insert(bk_tree_t *t, bk_tnode_t *n)
{
    bool dup = false;

    n->left = n->right = NULL;
    n->height = 1;
    t->root = insert_at(t->root, n, &dup);
    if (dup)
        return -EEXIST;
    t->count++;
    return 0;
}

/* Detach the smallest node of the subtree at `at` into *min; returns the
 * rest of the subtree. */
static bk_tnode_t *detach_min(bk_tnode_t *at, bk_tnode_t **min)
{
    if (!at->left) {
        *min = at;
        return at->right;
    }
    at->left = detach_min(at->left, min);
    return balance(at);
}

static bk_tnode_t *remove_at(bk_tnode_t *at, const bk_tnode_t *n,
                             bool *found)
{
    bk_tnode_t *succ;

    if (!at)
        return NULL;
    if (n->key < at->key) {
        at->left = remove_at(at->left, n, found);
    } else if (n->key > at->key) {
        at->right = remove_at(at->right, n, found);
    } else {
        if (at != n)            /* another record under the same key */
            return at;
        *found = true;
        if (!at->left || !at->right)
            return at->left ? at->left : at->right;
        /* The successor takes n's place. */
        succ = NULL;
        at->right = detach_min(at->right, &succ);
        succ->left = at->left;
        succ->right = at->right;
        at = succ;
    }
    return balance(at);
}

void bk_tree_remove(bk_tree_t *t, bk_tnode_t *n)
{
    bool found = false;

    t->root = remove_at(t->root, n, &found);
    if (found) {
        t->count--;
        n->left = n->right = NULL;
        n->height = 0;
    }
}

bk_tnode_t *bk_tree_find(const bk_tree_t *t, uint64_t key)
{
    bk_tnode_t *n = t->root;

    while (n && n->key != key)
        n = key < n->key ? n->left : n->right;
    return n;
}

bk_tnode_t *bk_tree_first(const bk_tree_t *t)
{
    bk_tnode_t *n = t->root;

    while (n && n->left)
        n = n->left;
    return n;
}

bk_tnode_t *bk_tree_lower_bound(const bk_tree_t *t, uint64_t key)
{
    bk_tnode_t *n = t->root, *best = NULL;

    while (n) {
        if (n->key >= key) {
            best = n;
            n = n->left;
        } else {
            n = n->right;
        }
    }
    return best;
}

bk_tnode_t *bk_tree_after(const bk_tree_t *t, uint64_t key)
{
    return key == UINT64_MAX ? NULL : bk_tree_lower_bound(t, key + 1);
}

/* Height of the subtree at n, or -1 if it breaks an invariant; keys must
 * lie in (lo, hi) where has_lo / has_hi say whether the bound exists. */
static int check_at(const bk_tnode_t *n, bool has_lo, uint64_t lo,
                    bool has_hi, uint64_t hi, size_t *count)
{
    int l, r;

    if (!n)
        return 0;
    if ((has_lo && n->key <= lo) || (has_hi && n->key >= hi))
        return -1;
    (*count)++;
    l = check_at(n->left, has_lo, lo, true, n->key, count);
    r = check_at(n->right, true, n->key, has_hi, hi, count);
    if (l < 0 || r < 0 || l - r > 1 || r - l > 1)
        return -1;
    if (n->height != (l > r ? l : r) + 1)
        return -1;
    return n->height;
}

int bk_tree_check(const bk_tree_t *t)
{
    size_t count = 0;
    int h = check_at(t->root, false, 0, false, 0, &count);

    return h < 0 || count != t->count ? -1 : h;
}
