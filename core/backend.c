/* Backend creation by name, through the registry the build generates (backends.c). core/ knows no backend. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/ops.h"

const char *cnn_backends_available(void)
{
    static char names[128];
    if (!names[0]) {
        size_t len = 0;
        for (int i = 0; i < cnn_backend_registry_count && len < sizeof names; i++)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i ? "," : "",
                                    cnn_backend_registry[i].name);
    }
    return names;
}

cnn_status cnn_backend_create(const char *name, cnn_backend **out)
{
    *out = NULL;
    if (!name || !strcmp(name, "auto")) {
        /* the last registered backend that is usable here wins: accelerators are listed after the cpu */
        for (int i = cnn_backend_registry_count - 1; i >= 0; i--)
            if (cnn_backend_registry[i].available())
                return cnn_backend_registry[i].create(cnn_backend_registry[i].name, out);
        return cnn_error(CNN_ERR_NOT_FOUND, "no backend is usable on this machine");
    }
    for (int i = 0; i < cnn_backend_registry_count; i++) {
        const char *reg = cnn_backend_registry[i].name;
        size_t len = strlen(reg);
        if (!strncmp(name, reg, len) && (name[len] == '\0' || name[len] == ':'))
            return cnn_backend_registry[i].create(name, out);
    }
    return cnn_error(CNN_ERR_NOT_FOUND, "unknown device '%s' (this build has: %s)", name, cnn_backends_available());
}

void cnn_backend_destroy(cnn_backend *b)
{
    if (b) cnn_op_destroy(b);
}

const char *cnn_backend_name(const cnn_backend *b) { return b ? b->name : ""; }

const char *cnn_backend_description(const cnn_backend *b) { return b ? b->description : ""; }

cnn_status cnn_backend_sync(cnn_backend *b) { return cnn_op_sync(b); }

cnn_status cnn_backend_lacks(const cnn_backend *b, const char *op)
{
    return cnn_error(CNN_ERR_UNSUPPORTED, "the %s backend has no %s op in this version", b->name, op);
}

cnn_status cnn_backend_alloc(const cnn_backend_ops *ops, size_t ctx_size, const char *kind, cnn_backend **out)
{
    cnn_backend *b = calloc(1, sizeof *b);
    void *ctx = calloc(1, ctx_size);
    *out = NULL;
    if (!b || !ctx) {
        free(b);
        free(ctx);
        return cnn_error(CNN_ERR_NO_MEMORY, "%s backend: out of host memory", kind);
    }
    b->ops = ops;
    b->ctx = ctx;
    *out = b;
    return CNN_OK;
}

static const char *const cnn_precision_names[CNN_PRECISION_COUNT] = {"fp32", "tf32", "fp16", "bf16"};

const char *cnn_precision_name(cnn_precision p)
{
    return (unsigned)p < CNN_PRECISION_COUNT ? cnn_precision_names[p] : "?";
}

cnn_status cnn_precision_parse(const char *name, cnn_precision *out)
{
    for (int i = 0; i < CNN_PRECISION_COUNT; i++)
        if (name && !strcmp(name, cnn_precision_names[i])) {
            *out = (cnn_precision)i;
            return CNN_OK;
        }
    return cnn_error(CNN_ERR_INVALID_ARG, "unknown precision '%s' (known: fp32, tf32, fp16, bf16)",
                     name ? name : "(none)");
}
