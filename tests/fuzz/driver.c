/* A main() for the fuzz harnesses without libFuzzer: runs LLVMFuzzerTestOneInput once on each file named, and on
 * each file of each directory named (sorted by name; hidden files skipped; not recursive). ctest runs it over a
 * harness's seed corpus and its kept crash inputs (tests/fuzz/CMakeLists.txt), so that every crash found stays
 * fixed in ordinary builds.
 *
 *     fuzz_regress_<name> PATH...
 *
 * Exit status 0 when every input ran; 1 when a path is missing or unreadable, or no input was found at all (a
 * regression test that runs nothing must not pass). A crashing input crashes the driver, after its name was
 * printed. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int read_all(const char *path, unsigned char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *data = NULL;
    *len = 0;
    if (!f) return 0;
    size_t cap = 0;
    for (;;) {
        if (*len == cap) {
            size_t new_cap = cap ? cap * 2 : 4096;
            unsigned char *grown = realloc(*data, new_cap);
            if (!grown) break;
            *data = grown;
            cap = new_cap;
        }
        size_t got = fread(*data + *len, 1, cap - *len, f);
        *len += got;
        if (got == 0) break;
    }
    int ok = !ferror(f) && feof(f);
    fclose(f);
    if (!ok) {
        free(*data);
        *data = NULL;
        *len = 0;
    }
    return ok;
}

static int run_file(const char *path, long *count)
{
    unsigned char *data;
    size_t len;
    if (!read_all(path, &data, &len)) {
        fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
        return 0;
    }
    fprintf(stderr, "running %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    (*count)++;
    return 1;
}

static int skip_entry(const struct dirent *e) { return e->d_name[0] != '.'; }

static int run_dir(const char *dir, long *count)
{
    struct dirent **entries;
    int n = scandir(dir, &entries, skip_entry, alphasort);
    if (n < 0) {
        fprintf(stderr, "%s: cannot list: %s\n", dir, strerror(errno));
        return 0;
    }
    int ok = 1;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(dir) + strlen(entries[i]->d_name) + 2;
        char *path = malloc(len);
        struct stat sb;
        if (!path) {
            fprintf(stderr, "out of memory\n");
            ok = 0;
        } else {
            snprintf(path, len, "%s/%s", dir, entries[i]->d_name);
            if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) ok = run_file(path, count) && ok;
        }
        free(path);
        free(entries[i]);
    }
    free(entries);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE_OR_DIRECTORY...\n", argv[0]);
        return 2;
    }
    LLVMFuzzerInitialize(&argc, &argv);
    long count = 0;
    int ok = 1;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
            ok = 0;
        } else if (S_ISDIR(sb.st_mode)) {
            ok = run_dir(argv[i], &count) && ok;
        } else {
            ok = run_file(argv[i], &count) && ok;
        }
    }
    fprintf(stderr, "%s: %ld inputs ran\n", argv[0], count);
    if (count == 0) {
        fprintf(stderr, "%s: no inputs found\n", argv[0]);
        ok = 0;
    }
    return ok ? 0 : 1;
}
