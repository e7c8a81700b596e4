/* The plan cache every backend uses (see plan.h). */
#include "core/plan.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static const char *cnn_plan_kind_name(cnn_plan_kind k)
{
    switch (k) {
    case CNN_PLAN_CONV: return "conv2d";
    case CNN_PLAN_POOL: return "pool2d";
    case CNN_PLAN_DENSE: return "dense";
    case CNN_PLAN_QCONV: return "int8 sums";
    }
    return "?";
}

cnn_status cnn_plan_entry(cnn_plan **slot, cnn_plan_kind kind, int slots, const void *key, size_t key_size,
                          size_t entry_size, cnn_plan_entry_destroy_fn destroy, void **entry, const char *what)
{
    *entry = NULL;
    cnn_plan *p = *slot;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for a plan (%zu bytes)", what, sizeof *p);
        p->kind = kind;
        p->slots = slots < 1 ? 1 : slots > CNN_PLAN_MAX_SLOTS ? CNN_PLAN_MAX_SLOTS : slots;
        p->key_size = key_size;
        p->entry_destroy = destroy;
        *slot = p;
    } else if (p->kind != kind || p->key_size != key_size) {
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: the plan slot given belongs to a %s op", what,
                         cnn_plan_kind_name(p->kind));
    }
    p->clock++;
    int victim = 0;
    for (int i = 0; i < p->slots; i++) {
        if (p->entry[i] && !memcmp(p->entry[i], key, key_size)) {
            p->used[i] = p->clock;
            *entry = p->entry[i];
            return CNN_OK;
        }
        /* the first empty slot, else the least recently used */
        if (!p->entry[i]) {
            if (p->entry[victim]) victim = i;
        } else if (p->entry[victim] && p->used[i] < p->used[victim]) {
            victim = i;
        }
    }
    void *e = calloc(1, entry_size);
    if (!e)
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for a plan entry (%zu bytes)", what, entry_size);
    memcpy(e, key, key_size);
    if (p->entry[victim]) {
        if (p->last_forward == p->entry[victim]) p->last_forward = NULL;
        p->entry_destroy(p->entry[victim]);
    }
    p->entry[victim] = e;
    p->used[victim] = p->clock;
    p->entries_built++;
    *entry = e;
    return CNN_OK;
}

void cnn_plan_destroy(cnn_backend *b, cnn_plan *plan)
{
    (void)b;
    if (!plan) return;
    for (int i = 0; i < plan->slots; i++)
        if (plan->entry[i]) plan->entry_destroy(plan->entry[i]);
    free(plan);
}
