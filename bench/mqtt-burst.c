/*
 * mqtt-burst.c - publish N QoS 1 messages as fast as a broker acknowledges
 * them (W in flight), for bench/spool: Python publishers top out near 2,000
 * msgs/s, far below what the spool takes in. Uses the uplink's MQTT client.
 *
 *   mqtt-burst --port P --topic T --count N [--size BYTES] [--window W]
 *
 * Payload i starts with "%08d" i, padded with 'x' to BYTES. Prints
 * "published=N seconds=S rate=R" once every PUBACK arrived.
 */
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mqtt/client.h"
#include "base/util.h"

struct burst {
    long acked, failed;
    bool connected;
};

static void on_connect(void *ctx, bool session_present)
{
    ((struct burst *)ctx)->connected = true;
}

static void on_puback(void *ctx, uint16_t id, uint8_t reason)
{
    ((struct burst *)ctx)->acked++;
}

static void on_disconnect(void *ctx, const char *reason)
{
    fprintf(stderr, "mqtt-burst: %s\n", reason);
    ((struct burst *)ctx)->failed = 1;
}

int main(int argc, char **argv)
{
    int port = 1883, window = 1000;
    long count = 1000, size = 64;
    const char *topic = "bench";
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},   {"topic", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'n'},  {"size", required_argument, NULL, 's'},
        {"window", required_argument, NULL, 'w'}, {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "p:t:n:s:w:", opts, NULL)) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 't': topic = optarg; break;
        case 'n': count = atol(optarg); break;
        case 's': size = atol(optarg); break;
        case 'w': window = atoi(optarg); break;
        default: fprintf(stderr, "usage: mqtt-burst --port P --topic T --count N [--size B] [--window W]\n"); return 2;
        }
    }
    if (window < 1 || window > 60000 || size < 8)
        return 2;
    struct burst b = {0};
    char host[] = "127.0.0.1";
    struct hd_mqtt_options mo = {.host = host, .port = port, .clean_session = true, .keepalive = 60};
    char id[64];
    snprintf(id, sizeof(id), "mqtt-burst-%d", (int)getpid());
    mo.client_id = id;
    struct hd_mqtt_callbacks cb = {.on_connect = on_connect, .on_puback = on_puback, .on_disconnect = on_disconnect};
    struct hd_mqtt_client *c = hd_mqtt_client_new(&mo, &cb, &b);
    hd_error_t err = NULL;
    if (hd_mqtt_client_connect(c, &err) < 0) {
        hd_error_print(err, "mqtt-burst");
        return 1;
    }
    char *payload = hd_xmalloc((size_t)size);
    memset(payload, 'x', (size_t)size);
    long sent = 0;
    uint16_t next_id = 0;
    uint64_t t0 = hd_now_ns();
    while (b.acked < count && !b.failed) {
        if (b.connected) {
            while (sent < count && sent - b.acked < window) {
                char head[24];
                snprintf(head, sizeof(head), "%08ld", sent);
                memcpy(payload, head, 8);
                if (++next_id == 0)
                    next_id = 1;
                hd_mqtt_publish(c, topic, payload, (size_t)size, 1, false, next_id, NULL, 0);
                sent++;
            }
            hd_mqtt_client_flush(c);
        }
        struct pollfd p = {.fd = hd_mqtt_client_fd(c), .events = hd_mqtt_client_events(c)};
        if (poll(&p, 1, 10000) <= 0)
            break;
        hd_mqtt_client_handle(c, p.revents);
    }
    double s = (double)(hd_now_ns() - t0) / 1e9;
    printf("published=%ld seconds=%.3f rate=%.0f\n", b.acked, s, (double)b.acked / s);
    hd_mqtt_client_close(c, true);
    hd_mqtt_client_free(c);
    free(payload);
    return b.acked == count ? 0 : 1;
}
