/*
 * registry.c - the OCI distribution API over libcurl: GET a manifest (with
 * the Accept list every registry understands), GET a blob into a file.
 *
 * Every byte is checked as it arrives: a blob's sha256 is computed in the
 * write callback (base/digest.h) and the transfer is cut as soon as the
 * registry sends more than the descriptor's size, so a wrong or endless blob
 * costs at most size bytes of disk. A manifest is held in memory (at most
 * MANIFEST_MAX_BYTES) and hashed whole.
 *
 * Plain HTTP is used only for a registry the caller lists as insecure; every
 * other registry is HTTPS, verified against the system CA store or the given
 * CA file. Redirects (blob stores behind a registry) are followed over http
 * and https only.
 *
 * Authentication: a 401's WWW-Authenticate challenge is answered once: Basic
 * with the credentials (from the auth file, auth.c), Bearer with a token
 * fetched from the challenge's realm (registry_fetch_token); every later
 * request of the pull sends the same.
 *
 * Resume: a blob downloads into a partial file the caller keeps across pulls;
 * a transfer cut short (connection lost, registry gone) leaves its bytes
 * there, and the next download hashes them and asks for the rest with
 * Range: bytes=N-. A registry that answers 200 instead of 206 sends the whole
 * blob again, which replaces the partial bytes.
 */
#include "image/registry.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/digest.h"
#include "base/util.h"
#include "image/curl_lazy.h"

#define MANIFEST_MAX_BYTES (4 * 1024 * 1024)
#define CONNECT_TIMEOUT_S 30L
#define LOW_SPEED_TIME_S 60L

static const char accept_manifests[] =
    "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";

int registry_open(struct registry *r, const char *host, const char *repository, bool insecure, const char *ca_file,
                  hd_error_t *err)
{
    memset(r, 0, sizeof(*r));
    if (hd_curl_load(err) < 0)
        return -1;
    r->curl = curl_easy_init();
    if (r->curl == NULL)
        return hd_error_set(err, ENOMEM, "curl_easy_init");
    r->host = hd_xstrdup(host);
    r->base = hd_xasprintf("%s://%s", insecure ? "http" : "https", host);
    r->repository = hd_xstrdup(repository);
    r->ca_file = ca_file ? hd_xstrdup(ca_file) : NULL;
    return 0;
}

int registry_clone(const struct registry *from, struct registry *to, hd_error_t *err)
{
    if (registry_open(to, from->host, from->repository, strncmp(from->base, "http://", 7) == 0, from->ca_file, err) < 0)
        return -1;
    to->user = from->user ? hd_xstrdup(from->user) : NULL;
    to->password = from->password ? hd_xstrdup(from->password) : NULL;
    to->bearer = from->bearer ? hd_xstrdup(from->bearer) : NULL;
    to->use_basic = from->use_basic;
    to->on_bytes = from->on_bytes;
    to->on_bytes_arg = from->on_bytes_arg;
    return 0;
}

void registry_close(struct registry *r)
{
    if (r->curl)
        curl_easy_cleanup(r->curl);
    free(r->host);
    free(r->base);
    free(r->repository);
    free(r->ca_file);
    free(r->user);
    free(r->password);
    free(r->bearer);
    memset(r, 0, sizeof(*r));
}

void registry_manifest_free(struct registry_manifest *m)
{
    free(m->body);
    free(m->media_type);
    memset(m, 0, sizeof(*m));
}

/* Where the bytes of one response go. */
struct response {
    /* body to memory (manifests, error documents) */
    char *buf;
    size_t len, cap, max;
    /* or body to a file (blobs), hashed on the way */
    int fd;
    struct hd_sha256 md;
    int64_t offset;       /* bytes already in the file (a resumed download): the Range start */
    int64_t got, limit;   /* limit < 0: none */
    bool cut;             /* the transfer broke off after a good start: keep the bytes */
    struct registry *reg; /* for on_bytes (blob downloads) */
    bool too_long;
    int write_errno;
    long status;
    char *content_type;
    char *challenge; /* WWW-Authenticate */
};

static size_t response_header(char *data, size_t size, size_t n, void *arg)
{
    struct response *resp = arg;
    size_t len = size * n;
    static const char key[] = "content-type:", auth_key[] = "www-authenticate:";
    if (len > sizeof(auth_key) - 1 && strncasecmp(data, auth_key, sizeof(auth_key) - 1) == 0) {
        const char *v = data + sizeof(auth_key) - 1;
        size_t vlen = len - (sizeof(auth_key) - 1);
        while (vlen && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        free(resp->challenge);
        resp->challenge = hd_xasprintf("%.*s", (int)vlen, v);
    }
    if (len > sizeof(key) - 1 && strncasecmp(data, key, sizeof(key) - 1) == 0) {
        const char *v = data + sizeof(key) - 1;
        size_t vlen = len - (sizeof(key) - 1);
        while (vlen && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        const char *semi = memchr(v, ';', vlen);
        if (semi)
            vlen = (size_t)(semi - v);
        free(resp->content_type);
        resp->content_type = hd_xasprintf("%.*s", (int)vlen, v);
    }
    return len;
}

static size_t response_body(char *data, size_t size, size_t n, void *arg)
{
    struct response *resp = arg;
    size_t len = size * n;
    if (resp->fd >= 0 && (resp->status == 200 || resp->status == 206)) {
        if (resp->status == 200 && resp->offset > 0) {
            /* the registry ignored the Range: start over */
            if (ftruncate(resp->fd, 0) < 0) {
                resp->write_errno = errno;
                return 0;
            }
            hd_sha256_init(&resp->md);
            resp->offset = 0;
        }
        if (resp->limit >= 0 && resp->offset + resp->got + (int64_t)len > resp->limit) {
            resp->too_long = true;
            return 0; /* stops the transfer: CURLE_WRITE_ERROR */
        }
        hd_sha256_update(&resp->md, data, len);
        for (size_t off = 0; off < len;) {
            ssize_t w = write(resp->fd, data + off, len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                resp->write_errno = errno;
                return 0;
            }
            off += (size_t)w;
        }
        resp->got += (int64_t)len;
        if (resp->reg->on_bytes)
            resp->reg->on_bytes(resp->reg->on_bytes_arg, len);
        return len;
    }
    /* memory: a manifest, or the error document of a failed request */
    if (resp->len + len > resp->max) {
        resp->too_long = true;
        return 0;
    }
    if (resp->len + len + 1 > resp->cap) {
        resp->cap = (resp->len + len + 1) * 2;
        resp->buf = hd_xrealloc(resp->buf, resp->cap);
    }
    memcpy(resp->buf + resp->len, data, len);
    resp->len += len;
    resp->buf[resp->len] = '\0';
    return len;
}

/* libcurl gives the status only after the headers; the header callback sees the status line first. */
static size_t response_header_status(char *data, size_t size, size_t n, void *arg)
{
    struct response *resp = arg;
    size_t len = size * n;
    if (len > 9 && strncmp(data, "HTTP/", 5) == 0) {
        const char *sp = memchr(data, ' ', len);
        if (sp)
            resp->status = strtol(sp + 1, NULL, 10);
        /* a redirect's body and headers are not the answer's */
        free(resp->content_type);
        resp->content_type = NULL;
        return len;
    }
    return response_header(data, size, n, arg);
}

/* "UNKNOWN: ... " from a registry error document {"errors":[{"code","message"}]}, or NULL. */
static char *registry_error_text(const struct response *resp)
{
    if (resp->buf == NULL)
        return NULL;
    json_t *doc = json_loadb(resp->buf, resp->len, 0, NULL);
    json_t *first = json_array_get(json_object_get(doc, "errors"), 0);
    const char *code = json_string_value(json_object_get(first, "code"));
    const char *message = json_string_value(json_object_get(first, "message"));
    char *text = code ? hd_xasprintf("%s%s%s", code, message ? ": " : "", message ? message : "") : NULL;
    json_decref(doc);
    return text;
}

/* One GET of base + path into resp; fails on transport errors and any status other than 200. */
static int registry_get_once(struct registry *r, const char *path, const char *header, struct response *resp,
                             const char *what, hd_error_t *err)
{
    CURL *c = r->curl;
    cleanup_free char *url = hd_xasprintf("%s/v2/%s", r->base, path);
    struct curl_slist *headers = NULL;
    if (header)
        headers = curl_slist_append(headers, header);
    if (r->bearer)
        headers = curl_slist_append(headers, r->bearer);
    char curl_error[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "hedge");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME_S);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_error);
    if (r->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, r->ca_file);
    if (r->use_basic) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, r->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, r->password);
    }
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, response_header_status);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, response_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(headers);
    if (resp->write_errno)
        return hd_error_set(err, resp->write_errno, "%s: write", what);
    if (resp->too_long)
        return -1; /* the caller names the limit */
    if (rc != CURLE_OK) {
        resp->cut = resp->fd >= 0 && resp->got > 0;
        return hd_error_set(err, 0, "%s: %s: %s%s", what, url, curl_error[0] ? curl_error : curl_easy_strerror(rc),
                            resp->cut ? " (the bytes received are kept: pull again to resume)" : "");
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    resp->status = status;
    if (status == 200 || (status == 206 && resp->offset > 0))
        return 0;
    cleanup_free char *detail = registry_error_text(resp);
    if (status == 401 && (r->use_basic || r->bearer))
        return hd_error_set(err, 0, "%s: %s: unauthorized: the registry refused the credentials%s%s", what, r->host,
                            detail ? ": " : "", detail ? detail : "");
    if (status == 401)
        return hd_error_set(err, 0, "%s: %s: authentication required (%s; log in with `hedge login %s`)", what, r->host,
                            resp->challenge ? resp->challenge : "no challenge", r->host);
    if (status == 404)
        return hd_error_set(err, 0, "%s: not found in %s/%s%s%s", what, r->host, r->repository, detail ? ": " : "",
                            detail ? detail : "");
    return hd_error_set(err, 0, "%s: %s: HTTP %ld%s%s", what, url, status, detail ? ": " : "", detail ? detail : "");
}

/* The value of key="value" (or key=value) in a WWW-Authenticate challenge's parameters, or NULL. */
char *registry_challenge_param(const char *challenge, const char *key)
{
    size_t klen = strlen(key);
    const char *p = strchr(challenge, ' ');
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *eq = strchr(p, '=');
        if (eq == NULL)
            return NULL;
        bool match = (size_t)(eq - p) == klen && strncasecmp(p, key, klen) == 0;
        const char *v = eq + 1, *end;
        if (*v == '"') {
            v++;
            end = strchr(v, '"');
            if (end == NULL)
                return NULL;
            p = end + 1;
        } else {
            end = strchrnul(v, ',');
            p = end;
        }
        if (match)
            return hd_xasprintf("%.*s", (int)(end - v), v);
    }
    return NULL;
}

/*
 * The Bearer flow of the distribution spec: GET realm?service=&scope= (with
 * the credentials as Basic auth when there are any, anonymous otherwise), and
 * keep the token (or access_token) of the JSON answer for the requests that
 * follow. A realm over plain HTTP is refused unless the registry itself is
 * insecure: the credentials would cross the network in clear.
 */
static int registry_fetch_token(struct registry *r, const char *challenge, const char *what, hd_error_t *err)
{
    cleanup_free char *realm = registry_challenge_param(challenge, "realm");
    cleanup_free char *service = registry_challenge_param(challenge, "service");
    cleanup_free char *scope = registry_challenge_param(challenge, "scope");
    if (realm == NULL)
        return hd_error_set(err, 0, "%s: %s: bearer challenge without a realm: %s", what, r->host, challenge);
    if (strncmp(realm, "https://", 8) != 0 &&
        !(strncmp(realm, "http://", 7) == 0 && strncmp(r->base, "http://", 7) == 0))
        return hd_error_set(err, 0, "%s: %s: token realm %s is not https", what, r->host, realm);
    if (scope == NULL && r->repository[0])
        scope = hd_xasprintf("repository:%s:pull", r->repository);
    CURL *c = curl_easy_init();
    if (c == NULL)
        return hd_error_set(err, ENOMEM, "curl_easy_init");
    char *service_q = service ? curl_easy_escape(c, service, 0) : NULL;
    char *scope_q = scope ? curl_easy_escape(c, scope, 0) : NULL;
    cleanup_free char *url = hd_xasprintf("%s%s%s%s%s%s", realm, strchr(realm, '?') ? "&" : "?",
                                          service_q ? "service=" : "", service_q ? service_q : "",
                                          scope_q ? (service_q ? "&scope=" : "scope=") : "", scope_q ? scope_q : "");
    curl_free(service_q);
    curl_free(scope_q);
    struct response resp = {.fd = -1, .limit = -1, .max = 1024 * 1024};
    char curl_error[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "hedge");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME_S);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_error);
    if (r->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, r->ca_file);
    if (r->user) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, r->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, r->password);
    }
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, response_header_status);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &resp);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, response_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    int ret = 0;
    json_t *doc = NULL;
    if (rc != CURLE_OK)
        ret = hd_error_set(err, 0, "%s: token from %s: %s", what, realm,
                           curl_error[0] ? curl_error : curl_easy_strerror(rc));
    else if (status == 401 || status == 403)
        ret = hd_error_set(err, 0, "%s: %s: unauthorized: the token server %s refused %s (HTTP %ld)", what, r->host,
                           realm, r->user ? "the credentials" : "an anonymous pull", status);
    else if (status != 200)
        ret = hd_error_set(err, 0, "%s: token from %s: HTTP %ld", what, realm, status);
    else if ((doc = json_loadb(resp.buf ? resp.buf : "", resp.len, 0, NULL)) == NULL)
        ret = hd_error_set(err, 0, "%s: token from %s: not JSON", what, realm);
    if (ret == 0) {
        const char *token = json_string_value(json_object_get(doc, "token"));
        if (token == NULL || *token == '\0')
            token = json_string_value(json_object_get(doc, "access_token"));
        if (token == NULL || *token == '\0' || strpbrk(token, "\r\n"))
            ret = hd_error_set(err, 0, "%s: token from %s: no token in the answer", what, realm);
        else {
            free(r->bearer);
            r->bearer = hd_xasprintf("Authorization: Bearer %s", token);
        }
    }
    json_decref(doc);
    free(resp.buf);
    free(resp.content_type);
    free(resp.challenge);
    return ret;
}

/*
 * registry_get_once, answering the registry's challenge: a 401 asking for
 * Basic auth is retried once with the credentials, which every later request
 * then sends up front; a 401 asking for a Bearer token fetches one (again,
 * when the one we had expired) and retries once. The first response's body
 * and headers are dropped.
 */
static int registry_get(struct registry *r, const char *path, const char *header, struct response *resp,
                        const char *what, hd_error_t *err)
{
    hd_error_t first = NULL;
    if (registry_get_once(r, path, header, resp, what, &first) == 0)
        return 0;
    const char *challenge = resp->status == 401 && resp->got == 0 ? resp->challenge : NULL;
    bool basic = challenge && strncasecmp(challenge, "basic", 5) == 0 && r->user && !r->use_basic;
    bool bearer = challenge && strncasecmp(challenge, "bearer ", 7) == 0;
    if (!basic && !bearer) {
        if (err && *err == NULL)
            *err = get_and_reset(&first); /* the first answer is the error */
        hd_error_free(&first);
        return -1;
    }
    hd_error_free(&first);
    if (basic)
        r->use_basic = true;
    else if (registry_fetch_token(r, challenge, what, err) < 0)
        return -1;
    free(resp->buf);
    resp->buf = NULL;
    resp->len = resp->cap = 0;
    resp->status = 0;
    return registry_get_once(r, path, header, resp, what, err);
}

int registry_check(struct registry *r, hd_error_t *err)
{
    struct response resp = {.fd = -1, .limit = -1, .max = 64 * 1024};
    int ret = registry_get(r, "", NULL, &resp, "registry", err);
    free(resp.buf);
    free(resp.content_type);
    free(resp.challenge);
    return ret;
}

int registry_get_manifest(struct registry *r, const char *reference, struct registry_manifest *out, hd_error_t *err)
{
    memset(out, 0, sizeof(*out));
    cleanup_free char *what = hd_xasprintf("manifest %s", reference);
    cleanup_free char *path = hd_xasprintf("%s/manifests/%s", r->repository, reference);
    struct response resp = {.fd = -1, .limit = -1, .max = MANIFEST_MAX_BYTES};
    int ret = registry_get(r, path, accept_manifests, &resp, what, err);
    if (ret < 0 && resp.too_long)
        hd_error_set(err, 0, "%s: larger than %d bytes", what, MANIFEST_MAX_BYTES);
    if (ret == 0 && resp.buf == NULL) {
        ret = hd_error_set(err, 0, "%s: the registry sent an empty document", what);
    }
    if (ret == 0) {
        hd_sha256_hex(resp.buf, resp.len, out->hex);
        if (strncmp(reference, "sha256:", 7) == 0 && strcmp(reference + 7, out->hex) != 0)
            ret = hd_error_set(err, 0, "%s: digest mismatch: expected %s, got sha256:%s", what, reference, out->hex);
    }
    if (ret < 0) {
        free(resp.buf);
        free(resp.content_type);
        free(resp.challenge);
        return -1;
    }
    free(resp.challenge);
    out->body = resp.buf;
    out->len = resp.len;
    out->media_type = resp.content_type;
    return 0;
}

int registry_get_blob(struct registry *r, const char *hex, int64_t size, const char *partial, const char *path,
                      hd_error_t *err)
{
    cleanup_free char *what = hd_xasprintf("blob sha256:%s", hex);
    cleanup_free char *url_path = hd_xasprintf("%s/blobs/sha256:%s", r->repository, hex);
    struct response resp = {.fd = -1, .limit = size, .max = 64 * 1024, .reg = r};
    resp.fd = open(partial, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (resp.fd < 0)
        return hd_error_sys(err, "open %s", partial);
    hd_sha256_init(&resp.md);
    struct stat st;
    int ret = 0;
    if (fstat(resp.fd, &st) < 0) {
        ret = hd_error_sys(err, "stat %s", partial);
        goto out;
    }
    if (st.st_size > size && ftruncate(resp.fd, 0) < 0) {
        ret = hd_error_sys(err, "truncate %s", partial);
        goto out;
    }
    if (st.st_size > 0 && st.st_size <= size) {
        /* what an interrupted pull left: hash it, then ask only for the rest */
        if (hd_sha256_update_file(&resp.md, partial, err) < 0) {
            ret = -1;
            goto out;
        }
        resp.offset = st.st_size;
    }
    if (resp.offset < size || size == 0) {
        cleanup_free char *range = resp.offset ? hd_xasprintf("Range: bytes=%lld-", (long long)resp.offset) : NULL;
        ret = registry_get(r, url_path, range, &resp, what, err);
        if (ret < 0 && resp.too_long)
            hd_error_set(err, 0, "%s: size mismatch: the registry sent more than the %lld bytes expected", what,
                         (long long)size);
    }
    if (ret == 0 && resp.offset + resp.got != size)
        ret = hd_error_set(err, 0, "%s: size mismatch: expected %lld bytes, got %lld", what, (long long)size,
                           (long long)(resp.offset + resp.got));
    if (ret == 0) {
        char got[HD_SHA256_HEX_LEN + 1];
        hd_sha256_final_hex(&resp.md, got);
        if (strcmp(got, hex) != 0)
            ret = hd_error_set(err, 0, "%s: digest mismatch: expected sha256:%s, got sha256:%s", what, hex, got);
    }
    if (ret == 0 && rename(partial, path) < 0)
        ret = hd_error_sys(err, "%s: rename %s", what, partial);
out:
    close(resp.fd);
    free(resp.buf);
    free(resp.content_type);
    free(resp.challenge);
    /*
     * A transfer cut short keeps its bytes for the next pull to resume; bytes
     * that are known wrong (digest, size, an error answer) are dropped.
     */
    if (ret < 0 && !resp.cut)
        unlink(partial);
    return ret;
}
