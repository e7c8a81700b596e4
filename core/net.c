/* The network: construction from a definition, buffers, forward/backward, summary, prediction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/net.h"

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- buffers ------------------------------------------------------------------------------------------- */

static void free_view(cnn_tensor *t)
{
    if (t && !t->owns_data) free(t);
    else cnn_tensor_destroy(t);
}

static void free_buffers(cnn_net *net)
{
    for (int i = 0; i < net->nlayers; i++) {
        if (net->acts) free_view(net->acts[i]);
        /* a view layer's grad aliases its predecessor's */
        if (net->grads) free_view(net->grads[i]);
    }
    free(net->acts);
    free(net->grads);
    net->acts = net->grads = NULL;
    cnn_tensor_destroy(net->input_t);
    cnn_tensor_destroy(net->labels);
    cnn_tensor_destroy(net->probs);
    cnn_tensor_destroy(net->losses);
    net->input_t = net->labels = net->probs = net->losses = NULL;
    free(net->host_batch);
    free(net->host_labels);
    net->host_batch = NULL;
    net->host_labels = NULL;
    net->capacity = 0;
}

static cnn_status make_view(const cnn_tensor *of, const cnn_shape *s, int n, cnn_tensor **out)
{
    cnn_tensor *t = calloc(1, sizeof *t);
    if (!t) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    *t = *of;
    t->owns_data = 0;
    t->ndim = s->ndim + 1;
    t->shape[0] = n;
    for (int d = 0; d < s->ndim; d++) t->shape[d + 1] = s->d[d];
    *out = t;
    return CNN_OK;
}

static cnn_status alloc_batch_tensor(cnn_backend *b, const cnn_shape *s, int n, cnn_tensor **out)
{
    int64_t shape[CNN_MAX_DIMS] = {n};
    for (int d = 0; d < s->ndim; d++) shape[d + 1] = s->d[d];
    return cnn_tensor_create(b, CNN_F32, s->ndim + 1, shape, out);
}

static cnn_status alloc_buffers(cnn_net *net, int n)
{
    cnn_status st = CNN_OK;
    cnn_backend *b = net->backend;
    int k = cnn_net_num_outputs(net);
    free_buffers(net);
    net->acts = calloc((size_t)net->nlayers, sizeof *net->acts);
    net->grads = calloc((size_t)net->nlayers, sizeof *net->grads);
    if (!net->acts || !net->grads) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for %d layers", net->nlayers);
        goto fail;
    }
    CNN_TRY(alloc_batch_tensor(b, &net->input, n, &net->input_t));
    int any_params_before = 0; /* does some layer at or before i need the gradient of its output? */
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        const cnn_tensor *prev_act = i ? net->acts[i - 1] : net->input_t;
        if (l->ops->is_view) {
            CNN_TRY(make_view(prev_act, &l->out, n, &net->acts[i]));
            if (any_params_before) CNN_TRY(make_view(net->grads[i - 1], &l->out, n, &net->grads[i]));
        } else {
            any_params_before = 1;
            CNN_TRY(alloc_batch_tensor(b, &l->out, n, &net->acts[i]));
            CNN_TRY(alloc_batch_tensor(b, &l->out, n, &net->grads[i]));
        }
    }
    int64_t nk[2] = {n, k}, n1[1] = {n};
    CNN_TRY(cnn_tensor_create(b, CNN_I32, 1, n1, &net->labels));
    CNN_TRY(cnn_tensor_create(b, CNN_F32, 1, n1, &net->losses));
    CNN_TRY(cnn_tensor_create(b, CNN_F32, 2, nk, &net->probs));
    size_t per = (size_t)(net->input.d[0] * net->input.d[1] * net->input.d[2]);
    net->host_batch = malloc((size_t)n * per * sizeof(float));
    net->host_labels = malloc((size_t)n * sizeof(int32_t));
    if (!net->host_batch || !net->host_labels) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a batch of %d", n);
        goto fail;
    }
    net->capacity = n;
    net->batch = n;
    return CNN_OK;
fail:
    free_buffers(net);
    return st;
}

static void set_batch_dim(cnn_tensor *t, int n)
{
    if (t) t->shape[0] = n;
}

cnn_status cnn_net_set_batch(cnn_net *net, int n)
{
    if (n < 1) return cnn_error(CNN_ERR_INVALID_ARG, "batch size must be at least 1, got %d", n);
    if (n > net->capacity) {
        cnn_status st = alloc_buffers(net, n);
        if (st != CNN_OK) return st;
    }
    set_batch_dim(net->input_t, n);
    for (int i = 0; i < net->nlayers; i++) {
        set_batch_dim(net->acts[i], n);
        set_batch_dim(net->grads[i], n);
    }
    set_batch_dim(net->labels, n);
    set_batch_dim(net->losses, n);
    set_batch_dim(net->probs, n);
    net->batch = n;
    return CNN_OK;
}

/* ---- construction ---------------------------------------------------------------------------------------- */

cnn_status cnn_net_build(cnn_net *net)
{
    cnn_shape s = net->input;
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        l->in = s;
        l->backend = net->backend;
        cnn_status st = l->ops->init(l);
        if (st != CNN_OK) return cnn_error_prefix(st, "%s: ", net->source);
        s = l->out;
    }
    if (net->nlayers == 0 || s.ndim != 1)
        return cnn_error(CNN_ERR_SHAPE, "%s: the network must end in a flat layer (dense) giving class scores",
                         net->source);
    return CNN_OK;
}

static cnn_status init_params(cnn_net *net, uint64_t seed)
{
    cnn_rng rng;
    cnn_rng_seed(&rng, seed);
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < net->layers[i]->nparams; p++) {
            cnn_status st = cnn_param_initialize(&net->layers[i]->params[p], &rng);
            if (st != CNN_OK) return st;
        }
    return CNN_OK;
}

cnn_status cnn_net_from_text(const char *text, const char *source, cnn_backend *backend, uint64_t seed,
                             cnn_net **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    if (!text || !backend) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_net_from_text: NULL text or backend");
    cnn_net *net = calloc(1, sizeof *net);
    if (!net) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    net->backend = backend;
    net->definition = dup_string(text);
    net->source = dup_string(source ? source : "<model>");
    if (!net->definition || !net->source) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    CNN_TRY(cnn_model_parse(net, text, net->source));
    CNN_TRY(cnn_net_build(net));
    CNN_TRY(init_params(net, seed));
    *out = net;
    return CNN_OK;
fail:
    cnn_net_destroy(net);
    return st;
}

cnn_status cnn_net_from_file(const char *path, cnn_backend *backend, uint64_t seed, cnn_net **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return cnn_error(CNN_ERR_IO, "%s: cannot open the model definition", path);
    /* definitions are small text files; 1 MiB is far above any real one */
    enum { MAX_DEFINITION = 1 << 20 };
    char *text = malloc(MAX_DEFINITION + 1);
    if (!text) {
        fclose(f);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
    size_t n = fread(text, 1, MAX_DEFINITION + 1, f);
    int err = ferror(f);
    fclose(f);
    cnn_status st;
    if (err) st = cnn_error(CNN_ERR_IO, "%s: read error", path);
    else if (n > MAX_DEFINITION) st = cnn_error(CNN_ERR_FORMAT, "%s: larger than 1 MiB: not a model definition", path);
    else if (memchr(text, '\0', n)) st = cnn_error(CNN_ERR_FORMAT, "%s: binary data, not a model definition text", path);
    else {
        text[n] = '\0';
        st = cnn_net_from_text(text, path, backend, seed, out);
    }
    free(text);
    return st;
}

void cnn_net_destroy(cnn_net *net)
{
    if (!net) return;
    free_buffers(net);
    if (net->class_names) { /* before the layers: their count comes from the last layer */
        for (int i = 0; i < cnn_net_num_outputs(net); i++) free(net->class_names[i]);
        free(net->class_names);
    }
    for (int i = 0; i < net->nlayers; i++) cnn_layer_destroy(net->layers[i]);
    free(net->layers);
    free(net->norm_mean);
    free(net->norm_std);
    free(net->definition);
    free(net->source);
    free(net);
}

/* ---- queries ----------------------------------------------------------------------------------------------- */

int64_t cnn_net_param_count(const cnn_net *net)
{
    int64_t n = 0;
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < net->layers[i]->nparams; p++) n += cnn_tensor_numel(net->layers[i]->params[p].value);
    return n;
}

void cnn_net_input_shape(const cnn_net *net, int *h, int *w, int *c)
{
    *h = (int)net->input.d[0];
    *w = (int)net->input.d[1];
    *c = (int)net->input.d[2];
}

int cnn_net_num_outputs(const cnn_net *net)
{
    return net->nlayers ? (int)net->layers[net->nlayers - 1]->out.d[0] : 0;
}

const char *cnn_net_definition(const cnn_net *net) { return net->definition; }

cnn_backend *cnn_net_backend(const cnn_net *net) { return net->backend; }

cnn_status cnn_net_set_class_names(cnn_net *net, int n, const char *const *names)
{
    int k = cnn_net_num_outputs(net);
    if (n != k)
        return cnn_error(CNN_ERR_SHAPE, "%d class names given for a network with %d outputs", n, k);
    char **copy = calloc((size_t)k, sizeof *copy);
    if (!copy) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    for (int i = 0; i < k; i++) {
        copy[i] = dup_string(names[i] ? names[i] : "");
        /* model files keep one name a line */
        for (char *c = copy[i]; c && *c; c++)
            if (*c == '\n' || *c == '\r') *c = ' ';
        if (!copy[i]) {
            for (int j = 0; j < i; j++) free(copy[j]);
            free(copy);
            return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        }
    }
    if (net->class_names) {
        for (int i = 0; i < k; i++) free(net->class_names[i]);
        free(net->class_names);
    }
    net->class_names = copy;
    return CNN_OK;
}

const char *cnn_net_class_name(const cnn_net *net, int i)
{
    if (!net->class_names || i < 0 || i >= cnn_net_num_outputs(net)) return NULL;
    return net->class_names[i];
}

cnn_status cnn_net_set_normalization(cnn_net *net, int c, const float *mean, const float *std)
{
    if (c != (int)net->input.d[2])
        return cnn_error(CNN_ERR_SHAPE, "normalization for %d channels given to a network with %d input channels", c,
                         (int)net->input.d[2]);
    for (int i = 0; i < c; i++)
        if (!(std[i] > 0.0f) || mean[i] != mean[i])
            return cnn_error(CNN_ERR_INVALID_ARG, "normalization channel %d: std must be > 0 (got %g), mean finite", i,
                             (double)std[i]);
    float *m = malloc((size_t)c * sizeof *m), *s = malloc((size_t)c * sizeof *s);
    if (!m || !s) {
        free(m);
        free(s);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
    memcpy(m, mean, (size_t)c * sizeof *m);
    memcpy(s, std, (size_t)c * sizeof *s);
    free(net->norm_mean);
    free(net->norm_std);
    net->norm_mean = m;
    net->norm_std = s;
    net->has_norm = 1;
    return CNN_OK;
}

int cnn_net_normalization(const cnn_net *net, float *mean, float *std)
{
    if (!net->has_norm) return 0;
    int c = (int)net->input.d[2];
    for (int i = 0; i < c; i++) {
        if (mean) mean[i] = net->norm_mean[i];
        if (std) std[i] = net->norm_std[i];
    }
    return 1;
}

void cnn_net_summary(const cnn_net *net, FILE *out)
{
    const char *rule = "_____________________________________________________________________";
    const char *thick = "=====================================================================";
    char shape[64], title[96];
    fprintf(out, "Model: \"%s\"\n%s\n", net->source, rule);
    fprintf(out, " %-32s %-25s %-10s\n%s\n", "Layer (type)", "Output Shape", "Param #", thick);
    cnn_shape_format(&net->input, shape, sizeof shape);
    fprintf(out, " %-32s %-25s %-10d\n\n", "input (InputLayer)", shape, 0);
    for (int i = 0; i < net->nlayers; i++) {
        const cnn_layer *l = net->layers[i];
        int64_t np = 0;
        for (int p = 0; p < l->nparams; p++) np += cnn_tensor_numel(l->params[p].value);
        snprintf(title, sizeof title, "%s (%s)", l->name, l->ops->type_name);
        cnn_shape_format(&l->out, shape, sizeof shape);
        fprintf(out, " %-32s %-25s %-10lld\n", title, shape, (long long)np);
        if (i + 1 < net->nlayers) fputc('\n', out);
    }
    int64_t total = cnn_net_param_count(net);
    fprintf(out, "%s\nTotal params: %lld (%.2f KB)\nTrainable params: %lld\nNon-trainable params: 0\n%s\n", thick,
            (long long)total, (double)total * 4.0 / 1024.0, (long long)total, rule);
}

/* ---- the steps --------------------------------------------------------------------------------------------- */

cnn_status cnn_net_stage_batch(cnn_net *net, const cnn_dataset *ds, const int64_t *idx, int64_t first, int n)
{
    cnn_status st = cnn_net_set_batch(net, n);
    if (st != CNN_OK) return st;
    int h = (int)net->input.d[0], w = (int)net->input.d[1], c = (int)net->input.d[2];
    if (ds->h != h || ds->w != w || ds->c != c)
        return cnn_error(CNN_ERR_SHAPE, "the data has %dx%dx%d images but the model (%s) takes %dx%dx%d", ds->h, ds->w,
                         ds->c, net->source, h, w, c);
    size_t per = (size_t)h * w * c;
    for (int i = 0; i < n; i++) {
        int64_t s = idx ? idx[i] : first + i;
        const float *src = ds->images + (size_t)s * per;
        float *dst = net->host_batch + (size_t)i * per;
        if (net->has_norm) {
            for (size_t j = 0; j < per; j++) dst[j] = (src[j] - net->norm_mean[j % c]) / net->norm_std[j % c];
        } else {
            memcpy(dst, src, per * sizeof *dst);
        }
        net->host_labels[i] = ds->labels ? ds->labels[s] : 0;
    }
    st = cnn_tensor_write(net->input_t, net->host_batch, (size_t)n * per * sizeof(float));
    if (st == CNN_OK) st = cnn_tensor_write(net->labels, net->host_labels, (size_t)n * sizeof(int32_t));
    return st;
}

cnn_status cnn_net_forward(cnn_net *net, int training)
{
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        if (l->ops->is_view) continue;
        const cnn_tensor *x = i ? net->acts[i - 1] : net->input_t;
        cnn_status st = l->ops->forward(l, x, net->acts[i], training);
        if (st != CNN_OK) return cnn_error_prefix(st, "layer %s (%s line %d) forward: ", l->name, net->source, l->line);
    }
    return CNN_OK;
}

cnn_status cnn_net_loss(cnn_net *net, int with_grad)
{
    cnn_softmax_xent_args a = {
        .logits = net->acts[net->nlayers - 1],
        .labels = net->labels,
        .probs = net->probs,
        .losses = net->losses,
        .dlogits = with_grad ? net->grads[net->nlayers - 1] : NULL,
        .grad_scale = 1.0f / (float)net->batch,
    };
    return net->backend->ops->softmax_xent(net->backend, &a);
}

cnn_status cnn_net_backward(cnn_net *net)
{
    for (int i = net->nlayers - 1; i >= 0; i--) {
        cnn_layer *l = net->layers[i];
        if (l->ops->is_view) continue;
        const cnn_tensor *x = i ? net->acts[i - 1] : net->input_t;
        cnn_tensor *dx = i ? net->grads[i - 1] : NULL;
        cnn_status st = l->ops->backward(l, x, net->acts[i], net->grads[i], dx);
        if (st != CNN_OK) return cnn_error_prefix(st, "layer %s (%s line %d) backward: ", l->name, net->source, l->line);
    }
    return CNN_OK;
}

cnn_status cnn_net_predict(cnn_net *net, const float *images, int64_t n, float *probs)
{
    enum { PREDICT_BATCH = 256 };
    int h = (int)net->input.d[0], w = (int)net->input.d[1], c = (int)net->input.d[2];
    int k = cnn_net_num_outputs(net);
    cnn_dataset view = {.n = n, .h = h, .w = w, .c = c, .images = (float *)images, .num_classes = k};
    for (int64_t first = 0; first < n; first += PREDICT_BATCH) {
        int b = (int)(n - first < PREDICT_BATCH ? n - first : PREDICT_BATCH);
        cnn_status st = cnn_net_stage_batch(net, &view, NULL, first, b);
        if (st == CNN_OK) st = cnn_net_forward(net, 0);
        if (st == CNN_OK) st = cnn_net_loss(net, 0);
        if (st == CNN_OK) st = cnn_tensor_read(net->probs, probs + first * k, (size_t)b * k * sizeof(float));
        if (st != CNN_OK) return st;
    }
    return CNN_OK;
}
