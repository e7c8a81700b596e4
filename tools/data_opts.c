/* The data pipeline's command-line options (tools/data_opts.h). */
#include "tools/data_opts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The most channels a --mean/--std list may give (the loader takes 1 or 3). */
#define MAX_LIST 16

/* "a,b,c" into v (at most MAX_LIST); the count, or -1. */
static int parse_list(const char *s, float *v)
{
    int n = 0;
    for (;;) {
        char *end;
        float x = strtof(s, &end);
        if (end == s || n == MAX_LIST || x != x) return -1;
        v[n++] = x;
        if (!*end) return n;
        if (*end != ',') return -1;
        s = end + 1;
    }
}

int cli_data_apply(const char *command, cli_data_opts *o, cnn_train_config *cfg, const cnn_net *net)
{
    cnn_status st;
    cfg->workers = o->workers;
    cfg->prefetch = o->prefetch;
    cfg->strict = o->strict;
    cfg->max_pixels = (long long)o->max_pixels;
    if (o->resize && (sscanf(o->resize, "%dx%d", &cfg->resize_h, &cfg->resize_w) != 2 || cfg->resize_h < 1 ||
                      cfg->resize_w < 1 || cfg->resize_h > 65536 || cfg->resize_w > 65536)) {
        fprintf(stderr, "cnn %s: --resize: expected HxW (e.g. 36x36), got '%s'\n", command, o->resize);
        return 2;
    }
    if (!o->resize && net) cnn_net_resize(net, &cfg->resize_h, &cfg->resize_w); /* what the model was trained with */
    if (o->sampler && (st = cnn_sampler_parse(o->sampler, &cfg->sampler)) != CNN_OK) {
        fprintf(stderr, "cnn %s: --sampler: %s\n", command, cnn_last_error());
        return 2;
    }
    const char *text = o->augment;
    o->augment_from[0] = '\0';
    if (!text && net && cnn_augment_from_definition(cnn_net_definition(net), o->augment_from, sizeof o->augment_from))
        text = o->augment_from;
    if ((st = cnn_augment_parse(text, &o->aug)) != CNN_OK) {
        fprintf(stderr, "cnn %s: %s: %s\n", command, o->augment ? "--augment" : "the model's augment line",
                cnn_last_error());
        return 2;
    }
    cfg->augment = cnn_augment_active(&o->aug) ? &o->aug : NULL;
    if ((o->mean == NULL) != (o->std == NULL)) {
        fprintf(stderr, "cnn %s: --mean and --std go together\n", command);
        return 2;
    }
    return 0;
}

void cli_loader_config(const cnn_train_config *cfg, const cnn_net *net, cnn_loader_config *lc)
{
    cnn_loader_config_defaults(lc);
    cnn_net_input_shape(net, &lc->h, &lc->w, &lc->c);
    lc->batch_size = cfg->batch_size;
    lc->resize_h = cfg->resize_h;
    lc->resize_w = cfg->resize_w;
    lc->workers = cfg->workers;
    lc->max_pixels = cfg->max_pixels;
    lc->warnings = cfg->warnings;
}

int cli_data_normalization(const char *command, const cli_data_opts *o, int compute, const cnn_source *train,
                           const cnn_train_config *cfg, cnn_net *net)
{
    float mean[MAX_LIST], std[MAX_LIST];
    int h, w, c;
    cnn_net_input_shape(net, &h, &w, &c);
    cnn_status st;
    if (o->mean) {
        int nm = parse_list(o->mean, mean), ns = parse_list(o->std, std);
        if (nm != c || ns != c) {
            fprintf(stderr, "cnn %s: --mean and --std need %d comma-separated numbers each (the model's input "
                            "channels)\n", command, c);
            return 2;
        }
    } else if (compute) {
        cnn_loader_config lc;
        cli_loader_config(cfg, net, &lc);
        if (c > MAX_LIST || (st = cnn_source_stats(train, &lc, mean, std)) != CNN_OK)
            return cli_fail(command, "--normalize", c > MAX_LIST ? CNN_ERR_UNSUPPORTED : st);
        for (int k = 0; k < c; k++)
            if (!(std[k] > 0.0f)) std[k] = 1.0f; /* a constant channel: centred, not scaled */
    } else {
        return 0;
    }
    if ((st = cnn_net_set_normalization(net, c, mean, std)) != CNN_OK)
        return cli_fail(command, o->mean ? "--mean/--std" : "--normalize", st);
    fprintf(stderr, "cnn %s: normalizing inputs by mean", command);
    for (int k = 0; k < c; k++) fprintf(stderr, "%s%.4f", k ? "," : " ", mean[k]);
    fprintf(stderr, ", std");
    for (int k = 0; k < c; k++) fprintf(stderr, "%s%.4f", k ? "," : " ", std[k]);
    fprintf(stderr, " (%s; stored in the model)\n", o->mean ? "given" : "of the training set");
    return 0;
}

int cli_data_limit(const char *command, const cli_data_opts *o, cnn_source *src)
{
    cnn_status st;
    if (!o->limit || !src || (st = cnn_source_limit(src, o->limit)) == CNN_OK) return 0;
    return cli_fail(command, "--limit", st);
}

cnn_status cli_open_test(const char *spec, cnn_source **out)
{
    return cnn_source_open(spec, cnn_source_has_split(spec, "test") ? "test" : "train", out);
}

void cli_report_classes(const char *command, const char *what, const cnn_source *src, cnn_sampler sampler,
                        int weighted)
{
    int k = cnn_source_num_classes(src);
    int64_t *counts = calloc((size_t)k, sizeof *counts);
    if (!counts) return;
    cnn_source_class_counts(src, counts);
    int64_t most = 0, fewest = -1;
    int nonempty = 0;
    for (int c = 0; c < k; c++) {
        if (counts[c] > most) most = counts[c];
        if (counts[c] && (fewest < 0 || counts[c] < fewest)) fewest = counts[c];
        nonempty += counts[c] > 0;
    }
    fprintf(stderr, "cnn %s: class counts (%s):", command, what);
    enum { SHOWN = 20 }; /* beyond this many classes, the range only */
    if (k <= SHOWN) {
        for (int c = 0; c < k; c++) {
            const char *name = cnn_source_class_name(src, c);
            fprintf(stderr, "%s %d", c ? "," : "", c);
            if (name) fprintf(stderr, " %s", name);
            fprintf(stderr, ": %lld", (long long)counts[c]);
        }
    } else {
        fprintf(stderr, " %d classes, from %lld to %lld samples", k, (long long)(fewest < 0 ? 0 : fewest),
                (long long)most);
    }
    fprintf(stderr, "\n");
    if (sampler == CNN_SAMPLER_OVERSAMPLE || sampler == CNN_SAMPLER_UNDERSAMPLE)
        fprintf(stderr, "cnn %s: the %s sampler draws %lld of each of the %d classes per epoch (%lld images)\n",
                command, cnn_sampler_name(sampler), (long long)(sampler == CNN_SAMPLER_OVERSAMPLE ? most : fewest),
                nonempty, (long long)nonempty * (sampler == CNN_SAMPLER_OVERSAMPLE ? most : fewest));
    else if (fewest > 0 && most > 2 * fewest && !weighted) /* the class weights already answer the imbalance */
        fprintf(stderr, "cnn %s: the classes are imbalanced (%lld to %lld): consider --sampler oversample or "
                        "--class-weights balanced\n", command, (long long)fewest, (long long)most);
    free(counts);
}
