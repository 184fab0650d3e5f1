/*
 * json.h - a small strict reader for what `brokerctl --json` prints
 * (prefix th_json_); harness.h includes it.
 *
 * brokerctl prints one flat object (status) or an array of flat objects
 * (the listings).  A member's value is a string, a number or, in the
 * listings, an array of strings.  The reader takes exactly that, each
 * piece by the JSON grammar (numbers without exponents), and nothing but
 * white space after the document: a malformed document does not parse,
 * so a test that parses brokerctl's output also checks its form.
 */
#ifndef TH_JSON_H
#define TH_JSON_H

#include <stdbool.h>
#include <stddef.h>

/* Parse flags: what a document may hold beyond strings and numbers. */
#define TH_JSON_LISTS 1u    /* member values may be arrays of strings */
#define TH_JSON_PLAIN 2u    /* strings have no escapes and numbers are
                             * unsigned integers (brokerctl's listings) */

typedef enum th_json_type {
    TH_JSON_STR,
    TH_JSON_NUM,
    TH_JSON_LIST,
} th_json_type_t;

typedef struct th_json_member {
    char *key;
    /* The decoded string, the number as written, or the list's strings
     * joined by ','. */
    char *val;
    th_json_type_t type;
    int count;              /* a list's strings */
} th_json_member_t;

typedef struct th_json_obj {
    th_json_member_t *m;
    int n;
} th_json_obj_t;

/* Parse a document that is one object.  Returns its member count, or -1
 * if it does not parse (then *o is empty).  Free with th_json_obj_free. */
int th_json_object(const char *text, unsigned flags, th_json_obj_t *o);
/* Parse a document that is an array of objects.  Returns their count with
 * the objects in *out, or -1 (then *out is NULL).  Free with
 * th_json_array_free. */
int th_json_array(const char *text, unsigned flags, th_json_obj_t **out);
void th_json_obj_free(th_json_obj_t *o);
void th_json_array_free(th_json_obj_t *a, int n);

/* The member named key, or NULL. */
const th_json_member_t *th_json_get(const th_json_obj_t *o, const char *key);
/* The value of key (see th_json_member_t.val); fails the test if o has no
 * such member. */
const char *th_json_str(const th_json_obj_t *o, const char *key);
/* The value of key as an unsigned integer; fails the test if o has no such
 * member or it is not a number. */
unsigned long long th_json_u64(const th_json_obj_t *o, const char *key);
/* The first of the n objects at a whose numeric member key equals v, or
 * NULL. */
const th_json_obj_t *th_json_find(const th_json_obj_t *a, int n,
                                  const char *key, unsigned long long v);

#endif
