/*
 * image.h - the content-addressed image store (docs/images.md).
 *
 * Layout under <state>/images:
 *   blobs/sha256/<hex>        config, manifest and layer blobs, verified against their digests
 *   rootfs/<image-id>/        the flattened root filesystem of an image (layers applied in order)
 *   meta/<image-id>.json      the config defaults (struct hd_image_config), size, import time
 *   refs.json                 name:tag (and, for pulls, name@sha256:<manifest>) -> image id
 *   partial/<hex>             registry blob downloads cut short, for the next pull to resume
 * The image id is the sha256 of the image's config blob. Import writes into a
 * temp dir and renames into place, so a corrupt or truncated tarball leaves
 * nothing half-imported.
 */
#ifndef HEDGE_IMAGE_H
#define HEDGE_IMAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/error.h"

struct hd_image_config {
    char *id;          /* sha256:<hex> of the config blob */
    char *name;        /* name:tag */
    char *rootfs;      /* absolute host path of the flattened rootfs */
    char **cmd;        /* Cmd, NULL-terminated, or NULL */
    char **entrypoint; /* Entrypoint or NULL */
    char **env;        /* Env KEY=VALUE or NULL */
    char *workdir;     /* WorkingDir or NULL */
    char *user;        /* User or NULL */
    int64_t size;      /* bytes of the rootfs */
    int64_t created;   /* unix time of import */
};

void hd_image_config_free(struct hd_image_config *c);

/* Default state dir: $HEDGE_STATE_DIR or /var/lib/hedge. */
const char *hd_state_dir(void);

/*
 * Import a docker-save or OCI-archive tarball; name (NULL: the archive's own)
 * is the name:tag it gets. out (optional) receives the imported image.
 */
int hd_image_import(const char *state_dir, const char *tarball, const char *name, struct hd_image_config **out,
                    hd_error_t *err);
/* How hd_image_pull reaches a registry. */
struct hd_image_pull_options {
    const char *platform;  /* os/arch[/variant] to pick from an index; NULL: linux/<this host> */
    char *const *insecure; /* NULL-terminated host[:port] list reached over plain HTTP, or NULL */
    const char *ca_file;   /* CA bundle for TLS; NULL: the system's */
    FILE *progress;        /* one line per blob, or NULL for quiet */
    const char *auth_file; /* docker config.json-style credentials; NULL: <state>/auth.json */
};

/*
 * Pull [registry/]repository[:tag][@sha256:<hex>] from its registry into the
 * store (docs/images.md): the image gets the name repository:tag and the
 * digest reference repository@sha256:<manifest digest>, so it can be run by
 * either. digest_out (optional) receives "sha256:<hex>" of the manifest the
 * reference resolved to.
 */
int hd_image_pull(const char *state_dir, const char *ref, const struct hd_image_pull_options *opts,
                  struct hd_image_config **out, char **digest_out, hd_error_t *err);

/* <state>/auth.json: where `hedge login` keeps credentials by default (caller frees). */
char *hd_registry_auth_default_file(const char *state_dir);
/*
 * Check user/password against host's registry (GET /v2/ answering its
 * challenge) and store them in auth_file ({"auths": {host: {"auth": base64}}}).
 */
int hd_registry_login(const char *auth_file, const char *host, const char *user, const char *password,
                      const struct hd_image_pull_options *opts, hd_error_t *err);

/*
 * Look up name[:tag] (tag defaults to latest), name@sha256:<manifest digest> (a pulled image) or an id prefix (>= 12 hex
 * digits, "sha256:" optional). Unknown: "image REF: not found".
 */
int hd_image_lookup(const char *state_dir, const char *ref, struct hd_image_config **out, hd_error_t *err);
/*
 * What a deployment records for ref: ref itself when it names a digest; for
 * repository[:tag], "repository:tag@sha256:<manifest digest>" when a pull
 * stored that digest for the same image (the tag pinned), else NULL (an
 * imported image has no manifest digest). Fails as hd_image_lookup when ref
 * is not in the store. hd_image_lookup accepts the pinned form (the digest
 * decides).
 */
int hd_image_pin(const char *state_dir, const char *ref, char **pinned, hd_error_t *err);
/* List images, one entry per name, sorted by name; returns a NULL-terminated array the caller frees with hd_image_list_free. */
int hd_image_list(const char *state_dir, struct hd_image_config ***out, hd_error_t *err);
void hd_image_list_free(struct hd_image_config **list);
/*
 * Remove name[:tag] (or, given an id prefix, every name of that image); the
 * rootfs and blobs go when no name refers to them any more. untagged (the
 * names removed) and deleted (the image id, if the image went) are optional
 * outputs the caller frees.
 */
int hd_image_remove(const char *state_dir, const char *ref, char ***untagged, char **deleted, hd_error_t *err);

/* What hd_image_prune removed. */
struct hd_image_prune_result {
    char **untagged; /* the refs removed (NULL-terminated, or NULL) */
    char **deleted;  /* the ids of the images removed */
    int64_t blobs;   /* blob files removed */
    int64_t partial; /* partial downloads removed */
    int64_t bytes;   /* bytes freed: the images' rootfs sizes, the blobs and the partial files */
};
void hd_image_prune_result_free(struct hd_image_prune_result *r);
/*
 * Remove the images nothing uses (docs/images.md): not named in keep (the
 * references deployments record), not mounted by a running workload (any
 * mount namespace's mountinfo naming its rootfs) and, unless all, without a
 * tag (only digest refs, or none). Then every blob and tree no image reaches,
 * and every partial download. Holds the store lock, so no pull runs meanwhile.
 */
int hd_image_prune(const char *state_dir, char *const *keep, bool all, struct hd_image_prune_result *out,
                   hd_error_t *err);

#endif
