/* The cnn program: one subcommand per file (tools/cmd_*.c), dispatched from here. */
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"

static const cnn_command cnn_commands[] = {
    {"train", "train a model definition on a dataset and save the model", cmd_train},
    {"eval", "loss, accuracy, per-class precision/recall/F1 and confusion matrix of a model", cmd_eval},
    {"predict", "classify PNG/JPEG/BMP images with a trained model", cmd_predict},
    {"summary", "print a model's layers, output shapes and parameter counts", cmd_summary},
    {"augment-preview", "write a PNG grid of augmented samples: what the network will see", cmd_augment_preview},
    {"bench", "training and inference speed of a model on synthetic data, per layer, against the sgemm peak",
     cmd_bench},
    {"explain", "why a model predicts a class: Grad-CAM, saliency, integrated gradients, ... as pictures and maps",
     cmd_explain},
    {"attack", "adversarial images (FGSM, PGD) written beside the originals, with the predictions before and after",
     cmd_attack},
    {"serve", "serve a model over HTTP: TensorFlow Serving's REST API and the Open Inference Protocol", cmd_serve},
    {"quantize", "a trained model to int8 (calibrated), dynamic int8, fp16 or float for cnn-lite", cmd_quantize},
    {"prune", "strip a channel-pruned model of its pruned channels: a narrower, faster model", cmd_prune},
};
#define NCOMMANDS (int)(sizeof cnn_commands / sizeof cnn_commands[0])

static void usage(FILE *out)
{
    fprintf(out, "cnn %s: train and run convolutional image classifiers (devices: %s)\n\nusage: cnn COMMAND [options]\n\n",
            cnn_version(), cnn_backends_available());
    for (int i = 0; i < NCOMMANDS; i++) fprintf(out, "  %-16s %s\n", cnn_commands[i].name, cnn_commands[i].summary);
    fprintf(out, "\n'cnn COMMAND --help' lists a command's options; 'cnn --version' prints the version.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("cnn %s\n", cnn_version());
        return 0;
    }
    for (int i = 0; i < NCOMMANDS; i++)
        if (!strcmp(argv[1], cnn_commands[i].name)) return cnn_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "cnn: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
