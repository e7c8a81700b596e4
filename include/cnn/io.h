/* cnn.c — file helpers the library uses for everything it writes, offered to programs too. */
#ifndef CNN_IO_H
#define CNN_IO_H

#include <stddef.h>

#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes the concatenation of `nparts` buffers to `path` atomically: a temporary file in the same directory,
 * fsync, rename over `path`, fsync of the directory. On failure an existing `path` is left as it was. */
CNN_API cnn_status cnn_write_file_atomic(const char *path, const void *const *parts, const size_t *sizes, int nparts);

#ifdef __cplusplus
}
#endif
#endif
