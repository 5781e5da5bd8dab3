/*
 * digest.c - SHA-256 helpers over libmd (see digest.h).
 */
#include "base/digest.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "base/util.h"

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

int hd_sha256_update_file(struct hd_sha256 *s, const char *path, hd_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hd_error_sys(err, "open %s", path);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        hd_sha256_update(s, buf, (size_t)n);
    if (n < 0)
        return hd_error_sys(err, "read %s", path);
    return 0;
}
