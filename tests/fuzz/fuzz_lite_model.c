/* Fuzz harness: cnn-lite's model reader (core/lite/lite.c), as a device meets a model file: the safetensors header,
 * the graph's lines, the weights and scales, then one prediction.
 *
 * The size query and the setup must agree (an open into exactly the size asked for succeeds whenever the query
 * did), the arena bound the memory (a model whose setup asks for more than 64 MiB is not opened), and a model that
 * opens must predict one image of mid-gray into probabilities that sum to 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/lite.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    size_t need = 0;
    char err[256];
    if (cnn_lite_arena_size(data, size, 1, &need, err, sizeof err) != CNN_LITE_OK) {
        fuzz_check(err[0] != '\0', "a failure without a message");
        return 0;
    }
    if (need > ((size_t)64 << 20)) return 0;
    void *arena = malloc(need);
    fuzz_check(arena != NULL, "out of memory");
    cnn_lite *m = NULL;
    cnn_lite_status st = cnn_lite_open(data, size, 1, arena, need, &m, err, sizeof err);
    fuzz_check(st == CNN_LITE_OK, "the size query passed but the setup in that size failed");
    int h, w, c, k = cnn_lite_num_classes(m);
    cnn_lite_input_shape(m, &h, &w, &c);
    size_t pixels = (size_t)h * w * c;
    if (pixels <= ((size_t)1 << 20) && k <= 100000) {
        float *x = malloc(pixels * sizeof *x), *p = malloc((size_t)k * sizeof *p);
        fuzz_check(x && p, "out of memory");
        for (size_t i = 0; i < pixels; i++) x[i] = 0.5f;
        if (cnn_lite_predict(m, x, 1, p, err, sizeof err) == CNN_LITE_OK) {
            double sum = 0.0;
            int finite = 1;
            for (int j = 0; j < k; j++) sum += p[j], finite &= isfinite(p[j]) != 0;
            /* float weights may overflow to inf and NaN in a forged model; int8 ones never do */
            if (finite && !strcmp(cnn_lite_mode(m), "int8")) fuzz_check(fabs(sum - 1.0) < 1e-3, "probabilities that do not sum to 1");
        }
        free(x);
        free(p);
    }
    free(arena);
    return 0;
}
