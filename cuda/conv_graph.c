/* Convolutions through cuDNN's graph (backend) API (conv_graph.h).
 *
 * Why beside the legacy API: cuDNN 9 reaches its engines through the graph API; the legacy cudnnFind* calls map
 * each of their few algorithms onto one engine configuration of cuDNN's choosing. The graph API's heuristics rank
 * many configurations (engines and their knobs), and timing the best-ranked ones, as PyTorch does with
 * cudnn.benchmark, finds faster kernels for the NHWC shapes of large networks. It also takes asymmetric padding
 * (SAME with a stride) directly, where the legacy path copies the input into a padded buffer.
 *
 * A direction's graph: three tensors (logical dimensions N, C, H, W with NHWC strides; the filter K, C/G, R, S
 * with KRSC strides, from which cuDNN infers the groups), a convolution descriptor (compute type f32, cross-
 * correlation), one operation. Engine configurations whose notes break the precision contract are left out:
 * tensor cores for f32 data at precision FP32 (TF32 rounding), reduced-precision reductions (16-bit accumulation)
 * and down-converted inputs always, non-deterministic ones in deterministic mode; and so are engines that cuDNN
 * compiles at run time. */
#include <stdlib.h>
#include <string.h>

#include "cuda/conv_graph.h"

/* Engine configurations timed per direction and shape: the first ten of the heuristics' ranking that are allowed
 * and run, PyTorch's default (torch.backends.cudnn.benchmark_limit). */
#define CNN_CUDA_GRAPH_CANDIDATES 10
/* The same cap on an engine's workspace as the legacy search (conv.c). */
#define CNN_CUDA_GRAPH_WORKSPACE_MAX ((int64_t)1 << 30)
/* Timed runs per candidate, after one untimed run */
#define CNN_CUDA_GRAPH_TIMED_RUNS 2

static const float cnn_cuda_graph_one = 1.0f, cnn_cuda_graph_zero = 0.0f;

cnn_status cnn_cuda_conv_api_parse(const char *value, cnn_cuda_conv_api *api)
{
    if (!value || !*value || !strcmp(value, "auto")) *api = CNN_CUDA_CONV_API_AUTO;
    else if (!strcmp(value, "graph")) *api = CNN_CUDA_CONV_API_GRAPH;
    else if (!strcmp(value, "legacy")) *api = CNN_CUDA_CONV_API_LEGACY;
    else
        return cnn_error(CNN_ERR_INVALID_ARG, "CNN_CUDNN_CONV is '%.64s': use auto, graph or legacy", value);
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// descriptors

static cnn_status cnn_cuda_graph_set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                                     cudnnBackendAttributeType_t type, int64_t count, const void *value,
                                     const char *op, const char *what)
{
    cnn_status st = cnn_cuda_dnn_status(cudnnBackendSetAttribute(d, name, type, count, value), op,
                                        "cudnnBackendSetAttribute");
    return st == CNN_OK ? CNN_OK : cnn_error_prefix(st, "%s: ", what);
}

/* A tensor of logical dimensions (n, c, h, w) stored channels last */
static cnn_status cnn_cuda_graph_tensor(cudnnBackendDescriptor_t *t, int64_t uid, cudnnDataType_t dt, int64_t n,
                                        int64_t c, int64_t h, int64_t w, int64_t align, const char *op)
{
    cnn_status st = CNN_OK;
    const int64_t dims[4] = {n, c, h, w};
    const int64_t strides[4] = {h * w * c, 1, w * c, c};
    CNN_CUDA_DNN(op, cudnnBackendCreateDescriptor, CUDNN_BACKEND_TENSOR_DESCRIPTOR, t);
    CNN_TRY(cnn_cuda_graph_set(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, op, "tensor dtype"));
    CNN_TRY(cnn_cuda_graph_set(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims, op, "tensor dims"));
    CNN_TRY(cnn_cuda_graph_set(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides, op, "tensor strides"));
    CNN_TRY(cnn_cuda_graph_set(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, op, "tensor uid"));
    CNN_TRY(cnn_cuda_graph_set(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, op,
                               "tensor alignment"));
    CNN_CUDA_DNN(op, cudnnBackendFinalize, *t);
fail:
    return st;
}

/* Each direction's operation: its descriptor type and the attributes of its image-shaped, filter and output-shaped
 * tensors (x, w, y forward; dx, w, dy backward data; x, dw, dy backward filter), its convolution and its scaling
 * factors. */
typedef struct cnn_cuda_graph_dir {
    cudnnBackendDescriptorType_t type;
    cudnnBackendAttributeName_t image, filter, output, conv, alpha, beta;
} cnn_cuda_graph_dir;

static const cnn_cuda_graph_dir cnn_cuda_graph_dirs[3] = {
    [CNN_OP_FWD] = {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                    CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                    CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                    CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
    [CNN_OP_BWD_DATA] = {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
    [CNN_OP_BWD_WEIGHTS] = {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
                            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
                            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
                            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
                            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
                            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA},
};

void cnn_cuda_conv_graph_op_destroy(cnn_cuda_conv_graph_op *o)
{
    for (int i = 0; i < CNN_CUDA_GRAPH_TENSORS; i++)
        if (o->tensors[i]) cudnnBackendDestroyDescriptor(o->tensors[i]);
    if (o->conv) cudnnBackendDestroyDescriptor(o->conv);
    if (o->operation) cudnnBackendDestroyDescriptor(o->operation);
    memset(o, 0, sizeof *o);
}

cnn_status cnn_cuda_conv_graph_op_make(const cnn_cuda_conv_graph_spec *spec, int64_t align, cnn_cuda_conv_graph_op *o,
                                       const char *op)
{
    cnn_status st = CNN_OK;
    const cnn_conv2d_sizes *s = spec->s;
    const cudnnDataType_t dt = cnn_cuda_dnn_type(spec->dtype), comp = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION; /* no kernel flip: every framework's convolution */
    const int64_t dims = 2, pre[2] = {s->pad_top, s->pad_left}, post[2] = {s->pad_bottom, s->pad_right};
    const int64_t stride[2] = {s->stride_h, s->stride_w}, dilation[2] = {s->dilation_h, s->dilation_w};
    memset(o, 0, sizeof *o);
    CNN_TRY(cnn_cuda_graph_tensor(&o->tensors[CNN_CUDA_GRAPH_IMAGE], 1 + CNN_CUDA_GRAPH_IMAGE, dt, s->n, s->c, s->h,
                                  s->w, align, op));
    CNN_TRY(cnn_cuda_graph_tensor(&o->tensors[CNN_CUDA_GRAPH_FILTER], 1 + CNN_CUDA_GRAPH_FILTER, dt, s->o,
                                  s->c / s->groups, s->kh, s->kw, align, op));
    CNN_TRY(cnn_cuda_graph_tensor(&o->tensors[CNN_CUDA_GRAPH_OUTPUT], 1 + CNN_CUDA_GRAPH_OUTPUT, dt, s->n, s->o, s->oh,
                                  s->ow, align, op));

    CNN_CUDA_DNN(op, cudnnBackendCreateDescriptor, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &o->conv);
    CNN_TRY(cnn_cuda_graph_set(o->conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, op,
                               "convolution compute type"));
    CNN_TRY(cnn_cuda_graph_set(o->conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode, op,
                               "convolution mode"));
    CNN_TRY(cnn_cuda_graph_set(o->conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims, op,
                               "convolution spatial dims"));
    CNN_TRY(cnn_cuda_graph_set(o->conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dilation, op,
                               "convolution dilations"));
    CNN_TRY(cnn_cuda_graph_set(o->conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride, op,
                               "convolution strides"));
    CNN_TRY(cnn_cuda_graph_set(o->conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pre, op,
                               "convolution pre-paddings"));
    CNN_TRY(cnn_cuda_graph_set(o->conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, post, op,
                               "convolution post-paddings"));
    CNN_CUDA_DNN(op, cudnnBackendFinalize, o->conv);

    const cnn_cuda_graph_dir *d = &cnn_cuda_graph_dirs[spec->dir];
    CNN_CUDA_DNN(op, cudnnBackendCreateDescriptor, d->type, &o->operation);
    CNN_TRY(cnn_cuda_graph_set(o->operation, d->image, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &o->tensors[CNN_CUDA_GRAPH_IMAGE], op, "operation image tensor"));
    CNN_TRY(cnn_cuda_graph_set(o->operation, d->filter, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &o->tensors[CNN_CUDA_GRAPH_FILTER], op, "operation filter tensor"));
    CNN_TRY(cnn_cuda_graph_set(o->operation, d->output, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &o->tensors[CNN_CUDA_GRAPH_OUTPUT], op, "operation output tensor"));
    CNN_TRY(cnn_cuda_graph_set(o->operation, d->conv, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &o->conv, op,
                               "operation convolution"));
    /* compute type f32: float scaling factors */
    CNN_TRY(cnn_cuda_graph_set(o->operation, d->alpha, CUDNN_TYPE_FLOAT, 1, &cnn_cuda_graph_one, op, "alpha"));
    CNN_TRY(cnn_cuda_graph_set(o->operation, d->beta, CUDNN_TYPE_FLOAT, 1, &cnn_cuda_graph_zero, op, "beta"));
    CNN_CUDA_DNN(op, cudnnBackendFinalize, o->operation);
fail:
    if (st != CNN_OK) cnn_cuda_conv_graph_op_destroy(o);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// planning: heuristics, filters, timing

/* 1 when the engine of configuration cfg may run under the spec's precision contract, and is compiled already:
 * an engine that cuDNN compiles at run time (NVRTC) can take seconds to build, per shape. *index: the engine's
 * global index (what cuDNN's logs and the frontend call it), -1 when unknown. */
static int cnn_cuda_graph_cfg_allowed(cudnnBackendDescriptor_t cfg, const cnn_cuda_conv_graph_spec *spec,
                                      int64_t *index)
{
    cudnnBackendDescriptor_t engine = NULL;
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    cudnnBackendBehaviorNote_t behavior[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t count = 0, nbehavior = 0, one = 0;
    int ok = 0;
    *index = -1;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine) != CUDNN_STATUS_SUCCESS) return 0;
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count,
                                 &engine) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                 CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &count, notes) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &nbehavior, behavior) != CUDNN_STATUS_SUCCESS)
        goto done;
    if (cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &one, index) !=
        CUDNN_STATUS_SUCCESS)
        *index = -1;
    ok = 1;
    for (int64_t i = 0; i < nbehavior && i < CUDNN_BEHAVIOR_NOTE_TYPE_COUNT; i++)
        if (behavior[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) ok = 0;
    for (int64_t i = 0; i < count && i < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; i++) {
        const cudnnBackendNumericalNote_t n = notes[i];
        /* 16-bit accumulation, or inputs converted to a narrower type than the data's: never */
        if (n == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION || n == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS)
            ok = 0;
        if (spec->dtype == CNN_F32 && !spec->tf32 && n == CUDNN_NUMERICAL_NOTE_TENSOR_CORE) ok = 0; /* TF32 */
        if (spec->deterministic && n == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) ok = 0;
    }
done:
    cudnnBackendDestroyDescriptor(engine);
    return ok;
}

static cnn_status cnn_cuda_graph_pack(cnn_cuda_ctx *ctx, cnn_cuda_conv_graph *g,
                                      void *const ptrs[CNN_CUDA_GRAPH_TENSORS], const char *op)
{
    cnn_status st = CNN_OK;
    const int64_t uids[CNN_CUDA_GRAPH_TENSORS] = {1 + CNN_CUDA_GRAPH_IMAGE, 1 + CNN_CUDA_GRAPH_FILTER,
                                                  1 + CNN_CUDA_GRAPH_OUTPUT};
    /* a real pointer even for a plan without workspace: cuDNN is not asked to take NULL */
    CNN_TRY(cnn_cuda_workspace(ctx, 256, op));
    void *ws = ctx->workspace;
    if (g->pack && g->pack_ws == ws && !memcmp(g->ptrs, ptrs, sizeof g->ptrs)) return CNN_OK;
    if (g->pack) cudnnBackendDestroyDescriptor(g->pack);
    g->pack = NULL;
    CNN_CUDA_DNN(op, cudnnBackendCreateDescriptor, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &g->pack);
    CNN_TRY(cnn_cuda_graph_set(g->pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, CNN_CUDA_GRAPH_TENSORS,
                               uids, op, "variant pack uids"));
    CNN_TRY(cnn_cuda_graph_set(g->pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                               CNN_CUDA_GRAPH_TENSORS, ptrs, op, "variant pack pointers"));
    CNN_TRY(cnn_cuda_graph_set(g->pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws, op,
                               "variant pack workspace"));
    CNN_CUDA_DNN(op, cudnnBackendFinalize, g->pack);
    memcpy(g->ptrs, ptrs, sizeof g->ptrs);
    g->pack_ws = ws;
fail:
    if (st != CNN_OK && g->pack) {
        cudnnBackendDestroyDescriptor(g->pack);
        g->pack = NULL;
    }
    return st;
}

/* The alignment a plan may assume: the largest power of two up to 16 that divides every pointer's address. */
static int64_t cnn_cuda_graph_align(void *const ptrs[CNN_CUDA_GRAPH_TENSORS])
{
    uintptr_t bits = 0;
    for (int i = 0; i < CNN_CUDA_GRAPH_TENSORS; i++) bits |= (uintptr_t)ptrs[i];
    return cnn_cuda_address_align(bits, 16);
}

int cnn_cuda_conv_graph_usable(const cnn_cuda_conv_graph *g, void *const ptrs[CNN_CUDA_GRAPH_TENSORS])
{
    return g->state > 0 && cnn_cuda_graph_align(ptrs) >= g->align;
}

int cnn_cuda_conv_graph_needs_plan(const cnn_cuda_conv_graph *g, void *const ptrs[CNN_CUDA_GRAPH_TENSORS])
{
    return g->state == 0 || cnn_cuda_graph_align(ptrs) > g->align;
}

/* Builds and finalizes the execution plan of configuration cfg; NULL when cuDNN refuses it, as it may for a
 * configuration it ranked. */
static cudnnBackendDescriptor_t cnn_cuda_graph_make_plan(cnn_cuda_ctx *ctx, cudnnBackendDescriptor_t cfg,
                                                         int64_t *workspace)
{
    cudnnBackendDescriptor_t plan = NULL;
    int64_t count = 0;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) != CUDNN_STATUS_SUCCESS)
        return NULL;
    if (cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &ctx->cudnn) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                 &cfg) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendFinalize(plan) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &count,
                                 workspace) != CUDNN_STATUS_SUCCESS) {
        cudnnBackendDestroyDescriptor(plan);
        return NULL;
    }
    return plan;
}

/* Milliseconds a run of g's plan takes: the mean of CNN_CUDA_GRAPH_TIMED_RUNS runs after one untimed run. A negative
 * time when the plan fails to run (an engine may refuse at execution what it accepted when finalized), with the
 * runtime's error cleared so that it is not blamed on the next launch. */
static cnn_status cnn_cuda_graph_time(cnn_cuda_ctx *ctx, cnn_cuda_conv_graph *g,
                                      void *const ptrs[CNN_CUDA_GRAPH_TENSORS], cudaEvent_t ev[2], float *ms,
                                      const char *op)
{
    cnn_status st = CNN_OK;
    *ms = -1.0f;
    CNN_TRY(cnn_cuda_graph_pack(ctx, g, ptrs, op));
    if (cudnnBackendExecute(ctx->cudnn, g->plan, g->pack) != CUDNN_STATUS_SUCCESS) {
        (void)cudaGetLastError();
        return CNN_OK;
    }
    CNN_CUDA_RT(op, cudaEventRecord, ev[0], ctx->compute);
    for (int r = 0; r < CNN_CUDA_GRAPH_TIMED_RUNS; r++)
        if (cudnnBackendExecute(ctx->cudnn, g->plan, g->pack) != CUDNN_STATUS_SUCCESS) {
            (void)cudaGetLastError();
            return CNN_OK;
        }
    CNN_CUDA_RT(op, cudaEventRecord, ev[1], ctx->compute);
    CNN_CUDA_RT(op, cudaEventSynchronize, ev[1]);
    CNN_CUDA_RT(op, cudaEventElapsedTime, ms, ev[0], ev[1]);
    *ms /= (float)CNN_CUDA_GRAPH_TIMED_RUNS;
fail:
    return st;
}

/* An error while trying a further candidate, after one already ran and was timed: the search ends with that one
 * (the error cleared), as a runtime error that persists shows again at the next call. Without one, the error. */
static cnn_status cnn_cuda_graph_keep_best(const cnn_cuda_conv_graph *g, cnn_status st)
{
    if (g->state != 1) return st;
    (void)cudaGetLastError();
    cnn_clear_error();
    return CNN_OK;
}

/* The candidates of one heuristics mode, in its order: those the precision contract allows and cuDNN builds into a
 * plan that runs, up to CNN_CUDA_GRAPH_CANDIDATES of them timed, the fastest kept in g (deterministic: the first
 * that runs, untimed, so that every run chooses the same). *tried counts the plans built. */
static cnn_status cnn_cuda_graph_pick(cnn_cuda_ctx *ctx, const cnn_cuda_conv_graph_spec *spec, cnn_cuda_conv_graph *g,
                                      void *const ptrs[CNN_CUDA_GRAPH_TENSORS], cudnnBackendDescriptor_t *cfgs,
                                      int64_t ncfg, cudaEvent_t ev[2], int64_t *tried, const char *op)
{
    cnn_status st = CNN_OK;
    float best_ms = -1.0f;
    int timed = 0;
    for (int64_t i = 0; i < ncfg && timed < CNN_CUDA_GRAPH_CANDIDATES; i++) {
        int64_t engine = -1, ws = 0, count = 0;
        if (!cnn_cuda_graph_cfg_allowed(cfgs[i], spec, &engine)) continue;
        /* the configuration knows its workspace (cuDNN 9.2 on): no plan is built for one over the cap */
        if (cudnnBackendGetAttribute(cfgs[i], CUDNN_ATTR_ENGINECFG_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &count,
                                     &ws) == CUDNN_STATUS_SUCCESS &&
            ws > CNN_CUDA_GRAPH_WORKSPACE_MAX)
            continue;
        cudnnBackendDescriptor_t plan = cnn_cuda_graph_make_plan(ctx, cfgs[i], &ws);
        if (!plan) continue;
        cnn_cuda_conv_graph cand = {.state = 1, .plan = plan, .workspace = ws, .align = g->align,
                                    .engine = engine, .ms = -1.0f};
        if (ws > CNN_CUDA_GRAPH_WORKSPACE_MAX) {
            cnn_cuda_conv_graph_destroy(&cand);
            continue;
        }
        st = cnn_cuda_workspace(ctx, (size_t)ws, op);
        if (st == CNN_ERR_NO_MEMORY) { /* the engines that need less may still run */
            cnn_clear_error();
            st = CNN_OK;
            cnn_cuda_conv_graph_destroy(&cand);
            continue;
        }
        if (st != CNN_OK) {
            cnn_cuda_conv_graph_destroy(&cand);
            return cnn_cuda_graph_keep_best(g, st);
        }
        (*tried)++;
        if (spec->deterministic) { /* the heuristics' order, untimed; but it must run */
            st = cnn_cuda_graph_pack(ctx, &cand, ptrs, op);
            if (st == CNN_OK && cudnnBackendExecute(ctx->cudnn, cand.plan, cand.pack) == CUDNN_STATUS_SUCCESS) {
                *g = cand;
                return CNN_OK;
            }
            (void)cudaGetLastError();
            cnn_clear_error();
            st = CNN_OK;
            cnn_cuda_conv_graph_destroy(&cand);
            continue;
        }
        float ms = -1.0f;
        st = cnn_cuda_graph_time(ctx, &cand, ptrs, ev, &ms, op);
        if (st != CNN_OK) {
            cnn_cuda_conv_graph_destroy(&cand);
            return cnn_cuda_graph_keep_best(g, st);
        }
        if (ms < 0.0f) { /* it did not run */
            cnn_cuda_conv_graph_destroy(&cand);
            continue;
        }
        timed++;
        if (best_ms < 0.0f || ms < best_ms) {
            cnn_cuda_conv_graph_destroy(g);
            *g = cand;
            g->ms = best_ms = ms;
        } else {
            cnn_cuda_conv_graph_destroy(&cand);
        }
    }
    return st;
}

static void cnn_cuda_graph_cfgs_free(cudnnBackendDescriptor_t *cfgs, int64_t n)
{
    for (int64_t i = 0; cfgs && i < n; i++)
        if (cfgs[i]) cudnnBackendDestroyDescriptor(cfgs[i]);
    free(cfgs);
}

cnn_status cnn_cuda_conv_graph_plan(cnn_cuda_ctx *ctx, cnn_cuda_conv_api api, const cnn_cuda_conv_graph_spec *spec,
                                    cnn_cuda_conv_graph *g, void *const ptrs[CNN_CUDA_GRAPH_TENSORS], const char *op)
{
    cnn_status st = CNN_OK;
    cnn_cuda_conv_graph_op o;
    cudnnBackendDescriptor_t graph = NULL, heur = NULL, *cfgs = NULL;
    cudaEvent_t ev[2] = {NULL, NULL};
    int64_t ncfg = 0, avail = 0, ranked = 0, tried = 0;
    memset(&o, 0, sizeof o);
    cnn_cuda_conv_graph_destroy(g);
    g->align = cnn_cuda_graph_align(ptrs);
    CNN_TRY(cnn_cuda_conv_graph_op_make(spec, g->align, &o, op));

    CNN_CUDA_DNN(op, cudnnBackendCreateDescriptor, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph);
    CNN_TRY(cnn_cuda_graph_set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &o.operation,
                               op, "graph operations"));
    CNN_TRY(cnn_cuda_graph_set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &ctx->cudnn, op,
                               "graph handle"));
    CNN_CUDA_DNN(op, cudnnBackendFinalize, graph);
    if (!spec->deterministic) {
        CNN_CUDA_RT(op, cudaEventCreate, &ev[0]);
        CNN_CUDA_RT(op, cudaEventCreate, &ev[1]);
    }

    /* every configuration the heuristics rank (mode A), filtered, then timed in their order; when none of them
     * runs, cuDNN's fallback list the same way (as PyTorch takes both as sources) */
    const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    for (int m = 0; m < 2 && g->state != 1; m++) {
        if (heur) cudnnBackendDestroyDescriptor(heur);
        heur = NULL;
        cnn_cuda_graph_cfgs_free(cfgs, avail);
        cfgs = NULL;
        avail = ncfg = 0;
        CNN_CUDA_DNN(op, cudnnBackendCreateDescriptor, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur);
        CNN_TRY(cnn_cuda_graph_set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                   &graph, op, "heuristics graph"));
        CNN_TRY(cnn_cuda_graph_set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &modes[m], op,
                                   "heuristics mode"));
        if (cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS) continue;
        if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &avail,
                                     NULL) != CUDNN_STATUS_SUCCESS || avail <= 0) {
            avail = 0;
            continue;
        }
        cfgs = calloc((size_t)avail, sizeof *cfgs);
        if (!cfgs) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "cuda %s: out of host memory for %lld engine configurations", op,
                           (long long)avail);
            avail = 0;
            goto fail;
        }
        for (int64_t i = 0; i < avail; i++)
            CNN_CUDA_DNN(op, cudnnBackendCreateDescriptor, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[i]);
        if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, avail, &ncfg,
                                     cfgs) != CUDNN_STATUS_SUCCESS)
            ncfg = 0;
        if (ncfg > avail) ncfg = avail;
        ranked += ncfg;
        CNN_TRY(cnn_cuda_graph_pick(ctx, spec, g, ptrs, cfgs, ncfg, ev, &tried, op));
    }
    g->ranked = ranked;
    g->built = tried;
    if (g->state != 1) {
        g->state = -1;
        char sizes[CNN_CONV2D_SIZES_BUF];
        if (api == CNN_CUDA_CONV_API_GRAPH)
            st = cnn_error(CNN_ERR_UNSUPPORTED,
                           "cuda %s: cuDNN's graph API has no engine for %s %s (%lld of %lld ranked configurations "
                           "built; CNN_CUDNN_CONV=graph)",
                           op, cnn_dtype_name(spec->dtype), cnn_conv2d_sizes_str(spec->s, sizes, sizeof sizes),
                           (long long)tried, (long long)ranked);
    }
fail:
    /* descriptors that cuDNN refused for this shape (BAD_PARAM, NOT_SUPPORTED; the state still 0, where "no engine"
     * above made it -1): the legacy API takes it, unless the graph API is forced; any other error (the runtime's,
     * memory) is reported */
    if ((st == CNN_ERR_UNSUPPORTED || st == CNN_ERR_INVALID_ARG) && g->state == 0) {
        g->state = -1;
        g->ranked = ranked;
        g->built = tried;
        if (api != CNN_CUDA_CONV_API_GRAPH) {
            cnn_clear_error();
            st = CNN_OK;
        } else {
            st = cnn_error_prefix(CNN_ERR_UNSUPPORTED,
                                  "cuda %s: cuDNN's graph API has no engine for this shape (CNN_CUDNN_CONV=graph): ", op);
        }
    }
    cnn_cuda_graph_cfgs_free(cfgs, avail);
    if (heur) cudnnBackendDestroyDescriptor(heur);
    if (graph) cudnnBackendDestroyDescriptor(graph);
    cnn_cuda_conv_graph_op_destroy(&o);
    for (int i = 0; i < 2; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    return st;
}

cnn_status cnn_cuda_conv_graph_run(cnn_cuda_ctx *ctx, cnn_cuda_conv_graph *g, void *const ptrs[CNN_CUDA_GRAPH_TENSORS],
                                   const char *op)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_cuda_workspace(ctx, (size_t)g->workspace, op));
    CNN_TRY(cnn_cuda_graph_pack(ctx, g, ptrs, op));
    CNN_CUDA_DNN(op, cudnnBackendExecute, ctx->cudnn, g->plan, g->pack);
fail:
    return st;
}

/* Without a stream synchronize, though queued work may still use the plan: its kernels belong to cuDNN's library,
 * not to the plan, because runtime-compiled engines (whose code goes with their plan) are never chosen
 * (cnn_cuda_graph_cfg_allowed). Allowing them would need a synchronize here first. */
void cnn_cuda_conv_graph_destroy(cnn_cuda_conv_graph *g)
{
    if (g->plan) cudnnBackendDestroyDescriptor(g->plan);
    if (g->pack) cudnnBackendDestroyDescriptor(g->pack);
    memset(g, 0, sizeof *g);
}
