/* Options whose values are named by a table of strings in the order of their enum (--optimizer adam, --lr-schedule
 * cosine, ...): the table is searched and indexed here, and CNN_NAME_TABLE_FUNCTIONS writes the option's parse and
 * name functions from it. */
#ifndef CNN_CORE_NAMES_H
#define CNN_CORE_NAMES_H

#include <stdint.h>
#include <string.h>

#include "core/error.h"

/* The index of `name` among names[0..n) (NULL entries name nothing), or -1 when it is none of them or NULL. */
static inline int cnn_name_index(const char *const *names, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (names[i] && !strcmp(name, names[i])) return i;
    return -1;
}

/* names[i], or "?" when i is outside [0, n) or names[i] is NULL. */
static inline const char *cnn_name_at(const char *const *names, int n, int64_t i)
{
    return i >= 0 && i < n && names[i] ? names[i] : "?";
}

/* Defines the parse and name functions of an option of type `type` (an enum, or int) whose values are the indices
 * of the array `names`:
 *     cnn_status parse(const char *name, type *out): the value named `name`; for any other text (or NULL)
 *         CNN_ERR_INVALID_ARG "'NAME' is not one of CHOICES" (`choices`: a string literal), *out unchanged;
 *     const char *name_of(type v): the name of v; "?" for a value the table does not name. */
#define CNN_NAME_TABLE_FUNCTIONS(parse, name_of, type, names, choices)                                              \
    cnn_status parse(const char *name, type *out)                                                                 \
    {                                                                                                             \
        int i = cnn_name_index(names, (int)(sizeof names / sizeof *names), name);                                 \
        if (i < 0) return cnn_error(CNN_ERR_INVALID_ARG, "'%s' is not one of " choices, name ? name : "(none)"); \
        *out = (type)i;                                                                                           \
        return CNN_OK;                                                                                            \
    }                                                                                                             \
    const char *name_of(type v) { return cnn_name_at(names, (int)(sizeof names / sizeof *names), (int64_t)v); }

#endif
