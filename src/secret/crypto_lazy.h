/*
 * crypto_lazy.h - libcrypto (AES-256-GCM and the random source) for the secret
 * store, Ed25519 for signed fleet documents (sign.c), loaded on first use.
 *
 * `hedge run` must not map libcrypto: most runs have no secrets, and every
 * shared library costs the start-up an open, its mmaps and its relocations.
 * store.c calls libcrypto through this table, filled by hd_crypto_load() with
 * dlopen() (the pattern of src/mqtt/openssl_lazy.h and src/image/curl_lazy.h);
 * the table's types come from OpenSSL's own prototypes, so every call is still
 * type-checked.
 */
#ifndef HEDGE_SECRET_CRYPTO_LAZY_H
#define HEDGE_SECRET_CRYPTO_LAZY_H

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "base/error.h"

/* clang-format off */
#define HD_CRYPTO_FUNCTIONS(X) \
    X(EVP_CIPHER_CTX_new) X(EVP_CIPHER_CTX_free) X(EVP_CIPHER_CTX_ctrl) X(EVP_aes_256_gcm) \
    X(EVP_EncryptInit_ex) X(EVP_EncryptUpdate) X(EVP_EncryptFinal_ex) \
    X(EVP_DecryptInit_ex) X(EVP_DecryptUpdate) X(EVP_DecryptFinal_ex) \
    X(RAND_bytes) X(OPENSSL_cleanse) \
    X(EVP_MD_CTX_new) X(EVP_MD_CTX_free) X(EVP_DigestSignInit) X(EVP_DigestSign) \
    X(EVP_DigestVerifyInit) X(EVP_DigestVerify) X(EVP_PKEY_free) X(EVP_PKEY_get_base_id) \
    X(EVP_EncodeBlock) X(EVP_DecodeBlock) X(BIO_new_mem_buf) X(BIO_free) \
    X(PEM_read_bio_PUBKEY) X(PEM_read_bio_PrivateKey) X(ERR_get_error) X(ERR_error_string_n)
/* clang-format on */

struct hd_crypto_api {
#define HD_CRYPTO_MEMBER(name) __typeof__(&name) name;
    HD_CRYPTO_FUNCTIONS(HD_CRYPTO_MEMBER)
#undef HD_CRYPTO_MEMBER
};

/* Load libcrypto.so.3 (once per process). 0, or -1 with err naming what is missing. */
int hd_crypto_load(hd_error_t *err);
/* The loaded table; hd_crypto_load() must have succeeded before. */
extern struct hd_crypto_api hd_crypto;

#endif
