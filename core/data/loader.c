/* The asynchronous batch loader (cnn/pipeline.h): a persistent pool of worker threads fills a ring of batch slots
 * while the trainer consumes them in order.
 *
 * Positions are (epoch, batch). Workers claim batches in order, each into a free slot, and fill it without the
 * lock: the samples of batch b of epoch e are entries [b * B, (b + 1) * B) of the epoch's order (a pure function
 * of (seed, e), core/data/sampling.c), and the augmentation of the k-th draw of the epoch uses a generator seeded from
 * (seed, e, k). So a batch's content does not depend on which worker filled it, nor when. The consumer waits for
 * the slot holding its next position. A seek bumps a generation counter: fills of an older generation are
 * dropped when they finish.
 *
 * A slot is FREE, FILLING (owned by one worker), READY, or HELD (by the consumer). All shared state is under one
 * mutex; the pixel work happens outside it. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cnn/pipeline.h"
#include "core/backend.h"
#include "core/data/augment.h"
#include "core/data/image.h"
#include "core/data/loader.h"
#include "core/data/sampling.h"
#include "core/error.h"
#include "core/ops.h"

/* Default ring depth per worker (PyTorch's DataLoader prefetch_factor is 2) and its floor: the trainer holds up to
 * two batches (the one computing and the one uploading), and the workers need free slots beside them. */
#define PREFETCH_PER_WORKER 2
#define PREFETCH_MIN 4
/* The default ring holds at most this much (and at least PREFETCH_MIN batches): 2 batches per worker of 64
 * ImageNet-sized images would be 38 MB each. */
#define PREFETCH_BYTES ((size_t)512 << 20)
#define MAX_WORKERS 256
#define MAX_PREFETCH 1024
/* Where a worker's failure message is kept until the consumer reports it. */
#define SLOT_MESSAGE 1024

enum { SLOT_FREE = 0, SLOT_FILLING, SLOT_READY, SLOT_HELD };

typedef struct slot {
    cnn_batch batch;     /* first: cnn_loader_release finds the slot from the batch pointer */
    int state;
    uint64_t generation;
    cnn_status status;   /* a worker's failure, reported by cnn_loader_next */
    char message[SLOT_MESSAGE];
    void *pinned;        /* images and labels in one page-locked block, or NULL */
} slot;

/* A worker's scratch buffers, grown as needed. */
typedef struct scratch {
    float *decoded;      /* the image at its own size, c channels */
    size_t decoded_cap;
    float *expanded;     /* an in-memory dataset's 8-bit image as values, its own channels */
    size_t expanded_cap;
    float *resized;      /* (resize_h, resize_w, c) */
    float *crop;         /* (h, w, c) */
} scratch;

typedef struct order_cache {
    int epoch;           /* -1: empty */
    int64_t *order;
} order_cache;

struct cnn_loader {
    const cnn_source *src;
    cnn_loader_config cfg;
    cnn_augment augment;
    int augmenting;
    float *mean, *std;         /* copies, or NULL */
    int rh, rw;                /* resize target */
    size_t per_image;          /* h * w * c floats */
    int64_t epoch_len, batches;
    int64_t global_batch;      /* draws per batch of all shards: batch_size x shards */

    pthread_mutex_t mu;
    pthread_cond_t work;       /* workers: a slot was freed, a seek happened, or stop */
    pthread_cond_t ready;      /* the consumer: a slot became ready */
    slot *slots;
    int nslots, held;
    int claim_epoch;           /* the next batch a worker claims */
    int64_t claim_batch;
    int next_epoch;            /* the next batch the consumer gets */
    int64_t next_batch;
    uint64_t generation;
    int stop;
    order_cache orders[2];
    unsigned char *bad;        /* per sample: already reported */
    int64_t bad_count;
    double wait_seconds;
    int64_t batches_out, images_out;

    pthread_t *threads;
    int nthreads;
    int mutex_ok, work_ok, ready_ok;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cnn_loader_config_defaults(cnn_loader_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->batch_size = 64;
    cfg->sampler = CNN_SAMPLER_SHUFFLE;
}

int cnn_loader_default_workers(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long w = cores / 2;
    return w < 1 ? 1 : w > 8 ? 8 : (int)w;
}

cnn_status cnn_sampler_parse(const char *text, cnn_sampler *out)
{
    if (text && !strcmp(text, "shuffle")) *out = CNN_SAMPLER_SHUFFLE;
    else if (text && !strcmp(text, "sequential")) *out = CNN_SAMPLER_SEQUENTIAL;
    else if (text && (!strcmp(text, "oversample") || !strcmp(text, "balanced"))) *out = CNN_SAMPLER_OVERSAMPLE;
    else if (text && !strcmp(text, "undersample")) *out = CNN_SAMPLER_UNDERSAMPLE;
    else
        return cnn_error(CNN_ERR_INVALID_ARG, "unknown sampler '%s' (known: shuffle, oversample (or balanced), "
                         "undersample, sequential)", text ? text : "");
    return CNN_OK;
}

const char *cnn_sampler_name(cnn_sampler s)
{
    switch (s) {
    case CNN_SAMPLER_SHUFFLE: return "shuffle";
    case CNN_SAMPLER_SEQUENTIAL: return "sequential";
    case CNN_SAMPLER_OVERSAMPLE: return "oversample";
    case CNN_SAMPLER_UNDERSAMPLE: return "undersample";
    }
    return "?";
}

// ---------------------------------------------------------------------------------------------------------------
// one sample

/* Makes *buf hold `count` floats. */
static cnn_status reserve(float **buf, size_t *cap, size_t count)
{
    if (count <= *cap) return CNN_OK;
    float *grown = realloc(*buf, count * sizeof *grown);
    if (!grown) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for an image of %zu values", count);
    *buf = grown;
    *cap = count;
    return CNN_OK;
}

/* Channel conversion of an in-memory image (1 <-> 3 channels). */
static void convert_channels(const float *src, int sc, float *dst, int c, size_t pixels)
{
    for (size_t p = 0; p < pixels; p++) {
        const float *s = src + p * sc;
        float *d = dst + p * c;
        if (sc == c) memcpy(d, s, (size_t)c * sizeof *d);
        else if (c == 1) d[0] = 0.299f * s[0] + 0.587f * s[1] + 0.114f * s[2]; /* BT.601 luma, as core/data/image.c */
        else d[0] = d[1] = d[2] = s[0];
    }
}

/* Sample `index`, the draw-th of epoch `epoch`, into out (h, w, c). A bad file gives its status with
 * *bad_file set. */
static cnn_status load_sample(cnn_loader *l, scratch *sc, int64_t index, int epoch, int64_t draw, float *out,
                              int *bad_file)
{
    const cnn_loader_config *cfg = &l->cfg;
    int h = cfg->h, w = cfg->w, c = cfg->c;
    const float *img;
    int ih, iw;
    *bad_file = 0;
    const cnn_dataset *ds = cnn_source_dataset(l->src);
    if (ds) {
        size_t per = (size_t)ds->h * ds->w * ds->c;
        if (ds->pixels) { /* to values here, one image at a time: the dataset keeps its pixels */
            cnn_status st = reserve(&sc->expanded, &sc->expanded_cap, per);
            if (st != CNN_OK) return st;
            cnn_dataset_image(ds, index, sc->expanded);
            img = sc->expanded;
        } else {
            img = ds->images + (size_t)index * per;
        }
        ih = ds->h;
        iw = ds->w;
        if (ds->c != c) {
            cnn_status st = reserve(&sc->decoded, &sc->decoded_cap, (size_t)ih * iw * c);
            if (st != CNN_OK) return st;
            convert_channels(img, ds->c, sc->decoded, c, (size_t)ih * iw);
            img = sc->decoded;
        }
    } else {
        cnn_image_u8 u8;
        cnn_status st = cnn_image_decode_file(cnn_source_path(l->src, index), cfg->max_pixels, l->rh, l->rw, &u8);
        if (st != CNN_OK) {
            *bad_file = st != CNN_ERR_NO_MEMORY;
            return st;
        }
        /* to floats at the resize size in one pass, row by row */
        if (u8.h == l->rh && u8.w == l->rw) cnn_image_u8_to_float(&u8, c, sc->resized);
        else st = cnn_image_resize_u8(&u8, c, sc->resized, l->rh, l->rw);
        cnn_image_u8_free(&u8);
        if (st != CNN_OK) return st;
        img = sc->resized;
        ih = l->rh;
        iw = l->rw;
    }
    if (ih != l->rh || iw != l->rw) {
        cnn_status st = cnn_image_resize(img, ih, iw, c, sc->resized, l->rh, l->rw);
        if (st != CNN_OK) return st;
        img = sc->resized;
    }
    uint64_t seed = cnn_seed_mix(cfg->seed, CNN_SEED_AUGMENT, (uint64_t)epoch, (uint64_t)draw);
    int random_crop = l->augmenting && l->augment.crop;
    if (l->rh != h || l->rw != w || (random_crop && l->augment.crop_pad)) {
        cnn_rng r;
        cnn_rng_seed(&r, seed ^ 0x5bd1e9955bd1e995ull); /* the crop's own stream */
        int oy, ox;
        cnn_crop_origin(l->rh, l->rw, h, w, random_crop, random_crop ? l->augment.crop_pad : 0, &r, &oy, &ox);
        cnn_crop_image(img, l->rh, l->rw, c, out, h, w, oy, ox, l->augment.fill, l->augment.fill_value);
    } else {
        memcpy(out, img, l->per_image * sizeof *out);
    }
    if (l->augmenting) {
        cnn_status st = cnn_augment_image(&l->augment, seed, out, h, w, c);
        if (st != CNN_OK) return st;
    }
    if (l->mean) {
        size_t pixels = (size_t)h * w;
        for (size_t p = 0; p < pixels; p++)
            for (int k = 0; k < c; k++) out[p * c + k] = (out[p * c + k] - l->mean[k]) / l->std[k];
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// the workers

/* The order of `epoch`, from the two-entry cache or computed (under the lock). */
static cnn_status epoch_order(cnn_loader *l, int epoch, const int64_t **order)
{
    for (int i = 0; i < 2; i++)
        if (l->orders[i].epoch == epoch) {
            *order = l->orders[i].order;
            return CNN_OK;
        }
    int64_t *o, count;
    cnn_status st = cnn_epoch_order(l->cfg.sampler, cnn_source_labels(l->src), cnn_source_count(l->src),
                                    cnn_source_num_classes(l->src), l->cfg.seed, epoch, &o, &count);
    if (st != CNN_OK) return st;
    /* replace the entry of the older epoch: the consumer moves forward */
    int victim = l->orders[0].epoch < 0 ? 0 : l->orders[1].epoch < 0 ? 1 : l->orders[0].epoch < l->orders[1].epoch ? 0 : 1;
    free(l->orders[victim].order);
    l->orders[victim].epoch = epoch;
    l->orders[victim].order = o;
    *order = o;
    return CNN_OK;
}

static slot *free_slot(cnn_loader *l)
{
    for (int i = 0; i < l->nslots; i++)
        if (l->slots[i].state == SLOT_FREE) return &l->slots[i];
    return NULL;
}

static int may_claim(const cnn_loader *l) { return !l->cfg.epochs || l->claim_epoch < l->cfg.epochs; }

/* Reports a bad file once (under the lock). */
static void note_bad_file(cnn_loader *l, int64_t index, const char *message)
{
    if (l->bad[index]) return;
    l->bad[index] = 1;
    l->bad_count++;
    if (l->cfg.warnings) fprintf(l->cfg.warnings, "warning: skipping a bad file: %s\n", message);
}

/* Fills slot s (claimed for (epoch, index) with n samples listed in s->batch.samples) without the lock. */
static void fill_slot(cnn_loader *l, scratch *sc, slot *s, int64_t first_draw)
{
    cnn_batch *b = &s->batch;
    int kept = 0;
    for (int i = 0; i < b->n; i++) {
        int64_t index = b->samples[i];
        int bad = 0;
        cnn_status st = load_sample(l, sc, index, b->epoch, first_draw + i, b->images + (size_t)kept * l->per_image,
                                    &bad);
        if (st == CNN_OK) {
            b->samples[kept] = index;
            b->labels[kept] = cnn_source_labels(l->src)[index];
            kept++;
            continue;
        }
        if (bad && !l->cfg.strict) {
            pthread_mutex_lock(&l->mu);
            note_bad_file(l, index, cnn_last_error());
            pthread_mutex_unlock(&l->mu);
            continue;
        }
        s->status = st;
        snprintf(s->message, sizeof s->message, "%s", cnn_last_error());
        if (bad) {
            pthread_mutex_lock(&l->mu);
            if (!l->bad[index]) {
                l->bad[index] = 1;
                l->bad_count++;
            }
            pthread_mutex_unlock(&l->mu);
        }
        break;
    }
    b->n = kept;
}

static void *worker_main(void *arg)
{
    cnn_loader *l = arg;
    scratch sc = {0};
    cnn_status st = CNN_OK;
    size_t resized = (size_t)l->rh * l->rw * l->cfg.c;
    sc.resized = malloc(resized * sizeof *sc.resized);
    if (!sc.resized) st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory for a loader worker");

    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        slot *s = may_claim(l) ? free_slot(l) : NULL;
        if (!s) {
            pthread_cond_wait(&l->work, &l->mu);
            continue;
        }
        int epoch = l->claim_epoch;
        int64_t index = l->claim_batch;
        if (++l->claim_batch == l->batches) {
            l->claim_batch = 0;
            l->claim_epoch++;
        }
        s->state = SLOT_FILLING;
        s->generation = l->generation;
        s->status = CNN_OK;
        s->message[0] = '\0';
        s->batch.epoch = epoch;
        s->batch.index = index;
        int64_t first = index * l->global_batch;
        int64_t n = l->epoch_len - first < l->global_batch ? l->epoch_len - first : l->global_batch;
        if (l->cfg.shards > 1) { /* this shard's contiguous part of the global batch */
            int64_t from = n * l->cfg.shard / l->cfg.shards, to = n * (l->cfg.shard + 1) / l->cfg.shards;
            first += from;
            n = to - from;
        }
        const int64_t *order = NULL;
        if (st == CNN_OK) st = epoch_order(l, epoch, &order);
        if (st != CNN_OK) {
            /* nothing can be filled: report it on every batch */
            s->status = st;
            snprintf(s->message, sizeof s->message, "%s", cnn_last_error());
            s->batch.n = 0;
            s->state = SLOT_READY;
            pthread_cond_broadcast(&l->ready);
            continue;
        }
        memcpy(s->batch.samples, order + first, (size_t)n * sizeof *order);
        s->batch.n = (int)n;
        pthread_mutex_unlock(&l->mu);

        fill_slot(l, &sc, s, first);

        pthread_mutex_lock(&l->mu);
        if (s->generation != l->generation) {
            s->state = SLOT_FREE; /* a seek made it stale */
            pthread_cond_broadcast(&l->work);
        } else {
            s->state = SLOT_READY;
            pthread_cond_broadcast(&l->ready);
        }
    }
    pthread_mutex_unlock(&l->mu);
    free(sc.decoded);
    free(sc.expanded);
    free(sc.resized);
    return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// life cycle

static void free_slots(cnn_loader *l)
{
    if (!l->slots) return;
    cnn_backend *b = l->cfg.backend;
    for (int i = 0; i < l->nslots; i++) {
        slot *s = &l->slots[i];
        if (s->pinned) cnn_op_host_free(b, s->pinned);
        else {
            free(s->batch.images);
            free(s->batch.labels);
        }
        free(s->batch.samples);
    }
    free(l->slots);
    l->slots = NULL;
}

void cnn_loader_destroy(cnn_loader *l)
{
    if (!l) return;
    if (l->mutex_ok) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        if (l->work_ok) pthread_cond_broadcast(&l->work);
        if (l->ready_ok) pthread_cond_broadcast(&l->ready);
        pthread_mutex_unlock(&l->mu);
    }
    for (int i = 0; i < l->nthreads; i++) pthread_join(l->threads[i], NULL);
    free(l->threads);
    free_slots(l);
    for (int i = 0; i < 2; i++) free(l->orders[i].order);
    if (l->ready_ok) pthread_cond_destroy(&l->ready);
    if (l->work_ok) pthread_cond_destroy(&l->work);
    if (l->mutex_ok) pthread_mutex_destroy(&l->mu);
    free(l->bad);
    free(l->mean);
    free(l->std);
    free(l);
}

static cnn_status check_config(const cnn_source *src, const cnn_loader_config *cfg)
{
    if (!src) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_loader_create: no source");
    if (cnn_source_count(src) < 1) return cnn_error(CNN_ERR_INVALID_ARG, "the data set is empty");
    if (cfg->batch_size < 1 || cfg->h < 1 || cfg->w < 1 || (cfg->c != 1 && cfg->c != 3))
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: batch size %d and image shape %dx%dx%d (channels 1 or 3)",
                         cfg->batch_size, cfg->h, cfg->w, cfg->c);
    if ((long long)cfg->h * cfg->w > CNN_IMAGE_MAX_PIXELS)
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: images of %dx%d are too large", cfg->h, cfg->w);
    int rh = cfg->resize_h ? cfg->resize_h : cfg->h, rw = cfg->resize_w ? cfg->resize_w : cfg->w;
    if (rh < cfg->h || rw < cfg->w || (long long)rh * rw > CNN_IMAGE_MAX_PIXELS)
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: resizing to %dx%d before cropping to %dx%d: the resize must be "
                         "at least the crop", rh, rw, cfg->h, cfg->w);
    if (cfg->workers < 0 || cfg->workers > MAX_WORKERS || cfg->prefetch < 0 || cfg->prefetch > MAX_PREFETCH)
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: %d workers (0 to %d) and prefetch %d (0 to %d)", cfg->workers,
                         MAX_WORKERS, cfg->prefetch, MAX_PREFETCH);
    if (cfg->prefetch == 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: a prefetch depth of 1 leaves the workers no slot while the "
                         "trainer holds a batch: use 2 or more");
    if ((unsigned)cfg->sampler > CNN_SAMPLER_UNDERSAMPLE)
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: unknown sampler %d", (int)cfg->sampler);
    if (cfg->epochs < 0) return cnn_error(CNN_ERR_INVALID_ARG, "loader: %d epochs", cfg->epochs);
    if (cfg->shards < 0 || cfg->shards > 1 << 20 || cfg->shard < 0 || (cfg->shards > 1 && cfg->shard >= cfg->shards) ||
        (cfg->shards > 1 && (long long)cfg->batch_size * cfg->shards > INT32_MAX))
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: shard %d of %d (of batches of %d)", cfg->shard, cfg->shards,
                         cfg->batch_size);
    if ((cfg->mean == NULL) != (cfg->std == NULL))
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: normalization needs both the mean and the std");
    if (cfg->std)
        for (int k = 0; k < cfg->c; k++)
            if (!(cfg->std[k] > 0.0f) || !isfinite(cfg->std[k]) || !isfinite(cfg->mean[k]))
                return cnn_error(CNN_ERR_INVALID_ARG, "loader: channel %d: mean %g, std %g (std must be finite and "
                                 "> 0)", k, (double)cfg->mean[k], (double)cfg->std[k]);
    const cnn_dataset *ds = cnn_source_dataset(src);
    if (ds && ds->c != cfg->c && ds->c != 1 && ds->c != 3)
        return cnn_error(CNN_ERR_SHAPE, "loader: the data has %d channels; the model takes %d", ds->c, cfg->c);
    if (cfg->augment && cfg->augment->crop && cfg->augment->crop_pad == 0 && rh == cfg->h && rw == cfg->w &&
        (!ds || (ds->h == cfg->h && ds->w == cfg->w)))
        return cnn_error(CNN_ERR_INVALID_ARG, "augment: crop without padding needs larger images than the model's "
                         "%dx%d: give crop=PAD or resize the images larger (--resize)", cfg->h, cfg->w);
    return CNN_OK;
}

static cnn_status alloc_slot(cnn_loader *l, slot *s)
{
    size_t images = (size_t)l->cfg.batch_size * l->per_image * sizeof(float);
    size_t labels = (size_t)l->cfg.batch_size * sizeof(int32_t);
    cnn_backend *b = l->cfg.backend;
    if (cnn_op_has(b, "host_alloc")) {
        /* one page-locked block: the images, then the labels (images are a multiple of 4 bytes) */
        cnn_status st = cnn_op_host_alloc(b, images + labels, &s->pinned);
        if (st != CNN_OK) return st;
        s->batch.images = s->pinned;
        s->batch.labels = (int32_t *)((char *)s->pinned + images);
    } else {
        s->batch.images = malloc(images);
        s->batch.labels = malloc(labels);
    }
    s->batch.samples = malloc((size_t)l->cfg.batch_size * sizeof *s->batch.samples);
    if (!s->batch.images || !s->batch.labels || !s->batch.samples)
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for a batch of %d images", l->cfg.batch_size);
    return CNN_OK;
}

cnn_status cnn_loader_create(const cnn_source *src, const cnn_loader_config *cfg, cnn_loader **out)
{
    if (!out || !cfg) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_loader_create: no config or output");
    *out = NULL;
    cnn_status st = check_config(src, cfg);
    if (st != CNN_OK) return st;
    cnn_loader *l = calloc(1, sizeof *l);
    if (!l) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    l->src = src;
    l->cfg = *cfg;
    l->cfg.augment = NULL; /* the copy below is used */
    cnn_augment_defaults(&l->augment);
    if (cfg->augment) l->augment = *cfg->augment;
    l->augmenting = cnn_augment_active(&l->augment);
    l->rh = cfg->resize_h ? cfg->resize_h : cfg->h;
    l->rw = cfg->resize_w ? cfg->resize_w : cfg->w;
    l->per_image = (size_t)cfg->h * cfg->w * cfg->c;
    l->orders[0].epoch = l->orders[1].epoch = -1;
    int64_t n = cnn_source_count(src);
    l->epoch_len = cnn_epoch_length(cfg->sampler, cnn_source_labels(src), n, cnn_source_num_classes(src));
    l->global_batch = (int64_t)cfg->batch_size * (cfg->shards > 1 ? cfg->shards : 1);
    l->batches = (l->epoch_len + l->global_batch - 1) / l->global_batch;
    if (l->batches < 1) {
        free(l);
        return cnn_error(CNN_ERR_INVALID_ARG, "the sampler draws no samples from this data set");
    }
    int workers = cfg->workers ? cfg->workers : cnn_loader_default_workers();
    l->nslots = cfg->prefetch ? cfg->prefetch : workers * PREFETCH_PER_WORKER;
    if (!cfg->prefetch) {
        size_t batch_bytes = (size_t)cfg->batch_size * l->per_image * sizeof(float);
        if ((size_t)l->nslots > PREFETCH_BYTES / batch_bytes) l->nslots = (int)(PREFETCH_BYTES / batch_bytes);
        if (l->nslots < PREFETCH_MIN) l->nslots = PREFETCH_MIN;
    }
    l->cfg.workers = workers;
    l->cfg.prefetch = l->nslots;

    if (cfg->mean) {
        l->mean = malloc((size_t)cfg->c * sizeof *l->mean);
        l->std = malloc((size_t)cfg->c * sizeof *l->std);
        if (!l->mean || !l->std) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
            goto fail;
        }
        memcpy(l->mean, cfg->mean, (size_t)cfg->c * sizeof *l->mean);
        memcpy(l->std, cfg->std, (size_t)cfg->c * sizeof *l->std);
    }
    l->cfg.mean = l->mean;
    l->cfg.std = l->std;
    l->bad = calloc((size_t)n, 1);
    l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
    l->threads = calloc((size_t)workers, sizeof *l->threads);
    if (!l->bad || !l->slots || !l->threads) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory for the loader");
        goto fail;
    }
    for (int i = 0; i < l->nslots; i++) CNN_TRY(alloc_slot(l, &l->slots[i]));
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "loader: cannot create a mutex");
        goto fail;
    }
    l->mutex_ok = 1;
    if (pthread_cond_init(&l->work, NULL) != 0 || !(l->work_ok = 1) || pthread_cond_init(&l->ready, NULL) != 0) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "loader: cannot create a condition variable");
        goto fail;
    }
    l->ready_ok = 1;
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&l->threads[i], NULL, worker_main, l) != 0) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "loader: cannot start worker thread %d of %d", i + 1, workers);
            goto fail;
        }
        l->nthreads++;
    }
    *out = l;
    return CNN_OK;
fail:
    cnn_loader_destroy(l);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the consumer

int64_t cnn_loader_epoch_size(const cnn_loader *l) { return l ? l->epoch_len : 0; }
int64_t cnn_loader_batches_per_epoch(const cnn_loader *l) { return l ? l->batches : 0; }

cnn_status cnn_loader_seek(cnn_loader *l, int epoch, int64_t batch)
{
    if (!l) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_loader_seek: no loader");
    if (epoch < 0 || batch < 0 || batch >= l->batches)
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: cannot seek to batch %lld of epoch %d (an epoch has %lld "
                         "batches)", (long long)batch, epoch, (long long)l->batches);
    pthread_mutex_lock(&l->mu);
    if (l->held) {
        pthread_mutex_unlock(&l->mu);
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: release the %d batches held before seeking", l->held);
    }
    l->generation++;
    for (int i = 0; i < l->nslots; i++)
        if (l->slots[i].state == SLOT_READY) l->slots[i].state = SLOT_FREE;
    l->claim_epoch = l->next_epoch = epoch;
    l->claim_batch = l->next_batch = batch;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    return CNN_OK;
}

void cnn_loader_tell(const cnn_loader *l, int *epoch, int64_t *batch)
{
    cnn_loader *m = (cnn_loader *)l; /* the mutex is state, not value */
    pthread_mutex_lock(&m->mu);
    *epoch = l->next_epoch;
    *batch = l->next_batch;
    pthread_mutex_unlock(&m->mu);
}

static slot *ready_slot(cnn_loader *l)
{
    for (int i = 0; i < l->nslots; i++) {
        slot *s = &l->slots[i];
        if (s->state == SLOT_READY && s->generation == l->generation && s->batch.epoch == l->next_epoch &&
            s->batch.index == l->next_batch)
            return s;
    }
    return NULL;
}

cnn_status cnn_loader_next(cnn_loader *l, cnn_batch **out)
{
    if (!l || !out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_loader_next: no loader or output");
    *out = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->held >= l->nslots - 1) {
        int held = l->held;
        pthread_mutex_unlock(&l->mu);
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: %d batches are held and the ring has %d slots: release one "
                         "first", held, l->nslots);
    }
    if (l->cfg.epochs && l->next_epoch >= l->cfg.epochs) {
        pthread_mutex_unlock(&l->mu);
        return cnn_error(CNN_ERR_INVALID_ARG, "loader: all %d epochs were delivered", l->cfg.epochs);
    }
    double t0 = now_seconds();
    slot *s;
    while (!(s = ready_slot(l))) pthread_cond_wait(&l->ready, &l->mu);
    l->wait_seconds += now_seconds() - t0;
    if (++l->next_batch == l->batches) {
        l->next_batch = 0;
        l->next_epoch++;
    }
    if (s->status != CNN_OK) {
        cnn_status st = s->status;
        cnn_error(st, "%s", s->message);
        s->state = SLOT_FREE;
        pthread_cond_broadcast(&l->work);
        pthread_mutex_unlock(&l->mu);
        return st;
    }
    s->state = SLOT_HELD;
    l->held++;
    l->batches_out++;
    l->images_out += s->batch.n;
    pthread_mutex_unlock(&l->mu);
    *out = &s->batch;
    return CNN_OK;
}

void cnn_loader_release(cnn_loader *l, cnn_batch *batch)
{
    if (!l || !batch) return;
    slot *s = (slot *)batch;
    pthread_mutex_lock(&l->mu);
    if (s >= l->slots && s < l->slots + l->nslots && s->state == SLOT_HELD) {
        s->state = SLOT_FREE;
        l->held--;
        pthread_cond_broadcast(&l->work);
    }
    pthread_mutex_unlock(&l->mu);
}

void cnn_loader_get_stats(const cnn_loader *l, cnn_loader_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!l) return;
    cnn_loader *m = (cnn_loader *)l; /* the mutex is state, not value */
    pthread_mutex_lock(&m->mu);
    out->wait_seconds = l->wait_seconds;
    out->batches = l->batches_out;
    out->images = l->images_out;
    out->bad_files = l->bad_count;
    pthread_mutex_unlock(&m->mu);
}

// ---------------------------------------------------------------------------------------------------------------
// one sample, synchronously

cnn_status cnn_loader_load_sample(const cnn_source *src, const cnn_loader_config *cfg, int64_t index, int epoch,
                                  int64_t draw, float *out)
{
    if (!cfg || !out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_loader_load_sample: no config or output");
    cnn_status st = check_config(src, cfg);
    if (st != CNN_OK) return st;
    if (index < 0 || index >= cnn_source_count(src))
        return cnn_error(CNN_ERR_INVALID_ARG, "sample %lld of a data set of %lld", (long long)index,
                         (long long)cnn_source_count(src));
    /* a loader without threads or ring: what load_sample reads */
    cnn_loader l;
    memset(&l, 0, sizeof l);
    l.src = src;
    l.cfg = *cfg;
    cnn_augment_defaults(&l.augment);
    if (cfg->augment) l.augment = *cfg->augment;
    l.augmenting = cnn_augment_active(&l.augment);
    l.rh = cfg->resize_h ? cfg->resize_h : cfg->h;
    l.rw = cfg->resize_w ? cfg->resize_w : cfg->w;
    l.per_image = (size_t)cfg->h * cfg->w * cfg->c;
    l.mean = (float *)cfg->mean;
    l.std = (float *)cfg->std;
    scratch sc = {0};
    sc.resized = malloc((size_t)l.rh * l.rw * cfg->c * sizeof *sc.resized);
    if (!sc.resized) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    int bad;
    st = load_sample(&l, &sc, index, epoch, draw, out, &bad);
    free(sc.decoded);
    free(sc.expanded);
    free(sc.resized);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// statistics

cnn_status cnn_source_stats(const cnn_source *src, const cnn_loader_config *cfg, float *mean, float *std)
{
    if (!src || !cfg || !mean || !std) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_stats: bad arguments");
    const cnn_dataset *ds = cnn_source_dataset(src);
    int rh = cfg->resize_h ? cfg->resize_h : cfg->h, rw = cfg->resize_w ? cfg->resize_w : cfg->w;
    /* the data as they are: the exact two-pass statistics of the dataset */
    if (ds && ds->c == cfg->c && ds->h == cfg->h && ds->w == cfg->w && rh == cfg->h && rw == cfg->w)
        return cnn_dataset_stats(ds, mean, std);

    cnn_loader_config c = *cfg;
    c.sampler = CNN_SAMPLER_SEQUENTIAL;
    c.augment = NULL;
    c.mean = c.std = NULL;
    c.epochs = 1;
    c.backend = NULL;
    cnn_loader *l = NULL;
    cnn_status st = cnn_loader_create(src, &c, &l);
    if (st != CNN_OK) return st;
    double *acc = calloc((size_t)cfg->c * 2, sizeof *acc);
    if (!acc) {
        cnn_loader_destroy(l);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    }
    double *sum = acc, *sq = acc + cfg->c;
    double pixels = 0.0;
    for (int64_t b = 0; b < cnn_loader_batches_per_epoch(l); b++) {
        cnn_batch *batch;
        if ((st = cnn_loader_next(l, &batch)) != CNN_OK) break;
        size_t count = (size_t)batch->n * cfg->h * cfg->w;
        /* per batch in double, then summed: one pass, exact enough for values in [0, 1] */
        for (size_t p = 0; p < count; p++)
            for (int k = 0; k < cfg->c; k++) {
                double v = batch->images[p * cfg->c + k];
                sum[k] += v;
                sq[k] += v * v;
            }
        pixels += (double)count;
        cnn_loader_release(l, batch);
    }
    if (st == CNN_OK && pixels == 0.0) st = cnn_error(CNN_ERR_FORMAT, "no image of the data set could be read");
    if (st == CNN_OK)
        for (int k = 0; k < cfg->c; k++) {
            double m = sum[k] / pixels, var = sq[k] / pixels - m * m;
            mean[k] = (float)m;
            std[k] = (float)sqrt(var > 0.0 ? var : 0.0);
        }
    free(acc);
    cnn_loader_destroy(l);
    return st;
}

void cnn_loader_config_for_net(cnn_loader_config *lc, const cnn_net *net, const cnn_train_config *cfg, int batch_size)
{
    cnn_loader_config_defaults(lc);
    lc->batch_size = batch_size;
    cnn_net_input_shape(net, &lc->h, &lc->w, &lc->c);
    lc->sampler = CNN_SAMPLER_SEQUENTIAL;
    cnn_loader_config_take_data(lc, cfg);
}

void cnn_loader_config_take_data(cnn_loader_config *lc, const cnn_train_config *cfg)
{
    if (!cfg) return;
    lc->resize_h = cfg->resize_h;
    lc->resize_w = cfg->resize_w;
    lc->workers = cfg->workers;
    lc->prefetch = cfg->prefetch;
    lc->max_pixels = cfg->max_pixels;
    lc->strict = cfg->strict;
    lc->warnings = cfg->warnings;
}
