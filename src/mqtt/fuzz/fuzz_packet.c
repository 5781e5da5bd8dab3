/*
 * fuzz_packet.c - libFuzzer target for the MQTT packet codec (scripts/fuzz-mqtt, `make fuzz`).
 *
 * Input: one byte selecting the protocol level (odd = 5.0, even = 3.1.1),
 * then a stream of packets framed exactly as on the wire. Every packet the
 * framing accepts goes through the decoder the broker uses, and the parts the
 * broker walks afterwards (SUBSCRIBE entries, forwarded properties) are
 * walked too; the packets a broker sends (CONNACK, SUBACK, UNSUBACK) go
 * through the client's decoders. A decoded CONNECT or PUBLISH is encoded again
 * with the client's encoders and must decode to the same fields. ASan/UBSan
 * turn any out-of-bounds read into a crash; a failed round trip aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/packet.h"

static int bytes_cmp(struct mqtt_bytes a, struct mqtt_bytes b)
{
    return a.len != b.len || (a.len && memcmp(a.data, b.data, a.len) != 0);
}

/* Decode the one packet in buf (as a broker would), or abort. */
static const uint8_t *reframe(const struct mqtt_buf *buf, uint8_t *tf, uint32_t *len)
{
    uint32_t hl;
    if (mqtt_parse_fixed_header(buf->data, buf->len, tf, len, &hl) != 1 || hl + *len != buf->len)
        abort();
    return buf->data + hl;
}

static void connect_round_trip(const struct mqtt_connect *c)
{
    struct mqtt_connect k = *c, d;
    k.props = (struct mqtt_props){.has_session_expiry = c->props.has_session_expiry,
                                  .session_expiry = c->props.session_expiry};
    k.will_props = (struct mqtt_props){0};
    struct mqtt_buf out = {0};
    mqtt_encode_connect(&out, &k);
    uint8_t tf;
    uint32_t len;
    const uint8_t *body = reframe(&out, &tf, &len);
    if (tf != MQTT_CONNECT << 4 || mqtt_decode_connect(body, len, &d) != 0 || d.protocol_level != k.protocol_level ||
        d.clean_start != k.clean_start || d.keepalive != k.keepalive || d.will_flag != k.will_flag ||
        d.will_qos != k.will_qos || d.will_retain != k.will_retain || d.has_username != k.has_username ||
        d.has_password != k.has_password || bytes_cmp(d.client_id, k.client_id) ||
        bytes_cmp(d.will_topic, k.will_topic) || bytes_cmp(d.will_payload, k.will_payload) ||
        bytes_cmp(d.username, k.username) || bytes_cmp(d.password, k.password) ||
        d.props.has_session_expiry != k.props.has_session_expiry || d.props.session_expiry != k.props.session_expiry)
        abort();
    mqtt_buf_free(&out);
}

static void publish_round_trip(const struct mqtt_publish *p, uint8_t proto)
{
    if (p->props.has_topic_alias && p->topic.len == 0)
        return; /* an alias-only PUBLISH has no topic to encode */
    struct mqtt_publish k = *p, d;
    k.props =
        (struct mqtt_props){.response_topic = p->props.response_topic, .correlation_data = p->props.correlation_data};
    struct mqtt_buf out = {0};
    mqtt_encode_publish(&out, proto, &k);
    uint8_t tf;
    uint32_t len;
    const uint8_t *body = reframe(&out, &tf, &len);
    if (tf >> 4 != MQTT_PUBLISH || mqtt_decode_publish(tf & 0x0f, body, len, proto, &d) != 0 || d.qos != k.qos ||
        d.dup != k.dup || d.retain != k.retain || d.packet_id != k.packet_id || bytes_cmp(d.topic, k.topic) ||
        bytes_cmp(d.payload, k.payload) ||
        (proto == 5 &&
         (bytes_cmp(d.props.response_topic, k.props.response_topic) ||
          bytes_cmp(d.props.correlation_data, k.props.correlation_data))))
        abort();
    mqtt_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t proto = (data[0] & 1) ? 5 : 4;
    data++;
    size--;
    while (size > 0) {
        uint8_t tf;
        uint32_t remaining, hlen;
        if (mqtt_parse_fixed_header(data, size, &tf, &remaining, &hlen) != 1 || size - hlen < remaining)
            return 0;
        const uint8_t *body = data + hlen;
        uint8_t type = tf >> 4, flags = tf & 0x0f;
        if (mqtt_decode_any(tf, body, remaining, proto) == 0) {
            struct mqtt_buf out = {0};
            if (type == MQTT_SUBSCRIBE || type == MQTT_UNSUBSCRIBE) {
                struct mqtt_subscribe s;
                mqtt_decode_subscribe(type, flags, body, remaining, proto, &s);
                uint32_t pos = 0;
                struct mqtt_sub_entry e;
                while (mqtt_next_sub_entry(&s, type, &pos, &e) == 1)
                    mqtt_put_string(&out, e.filter.data, (uint16_t)e.filter.len);
            } else if (type == MQTT_PUBLISH) {
                struct mqtt_publish p;
                mqtt_decode_publish(flags, body, remaining, proto, &p);
                mqtt_forwardable_props(&p.props.raw, &out);
                publish_round_trip(&p, proto);
            } else if (type == MQTT_CONNECT) {
                struct mqtt_connect c;
                mqtt_decode_connect(body, remaining, &c);
                mqtt_forwardable_props(&c.will_props.raw, &out);
                connect_round_trip(&c);
            }
            mqtt_buf_free(&out);
        } else if (type == MQTT_CONNACK) {
            struct mqtt_connack k;
            mqtt_decode_connack(flags, body, remaining, proto, &k);
        } else if (type == MQTT_SUBACK || type == MQTT_UNSUBACK) {
            struct mqtt_suback s;
            if (mqtt_decode_suback(type, flags, body, remaining, proto, &s) == 0 && s.n_reasons > remaining)
                abort();
        }
        data += hlen + remaining;
        size -= hlen + remaining;
    }
    return 0;
}
