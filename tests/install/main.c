/* Builds the seed CNN through the installed public API and checks its parameter count. */
#include <stdio.h>

#include <cnn/cnn.h>

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    cnn_backend *b = NULL;
    cnn_net *net = NULL;
    if (cnn_backend_create("cpu", &b) != CNN_OK || cnn_net_from_file(argv[1], b, 1, &net) != CNN_OK) {
        fprintf(stderr, "consumer: %s\n", cnn_last_error());
        return 1;
    }
    long long n = (long long)cnn_net_param_count(net);
    printf("cnn %s: %lld parameters\n", cnn_version(), n);
    cnn_net_destroy(net);
    cnn_backend_destroy(b);
    return n == 163850 ? 0 : 1;
}
