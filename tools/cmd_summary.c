/* cnn summary: print a model's layers, output shapes and parameter counts, as Keras' model.summary(). */
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"

int cmd_summary(int argc, char **argv)
{
    const char *usage = "MODEL  (a definition .cnn or a model .safetensors)";
    cli_flag flags[] = {{NULL, 0, NULL, NULL, 0, 0, 0}};
    char *pos[1];
    int npos;
    int rc = cli_parse("summary", usage, flags, argc, argv, pos, 1, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (npos != 1) {
        fprintf(stderr, "cnn summary: expected one MODEL argument (see cnn summary --help)\n");
        return 2;
    }
    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    cnn_status st = cnn_backend_create("cpu", &backend);
    if (st != CNN_OK) return cli_fail("summary", "cpu backend", st);
    size_t len = strlen(pos[0]);
    if (len > 12 && !strcmp(pos[0] + len - 12, ".safetensors")) st = cnn_net_load(pos[0], backend, &net);
    else st = cnn_net_from_file(pos[0], backend, 0, &net);
    if (st != CNN_OK) {
        rc = cli_fail("summary", pos[0], st);
    } else {
        cnn_net_summary(net, stdout);
        rc = 0;
    }
    cnn_net_destroy(net);
    cnn_backend_destroy(backend);
    return rc;
}
