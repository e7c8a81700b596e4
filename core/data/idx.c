/* IDX reader (see idx.h for the format). zlib's gz* functions read gzip-compressed and raw files alike; every
 * short read is classified as a truncated file, a cut gzip stream, a corrupt gzip stream or an I/O error.
 *
 * The data buffer grows as bytes arrive rather than being sized from the header, so a small file that claims
 * gigabytes costs no more memory than it holds. */
#include "core/data/idx.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/error.h"
#include "core/fileio.h"

#define IDX_TYPE_U8 0x08
/* First data buffer; it doubles up to the declared size as data arrives. */
#define IDX_FIRST_BUFFER ((size_t)16 << 20)
/* One gzread call takes an unsigned count and returns an int. */
#define IDX_READ_CHUNK ((size_t)1 << 30)
/* zlib's default 8 KiB input buffer is slow for 26 MB files. */
#define IDX_GZ_BUFFER (128u * 1024u)

static const char *idx_type_name(int type)
{
    switch (type) {
    case 0x08: return "unsigned byte (u8)";
    case 0x09: return "signed byte (i8)";
    case 0x0B: return "short (i16)";
    case 0x0C: return "int (i32)";
    case 0x0D: return "float (f32)";
    case 0x0E: return "double (f64)";
    default: return NULL;
    }
}

/* Reads up to `n` bytes; *got says how many arrived. Returns 0, or -1 when gzread reported an error. */
static int gz_read_upto(gzFile f, unsigned char *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t want = n - *got < IDX_READ_CHUNK ? n - *got : IDX_READ_CHUNK;
        int r = gzread(f, buf + *got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        *got += (size_t)r;
    }
    return 0;
}

/* Why the stream stopped: a message fragment for a short or failed read, and the status to report. */
static cnn_status gz_failure(gzFile f, const char *path, const char *what)
{
    int errnum = Z_OK;
    const char *msg = gzerror(f, &errnum);
    if (errnum == Z_ERRNO) {
        int err = errno;
        return cnn_error(CNN_ERR_IO, "%s: read error in %s: %s", path, what, strerror(err));
    }
    if (errnum == Z_MEM_ERROR) return cnn_error(CNN_ERR_NO_MEMORY, "%s: zlib ran out of memory in %s", path, what);
    return cnn_error(CNN_ERR_FORMAT, "%s: corrupt gzip stream in %s: %s", path, what, msg ? msg : "unknown error");
}

/* 1 when the last short read ended inside a gzip stream (zlib's "unexpected end of file"). */
static int gz_cut_short(gzFile f)
{
    int errnum = Z_OK;
    gzerror(f, &errnum);
    return errnum == Z_BUF_ERROR;
}

static void format_dims(char *buf, size_t size, const int64_t *dims, int ndim)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lld", i ? "x" : "", (long long)dims[i]);
}

void cnn_idx_free(cnn_idx *idx)
{
    if (!idx) return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

static cnn_status idx_open(const char *path, gzFile *out)
{
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        int err = errno;
        if (err == ENOENT || err == ENOTDIR)
            return cnn_error(CNN_ERR_NOT_FOUND, "%s: no such file", path);
        if (err == 0) return cnn_error(CNN_ERR_NO_MEMORY, "%s: zlib could not allocate its state", path);
        return cnn_error(CNN_ERR_IO, "%s: cannot open: %s", path, strerror(err));
    }
    gzbuffer(f, IDX_GZ_BUFFER);
    *out = f;
    return CNN_OK;
}

/* The header: the magic number (u8 elements only), then one big-endian u32 per dimension. Sets out->ndim and
 * out->dims, *total (the element count, checked against max_bytes before anything is allocated) and the dims as
 * text for messages. */
static cnn_status idx_read_header(gzFile f, const char *path, size_t max_bytes, cnn_idx *out, size_t *total,
                                  char *dims_text, size_t text_size)
{
    unsigned char head[4], dimbytes[4 * CNN_IDX_MAX_DIMS];
    size_t got = 0;
    if (gz_read_upto(f, head, sizeof head, &got) != 0) return gz_failure(f, path, "the header");
    if (got < sizeof head)
        return cnn_error(CNN_ERR_FORMAT, "%s: truncated header: %zu bytes, less than the 4-byte IDX magic number%s",
                         path, got, gz_cut_short(f) ? " (the gzip stream is cut short)" : "");
    if (head[0] != 0 || head[1] != 0)
        return cnn_error(CNN_ERR_FORMAT,
                         "%s: not an IDX file: magic number 0x%02x%02x%02x%02x does not start with two zero bytes",
                         path, head[0], head[1], head[2], head[3]);
    if (head[2] != IDX_TYPE_U8) {
        const char *name = idx_type_name(head[2]);
        if (name)
            return cnn_error(CNN_ERR_UNSUPPORTED, "%s: element type 0x%02x, %s, is not supported (only 0x08, u8)",
                             path, head[2], name);
        return cnn_error(CNN_ERR_FORMAT, "%s: unknown IDX element type 0x%02x in the magic number", path, head[2]);
    }
    int ndim = head[3];
    if (ndim == 0) return cnn_error(CNN_ERR_FORMAT, "%s: the IDX header declares 0 dimensions", path);
    if (ndim > CNN_IDX_MAX_DIMS)
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: the IDX header declares %d dimensions; at most %d are supported",
                         path, ndim, CNN_IDX_MAX_DIMS);
    size_t dim_len = 4 * (size_t)ndim;
    if (gz_read_upto(f, dimbytes, dim_len, &got) != 0) return gz_failure(f, path, "the header");
    if (got < dim_len)
        return cnn_error(CNN_ERR_FORMAT, "%s: truncated header: %d dimensions need %zu bytes after the magic number "
                         "but the file ends after %zu%s", path, ndim, dim_len, got,
                         gz_cut_short(f) ? " (the gzip stream is cut short)" : "");
    /* the product of the dimensions, overflow-checked against the limit; any zero dimension makes it 0 */
    size_t n = 1;
    int too_big = 0, has_zero = 0;
    for (int i = 0; i < ndim; i++) {
        const unsigned char *p = dimbytes + 4 * i;
        uint32_t d = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
        out->dims[i] = (int64_t)d;
        if (d == 0) has_zero = 1;
        else if (n > max_bytes / d) too_big = 1;
        else n *= d;
    }
    out->ndim = ndim;
    format_dims(dims_text, text_size, out->dims, ndim);
    if (has_zero) {
        n = 0;
        too_big = 0;
    }
    if (too_big || n > max_bytes)
        return cnn_error(CNN_ERR_FORMAT, "%s: the header declares %s u8 values, more than the limit of %zu bytes",
                         path, dims_text, max_bytes);
    *total = n;
    return CNN_OK;
}

/* The `total` bytes of data, in a buffer that grows as it fills (a header may lie about the size: the memory
 * follows what the file holds). */
static cnn_status idx_read_data(gzFile f, const char *path, size_t total, const char *dims_text, unsigned char **out)
{
    unsigned char *data = NULL;
    size_t got = 0, cap = 0, filled = 0;
    cnn_status st = CNN_OK;
    while (filled < total) {
        if (filled == cap) CNN_TRY(cnn_read_buffer_grow(&data, &cap, IDX_FIRST_BUFFER, total, path, "for the data"));
        if (gz_read_upto(f, data + filled, cap - filled, &got) != 0) {
            st = gz_failure(f, path, "the data");
            goto fail;
        }
        filled += got;
        if (filled < cap) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: truncated: the header says %s u8 values (%zu bytes) but the data "
                           "ends after %zu%s", path, dims_text, total, filled,
                           gz_cut_short(f) ? " (the gzip stream is cut short)" : "");
            goto fail;
        }
    }
    *out = data;
    return CNN_OK;
fail:
    free(data);
    return st;
}

/* Nothing may follow the data; reading on also makes zlib check the gzip trailer (CRC-32 and length). Closes f. */
static cnn_status idx_close(gzFile f, const char *path, size_t total, const char *dims_text)
{
    unsigned char extra;
    size_t got = 0;
    cnn_status st = CNN_OK;
    if (gz_read_upto(f, &extra, 1, &got) != 0)
        st = gz_failure(f, path, "the end of the stream");
    else if (got != 0)
        st = cnn_error(CNN_ERR_FORMAT, "%s: unexpected data after the %zu bytes that the header (%s u8 values) "
                       "declares", path, total, dims_text);
    else if (gz_cut_short(f))
        st = cnn_error(CNN_ERR_FORMAT, "%s: truncated: the gzip stream is cut short after the data", path);
    int rc = gzclose(f);
    if (st == CNN_OK && rc != Z_OK) st = cnn_error(CNN_ERR_IO, "%s: closing the file failed (zlib error %d)", path, rc);
    return st;
}

cnn_status cnn_idx_read(const char *path, size_t max_bytes, cnn_idx *out)
{
    gzFile f = NULL;
    unsigned char *data = NULL;
    size_t total = 0;
    char dims_text[128];

    memset(out, 0, sizeof *out);
    if (!path) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_idx_read: no path");
    if (max_bytes == 0 || max_bytes > CNN_IDX_MAX_BYTES) max_bytes = CNN_IDX_MAX_BYTES;
    cnn_status st = idx_open(path, &f);
    if (st != CNN_OK) return st;
    st = idx_read_header(f, path, max_bytes, out, &total, dims_text, sizeof dims_text);
    if (st == CNN_OK) st = idx_read_data(f, path, total, dims_text, &data);
    if (st != CNN_OK) {
        gzclose(f);
        memset(out, 0, sizeof *out);
        return st;
    }
    if ((st = idx_close(f, path, total, dims_text)) != CNN_OK) {
        free(data);
        memset(out, 0, sizeof *out);
        return st;
    }
    out->data = data;
    out->size = total;
    return CNN_OK;
}
