/* Heap arrays that grow by doubling their capacity, so that n appends copy O(n) elements in all. */
#ifndef CNN_CORE_GROW_H
#define CNN_CORE_GROW_H

#include <stddef.h>

#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Makes room for at least `need` elements of elem_size bytes (elem_size > 0) in the array whose pointer is at
 * `array` (a T **; the pointer is NULL or from malloc) and that has room for *cap: the capacity (first_cap when *cap
 * is 0) doubles until it holds `need`, then the array is reallocated, its elements kept, and *cap set. Nothing
 * changes when need <= *cap, nor on failure: CNN_ERR_NO_MEMORY when need * elem_size does not fit in a size_t or
 * realloc fails.
 *     CNN_TRY(cnn_array_grow(&v, &cap, (size_t)n + 1, sizeof *v, 64));
 *     v[n++] = x; */
cnn_status cnn_array_grow(void *array, size_t *cap, size_t need, size_t elem_size, size_t first_cap);

#ifdef __cplusplus
}
#endif
#endif
