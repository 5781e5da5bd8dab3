/*
 * store.c - the secret store of secret.h: the node key, sealed files, the
 * version counter, listing and removal.
 *
 * File layout of <state>/secrets/NAME (all integers big-endian):
 *   "HDSECRT1" | version (8) | nonce (12) | GCM tag (16) | ciphertext
 * The additional authenticated data is magic | version | name: the header is
 * clear (so `hedge secret ls` and hedged's digests need no key) but cannot be
 * changed without the tag failing. A fresh random nonce per write; a key
 * writes far fewer than 2^32 values, the GCM bound for random nonces.
 *
 * Writers (set, rm) hold an flock on <state>/secrets/.lock, so two `hedge
 * secret set` never give out the same version.
 */
#include "secret/secret.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "secret/crypto_lazy.h"

#define MAGIC "HDSECRT1"
#define MAGIC_LEN 8
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEADER_LEN (MAGIC_LEN + 8 + NONCE_LEN + TAG_LEN)

bool hd_secret_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

static int check_name(const char *name, hd_error_t *err)
{
    if (!hd_secret_name_valid(name))
        return hd_error_set(err, 0,
                            "name: \"%s\" is not a valid secret name (1-63 letters, digits, '-', '_', '.', starting "
                            "with a letter or digit)",
                            name);
    return 0;
}

char *hd_secret_key_path(const char *state_dir, const char *key_path)
{
    if (key_path && *key_path)
        return hd_xstrdup(key_path);
    const char *env = getenv("HEDGE_SECRET_KEY");
    if (env && *env)
        return hd_xstrdup(env);
    return hd_xasprintf("%s/secret.key", state_dir);
}

void hd_secret_value_free(char *value, size_t len)
{
    if (value == NULL)
        return;
    explicit_bzero(value, len);
    free(value);
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* Read the node key; with create, make it (32 random bytes, 0400) when it does not exist yet. */
static int key_load(const char *path, bool create, unsigned char key[HD_SECRET_KEY_LEN], hd_error_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT && create) {
        unsigned char fresh[HD_SECRET_KEY_LEN];
        if (hd_crypto.RAND_bytes(fresh, sizeof(fresh)) != 1)
            return hd_error_set(err, 0, "node key %s: no random bytes", path);
        cleanup_free char *tmp = hd_xasprintf("%s.new.%d", path, (int)getpid());
        cleanup_free char *dir = hd_xstrdup(path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            if (hd_mkdir_p(dir, 0700, err) < 0)
                return hd_error_prefix(err, "node key %s", path);
        }
        int w = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0400);
        if (w < 0)
            return hd_error_sys(err, "node key: create %s", tmp);
        int r = fchmod(w, 0400) == 0 && hd_write_all(w, fresh, sizeof(fresh)) == 0 && fsync(w) == 0 ? 0 : -1;
        int saved = errno;
        close(w);
        explicit_bzero(fresh, sizeof(fresh));
        /* link, not rename: a key another `hedge secret set` made meanwhile wins and is used */
        if (r < 0 || (link(tmp, path) < 0 && errno != EEXIST)) {
            saved = r < 0 ? saved : errno;
            unlink(tmp);
            return hd_error_set(err, saved, "node key: write %s", path);
        }
        unlink(tmp);
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0)
        return hd_error_sys(err, "node key %s", path);
    cleanup_close int kfd = fd;
    struct stat st;
    if (fstat(kfd, &st) < 0)
        return hd_error_sys(err, "node key %s", path);
    if (!S_ISREG(st.st_mode))
        return hd_error_set(err, 0, "node key %s: not a regular file", path);
    if (st.st_uid != geteuid() || (st.st_mode & 077))
        return hd_error_set(err, 0,
                            "node key %s: owner %u, mode %04o: must be readable by its owner (root) only (0400)", path,
                            (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
    if (st.st_size != HD_SECRET_KEY_LEN)
        return hd_error_set(err, 0, "node key %s: %lld bytes, a key is %d", path, (long long)st.st_size,
                            HD_SECRET_KEY_LEN);
    if (hd_read_exact(kfd, key, HD_SECRET_KEY_LEN) < 0)
        return hd_error_sys(err, "node key %s: read", path);
    return 0;
}

static char *secrets_dir(const char *state_dir)
{
    return hd_xasprintf("%s/secrets", state_dir);
}

/* The writers' lock; returns the locked fd. */
static int store_lock(const char *state_dir, hd_error_t *err)
{
    cleanup_free char *dir = secrets_dir(state_dir);
    if (hd_mkdir_p(dir, 0700, err) < 0)
        return hd_error_prefix(err, "secret store");
    cleanup_free char *path = hd_xasprintf("%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return hd_error_sys(err, "secret store: %s", path);
    if (flock(fd, LOCK_EX) < 0) {
        close(fd);
        return hd_error_sys(err, "secret store: lock %s", path);
    }
    return fd;
}

/* Read a secret's whole file; ENOENT is "no secret NAME". */
static int store_read(const char *state_dir, const char *name, char **data, size_t *len, hd_error_t *err)
{
    if (check_name(name, err) < 0)
        return -1;
    cleanup_free char *path = hd_xasprintf("%s/secrets/%s", state_dir, name);
    hd_error_t sub = NULL;
    if (hd_read_file(path, data, len, &sub) < 0) {
        int e = sub->errnum;
        hd_error_free(&sub);
        if (e == ENOENT)
            return hd_error_set(err, ENOENT, "secret %s: no such secret (hedge secret set %s)", name, name);
        return hd_error_set(err, e, "secret %s: read %s", name, path);
    }
    if (*len < HEADER_LEN || memcmp(*data, MAGIC, MAGIC_LEN) != 0) {
        free(*data);
        *data = NULL;
        return hd_error_set(err, 0, "secret %s: %s is not a hedge secret file (damaged?)", name, path);
    }
    return 0;
}

int hd_secret_version(const char *state_dir, const char *name, uint64_t *version, hd_error_t *err)
{
    cleanup_free char *data = NULL;
    size_t len;
    if (store_read(state_dir, name, &data, &len, err) < 0)
        return -1;
    *version = get_be64((unsigned char *)data + MAGIC_LEN);
    return 0;
}

/* magic | version | name: what the tag covers besides the ciphertext. */
static size_t make_aad(unsigned char *aad, size_t size, const unsigned char *header, const char *name)
{
    size_t n = strlen(name);
    if (MAGIC_LEN + 8 + n > size)
        abort(); /* names are at most 63 bytes */
    memcpy(aad, header, MAGIC_LEN + 8);
    memcpy(aad + MAGIC_LEN + 8, name, n);
    return MAGIC_LEN + 8 + n;
}

static int seal(const unsigned char key[HD_SECRET_KEY_LEN], const char *name, uint64_t version, const void *value,
                size_t len, unsigned char *out, hd_error_t *err)
{
    memcpy(out, MAGIC, MAGIC_LEN);
    put_be64(out + MAGIC_LEN, version);
    unsigned char *nonce = out + MAGIC_LEN + 8, *tag = nonce + NONCE_LEN, *ct = tag + TAG_LEN;
    if (hd_crypto.RAND_bytes(nonce, NONCE_LEN) != 1)
        return hd_error_set(err, 0, "secret %s: no random bytes for the nonce", name);
    unsigned char aad[MAGIC_LEN + 8 + 64];
    size_t aad_len = make_aad(aad, sizeof(aad), out, name);
    EVP_CIPHER_CTX *ctx = hd_crypto.EVP_CIPHER_CTX_new();
    int outl = 0, finl = 0, ok = ctx != NULL;
    ok = ok && hd_crypto.EVP_EncryptInit_ex(ctx, hd_crypto.EVP_aes_256_gcm(), NULL, NULL, NULL) == 1;
    ok = ok && hd_crypto.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1;
    ok = ok && hd_crypto.EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) == 1;
    ok = ok && hd_crypto.EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int)aad_len) == 1;
    ok = ok && hd_crypto.EVP_EncryptUpdate(ctx, ct, &outl, value, (int)len) == 1;
    ok = ok && hd_crypto.EVP_EncryptFinal_ex(ctx, ct + outl, &finl) == 1;
    ok = ok && hd_crypto.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
    hd_crypto.EVP_CIPHER_CTX_free(ctx);
    if (!ok || (size_t)(outl + finl) != len)
        return hd_error_set(err, 0, "secret %s: AES-256-GCM encryption failed", name);
    return 0;
}

static int unseal(const unsigned char key[HD_SECRET_KEY_LEN], const char *name, const char *key_path,
                  const unsigned char *data, size_t len, char **value, size_t *value_len, hd_error_t *err)
{
    const unsigned char *nonce = data + MAGIC_LEN + 8, *tag = nonce + NONCE_LEN, *ct = tag + TAG_LEN;
    size_t ct_len = len - HEADER_LEN;
    unsigned char aad[MAGIC_LEN + 8 + 64];
    size_t aad_len = make_aad(aad, sizeof(aad), data, name);
    char *out = hd_xmalloc(ct_len + 1);
    EVP_CIPHER_CTX *ctx = hd_crypto.EVP_CIPHER_CTX_new();
    int outl = 0, finl = 0, ok = ctx != NULL;
    ok = ok && hd_crypto.EVP_DecryptInit_ex(ctx, hd_crypto.EVP_aes_256_gcm(), NULL, NULL, NULL) == 1;
    ok = ok && hd_crypto.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1;
    ok = ok && hd_crypto.EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) == 1;
    ok = ok && hd_crypto.EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)aad_len) == 1;
    ok = ok && hd_crypto.EVP_DecryptUpdate(ctx, (unsigned char *)out, &outl, ct, (int)ct_len) == 1;
    ok = ok && hd_crypto.EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)tag) == 1;
    bool verified = ok && hd_crypto.EVP_DecryptFinal_ex(ctx, (unsigned char *)out + outl, &finl) == 1;
    hd_crypto.EVP_CIPHER_CTX_free(ctx);
    if (!verified) {
        hd_secret_value_free(out, ct_len + 1);
        return hd_error_set(err, 0,
                            "secret %s: cannot decrypt: the node key %s is not the key it was stored with, or the "
                            "file was tampered with",
                            name, key_path);
    }
    out[ct_len] = '\0';
    *value = out;
    *value_len = ct_len;
    return 0;
}

int hd_secret_set(const char *state_dir, const char *key_path, const char *name, const void *value, size_t len,
                  uint64_t *version, hd_error_t *err)
{
    if (check_name(name, err) < 0)
        return -1;
    if (len > HD_SECRET_MAX_VALUE)
        return hd_error_set(err, 0, "secret %s: %zu bytes, the limit is %d", name, len, HD_SECRET_MAX_VALUE);
    if (hd_crypto_load(err) < 0)
        return hd_error_prefix(err, "secret %s", name);
    cleanup_free char *kpath = hd_secret_key_path(state_dir, key_path);
    cleanup_close int lock = store_lock(state_dir, err);
    if (lock < 0)
        return -1;
    unsigned char key[HD_SECRET_KEY_LEN];
    if (key_load(kpath, true, key, err) < 0)
        return hd_error_prefix(err, "secret %s", name);

    uint64_t old = 0;
    cleanup_free char *existing = NULL;
    size_t existing_len;
    hd_error_t sub = NULL;
    if (store_read(state_dir, name, &existing, &existing_len, &sub) == 0) {
        /* the new value must be sealed by the key the old one was: a stray key would split the store */
        char *plain = NULL;
        size_t plain_len = 0;
        if (unseal(key, name, kpath, (unsigned char *)existing, existing_len, &plain, &plain_len, err) < 0) {
            explicit_bzero(key, sizeof(key));
            return -1;
        }
        hd_secret_value_free(plain, plain_len);
        old = get_be64((unsigned char *)existing + MAGIC_LEN);
    } else if (sub->errnum != ENOENT) {
        explicit_bzero(key, sizeof(key));
        int e = sub->errnum;
        hd_error_set(err, e, "%s", sub->message);
        hd_error_free(&sub);
        return -1;
    }
    hd_error_free(&sub);

    size_t total = HEADER_LEN + len;
    unsigned char *sealed = hd_xmalloc(total);
    int r = seal(key, name, old + 1, value, len, sealed, err);
    explicit_bzero(key, sizeof(key));
    if (r == 0) {
        cleanup_free char *dir = secrets_dir(state_dir);
        cleanup_close int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
            r = hd_error_sys(err, "secret store %s", dir);
        else
            r = hd_secret_write_file_at(dirfd, name, sealed, total, 0600, geteuid(), getegid(), err);
        if (r == 0 && fsync(dirfd) < 0)
            r = hd_error_sys(err, "secret store %s: fsync", dir);
    }
    free(sealed);
    if (r < 0)
        return hd_error_prefix(err, "secret %s", name);
    if (version)
        *version = old + 1;
    return 0;
}

int hd_secret_get(const char *state_dir, const char *key_path, const char *name, char **value, size_t *len,
                  uint64_t *version, hd_error_t *err)
{
    cleanup_free char *data = NULL;
    size_t data_len;
    if (store_read(state_dir, name, &data, &data_len, err) < 0)
        return -1;
    if (hd_crypto_load(err) < 0)
        return hd_error_prefix(err, "secret %s", name);
    cleanup_free char *kpath = hd_secret_key_path(state_dir, key_path);
    unsigned char key[HD_SECRET_KEY_LEN];
    if (key_load(kpath, false, key, err) < 0)
        return hd_error_prefix(err, "secret %s", name);
    int r = unseal(key, name, kpath, (unsigned char *)data, data_len, value, len, err);
    explicit_bzero(key, sizeof(key));
    if (r == 0 && version)
        *version = get_be64((unsigned char *)data + MAGIC_LEN);
    return r;
}

static int info_cmp(const void *a, const void *b)
{
    return strcmp(((const struct hd_secret_info *)a)->name, ((const struct hd_secret_info *)b)->name);
}

int hd_secret_list(const char *state_dir, struct hd_secret_info **out, size_t *n, hd_error_t *err)
{
    *out = NULL;
    *n = 0;
    cleanup_free char *dir = secrets_dir(state_dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : hd_error_sys(err, "secret store %s", dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!hd_secret_name_valid(de->d_name)) /* ".", "..", ".lock", temporary files */
            continue;
        uint64_t version;
        hd_error_t sub = NULL;
        if (hd_secret_version(state_dir, de->d_name, &version, &sub) < 0) {
            hd_error_free(&sub);
            continue;
        }
        struct stat st;
        cleanup_free char *path = hd_xasprintf("%s/%s", dir, de->d_name);
        if (stat(path, &st) < 0)
            continue;
        *out = hd_xrealloc(*out, (*n + 1) * sizeof(**out));
        struct hd_secret_info *info = &(*out)[(*n)++];
        snprintf(info->name, sizeof(info->name), "%.63s", de->d_name);
        info->version = version;
        info->updated = (int64_t)st.st_mtim.tv_sec;
    }
    closedir(d);
    if (*n > 1)
        qsort(*out, *n, sizeof(**out), info_cmp);
    return 0;
}

int hd_secret_remove(const char *state_dir, const char *name, hd_error_t *err)
{
    if (check_name(name, err) < 0)
        return -1;
    cleanup_close int lock = store_lock(state_dir, err);
    if (lock < 0)
        return -1;
    cleanup_free char *path = hd_xasprintf("%s/secrets/%s", state_dir, name);
    if (unlink(path) < 0) {
        if (errno == ENOENT)
            return hd_error_set(err, ENOENT, "secret %s: no such secret", name);
        return hd_error_sys(err, "secret %s: remove %s", name, path);
    }
    return 0;
}

int hd_secret_write_file_at(int dirfd, const char *file, const void *data, size_t len, mode_t mode, uid_t uid,
                            gid_t gid, hd_error_t *err)
{
    char tmp[128];
    for (int attempt = 0;; attempt++) {
        char id[9];
        hd_random_id(id, sizeof(id));
        snprintf(tmp, sizeof(tmp), ".tmp-%s", id);
        int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 && errno == EEXIST && attempt < 5)
            continue;
        if (fd < 0)
            return hd_error_sys(err, "write %s", file);
        cleanup_close int wfd = fd;
        /* owner and mode before a byte is written, so no one else can read it between */
        if (fchown(wfd, uid, gid) < 0 || fchmod(wfd, mode) < 0 || hd_write_all(wfd, data, len) < 0 || fsync(wfd) < 0 ||
            renameat(dirfd, tmp, dirfd, file) < 0) {
            int saved = errno;
            unlinkat(dirfd, tmp, 0);
            return hd_error_set(err, saved, "write %s", file);
        }
        return 0;
    }
}
