/* Fuzz harness: IDX files (MNIST, Fashion-MNIST; core/data/idx.c), raw or gzip-compressed.
 *
 * The input is the file. It is read with a 1 MiB payload cap (a gzip stream may expand that far, no further); a
 * file that reads is checked against its header and, when it is an image file (rank 3 or 4), loaded as a dataset
 * with a label file made to match it (cnn_dataset_load_idx, as `--data mnist:DIR` does). */
#include <stdlib.h>
#include <string.h>

#include "cnn/data.h"
#include "core/data/idx.h"
#include "fuzz.h"

/* Payload cap of the harness: 1 MiB (CNN_IDX_MAX_BYTES, 2 GiB, is what datasets are read with). */
#define FUZZ_IDX_MAX_BYTES ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    const char *path = fuzz_write_file("images.idx", data, size);
    char images[4096];
    snprintf(images, sizeof images, "%s", path);

    cnn_idx idx;
    if (cnn_idx_read(images, FUZZ_IDX_MAX_BYTES, &idx) != CNN_OK) {
        fuzz_check(idx.data == NULL && idx.size == 0 && idx.ndim == 0, "a failed read left data behind");
        return 0;
    }
    size_t numel = 1;
    fuzz_check(idx.ndim >= 1 && idx.ndim <= CNN_IDX_MAX_DIMS, "a read file has a rank out of range");
    for (int i = 0; i < idx.ndim; i++) numel *= (size_t)idx.dims[i];
    fuzz_check(numel == idx.size && numel <= FUZZ_IDX_MAX_BYTES, "the data size disagrees with the header");
    fuzz_check((idx.size == 0) == (idx.data == NULL), "data and size disagree");
    /* every byte is there (ASan reads the buffer to its end) */
    unsigned sum = 0;
    for (size_t i = 0; i < idx.size; i++) sum += idx.data[i];
    (void)sum;

    if ((idx.ndim == 3 || idx.ndim == 4) && idx.size > 0) { /* then dims[0] <= idx.size */
        /* a label file of the same count, labels from the image bytes (0..255) */
        size_t n = (size_t)idx.dims[0];
        unsigned char *labels = malloc(8 + n);
        fuzz_check(labels != NULL, "out of memory");
        unsigned char head[8] = {0, 0, 0x08, 1, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                                 (unsigned char)(n >> 8), (unsigned char)n};
        memcpy(labels, head, 8);
        for (size_t i = 0; i < n; i++) labels[8 + i] = idx.size ? idx.data[i % idx.size] : 0;
        char lab[4096];
        snprintf(lab, sizeof lab, "%s", fuzz_write_file("labels.idx", labels, 8 + n));
        free(labels);

        cnn_dataset *ds = NULL;
        if (cnn_dataset_load_idx(images, lab, &ds) == CNN_OK) {
            fuzz_check(ds->n == (int64_t)n && (size_t)ds->n * ds->h * ds->w * ds->c == idx.size,
                       "the dataset's shape disagrees with the file");
            for (int64_t i = 0; i < ds->n; i++)
                fuzz_check(ds->labels[i] >= 0 && ds->labels[i] < ds->num_classes, "a label is out of range");
            cnn_dataset_destroy(ds);
        } else {
            fuzz_check(ds == NULL, "a failed load left a dataset");
        }
    }
    cnn_idx_free(&idx);
    return 0;
}
