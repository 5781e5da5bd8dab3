"""Broker security: password file (PBKDF2-SHA512, `hedge-broker passwd`),
anonymous access off once a user exists, ACLs with %u/%c and separate
read/write, TLS with client certificates as identity, per-client limits.
"""
import shutil
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from broker_util import (HEDGE_BROKER, Broker, Raw, ack, connect, parse_publish, publish, subscribe)


def uid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def passwd(path, user, password):
    r = subprocess.run([str(HEDGE_BROKER), "passwd", str(path), user], input=password + "\n", text=True,
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    d = tmp_path_factory.mktemp("secured")
    pw = d / "passwd"
    passwd(pw, "alice", "wonderland")
    passwd(pw, "bob", "builder")
    passwd(pw, "alice", "rabbit")  # replaces alice's entry
    acl = d / "acl"
    acl.write_text("# anonymous clients: nothing\n"
                   "user alice\n"
                   "topic readwrite alice/#\n"
                   "topic read shared/#\n"
                   "topic read clients/#\n"
                   "topic deny alice/secret/#\n"
                   "user bob\n"
                   "topic write shared/#\n"
                   "pattern readwrite devices/%u/#\n"
                   "pattern write clients/%c/up\n")
    b = Broker(d, args=["--password-file", str(pw), "--acl-file", str(acl)]).start()
    yield b
    b.stop()


def test_passwd_file_format(tmp_path):
    pw = tmp_path / "pw"
    passwd(pw, "carol", "secret")
    line = pw.read_text().strip()
    user, rest = line.split(":", 1)
    parts = rest.split("$")
    assert user == "carol" and parts[1] == "7" and int(parts[2]) >= 10000
    assert (pw.stat().st_mode & 0o777) == 0o600
    assert "secret" not in pw.read_text()


def test_passwd_rejects_bad_user(tmp_path):
    r = subprocess.run([str(HEDGE_BROKER), "passwd", str(tmp_path / "pw"), "a:b"], input="x\n", text=True,
                       capture_output=True)
    assert r.returncode == 2 and "a:b" in r.stderr


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto is not installed")
def test_mosquitto_passwd_file_accepted(tmp_path):
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "dave", "pass"], check=True)
    b = Broker(tmp_path / "b", args=["--password-file", str(pw)]).start()
    try:
        assert Raw(b.port).connect(uid(), user="dave", password="pass") == b"\x20\x02\x00\x00"
        assert Raw(b.port).connect(uid(), user="dave", password="nope") == b"\x20\x02\x00\x04"
    finally:
        b.stop()


@pytest.mark.parametrize("version,anon,badpw,nopw", [(4, b"\x20\x02\x00\x05", b"\x20\x02\x00\x04", b"\x20\x02\x00\x04"),
                                                     (5, 0x87, 0x86, 0x86)])
def test_auth_refusals(secured, version, anon, badpw, nopw):
    for kw, want in (({}, anon), ({"user": "alice", "password": "wonderland"}, badpw),
                     ({"user": "alice"}, nopw), ({"user": "mallory", "password": "x"}, badpw)):
        r = Raw(secured.port)
        ca = r.connect(uid(), version=version, **kw)
        if version == 4:
            assert ca == want, kw
        else:
            assert ca[3] == want, kw
        r.expect_closed()
    r = Raw(secured.port)
    ca = r.connect(uid(), version=version, user="alice", password="rabbit")
    assert ca[3] == 0
    r.close()


def test_anonymous_allowed_without_users(tmp_path):
    b = Broker(tmp_path / "b").start()
    try:
        assert Raw(b.port).connect(uid()) == b"\x20\x02\x00\x00"
    finally:
        b.stop()


def test_anonymous_can_be_switched_off(tmp_path):
    b = Broker(tmp_path / "b", config="allow_anonymous false\n").start()
    try:
        assert Raw(b.port).connect(uid()) == b"\x20\x02\x00\x05"
    finally:
        b.stop()


def login(broker, user, pw, version=4, cid=None):
    r = Raw(broker.port)
    ca = r.connect(cid or uid(), version=version, user=user, password=pw)
    assert ca[3] == 0
    return r


@pytest.mark.parametrize("version", [4, 5])
def test_acl_read_write(secured, version):
    alice = login(secured, "alice", "rabbit", version)
    bob = login(secured, "bob", "builder", version)
    # subscribe: allowed, denied (0x80 / 0x87), denied by a deny rule
    alice.send(subscribe(1, [("alice/#", 1), ("bob/#", 0), ("shared/#", 0)], version=version))
    alice.expect(b"\x90\x05\x00\x01\x01\x80\x00" if version == 4 else b"\x90\x06\x00\x01\x00\x01\x87\x00")
    # bob may write shared/ (alice reads it), bob may not write alice/
    bob.send(publish("shared/news", "hi", qos=1, pid=1, version=version))
    bob.expect(b"\x40\x02\x00\x01")
    assert parse_publish(alice.recv(), version)["payload"] == b"hi"
    bob.send(publish("alice/inbox", "spam", qos=1, pid=2, version=version))
    bob.expect(b"\x40\x02\x00\x02" if version == 4 else b"\x40\x03\x00\x02\x87")
    alice.expect_nothing()
    # alice may not read alice/secret even though alice/# matches it
    alice.send(publish("alice/secret/x", "s", version=version))
    alice.send(publish("alice/open", "o", version=version))
    assert parse_publish(alice.recv(), version)["payload"] == b"o"
    # alice may not write shared/ (read only)
    alice.send(publish("shared/x", "nope", version=version))
    alice.expect_nothing()


def test_acl_patterns(secured):
    bob = login(secured, "bob", "builder", cid="bobs-phone")
    bob.send(subscribe(1, [("devices/bob/#", 0), ("devices/alice/#", 0)])).expect(b"\x90\x04\x00\x01\x00\x80")
    alice = login(secured, "alice", "rabbit")
    alice.send(subscribe(1, [("clients/#", 0), ("devices/alice/#", 0)])).expect(b"\x90\x04\x00\x01\x00\x00")
    bob.send(publish("clients/bobs-phone/up", "from client id"))
    assert parse_publish(alice.recv())["payload"] == b"from client id"
    bob.send(publish("clients/other/up", "not mine"))
    alice.expect_nothing()
    alice.send(publish("devices/alice/t", "own device"))
    assert parse_publish(alice.recv())["payload"] == b"own device"
    bob.send(publish("devices/bob/t", "bob device"))
    assert parse_publish(bob.recv())["payload"] == b"bob device"


@pytest.mark.parametrize("version", [4, 5])
def test_other_user_cannot_take_over_a_client_id(secured, version):
    cid = uid("dev")
    alice = login(secured, "alice", "rabbit", version, cid=cid)
    r = Raw(secured.port)
    ca = r.connect(cid, version=version, user="bob", password="builder")
    assert ca == b"\x20\x02\x00\x05" if version == 4 else ca[3] == 0x87
    r.expect_closed()
    alice.send(b"\xc0\x00").expect(b"\xd0\x00")  # alice is still connected
    again = Raw(secured.port)  # the same user may take over
    again.connect(cid, version=version, user="alice", password="rabbit")
    alice.expect_closed()


def test_acl_will_denied(secured):
    r = Raw(secured.port)
    r.send(connect(uid(), user="bob", password="builder", will=("alice/x", b"w", 0, False)))
    r.expect(b"\x20\x02\x00\x05")
    r.expect_closed()


def test_acl_client_id_pattern_injection(secured):
    """A client id with a wildcard must not widen a %c pattern (clients/%c/up -> clients/+/up)."""
    alice = login(secured, "alice", "rabbit")
    alice.send(subscribe(1, [("clients/#", 0)])).recv()
    bob = login(secured, "bob", "builder", cid="+")
    bob.send(publish("clients/x/up", "x", qos=1, pid=1))
    bob.expect(b"\x40\x02\x00\x01")  # 3.1.1: accepted and dropped
    alice.expect_nothing()


# ---- TLS ----

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=hedge test CA", cwd=d)
    for name, cn in (("server", "localhost"), ("client", "alice"), ("other", "mallory")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}", cwd=d)
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n" if name == "server" else "basicConstraints=CA:FALSE\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", str(ext), cwd=d)
    # a client certificate from a CA the broker does not trust
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.crt", "-days",
            "2", "-subj", "/CN=alice", cwd=d)
    return d


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_broker(pki, tmp_path_factory):
    port = free_port()
    d = tmp_path_factory.mktemp("tlsbroker")
    (d / "acl").write_text("user alice\ntopic readwrite tls/#\n")
    cfg = (f"listener_tls 127.0.0.1:{port}\ntls_cert {pki}/server.crt\ntls_key {pki}/server.key\n"
           f"tls_ca {pki}/ca.crt\ntls_require_certificate true\ntls_use_identity_as_username true\n"
           f"acl_file {d}/acl\n")
    b = Broker(d, config=cfg).start()
    b.tls_port = port
    yield b
    b.stop()


def tls_client(pki, port, cert="client"):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    r = Raw.__new__(Raw)
    r.sock, r.buf = s, b""
    return r


def test_tls_client_certificate_identity(pki, tls_broker):
    r = tls_client(pki, tls_broker.tls_port)
    assert r.connect(uid()) == b"\x20\x02\x00\x00"
    r.send(subscribe(1, [("tls/#", 1), ("other/#", 0)])).expect(b"\x90\x04\x00\x01\x01\x80")
    r.send(publish("tls/a", "secure", qos=1, pid=3))
    first, second = r.recv(), r.recv()  # its own copy and the PUBACK, in either order
    assert b"\x40\x02\x00\x03" in (first, second)
    got = parse_publish(first if first[0] >> 4 == 3 else second)
    assert got["payload"] == b"secure"
    r.send(ack("puback", got["pid"]))
    r.close()


def test_tls_identity_limits_access(pki, tls_broker):
    r = tls_client(pki, tls_broker.tls_port, cert="other")  # CN=mallory: no ACL entry
    assert r.connect(uid()) == b"\x20\x02\x00\x00"
    r.send(subscribe(1, [("tls/#", 0)])).expect(b"\x90\x03\x00\x01\x80")


@pytest.mark.parametrize("cert", [None, "rogue"])
def test_tls_refuses_missing_or_untrusted_cert(pki, tls_broker, cert):
    with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError, BrokenPipeError, socket.timeout)):
        r = tls_client(pki, tls_broker.tls_port, cert=cert)
        r.connect(uid())


@pytest.mark.skipif(not shutil.which("mosquitto_pub"), reason="mosquitto-clients is not installed")
def test_tls_mosquitto_clients(pki, tls_broker):
    t = "tls/" + uid()
    common = ["-h", "localhost", "-p", str(tls_broker.tls_port), "--cafile", str(pki / "ca.crt"),
              "--cert", str(pki / "client.crt"), "--key", str(pki / "client.key"), "-t", t]
    sub = subprocess.Popen(["mosquitto_sub", *common, "-C", "1", "-W", "10"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.7)
    subprocess.run(["mosquitto_pub", *common, "-m", "over tls"], check=True, timeout=10)
    out, _ = sub.communicate(timeout=15)
    assert out.strip() == "over tls"


# ---- limits ----

def test_max_connections(tmp_path):
    b = Broker(tmp_path / "b", config="max_connections 2\n").start()
    try:
        a, c = Raw(b.port), Raw(b.port)
        a.connect(uid())
        c.connect(uid())
        third = Raw(b.port)
        third.expect_closed()
        a.close()
        time.sleep(0.2)
        Raw(b.port).connect(uid())
    finally:
        b.stop()


@pytest.mark.parametrize("policy,expect", [("drop-new", [b"m0", b"m1"]), ("drop-oldest", [b"m3", b"m4"])])
def test_queue_limit_policy(tmp_path, policy, expect):
    b = Broker(tmp_path / "b", config=f"max_queued_messages 2\nqueue_full_policy {policy}\n").start()
    try:
        cid, t = uid(), uid("q")
        s = Raw(b.port)
        s.connect(cid, clean=False)
        s.send(subscribe(1, [(t, 1)])).recv()
        s.close()
        p = Raw(b.port)
        p.connect(uid())
        for i in range(5):
            p.send(publish(t, f"m{i}", qos=1, pid=i + 1)).recv()
        s = Raw(b.port)
        s.connect(cid, clean=False)
        got = [parse_publish(s.recv()) for _ in range(2)]
        assert [g["payload"] for g in got] == expect
        for g in got:
            s.send(ack("puback", g["pid"]))
        s.expect_nothing()
    finally:
        b.stop()


def test_max_inflight(tmp_path):
    b = Broker(tmp_path / "b", config="max_inflight_messages 2\n").start()
    try:
        t = uid("inf")
        s = Raw(b.port)
        s.connect(uid())
        s.send(subscribe(1, [(t, 1)])).recv()
        p = Raw(b.port)
        p.connect(uid())
        for i in range(4):
            p.send(publish(t, f"m{i}", qos=1, pid=i + 1)).recv()
        first = [parse_publish(s.recv()) for _ in range(2)]
        s.expect_nothing()
        s.send(ack("puback", first[0]["pid"]))
        assert parse_publish(s.recv())["payload"] == b"m2"
    finally:
        b.stop()


def test_connection_rate(tmp_path):
    b = Broker(tmp_path / "b", config="connection_rate 3\n").start()
    try:
        results = []
        for _ in range(6):
            r = Raw(b.port)
            try:
                results.append(r.connect(uid()) == b"\x20\x02\x00\x00")
            except (EOFError, ConnectionResetError):
                results.append(False)
        assert results.count(True) <= 4 and results.count(False) >= 2
    finally:
        b.stop()


def test_client_connection_rate(tmp_path):
    b = Broker(tmp_path / "b", config="client_connection_rate 2\n").start()
    try:
        ok = 0
        for _ in range(5):
            try:
                ok += Raw(b.port).connect(uid()) == b"\x20\x02\x00\x00"
            except (EOFError, ConnectionResetError):
                pass
        assert 2 <= ok <= 3  # a window may roll over once during the loop
        time.sleep(1.1)
        assert Raw(b.port).connect(uid()) == b"\x20\x02\x00\x00"
    finally:
        b.stop()


def test_bad_config_is_refused(tmp_path):
    cfg = tmp_path / "c.conf"
    cfg.write_text("max_packet_size lots\n")
    r = subprocess.run([str(HEDGE_BROKER), "--config", str(cfg), "--check"], capture_output=True, text=True)
    assert r.returncode == 125 and "line 1" in r.stderr and "max_packet_size" in r.stderr
    cfg.write_text("allow_anonymus false\n")
    r = subprocess.run([str(HEDGE_BROKER), "--config", str(cfg), "--check"], capture_output=True, text=True)
    assert r.returncode == 125 and "unknown key 'allow_anonymus'" in r.stderr


def test_check_validates_without_binding(pki, tmp_path):
    cfg = tmp_path / "c.conf"
    cfg.write_text(f"listener 127.0.0.1:1883\nlistener_tls 127.0.0.1:8883\ntls_cert {pki}/server.crt\n"
                   f"tls_key {pki}/server.key\n")
    r = subprocess.run([str(HEDGE_BROKER), "--config", str(cfg), "--check"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "configuration ok", r.stderr
    cfg.write_text(f"listener_tls 127.0.0.1:8883\ntls_cert {pki}/server.crt\ntls_key {pki}/missing.key\n")
    r = subprocess.run([str(HEDGE_BROKER), "--config", str(cfg), "--check"], capture_output=True, text=True)
    assert r.returncode == 125 and "missing.key" in r.stderr


def test_queue_byte_limit(tmp_path):
    b = Broker(tmp_path / "b", config="max_queued_bytes 2500\n").start()
    try:
        cid, t = uid(), uid("qb")
        s = Raw(b.port)
        s.connect(cid, clean=False)
        s.send(subscribe(1, [(t, 1)])).recv()
        s.close()
        p = Raw(b.port)
        p.connect(uid())
        for i in range(4):
            p.send(publish(t, bytes([48 + i]) * 1000, qos=1, pid=i + 1)).recv()
        s = Raw(b.port)
        s.connect(cid, clean=False)
        got = [parse_publish(s.recv()) for _ in range(2)]  # 2 x 1000 B fit in 2500 B, the rest is dropped
        assert [g["payload"][:1] for g in got] == [b"0", b"1"]
        for g in got:
            s.send(ack("puback", g["pid"]))
        s.expect_nothing()
    finally:
        b.stop()


def test_tls_large_payloads_partial_writes(pki, tls_broker):
    """Many large messages through TLS to a reader with a tiny receive buffer: SSL_write
    must resume partial writes correctly."""
    import os as _os
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", tls_broker.tls_port))
    r = Raw.__new__(Raw)
    r.sock, r.buf = ctx.wrap_socket(raw, server_hostname="localhost"), b""
    r.connect(uid())
    t = "tls/" + uid()
    r.send(subscribe(1, [(t, 0)])).recv()
    pub = tls_client(pki, tls_broker.tls_port)
    pub.connect(uid())
    payloads = [i.to_bytes(4, "big") + _os.urandom(3000 + (i * 7919) % 30000) for i in range(150)]
    for p in payloads:
        pub.send(publish(t, p))
    time.sleep(0.5)
    for p in payloads:
        assert parse_publish(r.recv(timeout=10))["payload"] == p
