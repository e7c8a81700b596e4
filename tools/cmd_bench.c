/* cnn bench: training-step and inference speed of a model on synthetic data, per-layer times, achieved GFLOP/s
 * against the machine's sgemm peak, peak memory; a table on stdout and, with --json, a JSON file. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/json.h"
#include "core/nn/model_file.h"
#include "tools/cli.h"
#include "tools/report.h"

static const char *USAGE = "--model FILE [--batch N] [--device cpu|cuda|cuda:N] [--mode train|infer|both] "
                           "[--warmup K] [--iters K] [--repeats R] [--classes N] [--per-layer] [--json FILE] "
                           "[--precision P] [--optimizer NAME] [--threads T] [--max-memory SIZE] [--quiet]";

/* sgemm of 2048^3 (17 GFLOP): large enough for the kernels' full rate, a fraction of a second on 2 cores */
#define SGEMM_PEAK_N 2048
#define SGEMM_PEAK_REPEATS 5

typedef struct bench_report {
    const char *model;
    const cnn_backend *backend;
    int threads;
    const cnn_bench_config *cfg;
    const cnn_bench_result *r;
    double peak_rss_mib, sgemm_gflops;
} bench_report;

static double ratio(double a, double b) { return b > 0.0 ? a / b : NAN; }

/* Achieved GFLOP/s of a layer row over the work that was timed. */
static double layer_gflops(const cnn_bench_layer *l)
{
    double ms = l->fwd_ms + (l->bwd_ms > 0.0 ? l->bwd_ms : 0.0);
    double gflop = l->fwd_gflop + (l->bwd_ms >= 0.0 ? l->bwd_gflop : 0.0);
    return gflop > 0.0 ? ratio(gflop, ms * 1e-3) : 0.0;
}

// ---------------------------------------------------------------------------------------------------------------
// the table

/* A share as "12.3%", or "-" when it is unknown (NaN: no sgemm peak to measure a GPU against, or no time to
 * share), right-aligned in `width` columns. */
static const char *share_str(double share, int width, char *buf, size_t size)
{
    if (isfinite(share)) snprintf(buf, size, "%*.1f%%", width - 1, 100.0 * share);
    else snprintf(buf, size, "%*s", width, "-");
    return buf;
}

/* The share of the sgemm peak: a CPU figure (NaN on other devices: they are not measured against it). */
static double peak_share(const bench_report *b, double gflops)
{
    return !strcmp(cnn_backend_name(b->backend), "cpu") ? ratio(gflops, b->sgemm_gflops) : NAN;
}

static void print_row(FILE *out, const bench_report *b, const char *mode, double images_per_sec, double ms_median,
                      double ms_min, double gflop)
{
    char share[32];
    double g = ratio(gflop, ms_median * 1e-3);
    fprintf(out, "%-6s %12.1f %12.3f %10.3f %12.3f %10.1f %s\n", mode, images_per_sec, ms_median, ms_min, gflop, g,
            share_str(peak_share(b, g), 8, share, sizeof share));
}

static void print_table(const bench_report *b, FILE *out)
{
    const cnn_bench_result *r = b->r;
    fprintf(out, "cnn bench: %s, batch %d, %d classes, device %s (%s)\n", b->model, r->batch, r->classes,
            cnn_backend_name(b->backend), cnn_backend_description(b->backend));
    fprintf(out, "%-6s %12s %12s %10s %12s %10s %8s\n", "mode", "images/s", "ms median", "ms min", "GFLOP/batch",
            "GFLOP/s", "of peak");
    if (r->ran_train)
        print_row(out, b, "train", r->train_images_per_sec, r->train_step_ms_median, r->train_step_ms_min,
                  r->train_gflop);
    if (r->ran_infer)
        print_row(out, b, "infer", r->infer_images_per_sec, r->infer_ms_median, r->infer_ms_min, r->fwd_gflop);
    fprintf(out, "timing: %d warm-up steps, then %s; peak RSS %.1f MiB; sgemm peak %.1f GFLOP/s (oneDNN, %d^3, %d "
                 "threads)\n", b->cfg->warmup,
            r->ran_train && r->ran_infer ? "train: median of repeats, infer: median of calls"
            : r->ran_train ? "median of repeats" : "median of calls",
            b->peak_rss_mib, b->sgemm_gflops, SGEMM_PEAK_N, b->threads);
    if (!r->nlayers) return;
    double total = 0.0;
    for (int i = 0; i < r->nlayers; i++)
        total += r->layers[i].fwd_ms + (r->layers[i].bwd_ms > 0.0 ? r->layers[i].bwd_ms : 0.0);
    fprintf(out, "\nper layer: median ms over %d step%s with the backend synced around every layer\n", b->cfg->iters,
            cli_s(b->cfg->iters));
    fprintf(out, "%-28s %-22s %9s %9s %9s %9s %7s\n", "layer", "type", "fwd ms", "bwd ms", "GFLOP", "GFLOP/s",
            "share");
    for (int i = 0; i < r->nlayers; i++) {
        const cnn_bench_layer *l = &r->layers[i];
        double ms = l->fwd_ms + (l->bwd_ms > 0.0 ? l->bwd_ms : 0.0);
        double gflop = l->fwd_gflop + (l->bwd_ms >= 0.0 ? l->bwd_gflop : 0.0);
        char bwd[32] = "-", gf[32] = "-", gfs[32] = "-", share[32];
        if (l->bwd_ms >= 0.0) snprintf(bwd, sizeof bwd, "%.3f", l->bwd_ms);
        if (gflop > 0.0) {
            snprintf(gf, sizeof gf, "%.3f", gflop);
            snprintf(gfs, sizeof gfs, "%.1f", layer_gflops(l));
        }
        fprintf(out, "%-28.28s %-22.22s %9.3f %9s %9s %9s %s\n", l->name, l->type, l->fwd_ms, bwd, gf, gfs,
                share_str(ratio(ms, total), 7, share, sizeof share));
    }
    fprintf(out, "sum of the rows: %.3f ms per %s step with syncs (the timed step: %.3f ms)\n", total,
            r->ran_train ? "training" : "inference", r->ran_train ? r->train_step_ms_median : r->infer_ms_median);
}

// ---------------------------------------------------------------------------------------------------------------
// JSON

static void json_field(cnn_json_writer *w, const char *name, double v)
{
    cnn_json_write_key(w, name);
    cnn_json_write_number(w, v); /* NaN (what did not run or does not apply) as null */
}

static void json_string(cnn_json_writer *w, const char *name, const char *v)
{
    cnn_json_write_key(w, name);
    cnn_json_write_string(w, v);
}

static void json_int(cnn_json_writer *w, const char *name, int64_t v)
{
    cnn_json_write_key(w, name);
    cnn_json_write_int(w, v);
}

/* "section": {images_per_sec, <ms>_median, <ms>_min, gflop, gflops, peak_share (CPU: of the sgemm peak), ... (the
 * object is left open for the section's own fields) */
static void json_timing(cnn_json_writer *w, const bench_report *b, const char *section, double images_per_sec,
                        const char *ms, double ms_median, double ms_min, double gflop)
{
    char key[32];
    double g = ratio(gflop, ms_median * 1e-3);
    cnn_json_write_key(w, section);
    cnn_json_write_begin_object(w);
    json_field(w, "images_per_sec", images_per_sec);
    snprintf(key, sizeof key, "%s_median", ms);
    json_field(w, key, ms_median);
    snprintf(key, sizeof key, "%s_min", ms);
    json_field(w, key, ms_min);
    json_field(w, "gflop", gflop);
    json_field(w, "gflops", g);
    json_field(w, "peak_share", peak_share(b, g));
}

static cnn_status write_json(const bench_report *b, const char *path)
{
    const cnn_bench_result *r = b->r;
    cnn_json_writer w;
    cnn_json_writer_init(&w, 2);
    cnn_json_write_begin_object(&w);
    json_string(&w, "model", b->model);
    json_string(&w, "device", cnn_backend_name(b->backend));
    json_string(&w, "device_description", cnn_backend_description(b->backend));
    json_int(&w, "batch", r->batch);
    json_int(&w, "classes", r->classes);
    json_int(&w, "threads", b->threads);
    json_int(&w, "warmup", b->cfg->warmup);
    json_int(&w, "iters", b->cfg->iters);
    json_int(&w, "repeats", b->cfg->repeats);
    json_string(&w, "optimizer", cnn_optimizer_name(b->cfg->optimizer));
    if (r->ran_train) {
        json_timing(&w, b, "train", r->train_images_per_sec, "step_ms", r->train_step_ms_median, r->train_step_ms_min,
                    r->train_gflop);
        json_field(&w, "loss", r->train_loss);
        cnn_json_write_end_object(&w);
    }
    if (r->ran_infer) {
        json_timing(&w, b, "infer", r->infer_images_per_sec, "latency_ms", r->infer_ms_median, r->infer_ms_min,
                    r->fwd_gflop);
        cnn_json_write_end_object(&w);
    }
    json_field(&w, "peak_rss_mib", b->peak_rss_mib);
    json_field(&w, "sgemm_peak_gflops", b->sgemm_gflops);
    if (r->nlayers) {
        cnn_json_write_key(&w, "layers");
        cnn_json_write_begin_array(&w);
        for (int i = 0; i < r->nlayers; i++) {
            const cnn_bench_layer *l = &r->layers[i];
            cnn_json_write_begin_object(&w);
            json_string(&w, "name", l->name);
            json_string(&w, "type", l->type);
            json_field(&w, "fwd_ms", l->fwd_ms);
            json_field(&w, "bwd_ms", l->bwd_ms >= 0.0 ? l->bwd_ms : NAN);
            json_field(&w, "gflop", l->fwd_gflop + (l->bwd_ms >= 0.0 ? l->bwd_gflop : 0.0));
            json_field(&w, "gflops", layer_gflops(l));
            json_field(&w, "fwd_gflop", l->fwd_gflop);
            json_field(&w, "bwd_gflop", l->bwd_ms >= 0.0 ? l->bwd_gflop : 0.0);
            cnn_json_write_end_object(&w);
        }
        cnn_json_write_end_array(&w);
    }
    cnn_json_write_end_object(&w);
    return report_json_save(&w, path, "cnn bench: --json");
}

// ---------------------------------------------------------------------------------------------------------------
// the command

int cmd_bench(int argc, char **argv)
{
    const char *model = NULL, *device = NULL, *mode = "both", *json = NULL, *precision = "fp32", *optimizer = "adam";
    const char *requant = "exact";
    cnn_bench_config cfg;
    cnn_bench_config_defaults(&cfg);
    int threads = 0, quiet = 0;
    int64_t max_memory = 0;
    cli_flag flags[] = {
        {"model", CLI_STRING, &model, "FILE      model definition (.cnn) or model file (.safetensors)", 0, 0, 0},
        {"batch", CLI_INT, &cfg.batch, "N         images per step (default 64)", 1, 65536, 0},
        CLI_DEVICE_FLAG(device),
        {"mode", CLI_STRING, &mode, "MODE      train, infer or both (default both)", 0, 0, 0},
        {"precision", CLI_STRING, &precision, "P         fp32 (default), tf32, fp16 or bf16 (mixed precision; CUDA)",
         0, 0, 0},
        {"optimizer", CLI_STRING, &optimizer, "NAME      the training step's update: adam, adamw, sgd (momentum 0.9) or "
                                              "rmsprop (default adam)", 0, 0, 0},
        {"warmup", CLI_INT, &cfg.warmup, "K         untimed steps first (default 3)", 0, 1000000, 0},
        {"iters", CLI_INT, &cfg.iters, "K         timed steps per repeat (default 10)", 1, 1000000, 0},
        {"repeats", CLI_INT, &cfg.repeats, "R         repeats; the median is reported (default 5)", 1, 1000000, 0},
        {"classes", CLI_INT, &cfg.classes, "N         random labels in [0, N) (default: the model's outputs)", 1,
         1000000, 0},
        {"per-layer", CLI_BOOL, &cfg.per_layer, "          also time each layer's forward and backward (syncs "
                                                "around every layer)", 0, 0, 0},
        {"json", CLI_STRING, &json, "FILE      also write the results as JSON", 0, 0, 0},
        {"threads", CLI_INT, &threads, "T         CPU threads (default: OMP_NUM_THREADS, else all cores)", 1, 4096, 0},
        {"seed", CLI_U64, &cfg.seed, "S         seed of the weights and the synthetic data (default 1)", 0, 0, 0},
        {"quiet", CLI_BOOL, &quiet, "          no table and no device line (errors only)", 0, 0, 0},
        {"int8-requant", CLI_STRING, &requant, "R         int8 models: exact (default; cnn-lite's, bit for bit) or "
                                                  "fused (oneDNN's, within one step of cnn-lite per op)", 0, 0, 0},
        CLI_MAX_MEMORY_FLAG(max_memory),
        CLI_END,
    };
    int rc = cli_parse_flags("bench", USAGE, flags, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model) {
        fprintf(stderr, "cnn bench: --model FILE is required (e.g. --model samples/models/seed_cnn.cnn)\n");
        return 2;
    }
    if ((rc = cli_check_precision("bench", precision)) != 0) return rc;
    if (cnn_bench_modes_parse(mode, &cfg.modes) != CNN_OK) {
        fprintf(stderr, "cnn bench: --mode: %s\n", cnn_last_error());
        return 2;
    }
    if (strcmp(requant, "fused") && strcmp(requant, "exact")) {
        fprintf(stderr, "cnn bench: --int8-requant: '%s' is not one of exact, fused\n", requant);
        return 2;
    }
    if (cnn_optimizer_parse(optimizer, &cfg.optimizer) != CNN_OK) {
        fprintf(stderr, "cnn bench: --optimizer: %s\n", cnn_last_error());
        return 2;
    }
    FILE *probe = fopen(model, "rb");
    if (!probe) {
        fprintf(stderr, "cnn bench: --model: cannot open '%s'\n", model);
        return 2;
    }
    fclose(probe);
    if (threads && cnn_set_num_threads(threads) != CNN_OK) return cli_fail("bench", "--threads", CNN_ERR_INVALID_ARG);
    cli_apply_max_memory(max_memory);

    cnn_status st;
    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    cnn_bench_result *r = NULL;
    rc = 1;
    st = quiet ? cnn_backend_create(device, &backend) : cli_backend("bench", device, &backend);
    if (st != CNN_OK) {
        rc = cli_fail_value("bench", "--device", st);
        goto done;
    }
    size_t len = strlen(model);
    if (len > 12 && !strcmp(model + len - 12, ".safetensors")) st = cnn_net_load(model, backend, &net);
    else st = cnn_net_from_file(model, backend, cfg.seed, &net);
    if (st == CNN_ERR_NO_MEMORY) { /* refused by the memory budget: a failure, not a usage error */
        rc = cli_fail("bench", cli_memory_what(max_memory), st);
        goto done;
    }
    if (st != CNN_OK) {
        cli_fail("bench", "--model", st);
        rc = 2;
        goto done;
    }
    cnn_net_quant_set_exact_requant(net, !strcmp(requant, "exact"));
    cnn_precision prec;
    if ((st = cnn_precision_parse(precision, &prec)) != CNN_OK || (st = cnn_net_set_precision(net, prec)) != CNN_OK) {
        rc = cli_fail_value("bench", "--precision", st);
        goto done;
    }
    if (cfg.classes > cnn_net_num_outputs(net)) {
        fprintf(stderr, "cnn bench: --classes: %d is more than the model's %d outputs\n", cfg.classes,
                cnn_net_num_outputs(net));
        rc = 2;
        goto done;
    }
    if ((st = cnn_bench_run(net, &cfg, &r)) != CNN_OK) {
        rc = cli_fail("bench", st == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "benchmark", st);
        goto done;
    }
    bench_report b = {.model = model, .backend = backend, .threads = cnn_num_threads(), .cfg = &cfg, .r = r};
    b.peak_rss_mib = report_peak_rss_mib(); /* before the sgemm's matrices */
    if ((st = cnn_bench_sgemm_peak(SGEMM_PEAK_N, SGEMM_PEAK_REPEATS, &b.sgemm_gflops)) != CNN_OK) {
        rc = cli_fail("bench", "sgemm peak", st);
        goto done;
    }
    if (!quiet) print_table(&b, stdout);
    if (json && (st = write_json(&b, json)) != CNN_OK) {
        rc = cli_fail("bench", "--json", st);
        goto done;
    }
    rc = 0;
done:
    cnn_bench_result_destroy(r);
    cli_close_model(backend, net);
    return rc;
}
