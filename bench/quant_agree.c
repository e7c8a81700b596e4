/* libcnn against cnn-lite on a whole test set, for bench/quant_bench.sh: a quantized model (cnn quantize) run by
 * libcnn (its compiled graph, cpu/qprog.c) and by cnn-lite alone, image by image: how many predicted classes differ,
 * and how far the class scores are apart (in steps of the int8 output's scale).
 *
 *   cnn_quant_agree [--exact|--fused] MODEL [DATA [SPLIT]]   (DATA: fashion-mnist; SPLIT: test; the compiled graph
 *                       with cnn-lite's requantization (--exact, the default) or oneDNN's (--fused): --int8-requant)
 *   prints "agree: N images, D classes differ, S scores differ, at most K steps (scale X)" */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn.h"
#include "cnn/lite.h"
#include "core/lite/lite_internal.h"
#include "core/nn/model_file.h"
#include "core/nn/net.h"

int main(int argc, char **argv)
{
    int flag = argc > 1 && (!strcmp(argv[1], "--exact") || !strcmp(argv[1], "--fused"));
    int exact = !(flag && !strcmp(argv[1], "--fused"));
    argc -= flag, argv += flag;
    if (argc < 2) {
        fprintf(stderr, "usage: cnn_quant_agree [--exact|--fused] MODEL [DATA [SPLIT]]\n");
        return 2;
    }
    const char *data = argc > 2 ? argv[2] : "fashion-mnist", *split = argc > 3 ? argv[3] : "test";
    enum { BATCH = 256 };
    cnn_backend *be = NULL;
    cnn_net *net = NULL;
    cnn_dataset *ds = NULL;
    if (cnn_backend_create("cpu", &be) != CNN_OK || cnn_net_load(argv[1], be, &net) != CNN_OK ||
        cnn_dataset_load(data, split, &ds) != CNN_OK) {
        fprintf(stderr, "cnn_quant_agree: %s\n", cnn_last_error());
        return 1;
    }
    cnn_net_quant_set_exact_requant(net, exact);
    FILE *f = fopen(argv[1], "rb");
    if (!f || fseek(f, 0, SEEK_END) || ftell(f) <= 0) {
        fprintf(stderr, "cnn_quant_agree: cannot read %s\n", argv[1]);
        return 1;
    }
    size_t len = (size_t)ftell(f);
    rewind(f);
    unsigned char *model = malloc(len);
    if (!model || fread(model, 1, len, f) != len) {
        fprintf(stderr, "cnn_quant_agree: cannot read %s\n", argv[1]);
        return 1;
    }
    fclose(f);
    char err[256];
    size_t need = 0;
    cnn_lite *m = NULL;
    void *arena = NULL;
    if (cnn_lite_arena_size(model, len, BATCH, &need, err, sizeof err) || !(arena = malloc(need)) ||
        cnn_lite_open(model, len, BATCH, arena, need, &m, err, sizeof err)) {
        fprintf(stderr, "cnn_quant_agree: %s\n", err);
        return 1;
    }
    int k = cnn_lite_num_classes(m), per = ds->h * ds->w * ds->c;
    cnn_lite_op_info last;
    cnn_lite_op(m, cnn_lite_num_ops(m) - 1, &last);
    if (last.kind == CNN_LITE_OP_SOFTMAX) cnn_lite_op(m, last.in[0], &last);
    double step = cnn_lite_is_int8(m) ? last.scale : 0.0;
    float *probs = malloc(sizeof(float) * BATCH * k), *lite = malloc(sizeof(float) * BATCH * k);
    float *scores = malloc(sizeof(float) * BATCH * k), *norm = malloc(sizeof(float) * BATCH * per);
    float *images = malloc(sizeof(float) * BATCH * per);
    if (!probs || !lite || !scores || !norm || !images) {
        fprintf(stderr, "cnn_quant_agree: out of memory\n");
        return 1;
    }
    float mean[16], sd[16];
    int has_norm = ds->c <= 16 && cnn_lite_normalization(m, mean, sd);
    int64_t classes = 0, differ = 0;
    double worst = 0.0;
    for (int64_t first = 0; first < ds->n; first += BATCH) {
        int n = (int)(ds->n - first < BATCH ? ds->n - first : BATCH);
        float *x = images; /* the dataset's images as floats (it may hold them as bytes) */
        for (int b = 0; b < n; b++) cnn_dataset_image(ds, first + b, x + (size_t)b * per);
        if (cnn_net_predict(net, x, n, probs) != CNN_OK ||
            cnn_tensor_read(net->acts[net->nlayers - 1], scores, sizeof(float) * n * k) != CNN_OK) {
            fprintf(stderr, "cnn_quant_agree: %s\n", cnn_last_error());
            return 1;
        }
        for (int64_t j = 0; j < (int64_t)n * per; j++)
            norm[j] = has_norm ? (x[j] - mean[j % ds->c]) / sd[j % ds->c] : x[j];
        if (cnn_lite_logits(m, norm, n, lite, err, sizeof err)) {
            fprintf(stderr, "cnn_quant_agree: %s\n", err);
            return 1;
        }
        for (int b = 0; b < n; b++) {
            classes += cnn_argmax(scores + b * k, k) != cnn_argmax(lite + b * k, k);
            for (int j = 0; j < k; j++) {
                double d = fabs((double)scores[b * k + j] - lite[b * k + j]);
                differ += d > 0.0;
                worst = d > worst ? d : worst;
            }
        }
    }
    const char *path = !cnn_net_quant_ran_compiled(net) ? "cnn-lite's path"
                       : exact                          ? "compiled, exact requantization"
                                                        : "compiled, fused requantization";
    printf("agree: %lld images, %lld classes differ, %lld scores differ, at most %.3g %s (libcnn %s)\n",
           (long long)ds->n, (long long)classes, (long long)differ, step > 0 ? worst / step : worst,
           step > 0 ? "steps of the output's scale" : "apart", path);
    free(probs), free(lite), free(scores), free(norm), free(images), free(arena), free(model);
    cnn_dataset_destroy(ds);
    cnn_net_destroy(net);
    cnn_backend_destroy(be);
    return 0;
}
