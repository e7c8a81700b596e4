/* Sample sources (cnn/pipeline.h): an in-memory dataset, or a list of image files with labels (a folder per
 * class, or a CSV list) decoded on demand by the loader; the stratified split of either. */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cnn/pipeline.h"
#include "core/data/sampling.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/free_list.h"
#include "core/grow.h"

/* Folders nested deeper than this inside a class folder are not followed (a symbolic link loop ends here). */
#define MAX_DEPTH 32
/* Largest CSV list read: 1 GiB, some ten million lines. */
#define MAX_CSV_BYTES ((size_t)1 << 30)

struct cnn_source {
    int64_t n;
    int32_t *labels;     /* (n), owned */
    int num_classes;
    char **class_names;  /* num_classes, owned; NULL when unknown */
    cnn_dataset *ds;     /* in-memory samples, or NULL */
    int own_ds;
    char **paths;        /* file samples: (n) owned strings, or NULL */
    int64_t ignored;     /* files found but not taken */
};

static char *dup_str(const char *s)
{
    size_t len = strlen(s) + 1;
    char *d = malloc(len);
    if (d) memcpy(d, s, len);
    return d;
}

void cnn_source_destroy(cnn_source *src)
{
    if (!src) return;
    cnn_free_strings(src->class_names, src->num_classes);
    cnn_free_strings(src->paths, src->n);
    if (src->own_ds) cnn_dataset_destroy(src->ds);
    free(src->labels);
    free(src);
}

static cnn_status copy_names(cnn_source *src, char *const *names, int count)
{
    if (!names || count <= 0) return CNN_OK;
    src->class_names = calloc((size_t)count, sizeof *src->class_names);
    if (!src->class_names) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for class names");
    for (int c = 0; c < count; c++)
        if (!(src->class_names[c] = dup_str(names[c] ? names[c] : "")))
            return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for class names");
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// accessors

int64_t cnn_source_count(const cnn_source *src) { return src ? src->n : 0; }
int cnn_source_num_classes(const cnn_source *src) { return src ? src->num_classes : 0; }
const int32_t *cnn_source_labels(const cnn_source *src) { return src ? src->labels : NULL; }
const cnn_dataset *cnn_source_dataset(const cnn_source *src) { return src ? src->ds : NULL; }
int64_t cnn_source_ignored_files(const cnn_source *src) { return src ? src->ignored : 0; }

const char *cnn_source_class_name(const cnn_source *src, int c)
{
    if (!src || !src->class_names || c < 0 || c >= src->num_classes) return NULL;
    return src->class_names[c];
}

const char *cnn_source_path(const cnn_source *src, int64_t i)
{
    if (!src || !src->paths || i < 0 || i >= src->n) return NULL;
    return src->paths[i];
}

void cnn_source_class_counts(const cnn_source *src, int64_t *counts)
{
    cnn_count_classes(src->labels, src->n, src->num_classes, counts);
}

// ---------------------------------------------------------------------------------------------------------------
// in memory

cnn_status cnn_source_from_dataset(cnn_dataset *ds, int take, cnn_source **out)
{
    *out = NULL;
    if (!ds || (!ds->images && !ds->pixels) || !ds->labels || ds->n < 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_from_dataset: no dataset");
    int classes = ds->num_classes; /* at least max(label) + 1 */
    for (int64_t i = 0; i < ds->n; i++) {
        if (ds->labels[i] < 0 || ds->labels[i] >= CNN_MAX_CLASSES)
            return cnn_error(CNN_ERR_INVALID_ARG, "sample %lld has label %d, outside [0, %d)", (long long)i,
                             (int)ds->labels[i], CNN_MAX_CLASSES);
        if (ds->labels[i] >= classes) classes = ds->labels[i] + 1;
    }
    if (classes < 1 || classes > CNN_MAX_CLASSES)
        return cnn_error(CNN_ERR_INVALID_ARG, "a dataset of %d classes (from 1 to %d)", classes, CNN_MAX_CLASSES);
    cnn_source *src = calloc(1, sizeof *src);
    if (!src) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    src->n = ds->n;
    src->num_classes = classes;
    src->labels = malloc((ds->n ? (size_t)ds->n : 1) * sizeof *src->labels);
    cnn_status st = CNN_OK;
    if (!src->labels) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory for %lld labels", (long long)ds->n);
        goto fail;
    }
    memcpy(src->labels, ds->labels, (size_t)ds->n * sizeof *src->labels);
    if (classes == ds->num_classes) CNN_TRY(copy_names(src, ds->class_names, ds->num_classes));
    src->ds = ds;
    src->own_ds = take;
    *out = src;
    return CNN_OK;
fail:
    cnn_source_destroy(src);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// a growing list of (path, label)

typedef struct file_list {
    char **paths;
    int32_t *labels;
    int64_t n;
    size_t paths_cap, labels_cap;
} file_list;

static void file_list_free(file_list *fl)
{
    cnn_free_strings(fl->paths, fl->n);
    free(fl->labels);
    memset(fl, 0, sizeof *fl);
}

/* Takes ownership of `path`. */
static cnn_status file_list_add(file_list *fl, char *path, int32_t label)
{
    size_t need = (size_t)fl->n + 1;
    cnn_status st = cnn_array_grow(&fl->paths, &fl->paths_cap, need, sizeof *fl->paths, 1024);
    if (st == CNN_OK) st = cnn_array_grow(&fl->labels, &fl->labels_cap, need, sizeof *fl->labels, 1024);
    if (st != CNN_OK) {
        free(path);
        return cnn_error_prefix(st, "a list of %lld files: ", (long long)need);
    }
    fl->paths[fl->n] = path;
    fl->labels[fl->n] = label;
    fl->n++;
    return CNN_OK;
}

/* A file source from a list (taken over) and class names (copied). */
static cnn_status source_from_list(file_list *fl, char *const *names, int num_classes, int64_t ignored,
                                   cnn_source **out)
{
    cnn_source *src = calloc(1, sizeof *src);
    if (!src) {
        file_list_free(fl);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    }
    src->n = fl->n;
    src->paths = fl->paths;
    src->labels = fl->labels;
    src->num_classes = num_classes;
    src->ignored = ignored;
    memset(fl, 0, sizeof *fl);
    if (!src->labels) src->labels = malloc(sizeof *src->labels); /* an empty list */
    cnn_status st = src->labels ? copy_names(src, names, num_classes)
                                : cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    if (st != CNN_OK) {
        cnn_source_destroy(src);
        return st;
    }
    *out = src;
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// folders

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + strlen(name) + 2;
    char *p = malloc(len);
    if (p) snprintf(p, len, "%s/%s", dir, name);
    return p;
}

/* join() for the folder scans: "out of memory" when the path cannot be allocated. */
static cnn_status join_path(const char *dir, const char *name, char **path)
{
    *path = join(dir, name);
    return *path ? CNN_OK : cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
}

static int has_image_extension(const char *name)
{
    static const char *const exts[] = {".jpg", ".jpeg", ".png", ".bmp"};
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        size_t el = strlen(exts[i]);
        if (len <= el) continue;
        const char *tail = name + len - el;
        size_t k = 0;
        while (k < el && tolower((unsigned char)tail[k]) == exts[i][k]) k++;
        if (k == el) return 1;
    }
    return 0;
}

/* The sorted names of the visible entries of `dir` (malloc'ed array of malloc'ed strings). */
static cnn_status list_dir(const char *dir, char ***names, int64_t *count)
{
    *names = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        return cnn_error(e == ENOENT ? CNN_ERR_NOT_FOUND : CNN_ERR_IO, "%s: cannot open the folder: %s", dir,
                         strerror(e));
    }
    char **v = NULL;
    int64_t n = 0;
    size_t cap = 0;
    cnn_status st = CNN_OK;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.') continue; /* ".", "..", hidden files (.DS_Store, ._x.jpg) */
        if ((st = cnn_array_grow(&v, &cap, (size_t)n + 1, sizeof *v, 64)) != CNN_OK) {
            cnn_error_prefix(st, "listing %s: ", dir);
            break;
        }
        if (!(v[n] = dup_str(ent->d_name))) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory listing %s", dir);
            break;
        }
        n++;
    }
    closedir(d);
    if (st != CNN_OK) {
        cnn_free_strings(v, n);
        return st;
    }
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_str);
    *names = v;
    *count = n;
    return CNN_OK;
}

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Adds the image files under `dir` (recursively, sorted) with `label`. An entry that cannot be stat'ed (a broken
 * link) is added when its name looks like an image: the loader then reports it as unreadable. */
static cnn_status scan_class(const char *dir, int32_t label, int depth, file_list *fl, int64_t *ignored)
{
    char **names;
    int64_t n;
    cnn_status st = list_dir(dir, &names, &n);
    if (st != CNN_OK) return st;
    for (int64_t i = 0; i < n && st == CNN_OK; i++) {
        char *path;
        if ((st = join_path(dir, names[i], &path)) != CNN_OK) break;
        if (is_dir(path)) {
            if (depth < MAX_DEPTH) st = scan_class(path, label, depth + 1, fl, ignored);
            free(path);
        } else if (has_image_extension(names[i])) {
            st = file_list_add(fl, path, label);
        } else {
            (*ignored)++;
            free(path);
        }
    }
    cnn_free_strings(names, n);
    return st;
}

cnn_status cnn_source_from_folder(const char *dir, cnn_source **out)
{
    *out = NULL;
    if (!dir || !dir[0]) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_from_folder: no folder");
    if (!is_dir(dir)) return cnn_error(CNN_ERR_NOT_FOUND, "%s: no such folder", dir);
    char **entries;
    int64_t n;
    cnn_status st = list_dir(dir, &entries, &n);
    if (st != CNN_OK) return st;
    char **classes = calloc((size_t)(n ? n : 1), sizeof *classes);
    int k = 0;
    int64_t ignored = 0;
    file_list fl = {0};
    if (!classes) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    for (int64_t i = 0; i < n; i++) {
        char *path;
        CNN_TRY(join_path(dir, entries[i], &path));
        if (is_dir(path)) classes[k++] = entries[i];
        else ignored++; /* files beside the class folders */
        free(path);
    }
    if (k == 0) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: no class folders: put the images of each class in a folder of their own "
                       "(DIR/CLASS/IMAGE.jpg)", dir);
        goto fail;
    }
    if (k > CNN_MAX_CLASSES) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: %d class folders (at most %d)", dir, k, CNN_MAX_CLASSES);
        goto fail;
    }
    for (int c = 0; c < k; c++) {
        char *path;
        CNN_TRY(join_path(dir, classes[c], &path));
        st = scan_class(path, c, 1, &fl, &ignored);
        free(path);
        if (st != CNN_OK) goto fail;
    }
    if (fl.n == 0) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: no images (*.jpg, *.jpeg, *.png, *.bmp) in its %d class folders", dir, k);
        goto fail;
    }
    st = source_from_list(&fl, classes, k, ignored, out);
fail:
    file_list_free(&fl);
    free(classes); /* its strings belong to entries */
    cnn_free_strings(entries, n);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// CSV lists

/* Reads one field starting at *p (quoted or not) into a new string; *p moves past it. Returns NULL on a quote
 * that is never closed (*bad set) or out of memory. */
static char *csv_field(char **p, int *bad)
{
    char *s = *p;
    *bad = 0;
    if (*s == '"') {
        char *w = ++s, *start = s;
        for (;;) {
            if (*s == '\0' || *s == '\n') {
                *bad = 1;
                return NULL;
            }
            if (*s == '"') {
                if (s[1] == '"') {
                    *w++ = '"';
                    s += 2;
                    continue;
                }
                s++;
                break;
            }
            *w++ = *s++;
        }
        size_t len = (size_t)(w - start);
        char *f = malloc(len + 1);
        if (f) {
            memcpy(f, start, len);
            f[len] = '\0';
        }
        *p = s;
        return f;
    }
    char *start = s;
    while (*s && *s != ',' && *s != '\n') s++;
    size_t len = (size_t)(s - start);
    while (len && (start[len - 1] == '\r')) len--;
    char *f = malloc(len + 1);
    if (f) {
        memcpy(f, start, len);
        f[len] = '\0';
    }
    *p = s;
    return f;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1])) s[--len] = '\0';
    return s;
}

static int parse_label_int(const char *s, long *v)
{
    if (!*s) return 0;
    for (const char *c = s; *c; c++)
        if (!isdigit((unsigned char)*c)) return 0;
    errno = 0;
    *v = strtol(s, NULL, 10);
    return errno == 0 && *v < CNN_MAX_CLASSES;
}

cnn_status cnn_source_from_csv(const char *path, cnn_source **out)
{
    *out = NULL;
    if (!path || !path[0]) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_from_csv: no file");
    unsigned char *text = NULL;
    size_t len = 0;
    cnn_status st = cnn_read_file(path, MAX_CSV_BYTES, &text, &len);
    if (st != CNN_OK) return st;

    /* the folder that relative paths start from */
    char *base = dup_str(path);
    file_list fl = {0};
    char **label_text = NULL; /* per line, the label as written (names are resolved after all are read) */
    int64_t nlabel_text = 0;
    size_t label_text_cap = 0;
    char **names = NULL;
    int nnames = 0, numeric = -1;
    long max_label = -1;
    if (!base) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    char *slash = strrchr(base, '/');
    if (slash) *slash = '\0'; /* "" for a list in "/": join() then gives "/file" */
    else strcpy(base, ".");   /* base holds at least 1 character + NUL here: path is not empty */

    int line = 0;
    for (char *p = (char *)text; p && *p;) {
        line++;
        char *next = strchr(p, '\n');
        if (next) *next = '\0';
        char *l = p;
        p = next ? next + 1 : NULL;
        size_t ll = strlen(l);
        while (ll && l[ll - 1] == '\r') l[--ll] = '\0';
        char *t = trim(l);
        if (!*t || *t == '#') continue;
        if (fl.n == 0 && !label_text && !strcmp(t, "path,label")) continue; /* the header */
        int bad;
        char *q = l;
        while (*q == ' ' || *q == '\t') q++;
        char *file = csv_field(&q, &bad);
        if (!file) {
            st = bad ? cnn_error(CNN_ERR_FORMAT, "%s:%d: a quote is not closed", path, line)
                     : cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
            goto fail;
        }
        while (*q == ' ' || *q == '\t') q++;
        if (*q != ',' || !file[0]) {
            free(file);
            st = cnn_error(CNN_ERR_FORMAT, "%s:%d: expected 'path,label'", path, line);
            goto fail;
        }
        q++;
        while (*q == ' ' || *q == '\t') q++;
        char *label = csv_field(&q, &bad);
        if (!label) {
            free(file);
            st = bad ? cnn_error(CNN_ERR_FORMAT, "%s:%d: a quote is not closed", path, line)
                     : cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
            goto fail;
        }
        char *lt = trim(label);
        if (!*lt || *trim(q)) {
            st = cnn_error(CNN_ERR_FORMAT, "%s:%d: expected 'path,label' (%s)", path, line,
                           *lt ? "more than two fields" : "no label");
            free(file);
            free(label);
            goto fail;
        }
        long v;
        int is_num = parse_label_int(lt, &v);
        if (numeric < 0) numeric = is_num;
        if (numeric != is_num) {
            st = cnn_error(CNN_ERR_FORMAT, "%s:%d: label '%s' is %s, but the first label is %s: use class indices "
                           "(0, 1, ...) or class names throughout", path, line, lt, is_num ? "a number" : "a name",
                           numeric ? "a number" : "a name");
            free(file);
            free(label);
            goto fail;
        }
        char *full = file[0] == '/' ? dup_str(file) : join(base, file);
        free(file);
        if (!full) {
            free(label);
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
            goto fail;
        }
        if (is_num && v > max_label) max_label = v;
        if ((st = file_list_add(&fl, full, is_num ? (int32_t)v : -1)) != CNN_OK) {
            free(label);
            goto fail;
        }
        if (!is_num) {
            st = cnn_array_grow(&label_text, &label_text_cap, (size_t)nlabel_text + 1, sizeof *label_text, 1024);
            if (st != CNN_OK) {
                free(label);
                goto fail;
            }
            memmove(label, lt, strlen(lt) + 1);
            label_text[nlabel_text++] = label;
        } else {
            free(label);
        }
    }
    if (fl.n == 0) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: no 'path,label' lines", path);
        goto fail;
    }
    int classes;
    if (numeric) {
        classes = (int)max_label + 1;
    } else {
        /* class names: sorted, unique; labels are their indices */
        names = malloc((size_t)fl.n * sizeof *names);
        if (!names) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
            goto fail;
        }
        memcpy(names, label_text, (size_t)fl.n * sizeof *names);
        qsort(names, (size_t)fl.n, sizeof *names, cmp_str);
        for (int64_t i = 0; i < fl.n; i++)
            if (!nnames || strcmp(names[nnames - 1], names[i])) names[nnames++] = names[i];
        if (nnames > CNN_MAX_CLASSES) {
            st = cnn_error(CNN_ERR_FORMAT, "%s: %d class names (at most %d)", path, nnames, CNN_MAX_CLASSES);
            goto fail;
        }
        for (int64_t i = 0; i < fl.n; i++) {
            char **hit = bsearch(&label_text[i], names, (size_t)nnames, sizeof *names, cmp_str);
            fl.labels[i] = (int32_t)(hit - names);
        }
        classes = nnames;
    }
    st = source_from_list(&fl, numeric ? NULL : names, classes, 0, out);
fail:
    cnn_free_strings(label_text, nlabel_text);
    free(names);
    file_list_free(&fl);
    free(base);
    free(text);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// named sources

static int spec_is(const char *spec, const char *kind, const char **arg)
{
    size_t len = strlen(kind);
    if (strncmp(spec, kind, len) || spec[len] != ':') return 0;
    *arg = spec + len + 1;
    return 1;
}

/* DIR/train and DIR/test (or DIR/val) of a folder spec; both NULL when DIR is only a training set. */
static cnn_status folder_splits(const char *dir, char **train, char **test)
{
    *train = join(dir, "train");
    *test = join(dir, "test");
    if (!*train || !*test) goto oom;
    if (!is_dir(*test)) {
        free(*test);
        if (!(*test = join(dir, "val"))) goto oom;
    }
    if (is_dir(*train) && is_dir(*test)) return CNN_OK;
    free(*train);
    free(*test);
    *train = *test = NULL;
    return CNN_OK;
oom:
    free(*train);
    free(*test);
    *train = *test = NULL;
    return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
}

int cnn_source_has_split(const char *spec, const char *split)
{
    const char *arg;
    if (!spec || !split) return 0;
    int test = !strcmp(split, "test");
    if (!test && strcmp(split, "train")) return 0;
    if (spec_is(spec, "csv", &arg)) return !test;
    if (spec_is(spec, "folder", &arg)) {
        if (!test) return 1;
        char *tr, *te;
        if (folder_splits(arg, &tr, &te) != CNN_OK) return 0;
        int has = tr != NULL;
        free(tr);
        free(te);
        return has;
    }
    return 1;
}

cnn_status cnn_source_open(const char *spec, const char *split, cnn_source **out)
{
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_open: no output");
    *out = NULL;
    if (!spec || !split) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_open: missing dataset or split");
    int test = !strcmp(split, "test");
    if (!test && strcmp(split, "train"))
        return cnn_error(CNN_ERR_INVALID_ARG, "unknown split '%s' (use train or test)", split);
    const char *arg;
    if (spec_is(spec, "csv", &arg)) {
        if (test)
            return cnn_error(CNN_ERR_NOT_FOUND, "'%s' is a training list; give the test list as its own csv:FILE",
                             spec);
        return cnn_source_from_csv(arg, out);
    }
    if (spec_is(spec, "folder", &arg)) {
        if (!arg[0]) return cnn_error(CNN_ERR_INVALID_ARG, "dataset '%s': empty folder after ':'", spec);
        if (!is_dir(arg)) return cnn_error(CNN_ERR_NOT_FOUND, "%s: no such folder", arg);
        char *tr, *te;
        cnn_status st = folder_splits(arg, &tr, &te);
        if (st != CNN_OK) return st;
        if (!tr && test) {
            return cnn_error(CNN_ERR_NOT_FOUND, "%s has no test split (a folder with train/ and test/ or val/ "
                             "sub-folders has one)", arg);
        }
        st = cnn_source_from_folder(tr ? (test ? te : tr) : arg, out);
        free(tr);
        free(te);
        return st;
    }
    cnn_dataset *ds = NULL;
    cnn_status st = cnn_dataset_load(spec, split, &ds);
    if (st != CNN_OK) return st;
    st = cnn_source_from_dataset(ds, 1, out);
    if (st != CNN_OK) cnn_dataset_destroy(ds);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// limiting

/* A new dataset of samples [first, first + n) of ds, with its class names. */
static cnn_status dataset_range(const cnn_dataset *ds, int64_t first, int64_t n, cnn_dataset **out)
{
    const size_t per = (size_t)ds->h * (size_t)ds->w * (size_t)ds->c;
    cnn_dataset *d = calloc(1, sizeof *d);
    if (!d) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for a dataset");
    *d = (cnn_dataset){.n = n, .h = ds->h, .w = ds->w, .c = ds->c, .num_classes = ds->num_classes};
    const size_t size = ds->pixels ? 1 : sizeof *d->images; /* 8-bit pixels or f32 values */
    if (ds->pixels) d->pixels = malloc(n ? (size_t)n * per : 1);
    else d->images = malloc(n ? (size_t)n * per * size : 1);
    d->labels = malloc(n ? (size_t)n * sizeof *d->labels : 1);
    int ok = (d->images || d->pixels) && d->labels;
    if (ok && ds->class_names && ds->num_classes > 0) {
        ok = (d->class_names = calloc((size_t)ds->num_classes, sizeof *d->class_names)) != NULL;
        for (int c = 0; ok && c < ds->num_classes; c++)
            ok = (d->class_names[c] = dup_str(ds->class_names[c] ? ds->class_names[c] : "")) != NULL;
    }
    if (!ok) {
        cnn_dataset_destroy(d);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for %lld samples", (long long)n);
    }
    memcpy(ds->pixels ? (void *)d->pixels : (void *)d->images,
           ds->pixels ? (const void *)(ds->pixels + (size_t)first * per) : (const void *)(ds->images + (size_t)first * per),
           (size_t)n * per * size);
    memcpy(d->labels, ds->labels + first, (size_t)n * sizeof *d->labels);
    *out = d;
    return CNN_OK;
}

cnn_status cnn_source_limit(cnn_source *src, int64_t n)
{
    if (!src || n < 0) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_limit: no source, or a count below 0");
    if (n >= src->n) return CNN_OK;
    if (src->ds && !src->own_ds) {
        cnn_dataset *copy = NULL;
        cnn_status st = dataset_range(src->ds, 0, n, &copy);
        if (st != CNN_OK) return st;
        src->ds = copy;
        src->own_ds = 1;
    } else if (src->ds) {
        /* ours: cut short in place, and give the memory of the rest back (a failed shrink keeps the larger block) */
        const size_t per = (size_t)src->ds->h * (size_t)src->ds->w * (size_t)src->ds->c;
        if (src->ds->pixels) {
            uint8_t *pixels = realloc(src->ds->pixels, n ? (size_t)n * per : 1);
            if (pixels) src->ds->pixels = pixels;
        } else {
            float *images = realloc(src->ds->images, n ? (size_t)n * per * sizeof *images : 1);
            if (images) src->ds->images = images;
        }
        int32_t *labels = realloc(src->ds->labels, n ? (size_t)n * sizeof *labels : 1);
        if (labels) src->ds->labels = labels;
        src->ds->n = n;
    }
    if (src->paths)
        for (int64_t i = n; i < src->n; i++) free(src->paths[i]);
    src->n = n;
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// splitting

/* The samples idx[0..count) of a file source. */
static cnn_status subset_files(const cnn_source *src, const int64_t *idx, int64_t count, cnn_source **out)
{
    file_list fl = {0};
    for (int64_t i = 0; i < count; i++) {
        char *p = dup_str(src->paths[idx[i]]);
        cnn_status st = p ? file_list_add(&fl, p, src->labels[idx[i]]) : cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
        if (st != CNN_OK) {
            file_list_free(&fl);
            return st;
        }
    }
    return source_from_list(&fl, src->class_names, src->num_classes, 0, out);
}

cnn_status cnn_source_range(const cnn_source *src, int64_t first, int64_t count, cnn_source **out)
{
    *out = NULL;
    if (!src || first < 0 || count < 0 || first > src->n || count > src->n - first)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_range: samples [%lld, %lld) of a source of %lld",
                         (long long)first, (long long)(first + count), (long long)(src ? src->n : 0));
    cnn_status st = CNN_OK;
    if (src->ds) {
        cnn_dataset *copy = NULL;
        if ((st = dataset_range(src->ds, first, count, &copy)) != CNN_OK) return st;
        if ((st = cnn_source_from_dataset(copy, 1, out)) != CNN_OK) cnn_dataset_destroy(copy);
        return st;
    }
    int64_t *idx = malloc((count ? (size_t)count : 1) * sizeof *idx);
    if (!idx) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < count; i++) idx[i] = first + i;
    st = subset_files(src, idx, count, out);
    free(idx);
    return st;
}

cnn_status cnn_source_split(const cnn_source *src, double fraction, uint64_t seed, cnn_source **train,
                            cnn_source **val)
{
    if (!train || !val) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_split: no output");
    *train = *val = NULL;
    if (!src) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_source_split: no source");
    cnn_status st = CNN_OK;
    int64_t *idx = NULL;
    if (src->ds) {
        cnn_dataset *t = NULL, *v = NULL;
        CNN_TRY(cnn_dataset_split(src->ds, fraction, seed, &t, &v));
        if ((st = cnn_source_from_dataset(t, 1, train)) != CNN_OK) {
            cnn_dataset_destroy(t);
            cnn_dataset_destroy(v);
            return st;
        }
        if ((st = cnn_source_from_dataset(v, 1, val)) != CNN_OK) {
            cnn_dataset_destroy(v);
            cnn_source_destroy(*train);
            *train = NULL;
            return st;
        }
        /* a subset may lack the top classes; the class count stays the whole set's */
        (*train)->num_classes = (*val)->num_classes = src->num_classes;
        return CNN_OK;
    }
    idx = malloc((src->n ? (size_t)src->n : 1) * sizeof *idx);
    if (!idx) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for %lld indices", (long long)src->n);
    int64_t ntrain = 0;
    CNN_TRY(cnn_split_stratified(src->labels, src->n, fraction, seed, idx, &ntrain));
    CNN_TRY(subset_files(src, idx, ntrain, train));
    CNN_TRY(subset_files(src, idx + ntrain, src->n - ntrain, val));
    free(idx);
    return CNN_OK;
fail:
    free(idx);
    cnn_source_destroy(*train);
    *train = NULL;
    return st;
}
