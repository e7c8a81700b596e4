/* Fuzz harness: the model server's config file (core/serve/serve_config.c), as `cnn serve --model-config` reads it.
 *
 * A config that parses must hold 1 to 256 models with distinct names that are never paths, base paths joined to
 * the folder when relative, a policy in range (latest N >= 1, or 1 or more distinct specific versions), and
 * labels with distinct names and versions >= 0. */
#include <string.h>

#include "core/serve/serve.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    cnn_serve_model_config c;
    if (cnn_serve_parse_model_config((const char *)data, size, "/srv", &c) != CNN_OK) {
        fuzz_check(c.n == 0 && c.models == NULL, "a failed parse left models");
        return 0;
    }
    fuzz_check(c.n >= 1 && c.n <= 256, "a number of models out of bounds");
    for (int i = 0; i < c.n; i++) {
        const cnn_serve_model_spec *m = &c.models[i];
        fuzz_check(m->name[0] && !strpbrk(m->name, "/: "), "a model name that is empty or a path");
        fuzz_check(m->base_path[0] == '/', "a base path not made absolute");
        for (int j = 0; j < i; j++) fuzz_check(strcmp(c.models[j].name, m->name) != 0, "a model named twice");
        if (m->policy == CNN_SERVE_POLICY_LATEST) fuzz_check(m->latest >= 1, "latest below 1");
        if (m->policy == CNN_SERVE_POLICY_SPECIFIC) fuzz_check(m->nversions >= 1, "no specific version");
        for (int v = 0; v < m->nversions; v++) {
            fuzz_check(m->versions[v] >= 0, "a negative version");
            for (int w = 0; w < v; w++) fuzz_check(m->versions[w] != m->versions[v], "a version listed twice");
        }
        for (int l = 0; l < m->nlabels; l++) {
            fuzz_check(m->labels[l].version >= 0 && m->labels[l].name[0], "a bad label");
            for (int w = 0; w < l; w++) fuzz_check(strcmp(m->labels[w].name, m->labels[l].name) != 0, "a label twice");
        }
    }
    cnn_serve_model_config_free(&c);
    return 0;
}
