/*
 * handle_subscribe.c - SUBSCRIBE and UNSUBSCRIBE.
 *
 * A filter may be shared ("$share/GROUP/FILTER", MQTT 5 §4.8.2; accepted from
 * 3.1.1 clients too, like mosquitto): members of a group get each message
 * round-robin, and a shared subscription never receives retained messages.
 * Retained messages for a new subscription are sent after the SUBACK,
 * following the 5.0 Retain Handling option (0: always, 1: only if the
 * subscription is new, 2: never). Each filter is checked against the ACL
 * (read) before it is added; a denied filter gets reason 0x87 (5.0) or 0x80.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "base/util.h"

/* Split "$share/group/filter" in place (mqtt/topic.h has the rules); false if it is invalid. */
static bool filter_parse(char *full, char **group, char **filter)
{
    struct hd_mqtt_subscription sub;
    bool ok = hd_mqtt_subscription_parse(full, strlen(full), &sub);
    *group = NULL;
    *filter = full + (sub.filter - full);
    if (ok && sub.group) {
        *group = full + (sub.group - full);
        (*group)[sub.group_len] = '\0';
    }
    return ok;
}

static char *entry_dup(const struct mqtt_bytes *f)
{
    char *s = hd_xmalloc(f->len + 1);
    memcpy(s, f->data, f->len);
    s[f->len] = '\0';
    return s;
}

/* The entries of a decoded (so already validated) SUBSCRIBE or UNSUBSCRIBE; at least one. */
static uint32_t count_entries(const struct mqtt_subscribe *sub, uint8_t type)
{
    uint32_t n = 0, pos = 0;
    struct mqtt_sub_entry e;
    while (mqtt_next_sub_entry(sub, type, &pos, &e) == 1)
        n++;
    return n;
}

struct retained_ctx {
    struct hd_broker *b;
    struct broker_session *s;
    uint8_t qos;
    uint32_t sub_id;
};

static void send_retained(void *ctx, struct broker_msg *m)
{
    struct retained_ctx *r = ctx;
    if (!broker_acl_allows(r->b, r->s->username, r->s->client_id, m->topic, ACL_READ))
        return;
    broker_session_deliver(r->b, r->s, m, m->qos < r->qos ? m->qos : r->qos, true, &r->sub_id, r->sub_id ? 1 : 0);
}

int broker_handle_subscribe(struct hd_broker *b, struct broker_conn *c, uint8_t flags, const uint8_t *body,
                            uint32_t len)
{
    struct mqtt_subscribe sub;
    int rc = mqtt_decode_subscribe(MQTT_SUBSCRIBE, flags, body, len, c->protocol, &sub);
    if (rc)
        return rc;
    struct broker_session *s = c->session;
    uint32_t sub_id = sub.props.has_subscription_id ? sub.props.subscription_id : 0;
    /* every filter gets its code, however many (MQTT-3.8.4-5/6); the packet size bounds them */
    uint32_t n_entries = count_entries(&sub, MQTT_SUBSCRIBE);
    cleanup_free uint8_t *reasons = hd_xmalloc(n_entries);
    struct retained_req {
        char *filter;
        uint8_t qos;
    };
    cleanup_free struct retained_req *retained = hd_xcalloc(n_entries, sizeof(*retained));
    uint32_t n = 0, n_retained = 0;
    uint32_t pos = 0;
    struct mqtt_sub_entry e;
    bool changed = false;
    while (n < n_entries && mqtt_next_sub_entry(&sub, MQTT_SUBSCRIBE, &pos, &e) == 1) {
        cleanup_free char *full = entry_dup(&e.filter);
        char *group, *filter;
        uint8_t qos = e.options & 3;
        if (!filter_parse(full, &group, &filter)) {
            reasons[n++] = c->protocol == 5 ? RC_TOPIC_FILTER_INVALID : 0x80;
            continue;
        }
        if (group && (e.options & 0x04) && c->protocol == 5) {
            rc = RC_PROTOCOL_ERROR; /* No Local on a shared subscription */
            break;
        }
        if (!broker_acl_allows(b, c->username, s->client_id, filter, ACL_READ)) {
            reasons[n++] = c->protocol == 5 ? RC_NOT_AUTHORIZED : 0x80;
            continue;
        }
        bool existed = false;
        broker_tree_subscribe(&b->sub_root, filter, group, s, e.options, sub_id, &existed);
        broker_session_add_sub(s, filter, group, e.options, sub_id);
        if (!existed)
            b->stats.subscriptions++;
        changed = true;
        reasons[n++] = qos;
        uint8_t rh = (e.options >> 4) & 3;
        if (!group && (rh == 0 || (rh == 1 && !existed)))
            retained[n_retained++] = (struct retained_req){hd_xstrdup(filter), qos};
    }
    if (changed && broker_session_persistent(s))
        broker_store_session(b, s);
    if (rc) {
        for (uint32_t i = 0; i < n_retained; i++)
            free(retained[i].filter);
        return rc;
    }

    mqtt_encode_suback(broker_conn_outbuf(b, c), c->protocol, MQTT_SUBACK, sub.packet_id, reasons, n);

    for (uint32_t i = 0; i < n_retained; i++) {
        struct retained_ctx r = {b, s, retained[i].qos, sub_id};
        broker_retain_match(b, retained[i].filter, send_retained, &r);
        free(retained[i].filter);
    }
    return 0;
}

int broker_handle_unsubscribe(struct hd_broker *b, struct broker_conn *c, uint8_t flags, const uint8_t *body,
                              uint32_t len)
{
    struct mqtt_subscribe sub;
    int rc = mqtt_decode_subscribe(MQTT_UNSUBSCRIBE, flags, body, len, c->protocol, &sub);
    if (rc)
        return rc;
    struct broker_session *s = c->session;
    uint32_t n_entries = count_entries(&sub, MQTT_UNSUBSCRIBE); /* one UNSUBACK for all (MQTT-3.10.4-6) */
    cleanup_free uint8_t *reasons = hd_xmalloc(n_entries);
    uint32_t n = 0, pos = 0;
    struct mqtt_sub_entry e;
    bool changed = false;
    while (n < n_entries && mqtt_next_sub_entry(&sub, MQTT_UNSUBSCRIBE, &pos, &e) == 1) {
        cleanup_free char *full = entry_dup(&e.filter);
        char *group, *filter;
        if (!filter_parse(full, &group, &filter)) {
            reasons[n++] = RC_TOPIC_FILTER_INVALID;
            continue;
        }
        bool found = broker_tree_unsubscribe(&b->sub_root, filter, group, s);
        broker_session_remove_sub(s, filter, group);
        if (found) {
            b->stats.subscriptions--;
            changed = true;
        }
        reasons[n++] = found ? RC_SUCCESS : RC_NO_SUBSCRIPTION_EXISTED;
    }
    if (changed && broker_session_persistent(s))
        broker_store_session(b, s);
    mqtt_encode_suback(broker_conn_outbuf(b, c), c->protocol, MQTT_UNSUBACK, sub.packet_id, reasons, n);
    return 0;
}
