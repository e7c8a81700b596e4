/* Fuzz harness: the model server's request parsing (core/serve/serve_api.c): the path router and the bodies of
 * :predict, :classify and /infer, as the server sees them from the network, without one.
 *
 * The first byte picks the API and the model's input (a 2x2 gray one, or a 3x3 RGB one that encoded images are
 * resized to 4x5 for and centre-cropped); the input up to the first newline is also routed as a path, and the
 * whole input is the body. A body that parses must hold 1 to max_images images of finite values (encoded images
 * within [0, 1]), and its answer, written with made-up probabilities, must be JSON that parses back. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/json.h"
#include "core/serve/serve.h"
#include "fuzz.h"

static void check_route(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t len = nl ? (size_t)(nl - data) : size;
    char *path = fuzz_text(data, len);
    cnn_serve_route r;
    cnn_serve_parse_path(path, &r);
    fuzz_check(r.kind >= CNN_ROUTE_NONE && r.kind <= CNN_ROUTE_METRICS, "a route kind out of range");
    if (r.name) {
        fuzz_check(r.name >= path && r.name + r.name_len <= path + strlen(path), "the model name is outside the path");
        fuzz_check(memchr(r.name, '/', r.name_len) == NULL, "a model name holds '/'");
    }
    fuzz_check(r.version >= -1, "a negative version");
    (void)cnn_serve_route_is_post(r.kind);
    free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT || size < 1) return 0;
    check_route(data, size);
    cnn_serve_api api = (cnn_serve_api)(data[0] % 3);
    int rgb = (data[0] / 3) % 2;
    cnn_serve_spec spec = {.h = rgb ? 3 : 2, .w = rgb ? 3 : 2, .c = rgb ? 3 : 1, .rh = rgb ? 4 : 2, .rw = rgb ? 5 : 2,
                           .max_pixels = 4096, .max_images = 8};
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    cnn_serve_request req;
    if (cnn_serve_parse_request(api, body, len, &spec, &req) != CNN_OK) {
        fuzz_check(req.images == NULL && req.n == 0 && req.id == NULL, "a failed parse left a request");
        return 0;
    }
    fuzz_check(req.n >= 1 && req.n <= spec.max_images, "a request with a number of images out of bounds");
    size_t per = (size_t)spec.h * spec.w * spec.c;
    for (size_t i = 0; i < (size_t)req.n * per; i++) fuzz_check(isfinite(req.images[i]), "a non-finite pixel");

    int k = 3;
    float *probs = malloc((size_t)req.n * k * sizeof *probs);
    fuzz_check(probs != NULL, "out of memory");
    for (int64_t i = 0; i < req.n * k; i++) probs[i] = (float)(i % 7) / 7.0f;
    const char *names[] = {"a", NULL, "c\"q"};
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_serve_write_result(&w, api, &req, probs, k, names, "model", 1);
    char *text = NULL;
    size_t tlen = 0;
    fuzz_check(cnn_json_writer_finish(&w, &text, &tlen) == CNN_OK, "the answer could not be written");
    cnn_json *doc = NULL;
    fuzz_check(cnn_json_parse(text, tlen, &doc) == CNN_OK, "the answer is not JSON");
    cnn_json_free(doc);
    free(text);
    free(probs);
    cnn_serve_request_free(&req);
    return 0;
}
