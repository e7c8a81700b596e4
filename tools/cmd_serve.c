/* cnn serve: a model server speaking TensorFlow Serving's REST API and the Open Inference Protocol (cnn/serve.h).
 *
 * Runs until SIGTERM or SIGINT, then stops accepting connections, answers what is in flight (at most
 * --drain-seconds) and exits 0. SIGHUP reads the model config again (with --model-config) and looks at the base paths
 * for new versions at once. Once it listens it prints "cnn serve: listening on HOST port PORT" on stderr. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cnn/serve.h"
#include "tools/cli.h"

int cmd_serve(int argc, char **argv)
{
    cnn_serve_config cfg;
    cnn_serve_config_default(&cfg);
    uint64_t max_body = cfg.max_body_bytes, max_pixels = (uint64_t)cfg.max_pixels;
    int drain_s = 30, quiet = 0;
    float drift_threshold = (float)cfg.drift_threshold;
    const char *token_file = NULL;
    cli_flag flags[] = {
        {"model-base-path", CLI_STRING, &cfg.model_base_path,
         "DIR       the model's folder: DIR/<version>/model.safetensors (numeric versions; the highest that loads "
         "is served)", 0, 0, 0},
        {"model-name", CLI_STRING, &cfg.model_name, "NAME      the name in /v1/models/NAME and /v2/models/NAME", 0, 0,
         0},
        {"model-config", CLI_STRING, &cfg.model_config,
         "FILE      instead of the two above: a JSON file of several models, with version policies and labels "
         "(README \"Serving\"); SIGHUP reads it again", 0, 0, 0},
        {"port", CLI_INT, &cfg.port, "N         TCP port (default 8501; 0: any free port, printed on stderr)", 0, 65535,
         0},
        {"host", CLI_STRING, &cfg.host, "ADDR      address to listen on (default 127.0.0.1)", 0, 0, 0},
        {"device", CLI_STRING, &cfg.device, "NAME      cpu (default), cuda or cuda:N", 0, 0, 0},
        {"max-body-bytes", CLI_U64, &max_body, "N         larger request bodies get 413 (default 16777216)", 0, 0, 0},
        {"max-pixels", CLI_U64, &max_pixels,
         "N         encoded images whose header declares more pixels get 400 (default 67108864)", 0, 0, 0},
        {"max-connections", CLI_INT, &cfg.max_connections, "N         connections held at once (default 256)", 1,
         100000, 0},
        {"connection-timeout", CLI_INT, &cfg.connection_timeout_s,
         "SECONDS   an idle or stalled connection is closed after it (default 30; 0: never)", 0, 86400, 0},
        {"http-threads", CLI_INT, &cfg.http_threads, "N         HTTP threads (default 4)", 1, 256, 0},
        {"max-batch-size", CLI_INT, &cfg.max_batch_size,
         "N         images per forward pass, and per request (default 32)", 1, 65536, 0},
        {"batch-timeout-us", CLI_INT, &cfg.batch_timeout_us,
         "US        how long a batch waits to fill after its first request (default 0: runs what is queued)", 0,
         10000000, 0},
        {"num-batch-threads", CLI_INT, &cfg.num_batch_threads,
         "N         forward passes at once, each with its own copy of the model (default 1)", 1, 64, 0},
        {"max-enqueued-batches", CLI_INT, &cfg.max_enqueued_batches,
         "N         queue bound, in batches; beyond it requests get 503 + Retry-After (default 16)", 1, 1000000, 0},
        {"drain-seconds", CLI_INT, &drain_s,
         "SECONDS   on SIGTERM/SIGINT, how long requests in flight may take to finish (default 30)", 0, 3600, 0},
        {"poll-seconds", CLI_INT, &cfg.poll_seconds,
         "SECONDS   how often the base path is looked at for a new version, which then takes over (default 1; 0: "
         "only on SIGHUP)", 0, 86400, 0},
        {"access-log", CLI_STRING, &cfg.access_log, "FILE      append one line per request to FILE (default: none)", 0,
         0, 0},
        {"auth-token-file", CLI_STRING, &token_file,
         "FILE      every endpoint but /v2/health/* needs \"Authorization: Bearer <the file's first line>\"", 0, 0, 0},
        {"tls-cert", CLI_STRING, &cfg.tls_cert, "FILE      PEM certificate (chain): serve HTTPS only (with --tls-key)", 0,
         0, 0},
        {"tls-key", CLI_STRING, &cfg.tls_key, "FILE      PEM private key of --tls-cert", 0, 0, 0},
        {"drift-threshold", CLI_FLOAT, &drift_threshold,
         "X         warn once when a version's drift score (the PSI of its predicted classes, or an input channel's "
         "z-score) rises above X (default 0.25; 0: never)", 0, 1e6, 0},
        {"drift-min-images", CLI_INT, &cfg.drift_min_images,
         "N         no drift warning before a version has answered N images (default 100)", 0, 1000000000, 0},
        {"quiet", CLI_BOOL, &quiet, "          no log lines but the listening one", 0, 0, 0},
        CLI_END,
    };
    int rc = cli_parse_flags("serve", "(--model-base-path DIR --model-name NAME | --model-config FILE) [options]",
                             flags, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (cfg.model_config && (cfg.model_base_path || cfg.model_name)) {
        fprintf(stderr, "cnn serve: --model-config names the models: give it alone, without --model-base-path and "
                        "--model-name\n");
        return 2;
    }
    if (!cfg.model_config && (!cfg.model_base_path || !cfg.model_name)) {
        fprintf(stderr, "cnn serve: --model-base-path DIR and --model-name NAME are required (or --model-config "
                        "FILE)\n");
        return 2;
    }
    cfg.drift_threshold = drift_threshold;
    if (!cnn_serve_available()) {
        fprintf(stderr, "cnn serve: this build has no model server: it was configured without libmicrohttpd "
                        "(-DCNN_SERVE=OFF, or Debian's libmicrohttpd-dev missing: install it, then configure and "
                        "build again)\n");
        return 1;
    }
    if (max_body < 2 || max_body > ((uint64_t)1 << 40)) {
        fprintf(stderr, "cnn serve: --max-body-bytes: from 2 to 2^40\n");
        return 2;
    }
    if (max_pixels < 1 || max_pixels > ((uint64_t)1 << 26)) {
        fprintf(stderr, "cnn serve: --max-pixels: from 1 to 67108864 (the loader's cap)\n");
        return 2;
    }
    char token[1024] = "";
    if (token_file) { /* the first line, without its end of line; at least 16 bytes and nothing odd in it */
        FILE *f = fopen(token_file, "r");
        if (!f) {
            fprintf(stderr, "cnn serve: --auth-token-file %s: cannot open it\n", token_file);
            return 1;
        }
        if (!fgets(token, sizeof token, f)) token[0] = '\0';
        fclose(f);
        token[strcspn(token, "\r\n")] = '\0';
        size_t len = strlen(token);
        int printable = 1;
        for (size_t i = 0; i < len; i++) printable &= token[i] > 0x20 && token[i] < 0x7f;
        if (len < 16 || !printable) {
            fprintf(stderr, "cnn serve: --auth-token-file %s: the token (its first line) must be at least 16 printable "
                            "characters without spaces\n", token_file);
            memset(token, 0, sizeof token);
            return 2;
        }
        cfg.auth_token = token;
    }
    cfg.max_body_bytes = (size_t)max_body;
    cfg.max_pixels = (long long)max_pixels;
    cfg.quiet = quiet;

    /* the signals that stop the server go to sigwait below: blocked here, before any thread starts, so that every
     * thread inherits the mask and none of them takes the signal instead */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that goes away must not kill the server */

    cnn_server *server = NULL;
    cnn_status st = cnn_server_start(&cfg, &server);
    memset(token, 0, sizeof token); /* the server keeps its own copy */
    if (st != CNN_OK) return cli_fail("serve", "cannot start", st);
    fprintf(stderr, "cnn serve: listening on %s port %d%s\n", cfg.host, cnn_server_port(server),
            cfg.tls_cert ? " (HTTPS)" : "");
    fflush(stderr);
    int sig = 0;
    while (sigwait(&stop, &sig) == 0 && sig == SIGHUP) {
        if (!quiet)
            fprintf(stderr, "cnn serve: SIGHUP: %s\n", cfg.model_config ? "reading the config again" : "looking for new "
                    "versions");
        cnn_server_reload(server); /* a config that does not parse is logged and changes nothing */
    }
    if (!quiet) fprintf(stderr, "cnn serve: %s: draining (at most %d s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM", drain_s);
    cnn_server_stop(server, drain_s * 1000);
    if (!quiet) fprintf(stderr, "cnn serve: stopped\n");
    return 0;
}
