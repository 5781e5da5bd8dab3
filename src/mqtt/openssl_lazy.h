/*
 * openssl_lazy.h - OpenSSL for the broker and the uplink's MQTT client, loaded
 * on first use.
 *
 * libssl + libcrypto cost hedged ~1.7 MB of resident memory just by being
 * mapped and relocated, about a third of its 5 MiB idle budget. The broker
 * needs them only for TLS listeners and password hashes, which most edge
 * nodes on loopback never configure, so the broker loads them with dlopen()
 * when one is configured (the same pattern as src/image/archive_lazy.h).
 *
 * Include this instead of the OpenSSL headers' functions: each OpenSSL
 * function the broker calls is a macro that calls through a table filled by
 * hd_openssl_load(); OpenSSL's own function-like macros (SSL_CTX_set_*) expand
 * to these names and so go through the table too. The table's types come from
 * OpenSSL's prototypes with __typeof__, so every call is still type-checked.
 */
#ifndef HEDGE_OPENSSL_LAZY_H
#define HEDGE_OPENSSL_LAZY_H

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "base/error.h"

/* clang-format would indent each line of this list one step deeper than the last */
/* clang-format off */
#define HD_OPENSSL_FUNCTIONS(X) \
    X(CRYPTO_memcmp) X(ERR_clear_error) X(ERR_error_string_n) X(ERR_get_error) X(EVP_DecodeBlock) \
    X(EVP_EncodeBlock) X(EVP_sha512) X(PKCS5_PBKDF2_HMAC) X(RAND_bytes) X(SSL_CTX_ctrl) X(SSL_CTX_free) \
    X(SSL_CTX_load_verify_locations) X(SSL_CTX_new) X(SSL_CTX_set_verify) X(SSL_CTX_use_PrivateKey_file) \
    X(SSL_CTX_use_certificate_chain_file) X(SSL_accept) X(SSL_free) X(SSL_get1_peer_certificate) \
    X(SSL_get_error) X(SSL_get_verify_result) X(SSL_new) X(SSL_read) X(SSL_set_fd) X(SSL_write) \
    X(TLS_server_method) X(X509_NAME_get_text_by_NID) X(X509_free) X(X509_get_subject_name) \
    /* the uplink's MQTT client (src/mqtt/client.c) */ \
    X(ERR_reason_error_string) X(SSL_CTX_set_default_verify_paths) X(SSL_connect) X(SSL_ctrl) \
    X(SSL_set1_host) X(TLS_client_method) X(X509_verify_cert_error_string)
/* clang-format on */

struct hd_openssl_api {
#define HD_OPENSSL_MEMBER(name) __typeof__(&name) name;
    HD_OPENSSL_FUNCTIONS(HD_OPENSSL_MEMBER)
#undef HD_OPENSSL_MEMBER
};

/* Load libssl.so.3 and libcrypto.so.3 (once per process). 0, or -1 with err naming what is missing. */
int hd_openssl_load(hd_error_t *err);
/* The loaded table; hd_openssl_load() must have succeeded before. */
extern struct hd_openssl_api hd_openssl;

#ifndef HD_OPENSSL_NO_MACROS /* openssl_lazy.c sees the real names */
#define CRYPTO_memcmp (hd_openssl.CRYPTO_memcmp)
#define ERR_clear_error (hd_openssl.ERR_clear_error)
#define ERR_error_string_n (hd_openssl.ERR_error_string_n)
#define ERR_get_error (hd_openssl.ERR_get_error)
#define EVP_DecodeBlock (hd_openssl.EVP_DecodeBlock)
#define EVP_EncodeBlock (hd_openssl.EVP_EncodeBlock)
#define EVP_sha512 (hd_openssl.EVP_sha512)
#define PKCS5_PBKDF2_HMAC (hd_openssl.PKCS5_PBKDF2_HMAC)
#define RAND_bytes (hd_openssl.RAND_bytes)
#define SSL_CTX_ctrl (hd_openssl.SSL_CTX_ctrl)
#define SSL_CTX_free (hd_openssl.SSL_CTX_free)
#define SSL_CTX_load_verify_locations (hd_openssl.SSL_CTX_load_verify_locations)
#define SSL_CTX_new (hd_openssl.SSL_CTX_new)
#define SSL_CTX_set_verify (hd_openssl.SSL_CTX_set_verify)
#define SSL_CTX_use_PrivateKey_file (hd_openssl.SSL_CTX_use_PrivateKey_file)
#define SSL_CTX_use_certificate_chain_file (hd_openssl.SSL_CTX_use_certificate_chain_file)
#define SSL_accept (hd_openssl.SSL_accept)
#define SSL_free (hd_openssl.SSL_free)
#define SSL_get1_peer_certificate (hd_openssl.SSL_get1_peer_certificate)
#define SSL_get_error (hd_openssl.SSL_get_error)
#define SSL_get_verify_result (hd_openssl.SSL_get_verify_result)
#define SSL_new (hd_openssl.SSL_new)
#define SSL_read (hd_openssl.SSL_read)
#define SSL_set_fd (hd_openssl.SSL_set_fd)
#define SSL_write (hd_openssl.SSL_write)
#define TLS_server_method (hd_openssl.TLS_server_method)
#define X509_NAME_get_text_by_NID (hd_openssl.X509_NAME_get_text_by_NID)
#define X509_free (hd_openssl.X509_free)
#define X509_get_subject_name (hd_openssl.X509_get_subject_name)
#define ERR_reason_error_string (hd_openssl.ERR_reason_error_string)
#define SSL_CTX_set_default_verify_paths (hd_openssl.SSL_CTX_set_default_verify_paths)
#define SSL_connect (hd_openssl.SSL_connect)
#define SSL_ctrl (hd_openssl.SSL_ctrl)
#define SSL_set1_host (hd_openssl.SSL_set1_host)
#define TLS_client_method (hd_openssl.TLS_client_method)
#define X509_verify_cert_error_string (hd_openssl.X509_verify_cert_error_string)
#endif

#endif
