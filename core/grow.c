/* Doubling growth of heap arrays (core/grow.h). */
#include "core/grow.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

cnn_status cnn_array_grow(void *array, size_t *cap, size_t need, size_t elem_size, size_t first_cap)
{
    if (need <= *cap) return CNN_OK;
    size_t max = SIZE_MAX / elem_size; /* the most elements whose size fits in a size_t */
    if (need > max)
        return cnn_error(CNN_ERR_NO_MEMORY, "an array of %zu elements of %zu bytes is larger than a size_t can count",
                         need, elem_size);
    size_t n = *cap ? *cap : first_cap;
    if (n == 0 || n > max) n = need; /* a first_cap of 0, or too large for elem_size */
    while (n < need) n = n <= max / 2 ? 2 * n : max;
    /* the T * is read and written as bytes: one function for every element type, without accessing a T * as a
     * void * (which strict aliasing forbids) */
    void *old;
    memcpy(&old, array, sizeof old);
    void *grown = realloc(old, n * elem_size);
    if (!grown) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory allocating %zu bytes", n * elem_size);
    memcpy(array, &grown, sizeof grown);
    *cap = n;
    return CNN_OK;
}
