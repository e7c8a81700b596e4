/* JSON (RFC 8259): a strict DOM parser, and a writer into a growable string buffer.
 *
 * Parser: the whole text must be one value with optional whitespace around it; no comments, trailing commas,
 * single quotes, NaN/Infinity, leading zeros or invalid UTF-8. Strings are decoded to UTF-8 (\uXXXX escapes and
 * surrogate pairs included; a lone surrogate is an error). Objects with a repeated key are refused: RFC 8259
 * leaves their meaning to the implementation, and a file that says two things about one name is malformed for
 * every use cnn.c has (safetensors headers, metrics, configuration). Nesting is limited to CNN_JSON_MAX_DEPTH.
 * Errors give CNN_ERR_FORMAT with a message that names the byte offset.
 *
 * Writer: cnn_json_writer tracks nesting, so commas and colons come out right; strings are escaped; NaN and
 * infinities are written as null. Like SQLite's sqlite3_str, calls do not return a status: the first failure
 * (out of memory, misuse, invalid UTF-8) sticks, and cnn_json_writer_finish reports it. */
#ifndef CNN_CORE_JSON_H
#define CNN_CORE_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Deepest nesting of arrays and objects accepted by the parser and the writer. */
#define CNN_JSON_MAX_DEPTH 64

// ---------------------------------------------------------------------------------------------------------------
// the DOM

typedef enum cnn_json_type {
    CNN_JSON_NULL = 0,
    CNN_JSON_BOOL,
    CNN_JSON_NUMBER,
    CNN_JSON_STRING,
    CNN_JSON_ARRAY,
    CNN_JSON_OBJECT
} cnn_json_type;

typedef struct cnn_json cnn_json;

/* Parses `len` bytes of `text` (no terminating '\0' needed). On success *out owns the whole tree; free it with
 * cnn_json_free. On failure *out is NULL and the message reads "invalid JSON at byte N: ...". */
cnn_status cnn_json_parse(const char *text, size_t len, cnn_json **out);

/* Frees a tree returned by cnn_json_parse; NULL is a no-op. */
void cnn_json_free(cnn_json *value);

/* The accessors take any value, or NULL (which answers like a missing value), and never fail loudly. Pointers
 * they return are borrowed from the tree. */

/* The type; CNN_JSON_NULL for NULL. */
cnn_json_type cnn_json_type_of(const cnn_json *value);
/* "null", "boolean", "number", "string", "array", "object": for messages. */
const char *cnn_json_type_name(cnn_json_type type);

/* Number of elements of an array or members of an object; 0 for anything else. */
size_t cnn_json_count(const cnn_json *value);
/* Element i of an array, or the value of member i of an object (in document order); NULL when out of range. */
const cnn_json *cnn_json_at(const cnn_json *value, size_t i);
/* The key of member i of an object (UTF-8, '\0'-terminated; *len, when `len` is not NULL, counts its bytes,
 * which differs from strlen when a "\u0000" escape put a '\0' inside); NULL when out of range or not an object. */
const char *cnn_json_key_at(const cnn_json *value, size_t i, size_t *len);
/* The value of the member named `key`, or NULL. */
const cnn_json *cnn_json_get(const cnn_json *object, const char *key);

/* The string's UTF-8 bytes, '\0'-terminated (a "\u0000" escape puts a '\0' inside: use `len`); NULL when the
 * value is not a string. `len` may be NULL. */
const char *cnn_json_string(const cnn_json *value, size_t *len);
/* 1 and the number in *out when the value is a number (the nearest double); else 0. */
int cnn_json_double(const cnn_json *value, double *out);
/* 1 and the exact value in *out when the value is a number literal that denotes an integer in int64 range
 * ("12", "-3", "1e3", "2.50e1" all do; "1.5" and "1e19" do not); else 0. Exact even beyond 2^53. */
int cnn_json_int64(const cnn_json *value, int64_t *out);
/* 1 and the boolean (0 or 1) in *out when the value is true or false; else 0. */
int cnn_json_bool(const cnn_json *value, int *out);

// ---------------------------------------------------------------------------------------------------------------
// a growable string buffer

typedef struct cnn_strbuf {
    char *data;        /* '\0'-terminated once anything was appended; NULL before */
    size_t len, cap;   /* bytes used (without the '\0'), bytes allocated */
    cnn_status status; /* CNN_OK, or the first failure (sticky) */
} cnn_strbuf;

void cnn_strbuf_init(cnn_strbuf *sb);
void cnn_strbuf_free(cnn_strbuf *sb);
void cnn_strbuf_append(cnn_strbuf *sb, const char *bytes, size_t n);
void cnn_strbuf_appends(cnn_strbuf *sb, const char *s);
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void cnn_strbuf_appendf(cnn_strbuf *sb, const char *fmt, ...);

// ---------------------------------------------------------------------------------------------------------------
// the writer

typedef struct cnn_json_writer {
    cnn_strbuf out;
    int indent;                                  /* spaces per level; 0: compact, one line */
    int depth;                                   /* open containers */
    unsigned char is_object[CNN_JSON_MAX_DEPTH]; /* per open container: object (1) or array (0) */
    unsigned char nonempty[CNN_JSON_MAX_DEPTH];  /* per open container: 1 once it has an element */
    int have_key;                                /* a key was written and waits for its value */
    int done;                                    /* a complete top-level value was written */
} cnn_json_writer;

/* `indent`: 0 for compact output, else spaces per nesting level (with newlines). */
void cnn_json_writer_init(cnn_json_writer *w, int indent);
/* Frees the buffer (unless cnn_json_writer_finish took it); safe to call twice. */
void cnn_json_writer_free(cnn_json_writer *w);

void cnn_json_write_begin_object(cnn_json_writer *w);
void cnn_json_write_end_object(cnn_json_writer *w);
void cnn_json_write_begin_array(cnn_json_writer *w);
void cnn_json_write_end_array(cnn_json_writer *w);
/* A member name inside an object; the next call writes its value. */
void cnn_json_write_key(cnn_json_writer *w, const char *key);
/* A '\0'-terminated UTF-8 string; NULL writes null. */
void cnn_json_write_string(cnn_json_writer *w, const char *s);
/* `len` bytes of UTF-8 (may contain '\0', written as \u0000). */
void cnn_json_write_string_n(cnn_json_writer *w, const char *s, size_t len);
/* The shortest decimal that reads back as the same double; NaN and infinities as null. */
void cnn_json_write_number(cnn_json_writer *w, double v);
/* The shortest decimal of 6 to 9 significant digits that reads back as the same float (0.1f is 0.1, not
 * 0.10000000149011612); NaN and infinities as null. */
void cnn_json_write_float(cnn_json_writer *w, float v);
void cnn_json_write_int(cnn_json_writer *w, int64_t v);
void cnn_json_write_uint(cnn_json_writer *w, uint64_t v);
void cnn_json_write_bool(cnn_json_writer *w, int v);
void cnn_json_write_null(cnn_json_writer *w);

/* Checks that exactly one complete value was written and hands over the text ('\0'-terminated, free() it) and
 * its length (`len` may be NULL). On failure (the first error of any earlier call, or an unfinished document)
 * returns that status, *text is NULL, and the buffer is freed. */
cnn_status cnn_json_writer_finish(cnn_json_writer *w, char **text, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
