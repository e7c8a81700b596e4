/* Magnitude pruning (README, "Pruning"): TF-MOT's polynomial-decay schedule, the masks of the three structures
 * (unstructured, whole conv channels, 2:4), and the pruner that keeps them in force during training. The strip of
 * pruned channels is in core/prune_strip.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/compress/prune.h"
#include "core/error.h"
#include "core/names.h"

static const char *const structure_names[] = {"unstructured", "channel", "2:4"};
_Static_assert(sizeof structure_names / sizeof *structure_names == CNN_PRUNE_STRUCTURE_COUNT, "one name per structure");

/* TF-MOT's default pruning frequency (tfmot.sparsity.keras.PolynomialDecay, frequency=100) */
#define PRUNE_DEFAULT_FREQUENCY 100
/* TF-MOT's PolynomialDecay power */
#define PRUNE_POWER 3.0

void cnn_prune_config_defaults(cnn_prune_config *c)
{
    memset(c, 0, sizeof *c);
    c->structure = CNN_PRUNE_UNSTRUCTURED;
    c->target_sparsity = 0.5f;
    c->end_step = -1;
    c->frequency = PRUNE_DEFAULT_FREQUENCY;
}

CNN_NAME_TABLE_FUNCTIONS(cnn_prune_structure_parse, cnn_prune_structure_name, cnn_prune_structure, structure_names,
                         "unstructured, channel, 2:4")

cnn_status cnn_prune_check(const cnn_prune_config *c)
{
    if (!c->enabled) return CNN_OK;
    if ((unsigned)c->structure >= CNN_PRUNE_STRUCTURE_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "pruning: unknown structure (%d)", (int)c->structure);
    if (!(c->initial_sparsity >= 0.0f && c->initial_sparsity < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "pruning: the initial sparsity must be in [0, 1), got %g",
                         (double)c->initial_sparsity);
    if (!(c->target_sparsity >= 0.0f && c->target_sparsity < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "pruning: the target sparsity must be in [0, 1), got %g",
                         (double)c->target_sparsity);
    if (c->initial_sparsity > c->target_sparsity)
        return cnn_error(CNN_ERR_INVALID_ARG, "pruning: the initial sparsity %g is above the target %g: masks only "
                                              "grow", (double)c->initial_sparsity, (double)c->target_sparsity);
    if (c->begin_step < 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "pruning: the begin step must be >= 0, got %lld", (long long)c->begin_step);
    if (c->end_step >= 0 && c->end_step <= c->begin_step)
        return cnn_error(CNN_ERR_INVALID_ARG, "pruning: the end step (%lld) must come after the begin step (%lld)",
                         (long long)c->end_step, (long long)c->begin_step);
    if (c->frequency < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "pruning: the frequency must be at least 1 step, got %lld",
                         (long long)c->frequency);
    return CNN_OK;
}

int64_t cnn_prune_end_step(const cnn_prune_config *c, int64_t total_steps)
{
    if (c->end_step >= 0) return c->end_step;
    int64_t e = total_steps / 4 * 3 + total_steps % 4 * 3 / 4;
    return e > c->begin_step ? e : c->begin_step + 1;
}

double cnn_prune_sparsity_at(const cnn_prune_config *c, int64_t step)
{
    if (c->structure == CNN_PRUNE_2_4) return step >= c->begin_step ? 0.5 : 0.0;
    int64_t span = c->end_step > c->begin_step ? c->end_step - c->begin_step : 1;
    double p = (double)(step - c->begin_step) / (double)span;
    p = p < 0.0 ? 0.0 : p > 1.0 ? 1.0 : p;
    double si = c->initial_sparsity, sf = c->target_sparsity;
    return sf + (si - sf) * pow(1.0 - p, PRUNE_POWER);
}

int cnn_prune_updates_at(const cnn_prune_config *c, int64_t step)
{
    if (step < c->begin_step || step > c->end_step) return 0;
    return (step - c->begin_step) % c->frequency == 0 || step == c->end_step;
}

void cnn_prune_describe(const cnn_prune_config *c, char *buf, size_t size)
{
    snprintf(buf, size, "structure=%s initial=%.9g target=%.9g begin=%lld end=%lld frequency=%lld",
             cnn_prune_structure_name(c->structure), (double)c->initial_sparsity, (double)c->target_sparsity,
             (long long)c->begin_step, (long long)c->end_step, (long long)c->frequency);
}

cnn_status cnn_net_layer_sparsity(const cnn_net *net, int layer, int64_t *zeros, int64_t *total)
{
    *zeros = *total = 0;
    if (layer < 0 || layer >= net->nlayers) return cnn_error(CNN_ERR_INVALID_ARG, "no layer %d", layer);
    const cnn_layer *l = net->layers[layer];
    if ((l->ops != &cnn_conv_layer_ops && l->ops != &cnn_dense_layer_ops) || l->nparams < 1 || !l->params[0].value)
        return CNN_OK;
    const cnn_tensor *t = l->params[0].value;
    int64_t n = cnn_tensor_numel(t);
    float *w = malloc((size_t)(n ? n : 1) * sizeof *w);
    if (!w) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    cnn_status st = cnn_tensor_read(t, w, (size_t)n * sizeof *w);
    if (st == CNN_OK)
        for (int64_t i = 0; i < n; i++) *zeros += w[i] == 0.0f;
    *total = n;
    free(w);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the pruner

typedef struct prune_entry {
    cnn_param *param;
    int layer;
    int64_t numel;
    int64_t rows;     /* output units (the weight's first dim) */
    uint8_t *mask;    /* numel; 1 = kept */
    int64_t removed;  /* zeros in mask */
    int counted;      /* a weight tensor (counted in the sparsity); 0: a channel-pruned conv's bias, gamma or beta */
} prune_entry;

struct cnn_pruner {
    cnn_prune_config cfg; /* end_step resolved by cnn_pruner_start */
    prune_entry *e;
    int n;
    float *host;          /* scratch: the largest tensor */
    int64_t host_len;
    cnn_prune_groups groups; /* the channel structure's */
    uint8_t *keep;        /* per group: 1 = kept */
    const cnn_net *net;
};

void cnn_pruner_destroy(cnn_pruner *p)
{
    if (!p) return;
    for (int i = 0; i < p->n; i++) free(p->e[i].mask);
    free(p->e);
    free(p->host);
    free(p->keep);
    cnn_prune_groups_free(&p->groups);
    free(p);
}

static cnn_status add_entry(cnn_pruner *p, cnn_param *param, int layer, int counted)
{
    prune_entry *e = &p->e[p->n];
    memset(e, 0, sizeof *e);
    e->param = param;
    e->layer = layer;
    e->numel = cnn_tensor_numel(param->value);
    e->rows = param->value->shape[0];
    e->counted = counted;
    e->mask = malloc((size_t)(e->numel ? e->numel : 1));
    if (!e->mask) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the pruning masks");
    memset(e->mask, 1, (size_t)e->numel);
    if (e->numel > p->host_len) p->host_len = e->numel;
    p->n++;
    return CNN_OK;
}

cnn_status cnn_pruner_create(cnn_net *net, const cnn_prune_config *cfg, cnn_pruner **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    CNN_TRY(cnn_prune_check(cfg));
    cnn_pruner *p = calloc(1, sizeof *p);
    if (!p) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    p->cfg = *cfg;
    p->net = net;
    /* at most 2 entries per layer: a conv's weight and bias, a batchnorm's gamma and beta */
    p->e = calloc((size_t)net->nlayers * 2 + 1, sizeof *p->e);
    if (!p->e) {
        cnn_pruner_destroy(p);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
    if (cfg->structure == CNN_PRUNE_CHANNEL) {
        if ((st = cnn_prune_groups_build(net, &p->groups)) != CNN_OK) goto fail_p;
        p->keep = malloc((size_t)(p->groups.ngroups ? p->groups.ngroups : 1));
        if (!p->keep) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
            goto fail_p;
        }
        memset(p->keep, 1, (size_t)p->groups.ngroups);
    }
    int last = -1; /* the classifier: the last layer with weights */
    for (int i = 0; i < net->nlayers; i++)
        if (net->layers[i]->ops == &cnn_conv_layer_ops || net->layers[i]->ops == &cnn_dense_layer_ops) last = i;
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        if (cfg->structure == CNN_PRUNE_CHANNEL) {
            /* the convs and batchnorms with a channel in a group that may go */
            const cnn_prune_groups *g = &p->groups;
            int member = 0;
            for (int64_t s = g->off[i]; s < g->off[i + 1] && !member; s++) member = g->gid[s] >= 0;
            if (!member) continue;
            const int conv = l->ops == &cnn_conv_layer_ops;
            if (!conv && l->ops != &cnn_batchnorm_layer_ops) continue; /* no parameters: pooling, add, ... */
            if ((st = add_entry(p, &l->params[0], i, conv)) != CNN_OK) goto fail_p;
            if (l->nparams > 1 && (st = add_entry(p, &l->params[1], i, 0)) != CNN_OK) goto fail_p;
            continue;
        }
        if (i == last || l->frozen || (l->ops != &cnn_conv_layer_ops && l->ops != &cnn_dense_layer_ops)) continue;
        if ((st = add_entry(p, &l->params[0], i, 1)) != CNN_OK) goto fail_p;
    }
    if (!p->n) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "pruning: %s has no layer to prune with the %s structure (%s)",
                       net->source, cnn_prune_structure_name(cfg->structure),
                       cfg->structure == CNN_PRUNE_CHANNEL
                           ? "channel pruning narrows convs whose channels reach only convs, dense layers and the "
                             "layers between that keep a zero channel zero (batchnorm, ReLU, pooling, add, concat, "
                             "flatten); the classifier, frozen and depthwise layers are left whole"
                           : "conv and dense weights, but not the classifier's nor frozen layers'");
        goto fail_p;
    }
    p->host = malloc((size_t)(p->host_len ? p->host_len : 1) * sizeof *p->host);
    if (!p->host) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail_p;
    }
    *out = p;
    return CNN_OK;
fail_p:
    cnn_pruner_destroy(p);
fail:
    return st;
}

typedef struct ranked {
    float key;
    int64_t index;
} ranked;

/* ascending key, then ascending index: the order is total, so the masks are the same on every run */
static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* the `drop` smallest keys of r[0..n) get mask 0 (r is sorted in place) */
static void drop_smallest(ranked *r, int64_t n, int64_t drop, uint8_t *mask)
{
    qsort(r, (size_t)n, sizeof *r, cmp_ranked);
    for (int64_t k = 0; k < drop && k < n; k++) mask[r[k].index] = 0;
}

static cnn_status read_param(cnn_pruner *p, const prune_entry *e)
{
    return cnn_tensor_read(e->param->value, p->host, (size_t)e->numel * sizeof(float));
}

/* 2:4: in every run of 4 consecutive weights of a row (the trailing run may be shorter), the 2 of least magnitude
 * go (ties: the later one) */
static void mask_2_4(const float *w, int64_t rows, int64_t len, uint8_t *mask)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < len; g += 4) {
            int64_t n = len - g < 4 ? len - g : 4;
            const float *x = w + r * len + g;
            uint8_t *m = mask + r * len + g;
            for (int64_t k = 0; k < n; k++) m[k] = 1;
            if (n <= 2) continue;
            for (int drop = 0; drop < (int)n - 2; drop++) { /* remove the smallest kept one, twice for a full run */
                int64_t worst = -1;
                for (int64_t k = 0; k < n; k++)
                    if (m[k] && (worst < 0 || fabsf(x[k]) <= fabsf(x[worst]))) worst = k;
                m[worst] = 0;
            }
        }
}

/* The channel structure's masks for sparsity s: every group gets the key sum over its convs' filters of L2 norm
 * (Li et al. 2017) times |gamma| of the batchnorm that reads the conv (Liu et al. 2017's network slimming: a channel
 * the batchnorm scales down matters less); in each family the floor(s * groups) of least key go (ties: the earlier
 * group), as long as every conv keeps a channel; then every member's filters, biases, gammas and betas of a group
 * that went are masked. */
static cnn_status channel_masks(cnn_pruner *p, double s)
{
    cnn_status st = CNN_OK;
    const cnn_prune_groups *g = &p->groups;
    const cnn_net *net = p->net;
    const int64_t ng = g->ngroups;
    double *key = calloc((size_t)(ng ? ng : 1), sizeof *key);
    ranked *r = malloc((size_t)(ng ? ng : 1) * sizeof *r);
    int64_t *kept = calloc((size_t)net->nlayers + 1, sizeof *kept); /* per conv: channels still kept */
    float *gamma = NULL;
    if (!key || !r || !kept) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the pruning ranks");
        goto fail;
    }
    for (int i = 0; i < p->n; i++) {
        const prune_entry *e = &p->e[i];
        if (!e->counted) continue; /* conv weights */
        CNN_TRY(read_param(p, e));
        const int64_t len = e->numel / e->rows;
        const int bn = g->bn_after[e->layer];
        if (bn >= 0) {
            free(gamma);
            gamma = malloc((size_t)e->rows * sizeof *gamma);
            if (!gamma) {
                st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
                goto fail;
            }
            CNN_TRY(cnn_tensor_read(net->layers[bn]->params[0].value, gamma, (size_t)e->rows * sizeof *gamma));
        }
        kept[e->layer] = e->rows;
        for (int64_t o = 0; o < e->rows; o++) {
            const int64_t k = g->gid[g->off[e->layer] + o];
            if (k < 0) continue;
            double ss = 0.0;
            for (int64_t j = 0; j < len; j++) ss += (double)p->host[o * len + j] * p->host[o * len + j];
            key[k] += sqrt(ss) * (bn >= 0 ? fabs((double)gamma[o]) : 1.0);
        }
    }
    memset(p->keep, 1, (size_t)ng);
    for (int f = 0; f < g->nfamilies; f++) {
        int64_t n = 0;
        for (int64_t k = 0; k < ng; k++)
            if (g->family[k] == f) r[n++] = (ranked){(float)key[k], k};
        int64_t drop = (int64_t)floor(s * (double)n);
        if (drop >= n) drop = n - 1; /* one channel stays */
        qsort(r, (size_t)n, sizeof *r, cmp_ranked);
        for (int64_t q = 0; q < n && drop > 0; q++) {
            const int64_t k = r[q].index;
            int ok = 1;
            for (int64_t m = g->first[k]; m < g->first[k + 1]; m++) {
                const int l = g->layer_of[g->members[m]];
                if (net->layers[l]->ops == &cnn_conv_layer_ops) ok &= --kept[l] > 0;
            }
            if (!ok) { /* it would take a conv's last channel: the group stays */
                for (int64_t m = g->first[k]; m < g->first[k + 1]; m++) {
                    const int l = g->layer_of[g->members[m]];
                    if (net->layers[l]->ops == &cnn_conv_layer_ops) kept[l]++;
                }
                continue;
            }
            p->keep[k] = 0;
            drop--;
        }
    }
    for (int i = 0; i < p->n; i++) {
        prune_entry *e = &p->e[i];
        const int64_t len = e->numel / e->rows;
        for (int64_t o = 0; o < e->rows; o++) {
            const int64_t k = g->gid[g->off[e->layer] + o];
            memset(e->mask + o * len, k < 0 || p->keep[k], (size_t)len);
        }
    }
fail:
    free(key);
    free(r);
    free(kept);
    free(gamma);
    return st;
}

/* New masks for the schedule's sparsity s at the current weights. */
static cnn_status update_masks(cnn_pruner *p, double s)
{
    cnn_status st = CNN_OK;
    ranked *r = NULL;
    if (p->cfg.structure == CNN_PRUNE_CHANNEL) return channel_masks(p, s);
    for (int i = 0; i < p->n; i++) {
        prune_entry *e = &p->e[i];
        CNN_TRY(read_param(p, e));
        const int64_t len = e->rows ? e->numel / e->rows : 0;
        if (p->cfg.structure == CNN_PRUNE_2_4) {
            mask_2_4(p->host, e->rows, len, e->mask);
            continue;
        }
        const int64_t n = e->numel;
        free(r);
        r = malloc((size_t)(n ? n : 1) * sizeof *r);
        if (!r) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the pruning ranks");
            goto fail;
        }
        memset(e->mask, 1, (size_t)e->numel);
        for (int64_t k = 0; k < n; k++) r[k] = (ranked){fabsf(p->host[k]), k};
        drop_smallest(r, n, (int64_t)floor(s * (double)n), e->mask);
    }
fail:
    free(r);
    return st;
}

cnn_status cnn_pruner_apply(cnn_pruner *p, cnn_net *net)
{
    cnn_status st = CNN_OK;
    int any_lp = 0;
    for (int i = 0; i < p->n; i++) {
        prune_entry *e = &p->e[i];
        e->removed = 0;
        for (int64_t k = 0; k < e->numel; k++) e->removed += !e->mask[k];
        if (!e->removed) continue;
        CNN_TRY(read_param(p, e));
        for (int64_t k = 0; k < e->numel; k++)
            if (!e->mask[k]) p->host[k] = 0.0f; /* +0, whatever the sign the update left */
        CNN_TRY(cnn_tensor_write(e->param->value, p->host, (size_t)e->numel * sizeof(float)));
        any_lp |= e->param->value_lp != NULL;
    }
    /* mixed precision: the 16-bit copies the layers compute with follow the masked master weights */
    if (any_lp) CNN_TRY(cnn_net_sync_compute_weights(net));
fail:
    if (st != CNN_OK) st = cnn_error_prefix(st, "pruning: ");
    return st;
}

cnn_status cnn_pruner_start(cnn_pruner *p, cnn_net *net, int64_t total_steps, int resumed)
{
    p->cfg.end_step = cnn_prune_end_step(&p->cfg, total_steps);
    if (resumed) return cnn_pruner_apply(p, net); /* the masks came with the checkpoint; the weights obey them */
    if (cnn_prune_updates_at(&p->cfg, (int64_t)net->step)) {
        cnn_status st = update_masks(p, cnn_prune_sparsity_at(&p->cfg, (int64_t)net->step));
        if (st != CNN_OK) return cnn_error_prefix(st, "pruning: ");
    }
    return cnn_pruner_apply(p, net);
}

cnn_status cnn_pruner_step(cnn_pruner *p, cnn_net *net)
{
    const int64_t t = (int64_t)net->step;
    if (cnn_prune_updates_at(&p->cfg, t)) {
        cnn_status st = update_masks(p, cnn_prune_sparsity_at(&p->cfg, t));
        if (st != CNN_OK) return cnn_error_prefix(st, "pruning: ");
    }
    return cnn_pruner_apply(p, net);
}

double cnn_pruner_sparsity(const cnn_pruner *p)
{
    int64_t removed = 0, total = 0;
    for (int i = 0; i < p->n; i++)
        if (p->e[i].counted) {
            removed += p->e[i].removed;
            total += p->e[i].numel;
        }
    return total ? (double)removed / (double)total : 0.0;
}

int cnn_pruner_masks(const cnn_pruner *p) { return p->n; }

const uint8_t *cnn_pruner_mask(const cnn_pruner *p, int i, const cnn_param **param)
{
    *param = p->e[i].param;
    return p->e[i].mask;
}

cnn_status cnn_pruner_restore(cnn_pruner *p, const cnn_st_file *f, const char *path)
{
    char name[CNN_NAME_MAX + 16];
    for (int i = 0; i < p->n; i++) {
        prune_entry *e = &p->e[i];
        snprintf(name, sizeof name, "prune/mask/%s", e->param->name);
        const cnn_st_tensor *t = cnn_st_find(f, name);
        if (!t || t->dtype != CNN_U8 || t->nbytes != (size_t)e->numel)
            return cnn_error(CNN_ERR_FORMAT, "%s: the pruning mask '%s' is missing or has another size", path, name);
        const uint8_t *m = cnn_st_data(f, t);
        for (int64_t k = 0; k < e->numel; k++) {
            if (m[k] > 1)
                return cnn_error(CNN_ERR_FORMAT, "%s: the pruning mask '%s' holds %d, not 0 or 1", path, name, m[k]);
            e->mask[k] = m[k];
        }
    }
    return CNN_OK;
}
