/* Helpers shared by the fuzz harnesses: see fuzz.h. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnn/net.h"
#include "cnn/status.h"

/* Files a harness may write in its temporary directory (each harness uses one to eleven names). */
#define FUZZ_MAX_FILES 16

static char temp_dir[PATH_MAX];
static char *file_names[FUZZ_MAX_FILES];
static int nfiles;
static char path_buf[PATH_MAX];
static cnn_backend *backend;
static FILE *devnull;

/* A failure of the harness itself (not of the code under test): the run cannot go on. */
static void die(const char *what, int err)
{
    fprintf(stderr, "fuzz harness: %s%s%s\n", what, err ? ": " : "", err ? strerror(err) : "");
    abort();
}

/* Removes the files written and the directory (at exit: a crash leaves them for the post-mortem). */
static void remove_temp_dir(void)
{
    for (int i = 0; i < nfiles; i++) unlink(fuzz_path(file_names[i]));
    for (int i = 0; i < nfiles; i++) free(file_names[i]);
    nfiles = 0;
    if (temp_dir[0]) rmdir(temp_dir);
    temp_dir[0] = '\0';
    if (backend) cnn_backend_destroy(backend);
    backend = NULL;
    if (devnull) fclose(devnull);
    devnull = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* one OpenMP thread: the fuzzer runs inputs one at a time, and threads only add noise to its coverage */
    setenv("OMP_NUM_THREADS", "1", 0);
    /* networks are refused above 256 MiB (the memory budget, cnn_set_memory_limit): a definition that asks for
     * gigabytes is a refusal to check, not a reason to allocate them (run.sh's -rss_limit_mb is 2048) */
    cnn_set_memory_limit((int64_t)256 << 20);
    return 0;
}

const char *fuzz_temp_dir(void)
{
    if (temp_dir[0]) return temp_dir;
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !tmp[0]) tmp = "/tmp";
    int n = snprintf(temp_dir, sizeof temp_dir, "%s/cnn-fuzz-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof temp_dir) die("TMPDIR is too long", 0);
    if (!mkdtemp(temp_dir)) die("cannot create a temporary directory", errno);
    atexit(remove_temp_dir);
    return temp_dir;
}

const char *fuzz_path(const char *name)
{
    int known = 0;
    for (int i = 0; i < nfiles && !known; i++) known = !strcmp(file_names[i], name);
    if (!known) { /* removed at exit */
        if (nfiles == FUZZ_MAX_FILES) die("too many temporary file names", 0);
        file_names[nfiles] = strdup(name);
        if (!file_names[nfiles]) die("out of memory", 0);
        nfiles++;
    }
    int n = snprintf(path_buf, sizeof path_buf, "%s/%s", fuzz_temp_dir(), name);
    if (n < 0 || (size_t)n >= sizeof path_buf) die("temporary path too long", 0);
    return path_buf;
}

const char *fuzz_write_file(const char *name, const void *data, size_t size)
{
    const char *path = fuzz_path(name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die("cannot create a temporary file", errno);
    const unsigned char *p = data;
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("cannot write a temporary file", errno);
        p += w;
        size -= (size_t)w;
    }
    if (close(fd) != 0) die("cannot write a temporary file", errno);
    return path;
}

void fuzz_remove_file(const char *name)
{
    if (unlink(fuzz_path(name)) != 0 && errno != ENOENT) die("cannot remove a temporary file", errno);
}

char *fuzz_text(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) die("out of memory", 0);
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

cnn_backend *fuzz_backend(void)
{
    if (backend) return backend;
    fuzz_temp_dir(); /* registers the cleanup at exit, which destroys the backend too */
    if (cnn_backend_create("cpu", &backend) != CNN_OK) {
        fprintf(stderr, "fuzz harness: cannot create the CPU backend: %s\n", cnn_last_error());
        abort();
    }
    return backend;
}

FILE *fuzz_devnull(void)
{
    if (devnull) return devnull;
    fuzz_temp_dir();
    devnull = fopen("/dev/null", "w");
    if (!devnull) die("cannot open /dev/null", errno);
    return devnull;
}

void fuzz_check(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz harness: broken invariant: %s (last error: %s)\n", what, cnn_last_error());
    abort();
}
