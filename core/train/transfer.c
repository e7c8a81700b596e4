/* Transfer learning: freezing a prefix of the network, copying weights between networks, replacing the
 * classifier, and importing weights trained elsewhere (a PyTorch state_dict of a torchvision ResNet saved as
 * safetensors). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/nn/model_file.h"
#include "core/nn/net.h"

/* The j-th saved tensor of layer l: its params, then its state (the order of model files). */
static cnn_param *saved(cnn_layer *l, int j)
{
    return j < l->nparams ? &l->params[j] : &l->state[j - l->nparams];
}

static int nsaved(const cnn_layer *l) { return l->nparams + l->nstate; }

// ---------------------------------------------------------------------------------------------------------------
// freezing

int cnn_net_frozen_layers(const cnn_net *net)
{
    int n = 0;
    while (n < net->nlayers && net->layers[n]->frozen) n++;
    return n;
}

cnn_status cnn_net_freeze_count(cnn_net *net, int count)
{
    if (count < 0 || count > net->nlayers)
        return cnn_error(CNN_ERR_INVALID_ARG, "cannot freeze %d layers of a network of %d", count, net->nlayers);
    int trainable = 0;
    for (int i = count; i < net->nlayers; i++) trainable += net->layers[i]->nparams;
    if (!trainable)
        return cnn_error(CNN_ERR_INVALID_ARG, "freezing %d of %d layers leaves no layer with weights to train", count,
                         net->nlayers);
    int changed = 0;
    for (int i = 0; i < net->nlayers; i++) {
        int f = i < count;
        changed |= net->layers[i]->frozen != f;
        net->layers[i]->frozen = f;
    }
    /* which layers need gradient buffers changed: the next batch rebuilds them */
    if (changed) net->capacity = 0;
    return CNN_OK;
}

cnn_status cnn_net_freeze(cnn_net *net, const char *upto, int *count)
{
    int n = 0;
    if (upto && upto[0]) {
        const char *c = upto;
        while (isdigit((unsigned char)*c)) c++;
        if (!*c && c - upto < 7) {
            n = atoi(upto);
        } else {
            n = -1;
            for (int i = 0; i < net->nlayers && n < 0; i++)
                if (!strcmp(net->layers[i]->name, upto)) n = i + 1;
            if (n < 0)
                return cnn_error(CNN_ERR_NOT_FOUND, "no layer named '%s' in %s (cnn summary lists the names; a number "
                                                    "N freezes the first N layers)", upto, net->source);
        }
        if (n > net->nlayers)
            return cnn_error(CNN_ERR_INVALID_ARG, "cannot freeze %d layers: %s has %d", n, net->source, net->nlayers);
    }
    cnn_status st = cnn_net_freeze_count(net, n);
    if (st == CNN_OK && count) *count = n;
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// copying weights, replacing the head

static cnn_param *find_saved(const cnn_net *net, const char *name)
{
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < nsaved(net->layers[i]); p++)
            if (!strcmp(saved(net->layers[i], p)->name, name)) return saved(net->layers[i], p);
    return NULL;
}

static int same_shape(const cnn_tensor *a, const cnn_tensor *b)
{
    if (a->ndim != b->ndim || a->dtype != b->dtype) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

/* Copies matching tensors, leaving layer `skip` (-1: none) of dst as it is. */
static cnn_status copy_weights(cnn_net *dst, const cnn_net *src, int skip, int *copied, int *kept)
{
    cnn_status st = CNN_OK;
    void *buf = NULL;
    size_t cap = 0;
    int nc = 0, nk = 0;
    for (int i = 0; i < dst->nlayers; i++)
        for (int p = 0; p < nsaved(dst->layers[i]); p++) {
            cnn_param *d = saved(dst->layers[i], p);
            const cnn_param *s = i == skip ? NULL : find_saved(src, d->name);
            if (!s || !same_shape(s->value, d->value)) {
                nk++;
                continue;
            }
            size_t bytes = cnn_tensor_bytes(d->value);
            if (bytes > cap) {
                void *grown = realloc(buf, bytes);
                if (!grown) {
                    st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory copying %s", d->name);
                    goto fail;
                }
                buf = grown;
                cap = bytes;
            }
            CNN_TRY(cnn_tensor_read(s->value, buf, bytes));
            CNN_TRY(cnn_tensor_write(d->value, buf, bytes));
            nc++;
        }
    if (copied) *copied = nc;
    if (kept) *kept = nk;
fail:
    free(buf);
    return st;
}

cnn_status cnn_net_copy_weights(cnn_net *dst, const cnn_net *src, int *copied, int *kept)
{
    return copy_weights(dst, src, -1, copied, kept);
}

/* The classifier: the last dense layer. */
static int head_index(const cnn_net *net)
{
    for (int i = net->nlayers - 1; i >= 0; i--)
        if (net->layers[i]->ops == &cnn_dense_layer_ops) return i;
    return -1;
}

/* `text` with the first argument of line `line` (1-based) replaced by `value`; NULL when there is none. */
static char *replace_first_argument(const char *text, int line, const char *value)
{
    const char *s = text;
    for (int l = 1; l < line && s; l++) {
        s = strchr(s, '\n');
        if (s) s++;
    }
    if (!s) return NULL;
    while (*s == ' ' || *s == '\t') s++;
    while (*s && !isspace((unsigned char)*s)) s++; /* the keyword */
    while (*s == ' ' || *s == '\t') s++;
    const char *arg = s;
    while (*s && !isspace((unsigned char)*s) && *s != '#') s++;
    if (s == arg) return NULL;
    size_t before = (size_t)(arg - text), vlen = strlen(value), after = strlen(s);
    char *out = malloc(before + vlen + after + 1);
    if (!out) return NULL;
    memcpy(out, text, before);
    memcpy(out + before, value, vlen);
    memcpy(out + before + vlen, s, after + 1);
    return out;
}

cnn_status cnn_net_replace_head(const cnn_net *net, int classes, uint64_t seed, cnn_net **out)
{
    cnn_status st = CNN_OK;
    cnn_net *fresh = NULL;
    char *text = NULL;
    *out = NULL;
    if (classes < 1 || classes > 1000000)
        return cnn_error(CNN_ERR_INVALID_ARG, "the new head needs 1 to 1000000 classes, got %d", classes);
    int h = head_index(net);
    if (h < 0) return cnn_error(CNN_ERR_UNSUPPORTED, "%s has no dense layer to replace", net->source);
    const cnn_layer *head = net->layers[h];
    for (int i = 0; i < net->nlayers; i++)
        if (i != h && net->layers[i]->line == head->line)
            return cnn_error(CNN_ERR_UNSUPPORTED, "%s: the classifier %s (line %d) is inside a repeat block: write "
                                                  "the new head in the definition instead", net->source, head->name,
                             head->line);
    char units[16];
    snprintf(units, sizeof units, "%d", classes);
    text = replace_first_argument(net->definition, head->line, units);
    if (!text) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory (or line %d of %s holds no units)", head->line,
                       net->source);
        goto fail;
    }
    CNN_TRY(cnn_net_from_text(text, net->source, net->backend, seed, &fresh));
    int nh = head_index(fresh);
    if (nh != h || cnn_net_num_outputs(fresh) != classes) {
        st = cnn_error(CNN_ERR_UNSUPPORTED, "%s: the classifier %s is not the last layer with outputs: write the new "
                                            "head in the definition instead", net->source, head->name);
        goto fail;
    }
    CNN_TRY(copy_weights(fresh, net, h, NULL, NULL));
    if (net->has_norm) CNN_TRY(cnn_net_set_normalization(fresh, (int)net->input.d[2], net->norm_mean, net->norm_std));
    fresh->resize_h = net->resize_h; /* the same input: the same size images were resized to */
    fresh->resize_w = net->resize_w;
    *out = fresh;
    fresh = NULL;
fail:
    free(text);
    cnn_net_destroy(fresh);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// PyTorch state_dicts: torchvision's ResNet names

typedef struct torch_names {
    char **names; /* one per saved tensor of the net, in cnn_net order */
    int n;
} torch_names;

static void torch_names_free(torch_names *t)
{
    for (int i = 0; i < t->n; i++) free(t->names[i]);
    free(t->names);
}

static cnn_status name_layer(torch_names *t, const cnn_net *net, int li, const char *module)
{
    cnn_layer *l = net->layers[li];
    int base = 0;
    for (int i = 0; i < li; i++) base += nsaved(net->layers[i]);
    static const char *const conv_suffix[] = {"weight", "bias"};
    static const char *const bn_suffix[] = {"weight", "bias", "running_mean", "running_var"};
    for (int p = 0; p < nsaved(l); p++) {
        const char *suffix = l->ops == &cnn_batchnorm_layer_ops ? bn_suffix[p] : conv_suffix[p];
        size_t len = strlen(module) + strlen(suffix) + 2;
        t->names[base + p] = malloc(len);
        if (!t->names[base + p]) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        snprintf(t->names[base + p], len, "%s.%s", module, suffix);
    }
    return CNN_OK;
}

static cnn_status not_resnet(const cnn_net *net, int li, const char *why)
{
    return cnn_error(CNN_ERR_UNSUPPORTED, "%s: not torchvision's ResNet layout at layer %s (line %d): %s", net->source,
                     net->layers[li]->name, net->layers[li]->line, why);
}

/* torchvision names for every saved tensor: a stem (conv1, bn1, a pool), blocks that end in an add (convs and
 * batchnorms named conv1/bn1, conv2/bn2, ... along the main path; a conv that reads the block input after the
 * first is the shortcut, downsample.0 with its batchnorm downsample.1), then fc. A block with a shortcut starts
 * a new stage (layerS), except the very first; the blocks of a stage count from 0. */
static cnn_status resnet_names(const cnn_net *net, torch_names *t)
{
    cnn_status st = CNN_OK;
    int total = 0;
    for (int i = 0; i < net->nlayers; i++) total += nsaved(net->layers[i]);
    t->n = total;
    t->names = calloc((size_t)(total ? total : 1), sizeof *t->names);
    if (!t->names) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    int i = 0, convs = 0;
    char module[96];
    /* the stem: up to and including the first pooling layer */
    for (; i < net->nlayers; i++) {
        const cnn_layer *l = net->layers[i];
        if (l->ops == &cnn_conv_layer_ops) {
            if (convs++) return not_resnet(net, i, "the stem has one convolution");
            CNN_TRY(name_layer(t, net, i, "conv1"));
        } else if (l->ops == &cnn_batchnorm_layer_ops) {
            CNN_TRY(name_layer(t, net, i, "bn1"));
        } else if (l->ops == &cnn_maxpool_layer_ops || l->ops == &cnn_avgpool_layer_ops) {
            i++;
            break;
        } else if (nsaved(l)) {
            return not_resnet(net, i, "expected conv, batchnorm and a pool first");
        }
    }
    int stage = 0, block = -1, block_input = i - 1, fc = 0;
    while (i < net->nlayers) {
        /* a block runs to the next add; the tail (no add) is pooling and the classifier */
        int end = i;
        while (end < net->nlayers && net->layers[end]->ops != &cnn_add_layer_ops) end++;
        if (end == net->nlayers) {
            for (; i < net->nlayers; i++) {
                const cnn_layer *l = net->layers[i];
                if (l->ops == &cnn_dense_layer_ops && !fc++) CNN_TRY(name_layer(t, net, i, "fc"));
                else if (nsaved(l)) return not_resnet(net, i, "after the last block only pooling and one dense");
            }
            break;
        }
        int shortcut = 0;
        for (int j = i; j < end; j++)
            if (net->layers[j]->ops == &cnn_conv_layer_ops && net->layers[j]->inputs[0] == block_input && j != i)
                shortcut = 1;
        if (block < 0 || shortcut) {
            stage++;
            block = 0;
        } else {
            block++;
        }
        int j_main = 0, owner_down = -1;
        int last_conv_kind = 0, last_conv_num = 0; /* 1: main conv number last_conv_num; 2: shortcut */
        for (int j = i; j <= end; j++) {
            const cnn_layer *l = net->layers[j];
            if (l->ops == &cnn_conv_layer_ops) {
                if (j != i && l->inputs[0] == block_input) {
                    if (owner_down >= 0) return not_resnet(net, j, "a block has one shortcut convolution");
                    owner_down = j;
                    snprintf(module, sizeof module, "layer%d.%d.downsample.0", stage, block);
                    last_conv_kind = 2;
                } else {
                    snprintf(module, sizeof module, "layer%d.%d.conv%d", stage, block, ++j_main);
                    last_conv_kind = 1;
                    last_conv_num = j_main;
                }
                CNN_TRY(name_layer(t, net, j, module));
            } else if (l->ops == &cnn_batchnorm_layer_ops) {
                if (!last_conv_kind) return not_resnet(net, j, "a batchnorm without a convolution before it");
                if (last_conv_kind == 2) snprintf(module, sizeof module, "layer%d.%d.downsample.1", stage, block);
                else snprintf(module, sizeof module, "layer%d.%d.bn%d", stage, block, last_conv_num);
                CNN_TRY(name_layer(t, net, j, module));
                last_conv_kind = 0;
            } else if (nsaved(l)) {
                return not_resnet(net, j, "blocks hold convolutions and batchnorms only");
            }
        }
        block_input = end;
        i = end + 1;
    }
    if (!fc) return cnn_error(CNN_ERR_UNSUPPORTED, "%s: not torchvision's ResNet layout: no dense classifier (fc)",
                              net->source);
fail:
    return st;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13); /* inf, NaN */
    } else if (exp) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man) { /* subnormal: normalize */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FFu) << 13);
    } else {
        bits = sign;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* F32, F16 or BF16 bytes (little-endian) to n floats. */
static void to_f32(const unsigned char *src, cnn_dtype dtype, int64_t n, float *dst)
{
    for (int64_t i = 0; i < n; i++) {
        if (dtype == CNN_F32) {
            memcpy(&dst[i], src + 4 * i, 4);
        } else {
            uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
            if (dtype == CNN_F16) {
                dst[i] = half_to_float(h);
            } else {
                uint32_t bits = (uint32_t)h << 16;
                memcpy(&dst[i], &bits, 4);
            }
        }
    }
}

static const cnn_st_tensor *find_torch(const cnn_st_file *f, const char *name)
{
    const cnn_st_tensor *t = cnn_st_find(f, name);
    if (!t) {
        char prefixed[160];
        snprintf(prefixed, sizeof prefixed, "module.%s", name); /* DataParallel's prefix */
        t = cnn_st_find(f, prefixed);
    }
    return t;
}

static cnn_status import_torch(cnn_net *net, const cnn_st_file *f, const char *path)
{
    cnn_status st = CNN_OK;
    torch_names names = {0};
    float *a = NULL, *b = NULL;
    char *used = calloc((size_t)(f->count ? f->count : 1), 1);
    if (!used) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    CNN_TRY(resnet_names(net, &names));
    int k = 0;
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < nsaved(net->layers[i]); p++, k++) {
            cnn_layer *l = net->layers[i];
            cnn_param *pr = saved(l, p);
            const cnn_st_tensor *t = find_torch(f, names.names[k]);
            if (!t) {
                st = cnn_error(CNN_ERR_FORMAT, "%s: tensor '%s' (for %s) is missing", path, names.names[k], pr->name);
                goto fail;
            }
            used[t - f->tensors] = 1;
            if (t->dtype != CNN_F32 && t->dtype != CNN_F16 && t->dtype != CNN_BF16) {
                st = cnn_error(CNN_ERR_UNSUPPORTED, "%s: tensor '%s' is not F32, F16 or BF16", path, t->name);
                goto fail;
            }
            /* torch's shape: conv weights OIHW, everything else as ours */
            const cnn_tensor *v = pr->value;
            int conv_w = l->ops == &cnn_conv_layer_ops && p == 0;
            int64_t want[CNN_MAX_DIMS];
            for (int d = 0; d < v->ndim; d++) want[d] = v->shape[d];
            if (conv_w) {
                want[1] = v->shape[3];
                want[2] = v->shape[1];
                want[3] = v->shape[2];
            }
            int same = t->ndim == v->ndim;
            for (int d = 0; same && d < v->ndim; d++) same = t->shape[d] == want[d];
            if (!same) {
                char got[96] = "", exp[96] = "";
                size_t gl = 0, el = 0;
                for (int d = 0; d < t->ndim; d++)
                    gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
                for (int d = 0; d < v->ndim; d++)
                    el += (size_t)snprintf(exp + el, sizeof exp - el, "%s%lld", d ? ", " : "", (long long)want[d]);
                st = cnn_error(CNN_ERR_SHAPE, "%s: tensor '%s' has shape (%s); %s needs (%s)", path, t->name, got,
                               pr->name, exp);
                goto fail;
            }
            int64_t n = cnn_tensor_numel(v);
            a = malloc((size_t)(n ? n : 1) * sizeof *a);
            b = malloc((size_t)(n ? n : 1) * sizeof *b);
            if (!a || !b) {
                st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for %s", t->name);
                goto fail;
            }
            to_f32(cnn_st_data(f, t), t->dtype, n, a);
            const float *src = a;
            if (conv_w) { /* (O, I, KH, KW) -> (O, KH, KW, I) */
                int64_t O = v->shape[0], KH = v->shape[1], KW = v->shape[2], I = v->shape[3];
                for (int64_t o = 0; o < O; o++)
                    for (int64_t c = 0; c < I; c++)
                        for (int64_t y = 0; y < KH; y++)
                            for (int64_t x = 0; x < KW; x++)
                                b[((o * KH + y) * KW + x) * I + c] = a[((o * I + c) * KH + y) * KW + x];
                src = b;
            }
            CNN_TRY(cnn_tensor_write(pr->value, src, (size_t)n * sizeof(float)));
            free(a);
            free(b);
            a = b = NULL;
        }
    for (int i = 0; i < f->count; i++) {
        const char *nm = f->tensors[i].name;
        size_t len = strlen(nm), tail = strlen("num_batches_tracked");
        if (used[i] || (len >= tail && !strcmp(nm + len - tail, "num_batches_tracked"))) continue;
        st = cnn_error(CNN_ERR_FORMAT, "%s: tensor '%s' has no place in %s (torchvision ResNet names expected)", path,
                       nm, net->source);
        goto fail;
    }
fail:
    free(a);
    free(b);
    free(used);
    torch_names_free(&names);
    return st;
}

cnn_status cnn_net_import_torch(cnn_net *net, const char *path)
{
    cnn_st_file *f = NULL;
    cnn_status st = cnn_st_read_ex(path, CNN_ST_KEEP_FOREIGN, &f);
    if (st == CNN_OK) st = import_torch(net, f, path);
    cnn_st_free(f);
    return st;
}

cnn_status cnn_net_init_from(cnn_net *net, const char *path, int *copied, int *kept)
{
    cnn_st_file *f = NULL;
    cnn_net *src = NULL;
    int nc = 0, nk = 0;
    cnn_status st = cnn_st_read_ex(path, CNN_ST_KEEP_FOREIGN, &f);
    if (st != CNN_OK) return st;
    const char *format = cnn_st_meta(f, "format");
    if (format && (!strcmp(format, CNN_MODEL_FORMAT) || !strcmp(format, CNN_CHECKPOINT_FORMAT))) {
        CNN_TRY(cnn_net_from_st(f, path, net->backend, &src));
        CNN_TRY(copy_weights(net, src, -1, &nc, &nk));
        if (!nc) {
            st = cnn_error(CNN_ERR_SHAPE, "%s: none of its tensors has the name and shape of one in %s", path,
                           net->source);
            goto fail;
        }
        if (src->has_norm && !net->has_norm && src->input.d[2] == net->input.d[2])
            CNN_TRY(cnn_net_set_normalization(net, (int)src->input.d[2], src->norm_mean, src->norm_std));
        if (src->resize_h && !net->resize_h && src->input.d[0] == net->input.d[0] && src->input.d[1] == net->input.d[1])
            CNN_TRY(cnn_net_set_resize(net, src->resize_h, src->resize_w));
    } else {
        CNN_TRY(import_torch(net, f, path));
        for (int i = 0; i < net->nlayers; i++) nc += nsaved(net->layers[i]);
        /* torchvision's weights expect ImageNet-standardized RGB (torchvision.transforms.Normalize in its recipes) */
        static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};
        if (!net->has_norm && net->input.d[2] == 3) CNN_TRY(cnn_net_set_normalization(net, 3, imagenet_mean, imagenet_std));
    }
    if (copied) *copied = nc;
    if (kept) *kept = nk;
fail:
    cnn_net_destroy(src);
    cnn_st_free(f);
    return st;
}
