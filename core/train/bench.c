/* Benchmarking a network on synthetic data (include/cnn/bench.h): timed training steps and inference calls,
 * per-layer times from the network's profiling hook, FLOP counts of convolutions and dense layers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/bench.h"
#include "core/error.h"
#include "core/names.h"
#include "core/nn/optim.h"
#include "core/progress.h"

void cnn_bench_config_defaults(cnn_bench_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->batch = 64;
    cfg->modes = CNN_BENCH_TRAIN | CNN_BENCH_INFER;
    cfg->warmup = 3;
    cfg->iters = 10;
    cfg->repeats = 5;
    cfg->seed = 1;
    cfg->optimizer = CNN_OPTIM_ADAM;
}

static const char *const modes_names[] = {NULL, "train", "infer", "both"}; /* the bit sets 1, 2 and 3 */
_Static_assert(CNN_BENCH_TRAIN == 1 && CNN_BENCH_INFER == 2, "modes_names is indexed by the bit set");
CNN_NAME_TABLE_FUNCTIONS(cnn_bench_modes_parse, cnn_bench_modes_name, int, modes_names, "train, infer, both")

void cnn_bench_result_destroy(cnn_bench_result *r)
{
    if (!r) return;
    free(r->layers);
    free(r);
}

// ---------------------------------------------------------------------------------------------------------------
// helpers

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (sorts v). */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double min_of(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
    return m;
}

/* Forward and backward GFLOP of layer i for a batch of n: 2 x multiply-adds of convolutions and dense layers.
 * Backward is the weights' gradient plus the input's when the network computes it (not for the first layer). */
static void layer_gflop(const cnn_net *net, int i, int n, double *fwd, double *bwd)
{
    const cnn_layer *l = net->layers[i];
    double macs = 0.0;
    if (l->ops == &cnn_conv_layer_ops) {
        const cnn_conv_layer *c = (const cnn_conv_layer *)l;
        macs = (double)n * (double)(l->out.d[0] * l->out.d[1] * l->out.d[2]) * c->kernel_h * c->kernel_w *
               (double)(l->in.d[2] / c->groups);
    } else if (l->ops == &cnn_dense_layer_ops) {
        int64_t in = 1;
        for (int d = 0; d < l->in.ndim; d++) in *= l->in.d[d];
        macs = (double)n * (double)in * (double)l->out.d[0];
    }
    int src = l->inputs[0];
    int data = src >= 0 && net->grads && net->grads[src];
    *fwd = 2.0 * macs * 1e-9;
    *bwd = (1.0 + data) * *fwd;
}

static cnn_status sync_clock(cnn_net *net, double *now)
{
    cnn_status st = cnn_backend_sync(net->backend);
    *now = cnn_now_seconds();
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the steps

static cnn_status train_step(cnn_net *net, cnn_optimizer *opt, double *loss_s, double *opt_s)
{
    cnn_status st = CNN_OK;
    double t0 = 0.0, t1 = 0.0, t2 = 0.0;
    CNN_TRY(cnn_net_forward(net, 1));
    if (loss_s) CNN_TRY(sync_clock(net, &t0));
    CNN_TRY(cnn_net_loss(net, 1));
    if (loss_s) CNN_TRY(sync_clock(net, &t1));
    CNN_TRY(cnn_net_backward(net));
    if (opt_s) CNN_TRY(sync_clock(net, &t2));
    CNN_TRY(cnn_train_update(net, opt, 0.0f, NULL)); /* fp16: with the trainer's overflow check and loss scale */
    net->step++;
    if (loss_s) *loss_s = t1 - t0;
    if (opt_s) {
        double t3;
        CNN_TRY(sync_clock(net, &t3));
        *opt_s = t3 - t2;
    }
fail:
    return st;
}

static cnn_status infer_step(cnn_net *net, double *loss_s)
{
    cnn_status st = CNN_OK;
    double t0 = 0.0, t1;
    CNN_TRY(cnn_net_forward(net, 0));
    if (loss_s) CNN_TRY(sync_clock(net, &t0));
    CNN_TRY(cnn_net_loss(net, 0)); /* the softmax: what prediction returns */
    if (loss_s) {
        CNN_TRY(sync_clock(net, &t1));
        *loss_s = t1 - t0;
    }
fail:
    return st;
}

/* Per-layer medians over cfg->iters profiled steps of the given mode into r->layers. */
/* The per-layer table's type for the optimizer row, in the Keras style of the layer types. */
static const char *optimizer_type(cnn_optimizer_kind k)
{
    switch (k) {
    case CNN_OPTIM_SGD: return "SGD";
    case CNN_OPTIM_ADAMW: return "AdamW";
    case CNN_OPTIM_RMSPROP: return "RMSprop";
    default: return "Adam";
    }
}

static cnn_status profile(cnn_net *net, cnn_optimizer *opt, const cnn_bench_config *cfg, int train,
                          cnn_bench_result *r)
{
    cnn_status st = CNN_OK;
    int nl = net->nlayers, it = cfg->iters, rows = 0;
    /* samples: [iters][nlayers + 2] forward and backward seconds; the last two columns are loss and optimizer */
    size_t cells = (size_t)it * (size_t)(nl + 2);
    double *fwd = calloc(cells, sizeof *fwd), *bwd = calloc(cells, sizeof *bwd);
    double *col = malloc((size_t)it * sizeof *col);
    r->layers = calloc((size_t)nl + 2, sizeof *r->layers);
    if (!fwd || !bwd || !col || !r->layers) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for per-layer times");
        goto fail;
    }
    for (int s = 0; s < it; s++) {
        double *f = fwd + (size_t)s * (nl + 2), *b = bwd + (size_t)s * (nl + 2);
        net->prof_fwd = f;
        net->prof_bwd = train ? b : NULL;
        st = train ? train_step(net, opt, &f[nl], &b[nl + 1]) : infer_step(net, &f[nl]);
        net->prof_fwd = net->prof_bwd = NULL;
        if (st != CNN_OK) goto fail;
    }
    for (int i = 0; i < nl + 2; i++) {
        if (i == nl + 1 && !train) break;
        cnn_bench_layer *L = &r->layers[rows];
        if (i < nl) {
            const cnn_layer *l = net->layers[i];
            if (cnn_layer_is_view(l)) continue;
            snprintf(L->name, sizeof L->name, "%s", l->name);
            snprintf(L->type, sizeof L->type, "%s", l->ops->type_name);
            layer_gflop(net, i, net->batch, &L->fwd_gflop, &L->bwd_gflop);
            if (!train) L->bwd_gflop = 0.0;
        } else {
            snprintf(L->name, sizeof L->name, "%s", i == nl ? "loss" : "optimizer");
            snprintf(L->type, sizeof L->type, "%s", i == nl ? "SoftmaxCrossEntropy" : optimizer_type(cfg->optimizer));
        }
        for (int s = 0; s < it; s++) col[s] = fwd[(size_t)s * (nl + 2) + i];
        L->fwd_ms = 1e3 * median(col, it);
        for (int s = 0; s < it; s++) col[s] = bwd[(size_t)s * (nl + 2) + i];
        L->bwd_ms = train ? 1e3 * median(col, it) : -1.0;
        if (i == nl + 1) { /* the optimizer only has an update: show it as backward work */
            L->fwd_ms = 0.0;
        }
        rows++;
    }
    r->nlayers = rows;
fail:
    free(fwd);
    free(bwd);
    free(col);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the benchmark

static cnn_status check_config(const cnn_net *net, const cnn_bench_config *c)
{
    int k = cnn_net_num_outputs(net);
    if (c->batch < 1 || c->iters < 1 || c->repeats < 1 || c->warmup < 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "batch (%d), iterations (%d) and repeats (%d) must be at least 1 "
                                              "and warm-up (%d) at least 0", c->batch, c->iters, c->repeats, c->warmup);
    if (!(c->modes & (CNN_BENCH_TRAIN | CNN_BENCH_INFER)) || (c->modes & ~(CNN_BENCH_TRAIN | CNN_BENCH_INFER)))
        return cnn_error(CNN_ERR_INVALID_ARG, "modes must be training, inference or both (got %d)", c->modes);
    if (c->classes < 0 || c->classes > k)
        return cnn_error(CNN_ERR_INVALID_ARG, "%d classes asked of a model with %d outputs", c->classes, k);
    if ((unsigned)c->optimizer > CNN_OPTIM_RMSPROP)
        return cnn_error(CNN_ERR_INVALID_ARG, "unknown optimizer (%d)", (int)c->optimizer);
    return CNN_OK;
}

cnn_status cnn_bench_run(cnn_net *net, const cnn_bench_config *cfg, cnn_bench_result **out)
{
    cnn_status st = CNN_OK;
    cnn_optimizer *opt = NULL;
    cnn_bench_result *r = NULL;
    float *images = NULL;
    int32_t *labels = NULL;
    double *times = NULL;
    float *losses = NULL;
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_bench_run: out is NULL");
    *out = NULL;
    if (!net || !cfg) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_bench_run: NULL net or config");
    CNN_TRY(check_config(net, cfg));
    /* what the run will allocate must fit before anything is: a training step with the optimizer's state (made
     * from cnn_train_config_defaults, as below), or inference */
    const int training = (cfg->modes & CNN_BENCH_TRAIN) != 0;
    cnn_train_config defaults;
    cnn_train_config_defaults(&defaults);
    const int slots = cnn_optimizer_slots(cfg->optimizer, defaults.momentum);
    CNN_TRY(cnn_net_check_memory(net, cfg->batch, training, slots));
    cnn_net_set_memory_use(net, training, slots);
    int h, w, c, n = cfg->batch;
    cnn_net_input_shape(net, &h, &w, &c);
    int classes = cfg->classes ? cfg->classes : cnn_net_num_outputs(net);
    size_t per = (size_t)h * w * c;
    r = calloc(1, sizeof *r);
    images = malloc((size_t)n * per * sizeof *images);
    labels = malloc((size_t)n * sizeof *labels);
    int ntimes = cfg->iters * cfg->repeats;
    times = malloc((size_t)(ntimes > cfg->repeats ? ntimes : cfg->repeats) * sizeof *times);
    losses = malloc((size_t)n * sizeof *losses);
    if (!r || !images || !labels || !times || !losses) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a batch of %d", n);
        goto fail;
    }
    r->batch = n;
    r->classes = classes;
    cnn_rng rng;
    cnn_rng_seed(&rng, cfg->seed);
    for (size_t i = 0; i < (size_t)n * per; i++) images[i] = cnn_rng_uniform(&rng);
    for (int i = 0; i < n; i++) labels[i] = (int32_t)cnn_rng_below(&rng, (uint32_t)classes);
    cnn_dataset ds = {.n = n, .h = h, .w = w, .c = c, .images = images, .labels = labels, .num_classes = classes};
    CNN_TRY(cnn_net_stage_batch(net, &ds, NULL, 0, n));
    for (int i = 0; i < net->nlayers; i++) {
        double f, b;
        layer_gflop(net, i, n, &f, &b);
        r->fwd_gflop += f;
        r->train_gflop += f + b;
    }

    if (cfg->modes & CNN_BENCH_TRAIN) {
        cnn_train_config tc;
        cnn_train_config_defaults(&tc); /* lr 1e-3, SGD momentum 0.9, Adam's betas and eps */
        tc.optimizer = cfg->optimizer;
        tc.progress = NULL;
        CNN_TRY(cnn_optimizer_create(net, &tc, &opt));
        for (int s = 0; s < cfg->warmup; s++) CNN_TRY(train_step(net, opt, NULL, NULL));
        double t0, t1;
        for (int rep = 0; rep < cfg->repeats; rep++) {
            CNN_TRY(sync_clock(net, &t0));
            for (int s = 0; s < cfg->iters; s++) CNN_TRY(train_step(net, opt, NULL, NULL));
            CNN_TRY(sync_clock(net, &t1));
            times[rep] = (t1 - t0) / cfg->iters;
        }
        r->train_step_ms_min = 1e3 * min_of(times, cfg->repeats);
        r->train_step_ms_median = 1e3 * median(times, cfg->repeats);
        r->train_images_per_sec = n / (1e-3 * r->train_step_ms_median);
        r->ran_train = 1;
        /* the last step's losses (before its update): a finite mean says real numbers went through */
        CNN_TRY(cnn_tensor_read(net->losses, losses, (size_t)n * sizeof *losses));
        double sum = 0.0;
        for (int i = 0; i < n; i++) sum += losses[i];
        r->train_loss = sum / n;
    }
    if (cfg->modes & CNN_BENCH_INFER) {
        for (int s = 0; s < cfg->warmup; s++) CNN_TRY(infer_step(net, NULL));
        double t0, t1;
        for (int s = 0; s < ntimes; s++) {
            CNN_TRY(sync_clock(net, &t0));
            CNN_TRY(infer_step(net, NULL));
            CNN_TRY(sync_clock(net, &t1));
            times[s] = t1 - t0;
        }
        r->infer_ms_min = 1e3 * min_of(times, ntimes);
        r->infer_ms_median = 1e3 * median(times, ntimes);
        r->infer_images_per_sec = n / (1e-3 * r->infer_ms_median);
        r->ran_infer = 1;
    }
    if (cfg->per_layer) CNN_TRY(profile(net, opt, cfg, r->ran_train, r));
    *out = r;
    r = NULL;
fail:
    cnn_net_set_memory_use(net, 0, 0);
    if (st != CNN_OK) st = cnn_error_prefix(st, "bench: ");
    cnn_optimizer_destroy(opt);
    cnn_bench_result_destroy(r);
    free(images);
    free(labels);
    free(times);
    free(losses);
    return st;
}
