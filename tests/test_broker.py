"""MQTT 3.1.1 and 5.0 core protocol against the real hedge-broker: byte-exact
flows with a raw socket, plus paho and mosquitto_pub/sub interoperability.

One broker per module on a free loopback port; every test uses its own
client ids and topics so tests do not see each other's traffic.
"""
import shutil
import socket
import struct
import subprocess
import time
import uuid

import pytest

from broker_util import (DISCONNECT, PINGREQ, Broker, Raw, ack, connect, p_u8, p_u16, p_u32, p_str, p_user,
                         packet, parse_publish, props, publish, subscribe, unsubscribe, varint, mstr)

paho = pytest.importorskip("paho.mqtt.client", reason="python3-paho-mqtt is not installed")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker"), config="max_packet_size 65536\nsys_interval 1\n").start()
    yield b
    b.stop()


def uid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- connect ----

def test_connack_bytes_v311(broker):
    r = Raw(broker.port)
    assert r.connect(uid()) == b"\x20\x02\x00\x00"
    r.send(PINGREQ).expect(b"\xd0\x00")
    r.send(DISCONNECT).expect_closed()


def test_connack_v5_properties(broker):
    r = Raw(broker.port)
    ca = r.connect(uid(), version=5)
    assert ca[2:4] == b"\x00\x00"  # no session, success
    body = ca[2:]
    assert b"\x22\x00\x0a" in body  # topic alias maximum 10
    assert b"\x27" + struct.pack("!I", 65536) in body  # maximum packet size
    r.close()


def test_empty_client_id_is_assigned_v5(broker):
    r = Raw(broker.port)
    ca = r.connect("", version=5)
    assert ca[3] == 0 and b"\x12\x00\x11auto-" in ca  # Assigned Client Identifier
    r.close()


def test_empty_client_id_needs_clean_session_v311(broker):
    r = Raw(broker.port)
    r.send(connect("", clean=False))
    r.expect(b"\x20\x02\x00\x02")  # identifier rejected
    r.expect_closed()


def test_unsupported_protocol_level(broker):
    r = Raw(broker.port)
    body = mstr("MQTT") + bytes([6, 2]) + b"\x00\x3c" + mstr("x")
    r.send(packet(0x10, body))
    r.expect(b"\x20\x02\x00\x01")
    r.expect_closed()


# ---- publish / subscribe flows ----

@pytest.mark.parametrize("version", [4, 5])
def test_qos0_qos1_qos2_flows_bytes(broker, version):
    t = uid("flow")
    sub = Raw(broker.port)
    sub.connect(uid(), version=version)
    sub.send(subscribe(1, [(t + "/#", 2)], version=version))
    sub.expect(b"\x90\x03\x00\x01\x02" if version == 4 else b"\x90\x04\x00\x01\x00\x02")
    pub = Raw(broker.port)
    pub.connect(uid(), version=version)

    pub.send(publish(t + "/0", "zero", version=version))
    got = parse_publish(sub.recv(), version)
    assert (got["topic"], got["payload"], got["qos"]) == (t + "/0", b"zero", 0)

    pub.send(publish(t + "/1", "one", qos=1, pid=7, version=version))
    pub.expect(b"\x40\x02\x00\x07")
    got = parse_publish(sub.recv(), version)
    assert (got["payload"], got["qos"]) == (b"one", 1)
    sub.send(ack("puback", got["pid"]))

    pub.send(publish(t + "/2", "two", qos=2, pid=8, version=version))
    pub.expect(b"\x50\x02\x00\x08")
    # a retransmitted PUBLISH is acknowledged again but not delivered twice
    pub.send(publish(t + "/2", "two", qos=2, pid=8, dup=True, version=version))
    pub.expect(b"\x50\x02\x00\x08")
    pub.send(ack("pubrel", 8))
    pub.expect(b"\x70\x02\x00\x08")
    got = parse_publish(sub.recv(), version)
    assert (got["payload"], got["qos"]) == (b"two", 2)
    sub.send(ack("pubrec", got["pid"]))
    sub.expect(b"\x62\x02" + struct.pack("!H", got["pid"]))
    sub.send(ack("pubcomp", got["pid"]))
    sub.expect_nothing()
    pub.close()
    sub.close()


@pytest.mark.parametrize("version", [4, 5])
def test_qos_downgraded_to_subscription(broker, version):
    t = uid("down")
    sub = Raw(broker.port)
    sub.connect(uid(), version=version)
    sub.send(subscribe(1, [(t, 0)], version=version)).recv()
    pub = Raw(broker.port)
    pub.connect(uid(), version=version)
    pub.send(publish(t, "x", qos=2, pid=1, version=version))
    got = parse_publish(sub.recv(), version)
    assert got["qos"] == 0 and got["pid"] is None


@pytest.mark.parametrize("version", [4, 5])
def test_wildcards_and_dollar_topics(broker, version):
    base = uid("wild")
    sub = Raw(broker.port)
    sub.connect(uid(), version=version)
    sub.send(subscribe(1, [(f"{base}/+/temp", 0), ("#", 0), ("+/x", 0)], version=version)).recv()
    pub = Raw(broker.port)
    pub.connect(uid(), version=version)
    pub.send(publish(f"{base}/kitchen/temp", "21", version=version))
    # matches both "base/+/temp" and "#": delivered once
    got = parse_publish(sub.recv(), version)
    assert got["topic"] == f"{base}/kitchen/temp"
    sub.send(PINGREQ)
    assert sub.recv() == b"\xd0\x00"
    # "#" and "+/x" must not match topics starting with "$"
    pub.send(publish("$hedge/x", "dollar", version=version))
    pub.send(publish(f"{base}/end", "end", version=version))
    got = parse_publish(sub.recv(), version)
    assert got["topic"] == f"{base}/end"
    sub.close()
    pub.close()


@pytest.mark.parametrize("version", [4, 5])
def test_unsubscribe(broker, version):
    t = uid("unsub")
    c = Raw(broker.port)
    c.connect(uid(), version=version)
    c.send(subscribe(1, [(t, 1)], version=version)).recv()
    c.send(unsubscribe(2, [t, t + "/never"], version=version))
    c.expect(b"\xb0\x02\x00\x02" if version == 4 else b"\xb0\x05\x00\x02\x00\x00\x11")
    c.send(publish(t, "gone", version=version))
    c.expect_nothing()
    c.close()


@pytest.mark.parametrize("version", [4, 5])
def test_retained_set_deliver_and_clear(broker, version):
    t = uid("ret")
    pub = Raw(broker.port)
    pub.connect(uid(), version=version)
    pub.send(publish(t, "on", qos=1, pid=1, retain=True, version=version))
    pub.expect(b"\x40\x02\x00\x01")
    sub = Raw(broker.port)
    sub.connect(uid(), version=version)
    sub.send(subscribe(1, [(t, 1)], version=version))
    sub.recv()  # SUBACK first, then the retained message
    got = parse_publish(sub.recv(), version)
    assert (got["topic"], got["payload"], got["retain"], got["qos"]) == (t, b"on", True, 1)
    sub.send(ack("puback", got["pid"]))
    # an empty retained payload clears it: exact bytes of the clear
    pub.send(publish(t, b"", retain=True, version=version))
    got = parse_publish(sub.recv(), version)
    assert got["payload"] == b"" and got["retain"] is False
    late = Raw(broker.port)
    late.connect(uid(), version=version)
    late.send(subscribe(1, [(t, 1)], version=version)).recv()
    late.expect_nothing()
    for c in (pub, sub, late):
        c.close()


def test_will_on_abnormal_disconnect_bytes(broker):
    t = uid("will")
    sub = Raw(broker.port)
    sub.connect(uid())
    sub.send(subscribe(1, [(t, 1)])).recv()
    dying = Raw(broker.port)
    dying.connect(uid(), will=(t, b"gone", 1, False))
    dying.sock.shutdown(socket.SHUT_RDWR)
    dying.close()
    pkt = sub.recv()
    assert pkt == b"\x32" + varint(2 + len(t) + 2 + 4) + mstr(t) + b"\x00\x01gone"


@pytest.mark.parametrize("version", [4, 5])
def test_no_will_after_disconnect(broker, version):
    t = uid("nowill")
    sub = Raw(broker.port)
    sub.connect(uid(), version=version)
    sub.send(subscribe(1, [(t, 0)], version=version)).recv()
    c = Raw(broker.port)
    c.connect(uid(), version=version, will=(t, b"x", 0, False))
    c.send(DISCONNECT)
    c.expect_closed()
    sub.expect_nothing(1.0)


def test_v5_disconnect_with_will_message(broker):
    t = uid("will5")
    sub = Raw(broker.port)
    sub.connect(uid(), version=5)
    sub.send(subscribe(1, [(t, 0)], version=5)).recv()
    c = Raw(broker.port)
    c.connect(uid(), version=5, will=(t, b"bye", 0, False))
    c.send(b"\xe0\x01\x04")  # reason 0x04: disconnect with will message
    got = parse_publish(sub.recv(), 5)
    assert got["payload"] == b"bye"


def test_v5_will_delay_cancelled_by_reconnect(broker):
    t = uid("delay")
    cid = uid()
    sub = Raw(broker.port)
    sub.connect(uid(), version=5)
    sub.send(subscribe(1, [(t, 0)], version=5)).recv()
    c = Raw(broker.port)
    c.connect(cid, version=5, will=(t, b"late", 0, False, p_u32(0x18, 2)), cprops=p_u32(0x11, 60))
    c.close()
    time.sleep(0.5)
    c = Raw(broker.port)
    assert c.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 60))[2] == 1  # session present
    sub.expect_nothing(3.0)  # the delayed will was cancelled
    # now drop it for good: the will arrives after the delay
    c.send(subscribe(1, [(uid("x"), 0)], version=5)).recv()
    c2 = Raw(broker.port)
    c2.connect(cid, version=5, clean=False, will=(t, b"late", 0, False, p_u32(0x18, 1)), cprops=p_u32(0x11, 60))
    c2.close()
    t0 = time.time()
    got = parse_publish(sub.recv(timeout=5), 5)
    assert got["payload"] == b"late" and time.time() - t0 >= 0.5


def test_keepalive_timeout_closes_and_fires_will(broker):
    t = uid("ka")
    sub = Raw(broker.port)
    sub.connect(uid())
    sub.send(subscribe(1, [(t, 0)])).recv()
    c = Raw(broker.port)
    c.connect(uid(), keepalive=1, will=(t, b"timeout", 0, False))
    t0 = time.time()
    c.expect_closed(timeout=5)
    assert 1.4 <= time.time() - t0 <= 3.5
    assert parse_publish(sub.recv())["payload"] == b"timeout"


def test_keepalive_timeout_v5_reason(broker):
    c = Raw(broker.port)
    c.connect(uid(), version=5, keepalive=1)
    before = c.expect_closed(timeout=5)
    assert before == [b"\xe0\x02\x8d\x00"]


def test_session_takeover(broker):
    cid = uid()
    a = Raw(broker.port)
    a.connect(cid, version=5)
    b = Raw(broker.port)
    b.connect(cid, version=5)
    assert a.expect_closed() == [b"\xe0\x02\x8e\x00"]
    b.send(PINGREQ).expect(b"\xd0\x00")


# ---- sessions ----

@pytest.mark.parametrize("version", [4, 5])
def test_session_resumption_queues_qos1(broker, version):
    t, cid = uid("sess"), uid()
    kw = {"clean": False} if version == 4 else {"clean": False, "cprops": p_u32(0x11, 300)}
    s = Raw(broker.port)
    assert s.connect(cid, version=version, **kw)[2] == 0
    s.send(subscribe(1, [(t, 1)], version=version)).recv()
    s.send(DISCONNECT).expect_closed()
    p = Raw(broker.port)
    p.connect(uid(), version=version)
    for i in range(3):
        p.send(publish(t, f"m{i}", qos=1, pid=i + 1, version=version))
        p.recv()
    p.send(publish(t, "qos0-dropped-offline", version=version))
    s = Raw(broker.port)
    assert s.connect(cid, version=version, **kw)[2] == 1  # session present
    got = [parse_publish(s.recv(), version) for _ in range(3)]
    assert [g["payload"] for g in got] == [b"m0", b"m1", b"m2"]
    for g in got:
        s.send(ack("puback", g["pid"]))
    s.expect_nothing()
    # clean start discards the session
    s.close()
    s = Raw(broker.port)
    assert s.connect(cid, version=version)[2] == 0
    s.close()


def test_qos2_redelivery_after_reconnect_bytes(broker):
    t, cid = uid("q2"), uid()
    s = Raw(broker.port)
    s.connect(cid, clean=False)
    s.send(subscribe(1, [(t, 2)])).recv()
    p = Raw(broker.port)
    p.connect(uid())
    p.send(publish(t, "once", qos=2, pid=5)).expect(b"\x50\x02\x00\x05")
    p.send(ack("pubrel", 5)).expect(b"\x70\x02\x00\x05")
    first = s.recv()
    got = parse_publish(first)
    assert got["qos"] == 2 and not got["dup"]
    s.close()  # no PUBREC: the PUBLISH must come again, DUP set, same packet id
    s = Raw(broker.port)
    assert s.connect(cid, clean=False) == b"\x20\x02\x01\x00"
    again = s.recv()
    assert again == bytes([first[0] | 0x08]) + first[1:]
    s.send(ack("pubrec", got["pid"]))
    s.expect(b"\x62\x02" + struct.pack("!H", got["pid"]))
    s.close()  # no PUBCOMP: the PUBREL must come again
    s = Raw(broker.port)
    assert s.connect(cid, clean=False) == b"\x20\x02\x01\x00"
    s.expect(b"\x62\x02" + struct.pack("!H", got["pid"]))
    s.send(ack("pubcomp", got["pid"]))
    s.expect_nothing()
    s.send(DISCONNECT)
    s = Raw(broker.port)
    s.connect(cid, clean=True)
    s.close()


def test_v5_session_expiry_zero_ends_session(broker):
    cid = uid()
    s = Raw(broker.port)
    s.connect(cid, version=5, clean=False)  # no Session Expiry property: 0
    s.close()
    time.sleep(0.2)
    s = Raw(broker.port)
    assert s.connect(cid, version=5, clean=False)[2] == 0
    s.close()


def test_v5_session_expiry_elapses(broker):
    cid, t = uid(), uid("exp")
    s = Raw(broker.port)
    s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 1))
    s.send(subscribe(1, [(t, 1)], version=5)).recv()
    s.close()
    time.sleep(2.6)
    s = Raw(broker.port)
    assert s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 1))[2] == 0
    s.close()


# ---- 5.0 properties ----

def test_v5_message_expiry(broker):
    cid, t = uid(), uid("mexp")
    s = Raw(broker.port)
    s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 60))
    s.send(subscribe(1, [(t, 1)], version=5)).recv()
    s.close()
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    p.send(publish(t, "short", qos=1, pid=1, version=5, pprops=p_u32(0x02, 1))).recv()
    p.send(publish(t, "long", qos=1, pid=2, version=5, pprops=p_u32(0x02, 100))).recv()
    time.sleep(1.6)
    s = Raw(broker.port)
    s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 60))
    got = parse_publish(s.recv(), 5)
    assert got["payload"] == b"long"
    assert got["props"][:1] == b"\x02" and 95 <= struct.unpack("!I", got["props"][1:5])[0] <= 100
    s.send(ack("puback", got["pid"]))
    s.expect_nothing()
    s.send(b"\xe0\x02\x00\x00")


def test_v5_properties_forwarded(broker):
    t = uid("props")
    sub = Raw(broker.port)
    sub.connect(uid(), version=5)
    sub.send(subscribe(1, [(t, 0)], version=5, sprops=b"\x0b\x07")).recv()  # subscription id 7
    pub = Raw(broker.port)
    pub.connect(uid(), version=5)
    fwd = p_str(0x08, "reply/here") + bytes([0x09]) + mstr(b"\x01\x02") + p_user("k", "v") + p_str(0x03, "text/plain")
    pub.send(publish(t, "body", version=5, pprops=fwd + p_u8(0x01, 1)))
    got = parse_publish(sub.recv(), 5)
    assert got["props"].startswith(b"\x0b\x07")
    for part in (p_str(0x08, "reply/here"), bytes([0x09]) + mstr(b"\x01\x02"), p_user("k", "v"),
                 p_str(0x03, "text/plain"), b"\x01\x01"):
        assert part in got["props"]


def test_v5_topic_alias(broker):
    t = uid("alias")
    sub = Raw(broker.port)
    sub.connect(uid(), version=5)
    sub.send(subscribe(1, [(t, 0)], version=5)).recv()
    pub = Raw(broker.port)
    pub.connect(uid(), version=5)
    pub.send(publish(t, "first", version=5, pprops=p_u16(0x23, 3)))
    pub.send(publish("", "second", version=5, pprops=p_u16(0x23, 3)))
    assert parse_publish(sub.recv(), 5)["payload"] == b"first"
    got = parse_publish(sub.recv(), 5)
    assert (got["topic"], got["payload"]) == (t, b"second")
    # alias above the announced maximum (10) is a protocol violation: 0x94
    pub.send(publish(t, "x", version=5, pprops=p_u16(0x23, 11)))
    assert pub.expect_closed() == [b"\xe0\x02\x94\x00"]


def test_v5_unknown_alias_is_protocol_error(broker):
    pub = Raw(broker.port)
    pub.connect(uid(), version=5)
    pub.send(publish("", "x", version=5, pprops=p_u16(0x23, 4)))
    assert pub.expect_closed() == [b"\xe0\x02\x82\x00"]


def test_v5_receive_maximum(broker):
    t = uid("rmax")
    sub = Raw(broker.port)
    sub.connect(uid(), version=5, cprops=p_u16(0x21, 1))
    sub.send(subscribe(1, [(t, 1)], version=5)).recv()
    pub = Raw(broker.port)
    pub.connect(uid(), version=5)
    for i in range(3):
        pub.send(publish(t, f"m{i}", qos=1, pid=i + 1, version=5)).recv()
    first = parse_publish(sub.recv(), 5)
    sub.expect_nothing()  # only one in flight until it is acknowledged
    sub.send(ack("puback", first["pid"]))
    second = parse_publish(sub.recv(), 5)
    assert (first["payload"], second["payload"]) == (b"m0", b"m1")


def test_v5_maximum_packet_size_of_client(broker):
    t = uid("cmax")
    sub = Raw(broker.port)
    sub.connect(uid(), version=5, cprops=p_u32(0x27, 64))
    sub.send(subscribe(1, [(t, 0)], version=5)).recv()
    pub = Raw(broker.port)
    pub.connect(uid(), version=5)
    pub.send(publish(t, "x" * 100, version=5))
    pub.send(publish(t, "small", version=5))
    assert parse_publish(sub.recv(), 5)["payload"] == b"small"


def test_v5_subscribe_reason_codes(broker):
    c = Raw(broker.port)
    c.connect(uid(), version=5)
    c.send(subscribe(3, [("a/#/b", 0), ("ok/" + uid(), 1), ("$share/g/" + uid(), 2)], version=5))
    c.expect(b"\x90\x06\x00\x03\x00\x8f\x01\x02")


def test_v5_no_local_and_retain_as_published(broker):
    t = uid("nl")
    c = Raw(broker.port)
    c.connect(uid(), version=5)
    c.send(subscribe(1, [(t, 0x04 | 0x08)], version=5)).recv()
    c.send(publish(t, "mine", retain=True, version=5))
    c.expect_nothing()
    other = Raw(broker.port)
    other.connect(uid(), version=5)
    other.send(subscribe(1, [(t, 0x08 | 0x20)], version=5))  # RAP, retain handling 2 (none at subscribe)
    other.recv()
    other.expect_nothing()
    c.send(publish(t, "again", retain=True, version=5))
    got = parse_publish(other.recv(), 5)
    assert got["retain"] is True  # Retain As Published
    c.send(publish(t, b"", retain=True, version=5))


@pytest.mark.parametrize("version", [4, 5])
def test_shared_subscription_round_robin(broker, version):
    t = uid("share")
    members = []
    for _ in range(2):
        m = Raw(broker.port)
        m.connect(uid(), version=version)
        m.send(subscribe(1, [(f"$share/grp/{t}", 0)], version=version)).recv()
        members.append(m)
    pub = Raw(broker.port)
    pub.connect(uid(), version=version)
    for i in range(6):
        pub.send(publish(t, f"{i}", version=version))
    counts = []
    for m in members:
        n = 0
        try:
            while True:
                m.recv(timeout=0.5)
                n += 1
        except socket.timeout:
            pass
        counts.append(n)
    assert counts == [3, 3]


# ---- malformed input: the offender is closed, others are not affected ----

MALFORMED = {
    "bad remaining length": b"\x30\xff\xff\xff\xff\x01",
    "reserved flags on SUBSCRIBE": b"\x80\x06\x00\x01\x00\x01a\x00",
    "reserved bits in subscription options": b"\x82\x06\x00\x01\x00\x01a\xc0",
    "connect twice": None,
    "bad utf-8 topic": b"\x30\x05\x00\x02\xc3\x28x",
    "NUL in topic": b"\x30\x05\x00\x02a\x00x",
    "wildcard in publish topic": b"\x30\x05\x00\x03a/#",
    "plus in publish topic": b"\x30\x05\x00\x03a/+",
    "qos 3": b"\x36\x05\x00\x01a\x00\x01",
    "publish qos1 packet id 0": b"\x32\x05\x00\x01a\x00\x00",
    "pubrel with wrong flags": b"\x60\x02\x00\x01",
    "truncated subscribe": b"\x82\x04\x00\x01\x00\x05",
    "subscribe without filters": b"\x82\x02\x00\x01",
    "pingreq with body": b"\xc0\x01\x00",
    "reserved packet type 0": b"\x00\x00",
    "server-only packet CONNACK": b"\x20\x02\x00\x00",
    "oversized packet": b"\x30" + varint(70000) + mstr("big") + b"x" * 10,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
@pytest.mark.parametrize("version", [4, 5])
def test_malformed_closes_only_offender(broker, name, version):
    t = uid("bystander")
    ok = Raw(broker.port)
    ok.connect(uid(), version=version)
    ok.send(subscribe(1, [(t, 0)], version=version)).recv()
    bad = Raw(broker.port)
    bad.connect(uid(), version=version)
    data = MALFORMED[name] if MALFORMED[name] is not None else connect(uid(), version=version)
    bad.send(data)
    before = bad.expect_closed()
    if version == 5:
        assert len(before) == 1 and before[0][0] == 0xE0 and before[0][2] >= 0x80, before
        if name == "oversized packet":
            assert before[0][2] == 0x95
    else:
        assert before == []
    ok.send(publish(t, "still here", version=version))
    assert parse_publish(ok.recv(), version)["payload"] == b"still here"


def test_packet_before_connect_closes(broker):
    r = Raw(broker.port)
    r.send(publish("x", "y"))
    assert r.expect_closed() == []


def test_malformed_connect_closes(broker):
    r = Raw(broker.port)
    r.send(b"\x10\x05\x00\x04MQT")
    assert r.expect_closed() == []
    r = Raw(broker.port)
    body = mstr("MQTT") + bytes([4, 0x03]) + b"\x00\x3c" + mstr("x")  # reserved connect flag
    r.send(packet(0x10, body))
    assert r.expect_closed() == []


def test_connect_deadline_and_slowloris(tmp_path):
    b = Broker(tmp_path / "b", config="connect_timeout 1\n").start()
    try:
        idle = Raw(b.port)  # never sends CONNECT
        slow = Raw(b.port)
        slow.connect(uid())
        slow.send(b"\x30\x10\x00")  # a packet that never completes
        t0 = time.time()
        idle.expect_closed(timeout=4)
        slow.expect_closed(timeout=4)
        assert time.time() - t0 < 4
    finally:
        b.stop()


# ---- interoperability ----

@pytest.mark.parametrize("version", [paho.MQTTv311, paho.MQTTv5])
def test_paho_roundtrip(broker, version):
    t = uid("paho")
    got = []
    sub = paho.Client(client_id=uid(), protocol=version)
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.qos))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        res, _ = sub.subscribe(t + "/#", qos=2)
        assert res == 0
        time.sleep(0.3)
        pub = paho.Client(client_id=uid(), protocol=version)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        for q in (0, 1, 2):
            pub.publish(f"{t}/q{q}", f"p{q}", qos=q).wait_for_publish()
        deadline = time.time() + 5
        while len(got) < 3 and time.time() < deadline:
            time.sleep(0.05)
        pub.loop_stop()
        pub.disconnect()
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert sorted(got) == [(f"{t}/q0", b"p0", 0), (f"{t}/q1", b"p1", 1), (f"{t}/q2", b"p2", 2)]


@pytest.mark.skipif(not shutil.which("mosquitto_sub"), reason="mosquitto-clients is not installed")
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_clients(broker, version):
    t = uid("mosq")
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-V", version, "-t", t, "-C", "2", "-q", "1",
                            "-W", "10"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    for m in ("hello", "world"):
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-V", version, "-t", t, "-m", m, "-q", "1"],
                       check=True, timeout=10)
    out, _ = sub.communicate(timeout=15)
    assert sub.returncode == 0 and out.split() == ["hello", "world"]


def test_sys_topics(broker):
    c = Raw(broker.port)
    c.connect(uid())
    c.send(subscribe(1, [("$SYS/broker/clients/connected", 0), ("$SYS/broker/messages/received", 0)]))
    c.recv()
    # the retained values come first, then a fresh update every second (sys_interval 1)
    fresh = {}
    deadline = time.time() + 5
    while len(fresh) < 2 and time.time() < deadline:
        p = parse_publish(c.recv())
        if not p["retain"]:
            fresh[p["topic"]] = int(p["payload"])
    assert fresh["$SYS/broker/clients/connected"] >= 1  # this client at least
    assert fresh["$SYS/broker/messages/received"] >= 0
    # clients may not publish into $SYS
    c.send(publish("$SYS/broker/clients/connected", "666"))
    for _ in range(3):
        p = parse_publish(c.recv())
        assert p["payload"] != b"666"


@pytest.mark.parametrize("subscribers", [1, 2])
def test_large_payloads_slow_reader_intact(broker, subscribers):
    """Payloads >= 1 KiB routed to several sessions leave by reference (writev), to one
    session they are copied; a reader with a tiny socket buffer forces partial writes
    through both paths: every byte must arrive intact and in order."""
    import os as _os
    t = uid("big")
    sub = Raw.__new__(Raw)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", broker.port))
    sub.sock, sub.buf = s, b""
    sub.connect(uid())
    sub.send(subscribe(1, [(t, 0)])).recv()
    if subscribers == 2:
        other = Raw(broker.port)
        other.connect(uid())
        other.send(subscribe(1, [(t, 0)])).recv()
    pub = Raw(broker.port)
    pub.connect(uid())
    payloads = [i.to_bytes(4, "big") + _os.urandom(1000 + (i * 7919) % 15000) + (b"s" if i % 5 else b"") for i in range(600)]
    payloads[7] = b"tiny"  # small ones are copied, interleaved with referenced ones
    for p in payloads:
        pub.send(publish(t, p))
    time.sleep(0.5)  # let the broker hit the full socket buffer
    for p in payloads:
        got = parse_publish(sub.recv(timeout=10))
        assert got["payload"] == p
    if subscribers == 2:
        for p in payloads:
            assert parse_publish(other.recv(timeout=10))["payload"] == p


def test_v5_disconnect_session_expiry_rules(broker):
    cid = uid()
    c = Raw(broker.port)
    c.connect(cid, version=5)  # session expiry 0
    c.send(b"\xe0\x07\x00\x05" + p_u32(0x11, 60))  # 0 -> 60 at DISCONNECT: protocol error
    assert c.expect_closed() == [b"\xe0\x02\x82\x00"]
    c = Raw(broker.port)
    c.connect(cid, version=5, cprops=p_u32(0x11, 60))
    c.send(b"\xe0\x07\x00\x05" + p_u32(0x11, 0))  # 60 -> 0: the session ends with this connection
    c.expect_closed()
    c = Raw(broker.port)
    assert c.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 60))[2] == 0


def test_v5_payload_format_invalid(broker):
    c = Raw(broker.port)
    c.connect(uid(), version=5)
    c.send(publish(uid("pf"), b"\xff\xfe", version=5, pprops=p_u8(0x01, 1)))
    assert c.expect_closed() == [b"\xe0\x02\x99\x00"]


def test_server_keepalive(tmp_path):
    b = Broker(tmp_path / "b", config="max_keepalive 30\n").start()
    try:
        c = Raw(b.port)
        ca = c.connect(uid(), version=5, keepalive=0)
        assert b"\x13\x00\x1e" in ca  # Server Keep Alive 30
    finally:
        b.stop()
