/*
 * sign.h - Ed25519 signatures over bytes, with keys in PEM files (what `openssl genpkey -algorithm
 * ed25519` writes) and signatures in base64: the fleet's signed desired documents (docs/fleet.md).
 * libcrypto is loaded on first use (crypto_lazy.h).
 */
#ifndef HEDGE_SECRET_SIGN_H
#define HEDGE_SECRET_SIGN_H

#include <stddef.h>

#include "base/error.h"

/* The base64 Ed25519 signature of data by the private key in key_pem (caller frees); NULL with err. */
char *hd_sign_ed25519(const char *key_pem, const void *data, size_t len, hd_error_t *err);
/* 0 when signature_b64 is a valid Ed25519 signature of data by the public key in pub_pem; -1 with err
 * saying why not (an unreadable key, a key of another type, not base64, a signature that does not verify). */
int hd_verify_ed25519(const char *pub_pem, const void *data, size_t len, const char *signature_b64, hd_error_t *err);

#endif
