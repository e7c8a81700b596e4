/* cnn summary: print a model's layers, output shapes and parameter counts, as Keras' model.summary(), then the
 * memory it takes at a batch size (per layer, and the totals of a training step and of inference) against the
 * memory limit. Nothing is allocated for the network: the definition (from a .cnn file or a model file) is
 * described and estimated (cnn_memory_estimate_file), so that any definition answers at once. */
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"

/* A model file's zero weights per conv and dense layer (pruning, README "Pruning"), when it has any; nothing for a
 * definition or a file that does not load. */
static void print_sparsity(const char *path)
{
    cnn_backend *b = NULL;
    cnn_net *net = NULL;
    if (cnn_backend_create("cpu", &b) != CNN_OK) return;
    if (cnn_net_load(path, b, &net) == CNN_OK) {
        int64_t zeros = 0, total = 0;
        int layers = cnn_net_num_layers(net);
        for (int i = 0; i < layers; i++) {
            int64_t z, t;
            if (cnn_net_layer_sparsity(net, i, &z, &t) == CNN_OK) zeros += z, total += t;
        }
        if (zeros) {
            printf("\nWeight sparsity (zero weights of conv and dense layers):\n");
            for (int i = 0; i < layers; i++) {
                int64_t z, t;
                if (cnn_net_layer_sparsity(net, i, &z, &t) == CNN_OK && t)
                    printf("  %-24s %10lld / %-10lld %6.2f%%\n", cnn_net_layer_name(net, i), (long long)z,
                           (long long)t, 100.0 * (double)z / (double)t);
            }
            printf("  %-24s %10lld / %-10lld %6.2f%%\n", "total", (long long)zeros, (long long)total,
                   100.0 * (double)zeros / (double)total);
        }
    }
    cnn_net_destroy(net);
    cnn_backend_destroy(b);
}

int cmd_summary(int argc, char **argv)
{
    const char *usage = "MODEL [--batch N] [--optimizer NAME] [--max-memory SIZE]  (MODEL: a definition .cnn or a "
                        "model .safetensors)";
    const char *optimizer = "adam";
    int batch = 64;
    int64_t max_memory = 0;
    cli_flag flags[] = {
        {"batch", CLI_INT, &batch, "N         the batch size of the memory table (default 64, as cnn train)", 1,
         1 << 30, 0},
        {"optimizer", CLI_STRING, &optimizer, "NAME      the optimizer whose state training keeps: adam, adamw, sgd "
                                              "(momentum 0.9) or rmsprop (default adam)", 0, 0, 0},
        CLI_MAX_MEMORY_FLAG(max_memory),
        CLI_END,
    };
    char *pos[1];
    int npos;
    int rc = cli_parse("summary", usage, flags, argc, argv, pos, 1, &npos);
    if (rc) return rc == 1 ? 0 : rc;
    if (npos != 1) {
        fprintf(stderr, "cnn summary: expected one MODEL argument (see cnn summary --help)\n");
        return 2;
    }
    cnn_optimizer_kind kind;
    if (cnn_optimizer_parse(optimizer, &kind) != CNN_OK) {
        fprintf(stderr, "cnn summary: --optimizer: %s\n", cnn_last_error());
        return 2;
    }
    int printed = 0;
    cnn_status qst = cnn_quant_summary(pos[0], stdout, &printed);
    if (qst == CNN_OK && printed) return 0; /* a quantized model: its ops; the definition it came from is below */
    cli_apply_max_memory(max_memory);
    /* the momentum cnn train gives each optimizer by default */
    cnn_memory_config cfg = {.batch = batch,
                             .optimizer_slots = cnn_optimizer_slots(kind, kind == CNN_OPTIM_RMSPROP ? 0.0f : 0.9f)};
    cnn_memory_estimate *e = NULL;
    cnn_status st = cnn_memory_estimate_file(pos[0], &cfg, &e);
    if (st != CNN_OK) return cli_fail("summary", pos[0], st);
    cnn_memory_print(e, 0, stdout);
    print_sparsity(pos[0]);
    fflush(stdout);
    /* refused: what no command could build (one image in inference), and with --max-memory a training step at
     * --batch that does not fit it */
    cnn_memory_estimate *one = NULL;
    if (cnn_memory_max_batch(e, 0, cnn_memory_limit()) < 1) {
        cnn_memory_config single = {.batch = 1, .optimizer_slots = 0};
        st = cnn_memory_estimate_file(pos[0], &single, &one);
        if (st == CNN_OK) st = cnn_memory_check(one, 0, 0);
        rc = cli_fail("summary", max_memory ? "--max-memory" : "memory limit", st);
    } else if (max_memory && (st = cnn_memory_check(e, 1, 0)) != CNN_OK) {
        rc = cli_fail("summary", "--max-memory", st);
    }
    cnn_memory_estimate_destroy(one);
    cnn_memory_estimate_destroy(e);
    return rc;
}
