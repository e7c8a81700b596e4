/* cnn-lite on its own, for the portability check (tests/test_quant.cc, LitePortable): built natively and, where
 * the compiler can, with -m32 (a 32-bit ABI: 4-byte pointers and size_t). Reads a model and n images (raw float32,
 * NHWC) and writes the n x classes probabilities (raw float32).
 *
 *   lite_selftest MODEL IMAGES N OUT */
#include <stdio.h>
#include <stdlib.h>

#include "cnn/lite.h"

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 5) return 2;
    size_t mlen, ilen, need;
    void *model = read_all(argv[1], &mlen), *images = read_all(argv[2], &ilen);
    int n = atoi(argv[3]);
    char err[256];
    if (!model || !images || n < 1) return 1;
    if (cnn_lite_arena_size(model, mlen, n, &need, err, sizeof err) != CNN_LITE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    void *arena = malloc(need);
    cnn_lite *m;
    if (!arena || cnn_lite_open(model, mlen, n, arena, need, &m, err, sizeof err) != CNN_LITE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int k = cnn_lite_num_classes(m);
    float *p = malloc((size_t)n * (size_t)k * sizeof *p);
    if (!p || cnn_lite_predict(m, images, n, p, err, sizeof err) != CNN_LITE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    FILE *out = fopen(argv[4], "wb");
    if (!out || fwrite(p, sizeof *p, (size_t)n * (size_t)k, out) != (size_t)n * (size_t)k) return 1;
    fclose(out);
    printf("%d-bit: %d images, %d classes, arena %lu bytes\n", (int)(8 * sizeof(void *)), n, k, (unsigned long)need);
    free(p);
    free(arena);
    free(model);
    free(images);
    return 0;
}
