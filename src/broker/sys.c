/*
 * sys.c - the $SYS/broker/... topics: counters published as retained
 * messages every sys_interval seconds (mosquitto's names where they exist),
 * so `mosquitto_sub -t '$SYS/#' -v` shows the broker's state. The same
 * counters are available to an embedding daemon through hd_broker_get_stats()
 * for its /metrics endpoint.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "broker/internal.h"

static void sys_put(struct hd_broker *b, const char *topic, const char *value)
{
    struct broker_msg *m = broker_msg_new(topic, strlen(topic), value, strlen(value), NULL, 0, 0, true);
    broker_retain_set(b, topic, m);
    broker_route(b, NULL, m);
    broker_msg_unref(m);
}

static void sys_put_u64(struct hd_broker *b, const char *topic, uint64_t v)
{
    char text[24];
    snprintf(text, sizeof(text), "%" PRIu64, v);
    sys_put(b, topic, text);
}

void broker_sys_publish(struct hd_broker *b, uint64_t now)
{
    struct hd_broker_stats s;
    hd_broker_get_stats(b, &s);
    sys_put(b, "$SYS/broker/version", "hedge-broker " HEDGE_VERSION);
    sys_put_u64(b, "$SYS/broker/uptime", (now - b->start_ns) / BROKER_NS_PER_S);
    sys_put_u64(b, "$SYS/broker/clients/connected", s.clients_connected);
    sys_put_u64(b, "$SYS/broker/clients/total", b->n_sessions);
    sys_put_u64(b, "$SYS/broker/messages/received", s.messages_received);
    sys_put_u64(b, "$SYS/broker/messages/sent", s.messages_sent);
    sys_put_u64(b, "$SYS/broker/messages/dropped", s.messages_dropped);
    sys_put_u64(b, "$SYS/broker/bytes/received", s.bytes_received);
    sys_put_u64(b, "$SYS/broker/bytes/sent", s.bytes_sent);
    sys_put_u64(b, "$SYS/broker/retained messages/count", s.retained_count);
    sys_put_u64(b, "$SYS/broker/subscriptions/count", s.subscriptions);
}
