/* zlib-compressed model files (core/io/zfile.h). */
#include "core/io/zfile.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/io/safetensors.h"

/* deflate's largest expansion on inflate: 258-byte matches coded in 2 bits each, about 1032:1 (zlib's FAQ) */
#define ZFILE_MAX_RATIO 1032u
/* zlib's default level: the weights of a pruned model compress about as well at 9, at a fraction of the time */
#define ZFILE_LEVEL 6

int cnn_zfile_is(const unsigned char *data, size_t len)
{
    return data && len >= 8 && !memcmp(data, CNN_ZFILE_MAGIC, 8);
}

cnn_status cnn_zfile_inflate(const unsigned char *data, size_t len, const char *path, unsigned char **out,
                             size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!cnn_zfile_is(data, len) || len < CNN_ZFILE_HEADER)
        return cnn_error(CNN_ERR_FORMAT, "%s: a compressed model file needs a %d-byte header, the file has %zu bytes",
                         path, CNN_ZFILE_HEADER, len);
    uint64_t size = 0;
    for (int i = 15; i >= 8; i--) size = (size << 8) | data[i];
    const size_t stream = len - CNN_ZFILE_HEADER;
    if (size > CNN_ST_MAX_FILE || size > (uint64_t)stream * ZFILE_MAX_RATIO || size < 8)
        return cnn_error(CNN_ERR_FORMAT, "%s: the compressed file says it inflates to %llu bytes, which %zu bytes of "
                                         "zlib stream cannot hold (or above the limit of %llu)", path,
                         (unsigned long long)size, stream, (unsigned long long)CNN_ST_MAX_FILE);
    unsigned char *buf = malloc((size_t)size + 1);
    if (!buf) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for %llu inflated bytes", path,
                               (unsigned long long)size);
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK) {
        free(buf);
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: zlib could not start inflating", path);
    }
    /* avail_in and avail_out are 32-bit: feed and drain in pieces */
    const unsigned char *in = data + CNN_ZFILE_HEADER;
    size_t in_left = stream, out_done = 0;
    int zr = Z_OK;
    while (zr == Z_OK) {
        uInt give = in_left > 0x40000000u ? 0x40000000u : (uInt)in_left;
        size_t room = (size_t)size - out_done;
        uInt take = room > 0x40000000u ? 0x40000000u : (uInt)room;
        z.next_in = (Bytef *)in;
        z.avail_in = give;
        z.next_out = buf + out_done;
        z.avail_out = take;
        zr = inflate(&z, Z_NO_FLUSH);
        in += give - z.avail_in;
        in_left -= give - z.avail_in;
        out_done += take - z.avail_out;
        if (zr == Z_OK && give == z.avail_in && take == z.avail_out) zr = Z_BUF_ERROR; /* no progress */
        if (zr == Z_OK && out_done == (size_t)size && z.avail_out == 0 && in_left == 0) zr = Z_BUF_ERROR;
    }
    inflateEnd(&z);
    if (zr != Z_STREAM_END || out_done != (size_t)size || in_left != 0) {
        free(buf);
        if (zr == Z_STREAM_END && out_done != (size_t)size)
            return cnn_error(CNN_ERR_FORMAT, "%s: the zlib stream inflates to %zu bytes, the header says %llu", path,
                             out_done, (unsigned long long)size);
        if (zr == Z_STREAM_END)
            return cnn_error(CNN_ERR_FORMAT, "%s: %zu bytes follow the zlib stream", path, in_left);
        return cnn_error(CNN_ERR_FORMAT, "%s: the zlib stream is %s", path,
                         out_done == (size_t)size ? "longer than the header says" : "corrupt or truncated");
    }
    buf[size] = '\0';
    *out = buf;
    *out_len = (size_t)size;
    return CNN_OK;
}

cnn_status cnn_zfile_write(const char *path, const unsigned char *data, size_t len)
{
    uLong bound = compressBound((uLong)len);
    if ((size_t)bound < len) return cnn_error(CNN_ERR_INVALID_ARG, "%s: %zu bytes are too many to compress", path, len);
    unsigned char *z = malloc(CNN_ZFILE_HEADER + (size_t)bound);
    if (!z) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory to compress", path);
    memcpy(z, CNN_ZFILE_MAGIC, 8);
    for (int i = 0; i < 8; i++) z[8 + i] = (unsigned char)((uint64_t)len >> (8 * i));
    uLongf zlen = bound;
    if (compress2(z + CNN_ZFILE_HEADER, &zlen, data, (uLong)len, ZFILE_LEVEL) != Z_OK) {
        free(z);
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: zlib could not compress the model", path);
    }
    const void *parts[1] = {z};
    size_t sizes[1] = {CNN_ZFILE_HEADER + (size_t)zlen};
    cnn_status st = cnn_write_file_atomic(path, parts, sizes, 1);
    free(z);
    return st;
}
