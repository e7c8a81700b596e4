/* The model server's internals (include/cnn/serve.h is the public side).
 *
 *   core/serve/serve_api.c    request bodies to images, results to response bodies: no network, no model (fuzzed)
 *   core/serve/serve_model.c  model versions: loading, the batch queue and its workers
 *   core/serve/serve_http.c   libmicrohttpd: routing, status codes, the server's life (built when it is found) */
#ifndef CNN_CORE_SERVE_H
#define CNN_CORE_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/serve.h"
#include "core/io/json.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------------------------
// requests and responses (core/serve/serve_api.c)

/* What a request's images must fit: the model's input and how files are prepared for it (as cnn predict does). */
typedef struct cnn_serve_spec {
    int h, w, c;          /* the model's input */
    int rh, rw;           /* encoded images are resized to rh x rw, then centre-cropped to h x w (rh == h: no crop) */
    long long max_pixels; /* the decoder's cap on an encoded image's declared pixels (<= 0: the library's) */
    int max_images;       /* the most images one request may hold */
} cnn_serve_spec;

typedef enum cnn_serve_api {
    CNN_SERVE_PREDICT = 0, /* TF Serving :predict: "instances" (rows) or "inputs" (columns) */
    CNN_SERVE_CLASSIFY,    /* TF Serving :classify: the same, or "examples"; optional "top_k" */
    CNN_SERVE_INFER,       /* Open Inference Protocol .../infer: "inputs": [{name, shape, datatype, data}] */
} cnn_serve_api;

/* A parsed request: n images, ready for cnn_net_predict (in [0, 1] scale, not normalized). */
typedef struct cnn_serve_request {
    int64_t n;
    float *images;  /* (n, h, w, c); owned */
    int columnar;   /* TF Serving: the request said "inputs", so the answer says "outputs" */
    int top_k;      /* classify: classes to return per image; 0: all */
    char *id;       /* infer: the request's "id", echoed in the answer; NULL when none */
    char *input_name; /* infer: the input's name as the request gave it; NULL when none */
} cnn_serve_request;

/* Name of the model's single input and output in metadata and in the inference protocol. */
#define CNN_SERVE_INPUT_NAME "input"
#define CNN_SERVE_OUTPUT_NAME "probabilities"

/* Parses a request body (len bytes, no '\0' needed) into images for `spec`. Numbers are taken as pixel values in
 * the model's [0, 1] scale and must be finite floats; encoded images ({"b64": ...}, or BYTES elements) are decoded,
 * resized and cropped as cnn predict does. Errors (CNN_ERR_FORMAT, _SHAPE, _NUMERIC, _UNSUPPORTED, _INVALID_ARG,
 * _NO_MEMORY) leave a message that names the field, the instance and the element; *out is then empty. */
cnn_status cnn_serve_parse_request(cnn_serve_api api, const char *body, size_t len, const cnn_serve_spec *spec,
                                   cnn_serve_request *out);
void cnn_serve_request_free(cnn_serve_request *req);

/* Decodes standard or URL-safe base64 (padding optional; no whitespace) into a malloc'ed buffer. */
cnn_status cnn_serve_base64_decode(const char *text, size_t len, unsigned char **out, size_t *out_len);

/* The answer to a request of n images with k class probabilities each (probs: n x k), as its API wants it:
 * {"predictions"|"outputs": [[...]]}, {"result": [[[label, p], ...]]} (labels: class_names[j], or j as text when
 * NULL or the name is missing), or the inference protocol's {"model_name", "model_version", "id", "outputs"}. */
void cnn_serve_write_result(cnn_json_writer *w, cnn_serve_api api, const cnn_serve_request *req, const float *probs,
                            int k, const char *const *class_names, const char *model_name, int64_t version);

/* The endpoints, from a request's path (core/serve/serve_api.c). */
typedef enum cnn_serve_route_kind {
    CNN_ROUTE_NONE = 0,       /* no such path: 404 */
    CNN_ROUTE_V1_STATUS,      /* GET /v1/models/NAME[/versions/V|/labels/L] */
    CNN_ROUTE_V1_METADATA,    /* GET /v1/models/NAME[/versions/V|/labels/L]/metadata */
    CNN_ROUTE_V1_PREDICT,     /* POST /v1/models/NAME[/versions/V|/labels/L]:predict */
    CNN_ROUTE_V1_CLASSIFY,    /* POST /v1/models/NAME[/versions/V|/labels/L]:classify */
    CNN_ROUTE_V2_SERVER,      /* GET /v2 */
    CNN_ROUTE_V2_LIVE,        /* GET /v2/health/live */
    CNN_ROUTE_V2_READY,       /* GET /v2/health/ready */
    CNN_ROUTE_V2_MODEL,       /* GET /v2/models/NAME[/versions/V|/labels/L] */
    CNN_ROUTE_V2_MODEL_READY, /* GET /v2/models/NAME[/versions/V|/labels/L]/ready */
    CNN_ROUTE_V2_INFER,       /* POST /v2/models/NAME[/versions/V|/labels/L]/infer */
    CNN_ROUTE_METRICS,        /* GET /monitoring/prometheus/metrics */
} cnn_serve_route_kind;

typedef struct cnn_serve_route {
    cnn_serve_route_kind kind;
    const char *name;  /* the model name: name_len bytes of the path (not '\0'-terminated) */
    size_t name_len;
    int64_t version;   /* -1: the version being served, or the label's */
    const char *label; /* /labels/L: label_len bytes of the path (not '\0'-terminated); NULL when none */
    size_t label_len;
    const char *bad;   /* a path of a known kind that is malformed (a non-numeric version, an empty label): 404 */
} cnn_serve_route;

/* Parses a request path (without its query string). Never fails: an unknown path is CNN_ROUTE_NONE. */
void cnn_serve_parse_path(const char *path, cnn_serve_route *r);
/* 1 for the endpoints that take POST, 0 for those that take GET. */
int cnn_serve_route_is_post(cnn_serve_route_kind kind);

// ---------------------------------------------------------------------------------------------------------------
// model versions and the batch queue (core/serve/serve_model.c)

typedef struct cnn_serve_job cnn_serve_job;
typedef struct cnn_serve_version cnn_serve_version;

/* One request's work: n images in, n x k probabilities out. `done` is called once from a worker thread when it
 * was run (status CNN_OK, or a failure with `error` filled). */
struct cnn_serve_job {
    const float *images;
    int64_t n;
    float *probs;
    cnn_status status;
    char error[256];
    void (*done)(cnn_serve_job *job);
    void *ctx;
    int64_t enqueued_ns; /* the queue's: CLOCK_MONOTONIC when it was queued */
    cnn_serve_job *next; /* the queue's */
};

typedef enum cnn_serve_submit {
    CNN_SERVE_QUEUED = 0,
    CNN_SERVE_QUEUE_FULL,  /* answer 503 with Retry-After */
    CNN_SERVE_STOPPING,    /* the version is being unloaded: answer 503 */
} cnn_serve_submit;

/* Statistics of a version's forward passes, for metrics and tests. */
typedef struct cnn_serve_version_stats {
    uint64_t batches;                 /* forward passes */
    uint64_t images;                  /* images through them */
    uint64_t batch_size_hist[16];     /* passes whose size was <= 2^i (i = 0..15; the last counts the rest too) */
    int64_t queued_images;            /* waiting now */
} cnn_serve_version_stats;

/* What a version has served, against its training set's profile (drift monitoring). */
typedef struct cnn_serve_drift {
    int c, k;
    int has_profile;      /* 0: the model file has no data profile: psi and z are 0 */
    uint64_t images;      /* images answered */
    double *mean, *std;   /* c: the served pixels' per-channel mean and std ([0, 1] scale) */
    double *z;            /* c: (served mean - training mean) / training std */
    double *class_share;  /* k: the share of images whose top class was j */
    double psi;           /* population stability index of the top classes against the training frequencies */
} cnn_serve_drift;

/* Fills *out (its arrays malloc'ed; free with cnn_serve_drift_free). */
cnn_status cnn_serve_version_drift(cnn_serve_version *v, cnn_serve_drift *out);
void cnn_serve_drift_free(cnn_serve_drift *d);

/* Loads path onto cfg's device num_batch_threads times (one copy per worker) and starts the workers. */
cnn_status cnn_serve_version_load(const char *path, int64_t version, const cnn_serve_config *cfg,
                                  cnn_serve_version **out);
/* Queues a job (job->n <= max_batch_size). */
cnn_serve_submit cnn_serve_version_submit(cnn_serve_version *v, cnn_serve_job *job);
/* From now on a batch runs as soon as a worker has it, without waiting batch_timeout_us to fill (for a drain). */
void cnn_serve_version_flush(cnn_serve_version *v);
/* Refuses new jobs, answers the queued ones, and stops the workers (every job's done() has been called when it
 * returns). Idempotent. */
void cnn_serve_version_stop(cnn_serve_version *v);
/* cnn_serve_version_stop, then frees the version. NULL is a no-op. */
void cnn_serve_version_destroy(cnn_serve_version *v);

int64_t cnn_serve_version_number(const cnn_serve_version *v);
void cnn_serve_version_spec(const cnn_serve_version *v, cnn_serve_spec *spec);
int cnn_serve_version_outputs(const cnn_serve_version *v);
const char *const *cnn_serve_version_class_names(const cnn_serve_version *v); /* k entries, each may be NULL */
void cnn_serve_version_stats_get(cnn_serve_version *v, cnn_serve_version_stats *out);

// ---------------------------------------------------------------------------------------------------------------
// the config file of several models (core/serve/serve_config.c)

typedef enum cnn_serve_policy {
    CNN_SERVE_POLICY_LATEST = 0, /* the `latest` highest versions that load */
    CNN_SERVE_POLICY_ALL,        /* every version that loads */
    CNN_SERVE_POLICY_SPECIFIC,   /* the versions listed */
} cnn_serve_policy;

typedef struct cnn_serve_label {
    char *name;
    int64_t version;
} cnn_serve_label;

typedef struct cnn_serve_model_spec {
    char *name;
    char *base_path; /* relative ones joined to the config file's folder */
    cnn_serve_policy policy;
    int latest;      /* LATEST: how many */
    int64_t *versions; /* SPECIFIC: nversions, distinct */
    int nversions;
    cnn_serve_label *labels; /* distinct names */
    int nlabels;
} cnn_serve_model_spec;

typedef struct cnn_serve_model_config {
    cnn_serve_model_spec *models; /* distinct names */
    int n;
} cnn_serve_model_config;

/* Parses a config file's text (JSON: {"model_config_list": [{"name", "base_path", "model_version_policy",
 * "version_labels"}, ...]}, see core/serve/serve_config.c). Relative base paths are joined to `dir` (NULL: kept). On an
 * error *out is empty and the message names the model and the key. */
cnn_status cnn_serve_parse_model_config(const char *text, size_t len, const char *dir, cnn_serve_model_config *out);
void cnn_serve_model_config_free(cnn_serve_model_config *c);

/* The numeric versions under base (folders whose name is a decimal number below 2^63 holding model.safetensors),
 * in descending order; *out malloc'ed (NULL when none). */
cnn_status cnn_serve_list_versions(const char *base, int64_t **out, int *n);

#ifdef __cplusplus
}
#endif
#endif
