/* The strip of pruned channels (cnn/prune.h, cnn_net_strip): a channel group (core/compress/prune_groups.c) whose convs'
 * filters and batchnorms' gamma and beta are all exactly zero outputs zero everywhere, so every member loses the
 * channel (the convs their filters, the batchnorms their parameters, the readers their matching inputs), and the
 * definition says so, so that the smaller model is faster on every backend. */
#include <stdlib.h>
#include <string.h>

#include "core/compress/prune.h"
#include "core/error.h"
#include "core/io/json.h"

/* Per layer output: the channels (3-D outputs) or features (flat ones) kept, in order; NULL: all of them. */
typedef struct keep_list {
    int64_t *v;
    int64_t n;
} keep_list;

static cnn_status read_all(const cnn_tensor *t, float **out)
{
    int64_t n = cnn_tensor_numel(t);
    *out = malloc((size_t)(n ? n : 1) * sizeof **out);
    if (!*out) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    return cnn_tensor_read(t, *out, (size_t)n * sizeof **out);
}

/* removed[k] = 0 for every group k (gid[o]: output o's, -1 for none) in which layer l has an output whose weights
 * (and bias, or beta) are not all zero */
static cnn_status keep_nonzero(const cnn_layer *l, const int64_t *gid, uint8_t *removed)
{
    float *w = NULL, *b = NULL;
    cnn_status st = read_all(l->params[0].value, &w);
    if (st == CNN_OK && l->nparams > 1) st = read_all(l->params[1].value, &b);
    const int64_t f = l->params[0].value->shape[0], len = cnn_tensor_numel(l->params[0].value) / f;
    for (int64_t o = 0; st == CNN_OK && o < f; o++) {
        if (gid[o] < 0) continue;
        int zero = !b || b[o] == 0.0f;
        for (int64_t j = 0; zero && j < len; j++) zero = w[o * len + j] == 0.0f;
        if (!zero) removed[gid[o]] = 0;
    }
    free(w);
    free(b);
    return st;
}

/* The groups whose members are all exactly zero: every conv filter (and bias) and every batchnorm gamma and beta of
 * the group's channels; removed[k] = 1 for those. */
static cnn_status zero_groups(const cnn_net *net, const cnn_prune_groups *g, uint8_t *removed)
{
    cnn_status st = CNN_OK;
    memset(removed, 1, (size_t)g->ngroups);
    for (int i = 0; i < net->nlayers && st == CNN_OK; i++) {
        const cnn_layer *l = net->layers[i];
        const int conv = l->ops == &cnn_conv_layer_ops;
        if (!conv && l->ops != &cnn_batchnorm_layer_ops) continue;
        int member = 0;
        for (int64_t s = g->off[i]; s < g->off[i + 1] && !member; s++) member = g->gid[s] >= 0;
        if (member) st = keep_nonzero(l, &g->gid[g->off[i]], removed);
    }
    return st;
}

/* line `line` of text with its second word (a conv's filter count) replaced by `value`; NULL without memory */
static char *replace_filters(const char *text, int line, int64_t value)
{
    const char *s = text;
    for (int i = 0; i < line && s; i++) {
        s = strchr(s, '\n');
        if (s) s++;
    }
    if (!s) return NULL;
    const char *a = strchr(s, ' ');
    const char *eol = strchr(s, '\n');
    if (!a || (eol && a > eol)) return NULL;
    a++;
    const char *e = a + strcspn(a, " \n");
    char num[24];
    int nl = snprintf(num, sizeof num, "%lld", (long long)value);
    size_t head = (size_t)(a - text), tail = strlen(e);
    char *out = malloc(head + (size_t)nl + tail + 1);
    if (!out) return NULL;
    memcpy(out, text, head);
    memcpy(out + head, num, (size_t)nl);
    memcpy(out + head + nl, e, tail + 1);
    return out;
}

/* dst[...] = src[...] over a tensor of `rows` x `cols`, rows and cols picked by the lists (NULL: all); src has
 * src_rows x src_cols */
static void gather(float *dst, const float *src, int64_t src_cols, const keep_list *rows, int64_t nrows,
                   const keep_list *cols, int64_t ncols, int64_t inner)
{
    for (int64_t r = 0; r < nrows; r++) {
        int64_t sr = rows && rows->v ? rows->v[r] : r;
        for (int64_t c = 0; c < ncols; c++) {
            int64_t sc = cols && cols->v ? cols->v[c] : c;
            for (int64_t k = 0; k < inner; k++)
                dst[(r * ncols + c) * inner + k] = src[(sr * src_cols + sc) * inner + k];
        }
    }
}

/* Copies tensor j (a parameter, then the state) of layer s, sp, into dp, picking the kept rows (output units /
 * channels) and input channels. */
static cnn_status copy_tensor(cnn_param *dp, const cnn_param *sp, const cnn_layer *s, int j, const keep_list *own,
                              const keep_list *in)
{
    const cnn_tensor *st_ = sp->value;
    const int64_t dn = cnn_tensor_numel(dp->value);
    float *src = NULL, *dst = NULL;
    cnn_status st = read_all(st_, &src);
    if (st != CNN_OK) goto fail;
    dst = malloc((size_t)(dn ? dn : 1) * sizeof *dst);
    if (!dst) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    if (s->ops == &cnn_conv_layer_ops && j == 0) { /* (F, KH, KW, C): rows own, innermost channels in */
        const int64_t f = dp->value->shape[0], c = dp->value->shape[3], sc = st_->shape[3];
        const int64_t taps = st_->shape[1] * st_->shape[2];
        for (int64_t o = 0; o < f; o++) {
            const int64_t so = own->v ? own->v[o] : o;
            for (int64_t t = 0; t < taps; t++)
                for (int64_t ci = 0; ci < c; ci++)
                    dst[(o * taps + t) * c + ci] = src[(so * taps + t) * sc + (in->v ? in->v[ci] : ci)];
        }
    } else if (s->ops == &cnn_dense_layer_ops && j == 0) { /* (U, IN): inputs picked */
        gather(dst, src, st_->shape[1], NULL, dp->value->shape[0], in, dp->value->shape[1], 1);
    } else if (s->ops == &cnn_conv_layer_ops) { /* the bias: per output channel */
        gather(dst, src, 1, own, dn, NULL, 1, 1);
    } else if (s->ops == &cnn_batchnorm_layer_ops) { /* per channel of its input */
        gather(dst, src, 1, in, dn, NULL, 1, 1);
    } else if (dn == cnn_tensor_numel(st_)) {
        memcpy(dst, src, (size_t)dn * sizeof *dst);
    } else {
        st = cnn_error(CNN_ERR_SHAPE, "strip: %s changed size without being narrowed", sp->name);
        goto fail;
    }
    st = cnn_tensor_write(dp->value, dst, (size_t)dn * sizeof *dst);
fail:
    free(src);
    free(dst);
    return st;
}

/* Copies the saved tensors of layer s into d's, as copy_tensor narrows them. */
static cnn_status copy_layer(cnn_layer *d, const cnn_layer *s, const keep_list *own, const keep_list *in)
{
    cnn_status st = CNN_OK;
    for (int j = 0; j < s->nparams + s->nstate && st == CNN_OK; j++) {
        const cnn_param *sp = j < s->nparams ? &s->params[j] : &s->state[j - s->nparams];
        cnn_param *dp = j < d->nparams ? &d->params[j] : &d->state[j - d->nparams];
        st = copy_tensor(dp, sp, s, j, own, in);
    }
    return st;
}

cnn_status cnn_net_strip(const cnn_net *net, cnn_backend *backend, cnn_net **out, int64_t *removed)
{
    cnn_status st = CNN_OK;
    const int n = net->nlayers;
    keep_list *keep = calloc((size_t)n + 1, sizeof *keep), none = {NULL, 0};
    char *text = NULL;
    int *layer_line = NULL, expanded_layers = 0;
    uint8_t *gone_group = NULL;
    cnn_net *fresh = NULL;
    int64_t gone = 0;
    cnn_prune_groups g;
    memset(&g, 0, sizeof g);
    *out = NULL;
    if (!keep) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    // --- the channel groups whose members are all zero go; every conv keeps a channel
    CNN_TRY(cnn_prune_groups_build(net, &g));
    gone_group = malloc((size_t)(g.ngroups ? g.ngroups : 1));
    if (!gone_group) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    CNN_TRY(zero_groups(net, &g, gone_group));
    for (int i = 0; i < n; i++) {
        if (net->layers[i]->ops != &cnn_conv_layer_ops || g.off[i] == g.off[i + 1]) continue;
        int any = 0;
        for (int64_t s = g.off[i]; s < g.off[i + 1] && !any; s++) any = g.gid[s] < 0 || !gone_group[g.gid[s]];
        if (!any) gone_group[g.gid[g.off[i]]] = 0; /* its outputs are zeros either way */
    }
    // --- per layer output, the channels kept
    for (int i = 0; i < n; i++) {
        const int64_t w = g.off[i + 1] - g.off[i];
        keep[i].v = malloc((size_t)(w ? w : 1) * sizeof *keep[i].v);
        if (!keep[i].v) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
            goto fail;
        }
        for (int64_t c = 0; c < w; c++) {
            const int64_t k = g.gid[g.off[i] + c];
            if (k < 0 || !gone_group[k]) keep[i].v[keep[i].n++] = c;
        }
        if (net->layers[i]->ops == &cnn_conv_layer_ops) gone += w - keep[i].n;
        if (keep[i].n == w) {
            free(keep[i].v);
            keep[i].v = NULL;
        }
    }
    if (!gone) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "%s has no pruned channel to strip: no conv channel that may go has its "
                                            "filter, bias and batchnorm gamma and beta all zero in every layer that "
                                            "shares it through adds and concats (train with --prune magnitude "
                                            "--prune-structure channel; unstructured and 2:4 sparsity stays in the "
                                            "weights)",
                       net->source);
        goto fail;
    }
    // --- the narrower definition
    CNN_TRY(cnn_model_expand(net->definition, net->source, &text, &layer_line, &expanded_layers));
    if (expanded_layers != n) {
        st = cnn_error(CNN_ERR_UNSUPPORTED, "strip: %s: the unrolled definition has %d layers, the model %d",
                       net->source, expanded_layers, n);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (net->layers[i]->ops != &cnn_conv_layer_ops || !keep[i].v) continue;
        char *next = replace_filters(text, layer_line[i], keep[i].n);
        if (!next) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
            goto fail;
        }
        free(text);
        text = next;
    }
    CNN_TRY(cnn_net_from_text(text, net->source, backend, net->seed, &fresh));
    if (fresh->nlayers != n) {
        st = cnn_error(CNN_ERR_UNSUPPORTED, "strip: %s: the narrower definition has %d layers, the model %d",
                       net->source, fresh->nlayers, n);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        const cnn_layer *l = net->layers[i];
        const keep_list *in = l->ninputs == 1 && l->inputs[0] >= 0 ? &keep[l->inputs[0]] : &none;
        CNN_TRY(copy_layer(fresh->layers[i], l, &keep[i], in));
    }
    // --- what the model file carries besides the weights
    const int k = cnn_net_num_outputs(net);
    if (net->class_names) CNN_TRY(cnn_net_set_class_names(fresh, k, (const char *const *)net->class_names));
    if (net->has_norm) CNN_TRY(cnn_net_set_normalization(fresh, (int)net->input.d[2], net->norm_mean, net->norm_std));
    if (net->has_profile)
        CNN_TRY(cnn_net_set_data_profile(fresh, (int)net->input.d[2], net->profile_mean, net->profile_std, k,
                                         net->class_freq));
    fresh->resize_h = net->resize_h;
    fresh->resize_w = net->resize_w;
    if (removed) *removed = gone;
    *out = fresh;
    fresh = NULL;
fail:
    for (int i = 0; i < n; i++) free(keep[i].v);
    free(keep);
    free(gone_group);
    cnn_prune_groups_free(&g);
    free(text);
    free(layer_line);
    cnn_net_destroy(fresh);
    return st;
}
