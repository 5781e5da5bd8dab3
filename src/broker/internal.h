/*
 * internal.h - the broker's shared structures: messages, sessions,
 * connections, the topic tree, and the functions the subsystem files call on
 * each other. Nothing here is visible outside src/broker/.
 *
 * Ownership in one paragraph: a connection (struct broker_conn) belongs to the
 * event loop and points at its session; a session (struct broker_session)
 * belongs to the session table and outlives connections when it is persistent.
 * A message (struct broker_msg) is reference counted and shared by every
 * delivery, the retained store and wills; a message routed only to QoS 0
 * subscribers that are online is never copied off the read buffer.
 */
#ifndef HEDGE_BROKER_INTERNAL_H
#define HEDGE_BROKER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/loop.h"
#include "broker/broker.h"
#include "mqtt/packet.h"
#include "mqtt/topic.h"
#include "mqtt/ws.h"

/* Password file hashes (auth.c verifies, passwd.c writes): PBKDF2-HMAC-SHA512, mosquitto's $7$ format. */
#define PBKDF2_ITERATIONS 10000
#define SALT_LEN 12
#define HASH_LEN 64

#define BROKER_NS_PER_S 1000000000ull

struct broker_msg {
    uint32_t refs; /* 0 = a view into a read buffer, not owned */
    uint8_t qos;
    bool retain;
    uint16_t topic_len;
    uint32_t payload_len, props_len;
    uint64_t expire_at_ns; /* 0 = never (CLOCK_MONOTONIC) */
    uint32_t expiry_wall;  /* message expiry interval as received (for persistence) */
    char *topic;           /* NUL-terminated */
    uint8_t *payload;
    uint8_t *props;           /* forwardable v5 properties, already encoded */
    struct broker_msg *owned; /* for a view: its heap copy once someone kept it */
};

enum delivery_state {
    DELIV_QUEUED,    /* waiting for in-flight room or for the client to come back */
    DELIV_WAIT_ACK,  /* PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2) */
    DELIV_WAIT_COMP, /* PUBREL sent; waiting for PUBCOMP */
};

struct broker_delivery {
    struct broker_delivery *next, *prev;
    struct broker_msg *msg;
    int64_t store_id;   /* row in the store, 0 = not persisted */
    uint32_t n_sub_ids; /* Subscription Identifiers of the matching subscriptions (MQTT-3.3.4-3/4) */
    union {
        uint32_t one;   /* n_sub_ids <= 1: no allocation in the common case */
        uint32_t *many; /* n_sub_ids > 1: heap, freed with the delivery */
    } sub_ids;
    uint16_t packet_id;
    uint8_t qos, state;
    bool retain;
    bool held; /* in flight, but not yet resent on this connection (its Receive Maximum is smaller) */
};

struct broker_sub {
    char *filter;      /* as subscribed, without the $share/group/ prefix */
    char *share_group; /* NULL unless shared */
    uint32_t sub_id;
    uint8_t options; /* QoS | NL<<2 | RAP<<3 | RH<<4 */
};

enum session_state { SESSION_ONLINE, SESSION_OFFLINE };

struct broker_session {
    char *client_id;
    struct broker_session *hash_next;
    struct broker_conn *conn; /* NULL while offline */
    enum session_state state;
    uint32_t expiry_interval; /* seconds; 0xFFFFFFFF = never */
    uint64_t offline_since_ns;
    bool persisted; /* has a row in the store */
    uint8_t protocol;
    struct broker_sub *subs;
    uint32_t n_subs, cap_subs;
    struct broker_delivery *out_head, *out_tail;
    struct broker_delivery *first_queued; /* where the queued part of the list starts, or NULL */
    uint32_t n_inflight, n_queued;
    uint32_t n_held; /* in-flight deliveries waiting to be resent (delivery.held) */
    uint64_t queued_bytes;
    uint16_t next_packet_id;
    uint16_t *qos2_in; /* incoming QoS 2 packet ids awaiting PUBREL */
    uint32_t n_qos2_in, cap_qos2_in;
    /* routing scratch: one match per session per publish */
    uint64_t match_gen;
    uint8_t match_qos, match_opts;
    uint32_t match_sub_id;                    /* the first identifier; further ones go to match_more_ids */
    uint32_t *match_more_ids;                 /* grown once, reused by every later publish */
    uint32_t n_match_ids, cap_match_more_ids; /* n_match_ids counts match_sub_id too */
    /* a will waiting for its delay (5.0) after the connection dropped */
    struct broker_msg *pending_will;
    uint64_t will_at_ns;
    char *username;
};

enum conn_state { CONN_WAIT_CONNECT, CONN_ACTIVE, CONN_CLOSED };

struct broker_tls;

/* A connection on a ws:// or wss:// listener (websocket.c): the handshake, then frames around the MQTT
 * bytes. Input is unframed in place before the MQTT parser sees it; output leaves c->out as one binary
 * frame per flush, gathered in out (after the handshake response and next to pongs and the close). */
struct broker_ws {
    const char *path;    /* the listener's path, NULL = any */
    bool upgraded;       /* the 101 response is queued: frames from now on */
    bool peer_closed;    /* a close frame came in: answer it and drop the connection */
    bool close_sent;     /* our close frame is queued */
    uint16_t close_code; /* what our close frame says (0 = decided when closing) */
    char *request;       /* the handshake request read so far */
    size_t request_len;
    struct mqtt_ws_decoder decoder;
    struct mqtt_buf out; /* framed bytes to write */
    size_t out_sent;
};

struct broker_conn {
    int fd;
    struct hd_watch *watch; /* the socket in the host loop */
    struct hd_broker *broker;
    enum conn_state state;
    uint8_t protocol; /* 3, 4 or 5 after CONNECT */
    bool want_write, in_flush_list, is_tls, disconnect_clean;
    struct broker_session *session;
    struct broker_conn *prev, *next; /* all connections */
    struct broker_conn *flush_next;  /* pending writes this round */
    struct broker_conn *close_next;  /* closed this round, freed at round end */
    uint8_t *in;                     /* partial packet kept between reads */
    uint32_t in_len, in_cap;
    struct mqtt_buf out;  /* packet bytes, with gaps where referenced payloads go */
    size_t out_sent;      /* bytes of `out` already written */
    struct out_ref *refs; /* large payloads sent by reference (writev), in order */
    uint32_t n_refs, cap_refs, ref_head;
    uint32_t ref_partial; /* bytes of refs[ref_head]'s payload already written */
    uint64_t ref_bytes;   /* payload bytes still to write by reference */
    uint64_t last_rx_ns, created_ns;
    uint16_t keepalive;
    uint16_t client_receive_max; /* in-flight limit toward the client */
    uint16_t in_unacked;         /* QoS 2 PUBLISHes of this connection awaiting PUBREL (our Receive Maximum) */
    uint16_t out_alias_max;      /* aliases we may use toward the client (min of its maximum and ours) */
    uint16_t n_out_aliases;
    char **out_aliases;         /* alias - 1 -> topic, allocated on first use */
    uint32_t client_max_packet; /* largest packet the client accepts, 0 = protocol max */
    uint16_t alias_max;         /* aliases the client may use (what we announced) */
    char **aliases;             /* alias -> topic, allocated on first use */
    struct broker_msg *will;
    uint32_t will_delay;
    char *username;
    char *cert_cn; /* client certificate CN on TLS listeners */
    struct broker_tls *tls;
    struct broker_ws *ws; /* NULL unless on a WebSocket listener */
};

/* A payload written by reference: it goes out right after out.data[at - 1]. */
struct out_ref {
    size_t at;
    struct broker_msg *msg;
};

/* A node of the subscription tree or of the retained tree: one topic level. */
struct topic_node {
    char *level;
    uint32_t level_len;
    struct topic_node *parent;
    struct topic_node **children;   /* sorted by (len, bytes); "+" and "#" are kept apart: */
    struct topic_node *plus, *hash; /* the wildcard children, looked up on every level */
    uint32_t n_children, cap_children;
    struct topic_sub *subs;
    uint32_t n_subs, cap_subs;
    struct share_group *shares;
    uint32_t n_shares;
    struct broker_msg *retained;
};

struct topic_sub {
    struct broker_session *session;
    uint32_t sub_id;
    uint8_t options;
};

struct share_group {
    char *name;
    struct topic_sub *subs;
    uint32_t n_subs, cap_subs, next;
};

struct broker_listener {
    int fd;
    bool tls;
    int port;
    bool ws;                /* ws:// or wss:// (with tls) */
    char *ws_path;          /* the path a WebSocket listener serves, NULL = any */
    struct hd_watch *watch; /* in the host loop, once attached */
    struct hd_broker *broker;
};

/* Recent connection counts per source address (client_connection_rate). */
#define RATE_SLOTS 1024
struct rate_slot {
    uint8_t addr[16];
    uint64_t window_ns;
    uint32_t count;
};

struct broker_auth;
struct broker_acl;
struct broker_store;
struct broker_tls_ctx;

struct hd_broker {
    struct hd_broker_config cfg;
    struct hd_loop *loop;            /* hd_broker_attach; NULL before */
    struct hd_timer *tick;           /* the 1 s tick */
    struct hd_defer *round;          /* the end of the current dispatch round, once it has work */
    bool shutting_down;              /* hd_broker_free: no wills, keep stored sessions */
    struct broker_session **targets; /* routing scratch */
    uint32_t n_targets, cap_targets;
    bool routing_fanout;
    struct broker_delivery *delivery_pool; /* recycled deliveries (session.c) */
    uint32_t delivery_pool_size;           /* the message being routed goes to more than one session */
    struct broker_listener *listeners;
    size_t n_listeners;
    struct broker_conn *conns;
    struct broker_conn *flush_list, *close_list;
    struct broker_ws_linger *ws_lingering; /* closed WebSocket sockets being drained (websocket.c) */
    struct broker_session **sessions;      /* hash table by client id */
    uint32_t n_session_buckets, n_sessions;
    struct topic_node sub_root, retained_root;
    uint64_t match_gen;
    uint8_t *read_buf;
    size_t read_buf_size;
    struct broker_auth *auth;
    struct broker_acl *acl;
    struct broker_store *store;
    struct broker_tls_ctx *tls;
    struct hd_broker_stats stats;
    uint64_t retained_count;
    uint64_t last_sys_ns, start_ns;
    uint64_t now_ns; /* CLOCK_MONOTONIC at the start of this dispatch round */
    uint64_t rate_window_ns;
    uint32_t rate_count;
    struct rate_slot *rate_slots; /* allocated when client_connection_rate is set */
    uint64_t next_client_seq;
};

/* ---- message ---- */
struct broker_msg *broker_msg_new(const char *topic, size_t topic_len, const void *payload, size_t payload_len,
                                  const void *props, size_t props_len, uint8_t qos, bool retain);
/* Return a counted reference: copies a read-buffer view once, then shares. */
struct broker_msg *broker_msg_hold(struct broker_msg *m);
void broker_msg_unref(struct broker_msg *m);
bool broker_msg_expired(const struct broker_msg *m, uint64_t now);

/* ---- topic trees (topic_tree.c; names, filters and matching are mqtt/topic.h) ---- */
int broker_tree_subscribe(struct topic_node *root, const char *filter, const char *group, struct broker_session *s,
                          uint8_t options, uint32_t sub_id, bool *existed);
bool broker_tree_unsubscribe(struct topic_node *root, const char *filter, const char *group, struct broker_session *s);
/* Call fn for each subscription matching topic (shared groups pick one member). */
typedef void (*broker_match_fn)(void *ctx, struct broker_session *s, uint8_t options, uint32_t sub_id);
void broker_tree_match(struct topic_node *root, const char *topic, broker_match_fn fn, void *ctx);
/* Retained store: set (msg NULL or empty payload clears), walk matches of a filter. */
void broker_retain_set(struct hd_broker *b, const char *topic, struct broker_msg *msg);
typedef void (*broker_retain_fn)(void *ctx, struct broker_msg *m);
void broker_retain_match(struct hd_broker *b, const char *filter, broker_retain_fn fn, void *ctx);
void broker_tree_free(struct topic_node *root);

/* ---- sessions (session.c) ---- */
struct broker_session *broker_session_find(struct hd_broker *b, const char *client_id);
struct broker_session *broker_session_create(struct hd_broker *b, const char *client_id);
void broker_session_destroy(struct hd_broker *b, struct broker_session *s);
bool broker_session_persistent(const struct broker_session *s);
void broker_session_add_sub(struct broker_session *s, const char *filter, const char *group, uint8_t options,
                            uint32_t sub_id);
bool broker_session_remove_sub(struct broker_session *s, const char *filter, const char *group);
/* Queue or send one message to a session. */
void broker_session_deliver(struct hd_broker *b, struct broker_session *s, struct broker_msg *m, uint8_t qos,
                            bool retain, const uint32_t *sub_ids, uint32_t n_sub_ids);
/* Send queued messages while in-flight room allows. */
void broker_session_pump(struct hd_broker *b, struct broker_session *s);
/* After reconnect: resend in-flight messages with DUP set, then pump. */
void broker_session_resume(struct hd_broker *b, struct broker_session *s);
/* PUBACK/PUBREC/PUBCOMP from the client; returns false if the id is unknown. */
bool broker_session_ack(struct hd_broker *b, struct broker_session *s, uint8_t type, uint16_t packet_id);
/* Append a delivery read back from the store. */
void broker_session_restore_delivery(struct broker_session *s, struct broker_msg *m, uint8_t qos, bool retain,
                                     const uint32_t *sub_ids, uint32_t n_sub_ids, uint8_t state, uint16_t packet_id,
                                     int64_t store_id);
/* The Subscription Identifiers of a delivery: returns how many, *ids points at them. */
uint32_t broker_delivery_sub_ids(const struct broker_delivery *d, const uint32_t **ids);
/* End an in-flight delivery without further packets (5.0 PUBREC with an error reason). */
void broker_session_cancel(struct hd_broker *b, struct broker_session *s, uint16_t packet_id);
bool broker_session_qos2_in_has(struct broker_session *s, uint16_t id);
void broker_session_qos2_in_add(struct broker_session *s, uint16_t id);
bool broker_session_qos2_in_remove(struct broker_session *s, uint16_t id);
/* Expire offline sessions and fire delayed wills. */
void broker_sessions_tick(struct hd_broker *b, uint64_t now);
void broker_sessions_free(struct hd_broker *b);
void broker_delivery_pool_free(struct hd_broker *b);

/* ---- connections and the loop (broker.c) ---- */
/* Ask epoll for writability (pending output, TLS handshake) or stop asking. */
void broker_conn_want_write(struct hd_broker *b, struct broker_conn *c, bool on);
struct mqtt_buf *broker_conn_outbuf(struct hd_broker *b, struct broker_conn *c);
/* Close with an optional v5 DISCONNECT carrying reason (0 = none sent). */
void broker_conn_close(struct hd_broker *b, struct broker_conn *c, uint8_t reason);
/* False when the message was discarded instead: larger than the client's Maximum Packet Size
 * (MQTT-3.1.2-24/25) or a QoS 0 message behind a full backlog; counted in messages_dropped. */
bool broker_send_publish(struct hd_broker *b, struct broker_conn *c, struct broker_msg *m, uint8_t qos, bool retain,
                         bool dup, uint16_t packet_id, const uint32_t *sub_ids, uint32_t n_sub_ids);
void broker_send_ack(struct hd_broker *b, struct broker_conn *c, uint8_t type, uint16_t packet_id, uint8_t reason);
void broker_send_disconnect(struct hd_broker *b, struct broker_conn *c, uint8_t reason, const char *why);

/* ---- handlers ---- */
int broker_handle_connect(struct hd_broker *b, struct broker_conn *c, const uint8_t *body, uint32_t len);
int broker_handle_disconnect(struct hd_broker *b, struct broker_conn *c, uint8_t flags, const uint8_t *body,
                             uint32_t len);
int broker_handle_publish(struct hd_broker *b, struct broker_conn *c, uint8_t flags, const uint8_t *body, uint32_t len);
int broker_handle_ack(struct hd_broker *b, struct broker_conn *c, uint8_t type, uint8_t flags, const uint8_t *body,
                      uint32_t len);
int broker_handle_subscribe(struct hd_broker *b, struct broker_conn *c, uint8_t flags, const uint8_t *body,
                            uint32_t len);
int broker_handle_unsubscribe(struct hd_broker *b, struct broker_conn *c, uint8_t flags, const uint8_t *body,
                              uint32_t len);
/* Route a message to every matching subscriber (and the retained store when retain is set). */
void broker_route(struct hd_broker *b, struct broker_session *from, struct broker_msg *m);
/* The connection went away: publish or schedule its will, detach or end its session. */
void broker_connection_lost(struct hd_broker *b, struct broker_conn *c);
void broker_publish_will(struct hd_broker *b, struct broker_msg *will);

/* ---- auth / acl ---- */
int broker_auth_load(struct hd_broker *b, hd_error_t *err);
bool broker_auth_has_users(struct hd_broker *b);
/* 0 = accepted, else a reason code. */
int broker_auth_check(struct hd_broker *b, const struct mqtt_bytes *user, const struct mqtt_bytes *password,
                      bool has_user, bool has_password);
void broker_auth_free(struct hd_broker *b);
int broker_acl_load(struct hd_broker *b, hd_error_t *err);
enum { ACL_READ = 1, ACL_WRITE = 2 };
bool broker_acl_allows(struct hd_broker *b, const char *username, const char *client_id, const char *topic, int access);
/* Drop the run-time rules of a user (hd_broker_remove_user). */
void broker_acl_forget_user(struct hd_broker *b, const char *user);
void broker_acl_free(struct hd_broker *b);

/* ---- store (persist.c) ---- */
int broker_store_open(struct hd_broker *b, hd_error_t *err);
void broker_store_close(struct hd_broker *b);
/* Group commit: called before replies are flushed. Returns -1 when a transaction of this dispatch round
 * failed (rolled back and logged): the round's acknowledgements must not be sent. */
int broker_store_commit(struct hd_broker *b);
/* The end of a dispatch round, after its replies were flushed or withheld: commit, forget the round's
 * failure, and after an earlier failure rewrite the store from memory. */
void broker_store_round_end(struct hd_broker *b);
void broker_store_retain(struct hd_broker *b, const char *topic, struct broker_msg *m);
void broker_store_session(struct hd_broker *b, struct broker_session *s);
void broker_store_session_delete(struct hd_broker *b, struct broker_session *s);
void broker_store_delivery_add(struct hd_broker *b, struct broker_session *s, struct broker_delivery *d);
void broker_store_delivery_update(struct hd_broker *b, struct broker_delivery *d);
void broker_store_delivery_delete(struct hd_broker *b, struct broker_delivery *d);
/* The incoming QoS 2 packet ids awaiting PUBREL of a persistent session. */
void broker_store_qos2_in(struct hd_broker *b, struct broker_session *s, uint16_t packet_id, bool add);

/* ---- tls.c ---- */
int broker_tls_init(struct hd_broker *b, hd_error_t *err);
void broker_tls_free(struct hd_broker *b);
int broker_tls_accept(struct hd_broker *b, struct broker_conn *c);
/* -1 error/EOF, else bytes (0 = would block). */
ssize_t broker_tls_read(struct broker_conn *c, void *buf, size_t len);
ssize_t broker_tls_write(struct broker_conn *c, const void *buf, size_t len);
void broker_tls_conn_free(struct broker_conn *c);

/* ---- WebSocket transport (websocket.c; the codec is mqtt/ws.h) ---- */
/* A listener address: "HOST:PORT", "ws://HOST:PORT[/PATH]" or "wss://HOST:PORT[/PATH]". Fills the
 * HOST:PORT part, the path (NULL when none: any path) and the scheme; false when it is none of those. */
struct broker_listen_addr {
    char *host_port, *path;
    bool ws, tls;
};
bool broker_listen_addr_parse(const char *spec, struct broker_listen_addr *out);
void broker_listen_addr_free(struct broker_listen_addr *a);
/* The connection came in on a WebSocket listener: expect the handshake first. */
void broker_ws_accept(struct broker_conn *c, const char *path);
/* Bytes read from a WebSocket connection, turned in place into the MQTT bytes they carry: returns how
 * many are now at data[0..), or -1 when the connection was closed (a refused handshake, a violation). */
ssize_t broker_ws_input(struct hd_broker *b, struct broker_conn *c, uint8_t *data, size_t len);
/* Move the MQTT bytes pending in c->out into one binary frame in c->ws->out. */
void broker_ws_frame_output(struct broker_conn *c);
/* Queue our close frame (once, after the handshake): the peer's code echoed, or the one the decoder
 * failed with, else 1001 when the broker shuts down and 1000 otherwise. */
void broker_ws_close(struct broker_conn *c, uint8_t mqtt_reason);
void broker_ws_free(struct broker_conn *c);
/* Close a WebSocket connection's socket the way RFC 6455 §7.1.1 asks of a server: shut down the
 * write side (after our close frame), read and discard until the peer closes or WS_LINGER_SECONDS
 * pass, then close, so unread input cannot make the kernel reset the connection ahead of the close
 * frame. Takes the fd (closes it at once when there is no loop or the broker shuts down). */
void broker_ws_linger(struct hd_broker *b, int fd);
/* Close every socket still lingering (hd_broker_free). */
void broker_ws_linger_free_all(struct hd_broker *b);
/* Bytes queued in c->ws->out and not yet written (0 for other connections). */
size_t broker_ws_pending(const struct broker_conn *c);

/* ---- sys.c ---- */
void broker_sys_publish(struct hd_broker *b, uint64_t now);

#endif
