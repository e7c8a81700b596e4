/* The gradient average of core/train/dist.c on 2 ranks, run by test_dist under mpirun: each rank sets known gradients on
 * a small network's parameters and checks what cnn_dist_reduce_grads leaves: the average weighted by the ranks'
 * image counts; a rank without images adds nothing (even with NaN in its stale gradients); an infinity in each
 * gradient of one rank reaches every rank (so the mixed-precision overflow check skips the step everywhere); a step without any image
 * is no step; small buckets (several in flight in turn) and --deterministic's rank-order sums give the same
 * numbers as one bucket. --sync-batchnorm (core/train/dist_bn.c): 2 ranks of 4 images give the gradients and running
 * statistics of one process of all 8 (to float rounding; the one-process batchnorm gradient is itself checked by
 * finite differences in test_gradcheck), through a batchnorm with a fused ReLU whose input gradient feeds the
 * conv before it; without it they differ. cnn_dist_evaluate_source: each rank evaluates its own part of the set
 * alone (the other part of each rank's copy is spoiled, and the metrics are still those of the true set), and
 * the sums give one process's metrics, for an odd count and for a set smaller than the ranks. Prints "rank R: ok" and exits 0, or names the first failure and exits
 * 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn.h"
#include "cnn/dist.h"
#include "core/nn/layer.h"
#include "core/nn/optim.h"
#include "core/train/dist.h"

static const char *MODEL = "input 6 6 1\nconv 4 3 relu\nflatten\ndense 3 softmax\n";

static const char *MODEL_BN = "input 6 6 2\nconv 4 3 padding=same bias=no\nbatchnorm relu\nflatten\ndense 3 softmax\n";

/* the same with a smooth activation, for finite differences (ReLU's kink lies within a step of some inputs) */
static const char *MODEL_BN_SMOOTH =
    "input 6 6 2\nconv 4 3 padding=same bias=no\nbatchnorm tanh\nflatten\ndense 3 softmax\n";

/* several layers with weights, for buckets that start during backward */
static const char *MODEL_DEEP = "input 6 6 2\nconv 4 3 padding=same relu\nconv 6 3 relu\nflatten\ndense 8 relu\n"
                                "dense 3 softmax\n";

static int rank_, failures;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "rank %d: FAILED %s: ", rank_, #cond);    \
            fprintf(stderr, __VA_ARGS__);                             \
            fprintf(stderr, "\n");                                    \
            failures++;                                               \
        }                                                             \
    } while (0)

/* The value rank r puts at element i of parameter p. */
static float grad_value(int r, int p, size_t i) { return (float)(r + 1) * 0.001f * (float)((i * 7 + (size_t)p * 13) % 97 + 1); }

static void set_grads(cnn_optimizer *opt, int r, float poison)
{
    for (int p = 0; p < opt->nparams; p++) {
        cnn_tensor *g = opt->params[p]->grad;
        size_t n = (size_t)cnn_tensor_numel(g);
        float *v = malloc(n * sizeof *v);
        for (size_t i = 0; i < n; i++) v[i] = grad_value(r, p, i);
        if (poison != 0.0f) v[n / 2] = poison;
        cnn_tensor_write(g, v, n * sizeof *v);
        free(v);
    }
}

/* All gradients, concatenated. */
static float *get_grads(cnn_optimizer *opt, size_t *total)
{
    size_t all = 0;
    for (int p = 0; p < opt->nparams; p++) all += (size_t)cnn_tensor_numel(opt->params[p]->grad);
    float *v = malloc(all * sizeof *v), *at = v;
    for (int p = 0; p < opt->nparams; p++) {
        size_t n = (size_t)cnn_tensor_numel(opt->params[p]->grad);
        cnn_tensor_read(opt->params[p]->grad, at, n * sizeof *at);
        at += n;
    }
    *total = all;
    return v;
}

/* Every case on one context; `out` (may be NULL) receives the weighted case's result for comparisons. */
static void run_cases(cnn_dist *d, cnn_optimizer *opt, const char *name, float **out, size_t *total)
{
    int r = cnn_dist_rank(d), update = -1;
    /* weighted: rank 0 had 3 images, rank 1 one: (3 g0 + g1) / 4 */
    set_grads(opt, r, 0.0f);
    cnn_status st = cnn_dist_reduce_grads(d, opt, r == 0 ? 3 : 1, &update);
    CHECK(st == CNN_OK, "%s: %s", name, cnn_last_error());
    CHECK(update == 1, "%s: update %d", name, update);
    float *v = get_grads(opt, total);
    size_t at = 0;
    double worst = 0.0;
    for (int p = 0; p < opt->nparams; p++) {
        size_t n = (size_t)cnn_tensor_numel(opt->params[p]->grad);
        for (size_t i = 0; i < n; i++, at++) {
            double want = (3.0 * grad_value(0, p, i) + grad_value(1, p, i)) / 4.0;
            double rel = fabs(v[at] - want) / fabs(want);
            if (rel > worst) worst = rel;
        }
    }
    CHECK(worst < 1e-6, "%s: weighted average off by %g (relative)", name, worst);
    if (out) *out = v;
    else free(v);

    /* rank 1 has no image and NaN in its stale gradients: the result is rank 0's, exactly */
    set_grads(opt, r, r == 1 ? NAN : 0.0f);
    st = cnn_dist_reduce_grads(d, opt, r == 0 ? 5 : 0, &update);
    CHECK(st == CNN_OK && update == 1, "%s: %s", name, cnn_last_error());
    v = get_grads(opt, total);
    at = 0;
    int exact = 1;
    for (int p = 0; p < opt->nparams; p++) {
        size_t n = (size_t)cnn_tensor_numel(opt->params[p]->grad);
        for (size_t i = 0; i < n; i++, at++) exact &= v[at] == grad_value(0, p, i);
    }
    CHECK(exact, "%s: a rank without images changed the average", name);
    free(v);

    /* an overflow on rank 1 only: every rank sees a non-finite gradient, so every rank skips the step */
    set_grads(opt, r, r == 1 ? INFINITY : 0.0f);
    st = cnn_dist_reduce_grads(d, opt, 2, &update);
    CHECK(st == CNN_OK && update == 1, "%s: %s", name, cnn_last_error());
    /* (what the loss scaler's check, cnn_optimizer_grads_finite, looks for; the CPU backend has no 16-bit training
     * and so no such op: the gradients are read here) */
    v = get_grads(opt, total);
    int nonfinite = 0;
    for (size_t i = 0; i < *total; i++) nonfinite += !isfinite(v[i]);
    free(v);
    CHECK(nonfinite == opt->nparams, "%s: rank %d sees %d non-finite gradients after rank 1 overflowed in %d", name, r,
          nonfinite, opt->nparams);

    /* no image anywhere: no step */
    st = cnn_dist_reduce_grads(d, opt, 0, &update);
    CHECK(st == CNN_OK && update == 0, "%s: update %d without images", name, update);

    /* the metric sums: in rank order, the same everywhere */
    double m[2] = {r + 0.5, 10.0 * r};
    st = cnn_dist_sum(d, m, 2, "test sums");
    CHECK(st == CNN_OK && m[0] == 2.0 && m[1] == 10.0, "%s: sums %g %g", name, m[0], m[1]);
}

/* The gradients of all parameters and the running statistics of every layer, after one training step's forward
 * and backward on images [first, first + n) of 8 (and, with d, the gradient reduction over the ranks). */
static float *bn_step(cnn_backend *cpu, cnn_dist *d, cnn_dist *sync, int first, int n, size_t *total, size_t *ngrads)
{
    enum { IMAGES = 8, PIX = 6 * 6 * 2 };
    float images[IMAGES * PIX];
    int32_t labels[IMAGES];
    for (int i = 0; i < IMAGES * PIX; i++) images[i] = 0.5f + 0.4f * sinf(0.37f * (float)i) + 0.01f * (float)(i % 13);
    for (int i = 0; i < IMAGES; i++) labels[i] = i % 3;
    cnn_net *net = NULL;
    cnn_optimizer *opt = NULL;
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    float *v = NULL;
    int update = 0;
    cnn_status st = cnn_net_from_text(MODEL_BN, "selftest-bn", cpu, 5, &net);
    if (st == CNN_OK) st = cnn_dist_broadcast_net(d, net, 0);
    if (st == CNN_OK) st = cnn_dist_attach_net(sync, net);
    if (st == CNN_OK) st = cnn_net_set_batch(net, n);
    if (st == CNN_OK) st = cnn_optimizer_create(net, &cfg, &opt);
    if (st == CNN_OK) st = cnn_net_stage_host(net, images + (size_t)first * PIX, labels + first, n);
    if (st == CNN_OK) st = cnn_net_forward(net, 1);
    if (st == CNN_OK) st = cnn_net_loss(net, 1);
    if (st == CNN_OK) st = cnn_net_backward(net);
    if (st == CNN_OK && d) st = cnn_dist_reduce_grads(d, opt, n, &update);
    CHECK(st == CNN_OK, "sync batchnorm step: %s", cnn_last_error());
    if (st == CNN_OK) {
        size_t grads = 0, all;
        float *g = get_grads(opt, &grads);
        *ngrads = grads;
        all = grads;
        for (int i = 0; i < net->nlayers; i++)
            for (int k = 0; k < net->layers[i]->nstate; k++) all += (size_t)cnn_tensor_numel(net->layers[i]->state[k].value);
        v = realloc(g, all * sizeof *v);
        float *at = v + grads;
        for (int i = 0; v && i < net->nlayers; i++)
            for (int k = 0; k < net->layers[i]->nstate; k++) {
                cnn_tensor *t = net->layers[i]->state[k].value;
                cnn_tensor_read(t, at, (size_t)cnn_tensor_numel(t) * sizeof *at);
                at += cnn_tensor_numel(t);
            }
        *total = all;
    }
    cnn_dist_detach_net(net);
    cnn_optimizer_destroy(opt);
    cnn_net_destroy(net);
    return v;
}

/* The largest |a - b| over the largest |b|. */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)a[i] - b[i]) > diff) diff = fabs((double)a[i] - b[i]);
        if (fabs((double)b[i]) > scale) scale = fabs((double)b[i]);
    }
    return scale > 0.0 ? diff / scale : diff;
}

/* The global loss (the mean over both ranks' images) of a training forward. */
static double global_loss(cnn_dist *d, cnn_net *net, int n)
{
    float losses[8];
    double v[2] = {0.0, (double)n};
    if (cnn_net_forward(net, 1) != CNN_OK || cnn_net_loss(net, 0) != CNN_OK ||
        cnn_tensor_read(net->losses, losses, (size_t)n * sizeof *losses) != CNN_OK)
        return NAN;
    for (int i = 0; i < n; i++) v[0] += losses[i];
    if (cnn_dist_sum(d, v, 2, "the global loss") != CNN_OK) return NAN;
    return v[0] / v[1];
}

/* --sync-batchnorm's gradient of the conv weights before the batchnorm (through its dx correction), against
 * central differences of the global loss over both ranks' images. */
static void sync_batchnorm_finite_differences(cnn_backend *cpu, cnn_dist *sync)
{
    enum { N = 4, PIX = 6 * 6 * 2 };
    float images[2 * N * PIX];
    int32_t labels[2 * N];
    for (int i = 0; i < 2 * N * PIX; i++) images[i] = 0.5f + 0.4f * sinf(0.37f * (float)i) + 0.01f * (float)(i % 13);
    for (int i = 0; i < 2 * N; i++) labels[i] = i % 3;
    cnn_net *net = NULL;
    cnn_optimizer *opt = NULL;
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    int update = 0;
    cnn_status st = cnn_net_from_text(MODEL_BN_SMOOTH, "selftest-bn", cpu, 5, &net);
    if (st == CNN_OK) st = cnn_dist_broadcast_net(sync, net, 0);
    if (st == CNN_OK) st = cnn_dist_attach_net(sync, net);
    if (st == CNN_OK) st = cnn_net_set_batch(net, N);
    if (st == CNN_OK) st = cnn_optimizer_create(net, &cfg, &opt);
    if (st == CNN_OK) st = cnn_net_stage_host(net, images + (size_t)rank_ * N * PIX, labels + rank_ * N, N);
    if (st == CNN_OK) st = cnn_net_forward(net, 1);
    if (st == CNN_OK) st = cnn_net_loss(net, 1);
    if (st == CNN_OK) st = cnn_net_backward(net);
    if (st == CNN_OK) st = cnn_dist_reduce_grads(sync, opt, N, &update);
    CHECK(st == CNN_OK, "finite differences: %s", cnn_last_error());
    if (st == CNN_OK) {
        cnn_tensor *w = net->layers[0]->params[0].value, *g = net->layers[0]->params[0].grad;
        const size_t n = (size_t)cnn_tensor_numel(w);
        float *wv = malloc(n * sizeof *wv), *gv = malloc(n * sizeof *gv);
        cnn_tensor_read(w, wv, n * sizeof *wv);
        cnn_tensor_read(g, gv, n * sizeof *gv);
        double worst = 0.0, scale = 0.0;
        for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)gv[i]));
        const float h = 1e-2f;
        for (size_t i = 0; i < n; i += 7) {
            const float keep = wv[i];
            wv[i] = keep + h;
            cnn_tensor_write(w, wv, n * sizeof *wv);
            const double up = global_loss(sync, net, N);
            wv[i] = keep - h;
            cnn_tensor_write(w, wv, n * sizeof *wv);
            const double down = global_loss(sync, net, N);
            wv[i] = keep;
            cnn_tensor_write(w, wv, n * sizeof *wv);
            const double fd = (up - down) / (2.0 * (double)h), err = fabs(fd - gv[i]) / scale;
            if (!(err <= worst)) worst = err; /* NaN counts */
        }
        printf("rank %d: sync batchnorm: conv weight gradient against central differences of the global loss: "
               "largest difference %.3g of the largest gradient\n", rank_, worst);
        CHECK(worst < 2e-3, "--sync-batchnorm's gradient is off its finite differences by %g", worst);
        free(wv);
        free(gv);
    }
    cnn_dist_detach_net(net);
    cnn_optimizer_destroy(opt);
    cnn_net_destroy(net);
}

/* One step's gradients on this rank's 4 images (rank-dependent), reduced over the ranks: overlapped with backward
 * (cnn_dist_grads_begin, backward, cnn_dist_grads_end) or all at once after it (cnn_dist_reduce_grads). */
static float *overlap_step(cnn_backend *cpu, cnn_dist *d, int overlapped, size_t *total)
{
    enum { N = 4, PIX = 6 * 6 * 2 };
    float images[N * PIX];
    int32_t labels[N];
    for (int i = 0; i < N * PIX; i++) images[i] = 0.5f + 0.4f * sinf(0.23f * (float)(i + 97 * rank_));
    for (int i = 0; i < N; i++) labels[i] = (i + rank_) % 3;
    cnn_net *net = NULL;
    cnn_optimizer *opt = NULL;
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    float *v = NULL;
    int update = 0;
    cnn_status st = cnn_net_from_text(MODEL_DEEP, "selftest-overlap", cpu, 9, &net);
    if (st == CNN_OK) st = cnn_net_set_batch(net, N);
    if (st == CNN_OK) st = cnn_optimizer_create(net, &cfg, &opt);
    if (st == CNN_OK) st = cnn_net_stage_host(net, images, labels, N);
    if (st == CNN_OK) st = cnn_net_forward(net, 1);
    if (st == CNN_OK) st = cnn_net_loss(net, 1);
    if (overlapped) {
        if (st == CNN_OK) st = cnn_dist_grads_begin(d, net, opt, N);
        if (st == CNN_OK) st = cnn_net_backward(net);
        if (st == CNN_OK) st = cnn_dist_grads_end(d, net, N, &update);
        CHECK(!net || !net->grads_ready, "the backward hook is still set after cnn_dist_grads_end");
    } else {
        if (st == CNN_OK) st = cnn_net_backward(net);
        if (st == CNN_OK) st = cnn_dist_reduce_grads(d, opt, N, &update);
    }
    CHECK(st == CNN_OK && update == 1, "overlap step: %s", cnn_last_error());
    if (st == CNN_OK) v = get_grads(opt, total);
    cnn_optimizer_destroy(opt);
    cnn_net_destroy(net);
    return v;
}

/* The buckets that start during backward sum exactly what the reduction after backward sums. */
static void overlap_cases(cnn_backend *cpu, cnn_dist *d, const char *name, int min_early)
{
    int64_t early0, all0, early1, all1;
    size_t na = 0, nb = 0;
    cnn_dist_overlap_counts(d, &early0, &all0);
    float *a = overlap_step(cpu, d, 1, &na);
    cnn_dist_overlap_counts(d, &early1, &all1);
    float *b = overlap_step(cpu, d, 0, &nb);
    printf("rank %d: %s: %lld of %lld buckets started before backward reached the first layer\n", rank_, name, (long long)(early1 - early0),
           (long long)(all1 - all0));
    CHECK(early1 - early0 >= min_early && all1 - all0 > early1 - early0, "%s: %lld of %lld buckets started during "
          "backward (at least %d should, the first layer's not)", name, (long long)(early1 - early0),
          (long long)(all1 - all0), min_early);
    CHECK(a && b && na == nb && !memcmp(a, b, na * sizeof *a), "%s: the overlapped reduction differs from the one "
          "after backward", name);
    free(a);
    free(b);
}

static void sync_batchnorm_cases(cnn_backend *cpu, cnn_dist *plain, cnn_dist *sync)
{
    size_t n1 = 0, n2 = 0, n3 = 0, g = 0;
    float *one = bn_step(cpu, NULL, NULL, 0, 8, &n1, &g);          /* one process, all 8 images */
    float *two = bn_step(cpu, sync, sync, 4 * rank_, 4, &n2, &g);  /* 2 ranks of 4, --sync-batchnorm */
    float *own = bn_step(cpu, plain, NULL, 4 * rank_, 4, &n3, &g); /* 2 ranks of 4, per-rank statistics */
    if (one && two && own && n1 == n2 && n1 == n3 && g < n1) {
        /* the gradients (the conv's through batchnorm's dx), then the running statistics */
        double with = rel_diff(two, one, g), without = rel_diff(own, one, g);
        double with_st = rel_diff(two + g, one + g, n1 - g), without_st = rel_diff(own + g, one + g, n1 - g);
        printf("rank %d: sync batchnorm: 2 ranks x 4 against 1 x 8, largest difference of the largest value: "
               "gradients %.3g, running statistics %.3g; per-rank statistics: %.3g, %.3g\n", rank_, with, with_st,
               without, without_st);
        CHECK(with < 1e-5 && with_st < 1e-6, "--sync-batchnorm: 2 ranks differ from one process by %g, %g", with,
              with_st);
        CHECK(without > 1e-3 && without_st > 1e-5, "per-rank statistics agree with one process's (%g, %g): the "
              "check cannot tell", without, without_st);
    } else {
        CHECK(0, "sync batchnorm: %zu %zu %zu values", n1, n2, n3);
    }
    free(one);
    free(two);
    free(own);
}

/* cnn_dist_evaluate_source on n images: each rank's copy of the set holds the true images and labels in its own
 * part (cnn_dist_shard_range) and wrong labels elsewhere, so a rank that evaluated more than its part would change
 * the result. The metrics must be those of one process on the true set. */
static void evaluate_case(cnn_dist *d, cnn_net *net, int64_t n)
{
    enum { PIX = 6 * 6 };
    cnn_dataset truth = {.n = n, .h = 6, .w = 6, .c = 1, .num_classes = 3}, mine = truth;
    truth.images = malloc((size_t)n * PIX * sizeof(float));
    truth.labels = malloc((size_t)n * sizeof(int32_t));
    mine.images = malloc((size_t)n * PIX * sizeof(float));
    mine.labels = malloc((size_t)n * sizeof(int32_t));
    int64_t first, count;
    cnn_dist_shard_range(d, n, &first, &count);
    for (int64_t i = 0; i < n * PIX; i++) truth.images[i] = mine.images[i] = 0.5f + 0.5f * sinf(0.11f * (float)i);
    for (int64_t i = 0; i < n; i++) {
        truth.labels[i] = (int32_t)(i % 3);
        mine.labels[i] = i >= first && i < first + count ? truth.labels[i] : (truth.labels[i] + 1) % 3;
    }
    cnn_source *ts = NULL, *ms = NULL;
    cnn_metrics *want = NULL, *got = NULL;
    cnn_status st = cnn_source_from_dataset(&truth, 0, &ts);
    if (st == CNN_OK) st = cnn_source_from_dataset(&mine, 0, &ms);
    if (st == CNN_OK) st = cnn_evaluate_source(net, ts, NULL, 4, &want);
    if (st == CNN_OK) st = cnn_dist_evaluate_source(d, net, ms, NULL, 4, &got);
    CHECK(st == CNN_OK, "evaluation of %lld images: %s", (long long)n, cnn_last_error());
    if (want && got) {
        int same = got->n == want->n && got->accuracy == want->accuracy && got->macro_f1 == want->macro_f1;
        for (int i = 0; i < 9; i++) same &= got->confusion[i] == want->confusion[i];
        CHECK(same && n > 0, "evaluation of %lld images: n %lld accuracy %g macro f1 %g, one process: %lld %g %g",
              (long long)n, (long long)got->n, got->accuracy, got->macro_f1, (long long)want->n, want->accuracy,
              want->macro_f1);
        CHECK(fabs(got->loss - want->loss) <= 1e-6 * fabs(want->loss), "evaluation of %lld images: loss %.9g, one "
              "process %.9g", (long long)n, got->loss, want->loss);
    }
    cnn_metrics_destroy(want);
    cnn_metrics_destroy(got);
    cnn_source_destroy(ts);
    cnn_source_destroy(ms);
    free(truth.images);
    free(truth.labels);
    free(mine.images);
    free(mine.labels);
}

int main(void)
{
    cnn_dist_config dc;
    cnn_dist_config_defaults(&dc);
    cnn_dist *plain = NULL, *small = NULL, *det = NULL, *sync = NULL;
    dc.timeout = 60;
    if (cnn_dist_init(&dc, &plain) != CNN_OK) {
        fprintf(stderr, "cnn_dist_init: %s\n", cnn_last_error());
        return 1;
    }
    dc.bucket_bytes = 64; /* 16 floats: many buckets, two in flight in turn */
    cnn_status st = cnn_dist_init(&dc, &small);
    dc.deterministic = 1;
    if (st == CNN_OK) st = cnn_dist_init(&dc, &det);
    dc.deterministic = 0;
    dc.bucket_bytes = 0; /* the default */
    dc.sync_batchnorm = 1;
    if (st == CNN_OK) st = cnn_dist_init(&dc, &sync);
    rank_ = cnn_dist_rank(plain);
    CHECK(st == CNN_OK, "init: %s", cnn_last_error());
    CHECK(cnn_dist_size(plain) == 2, "size %d", cnn_dist_size(plain));
    CHECK(cnn_dist_local_rank(plain) == rank_, "local rank %d (one machine)", cnn_dist_local_rank(plain));
    cnn_backend *cpu = NULL;
    cnn_net *net = NULL;
    cnn_optimizer *opt = NULL;
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    if (st == CNN_OK && cnn_backend_create("cpu", &cpu) == CNN_OK &&
        cnn_net_from_text(MODEL, "selftest", cpu, 1, &net) == CNN_OK && cnn_net_set_batch(net, 4) == CNN_OK &&
        cnn_optimizer_create(net, &cfg, &opt) == CNN_OK) {
        float *a = NULL, *b = NULL, *c = NULL;
        size_t n = 0;
        run_cases(plain, opt, "one bucket", &a, &n);
        run_cases(small, opt, "64-byte buckets", &b, &n);
        run_cases(det, opt, "deterministic", &c, &n);
        if (a && b && c) {
            CHECK(!memcmp(a, b, n * sizeof *a), "bucket sizes changed the result");
            CHECK(!memcmp(a, c, n * sizeof *a), "the rank-order sum differs from MPI's (2 ranks: one addition)");
        }
        free(a);
        free(b);
        free(c);
        sync_batchnorm_cases(cpu, plain, sync);
        sync_batchnorm_finite_differences(cpu, sync);
        overlap_cases(cpu, small, "64-byte buckets during backward", 2);
        overlap_cases(cpu, det, "64-byte buckets during backward, --deterministic", 2);
        overlap_cases(cpu, plain, "one bucket", 0);
        for (int64_t n = 1; n <= 11; n += 5) evaluate_case(plain, net, n); /* 1 (rank 1 has none), 6, 11 */
    } else {
        CHECK(0, "setup: %s", cnn_last_error());
    }
    cnn_optimizer_destroy(opt);
    cnn_net_destroy(net);
    cnn_backend_destroy(cpu);
    if (!failures) printf("rank %d: ok\n", rank_);
    fflush(stdout);
    cnn_dist_finalize(sync);
    cnn_dist_finalize(det);
    cnn_dist_finalize(small);
    cnn_dist_finalize(plain); /* the one that initialized MPI finalizes it */
    return failures ? 1 : 0;
}
