/* cnn-lite alone: batch-1 (or batch-N) latency of a model from cnn quantize, for bench/quant_bench.sh.
 *
 *   cnn_lite_bench MODEL [BATCH] [RUNS]     prints "lite batch B: MEDIAN ms median, MIN ms min, ARENA bytes" */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cnn/lite.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cnn_lite_bench MODEL [BATCH] [RUNS]\n");
        return 2;
    }
    int batch = argc > 2 ? atoi(argv[2]) : 1, runs = argc > 3 ? atoi(argv[3]) : 500;
    FILE *f = fopen(argv[1], "rb");
    if (!f || batch < 1 || runs < 1) return 2;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *model = malloc((size_t)len);
    if (!model || fread(model, 1, (size_t)len, f) != (size_t)len) return 1;
    fclose(f);
    char err[256];
    size_t need;
    cnn_lite *m;
    if (cnn_lite_arena_size(model, (size_t)len, batch, &need, err, sizeof err) != CNN_LITE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    void *arena = malloc(need);
    if (!arena || cnn_lite_open(model, (size_t)len, batch, arena, need, &m, err, sizeof err) != CNN_LITE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int h, w, c, k = cnn_lite_num_classes(m);
    cnn_lite_input_shape(m, &h, &w, &c);
    float *x = malloc((size_t)batch * h * w * c * sizeof *x), *p = malloc((size_t)batch * k * sizeof *p);
    double *t = malloc((size_t)runs * sizeof *t);
    if (!x || !p || !t) return 1;
    for (size_t i = 0; i < (size_t)batch * h * w * c; i++) x[i] = (float)(i % 251) / 251.0f;
    for (int i = 0; i < 10; i++) cnn_lite_predict(m, x, batch, p, err, sizeof err);
    for (int i = 0; i < runs; i++) {
        double t0 = now_ms();
        cnn_lite_predict(m, x, batch, p, err, sizeof err);
        t[i] = now_ms() - t0;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp);
    printf("lite batch %d: %.4f ms median, %.4f ms min, arena %zu bytes (%s)\n", batch, t[runs / 2], t[0], need,
           cnn_lite_mode(m));
    return 0;
}
