#define _POSIX_C_SOURCE 200809L
/* Checkpoints: writing the trainer's whole state, finding the newest valid checkpoint of a directory, and
 * restoring from one so that training continues exactly (core/train/checkpoint.h has the layout). */
#include "core/train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/compress/compress.h"
#include "core/compress/prune.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/float_text.h"
#include "core/free_list.h"
#include "core/grow.h"
#include "core/io/json.h"
#include "core/nn/model_file.h"
#include "core/train/dist.h"

#define CKPT_PREFIX "ckpt-" /* CNN_CHECKPOINT_NAME's parts */
#define CKPT_SUFFIX ".safetensors"
#define BEST_NAME CNN_CHECKPOINT_BEST

double cnn_wall_seconds(void)
{
    struct timespec ts;
    if (timespec_get(&ts, TIME_UTC) != TIME_UTC) return (double)time(NULL);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------------------------------
// the state

cnn_status cnn_train_state_init(cnn_train_state *s, const cnn_train_config *cfg, int64_t n)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->history = calloc((size_t)cfg->epochs, sizeof *s->history);
    if (!s->history) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the history");
    s->plateau_scale = 1.0f;
    int up = cfg->monitor == CNN_MONITOR_VAL_ACCURACY || cfg->monitor == CNN_MONITOR_ACCURACY;
    s->best = s->plateau_best = up ? -INFINITY : INFINITY;
    s->run_started = cnn_wall_seconds();
    return CNN_OK;
}

void cnn_train_state_free(cnn_train_state *s)
{
    CNN_FREE_ALL(s->history, s->best_weights);
    cnn_pruner_destroy(s->pruner);
    s->history = NULL;
    s->best_weights = NULL;
    s->pruner = NULL;
}

/* The j-th saved tensor of layer l, as model files order them: params, then state. */
static cnn_param *saved(cnn_layer *l, int j)
{
    return j < l->nparams ? &l->params[j] : &l->state[j - l->nparams];
}

int64_t cnn_net_saved_floats(const cnn_net *net)
{
    int64_t n = 0;
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < net->layers[i]->nparams + net->layers[i]->nstate; p++)
            n += cnn_tensor_numel(saved(net->layers[i], p)->value);
    return n;
}

cnn_status cnn_net_snapshot(const cnn_net *net, float *dst)
{
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < net->layers[i]->nparams + net->layers[i]->nstate; p++) {
            const cnn_tensor *t = saved(net->layers[i], p)->value;
            cnn_status st = cnn_tensor_read(t, dst, cnn_tensor_bytes(t));
            if (st != CNN_OK) return st;
            dst += cnn_tensor_numel(t);
        }
    return CNN_OK;
}

cnn_status cnn_net_restore_snapshot(cnn_net *net, const float *src)
{
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < net->layers[i]->nparams + net->layers[i]->nstate; p++) {
            cnn_tensor *t = saved(net->layers[i], p)->value;
            cnn_status st = cnn_tensor_write(t, src, cnn_tensor_bytes(t));
            if (st != CNN_OK) return st;
            src += cnn_tensor_numel(t);
        }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// the settings a resumed run must share: one "name=value" line each

/* The shortest decimal that reads back as the same float ("0.01", not "0.00999999978"). */
static const char *short_float(char *buf, size_t n, float v) { return cnn_float_text(buf, n, v, 1); }

static void fingerprint(const cnn_train_config *c, const cnn_net *net, const cnn_dataset *train, cnn_strbuf *b)
{
    char f[7][32];
    cnn_strbuf_appendf(b, "optimizer=%s\nlr=%s\nmomentum=%s\nnesterov=%d\nbeta1=%s\nbeta2=%s\neps=%s\nrho=%s\n"
                          "weight_decay=%s\n",
                       cnn_optimizer_name(c->optimizer), short_float(f[0], 32, c->lr),
                       short_float(f[1], 32, c->momentum), c->nesterov, short_float(f[2], 32, c->beta1),
                       short_float(f[3], 32, c->beta2), short_float(f[4], 32, c->eps), short_float(f[5], 32, c->rho),
                       short_float(f[6], 32, c->weight_decay));
    cnn_strbuf_appendf(b, "lr_schedule=%s\nlr_step_epochs=%d\nlr_gamma=%s\nwarmup_epochs=%d\nreduce_on_plateau=%d\n"
                          "plateau_patience=%d\nplateau_factor=%s\nclip_norm=%s\nlabel_smoothing=%s\n",
                       cnn_lr_schedule_name(c->lr_schedule), c->lr_step_epochs,
                       short_float(f[0], 32, c->lr_gamma), c->warmup_epochs, c->reduce_on_plateau, c->plateau_patience,
                       short_float(f[1], 32, c->plateau_factor), short_float(f[2], 32, c->clip_norm),
                       short_float(f[3], 32, c->label_smoothing));
    cnn_strbuf_appends(b, "class_weights=");
    if (c->balanced_class_weights) cnn_strbuf_appends(b, "balanced");
    else if (!c->class_weights) cnn_strbuf_appends(b, "none");
    else
        for (int i = 0; i < cnn_net_num_outputs(net); i++)
            cnn_strbuf_appendf(b, "%s%s", i ? "," : "", short_float(f[0], 32, c->class_weights[i]));
    cnn_strbuf_appendf(b, "\nprecision=%s", cnn_precision_name(net->precision));
    cnn_strbuf_appendf(b, "\nbatch=%d\nseed=%" PRIu64 "\nmonitor=%s\nmin_delta=%s\nearly_stopping=%d\n"
                          "early_stopping_patience=%d\nrestore_best_weights=%d\n",
                       c->batch_size, c->seed, cnn_monitor_name(c->monitor),
                       short_float(f[4], 32, c->min_delta), c->early_stopping, c->early_stopping_patience,
                       c->restore_best_weights);
    /* the data pipeline: the sampler, resizing and augmentation decide the batches */
    char aug[256] = "none";
    if (c->augment) cnn_augment_format(c->augment, aug, sizeof aug);
    cnn_strbuf_appendf(b, "sampler=%s\nresize=%dx%d\naugment=%s\n", cnn_sampler_name(c->sampler), c->resize_h,
                       c->resize_w, aug);
    /* adversarial training (only when on: checkpoints of plain runs read as before) */
    if (c->adversarial)
        cnn_strbuf_appendf(b, "adversarial=%s\nadv_eps=%s\nadv_steps=%d\nadv_alpha=%s\nadv_random_start=%d\n"
                              "adv_ratio=%s\nadv_seed=%" PRIu64 "\n",
                           c->attack.method == CNN_ATTACK_PGD ? "pgd" : "fgsm", short_float(f[0], 32, c->attack.eps),
                           c->attack.steps, short_float(f[1], 32, c->attack.alpha), c->attack.random_start,
                           short_float(f[2], 32, c->adv_ratio), c->attack.seed);
    /* distillation (only when on): the teacher by a checksum of its definition and weights */
    if (c->teacher)
        cnn_strbuf_appendf(b, "teacher_crc32c=%08x\ndistill_alpha=%s\ntemperature=%s\n",
                           cnn_distill_teacher_crc(c->teacher), short_float(f[0], 32, c->distill_alpha),
                           short_float(f[1], 32, c->temperature));
    /* pruning (only when on, likewise) */
    if (c->prune.enabled) {
        char prune[192];
        cnn_prune_describe(&c->prune, prune, sizeof prune);
        cnn_strbuf_appendf(b, "prune=%s\n", prune);
    }
    /* the data: its size, image shape and labels (the images themselves would take a pass over all of them) */
    cnn_strbuf_appendf(b, "training_samples=%lld\nimage=%dx%dx%d\ntraining_labels_crc32c=%08x\n", (long long)train->n,
                       train->h, train->w, train->c,
                       cnn_crc32c(0, train->labels, (size_t)train->n * sizeof *train->labels));
    /* data parallelism (only with several ranks: one process's checkpoints read as before) */
    char ranks[32];
    cnn_dist_fingerprint_line(c->dist, ranks, sizeof ranks);
    cnn_strbuf_appends(b, ranks);
}

/* Names the first setting that differs between the checkpoint's lines and this run's. */
static cnn_status compare_fingerprints(const char *path, const char *stored, const char *now)
{
    if (!strcmp(stored, now)) return CNN_OK;
    cnn_status st = cnn_dist_check_resume(path, stored, now);
    if (st != CNN_OK) return st;
    const char *a = stored, *b = now;
    for (;;) {
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        size_t la = ea ? (size_t)(ea - a) : strlen(a), lb = eb ? (size_t)(eb - b) : strlen(b);
        if (la != lb || strncmp(a, b, la))
            return cnn_error(CNN_ERR_INVALID_ARG, "%s was written with %.*s, this run has %.*s: resume needs the "
                                                  "settings and data the run started with (--init-from starts a new "
                                                  "run from its weights)", path, (int)la, a, (int)lb, b);
        if (!ea || !eb) break;
        a = ea + 1;
        b = eb + 1;
    }
    return cnn_error(CNN_ERR_INVALID_ARG, "%s was written with other training settings", path);
}

// ---------------------------------------------------------------------------------------------------------------
// history as JSON

/* The numbers of a history entry after its "epoch", in file order: written and read from this one list. */
enum { HISTORY_ALWAYS, HISTORY_WITH_VAL, HISTORY_WITH_PRUNING };
static const struct history_number {
    const char *key;
    size_t offset; /* of the double in cnn_epoch_stats */
    int when;      /* HISTORY_WITH_VAL: with has_val (val_loss in the file); HISTORY_WITH_PRUNING: sparsity >= 0 */
} history_numbers[] = {
    {"loss", offsetof(cnn_epoch_stats, loss), HISTORY_ALWAYS},
    {"accuracy", offsetof(cnn_epoch_stats, accuracy), HISTORY_ALWAYS},
    {"val_loss", offsetof(cnn_epoch_stats, val_loss), HISTORY_WITH_VAL},
    {"val_accuracy", offsetof(cnn_epoch_stats, val_accuracy), HISTORY_WITH_VAL},
    {"seconds", offsetof(cnn_epoch_stats, seconds), HISTORY_ALWAYS},
    {"images_per_sec", offsetof(cnn_epoch_stats, images_per_sec), HISTORY_ALWAYS},
    {"lr", offsetof(cnn_epoch_stats, lr), HISTORY_ALWAYS},
    {"wall_time", offsetof(cnn_epoch_stats, wall_time), HISTORY_ALWAYS},
    {"sparsity", offsetof(cnn_epoch_stats, sparsity), HISTORY_WITH_PRUNING},
};
#define HISTORY_NUMBERS (int)(sizeof history_numbers / sizeof *history_numbers)

/* Whether an entry with (or without) validation and pruning has number f. */
static int history_has(const struct history_number *f, int has_val, int has_sparsity)
{
    return f->when == HISTORY_WITH_VAL ? has_val : f->when == HISTORY_WITH_PRUNING ? has_sparsity : 1;
}

static void write_history(cnn_json_writer *w, const cnn_epoch_stats *h, int n)
{
    cnn_json_write_begin_array(w);
    for (int i = 0; i < n; i++) {
        const cnn_epoch_stats *e = &h[i];
        cnn_json_write_begin_object(w);
        cnn_json_write_key(w, "epoch");
        cnn_json_write_int(w, e->epoch);
        for (int j = 0; j < HISTORY_NUMBERS; j++) {
            const struct history_number *f = &history_numbers[j];
            if (!history_has(f, e->has_val, e->sparsity >= 0.0)) continue;
            cnn_json_write_key(w, f->key);
            cnn_json_write_number(w, *(const double *)((const char *)e + f->offset));
        }
        cnn_json_write_end_object(w);
    }
    cnn_json_write_end_array(w);
}

static int json_num(const cnn_json *o, const char *key, double *v)
{
    return cnn_json_double(cnn_json_get(o, key), v);
}

static cnn_status read_history(const char *path, const char *text, cnn_epoch_stats *h, int cap, int expect)
{
    cnn_json *root = NULL;
    cnn_status st = cnn_json_parse(text, strlen(text), &root);
    if (st != CNN_OK) return cnn_error_prefix(st, "%s: metadata 'history': ", path);
    int n = (int)cnn_json_count(root);
    if (cnn_json_type_of(root) != CNN_JSON_ARRAY || n != expect) {
        cnn_json_free(root);
        return cnn_error(CNN_ERR_FORMAT, "%s: metadata 'history' must be an array of %d epochs", path, expect);
    }
    for (int i = 0; i < n && i < cap; i++) {
        const cnn_json *o = cnn_json_at(root, (size_t)i);
        cnn_epoch_stats *e = &h[i];
        double epoch;
        memset(e, 0, sizeof *e);
        /* compared as a double: any number a file holds (1e300, NaN) is refused before it becomes an int */
        int ok = json_num(o, "epoch", &epoch) && epoch == (double)(i + 1);
        e->epoch = i + 1;
        e->sparsity = -1.0; /* no pruning */
        e->has_val = cnn_json_get(o, "val_loss") != NULL;
        for (int j = 0; j < HISTORY_NUMBERS; j++) {
            const struct history_number *f = &history_numbers[j];
            if (!history_has(f, e->has_val, cnn_json_get(o, "sparsity") != NULL)) continue;
            ok = ok && json_num(o, f->key, (double *)((char *)e + f->offset));
        }
        if (!ok) {
            cnn_json_free(root);
            return cnn_error(CNN_ERR_FORMAT, "%s: metadata 'history': epoch %d is malformed", path, i + 1);
        }
    }
    cnn_json_free(root);
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// writing

/* A growing list of extra tensors and metadata whose strings and buffers the list owns. */
typedef struct ckpt_parts {
    cnn_st_entry *entries;
    int n;
    size_t cap;
    char **keys, **values;
    int nmeta;
    size_t keys_cap, values_cap;
    void **owned;
    int nowned;
    size_t owned_cap;
    int failed;
} ckpt_parts;

static void *own(ckpt_parts *p, void *ptr)
{
    if (!ptr) {
        p->failed = 1;
        return NULL;
    }
    if (cnn_array_grow(&p->owned, &p->owned_cap, (size_t)p->nowned + 1, sizeof *p->owned, 64) != CNN_OK) {
        free(ptr);
        p->failed = 1;
        return NULL;
    }
    p->owned[p->nowned++] = ptr;
    return ptr;
}

static char *own_string(ckpt_parts *p, const char *fmt, const char *a)
{
    size_t n = strlen(fmt) + strlen(a) + 1;
    char *s = own(p, malloc(n));
    if (s) snprintf(s, n, fmt, a);
    return s;
}

static void add_tensor(ckpt_parts *p, const char *name, cnn_dtype dtype, int ndim, const int64_t *shape,
                       const void *data)
{
    if (p->failed || !name) {
        p->failed = 1;
        return;
    }
    if (cnn_array_grow(&p->entries, &p->cap, (size_t)p->n + 1, sizeof *p->entries, 64) != CNN_OK) {
        p->failed = 1;
        return;
    }
    p->entries[p->n++] = (cnn_st_entry){name, dtype, ndim, shape, data};
}

static void add_meta(ckpt_parts *p, const char *key, const char *fmt, ...) CNN_PRINTF(3, 4);
static void add_meta(ckpt_parts *p, const char *key, const char *fmt, ...)
{
    if (p->failed) return;
    size_t need = (size_t)p->nmeta + 1;
    if (cnn_array_grow(&p->keys, &p->keys_cap, need, sizeof *p->keys, 32) != CNN_OK ||
        cnn_array_grow(&p->values, &p->values_cap, need, sizeof *p->values, 32) != CNN_OK) {
        p->failed = 1;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *v = len >= 0 ? own(p, malloc((size_t)len + 1)) : NULL;
    if (!v) {
        p->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(v, (size_t)len + 1, fmt, ap);
    va_end(ap);
    p->keys[p->nmeta] = (char *)key;
    p->values[p->nmeta++] = v;
}

static void parts_free(ckpt_parts *p)
{
    for (int i = 0; i < p->nowned; i++) free(p->owned[i]);
    CNN_FREE_ALL(p->owned, p->entries, p->keys, p->values);
}

/* Adds a host copy of tensor t as `name` (owned by the list). */
static cnn_status add_copy(ckpt_parts *p, const char *name, const cnn_tensor *t)
{
    size_t bytes = cnn_tensor_bytes(t);
    void *host = own(p, malloc(bytes ? bytes : 1));
    if (!host) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for %s", name ? name : "a checkpoint");
    cnn_status st = cnn_tensor_read(t, host, bytes);
    if (st == CNN_OK) add_tensor(p, name, t->dtype, t->ndim, t->shape, host);
    return st;
}

cnn_status cnn_checkpoint_write(const char *path, const cnn_net *net, const cnn_optimizer *opt,
                                const cnn_train_state *s, const cnn_train_config *cfg, const cnn_dataset *train)
{
    cnn_status st = CNN_OK;
    ckpt_parts p = {0};
    cnn_strbuf fp;
    cnn_strbuf_init(&fp);
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    char *history = NULL;

    // --- tensors: the optimizer's moments, the best weights
    for (int i = 0; i < opt->nparams; i++) {
        const char *name = opt->params[i]->name;
        if (opt->m[i]) CNN_TRY(add_copy(&p, own_string(&p, "optimizer/m/%s", name), opt->m[i]));
        if (opt->v[i]) CNN_TRY(add_copy(&p, own_string(&p, "optimizer/v/%s", name), opt->v[i]));
    }
    if (s->best_weights) {
        const float *src = s->best_weights;
        for (int i = 0; i < net->nlayers; i++)
            for (int j = 0; j < net->layers[i]->nparams + net->layers[i]->nstate; j++) {
                const cnn_param *pr = saved(net->layers[i], j);
                add_tensor(&p, own_string(&p, "best/%s", pr->name), CNN_F32, pr->value->ndim, pr->value->shape, src);
                src += cnn_tensor_numel(pr->value);
            }
    }
    for (int i = 0; s->pruner && i < cnn_pruner_masks(s->pruner); i++) {
        const cnn_param *pr;
        const uint8_t *mask = cnn_pruner_mask(s->pruner, i, &pr);
        add_tensor(&p, own_string(&p, "prune/mask/%s", pr->name), CNN_U8, pr->value->ndim, pr->value->shape, mask);
    }

    // --- metadata
    fingerprint(cfg, net, train, &fp);
    write_history(&w, s->history, s->epoch);
    size_t hlen;
    if ((st = cnn_json_writer_finish(&w, &history, &hlen)) != CNN_OK || fp.status != CNN_OK) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory writing %s", path);
        goto fail;
    }
    add_meta(&p, "checkpoint_version", "%s", CNN_CHECKPOINT_VERSION);
    add_meta(&p, "epoch", "%d", s->epoch);
    add_meta(&p, "epoch_started", "%d", s->epoch_started);
    add_meta(&p, "samples_done", "%lld", (long long)s->samples_done);
    add_meta(&p, "epoch_samples", "%lld", (long long)s->n);
    add_meta(&p, "step", "%" PRIu64, net->step);
    add_meta(&p, "net_seed", "%" PRIu64, net->seed); /* the layers' dropout seeds derive from it */
    add_meta(&p, "optimizer_step", "%lld", (long long)opt->step);
    add_meta(&p, "lr", "%.9g", (double)opt->lr);
    /* FP16's dynamic loss scale and its count of clean steps (1 and 0 in other precisions); the weights above are
     * the F32 master weights, their 16-bit copies are derived from them */
    add_meta(&p, "loss_scale", "%.9g", (double)net->loss_scale);
    add_meta(&p, "loss_scale_clean_steps", "%d", net->scale_clean_steps);
    add_meta(&p, "loss_sum", "%.17g", s->loss_sum);
    add_meta(&p, "correct", "%lld", (long long)s->correct);
    add_meta(&p, "seen", "%lld", (long long)s->seen);
    add_meta(&p, "plateau_scale", "%.9g", (double)s->plateau_scale);
    add_meta(&p, "plateau_best", "%.17g", s->plateau_best);
    add_meta(&p, "plateau_wait", "%d", s->plateau_wait);
    add_meta(&p, "best", "%.17g", s->best);
    add_meta(&p, "best_epoch", "%d", s->best_epoch);
    add_meta(&p, "wait", "%d", s->wait);
    add_meta(&p, "finished", "%d", s->finished);
    add_meta(&p, "frozen_layers", "%d", cnn_net_frozen_layers(net));
    add_meta(&p, "run_started", "%.17g", s->run_started);
    add_meta(&p, "history", "%s", history);
    add_meta(&p, "train_config", "%s", fp.data);
    if (cfg->run_args) add_meta(&p, "run_args", "%s", cfg->run_args);
    if (p.failed) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory writing %s", path);
        goto fail;
    }
    st = cnn_net_write_file(net, path, CNN_CHECKPOINT_FORMAT, p.entries, p.n, (const char *const *)p.keys,
                            (const char *const *)p.values, p.nmeta, 1);
fail:
    free(history);
    cnn_json_writer_free(&w);
    cnn_strbuf_free(&fp);
    parts_free(&p);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// reading

static cnn_status meta_i64(const cnn_st_file *f, const char *path, const char *key, int64_t lo, int64_t hi,
                           int64_t *out)
{
    const char *v = cnn_st_meta(f, key);
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi)
        return cnn_error(CNN_ERR_FORMAT, "%s: metadata '%s' is %s%s%s, not an integer from %lld to %lld", path, key,
                         v ? "'" : "missing", v ? v : "", v ? "'" : "", (long long)lo, (long long)hi);
    *out = x;
    return CNN_OK;
}

static cnn_status meta_int(const cnn_st_file *f, const char *path, const char *key, int lo, int hi, int *out)
{
    int64_t x = 0;
    cnn_status st = meta_i64(f, path, key, lo, hi, &x);
    if (st == CNN_OK) *out = (int)x;
    return st;
}

static cnn_status meta_double(const cnn_st_file *f, const char *path, const char *key, double *out)
{
    const char *v = cnn_st_meta(f, key);
    char *end;
    double x = v ? strtod(v, &end) : 0.0;
    if (!v || !*v || *end || isnan(x))
        return cnn_error(CNN_ERR_FORMAT, "%s: metadata '%s' is %s%s%s, not a number", path, key, v ? "'" : "missing",
                         v ? v : "", v ? "'" : "");
    *out = x;
    return CNN_OK;
}

/* Format, version and checksum of an open file. */
static cnn_status check_file(const cnn_st_file *f, const char *path)
{
    const char *format = cnn_st_meta(f, "format");
    if (!format || strcmp(format, CNN_CHECKPOINT_FORMAT))
        return cnn_error(CNN_ERR_FORMAT, "%s: not a cnn.c checkpoint (format %s%s%s)", path, format ? "\"" : "",
                         format ? format : "missing", format ? "\"" : "");
    const char *version = cnn_st_meta(f, "checkpoint_version");
    if (!version || strcmp(version, CNN_CHECKPOINT_VERSION))
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: checkpoint version %s; this cnn.c reads version " CNN_CHECKPOINT_VERSION,
                         path, version ? version : "missing");
    return cnn_file_verify_checksum(f, path);
}

static cnn_status read_info(const cnn_st_file *f, const char *path, cnn_checkpoint_info *info)
{
    cnn_status st = CNN_OK;
    int64_t step;
    CNN_TRY(meta_int(f, path, "epoch", 0, 10000000, &info->epoch));
    CNN_TRY(meta_i64(f, path, "epoch_samples", 1, INT64_MAX / 2, &info->epoch_samples));
    CNN_TRY(meta_i64(f, path, "samples_done", 0, info->epoch_samples, &info->samples_done));
    CNN_TRY(meta_i64(f, path, "step", 0, INT64_MAX, &step));
    CNN_TRY(meta_int(f, path, "finished", 0, 1, &info->finished));
    info->step = step;
fail:
    return st;
}

cnn_status cnn_checkpoint_verify(const char *path, const cnn_net *net, cnn_checkpoint_info *info)
{
    cnn_st_file *f = NULL;
    cnn_checkpoint_info tmp;
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_st_read(path, &f));
    CNN_TRY(check_file(f, path));
    CNN_TRY(read_info(f, path, info ? info : &tmp));
    const char *def = cnn_st_meta(f, "definition");
    if (net && (!def || strcmp(def, net->definition))) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "%s: holds another model than %s (its definition differs)", path,
                       net->source);
        goto fail;
    }
fail:
    cnn_st_free(f);
    return st;
}

cnn_status cnn_checkpoint_run_args(const char *path, char **out)
{
    cnn_st_file *f = NULL;
    cnn_status st = CNN_OK;
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_checkpoint_run_args: out is NULL");
    *out = NULL;
    CNN_TRY(cnn_st_read(path, &f));
    CNN_TRY(check_file(f, path));
    const char *args = cnn_st_meta(f, "run_args");
    if (args) {
        size_t len = strlen(args) + 1;
        if (!(*out = malloc(len))) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory reading %s", path);
            goto fail;
        }
        memcpy(*out, args, len);
    }
fail:
    cnn_st_free(f);
    return st;
}

cnn_status cnn_checkpoint_open(const char *path, cnn_net *net, const cnn_train_config *cfg,
                               const cnn_dataset *train, cnn_st_file **out)
{
    cnn_status st = CNN_OK;
    cnn_st_file *f = NULL;
    cnn_strbuf fp;
    cnn_strbuf_init(&fp);
    *out = NULL;
    CNN_TRY(cnn_st_read(path, &f));
    CNN_TRY(check_file(f, path));
    const char *def = cnn_st_meta(f, "definition"), *stored = cnn_st_meta(f, "train_config");
    if (!def || strcmp(def, net->definition)) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "%s: holds another model than %s (its definition differs): resume "
                                            "needs the model the checkpoint was written with", path, net->source);
        goto fail;
    }
    fingerprint(cfg, net, train, &fp);
    if (fp.status != CNN_OK) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    if (!stored) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: metadata 'train_config' is missing", path);
        goto fail;
    }
    CNN_TRY(compare_fingerprints(path, stored, fp.data));
    int frozen;
    CNN_TRY(meta_int(f, path, "frozen_layers", 0, net->nlayers, &frozen));
    CNN_TRY(cnn_net_freeze_count(net, frozen));
    CNN_TRY(cnn_net_read_tensors(net, f, path));
    *out = f;
    f = NULL;
fail:
    cnn_strbuf_free(&fp);
    cnn_st_free(f);
    return st;
}

/* Copies the file's tensor `name` into t, which it must match in dtype and shape. */
static cnn_status restore_tensor(const cnn_st_file *f, const char *path, const char *name, cnn_tensor *t)
{
    const cnn_st_tensor *s = cnn_st_find(f, name);
    if (!s) return cnn_error(CNN_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
    int same = s->dtype == t->dtype && s->ndim == t->ndim;
    for (int d = 0; same && d < s->ndim; d++) same = s->shape[d] == t->shape[d];
    if (!same) return cnn_error(CNN_ERR_SHAPE, "%s: tensor '%s' does not have the shape of the state it restores", path, name);
    return cnn_tensor_write(t, cnn_st_data(f, s), s->nbytes);
}

cnn_status cnn_checkpoint_restore(const cnn_st_file *f, const char *path, cnn_net *net, cnn_optimizer *opt,
                                  cnn_train_state *s, const cnn_train_config *cfg)
{
    cnn_status st = CNN_OK;
    char name[CNN_NAME_MAX + 16];
    for (int i = 0; i < opt->nparams; i++) {
        if (opt->m[i]) {
            snprintf(name, sizeof name, "optimizer/m/%s", opt->params[i]->name);
            CNN_TRY(restore_tensor(f, path, name, opt->m[i]));
        }
        if (opt->v[i]) {
            snprintf(name, sizeof name, "optimizer/v/%s", opt->params[i]->name);
            CNN_TRY(restore_tensor(f, path, name, opt->v[i]));
        }
    }
    cnn_checkpoint_info info;
    CNN_TRY(read_info(f, path, &info));
    if (info.epoch > cfg->epochs) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "%s: %d epochs are done already, more than the %d asked for", path,
                       info.epoch, cfg->epochs);
        goto fail;
    }
    s->epoch = info.epoch;
    s->samples_done = info.samples_done;
    s->finished = info.finished;
    net->step = (uint64_t)info.step;
    int64_t ostep = 0, correct = 0, nseen = 0;
    double plateau_scale = 1.0;
    CNN_TRY(meta_int(f, path, "epoch_started", 0, 1, &s->epoch_started));
    CNN_TRY(meta_i64(f, path, "optimizer_step", 0, INT64_MAX, &ostep));
    CNN_TRY(meta_double(f, path, "loss_sum", &s->loss_sum));
    CNN_TRY(meta_i64(f, path, "correct", 0, info.epoch_samples, &correct));
    CNN_TRY(meta_i64(f, path, "seen", 0, info.epoch_samples, &nseen));
    CNN_TRY(meta_double(f, path, "plateau_scale", &plateau_scale));
    CNN_TRY(meta_double(f, path, "plateau_best", &s->plateau_best));
    CNN_TRY(meta_int(f, path, "plateau_wait", 0, INT32_MAX, &s->plateau_wait));
    CNN_TRY(meta_double(f, path, "best", &s->best));
    CNN_TRY(meta_int(f, path, "best_epoch", 0, info.epoch, &s->best_epoch));
    CNN_TRY(meta_int(f, path, "wait", 0, INT32_MAX, &s->wait));
    CNN_TRY(meta_double(f, path, "run_started", &s->run_started));
    double loss_scale = 1.0;
    CNN_TRY(meta_double(f, path, "loss_scale", &loss_scale));
    CNN_TRY(meta_int(f, path, "loss_scale_clean_steps", 0, INT32_MAX, &net->scale_clean_steps));
    if (!(loss_scale > 0.0) || !isfinite(loss_scale)) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: metadata 'loss_scale' must be a positive number", path);
        goto fail;
    }
    net->loss_scale = (float)loss_scale;
    opt->step = ostep;
    s->correct = correct;
    s->seen = nseen;
    s->plateau_scale = (float)plateau_scale;
    const char *seed_text = cnn_st_meta(f, "net_seed");
    char *seed_end;
    errno = 0;
    unsigned long long net_seed = seed_text ? strtoull(seed_text, &seed_end, 10) : 0;
    if (!seed_text || !*seed_text || *seed_end || errno) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: metadata 'net_seed' is missing or not a number", path);
        goto fail;
    }
    cnn_net_set_seed(net, net_seed);
    if (s->pruner) CNN_TRY(cnn_pruner_restore(s->pruner, f, path));
    // --- history, best weights
    const char *history = cnn_st_meta(f, "history");
    if (!history) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: metadata 'history' is missing", path);
        goto fail;
    }
    CNN_TRY(read_history(path, history, s->history, cfg->epochs, s->epoch));
    if (cfg->restore_best_weights && s->best_epoch > 0) {
        int any = 0;
        for (int i = 0; i < f->count && !any; i++) any = !strncmp(f->tensors[i].name, "best/", 5);
        if (any) {
            s->best_weights_len = cnn_net_saved_floats(net);
            s->best_weights = malloc((size_t)(s->best_weights_len ? s->best_weights_len : 1) * sizeof(float));
            if (!s->best_weights) {
                st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the best weights");
                goto fail;
            }
            float *dst = s->best_weights;
            for (int i = 0; i < net->nlayers; i++)
                for (int j = 0; j < net->layers[i]->nparams + net->layers[i]->nstate; j++) {
                    const cnn_param *pr = saved(net->layers[i], j);
                    snprintf(name, sizeof name, "best/%s", pr->name);
                    const cnn_st_tensor *b = cnn_st_find(f, name);
                    if (!b || b->dtype != CNN_F32 || b->nbytes != cnn_tensor_bytes(pr->value)) {
                        st = cnn_error(CNN_ERR_FORMAT, "%s: tensor '%s' is missing or has another size", path, name);
                        goto fail;
                    }
                    memcpy(dst, cnn_st_data(f, b), b->nbytes);
                    dst += cnn_tensor_numel(pr->value);
                }
        }
    }
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the directory

/* The step of "ckpt-<digits>.safetensors", or -1 for any other name. */
static int64_t ckpt_step(const char *name)
{
    size_t len = strlen(name), pl = strlen(CKPT_PREFIX), sl = strlen(CKPT_SUFFIX);
    if (len <= pl + sl || strncmp(name, CKPT_PREFIX, pl) || strcmp(name + len - sl, CKPT_SUFFIX)) return -1;
    int64_t step = 0;
    for (size_t i = pl; i < len - sl; i++) {
        if (name[i] < '0' || name[i] > '9' || step > INT64_MAX / 10 - 10) return -1;
        step = step * 10 + (name[i] - '0');
    }
    return step;
}

typedef struct candidate {
    char *path;
    int64_t step;
    int epoch;  /* tie-break: later epoch first (best.safetensors is written after the epoch's last step) */
} candidate;

static int cmp_candidate(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return (x->epoch < y->epoch) - (x->epoch > y->epoch);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

cnn_status cnn_checkpoint_find(const char *dir, const cnn_net *net, FILE *log, char **path, cnn_checkpoint_info *info)
{
    cnn_status st = CNN_OK;
    candidate *c = NULL;
    int n = 0, refused = 0;
    size_t cap = 0;
    *path = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        int err = errno;
        return cnn_error(err == ENOENT ? CNN_ERR_NOT_FOUND : CNN_ERR_IO, "%s: cannot open the checkpoint directory: %s",
                         dir, strerror(err));
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t step = ckpt_step(e->d_name);
        int best = !strcmp(e->d_name, BEST_NAME);
        if (step < 0 && !best) continue;
        CNN_TRY(cnn_array_grow(&c, &cap, (size_t)n + 1, sizeof *c, 16));
        c[n] = (candidate){join(dir, e->d_name), step, -1};
        if (!c[n].path) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
            goto fail;
        }
        n++;
    }
    /* the best checkpoint's place in the order comes from its contents */
    for (int i = 0; i < n; i++) {
        if (c[i].step >= 0) continue;
        cnn_checkpoint_info bi;
        if (cnn_checkpoint_verify(c[i].path, net, &bi) == CNN_OK) {
            c[i].step = bi.step;
            c[i].epoch = bi.epoch;
        } else {
            if (log) fprintf(log, "cnn: refusing checkpoint %s\n", cnn_last_error());
            refused++;
            free(c[i].path);
            c[i--] = c[--n];
        }
    }
    if (n > 1) qsort(c, (size_t)n, sizeof *c, cmp_candidate);
    for (int i = 0; i < n; i++) {
        cnn_checkpoint_info ci;
        if (cnn_checkpoint_verify(c[i].path, net, &ci) == CNN_OK) {
            *path = c[i].path;
            c[i].path = NULL;
            if (info) *info = ci;
            goto fail; /* found: clean up the rest */
        }
        if (log) fprintf(log, "cnn: refusing checkpoint %s; trying the previous one\n", cnn_last_error());
        refused++;
    }
    st = cnn_error(CNN_ERR_NOT_FOUND, "%s: no valid checkpoint (%d refused)", dir, refused);
fail:
    closedir(d);
    for (int i = 0; i < n; i++) free(c[i].path);
    free(c);
    return st;
}

typedef struct kept_file {
    char *name;
    int64_t step;
} kept_file;

static int cmp_kept(const void *a, const void *b)
{
    const kept_file *x = a, *y = b;
    return (x->step < y->step) - (x->step > y->step); /* newest first */
}

cnn_status cnn_checkpoint_prune(const char *dir, int64_t step, int keep)
{
    cnn_status st = CNN_OK;
    kept_file *files = NULL;
    int n = 0;
    size_t cap = 0;
    DIR *d = opendir(dir);
    if (!d) {
        int err = errno;
        return cnn_error(CNN_ERR_IO, "%s: cannot list the checkpoint directory: %s", dir, strerror(err));
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        int64_t s = ckpt_step(name);
        char *p = NULL, *q = NULL;
        if (s < 0) {
            /* a temporary file of a writer that was killed: PATH.tmp-PID-N (cnn_write_file_atomic) */
            if ((!strncmp(name, CKPT_PREFIX, strlen(CKPT_PREFIX)) || !strncmp(name, BEST_NAME, strlen(BEST_NAME))) &&
                strstr(name, CKPT_SUFFIX ".tmp-") && (p = join(dir, name)))
                unlink(p);
        } else if (s > step) {
            /* written by a run that was rewound past it (it was refused on resume): set aside, not resumed from */
            p = join(dir, name);
            q = p ? malloc(strlen(p) + sizeof ".stale") : NULL;
            if (q) {
                sprintf(q, "%s.stale", p);
                rename(p, q);
            }
        } else {
            CNN_TRY(cnn_array_grow(&files, &cap, (size_t)n + 1, sizeof *files, 16));
            files[n].name = join(dir, name);
            files[n].step = s;
            if (!files[n++].name) {
                st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
                goto fail;
            }
        }
        free(p);
        free(q);
    }
    if (n > 1) qsort(files, (size_t)n, sizeof *files, cmp_kept);
    for (int i = keep; i < n; i++)
        if (unlink(files[i].name) != 0 && errno != ENOENT) {
            int err = errno;
            st = cnn_error(CNN_ERR_IO, "%s: cannot remove an old checkpoint: %s", files[i].name, strerror(err));
        }
fail:
    closedir(d);
    for (int i = 0; i < n; i++) free(files[i].name);
    free(files);
    return st;
}
