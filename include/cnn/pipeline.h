/* cnn.c — the data pipeline: sample sources, augmentation, and the asynchronous batch loader.
 *
 *   source (in-memory dataset, or image files decoded on demand)
 *     -> sampler: the order of an epoch, a pure function of (seed, epoch)
 *     -> worker threads: decode, resize, crop, augment, normalize into a ring of ready batches
 *     -> the trainer takes a ready batch while the next ones are prepared
 *
 * Batches are the same whatever the number of workers: the order of epoch e is computed from (seed, e), and the
 * random numbers of the augmentation of the k-th draw of epoch e from (seed, e, k). A loader can be positioned at
 * any (epoch, batch) (cnn_loader_seek), so training can resume in the middle of an epoch. */
#ifndef CNN_PIPELINE_H
#define CNN_PIPELINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cnn/backend.h"
#include "cnn/data.h"
#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------------------------
// sources

typedef struct cnn_source cnn_source;

/* A source over an in-memory dataset. With `take` the source owns `ds` (and destroys it); else `ds` must outlive
 * the source. */
CNN_API cnn_status cnn_source_from_dataset(cnn_dataset *ds, int take, cnn_source **out);

/* Image files in one sub-folder per class: the class names are the sub-folder names, sorted (byte order, as
 * torchvision's ImageFolder); files are found recursively, sorted, and those named *.jpg, *.jpeg, *.png, *.bmp
 * (any case) are taken; the content decides the format. Hidden entries (".name") are skipped. */
CNN_API cnn_status cnn_source_from_folder(const char *dir, cnn_source **out);

/* A CSV list of "path,label" lines: paths relative to the CSV file's folder unless absolute; labels all
 * integers >= 0, or all class names (then sorted into indices). A first line "path,label" is a header; blank
 * lines and lines starting with '#' are skipped; a field may be double-quoted ("" for a quote). */
CNN_API cnn_status cnn_source_from_csv(const char *path, cnn_source **out);

/* A named source: "fashion-mnist[:DIR]", "mnist:DIR", "cifar10:DIR", "cifar100:DIR", "cifar100-coarse:DIR"
 * (in memory, see cnn_dataset_load), "folder:DIR" (DIR/train and DIR/test when both exist, else DIR is the
 * training set and there is no test split), "csv:FILE" (a training set; no test split). `split` is "train" or
 * "test". A split that the spec does not have gives CNN_ERR_NOT_FOUND (cnn_source_has_split asks first). */
CNN_API cnn_status cnn_source_open(const char *spec, const char *split, cnn_source **out);
/* 1 when cnn_source_open(spec, split) can find that split (it may still fail to read it). */
CNN_API int cnn_source_has_split(const char *spec, const char *split);

CNN_API void cnn_source_destroy(cnn_source *src);

CNN_API int64_t cnn_source_count(const cnn_source *src);
CNN_API int cnn_source_num_classes(const cnn_source *src);
/* Borrowed; NULL when the source has no names. */
CNN_API const char *cnn_source_class_name(const cnn_source *src, int c);
/* count entries, borrowed. */
CNN_API const int32_t *cnn_source_labels(const cnn_source *src);
/* File sources: the path of sample i (borrowed); in-memory sources: NULL. */
CNN_API const char *cnn_source_path(const cnn_source *src, int64_t i);
/* In-memory sources: the dataset (borrowed); file sources: NULL. */
CNN_API const cnn_dataset *cnn_source_dataset(const cnn_source *src);
/* Files found in class folders but not taken (no image extension), for a note to the user. */
CNN_API int64_t cnn_source_ignored_files(const cnn_source *src);
/* counts[c] = samples of class c, for c < cnn_source_num_classes. */
CNN_API void cnn_source_class_counts(const cnn_source *src, int64_t *counts);

/* Keeps the first n samples of the source (all of them when it has no more), for a quick run on part of the data:
 * the class count and names stay the whole set's. An in-memory source that borrows its dataset gets a copy of
 * those samples; the caller's dataset is left as it was. */
CNN_API cnn_status cnn_source_limit(cnn_source *src, int64_t n);

/* A new source of samples [first, first + count) of src (in-memory samples are copied); the class count and names
 * stay src's. */
CNN_API cnn_status cnn_source_range(const cnn_source *src, int64_t first, int64_t count, cnn_source **out);

/* Splits off a validation set of round(count * fraction) samples, stratified by class (each class contributes
 * in proportion to its count), drawn by a shuffle seeded from `seed`; both keep the source's order. */
CNN_API cnn_status cnn_source_split(const cnn_source *src, double fraction, uint64_t seed, cnn_source **train,
                                    cnn_source **val);

// ---------------------------------------------------------------------------------------------------------------
// augmentation (Keras preprocessing-layer semantics; applied in training only)

typedef enum cnn_fill_mode {
    CNN_FILL_REFLECT = 0, /* (d c b a | a b c d | d c b a): Keras' default */
    CNN_FILL_CONSTANT,    /* (k k k k | a b c d | k k k k), k = fill_value */
    CNN_FILL_NEAREST,     /* (a a a a | a b c d | d d d d) */
} cnn_fill_mode;

typedef struct cnn_augment {
    int flip_h, flip_v;      /* each flip happens with probability 1/2 (Keras RandomFlip) */
    float rotate;            /* angle uniform in [-rotate, rotate] full turns (Keras RandomRotation's factor) */
    float zoom;              /* scale uniform in [1 - zoom, 1 + zoom]; above 1 zooms out (Keras RandomZoom) */
    float shift_h, shift_w;  /* translation uniform in [-shift, shift] of the height / width (RandomTranslation) */
    int crop;                /* random crop of the model's input size (Keras RandomCrop); else the centre crop */
    int crop_pad;            /* with crop: pad by this many pixels (fill mode) first, as CIFAR training does */
    float brightness;        /* delta uniform in [-b, b] added, result clipped to [0, 1] (RandomBrightness) */
    float contrast;          /* factor uniform in [1 - c, 1 + c] about each channel's mean, clipped (RandomContrast) */
    float erase;             /* probability of random erasing (Zhong et al. 2017; torchvision RandomErasing):
                              * a rectangle of 2%..33% of the area, aspect ratio 0.3..3.3 */
    float erase_value;       /* its fill; < 0: random uniform values in [0, 1] per pixel (the paper's choice) */
    cnn_fill_mode fill;
    float fill_value;        /* CNN_FILL_CONSTANT's value */
} cnn_augment;

/* No augmentation; reflect fill, fill value 0, erase value random. */
CNN_API void cnn_augment_defaults(cnn_augment *a);

/* Parses "flip=h,rotate=0.05,zoom=0.1,shift=0.1,erase=0.5" (see README.md, "Data"): keys flip (h, v, hv),
 * rotate, zoom, shift (F or HxW fractions), crop (no value, or the padding), brightness, contrast, erase,
 * erase_value (X or random), fill (reflect, constant, nearest), fill_value. Starts from cnn_augment_defaults; an
 * empty string or "none" is no augmentation. Errors name the key. */
CNN_API cnn_status cnn_augment_parse(const char *text, cnn_augment *out);

/* 1 when `a` changes anything. */
CNN_API int cnn_augment_active(const cnn_augment *a);

/* The canonical text of `a` (parses back to the same settings); "none" when inactive. */
CNN_API void cnn_augment_format(const cnn_augment *a, char *buf, size_t size);

/* The augmentation line of a model definition's training section ("augment LIST", see README.md), or NULL when
 * there is none; the text after "augment" is written into buf. */
CNN_API const char *cnn_augment_from_definition(const char *definition, char *buf, size_t size);

/* Augments one image (h, w, c), values in [0, 1], in place, with random numbers drawn from `seed` alone (the
 * loader passes a seed made from (seed, epoch, draw)). The crop settings are the loader's business and are
 * ignored here. */
CNN_API cnn_status cnn_augment_image(const cnn_augment *a, uint64_t seed, float *image, int h, int w, int c);

// ---------------------------------------------------------------------------------------------------------------
// the loader

typedef enum cnn_sampler {
    CNN_SAMPLER_SHUFFLE = 0, /* every sample once per epoch, in a seeded random order */
    CNN_SAMPLER_SEQUENTIAL,  /* every sample once, in source order (evaluation) */
    CNN_SAMPLER_OVERSAMPLE,  /* class-balanced: each class drawn as often as the largest (its samples repeated, the
                              * remainder drawn without replacement), shuffled */
    CNN_SAMPLER_UNDERSAMPLE, /* class-balanced: each class drawn as often as the smallest non-empty one (a fresh
                              * random subset each epoch), shuffled */
} cnn_sampler;

/* Parses "shuffle", "sequential", "oversample" (or "balanced"), "undersample". */
CNN_API cnn_status cnn_sampler_parse(const char *text, cnn_sampler *out);
CNN_API const char *cnn_sampler_name(cnn_sampler s);

typedef struct cnn_loader_config {
    int batch_size;
    int h, w, c;                 /* the batches' image shape (the model's input); c is 1 or 3 */
    int resize_h, resize_w;      /* each image is resized to this first, then cropped to h x w (centre, or random
                                  * with augment->crop); 0: h x w */
    int workers;                 /* decoding threads; 0: cnn_loader_default_workers() */
    int prefetch;                /* batches in the ring; 0: 2 per worker, at most 512 MiB, at least 4 */
    cnn_sampler sampler;
    uint64_t seed;
    int epochs;                  /* no batches are prepared past this many epochs; 0: no limit */
    const cnn_augment *augment;  /* NULL or inactive: none (evaluation); copied */
    const float *mean, *std;     /* c each: images become (x - mean) / std after augmentation; NULL: [0, 1] */
    long long max_pixels;        /* images whose header declares more pixels are bad files; 0: 64 megapixels */
    int strict;                  /* 1: a bad file stops the loader with its error; 0: skipped with a warning */
    FILE *warnings;              /* one line per bad file (the first time it is met); NULL: silent */
    cnn_backend *backend;        /* when its backend has page-locked host memory (CUDA), the ring lives there so
                                  * that uploads are asynchronous; NULL: plain memory */
    int shards, shard;           /* data parallelism: shards > 1 ranks share each global batch of shards x
                                  * batch_size draws, contiguous parts in rank order (balanced when the last global
                                  * batch is short); this loader hands out part `shard`. Batch b is then the
                                  * shard's part of global batch b, and an epoch has as many batches as global
                                  * batches. 0 or 1: no sharding */
} cnn_loader_config;

/* batch_size 64, sampler shuffle, everything else 0/NULL. */
CNN_API void cnn_loader_config_defaults(cnn_loader_config *cfg);
/* The default worker count: one per two cores, from 1 to 8 (the rest of the cores compute). */
CNN_API int cnn_loader_default_workers(void);

typedef struct cnn_batch {
    int epoch;               /* 0-based */
    int64_t index;           /* batch index within the epoch */
    int n;                   /* images in the batch: batch_size, fewer in the last batch, fewer again when bad files
                              * were skipped (0 when all were) */
    float *images;           /* (n, h, w, c), NHWC */
    int32_t *labels;         /* (n) */
    int64_t *samples;        /* (n) the source indices of the images */
} cnn_batch;

typedef struct cnn_loader cnn_loader;

typedef struct cnn_loader_stats {
    double wait_seconds;     /* time cnn_loader_next spent waiting for a batch */
    int64_t batches, images; /* handed out */
    int64_t bad_files;       /* distinct bad files met so far */
} cnn_loader_stats;

/* Starts the workers. The source must outlive the loader. The first batch is batch 0 of epoch 0. */
CNN_API cnn_status cnn_loader_create(const cnn_source *src, const cnn_loader_config *cfg, cnn_loader **out);
/* Stops the workers and frees the ring; batches still held become invalid. NULL is a no-op. */
CNN_API void cnn_loader_destroy(cnn_loader *l);

/* Draws per epoch (depends on the sampler) and batches per epoch (the last one may be short). */
CNN_API int64_t cnn_loader_epoch_size(const cnn_loader *l);
CNN_API int64_t cnn_loader_batches_per_epoch(const cnn_loader *l);

/* Positions the loader so that the next batch is batch `batch` of epoch `epoch` (both 0-based): prepared batches
 * are dropped. Every batch must have been released. */
CNN_API cnn_status cnn_loader_seek(cnn_loader *l, int epoch, int64_t batch);

/* Where the loader is: the (epoch, batch) that cnn_loader_next returns next. */
CNN_API void cnn_loader_tell(const cnn_loader *l, int *epoch, int64_t *batch);

/* The next batch, in order, waiting for it when it is not ready; batches run on from one epoch into the next.
 * The batch stays valid until cnn_loader_release; up to prefetch - 1 batches may be held at once. A bad file in
 * strict mode, or a failure of a worker, is returned here with its message. */
CNN_API cnn_status cnn_loader_next(cnn_loader *l, cnn_batch **out);
CNN_API void cnn_loader_release(cnn_loader *l, cnn_batch *batch);

CNN_API void cnn_loader_get_stats(const cnn_loader *l, cnn_loader_stats *out);

/* One sample through the loader's pipeline, synchronously: sample `index` of the source, as the draw-th image of
 * epoch `epoch` (which seeds its augmentation), decoded, resized, cropped, augmented and normalized as cfg says,
 * into out (h, w, c). For previews and tests. */
CNN_API cnn_status cnn_loader_load_sample(const cnn_source *src, const cnn_loader_config *cfg, int64_t index, int epoch,
                                          int64_t draw, float *out);

/* Per-channel mean and standard deviation of the source's images as the loader delivers them without
 * augmentation and normalization (cfg's shape, resize and crop; its augment, mean, std and sampler are ignored):
 * what --normalize stores in the model. `mean` and `std` have cfg->c entries. */
CNN_API cnn_status cnn_source_stats(const cnn_source *src, const cnn_loader_config *cfg, float *mean, float *std);

// ---------------------------------------------------------------------------------------------------------------
// previews

/* Writes n images (h, w, c; values in [0, 1], c = 1 or 3) as a PNG grid of `cols` columns with a 2-pixel gray
 * border. */
CNN_API cnn_status cnn_image_write_grid(const char *path, const float *images, int n, int h, int w, int c, int cols);

#ifdef __cplusplus
}
#endif
#endif
