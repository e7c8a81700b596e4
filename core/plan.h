/* The plan cache every backend uses (docs/ARCHITECTURE.md, "The backend table"): `struct cnn_plan`, the slot a call
 * site (a layer) owns and passes as cnn_*_args.plan, holding a few per-shape entries that a backend builds lazily
 * (primitives, descriptors, algorithm choices, workspaces) and keeps while they are used.
 *
 * An entry is a backend-defined struct that starts with its key (memcmp-compared, so keys are zeroed before they
 * are filled: cnn_*_sizes_of in core/op_check.h do that). A plan keeps `slots` entries; a new key takes an empty
 * slot, else the least recently used one, whose entry is destroyed. */
#ifndef CNN_CORE_PLAN_H
#define CNN_CORE_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* the op families a plan serves; a slot given to another family's op is CNN_ERR_INVALID_ARG */
typedef enum cnn_plan_kind {
    CNN_PLAN_CONV = 1,
    CNN_PLAN_POOL,
    CNN_PLAN_DENSE,
    CNN_PLAN_QCONV,
} cnn_plan_kind;

#define CNN_PLAN_MAX_SLOTS 4

typedef void (*cnn_plan_entry_destroy_fn)(void *entry);

struct cnn_plan {
    cnn_plan_kind kind;
    int slots;
    size_t key_size;
    cnn_plan_entry_destroy_fn entry_destroy;
    uint64_t clock;
    void *entry[CNN_PLAN_MAX_SLOTS];
    uint64_t used[CNN_PLAN_MAX_SLOTS];
    /* pooling: the entry of the most recent training forward (whose argmax or workspace is current), and its input
     * and output (max-pool backward without x and y) */
    void *last_forward;
    const void *last_x, *last_y;
    uint64_t entries_built; /* how many entries were ever created (tests check the cache's behaviour with it) */
};

/* Finds the entry for `key` in *slot, creating the plan (with `slots` entries, at most CNN_PLAN_MAX_SLOTS) and the
 * entry (zeroed, key copied in, `entry_size` bytes) when needed. `what` names the op in messages. */
cnn_status cnn_plan_entry(cnn_plan **slot, cnn_plan_kind kind, int slots, const void *key, size_t key_size,
                          size_t entry_size, cnn_plan_entry_destroy_fn destroy, void **entry, const char *what);

/* Frees the plan and its entries; the backends' plan_destroy entry (b is not used). */
void cnn_plan_destroy(cnn_backend *b, cnn_plan *plan);

#ifdef __cplusplus
}
#endif
#endif
