/* Classifies an image with cnn-lite: the whole of what a device needs to run a model from `cnn quantize`.
 *
 *   lite_classify MODEL.safetensors IMAGE [TOP]
 *
 * The model file is read into memory and the image decoded here (stb_image; a device would have its own camera
 * frames); everything else is cnn-lite's (include/cnn/lite.h): the arena size, the setup, the prediction. The
 * image is resized (bilinear) to the model's input, converted to its channels and scaled to [0, 1]; the model
 * applies its own normalization. Prints the TOP (3) classes with their probabilities. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>

#include "cnn/lite.h"

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n == cap) {
            unsigned char *grown = realloc(buf, cap = cap ? cap * 2 : 1 << 16);
            if (!grown) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: lite_classify MODEL.safetensors IMAGE [TOP]\n");
        return 2;
    }
    int top = argc > 3 ? atoi(argv[3]) : 3;
    char err[256];
    size_t len = 0, need = 0;
    unsigned char *model = read_all(argv[1], &len);
    if (!model) {
        fprintf(stderr, "lite_classify: %s: cannot read it\n", argv[1]);
        return 1;
    }
    if (cnn_lite_arena_size(model, len, 1, &need, err, sizeof err) != CNN_LITE_OK) {
        fprintf(stderr, "lite_classify: %s: %s\n", argv[1], err);
        free(model);
        return 1;
    }
    void *arena = malloc(need);
    cnn_lite *m = NULL;
    if (!arena || cnn_lite_open(model, len, 1, arena, need, &m, err, sizeof err) != CNN_LITE_OK) {
        fprintf(stderr, "lite_classify: %s: %s\n", argv[1], arena ? err : "out of memory");
        free(arena);
        free(model);
        return 1;
    }
    free(model); /* cnn-lite copied what it needs into the arena */
    int h, w, c, k = cnn_lite_num_classes(m);
    cnn_lite_input_shape(m, &h, &w, &c);
    int iw, ih, ic;
    unsigned char *px = stbi_load(argv[2], &iw, &ih, &ic, c);
    float *x = malloc((size_t)h * w * c * sizeof *x), *p = malloc((size_t)k * sizeof *p);
    if (!px || !x || !p) {
        fprintf(stderr, "lite_classify: %s: %s\n", argv[2], px ? "out of memory" : stbi_failure_reason());
        stbi_image_free(px);
        free(x);
        free(p);
        free(arena);
        return 1;
    }
    for (int y = 0; y < h; y++) /* bilinear, pixel centres aligned */
        for (int xx = 0; xx < w; xx++) {
            float sy = ((float)y + 0.5f) * (float)ih / (float)h - 0.5f, sx = ((float)xx + 0.5f) * (float)iw / (float)w - 0.5f;
            int y0 = (int)floorf(sy), x0 = (int)floorf(sx);
            float fy = sy - (float)y0, fx = sx - (float)x0;
            for (int ch = 0; ch < c; ch++) {
                float v = 0.0f;
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) {
                        int yy = y0 + dy < 0 ? 0 : y0 + dy >= ih ? ih - 1 : y0 + dy;
                        int xs = x0 + dx < 0 ? 0 : x0 + dx >= iw ? iw - 1 : x0 + dx;
                        v += (dy ? fy : 1 - fy) * (dx ? fx : 1 - fx) * px[((size_t)yy * iw + xs) * c + ch];
                    }
                x[((size_t)y * w + xx) * c + ch] = v / 255.0f;
            }
        }
    stbi_image_free(px);
    int rc = 0;
    if (cnn_lite_predict(m, x, 1, p, err, sizeof err) != CNN_LITE_OK) {
        fprintf(stderr, "lite_classify: %s\n", err);
        rc = 1;
    } else {
        printf("%s (%s model, %dx%dx%d input):\n", argv[2], cnn_lite_mode(m), h, w, c);
        for (int r = 0; r < top && r < k; r++) { /* the r-th best class */
            int best = -1;
            for (int j = 0; j < k; j++)
                if (p[j] >= 0.0f && (best < 0 || p[j] > p[best])) best = j;
            const char *name = cnn_lite_class_name(m, best);
            printf("  %d  %-20s %.4f\n", best, name ? name : "-", (double)p[best]);
            p[best] = -1.0f;
        }
    }
    free(x);
    free(p);
    free(arena);
    return rc;
}
