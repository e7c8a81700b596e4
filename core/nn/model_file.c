#define _POSIX_C_SOURCE 200809L
/* Model and checkpoint files: one safetensors file with the weights (F32, "<layer>.weight" / "<layer>.bias",
 * batchnorm's "<layer>.gamma" / ".beta") and non-trainable state ("<layer>.running_mean" / ".running_var") and, in
 * __metadata__, the definition text, the class names and the input normalization. Checkpoints add their own
 * tensors (names with a '/'), metadata and a checksum (core/nn/model_file.h, core/train/checkpoint.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/prune.h"
#include "cnn/quant.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/io/zfile.h"
#include "core/nn/model_file.h"
#include "core/parse.h"

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

// ---------------------------------------------------------------------------------------------------------------
// checksums

typedef struct ck_item {
    const char *name;  /* tensor name or metadata key */
    const char *dtype; /* tensors: the safetensors dtype name; metadata: the value */
    int ndim;
    const int64_t *shape;
    const void *data;
    size_t nbytes;
} ck_item;

static int cmp_item(const void *a, const void *b)
{
    return strcmp(((const ck_item *)a)->name, ((const ck_item *)b)->name);
}

/* tensors[0..nt) then metadata[0..nm) (dtype = value), each sorted by name; both arrays are reordered. */
static uint32_t checksum_items(ck_item *tensors, int nt, ck_item *meta, int nm)
{
    qsort(tensors, (size_t)nt, sizeof *tensors, cmp_item);
    qsort(meta, (size_t)nm, sizeof *meta, cmp_item);
    uint32_t crc = 0;
    for (int i = 0; i < nt; i++) {
        const ck_item *t = &tensors[i];
        crc = cnn_crc32c(crc, t->name, strlen(t->name) + 1);
        crc = cnn_crc32c(crc, t->dtype, strlen(t->dtype) + 1);
        for (int d = 0; d < t->ndim; d++) {
            unsigned char le[8];
            for (int k = 0; k < 8; k++) le[k] = (unsigned char)((uint64_t)t->shape[d] >> (8 * k));
            crc = cnn_crc32c(crc, le, sizeof le);
        }
        crc = cnn_crc32c(crc, t->data, t->nbytes);
    }
    for (int i = 0; i < nm; i++) {
        crc = cnn_crc32c(crc, meta[i].name, strlen(meta[i].name) + 1);
        crc = cnn_crc32c(crc, meta[i].dtype, strlen(meta[i].dtype) + 1);
    }
    return crc;
}

uint32_t cnn_file_checksum(const cnn_st_file *f)
{
    ck_item *items = calloc((size_t)f->count + (size_t)f->meta_count + 1, sizeof *items);
    if (!items) return 0; /* out of memory: the verification reports a mismatch */
    int nm = 0;
    for (int i = 0; i < f->count; i++) {
        const cnn_st_tensor *t = &f->tensors[i];
        const char *dt = t->dtype < CNN_DTYPE_COUNT ? cnn_st_dtype_name(t->dtype) : "?";
        items[i] = (ck_item){t->name, dt, t->ndim, t->shape, f->data + t->offset, t->nbytes};
    }
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], CNN_CHECKSUM_KEY))
            items[f->count + nm++] = (ck_item){f->meta_keys[i], f->meta_values[i], 0, NULL, NULL, 0};
    uint32_t crc = checksum_items(items, f->count, items + f->count, nm);
    free(items);
    return crc;
}

cnn_status cnn_file_verify_checksum(const cnn_st_file *f, const char *path)
{
    const char *stored = cnn_st_meta(f, CNN_CHECKSUM_KEY);
    unsigned long want;
    char *end;
    if (!stored || strncmp(stored, "crc32c:", 7) || strlen(stored) != 15 ||
        (want = strtoul(stored + 7, &end, 16), *end))
        return cnn_error(CNN_ERR_FORMAT, "%s: no valid '" CNN_CHECKSUM_KEY "' entry in its metadata (expected "
                                         "crc32c:XXXXXXXX)", path);
    uint32_t got = cnn_file_checksum(f);
    if (got != (uint32_t)want)
        return cnn_error(CNN_ERR_FORMAT, "%s: checksum mismatch (stored %08lx, contents give %08x): the file is "
                                         "corrupt", path, want, got);
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// writing

cnn_status cnn_net_write_file(const cnn_net *net, const char *path, const char *format, const cnn_st_entry *extra,
                              int nextra, const char *const *extra_keys, const char *const *extra_values, int nextra_meta,
                              int checksum)
{
    cnn_status st = CNN_OK;
    if (cnn_net_is_quantized(net))
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: a quantized model is written by cnn quantize, from its float model",
                         path);
    int nparams = 0;
    for (int i = 0; i < net->nlayers; i++) nparams += net->layers[i]->nparams + net->layers[i]->nstate;
    int ntensors = nparams + nextra;
    enum { MODEL_META = 11 };
    int nmeta_cap = MODEL_META + nextra_meta + 1;
    cnn_st_entry *entries = calloc((size_t)(ntensors ? ntensors : 1), sizeof *entries);
    void **host = calloc((size_t)(nparams ? nparams : 1), sizeof *host);
    const char **keys = calloc((size_t)nmeta_cap, sizeof *keys), **values = calloc((size_t)nmeta_cap, sizeof *values);
    ck_item *items = calloc((size_t)(ntensors + nmeta_cap), sizeof *items);
    int k = cnn_net_num_outputs(net), c = (int)net->input.d[2];
    size_t names_len = 1;
    if (net->class_names)
        for (int i = 0; i < k; i++) names_len += strlen(net->class_names[i]) + 1;
    char *names = malloc(names_len);
    char *mean = malloc((size_t)c * 20 + 1), *std = malloc((size_t)c * 20 + 1);
    char *pmean = malloc((size_t)c * 20 + 1), *pstd = malloc((size_t)c * 20 + 1), *freq = malloc((size_t)k * 20 + 1);
    char sum[32], resize[32], frozen[16];
    if (!entries || !host || !names || !mean || !std || !pmean || !pstd || !freq || !keys || !values || !items) {
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
    for (int i = 0; i < nextra; i++) entries[nparams + i] = extra[i];
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
    pmean[0] = pstd[0] = freq[0] = '\0';
    if (net->has_profile) {
        format_floats(pmean, (size_t)c * 20 + 1, net->profile_mean, c);
        format_floats(pstd, (size_t)c * 20 + 1, net->profile_std, c);
        format_floats(freq, (size_t)k * 20 + 1, net->class_freq, k);
    }
    snprintf(resize, sizeof resize, "%dx%d", net->resize_h, net->resize_w);
    /* the frozen prefix of a fine-tuned model (checkpoints write their own, with the training state) */
    int nfrozen = strcmp(format, CNN_MODEL_FORMAT) ? 0 : cnn_net_frozen_layers(net);
    snprintf(frozen, sizeof frozen, "%d", nfrozen);
    const char *model_keys[MODEL_META] = {"format", "cnn_version", "definition", "class_names", "norm_mean", "norm_std",
                                          "resize", "data_mean", "data_std", "class_freq", "frozen_layers"};
    const char *model_values[MODEL_META] = {format, CNN_VERSION_STRING, net->definition, names, mean, std, resize,
                                            pmean, pstd, freq, frozen};
    int nmeta = 0;
    for (int i = 0; i < MODEL_META; i++) {
        if ((i == 4 || i == 5) && !net->has_norm) continue;
        if (i == 6 && !net->resize_h) continue;
        if (i >= 7 && i <= 9 && !net->has_profile) continue;
        if (i == 10 && !nfrozen) continue;
        keys[nmeta] = model_keys[i];
        values[nmeta++] = model_values[i];
    }
    for (int i = 0; i < nextra_meta; i++) {
        keys[nmeta] = extra_keys[i];
        values[nmeta++] = extra_values[i];
    }
    if (checksum & CNN_WRITE_CHECKSUM) {
        for (int i = 0; i < ntensors; i++) {
            const cnn_st_entry *en = &entries[i];
            size_t nbytes = cnn_dtype_size(en->dtype);
            for (int d = 0; d < en->ndim; d++) nbytes *= (size_t)en->shape[d];
            items[i] = (ck_item){en->name, cnn_st_dtype_name(en->dtype), en->ndim, en->shape, en->data, nbytes};
        }
        for (int i = 0; i < nmeta; i++) items[ntensors + i] = (ck_item){keys[i], values[i], 0, NULL, NULL, 0};
        snprintf(sum, sizeof sum, "crc32c:%08x", checksum_items(items, ntensors, items + ntensors, nmeta));
        keys[nmeta] = CNN_CHECKSUM_KEY;
        values[nmeta++] = sum;
    }
    if (checksum & CNN_WRITE_ZLIB) {
        unsigned char *bytes = NULL;
        size_t len = 0;
        CNN_TRY(cnn_st_serialize(entries, ntensors, keys, values, nmeta, &bytes, &len));
        st = cnn_zfile_write(path, bytes, len);
        free(bytes);
    } else {
        CNN_TRY(cnn_st_write(path, entries, ntensors, keys, values, nmeta));
    }
fail:
    if (host)
        for (int i = 0; i < nparams; i++) free(host[i]);
    free(host);
    free(entries);
    free(keys);
    free(values);
    free(items);
    free(names);
    free(mean);
    free(std);
    free(pmean);
    free(pstd);
    free(freq);
    return st;
}

cnn_status cnn_net_save(const cnn_net *net, const char *path)
{
    return cnn_net_write_file(net, path, CNN_MODEL_FORMAT, NULL, 0, NULL, NULL, 0, 0);
}

cnn_status cnn_net_save_compressed(const cnn_net *net, const char *path)
{
    return cnn_net_write_file(net, path, CNN_MODEL_FORMAT, NULL, 0, NULL, NULL, 0, CNN_WRITE_ZLIB);
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

cnn_status cnn_net_read_tensors(cnn_net *net, const cnn_st_file *f, const char *path)
{
    cnn_status st = CNN_OK;
    int used = 0, own = 0;
    for (int i = 0; i < f->count; i++) own += strchr(f->tensors[i].name, '/') == NULL;
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < net->layers[i]->nparams + net->layers[i]->nstate; p++) {
            cnn_param *pr = saved_tensor(net->layers[i], p);
            const cnn_st_tensor *t = cnn_st_find(f, pr->name);
            if (!t) return cnn_error(CNN_ERR_FORMAT, "%s: tensor '%s' is missing", path, pr->name);
            int same = t->dtype == CNN_F32 && t->ndim == pr->value->ndim;
            for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == pr->value->shape[d];
            if (!same)
                return cnn_error(CNN_ERR_SHAPE, "%s: tensor '%s' is %s with %d dims; the definition needs F32 of "
                                                "shape (%lld, ...) with %d dims", path, pr->name,
                                 t->dtype < CNN_DTYPE_COUNT ? cnn_dtype_name(t->dtype) : "a foreign dtype", t->ndim,
                                 (long long)pr->value->shape[0], pr->value->ndim);
            CNN_TRY(cnn_tensor_write(pr->value, cnn_st_data(f, t), t->nbytes));
            used++;
        }
    if (used != own)
        return cnn_error(CNN_ERR_FORMAT, "%s: holds %d tensors but its definition uses %d", path, own, used);
fail:
    return st;
}

/* A file cannot hold a network whose parameters outnumber its tensors' elements: refuse that before building the
 * network, which would allocate and initialize every parameter first (a 1 KB file declaring a 4 GiB dense layer
 * within the memory limit). The memory limit is checked first, as cnn_net_from_text would; a shortfall of up to
 * 4 Mi values (16 MiB of f32) is left to cnn_net_read_tensors, which names the missing tensor. */
static cnn_status check_holds_parameters(const cnn_st_file *f, const char *path, const char *definition,
                                         const char *source)
{
    cnn_memory_estimate *e = NULL;
    cnn_memory_config cfg = {.batch = 1, .optimizer_slots = 0};
    cnn_status st = cnn_memory_estimate_text(definition, source, &cfg, &e);
    if (st != CNN_OK) return st;
    st = cnn_memory_check(e, 0, 0);
    int64_t need = e->trainable + e->non_trainable, have = 0;
    cnn_memory_estimate_destroy(e);
    if (st != CNN_OK) return st;
    for (int i = 0; i < f->count; i++) {
        size_t size = cnn_dtype_size(f->tensors[i].dtype);
        if (size) have += (int64_t)(f->tensors[i].nbytes / size);
    }
    if (need - have > ((int64_t)4 << 20))
        return cnn_error(CNN_ERR_FORMAT, "%s: its definition has %lld parameters, but its tensors hold %lld values: "
                         "a truncated or forged model file", path, (long long)need, (long long)have);
    return CNN_OK;
}

/* The training set's profile (data_mean, data_std, class_freq), when the file has one: all three or none. */
static cnn_status load_profile(cnn_net *net, const cnn_st_file *f, const char *path)
{
    const char *mean_s = cnn_st_meta(f, "data_mean"), *std_s = cnn_st_meta(f, "data_std");
    const char *freq_s = cnn_st_meta(f, "class_freq");
    if (!mean_s && !std_s && !freq_s) return CNN_OK;
    int c = (int)net->input.d[2], k = cnn_net_num_outputs(net);
    float *v = malloc((size_t)(2 * c + k) * sizeof *v);
    if (!v) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    cnn_status st;
    if (!mean_s || !std_s || !freq_s || !parse_floats(mean_s, v, c) || !parse_floats(std_s, v + c, c) ||
        !parse_floats(freq_s, v + 2 * c, k))
        st = cnn_error(CNN_ERR_FORMAT, "%s: metadata data_mean, data_std and class_freq must all be there, with %d, %d "
                       "and %d comma-separated numbers", path, c, c, k);
    else if ((st = cnn_net_set_data_profile(net, c, v, v + c, k, v + 2 * c)) != CNN_OK)
        st = cnn_error_prefix(st, "%s: metadata: ", path);
    free(v);
    return st;
}

cnn_status cnn_net_from_st(const cnn_st_file *f, const char *path, cnn_backend *backend, cnn_net **out)
{
    cnn_status st = CNN_OK;
    cnn_net *net = NULL;
    *out = NULL;
    const char *format = cnn_st_meta(f, "format");
    const char *definition = cnn_st_meta(f, "definition");
    int checkpoint = format && !strcmp(format, CNN_CHECKPOINT_FORMAT);
    if (!format || (strcmp(format, CNN_MODEL_FORMAT) && !checkpoint) || !definition)
        return cnn_error(CNN_ERR_FORMAT, "%s: not a cnn.c model or checkpoint file (its __metadata__ lacks format \""
                                         CNN_MODEL_FORMAT "\" and a definition)", path);
    if (checkpoint) CNN_TRY(cnn_file_verify_checksum(f, path));
    {
        char source[512];
        snprintf(source, sizeof source, "%s (definition)", path);
        CNN_TRY(check_holds_parameters(f, path, definition, source));
        CNN_TRY(cnn_net_from_text(definition, source, backend, 0, &net));
    }
    CNN_TRY(cnn_net_read_tensors(net, f, path));
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
    CNN_TRY(load_profile(net, f, path));
    const char *frozen_s = cnn_st_meta(f, "frozen_layers");
    if (frozen_s) {
        char *end;
        long n = strtol(frozen_s, &end, 10);
        if (!*frozen_s || *end || n < 0 || n > net->nlayers) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: metadata 'frozen_layers' must be a count from 0 to %d (the layers), got "
                           "'%s'", path, net->nlayers, frozen_s);
            goto fail;
        }
        CNN_TRY(cnn_net_freeze_count(net, (int)n));
    }
    const char *resize_s = cnn_st_meta(f, "resize");
    if (resize_s) {
        int hw[2];
        if (!cnn_parse_dims(resize_s, 2, 65536, hw)) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: metadata 'resize' must be HxW (e.g. 256x256), got '%s'", path, resize_s);
            goto fail;
        }
        if ((st = cnn_net_set_resize(net, hw[0], hw[1])) != CNN_OK) {
            st = cnn_error_prefix(st, "%s: metadata 'resize': ", path);
            goto fail;
        }
    }
    *out = net;
    return CNN_OK;
fail:
    cnn_net_destroy(net);
    return st;
}

/* 1 when the file at path starts like a model definition: text whose first word outside comments is "input". */
static int looks_like_definition(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    size_t i = 0;
    while (i < n) {
        i += strspn(buf + i, " \t\r\n\f\v");
        if (buf[i] != '#') break;
        i += strcspn(buf + i, "\n"); /* a comment line */
    }
    return !strncmp(buf + i, "input", 5) && (buf[i + 5] == ' ' || buf[i + 5] == '\t');
}

cnn_status cnn_net_load(const char *path, cnn_backend *backend, cnn_net **out)
{
    cnn_st_file *f = NULL;
    *out = NULL;
    if (!path) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_net_load: no path");
    cnn_status st = cnn_st_read(path, &f);
    if (st == CNN_ERR_FORMAT && looks_like_definition(path))
        return cnn_error(CNN_ERR_FORMAT, "%s is a model definition (text), not a trained model file: train it first "
                         "(cnn train --model %s --out MODEL.safetensors), then use the .safetensors file it writes",
                         path, path);
    if (st == CNN_OK) {
        const char *format = cnn_st_meta(f, "format");
        if (format && !strcmp(format, CNN_LITE_FORMAT)) { /* a quantized model: its bytes go to cnn-lite */
            cnn_st_free(f);
            unsigned char *bytes = NULL;
            size_t len = 0;
            st = cnn_read_file(path, (size_t)1 << 34, &bytes, &len);
            return st == CNN_OK ? cnn_net_from_lite(bytes, len, path, backend, out) : st;
        }
        st = cnn_net_from_st(f, path, backend, out);
    }
    cnn_st_free(f);
    return st;
}
