/* Fuzz harness: the JSON parser (core/io/json.c; safetensors headers, checkpoint histories, metrics).
 *
 * A document that parses is checked and written back: every member is found by its key, the writer accepts the
 * tree, and the text it writes parses to the same tree (types, strings byte for byte, keys in order, numbers to
 * the bit, exact integers exactly). */
#include <stdlib.h>
#include <string.h>

#include "core/io/json.h"
#include "fuzz.h"

/* 1 when no key of the tree holds a '\0' (written through "\u0000"): the writer takes keys as C strings. */
static int keys_are_c_strings(const cnn_json *v)
{
    size_t n = cnn_json_count(v);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *key = cnn_json_key_at(v, i, &len);
        if (key && strlen(key) != len) return 0;
        if (!keys_are_c_strings(cnn_json_at(v, i))) return 0;
    }
    return 1;
}

/* Checks the accessors against each other: cnn_json_get finds each member by its key. */
static void check_lookup(const cnn_json *v)
{
    size_t n = cnn_json_count(v);
    int object = cnn_json_type_of(v) == CNN_JSON_OBJECT;
    for (size_t i = 0; i < n; i++) {
        if (object) {
            size_t len = 0;
            const char *key = cnn_json_key_at(v, i, &len);
            fuzz_check(key != NULL, "an object member has no key");
            if (strlen(key) == len) /* cnn_json_get takes a C string: a key holding '\0' cannot be asked for */
                fuzz_check(cnn_json_get(v, key) == cnn_json_at(v, i), "cnn_json_get does not find a member by its key");
        }
        check_lookup(cnn_json_at(v, i));
    }
    fuzz_check(cnn_json_at(v, n) == NULL, "cnn_json_at answers past the end");
}

static void write_value(cnn_json_writer *w, const cnn_json *v)
{
    size_t n = cnn_json_count(v), len;
    double d;
    int64_t i64;
    int b;
    switch (cnn_json_type_of(v)) {
    case CNN_JSON_NULL:
        cnn_json_write_null(w);
        break;
    case CNN_JSON_BOOL:
        fuzz_check(cnn_json_bool(v, &b), "a boolean without a value");
        cnn_json_write_bool(w, b);
        break;
    case CNN_JSON_NUMBER:
        if (cnn_json_int64(v, &i64)) {
            cnn_json_write_int(w, i64);
        } else {
            fuzz_check(cnn_json_double(v, &d), "a number without a value");
            cnn_json_write_number(w, d);
        }
        break;
    case CNN_JSON_STRING: {
        const char *s = cnn_json_string(v, &len);
        fuzz_check(s != NULL, "a string without bytes");
        cnn_json_write_string_n(w, s, len);
        break;
    }
    case CNN_JSON_ARRAY:
        cnn_json_write_begin_array(w);
        for (size_t i = 0; i < n; i++) write_value(w, cnn_json_at(v, i));
        cnn_json_write_end_array(w);
        break;
    case CNN_JSON_OBJECT:
        cnn_json_write_begin_object(w);
        for (size_t i = 0; i < n; i++) {
            cnn_json_write_key(w, cnn_json_key_at(v, i, NULL));
            write_value(w, cnn_json_at(v, i));
        }
        cnn_json_write_end_object(w);
        break;
    }
}

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void check_same(const cnn_json *a, const cnn_json *b)
{
    cnn_json_type t = cnn_json_type_of(a);
    fuzz_check(t == cnn_json_type_of(b), "written back, a value changed its type");
    size_t n = cnn_json_count(a);
    fuzz_check(n == cnn_json_count(b), "written back, a container changed its size");
    if (t == CNN_JSON_BOOL) {
        int x = 0, y = 0;
        fuzz_check(cnn_json_bool(a, &x) && cnn_json_bool(b, &y) && x == y, "written back, a boolean changed");
    } else if (t == CNN_JSON_NUMBER) {
        int64_t x, y;
        double dx = 0, dy = 0;
        if (cnn_json_int64(a, &x)) {
            fuzz_check(cnn_json_int64(b, &y) && x == y, "written back, an exact integer changed");
        } else {
            fuzz_check(cnn_json_double(a, &dx) && cnn_json_double(b, &dy) && same_bits(dx, dy),
                       "written back, a number changed");
        }
    } else if (t == CNN_JSON_STRING) {
        size_t la, lb;
        const char *sa = cnn_json_string(a, &la), *sb = cnn_json_string(b, &lb);
        fuzz_check(la == lb && !memcmp(sa, sb, la), "written back, a string changed");
    }
    for (size_t i = 0; i < n; i++) {
        if (t == CNN_JSON_OBJECT) {
            size_t la, lb;
            const char *ka = cnn_json_key_at(a, i, &la), *kb = cnn_json_key_at(b, i, &lb);
            fuzz_check(la == lb && !memcmp(ka, kb, la), "written back, a key changed");
        }
        check_same(cnn_json_at(a, i), cnn_json_at(b, i));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    cnn_json *root = NULL, *again = NULL;
    if (cnn_json_parse((const char *)data, size, &root) != CNN_OK) {
        fuzz_check(root == NULL, "a failed parse left a tree");
        return 0;
    }
    check_lookup(root);
    (void)cnn_json_type_name(cnn_json_type_of(root));
    if (keys_are_c_strings(root)) {
        cnn_json_writer w;
        cnn_json_writer_init(&w, (int)(size % 3)); /* compact, or indented by 1 or 2 */
        write_value(&w, root);
        char *text = NULL;
        size_t len = 0;
        fuzz_check(cnn_json_writer_finish(&w, &text, &len) == CNN_OK, "the writer refused a parsed tree");
        cnn_json_writer_free(&w);
        fuzz_check(cnn_json_parse(text, len, &again) == CNN_OK, "the written text does not parse");
        check_same(root, again);
        cnn_json_free(again);
        free(text);
    }
    cnn_json_free(root);
    return 0;
}
