/* The model server's HTTP side: GNU libmicrohttpd (a thread pool over epoll), TF Serving's REST API and the Open
 * Inference Protocol's, and the server's life from start to a drained stop.
 *
 * A request's body is gathered up to max_body_bytes (a larger Content-Length is answered 413 before any of it is
 * read; a chunked body that grows past the limit is dropped and answered 413 at its end). An inference request is
 * parsed in the HTTP thread, queued on its model version, and its connection suspended until a batch worker has
 * run it (core/serve/serve_model.c), so that HTTP threads never wait on the model. Every answer is JSON; errors are
 * {"error": "..."} with a 4xx, or 503 when the queue is full (with Retry-After) or memory ran out. */
#define _POSIX_C_SOURCE 200809L
#include "core/serve/serve.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/free_list.h"
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
    cfg->drift_threshold = 0.25; /* a PSI above 0.25 is the usual "significant shift" */
    cfg->drift_min_images = 100;
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

cnn_status cnn_server_reload(cnn_server *server)
{
    (void)server;
    return cnn_error(CNN_ERR_UNSUPPORTED, "this build has no model server");
}

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

typedef struct model model;

typedef struct version_entry {
    model *m;
    int64_t version;
    version_state state;
    char *error;            /* why it failed to load; NULL when it did not fail */
    cnn_serve_version *v;   /* loaded; NULL otherwise */
    int refs;               /* requests using v (under the server's lock) */
} version_entry; /* allocated one by one: requests keep pointers to them until the server is freed */

/* Latency histograms by endpoint (under metrics_mu). */
typedef struct latency_stats {
    uint64_t hist[CNN_ROUTE_METRICS + 1][16]; /* answers within LATENCY_BOUNDS[i] */
    uint64_t count[CNN_ROUTE_METRICS + 1];
    double sum[CNN_ROUTE_METRICS + 1];
} latency_stats;

/* A served model: its versions and what the config says of them. Allocated one by one and kept until the server is
 * freed (a model dropped from the config is marked removed), so that requests may point at them. */
struct model {
    char *name, *base;
    cnn_serve_policy policy;   /* which versions to serve (under the server's lock, as are the labels) */
    int latest;
    int64_t *specific;
    int nspecific;
    cnn_serve_label *labels;
    int nlabels;
    int removed;               /* dropped from the config: not found by requests; its versions are unloaded */
    version_entry **versions;  /* every version seen, by descending number */
    int nversions;
    size_t versions_cap;
    version_entry *serving;    /* the highest available one (requests without a version get it), or NULL */
    cnn_serve_config vcfg;     /* the server's settings with this model's name: what its versions load with */
    uint64_t loads_ok, loads_failed; /* under metrics_mu, as is what follows */
    double load_seconds;
    latency_stats latency;
};

struct cnn_server {
    cnn_serve_config cfg;
    char *config_path, *config_dir, *host, *device; /* the config's strings, copied */
    struct MHD_Daemon *daemon;
    int port;
    atomic_int in_flight; /* requests between their first byte and their answer's completion */

    pthread_mutex_t mu;       /* guards the models, their versions, policies and labels, and what follows */
    model **models;           /* in the config's order; removed ones stay */
    int nmodels;
    size_t models_cap;
    pthread_cond_t poll_cv;   /* wakes the poller to stop */
    int stopping;
    pthread_t poller;
    int poller_started;
    pthread_mutex_t poll_mu;  /* one look at the base paths or the config at a time (the poller, SIGHUP) */

    char *token;              /* the bearer token every endpoint but health needs; NULL: none */
    char *tls_cert, *tls_key; /* PEM texts ('\0'-terminated); NULL: plain HTTP */
    FILE *access_log;         /* one line per request; NULL: none */

    pthread_mutex_t metrics_mu; /* guards the metrics */
    struct request_count *counts; /* requests by model, version, endpoint and status code */
    size_t ncounts, counts_cap;
    latency_stats latency;      /* of the requests that did not reach a model */
};

typedef struct request_count {
    const model *m;  /* NULL: none (the request did not reach a model) */
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

/* The model named by name_len bytes of `name` that the config has now, or NULL. Under the lock. */
static model *find_model(cnn_server *s, const char *name, size_t name_len)
{
    for (int i = 0; i < s->nmodels; i++) {
        model *m = s->models[i];
        if (!m->removed && strlen(m->name) == name_len && !memcmp(m->name, name, name_len)) return m;
    }
    return NULL;
}

static version_entry *find_entry(model *m, int64_t version)
{
    for (int i = 0; i < m->nversions; i++)
        if (m->versions[i]->version == version) return m->versions[i];
    return NULL;
}

/* The version a route names: its number, its label's (0 and a message when the model has no such label), or -1 for
 * the one serving. Under the lock. */
static int resolve_label(const model *m, const cnn_serve_route *rt, int64_t *version, char *why, size_t n)
{
    *version = rt->version;
    if (!rt->label) return 1;
    for (int i = 0; i < m->nlabels; i++)
        if (strlen(m->labels[i].name) == rt->label_len && !memcmp(m->labels[i].name, rt->label, rt->label_len)) {
            *version = m->labels[i].version;
            return 1;
        }
    snprintf(why, n, "model %s has no version label '%.*s'%s", m->name, (int)(rt->label_len < 64 ? rt->label_len : 64),
             rt->label, m->nlabels ? "" : " (it has no labels: see --model-config)");
    return 0;
}

/* The available version a route asks for, with a reference taken; NULL with the answer's status code and message
 * when there is none. */
static version_entry *acquire_version(cnn_server *s, model *m, const cnn_serve_route *rt, unsigned *code, char *why,
                                      size_t n)
{
    version_entry *e = NULL;
    int64_t version;
    pthread_mutex_lock(&s->mu);
    *code = 404;
    if (!resolve_label(m, rt, &version, why, n)) {
    } else if (version < 0) {
        e = m->serving;
        if (!e) {
            *code = 503;
            snprintf(why, n, "model %s has no version available", m->name);
        }
    } else {
        version_entry *f = find_entry(m, version);
        if (f && f->state == VS_AVAILABLE)
            e = f;
        else if (rt->label)
            snprintf(why, n, "model %s's label '%.*s' names version %lld, which is %s", m->name, (int)rt->label_len,
                     rt->label, (long long)version, f ? "not available" : "not found");
        else
            snprintf(why, n, "model %s version %lld is %s", m->name, (long long)version,
                     f ? "not available" : "not found");
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
    model *m;            /* the model the path names, once found */
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

/* GET /v1/models/NAME[/versions/V|/labels/L]: {"model_version_status": [{version, state, status}]} */
static enum MHD_Result answer_status(cnn_server *s, struct MHD_Connection *conn, model *m, const cnn_serve_route *rt)
{
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_json_write_begin_object(&w);
    cnn_json_write_key(&w, "model_version_status");
    cnn_json_write_begin_array(&w);
    int found = 0;
    int64_t version;
    char why[256];
    pthread_mutex_lock(&s->mu);
    if (!resolve_label(m, rt, &version, why, sizeof why)) {
        pthread_mutex_unlock(&s->mu);
        cnn_json_writer_free(&w);
        return send_error(conn, 404, "%s", why);
    }
    for (int i = 0; i < m->nversions; i++) {
        const version_entry *e = m->versions[i];
        /* all of them but those unloaded without a fault, unless one is asked for */
        if (version >= 0 ? e->version != version : (e->state == VS_END && !e->error)) continue;
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
        return send_error(conn, 404, "model %s has no version %lld", m->name, (long long)version);
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
    model *m = e->m;
    cnn_serve_version *v = e->v;
    cnn_serve_spec spec;
    cnn_serve_version_spec(v, &spec);
    int64_t in_dims[4] = {-1, spec.h, spec.w, spec.c}, out_dims[2] = {-1, cnn_serve_version_outputs(v)};
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_json_write_begin_object(&w);
    if (v2) {
        cnn_json_write_key(&w, "name");
        cnn_json_write_string(&w, m->name);
        cnn_json_write_key(&w, "versions");
        cnn_json_write_begin_array(&w);
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < m->nversions; i++)
            if (m->versions[i]->state == VS_AVAILABLE) write_version_string(&w, m->versions[i]->version);
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
        cnn_json_write_string(&w, m->name);
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
                            rq->m->name, (long long)rq->ve->version);
    if (rq->queue_refusal == CNN_SERVE_STOPPING)
        return send_error_h(conn, 503, "Retry-After", "1", "model %s version %lld is being unloaded", rq->m->name,
                            (long long)rq->ve->version);
    if (rq->job.status != CNN_OK) {
        log_line(s, "model %s version %lld: inference failed: %s", rq->m->name, (long long)rq->ve->version,
                 rq->job.error);
        return send_error(conn, rq->job.status == CNN_ERR_NO_MEMORY ? 503 : 500, "inference failed: %s",
                          rq->job.error);
    }
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_serve_write_result(&w, rq->api, &rq->req, rq->probs, cnn_serve_version_outputs(rq->ve->v),
                           cnn_serve_version_class_names(rq->ve->v), rq->m->name, rq->ve->version);
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

static void latency_samples(cnn_strbuf *b, const char *m, const latency_stats *l)
{
    for (int k = 0; k <= CNN_ROUTE_METRICS; k++) {
        if (!l->count[k]) continue;
        uint64_t cum = 0;
        for (int i = 0; i <= NLATENCY; i++) {
            cum += l->hist[k][i];
            if (i < NLATENCY)
                cnn_strbuf_appendf(b, "cnn_serve_request_duration_seconds_bucket{model=\"%s\",api=\"%s\",le=\"%g\"} %llu\n",
                                   m, ROUTE_API_NAMES[k], LATENCY_BOUNDS[i], (unsigned long long)cum);
            else
                cnn_strbuf_appendf(b, "cnn_serve_request_duration_seconds_bucket{model=\"%s\",api=\"%s\",le=\"+Inf\"} %llu\n",
                                   m, ROUTE_API_NAMES[k], (unsigned long long)cum);
        }
        cnn_strbuf_appendf(b, "cnn_serve_request_duration_seconds_sum{model=\"%s\",api=\"%s\"} %.9g\n", m,
                           ROUTE_API_NAMES[k], l->sum[k]);
        cnn_strbuf_appendf(b, "cnn_serve_request_duration_seconds_count{model=\"%s\",api=\"%s\"} %llu\n", m,
                           ROUTE_API_NAMES[k], (unsigned long long)l->count[k]);
    }
}

/* A model's name as a label value (escaped), in a buffer of the caller's. */
static const char *model_label(cnn_strbuf *tmp, const model *m)
{
    tmp->len = 0;
    if (tmp->data) tmp->data[0] = '\0';
    if (m) label_value(tmp, m->name);
    return tmp->data ? tmp->data : "";
}

/* One version's samples of one family of the version metrics; `family` picks it. Under the server's lock. */
enum { FAM_BATCH, FAM_QUEUE, FAM_IMAGES, FAM_MEAN, FAM_STD, FAM_SHARE, FAM_PSI, FAM_Z, NFAM };

static void version_samples(cnn_strbuf *b, int family, const char *m, const version_entry *e,
                            const cnn_serve_version_stats *stats, const cnn_serve_drift *d)
{
    long long v = (long long)e->version;
    switch (family) {
    case FAM_BATCH: {
        uint64_t cum = 0;
        for (int h = 0; h < 16; h++) {
            cum += stats->batch_size_hist[h];
            if (h < 15)
                cnn_strbuf_appendf(b, "cnn_serve_batch_size_bucket{model=\"%s\",version=\"%lld\",le=\"%d\"} %llu\n", m,
                                   v, 1 << h, (unsigned long long)cum);
        }
        cnn_strbuf_appendf(b, "cnn_serve_batch_size_bucket{model=\"%s\",version=\"%lld\",le=\"+Inf\"} %llu\n", m, v,
                           (unsigned long long)cum);
        cnn_strbuf_appendf(b, "cnn_serve_batch_size_sum{model=\"%s\",version=\"%lld\"} %llu\n", m, v,
                           (unsigned long long)stats->images);
        cnn_strbuf_appendf(b, "cnn_serve_batch_size_count{model=\"%s\",version=\"%lld\"} %llu\n", m, v,
                           (unsigned long long)stats->batches);
        break;
    }
    case FAM_QUEUE:
        cnn_strbuf_appendf(b, "cnn_serve_queue_images{model=\"%s\",version=\"%lld\"} %lld\n", m, v,
                           (long long)stats->queued_images);
        break;
    case FAM_IMAGES:
        cnn_strbuf_appendf(b, "cnn_serve_drift_images{model=\"%s\",version=\"%lld\"} %llu\n", m, v,
                           (unsigned long long)d->images);
        break;
    case FAM_MEAN:
    case FAM_STD:
    case FAM_Z:
        if (family == FAM_Z && !d->has_profile) break;
        for (int ch = 0; ch < d->c; ch++)
            cnn_strbuf_appendf(b, "%s{model=\"%s\",version=\"%lld\",channel=\"%d\"} %.9g\n",
                               family == FAM_MEAN ? "cnn_serve_input_mean" : family == FAM_STD ? "cnn_serve_input_std"
                                                                                            : "cnn_serve_drift_channel_z",
                               m, v, ch, family == FAM_MEAN ? d->mean[ch] : family == FAM_STD ? d->std[ch] : d->z[ch]);
        break;
    case FAM_SHARE: {
        const char *const *names = cnn_serve_version_class_names(e->v);
        for (int j = 0; j < d->k; j++) {
            cnn_strbuf_appendf(b, "cnn_serve_predicted_class_share{model=\"%s\",version=\"%lld\",class=\"", m, v);
            if (names[j])
                label_value(b, names[j]);
            else
                cnn_strbuf_appendf(b, "%d", j);
            cnn_strbuf_appendf(b, "\"} %.9g\n", d->class_share[j]);
        }
        break;
    }
    case FAM_PSI:
        if (d->has_profile)
            cnn_strbuf_appendf(b, "cnn_serve_drift_psi{model=\"%s\",version=\"%lld\"} %.9g\n", m, v, d->psi);
        break;
    }
}

/* GET /monitoring/prometheus/metrics: the Prometheus text format (version 0.0.4). */
static enum MHD_Result answer_metrics(cnn_server *s, struct MHD_Connection *conn)
{
    static const char *const fam_headers[NFAM][3] = {
        {"cnn_serve_batch_size", "histogram", "Images per forward pass, by model version."},
        {"cnn_serve_queue_images", "gauge", "Images waiting in the batch queue, by model version."},
        {"cnn_serve_drift_images", "gauge", "Images a model version has answered (what the drift statistics count)."},
        {"cnn_serve_input_mean", "gauge", "Mean of the served pixels ([0, 1] scale), by model version and channel."},
        {"cnn_serve_input_std", "gauge", "Std of the served pixels ([0, 1] scale), by model version and channel."},
        {"cnn_serve_predicted_class_share", "gauge", "Share of the answered images whose top class is this one."},
        {"cnn_serve_drift_psi", "gauge", "Population stability index of the top classes against the training set's "
                                         "class frequencies (models with a data profile)."},
        {"cnn_serve_drift_channel_z", "gauge", "(served mean - training mean) / training std, by input channel "
                                               "(models with a data profile)."},
    };
    cnn_strbuf b, tmp;
    cnn_strbuf_init(&b);
    cnn_strbuf_init(&tmp);

    /* the models stay allocated until the server is freed: their names may be read without the lock */
    pthread_mutex_lock(&s->mu);
    int nm = s->nmodels;
    model **models = malloc((size_t)(nm ? nm : 1) * sizeof *models);
    if (models) memcpy(models, s->models, (size_t)nm * sizeof *models);
    pthread_mutex_unlock(&s->mu);
    if (!models) {
        cnn_strbuf_free(&tmp);
        return send_error(conn, 503, "out of memory writing the metrics");
    }
    pthread_mutex_lock(&s->metrics_mu);
    metric_header(&b, "cnn_serve_requests_total", "counter", "Requests answered, by model, version, API and status code.");
    for (size_t i = 0; i < s->ncounts; i++) {
        const request_count *c = &s->counts[i];
        char v[24] = "";
        if (c->version >= 0) snprintf(v, sizeof v, "%lld", (long long)c->version);
        cnn_strbuf_appendf(&b, "cnn_serve_requests_total{model=\"%s\",version=\"%s\",api=\"%s\",code=\"%u\"} %llu\n",
                           model_label(&tmp, c->m), v, ROUTE_API_NAMES[c->kind], c->code, (unsigned long long)c->n);
    }
    metric_header(&b, "cnn_serve_request_duration_seconds", "histogram",
                  "Time from a request's headers to its answer, by model and API.");
    latency_samples(&b, "", &s->latency);
    for (int i = 0; i < nm; i++) latency_samples(&b, model_label(&tmp, models[i]), &models[i]->latency);
    metric_header(&b, "cnn_serve_model_loads_total", "counter", "Model version loads, by result.");
    for (int i = 0; i < nm; i++) {
        const char *m = model_label(&tmp, models[i]);
        cnn_strbuf_appendf(&b, "cnn_serve_model_loads_total{model=\"%s\",result=\"ok\"} %llu\n", m,
                           (unsigned long long)models[i]->loads_ok);
        cnn_strbuf_appendf(&b, "cnn_serve_model_loads_total{model=\"%s\",result=\"error\"} %llu\n", m,
                           (unsigned long long)models[i]->loads_failed);
    }
    metric_header(&b, "cnn_serve_model_load_seconds_total", "counter", "Time spent loading model versions.");
    for (int i = 0; i < nm; i++)
        cnn_strbuf_appendf(&b, "cnn_serve_model_load_seconds_total{model=\"%s\"} %.9g\n", model_label(&tmp, models[i]),
                           models[i]->load_seconds);
    pthread_mutex_unlock(&s->metrics_mu);
    free(models);

    /* the loaded versions' statistics, under the lock (a version is freed only after the reaper took it out under
     * it), each family's samples together */
    pthread_mutex_lock(&s->mu);
    for (int f = 0; f < NFAM; f++) {
        metric_header(&b, fam_headers[f][0], fam_headers[f][1], fam_headers[f][2]);
        for (int i = 0; i < s->nmodels; i++) {
            const model *mo = s->models[i];
            const char *m = model_label(&tmp, mo);
            for (int j = 0; j < mo->nversions; j++) {
                version_entry *e = mo->versions[j];
                if (!e->v) continue;
                cnn_serve_version_stats stats;
                cnn_serve_drift d;
                cnn_serve_version_stats_get(e->v, &stats);
                if (cnn_serve_version_drift(e->v, &d) != CNN_OK) {
                    b.status = CNN_ERR_NO_MEMORY;
                    continue;
                }
                version_samples(&b, f, m, e, &stats, &d);
                cnn_serve_drift_free(&d);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    metric_header(&b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    cnn_strbuf_appendf(&b, "process_resident_memory_bytes %lld\n", resident_bytes());
    cnn_strbuf_free(&tmp);
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
    case CNN_ROUTE_V2_READY: { /* every model has a version to serve */
        pthread_mutex_lock(&s->mu);
        int ready = 1;
        for (int i = 0; i < s->nmodels; i++) ready &= s->models[i]->removed || s->models[i]->serving != NULL;
        pthread_mutex_unlock(&s->mu);
        return answer_simple(conn, ready ? 200 : 503, NULL, NULL, "ready", ready);
    }
    default:
        break;
    }
    /* the model's routes */
    pthread_mutex_lock(&s->mu);
    rq->m = find_model(s, rt->name, rt->name_len);
    char served[512] = "";
    for (int i = 0, len = 0; !rq->m && i < s->nmodels && len < (int)sizeof served; i++)
        if (!s->models[i]->removed)
            len += snprintf(served + len, sizeof served - (size_t)len, "%s'%s'", len ? ", " : "", s->models[i]->name);
    pthread_mutex_unlock(&s->mu);
    if (!rq->m)
        return send_error(conn, 404, "model '%.*s' is not served here (this server serves %s)",
                          (int)(rt->name_len < 200 ? rt->name_len : 200), rt->name, served);
    if (rt->kind == CNN_ROUTE_V1_STATUS) return answer_status(s, conn, rq->m, rt);
    unsigned code;
    char why[512];
    rq->ve = acquire_version(s, rq->m, rt, &code, why, sizeof why);
    if (!rq->ve) return send_error(conn, code, "%s", why);
    switch (rt->kind) {
    case CNN_ROUTE_V1_METADATA:
        return answer_metadata(s, conn, rq->ve, 0);
    case CNN_ROUTE_V2_MODEL:
        return answer_metadata(s, conn, rq->ve, 1);
    case CNN_ROUTE_V2_MODEL_READY:
        return answer_simple(conn, 200, "name", rq->m->name, "ready", 1);
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
    while (i < s->ncounts && !(s->counts[i].m == rq->m && s->counts[i].version == version &&
                               s->counts[i].kind == kind && s->counts[i].code == rq->code))
        i++;
    if (i == s->ncounts && cnn_array_grow(&s->counts, &s->counts_cap, i + 1, sizeof *s->counts, 16) == CNN_OK) {
        s->counts[i] = (request_count){rq->m, version, kind, rq->code, 0};
        s->ncounts++;
    }
    if (i < s->ncounts) s->counts[i].n++;
    int b = 0;
    while (b < NLATENCY && secs > LATENCY_BOUNDS[b]) b++;
    latency_stats *l = rq->m ? &rq->m->latency : &s->latency;
    l->hist[kind][b]++;
    l->count[kind]++;
    l->sum[kind] += secs;
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
// models and their versions: what the policy wants, loading, unloading

static void free_model(model *m)
{
    for (int i = 0; i < m->nversions; i++) {
        cnn_serve_version_destroy(m->versions[i]->v);
        free(m->versions[i]->error);
        free(m->versions[i]);
    }
    free(m->versions);
    for (int i = 0; i < m->nlabels; i++) free(m->labels[i].name);
    free(m->labels);
    free(m->specific);
    free(m->name);
    free(m->base);
    free(m);
}

static void server_free(cnn_server *s)
{
    if (!s) return;
    for (int i = 0; i < s->nmodels; i++) free_model(s->models[i]);
    free(s->models);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->poll_mu);
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
    CNN_FREE_ALL(s->counts, s->config_path, s->config_dir, s->host, s->device, s);
}

/* A new entry for `version`, LOADING, in the list by descending number; NULL when out of memory. Under the lock. */
static version_entry *add_entry(model *m, int64_t version)
{
    if (cnn_array_grow(&m->versions, &m->versions_cap, (size_t)m->nversions + 1, sizeof *m->versions, 8) != CNN_OK)
        return NULL;
    version_entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->m = m;
    e->version = version;
    e->state = VS_LOADING;
    int at = 0;
    while (at < m->nversions && m->versions[at]->version > version) at++;
    memmove(m->versions + at + 1, m->versions + at, (size_t)(m->nversions - at) * sizeof *m->versions);
    m->versions[at] = e;
    m->nversions++;
    return e;
}

/* The highest available version, which requests without a version or label get. Under the lock. */
static void update_serving(cnn_server *s, model *m)
{
    version_entry *old = m->serving, *best = NULL;
    for (int i = 0; i < m->nversions && !best; i++)
        if (m->versions[i]->state == VS_AVAILABLE) best = m->versions[i];
    m->serving = best;
    if (old && best && old != best)
        log_line(s, "model %s: version %lld serves instead of %lld%s", m->name, (long long)best->version,
                 (long long)old->version, old->state == VS_UNLOADING ? ", which is unloaded once its requests are "
                 "answered" : "");
}

/* Loads a LOADING entry's model without the lock (a load takes long); then, under it, makes it AVAILABLE (and the
 * serving version when it is the highest), or records its error (END). */
static cnn_status load_entry(cnn_server *s, model *m, version_entry *e)
{
    size_t plen = strlen(m->base) + 64;
    char *path = malloc(plen);
    cnn_serve_version *v = NULL;
    cnn_status st;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!path) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "no memory to load version %lld", (long long)e->version);
    } else {
        snprintf(path, plen, "%s/%lld/model.safetensors", m->base, (long long)e->version);
        st = cnn_serve_version_load(path, e->version, &m->vcfg, &v);
    }
    double secs = seconds_since(&t0);
    pthread_mutex_lock(&s->metrics_mu);
    m->load_seconds += secs;
    if (st == CNN_OK)
        m->loads_ok++;
    else
        m->loads_failed++;
    pthread_mutex_unlock(&s->metrics_mu);
    if (st == CNN_OK) {
        cnn_serve_spec spec;
        cnn_serve_version_spec(v, &spec);
        log_line(s, "model %s version %lld loaded from %s in %.3f s (input %dx%dx%d, %d classes)", m->name,
                 (long long)e->version, path, secs, spec.h, spec.w, spec.c, cnn_serve_version_outputs(v));
        pthread_mutex_lock(&s->mu);
        e->v = v;
        e->state = VS_AVAILABLE;
        update_serving(s, m); /* from here on, new requests without a version get the highest */
        pthread_mutex_unlock(&s->mu);
    } else {
        const char *msg = cnn_last_error();
        char *error = strdup(msg[0] ? msg : cnn_status_string(st));
        log_line(s, "model %s version %lld failed to load: %s", m->name, (long long)e->version,
                 msg[0] ? msg : cnn_status_string(st));
        pthread_mutex_lock(&s->mu);
        e->state = VS_END;
        e->error = error ? error : strdup("failed to load");
        pthread_mutex_unlock(&s->mu);
    }
    free(path);
    return st;
}

/* Whether the policy wants `version`, the versions on disk being list[0..n) (descending). Versions that failed to
 * load do not count: the latest N are the N highest that load, so a broken new version never displaces one that
 * serves. Under the lock. */
static int wanted(const model *m, const int64_t *list, int n, int64_t version)
{
    if (m->removed) return 0;
    int rank = 0, on_disk = 0;
    for (int i = 0; i < n; i++) {
        if (list[i] == version) {
            on_disk = 1;
            break;
        }
        const version_entry *e = find_entry((model *)m, list[i]);
        if (!(e && e->error)) rank++;
    }
    if (!on_disk) return 0;
    switch (m->policy) {
    case CNN_SERVE_POLICY_ALL:
        return 1;
    case CNN_SERVE_POLICY_SPECIFIC:
        for (int i = 0; i < m->nspecific; i++)
            if (m->specific[i] == version) return 1;
        return 0;
    default:
        return rank < m->latest;
    }
}

/* Brings a model's versions in line with its policy and the base path: loads (in this thread, one at a time, highest
 * first) the wanted versions not loaded yet, then marks the available ones no longer wanted UNLOADING, once a wanted
 * one is available (a model is never left with nothing to serve by a change on disk). The reaper frees them when
 * their requests are answered. Returns the last load's failure, CNN_OK when none failed. */
static cnn_status reconcile(cnn_server *s, model *m)
{
    int64_t *list = NULL;
    int n = 0;
    cnn_status last = CNN_OK;
    if (!m->removed) {
        cnn_status st = cnn_serve_list_versions(m->base, &list, &n);
        if (st != CNN_OK) return st;
    }
    /* each round loads one version; a failure changes what is wanted (the next highest), so look again */
    for (int round = 0; round <= n; round++) {
        version_entry *e = NULL;
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < n && !e; i++) {
            if (!wanted(m, list, n, list[i])) continue;
            version_entry *f = find_entry(m, list[i]);
            if (!f) {
                e = add_entry(m, list[i]);
                if (!e) last = cnn_error(CNN_ERR_NO_MEMORY, "no memory for model versions");
            } else if (f->state == VS_END && !f->error && !f->v) { /* unloaded before, wanted again */
                f->state = VS_LOADING;
                e = f;
            }
        }
        pthread_mutex_unlock(&s->mu);
        if (!e) break;
        cnn_status st = load_entry(s, m, e);
        if (st != CNN_OK) last = st;
    }
    pthread_mutex_lock(&s->mu);
    int have = 0;
    for (int i = 0; i < m->nversions; i++)
        have |= m->versions[i]->state == VS_AVAILABLE && wanted(m, list, n, m->versions[i]->version);
    if (have || m->removed)
        for (int i = 0; i < m->nversions; i++) {
            version_entry *e = m->versions[i];
            if (e->state == VS_AVAILABLE && !wanted(m, list, n, e->version)) e->state = VS_UNLOADING;
        }
    update_serving(s, m);
    pthread_mutex_unlock(&s->mu);
    free(list);
    return last;
}

/* Frees the models of the versions no longer wanted whose requests are all answered. */
static void reap_versions(cnn_server *s)
{
    for (;;) {
        cnn_serve_version *v = NULL;
        int64_t number = 0;
        const model *m = NULL;
        pthread_mutex_lock(&s->mu);
        for (int k = 0; k < s->nmodels && !v; k++)
            for (int i = 0; i < s->models[k]->nversions && !v; i++) {
                version_entry *e = s->models[k]->versions[i];
                if (e->state == VS_UNLOADING && e->refs == 0) {
                    v = e->v;
                    number = e->version;
                    m = s->models[k];
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
        log_line(s, "model %s version %lld unloaded", m->name, (long long)number);
    }
}

/* Sets a model's policy and labels from its spec (under the lock). */
static cnn_status apply_spec(model *m, const cnn_serve_model_spec *spec)
{
    int64_t *specific = NULL;
    cnn_serve_label *labels = NULL;
    if (spec->nversions && !(specific = malloc((size_t)spec->nversions * sizeof *specific)))
        return cnn_error(CNN_ERR_NO_MEMORY, "no memory for model %s's config", spec->name);
    if (spec->nlabels && !(labels = calloc((size_t)spec->nlabels, sizeof *labels))) {
        free(specific);
        return cnn_error(CNN_ERR_NO_MEMORY, "no memory for model %s's config", spec->name);
    }
    for (int i = 0; i < spec->nlabels; i++) {
        labels[i].version = spec->labels[i].version;
        if (!(labels[i].name = strdup(spec->labels[i].name))) {
            for (int j = 0; j < i; j++) free(labels[j].name);
            free(labels);
            free(specific);
            return cnn_error(CNN_ERR_NO_MEMORY, "no memory for model %s's config", spec->name);
        }
    }
    if (spec->nversions) memcpy(specific, spec->versions, (size_t)spec->nversions * sizeof *specific);
    for (int i = 0; i < m->nlabels; i++) free(m->labels[i].name);
    free(m->labels);
    free(m->specific);
    m->policy = spec->policy;
    m->latest = spec->latest > 0 ? spec->latest : 1;
    m->specific = specific;
    m->nspecific = spec->nversions;
    m->labels = labels;
    m->nlabels = spec->nlabels;
    m->removed = 0;
    return CNN_OK;
}

/* A new model from its spec, appended to the server's (under the lock). */
static cnn_status add_model(cnn_server *s, const cnn_serve_model_spec *spec, model **out)
{
    model *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(spec->name)) || !(m->base = strdup(spec->base_path)) ||
        cnn_array_grow(&s->models, &s->models_cap, (size_t)s->nmodels + 1, sizeof *s->models, 4) != CNN_OK) {
        if (m) free_model(m);
        return cnn_error(CNN_ERR_NO_MEMORY, "no memory for model %s", spec->name);
    }
    cnn_status st = apply_spec(m, spec);
    if (st != CNN_OK) {
        free_model(m);
        return st;
    }
    m->vcfg = s->cfg;
    m->vcfg.model_name = m->name;
    m->vcfg.model_base_path = m->base;
    s->models[s->nmodels++] = m;
    *out = m;
    return CNN_OK;
}

/* The config file's models (a server started with one), read now. */
static cnn_status read_model_config(cnn_server *s, cnn_serve_model_config *c)
{
    unsigned char *text = NULL;
    size_t len = 0;
    cnn_status st = cnn_read_file(s->config_path, (size_t)1 << 20, &text, &len);
    if (st != CNN_OK) return cnn_error_prefix(st, "--model-config: ");
    st = cnn_serve_parse_model_config((const char *)text, len, s->config_dir, c);
    free(text);
    if (st != CNN_OK) return cnn_error_prefix(st, "--model-config %s: ", s->config_path);
    return CNN_OK;
}

/* Makes the server's models those of the specs: new ones added, known ones given their new policy and labels (a
 * changed base path makes a new model of that name), missing ones marked removed; then each is reconciled. */
static cnn_status apply_config(cnn_server *s, const cnn_serve_model_config *c, int starting)
{
    cnn_status st = CNN_OK;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->nmodels; i++) {
        model *m = s->models[i];
        int keep = 0;
        for (int j = 0; j < c->n && !keep; j++)
            keep = !strcmp(c->models[j].name, m->name) && !strcmp(c->models[j].base_path, m->base);
        if (!keep && !m->removed) {
            m->removed = 1;
            log_line(s, "model %s: no longer in the config: unloaded once its requests are answered", m->name);
        }
    }
    for (int j = 0; j < c->n && st == CNN_OK; j++) {
        model *m = NULL;
        for (int i = 0; i < s->nmodels && !m; i++)
            if (!strcmp(s->models[i]->name, c->models[j].name) && !strcmp(s->models[i]->base, c->models[j].base_path))
                m = s->models[i];
        st = m ? apply_spec(m, &c->models[j]) : add_model(s, &c->models[j], &m);
    }
    int nm = s->nmodels;
    pthread_mutex_unlock(&s->mu);
    if (st != CNN_OK) return st;
    for (int i = 0; i < nm; i++) {
        model *m = s->models[i]; /* only this thread (under poll_mu) adds models */
        cnn_status r = reconcile(s, m);
        if (!starting || m->removed || m->serving) continue;
        const version_entry *failed = NULL; /* the highest one that failed */
        pthread_mutex_lock(&s->mu);
        for (int k = 0; k < m->nversions && !failed; k++)
            if (m->versions[k]->error) failed = m->versions[k];
        pthread_mutex_unlock(&s->mu);
        if (failed)
            return cnn_error(r != CNN_OK ? r : CNN_ERR_FORMAT, "model %s: no version under %s loads (version %lld: %s)",
                             m->name, m->base, (long long)failed->version, failed->error);
        if (r != CNN_OK) return r; /* the base path cannot be listed: its message */
        return cnn_error(CNN_ERR_NOT_FOUND, "model %s: base path %s holds no version%s: expected %s/<version>/"
                         "model.safetensors with a numeric version", m->name, m->base,
                         m->policy == CNN_SERVE_POLICY_SPECIFIC ? " that the version policy names" : "", m->base);
    }
    reap_versions(s);
    return CNN_OK;
}

/* One look at every model's base path (and nothing else), serialized with reloads. */
static void poll_once(cnn_server *s)
{
    pthread_mutex_lock(&s->poll_mu);
    pthread_mutex_lock(&s->mu);
    int nm = s->nmodels;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < nm; i++) {
        pthread_mutex_lock(&s->mu);
        model *m = s->models[i];
        pthread_mutex_unlock(&s->mu);
        reconcile(s, m);
    }
    reap_versions(s);
    pthread_mutex_unlock(&s->poll_mu);
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

/* The models a server starts with: the config file's, or the one the flags name. */
static cnn_status initial_models(cnn_server *s, const cnn_serve_config *cfg, cnn_serve_model_config *c)
{
    memset(c, 0, sizeof *c);
    if (cfg->model_config) {
        if (cfg->model_base_path || cfg->model_name)
            return cnn_error(CNN_ERR_INVALID_ARG, "a model config file names the models: the model base path and name "
                             "go in it, not beside it");
        const char *slash = strrchr(cfg->model_config, '/');
        s->config_path = strdup(cfg->model_config);
        s->config_dir = slash ? strndup(cfg->model_config, (size_t)(slash - cfg->model_config + (slash == cfg->model_config)))
                              : strdup(".");
        if (!s->config_path || !s->config_dir) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for the server");
        return read_model_config(s, c);
    }
    if (!cfg->model_base_path || !cfg->model_name || !cfg->model_name[0])
        return cnn_error(CNN_ERR_INVALID_ARG, "the model base path and the model name are required (or a model "
                         "config file)");
    if (strpbrk(cfg->model_name, "/:"))
        return cnn_error(CNN_ERR_INVALID_ARG, "model name '%s': it may not hold '/' or ':'", cfg->model_name);
    c->models = calloc(1, sizeof *c->models);
    if (!c->models) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for the server");
    c->n = 1;
    c->models[0].name = strdup(cfg->model_name);
    c->models[0].base_path = strdup(cfg->model_base_path);
    c->models[0].policy = CNN_SERVE_POLICY_LATEST;
    c->models[0].latest = 1;
    if (!c->models[0].name || !c->models[0].base_path) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for the server");
    return CNN_OK;
}

cnn_status cnn_server_start(const cnn_serve_config *cfg, cnn_server **out)
{
    cnn_status st = CNN_OK;
    cnn_serve_model_config models = {0};
    *out = NULL;
    if (cfg->port < 0 || cfg->port > 65535 || cfg->max_body_bytes < 2 || cfg->max_batch_size < 1 ||
        cfg->num_batch_threads < 1 || cfg->max_enqueued_batches < 1 || cfg->http_threads < 1 ||
        cfg->max_connections < 1 || cfg->connection_timeout_s < 0 || cfg->batch_timeout_us < 0 ||
        !(cfg->drift_threshold == cfg->drift_threshold) || cfg->drift_min_images < 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "a server setting is out of range");
    cnn_server *s = calloc(1, sizeof *s);
    if (!s) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for the server");
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->poll_mu, NULL);
    pthread_mutex_init(&s->metrics_mu, NULL);
    pthread_condattr_t ca; /* the poller's deadlines are on CLOCK_MONOTONIC */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->poll_cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&s->in_flight, 0);
    s->cfg = *cfg;
    s->host = dup_or(cfg->host, "127.0.0.1");
    s->device = cfg->device ? strdup(cfg->device) : NULL;
    s->token = cfg->auth_token ? strdup(cfg->auth_token) : NULL;
    if (!s->host || (cfg->device && !s->device) || (cfg->auth_token && !s->token)) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "no memory for the server");
        goto fail;
    }
    CNN_TRY(initial_models(s, cfg, &models));
    s->cfg.model_name = NULL; /* each model's own config has them */
    s->cfg.model_base_path = NULL;
    s->cfg.model_config = NULL;
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
    CNN_TRY(apply_config(s, &models, 1));
    cnn_serve_model_config_free(&models);

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
    cnn_serve_model_config_free(&models);
    server_free(s);
    return st;
}

int cnn_server_port(const cnn_server *server) { return server ? server->port : 0; }

void cnn_server_poll(cnn_server *s)
{
    if (s) poll_once(s);
}

cnn_status cnn_server_reload(cnn_server *s)
{
    if (!s) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_server_reload: no server");
    if (!s->config_path) {
        poll_once(s);
        return CNN_OK;
    }
    cnn_serve_model_config c;
    pthread_mutex_lock(&s->poll_mu);
    cnn_status st = read_model_config(s, &c);
    if (st == CNN_OK) {
        st = apply_config(s, &c, 0);
        cnn_serve_model_config_free(&c);
    }
    pthread_mutex_unlock(&s->poll_mu);
    if (st != CNN_OK) log_line(s, "the config was not reloaded: %s", cnn_last_error());
    return st;
}

void cnn_server_stop(cnn_server *s, int drain_ms)
{
    if (!s) return;
    /* no new connections; the requests already in flight are answered, for at most drain_ms */
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    pthread_mutex_lock(&s->mu); /* batches waiting to fill run now */
    for (int k = 0; k < s->nmodels; k++)
        for (int i = 0; i < s->models[k]->nversions; i++) cnn_serve_version_flush(s->models[k]->versions[i]->v);
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
    /* a reload that runs now (SIGHUP, another thread) finishes first */
    pthread_mutex_lock(&s->poll_mu);
    pthread_mutex_unlock(&s->poll_mu);
    /* the workers answer what is queued (and resume those connections) before the daemon goes, so no job outlives
     * its request; the versions themselves are freed after the daemon, when no request refers to them */
    for (int k = 0; k < s->nmodels; k++)
        for (int i = 0; i < s->models[k]->nversions; i++) cnn_serve_version_stop(s->models[k]->versions[i]->v);
    MHD_stop_daemon(s->daemon);
    server_free(s);
}

#endif
