/* safetensors reader and writer (see safetensors.h for the layout). The reader holds the whole file in memory
 * and hands out pointers into it; every field of the header is checked before any of it is trusted. */
#include "core/io/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/io/json.h"
#include "core/io/zfile.h"

/* Tensor bytes are read and written as they lie in memory; the format is little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define META_KEY "__metadata__"

static const struct {
    const char *name;
    cnn_dtype dtype;
} st_dtypes[] = {
    {"F32", CNN_F32}, {"F16", CNN_F16}, {"BF16", CNN_BF16}, {"I32", CNN_I32}, {"U8", CNN_U8}, {"I8", CNN_I8},
};
_Static_assert(sizeof(st_dtypes) / sizeof(st_dtypes[0]) == CNN_DTYPE_COUNT, "st_dtypes must name every cnn_dtype");

/* dtypes of the format that cnn.c has no type for (safetensors' Dtype enum). */
static const char *const st_foreign_dtypes[] = {
    "BOOL", "I16", "U16", "U32", "I64", "U64", "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
};

const char *cnn_st_dtype_name(cnn_dtype dtype)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].dtype == dtype) return st_dtypes[i].name;
    return NULL;
}

int cnn_st_dtype_from_name(const char *name, cnn_dtype *out)
{
    for (size_t i = 0; name && i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(st_dtypes[i].name, name)) {
            *out = st_dtypes[i].dtype;
            return 1;
        }
    return 0;
}

static char *dup_string(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

// ---------------------------------------------------------------------------------------------------------------
// reading

void cnn_st_free(cnn_st_file *f)
{
    if (!f) return;
    if (f->tensors)
        for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->meta_count; i++) {
        if (f->meta_keys) free(f->meta_keys[i]);
        if (f->meta_values) free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->raw);
    free(f);
}

/* "a number", "an array", ...: what a JSON value is, for messages. */
static const char *a_type(const cnn_json *v)
{
    switch (cnn_json_type_of(v)) {
    case CNN_JSON_BOOL: return "a boolean";
    case CNN_JSON_NUMBER: return "a number";
    case CNN_JSON_STRING: return "a string";
    case CNN_JSON_ARRAY: return "an array";
    case CNN_JSON_OBJECT: return "an object";
    default: return "null";
    }
}

/* A string member's text, refusing embedded '\0' (it would make two distinct names look alike in C). */
static cnn_status get_text(const char *path, const cnn_json *v, const char *what, const char *name, const char **out)
{
    size_t len = 0;
    const char *s = cnn_json_string(v, &len);
    if (!s)
        return cnn_error(CNN_ERR_FORMAT, "%s: %s \"%s\" is %s, not a string", path, what, name, a_type(v));
    if (strlen(s) != len)
        return cnn_error(CNN_ERR_FORMAT, "%s: %s \"%s\" contains a NUL character", path, what, name);
    *out = s;
    return CNN_OK;
}

/* Validates one tensor entry of the header against a buffer of `data_size` bytes and fills *t (but its name). */
static cnn_status read_entry(const char *path, const char *name, const cnn_json *v, size_t data_size,
                             int keep_foreign, cnn_st_tensor *t)
{
    if (cnn_json_type_of(v) != CNN_JSON_OBJECT)
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": the entry is %s, not an object", path, name,
                         a_type(v));
    const cnn_json *dt = cnn_json_get(v, "dtype"), *shape = cnn_json_get(v, "shape"),
                   *offs = cnn_json_get(v, "data_offsets");
    if (!dt || !shape || !offs)
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": the entry has no \"%s\"", path, name,
                         !dt ? "dtype" : !shape ? "shape" : "data_offsets");

    // --- dtype
    const char *dname = cnn_json_string(dt, NULL);
    if (!dname)
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": dtype is %s, not a string", path, name, a_type(dt));
    int foreign = 0;
    if (!cnn_st_dtype_from_name(dname, &t->dtype)) {
        for (size_t i = 0; i < sizeof st_foreign_dtypes / sizeof st_foreign_dtypes[0]; i++)
            if (!strcmp(dname, st_foreign_dtypes[i]) && keep_foreign) foreign = 1;
            else if (!strcmp(dname, st_foreign_dtypes[i]))
                return cnn_error(CNN_ERR_UNSUPPORTED, "%s: tensor \"%s\": dtype %s is not supported by cnn.c "
                                 "(F32, F16, BF16, I32, U8, I8)", path, name, dname);
        if (!foreign)
            return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%.32s\"", path, name, dname);
        t->dtype = CNN_DTYPE_COUNT; /* kept as bytes: only its offsets are checked (sub-byte types pack) */
    }
    size_t esize = foreign ? 1 : cnn_dtype_size(t->dtype);

    // --- shape
    if (cnn_json_type_of(shape) != CNN_JSON_ARRAY)
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": shape is %s, not an array", path, name,
                         a_type(shape));
    size_t rank = cnn_json_count(shape);
    if (rank > CNN_MAX_DIMS)
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": rank %zu is above the maximum of %d", path, name, rank,
                         CNN_MAX_DIMS);
    t->ndim = (int)rank;
    /* numel, overflow-checked against SIZE_MAX bytes; any zero dimension makes it 0 */
    size_t numel = 1;
    int overflow = 0, zero = 0;
    for (size_t i = 0; i < rank; i++) {
        int64_t d;
        if (!cnn_json_int64(cnn_json_at(shape, i), &d))
            return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": shape[%zu] is not an integer", path, name, i);
        if (d < 0)
            return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": shape[%zu] is negative (%lld)", path, name, i,
                             (long long)d);
        t->shape[i] = d;
        if (d == 0) zero = 1;
        else if (numel > SIZE_MAX / esize / (uint64_t)d) overflow = 1;
        else numel *= (size_t)d;
    }
    if (zero) {
        numel = 0;
        overflow = 0;
    }
    if (overflow)
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": the shape's byte count overflows", path, name);
    t->nbytes = numel * esize;

    // --- data_offsets
    int64_t be[2];
    if (cnn_json_type_of(offs) != CNN_JSON_ARRAY || cnn_json_count(offs) != 2)
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": data_offsets is not an array of two integers", path,
                         name);
    for (size_t i = 0; i < 2; i++)
        if (!cnn_json_int64(cnn_json_at(offs, i), &be[i]) || be[i] < 0)
            return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": data_offsets[%zu] is not a non-negative integer",
                             path, name, i);
    if (be[0] > be[1])
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": data_offsets begin %lld is after end %lld", path, name,
                         (long long)be[0], (long long)be[1]);
    if ((uint64_t)be[1] > data_size)
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": data_offsets end %lld is beyond the %zu-byte data "
                         "buffer", path, name, (long long)be[1], data_size);
    if (foreign) t->nbytes = (size_t)(be[1] - be[0]);
    if ((uint64_t)(be[1] - be[0]) != t->nbytes)
        return cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\": data_offsets span %lld bytes, but %zu elements of %s "
                         "take %zu", path, name, (long long)(be[1] - be[0]), numel, dname, t->nbytes);
    t->offset = (size_t)be[0];
    return CNN_OK;
}

static int cmp_by_offset(const void *a, const void *b)
{
    const cnn_st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

cnn_status cnn_st_read(const char *path, cnn_st_file **out)
{
    return cnn_st_read_ex(path, 0, out);
}

cnn_status cnn_st_read_ex(const char *path, int flags, cnn_st_file **out)
{
    cnn_status st = CNN_OK;
    cnn_st_file *f = NULL;
    cnn_json *root = NULL;
    unsigned char *raw = NULL;
    size_t len = 0;

    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_st_read: no output");
    *out = NULL;
    if (!path) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_st_read: no path");
    CNN_TRY(cnn_read_file(path, CNN_ST_MAX_FILE, &raw, &len));
    if (cnn_zfile_is(raw, len)) { /* a compressed model file (core/io/zfile.h): its safetensors bytes */
        unsigned char *inflated = NULL;
        size_t n = 0;
        st = cnn_zfile_inflate(raw, len, path, &inflated, &n);
        free(raw);
        raw = inflated;
        len = n;
        if (st != CNN_OK) goto fail;
    }
    if (len < 8) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: the file is %zu bytes, too short for the 8-byte header length", path,
                       len);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | raw[i];
    int text = 1; /* 8 printable bytes: a text file, whose "header length" would only confuse */
    for (int i = 0; i < 8; i++) text &= (raw[i] >= 0x20 && raw[i] < 0x7f) || raw[i] == '\n' || raw[i] == '\t' || raw[i] == '\r';
    if (text && hlen > len - 8) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: a text file, not a safetensors file (it starts with \"%.8s\")", path,
                       (const char *)raw);
        goto fail;
    }
    if (hlen > CNN_ST_MAX_HEADER) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: header length %llu is above the limit of %llu bytes", path,
                       (unsigned long long)hlen, (unsigned long long)CNN_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > len - 8) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: header length %llu is more than the %zu bytes that follow it "
                       "(truncated file?)", path, (unsigned long long)hlen, len - 8);
        goto fail;
    }
    const char *header = (const char *)raw + 8;
    /* the reference implementation also insists on this (InvalidHeaderStart) */
    if (hlen == 0 || header[0] != '{') {
        st = cnn_error(CNN_ERR_FORMAT, "%s: the header does not start with '{'", path);
        goto fail;
    }
    if (cnn_json_parse(header, (size_t)hlen, &root) != CNN_OK) {
        st = cnn_error_prefix(CNN_ERR_FORMAT, "%s: header: ", path);
        goto fail;
    }
    if (cnn_json_type_of(root) != CNN_JSON_OBJECT) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: the header is not a JSON object", path);
        goto fail;
    }

    f = calloc(1, sizeof *f);
    if (!f) goto oom;
    f->raw = raw;
    raw = NULL;
    f->data = f->raw + 8 + hlen;
    f->data_size = len - 8 - (size_t)hlen;

    size_t members = cnn_json_count(root);
    const cnn_json *meta = cnn_json_get(root, META_KEY);
    size_t ntensors = members - (meta ? 1 : 0);
    if (ntensors > (size_t)INT32_MAX || cnn_json_count(meta) > (size_t)INT32_MAX) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: too many header entries", path);
        goto fail;
    }

    // --- metadata: strings only
    if (meta) {
        if (cnn_json_type_of(meta) != CNN_JSON_OBJECT) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: " META_KEY " is %s, not an object", path, a_type(meta));
            goto fail;
        }
        size_t nm = cnn_json_count(meta);
        f->meta_keys = calloc(nm ? nm : 1, sizeof *f->meta_keys);
        f->meta_values = calloc(nm ? nm : 1, sizeof *f->meta_values);
        if (!f->meta_keys || !f->meta_values) goto oom;
        for (size_t i = 0; i < nm; i++) {
            size_t klen = 0;
            const char *key = cnn_json_key_at(meta, i, &klen), *value = NULL;
            if (strlen(key) != klen) {
                st = cnn_error(CNN_ERR_FORMAT, "%s: a " META_KEY " key contains a NUL character", path);
                goto fail;
            }
            CNN_TRY(get_text(path, cnn_json_at(meta, i), META_KEY " value of", key, &value));
            f->meta_keys[i] = dup_string(key);
            f->meta_values[i] = dup_string(value);
            f->meta_count = (int)i + 1;
            if (!f->meta_keys[i] || !f->meta_values[i]) goto oom;
        }
    }

    // --- tensors
    f->tensors = calloc(ntensors ? ntensors : 1, sizeof *f->tensors);
    if (!f->tensors) goto oom;
    for (size_t i = 0; i < members; i++) {
        size_t nlen = 0;
        const char *name = cnn_json_key_at(root, i, &nlen);
        if (!strcmp(name, META_KEY)) continue;
        if (strlen(name) != nlen) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: the tensor name \"%s\" contains a NUL character", path, name);
            goto fail;
        }
        cnn_st_tensor *t = &f->tensors[f->count];
        CNN_TRY(read_entry(path, name, cnn_json_at(root, i), f->data_size, (flags & CNN_ST_KEEP_FOREIGN) != 0, t));
        t->name = dup_string(name);
        if (!t->name) goto oom;
        f->count++;
    }

    // --- the tensors must tile the buffer: sorted by offset, each begins where the previous ended
    qsort(f->tensors, (size_t)f->count, sizeof *f->tensors, cmp_by_offset);
    size_t pos = 0;
    for (int i = 0; i < f->count; i++) {
        const cnn_st_tensor *t = &f->tensors[i];
        if (t->offset > pos) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: bytes %zu to %zu of the data buffer belong to no tensor (a gap "
                           "before \"%s\")", path, pos, t->offset, t->name);
            goto fail;
        }
        if (t->offset < pos) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: tensor \"%s\" (bytes %zu to %zu) overlaps \"%s\", which ends at "
                           "byte %zu", path, t->name, t->offset, t->offset + t->nbytes, f->tensors[i - 1].name, pos);
            goto fail;
        }
        pos = t->offset + t->nbytes;
    }
    if (pos != f->data_size) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: the data buffer has %zu bytes but the tensors end at byte %zu (%zu "
                       "bytes belong to no tensor)", path, f->data_size, pos, f->data_size - pos);
        goto fail;
    }
    cnn_json_free(root);
    *out = f;
    return CNN_OK;

oom:
    st = cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory reading the header", path);
fail:
    cnn_json_free(root);
    cnn_st_free(f);
    free(raw);
    return st;
}

const cnn_st_tensor *cnn_st_find(const cnn_st_file *f, const char *name)
{
    if (!f || !name) return NULL;
    for (int i = 0; i < f->count; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const void *cnn_st_data(const cnn_st_file *f, const cnn_st_tensor *t)
{
    if (!f || !t) return NULL;
    return f->data + t->offset;
}

const char *cnn_st_meta(const cnn_st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int i = 0; i < f->meta_count; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// writing

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first string that occurs twice in names[0..n), or NULL; `scratch` holds n pointers. */
static const char *find_duplicate(const char *const *names, int n, const char **scratch)
{
    memcpy(scratch, names, (size_t)n * sizeof *scratch);
    qsort(scratch, (size_t)n, sizeof *scratch, cmp_str_ptr);
    for (int i = 1; i < n; i++)
        if (!strcmp(scratch[i - 1], scratch[i])) return scratch[i];
    return NULL;
}

/* cnn_st_write, to a file (path) or, when out is not NULL, into one malloc'ed buffer (path names it in messages). */
/* Checks every entry (a name, a dtype and rank, a size that does not overflow, data when there are bytes, no name
 * twice) and lays out the buffer: nbytes[i] and offsets[i]. names and scratch hold n pointers. */
static cnn_status st_layout(const char *path, const cnn_st_entry *entries, int n, size_t *nbytes, size_t *offsets,
                            const char **names, const char **scratch)
{
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        const cnn_st_entry *e = &entries[i];
        if (!e->name || !e->name[0] || !strcmp(e->name, META_KEY))
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: tensor %d has no name, an empty one or \"" META_KEY "\"", path,
                             i);
        size_t esize = cnn_dtype_size(e->dtype);
        if (!esize || e->ndim < 0 || e->ndim > CNN_MAX_DIMS || (e->ndim > 0 && !e->shape))
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: tensor \"%s\": bad dtype (%d) or rank (%d)", path, e->name,
                             (int)e->dtype, e->ndim);
        size_t numel = 1;
        int overflow = 0, zero = 0;
        for (int k = 0; k < e->ndim; k++) {
            if (e->shape[k] < 0)
                return cnn_error(CNN_ERR_INVALID_ARG, "%s: tensor \"%s\": negative dimension %lld", path, e->name,
                                 (long long)e->shape[k]);
            if (e->shape[k] == 0) zero = 1;
            else if (numel > SIZE_MAX / esize / (uint64_t)e->shape[k]) overflow = 1;
            else numel *= (size_t)e->shape[k];
        }
        if (zero) numel = 0;
        if (overflow || pos > SIZE_MAX - numel * esize)
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: tensor \"%s\": the size overflows", path, e->name);
        nbytes[i] = numel * esize;
        if (nbytes[i] > 0 && !e->data)
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: tensor \"%s\": no data", path, e->name);
        offsets[i] = pos;
        pos += nbytes[i];
        names[i] = e->name;
    }
    const char *dup = find_duplicate(names, n, scratch);
    if (dup) return cnn_error(CNN_ERR_INVALID_ARG, "%s: two tensors are called \"%s\"", path, dup);
    return CNN_OK;
}

/* Every metadata pair has a key and a value, and no key comes twice. names and scratch hold nmeta pointers. */
static cnn_status st_check_meta(const char *path, const char *const *meta_keys, const char *const *meta_values,
                                int nmeta, const char **names, const char **scratch)
{
    for (int i = 0; i < nmeta; i++) {
        if (!meta_keys[i] || !meta_values[i])
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: metadata entry %d has no key or no value", path, i);
        names[i] = meta_keys[i];
    }
    const char *dup = find_duplicate(names, nmeta, scratch);
    if (dup) return cnn_error(CNN_ERR_INVALID_ARG, "%s: two metadata entries are called \"%s\"", path, dup);
    return CNN_OK;
}

/* The 8-byte length and the JSON header, padded with spaces so that the buffer starts at a multiple of 8 bytes as
 * the reference writer does, into *out (malloc'ed, *len bytes). */
static cnn_status st_header(const char *path, const cnn_st_entry *entries, int n, const size_t *nbytes,
                            const size_t *offsets, const char *const *meta_keys, const char *const *meta_values,
                            int nmeta, unsigned char **out, size_t *len)
{
    char *json = NULL;
    size_t json_len = 0;
    cnn_json_writer w;
    cnn_json_writer_init(&w, 0);
    cnn_json_write_begin_object(&w);
    if (nmeta > 0) {
        cnn_json_write_key(&w, META_KEY);
        cnn_json_write_begin_object(&w);
        for (int i = 0; i < nmeta; i++) {
            cnn_json_write_key(&w, meta_keys[i]);
            cnn_json_write_string(&w, meta_values[i]);
        }
        cnn_json_write_end_object(&w);
    }
    for (int i = 0; i < n; i++) {
        const cnn_st_entry *e = &entries[i];
        cnn_json_write_key(&w, e->name);
        cnn_json_write_begin_object(&w);
        cnn_json_write_key(&w, "dtype");
        cnn_json_write_string(&w, cnn_st_dtype_name(e->dtype));
        cnn_json_write_key(&w, "shape");
        cnn_json_write_begin_array(&w);
        for (int k = 0; k < e->ndim; k++) cnn_json_write_int(&w, e->shape[k]);
        cnn_json_write_end_array(&w);
        cnn_json_write_key(&w, "data_offsets");
        cnn_json_write_begin_array(&w);
        cnn_json_write_uint(&w, offsets[i]);
        cnn_json_write_uint(&w, offsets[i] + nbytes[i]);
        cnn_json_write_end_array(&w);
        cnn_json_write_end_object(&w);
    }
    cnn_json_write_end_object(&w);
    cnn_status st = cnn_json_writer_finish(&w, &json, &json_len);
    cnn_json_writer_free(&w);
    if (st != CNN_OK) return cnn_error_prefix(st, "%s: ", path);
    size_t padded = (json_len + 7) & ~(size_t)7;
    if (padded > CNN_ST_MAX_HEADER) {
        free(json);
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: the header would be %zu bytes, above the limit of %llu", path,
                         padded, (unsigned long long)CNN_ST_MAX_HEADER);
    }
    unsigned char *header = malloc(8 + padded);
    if (!header) {
        free(json);
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory writing the file", path);
    }
    for (int i = 0; i < 8; i++) header[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(header + 8, json, json_len);
    memset(header + 8 + json_len, ' ', padded - json_len);
    free(json);
    *out = header;
    *len = 8 + padded;
    return CNN_OK;
}

/* The file's bytes, to `path` atomically or (out != NULL) into one malloc'ed buffer. */
static cnn_status st_write(const char *path, const cnn_st_entry *entries, int n, const char *const *meta_keys,
                           const char *const *meta_values, int nmeta, unsigned char **out, size_t *out_len)
{
    if (!path || n < 0 || nmeta < 0 || n >= INT32_MAX - 1 || (n > 0 && !entries) ||
        (nmeta > 0 && (!meta_keys || !meta_values)))
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_st_write(%s): bad arguments", path ? path : "");
    cnn_status st = CNN_OK;
    unsigned char *header = NULL;
    size_t header_len = 0;
    int nn = n > nmeta ? n : nmeta;
    size_t *nbytes = calloc((size_t)n + 1, sizeof *nbytes), *offsets = calloc((size_t)n + 1, sizeof *offsets);
    const char **names = calloc((size_t)nn + 1, sizeof *names), **scratch = calloc((size_t)nn + 1, sizeof *scratch);
    const void **parts = calloc((size_t)n + 1, sizeof *parts);
    size_t *sizes = calloc((size_t)n + 1, sizeof *sizes);
    if (!nbytes || !offsets || !names || !scratch || !parts || !sizes) goto oom;
    CNN_TRY(st_layout(path, entries, n, nbytes, offsets, names, scratch));
    CNN_TRY(st_check_meta(path, meta_keys, meta_values, nmeta, names, scratch));
    CNN_TRY(st_header(path, entries, n, nbytes, offsets, meta_keys, meta_values, nmeta, &header, &header_len));

    // --- header, then every tensor's bytes
    int np = 0;
    parts[np] = header;
    sizes[np++] = header_len;
    for (int i = 0; i < n; i++) {
        if (!nbytes[i]) continue;
        parts[np] = entries[i].data;
        sizes[np++] = nbytes[i];
    }
    if (out) {
        size_t total = 0;
        for (int i = 0; i < np; i++) total += sizes[i];
        unsigned char *buf = malloc(total ? total : 1);
        if (!buf) goto oom;
        for (size_t i = 0, at = 0; i < (size_t)np; at += sizes[i], i++) memcpy(buf + at, parts[i], sizes[i]);
        *out = buf;
        *out_len = total;
    } else {
        st = cnn_write_file_atomic(path, parts, sizes, np);
    }

fail:
    free(header);
    free(nbytes);
    free(offsets);
    free(names);
    free(scratch);
    free(parts);
    free(sizes);
    return st;

oom:
    st = cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory writing the file", path);
    goto fail;
}

cnn_status cnn_st_write(const char *path, const cnn_st_entry *entries, int n, const char *const *meta_keys,
                        const char *const *meta_values, int nmeta)
{
    return st_write(path, entries, n, meta_keys, meta_values, nmeta, NULL, NULL);
}

cnn_status cnn_st_serialize(const cnn_st_entry *entries, int n, const char *const *meta_keys,
                            const char *const *meta_values, int nmeta, unsigned char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    return st_write("<memory>", entries, n, meta_keys, meta_values, nmeta, out, len);
}
