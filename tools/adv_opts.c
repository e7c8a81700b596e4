/* cnn train's adversarial-training flags. */
#include "tools/adv_opts.h"

#include <stdio.h>

int cli_adv_apply(const char *command, const cli_adv_opts *o, cnn_train_config *cfg, uint64_t seed)
{
    if (!o->method) {
        if (o->eps != CLI_EPS_UNSET || o->ratio != 0.0f) {
            fprintf(stderr, "cnn %s: --%s: needs --adversarial fgsm|pgd\n", command,
                    o->eps != CLI_EPS_UNSET ? "eps" : "adv-ratio");
            return 2;
        }
        return 0;
    }
    if (cnn_attack_parse(o->method, &cfg->attack.method) != CNN_OK) {
        fprintf(stderr, "cnn %s: --adversarial: %s\n", command, cnn_last_error());
        return 2;
    }
    if (o->eps < 0.0f || o->eps > 1.0f) {
        fprintf(stderr, "cnn %s: --eps: %s; it is in pixel units of [0, 1] images, from 0 to 1\n", command,
                o->eps == CLI_EPS_UNSET ? "required with --adversarial" : "must be from 0 to 1");
        return 2;
    }
    if (o->ratio < 0.0f || o->ratio > 1.0f) {
        fprintf(stderr, "cnn %s: --adv-ratio: must be in (0, 1]\n", command);
        return 2;
    }
    cfg->adversarial = 1;
    cfg->attack.eps = o->eps;
    cfg->attack.steps = o->steps;
    cfg->attack.alpha = o->alpha;
    cfg->attack.random_start = o->random_start;
    cfg->attack.seed = seed;
    cfg->adv_ratio = o->ratio;
    return 0;
}
