/*
 * sign.c - Ed25519 sign and verify through libcrypto's EVP interface (one-shot EVP_DigestSign /
 * EVP_DigestVerify: Ed25519 hashes internally, so no digest is named). Keys come from PEM files; a key
 * of another type is refused by name, so an RSA key given by mistake is never used as if it were the
 * fleet's key.
 */
#include "secret/sign.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "secret/crypto_lazy.h"

#define ED25519_SIG_LEN 64

static int sign_error(hd_error_t *err, const char *what)
{
    char buf[256];
    hd_crypto.ERR_error_string_n(hd_crypto.ERR_get_error(), buf, sizeof(buf));
    return hd_error_set(err, 0, "%s: %s", what, buf);
}

/* The Ed25519 key in the PEM file path: public or private. NULL with err. */
static EVP_PKEY *sign_load_key(const char *path, bool private_key, hd_error_t *err)
{
    cleanup_free char *pem = NULL;
    size_t len = 0;
    if (hd_read_file(path, &pem, &len, err) < 0)
        return NULL;
    BIO *bio = hd_crypto.BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return sign_error(err, path), NULL;
    EVP_PKEY *key = private_key ? hd_crypto.PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                                : hd_crypto.PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    hd_crypto.BIO_free(bio);
    explicit_bzero(pem, len);
    if (!key) {
        hd_error_set(err, 0, "%s: not a PEM %s key", path, private_key ? "private" : "public");
        return NULL;
    }
    if (hd_crypto.EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519) {
        hd_crypto.EVP_PKEY_free(key);
        hd_error_set(err, 0, "%s: not an Ed25519 key", path);
        return NULL;
    }
    return key;
}

char *hd_sign_ed25519(const char *key_pem, const void *data, size_t len, hd_error_t *err)
{
    if (hd_crypto_load(err) < 0)
        return NULL;
    EVP_PKEY *key = sign_load_key(key_pem, true, err);
    if (!key)
        return NULL;
    EVP_MD_CTX *ctx = hd_crypto.EVP_MD_CTX_new();
    unsigned char sig[ED25519_SIG_LEN];
    size_t sig_len = sizeof(sig);
    char *out = NULL;
    if (!ctx || hd_crypto.EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) != 1 ||
        hd_crypto.EVP_DigestSign(ctx, sig, &sig_len, data, len) != 1) {
        sign_error(err, "sign");
    } else {
        out = hd_xcalloc(1, 4 * ((sig_len + 2) / 3) + 1);
        hd_crypto.EVP_EncodeBlock((unsigned char *)out, sig, (int)sig_len);
    }
    hd_crypto.EVP_MD_CTX_free(ctx);
    hd_crypto.EVP_PKEY_free(key);
    return out;
}

int hd_verify_ed25519(const char *pub_pem, const void *data, size_t len, const char *signature_b64, hd_error_t *err)
{
    if (hd_crypto_load(err) < 0)
        return -1;
    size_t b64_len = strlen(signature_b64);
    /* 64 bytes are 88 base64 characters with one '=' of padding */
    unsigned char sig[ED25519_SIG_LEN + 3];
    if (b64_len != 88 || hd_crypto.EVP_DecodeBlock(sig, (const unsigned char *)signature_b64, (int)b64_len) != 66)
        return hd_error_set(err, 0, "the signature is not 64 bytes in base64");
    EVP_PKEY *key = sign_load_key(pub_pem, false, err);
    if (!key)
        return -1;
    EVP_MD_CTX *ctx = hd_crypto.EVP_MD_CTX_new();
    int r = 0;
    if (!ctx || hd_crypto.EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) != 1)
        r = sign_error(err, "verify");
    else if (hd_crypto.EVP_DigestVerify(ctx, sig, ED25519_SIG_LEN, data, len) != 1)
        r = hd_error_set(err, 0, "the signature does not verify with %s", pub_pem);
    hd_crypto.EVP_MD_CTX_free(ctx);
    hd_crypto.EVP_PKEY_free(key);
    return r;
}
