/*
 * json.c - typed JSON field readers with field paths in their errors (json.h).
 *
 * Every error is a plain hedge error (exit code 125); a caller whose errors
 * are usage errors (the uplink's config) changes the code where it returns.
 */
#include "base/json.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

const char *hd_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

char *hd_json_path(const char *parent, const char *key)
{
    if (parent == NULL || parent[0] == '\0')
        return hd_xstrdup(key);
    return hd_xasprintf("%s.%s", parent, key);
}

int hd_json_type_error(const json_t *v, const char *path, const char *want, hd_error_t *err)
{
    return hd_error_set(err, 0, "%s: must be %s, not %s", path, want, hd_json_type_name(v));
}

/* The "want" wording: "PATH: must be WANT". */
static int want_error(const char *path, const char *want, hd_error_t *err)
{
    return hd_error_set(err, 0, "%s: must be %s", path, want);
}

int hd_json_object(const json_t *v, const char *path, const char *want, hd_error_t *err)
{
    if (json_is_object(v))
        return 0;
    return want ? want_error(path, want, err) : hd_json_type_error(v, path, "an object", err);
}

int hd_json_check_keys(const json_t *obj, const char *path, const char *const known[], hd_error_t *err)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        size_t i = 0;
        while (known[i] && strcmp(known[i], key) != 0)
            i++;
        if (known[i] == NULL) {
            cleanup_free char *p = hd_json_path(path, key);
            return hd_error_set(err, 0, "%s: unknown field", p);
        }
    }
    return 0;
}

int hd_json_string(const json_t *v, const char *path, const char *want, bool non_empty, char **out, hd_error_t *err)
{
    if (!json_is_string(v) || (non_empty && json_string_length(v) == 0))
        return want             ? want_error(path, want, err)
            : json_is_string(v) ? hd_error_set(err, 0, "%s: must not be empty", path)
                                : hd_json_type_error(v, path, "a string", err);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return hd_error_set(err, 0, "%s: must not contain NUL characters", path);
    free(*out);
    *out = hd_xstrdup(json_string_value(v));
    return 0;
}

int hd_json_bool(const json_t *v, const char *path, const char *want, bool *out, hd_error_t *err)
{
    if (!json_is_boolean(v))
        return want ? want_error(path, want, err) : hd_json_type_error(v, path, "a boolean", err);
    *out = json_is_true(v);
    return 0;
}

int hd_json_int(const json_t *v, const char *path, int64_t min, int64_t max, const char *want, int64_t *out,
                hd_error_t *err)
{
    if (!json_is_integer(v))
        return want ? want_error(path, want, err) : hd_json_type_error(v, path, "an integer", err);
    json_int_t i = json_integer_value(v);
    if (i < min || i > max)
        return want ? want_error(path, want, err)
                    : hd_error_set(err, 0, "%s: %lld is out of range (%lld..%lld)", path, (long long)i, (long long)min,
                                   (long long)max);
    *out = i;
    return 0;
}

int hd_json_number(const json_t *v, const char *path, double min, double max, const char *want, double *out,
                   hd_error_t *err)
{
    if (!json_is_number(v))
        return want ? want_error(path, want, err) : hd_json_type_error(v, path, "a number", err);
    double d = json_number_value(v);
    if (!(d >= min && d <= max))
        return want ? want_error(path, want, err)
                    : hd_error_set(err, 0, "%s: %g is out of range (%g..%g)", path, d, min, max);
    *out = d;
    return 0;
}

int hd_json_size(const json_t *v, const char *path, int64_t min, const char *want, int64_t *out, hd_error_t *err)
{
    int64_t n;
    if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *text = json_string_value(v);
        if (hd_parse_size(text, &n) < 0)
            return want ? want_error(path, want, err)
                        : hd_error_set(err, 0, "%s: \"%s\" is not a size (use K, M or G)", path, text);
    } else {
        return want ? want_error(path, want, err)
                    : hd_json_type_error(v, path, "a size (\"64M\") or an integer of bytes", err);
    }
    if (n < min) {
        if (want)
            return want_error(path, want, err);
        if (n < 0)
            return hd_error_set(err, 0, "%s: %lld is negative", path, (long long)n);
        return hd_error_set(err, 0, "%s: %lld is less than %lld", path, (long long)n, (long long)min);
    }
    *out = n;
    return 0;
}

int hd_json_strv(const json_t *v, const char *path, const char *want, char ***out, hd_error_t *err)
{
    if (!json_is_array(v))
        return want ? want_error(path, want, err) : hd_json_type_error(v, path, "an array of strings", err);
    char **strv = hd_xcalloc(json_array_size(v) + 1, sizeof(char *));
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item)) {
            hd_strv_free(strv);
            cleanup_free char *p = hd_xasprintf("%s[%zu]", path, i);
            return want ? want_error(p, want, err) : hd_json_type_error(item, p, "a string", err);
        }
        strv[i] = hd_xstrdup(json_string_value(item));
    }
    hd_strv_free(*out);
    *out = strv;
    return 0;
}
