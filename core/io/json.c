/* JSON (RFC 8259): strict DOM parser and writer. See json.h for the rules. */
#include "core/io/json.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/grow.h"

/* A value: 24 bytes. Arrays hold `count` values; objects hold 2 * count, key (a string) then value. */
struct cnn_json {
    cnn_json_type type;
    unsigned char is_int;  /* numbers: `i` is exact */
    unsigned char boolean; /* booleans */
    union {
        struct {
            double d;
            int64_t i;
        } num;
        struct {
            char *s;
            size_t len;
        } str;
        struct {
            cnn_json *items;
            size_t count;
        } list;
    } u;
};

/* Longest number literal converted on the stack; longer ones (legal, if odd) go through the heap. */
#define NUM_STACK 64

// ---------------------------------------------------------------------------------------------------------------
// UTF-8

/* Length (1-4) of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates, nothing above
 * U+10FFFF), or 0 when it is malformed or cut off by `avail`. */
static size_t utf8_len(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) n = 3, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) n = 3;
    else if (c == 0xED) n = 3, hi = 0x9F;
    else if (c == 0xF0) n = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) n = 4, hi = 0x8F;
    else return 0;
    if (avail < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// ---------------------------------------------------------------------------------------------------------------
// parsing

typedef struct parser {
    const unsigned char *p;
    size_t len, pos;
    int depth;
} parser;

CNN_PRINTF(3, 4)
static cnn_status perr(const parser *ps, size_t at, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)ps;
    return cnn_error(CNN_ERR_FORMAT, "invalid JSON at byte %zu: %s", at, msg);
}

/* The character at `at`, quoted for a message. */
static const char *show_char(const parser *ps, size_t at, char *buf, size_t size)
{
    if (at >= ps->len) snprintf(buf, size, "end of input");
    else if (ps->p[at] >= 0x20 && ps->p[at] < 0x7f) snprintf(buf, size, "'%c'", ps->p[at]);
    else snprintf(buf, size, "byte 0x%02x", ps->p[at]);
    return buf;
}

static void skip_ws(parser *ps)
{
    while (ps->pos < ps->len) {
        unsigned char c = ps->p[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        ps->pos++;
    }
}

static void value_free(cnn_json *v)
{
    if (v->type == CNN_JSON_STRING) {
        free(v->u.str.s);
    } else if (v->type == CNN_JSON_ARRAY || v->type == CNN_JSON_OBJECT) {
        size_t n = v->type == CNN_JSON_OBJECT ? 2 * v->u.list.count : v->u.list.count;
        for (size_t i = 0; i < n; i++) value_free(&v->u.list.items[i]);
        free(v->u.list.items);
    }
    memset(v, 0, sizeof *v);
}

static cnn_status parse_value(parser *ps, cnn_json *out);

static int hex4(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static cnn_status parse_string(parser *ps, cnn_json *out)
{
    size_t start = ps->pos; /* the opening quote */
    size_t end = start + 1;
    /* find the closing quote first: the decoded string is never longer than the raw one */
    while (end < ps->len && ps->p[end] != '"') end += ps->p[end] == '\\' ? 2 : 1;
    if (end >= ps->len) return perr(ps, start, "unterminated string");
    char *s = malloc(end - start);
    if (!s) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory parsing JSON");
    size_t n = 0, i = start + 1;
    while (i < end) {
        unsigned char c = ps->p[i];
        if (c < 0x20) {
            free(s);
            return perr(ps, i, "control character 0x%02x in a string (it must be escaped)", c);
        }
        if (c >= 0x80) {
            size_t k = utf8_len(ps->p + i, end - i);
            if (k == 0) {
                free(s);
                return perr(ps, i, "invalid UTF-8 in a string");
            }
            memcpy(s + n, ps->p + i, k);
            n += k;
            i += k;
            continue;
        }
        if (c != '\\') {
            s[n++] = (char)c;
            i++;
            continue;
        }
        /* an escape; the scan above guarantees i + 1 < end */
        unsigned char e = ps->p[i + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            s[n++] = decoded[simple - "\"\\/bfnrt"];
            i += 2;
            continue;
        }
        if (e != 'u') {
            free(s);
            return perr(ps, i, "invalid escape \\%c", e >= 0x20 && e < 0x7f ? e : '?');
        }
        uint32_t cp;
        if (i + 6 > end || !hex4(ps->p + i + 2, &cp)) {
            free(s);
            return perr(ps, i, "\\u must be followed by 4 hex digits");
        }
        size_t esc_at = i;
        i += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            free(s);
            return perr(ps, esc_at, "\\u%04X is a low surrogate without a high surrogate before it", cp);
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (i + 6 > end || ps->p[i] != '\\' || ps->p[i + 1] != 'u' || !hex4(ps->p + i + 2, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF) {
                free(s);
                return perr(ps, esc_at, "\\u%04X is a high surrogate without a low surrogate after it", cp);
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        }
        n += utf8_encode(cp, s + n);
    }
    s[n] = '\0';
    out->type = CNN_JSON_STRING;
    out->u.str.s = s;
    out->u.str.len = n;
    ps->pos = end + 1;
    return CNN_OK;
}

/* Whether the literal's digits (int part, fraction, exponent) denote an integer in int64 range; exact. */
static int literal_int64(const unsigned char *ip, size_t ilen, const unsigned char *fp, size_t flen, long long exp,
                         int negative, int64_t *out)
{
    /* the significant digits are ip[0..ilen) fp[0..flen), scaled by 10^(exp - flen) */
    size_t total = ilen + flen, first = 0, last = total;
#define DIGIT(k) ((k) < ilen ? ip[(k)] : fp[(k) - ilen])
    while (first < total && DIGIT(first) == '0') first++;
    if (first == total) {
        *out = 0;
        return 1;
    }
    long long scale = exp - (long long)flen;
    while (DIGIT(last - 1) == '0') last--, scale++;
    if (scale < 0) return 0;
    if ((long long)(last - first) + scale > 19) return 0;
    uint64_t v = 0;
    for (size_t k = first; k < last; k++) v = v * 10 + (uint64_t)(DIGIT(k) - '0');
#undef DIGIT
    for (long long k = 0; k < scale; k++) {
        if (v > UINT64_MAX / 10) return 0;
        v *= 10;
    }
    if (negative) {
        if (v > (uint64_t)INT64_MAX + 1) return 0;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX) return 0;
        *out = (int64_t)v;
    }
    return 1;
}

/* Clinger's fast path: when the digits (integer part ip, fraction fp) make an integer M <= 2^53 and the decimal
 * exponent e (exp less the fraction's digits) has |e| <= 22, M and 10^|e| are exact doubles, and the one
 * correctly rounded product or quotient is the correctly rounded value of the literal: what strtod gives, without
 * its cost (numbers are most of a request body of pixels). 0 for the literals outside it (strtod reads them). */
static int fast_decimal(const unsigned char *ip, size_t ilen, const unsigned char *fp, size_t flen, long long exp,
                        double *out)
{
    static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    uint64_t m = 0;
    int digits = 0; /* significant ones: leading zeros do not count */
    for (size_t k = 0; k < ilen + flen; k++) {
        unsigned d = (unsigned)((k < ilen ? ip[k] : fp[k - ilen]) - '0');
        if (m == 0 && d == 0) continue;
        if (++digits > 16) return 0; /* 10^16 > 2^53: beyond it, check nothing and let strtod decide */
        m = m * 10 + d;
    }
    if (m > ((uint64_t)1 << 53)) return 0;
    long long e = exp - (long long)flen;
    if (e < -22 || e > 22) return m == 0 ? (*out = 0.0, 1) : 0;
    *out = e < 0 ? (double)m / pow10[-e] : (double)m * pow10[e];
    return 1;
}

static cnn_status parse_number(parser *ps, cnn_json *out)
{
    const unsigned char *p = ps->p;
    size_t start = ps->pos, i = start, len = ps->len;
    int negative = 0;
    if (i < len && p[i] == '-') negative = 1, i++;
    if (i >= len || p[i] < '0' || p[i] > '9') return perr(ps, i, "expected a digit");
    size_t ip = i;
    if (p[i] == '0') {
        i++;
        if (i < len && p[i] >= '0' && p[i] <= '9') return perr(ps, start, "leading zeros are not allowed");
    } else {
        while (i < len && p[i] >= '0' && p[i] <= '9') i++;
    }
    size_t ilen = i - ip, fp = i, flen = 0;
    if (i < len && p[i] == '.') {
        i++;
        fp = i;
        while (i < len && p[i] >= '0' && p[i] <= '9') i++;
        flen = i - fp;
        if (flen == 0) return perr(ps, i, "expected a digit after the decimal point");
    }
    long long exp = 0;
    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        int eneg = 0;
        if (i < len && (p[i] == '+' || p[i] == '-')) eneg = p[i] == '-', i++;
        if (i >= len || p[i] < '0' || p[i] > '9') return perr(ps, i, "expected a digit in the exponent");
        while (i < len && p[i] >= '0' && p[i] <= '9') {
            if (exp < 1000000000) exp = exp * 10 + (p[i] - '0'); /* saturates; beyond it is 0 or overflow anyway */
            i++;
        }
        if (eneg) exp = -exp;
    }
    size_t n = i - start;

    double d;
    if (fast_decimal(p + ip, ilen, p + fp, flen, exp, &d)) {
        out->type = CNN_JSON_NUMBER;
        out->u.num.d = negative ? -d : d;
        out->is_int = (unsigned char)literal_int64(p + ip, ilen, p + fp, flen, exp, negative, &out->u.num.i);
        ps->pos = i;
        return CNN_OK;
    }
    /* strtod reads the locale's decimal point; give it that instead of '.' */
    char stack[NUM_STACK], *buf = n < sizeof stack ? stack : malloc(n + 1);
    if (!buf) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory parsing JSON");
    memcpy(buf, p + start, n);
    buf[n] = '\0';
    const char *dp = localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && !dp[1] && flen > 0) buf[fp - 1 - start] = dp[0];
    errno = 0;
    char *endp = NULL;
    d = strtod(buf, &endp);
    int range = errno == ERANGE && isinf(d);
    int whole = endp == buf + n;
    if (buf != stack) free(buf);
    if (!whole) return perr(ps, start, "cannot convert the number");
    if (range) return perr(ps, start, "number out of the range of a double");

    out->type = CNN_JSON_NUMBER;
    out->u.num.d = d;
    out->is_int = (unsigned char)literal_int64(p + ip, ilen, p + fp, flen, exp, negative, &out->u.num.i);
    ps->pos = i;
    return CNN_OK;
}

/* Appends *v to a growing array of values (taking it over). */
static cnn_status push(cnn_json **items, size_t *n, size_t *cap, cnn_json *v)
{
    cnn_status st = cnn_array_grow(items, cap, *n + 1, sizeof **items, 8);
    if (st != CNN_OK) return cnn_error_prefix(st, "parsing JSON: ");
    (*items)[(*n)++] = *v;
    memset(v, 0, sizeof *v);
    return CNN_OK;
}

/* qsort has no context argument in C11: the items being sorted, per thread */
static _Thread_local const cnn_json *sort_base;

static int cmp_keys(const void *a, const void *b)
{
    const cnn_json *x = &sort_base[2 * *(const size_t *)a], *y = &sort_base[2 * *(const size_t *)b];
    size_t n = x->u.str.len < y->u.str.len ? x->u.str.len : y->u.str.len;
    int c = memcmp(x->u.str.s, y->u.str.s, n);
    if (c) return c;
    return (x->u.str.len > y->u.str.len) - (x->u.str.len < y->u.str.len);
}

/* CNN_OK when no key repeats in the object (n members, key/value pairs in `items`). */
static cnn_status check_unique_keys(parser *ps, size_t at, const cnn_json *items, size_t n)
{
    if (n < 2) return CNN_OK;
    if (n <= 8) { /* small objects: compare pairs, no allocation */
        for (size_t a = 0; a < n; a++)
            for (size_t b = a + 1; b < n; b++)
                if (items[2 * a].u.str.len == items[2 * b].u.str.len &&
                    !memcmp(items[2 * a].u.str.s, items[2 * b].u.str.s, items[2 * a].u.str.len))
                    return perr(ps, at, "the object has the key \"%s\" twice", items[2 * a].u.str.s);
        return CNN_OK;
    }
    size_t *order = malloc(n * sizeof *order);
    if (!order) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory parsing JSON");
    for (size_t i = 0; i < n; i++) order[i] = i;
    sort_base = items;
    qsort(order, n, sizeof *order, cmp_keys);
    cnn_status st = CNN_OK;
    for (size_t i = 1; i < n && st == CNN_OK; i++)
        if (cmp_keys(&order[i - 1], &order[i]) == 0)
            st = perr(ps, at, "the object has the key \"%s\" twice", items[2 * order[i]].u.str.s);
    free(order);
    return st;
}

static cnn_status parse_container(parser *ps, cnn_json *out, int object)
{
    cnn_status st = CNN_OK;
    cnn_json *items = NULL, tmp;
    size_t n = 0, cap = 0, start = ps->pos;
    char shown[32];
    memset(&tmp, 0, sizeof tmp);

    if (++ps->depth > CNN_JSON_MAX_DEPTH) return perr(ps, start, "nested deeper than %d levels", CNN_JSON_MAX_DEPTH);
    ps->pos++; /* '{' or '[' */
    skip_ws(ps);
    if (ps->pos < ps->len && ps->p[ps->pos] == (object ? '}' : ']')) {
        ps->pos++;
    } else {
        for (;;) {
            skip_ws(ps);
            if (object) {
                if (ps->pos >= ps->len || ps->p[ps->pos] != '"') {
                    st = perr(ps, ps->pos, "expected a string key, found %s",
                              show_char(ps, ps->pos, shown, sizeof shown));
                    goto fail;
                }
                CNN_TRY(parse_string(ps, &tmp));
                CNN_TRY(push(&items, &n, &cap, &tmp));
                skip_ws(ps);
                if (ps->pos >= ps->len || ps->p[ps->pos] != ':') {
                    st = perr(ps, ps->pos, "expected ':' after the key, found %s",
                              show_char(ps, ps->pos, shown, sizeof shown));
                    goto fail;
                }
                ps->pos++;
            }
            CNN_TRY(parse_value(ps, &tmp));
            CNN_TRY(push(&items, &n, &cap, &tmp));
            skip_ws(ps);
            if (ps->pos < ps->len && ps->p[ps->pos] == ',') {
                ps->pos++;
                continue;
            }
            if (ps->pos < ps->len && ps->p[ps->pos] == (object ? '}' : ']')) {
                ps->pos++;
                break;
            }
            st = perr(ps, ps->pos, "expected ',' or '%c', found %s", object ? '}' : ']',
                      show_char(ps, ps->pos, shown, sizeof shown));
            goto fail;
        }
    }
    if (object) CNN_TRY(check_unique_keys(ps, start, items, n / 2));
    out->type = object ? CNN_JSON_OBJECT : CNN_JSON_ARRAY;
    out->u.list.items = items;
    out->u.list.count = object ? n / 2 : n;
    ps->depth--;
    return CNN_OK;

fail:
    value_free(&tmp);
    for (size_t i = 0; i < n; i++) value_free(&items[i]);
    free(items);
    return st;
}

static cnn_status parse_literal(parser *ps, const char *word, cnn_json *out)
{
    size_t n = strlen(word);
    if (ps->len - ps->pos < n || memcmp(ps->p + ps->pos, word, n) != 0)
        return perr(ps, ps->pos, "invalid literal (expected %s)", word);
    ps->pos += n;
    if (word[0] == 'n') {
        out->type = CNN_JSON_NULL;
    } else {
        out->type = CNN_JSON_BOOL;
        out->boolean = word[0] == 't';
    }
    return CNN_OK;
}

static cnn_status parse_value(parser *ps, cnn_json *out)
{
    char shown[32];
    memset(out, 0, sizeof *out);
    skip_ws(ps);
    if (ps->pos >= ps->len) return perr(ps, ps->pos, "unexpected end of input, expected a value");
    unsigned char c = ps->p[ps->pos];
    switch (c) {
    case '{': return parse_container(ps, out, 1);
    case '[': return parse_container(ps, out, 0);
    case '"': return parse_string(ps, out);
    case 't': return parse_literal(ps, "true", out);
    case 'f': return parse_literal(ps, "false", out);
    case 'n': return parse_literal(ps, "null", out);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(ps, out);
        return perr(ps, ps->pos, "unexpected %s, expected a value", show_char(ps, ps->pos, shown, sizeof shown));
    }
}

cnn_status cnn_json_parse(const char *text, size_t len, cnn_json **out)
{
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_json_parse: no output");
    *out = NULL;
    if (!text && len > 0) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_json_parse: no text");
    parser ps = {(const unsigned char *)(text ? text : ""), len, 0, 0};
    cnn_json *root = calloc(1, sizeof *root);
    if (!root) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory parsing JSON");
    cnn_status st = parse_value(&ps, root);
    if (st == CNN_OK) {
        skip_ws(&ps);
        if (ps.pos < ps.len) {
            char shown[32];
            st = perr(&ps, ps.pos, "unexpected %s after the value", show_char(&ps, ps.pos, shown, sizeof shown));
            value_free(root);
        }
    }
    if (st != CNN_OK) {
        free(root);
        return st;
    }
    *out = root;
    return CNN_OK;
}

void cnn_json_free(cnn_json *value)
{
    if (!value) return;
    value_free(value);
    free(value);
}

// ---------------------------------------------------------------------------------------------------------------
// accessors

cnn_json_type cnn_json_type_of(const cnn_json *v) { return v ? v->type : CNN_JSON_NULL; }

const char *cnn_json_type_name(cnn_json_type type)
{
    static const char *const names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)type < sizeof names / sizeof names[0] ? names[type] : "?";
}

size_t cnn_json_count(const cnn_json *v)
{
    return v && (v->type == CNN_JSON_ARRAY || v->type == CNN_JSON_OBJECT) ? v->u.list.count : 0;
}

const cnn_json *cnn_json_at(const cnn_json *v, size_t i)
{
    if (!v || i >= cnn_json_count(v)) return NULL;
    return v->type == CNN_JSON_OBJECT ? &v->u.list.items[2 * i + 1] : &v->u.list.items[i];
}

const char *cnn_json_key_at(const cnn_json *v, size_t i, size_t *len)
{
    if (!v || v->type != CNN_JSON_OBJECT || i >= v->u.list.count) return NULL;
    if (len) *len = v->u.list.items[2 * i].u.str.len;
    return v->u.list.items[2 * i].u.str.s;
}

const cnn_json *cnn_json_get(const cnn_json *v, const char *key)
{
    if (!v || v->type != CNN_JSON_OBJECT || !key) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < v->u.list.count; i++) {
        const cnn_json *k = &v->u.list.items[2 * i];
        if (k->u.str.len == n && !memcmp(k->u.str.s, key, n)) return &v->u.list.items[2 * i + 1];
    }
    return NULL;
}

const char *cnn_json_string(const cnn_json *v, size_t *len)
{
    if (!v || v->type != CNN_JSON_STRING) return NULL;
    if (len) *len = v->u.str.len;
    return v->u.str.s;
}

int cnn_json_double(const cnn_json *v, double *out)
{
    if (!v || v->type != CNN_JSON_NUMBER) return 0;
    *out = v->u.num.d;
    return 1;
}

int cnn_json_int64(const cnn_json *v, int64_t *out)
{
    if (!v || v->type != CNN_JSON_NUMBER || !v->is_int) return 0;
    *out = v->u.num.i;
    return 1;
}

int cnn_json_bool(const cnn_json *v, int *out)
{
    if (!v || v->type != CNN_JSON_BOOL) return 0;
    *out = v->boolean;
    return 1;
}

// ---------------------------------------------------------------------------------------------------------------
// string buffer

void cnn_strbuf_init(cnn_strbuf *sb) { memset(sb, 0, sizeof *sb); }

void cnn_strbuf_free(cnn_strbuf *sb)
{
    free(sb->data);
    memset(sb, 0, sizeof *sb);
}

/* Room for `extra` more bytes plus the '\0'; 0 when out of memory (status set). */
static int strbuf_reserve(cnn_strbuf *sb, size_t extra)
{
    if (sb->status != CNN_OK) return 0;
    if (extra < sb->cap - sb->len) return 1; /* cap > len always once allocated; 0 - 0 handled below */
    if (extra > SIZE_MAX - sb->len - 1) {
        sb->status = cnn_error(CNN_ERR_NO_MEMORY, "string buffer too large");
        return 0;
    }
    sb->status = cnn_array_grow(&sb->data, &sb->cap, sb->len + extra + 1, 1, 256);
    return sb->status == CNN_OK;
}

void cnn_strbuf_append(cnn_strbuf *sb, const char *bytes, size_t n)
{
    if (!strbuf_reserve(sb, n)) return;
    if (n) memcpy(sb->data + sb->len, bytes, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

void cnn_strbuf_appends(cnn_strbuf *sb, const char *s) { cnn_strbuf_append(sb, s, strlen(s)); }

void cnn_strbuf_appendf(cnn_strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        if (sb->status == CNN_OK) sb->status = cnn_error(CNN_ERR_INVALID_ARG, "bad format string '%s'", fmt);
        return;
    }
    if (!strbuf_reserve(sb, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

// ---------------------------------------------------------------------------------------------------------------
// writer

static void writer_fail(cnn_json_writer *w, cnn_status st, const char *what)
{
    if (w->out.status == CNN_OK) w->out.status = cnn_error(st, "JSON writer: %s", what);
}

void cnn_json_writer_init(cnn_json_writer *w, int indent)
{
    memset(w, 0, sizeof *w);
    cnn_strbuf_init(&w->out);
    w->indent = indent > 0 ? (indent < 16 ? indent : 16) : 0;
}

void cnn_json_writer_free(cnn_json_writer *w) { cnn_strbuf_free(&w->out); }

static void newline(cnn_json_writer *w, int depth)
{
    static const char spaces[] = "                ";
    if (!w->indent) return;
    cnn_strbuf_append(&w->out, "\n", 1);
    for (int i = 0; i < depth; i++) cnn_strbuf_append(&w->out, spaces, (size_t)w->indent);
}

/* Separators before a value; 0 when the value must not be written. */
static int before_value(cnn_json_writer *w)
{
    if (w->out.status != CNN_OK) return 0;
    if (w->depth == 0) {
        if (w->done) {
            writer_fail(w, CNN_ERR_INVALID_ARG, "a second value after the complete document");
            return 0;
        }
        return 1;
    }
    int d = w->depth - 1;
    if (w->is_object[d]) {
        if (!w->have_key) {
            writer_fail(w, CNN_ERR_INVALID_ARG, "a value inside an object without a key");
            return 0;
        }
        w->have_key = 0;
        return 1;
    }
    if (w->nonempty[d]) cnn_strbuf_append(&w->out, ",", 1);
    w->nonempty[d] = 1;
    newline(w, w->depth);
    return 1;
}

static void after_value(cnn_json_writer *w)
{
    if (w->depth == 0) w->done = 1;
}

static void begin(cnn_json_writer *w, int object)
{
    if (!before_value(w)) return;
    if (w->depth >= CNN_JSON_MAX_DEPTH) {
        writer_fail(w, CNN_ERR_INVALID_ARG, "nested too deeply");
        return;
    }
    cnn_strbuf_append(&w->out, object ? "{" : "[", 1);
    w->is_object[w->depth] = (unsigned char)object;
    w->nonempty[w->depth] = 0;
    w->depth++;
}

static void end(cnn_json_writer *w, int object)
{
    if (w->out.status != CNN_OK) return;
    if (w->depth == 0 || w->is_object[w->depth - 1] != object || w->have_key) {
        writer_fail(w, CNN_ERR_INVALID_ARG, object ? "end_object does not close an object (or a key has no value)"
                                                   : "end_array does not close an array");
        return;
    }
    w->depth--;
    if (w->nonempty[w->depth]) newline(w, w->depth);
    cnn_strbuf_append(&w->out, object ? "}" : "]", 1);
    after_value(w);
}

void cnn_json_write_begin_object(cnn_json_writer *w) { begin(w, 1); }
void cnn_json_write_end_object(cnn_json_writer *w) { end(w, 1); }
void cnn_json_write_begin_array(cnn_json_writer *w) { begin(w, 0); }
void cnn_json_write_end_array(cnn_json_writer *w) { end(w, 0); }

static void write_escaped(cnn_json_writer *w, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    cnn_strbuf_append(&w->out, "\"", 1);
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        if (c >= 0x80) {
            size_t k = utf8_len(p + i, len - i);
            if (k == 0) {
                char msg[96];
                snprintf(msg, sizeof msg, "string is not valid UTF-8 (byte 0x%02x at offset %zu)", c, i);
                writer_fail(w, CNN_ERR_INVALID_ARG, msg);
                return;
            }
            i += k;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        cnn_strbuf_append(&w->out, s + run, i - run);
        char esc[8];
        switch (c) {
        case '"': cnn_strbuf_append(&w->out, "\\\"", 2); break;
        case '\\': cnn_strbuf_append(&w->out, "\\\\", 2); break;
        case '\b': cnn_strbuf_append(&w->out, "\\b", 2); break;
        case '\f': cnn_strbuf_append(&w->out, "\\f", 2); break;
        case '\n': cnn_strbuf_append(&w->out, "\\n", 2); break;
        case '\r': cnn_strbuf_append(&w->out, "\\r", 2); break;
        case '\t': cnn_strbuf_append(&w->out, "\\t", 2); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            cnn_strbuf_append(&w->out, esc, 6);
        }
        run = ++i;
    }
    cnn_strbuf_append(&w->out, s + run, len - run);
    cnn_strbuf_append(&w->out, "\"", 1);
}

void cnn_json_write_key(cnn_json_writer *w, const char *key)
{
    if (w->out.status != CNN_OK) return;
    if (!key || w->depth == 0 || !w->is_object[w->depth - 1] || w->have_key) {
        writer_fail(w, CNN_ERR_INVALID_ARG, "a key outside an object, a NULL key, or two keys in a row");
        return;
    }
    int d = w->depth - 1;
    if (w->nonempty[d]) cnn_strbuf_append(&w->out, ",", 1);
    w->nonempty[d] = 1;
    newline(w, w->depth);
    write_escaped(w, key, strlen(key));
    cnn_strbuf_append(&w->out, w->indent ? ": " : ":", w->indent ? 2 : 1);
    w->have_key = 1;
}

void cnn_json_write_string_n(cnn_json_writer *w, const char *s, size_t len)
{
    if (!s && len > 0) {
        writer_fail(w, CNN_ERR_INVALID_ARG, "NULL string with a length");
        return;
    }
    if (!before_value(w)) return;
    write_escaped(w, s ? s : "", len);
    after_value(w);
}

void cnn_json_write_string(cnn_json_writer *w, const char *s)
{
    if (!s) {
        cnn_json_write_null(w);
        return;
    }
    cnn_json_write_string_n(w, s, strlen(s));
}

/* The shortest %g that reads back as v: %.6g to %.9g for a float (%.9g always does), %.15g to %.17g for a double
 * (IEEE 754 binary64); %g drops trailing zeros, so 0.5 is "0.5". Non-finite numbers are null. */
static void write_shortest(cnn_json_writer *w, double v, int is_float)
{
    if (!isfinite(v)) {
        cnn_json_write_null(w);
        return;
    }
    if (!before_value(w)) return;
    char buf[40];
    for (int prec = is_float ? 6 : 15, last = is_float ? 9 : 17; prec <= last; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (is_float ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
    }
    /* printf writes the locale's decimal point; JSON wants '.' */
    const char *dp = localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
        char *q = strchr(buf, dp[0]);
        if (q) *q = '.';
    }
    cnn_strbuf_appends(&w->out, buf);
    after_value(w);
}

void cnn_json_write_float(cnn_json_writer *w, float v) { write_shortest(w, v, 1); }

void cnn_json_write_number(cnn_json_writer *w, double v) { write_shortest(w, v, 0); }

void cnn_json_write_int(cnn_json_writer *w, int64_t v)
{
    if (!before_value(w)) return;
    cnn_strbuf_appendf(&w->out, "%lld", (long long)v);
    after_value(w);
}

void cnn_json_write_uint(cnn_json_writer *w, uint64_t v)
{
    if (!before_value(w)) return;
    cnn_strbuf_appendf(&w->out, "%llu", (unsigned long long)v);
    after_value(w);
}

void cnn_json_write_bool(cnn_json_writer *w, int v)
{
    if (!before_value(w)) return;
    cnn_strbuf_appends(&w->out, v ? "true" : "false");
    after_value(w);
}

void cnn_json_write_null(cnn_json_writer *w)
{
    if (!before_value(w)) return;
    cnn_strbuf_appends(&w->out, "null");
    after_value(w);
}

cnn_status cnn_json_writer_finish(cnn_json_writer *w, char **text, size_t *len)
{
    *text = NULL;
    if (len) *len = 0;
    if (w->out.status == CNN_OK && (w->depth != 0 || !w->done))
        writer_fail(w, CNN_ERR_INVALID_ARG, "the document is unfinished (an array or object is still open)");
    cnn_status st = w->out.status;
    if (st != CNN_OK) {
        cnn_strbuf_free(&w->out);
        return st;
    }
    *text = w->out.data;
    if (len) *len = w->out.len;
    memset(&w->out, 0, sizeof w->out);
    return CNN_OK;
}
