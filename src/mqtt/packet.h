/*
 * packet.h - the MQTT 3.1.1 / 5.0 packet codec, the one place MQTT is encoded
 * and decoded: a strict, length-checked decoder for every packet a client may
 * send (the broker's side) and for the packets a broker sends (CONNACK,
 * SUBACK/UNSUBACK, PUBLISH, the acks, PINGRESP: the client's side), the buffer
 * encoders the broker builds its packets with, and whole-packet encoders for
 * what a client sends (CONNECT, PUBLISH, SUBSCRIBE, the acks, PINGREQ,
 * DISCONNECT) used by src/mqtt/client.c and the benches.
 *
 * The decoder never allocates: decoded strings and binaries point into the
 * caller's buffer, so a packet is parsed in place from the read buffer. Every
 * read is bounds-checked against the packet's remaining length; a violation
 * yields a reason code (MQTT 5 numbering, also used internally for 3.1.1) and
 * the connection is closed by the caller. The fuzz targets (fuzz/) drive
 * mqtt_decode_any() and, through the client, the server-to-client decoders
 * with arbitrary bytes.
 */
#ifndef HEDGE_MQTT_PACKET_H
#define HEDGE_MQTT_PACKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK,
    MQTT_PUBLISH,
    MQTT_PUBACK,
    MQTT_PUBREC,
    MQTT_PUBREL,
    MQTT_PUBCOMP,
    MQTT_SUBSCRIBE,
    MQTT_SUBACK,
    MQTT_UNSUBSCRIBE,
    MQTT_UNSUBACK,
    MQTT_PINGREQ,
    MQTT_PINGRESP,
    MQTT_DISCONNECT,
    MQTT_AUTH,
};

/* MQTT 5 reason codes the broker uses. */
enum mqtt_reason {
    RC_SUCCESS = 0x00,
    RC_GRANTED_QOS1 = 0x01,
    RC_GRANTED_QOS2 = 0x02,
    RC_DISCONNECT_WITH_WILL = 0x04,
    RC_NO_MATCHING_SUBSCRIBERS = 0x10,
    RC_NO_SUBSCRIPTION_EXISTED = 0x11,
    RC_UNSPECIFIED = 0x80,
    RC_MALFORMED = 0x81,
    RC_PROTOCOL_ERROR = 0x82,
    RC_IMPL_SPECIFIC = 0x83,
    RC_UNSUPPORTED_PROTOCOL = 0x84,
    RC_CLIENT_ID_NOT_VALID = 0x85,
    RC_BAD_USER_OR_PASSWORD = 0x86,
    RC_NOT_AUTHORIZED = 0x87,
    RC_SERVER_UNAVAILABLE = 0x88,
    RC_SERVER_BUSY = 0x89,
    RC_SERVER_SHUTTING_DOWN = 0x8B,
    RC_BAD_AUTH_METHOD = 0x8C,
    RC_KEEPALIVE_TIMEOUT = 0x8D,
    RC_SESSION_TAKEN_OVER = 0x8E,
    RC_TOPIC_FILTER_INVALID = 0x8F,
    RC_TOPIC_NAME_INVALID = 0x90,
    RC_PACKET_ID_IN_USE = 0x91,
    RC_PACKET_ID_NOT_FOUND = 0x92,
    RC_RECEIVE_MAX_EXCEEDED = 0x93,
    RC_TOPIC_ALIAS_INVALID = 0x94,
    RC_PACKET_TOO_LARGE = 0x95,
    RC_QUOTA_EXCEEDED = 0x97,
    RC_PAYLOAD_FORMAT_INVALID = 0x99,
    RC_QOS_NOT_SUPPORTED = 0x9B,
    RC_SHARED_SUB_NOT_SUPPORTED = 0x9E,
    RC_CONNECTION_RATE_EXCEEDED = 0x9F,
    RC_SUB_ID_NOT_SUPPORTED = 0xA1,
    RC_WILDCARD_SUB_NOT_SUPPORTED = 0xA2,
};

/* MQTT 5 property identifiers. */
enum mqtt_prop_id {
    PROP_PAYLOAD_FORMAT = 0x01,
    PROP_MESSAGE_EXPIRY = 0x02,
    PROP_CONTENT_TYPE = 0x03,
    PROP_RESPONSE_TOPIC = 0x08,
    PROP_CORRELATION_DATA = 0x09,
    PROP_SUBSCRIPTION_ID = 0x0B,
    PROP_SESSION_EXPIRY = 0x11,
    PROP_ASSIGNED_CLIENT_ID = 0x12,
    PROP_SERVER_KEEPALIVE = 0x13,
    PROP_AUTH_METHOD = 0x15,
    PROP_AUTH_DATA = 0x16,
    PROP_REQUEST_PROBLEM_INFO = 0x17,
    PROP_WILL_DELAY = 0x18,
    PROP_REQUEST_RESPONSE_INFO = 0x19,
    PROP_RESPONSE_INFO = 0x1A,
    PROP_SERVER_REFERENCE = 0x1C,
    PROP_REASON_STRING = 0x1F,
    PROP_RECEIVE_MAXIMUM = 0x21,
    PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
    PROP_TOPIC_ALIAS = 0x23,
    PROP_MAXIMUM_QOS = 0x24,
    PROP_RETAIN_AVAILABLE = 0x25,
    PROP_USER_PROPERTY = 0x26,
    PROP_MAXIMUM_PACKET_SIZE = 0x27,
    PROP_WILDCARD_SUB_AVAILABLE = 0x28,
    PROP_SUB_ID_AVAILABLE = 0x29,
    PROP_SHARED_SUB_AVAILABLE = 0x2A,
};

struct mqtt_bytes {
    const uint8_t *data;
    uint32_t len;
};

/* The properties of one packet; `present` has bit (1 << id % 64) style flags via the has_ fields. */
struct mqtt_props {
    uint32_t session_expiry, message_expiry, max_packet_size, will_delay, subscription_id;
    uint16_t receive_max, topic_alias_max, topic_alias;
    uint8_t payload_format, request_problem_info, request_response_info;
    bool has_session_expiry, has_message_expiry, has_max_packet_size, has_will_delay;
    bool has_subscription_id, has_receive_max, has_topic_alias_max, has_topic_alias;
    bool has_payload_format, has_auth_method;
    /* CONNACK only (what a broker announces) */
    uint16_t server_keepalive;
    uint8_t maximum_qos;
    bool has_server_keepalive, has_maximum_qos;
    struct mqtt_bytes assigned_client_id;
    struct mqtt_bytes content_type, response_topic, correlation_data, reason_string;
    /* Properties the broker forwards unchanged with a message (payload format,
     * content type, response topic, correlation data, user properties), as
     * encoded bytes: a contiguous copy is built by the caller when needed. */
    struct mqtt_bytes raw; /* the whole property block as received */
};

struct mqtt_connect {
    uint8_t protocol_level; /* 3, 4 or 5 */
    bool clean_start, will_flag, will_retain, has_username, has_password;
    uint8_t will_qos;
    uint16_t keepalive;
    struct mqtt_props props;
    struct mqtt_bytes client_id, will_topic, will_payload, username, password;
    struct mqtt_props will_props;
};

struct mqtt_publish {
    uint8_t qos;
    bool dup, retain;
    struct mqtt_bytes topic;
    uint16_t packet_id;
    struct mqtt_props props;
    struct mqtt_bytes payload;
};

/* PUBACK / PUBREC / PUBREL / PUBCOMP. */
struct mqtt_ack {
    uint16_t packet_id;
    uint8_t reason;
};

/* SUBSCRIBE / UNSUBSCRIBE: the entries are walked with mqtt_next_sub_entry(). */
struct mqtt_subscribe {
    uint16_t packet_id;
    struct mqtt_props props;
    const uint8_t *entries;
    uint32_t entries_len;
};

struct mqtt_sub_entry {
    struct mqtt_bytes filter;
    uint8_t options; /* SUBSCRIBE only: QoS | NL<<2 | RAP<<3 | RH<<4 */
};

struct mqtt_disconnect {
    uint8_t reason;
    struct mqtt_props props;
};

/* CONNACK: reason is the 3.1.1 return code (0..5) or the 5.0 reason code. */
struct mqtt_connack {
    bool session_present;
    uint8_t reason;
    struct mqtt_props props;
};

/* SUBACK / UNSUBACK: one reason code per filter (a 3.1.1 UNSUBACK has none). */
struct mqtt_suback {
    uint16_t packet_id;
    struct mqtt_props props;
    const uint8_t *reasons;
    uint32_t n_reasons;
};

/*
 * Parse the fixed header at buf. Returns 1 with *type_flags (first byte),
 * *remaining and *header_len set when complete, 0 when more bytes are needed,
 * -1 when the remaining length is malformed (more than 4 bytes, or more bytes
 * than its value needs: MQTT-1.5.5-1).
 */
int mqtt_parse_fixed_header(const uint8_t *buf, size_t len, uint8_t *type_flags, uint32_t *remaining,
                            uint32_t *header_len);

/* The decoders: body/len is the packet after the fixed header. Return 0 or a reason code. */
int mqtt_decode_connect(const uint8_t *body, uint32_t len, struct mqtt_connect *out);
int mqtt_decode_publish(uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto, struct mqtt_publish *out);
int mqtt_decode_ack(uint8_t type, uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto,
                    struct mqtt_ack *out);
int mqtt_decode_subscribe(uint8_t type, uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto,
                          struct mqtt_subscribe *out);
/* Walk the entries of a decoded SUBSCRIBE/UNSUBSCRIBE: 1 = entry, 0 = end, negative reason on error. */
int mqtt_next_sub_entry(const struct mqtt_subscribe *sub, uint8_t type, uint32_t *pos, struct mqtt_sub_entry *e);
int mqtt_decode_disconnect(uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto,
                           struct mqtt_disconnect *out);
/* Decode any client-to-server packet (the fuzz entry point); 0 or a reason code. */
int mqtt_decode_any(uint8_t type_flags, const uint8_t *body, uint32_t len, uint8_t proto);
/* Server-to-client packets (the client's side). */
int mqtt_decode_connack(uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto, struct mqtt_connack *out);
int mqtt_decode_suback(uint8_t type, uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto,
                       struct mqtt_suback *out);
/* A packet that is only its fixed header (PINGREQ, PINGRESP): 0 or RC_MALFORMED. */
int mqtt_decode_empty(uint8_t flags, uint32_t len);

/* UTF-8 as MQTT wants it: well-formed, no surrogates, no U+0000. */
bool mqtt_utf8_valid(const uint8_t *s, size_t len);

/* ---- encoding ---- */

/* A growable byte buffer for outgoing packets. */
struct mqtt_buf {
    uint8_t *data;
    size_t len, cap;
};

void mqtt_buf_reserve(struct mqtt_buf *b, size_t extra);
void mqtt_buf_free(struct mqtt_buf *b);
size_t mqtt_varint_size(uint32_t v);
void mqtt_put_u8(struct mqtt_buf *b, uint8_t v);
void mqtt_put_u16(struct mqtt_buf *b, uint16_t v);
void mqtt_put_u32(struct mqtt_buf *b, uint32_t v);
void mqtt_put_varint(struct mqtt_buf *b, uint32_t v);
void mqtt_put_bytes(struct mqtt_buf *b, const void *data, size_t len);
void mqtt_put_string(struct mqtt_buf *b, const void *data, uint16_t len);

/* Filter a received PUBLISH property block down to what is forwarded to subscribers. */
void mqtt_forwardable_props(const struct mqtt_bytes *raw, struct mqtt_buf *out);

/*
 * Whole-packet encoders (fixed header included), appended to b. They use the
 * decoders' structures, so whatever is encoded decodes back to the same values.
 * mqtt_encode_connect writes: protocol_level, clean_start, keepalive, the will
 * (topic, payload, QoS, retain; no will properties), username / password when
 * has_username / has_password, and for 5.0 the session expiry when
 * props.has_session_expiry. mqtt_encode_publish writes, for 5.0, the response
 * topic and the correlation data when their data is not NULL.
 */
void mqtt_encode_connect(struct mqtt_buf *b, const struct mqtt_connect *c);
void mqtt_encode_publish(struct mqtt_buf *b, uint8_t proto, const struct mqtt_publish *p);
/* SUBSCRIBE with the same options for every filter (a NULL-terminated list). */
void mqtt_encode_subscribe(struct mqtt_buf *b, uint8_t proto, uint16_t packet_id, char *const *filters,
                           uint8_t options);
/* PUBACK / PUBREC / PUBREL / PUBCOMP; a 5.0 reason other than success adds the reason byte. */
void mqtt_encode_ack(struct mqtt_buf *b, uint8_t proto, uint8_t type, uint16_t packet_id, uint8_t reason);
/* PINGREQ, PINGRESP, or a DISCONNECT with reason success. */
void mqtt_encode_empty(struct mqtt_buf *b, uint8_t type);

/*
 * An outgoing PUBLISH up to its payload, which the caller appends (the client copies it; the broker may
 * gather one stored copy for every subscriber with writev). For 5.0 the properties are written in this
 * order: message expiry (when has_expiry), the Topic Alias (when not 0; the topic may then be empty),
 * one Subscription Identifier per entry of sub_ids, response
 * topic and correlation data (when their data is not NULL), then raw_props, an already encoded property
 * block (the properties a broker forwards from the incoming PUBLISH).
 */
struct mqtt_publish_head {
    struct mqtt_bytes topic;
    uint8_t qos;
    bool dup, retain;
    uint16_t packet_id;
    size_t payload_len;
    bool has_expiry;
    uint32_t expiry;
    uint16_t topic_alias; /* 0 = none */
    const uint32_t *sub_ids;
    size_t n_sub_ids;
    struct mqtt_bytes response_topic, correlation_data;
    const uint8_t *raw_props;
    size_t raw_props_len;
};
/* The whole packet's size on the wire, payload included (for a peer's Maximum Packet Size). */
size_t mqtt_publish_size(uint8_t proto, const struct mqtt_publish_head *h);
void mqtt_encode_publish_head(struct mqtt_buf *b, uint8_t proto, const struct mqtt_publish_head *h);
/* DISCONNECT: 3.1.1 has no reason; 5.0 carries the reason and, when why is not NULL, a Reason String. */
void mqtt_encode_disconnect(struct mqtt_buf *b, uint8_t proto, uint8_t reason, const char *why);

/* What the broker sends. props/props_len: an encoded 5.0 property block (ignored for 3.1.1). */
void mqtt_encode_connack(struct mqtt_buf *b, uint8_t proto, bool session_present, uint8_t reason, const uint8_t *props,
                         size_t props_len);
/* The size on the wire of that CONNACK (for the client's Maximum Packet Size, MQTT-3.1.2-24). */
size_t mqtt_connack_size(uint8_t proto, size_t props_len);
/* SUBACK or UNSUBACK with n reason codes (a 3.1.1 UNSUBACK carries none: reasons are ignored). */
void mqtt_encode_suback(struct mqtt_buf *b, uint8_t proto, uint8_t type, uint16_t packet_id, const uint8_t *reasons,
                        size_t n);

#endif
