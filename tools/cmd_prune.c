/* cnn prune --strip: a channel-pruned model without its pruned channels (README "Pruning"). */
#include <stdio.h>

#include "tools/cli.h"

int cmd_prune(int argc, char **argv)
{
    const char *usage = "--strip --model FILE --out FILE [--device NAME]";
    const char *model = NULL, *out = NULL, *device = "cpu";
    int strip = 0;
    cli_flag flags[] = {
        {"strip", CLI_BOOL, &strip, "          remove the channels channel pruning zeroed (cnn train --prune magnitude "
                                    "--prune-structure channel): a narrower definition and its weights", 0, 0, 0},
        {"model", CLI_STRING, &model, "FILE      the pruned model file (.safetensors)", 0, 0, 0},
        {"out", CLI_STRING, &out, "FILE      where to write the stripped model", 0, 0, 0},
        {"device", CLI_STRING, &device, "NAME      where the weights are read and copied (default cpu)", 0, 0, 0},
        {NULL, 0, NULL, NULL, 0, 0, 0},
    };
    char *pos[1];
    int npos;
    int rc = cli_parse("prune", usage, flags, argc, argv, pos, 0, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (!strip || !model || !out) {
        fprintf(stderr, "cnn prune: %s is required (usage: cnn prune %s)\n",
                !strip ? "--strip" : !model ? "--model FILE" : "--out FILE", usage);
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
    if ((st = cnn_net_strip(net, backend, &small, &removed)) != CNN_OK) {
        rc = cli_fail("prune", "--strip", st);
        goto done;
    }
    if ((st = cnn_net_save(small, out)) != CNN_OK) {
        rc = cli_fail("prune", "--out", st);
        goto done;
    }
    int64_t after = cnn_net_param_count(small);
    fprintf(stderr, "cnn prune: %lld channel%s removed; %lld -> %lld parameters (%.1f%%); written to %s\n",
            (long long)removed, cli_s(removed), (long long)before, (long long)after,
            before ? 100.0 * (double)after / (double)before : 0.0, out);
    rc = 0;
done:
    cnn_net_destroy(small);
    cnn_net_destroy(net);
    cnn_backend_destroy(backend);
    return rc;
}
