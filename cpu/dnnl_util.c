/* Checked oneDNN calls, primitives with their reorders, the plan cache and shared argument checks for the CPU
 * backend (see dnnl_util.h for the rules). */
#include "cpu/dnnl_util.h"
#include "core/op_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------------------------
// status mapping

const char *cnn_cpu_dnnl_status_name(dnnl_status_t s)
{
    switch (s) {
    case dnnl_success: return "success";
    case dnnl_out_of_memory: return "out of memory";
    case dnnl_invalid_arguments: return "invalid arguments";
    case dnnl_unimplemented: return "unimplemented";
    case dnnl_iterator_ends: return "iterator ends";
    case dnnl_runtime_error: return "runtime error";
    case dnnl_not_required: return "not required";
    }
    return "unknown status";
}

cnn_status cnn_cpu_dnnl_status(dnnl_status_t s, const char *what, const char *call)
{
    if (s == dnnl_success) return CNN_OK;
    cnn_status st = CNN_ERR_BACKEND;
    if (s == dnnl_out_of_memory) st = CNN_ERR_NO_MEMORY;
    else if (s == dnnl_unimplemented) st = CNN_ERR_UNSUPPORTED;
    return cnn_error(st, "oneDNN %s: %s failed: %s", what, call, cnn_cpu_dnnl_status_name(s));
}

const char *cnn_cpu_isa_name(dnnl_cpu_isa_t isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    default: return "generic";
    }
}

int cnn_cpu_exact_int8(void)
{
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return ((unsigned)isa & dnnl_cpu_isa_avx512_core_vnni) == dnnl_cpu_isa_avx512_core_vnni ||
           ((unsigned)isa & dnnl_cpu_isa_avx2_vnni) == dnnl_cpu_isa_avx2_vnni;
}

cnn_status cnn_cpu_md(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_format_tag_t tag,
                      const char *what)
{
    return cnn_cpu_md_dt(md, ndims, dims, dnnl_f32, tag, what);
}

cnn_status cnn_cpu_md_dt(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_data_type_t dt,
                         dnnl_format_tag_t tag, const char *what)
{
    cnn_status st = CNN_OK;
    dnnl_dims_t d;
    for (int i = 0; i < ndims; i++) d[i] = dims[i];
    CNN_CPU_DNNL(what, dnnl_memory_desc_init_by_tag, md, ndims, d, dt, tag);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// arguments and primitives

static void cnn_cpu_arg_destroy(cnn_cpu_arg *a)
{
    if (a->reorder) dnnl_primitive_destroy(a->reorder);
    if (a->inner) dnnl_memory_destroy(a->inner);
    if (a->user) dnnl_memory_destroy(a->user);
    memset(a, 0, sizeof *a);
}

static cnn_status cnn_cpu_arg_create(cnn_cpu_ctx *ctx, cnn_cpu_arg *a, const cnn_cpu_arg_spec *spec,
                                     const dnnl_memory_desc_t *prim_md, const char *what)
{
    cnn_status st = CNN_OK;
    dnnl_primitive_desc_t rpd = NULL;
    memset(a, 0, sizeof *a);
    a->id = spec->id;
    a->output = spec->output;
    CNN_CPU_DNNL(what, dnnl_memory_create, &a->user, spec->md, ctx->engine, DNNL_MEMORY_NONE);
    if (!dnnl_memory_desc_equal(spec->md, prim_md)) {
        /* transient: a share of the context's scratch; a network's worth of weights and weight gradients in
         * oneDNN's layouts (ResNet-18: 45 MB each) would otherwise stay allocated per primitive */
        a->transient = 1;
        a->inner_size = dnnl_memory_desc_get_size(prim_md);
        CNN_CPU_DNNL(what, dnnl_memory_create, &a->inner, prim_md, ctx->engine, DNNL_MEMORY_NONE);
        if (a->output)
            CNN_CPU_DNNL(what, dnnl_reorder_primitive_desc_create, &rpd, prim_md, ctx->engine, spec->md,
                         ctx->engine, NULL);
        else
            CNN_CPU_DNNL(what, dnnl_reorder_primitive_desc_create, &rpd, spec->md, ctx->engine, prim_md,
                         ctx->engine, NULL);
        CNN_CPU_DNNL(what, dnnl_primitive_create, &a->reorder, rpd);
    }
fail:
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (st != CNN_OK) cnn_cpu_arg_destroy(a);
    return st;
}

void cnn_cpu_prim_destroy(cnn_cpu_prim *p)
{
    for (int i = 0; i < p->nargs; i++) cnn_cpu_arg_destroy(&p->arg[i]);
    if (p->workspace) dnnl_memory_destroy(p->workspace);
    if (p->scratchpad) dnnl_memory_destroy(p->scratchpad);
    if (p->prim) dnnl_primitive_destroy(p->prim);
    if (p->pd) dnnl_primitive_desc_destroy(p->pd);
    memset(p, 0, sizeof *p);
}

cnn_status cnn_cpu_prim_build(cnn_cpu_ctx *ctx, cnn_cpu_prim *p, const void *op_desc,
                              const_dnnl_primitive_attr_t attr, const_dnnl_primitive_desc_t hint,
                              const cnn_cpu_arg_spec *specs, int nargs, int want_workspace, const char *what)
{
    return cnn_cpu_prim_build_prefer(ctx, p, op_desc, attr, hint, specs, nargs, want_workspace, NULL, what);
}

dnnl_primitive_desc_t cnn_cpu_find_impl(cnn_cpu_ctx *ctx, const void *op_desc, const_dnnl_primitive_attr_t attr,
                                               const_dnnl_primitive_desc_t hint, const char *prefer)
{
    dnnl_primitive_desc_iterator_t it = NULL;
    dnnl_primitive_desc_t found = NULL;
    if (dnnl_primitive_desc_iterator_create(&it, op_desc, attr, ctx->engine, hint) != dnnl_success) return NULL;
    do {
        dnnl_primitive_desc_t pd = dnnl_primitive_desc_iterator_fetch(it);
        const char *impl = NULL;
        if (!pd) break;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, (void *)&impl) == dnnl_success && impl &&
            !strncmp(impl, prefer, strlen(prefer))) {
            found = pd;
            break;
        }
        dnnl_primitive_desc_destroy(pd);
    } while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
    dnnl_primitive_desc_iterator_destroy(it);
    return found;
}

cnn_status cnn_cpu_prim_build_prefer(cnn_cpu_ctx *ctx, cnn_cpu_prim *p, const void *op_desc,
                                     const_dnnl_primitive_attr_t attr, const_dnnl_primitive_desc_t hint,
                                     const cnn_cpu_arg_spec *specs, int nargs, int want_workspace, const char *prefer,
                                     const char *what)
{
    cnn_status st = CNN_OK;
    dnnl_primitive_attr_t user = NULL;
    cnn_cpu_prim_destroy(p);
    if (nargs > CNN_CPU_MAX_ARGS) return cnn_error(CNN_ERR_BACKEND, "oneDNN %s: too many arguments", what);
    if (attr)
        CNN_CPU_DNNL(what, dnnl_primitive_attr_clone, &user, attr);
    else
        CNN_CPU_DNNL(what, dnnl_primitive_attr_create, &user);
    CNN_CPU_DNNL(what, dnnl_primitive_attr_set_scratchpad_mode, user, dnnl_scratchpad_mode_user);
    if (prefer) p->pd = cnn_cpu_find_impl(ctx, op_desc, user, hint, prefer);
    if (!p->pd) CNN_CPU_DNNL(what, dnnl_primitive_desc_create, &p->pd, op_desc, user, ctx->engine, hint);
    CNN_CPU_DNNL(what, dnnl_primitive_create, &p->prim, p->pd);
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(p->pd, dnnl_query_scratchpad_md, 0);
    p->scratchpad_size = sp ? dnnl_memory_desc_get_size(sp) : 0;
    if (p->scratchpad_size)
        CNN_CPU_DNNL(what, dnnl_memory_create, &p->scratchpad, sp, ctx->engine, DNNL_MEMORY_NONE);
    for (int i = 0; i < nargs; i++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(p->pd, specs[i].query, specs[i].index);
        if (!md) {
            st = cnn_error(CNN_ERR_BACKEND, "oneDNN %s: dnnl_primitive_desc_query_md failed for argument %d", what,
                           specs[i].id);
            goto fail;
        }
        CNN_TRY(cnn_cpu_arg_create(ctx, &p->arg[i], &specs[i], md, what));
        p->nargs = i + 1;
    }
    if (want_workspace) {
        const dnnl_memory_desc_t *ws = dnnl_primitive_desc_query_md(p->pd, dnnl_query_workspace_md, 0);
        if (ws && dnnl_memory_desc_get_size(ws) > 0)
            CNN_CPU_DNNL(what, dnnl_memory_create, &p->workspace, ws, ctx->engine, DNNL_MEMORY_ALLOCATE);
    }
    p->built = 1;
    dnnl_primitive_attr_destroy(user);
    return CNN_OK;
fail:
    if (user) dnnl_primitive_attr_destroy(user);
    cnn_cpu_prim_destroy(p);
    return st;
}

/* bytes rounded up to a share of the context's scratch */
static size_t cnn_cpu_scratch_share(size_t bytes)
{
    return (bytes + CNN_CPU_SCRATCH_ALIGN - 1) & ~(size_t)(CNN_CPU_SCRATCH_ALIGN - 1);
}

cnn_status cnn_cpu_prim_run(cnn_cpu_ctx *ctx, cnn_cpu_prim *p, void *const *data, dnnl_memory_t workspace,
                            const char *what)
{
    cnn_status st = CNN_OK;
    dnnl_exec_arg_t args[CNN_CPU_MAX_ARGS + 2];
    int n = 0;
    size_t need = 0;
    for (int i = 0; i < p->nargs; i++) {
        cnn_cpu_arg *a = &p->arg[i];
        if (a->transient && a->version && !a->output) { /* a tracked input: its reordered form is kept */
            const dnnl_memory_desc_t *md = NULL;
            dnnl_memory_t kept = NULL;
            CNN_CPU_DNNL(what, dnnl_memory_get_memory_desc, a->inner, &md);
            CNN_CPU_DNNL(what, dnnl_memory_create, &kept, md, ctx->engine, DNNL_MEMORY_ALLOCATE);
            dnnl_memory_destroy(a->inner);
            a->inner = kept;
            a->transient = 0;
        }
    }
    for (int i = 0; i < p->nargs; i++)
        if (p->arg[i].transient) need += cnn_cpu_scratch_share(p->arg[i].inner_size);
    need += cnn_cpu_scratch_share(p->scratchpad_size);
    if (need > ctx->scratch_size) {
        free(ctx->scratch);
        ctx->scratch_size = 0;
        ctx->scratch = aligned_alloc(CNN_CPU_SCRATCH_ALIGN, need);
        if (!ctx->scratch) return cnn_error(CNN_ERR_NO_MEMORY, "oneDNN %s: out of host memory for %zu bytes of "
                                                               "reordered arguments", what, need);
        ctx->scratch_size = need;
    }
    size_t offset = 0;
    for (int i = 0; i < p->nargs; i++) {
        cnn_cpu_arg *a = &p->arg[i];
        CNN_CPU_DNNL(what, dnnl_memory_set_data_handle, a->user, data[i]);
        if (a->transient) {
            CNN_CPU_DNNL(what, dnnl_memory_set_data_handle, a->inner, (char *)ctx->scratch + offset);
            offset += cnn_cpu_scratch_share(a->inner_size);
        }
        if (a->inner && !a->output &&
            !(!a->transient && a->version && a->version == a->done_version && data[i] == a->done_data)) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->user}, {DNNL_ARG_TO, a->inner}};
            a->done_version = 0; /* until the reorder has run */
            CNN_CPU_DNNL(what, dnnl_primitive_execute, a->reorder, ctx->stream, 2, r);
            a->done_data = data[i];
            a->done_version = a->version;
        }
        args[n].arg = a->id;
        args[n].memory = a->inner ? a->inner : a->user;
        n++;
    }
    if (workspace) {
        args[n].arg = DNNL_ARG_WORKSPACE;
        args[n].memory = workspace;
        n++;
    }
    if (p->scratchpad) {
        CNN_CPU_DNNL(what, dnnl_memory_set_data_handle, p->scratchpad, (char *)ctx->scratch + offset);
        args[n].arg = DNNL_ARG_SCRATCHPAD;
        args[n].memory = p->scratchpad;
        n++;
    }
    CNN_CPU_DNNL(what, dnnl_primitive_execute, p->prim, ctx->stream, n, args);
    for (int i = 0; i < p->nargs; i++) {
        cnn_cpu_arg *a = &p->arg[i];
        if (a->inner && a->output) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->inner}, {DNNL_ARG_TO, a->user}};
            CNN_CPU_DNNL(what, dnnl_primitive_execute, a->reorder, ctx->stream, 2, r);
        }
    }
    CNN_CPU_DNNL(what, dnnl_stream_wait, ctx->stream);
fail:
    return st;
}

const char *cnn_cpu_prim_impl(const cnn_cpu_prim *p)
{
    const char *s = NULL;
    if (!p->pd || dnnl_primitive_desc_query(p->pd, dnnl_query_impl_info_str, 0, (void *)&s) != dnnl_success || !s)
        return "?";
    return s;
}

uint64_t cnn_cpu_act_variant(cnn_act act, float alpha)
{
    uint32_t bits = 0;
    if (act == CNN_ACT_LEAKY_RELU || act == CNN_ACT_ELU) memcpy(&bits, &alpha, sizeof bits);
    return (uint64_t)act | (uint64_t)bits << 8;
}

cnn_status cnn_cpu_act_attr(cnn_act act, float alpha, dnnl_primitive_attr_t *attr, const char *what)
{
    cnn_status st = CNN_OK;
    dnnl_post_ops_t po = NULL;
    dnnl_alg_kind_t alg;
    float a = 0.0f;
    *attr = NULL;
    switch (act) {
    case CNN_ACT_NONE: return CNN_OK;
    case CNN_ACT_RELU: alg = dnnl_eltwise_relu; break; /* alpha 0: no leak */
    case CNN_ACT_LEAKY_RELU: alg = dnnl_eltwise_relu, a = alpha; break;
    case CNN_ACT_ELU: alg = dnnl_eltwise_elu, a = alpha; break;
    case CNN_ACT_SIGMOID: alg = dnnl_eltwise_logistic; break;
    case CNN_ACT_TANH: alg = dnnl_eltwise_tanh; break;
    default:
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: activation %s cannot be fused; apply it as a separate op", what,
                         cnn_op_act_name(act));
    }
    CNN_CPU_DNNL(what, dnnl_post_ops_create, &po);
    /* scale 1; beta unused by these algorithms */
    CNN_CPU_DNNL(what, dnnl_post_ops_append_eltwise, po, 1.0f, alg, a, 0.0f);
    CNN_CPU_DNNL(what, dnnl_primitive_attr_create, attr);
    CNN_CPU_DNNL(what, dnnl_primitive_attr_set_post_ops, *attr, po);
fail:
    if (po) dnnl_post_ops_destroy(po);
    if (st != CNN_OK && *attr) {
        dnnl_primitive_attr_destroy(*attr);
        *attr = NULL;
    }
    return st;
}


// ---------------------------------------------------------------------------------------------------------------
// layers with weights

static void cnn_cpu_wentry_destroy(void *p)
{
    cnn_cpu_wentry *e = p;
    for (int i = 0; i < 3; i++) cnn_cpu_prim_destroy(&e->l.prim[i]);
    if (e->l.hint) dnnl_primitive_desc_destroy(e->l.hint);
    free(e);
}

/* direction c->dir of the layer `e` */
static cnn_status cnn_cpu_wlayer_run(cnn_cpu_ctx *ctx, cnn_cpu_wentry *e, const cnn_cpu_wkind *k,
                                     const cnn_cpu_wcall *c)
{
    const char *what = k->what[c->dir];
    const char *prefer = k->prefer ? k->prefer(e, c->dir) : NULL;
    cnn_cpu_wlayer *l = &e->l;
    /* each direction's arguments, in the order of data below: the bias last */
    const cnn_cpu_arg_spec specs[3][4] = {
        [CNN_OP_FWD] = {{DNNL_ARG_SRC, dnnl_query_src_md, 0, &l->x_md, 0},
                        {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &l->w_md, 0},
                        {DNNL_ARG_DST, dnnl_query_dst_md, 0, &l->y_md, 1},
                        {DNNL_ARG_BIAS, dnnl_query_weights_md, 1, &l->b_md, 0}},
        [CNN_OP_BWD_DATA] = {{DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &l->y_md, 0},
                             {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &l->w_md, 0},
                             {DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, 0, &l->x_md, 1}},
        [CNN_OP_BWD_WEIGHTS] = {{DNNL_ARG_SRC, dnnl_query_src_md, 0, &l->x_md, 0},
                                {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &l->y_md, 0},
                                {DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, 0, &l->w_md, 1},
                                {DNNL_ARG_DIFF_BIAS, dnnl_query_diff_weights_md, 1, &l->b_md, 1}},
    };
    cnn_status st = CNN_OK;
    cnn_cpu_prim *p = &l->prim[c->dir];
    dnnl_primitive_attr_t attr = NULL;
    const int fwd = c->dir == CNN_OP_FWD;
    const cnn_tensor *bias = fwd ? c->b : c->dir == CNN_OP_BWD_WEIGHTS ? c->db : NULL;
    const cnn_tensor *const tensors[3][3] = {
        [CNN_OP_FWD] = {c->x, c->w, c->y},
        [CNN_OP_BWD_DATA] = {c->dy, c->w, c->dx},
        [CNN_OP_BWD_WEIGHTS] = {c->x, c->dy, c->dw},
    };
    void *data[4] = {tensors[c->dir][0]->data, tensors[c->dir][1]->data, tensors[c->dir][2]->data,
                     bias ? bias->data : NULL};
    const uint64_t variant = (uint64_t)(bias != NULL) | (fwd ? cnn_cpu_act_variant(c->act, c->act_alpha) << 1 : 0);
    if (!p->built || p->variant != variant) {
        cnn_cpu_wdesc d;
        if (!fwd && !l->hint) {
            CNN_TRY(k->desc(e, CNN_OP_FWD, 0, &d, what));
            CNN_CPU_DNNL(what, dnnl_primitive_desc_create, &l->hint, &d, NULL, ctx->engine, NULL);
        }
        if (fwd) CNN_TRY(cnn_cpu_act_attr(c->act, c->act_alpha, &attr, what));
        for (int again = 1;; again = 0) {
            CNN_TRY(k->desc(e, c->dir, bias != NULL, &d, what));
            st = cnn_cpu_prim_build_prefer(ctx, p, &d, attr, fwd ? NULL : l->hint, specs[c->dir], 3 + (bias != NULL),
                                           0, prefer, what);
            if (st == CNN_OK || !again || !k->fallback || !k->fallback(e, c->dir)) break;
            cnn_clear_error(); /* e.g. a fused activation the faster kernel lacks: the general one has it */
        }
        CNN_TRY(st);
        p->variant = variant;
    }
    if (fwd) p->arg[1].version = c->w->version; /* the weights' reorder is cached while they do not change */
    CNN_TRY(cnn_cpu_prim_run(ctx, p, data, NULL, what));
fail:
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st;
}

cnn_status cnn_cpu_wlayer_op(cnn_backend *b, const cnn_cpu_wkind *k, cnn_plan **plan, const void *key,
                             const cnn_cpu_wcall *c)
{
    const char *op = k->op[c->dir];
    cnn_status st = CNN_OK;
    cnn_plan *tmp = NULL;
    void *p = NULL;
    CNN_TRY(cnn_plan_entry(plan ? plan : &tmp, k->plan, CNN_CPU_PLAN_SLOTS, key, k->key_size, k->entry_size,
                           cnn_cpu_wentry_destroy, &p, op));
    cnn_cpu_wentry *e = p;
    if (!e->l.ready) {
        CNN_TRY(k->prepare(cnn_cpu_ctx_of(b), e, op));
        e->l.ready = 1;
    }
    CNN_TRY(cnn_cpu_wlayer_run(cnn_cpu_ctx_of(b), e, k, c));
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}
