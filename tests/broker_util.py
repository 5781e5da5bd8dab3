"""Helpers for the broker tests: start the real hedge-broker on a free loopback
port, and a raw MQTT client that sends and expects exact bytes.

The raw client is deliberately dumb: it frames packets (fixed header +
remaining length) and nothing else, so tests state every byte they expect.
"""
import os
import pathlib
import signal
import socket
import struct
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("HEDGE_BUILD", ROOT / "build"))
HEDGE_BROKER = BUILD / "hedge-broker"
SANITIZED = os.environ.get("HEDGE_SANITIZED") == "1"
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=99",
    "LSAN_OPTIONS": "exitcode=99",
}


class Broker:
    """A hedge-broker process on 127.0.0.1:<free port>."""

    def __init__(self, workdir, args=(), config=None):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.config = config
        self.proc = None
        self.port = None
        self.log = self.dir / "broker.log"

    def start(self, port=None):
        port_file = self.dir / "port"
        if port_file.exists():
            port_file.unlink()
        cmd = [str(HEDGE_BROKER), "--listen", f"127.0.0.1:{port or 0}", "--port-file", str(port_file)]
        if self.config is not None:
            cfg = self.dir / "broker.conf"
            cfg.write_text(self.config)
            cmd += ["--config", str(cfg)]
        cmd += self.args
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=self.logf, env={**os.environ, **SANITIZER_ENV})
        deadline = time.time() + 10
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"hedge-broker exited {self.proc.returncode}: {self.log.read_text()}")
            if time.time() > deadline:
                raise RuntimeError("hedge-broker did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        return self

    def stop(self):
        """SIGTERM, expect a clean exit and no sanitizer report."""
        if not self.proc:
            return
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=20)
        self.proc = None
        self.logf.close()
        text = self.log.read_text()
        for marker in ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:"):
            assert marker not in text, "sanitizer report:\n" + text
        assert rc == 0, f"hedge-broker exited {rc}: {text}"

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
        self.logf.close()

    def restart(self):
        """Start again on the same port (state survives if --state-dir was given)."""
        return self.start(port=self.port)


# ---- encoding ----

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mstr(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def props(*items):
    """items: raw encoded properties; returns the length-prefixed block."""
    raw = b"".join(items)
    return varint(len(raw)) + raw


def p_u8(pid, v):
    return bytes([pid, v])


def p_u16(pid, v):
    return bytes([pid]) + struct.pack("!H", v)


def p_u32(pid, v):
    return bytes([pid]) + struct.pack("!I", v)


def p_str(pid, s):
    return bytes([pid]) + mstr(s)


def p_user(k, v):
    return bytes([0x26]) + mstr(k) + mstr(v)


def connect(client_id, version=4, clean=True, keepalive=60, will=None, user=None, password=None, cprops=b""):
    """will: (topic, payload, qos, retain[, will_props_raw])"""
    flags = 0x02 if clean else 0
    tail = mstr(client_id)
    if will:
        topic, payload, qos, retain = will[:4]
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if version == 5:
            tail += props(will[4] if len(will) > 4 else b"")
        tail += mstr(topic) + mstr(payload)
    if user is not None:
        flags |= 0x80
        tail += mstr(user)
    if password is not None:
        flags |= 0x40
        tail += mstr(password)
    body = mstr("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += props(cprops)
    return packet(0x10, body + tail)


def publish(topic, payload=b"", qos=0, pid=None, retain=False, dup=False, version=4, pprops=b""):
    if isinstance(payload, str):
        payload = payload.encode()
    body = mstr(topic)
    if qos:
        body += struct.pack("!H", pid)
    if version == 5:
        body += props(pprops)
    return packet(0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), body + payload)


def subscribe(pid, filters, version=4, sprops=b""):
    """filters: list of (filter, options)"""
    body = struct.pack("!H", pid)
    if version == 5:
        body += props(sprops)
    for f, o in filters:
        body += mstr(f) + bytes([o])
    return packet(0x82, body)


def unsubscribe(pid, filters, version=4):
    body = struct.pack("!H", pid) + (b"\x00" if version == 5 else b"")
    for f in filters:
        body += mstr(f)
    return packet(0xA2, body)


def ack(kind, pid):
    first = {"puback": 0x40, "pubrec": 0x50, "pubrel": 0x62, "pubcomp": 0x70}[kind]
    return packet(first, struct.pack("!H", pid))


DISCONNECT = b"\xe0\x00"
PINGREQ = b"\xc0\x00"


class Raw:
    """A raw MQTT connection: send bytes, read whole packets."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)
        return self

    def _fill(self, n, timeout):
        self.sock.settimeout(timeout)
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def recv(self, timeout=5.0):
        """Return one whole packet as bytes (fixed header included)."""
        self._fill(2, timeout)
        mult, length, i = 1, 0, 1
        while True:
            self._fill(i + 1, timeout)
            b = self.buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        self._fill(i + length, timeout)
        pkt, self.buf = self.buf[: i + length], self.buf[i + length:]
        return pkt

    def expect(self, data, timeout=5.0):
        got = self.recv(timeout)
        assert got == data, f"expected {data.hex()} got {got.hex()}"
        return got

    def expect_nothing(self, wait=0.5):
        try:
            got = self.recv(timeout=wait)
        except socket.timeout:
            return
        except EOFError:
            raise AssertionError("connection closed, expected it to stay open")
        raise AssertionError(f"expected no packet, got {got.hex()}")

    def expect_closed(self, timeout=5.0):
        """The broker closes the connection; returns any packets it sent first."""
        before = []
        deadline = time.time() + timeout
        while True:
            try:
                before.append(self.recv(timeout=max(0.01, deadline - time.time())))
            except (EOFError, ConnectionResetError):
                return before
            except socket.timeout:
                raise AssertionError(f"connection still open after {timeout}s (got {[p.hex() for p in before]})")

    def connect(self, client_id, version=4, **kw):
        self.send(connect(client_id, version=version, **kw))
        ca = self.recv()
        assert ca[0] == 0x20, f"expected CONNACK, got {ca.hex()}"
        return ca

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def parse_publish(pkt, version=4):
    """-> dict(topic, payload, qos, retain, dup, pid, props)"""
    first = pkt[0]
    assert first >> 4 == 3, f"not a PUBLISH: {pkt.hex()}"
    i = 1
    while pkt[i] & 0x80:
        i += 1
    i += 1
    tlen = struct.unpack("!H", pkt[i:i + 2])[0]
    topic = pkt[i + 2:i + 2 + tlen].decode()
    i += 2 + tlen
    qos = (first >> 1) & 3
    pid = None
    if qos:
        pid = struct.unpack("!H", pkt[i:i + 2])[0]
        i += 2
    pr = b""
    if version == 5:
        n, shift, j = 0, 0, i
        while True:
            b = pkt[j]
            n |= (b & 0x7F) << shift
            shift += 7
            j += 1
            if not b & 0x80:
                break
        pr = pkt[j:j + n]
        i = j + n
    return {"topic": topic, "payload": pkt[i:], "qos": qos, "retain": bool(first & 1), "dup": bool(first & 8),
            "pid": pid, "props": pr}
