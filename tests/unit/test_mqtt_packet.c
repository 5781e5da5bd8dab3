/*
 * test_mqtt_packet.c - the client side of src/mqtt/packet.c: the packets a
 * client sends are byte-exact and decode back to what was encoded (through the
 * broker's own decoders), and the packets a broker sends (CONNACK, SUBACK,
 * UNSUBACK, PINGRESP) are decoded strictly, corrupt ones refused.
 */
#include <string.h>

#include "check.h"
#include "mqtt/packet.h"

static struct mqtt_bytes z(const char *s)
{
    return (struct mqtt_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static bool bytes_eq(struct mqtt_bytes b, const char *s)
{
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.data, s, b.len) == 0);
}

/* Split the one packet in b into type/flags and body; false unless b holds exactly one packet. */
static bool frame(const struct mqtt_buf *b, uint8_t *tf, const uint8_t **body, uint32_t *len)
{
    uint32_t hl;
    return mqtt_parse_fixed_header(b->data, b->len, tf, len, &hl) == 1 && hl + *len == b->len &&
        (*body = b->data + hl, true);
}

#define CHECK_BYTES(buf, lit) CHECK((buf).len == sizeof(lit) - 1 && memcmp((buf).data, lit, sizeof(lit) - 1) == 0)

static void test_connect(void)
{
    struct mqtt_buf b = {0};
    struct mqtt_connect k = {.protocol_level = 4, .clean_start = true, .keepalive = 60, .client_id = z("x")};
    mqtt_encode_connect(&b, &k);
    CHECK_BYTES(b, "\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x");
    b.len = 0;
    /* 5.0, persistent session ("never" expires), username and password */
    k = (struct mqtt_connect){.protocol_level = 5,
                              .keepalive = 30,
                              .client_id = z("id"),
                              .has_username = true,
                              .username = z("u"),
                              .has_password = true,
                              .password = z("pw")};
    k.props.has_session_expiry = true;
    k.props.session_expiry = 0xffffffffu;
    mqtt_encode_connect(&b, &k);
    CHECK_BYTES(b, "\x10\x1b\x00\x04MQTT\x05\xc0\x00\x1e\x05\x11\xff\xff\xff\xff\x00\x02id\x00\x01u\x00\x02pw");
    uint8_t tf = 0;
    const uint8_t *body = NULL;
    uint32_t len = 0;
    struct mqtt_connect d = {0};
    CHECK(frame(&b, &tf, &body, &len) && tf == 0x10);
    CHECK(mqtt_decode_connect(body, len, &d) == 0);
    CHECK(d.protocol_level == 5 && !d.clean_start && d.keepalive == 30 && d.props.has_session_expiry &&
          d.props.session_expiry == 0xffffffffu && bytes_eq(d.client_id, "id") && bytes_eq(d.username, "u") &&
          bytes_eq(d.password, "pw") && !d.will_flag);
    b.len = 0;
    /* a will, both protocols */
    for (uint8_t proto = 4; proto <= 5; proto++) {
        k = (struct mqtt_connect){.protocol_level = proto,
                                  .clean_start = true,
                                  .client_id = z("w"),
                                  .will_flag = true,
                                  .will_qos = 1,
                                  .will_retain = true,
                                  .will_topic = z("t/w"),
                                  .will_payload = z("bye")};
        mqtt_encode_connect(&b, &k);
        CHECK(frame(&b, &tf, &body, &len) && mqtt_decode_connect(body, len, &d) == 0);
        CHECK(d.will_flag && d.will_qos == 1 && d.will_retain && bytes_eq(d.will_topic, "t/w") &&
              bytes_eq(d.will_payload, "bye"));
        b.len = 0;
    }
    mqtt_buf_free(&b);
}

static void test_publish_subscribe_acks(void)
{
    struct mqtt_buf b = {0};
    uint8_t tf = 0;
    const uint8_t *body = NULL;
    uint32_t len = 0;
    /* the same bytes test_uplink feeds the client: QoS 1 "t/a", id 5, response topic, correlation, "hi" */
    struct mqtt_publish p = {.qos = 1, .packet_id = 5, .topic = z("t/a"), .payload = z("hi")};
    p.props.response_topic = z("r/1");
    p.props.correlation_data = z("c9");
    mqtt_encode_publish(&b, 5, &p);
    CHECK_BYTES(b,
                "\x32\x15\x00\x03t/a\x00\x05\x0b\x08\x00\x03r/1\x09\x00\x02"
                "c9hi");
    struct mqtt_publish d = {0};
    CHECK(frame(&b, &tf, &body, &len) && mqtt_decode_publish(tf & 0x0f, body, len, 5, &d) == 0);
    CHECK(d.qos == 1 && d.packet_id == 5 && bytes_eq(d.topic, "t/a") && bytes_eq(d.payload, "hi") &&
          bytes_eq(d.props.response_topic, "r/1") && bytes_eq(d.props.correlation_data, "c9"));
    b.len = 0;
    /* 3.1.1 drops the properties; QoS 0 has no packet id */
    p = (struct mqtt_publish){.retain = true, .topic = z("a"), .payload = z("x")};
    p.props.correlation_data = z("c");
    mqtt_encode_publish(&b, 4, &p);
    CHECK_BYTES(b,
                "\x31\x04\x00\x01"
                "ax");
    b.len = 0;

    char *filters[] = {(char *)"a/#", (char *)"$share/g/b", NULL};
    mqtt_encode_subscribe(&b, 5, 7, filters, 1);
    CHECK_BYTES(b,
                "\x82\x16\x00\x07\x00\x00\x03"
                "a/#\x01\x00\x0a$share/g/b\x01");
    struct mqtt_subscribe s = {0};
    CHECK(frame(&b, &tf, &body, &len) && mqtt_decode_subscribe(MQTT_SUBSCRIBE, tf & 0x0f, body, len, 5, &s) == 0);
    CHECK(s.packet_id == 7);
    b.len = 0;
    mqtt_encode_subscribe(&b, 4, 7, filters + 1, 0);
    CHECK_BYTES(b, "\x82\x0f\x00\x07\x00\x0a$share/g/b\x00");
    b.len = 0;

    mqtt_encode_ack(&b, 4, MQTT_PUBACK, 0x1234, 0);
    mqtt_encode_ack(&b, 5, MQTT_PUBREL, 1, 0);
    mqtt_encode_empty(&b, MQTT_PINGREQ);
    mqtt_encode_empty(&b, MQTT_DISCONNECT);
    CHECK_BYTES(b, "\x40\x02\x12\x34\x62\x02\x00\x01\xc0\x00\xe0\x00");
    b.len = 0;
    mqtt_encode_ack(&b, 5, MQTT_PUBREC, 2, RC_NO_MATCHING_SUBSCRIBERS);
    mqtt_encode_ack(&b, 4, MQTT_PUBREC, 2, RC_NO_MATCHING_SUBSCRIBERS); /* 3.1.1 has no reason */
    CHECK_BYTES(b, "\x50\x03\x00\x02\x10\x50\x02\x00\x02");
    b.len = 0;

    /* what the broker sends, decoded by the client's decoders */
    struct mqtt_connack k = {0};
    mqtt_encode_connack(&b, 4, true, 5, NULL, 0);
    CHECK_BYTES(b, "\x20\x02\x01\x05");
    CHECK(frame(&b, &tf, &body, &len) && mqtt_decode_connack(tf & 0x0f, body, len, 4, &k) == 0 && k.session_present &&
          k.reason == 5);
    b.len = 0;
    mqtt_encode_connack(&b, 5, false, 0, (const uint8_t *)"\x13\x00\x1e", 3);
    CHECK_BYTES(b, "\x20\x06\x00\x00\x03\x13\x00\x1e");
    CHECK(frame(&b, &tf, &body, &len) && mqtt_decode_connack(tf & 0x0f, body, len, 5, &k) == 0 &&
          k.props.has_server_keepalive && k.props.server_keepalive == 30);
    b.len = 0;
    struct mqtt_suback sa = {0};
    mqtt_encode_suback(&b, 5, MQTT_SUBACK, 9, (const uint8_t *)"\x01\x87", 2);
    CHECK_BYTES(b, "\x90\x05\x00\x09\x00\x01\x87");
    CHECK(frame(&b, &tf, &body, &len) && mqtt_decode_suback(MQTT_SUBACK, tf & 0x0f, body, len, 5, &sa) == 0 &&
          sa.packet_id == 9 && sa.n_reasons == 2 && sa.reasons[1] == 0x87);
    b.len = 0;
    mqtt_encode_suback(&b, 4, MQTT_UNSUBACK, 9, (const uint8_t *)"\x00", 1);
    CHECK_BYTES(b, "\xb0\x02\x00\x09");
    CHECK(frame(&b, &tf, &body, &len) && mqtt_decode_suback(MQTT_UNSUBACK, tf & 0x0f, body, len, 4, &sa) == 0 &&
          sa.n_reasons == 0);
    mqtt_buf_free(&b);
}

#define CONNACK(lit, proto, out) mqtt_decode_connack(0, (const uint8_t *)(lit), sizeof(lit) - 1, proto, out)
#define SUBACK(type, lit, proto, out) mqtt_decode_suback(type, 0, (const uint8_t *)(lit), sizeof(lit) - 1, proto, out)

static void test_server_packets(void)
{
    struct mqtt_connack k = {0};
    CHECK(CONNACK("\x01\x00", 4, &k) == 0 && k.session_present && k.reason == 0);
    CHECK(CONNACK("\x00\x05", 4, &k) == 0 && !k.session_present && k.reason == 5);
    CHECK(CONNACK("\x00", 4, &k) == RC_MALFORMED);
    CHECK(CONNACK("\x02\x00", 4, &k) == RC_MALFORMED);     /* reserved flag bits */
    CHECK(CONNACK("\x00\x00\x00", 4, &k) == RC_MALFORMED); /* 3.1.1: exactly two bytes */
    CHECK(mqtt_decode_connack(1, (const uint8_t *)"\x00\x00", 2, 4, &k) == RC_MALFORMED);
    CHECK(CONNACK("\x00\x00\x00", 5, &k) == 0);
    /* what hedge's broker sends: assigned id, topic alias max, max packet size, server keepalive */
    CHECK(CONNACK("\x00\x00\x10\x12\x00\x02id\x22\x00\x0a\x27\x00\x01\x00\x00\x13\x00\x1e", 5, &k) == 0);
    CHECK(bytes_eq(k.props.assigned_client_id, "id") && k.props.has_topic_alias_max && k.props.topic_alias_max == 10 &&
          k.props.max_packet_size == 65536 && k.props.has_server_keepalive && k.props.server_keepalive == 30);
    CHECK(CONNACK("\x00\x00\x02\x24\x01", 5, &k) == 0 && k.props.has_maximum_qos && k.props.maximum_qos == 1);
    CHECK(CONNACK("\x00\x00\x02\x24\x02", 5, &k) == RC_PROTOCOL_ERROR); /* maximum QoS is 0 or 1 */
    CHECK(CONNACK("\x00\x00\x02\x25\x02", 5, &k) == RC_PROTOCOL_ERROR); /* retain available is 0 or 1 */
    CHECK(CONNACK("\x00\x00\x02\x23\x00", 5, &k) == RC_MALFORMED);      /* topic alias: not in a CONNACK (§2.2.2.2) */
    CHECK(CONNACK("\x00\x00\x05\x21\x00\x01", 5, &k) == RC_MALFORMED);  /* property block runs past the end */
    CHECK(CONNACK("\x00\x87\x00", 5, &k) == 0 && k.reason == RC_NOT_AUTHORIZED);

    struct mqtt_suback s = {0};
    CHECK(SUBACK(MQTT_SUBACK, "\x00\x01\x00\x01\x80", 5, &s) == 0 && s.packet_id == 1 && s.n_reasons == 2 &&
          s.reasons[0] == 1 && s.reasons[1] == 0x80);
    CHECK(SUBACK(MQTT_SUBACK, "\x00\x01\x02", 4, &s) == 0 && s.n_reasons == 1 && s.reasons[0] == 2);
    CHECK(SUBACK(MQTT_SUBACK, "\x00\x01", 4, &s) == RC_PROTOCOL_ERROR); /* no reason code */
    CHECK(SUBACK(MQTT_SUBACK, "\x00\x01\x00", 5, &s) == RC_PROTOCOL_ERROR);
    CHECK(SUBACK(MQTT_SUBACK, "\x00\x00\x00", 4, &s) == RC_MALFORMED);             /* packet id 0 */
    CHECK(SUBACK(MQTT_SUBACK, "\x00\x02\x7f\x00", 5, &s) == RC_MALFORMED);         /* properties past the end */
    CHECK(SUBACK(MQTT_SUBACK, "\x00\x02\x02\x01\x00\x00", 5, &s) == RC_MALFORMED); /* payload format: not here */
    CHECK(SUBACK(MQTT_SUBACK, "\x00\x02\x04\x1f\x00\x01r\x00", 5, &s) == 0 && bytes_eq(s.props.reason_string, "r"));
    CHECK(mqtt_decode_suback(MQTT_SUBACK, 2, (const uint8_t *)"\x00\x01\x00", 3, 4, &s) == RC_MALFORMED);
    CHECK(SUBACK(MQTT_UNSUBACK, "\x00\x03", 4, &s) == 0 && s.packet_id == 3 && s.n_reasons == 0);
    CHECK(SUBACK(MQTT_UNSUBACK, "\x00\x03\x00", 4, &s) == RC_MALFORMED);
    CHECK(SUBACK(MQTT_UNSUBACK, "\x00\x03\x00\x11", 5, &s) == 0 && s.n_reasons == 1 && s.reasons[0] == 0x11);

    CHECK(mqtt_decode_empty(0, 0) == 0);
    CHECK(mqtt_decode_empty(1, 0) == RC_MALFORMED);
    CHECK(mqtt_decode_empty(0, 1) == RC_MALFORMED);
}

/* The broker's PUBLISH head: expiry, every subscription id, forwarded properties; the payload is the caller's. */
static void test_publish_head_and_disconnect(void)
{
    struct mqtt_buf b = {0};
    uint32_t ids[] = {1, 200};
    const uint8_t fwd[] = {0x01, 0x01}; /* payload format indicator = 1, forwarded as is */
    struct mqtt_publish_head h = {.topic = {(const uint8_t *)"a/b", 3},
                                  .qos = 1,
                                  .retain = true,
                                  .packet_id = 9,
                                  .payload_len = 2,
                                  .has_expiry = true,
                                  .expiry = 60,
                                  .sub_ids = ids,
                                  .n_sub_ids = 2,
                                  .raw_props = fwd,
                                  .raw_props_len = sizeof(fwd)};
    mqtt_encode_publish_head(&b, 5, &h);
    mqtt_put_bytes(&b, "hi", 2);
    CHECK_BYTES(b,
                "\x33\x16\x00\x03"
                "a/b\x00\x09\x0c\x02\x00\x00\x00\x3c\x0b\x01\x0b\xc8\x01\x01\x01hi");
    CHECK(mqtt_publish_size(5, &h) == b.len);
    uint8_t tf = 0;
    const uint8_t *body = NULL;
    uint32_t len = 0;
    struct mqtt_publish d = {0};
    mqtt_buf_free(&b);
    /* without the subscription ids (a server never receives them) it decodes back to the same values */
    struct mqtt_publish_head plain = h;
    plain.n_sub_ids = 0;
    mqtt_encode_publish_head(&b, 5, &plain);
    mqtt_put_bytes(&b, "hi", 2);
    CHECK(frame(&b, &tf, &body, &len) && mqtt_decode_publish(tf & 0x0f, body, len, 5, &d) == 0);
    CHECK(d.qos == 1 && d.retain && d.packet_id == 9 && bytes_eq(d.topic, "a/b") && bytes_eq(d.payload, "hi") &&
          d.props.has_message_expiry && d.props.message_expiry == 60);
    mqtt_buf_free(&b);
    /* a Topic Alias (after the expiry, before the ids): the topic may then be empty, and it decodes back */
    struct mqtt_publish_head aliased = plain;
    aliased.topic.len = 0;
    aliased.topic_alias = 0x0102;
    mqtt_encode_publish_head(&b, 5, &aliased);
    mqtt_put_bytes(&b, "hi", 2);
    CHECK_BYTES(b, "\x33\x11\x00\x00\x00\x09\x0a\x02\x00\x00\x00\x3c\x23\x01\x02\x01\x01hi");
    CHECK(mqtt_publish_size(5, &aliased) == b.len);
    CHECK(frame(&b, &tf, &body, &len) && mqtt_decode_publish(tf & 0x0f, body, len, 5, &d) == 0);
    CHECK(d.topic.len == 0 && d.props.has_topic_alias && d.props.topic_alias == 0x0102 && bytes_eq(d.payload, "hi"));
    mqtt_buf_free(&b);
    /* 3.1.1 carries no properties at all */
    mqtt_encode_publish_head(&b, 4, &h);
    mqtt_put_bytes(&b, "hi", 2);
    CHECK_BYTES(b,
                "\x33\x09\x00\x03"
                "a/b\x00\x09hi");
    CHECK(mqtt_publish_size(4, &h) == b.len);
    mqtt_buf_free(&b);

    mqtt_encode_disconnect(&b, 5, 0x8e, "taken over");
    CHECK_BYTES(b,
                "\xe0\x0f\x8e\x0d\x1f\x00\x0a"
                "taken over");
    mqtt_buf_free(&b);
    mqtt_encode_disconnect(&b, 5, 0x00, NULL);
    CHECK_BYTES(b, "\xe0\x02\x00\x00");
    mqtt_buf_free(&b);
    mqtt_encode_disconnect(&b, 4, 0x8e, "ignored");
    CHECK_BYTES(b, "\xe0\x00");
    mqtt_buf_free(&b);
}

int main(void)
{
    test_publish_head_and_disconnect();
    test_connect();
    test_publish_subscribe_acks();
    test_server_packets();
    CHECK_DONE();
}
