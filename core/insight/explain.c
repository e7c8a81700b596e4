/* Explanations of a prediction (include/cnn/explain.h): Grad-CAM and Grad-CAM++ from a layer's output and its
 * gradient, saliency, SmoothGrad and integrated gradients from input gradients, occlusion from forward passes; and
 * their pictures (the image, the heat map, the overlay, a caption) and raw files (.npy).
 *
 * Every method explains the target class's logit for one image, running as many images per pass as the cnn_grad
 * holds (SmoothGrad's noisy copies, the integrated-gradients path, occluded copies). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/explain.h"
#include "cnn/io.h"
#include "core/data/image.h"
#include "core/draw.h"
#include "core/error.h"
#include "core/free_list.h"
#include "core/nn/net.h"
#include "core/rng.h"

static const char *const METHOD_NAMES[] = {"gradcam", "gradcam++", "saliency", "smoothgrad", "integrated-gradients",
                                           "occlusion"};
_Static_assert(sizeof METHOD_NAMES / sizeof METHOD_NAMES[0] == CNN_EXPLAIN_METHOD_COUNT, "a name per method");

cnn_status cnn_explain_method_parse(const char *name, cnn_explain_method *out)
{
    for (int m = 0; name && m < CNN_EXPLAIN_METHOD_COUNT; m++)
        if (!strcmp(name, METHOD_NAMES[m])) {
            *out = (cnn_explain_method)m;
            return CNN_OK;
        }
    return cnn_error(CNN_ERR_INVALID_ARG, "unknown explanation method '%s' (known: gradcam, gradcam++, saliency, "
                     "smoothgrad, integrated-gradients, occlusion)", name ? name : "");
}

const char *cnn_explain_method_name(cnn_explain_method m)
{
    return m >= 0 && m < CNN_EXPLAIN_METHOD_COUNT ? METHOD_NAMES[m] : "?";
}

void cnn_explain_config_defaults(cnn_explain_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->method = CNN_EXPLAIN_GRADCAM;
    cfg->layer = -1;
    cfg->steps = 32;     /* Sundararajan et al. report 20 to 300 steps; 32 keeps completeness within ~1% here */
    cfg->samples = 25;   /* Smilkov et al.: the map stops improving beyond about 50; 25 is a common default */
    cfg->noise = 0.15f;  /* Smilkov et al.: 10-20% of the input range */
    cfg->seed = 1;
}

void cnn_explanation_free(cnn_explanation *e)
{
    if (!e) return;
    CNN_FREE_ALL(e->probs, e->map, e->raw);
    memset(e, 0, sizeof *e);
}

/* ---- helpers ---------------------------------------------------------------------------------------------- */

/* Bilinear resize of a (ih, iw) map to (oh, ow), with half-pixel centres (align_corners=False). */
static void upsample(const float *in, int ih, int iw, float *out, int oh, int ow)
{
    for (int y = 0; y < oh; y++) {
        double sy = ((double)y + 0.5) * ih / oh - 0.5;
        if (sy < 0) sy = 0;
        int y0 = (int)sy, y1 = y0 + 1 < ih ? y0 + 1 : ih - 1;
        double ly = sy - y0;
        for (int x = 0; x < ow; x++) {
            double sx = ((double)x + 0.5) * iw / ow - 0.5;
            if (sx < 0) sx = 0;
            int x0 = (int)sx, x1 = x0 + 1 < iw ? x0 + 1 : iw - 1;
            double lx = sx - x0;
            double v = (1 - ly) * ((1 - lx) * in[y0 * iw + x0] + lx * in[y0 * iw + x1]) +
                       ly * ((1 - lx) * in[y1 * iw + x0] + lx * in[y1 * iw + x1]);
            out[y * ow + x] = (float)v;
        }
    }
}

/* One-hot gradients of the target logit for n images. */
static void one_hot(float *d, int n, int k, int target)
{
    memset(d, 0, (size_t)n * (size_t)k * sizeof *d);
    for (int i = 0; i < n; i++) d[(size_t)i * k + target] = 1.0f;
}

/* ---- the methods ------------------------------------------------------------------------------------------ */

typedef struct work {
    cnn_grad *g;
    cnn_net *net;
    int h, w, c, k, cap;
    size_t per;
    float *batch;  /* cap x per */
    float *grads;  /* cap x per */
    float *dlog;   /* cap x k */
    float *probs;  /* cap x k */
} work;

static cnn_status grad_cam(work *wk, const cnn_explain_config *cfg, const float *image, cnn_explanation *e)
{
    cnn_status st = CNN_OK;
    int lh, lw, lc, nd;
    const int layer = e->layer;
    int64_t per = cnn_net_layer_shape(wk->net, layer, &lh, &lw, &lc, &nd);
    float *a = malloc((size_t)per * sizeof *a), *gr = malloc((size_t)per * sizeof *gr);
    double *alpha = calloc((size_t)lc, sizeof *alpha);
    e->raw = calloc((size_t)lh * lw, sizeof *e->raw);
    if (!a || !gr || !alpha || !e->raw) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for Grad-CAM");
        goto fail;
    }
    e->raw_h = lh;
    e->raw_w = lw;
    e->raw_c = 1;
    CNN_TRY(cnn_grad_forward(wk->g, image, 1, NULL, NULL));
    CNN_TRY(cnn_grad_layer_output(wk->g, layer, a));
    one_hot(wk->dlog, 1, wk->k, e->target);
    CNN_TRY(cnn_grad_backward(wk->g, wk->dlog, NULL, layer, gr));
    const int hw = lh * lw;
    if (cfg->method == CNN_EXPLAIN_GRADCAM) {
        for (int p = 0; p < hw; p++)
            for (int ch = 0; ch < lc; ch++) alpha[ch] += gr[(size_t)p * lc + ch];
        for (int ch = 0; ch < lc; ch++) alpha[ch] /= hw;
    } else { /* Grad-CAM++'s closed form for an exponential of the score (the paper's eq. 19) */
        for (int ch = 0; ch < lc; ch++) {
            double sum_a = 0.0;
            for (int p = 0; p < hw; p++) sum_a += a[(size_t)p * lc + ch];
            for (int p = 0; p < hw; p++) {
                double g1 = gr[(size_t)p * lc + ch], g2 = g1 * g1, g3 = g2 * g1;
                double den = 2.0 * g2 + sum_a * g3;
                double aij = g1 != 0.0 && den != 0.0 ? g2 / den : 0.0;
                alpha[ch] += aij * (g1 > 0.0 ? g1 : 0.0);
            }
        }
    }
    for (int p = 0; p < hw; p++) {
        double s = 0.0;
        for (int ch = 0; ch < lc; ch++) s += alpha[ch] * a[(size_t)p * lc + ch];
        e->raw[p] = s > 0.0 ? (float)s : 0.0f;
    }
    upsample(e->raw, lh, lw, e->map, e->h, e->w);
fail:
    free(a);
    free(gr);
    free(alpha);
    return st;
}

/* Gradient methods: the input gradient of the target logit, averaged over a set of images made from the input
 * (one for saliency, noisy copies for SmoothGrad, the path for integrated gradients). */
static cnn_status gradient_method(work *wk, const cnn_explain_config *cfg, const float *image, cnn_explanation *e)
{
    cnn_status st = CNN_OK;
    const size_t per = wk->per;
    int total = cfg->method == CNN_EXPLAIN_SALIENCY ? 1
                : cfg->method == CNN_EXPLAIN_SMOOTHGRAD ? cfg->samples : cfg->steps;
    double *acc = calloc(per, sizeof *acc);
    e->raw = malloc(per * sizeof *e->raw);
    if (!acc || !e->raw) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for %s", cnn_explain_method_name(cfg->method));
        goto fail;
    }
    e->raw_h = e->h;
    e->raw_w = e->w;
    e->raw_c = e->c;
    cnn_rng rng;
    cnn_rng_seed(&rng, cfg->seed);
    for (int first = 0; first < total; first += wk->cap) {
        int n = total - first < wk->cap ? total - first : wk->cap;
        for (int i = 0; i < n; i++) {
            float *dst = wk->batch + (size_t)i * per;
            if (cfg->method == CNN_EXPLAIN_SMOOTHGRAD) {
                for (size_t j = 0; j < per; j++) dst[j] = image[j] + cfg->noise * cnn_rng_normal(&rng);
            } else if (cfg->method == CNN_EXPLAIN_INTEGRATED_GRADIENTS) {
                float t = ((float)(first + i) + 0.5f) / (float)total; /* midpoint rule */
                for (size_t j = 0; j < per; j++) dst[j] = cfg->baseline + t * (image[j] - cfg->baseline);
            } else {
                memcpy(dst, image, per * sizeof *dst);
            }
        }
        CNN_TRY(cnn_grad_forward(wk->g, wk->batch, n, NULL, NULL));
        one_hot(wk->dlog, n, wk->k, e->target);
        CNN_TRY(cnn_grad_backward(wk->g, wk->dlog, wk->grads, -1, NULL));
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < per; j++) acc[j] += wk->grads[(size_t)i * per + j];
    }
    for (size_t j = 0; j < per; j++) {
        double v = acc[j] / total;
        if (cfg->method == CNN_EXPLAIN_INTEGRATED_GRADIENTS) v *= (double)image[j] - cfg->baseline;
        e->raw[j] = (float)v;
    }
    for (int p = 0; p < e->h * e->w; p++) {
        double m = 0.0;
        for (int ch = 0; ch < e->c; ch++) {
            double v = fabs(e->raw[(size_t)p * e->c + ch]);
            if (cfg->method == CNN_EXPLAIN_INTEGRATED_GRADIENTS) m += v;
            else if (v > m) m = v;
        }
        e->map[p] = (float)m;
    }
fail:
    free(acc);
    return st;
}

static cnn_status occlusion(work *wk, const cnn_explain_config *cfg, const float *image, cnn_explanation *e)
{
    cnn_status st = CNN_OK;
    const int h = e->h, w = e->w, c = e->c;
    const size_t per = wk->per;
    int win = cfg->window > 0 ? cfg->window : ((h < w ? h : w) + 6) / 7;
    if (win < 1) win = 1;
    int stride = cfg->stride > 0 ? cfg->stride : (win / 2 > 0 ? win / 2 : 1);
    /* window origins along each axis: every stride, and one flush with the far edge so that every pixel is covered */
    int ny = 0, nx = 0, wy = win < h ? win : h, wx = win < w ? win : w;
    int *oy = malloc(((size_t)h + 1) * sizeof *oy), *ox = malloc(((size_t)w + 1) * sizeof *ox);
    double *sum = calloc((size_t)h * w, sizeof *sum), *cnt = calloc((size_t)h * w, sizeof *cnt);
    e->raw = malloc((size_t)h * w * sizeof *e->raw);
    if (!oy || !ox || !sum || !cnt || !e->raw) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for occlusion");
        goto fail;
    }
    for (int y = 0;; y += stride) {
        if (y + wy >= h) {
            oy[ny++] = h - wy;
            break;
        }
        oy[ny++] = y;
    }
    for (int x = 0;; x += stride) {
        if (x + wx >= w) {
            ox[nx++] = w - wx;
            break;
        }
        ox[nx++] = x;
    }
    e->raw_h = h;
    e->raw_w = w;
    e->raw_c = 1;
    const double base = e->probs[e->target];
    const int total = ny * nx;
    for (int first = 0; first < total; first += wk->cap) {
        int n = total - first < wk->cap ? total - first : wk->cap;
        for (int i = 0; i < n; i++) {
            float *dst = wk->batch + (size_t)i * per;
            int y0 = oy[(first + i) / nx], x0 = ox[(first + i) % nx];
            memcpy(dst, image, per * sizeof *dst);
            for (int y = y0; y < y0 + wy; y++)
                for (int x = x0; x < x0 + wx; x++)
                    for (int ch = 0; ch < c; ch++) dst[((size_t)y * w + x) * c + ch] = cfg->baseline;
        }
        CNN_TRY(cnn_grad_forward(wk->g, wk->batch, n, NULL, wk->probs));
        for (int i = 0; i < n; i++) {
            int y0 = oy[(first + i) / nx], x0 = ox[(first + i) % nx];
            double drop = base - wk->probs[(size_t)i * wk->k + e->target];
            for (int y = y0; y < y0 + wy; y++)
                for (int x = x0; x < x0 + wx; x++) {
                    sum[y * w + x] += drop;
                    cnt[y * w + x] += 1.0;
                }
        }
    }
    for (int p = 0; p < h * w; p++) e->raw[p] = e->map[p] = cnt[p] > 0 ? (float)(sum[p] / cnt[p]) : 0.0f;
fail:
    free(oy);
    free(ox);
    free(sum);
    free(cnt);
    return st;
}

cnn_status cnn_explain_image(cnn_grad *g, const cnn_explain_config *cfg, const float *image, int target,
                             cnn_explanation *out)
{
    cnn_status st = CNN_OK;
    cnn_net *net = cnn_grad_net(g);
    work wk = {.g = g, .net = net, .k = cnn_net_num_outputs(net), .cap = cnn_grad_capacity(g)};
    cnn_explanation e = {0};
    cnn_net_input_shape(net, &wk.h, &wk.w, &wk.c);
    wk.per = (size_t)wk.h * wk.w * wk.c;
    memset(out, 0, sizeof *out);
    if (cfg->method < 0 || cfg->method >= CNN_EXPLAIN_METHOD_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "explain: unknown method %d", (int)cfg->method);
    if (target < -1 || target >= wk.k)
        return cnn_error(CNN_ERR_INVALID_ARG, "explain: class %d is out of range: the model has %d classes (0 to %d)",
                         target, wk.k, wk.k - 1);
    if (cfg->method == CNN_EXPLAIN_SMOOTHGRAD && (cfg->samples < 1 || !(cfg->noise >= 0.0f)))
        return cnn_error(CNN_ERR_INVALID_ARG, "explain: SmoothGrad needs samples >= 1 and noise >= 0 (got %d, %g)",
                         cfg->samples, (double)cfg->noise);
    if (cfg->method == CNN_EXPLAIN_INTEGRATED_GRADIENTS && cfg->steps < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "explain: integrated gradients need steps >= 1 (got %d)", cfg->steps);
    if (cfg->method == CNN_EXPLAIN_OCCLUSION && (cfg->window < 0 || cfg->stride < 0))
        return cnn_error(CNN_ERR_INVALID_ARG, "explain: occlusion's window and stride must be >= 0 (0: automatic)");
    e.layer = -1;
    if (cfg->method == CNN_EXPLAIN_GRADCAM || cfg->method == CNN_EXPLAIN_GRADCAM_PP) {
        e.layer = cfg->layer >= 0 ? cfg->layer : cnn_net_last_conv(net);
        int nd = 0;
        if (e.layer < 0)
            return cnn_error(CNN_ERR_NOT_FOUND, "explain: %s needs a convolution, and %s has none (name a layer with "
                             "an image output)", cnn_explain_method_name(cfg->method), net->source);
        if (cnn_net_layer_shape(net, e.layer, NULL, NULL, NULL, &nd) < 0)
            return cnn_error(CNN_ERR_NOT_FOUND, "explain: no layer %d (the model has %d)", e.layer, net->nlayers);
        if (nd != 3)
            return cnn_error(CNN_ERR_INVALID_ARG, "explain: %s needs a layer whose output is an image (h x w x c); "
                             "layer %s's is flat", cnn_explain_method_name(cfg->method), net->layers[e.layer]->name);
        if (cnn_net_view_root(net, e.layer) < 0)
            return cnn_error(CNN_ERR_INVALID_ARG, "explain: layer %s is the network input", net->layers[e.layer]->name);
    }
    e.h = wk.h;
    e.w = wk.w;
    e.c = wk.c;
    e.classes = wk.k;
    e.probs = malloc((size_t)wk.k * sizeof *e.probs);
    e.map = calloc((size_t)wk.h * wk.w, sizeof *e.map);
    wk.batch = malloc((size_t)wk.cap * wk.per * sizeof *wk.batch);
    wk.grads = malloc((size_t)wk.cap * wk.per * sizeof *wk.grads);
    wk.dlog = malloc((size_t)wk.cap * wk.k * sizeof *wk.dlog);
    wk.probs = malloc((size_t)wk.cap * wk.k * sizeof *wk.probs);
    if (!e.probs || !e.map || !wk.batch || !wk.grads || !wk.dlog || !wk.probs) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory explaining an image");
        goto fail;
    }
    CNN_TRY(cnn_grad_forward(g, image, 1, NULL, e.probs));
    e.predicted = 0;
    for (int j = 1; j < wk.k; j++)
        if (e.probs[j] > e.probs[e.predicted]) e.predicted = j;
    e.target = target >= 0 ? target : e.predicted;
    switch (cfg->method) {
    case CNN_EXPLAIN_GRADCAM:
    case CNN_EXPLAIN_GRADCAM_PP: st = grad_cam(&wk, cfg, image, &e); break;
    case CNN_EXPLAIN_OCCLUSION: st = occlusion(&wk, cfg, image, &e); break;
    default: st = gradient_method(&wk, cfg, image, &e); break;
    }
    if (st != CNN_OK) goto fail;
    *out = e;
    e = (cnn_explanation){0};
fail:
    free(wk.batch);
    free(wk.grads);
    free(wk.dlog);
    free(wk.probs);
    cnn_explanation_free(&e);
    return st;
}

static const unsigned char BLACK[3] = {0, 0, 0};
enum { LINE_H = 10, GAP = 4, BORDER = 4 };

/* ---- pictures and files ----------------------------------------------------------------------------------- */

/* The jet colour map of v in [0, 1]. */
static void jet(double v, double rgb[3])
{
    for (int i = 0; i < 3; i++) {
        double t = 1.5 - fabs(4.0 * v - (3.0 - i));
        rgb[i] = t < 0 ? 0 : t > 1 ? 1 : t;
    }
}

cnn_status cnn_explain_render(const cnn_explanation *e, const float *image, int scale, const char *const *lines,
                              int nlines, unsigned char **rgb, int *pw, int *ph)
{
    *rgb = NULL;
    if (scale < 1 || scale > 64 || nlines < 0 || e->h < 1 || e->w < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "explain render: scale %d, %d lines", scale, nlines);
    const int h = e->h * scale, w = e->w * scale, c = e->c;
    const int width = 3 * w + 2 * GAP + 2 * BORDER, height = h + 2 * BORDER + nlines * LINE_H + (nlines ? GAP : 0);
    if ((long long)width * height > (1LL << 26))
        return cnn_error(CNN_ERR_INVALID_ARG, "explain render: a %dx%d picture is too large", width, height);
    unsigned char *px = malloc((size_t)width * height * 3);
    if (!px) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a %dx%d picture", width, height);
    memset(px, 255, (size_t)width * height * 3);
    double top = 0.0;
    for (int p = 0; p < e->h * e->w; p++)
        if (e->map[p] > top) top = e->map[p];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int sy = y / scale, sx = x / scale;
            double pix[3], heat[3];
            for (int i = 0; i < 3; i++) {
                double v = image[((size_t)sy * e->w + sx) * c + (c == 3 ? i : 0)];
                pix[i] = v < 0 ? 0 : v > 1 ? 1 : v;
            }
            double m = top > 0 ? e->map[sy * e->w + sx] / top : 0.0;
            jet(m < 0 ? 0 : m, heat);
            for (int i = 0; i < 3; i++) {
                double panel[3] = {pix[i], heat[i], 0.5 * pix[i] + 0.5 * heat[i]};
                for (int k = 0; k < 3; k++)
                    px[((size_t)(BORDER + y) * width + BORDER + k * (w + GAP) + x) * 3 + i] =
                        (unsigned char)lrint(panel[k] * 255.0);
            }
        }
    for (int i = 0; i < nlines; i++)
        cnn_draw_text(px, width, height, BORDER, BORDER + h + GAP + i * LINE_H, lines[i], 1, BLACK);
    *rgb = px;
    *pw = width;
    *ph = height;
    return CNN_OK;
}

cnn_status cnn_png_write(const char *path, int w, int h, int c, const unsigned char *pixels)
{
    return cnn_image_write_png(path, w, h, c, pixels);
}

cnn_status cnn_npy_write(const char *path, const float *data, int ndim, const int64_t *shape)
{
    if (!path || !data || ndim < 1 || ndim > 8)
        return cnn_error(CNN_ERR_INVALID_ARG, "npy %s: bad arguments (%d dims)", path ? path : "", ndim);
    char dict[256];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return cnn_error(CNN_ERR_INVALID_ARG, "npy %s: negative dimension", path);
        n *= shape[d];
        len += snprintf(dict + len, sizeof dict - (size_t)len, ndim == 1 ? "%lld,), }" : d + 1 < ndim ? "%lld, " :
                        "%lld), }", (long long)shape[d]);
    }
    /* magic (6) + version (2) + header length (2) + dict, padded with spaces and a newline to 64 bytes */
    unsigned char head[512];
    size_t total = 10 + (size_t)len + 1;
    total = (total + 63) / 64 * 64;
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (unsigned char)((total - 10) & 0xff);
    head[9] = (unsigned char)((total - 10) >> 8);
    memcpy(head + 10, dict, (size_t)len);
    memset(head + 10 + len, ' ', total - 10 - (size_t)len);
    head[total - 1] = '\n';
    const void *parts[2] = {head, data};
    size_t sizes[2] = {total, (size_t)n * sizeof(float)};
    return cnn_write_file_atomic(path, parts, sizes, 2);
}
