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
    int rc = cli_attack_apply(command, "adversarial", "required with --adversarial", o, seed, &cfg->attack);
    if (rc) return rc;
    if (o->ratio < 0.0f || o->ratio > 1.0f) {
        fprintf(stderr, "cnn %s: --adv-ratio: must be in (0, 1]\n", command);
        return 2;
    }
    cfg->adversarial = 1;
    cfg->adv_ratio = o->ratio;
    return 0;
}

int cli_attack_apply(const char *command, const char *flag, const char *eps_missing, const cli_adv_opts *o,
                     uint64_t seed, cnn_attack_config *cfg)
{
    if (cnn_attack_parse(o->method, &cfg->method) != CNN_OK) {
        fprintf(stderr, "cnn %s: --%s: %s\n", command, flag, cnn_last_error());
        return 2;
    }
    if (o->eps < 0.0f || o->eps > 1.0f) {
        fprintf(stderr, "cnn %s: --eps: %s; it is in pixel units of [0, 1] images, from 0 to 1\n", command,
                o->eps == CLI_EPS_UNSET ? eps_missing : "must be from 0 to 1");
        return 2;
    }
    cfg->eps = o->eps;
    cfg->steps = o->steps;
    cfg->alpha = o->alpha;
    cfg->random_start = o->random_start;
    cfg->seed = seed;
    return 0;
}
