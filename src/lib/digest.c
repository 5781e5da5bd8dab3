/*
 * digest.c - SHA-256 helpers over libmd (see digest.h).
 */
#include "digest.h"

void hd_sha256_init(struct hd_sha256 *s)
{
    SHA256Init(&s->ctx);
}

void hd_sha256_update(struct hd_sha256 *s, const void *data, size_t len)
{
    SHA256Update(&s->ctx, data, len);
}

void hd_sha256_final_hex(struct hd_sha256 *s, char hex[HD_SHA256_HEX_LEN + 1])
{
    SHA256End(&s->ctx, hex); /* lower-case hex, NUL-terminated */
}

void hd_sha256_hex(const void *data, size_t len, char hex[HD_SHA256_HEX_LEN + 1])
{
    struct hd_sha256 s;
    hd_sha256_init(&s);
    hd_sha256_update(&s, data, len);
    hd_sha256_final_hex(&s, hex);
}
