/* cnn train: train a model definition on a dataset, save the model, report test metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/adv_opts.h"
#include "tools/data_opts.h"
#include "tools/prune_opts.h"
#include "tools/dist_opts.h"
#include "tools/report.h"

static const char *USAGE = "--model FILE [--data fashion-mnist[:DIR]] [options]\n"
                            "       cnn train --resume DIR [options: the run's, kept in its checkpoints]\n"
                            "       cnn train --init-from MODEL [--model FILE] [--replace-head N] [--freeze LAYER] "
                            "[options]";

typedef struct train_run {
    cnn_epoch_stats *history;
    int epochs_done;
} train_run;

/* "N", "Nepochs" or "Nsteps" (N >= 1). */
static int parse_every(const char *s, int *n, int *in_steps)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < 1 || v > 100000000) return 0;
    *n = (int)v;
    *in_steps = !strcmp(end, "steps") || !strcmp(end, "step");
    return *in_steps || !*end || !strcmp(end, "epochs") || !strcmp(end, "epoch");
}

/* The flags a checkpoint keeps for --resume DIR to continue the run with, as given: all but those of the resume
 * itself (the checkpoint holds the model, its frozen layers and head; it is read from DIR and goes on writing
 * there) and --quiet, which is the resumed run's own affair. */
static const char *const NOT_KEPT[] = {"resume", "model", "init-from", "freeze", "replace-head", "checkpoint-dir",
                                       "quiet", NULL};

/* The run's flags for its checkpoints (cnn_train_config.run_args), in *settings; with --resume, first the flags
 * of the checkpoint that this command line does not give. Returns the exit status of a failure, else 0. The
 * strings stay allocated to the end of the process: the flags point into them. */
static int resume_settings(cli_flag *flags, int argc, char **argv, const char *resume, char **settings)
{
    static char *saved, *given;
    char *path = NULL, *taken = NULL;
    int rc = 0;
    if (cli_settings(flags, argc, argv, NOT_KEPT, &given)) goto no_memory;
    /* the newest valid checkpoint, quietly: the resume proper finds it again, saying what it refuses */
    if (resume && cnn_checkpoint_find(resume, NULL, NULL, &path, NULL) == CNN_OK) {
        cnn_status st = cnn_checkpoint_run_args(path, &saved);
        if (st != CNN_OK) {
            rc = cli_fail("train", "--resume", st);
            goto done;
        }
        if (saved && (rc = cli_apply_settings("train", flags, saved, NOT_KEPT, &taken)) != 0) {
            if (rc < 0) goto no_memory;
            fprintf(stderr, "cnn train: --resume: the settings kept in %s do not parse\n", path);
            goto done;
        }
        if (taken) { /* lines that each end with '\n' */
            fprintf(stderr, "cnn train: --resume: continuing with the run's settings from %s:", path);
            for (const char *t = taken, *end; (end = strchr(t, '\n')) != NULL; t = end + 1)
                fprintf(stderr, " %.*s", (int)(end - t), t);
            fprintf(stderr, "\n");
            size_t had = given ? strlen(given) : 0;
            char *all = realloc(given, had + strlen(taken) + 1);
            if (!all) goto no_memory;
            given = all;
            strcpy(given + had, taken);
        }
    }
    *settings = given;
    goto done;
no_memory:
    fprintf(stderr, "cnn train: out of memory\n");
    rc = 1;
done:
    free(path);
    free(taken);
    return rc;
}

/* What the program says it does, so that resuming and fine-tuning are never confused. */
static void say_resume(const char *path, const cnn_checkpoint_info *i, int epochs)
{
    fprintf(stderr, "cnn train: resuming from %s (epoch %d of %d done", path, i->epoch, epochs);
    if (i->samples_done) fprintf(stderr, ", %lld of %lld samples of the next", (long long)i->samples_done,
                                 (long long)i->epoch_samples);
    fprintf(stderr, ", step %lld): restoring the weights, optimizer state, learning-rate schedule, RNG, data "
                    "position and callbacks\n", (long long)i->step);
}

/* The distillation and QAT flags that need no model: exit status 2 with a message when they do not go together. */
static int cli_compress_check(const cli_flag *flags, const char *teacher, float alpha, float temperature, int qat,
                              int adversarial)
{
    int alpha_given = 0, temperature_given = 0;
    for (const cli_flag *f = flags; f->name; f++) {
        if (!strcmp(f->name, "distill-alpha")) alpha_given = f->seen;
        if (!strcmp(f->name, "temperature")) temperature_given = f->seen;
    }
    if (!teacher && (alpha_given || temperature_given)) {
        fprintf(stderr, "cnn train: --%s is a distillation setting: give the teacher with --teacher MODEL\n",
                alpha_given ? "distill-alpha" : "temperature");
        return 2;
    }
    if (!(alpha >= 0.0f && alpha <= 1.0f)) {
        fprintf(stderr, "cnn train: --distill-alpha: %g is not in [0, 1] (the KL term's weight; the labels get "
                        "1 - alpha)\n", (double)alpha);
        return 2;
    }
    if (!(temperature > 0.0f)) {
        fprintf(stderr, "cnn train: --temperature: %g is not above 0\n", (double)temperature);
        return 2;
    }
    if (qat && adversarial) {
        fprintf(stderr, "cnn train: --qat and --adversarial do not go together (the attack's passes would move the "
                        "learned ranges)\n");
        return 2;
    }
    return 0;
}

int cmd_train(int argc, char **argv)
{
    const char *model = NULL, *data = "fashion-mnist", *out = "model.safetensors", *metrics_json = NULL;
    const char *precision = "fp32";
    const char *optimizer = "adam", *device = NULL, *schedule = "constant", *class_weights = NULL;
    const char *every = NULL, *resume = NULL, *init_from = NULL, *freeze = NULL, *monitor = "val_loss";
    const char *teacher_path = NULL;
    int replace_head = 0, patience = 0, qat = 0;
    float alpha = CNN_DISTILL_DEFAULT_ALPHA, temperature = CNN_DISTILL_DEFAULT_TEMPERATURE;
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    float val_split = 0.1f;
    int normalize = 0, quiet = 0;
    cli_data_opts dopt = {0};
    cli_adv_opts aopt = CLI_ADV_OPTS_INIT;
    cli_prune_opts popt = CLI_PRUNE_OPTS_INIT;
    cli_dist_opts distopt = CLI_DIST_OPTS_INIT;
    float momentum = -1.0f; /* unset: 0.9 for SGD, 0 for RMSprop */
    uint64_t seed = 1;
    int64_t max_memory = 0;
    cli_flag flags[] = {
        {"model", CLI_STRING, &model, "FILE      model definition (.cnn), e.g. samples/models/seed_cnn.cnn", 0, 0, 0},
        {"data", CLI_STRING, &data, "SPEC      fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR, "
                                    "folder:DIR (a sub-folder per class) or csv:FILE (path,label lines) (default "
                                    "fashion-mnist, from " CNN_FASHION_MNIST_DIR ")", 0, 0, 0},
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
                                                                "--plateau-factor when the --monitor metric stalls",
         0, 0, 0},
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
        {"precision", CLI_STRING, &precision, "P         fp32 (default), tf32, fp16 or bf16 (mixed precision; CUDA)",
         0, 0, 0},
        {"quiet", CLI_BOOL, &quiet, "          no progress bar", 0, 0, 0},
        CLI_DATA_TRAIN_FLAGS(dopt),
        CLI_ADV_FLAGS(aopt),
        CLI_PRUNE_FLAGS(popt),
        {"checkpoint-dir", CLI_STRING, &cfg.checkpoint_dir, "DIR       write checkpoints here (everything needed to "
                                                            "resume exactly)", 0, 0, 0},
        {"checkpoint-every", CLI_STRING, &every, "N[steps]  a checkpoint every N epochs (default 1), or N steps", 0, 0,
         0},
        {"keep-checkpoints", CLI_INT, &cfg.keep_checkpoints, "K         keep the newest K checkpoints and the best "
                                                             "(default 3)", 1, 1000000, 0},
        {"resume", CLI_STRING, &resume, "DIR       continue the run exactly from the newest valid checkpoint in DIR, "
                                          "with the flags it kept (one given again overrides the kept one; one that "
                                          "changes the arithmetic is refused)",
         0, 0, 0},
        {"init-from", CLI_STRING, &init_from, "MODEL     fine-tune: a new run from MODEL's weights (a cnn.c model or "
                                              "checkpoint, or a PyTorch ResNet state_dict with --model)", 0, 0, 0},
        {"freeze", CLI_STRING, &freeze, "LAYER     with --init-from: freeze the layers up to LAYER (a name or a count)",
         0, 0, 0},
        {"replace-head", CLI_INT, &replace_head, "N         with --init-from: a new classifier for N classes", 1,
         1000000, 0},
        {"monitor", CLI_STRING, &monitor, "NAME      val_loss, val_accuracy, loss or accuracy: what the callbacks "
                                          "watch (default val_loss)", 0, 0, 0},
        {"min-delta", CLI_FLOAT, &cfg.min_delta, "X         smallest change that counts as an improvement (default 0)",
         0, 1e9, 0},
        {"early-stopping", CLI_INT, &patience, "PATIENCE  stop after PATIENCE epochs without improvement", 0, 100000,
         0},
        {"restore-best-weights", CLI_BOOL, &cfg.restore_best_weights, "          end with the weights of the best "
                                                                      "epoch", 0, 0, 0},
        {"save-best", CLI_STRING, &cfg.save_best, "FILE      write the model whenever the monitored metric improves",
         0, 0, 0},
        {"csv-log", CLI_STRING, &cfg.csv_log, "FILE      a CSV row per epoch", 0, 0, 0},
        {"tensorboard", CLI_STRING, &cfg.tensorboard_dir, "DIR       TensorBoard event files (DIR/train, "
                                                          "DIR/validation)", 0, 0, 0},
        {"plot", CLI_STRING, &cfg.plot, "FILE      a PNG of the loss and accuracy curves at the end", 0, 0, 0},
        CLI_MAX_MEMORY_FLAG(max_memory),
        {"teacher", CLI_STRING, &teacher_path, "MODEL     distillation: learn from this trained model's softened "
                                               "outputs too (same classes and input channels)", 0, 0, 0},
        {"distill-alpha", CLI_FLOAT, &alpha, "A         distillation: the KL term's weight in [0, 1], the labels' "
                                             "1 - A (default 0.9)", -1e30, 1e30, 0},
        {"temperature", CLI_FLOAT, &temperature, "T         distillation: the softmax temperature, > 0 (default 4)",
         -1e30, 1e30, 0},
        {"qat", CLI_BOOL, &qat, "          quantization-aware training: fake int8 quantization (for cnn quantize "
                                "--mode int8)", 0, 0, 0},
        CLI_DIST_FLAGS(distopt),
        {NULL, 0, NULL, NULL, 0, 0, 0},
    };
    char *pos[1];
    int npos;
    int rc = cli_parse("train", USAGE, flags, argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    char *settings = NULL;
    if ((rc = resume_settings(flags, argc, argv, resume, &settings)) != 0) return rc;
    cfg.run_args = settings;
    if ((rc = cli_check_precision("train", precision)) != 0) return rc;
    if ((rc = cli_adv_apply("train", &aopt, &cfg, seed)) != 0) return rc;
    if ((rc = cli_prune_apply("train", &popt, &cfg)) != 0) return rc;
    if (!model && !resume && !init_from) {
        fprintf(stderr, "cnn train: --model FILE is required (e.g. --model samples/models/seed_cnn.cnn)\n");
        return 2;
    }
    if (resume && (init_from || freeze || replace_head)) {
        fprintf(stderr, "cnn train: --resume continues a run with everything it had (weights, frozen layers, head); "
                        "--init-from, --freeze and --replace-head start a new one: give one or the other\n");
        return 2;
    }
    if ((freeze || replace_head) && !init_from) {
        fprintf(stderr, "cnn train: --%s fine-tunes a trained network: give it with --init-from MODEL\n",
                freeze ? "freeze" : "replace-head");
        return 2;
    }
    if ((rc = cli_compress_check(flags, teacher_path, alpha, temperature, qat, cfg.adversarial)) != 0) return rc;
    if (every && !parse_every(every, &cfg.checkpoint_every, &cfg.checkpoint_in_steps)) {
        fprintf(stderr, "cnn train: --checkpoint-every: '%s' is not N, Nepochs or Nsteps with N >= 1\n", every);
        return 2;
    }
    if (every && !cfg.checkpoint_dir && !resume) {
        fprintf(stderr, "cnn train: --checkpoint-every needs --checkpoint-dir DIR\n");
        return 2;
    }
    if (!strcmp(monitor, "val_loss")) cfg.monitor = CNN_MONITOR_VAL_LOSS;
    else if (!strcmp(monitor, "val_accuracy")) cfg.monitor = CNN_MONITOR_VAL_ACCURACY;
    else if (!strcmp(monitor, "loss")) cfg.monitor = CNN_MONITOR_LOSS;
    else if (!strcmp(monitor, "accuracy")) cfg.monitor = CNN_MONITOR_ACCURACY;
    else {
        fprintf(stderr, "cnn train: --monitor: '%s' is not one of val_loss, val_accuracy, loss, accuracy\n", monitor);
        return 2;
    }
    for (const cli_flag *f = flags; f->name; f++)
        if (!strcmp(f->name, "early-stopping")) cfg.early_stopping = f->seen;
    cfg.early_stopping_patience = patience;
    if (resume && !cfg.checkpoint_dir) cfg.checkpoint_dir = resume; /* go on writing where the run wrote */
    if (cnn_optimizer_parse(optimizer, &cfg.optimizer) != CNN_OK) {
        fprintf(stderr, "cnn train: --optimizer: %s\n", cnn_last_error());
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
    cli_apply_max_memory(max_memory);
    if (model && !resume && !init_from) {
        /* a training step at --batch, with the optimizer's state, must fit before the network is built and the data
         * read (the library checks again as it allocates) */
        cnn_memory_estimate *budget = NULL;
        cnn_memory_config mc = {.batch = cfg.batch_size, .optimizer_slots = cnn_optimizer_slots(cfg.optimizer, cfg.momentum)};
        cnn_status est = cnn_memory_estimate_file(model, &mc, &budget);
        if (est == CNN_OK) est = cnn_memory_check(budget, 1, 0);
        cnn_memory_estimate_destroy(budget);
        if (est != CNN_OK) return cli_fail("train", est == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "--model", est);
    }

    /* under mpirun or srun: one rank of a data-parallel run; from here on every exit goes through cli_dist_finish */
    if ((rc = cli_dist_start("train", &distopt, &cfg)) != 0) return rc;
    cnn_status st;
    cnn_backend *backend = NULL;
    cnn_net *net = NULL, *teacher = NULL;
    char *rank_device = NULL;
    cnn_source *full = NULL, *train = NULL, *val = NULL, *test = NULL;
    cnn_metrics *metrics = NULL;
    char *checkpoint = NULL;
    train_run run = {calloc((size_t)cfg.epochs, sizeof(cnn_epoch_stats)), 0};
    rc = 1;
    if (!run.history) {
        fprintf(stderr, "cnn train: out of memory\n");
        goto done;
    }
    if ((st = cli_backend("train", cli_dist_device(&distopt, device, &rank_device), &backend)) != CNN_OK) {
        rc = cli_fail_value("train", "--device", st);
        goto done;
    }
    if (resume) {
        /* --model, when given, must be the checkpoint's model: others' checkpoints in DIR are refused */
        cnn_net *expect = NULL;
        cnn_checkpoint_info info;
        if (model && (st = cnn_net_from_file(model, backend, seed, &expect)) != CNN_OK) {
            rc = cli_fail("train", "--model", st);
            goto done;
        }
        st = cnn_checkpoint_find(resume, expect, stderr, &checkpoint, &info);
        cnn_net_destroy(expect);
        if (st != CNN_OK || (st = cnn_net_load(checkpoint, backend, &net)) != CNN_OK) {
            rc = cli_fail("train", "--resume", st);
            goto done;
        }
        say_resume(checkpoint, &info, cfg.epochs);
        cfg.resume_from = checkpoint;
    } else if (init_from) {
        int copied = 0, kept = 0, frozen = 0, inherited = 0;
        if (model) {
            if ((st = cnn_net_from_file(model, backend, seed, &net)) != CNN_OK) {
                rc = cli_fail("train", "--model", st);
                goto done;
            }
            st = cnn_net_init_from(net, init_from, &copied, &kept);
        } else if ((st = cnn_net_load(init_from, backend, &net)) == CNN_OK) {
            copied = -1;
            /* a new run decides its own frozen layers: those the file was fine-tuned with are trainable again */
            inherited = cnn_net_frozen_layers(net);
            if (inherited) st = cnn_net_freeze(net, NULL, NULL);
        }
        if (st != CNN_OK) {
            rc = cli_fail("train", "--init-from", st);
            if (!model) fprintf(stderr, "cnn train: (a PyTorch state_dict needs its definition: --model FILE)\n");
            goto done;
        }
        if (replace_head) {
            cnn_net *fresh = NULL;
            if ((st = cnn_net_replace_head(net, replace_head, seed, &fresh)) != CNN_OK) {
                rc = cli_fail("train", "--replace-head", st);
                goto done;
            }
            cnn_net_destroy(net);
            net = fresh;
        }
        if (freeze && (st = cnn_net_freeze(net, freeze, &frozen)) != CNN_OK) {
            rc = cli_fail("train", "--freeze", st);
            goto done;
        }
        fprintf(stderr, "cnn train: fine-tuning: a new run (fresh optimizer state, schedule from epoch 1) from the "
                        "weights of %s", init_from);
        if (copied >= 0)
            fprintf(stderr, " (%d tensor%s copied, %d left as initialized)", copied, cli_s(copied), kept);
        if (replace_head)
            fprintf(stderr, "; new classifier for %d class%s", replace_head, replace_head == 1 ? "" : "es");
        if (frozen) fprintf(stderr, "; %d layer%s frozen, up to %s", frozen, cli_s(frozen), freeze);
        if (inherited && !frozen)
            fprintf(stderr, "; the %d layer%s it was fine-tuned with frozen are trainable (--freeze to freeze)", inherited,
                    cli_s(inherited));
        fprintf(stderr, "\n");
    } else if ((st = cnn_net_from_file(model, backend, seed, &net)) != CNN_OK) {
        rc = cli_fail("train", st == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "--model", st);
        goto done;
    }
    if (!model) model = resume ? checkpoint : init_from;
    if (qat && !cnn_net_is_qat(net)) {
        cnn_net *fresh = NULL;
        if ((st = cnn_net_qat_convert(net, seed, &fresh)) != CNN_OK) {
            rc = cli_fail_value("train", "--qat", st);
            goto done;
        }
        cnn_net_destroy(net);
        net = fresh;
        fprintf(stderr, "cnn train: quantization-aware training: int8 fake quantization of the weights (per channel) "
                        "and activations (ranges learned as moving min-max)\n");
    }
    if (teacher_path) {
        if ((st = cnn_net_load(teacher_path, backend, &teacher)) != CNN_OK) {
            rc = cli_fail("train", "--teacher", st);
            goto done;
        }
        if ((st = cnn_distill_check(net, teacher, alpha, temperature)) != CNN_OK) {
            rc = 2;
            cli_fail("train", "--teacher", st);
            goto done;
        }
        cfg.teacher = teacher;
        cfg.distill_alpha = alpha;
        cfg.temperature = temperature;
        int th, tw, tc, sh, sw, sc;
        cnn_net_input_shape(teacher, &th, &tw, &tc);
        cnn_net_input_shape(net, &sh, &sw, &sc);
        fprintf(stderr, "cnn train: distillation from %s (%lld parameters): alpha %g, temperature %g%s\n",
                teacher_path, (long long)cnn_net_param_count(teacher), (double)alpha, (double)temperature,
                th != sh || tw != sw ? "; batches resized to the teacher's input" : "");
    }
    cnn_precision prec;
    if ((st = cnn_precision_parse(precision, &prec)) != CNN_OK || (st = cnn_net_set_precision(net, prec)) != CNN_OK) {
        rc = cli_fail_value("train", "--precision", st);
        goto done;
    }
    if (prec != CNN_PRECISION_FP32)
        fprintf(stderr, "cnn train: precision %s%s\n", precision,
                prec == CNN_PRECISION_TF32 ? " (f32 tensors; convolutions and products may round to TF32)"
                : prec == CNN_PRECISION_FP16 ? " (16-bit activations and gradients, f32 master weights, dynamic "
                                               "loss scaling from 2^16)"
                                             : " (16-bit activations and gradients, f32 master weights)");
    if ((rc = cli_data_apply("train", &dopt, &cfg, net)) != 0) goto done;
    rc = 1;
    /* stored with the model: eval and predict resize as training did */
    if (cfg.resize_h && (st = cnn_net_set_resize(net, cfg.resize_h, cfg.resize_w)) != CNN_OK) {
        rc = cli_fail("train", "--resize", st);
        goto done;
    }
    if ((st = cnn_source_open(data, "train", &full)) != CNN_OK) {
        rc = cli_fail("train", "--data", st);
        goto done;
    }
    if (dopt.test_data || cnn_source_has_split(data, "test")) {
        if ((st = dopt.test_data ? cli_open_test(dopt.test_data, &test) : cnn_source_open(data, "test", &test)) !=
            CNN_OK) {
            rc = cli_fail("train", dopt.test_data ? "--test-data" : "--data (test split)", st);
            goto done;
        }
    }
    if (cnn_source_ignored_files(full))
        fprintf(stderr, "cnn train: %lld file%s without an image extension (.jpg, .jpeg, .png, .bmp) %s left out\n",
                (long long)cnn_source_ignored_files(full), cli_s(cnn_source_ignored_files(full)),
                cnn_source_ignored_files(full) == 1 ? "was" : "were");
    if (val_split > 0) {
        if ((st = cnn_source_split(full, val_split, seed, &train, &val)) != CNN_OK) {
            rc = cli_fail("train", "--val-split", st);
            goto done;
        }
    } else {
        train = full;
        full = NULL;
    }
    /* after the split: the validation set is the one the whole data would give, cut short as the others */
    if (cli_data_limit("train", &dopt, train) || cli_data_limit("train", &dopt, val) ||
        cli_data_limit("train", &dopt, test))
        goto done;
    if (dopt.limit)
        fprintf(stderr, "cnn train: --limit %d: a quick run on the first %d sample%s of each split\n", dopt.limit,
                dopt.limit, cli_s(dopt.limit));
    int nclasses = cnn_source_num_classes(train);
    if (cnn_source_class_name(train, 0) && nclasses == cnn_net_num_outputs(net)) {
        const char **names = calloc((size_t)nclasses, sizeof *names);
        for (int c = 0; names && c < nclasses; c++) names[c] = cnn_source_class_name(train, c);
        if (names) cnn_net_set_class_names(net, nclasses, names);
        free(names);
    }
    if ((rc = cli_data_normalization("train", &dopt, normalize, train, &cfg, net)) != 0) goto done;
    rc = 1;
    fprintf(stderr, "cnn train: %s, %lld trainable parameter%s; %lld training image%s, %lld validation, %lld test%s\n",
            model, (long long)cnn_net_param_count(net), cli_s(cnn_net_param_count(net)),
            (long long)cnn_source_count(train), cli_s(cnn_source_count(train)),
            (long long)(val ? cnn_source_count(val) : 0), (long long)(test ? cnn_source_count(test) : 0),
            test ? "" : " (no test set: give one with --test-data)");
    cli_report_classes("train", "training", train, cfg.sampler, class_weights != NULL);
    if (cfg.augment) {
        char text[512];
        cnn_augment_format(cfg.augment, text, sizeof text);
        fprintf(stderr, "cnn train: augmentation: %s%s\n", text, dopt.augment ? "" : " (the model's augment line)");
    }
    if (nweights && nweights != cnn_net_num_outputs(net)) {
        fprintf(stderr, "cnn train: --class-weights: %d weight%s given for a model with %d classes\n", nweights,
                cli_s(nweights), cnn_net_num_outputs(net));
        rc = 2;
        goto done;
    }
    if ((st = cnn_train_source(net, train, val, &cfg, run.history)) != CNN_OK) {
        rc = cli_fail("train", st == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "training", st);
        goto done;
    }
    while (run.epochs_done < cfg.epochs && run.history[run.epochs_done].epoch) run.epochs_done++;
    /* the test set: several ranks evaluate a part each and add their sums (one process: all of it) */
    if (test && (st = cnn_dist_evaluate_source(distopt.dist, net, test, &cfg, 256, &metrics)) != CNN_OK) {
        rc = cli_fail("train", "test evaluation", st);
        goto done;
    }
    if (!cli_dist_writer(&distopt)) { /* every rank holds the same model: rank 0 writes it and reports */
        rc = 0;
        goto done;
    }
    /* a pruned model's zeros take little room deflated (README "Pruning") */
    if ((st = cfg.prune.enabled ? cnn_net_save_compressed(net, out) : cnn_net_save(net, out)) != CNN_OK) {
        rc = cli_fail("train", "--out", st);
        goto done;
    }
    fprintf(stderr, "cnn train: model written to %s%s\n", out, cfg.prune.enabled ? " (zlib-compressed)" : "");
    double waited = 0.0;
    for (int e = 0; e < run.epochs_done; e++) waited += run.history[e].data_wait;
    if (run.epochs_done)
        fprintf(stderr, "cnn train: waited %.2f s for data in all; %lld bad image file%s skipped\n", waited,
                (long long)run.history[run.epochs_done - 1].bad_files,
                cli_s(run.history[run.epochs_done - 1].bad_files));
    if (metrics) printf("test loss: %.4f - test accuracy: %.4f\n", metrics->loss, metrics->accuracy);
    if (metrics_json && (st = report_write_json(metrics_json, run.history, run.epochs_done, metrics, net)) != CNN_OK) {
        rc = cli_fail("train", "--metrics-json", st);
        goto done;
    }
    rc = 0;
done:
    cnn_metrics_destroy(metrics);
    cnn_source_destroy(full);
    cnn_source_destroy(train);
    cnn_source_destroy(val);
    cnn_source_destroy(test);
    cnn_net_destroy(net);
    cnn_net_destroy(teacher);
    cnn_backend_destroy(backend);
    free(run.history);
    free(checkpoint);
    free(rank_device);
    return cli_dist_finish("train", &distopt, rc);
}
