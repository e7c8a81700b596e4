/* cnn.c — trust: gradients with respect to the input and to layer outputs, explanations (Grad-CAM, saliency,
 * integrated gradients, ...), adversarial attacks.
 *
 * Every function here runs the network in inference mode (batchnorm with its running statistics, dropout the
 * identity) and leaves the training state alone: the weights' gradients, the optimizer, batchnorm's running
 * statistics and the training step are not touched. What it overwrites is the network's activations of its last
 * forward pass (as cnn_net_predict does). Images are host NHWC floats in [0, 1] with the model's input shape,
 * not yet normalized (the model's normalization is applied inside, and gradients are with respect to the [0, 1]
 * pixels). The arithmetic must be fp32 or tf32 (cnn_net_set_precision); 16-bit networks are refused. */
#ifndef CNN_EXPLAIN_H
#define CNN_EXPLAIN_H

#include <stdint.h>

#include "cnn/net.h"
#include "cnn/pipeline.h"
#include "cnn/train.h"
#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- layers by name ---- */

/* Layers in definition order, named as cnn_net_summary shows them ("conv2d_1", or the definition's name=). */
CNN_API int cnn_net_num_layers(const cnn_net *net);
CNN_API const char *cnn_net_layer_name(const cnn_net *net, int i); /* borrowed; NULL out of range */
/* the definition keyword: "conv", "dense", ...; static */
CNN_API const char *cnn_net_layer_kind(const cnn_net *net, int i);
/* The index of the layer named `name`, or -1. */
CNN_API int cnn_net_layer_find(const cnn_net *net, const char *name);
/* The per-image output shape of layer i: *ndim 3 (h, w, c) or 1 (c features; h = w = 1). Returns the elements per
 * image, or -1 out of range. */
CNN_API int64_t cnn_net_layer_shape(const cnn_net *net, int i, int *h, int *w, int *c, int *ndim);
/* The last convolution whose output is an image (Grad-CAM's default layer), or -1 when the model has none. */
CNN_API int cnn_net_last_conv(const cnn_net *net);

/* ---- gradients ---- */

typedef struct cnn_grad cnn_grad;

/* Gradient buffers for `net`: one per layer output (a full set, unlike training's pooled ones) and the input's,
 * for up to max_batch images, on net's backend. The network must outlive it. */
CNN_API cnn_status cnn_grad_create(cnn_net *net, int max_batch, cnn_grad **out);
CNN_API void cnn_grad_destroy(cnn_grad *g);

/* Forward pass in inference mode on n images (1 <= n <= max_batch); logits and probs (host, n x outputs; either
 * may be NULL) receive the last layer's output and its softmax. */
CNN_API cnn_status cnn_grad_forward(cnn_grad *g, const float *images, int n, float *logits, float *probs);

/* Backward pass after cnn_grad_forward from dlogits (host, n x outputs): the gradient of
 * sum_i sum_k dlogits[i][k] * logits[i][k]. input_grad (host, n x H x W x C; may be NULL) receives its gradient
 * with respect to the [0, 1] input pixels (through the model's normalization). With layer >= 0, layer_grad (host,
 * n x the layer's elements) receives its gradient with respect to that layer's output (after its activation). */
CNN_API cnn_status cnn_grad_backward(cnn_grad *g, const float *dlogits, float *input_grad, int layer,
                                     float *layer_grad);

/* After cnn_grad_forward: layer i's output (host, n x its elements). */
CNN_API cnn_status cnn_grad_layer_output(cnn_grad *g, int layer, float *out);

/* The images one pass takes (max_batch of cnn_grad_create). */
CNN_API int cnn_grad_capacity(const cnn_grad *g);
CNN_API cnn_net *cnn_grad_net(const cnn_grad *g); /* borrowed */

/* ---- explanations ----
 *
 * What is explained is the target class's logit (the score before the softmax), as Grad-CAM and the gradient
 * methods define it; occlusion measures the target's probability. */

typedef enum cnn_explain_method {
    CNN_EXPLAIN_GRADCAM = 0,   /* Selvaraju et al. 2017: relu(sum_k alpha_k A^k), alpha_k the mean gradient of A^k */
    CNN_EXPLAIN_GRADCAM_PP,    /* Chattopadhay et al. 2018: alpha from second and third powers of the gradient */
    CNN_EXPLAIN_SALIENCY,      /* Simonyan et al. 2014: the input gradient, max |.| over channels */
    CNN_EXPLAIN_SMOOTHGRAD,    /* Smilkov et al. 2017: the input gradient averaged over noisy copies */
    CNN_EXPLAIN_INTEGRATED_GRADIENTS, /* Sundararajan et al. 2017: (x - x') times the mean gradient on the path */
    CNN_EXPLAIN_OCCLUSION,     /* Zeiler & Fergus 2014: the drop of the target's probability under a gray patch */
    CNN_EXPLAIN_METHOD_COUNT
} cnn_explain_method;

/* "gradcam", "gradcam++", "saliency", "smoothgrad", "integrated-gradients", "occlusion"; an unknown name gives
 * CNN_ERR_INVALID_ARG with a message listing them. */
CNN_API cnn_status cnn_explain_method_parse(const char *name, cnn_explain_method *out);
CNN_API const char *cnn_explain_method_name(cnn_explain_method m); /* "?" outside the enum */

typedef struct cnn_explain_config {
    cnn_explain_method method;
    int layer;       /* Grad-CAM(++): the layer whose output is explained (an image: h x w x c); -1: the last
                      * convolution */
    int steps;       /* integrated gradients: points on the path (midpoint rule), default 32 */
    int samples;     /* SmoothGrad: noisy copies, default 25 */
    float noise;     /* SmoothGrad: the noise's standard deviation in [0, 1] pixel units, default 0.15 (15% of the
                      * range, the paper's suggestion) */
    float baseline;  /* integrated gradients' baseline image and occlusion's patch: this value everywhere (0: black) */
    int window;      /* occlusion: the patch's side in pixels; 0: a seventh of the input's shorter side (at least 1) */
    int stride;      /* occlusion: the patch's step; 0: half the window (at least 1) */
    uint64_t seed;   /* SmoothGrad's noise */
} cnn_explain_config;

/* gradcam at the last convolution, 32 steps, 25 samples, noise 0.15, baseline 0, automatic window, seed 1. */
CNN_API void cnn_explain_config_defaults(cnn_explain_config *cfg);

typedef struct cnn_explanation {
    int h, w, c;        /* the input */
    int classes;
    float *probs;       /* (classes): the image's class probabilities */
    int predicted;      /* the most probable class */
    int target;         /* the explained class */
    float *map;         /* (h, w): the heat map at the input's resolution (Grad-CAM's bilinearly upsampled as
                         * torch.nn.functional.interpolate(align_corners=False) does); larger is more important */
    int raw_h, raw_w, raw_c;
    float *raw;         /* the raw attribution: Grad-CAM(++) (raw_h, raw_w) at the layer's resolution before upsampling;
                         * saliency, SmoothGrad and integrated gradients (h, w, c) signed per input element (the
                         * map is max |.| over channels for the first two, sum |.| for integrated gradients);
                         * occlusion (h, w), as the map */
    int layer;          /* Grad-CAM(++): the layer explained; -1 otherwise */
} cnn_explanation;

/* Explains one image (host, h x w x c in [0, 1]) for class `target` (-1: the predicted one) with g's network.
 * Errors name what is wrong: a class out of range, a layer that is not an image, a model without a convolution
 * for Grad-CAM. Free the result with cnn_explanation_free. */
CNN_API cnn_status cnn_explain_image(cnn_grad *g, const cnn_explain_config *cfg, const float *image, int target,
                                     cnn_explanation *out);
CNN_API void cnn_explanation_free(cnn_explanation *e);

/* Draws an explanation: the image, the heat map (jet colours, scaled by its maximum), the overlay (half each),
 * each scaled `scale` times (nearest neighbour), side by side, with `lines` of caption under them (5x7 font,
 * printable ASCII). *rgb (malloc'ed, *pw x *ph x 3) receives the picture. */
CNN_API cnn_status cnn_explain_render(const cnn_explanation *e, const float *image, int scale, const char *const *lines,
                                      int nlines, unsigned char **rgb, int *pw, int *ph);

/* Writes 8-bit pixels (w x h x c, c = 1, 3 or 4) as a PNG file, atomically. */
CNN_API cnn_status cnn_png_write(const char *path, int w, int h, int c, const unsigned char *pixels);

/* Writes a float32 array as a NumPy .npy file (version 1.0, little-endian '<f4', C order), atomically. */
CNN_API cnn_status cnn_npy_write(const char *path, const float *data, int ndim, const int64_t *shape);

/* ---- adversarial attacks ----
 *
 * L-infinity attacks on the cross-entropy of the true label: eps and alpha are in [0, 1] pixel units, before the
 * model's normalization; every adversarial image stays within eps of its original and inside [0, 1]. */

/* cnn_attack_method and cnn_attack_config are in cnn/train.h (adversarial training uses them). */

/* "fgsm", "pgd"; an unknown name gives CNN_ERR_INVALID_ARG listing them. */
CNN_API cnn_status cnn_attack_parse(const char *name, cnn_attack_method *out);
CNN_API const char *cnn_attack_name(cnn_attack_method m); /* "?" outside the enum */

/* FGSM, eps 8/255, 10 steps, automatic alpha, no random start, seed 1. */
CNN_API void cnn_attack_config_defaults(cnn_attack_config *cfg);
/* CNN_OK for a valid configuration; else CNN_ERR_INVALID_ARG naming the field (eps < 0 or > 1, steps < 1, ...). */
CNN_API cnn_status cnn_attack_check(const cnn_attack_config *cfg);

/* Adversarial versions of n images (host, [0, 1]) with their labels into adv (host, like images), in passes of
 * cnn_grad_capacity(g) images. `first` is the index of images[0] in its data set (random starts depend on it). */
CNN_API cnn_status cnn_attack_images(cnn_grad *g, const cnn_attack_config *cfg, const float *images,
                                     const int32_t *labels, int64_t n, int64_t first, float *adv);

typedef struct cnn_attack_result {
    int64_t n;               /* images evaluated */
    double clean_accuracy;   /* on the original images */
    double adv_accuracy;     /* on their adversarial versions */
    double clean_loss, adv_loss; /* mean cross-entropy */
} cnn_attack_result;

/* Accuracy under attack of `net` on a source (in memory or files, read as cnn_evaluate_source does, without
 * augmentation; `data` may be NULL), attacking batches of `batch` images. */
CNN_API cnn_status cnn_evaluate_attack(cnn_net *net, const cnn_source *src, const cnn_train_config *data, int batch,
                                       const cnn_attack_config *cfg, cnn_attack_result *out);

#ifdef __cplusplus
}
#endif
#endif
