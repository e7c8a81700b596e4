/* The IDX file format of MNIST and Fashion-MNIST (yann.lecun.com/exdb/mnist, "THE IDX FILE FORMAT"):
 *
 *     bytes 0-1   0x00 0x00
 *     byte  2     element type: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
 *     byte  3     number of dimensions
 *     then        one big-endian u32 per dimension, then the elements, row-major, big-endian
 *
 * Files may be gzip-compressed (zlib reads both kinds transparently). Only u8 elements are supported. */
#ifndef CNN_CORE_IDX_H
#define CNN_CORE_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Ranks accepted: labels are rank 1, gray images rank 3, colour images rank 4. */
#define CNN_IDX_MAX_DIMS 4
/* Largest element payload accepted (2 GiB): 40 times the 47 MB of MNIST's training images, and small enough
 * that the f32 copy a dataset makes of it still fits a large machine. */
#define CNN_IDX_MAX_BYTES ((size_t)1 << 31)

typedef struct cnn_idx {
    int ndim;
    int64_t dims[CNN_IDX_MAX_DIMS];
    unsigned char *data; /* dims[0] * ... * dims[ndim-1] bytes, owned (NULL when that is 0) */
    size_t size;         /* bytes in data */
} cnn_idx;

/* Reads a u8 IDX file, raw or gzip-compressed, whose payload is at most `max_bytes` (0: CNN_IDX_MAX_BYTES).
 * Wrong magic, truncation (of the header, the data or the gzip stream), a corrupt gzip stream and data beyond
 * what the header declares give CNN_ERR_FORMAT; other element types CNN_ERR_UNSUPPORTED; a missing file
 * CNN_ERR_NOT_FOUND. Messages name the file. On failure `out` is left empty. */
cnn_status cnn_idx_read(const char *path, size_t max_bytes, cnn_idx *out);

/* Frees the data and empties `idx`; NULL is a no-op. */
void cnn_idx_free(cnn_idx *idx);

#ifdef __cplusplus
}
#endif
#endif
