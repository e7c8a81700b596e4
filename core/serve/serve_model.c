/* The model server's model versions: loading one, and its batch queue with the workers that run it.
 *
 * A version holds num_batch_threads copies of the network, one per worker, each on its own backend (a network
 * keeps its activations, so two passes at once need two copies). Requests queue in FIFO order; a worker takes the
 * jobs at the head that fit in max_batch_size images, waits up to batch_timeout_us (counted from when the first of
 * them was queued) for more while the batch is not full, and runs them as one cnn_net_predict. The queue holds at
 * most max_enqueued_batches * max_batch_size images: beyond that a submit is refused (the caller answers 503), so
 * memory stays bounded under overload. */
#define _POSIX_C_SOURCE 200809L
#include "core/serve/serve.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cnn/cnn.h"
#include "core/error.h"
#include "core/grow.h"

#define HIST_BUCKETS 16

typedef struct worker {
    cnn_serve_version *v;
    pthread_t thread;
    int started;
    cnn_backend *backend;
    cnn_net *net;
    float *images, *probs; /* max_batch_size images and their probabilities */
} worker;

struct cnn_serve_version {
    int64_t version;
    cnn_serve_spec spec;
    int k;
    char **class_names; /* k, each may be NULL */
    int max_batch, batch_timeout_us;
    int64_t max_queued;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    cnn_serve_job *head, *tail;
    int64_t queued_images;
    int stopping;
    int flushing; /* batches no longer wait to fill (the server is draining) */
    uint64_t batches, images, hist[HIST_BUCKETS];

    int quiet;
    int nworkers;
    worker *workers;

    /* drift monitoring: the training set's profile (when the model file has one) and what was served, under mu */
    char *model_name;
    int has_profile;
    float *train_mean, *train_std, *train_freq; /* c, c, k */
    double *sum, *sumsq;                        /* c: served pixels, [0, 1] scale */
    uint64_t pixels;
    uint64_t *predicted;                        /* k: images whose top class was j */
    double drift_threshold;                     /* <= 0: no warnings */
    int64_t drift_min_images;
    int psi_warned, *z_warned;                  /* above the threshold now: warned once, again after falling back */
};

/* Floor of the training std in the z-scores (a constant training channel would make any shift infinite). */
#define DRIFT_STD_FLOOR 1e-3
/* Shares below this count as this in the PSI (a class never predicted, or never seen in training). */
#define PSI_FLOOR 1e-4

static double psi_term(double served, double expected)
{
    if (served < PSI_FLOOR) served = PSI_FLOOR;
    if (expected < PSI_FLOOR) expected = PSI_FLOOR;
    return (served - expected) * log(served / expected);
}

/* The drift scores from the counts; called with the lock held. z has c entries (NULL: not wanted). */
static double drift_scores(const cnn_serve_version *v, double *z)
{
    double psi = 0.0, n = (double)v->images;
    for (int j = 0; j < v->k && n > 0; j++) psi += psi_term((double)v->predicted[j] / n, v->train_freq[j]);
    for (int ch = 0; z && ch < v->spec.c; ch++) {
        double mean = v->pixels ? v->sum[ch] / (double)v->pixels : 0.0;
        double sd = v->train_std[ch] > DRIFT_STD_FLOOR ? v->train_std[ch] : DRIFT_STD_FLOOR;
        z[ch] = v->pixels ? (mean - v->train_mean[ch]) / sd : 0.0;
    }
    return psi;
}

/* Adds a batch's images and top classes to the served statistics, and warns once when a drift score crosses the
 * threshold (again after it fell back below). */
static void observe(cnn_serve_version *v, const float *images, const float *probs, int64_t n)
{
    int c = v->spec.c;
    size_t pixels = (size_t)n * v->spec.h * v->spec.w;
    double sum[3] = {0, 0, 0}, sq[3] = {0, 0, 0};
    for (size_t p = 0; p < pixels; p++)
        for (int ch = 0; ch < c; ch++) {
            double x = images[p * c + ch];
            sum[ch] += x;
            sq[ch] += x * x;
        }
    char warn[2][512];
    int nwarn = 0;
    pthread_mutex_lock(&v->mu);
    for (int ch = 0; ch < c; ch++) {
        v->sum[ch] += sum[ch];
        v->sumsq[ch] += sq[ch];
    }
    v->pixels += pixels;
    v->images += (uint64_t)n;
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * v->k;
        v->predicted[cnn_argmax(p, v->k)]++;
    }
    if (v->has_profile && v->drift_threshold > 0 && (int64_t)v->images >= v->drift_min_images) {
        double z[3];
        double psi = drift_scores(v, z);
        int above = psi > v->drift_threshold;
        if (above && !v->psi_warned)
            snprintf(warn[nwarn++], sizeof warn[0], "model %s version %lld: drift: the predicted classes' PSI is %.3f "
                     "(above --drift-threshold %g) after %llu images", v->model_name, (long long)v->version, psi,
                     v->drift_threshold, (unsigned long long)v->images);
        v->psi_warned = above;
        for (int ch = 0; ch < c; ch++) {
            above = fabs(z[ch]) > v->drift_threshold;
            if (above && !v->z_warned[ch] && nwarn < 2)
                snprintf(warn[nwarn++], sizeof warn[0], "model %s version %lld: drift: input channel %d's mean is %.4f, "
                         "%.2f training std from the training set's %.4f (above --drift-threshold %g) after %llu "
                         "images", v->model_name, (long long)v->version, ch, v->sum[ch] / (double)v->pixels, z[ch],
                         (double)v->train_mean[ch], v->drift_threshold, (unsigned long long)v->images);
            v->z_warned[ch] = above;
        }
    }
    pthread_mutex_unlock(&v->mu);
    for (int i = 0; i < nwarn && !v->quiet; i++) fprintf(stderr, "cnn serve: warning: %s\n", warn[i]);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void ns_to_abstime(int64_t ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
}

// ---------------------------------------------------------------------------------------------------------------
// the workers

/* Takes the jobs at the head of the queue that fit beside `have` images; called with the lock held. */
static int64_t take_jobs(cnn_serve_version *v, cnn_serve_job **first, cnn_serve_job **last, int64_t have)
{
    while (v->head && have + v->head->n <= v->max_batch) {
        cnn_serve_job *j = v->head;
        v->head = j->next;
        if (!v->head) v->tail = NULL;
        j->next = NULL;
        if (*last)
            (*last)->next = j;
        else
            *first = j;
        *last = j;
        have += j->n;
        v->queued_images -= j->n;
    }
    return have;
}

static void run_batch(worker *wk, cnn_serve_job *jobs, int64_t total)
{
    cnn_serve_version *v = wk->v;
    size_t per = (size_t)v->spec.h * v->spec.w * v->spec.c;
    const float *in = jobs->images;
    float *out = jobs->probs;
    if (jobs->next) { /* several requests: gather their images, run them as one batch, scatter the answers */
        int64_t at = 0;
        for (cnn_serve_job *j = jobs; j; j = j->next) {
            memcpy(wk->images + (size_t)at * per, j->images, (size_t)j->n * per * sizeof(float));
            at += j->n;
        }
        in = wk->images;
        out = wk->probs;
    }
    cnn_status st = cnn_net_predict(wk->net, in, total, out);
    /* counted before anyone is answered, so that a client that reads the metrics after its answer sees its batch */
    int b = 0;
    while (b < HIST_BUCKETS - 1 && ((int64_t)1 << b) < total) b++;
    pthread_mutex_lock(&v->mu);
    v->batches++;
    v->hist[b]++;
    pthread_mutex_unlock(&v->mu);
    if (st == CNN_OK) observe(v, in, out, total);
    const char *msg = st == CNN_OK ? "" : cnn_last_error();
    int gathered = jobs->next != NULL; /* read now: done() may free a job */
    int64_t at = 0;
    for (cnn_serve_job *j = jobs, *next; j; j = next) {
        next = j->next;
        if (st == CNN_OK && gathered)
            memcpy(j->probs, out + (size_t)at * v->k, (size_t)j->n * v->k * sizeof(float));
        at += j->n;
        j->status = st;
        snprintf(j->error, sizeof j->error, "%s", msg[0] ? msg : cnn_status_string(st));
        j->done(j); /* may free j */
    }
}

static void *worker_main(void *arg)
{
    worker *wk = arg;
    cnn_serve_version *v = wk->v;
    pthread_mutex_lock(&v->mu);
    for (;;) {
        while (!v->head && !v->stopping) pthread_cond_wait(&v->cv, &v->mu);
        if (!v->head) break; /* stopping, and nothing left to answer */
        cnn_serve_job *first = NULL, *last = NULL;
        int64_t deadline = v->head->enqueued_ns + (int64_t)v->batch_timeout_us * 1000;
        int64_t total = take_jobs(v, &first, &last, 0);
        /* wait for the batch to fill, while the next request would still fit and time is left */
        while (total < v->max_batch && !v->stopping && !v->flushing && v->batch_timeout_us > 0) {
            if (v->head) break; /* the head does not fit: run what we have */
            if (now_ns() >= deadline) break;
            struct timespec ts;
            ns_to_abstime(deadline, &ts);
            int rc = pthread_cond_timedwait(&v->cv, &v->mu, &ts);
            total = take_jobs(v, &first, &last, total);
            if (rc == ETIMEDOUT) break;
        }
        pthread_mutex_unlock(&v->mu);
        run_batch(wk, first, total);
        pthread_mutex_lock(&v->mu);
    }
    pthread_mutex_unlock(&v->mu);
    return NULL;
}

cnn_serve_submit cnn_serve_version_submit(cnn_serve_version *v, cnn_serve_job *job)
{
    cnn_serve_submit r = CNN_SERVE_QUEUED;
    job->next = NULL;
    job->status = CNN_OK;
    job->error[0] = '\0';
    pthread_mutex_lock(&v->mu);
    if (v->stopping) {
        r = CNN_SERVE_STOPPING;
    } else if (job->n < 1 || job->n > v->max_batch || v->queued_images + job->n > v->max_queued) {
        r = CNN_SERVE_QUEUE_FULL;
    } else {
        job->enqueued_ns = now_ns();
        if (v->tail)
            v->tail->next = job;
        else
            v->head = job;
        v->tail = job;
        v->queued_images += job->n;
        /* one waiting worker starts a batch, or a worker filling one takes it: wake them all, few as they are */
        pthread_cond_broadcast(&v->cv);
    }
    pthread_mutex_unlock(&v->mu);
    return r;
}

// ---------------------------------------------------------------------------------------------------------------
// loading and unloading

/* Sets one of the version's flags under its lock and wakes its workers. */
static void raise_flag(cnn_serve_version *v, int *flag)
{
    pthread_mutex_lock(&v->mu);
    *flag = 1;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->mu);
}

void cnn_serve_version_flush(cnn_serve_version *v)
{
    if (v) raise_flag(v, &v->flushing);
}

void cnn_serve_version_stop(cnn_serve_version *v)
{
    if (!v) return;
    raise_flag(v, &v->stopping);
    for (int i = 0; i < v->nworkers; i++) {
        worker *wk = &v->workers[i];
        if (wk->started) pthread_join(wk->thread, NULL);
        wk->started = 0;
    }
}

void cnn_serve_version_destroy(cnn_serve_version *v)
{
    if (!v) return;
    cnn_serve_version_stop(v);
    for (int i = 0; i < v->nworkers; i++) {
        worker *wk = &v->workers[i];
        cnn_net_destroy(wk->net);
        cnn_backend_destroy(wk->backend);
        free(wk->images);
        free(wk->probs);
    }
    free(v->workers);
    for (int j = 0; v->class_names && j < v->k; j++) free(v->class_names[j]);
    free(v->class_names);
    free(v->model_name);
    free(v->train_mean);
    free(v->train_std);
    free(v->train_freq);
    free(v->sum);
    free(v->sumsq);
    free(v->predicted);
    free(v->z_warned);
    pthread_cond_destroy(&v->cv);
    pthread_mutex_destroy(&v->mu);
    free(v);
}

cnn_status cnn_serve_version_load(const char *path, int64_t version, const cnn_serve_config *cfg,
                                  cnn_serve_version **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    cnn_serve_version *v = calloc(1, sizeof *v);
    if (!v) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for model version %lld", (long long)version);
    pthread_mutex_init(&v->mu, NULL);
    /* the batch deadline is on CLOCK_MONOTONIC (now_ns): the condition variable must wait on that clock too */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&v->cv, &ca);
    pthread_condattr_destroy(&ca);
    v->version = version;
    v->max_batch = cfg->max_batch_size > 0 ? cfg->max_batch_size : 1;
    v->batch_timeout_us = cfg->batch_timeout_us > 0 ? cfg->batch_timeout_us : 0;
    v->max_queued = (int64_t)v->max_batch * (cfg->max_enqueued_batches > 0 ? cfg->max_enqueued_batches : 1);
    int n = cfg->num_batch_threads > 0 ? cfg->num_batch_threads : 1;
    v->workers = calloc((size_t)n, sizeof *v->workers);
    if (!v->workers) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "no memory for %d batch workers", n);
        goto fail;
    }
    v->nworkers = n;
    for (int i = 0; i < n; i++) {
        worker *wk = &v->workers[i];
        wk->v = v;
        CNN_TRY(cnn_backend_create(cfg->device, &wk->backend));
        CNN_TRY(cnn_net_load(path, wk->backend, &wk->net));
    }
    cnn_net *net = v->workers[0].net;
    cnn_net_input_shape(net, &v->spec.h, &v->spec.w, &v->spec.c);
    v->spec.rh = v->spec.h;
    v->spec.rw = v->spec.w;
    cnn_net_resize(net, &v->spec.rh, &v->spec.rw);
    v->spec.max_pixels = cfg->max_pixels;
    v->spec.max_images = v->max_batch;
    if (v->spec.c != 1 && v->spec.c != 3) {
        st = cnn_error(CNN_ERR_UNSUPPORTED, "%s: the model takes %d channels; the server feeds 1 or 3", path,
                       v->spec.c);
        goto fail;
    }
    v->k = cnn_net_num_outputs(net);
    v->class_names = calloc((size_t)v->k, sizeof *v->class_names);
    if (!v->class_names) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "no memory for %d class names", v->k);
        goto fail;
    }
    for (int j = 0; j < v->k; j++) {
        const char *name = cnn_net_class_name(net, j);
        if (name && !(v->class_names[j] = strdup(name))) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "no memory for class names");
            goto fail;
        }
    }
    int c = v->spec.c, k = v->k;
    v->model_name = strdup(cfg->model_name ? cfg->model_name : "?");
    v->train_mean = calloc((size_t)c, sizeof *v->train_mean);
    v->train_std = calloc((size_t)c, sizeof *v->train_std);
    v->train_freq = calloc((size_t)k, sizeof *v->train_freq);
    v->sum = calloc((size_t)c, sizeof *v->sum);
    v->sumsq = calloc((size_t)c, sizeof *v->sumsq);
    v->predicted = calloc((size_t)k, sizeof *v->predicted);
    v->z_warned = calloc((size_t)c, sizeof *v->z_warned);
    if (!v->model_name || !v->train_mean || !v->train_std || !v->train_freq || !v->sum || !v->sumsq ||
        !v->predicted || !v->z_warned) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "no memory for the drift statistics");
        goto fail;
    }
    v->has_profile = cnn_net_data_profile(net, v->train_mean, v->train_std, v->train_freq);
    v->drift_threshold = cfg->drift_threshold;
    v->drift_min_images = cfg->drift_min_images;
    v->quiet = cfg->quiet;
    size_t per = (size_t)v->spec.h * v->spec.w * v->spec.c;
    for (int i = 0; i < n; i++) {
        worker *wk = &v->workers[i];
        wk->images = malloc((size_t)v->max_batch * per * sizeof(float));
        wk->probs = malloc((size_t)v->max_batch * v->k * sizeof(float));
        if (!wk->images || !wk->probs) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "no memory for a batch of %d images", v->max_batch);
            goto fail;
        }
        /* warm up at the largest batch: activations are allocated (and refused by the memory budget) now, not at
         * the first busy moment, and the backend's first-call costs are paid */
        memset(wk->images, 0, (size_t)v->max_batch * per * sizeof(float));
        CNN_TRY(cnn_net_predict(wk->net, wk->images, v->max_batch, wk->probs));
    }
    for (int i = 0; i < n; i++) {
        worker *wk = &v->workers[i];
        if (pthread_create(&wk->thread, NULL, worker_main, wk) != 0) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "cannot start batch worker %d", i);
            goto fail;
        }
        wk->started = 1;
    }
    *out = v;
    return CNN_OK;
fail:
    cnn_serve_version_destroy(v);
    return st;
}

int64_t cnn_serve_version_number(const cnn_serve_version *v) { return v->version; }
void cnn_serve_version_spec(const cnn_serve_version *v, cnn_serve_spec *spec) { *spec = v->spec; }
int cnn_serve_version_outputs(const cnn_serve_version *v) { return v->k; }

const char *const *cnn_serve_version_class_names(const cnn_serve_version *v)
{
    return (const char *const *)v->class_names;
}

cnn_status cnn_serve_version_drift(cnn_serve_version *v, cnn_serve_drift *out)
{
    memset(out, 0, sizeof *out);
    int c = v->spec.c, k = v->k;
    out->mean = calloc((size_t)c, sizeof *out->mean);
    out->std = calloc((size_t)c, sizeof *out->std);
    out->z = calloc((size_t)c, sizeof *out->z);
    out->class_share = calloc((size_t)k, sizeof *out->class_share);
    if (!out->mean || !out->std || !out->z || !out->class_share) {
        cnn_serve_drift_free(out);
        return cnn_error(CNN_ERR_NO_MEMORY, "no memory for the drift statistics");
    }
    out->c = c;
    out->k = k;
    pthread_mutex_lock(&v->mu);
    out->has_profile = v->has_profile;
    out->images = v->images;
    for (int ch = 0; ch < c && v->pixels; ch++) {
        double m = v->sum[ch] / (double)v->pixels, var = v->sumsq[ch] / (double)v->pixels - m * m;
        out->mean[ch] = m;
        out->std[ch] = sqrt(var > 0 ? var : 0);
    }
    for (int j = 0; j < k && v->images; j++) out->class_share[j] = (double)v->predicted[j] / (double)v->images;
    if (v->has_profile) out->psi = drift_scores(v, out->z);
    pthread_mutex_unlock(&v->mu);
    return CNN_OK;
}

void cnn_serve_drift_free(cnn_serve_drift *d)
{
    free(d->mean);
    free(d->std);
    free(d->z);
    free(d->class_share);
    memset(d, 0, sizeof *d);
}

void cnn_serve_version_stats_get(cnn_serve_version *v, cnn_serve_version_stats *out)
{
    pthread_mutex_lock(&v->mu);
    out->batches = v->batches;
    out->images = v->images;
    memcpy(out->batch_size_hist, v->hist, sizeof v->hist);
    out->queued_images = v->queued_images;
    pthread_mutex_unlock(&v->mu);
}

// ---------------------------------------------------------------------------------------------------------------
// the base path

static int cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

cnn_status cnn_serve_list_versions(const char *base, int64_t **out, int *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(base);
    if (!d)
        return cnn_error(errno == ENOENT ? CNN_ERR_NOT_FOUND : CNN_ERR_IO, "model base path %s: %s", base,
                         strerror(errno));
    cnn_status st = CNN_OK;
    int64_t *list = NULL;
    size_t cap = 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        size_t len = strlen(name);
        int digits = len > 0 && len <= 18;
        for (size_t i = 0; i < len && digits; i++) digits = name[i] >= '0' && name[i] <= '9';
        if (!digits) continue;
        size_t plen = strlen(base) + len + 32;
        char *path = malloc(plen);
        if (!path) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "no memory to list %s", base);
            break;
        }
        snprintf(path, plen, "%s/%s/model.safetensors", base, name);
        struct stat sb;
        int ok = stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
        free(path);
        if (!ok) continue;
        if ((st = cnn_array_grow(&list, &cap, (size_t)count + 1, sizeof *list, 8)) != CNN_OK) break;
        list[count++] = strtoll(name, NULL, 10);
    }
    closedir(d);
    if (st != CNN_OK) {
        free(list);
        return st;
    }
    if (count) qsort(list, (size_t)count, sizeof *list, cmp_desc);
    *out = list;
    *n = count;
    return CNN_OK;
}
