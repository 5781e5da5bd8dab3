/*
 * packet.c - the MQTT packet codec (see packet.h).
 *
 * Decoding uses a cursor (struct reader) whose every read checks the bytes
 * left; the first failed read latches `bad` and later reads return zeroes, so
 * decoders check once at the end instead of after every field. Property
 * blocks are validated against the set of properties allowed in that packet
 * (MQTT 5 §2.2.2.2) and duplicates are refused, as the spec requires.
 */
#include "mqtt/packet.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct reader {
    const uint8_t *p;
    uint32_t len, pos;
    bool bad;
};

static bool need(struct reader *r, uint32_t n)
{
    if (r->bad || r->len - r->pos < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static uint8_t rd_u8(struct reader *r)
{
    return need(r, 1) ? r->p[r->pos++] : 0;
}

static uint16_t rd_u16(struct reader *r)
{
    if (!need(r, 2))
        return 0;
    uint16_t v = (uint16_t)(r->p[r->pos] << 8 | r->p[r->pos + 1]);
    r->pos += 2;
    return v;
}

static uint32_t rd_u32(struct reader *r)
{
    if (!need(r, 4))
        return 0;
    const uint8_t *p = r->p + r->pos;
    r->pos += 4;
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A Variable Byte Integer in at most four bytes and in its minimum number of
 * bytes (MQTT-1.5.5-1): a last byte of 0 after a continuation byte is malformed. */
static uint32_t rd_varint(struct reader *r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t b = rd_u8(r);
        v |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0)
                break;
            return v;
        }
    }
    r->bad = true;
    return 0;
}

static struct mqtt_bytes rd_binary(struct reader *r)
{
    struct mqtt_bytes b = {NULL, 0};
    uint16_t n = rd_u16(r);
    if (!need(r, n))
        return b;
    b.data = r->p + r->pos;
    b.len = n;
    r->pos += n;
    return b;
}

/* A UTF-8 string: invalid encoding marks the reader bad like a short read. */
static struct mqtt_bytes rd_string(struct reader *r)
{
    struct mqtt_bytes b = rd_binary(r);
    if (!r->bad && !mqtt_utf8_valid(b.data, b.len))
        r->bad = true;
    return b;
}

bool mqtt_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        uint32_t cp;
        size_t n;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

int mqtt_parse_fixed_header(const uint8_t *buf, size_t len, uint8_t *type_flags, uint32_t *remaining,
                            uint32_t *header_len)
{
    if (len < 2)
        return 0;
    uint32_t v = 0;
    for (uint32_t i = 0; i < 4; i++) {
        if (1 + i >= len)
            return 0;
        uint8_t b = buf[1 + i];
        v |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0)
                return -1; /* not in the minimum number of bytes (MQTT-1.5.5-1) */
            *type_flags = buf[0];
            *remaining = v;
            *header_len = 2 + i;
            return 1;
        }
    }
    return -1;
}

#define BIT(id) (1ull << (id))
#define ALLOW_CONNECT \
    (BIT(PROP_SESSION_EXPIRY) | BIT(PROP_RECEIVE_MAXIMUM) | BIT(PROP_MAXIMUM_PACKET_SIZE) | \
     BIT(PROP_TOPIC_ALIAS_MAXIMUM) | BIT(PROP_REQUEST_RESPONSE_INFO) | BIT(PROP_REQUEST_PROBLEM_INFO) | \
     BIT(PROP_USER_PROPERTY) | BIT(PROP_AUTH_METHOD) | BIT(PROP_AUTH_DATA))
#define ALLOW_MESSAGE \
    (BIT(PROP_PAYLOAD_FORMAT) | BIT(PROP_MESSAGE_EXPIRY) | BIT(PROP_CONTENT_TYPE) | BIT(PROP_RESPONSE_TOPIC) | \
     BIT(PROP_CORRELATION_DATA) | BIT(PROP_USER_PROPERTY))
#define ALLOW_WILL (ALLOW_MESSAGE | BIT(PROP_WILL_DELAY))
#define ALLOW_PUBLISH (ALLOW_MESSAGE | BIT(PROP_TOPIC_ALIAS))
#define ALLOW_ACK (BIT(PROP_REASON_STRING) | BIT(PROP_USER_PROPERTY))
#define ALLOW_SUBSCRIBE (BIT(PROP_SUBSCRIPTION_ID) | BIT(PROP_USER_PROPERTY))
#define ALLOW_UNSUBSCRIBE (BIT(PROP_USER_PROPERTY))
#define ALLOW_DISCONNECT \
    (BIT(PROP_SESSION_EXPIRY) | BIT(PROP_REASON_STRING) | BIT(PROP_USER_PROPERTY) | BIT(PROP_SERVER_REFERENCE))
#define ALLOW_AUTH (BIT(PROP_AUTH_METHOD) | BIT(PROP_AUTH_DATA) | BIT(PROP_REASON_STRING) | BIT(PROP_USER_PROPERTY))
#define ALLOW_CONNACK \
    (BIT(PROP_SESSION_EXPIRY) | BIT(PROP_RECEIVE_MAXIMUM) | BIT(PROP_MAXIMUM_QOS) | BIT(PROP_RETAIN_AVAILABLE) | \
     BIT(PROP_MAXIMUM_PACKET_SIZE) | BIT(PROP_ASSIGNED_CLIENT_ID) | BIT(PROP_TOPIC_ALIAS_MAXIMUM) | \
     BIT(PROP_REASON_STRING) | BIT(PROP_USER_PROPERTY) | BIT(PROP_WILDCARD_SUB_AVAILABLE) | \
     BIT(PROP_SUB_ID_AVAILABLE) | BIT(PROP_SHARED_SUB_AVAILABLE) | BIT(PROP_SERVER_KEEPALIVE) | \
     BIT(PROP_RESPONSE_INFO) | BIT(PROP_SERVER_REFERENCE) | BIT(PROP_AUTH_METHOD) | BIT(PROP_AUTH_DATA))

/* Parse a property block; returns 0, RC_MALFORMED or RC_PROTOCOL_ERROR. */
static int rd_props(struct reader *r, uint64_t allowed, struct mqtt_props *p)
{
    memset(p, 0, sizeof(*p));
    uint32_t plen = rd_varint(r);
    if (!need(r, plen))
        return RC_MALFORMED;
    struct reader pr = {r->p + r->pos, plen, 0, false};
    p->raw.data = r->p + r->pos;
    p->raw.len = plen;
    r->pos += plen;
    uint64_t seen = 0;
    while (pr.pos < pr.len && !pr.bad) {
        uint32_t id = rd_varint(&pr);
        if (pr.bad)
            break;
        if (id >= 64 || !(allowed & BIT(id)))
            /* an identifier not valid for the packet type is a Malformed Packet (5.0 §2.2.2.2); a Subscription
             * Identifier is valid in a PUBLISH, only not from a client: a Protocol Error (MQTT-3.3.4-6) */
            return id == PROP_SUBSCRIPTION_ID && allowed == ALLOW_PUBLISH ? RC_PROTOCOL_ERROR : RC_MALFORMED;
        if (id != PROP_USER_PROPERTY && (seen & BIT(id)))
            return RC_PROTOCOL_ERROR;
        seen |= BIT(id);
        switch (id) {
        case PROP_PAYLOAD_FORMAT:
            p->payload_format = rd_u8(&pr);
            p->has_payload_format = true;
            if (p->payload_format > 1)
                return RC_PROTOCOL_ERROR;
            break;
        case PROP_MESSAGE_EXPIRY:
            p->message_expiry = rd_u32(&pr);
            p->has_message_expiry = true;
            break;
        case PROP_CONTENT_TYPE: p->content_type = rd_string(&pr); break;
        case PROP_RESPONSE_TOPIC: p->response_topic = rd_string(&pr); break;
        case PROP_CORRELATION_DATA: p->correlation_data = rd_binary(&pr); break;
        case PROP_SUBSCRIPTION_ID:
            p->subscription_id = rd_varint(&pr);
            p->has_subscription_id = true;
            if (!pr.bad && p->subscription_id == 0)
                return RC_PROTOCOL_ERROR;
            break;
        case PROP_SESSION_EXPIRY:
            p->session_expiry = rd_u32(&pr);
            p->has_session_expiry = true;
            break;
        case PROP_AUTH_METHOD:
            rd_string(&pr);
            p->has_auth_method = true;
            break;
        case PROP_AUTH_DATA: rd_binary(&pr); break;
        case PROP_REQUEST_PROBLEM_INFO:
            p->request_problem_info = rd_u8(&pr);
            if (p->request_problem_info > 1)
                return RC_PROTOCOL_ERROR;
            break;
        case PROP_WILL_DELAY:
            p->will_delay = rd_u32(&pr);
            p->has_will_delay = true;
            break;
        case PROP_REQUEST_RESPONSE_INFO:
            p->request_response_info = rd_u8(&pr);
            if (p->request_response_info > 1)
                return RC_PROTOCOL_ERROR;
            break;
        case PROP_SERVER_REFERENCE: rd_string(&pr); break;
        case PROP_REASON_STRING: p->reason_string = rd_string(&pr); break;
        case PROP_RECEIVE_MAXIMUM:
            p->receive_max = rd_u16(&pr);
            p->has_receive_max = true;
            if (!pr.bad && p->receive_max == 0)
                return RC_PROTOCOL_ERROR;
            break;
        case PROP_TOPIC_ALIAS_MAXIMUM:
            p->topic_alias_max = rd_u16(&pr);
            p->has_topic_alias_max = true;
            break;
        case PROP_TOPIC_ALIAS:
            p->topic_alias = rd_u16(&pr);
            p->has_topic_alias = true;
            break;
        case PROP_USER_PROPERTY:
            rd_string(&pr);
            rd_string(&pr);
            break;
        case PROP_MAXIMUM_PACKET_SIZE:
            p->max_packet_size = rd_u32(&pr);
            p->has_max_packet_size = true;
            if (!pr.bad && p->max_packet_size == 0)
                return RC_PROTOCOL_ERROR;
            break;
        /* the broker-to-client ones (CONNACK) */
        case PROP_MAXIMUM_QOS:
            p->maximum_qos = rd_u8(&pr);
            p->has_maximum_qos = true;
            if (p->maximum_qos > 1)
                return RC_PROTOCOL_ERROR;
            break;
        case PROP_RETAIN_AVAILABLE:
        case PROP_WILDCARD_SUB_AVAILABLE:
        case PROP_SUB_ID_AVAILABLE:
        case PROP_SHARED_SUB_AVAILABLE:
            if (rd_u8(&pr) > 1)
                return RC_PROTOCOL_ERROR;
            break;
        case PROP_SERVER_KEEPALIVE:
            p->server_keepalive = rd_u16(&pr);
            p->has_server_keepalive = true;
            break;
        case PROP_ASSIGNED_CLIENT_ID: p->assigned_client_id = rd_string(&pr); break;
        case PROP_RESPONSE_INFO: rd_string(&pr); break;
        default: return RC_PROTOCOL_ERROR;
        }
    }
    return pr.bad ? RC_MALFORMED : 0;
}

int mqtt_decode_connect(const uint8_t *body, uint32_t len, struct mqtt_connect *c)
{
    struct reader r = {body, len, 0, false};
    memset(c, 0, sizeof(*c));
    struct mqtt_bytes name = rd_binary(&r);
    c->protocol_level = rd_u8(&r);
    if (r.bad)
        return RC_MALFORMED;
    if (!((name.len == 4 && memcmp(name.data, "MQTT", 4) == 0 && (c->protocol_level == 4 || c->protocol_level == 5)) ||
          (name.len == 6 && memcmp(name.data, "MQIsdp", 6) == 0 && c->protocol_level == 3)))
        return RC_UNSUPPORTED_PROTOCOL;
    uint8_t flags = rd_u8(&r);
    if (flags & 0x01)
        return RC_MALFORMED; /* reserved flag */
    c->clean_start = flags & 0x02;
    c->will_flag = flags & 0x04;
    c->will_qos = (flags >> 3) & 3;
    c->will_retain = flags & 0x20;
    c->has_password = flags & 0x40;
    c->has_username = flags & 0x80;
    if (c->will_qos == 3 || (!c->will_flag && (c->will_qos || c->will_retain)))
        return RC_MALFORMED;
    if (c->protocol_level < 5 && c->has_password && !c->has_username)
        return RC_MALFORMED;
    c->keepalive = rd_u16(&r);
    if (c->protocol_level == 5) {
        int rc = rd_props(&r, ALLOW_CONNECT, &c->props);
        if (rc)
            return rc;
    }
    c->client_id = rd_string(&r);
    if (c->will_flag) {
        if (c->protocol_level == 5) {
            int rc = rd_props(&r, ALLOW_WILL, &c->will_props);
            if (rc)
                return rc;
        }
        c->will_topic = rd_string(&r);
        c->will_payload = rd_binary(&r);
    }
    if (c->has_username)
        c->username = rd_string(&r);
    if (c->has_password)
        c->password = rd_binary(&r);
    if (r.bad || r.pos != r.len)
        return RC_MALFORMED;
    return 0;
}

int mqtt_decode_publish(uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto, struct mqtt_publish *p)
{
    struct reader r = {body, len, 0, false};
    memset(p, 0, sizeof(*p));
    p->dup = flags & 0x08;
    p->qos = (flags >> 1) & 3;
    p->retain = flags & 0x01;
    if (p->qos == 3 || (p->qos == 0 && p->dup))
        return RC_MALFORMED;
    p->topic = rd_string(&r);
    if (p->qos) {
        p->packet_id = rd_u16(&r);
        if (!r.bad && p->packet_id == 0)
            return RC_PROTOCOL_ERROR;
    }
    if (r.bad)
        return RC_MALFORMED;
    if (proto == 5) {
        int rc = rd_props(&r, ALLOW_PUBLISH, &p->props);
        if (rc)
            return rc;
    }
    if (r.bad)
        return RC_MALFORMED;
    p->payload.data = body + r.pos;
    p->payload.len = len - r.pos;
    if (p->props.has_payload_format && p->props.payload_format == 1 &&
        !mqtt_utf8_valid(p->payload.data, p->payload.len))
        return RC_PAYLOAD_FORMAT_INVALID;
    return 0;
}

int mqtt_decode_ack(uint8_t type, uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto, struct mqtt_ack *a)
{
    struct reader r = {body, len, 0, false};
    memset(a, 0, sizeof(*a));
    if (flags != (type == MQTT_PUBREL ? 0x02 : 0x00))
        return RC_MALFORMED;
    a->packet_id = rd_u16(&r);
    if (r.bad || a->packet_id == 0)
        return RC_MALFORMED;
    if (proto == 5 && r.pos < r.len) {
        a->reason = rd_u8(&r);
        if (r.pos < r.len) {
            struct mqtt_props props;
            int rc = rd_props(&r, ALLOW_ACK, &props);
            if (rc)
                return rc;
        }
    }
    if (r.bad || r.pos != r.len)
        return RC_MALFORMED;
    return 0;
}

int mqtt_decode_subscribe(uint8_t type, uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto,
                          struct mqtt_subscribe *s)
{
    struct reader r = {body, len, 0, false};
    memset(s, 0, sizeof(*s));
    if (flags != 0x02)
        return RC_MALFORMED;
    s->packet_id = rd_u16(&r);
    if (r.bad || s->packet_id == 0)
        return RC_MALFORMED;
    if (proto == 5) {
        int rc = rd_props(&r, type == MQTT_SUBSCRIBE ? ALLOW_SUBSCRIBE : ALLOW_UNSUBSCRIBE, &s->props);
        if (rc)
            return rc;
    }
    if (r.bad)
        return RC_MALFORMED;
    s->entries = body + r.pos;
    s->entries_len = len - r.pos;
    if (s->entries_len == 0)
        return RC_PROTOCOL_ERROR; /* at least one topic filter */
    /* validate all entries now so handlers see a well-formed list */
    uint32_t pos = 0;
    struct mqtt_sub_entry e;
    int rc;
    while ((rc = mqtt_next_sub_entry(s, type, &pos, &e)) == 1)
        if (type == MQTT_SUBSCRIBE && proto < 5 && (e.options & 0xfc))
            return RC_MALFORMED;
    if (rc < 0 && proto < 5)
        return RC_MALFORMED; /* 3.1.1: QoS 3 is malformed too (MQTT-3-8.3-4) */
    return rc < 0 ? -rc : 0;
}

int mqtt_next_sub_entry(const struct mqtt_subscribe *s, uint8_t type, uint32_t *pos, struct mqtt_sub_entry *e)
{
    if (*pos >= s->entries_len)
        return 0;
    struct reader r = {s->entries, s->entries_len, *pos, false};
    e->filter = rd_string(&r);
    e->options = 0;
    if (type == MQTT_SUBSCRIBE) {
        e->options = rd_u8(&r);
        if (!r.bad && (e->options & 0xc0))
            return -RC_MALFORMED; /* reserved bits: malformed (MQTT-3.8.3-5) */
        if (!r.bad && ((e->options & 3) == 3 || ((e->options >> 4) & 3) == 3))
            return -RC_PROTOCOL_ERROR; /* Maximum QoS 3, Retain Handling 3: Protocol Error (5.0 §3.8.3.1) */
    }
    if (r.bad)
        return -RC_MALFORMED;
    *pos = r.pos;
    return 1;
}

int mqtt_decode_disconnect(uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto, struct mqtt_disconnect *d)
{
    struct reader r = {body, len, 0, false};
    memset(d, 0, sizeof(*d));
    if (flags)
        return RC_MALFORMED;
    if (proto < 5)
        return len ? RC_MALFORMED : 0;
    if (len >= 1)
        d->reason = rd_u8(&r);
    if (len >= 2) {
        int rc = rd_props(&r, ALLOW_DISCONNECT, &d->props);
        if (rc)
            return rc;
    }
    if (r.bad || r.pos != r.len)
        return RC_MALFORMED;
    return 0;
}

int mqtt_decode_any(uint8_t type_flags, const uint8_t *body, uint32_t len, uint8_t proto)
{
    uint8_t type = type_flags >> 4, flags = type_flags & 0x0f;
    switch (type) {
    case MQTT_CONNECT: {
        struct mqtt_connect c;
        return flags ? RC_MALFORMED : mqtt_decode_connect(body, len, &c);
    }
    case MQTT_PUBLISH: {
        struct mqtt_publish p;
        return mqtt_decode_publish(flags, body, len, proto, &p);
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP: {
        struct mqtt_ack a;
        return mqtt_decode_ack(type, flags, body, len, proto, &a);
    }
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        struct mqtt_subscribe s;
        return mqtt_decode_subscribe(type, flags, body, len, proto, &s);
    }
    case MQTT_PINGREQ: return mqtt_decode_empty(flags, len);
    case MQTT_DISCONNECT: {
        struct mqtt_disconnect d;
        return mqtt_decode_disconnect(flags, body, len, proto, &d);
    }
    case MQTT_AUTH: {
        if (proto < 5 || flags)
            return RC_MALFORMED;
        struct reader r = {body, len, 0, false};
        struct mqtt_props props;
        if (len == 0)
            return 0;
        rd_u8(&r);
        int rc = rd_props(&r, ALLOW_AUTH, &props);
        return rc ? rc : (r.bad || r.pos != r.len) ? RC_MALFORMED : 0;
    }
    default: return RC_PROTOCOL_ERROR;
    }
}

int mqtt_decode_empty(uint8_t flags, uint32_t len)
{
    return flags || len ? RC_MALFORMED : 0;
}

int mqtt_decode_connack(uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto, struct mqtt_connack *out)
{
    struct reader r = {body, len, 0, false};
    memset(out, 0, sizeof(*out));
    if (flags)
        return RC_MALFORMED;
    uint8_t ack_flags = rd_u8(&r);
    out->reason = rd_u8(&r);
    if (r.bad || (ack_flags & 0xfe))
        return RC_MALFORMED; /* bits 7-1 are reserved */
    out->session_present = ack_flags & 1;
    if (proto == 5 && r.pos < r.len) {
        int rc = rd_props(&r, ALLOW_CONNACK, &out->props);
        if (rc)
            return rc;
    }
    if (r.bad || r.pos != r.len)
        return RC_MALFORMED;
    return 0;
}

int mqtt_decode_suback(uint8_t type, uint8_t flags, const uint8_t *body, uint32_t len, uint8_t proto,
                       struct mqtt_suback *out)
{
    struct reader r = {body, len, 0, false};
    memset(out, 0, sizeof(*out));
    if (flags)
        return RC_MALFORMED;
    out->packet_id = rd_u16(&r);
    if (r.bad || out->packet_id == 0)
        return RC_MALFORMED;
    if (proto == 5) {
        int rc = rd_props(&r, ALLOW_ACK, &out->props);
        if (rc)
            return rc;
    }
    if (r.bad)
        return RC_MALFORMED;
    out->reasons = body + r.pos;
    out->n_reasons = len - r.pos;
    if (type == MQTT_SUBACK && out->n_reasons == 0)
        return RC_PROTOCOL_ERROR; /* one reason per filter, and a SUBSCRIBE has at least one */
    if (type == MQTT_UNSUBACK && proto < 5 && out->n_reasons != 0)
        return RC_MALFORMED;
    return 0;
}

/* ---- encoding ---- */

void mqtt_buf_reserve(struct mqtt_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    b->data = hd_xrealloc(b->data, cap);
    b->cap = cap;
}

void mqtt_buf_free(struct mqtt_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

size_t mqtt_varint_size(uint32_t v)
{
    return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

void mqtt_put_u8(struct mqtt_buf *b, uint8_t v)
{
    mqtt_buf_reserve(b, 1);
    b->data[b->len++] = v;
}

void mqtt_put_u16(struct mqtt_buf *b, uint16_t v)
{
    mqtt_buf_reserve(b, 2);
    b->data[b->len++] = (uint8_t)(v >> 8);
    b->data[b->len++] = (uint8_t)v;
}

void mqtt_put_u32(struct mqtt_buf *b, uint32_t v)
{
    mqtt_buf_reserve(b, 4);
    for (int s = 24; s >= 0; s -= 8)
        b->data[b->len++] = (uint8_t)(v >> s);
}

void mqtt_put_varint(struct mqtt_buf *b, uint32_t v)
{
    mqtt_buf_reserve(b, 4);
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        b->data[b->len++] = byte | (v ? 0x80 : 0);
    } while (v);
}

void mqtt_put_bytes(struct mqtt_buf *b, const void *data, size_t len)
{
    if (!len)
        return;
    mqtt_buf_reserve(b, len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

void mqtt_put_string(struct mqtt_buf *b, const void *data, uint16_t len)
{
    mqtt_put_u16(b, len);
    mqtt_put_bytes(b, data, len);
}

void mqtt_forwardable_props(const struct mqtt_bytes *raw, struct mqtt_buf *out)
{
    /* raw was validated by rd_props, so the walk below cannot run off the end */
    struct reader r = {raw->data, raw->len, 0, false};
    while (r.pos < r.len && !r.bad) {
        uint32_t start = r.pos;
        uint32_t id = rd_varint(&r);
        bool keep = true;
        switch (id) {
        case PROP_PAYLOAD_FORMAT: rd_u8(&r); break;
        case PROP_MESSAGE_EXPIRY:
            rd_u32(&r);
            keep = false;
            break;
        case PROP_TOPIC_ALIAS:
            rd_u16(&r);
            keep = false;
            break;
        case PROP_WILL_DELAY:
            rd_u32(&r);
            keep = false;
            break;
        case PROP_CONTENT_TYPE:
        case PROP_RESPONSE_TOPIC:
        case PROP_CORRELATION_DATA: rd_binary(&r); break;
        case PROP_USER_PROPERTY:
            rd_binary(&r);
            rd_binary(&r);
            break;
        default: return;
        }
        if (keep && !r.bad)
            mqtt_put_bytes(out, raw->data + start, r.pos - start);
    }
}

/* The fixed header: type and flags, then the remaining length. */
static void put_fixed_header(struct mqtt_buf *b, uint8_t type_flags, size_t remaining)
{
    mqtt_buf_reserve(b, 5 + remaining);
    mqtt_put_u8(b, type_flags);
    mqtt_put_varint(b, (uint32_t)remaining);
}

static void put_bytes_field(struct mqtt_buf *b, const struct mqtt_bytes *v)
{
    mqtt_put_string(b, v->data, (uint16_t)v->len);
}

void mqtt_encode_connect(struct mqtt_buf *b, const struct mqtt_connect *c)
{
    struct mqtt_buf body = {0};
    bool v5 = c->protocol_level == 5;
    if (c->protocol_level == 3)
        mqtt_put_string(&body, "MQIsdp", 6);
    else
        mqtt_put_string(&body, "MQTT", 4);
    mqtt_put_u8(&body, c->protocol_level);
    uint8_t flags = c->clean_start ? 0x02 : 0;
    if (c->will_flag)
        flags |= (uint8_t)(0x04 | (c->will_qos & 3) << 3 | (c->will_retain ? 0x20 : 0));
    if (c->has_username)
        flags |= 0x80;
    if (c->has_password)
        flags |= 0x40;
    mqtt_put_u8(&body, flags);
    mqtt_put_u16(&body, c->keepalive);
    if (v5) {
        if (c->props.has_session_expiry) {
            mqtt_put_varint(&body, 5);
            mqtt_put_u8(&body, PROP_SESSION_EXPIRY);
            mqtt_put_u32(&body, c->props.session_expiry);
        } else {
            mqtt_put_varint(&body, 0);
        }
    }
    put_bytes_field(&body, &c->client_id);
    if (c->will_flag) {
        if (v5)
            mqtt_put_varint(&body, 0); /* no will properties */
        put_bytes_field(&body, &c->will_topic);
        put_bytes_field(&body, &c->will_payload);
    }
    if (c->has_username)
        put_bytes_field(&body, &c->username);
    if (c->has_password)
        put_bytes_field(&body, &c->password);
    put_fixed_header(b, MQTT_CONNECT << 4, body.len);
    mqtt_put_bytes(b, body.data, body.len);
    mqtt_buf_free(&body);
}

static size_t publish_props_len(const struct mqtt_publish_head *h)
{
    size_t n = h->raw_props_len;
    if (h->has_expiry)
        n += 1 + 4;
    if (h->topic_alias)
        n += 1 + 2;
    for (size_t i = 0; i < h->n_sub_ids; i++)
        n += 1 + mqtt_varint_size(h->sub_ids[i]);
    if (h->response_topic.data)
        n += 1 + 2 + h->response_topic.len;
    if (h->correlation_data.data)
        n += 1 + 2 + h->correlation_data.len;
    return n;
}

static size_t publish_remaining(uint8_t proto, const struct mqtt_publish_head *h, size_t props_len)
{
    size_t remaining = 2 + h->topic.len + (h->qos ? 2 : 0) + h->payload_len;
    if (proto == 5)
        remaining += mqtt_varint_size((uint32_t)props_len) + props_len;
    return remaining;
}

size_t mqtt_publish_size(uint8_t proto, const struct mqtt_publish_head *h)
{
    size_t remaining = publish_remaining(proto, h, proto == 5 ? publish_props_len(h) : 0);
    return 1 + mqtt_varint_size((uint32_t)remaining) + remaining;
}

void mqtt_encode_publish_head(struct mqtt_buf *b, uint8_t proto, const struct mqtt_publish_head *h)
{
    size_t props_len = proto == 5 ? publish_props_len(h) : 0;
    size_t remaining = publish_remaining(proto, h, props_len);
    put_fixed_header(b, (uint8_t)(MQTT_PUBLISH << 4 | (h->dup ? 0x08 : 0) | h->qos << 1 | (h->retain ? 1 : 0)),
                     remaining);
    put_bytes_field(b, &h->topic);
    if (h->qos)
        mqtt_put_u16(b, h->packet_id);
    if (proto != 5)
        return;
    mqtt_put_varint(b, (uint32_t)props_len);
    if (h->has_expiry) {
        mqtt_put_u8(b, PROP_MESSAGE_EXPIRY);
        mqtt_put_u32(b, h->expiry);
    }
    if (h->topic_alias) {
        mqtt_put_u8(b, PROP_TOPIC_ALIAS);
        mqtt_put_u16(b, h->topic_alias);
    }
    for (size_t i = 0; i < h->n_sub_ids; i++) {
        mqtt_put_u8(b, PROP_SUBSCRIPTION_ID);
        mqtt_put_varint(b, h->sub_ids[i]);
    }
    if (h->response_topic.data) {
        mqtt_put_u8(b, PROP_RESPONSE_TOPIC);
        put_bytes_field(b, &h->response_topic);
    }
    if (h->correlation_data.data) {
        mqtt_put_u8(b, PROP_CORRELATION_DATA);
        put_bytes_field(b, &h->correlation_data);
    }
    mqtt_put_bytes(b, h->raw_props, h->raw_props_len);
}

void mqtt_encode_publish(struct mqtt_buf *b, uint8_t proto, const struct mqtt_publish *p)
{
    struct mqtt_publish_head h = {
        .topic = p->topic,
        .qos = p->qos,
        .dup = p->dup,
        .retain = p->retain,
        .packet_id = p->packet_id,
        .payload_len = p->payload.len,
        .response_topic = p->props.response_topic,
        .correlation_data = p->props.correlation_data,
    };
    mqtt_encode_publish_head(b, proto, &h);
    mqtt_put_bytes(b, p->payload.data, p->payload.len);
}

void mqtt_encode_disconnect(struct mqtt_buf *b, uint8_t proto, uint8_t reason, const char *why)
{
    if (proto != 5) {
        put_fixed_header(b, MQTT_DISCONNECT << 4, 0);
        return;
    }
    size_t why_len = why ? strlen(why) : 0;
    size_t props_len = why ? 1 + 2 + why_len : 0;
    put_fixed_header(b, MQTT_DISCONNECT << 4, 1 + mqtt_varint_size((uint32_t)props_len) + props_len);
    mqtt_put_u8(b, reason);
    mqtt_put_varint(b, (uint32_t)props_len);
    if (why) {
        mqtt_put_u8(b, PROP_REASON_STRING);
        mqtt_put_string(b, why, (uint16_t)why_len);
    }
}

void mqtt_encode_subscribe(struct mqtt_buf *b, uint8_t proto, uint16_t packet_id, char *const *filters, uint8_t options)
{
    size_t remaining = 2 + (proto == 5 ? 1 : 0);
    for (size_t i = 0; filters[i]; i++)
        remaining += 2 + strlen(filters[i]) + 1;
    put_fixed_header(b, MQTT_SUBSCRIBE << 4 | 0x02, remaining);
    mqtt_put_u16(b, packet_id);
    if (proto == 5)
        mqtt_put_varint(b, 0);
    for (size_t i = 0; filters[i]; i++) {
        mqtt_put_string(b, filters[i], (uint16_t)strlen(filters[i]));
        mqtt_put_u8(b, options);
    }
}

void mqtt_encode_ack(struct mqtt_buf *b, uint8_t proto, uint8_t type, uint16_t packet_id, uint8_t reason)
{
    bool with_reason = proto == 5 && reason != RC_SUCCESS;
    put_fixed_header(b, (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 0x02 : 0)), with_reason ? 3 : 2);
    mqtt_put_u16(b, packet_id);
    if (with_reason)
        mqtt_put_u8(b, reason);
}

void mqtt_encode_connack(struct mqtt_buf *b, uint8_t proto, bool session_present, uint8_t reason, const uint8_t *props,
                         size_t props_len)
{
    if (proto != 5) {
        put_fixed_header(b, MQTT_CONNACK << 4, 2);
        mqtt_put_u8(b, session_present ? 1 : 0);
        mqtt_put_u8(b, reason);
        return;
    }
    put_fixed_header(b, MQTT_CONNACK << 4, 2 + mqtt_varint_size((uint32_t)props_len) + props_len);
    mqtt_put_u8(b, session_present ? 1 : 0);
    mqtt_put_u8(b, reason);
    mqtt_put_varint(b, (uint32_t)props_len);
    mqtt_put_bytes(b, props, props_len);
}

size_t mqtt_connack_size(uint8_t proto, size_t props_len)
{
    if (proto != 5)
        return 4;
    size_t rem = 2 + mqtt_varint_size((uint32_t)props_len) + props_len;
    return 1 + mqtt_varint_size((uint32_t)rem) + rem;
}

void mqtt_encode_suback(struct mqtt_buf *b, uint8_t proto, uint8_t type, uint16_t packet_id, const uint8_t *reasons,
                        size_t n)
{
    if (type == MQTT_UNSUBACK && proto != 5)
        n = 0;
    put_fixed_header(b, (uint8_t)(type << 4), 2 + (proto == 5 ? 1 : 0) + n);
    mqtt_put_u16(b, packet_id);
    if (proto == 5)
        mqtt_put_varint(b, 0);
    mqtt_put_bytes(b, reasons, n);
}

void mqtt_encode_empty(struct mqtt_buf *b, uint8_t type)
{
    put_fixed_header(b, (uint8_t)(type << 4), 0);
}
