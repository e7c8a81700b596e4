/* cnn-lite: the models `cnn quantize` writes, run from a memory buffer in a caller's arena (include/cnn/lite.h).
 *
 * The file is a safetensors file: weights as I8 (int8 models' per-channel symmetric weights, and the dynamic
 * mode's), F16 (fp16) or F32, int8 biases as I32, per-channel weight scales as F32 "<weight>.scale"; its
 * __metadata__ holds "format": "cnn.c lite", "mode", the class names, the input normalization, and "graph": the
 * network lowered to ops (batchnorm folded into convolutions), one line each, the line's index naming its output:
 *
 *   input h=28 w=28 c=1 [q=SCALE,ZP]
 *   conv in=0 k=3,3 s=1,1 d=1,1 g=1 pad=0,0,0,0 n=32 w=conv2d.weight [b=conv2d.bias] [act=relu] out=26,26,32 [q=..]
 *   dense in=7 n=10 w=dense.weight [b=dense.bias] [act=..] out=10 [q=..]
 *   maxpool|avgpool in=1 k=2,2 s=2,2 pad=0,0,0,0 out=13,13,32     gap in=5 out=64     flatten in=4 out=1152
 *   add in=3,6 [act=relu] out=.. [q=..]     concat in=3,6 out=.. [q=..]     act in=2 f=sigmoid out=..
 *   scale in=2 w=NAME b=NAME out=..  (a per-channel affine: a batchnorm that follows no convolution; float only)
 *   softmax in=9 out=10   (last, optional)
 *
 * Every declared output shape is checked against the one computed. int8 ops compute as core/lite/lite_quant.h
 * says (int32 accumulators, Q31 requantization, ReLU as a clamp); max pooling, flatten and global pooling keep
 * their input's scale. The scores are dequantized to float before the softmax. Float models (float, fp16, and
 * dynamic, whose int8 weights are dequantized at open) compute in float32.
 *
 * Memory: cnn_lite_arena_size and cnn_lite_open run the same parse; the first counts bytes into nothing, the
 * second places the ops, the weights (copied, aligned) and the activations in the arena. Activations share memory:
 * each op's output is placed by a first-fit over the outputs still alive (freed after their last reader). */
#include "cnn/lite.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/lite/lite_internal.h"
#include "core/lite/lite_quant.h"

#define LT_MAX_OPS 512
#define LT_MAX_IN 8
#define LT_MAX_DIM 65536
#define LT_MAX_HEADER ((uint64_t)64 << 20)
#define LT_MAX_CLASSES 100000
#define LT_ALIGN 64
/* int8 products are at most 255 * 128 = 32640 in size: sums of up to this many fit in an int32 */
#define LT_MAX_TAPS 65793

enum { LM_FLOAT = 0, LM_FP16, LM_DYNAMIC, LM_INT8 };
static const char *const MODE_NAMES[] = {"float", "fp16", "dynamic", "int8"};

enum { LT_INPUT = CNN_LITE_OP_INPUT, LT_CONV, LT_DENSE, LT_MAXPOOL, LT_AVGPOOL, LT_GAP, LT_FLATTEN, LT_ADD,
       LT_CONCAT, LT_ACT, LT_SCALE, LT_SOFTMAX, LT_NKINDS };
static const char *const KIND_NAMES[] = {"input", "conv", "dense", "maxpool", "avgpool", "gap", "flatten", "add",
                                         "concat", "act", "scale", "softmax"};

enum { LA_NONE = CNN_LITE_ACT_NONE, LA_RELU, LA_LEAKY, LA_ELU, LA_SIGMOID, LA_TANH, LA_GELU, LA_SILU, LA_N };
static const char *const ACT_NAMES[] = {"none", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "silu"};

enum { DT_F32 = 0, DT_F16, DT_I8, DT_I32, DT_OTHER };

typedef struct lt_tensor {
    const char *name; /* in the model buffer (open copies what it keeps) */
    size_t name_len;
    int dtype;
    int ndim;
    int64_t shape[4];
    const unsigned char *data; /* in the model buffer */
    size_t bytes;
} lt_tensor;

typedef struct lt_op {
    int kind;
    int in[LT_MAX_IN], nin;
    int h, w, c, flat; /* the output, per sample (flat: h = w = 1, c features) */
    int kh, kw, sh, sw, dh, dw, groups, pt, pl, pb, pr, n;
    int act;
    float alpha;
    int q; /* int8 output */
    float scale;
    int32_t zp, act_min, act_max;
    const int8_t *w8;   /* int8: weights (n, kh, kw, cin / g) or (n, in) */
    const int32_t *b32; /* int8: biases, or NULL */
    int32_t *mult, *shift;       /* int8 conv/dense: per output channel; add/concat: per input, then the output's */
    const float *wf, *bf;        /* float weights and biases (scale: multiplier and offset), or NULL */
    int8_t *lut;                 /* int8 add: the output code of every pair of input codes (65536, by a << 8 | b) */
    size_t off;                  /* the output's offset in the activations */
    size_t bytes;                /* per sample */
} lt_op;

/* What the plan needs of each op, kept apart so that the size query holds it on the stack. */
typedef struct lt_slot {
    int h, w, c, flat, q;
    float scale;
    int32_t zp;
    size_t bytes; /* per sample */
    int last;     /* the last op reading it */
    size_t off;
} lt_slot;

struct cnn_lite {
    int mode;
    int nops;
    lt_op *ops;
    int max_batch;
    int h, w, c, k;
    int has_norm;
    float *mean, *std;
    int rh, rw;
    char **class_names;   /* k entries (each may be NULL), or NULL */
    unsigned char *acts;  /* the activations */
    size_t acts_bytes;
    float *logits;        /* max_batch x k */
    int32_t *acc;         /* an int8 convolution's or average pooling's accumulators: the most channels of an op */
    cnn_lite_accel accel; /* libcnn's: the sums of int8 convolutions and dense ops (NULL: the C kernels) */
    void *accel_ctx;
};

// ---------------------------------------------------------------------------------------------------------------
// errors and the arena

typedef struct lt_ctx {
    char *err;
    size_t errlen;
    unsigned char *base; /* NULL: only counting */
    size_t cap, used;
} lt_ctx;

static cnn_lite_status fail(lt_ctx *x, cnn_lite_status st, const char *fmt, ...)
{
    if (x->err && x->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err, x->errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* n bytes, aligned; when counting, a pointer that must not be used (NULL). */
static void *take(lt_ctx *x, size_t n)
{
    size_t at = (x->used + (LT_ALIGN - 1)) & ~(size_t)(LT_ALIGN - 1);
    if (n > SIZE_MAX - at) {
        x->used = SIZE_MAX;
        return NULL;
    }
    x->used = at + n;
    if (!x->base || x->used > x->cap) return NULL;
    return x->base + at;
}

// ---------------------------------------------------------------------------------------------------------------
// a pull parser of the safetensors header (JSON), without memory

typedef struct js {
    const char *p, *end;
} js;

static void js_ws(js *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int js_lit(js *j, char c)
{
    js_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return 1;
    }
    return 0;
}

/* A string: its raw bytes between the quotes (escapes left in), and whether it has any. */
static int js_string(js *j, const char **s, size_t *len, int *escaped)
{
    js_ws(j);
    if (j->p >= j->end || *j->p != '"') return 0;
    const char *q = ++j->p;
    *escaped = 0;
    while (j->p < j->end && *j->p != '"') {
        if ((unsigned char)*j->p < 0x20) return 0;
        if (*j->p == '\\') {
            *escaped = 1;
            if (++j->p >= j->end) return 0;
        }
        j->p++;
    }
    if (j->p >= j->end) return 0;
    *s = q;
    *len = (size_t)(j->p - q);
    j->p++;
    return 1;
}

static int js_int(js *j, int64_t *v)
{
    js_ws(j);
    int64_t x = 0;
    int digits = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9' && digits < 18) x = x * 10 + (*j->p++ - '0'), digits++;
    if (!digits || (j->p < j->end && ((*j->p >= '0' && *j->p <= '9') || *j->p == '.' || *j->p == 'e'))) return 0;
    *v = x;
    return 1;
}

/* Skips any value (nesting at most 16 deep). */
static int js_skip(js *j, int depth)
{
    js_ws(j);
    if (j->p >= j->end || depth > 16) return 0;
    const char *s;
    size_t len;
    int esc;
    char c = *j->p;
    if (c == '"') return js_string(j, &s, &len, &esc);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        if (js_lit(j, close)) return 1;
        do {
            if (c == '{' && (!js_string(j, &s, &len, &esc) || !js_lit(j, ':'))) return 0;
            if (!js_skip(j, depth + 1)) return 0;
        } while (js_lit(j, ','));
        return js_lit(j, close);
    }
    while (j->p < j->end && (*j->p == '-' || *j->p == '+' || *j->p == '.' || (*j->p >= '0' && *j->p <= '9') ||
                             (*j->p >= 'a' && *j->p <= 'z') || *j->p == 'E'))
        j->p++;
    return 1;
}

static int span_is(const char *s, size_t len, const char *lit) { return strlen(lit) == len && !memcmp(s, lit, len); }

/* Decodes a JSON string's raw bytes (escapes) into out (when not NULL); returns the decoded length, or -1.
 * \uXXXX outside ASCII is written as UTF-8 (surrogate pairs joined). */
static long js_decode(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned cp = (unsigned char)s[i];
        if (cp == '\\') {
            if (++i >= len) return -1;
            switch (s[i]) {
            case 'n': cp = '\n'; break;
            case 't': cp = '\t'; break;
            case 'r': cp = '\r'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case '"': case '\\': case '/': cp = (unsigned char)s[i]; break;
            case 'u': {
                if (i + 4 >= len) return -1;
                cp = 0;
                for (int k = 1; k <= 4; k++) {
                    char h = s[i + k];
                    cp = cp * 16 + (unsigned)(h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                             : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 99);
                    if (cp > 0xffff) return -1;
                }
                i += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < len && s[i + 1] == '\\' && s[i + 2] == 'u') {
                    unsigned lo = 0;
                    for (int k = 3; k <= 6; k++) {
                        char h = s[i + k];
                        lo = lo * 16 + (unsigned)(h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                                 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 99);
                        if (lo > 0xffff) return -1;
                    }
                    if (lo >= 0xdc00 && lo < 0xe000) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        i += 6;
                    }
                }
                break;
            }
            default: return -1;
            }
        }
        unsigned char b[4];
        int nb;
        if (cp < 0x80) b[0] = (unsigned char)cp, nb = 1;
        else if (cp < 0x800) b[0] = (unsigned char)(0xc0 | cp >> 6), b[1] = (unsigned char)(0x80 | (cp & 63)), nb = 2;
        else if (cp < 0x10000)
            b[0] = (unsigned char)(0xe0 | cp >> 12), b[1] = (unsigned char)(0x80 | ((cp >> 6) & 63)),
            b[2] = (unsigned char)(0x80 | (cp & 63)), nb = 3;
        else
            b[0] = (unsigned char)(0xf0 | cp >> 18), b[1] = (unsigned char)(0x80 | ((cp >> 12) & 63)),
            b[2] = (unsigned char)(0x80 | ((cp >> 6) & 63)), b[3] = (unsigned char)(0x80 | (cp & 63)), nb = 4;
        if (out) memcpy(out + o, b, (size_t)nb);
        o += (size_t)nb;
    }
    return (long)o;
}

// ---------------------------------------------------------------------------------------------------------------
// the file

typedef struct lt_file {
    const unsigned char *buf;  /* the model */
    size_t len;
    const char *header, *header_end;
    const unsigned char *data; /* after the header */
    size_t data_len;
    /* metadata values (raw JSON string bytes) */
    const char *meta[8];
    size_t meta_len[8];
} lt_file;

enum { MK_FORMAT = 0, MK_MODE, MK_GRAPH, MK_CLASSES, MK_MEAN, MK_STD, MK_RESIZE, MK_N };
static const char *const META_KEYS[MK_N] = {"format", "mode", "graph", "class_names", "norm_mean", "norm_std",
                                            "resize"};

static int dtype_of(const char *s, size_t len)
{
    if (span_is(s, len, "F32")) return DT_F32;
    if (span_is(s, len, "F16")) return DT_F16;
    if (span_is(s, len, "I8")) return DT_I8;
    if (span_is(s, len, "I32")) return DT_I32;
    return DT_OTHER;
}

static const size_t DT_SIZE[] = {4, 2, 1, 4, 1};

/* One tensor's entry {"dtype", "shape", "data_offsets"}, checked against the data. */
static cnn_lite_status parse_entry(lt_ctx *x, js *j, const lt_file *f, lt_tensor *t)
{
    const char *k, *s;
    size_t klen, slen;
    int esc, have = 0;
    int64_t a = -1, b = -1;
    if (!js_lit(j, '{')) return fail(x, CNN_LITE_ERR_FORMAT, "tensor %.*s: not an object", (int)t->name_len, t->name);
    if (!js_lit(j, '}')) {
        do {
            if (!js_string(j, &k, &klen, &esc) || !js_lit(j, ':'))
                return fail(x, CNN_LITE_ERR_FORMAT, "tensor %.*s: malformed entry", (int)t->name_len, t->name);
            if (span_is(k, klen, "dtype")) {
                if (!js_string(j, &s, &slen, &esc)) break;
                t->dtype = dtype_of(s, slen);
                have |= 1;
            } else if (span_is(k, klen, "shape")) {
                if (!js_lit(j, '[')) break;
                t->ndim = 0;
                if (!js_lit(j, ']')) {
                    do {
                        if (t->ndim == 4 || !js_int(j, &t->shape[t->ndim]) || t->shape[t->ndim] > ((int64_t)1 << 31))
                            return fail(x, CNN_LITE_ERR_FORMAT, "tensor %.*s: a shape of at most 4 dimensions below "
                                        "2^31", (int)t->name_len, t->name);
                        t->ndim++;
                    } while (js_lit(j, ','));
                    if (!js_lit(j, ']')) break;
                }
                have |= 2;
            } else if (span_is(k, klen, "data_offsets")) {
                if (!js_lit(j, '[') || !js_int(j, &a) || !js_lit(j, ',') || !js_int(j, &b) || !js_lit(j, ']')) break;
                have |= 4;
            } else if (!js_skip(j, 0)) {
                break;
            }
        } while (js_lit(j, ','));
        if (!js_lit(j, '}')) have = 0;
    }
    if (have != 7)
        return fail(x, CNN_LITE_ERR_FORMAT, "tensor %.*s: needs dtype, shape and data_offsets", (int)t->name_len,
                    t->name);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        numel *= (uint64_t)t->shape[d];
        if (numel > f->data_len) break; /* already too big: no overflow past here */
    }
    if (a < 0 || b < a || (uint64_t)b > f->data_len || numel > f->data_len ||
        (t->dtype != DT_OTHER && (uint64_t)(b - a) != numel * DT_SIZE[t->dtype]))
        return fail(x, CNN_LITE_ERR_FORMAT, "tensor %.*s: data_offsets [%lld, %lld] do not hold its shape in the %zu "
                    "bytes of data", (int)t->name_len, t->name, (long long)a, (long long)b, f->data_len);
    t->data = f->data + a;
    t->bytes = (size_t)(b - a);
    return CNN_LITE_OK;
}

/* Walks the header: with `want`, stops at that tensor and fills *t (1), else 0 at the end; without, checks every
 * entry's JSON and records the metadata. Negative: an error (its status, negated). */
static int walk_header(lt_ctx *x, lt_file *f, const char *want, size_t want_len, lt_tensor *t)
{
    js j = {f->header, f->header_end};
    const char *k;
    size_t klen;
    int esc;
    if (!js_lit(&j, '{')) return -fail(x, CNN_LITE_ERR_FORMAT, "the header is not a JSON object");
    if (js_lit(&j, '}')) return 0;
    do {
        if (!js_string(&j, &k, &klen, &esc) || !js_lit(&j, ':'))
            return -fail(x, CNN_LITE_ERR_FORMAT, "the header: a malformed key at byte %ld",
                         (long)(j.p - (const char *)f->buf));
        if (span_is(k, klen, "__metadata__")) {
            if (!js_lit(&j, '{')) return -fail(x, CNN_LITE_ERR_FORMAT, "__metadata__ is not an object");
            if (!js_lit(&j, '}')) {
                do {
                    const char *mk, *mv;
                    size_t mklen, mvlen;
                    if (!js_string(&j, &mk, &mklen, &esc) || !js_lit(&j, ':') || !js_string(&j, &mv, &mvlen, &esc))
                        return -fail(x, CNN_LITE_ERR_FORMAT, "__metadata__: entries must be strings");
                    for (int m = 0; m < MK_N && !want; m++)
                        if (span_is(mk, mklen, META_KEYS[m])) {
                            f->meta[m] = mv;
                            f->meta_len[m] = mvlen;
                        }
                } while (js_lit(&j, ','));
                if (!js_lit(&j, '}')) return -fail(x, CNN_LITE_ERR_FORMAT, "__metadata__: malformed");
            }
            continue;
        }
        if (want && !esc && klen == want_len && !memcmp(k, want, klen)) {
            memset(t, 0, sizeof *t);
            t->name = k;
            t->name_len = klen;
            cnn_lite_status st = parse_entry(x, &j, f, t);
            return st ? -(int)st : 1;
        }
        if (!js_skip(&j, 0)) return -fail(x, CNN_LITE_ERR_FORMAT, "tensor %.*s: malformed entry", (int)klen, k);
    } while (js_lit(&j, ','));
    if (!js_lit(&j, '}')) return -fail(x, CNN_LITE_ERR_FORMAT, "the header: malformed JSON");
    return 0;
}

static cnn_lite_status open_file(lt_ctx *x, const unsigned char *buf, size_t len, lt_file *f)
{
    memset(f, 0, sizeof *f);
    if (len < 8) return fail(x, CNN_LITE_ERR_FORMAT, "a model of %zu bytes: too short for a safetensors file", len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    if (n > len - 8 || n > LT_MAX_HEADER)
        return fail(x, CNN_LITE_ERR_FORMAT, "header length %llu: beyond the model's %zu bytes", (unsigned long long)n,
                    len);
    f->buf = buf;
    f->len = len;
    f->header = (const char *)buf + 8;
    f->header_end = f->header + n;
    f->data = buf + 8 + n;
    f->data_len = len - 8 - (size_t)n;
    int r = walk_header(x, f, NULL, 0, NULL);
    return r < 0 ? (cnn_lite_status)-r : CNN_LITE_OK;
}

/* The tensor named name (len bytes), checked; 0 when the file has none. */
static int find_tensor(lt_ctx *x, const lt_file *f, const char *name, size_t len, lt_tensor *t, cnn_lite_status *st)
{
    int r = walk_header(x, (lt_file *)f, name, len, t);
    *st = r < 0 ? (cnn_lite_status)-r : CNN_LITE_OK;
    return r == 1;
}

// ---------------------------------------------------------------------------------------------------------------
// the graph's lines

typedef struct lt_line {
    const char *p, *end;
    int index;
} lt_line;

/* The value of key=... on the line (the bytes up to the next space); 0 when absent. */
static int line_value(const lt_line *l, const char *key, const char **v, size_t *vlen)
{
    size_t klen = strlen(key);
    const char *p = l->p;
    while (p < l->end) {
        while (p < l->end && *p == ' ') p++;
        const char *tok = p;
        while (p < l->end && *p != ' ') p++;
        if ((size_t)(p - tok) > klen && !memcmp(tok, key, klen) && tok[klen] == '=') {
            *v = tok + klen + 1;
            *vlen = (size_t)(p - *v);
            return 1;
        }
    }
    return 0;
}

/* Up to max comma-separated integers of key; returns how many, or -1 when malformed. */
static int line_ints(const lt_line *l, const char *key, int *out, int max)
{
    const char *v;
    size_t len;
    if (!line_value(l, key, &v, &len)) return 0;
    int n = 0;
    const char *p = v, *end = v + len;
    while (p < end) {
        if (n == max) return -1;
        int neg = 0;
        if (*p == '-') neg = 1, p++;
        long x = 0;
        int digits = 0;
        while (p < end && *p >= '0' && *p <= '9' && digits < 9) x = x * 10 + (*p++ - '0'), digits++;
        if (!digits) return -1;
        out[n++] = (int)(neg ? -x : x);
        if (p < end && *p != ',') return -1;
        if (p < end) p++;
    }
    return n;
}

/* A float: the C locale's form (digits, '.', exponent), parsed here so that no locale changes it. */
static int parse_float(const char *p, const char *end, float *out, const char **next)
{
    double sign = 1, m = 0, scale = 1;
    int digits = 0;
    if (p < end && (*p == '-' || *p == '+')) sign = *p++ == '-' ? -1 : 1;
    while (p < end && *p >= '0' && *p <= '9') m = m * 10 + (*p++ - '0'), digits++;
    if (p < end && *p == '.') {
        p++;
        while (p < end && *p >= '0' && *p <= '9') m = m * 10 + (*p++ - '0'), scale *= 10, digits++;
    }
    if (!digits) return 0;
    int e = 0, eneg = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '-' || *p == '+')) eneg = *p++ == '-';
        int ed = 0;
        while (p < end && *p >= '0' && *p <= '9' && ed < 4) e = e * 10 + (*p++ - '0'), ed++;
        if (!ed) return 0;
    }
    double v = sign * m / scale * pow(10.0, eneg ? -e : e);
    if (!isfinite(v) || fabs(v) > 3.4e38) return 0;
    *out = (float)v;
    *next = p;
    return 1;
}

#define Q_NEEDS "q=SCALE,ZP (a finite scale > 0, a zero point in [-128, 127])"

/* q=SCALE,ZP */
static int line_q(const lt_line *l, float *scale, int32_t *zp)
{
    const char *v, *p;
    size_t len;
    if (!line_value(l, "q", &v, &len)) return 0;
    const char *end = v + len;
    if (!parse_float(v, end, scale, &p) || p >= end || *p != ',') return -1;
    float z;
    if (!parse_float(p + 1, end, &z, &p) || p != end || z != floorf(z)) return -1;
    if (!(*scale > 0.0f) || !isfinite(*scale) || z < -128.0f || z > 127.0f) return -2;
    *zp = (int32_t)z;
    return 1;
}

// ---------------------------------------------------------------------------------------------------------------
// setting the ops up

/* A weight tensor for an op: checked against the shape wanted, copied (converted) into the arena as the op's
 * computation wants it. */
static cnn_lite_status load_weights(lt_ctx *x, const lt_file *f, const lt_line *l, const char *key, int mode,
                                    int required, int ndim, const int64_t *shape, int want_int8, const void **out_q,
                                    const float **out_f, const unsigned char **out_scale)
{
    const char *name;
    size_t nlen;
    *out_q = NULL;
    *out_f = NULL;
    if (out_scale) *out_scale = NULL;
    if (!line_value(l, key, &name, &nlen)) {
        if (required) return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: no %s=", l->index, key);
        return CNN_LITE_OK;
    }
    lt_tensor tt, *t = &tt;
    cnn_lite_status fst;
    if (!find_tensor(x, f, name, nlen, &tt, &fst))
        return fst ? fst : fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: tensor %.*s is not in the file", l->index,
                                (int)nlen, name);
    int ok = t->ndim == ndim;
    size_t numel = 1;
    for (int d = 0; d < ndim && ok; d++) ok = t->shape[d] == shape[d], numel *= (size_t)shape[d];
    if (!ok) return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: tensor %.*s has the wrong shape for its op", l->index,
                         (int)nlen, name);
    int is_bias = !strcmp(key, "b");
    int want = want_int8 ? (is_bias ? DT_I32 : DT_I8) : (mode == LM_FP16 ? DT_F16 : mode == LM_DYNAMIC && !is_bias ? DT_I8 : DT_F32);
    if (t->dtype != want)
        return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: tensor %.*s: dtype %s expected for a %s model", l->index,
                    (int)nlen, name, want == DT_F32 ? "F32" : want == DT_F16 ? "F16" : want == DT_I8 ? "I8" : "I32",
                    MODE_NAMES[mode]);
    /* the per-channel scales of int8 weights: "<name>.scale", F32, one per output channel */
    const unsigned char *scale_bytes = NULL;
    if (t->dtype == DT_I8) {
        char sname[256];
        if (nlen > sizeof sname - 8) return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: a tensor name too long", l->index);
        memcpy(sname, name, nlen);
        memcpy(sname + nlen, ".scale", 6);
        lt_tensor ss, *s = &ss;
        if (!find_tensor(x, f, sname, nlen + 6, &ss, &fst) || s->dtype != DT_F32 || s->ndim != 1 ||
            s->shape[0] != shape[0])
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: %.*s.scale must be F32 with one scale per output "
                        "channel (%lld)", l->index, (int)nlen, name, (long long)shape[0]);
        for (int64_t c = 0; c < shape[0]; c++) { /* checked when counting too: the size query finds bad files */
            float v;
            memcpy(&v, s->data + 4 * c, 4);
            if (!(v > 0.0f) || !isfinite(v))
                return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: %.*s.scale[%lld] is %g: scales must be finite and "
                            "> 0", l->index, (int)nlen, name, (long long)c, (double)v);
        }
        scale_bytes = s->data;
        if (out_scale) *out_scale = s->data; /* the file's bytes: read (memcpy) while counting too */
    }
    if (want_int8) {
        void *copy = take(x, t->bytes);
        if (copy) memcpy(copy, t->data, t->bytes);
        *out_q = copy;
        return CNN_LITE_OK;
    }
    float *w = take(x, numel * sizeof(float)); /* NULL when counting: the values are checked all the same */
    for (size_t i = 0; i < numel; i++) {
        float v;
        if (t->dtype == DT_F32) {
            memcpy(&v, t->data + 4 * i, 4);
        } else if (t->dtype == DT_F16) {
            uint16_t hbits = (uint16_t)(t->data[2 * i] | t->data[2 * i + 1] << 8);
            uint32_t sign = (uint32_t)(hbits >> 15) << 31, e = (hbits >> 10) & 31, m = hbits & 1023, bits;
            if (e == 0) {
                v = ldexpf((float)m, -24);
                if (sign) v = -v;
            } else {
                bits = e == 31 ? sign | 0x7f800000u | m << 13 : sign | (e + 112) << 23 | m << 13;
                memcpy(&v, &bits, 4);
            }
        } else { /* dynamic: int8 times its channel's scale (read from the file: the same when counting) */
            size_t per = numel / (size_t)shape[0];
            float sc;
            memcpy(&sc, scale_bytes + 4 * (i / per), 4);
            v = (float)(int8_t)t->data[i] * sc;
        }
        if (!isfinite(v))
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: tensor %.*s holds a non-finite value", l->index,
                        (int)nlen, name);
        if (w) w[i] = v;
    }
    *out_f = w;
    return CNN_LITE_OK;
}

static int parse_act(const lt_line *l, const char *key, int *act, float *alpha)
{
    const char *v;
    size_t len;
    *act = LA_NONE;
    *alpha = 0.0f;
    if (!line_value(l, key, &v, &len)) return 1;
    const char *colon = memchr(v, ':', len);
    size_t nlen = colon ? (size_t)(colon - v) : len;
    for (int a = 0; a < LA_N; a++)
        if (span_is(v, nlen, ACT_NAMES[a])) *act = a;
    if (*act == LA_NONE && !span_is(v, nlen, "none")) return 0;
    if (colon) {
        const char *next;
        if (!parse_float(colon + 1, v + len, alpha, &next) || next != v + len) return 0;
    } else if (*act == LA_LEAKY || *act == LA_ELU) {
        *alpha = *act == LA_LEAKY ? 0.01f : 1.0f;
    }
    return 1;
}

/* Output size of a window along one dimension, or 0 when it does not fit. */
static int window_out(int in, int k, int s, int d, int pa, int pb)
{
    long span = (long)d * (k - 1) + 1, full = (long)in + pa + pb;
    if (k < 1 || s < 1 || d < 1 || pa < 0 || pb < 0 || span > full) return 0;
    return (int)((full - span) / s + 1);
}

/* The requantization of an int8 conv/dense: a multiplier per output channel, and ReLU's clamp. */
static cnn_lite_status set_requant(lt_ctx *x, lt_op *op, const lt_slot *in, const unsigned char *wscale, int channels)
{
    op->mult = take(x, (size_t)channels * sizeof(int32_t));
    op->shift = take(x, (size_t)channels * sizeof(int32_t));
    for (int c = 0; wscale && c < channels; c++) { /* checked when counting too */
        float ws;
        memcpy(&ws, wscale + 4 * c, 4);
        double M = (double)in->scale * (double)ws / (double)op->scale;
        if (!(M < 2147483648.0))
            return fail(x, CNN_LITE_ERR_FORMAT, "an int8 op's rescaling factor %g is out of range", M);
        int32_t m;
        int shift;
        lq_quantize_multiplier(M, &m, &shift);
        if (op->mult) op->mult[c] = m, op->shift[c] = shift;
    }
    return CNN_LITE_OK;
}

static void set_clamp(lt_op *op)
{
    op->act_min = -128;
    op->act_max = 127;
    if (op->act == LA_RELU) op->act_min = op->zp > -128 ? op->zp : -128;
}

/* The weights (w, rank `rank` and shape wshape) and bias (b, op->n) of a conv or dense layer; an int8 one (q) also
 * reads its output's scale and zero point, fuses ReLU only, and gets the requantization of its int32 sums. `name`
 * and `plural` name the layer in messages. */
static cnn_lite_status load_layer_weights(lt_ctx *x, const lt_file *f, int mode, const lt_line *l, lt_op *op,
                                          const lt_slot *in, int q, int rank, const int64_t *wshape, const char *name,
                                          const char *plural)
{
    cnn_lite_status st;
    int64_t bshape[1] = {op->n};
    const unsigned char *wscale = NULL, *unused;
    if ((st = load_weights(x, f, l, "w", mode, 1, rank, wshape, q, (const void **)&op->w8, &op->wf, &wscale)) ||
        (st = load_weights(x, f, l, "b", mode, 0, 1, bshape, q, (const void **)&op->b32, &op->bf, &unused)))
        return st;
    if (!q) return CNN_LITE_OK;
    if (line_q(l, &op->scale, &op->zp) != 1)
        return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: an int8 %s needs " Q_NEEDS, l->index, name);
    op->q = 1;
    if (op->act != LA_NONE && op->act != LA_RELU)
        return fail(x, CNN_LITE_ERR_UNSUPPORTED, "graph line %d: int8 %s fuse ReLU only", l->index, plural);
    if ((st = set_requant(x, op, in, wscale, op->n))) return st;
    set_clamp(op);
    return CNN_LITE_OK;
}

static int8_t add_code(const lt_op *op, int32_t za, int32_t zb, int32_t a, int32_t b);

/* One line of the graph into op (and slot[index]); slots of the lines before give the inputs' shapes. */
static cnn_lite_status parse_op(lt_ctx *x, const lt_file *f, int mode, const lt_line *l, lt_slot *slots, lt_op *op)
{
    memset(op, 0, sizeof *op);
    const char *p = l->p;
    while (p < l->end && *p != ' ') p++;
    op->kind = -1;
    for (int k = 0; k < LT_NKINDS; k++)
        if (span_is(l->p, (size_t)(p - l->p), KIND_NAMES[k])) op->kind = k;
    if (op->kind < 0)
        return fail(x, CNN_LITE_ERR_UNSUPPORTED, "graph line %d: unknown op '%.*s'", l->index, (int)(p - l->p) < 32 ? (int)(p - l->p) : 32, l->p);
    if ((op->kind == LT_INPUT) != (l->index == 0))
        return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: the input comes first, and once", l->index);
    int q = mode == LM_INT8;
    lt_slot *out = &slots[l->index];
    memset(out, 0, sizeof *out);
    if (op->kind == LT_INPUT) {
        int hwc[3];
        const char *keys[3] = {"h", "w", "c"};
        for (int i = 0; i < 3; i++)
            if (line_ints(l, keys[i], &hwc[i], 1) != 1 || hwc[i] < 1 || hwc[i] > LT_MAX_DIM)
                return fail(x, CNN_LITE_ERR_FORMAT, "graph line 0: input needs %s= from 1 to %d", keys[i], LT_MAX_DIM);
        op->h = hwc[0], op->w = hwc[1], op->c = hwc[2];
    } else {
        op->nin = line_ints(l, "in", op->in, LT_MAX_IN);
        int want = op->kind == LT_ADD ? 2 : op->kind == LT_CONCAT ? -1 : 1;
        if (op->nin < 1 || (want > 0 && op->nin != want) || (op->kind == LT_CONCAT && op->nin < 2))
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: %s takes %s input%s (in=)", l->index,
                        KIND_NAMES[op->kind], want == 2 ? "two" : want == 1 ? "one" : "2 or more", want == 1 ? "" : "s");
        for (int i = 0; i < op->nin; i++) {
            if (op->in[i] < 0 || op->in[i] >= l->index)
                return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: input %d is not a line before it", l->index,
                            op->in[i]);
            slots[op->in[i]].last = l->index;
        }
    }
    const lt_slot *in = op->kind == LT_INPUT ? NULL : &slots[op->in[0]];
    int k2[2] = {1, 1}, s2[2] = {1, 1}, d2[2] = {1, 1}, pad[4] = {0, 0, 0, 0};
    cnn_lite_status st = CNN_LITE_OK;
    if (!parse_act(l, op->kind == LT_ACT ? "f" : "act", &op->act, &op->alpha))
        return fail(x, CNN_LITE_ERR_UNSUPPORTED, "graph line %d: unknown activation", l->index);
    switch (op->kind) {
    case LT_INPUT:
        break;
    case LT_CONV:
    case LT_MAXPOOL:
    case LT_AVGPOOL: {
        if (in->flat) return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: %s of a flat input", l->index, KIND_NAMES[op->kind]);
        if (line_ints(l, "k", k2, 2) != 2 || (line_ints(l, "s", s2, 2) & ~2) || (line_ints(l, "d", d2, 2) & ~2) ||
            (line_ints(l, "pad", pad, 4) & ~4))
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: k=H,W [s=H,W d=H,W pad=T,L,B,R] malformed", l->index);
        op->kh = k2[0], op->kw = k2[1], op->sh = s2[0], op->sw = s2[1], op->dh = d2[0], op->dw = d2[1];
        op->pt = pad[0], op->pl = pad[1], op->pb = pad[2], op->pr = pad[3];
        op->h = window_out(in->h, op->kh, op->sh, op->dh, op->pt, op->pb);
        op->w = window_out(in->w, op->kw, op->sw, op->dw, op->pl, op->pr);
        if (!op->h || !op->w || op->kh > LT_MAX_DIM || op->kw > LT_MAX_DIM)
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: the window does not fit the input %dx%d", l->index,
                        in->h, in->w);
        if (op->kind != LT_CONV) {
            op->c = in->c;
            if (op->dh != 1 || op->dw != 1 || op->act)
                return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: pooling has no dilation or activation", l->index);
            break;
        }
        op->groups = 1;
        if ((line_ints(l, "g", &op->groups, 1) & ~1) || line_ints(l, "n", &op->n, 1) != 1 || op->n < 1 ||
            op->n > LT_MAX_DIM || op->groups < 1 || in->c % op->groups || op->n % op->groups)
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: conv needs n= filters and g= groups dividing its "
                        "%d input channels", l->index, in->c);
        op->c = op->n;
        if (q && (int64_t)op->kh * op->kw * (in->c / op->groups) > LT_MAX_TAPS)
            return fail(x, CNN_LITE_ERR_UNSUPPORTED, "graph line %d: an int8 conv of %lld taps per output: at most %d "
                        "(int32 sums)", l->index, (long long)op->kh * op->kw * (in->c / op->groups), LT_MAX_TAPS);
        int64_t wshape[4] = {op->n, op->kh, op->kw, in->c / op->groups};
        if ((st = load_layer_weights(x, f, mode, l, op, in, q, 4, wshape, "conv", "convolutions"))) return st;
        break;
    }
    case LT_DENSE: {
        if (line_ints(l, "n", &op->n, 1) != 1 || op->n < 1 || op->n > (1 << 24))
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: dense needs n= units", l->index);
        int64_t features = (int64_t)in->h * in->w * in->c;
        if (q && features > LT_MAX_TAPS)
            return fail(x, CNN_LITE_ERR_UNSUPPORTED, "graph line %d: an int8 dense of %lld inputs: at most %d (int32 "
                        "sums)", l->index, (long long)features, LT_MAX_TAPS);
        int64_t wshape[2] = {op->n, features};
        op->h = op->w = 1, op->c = op->n, op->flat = 1;
        if ((st = load_layer_weights(x, f, mode, l, op, in, q, 2, wshape, "dense", "dense layers"))) return st;
        break;
    }
    case LT_GAP:
    case LT_FLATTEN:
        op->h = op->w = 1, op->flat = 1;
        op->c = op->kind == LT_GAP ? in->c : in->h * in->w * in->c;
        if (op->kind == LT_GAP && in->flat)
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: global pooling of a flat input", l->index);
        break;
    case LT_ADD:
    case LT_CONCAT: {
        int c = 0;
        for (int i = 0; i < op->nin; i++) {
            const lt_slot *s = &slots[op->in[i]];
            if (s->h != in->h || s->w != in->w || s->flat != in->flat ||
                (op->kind == LT_ADD && s->c != in->c))
                return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: %s of inputs of different shapes", l->index,
                            KIND_NAMES[op->kind]);
            c += s->c;
        }
        op->h = in->h, op->w = in->w, op->flat = in->flat, op->c = op->kind == LT_ADD ? in->c : c;
        if (op->kind == LT_CONCAT && op->act)
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: concat has no activation", l->index);
        if (q) {
            if (line_q(l, &op->scale, &op->zp) != 1)
                return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: an int8 %s needs " Q_NEEDS, l->index,
                            KIND_NAMES[op->kind]);
            op->q = 1;
            if (op->act != LA_NONE && op->act != LA_RELU)
                return fail(x, CNN_LITE_ERR_UNSUPPORTED, "graph line %d: int8 adds fuse ReLU only", l->index);
            /* concat: each input x as (x - zp_i) * s_i / s_out. add (TFLite's): each input, shifted left by 20 bits
             * for precision, times s_i / (2 max s), summed, then times 2 max s / (2^20 s_out) */
            op->mult = take(x, (size_t)(op->nin + 1) * sizeof(int32_t));
            op->shift = take(x, (size_t)(op->nin + 1) * sizeof(int32_t));
            double twice_max = 0.0;
            for (int i = 0; i < op->nin; i++)
                if (2.0 * slots[op->in[i]].scale > twice_max) twice_max = 2.0 * slots[op->in[i]].scale;
            for (int i = 0; i <= op->nin; i++) { /* checked when counting too */
                double M = op->kind == LT_CONCAT ? (i < op->nin ? (double)slots[op->in[i]].scale / op->scale : 0.0)
                           : i < op->nin ? slots[op->in[i]].scale / twice_max
                                         : twice_max / ((double)(1 << 20) * op->scale);
                if (!(M < 65536.0)) return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: scales too far apart", l->index);
                int32_t m;
                int shift;
                lq_quantize_multiplier(M, &m, &shift);
                if (op->mult) op->mult[i] = m, op->shift[i] = shift;
            }
            set_clamp(op);
            if (op->kind == LT_ADD) { /* all 65536 answers, once: the add is then a lookup */
                op->lut = take(x, 65536);
                for (int a = 0; op->lut && a < 256; a++)
                    for (int b = 0; b < 256; b++)
                        op->lut[a << 8 | b] = add_code(op, slots[op->in[0]].zp, slots[op->in[1]].zp, (int8_t)a, (int8_t)b);
            }
        }
        break;
    }
    case LT_ACT:
        op->h = in->h, op->w = in->w, op->c = in->c, op->flat = in->flat;
        if (op->act == LA_NONE) return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: act needs f=", l->index);
        if (q && op->act != LA_RELU)
            return fail(x, CNN_LITE_ERR_UNSUPPORTED, "graph line %d: int8 models take ReLU only (quantize with --mode "
                        "dynamic for %s)", l->index, ACT_NAMES[op->act]);
        break;
    case LT_SCALE: {
        if (q) return fail(x, CNN_LITE_ERR_UNSUPPORTED, "graph line %d: scale is float only", l->index);
        op->h = in->h, op->w = in->w, op->c = in->c, op->flat = in->flat;
        int64_t shape[1] = {in->c};
        const unsigned char *unused;
        const void *none;
        if ((st = load_weights(x, f, l, "w", LM_FLOAT, 1, 1, shape, 0, &none, &op->wf, &unused)) ||
            (st = load_weights(x, f, l, "b", LM_FLOAT, 1, 1, shape, 0, &none, &op->bf, &unused)))
            return st;
        break;
    }
    case LT_SOFTMAX:
        if (!in->flat) return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: softmax of an image", l->index);
        op->h = op->w = 1, op->c = in->c, op->flat = 1;
        break;
    }
    if (q && !op->q) { /* the ops that keep their input's scale (the input's own is its q=) */
        if (op->kind == LT_INPUT) {
            if (line_q(l, &op->scale, &op->zp) != 1)
                return fail(x, CNN_LITE_ERR_FORMAT, "graph line 0: an int8 input needs " Q_NEEDS);
        } else {
            op->scale = in->scale;
            op->zp = in->zp;
        }
        op->q = op->kind != LT_SOFTMAX;
        op->act_min = op->act == LA_RELU ? op->zp : -128;
        op->act_max = 127;
    }
    /* the declared output shape */
    int decl[3], nd = line_ints(l, "out", decl, 3);
    int ok = op->flat ? (nd == 1 && decl[0] == op->c) : (nd == 3 && decl[0] == op->h && decl[1] == op->w && decl[2] == op->c);
    if (op->kind != LT_INPUT && !ok)
        return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: out= does not match the %s's output %dx%dx%d", l->index,
                    KIND_NAMES[op->kind], op->h, op->w, op->c);
    if ((int64_t)op->h * op->w * op->c > ((int64_t)1 << 28))
        return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: an output of %lld values per image", l->index,
                    (long long)op->h * op->w * op->c);
    out->h = op->h, out->w = op->w, out->c = op->c, out->flat = op->flat, out->q = op->q;
    out->scale = op->scale, out->zp = op->zp;
    out->bytes = (size_t)op->h * op->w * op->c * (op->q ? 1 : sizeof(float));
    out->last = l->index;
    op->bytes = out->bytes;
    return CNN_LITE_OK;
}

/* First fit of each output among those still alive (by offset); returns the activations' size. */
static size_t plan(lt_slot *slots, int n, int batch)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t need = (slots[i].bytes * (size_t)batch + (LT_ALIGN - 1)) & ~(size_t)(LT_ALIGN - 1), at = 0;
        for (int moved = 1; moved;) { /* the lowest offset clear of every live output */
            moved = 0;
            for (int j = 0; j < i; j++) {
                if (slots[j].last < i) continue; /* dead by the time i is written */
                size_t jb = (slots[j].bytes * (size_t)batch + (LT_ALIGN - 1)) & ~(size_t)(LT_ALIGN - 1);
                if (at < slots[j].off + jb && slots[j].off < at + need) {
                    at = slots[j].off + jb;
                    moved = 1;
                }
            }
        }
        slots[i].off = at;
        if (at + need > total) total = at + need;
    }
    return total;
}

static cnn_lite_status metadata_text(lt_ctx *x, const lt_file *f, int key, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!f->meta[key]) return CNN_LITE_OK;
    long n = js_decode(f->meta[key], f->meta_len[key], NULL);
    if (n < 0) return fail(x, CNN_LITE_ERR_FORMAT, "metadata %s: a bad escape", META_KEYS[key]);
    char *s = take(x, (size_t)n + 1);
    if (s) {
        js_decode(f->meta[key], f->meta_len[key], s);
        s[n] = '\0';
    }
    *out = s;
    *len = (size_t)n;
    return CNN_LITE_OK;
}

static int parse_floats(const char *s, size_t len, float *v, int n)
{
    const char *p = s, *end = s + len;
    for (int i = 0; i < n; i++) {
        if (!parse_float(p, end, &v[i], &p)) return 0;
        if (i + 1 < n && (p >= end || *p++ != ',')) return 0;
    }
    return p == end;
}

/* The graph's next line: the raw JSON string's bytes up to "\n" (the quantizer writes no other escape there). */
static int next_line(const char **p, const char *end, lt_line *l)
{
    while (*p < end) {
        const char *q = *p, *e = q;
        while (e < end && !(e[0] == '\\' && e + 1 < end && e[1] == 'n')) e++;
        *p = e < end ? e + 2 : end;
        if (e > q) {
            l->p = q;
            l->end = e;
            return 1;
        }
    }
    return 0;
}

/* The whole setup, counting (x->base NULL) or for real. */
static cnn_lite_status build(lt_ctx *x, const void *model, size_t len, int max_batch, cnn_lite **out)
{
    if (!model || max_batch < 1 || max_batch > (1 << 20))
        return fail(x, CNN_LITE_ERR_ARG, "a model buffer and a max_batch from 1 to 2^20 are needed");
    lt_file f;
    cnn_lite_status st = open_file(x, model, len, &f);
    if (st) return st;
    if (!f.meta[MK_FORMAT] || !span_is(f.meta[MK_FORMAT], f.meta_len[MK_FORMAT], "cnn.c lite"))
        return fail(x, CNN_LITE_ERR_FORMAT, "not a model for cnn-lite: its metadata lacks format \"cnn.c lite\" (write "
                    "one with cnn quantize)");
    int mode = -1;
    for (int i = 0; i < 4 && f.meta[MK_MODE]; i++)
        if (span_is(f.meta[MK_MODE], f.meta_len[MK_MODE], MODE_NAMES[i])) mode = i;
    if (mode < 0) return fail(x, CNN_LITE_ERR_FORMAT, "metadata mode must be int8, dynamic, fp16 or float");
    const char *g = f.meta[MK_GRAPH], *gend = g ? g + f.meta_len[MK_GRAPH] : NULL;
    if (!g) return fail(x, CNN_LITE_ERR_FORMAT, "metadata graph is missing");
    for (const char *q = g; q < gend; q++)
        if (*q == '\\' && !(q + 1 < gend && q[1] == 'n'))
            return fail(x, CNN_LITE_ERR_FORMAT, "metadata graph: an escape other than \\n");
    int lines = 0;
    lt_line l;
    for (const char *q = g; next_line(&q, gend, &l);) lines++;
    if (lines < 2 || lines > LT_MAX_OPS)
        return fail(x, CNN_LITE_ERR_FORMAT, "the graph has %d lines: from 2 (an input and an op) to %d", lines,
                    LT_MAX_OPS);
    cnn_lite *m = take(x, sizeof *m);
    lt_op *ops = take(x, (size_t)lines * sizeof *ops), scratch;
    if (x->base && (!m || !ops)) return fail(x, CNN_LITE_ERR_ARENA, "the arena has %zu bytes: too small", x->cap);
    lt_slot slots[LT_MAX_OPS];
    int nops = 0, most_channels = 1;
    for (const char *q = g; next_line(&q, gend, &l);) {
        l.index = nops;
        lt_op *op = ops ? &ops[nops] : &scratch;
        if ((st = parse_op(x, &f, mode, &l, slots, op))) return st;
        if (op->c > most_channels) most_channels = op->c; /* a conv's sums, a pooling's */
        if (op->kind == LT_SOFTMAX && nops != lines - 1)
            return fail(x, CNN_LITE_ERR_FORMAT, "graph line %d: softmax comes last", nops);
        nops++;
    }
    const lt_slot *last = &slots[nops - 1];
    if (!last->flat) return fail(x, CNN_LITE_ERR_FORMAT, "the graph must end in class scores (a flat output)");
    int k = last->c, c = slots[0].c;
    if (k > LT_MAX_CLASSES) return fail(x, CNN_LITE_ERR_FORMAT, "%d classes: at most %d", k, LT_MAX_CLASSES);
    size_t acts = plan(slots, nops, max_batch);
    unsigned char *actmem = take(x, acts);
    float *logits = take(x, (size_t)max_batch * (size_t)k * sizeof(float));
    int32_t *acc = take(x, (size_t)most_channels * sizeof(int32_t));
    float *mean = take(x, (size_t)c * sizeof(float)), *sd = take(x, (size_t)c * sizeof(float));
    char **class_names = take(x, (size_t)k * sizeof(char *));
    char *names;
    size_t names_len;
    if ((st = metadata_text(x, &f, MK_CLASSES, &names, &names_len))) return st;
    /* the normalization and the resize: plain numbers (no escapes), checked from the file's bytes in both passes */
    const char *mean_s = f.meta[MK_MEAN], *std_s = f.meta[MK_STD], *resize_s = f.meta[MK_RESIZE];
    size_t mean_len = f.meta_len[MK_MEAN], std_len = f.meta_len[MK_STD], resize_len = f.meta_len[MK_RESIZE];
    int has_norm = mean_s && std_s && mean_len && std_len, rh = 0, rw = 0;
    if (has_norm) {
        float mv[LT_MAX_IN], sv[LT_MAX_IN];
        if (c > LT_MAX_IN || !parse_floats(mean_s, mean_len, mv, c) || !parse_floats(std_s, std_len, sv, c))
            return fail(x, CNN_LITE_ERR_FORMAT, "metadata norm_mean/norm_std must hold %d numbers each", c);
        for (int i = 0; i < c; i++) {
            if (!(sv[i] > 0.0f)) return fail(x, CNN_LITE_ERR_FORMAT, "metadata norm_std[%d] must be > 0", i);
            if (mean) mean[i] = mv[i], sd[i] = sv[i];
        }
    }
    if (resize_s && resize_len) {
        const char *q = resize_s, *e = resize_s + resize_len;
        while (q < e && *q >= '0' && *q <= '9' && rh <= LT_MAX_DIM) rh = rh * 10 + (*q++ - '0');
        if (q < e && *q == 'x') q++;
        while (q < e && *q >= '0' && *q <= '9' && rw <= LT_MAX_DIM) rw = rw * 10 + (*q++ - '0');
        if (q != e || rh < slots[0].h || rw < slots[0].w || rh > LT_MAX_DIM || rw > LT_MAX_DIM)
            return fail(x, CNN_LITE_ERR_FORMAT, "metadata resize must be HxW, at least the input");
    }
    if (x->used == SIZE_MAX) return fail(x, CNN_LITE_ERR_FORMAT, "the model needs more memory than can be addressed");
    if (!x->base) return CNN_LITE_OK; /* counted */
    if (x->used > x->cap)
        return fail(x, CNN_LITE_ERR_ARENA, "the arena has %zu bytes; this model needs %zu (cnn_lite_arena_size)",
                    x->cap, x->used);
    memset(m, 0, sizeof *m);
    m->mode = mode;
    m->nops = nops;
    m->ops = ops;
    m->max_batch = max_batch;
    m->h = slots[0].h, m->w = slots[0].w, m->c = c, m->k = k;
    m->acts = actmem;
    m->acts_bytes = acts;
    m->logits = logits;
    m->acc = acc;
    for (int i = 0; i < nops; i++) ops[i].off = slots[i].off;
    if (has_norm) {
        m->has_norm = 1;
        m->mean = mean;
        m->std = sd;
    }
    m->rh = rh, m->rw = rw;
    if (names && names_len) { /* one a line, in place */
        m->class_names = class_names;
        char *q = names;
        for (int j = 0; j < k; j++) {
            class_names[j] = q && *q ? q : NULL;
            char *nl = q ? strchr(q, '\n') : NULL;
            if (nl) *nl = '\0';
            q = nl ? nl + 1 : NULL;
        }
    }
    *out = m;
    return CNN_LITE_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// the public entry points

cnn_lite_status cnn_lite_arena_size(const void *model, size_t len, int max_batch, size_t *bytes, char *err,
                                    size_t errlen)
{
    lt_ctx x = {err, errlen, NULL, 0, 0};
    if (!bytes) return fail(&x, CNN_LITE_ERR_ARG, "cnn_lite_arena_size: bytes is NULL");
    *bytes = 0;
    cnn_lite *unused = NULL;
    cnn_lite_status st = build(&x, model, len, max_batch, &unused);
    if (st == CNN_LITE_OK) *bytes = x.used + LT_ALIGN; /* the arena itself may start unaligned */
    return st;
}

cnn_lite_status cnn_lite_open(const void *model, size_t len, int max_batch, void *arena, size_t arena_bytes,
                              cnn_lite **out, char *err, size_t errlen)
{
    lt_ctx x = {err, errlen, NULL, 0, 0};
    if (!arena || !out) return fail(&x, CNN_LITE_ERR_ARG, "cnn_lite_open: arena and out are needed");
    *out = NULL;
    size_t need = 0; /* what the size query says, asked first: a small arena is named with what it lacks */
    cnn_lite_status st = cnn_lite_arena_size(model, len, max_batch, &need, err, errlen);
    if (st != CNN_LITE_OK) return st;
    if (arena_bytes < need)
        return fail(&x, CNN_LITE_ERR_ARENA, "the arena has %zu bytes; this model needs %zu at batch %d "
                    "(cnn_lite_arena_size)", arena_bytes, need, max_batch);
    size_t skew = (size_t)(-(uintptr_t)arena & (LT_ALIGN - 1));
    if (arena_bytes < skew) return fail(&x, CNN_LITE_ERR_ARENA, "the arena has %zu bytes: too small", arena_bytes);
    x.base = (unsigned char *)arena + skew;
    x.cap = arena_bytes - skew;
    return build(&x, model, len, max_batch, out);
}

void cnn_lite_input_shape(const cnn_lite *m, int *h, int *w, int *c)
{
    if (h) *h = m->h;
    if (w) *w = m->w;
    if (c) *c = m->c;
}

int cnn_lite_num_classes(const cnn_lite *m) { return m->k; }

const char *cnn_lite_class_name(const cnn_lite *m, int j)
{
    return m->class_names && j >= 0 && j < m->k ? m->class_names[j] : NULL;
}

const char *cnn_lite_mode(const cnn_lite *m) { return MODE_NAMES[m->mode]; }

int cnn_lite_normalization(const cnn_lite *m, float *mean, float *std)
{
    if (!m->has_norm) return 0;
    for (int i = 0; i < m->c; i++) {
        if (mean) mean[i] = m->mean[i];
        if (std) std[i] = m->std[i];
    }
    return 1;
}

int cnn_lite_resize(const cnn_lite *m, int *h, int *w)
{
    if (!m->rh) return 0;
    if (h) *h = m->rh;
    if (w) *w = m->rw;
    return 1;
}

// ---------------------------------------------------------------------------------------------------------------
// the kernels: per op, over the batch (outputs n x h x w x c, NHWC)

static float act_f(int act, float alpha, float v)
{
    switch (act) {
    case LA_RELU: return v > 0.0f ? v : 0.0f;
    case LA_LEAKY: return v > 0.0f ? v : alpha * v;
    case LA_ELU: return v > 0.0f ? v : alpha * (expf(v) - 1.0f);
    case LA_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case LA_TANH: return tanhf(v);
    case LA_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case LA_SILU: return v / (1.0f + expf(-v));
    default: return v;
    }
}

static void conv_f(const lt_op *op, const lt_op *in, const float *x, float *y, int n)
{
    int cin = in->c, cg = cin / op->groups, ng = op->n / op->groups;
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < op->h; oy++)
            for (int ox = 0; ox < op->w; ox++) {
                float *out = y + (((size_t)b * op->h + oy) * op->w + ox) * op->n;
                for (int o = 0; o < op->n; o++) out[o] = op->bf ? op->bf[o] : 0.0f;
                for (int ky = 0; ky < op->kh; ky++) {
                    int iy = oy * op->sh - op->pt + ky * op->dh;
                    if (iy < 0 || iy >= in->h) continue;
                    for (int kx = 0; kx < op->kw; kx++) {
                        int ix = ox * op->sw - op->pl + kx * op->dw;
                        if (ix < 0 || ix >= in->w) continue;
                        const float *px = x + (((size_t)b * in->h + iy) * in->w + ix) * cin;
                        for (int o = 0; o < op->n; o++) {
                            const float *wr = op->wf + (((size_t)o * op->kh + ky) * op->kw + kx) * cg;
                            const float *xs = px + (o / ng) * cg;
                            float acc = 0.0f;
                            for (int i = 0; i < cg; i++) acc += xs[i] * wr[i];
                            out[o] += acc;
                        }
                    }
                }
                for (int o = 0; o < op->n; o++) out[o] = act_f(op->act, op->alpha, out[o]);
            }
}

/* An int8 conv's or dense's output code from its sum (without the bias): + bias, rescaled, + zero point, clamped
 * (to ReLU's floor too). The sum is exact in int32 (the loader bounds the taps); the bias is added in 64 bits. */
static int8_t requant(const lt_op *op, int o, int32_t sum)
{
    int64_t acc = (int64_t)sum + (op->b32 ? op->b32[o] : 0);
    int32_t a = (int32_t)(acc > INT32_MAX ? INT32_MAX : acc < INT32_MIN ? INT32_MIN : acc);
    int64_t v = (int64_t)lq_scale(a, op->mult[o], op->shift[o]) + op->zp;
    return (int8_t)(v < op->act_min ? op->act_min : v > op->act_max ? op->act_max : v);
}

static void conv_q(const lt_op *op, const lt_op *in, const int8_t *x, int8_t *y, int n, int32_t *acc)
{
    int cin = in->c, cg = cin / op->groups, ng = op->n / op->groups;
    int32_t zp = in->zp;
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < op->h; oy++)
            for (int ox = 0; ox < op->w; ox++) {
                for (int o = 0; o < op->n; o++) acc[o] = 0;
                for (int ky = 0; ky < op->kh; ky++) {
                    int iy = oy * op->sh - op->pt + ky * op->dh;
                    if (iy < 0 || iy >= in->h) continue;
                    for (int kx = 0; kx < op->kw; kx++) {
                        int ix = ox * op->sw - op->pl + kx * op->dw;
                        if (ix < 0 || ix >= in->w) continue; /* padding is the real 0: (zp - zp) * w */
                        const int8_t *px = x + (((size_t)b * in->h + iy) * in->w + ix) * cin;
                        for (int o = 0; o < op->n; o++) {
                            const int8_t *wr = op->w8 + (((size_t)o * op->kh + ky) * op->kw + kx) * cg;
                            const int8_t *xs = px + (o / ng) * cg;
                            int32_t s = 0;
                            for (int i = 0; i < cg; i++) s += ((int32_t)xs[i] - zp) * (int32_t)wr[i];
                            acc[o] += s;
                        }
                    }
                }
                int8_t *out = y + (((size_t)b * op->h + oy) * op->w + ox) * op->n;
                for (int o = 0; o < op->n; o++) out[o] = requant(op, o, acc[o]);
            }
}

static void dense_f(const lt_op *op, int features, const float *x, float *y, int n)
{
    for (int b = 0; b < n; b++)
        for (int o = 0; o < op->n; o++) {
            const float *wr = op->wf + (size_t)o * features, *xs = x + (size_t)b * features;
            float acc = 0.0f;
            for (int i = 0; i < features; i++) acc += xs[i] * wr[i];
            y[(size_t)b * op->n + o] = act_f(op->act, op->alpha, acc + (op->bf ? op->bf[o] : 0.0f));
        }
}

static void dense_q(const lt_op *op, const lt_op *in, int features, const int8_t *x, int8_t *y, int n)
{
    for (int b = 0; b < n; b++)
        for (int o = 0; o < op->n; o++) {
            const int8_t *wr = op->w8 + (size_t)o * features, *xs = x + (size_t)b * features;
            int32_t acc = 0;
            for (int i = 0; i < features; i++) acc += ((int32_t)xs[i] - in->zp) * (int32_t)wr[i];
            y[(size_t)b * op->n + o] = requant(op, o, acc);
        }
}

/* Max or average (padding excluded) pooling, float or int8; global pooling is the whole input's window. Each
 * output pixel's channels are accumulated together (a contiguous inner loop); int8 sums go to `acc` (c ints). */
static void pool(const lt_op *op, const lt_op *in, const void *xv, void *yv, int n, int32_t *acc)
{
    int global = op->kind == LT_GAP, mx = op->kind == LT_MAXPOOL;
    int oh = global ? 1 : op->h, ow = global ? 1 : op->w, c = in->c;
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                int y0 = global ? 0 : oy * op->sh - op->pt, x0 = global ? 0 : ox * op->sw - op->pl;
                int kh = global ? in->h : op->kh, kw = global ? in->w : op->kw, count = 0;
                size_t o = (((size_t)b * oh + oy) * ow + ox) * (size_t)c;
                int8_t *yq = (int8_t *)yv + o;
                float *yf = (float *)yv + o;
                for (int ch = 0; ch < c; ch++) {
                    if (op->q) {
                        if (mx) yq[ch] = -128;
                        else acc[ch] = 0;
                    } else {
                        yf[ch] = mx ? -INFINITY : 0.0f;
                    }
                }
                for (int ky = 0; ky < kh; ky++) {
                    int iy = y0 + ky;
                    if (iy < 0 || iy >= in->h) continue;
                    for (int kx = 0; kx < kw; kx++) {
                        int ix = x0 + kx;
                        if (ix < 0 || ix >= in->w) continue;
                        size_t at = (((size_t)b * in->h + iy) * in->w + ix) * (size_t)c;
                        count++;
                        if (op->q) {
                            const int8_t *xs = (const int8_t *)xv + at;
                            if (mx)
                                for (int ch = 0; ch < c; ch++) yq[ch] = xs[ch] > yq[ch] ? xs[ch] : yq[ch];
                            else
                                for (int ch = 0; ch < c; ch++) acc[ch] += xs[ch];
                        } else {
                            const float *xs = (const float *)xv + at;
                            if (mx)
                                for (int ch = 0; ch < c; ch++) yf[ch] = xs[ch] > yf[ch] ? xs[ch] : yf[ch];
                            else
                                for (int ch = 0; ch < c; ch++) yf[ch] += xs[ch];
                        }
                    }
                }
                if (mx) continue;
                for (int ch = 0; ch < c; ch++) {
                    if (op->q) {
                        int32_t qs = acc[ch]; /* round half away from zero */
                        int32_t v = qs > 0 ? (qs + count / 2) / count : (qs - count / 2) / count;
                        yq[ch] = (int8_t)lq_clamp(v, -128, 127);
                    } else {
                        yf[ch] /= (float)count;
                    }
                }
            }
}

/* An int8 add of two codes (TFLite's arithmetic: each input shifted left 20 bits, rescaled, summed, rescaled). */
static int8_t add_code(const lt_op *op, int32_t za, int32_t zb, int32_t a, int32_t b)
{
    int32_t va = lq_scale((a - za) * (1 << 20), op->mult[0], op->shift[0]);
    int32_t vb = lq_scale((b - zb) * (1 << 20), op->mult[1], op->shift[1]);
    int64_t v = (int64_t)lq_scale(va + vb, op->mult[2], op->shift[2]) + op->zp;
    return (int8_t)(v < op->act_min ? op->act_min : v > op->act_max ? op->act_max : v);
}

/* The add of every element: one lookup in the op's table of all 256 x 256 pairs of codes (add_code, at setup). */
static void add_q(const lt_op *op, const int8_t *xa, const int8_t *xb, int8_t *y, size_t count)
{
    for (size_t i = 0; i < count; i++) y[i] = op->lut[(size_t)(uint8_t)xa[i] << 8 | (uint8_t)xb[i]];
}

/* An int8 conv or dense op through the accelerator: 1 when it took it (y written), 0 to compute it here. */
static int accelerated(cnn_lite *m, int i, const lt_op *op, const lt_op *in, const void *x, void *y, int n)
{
    if (!m->accel) return 0;
    cnn_lite_qop q = {op->kind == LT_DENSE, in->h, in->w, in->c, op->h, op->w, op->n, op->kh, op->kw, op->sh,
                      op->sw, op->dh, op->dw, op->groups, op->pt, op->pl, op->pb, op->pr, in->zp, op->w8, op->b32,
                      op->mult, op->shift, op->zp, op->act_min, op->act_max};
    return m->accel(m->accel_ctx, i, &q, x, n, y);
}

void cnn_lite_set_accel(cnn_lite *m, cnn_lite_accel fn, void *ctx)
{
    m->accel = fn;
    m->accel_ctx = ctx;
}

/* The ops in order; the input op takes `x` (normalized when normalize is 0, else normalized here). */
static cnn_lite_status run(cnn_lite *m, const float *x, int n, int normalize, float *scores, cnn_lite_observer obs,
                           void *ctx, char *err, size_t errlen)
{
    lt_ctx e = {err, errlen, NULL, 0, 0};
    if (!m || !x || !scores) return fail(&e, CNN_LITE_ERR_ARG, "cnn_lite: a NULL argument");
    if (n < 1 || n > m->max_batch)
        return fail(&e, CNN_LITE_ERR_ARG, "cnn_lite: %d images: from 1 to the max_batch of %d", n, m->max_batch);
    int final = m->nops - 1;
    if (m->ops[final].kind == LT_SOFTMAX) final = m->ops[final].in[0];
    for (int i = 0; i <= final; i++) {
        const lt_op *op = &m->ops[i];
        void *y = m->acts + op->off;
        const lt_op *in = op->nin ? &m->ops[op->in[0]] : NULL;
        const void *xin = in ? m->acts + in->off : NULL;
        size_t per = (size_t)op->h * op->w * op->c, count = per * (size_t)n;
        switch (op->kind) {
        case LT_INPUT:
            for (size_t j = 0; j < count; j++) {
                float v = x[j];
                if (normalize && m->has_norm) v = (v - m->mean[j % (size_t)m->c]) / m->std[j % (size_t)m->c];
                if (op->q)
                    ((int8_t *)y)[j] = lq_quantize(v, op->scale, op->zp);
                else
                    ((float *)y)[j] = v;
            }
            break;
        case LT_CONV:
            if (op->q && accelerated(m, i, op, in, xin, y, n)) break;
            if (op->q)
                conv_q(op, in, xin, y, n, m->acc);
            else
                conv_f(op, in, xin, y, n);
            break;
        case LT_DENSE: {
            int features = in->h * in->w * in->c;
            if (op->q && accelerated(m, i, op, in, xin, y, n)) break;
            if (op->q)
                dense_q(op, in, features, xin, y, n);
            else
                dense_f(op, features, xin, y, n);
            break;
        }
        case LT_MAXPOOL:
        case LT_AVGPOOL:
        case LT_GAP:
            pool(op, in, xin, y, n, m->acc);
            break;
        case LT_FLATTEN:
            memcpy(y, xin, count * (op->q ? 1 : sizeof(float)));
            break;
        case LT_ADD: {
            const lt_op *b = &m->ops[op->in[1]];
            const void *xb = m->acts + b->off;
            if (op->q) {
                add_q(op, xin, xb, y, count);
            } else {
                for (size_t j = 0; j < count; j++)
                    ((float *)y)[j] = act_f(op->act, op->alpha, ((const float *)xin)[j] + ((const float *)xb)[j]);
            }
            break;
        }
        case LT_CONCAT: {
            size_t pix = (size_t)op->h * op->w * (size_t)n;
            int at = 0;
            for (int k = 0; k < op->nin; k++) {
                const lt_op *s = &m->ops[op->in[k]];
                const unsigned char *xs = m->acts + s->off;
                for (size_t p = 0; p < pix; p++)
                    for (int ch = 0; ch < s->c; ch++) {
                        size_t src = p * (size_t)s->c + (size_t)ch, dst = p * (size_t)op->c + (size_t)(at + ch);
                        if (op->q)
                        {
                            int64_t v = (int64_t)lq_scale((int32_t)((const int8_t *)xs)[src] - s->zp, op->mult[k],
                                                          op->shift[k]) + op->zp;
                            ((int8_t *)y)[dst] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
                        }
                        else
                            ((float *)y)[dst] = ((const float *)xs)[src];
                    }
                at += s->c;
            }
            break;
        }
        case LT_ACT:
            for (size_t j = 0; j < count; j++) {
                if (op->q)
                    ((int8_t *)y)[j] = (int8_t)lq_clamp(((const int8_t *)xin)[j], op->act_min, op->act_max);
                else
                    ((float *)y)[j] = act_f(op->act, op->alpha, ((const float *)xin)[j]);
            }
            break;
        case LT_SCALE:
            for (size_t j = 0; j < count; j++) {
                int ch = (int)(j % (size_t)op->c);
                ((float *)y)[j] = ((const float *)xin)[j] * op->wf[ch] + op->bf[ch];
            }
            break;
        default:
            break;
        }
        if (obs && !op->q) obs(ctx, i, y, count);
    }
    const lt_op *last = &m->ops[final];
    const void *out = m->acts + last->off;
    for (size_t j = 0; j < (size_t)n * (size_t)m->k; j++)
        scores[j] = last->q ? last->scale * (float)(((const int8_t *)out)[j] - last->zp) : ((const float *)out)[j];
    return CNN_LITE_OK;
}

cnn_lite_status cnn_lite_logits(cnn_lite *m, const float *normalized, int n, float *logits, char *err, size_t errlen)
{
    return run(m, normalized, n, 0, logits, NULL, NULL, err, errlen);
}

cnn_lite_status cnn_lite_run_observed(cnn_lite *m, const float *normalized, int n, float *logits,
                                      cnn_lite_observer obs, void *ctx, char *err, size_t errlen)
{
    return run(m, normalized, n, 0, logits, obs, ctx, err, errlen);
}

int cnn_lite_num_ops(const cnn_lite *m) { return m->nops; }

int cnn_lite_is_int8(const cnn_lite *m) { return m->mode == LM_INT8; }

void cnn_lite_op(const cnn_lite *m, int i, cnn_lite_op_info *info)
{
    const lt_op *op = &m->ops[i];
    memset(info, 0, sizeof *info);
    info->kind = op->kind;
    info->nin = op->nin;
    for (int k = 0; k < op->nin && k < 8; k++) info->in[k] = op->in[k];
    info->h = op->h, info->w = op->w, info->c = op->c, info->flat = op->flat;
    info->kh = op->kh, info->kw = op->kw, info->sh = op->sh, info->sw = op->sw, info->dh = op->dh, info->dw = op->dw;
    info->groups = op->groups, info->pt = op->pt, info->pl = op->pl, info->pb = op->pb, info->pr = op->pr;
    info->act = op->act, info->alpha = op->alpha;
    info->q = op->q, info->scale = op->scale, info->zp = op->zp, info->act_min = op->act_min;
    info->act_max = op->act_max;
    info->w8 = op->w8, info->b32 = op->b32, info->mult = op->mult, info->shift = op->shift;
    info->wf = op->wf, info->bf = op->bf, info->lut = op->lut;
}

cnn_lite_status cnn_lite_predict(cnn_lite *m, const float *images, int n, float *probs, char *err, size_t errlen)
{
    cnn_lite_status st = run(m, images, n, 1, probs, NULL, NULL, err, errlen);
    if (st) return st;
    for (int b = 0; b < n; b++) { /* softmax, max-subtracted */
        float *p = probs + (size_t)b * m->k, mx = p[0], sum = 0.0f;
        for (int j = 1; j < m->k; j++) mx = p[j] > mx ? p[j] : mx;
        for (int j = 0; j < m->k; j++) sum += (p[j] = expf(p[j] - mx));
        for (int j = 0; j < m->k; j++) p[j] /= sum;
    }
    return CNN_LITE_OK;
}
