/*
 * broker.c - the broker's event loop: listeners, connections, framing,
 * outgoing buffers, timers, and the public hd_broker_* entry points.
 *
 * The host's loop (src/base/loop.c) watches the listeners and every client
 * socket (level-triggered) and runs a 1 s tick (keepalive, connect and
 * partial-packet deadlines, session expiry, delayed wills, $SYS). A dispatch
 * round is one turn of that loop:
 *   1. handle ready sockets: read into one shared buffer and parse complete
 *      packets in place (only a trailing partial packet is copied to the
 *      connection), handlers append replies to per-connection out buffers;
 *      the first thing that gives the round work defers round_finish to the
 *      end of the turn (hd_loop_defer);
 *   2. commit the store once for the whole round (group commit), so every
 *      QoS 1/2 message acknowledged in this round is durable first;
 *   3. flush each connection that has output with one write (the batching:
 *      all packets for a socket in a round leave in a single system call);
 *   4. free connections closed during the round (so pointers held by pending
 *      events stay valid until then).
 * Each connection's failures (malformed input, oversized packet, protocol
 * violation, timeouts) close only that connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "broker/internal.h"
#include "base/util.h"

#define READ_BUF_SIZE (256 * 1024)
#define QOS0_BACKLOG_LIMIT (8u << 20) /* a socket this far behind drops QoS 0 messages */
#define REF_PAYLOAD_MIN 1024          /* payloads from this size are written by reference, not copied */

static void round_begin(struct hd_broker *b);

/* ---- messages ---- */

struct broker_msg *broker_msg_new(const char *topic, size_t topic_len, const void *payload, size_t payload_len,
                                  const void *props, size_t props_len, uint8_t qos, bool retain)
{
    struct broker_msg *m = hd_xmalloc(sizeof(*m) + topic_len + 1 + props_len + payload_len);
    char *p = (char *)(m + 1);
    *m = (struct broker_msg){.refs = 1,
                             .qos = qos,
                             .retain = retain,
                             .topic_len = (uint16_t)topic_len,
                             .payload_len = (uint32_t)payload_len,
                             .props_len = (uint32_t)props_len};
    m->topic = p;
    memcpy(p, topic, topic_len);
    p[topic_len] = '\0';
    m->props = (uint8_t *)p + topic_len + 1;
    if (props_len)
        memcpy(m->props, props, props_len);
    m->payload = m->props + props_len;
    if (payload_len)
        memcpy(m->payload, payload, payload_len);
    return m;
}

struct broker_msg *broker_msg_hold(struct broker_msg *m)
{
    if (m->refs) {
        m->refs++;
        return m;
    }
    if (!m->owned) {
        m->owned = broker_msg_new(m->topic, m->topic_len, m->payload, m->payload_len, m->props, m->props_len, m->qos,
                                  m->retain);
        m->owned->expire_at_ns = m->expire_at_ns;
        m->owned->expiry_wall = m->expiry_wall;
    }
    m->owned->refs++;
    return m->owned;
}

void broker_msg_unref(struct broker_msg *m)
{
    if (m && m->refs && --m->refs == 0)
        free(m);
}

bool broker_msg_expired(const struct broker_msg *m, uint64_t now)
{
    return m->expire_at_ns && now >= m->expire_at_ns;
}

/* ---- output ---- */

struct mqtt_buf *broker_conn_outbuf(struct hd_broker *b, struct broker_conn *c)
{
    if (!c->in_flush_list) {
        round_begin(b); /* output queued outside an event (a user removed) still leaves this turn */
        c->in_flush_list = true;
        c->flush_next = b->flush_list;
        b->flush_list = c;
    }
    return &c->out;
}

/* The alias of topic toward c: *known when the client has it already, else a new one to announce, or 0
 * when aliases are off or used up (the first out_alias_max topics keep theirs for the connection). */
static uint16_t out_alias_find(struct broker_conn *c, const struct broker_msg *m, bool *known)
{
    *known = false;
    for (uint16_t i = 0; i < c->n_out_aliases; i++) {
        if (strcmp(c->out_aliases[i], m->topic) == 0) {
            *known = true;
            return (uint16_t)(i + 1);
        }
    }
    return c->n_out_aliases < c->out_alias_max ? (uint16_t)(c->n_out_aliases + 1) : 0;
}

bool broker_send_publish(struct hd_broker *b, struct broker_conn *c, struct broker_msg *m, uint8_t qos, bool retain,
                         bool dup, uint16_t packet_id, const uint32_t *sub_ids, uint32_t n_sub_ids)
{
    if (c->state == CONN_CLOSED)
        return true;
    if (qos == 0 && c->out.len - c->out_sent + c->ref_bytes + broker_ws_pending(c) > QOS0_BACKLOG_LIMIT) {
        b->stats.messages_dropped++;
        return false;
    }
    struct mqtt_publish_head head = {
        .topic = {(const uint8_t *)m->topic, m->topic_len},
        .qos = qos,
        .dup = dup,
        .retain = retain,
        .packet_id = packet_id,
        .payload_len = m->payload_len,
        .sub_ids = sub_ids,
        .n_sub_ids = n_sub_ids,
        .raw_props = m->props,
        .raw_props_len = m->props_len,
    };
    bool alias_known = false;
    if (c->out_alias_max) {
        head.topic_alias = out_alias_find(c, m, &alias_known);
        if (alias_known)
            head.topic.len = 0; /* the client maps the alias back to the topic (MQTT 5 §3.3.2.3.4) */
    }
    if (c->protocol == 5 && m->expire_at_ns) {
        uint64_t now = hd_now_ns();
        head.has_expiry = true;
        head.expiry =
            m->expire_at_ns > now ? (uint32_t)((m->expire_at_ns - now + BROKER_NS_PER_S - 1) / BROKER_NS_PER_S) : 1;
    }
    size_t total = mqtt_publish_size(c->protocol, &head);
    if (c->client_max_packet && total > c->client_max_packet) {
        b->stats.messages_dropped++; /* MQTT-3.1.2-24/25: discard what the client cannot take */
        return false;
    }
    if (head.topic_alias && !alias_known) {
        if (!c->out_aliases)
            c->out_aliases = hd_xcalloc(c->out_alias_max, sizeof(*c->out_aliases));
        c->out_aliases[c->n_out_aliases++] = hd_xstrdup(m->topic);
    }
    struct mqtt_buf *o = broker_conn_outbuf(b, c);
    mqtt_buf_reserve(o, total);
    mqtt_encode_publish_head(o, c->protocol, &head);
    if (m->payload_len >= REF_PAYLOAD_MIN && !c->tls && !c->ws && (m->refs || b->routing_fanout)) {
        /* one shared copy for every subscriber (or the one a queue already holds), gathered by
         * writev() at flush time; a read-buffer message for a single subscriber is just copied */
        if (c->n_refs == c->cap_refs) {
            c->cap_refs = c->cap_refs ? c->cap_refs * 2 : 8;
            c->refs = hd_xrealloc(c->refs, c->cap_refs * sizeof(*c->refs));
        }
        c->refs[c->n_refs++] = (struct out_ref){o->len, broker_msg_hold(m)};
        c->ref_bytes += m->payload_len;
    } else {
        mqtt_put_bytes(o, m->payload, m->payload_len);
    }
    b->stats.messages_sent++;
    return true;
}

void broker_send_ack(struct hd_broker *b, struct broker_conn *c, uint8_t type, uint16_t packet_id, uint8_t reason)
{
    if (c->state == CONN_CLOSED)
        return;
    mqtt_encode_ack(broker_conn_outbuf(b, c), c->protocol, type, packet_id, reason);
}

void broker_send_disconnect(struct hd_broker *b, struct broker_conn *c, uint8_t reason, const char *why)
{
    if (c->protocol != 5 || c->state != CONN_ACTIVE)
        return;
    mqtt_encode_disconnect(broker_conn_outbuf(b, c), c->protocol, reason, why);
}

static ssize_t conn_raw_write(struct broker_conn *c, const void *data, size_t len)
{
    if (c->tls)
        return broker_tls_write(c, data, len);
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    return n;
}

void broker_conn_want_write(struct hd_broker *b, struct broker_conn *c, bool on)
{
    if (c->want_write == on)
        return;
    hd_loop_modify(b->loop, c->watch, EPOLLIN | (on ? EPOLLOUT : 0));
    c->want_write = on;
}

/* Account n written bytes against the buffer and the referenced payloads. */
static void out_advance(struct broker_conn *c, size_t n)
{
    while (n > 0) {
        size_t seg_end = c->ref_head < c->n_refs ? c->refs[c->ref_head].at : c->out.len;
        if (c->out_sent < seg_end) {
            size_t k = seg_end - c->out_sent < n ? seg_end - c->out_sent : n;
            c->out_sent += k;
            n -= k;
            continue;
        }
        struct out_ref *r = &c->refs[c->ref_head];
        size_t left = r->msg->payload_len - c->ref_partial;
        size_t k = left < n ? left : n;
        c->ref_partial += (uint32_t)k;
        c->ref_bytes -= k;
        n -= k;
        if (c->ref_partial == r->msg->payload_len) {
            broker_msg_unref(r->msg);
            c->ref_head++;
            c->ref_partial = 0;
        }
    }
}

static bool out_pending(const struct broker_conn *c)
{
    return c->out_sent < c->out.len || c->ref_head < c->n_refs || broker_ws_pending(c);
}

/* Gather buffer ranges and referenced payloads into iov; returns the count. */
static int out_gather(struct broker_conn *c, struct iovec *iov, int max)
{
    int n = 0;
    size_t pos = c->out_sent;
    uint32_t r = c->ref_head, partial = c->ref_partial;
    while (n < max) {
        size_t seg_end = r < c->n_refs ? c->refs[r].at : c->out.len;
        if (pos < seg_end) {
            iov[n++] = (struct iovec){c->out.data + pos, seg_end - pos};
            pos = seg_end;
        } else if (r < c->n_refs) {
            struct broker_msg *m = c->refs[r].msg;
            iov[n++] = (struct iovec){m->payload + partial, m->payload_len - partial};
            partial = 0;
            r++;
        } else {
            break;
        }
    }
    return n;
}

/* A WebSocket connection: frame what is pending, then write the frames (over TLS for wss). */
static int conn_flush_ws(struct hd_broker *b, struct broker_conn *c)
{
    struct broker_ws *ws = c->ws;
    broker_ws_frame_output(c);
    while (ws->out_sent < ws->out.len) {
        ssize_t n = conn_raw_write(c, ws->out.data + ws->out_sent, ws->out.len - ws->out_sent);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        ws->out_sent += (size_t)n;
        b->stats.bytes_sent += (uint64_t)n;
    }
    if (ws->out_sent == ws->out.len) {
        mqtt_buf_free(&ws->out);
        ws->out_sent = 0;
        broker_conn_want_write(b, c, false);
    } else {
        if (ws->out_sent > 64 * 1024) { /* compact: drop what was written */
            memmove(ws->out.data, ws->out.data + ws->out_sent, ws->out.len - ws->out_sent);
            ws->out.len -= ws->out_sent;
            ws->out_sent = 0;
        }
        broker_conn_want_write(b, c, true);
    }
    return 0;
}

/* Write what is pending with as few system calls as possible; -1 when the peer is gone. */
static int conn_flush(struct hd_broker *b, struct broker_conn *c)
{
    if (c->ws)
        return conn_flush_ws(b, c);
    size_t flushed = 0;
    while (out_pending(c)) {
        ssize_t n;
        if (c->tls) {
            n = conn_raw_write(c, c->out.data + c->out_sent, c->out.len - c->out_sent);
        } else {
            struct iovec iov[64];
            int cnt = out_gather(c, iov, 64);
            n = writev(c->fd, iov, cnt);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                n = 0;
        }
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        out_advance(c, (size_t)n);
        flushed += (size_t)n;
        b->stats.bytes_sent += (uint64_t)n;
    }
    if (!out_pending(c)) {
        c->out.len = c->out_sent = 0;
        c->n_refs = c->ref_head = 0;
        /* light traffic (a CONNACK, a PINGRESP) keeps no buffer: idle connections cost less;
         * busy ones keep theirs instead of growing a new one every round */
        if (c->out.cap > 64 * 1024 || flushed < 1024)
            mqtt_buf_free(&c->out);
        if (c->cap_refs > 64) {
            free(c->refs);
            c->refs = NULL;
            c->cap_refs = 0;
        }
        broker_conn_want_write(b, c, false);
    } else {
        if (c->out_sent > 64 * 1024) { /* compact: drop what was written */
            memmove(c->out.data, c->out.data + c->out_sent, c->out.len - c->out_sent);
            c->out.len -= c->out_sent;
            if (c->n_refs)
                memmove(c->refs, c->refs + c->ref_head, (c->n_refs - c->ref_head) * sizeof(*c->refs));
            c->n_refs -= c->ref_head;
            c->ref_head = 0;
            for (uint32_t i = 0; i < c->n_refs; i++)
                c->refs[i].at -= c->out_sent;
            c->out_sent = 0;
        }
        broker_conn_want_write(b, c, true);
    }
    return 0;
}

/* ---- connections ---- */

void broker_conn_close(struct hd_broker *b, struct broker_conn *c, uint8_t reason)
{
    if (c->state == CONN_CLOSED)
        return;
    /* what is flushed below may hold acknowledgements of this round: commit them first;
     * if that failed, none of it may leave (persist.c) */
    if (broker_store_commit(b) < 0) {
        /* dropped unsent: conn_free releases the buffer */
    } else if (reason) {
        broker_send_disconnect(b, c, reason, NULL);
        if (c->ws)
            broker_ws_close(c, reason);
        conn_flush(b, c); /* best effort: the DISCONNECT and anything before it */
    } else {
        if (c->ws)
            broker_ws_close(c, reason);
        if (out_pending(c))
            conn_flush(b, c);
    }
    round_begin(b); /* the connection is freed at the end of the round */
    hd_loop_unwatch(b->loop, c->watch);
    c->watch = NULL;
    bool was_active = c->state == CONN_ACTIVE;
    c->state = CONN_CLOSED;
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (was_active)
        b->stats.clients_connected--;
    broker_connection_lost(b, c);
    if (c->tls)
        broker_tls_conn_free(c);
    if (c->ws && !broker_ws_pending(c))
        broker_ws_linger(b, c->fd); /* drains, then closes */
    else
        close(c->fd);
    c->fd = -1;
    c->close_next = b->close_list;
    b->close_list = c;
}

static void conn_free(struct broker_conn *c)
{
    for (uint32_t i = c->ref_head; i < c->n_refs; i++)
        broker_msg_unref(c->refs[i].msg);
    free(c->refs);
    free(c->in);
    mqtt_buf_free(&c->out);
    if (c->aliases) {
        for (uint32_t i = 0; i <= c->alias_max; i++)
            free(c->aliases[i]);
        free(c->aliases);
    }
    for (uint16_t i = 0; i < c->n_out_aliases; i++)
        free(c->out_aliases[i]);
    free(c->out_aliases);
    broker_msg_unref(c->will);
    free(c->username);
    free(c->cert_cn);
    broker_ws_free(c);
    free(c);
}

/* Dispatch one complete packet; returns -1 when the connection was closed. */
static int conn_packet(struct hd_broker *b, struct broker_conn *c, uint8_t type_flags, const uint8_t *body,
                       uint32_t len)
{
    uint8_t type = type_flags >> 4, flags = type_flags & 0x0f;
    int rc;
    c->last_rx_ns = b->now_ns; /* one clock read per round is precise enough for keepalive */
    if (c->state == CONN_WAIT_CONNECT) {
        if (type != MQTT_CONNECT || flags) {
            broker_conn_close(b, c, 0);
            return -1;
        }
        rc = broker_handle_connect(b, c, body, len);
    } else {
        switch (type) {
        case MQTT_PUBLISH: rc = broker_handle_publish(b, c, flags, body, len); break;
        case MQTT_PUBACK:
        case MQTT_PUBREC:
        case MQTT_PUBREL:
        case MQTT_PUBCOMP: rc = broker_handle_ack(b, c, type, flags, body, len); break;
        case MQTT_SUBSCRIBE: rc = broker_handle_subscribe(b, c, flags, body, len); break;
        case MQTT_UNSUBSCRIBE: rc = broker_handle_unsubscribe(b, c, flags, body, len); break;
        case MQTT_PINGREQ:
            if (flags || len) {
                rc = RC_MALFORMED;
                break;
            }
            if (c->state != CONN_CLOSED)
                mqtt_encode_empty(broker_conn_outbuf(b, c), MQTT_PINGRESP);
            rc = 0;
            break;
        case MQTT_DISCONNECT: rc = broker_handle_disconnect(b, c, flags, body, len); break;
        case MQTT_CONNECT: rc = RC_PROTOCOL_ERROR; break; /* a second CONNECT */
        default: rc = RC_PROTOCOL_ERROR; break;
        }
    }
    if (rc > 0) {
        broker_conn_close(b, c, (uint8_t)rc);
        return -1;
    }
    return c->state == CONN_CLOSED ? -1 : 0;
}

/* Parse complete packets from data; returns bytes consumed or -1 if closed. */
static ssize_t conn_parse(struct hd_broker *b, struct broker_conn *c, const uint8_t *data, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        uint8_t tf;
        uint32_t remaining, hlen;
        int r = mqtt_parse_fixed_header(data + pos, len - pos, &tf, &remaining, &hlen);
        if (r < 0) {
            broker_conn_close(b, c, RC_MALFORMED);
            return -1;
        }
        if (r == 0)
            break;
        if ((uint64_t)remaining + hlen > b->cfg.max_packet_size) {
            broker_conn_close(b, c, RC_PACKET_TOO_LARGE);
            return -1;
        }
        if (len - pos < hlen + remaining)
            break;
        if (conn_packet(b, c, tf, data + pos + hlen, remaining) < 0)
            return -1;
        pos += hlen + remaining;
    }
    return (ssize_t)pos;
}

static void conn_readable(struct hd_broker *b, struct broker_conn *c)
{
    for (int round = 0; round < 4; round++) {
        ssize_t n;
        if (c->tls) {
            n = broker_tls_read(c, b->read_buf, b->read_buf_size);
            if (n == -2) { /* handshake in progress */
                int r = broker_tls_accept(b, c);
                if (r < 0)
                    broker_conn_close(b, c, 0);
                if (r <= 0)
                    return;
                continue;
            }
            if (n == 0)
                return;
        } else {
            n = recv(c->fd, b->read_buf, b->read_buf_size, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        }
        if (n <= 0) {
            broker_conn_close(b, c, 0);
            return;
        }
        b->stats.bytes_received += (uint64_t)n;
        const uint8_t *data = b->read_buf;
        size_t len = (size_t)n;
        if (c->ws) { /* the MQTT bytes the frames carry, in place */
            ssize_t mqtt_len = broker_ws_input(b, c, b->read_buf, len);
            if (mqtt_len < 0)
                return;
            len = (size_t)mqtt_len;
        }
        if (c->in_len) {
            if (c->in_cap - c->in_len < len) {
                c->in_cap = c->in_len + (uint32_t)len;
                c->in = hd_xrealloc(c->in, c->in_cap);
            }
            memcpy(c->in + c->in_len, data, len);
            c->in_len += (uint32_t)len;
            data = c->in;
            len = c->in_len;
        }
        ssize_t used = conn_parse(b, c, data, len);
        if (used < 0)
            return;
        size_t left = len - (size_t)used;
        if (data == c->in) {
            memmove(c->in, c->in + used, left);
            c->in_len = (uint32_t)left;
            if (!left) {
                free(c->in);
                c->in = NULL;
                c->in_cap = 0;
            }
        } else if (left) {
            c->in = hd_xmalloc(left);
            c->in_cap = c->in_len = (uint32_t)left;
            memcpy(c->in, data + used, left);
            c->last_rx_ns = b->now_ns; /* the partial-packet deadline starts now */
        }
        if (c->ws && c->ws->peer_closed) { /* its close frame, after the MQTT bytes before it */
            broker_conn_close(b, c, 0);
            return;
        }
        if ((size_t)n < b->read_buf_size)
            return;
    }
    /* a TLS read drained OpenSSL's buffer; plain sockets are level-triggered */
}

/*
 * Per-address connection rate: a fixed table indexed by a hash of the address.
 * Two addresses sharing a slot reset each other's window, which can only let a
 * few more connections through, never refuse a well-behaved client for long.
 */
static bool client_rate_exceeded(struct hd_broker *b, const struct sockaddr_storage *ss, uint64_t now)
{
    uint8_t addr[16] = {0};
    if (ss->ss_family == AF_INET)
        memcpy(addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    else if (ss->ss_family == AF_INET6)
        memcpy(addr, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ addr[i]) * 16777619u;
    if (!b->rate_slots)
        b->rate_slots = hd_xcalloc(RATE_SLOTS, sizeof(*b->rate_slots));
    struct rate_slot *slot = &b->rate_slots[h % RATE_SLOTS];
    if (memcmp(slot->addr, addr, 16) != 0 || now - slot->window_ns >= BROKER_NS_PER_S) {
        memcpy(slot->addr, addr, 16);
        slot->window_ns = now;
        slot->count = 0;
    }
    return ++slot->count > b->cfg.client_connection_rate;
}

static void on_conn_ready(struct hd_loop *loop, int fd, uint32_t events, void *data);

static void listener_accept(struct hd_broker *b, struct broker_listener *l)
{
    for (;;) {
        struct sockaddr_storage ss = {0};
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        uint64_t now = hd_now_ns();
        if (b->cfg.connection_rate) {
            if (now - b->rate_window_ns >= BROKER_NS_PER_S) {
                b->rate_window_ns = now;
                b->rate_count = 0;
            }
            if (++b->rate_count > b->cfg.connection_rate) {
                close(fd);
                continue;
            }
        }
        if (b->cfg.client_connection_rate && client_rate_exceeded(b, &ss, now)) {
            close(fd);
            continue;
        }
        if (b->cfg.max_connections && b->stats.clients_connected >= b->cfg.max_connections) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct broker_conn *c = hd_xcalloc(1, sizeof(*c));
        c->fd = fd;
        c->broker = b;
        c->state = CONN_WAIT_CONNECT;
        c->created_ns = c->last_rx_ns = now;
        c->next = b->conns;
        if (b->conns)
            b->conns->prev = c;
        b->conns = c;
        c->watch = hd_loop_watch(b->loop, fd, EPOLLIN, on_conn_ready, c, NULL);
        if (c->watch == NULL) {
            broker_conn_close(b, c, 0);
            continue;
        }
        if (l->ws)
            broker_ws_accept(c, l->ws_path);
        if (l->tls && broker_tls_accept(b, c) < 0)
            broker_conn_close(b, c, 0);
    }
}

/* Keepalive (1.5x), CONNECT deadline, partial-packet deadline. */
static void conns_tick(struct hd_broker *b, uint64_t now)
{
    struct broker_conn *c = b->conns, *next;
    uint64_t packet_deadline = (uint64_t)b->cfg.connect_timeout_ms * 1000000ull;
    for (; c; c = next) {
        next = c->next;
        if (c->state == CONN_WAIT_CONNECT && now - c->created_ns > packet_deadline) {
            broker_conn_close(b, c, 0);
        } else if (c->state == CONN_ACTIVE && c->keepalive &&
                   now - c->last_rx_ns > (uint64_t)c->keepalive * 1500000000ull) {
            broker_conn_close(b, c, RC_KEEPALIVE_TIMEOUT);
        } else if (c->in_len && now - c->last_rx_ns > packet_deadline &&
                   (!c->keepalive || packet_deadline < (uint64_t)c->keepalive * 1500000000ull)) {
            broker_conn_close(b, c, RC_MALFORMED); /* slowloris: a packet that never completes */
        }
    }
}

static void broker_tick(struct hd_broker *b)
{
    uint64_t now = hd_now_ns();
    conns_tick(b, now);
    broker_sessions_tick(b, now);
    if (b->cfg.sys_interval && now - b->last_sys_ns >= (uint64_t)b->cfg.sys_interval * BROKER_NS_PER_S) {
        b->last_sys_ns = now;
        broker_sys_publish(b, now);
    }
}

static void round_finish(struct hd_broker *b)
{
    /* a failed commit withholds every reply of the round: the clients get no acknowledgement of
     * what is not stored and send it again when they reconnect */
    bool withhold = broker_store_commit(b) < 0;
    while (b->flush_list) {
        struct broker_conn *c = b->flush_list;
        b->flush_list = c->flush_next;
        c->in_flush_list = false;
        if (c->state != CONN_CLOSED && (withhold || conn_flush(b, c) < 0))
            broker_conn_close(b, c, 0);
    }
    broker_store_round_end(b);
    while (b->close_list) {
        struct broker_conn *c = b->close_list;
        b->close_list = c->close_next;
        conn_free(c);
    }
}

static void on_round_end(struct hd_loop *loop, void *data)
{
    struct hd_broker *b = data;
    b->round = NULL;
    round_finish(b);
}

/* Something gave this turn work: commit and flush at its end (once). */
static void round_begin(struct hd_broker *b)
{
    if (b->round || b->loop == NULL)
        return;
    b->round = hd_loop_defer(b->loop, on_round_end, b);
    b->now_ns = hd_now_ns();
}

static void on_conn_ready(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct broker_conn *c = data;
    struct hd_broker *b = c->broker;
    if (c->state == CONN_CLOSED)
        return;
    round_begin(b);
    if (events & EPOLLOUT) {
        if (c->tls && broker_tls_accept(b, c) < 0) { /* a handshake waiting to write */
            broker_conn_close(b, c, 0);
            return;
        }
        if (conn_flush(b, c) < 0) {
            broker_conn_close(b, c, 0);
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        conn_readable(b, c);
}

static void on_listener_ready(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    struct broker_listener *l = data;
    round_begin(l->broker);
    listener_accept(l->broker, l);
}

static void on_tick(struct hd_loop *loop, void *data)
{
    struct hd_broker *b = data;
    b->tick = hd_loop_timer(loop, 1.0, on_tick, b);
    round_begin(b);
    broker_tick(b);
}

int hd_broker_attach_held(struct hd_broker *b, struct hd_loop *loop, hd_error_t *err)
{
    if (b->loop)
        return hd_error_set(err, EBUSY, "broker: attached to a loop already");
    b->loop = loop;
    b->tick = hd_loop_timer(loop, 1.0, on_tick, b);
    round_begin(b); /* what hd_broker_new stored ($SYS, restored sessions) is committed in the first turn */
    return 0;
}

int hd_broker_serve(struct hd_broker *b, hd_error_t *err)
{
    for (size_t i = 0; i < b->n_listeners; i++) {
        struct broker_listener *l = &b->listeners[i];
        if (l->watch)
            continue; /* serving already */
        l->broker = b;
        l->watch = hd_loop_watch(b->loop, l->fd, EPOLLIN, on_listener_ready, l, err);
        if (l->watch == NULL)
            return hd_error_prefix(err, "broker");
    }
    return 0;
}

int hd_broker_attach(struct hd_broker *b, struct hd_loop *loop, hd_error_t *err)
{
    if (hd_broker_attach_held(b, loop, err) < 0)
        return -1;
    return hd_broker_serve(b, err);
}

int hd_broker_port(struct hd_broker *b, int n)
{
    for (size_t i = 0; i < b->n_listeners; i++)
        if (!b->listeners[i].tls && !b->listeners[i].ws && n-- == 0)
            return b->listeners[i].port;
    return -1;
}

void hd_broker_get_stats(struct hd_broker *b, struct hd_broker_stats *out)
{
    *out = b->stats;
    out->retained_count = b->retained_count;
}

static int listen_on(struct hd_broker *b, const char *spec, bool tls, hd_error_t *err)
{
    struct broker_listen_addr addr;
    if (!broker_listen_addr_parse(spec, &addr))
        return hd_error_set(err, 0, "listener %s: expected HOST:PORT, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH",
                            spec);
    cleanup_free char *copy = get_and_reset(&addr.host_port);
    cleanup_free char *ws_path = get_and_reset(&addr.path);
    if (tls && addr.ws)
        return hd_error_set(err, 0, "listener %s: a TLS listener takes HOST:PORT (wss:// goes in listen)", spec);
    tls = tls || addr.tls;
    char *colon = strrchr(copy, ':');
    *colon = '\0';
    char *host = copy;
    if (host[0] == '[') { /* [::1]:1883 */
        host++;
        char *end = strchr(host, ']');
        if (end)
            *end = '\0';
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(*host ? host : NULL, colon + 1, &hints, &ai);
    if (rc)
        return hd_error_set(err, 0, "listener %s: %s", spec, gai_strerror(rc));
    cleanup_close int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return hd_error_sys(err, "listener %s: socket", spec);
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        freeaddrinfo(ai);
        return hd_error_sys(err, "listener %s: bind", spec);
    }
    freeaddrinfo(ai);
    if (listen(fd, 1024) < 0)
        return hd_error_sys(err, "listener %s: listen", spec);
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_storage storage;
    } bound = {.storage = {0}};
    socklen_t sl = sizeof(bound);
    if (getsockname(fd, &bound.sa, &sl) < 0)
        return hd_error_sys(err, "listener %s: getsockname", spec);
    int port = ntohs(bound.sa.sa_family == AF_INET6 ? bound.in6.sin6_port : bound.in4.sin_port);
    int listen_fd = steal_fd(&fd);
    b->listeners[b->n_listeners++] =
        (struct broker_listener){listen_fd, tls, port, addr.ws, get_and_reset(&ws_path), NULL, NULL};
    return 0;
}

int hd_broker_new(const struct hd_broker_config *cfg, struct hd_broker **out, hd_error_t *err)
{
    struct hd_broker *b = hd_xcalloc(1, sizeof(*b));
    b->cfg = *cfg;
    b->cfg.listen = hd_strv_dup(cfg->listen);
    b->cfg.listen_tls = hd_strv_dup(cfg->listen_tls);
    b->cfg.tls_cert = cfg->tls_cert ? hd_xstrdup(cfg->tls_cert) : NULL;
    b->cfg.tls_key = cfg->tls_key ? hd_xstrdup(cfg->tls_key) : NULL;
    b->cfg.tls_ca = cfg->tls_ca ? hd_xstrdup(cfg->tls_ca) : NULL;
    b->cfg.state_dir = cfg->state_dir ? hd_xstrdup(cfg->state_dir) : NULL;
    b->cfg.password_file = cfg->password_file ? hd_xstrdup(cfg->password_file) : NULL;
    b->cfg.acl_file = cfg->acl_file ? hd_xstrdup(cfg->acl_file) : NULL;
    b->cfg.response_information = cfg->response_information ? hd_xstrdup(cfg->response_information) : NULL;
    if (!b->cfg.receive_maximum)
        b->cfg.receive_maximum = 65535; /* a zeroed config: the protocol's default */
    b->start_ns = hd_now_ns();
    b->read_buf_size = READ_BUF_SIZE;
    b->read_buf = hd_xmalloc(READ_BUF_SIZE);
    if (!b->cfg.listen || !b->cfg.listen[0])
        if (!b->cfg.listen_tls || !b->cfg.listen_tls[0])
            hd_strv_push(&b->cfg.listen, "127.0.0.1:1883");
    size_t nl = hd_strv_len(b->cfg.listen) + hd_strv_len(b->cfg.listen_tls);
    b->listeners = hd_xcalloc(nl ? nl : 1, sizeof(*b->listeners));

    if (broker_auth_load(b, err) < 0 || broker_acl_load(b, err) < 0)
        goto fail;
    bool any_tls = b->cfg.listen_tls && b->cfg.listen_tls[0];
    for (char **l = b->cfg.listen; l && *l; l++)
        any_tls = any_tls || strncmp(*l, "wss://", 6) == 0;
    if (any_tls && broker_tls_init(b, err) < 0)
        goto fail;
    if (b->cfg.state_dir && broker_store_open(b, err) < 0)
        goto fail;
    for (char **l = b->cfg.listen; l && *l; l++)
        if (listen_on(b, *l, false, err) < 0)
            goto fail;
    for (char **l = b->cfg.listen_tls; l && *l; l++)
        if (listen_on(b, *l, true, err) < 0)
            goto fail;
    if (b->cfg.sys_interval)
        broker_sys_publish(b, b->start_ns);
    *out = b;
    return 0;
fail:
    hd_broker_free(b);
    return -1;
}

void hd_broker_free(struct hd_broker *b)
{
    if (!b)
        return;
    b->shutting_down = true;
    while (b->conns)
        broker_conn_close(b, b->conns, RC_SERVER_SHUTTING_DOWN);
    round_finish(b);
    broker_ws_linger_free_all(b);
    if (b->round)
        hd_loop_cancel_defer(b->loop, b->round);
    if (b->tick)
        hd_loop_cancel(b->loop, b->tick);
    broker_sessions_free(b);
    broker_delivery_pool_free(b);
    broker_tree_free(&b->sub_root);
    broker_tree_free(&b->retained_root);
    broker_store_close(b);
    broker_auth_free(b);
    broker_acl_free(b);
    broker_tls_free(b);
    for (size_t i = 0; i < b->n_listeners; i++) {
        if (b->listeners[i].watch)
            hd_loop_unwatch(b->loop, b->listeners[i].watch);
        close(b->listeners[i].fd);
        free(b->listeners[i].ws_path);
    }
    free(b->listeners);
    free(b->read_buf);
    free(b->targets);
    free(b->rate_slots);
    hd_broker_config_free(&b->cfg);
    free(b);
}
