/* The network: construction from a definition, buffers, forward/backward, summary, prediction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/error.h"
#include "core/free_list.h"
#include "core/nn/net.h"
#include "core/nn/qat.h"
#include "core/ops.h"
#include "core/progress.h"

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
        /* a view layer's grad aliases its producer's */
        if (net->grads) free_view(net->grads[i]);
    }
    for (int i = 0; i < net->nscratch; i++) cnn_tensor_destroy(net->gscratch[i]);
    free(net->gscratch);
    net->gscratch = NULL;
    net->nscratch = 0;
    for (int i = 0; i < net->npool; i++) cnn_tensor_destroy(net->gpool[i]);
    free(net->gpool);
    net->gpool = NULL;
    net->npool = 0;
    free(net->acts);
    free(net->grads);
    net->acts = net->grads = NULL;
    cnn_tensor_destroy(net->input_t);
    cnn_tensor_destroy(net->input_lp);
    net->input_lp = NULL;
    cnn_tensor_destroy(net->labels);
    cnn_tensor_destroy(net->probs);
    cnn_tensor_destroy(net->losses);
    net->input_t = net->labels = net->probs = net->losses = NULL;
    for (int i = 0; i < 2; i++) {
        cnn_tensor_destroy(net->input_spare[i]);
        cnn_tensor_destroy(net->labels_spare[i]);
        net->input_spare[i] = net->labels_spare[i] = NULL;
    }
    net->spare_ready = -1;
    free(net->host_batch);
    free(net->host_labels);
    net->host_batch = NULL;
    net->host_labels = NULL;
    net->capacity = 0;
}

/* The layer whose memory a (chain of) view layer(s) shows; -1: the network input. */
static int root_of(const cnn_net *net, int i)
{
    while (i >= 0 && cnn_layer_is_view(net->layers[i])) i = cnn_layer_view_src(net->layers[i]);
    return i;
}

/* The layers whose outputs layer l reads (-1: the network input), in the order its forward gets them: its inputs,
 * then a fused batchnorm's residual. Returns how many. */
static int sources_of(const cnn_layer *l, int *src)
{
    int n = 0;
    for (int k = 0; k < l->ninputs; k++) src[n++] = l->inputs[k];
    if (l->fused && l->ops == &cnn_batchnorm_layer_ops) src[n++] = l->fused_src;
    return n;
}

/* Does the output of layer i (-1: the network input, which never does) get a gradient: in the plan `has` when
 * given, else in the allocated buffers? */
static int has_grad(const cnn_net *net, const char *has, int i)
{
    if (i < 0) return 0;
    return has ? has[i] : net->grads && net->grads[i] != NULL;
}

/* The plan of backward's gradient targets: for each input k of layer i, whether its gradient goes straight into
 * the producer's buffer (the first consumer met in reverse order) or into a scratch buffer then added. Returns
 * the number of scratch buffers layer i needs; fills scratch_of[k] (-1: direct) and marks `written`. */
static int plan_targets(const cnn_net *net, const char *has, int i, char *written, int *scratch_of)
{
    int srcs[CNN_LAYER_MAX_INPUTS], used = 0;
    const int n = sources_of(net->layers[i], srcs);
    for (int k = 0; k < n; k++) {
        int src = srcs[k], r = root_of(net, src);
        scratch_of[k] = -1;
        if (!has_grad(net, has, src) || r < 0) continue;
        if (!written[r]) written[r] = 1;
        else scratch_of[k] = used++;
    }
    return used;
}

int cnn_net_view_root(const cnn_net *net, int i) { return root_of(net, i); }

int cnn_net_layer_sources(const cnn_layer *l, int *src) { return sources_of(l, src); }

/* A gradient tensor without memory yet: alloc_buffers points it into a pooled buffer. */
static cnn_status grad_slot(cnn_backend *b, cnn_dtype dtype, const cnn_shape *s, int n, cnn_tensor **out)
{
    cnn_tensor t = {.backend = b, .dtype = dtype};
    return cnn_batch_view_create(&t, s, n, out);
}

void cnn_buffer_plan_free(cnn_buffer_plan *plan)
{
    free(plan->has_grad);
    free(plan->slot);
    free(plan->pool);
    memset(plan, 0, sizeof *plan);
}

/* Which outputs get a gradient: those of layers with trainable weights and of everything downstream of one (a
 * view: its source's). Gradient memory: the gradient of layer i's output is written by the backward step of its
 * last consumer (the first met in reverse order; the loss for the last layer) and read for the last time by layer
 * i's own backward step: it lives over layers [i, last consumer]. Gradients whose lives do not overlap share a
 * buffer (greedy interval colouring in backward order), so a chain of layers needs two buffers and a residual
 * network a few, instead of one buffer per layer. The sizes are per image: every one scales with the batch, so the
 * colouring is the same at every batch size. Scratch gradients (gscratch) are separate. */
cnn_status cnn_net_plan_buffers(const cnn_net *net, cnn_buffer_plan *plan)
{
    cnn_status st = CNN_OK;
    const int nl = net->nlayers, last = root_of(net, nl - 1);
    size_t n = (size_t)(nl ? nl : 1);
    memset(plan, 0, sizeof *plan);
    int *start = malloc(n * sizeof *start), *busy_until = calloc(n, sizeof *busy_until); /* per buffer: the layer
                                                                                           * whose backward frees it */
    char *written = calloc(n, 1);
    plan->has_grad = calloc(n, 1);
    plan->slot = malloc(n * sizeof *plan->slot);
    plan->pool = calloc(n, sizeof *plan->pool);
    if (!start || !busy_until || !written || !plan->has_grad || !plan->slot || !plan->pool) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory planning the buffers of %d layers", nl);
        goto fail;
    }
    for (int i = 0; i < nl; i++) {
        const cnn_layer *l = net->layers[i];
        int srcs[CNN_LAYER_MAX_INPUTS], need = l->nparams > 0 && !l->frozen;
        for (int j = 0, ns = sources_of(l, srcs); j < ns; j++) need |= has_grad(net, plan->has_grad, srcs[j]);
        if (cnn_layer_is_view(l)) need = has_grad(net, plan->has_grad, cnn_layer_view_src(l));
        else if (cnn_shape_elements(&l->out) > plan->largest) plan->largest = cnn_shape_elements(&l->out);
        plan->has_grad[i] = (char)need;
        plan->slot[i] = -1;
    }
    for (int i = 0; i < nl; i++) start[i] = i == last ? nl : -1;
    for (int j = 0; j < nl; j++) {
        int srcs[CNN_LAYER_MAX_INPUTS];
        if (cnn_layer_is_view(net->layers[j])) continue;
        for (int k = 0, ns = sources_of(net->layers[j], srcs); k < ns; k++) {
            int r = root_of(net, srcs[k]);
            if (r >= 0 && j > start[r]) start[r] = j;
        }
    }
    int64_t *size = plan->pool;
    for (int t = nl; t >= 0; t--) /* backward order of first writes */
        for (int i = 0; i < nl; i++) {
            if (start[i] != t || cnn_layer_is_view(net->layers[i]) || !plan->has_grad[i]) continue;
            int64_t need = cnn_shape_elements(&net->layers[i]->out);
            int best = -1;
            for (int q = 0; q < plan->npool; q++) { /* free: its last reader ran before this gradient's first writer */
                if (busy_until[q] <= t) continue;
                if (best < 0 || (size[best] < need ? size[q] > size[best] : size[q] >= need && size[q] < size[best]))
                    best = q;
            }
            if (best < 0) best = plan->npool++;
            plan->slot[i] = best;
            busy_until[best] = i;
            if (need > size[best]) size[best] = need;
        }
    /* how many scratch gradients one layer's backward needs at most */
    int scratch[CNN_LAYER_MAX_INPUTS];
    if (last >= 0) written[last] = 1;
    for (int i = nl - 1; i >= 0; i--) {
        if (cnn_layer_is_view(net->layers[i]) || !plan->has_grad[i]) continue;
        int used = plan_targets(net, plan->has_grad, i, written, scratch);
        if (used > plan->nscratch) plan->nscratch = used;
    }
fail:
    free(start);
    free(busy_until);
    free(written);
    if (st != CNN_OK) cnn_buffer_plan_free(plan);
    return st;
}

static cnn_status alloc_buffers(cnn_net *net, int n)
{
    cnn_status st = CNN_OK;
    cnn_backend *b = net->backend;
    int k = cnn_net_num_outputs(net);
    cnn_buffer_plan plan = {0};
    free_buffers(net);
    CNN_TRY(cnn_net_check_memory(net, n, net->memory_training, net->memory_slots));
    CNN_TRY(cnn_net_plan_buffers(net, &plan));
    net->acts = calloc((size_t)net->nlayers, sizeof *net->acts);
    net->grads = calloc((size_t)net->nlayers, sizeof *net->grads);
    if (!net->acts || !net->grads) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for %d layers", net->nlayers);
        goto fail;
    }
    CNN_TRY(cnn_batch_tensor_create(b, CNN_F32, &net->input, n, &net->input_t));
    if (net->compute != CNN_F32) CNN_TRY(cnn_batch_tensor_create(b, net->compute, &net->input, n, &net->input_lp));
    cnn_tensor *input = net->input_lp ? net->input_lp : net->input_t;
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        if (cnn_layer_is_view(l)) {
            int src = cnn_layer_view_src(l);
            CNN_TRY(cnn_batch_view_create(src < 0 ? input : net->acts[src], &l->out, n, &net->acts[i]));
            if (src >= 0 && net->grads[src]) CNN_TRY(cnn_batch_view_create(net->grads[src], &l->out, n, &net->grads[i]));
        } else {
            CNN_TRY(cnn_batch_tensor_create(b, net->compute, &l->out, n, &net->acts[i]));
            if (plan.has_grad[i]) CNN_TRY(grad_slot(b, net->compute, &l->out, n, &net->grads[i]));
        }
    }
    /* the gradients' memory: the pooled buffers of the plan */
    net->gpool = calloc((size_t)(plan.npool ? plan.npool : 1), sizeof *net->gpool);
    net->gscratch = calloc((size_t)(plan.nscratch ? plan.nscratch : 1), sizeof *net->gscratch);
    if (!net->gpool || !net->gscratch) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    for (int q = 0; q < plan.npool; q++) {
        int64_t shape[1] = {plan.pool[q] * n};
        CNN_TRY(cnn_tensor_create(b, net->compute, 1, shape, &net->gpool[q]));
        net->npool++;
    }
    for (int i = 0; i < net->nlayers; i++) {
        if (!net->grads[i]) continue;
        if (cnn_layer_is_view(net->layers[i]))
            net->grads[i]->data = net->grads[cnn_layer_view_src(net->layers[i])]->data;
        else net->grads[i]->data = net->gpool[plan.slot[i]]->data;
    }
    for (int i = 0; i < plan.nscratch; i++) {
        int64_t shape[1] = {plan.largest * n};
        CNN_TRY(cnn_tensor_create(b, net->compute, 1, shape, &net->gscratch[i]));
        net->nscratch++;
    }
    int64_t nk[2] = {n, k}, n1[1] = {n};
    CNN_TRY(cnn_tensor_create(b, CNN_I32, 1, n1, &net->labels));
    if (cnn_op_has(b, "write_async"))
        for (int i = 0; i < 2; i++) {
            CNN_TRY(cnn_batch_tensor_create(b, CNN_F32, &net->input, n, &net->input_spare[i]));
            CNN_TRY(cnn_tensor_create(b, CNN_I32, 1, n1, &net->labels_spare[i]));
        }
    CNN_TRY(cnn_tensor_create(b, CNN_F32, 1, n1, &net->losses));
    CNN_TRY(cnn_tensor_create(b, CNN_F32, 2, nk, &net->probs));
    size_t per = (size_t)(net->input.d[0] * net->input.d[1] * net->input.d[2]);
    net->host_batch = malloc((size_t)n * per * sizeof(float));
    net->host_labels = malloc((size_t)n * sizeof(int32_t));
    if (!net->host_batch || !net->host_labels) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a batch of %d", n);
        goto fail;
    }
    cnn_buffer_plan_free(&plan);
    net->capacity = n;
    net->batch = n;
    return CNN_OK;
fail:
    cnn_buffer_plan_free(&plan);
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
    set_batch_dim(net->input_lp, n);
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

void cnn_net_set_seed(cnn_net *net, uint64_t seed)
{
    net->seed = seed;
    for (int i = 0; i < net->nlayers; i++) {
        uint64_t s = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(i + 1));
        net->layers[i]->seed = cnn_splitmix64(&s);
    }
}

/* maxpool(relu(x)) == relu(maxpool(x)), and so are their gradients (ReLU is monotonic: the window's argmax is the
 * same, and where the max is <= 0 both give 0). When a layer's ReLU feeds only a max-pool, the pool applies it
 * instead, on a quarter of the elements (2x2 windows): the ReLU's backward pass over the layer's whole output
 * goes (the seed CNN: 1.4M of its 1.7M ReLU gradients a step). Only ReLU: for leaky ReLU the pooled output would
 * differ from every window element where the max is negative, which backends that find the argmax by comparing x
 * with y (cuDNN) rely on. */
static void relu_after_maxpool(cnn_net *net)
{
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *pool = net->layers[i];
        int p = pool->inputs[0];
        if (pool->ops != &cnn_maxpool_layer_ops || pool->act != CNN_ACT_NONE || pool->ninputs != 1 || p < 0)
            continue;
        cnn_layer *src = net->layers[p];
        /* layers whose forward and backward apply l->act themselves, CNN_ACT_NONE included */
        int kind = src->ops == &cnn_conv_layer_ops || src->ops == &cnn_batchnorm_layer_ops || src->ops == &cnn_add_layer_ops;
        int only = kind && src->act == CNN_ACT_RELU && p != net->nlayers - 1;
        for (int j = 0; j < net->nlayers && only; j++)
            for (int k = 0; k < net->layers[j]->ninputs; k++) only &= j == i || net->layers[j]->inputs[k] != p;
        if (!only) continue;
        pool->act = CNN_ACT_RELU;
        src->act = CNN_ACT_NONE;
    }
}

/* A batchnorm without activation whose output feeds only the two-input add right after it (the end of a residual
 * block: ResNet's bn3 then add + ReLU) computes the add too: y = act(bn(x) + r) in the pass that normalizes, with
 * the add's activation, and the add becomes a view of its output. Forward no longer writes bn(x) to read it back
 * (add) and again (the activation in place); backward no longer copies the add's gradient to the second input: the
 * activation's gradient goes straight to the shortcut's gradient, and batchnorm reads it from there. Results are
 * bit for bit the unfused layers': the same float operations in the same order (normalize, + r, act), and nothing
 * runs between the two layers, so the residual (from an earlier line) is ready and every gradient is summed in the
 * same order. Only activations whose gradient needs no input: the batchnorm keeps no pre-activation. */
static void fuse_batchnorm_add(cnn_net *net)
{
    for (int i = 1; i < net->nlayers; i++) {
        cnn_layer *add = net->layers[i], *bn = net->layers[i - 1];
        if (add->ops != &cnn_add_layer_ops || add->ninputs != 2 || cnn_act_grad_needs_input(add->act)) continue;
        if (bn->ops != &cnn_batchnorm_layer_ops || bn->act != CNN_ACT_NONE) continue;
        const int k = add->inputs[0] == i - 1 ? 0 : 1; /* the batchnorm's place among the add's inputs */
        if (add->inputs[k] != i - 1 || add->inputs[1 - k] == i - 1) continue;
        int only = 1;
        for (int j = i + 1; j < net->nlayers && only; j++)
            for (int q = 0; q < net->layers[j]->ninputs; q++) only &= net->layers[j]->inputs[q] != i - 1;
        if (!only) continue;
        bn->fused = add->fused = 1;
        bn->fused_src = add->inputs[1 - k];
        add->fused_src = i - 1;
        bn->act = add->act;
        bn->act_alpha = add->act_alpha;
        add->act = CNN_ACT_NONE;
    }
}

cnn_status cnn_net_build(cnn_net *net)
{
    cnn_net_set_seed(net, net->seed);
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        for (int k = 0; k < l->ninputs; k++) {
            int src = l->inputs[k];
            l->ins[k] = src < 0 ? net->input : net->layers[src]->out;
        }
        l->in = l->ins[0];
        l->backend = net->backend;
        cnn_status st = l->ops->init(l);
        if (st != CNN_OK) return cnn_error_prefix(st, "%s: ", net->source);
        /* every size computed from an output shape later (bytes, times the batch) starts from a product that fits */
        int64_t n = 1;
        int ok = 1;
        for (int d = 0; d < l->out.ndim && ok; d++) ok = cnn_mul_i64(n, l->out.d[d], &n);
        if (!ok || !cnn_mul_i64(n, (int64_t)sizeof(float), &n)) {
            char shape[96];
            cnn_shape_format(&l->out, shape, sizeof shape);
            return cnn_error(CNN_ERR_SHAPE, "%s:%d: layer '%s': its output %s overflows 64-bit sizes", net->source,
                             l->line, l->name, shape);
        }
    }
    /* every output but the last feeds something: a dangling branch is a mistake in the definition */
    for (int i = 0; i + 1 < net->nlayers; i++) {
        int used = 0;
        for (int j = i + 1; j < net->nlayers && !used; j++)
            for (int k = 0; k < net->layers[j]->ninputs; k++) used |= net->layers[j]->inputs[k] == i;
        if (!used)
            return cnn_error(CNN_ERR_FORMAT, "%s:%d: the output of layer '%s' is never used (the next line takes "
                                             "another input: name it in add, concat or from=, or remove it)",
                             net->source, net->layers[i]->line, net->layers[i]->name);
    }
    if (net->nlayers == 0 || net->layers[net->nlayers - 1]->out.ndim != 1)
        return cnn_error(CNN_ERR_SHAPE, "%s: the network must end in a flat layer (dense) giving class scores",
                         net->source);
    relu_after_maxpool(net);
    fuse_batchnorm_add(net); /* after: an add whose ReLU a max-pool took over fuses without it */
    if (net->qat) return cnn_qat_declare(net); /* its quantizers go where the rewritten layers compute */
    return CNN_OK;
}

static cnn_status init_params(cnn_net *net, uint64_t seed)
{
    cnn_rng rng;
    cnn_rng_seed(&rng, seed);
    for (int i = 0; i < net->nlayers; i++)
    {
        for (int p = 0; p < net->layers[i]->nparams; p++) {
            cnn_status st = cnn_param_initialize(&net->layers[i]->params[p], &rng);
            if (st != CNN_OK) return st;
        }
        for (int p = 0; p < net->layers[i]->nstate; p++) {
            cnn_status st = cnn_param_initialize(&net->layers[i]->state[p], &rng);
            if (st != CNN_OK) return st;
        }
    }
    return CNN_OK;
}

cnn_status cnn_net_describe(const char *text, const char *source, cnn_backend *backend, uint64_t seed,
                            cnn_net **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    if (!text) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_net_from_text: NULL text");
    cnn_net *net = calloc(1, sizeof *net);
    if (!net) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    net->backend = backend;
    net->seed = seed;
    net->spare_ready = -1;
    net->loss_scale = 1.0f;
    net->definition = dup_string(text);
    net->source = dup_string(source ? source : "<model>");
    if (!net->definition || !net->source) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    CNN_TRY(cnn_model_parse(net, text, net->source));
    CNN_TRY(cnn_net_build(net));
    *out = net;
    return CNN_OK;
fail:
    cnn_net_destroy(net);
    return st;
}

cnn_status cnn_net_from_text(const char *text, const char *source, cnn_backend *backend, uint64_t seed,
                             cnn_net **out)
{
    cnn_status st = CNN_OK;
    cnn_net *net = NULL;
    *out = NULL;
    if (!text || !backend) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_net_from_text: NULL text or backend");
    CNN_TRY(cnn_net_describe(text, source, backend, seed, &net));
    /* nothing is allocated before the budget says the network fits: one image through it, in inference */
    CNN_TRY(cnn_net_check_memory(net, 1, 0, 0));
    for (int i = 0; i < net->nlayers; i++) CNN_TRY(cnn_layer_materialize(net->layers[i]));
    CNN_TRY(init_params(net, seed));
    *out = net;
    return CNN_OK;
fail:
    cnn_net_destroy(net);
    return st;
}

cnn_status cnn_read_definition(const char *path, char **text)
{
    *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return cnn_error(CNN_ERR_IO, "%s: cannot open the model definition", path);
    /* definitions are small text files; 1 MiB is far above any real one */
    enum { MAX_DEFINITION = 1 << 20 };
    char *buf = malloc(MAX_DEFINITION + 1);
    if (!buf) {
        fclose(f);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
    size_t n = fread(buf, 1, MAX_DEFINITION + 1, f);
    int err = ferror(f);
    fclose(f);
    cnn_status st = CNN_OK;
    if (err) st = cnn_error(CNN_ERR_IO, "%s: read error", path);
    else if (n > MAX_DEFINITION) st = cnn_error(CNN_ERR_FORMAT, "%s: larger than 1 MiB: not a model definition", path);
    else if (memchr(buf, '\0', n)) st = cnn_error(CNN_ERR_FORMAT, "%s: binary data, not a model definition text", path);
    if (st != CNN_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *text = buf;
    return CNN_OK;
}

cnn_status cnn_net_from_file(const char *path, cnn_backend *backend, uint64_t seed, cnn_net **out)
{
    char *text = NULL;
    *out = NULL;
    cnn_status st = cnn_read_definition(path, &text);
    if (st == CNN_OK) st = cnn_net_from_text(text, path, backend, seed, out);
    free(text);
    return st;
}

void cnn_net_destroy(cnn_net *net)
{
    if (!net) return;
    free_buffers(net);
    cnn_qat_free(net);
    cnn_free_strings(net->class_names, cnn_net_num_outputs(net)); /* before the layers: the count is the last's */
    for (int i = 0; i < net->nlayers; i++) cnn_layer_destroy(net->layers[i]);
    cnn_tensor_destroy(net->class_weights);
    CNN_FREE_ALL(net->layers, net->norm_mean, net->norm_std, net->profile_mean, net->profile_std, net->class_freq,
                 net->definition, net->source, net);
}

/* ---- queries ----------------------------------------------------------------------------------------------- */

int64_t cnn_net_param_count(const cnn_net *net)
{
    int64_t n = 0;
    for (int i = 0; i < net->nlayers; i++)
        for (int p = 0; p < net->layers[i]->nparams && !net->layers[i]->frozen; p++)
            n += cnn_tensor_numel(net->layers[i]->params[p].value);
    return n;
}

int64_t cnn_net_state_count(const cnn_net *net)
{
    int64_t n = 0;
    for (int i = 0; i < net->nlayers; i++) {
        for (int p = 0; p < net->layers[i]->nstate; p++) n += cnn_tensor_numel(net->layers[i]->state[p].value);
        for (int p = 0; p < net->layers[i]->nparams && net->layers[i]->frozen; p++) /* frozen weights too (Keras) */
            n += cnn_tensor_numel(net->layers[i]->params[p].value);
    }
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
        if (!(std[i] > 0.0f) || !isfinite(std[i]) || !isfinite(mean[i]))
            return cnn_error(CNN_ERR_INVALID_ARG, "normalization channel %d: std must be finite and > 0, mean finite "
                             "(got mean %g, std %g)", i, (double)mean[i], (double)std[i]);
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

cnn_status cnn_net_set_data_profile(cnn_net *net, int c, const float *mean, const float *std, int k,
                                    const float *class_freq)
{
    if (c != (int)net->input.d[2] || k != cnn_net_num_outputs(net))
        return cnn_error(CNN_ERR_SHAPE, "data profile of %d channels and %d classes given to a network with %d input "
                         "channels and %d outputs", c, k, (int)net->input.d[2], cnn_net_num_outputs(net));
    for (int i = 0; i < c; i++)
        if (!isfinite(mean[i]) || !isfinite(std[i]) || std[i] < 0.0f)
            return cnn_error(CNN_ERR_INVALID_ARG, "data profile channel %d: mean and std must be finite, std >= 0 "
                             "(got mean %g, std %g)", i, (double)mean[i], (double)std[i]);
    double total = 0.0;
    for (int j = 0; j < k; j++) {
        if (!(class_freq[j] >= 0.0f && class_freq[j] <= 1.0f))
            return cnn_error(CNN_ERR_INVALID_ARG, "data profile class %d: its frequency %g is not in [0, 1]", j,
                             (double)class_freq[j]);
        total += class_freq[j];
    }
    if (fabs(total - 1.0) > 1e-3)
        return cnn_error(CNN_ERR_INVALID_ARG, "data profile: the class frequencies sum to %g, not 1", total);
    float *m = malloc((size_t)c * sizeof *m), *s = malloc((size_t)c * sizeof *s), *f = malloc((size_t)k * sizeof *f);
    if (!m || !s || !f) {
        free(m);
        free(s);
        free(f);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
    memcpy(m, mean, (size_t)c * sizeof *m);
    memcpy(s, std, (size_t)c * sizeof *s);
    memcpy(f, class_freq, (size_t)k * sizeof *f);
    free(net->profile_mean);
    free(net->profile_std);
    free(net->class_freq);
    net->profile_mean = m;
    net->profile_std = s;
    net->class_freq = f;
    net->has_profile = 1;
    return CNN_OK;
}

int cnn_net_data_profile(const cnn_net *net, float *mean, float *std, float *class_freq)
{
    if (!net->has_profile) return 0;
    int c = (int)net->input.d[2], k = cnn_net_num_outputs(net);
    for (int i = 0; i < c; i++) {
        if (mean) mean[i] = net->profile_mean[i];
        if (std) std[i] = net->profile_std[i];
    }
    for (int j = 0; class_freq && j < k; j++) class_freq[j] = net->class_freq[j];
    return 1;
}

cnn_status cnn_net_set_resize(cnn_net *net, int h, int w)
{
    const int ih = (int)net->input.d[0], iw = (int)net->input.d[1];
    if (h == 0 && w == 0) {
        net->resize_h = net->resize_w = 0;
        return CNN_OK;
    }
    if (h < ih || w < iw || h > 65536 || w > 65536)
        return cnn_error(CNN_ERR_INVALID_ARG, "resize %dx%d: it must be at least the model's input %dx%d (the images "
                         "are centre-cropped to it) and at most 65536x65536", h, w, ih, iw);
    net->resize_h = h;
    net->resize_w = w;
    return CNN_OK;
}

int cnn_net_resize(const cnn_net *net, int *h, int *w)
{
    if (!net->resize_h) return 0;
    if (h) *h = net->resize_h;
    if (w) *w = net->resize_w;
    return 1;
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
        float *dst = net->host_batch + (size_t)i * per;
        cnn_dataset_image(ds, s, dst);
        if (net->has_norm)
            for (size_t j = 0; j < per; j++) dst[j] = (dst[j] - net->norm_mean[j % c]) / net->norm_std[j % c];
        net->host_labels[i] = ds->labels ? ds->labels[s] : 0;
    }
    st = cnn_tensor_write(net->input_t, net->host_batch, (size_t)n * per * sizeof(float));
    if (st == CNN_OK) st = cnn_tensor_write(net->labels, net->host_labels, (size_t)n * sizeof(int32_t));
    return st;
}

cnn_status cnn_net_stage_host(cnn_net *net, const float *images, const int32_t *labels, int n)
{
    cnn_status st = cnn_net_set_batch(net, n);
    if (st != CNN_OK) return st;
    size_t per = (size_t)(net->input.d[0] * net->input.d[1] * net->input.d[2]);
    st = cnn_tensor_write(net->input_t, images, (size_t)n * per * sizeof(float));
    if (st == CNN_OK) st = cnn_tensor_write(net->labels, labels, (size_t)n * sizeof(int32_t));
    return st;
}

int cnn_net_can_upload_async(const cnn_net *net) { return cnn_op_has(net->backend, "write_async"); }

cnn_status cnn_net_upload_async(cnn_net *net, const float *images, const int32_t *labels, int n)
{
    cnn_backend *b = net->backend;
    if (n < 1 || n > net->capacity)
        return cnn_error(CNN_ERR_INVALID_ARG, "an asynchronous upload of %d images into buffers for %d (set the "
                         "batch size first)", n, net->capacity);
    int i = net->spare_next;
    cnn_tensor *x = net->input_spare[i], *y = net->labels_spare[i];
    x->shape[0] = n;
    y->shape[0] = n;
    cnn_status st = cnn_op_write_async(b, x, images, cnn_tensor_bytes(x));
    if (st == CNN_OK) st = cnn_op_write_async(b, y, labels, cnn_tensor_bytes(y));
    if (st != CNN_OK) return st;
    net->spare_ready = i;
    net->spare_n = n;
    net->spare_next = i ^ 1;
    return CNN_OK;
}

cnn_status cnn_net_stage_uploaded(cnn_net *net)
{
    if (net->spare_ready < 0) return cnn_error(CNN_ERR_INVALID_ARG, "no asynchronous upload to stage");
    int i = net->spare_ready;
    net->spare_ready = -1;
    if (net->spare_n > net->capacity || !net->input_spare[i])
        return cnn_error(CNN_ERR_INVALID_ARG, "the buffers were rebuilt after an asynchronous upload");
    cnn_status st = cnn_net_set_batch(net, net->spare_n);
    if (st != CNN_OK) return st;
    cnn_backend *b = net->backend;
    st = cnn_op_copy(b, net->input_t, net->input_spare[i]);
    if (st == CNN_OK) st = cnn_op_copy(b, net->labels, net->labels_spare[i]);
    return st;
}

static const cnn_tensor *input_of(const cnn_net *net, int src)
{
    return src < 0 ? (net->input_lp ? net->input_lp : net->input_t) : net->acts[src];
}

/* Profiling: waits for the backend, then reads the clock (net->prof_fwd / prof_bwd set). */
static cnn_status prof_clock(cnn_net *net, double *now)
{
    cnn_status st = cnn_op_sync(net->backend);
    *now = cnn_now_seconds();
    return st;
}

cnn_status cnn_net_forward(cnn_net *net, int training)
{
    if (net->input_lp) {
        cnn_backend *b = net->backend;
        cnn_status st = cnn_op_cast(b, net->input_lp, net->input_t);
        if (st != CNN_OK) return cnn_error_prefix(st, "casting the batch to %s: ", cnn_dtype_name(net->compute));
    }
    if (net->qat) {
        cnn_status st = cnn_qat_forward_begin(net, training);
        if (st != CNN_OK) return st;
    }
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        if (cnn_layer_is_view(l)) continue;
        const cnn_tensor *x[CNN_LAYER_MAX_INPUTS];
        int srcs[CNN_LAYER_MAX_INPUTS];
        for (int k = 0, n = sources_of(l, srcs); k < n; k++) x[k] = input_of(net, srcs[k]);
        l->step = net->step;
        double t0 = 0.0, t1;
        cnn_status st = net->prof_fwd ? prof_clock(net, &t0) : CNN_OK;
        /* a frozen layer with state (batchnorm) runs as in inference: its statistics stay frozen */
        if (st == CNN_OK) st = l->ops->forward(l, x, net->acts[i], training && !(l->frozen && l->nstate));
        if (st == CNN_OK && net->prof_fwd && (st = prof_clock(net, &t1)) == CNN_OK) net->prof_fwd[i] = t1 - t0;
        if (st == CNN_OK && net->qat) st = cnn_qat_forward_layer(net, i, training);
        if (st != CNN_OK) {
            if (net->qat) cnn_qat_restore(net);
            return cnn_error_prefix(st, "layer %s (%s line %d) forward: ", l->name, net->source, l->line);
        }
    }
    return net->qat ? cnn_qat_forward_end(net, training) : CNN_OK;
}

cnn_status cnn_net_set_loss_options(cnn_net *net, float label_smoothing, const float *class_weights, int k)
{
    if (!(label_smoothing >= 0.0f && label_smoothing < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "label smoothing must be in [0, 1), got %g", (double)label_smoothing);
    cnn_tensor_destroy(net->class_weights);
    net->class_weights = NULL;
    net->label_smoothing = label_smoothing;
    if (!class_weights) return CNN_OK;
    if (k != cnn_net_num_outputs(net))
        return cnn_error(CNN_ERR_SHAPE, "%d class weights given for a network with %d outputs", k,
                         cnn_net_num_outputs(net));
    for (int i = 0; i < k; i++)
        if (!(class_weights[i] >= 0.0f) || !isfinite(class_weights[i]))
            return cnn_error(CNN_ERR_INVALID_ARG, "class weight %d must be a finite number >= 0, got %g", i,
                             (double)class_weights[i]);
    int64_t shape[1] = {k};
    cnn_status st = cnn_tensor_create(net->backend, CNN_F32, 1, shape, &net->class_weights);
    if (st == CNN_OK) st = cnn_tensor_write(net->class_weights, class_weights, (size_t)k * sizeof(float));
    if (st != CNN_OK) {
        cnn_tensor_destroy(net->class_weights);
        net->class_weights = NULL;
    }
    return st;
}

cnn_status cnn_net_loss(cnn_net *net, int with_grad)
{
    cnn_softmax_xent_args a = {
        .logits = net->acts[net->nlayers - 1],
        .labels = net->labels,
        .probs = net->probs,
        .losses = net->losses,
        .dlogits = with_grad ? net->grads[net->nlayers - 1] : NULL,
        .grad_scale = net->loss_scale / (float)net->batch,
        /* the loss options shape training; evaluation (no gradient) reports the plain cross-entropy */
        .class_weights = with_grad ? net->class_weights : NULL,
        .label_smoothing = with_grad ? net->label_smoothing : 0.0f,
    };
    return cnn_op_softmax_xent(net->backend, &a);
}

/* p's grad += l1 * sign(w), on the host */
static cnn_status add_l1(cnn_param *p, float l1)
{
    cnn_status st = CNN_OK;
    size_t bytes = cnn_tensor_bytes(p->value);
    int64_t n = cnn_tensor_numel(p->value);
    float *w = malloc(bytes), *g = malloc(bytes);
    if (!w || !g) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the l1 penalty of %s", p->name);
        goto fail;
    }
    CNN_TRY(cnn_tensor_read(p->value, w, bytes));
    CNN_TRY(cnn_tensor_read(p->grad, g, bytes));
    for (int64_t j = 0; j < n; j++) g[j] += l1 * (float)((w[j] > 0.0f) - (w[j] < 0.0f));
    st = cnn_tensor_write(p->grad, g, bytes);
fail:
    free(w);
    free(g);
    return st;
}

/* grad += l1 * sign(w) + 2 * l2 * w for layers with penalties (Keras' kernel_regularizer: l1*sum|w| +
 * l2*sum w^2). L2 runs as a backend add; L1 needs sign(w), done on the host (the penalties are opt-in). */
static cnn_status add_penalties(cnn_net *net)
{
    cnn_backend *b = net->backend;
    cnn_status st = CNN_OK;
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        if (!l->nparams || l->frozen || (l->l1 == 0.0f && l->l2 == 0.0f)) continue;
        cnn_param *p = &l->params[0];
        if (l->l2 != 0.0f) {
            cnn_add_args a = {.a = p->grad, .b = p->value, .y = p->grad, .alpha = 1.0f, .beta = 2.0f * l->l2};
            CNN_TRY(cnn_op_add(b, &a));
        }
        if (l->l1 != 0.0f) CNN_TRY(add_l1(p, l->l1));
    }
fail:
    return st;
}

cnn_status cnn_net_backward(cnn_net *net)
{
    cnn_backend *b = net->backend;
    cnn_status st = CNN_OK;
    char *written = calloc((size_t)net->nlayers, 1);
    if (!written) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    int last = root_of(net, net->nlayers - 1);
    if (last >= 0) written[last] = 1; /* the loss wrote it */
    for (int i = net->nlayers - 1; i >= 0; i--) {
        cnn_layer *l = net->layers[i];
        if (cnn_layer_is_view(l) || !net->grads[i]) continue;
        const cnn_tensor *x[CNN_LAYER_MAX_INPUTS];
        cnn_tensor *dx[CNN_LAYER_MAX_INPUTS], scratch[CNN_LAYER_MAX_INPUTS];
        int scratch_of[CNN_LAYER_MAX_INPUTS], srcs[CNN_LAYER_MAX_INPUTS];
        const int nsrc = sources_of(l, srcs);
        plan_targets(net, NULL, i, written, scratch_of);
        for (int k = 0; k < nsrc; k++) {
            int src = srcs[k];
            x[k] = input_of(net, src);
            dx[k] = has_grad(net, NULL, src) ? net->grads[src] : NULL;
            if (scratch_of[k] >= 0) {
                scratch[k] = cnn_view_like(net->gscratch[scratch_of[k]], net->grads[src]);
                dx[k] = &scratch[k];
            }
        }
        double t0 = 0.0, t1;
        if (net->prof_bwd) st = prof_clock(net, &t0);
        if (st == CNN_OK && net->qat) st = cnn_qat_backward_layer(net, i); /* clipped values pass no gradient */
        if (st == CNN_OK) st = l->ops->backward(l, x, net->acts[i], net->grads[i], dx);
        for (int k = 0; st == CNN_OK && k < nsrc; k++) {
            if (scratch_of[k] < 0) continue;
            int r = root_of(net, srcs[k]);
            cnn_tensor part = cnn_view_like(&scratch[k], net->grads[r]);
            cnn_add_args a = {.a = net->grads[r], .b = &part, .y = net->grads[r], .alpha = 1.0f, .beta = 1.0f};
            st = cnn_op_add(b, &a);
        }
        if (st == CNN_OK && net->prof_bwd && (st = prof_clock(net, &t1)) == CNN_OK) net->prof_bwd[i] = t1 - t0;
        if (st == CNN_OK && net->grads_ready) st = net->grads_ready(net->grads_ready_user, i);
        if (st != CNN_OK) {
            free(written);
            return cnn_error_prefix(st, "layer %s (%s line %d) backward: ", l->name, net->source, l->line);
        }
    }
    free(written);
    CNN_TRY(add_penalties(net));
fail:
    return st;
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

/* ---- precision ------------------------------------------------------------------------------------------- */

/* the weights a convolution or dense layer multiplies with: the ones that get a 16-bit copy */
static int has_matmul_weight(const cnn_layer *l)
{
    return (l->ops == &cnn_conv_layer_ops || l->ops == &cnn_dense_layer_ops) && l->nparams > 0;
}

cnn_status cnn_net_sync_compute_weights(cnn_net *net)
{
    cnn_backend *b = net->backend;
    for (int i = 0; i < net->nlayers; i++) {
        cnn_param *p = &net->layers[i]->params[0];
        if (!has_matmul_weight(net->layers[i]) || !p->value_lp) continue;
        cnn_status st = cnn_op_cast(b, p->value_lp, p->value);
        if (st != CNN_OK) return cnn_error_prefix(st, "the %s copy of %s: ", cnn_dtype_name(net->compute), p->name);
    }
    return CNN_OK;
}

/* Gives (or takes back) a conv or dense layer's weight its 16-bit copy and a gradient in the compute dtype. */
static cnn_status set_weight_dtype(cnn_layer *l, cnn_dtype compute)
{
    cnn_status st = CNN_OK;
    cnn_param *p = &l->params[0];
    cnn_tensor_destroy(p->value_lp);
    p->value_lp = NULL;
    if (compute != CNN_F32)
        CNN_TRY(cnn_tensor_create(l->backend, compute, p->value->ndim, p->value->shape, &p->value_lp));
    if (p->grad && p->grad->dtype != compute) {
        cnn_tensor_destroy(p->grad);
        p->grad = NULL;
        CNN_TRY(cnn_tensor_create(l->backend, compute, p->value->ndim, p->value->shape, &p->grad));
    }
fail:
    if (st != CNN_OK) st = cnn_error_prefix(st, "layer %s: ", l->name);
    return st;
}

cnn_status cnn_net_set_precision(cnn_net *net, cnn_precision precision)
{
    cnn_status st = CNN_OK;
    cnn_backend *b = net->backend;
    const char *name = cnn_precision_name(precision);
    if ((unsigned)precision >= CNN_PRECISION_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "unknown precision %d", (int)precision);
    const int mixed = precision == CNN_PRECISION_FP16 || precision == CNN_PRECISION_BF16;
    if (precision != CNN_PRECISION_FP32 && !cnn_op_has(b, "set_precision"))
        return cnn_error(CNN_ERR_UNSUPPORTED,
                         "precision %s needs a CUDA device: the %s backend computes in fp32 only", name, b->name);
    if (mixed && !cnn_op_has(b, "cast")) return cnn_backend_lacks(b, "cast");
    if (mixed && !cnn_op_has(b, "nonfinite")) return cnn_backend_lacks(b, "nonfinite");
    for (int i = 0; mixed && i < net->nlayers; i++)
        if (net->layers[i]->l1 != 0.0f)
            return cnn_error(CNN_ERR_UNSUPPORTED,
                             "layer %s (line %d): l1 penalties run on the host in f32 and are not supported with %s; "
                             "use l2, or fp32/tf32", net->layers[i]->name, net->layers[i]->line, name);
    CNN_TRY(cnn_op_set_precision(b, precision));
    const cnn_dtype compute = precision == CNN_PRECISION_FP16 ? CNN_F16
                              : precision == CNN_PRECISION_BF16 ? CNN_BF16 : CNN_F32;
    for (int i = 0; i < net->nlayers; i++)
        if (has_matmul_weight(net->layers[i])) CNN_TRY(set_weight_dtype(net->layers[i], compute));
    net->precision = precision;
    /* fp16: gradients below 2^-24 would flush to zero; 2^16 moves them up (PyTorch's GradScaler starts there) */
    net->loss_scale = precision == CNN_PRECISION_FP16 ? 65536.0f : 1.0f;
    net->scale_clean_steps = 0;
    if (net->compute != compute) {
        /* activations and gradients change dtype: made again at the next cnn_net_set_batch */
        free_buffers(net);
        net->capacity = 0;
        net->compute = compute;
    }
    CNN_TRY(cnn_net_sync_compute_weights(net));
fail:
    return st;
}

cnn_precision cnn_net_precision(const cnn_net *net) { return net->precision; }

int cnn_argmax(const float *v, int k)
{
    int best = 0;
    for (int j = 1; j < k; j++)
        if (v[j] > v[best]) best = j;
    return best;
}
