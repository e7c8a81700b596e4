/* Freeing lists of heap pointers: the fields that a destroy function owns, written once as a list, and the arrays of
 * strings (class names, file paths) that own each of their entries. */
#ifndef CNN_CORE_FREE_LIST_H
#define CNN_CORE_FREE_LIST_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* free() on each of p[0..n) */
static inline void cnn_free_n(void *const *p, size_t n)
{
    for (size_t i = 0; i < n; i++) free(p[i]);
}

/* free() on each argument in order (data pointers, each NULL or from malloc):
 *     CNN_FREE_ALL(m->confusion, m->precision, m); */
#define CNN_FREE_ALL(...) \
    cnn_free_n((void *const[]){__VA_ARGS__}, sizeof((void *const[]){__VA_ARGS__}) / sizeof(void *))

/* Frees the strings v[0..n), then v; nothing when v is NULL. */
static inline void cnn_free_strings(char **v, int64_t n)
{
    if (!v) return;
    for (int64_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

#endif
