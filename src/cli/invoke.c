/*
 * invoke.c - `hedge invoke`: call a function by hand and print its result.
 *
 *   hedge invoke --topic TOPIC [--payload DATA] [--broker HOST:PORT] [--timeout SECONDS]
 *
 * Publishes DATA (default: stdin) to TOPIC with MQTT 5 request/response
 * properties (a private response topic, hedge/invoke/<id>, and correlation
 * data), waits for the reply and writes its payload to stdout. An error event
 * ({"error": ..., "function": ...}) goes to stderr with exit 1; no reply
 * within the timeout (default 30 s) exits 125. Functions are addressed by
 * trigger topic until hedged knows them by name.
 */
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "mqtt_client.h"
#include "util.h"

static const char usage_text[] =
    "hedge invoke --topic TOPIC [--payload DATA] [--broker HOST:PORT] [--timeout SECONDS]";

struct invoke_state {
    struct hd_mqtt_client *c;
    const char *topic, *reply_topic;
    const char *payload;
    size_t payload_len;
    char correlation[13];
    bool subscribed, done, failed;
    int exit_code;
};

static void invoke_on_connect(void *ctx, bool session_present)
{
    struct invoke_state *s = ctx;
    char *filters[] = {(char *)s->reply_topic, NULL};
    hd_mqtt_subscribe(s->c, 1, filters, 1);
}

static void invoke_on_suback(void *ctx, uint16_t id, const uint8_t *codes, size_t n)
{
    struct invoke_state *s = ctx;
    if (n < 1 || codes[0] >= 0x80) {
        fprintf(stderr, "hedge invoke: the broker refused the subscription to %s\n", s->reply_topic);
        s->done = s->failed = true;
        s->exit_code = HD_EXIT_HEDGE;
        return;
    }
    s->subscribed = true;
    hd_mqtt_publish_request(s->c, s->topic, s->payload, s->payload_len, 1, 2, s->reply_topic, s->correlation,
                            strlen(s->correlation));
}

static void invoke_on_message(void *ctx, const struct hd_mqtt_message *m)
{
    struct invoke_state *s = ctx;
    if (m->qos)
        hd_mqtt_puback(s->c, m->packet_id);
    if (!m->correlation || m->correlation_len != strlen(s->correlation) ||
        memcmp(m->correlation, s->correlation, m->correlation_len) != 0)
        return;
    s->done = true;
    json_t *o = json_loadb((const char *)m->payload, m->payload_len, 0, NULL);
    if (o && json_is_string(json_object_get(o, "error")) && json_is_string(json_object_get(o, "function"))) {
        fprintf(stderr, "hedge invoke: %s: %s: %s\n", json_string_value(json_object_get(o, "function")),
                json_string_value(json_object_get(o, "error")),
                json_is_string(json_object_get(o, "detail")) ? json_string_value(json_object_get(o, "detail")) : "");
        s->exit_code = 1;
    } else {
        fwrite(m->payload, 1, m->payload_len, stdout);
        fflush(stdout);
        s->exit_code = 0;
    }
    json_decref(o);
}

static void invoke_on_disconnect(void *ctx, const char *reason)
{
    struct invoke_state *s = ctx;
    fprintf(stderr, "hedge invoke: broker: %s\n", reason);
    s->done = s->failed = true;
    s->exit_code = HD_EXIT_HEDGE;
}

int cmd_invoke(int argc, char **argv)
{
    const char *topic = NULL, *payload = NULL, *broker = "127.0.0.1:1883";
    double timeout = 30;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc)
            topic = argv[++i];
        else if (strcmp(argv[i], "--payload") == 0 && i + 1 < argc)
            payload = argv[++i];
        else if (strcmp(argv[i], "--broker") == 0 && i + 1 < argc)
            broker = argv[++i];
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            timeout = atof(argv[++i]);
        else
            return cli_usage_error("invoke", usage_text, "unexpected argument '%s'", argv[i]);
    }
    if (!topic || !*topic || strpbrk(topic, "+#"))
        return cli_usage_error("invoke", usage_text, "--topic needs a topic name (no wildcards)");
    if (timeout <= 0)
        return cli_usage_error("invoke", usage_text, "--timeout must be more than 0");
    hd_error_t err = NULL;
    cleanup_free char *host = NULL, *stdin_data = NULL;
    int port;
    if (hd_mqtt_parse_address(broker, 1883, &host, &port, &err) < 0)
        return cli_fail(&err);
    struct invoke_state s = {.topic = topic, .exit_code = HD_EXIT_HEDGE};
    if (payload) {
        s.payload = payload;
        s.payload_len = strlen(payload);
    } else {
        size_t len = 0;
        if (hd_read_file("/dev/stdin", &stdin_data, &len, &err) < 0)
            return cli_fail(&err);
        s.payload = stdin_data;
        s.payload_len = len;
    }
    hd_random_id(s.correlation, sizeof(s.correlation));
    cleanup_free char *reply_topic = hd_xasprintf("hedge/invoke/%s", s.correlation);
    s.reply_topic = reply_topic;
    char client_id[32];
    snprintf(client_id, sizeof(client_id), "hedge-invoke-%s", s.correlation);
    struct hd_mqtt_options mo = {.host = host, .port = port, .client_id = client_id, .clean_session = true,
                                 .keepalive = 60, .protocol = 5};
    struct hd_mqtt_callbacks cb = {.on_connect = invoke_on_connect, .on_message = invoke_on_message,
                                   .on_suback = invoke_on_suback, .on_disconnect = invoke_on_disconnect};
    s.c = hd_mqtt_client_new(&mo, &cb, &s);
    if (hd_mqtt_client_connect(s.c, &err) < 0) {
        hd_mqtt_client_free(s.c);
        hd_error_prefix(&err, "broker %s", broker);
        return cli_fail(&err);
    }
    uint64_t deadline = hd_now_ns() + (uint64_t)(timeout * 1e9);
    while (!s.done) {
        uint64_t now = hd_now_ns();
        if (now >= deadline) {
            fprintf(stderr, "hedge invoke: no reply on %s within %gs (is a function listening on %s?)\n",
                    reply_topic, timeout, topic);
            break;
        }
        struct pollfd p = {.fd = hd_mqtt_client_fd(s.c), .events = hd_mqtt_client_events(s.c)};
        uint64_t left_ms = (deadline - now) / 1000000 + 1;
        if (poll(&p, 1, left_ms > 1000 ? 1000 : (int)left_ms) > 0)
            hd_mqtt_client_handle(s.c, p.revents);
        hd_mqtt_client_flush(s.c);
    }
    hd_mqtt_client_close(s.c, true);
    hd_mqtt_client_free(s.c);
    return s.exit_code;
}
