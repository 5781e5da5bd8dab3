/*
 * session.c - MQTT sessions: the table by client id, subscriptions, and the
 * outgoing message list with its QoS 1/2 state machine.
 *
 * Each session keeps one ordered list of deliveries. Entries are sent in
 * order, so the in-flight ones (DELIV_WAIT_ACK, DELIV_WAIT_COMP) always come
 * before the queued ones (DELIV_QUEUED); the in-flight window is the client's
 * Receive Maximum (5.0) capped by max_inflight. After a reconnect the in-flight
 * entries are resent with their packet ids; those beyond the new connection's
 * window are `held` and resent, before any queued entry, as acks make room. A
 * delivery carries the Subscription Identifiers of every matching subscription
 * (inline when there is one, on the heap only for several). The queue limit counts only
 * queued entries; when it is reached the configured policy drops the new
 * message or the oldest queued one (documented in docs/broker.md).
 *
 * QoS 0 messages go straight to the socket and are never queued: a session
 * that is offline does not receive them (the spec allows this; mosquitto
 * does the same by default).
 */
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "base/util.h"

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

struct broker_session *broker_session_find(struct hd_broker *b, const char *client_id)
{
    if (!b->n_session_buckets)
        return NULL;
    struct broker_session *s = b->sessions[hash_str(client_id) & (b->n_session_buckets - 1)];
    for (; s; s = s->hash_next)
        if (strcmp(s->client_id, client_id) == 0)
            return s;
    return NULL;
}

static void sessions_grow(struct hd_broker *b)
{
    uint32_t n = b->n_session_buckets ? b->n_session_buckets * 2 : 1024;
    struct broker_session **t = hd_xcalloc(n, sizeof(*t));
    for (uint32_t i = 0; i < b->n_session_buckets; i++) {
        struct broker_session *s = b->sessions[i], *next;
        for (; s; s = next) {
            next = s->hash_next;
            uint32_t h = hash_str(s->client_id) & (n - 1);
            s->hash_next = t[h];
            t[h] = s;
        }
    }
    free(b->sessions);
    b->sessions = t;
    b->n_session_buckets = n;
}

struct broker_session *broker_session_create(struct hd_broker *b, const char *client_id)
{
    if (b->n_sessions >= b->n_session_buckets)
        sessions_grow(b);
    struct broker_session *s = hd_xcalloc(1, sizeof(*s));
    s->client_id = hd_xstrdup(client_id);
    s->state = SESSION_OFFLINE;
    s->next_packet_id = 1;
    uint32_t h = hash_str(client_id) & (b->n_session_buckets - 1);
    s->hash_next = b->sessions[h];
    b->sessions[h] = s;
    b->n_sessions++;
    return s;
}

bool broker_session_persistent(const struct broker_session *s)
{
    return s->expiry_interval > 0;
}

#define DELIVERY_POOL_MAX 4096

/* Deliveries are recycled through a small pool: no malloc/free per QoS 1/2 message. */
static struct broker_delivery *delivery_new(struct hd_broker *b)
{
    struct broker_delivery *d = b->delivery_pool;
    if (!d)
        return hd_xcalloc(1, sizeof(*d));
    b->delivery_pool = d->next;
    b->delivery_pool_size--;
    memset(d, 0, sizeof(*d));
    return d;
}

static void delivery_free(struct hd_broker *b, struct broker_delivery *d)
{
    broker_msg_unref(d->msg);
    if (d->n_sub_ids > 1)
        free(d->sub_ids.many);
    if (b->delivery_pool_size >= DELIVERY_POOL_MAX) {
        free(d);
        return;
    }
    d->next = b->delivery_pool;
    b->delivery_pool = d;
    b->delivery_pool_size++;
}

void broker_delivery_pool_free(struct hd_broker *b)
{
    while (b->delivery_pool) {
        struct broker_delivery *d = b->delivery_pool;
        b->delivery_pool = d->next;
        free(d);
    }
    b->delivery_pool_size = 0;
}

static const uint32_t *delivery_sub_ids(const struct broker_delivery *d)
{
    return d->n_sub_ids > 1 ? d->sub_ids.many : &d->sub_ids.one;
}

uint32_t broker_delivery_sub_ids(const struct broker_delivery *d, const uint32_t **ids)
{
    *ids = delivery_sub_ids(d);
    return d->n_sub_ids;
}

static void delivery_set_sub_ids(struct broker_delivery *d, const uint32_t *ids, uint32_t n)
{
    d->n_sub_ids = n;
    if (n == 1) {
        d->sub_ids.one = ids[0];
    } else if (n > 1) {
        d->sub_ids.many = hd_xmalloc(n * sizeof(*ids));
        memcpy(d->sub_ids.many, ids, n * sizeof(*ids));
    }
}

static void delivery_unlink(struct broker_session *s, struct broker_delivery *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        s->out_head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        s->out_tail = d->prev;
    if (d->state == DELIV_QUEUED) {
        if (s->first_queued == d)
            s->first_queued = d->next;
        s->n_queued--;
        s->queued_bytes -= d->msg->payload_len;
    } else {
        s->n_inflight--;
        if (d->held)
            s->n_held--;
    }
}

/* Remove and free one delivery, also from the store. */
static void delivery_drop(struct hd_broker *b, struct broker_session *s, struct broker_delivery *d)
{
    delivery_unlink(s, d);
    if (d->store_id)
        broker_store_delivery_delete(b, d);
    delivery_free(b, d);
}

void broker_session_destroy(struct hd_broker *b, struct broker_session *s)
{
    for (uint32_t i = 0; i < s->n_subs; i++) {
        broker_tree_unsubscribe(&b->sub_root, s->subs[i].filter, s->subs[i].share_group, s);
        b->stats.subscriptions--;
        free(s->subs[i].filter);
        free(s->subs[i].share_group);
    }
    free(s->subs);
    if (s->persisted)
        broker_store_session_delete(b, s); /* deletes its deliveries too */
    struct broker_delivery *d = s->out_head, *next;
    for (; d; d = next) {
        next = d->next;
        delivery_free(b, d);
    }
    if (s->pending_will)
        broker_msg_unref(s->pending_will);
    struct broker_session **pp = &b->sessions[hash_str(s->client_id) & (b->n_session_buckets - 1)];
    for (; *pp; pp = &(*pp)->hash_next) {
        if (*pp == s) {
            *pp = s->hash_next;
            break;
        }
    }
    b->n_sessions--;
    free(s->qos2_in);
    free(s->match_more_ids);
    free(s->username);
    free(s->client_id);
    free(s);
}

void broker_session_add_sub(struct broker_session *s, const char *filter, const char *group, uint8_t options,
                            uint32_t sub_id)
{
    for (uint32_t i = 0; i < s->n_subs; i++) {
        struct broker_sub *sub = &s->subs[i];
        if (strcmp(sub->filter, filter) == 0 &&
            ((!group && !sub->share_group) || (group && sub->share_group && strcmp(group, sub->share_group) == 0))) {
            sub->options = options;
            sub->sub_id = sub_id;
            return;
        }
    }
    if (s->n_subs == s->cap_subs) {
        s->cap_subs = s->cap_subs ? s->cap_subs * 2 : 4;
        s->subs = hd_xrealloc(s->subs, s->cap_subs * sizeof(*s->subs));
    }
    s->subs[s->n_subs++] = (struct broker_sub){hd_xstrdup(filter), group ? hd_xstrdup(group) : NULL, sub_id, options};
}

bool broker_session_remove_sub(struct broker_session *s, const char *filter, const char *group)
{
    for (uint32_t i = 0; i < s->n_subs; i++) {
        struct broker_sub *sub = &s->subs[i];
        if (strcmp(sub->filter, filter) == 0 &&
            ((!group && !sub->share_group) || (group && sub->share_group && strcmp(group, sub->share_group) == 0))) {
            free(sub->filter);
            free(sub->share_group);
            s->subs[i] = s->subs[--s->n_subs];
            return true;
        }
    }
    return false;
}

static uint32_t inflight_limit(struct hd_broker *b, struct broker_session *s)
{
    uint32_t limit = b->cfg.max_inflight ? b->cfg.max_inflight : 65535;
    if (s->conn && s->conn->client_receive_max && s->conn->client_receive_max < limit)
        limit = s->conn->client_receive_max;
    return limit;
}

static uint16_t packet_id_next(struct broker_session *s)
{
    for (;;) {
        uint16_t id = s->next_packet_id++;
        if (s->next_packet_id == 0)
            s->next_packet_id = 1;
        if (id == 0)
            continue;
        bool used = false;
        for (struct broker_delivery *d = s->out_head; d && d->state != DELIV_QUEUED; d = d->next)
            if (d->packet_id == id)
                used = true;
        if (!used)
            return id;
    }
}

void broker_session_deliver(struct hd_broker *b, struct broker_session *s, struct broker_msg *m, uint8_t qos,
                            bool retain, const uint32_t *sub_ids, uint32_t n_sub_ids)
{
    struct broker_conn *c = s->conn;
    if (qos == 0) {
        if (c && c->state == CONN_ACTIVE)
            broker_send_publish(b, c, m, 0, retain, false, 0, sub_ids, n_sub_ids);
        return;
    }
    if ((b->cfg.max_queued_messages && s->n_queued >= b->cfg.max_queued_messages) ||
        (b->cfg.max_queued_bytes && s->queued_bytes + m->payload_len > b->cfg.max_queued_bytes)) {
        struct broker_delivery *old = s->first_queued;
        if (b->cfg.queue_policy != HD_BROKER_DROP_OLDEST || !old) {
            b->stats.messages_dropped++;
            return;
        }
        delivery_drop(b, s, old);
        b->stats.messages_dropped++;
    }
    struct broker_delivery *d = delivery_new(b);
    d->msg = broker_msg_hold(m);
    d->qos = qos;
    d->retain = retain;
    delivery_set_sub_ids(d, sub_ids, n_sub_ids);
    d->state = DELIV_QUEUED;
    d->prev = s->out_tail;
    if (s->out_tail)
        s->out_tail->next = d;
    else
        s->out_head = d;
    s->out_tail = d;
    if (!s->first_queued)
        s->first_queued = d;
    s->n_queued++;
    s->queued_bytes += m->payload_len;
    if (s->persisted)
        broker_store_delivery_add(b, s, d);
    if (c && c->state == CONN_ACTIVE)
        broker_session_pump(b, s);
}

/* Resend held in-flight deliveries while the connection's window has room; false if some are still held. */
static bool resend_held(struct hd_broker *b, struct broker_session *s, uint32_t limit)
{
    struct broker_delivery *d, *next;
    for (d = s->out_head; d && s->n_held && d->state != DELIV_QUEUED; d = next) {
        next = d->next;
        if (!d->held)
            continue;
        if (s->n_inflight - s->n_held >= limit)
            return false;
        d->held = false;
        s->n_held--;
        if (!broker_send_publish(b, s->conn, d->msg, d->qos, d->retain, true, d->packet_id, delivery_sub_ids(d),
                                 d->n_sub_ids))
            delivery_drop(b, s, d); /* the new connection's Maximum Packet Size is smaller (MQTT-3.1.2-25) */
    }
    return s->n_held == 0;
}

void broker_session_pump(struct hd_broker *b, struct broker_session *s)
{
    struct broker_conn *c = s->conn;
    if (!c || c->state != CONN_ACTIVE)
        return;
    uint32_t limit = inflight_limit(b, s);
    if (s->n_held && !resend_held(b, s, limit))
        return; /* held ones first: the queue waits behind them */
    uint64_t now = 0;
    struct broker_delivery *d, *next;
    for (d = s->first_queued; d && s->n_inflight < limit; d = next) {
        next = d->next;
        if (d->msg->expire_at_ns) {
            if (!now)
                now = hd_now_ns();
            if (broker_msg_expired(d->msg, now)) {
                delivery_drop(b, s, d);
                continue;
            }
        }
        s->first_queued = d->next;
        s->n_queued--;
        s->queued_bytes -= d->msg->payload_len;
        s->n_inflight++;
        d->state = DELIV_WAIT_ACK;
        d->packet_id = packet_id_next(s);
        if (!broker_send_publish(b, c, d->msg, d->qos, d->retain, false, d->packet_id, delivery_sub_ids(d),
                                 d->n_sub_ids)) {
            /* too large for the client: discarded, and treated as delivered (MQTT-3.1.2-25) */
            delivery_drop(b, s, d);
            continue;
        }
        if (d->store_id)
            broker_store_delivery_update(b, d);
    }
}

void broker_session_resume(struct hd_broker *b, struct broker_session *s)
{
    /* every unacknowledged PUBLISH is resent with its packet id (MQTT-4.4.0-1), but no more at once than
     * this connection's Receive Maximum (MQTT-3.3.4-9): the rest are held and go out as acks make room */
    struct broker_conn *c = s->conn;
    uint32_t limit = inflight_limit(b, s), on_wire = 0;
    struct broker_delivery *d, *next;
    s->n_held = 0;
    for (d = s->out_head; d && d->state != DELIV_QUEUED; d = next) {
        next = d->next;
        d->held = false;
        if (d->state == DELIV_WAIT_COMP) {
            broker_send_ack(b, c, MQTT_PUBREL, d->packet_id, 0);
            on_wire++;
        } else if (on_wire >= limit) {
            d->held = true;
            s->n_held++;
        } else if (broker_send_publish(b, c, d->msg, d->qos, d->retain, true, d->packet_id, delivery_sub_ids(d),
                                       d->n_sub_ids)) {
            on_wire++;
        } else {
            delivery_drop(b, s, d); /* the new connection's Maximum Packet Size is smaller (MQTT-3.1.2-25) */
        }
    }
    broker_session_pump(b, s);
}

bool broker_session_ack(struct hd_broker *b, struct broker_session *s, uint8_t type, uint16_t packet_id)
{
    struct broker_delivery *d = s->out_head;
    for (; d && d->state != DELIV_QUEUED; d = d->next)
        if (d->packet_id == packet_id)
            break;
    if (!d || d->state == DELIV_QUEUED)
        return false;
    switch (type) {
    case MQTT_PUBACK:
        if (d->qos != 1 || d->state != DELIV_WAIT_ACK)
            return false;
        delivery_drop(b, s, d);
        break;
    case MQTT_PUBREC:
        if (d->qos != 2)
            return false;
        d->state = DELIV_WAIT_COMP;
        if (d->store_id)
            broker_store_delivery_update(b, d);
        if (s->conn)
            broker_send_ack(b, s->conn, MQTT_PUBREL, packet_id, 0);
        return true;
    case MQTT_PUBCOMP:
        if (d->state != DELIV_WAIT_COMP)
            return false;
        delivery_drop(b, s, d);
        break;
    default: return false;
    }
    broker_session_pump(b, s);
    return true;
}

void broker_session_restore_delivery(struct broker_session *s, struct broker_msg *m, uint8_t qos, bool retain,
                                     const uint32_t *sub_ids, uint32_t n_sub_ids, uint8_t state, uint16_t packet_id,
                                     int64_t store_id)
{
    struct broker_delivery *d = hd_xcalloc(1, sizeof(*d));
    *d = (struct broker_delivery){.msg = broker_msg_hold(m),
                                  .store_id = store_id,
                                  .packet_id = packet_id,
                                  .qos = qos,
                                  .state = state,
                                  .retain = retain};
    delivery_set_sub_ids(d, sub_ids, n_sub_ids);
    /* keep the invariant (in-flight entries first) even if the rows say otherwise */
    struct broker_delivery *before = state != DELIV_QUEUED ? s->first_queued : NULL;
    if (before) {
        d->next = before;
        d->prev = before->prev;
        if (before->prev)
            before->prev->next = d;
        else
            s->out_head = d;
        before->prev = d;
    } else {
        d->prev = s->out_tail;
        if (s->out_tail)
            s->out_tail->next = d;
        else
            s->out_head = d;
        s->out_tail = d;
    }
    if (state == DELIV_QUEUED) {
        if (!s->first_queued)
            s->first_queued = d;
        s->n_queued++;
        s->queued_bytes += m->payload_len;
    } else {
        s->n_inflight++;
        if (packet_id >= s->next_packet_id)
            s->next_packet_id = (uint16_t)(packet_id + 1 ? packet_id + 1 : 1);
    }
}

void broker_session_cancel(struct hd_broker *b, struct broker_session *s, uint16_t packet_id)
{
    for (struct broker_delivery *d = s->out_head; d && d->state != DELIV_QUEUED; d = d->next) {
        if (d->packet_id == packet_id) {
            delivery_drop(b, s, d);
            broker_session_pump(b, s);
            return;
        }
    }
}

bool broker_session_qos2_in_has(struct broker_session *s, uint16_t id)
{
    for (uint32_t i = 0; i < s->n_qos2_in; i++)
        if (s->qos2_in[i] == id)
            return true;
    return false;
}

void broker_session_qos2_in_add(struct broker_session *s, uint16_t id)
{
    if (s->n_qos2_in == s->cap_qos2_in) {
        s->cap_qos2_in = s->cap_qos2_in ? s->cap_qos2_in * 2 : 8;
        s->qos2_in = hd_xrealloc(s->qos2_in, s->cap_qos2_in * sizeof(*s->qos2_in));
    }
    s->qos2_in[s->n_qos2_in++] = id;
}

bool broker_session_qos2_in_remove(struct broker_session *s, uint16_t id)
{
    for (uint32_t i = 0; i < s->n_qos2_in; i++) {
        if (s->qos2_in[i] == id) {
            s->qos2_in[i] = s->qos2_in[--s->n_qos2_in];
            return true;
        }
    }
    return false;
}

void broker_sessions_tick(struct hd_broker *b, uint64_t now)
{
    for (uint32_t i = 0; i < b->n_session_buckets; i++) {
        struct broker_session *s = b->sessions[i], *next;
        for (; s; s = next) {
            next = s->hash_next;
            if (s->conn)
                continue;
            bool expired = s->expiry_interval != 0xFFFFFFFFu &&
                now >= s->offline_since_ns + (uint64_t)s->expiry_interval * BROKER_NS_PER_S;
            if (s->pending_will && (expired || now >= s->will_at_ns)) {
                struct broker_msg *will = get_and_reset(&s->pending_will);
                broker_publish_will(b, will);
                broker_msg_unref(will);
            }
            if (expired)
                broker_session_destroy(b, s);
        }
    }
}

void broker_sessions_free(struct hd_broker *b)
{
    for (uint32_t i = 0; i < b->n_session_buckets; i++) {
        struct broker_session *s = b->sessions[i], *next;
        for (; s; s = next) {
            next = s->hash_next;
            s->persisted = false; /* shutting down: keep the stored copy */
            broker_session_destroy(b, s);
        }
    }
    free(b->sessions);
    b->sessions = NULL;
    b->n_session_buckets = 0;
}
