/* SGD (momentum, Nesterov), Adam, AdamW and RMSprop over every parameter of a network; gradient clipping. */
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/nn/optim.h"
#include "core/ops.h"

/* the n tensors of a state array (NULL: none yet), then the array */
static void destroy_state(cnn_tensor **ts, int n)
{
    for (int i = 0; ts && i < n; i++) cnn_tensor_destroy(ts[i]);
    free(ts);
}

void cnn_optimizer_destroy(cnn_optimizer *opt)
{
    if (!opt) return;
    destroy_state(opt->m, opt->nparams);
    destroy_state(opt->v, opt->nparams);
    free(opt->params);
    free(opt);
}

static cnn_status zeros_like(cnn_backend *b, const cnn_tensor *like, cnn_tensor **out)
{
    cnn_status st = cnn_tensor_create(b, like->dtype, like->ndim, like->shape, out);
    if (st == CNN_OK) st = cnn_op_fill(b, *out, 0.0f);
    return st;
}

int cnn_optimizer_slots(cnn_optimizer_kind kind, float momentum)
{
    /* as cnn_optimizer_create allocates m and v */
    switch (kind) {
    case CNN_OPTIM_ADAM: case CNN_OPTIM_ADAMW:
        return 2;
    case CNN_OPTIM_RMSPROP:
        return momentum != 0.0f ? 2 : 1;
    default:
        return momentum != 0.0f ? 1 : 0;
    }
}

cnn_status cnn_optimizer_create(cnn_net *net, const cnn_train_config *cfg, cnn_optimizer **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    if (!(cfg->lr > 0.0f) || !isfinite(cfg->lr))
        return cnn_error(CNN_ERR_INVALID_ARG, "learning rate must be a positive number, got %g", (double)cfg->lr);
    cnn_optimizer *opt = calloc(1, sizeof *opt);
    if (!opt) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    opt->cfg = *cfg;
    opt->cfg.class_weights = NULL; /* borrowed by the trainer only */
    opt->lr = cfg->lr;
    opt->grad_scale = 1.0f;
    opt->backend = net->backend;
    int n = 0;
    for (int i = 0; i < net->nlayers; i++) n += net->layers[i]->frozen ? 0 : net->layers[i]->nparams;
    opt->params = calloc((size_t)(n ? n : 1), sizeof *opt->params);
    opt->m = calloc((size_t)(n ? n : 1), sizeof *opt->m);
    opt->v = calloc((size_t)(n ? n : 1), sizeof *opt->v);
    if (!opt->params || !opt->m || !opt->v) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    for (int i = 0; i < net->nlayers; i++) /* frozen layers get no state and no updates */
        for (int p = 0; p < net->layers[i]->nparams && !net->layers[i]->frozen; p++)
            opt->params[opt->nparams++] = &net->layers[i]->params[p];
    for (int i = 0; i < opt->nparams; i++) {
        const cnn_tensor *pv = opt->params[i]->value;
        if (cfg->optimizer == CNN_OPTIM_ADAM || cfg->optimizer == CNN_OPTIM_ADAMW) {
            CNN_TRY(zeros_like(net->backend, pv, &opt->m[i]));
            CNN_TRY(zeros_like(net->backend, pv, &opt->v[i]));
        } else if (cfg->optimizer == CNN_OPTIM_RMSPROP) {
            CNN_TRY(zeros_like(net->backend, pv, &opt->v[i]));
            if (cfg->momentum != 0.0f) CNN_TRY(zeros_like(net->backend, pv, &opt->m[i]));
        } else if (cfg->momentum != 0.0f) {
            CNN_TRY(zeros_like(net->backend, pv, &opt->m[i]));
        }
    }
    *out = opt;
    return CNN_OK;
fail:
    cnn_optimizer_destroy(opt);
    return st;
}

/* total = the sum over the parameters, in their order, of the sum of squares of each gradient: one call for all when
 * the backend has sum_squares_multi (one synchronization), else one per gradient */
static cnn_status grad_sum_squares(cnn_optimizer *opt, double *total)
{
    cnn_backend *b = opt->backend;
    cnn_status st = CNN_OK;
    *total = 0.0;
    if (!cnn_op_has(b, "sum_squares_multi")) {
        for (int i = 0; i < opt->nparams; i++) {
            double s = 0.0;
            st = cnn_op_sum_squares(b, opt->params[i]->grad, &s);
            if (st != CNN_OK) return cnn_error_prefix(st, "gradient norm of %s: ", opt->params[i]->name);
            *total += s;
        }
        return CNN_OK;
    }
    const size_t n = (size_t)opt->nparams;
    const cnn_tensor **grads = malloc(n * sizeof *grads);
    double *sums = malloc(n * sizeof *sums);
    if (!grads || !sums) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    for (int i = 0; i < opt->nparams; i++) grads[i] = opt->params[i]->grad;
    int failed = -1;
    st = cnn_op_sum_squares_multi(b, grads, opt->nparams, sums, &failed);
    if (st != CNN_OK) {
        if (failed >= 0 && failed < opt->nparams)
            st = cnn_error_prefix(st, "gradient norm of %s: ", opt->params[failed]->name);
        else
            st = cnn_error_prefix(st, "gradient norm of %d parameters: ", opt->nparams);
        goto fail;
    }
    for (int i = 0; i < opt->nparams; i++) *total += sums[i];
fail:
    free(grads);
    free(sums);
    return st;
}

cnn_status cnn_optimizer_clip(cnn_optimizer *opt, float max_norm, double *norm)
{
    cnn_backend *b = opt->backend;
    /* both before anything changes */
    if (!cnn_op_has(b, "sum_squares") && !cnn_op_has(b, "sum_squares_multi"))
        return cnn_backend_lacks(b, "sum_squares");
    if (!cnn_op_has(b, "scale")) return cnn_backend_lacks(b, "scale");
    double total = 0.0;
    if (opt->nparams > 0) {
        cnn_status st = grad_sum_squares(opt, &total);
        if (st != CNN_OK) return st;
    }
    total = sqrt(total) * opt->grad_scale;
    if (norm) *norm = total;
    if (!isfinite(total)) return cnn_error(CNN_ERR_NUMERIC, "the gradient norm became %g: lower the learning rate", total);
    if (total <= max_norm) return CNN_OK;
    /* the 1e-6 keeps the factor finite near 0, as PyTorch's clip_grad_norm_ */
    float factor = (float)(max_norm / (total + 1e-6));
    for (int i = 0; i < opt->nparams; i++) {
        cnn_status st = cnn_op_scale(b, opt->params[i]->grad, factor);
        if (st != CNN_OK) return cnn_error_prefix(st, "gradient clipping of %s: ", opt->params[i]->name);
    }
    return CNN_OK;
}

/* The update of parameter i as the backend's per-tensor entries take it; the multi entries take a list of them. */
static cnn_sgd_args sgd_args(const cnn_optimizer *opt, int i)
{
    const cnn_param *p = opt->params[i];
    const cnn_train_config *c = &opt->cfg;
    return (cnn_sgd_args){
        .param = p->value, .grad = p->grad, .param_lp = p->value_lp, .velocity = opt->m[i],
        .lr = opt->lr, .momentum = c->momentum, .weight_decay = c->weight_decay,
        .nesterov = c->nesterov, .grad_scale = opt->grad_scale,
    };
}

static cnn_adam_args adam_args(const cnn_optimizer *opt, int i, float bc1, float bc2)
{
    const cnn_param *p = opt->params[i];
    const cnn_train_config *c = &opt->cfg;
    return (cnn_adam_args){
        .param = p->value, .grad = p->grad, .param_lp = p->value_lp, .m = opt->m[i], .v = opt->v[i],
        .lr = opt->lr, .beta1 = c->beta1, .beta2 = c->beta2, .eps = c->eps,
        .weight_decay = c->weight_decay, .decoupled = c->optimizer == CNN_OPTIM_ADAMW,
        .bias_correction1 = bc1, .bias_correction2 = bc2, .grad_scale = opt->grad_scale,
    };
}

static cnn_rmsprop_args rmsprop_args(const cnn_optimizer *opt, int i)
{
    const cnn_param *p = opt->params[i];
    const cnn_train_config *c = &opt->cfg;
    return (cnn_rmsprop_args){
        .param = p->value, .grad = p->grad, .param_lp = p->value_lp, .sq = opt->v[i], .mom = opt->m[i],
        .lr = opt->lr, .rho = c->rho, .eps = c->eps, .momentum = c->momentum,
        .weight_decay = c->weight_decay, .grad_scale = opt->grad_scale,
    };
}

/* One call of the backend's multi entry for every parameter. */
static cnn_status step_multi(cnn_optimizer *opt, float bc1, float bc2)
{
    cnn_backend *b = opt->backend;
    const cnn_optimizer_kind kind = opt->cfg.optimizer;
    const int n = opt->nparams;
    const size_t size = kind == CNN_OPTIM_ADAM || kind == CNN_OPTIM_ADAMW ? sizeof(cnn_adam_args)
                        : kind == CNN_OPTIM_RMSPROP                       ? sizeof(cnn_rmsprop_args)
                                                                          : sizeof(cnn_sgd_args);
    void *list = malloc((size_t)n * size);
    if (!list) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    cnn_status st;
    int failed = -1;
    if (kind == CNN_OPTIM_ADAM || kind == CNN_OPTIM_ADAMW) {
        cnn_adam_args *a = list;
        for (int i = 0; i < n; i++) a[i] = adam_args(opt, i, bc1, bc2);
        st = cnn_op_adam_update_multi(b, a, n, &failed);
    } else if (kind == CNN_OPTIM_RMSPROP) {
        cnn_rmsprop_args *a = list;
        for (int i = 0; i < n; i++) a[i] = rmsprop_args(opt, i);
        st = cnn_op_rmsprop_update_multi(b, a, n, &failed);
    } else {
        cnn_sgd_args *a = list;
        for (int i = 0; i < n; i++) a[i] = sgd_args(opt, i);
        st = cnn_op_sgd_update_multi(b, a, n, &failed);
    }
    free(list);
    for (int i = 0; i < n; i++) { /* new contents: caches of the old ones are stale */
        cnn_tensor_touch(opt->params[i]->value);
        cnn_tensor_touch(opt->params[i]->value_lp);
    }
    if (st != CNN_OK && failed >= 0 && failed < n)
        return cnn_error_prefix(st, "optimizer update of %s: ", opt->params[failed]->name);
    if (st != CNN_OK) return cnn_error_prefix(st, "optimizer update of %d parameters: ", n);
    return CNN_OK;
}

/* the backend's multi entry for the configured optimizer, if it has one */
static int has_multi(const cnn_optimizer *opt)
{
    const cnn_backend *b = opt->backend;
    switch (opt->cfg.optimizer) {
    case CNN_OPTIM_ADAM:
    case CNN_OPTIM_ADAMW: return cnn_op_has(b, "adam_update_multi");
    case CNN_OPTIM_RMSPROP: return cnn_op_has(b, "rmsprop_update_multi");
    default: return cnn_op_has(b, "sgd_update_multi");
    }
}

cnn_status cnn_optimizer_step(cnn_optimizer *opt)
{
    cnn_backend *b = opt->backend;
    const cnn_train_config *c = &opt->cfg;
    opt->step++;
    float bc1 = 1.0f - powf(c->beta1, (float)opt->step);
    float bc2 = 1.0f - powf(c->beta2, (float)opt->step);
    if (opt->nparams > 0 && has_multi(opt)) return step_multi(opt, bc1, bc2);
    for (int i = 0; i < opt->nparams; i++) {
        cnn_param *p = opt->params[i];
        cnn_status st;
        if (c->optimizer == CNN_OPTIM_ADAM || c->optimizer == CNN_OPTIM_ADAMW) {
            cnn_adam_args a = adam_args(opt, i, bc1, bc2);
            st = cnn_op_adam_update(b, &a);
        } else if (c->optimizer == CNN_OPTIM_RMSPROP) {
            cnn_rmsprop_args a = rmsprop_args(opt, i);
            st = cnn_op_rmsprop_update(b, &a);
        } else {
            cnn_sgd_args a = sgd_args(opt, i);
            st = cnn_op_sgd_update(b, &a);
        }
        cnn_tensor_touch(p->value); /* new contents: caches of the old ones are stale */
        cnn_tensor_touch(p->value_lp);
        if (st != CNN_OK) return cnn_error_prefix(st, "optimizer update of %s: ", p->name);
    }
    return CNN_OK;
}

cnn_status cnn_optimizer_grads_finite(cnn_optimizer *opt, int *finite)
{
    cnn_backend *b = opt->backend;
    *finite = 1;
    const cnn_tensor **grads = malloc((size_t)(opt->nparams ? opt->nparams : 1) * sizeof *grads);
    if (!grads) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    for (int i = 0; i < opt->nparams; i++) grads[i] = opt->params[i]->grad;
    int any = 0;
    cnn_status st = cnn_op_nonfinite(b, grads, opt->nparams, &any);
    free(grads);
    if (st != CNN_OK) return cnn_error_prefix(st, "checking the gradients for overflow: ");
    *finite = !any;
    return CNN_OK;
}
