/*
 * digest.h - SHA-256 for content addresses (image blobs, VM assets, spec
 * digests), through libmd: a small, well-kept digest library whose load cost
 * is negligible, unlike libcrypto's ~1 ms of start-up in every `hedge` run.
 */
#ifndef HEDGE_DIGEST_H
#define HEDGE_DIGEST_H

#include <stddef.h>
#include <sys/types.h>
#include <sha2.h>

#include "base/error.h"

#define HD_SHA256_HEX_LEN 64

struct hd_sha256 {
    SHA2_CTX ctx;
};

void hd_sha256_init(struct hd_sha256 *s);
void hd_sha256_update(struct hd_sha256 *s, const void *data, size_t len);
/* Finish and write 64 lower-case hex digits plus NUL. */
void hd_sha256_final_hex(struct hd_sha256 *s, char hex[HD_SHA256_HEX_LEN + 1]);
/* Feed a whole file into the digest. */
int hd_sha256_update_file(struct hd_sha256 *s, const char *path, hd_error_t *err);
/* One-shot digest of a buffer. */
void hd_sha256_hex(const void *data, size_t len, char hex[HD_SHA256_HEX_LEN + 1]);

#endif
