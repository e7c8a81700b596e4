/* cnn.c — datasets held in host memory.
 *
 * A dataset is a set of images (NHWC) with integer labels, held either as f32 values or, as the loaders of IDX and
 * CIFAR files give them, as the 8-bit pixels of the files (a quarter of the memory): pixel p stands for the value
 * p / 255 in [0, 1], converted per batch by whatever reads it (cnn_dataset_image). Values may then be
 * standardized per channel (which turns 8-bit pixels into f32 values). Sources: IDX files (MNIST, Fashion-MNIST;
 * gzip-compressed or raw), CIFAR-10 and CIFAR-100 binary batches. Image folders and CSV lists are decoded on demand by the loader (cnn/pipeline.h). */
#ifndef CNN_DATA_H
#define CNN_DATA_H

#include <stdint.h>

#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_dataset {
    int64_t n;            /* number of samples */
    int h, w, c;          /* image shape */
    float *images;        /* (n, h, w, c), owned; NULL when the dataset holds 8-bit pixels */
    int32_t *labels;      /* (n), owned; each in [0, num_classes) */
    int num_classes;
    char **class_names;   /* num_classes names, owned; NULL when unknown */
    uint8_t *pixels;      /* (n, h, w, c), owned, value = pixel / 255: the loaders' form; NULL when images is set */
} cnn_dataset;

/* Sample i's h * w * c values (pixel / 255 or the f32 values) into out. */
CNN_API void cnn_dataset_image(const cnn_dataset *ds, int64_t i, float *out);

/* Where Debian's dataset-fashion-mnist package puts the files. */
#define CNN_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Loads an IDX image file (u8, rank 3 (n, h, w) or rank 4 (n, h, w, c)) and an IDX label file (u8, rank 1) of
 * the same count. Either may be gzip-compressed. Pixels stay 8-bit (ds->pixels, values p / 255); num_classes is
 * max(label) + 1.
 * Malformed, truncated or disagreeing files give CNN_ERR_FORMAT naming the file and the field. */
CNN_API cnn_status cnn_dataset_load_idx(const char *images_path, const char *labels_path, cnn_dataset **out);

/* Loads a named dataset: "fashion-mnist", "fashion-mnist:DIR", "mnist:DIR", "cifar10:DIR", "cifar100:DIR"
 * (fine labels) or "cifar100-coarse:DIR" (the 20 superclasses). `split` is "train" or "test".
 * MNIST-like files are DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; CIFAR-10's binary batches are
 * DIR/data_batch_{1..5}.bin and DIR/test_batch.bin, CIFAR-100's DIR/train.bin and DIR/test.bin (DIR may also be
 * the folder that holds the archive's cifar-10-batches-bin or cifar-100-binary). A missing directory or file
 * gives CNN_ERR_NOT_FOUND with a message that says how to get the data. Fashion-MNIST and CIFAR get their class
 * names (CIFAR's from batches.meta.txt or {fine,coarse}_label_names.txt when present). */
CNN_API cnn_status cnn_dataset_load(const char *spec, const char *split, cnn_dataset **out);

CNN_API void cnn_dataset_destroy(cnn_dataset *ds);

/* Splits off round(n * fraction) samples as a validation set, stratified by class (each class gives its share, by
 * largest remainders) and drawn by a shuffle seeded from `seed`; both sets keep the original order; `ds` is left
 * unchanged. */
CNN_API cnn_status cnn_dataset_split(const cnn_dataset *ds, double fraction, uint64_t seed, cnn_dataset **train,
                                     cnn_dataset **val);

/* Per-channel mean and standard deviation over all pixels (arrays of ds->c). */
CNN_API cnn_status cnn_dataset_stats(const cnn_dataset *ds, float *mean, float *std);

/* x = (x - mean[c]) / std[c] in place; std values must be > 0. A dataset of 8-bit pixels becomes one of f32
 * values. */
CNN_API cnn_status cnn_dataset_standardize(cnn_dataset *ds, const float *mean, const float *std);

/* Decodes a PNG, JPEG or BMP file with stb_image, converts it to `c` channels (1: luminance, 3: RGB), resizes it
 * to h x w (bilinear when enlarging, area averaging when shrinking) and writes h*w*c floats in [0, 1], NHWC,
 * into `out`. A missing, corrupt or unsupported file gives a status naming the file. */
CNN_API cnn_status cnn_image_load(const char *path, int h, int w, int c, float *out);

/* The same, resized to rh x rw first and then centre-cropped to h x w, as the loader prepares evaluation images
 * (cnn train --resize; rh >= h, rw >= w). */
CNN_API cnn_status cnn_image_load_crop(const char *path, int rh, int rw, int h, int w, int c, float *out);

#ifdef __cplusplus
}
#endif
#endif
