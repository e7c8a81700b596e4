/* cnn quantize: a trained float model to int8 (calibrated on training images), dynamic int8 weights, fp16 or the
 * lowered float model: a file that cnn eval, predict and summary, the library and cnn-lite run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/data_opts.h"

/* Up to n images of the source's training split, a stratified sample, prepared as cnn predict prepares files
 * (resize and crop to the model's input; no normalization: cnn_quantize applies the model's). */
static int load_calibration(const char *spec, int n, const cnn_net *net, const cnn_train_config *cfg, float **out,
                            int64_t *count)
{
    cnn_source *src = NULL, *rest = NULL, *sample = NULL;
    cnn_loader *l = NULL;
    cnn_status st = cnn_source_open(spec, "train", &src);
    if (st != CNN_OK) return cli_fail("quantize", "--calib-data", st);
    int h, w, c, rc = 1;
    cnn_net_input_shape(net, &h, &w, &c);
    const cnn_dataset *ds = cnn_source_dataset(src);
    int64_t total = cnn_source_count(src);
    if (ds && ds->c != c) {
        fprintf(stderr, "cnn quantize: --calib-data %s: its images have %d channel%s, the model takes %d\n", spec,
                ds->c, ds->c == 1 ? "" : "s", c);
        rc = 2;
        goto done;
    }
    if (ds && (ds->h < h || ds->w < w) && !cfg->resize_h) {
        fprintf(stderr, "cnn quantize: --calib-data %s: its images are %dx%d, smaller than the model's %dx%d input\n",
                spec, ds->h, ds->w, h, w);
        rc = 2;
        goto done;
    }
    const cnn_source *from = src;
    if (total > n) {
        if ((st = cnn_source_split(src, (double)n / (double)total, 1, &rest, &sample)) != CNN_OK) {
            rc = cli_fail("quantize", "--calib-data", st);
            goto done;
        }
        from = sample;
    }
    cnn_loader_config lc;
    cli_loader_config(cfg, net, &lc);
    lc.mean = lc.std = NULL;
    lc.batch_size = 64;
    lc.sampler = CNN_SAMPLER_SEQUENTIAL;
    lc.augment = NULL;
    lc.epochs = 1;
    if ((st = cnn_loader_create(from, &lc, &l)) != CNN_OK) {
        rc = cli_fail("quantize", "--calib-data", st);
        goto done;
    }
    int64_t want = cnn_source_count(from), have = 0;
    size_t per = (size_t)h * w * c;
    float *images = malloc((size_t)want * per * sizeof *images);
    if (!images) {
        fprintf(stderr, "cnn quantize: --calib-samples: no memory for %lld images\n", (long long)want);
        goto done;
    }
    for (int64_t b = 0; b < cnn_loader_batches_per_epoch(l); b++) {
        cnn_batch *batch;
        if ((st = cnn_loader_next(l, &batch)) != CNN_OK) {
            free(images);
            rc = cli_fail("quantize", "--calib-data", st);
            goto done;
        }
        int64_t take = batch->n < want - have ? batch->n : want - have;
        memcpy(images + (size_t)have * per, batch->images, (size_t)take * per * sizeof *images);
        have += take;
        cnn_loader_release(l, batch);
    }
    if (have == 0) {
        free(images);
        fprintf(stderr, "cnn quantize: --calib-data %s: no image could be read\n", spec);
        goto done;
    }
    *out = images;
    *count = have;
    rc = 0;
done:
    cnn_loader_destroy(l);
    cnn_source_destroy(sample);
    cnn_source_destroy(rest);
    cnn_source_destroy(src);
    return rc;
}

/* 1 when the command line gave flag `name` */
static int given(const cli_flag *flags, const char *name)
{
    for (const cli_flag *f = flags; f->name; f++)
        if (!strcmp(f->name, name)) return f->seen;
    return 0;
}

int cmd_quantize(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *mode_s = "int8", *calib = "fashion-mnist", *method_s = "minmax";
    int samples = 1000, quiet = 0;
    float percentile = 99.99f;
    cli_data_opts dopt = {0};
    cli_flag flags[] = {
        {"model", CLI_STRING, &model, "FILE      a float model file written by cnn train (.safetensors)", 0, 0, 0},
        {"out", CLI_STRING, &out, "FILE      the quantized model to write (e.g. model.int8.safetensors)", 0, 0, 0},
        {"mode", CLI_STRING, &mode_s, "NAME      int8 (full integer, calibrated), dynamic (int8 weights, float "
                                      "activations), fp16 (half weights) or float (default int8)", 0, 0, 0},
        {"calib-data", CLI_STRING, &calib, "SPEC      int8: the images to calibrate on, as cnn train's --data "
                                           "(its training split; default fashion-mnist)", 0, 0, 0},
        {"calib-samples", CLI_INT, &samples, "N         int8: how many (a stratified sample; default 1000)", 1,
         1000000, 0},
        {"calib-method", CLI_STRING, &method_s, "NAME      int8: minmax, percentile or entropy (default minmax)", 0,
         0, 0},
        {"percentile", CLI_FLOAT, &percentile, "P         percentile calibration: clip at the P and 100 - P "
                                               "quantiles (default 99.99)", 50.001f, 100.0f, 0},
        CLI_DATA_LOADER_FLAGS(dopt),
        {"quiet", CLI_BOOL, &quiet, "          no report", 0, 0, 0},
        CLI_END,
    };
    int rc = cli_parse_flags("quantize", "--model FILE --out FILE [--mode int8|dynamic|fp16|float] [options]", flags,
                             argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model || !out) {
        fprintf(stderr, "cnn quantize: --model FILE and --out FILE are required\n");
        return 2;
    }
    cnn_quant_config qc;
    cnn_quant_config_defaults(&qc);
    cnn_status st;
    if ((st = cnn_quant_mode_parse(mode_s, &qc.mode)) != CNN_OK) return cli_fail_value("quantize", "--mode", st);
    if ((st = cnn_calib_method_parse(method_s, &qc.method)) != CNN_OK)
        return cli_fail_value("quantize", "--calib-method", st);
    qc.percentile = percentile;
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    if ((rc = cli_data_apply("quantize", &dopt, &cfg, NULL)) != 0) return rc;
    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    float *images = NULL;
    rc = 1;
    if ((st = cnn_backend_create("cpu", &backend)) != CNN_OK) {
        rc = cli_fail("quantize", "the CPU backend", st);
        goto done;
    }
    if ((st = cnn_net_load(model, backend, &net)) != CNN_OK) {
        rc = cli_fail("quantize", "--model", st);
        goto done;
    }
    if (cnn_net_is_quantized(net)) {
        fprintf(stderr, "cnn quantize: --model %s is already quantized (%s): give the float model\n", model,
                cnn_net_quant_mode(net));
        rc = 2;
        goto done;
    }
    char source[600];
    if (qc.mode == CNN_QUANT_INT8 && cnn_net_is_qat(net)) {
        if (!quiet)
            fprintf(stderr, "cnn quantize: %s was trained with fake quantization (cnn train --qat): its learned "
                            "ranges replace calibration%s\n", model, given(flags, "calib-data") ||
                            given(flags, "calib-samples") || given(flags, "calib-method") ||
                            given(flags, "percentile") ? " (the --calib flags are not used)" : "");
    } else if (qc.mode == CNN_QUANT_INT8) {
        if ((rc = load_calibration(calib, samples, net, &cfg, &images, &qc.calib_n)) != 0) goto done;
        rc = 1;
        qc.calib_images = images;
        snprintf(source, sizeof source, "%s", calib);
        qc.calib_source = source;
    }
    if ((st = cnn_quantize(net, &qc, out)) != CNN_OK) {
        rc = cli_fail("quantize", st == CNN_ERR_IO ? "--out" : "--model", st);
        goto done;
    }
    if (!quiet) {
        FILE *a = fopen(model, "rb"), *b = fopen(out, "rb");
        long sa = -1, sb = -1;
        if (a && !fseek(a, 0, SEEK_END)) sa = ftell(a);
        if (b && !fseek(b, 0, SEEK_END)) sb = ftell(b);
        if (a) fclose(a);
        if (b) fclose(b);
        fprintf(stderr, "cnn quantize: %s written (%s", out, cnn_quant_mode_name(qc.mode));
        if (qc.mode == CNN_QUANT_INT8 && cnn_net_is_qat(net))
            fprintf(stderr, ", the ranges learned in quantization-aware training");
        else if (qc.mode == CNN_QUANT_INT8)
            fprintf(stderr, ", %s calibration on %lld images of %s", cnn_calib_method_name(qc.method),
                    (long long)qc.calib_n, calib);
        if (sa > 0 && sb > 0) fprintf(stderr, "): %ld bytes, %.2fx the float model's %ld", sb, (double)sb / (double)sa, sa);
        else fprintf(stderr, ")");
        fprintf(stderr, "\n");
    }
    rc = 0;
done:
    free(images);
    cli_close_model(backend, net);
    return rc;
}
