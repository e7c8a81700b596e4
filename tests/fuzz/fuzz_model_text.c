/* Fuzz harness: model definitions (the text of the samples/models files; core/nn/model_text.c), built on the CPU backend
 * as `cnn train --model` and `cnn summary` do.
 *
 * The input is the definition. A network that builds is summarized (the Keras-style table, to /dev/null) and its
 * counts checked; its augment line, when it has one, must parse (the parser checked it). */
#include <stdlib.h>

#include "cnn/net.h"
#include "cnn/pipeline.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    char *text = fuzz_text(data, size);
    cnn_net *net = NULL;
    if (cnn_net_from_text(text, "fuzz.cnn", fuzz_backend(), 1, &net) != CNN_OK) {
        fuzz_check(net == NULL, "a failed build left a network");
        free(text);
        return 0;
    }
    int h = 0, w = 0, c = 0;
    cnn_net_input_shape(net, &h, &w, &c);
    fuzz_check(h >= 1 && w >= 1 && c >= 1, "a network with an empty input");
    fuzz_check(cnn_net_num_outputs(net) >= 1, "a network without outputs");
    fuzz_check(cnn_net_param_count(net) >= 0, "a negative parameter count");
    fuzz_check(cnn_net_definition(net) != NULL, "a network without its definition");
    cnn_net_summary(net, fuzz_devnull());

    char line[1024];
    const char *spec = cnn_augment_from_definition(text, line, sizeof line);
    cnn_augment a;
    if (spec) fuzz_check(cnn_augment_parse(spec, &a) == CNN_OK, "a built network's augment line does not parse");
    cnn_net_destroy(net);
    free(text);
    return 0;
}
