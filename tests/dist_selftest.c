/* The gradient average of core/dist.c on 2 ranks, run by test_dist under mpirun: each rank sets known gradients on
 * a small network's parameters and checks what cnn_dist_reduce_grads leaves: the average weighted by the ranks'
 * image counts; a rank without images adds nothing (even with NaN in its stale gradients); an infinity in each
 * gradient of one rank reaches every rank (so the mixed-precision overflow check skips the step everywhere); a step without any image
 * is no step; small buckets (several in flight in turn) and --deterministic's rank-order sums give the same
 * numbers as one bucket. Prints "rank R: ok" and exits 0, or names the first failure and exits 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn.h"
#include "cnn/dist.h"
#include "core/dist.h"
#include "core/optim.h"

static const char *MODEL = "input 6 6 1\nconv 4 3 relu\nflatten\ndense 3 softmax\n";

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

int main(void)
{
    cnn_dist_config dc;
    cnn_dist_config_defaults(&dc);
    cnn_dist *plain = NULL, *small = NULL, *det = NULL;
    dc.timeout = 60;
    if (cnn_dist_init(&dc, &plain) != CNN_OK) {
        fprintf(stderr, "cnn_dist_init: %s\n", cnn_last_error());
        return 1;
    }
    dc.bucket_bytes = 64; /* 16 floats: many buckets, two in flight in turn */
    cnn_status st = cnn_dist_init(&dc, &small);
    dc.deterministic = 1;
    if (st == CNN_OK) st = cnn_dist_init(&dc, &det);
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
    } else {
        CHECK(0, "setup: %s", cnn_last_error());
    }
    cnn_optimizer_destroy(opt);
    cnn_net_destroy(net);
    cnn_backend_destroy(cpu);
    if (!failures) printf("rank %d: ok\n", rank_);
    fflush(stdout);
    cnn_dist_finalize(det);
    cnn_dist_finalize(small);
    cnn_dist_finalize(plain); /* the one that initialized MPI finalizes it */
    return failures ? 1 : 0;
}
