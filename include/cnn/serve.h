/* cnn.c — a model server: TensorFlow Serving's REST API and the Open Inference Protocol (KServe v2) over HTTP.
 *
 * A model lives in TensorFlow Serving's layout: BASE/<version>/model.safetensors, numeric versions; the highest
 * one that loads is served, or what the model's version policy says (a config file of several models). Requests for a model version queue there and run together as one forward pass of
 * up to max_batch_size images (dynamic batching); a full queue is answered 503 with Retry-After. The HTTP side is
 * GNU libmicrohttpd (a thread pool over epoll); a build without it has cnn_serve_available() == 0 and
 * cnn_server_start gives CNN_ERR_UNSUPPORTED.
 *
 * Endpoints, errors and flags: README.md, "Serving"; `cnn serve --help`. */
#ifndef CNN_SERVE_H
#define CNN_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_server cnn_server;

typedef struct cnn_serve_config {
    const char *model_base_path;  /* BASE of BASE/<version>/model.safetensors; required without model_config */
    const char *model_name;       /* NAME in /v1/models/NAME and /v2/models/NAME; required without model_config */
    const char *model_config;     /* instead of the two above: a config file of several models, with version
                                   * policies and labels (README "Serving"); cnn_server_reload reads it again */
    const char *host;             /* address to bind; default "127.0.0.1" */
    int port;                     /* default 8501; 0: the kernel picks one (cnn_server_port) */
    const char *device;           /* the backend of every model: "cpu" (default NULL: cpu) */
    size_t max_body_bytes;        /* larger request bodies get 413; default 16 MiB */
    long long max_pixels;         /* encoded images whose header declares more pixels get 400; default 2^26 */
    int max_connections;          /* connections held at once, beyond which new ones are refused; default 256 */
    int connection_timeout_s;     /* an idle or stalled connection is closed after it; default 30 */
    int http_threads;             /* libmicrohttpd's thread pool; default 4 */
    int max_batch_size;           /* images per forward pass, and per request; default 32 */
    int batch_timeout_us;         /* how long a batch waits to fill up after its first request; default 0 */
    int num_batch_threads;        /* forward passes run at once per model version (each has its copy); default 1 */
    int max_enqueued_batches;     /* the queue holds this many batches' worth of images, then 503; default 16 */
    int poll_seconds;             /* > 0: the base path is looked at this often; a new, higher version loads in the
                                   * background and takes over; the one it replaces is unloaded once its requests
                                   * are answered; one that fails to load is listed with its error. Default 1 */
    const char *access_log;       /* a file that gets one line per request appended; NULL (default): none */
    const char *auth_token;       /* when set, every endpoint but /v2/health/... needs "Authorization: Bearer
                                   * <token>" (401 otherwise); NULL (default): open */
    const char *tls_cert;         /* PEM files of the certificate (chain) and its private key: both or neither; */
    const char *tls_key;          /* with them the server speaks HTTPS only (libmicrohttpd's GnuTLS) */
    double drift_threshold;       /* a warning line when a version's drift score (the PSI of its predicted classes,
                                   * or the z-score of an input channel's mean) rises above it; <= 0: none.
                                   * Default 0.25 */
    int drift_min_images;         /* no drift warning before a version has answered this many images; default 100 */
    int quiet;                    /* 1: no log lines on stderr (load messages, warnings) */
} cnn_serve_config;

/* The defaults above (NULL for the strings that are required). */
CNN_API void cnn_serve_config_default(cnn_serve_config *cfg);

/* 1 when this build has the HTTP server (libmicrohttpd was found), else 0. */
CNN_API int cnn_serve_available(void);

/* Loads the versions of each model that its policy wants (the highest one that loads, by default), starts the
 * batch workers and the HTTP server, and returns once it listens. A model without a loadable version is an error
 * naming the last failure. */
CNN_API cnn_status cnn_server_start(const cnn_serve_config *cfg, cnn_server **out);

/* The port the server listens on (what port 0 was given). */
CNN_API int cnn_server_port(const cnn_server *server);

/* Looks at the base paths now, as the poller does every poll_seconds: new versions the policy wants load (in the
 * calling thread) and take over; versions no longer wanted whose requests are answered are unloaded. */
CNN_API void cnn_server_poll(cnn_server *server);

/* Reads the config file again (a server started with model_config; otherwise the same as cnn_server_poll): models
 * added are loaded, models removed are unloaded once their requests are answered, policies and labels change,
 * then the base paths are polled. A config that does not parse changes nothing and is the error. `cnn serve`
 * calls it on SIGHUP. */
CNN_API cnn_status cnn_server_reload(cnn_server *server);

/* Stops accepting connections, waits for the requests in flight to be answered (at most `drain_ms`
 * milliseconds), then stops the server and frees everything. NULL is a no-op. */
CNN_API void cnn_server_stop(cnn_server *server, int drain_ms);

#ifdef __cplusplus
}
#endif
#endif
