/*
 * fuzz_mqtt_packet.c - libFuzzer target for the MQTT packet decoder (scripts/fuzz-mqtt, `make fuzz`).
 *
 * Input: one byte selecting the protocol level (odd = 5.0, even = 3.1.1),
 * then a stream of packets framed exactly as on the wire. Every packet the
 * framing accepts goes through the decoder the broker uses, and the parts the
 * broker walks afterwards (SUBSCRIBE entries, forwarded properties) are
 * walked too. ASan/UBSan turn any out-of-bounds read into a crash.
 */
#include <stddef.h>
#include <stdint.h>

#include "mqtt/packet.h"

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
            } else if (type == MQTT_CONNECT) {
                struct mqtt_connect c;
                mqtt_decode_connect(body, remaining, &c);
                mqtt_forwardable_props(&c.will_props.raw, &out);
            }
            mqtt_buf_free(&out);
        }
        data += hlen + remaining;
        size -= hlen + remaining;
    }
    return 0;
}
