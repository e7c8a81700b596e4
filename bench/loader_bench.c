/* The data loader's throughput: decode + resize + crop + augment + normalize + batch, in images per second, on an
 * image source (a folder of JPEGs and PNGs, as bench/loader_bench.sh makes), with nothing consuming the batches.
 * Public API only. One line of JSON per run on stdout.
 *
 *   cnn_loader_bench --data folder:DIR [--size 128x128x3] [--resize 144x144] [--augment crop,flip=h]
 *                    [--workers N] [--batch 64] [--epochs 2] [--prefetch N] [--label NAME]
 *
 * The first epoch warms the page cache and the workers; the epochs after it are timed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnn/cnn.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int usage(void)
{
    fprintf(stderr, "usage: cnn_loader_bench --data SPEC [--size HxWxC] [--resize HxW] [--augment LIST] [--workers N] "
                    "[--batch N] [--epochs N] [--prefetch N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *data = NULL, *size = "128x128x3", *resize = "144x144", *augment = "crop,flip=h", *label = "cnn.c";
    int workers = 1, batch = 64, epochs = 2, prefetch = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--size")) size = v;
        else if (!strcmp(a, "--resize")) resize = v;
        else if (!strcmp(a, "--augment")) augment = v;
        else if (!strcmp(a, "--workers")) workers = atoi(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--epochs")) epochs = atoi(v);
        else if (!strcmp(a, "--prefetch")) prefetch = atoi(v);
        else if (!strcmp(a, "--label")) label = v;
        else return usage();
        i++;
    }
    if (!data || epochs < 2) return usage();
    cnn_loader_config cfg;
    cnn_loader_config_defaults(&cfg);
    if (sscanf(size, "%dx%dx%d", &cfg.h, &cfg.w, &cfg.c) != 3) return usage();
    if (strcmp(resize, "none") && sscanf(resize, "%dx%d", &cfg.resize_h, &cfg.resize_w) != 2) return usage();
    cnn_augment aug;
    if (cnn_augment_parse(augment, &aug) != CNN_OK) {
        fprintf(stderr, "cnn_loader_bench: --augment: %s\n", cnn_last_error());
        return 2;
    }
    /* torchvision's ImageNet normalization, as the peer script applies */
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    cfg.batch_size = batch;
    cfg.workers = workers;
    cfg.prefetch = prefetch;
    cfg.augment = &aug;
    cfg.mean = cfg.c == 3 ? mean : NULL;
    cfg.std = cfg.c == 3 ? std : NULL;
    cfg.seed = 1;
    cfg.epochs = epochs;
    cfg.warnings = stderr;

    cnn_source *src = NULL;
    cnn_loader *l = NULL;
    cnn_status st = cnn_source_open(data, "train", &src);
    if (st == CNN_OK) st = cnn_loader_create(src, &cfg, &l);
    if (st != CNN_OK) {
        fprintf(stderr, "cnn_loader_bench: %s\n", cnn_last_error());
        cnn_source_destroy(src);
        return 1;
    }
    int64_t per_epoch = cnn_loader_batches_per_epoch(l), images = 0;
    double t0 = 0.0, checksum = 0.0;
    cnn_loader_stats s0 = {0}, s1;
    for (int e = 0; e < epochs && st == CNN_OK; e++) {
        if (e == 1) {
            t0 = now();
            cnn_loader_get_stats(l, &s0);
        }
        for (int64_t b = 0; b < per_epoch; b++) {
            cnn_batch *x;
            if ((st = cnn_loader_next(l, &x)) != CNN_OK) break;
            if (e >= 1) images += x->n;
            checksum += x->n ? x->images[0] : 0.0f; /* touch the batch */
            cnn_loader_release(l, x);
        }
    }
    double seconds = now() - t0;
    cnn_loader_get_stats(l, &s1);
    if (st != CNN_OK) fprintf(stderr, "cnn_loader_bench: %s\n", cnn_last_error());
    printf("{\"impl\": \"%s\", \"workers\": %d, \"batch\": %d, \"images\": %lld, \"seconds\": %.4f, "
           "\"images_per_sec\": %.1f, \"images_per_sec_per_worker\": %.1f, \"wait_seconds\": %.4f, "
           "\"bad_files\": %lld, \"checksum\": %.6f}\n",
           label, workers, batch, (long long)images, seconds, (double)images / seconds, (double)images / seconds / workers,
           s1.wait_seconds - s0.wait_seconds, (long long)s1.bad_files, checksum);
    cnn_loader_destroy(l);
    cnn_source_destroy(src);
    return st == CNN_OK ? 0 : 1;
}
