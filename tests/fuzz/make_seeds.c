/* Writes the seed model files and checkpoints of the fuzz corpora (tests/fuzz/corpus/model_file and
 * corpus/checkpoint):
 *
 *     fuzz_make_seeds OUTDIR     ->  the files of OUTDIR/model_file and OUTDIR/checkpoint
 *
 * The models are small (a few hundred weights: the seeds stay a few KB) and carry every piece of metadata a model
 * file has (class names, normalization, resize, an augment line). The checkpoints are those of the run that
 * fuzz_checkpoint resumes (checkpoint_setup.h), written after every optimizer step, so that they include one in
 * the middle of an epoch, and the best epoch's. Run it again when the formats change; the ctest test
 * fuzz_checkpoint_seeds_restore says when the checkpoints no longer match the harness. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "checkpoint_setup.h"
#include "cnn/net.h"
#include "cnn/train.h"

static const char conv_definition[] = "input 4 4 1\nconv 2 3 relu\nflatten\ndense 2 softmax\n";
static const char bn_definition[] = "input 3 3 2\nconv 2 1 bias=no\nbatchnorm relu\nglobalavgpool\ndense 3 softmax\n"
                                    "augment flip=h,crop=1\n";

static int fail(const char *what)
{
    fprintf(stderr, "fuzz_make_seeds: %s: %s\n", what, cnn_last_error());
    return 1;
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0777) != 0) {
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            perror(path);
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    char models[4096], ckpts[4096], path[4200];
    snprintf(models, sizeof models, "%s/model_file", argv[1]);
    snprintf(ckpts, sizeof ckpts, "%s/checkpoint", argv[1]);
    if (!make_dir(argv[1]) || !make_dir(models) || !make_dir(ckpts)) return 1;

    cnn_backend *be = NULL;
    cnn_net *a = NULL, *b = NULL;
    if (cnn_backend_create("cpu", &be) != CNN_OK) return fail("the CPU backend");

    // --- model files
    if (cnn_net_from_text(conv_definition, "conv", be, 1, &a) != CNN_OK) return fail("the conv network");
    snprintf(path, sizeof path, "%s/conv.safetensors", models);
    if (cnn_net_save(a, path) != CNN_OK) return fail(path);

    if (cnn_net_from_text(bn_definition, "bn", be, 2, &b) != CNN_OK) return fail("the batchnorm network");
    const char *names[3] = {"cat", "dog", "bird with spaces"};
    const float mean[2] = {0.5f, 0.25f}, std[2] = {0.2f, 0.125f};
    if (cnn_net_set_class_names(b, 3, names) != CNN_OK || cnn_net_set_normalization(b, 2, mean, std) != CNN_OK ||
        cnn_net_set_resize(b, 5, 4) != CNN_OK)
        return fail("the batchnorm network's settings");
    snprintf(path, sizeof path, "%s/bn_names_norm_resize.safetensors", models);
    if (cnn_net_save(b, path) != CNN_OK) return fail(path);

    // --- checkpoints: the run of checkpoint_setup.h on the conv network
    int h, w, c;
    cnn_net_input_shape(a, &h, &w, &c);
    float images[FUZZ_CKPT_SAMPLES * 4 * 4 * 1];
    if (h * w * c != 4 * 4 * 1) return fail("the conv network's input is not 4x4x1");
    for (int i = 0; i < FUZZ_CKPT_SAMPLES * h * w * c; i++) images[i] = (float)(i % 7) / 6.0f;
    int32_t labels[FUZZ_CKPT_SAMPLES];
    fuzz_checkpoint_labels(cnn_net_num_outputs(a), labels);
    cnn_dataset train = {.n = FUZZ_CKPT_SAMPLES, .h = h, .w = w, .c = c, .images = images, .labels = labels,
                         .num_classes = cnn_net_num_outputs(a)};
    cnn_train_config cfg;
    fuzz_checkpoint_config(&cfg);
    cfg.checkpoint_dir = ckpts;
    cfg.checkpoint_every = 1;
    cfg.checkpoint_in_steps = 1;
    cfg.keep_checkpoints = 3;
    if (cnn_train(a, &train, NULL, &cfg, NULL) != CNN_OK) return fail("training");

    cnn_net_destroy(a);
    cnn_net_destroy(b);
    cnn_backend_destroy(be);
    printf("fuzz_make_seeds: wrote %s and %s\n", models, ckpts);
    return 0;
}
