/*
 * broker.h - the MQTT 3.1.1 + 5.0 broker as an embeddable subsystem.
 *
 * The broker runs in its host's event loop (src/base/loop.h): hd_broker_attach
 * adds its listeners, then every accepted socket, and a 1 s tick to the loop;
 * hedged attaches it to its one loop, the standalone `hedge-broker` to a loop
 * of its own. Nothing in the broker blocks: sockets are non-blocking, and
 * SQLite commits happen once per loop turn (group commit, deferred work at the
 * end of the turn) before acknowledgements are written.
 */
#ifndef HEDGE_BROKER_H
#define HEDGE_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

struct hd_broker;
struct hd_loop;

enum hd_broker_queue_policy {
    HD_BROKER_DROP_NEW,    /* a full queue refuses the new message (default) */
    HD_BROKER_DROP_OLDEST, /* a full queue drops its oldest queued (not in-flight) message */
};

struct hd_broker_config {
    char **listen;     /* "HOST:PORT" plain TCP listeners, "ws://HOST:PORT[/PATH]" and "wss://..." WebSocket
                        * listeners; default (no listener at all) 127.0.0.1:1883 */
    char **listen_tls; /* "HOST:PORT" TLS listeners */
    char *tls_cert, *tls_key, *tls_ca;
    bool tls_require_cert;     /* client certificate mandatory on TLS listeners */
    bool tls_cert_as_username; /* the certificate's CN becomes the username */
    char *state_dir;           /* SQLite store (broker.db) lives here; NULL = no persistence */
    bool sync_full;            /* fsync every group commit (default: survive kill -9, not power loss) */
    char *password_file;
    char *acl_file;
    int allow_anonymous;      /* -1 = default: allowed only while no user is configured */
    uint32_t max_packet_size; /* largest packet accepted (and announced in CONNACK) */
    uint16_t max_inflight;    /* unacknowledged QoS 1/2 messages toward one client */
    uint32_t max_queued_messages;
    uint64_t max_queued_bytes; /* 0 = unlimited */
    enum hd_broker_queue_policy queue_policy;
    uint32_t max_connections;        /* 0 = unlimited */
    uint32_t connection_rate;        /* new connections per second accepted, 0 = unlimited */
    uint32_t client_connection_rate; /* new connections per second from one source address, 0 = unlimited */
    uint16_t topic_alias_max;        /* aliases a 5.0 client may use toward the broker */
    uint16_t topic_alias_out;        /* aliases the broker uses toward a 5.0 client that allows them, 0 = off */
    uint16_t receive_maximum;        /* unacknowledged QoS 1/2 PUBLISHes a client may have toward us */
    char *response_information;      /* sent in CONNACK to a client that asks for it, NULL = none */
    uint16_t max_keepalive;          /* 0 = no cap */
    uint32_t connect_timeout_ms;     /* a connection must send CONNECT within this */
    uint32_t sys_interval;           /* seconds between $SYS updates, 0 = off */
    uint32_t websocket_max_message;  /* largest WebSocket frame or message, 0 = max_packet_size */
};

/* Fill cfg with the defaults. */
void hd_broker_config_init(struct hd_broker_config *cfg);
void hd_broker_config_free(struct hd_broker_config *cfg);
/* Read a mosquitto-style "key value" config file into cfg. */
int hd_broker_config_load(struct hd_broker_config *cfg, const char *path, hd_error_t *err);
/* Set one setting from the `broker` object of hedged's JSON config (key as there: "listen",
 * "max_inflight_messages"); errors read "broker.KEY: must be ...". Same table as the file. */
struct json_t;
int hd_broker_config_set_json(struct hd_broker_config *cfg, const char *key, const struct json_t *value,
                              hd_error_t *err);

/* Bind the listeners, open the store (restoring retained messages and sessions), load auth files. */
int hd_broker_new(const struct hd_broker_config *cfg, struct hd_broker **out, hd_error_t *err);
/* Serve in loop: watch the listeners (and later each connection), start the 1 s tick. Once only;
 * the broker must be freed before the loop. */
int hd_broker_attach(struct hd_broker *b, struct hd_loop *loop, hd_error_t *err);
/* Attach with the listeners not yet watched: clients wait in their backlog until hd_broker_serve().
 * hedged's network child serves only once hedged's users and rules are in (a CONNECT judged before
 * them would pass as anonymous, and a PUBLISH routed between a user's write and read rules would miss
 * its subscriber). */
int hd_broker_attach_held(struct hd_broker *b, struct hd_loop *loop, hd_error_t *err);
int hd_broker_serve(struct hd_broker *b, hd_error_t *err);
/* Local port of the n-th plain listener (for tests binding port 0). */
int hd_broker_port(struct hd_broker *b, int n);
/* Close every connection, flush the store, free everything. */
void hd_broker_free(struct hd_broker *b);

struct hd_broker_stats {
    uint64_t clients_connected, clients_total, messages_received, messages_sent, bytes_received, bytes_sent,
        messages_dropped, retained_count, subscriptions;
};
void hd_broker_get_stats(struct hd_broker *b, struct hd_broker_stats *out);

/*
 * Credentials hedged hands to workloads at run time (kept in memory, next to
 * the password file's users). A user given rules with hd_broker_allow() may
 * use only those topics, even when no acl_file is configured.
 */
int hd_broker_set_user(struct hd_broker *b, const char *user, const char *password, hd_error_t *err);
/* The same for hedged's own clients (its uplink): checked like any user, but its existence alone
 * does not make an automatic allow_anonymous refuse anonymous clients. */
int hd_broker_set_internal_user(struct hd_broker *b, const char *user, const char *password, hd_error_t *err);
void hd_broker_remove_user(struct hd_broker *b, const char *user);
/* Whether a client without a username is let in now (allow_anonymous, else: no user but internal ones). */
bool hd_broker_anonymous_allowed(struct hd_broker *b);
/* access: "read", "write" or "readwrite"; filter may use %u and %c. */
int hd_broker_allow(struct hd_broker *b, const char *user, const char *access, const char *filter, hd_error_t *err);

/* Add or replace USER in a password file with a salted PBKDF2-SHA512 hash. */
int hd_broker_passwd(const char *file, const char *user, const char *password, hd_error_t *err);
/* The same with the password read from stdin's first line (prompting on a terminal):
 * `hedge broker passwd` and `hedge-broker passwd`. */
int hd_broker_passwd_stdin(const char *file, const char *user, hd_error_t *err);

#endif
