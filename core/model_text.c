/* The model definition text: one layer a line, positional arguments then key=value options, '#' comments.
 *
 *     input   H W C
 *     conv    FILTERS KERNEL [ACT] [stride=S] [padding=valid|same] [bias=yes|no] [init=he|glorot] [name=NAME]
 *     maxpool SIZE [STRIDE] [padding=valid|same] [name=NAME]          (avgpool alike)
 *     flatten [name=NAME]
 *     dense   UNITS [ACT] [bias=yes|no] [init=he|glorot] [name=NAME]
 *
 * KERNEL, SIZE and STRIDE are N or HxW. ACT is relu, linear or softmax (softmax: last layer only). Every error
 * names the source, the line and what is wrong. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/net.h"

#define MAX_TOKENS 16
#define MAX_LINE 1024
#define MAX_DIM 65536 /* a bound on every size in a definition: keeps shape arithmetic far from overflow */

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

static int parse_int(const char *s, long *v)
{
    if (!*s || !isdigit((unsigned char)*s)) return 0;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end || x < 1 || x > MAX_DIM) return 0;
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

static int parse_act(const char *s, cnn_act *act, int *softmax)
{
    *softmax = 0;
    if (!strcmp(s, "relu")) *act = CNN_ACT_RELU;
    else if (!strcmp(s, "linear") || !strcmp(s, "none")) *act = CNN_ACT_NONE;
    else if (!strcmp(s, "softmax")) {
        *act = CNN_ACT_NONE;
        *softmax = 1;
    } else
        return 0;
    return 1;
}

static int parse_bool(const char *s, int *v)
{
    if (!strcmp(s, "yes") || !strcmp(s, "true") || !strcmp(s, "1")) *v = 1;
    else if (!strcmp(s, "no") || !strcmp(s, "false") || !strcmp(s, "0")) *v = 0;
    else return 0;
    return 1;
}

/* The options every layer line may carry; unknown keys are errors. */
typedef struct layer_opts {
    const char *name;
    int stride_h, stride_w, has_stride;
    int same_padding, has_padding;
    int bias, has_bias;
    cnn_init init;
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
        if (len == 0 || len >= CNN_NAME_MAX - 8) return perr(p, "name '%s' must have 1 to %s characters", val, "55");
        for (const char *c = val; *c; c++)
            if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-')
                return perr(p, "name '%s' may hold letters, digits, '_' and '-' only%s", val, "");
        o->name = val;
    } else if (!strcmp(key, "stride")) {
        if (!parse_pair(val, &o->stride_h, &o->stride_w)) return perr(p, "stride must be N or HxW with positive integers, got '%s'%s", val, "");
        o->has_stride = 1;
    } else if (!strcmp(key, "padding")) {
        if (!strcmp(val, "same")) o->same_padding = 1;
        else if (!strcmp(val, "valid")) o->same_padding = 0;
        else return perr(p, "padding must be 'valid' or 'same', got '%s'%s", val, "");
        o->has_padding = 1;
    } else if (!strcmp(key, "bias")) {
        if (!parse_bool(val, &o->bias)) return perr(p, "bias must be yes or no, got '%s'%s", val, "");
        o->has_bias = 1;
    } else if (!strcmp(key, "init")) {
        if (!strcmp(val, "he")) o->init = CNN_INIT_HE_NORMAL;
        else if (!strcmp(val, "glorot")) o->init = CNN_INIT_GLOROT_UNIFORM;
        else return perr(p, "init must be 'he' or 'glorot', got '%s'%s", val, "");
    }
    return CNN_OK;
}

/* Names the layer (Keras style: conv2d, conv2d_1, ...) and appends it; frees it on failure. */
static cnn_status add_layer(cnn_net *net, cnn_layer *l, const parse_ctx *p, const layer_opts *o, int *cap)
{
    l->line = p->line;
    if (o->name) {
        snprintf(l->name, sizeof l->name, "%s", o->name);
    } else {
        int count = 0;
        for (int i = 0; i < net->nlayers; i++)
            if (net->layers[i]->ops == l->ops) count++;
        if (count) snprintf(l->name, sizeof l->name, "%s_%d", l->ops->name_prefix, count);
        else snprintf(l->name, sizeof l->name, "%s", l->ops->name_prefix);
    }
    for (int i = 0; i < net->nlayers; i++)
        if (!strcmp(net->layers[i]->name, l->name)) {
            cnn_status st = cnn_error(CNN_ERR_FORMAT, "%s:%d: %s: layer name '%s' is already used on line %d",
                                      p->source, p->line, p->kind, l->name, net->layers[i]->line);
            free(l);
            return st;
        }
    if (net->nlayers == *cap) {
        int ncap = *cap ? *cap * 2 : 16;
        cnn_layer **nl = realloc(net->layers, (size_t)ncap * sizeof *nl);
        if (!nl) {
            free(l);
            return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        }
        net->layers = nl;
        *cap = ncap;
    }
    net->layers[net->nlayers++] = l;
    return CNN_OK;
}

static cnn_status parse_line(cnn_net *net, parse_ctx *p, char **tok, int ntok, int *have_input, int *cap,
                             int *softmax_line)
{
    const char *kind = tok[0];
    p->kind = kind;
    /* split positional arguments from key=value options */
    char *pos[MAX_TOKENS];
    int npos = 0;
    char *opts[MAX_TOKENS];
    int nopts = 0;
    for (int i = 1; i < ntok; i++) {
        if (strchr(tok[i], '=')) opts[nopts++] = tok[i];
        else if (nopts) return perr(p, "positional argument '%s' after options: put options last%s", tok[i], "");
        else pos[npos++] = tok[i];
    }
    layer_opts o = {.stride_h = 1, .stride_w = 1, .bias = 1, .init = CNN_INIT_AUTO};

    if (!strcmp(kind, "input")) {
        if (*have_input) return perr(p, "the input is already defined%s%s", "", "");
        if (nopts) return perr(p, "input takes no options%s%s", "", "");
        if (npos != 3) return perr(p, "expected 'input HEIGHT WIDTH CHANNELS'%s%s", "", "");
        long d[3];
        for (int i = 0; i < 3; i++)
            if (!parse_int(pos[i], &d[i])) return perr(p, "'%s' is not a size (an integer from 1 to %s)", pos[i], "65536");
        net->input = (cnn_shape){3, {d[0], d[1], d[2]}};
        *have_input = 1;
        return CNN_OK;
    }
    if (!*have_input) return perr(p, "the first line must be 'input HEIGHT WIDTH CHANNELS'%s%s", "", "");
    if (*softmax_line) {
        char l[16];
        snprintf(l, sizeof l, "%d", *softmax_line);
        return perr(p, "softmax (line %s) must be on the last layer%s", l, "");
    }

    cnn_layer *layer = NULL;
    cnn_status st;
    int softmax = 0;
    if (!strcmp(kind, "conv")) {
        for (int i = 0; i < nopts; i++)
            if ((st = parse_option(p, opts[i], &o, ",stride,padding,bias,init,name,")) != CNN_OK) return st;
        if (npos < 2 || npos > 3) return perr(p, "expected 'conv FILTERS KERNEL [ACTIVATION] [options]'%s%s", "", "");
        long filters;
        int kh, kw;
        if (!parse_int(pos[0], &filters)) return perr(p, "filters: '%s' is not an integer from 1 to %s", pos[0], "65536");
        if (!parse_pair(pos[1], &kh, &kw)) return perr(p, "kernel: '%s' is not N or HxW with positive integers%s", pos[1], "");
        cnn_act act = CNN_ACT_NONE;
        if (npos == 3 && !parse_act(pos[2], &act, &softmax))
            return perr(p, "unknown activation '%s' (known: relu, linear, softmax)%s", pos[2], "");
        if (softmax) return perr(p, "softmax belongs on the last dense layer%s%s", "", "");
        cnn_conv_layer *c = calloc(1, sizeof *c);
        if (!c) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        c->filters = (int)filters;
        c->kernel_h = kh;
        c->kernel_w = kw;
        c->stride_h = o.stride_h;
        c->stride_w = o.stride_w;
        c->same_padding = o.same_padding;
        c->use_bias = o.bias;
        c->base.act = act;
        c->base.ops = &cnn_conv_layer_ops;
        layer = &c->base;
    } else if (!strcmp(kind, "maxpool") || !strcmp(kind, "avgpool")) {
        for (int i = 0; i < nopts; i++)
            if ((st = parse_option(p, opts[i], &o, ",stride,padding,name,")) != CNN_OK) return st;
        if (npos < 1 || npos > 2) return perr(p, "expected '%s SIZE [STRIDE] [options]'%s", kind, "");
        int kh, kw, sh, sw;
        if (!parse_pair(pos[0], &kh, &kw)) return perr(p, "size: '%s' is not N or HxW with positive integers%s", pos[0], "");
        sh = kh;
        sw = kw;
        if (npos == 2 && !parse_pair(pos[1], &sh, &sw))
            return perr(p, "stride: '%s' is not N or HxW with positive integers%s", pos[1], "");
        if (o.has_stride) {
            if (npos == 2) return perr(p, "the stride is given twice%s%s", "", "");
            sh = o.stride_h;
            sw = o.stride_w;
        }
        cnn_pool_layer *pl = calloc(1, sizeof *pl);
        if (!pl) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        pl->mode = kind[0] == 'm' ? CNN_POOL_MAX : CNN_POOL_AVG;
        pl->kernel_h = kh;
        pl->kernel_w = kw;
        pl->stride_h = sh;
        pl->stride_w = sw;
        pl->same_padding = o.same_padding;
        pl->base.ops = kind[0] == 'm' ? &cnn_maxpool_layer_ops : &cnn_avgpool_layer_ops;
        layer = &pl->base;
    } else if (!strcmp(kind, "flatten")) {
        for (int i = 0; i < nopts; i++)
            if ((st = parse_option(p, opts[i], &o, ",name,")) != CNN_OK) return st;
        if (npos) return perr(p, "flatten takes no arguments, got '%s'%s", pos[0], "");
        layer = calloc(1, sizeof *layer);
        if (!layer) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        layer->ops = &cnn_flatten_layer_ops;
    } else if (!strcmp(kind, "dense")) {
        for (int i = 0; i < nopts; i++)
            if ((st = parse_option(p, opts[i], &o, ",bias,init,name,")) != CNN_OK) return st;
        if (npos < 1 || npos > 2) return perr(p, "expected 'dense UNITS [ACTIVATION] [options]'%s%s", "", "");
        long units;
        if (!parse_int(pos[0], &units)) return perr(p, "units: '%s' is not an integer from 1 to %s", pos[0], "65536");
        cnn_act act = CNN_ACT_NONE;
        if (npos == 2 && !parse_act(pos[1], &act, &softmax))
            return perr(p, "unknown activation '%s' (known: relu, linear, softmax)%s", pos[1], "");
        cnn_dense_layer *d = calloc(1, sizeof *d);
        if (!d) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        d->units = (int)units;
        d->use_bias = o.bias;
        d->base.act = act;
        d->base.ops = &cnn_dense_layer_ops;
        layer = &d->base;
    } else {
        return perr(p, "unknown layer type '%s' (known: input, conv, maxpool, avgpool, flatten, dense)%s", kind, "");
    }
    layer->weight_init = o.init;
    if (softmax) *softmax_line = p->line;
    return add_layer(net, layer, p, &o, cap);
}

cnn_status cnn_model_parse(cnn_net *net, const char *text, const char *source)
{
    parse_ctx p = {.source = source, .line = 0, .kind = ""};
    int have_input = 0, cap = 0, softmax_line = 0;
    const char *s = text;
    while (*s) {
        p.line++;
        const char *eol = strchr(s, '\n');
        size_t len = eol ? (size_t)(eol - s) : strlen(s);
        if (len >= MAX_LINE) {
            p.kind = "line";
            return perr(&p, "longer than %s characters%s", "1023", "");
        }
        char buf[MAX_LINE];
        memcpy(buf, s, len);
        buf[len] = '\0';
        s += len + (eol ? 1 : 0);
        char *hash = strchr(buf, '#');
        if (hash) *hash = '\0';
        char *tok[MAX_TOKENS + 1];
        int ntok = 0;
        for (char *t = strtok(buf, " \t\r\f\v"); t; t = strtok(NULL, " \t\r\f\v")) {
            if (ntok == MAX_TOKENS) {
                p.kind = tok[0];
                return perr(&p, "more than %s words on one line%s", "16", "");
            }
            tok[ntok++] = t;
        }
        if (!ntok) continue;
        cnn_status st = parse_line(net, &p, tok, ntok, &have_input, &cap, &softmax_line);
        if (st != CNN_OK) return st;
    }
    if (!have_input) return cnn_error(CNN_ERR_FORMAT, "%s: no 'input HEIGHT WIDTH CHANNELS' line", source);
    if (net->nlayers == 0) return cnn_error(CNN_ERR_FORMAT, "%s: the model has no layers after 'input'", source);
    net->output_softmax = softmax_line != 0;
    return CNN_OK;
}
