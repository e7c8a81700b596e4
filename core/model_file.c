#define _POSIX_C_SOURCE 200809L
/* Model files: one safetensors file with the weights (F32, "<layer>.weight" / "<layer>.bias", batchnorm's
 * "<layer>.gamma" / ".beta") and non-trainable state ("<layer>.running_mean" / ".running_var") and, in
 * __metadata__, the definition text, the class names and the input normalization. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/net.h"
#include "core/safetensors.h"

#define MODEL_FORMAT "cnn.c model"
#define MAX_CLASS_NAME 256

/* Comma-separated floats, each exact in %.9g. */
static void format_floats(char *buf, size_t n, const float *v, int count)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < count && len < n; i++) len += (size_t)snprintf(buf + len, n - len, "%s%.9g", i ? "," : "", (double)v[i]);
}

static int parse_floats(const char *s, float *v, int count)
{
    for (int i = 0; i < count; i++) {
        char *end;
        v[i] = strtof(s, &end);
        if (end == s) return 0;
        s = end;
        if (i + 1 < count) {
            if (*s != ',') return 0;
            s++;
        }
    }
    return *s == '\0';
}

/* The j-th saved tensor of layer l: its params, then its state. */
static cnn_param *saved_tensor(cnn_layer *l, int j)
{
    return j < l->nparams ? &l->params[j] : &l->state[j - l->nparams];
}

cnn_status cnn_net_save(const cnn_net *net, const char *path)
{
    cnn_status st = CNN_OK;
    int nparams = 0;
    for (int i = 0; i < net->nlayers; i++) nparams += net->layers[i]->nparams + net->layers[i]->nstate;
    cnn_st_entry *entries = calloc((size_t)(nparams ? nparams : 1), sizeof *entries);
    void **host = calloc((size_t)(nparams ? nparams : 1), sizeof *host);
    int k = cnn_net_num_outputs(net), c = (int)net->input.d[2];
    size_t names_len = 1;
    if (net->class_names)
        for (int i = 0; i < k; i++) names_len += strlen(net->class_names[i]) + 1;
    char *names = malloc(names_len);
    char *mean = malloc((size_t)c * 20 + 1), *std = malloc((size_t)c * 20 + 1);
    if (!entries || !host || !names || !mean || !std) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    int e = 0;
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < net->layers[i]->nparams + net->layers[i]->nstate; p++, e++) {
            const cnn_param *pr = saved_tensor(net->layers[i], p);
            size_t bytes = cnn_tensor_bytes(pr->value);
            host[e] = malloc(bytes ? bytes : 1);
            if (!host[e]) {
                st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for %s", pr->name);
                goto fail;
            }
            CNN_TRY(cnn_tensor_read(pr->value, host[e], bytes));
            entries[e] = (cnn_st_entry){pr->name, pr->value->dtype, pr->value->ndim, pr->value->shape, host[e]};
        }
    /* class names, one per line (names cannot hold a newline: cnn_net_set_class_names callers get sanitized) */
    names[0] = '\0';
    if (net->class_names) {
        size_t len = 0;
        for (int i = 0; i < k; i++) len += (size_t)snprintf(names + len, names_len - len, "%s%s", i ? "\n" : "", net->class_names[i]);
    }
    mean[0] = std[0] = '\0';
    if (net->has_norm) {
        format_floats(mean, (size_t)c * 20 + 1, net->norm_mean, c);
        format_floats(std, (size_t)c * 20 + 1, net->norm_std, c);
    }
    const char *keys[] = {"format", "cnn_version", "definition", "class_names", "norm_mean", "norm_std"};
    const char *values[] = {MODEL_FORMAT, CNN_VERSION_STRING, net->definition, names, mean, std};
    int nmeta = net->has_norm ? 6 : 4;
    CNN_TRY(cnn_st_write(path, entries, nparams, keys, values, nmeta));
fail:
    if (host)
        for (int i = 0; i < nparams; i++) free(host[i]);
    free(host);
    free(entries);
    free(names);
    free(mean);
    free(std);
    return st;
}

static cnn_status load_class_names(cnn_net *net, const char *path, const char *names)
{
    int k = cnn_net_num_outputs(net);
    char **list = calloc((size_t)k, sizeof *list);
    char *copy = strdup(names);
    cnn_status st = CNN_OK;
    if (!list || !copy) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto done;
    }
    int n = 0;
    for (char *s = copy, *nl; s && n <= k; s = nl ? nl + 1 : NULL) {
        nl = strchr(s, '\n');
        if (nl) *nl = '\0';
        if (n < k) list[n] = s;
        n++;
    }
    if (n != k) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: metadata 'class_names' has %d names for %d outputs", path, n, k);
        goto done;
    }
    st = cnn_net_set_class_names(net, k, (const char *const *)list);
done:
    free(list);
    free(copy);
    return st;
}

cnn_status cnn_net_load(const char *path, cnn_backend *backend, cnn_net **out)
{
    cnn_status st = CNN_OK;
    cnn_st_file *f = NULL;
    cnn_net *net = NULL;
    *out = NULL;
    CNN_TRY(cnn_st_read(path, &f));
    const char *format = cnn_st_meta(f, "format");
    const char *definition = cnn_st_meta(f, "definition");
    if (!format || strcmp(format, MODEL_FORMAT) || !definition) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: not a cnn.c model file (its __metadata__ lacks format \"%s\" and a "
                                       "definition)", path, MODEL_FORMAT);
        goto fail;
    }
    {
        char source[512];
        snprintf(source, sizeof source, "%s (definition)", path);
        CNN_TRY(cnn_net_from_text(definition, source, backend, 0, &net));
    }
    int used = 0;
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < net->layers[i]->nparams + net->layers[i]->nstate; p++) {
            cnn_param *pr = saved_tensor(net->layers[i], p);
            const cnn_st_tensor *t = cnn_st_find(f, pr->name);
            if (!t) {
                st = cnn_error(CNN_ERR_FORMAT, "%s: tensor '%s' is missing", path, pr->name);
                goto fail;
            }
            int same = t->dtype == CNN_F32 && t->ndim == pr->value->ndim;
            for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == pr->value->shape[d];
            if (!same) {
                st = cnn_error(CNN_ERR_SHAPE, "%s: tensor '%s' is %s with %d dims; the definition needs F32 of shape "
                                              "(%lld, ...) with %d dims", path, pr->name, cnn_dtype_name(t->dtype),
                               t->ndim, (long long)pr->value->shape[0], pr->value->ndim);
                goto fail;
            }
            CNN_TRY(cnn_tensor_write(pr->value, cnn_st_data(f, t), t->nbytes));
            used++;
        }
    if (used != f->count) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: holds %d tensors but its definition uses %d", path, f->count, used);
        goto fail;
    }
    const char *names = cnn_st_meta(f, "class_names");
    if (names && names[0]) CNN_TRY(load_class_names(net, path, names));
    const char *mean_s = cnn_st_meta(f, "norm_mean"), *std_s = cnn_st_meta(f, "norm_std");
    if (mean_s && std_s && mean_s[0]) {
        int c = (int)net->input.d[2];
        float mean[CNN_NAME_MAX], std[CNN_NAME_MAX];
        if (c > CNN_NAME_MAX || !parse_floats(mean_s, mean, c) || !parse_floats(std_s, std, c)) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: metadata norm_mean/norm_std must hold %d comma-separated numbers", path, c);
            goto fail;
        }
        CNN_TRY(cnn_net_set_normalization(net, c, mean, std));
    }
    cnn_st_free(f);
    *out = net;
    return CNN_OK;
fail:
    cnn_st_free(f);
    cnn_net_destroy(net);
    return st;
}
