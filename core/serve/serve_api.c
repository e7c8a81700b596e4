/* The model server's request bodies and response bodies: JSON in, images out; probabilities in, JSON out.
 *
 * No network and no model here (core/serve/serve.h's spec says what the images must fit), so that the parsers can be
 * fuzzed on their own (tests/fuzz/fuzz_serve_request.c). Every failure is a status with a message that names the
 * field, the image and the element: the HTTP layer answers it with 400 and the message. */
#include "core/serve/serve.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/data/image.h"
#include "core/error.h"
#include "core/free_list.h"

// ---------------------------------------------------------------------------------------------------------------
// base64 (RFC 4648: the standard alphabet and the URL-safe one)

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+' || ch == '-') return 62;
    if (ch == '/' || ch == '_') return 63;
    return -1;
}

cnn_status cnn_serve_base64_decode(const char *text, size_t len, unsigned char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    size_t pad = 0;
    while (pad < 2 && len > 0 && text[len - 1] == '=') { /* at most two '=', only at the end */
        len--;
        pad++;
    }
    if (pad && (len + pad) % 4)
        return cnn_error(CNN_ERR_FORMAT, "invalid base64: padded to %zu characters, not a multiple of 4", len + pad);
    if (len % 4 == 1) return cnn_error(CNN_ERR_FORMAT, "invalid base64: %zu characters cannot encode whole bytes", len);
    size_t n = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for %zu decoded base64 bytes", n);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)text[i]);
        if (v < 0) {
            free(buf);
            return cnn_error(CNN_ERR_FORMAT, "invalid base64: character %zu (0x%02x) is not in the alphabet", i,
                             (unsigned char)text[i]);
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) { /* the unused low bits of the last character must be zero (RFC 4648, 3.5) */
        free(buf);
        return cnn_error(CNN_ERR_FORMAT, "invalid base64: the last character has bits set past the data");
    }
    *out = buf;
    *out_len = o;
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// images: nested numbers and encoded files

/* Where an element sits, for messages: "instances[2][27][3]". */
typedef struct where {
    char text[160];
} where;

static void where_init(where *at, const char *field, int64_t i)
{
    if (i >= 0)
        snprintf(at->text, sizeof at->text, "%s[%lld]", field, (long long)i);
    else
        snprintf(at->text, sizeof at->text, "%s", field);
}

/* The dims of an image as a request may write it: (h, w, c), or (h, w) when c == 1. */
static int image_dims(const cnn_serve_spec *spec, int64_t dims[3])
{
    dims[0] = spec->h;
    dims[1] = spec->w;
    dims[2] = spec->c;
    return 3;
}

/* Checks that v is an array nest of exactly the shape dims[0..nd) and copies its numbers, row-major, into out. */
static cnn_status fill_nested(const cnn_json *v, const int64_t *dims, int nd, float *out, size_t *pos, where *at,
                              int depth)
{
    if (nd == 0) {
        double d;
        if (!cnn_json_double(v, &d))
            return cnn_error(CNN_ERR_FORMAT, "%s: expected a number, got %s", at->text,
                             cnn_json_type_name(cnn_json_type_of(v)));
        float f = (float)d;
        if (!isfinite(f)) return cnn_error(CNN_ERR_NUMERIC, "%s: %g is not a finite float", at->text, d);
        out[(*pos)++] = f;
        return CNN_OK;
    }
    if (cnn_json_type_of(v) != CNN_JSON_ARRAY)
        return cnn_error(CNN_ERR_SHAPE, "%s: expected an array of %lld (nesting level %d), got %s", at->text,
                         (long long)dims[0], depth, cnn_json_type_name(cnn_json_type_of(v)));
    if ((int64_t)cnn_json_count(v) != dims[0])
        return cnn_error(CNN_ERR_SHAPE, "%s: expected %lld elements at nesting level %d, got %zu", at->text,
                         (long long)dims[0], depth, cnn_json_count(v));
    size_t base = strlen(at->text);
    for (int64_t i = 0; i < dims[0]; i++) {
        snprintf(at->text + base, sizeof at->text - base, "[%lld]", (long long)i);
        cnn_status st = fill_nested(cnn_json_at(v, (size_t)i), dims + 1, nd - 1, out, pos, at, depth + 1);
        if (st != CNN_OK) return st;
    }
    at->text[base] = '\0';
    return CNN_OK;
}

/* One image written as numbers: (h, w, c), or (h, w) for a one-channel model. */
static cnn_status image_from_numbers(const cnn_json *v, const cnn_serve_spec *spec, float *out, where *at)
{
    int64_t dims[3];
    int nd = image_dims(spec, dims);
    /* a one-channel image may leave its channel axis out: [h][w] of numbers */
    if (spec->c == 1 && cnn_json_type_of(v) == CNN_JSON_ARRAY && cnn_json_count(v) > 0) {
        const cnn_json *row = cnn_json_at(v, 0);
        if (cnn_json_type_of(row) == CNN_JSON_ARRAY && cnn_json_count(row) > 0 &&
            cnn_json_type_of(cnn_json_at(row, 0)) == CNN_JSON_NUMBER)
            nd = 2;
    }
    size_t pos = 0;
    return fill_nested(v, dims, nd, out, &pos, at, 1);
}

/* One image given as base64 text of a PNG, JPEG or BMP file. */
static cnn_status image_from_base64(const char *text, size_t len, const cnn_serve_spec *spec, float *out, where *at)
{
    unsigned char *bytes = NULL;
    size_t n = 0;
    cnn_status st = cnn_serve_base64_decode(text, len, &bytes, &n);
    if (st != CNN_OK) return cnn_error_prefix(st, "%s: ", at->text);
    st = cnn_image_load_crop_memory(bytes, n, at->text, spec->max_pixels, spec->rh, spec->rw, spec->h, spec->w,
                                    spec->c, out);
    free(bytes);
    return st;
}

/* An image as TF Serving's row format writes one: nested numbers, {"b64": "..."}, or an object with a single
 * named input holding either. */
static cnn_status image_from_value(const cnn_json *v, const cnn_serve_spec *spec, float *out, where *at)
{
    if (cnn_json_type_of(v) == CNN_JSON_OBJECT) {
        const cnn_json *b64 = cnn_json_get(v, "b64");
        if (b64) {
            size_t len;
            const char *s = cnn_json_string(b64, &len);
            if (!s || cnn_json_count(v) != 1)
                return cnn_error(CNN_ERR_FORMAT, "%s: {\"b64\": ...} must hold one string and nothing else", at->text);
            return image_from_base64(s, len, spec, out, at);
        }
        if (cnn_json_count(v) != 1)
            return cnn_error(CNN_ERR_FORMAT, "%s: an object must be {\"b64\": \"...\"} or name the model's one input "
                             "(\"%s\"), but it has %zu members", at->text, CNN_SERVE_INPUT_NAME, cnn_json_count(v));
        const cnn_json *inner = cnn_json_at(v, 0);
        if (cnn_json_type_of(inner) == CNN_JSON_OBJECT && !cnn_json_get(inner, "b64"))
            return cnn_error(CNN_ERR_FORMAT, "%s: expected an image under \"%s\", got an object", at->text,
                             cnn_json_key_at(v, 0, NULL));
        size_t base = strlen(at->text);
        snprintf(at->text + base, sizeof at->text - base, ".%s", cnn_json_key_at(v, 0, NULL));
        return image_from_value(inner, spec, out, at);
    }
    if (cnn_json_type_of(v) != CNN_JSON_ARRAY)
        return cnn_error(CNN_ERR_FORMAT, "%s: expected an image (nested numbers or {\"b64\": \"...\"}), got %s",
                         at->text, cnn_json_type_name(cnn_json_type_of(v)));
    return image_from_numbers(v, spec, out, at);
}

static cnn_status alloc_images(const cnn_serve_spec *spec, int64_t n, const char *field, cnn_serve_request *out)
{
    if (n < 1) return cnn_error(CNN_ERR_SHAPE, "\"%s\" holds no images", field);
    if (n > spec->max_images)
        return cnn_error(CNN_ERR_SHAPE, "\"%s\" holds %lld images, above the limit of %d a request", field,
                         (long long)n, spec->max_images);
    size_t per = (size_t)spec->h * spec->w * spec->c;
    out->images = malloc((size_t)n * per * sizeof *out->images);
    if (!out->images) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for %lld images", (long long)n);
    out->n = n;
    return CNN_OK;
}

/* A list of images, one per element (row format, or a column of b64 objects). */
static cnn_status images_from_list(const cnn_json *list, const char *field, const cnn_serve_spec *spec,
                                   cnn_serve_request *out)
{
    cnn_status st = alloc_images(spec, (int64_t)cnn_json_count(list), field, out);
    if (st != CNN_OK) return st;
    size_t per = (size_t)spec->h * spec->w * spec->c;
    for (int64_t i = 0; i < out->n; i++) {
        where at;
        where_init(&at, field, i);
        st = image_from_value(cnn_json_at(list, (size_t)i), spec, out->images + (size_t)i * per, &at);
        if (st != CNN_OK) return st;
    }
    return CNN_OK;
}

/* TF Serving's columnar "inputs": a batch tensor (n, h, w, c) of numbers, a list of images, one {"b64"} image, or
 * an object naming the model's one input and holding any of those. */
static cnn_status images_from_columns(const cnn_json *v, const cnn_serve_spec *spec, cnn_serve_request *out)
{
    if (cnn_json_type_of(v) == CNN_JSON_OBJECT && !cnn_json_get(v, "b64")) {
        if (cnn_json_count(v) != 1)
            return cnn_error(CNN_ERR_FORMAT, "\"inputs\": the model has one input (\"%s\"), but the object names %zu",
                             CNN_SERVE_INPUT_NAME, cnn_json_count(v));
        v = cnn_json_at(v, 0);
    }
    if (cnn_json_type_of(v) == CNN_JSON_OBJECT) { /* one {"b64": ...} image */
        cnn_status st = alloc_images(spec, 1, "inputs", out);
        where at;
        where_init(&at, "inputs", -1);
        return st != CNN_OK ? st : image_from_value(v, spec, out->images, &at);
    }
    if (cnn_json_type_of(v) != CNN_JSON_ARRAY)
        return cnn_error(CNN_ERR_FORMAT, "\"inputs\": expected an array of images or a batch tensor, got %s",
                         cnn_json_type_name(cnn_json_type_of(v)));
    return images_from_list(v, "inputs", spec, out);
}

// ---------------------------------------------------------------------------------------------------------------
// the Open Inference Protocol's tensors

/* Counts the numbers of a (possibly nested) data array, checking that every leaf is one. */
static cnn_status count_flat(const cnn_json *v, int64_t *count, int depth)
{
    if (cnn_json_type_of(v) != CNN_JSON_ARRAY) {
        if (cnn_json_type_of(v) != CNN_JSON_NUMBER)
            return cnn_error(CNN_ERR_FORMAT, "\"data\": expected numbers, got %s",
                             cnn_json_type_name(cnn_json_type_of(v)));
        (*count)++;
        return CNN_OK;
    }
    if (depth > 5) return cnn_error(CNN_ERR_SHAPE, "\"data\": nested deeper than the tensor's 5 dimensions");
    for (size_t i = 0; i < cnn_json_count(v); i++) {
        cnn_status st = count_flat(cnn_json_at(v, i), count, depth + 1);
        if (st != CNN_OK) return st;
    }
    return CNN_OK;
}

/* Copies the numbers of a nested data array in row-major order: FP32 as they are, UINT8 integers 0..255 as
 * v / 255 (the scale image files get). */
static cnn_status flatten_data(const cnn_json *v, int uint8, float *out, int64_t *pos)
{
    if (cnn_json_type_of(v) == CNN_JSON_ARRAY) {
        for (size_t i = 0; i < cnn_json_count(v); i++) {
            cnn_status st = flatten_data(cnn_json_at(v, i), uint8, out, pos);
            if (st != CNN_OK) return st;
        }
        return CNN_OK;
    }
    double d = 0;
    cnn_json_double(v, &d); /* count_flat checked that it is a number */
    if (uint8) {
        int64_t i;
        if (!cnn_json_int64(v, &i) || i < 0 || i > 255)
            return cnn_error(CNN_ERR_FORMAT, "\"data\"[%lld]: %g is not a UINT8 (an integer from 0 to 255)",
                             (long long)*pos, d);
        out[(*pos)++] = (float)i / 255.0f;
        return CNN_OK;
    }
    float f = (float)d;
    if (!isfinite(f)) return cnn_error(CNN_ERR_NUMERIC, "\"data\"[%lld]: %g is not a finite float", (long long)*pos, d);
    out[(*pos)++] = f;
    return CNN_OK;
}

static cnn_status infer_numbers(const cnn_json *input, const int64_t *shape, int nd, int uint8,
                                const cnn_serve_spec *spec, cnn_serve_request *out)
{
    /* (n, h, w, c), or (n, h, w) for a one-channel model */
    int ok = (nd == 4 && shape[1] == spec->h && shape[2] == spec->w && shape[3] == spec->c) ||
             (nd == 3 && spec->c == 1 && shape[1] == spec->h && shape[2] == spec->w);
    if (!ok)
        return cnn_error(CNN_ERR_SHAPE, "\"shape\": the model takes [n, %d, %d, %d]%s", spec->h, spec->w, spec->c,
                         spec->c == 1 ? " or [n, h, w]" : "");
    cnn_status st = alloc_images(spec, shape[0], "inputs", out);
    if (st != CNN_OK) return st;
    const cnn_json *data = cnn_json_get(input, "data");
    int64_t count = 0;
    if (cnn_json_type_of(data) != CNN_JSON_ARRAY)
        return cnn_error(CNN_ERR_FORMAT, "\"data\": expected an array, got %s",
                         cnn_json_type_name(cnn_json_type_of(data)));
    if ((st = count_flat(data, &count, 0)) != CNN_OK) return st;
    int64_t want = out->n * spec->h * spec->w * spec->c;
    if (count != want)
        return cnn_error(CNN_ERR_SHAPE, "\"data\" holds %lld numbers but the shape asks for %lld", (long long)count,
                         (long long)want);
    int64_t pos = 0;
    return flatten_data(data, uint8, out->images, &pos);
}

/* BYTES: one encoded image per element, each a base64 string (or {"b64": "..."}); shape [n] or [n, 1]. */
static cnn_status infer_bytes(const cnn_json *input, const int64_t *shape, int nd, const cnn_serve_spec *spec,
                              cnn_serve_request *out)
{
    if (!(nd == 1 || (nd == 2 && shape[1] == 1)))
        return cnn_error(CNN_ERR_SHAPE, "\"shape\": BYTES input takes [n] or [n, 1] encoded images");
    const cnn_json *data = cnn_json_get(input, "data");
    if (cnn_json_type_of(data) != CNN_JSON_ARRAY)
        return cnn_error(CNN_ERR_FORMAT, "\"data\": expected an array of base64 strings, got %s",
                         cnn_json_type_name(cnn_json_type_of(data)));
    /* a [n, 1] tensor may nest each string in its own array */
    if ((int64_t)cnn_json_count(data) != shape[0])
        return cnn_error(CNN_ERR_SHAPE, "\"data\" holds %zu elements but the shape asks for %lld",
                         cnn_json_count(data), (long long)shape[0]);
    cnn_status st = alloc_images(spec, shape[0], "inputs", out);
    if (st != CNN_OK) return st;
    size_t per = (size_t)spec->h * spec->w * spec->c;
    for (int64_t i = 0; i < out->n; i++) {
        const cnn_json *e = cnn_json_at(data, (size_t)i);
        if (cnn_json_type_of(e) == CNN_JSON_ARRAY && cnn_json_count(e) == 1) e = cnn_json_at(e, 0);
        where at;
        where_init(&at, "data", i);
        size_t len;
        const char *s = cnn_json_string(e, &len);
        if (!s && cnn_json_type_of(e) == CNN_JSON_OBJECT && cnn_json_count(e) == 1)
            s = cnn_json_string(cnn_json_get(e, "b64"), &len);
        if (!s) return cnn_error(CNN_ERR_FORMAT, "%s: expected a base64 string of an encoded image", at.text);
        st = image_from_base64(s, len, spec, out->images + (size_t)i * per, &at);
        if (st != CNN_OK) return st;
    }
    return CNN_OK;
}

static char *dup_string(const cnn_json *v)
{
    size_t len;
    const char *s = cnn_json_string(v, &len);
    if (!s) return NULL;
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, s, len);
        copy[len] = '\0';
    }
    return copy;
}

static cnn_status parse_infer(const cnn_json *doc, const cnn_serve_spec *spec, cnn_serve_request *out)
{
    const cnn_json *id = cnn_json_get(doc, "id");
    if (id) {
        if (cnn_json_type_of(id) != CNN_JSON_STRING) return cnn_error(CNN_ERR_FORMAT, "\"id\": expected a string");
        if (!(out->id = dup_string(id))) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for the request id");
    }
    const cnn_json *inputs = cnn_json_get(doc, "inputs");
    if (cnn_json_type_of(inputs) != CNN_JSON_ARRAY)
        return cnn_error(CNN_ERR_FORMAT, "\"inputs\": expected an array of tensors, got %s",
                         inputs ? cnn_json_type_name(cnn_json_type_of(inputs)) : "nothing");
    if (cnn_json_count(inputs) != 1)
        return cnn_error(CNN_ERR_FORMAT, "\"inputs\": the model has one input (\"%s\"), the request gives %zu",
                         CNN_SERVE_INPUT_NAME, cnn_json_count(inputs));
    const cnn_json *input = cnn_json_at(inputs, 0);
    if (cnn_json_type_of(input) != CNN_JSON_OBJECT)
        return cnn_error(CNN_ERR_FORMAT, "\"inputs\"[0]: expected an object {name, shape, datatype, data}");
    const cnn_json *name = cnn_json_get(input, "name");
    if (name) {
        if (cnn_json_type_of(name) != CNN_JSON_STRING) return cnn_error(CNN_ERR_FORMAT, "\"name\": expected a string");
        if (!(out->input_name = dup_string(name))) return cnn_error(CNN_ERR_NO_MEMORY, "no memory for the input name");
    }
    const cnn_json *shape = cnn_json_get(input, "shape");
    size_t nd = cnn_json_count(shape);
    if (cnn_json_type_of(shape) != CNN_JSON_ARRAY || nd < 1 || nd > 4)
        return cnn_error(CNN_ERR_FORMAT, "\"shape\": expected an array of 1 to 4 sizes");
    int64_t dims[4];
    for (size_t i = 0; i < nd; i++)
        if (!cnn_json_int64(cnn_json_at(shape, i), &dims[i]) || dims[i] < 0 || dims[i] > (int64_t)1 << 30)
            return cnn_error(CNN_ERR_FORMAT, "\"shape\"[%zu]: expected a size from 0 to 2^30", i);
    size_t len;
    const char *dtype = cnn_json_string(cnn_json_get(input, "datatype"), &len);
    if (!dtype) return cnn_error(CNN_ERR_FORMAT, "\"datatype\": expected FP32, UINT8 or BYTES");
    if (!strcmp(dtype, "FP32")) return infer_numbers(input, dims, (int)nd, 0, spec, out);
    if (!strcmp(dtype, "UINT8")) return infer_numbers(input, dims, (int)nd, 1, spec, out);
    if (!strcmp(dtype, "BYTES")) return infer_bytes(input, dims, (int)nd, spec, out);
    return cnn_error(CNN_ERR_UNSUPPORTED, "\"datatype\": %.32s is not supported: FP32, UINT8 or BYTES", dtype);
}

static cnn_status parse_tf(cnn_serve_api api, const cnn_json *doc, const cnn_serve_spec *spec, cnn_serve_request *out)
{
    const cnn_json *instances = cnn_json_get(doc, "instances"), *inputs = cnn_json_get(doc, "inputs");
    const cnn_json *examples = api == CNN_SERVE_CLASSIFY ? cnn_json_get(doc, "examples") : NULL;
    const cnn_json *sig = cnn_json_get(doc, "signature_name");
    if (sig && cnn_json_type_of(sig) != CNN_JSON_STRING)
        return cnn_error(CNN_ERR_FORMAT, "\"signature_name\": expected a string");
    if (sig && strcmp(cnn_json_string(sig, NULL), "serving_default") && cnn_json_string(sig, NULL)[0])
        return cnn_error(CNN_ERR_NOT_FOUND, "\"signature_name\": the model has one signature, \"serving_default\"");
    if (api == CNN_SERVE_CLASSIFY) {
        const cnn_json *top = cnn_json_get(doc, "top_k");
        int64_t k = 0;
        if (top && (!cnn_json_int64(top, &k) || k < 1 || k > 1 << 20))
            return cnn_error(CNN_ERR_FORMAT, "\"top_k\": expected an integer from 1 to 2^20");
        out->top_k = (int)k;
    }
    if (!!instances + !!inputs + !!examples != 1)
        return cnn_error(CNN_ERR_FORMAT, "the request must have exactly one of \"instances\" (row format) or "
                         "\"inputs\" (columnar)%s", api == CNN_SERVE_CLASSIFY ? " or \"examples\"" : "");
    if (inputs) {
        out->columnar = 1;
        return images_from_columns(inputs, spec, out);
    }
    const char *field = instances ? "instances" : "examples";
    const cnn_json *list = instances ? instances : examples;
    if (cnn_json_type_of(list) != CNN_JSON_ARRAY)
        return cnn_error(CNN_ERR_FORMAT, "\"%s\": expected an array, got %s", field,
                         cnn_json_type_name(cnn_json_type_of(list)));
    return images_from_list(list, field, spec, out);
}

cnn_status cnn_serve_parse_request(cnn_serve_api api, const char *body, size_t len, const cnn_serve_spec *spec,
                                   cnn_serve_request *out)
{
    memset(out, 0, sizeof *out);
    if (spec->h < 1 || spec->w < 1 || (spec->c != 1 && spec->c != 3) || spec->rh < spec->h || spec->rw < spec->w ||
        spec->max_images < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_serve_parse_request: a bad spec (%dx%dx%d from %dx%d, %d images)",
                         spec->h, spec->w, spec->c, spec->rh, spec->rw, spec->max_images);
    cnn_json *doc = NULL;
    cnn_status st = cnn_json_parse(body, len, &doc);
    if (st != CNN_OK) return st;
    if (cnn_json_type_of(doc) != CNN_JSON_OBJECT) {
        st = cnn_error(CNN_ERR_FORMAT, "the request body must be a JSON object, not %s",
                       cnn_json_type_name(cnn_json_type_of(doc)));
    } else {
        st = api == CNN_SERVE_INFER ? parse_infer(doc, spec, out) : parse_tf(api, doc, spec, out);
    }
    cnn_json_free(doc);
    if (st != CNN_OK) cnn_serve_request_free(out);
    return st;
}

void cnn_serve_request_free(cnn_serve_request *req)
{
    if (!req) return;
    CNN_FREE_ALL(req->images, req->id, req->input_name);
    memset(req, 0, sizeof *req);
}

// ---------------------------------------------------------------------------------------------------------------
// paths

int cnn_serve_route_is_post(cnn_serve_route_kind k)
{
    return k == CNN_ROUTE_V1_PREDICT || k == CNN_ROUTE_V1_CLASSIFY || k == CNN_ROUTE_V2_INFER;
}

/* "/versions/V" at *p, V a decimal number below 10^18: 1 and *p moved past it; 0 when *p is not "/versions/";
 * -1 (and *bad) when V is not such a number */
static int parse_version(const char **p, int64_t *version, const char **bad)
{
    if (strncmp(*p, "/versions/", 10)) return 0;
    const char *q = *p + 10;
    int64_t v = 0;
    int n = 0;
    while (*q >= '0' && *q <= '9' && n < 18) v = v * 10 + (*q++ - '0'), n++;
    if (n == 0 || (*q >= '0' && *q <= '9')) {
        *bad = "the version must be a decimal number below 10^18";
        return -1;
    }
    *version = v;
    *p = q;
    return 1;
}

void cnn_serve_parse_path(const char *url, cnn_serve_route *r)
{
    static const struct {
        const char *path;
        cnn_serve_route_kind kind;
    } fixed[] = {
        {"/v2", CNN_ROUTE_V2_SERVER},
        {"/v2/health/live", CNN_ROUTE_V2_LIVE},
        {"/v2/health/ready", CNN_ROUTE_V2_READY},
        {"/monitoring/prometheus/metrics", CNN_ROUTE_METRICS},
    };
    memset(r, 0, sizeof *r);
    r->version = -1;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!strcmp(url, fixed[i].path)) {
            r->kind = fixed[i].kind;
            return;
        }
    int v1 = !strncmp(url, "/v1/models/", 11), v2 = !strncmp(url, "/v2/models/", 11);
    if (!v1 && !v2) return;
    const char *p = url + 11;
    r->name = p;
    while (*p && *p != '/' && (v2 || *p != ':')) p++;
    r->name_len = (size_t)(p - r->name);
    if (r->name_len == 0) return;
    if (!strncmp(p, "/labels/", 8)) { /* a label instead of a version: resolved by the server */
        r->label = p + 8;
        p = r->label;
        while (*p && *p != '/' && (v2 || *p != ':')) p++;
        r->label_len = (size_t)(p - r->label);
        if (r->label_len == 0) {
            r->kind = v1 ? CNN_ROUTE_V1_STATUS : CNN_ROUTE_V2_MODEL;
            r->bad = "an empty version label";
            return;
        }
    } else if (parse_version(&p, &r->version, &r->bad) < 0) {
        r->kind = v1 ? CNN_ROUTE_V1_STATUS : CNN_ROUTE_V2_MODEL;
        return;
    }
    if (v1) {
        if (!*p) r->kind = CNN_ROUTE_V1_STATUS;
        else if (!strcmp(p, "/metadata")) r->kind = CNN_ROUTE_V1_METADATA;
        else if (!strcmp(p, ":predict")) r->kind = CNN_ROUTE_V1_PREDICT;
        else if (!strcmp(p, ":classify")) r->kind = CNN_ROUTE_V1_CLASSIFY;
    } else {
        if (!*p) r->kind = CNN_ROUTE_V2_MODEL;
        else if (!strcmp(p, "/ready")) r->kind = CNN_ROUTE_V2_MODEL_READY;
        else if (!strcmp(p, "/infer")) r->kind = CNN_ROUTE_V2_INFER;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// answers

static void write_label(cnn_json_writer *w, const char *const *names, int j)
{
    if (names && names[j]) {
        cnn_json_write_string(w, names[j]);
    } else {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", j);
        cnn_json_write_string(w, buf);
    }
}

/* The classes of one image by descending probability (ties: the lower index first), the first `top` of them:
 * each step takes the best class that comes after the previous one in that order, so no memory is needed. */
static void write_top(cnn_json_writer *w, const float *p, int k, int top, const char *const *names)
{
    cnn_json_write_begin_array(w);
    if (top <= 0 || top > k) top = k;
    int prev = -1;
    for (int r = 0; r < top; r++) {
        int best = -1;
        for (int j = 0; j < k; j++) {
            int after = prev < 0 || p[j] < p[prev] || (p[j] == p[prev] && j > prev);
            if (after && (best < 0 || p[j] > p[best])) best = j;
        }
        if (best < 0) break; /* only NaNs left (a softmax never gives them) */
        cnn_json_write_begin_array(w);
        write_label(w, names, best);
        cnn_json_write_float(w, p[best]);
        cnn_json_write_end_array(w);
        prev = best;
    }
    cnn_json_write_end_array(w);
}

void cnn_serve_write_result(cnn_json_writer *w, cnn_serve_api api, const cnn_serve_request *req, const float *probs,
                            int k, const char *const *class_names, const char *model_name, int64_t version)
{
    cnn_json_write_begin_object(w);
    if (api == CNN_SERVE_INFER) {
        char v[24];
        snprintf(v, sizeof v, "%lld", (long long)version);
        cnn_json_write_key(w, "model_name");
        cnn_json_write_string(w, model_name);
        cnn_json_write_key(w, "model_version");
        cnn_json_write_string(w, v);
        if (req->id) {
            cnn_json_write_key(w, "id");
            cnn_json_write_string(w, req->id);
        }
        cnn_json_write_key(w, "outputs");
        cnn_json_write_begin_array(w);
        cnn_json_write_begin_object(w);
        cnn_json_write_key(w, "name");
        cnn_json_write_string(w, CNN_SERVE_OUTPUT_NAME);
        cnn_json_write_key(w, "datatype");
        cnn_json_write_string(w, "FP32");
        cnn_json_write_key(w, "shape");
        cnn_json_write_begin_array(w);
        cnn_json_write_int(w, req->n);
        cnn_json_write_int(w, k);
        cnn_json_write_end_array(w);
        cnn_json_write_key(w, "data");
        cnn_json_write_begin_array(w);
        for (int64_t i = 0; i < req->n * k; i++) cnn_json_write_float(w, probs[i]);
        cnn_json_write_end_array(w);
        cnn_json_write_end_object(w);
        cnn_json_write_end_array(w);
    } else if (api == CNN_SERVE_CLASSIFY) {
        cnn_json_write_key(w, "result");
        cnn_json_write_begin_array(w);
        for (int64_t i = 0; i < req->n; i++) write_top(w, probs + i * k, k, req->top_k, class_names);
        cnn_json_write_end_array(w);
    } else {
        cnn_json_write_key(w, req->columnar ? "outputs" : "predictions");
        cnn_json_write_begin_array(w);
        for (int64_t i = 0; i < req->n; i++) {
            cnn_json_write_begin_array(w);
            for (int j = 0; j < k; j++) cnn_json_write_float(w, probs[i * k + j]);
            cnn_json_write_end_array(w);
        }
        cnn_json_write_end_array(w);
    }
    cnn_json_write_end_object(w);
}
