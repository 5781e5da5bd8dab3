/*
 * client.h - a small non-blocking MQTT client (3.1.1 or 5) for the uplink,
 * the function host, `hedge invoke` and the benches, built on the one packet
 * codec (src/mqtt/packet.h: every packet it sends or receives goes through
 * it). Topic names and filters: src/mqtt/topic.h.
 *
 * The client owns one socket and never blocks: the caller polls
 * hd_mqtt_client_fd() for hd_mqtt_client_events() and hands the revents to
 * hd_mqtt_client_handle(), which reads, decodes and calls the callbacks, then
 * writes what is queued. So it drops into any poll loop; with hd_mqtt_client_attach
 * it registers itself with an hd_loop (the uplink in hedged and hedge-uplink).
 *
 * Acknowledgements are the caller's: an incoming QoS 1 PUBLISH is NOT
 * acknowledged until the caller calls hd_mqtt_puback(). That is what lets the
 * uplink acknowledge the local broker only after the spool commit.
 *
 * Lifecycle (enum hd_mqtt_state): DISCONNECTED -> TCP_CONNECTING ->
 * [TLS_HANDSHAKE] -> CONNECT_SENT -> CONNECTED -> DISCONNECTED. Any protocol
 * error, EOF or keepalive timeout closes the socket and reports on_disconnect.
 * Numeric addresses never block; host names are resolved with getaddrinfo
 * (blocking: use addresses for hosts that may not resolve quickly).
 */
#ifndef HEDGE_MQTT_CLIENT_H
#define HEDGE_MQTT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

enum hd_mqtt_state {
    HD_MQTT_DISCONNECTED,
    HD_MQTT_TCP_CONNECTING,
    HD_MQTT_TLS_HANDSHAKE,
    HD_MQTT_CONNECT_SENT,
    HD_MQTT_CONNECTED,
};

struct hd_mqtt_tls {
    bool enabled;
    char *ca_file;     /* trust anchors; NULL = the system store */
    char *cert_file;   /* client certificate chain (optional) */
    char *key_file;    /* its private key */
    char *server_name; /* name checked in the server certificate; default: host */
    bool insecure;     /* skip certificate verification (tests only) */
};

struct hd_mqtt_options {
    char *host;
    int port;
    char *client_id;
    char *username, *password;
    bool clean_session;
    uint16_t keepalive; /* seconds */
    uint8_t protocol;   /* 4 (3.1.1) or 5 */
    struct hd_mqtt_tls tls;
    /* The will: what the broker publishes when the connection ends without a DISCONNECT
     * (will_topic NULL: none). */
    char *will_topic, *will_payload;
    uint8_t will_qos;
    bool will_retain;
};

/* One received PUBLISH; the pointers are valid only during the callback. */
struct hd_mqtt_message {
    const char *topic; /* NUL-terminated copy */
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
    uint8_t qos;
    bool retain, dup;
    uint16_t packet_id;
    const uint8_t *response_topic; /* MQTT 5 only, else NULL */
    size_t response_topic_len;
    const uint8_t *correlation; /* MQTT 5 only, else NULL */
    size_t correlation_len;
};

struct hd_mqtt_callbacks {
    void (*on_connect)(void *ctx, bool session_present);
    void (*on_message)(void *ctx, const struct hd_mqtt_message *msg);
    void (*on_puback)(void *ctx, uint16_t packet_id, uint8_t reason);
    void (*on_suback)(void *ctx, uint16_t packet_id, const uint8_t *codes, size_t n);
    void (*on_disconnect)(void *ctx, const char *reason);
};

struct hd_mqtt_client;

/* The options are copied. */
struct hd_mqtt_client *hd_mqtt_client_new(const struct hd_mqtt_options *opts, const struct hd_mqtt_callbacks *cb,
                                          void *ctx);
void hd_mqtt_client_free(struct hd_mqtt_client *c);
/* Replace the callbacks' context. */
void hd_mqtt_client_set_context(struct hd_mqtt_client *c, void *ctx);

/* Start connecting (non-blocking). -1 with err when it fails at once. */
int hd_mqtt_client_connect(struct hd_mqtt_client *c, hd_error_t *err);
/* Close the socket (sends DISCONNECT first when connected and `graceful`). */
void hd_mqtt_client_close(struct hd_mqtt_client *c, bool graceful);

enum hd_mqtt_state hd_mqtt_client_state(const struct hd_mqtt_client *c);
int hd_mqtt_client_fd(const struct hd_mqtt_client *c);
/* POLLIN|POLLOUT as needed. */
short hd_mqtt_client_events(const struct hd_mqtt_client *c);
/*
 * Or let the client register itself with an event loop (src/base/loop.h): from the next connect on
 * it watches its own socket (removed before every close, so a reused fd number is never confused),
 * handles readiness, and keeps the watched events in step with its state at the end of every
 * handle and flush (epoll_ctl only when they change). Queue packets, then hd_mqtt_client_flush.
 * after_io(ctx) runs after each readiness it handled (NULL: nothing).
 */
struct hd_loop;
void hd_mqtt_client_attach(struct hd_mqtt_client *c, struct hd_loop *loop, void (*after_io)(void *ctx));
/* Process readiness: read, decode, callback, write. The state tells the result. */
void hd_mqtt_client_handle(struct hd_mqtt_client *c, short revents);
/* Write queued bytes now (after a batch of publishes/acks). */
void hd_mqtt_client_flush(struct hd_mqtt_client *c);
/* Keepalive: send PINGREQ when idle, drop a dead peer. Returns ms until the next tick is due. */
int hd_mqtt_client_tick(struct hd_mqtt_client *c, uint64_t now_ns);
/* Bytes queued but not yet written (for back-pressure). */
size_t hd_mqtt_client_pending(const struct hd_mqtt_client *c);

/*
 * Queue a PUBLISH. packet_id must be non-zero for QoS 1 (the caller owns the
 * id space). MQTT 5 only: response_topic / correlation may be given.
 */
void hd_mqtt_publish(struct hd_mqtt_client *c, const char *topic, const void *payload, size_t len, uint8_t qos,
                     bool retain, uint16_t packet_id, const void *correlation, size_t correlation_len);
/* MQTT 5 request: a PUBLISH carrying a response topic and correlation data. */
void hd_mqtt_publish_request(struct hd_mqtt_client *c, const char *topic, const void *payload, size_t len, uint8_t qos,
                             uint16_t packet_id, const char *response_topic, const void *correlation,
                             size_t correlation_len);
void hd_mqtt_puback(struct hd_mqtt_client *c, uint16_t packet_id);
void hd_mqtt_subscribe(struct hd_mqtt_client *c, uint16_t packet_id, char *const *filters, uint8_t qos);

/*
 * For tests and the fuzz target: process bytes as if the broker had sent
 * them (a DISCONNECTED client is treated as waiting for CONNACK). -1 when
 * they made the client drop the connection.
 */
int hd_mqtt_client_feed(struct hd_mqtt_client *c, const uint8_t *data, size_t len);

/* Split "host:port" (port default `default_port`). */
int hd_mqtt_parse_address(const char *text, int default_port, char **host, int *port, hd_error_t *err);

#endif
