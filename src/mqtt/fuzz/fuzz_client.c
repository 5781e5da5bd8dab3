/*
 * fuzz_client.c - libFuzzer target for what a broker can send the
 * MQTT client (src/mqtt/client.c) (CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP, ...): the first
 * input byte picks MQTT 3.1.1 or 5, the rest is fed as received bytes
 * (hd_mqtt_client_feed). Callbacks answer like the uplink does (PUBACK,
 * SUBSCRIBE), so the encoders run on decoded data too. Built and run by scripts/fuzz-mqtt-client
 * (make fuzz).
 */
#include <stddef.h>
#include <stdint.h>

#include "mqtt/client.h"

static void fuzz_on_connect(void *ctx, bool session_present)
{
    char *filters[] = {(char *)"a/#", NULL};
    hd_mqtt_subscribe(ctx, 1, filters, 1);
}

static void fuzz_on_message(void *ctx, const struct hd_mqtt_message *m)
{
    if (m->qos)
        hd_mqtt_puback(ctx, m->packet_id);
    hd_mqtt_publish(ctx, m->topic, m->payload, m->payload_len, 1, false, 7, m->correlation, m->correlation_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct hd_mqtt_options o = {.host = (char *)"127.0.0.1", .port = 1, .protocol = (uint8_t)(data[0] & 1 ? 5 : 4)};
    struct hd_mqtt_callbacks cb = {.on_connect = fuzz_on_connect, .on_message = fuzz_on_message};
    struct hd_mqtt_client *c = hd_mqtt_client_new(&o, &cb, NULL);
    hd_mqtt_client_set_context(c, c); /* the callbacks answer through the client itself */
    hd_mqtt_client_feed(c, data + 1, size - 1);
    hd_mqtt_client_free(c);
    return 0;
}
