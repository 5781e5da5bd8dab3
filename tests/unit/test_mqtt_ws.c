/*
 * test_mqtt_ws.c - src/mqtt/ws.c: the opening handshake (RFC 6455 §4.2 and
 * its example key), refusals with their HTTP status, and the frame decoder
 * as a table: client frames in (masked as a client masks them), the MQTT
 * bytes and the control events out, each violation with its close code.
 */
#include <string.h>

#include "check.h"
#include "mqtt/ws.h"

/* ---- the handshake ---- */

#define REQUEST_HEAD "GET /mqtt HTTP/1.1\r\nHost: node\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
#define KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define V13 "Sec-WebSocket-Version: 13\r\n"
#define PROTO "Sec-WebSocket-Protocol: mqtt\r\n"

static const struct {
    const char *request, *path;
    int result; /* > 0: accepted (the request's length); < 0: minus the status */
    const char *subprotocol;
} handshakes[] = {
    {REQUEST_HEAD KEY V13 PROTO "\r\n", "/mqtt", 1, "mqtt"},
    {REQUEST_HEAD KEY V13 "Sec-WebSocket-Protocol: mqttv3.1\r\n\r\n", "/mqtt", 1, "mqttv3.1"},
    {REQUEST_HEAD KEY V13 "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n", "/mqtt", 1, "mqtt"},
    {REQUEST_HEAD KEY V13 "sec-websocket-protocol: chat\r\nSec-WebSocket-Protocol:mqtt \r\n\r\n", "/mqtt", 1, "mqtt"},
    {"GET /mqtt?token=1 HTTP/1.1\r\nHOST: n\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n" KEY V13 PROTO
     "\r\n",
     "/mqtt", 1, "mqtt"},
    {"GET /any HTTP/1.1\r\nHost: n\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" KEY V13 PROTO "\r\n", NULL, 1,
     "mqtt"},
    {REQUEST_HEAD KEY V13 PROTO, "/mqtt", 0, NULL}, /* the blank line has not come yet */
    {REQUEST_HEAD KEY V13 PROTO "\r\n", "/ws", -404, NULL},
    {REQUEST_HEAD KEY "Sec-WebSocket-Version: 8\r\n" PROTO "\r\n", "/mqtt", -426, NULL},
    {REQUEST_HEAD KEY V13 "\r\n", "/mqtt", -400, NULL},                                     /* no subprotocol */
    {REQUEST_HEAD KEY V13 "Sec-WebSocket-Protocol: MQTT\r\n\r\n", "/mqtt", -400, NULL},     /* tokens are exact */
    {REQUEST_HEAD V13 PROTO "\r\n", "/mqtt", -400, NULL},                                   /* no key */
    {REQUEST_HEAD "Sec-WebSocket-Key: c2hvcnQ=\r\n" V13 PROTO "\r\n", "/mqtt", -400, NULL}, /* not 16 bytes */
    {REQUEST_HEAD KEY KEY V13 PROTO "\r\n", "/mqtt", -400, NULL},                           /* two keys */
    {"GET /mqtt HTTP/1.1\r\nHost: n\r\nConnection: Upgrade\r\n" KEY V13 PROTO "\r\n", "/mqtt", -400, NULL},
    {"GET /mqtt HTTP/1.1\r\nHost: n\r\nUpgrade: websocket\r\n" KEY V13 PROTO "\r\n", "/mqtt", -400, NULL},
    {"GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" KEY V13 PROTO "\r\n", "/mqtt", -400, NULL},
    {"POST /mqtt HTTP/1.1\r\nHost: n\r\n\r\n", "/mqtt", -400, NULL},
    {"GET /mqtt HTTP/1.0\r\nHost: n\r\n\r\n", "/mqtt", -400, NULL},
    {"GET mqtt HTTP/1.1\r\nHost: n\r\n\r\n", "/mqtt", -400, NULL},
    {REQUEST_HEAD " folded\r\n" KEY V13 PROTO "\r\n", "/mqtt", -400, NULL},
    {REQUEST_HEAD "Bad Name: x\r\n" KEY V13 PROTO "\r\n", "/mqtt", -400, NULL},
    {REQUEST_HEAD "no colon\r\n" KEY V13 PROTO "\r\n", "/mqtt", -400, NULL},
};

static void test_handshakes(void)
{
    for (size_t i = 0; i < sizeof(handshakes) / sizeof(handshakes[0]); i++) {
        struct mqtt_ws_handshake hs;
        size_t len = strlen(handshakes[i].request);
        int r = mqtt_ws_parse_request(handshakes[i].request, len, handshakes[i].path, &hs);
        int want = handshakes[i].result == 1 ? (int)len : handshakes[i].result;
        if (r != want)
            fprintf(stderr, "handshake %zu: %d, want %d\n", i, r, want);
        CHECK(r == want);
        if (r > 0) {
            CHECK_STR(hs.subprotocol, handshakes[i].subprotocol);
            CHECK_STR(hs.key, "dGhlIHNhbXBsZSBub25jZQ==");
        }
    }
    /* a request past the limit without its blank line is refused, not waited for */
    static char huge[MQTT_WS_REQUEST_MAX + 10];
    memset(huge, 'a', sizeof(huge));
    struct mqtt_ws_handshake hs;
    CHECK(mqtt_ws_parse_request(huge, sizeof(huge), "/mqtt", &hs) == -400);
    CHECK(mqtt_ws_parse_request(huge, 100, "/mqtt", &hs) == 0);
    /* frames pipelined after the request are not part of it */
    const char pipelined[] = REQUEST_HEAD KEY V13 PROTO "\r\n\x82\x80";
    CHECK(mqtt_ws_parse_request(pipelined, sizeof(pipelined) - 1, "/mqtt", &hs) == (int)sizeof(pipelined) - 3);
}

static void test_accept_and_responses(void)
{
    char accept[29];
    mqtt_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept); /* RFC 6455 §1.3 */
    CHECK_STR(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    struct mqtt_ws_handshake hs = {.key = "dGhlIHNhbXBsZSBub25jZQ==", .subprotocol = "mqtt"};
    struct mqtt_buf b = {0};
    mqtt_ws_encode_accept(&b, &hs);
    const char want[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
    CHECK(b.len == sizeof(want) - 1 && memcmp(b.data, want, b.len) == 0);
    b.len = 0;
    mqtt_ws_encode_refusal(&b, 426);
    const char refusal[] = "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\n"
                           "Content-Length: 0\r\n\r\n";
    CHECK(b.len == sizeof(refusal) - 1 && memcmp(b.data, refusal, b.len) == 0);
    mqtt_buf_free(&b);
}

/* ---- frames ---- */

struct spec_frame {
    uint8_t b0;          /* FIN | RSV | opcode */
    const char *payload; /* NULL ends the list */
    size_t len;          /* payload bytes (it may hold NULs) */
    uint64_t claim;      /* a length to announce instead (the payload is then not sent), 0 = len */
    bool unmasked;
};

#define F(b0, s) \
    { \
        b0, s, sizeof(s) - 1, 0, false \
    }

static const struct {
    const char *name;
    uint64_t limit;
    struct spec_frame frames[5];
    const char *data; /* the MQTT bytes out */
    size_t data_len;
    const char *events; /* one letter per control event: P ping, O pong, C close, E error */
    uint16_t code;      /* of the last close or error */
} frame_cases[] = {
    {"one binary frame",
     100,
     {F(0x82,
        "\x10\x02"
        "ab")},
     "\x10\x02"
     "ab",
     4,
     "",
     0},
    {"fragments with a ping between",
     100,
     {F(0x02, "\xc0"), F(0x89, "hi"), F(0x80, "\x00"), F(0x8a, "")},
     "\xc0\x00",
     2,
     "PO",
     0},
    {"empty frames", 100, {F(0x82, ""), F(0x02, ""), F(0x80, "x")}, "x", 1, "", 0},
    {"126-byte frame (16-bit length)",
     200,
     {{0x82,
       "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
       "0123456789012345678901234",
       126, 0, false}},
     "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
     "0123456789012345678901234",
     126,
     "",
     0},
    {"close with a code and reason", 100, {F(0x82, "a"), F(0x88, "\x03\xe8ok"), F(0x82, "b")}, "a", 1, "C", 1000},
    {"close without a code", 100, {F(0x88, "")}, "", 0, "C", 1005},
    {"close code 4000", 100, {F(0x88, "\x0f\xa0")}, "", 0, "C", 4000},
    {"close code 1005 is not sendable", 100, {F(0x88, "\x03\xed")}, "", 0, "E", 1002},
    {"close with a 1-byte payload", 100, {F(0x88, "\x03")}, "", 0, "E", 1002},
    {"close reason not UTF-8", 100, {F(0x88, "\x03\xe8\xc3\x28")}, "", 0, "E", 1007},
    {"unmasked", 100, {{0x82, "a", 1, 0, true}}, "", 0, "E", 1002},
    {"text frame", 100, {F(0x81, "a")}, "", 0, "E", 1003},
    {"rsv bits", 100, {F(0xc2, "a")}, "", 0, "E", 1002},
    {"reserved opcode", 100, {F(0x83, "a")}, "", 0, "E", 1002},
    {"stray continuation", 100, {F(0x80, "a")}, "", 0, "E", 1002},
    {"new message inside a fragmented one", 100, {F(0x02, "a"), F(0x82, "b")}, "a", 1, "E", 1002},
    {"text inside a fragmented message", 100, {F(0x02, "a"), F(0x81, "b")}, "a", 1, "E", 1002},
    {"fragmented ping", 100, {F(0x09, "a")}, "", 0, "E", 1002},
    {"frame over the limit", 3, {F(0x82, "abcd")}, "", 0, "E", 1009},
    {"message over the limit", 3, {F(0x02, "ab"), F(0x80, "cd")}, "ab", 2, "E", 1009},
    {"a frame at the limit", 4, {F(0x82, "abcd")}, "abcd", 4, "", 0},
    {"huge 64-bit length", UINT64_MAX, {{0x82, "", 0, UINT64_C(1) << 63, false}}, "", 0, "E", 1002},
    {"non-minimal 16-bit length", 1000, {{0x82, "", 0, 5, false}}, "", 0, "E", 1002},
};

/* Encode a client's frame (masked unless asked not to). A claim < 126 is written in the 16-bit form on
 * purpose (the non-minimal case); a claim past 65535 in the 64-bit one. */
static size_t client_frame(uint8_t *out, const struct spec_frame *f)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint64_t n = f->claim ? f->claim : f->len;
    uint8_t mask = f->unmasked ? 0 : 0x80;
    size_t at = 0;
    out[at++] = f->b0;
    if (n < 126 && !f->claim) {
        out[at++] = (uint8_t)(mask | n);
    } else if (n <= 0xffff) {
        out[at++] = mask | 126;
        out[at++] = (uint8_t)(n >> 8);
        out[at++] = (uint8_t)n;
    } else {
        out[at++] = mask | 127;
        for (int i = 0; i < 8; i++)
            out[at++] = (uint8_t)(n >> (56 - 8 * i));
    }
    if (mask) {
        memcpy(out + at, key, 4);
        at += 4;
    }
    if (!f->claim)
        for (size_t i = 0; i < f->len; i++)
            out[at + i] = (uint8_t)f->payload[i] ^ (mask ? key[i & 3] : 0);
    return at + (f->claim ? 0 : f->len);
}

static void test_frames(void)
{
    for (size_t i = 0; i < sizeof(frame_cases) / sizeof(frame_cases[0]); i++) {
        uint8_t buf[1024];
        size_t len = 0;
        for (const struct spec_frame *f = frame_cases[i].frames; f->payload; f++)
            len += client_frame(buf + len, f);
        struct mqtt_ws_decoder d;
        mqtt_ws_decoder_init(&d, frame_cases[i].limit);
        char events[8] = "";
        size_t pos = 0, out = 0, n_events = 0;
        uint16_t code = 0;
        while (pos < len) {
            enum mqtt_ws_event ev = mqtt_ws_decode(&d, buf, len, &pos, &out);
            if (ev == MQTT_WS_DATA)
                continue;
            events[n_events++] = "DPOCE"[ev];
            if (ev == MQTT_WS_PING)
                CHECK(d.control_len == 2 && memcmp(d.control, "hi", 2) == 0);
            if (ev == MQTT_WS_CLOSE || ev == MQTT_WS_ERROR) {
                code = d.close_code;
                break;
            }
        }
        bool ok = strcmp(events, frame_cases[i].events) == 0 && code == frame_cases[i].code &&
            out == frame_cases[i].data_len && memcmp(buf, frame_cases[i].data, out) == 0;
        if (!ok)
            fprintf(stderr, "frames \"%s\": events \"%s\" code %u, %zu data bytes\n", frame_cases[i].name, events, code,
                    out);
        CHECK(ok);
    }
}

static void test_encoder(void)
{
    uint8_t h[10];
    CHECK(mqtt_ws_frame_header(h, MQTT_WS_OP_BINARY, 0) == 2 && h[0] == 0x82 && h[1] == 0);
    CHECK(mqtt_ws_frame_header(h, MQTT_WS_OP_BINARY, 125) == 2 && h[1] == 125);
    CHECK(mqtt_ws_frame_header(h, MQTT_WS_OP_BINARY, 126) == 4 && h[1] == 126 && h[2] == 0 && h[3] == 126);
    CHECK(mqtt_ws_frame_header(h, MQTT_WS_OP_BINARY, 65535) == 4 && h[2] == 0xff && h[3] == 0xff);
    CHECK(mqtt_ws_frame_header(h, MQTT_WS_OP_PONG, 65536) == 10 && h[0] == 0x8a && h[1] == 127 && h[7] == 1 &&
          h[9] == 0);
    struct mqtt_buf b = {0};
    mqtt_ws_encode_close(&b, 1009);
    CHECK(b.len == 4 && memcmp(b.data, "\x88\x02\x03\xf1", 4) == 0);
    mqtt_buf_free(&b);
}

int main(void)
{
    test_handshakes();
    test_accept_and_responses();
    test_frames();
    test_encoder();
    CHECK_DONE();
}
