/* Helpers shared by the fuzz harnesses (tests/fuzz/fuzz_*.c).
 *
 * Each harness is one libFuzzer entry point, LLVMFuzzerTestOneInput, for one parser. It is built two ways
 * (tests/fuzz/CMakeLists.txt): with clang and -fsanitize=fuzzer,address,undefined when CNN_FUZZ is on, and, in
 * every build with tests, with driver.c, which runs it once over each file of the seed corpus and of the kept
 * crash inputs (ctest's fuzz_regress_<name>).
 *
 * Rules every harness keeps: inputs above FUZZ_MAX_INPUT are ignored; the limits it passes (pixels, bytes) keep
 * one run far below a gigabyte; everything allocated is freed and every file closed (leak detection is on); a
 * broken invariant (a value parsed that disagrees with itself) is reported with fuzz_check, which aborts. */
#ifndef CNN_TESTS_FUZZ_H
#define CNN_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cnn/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest input a harness looks at (64 KiB): the formats' structure fits in far less, and big inputs only slow
 * the fuzzer down. run.sh passes -max_len to match. */
#define FUZZ_MAX_INPUT ((size_t)64 << 10)

/* libFuzzer's entry points. LLVMFuzzerInitialize is fuzz_util.c's (one thread, quiet library); the driver calls
 * it too. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes `size` bytes to the file `name` in this process's temporary directory (made once, removed at exit,
 * under $TMPDIR or /tmp) and returns its path (static storage, valid until the next call with another name).
 * The same name is the same file from one input to the next. */
const char *fuzz_write_file(const char *name, const void *data, size_t size);
/* The path of `name` in the temporary directory, without writing it (static storage as above); a file the code
 * under test writes there is removed at exit too. */
const char *fuzz_path(const char *name);
/* Removes the file `name` of the temporary directory, if it is there. */
void fuzz_remove_file(const char *name);
/* The temporary directory. */
const char *fuzz_temp_dir(void);

/* `size` bytes as a '\0'-terminated string (malloc'ed; an embedded '\0' ends the text early, as it would in a
 * file read as text). Aborts when out of memory. */
char *fuzz_text(const uint8_t *data, size_t size);

/* The CPU backend, created on first use and kept for the life of the process. */
cnn_backend *fuzz_backend(void);

/* /dev/null, opened once, for summaries and other printed output. */
FILE *fuzz_devnull(void);

/* Aborts with `what` (and the library's last error) when `ok` is 0: the harness found a broken invariant. */
void fuzz_check(int ok, const char *what);

#ifdef __cplusplus
}
#endif
#endif
