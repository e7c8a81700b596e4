/* Convolutions through cuDNN's graph (backend) API: one execution plan per direction and shape, chosen among the
 * engine configurations of cuDNN's heuristics by timing them (conv_graph.c). conv.c runs a direction through its
 * plan when there is one, and through the legacy API when cuDNN's graph API offers no engine for it. */
#ifndef CNN_CUDA_CONV_GRAPH_H
#define CNN_CUDA_CONV_GRAPH_H

#include "core/op_check.h"
#include "cuda/cuda_util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How convolutions reach cuDNN, from $CNN_CUDNN_CONV when the backend is created:
 *   unset or "auto": the graph API, and the legacy API for a shape where it has no engine;
 *   "graph": the graph API only (a shape without an engine is an error: what the tests use to check this path);
 *   "legacy": the legacy API only (cudnnFind*AlgorithmEx), for comparison. */
typedef enum cnn_cuda_conv_api {
    CNN_CUDA_CONV_API_AUTO = 0,
    CNN_CUDA_CONV_API_GRAPH,
    CNN_CUDA_CONV_API_LEGACY,
} cnn_cuda_conv_api;

/* Parses $CNN_CUDNN_CONV's value (NULL: unset) into *api; CNN_ERR_INVALID_ARG naming the variable otherwise. */
cnn_status cnn_cuda_conv_api_parse(const char *value, cnn_cuda_conv_api *api);

/* Which tensor of a direction is which: uid 1 is image-shaped (x, or dx backward data), 2 the filter (w, or dw
 * backward filter), 3 output-shaped (y, or dy). */
enum { CNN_CUDA_GRAPH_IMAGE, CNN_CUDA_GRAPH_FILTER, CNN_CUDA_GRAPH_OUTPUT, CNN_CUDA_GRAPH_TENSORS };

typedef struct cnn_cuda_conv_graph {
    int state;                        /* 0: not planned yet; 1: `plan` holds the fastest; -1: no engine (legacy) */
    cudnnBackendDescriptor_t plan;    /* finalized execution plan */
    int64_t workspace;                /* the plan's workspace bytes */
    int64_t align;                    /* the byte alignment the plan assumes of every tensor */
    cudnnBackendDescriptor_t pack;    /* the variant pack of `ptrs` and `pack_ws`, rebuilt when they change */
    void *ptrs[CNN_CUDA_GRAPH_TENSORS];
    void *pack_ws;
    /* what planning found, for $CNN_CUDA_LOG: the chosen engine's global index (-1: unknown), its time (ms; -1:
     * untimed), the configurations ranked and the plans built */
    int64_t engine;
    float ms;
    int64_t ranked, built;
} cnn_cuda_conv_graph;

/* What a plan is for: the sizes of core/op_check.h, the data's dtype, whether f32 may round to TF32, whether only
 * deterministic engines count (then the first of the heuristics' order that qualifies, untimed). */
typedef struct cnn_cuda_conv_graph_spec {
    const cnn_conv2d_sizes *s;
    cnn_dtype dtype;
    int tf32, deterministic;
    int dir; /* CNN_OP_FWD, CNN_OP_BWD_DATA or CNN_OP_BWD_WEIGHTS */
} cnn_cuda_conv_graph_spec;

/* Plans g for the direction (g->state becomes 1, or -1 when cuDNN's graph API has no engine for it), timing the
 * candidates on the tensors at ptrs (their contents are overwritten where the direction writes). With api GRAPH
 * "no engine" is an error instead. */
cnn_status cnn_cuda_conv_graph_plan(cnn_cuda_ctx *ctx, cnn_cuda_conv_api api, const cnn_cuda_conv_graph_spec *spec,
                                    cnn_cuda_conv_graph *g, void *const ptrs[CNN_CUDA_GRAPH_TENSORS], const char *op);

/* 1 when g has a plan and every pointer has the alignment the plan was made for. */
int cnn_cuda_conv_graph_usable(const cnn_cuda_conv_graph *g, void *const ptrs[CNN_CUDA_GRAPH_TENSORS]);

/* 1 when g is to be planned on these tensors: never planned, or planned (with or without an engine) for tensors
 * less aligned than these, where engines that need the alignment were left out. */
int cnn_cuda_conv_graph_needs_plan(const cnn_cuda_conv_graph *g, void *const ptrs[CNN_CUDA_GRAPH_TENSORS]);

/* Runs g's plan on the tensors at ptrs, on the compute stream. */
cnn_status cnn_cuda_conv_graph_run(cnn_cuda_ctx *ctx, cnn_cuda_conv_graph *g, void *const ptrs[CNN_CUDA_GRAPH_TENSORS],
                                   const char *op);

void cnn_cuda_conv_graph_destroy(cnn_cuda_conv_graph *g);

/* The descriptors of a direction's operation, without a handle (what a machine without a GPU can check): its three
 * tensors, the convolution, the operation; finalized. Exposed for the tests; *operation and tensors[] are the
 * caller's to destroy with cnn_cuda_conv_graph_op_destroy. */
typedef struct cnn_cuda_conv_graph_op {
    cudnnBackendDescriptor_t tensors[CNN_CUDA_GRAPH_TENSORS];
    cudnnBackendDescriptor_t conv;
    cudnnBackendDescriptor_t operation;
} cnn_cuda_conv_graph_op;

cnn_status cnn_cuda_conv_graph_op_make(const cnn_cuda_conv_graph_spec *spec, int64_t align, cnn_cuda_conv_graph_op *o,
                                       const char *op);
void cnn_cuda_conv_graph_op_destroy(cnn_cuda_conv_graph_op *o);

#ifdef __cplusplus
}
#endif
#endif
