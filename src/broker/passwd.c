/*
 * passwd.c - writing the broker's password file: add or replace one user
 * with a salted PBKDF2-SHA512 hash in mosquitto's $7$ format (auth.c reads
 * and verifies it). Kept apart from auth.c so `hedge broker passwd` links
 * this file alone, not the broker (no SQLite, no libssl in the CLI).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/internal.h"
#include "mqtt/openssl_lazy.h"
#include "base/util.h"

int hd_broker_passwd(const char *file, const char *user, const char *password, hd_error_t *err)
{
    if (!user[0] || strchr(user, ':') || strchr(user, '\n'))
        return hd_error_set_code(err, HD_EXIT_USAGE, 0, "passwd: user name %s: must be non-empty without ':'", user);
    if (hd_openssl_load(err) < 0)
        return hd_error_prefix(err, "passwd");
    unsigned char salt[SALT_LEN], hash[HASH_LEN];
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return hd_error_set(err, 0, "passwd: no random bytes for the salt");
    if (!PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sizeof(salt), PBKDF2_ITERATIONS, EVP_sha512(),
                           HASH_LEN, hash))
        return hd_error_set(err, 0, "passwd: PBKDF2 failed");
    char salt64[32], hash64[128];
    EVP_EncodeBlock((unsigned char *)salt64, salt, sizeof(salt));
    EVP_EncodeBlock((unsigned char *)hash64, hash, sizeof(hash));
    cleanup_free char *old = NULL;
    hd_error_t rerr = NULL;
    if (hd_read_file(file, &old, NULL, &rerr) < 0) {
        bool missing = rerr->errnum == ENOENT;
        hd_error_free(&rerr);
        if (!missing)
            return hd_error_set(err, errno, "passwd: read %s", file);
    }
    struct mqtt_buf out = {0};
    size_t ulen = strlen(user);
    for (char *save = NULL, *line = old ? strtok_r(old, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, user, ulen) == 0 && line[ulen] == ':')
            continue; /* replaced below */
        mqtt_put_bytes(&out, line, strlen(line));
        mqtt_put_u8(&out, '\n');
    }
    cleanup_free char *entry = hd_xasprintf("%s:$7$%d$%s$%s\n", user, PBKDF2_ITERATIONS, salt64, hash64);
    mqtt_put_bytes(&out, entry, strlen(entry));
    mode_t old_mask = umask(077);
    int rc = hd_write_file_atomic(file, (const char *)out.data, out.len, err);
    umask(old_mask);
    mqtt_buf_free(&out);
    return rc < 0 ? hd_error_prefix(err, "passwd") : 0;
}

int hd_broker_passwd_stdin(const char *file, const char *user, hd_error_t *err)
{
    char *line = NULL;
    size_t cap = 0;
    if (isatty(STDIN_FILENO))
        fprintf(stderr, "password for %s: ", user);
    ssize_t n = getline(&line, &cap, stdin);
    if (n <= 0) {
        free(line);
        return hd_error_set_code(err, HD_EXIT_USAGE, 0, "passwd: no password on stdin");
    }
    line[strcspn(line, "\r\n")] = '\0';
    int rc = hd_broker_passwd(file, user, line, err);
    explicit_bzero(line, cap);
    free(line);
    return rc;
}
