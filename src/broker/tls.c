/*
 * tls.c - TLS listeners with OpenSSL: non-blocking handshakes driven by the
 * event loop, optional client certificates (verified against tls_ca; with
 * tls_use_identity_as_username the certificate's CN is the MQTT username, and
 * no password is asked). TLS 1.2 is the minimum.
 *
 * The loop only sees the socket, so a read drains everything OpenSSL has
 * already decrypted (SSL_pending) before returning; otherwise bytes buffered
 * inside OpenSSL would wait for the next packet to arrive.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "mqtt/openssl_lazy.h"
#include "base/util.h"

struct broker_tls_ctx {
    SSL_CTX *ctx;
};

struct broker_tls {
    SSL *ssl;
    bool established;
};

static const char *tls_error(void)
{
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (!e)
        return "unknown TLS error";
    ERR_error_string_n(e, buf, sizeof(buf));
    return buf;
}

int broker_tls_init(struct hd_broker *b, hd_error_t *err)
{
    if (!b->cfg.tls_cert || !b->cfg.tls_key)
        return hd_error_set(err, 0, "tls: a TLS listener needs tls_cert and tls_key");
    if (hd_openssl_load(err) < 0)
        return hd_error_prefix(err, "tls");
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return hd_error_set(err, 0, "tls: %s", tls_error());
    b->tls = hd_xcalloc(1, sizeof(*b->tls));
    b->tls->ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ctx, b->cfg.tls_cert) != 1)
        return hd_error_set(err, 0, "tls: certificate %s: %s", b->cfg.tls_cert, tls_error());
    if (SSL_CTX_use_PrivateKey_file(ctx, b->cfg.tls_key, SSL_FILETYPE_PEM) != 1)
        return hd_error_set(err, 0, "tls: key %s: %s", b->cfg.tls_key, tls_error());
    if (b->cfg.tls_ca) {
        if (SSL_CTX_load_verify_locations(ctx, b->cfg.tls_ca, NULL) != 1)
            return hd_error_set(err, 0, "tls: CA %s: %s", b->cfg.tls_ca, tls_error());
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (b->cfg.tls_require_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           NULL);
    } else if (b->cfg.tls_require_cert) {
        return hd_error_set(err, 0, "tls: tls_require_certificate needs tls_ca");
    }
    return 0;
}

void broker_tls_free(struct hd_broker *b)
{
    if (!b->tls)
        return;
    SSL_CTX_free(b->tls->ctx);
    free(b->tls);
    b->tls = NULL;
}

static void remember_peer_cn(struct broker_conn *c)
{
    X509 *cert = SSL_get_peer_certificate(c->tls->ssl);
    if (!cert)
        return;
    if (SSL_get_verify_result(c->tls->ssl) == X509_V_OK) {
        char cn[256];
        int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
        if (n > 0 && (size_t)n < sizeof(cn))
            c->cert_cn = hd_xstrdup(cn);
    }
    X509_free(cert);
}

/* Start or continue the handshake: 1 = established, 0 = waiting, -1 = failed. */
int broker_tls_accept(struct hd_broker *b, struct broker_conn *c)
{
    if (!c->tls) {
        c->tls = hd_xcalloc(1, sizeof(*c->tls));
        c->is_tls = true;
        c->tls->ssl = SSL_new(b->tls->ctx);
        if (!c->tls->ssl || SSL_set_fd(c->tls->ssl, c->fd) != 1)
            return -1;
    }
    if (c->tls->established)
        return 1;
    int r = SSL_accept(c->tls->ssl);
    if (r == 1) {
        c->tls->established = true;
        remember_peer_cn(c);
        broker_conn_want_write(b, c, c->out.len > c->out_sent);
        return 1;
    }
    int e = SSL_get_error(c->tls->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        broker_conn_want_write(b, c, false);
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        broker_conn_want_write(b, c, true);
        return 0;
    }
    ERR_clear_error();
    return -1;
}

ssize_t broker_tls_read(struct broker_conn *c, void *buf, size_t len)
{
    if (!c->tls->established)
        return -2; /* handled by the caller: continue the handshake */
    size_t got = 0;
    while (got < len) {
        int r = SSL_read(c->tls->ssl, (char *)buf + got, (int)(len - got > 1 << 30 ? 1 << 30 : len - got));
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->tls->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        ERR_clear_error();
        return got ? (ssize_t)got : -1;
    }
    return (ssize_t)got;
}

ssize_t broker_tls_write(struct broker_conn *c, const void *buf, size_t len)
{
    if (!c->tls->established)
        return 0;
    int r = SSL_write(c->tls->ssl, buf, (int)(len > 1 << 30 ? 1 << 30 : len));
    if (r > 0)
        return r;
    int e = SSL_get_error(c->tls->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    ERR_clear_error();
    return -1;
}

void broker_tls_conn_free(struct broker_conn *c)
{
    if (c->tls->ssl)
        SSL_free(c->tls->ssl);
    free(c->tls);
    c->tls = NULL;
}
