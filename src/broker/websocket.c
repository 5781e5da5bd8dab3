/*
 * websocket.c - MQTT over WebSockets as one more transport under the broker's
 * connection code (ws:// and wss:// listeners; MQTT 5.0 §6).
 *
 * A WebSocket connection is an ordinary struct broker_conn with c->ws set:
 * the same accept path (rate limits, max_connections), the same TLS for
 * wss (tls.c), the same CONNECT deadline (it covers the handshake too), and
 * the same packet parser, auth, ACLs and limits. This file only sits between
 * the socket and that code:
 *   - in: broker_ws_input reads the HTTP Upgrade request, answers it, then
 *     turns frames into the MQTT byte stream in place in the read buffer
 *     (mqtt/ws.c unmasks and gathers); the broker parses that stream as it
 *     would a TCP stream, so MQTT packets may be split or joined by frames
 *     arbitrarily [MQTT-6.0.0-2]. Pings are answered, pongs ignored.
 *   - out: what handlers wrote to c->out leaves as one binary frame per
 *     flush (broker_ws_frame_output, called by conn_flush), so a round's
 *     packets still go out in one write.
 *   - close: a peer's close frame is echoed and the connection dropped like
 *     a TCP connection that ended (the will is published unless an MQTT
 *     DISCONNECT came first); a framing violation closes with 1002 (1003 for
 *     a text frame, 1009 past the size limit); a close by the broker sends
 *     its MQTT DISCONNECT (5.0) first, then a close frame. The socket then
 *     lingers (RFC 6455 §7.1.1): write side shut down, input read and
 *     discarded until the peer closes or WS_LINGER_SECONDS pass, so input
 *     still in flight (the rest of an oversized frame) cannot make the
 *     kernel reset the connection ahead of the close frame.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/internal.h"
#include "base/util.h"

#define PONG_BACKLOG_LIMIT (1u << 20) /* a peer this far behind reading gets no more pongs */
#define WS_LINGER_SECONDS 1.0         /* how long a closed socket is drained at most */

struct broker_ws_linger {
    struct hd_broker *b;
    int fd;
    struct hd_watch *watch;
    struct hd_timer *timer;
    struct broker_ws_linger *prev, *next;
};

bool broker_listen_addr_parse(const char *spec, struct broker_listen_addr *out)
{
    *out = (struct broker_listen_addr){0};
    const char *rest = spec;
    if (strncmp(spec, "ws://", 5) == 0) {
        out->ws = true;
        rest = spec + 5;
    } else if (strncmp(spec, "wss://", 6) == 0) {
        out->ws = out->tls = true;
        rest = spec + 6;
    }
    const char *slash = out->ws ? strchr(rest, '/') : NULL;
    size_t hp_len = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *colon = memrchr(rest, ':', hp_len);
    if (colon == NULL || colon + 1 == rest + hp_len || (size_t)(rest + hp_len - colon - 1) > 5)
        return false;
    for (const char *p = colon + 1; p < rest + hp_len; p++)
        if (*p < '0' || *p > '9')
            return false;
    if (atoi(colon + 1) > 65535)
        return false;
    if (slash) {
        for (const char *p = slash; *p; p++)
            if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '?' || *p == '#')
                return false;
        out->path = hd_xstrdup(slash);
    }
    out->host_port = hd_xasprintf("%.*s", (int)hp_len, rest);
    return true;
}

void broker_listen_addr_free(struct broker_listen_addr *a)
{
    free(a->host_port);
    free(a->path);
    *a = (struct broker_listen_addr){0};
}

void broker_ws_accept(struct broker_conn *c, const char *path)
{
    c->ws = hd_xcalloc(1, sizeof(*c->ws));
    c->ws->path = path;
    uint32_t limit =
        c->broker->cfg.websocket_max_message ? c->broker->cfg.websocket_max_message : c->broker->cfg.max_packet_size;
    mqtt_ws_decoder_init(&c->ws->decoder, limit);
}

size_t broker_ws_pending(const struct broker_conn *c)
{
    return c->ws ? c->ws->out.len - c->ws->out_sent : 0;
}

void broker_ws_frame_output(struct broker_conn *c)
{
    struct broker_ws *ws = c->ws;
    if (c->out_sent >= c->out.len)
        return;
    /* no payloads by reference on these connections (broker_send_publish): c->out holds it all */
    mqtt_ws_encode_frame(&ws->out, MQTT_WS_OP_BINARY, c->out.data + c->out_sent, c->out.len - c->out_sent);
    c->out.len = c->out_sent = 0;
    if (c->out.cap > 64 * 1024)
        mqtt_buf_free(&c->out);
}

/* Queue a control frame after whatever MQTT bytes are already waiting. */
static void ws_queue_control(struct hd_broker *b, struct broker_conn *c, uint8_t opcode, const void *payload,
                             size_t len)
{
    broker_conn_outbuf(b, c); /* puts the connection on this round's flush list */
    broker_ws_frame_output(c);
    mqtt_ws_encode_frame(&c->ws->out, opcode, payload, len);
}

void broker_ws_close(struct broker_conn *c, uint8_t mqtt_reason)
{
    struct broker_ws *ws = c->ws;
    if (!ws->upgraded || ws->close_sent)
        return;
    uint16_t code = ws->close_code;
    if (code == 0)
        code = mqtt_reason == RC_SERVER_SHUTTING_DOWN ? MQTT_WS_CLOSE_GOING_AWAY : MQTT_WS_CLOSE_NORMAL;
    broker_ws_frame_output(c);
    mqtt_ws_encode_close(&ws->out, code);
    ws->close_sent = true;
}

/* The handshake: returns where frames start in data, or -1 (refused, or not complete yet: *closed says). */
static ssize_t ws_handshake(struct hd_broker *b, struct broker_conn *c, const uint8_t *data, size_t len, bool *closed)
{
    struct broker_ws *ws = c->ws;
    size_t take = MQTT_WS_REQUEST_MAX - ws->request_len;
    if (take > len)
        take = len;
    ws->request = hd_xrealloc(ws->request, ws->request_len + take);
    memcpy(ws->request + ws->request_len, data, take);
    ws->request_len += take;
    struct mqtt_ws_handshake hs;
    int r = mqtt_ws_parse_request(ws->request, ws->request_len, ws->path, &hs);
    if (r == 0) {
        *closed = false;
        return -1;
    }
    *closed = r < 0;
    broker_conn_outbuf(b, c);
    if (r < 0) {
        mqtt_ws_encode_refusal(&ws->out, -r);
        broker_conn_close(b, c, 0);
        return -1;
    }
    mqtt_ws_encode_accept(&ws->out, &hs);
    ws->upgraded = true;
    /* the request ended in this read (earlier reads did not complete it): frames follow it here */
    size_t request_in_this_read = take - (ws->request_len - (size_t)r);
    free(ws->request);
    ws->request = NULL;
    ws->request_len = 0;
    return (ssize_t)request_in_this_read;
}

ssize_t broker_ws_input(struct hd_broker *b, struct broker_conn *c, uint8_t *data, size_t len)
{
    struct broker_ws *ws = c->ws;
    size_t pos = 0, out = 0;
    if (!ws->upgraded) {
        bool closed;
        ssize_t start = ws_handshake(b, c, data, len, &closed);
        if (start < 0)
            return closed ? -1 : 0;
        pos = (size_t)start;
    }
    while (pos < len) {
        switch (mqtt_ws_decode(&ws->decoder, data, len, &pos, &out)) {
        case MQTT_WS_DATA: break;
        case MQTT_WS_PING:
            if (broker_ws_pending(c) < PONG_BACKLOG_LIMIT)
                ws_queue_control(b, c, MQTT_WS_OP_PONG, ws->decoder.control, ws->decoder.control_len);
            break;
        case MQTT_WS_PONG: break;
        case MQTT_WS_CLOSE:
            /* echo the peer's code (RFC 6455 §5.5.1) after the MQTT bytes before it are handled */
            ws->close_code = ws->decoder.close_code == 1005 ? MQTT_WS_CLOSE_NORMAL : ws->decoder.close_code;
            ws->peer_closed = true;
            return (ssize_t)out;
        case MQTT_WS_ERROR:
            ws->close_code = ws->decoder.close_code;
            broker_conn_close(b, c, 0);
            return -1;
        }
    }
    return (ssize_t)out;
}

void broker_ws_free(struct broker_conn *c)
{
    if (!c->ws)
        return;
    free(c->ws->request);
    mqtt_buf_free(&c->ws->out);
    free(c->ws);
    c->ws = NULL;
}

/* Stop watching and close (the caller unlinks and frees). */
static void linger_close(struct hd_broker *b, struct broker_ws_linger *l, bool timer_fired)
{
    hd_loop_unwatch(b->loop, l->watch);
    if (!timer_fired)
        hd_loop_cancel(b->loop, l->timer);
    close(l->fd);
}

static void linger_end(struct broker_ws_linger *l, bool timer_fired)
{
    struct hd_broker *b = l->b;
    linger_close(b, l, timer_fired);
    if (l->prev)
        l->prev->next = l->next;
    else
        b->ws_lingering = l->next;
    if (l->next)
        l->next->prev = l->prev;
    free(l);
}

static void on_linger_readable(struct hd_loop *loop, int fd, uint32_t events, void *data)
{
    (void)loop;
    (void)events;
    struct broker_ws_linger *l = data;
    struct hd_broker *b = l->b;
    for (int round = 0; round < 4; round++) {
        ssize_t n = recv(fd, b->read_buf, b->read_buf_size, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) { /* the peer closed too (or is gone) */
            linger_end(l, false);
            return;
        }
    }
}

static void on_linger_timeout(struct hd_loop *loop, void *data)
{
    (void)loop;
    linger_end(data, true);
}

void broker_ws_linger(struct hd_broker *b, int fd)
{
    if (b->loop == NULL || b->shutting_down || shutdown(fd, SHUT_WR) < 0) {
        close(fd);
        return;
    }
    struct broker_ws_linger *l = hd_xcalloc(1, sizeof(*l));
    l->b = b;
    l->fd = fd;
    hd_error_t err = NULL;
    l->watch = hd_loop_watch(b->loop, fd, EPOLLIN, on_linger_readable, l, &err);
    if (l->watch == NULL) {
        hd_error_free(&err);
        close(fd);
        free(l);
        return;
    }
    l->timer = hd_loop_timer(b->loop, WS_LINGER_SECONDS, on_linger_timeout, l);
    l->next = b->ws_lingering;
    if (l->next)
        l->next->prev = l;
    b->ws_lingering = l;
}

void broker_ws_linger_free_all(struct hd_broker *b)
{
    struct broker_ws_linger *l = b->ws_lingering;
    b->ws_lingering = NULL;
    while (l) {
        struct broker_ws_linger *next = l->next;
        linger_close(b, l, false);
        free(l);
        l = next;
    }
}
