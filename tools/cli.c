#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"

void cli_usage(const char *command, const char *usage, const cli_flag *flags, FILE *out)
{
    fprintf(out, "usage: cnn %s %s\n\n", command, usage);
    for (const cli_flag *f = flags; f && f->name; f++) {
        char left[64];
        snprintf(left, sizeof left, "--%s", f->name);
        fprintf(out, "  %-20s %s\n", left, f->help);
    }
    fprintf(out, "  %-20s %s\n", "--help", "show this help");
}

/* "1024", "512M", "1.5GiB": a number, then an optional binary unit (K, M, G, T, in either case, optionally followed
 * by "iB" or "B"), nothing else; at least 1 byte, below INT64_MAX. */
static int parse_size(const char *text, int64_t *out)
{
    static const char units[] = "KMGT";
    char *end;
    if (!(*text >= '0' && *text <= '9') && *text != '.') return 0;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || !isfinite(v)) return 0;
    double scale = 1.0;
    if (*end) {
        const char *u = strchr(units, end[0] >= 'a' ? end[0] - 'a' + 'A' : end[0]);
        if (u && *u) {
            for (const char *p = units; p <= u; p++) scale *= 1024.0;
            end++;
            if (!strcmp(end, "iB") || !strcmp(end, "B")) end += strlen(end);
        } else if (!strcmp(end, "B")) {
            end++;
        }
    }
    if (*end) return 0;
    double bytes = v * scale;
    if (!(bytes >= 1.0) || bytes >= 9.2e18) return 0; /* below INT64_MAX with room for the rounding of doubles */
    *out = (int64_t)bytes;
    return 1;
}

static int set_value(const char *command, cli_flag *f, const char *text)
{
    char *end;
    errno = 0;
    switch (f->kind) {
    case CLI_STRING:
        if (!*text) {
            fprintf(stderr, "cnn %s: --%s: the value is empty\n", command, f->name);
            return 2;
        }
        *(const char **)f->value = text;
        return 0;
    case CLI_INT: {
        long v = strtol(text, &end, 10);
        if (errno || end == text || *end || v < f->min || v > f->max) {
            fprintf(stderr, "cnn %s: --%s: '%s' is not an integer from %.0f to %.0f\n", command, f->name, text, f->min,
                    f->max);
            return 2;
        }
        *(int *)f->value = (int)v;
        return 0;
    }
    case CLI_U64: {
        unsigned long long v = strtoull(text, &end, 10);
        if (errno || end == text || *end || text[0] == '-') {
            fprintf(stderr, "cnn %s: --%s: '%s' is not a non-negative integer\n", command, f->name, text);
            return 2;
        }
        *(uint64_t *)f->value = (uint64_t)v;
        return 0;
    }
    case CLI_FLOAT: {
        double v = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(v) || v < f->min || v > f->max) {
            fprintf(stderr, "cnn %s: --%s: '%s' is not a number from %g to %g\n", command, f->name, text, f->min, f->max);
            return 2;
        }
        *(float *)f->value = (float)v;
        return 0;
    }
    case CLI_BOOL:
        *(int *)f->value = 1;
        return 0;
    case CLI_SIZE:
        if (!parse_size(text, (int64_t *)f->value)) {
            fprintf(stderr, "cnn %s: --%s: '%s' is not a size (a number of bytes, or with K, M, G or T: 512M, 2G, "
                            "1.5GiB)\n", command, f->name, text);
            return 2;
        }
        return 0;
    }
    return 2;
}

int cli_parse_flags(const char *command, const char *usage, cli_flag *flags, int argc, char **argv)
{
    int npos;
    return cli_parse(command, usage, flags, argc, argv, NULL, 0, &npos);
}

int cli_parse(const char *command, const char *usage, cli_flag *flags, int argc, char **argv, char **pos,
              int max_pos, int *npos)
{
    *npos = 0;
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (*npos >= max_pos) {
                fprintf(stderr, "cnn %s: unexpected argument '%s' (see cnn %s --help)\n", command, a, command);
                return 2;
            }
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (!strcmp(a, "--")) {
            only_pos = 1;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_usage(command, usage, flags, stdout);
            return 1;
        }
        if (strncmp(a, "--", 2)) {
            fprintf(stderr, "cnn %s: unknown option '%s': options are spelled --name (see cnn %s --help)\n", command, a,
                    command);
            return 2;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        cli_flag *f = flags;
        while (f->name && !(strlen(f->name) == len && !strncmp(f->name, name, len))) f++;
        if (!f->name) {
            fprintf(stderr, "cnn %s: unknown flag '--%.*s' (see cnn %s --help)\n", command, (int)len, name, command);
            return 2;
        }
        if (f->seen) {
            fprintf(stderr, "cnn %s: --%s is given twice\n", command, f->name);
            return 2;
        }
        f->seen = 1;
        const char *value;
        if (f->kind == CLI_BOOL) {
            if (eq) {
                fprintf(stderr, "cnn %s: --%s takes no value\n", command, f->name);
                return 2;
            }
            value = "";
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "cnn %s: --%s needs a value\n", command, f->name);
            return 2;
        }
        int rc = set_value(command, f, value);
        if (rc) return rc;
    }
    return 0;
}

/* Appends "--name[ value]\n" to *text. */
static int append_setting(char **text, const char *name, const char *value)
{
    size_t old = *text ? strlen(*text) : 0, add = 2 + strlen(name) + (value ? 1 + strlen(value) : 0) + 1;
    char *t = realloc(*text, old + add + 1);
    if (!t) return -1;
    snprintf(t + old, add + 1, "--%s%s%s\n", name, value ? " " : "", value ? value : "");
    *text = t;
    return 0;
}

static int skipped(const char *name, size_t len, const char *const *skip)
{
    for (; skip && *skip; skip++)
        if (strlen(*skip) == len && !strncmp(*skip, name, len)) return 1;
    return 0;
}

int cli_settings(const cli_flag *flags, int argc, char **argv, const char *const *skip, char **text)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) break;
        if (strncmp(a, "--", 2) || !a[2]) continue; /* a positional argument */
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_flag *f = flags;
        while (f->name && !(strlen(f->name) == len && !strncmp(f->name, name, len))) f++;
        if (!f->name) continue;
        const char *value = f->kind == CLI_BOOL ? NULL : eq ? eq + 1 : i + 1 < argc ? argv[++i] : "";
        if (skipped(f->name, strlen(f->name), skip) || (value && strchr(value, '\n'))) continue;
        if (append_setting(text, f->name, value)) return -1;
    }
    return 0;
}

int cli_apply_settings(const char *command, cli_flag *flags, char *saved, const char *const *skip, char **taken)
{
    for (char *line = saved, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        if (strncmp(line, "--", 2)) continue;
        char *name = line + 2, *value = strchr(name, ' ');
        if (value) *value++ = '\0';
        cli_flag *f = flags;
        while (f->name && strcmp(f->name, name)) f++;
        if (!f->name || f->seen || skipped(name, strlen(name), skip)) continue;
        if ((f->kind == CLI_BOOL) != !value) continue; /* not a value of this flag's kind */
        int rc = set_value(command, f, value ? value : "");
        if (rc) return rc;
        f->seen = 1;
        if (append_setting(taken, name, value)) return -1;
    }
    return 0;
}

void cli_apply_max_memory(int64_t bytes)
{
    if (bytes > 0) cnn_set_memory_limit(bytes);
}

const char *cli_memory_what(int64_t max_memory) { return max_memory ? "--max-memory" : "memory limit"; }

int cli_fail(const char *command, const char *what, cnn_status st)
{
    const char *msg = cnn_last_error();
    fprintf(stderr, "cnn %s: %s: %s\n", command, what, msg[0] ? msg : cnn_status_string(st));
    return 1;
}

int cli_fail_value(const char *command, const char *flag, cnn_status st)
{
    cli_fail(command, flag, st);
    return st == CNN_ERR_INVALID_ARG || st == CNN_ERR_NOT_FOUND || st == CNN_ERR_UNSUPPORTED ? 2 : 1;
}

int cli_check_precision(const char *command, const char *precision)
{
    cnn_precision prec;
    if (cnn_precision_parse(precision, &prec) == CNN_OK) return 0;
    fprintf(stderr, "cnn %s: --precision: %s\n", command, cnn_last_error());
    return 2;
}

int cli_check_split(const char *command, const char *split)
{
    if (!strcmp(split, "train") || !strcmp(split, "test")) return 0;
    fprintf(stderr, "cnn %s: --split: '%s' is not one of train, test\n", command, split);
    return 2;
}

cnn_status cli_backend(const char *command, const char *device, cnn_backend **out)
{
    cnn_status st = cnn_backend_create(device, out);
    if (st != CNN_OK) return st;
    fprintf(stderr, "cnn %s: device %s: %s\n", command, cnn_backend_name(*out), cnn_backend_description(*out));
    return CNN_OK;
}

int cli_open_model(const char *command, const char *device, const char *model, int64_t max_memory,
                   cnn_backend **backend, cnn_net **net)
{
    cnn_status st = cli_backend(command, device, backend);
    if (st != CNN_OK) return cli_fail_value(command, "--device", st);
    st = cnn_net_load(model, *backend, net);
    if (st != CNN_OK) return cli_fail(command, st == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "--model", st);
    return 0;
}

void cli_close_model(cnn_backend *backend, cnn_net *net)
{
    cnn_net_destroy(net);
    cnn_backend_destroy(backend);
}
