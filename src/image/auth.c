/*
 * auth.c - registry credentials in docker's config.json format:
 *   {"auths": {"HOST[:PORT]": {"auth": "<base64 of user:password>"}}}
 * The file (by default <state>/auth.json, mode 0600) is written by `hedge
 * login` and read by pulls; other keys of the file are kept as they are, so
 * a docker or podman auth file can be used with --authfile.
 *
 * base64 lives here because nothing else in hedge needs it yet; when a second
 * user appears it moves to base/.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "image/image.h"
#include "image/registry.h"

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const char *data, size_t len)
{
    char *out = hd_xmalloc(4 * ((len + 2) / 3) + 1), *p = out;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned char)data[i] << 16;
        if (i + 1 < len)
            v |= (unsigned char)data[i + 1] << 8;
        if (i + 2 < len)
            v |= (unsigned char)data[i + 2];
        *p++ = b64_chars[(v >> 18) & 63];
        *p++ = b64_chars[(v >> 12) & 63];
        *p++ = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
        *p++ = i + 2 < len ? b64_chars[v & 63] : '=';
    }
    *p = '\0';
    return out;
}

/* Decode base64 (padding optional); NULL on a character outside the alphabet. */
static char *base64_decode(const char *s)
{
    size_t len = strlen(s);
    char *out = hd_xmalloc(len / 4 * 3 + 4), *p = out;
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < len && s[i] != '='; i++) {
        const char *c = strchr(b64_chars, s[i]);
        if (c == NULL || *c == '\0') {
            free(out);
            return NULL;
        }
        v = (v << 6) | (unsigned)(c - b64_chars);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *p++ = (char)((v >> bits) & 0xff);
        }
    }
    *p = '\0';
    return out;
}

char *hd_registry_auth_default_file(const char *state_dir)
{
    return hd_xasprintf("%s/auth.json", state_dir);
}

int registry_auth_lookup(const char *auth_file, const char *host, char **user, char **password, hd_error_t *err)
{
    *user = *password = NULL;
    if (auth_file == NULL || access(auth_file, F_OK) < 0)
        return 0; /* no file: anonymous */
    json_error_t jerr;
    json_t *doc = json_load_file(auth_file, 0, &jerr);
    if (doc == NULL)
        return hd_error_set(err, 0, "%s: line %d: %s", auth_file, jerr.line, jerr.text);
    int ret = 0;
    json_t *entry = json_object_get(json_object_get(doc, "auths"), host);
    const char *auth = json_string_value(json_object_get(entry, "auth"));
    if (auth) {
        cleanup_free char *plain = base64_decode(auth);
        char *colon = plain ? strchr(plain, ':') : NULL;
        if (colon == NULL) {
            ret = hd_error_set(err, 0, "%s: auths.\"%s\".auth: not base64 of user:password", auth_file, host);
        } else {
            *user = hd_xasprintf("%.*s", (int)(colon - plain), plain);
            *password = hd_xstrdup(colon + 1);
        }
    }
    json_decref(doc);
    return ret;
}

static int registry_auth_store(const char *auth_file, const char *host, const char *user, const char *password,
                               hd_error_t *err)
{
    json_t *doc = NULL;
    if (access(auth_file, F_OK) == 0) {
        json_error_t jerr;
        doc = json_load_file(auth_file, 0, &jerr);
        if (!json_is_object(doc)) {
            json_decref(doc);
            return hd_error_set(err, 0, "%s: line %d: %s", auth_file, jerr.line, jerr.text);
        }
    } else {
        doc = json_object();
    }
    json_t *auths = json_object_get(doc, "auths");
    if (!json_is_object(auths)) {
        auths = json_object();
        json_object_set_new(doc, "auths", auths);
    }
    cleanup_free char *pair = hd_xasprintf("%s:%s", user, password);
    cleanup_free char *encoded = base64_encode(pair, strlen(pair));
    json_object_set_new(auths, host, json_pack("{ss}", "auth", encoded));
    cleanup_free char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(doc);
    size_t len = strlen(text);
    cleanup_free char *copy = hd_xasprintf("%s\n", text);
    /* the file holds passwords: 0600 from its creation on */
    mode_t old = umask(077);
    int ret = hd_write_file_atomic(auth_file, copy, len + 1, err);
    umask(old);
    if (ret == 0 && chmod(auth_file, 0600) < 0)
        ret = hd_error_sys(err, "chmod %s", auth_file);
    return ret;
}

int hd_registry_login(const char *auth_file, const char *host, const char *user, const char *password,
                      const struct hd_image_pull_options *opts, hd_error_t *err)
{
    bool insecure = false;
    for (size_t i = 0; opts && opts->insecure && opts->insecure[i]; i++)
        insecure = insecure || strcmp(opts->insecure[i], host) == 0;
    struct registry r;
    int ret = registry_open(&r, host, "", insecure, opts ? opts->ca_file : NULL, err);
    if (ret == 0) {
        r.user = hd_xstrdup(user);
        r.password = hd_xstrdup(password);
        ret = registry_check(&r, err);
    }
    registry_close(&r);
    if (ret == 0)
        ret = registry_auth_store(auth_file, host, user, password, err);
    if (ret < 0)
        hd_error_prefix(err, "login %s", host);
    return ret;
}
