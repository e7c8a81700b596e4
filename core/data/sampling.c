/* The stratified validation split and the samplers' epoch orders (core/data/sampling.h): pure functions of their
 * arguments. */
#include "core/data/sampling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Fisher-Yates over an index array of any length (cnn_rng_shuffle draws 32-bit indices). */
static void shuffle(cnn_rng *r, int64_t *idx, int64_t n)
{
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t j = i + 1 <= (int64_t)UINT32_MAX ? cnn_rng_below(r, (uint32_t)(i + 1))
                                                   : (((uint64_t)cnn_rng_u32(r) << 32) | cnn_rng_u32(r)) %
                                                         (uint64_t)(i + 1);
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

void cnn_count_classes(const int32_t *labels, int64_t n, int num_classes, int64_t *counts)
{
    for (int c = 0; c < num_classes; c++) counts[c] = 0;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] >= 0 && labels[i] < num_classes) counts[labels[i]]++;
}

/* The samples of each class, ascending: members[first[c] .. first[c + 1]). */
typedef struct class_lists {
    int k;
    int64_t *first;   /* k + 1 */
    int64_t *members; /* n */
} class_lists;

static void class_lists_free(class_lists *cl)
{
    free(cl->first);
    free(cl->members);
    memset(cl, 0, sizeof *cl);
}

static cnn_status class_lists_make(const int32_t *labels, int64_t n, int k, class_lists *cl)
{
    memset(cl, 0, sizeof *cl);
    cl->k = k;
    cl->first = calloc((size_t)k + 1, sizeof *cl->first);
    cl->members = malloc((n ? (size_t)n : 1) * sizeof *cl->members);
    int64_t *fill = calloc((size_t)k, sizeof *fill);
    if (!cl->first || !cl->members || !fill) {
        free(fill);
        class_lists_free(cl);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for the class lists of %lld samples", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= k) {
            free(fill);
            class_lists_free(cl);
            return cnn_error(CNN_ERR_INVALID_ARG, "sample %lld has label %d, outside [0, %d)", (long long)i,
                             (int)labels[i], k);
        }
        cl->first[labels[i] + 1]++;
    }
    for (int c = 0; c < k; c++) cl->first[c + 1] += cl->first[c];
    for (int64_t i = 0; i < n; i++) {
        int c = labels[i];
        cl->members[cl->first[c] + fill[c]++] = i;
    }
    free(fill);
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// the stratified split

typedef struct class_share {
    double frac;
    int c;
} class_share;

static int cmp_share(const void *a, const void *b)
{
    const class_share *x = a, *y = b;
    if (x->frac != y->frac) return x->frac < y->frac ? 1 : -1; /* largest first */
    return (x->c > y->c) - (x->c < y->c);
}

cnn_status cnn_split_stratified(const int32_t *labels, int64_t n, double fraction, uint64_t seed, int64_t *order,
                                int64_t *ntrain)
{
    if (!(fraction > 0.0 && fraction < 1.0))
        return cnn_error(CNN_ERR_INVALID_ARG, "validation fraction %g is not between 0 and 1", fraction);
    if (n < 2)
        return cnn_error(CNN_ERR_INVALID_ARG, "cannot split %lld samples into training and validation sets",
                         (long long)n);
    int k = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= CNN_MAX_CLASSES)
            return cnn_error(CNN_ERR_INVALID_ARG, "sample %lld has label %d, outside [0, %d)", (long long)i,
                             (int)labels[i], CNN_MAX_CLASSES);
        if (labels[i] + 1 > k) k = labels[i] + 1;
    }
    /* at least one sample on each side */
    int64_t nval = (int64_t)llround((double)n * fraction);
    if (nval < 1) nval = 1;
    if (nval > n - 1) nval = n - 1;

    class_lists cl;
    cnn_status st = class_lists_make(labels, n, k, &cl);
    if (st != CNN_OK) return st;
    int64_t *quota = calloc((size_t)k, sizeof *quota);
    class_share *rem = malloc((size_t)k * sizeof *rem);
    if (!quota || !rem) {
        free(quota);
        free(rem);
        class_lists_free(&cl);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for a split of %d classes", k);
    }
    /* Hamilton's method: floor of each class's share, then one more for the largest remainders. A share is below
     * the class's count (nval < n), so the extra one always fits. */
    int64_t given = 0;
    for (int c = 0; c < k; c++) {
        int64_t count = cl.first[c + 1] - cl.first[c];
        double share = (double)count * (double)nval / (double)n;
        quota[c] = (int64_t)floor(share);
        if (quota[c] > count) quota[c] = count;
        rem[c].frac = share - (double)quota[c];
        rem[c].c = c;
        given += quota[c];
    }
    qsort(rem, (size_t)k, sizeof *rem, cmp_share);
    for (int i = 0; given < nval && i < k; i++) {
        int c = rem[i].c;
        if (quota[c] < cl.first[c + 1] - cl.first[c]) {
            quota[c]++;
            given++;
        }
    }

    cnn_rng rng;
    cnn_rng_seed(&rng, seed);
    int64_t t = 0, v = n - nval;
    for (int c = 0; c < k; c++) {
        int64_t *m = cl.members + cl.first[c], count = cl.first[c + 1] - cl.first[c];
        shuffle(&rng, m, count);
        for (int64_t i = 0; i < count; i++) {
            if (i < quota[c]) order[v++] = m[i];
            else order[t++] = m[i];
        }
    }
    /* each side keeps the original order of its samples: the split is a pure partition */
    qsort(order, (size_t)t, sizeof *order, cmp_i64);
    qsort(order + t, (size_t)(n - t), sizeof *order, cmp_i64);
    *ntrain = t;
    free(quota);
    free(rem);
    class_lists_free(&cl);
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// epoch orders

/* The largest and the smallest non-zero class count. */
static void count_range(const int64_t *counts, int k, int64_t *most, int64_t *fewest, int *nonempty)
{
    *most = 0;
    *fewest = 0;
    *nonempty = 0;
    for (int c = 0; c < k; c++) {
        if (!counts[c]) continue;
        if (counts[c] > *most) *most = counts[c];
        if (!*fewest || counts[c] < *fewest) *fewest = counts[c];
        (*nonempty)++;
    }
}

int64_t cnn_epoch_length(cnn_sampler sampler, const int32_t *labels, int64_t n, int num_classes)
{
    if (sampler != CNN_SAMPLER_OVERSAMPLE && sampler != CNN_SAMPLER_UNDERSAMPLE) return n;
    int64_t *counts = calloc((size_t)(num_classes > 0 ? num_classes : 1), sizeof *counts);
    if (!counts) return n;
    cnn_count_classes(labels, n, num_classes, counts);
    int64_t most, fewest;
    int nonempty;
    count_range(counts, num_classes, &most, &fewest, &nonempty);
    free(counts);
    return (int64_t)nonempty * (sampler == CNN_SAMPLER_OVERSAMPLE ? most : fewest);
}

cnn_status cnn_epoch_order(cnn_sampler sampler, const int32_t *labels, int64_t n, int num_classes, uint64_t seed,
                           int epoch, int64_t **order, int64_t *count)
{
    *order = NULL;
    *count = 0;
    if ((unsigned)sampler > CNN_SAMPLER_UNDERSAMPLE)
        return cnn_error(CNN_ERR_INVALID_ARG, "unknown sampler %d", (int)sampler);
    if (num_classes < 1 || num_classes > CNN_MAX_CLASSES)
        return cnn_error(CNN_ERR_INVALID_ARG, "%d classes (from 1 to %d)", num_classes, CNN_MAX_CLASSES);
    cnn_rng rng;
    cnn_rng_seed(&rng, cnn_seed_mix(seed, CNN_SEED_ORDER, (uint64_t)epoch, 0));

    if (sampler == CNN_SAMPLER_SHUFFLE || sampler == CNN_SAMPLER_SEQUENTIAL) {
        int64_t *o = malloc((n ? (size_t)n : 1) * sizeof *o);
        if (!o) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for the order of %lld samples", (long long)n);
        for (int64_t i = 0; i < n; i++) o[i] = i;
        if (sampler == CNN_SAMPLER_SHUFFLE) shuffle(&rng, o, n);
        *order = o;
        *count = n;
        return CNN_OK;
    }

    class_lists cl;
    cnn_status st = class_lists_make(labels, n, num_classes, &cl);
    if (st != CNN_OK) return st;
    int64_t most = 0, fewest = 0;
    int nonempty = 0;
    for (int c = 0; c < num_classes; c++) {
        int64_t m = cl.first[c + 1] - cl.first[c];
        if (!m) continue;
        if (m > most) most = m;
        if (!fewest || m < fewest) fewest = m;
        nonempty++;
    }
    int64_t per = sampler == CNN_SAMPLER_OVERSAMPLE ? most : fewest, total = (int64_t)nonempty * per;
    int64_t *o = malloc((total ? (size_t)total : 1) * sizeof *o);
    if (!o) {
        class_lists_free(&cl);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for the order of %lld draws", (long long)total);
    }
    int64_t at = 0;
    for (int c = 0; c < num_classes; c++) {
        int64_t *m = cl.members + cl.first[c], size = cl.first[c + 1] - cl.first[c];
        if (!size) continue;
        /* every sample of the class floor(per / size) times, then per % size of them without replacement */
        int64_t full = per / size, extra = per % size;
        for (int64_t r = 0; r < full; r++)
            for (int64_t i = 0; i < size; i++) o[at++] = m[i];
        if (extra) {
            shuffle(&rng, m, size);
            for (int64_t i = 0; i < extra; i++) o[at++] = m[i];
        }
    }
    shuffle(&rng, o, total);
    class_lists_free(&cl);
    *order = o;
    *count = total;
    return CNN_OK;
}
