/* The model server's config file (cnn serve --model-config): which models it serves, where their versions are,
 * which versions to serve (the version policy) and names for versions (labels). JSON, with TensorFlow Serving's
 * model_config_list vocabulary:
 *
 *   {"model_config_list": [
 *     {"name": "fashion", "base_path": "models/fashion",
 *      "model_version_policy": {"latest": {"num_versions": 2}},
 *      "version_labels": {"stable": 1, "canary": 2}},
 *     {"name": "digits", "base_path": "/srv/digits", "model_version_policy": {"specific": {"versions": [3, 5]}}},
 *     {"name": "all", "base_path": "x", "model_version_policy": {"all": {}}}]}
 *
 * Every key is checked: an unknown one, a wrong type, a duplicate model, or a value out of range is an error naming
 * the model and the key (a key given twice in an object, a label among them, is the JSON parser's error). A relative base_path is taken from the config file's folder. No network and
 * no model here: it is fuzzed (tests/fuzz/fuzz_serve_config.c). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/serve/serve.h"

#define MAX_MODELS 256
#define MAX_LABELS 64
#define MAX_SPECIFIC 1024
#define MAX_LATEST 1024
#define MAX_NAME 128
#define MAX_BASE_PATH 4096
#define MAX_VERSION 999999999999999999LL /* below 10^18: what the paths can say */

void cnn_serve_model_config_free(cnn_serve_model_config *c)
{
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        cnn_serve_model_spec *m = &c->models[i];
        free(m->name);
        free(m->base_path);
        free(m->versions);
        for (int j = 0; j < m->nlabels; j++) free(m->labels[j].name);
        free(m->labels);
    }
    free(c->models);
    c->models = NULL;
    c->n = 0;
}

/* A name for models and labels: 1 to MAX_NAME bytes of letters, digits, '_', '-' and '.' (never a path). */
static int good_name(const char *s, size_t len)
{
    if (len == 0 || len > MAX_NAME || strlen(s) != len) return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

/* The keys of `obj` must be among `allowed` (NULL-terminated); the first one that is not is named. */
static cnn_status only_keys(const cnn_json *obj, const char *const *allowed, const char *where)
{
    for (size_t i = 0; i < cnn_json_count(obj); i++) {
        size_t len;
        const char *key = cnn_json_key_at(obj, i, &len);
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = strlen(*a) == len && !memcmp(*a, key, len);
        if (!ok) {
            cnn_strbuf list;
            cnn_strbuf_init(&list);
            for (const char *const *a = allowed; *a; a++) cnn_strbuf_appendf(&list, "%s%s", a == allowed ? "" : ", ", *a);
            cnn_status st = cnn_error(CNN_ERR_FORMAT, "%s: unknown key '%.64s' (the keys are %s)", where, key,
                                      list.data ? list.data : "");
            cnn_strbuf_free(&list);
            return st;
        }
    }
    return CNN_OK;
}

static cnn_status version_of(const cnn_json *v, const char *where, int64_t *out)
{
    if (!cnn_json_int64(v, out) || *out < 0 || *out > MAX_VERSION)
        return cnn_error(CNN_ERR_FORMAT, "%s: a version must be an integer from 0 to 10^18 - 1", where);
    return CNN_OK;
}

static cnn_status parse_policy(const cnn_json *p, cnn_serve_model_spec *m, const char *where)
{
    static const char *const kinds[] = {"latest", "all", "specific", NULL};
    char at[512];
    cnn_status st;
    if (cnn_json_type_of(p) != CNN_JSON_OBJECT || cnn_json_count(p) != 1)
        return cnn_error(CNN_ERR_FORMAT, "%s: model_version_policy must be an object with one of latest, all, "
                         "specific", where);
    CNN_TRY(only_keys(p, kinds, where));
    const cnn_json *latest = cnn_json_get(p, "latest"), *specific = cnn_json_get(p, "specific");
    if (latest) {
        static const char *const keys[] = {"num_versions", NULL};
        snprintf(at, sizeof at, "%s: model_version_policy.latest", where);
        if (cnn_json_type_of(latest) != CNN_JSON_OBJECT)
            return cnn_error(CNN_ERR_FORMAT, "%s must be an object", at);
        CNN_TRY(only_keys(latest, keys, at));
        int64_t n = 1;
        const cnn_json *nv = cnn_json_get(latest, "num_versions");
        if (nv && (!cnn_json_int64(nv, &n) || n < 1 || n > MAX_LATEST))
            return cnn_error(CNN_ERR_FORMAT, "%s.num_versions must be an integer from 1 to %d", at, MAX_LATEST);
        m->policy = CNN_SERVE_POLICY_LATEST;
        m->latest = (int)n;
    } else if (specific) {
        static const char *const keys[] = {"versions", NULL};
        snprintf(at, sizeof at, "%s: model_version_policy.specific", where);
        if (cnn_json_type_of(specific) != CNN_JSON_OBJECT)
            return cnn_error(CNN_ERR_FORMAT, "%s must be an object", at);
        CNN_TRY(only_keys(specific, keys, at));
        const cnn_json *list = cnn_json_get(specific, "versions");
        size_t n = cnn_json_count(list);
        if (cnn_json_type_of(list) != CNN_JSON_ARRAY || n < 1 || n > MAX_SPECIFIC)
            return cnn_error(CNN_ERR_FORMAT, "%s.versions must be an array of 1 to %d versions", at, MAX_SPECIFIC);
        m->versions = malloc(n * sizeof *m->versions);
        if (!m->versions) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
        for (size_t i = 0; i < n; i++) {
            snprintf(at, sizeof at, "%s: model_version_policy.specific.versions[%zu]", where, i);
            CNN_TRY(version_of(cnn_json_at(list, i), at, &m->versions[i]));
            for (size_t j = 0; j < i; j++)
                if (m->versions[j] == m->versions[i])
                    return cnn_error(CNN_ERR_FORMAT, "%s: version %lld is listed twice", at,
                                     (long long)m->versions[i]);
            m->nversions = (int)i + 1;
        }
        m->policy = CNN_SERVE_POLICY_SPECIFIC;
    } else {
        const cnn_json *all = cnn_json_get(p, "all");
        if (cnn_json_type_of(all) != CNN_JSON_OBJECT || cnn_json_count(all) != 0)
            return cnn_error(CNN_ERR_FORMAT, "%s: model_version_policy.all must be an empty object {}", where);
        m->policy = CNN_SERVE_POLICY_ALL;
    }
    return CNN_OK;
fail:
    return st;
}

static cnn_status parse_labels(const cnn_json *l, cnn_serve_model_spec *m, const char *where)
{
    size_t n = cnn_json_count(l);
    if (cnn_json_type_of(l) != CNN_JSON_OBJECT || n > MAX_LABELS)
        return cnn_error(CNN_ERR_FORMAT, "%s: version_labels must be an object of at most %d labels, each "
                         "\"label\": version", where, MAX_LABELS);
    if (n == 0) return CNN_OK;
    m->labels = calloc(n, sizeof *m->labels);
    if (!m->labels) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *name = cnn_json_key_at(l, i, &len);
        char at[512];
        if (!good_name(name, len))
            return cnn_error(CNN_ERR_FORMAT, "%s: version label '%.64s': a label is 1 to %d letters, digits, '_', '-' "
                             "or '.'", where, name, MAX_NAME);
        if (name[0] >= '0' && name[0] <= '9')
            return cnn_error(CNN_ERR_FORMAT, "%s: version label '%.64s' starts with a digit (it would read as a "
                             "version)", where, name);
        snprintf(at, sizeof at, "%s: version_labels.%s", where, name);
        cnn_status st = version_of(cnn_json_at(l, i), at, &m->labels[i].version);
        if (st != CNN_OK) return st;
        m->labels[i].name = strdup(name);
        if (!m->labels[i].name) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
        m->nlabels = (int)i + 1;
    }
    return CNN_OK;
}

/* base_path as given when absolute, else joined to `dir` (the config file's folder; NULL: as given). */
static char *resolve_path(const char *path, const char *dir)
{
    if (path[0] == '/' || !dir || !dir[0]) return strdup(path);
    size_t n = strlen(dir) + strlen(path) + 2;
    char *out = malloc(n);
    if (out) snprintf(out, n, "%s/%s", dir, path);
    return out;
}

static cnn_status parse_model(const cnn_json *e, size_t index, const char *dir, cnn_serve_model_spec *m)
{
    static const char *const keys[] = {"name", "base_path", "model_platform", "model_version_policy",
                                       "version_labels", NULL};
    char where[256];
    cnn_status st;
    snprintf(where, sizeof where, "model_config_list[%zu]", index);
    if (cnn_json_type_of(e) != CNN_JSON_OBJECT) return cnn_error(CNN_ERR_FORMAT, "%s must be an object", where);
    size_t len;
    const char *name = cnn_json_string(cnn_json_get(e, "name"), &len);
    if (!name || !good_name(name, len))
        return cnn_error(CNN_ERR_FORMAT, "%s: \"name\" must be 1 to %d letters, digits, '_', '-' or '.'", where,
                         MAX_NAME);
    snprintf(where, sizeof where, "model '%s'", name);
    CNN_TRY(only_keys(e, keys, where));
    const char *platform = cnn_json_string(cnn_json_get(e, "model_platform"), NULL);
    if (cnn_json_get(e, "model_platform") && (!platform || strcmp(platform, "cnn")))
        return cnn_error(CNN_ERR_FORMAT, "%s: model_platform must be \"cnn\" (the only one this server runs)", where);
    const char *base = cnn_json_string(cnn_json_get(e, "base_path"), &len);
    if (!base || len == 0 || len > MAX_BASE_PATH || strlen(base) != len)
        return cnn_error(CNN_ERR_FORMAT, "%s: \"base_path\" must be a path (a string of 1 to %d bytes)", where,
                         MAX_BASE_PATH);
    m->name = strdup(name);
    m->base_path = resolve_path(base, dir);
    if (!m->name || !m->base_path) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    m->policy = CNN_SERVE_POLICY_LATEST;
    m->latest = 1;
    const cnn_json *policy = cnn_json_get(e, "model_version_policy");
    if (policy) CNN_TRY(parse_policy(policy, m, where));
    const cnn_json *labels = cnn_json_get(e, "version_labels");
    if (labels) CNN_TRY(parse_labels(labels, m, where));
    return CNN_OK;
fail:
    return st;
}

cnn_status cnn_serve_parse_model_config(const char *text, size_t len, const char *dir, cnn_serve_model_config *out)
{
    static const char *const top_keys[] = {"model_config_list", NULL};
    memset(out, 0, sizeof *out);
    cnn_json *doc = NULL;
    cnn_status st = cnn_json_parse(text, len, &doc);
    if (st != CNN_OK) return st;
    const cnn_json *list = cnn_json_get(doc, "model_config_list");
    size_t n = cnn_json_count(list);
    if (cnn_json_type_of(doc) != CNN_JSON_OBJECT) {
        st = cnn_error(CNN_ERR_FORMAT, "the config must be a JSON object {\"model_config_list\": [...]}");
        goto fail;
    }
    CNN_TRY(only_keys(doc, top_keys, "the config"));
    if (cnn_json_type_of(list) != CNN_JSON_ARRAY || n < 1 || n > MAX_MODELS) {
        st = cnn_error(CNN_ERR_FORMAT, "\"model_config_list\" must be an array of 1 to %d models", MAX_MODELS);
        goto fail;
    }
    out->models = calloc(n, sizeof *out->models);
    if (!out->models) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        out->n = (int)i + 1;
        CNN_TRY(parse_model(cnn_json_at(list, i), i, dir, &out->models[i]));
        for (size_t j = 0; j < i; j++)
            if (!strcmp(out->models[j].name, out->models[i].name)) {
                st = cnn_error(CNN_ERR_FORMAT, "model '%s' is configured twice", out->models[i].name);
                goto fail;
            }
    }
    cnn_json_free(doc);
    return CNN_OK;
fail:
    cnn_json_free(doc);
    cnn_serve_model_config_free(out);
    return st;
}
