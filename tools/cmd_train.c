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

/* What cnn train's flags give, and what is made of them before anything is loaded. */
typedef struct train_opts {
    const char *model, *data, *out, *metrics_json, *precision, *optimizer, *device, *schedule, *class_weights;
    const char *every, *resume, *init_from, *freeze, *monitor, *teacher_path;
    int replace_head, patience, qat, normalize, quiet;
    int alpha_given, temperature_given; /* --distill-alpha, --temperature given (or kept by a checkpoint) */
    float alpha, temperature, val_split;
    float momentum; /* unset (< 0): 0.9 for SGD, 0 for RMSprop */
    uint64_t seed;
    int64_t max_memory;
    cli_data_opts dopt;
    cli_adv_opts aopt;
    cli_prune_opts popt;
    cli_dist_opts distopt;
    cnn_train_config cfg;
    float weights[1024]; /* --class-weights w0,w1,...: cfg.class_weights points here */
    int nweights;
} train_opts;

/* What the run opens, made and freed once. */
typedef struct train_run {
    cnn_backend *backend;
    cnn_net *net, *teacher;
    char *rank_device, *checkpoint;
    cnn_source *full, *train, *val, *test;
    cnn_metrics *metrics;
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

/* The distillation and QAT flags, before any model is loaded: exit status 2 with a message when they do not go
 * together. */
static int cli_compress_check(const train_opts *o)
{
    if (!o->teacher_path && (o->alpha_given || o->temperature_given)) {
        fprintf(stderr, "cnn train: --%s is a distillation setting: give the teacher with --teacher MODEL\n",
                o->alpha_given ? "distill-alpha" : "temperature");
        return 2;
    }
    if (!(o->alpha >= 0.0f && o->alpha <= 1.0f)) {
        fprintf(stderr, "cnn train: --distill-alpha: %g is not in [0, 1] (the KL term's weight; the labels get "
                        "1 - alpha)\n", (double)o->alpha);
        return 2;
    }
    if (!(o->temperature > 0.0f)) {
        fprintf(stderr, "cnn train: --temperature: %g is not above 0\n", (double)o->temperature);
        return 2;
    }
    if (o->qat && o->cfg.adversarial) {
        fprintf(stderr, "cnn train: --qat and --adversarial do not go together (the attack's passes would move the "
                        "learned ranges)\n");
        return 2;
    }
    return 0;
}
// ---------------------------------------------------------------------------------------------------------------
// the flags

static void train_opts_init(train_opts *o)
{
    *o = (train_opts){.data = "fashion-mnist",
                      .out = "model.safetensors",
                      .precision = "fp32",
                      .optimizer = "adam",
                      .schedule = "constant",
                      .monitor = "val_loss",
                      .alpha = CNN_DISTILL_DEFAULT_ALPHA,
                      .temperature = CNN_DISTILL_DEFAULT_TEMPERATURE,
                      .val_split = 0.1f,
                      .momentum = -1.0f,
                      .seed = 1,
                      .aopt = CLI_ADV_OPTS_INIT,
                      .popt = CLI_PRUNE_OPTS_INIT,
                      .distopt = CLI_DIST_OPTS_INIT};
    cnn_train_config_defaults(&o->cfg);
}

/* 1 when the flag named `name` was given (or taken from a checkpoint's settings). */
static int flag_seen(const cli_flag *flags, const char *name)
{
    for (const cli_flag *f = flags; f->name; f++)
        if (!strcmp(f->name, name)) return f->seen;
    return 0;
}

/* Reads the command line (and, with --resume, the flags its checkpoint kept) into *o. Returns the exit status of a
 * failure, -1 when --help was asked (the usage is printed), else 0. */
static int parse_flags(train_opts *o, int argc, char **argv)
{
    cli_flag flags[] = {
        {"model", CLI_STRING, &o->model, "FILE      model definition (.cnn), e.g. "
                                         "samples/models/seed_cnn.cnn", 0, 0, 0},
        {"data", CLI_STRING, &o->data, "SPEC      fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR, "
                                       "folder:DIR (a sub-folder per class) or csv:FILE (path,label lines) (default "
                                       "fashion-mnist, from " CNN_FASHION_MNIST_DIR ")", 0, 0, 0},
        {"epochs", CLI_INT, &o->cfg.epochs, "N         epochs (default 10)", 1, 100000, 0},
        {"batch", CLI_INT, &o->cfg.batch_size, "N         batch size (default 64)", 1, 65536, 0},
        {"lr", CLI_FLOAT, &o->cfg.lr, "X         learning rate (default 0.001)", 1e-12, 100, 0},
        {"optimizer", CLI_STRING, &o->optimizer, "NAME      adam, adamw, sgd or rmsprop (default adam)", 0, 0, 0},
        {"momentum", CLI_FLOAT, &o->momentum, "X         SGD momentum (default 0.9); RMSprop momentum (default 0)", 0,
         0.999999, 0},
        {"nesterov", CLI_BOOL, &o->cfg.nesterov, "          Nesterov momentum (SGD)", 0, 0, 0},
        {"weight-decay", CLI_FLOAT, &o->cfg.weight_decay, "X         L2 penalty on all parameters added to the "
                                                          "gradient; decoupled decay with adamw (default 0)", 0, 1, 0},
        {"lr-schedule", CLI_STRING, &o->schedule, "NAME      constant, step or cosine (default constant)", 0, 0, 0},
        {"lr-step-epochs", CLI_INT, &o->cfg.lr_step_epochs, "N         step schedule: epochs per decay (default 10)", 1,
         100000, 0},
        {"lr-gamma", CLI_FLOAT, &o->cfg.lr_gamma, "X         step schedule: decay factor (default 0.1)", 1e-9, 1, 0},
        {"warmup-epochs", CLI_INT, &o->cfg.warmup_epochs, "N         linear learning-rate warm-up epochs "
                                                          "(default 0)", 0, 100000, 0},
        {"reduce-on-plateau", CLI_BOOL, &o->cfg.reduce_on_plateau, "          multiply the learning rate by "
                                                                   "--plateau-factor when the --monitor metric stalls",
         0, 0, 0},
        {"plateau-patience", CLI_INT, &o->cfg.plateau_patience, "N         epochs without improvement first "
                                                                "(default 2)", 0, 100000, 0},
        {"plateau-factor", CLI_FLOAT, &o->cfg.plateau_factor, "X         factor (default 0.1)", 1e-6, 0.999999, 0},
        {"clip-norm", CLI_FLOAT, &o->cfg.clip_norm, "X         clip gradients to this global L2 norm (default: off)", 0,
         1e9, 0},
        {"label-smoothing", CLI_FLOAT, &o->cfg.label_smoothing, "X         label smoothing in [0, 1) (default 0)", 0,
         0.999999, 0},
        {"class-weights", CLI_STRING, &o->class_weights, "LIST      loss weight per class: w0,w1,... or balanced", 0, 0,
         0},
        {"deterministic", CLI_BOOL, &o->cfg.deterministic, "          bit-identical runs for one seed (the CPU backend "
                                                           "always is, at a fixed thread count)", 0, 0, 0},
        {"seed", CLI_U64, &o->seed, "S         seed for initialization, shuffling and the split (default 1)", 0, 0, 0},
        {"val-split", CLI_FLOAT, &o->val_split, "F         fraction of the training set held out for validation "
                                                "(default 0.1; 0 = none)", 0, 0.9, 0},
        {"normalize", CLI_BOOL, &o->normalize, "          standardize inputs by the training set's per-channel mean "
                                               "and std (stored in the model)", 0, 0, 0},
        {"out", CLI_STRING, &o->out, "FILE      where to write the model (default model.safetensors)", 0, 0, 0},
        {"metrics-json", CLI_STRING, &o->metrics_json, "FILE      write the per-epoch history and test metrics as JSON",
         0, 0, 0},
        CLI_DEVICE_FLAG(o->device),
        {"precision", CLI_STRING, &o->precision, "P         fp32 (default), tf32, fp16 or bf16 (mixed precision; CUDA)",
         0, 0, 0},
        {"quiet", CLI_BOOL, &o->quiet, "          no progress bar", 0, 0, 0},
        CLI_DATA_TRAIN_FLAGS(o->dopt),
        CLI_ADV_FLAGS(o->aopt),
        CLI_PRUNE_FLAGS(o->popt),
        {"checkpoint-dir", CLI_STRING, &o->cfg.checkpoint_dir, "DIR       write checkpoints here (everything needed to "
                                                               "resume exactly)", 0, 0, 0},
        {"checkpoint-every", CLI_STRING, &o->every, "N[steps]  a checkpoint every N epochs (default 1), "
                                                    "or N steps", 0, 0, 0},
        {"keep-checkpoints", CLI_INT, &o->cfg.keep_checkpoints, "K         keep the newest K checkpoints and the best "
                                                                "(default 3)", 1, 1000000, 0},
        {"resume", CLI_STRING, &o->resume, "DIR       continue the run exactly from the newest valid checkpoint in "
                                           "DIR, with the flags it kept (one given again overrides the kept one; one "
                                           "that changes the arithmetic is refused)", 0, 0, 0},
        {"init-from", CLI_STRING, &o->init_from, "MODEL     fine-tune: a new run from MODEL's weights (a cnn.c model "
                                                 "or checkpoint, or a PyTorch ResNet state_dict with --model)",
         0, 0, 0},
        {"freeze", CLI_STRING, &o->freeze, "LAYER     with --init-from: freeze the layers up to LAYER (a name or "
                                           "a count)", 0, 0, 0},
        {"replace-head", CLI_INT, &o->replace_head, "N         with --init-from: a new classifier for N classes", 1,
         1000000, 0},
        {"monitor", CLI_STRING, &o->monitor, "NAME      val_loss, val_accuracy, loss or accuracy: what the callbacks "
                                             "watch (default val_loss)", 0, 0, 0},
        {"min-delta", CLI_FLOAT, &o->cfg.min_delta, "X         smallest change that counts as an improvement "
                                                    "(default 0)", 0, 1e9, 0},
        {"early-stopping", CLI_INT, &o->patience, "PATIENCE  stop after PATIENCE epochs without improvement", 0, 100000,
         0},
        {"restore-best-weights", CLI_BOOL, &o->cfg.restore_best_weights, "          end with the weights of the best "
                                                                         "epoch", 0, 0, 0},
        {"save-best", CLI_STRING, &o->cfg.save_best, "FILE      write the model whenever the monitored metric improves",
         0, 0, 0},
        {"csv-log", CLI_STRING, &o->cfg.csv_log, "FILE      a CSV row per epoch", 0, 0, 0},
        {"tensorboard", CLI_STRING, &o->cfg.tensorboard_dir, "DIR       TensorBoard event files (DIR/train, "
                                                             "DIR/validation)", 0, 0, 0},
        {"plot", CLI_STRING, &o->cfg.plot, "FILE      a PNG of the loss and accuracy curves at the end", 0, 0, 0},
        CLI_MAX_MEMORY_FLAG(o->max_memory),
        {"teacher", CLI_STRING, &o->teacher_path, "MODEL     distillation: learn from this trained model's softened "
                                                  "outputs too (same classes and input channels)", 0, 0, 0},
        {"distill-alpha", CLI_FLOAT, &o->alpha, "A         distillation: the KL term's weight in [0, 1], the labels' "
                                                "1 - A (default 0.9)", -1e30, 1e30, 0},
        {"temperature", CLI_FLOAT, &o->temperature, "T         distillation: the softmax temperature, > 0 (default 4)",
         -1e30, 1e30, 0},
        {"qat", CLI_BOOL, &o->qat, "          quantization-aware training: fake int8 quantization (for cnn quantize "
                                   "--mode int8)", 0, 0, 0},
        CLI_DIST_FLAGS(o->distopt),
        CLI_END,
    };
    int rc = cli_parse_flags("train", USAGE, flags, argc, argv);
    if (rc) return rc == 1 ? -1 : rc;
    char *settings = NULL;
    if ((rc = resume_settings(flags, argc, argv, o->resume, &settings)) != 0) return rc;
    o->cfg.run_args = settings;
    o->alpha_given = flag_seen(flags, "distill-alpha");
    o->temperature_given = flag_seen(flags, "temperature");
    o->cfg.early_stopping = flag_seen(flags, "early-stopping");
    return 0;
}

/* The flags that go together, and their values that need no model. Prints a message and returns 2 when they do
 * not, else 0. */
static int check_flags(train_opts *o)
{
    cnn_train_config *cfg = &o->cfg;
    int rc;
    if ((rc = cli_check_precision("train", o->precision)) != 0) return rc;
    if ((rc = cli_adv_apply("train", &o->aopt, cfg, o->seed)) != 0) return rc;
    if ((rc = cli_prune_apply("train", &o->popt, cfg)) != 0) return rc;
    if (!o->model && !o->resume && !o->init_from) {
        fprintf(stderr, "cnn train: --model FILE is required (e.g. --model samples/models/seed_cnn.cnn)\n");
        return 2;
    }
    if (o->resume && (o->init_from || o->freeze || o->replace_head)) {
        fprintf(stderr, "cnn train: --resume continues a run with everything it had (weights, frozen layers, head); "
                        "--init-from, --freeze and --replace-head start a new one: give one or the other\n");
        return 2;
    }
    if ((o->freeze || o->replace_head) && !o->init_from) {
        fprintf(stderr, "cnn train: --%s fine-tunes a trained network: give it with --init-from MODEL\n",
                o->freeze ? "freeze" : "replace-head");
        return 2;
    }
    if ((rc = cli_compress_check(o)) != 0) return rc;
    if (o->every && !parse_every(o->every, &cfg->checkpoint_every, &cfg->checkpoint_in_steps)) {
        fprintf(stderr, "cnn train: --checkpoint-every: '%s' is not N, Nepochs or Nsteps with N >= 1\n", o->every);
        return 2;
    }
    if (o->every && !cfg->checkpoint_dir && !o->resume) {
        fprintf(stderr, "cnn train: --checkpoint-every needs --checkpoint-dir DIR\n");
        return 2;
    }
    if (cnn_monitor_parse(o->monitor, &cfg->monitor) != CNN_OK) {
        fprintf(stderr, "cnn train: --monitor: %s\n", cnn_last_error());
        return 2;
    }
    return 0;
}

/* --class-weights: "balanced" or w0,w1,... into o->weights. Prints a message and returns 2 on a bad list, else 0. */
static int parse_class_weights(train_opts *o)
{
    const char *text = o->class_weights;
    if (!text) return 0;
    if (!strcmp(text, "balanced")) {
        o->cfg.balanced_class_weights = 1;
        return 0;
    }
    const int most = (int)(sizeof o->weights / sizeof *o->weights);
    for (const char *c = text;;) {
        char *end;
        float w = strtof(c, &end);
        if (end == c || !(w >= 0.0f) || w > 1e6f || o->nweights == most) {
            fprintf(stderr, "cnn train: --class-weights: expected 'balanced' or comma-separated numbers >= 0, "
                            "got '%s'\n", text);
            return 2;
        }
        o->weights[o->nweights++] = w;
        if (*end == '\0') break;
        if (*end != ',') {
            fprintf(stderr, "cnn train: --class-weights: expected a ',' after weight %d in '%s'\n", o->nweights, text);
            return 2;
        }
        c = end + 1;
    }
    o->cfg.class_weights = o->weights;
    return 0;
}

/* The training configuration the flags make, and, for a new model, whether a training step of it fits in memory.
 * Returns the exit status of a failure, else 0. */
static int configure(train_opts *o)
{
    cnn_train_config *cfg = &o->cfg;
    int rc;
    cfg->early_stopping_patience = o->patience;
    if (o->resume && !cfg->checkpoint_dir) cfg->checkpoint_dir = o->resume; /* go on writing where the run wrote */
    if (cnn_optimizer_parse(o->optimizer, &cfg->optimizer) != CNN_OK) {
        fprintf(stderr, "cnn train: --optimizer: %s\n", cnn_last_error());
        return 2;
    }
    cfg->momentum = o->momentum >= 0.0f ? o->momentum : cfg->optimizer == CNN_OPTIM_RMSPROP ? 0.0f : 0.9f;
    if (cfg->nesterov && (cfg->optimizer != CNN_OPTIM_SGD || cfg->momentum == 0.0f)) {
        fprintf(stderr, "cnn train: --nesterov needs --optimizer sgd with a momentum above 0\n");
        return 2;
    }
    if (cnn_lr_schedule_parse(o->schedule, &cfg->lr_schedule) != CNN_OK) {
        fprintf(stderr, "cnn train: --lr-schedule: %s\n", cnn_last_error());
        return 2;
    }
    if ((rc = parse_class_weights(o)) != 0) return rc;
    cfg->seed = o->seed;
    cfg->progress = o->quiet ? NULL : stderr;
    cli_apply_max_memory(o->max_memory);
    if (o->model && !o->resume && !o->init_from) {
        /* a training step at --batch, with the optimizer's state, must fit before the network is built and the data
         * read (the library checks again as it allocates) */
        cnn_memory_estimate *budget = NULL;
        cnn_memory_config mc = {.batch = cfg->batch_size,
                                .optimizer_slots = cnn_optimizer_slots(cfg->optimizer, cfg->momentum)};
        cnn_status est = cnn_memory_estimate_file(o->model, &mc, &budget);
        if (est == CNN_OK) est = cnn_memory_check(budget, 1, 0);
        cnn_memory_estimate_destroy(budget);
        if (est != CNN_OK)
            return cli_fail("train", est == CNN_ERR_NO_MEMORY ? cli_memory_what(o->max_memory) : "--model", est);
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// the network

/* --resume DIR: the newest valid checkpoint's network; --model, when given, must be the checkpoint's model (others'
 * checkpoints in DIR are refused). */
static int resume_net(train_opts *o, train_run *r)
{
    cnn_net *expect = NULL;
    cnn_checkpoint_info info;
    cnn_status st;
    if (o->model && (st = cnn_net_from_file(o->model, r->backend, o->seed, &expect)) != CNN_OK)
        return cli_fail("train", "--model", st);
    st = cnn_checkpoint_find(o->resume, expect, stderr, &r->checkpoint, &info);
    cnn_net_destroy(expect);
    if (st != CNN_OK || (st = cnn_net_load(r->checkpoint, r->backend, &r->net)) != CNN_OK)
        return cli_fail("train", "--resume", st);
    say_resume(r->checkpoint, &info, o->cfg.epochs);
    o->cfg.resume_from = r->checkpoint;
    return 0;
}

/* What fine-tuning starts from, said once: `copied` < 0 when the whole network came from the file. */
static void say_fine_tune(const train_opts *o, int copied, int kept, int frozen, int inherited)
{
    fprintf(stderr, "cnn train: fine-tuning: a new run (fresh optimizer state, schedule from epoch 1) from the "
                    "weights of %s", o->init_from);
    if (copied >= 0) fprintf(stderr, " (%d tensor%s copied, %d left as initialized)", copied, cli_s(copied), kept);
    if (o->replace_head)
        fprintf(stderr, "; new classifier for %d class%s", o->replace_head, o->replace_head == 1 ? "" : "es");
    if (frozen) fprintf(stderr, "; %d layer%s frozen, up to %s", frozen, cli_s(frozen), o->freeze);
    if (inherited && !frozen)
        fprintf(stderr, "; the %d layer%s it was fine-tuned with frozen are trainable (--freeze to freeze)", inherited,
                cli_s(inherited));
    fprintf(stderr, "\n");
}

/* --init-from MODEL: a new run from MODEL's weights, with --replace-head and --freeze. */
static int fine_tune_net(train_opts *o, train_run *r)
{
    int copied = 0, kept = 0, frozen = 0, inherited = 0;
    cnn_status st;
    if (o->model) {
        if ((st = cnn_net_from_file(o->model, r->backend, o->seed, &r->net)) != CNN_OK)
            return cli_fail("train", "--model", st);
        st = cnn_net_init_from(r->net, o->init_from, &copied, &kept);
    } else if ((st = cnn_net_load(o->init_from, r->backend, &r->net)) == CNN_OK) {
        copied = -1;
        /* a new run decides its own frozen layers: those the file was fine-tuned with are trainable again */
        inherited = cnn_net_frozen_layers(r->net);
        if (inherited) st = cnn_net_freeze(r->net, NULL, NULL);
    }
    if (st != CNN_OK) {
        int rc = cli_fail("train", "--init-from", st);
        if (!o->model) fprintf(stderr, "cnn train: (a PyTorch state_dict needs its definition: --model FILE)\n");
        return rc;
    }
    if (o->replace_head) {
        cnn_net *fresh = NULL;
        if ((st = cnn_net_replace_head(r->net, o->replace_head, o->seed, &fresh)) != CNN_OK)
            return cli_fail("train", "--replace-head", st);
        cnn_net_destroy(r->net);
        r->net = fresh;
    }
    if (o->freeze && (st = cnn_net_freeze(r->net, o->freeze, &frozen)) != CNN_OK)
        return cli_fail("train", "--freeze", st);
    say_fine_tune(o, copied, kept, frozen, inherited);
    return 0;
}

/* The network to train: resumed, fine-tuned or new from --model. */
static int open_net(train_opts *o, train_run *r)
{
    int rc;
    cnn_status st;
    if (o->resume) rc = resume_net(o, r);
    else if (o->init_from) rc = fine_tune_net(o, r);
    else if ((st = cnn_net_from_file(o->model, r->backend, o->seed, &r->net)) != CNN_OK)
        rc = cli_fail("train", st == CNN_ERR_NO_MEMORY ? cli_memory_what(o->max_memory) : "--model", st);
    else rc = 0;
    if (!rc && !o->model) o->model = o->resume ? r->checkpoint : o->init_from;
    return rc;
}

/* --qat: the network with int8 fake quantization, unless it has it already. */
static int convert_qat(const train_opts *o, train_run *r)
{
    if (!o->qat || cnn_net_is_qat(r->net)) return 0;
    cnn_net *fresh = NULL;
    cnn_status st = cnn_net_qat_convert(r->net, o->seed, &fresh);
    if (st != CNN_OK) return cli_fail_value("train", "--qat", st);
    cnn_net_destroy(r->net);
    r->net = fresh;
    fprintf(stderr, "cnn train: quantization-aware training: int8 fake quantization of the weights (per channel) "
                    "and activations (ranges learned as moving min-max)\n");
    return 0;
}

/* --teacher MODEL: distillation settings in o->cfg. */
static int load_teacher(train_opts *o, train_run *r)
{
    if (!o->teacher_path) return 0;
    cnn_status st;
    if ((st = cnn_net_load(o->teacher_path, r->backend, &r->teacher)) != CNN_OK)
        return cli_fail("train", "--teacher", st);
    if ((st = cnn_distill_check(r->net, r->teacher, o->alpha, o->temperature)) != CNN_OK) {
        cli_fail("train", "--teacher", st);
        return 2;
    }
    o->cfg.teacher = r->teacher;
    o->cfg.distill_alpha = o->alpha;
    o->cfg.temperature = o->temperature;
    int th, tw, tc, sh, sw, sc;
    cnn_net_input_shape(r->teacher, &th, &tw, &tc);
    cnn_net_input_shape(r->net, &sh, &sw, &sc);
    fprintf(stderr, "cnn train: distillation from %s (%lld parameters): alpha %g, temperature %g%s\n",
            o->teacher_path, (long long)cnn_net_param_count(r->teacher), (double)o->alpha, (double)o->temperature,
            th != sh || tw != sw ? "; batches resized to the teacher's input" : "");
    return 0;
}

static int set_precision(const train_opts *o, train_run *r)
{
    cnn_precision prec;
    cnn_status st;
    if ((st = cnn_precision_parse(o->precision, &prec)) != CNN_OK ||
        (st = cnn_net_set_precision(r->net, prec)) != CNN_OK)
        return cli_fail_value("train", "--precision", st);
    if (prec != CNN_PRECISION_FP32)
        fprintf(stderr, "cnn train: precision %s%s\n", o->precision,
                prec == CNN_PRECISION_TF32 ? " (f32 tensors; convolutions and products may round to TF32)"
                : prec == CNN_PRECISION_FP16 ? " (16-bit activations and gradients, f32 master weights, dynamic "
                                               "loss scaling from 2^16)"
                                             : " (16-bit activations and gradients, f32 master weights)");
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// the data

/* The training, validation and test sources, cut to --limit, with the model's class names and normalization. */
static int open_data(train_opts *o, train_run *r)
{
    const cli_data_opts *d = &o->dopt;
    cnn_status st;
    int rc;
    /* stored with the model: eval and predict resize as training did */
    if (o->cfg.resize_h && (st = cnn_net_set_resize(r->net, o->cfg.resize_h, o->cfg.resize_w)) != CNN_OK)
        return cli_fail("train", "--resize", st);
    if ((st = cnn_source_open(o->data, "train", &r->full)) != CNN_OK) return cli_fail("train", "--data", st);
    if (d->test_data || cnn_source_has_split(o->data, "test")) {
        st = d->test_data ? cli_open_test(d->test_data, &r->test) : cnn_source_open(o->data, "test", &r->test);
        if (st != CNN_OK) return cli_fail("train", d->test_data ? "--test-data" : "--data (test split)", st);
    }
    int64_t ignored = cnn_source_ignored_files(r->full);
    if (ignored)
        fprintf(stderr, "cnn train: %lld file%s without an image extension (.jpg, .jpeg, .png, .bmp) %s left out\n",
                (long long)ignored, cli_s(ignored), ignored == 1 ? "was" : "were");
    if (o->val_split > 0) {
        if ((st = cnn_source_split(r->full, o->val_split, o->seed, &r->train, &r->val)) != CNN_OK)
            return cli_fail("train", "--val-split", st);
    } else {
        r->train = r->full;
        r->full = NULL;
    }
    /* after the split: the validation set is the one the whole data would give, cut short as the others */
    if (cli_data_limit("train", d, r->train) || cli_data_limit("train", d, r->val) ||
        cli_data_limit("train", d, r->test))
        return 1;
    if (d->limit)
        fprintf(stderr, "cnn train: --limit %d: a quick run on the first %d sample%s of each split\n", d->limit,
                d->limit, cli_s(d->limit));
    int nclasses = cnn_source_num_classes(r->train);
    if (cnn_source_class_name(r->train, 0) && nclasses == cnn_net_num_outputs(r->net)) {
        const char **names = calloc((size_t)nclasses, sizeof *names);
        for (int c = 0; names && c < nclasses; c++) names[c] = cnn_source_class_name(r->train, c);
        if (names) cnn_net_set_class_names(r->net, nclasses, names);
        free(names);
    }
    if ((rc = cli_data_normalization("train", d, o->normalize, r->train, &o->cfg, r->net)) != 0) return rc;
    return 0;
}

/* What is about to be trained on what, said once; 2 when --class-weights does not fit the model. */
static int describe_run(const train_opts *o, const train_run *r)
{
    fprintf(stderr, "cnn train: %s, %lld trainable parameter%s; %lld training image%s, %lld validation, %lld test%s\n",
            o->model, (long long)cnn_net_param_count(r->net), cli_s(cnn_net_param_count(r->net)),
            (long long)cnn_source_count(r->train), cli_s(cnn_source_count(r->train)),
            (long long)(r->val ? cnn_source_count(r->val) : 0), (long long)(r->test ? cnn_source_count(r->test) : 0),
            r->test ? "" : " (no test set: give one with --test-data)");
    cli_report_classes("train", "training", r->train, o->cfg.sampler, o->class_weights != NULL);
    if (o->cfg.augment) {
        char text[512];
        cnn_augment_format(o->cfg.augment, text, sizeof text);
        fprintf(stderr, "cnn train: augmentation: %s%s\n", text, o->dopt.augment ? "" : " (the model's augment line)");
    }
    if (o->nweights && o->nweights != cnn_net_num_outputs(r->net)) {
        fprintf(stderr, "cnn train: --class-weights: %d weight%s given for a model with %d classes\n", o->nweights,
                cli_s(o->nweights), cnn_net_num_outputs(r->net));
        return 2;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// the run

/* After training (rank 0): the model written, the data waits said, the test set evaluated, the JSON report. */
static int finish_run(const train_opts *o, train_run *r)
{
    cnn_status st;
    const int pruned = o->cfg.prune.enabled;
    /* a pruned model's zeros take little room deflated (README "Pruning") */
    if ((st = pruned ? cnn_net_save_compressed(r->net, o->out) : cnn_net_save(r->net, o->out)) != CNN_OK)
        return cli_fail("train", "--out", st);
    fprintf(stderr, "cnn train: model written to %s%s\n", o->out, pruned ? " (zlib-compressed)" : "");
    double waited = 0.0;
    for (int e = 0; e < r->epochs_done; e++) waited += r->history[e].data_wait;
    if (r->epochs_done) {
        long long bad = (long long)r->history[r->epochs_done - 1].bad_files;
        fprintf(stderr, "cnn train: waited %.2f s for data in all; %lld bad image file%s skipped\n", waited, bad,
                cli_s(bad));
    }
    if (r->metrics) printf("test loss: %.4f - test accuracy: %.4f\n", r->metrics->loss, r->metrics->accuracy);
    if (o->metrics_json &&
        (st = report_write_json(o->metrics_json, r->history, r->epochs_done, r->metrics, r->net)) != CNN_OK)
        return cli_fail("train", "--metrics-json", st);
    return 0;
}

static int run_train(train_opts *o, train_run *r)
{
    cnn_status st;
    int rc;
    r->history = calloc((size_t)o->cfg.epochs, sizeof(cnn_epoch_stats));
    if (!r->history) {
        fprintf(stderr, "cnn train: out of memory\n");
        return 1;
    }
    if ((st = cli_backend("train", cli_dist_device(&o->distopt, o->device, &r->rank_device), &r->backend)) != CNN_OK)
        return cli_fail_value("train", "--device", st);
    if ((rc = open_net(o, r)) != 0 || (rc = convert_qat(o, r)) != 0 || (rc = load_teacher(o, r)) != 0 ||
        (rc = set_precision(o, r)) != 0 || (rc = cli_data_apply("train", &o->dopt, &o->cfg, r->net)) != 0 ||
        (rc = open_data(o, r)) != 0 || (rc = describe_run(o, r)) != 0)
        return rc;
    if ((st = cnn_train_source(r->net, r->train, r->val, &o->cfg, r->history)) != CNN_OK)
        return cli_fail("train", st == CNN_ERR_NO_MEMORY ? cli_memory_what(o->max_memory) : "training", st);
    while (r->epochs_done < o->cfg.epochs && r->history[r->epochs_done].epoch) r->epochs_done++;
    /* the test set: several ranks evaluate a part each and add their sums (one process: all of it) */
    if (r->test &&
        (st = cnn_dist_evaluate_source(o->distopt.dist, r->net, r->test, &o->cfg, 256, &r->metrics)) != CNN_OK)
        return cli_fail("train", "test evaluation", st);
    if (!cli_dist_writer(&o->distopt)) return 0; /* every rank holds the same model: rank 0 writes it and reports */
    return finish_run(o, r);
}

static void train_run_free(train_run *r)
{
    cnn_metrics_destroy(r->metrics);
    cnn_source_destroy(r->full);
    cnn_source_destroy(r->train);
    cnn_source_destroy(r->val);
    cnn_source_destroy(r->test);
    cnn_net_destroy(r->net);
    cnn_net_destroy(r->teacher);
    cnn_backend_destroy(r->backend);
    free(r->history);
    free(r->checkpoint);
    free(r->rank_device);
}

int cmd_train(int argc, char **argv)
{
    train_opts o;
    train_opts_init(&o);
    int rc = parse_flags(&o, argc, argv);
    if (rc) return rc < 0 ? 0 : rc;
    if ((rc = check_flags(&o)) != 0 || (rc = configure(&o)) != 0) return rc;
    /* under mpirun or srun: one rank of a data-parallel run; from here on every exit goes through cli_dist_finish */
    if ((rc = cli_dist_start("train", &o.distopt, &o.cfg)) != 0) return rc;
    train_run r = {0};
    rc = run_train(&o, &r);
    train_run_free(&r);
    return cli_dist_finish("train", &o.distopt, rc);
}
