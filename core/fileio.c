/* Whole-file reading with a size cap, and atomic whole-file writing (temp file, fsync, rename, fsync dir). */
#define _POSIX_C_SOURCE 200809L

#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

/* First buffer size when the file size is unknown (a pipe, /dev/stdin, a /proc file). */
#define CNN_READ_CHUNK ((size_t)64 * 1024)
/* How many temporary names to try before giving up (each collision means another writer used the name). */
#define CNN_TEMP_TRIES 100

static cnn_status errno_status(int err)
{
    return (err == ENOENT || err == ENOTDIR) ? CNN_ERR_NOT_FOUND : CNN_ERR_IO;
}

const char *cnn_path_basename(const char *path)
{
    if (!path) return "";
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

cnn_status cnn_make_dirs(const char *path)
{
    if (!path || !path[0]) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_make_dirs: empty path");
    size_t n = strlen(path);
    char *p = malloc(n + 1);
    if (!p) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory", path);
    memcpy(p, path, n + 1);
    cnn_status st = CNN_OK;
    /* each prefix that ends before a '/', then the whole path */
    for (size_t i = 1; i <= n && st == CNN_OK; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char saved = p[i];
        p[i] = '\0';
        struct stat sb;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int err = errno;
            st = cnn_error(errno_status(err), "%s: cannot create the directory %s: %s", path, p, strerror(err));
        } else if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            st = cnn_error(CNN_ERR_IO, "%s: %s exists and is not a directory", path, p);
        }
        p[i] = saved;
    }
    free(p);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// reading

cnn_status cnn_read_buffer_grow(unsigned char **buf, size_t *cap, size_t first, size_t limit, const char *path,
                                const char *what)
{
    size_t new_cap = *cap == 0 ? first : (*cap <= limit / 2 ? *cap * 2 : limit);
    if (new_cap > limit) new_cap = limit;
    unsigned char *grown = realloc(*buf, new_cap);
    if (!grown) return cnn_error(CNN_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes %s", path, new_cap, what);
    *buf = grown;
    *cap = new_cap;
    return CNN_OK;
}

cnn_status cnn_read_file(const char *path, size_t max_bytes, unsigned char **data, size_t *len)
{
    cnn_status st = CNN_OK;
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0, first;
    int fd = -1;
    struct stat sb;

    *data = NULL;
    *len = 0;
    if (!path) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_read_file: no path");
    /* keep one byte for the terminating '\0' and one to notice a file that grew past the cap */
    if (max_bytes > SIZE_MAX - 2) max_bytes = SIZE_MAX - 2;

    do fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int err = errno;
        return cnn_error(errno_status(err), "%s: cannot open: %s", path, strerror(err));
    }
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        st = cnn_error(CNN_ERR_IO, "%s: cannot stat: %s", path, strerror(err));
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        st = cnn_error(CNN_ERR_IO, "%s: is a directory, not a file", path);
        goto fail;
    }
    if (S_ISREG(sb.st_mode)) {
        if (sb.st_size < 0 || (uintmax_t)sb.st_size > max_bytes) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: the file is %jd bytes, more than the limit of %zu", path,
                           (intmax_t)sb.st_size, max_bytes);
            goto fail;
        }
        first = (size_t)sb.st_size + 2;
    } else {
        first = CNN_READ_CHUNK < max_bytes + 2 ? CNN_READ_CHUNK : max_bytes + 2;
    }

    CNN_TRY(cnn_read_buffer_grow(&buf, &cap, first, max_bytes + 2, path, "to read the file"));
    for (;;) {
        if (n + 1 == cap) {
            if (cap == max_bytes + 2) break; /* full: n == max_bytes + 1, refused below */
            CNN_TRY(cnn_read_buffer_grow(&buf, &cap, first, max_bytes + 2, path, "to read the file"));
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            st = cnn_error(CNN_ERR_IO, "%s: read failed after %zu bytes: %s", path, n, strerror(err));
            goto fail;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    if (n > max_bytes) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: the file is more than the limit of %zu bytes", path, max_bytes);
        goto fail;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return CNN_OK;

fail:
    free(buf);
    if (fd >= 0) close(fd);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// atomic writing

static cnn_status write_all(int fd, const char *tmp, const unsigned char *p, size_t size)
{
    while (size > 0) {
        /* some kernels refuse single writes above 2 GiB; stay well below */
        size_t chunk = size < ((size_t)1 << 30) ? size : ((size_t)1 << 30);
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            return cnn_error(CNN_ERR_IO, "%s: write failed: %s", tmp, strerror(err));
        }
        if (w == 0) return cnn_error(CNN_ERR_IO, "%s: write made no progress", tmp);
        p += w;
        size -= (size_t)w;
    }
    return CNN_OK;
}

/* fsync the directory holding `path` so that the rename itself survives a crash. */
static cnn_status sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) {
        dir = malloc(2);
        if (dir) strcpy(dir, ".");
    } else {
        size_t dlen = slash == path ? 1 : (size_t)(slash - path);
        dir = malloc(dlen + 1);
        if (dir) {
            memcpy(dir, path, dlen);
            dir[dlen] = '\0';
        }
    }
    if (!dir) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory", path);
    int fd;
    do fd = open(dir, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int err = errno;
        cnn_status st = cnn_error(CNN_ERR_IO, "%s: written, but its directory %s cannot be opened to sync it: %s",
                                  path, dir, strerror(err));
        free(dir);
        return st;
    }
    cnn_status st = CNN_OK;
    /* some file systems cannot fsync a directory (EINVAL); the rename is then as durable as they make it */
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
        int err = errno;
        st = cnn_error(CNN_ERR_IO, "%s: written, but syncing its directory %s failed: %s", path, dir,
                       strerror(err));
    }
    close(fd);
    free(dir);
    return st;
}

cnn_status cnn_write_file_atomic(const char *path, const void *const *parts, const size_t *sizes, int nparts)
{
    static atomic_uint counter;
    cnn_status st = CNN_OK;
    char *tmp = NULL;
    int fd = -1;

    if (!path || !path[0] || nparts < 0 || (nparts > 0 && (!parts || !sizes)))
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_write_file_atomic: bad arguments for '%s'", path ? path : "");
    for (int i = 0; i < nparts; i++)
        if (sizes[i] > 0 && !parts[i])
            return cnn_error(CNN_ERR_INVALID_ARG, "cnn_write_file_atomic: %s: part %d has %zu bytes but no data",
                             path, i, sizes[i]);

    size_t plen = strlen(path);
    size_t tmp_size = plen + 64;
    if (plen > SIZE_MAX - 64 || !(tmp = malloc(tmp_size)))
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory", path);
    for (int attempt = 0; attempt < CNN_TEMP_TRIES; attempt++) {
        snprintf(tmp, tmp_size, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&counter, 1u));
        /* 0666: the umask applies, as for any newly created file */
        do fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        while (fd < 0 && errno == EINTR);
        if (fd >= 0 || errno != EEXIST) break;
    }
    if (fd < 0) {
        int err = errno;
        st = cnn_error(errno_status(err), "%s: cannot create the temporary file %s: %s", path, tmp, strerror(err));
        free(tmp);
        return st;
    }

    for (int i = 0; i < nparts; i++) CNN_TRY(write_all(fd, tmp, (const unsigned char *)parts[i], sizes[i]));
    if (fsync(fd) != 0) {
        int err = errno;
        st = cnn_error(CNN_ERR_IO, "%s: fsync failed: %s", tmp, strerror(err));
        goto fail;
    }
    {
        int rc = close(fd);
        fd = -1;
        if (rc != 0) {
            int err = errno;
            st = cnn_error(CNN_ERR_IO, "%s: close failed: %s", tmp, strerror(err));
            goto fail;
        }
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        st = cnn_error(CNN_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(err));
        goto fail;
    }
    free(tmp);
    return sync_parent_dir(path);

fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return st;
}
