/*
 * registry.h - a client of one repository of an OCI distribution registry
 * (the /v2/ HTTP API), over libcurl (curl_lazy.h). Used by pull.c only.
 */
#ifndef HEDGE_IMAGE_REGISTRY_H
#define HEDGE_IMAGE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "image/internal.h"

/* An image reference taken apart (pull.c). */
struct registry_ref {
    char *host;       /* registry host[:port] */
    char *repository; /* repository inside the registry */
    char *reference;  /* tag, or sha256:<hex> */
    char *name;       /* the store's name:tag, or NULL for a digest-only reference */
    char *repo_name;  /* the store's normalized repository (name without tag) */
};

/*
 * Parse [host[:port]/]repository[:tag][@sha256:<hex>]: the first component is
 * a registry host when it has a '.' or ':' or is "localhost", else Docker Hub.
 */
int registry_ref_parse(const char *ref, struct registry_ref *out, hd_error_t *err);
void registry_ref_free(struct registry_ref *r);

/* The value of key in a WWW-Authenticate challenge (Bearer realm="...",service="..."), or NULL. */
char *registry_challenge_param(const char *challenge, const char *key);

struct registry {
    char *host;            /* host[:port] as named in the reference */
    char *base;            /* scheme://host[:port] (https, or http for an insecure registry) */
    char *repository;      /* name inside the registry, e.g. library/busybox */
    char *ca_file;         /* CA bundle for TLS, or NULL for the system's */
    char *user, *password; /* credentials for a Basic challenge, or NULL (anonymous) */
    char *bearer;          /* "Authorization: Bearer <token>" once a Bearer challenge was answered */
    bool use_basic;
    void (*on_bytes)(void *arg, size_t n); /* told of every blob byte stored (a progress bar), or NULL */
    void *on_bytes_arg; /* the registry asked for Basic auth: send the credentials with every request */
    void *curl;         /* one CURL handle reused for every request (keeps the connection) */
};

int registry_open(struct registry *r, const char *host, const char *repository, bool insecure, const char *ca_file,
                  hd_error_t *err);
void registry_close(struct registry *r);
/* A second client of the same repository with the same credentials and token (its own connection: a thread's). */
int registry_clone(const struct registry *from, struct registry *to, hd_error_t *err);

/* GET /v2/: reachable, and the credentials (if any) accepted. */
int registry_check(struct registry *r, hd_error_t *err);

/* user and password for host from a docker config.json-style auth file; both NULL when it has none. */
int registry_auth_lookup(const char *auth_file, const char *host, char **user, char **password, hd_error_t *err);

/* A manifest or index as the registry served it, verified against its digest. */
struct registry_manifest {
    char *body;
    size_t len;
    char *media_type;            /* the Content-Type the registry sent (or the document's own) */
    char hex[IMAGE_HEX_LEN + 1]; /* sha256 of body */
};
void registry_manifest_free(struct registry_manifest *m);

/*
 * GET /v2/<repo>/manifests/<reference> with Accept naming the OCI manifest and
 * index and the docker v2 manifest and manifest list. reference is a tag or
 * "sha256:<hex>"; for a digest the body must hash to it.
 */
int registry_get_manifest(struct registry *r, const char *reference, struct registry_manifest *out, hd_error_t *err);

/*
 * GET /v2/<repo>/blobs/sha256:<hex>, checking size and digest while the bytes
 * stream (more than size bytes stops the transfer). The bytes go to partial,
 * resuming from what it already holds (Range); once verified it is renamed to
 * path. A transfer cut short keeps partial for the next call; any other
 * failure removes it.
 */
int registry_get_blob(struct registry *r, const char *hex, int64_t size, const char *partial, const char *path,
                      hd_error_t *err);

#endif
