/*
 * ws.h - MQTT over WebSockets (MQTT 5.0 §6, RFC 6455), the server's side:
 * the HTTP/1.1 Upgrade handshake and the frame codec. Pure functions and a
 * byte-at-a-time state machine, no I/O: the broker (src/broker/websocket.c)
 * feeds it what it read and writes what it encodes, so the same connection
 * code serves TCP, TLS, ws and wss.
 *
 * Why our own and not libwebsockets: lws brings its own event loop, its own
 * buffers and TLS; ours is ~500 lines next to the MQTT codec, fuzzed the same
 * way (fuzz/fuzz_ws.c) and plugged under the broker's read and write paths.
 *
 * The decoder streams: data-frame payloads are unmasked and handed on as they
 * arrive (a frame never has to be buffered whole), so the MQTT layer's own
 * limits (max_packet_size, the partial-packet deadline) bound memory as they
 * do on TCP. Only a control frame's payload (at most 125 bytes) is kept.
 */
#ifndef HEDGE_MQTT_WS_H
#define HEDGE_MQTT_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mqtt/packet.h"

/* RFC 6455 §7.4.1 status codes the server sends. */
enum mqtt_ws_close_code {
    MQTT_WS_CLOSE_NORMAL = 1000,
    MQTT_WS_CLOSE_GOING_AWAY = 1001,
    MQTT_WS_CLOSE_PROTOCOL_ERROR = 1002,
    MQTT_WS_CLOSE_UNSUPPORTED_DATA = 1003, /* a text frame: MQTT travels in binary frames only [MQTT-6.0.0-1] */
    MQTT_WS_CLOSE_INVALID_PAYLOAD = 1007,  /* a close reason that is not UTF-8 */
    MQTT_WS_CLOSE_TOO_BIG = 1009,
};

/* ---- the opening handshake (RFC 6455 §4.2) ---- */

#define MQTT_WS_REQUEST_MAX 8192 /* a longer request is refused with 400 */

struct mqtt_ws_handshake {
    char key[25];            /* Sec-WebSocket-Key: base64 of 16 bytes, 24 characters */
    const char *subprotocol; /* "mqtt" or "mqttv3.1", as the client offered it */
};

/*
 * Parse an HTTP request held in req[0..len) (it need not be NUL-terminated).
 * path: the path the listener serves ("/mqtt"), or NULL for any path.
 * Returns the request's length in bytes (headers and the blank line) when it
 * is a valid WebSocket upgrade offering the subprotocol "mqtt" (or the old
 * "mqttv3.1"); 0 when the blank line has not arrived yet; or minus the HTTP
 * status to refuse it with: -400 (malformed, not an upgrade, no "mqtt"),
 * -404 (another path), -426 (a WebSocket version other than 13).
 */
int mqtt_ws_parse_request(const char *req, size_t len, const char *path, struct mqtt_ws_handshake *hs);
/* Sec-WebSocket-Accept for key: base64(SHA-1(key + the RFC's GUID)), NUL-terminated. */
void mqtt_ws_accept_key(const char *key, char out[29]);
/* Append the 101 Switching Protocols response for hs. */
void mqtt_ws_encode_accept(struct mqtt_buf *b, const struct mqtt_ws_handshake *hs);
/* Append a refusal with status (400, 404 or 426; a version refusal names version 13). */
void mqtt_ws_encode_refusal(struct mqtt_buf *b, int status);

/* ---- frames (RFC 6455 §5) ---- */

enum mqtt_ws_opcode {
    MQTT_WS_OP_CONTINUATION = 0x0,
    MQTT_WS_OP_TEXT = 0x1,
    MQTT_WS_OP_BINARY = 0x2,
    MQTT_WS_OP_CLOSE = 0x8,
    MQTT_WS_OP_PING = 0x9,
    MQTT_WS_OP_PONG = 0xA,
};

enum mqtt_ws_event {
    MQTT_WS_DATA,  /* all input consumed; data payload bytes (if any) were gathered */
    MQTT_WS_PING,  /* a ping: answer with a pong carrying control[0..control_len) */
    MQTT_WS_PONG,  /* a pong (ignored by the broker; unsolicited ones are allowed) */
    MQTT_WS_CLOSE, /* the peer's close: close_code holds its code (1005 = none given) */
    MQTT_WS_ERROR, /* a violation: close with close_code and drop the connection */
};

struct mqtt_ws_decoder {
    uint64_t max_message; /* largest frame and largest (reassembled) message, in bytes */
    /* state between calls */
    uint8_t header[14];
    uint8_t header_len;
    uint8_t opcode; /* of the frame being read */
    bool fin;
    bool in_message; /* a fragmented data message has started and not ended */
    uint8_t mask[4];
    uint64_t remaining;   /* payload bytes of the current frame still to come */
    uint64_t payload_pos; /* payload bytes of the current frame read so far (the mask index) */
    uint64_t message_len; /* data bytes of the current message so far */
    /* the last control frame */
    uint8_t control[125];
    uint8_t control_len;
    uint16_t close_code;
};

/* Start a decoder for a client's frames (which must be masked). */
void mqtt_ws_decoder_init(struct mqtt_ws_decoder *d, uint64_t max_message);
/*
 * Decode buf[*pos..len), in place: data-frame payloads are unmasked and moved
 * down to buf[*out..] (so *out never passes *pos), giving the MQTT byte stream
 * at buf[0..*out) when the caller starts both at 0. Returns at the end of the
 * input (MQTT_WS_DATA) or after each complete control frame, with *pos just
 * past it; call again to go on. After MQTT_WS_CLOSE or MQTT_WS_ERROR the
 * decoder must not be called again.
 */
enum mqtt_ws_event mqtt_ws_decode(struct mqtt_ws_decoder *d, uint8_t *buf, size_t len, size_t *pos, size_t *out);

/* The header of an unmasked frame with FIN set (what a server sends): returns its length (2, 4 or 10). */
size_t mqtt_ws_frame_header(uint8_t out[10], uint8_t opcode, uint64_t payload_len);
/* Append a whole unmasked frame. */
void mqtt_ws_encode_frame(struct mqtt_buf *b, uint8_t opcode, const void *payload, size_t len);
/* Append a close frame with code (and no reason). */
void mqtt_ws_encode_close(struct mqtt_buf *b, uint16_t code);

#endif
