/* The safetensors file format (github.com/huggingface/safetensors), used for models and checkpoints:
 *
 *     8 bytes    N, the header length, little-endian u64
 *     N bytes    a JSON object: {"__metadata__": {str: str, ...},
 *                                "<name>": {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}, ...}
 *     the rest   the byte buffer; offsets are relative to its start, tensors are little-endian, row-major
 *
 * Reading validates everything the format requires (see cnn_st_read); writing pads the header with spaces to a
 * multiple of 8 bytes, as the reference implementation does, so the buffer starts 8-byte aligned. */
#ifndef CNN_CORE_SAFETENSORS_H
#define CNN_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/status.h"
#include "cnn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest header read or written: 100 MB, the reference implementation's limit (MAX_HEADER_SIZE). */
#define CNN_ST_MAX_HEADER ((uint64_t)100000000)
/* Largest file read: 4 GiB. */
#define CNN_ST_MAX_FILE ((size_t)1 << 32)

typedef struct cnn_st_tensor {
    char *name;
    cnn_dtype dtype;
    int ndim; /* 0 for a scalar */
    int64_t shape[CNN_MAX_DIMS];
    size_t offset; /* into the data buffer */
    size_t nbytes; /* numel * dtype size */
} cnn_st_tensor;

typedef struct cnn_st_file {
    cnn_st_tensor *tensors; /* in the order of their data in the file */
    int count;
    char **meta_keys, **meta_values; /* __metadata__, in header order */
    int meta_count;
    unsigned char *data; /* the byte buffer (points into raw) */
    size_t data_size;
    unsigned char *raw; /* the whole file */
} cnn_st_file;

/* Reads and validates a safetensors file. Everything malformed gives CNN_ERR_FORMAT with a message naming the
 * file and the tensor or field: a file shorter than 8 bytes; a header longer than the file or than
 * CNN_ST_MAX_HEADER; a header that is not a JSON object; a tensor entry without dtype, shape or data_offsets, or
 * with values of the wrong type; an unknown dtype; a rank above CNN_MAX_DIMS; a negative or overflowing shape;
 * begin > end; end beyond the buffer; a byte count that is not numel * dtype size; tensors that overlap or leave
 * a gap (the tensors must cover the buffer exactly); a repeated name; a metadata value that is not a string.
 * Valid dtypes cnn.c has no type for (F64, I64, BOOL, ...) give CNN_ERR_UNSUPPORTED; files above
 * CNN_ST_MAX_FILE CNN_ERR_FORMAT; a missing file CNN_ERR_NOT_FOUND. */
cnn_status cnn_st_read(const char *path, cnn_st_file **out);
/* cnn_st_read with flags: CNN_ST_KEEP_FOREIGN keeps tensors of dtypes cnn.c lacks (PyTorch's I64
 * "num_batches_tracked", F64, ...) instead of refusing the file: they get dtype CNN_DTYPE_COUNT and nbytes from
 * their offsets, and only those offsets are checked. */
#define CNN_ST_KEEP_FOREIGN 1
cnn_status cnn_st_read_ex(const char *path, int flags, cnn_st_file **out);
void cnn_st_free(cnn_st_file *file);

/* The tensor called `name`, or NULL. Borrowed from `file`. */
const cnn_st_tensor *cnn_st_find(const cnn_st_file *file, const char *name);
/* The tensor's bytes (little-endian), borrowed from `file`. Not necessarily aligned for the dtype: copy them
 * (memcpy, cnn_tensor_write) rather than casting the pointer. */
const void *cnn_st_data(const cnn_st_file *file, const cnn_st_tensor *tensor);
/* The metadata value for `key`, or NULL. Borrowed from `file`. */
const char *cnn_st_meta(const cnn_st_file *file, const char *key);

typedef struct cnn_st_entry {
    const char *name;
    cnn_dtype dtype;
    int ndim; /* 0 to CNN_MAX_DIMS */
    const int64_t *shape;
    const void *data; /* numel * dtype size bytes, little-endian; may be NULL when that is 0 */
} cnn_st_entry;

/* Writes `n` tensors (in that order in the buffer) and `nmeta` metadata pairs to `path`, atomically
 * (cnn_write_file_atomic). Names must be unique, non-empty and not "__metadata__"; metadata keys unique; all
 * strings valid UTF-8. */
cnn_status cnn_st_write(const char *path, const cnn_st_entry *entries, int n, const char *const *meta_keys,
                        const char *const *meta_values, int nmeta);

/* The same file's bytes in one malloc'ed buffer (*out, *len), for a reader of memory (cnn-lite). */
cnn_status cnn_st_serialize(const cnn_st_entry *entries, int n, const char *const *meta_keys,
                            const char *const *meta_values, int nmeta, unsigned char **out, size_t *len);

/* The safetensors name of a dtype ("F32", ...), and back; the latter returns 0 for names cnn.c lacks. */
const char *cnn_st_dtype_name(cnn_dtype dtype);
int cnn_st_dtype_from_name(const char *name, cnn_dtype *out);

#ifdef __cplusplus
}
#endif
#endif
