/*
 * handle_publish.c - PUBLISH from clients, the acknowledgement packets, and
 * routing a message to its subscribers.
 *
 * Incoming QoS 2 uses the spec's "method B": the message is routed when the
 * PUBLISH arrives and its packet id is remembered until PUBREL, so a
 * retransmitted PUBLISH (DUP) is acknowledged again but not delivered twice.
 *
 * Routing collects the matching sessions first (one entry per session: with
 * overlapping subscriptions one copy goes out at the highest QoS, carrying the
 * Subscription Identifiers of all of them, and retained if any of them has
 * Retain As Published), then delivers. The identifiers of the common case, one
 * subscription, stay in the session's scratch; only several use a heap array,
 * grown once per session. The message stays a view into the read buffer unless a session
 * has to keep it (QoS > 0, offline queue, retained store).
 */
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "base/util.h"

struct route_ctx {
    struct hd_broker *b;
    struct broker_session *from;
    struct broker_msg *msg;
    uint64_t gen;
};

/* Remember one more Subscription Identifier of a session's matching subscriptions. */
static void match_add_sub_id(struct broker_session *s, uint32_t sub_id)
{
    if (!s->n_match_ids) {
        s->match_sub_id = sub_id;
        s->n_match_ids = 1;
        return;
    }
    uint32_t more = s->n_match_ids - 1;
    if (more == s->cap_match_more_ids) {
        s->cap_match_more_ids = s->cap_match_more_ids ? s->cap_match_more_ids * 2 : 4;
        s->match_more_ids = hd_xrealloc(s->match_more_ids, s->cap_match_more_ids * sizeof(*s->match_more_ids));
    }
    s->match_more_ids[more] = sub_id;
    s->n_match_ids++;
}

static void route_collect(void *ctx, struct broker_session *s, uint8_t options, uint32_t sub_id)
{
    struct route_ctx *r = ctx;
    struct hd_broker *b = r->b;
    if ((options & 0x04) && s == r->from)
        return; /* No Local, per subscription (MQTT-3.8.3-3) */
    uint8_t qos = options & 3;
    if (qos > r->msg->qos)
        qos = r->msg->qos;
    if (s->match_gen == r->gen) {
        /* overlapping subscriptions: one copy, the highest QoS (MQTT-3.3.4-2), every identifier (MQTT-3.3.4-3/4) */
        if (qos > s->match_qos)
            s->match_qos = qos;
        s->match_opts |= options & 0x08;
        if (sub_id)
            match_add_sub_id(s, sub_id);
        return;
    }
    s->match_gen = r->gen;
    s->match_qos = qos;
    s->match_opts = options;
    s->match_sub_id = sub_id;
    s->n_match_ids = sub_id ? 1 : 0;
    if (b->n_targets == b->cap_targets) {
        b->cap_targets = b->cap_targets ? b->cap_targets * 2 : 64;
        b->targets = hd_xrealloc(b->targets, b->cap_targets * sizeof(*b->targets));
    }
    b->targets[b->n_targets++] = s;
}

void broker_route(struct hd_broker *b, struct broker_session *from, struct broker_msg *m)
{
    struct route_ctx r = {b, from, m, ++b->match_gen};
    b->n_targets = 0;
    broker_tree_match(&b->sub_root, m->topic, route_collect, &r);
    b->routing_fanout = b->n_targets > 1;
    for (uint32_t i = 0; i < b->n_targets; i++) {
        struct broker_session *s = b->targets[i];
        if (!broker_acl_allows(b, s->username, s->client_id, m->topic, ACL_READ))
            continue;
        bool retain = (s->match_opts & 0x08) ? m->retain : false; /* Retain As Published */
        if (s->n_match_ids <= 1) {
            broker_session_deliver(b, s, m, s->match_qos, retain, &s->match_sub_id, s->n_match_ids);
            continue;
        }
        /* two or more: append the first to match_more_ids, which then holds them all in one array */
        match_add_sub_id(s, s->match_sub_id);
        broker_session_deliver(b, s, m, s->match_qos, retain, s->match_more_ids, s->n_match_ids - 1);
    }
    b->n_targets = 0;
    b->routing_fanout = false;
}

static void ack_publish(struct hd_broker *b, struct broker_conn *c, uint8_t qos, uint16_t id, uint8_t reason)
{
    if (qos == 1)
        broker_send_ack(b, c, MQTT_PUBACK, id, reason);
    else if (qos == 2)
        broker_send_ack(b, c, MQTT_PUBREC, id, reason);
}

int broker_handle_publish(struct hd_broker *b, struct broker_conn *c, uint8_t flags, const uint8_t *body, uint32_t len)
{
    struct mqtt_publish p;
    int rc = mqtt_decode_publish(flags, body, len, c->protocol, &p);
    if (rc)
        return rc;
    b->stats.messages_received++;
    struct broker_session *s = c->session;

    /* the topic: a copy on the stack-sized scratch, NUL-terminated for the tree */
    const char *topic = (const char *)p.topic.data;
    uint32_t topic_len = p.topic.len;
    if (!topic_len && !p.props.has_topic_alias && c->protocol == 5)
        return RC_PROTOCOL_ERROR; /* a zero-length Topic Name needs a Topic Alias (MQTT 5 §3.3.2.1) */
    if (p.props.has_topic_alias) {
        uint16_t a = p.props.topic_alias;
        if (a == 0 || a > c->alias_max)
            return RC_TOPIC_ALIAS_INVALID;
        if (!c->aliases)
            c->aliases = hd_xcalloc((size_t)c->alias_max + 1, sizeof(char *));
        if (topic_len) {
            free(c->aliases[a]);
            c->aliases[a] = hd_xmalloc(topic_len + 1);
            memcpy(c->aliases[a], topic, topic_len);
            c->aliases[a][topic_len] = '\0';
        } else if (!c->aliases[a]) {
            return RC_PROTOCOL_ERROR;
        }
        topic = c->aliases[a];
        topic_len = (uint32_t)strlen(topic);
    }
    if (!hd_mqtt_topic_valid_name(topic, topic_len))
        return c->protocol == 5 ? RC_TOPIC_NAME_INVALID : RC_MALFORMED;
    /* a Response Topic is a topic name: no wildcards (MQTT-3.3.2-14) */
    if (p.props.response_topic.data &&
        !hd_mqtt_topic_valid_name((const char *)p.props.response_topic.data, p.props.response_topic.len))
        return RC_PROTOCOL_ERROR;

    if (p.qos == 2 && broker_session_qos2_in_has(s, p.packet_id)) {
        broker_send_ack(b, c, MQTT_PUBREC, p.packet_id, 0); /* retransmission: already routed */
        return 0;
    }
    /* our Receive Maximum: QoS 1 is acknowledged at once, so what is unacknowledged is the QoS 2
     * exchanges of this connection still waiting for PUBREL (MQTT-3.3.4-7: 0x93 when exceeded) */
    if (p.qos && c->protocol == 5 && c->in_unacked >= b->cfg.receive_maximum)
        return RC_RECEIVE_MAX_EXCEEDED;
    char stack_topic[256];
    char *topic_z = topic_len < sizeof(stack_topic) ? stack_topic : hd_xmalloc(topic_len + 1);
    memcpy(topic_z, topic, topic_len);
    topic_z[topic_len] = '\0';

    uint8_t reason = 0;
    if (!broker_acl_allows(b, c->username, s->client_id, topic_z, ACL_WRITE)) {
        reason = RC_NOT_AUTHORIZED;
    } else if (strncmp(topic_z, "$SYS/", 5) == 0 || strcmp(topic_z, "$SYS") == 0) {
        reason = 0; /* $SYS belongs to the broker: accepted and dropped, like mosquitto */
    } else {
        struct mqtt_buf props = {0};
        if (c->protocol == 5 && p.props.raw.len)
            mqtt_forwardable_props(&p.props.raw, &props);
        struct broker_msg view = {
            .refs = 0,
            .qos = p.qos,
            .retain = p.retain,
            .topic_len = (uint16_t)topic_len,
            .payload_len = p.payload.len,
            .props_len = (uint32_t)props.len,
            .topic = topic_z,
            .payload = (uint8_t *)p.payload.data,
            .props = props.data,
        };
        if (p.props.has_message_expiry) {
            view.expiry_wall = p.props.message_expiry;
            view.expire_at_ns = hd_now_ns() + (uint64_t)p.props.message_expiry * BROKER_NS_PER_S;
        }
        if (p.retain) {
            broker_retain_set(b, topic_z, &view);
            broker_store_retain(b, topic_z, view.payload_len ? &view : NULL);
        }
        broker_route(b, s, &view);
        if (view.owned)
            broker_msg_unref(view.owned);
        mqtt_buf_free(&props);
    }
    if (topic_z != stack_topic)
        free(topic_z);
    if (p.qos == 2 && reason < 0x80) {
        c->in_unacked++;
        broker_session_qos2_in_add(s, p.packet_id);
        broker_store_qos2_in(b, s, p.packet_id, true); /* exactly once, also across a restart */
    }
    if (c->protocol < 5)
        reason = 0; /* 3.1.1 has no negative acknowledgement: accept and drop */
    ack_publish(b, c, p.qos, p.packet_id, reason);
    return 0;
}

int broker_handle_ack(struct hd_broker *b, struct broker_conn *c, uint8_t type, uint8_t flags, const uint8_t *body,
                      uint32_t len)
{
    struct mqtt_ack a;
    int rc = mqtt_decode_ack(type, flags, body, len, c->protocol, &a);
    if (rc)
        return rc;
    struct broker_session *s = c->session;
    switch (type) {
    case MQTT_PUBREL: {
        bool known = broker_session_qos2_in_remove(s, a.packet_id);
        if (known)
            broker_store_qos2_in(b, s, a.packet_id, false);
        if (known && c->in_unacked)
            c->in_unacked--; /* ids from an earlier connection were not counted: this errs toward allowing */
        broker_send_ack(b, c, MQTT_PUBCOMP, a.packet_id, known ? 0 : RC_PACKET_ID_NOT_FOUND);
        break;
    }
    case MQTT_PUBREC:
        if (a.reason >= 0x80) {
            /* 5.0: the client refused the message; the exchange ends here */
            broker_session_cancel(b, s, a.packet_id);
        } else if (!broker_session_ack(b, s, MQTT_PUBREC, a.packet_id)) {
            broker_send_ack(b, c, MQTT_PUBREL, a.packet_id, RC_PACKET_ID_NOT_FOUND);
        }
        break;
    default:
        broker_session_ack(b, s, type, a.packet_id); /* unknown ids are ignored (late duplicates) */
        break;
    }
    return 0;
}
