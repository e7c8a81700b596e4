/* cnn prune: a channel-pruned model without its pruned channels (--strip), and any model deflated (--compress)
 * (README "Pruning"). */
#include <stdio.h>

#include "tools/cli.h"

int cmd_prune(int argc, char **argv)
{
    const char *usage = "--strip|--compress --model FILE --out FILE [--device NAME]";
    const char *model = NULL, *out = NULL, *device = "cpu";
    int strip = 0, compress = 0;
    cli_flag flags[] = {
        {"strip", CLI_BOOL, &strip, "          remove the channels channel pruning zeroed (cnn train --prune magnitude "
                                    "--prune-structure channel): a narrower definition and its weights", 0, 0, 0},
        {"compress", CLI_BOOL, &compress, "          write the model zlib-compressed (cnn train --prune does): the "
                                          "zeros of unstructured and 2:4 pruning take little room", 0, 0, 0},
        {"model", CLI_STRING, &model, "FILE      the model file (.safetensors)", 0, 0, 0},
        {"out", CLI_STRING, &out, "FILE      where to write the result", 0, 0, 0},
        {"device", CLI_STRING, &device, "NAME      where the weights are read and copied (default cpu)", 0, 0, 0},
        CLI_END,
    };
    int rc = cli_parse_flags("prune", usage, flags, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if ((!strip && !compress) || !model || !out) {
        fprintf(stderr, "cnn prune: %s is required (usage: cnn prune %s)\n",
                !strip && !compress ? "--strip or --compress" : !model ? "--model FILE" : "--out FILE", usage);
        return 2;
    }
    cnn_backend *backend = NULL;
    cnn_net *net = NULL, *small = NULL;
    cnn_status st;
    int64_t removed = 0;
    rc = 1;
    if ((st = cli_backend("prune", device, &backend)) != CNN_OK) {
        rc = cli_fail_value("prune", "--device", st);
        goto done;
    }
    if ((st = cnn_net_load(model, backend, &net)) != CNN_OK) {
        rc = cli_fail("prune", "--model", st);
        goto done;
    }
    int64_t before = cnn_net_param_count(net);
    if (strip && (st = cnn_net_strip(net, backend, &small, &removed)) != CNN_OK) {
        rc = cli_fail("prune", "--strip", st);
        goto done;
    }
    const cnn_net *result = small ? small : net;
    if ((st = compress ? cnn_net_save_compressed(result, out) : cnn_net_save(result, out)) != CNN_OK) {
        rc = cli_fail("prune", "--out", st);
        goto done;
    }
    if (strip) {
        int64_t after = cnn_net_param_count(small);
        fprintf(stderr, "cnn prune: %lld channel%s removed; %lld -> %lld parameters (%.1f%%)\n", (long long)removed,
                cli_s(removed), (long long)before, (long long)after, before ? 100.0 * (double)after / (double)before : 0.0);
    }
    fprintf(stderr, "cnn prune: written to %s%s\n", out, compress ? " (zlib-compressed)" : "");
    rc = 0;
done:
    cnn_net_destroy(small);
    cli_close_model(backend, net);
    return rc;
}
