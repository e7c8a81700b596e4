/* zlib-compressed model files (README "Pruning"): a whole safetensors file deflated behind a small header, so that
 * the zeros of a pruned model take little room on disk. Readers of safetensors files (cnn_st_read) inflate such a
 * file first; everything else reads as before.
 *
 *     bytes 0..7    CNN_ZFILE_MAGIC ("\x89CNZ\r\n\x1a\n": not text, not a safetensors header length that fits)
 *     bytes 8..15   the inflated size, little-endian u64
 *     bytes 16..    one zlib stream (RFC 1950) of exactly that many bytes, and nothing after it
 *
 * The reader trusts no size: the inflated size must be at most CNN_ST_MAX_FILE and at most what deflate can
 * produce from the stream's length (1032 bytes per byte, its largest ratio), before anything is allocated. */
#ifndef CNN_CORE_ZFILE_H
#define CNN_CORE_ZFILE_H

#include <stddef.h>

#include "cnn/status.h"

#define CNN_ZFILE_MAGIC "\x89" "CNZ\r\n\x1a\n"
#define CNN_ZFILE_HEADER 16

/* 1 when the bytes start with CNN_ZFILE_MAGIC. */
int cnn_zfile_is(const unsigned char *data, size_t len);
/* Inflates a compressed file's bytes into a new buffer (free() it) with a '\0' after its *out_len bytes, as
 * cnn_read_file gives; CNN_ERR_FORMAT naming `path` for a bad header, size or stream. */
cnn_status cnn_zfile_inflate(const unsigned char *data, size_t len, const char *path, unsigned char **out,
                             size_t *out_len);
/* Deflates `data` into the format above and writes it to `path` atomically. */
cnn_status cnn_zfile_write(const char *path, const unsigned char *data, size_t len);

#endif
