/* Classifies images with a trained model through libcnn's public API: the smallest program that embeds the engine.
 *
 *   predict MODEL.safetensors IMAGE... [--device cpu|cuda[:N]] [--top K]
 *
 * The model file brings its definition, weights, class names, input normalization and resize; the program creates
 * a backend, loads the model, prepares each image as a buffer of floats in [0, 1] (NHWC, the model's input shape),
 * runs them as one batch and prints the K (3) most likely classes of each. Every call returns a status; on a
 * failure cnn_last_error() says what and where. Exit status: 0, 1 for a failure, 2 for a usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn.h"

static int fail(const char *what)
{
    fprintf(stderr, "predict: %s: %s\n", what, cnn_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *device = "cpu";
    const char **images = calloc((size_t)argc, sizeof *images);
    int nimages = 0, top = 3;
    if (!images) return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            device = argv[++i];
        } else if (!strcmp(argv[i], "--top") && i + 1 < argc) {
            char *end;
            long k = strtol(argv[++i], &end, 10);
            if (*end || k < 1 || k > 1000) {
                fprintf(stderr, "predict: --top: '%s' is not a count from 1 to 1000\n", argv[i]);
                free(images);
                return 2;
            }
            top = (int)k;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "predict: unknown flag %s\n", argv[i]);
            free(images);
            return 2;
        } else if (!model) {
            model = argv[i];
        } else {
            images[nimages++] = argv[i];
        }
    }
    if (!model || !nimages) {
        fprintf(stderr, "usage: predict MODEL.safetensors IMAGE... [--device cpu|cuda[:N]] [--top K]\n");
        free(images);
        return 2;
    }

    int rc = 0;
    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    float *x = NULL, *probs = NULL;
    if (cnn_backend_create(device, &backend) != CNN_OK) {
        rc = fail(device);
        goto done;
    }
    if (cnn_net_load(model, backend, &net) != CNN_OK) {
        rc = fail(model);
        goto done;
    }
    int h, w, c, rh = 0, rw = 0, k = cnn_net_num_outputs(net);
    cnn_net_input_shape(net, &h, &w, &c);
    int resized = cnn_net_resize(net, &rh, &rw); /* the size training resized to before its crop, if any */
    size_t per = (size_t)h * w * c;
    x = malloc((size_t)nimages * per * sizeof *x);
    probs = malloc((size_t)nimages * k * sizeof *probs);
    if (!x || !probs) {
        fprintf(stderr, "predict: out of memory for %d images\n", nimages);
        rc = 1;
        goto done;
    }
    for (int i = 0; i < nimages; i++) {
        float *img = x + (size_t)i * per;
        cnn_status st = resized ? cnn_image_load_crop(images[i], rh, rw, h, w, c, img)
                                : cnn_image_load(images[i], h, w, c, img);
        if (st != CNN_OK) {
            rc = fail(images[i]);
            goto done;
        }
    }
    if (cnn_net_predict(net, x, nimages, probs) != CNN_OK) {
        rc = fail("predict");
        goto done;
    }
    for (int i = 0; i < nimages; i++) {
        float *p = probs + (size_t)i * k;
        printf("%s\n", images[i]);
        for (int r = 0; r < top && r < k; r++) { /* the r-th most likely class */
            int best = cnn_argmax(p, k); /* those shown are set to -1 */
            const char *name = cnn_net_class_name(net, best);
            printf("  %d  %-20s %.4f\n", best, name ? name : "-", (double)p[best]);
            p[best] = -1.0f;
        }
    }
done:
    free(x);
    free(probs);
    cnn_net_destroy(net);
    cnn_backend_destroy(backend);
    free(images);
    return rc;
}
