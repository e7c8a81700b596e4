/* Fuzz harness: CIFAR-10 and CIFAR-100 binary batches and their class-name files (`--data cifar10:DIR`, ...,
 * cnn_dataset_load in core/data/dataset.c).
 *
 * The input is
 *
 *     byte 0       which data set and split: (byte % 5) = 0 cifar10 test, 1 cifar10 train (the batch written as
 *                  all five data_batch_N.bin), 2 cifar100 test, 3 cifar100 train, 4 cifar100-coarse test
 *     bytes 1-2    L, little-endian: the length of the class-name file (0: there is none)
 *     L bytes      the class-name file (batches.meta.txt, fine_label_names.txt or coarse_label_names.txt)
 *     the rest     the batch file (records of 1 or 2 label bytes and 3072 pixel bytes)
 *
 * A data set that loads is checked: labels within the classes, images within [0, 1], names for every class or
 * none. */
#include <stdio.h>
#include <string.h>

#include "cnn/data.h"
#include "fuzz.h"

static const struct {
    const char *spec, *split, *names_file;
    const char *batches[5];
} kinds[5] = {
    {"cifar10", "test", "batches.meta.txt", {"test_batch.bin"}},
    {"cifar10", "train", "batches.meta.txt",
     {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}},
    {"cifar100", "test", "fine_label_names.txt", {"test.bin"}},
    {"cifar100", "train", "fine_label_names.txt", {"train.bin"}},
    {"cifar100-coarse", "test", "coarse_label_names.txt", {"test.bin"}},
};

/* Every file name any kind writes, removed before each input so that none is left from the one before. */
static const char *const all_files[] = {
    "batches.meta.txt", "fine_label_names.txt", "coarse_label_names.txt", "test_batch.bin", "data_batch_1.bin",
    "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test.bin", "train.bin",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT || size < 3) return 0;
    int k = data[0] % 5;
    size_t names_len = (size_t)data[1] | (size_t)data[2] << 8;
    if (names_len > size - 3) return 0;
    const uint8_t *names = data + 3, *batch = names + names_len;
    size_t batch_len = size - 3 - names_len;

    for (size_t i = 0; i < sizeof all_files / sizeof *all_files; i++) fuzz_remove_file(all_files[i]);
    if (names_len) fuzz_write_file(kinds[k].names_file, names, names_len);
    for (int b = 0; b < 5 && kinds[k].batches[b]; b++) fuzz_write_file(kinds[k].batches[b], batch, batch_len);

    char spec[4200];
    snprintf(spec, sizeof spec, "%s:%s", kinds[k].spec, fuzz_temp_dir());
    cnn_dataset *ds = NULL;
    if (cnn_dataset_load(spec, kinds[k].split, &ds) != CNN_OK) {
        fuzz_check(ds == NULL, "a failed load left a dataset");
        return 0;
    }
    fuzz_check(ds->n >= 1 && ds->h == 32 && ds->w == 32 && ds->c == 3, "a CIFAR data set of another shape");
    for (int64_t i = 0; i < ds->n; i++)
        fuzz_check(ds->labels[i] >= 0 && ds->labels[i] < ds->num_classes, "a label is out of range");
    fuzz_check(ds->pixels != NULL && ds->images == NULL, "CIFAR data not held as 8-bit pixels");
    static float image[32 * 32 * 3];
    for (int64_t i = 0; i < ds->n; i++) { /* every sample converts, from memory the dataset owns */
        cnn_dataset_image(ds, i, image);
        fuzz_check(image[i % (32 * 32 * 3)] >= 0.0f && image[i % (32 * 32 * 3)] <= 1.0f, "a value outside [0, 1]");
    }
    if (ds->class_names)
        for (int c = 0; c < ds->num_classes; c++) fuzz_check(ds->class_names[c] != NULL, "a class has no name");
    cnn_dataset_destroy(ds);
    return 0;
}
