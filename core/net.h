/* The network: a directed acyclic graph of layers in topological order (each layer names its inputs; the
 * default is the previous line), the activation and gradient buffers, and the steps the trainer drives (stage a
 * batch, forward, loss, backward). */
#ifndef CNN_CORE_NET_H
#define CNN_CORE_NET_H

#include "cnn/data.h"
#include "cnn/net.h"
#include "core/layer.h"

struct cnn_net {
    cnn_backend *backend;
    char *definition;      /* the model text, kept for model files */
    char *source;          /* where it came from, for messages */
    cnn_shape input;       /* (H, W, C) */
    cnn_layer **layers;
    int nlayers;
    int output_softmax;    /* the last layer's "softmax": its output is logits, probabilities come from the loss */
    uint64_t seed;         /* initialization seed; layers derive their dropout seeds from it */
    uint64_t step;         /* training steps taken: dropout masks differ per step (cnn_train advances it) */
    float label_smoothing; /* loss options, set by the trainer */
    cnn_tensor *class_weights; /* (K) or NULL */

    int capacity;          /* batch size the buffers hold */
    int batch;             /* current batch size */
    cnn_tensor *input_t;   /* (N, H, W, C) */
    cnn_tensor **acts;     /* acts[i]: output of layer i (a view for view layers) */
    cnn_tensor **grads;    /* grads[i]: gradient w.r.t. acts[i]; NULL where nothing upstream needs it */
    cnn_tensor **gscratch; /* where a second consumer's gradient goes before it is added in (largest act each) */
    int nscratch;
    cnn_tensor *labels;    /* (N) i32 */
    cnn_tensor *probs;     /* (N, K) */
    cnn_tensor *losses;    /* (N) */
    float *host_batch;     /* (N, H, W, C) staging for gather + normalization */
    int32_t *host_labels;  /* (N) */

    char **class_names;    /* num outputs entries or NULL */
    int has_norm;
    float *norm_mean, *norm_std; /* input channels each */
};

/* Parses the definition text into net->layers (no parameters yet). Defined in core/model_text.c. */
cnn_status cnn_model_parse(cnn_net *net, const char *text, const char *source);

/* Builds parameters for parsed layers (shape inference). */
cnn_status cnn_net_build(cnn_net *net);

/* Makes the buffers hold a batch of n (growing when needed) and sets every batch dim to n. */
cnn_status cnn_net_set_batch(cnn_net *net, int n);

/* Gathers samples idx[0..n) of ds (all of 0..n when idx is NULL, starting at `first`), applies the model's
 * normalization and uploads images and labels. */
cnn_status cnn_net_stage_batch(cnn_net *net, const cnn_dataset *ds, const int64_t *idx, int64_t first, int n);

cnn_status cnn_net_forward(cnn_net *net, int training);
/* Softmax cross-entropy of the last layer's output against the staged labels: fills net->probs and
 * net->losses, and with `with_grad` the last gradient (the mean loss's). */
cnn_status cnn_net_loss(cnn_net *net, int with_grad);
/* Backward through every layer in reverse order; gradients of outputs with several consumers are summed. Then
 * adds the layers' l1/l2 penalty gradients. */
cnn_status cnn_net_backward(cnn_net *net);

/* Trainable (params) and non-trainable (state) element counts. */
int64_t cnn_net_state_count(const cnn_net *net);

/* Loss options for training: label smoothing in [0, 1) and per-class weights (k floats, or NULL for none). */
cnn_status cnn_net_set_loss_options(cnn_net *net, float label_smoothing, const float *class_weights, int k);

#endif
