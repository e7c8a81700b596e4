/* Index arithmetic of the data pipeline, all pure functions of their arguments: the stratified validation split,
 * the per-epoch order of each sampler, per-sample random streams. Nothing here depends on threads or timing, which
 * is what makes the loader's batches the same whatever the worker count. */
#ifndef CNN_CORE_SAMPLING_H
#define CNN_CORE_SAMPLING_H

#include <stdint.h>

#include "cnn/pipeline.h"
#include "core/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Classes allowed in a label set: far above any real classifier (ImageNet-21k has 21,841), small enough that
 * per-class arrays are cheap. */
#define CNN_MAX_CLASSES (1 << 20)

/* One 64-bit value from a seed and two coordinates (SplitMix64 finalizers chained): unrelated streams for
 * neighbouring (epoch, position) pairs. `domain` separates uses (order, augmentation, ...). */
static inline uint64_t cnn_seed_mix(uint64_t seed, uint64_t domain, uint64_t a, uint64_t b)
{
    uint64_t x = seed ^ (domain * 0xD1B54A32D192ED03ull);
    uint64_t s = cnn_splitmix64(&x);
    x = s ^ (a * 0x9E3779B97F4A7C15ull);
    s = cnn_splitmix64(&x);
    x = s ^ (b * 0xC2B2AE3D27D4EB4Full);
    return cnn_splitmix64(&x);
}

/* Domains of cnn_seed_mix. */
enum { CNN_SEED_ORDER = 1, CNN_SEED_AUGMENT = 2, CNN_SEED_SPLIT = 3 };

/* Stratified split: `order` (n entries) receives the training indices (ascending) then the validation indices
 * (ascending); *ntrain counts the first. The validation set has round(n * fraction) samples (at least one, and at
 * least one left for training), shared among the classes in proportion to their counts (largest remainders), and
 * drawn within each class by a shuffle seeded from `seed`. Labels must be in [0, CNN_MAX_CLASSES). */
cnn_status cnn_split_stratified(const int32_t *labels, int64_t n, double fraction, uint64_t seed, int64_t *order,
                                int64_t *ntrain);

/* Counts of each label (counts has num_classes entries; labels outside [0, num_classes) are not counted). */
void cnn_count_classes(const int32_t *labels, int64_t n, int num_classes, int64_t *counts);

/* The number of draws one epoch of `sampler` makes over these labels. */
int64_t cnn_epoch_length(cnn_sampler sampler, const int32_t *labels, int64_t n, int num_classes);

/* The sample indices of epoch `epoch` (0-based) in the order they are drawn: a pure function of its arguments.
 * *order is malloc'ed (free() it), *count entries (cnn_epoch_length). */
cnn_status cnn_epoch_order(cnn_sampler sampler, const int32_t *labels, int64_t n, int num_classes, uint64_t seed,
                           int epoch, int64_t **order, int64_t *count);

#ifdef __cplusplus
}
#endif
#endif
