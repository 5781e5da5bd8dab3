/*
 * ws.c - MQTT over WebSockets, the server's side (see ws.h): the opening
 * handshake and the RFC 6455 frame codec.
 *
 * Strictness, on purpose (the input comes from anyone on the network): a
 * client frame must be masked, its length minimally encoded, its RSV bits
 * clear; a control frame is short and unfragmented; a continuation needs a
 * started message and a new data frame needs the previous message finished;
 * a close frame's code is a registered one and its reason UTF-8. A text frame
 * is refused with 1003, since MQTT travels in binary frames only
 * [MQTT-6.0.0-1]. SHA-1 comes from libmd (which hedge links already), so a
 * plain ws:// listener does not load OpenSSL.
 */
#include "mqtt/ws.h"

#include <sha1.h>
#include <string.h>
#include <strings.h>

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ---- the handshake ---- */

static bool is_base64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static void base64_encode(const uint8_t *in, size_t len, char *out)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? alphabet[v & 63] : '=';
    }
    out[o] = '\0';
}

void mqtt_ws_accept_key(const char *key, char out[29])
{
    SHA1_CTX ctx;
    uint8_t digest[SHA1_DIGEST_LENGTH];
    SHA1Init(&ctx);
    SHA1Update(&ctx, (const uint8_t *)key, strlen(key));
    SHA1Update(&ctx, (const uint8_t *)ws_guid, sizeof(ws_guid) - 1);
    SHA1Final(digest, &ctx);
    base64_encode(digest, sizeof(digest), out);
}

/* Is token (case-insensitive when fold) one of the comma-separated items of value[0..len)? */
static bool list_has(const char *value, size_t len, const char *token, bool fold)
{
    size_t tlen = strlen(token), i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == tlen &&
            (fold ? strncasecmp(value + start, token, tlen) == 0 : memcmp(value + start, token, tlen) == 0))
            return true;
    }
    return false;
}

static bool header_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

/* A Sec-WebSocket-Key: the base64 form of 16 bytes (22 characters and "=="). */
static bool key_valid(const char *v, size_t len)
{
    if (len != 24 || v[22] != '=' || v[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!is_base64_char(v[i]))
            return false;
    /* the last character carries 2 bits: the other 4 must be zero */
    return strchr("AQgw", v[21]) != NULL;
}

int mqtt_ws_parse_request(const char *req, size_t len, const char *path, struct mqtt_ws_handshake *hs)
{
    memset(hs, 0, sizeof(*hs));
    size_t scan = len < MQTT_WS_REQUEST_MAX ? len : MQTT_WS_REQUEST_MAX;
    const char *end = memmem(req, scan, "\r\n\r\n", 4);
    if (end == NULL)
        return len >= MQTT_WS_REQUEST_MAX ? -400 : 0;
    size_t total = (size_t)(end - req) + 4;
    if (memchr(req, '\0', total))
        return -400;

    /* the request line: GET SP path SP HTTP/1.1 */
    const char *line_end = memmem(req, total, "\r\n", 2);
    size_t line_len = (size_t)(line_end - req);
    if (line_len < 4 || memcmp(req, "GET ", 4) != 0)
        return -400;
    const char *target = req + 4;
    const char *sp = memchr(target, ' ', line_len - 4);
    if (sp == NULL || sp == target || target[0] != '/')
        return -400;
    size_t target_len = (size_t)(sp - target);
    if ((size_t)(line_end - sp) != 9 || memcmp(sp, " HTTP/1.1", 9) != 0)
        return -400;
    size_t path_len = target_len;
    const char *query = memchr(target, '?', target_len);
    if (query)
        path_len = (size_t)(query - target);
    for (size_t i = 0; i < target_len; i++)
        if ((unsigned char)target[i] <= ' ' || (unsigned char)target[i] >= 0x7f)
            return -400;

    /* the headers */
    bool host = false, upgrade = false, connection = false, version_seen = false, version_13 = false;
    const char *p = line_end + 2;
    while (p < end + 2) {
        const char *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
        size_t n = (size_t)(eol - p);
        if (p[0] == ' ' || p[0] == '\t') /* obsolete line folding */
            return -400;
        const char *colon = memchr(p, ':', n);
        if (colon == NULL || colon == p)
            return -400;
        size_t name_len = (size_t)(colon - p);
        for (size_t i = 0; i < name_len; i++)
            if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] >= 0x7f)
                return -400;
        const char *v = colon + 1, *v_end = eol;
        while (v < v_end && (*v == ' ' || *v == '\t'))
            v++;
        while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
            v_end--;
        size_t vlen = (size_t)(v_end - v);
        if (header_is(p, name_len, "host")) {
            if (host)
                return -400;
            host = true;
        } else if (header_is(p, name_len, "upgrade")) {
            upgrade = upgrade || list_has(v, vlen, "websocket", true);
        } else if (header_is(p, name_len, "connection")) {
            connection = connection || list_has(v, vlen, "upgrade", true);
        } else if (header_is(p, name_len, "sec-websocket-key")) {
            if (hs->key[0] || !key_valid(v, vlen))
                return -400;
            memcpy(hs->key, v, 24);
        } else if (header_is(p, name_len, "sec-websocket-version")) {
            if (version_seen)
                return -400;
            version_seen = true;
            version_13 = vlen == 2 && memcmp(v, "13", 2) == 0;
        } else if (header_is(p, name_len, "sec-websocket-protocol")) {
            if (list_has(v, vlen, "mqtt", false))
                hs->subprotocol = "mqtt";
            else if (!hs->subprotocol && list_has(v, vlen, "mqttv3.1", false))
                hs->subprotocol = "mqttv3.1";
        }
        p = eol + 2;
    }
    if (!host || !upgrade || !connection || !hs->key[0] || !version_seen)
        return -400;
    if (!version_13)
        return -426;
    if (path && (path_len != strlen(path) || memcmp(target, path, path_len) != 0))
        return -404;
    if (!hs->subprotocol) /* the client MUST offer "mqtt" [MQTT-6.0.0-3] */
        return -400;
    return (int)total;
}

void mqtt_ws_encode_accept(struct mqtt_buf *b, const struct mqtt_ws_handshake *hs)
{
    char accept[29];
    mqtt_ws_accept_key(hs->key, accept);
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: ";
    mqtt_put_bytes(b, head, sizeof(head) - 1);
    mqtt_put_bytes(b, accept, strlen(accept));
    mqtt_put_bytes(b, "\r\nSec-WebSocket-Protocol: ", 26);
    mqtt_put_bytes(b, hs->subprotocol, strlen(hs->subprotocol));
    mqtt_put_bytes(b, "\r\n\r\n", 4);
}

void mqtt_ws_encode_refusal(struct mqtt_buf *b, int status)
{
    const char *text = status == 404 ? "HTTP/1.1 404 Not Found\r\n"
        : status == 426              ? "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                                     : "HTTP/1.1 400 Bad Request\r\n";
    mqtt_put_bytes(b, text, strlen(text));
    static const char tail[] = "Connection: close\r\nContent-Length: 0\r\n\r\n";
    mqtt_put_bytes(b, tail, sizeof(tail) - 1);
}

/* ---- frames ---- */

void mqtt_ws_decoder_init(struct mqtt_ws_decoder *d, uint64_t max_message)
{
    memset(d, 0, sizeof(*d));
    d->max_message = max_message;
}

static bool is_control(uint8_t opcode)
{
    return opcode & 0x8;
}

/* Bytes of the header being read, as far as its first two bytes tell. */
static size_t header_size(const struct mqtt_ws_decoder *d)
{
    if (d->header_len < 2)
        return 2;
    uint8_t len7 = d->header[1] & 0x7f;
    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((d->header[1] & 0x80) ? 4 : 0);
}

static enum mqtt_ws_event fail(struct mqtt_ws_decoder *d, uint16_t code)
{
    d->close_code = code;
    return MQTT_WS_ERROR;
}

/* The first two bytes: what can be refused before the rest arrives. 0 = fine, else a close code. */
static uint16_t check_start(const struct mqtt_ws_decoder *d)
{
    uint8_t b0 = d->header[0], b1 = d->header[1], opcode = b0 & 0x0f;
    if (b0 & 0x70)
        return MQTT_WS_CLOSE_PROTOCOL_ERROR; /* RSV1-3: no extension was negotiated */
    if (!(b1 & 0x80))
        return MQTT_WS_CLOSE_PROTOCOL_ERROR; /* a client's frames are masked (RFC 6455 §5.1) */
    switch (opcode) {
    case MQTT_WS_OP_CONTINUATION: return d->in_message ? 0 : MQTT_WS_CLOSE_PROTOCOL_ERROR;
    case MQTT_WS_OP_TEXT: return d->in_message ? MQTT_WS_CLOSE_PROTOCOL_ERROR : MQTT_WS_CLOSE_UNSUPPORTED_DATA;
    case MQTT_WS_OP_BINARY: return d->in_message ? MQTT_WS_CLOSE_PROTOCOL_ERROR : 0;
    case MQTT_WS_OP_CLOSE:
    case MQTT_WS_OP_PING:
    case MQTT_WS_OP_PONG:
        /* control frames: short and never fragmented (§5.5) */
        return (b0 & 0x80) && (b1 & 0x7f) <= 125 ? 0 : MQTT_WS_CLOSE_PROTOCOL_ERROR;
    default: return MQTT_WS_CLOSE_PROTOCOL_ERROR;
    }
}

/* The whole header is in: take the length and mask. 0 = fine, else a close code. */
static uint16_t frame_begin(struct mqtt_ws_decoder *d)
{
    uint8_t len7 = d->header[1] & 0x7f;
    uint64_t len = len7;
    size_t at = 2;
    if (len7 == 126) {
        len = (uint64_t)d->header[2] << 8 | d->header[3];
        at = 4;
        if (len < 126)
            return MQTT_WS_CLOSE_PROTOCOL_ERROR; /* not the minimal encoding (§5.2) */
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | d->header[2 + i];
        at = 10;
        if (len >> 63 || len <= 0xffff)
            return MQTT_WS_CLOSE_PROTOCOL_ERROR;
    }
    memcpy(d->mask, d->header + at, 4);
    d->opcode = d->header[0] & 0x0f;
    d->fin = d->header[0] & 0x80;
    d->remaining = len;
    d->payload_pos = 0;
    d->control_len = 0;
    if (!is_control(d->opcode)) {
        uint64_t so_far = d->opcode == MQTT_WS_OP_CONTINUATION ? d->message_len : 0;
        if (len > d->max_message || so_far + len > d->max_message)
            return MQTT_WS_CLOSE_TOO_BIG;
        d->message_len = so_far + len;
        d->in_message = !d->fin;
    }
    return 0;
}

/* Codes a peer may send in a close frame (RFC 6455 §7.4, the IANA registry, 3000-4999 for others). */
static bool close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/* A control frame is complete. */
static enum mqtt_ws_event control_done(struct mqtt_ws_decoder *d)
{
    if (d->opcode == MQTT_WS_OP_PING)
        return MQTT_WS_PING;
    if (d->opcode == MQTT_WS_OP_PONG)
        return MQTT_WS_PONG;
    if (d->control_len == 0) {
        d->close_code = 1005; /* no status code present */
        return MQTT_WS_CLOSE;
    }
    if (d->control_len == 1)
        return fail(d, MQTT_WS_CLOSE_PROTOCOL_ERROR);
    uint16_t code = (uint16_t)(d->control[0] << 8 | d->control[1]);
    if (!close_code_valid(code))
        return fail(d, MQTT_WS_CLOSE_PROTOCOL_ERROR);
    if (!mqtt_utf8_valid(d->control + 2, d->control_len - 2u))
        return fail(d, MQTT_WS_CLOSE_INVALID_PAYLOAD);
    d->close_code = code;
    return MQTT_WS_CLOSE;
}

enum mqtt_ws_event mqtt_ws_decode(struct mqtt_ws_decoder *d, uint8_t *buf, size_t len, size_t *pos, size_t *out)
{
    size_t p = *pos, o = *out;
    enum mqtt_ws_event ev = MQTT_WS_DATA;
    while (p < len) {
        if (d->header_len < header_size(d)) {
            d->header[d->header_len++] = buf[p++];
            if (d->header_len == 2) {
                uint16_t code = check_start(d);
                if (code) {
                    ev = fail(d, code);
                    break;
                }
            }
            if (d->header_len < header_size(d))
                continue;
            uint16_t code = frame_begin(d);
            if (code) {
                ev = fail(d, code);
                break;
            }
        }
        /* the payload (possibly empty) */
        size_t n = len - p < d->remaining ? len - p : (size_t)d->remaining;
        if (is_control(d->opcode)) {
            for (size_t i = 0; i < n; i++)
                d->control[d->control_len++] = buf[p + i] ^ d->mask[(d->payload_pos + i) & 3];
        } else {
            for (size_t i = 0; i < n; i++) /* o <= p: each byte is read before anything overwrites it */
                buf[o + i] = buf[p + i] ^ d->mask[(d->payload_pos + i) & 3];
            o += n;
        }
        p += n;
        d->payload_pos += n;
        d->remaining -= n;
        if (d->remaining)
            break; /* the input ended inside the payload */
        d->header_len = 0;
        if (is_control(d->opcode)) {
            ev = control_done(d);
            break;
        }
    }
    *pos = p;
    *out = o;
    return ev;
}

size_t mqtt_ws_frame_header(uint8_t out[10], uint8_t opcode, uint64_t payload_len)
{
    out[0] = (uint8_t)(0x80 | opcode);
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

void mqtt_ws_encode_frame(struct mqtt_buf *b, uint8_t opcode, const void *payload, size_t len)
{
    uint8_t head[10];
    size_t hlen = mqtt_ws_frame_header(head, opcode, len);
    mqtt_buf_reserve(b, hlen + len);
    mqtt_put_bytes(b, head, hlen);
    if (len)
        mqtt_put_bytes(b, payload, len);
}

void mqtt_ws_encode_close(struct mqtt_buf *b, uint16_t code)
{
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    mqtt_ws_encode_frame(b, MQTT_WS_OP_CLOSE, payload, sizeof(payload));
}
