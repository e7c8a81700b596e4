/* Augmentation internals shared with the loader: the fill modes' index mapping and cropping. */
#ifndef CNN_CORE_AUGMENT_H
#define CNN_CORE_AUGMENT_H

#include "cnn/pipeline.h"
#include "core/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Index i of an axis of n pixels under a fill mode: in [0, n), or -1 for "the fill value" (constant). */
static inline int cnn_fill_index(int i, int n, cnn_fill_mode mode)
{
    if (i >= 0 && i < n) return i;
    if (mode == CNN_FILL_CONSTANT) return -1;
    if (mode == CNN_FILL_NEAREST) return i < 0 ? 0 : n - 1;
    /* reflect about the outer edge of the border pixel (d c b a | a b c d | d c b a): period 2n */
    long long p = 2LL * n, m = i % p;
    if (m < 0) m += p;
    return (int)(m < n ? m : p - 1 - m);
}

/* dst (h, w, c) = the window of src (sh, sw, c) whose top-left corner is (oy, ox) (may be negative or reach past
 * the edges: those pixels follow the fill mode). */
void cnn_crop_image(const float *src, int sh, int sw, int c, float *dst, int h, int w, int oy, int ox,
                    cnn_fill_mode fill, float fill_value);

/* Where the loader crops an (sh, sw) image to (h, w): uniformly random corners within the padded image when
 * `random` (each axis over [-pad, sh - h + pad]), else the centre. */
void cnn_crop_origin(int sh, int sw, int h, int w, int random, int pad, cnn_rng *rng, int *oy, int *ox);

#ifdef __cplusplus
}
#endif
#endif
