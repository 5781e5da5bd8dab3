/*
 * handle_connect.c - the connection's lifecycle at the protocol level:
 * CONNECT (authentication, session take-over, clean start or resumption,
 * CONNACK with the 5.0 properties), DISCONNECT, and what happens when a
 * connection is lost: its will is published (5.0: after the will delay, unless
 * the session is resumed first) and a non-persistent session ends.
 *
 * Session state machine, per client id:
 *   (none) --CONNECT--> ONLINE --connection lost--> OFFLINE --expiry--> (none)
 *                         ^---------CONNECT (clean_start=0)----'
 * A session with expiry 0 skips OFFLINE and ends with its connection. Only the
 * user that created a session can take it over or resume it.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "base/util.h"

/* The 5.0 CONNACK properties of an accepted connection. */
static void connack_props(struct hd_broker *b, struct mqtt_buf *props, const char *assigned_id,
                          uint16_t server_keepalive, bool want_response_info)
{
    if (assigned_id) {
        mqtt_put_u8(props, PROP_ASSIGNED_CLIENT_ID);
        mqtt_put_string(props, assigned_id, (uint16_t)strlen(assigned_id));
    }
    mqtt_put_u8(props, PROP_TOPIC_ALIAS_MAXIMUM);
    mqtt_put_u16(props, b->cfg.topic_alias_max);
    mqtt_put_u8(props, PROP_MAXIMUM_PACKET_SIZE);
    mqtt_put_u32(props, b->cfg.max_packet_size);
    if (server_keepalive) {
        mqtt_put_u8(props, PROP_SERVER_KEEPALIVE);
        mqtt_put_u16(props, server_keepalive);
    }
    if (b->cfg.receive_maximum < 65535) { /* absent means 65535 (MQTT 5 §3.2.2.3.3) */
        mqtt_put_u8(props, PROP_RECEIVE_MAXIMUM);
        mqtt_put_u16(props, b->cfg.receive_maximum);
    }
    /* only to a client that asked: Request Response Information 1 (MQTT-3.1.2-28) */
    if (want_response_info && b->cfg.response_information) {
        mqtt_put_u8(props, PROP_RESPONSE_INFO);
        mqtt_put_string(props, b->cfg.response_information, (uint16_t)strlen(b->cfg.response_information));
    }
}

/* The size of the CONNACK that accepts the connection. */
static size_t connack_size(struct hd_broker *b, uint8_t proto, const char *assigned_id, uint16_t server_keepalive,
                           bool want_response_info)
{
    if (proto != 5)
        return mqtt_connack_size(proto, 0);
    struct mqtt_buf props = {0};
    connack_props(b, &props, assigned_id, server_keepalive, want_response_info);
    size_t n = mqtt_connack_size(proto, props.len);
    mqtt_buf_free(&props);
    return n;
}

static void send_connack(struct hd_broker *b, struct broker_conn *c, bool session_present, uint8_t reason,
                         const char *assigned_id, uint16_t server_keepalive, bool want_response_info)
{
    struct mqtt_buf *o = broker_conn_outbuf(b, c);
    if (c->protocol < 5) {
        /* 3.1.1 return codes: 1 protocol, 2 identifier, 3 unavailable, 4 bad user/password, 5 not authorized */
        uint8_t rc = 0;
        switch (reason) {
        case RC_SUCCESS: rc = 0; break;
        case RC_UNSUPPORTED_PROTOCOL: rc = 1; break;
        case RC_CLIENT_ID_NOT_VALID: rc = 2; break;
        case RC_BAD_USER_OR_PASSWORD: rc = 4; break;
        case RC_NOT_AUTHORIZED: rc = 5; break;
        default: rc = 3; break;
        }
        mqtt_encode_connack(o, c->protocol, session_present, rc, NULL, 0);
        return;
    }
    struct mqtt_buf props = {0};
    if (reason == RC_SUCCESS)
        connack_props(b, &props, assigned_id, server_keepalive, want_response_info);
    /* a refusal that does not fit the client's Maximum Packet Size (MQTT-3.1.2-24) is not sent: only the
     * close remains */
    if (!c->client_max_packet || mqtt_connack_size(c->protocol, props.len) <= c->client_max_packet)
        mqtt_encode_connack(o, c->protocol, session_present, reason, props.data, props.len);
    mqtt_buf_free(&props);
}

/* Refuse a CONNECT with a CONNACK reason and close. Returns -1 (closed). */
static int connect_refuse(struct hd_broker *b, struct broker_conn *c, uint8_t reason)
{
    send_connack(b, c, false, reason, NULL, 0, false);
    broker_conn_close(b, c, 0);
    return -1;
}

static char *bytes_dup(const struct mqtt_bytes *s)
{
    char *r = hd_xmalloc(s->len + 1);
    if (s->len)
        memcpy(r, s->data, s->len);
    r[s->len] = '\0';
    return r;
}

int broker_handle_connect(struct hd_broker *b, struct broker_conn *c, const uint8_t *body, uint32_t len)
{
    struct mqtt_connect k;
    int rc = mqtt_decode_connect(body, len, &k);
    /* the level is known even when the rest is bad: answer in that dialect */
    c->protocol = len >= 7 && body[6] == 5 ? 5 : 4;
    if (rc == RC_UNSUPPORTED_PROTOCOL)
        return connect_refuse(b, c, RC_UNSUPPORTED_PROTOCOL);
    if (rc) {
        broker_conn_close(b, c, 0);
        return -1;
    }
    c->protocol = k.protocol_level;
    if (c->protocol == 5 && k.props.has_max_packet_size)
        c->client_max_packet = k.props.max_packet_size; /* a refusing CONNACK must fit it too (MQTT-3.1.2-24) */

    cleanup_free char *assigned = NULL;
    cleanup_free char *client_id = bytes_dup(&k.client_id);
    if (!client_id[0]) {
        if (c->protocol < 5 && !k.clean_start)
            return connect_refuse(b, c, RC_CLIENT_ID_NOT_VALID);
        /* an id no session has (MQTT-3.2.2-16): a collision of 12 random characters is only theoretical */
        do {
            char id[13];
            hd_random_id(id, sizeof(id));
            free(client_id);
            client_id = hd_xasprintf("auto-%s", id);
        } while (broker_session_find(b, client_id));
        if (c->protocol == 5)
            assigned = hd_xstrdup(client_id);
    }

    if (c->protocol == 5 && k.props.has_auth_method)
        return connect_refuse(b, c, RC_BAD_AUTH_METHOD); /* no enhanced (AUTH packet) methods */
    /* identity: a TLS client certificate may stand for the username */
    cleanup_free char *username = NULL;
    if (c->cert_cn && b->cfg.tls_cert_as_username) {
        username = hd_xstrdup(c->cert_cn);
    } else {
        rc = broker_auth_check(b, &k.username, &k.password, k.has_username, k.has_password);
        if (rc)
            return connect_refuse(b, c, (uint8_t)rc);
        if (k.has_username)
            username = bytes_dup(&k.username);
    }

    if (k.will_flag) {
        cleanup_free char *topic = bytes_dup(&k.will_topic);
        if (!hd_mqtt_topic_valid_name(topic, k.will_topic.len)) {
            if (c->protocol == 5)
                return connect_refuse(b, c, RC_TOPIC_NAME_INVALID);
            broker_conn_close(b, c, 0);
            return -1;
        }
        const struct mqtt_bytes *rt = &k.will_props.response_topic;
        if (rt->data && !hd_mqtt_topic_valid_name((const char *)rt->data, rt->len))
            return connect_refuse(b, c, RC_PROTOCOL_ERROR); /* MQTT-3.3.2-14, for the will too */
        if (!broker_acl_allows(b, username, client_id, topic, ACL_WRITE))
            return connect_refuse(b, c, RC_NOT_AUTHORIZED);
        struct mqtt_buf props = {0};
        if (c->protocol == 5)
            mqtt_forwardable_props(&k.will_props.raw, &props);
        c->will = broker_msg_new(topic, k.will_topic.len, k.will_payload.data, k.will_payload.len, props.data,
                                 props.len, k.will_qos, k.will_retain);
        mqtt_buf_free(&props);
        if (k.will_props.has_message_expiry) {
            c->will->expiry_wall = k.will_props.message_expiry;
        }
        c->will_delay = k.will_props.will_delay;
    }

    uint16_t server_keepalive = 0;
    c->keepalive = k.keepalive;
    if (b->cfg.max_keepalive && (k.keepalive == 0 || k.keepalive > b->cfg.max_keepalive)) {
        c->keepalive = b->cfg.max_keepalive;
        server_keepalive = c->protocol == 5 ? c->keepalive : 0;
    }
    uint32_t expiry = 0;
    if (c->protocol == 5) {
        if (k.props.has_receive_max)
            c->client_receive_max = k.props.receive_max;
        c->alias_max = b->cfg.topic_alias_max;
        /* aliases toward the client: never above its Topic Alias Maximum (MQTT-3.1.2-26/27, MQTT-3.3.2-11) */
        if (k.props.has_topic_alias_max)
            c->out_alias_max =
                k.props.topic_alias_max < b->cfg.topic_alias_out ? k.props.topic_alias_max : b->cfg.topic_alias_out;
        /* Request Problem Information 0 (MQTT-3.1.2-29) holds by construction: the broker's only Reason
         * String is on DISCONNECT, and User Properties leave it only forwarded on PUBLISH */
        expiry = k.props.session_expiry;
    } else {
        expiry = k.clean_start ? 0 : 0xFFFFFFFFu;
    }

    /* the CONNACK must fit the client's Maximum Packet Size (MQTT-3.1.2-24). The broker's CONNACK has no Reason
     * String or User Property (the properties MQTT-3.2.2-19/-20 have it leave out); Response Information is a MAY, so
     * it goes first; the rest are needed. If it still does not fit, close without sending anything, before the
     * session is touched (the will is not published: the connection never became active). */
    bool want_response_info = c->protocol == 5 && k.props.request_response_info == 1;
    if (c->client_max_packet &&
        connack_size(b, c->protocol, assigned, server_keepalive, want_response_info) > c->client_max_packet) {
        want_response_info = false;
        if (connack_size(b, c->protocol, assigned, server_keepalive, false) > c->client_max_packet) {
            broker_conn_close(b, c, 0);
            return -1;
        }
    }

    /* a client id belongs to the user that created its session: another user may
     * neither kick that device off nor inherit its subscriptions and queued messages */
    struct broker_session *s = broker_session_find(b, client_id);
    if (s && !((!s->username && !username) || (s->username && username && strcmp(s->username, username) == 0)))
        return connect_refuse(b, c, RC_NOT_AUTHORIZED);
    /* take over a session in use by another connection */
    if (s && s->conn) {
        struct broker_conn *old = s->conn;
        broker_conn_close(b, old, RC_SESSION_TAKEN_OVER);
        s = broker_session_find(b, client_id); /* it ended if it was not persistent */
    }
    bool present = false;
    if (s && k.clean_start) {
        if (s->pending_will) {
            struct broker_msg *will = get_and_reset(&s->pending_will);
            broker_publish_will(b, will);
            broker_msg_unref(will);
        }
        broker_session_destroy(b, s);
        s = NULL;
    }
    if (s) {
        present = true;
        if (s->pending_will) { /* resumed before the will delay ran out: no will */
            broker_msg_unref(s->pending_will);
            s->pending_will = NULL;
        }
    } else {
        s = broker_session_create(b, client_id);
    }
    s->conn = c;
    s->state = SESSION_ONLINE;
    s->protocol = c->protocol;
    s->expiry_interval = expiry;
    free(s->username);
    s->username = username ? hd_xstrdup(username) : NULL;
    c->session = s;
    c->username = get_and_reset(&username);
    c->state = CONN_ACTIVE;
    b->stats.clients_connected++;
    b->stats.clients_total++;
    if (broker_session_persistent(s))
        broker_store_session(b, s);
    else if (s->persisted)
        broker_store_session_delete(b, s);

    send_connack(b, c, present, RC_SUCCESS, assigned, server_keepalive, want_response_info);
    if (present)
        broker_session_resume(b, s);
    return 0;
}

int broker_handle_disconnect(struct hd_broker *b, struct broker_conn *c, uint8_t flags, const uint8_t *body,
                             uint32_t len)
{
    struct mqtt_disconnect d;
    int rc = mqtt_decode_disconnect(flags, body, len, c->protocol, &d);
    if (rc)
        return rc;
    struct broker_session *s = c->session;
    if (d.props.has_session_expiry) {
        if (s->expiry_interval == 0 && d.props.session_expiry != 0)
            return RC_PROTOCOL_ERROR; /* MQTT 5 §3.14.2.2.2 */
        s->expiry_interval = d.props.session_expiry;
        if (broker_session_persistent(s))
            broker_store_session(b, s);
    }
    /* 0x04 "disconnect with will message" keeps the will; anything else discards it */
    c->disconnect_clean = d.reason != RC_DISCONNECT_WITH_WILL;
    broker_conn_close(b, c, 0);
    return 0;
}

void broker_publish_will(struct hd_broker *b, struct broker_msg *will)
{
    if (will->expiry_wall)
        will->expire_at_ns = hd_now_ns() + (uint64_t)will->expiry_wall * BROKER_NS_PER_S;
    if (will->retain) {
        broker_retain_set(b, will->topic, will);
        broker_store_retain(b, will->topic, will->payload_len ? will : NULL);
    }
    broker_route(b, NULL, will);
}

void broker_connection_lost(struct hd_broker *b, struct broker_conn *c)
{
    struct broker_session *s = c->session;
    if (!s)
        return;
    c->session = NULL;
    s->conn = NULL;
    s->state = SESSION_OFFLINE;
    s->offline_since_ns = hd_now_ns();
    struct broker_msg *will = get_and_reset(&c->will);
    if (will && !c->disconnect_clean && !b->shutting_down) {
        if (c->will_delay && broker_session_persistent(s)) {
            broker_msg_unref(s->pending_will);
            s->pending_will = will;
            s->will_at_ns = s->offline_since_ns + (uint64_t)c->will_delay * BROKER_NS_PER_S;
            will = NULL;
        } else {
            broker_publish_will(b, will);
        }
    }
    broker_msg_unref(will);
    if (!broker_session_persistent(s) && !b->shutting_down)
        broker_session_destroy(b, s);
    else if (!b->shutting_down)
        broker_store_session(b, s);
}
