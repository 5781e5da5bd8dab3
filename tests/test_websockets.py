"""MQTT over WebSockets (ws:// and wss:// listeners; src/mqtt/ws.c, src/broker/websocket.c).

One hedge-broker serves plain TCP, ws and wss with a password file and an ACL; the tests drive it
with paho-mqtt's websockets transport, mosquitto_pub/sub over TCP, hand-made frames (fragments,
pings, violations, bad handshakes, byte-exact) and a headless Chromium page that speaks MQTT from
~40 lines of JavaScript.
"""
import base64
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid

import paho.mqtt.client as mqtt
import pytest

from broker_util import HEDGE_BROKER, Broker, connect, publish, subscribe, varint

USER, PASSWORD = "web", "s3cret-ws"
CHROMIUM = "/usr/bin/chromium"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uid():
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("wsbroker")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
                    "server.crt", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   cwd=d, check=True, capture_output=True)
    subprocess.run([str(HEDGE_BROKER), "passwd", str(d / "passwd"), USER], input=PASSWORD + "\n", text=True,
                   check=True, capture_output=True)
    (d / "acl").write_text(f"user {USER}\ntopic readwrite ws/#\n")
    ws_port, wss_port = free_port(), free_port()
    cfg = (f"tls_cert {d}/server.crt\ntls_key {d}/server.key\npassword_file {d}/passwd\nacl_file {d}/acl\n"
           "websocket_max_message_size 65536\n")
    b = Broker(d, config=cfg, args=["--listen", f"ws://127.0.0.1:{ws_port}/mqtt",
                                    "--listen", f"wss://127.0.0.1:{wss_port}/mqtt"]).start()
    b.ws_port, b.wss_port, b.cert = ws_port, wss_port, d / "server.crt"
    yield b
    b.stop()


# ---- paho-mqtt over ws and wss, mosquitto clients over TCP ----

def paho_client(broker, tls):
    c = mqtt.Client(client_id="paho-" + uid(), transport="websockets")
    c.ws_set_options(path="/mqtt")
    c.username_pw_set(USER, PASSWORD)
    if tls:
        c.tls_set(ca_certs=str(broker.cert))
    got, subscribed = [], threading.Event()
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect("127.0.0.1", broker.wss_port if tls else broker.ws_port, keepalive=30)
    c.loop_start()
    return c, got, subscribed


def wait_for(cond, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_paho_websockets_and_tcp_clients_both_ways(broker, tls):
    topic = f"ws/{uid()}"
    c, got, subscribed = paho_client(broker, tls)
    try:
        c.subscribe(topic + "/#", qos=1)
        assert subscribed.wait(10)
        # TCP -> WebSocket, a small message and one larger than a 16-bit frame length
        common = ["-p", str(broker.port), "-u", USER, "-P", PASSWORD, "-q", "1"]
        subprocess.run(["mosquitto_pub", *common, "-t", topic + "/a", "-m", "from tcp"], check=True, timeout=10)
        big = "x" * 70000
        subprocess.run(["mosquitto_pub", *common, "-t", topic + "/b", "-m", big], check=True, timeout=10)
        assert wait_for(lambda: len(got) >= 2), got
        assert got == [(topic + "/a", b"from tcp"), (topic + "/b", big.encode())]
        # WebSocket -> TCP
        sub = subprocess.Popen(["mosquitto_sub", *common, "-t", topic + "/c", "-C", "1", "-W", "10"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)  # mosquitto_sub has no "subscribed" signal; a retained message would hide the order
        c.publish(topic + "/c", b"from websocket", qos=1).wait_for_publish(10)
        out, _ = sub.communicate(timeout=15)
        assert out.strip() == "from websocket"
        # the ACL holds on WebSocket connections too: outside ws/# nothing is delivered
        c.subscribe("other/#", qos=0)
        subprocess.run(["mosquitto_pub", *common, "-t", "other/x", "-m", "no"], check=False, timeout=10)
        time.sleep(0.3)
        assert all(t.startswith(topic) for t, _ in got)
    finally:
        c.disconnect()
        c.loop_stop()


# ---- hand-made frames ----

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class WS:
    """A raw WebSocket client: the handshake, masked frames out, unmasked frames in."""

    def __init__(self, port, path="/mqtt", protocol="mqtt", extra=b"", tls_cert=None):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if tls_cert:
            ctx = ssl.create_default_context(cafile=str(tls_cert))
            s = ctx.wrap_socket(s, server_hostname="localhost")
        self.sock, self.buf = s, b""
        self.key = base64.b64encode(os.urandom(16))
        req = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " + self.key +
               b"\r\nSec-WebSocket-Version: 13\r\n")
        if protocol:
            req += b"Sec-WebSocket-Protocol: " + protocol.encode() + b"\r\n"
        self.sock.sendall(req + extra + b"\r\n")

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head.decode()

    def accept_value(self):
        return base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()

    def send(self, data):
        self.sock.sendall(data)
        return self

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def recv_frame(self):
        """(fin, opcode, payload) of the next frame; the server never masks."""
        self._fill(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "a server frame is masked"
        n, at = b1 & 0x7F, 2
        if n == 126:
            self._fill(4)
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10)
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(at + n)
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_mqtt(self, n):
        """The next n bytes of the MQTT stream, across binary frames (control frames returned apart)."""
        data, controls = b"", []
        while len(data) < n:
            fin, op, payload = self.recv_frame()
            if op == 2:
                data += payload
            else:
                controls.append((op, payload))
        assert len(data) == n, data
        return data, controls

    def expect_close(self, code):
        fin, op, payload = self.recv_frame()
        assert (op, payload[:2]) == (8, struct.pack("!H", code)), (op, payload)
        self.sock.settimeout(5)
        assert self.sock.recv(1) == b""  # then the broker ends the TCP connection


def upgraded(broker, **kw):
    w = WS(broker.ws_port, **kw)
    head = w.response()
    assert head.startswith("HTTP/1.1 101 "), head
    return w, head


CONNACK_OK = b"\x20\x02\x00\x00"


def test_handshake_fragments_pings_and_close_byte_exact(broker):
    w, head = upgraded(broker)
    lines = head.split("\r\n")
    assert f"Sec-WebSocket-Accept: {w.accept_value()}" in lines
    assert "Sec-WebSocket-Protocol: mqtt" in lines and "Upgrade: websocket" in lines
    # CONNECT in three fragments (binary, continuation, continuation) with a ping between them,
    # the MQTT packet split at arbitrary points
    c = connect("frag-" + uid(), user=USER, password=PASSWORD)
    w.send(frame(2, c[:3], fin=False) + frame(9, b"are you there") + frame(0, c[3:10], fin=False))
    w.send(frame(0, c[10:]))
    data, controls = w.recv_mqtt(4)
    assert data == CONNACK_OK and controls == [(10, b"are you there")]
    # SUBSCRIBE, PINGREQ and the first half of a PUBLISH in one frame, the rest in the next
    topic = f"ws/{uid()}"
    pub = publish(topic, "joined and split", qos=0)
    w.send(frame(2, subscribe(1, [(topic, 0), ("other/#", 0)]) + b"\xc0\x00" + pub[:5]) + frame(2, pub[5:]))
    data, _ = w.recv_mqtt(6 + 2 + len(pub))
    assert data == b"\x90\x04\x00\x01\x00\x80" + b"\xd0\x00" + pub  # other/# refused by the ACL
    # an empty ping, an unsolicited pong (ignored), then close 1000 is echoed
    w.send(frame(9) + frame(10, b"x"))
    assert w.recv_frame() == (True, 10, b"")
    w.send(frame(8, struct.pack("!H", 1000) + b"bye"))
    w.expect_close(1000)


def test_the_same_auth_as_tcp_and_the_old_subprotocol(broker):
    w, head = upgraded(broker, protocol="mqttv3.1")
    assert "Sec-WebSocket-Protocol: mqttv3.1" in head.split("\r\n")
    w.send(frame(2, connect("bad-" + uid(), user=USER, password="wrong")))
    data, _ = w.recv_mqtt(4)
    assert data == b"\x20\x02\x00\x04"  # bad user name or password, as on TCP
    w.expect_close(1000)
    w, _ = upgraded(broker)
    w.send(frame(2, connect("anon-" + uid())))
    data, _ = w.recv_mqtt(4)
    assert data == b"\x20\x02\x00\x05"  # anonymous clients are refused once users exist
    w.expect_close(1000)
    # offered among others, "mqtt" is chosen
    w, head = upgraded(broker, protocol="chat, mqtt")
    assert "Sec-WebSocket-Protocol: mqtt" in head.split("\r\n")


@pytest.mark.parametrize("bad,code", [
    (frame(2, connect("x"), mask=False), 1002),          # client frames must be masked
    (frame(2, b"", length=65537), 1009),                  # over websocket_max_message_size (64 KiB)
    (frame(2, b"\x10", fin=False) + frame(2, b"\x00"), 1002),  # a new message inside a fragmented one
    (frame(0, b"\x10"), 1002),                            # a continuation with nothing to continue
    (frame(2, b"\x10", rsv=0x40), 1002),                  # RSV1 without an extension
    (frame(9, b"p", fin=False), 1002),                    # a fragmented control frame
    (frame(1, b"hello"), 1003),                           # text: MQTT travels in binary frames only
    (frame(8, struct.pack("!H", 999)), 1002),             # an invalid close code
    # a message over the limit (an MQTT packet still incomplete, so only the WebSocket layer can object)
    # (the continuation's header alone: the broker refuses it before its payload would arrive)
    (frame(2, b"\x10" + varint(100000) + bytes(40000), fin=False) + frame(0, length=30000), 1009),
], ids=["unmasked", "frame-too-big", "interleaved", "stray-continuation", "rsv", "fragmented-ping", "text",
        "close-999", "message-too-big"])
def test_violations_close_with_their_code(broker, bad, code):
    w, _ = upgraded(broker)
    w.send(bad)
    w.expect_close(code)


def test_oversized_frame_with_its_payload_still_gets_the_close_frame(broker):
    # the broker refuses the frame at its header while the payload is still arriving: it must not
    # reset the connection (a RST would overtake the close frame, RFC 6455 §7.1.1) but shut down
    # its side, read and discard until the client closes, then close
    for _ in range(3):
        w, _ = upgraded(broker)
        w.send(frame(2, bytes(100000)))  # over websocket_max_message_size (64 KiB), payload and all
        w.expect_close(1009)
        w.sock.close()
    # the broker is still serving
    w, _ = upgraded(broker)
    w.send(frame(2, connect("after-" + uid(), user=USER, password=PASSWORD)))
    assert w.recv_mqtt(4)[0] == CONNACK_OK


@pytest.mark.parametrize("path,protocol,extra,status", [
    ("/mqtt", None, b"", 400),                                # no subprotocol: MQTT-6.0.0-3
    ("/mqtt", "chat", b"", 400),                              # no "mqtt" among them
    ("/other", "mqtt", b"", 404),                             # the listener serves /mqtt only
    ("/mqtt", "mqtt", b"Sec-WebSocket-Version: 8\r\n", 400),  # a second version header
])
def test_bad_handshakes_get_an_http_error(broker, path, protocol, extra, status):
    w = WS(broker.ws_port, path=path, protocol=protocol, extra=extra)
    head = w.response()
    assert head.startswith(f"HTTP/1.1 {status} "), head
    w.sock.settimeout(5)
    assert w.sock.recv(1) == b""


def test_malformed_requests_and_wss_raw(broker):
    for req in (b"POST /mqtt HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",  # no key
                b"GET /mqtt HTTP/1.0\r\n\r\n",
                b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00" + b"\r\n\r\n"):  # MQTT on the ws port
        with socket.create_connection(("127.0.0.1", broker.ws_port), timeout=5) as s:
            s.sendall(req)
            answer = s.makefile("rb").read()
            assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (req, answer)
    # a version other than 13: 426 naming the version we speak
    with socket.create_connection(("127.0.0.1", broker.ws_port), timeout=5) as s:
        s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n"
                  b"Sec-WebSocket-Protocol: mqtt\r\n\r\n")
        answer = s.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.1 426 ") and b"Sec-WebSocket-Version: 13\r\n" in answer
    # wss with raw frames: the same codec over TLS
    w = WS(broker.wss_port, tls_cert=broker.cert)
    assert w.response().startswith("HTTP/1.1 101 ")
    w.send(frame(2, connect("wss-" + uid(), user=USER, password=PASSWORD)) + frame(9, b"tls"))
    data, controls = w.recv_mqtt(4)
    assert data == CONNACK_OK and controls == [(10, b"tls")]
    w.send(frame(2, b"\xe0\x00"))  # MQTT DISCONNECT: the broker closes with 1000
    w.expect_close(1000)


# ---- a real browser ----

PAGE = """<!doctype html><html><body><script>
const enc = s => { const b = new TextEncoder().encode(s); return [b.length >> 8, b.length & 255, ...b]; };
const pkt = (first, body) => { const len = []; let n = body.length;
  do { let d = n & 127; n >>= 7; len.push(n ? d | 128 : d); } while (n); return new Uint8Array([first, ...len, ...body]); };
const report = (what, text) => fetch("/" + what + "?m=" + encodeURIComponent(text));
const ws = new WebSocket("ws://127.0.0.1:WS_PORT/mqtt", "mqtt");
ws.binaryType = "arraybuffer";
let stream = [];
ws.onopen = () => {
  ws.send(pkt(0x10, [...enc("MQTT"), 4, 0xC2, 0, 30, ...enc("browser-CLIENT"), ...enc("USER"), ...enc("PASSWORD")]));
  ws.send(pkt(0x82, [0, 1, ...enc("TOPIC"), 0]));
};
ws.onmessage = ev => {
  stream.push(...new Uint8Array(ev.data));
  for (;;) {  /* whole MQTT packets from the byte stream, however the frames cut it */
    let len = 0, mult = 1, i = 1;
    for (; i < stream.length; i++) { len += (stream[i] & 127) * mult; mult *= 128; if (!(stream[i] & 128)) break; }
    if (i >= stream.length || stream.length < i + 1 + len) return;
    const p = stream.slice(0, i + 1 + len); stream = stream.slice(i + 1 + len);
    const body = p.slice(i + 1);
    if (p[0] >> 4 === 9) report("ready", "suback " + body[2]);
    if (p[0] >> 4 === 3) {
      const tlen = (body[0] << 8) | body[1];
      report("result", new TextDecoder().decode(new Uint8Array(body.slice(2 + tlen))));
    }
  }
};
ws.onerror = () => report("result", "websocket error");
</script></body></html>
"""


def test_chromium_page_receives_a_message_published_with_mosquitto_pub(broker, tmp_path):
    assert os.access(CHROMIUM, os.X_OK), "chromium is listed in deps/broker.txt"
    topic = f"ws/browser/{uid()}"
    page = (PAGE.replace("WS_PORT", str(broker.ws_port)).replace("CLIENT", uid()).replace("USER", USER)
            .replace("PASSWORD", PASSWORD).replace("TOPIC", topic)).encode()
    reports = {}
    arrived = threading.Condition()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path == "/":
                body, ctype = page, "text/html"
            else:
                with arrived:
                    reports[url.path[1:]] = urllib.parse.parse_qs(url.query).get("m", [""])[0]
                    arrived.notify_all()
                body, ctype = b"ok", "text/plain"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={tmp_path / 'profile'}", f"http://127.0.0.1:{server.server_address[1]}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 30
        with arrived:
            assert arrived.wait_for(lambda: "ready" in reports, timeout=max(0, deadline - time.time())), reports
        assert reports["ready"] == "suback 0"
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-u", USER, "-P", PASSWORD, "-t", topic,
                        "-m", "hello browser"], check=True, timeout=10)
        with arrived:
            assert arrived.wait_for(lambda: "result" in reports, timeout=max(0, deadline - time.time())), reports
        assert reports["result"] == "hello browser"
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(timeout=10)
        server.shutdown()
        server.server_close()


# ---- embedded in hedged ----

def test_hedged_serves_websockets_next_to_tcp(tmp_path, hedge):
    from conftest import check_sanitizer
    from test_daemon import HEDGED
    from test_daemon_broker import BrokerDaemon
    # --check: a wss:// listener loads the certificates like listen_tls does, so it needs them
    cfg = tmp_path / "wss.json"
    cfg.write_text(json.dumps({"broker": {"listen": ["wss://127.0.0.1:0/mqtt"]}}))
    r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True, timeout=30)
    check_sanitizer(r.stderr)
    assert r.returncode == 1 and "tls_cert and tls_key" in r.stderr, r.stderr
    cfg.write_text(json.dumps({"broker": {"listen": ["ws://127.0.0.1"]}}))
    r = subprocess.run([str(HEDGED), "--check", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "broker.listen[0]: must be" in r.stderr, r.stderr
    # a ws listener after the TCP one: workloads and the uplink still get the TCP one
    d = BrokerDaemon(tmp_path, hedge)
    ws_port = free_port()
    config = json.loads(d.config.read_text())
    config["broker"]["listen"].append(f"ws://127.0.0.1:{ws_port}/mqtt")
    d.config.write_text(json.dumps(config))
    d.start()
    try:
        topic = f"embedded/{uid()}"
        c = mqtt.Client(client_id="paho-" + uid(), transport="websockets")
        c.ws_set_options(path="/mqtt")
        got, subscribed = [], threading.Event()
        c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect("127.0.0.1", ws_port, keepalive=30)
        c.loop_start()
        try:
            c.subscribe(topic, qos=1)
            assert subscribed.wait(10)
            subprocess.run(["mosquitto_pub", "-p", str(d.port), "-t", topic, "-m", "via hedged", "-q", "1"],
                           check=True, timeout=10)
            assert wait_for(lambda: got), "no message over ws from hedged's broker"
            assert got == [(topic, b"via hedged")]
        finally:
            c.disconnect()
            c.loop_stop()
    finally:
        d.stop()
