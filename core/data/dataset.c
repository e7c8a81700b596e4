/* Datasets in host memory: loading IDX files (MNIST, Fashion-MNIST), splitting, per-channel statistics. */
#define _POSIX_C_SOURCE 200809L

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cnn/data.h"
#include "core/data/idx.h"
#include "core/data/sampling.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/free_list.h"
#include "core/rng.h"

/* Both MNIST and Fashion-MNIST have ten classes. */
#define MNIST_CLASSES 10

/* Fashion-MNIST's label names, in label order (github.com/zalandoresearch/fashion-mnist, "Labels"). */
static const char *const fashion_mnist_classes[MNIST_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

// ---------------------------------------------------------------------------------------------------------------
// allocation

/* A dataset of n samples of h x w x c with uninitialized images (8-bit pixels when u8, f32 values otherwise) and
 * labels and no class names. */
static cnn_status dataset_alloc(int64_t n, int h, int w, int c, int u8, cnn_dataset **out)
{
    *out = NULL;
    if (n < 0 || h <= 0 || w <= 0 || c <= 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "dataset of %lld samples of %dx%dx%d", (long long)n, h, w, c);
    size_t per = (size_t)h * (size_t)w; /* each < 2^31, so no overflow in 64-bit size_t */
    if (per > SIZE_MAX / (size_t)c) goto too_big;
    per *= (size_t)c;
    if ((uint64_t)n > SIZE_MAX / sizeof(float) / per) goto too_big;

    cnn_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for a dataset");
    ds->n = n;
    ds->h = h;
    ds->w = w;
    ds->c = c;
    size_t npix = (size_t)n * per;
    if (u8) ds->pixels = malloc(npix ? npix : 1);
    else ds->images = malloc(npix ? npix * sizeof(float) : 1);
    ds->labels = malloc(n ? (size_t)n * sizeof(int32_t) : 1);
    if ((!ds->images && !ds->pixels) || !ds->labels) {
        cnn_dataset_destroy(ds);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for %lld images of %dx%dx%d", (long long)n, h, w, c);
    }
    *out = ds;
    return CNN_OK;

too_big:
    return cnn_error(CNN_ERR_NO_MEMORY, "a dataset of %lld images of %dx%dx%d does not fit in memory", (long long)n,
                     h, w, c);
}

static cnn_status copy_class_names(cnn_dataset *dst, const char *const *names, int count)
{
    if (!names || count <= 0) return CNN_OK;
    dst->class_names = calloc((size_t)count, sizeof *dst->class_names);
    if (!dst->class_names) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for class names");
    for (int i = 0; i < count; i++) {
        const char *s = names[i] ? names[i] : "";
        size_t len = strlen(s);
        dst->class_names[i] = malloc(len + 1);
        if (!dst->class_names[i]) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for class names");
        memcpy(dst->class_names[i], s, len + 1);
    }
    return CNN_OK;
}

void cnn_dataset_destroy(cnn_dataset *ds)
{
    if (!ds) return;
    cnn_free_strings(ds->class_names, ds->num_classes);
    free(ds->images);
    free(ds->pixels);
    free(ds->labels);
    free(ds);
}

/* u8 -> [0, 1]; divide (not multiply by 1/255) so that every value is the correctly rounded p / 255 */
static inline float pixel_value(uint8_t p) { return (float)p / 255.0f; }

void cnn_dataset_image(const cnn_dataset *ds, int64_t i, float *out)
{
    size_t per = (size_t)ds->h * (size_t)ds->w * (size_t)ds->c;
    if (ds->pixels) {
        const uint8_t *p = ds->pixels + (size_t)i * per;
        for (size_t j = 0; j < per; j++) out[j] = pixel_value(p[j]);
    } else {
        memcpy(out, ds->images + (size_t)i * per, per * sizeof *out);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// IDX files

cnn_status cnn_dataset_load_idx(const char *images_path, const char *labels_path, cnn_dataset **out)
{
    cnn_status st = CNN_OK;
    cnn_idx img = {0}, lab = {0};
    cnn_dataset *ds = NULL;

    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dataset_load_idx: no output");
    *out = NULL;
    if (!images_path || !labels_path)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dataset_load_idx: missing file name");

    CNN_TRY(cnn_idx_read(images_path, 0, &img));
    if (img.ndim != 3 && img.ndim != 4) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: an image file must have 3 (n, h, w) or 4 (n, h, w, c) dimensions, "
                       "this one has %d", images_path, img.ndim);
        goto fail;
    }
    int64_t n = img.dims[0], h = img.dims[1], w = img.dims[2], c = img.ndim == 4 ? img.dims[3] : 1;
    if (n == 0) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: the file holds no images (dimension 0 is 0)", images_path);
        goto fail;
    }
    if (h <= 0 || w <= 0 || c <= 0 || h > INT_MAX || w > INT_MAX || c > INT_MAX) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: bad image shape %lldx%lldx%lld", images_path, (long long)h,
                       (long long)w, (long long)c);
        goto fail;
    }

    CNN_TRY(cnn_idx_read(labels_path, 0, &lab));
    if (lab.ndim != 1) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: a label file must have 1 dimension, this one has %d", labels_path,
                       lab.ndim);
        goto fail;
    }
    if (lab.dims[0] != n) {
        st = cnn_error(CNN_ERR_FORMAT, "%s holds %lld images but %s holds %lld labels", images_path,
                       (long long)n, labels_path, (long long)lab.dims[0]);
        goto fail;
    }

    CNN_TRY(dataset_alloc(n, (int)h, (int)w, (int)c, 1, &ds));
    memcpy(ds->pixels, img.data, img.size);
    int max_label = 0;
    for (int64_t i = 0; i < n; i++) {
        ds->labels[i] = lab.data[i];
        if (lab.data[i] > max_label) max_label = lab.data[i];
    }
    ds->num_classes = max_label + 1;
    cnn_idx_free(&img);
    cnn_idx_free(&lab);
    *out = ds;
    return CNN_OK;

fail:
    cnn_idx_free(&img);
    cnn_idx_free(&lab);
    cnn_dataset_destroy(ds);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// named datasets

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && !S_ISDIR(sb.st_mode);
}

/* How to get the files, for messages about a missing directory or file. */
static void howto(char *buf, size_t size, int fashion, const char *dir)
{
    if (fashion && !strcmp(dir, CNN_FASHION_MNIST_DIR))
        snprintf(buf, size, "install it with: sudo apt-get install dataset-fashion-mnist");
    else if (fashion)
        snprintf(buf, size, "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
                 "and t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist in %s, or "
                 "install the packaged copy with: sudo apt-get install dataset-fashion-mnist (then use "
                 "'fashion-mnist' without a directory)", dir);
    else
        snprintf(buf, size, "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
                 "and t10k-labels-idx1-ubyte.gz from http://yann.lecun.com/exdb/mnist/ in %s", dir);
}

/* DIR/NAME.gz when it exists, else DIR/NAME when it exists; else CNN_ERR_NOT_FOUND. `path` is malloc'ed. */
static cnn_status find_idx_file(const char *dataset, int fashion, const char *dir, const char *name, char **path)
{
    *path = NULL;
    size_t len = strlen(dir) + strlen(name) + 5; /* '/', ".gz", '\0' */
    char *gz = malloc(len), *raw = malloc(len);
    if (!gz || !raw) {
        free(gz);
        free(raw);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    }
    snprintf(gz, len, "%s/%s.gz", dir, name);
    snprintf(raw, len, "%s/%s", dir, name);
    if (is_file(gz)) {
        free(raw);
        *path = gz;
        return CNN_OK;
    }
    if (is_file(raw)) {
        free(gz);
        *path = raw;
        return CNN_OK;
    }
    char how[1024];
    howto(how, sizeof how, fashion, dir);
    cnn_status st = cnn_error(CNN_ERR_NOT_FOUND, "%s: neither %s nor %s exists; %s", dataset, gz, raw, how);
    free(gz);
    free(raw);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// CIFAR-10 and CIFAR-100 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"): records
// of the label byte(s), then 1024 red, 1024 green and 1024 blue bytes of a 32x32 image, rows top to bottom.

#define CIFAR_SIDE 32
#define CIFAR_PLANE (CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_FILES_MAX 5
/* Largest batch file read: CIFAR-100's train.bin is 50000 * 3074 bytes (154 MB). */
#define CIFAR_MAX_FILE_BYTES ((size_t)256 << 20)

static const char *const cifar10_classes[10] = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
};

/* DIR/NAME, malloc'ed. */
static char *join_path(const char *dir, const char *name)
{
    size_t len = strlen(dir) + strlen(name) + 2;
    char *p = malloc(len);
    if (p) snprintf(p, len, "%s/%s", dir, name);
    return p;
}

/* Exactly `count` non-empty lines of `path` as class names, when the file exists and has them; else nothing. */
static cnn_status read_class_names(cnn_dataset *ds, const char *dir, const char *name, int count)
{
    char *path = join_path(dir, name);
    if (!path) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    unsigned char *text = NULL;
    size_t len = 0;
    cnn_status st = CNN_OK;
    if (!is_file(path) || cnn_read_file(path, (size_t)1 << 20, &text, &len) != CNN_OK) goto done;
    const char *names[100];
    int n = 0;
    for (char *line = (char *)text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\r' || line[l - 1] == ' ')) line[--l] = '\0';
        if (l) {
            if (n == count) goto done; /* more names than classes: not the file we know */
            names[n++] = line;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (n == count) st = copy_class_names(ds, names, count);
done:
    free(text);
    free(path);
    return st;
}

static cnn_status load_cifar(const char *spec, int hundred, int coarse, const char *dir_arg, const char *split,
                             cnn_dataset **out)
{
    cnn_status st = CNN_OK;
    unsigned char *data[CIFAR_FILES_MAX] = {0};
    size_t len[CIFAR_FILES_MAX] = {0};
    char *paths[CIFAR_FILES_MAX] = {0};
    char *dir = NULL;
    cnn_dataset *ds = NULL;
    int nfiles = 0;
    const char *what = hundred ? "CIFAR-100" : "CIFAR-10";
    const char *url = hundred ? "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
                              : "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";

    if (!dir_arg || !dir_arg[0])
        return cnn_error(CNN_ERR_INVALID_ARG, "dataset '%s' needs a directory: %s:DIR, where DIR holds the binary "
                         "batches of %s (extract %s there)", spec, hundred ? (coarse ? "cifar100-coarse" : "cifar100")
                         : "cifar10", what, url);
    int train = !strcmp(split, "train");
    if (!train && strcmp(split, "test"))
        return cnn_error(CNN_ERR_INVALID_ARG, "unknown split '%s' (use train or test)", split);
    if (!is_dir(dir_arg))
        return cnn_error(CNN_ERR_NOT_FOUND, "%s: the directory %s does not exist; download %s and extract it there",
                         what, dir_arg, url);
    /* the archive's own folder inside DIR, when DIR is where the archive was extracted */
    dir = join_path(dir_arg, hundred ? "cifar-100-binary" : "cifar-10-batches-bin");
    if (!dir) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    if (!is_dir(dir)) {
        size_t l = strlen(dir_arg) + 1;
        free(dir);
        dir = malloc(l);
        if (!dir) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
        memcpy(dir, dir_arg, l);
    }

    const int label_bytes = hundred ? 2 : 1, label_at = hundred && !coarse ? 1 : 0;
    const int classes = hundred ? (coarse ? 20 : 100) : 10;
    const size_t record = (size_t)label_bytes + 3 * CIFAR_PLANE;
    if (hundred) nfiles = 1;
    else nfiles = train ? 5 : 1;
    int64_t total = 0;
    for (int f = 0; f < nfiles; f++) {
        char name[32];
        if (hundred) snprintf(name, sizeof name, "%s.bin", train ? "train" : "test");
        else if (train) snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
        else snprintf(name, sizeof name, "test_batch.bin");
        paths[f] = join_path(dir, name);
        if (!paths[f]) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
            goto fail;
        }
        if (!is_file(paths[f])) {
            st = cnn_error(CNN_ERR_NOT_FOUND, "%s: %s does not exist; download %s and extract it in %s", what,
                           paths[f], url, dir_arg);
            goto fail;
        }
        CNN_TRY(cnn_read_file(paths[f], CIFAR_MAX_FILE_BYTES, &data[f], &len[f]));
        if (len[f] == 0 || len[f] % record) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: %zu bytes is not a whole number of %s records of %zu bytes", paths[f],
                           len[f], what, record);
            goto fail;
        }
        total += (int64_t)(len[f] / record);
    }

    CNN_TRY(dataset_alloc(total, CIFAR_SIDE, CIFAR_SIDE, 3, 1, &ds));
    int64_t at = 0;
    for (int f = 0; f < nfiles; f++) {
        size_t count = len[f] / record;
        for (size_t r = 0; r < count; r++, at++) {
            const unsigned char *rec = data[f] + r * record;
            if (rec[label_at] >= classes) {
                st = cnn_error(CNN_ERR_FORMAT, "%s: record %zu has label %d; %s has %d classes", paths[f], r,
                               rec[label_at], what, classes);
                goto fail;
            }
            ds->labels[at] = rec[label_at];
            const unsigned char *planes = rec + label_bytes;
            uint8_t *img = ds->pixels + (size_t)at * 3 * CIFAR_PLANE; /* NHWC from three planes */
            for (int p = 0; p < CIFAR_PLANE; p++)
                for (int k = 0; k < 3; k++) img[p * 3 + k] = planes[k * CIFAR_PLANE + p];
        }
    }
    ds->num_classes = classes;
    if (!hundred) {
        CNN_TRY(read_class_names(ds, dir, "batches.meta.txt", classes));
        if (!ds->class_names) CNN_TRY(copy_class_names(ds, cifar10_classes, classes));
    } else {
        CNN_TRY(read_class_names(ds, dir, coarse ? "coarse_label_names.txt" : "fine_label_names.txt", classes));
    }
    *out = ds;
    ds = NULL;

fail:
    for (int f = 0; f < CIFAR_FILES_MAX; f++) {
        free(data[f]);
        free(paths[f]);
    }
    free(dir);
    cnn_dataset_destroy(ds);
    return st;
}

cnn_status cnn_dataset_load(const char *spec, const char *split, cnn_dataset **out)
{
    cnn_status st = CNN_OK;
    char *images = NULL, *labels = NULL;
    cnn_dataset *ds = NULL;

    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dataset_load: no output");
    *out = NULL;
    if (!spec || !split) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dataset_load: missing dataset or split");

    const char *colon = strchr(spec, ':');
    size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *dir = colon ? colon + 1 : NULL;
    int fashion;
    if (name_len == 13 && !strncmp(spec, "fashion-mnist", name_len)) {
        fashion = 1;
        if (!dir) dir = CNN_FASHION_MNIST_DIR;
    } else if (name_len == 5 && !strncmp(spec, "mnist", name_len)) {
        fashion = 0;
        if (!dir)
            return cnn_error(CNN_ERR_INVALID_ARG, "dataset 'mnist' needs a directory: mnist:DIR, where DIR holds "
                             "train-images-idx3-ubyte.gz etc. from http://yann.lecun.com/exdb/mnist/");
    } else if (name_len == 7 && !strncmp(spec, "cifar10", name_len)) {
        return load_cifar(spec, 0, 0, dir, split, out);
    } else if (name_len == 8 && !strncmp(spec, "cifar100", name_len)) {
        return load_cifar(spec, 1, 0, dir, split, out);
    } else if (name_len == 15 && !strncmp(spec, "cifar100-coarse", name_len)) {
        return load_cifar(spec, 1, 1, dir, split, out);
    } else {
        return cnn_error(CNN_ERR_NOT_FOUND, "unknown dataset '%s' (known: fashion-mnist, fashion-mnist:DIR, "
                         "mnist:DIR, cifar10:DIR, cifar100:DIR, cifar100-coarse:DIR)", spec);
    }
    if (!dir[0]) return cnn_error(CNN_ERR_INVALID_ARG, "dataset '%s': empty directory after ':'", spec);
    const char *prefix;
    if (!strcmp(split, "train")) prefix = "train";
    else if (!strcmp(split, "test")) prefix = "t10k";
    else return cnn_error(CNN_ERR_INVALID_ARG, "unknown split '%s' (use train or test)", split);

    const char *dataset = fashion ? "fashion-mnist" : "mnist";
    if (!is_dir(dir)) {
        char how[1024];
        howto(how, sizeof how, fashion, dir);
        return cnn_error(CNN_ERR_NOT_FOUND, "%s: the directory %s does not exist; %s", dataset, dir, how);
    }
    char name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    CNN_TRY(find_idx_file(dataset, fashion, dir, name, &images));
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    CNN_TRY(find_idx_file(dataset, fashion, dir, name, &labels));
    CNN_TRY(cnn_dataset_load_idx(images, labels, &ds));

    for (int64_t i = 0; i < ds->n; i++) {
        if (ds->labels[i] >= MNIST_CLASSES) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: label %d of sample %lld is not one of %s's %d classes", labels,
                           (int)ds->labels[i], (long long)i, dataset, MNIST_CLASSES);
            goto fail;
        }
    }
    ds->num_classes = MNIST_CLASSES;
    if (fashion) CNN_TRY(copy_class_names(ds, fashion_mnist_classes, MNIST_CLASSES));
    free(images);
    free(labels);
    *out = ds;
    return CNN_OK;

fail:
    free(images);
    free(labels);
    cnn_dataset_destroy(ds);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// splitting

/* A dataset made of the samples idx[0..count) of src, in that order. */
static cnn_status gather(const cnn_dataset *src, const int64_t *idx, int64_t count, cnn_dataset **out)
{
    cnn_dataset *ds = NULL;
    cnn_status st = dataset_alloc(count, src->h, src->w, src->c, src->pixels != NULL, &ds);
    if (st != CNN_OK) return st;
    size_t per = (size_t)src->h * (size_t)src->w * (size_t)src->c;
    for (int64_t i = 0; i < count; i++) {
        if (src->pixels) memcpy(ds->pixels + (size_t)i * per, src->pixels + (size_t)idx[i] * per, per);
        else memcpy(ds->images + (size_t)i * per, src->images + (size_t)idx[i] * per, per * sizeof(float));
        ds->labels[i] = src->labels[idx[i]];
    }
    ds->num_classes = src->num_classes;
    st = copy_class_names(ds, (const char *const *)src->class_names, src->num_classes);
    if (st != CNN_OK) {
        cnn_dataset_destroy(ds);
        return st;
    }
    *out = ds;
    return CNN_OK;
}

cnn_status cnn_dataset_split(const cnn_dataset *ds, double fraction, uint64_t seed, cnn_dataset **train,
                             cnn_dataset **val)
{
    cnn_status st = CNN_OK;
    int64_t *idx = NULL;
    cnn_dataset *t = NULL, *v = NULL;

    if (!train || !val) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dataset_split: no output");
    *train = *val = NULL;
    if (!ds || (!ds->images && !ds->pixels) || !ds->labels)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dataset_split: no dataset");
    if (ds->n < 2)
        return cnn_error(CNN_ERR_INVALID_ARG, "cannot split %lld samples into training and validation sets",
                         (long long)ds->n);
    idx = malloc((size_t)ds->n * sizeof *idx);
    if (!idx) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for %lld indices", (long long)ds->n);
    int64_t ntrain = 0;
    CNN_TRY(cnn_split_stratified(ds->labels, ds->n, fraction, seed, idx, &ntrain));
    int64_t nval = ds->n - ntrain;

    CNN_TRY(gather(ds, idx, ntrain, &t));
    CNN_TRY(gather(ds, idx + ntrain, nval, &v));
    free(idx);
    *train = t;
    *val = v;
    return CNN_OK;

fail:
    free(idx);
    cnn_dataset_destroy(t);
    cnn_dataset_destroy(v);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// statistics

cnn_status cnn_dataset_stats(const cnn_dataset *ds, float *mean, float *std)
{
    if (!ds || !mean || !std || (!ds->images && !ds->pixels) || ds->c <= 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dataset_stats: bad arguments");
    int c = ds->c;
    size_t pixels = (size_t)ds->n * (size_t)ds->h * (size_t)ds->w;
    if (pixels == 0) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dataset_stats: the dataset is empty");
    double *acc = calloc((size_t)c * 2, sizeof *acc);
    if (!acc) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for statistics");
    double *sum = acc, *sq = acc + c;
    /* two passes (mean, then squared deviations) in double: exact enough for millions of pixels */
#define VALUE(i) (ds->pixels ? pixel_value(ds->pixels[i]) : ds->images[i])
    for (size_t p = 0; p < pixels; p++)
        for (int k = 0; k < c; k++) sum[k] += VALUE(p * (size_t)c + (size_t)k);
    for (int k = 0; k < c; k++) sum[k] /= (double)pixels;
    for (size_t p = 0; p < pixels; p++)
        for (int k = 0; k < c; k++) {
            double d = VALUE(p * (size_t)c + (size_t)k) - sum[k];
            sq[k] += d * d;
        }
#undef VALUE
    for (int k = 0; k < c; k++) {
        mean[k] = (float)sum[k];
        std[k] = (float)sqrt(sq[k] / (double)pixels);
    }
    free(acc);
    return CNN_OK;
}

cnn_status cnn_dataset_standardize(cnn_dataset *ds, const float *mean, const float *std)
{
    if (!ds || !mean || !std || (!ds->images && !ds->pixels) || ds->c <= 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dataset_standardize: bad arguments");
    int c = ds->c;
    for (int k = 0; k < c; k++)
        if (!isfinite(mean[k]) || !isfinite(std[k]) || !(std[k] > 0.0f))
            return cnn_error(CNN_ERR_INVALID_ARG, "channel %d: cannot standardize with mean %g and std %g (std "
                             "must be finite and > 0)", k, (double)mean[k], (double)std[k]);
    size_t pixels = (size_t)ds->n * (size_t)ds->h * (size_t)ds->w;
    if (ds->pixels) { /* standardized values are not pixels any more */
        if (pixels > SIZE_MAX / sizeof(float) / (size_t)c)
            return cnn_error(CNN_ERR_NO_MEMORY, "cnn_dataset_standardize: %zu pixels do not fit in memory", pixels);
        float *values = malloc(pixels * (size_t)c * sizeof *values + 1);
        if (!values) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for %zu pixels of f32 values", pixels);
        for (size_t i = 0; i < pixels * (size_t)c; i++) values[i] = pixel_value(ds->pixels[i]);
        free(ds->pixels);
        ds->pixels = NULL;
        ds->images = values;
    }
    for (size_t p = 0; p < pixels; p++)
        for (int k = 0; k < c; k++) {
            float *x = &ds->images[p * (size_t)c + (size_t)k];
            *x = (*x - mean[k]) / std[k];
        }
    return CNN_OK;
}
