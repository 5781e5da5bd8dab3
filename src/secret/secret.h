/*
 * secret.h - the node's secret store: named values encrypted at rest, each
 * with a version number (docs/security.md, "Secrets").
 *
 * A secret is one file <state>/secrets/NAME: a clear header (magic, version)
 * and the value sealed with AES-256-GCM under the node key, with the header
 * and the name as additional data, so a file renamed to another name or given
 * another version number fails to open. The node key is 32 random bytes in a
 * file readable by root only (mode 0400), made on the first `hedge secret set`;
 * its path is $HEDGE_SECRET_KEY, else <state>/secret.key, so a key unsealed
 * from a TPM into a tmpfs can be used by pointing the variable at it.
 * libcrypto is loaded on first use (crypto_lazy.h): only what encrypts or
 * decrypts maps it; listing and version look-ups read clear headers.
 *
 * Every file is written to a temporary name and renamed over the old one, so
 * a reader sees the old or the new secret, never part of one.
 */
#ifndef HEDGE_SECRET_H
#define HEDGE_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"

#define HD_SECRET_KEY_LEN 32
#define HD_SECRET_MAX_VALUE (1024 * 1024) /* a secret is a password or a certificate, not a data set */

/* 1-63 letters, digits, '-', '_', '.', starting with a letter or digit (the workload name rule). */
bool hd_secret_name_valid(const char *name);

/* The node key's path: key_path if given, else $HEDGE_SECRET_KEY, else <state_dir>/secret.key. Caller frees. */
char *hd_secret_key_path(const char *state_dir, const char *key_path);

/* Store value under name (a new version: the old one + 1, or 1); the key is made if missing. */
int hd_secret_set(const char *state_dir, const char *key_path, const char *name, const void *value, size_t len,
                  uint64_t *version, hd_error_t *err);
/* The value and version of name, decrypted; *value is malloc'd (the caller wipes and frees it). */
int hd_secret_get(const char *state_dir, const char *key_path, const char *name, char **value, size_t *len,
                  uint64_t *version, hd_error_t *err);
/* The version of name from its clear header (no key needed); errors name a missing secret. */
int hd_secret_version(const char *state_dir, const char *name, uint64_t *version, hd_error_t *err);

struct hd_secret_info {
    char name[64];
    uint64_t version;
    int64_t updated; /* mtime, unix seconds */
};
/* Every stored secret, sorted by name; *out is malloc'd. */
int hd_secret_list(const char *state_dir, struct hd_secret_info **out, size_t *n, hd_error_t *err);
int hd_secret_remove(const char *state_dir, const char *name, hd_error_t *err);

/* Wipe and free a value returned by hd_secret_get. */
void hd_secret_value_free(char *value, size_t len);

/*
 * Write data to dirfd/file through a temporary file and rename(2), owned by
 * uid:gid with mode: readers (a workload reading its secret while it is
 * updated) see the old file or the new one, never a partial one.
 */
int hd_secret_write_file_at(int dirfd, const char *file, const void *data, size_t len, mode_t mode, uid_t uid,
                            gid_t gid, hd_error_t *err);

#endif
