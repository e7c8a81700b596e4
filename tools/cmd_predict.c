/* cnn predict: classify image files (PNG, JPEG, BMP) with a trained model; prints the top-k classes. */
#include <stdio.h>
#include <stdlib.h>

#include "tools/cli.h"

#define MAX_IMAGES 4096

int cmd_predict(int argc, char **argv)
{
    const char *model = NULL, *device = NULL;
    int top = 3;
    int64_t max_memory = 0;
    cli_flag flags[] = {
        CLI_MODEL_FLAG(model),
        {"top", CLI_INT, &top, "K         how many classes to show per image (default 3)", 1, 1000, 0},
        CLI_DEVICE_FLAG(device),
        CLI_MAX_MEMORY_FLAG(max_memory),
        CLI_END,
    };
    static char *images[MAX_IMAGES];
    int n;
    int rc = cli_parse("predict", "--model FILE IMAGE...", flags, argc, argv, images, MAX_IMAGES, &n);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model || n == 0) {
        fprintf(stderr, "cnn predict: --model FILE and at least one IMAGE are required\n");
        return 2;
    }
    cli_apply_max_memory(max_memory);
    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    float *pixels = NULL, *probs = NULL;
    cnn_status st;
    rc = 1;
    if ((rc = cli_open_model("predict", device, model, max_memory, &backend, &net)) != 0) goto done;
    rc = 1;
    int h, w, c, k = cnn_net_num_outputs(net);
    cnn_net_input_shape(net, &h, &w, &c);
    int rh = h, rw = w; /* the size training resized to before its centre crop, when it did */
    cnn_net_resize(net, &rh, &rw);
    size_t per = (size_t)h * w * c;
    pixels = malloc(per * sizeof *pixels);
    probs = malloc((size_t)k * sizeof *probs);
    if (!pixels || !probs) {
        fprintf(stderr, "cnn predict: out of memory\n");
        goto done;
    }
    if (top > k) top = k;
    int failures = 0;
    for (int i = 0; i < n; i++) {
        /* one image at a time: a bad file is reported and skipped, the others still get their answer */
        if ((st = cnn_image_load_crop(images[i], rh, rw, h, w, c, pixels)) != CNN_OK) {
            cli_fail("predict", images[i], st);
            failures++;
            continue;
        }
        if ((st = cnn_net_predict(net, pixels, 1, probs)) != CNN_OK) {
            rc = cli_fail("predict", images[i], st);
            goto done;
        }
        printf("%s\n", images[i]);
        for (int r = 0; r < top; r++) {
            int best = -1;
            for (int j = 0; j < k; j++)
                if (probs[j] >= 0 && (best < 0 || probs[j] > probs[best])) best = j;
            const char *name = cnn_net_class_name(net, best);
            printf("  %d. %-16s (class %d)  %.4f\n", r + 1, name ? name : "-", best, probs[best]);
            probs[best] = -1.0f;
        }
    }
    rc = failures ? 1 : 0;
done:
    free(pixels);
    free(probs);
    cli_close_model(backend, net);
    return rc;
}
