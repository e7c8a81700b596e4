/* Whole-file reading with a size cap, and atomic whole-file writing.
 *
 * Every file cnn.c writes (models, checkpoints, metrics, PNG plots) goes through cnn_write_file_atomic, so that a
 * crash or a full disk never leaves a half-written file where a good one was. */
#ifndef CNN_CORE_FILEIO_H
#define CNN_CORE_FILEIO_H

#include <stddef.h>

#include "cnn/io.h"
#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads all of `path` into a new buffer (free() it). The buffer has one extra byte set to '\0' after the `*len`
 * bytes, so text can be parsed in place; an empty file gives a non-NULL buffer and *len == 0. Files larger than
 * `max_bytes` are refused with CNN_ERR_FORMAT; a missing file gives CNN_ERR_NOT_FOUND, other failures
 * CNN_ERR_IO. On failure *data is NULL and *len is 0. */
cnn_status cnn_read_file(const char *path, size_t max_bytes, unsigned char **data, size_t *len);

/* Grows a buffer that a reader of `path` fills piece by piece: its capacity *cap doubles, to at most `limit` (it is
 * `first`, also at most `limit`, when *cap is 0), and *buf is reallocated to it. CNN_ERR_NO_MEMORY "PATH: cannot
 * allocate N bytes WHAT" when that fails, *buf and *cap unchanged. */
cnn_status cnn_read_buffer_grow(unsigned char **buf, size_t *cap, size_t first, size_t limit, const char *path,
                                const char *what);

/* cnn_write_file_atomic(path, parts, sizes, nparts) is public, in cnn/io.h. Details: parts[i] may be NULL when
 * sizes[i] is 0; the temporary file is PATH.tmp-PID-N; on any failure it is removed and an existing `path` is
 * left as it was; the new file gets mode 0666 minus the umask, as fopen would give it; a failure to fsync the
 * directory after the rename is reported although the new file is then in place. */

/* Creates the directory `path` and any missing parents (mkdir -p, mode 0777 minus the umask); an existing
 * directory is fine, an existing non-directory an error naming it. */
cnn_status cnn_make_dirs(const char *path);

/* The part of `path` after its last '/' (the whole string when there is none). Borrowed from `path`. */
const char *cnn_path_basename(const char *path);

#ifdef __cplusplus
}
#endif
#endif
