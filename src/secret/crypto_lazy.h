/*
 * crypto_lazy.h - libcrypto (AES-256-GCM and the random source) for the secret
 * store, loaded on first use.
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

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "base/error.h"

/* clang-format off */
#define HD_CRYPTO_FUNCTIONS(X) \
    X(EVP_CIPHER_CTX_new) X(EVP_CIPHER_CTX_free) X(EVP_CIPHER_CTX_ctrl) X(EVP_aes_256_gcm) \
    X(EVP_EncryptInit_ex) X(EVP_EncryptUpdate) X(EVP_EncryptFinal_ex) \
    X(EVP_DecryptInit_ex) X(EVP_DecryptUpdate) X(EVP_DecryptFinal_ex) \
    X(RAND_bytes) X(OPENSSL_cleanse)
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
