"""MQTT 5.0 normative statements against the real hedge-broker, byte-exact with a raw socket:
overlapping subscriptions with Subscription Identifiers (MQTT-3.3.4-2..5), the server's Receive
Maximum (MQTT-3.3.4-7), the client's Receive Maximum (MQTT-3.3.4-9) and Maximum Packet Size
(MQTT-3.1.2-24/25), topic aliases from the broker to the client (MQTT-3.1.2-26/27, MQTT-3.3.2-11),
Request Response Information (MQTT-3.1.2-28) and Request Problem Information (MQTT-3.1.2-29). docs/broker.md maps each statement to its test here.

Two brokers per module: `broker` with the options under test set, `plain` with the defaults.
"""
import struct
import time
import uuid

import pytest

from broker_util import (PINGREQ, Broker, Raw, ack, connect, mstr, p_str, p_u8, p_u16, p_u32, packet, parse_publish, props,
                         publish, subscribe, varint)

CONFIG = ("max_packet_size 65536\nsys_interval 1\nreceive_maximum 2\ntopic_alias_to_client 2\n"
          "response_information rsp/hedge\n")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker5"), config=CONFIG).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("plain5"), config="max_packet_size 65536\n").start()
    yield b
    b.stop()


def uid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sub_id(n):
    return b"\x0b" + varint(n)


def prop_list(raw):
    """Split a property block (without its length) into (id, raw value) pairs; only the ids used here."""
    out, i = [], 0
    while i < len(raw):
        pid = raw[i]
        i += 1
        if pid == 0x0B:
            j = i
            while raw[j] & 0x80:
                j += 1
            out.append((pid, raw[i:j + 1]))
            i = j + 1
        elif pid == 0x23:
            out.append((pid, raw[i:i + 2]))
            i += 2
        elif pid == 0x02:
            out.append((pid, raw[i:i + 4]))
            i += 4
        else:
            raise AssertionError(f"unexpected property {pid:#x} in {raw.hex()}")
    return out


def dropped_count(port):
    """$SYS/broker/messages/dropped, a fresh (not retained) value."""
    c = Raw(port)
    c.connect(uid())
    c.send(subscribe(1, [("$SYS/broker/messages/dropped", 0)])).recv()
    deadline = time.time() + 5
    while time.time() < deadline:
        p = parse_publish(c.recv())
        if not p["retain"]:
            c.close()
            return int(p["payload"])
    raise AssertionError("no $SYS update")


# ---- overlapping subscriptions: one copy, every identifier, the highest QoS ----

def test_overlapping_subscriptions_one_copy_all_identifiers(broker):
    t = uid("ov")
    s = Raw(broker.port)
    s.connect(uid(), version=5)
    s.send(subscribe(1, [(t + "/a/+", 1)], version=5, sprops=sub_id(7))).expect(b"\x90\x04\x00\x01\x00\x01")
    s.send(subscribe(2, [(t + "/a/#", 2)], version=5, sprops=sub_id(300))).expect(b"\x90\x04\x00\x02\x00\x02")
    s.send(subscribe(3, [(t + "/#", 0)], version=5)).expect(b"\x90\x04\x00\x03\x00\x00")  # no identifier
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    p.send(publish(t + "/a/x", "hi", qos=2, pid=1, version=5)).expect(b"\x50\x02\x00\x01")
    got = s.recv()
    # one copy at QoS 2 (the highest granted, MQTT-3.3.4-2) with both identifiers (MQTT-3.3.4-3/4), any order
    head = mstr(t + "/a/x") + b"\x00\x01"
    expected = {packet(0x34, head + props(sub_id(7), sub_id(300)) + b"hi"),
                packet(0x34, head + props(sub_id(300), sub_id(7)) + b"hi")}
    assert got in expected, got.hex()
    s.expect_nothing()  # no second copy
    s.send(ack("pubrec", 1)).expect(b"\x62\x02\x00\x01")
    s.send(ack("pubcomp", 1))
    p.send(ack("pubrel", 1)).expect(b"\x70\x02\x00\x01")
    # a topic only the identifier-less subscription matches: no identifier at all
    p.send(publish(t + "/b", "plain", version=5))
    s.expect(packet(0x30, mstr(t + "/b") + props() + b"plain"))


def test_overlapping_identifiers_kept_for_queued_messages(broker):
    """A QoS 1 message queued for an offline session keeps all the identifiers (the delivery entry holds them)."""
    t = uid("ovq")
    cid = uid()
    s = Raw(broker.port)
    s.connect(cid, version=5, cprops=p_u32(0x11, 60))
    s.send(subscribe(1, [(t + "/+", 1)], version=5, sprops=sub_id(1))).recv()
    s.send(subscribe(2, [(t + "/#", 1)], version=5, sprops=sub_id(2))).recv()
    s.send(subscribe(3, [(t + "/x", 1)], version=5, sprops=sub_id(16384))).recv()
    s.close()
    time.sleep(0.2)
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    p.send(publish(t + "/x", "queued", qos=1, pid=5, version=5)).expect(b"\x40\x02\x00\x05")
    s = Raw(broker.port)
    ca = s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 0))
    assert ca[2:4] == b"\x01\x00"  # session present
    got = parse_publish(s.recv(), 5)
    assert (got["topic"], got["payload"], got["qos"]) == (t + "/x", b"queued", 1)
    ids = prop_list(got["props"])
    assert sorted(v for _, v in ids) == sorted([varint(1), varint(2), varint(16384)]) and len(ids) == 3
    s.send(ack("puback", got["pid"]))
    s.expect_nothing()


def test_no_local_is_per_subscription(broker):
    """No Local on one of two overlapping subscriptions: the client's own message comes once, with the
    identifier of the other subscription only."""
    t = uid("nl")
    c = Raw(broker.port)
    c.connect(uid(), version=5)
    c.send(subscribe(1, [(t + "/a", 0x04)], version=5, sprops=sub_id(1))).recv()
    c.send(subscribe(2, [(t + "/+", 0)], version=5, sprops=sub_id(2))).recv()
    c.send(publish(t + "/a", "x", version=5))
    c.expect(packet(0x30, mstr(t + "/a") + props(sub_id(2)) + b"x"))
    c.expect_nothing()


# ---- Receive Maximum ----

def test_server_receive_maximum_advertised_and_enforced(broker):
    c = Raw(broker.port)
    ca = c.connect(uid(), version=5)
    assert b"\x21\x00\x02" in ca[2:]  # receive_maximum 2 in CONNACK
    c.send(publish("rm/" + uid(), "1", qos=2, pid=1, version=5)).expect(b"\x50\x02\x00\x01")
    c.send(publish("rm/" + uid(), "2", qos=2, pid=2, version=5)).expect(b"\x50\x02\x00\x02")
    # a retransmission of an unacknowledged one is no new message
    c.send(publish("rm/" + uid(), "2", qos=2, pid=2, dup=True, version=5)).expect(b"\x50\x02\x00\x02")
    # a third unacknowledged QoS > 0 PUBLISH: DISCONNECT 0x93 (MQTT-3.3.4-7)
    c.send(publish("rm/" + uid(), "3", qos=1, pid=3, version=5))
    assert c.expect_closed() == [b"\xe0\x02\x93\x00"]


def test_server_receive_maximum_quota_returns_with_pubrel(broker):
    c = Raw(broker.port)
    c.connect(uid(), version=5)
    t = "rm/" + uid()
    for pid in (1, 2):
        c.send(publish(t, "x", qos=2, pid=pid, version=5)).expect(b"\x50\x02\x00" + bytes([pid]))
    c.send(ack("pubrel", 1)).expect(b"\x70\x02\x00\x01")
    c.send(publish(t, "y", qos=2, pid=3, version=5)).expect(b"\x50\x02\x00\x03")
    c.send(ack("pubrel", 2)).expect(b"\x70\x02\x00\x02")
    for pid in (4, 5, 6):  # QoS 1 is acknowledged at once: never over the quota
        c.send(publish(t, "z", qos=1, pid=pid, version=5)).expect(b"\x40\x02\x00" + bytes([pid]))
    c.close()


def test_server_receive_maximum_not_for_v311(broker):
    c = Raw(broker.port)
    assert c.connect(uid(), version=4) == b"\x20\x02\x00\x00"
    t = "rm/" + uid()
    for pid in (1, 2, 3, 4):
        c.send(publish(t, "x", qos=2, pid=pid)).expect(b"\x50\x02\x00" + bytes([pid]))
    c.close()


def test_client_receive_maximum_counts_publishes(broker):
    """A client with Receive Maximum 3 that does not acknowledge gets exactly 3 PUBLISHes (MQTT-3.3.4-9)."""
    t = uid("crm")
    s = Raw(broker.port)
    s.connect(uid(), version=5, cprops=p_u16(0x21, 3))
    s.send(subscribe(1, [(t, 1)], version=5)).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    for i in range(10):
        p.send(publish(t, f"m{i}", qos=1, pid=i + 1, version=5)).expect(b"\x40\x02\x00" + bytes([i + 1]))
    got = [parse_publish(s.recv(), 5) for _ in range(3)]
    s.expect_nothing(wait=1.0)
    assert [g["payload"] for g in got] == [b"m0", b"m1", b"m2"]
    s.send(PINGREQ).expect(b"\xd0\x00")  # other packets are not held back by the full window (MQTT-3.3.4-10)
    s.send(ack("puback", got[0]["pid"]))
    nxt = parse_publish(s.recv(), 5)
    assert nxt["payload"] == b"m3"
    s.expect_nothing()


def test_resend_after_reconnect_keeps_the_new_receive_maximum(broker):
    """Three unacknowledged QoS 1 messages, then a reconnect with Receive Maximum 1: they are resent with their
    packet ids and DUP (MQTT-4.4.0-1), one at a time (MQTT-3.3.4-9)."""
    t, cid = uid("rsnd"), uid()
    s = Raw(broker.port)
    s.connect(cid, version=5, cprops=p_u32(0x11, 60) + p_u16(0x21, 3))
    s.send(subscribe(1, [(t, 1)], version=5)).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    for i in range(3):
        p.send(publish(t, f"m{i}", qos=1, pid=i + 1, version=5)).expect(b"\x40\x02\x00" + bytes([i + 1]))
    first = [parse_publish(s.recv(), 5) for _ in range(3)]
    s.close()
    time.sleep(0.2)
    s = Raw(broker.port)
    assert s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 0) + p_u16(0x21, 1))[2:4] == b"\x01\x00"
    for m in first:
        s.expect(packet(0x3A, mstr(t) + struct.pack("!H", m["pid"]) + props() + m["payload"]))  # DUP, same id
        s.expect_nothing(wait=0.3)  # one at a time
        s.send(ack("puback", m["pid"]))
    s.expect_nothing()


# ---- Maximum Packet Size of the client ----

def test_oversize_queued_message_is_completed_not_stuck(broker):
    """A QoS 1 message over the client's Maximum Packet Size is discarded and treated as delivered
    (MQTT-3.1.2-25): with Receive Maximum 1 the next message must still arrive. The drop is counted."""
    t = uid("mps")
    before = dropped_count(broker.port)
    s = Raw(broker.port)
    s.connect(uid(), version=5, cprops=p_u32(0x27, 64) + p_u16(0x21, 1))
    s.send(subscribe(1, [(t, 1)], version=5)).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    p.send(publish(t, "x" * 100, qos=1, pid=1, version=5)).expect(b"\x40\x02\x00\x01")
    p.send(publish(t, "small", qos=1, pid=2, version=5)).expect(b"\x40\x02\x00\x02")
    got = s.recv()
    pid = parse_publish(got, 5)["pid"]
    assert got == packet(0x32, mstr(t) + struct.pack("!H", pid) + props() + b"small")
    s.expect_nothing()
    deadline = time.time() + 5
    while dropped_count(broker.port) < before + 1:
        assert time.time() < deadline, "the discarded message was not counted"


# ---- topic aliases toward the client ----

def test_topic_alias_to_client(broker):
    t = uid("al")
    s = Raw(broker.port)
    s.connect(uid(), version=5, cprops=p_u16(0x22, 5))  # the client allows 5, the broker uses 2
    s.send(subscribe(1, [(t + "/#", 0)], version=5)).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    for topic, payload in (("a", "1"), ("a", "2"), ("b", "3"), ("c", "4"), ("b", "5"), ("c", "6")):
        p.send(publish(f"{t}/{topic}", payload, version=5))
    s.expect(packet(0x30, mstr(t + "/a") + props(p_u16(0x23, 1)) + b"1"))
    s.expect(packet(0x30, mstr("") + props(p_u16(0x23, 1)) + b"2"))
    s.expect(packet(0x30, mstr(t + "/b") + props(p_u16(0x23, 2)) + b"3"))
    s.expect(packet(0x30, mstr(t + "/c") + props() + b"4"))  # aliases used up: the topic in full
    s.expect(packet(0x30, mstr("") + props(p_u16(0x23, 2)) + b"5"))
    s.expect(packet(0x30, mstr(t + "/c") + props() + b"6"))


def test_no_topic_alias_when_client_allows_none(broker):
    t = uid("al0")
    s = Raw(broker.port)
    s.connect(uid(), version=5)  # no Topic Alias Maximum: 0, no aliases (MQTT-3.1.2-27)
    s.send(subscribe(1, [(t, 0)], version=5)).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    for payload in ("1", "2"):
        p.send(publish(t, payload, version=5))
        s.expect(packet(0x30, mstr(t) + props() + payload.encode()))


def test_no_topic_alias_by_default(plain):
    t = uid("al1")
    s = Raw(plain.port)
    s.connect(uid(), version=5, cprops=p_u16(0x22, 5))
    s.send(subscribe(1, [(t, 0)], version=5)).recv()
    p = Raw(plain.port)
    p.connect(uid(), version=5)
    for payload in ("1", "2"):
        p.send(publish(t, payload, version=5))
        s.expect(packet(0x30, mstr(t) + props() + payload.encode()))


# ---- Request Response Information / Request Problem Information ----

def connack_v5(*items):
    body = b"\x00\x00" + props(*items)
    return packet(0x20, body)


def test_response_information_only_when_requested(broker):
    base = (p_u16(0x22, 10), p_u32(0x27, 65536), p_u16(0x21, 2))
    c = Raw(broker.port)
    assert c.connect(uid(), version=5, cprops=p_u8(0x19, 1)) == connack_v5(*base, p_str(0x1A, "rsp/hedge"))
    c.close()
    c = Raw(broker.port)
    assert c.connect(uid(), version=5, cprops=p_u8(0x19, 0)) == connack_v5(*base)
    c.close()
    c = Raw(broker.port)
    assert c.connect(uid(), version=5) == connack_v5(*base)
    c.close()


def test_response_information_not_configured(plain):
    c = Raw(plain.port)
    # defaults: no Receive Maximum (65535 is the protocol's default), no Response Information
    assert c.connect(uid(), version=5, cprops=p_u8(0x19, 1)) == connack_v5(p_u16(0x22, 10), p_u32(0x27, 65536))
    c.close()


def test_request_problem_information_zero(broker):
    """Request Problem Information 0: no Reason String or User Property on SUBACK, PUBACK (MQTT-3.1.2-29)."""
    c = Raw(broker.port)
    c.connect(uid(), version=5, cprops=p_u8(0x17, 0))
    c.send(subscribe(3, [("a/#/b", 0)], version=5)).expect(b"\x90\x04\x00\x03\x00\x8f")
    c.send(publish("$SYS/x", "y", qos=1, pid=4, version=5)).expect(b"\x40\x02\x00\x04")
    c.close()


def test_request_problem_information_bad_value(broker):
    c = Raw(broker.port)
    c.send(connect(uid(), version=5, cprops=p_u8(0x17, 2)))
    c.expect_closed()


# ---- further statements of 3.1-3.3 ----

def test_response_topic_with_wildcard_is_protocol_error(broker):
    c = Raw(broker.port)
    c.connect(uid(), version=5)
    c.send(publish("rt/" + uid(), "x", version=5, pprops=p_str(0x08, "replies/+")))
    assert c.expect_closed() == [b"\xe0\x02\x82\x00"]  # MQTT-3.3.2-14
    w = Raw(broker.port)
    w.send(connect(uid(), version=5, will=("w/" + uid(), "bye", 0, False, p_str(0x08, "replies/#"))))
    assert w.expect_closed() == [b"\x20\x03\x00\x82\x00"]


def test_will_retain_published_retained(broker):
    t = uid("wret")
    w = Raw(broker.port)
    w.connect(uid(), version=5, will=(t, "gone", 1, True))
    w.sock.close()  # no DISCONNECT: the will goes out, retained (MQTT-3.1.2-15)
    time.sleep(0.3)
    late = Raw(broker.port)
    late.connect(uid(), version=5)
    late.send(subscribe(1, [(t, 0)], version=5)).expect(b"\x90\x04\x00\x01\x00\x00")
    late.expect(packet(0x31, mstr(t) + props() + b"gone"))
    late.send(publish(t, b"", retain=True, version=5))


def test_retain_handling_1_only_for_a_new_subscription(broker):
    t = uid("rh1")
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    p.send(publish(t, "kept", retain=True, version=5))
    s = Raw(broker.port)
    s.connect(uid(), version=5)
    s.send(subscribe(1, [(t, 0x10)], version=5)).expect(b"\x90\x04\x00\x01\x00\x00")
    s.expect(packet(0x31, mstr(t) + props() + b"kept"))  # new subscription: sent (MQTT-3.3.1-10)
    s.send(subscribe(2, [(t, 0x10)], version=5)).expect(b"\x90\x04\x00\x02\x00\x00")
    s.expect_nothing()  # it existed: not sent again
    s.send(subscribe(3, [(t, 0x00)], version=5)).expect(b"\x90\x04\x00\x03\x00\x00")
    s.expect(packet(0x31, mstr(t) + props() + b"kept"))  # Retain Handling 0: always (MQTT-3.3.1-9)
    p.send(publish(t, b"", retain=True, version=5))


def test_assigned_client_ids_differ(broker):
    ids = set()
    conns = []
    for _ in range(5):
        c = Raw(broker.port)
        ca = c.connect("", version=5)
        i = ca.index(b"\x12")
        n = struct.unpack("!H", ca[i + 1:i + 3])[0]
        ids.add(ca[i + 3:i + 3 + n])
        conns.append(c)
    assert len(ids) == 5
    for c in conns:
        c.close()


def test_connack_drops_response_information_to_fit(broker):
    """MQTT-3.1.2-24: Response Information (a MAY) is left out when the CONNACK with it (28 bytes) would exceed the
    client's Maximum Packet Size; without it the CONNACK is 16 bytes, below that it is not sent at all."""
    base = (p_u16(0x22, 10), p_u32(0x27, 65536), p_u16(0x21, 2))
    full = connack_v5(*base, p_str(0x1A, "rsp/hedge"))
    assert len(full) == 28
    for size, want in ((28, full), (27, connack_v5(*base)), (16, connack_v5(*base))):
        c = Raw(broker.port)
        assert c.connect(uid(), version=5, cprops=p_u8(0x19, 1) + p_u32(0x27, size)) == want, size
        c.send(PINGREQ).expect(b"\xd0\x00")
        c.close()
    c = Raw(broker.port)
    c.send(connect(uid(), version=5, cprops=p_u8(0x19, 1) + p_u32(0x27, 15)))
    assert c.expect_closed() == []
