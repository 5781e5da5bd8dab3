/*
 * client.c - the non-blocking MQTT client (see client.h).
 *
 * Every packet is encoded and decoded by the codec (src/mqtt/packet.h:
 * mqtt_encode_* for what the client sends, mqtt_decode_connack / _publish /
 * _ack / _suback / _empty for what a broker sends); this file holds no wire
 * format of its own. A malformed packet closes the connection, as the
 * protocol requires.
 *
 * TLS is OpenSSL over the same non-blocking socket, loaded with dlopen on
 * the first TLS connection (src/mqtt/openssl_lazy.h: a process that never
 * uses TLS, such as hedged with a plain cloud link, never maps it).
 * SSL_connect is driven from the caller's loop (TLS_HANDSHAKE state) and
 * SSL_read/SSL_write replace read/write. Output is one growable buffer written as far as the socket
 * takes it; the uplink batches hundreds of PUBLISH packets per write.
 *
 * Nothing here waits: connect() is non-blocking (TCP_CONNECTING until the
 * socket is writable), CONNACK and every other answer arrive through the
 * caller's poll or hd_loop (hd_mqtt_client_attach), writes stop at EAGAIN. That is what lets hedged run the
 * uplink's local client against its own broker in the same thread. The one
 * call that can block is getaddrinfo for a host NAME (DNS); numeric
 * addresses are parsed with AI_NUMERICHOST and never reach the resolver.
 */
#include "mqtt/client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/loop.h"
#include "mqtt/openssl_lazy.h"
#include "mqtt/packet.h"
#include "base/util.h"

struct hd_mqtt_client {
    struct hd_mqtt_options opts;
    struct hd_mqtt_callbacks cb;
    void *ctx;
    enum hd_mqtt_state state;
    int fd;
    SSL_CTX *ssl_ctx;
    SSL *ssl;
    bool tls_want_write; /* the handshake waits for the socket to take more bytes */
    struct mqtt_buf out;
    size_t out_pos;
    uint8_t *in;
    size_t in_len, in_cap;
    uint64_t last_sent_ns, last_received_ns, ping_sent_ns;
    char *topic_copy;
    size_t topic_copy_cap;
    /* hd_mqtt_client_attach: the socket's watch in the host loop */
    struct hd_loop *loop;
    struct hd_watch *watch;
    uint32_t watch_events;
    void (*after_io)(void *ctx);
};

static char *dup_or_null(const char *s)
{
    return s ? hd_xstrdup(s) : NULL;
}

struct hd_mqtt_client *hd_mqtt_client_new(const struct hd_mqtt_options *opts, const struct hd_mqtt_callbacks *cb,
                                          void *ctx)
{
    struct hd_mqtt_client *c = hd_xcalloc(1, sizeof(*c));
    c->opts = *opts;
    c->opts.host = dup_or_null(opts->host);
    c->opts.client_id = dup_or_null(opts->client_id ? opts->client_id : "");
    c->opts.username = dup_or_null(opts->username);
    c->opts.password = dup_or_null(opts->password);
    c->opts.tls.ca_file = dup_or_null(opts->tls.ca_file);
    c->opts.tls.cert_file = dup_or_null(opts->tls.cert_file);
    c->opts.tls.key_file = dup_or_null(opts->tls.key_file);
    c->opts.tls.server_name = dup_or_null(opts->tls.server_name);
    c->opts.will_topic = dup_or_null(opts->will_topic);
    c->opts.will_payload = dup_or_null(opts->will_topic ? (opts->will_payload ? opts->will_payload : "") : NULL);
    if (c->opts.protocol != 5)
        c->opts.protocol = 4;
    c->cb = *cb;
    c->ctx = ctx;
    c->fd = -1;
    return c;
}

static void client_reset_io(struct hd_mqtt_client *c)
{
    if (c->watch) { /* before close: the fd number is free for others the moment it is closed */
        hd_loop_unwatch(c->loop, c->watch);
        c->watch = NULL;
    }
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->out.len = 0;
    c->out_pos = 0;
    c->in_len = 0;
    c->state = HD_MQTT_DISCONNECTED;
}

void hd_mqtt_client_set_context(struct hd_mqtt_client *c, void *ctx)
{
    c->ctx = ctx;
}

void hd_mqtt_client_free(struct hd_mqtt_client *c)
{
    if (!c)
        return;
    client_reset_io(c);
    if (c->ssl_ctx)
        SSL_CTX_free(c->ssl_ctx);
    mqtt_buf_free(&c->out);
    free(c->in);
    free(c->topic_copy);
    free(c->opts.host);
    free(c->opts.client_id);
    free(c->opts.username);
    free(c->opts.password);
    free(c->opts.tls.ca_file);
    free(c->opts.tls.cert_file);
    free(c->opts.tls.key_file);
    free(c->opts.tls.server_name);
    free(c->opts.will_topic);
    free(c->opts.will_payload);
    free(c);
}

/* Close and tell the owner why. */
static void client_drop(struct hd_mqtt_client *c, const char *reason)
{
    bool was_open = c->state != HD_MQTT_DISCONNECTED;
    client_reset_io(c);
    if (was_open && c->cb.on_disconnect)
        c->cb.on_disconnect(c->ctx, reason);
}

static int client_tls_context(struct hd_mqtt_client *c, hd_error_t *err)
{
    if (c->ssl_ctx)
        return 0;
    if (hd_openssl_load(err) < 0)
        return hd_error_prefix(err, "TLS");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return hd_error_set(err, 0, "TLS: cannot create a context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    const struct hd_mqtt_tls *t = &c->opts.tls;
    if (t->ca_file ? SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1
                   : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SSL_CTX_free(ctx);
        return hd_error_set(err, 0, "TLS: load CA %s: %s", t->ca_file ? t->ca_file : "(system)",
                            ERR_reason_error_string(ERR_get_error()));
    }
    if (t->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, t->key_file ? t->key_file : t->cert_file, SSL_FILETYPE_PEM) != 1) {
            SSL_CTX_free(ctx);
            return hd_error_set(err, 0, "TLS: load client certificate %s: %s", t->cert_file,
                                ERR_reason_error_string(ERR_get_error()));
        }
    }
    SSL_CTX_set_verify(ctx, t->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    c->ssl_ctx = ctx;
    return 0;
}

static struct mqtt_bytes bytes_z(const char *s)
{
    return (struct mqtt_bytes){(const uint8_t *)s, s ? (uint32_t)strlen(s) : 0};
}

static void client_send_connect(struct hd_mqtt_client *c)
{
    struct mqtt_connect k = {
        .protocol_level = c->opts.protocol,
        .clean_start = c->opts.clean_session,
        .keepalive = c->opts.keepalive,
        .client_id = bytes_z(c->opts.client_id),
        .has_username = c->opts.username != NULL,
        .username = bytes_z(c->opts.username),
        .has_password = c->opts.password != NULL,
        .password = bytes_z(c->opts.password),
        .will_flag = c->opts.will_topic != NULL,
        .will_topic = bytes_z(c->opts.will_topic),
        .will_payload = bytes_z(c->opts.will_payload),
        .will_qos = c->opts.will_topic ? c->opts.will_qos : 0,
        .will_retain = c->opts.will_topic && c->opts.will_retain,
    };
    /* A persistent 5.0 session must outlive the connection: session expiry "never". */
    if (c->opts.protocol == 5 && !c->opts.clean_session) {
        k.props.has_session_expiry = true;
        k.props.session_expiry = 0xffffffffu;
    }
    mqtt_encode_connect(&c->out, &k);
    c->state = HD_MQTT_CONNECT_SENT;
}

/* Keep the loop's watch on the events the state asks for (a syscall only when they change). */
static void client_watch_sync(struct hd_mqtt_client *c)
{
    if (c->watch == NULL)
        return;
    short want = hd_mqtt_client_events(c);
    uint32_t events = (want & POLLIN ? EPOLLIN : 0) | (want & POLLOUT ? EPOLLOUT : 0);
    if (events != c->watch_events && hd_loop_modify(c->loop, c->watch, events) == 0)
        c->watch_events = events;
}

static void client_on_ready(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct hd_mqtt_client *c = data;
    short revents = (short)((events & EPOLLIN ? POLLIN : 0) | (events & EPOLLOUT ? POLLOUT : 0) |
                            (events & EPOLLERR ? POLLERR : 0) | (events & EPOLLHUP ? POLLHUP : 0));
    hd_mqtt_client_handle(c, revents);
    client_watch_sync(c);
    if (c->after_io)
        c->after_io(c->ctx);
}

void hd_mqtt_client_attach(struct hd_mqtt_client *c, struct hd_loop *loop, void (*after_io)(void *ctx))
{
    c->loop = loop;
    c->after_io = after_io;
}

int hd_mqtt_client_connect(struct hd_mqtt_client *c, hd_error_t *err)
{
    client_reset_io(c);
    if (c->opts.tls.enabled && client_tls_context(c, err) < 0)
        return -1;
    char port[16];
    snprintf(port, sizeof(port), "%d", c->opts.port);
    /* A numeric address is parsed without any lookup (never blocks); only a name goes to the resolver. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST},
                    *res = NULL;
    int rc = getaddrinfo(c->opts.host, port, &hints, &res);
    if (rc == EAI_NONAME) {
        hints.ai_flags = 0;
        rc = getaddrinfo(c->opts.host, port, &hints, &res);
    }
    if (rc != 0)
        return hd_error_set(err, 0, "resolve %s: %s", c->opts.host, gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return hd_error_sys(err, "socket");
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc < 0 && errno != EINPROGRESS) {
        int saved = errno;
        close(fd);
        return hd_error_set(err, saved, "connect %s:%d", c->opts.host, c->opts.port);
    }
    if (c->loop) {
        c->watch = hd_loop_watch(c->loop, fd, EPOLLOUT, client_on_ready, c, err);
        if (c->watch == NULL) {
            close(fd);
            return -1;
        }
        c->watch_events = EPOLLOUT;
    }
    c->fd = fd;
    c->state = HD_MQTT_TCP_CONNECTING;
    c->last_received_ns = c->last_sent_ns = hd_now_ns();
    c->ping_sent_ns = 0;
    return 0;
}

void hd_mqtt_client_close(struct hd_mqtt_client *c, bool graceful)
{
    if (graceful && c->state == HD_MQTT_CONNECTED) {
        mqtt_encode_empty(&c->out, MQTT_DISCONNECT);
        hd_mqtt_client_flush(c);
    }
    client_reset_io(c);
}

enum hd_mqtt_state hd_mqtt_client_state(const struct hd_mqtt_client *c)
{
    return c->state;
}

int hd_mqtt_client_fd(const struct hd_mqtt_client *c)
{
    return c->fd;
}

size_t hd_mqtt_client_pending(const struct hd_mqtt_client *c)
{
    return c->out.len - c->out_pos;
}

short hd_mqtt_client_events(const struct hd_mqtt_client *c)
{
    if (c->state == HD_MQTT_DISCONNECTED)
        return 0;
    if (c->state == HD_MQTT_TCP_CONNECTING)
        return POLLOUT;
    if (c->state == HD_MQTT_TLS_HANDSHAKE)
        return c->tls_want_write ? POLLIN | POLLOUT : POLLIN;
    short ev = POLLIN;
    if (c->out.len > c->out_pos)
        ev |= POLLOUT;
    return ev;
}

/* TLS handshake step: 0 done, 1 in progress, -1 failed (dropped). */
static int client_tls_step(struct hd_mqtt_client *c)
{
    int rc = SSL_connect(c->ssl);
    if (rc == 1)
        return 0;
    int e = SSL_get_error(c->ssl, rc);
    c->tls_want_write = e == SSL_ERROR_WANT_WRITE;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 1;
    char reason[256];
    long verify = SSL_get_verify_result(c->ssl);
    snprintf(reason, sizeof(reason), "TLS handshake: %s%s%s", ERR_reason_error_string(ERR_get_error()),
             verify != X509_V_OK ? ": " : "", verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "");
    client_drop(c, reason);
    return -1;
}

static void client_start_session(struct hd_mqtt_client *c)
{
    if (c->opts.tls.enabled) {
        c->ssl = SSL_new(c->ssl_ctx);
        SSL_set_fd(c->ssl, c->fd);
        const char *name = c->opts.tls.server_name ? c->opts.tls.server_name : c->opts.host;
        SSL_set_tlsext_host_name(c->ssl, name);
        if (!c->opts.tls.insecure)
            SSL_set1_host(c->ssl, name);
        c->state = HD_MQTT_TLS_HANDSHAKE;
        if (client_tls_step(c) != 0)
            return;
    }
    client_send_connect(c);
}

static void client_flush_out(struct hd_mqtt_client *c);

void hd_mqtt_client_flush(struct hd_mqtt_client *c)
{
    client_flush_out(c);
    client_watch_sync(c);
}

static void client_flush_out(struct hd_mqtt_client *c)
{
    if (c->state < HD_MQTT_CONNECT_SENT)
        return;
    while (c->out_pos < c->out.len) {
        size_t n = c->out.len - c->out_pos;
        ssize_t w;
        if (c->ssl) {
            ERR_clear_error();
            int rc = SSL_write(c->ssl, c->out.data + c->out_pos, n > INT32_MAX ? INT32_MAX : (int)n);
            if (rc <= 0) {
                int e = SSL_get_error(c->ssl, rc);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                    return;
                client_drop(c, "TLS write failed");
                return;
            }
            w = rc;
        } else {
            w = send(c->fd, c->out.data + c->out_pos, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return;
                client_drop(c, strerror(errno));
                return;
            }
        }
        c->out_pos += (size_t)w;
        c->last_sent_ns = hd_now_ns();
    }
    c->out.len = c->out_pos = 0;
}

static const char *client_handle_connack(struct hd_mqtt_client *c, uint8_t flags, const uint8_t *b, uint32_t len)
{
    struct mqtt_connack k;
    if (c->state != HD_MQTT_CONNECT_SENT || mqtt_decode_connack(flags, b, len, c->opts.protocol, &k) != 0)
        return "malformed CONNACK";
    if (k.reason != 0) {
        static char reason[64];
        snprintf(reason, sizeof(reason), "connection refused by the broker (code %u)", k.reason);
        return reason;
    }
    c->state = HD_MQTT_CONNECTED;
    if (c->cb.on_connect)
        c->cb.on_connect(c->ctx, k.session_present);
    return NULL;
}

static const char *client_handle_publish(struct hd_mqtt_client *c, uint8_t flags, const uint8_t *b, uint32_t len)
{
    struct mqtt_publish p;
    if (mqtt_decode_publish(flags, b, len, c->opts.protocol, &p) != 0 || p.qos == 2)
        return "malformed PUBLISH";
    if (c->topic_copy_cap < (size_t)p.topic.len + 1) {
        c->topic_copy_cap = (size_t)p.topic.len + 64;
        c->topic_copy = hd_xrealloc(c->topic_copy, c->topic_copy_cap);
    }
    memcpy(c->topic_copy, p.topic.data, p.topic.len);
    c->topic_copy[p.topic.len] = 0;
    struct hd_mqtt_message m = {
        .topic = c->topic_copy,
        .topic_len = p.topic.len,
        .payload = p.payload.data,
        .payload_len = p.payload.len,
        .qos = p.qos,
        .retain = p.retain,
        .dup = p.dup,
        .packet_id = p.packet_id,
        .response_topic = p.props.response_topic.data,
        .response_topic_len = p.props.response_topic.len,
        .correlation = p.props.correlation_data.data,
        .correlation_len = p.props.correlation_data.len,
    };
    if (c->cb.on_message)
        c->cb.on_message(c->ctx, &m);
    return NULL;
}

/* Decode and dispatch one packet; a non-NULL return is why the connection must close. */
static const char *client_dispatch(struct hd_mqtt_client *c, uint8_t type_flags, const uint8_t *b, uint32_t len)
{
    uint8_t type = type_flags >> 4, flags = type_flags & 0x0f;
    if (type == MQTT_CONNACK)
        return client_handle_connack(c, flags, b, len);
    if (c->state != HD_MQTT_CONNECTED)
        return "packet before CONNACK";
    switch (type) {
    case MQTT_PUBLISH: return client_handle_publish(c, flags, b, len);
    case MQTT_PUBACK: {
        struct mqtt_ack a;
        if (mqtt_decode_ack(type, flags, b, len, c->opts.protocol, &a) != 0)
            return "malformed PUBACK";
        if (c->cb.on_puback)
            c->cb.on_puback(c->ctx, a.packet_id, a.reason);
        return NULL;
    }
    case MQTT_SUBACK: {
        struct mqtt_suback s;
        if (mqtt_decode_suback(type, flags, b, len, c->opts.protocol, &s) != 0)
            return "malformed SUBACK";
        if (c->cb.on_suback)
            c->cb.on_suback(c->ctx, s.packet_id, s.reasons, s.n_reasons);
        return NULL;
    }
    case MQTT_PINGRESP:
        if (mqtt_decode_empty(flags, len) != 0)
            return "malformed PINGRESP";
        c->ping_sent_ns = 0;
        return NULL;
    case MQTT_DISCONNECT: return "the broker sent DISCONNECT";
    default: return "unexpected packet type";
    }
}

/* Decode and dispatch every complete packet in the input buffer; -1 when the connection was dropped. */
static int client_process_input(struct hd_mqtt_client *c)
{
    size_t pos = 0;
    for (;;) {
        uint8_t tf;
        uint32_t remaining, header;
        int rc = mqtt_parse_fixed_header(c->in + pos, c->in_len - pos, &tf, &remaining, &header);
        if (rc < 0) {
            client_drop(c, "malformed packet length");
            return -1;
        }
        if (rc == 0 || c->in_len - pos < (size_t)header + remaining)
            break;
        const char *why = client_dispatch(c, tf, c->in + pos + header, remaining);
        if (c->state == HD_MQTT_DISCONNECTED)
            return -1; /* a callback closed us */
        if (why) {
            client_drop(c, why);
            return -1;
        }
        pos += header + remaining;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
    return 0;
}

int hd_mqtt_client_feed(struct hd_mqtt_client *c, const uint8_t *data, size_t len)
{
    if (len == 0)
        return 0;
    if (c->state == HD_MQTT_DISCONNECTED)
        c->state = HD_MQTT_CONNECT_SENT;
    if (c->in_cap - c->in_len < len) {
        c->in_cap = c->in_len + len + 1;
        c->in = hd_xrealloc(c->in, c->in_cap);
    }
    memcpy(c->in + c->in_len, data, len);
    c->in_len += len;
    return client_process_input(c);
}

/* Read what is there; 0 = would block, -1 = dropped. */
static int client_read(struct hd_mqtt_client *c)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        if (c->in_cap - c->in_len < 16384) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 65536;
            c->in = hd_xrealloc(c->in, c->in_cap);
        }
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int rc = SSL_read(c->ssl, c->in + c->in_len,
                              (int)(c->in_cap - c->in_len > INT32_MAX ? INT32_MAX : c->in_cap - c->in_len));
            if (rc <= 0) {
                int e = SSL_get_error(c->ssl, rc);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return 0;
                client_drop(c, e == SSL_ERROR_ZERO_RETURN ? "connection closed by the broker" : "TLS read failed");
                return -1;
            }
            n = rc;
        } else {
            n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return 0;
                client_drop(c, strerror(errno));
                return -1;
            }
            if (n == 0) {
                client_drop(c, "connection closed by the broker");
                return -1;
            }
        }
        c->in_len += (size_t)n;
        c->last_received_ns = hd_now_ns();
        if (client_process_input(c) < 0)
            return -1;
        if (!c->ssl && (size_t)n < 16384)
            return 0;
    }
    return 0;
}

void hd_mqtt_client_handle(struct hd_mqtt_client *c, short revents)
{
    if (c->state == HD_MQTT_DISCONNECTED)
        return;
    if (c->state == HD_MQTT_TCP_CONNECTING) {
        int soerr = 0;
        socklen_t l = sizeof(soerr);
        if (!(revents & (POLLOUT | POLLERR | POLLHUP)))
            return;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
        if (soerr) {
            client_drop(c, strerror(soerr));
            return;
        }
        client_start_session(c);
        hd_mqtt_client_flush(c);
        return;
    }
    if (c->state == HD_MQTT_TLS_HANDSHAKE) {
        if (client_tls_step(c) == 0) {
            client_send_connect(c);
            hd_mqtt_client_flush(c);
        }
        return;
    }
    if (revents & (POLLIN | POLLERR | POLLHUP)) {
        if (client_read(c) < 0)
            return;
    }
    hd_mqtt_client_flush(c);
}

int hd_mqtt_client_tick(struct hd_mqtt_client *c, uint64_t now)
{
    if (c->state == HD_MQTT_DISCONNECTED || c->opts.keepalive == 0)
        return 1000;
    uint64_t ka = (uint64_t)c->opts.keepalive * 1000000000ull;
    if (c->state != HD_MQTT_CONNECTED) {
        if (now - c->last_received_ns > ka)
            client_drop(c, "timed out connecting");
        return 1000;
    }
    if (c->ping_sent_ns && now - c->ping_sent_ns > ka) {
        client_drop(c, "keepalive timeout (no PINGRESP)");
        return 1000;
    }
    if (!c->ping_sent_ns && now - c->last_received_ns > ka / 2) {
        mqtt_encode_empty(&c->out, MQTT_PINGREQ);
        c->ping_sent_ns = now;
        hd_mqtt_client_flush(c);
    }
    return 1000;
}

static void client_publish(struct hd_mqtt_client *c, const char *topic, const void *payload, size_t len, uint8_t qos,
                           bool retain, uint16_t packet_id, const char *response_topic, const void *correlation,
                           size_t correlation_len)
{
    struct mqtt_publish p = {
        .qos = qos,
        .retain = retain,
        .packet_id = packet_id,
        .topic = bytes_z(topic),
        .payload = {payload, (uint32_t)len},
        .props = {.response_topic = bytes_z(response_topic),
                  .correlation_data = {correlation, (uint32_t)correlation_len}},
    };
    mqtt_encode_publish(&c->out, c->opts.protocol, &p);
}

void hd_mqtt_publish(struct hd_mqtt_client *c, const char *topic, const void *payload, size_t len, uint8_t qos,
                     bool retain, uint16_t packet_id, const void *correlation, size_t correlation_len)
{
    client_publish(c, topic, payload, len, qos, retain, packet_id, NULL, correlation, correlation_len);
}

void hd_mqtt_publish_request(struct hd_mqtt_client *c, const char *topic, const void *payload, size_t len, uint8_t qos,
                             uint16_t packet_id, const char *response_topic, const void *correlation,
                             size_t correlation_len)
{
    client_publish(c, topic, payload, len, qos, false, packet_id, response_topic, correlation, correlation_len);
}

void hd_mqtt_puback(struct hd_mqtt_client *c, uint16_t packet_id)
{
    mqtt_encode_ack(&c->out, c->opts.protocol, MQTT_PUBACK, packet_id, RC_SUCCESS);
}

void hd_mqtt_subscribe(struct hd_mqtt_client *c, uint16_t packet_id, char *const *filters, uint8_t qos)
{
    mqtt_encode_subscribe(&c->out, c->opts.protocol, packet_id, filters, qos);
}

int hd_mqtt_parse_address(const char *text, int default_port, char **host, int *port, hd_error_t *err)
{
    const char *colon = strrchr(text, ':');
    *port = default_port;
    if (colon && !strchr(colon, ']') && strchr(text, ':') == colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p <= 0 || p > 65535)
            return hd_error_set_code(err, HD_EXIT_USAGE, 0, "bad port in %s", text);
        *port = (int)p;
        *host = strndup(text, (size_t)(colon - text));
    } else {
        *host = hd_xstrdup(text);
    }
    if (!**host) {
        free(*host);
        *host = NULL;
        return hd_error_set_code(err, HD_EXIT_USAGE, 0, "missing host in %s", text);
    }
    return 0;
}
