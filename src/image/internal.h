/*
 * image_internal.h - what the three parts of the image store share, and
 * nothing outside them uses:
 *   image.c          the store: refs, per-image metadata, lookup/list/remove,
 *                    and the import transaction (lock, temp dir, commit);
 *   image_archive.c  reads a docker-save or OCI-archive tarball, stages its
 *                    files, verifies every digest and says what to apply;
 *   image_layer.c    applies layer tars to a rootfs with whiteouts, refusing
 *                    entries that would land outside it.
 */
#ifndef HEDGE_IMAGE_INTERNAL_H
#define HEDGE_IMAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/error.h"

#define IMAGE_HEX_LEN 64

/* One verified file of the archive, staged on disk inside the import's temp dir. */
struct image_blob {
    char *stage_path;            /* absolute path of the staged bytes */
    char hex[IMAGE_HEX_LEN + 1]; /* sha256 of the staged bytes (the blob store address) */
    int64_t size;
};

/* What an archive holds once every digest has been checked. */
struct image_source {
    const char *format;                 /* "oci" or "docker" */
    char config_hex[IMAGE_HEX_LEN + 1]; /* sha256 of the config blob: the image id */
    char *name;                         /* normalized name:tag the archive gives, or NULL */
    char *digest_name;                  /* a second ref, repository@sha256:<manifest hex> (a pull), or NULL */
    char *architecture;                 /* from the config, or NULL */
    char *image_created;                /* the config's "created", or NULL */
    char **cmd, **entrypoint, **env;
    char *workdir, *user;
    struct image_blob *layers; /* in the order they are applied */
    size_t n_layers;
    struct image_blob *blobs; /* every blob to keep: manifest (OCI), config, layers */
    size_t n_blobs;
};

void image_source_free(struct image_source *s);
/* Append a copy of blob (its stage_path duplicated) to the blobs to keep (once per digest) or the layers. */
void image_source_add_blob(struct image_source *src, const struct image_blob *blob);
void image_source_add_layer(struct image_source *src, const struct image_blob *blob);

/*
 * The import transaction (image.c) with its source abstracted: read fills out
 * with verified blobs staged under stage_dir (or, for blobs the store already
 * has, stage_path naming the stored file under store_dir). wanted (NULL: the
 * source's own name) is the normalized name:tag the image gets.
 */
typedef int (*image_read_fn)(void *ctx, const char *store_dir, const char *stage_dir, struct image_source *out,
                             hd_error_t *err);
struct hd_image_config;
int image_store_import(const char *state_dir, image_read_fn read, void *ctx, const char *wanted,
                       struct hd_image_config **out, hd_error_t *err);

/* Shared with the registry pull (pull.c): */
/* The GOARCH name of this host ("amd64", "arm64", ...). */
const char *image_host_architecture(void);
/* Pick the manifest for os/arch from an index's manifests array (arch NULL: this host's). */
int image_pick_platform(json_t *manifests, const char *what, const char *os, const char *arch, const char *variant,
                        json_t **out, hd_error_t *err);
/* An OCI image index or a docker manifest list. */
bool image_is_index_media_type(const char *type);
/* Record an image config's defaults in src and check it is for this host. */
int image_config_parse(json_t *config, struct image_source *src, hd_error_t *err);

/*
 * Read the tarball, staging its regular files under stage_dir, and verify the
 * image it holds. On failure nothing outside stage_dir has been touched.
 */
int image_archive_read(const char *tarball, const char *stage_dir, struct image_source *out, hd_error_t *err);

/* Apply layers in order onto the (existing, empty) directory rootfs, which must be a real path. */
int image_layers_apply(const char *rootfs, const struct image_blob *layers, size_t n_layers, hd_error_t *err);

/*
 * Normalize an image reference to "name:tag": docker.io/library/ and docker.io/
 * are dropped, a missing tag becomes "latest". Returns NULL when ref is not a
 * valid name (upper case, digest references, bad characters).
 */
char *image_name_normalize(const char *ref);
/* "name@sha256:<hex>" -> the same with the name normalized; NULL when not a digest reference. */
char *image_digest_ref_normalize(const char *ref);

/* A set of strings (paths, inode keys); a small open-addressing hash table. */
struct image_string_set {
    char **slots;
    size_t cap, len;
};
bool image_string_set_add(struct image_string_set *set, const char *s); /* true if it was new */
bool image_string_set_has(const struct image_string_set *set, const char *s);
void image_string_set_clear(struct image_string_set *set);

#endif
