/* The model server's HTTP side: GNU libmicrohttpd (a thread pool over epoll), TF Serving's REST API and the Open
 * Inference Protocol's, and the server's life from start to a drained stop.
 *
 * A request's body is gathered up to max_body_bytes (a larger Content-Length is answered 413 before any of it is
 * read; a chunked body that grows past the limit is dropped and answered 413 at its end). An inference request is
 * parsed in the HTTP thread, queued on its model version, and its connection suspended until a batch worker has
 * run it (core/serve_model.c), so that HTTP threads never wait on the model. Every answer is JSON; errors are
 * {"error": "..."} with a 4xx, or 503 when the queue is full (with Retry-After) or memory ran out. */
#define _POSIX_C_SOURCE 200809L
#include "core/serve.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/grow.h"

void cnn_serve_config_default(cnn_serve_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 8501; /* TF Serving's REST port */
    cfg->max_body_bytes = (size_t)16 << 20;
    cfg->max_pixels = (long long)1 << 26; /* the loader's cap, CNN_IMAGE_MAX_PIXELS */
    cfg->max_connections = 256;
    cfg->connection_timeout_s = 30;
    cfg->http_threads = 4;
    cfg->max_batch_size = 32;
    cfg->batch_timeout_us = 0;
    cfg->num_batch_threads = 1;
    cfg->max_enqueued_batches = 16;
    cfg->poll_seconds = 1; /* TF Serving's file_system_poll_wait_seconds */
}

#ifndef CNN_HAVE_MICROHTTPD

int cnn_serve_available(void) { return 0; }

cnn_status cnn_server_start(const cnn_serve_config *cfg, cnn_server **out)
{
    (void)cfg;
    *out = NULL;
    return cnn_error(CNN_ERR_UNSUPPORTED, "this build has no model server: it was configured without libmicrohttpd "
                     "(-DCNN_SERVE=OFF, or Debian's libmicrohttpd-dev missing: install it, then configure again)");
}

int cnn_server_port(const cnn_server *server)
{
    (void)server;
    return 0;
}

void cnn_server_stop(cnn_server *server, int drain_ms)
{
    (void)server;
    (void)drain_ms;
}

void cnn_server_poll(cnn_server *server) { (void)server; }

#else

#include <microhttpd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------------------------
// model versions as the server sees them

/* TF Serving's states: a version loads, serves, is unloaded once a newer one serves and its requests are done */
typedef enum { VS_LOADING = 0, VS_AVAILABLE, VS_UNLOADING, VS_END } version_state;

static const char *const version_state_names[] = {"LOADING", "AVAILABLE", "UNLOADING", "END"};

typedef struct version_entry {
    int64_t version;
    version_state state;
    char *error;            /* why it failed to load; NULL when it did not fail */
    cnn_serve_version *v;   /* loaded; NULL otherwise */
    int refs;               /* requests using v (under the server's lock) */
} version_entry; /* allocated one by one: requests keep pointers to them until the server is freed */

struct cnn_server {
    cnn_serve_config cfg;
    char *name, *base, *host, *device; /* the config's strings, copied */
    struct MHD_Daemon *daemon;
    int port;
    atomic_int in_flight; /* requests between their first byte and their answer's completion */

    pthread_mutex_t mu;       /* guards what follows */
    version_entry **versions; /* every version seen, by descending number */
    int nversions;
    size_t versions_cap;
    version_entry *serving;   /* the latest available one, or NULL */
    pthread_cond_t poll_cv;   /* wakes the poller to stop */
    int stopping;
    pthread_t poller;
    int poller_started;

    char *token;              /* the bearer token every endpoint but health needs; NULL: none */
    char *tls_cert, *tls_key; /* PEM texts ('\0'-terminated); NULL: plain HTTP */
    FILE *access_log;         /* one line per request; NULL: none */

    pthread_mutex_t metrics_mu; /* guards the metrics */
    struct request_count *counts; /* requests by version, endpoint and status code */
    size_t ncounts, counts_cap;
    uint64_t latency_hist[CNN_ROUTE_METRICS + 1][16]; /* by endpoint: answers within LATENCY_BOUNDS[i] */
    uint64_t latency_count[CNN_ROUTE_METRICS + 1];
    double latency_sum[CNN_ROUTE_METRICS + 1];
    uint64_t loads_ok, loads_failed;
    double load_seconds;
};

typedef struct request_count {
    int64_t version; /* -1: none (the request did not reach a version) */
    cnn_serve_route_kind kind;
    unsigned code;
    uint64_t n;
} request_count;

/* Upper bounds of the latency histogram's buckets, in seconds (the last one is +Inf). */
static const double LATENCY_BOUNDS[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NLATENCY (int)(sizeof LATENCY_BOUNDS / sizeof LATENCY_BOUNDS[0])
_Static_assert(NLATENCY < 16, "latency_hist has 16 buckets, the last one for +Inf");

/* The endpoint label of the metrics, by route kind. */
static const char *const ROUTE_API_NAMES[] = {"unknown", "status", "metadata", "predict", "classify", "server",
                                              "live", "ready", "model_metadata", "model_ready", "infer", "metrics"};
_Static_assert(sizeof ROUTE_API_NAMES / sizeof ROUTE_API_NAMES[0] == CNN_ROUTE_METRICS + 1,
               "a label for every route kind");

/* The status code of the answer the current handler call queued (0: none): handlers run on one thread from the
 * call to the queueing, so the request's record picks it up when the call returns. */
static _Thread_local unsigned answered_code;

static void log_line(const cnn_server *s, const char *fmt, ...) CNN_PRINTF(2, 3);
static void log_line(const cnn_server *s, const char *fmt, ...)
{
    if (s->cfg.quiet) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cnn serve: %s\n", buf);
}

/* The entry for `version` (< 0: the serving one) with a reference taken, or NULL. Under no lock. */
static version_entry *acquire_version(cnn_server *s, int64_t version, int *found)
{
    version_entry *e = NULL;
    *found = 0;
    pthread_mutex_lock(&s->mu);
    if (version < 0) {
        e = s->serving;
        *found = e != NULL;
    } else {
        for (int i = 0; i < s->nversions; i++)
            if (s->versions[i]->version == version) {
                *found = 1;
                if (s->versions[i]->state == VS_AVAILABLE) e = s->versions[i];
            }
    }
    if (e) e->refs++;
    pthread_mutex_unlock(&s->mu);
    return e;
}

static void release_version(cnn_server *s, version_entry *e)
{
    if (!e) return;
    pthread_mutex_lock(&s->mu);
    e->refs--;
    pthread_mutex_unlock(&s->mu);
}

// ---------------------------------------------------------------------------------------------------------------
// requests

typedef enum { RQ_READING = 0, RQ_QUEUED, RQ_DONE, RQ_ANSWERED } request_state;

typedef struct request {
    cnn_server *s;
    struct MHD_Connection *conn;
    char *body;
    size_t len, cap;
    int too_large;       /* a chunked body grew past the limit: 413 at its end */
    int answered;        /* answered at the headers (401, or 413 from Content-Length) */
    cnn_serve_route rt;
    cnn_serve_api api;
    cnn_serve_request req;
    cnn_serve_job job;
    version_entry *ve;
    float *probs;
    atomic_int state;
    int queue_refusal;   /* the submit's answer when it was not queued */
    unsigned code;       /* the answer's status code */
    struct timespec t0;  /* when its headers were read */
    char method[16];     /* for the access log */
    char path[256];
} request;

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

static enum MHD_Result send_body(struct MHD_Connection *conn, unsigned code, char *text, size_t len,
                                 const char *content_type, const char *header, const char *value)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", content_type ? content_type : "application/json");
    if (header) MHD_add_response_header(resp, header, value);
    enum MHD_Result r = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    if (r == MHD_YES) answered_code = code;
    return r;
}

/* Finishes a writer's document and sends it; a writer failure (out of memory) becomes 503. */
static enum MHD_Result send_writer(struct MHD_Connection *conn, unsigned code, cnn_json_writer *w)
{
    char *text = NULL;
    size_t len = 0;
    if (cnn_json_writer_finish(w, &text, &len) != CNN_OK) {
        static const char oom[] = "{\"error\": \"out of memory writing the answer\"}";
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", "application/json");
        enum MHD_Result r = MHD_queue_response(conn, 503, resp);
        MHD_destroy_response(resp);
        if (r == MHD_YES) answered_code = 503;
        return r;
    }
    return send_body(conn, code, text, len, NULL, NULL, NULL);
}

static enum MHD_Result send_error_h(struct MHD_Connection *conn, unsigned code, const char *header, const char *value,
                                    const char *fmt, ...) CNN_PRINTF(5, 6);
static enum MHD_Result send_error_h(struct MHD_Connection *conn, unsigned code, const char *header, const char *value,
                                    const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_json_write_begin_object(&w);
    cnn_json_write_key(&w, "error");
    /* messages may quote request bytes: the writer refuses invalid UTF-8, so keep ASCII only */
    for (char *c = msg; *c; c++)
        if ((unsigned char)*c >= 0x80 || (unsigned char)*c < 0x20) *c = '?';
    cnn_json_write_string(&w, msg);
    cnn_json_write_end_object(&w);
    char *text = NULL;
    size_t len = 0;
    if (cnn_json_writer_finish(&w, &text, &len) != CNN_OK) return MHD_NO;
    return send_body(conn, code, text, len, NULL, header, value);
}

#define send_error(conn, code, ...) send_error_h(conn, code, NULL, NULL, __VA_ARGS__)

static unsigned status_code_of(cnn_status st)
{
    switch (st) {
    case CNN_ERR_NO_MEMORY:
        return 503;
    case CNN_ERR_NOT_FOUND:
        return 404;
    case CNN_ERR_BACKEND:
    case CNN_ERR_IO:
        return 500;
    default:
        return 400;
    }
}

static void write_version_string(cnn_json_writer *w, int64_t version)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)version);
    cnn_json_write_string(w, buf);
}

/* GET /v1/models/NAME[/versions/V]: {"model_version_status": [{version, state, status}]} */
static enum MHD_Result answer_status(cnn_server *s, struct MHD_Connection *conn, const cnn_serve_route *rt)
{
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_json_write_begin_object(&w);
    cnn_json_write_key(&w, "model_version_status");
    cnn_json_write_begin_array(&w);
    int found = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->nversions; i++) {
        const version_entry *e = s->versions[i];
        /* all of them but those unloaded without a fault, unless one is asked for */
        if (rt->version >= 0 ? e->version != rt->version : (e->state == VS_END && !e->error)) continue;
        found = 1;
        cnn_json_write_begin_object(&w);
        cnn_json_write_key(&w, "version");
        write_version_string(&w, e->version);
        cnn_json_write_key(&w, "state");
        cnn_json_write_string(&w, version_state_names[e->state]);
        cnn_json_write_key(&w, "status");
        cnn_json_write_begin_object(&w);
        cnn_json_write_key(&w, "error_code");
        cnn_json_write_string(&w, e->error ? "UNKNOWN" : "OK");
        cnn_json_write_key(&w, "error_message");
        cnn_json_write_string(&w, e->error ? e->error : "");
        cnn_json_write_end_object(&w);
        cnn_json_write_end_object(&w);
    }
    pthread_mutex_unlock(&s->mu);
    cnn_json_write_end_array(&w);
    cnn_json_write_end_object(&w);
    if (!found) {
        cnn_json_writer_free(&w);
        return send_error(conn, 404, "model %s has no version %lld", s->name, (long long)rt->version);
    }
    return send_writer(conn, 200, &w);
}

static void write_dims(cnn_json_writer *w, const int64_t *dims, int n, int tf)
{
    if (tf) {
        cnn_json_write_key(w, "tensor_shape");
        cnn_json_write_begin_object(w);
        cnn_json_write_key(w, "dim");
    }
    cnn_json_write_begin_array(w);
    for (int i = 0; i < n; i++) {
        if (tf) {
            char buf[24];
            snprintf(buf, sizeof buf, "%lld", (long long)dims[i]);
            cnn_json_write_begin_object(w);
            cnn_json_write_key(w, "size");
            cnn_json_write_string(w, buf);
            cnn_json_write_key(w, "name");
            cnn_json_write_string(w, "");
            cnn_json_write_end_object(w);
        } else {
            cnn_json_write_int(w, dims[i]);
        }
    }
    cnn_json_write_end_array(w);
    if (tf) {
        cnn_json_write_key(w, "unknown_rank");
        cnn_json_write_bool(w, 0);
        cnn_json_write_end_object(w);
    }
}

static void write_class_names(cnn_json_writer *w, const cnn_serve_version *v)
{
    const char *const *names = cnn_serve_version_class_names(v);
    cnn_json_write_begin_array(w);
    for (int j = 0; j < cnn_serve_version_outputs(v); j++) {
        if (names[j]) {
            cnn_json_write_string(w, names[j]);
        } else {
            char buf[16];
            snprintf(buf, sizeof buf, "%d", j);
            cnn_json_write_string(w, buf);
        }
    }
    cnn_json_write_end_array(w);
}

/* GET .../metadata (TF Serving: the signature) and GET /v2/models/NAME[/versions/V] (the protocol's metadata). */
static enum MHD_Result answer_metadata(cnn_server *s, struct MHD_Connection *conn, const version_entry *e, int v2)
{
    cnn_serve_version *v = e->v;
    cnn_serve_spec spec;
    cnn_serve_version_spec(v, &spec);
    int64_t in_dims[4] = {-1, spec.h, spec.w, spec.c}, out_dims[2] = {-1, cnn_serve_version_outputs(v)};
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_json_write_begin_object(&w);
    if (v2) {
        cnn_json_write_key(&w, "name");
        cnn_json_write_string(&w, s->name);
        cnn_json_write_key(&w, "versions");
        cnn_json_write_begin_array(&w);
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < s->nversions; i++)
            if (s->versions[i]->state == VS_AVAILABLE) write_version_string(&w, s->versions[i]->version);
        pthread_mutex_unlock(&s->mu);
        cnn_json_write_end_array(&w);
        cnn_json_write_key(&w, "platform");
        cnn_json_write_string(&w, "cnn.c");
        for (int io = 0; io < 2; io++) {
            cnn_json_write_key(&w, io ? "outputs" : "inputs");
            cnn_json_write_begin_array(&w);
            cnn_json_write_begin_object(&w);
            cnn_json_write_key(&w, "name");
            cnn_json_write_string(&w, io ? CNN_SERVE_OUTPUT_NAME : CNN_SERVE_INPUT_NAME);
            cnn_json_write_key(&w, "datatype");
            cnn_json_write_string(&w, "FP32");
            cnn_json_write_key(&w, "shape");
            write_dims(&w, io ? out_dims : in_dims, io ? 2 : 4, 0);
            cnn_json_write_end_object(&w);
            cnn_json_write_end_array(&w);
        }
        cnn_json_write_key(&w, "parameters");
        cnn_json_write_begin_object(&w);
        cnn_json_write_key(&w, "class_names");
        write_class_names(&w, v);
        cnn_json_write_end_object(&w);
    } else {
        cnn_json_write_key(&w, "model_spec");
        cnn_json_write_begin_object(&w);
        cnn_json_write_key(&w, "name");
        cnn_json_write_string(&w, s->name);
        cnn_json_write_key(&w, "signature_name");
        cnn_json_write_string(&w, "");
        cnn_json_write_key(&w, "version");
        write_version_string(&w, e->version);
        cnn_json_write_end_object(&w);
        cnn_json_write_key(&w, "metadata");
        cnn_json_write_begin_object(&w);
        cnn_json_write_key(&w, "signature_def");
        cnn_json_write_begin_object(&w);
        cnn_json_write_key(&w, "signature_def");
        cnn_json_write_begin_object(&w);
        cnn_json_write_key(&w, "serving_default");
        cnn_json_write_begin_object(&w);
        for (int io = 0; io < 2; io++) {
            const char *name = io ? CNN_SERVE_OUTPUT_NAME : CNN_SERVE_INPUT_NAME;
            cnn_json_write_key(&w, io ? "outputs" : "inputs");
            cnn_json_write_begin_object(&w);
            cnn_json_write_key(&w, name);
            cnn_json_write_begin_object(&w);
            cnn_json_write_key(&w, "dtype");
            cnn_json_write_string(&w, "DT_FLOAT");
            write_dims(&w, io ? out_dims : in_dims, io ? 2 : 4, 1);
            cnn_json_write_key(&w, "name");
            cnn_json_write_string(&w, name);
            cnn_json_write_end_object(&w);
            cnn_json_write_end_object(&w);
        }
        cnn_json_write_key(&w, "method_name");
        cnn_json_write_string(&w, "tensorflow/serving/predict");
        cnn_json_write_end_object(&w);
        cnn_json_write_end_object(&w);
        cnn_json_write_end_object(&w);
        cnn_json_write_key(&w, "class_names");
        write_class_names(&w, v);
        cnn_json_write_key(&w, "resize");
        cnn_json_write_begin_array(&w);
        cnn_json_write_int(&w, spec.rh);
        cnn_json_write_int(&w, spec.rw);
        cnn_json_write_end_array(&w);
        cnn_json_write_end_object(&w);
    }
    cnn_json_write_end_object(&w);
    return send_writer(conn, 200, &w);
}

static enum MHD_Result answer_simple(struct MHD_Connection *conn, unsigned code, const char *k1, const char *s1,
                                     const char *k2, int b2)
{
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_json_write_begin_object(&w);
    if (k1) {
        cnn_json_write_key(&w, k1);
        cnn_json_write_string(&w, s1);
    }
    cnn_json_write_key(&w, k2);
    cnn_json_write_bool(&w, b2);
    cnn_json_write_end_object(&w);
    return send_writer(conn, code, &w);
}

static void job_done(cnn_serve_job *job)
{
    request *rq = job->ctx;
    atomic_store(&rq->state, RQ_DONE);
    MHD_resume_connection(rq->conn);
}

/* POST :predict, :classify, /infer: parse, queue, suspend; the answer is sent when the worker resumes us. */
static enum MHD_Result start_inference(request *rq)
{
    cnn_server *s = rq->s;
    struct MHD_Connection *conn = rq->conn;
    cnn_serve_spec spec;
    cnn_serve_version_spec(rq->ve->v, &spec);
    cnn_status st = cnn_serve_parse_request(rq->api, rq->body, rq->len, &spec, &rq->req);
    if (st != CNN_OK) {
        const char *msg = cnn_last_error();
        return send_error(conn, status_code_of(st), "%s", msg[0] ? msg : cnn_status_string(st));
    }
    int k = cnn_serve_version_outputs(rq->ve->v);
    rq->probs = malloc((size_t)rq->req.n * k * sizeof *rq->probs);
    if (!rq->probs) return send_error(conn, 503, "out of memory for %lld answers", (long long)rq->req.n);
    free(rq->body); /* parsed: the images are all that is needed now */
    rq->body = NULL;
    rq->job.images = rq->req.images;
    rq->job.n = rq->req.n;
    rq->job.probs = rq->probs;
    rq->job.done = job_done;
    rq->job.ctx = rq;
    atomic_store(&rq->state, RQ_QUEUED);
    /* suspended first: a worker may finish the job, and resume us, before the submit returns */
    MHD_suspend_connection(conn);
    cnn_serve_submit r = cnn_serve_version_submit(rq->ve->v, &rq->job);
    if (r != CNN_SERVE_QUEUED) {
        rq->queue_refusal = (int)r;
        atomic_store(&rq->state, RQ_DONE);
        MHD_resume_connection(conn);
    }
    (void)s;
    return MHD_YES;
}

static enum MHD_Result finish_inference(request *rq)
{
    cnn_server *s = rq->s;
    struct MHD_Connection *conn = rq->conn;
    atomic_store(&rq->state, RQ_ANSWERED);
    if (rq->queue_refusal == CNN_SERVE_QUEUE_FULL)
        return send_error_h(conn, 503, "Retry-After", "1", "the queue of model %s version %lld is full: retry later",
                            s->name, (long long)rq->ve->version);
    if (rq->queue_refusal == CNN_SERVE_STOPPING)
        return send_error_h(conn, 503, "Retry-After", "1", "model %s version %lld is being unloaded", s->name,
                            (long long)rq->ve->version);
    if (rq->job.status != CNN_OK) {
        log_line(s, "model %s version %lld: inference failed: %s", s->name, (long long)rq->ve->version,
                 rq->job.error);
        return send_error(conn, rq->job.status == CNN_ERR_NO_MEMORY ? 503 : 500, "inference failed: %s",
                          rq->job.error);
    }
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_serve_write_result(&w, rq->api, &rq->req, rq->probs, cnn_serve_version_outputs(rq->ve->v),
                           cnn_serve_version_class_names(rq->ve->v), s->name, rq->ve->version);
    return send_writer(conn, 200, &w);
}

/* The resident set of this process in bytes (/proc/self/statm), or -1. */
static long long resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long pages = -1, rss = -1;
    if (!f) return -1;
    if (fscanf(f, "%lld %lld", &pages, &rss) != 2) rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

static void metric_header(cnn_strbuf *b, const char *name, const char *type, const char *help)
{
    cnn_strbuf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value in the exposition format: backslash, double quote and newline escaped. */
static void label_value(cnn_strbuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') cnn_strbuf_append(b, "\\", 1);
        if (*v == '\n')
            cnn_strbuf_appends(b, "\\n");
        else
            cnn_strbuf_append(b, v, 1);
    }
}

/* GET /monitoring/prometheus/metrics: the Prometheus text format (version 0.0.4). */
static enum MHD_Result answer_metrics(cnn_server *s, struct MHD_Connection *conn)
{
    cnn_strbuf b;
    cnn_strbuf_init(&b);
    cnn_strbuf model;
    cnn_strbuf_init(&model);
    label_value(&model, s->name);
    const char *m = model.data ? model.data : "";

    pthread_mutex_lock(&s->metrics_mu);
    metric_header(&b, "cnn_serve_requests_total", "counter", "Requests answered, by model, version, API and status code.");
    for (size_t i = 0; i < s->ncounts; i++) {
        const request_count *c = &s->counts[i];
        char v[24] = "";
        if (c->version >= 0) snprintf(v, sizeof v, "%lld", (long long)c->version);
        cnn_strbuf_appendf(&b, "cnn_serve_requests_total{model=\"%s\",version=\"%s\",api=\"%s\",code=\"%u\"} %llu\n", m,
                           v, ROUTE_API_NAMES[c->kind], c->code, (unsigned long long)c->n);
    }
    metric_header(&b, "cnn_serve_request_duration_seconds", "histogram",
                  "Time from a request's headers to its answer, by API.");
    for (int k = 0; k <= CNN_ROUTE_METRICS; k++) {
        if (!s->latency_count[k]) continue;
        uint64_t cum = 0;
        for (int i = 0; i <= NLATENCY; i++) {
            cum += s->latency_hist[k][i];
            if (i < NLATENCY)
                cnn_strbuf_appendf(&b, "cnn_serve_request_duration_seconds_bucket{model=\"%s\",api=\"%s\",le=\"%g\"} %llu\n",
                                   m, ROUTE_API_NAMES[k], LATENCY_BOUNDS[i], (unsigned long long)cum);
            else
                cnn_strbuf_appendf(&b, "cnn_serve_request_duration_seconds_bucket{model=\"%s\",api=\"%s\",le=\"+Inf\"} %llu\n",
                                   m, ROUTE_API_NAMES[k], (unsigned long long)cum);
        }
        cnn_strbuf_appendf(&b, "cnn_serve_request_duration_seconds_sum{model=\"%s\",api=\"%s\"} %.9g\n", m,
                           ROUTE_API_NAMES[k], s->latency_sum[k]);
        cnn_strbuf_appendf(&b, "cnn_serve_request_duration_seconds_count{model=\"%s\",api=\"%s\"} %llu\n", m,
                           ROUTE_API_NAMES[k], (unsigned long long)s->latency_count[k]);
    }
    metric_header(&b, "cnn_serve_model_loads_total", "counter", "Model version loads, by result.");
    cnn_strbuf_appendf(&b, "cnn_serve_model_loads_total{model=\"%s\",result=\"ok\"} %llu\n", m,
                       (unsigned long long)s->loads_ok);
    cnn_strbuf_appendf(&b, "cnn_serve_model_loads_total{model=\"%s\",result=\"error\"} %llu\n", m,
                       (unsigned long long)s->loads_failed);
    metric_header(&b, "cnn_serve_model_load_seconds_total", "counter", "Time spent loading model versions.");
    cnn_strbuf_appendf(&b, "cnn_serve_model_load_seconds_total{model=\"%s\"} %.9g\n", m, s->load_seconds);
    pthread_mutex_unlock(&s->metrics_mu);

    /* the versions' statistics, taken under the lock, written after it (each family's samples together) */
    pthread_mutex_lock(&s->mu);
    int nv = 0;
    cnn_serve_version_stats *stats = calloc((size_t)(s->nversions ? s->nversions : 1), sizeof *stats);
    long long *numbers = calloc((size_t)(s->nversions ? s->nversions : 1), sizeof *numbers);
    for (int i = 0; stats && numbers && i < s->nversions; i++) {
        if (!s->versions[i]->v) continue;
        cnn_serve_version_stats_get(s->versions[i]->v, &stats[nv]);
        numbers[nv++] = (long long)s->versions[i]->version;
    }
    pthread_mutex_unlock(&s->mu);
    if (!stats || !numbers) b.status = CNN_ERR_NO_MEMORY;
    metric_header(&b, "cnn_serve_batch_size", "histogram", "Images per forward pass, by model version.");
    for (int i = 0; i < nv; i++) {
        uint64_t cum = 0;
        for (int h = 0; h < 16; h++) {
            cum += stats[i].batch_size_hist[h];
            if (h < 15)
                cnn_strbuf_appendf(&b, "cnn_serve_batch_size_bucket{model=\"%s\",version=\"%lld\",le=\"%d\"} %llu\n", m,
                                   numbers[i], 1 << h, (unsigned long long)cum);
        }
        cnn_strbuf_appendf(&b, "cnn_serve_batch_size_bucket{model=\"%s\",version=\"%lld\",le=\"+Inf\"} %llu\n", m,
                           numbers[i], (unsigned long long)cum);
        cnn_strbuf_appendf(&b, "cnn_serve_batch_size_sum{model=\"%s\",version=\"%lld\"} %llu\n", m, numbers[i],
                           (unsigned long long)stats[i].images);
        cnn_strbuf_appendf(&b, "cnn_serve_batch_size_count{model=\"%s\",version=\"%lld\"} %llu\n", m, numbers[i],
                           (unsigned long long)stats[i].batches);
    }
    metric_header(&b, "cnn_serve_queue_images", "gauge", "Images waiting in the batch queue, by model version.");
    for (int i = 0; i < nv; i++)
        cnn_strbuf_appendf(&b, "cnn_serve_queue_images{model=\"%s\",version=\"%lld\"} %lld\n", m, numbers[i],
                           (long long)stats[i].queued_images);
    free(stats);
    free(numbers);
    metric_header(&b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    cnn_strbuf_appendf(&b, "process_resident_memory_bytes %lld\n", resident_bytes());
    cnn_strbuf_free(&model);
    if (b.status != CNN_OK || !b.data) {
        cnn_strbuf_free(&b);
        return send_error(conn, 503, "out of memory writing the metrics");
    }
    char *text = b.data;
    size_t len = b.len;
    b.data = NULL; /* handed to the response */
    cnn_strbuf_free(&b);
    return send_body(conn, 200, text, len, "text/plain; version=0.0.4", NULL, NULL);
}

static enum MHD_Result dispatch(request *rq, const char *method)
{
    cnn_server *s = rq->s;
    struct MHD_Connection *conn = rq->conn;
    cnn_serve_route *rt = &rq->rt;
    if (rt->kind == CNN_ROUTE_NONE) return send_error(conn, 404, "no such path; see README.md, \"Serving\"");
    if (rt->bad) return send_error(conn, 404, "%s", rt->bad);
    int post = cnn_serve_route_is_post(rt->kind);
    if (strcmp(method, post ? "POST" : "GET"))
        return send_error_h(conn, 405, "Allow", post ? "POST" : "GET", "%s takes %s, not %.16s",
                            post ? "this endpoint" : "this path", post ? "POST" : "GET", method);
    if (rq->too_large)
        return send_error(conn, 413, "the request body is larger than the limit of %zu bytes", s->cfg.max_body_bytes);
    switch (rt->kind) {
    case CNN_ROUTE_V2_SERVER: {
        cnn_json_writer w;
        cnn_json_writer_init(&w, 0);
        cnn_json_write_begin_object(&w);
        cnn_json_write_key(&w, "name");
        cnn_json_write_string(&w, "cnn.c");
        cnn_json_write_key(&w, "version");
        cnn_json_write_string(&w, cnn_version());
        cnn_json_write_key(&w, "extensions");
        cnn_json_write_begin_array(&w);
        cnn_json_write_end_array(&w);
        cnn_json_write_end_object(&w);
        return send_writer(conn, 200, &w);
    }
    case CNN_ROUTE_V2_LIVE:
        return answer_simple(conn, 200, NULL, NULL, "live", 1);
    case CNN_ROUTE_METRICS:
        return answer_metrics(s, conn);
    case CNN_ROUTE_V2_READY: {
        pthread_mutex_lock(&s->mu);
        int ready = s->serving != NULL;
        pthread_mutex_unlock(&s->mu);
        return answer_simple(conn, ready ? 200 : 503, NULL, NULL, "ready", ready);
    }
    default:
        break;
    }
    /* the model's routes */
    if (rt->name_len != strlen(s->name) || memcmp(rt->name, s->name, rt->name_len))
        return send_error(conn, 404, "model '%.*s' is not served here (this server serves '%s')",
                          (int)(rt->name_len < 200 ? rt->name_len : 200), rt->name, s->name);
    if (rt->kind == CNN_ROUTE_V1_STATUS) return answer_status(s, conn, rt);
    int found;
    rq->ve = acquire_version(s, rt->version, &found);
    if (!rq->ve) {
        if (rt->version < 0) return send_error(conn, 503, "model %s has no version available", s->name);
        return send_error(conn, 404, "model %s version %lld is %s", s->name, (long long)rt->version,
                          found ? "not available" : "not found");
    }
    switch (rt->kind) {
    case CNN_ROUTE_V1_METADATA:
        return answer_metadata(s, conn, rq->ve, 0);
    case CNN_ROUTE_V2_MODEL:
        return answer_metadata(s, conn, rq->ve, 1);
    case CNN_ROUTE_V2_MODEL_READY:
        return answer_simple(conn, 200, "name", s->name, "ready", 1);
    case CNN_ROUTE_V1_PREDICT:
        rq->api = CNN_SERVE_PREDICT;
        return start_inference(rq);
    case CNN_ROUTE_V1_CLASSIFY:
        rq->api = CNN_SERVE_CLASSIFY;
        return start_inference(rq);
    case CNN_ROUTE_V2_INFER:
        rq->api = CNN_SERVE_INFER;
        return start_inference(rq);
    default:
        return send_error(conn, 404, "no such path");
    }
}

/* "Bearer <token>" against the server's token, in time that depends on the token's length only. */
static int authorized(const cnn_server *s, const char *header)
{
    static const char scheme[] = "Bearer ";
    if (!header || strncmp(header, scheme, sizeof scheme - 1)) return 0;
    const char *given = header + sizeof scheme - 1;
    size_t glen = strlen(given), wlen = strlen(s->token);
    unsigned char diff = glen != wlen;
    for (size_t i = 0; i < wlen; i++) diff |= (unsigned char)(s->token[i] ^ (i < glen ? given[i] : 0));
    return diff == 0;
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                      const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    cnn_server *s = cls;
    request *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO; /* out of memory: close the connection */
        rq->s = s;
        rq->conn = conn;
        atomic_init(&rq->state, RQ_READING);
        clock_gettime(CLOCK_MONOTONIC, &rq->t0);
        atomic_fetch_add(&s->in_flight, 1);
        *con_cls = rq;
        cnn_serve_parse_path(url, &rq->rt);
        snprintf(rq->method, sizeof rq->method, "%s", method);
        snprintf(rq->path, sizeof rq->path, "%s", url);
        if (s->token && rq->rt.kind != CNN_ROUTE_V2_LIVE && rq->rt.kind != CNN_ROUTE_V2_READY &&
            !authorized(s, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"))) {
            rq->answered = 1;
            return send_error_h(conn, 401, "WWW-Authenticate", "Bearer",
                                "this server needs \"Authorization: Bearer <token>\" (--auth-token-file)");
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (end != cl && n > s->cfg.max_body_bytes) {
                /* answered before the body is read; libmicrohttpd then closes the connection */
                rq->answered = 1;
                return send_error(conn, 413, "the request body (%llu bytes) is larger than the limit of %zu bytes",
                                  n, s->cfg.max_body_bytes);
            }
        }
        return MHD_YES;
    }
    if (rq->answered) { /* answered at the headers: whatever body comes is dropped */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rq->too_large) return MHD_YES;
        if (n > s->cfg.max_body_bytes - rq->len) { /* a chunked body past the limit: dropped, answered at its end */
            rq->too_large = 1;
            free(rq->body);
            rq->body = NULL;
            rq->len = rq->cap = 0;
            return MHD_YES;
        }
        if (rq->len + n > rq->cap) {
            size_t cap = rq->cap ? rq->cap : 4096;
            while (cap < rq->len + n) cap = cap > s->cfg.max_body_bytes / 2 ? s->cfg.max_body_bytes : cap * 2;
            char *grown = realloc(rq->body, cap);
            if (!grown) return MHD_NO;
            rq->body = grown;
            rq->cap = cap;
        }
        memcpy(rq->body + rq->len, upload_data, n);
        rq->len += n;
        return MHD_YES;
    }
    int state = atomic_load(&rq->state);
    if (state == RQ_DONE) return finish_inference(rq);
    if (state != RQ_READING) return MHD_YES; /* queued: the worker resumes us */
    return dispatch(rq, method);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    answered_code = 0;
    enum MHD_Result r = handle_request(cls, conn, url, method, upload_data, upload_data_size, con_cls);
    request *rq = *con_cls;
    if (answered_code && rq) rq->code = answered_code;
    return r;
}

static void record_request(cnn_server *s, const request *rq)
{
    int64_t version = rq->ve ? rq->ve->version : -1;
    cnn_serve_route_kind kind = rq->rt.kind;
    double secs = seconds_since(&rq->t0);
    pthread_mutex_lock(&s->metrics_mu);
    size_t i = 0;
    while (i < s->ncounts && !(s->counts[i].version == version && s->counts[i].kind == kind &&
                               s->counts[i].code == rq->code))
        i++;
    if (i == s->ncounts && cnn_array_grow(&s->counts, &s->counts_cap, i + 1, sizeof *s->counts, 16) == CNN_OK) {
        s->counts[i] = (request_count){version, kind, rq->code, 0};
        s->ncounts++;
    }
    if (i < s->ncounts) s->counts[i].n++;
    int b = 0;
    while (b < NLATENCY && secs > LATENCY_BOUNDS[b]) b++;
    s->latency_hist[kind][b]++;
    s->latency_count[kind]++;
    s->latency_sum[kind] += secs;
    pthread_mutex_unlock(&s->metrics_mu);
}

/* One line a request: time (UTC), client, "method path", status, milliseconds, model version, body bytes. Bytes
 * outside printable ASCII in the path are written as '?'. */
static void write_access_log(cnn_server *s, struct MHD_Connection *conn, const request *rq)
{
    char client[64] = "-";
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        char host[INET6_ADDRSTRLEN] = "";
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
        if (host[0]) snprintf(client, sizeof client, "%s", host);
    }
    char path[sizeof rq->path], method[sizeof rq->method];
    memcpy(path, rq->path, sizeof path);
    memcpy(method, rq->method, sizeof method);
    for (char *c = path; *c; c++)
        if (*c < 0x21 || *c > 0x7e || *c == '"') *c = '?';
    for (char *c = method; *c; c++)
        if (*c < 0x21 || *c > 0x7e || *c == '"') *c = '?';
    time_t now = time(NULL);
    struct tm tm;
    char when[32];
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char version[24] = "-";
    if (rq->ve) snprintf(version, sizeof version, "%lld", (long long)rq->ve->version);
    fprintf(s->access_log, "%s %s \"%s %s\" %u %.3f ms version=%s bytes=%zu\n", when, client, method, path, rq->code,
            seconds_since(&rq->t0) * 1e3, version, rq->len);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    cnn_server *s = cls;
    request *rq = *con_cls;
    if (!rq) return;
    *con_cls = NULL;
    record_request(s, rq);
    if (s->access_log) write_access_log(s, conn, rq);
    release_version(s, rq->ve);
    cnn_serve_request_free(&rq->req);
    free(rq->probs);
    free(rq->body);
    free(rq);
    atomic_fetch_sub(&s->in_flight, 1);
}

// ---------------------------------------------------------------------------------------------------------------
// start and stop

static void free_versions(cnn_server *s)
{
    for (int i = 0; i < s->nversions; i++) {
        cnn_serve_version_destroy(s->versions[i]->v);
        free(s->versions[i]->error);
        free(s->versions[i]);
    }
    free(s->versions);
    s->versions = NULL;
    s->nversions = 0;
    s->serving = NULL;
}

static void server_free(cnn_server *s)
{
    if (!s) return;
    free_versions(s);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->metrics_mu);
    pthread_cond_destroy(&s->poll_cv);
    if (s->access_log) fclose(s->access_log);
    free(s->tls_cert);
    if (s->tls_key) { /* a private key is not left in freed memory */
        volatile char *k = s->tls_key;
        for (size_t i = 0; k[i]; i++) k[i] = 0;
        free(s->tls_key);
    }
    if (s->token) { /* not left in freed memory */
        volatile char *t = s->token;
        for (size_t i = 0; t[i]; i++) t[i] = 0;
        free(s->token);
    }
    free(s->counts);
    free(s->name);
    free(s->base);
    free(s->host);
    free(s->device);
    free(s);
}

/* A new entry for `version`, LOADING, in the list by descending number; NULL when out of memory. Under the lock. */
static version_entry *add_entry(cnn_server *s, int64_t version)
{
    if (cnn_array_grow(&s->versions, &s->versions_cap, (size_t)s->nversions + 1, sizeof *s->versions, 8) != CNN_OK)
        return NULL;
    version_entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->version = version;
    e->state = VS_LOADING;
    int at = 0;
    while (at < s->nversions && s->versions[at]->version > version) at++;
    memmove(s->versions + at + 1, s->versions + at, (size_t)(s->nversions - at) * sizeof *s->versions);
    s->versions[at] = e;
    s->nversions++;
    return e;
}

static version_entry *find_entry(cnn_server *s, int64_t version)
{
    for (int i = 0; i < s->nversions; i++)
        if (s->versions[i]->version == version) return s->versions[i];
    return NULL;
}

/* Loads a LOADING entry's model, without the lock (a load takes long); then, under it, makes it AVAILABLE and the
 * serving version when it is newer than the one serving (the one replaced goes UNLOADING), or records its error
 * (END). A version that fails to load never replaces one that serves. */
static cnn_status load_entry(cnn_server *s, version_entry *e)
{
    size_t plen = strlen(s->base) + 64;
    char *path = malloc(plen);
    cnn_serve_version *v = NULL;
    cnn_status st;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!path) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "no memory to load version %lld", (long long)e->version);
    } else {
        snprintf(path, plen, "%s/%lld/model.safetensors", s->base, (long long)e->version);
        st = cnn_serve_version_load(path, e->version, &s->cfg, &v);
    }
    double secs = seconds_since(&t0);
    pthread_mutex_lock(&s->metrics_mu);
    s->load_seconds += secs;
    if (st == CNN_OK)
        s->loads_ok++;
    else
        s->loads_failed++;
    pthread_mutex_unlock(&s->metrics_mu);
    if (st == CNN_OK) {
        cnn_serve_spec spec;
        cnn_serve_version_spec(v, &spec);
        log_line(s, "model %s version %lld loaded from %s in %.3f s (input %dx%dx%d, %d classes)", s->name,
                 (long long)e->version, path, secs, spec.h, spec.w, spec.c, cnn_serve_version_outputs(v));
        pthread_mutex_lock(&s->mu);
        e->v = v;
        e->state = VS_AVAILABLE;
        version_entry *old = s->serving;
        if (!old || old->version < e->version) {
            s->serving = e; /* from here on, new requests without a version get this one */
            if (old) old->state = VS_UNLOADING;
        } else {
            e->state = VS_UNLOADING; /* an older version than the one serving: not kept */
        }
        pthread_mutex_unlock(&s->mu);
        if (old && s->serving == e)
            log_line(s, "model %s: version %lld serves instead of %lld, which is unloaded once its requests are "
                     "answered", s->name, (long long)e->version, (long long)old->version);
    } else {
        const char *msg = cnn_last_error();
        char *error = strdup(msg[0] ? msg : cnn_status_string(st));
        log_line(s, "model %s version %lld failed to load: %s", s->name, (long long)e->version,
                 msg[0] ? msg : cnn_status_string(st));
        pthread_mutex_lock(&s->mu);
        e->state = VS_END;
        e->error = error ? error : strdup("failed to load");
        pthread_mutex_unlock(&s->mu);
    }
    free(path);
    return st;
}

/* Frees the models of the versions replaced whose requests are all answered. */
static void reap_versions(cnn_server *s)
{
    for (;;) {
        cnn_serve_version *v = NULL;
        int64_t number = 0;
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < s->nversions && !v; i++) {
            version_entry *e = s->versions[i];
            if (e->state == VS_UNLOADING && e->refs == 0) {
                v = e->v;
                number = e->version;
                e->v = NULL;
                e->state = VS_END;
            }
        }
        pthread_mutex_unlock(&s->mu);
        if (!v) return;
        cnn_serve_version_destroy(v);
#ifdef __GLIBC__
        /* hand the freed model back to the system: its memory sat in the arena of a worker thread that is gone,
         * where glibc would keep it (bench/RESULTS.md, "Soak") */
        malloc_trim(0);
#endif
        log_line(s, "model %s version %lld unloaded", s->name, (long long)number);
    }
}

/* Loads the highest version that loads; the ones above it that failed stay listed with their error. */
static cnn_status load_latest(cnn_server *s)
{
    int64_t *list = NULL;
    int n = 0;
    cnn_status st = cnn_serve_list_versions(s->base, &list, &n);
    if (st != CNN_OK) return st;
    if (n == 0) {
        free(list);
        return cnn_error(CNN_ERR_NOT_FOUND, "model base path %s holds no version: expected %s/<version>/"
                         "model.safetensors with a numeric version", s->base, s->base);
    }
    const char *last_error = "?";
    for (int i = 0; i < n && !s->serving; i++) {
        pthread_mutex_lock(&s->mu);
        version_entry *e = add_entry(s, list[i]);
        pthread_mutex_unlock(&s->mu);
        if (!e) {
            free(list);
            return cnn_error(CNN_ERR_NO_MEMORY, "no memory for model versions");
        }
        st = load_entry(s, e);
        if (st != CNN_OK) last_error = e->error;
    }
    free(list);
    if (!s->serving)
        return cnn_error(st != CNN_OK ? st : CNN_ERR_NOT_FOUND, "model %s: no version under %s loads (the last "
                         "error: %s)", s->name, s->base, last_error);
    return CNN_OK;
}

/* One look at the base path: the highest version above the one serving that was not seen before (not tried: one
 * that failed is not tried again) is loaded and takes over. */
static void poll_once(cnn_server *s)
{
    int64_t *list = NULL;
    int n = 0;
    if (cnn_serve_list_versions(s->base, &list, &n) == CNN_OK) {
        pthread_mutex_lock(&s->mu);
        version_entry *e = NULL;
        for (int i = 0; i < n && !e && (!s->serving || list[i] > s->serving->version); i++)
            if (!find_entry(s, list[i])) e = add_entry(s, list[i]);
        pthread_mutex_unlock(&s->mu);
        if (e) load_entry(s, e);
    }
    free(list);
    reap_versions(s);
}

static void *poller_main(void *arg)
{
    cnn_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += s->cfg.poll_seconds;
        while (!s->stopping && pthread_cond_timedwait(&s->poll_cv, &s->mu, &deadline) != ETIMEDOUT) {
        }
        if (s->stopping) break;
        pthread_mutex_unlock(&s->mu);
        poll_once(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* A PEM file as a '\0'-terminated text (at most 1 MiB). */
static cnn_status read_pem(const char *path, const char *flag, char **out)
{
    unsigned char *data = NULL;
    size_t len = 0;
    cnn_status st = cnn_read_file(path, (size_t)1 << 20, &data, &len);
    if (st != CNN_OK) return cnn_error_prefix(st, "%s: ", flag);
    char *text = (char *)data; /* cnn_read_file ends the bytes with a '\0' */
    if (!strstr(text, "-----BEGIN ")) {
        free(text);
        return cnn_error(CNN_ERR_FORMAT, "%s %s: not a PEM file", flag, path);
    }
    *out = text;
    return CNN_OK;
}

static char *dup_or(const char *s, const char *fallback)
{
    const char *src = s ? s : fallback;
    return src ? strdup(src) : NULL;
}

int cnn_serve_available(void) { return 1; }

cnn_status cnn_server_start(const cnn_serve_config *cfg, cnn_server **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    if (!cfg->model_base_path || !cfg->model_name || !cfg->model_name[0])
        return cnn_error(CNN_ERR_INVALID_ARG, "the model base path and the model name are required");
    if (strpbrk(cfg->model_name, "/:"))
        return cnn_error(CNN_ERR_INVALID_ARG, "model name '%s': it may not hold '/' or ':'", cfg->model_name);
    if (cfg->port < 0 || cfg->port > 65535 || cfg->max_body_bytes < 2 || cfg->max_batch_size < 1 ||
        cfg->num_batch_threads < 1 || cfg->max_enqueued_batches < 1 || cfg->http_threads < 1 ||
        cfg->max_connections < 1 || cfg->connection_timeout_s < 0 || cfg->batch_timeout_us < 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "a server setting is out of range");
    cnn_server *s = calloc(1, sizeof *s);
    if (!s) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for the server");
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->metrics_mu, NULL);
    pthread_condattr_t ca; /* the poller's deadlines are on CLOCK_MONOTONIC */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->poll_cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&s->in_flight, 0);
    s->cfg = *cfg;
    s->name = dup_or(cfg->model_name, NULL);
    s->base = dup_or(cfg->model_base_path, NULL);
    s->host = dup_or(cfg->host, "127.0.0.1");
    s->device = cfg->device ? strdup(cfg->device) : NULL;
    s->token = cfg->auth_token ? strdup(cfg->auth_token) : NULL;
    if (!s->name || !s->base || !s->host || (cfg->device && !s->device) || (cfg->auth_token && !s->token)) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "no memory for the server");
        goto fail;
    }
    s->cfg.model_name = s->name;
    s->cfg.model_base_path = s->base;
    s->cfg.host = s->host;
    s->cfg.device = s->device;
    s->cfg.auth_token = NULL; /* s->token holds it */
    if (cfg->access_log) {
        s->access_log = fopen(cfg->access_log, "a");
        if (!s->access_log) {
            st = cnn_error(CNN_ERR_IO, "--access-log %s: %s", cfg->access_log, strerror(errno));
            goto fail;
        }
        setvbuf(s->access_log, NULL, _IOLBF, 0); /* a line is on disk (in the page cache) once written */
    }
    s->cfg.access_log = NULL;
    if (!cfg->tls_cert != !cfg->tls_key) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "TLS needs both a certificate (--tls-cert) and its key (--tls-key)");
        goto fail;
    }
    if (cfg->tls_cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            st = cnn_error(CNN_ERR_UNSUPPORTED, "this libmicrohttpd was built without TLS");
            goto fail;
        }
        CNN_TRY(read_pem(cfg->tls_cert, "--tls-cert", &s->tls_cert));
        CNN_TRY(read_pem(cfg->tls_key, "--tls-key", &s->tls_key));
    }
    s->cfg.tls_cert = s->cfg.tls_key = NULL;
    CNN_TRY(load_latest(s));

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int rc = getaddrinfo(s->host, port, &hints, &ai);
    if (rc != 0) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "--host %s: %s", s->host, gai_strerror(rc));
        goto fail;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
    if (!cfg->quiet) flags |= MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    if (s->tls_cert) flags |= MHD_USE_TLS;
    /* the TLS options come last: without TLS they are left out by ending the list before them */
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->http_threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->connection_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, s->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END,
        s->tls_cert, MHD_OPTION_HTTPS_MEM_KEY, s->tls_key, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        st = cnn_error(CNN_ERR_IO, "cannot listen on %s port %d (in use, or not an address of this machine?)",
                       s->host, cfg->port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : cfg->port;
    if (cfg->poll_seconds > 0) {
        if (pthread_create(&s->poller, NULL, poller_main, s) != 0) {
            MHD_stop_daemon(s->daemon);
            st = cnn_error(CNN_ERR_NO_MEMORY, "cannot start the version poller");
            goto fail;
        }
        s->poller_started = 1;
    }
    *out = s;
    return CNN_OK;
fail:
    server_free(s);
    return st;
}

int cnn_server_port(const cnn_server *server) { return server ? server->port : 0; }

void cnn_server_poll(cnn_server *s)
{
    if (s) poll_once(s);
}

void cnn_server_stop(cnn_server *s, int drain_ms)
{
    if (!s) return;
    /* no new connections; the requests already in flight are answered, for at most drain_ms */
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    pthread_mutex_lock(&s->mu); /* batches waiting to fill run now */
    for (int i = 0; i < s->nversions; i++) cnn_serve_version_flush(s->versions[i]->v);
    pthread_mutex_unlock(&s->mu);
    for (int waited = 0; atomic_load(&s->in_flight) > 0 && waited < drain_ms; waited += 5) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->in_flight) > 0)
        log_line(s, "%d requests were still in flight after %d ms: stopping anyway", atomic_load(&s->in_flight),
                 drain_ms);
    if (s->poller_started) { /* no version loads or unloads from here on */
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_broadcast(&s->poll_cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->poller, NULL);
        s->poller_started = 0;
    }
    /* the workers answer what is queued (and resume those connections) before the daemon goes, so no job outlives
     * its request; the versions themselves are freed after the daemon, when no request refers to them */
    for (int i = 0; i < s->nversions; i++) cnn_serve_version_stop(s->versions[i]->v);
    MHD_stop_daemon(s->daemon);
    server_free(s);
}

#endif
