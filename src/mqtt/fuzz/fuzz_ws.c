/*
 * fuzz_ws.c - libFuzzer target for MQTT over WebSockets (src/mqtt/ws.c;
 * scripts/fuzz-mqtt-ws, `make fuzz`).
 *
 * Input: one mode byte, then the bytes a client sends.
 *   - even mode: an HTTP upgrade request. An accepted one must fit in the
 *     input, parse to the same length again when cut right after it, and
 *     give a well-formed 101 response; a refusal is one of 400/404/426.
 *   - odd mode: a stream of frames, with a message limit of 1..128 bytes
 *     taken from the mode byte. It is decoded whole, then again byte by byte
 *     and in chunks of 7, each chunk in a buffer of its own: the MQTT bytes
 *     and the control events (with their payloads and codes, and where in the
 *     data stream they came) must be the same however the input is cut.
 * ASan/UBSan catch bad reads and writes; any disagreement aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/ws.h"

#define MAX_EVENTS 4096

struct event {
    enum mqtt_ws_event ev;
    size_t at; /* data bytes before it */
    uint16_t code;
    uint8_t control_len;
    uint8_t control[125];
};

struct transcript {
    uint8_t *data;
    size_t data_len;
    struct event events[MAX_EVENTS];
    size_t n_events;
    bool ended; /* a close or an error: the decoder takes nothing more */
};

/* Decode input in chunks of `chunk` bytes (0 = all at once) into t. */
static void run(const uint8_t *input, size_t len, uint64_t limit, size_t chunk, struct transcript *t)
{
    struct mqtt_ws_decoder d;
    mqtt_ws_decoder_init(&d, limit);
    t->data = malloc(len + 1);
    t->data_len = t->n_events = 0;
    t->ended = false;
    for (size_t off = 0; off < len && !t->ended;) {
        size_t n = chunk && len - off > chunk ? chunk : len - off;
        uint8_t *buf = malloc(n); /* a buffer of its own: ASan sees any read past the chunk */
        memcpy(buf, input + off, n);
        size_t pos = 0, out = 0;
        while (pos < n && !t->ended) {
            size_t out_before = out;
            enum mqtt_ws_event ev = mqtt_ws_decode(&d, buf, n, &pos, &out);
            if (out < out_before || out > pos || pos > n)
                abort();
            memcpy(t->data + t->data_len, buf + out_before, out - out_before);
            t->data_len += out - out_before;
            if (ev == MQTT_WS_DATA)
                continue;
            if (t->n_events == MAX_EVENTS)
                abort();
            struct event *e = &t->events[t->n_events++];
            memset(e, 0, sizeof(*e));
            e->ev = ev;
            e->at = t->data_len;
            if (ev == MQTT_WS_PING || ev == MQTT_WS_PONG) {
                e->control_len = d.control_len;
                memcpy(e->control, d.control, d.control_len);
            } else {
                e->code = d.close_code;
                t->ended = true;
            }
        }
        free(buf);
        off += n;
    }
}

static void same(const struct transcript *a, const struct transcript *b)
{
    if (a->data_len != b->data_len || memcmp(a->data, b->data, a->data_len) != 0 || a->n_events != b->n_events ||
        a->ended != b->ended)
        abort();
    for (size_t i = 0; i < a->n_events; i++)
        if (a->events[i].ev != b->events[i].ev || a->events[i].at != b->events[i].at ||
            a->events[i].code != b->events[i].code || a->events[i].control_len != b->events[i].control_len ||
            memcmp(a->events[i].control, b->events[i].control, a->events[i].control_len) != 0)
            abort();
}

static void fuzz_frames(const uint8_t *data, size_t size, uint64_t limit)
{
    static struct transcript whole, bytewise, chunks;
    run(data, size, limit, 0, &whole);
    run(data, size, limit, 1, &bytewise);
    run(data, size, limit, 7, &chunks);
    same(&whole, &bytewise);
    same(&whole, &chunks);
    for (size_t i = 0; i < whole.n_events; i++) {
        uint16_t code = whole.events[i].code;
        if (whole.events[i].ev == MQTT_WS_ERROR && code != 1002 && code != 1003 && code != 1007 && code != 1009)
            abort();
    }
    free(whole.data);
    free(bytewise.data);
    free(chunks.data);
}

static void fuzz_handshake(const uint8_t *data, size_t size, bool any_path)
{
    const char *path = any_path ? NULL : "/mqtt";
    struct mqtt_ws_handshake hs;
    int r = mqtt_ws_parse_request((const char *)data, size, path, &hs);
    if (r < 0) {
        if (r != -400 && r != -404 && r != -426)
            abort();
        struct mqtt_buf b = {0};
        mqtt_ws_encode_refusal(&b, -r);
        mqtt_buf_free(&b);
        return;
    }
    if (r == 0)
        return;
    if ((size_t)r > size || strlen(hs.key) != 24 || !hs.subprotocol)
        abort();
    struct mqtt_ws_handshake again;
    if (mqtt_ws_parse_request((const char *)data, (size_t)r, path, &again) != r || strcmp(again.key, hs.key) != 0)
        abort();
    struct mqtt_buf b = {0};
    mqtt_ws_encode_accept(&b, &hs);
    if (b.len < 12 || memcmp(b.data, "HTTP/1.1 101", 12) != 0 || memcmp(b.data + b.len - 4, "\r\n\r\n", 4) != 0)
        abort();
    mqtt_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    if (mode & 1)
        fuzz_frames(data + 1, size - 1, 1 + (mode >> 1));
    else
        fuzz_handshake(data + 1, size - 1, mode & 2);
    return 0;
}
