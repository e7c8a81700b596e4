/* cnn train's pruning flags. */
#include "tools/prune_opts.h"

#include <stdio.h>
#include <string.h>

int cli_prune_apply(const char *command, const cli_prune_opts *o, cnn_train_config *cfg)
{
    const char *stray = o->structure                         ? "prune-structure"
                        : o->target != CLI_PRUNE_UNSET        ? "target-sparsity"
                        : o->initial != CLI_PRUNE_UNSET       ? "initial-sparsity"
                        : o->begin != CLI_PRUNE_UNSET_STEP    ? "prune-begin-step"
                        : o->end != CLI_PRUNE_UNSET_STEP      ? "prune-end-step"
                        : o->frequency != CLI_PRUNE_UNSET_STEP ? "prune-frequency"
                                                              : NULL;
    if (!o->method) {
        if (stray) {
            fprintf(stderr, "cnn %s: --%s: needs --prune magnitude\n", command, stray);
            return 2;
        }
        return 0;
    }
    cnn_prune_config *p = &cfg->prune;
    cnn_prune_config_defaults(p);
    if (strcmp(o->method, "magnitude")) {
        fprintf(stderr, "cnn %s: --prune: '%s' is not a pruning method (magnitude is the one there is)\n", command,
                o->method);
        return 2;
    }
    if (o->structure && cnn_prune_structure_parse(o->structure, &p->structure) != CNN_OK) {
        fprintf(stderr, "cnn %s: --prune-structure: %s\n", command, cnn_last_error());
        return 2;
    }
    if (p->structure == CNN_PRUNE_2_4 && (o->target != CLI_PRUNE_UNSET || o->initial != CLI_PRUNE_UNSET)) {
        fprintf(stderr, "cnn %s: --%s: 2:4 sparsity is 50%% by construction (2 of every 4 weights); give no "
                        "sparsity with it\n", command, o->target != CLI_PRUNE_UNSET ? "target-sparsity" : "initial-sparsity");
        return 2;
    }
    if (o->target != CLI_PRUNE_UNSET) p->target_sparsity = o->target;
    if (o->initial != CLI_PRUNE_UNSET) p->initial_sparsity = o->initial;
    if (!(p->target_sparsity >= 0.0f && p->target_sparsity < 1.0f)) {
        fprintf(stderr, "cnn %s: --target-sparsity: must be in [0, 1) (a share of the weights), got %g\n", command,
                (double)p->target_sparsity);
        return 2;
    }
    if (!(p->initial_sparsity >= 0.0f && p->initial_sparsity < 1.0f)) {
        fprintf(stderr, "cnn %s: --initial-sparsity: must be in [0, 1) (a share of the weights), got %g\n", command,
                (double)p->initial_sparsity);
        return 2;
    }
    if (p->initial_sparsity > p->target_sparsity) {
        fprintf(stderr, "cnn %s: --initial-sparsity: %g is above the target sparsity %g (masks only grow)\n", command,
                (double)p->initial_sparsity, (double)p->target_sparsity);
        return 2;
    }
    if (o->begin != CLI_PRUNE_UNSET_STEP) p->begin_step = o->begin;
    if (o->end != CLI_PRUNE_UNSET_STEP) p->end_step = o->end;
    if (o->frequency != CLI_PRUNE_UNSET_STEP) p->frequency = o->frequency;
    if (p->begin_step < 0) {
        fprintf(stderr, "cnn %s: --prune-begin-step: must be >= 0, got %lld\n", command, (long long)p->begin_step);
        return 2;
    }
    if (o->end != CLI_PRUNE_UNSET_STEP && p->end_step <= p->begin_step) {
        fprintf(stderr, "cnn %s: --prune-end-step: %lld is not after the begin step %lld\n", command,
                (long long)p->end_step, (long long)p->begin_step);
        return 2;
    }
    if (p->frequency < 1) {
        fprintf(stderr, "cnn %s: --prune-frequency: must be at least 1 step, got %lld\n", command,
                (long long)p->frequency);
        return 2;
    }
    p->enabled = 1;
    return 0;
}
