"""MQTT 5.0 and 3.1.1 normative statements about malformed packets, protocol errors and the
acknowledgement rules, byte-exact against the real hedge-broker with a raw socket. Each case names
the statements it covers; docs/broker.md ("MQTT normative statements") maps every statement to its
test here or elsewhere.

One broker per module; each case uses its own connection, client id and topics. A case that closes
the connection states every byte the broker sent before closing (a 5.0 client gets one DISCONNECT
with the reason code, a 3.1.1 client nothing).
"""
import struct
import time
import uuid

import pytest

from broker_util import (DISCONNECT, PINGREQ, Broker, Raw, ack, connect, mstr, p_str, p_u16, p_u32, p_u8, p_user,
                         packet, parse_publish, props, publish, subscribe, unsubscribe, varint)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("brokerspec"), config="max_packet_size 65536\n").start()
    yield b
    b.stop()


def uid(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def disc(reason):
    """The DISCONNECT a 5.0 client gets before the broker closes."""
    return bytes([0xE0, 0x02, reason, 0x00])


def sub5(pid, filters, sprops=b""):
    return subscribe(pid, filters, version=5, sprops=sprops)


def unsub5(pid, filters):
    return unsubscribe(pid, filters, version=5)


# ---- after CONNECT: a packet that is malformed or a protocol error closes the connection ----
# (statements, version, bytes sent, 5.0 reason code of the DISCONNECT)

CLOSES = {
    # fixed header flags (MQTT-2.1.3-1; 3.1.1 MQTT-2.2.2-1/2)
    "puback reserved flags": ("MQTT-2.1.3-1", b"\x42\x02\x00\x01", 0x81),
    "pubrec reserved flags": ("MQTT-2.1.3-1", b"\x51\x02\x00\x01", 0x81),
    "pubcomp reserved flags": ("MQTT-2.1.3-1", b"\x78\x02\x00\x01", 0x81),
    "unsubscribe reserved flags": ("MQTT-3.10.1-1", b"\xa0\x06\x00\x01\x00\x01a\x00", 0x81),
    "pingreq reserved flags": ("MQTT-2.1.3-1", b"\xc1\x00", 0x81),
    "disconnect reserved flags": ("MQTT-3.14.1-1", b"\xe1\x00", 0x81),
    "publish qos 0 with dup": ("MQTT-3.3.1-2", b"\x38\x05\x00\x01a\x00x", 0x81),
    # packet identifiers (MQTT-2.2.1-2..; 3.1.1 MQTT-2.3.1-1)
    "publish qos 2 packet id 0": ("MQTT-2.2.1-3", None, 0x82),
    "subscribe packet id 0": ("MQTT-2.2.1-3", None, 0x81),
    "unsubscribe packet id 0": ("MQTT-2.2.1-3", None, 0x81),
    "puback packet id 0": ("MQTT-2.2.1-5", b"\x40\x02\x00\x00", 0x81),
    # SUBSCRIBE / UNSUBSCRIBE payloads
    "subscribe without payload": ("MQTT-3.8.3-2", None, 0x82),
    "unsubscribe without payload": ("MQTT-3.10.3-2", None, 0x82),
    "subscription options qos 3": ("MQTT 5 §3.8.3.1", None, 0x82),
    "subscription reserved bit 6": ("MQTT-3.8.3-5", None, 0x81),
    "unsubscribe bad utf-8 filter": ("MQTT-3.10.3-1", None, 0x81),
    "subscribe NUL in filter": ("MQTT-4.7.3-2", None, 0x81),
    # a zero-length Topic Name (MQTT-4.7.3-1); 5.0: without a Topic Alias a protocol error (§3.3.2.1)
    "empty topic without alias": ("MQTT-4.7.3-1", None, 0x82),
    # UTF-8 rules (MQTT-1.5.4-1/2; 3.1.1 MQTT-1.5.3-1/2)
    "surrogate in topic": ("MQTT-1.5.4-1", None, 0x81),
    "overlong NUL in topic": ("MQTT-1.5.4-1", None, 0x81),
    "code point above U+10FFFF in topic": ("MQTT-1.5.4-1", None, 0x81),
    # Variable Byte Integer in its minimum number of bytes (MQTT-1.5.5-1)
    "non-minimal remaining length": ("MQTT-1.5.5-1", b"\xc0\x80\x00", 0x81),
    # a packet type the client must not send
    "server-only SUBACK": ("MQTT-4.13.1-1", b"\x90\x03\x00\x01\x00", 0x82),
    "server-only PINGRESP": ("MQTT-4.13.1-1", b"\xd0\x00", 0x82),
    "reserved type 15 / AUTH without method": ("MQTT-4.12.0-7", None, None),
}


def close_case(name, version):
    """-> (bytes, expected reason) for one CLOSES entry in one dialect."""
    _, data, reason = CLOSES[name]
    t = uid("c")
    if name == "publish qos 2 packet id 0":
        data = publish(t, "x", qos=2, pid=0, version=version)
    elif name == "subscribe packet id 0":
        data = subscribe(0, [(t, 0)], version=version)
    elif name == "unsubscribe packet id 0":
        data = unsubscribe(0, [t], version=version)
    elif name == "subscribe without payload":
        data = subscribe(1, [], version=version)
    elif name == "unsubscribe without payload":
        data = unsubscribe(1, [], version=version)
    elif name == "subscription options qos 3":
        data = subscribe(1, [(t, 3)], version=version)
    elif name == "subscription reserved bit 6":
        data = subscribe(1, [(t, 0x40)], version=version)
    elif name == "unsubscribe bad utf-8 filter":
        data = packet(0xA2, b"\x00\x01" + (b"\x00" if version == 5 else b"") + b"\x00\x02\xc3\x28")
    elif name == "subscribe NUL in filter":
        data = packet(0x82, b"\x00\x01" + (b"\x00" if version == 5 else b"") + b"\x00\x02a\x00\x00")
    elif name == "empty topic without alias":
        data = publish("", "x", version=version)
    elif name == "surrogate in topic":
        data = publish(b"\xed\xa0\x80", "x", version=version)
    elif name == "overlong NUL in topic":
        data = publish(b"a\xc0\x80", "x", version=version)
    elif name == "code point above U+10FFFF in topic":
        data = publish(b"\xf4\x90\x80\x80", "x", version=version)
    elif name == "reserved type 15 / AUTH without method":
        # 3.1.1: type 15 is reserved (malformed); 5.0: AUTH from a client that gave no
        # Authentication Method in CONNECT is a protocol error
        data, reason = b"\xf0\x00", 0x82
    return data, reason


@pytest.mark.parametrize("name", sorted(CLOSES))
@pytest.mark.parametrize("version", [4, 5])
def test_violation_closes_with_reason(broker, name, version):
    data, reason = close_case(name, version)
    c = Raw(broker.port)
    c.connect(uid(), version=version)
    c.send(data)
    before = c.expect_closed()
    assert before == ([disc(reason)] if version == 5 else []), (name, [p.hex() for p in before])


# ---- 5.0 only: properties, topic names, aliases, subscription options ----

V5_CLOSES = {
    # duplicate properties (MQTT 5 §2.2.2.2: a protocol error)
    "publish message expiry twice": (publish("d/x", "p", version=5, pprops=p_u32(0x02, 5) + p_u32(0x02, 5)), 0x82),
    "subscribe subscription id twice": (sub5(1, [("d/x", 0)], sprops=b"\x0b\x01\x0b\x02"), 0x82),
    "subscription id 0": (sub5(1, [("d/x", 0)], sprops=b"\x0b\x00"), 0x82),
    # a property identifier not valid for the packet type, or unknown: Malformed Packet (MQTT 5 §2.2.2.2)
    "unknown property": (publish("d/x", "p", version=5, pprops=b"\x7f\x00"), 0x81),
    "session expiry in publish": (publish("d/x", "p", version=5, pprops=p_u32(0x11, 1)), 0x81),
    # a Subscription Identifier is valid in a PUBLISH, but not from a client: Protocol Error (MQTT-3.3.4-6)
    "subscription id in publish": (publish("d/x", "p", version=5, pprops=b"\x0b\x01"), 0x82),
    # UTF-8 string pairs (MQTT-1.5.7-1) and strings in properties (MQTT-1.5.4-2)
    "user property bad utf-8": (publish("d/x", "p", version=5, pprops=b"\x26\x00\x01k\x00\x01\xff"), 0x81),
    "content type with NUL": (publish("d/x", "p", version=5, pprops=p_str(0x03, "a\x00b")), 0x81),
    "truncated property": (publish("d/x", "p", version=5, pprops=b"\x02\x00"), 0x81),
    # topic names and aliases (MQTT-3.3.2-1, MQTT-3.3.2-8/9, MQTT 5 §3.3.2.1)
    "topic alias 0": (publish("d/x", "p", version=5, pprops=p_u16(0x23, 0)), 0x94),
    "topic alias above maximum": (publish("d/x", "p", version=5, pprops=p_u16(0x23, 11)), 0x94),
    "payload format indicator 2": (publish("d/x", "p", version=5, pprops=p_u8(0x01, 2)), 0x82),
    # subscription options (MQTT-3.8.3-4, MQTT 5 §3.8.3.1)
    "no local on a shared subscription": (sub5(1, [("$share/g/d/x", 0x04)]), 0x82),
    "retain handling 3": (sub5(1, [("d/x", 0x30)]), 0x82),  # §3.8.3.1: a Protocol Error
    "maximum qos 3 with retain handling 2": (sub5(1, [("d/x", 0x23)]), 0x82),  # §3.8.3.1: a Protocol Error
    "subscription reserved bit 7": (sub5(1, [("d/x", 0x80)]), 0x81),
    # DISCONNECT (MQTT 5 §3.14.2.2.2; MQTT-3.14.2-2 is the server's side)
    "disconnect session expiry from 0": (b"\xe0\x07\x00\x05" + p_u32(0x11, 60), 0x82),
    "disconnect property not allowed": (b"\xe0\x04\x00\x02" + p_u8(0x17, 1), 0x81),  # §2.2.2.2
    "disconnect truncated": (b"\xe0\x03\x00\x05\x11", 0x81),
}


@pytest.mark.parametrize("name", sorted(V5_CLOSES))
def test_v5_violation_closes_with_reason(broker, name):
    data, reason = V5_CLOSES[name]
    c = Raw(broker.port)
    c.connect(uid(), version=5)
    c.send(data)
    before = c.expect_closed()
    assert before == [disc(reason)], (name, [p.hex() for p in before])


# ---- CONNECT: malformed ones close without CONNACK, refused ones get one ----

def raw_connect(version, flags, tail, cprops=b"", keepalive=60, name="MQTT", first=0x10):
    body = mstr(name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += props(cprops)
    return packet(first, body + tail)


def will5(topic="w/t", payload="bye", wprops=b""):
    return props(wprops) + mstr(topic) + mstr(payload)


CONNECTS = {
    # (bytes, packets expected before the close; None = accepted with this CONNACK and stays open)
    "3.1.1 will qos without will flag (MQTT-3.1.2-13/11)": (raw_connect(4, 0x0A, mstr(uid())), []),
    "3.1.1 will retain without will flag (MQTT-3.1.2-15)": (raw_connect(4, 0x22, mstr(uid())), []),
    "3.1.1 will qos 3 (MQTT-3.1.2-14)": (raw_connect(4, 0x1E, mstr(uid()) + mstr("w") + mstr("x")), []),
    "3.1.1 password without user name (MQTT-3.1.2-22)": (raw_connect(4, 0x42, mstr(uid()) + mstr("pw")), []),
    "3.1.1 user name flag without user name (MQTT-3.1.2-19)": (raw_connect(4, 0x82, mstr(uid())), []),
    "3.1.1 user name without flag (MQTT-3.1.2-18)": (raw_connect(4, 0x02, mstr(uid()) + mstr("u")), []),
    "3.1.1 will flag without will fields (MQTT-3.1.2-9)": (raw_connect(4, 0x06, mstr(uid())), []),
    "3.1.1 reserved connect flag (MQTT-3.1.2-3)": (raw_connect(4, 0x03, mstr(uid())), []),
    "3.1.1 connect fixed header flags (MQTT-2.2.2-2)": (raw_connect(4, 0x02, mstr(uid()), first=0x11), []),
    "3.1.1 client id bad utf-8 (MQTT-3.1.3-4)": (raw_connect(4, 0x02, b"\x00\x02\xc3\x28"), []),
    "3.1.1 client id with NUL (MQTT-1.5.3-2)": (raw_connect(4, 0x02, b"\x00\x02a\x00"), []),
    "3.1.1 will topic with wildcard (MQTT-3.1.3-10, MQTT-4.7.1-1)":
        (raw_connect(4, 0x06, mstr(uid()) + mstr("w/#") + mstr("x")), []),
    "3.1.1 protocol name wrong (MQTT-3.1.2-1)": (raw_connect(4, 0x02, mstr(uid()), name="MQTX"), [b"\x20\x02\x00\x01"]),
    "3.1.1 level 3 with name MQTT (MQTT-3.1.2-2)": (raw_connect(3, 0x02, mstr(uid())), [b"\x20\x02\x00\x01"]),
    "3.1.1 empty client id, clean session (MQTT-3.1.3-6)": (raw_connect(4, 0x02, mstr("")), None),
    "3.1.1 empty client id, no clean session (MQTT-3.1.3-8)": (raw_connect(4, 0x00, mstr("")), [b"\x20\x02\x00\x02"]),
    "5.0 will qos without will flag (MQTT-3.1.2-11)": (raw_connect(5, 0x0A, mstr(uid())), []),
    "5.0 will retain without will flag (MQTT-3.1.2-13)": (raw_connect(5, 0x22, mstr(uid())), []),
    "5.0 will qos 3 (MQTT-3.1.2-12)": (raw_connect(5, 0x1E, mstr(uid()) + will5()), []),
    "5.0 reserved connect flag (MQTT-3.1.2-3)": (raw_connect(5, 0x03, mstr(uid())), []),
    "5.0 user name flag without user name (MQTT-3.1.2-17)": (raw_connect(5, 0x82, mstr(uid())), []),
    "5.0 password flag without password (MQTT-3.1.2-19)": (raw_connect(5, 0x42, mstr(uid())), []),
    "5.0 left-over bytes (MQTT-3.1.2-16/18)": (raw_connect(5, 0x02, mstr(uid()) + b"\x00"), []),
    "5.0 duplicate session expiry": (raw_connect(5, 0x02, mstr(uid()), cprops=p_u32(0x11, 1) + p_u32(0x11, 1)), []),
    "5.0 receive maximum 0": (raw_connect(5, 0x02, mstr(uid()), cprops=p_u16(0x21, 0)), []),
    "5.0 maximum packet size 0": (raw_connect(5, 0x02, mstr(uid()), cprops=p_u32(0x27, 0)), []),
    "5.0 topic alias in connect (not allowed)": (raw_connect(5, 0x02, mstr(uid()), cprops=p_u16(0x23, 1)), []),
    "5.0 will delay in connect properties": (raw_connect(5, 0x02, mstr(uid()), cprops=p_u32(0x18, 1)), []),
    "5.0 client id bad utf-8 (MQTT-3.1.3-4)": (raw_connect(5, 0x02, b"\x00\x01\xff"), []),
    "5.0 will topic with wildcard (MQTT-3.1.3-11)":
        (raw_connect(5, 0x06, mstr(uid()) + will5(topic="w/+")), [b"\x20\x03\x00\x90\x00"]),
    "5.0 will with subscription id property": (raw_connect(5, 0x06, mstr(uid()) + will5(wprops=b"\x0b\x01")), []),
    "5.0 protocol name wrong (MQTT-3.1.2-1)":
        (raw_connect(5, 0x02, mstr(uid()), name="MQTX"), [b"\x20\x03\x00\x84\x00"]),
    "5.0 authentication method refused (MQTT-4.12.0-1)":
        (raw_connect(5, 0x02, mstr(uid()), cprops=p_str(0x15, "SCRAM-SHA-1")), [b"\x20\x03\x00\x8c\x00"]),
    "5.0 password without user name is allowed (MQTT 5 §3.1.2.9)": (raw_connect(5, 0x42, mstr(uid()) + mstr("pw")), None),
    "5.0 empty client id without clean start is assigned (MQTT-3.1.3-6)": (raw_connect(5, 0x00, mstr("")), None),
}


@pytest.mark.parametrize("name", sorted(CONNECTS))
def test_connect_rules(broker, name):
    data, expect = CONNECTS[name]
    c = Raw(broker.port)
    c.send(data)
    if expect is None:
        ca = c.recv()
        assert ca[0] == 0x20 and ca[3] == 0x00, ca.hex()  # accepted
        c.send(PINGREQ).expect(b"\xd0\x00")
        c.close()
        return
    before = c.expect_closed()
    assert before == expect, (name, [p.hex() for p in before])


def test_connect_must_be_first_and_once(broker):
    """MQTT-3.1.0-1/2 (both versions): a SUBSCRIBE before CONNECT closes without a reply; nothing the
    client sent after a refused CONNECT is processed (MQTT-3.1.4-6, 3.1.1 MQTT-3.1.4-5)."""
    c = Raw(broker.port)
    c.send(subscribe(1, [("a", 0)]))
    assert c.expect_closed() == []
    c = Raw(broker.port)
    c.send(connect("", clean=False) + PINGREQ)  # refused (0x02), the PINGREQ is not answered
    assert c.expect_closed() == [b"\x20\x02\x00\x02"]


# ---- replies that keep the connection ----

@pytest.mark.parametrize("version", [4, 5])
def test_subscribe_reason_codes_in_order(broker, version):
    """MQTT-3.8.4-1/2/5/6/7, MQTT-3.9.3-1/2 (3.1.1 MQTT-3.8.4-1/2/4/5/6, MQTT-3.9.3-1/2): one SUBACK with the
    SUBSCRIBE's packet id and one code per filter, in order; invalid filters (MQTT-4.7.1-1/2, MQTT-4.7.3-1,
    MQTT-4.8.2-1/2) get 0x8F (5.0) or 0x80 (3.1.1), the others the granted QoS."""
    t = uid("so")
    filters = [(t + "/a", 2), ("a/#/b", 1), (t + "/+/x", 1), ("a+/b", 0), ("", 0), ("#/", 0), (t + "/#", 0),
               ("$share/g", 1), ("$share//a", 1), ("$share/g+/a", 1), ("$share/g#/a", 1), (f"$share/g/{t}", 2),
               ("a/b#", 0), ("+a", 0)]
    bad = 0x8F if version == 5 else 0x80
    codes = bytes([2, bad, 1, bad, bad, bad, 0, bad, bad, bad, bad, 2, bad, bad])
    c = Raw(broker.port)
    c.connect(uid(), version=version)
    c.send(subscribe(0x1234, filters, version=version))
    body = b"\x12\x34" + (b"\x00" if version == 5 else b"") + codes
    c.expect(packet(0x90, body))
    c.send(PINGREQ).expect(b"\xd0\x00")


@pytest.mark.parametrize("version", [4, 5])
def test_unsubscribe_reason_codes_in_order(broker, version):
    """MQTT-3.10.4-1/4/5/6, MQTT-3.11.3-1/2 (3.1.1 MQTT-3.10.4-1/4/5/6): one UNSUBACK with the packet id;
    5.0 codes per filter in order: 0x00 removed, 0x11 none existed, 0x8F invalid. Filters compare
    character by character (a/+ does not remove a/b). A 3.1.1 UNSUBACK has no payload."""
    t = uid("uo")
    c = Raw(broker.port)
    c.connect(uid(), version=version)
    c.send(subscribe(1, [(t + "/b", 1), (t + "/+", 1)], version=version)).recv()
    c.send(unsubscribe(0xBEEF, [t + "/b", t + "/b", t + "/#", "a/#/b", t + "/+"], version=version))
    c.expect(b"\xb0\x02\xbe\xef" if version == 4 else packet(0xB0, b"\xbe\xef\x00\x00\x11\x11\x8f\x00"))
    p = Raw(broker.port)
    p.connect(uid(), version=version)
    p.send(publish(t + "/b", "gone", version=version))
    c.expect_nothing(0.3)


@pytest.mark.parametrize("version", [4, 5])
def test_unknown_packet_ids_in_acks(broker, version):
    """PUBREL for an unknown id: PUBCOMP (5.0: 0x92), MQTT-4.3.3-11; PUBREC for an unknown id: 5.0 PUBREL 0x92;
    a PUBACK or PUBCOMP for an unknown id is ignored. The connection stays."""
    c = Raw(broker.port)
    c.connect(uid(), version=version)
    c.send(ack("pubrel", 9)).expect(b"\x70\x02\x00\x09" if version == 4 else b"\x70\x03\x00\x09\x92")
    c.send(ack("puback", 10)).send(ack("pubcomp", 11))
    if version == 5:
        c.send(ack("pubrec", 12)).expect(b"\x62\x03\x00\x0c\x92")
    c.send(PINGREQ).expect(b"\xd0\x00")


@pytest.mark.parametrize("version", [4, 5])
def test_subscription_replaced_not_duplicated(broker, version):
    """MQTT-3.8.4-3 (3.1.1 MQTT-3.8.4-3): the same filter again replaces the subscription (new QoS), one copy;
    MQTT-3.8.4-8: delivered at min(published QoS, granted QoS)."""
    t = uid("rep")
    s = Raw(broker.port)
    s.connect(uid(), version=version)
    s.send(subscribe(1, [(t, 2)], version=version)).recv()
    s.send(subscribe(2, [(t, 0)], version=version))
    s.expect(b"\x90\x03\x00\x02\x00" if version == 4 else b"\x90\x04\x00\x02\x00\x00")
    p = Raw(broker.port)
    p.connect(uid(), version=version)
    p.send(publish(t, "once", qos=1, pid=3, version=version)).expect(b"\x40\x02\x00\x03")
    s.expect(packet(0x30, mstr(t) + (b"\x00" if version == 5 else b"") + b"once"))
    s.expect_nothing(0.3)


@pytest.mark.parametrize("version", [4, 5])
def test_qos_packet_id_reuse(broker, version):
    """MQTT-4.3.2-4/5 (PUBACK, then the same id is a new message), MQTT-4.3.3-8/10/11/12 (PUBREC, a
    retransmission before PUBREL is acknowledged but not delivered again, PUBCOMP, then the id is new);
    3.1.1 MQTT-4.3.2-2, MQTT-4.3.3-2. Ordered delivery: MQTT-4.6.0-5/6."""
    t = uid("reuse")
    s = Raw(broker.port)
    s.connect(uid(), version=version)
    s.send(subscribe(1, [(t, 0)], version=version)).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=version)
    pl = b"\x00" if version == 5 else b""
    for i in range(2):
        p.send(publish(t, f"q1-{i}", qos=1, pid=7, version=version)).expect(b"\x40\x02\x00\x07")
    for i in range(2):
        p.send(publish(t, f"q2-{i}", qos=2, pid=7, version=version)).expect(b"\x50\x02\x00\x07")
        p.send(publish(t, f"q2-{i}", qos=2, pid=7, dup=True, version=version)).expect(b"\x50\x02\x00\x07")
        p.send(ack("pubrel", 7)).expect(b"\x70\x02\x00\x07")
    for m in (b"q1-0", b"q1-1", b"q2-0", b"q2-1"):
        s.expect(packet(0x30, mstr(t) + pl + m))
    s.expect_nothing(0.3)


def test_v5_negative_acks_end_the_exchange(broker):
    """MQTT-4.4.0-2 (a PUBACK or PUBREC with a reason code of 0x80 or more acknowledges the PUBLISH: it is not
    sent again), MQTT-4.3.3-4 (no PUBREL after a refused PUBREC), MQTT-4.3.2-3/4.3.3-3 (until acknowledged, a
    message is resent after a reconnect: MQTT-4.4.0-1)."""
    t, cid = uid("neg"), uid()
    s = Raw(broker.port)
    s.connect(cid, version=5, cprops=p_u32(0x11, 60))
    s.send(sub5(1, [(t + "/1", 1), (t + "/2", 2), (t + "/k", 1)])).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    p.send(publish(t + "/1", "a", qos=1, pid=1, version=5)).recv()
    p.send(publish(t + "/2", "b", qos=2, pid=2, version=5)).recv()
    p.send(publish(t + "/k", "kept", qos=1, pid=3, version=5)).recv()
    got = [parse_publish(s.recv(), 5) for _ in range(3)]
    assert [g["payload"] for g in got] == [b"a", b"b", b"kept"]
    s.send(packet(0x40, struct.pack("!H", got[0]["pid"]) + b"\x80"))  # PUBACK 0x80 unspecified error
    s.send(packet(0x50, struct.pack("!H", got[1]["pid"]) + b"\x87"))  # PUBREC 0x87 not authorized
    s.expect_nothing(0.3)  # no PUBREL for the refused PUBREC
    s.close()
    s = Raw(broker.port)
    assert s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 0))[2] == 1
    again = parse_publish(s.recv(), 5)  # only the one never acknowledged, DUP set (MQTT-3.3.1-1)
    assert (again["payload"], again["dup"], again["pid"]) == (b"kept", True, got[2]["pid"])
    s.send(ack("puback", again["pid"]))
    s.expect_nothing(0.3)


@pytest.mark.parametrize("version", [4, 5])
def test_utf8_bom_is_kept(broker, version):
    """MQTT-1.5.4-3 (3.1.1 MQTT-1.5.3-3): U+FEFF at the start of a topic is part of it, not stripped;
    MQTT-4.7.3-4: no normalisation (the topic without it is another topic)."""
    t = "\ufeff" + uid("bom")
    s = Raw(broker.port)
    s.connect(uid(), version=version)
    s.send(subscribe(1, [(t, 0)], version=version)).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=version)
    p.send(publish(t[1:], "no bom", version=version))
    p.send(publish(t, "bom", version=version))
    s.expect(packet(0x30, mstr(t) + (b"\x00" if version == 5 else b"") + b"bom"))
    s.expect_nothing(0.3)


def test_v5_server_disconnect_has_no_session_expiry(broker):
    """MQTT-3.14.2-2: the broker's DISCONNECT never carries a Session Expiry Interval; MQTT-3.14.0-1: none
    before a successful CONNACK (a malformed CONNECT is closed without one); MQTT-3.14.4-1/2: nothing
    after it, the connection is closed."""
    c = Raw(broker.port)
    c.connect(uid(), version=5, cprops=p_u32(0x11, 60))
    c.send(b"\xe1\x00" + PINGREQ)  # bad flags, then a PINGREQ that must not be answered
    assert c.expect_closed() == [disc(0x81)]
    c = Raw(broker.port)
    c.send(raw_connect(5, 0x03, mstr(uid())))
    assert c.expect_closed() == []


def test_v5_user_property_pairs_forwarded_in_order(broker):
    """MQTT-3.3.2-17/18 with repeated keys and a UTF-8 pair (MQTT-1.5.7-1): forwarded as sent."""
    t = uid("up")
    s = Raw(broker.port)
    s.connect(uid(), version=5)
    s.send(sub5(1, [(t, 0)])).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    up = p_user("k", "2") + p_user("k", "1") + p_user("\u00e9", "\u20ac")
    p.send(publish(t, "v", version=5, pprops=up))
    s.expect(packet(0x30, mstr(t) + props(up) + b"v"))


def test_v311_varint_forms(broker):
    """MQTT-1.5.5-1 / 3.1.1 §2.2.3: the largest four-byte remaining length is framed (then refused as too
    large: 5.0 0x95, MQTT-3.2.2-15), a fifth length byte is malformed."""
    c = Raw(broker.port)
    c.connect(uid(), version=5)
    c.send(b"\x30\xff\xff\xff\x7f")
    assert c.expect_closed() == [disc(0x95)]
    c = Raw(broker.port)
    c.connect(uid(), version=5)
    c.send(b"\x30\x80\x80\x80\x80\x01")
    assert c.expect_closed() == [disc(0x81)]
    c = Raw(broker.port)
    c.connect(uid(), version=4)
    c.send(b"\x30" + varint(200) + mstr("v") + b"x" * 197)  # a two-byte length, minimal
    c.send(PINGREQ).expect(b"\xd0\x00")


@pytest.mark.parametrize("version", [4, 5])
def test_unsubscribe_completes_inflight_delivery(broker, version):
    """MQTT-3.10.4-2/3 (3.1.1 the same ids): after UNSUBSCRIBE no new message is added, but a QoS 1 message
    already sent is completed: resent (DUP, same packet id) after a reconnect until acknowledged
    (MQTT-4.4.0-1); MQTT-4.1.0-1: the session state is kept while the connection is open."""
    t, cid = uid("uc"), uid()
    kw = {"clean": False} if version == 4 else {"clean": False, "cprops": p_u32(0x11, 60)}
    s = Raw(broker.port)
    s.connect(cid, version=version, **kw)
    s.send(subscribe(1, [(t, 1)], version=version)).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=version)
    p.send(publish(t, "in flight", qos=1, pid=1, version=version)).expect(b"\x40\x02\x00\x01")
    first = s.recv()
    s.send(unsubscribe(2, [t], version=version))
    s.expect(b"\xb0\x02\x00\x02" if version == 4 else b"\xb0\x04\x00\x02\x00\x00")
    p.send(publish(t, "after", qos=1, pid=2, version=version)).expect(b"\x40\x02\x00\x02")
    s.expect_nothing(0.3)
    s.close()
    s = Raw(broker.port)
    assert s.connect(cid, version=version, **kw)[2] == 1
    s.expect(bytes([first[0] | 0x08]) + first[1:])
    s.send(ack("puback", parse_publish(first, version)["pid"]))
    s.expect_nothing(0.3)
    s.send(DISCONNECT)
    s = Raw(broker.port)
    s.connect(cid, version=version)  # clean start: the session is gone
    s.close()


@pytest.mark.parametrize("version", [4, 5])
def test_many_filters_one_suback(broker, version):
    """MQTT-3.8.4-5/6, MQTT-3.10.4-6: a SUBSCRIBE with 300 filters is handled as 300 SUBSCRIBEs with one SUBACK
    of 300 codes (the broker used to stop at 256 with DISCONNECT 0x97); the same for UNSUBSCRIBE."""
    t = uid("many")
    filters = [(f"{t}/{i}" if i % 3 else f"{t}/{i}/#/x", i % 3) for i in range(300)]
    bad = 0x8F if version == 5 else 0x80
    c = Raw(broker.port)
    c.connect(uid(), version=version)
    c.send(subscribe(7, filters, version=version))
    codes = bytes(o if i % 3 else bad for i, (_, o) in enumerate(filters))
    c.expect(packet(0x90, b"\x00\x07" + (b"\x00" if version == 5 else b"") + codes))
    p = Raw(broker.port)
    p.connect(uid(), version=version)
    p.send(publish(f"{t}/299", "last", version=version))
    assert parse_publish(c.recv(), version)["payload"] == b"last"
    c.send(unsubscribe(8, [f for f, _ in filters], version=version))
    ucodes = bytes(0x00 if i % 3 else 0x8F for i in range(300))
    c.expect(b"\xb0\x02\x00\x08" if version == 4 else packet(0xB0, b"\x00\x08\x00" + ucodes))
    p.send(publish(f"{t}/299", "gone", version=version))
    c.send(PINGREQ).expect(b"\xd0\x00")


def test_v5_shared_subscription_qos_and_refusal(broker):
    """MQTT-4.8.2-3: each member gets the message at its own granted QoS; MQTT-4.8.2-6: a member that refuses
    it (PUBACK 0x80) does not make the broker send it to another member."""
    t = uid("sh")
    a, b = Raw(broker.port), Raw(broker.port)
    a.connect(uid(), version=5)
    b.connect(uid(), version=5)
    a.send(sub5(1, [(f"$share/g/{t}", 0)])).expect(b"\x90\x04\x00\x01\x00\x00")
    b.send(sub5(1, [(f"$share/g/{t}", 1)])).expect(b"\x90\x04\x00\x01\x00\x01")
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    p.send(publish(t, "m1", qos=1, pid=1, version=5)).expect(b"\x40\x02\x00\x01")
    p.send(publish(t, "m2", qos=1, pid=2, version=5)).expect(b"\x40\x02\x00\x02")
    got_a = parse_publish(a.recv(), 5)
    got_b = parse_publish(b.recv(), 5)
    assert got_a["qos"] == 0 and got_b["qos"] == 1
    assert sorted([got_a["payload"], got_b["payload"]]) == [b"m1", b"m2"]
    b.send(packet(0x40, struct.pack("!H", got_b["pid"]) + b"\x80"))
    a.expect_nothing(0.3)
    b.expect_nothing(0.3)


def test_v5_topic_alias_not_carried_to_the_next_connection(broker):
    """MQTT-3.3.2-7: topic alias mappings end with the connection, also when the session is resumed."""
    cid = uid()
    c = Raw(broker.port)
    c.connect(cid, version=5, cprops=p_u32(0x11, 60))
    c.send(publish("al/x", "set", version=5, pprops=p_u16(0x23, 1)))
    c.send(PINGREQ).expect(b"\xd0\x00")
    c.close()
    c = Raw(broker.port)
    assert c.connect(cid, version=5, clean=False)[2] == 1
    c.send(publish("", "use", version=5, pprops=p_u16(0x23, 1)))
    assert c.expect_closed() == [disc(0x82)]


def test_v5_expiry_does_not_stop_started_exchanges(broker):
    """MQTT-4.3.3-7: a message already sent is resent after its Message Expiry Interval passed (expiry
    applies only to messages not yet sent); MQTT-4.3.3-13: an incoming QoS 2 exchange is completed after
    the message expired."""
    t, cid = uid("exp"), uid()
    s = Raw(broker.port)
    s.connect(cid, version=5, cprops=p_u32(0x11, 60))
    s.send(sub5(1, [(t, 1)])).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=5)
    p.send(publish(t, "short", qos=1, pid=1, version=5, pprops=p_u32(0x02, 1))).expect(b"\x40\x02\x00\x01")
    p.send(publish(t + "/2", "q2", qos=2, pid=2, version=5, pprops=p_u32(0x02, 1))).expect(b"\x50\x02\x00\x02")
    first = parse_publish(s.recv(), 5)
    assert first["payload"] == b"short"
    s.close()  # not acknowledged
    time.sleep(1.2)  # both messages are past their one-second expiry
    p.send(ack("pubrel", 2)).expect(b"\x70\x02\x00\x02")
    s = Raw(broker.port)
    assert s.connect(cid, version=5, clean=False, cprops=p_u32(0x11, 0))[2] == 1
    again = parse_publish(s.recv(), 5)
    assert (again["payload"], again["pid"], again["dup"]) == (b"short", first["pid"], True)
    s.send(ack("puback", again["pid"]))
    s.expect_nothing(0.3)


@pytest.mark.parametrize("version", [4, 5])
def test_dup_and_retain_flags_of_forwarded_messages(broker, version):
    """MQTT-3.3.1-3 (3.1.1 the same id): the DUP flag sent is not the one received; MQTT-3.3.1-8 (3.1.1
    MQTT-3.3.1-12): a PUBLISH with RETAIN 0 neither stores nor replaces the retained message."""
    t = uid("dup")
    pl = b"\x00" if version == 5 else b""
    s = Raw(broker.port)
    s.connect(uid(), version=version)
    s.send(subscribe(1, [(t, 1)], version=version)).recv()
    p = Raw(broker.port)
    p.connect(uid(), version=version)
    p.send(publish(t, "kept", retain=True, version=version))
    p.send(publish(t, "dup in", qos=1, pid=4, dup=True, version=version)).expect(b"\x40\x02\x00\x04")
    s.expect(packet(0x30, mstr(t) + pl + b"kept"))  # RETAIN 0 toward an established subscription
    got = s.recv()
    assert got[0] == 0x32, got.hex()  # QoS 1, DUP 0, RETAIN 0
    s.send(ack("puback", parse_publish(got, version)["pid"]))
    late = Raw(broker.port)
    late.connect(uid(), version=version)
    late.send(subscribe(1, [(t, 0)], version=version)).recv()
    late.expect(packet(0x31, mstr(t) + pl + b"kept"))  # the non-retained PUBLISH did not replace it
    p.send(publish(t, b"", retain=True, version=version))


def test_v5_connack_fits_client_maximum_packet_size(broker):
    """MQTT-3.1.2-24: the CONNACK is never larger than the client's Maximum Packet Size. This broker's CONNACK
    (Topic Alias Maximum 10, Maximum Packet Size 65536) is 13 bytes; it has no Reason String or User Property
    to leave out (MQTT-3.1.2-25), so a client announcing 12 bytes is closed without a CONNACK and its session
    is not created. An assigned client id makes the CONNACK 33 bytes."""
    exact = bytes.fromhex("200b0000082200 0a27 00010000".replace(" ", ""))
    c = Raw(broker.port)
    assert c.connect(uid(), version=5, cprops=p_u32(0x27, 13)) == exact
    c.send(PINGREQ).expect(b"\xd0\x00")
    c.close()
    cid = uid()
    c = Raw(broker.port)
    c.send(connect(cid, version=5, clean=False, cprops=p_u32(0x27, 12) + p_u32(0x11, 60)))
    assert c.expect_closed() == []
    c = Raw(broker.port)  # no session was left behind: session present 0
    assert c.connect(cid, version=5, clean=False) == exact
    c.close()
    c = Raw(broker.port)
    c.send(connect("", version=5, cprops=p_u32(0x27, 32)))
    assert c.expect_closed() == []
    c = Raw(broker.port)
    ca = c.connect("", version=5, cprops=p_u32(0x27, 33))
    assert len(ca) == 33 and ca[:7] == bytes.fromhex("201f00001c1200") and ca[7] == 17, ca.hex()
    assert ca[8:13] == b"auto-" and ca[25:] == bytes.fromhex("22000a2700010000"), ca.hex()
    c.close()


def test_v5_refusing_connack_fits_client_maximum_packet_size(broker):
    """MQTT-3.1.2-24 for a refusal: the 5-byte CONNACK 0x8C (unsupported Authentication Method, MQTT-4.12.0-1)
    goes to a client announcing 5 bytes; one announcing 4 is closed without it."""
    c = Raw(broker.port)
    c.send(connect(uid(), version=5, cprops=p_str(0x15, "SCRAM-SHA-1") + p_u32(0x27, 5)))
    assert c.expect_closed() == [b"\x20\x03\x00\x8c\x00"]
    c = Raw(broker.port)
    c.send(connect(uid(), version=5, cprops=p_str(0x15, "SCRAM-SHA-1") + p_u32(0x27, 4)))
    assert c.expect_closed() == []
