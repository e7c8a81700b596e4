/* Fuzz harness: CSV lists of images (`--data csv:FILE`, cnn_source_from_csv in core/data/source.c).
 *
 * The input is the list. One that parses is checked (every label a class, every class name there, counts that add
 * up) and split into training and validation sets as `--val-split` does. The images it names are not opened: the
 * loader decodes them later, and the image harness covers decoding. */
#include <stdlib.h>
#include <string.h>

#include "cnn/pipeline.h"
#include "fuzz.h"

/* Lists of more classes are not split (see below). */
#define FUZZ_CSV_MAX_SPLIT_CLASSES 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    cnn_source *src = NULL, *train = NULL, *val = NULL;
    if (cnn_source_from_csv(fuzz_write_file("list.csv", data, size), &src) != CNN_OK) {
        fuzz_check(src == NULL, "a failed parse left a source");
        return 0;
    }
    int64_t n = cnn_source_count(src);
    int classes = cnn_source_num_classes(src);
    fuzz_check(n >= 1 && classes >= 1, "a list that parses has no samples or no classes");
    const int32_t *labels = cnn_source_labels(src);
    for (int64_t i = 0; i < n; i++) {
        fuzz_check(labels[i] >= 0 && labels[i] < classes, "a label is not a class");
        const char *path = cnn_source_path(src, i);
        fuzz_check(path && path[0], "a sample has no path");
    }
    const char *first = cnn_source_class_name(src, 0);
    for (int c = 0; c < classes; c++) {
        const char *name = cnn_source_class_name(src, c);
        fuzz_check((name == NULL) == (first == NULL), "some classes have names and some do not");
        if (name && c > 0) fuzz_check(strcmp(cnn_source_class_name(src, c - 1), name) < 0, "class names are not sorted");
    }
    int64_t *counts = calloc(classes > 0 ? (size_t)classes : 1, sizeof *counts), total = 0;
    fuzz_check(counts != NULL, "out of memory");
    cnn_source_class_counts(src, counts);
    for (int c = 0; c < classes; c++) total += counts[c];
    fuzz_check(total == n, "the class counts do not add up to the samples");
    free(counts);

    /* the split sorts the classes: a label like 999999 makes that a million, 30 ms a run, for nothing the parser
     * does differently */
    if (classes <= FUZZ_CSV_MAX_SPLIT_CLASSES && cnn_source_split(src, 0.25, (uint64_t)size, &train, &val) == CNN_OK) {
        fuzz_check(cnn_source_count(train) + cnn_source_count(val) == n, "the split lost or made samples");
        cnn_source_destroy(train);
        cnn_source_destroy(val);
    }
    cnn_source_destroy(src);
    return 0;
}
