/* cnn train's adversarial-training flags (README "Trust"), kept apart so that cnn_train's flag table only names
 * them. Public API only. */
#ifndef CNN_TOOLS_ADV_OPTS_H
#define CNN_TOOLS_ADV_OPTS_H

#include <stdint.h>

#include "cnn/cnn.h"
#include "tools/cli.h"

typedef struct cli_adv_opts {
    const char *method; /* --adversarial fgsm|pgd */
    float eps, alpha, ratio;
    int steps, random_start;
} cli_adv_opts;

/* eps CLI_EPS_UNSET: not given */
#define CLI_ADV_OPTS_INIT {NULL, CLI_EPS_UNSET, 0.0f, 0.0f, 10, 0}

#define CLI_ADV_FLAGS(o)                                                                                              \
    {"adversarial", CLI_STRING, &(o).method, "NAME      adversarial training: fgsm (Goodfellow's mixed batches) or "  \
                                             "pgd (Madry's), with --eps", 0, 0, 0},                                  \
    {"eps", CLI_FLOAT, &(o).eps, "E         adversarial training: the L-infinity radius in [0, 1] pixel units",      \
     -1e29, 1e29, 0},                                                                                                 \
    {"steps", CLI_INT, &(o).steps, "K         adversarial training, pgd: iterations (default 10)", 1, 100000, 0},     \
    {"alpha", CLI_FLOAT, &(o).alpha, "A         adversarial training, pgd: the step (default 2.5 * eps / steps)", 0,   \
     1, 0},                                                                                                           \
    {"random-start", CLI_BOOL, &(o).random_start, "          adversarial training, pgd: random starts in the "       \
                                                  "eps-ball", 0, 0, 0},                                              \
    {"adv-ratio", CLI_FLOAT, &(o).ratio, "R         adversarial share of every batch (default 0.5 for fgsm, 1 for "   \
                                         "pgd)", 0, 1, 0}

/* The attack the flags name: o->method (given with --<flag>) with --eps in [0, 1] (CLI_EPS_UNSET: not given, which
 * the message calls `eps_missing`, e.g. "required with --attack"), --steps, --alpha and --random-start, seeded by
 * `seed`, into *cfg (o->ratio is not used). Prints a message naming the flag and returns 2 on a bad value, else 0. */
int cli_attack_apply(const char *command, const char *flag, const char *eps_missing, const cli_adv_opts *o,
                     uint64_t seed, cnn_attack_config *cfg);

/* Puts the flags into cfg (the attack's seed is `seed`). Prints a message naming the flag and returns 2 on a bad
 * value, else 0. */
int cli_adv_apply(const char *command, const cli_adv_opts *o, cnn_train_config *cfg, uint64_t seed);

#endif
