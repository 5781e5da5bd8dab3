/*
 * json.h - typed readers for JSON documents (over jansson), shared by every
 * parser of hedge's JSON: the workload spec, hedged's config, the uplink's
 * config, the broker section.
 *
 * Every reader takes the field's path ("resources.memory", "uplink.cloud.port")
 * and names it in its error, so a person reads "resources.memory: \"64Q\" is
 * not a size (use K, M or G)". Two wordings:
 *   want == NULL: the reader says what it expected and what it got
 *                 ("must be a string, not an integer", "0 is out of range (1..1024)");
 *   want != NULL: any failure reads "PATH: must be WANT" (configuration files
 *                 phrase the expected value once: "a number of seconds in 0..3600").
 * Readers replace *out only on success (strings and arrays free the old value).
 * Unknown fields are errors: hd_json_check_keys refuses keys outside a list.
 */
#ifndef HEDGE_JSON_H
#define HEDGE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

/* "an object", "a string", "an integer", ... for messages. */
const char *hd_json_type_name(const json_t *v);
/* "parent.key", or "key" when parent is NULL or empty. Caller frees. */
char *hd_json_path(const char *parent, const char *key);
/* "PATH: must be WANT, not TYPE" (want without "a"/"an" is fine: it is quoted as given). */
int hd_json_type_error(const json_t *v, const char *path, const char *want, hd_error_t *err);

/* The value must be an object ("PATH: must be an object, not ..."). */
int hd_json_object(const json_t *v, const char *path, const char *want, hd_error_t *err);
/* Refuse any key of obj not in known (NULL-terminated): "PATH.KEY: unknown field" (or "KEY: ..."). */
int hd_json_check_keys(const json_t *obj, const char *path, const char *const known[], hd_error_t *err);

/* A string without NUL characters; non_empty refuses "". */
int hd_json_string(const json_t *v, const char *path, const char *want, bool non_empty, char **out, hd_error_t *err);
int hd_json_bool(const json_t *v, const char *path, const char *want, bool *out, hd_error_t *err);
/* An integer in min..max. */
int hd_json_int(const json_t *v, const char *path, int64_t min, int64_t max, const char *want, int64_t *out,
                hd_error_t *err);
/* Any number (integer or real) in min..max. */
int hd_json_number(const json_t *v, const char *path, double min, double max, const char *want, double *out,
                   hd_error_t *err);
/* A size: an integer of bytes or a string with a K/M/G suffix ("64M"), at least min. */
int hd_json_size(const json_t *v, const char *path, int64_t min, const char *want, int64_t *out, hd_error_t *err);
/* An array of strings, as a NULL-terminated strv. */
int hd_json_strv(const json_t *v, const char *path, const char *want, char ***out, hd_error_t *err);

#endif
