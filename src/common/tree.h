/*
 * tree.h - intrusive AVL tree keyed by u64 (prefix bk_tree_).
 *
 * The ordered index beside the broker's hash tables: the hash tables find
 * a record by its key, the tree lists records in key order and resumes a
 * listing after any key in O(log n) (the LIST cursors, inspect.c).
 *
 * Records embed a bk_tnode and set its key before inserting; keys are
 * unique within a tree.  The tree never allocates: it only links the
 * nodes, the records own themselves.  A node has no parent pointer (the
 * index costs 32 bytes a record): insert and remove walk down from the
 * root by key, and bk_tree_after searches from the root, so every
 * operation is O(log n) and the tree height is below 1.45 log2(n + 2).
 */
#ifndef BK_TREE_H
#define BK_TREE_H

#include <stddef.h>
#include <stdint.h>
#include "list.h"       /* bk_container_of */

typedef struct bk_tnode {
    struct bk_tnode *left, *right;
    uint64_t key;               /* set by the caller, fixed while linked */
    int32_t height;             /* of the subtree rooted here, leaf 1 */
} bk_tnode_t;

typedef struct bk_tree {
    bk_tnode_t *root;
    size_t count;
} bk_tree_t;

static inline void bk_tree_init(bk_tree_t *t)
{
    t->root = NULL;
    t->count = 0;
}

/* Link n under n->key.  Returns 0, or -EEXIST (a node with that key is
 * linked; n is left alone). */
int bk_tree_insert(bk_tree_t *t, bk_tnode_t *n);
/* Unlink n (linked in t).  Unlinking a node that is not there, i.e. whose
 * key finds no node or another node, does nothing. */
void bk_tree_remove(bk_tree_t *t, bk_tnode_t *n);

bk_tnode_t *bk_tree_find(const bk_tree_t *t, uint64_t key);
/* The node of the smallest key, or NULL when t is empty. */
bk_tnode_t *bk_tree_first(const bk_tree_t *t);
/* The node of the smallest key >= key (lower bound), or NULL. */
bk_tnode_t *bk_tree_lower_bound(const bk_tree_t *t, uint64_t key);
/* The node of the smallest key > key, or NULL: the next node after a
 * cursor, whether or not a node with that key is (still) linked. */
bk_tnode_t *bk_tree_after(const bk_tree_t *t, uint64_t key);

/* For tests: the height of t if every node is in key order, its height
 * field is right and its children's heights differ by at most 1, and
 * count matches; -1 otherwise. */
int bk_tree_check(const bk_tree_t *t);

#endif
