/* Channel groups for channel pruning (core/compress/prune.h, cnn_prune_groups): which channels of a network must be removed
 * together. Every channel of every layer output (and of the network input) is a slot; a union-find joins the slots
 * that carry the same values' channel: a batchnorm's, an activation's, dropout's and pooling's output channel c
 * with its input channel c, an add's output channel c with channel c of each of its inputs (so the branches of a
 * residual block and the identity shortcuts chained through several adds become one), a concat's output channel
 * with the channel of the input it came from (offsets shift), a flatten's features with the channel they came
 * from. A group can go when every value source in it is a conv that may lose output channels (so that, its filters
 * and the batchnorms' gamma and beta masked, every member outputs exactly zero) and every reader of it is a conv or
 * dense layer (whose matching inputs are then removed) or another member; the network input, dense outputs, the
 * network's output, softmax, depthwise convs, frozen layers and activations with f(0) != 0 make a group stay.
 * Groups that share a conv form a family: the schedule's sparsity is applied per family (torch-pruning's
 * dependency graph is the public example of the idea). */
#include <stdlib.h>
#include <string.h>

#include "core/compress/prune.h"
#include "core/error.h"
#include "core/free_list.h"

/* f(0) = 0: a channel that is zero before the activation stays zero after it */
static int zero_preserving(cnn_act a) { return a != CNN_ACT_SIGMOID; }

static int64_t width_of(const cnn_shape *s) { return s->ndim > 0 ? s->d[s->ndim - 1] : 0; }

static int64_t uf_find(int64_t *parent, int64_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

/* joins two sets; the smaller index becomes the root, so that the result does not depend on the order */
static void uf_join(int64_t *parent, int64_t a, int64_t b)
{
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a == b) return;
    if (a < b) parent[b] = a;
    else parent[a] = b;
}

void cnn_prune_groups_free(cnn_prune_groups *g)
{
    if (!g) return;
    CNN_FREE_ALL(g->off, g->gid, g->layer_of, g->family, g->first, g->members, g->bn_after);
    memset(g, 0, sizeof *g);
}

int cnn_prune_conv_can_shrink(const cnn_net *net, int i)
{
    const cnn_layer *l = net->layers[i];
    if (l->ops != &cnn_conv_layer_ops || ((const cnn_conv_layer *)l)->groups != 1 || l->frozen ||
        !zero_preserving(l->act))
        return 0;
    for (int j = i + 1; j < net->nlayers; j++) /* the classifier: the last layer with weights */
        if (net->layers[j]->ops == &cnn_conv_layer_ops || net->layers[j]->ops == &cnn_dense_layer_ops) return 1;
    return 0;
}

static int pass_through(const cnn_layer *l)
{
    return l->ops == &cnn_dropout_layer_ops || l->ops == &cnn_maxpool_layer_ops || l->ops == &cnn_avgpool_layer_ops ||
           l->ops == &cnn_globalavgpool_layer_ops || l->ops == &cnn_globalmaxpool_layer_ops;
}

cnn_status cnn_prune_groups_build(const cnn_net *net, cnn_prune_groups *g)
{
    cnn_status st = CNN_OK;
    const int n = net->nlayers;
    int64_t *parent = NULL, *lparent = NULL;
    uint8_t *blocked = NULL, *source = NULL;
    memset(g, 0, sizeof *g);
    g->nlayers = n;
    g->off = malloc(((size_t)n + 2) * sizeof *g->off);
    g->bn_after = malloc(((size_t)n + 1) * sizeof *g->bn_after);
    if (!g->off || !g->bn_after) goto oom;
    for (int i = 0; i <= n; i++) g->bn_after[i] = -1;
    /* slots: layer i's channels from off[i]; the network input's from off[n] */
    int64_t total = 0;
    for (int i = 0; i <= n; i++) {
        g->off[i] = total;
        total += width_of(i < n ? &net->layers[i]->out : &net->input);
    }
    g->off[n + 1] = total;
    g->nslots = total;
    parent = malloc((size_t)(total ? total : 1) * sizeof *parent);
    blocked = calloc((size_t)(total ? total : 1), 1);
    source = calloc((size_t)(total ? total : 1), 1); /* 1: the output of a conv that may lose channels */
    g->gid = malloc((size_t)(total ? total : 1) * sizeof *g->gid);
    g->layer_of = malloc((size_t)(total ? total : 1) * sizeof *g->layer_of);
    if (!parent || !blocked || !source || !g->gid || !g->layer_of) goto oom;
    for (int64_t s = 0; s < total; s++) parent[s] = s;
    for (int i = 0; i <= n; i++)
        for (int64_t s = g->off[i]; s < g->off[i + 1]; s++) g->layer_of[s] = i < n ? i : -1;
#define SLOT0(layer) ((layer) < 0 ? g->off[n] : g->off[layer])
#define WIDTH(layer) ((layer) < 0 ? g->off[n + 1] - g->off[n] : g->off[(layer) + 1] - g->off[layer])
#define BLOCK(layer)                                                                                                 \
    do {                                                                                                             \
        for (int64_t s_ = SLOT0(layer), e_ = s_ + WIDTH(layer); s_ < e_; s_++) blocked[s_] = 1;                      \
    } while (0)
    BLOCK(-1);    /* the network input */
    BLOCK(n - 1); /* the network output */
    for (int j = 0; j < n; j++) {
        const cnn_layer *l = net->layers[j];
        const int in0 = l->ninputs > 0 ? l->inputs[0] : -1;
        if (l->ops == &cnn_conv_layer_ops || l->ops == &cnn_dense_layer_ops) {
            /* readers: their matching inputs go; a depthwise conv's or a frozen layer's stay */
            if (l->frozen || (l->ops == &cnn_conv_layer_ops && ((const cnn_conv_layer *)l)->groups != 1)) BLOCK(in0);
            if (cnn_prune_conv_can_shrink(net, j))
                for (int64_t s = g->off[j]; s < g->off[j + 1]; s++) source[s] = 1;
            else
                BLOCK(j);
            continue;
        }
        int through = 0; /* output channel c is input channel c */
        if (l->ops == &cnn_batchnorm_layer_ops) {
            through = !l->frozen && zero_preserving(l->act);
            if (through && in0 >= 0 && net->layers[in0]->ops == &cnn_conv_layer_ops && g->bn_after[in0] < 0)
                g->bn_after[in0] = j;
        } else if (l->ops == &cnn_act_layer_ops || l->ops == &cnn_add_layer_ops) {
            through = zero_preserving(l->act);
        } else if (pass_through(l)) {
            through = 1;
        }
        if (through) {
            for (int k = 0; k < l->ninputs; k++)
                if (WIDTH(l->inputs[k]) != WIDTH(j)) through = 0;
        }
        if (through) {
            for (int k = 0; k < l->ninputs; k++)
                for (int64_t c = 0; c < WIDTH(j); c++) uf_join(parent, g->off[j] + c, SLOT0(l->inputs[k]) + c);
        } else if (l->ops == &cnn_concat_layer_ops) {
            int64_t at = 0;
            for (int k = 0; k < l->ninputs; k++) {
                const int64_t w = WIDTH(l->inputs[k]);
                for (int64_t c = 0; c < w && at + c < WIDTH(j); c++)
                    uf_join(parent, g->off[j] + at + c, SLOT0(l->inputs[k]) + c);
                at += w;
            }
        } else if (l->ops == &cnn_flatten_layer_ops && l->ninputs == 1 && WIDTH(in0) > 0) {
            const int64_t c = WIDTH(in0); /* channels innermost: feature f is channel f % c */
            for (int64_t f = 0; f < WIDTH(j); f++) uf_join(parent, g->off[j] + f, SLOT0(in0) + f % c);
        } else { /* softmax, an activation with f(0) != 0, anything else: its inputs and output stay */
            for (int k = 0; k < l->ninputs; k++) BLOCK(l->inputs[k]);
            BLOCK(j);
        }
    }
#undef BLOCK
#undef WIDTH
#undef SLOT0
    /* a group is blocked when any slot of it is, and has a source when any slot of it has */
    for (int64_t s = 0; s < total; s++) { /* bit 2 of source[root]: some slot of the group is a source */
        const int64_t r = uf_find(parent, s);
        blocked[r] |= blocked[s];
        if (source[s] & 1) source[r] |= 2;
    }
    /* group ids in the order of their first slot; then the members of each, in slot order */
    g->ngroups = 0;
    for (int64_t s = 0; s < total; s++) {
        const int64_t r = uf_find(parent, s);
        if (blocked[r] || !(source[r] & 2)) {
            g->gid[s] = -1;
        } else if (r == s) {
            g->gid[s] = g->ngroups++;
        } else {
            g->gid[s] = g->gid[r]; /* the root is the smallest slot of its set: numbered already */
        }
    }
    g->first = calloc((size_t)g->ngroups + 1, sizeof *g->first);
    g->members = malloc((size_t)(total ? total : 1) * sizeof *g->members);
    g->family = malloc((size_t)(g->ngroups ? g->ngroups : 1) * sizeof *g->family);
    lparent = malloc(((size_t)n + 1) * sizeof *lparent);
    if (!g->first || !g->members || !g->family || !lparent) goto oom;
    for (int64_t s = 0; s < total; s++)
        if (g->gid[s] >= 0) g->first[g->gid[s] + 1]++;
    for (int64_t k = 0; k < g->ngroups; k++) g->first[k + 1] += g->first[k];
    {
        int64_t *fill = parent; /* the union-find is no longer needed: per group, the next free member index */
        for (int64_t k = 0; k < g->ngroups; k++) fill[k] = g->first[k];
        for (int64_t s = 0; s < total; s++)
            if (g->gid[s] >= 0) g->members[fill[g->gid[s]]++] = s;
    }
    /* families: the convs that share a group, and the groups of those convs */
    for (int i = 0; i <= n; i++) lparent[i] = i;
    for (int64_t k = 0; k < g->ngroups; k++) {
        int64_t lead = -1;
        for (int64_t m = g->first[k]; m < g->first[k + 1]; m++) {
            const int64_t s = g->members[m];
            if (!(source[s] & 1)) continue;
            if (lead < 0) lead = g->layer_of[s];
            else uf_join(lparent, lead, g->layer_of[s]);
        }
        g->family[k] = (int)lead;
    }
    for (int64_t k = 0; k < g->ngroups; k++) g->family[k] = (int)uf_find(lparent, g->family[k]);
    /* dense family numbers, in the order of their first group: lparent[root] becomes -(number + 2) */
    g->nfamilies = 0;
    for (int64_t k = 0; k < g->ngroups; k++) {
        const int r = g->family[k];
        if (lparent[r] >= 0) lparent[r] = -(int64_t)(g->nfamilies++) - 2;
        g->family[k] = (int)(-lparent[r] - 2);
    }
    goto done;
oom:
    st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the channel groups");
    cnn_prune_groups_free(g);
done:
    free(parent);
    free(lparent);
    free(blocked);
    free(source);
    return st;
}
