/* cnn train: train a model definition on a dataset, save the model, report test metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/report.h"

static const char *USAGE = "--model FILE [--data fashion-mnist[:DIR]] [options]";

typedef struct train_run {
    cnn_epoch_stats *history;
    int epochs_done;
} train_run;

static void on_epoch(const cnn_epoch_stats *s, void *user)
{
    train_run *r = user;
    r->history[s->epoch - 1] = *s;
    r->epochs_done = s->epoch;
}

int cmd_train(int argc, char **argv)
{
    const char *model = NULL, *data = "fashion-mnist", *out = "model.safetensors", *metrics_json = NULL;
    const char *optimizer = "adam", *device = NULL, *schedule = "constant", *class_weights = NULL;
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    float val_split = 0.1f;
    int normalize = 0, quiet = 0;
    float momentum = -1.0f; /* unset: 0.9 for SGD, 0 for RMSprop */
    uint64_t seed = 1;
    cli_flag flags[] = {
        {"model", CLI_STRING, &model, "FILE      model definition (.cnn), e.g. samples/models/seed_cnn.cnn", 0, 0, 0},
        {"data", CLI_STRING, &data, "SPEC      fashion-mnist[:DIR] or mnist:DIR (default fashion-mnist, "
                                    "from " CNN_FASHION_MNIST_DIR ")", 0, 0, 0},
        {"epochs", CLI_INT, &cfg.epochs, "N         epochs (default 10)", 1, 100000, 0},
        {"batch", CLI_INT, &cfg.batch_size, "N         batch size (default 64)", 1, 65536, 0},
        {"lr", CLI_FLOAT, &cfg.lr, "X         learning rate (default 0.001)", 1e-12, 100, 0},
        {"optimizer", CLI_STRING, &optimizer, "NAME      adam, adamw, sgd or rmsprop (default adam)", 0, 0, 0},
        {"momentum", CLI_FLOAT, &momentum, "X         SGD momentum (default 0.9); RMSprop momentum (default 0)", 0,
         0.999999, 0},
        {"nesterov", CLI_BOOL, &cfg.nesterov, "          Nesterov momentum (SGD)", 0, 0, 0},
        {"weight-decay", CLI_FLOAT, &cfg.weight_decay, "X         L2 penalty on all parameters added to the gradient; "
                                                       "decoupled decay with adamw (default 0)", 0, 1, 0},
        {"lr-schedule", CLI_STRING, &schedule, "NAME      constant, step or cosine (default constant)", 0, 0, 0},
        {"lr-step-epochs", CLI_INT, &cfg.lr_step_epochs, "N         step schedule: epochs per decay (default 10)", 1,
         100000, 0},
        {"lr-gamma", CLI_FLOAT, &cfg.lr_gamma, "X         step schedule: decay factor (default 0.1)", 1e-9, 1, 0},
        {"warmup-epochs", CLI_INT, &cfg.warmup_epochs, "N         linear learning-rate warm-up epochs (default 0)", 0,
         100000, 0},
        {"reduce-on-plateau", CLI_BOOL, &cfg.reduce_on_plateau, "          multiply the learning rate by "
                                                                "--plateau-factor when val loss stalls", 0, 0, 0},
        {"plateau-patience", CLI_INT, &cfg.plateau_patience, "N         epochs without improvement first (default 2)",
         0, 100000, 0},
        {"plateau-factor", CLI_FLOAT, &cfg.plateau_factor, "X         factor (default 0.1)", 1e-6, 0.999999, 0},
        {"clip-norm", CLI_FLOAT, &cfg.clip_norm, "X         clip gradients to this global L2 norm (default: off)", 0,
         1e9, 0},
        {"label-smoothing", CLI_FLOAT, &cfg.label_smoothing, "X         label smoothing in [0, 1) (default 0)", 0,
         0.999999, 0},
        {"class-weights", CLI_STRING, &class_weights, "LIST      loss weight per class: w0,w1,... or balanced", 0, 0,
         0},
        {"deterministic", CLI_BOOL, &cfg.deterministic, "          bit-identical runs for one seed (the CPU backend "
                                                        "always is, at a fixed thread count)", 0, 0, 0},
        {"seed", CLI_U64, &seed, "S         seed for initialization, shuffling and the split (default 1)", 0, 0, 0},
        {"val-split", CLI_FLOAT, &val_split, "F         fraction of the training set held out for validation "
                                             "(default 0.1; 0 = none)", 0, 0.9, 0},
        {"normalize", CLI_BOOL, &normalize, "          standardize inputs by the training set's per-channel mean "
                                            "and std (stored in the model)", 0, 0, 0},
        {"out", CLI_STRING, &out, "FILE      where to write the model (default model.safetensors)", 0, 0, 0},
        {"metrics-json", CLI_STRING, &metrics_json, "FILE      write the per-epoch history and test metrics as JSON",
         0, 0, 0},
        {"device", CLI_STRING, &device, "NAME      cpu, cuda or cuda:N (default: cuda when present, else cpu)", 0, 0, 0},
        {"quiet", CLI_BOOL, &quiet, "          no progress bar", 0, 0, 0},
        {NULL, 0, NULL, NULL, 0, 0, 0},
    };
    char *pos[1];
    int npos;
    int rc = cli_parse("train", USAGE, flags, argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model) {
        fprintf(stderr, "cnn train: --model FILE is required (e.g. --model samples/models/seed_cnn.cnn)\n");
        return 2;
    }
    if (!strcmp(optimizer, "adam")) cfg.optimizer = CNN_OPTIM_ADAM;
    else if (!strcmp(optimizer, "adamw")) cfg.optimizer = CNN_OPTIM_ADAMW;
    else if (!strcmp(optimizer, "sgd")) cfg.optimizer = CNN_OPTIM_SGD;
    else if (!strcmp(optimizer, "rmsprop")) cfg.optimizer = CNN_OPTIM_RMSPROP;
    else {
        fprintf(stderr, "cnn train: --optimizer: '%s' is not one of adam, adamw, sgd, rmsprop\n", optimizer);
        return 2;
    }
    cfg.momentum = momentum >= 0.0f ? momentum : cfg.optimizer == CNN_OPTIM_RMSPROP ? 0.0f : 0.9f;
    if (cfg.nesterov && (cfg.optimizer != CNN_OPTIM_SGD || cfg.momentum == 0.0f)) {
        fprintf(stderr, "cnn train: --nesterov needs --optimizer sgd with a momentum above 0\n");
        return 2;
    }
    if (!strcmp(schedule, "constant")) cfg.lr_schedule = CNN_LR_CONSTANT;
    else if (!strcmp(schedule, "step")) cfg.lr_schedule = CNN_LR_STEP;
    else if (!strcmp(schedule, "cosine")) cfg.lr_schedule = CNN_LR_COSINE;
    else {
        fprintf(stderr, "cnn train: --lr-schedule: '%s' is not one of constant, step, cosine\n", schedule);
        return 2;
    }
    float weights[1024];
    int nweights = 0;
    if (class_weights && !strcmp(class_weights, "balanced")) {
        cfg.balanced_class_weights = 1;
    } else if (class_weights) {
        const char *c = class_weights;
        for (;;) {
            char *end;
            float w = strtof(c, &end);
            if (end == c || !(w >= 0.0f) || w > 1e6f || nweights == 1024) {
                fprintf(stderr, "cnn train: --class-weights: expected 'balanced' or comma-separated numbers >= 0, "
                                "got '%s'\n", class_weights);
                return 2;
            }
            weights[nweights++] = w;
            if (*end == '\0') break;
            if (*end != ',') {
                fprintf(stderr, "cnn train: --class-weights: expected a ',' after weight %d in '%s'\n", nweights,
                        class_weights);
                return 2;
            }
            c = end + 1;
        }
        cfg.class_weights = weights;
    }
    cfg.seed = seed;
    cfg.progress = quiet ? NULL : stderr;

    cnn_status st;
    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    cnn_dataset *full = NULL, *train = NULL, *val = NULL, *test = NULL;
    cnn_metrics *metrics = NULL;
    train_run run = {calloc((size_t)cfg.epochs, sizeof(cnn_epoch_stats)), 0};
    rc = 1;
    if (!run.history) {
        fprintf(stderr, "cnn train: out of memory\n");
        goto done;
    }
    if ((st = cli_backend("train", device, &backend)) != CNN_OK) {
        rc = cli_fail("train", "--device", st);
        goto done;
    }
    if ((st = cnn_net_from_file(model, backend, seed, &net)) != CNN_OK) {
        rc = cli_fail("train", "--model", st);
        goto done;
    }
    if ((st = cnn_dataset_load(data, "train", &full)) != CNN_OK ||
        (st = cnn_dataset_load(data, "test", &test)) != CNN_OK) {
        rc = cli_fail("train", "--data", st);
        goto done;
    }
    if (val_split > 0) {
        if ((st = cnn_dataset_split(full, val_split, seed, &train, &val)) != CNN_OK) {
            rc = cli_fail("train", "--val-split", st);
            goto done;
        }
    } else {
        train = full;
        full = NULL;
    }
    if (train->class_names && train->num_classes == cnn_net_num_outputs(net))
        cnn_net_set_class_names(net, train->num_classes, (const char *const *)train->class_names);
    if (normalize) {
        float mean[64], std[64];
        if (train->c > 64 || (st = cnn_dataset_stats(train, mean, std)) != CNN_OK ||
            (st = cnn_net_set_normalization(net, train->c, mean, std)) != CNN_OK) {
            rc = cli_fail("train", "--normalize", st);
            goto done;
        }
        fprintf(stderr, "cnn train: normalizing inputs by mean %.4f, std %.4f (channel 0)\n", mean[0], std[0]);
    }
    fprintf(stderr, "cnn train: %s, %lld parameters; %lld training images, %lld validation, %lld test\n", model,
            (long long)cnn_net_param_count(net), (long long)train->n, (long long)(val ? val->n : 0),
            (long long)test->n);
    if (nweights && nweights != cnn_net_num_outputs(net)) {
        fprintf(stderr, "cnn train: --class-weights: %d weights given for a model with %d classes\n", nweights,
                cnn_net_num_outputs(net));
        rc = 2;
        goto done;
    }
    cfg.on_epoch_end = on_epoch;
    cfg.user = &run;
    if ((st = cnn_train(net, train, val, &cfg, NULL)) != CNN_OK) {
        rc = cli_fail("train", "training", st);
        goto done;
    }
    if ((st = cnn_net_save(net, out)) != CNN_OK) {
        rc = cli_fail("train", "--out", st);
        goto done;
    }
    fprintf(stderr, "cnn train: model written to %s\n", out);
    if ((st = cnn_evaluate(net, test, 256, &metrics)) != CNN_OK) {
        rc = cli_fail("train", "test evaluation", st);
        goto done;
    }
    printf("test loss: %.4f - test accuracy: %.4f\n", metrics->loss, metrics->accuracy);
    if (metrics_json && (st = report_write_json(metrics_json, run.history, run.epochs_done, metrics, net)) != CNN_OK) {
        rc = cli_fail("train", "--metrics-json", st);
        goto done;
    }
    rc = 0;
done:
    cnn_metrics_destroy(metrics);
    cnn_dataset_destroy(full);
    cnn_dataset_destroy(train);
    cnn_dataset_destroy(val);
    cnn_dataset_destroy(test);
    cnn_net_destroy(net);
    cnn_backend_destroy(backend);
    free(run.history);
    return rc;
}
