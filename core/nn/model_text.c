/* The model definition text: one layer a line, positional arguments then key=value options, '#' comments.
 * The reference is README.md ("Model definitions"); in short:
 *
 *     input   H W C
 *     conv    FILTERS KERNEL [ACT] [stride=] [padding=valid|same|N|T,L,B,R] [dilation=] [groups=] [bias=]
 *                                   [init=] [l1=] [l2=] [alpha=]
 *     maxpool SIZE [STRIDE] [padding=...]      avgpool alike; globalavgpool, globalmaxpool
 *     dense   UNITS [ACT] [bias=] [init=] [l1=] [l2=] [alpha=]
 *     batchnorm [ACT] [momentum=0.1] [eps=1e-5]
 *     relu | leaky_relu [ALPHA] | elu [ALPHA] | sigmoid | tanh | gelu | silu | linear (the identity) |
 *         softmax (last only)
 *     dropout RATE
 *     flatten
 *     add X [Y] [ACT]          X + the previous output, or X + Y
 *     concat X Y ...           the named outputs, channels in that order
 *     repeat N [name=IN] ... end
 *     name NAME                names the current output (no layer)
 *
 * An activation word may also follow the options (conv 32 3 stride=2 relu): it cannot be taken for one.
 * Every layer line takes name=NAME (names its output) and from=NAME (its input instead of the previous line's;
 * "input" is the network input). Inside repeat blocks the names defined in the block get the iteration as a
 * suffix (b -> b_1, b_2, ...) and references resolve to the same iteration; repeat's name= names the output that
 * enters each iteration. Every error names the source, the line and what is wrong. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/pipeline.h"
#include "core/error.h"
#include "core/grow.h"
#include "core/io/json.h"
#include "core/nn/net.h"

#define MAX_TOKENS 32
#define MAX_LINE 1024
#define MAX_DIM 65536            /* a bound on every size in a definition: keeps shape arithmetic far from overflow */
/* A bound on what repeat blocks expand to: far above the deepest real network (ResNet-152 is about 500 lines),
 * and low enough that a few bytes of `repeat` cannot make the parser take seconds and hundreds of MB. */
#define MAX_EXPANDED_LINES 10000
#define MAX_REPEAT_DEPTH 8

typedef struct parse_ctx {
    const char *source;
    int line;
    const char *kind;
} parse_ctx;

static cnn_status perr(const parse_ctx *p, const char *fmt, const char *a, const char *b)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a, b);
    return cnn_error(CNN_ERR_FORMAT, "%s:%d: %s: %s", p->source, p->line, p->kind, msg);
}

static int parse_long(const char *s, long lo, long *v)
{
    if (!*s || !isdigit((unsigned char)*s)) return 0;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end || x < lo || x > MAX_DIM) return 0;
    *v = x;
    return 1;
}

static int parse_int(const char *s, long *v) { return parse_long(s, 1, v); }

static int parse_float(const char *s, float lo, float hi, float *v)
{
    char *end;
    errno = 0;
    float x = strtof(s, &end);
    if (end == s || *end || errno || !isfinite(x) || x < lo || x > hi) return 0;
    *v = x;
    return 1;
}

/* "3" -> 3x3, "3x5" -> 3x5 */
static int parse_pair(const char *s, int *h, int *w)
{
    char buf[64];
    if (strlen(s) >= sizeof buf) return 0;
    strcpy(buf, s);
    char *x = strchr(buf, 'x');
    long a, b;
    if (!x) {
        if (!parse_int(buf, &a)) return 0;
        *h = *w = (int)a;
        return 1;
    }
    *x = '\0';
    if (!parse_int(buf, &a) || !parse_int(x + 1, &b)) return 0;
    *h = (int)a;
    *w = (int)b;
    return 1;
}

static const struct {
    const char *name;
    cnn_act act;
    float alpha; /* default: leaky ReLU 0.01 (PyTorch), ELU 1.0 (Clevert et al. 2016) */
} ACTS[] = {
    {"relu", CNN_ACT_RELU, 0.0f},       {"leaky_relu", CNN_ACT_LEAKY_RELU, 0.01f}, {"elu", CNN_ACT_ELU, 1.0f},
    {"sigmoid", CNN_ACT_SIGMOID, 0.0f}, {"tanh", CNN_ACT_TANH, 0.0f},              {"gelu", CNN_ACT_GELU, 0.0f},
    {"silu", CNN_ACT_SILU, 0.0f},       {"linear", CNN_ACT_NONE, 0.0f},            {"none", CNN_ACT_NONE, 0.0f},
};
#define ACT_LIST "relu, leaky_relu, elu, sigmoid, tanh, gelu, silu, linear, softmax"

static int parse_act(const char *s, cnn_act *act, float *alpha, int *softmax)
{
    *softmax = 0;
    if (!strcmp(s, "softmax")) {
        *act = CNN_ACT_NONE;
        *softmax = 1;
        return 1;
    }
    for (size_t i = 0; i < sizeof ACTS / sizeof ACTS[0]; i++)
        if (!strcmp(s, ACTS[i].name)) {
            *act = ACTS[i].act;
            *alpha = ACTS[i].alpha;
            return 1;
        }
    return 0;
}

static int parse_bool(const char *s, int *v)
{
    if (!strcmp(s, "yes") || !strcmp(s, "true") || !strcmp(s, "1")) *v = 1;
    else if (!strcmp(s, "no") || !strcmp(s, "false") || !strcmp(s, "0")) *v = 0;
    else return 0;
    return 1;
}

/* valid | same | N | T,L,B,R */
static int parse_padding(const char *s, int *mode, int pad[4])
{
    if (!strcmp(s, "same")) *mode = CNN_PAD_SAME;
    else if (!strcmp(s, "valid")) *mode = CNN_PAD_VALID;
    else {
        char buf[64];
        if (strlen(s) >= sizeof buf) return 0;
        strcpy(buf, s);
        int n = 0;
        for (char *t = buf, *c; t; t = c ? c + 1 : NULL) {
            c = strchr(t, ',');
            if (c) *c = '\0';
            long v;
            if (n == 4 || !parse_long(t, 0, &v)) return 0;
            pad[n++] = (int)v;
        }
        if (n == 1) pad[1] = pad[2] = pad[3] = pad[0];
        else if (n != 4) return 0;
        *mode = CNN_PAD_EXPLICIT;
    }
    return 1;
}

/* A name may be referenced later: a letter or '_' first, then letters, digits, '_' and '-'; not a keyword. */
static int valid_name(const char *s)
{
    cnn_act act;
    float alpha;
    int softmax;
    if (!isalpha((unsigned char)*s) && *s != '_') return 0;
    for (const char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-') return 0;
    return strcmp(s, "input") && !parse_act(s, &act, &alpha, &softmax);
}

/* The options layer lines may carry; each kind lists those it takes, unknown keys are errors. */
typedef struct layer_opts {
    const char *name, *from;
    int stride_h, stride_w, has_stride;
    int padding, pad[4]; /* padding: a cnn_padding_mode; pad: top, left, bottom, right */
    int dilation_h, dilation_w, groups;
    int bias;
    cnn_init init;
    float l1, l2, alpha, momentum, eps;
    int has_alpha;
} layer_opts;

static cnn_status parse_option(const parse_ctx *p, char *tok, layer_opts *o, const char *allowed)
{
    char *eq = strchr(tok, '=');
    *eq = '\0';
    const char *key = tok, *val = eq + 1;
    char pattern[40];
    snprintf(pattern, sizeof pattern, ",%s,", key);
    if (strlen(key) > 20 || !strstr(allowed, pattern)) return perr(p, "unknown option '%s' (this layer takes: %s)", key, allowed);
    if (!strcmp(key, "name")) {
        size_t len = strlen(val);
        if (len == 0 || len >= CNN_NAME_MAX - 24) return perr(p, "name '%s' must have 1 to %s characters", val, "39");
        if (!valid_name(val))
            return perr(p, "name '%s' must start with a letter or '_', hold letters, digits, '_' and '-' only, and "
                           "not be a keyword (input, an activation)%s", val, "");
        o->name = val;
    } else if (!strcmp(key, "from")) {
        o->from = val;
    } else if (!strcmp(key, "stride")) {
        if (!parse_pair(val, &o->stride_h, &o->stride_w)) return perr(p, "stride must be N or HxW with positive integers, got '%s'%s", val, "");
        o->has_stride = 1;
    } else if (!strcmp(key, "dilation")) {
        if (!parse_pair(val, &o->dilation_h, &o->dilation_w)) return perr(p, "dilation must be N or HxW with positive integers, got '%s'%s", val, "");
    } else if (!strcmp(key, "groups")) {
        long g;
        if (!parse_int(val, &g)) return perr(p, "groups must be a positive integer, got '%s'%s", val, "");
        o->groups = (int)g;
    } else if (!strcmp(key, "padding")) {
        if (!parse_padding(val, &o->padding, o->pad))
            return perr(p, "padding must be 'valid', 'same', N or T,L,B,R (integers >= 0), got '%s'%s", val, "");
    } else if (!strcmp(key, "bias")) {
        if (!parse_bool(val, &o->bias)) return perr(p, "bias must be yes or no, got '%s'%s", val, "");
    } else if (!strcmp(key, "init")) {
        if (!strcmp(val, "he")) o->init = CNN_INIT_HE_NORMAL;
        else if (!strcmp(val, "glorot")) o->init = CNN_INIT_GLOROT_UNIFORM;
        else return perr(p, "init must be 'he' or 'glorot', got '%s'%s", val, "");
    } else if (!strcmp(key, "l1") || !strcmp(key, "l2")) {
        float v;
        if (!parse_float(val, 0.0f, 1e3f, &v)) return perr(p, "%s must be a number >= 0, got '%s'", key, val);
        if (key[1] == '1') o->l1 = v;
        else o->l2 = v;
    } else if (!strcmp(key, "alpha")) {
        if (!parse_float(val, 0.0f, 1e3f, &o->alpha)) return perr(p, "alpha must be a number >= 0, got '%s'%s", val, "");
        o->has_alpha = 1;
    } else if (!strcmp(key, "momentum")) {
        if (!parse_float(val, 0.0f, 1.0f, &o->momentum)) return perr(p, "momentum must be in [0, 1], got '%s'%s", val, "");
    } else if (!strcmp(key, "eps")) {
        if (!parse_float(val, 1e-12f, 1.0f, &o->eps) ) return perr(p, "eps must be in [1e-12, 1], got '%s'%s", val, "");
    }
    return CNN_OK;
}

/* ---- the parser's state: layers so far and the names that refer to outputs ------------------------------- */

typedef struct sym {
    char name[CNN_NAME_MAX];
    int index; /* layer index; -1: the network input */
    int line;
    int alias; /* a 'name' line or repeat's name=: may be rebound by a later alias (names stay unique) */
} sym;

typedef struct parser {
    cnn_net *net;
    parse_ctx p;
    int have_input, softmax_line;
    int repeat_line; /* of the innermost repeat being expanded, for the error when expansion grows too large */
    size_t cap; /* of net->layers */
    sym *syms;
    int nsyms;
    size_t symcap;
} parser;

static const sym *find_sym(const parser *ps, const char *name)
{
    for (int i = ps->nsyms - 1; i >= 0; i--)
        if (!strcmp(ps->syms[i].name, name)) return &ps->syms[i];
    return NULL;
}

static cnn_status add_sym(parser *ps, const char *name, int index, int alias)
{
    const sym *old = find_sym(ps, name);
    if (old && !(alias && old->alias)) {
        char line[16];
        snprintf(line, sizeof line, "%d", old->line);
        return perr(&ps->p, "layer name '%s' is already used on line %s", name, line);
    }
    cnn_status st = cnn_array_grow(&ps->syms, &ps->symcap, (size_t)ps->nsyms + 1, sizeof *ps->syms, 32);
    if (st != CNN_OK) return st;
    sym *s = &ps->syms[ps->nsyms];
    if (snprintf(s->name, sizeof s->name, "%s", name) >= (int)sizeof s->name)
        return perr(&ps->p, "name '%s' is too long (repeat suffixes included)%s", name, "");
    s->index = index;
    s->line = ps->p.line;
    s->alias = alias;
    ps->nsyms++;
    return CNN_OK;
}

static cnn_status resolve(const parser *ps, const char *name, int *index)
{
    if (!strcmp(name, "input")) {
        *index = -1;
        return CNN_OK;
    }
    const sym *s = find_sym(ps, name);
    if (!s) return perr(&ps->p, "no layer named '%s' before this line (name outputs with name=NAME)%s", name, "");
    *index = s->index;
    return CNN_OK;
}

/* Names the layer (Keras style: conv2d, conv2d_1, ... unless name= says otherwise), sets its default input (the
 * previous line, or from=) and appends it; frees it on failure. */
static cnn_status add_layer(parser *ps, cnn_layer *l, const layer_opts *o)
{
    cnn_net *net = ps->net;
    cnn_status st = CNN_OK;
    l->line = ps->p.line;
    l->weight_init = o->init;
    if (!l->ninputs) {
        l->ninputs = 1;
        l->inputs[0] = net->nlayers - 1;
        if (o->from) CNN_TRY(resolve(ps, o->from, &l->inputs[0]));
    }
    if (o->name) {
        snprintf(l->name, sizeof l->name, "%s", o->name);
    } else {
        int count = 0;
        for (int i = 0; i < net->nlayers; i++)
            if (net->layers[i]->ops == l->ops) count++;
        if (count) snprintf(l->name, sizeof l->name, "%s_%d", l->ops->name_prefix, count);
        else snprintf(l->name, sizeof l->name, "%s", l->ops->name_prefix);
    }
    CNN_TRY(add_sym(ps, l->name, net->nlayers, 0));
    CNN_TRY(cnn_array_grow(&net->layers, &ps->cap, (size_t)net->nlayers + 1, sizeof *net->layers, 16));
    net->layers[net->nlayers++] = l;
    return CNN_OK;
fail:
    free(l);
    return st;
}

static void *new_layer(size_t size, const cnn_layer_ops *ops)
{
    cnn_layer *l = calloc(1, size);
    if (l) l->ops = ops;
    return l;
}

#define NEW_LAYER(type, ops) ((type *)new_layer(sizeof(type), ops))
#define NO_MEMORY() cnn_error(CNN_ERR_NO_MEMORY, "out of host memory")

/* ---- layer kinds: one row each ---------------------------------------------------------------------------------

 * A row names the keyword, the key=value options it accepts, and its constructor, which reads the positional
 * arguments (the options are parsed before it runs) and returns a new layer; the activation it sets (act, alpha)
 * and softmax apply after it. */
typedef struct layer_args {
    parser *ps;
    parse_ctx *p;
    const char *kind;
    char **pos;
    int npos;
    const layer_opts *o;
    cnn_act act;
    float alpha;
    int softmax;
} layer_args;

typedef cnn_status (*layer_make)(layer_args *a, cnn_layer **out);

/* pos[i] as the layer's activation */
static cnn_status read_act(layer_args *a, int i)
{
    if (!parse_act(a->pos[i], &a->act, &a->alpha, &a->softmax))
        return perr(a->p, "unknown activation '%s' (known: %s)", a->pos[i], ACT_LIST);
    return CNN_OK;
}

static cnn_status softmax_not_here(layer_args *a)
{
    return a->softmax ? perr(a->p, "softmax belongs on the last dense layer%s%s", "", "") : CNN_OK;
}

static cnn_status make_conv(layer_args *a, cnn_layer **out)
{
    parse_ctx *p = a->p;
    char **pos = a->pos;
    const layer_opts *o = a->o;
    cnn_status st;
    if (a->npos < 2 || a->npos > 3) return perr(p, "expected 'conv FILTERS KERNEL [ACTIVATION] [options]'%s%s", "", "");
    long filters;
    int kh, kw;
    if (!parse_int(pos[0], &filters)) return perr(p, "filters: '%s' is not an integer from 1 to %s", pos[0], "65536");
    if (!parse_pair(pos[1], &kh, &kw)) return perr(p, "kernel: '%s' is not N or HxW with positive integers%s", pos[1], "");
    if (a->npos == 3 && (st = read_act(a, 2)) != CNN_OK) return st;
    if ((st = softmax_not_here(a)) != CNN_OK) return st;
    cnn_conv_layer *c = NEW_LAYER(cnn_conv_layer, &cnn_conv_layer_ops);
    if (!c) return NO_MEMORY();
    c->filters = (int)filters;
    c->kernel_h = kh;
    c->kernel_w = kw;
    c->stride_h = o->stride_h;
    c->stride_w = o->stride_w;
    c->dilation_h = o->dilation_h;
    c->dilation_w = o->dilation_w;
    c->groups = o->groups;
    c->same_padding = o->padding;
    c->pad_top = o->pad[0];
    c->pad_left = o->pad[1];
    c->pad_bottom = o->pad[2];
    c->pad_right = o->pad[3];
    c->use_bias = o->bias;
    *out = &c->base;
    return CNN_OK;
}

static cnn_status make_pool(layer_args *a, cnn_layer **out)
{
    parse_ctx *p = a->p;
    char **pos = a->pos;
    const layer_opts *o = a->o;
    int max = a->kind[0] == 'm';
    if (a->npos < 1 || a->npos > 2) return perr(p, "expected '%s SIZE [STRIDE] [options]'%s", a->kind, "");
    int kh, kw, sh, sw;
    if (!parse_pair(pos[0], &kh, &kw)) return perr(p, "size: '%s' is not N or HxW with positive integers%s", pos[0], "");
    sh = kh;
    sw = kw;
    if (a->npos == 2 && !parse_pair(pos[1], &sh, &sw))
        return perr(p, "stride: '%s' is not N or HxW with positive integers%s", pos[1], "");
    if (o->has_stride) {
        if (a->npos == 2) return perr(p, "the stride is given twice%s%s", "", "");
        sh = o->stride_h;
        sw = o->stride_w;
    }
    cnn_pool_layer *pl = NEW_LAYER(cnn_pool_layer, max ? &cnn_maxpool_layer_ops : &cnn_avgpool_layer_ops);
    if (!pl) return NO_MEMORY();
    pl->mode = max ? CNN_POOL_MAX : CNN_POOL_AVG;
    pl->kernel_h = kh;
    pl->kernel_w = kw;
    pl->stride_h = sh;
    pl->stride_w = sw;
    pl->same_padding = o->padding;
    pl->pad_top = o->pad[0];
    pl->pad_left = o->pad[1];
    pl->pad_bottom = o->pad[2];
    pl->pad_right = o->pad[3];
    *out = &pl->base;
    return CNN_OK;
}

static cnn_status make_global_pool(layer_args *a, cnn_layer **out)
{
    int max = a->kind[6] == 'm';
    if (a->npos) return perr(a->p, "%s takes no arguments, got '%s'", a->kind, a->pos[0]);
    cnn_pool_layer *pl = NEW_LAYER(cnn_pool_layer, max ? &cnn_globalmaxpool_layer_ops : &cnn_globalavgpool_layer_ops);
    if (!pl) return NO_MEMORY();
    pl->mode = max ? CNN_POOL_MAX : CNN_POOL_AVG;
    pl->global = 1;
    *out = &pl->base;
    return CNN_OK;
}

/* a layer of no arguments and no fields of its own: flatten, softmax */
static cnn_status make_plain(layer_args *a, cnn_layer **out)
{
    int softmax = !strcmp(a->kind, "softmax");
    if (a->npos) return perr(a->p, "%s takes no arguments, got '%s'", a->kind, a->pos[0]);
    *out = NEW_LAYER(cnn_layer, softmax ? &cnn_softmax_layer_ops : &cnn_flatten_layer_ops);
    if (!*out) return NO_MEMORY();
    a->softmax = softmax;
    return CNN_OK;
}

static cnn_status make_dense(layer_args *a, cnn_layer **out)
{
    parse_ctx *p = a->p;
    cnn_status st;
    if (a->npos < 1 || a->npos > 2) return perr(p, "expected 'dense UNITS [ACTIVATION] [options]'%s%s", "", "");
    long units;
    if (!parse_int(a->pos[0], &units)) return perr(p, "units: '%s' is not an integer from 1 to %s", a->pos[0], "65536");
    if (a->npos == 2 && (st = read_act(a, 1)) != CNN_OK) return st;
    cnn_dense_layer *d = NEW_LAYER(cnn_dense_layer, &cnn_dense_layer_ops);
    if (!d) return NO_MEMORY();
    d->units = (int)units;
    d->use_bias = a->o->bias;
    *out = &d->base;
    return CNN_OK;
}

static cnn_status make_batchnorm(layer_args *a, cnn_layer **out)
{
    cnn_status st;
    if (a->npos > 1) return perr(a->p, "expected 'batchnorm [ACTIVATION] [options]'%s%s", "", "");
    if (a->npos == 1 && (st = read_act(a, 0)) != CNN_OK) return st;
    if ((st = softmax_not_here(a)) != CNN_OK) return st;
    cnn_batchnorm_layer *bn = NEW_LAYER(cnn_batchnorm_layer, &cnn_batchnorm_layer_ops);
    if (!bn) return NO_MEMORY();
    bn->momentum = a->o->momentum;
    bn->eps = a->o->eps;
    *out = &bn->base;
    return CNN_OK;
}

/* an activation as a layer of its own (the kind is its name; linear is the identity) */
static cnn_status make_act(layer_args *a, cnn_layer **out)
{
    int takes_alpha = a->act == CNN_ACT_LEAKY_RELU || a->act == CNN_ACT_ELU;
    if (a->npos > (takes_alpha ? 1 : 0))
        return perr(a->p, takes_alpha ? "expected '%s [ALPHA] [options]'%s" : "expected '%s [options]'%s", a->kind, "");
    if (a->npos && !parse_float(a->pos[0], 0.0f, 1e3f, &a->alpha))
        return perr(a->p, "alpha: '%s' is not a number >= 0%s", a->pos[0], "");
    *out = NEW_LAYER(cnn_layer, &cnn_act_layer_ops);
    return *out ? CNN_OK : NO_MEMORY();
}

static cnn_status make_dropout(layer_args *a, cnn_layer **out)
{
    float rate;
    if (a->npos != 1) return perr(a->p, "expected 'dropout RATE' (the fraction dropped, in [0, 1))%s%s", "", "");
    if (!parse_float(a->pos[0], 0.0f, 0.999999f, &rate))
        return perr(a->p, "rate: '%s' is not a number in [0, 1)%s", a->pos[0], "");
    cnn_dropout_layer *d = NEW_LAYER(cnn_dropout_layer, &cnn_dropout_layer_ops);
    if (!d) return NO_MEMORY();
    d->rate = rate;
    *out = &d->base;
    return CNN_OK;
}

/* add and concat: their inputs are named outputs (add NAME alone adds it to the previous line's) */
static cnn_status make_merge(layer_args *a, cnn_layer **out)
{
    parser *ps = a->ps;
    int is_add = a->kind[0] == 'a', nnames = a->npos;
    cnn_status st;
    if (is_add && a->npos && parse_act(a->pos[a->npos - 1], &a->act, &a->alpha, &a->softmax)) {
        if ((st = softmax_not_here(a)) != CNN_OK) return st;
        nnames--;
    }
    if (is_add ? (nnames < 1 || nnames > 2) : (nnames < 2 || nnames > CNN_LAYER_MAX_INPUTS))
        return perr(a->p, is_add ? "expected 'add NAME [NAME] [ACTIVATION]': one name adds that output to the "
                                   "previous line's%s%s"
                                 : "expected 'concat NAME NAME ...' (2 to 16 named outputs)%s%s", "", "");
    cnn_layer *layer = NEW_LAYER(cnn_layer, is_add ? &cnn_add_layer_ops : &cnn_concat_layer_ops);
    if (!layer) return NO_MEMORY();
    if (is_add && nnames == 1) layer->inputs[layer->ninputs++] = ps->net->nlayers - 1;
    for (int i = 0; i < nnames; i++)
        if ((st = resolve(ps, a->pos[i], &layer->inputs[layer->ninputs++])) != CNN_OK) {
            free(layer);
            return st;
        }
    *out = layer;
    return CNN_OK;
}

static const struct layer_kind {
    const char *kind;    /* the keyword; NULL: any activation's name */
    const char *options; /* the key=value options it accepts, ",a,b," */
    layer_make make;
} layer_kinds[] = {
    {"conv", ",stride,padding,dilation,groups,bias,init,l1,l2,alpha,name,from,", make_conv},
    {"maxpool", ",stride,padding,name,from,", make_pool},
    {"avgpool", ",stride,padding,name,from,", make_pool},
    {"globalavgpool", ",name,from,", make_global_pool},
    {"globalmaxpool", ",name,from,", make_global_pool},
    {"flatten", ",name,from,", make_plain},
    {"dense", ",bias,init,l1,l2,alpha,name,from,", make_dense},
    {"batchnorm", ",momentum,eps,alpha,name,from,", make_batchnorm},
    {"softmax", ",name,from,", make_plain},
    {NULL, ",name,from,", make_act},
    {"dropout", ",name,from,", make_dropout},
    {"add", ",alpha,name,", make_merge},
    {"concat", ",name,", make_merge},
};

/* The `input` line: the network's per-sample shape. */
static cnn_status parse_input(parser *ps, char **pos, int npos, int nopts)
{
    parse_ctx *p = &ps->p;
    if (ps->have_input) return perr(p, "the input is already defined%s%s", "", "");
    if (nopts) return perr(p, "input takes no options%s%s", "", "");
    if (npos != 3) return perr(p, "expected 'input HEIGHT WIDTH CHANNELS'%s%s", "", "");
    long d[3];
    for (int i = 0; i < 3; i++)
        if (!parse_int(pos[i], &d[i])) return perr(p, "'%s' is not a size (an integer from 1 to %s)", pos[i], "65536");
    ps->net->input = (cnn_shape){3, {d[0], d[1], d[2]}};
    ps->have_input = 1;
    return CNN_OK;
}

static cnn_status parse_line(parser *ps, char **tok, int ntok)
{
    cnn_net *net = ps->net;
    parse_ctx *p = &ps->p;
    const char *kind = tok[0];
    p->kind = kind;
    if (!strcmp(kind, "name")) { /* names the current output without a layer */
        if (!ps->have_input) return perr(p, "the first line must be 'input HEIGHT WIDTH CHANNELS'%s%s", "", "");
        if (ntok != 2 || !valid_name(tok[1]))
            return perr(p, "expected 'name NAME' (a letter or '_' first, then letters, digits, '_', '-'; not a "
                           "keyword)%s%s", "", "");
        return add_sym(ps, tok[1], net->nlayers - 1, 1);
    }
    if (!strcmp(kind, "qat")) { /* quantization-aware training (core/nn/qat.c): fake quantization to int8 */
        if (ntok != 1) return perr(p, "expected 'qat' alone on its line%s%s", "", "");
        net->qat = 1;
        return CNN_OK;
    }
    if (!strcmp(kind, "augment")) { /* training section: cnn train's default augmentation (cnn/pipeline.h) */
        char text[MAX_LINE];
        size_t len = 0;
        text[0] = '\0';
        for (int i = 1; i < ntok; i++) {
            int n = snprintf(text + len, sizeof text - len, "%s%s", i > 1 ? "," : "", tok[i]);
            if (n < 0 || (size_t)n >= sizeof text - len) return perr(p, "the list is longer than %s characters%s", "1023", "");
            len += (size_t)n;
        }
        cnn_augment a;
        if (ntok < 2) return perr(p, "expected 'augment LIST', e.g. augment flip=h,shift=0.1%s%s", "", "");
        if (cnn_augment_parse(text, &a) != CNN_OK) return perr(p, "%s%s", cnn_last_error(), "");
        return CNN_OK;
    }
    /* split positional arguments from key=value options */
    char *pos[MAX_TOKENS];
    int npos = 0;
    char *opts[MAX_TOKENS];
    int nopts = 0;
    for (int i = 1; i < ntok; i++) {
        cnn_act act_word;
        float alpha_word;
        int softmax_word;
        if (strchr(tok[i], '=')) opts[nopts++] = tok[i];
        else if (nopts && !parse_act(tok[i], &act_word, &alpha_word, &softmax_word))
            return perr(p, "positional argument '%s' after options: put options last (only an activation may follow "
                           "them)%s", tok[i], "");
        else pos[npos++] = tok[i];
    }
    if (!strcmp(kind, "input")) return parse_input(ps, pos, npos, nopts);
    if (!ps->have_input) return perr(p, "the first line must be 'input HEIGHT WIDTH CHANNELS'%s%s", "", "");
    if (ps->softmax_line) {
        char l[16];
        snprintf(l, sizeof l, "%d", ps->softmax_line);
        return perr(p, "softmax (line %s) must be on the last layer%s", l, "");
    }

    layer_opts o = {.stride_h = 1, .stride_w = 1, .dilation_h = 1, .dilation_w = 1, .groups = 1, .bias = 1,
                    .init = CNN_INIT_AUTO, .momentum = 0.1f /* PyTorch's BatchNorm2d */, .eps = 1e-5f};
    layer_args a = {.ps = ps, .p = p, .kind = kind, .pos = pos, .npos = npos, .o = &o};
    const struct layer_kind *row = NULL;
    for (size_t i = 0; i < sizeof layer_kinds / sizeof *layer_kinds && !row; i++)
        if (layer_kinds[i].kind ? !strcmp(kind, layer_kinds[i].kind)
                                : parse_act(kind, &a.act, &a.alpha, &a.softmax)) /* softmax matched its row */
            row = &layer_kinds[i];
    if (!row)
        return perr(p, "unknown layer type '%s' (known: input, conv, maxpool, avgpool, globalavgpool, globalmaxpool, "
                       "flatten, dense, batchnorm, dropout, add, concat, repeat, relu, leaky_relu, elu, sigmoid, tanh, "
                       "gelu, silu, linear, softmax)%s", kind, "");
    cnn_status st;
    for (int i = 0; i < nopts; i++)
        if ((st = parse_option(p, opts[i], &o, row->options)) != CNN_OK) return st;
    cnn_layer *layer = NULL;
    if ((st = row->make(&a, &layer)) != CNN_OK) return st;
    layer->act = a.act;
    layer->act_alpha = o.has_alpha ? o.alpha : a.alpha;
    layer->l1 = o.l1;
    layer->l2 = o.l2;
    if (a.softmax) ps->softmax_line = p->line;
    return add_layer(ps, layer, &o);
}

/* ---- lines and repeat blocks ---------------------------------------------------------------------------------- */

typedef struct src_line {
    int line;
    char *text; /* the words, separated by single spaces; shorter than MAX_LINE */
    int alias;  /* made by repeat's name=: text is the name of the output entering this iteration (no user text
                 * can make such a line) */
} src_line;

typedef struct line_list {
    src_line *v;
    int n;
    size_t cap;
} line_list;

static void free_lines(line_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i].text);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

/* Appends a copy of text (len bytes, shorter than MAX_LINE). */
static cnn_status push_line(line_list *l, int line, const char *text, size_t len, int alias)
{
    char *copy = malloc(len + 1);
    if (!copy) return NO_MEMORY();
    memcpy(copy, text, len);
    copy[len] = '\0';
    cnn_status st = cnn_array_grow(&l->v, &l->cap, (size_t)l->n + 1, sizeof *l->v, 64);
    if (st != CNN_OK) {
        free(copy);
        return st;
    }
    l->v[l->n++] = (src_line){line, copy, alias};
    return CNN_OK;
}

/* Splits buf in place into words separated by any of `seps` (at most MAX_TOKENS); returns the count, -1 when
 * there are more. Reentrant, unlike strtok: models may be parsed on several threads at once (a server loads a new
 * version while serving). */
static int split_words(char *buf, const char *seps, char **tok)
{
    int n = 0;
    char *s = buf;
    for (;;) {
        s += strspn(s, seps);
        if (!*s) return n;
        if (n == MAX_TOKENS) return -1;
        tok[n++] = s;
        s += strcspn(s, seps);
        if (*s) *s++ = '\0';
    }
}

/* Copies a stored line (shorter than MAX_LINE by construction) into buf[MAX_LINE] and splits it into words. */
static int line_words(const src_line *l, char *buf, char **tok)
{
    snprintf(buf, MAX_LINE, "%s", l->text);
    return split_words(buf, " ", tok);
}

typedef struct name_set {
    char (*v)[CNN_NAME_MAX];
    int n;
} name_set;

static int in_set(const name_set *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], name)) return 1;
    return 0;
}

/* The value of a name= option in a line of text, or NULL. */
static const char *name_option(char **tok, int ntok)
{
    for (int i = 1; i < ntok; i++)
        if (!strncmp(tok[i], "name=", 5)) return tok[i] + 5;
    return NULL;
}

static cnn_status expand(parser *ps, const src_line *lines, int n, line_list *out, int depth);

/* Expands `repeat N [name=IN]` at lines[0], whose block ends at lines[end]. Every expanded line stays shorter
 * than MAX_LINE (the iteration suffixes included) or the definition is refused. */
static cnn_status expand_repeat(parser *ps, const src_line *lines, int end, line_list *out, int depth)
{
    cnn_status st = CNN_OK;
    parse_ctx *p = &ps->p;
    char buf[MAX_LINE], *tok[MAX_TOKENS];
    line_list body = {0};
    name_set set = {calloc((size_t)end + 1, CNN_NAME_MAX), 0};
    if (!set.v) return NO_MEMORY();
    int ntok = line_words(&lines[0], buf, tok);
    long count;
    const char *in_name = NULL;
    if (ntok < 2 || !parse_int(tok[1], &count) || (ntok == 3 && strncmp(tok[2], "name=", 5)) || ntok > 3) {
        st = perr(p, "expected 'repeat COUNT [name=NAME]' (COUNT from 1 to %s), then the block, then 'end'%s", "65536", "");
        goto fail;
    }
    if (ntok == 3) {
        in_name = tok[2] + 5;
        if (!valid_name(in_name) || strlen(in_name) >= CNN_NAME_MAX) {
            st = perr(p, "name '%s' must start with a letter or '_' and hold letters, digits, '_' and '-' only%s",
                      in_name, "");
            goto fail;
        }
        snprintf(set.v[set.n++], CNN_NAME_MAX, "%s", in_name);
    }
    /* nothing to repeat: its iterations would be work without a line of output, which the cap on lines does not
     * bound (nested, 65536^8 of them); with a body, every iteration adds a line */
    if (end <= 1 && !in_name) {
        st = perr(p, "this 'repeat' has nothing between it and its 'end'%s%s", "", "");
        goto fail;
    }
    if (depth >= MAX_REPEAT_DEPTH) {
        st = perr(p, "repeat blocks nest deeper than %s%s", "8", "");
        goto fail;
    }
    /* the names the block defines, nested blocks included */
    for (int i = 1; i < end; i++) {
        char b2[MAX_LINE], *t2[MAX_TOKENS];
        int n2 = line_words(&lines[i], b2, t2);
        const char *nm = n2 == 2 && !strcmp(t2[0], "name") ? t2[1] : name_option(t2, n2);
        if (nm && !in_set(&set, nm) && strlen(nm) < CNN_NAME_MAX) snprintf(set.v[set.n++], CNN_NAME_MAX, "%s", nm);
    }
    for (long it = 1; it <= count; it++) {
        char suffix[24]; /* "_" and any long */
        snprintf(suffix, sizeof suffix, "_%ld", it);
        if (in_name) {
            char alias[CNN_NAME_MAX + sizeof suffix];
            int n = snprintf(alias, sizeof alias, "%s%s", in_name, suffix);
            CNN_TRY(push_line(&body, lines[0].line, alias, (size_t)n, 1));
        }
        for (int i = 1; i < end; i++) {
            char b2[MAX_LINE], *t2[MAX_TOKENS], t[MAX_LINE];
            int n2 = line_words(&lines[i], b2, t2);
            size_t len = 0;
            for (int w = 0; w < n2; w++) {
                char *eq = strchr(t2[w], '=');
                const char *val = t2[w];
                int key_len = 0;
                if (eq && (!strncmp(t2[w], "name=", 5) || !strncmp(t2[w], "from=", 5))) {
                    val = eq + 1;
                    key_len = 5;
                }
                int rename = (!eq || key_len) && w > 0 && in_set(&set, val);
                int n = snprintf(t + len, sizeof t - len, "%s%.*s%s%s", w ? " " : "", key_len, t2[w], val,
                                 rename ? suffix : "");
                if (n < 0 || (size_t)n >= sizeof t - len) {
                    p->line = lines[i].line;
                    p->kind = t2[0];
                    st = perr(p, "longer than %s characters once repeat adds its iteration suffixes%s", "1023", "");
                    goto fail;
                }
                len += (size_t)n;
            }
            CNN_TRY(push_line(&body, lines[i].line, t, len, lines[i].alias));
        }
        if (out->n + body.n > MAX_EXPANDED_LINES) {
            p->line = lines[0].line;
            p->kind = "repeat";
            st = perr(p, "the repeat blocks expand to more than %s lines%s", "10000", "");
            goto fail;
        }
        int outer = ps->repeat_line;
        ps->repeat_line = lines[0].line;
        CNN_TRY(expand(ps, body.v, body.n, out, depth + 1));
        ps->repeat_line = outer;
        free_lines(&body);
    }
fail:
    free_lines(&body);
    free(set.v);
    return st;
}

/* Appends lines[0..n) to out with every repeat block unrolled. */
static cnn_status expand(parser *ps, const src_line *lines, int n, line_list *out, int depth)
{
    cnn_status st = CNN_OK;
    for (int i = 0; i < n; i++) {
        ps->p.line = lines[i].line;
        const char *t = lines[i].text;
        int is_repeat = !lines[i].alias && !strncmp(t, "repeat", 6) && (t[6] == ' ' || !t[6]);
        int is_end = !lines[i].alias && !strcmp(t, "end");
        ps->p.kind = is_repeat ? "repeat" : "end";
        if (is_end) return perr(&ps->p, "'end' without a 'repeat' before it%s%s", "", "");
        if (!is_repeat || lines[i].alias) {
            if (out->n >= MAX_EXPANDED_LINES) {
                ps->p.kind = "repeat";
                ps->p.line = ps->repeat_line;
                return perr(&ps->p, "the repeat blocks expand to more than %s lines%s", "10000", "");
            }
            CNN_TRY(push_line(out, lines[i].line, t, strlen(t), lines[i].alias));
            continue;
        }
        int nest = 0, end = -1;
        for (int j = i + 1; j < n && end < 0; j++) {
            const char *u = lines[j].text;
            if (lines[j].alias) continue;
            if (!strncmp(u, "repeat", 6) && (u[6] == ' ' || !u[6])) nest++;
            else if (!strcmp(u, "end") && nest-- == 0) end = j;
        }
        if (end < 0) return perr(&ps->p, "this 'repeat' has no 'end'%s%s", "", "");
        CNN_TRY(expand_repeat(ps, lines + i, end - i, out, depth));
        i = end;
    }
fail:
    return st;
}

/* cnn_model_parse, and with `expanded` the unrolled definition (cnn_model_expand). */
static cnn_status parse_text(cnn_net *net, const char *text, const char *source, cnn_strbuf *expanded,
                             int *layer_line);

cnn_status cnn_model_parse(cnn_net *net, const char *text, const char *source)
{
    return parse_text(net, text, source, NULL, NULL);
}

cnn_status cnn_model_expand(const char *text, const char *source, char **expanded, int **layer_line, int *nlayers)
{
    cnn_net scratch;
    memset(&scratch, 0, sizeof scratch);
    cnn_strbuf b;
    cnn_strbuf_init(&b);
    *expanded = NULL;
    *layer_line = NULL;
    *nlayers = 0;
    /* a layer per line at most: MAX_EXPANDED_LINES bounds both */
    int *map = malloc((size_t)(MAX_EXPANDED_LINES + 1) * sizeof *map);
    cnn_status st = map ? parse_text(&scratch, text, source, &b, map) : NO_MEMORY();
    if (st == CNN_OK && b.status != CNN_OK) st = NO_MEMORY();
    if (st == CNN_OK) {
        *expanded = b.data;
        b.data = NULL;
        *layer_line = map;
        *nlayers = scratch.nlayers;
        map = NULL;
    }
    for (int i = 0; i < scratch.nlayers; i++) cnn_layer_destroy(scratch.layers[i]);
    free(scratch.layers);
    free(map);
    cnn_strbuf_free(&b);
    return st;
}

static cnn_status parse_text(cnn_net *net, const char *text, const char *source, cnn_strbuf *expanded,
                             int *layer_line)
{
    cnn_status st = CNN_OK;
    parser ps = {.net = net, .p = {.source = source, .line = 0, .kind = ""}};
    parse_ctx *p = &ps.p;
    line_list raw = {0}, lines = {0};
    const char *s = text;
    while (*s) {
        p->line++;
        const char *eol = strchr(s, '\n');
        size_t len = eol ? (size_t)(eol - s) : strlen(s);
        if (len >= MAX_LINE) {
            p->kind = "line";
            st = perr(p, "longer than %s characters%s", "1023", "");
            goto fail;
        }
        char buf[MAX_LINE], norm[MAX_LINE], *tok[MAX_TOKENS];
        memcpy(buf, s, len);
        buf[len] = '\0';
        s += len + (eol ? 1 : 0);
        char *hash = strchr(buf, '#');
        if (hash) *hash = '\0';
        int ntok = split_words(buf, " \t\r\f\v", tok);
        if (ntok < 0) {
            p->kind = "line";
            st = perr(p, "more than %s words on one line%s", "32", "");
            goto fail;
        }
        if (!ntok) continue;
        size_t nlen = 0; /* the words joined by single spaces: never longer than the line */
        for (int i = 0; i < ntok; i++)
            nlen += (size_t)snprintf(norm + nlen, sizeof norm - nlen, "%s%s", i ? " " : "", tok[i]);
        CNN_TRY(push_line(&raw, p->line, norm, nlen, 0));
    }
    CNN_TRY(expand(&ps, raw.v, raw.n, &lines, 0));
    for (int i = 0; i < lines.n; i++) {
        char buf[MAX_LINE], *tok[MAX_TOKENS];
        p->line = lines.v[i].line;
        if (lines.v[i].alias) { /* repeat's name=: the output entering this iteration */
            p->kind = "repeat";
            CNN_TRY(add_sym(&ps, lines.v[i].text, ps.net->nlayers - 1, 1));
            if (expanded) cnn_strbuf_appendf(expanded, "name %s\n", lines.v[i].text); /* what a 'name' line does */
            continue;
        }
        if (expanded) {
            cnn_strbuf_appendf(expanded, "%s\n", lines.v[i].text);
        }
        const int before = ps.net->nlayers;
        int ntok = line_words(&lines.v[i], buf, tok);
        if (ntok <= 0) {
            p->kind = "line";
            st = perr(p, "more than %s words on one line%s", "32", "");
            goto fail;
        }
        CNN_TRY(parse_line(&ps, tok, ntok));
        if (layer_line && ps.net->nlayers > before) layer_line[ps.net->nlayers - 1] = i;
    }
    if (!ps.have_input) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: no 'input HEIGHT WIDTH CHANNELS' line", source);
        goto fail;
    }
    if (net->nlayers == 0) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: the model has no layers after 'input'", source);
        goto fail;
    }
    net->output_softmax = ps.softmax_line != 0;
fail:
    free_lines(&raw);
    free_lines(&lines);
    free(ps.syms);
    return st;
}
